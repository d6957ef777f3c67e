//! Choosing a queue's runner from `[queue.build] runner`.
//!
//! Owns: the per-queue runner cache (a queue keeps one runner, so a command
//! runner's checkout slots are shared by all of the queue's builds; a changed
//! configuration builds a fresh runner) and the data directory the command
//! runner keeps logs and state in.

use crate::buildkite::BuildkiteRunner;
use crate::command::{CommandRunner, read_log_in};
use crate::env::Env;
use crate::external::ExternalRunner;
use crate::github::GithubActionsRunner;
use crate::scm::runner_error;
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use stovepipe_entity::{BuildId, QueueConfig, QueueName, RunnerKind};
use stovepipe_ports::{
    BuildRunner, BuildRunnerFactory, RunnerError, SourceControl, SourceControlFactory,
};
use tokio::sync::Mutex;

/// The [`BuildRunnerFactory`] of this crate.
pub struct CiRunnerFactory {
    data_dir: PathBuf,
    scm: Arc<dyn SourceControlFactory>,
    env: Env,
    cache: Mutex<HashMap<QueueName, Cached>>,
}

struct Cached {
    config: QueueConfig,
    runner: Arc<dyn BuildRunner>,
}

impl std::fmt::Debug for CiRunnerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiRunnerFactory")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl CiRunnerFactory {
    /// Runners keeping their files under `data_dir`, getting each queue's
    /// `SourceControl` (checkouts, commit ids) from `scm`, and API tokens
    /// from the process environment.
    pub fn new(data_dir: impl Into<PathBuf>, scm: Arc<dyn SourceControlFactory>) -> Self {
        Self {
            data_dir: data_dir.into(),
            scm,
            env: Env::process(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Reads API tokens from `env` instead of the process environment.
    #[must_use]
    pub fn with_env(mut self, env: Env) -> Self {
        self.env = env;
        self
    }

    /// The log of a command-runner build, whatever its queue (what
    /// `GET /v1/builds/{build_id}/log` serves). `NotFound` for any other id.
    pub async fn log(&self, id: &BuildId) -> Result<String, RunnerError> {
        read_log_in(&self.data_dir, id).await
    }

    async fn source_control(
        &self,
        config: &QueueConfig,
    ) -> Result<Arc<dyn SourceControl>, RunnerError> {
        self.scm.for_queue(config).await.map_err(|e| match e {
            stovepipe_ports::ScmError::Unavailable(_) => {
                runner_error(&format!("queue {}: source control", config.name), e)
            }
            other => RunnerError::Config(format!(
                "queue {}: source control cannot serve this queue: {other}",
                config.name
            )),
        })
    }

    async fn build(&self, config: &QueueConfig) -> Result<Arc<dyn BuildRunner>, RunnerError> {
        Ok(match config.build.runner {
            RunnerKind::External => Arc::new(ExternalRunner::new()),
            RunnerKind::Command => {
                let scm = self.source_control(config).await?;
                Arc::new(CommandRunner::new(config, scm, &self.data_dir)?)
            }
            RunnerKind::GithubActions => {
                let scm = self.source_control(config).await?;
                Arc::new(GithubActionsRunner::new(config, scm, &self.env)?)
            }
            RunnerKind::Buildkite => {
                let scm = self.source_control(config).await?;
                Arc::new(BuildkiteRunner::new(config, scm, &self.env)?)
            }
        })
    }
}

#[async_trait]
impl BuildRunnerFactory for CiRunnerFactory {
    /// The queue's runner, cached until its configuration changes. A missing
    /// setting is `Config` naming the key (`queue.build.command`,
    /// `queue.build.settings.owner`…).
    async fn for_queue(&self, config: &QueueConfig) -> Result<Arc<dyn BuildRunner>, RunnerError> {
        // Held while building so one queue never gets two runners (and two
        // sets of checkout slots) at once.
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.get(&config.name)
            && cached.config == *config
        {
            return Ok(Arc::clone(&cached.runner));
        }
        let runner = self.build(config).await?;
        cache.insert(
            config.name.clone(),
            Cached {
                config: config.clone(),
                runner: Arc::clone(&runner),
            },
        );
        Ok(runner)
    }
}
