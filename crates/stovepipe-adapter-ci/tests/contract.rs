//! Runs the `build_runner` contract suite against the command runner: real
//! `sh` processes in checkouts of a scripted repository whose commits each
//! carry an `outcome` file the build command obeys (an exit code, or `slow`
//! for a build that runs until cancelled).

// Fixture set-up panics on a broken setup, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use stovepipe_adapter_ci::CommandRunner;
use stovepipe_adapter_memory::{CommitSpec, ScriptedRepo};
use stovepipe_contract::{RunnerFixture, fixtures};
use stovepipe_entity::{BuildStatus, QueueConfig};
use stovepipe_ports::{BuildRunner, TriggerRequest};
use tempfile::TempDir;

/// Exits with the code in `outcome`, or sleeps far longer than a case when
/// it says `slow`.
const COMMAND: &str = r#"read -r outcome < outcome; case "$outcome" in slow) exec sleep 600 ;; *) exit "$outcome" ;; esac"#;

struct Command {
    _data: TempDir,
    repo: ScriptedRepo,
    runner: Arc<CommandRunner>,
    heads: AtomicU64,
}

impl Command {
    fn new() -> Self {
        let data = tempfile::tempdir().unwrap();
        let repo = ScriptedRepo::new(fixtures::queue_a());
        let mut config = QueueConfig::new(fixtures::queue_a(), "scripted", "main");
        config.build.command = Some(COMMAND.to_owned());
        let runner = CommandRunner::new(&config, Arc::new(repo.clone()), data.path()).unwrap();
        Self {
            _data: data,
            repo,
            runner: Arc::new(runner),
            heads: AtomicU64::new(0),
        }
    }

    /// Pushes a commit whose `outcome` file says `outcome`; a trigger of it.
    fn push(&self, outcome: &str) -> TriggerRequest {
        let n = self.heads.fetch_add(1, Ordering::Relaxed);
        let uri = self.repo.push_with(
            &format!("head-{n}"),
            CommitSpec::files(&[("outcome", &format!("{outcome}\n"))]),
        );
        fixtures::trigger(uri)
    }
}

#[async_trait]
impl RunnerFixture for Command {
    fn runner(&self) -> Arc<dyn BuildRunner> {
        self.runner.clone()
    }

    async fn head(&self, outcome: BuildStatus) -> TriggerRequest {
        match outcome {
            BuildStatus::Succeeded => self.push("0"),
            BuildStatus::Failed => self.push("3"),
            other => panic!("the suite scripts only succeeded or failed builds, not {other:?}"),
        }
    }

    async fn slow_head(&self) -> TriggerRequest {
        self.push("slow")
    }
}

stovepipe_contract::contract_tests!(build_runner, || async {
    Arc::new(Command::new()) as stovepipe_contract::build_runner::Fixture
});
