//! The one place adapters are chosen and wired into the application.

use std::sync::Arc;

use anyhow::Context as _;
use stovepipe_adapter_ci::CiRunnerFactory;
use stovepipe_adapter_git::GitScmFactory;
use stovepipe_adapter_memory::MemoryBackend;
use stovepipe_app::{Deps, Pipeline};
use stovepipe_ports::{
    ChangeFeed, Clock, HookRegistry, MessageQueue, QueueConfigStore, SourceControlFactory,
};

use crate::config::Settings;

/// Storage and transport, as one backend behind every storage port.
#[derive(Clone)]
pub enum Backend {
    Memory(Arc<MemoryBackend>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("Backend::Memory"),
        }
    }
}

impl Backend {
    /// Opens the backend of `settings.database_url` (and applies migrations).
    #[allow(clippy::unused_async)] // SQL backends connect and migrate here
    pub async fn open(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        if settings.database_url == "memory:" {
            return Ok(Self::Memory(MemoryBackend::new(clock)));
        }
        anyhow::bail!(
            "database.url {:?}: the SQL backend is not part of this build yet; use database.url = \"memory:\" with messaging.backend = \"memory\"",
            settings.database_url
        )
    }

    /// True when the database answers (readiness).
    #[allow(clippy::unused_async)] // SQL backends ping the database here
    pub async fn ready(&self) -> bool {
        match self {
            Self::Memory(_) => true,
        }
    }

    pub fn message_queue(&self) -> Arc<dyn MessageQueue> {
        match self {
            Self::Memory(b) => b.clone(),
        }
    }

    pub fn feed(&self) -> Arc<dyn ChangeFeed> {
        match self {
            Self::Memory(b) => b.clone(),
        }
    }

    pub fn hooks(&self) -> Arc<dyn HookRegistry> {
        match self {
            Self::Memory(b) => b.clone(),
        }
    }

    pub fn configs(&self) -> Arc<dyn QueueConfigStore> {
        match self {
            Self::Memory(b) => b.clone(),
        }
    }

    fn deps(
        &self,
        scm: Arc<dyn SourceControlFactory>,
        runners: Arc<CiRunnerFactory>,
        clock: Arc<dyn Clock>,
    ) -> Deps {
        match self {
            Self::Memory(b) => Deps {
                stores: b.clone(),
                configs: b.clone(),
                read: b.clone(),
                scm,
                runners,
                mq: b.clone(),
                feed: b.clone(),
                clock,
            },
        }
    }
}

/// Everything the server runs, wired.
#[derive(Debug, Clone)]
pub struct Wired {
    pub backend: Backend,
    pub pipeline: Pipeline,
    pub runners: Arc<CiRunnerFactory>,
}

/// Opens the backend, publishes the configured queues and wires the
/// pipeline over the git and CI adapters.
pub async fn wire(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Wired> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "server.data_dir {}: cannot create it",
            settings.data_dir.display()
        )
    })?;
    let backend = Backend::open(settings, clock.clone()).await?;
    let configs = backend.configs();
    for q in &settings.queues {
        configs
            .upsert(q)
            .await
            .with_context(|| format!("storing the configuration of queue {}", q.name))?;
    }
    let scm: Arc<dyn SourceControlFactory> =
        Arc::new(GitScmFactory::new(settings.data_dir.join("git")));
    let runners = Arc::new(CiRunnerFactory::new(
        settings.data_dir.join("builds"),
        scm.clone(),
    ));
    let pipeline = Pipeline::new(backend.deps(scm, runners.clone(), clock));
    Ok(Wired {
        backend,
        pipeline,
        runners,
    })
}
