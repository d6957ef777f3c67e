//! The one place adapters are chosen and wired into the application.

use std::sync::Arc;

use anyhow::Context as _;
use stovepipe_adapter_ci::CiRunnerFactory;
use stovepipe_adapter_git::GitScmFactory;
use stovepipe_adapter_memory::MemoryBackend;
use stovepipe_adapter_sql::SqlBackend;
use stovepipe_adapter_webhook::WebhookSink;
use stovepipe_app::{CachedHookRegistry, CachedQueueConfigs, Deps, Pipeline};
use stovepipe_ports::{
    ChangeFeed, Clock, HookRegistry, HookSink, MessageQueue, QueueConfigStore, ReadModel,
    SourceControlFactory, StoreFactory,
};

use crate::config::Settings;

/// Storage and transport, as one backend behind every storage port.
#[derive(Clone)]
pub enum Backend {
    /// `database.url = "sqlite://…"` or `"postgres://…"`.
    Sql(Arc<SqlBackend>),
    /// `database.url = "memory:"`: tests; nothing survives a restart.
    Memory(Arc<MemoryBackend>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("Backend::Memory"),
            Self::Sql(b) => f.write_str(if b.is_postgres() {
                "Backend::Postgres"
            } else {
                "Backend::Sqlite"
            }),
        }
    }
}

impl Backend {
    /// Opens the backend of `settings.database_url` and applies migrations.
    pub async fn open(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let url = settings.database_url.as_str();
        if url == "memory:" {
            return Ok(Self::Memory(MemoryBackend::new(clock)));
        }
        if let Some(dir) = sqlite_parent_dir(url) {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("database.url: cannot create {}", dir.display()))?;
        }
        let options = stovepipe_adapter_sql::SqlOptions {
            clock,
            write_lanes: settings.write_lanes,
            ..stovepipe_adapter_sql::SqlOptions::default()
        };
        let sql = SqlBackend::connect_with(url, options)
            .await
            .with_context(|| format!("database.url: cannot open {}", redact(url)))?;
        sql.migrate()
            .await
            .context("applying database migrations")?;
        tracing::info!(
            postgres = sql.is_postgres(),
            write_lanes = sql.write_lanes(),
            "database open"
        );
        Ok(Self::Sql(sql))
    }

    /// True when the database answers (readiness).
    pub async fn ready(&self) -> bool {
        self.feed().last_seq().await.is_ok()
    }

    /// Closes pools and listeners (the last step of a shutdown).
    pub async fn close(&self) {
        if let Self::Sql(b) = self {
            b.close().await;
        }
    }

    pub fn message_queue(&self) -> Arc<dyn MessageQueue> {
        match self {
            Self::Memory(b) => b.clone(),
            Self::Sql(b) => b.clone(),
        }
    }

    pub fn feed(&self) -> Arc<dyn ChangeFeed> {
        match self {
            Self::Memory(b) => b.clone(),
            Self::Sql(b) => b.clone(),
        }
    }

    pub fn hooks(&self) -> Arc<dyn HookRegistry> {
        match self {
            Self::Memory(b) => b.clone(),
            Self::Sql(b) => b.clone(),
        }
    }

    pub fn configs(&self) -> Arc<dyn QueueConfigStore> {
        match self {
            Self::Memory(b) => b.clone(),
            Self::Sql(b) => b.clone(),
        }
    }

    fn stores(&self) -> Arc<dyn StoreFactory> {
        match self {
            Self::Memory(b) => b.clone(),
            Self::Sql(b) => b.clone(),
        }
    }

    fn read_model(&self) -> Arc<dyn ReadModel> {
        match self {
            Self::Memory(b) => b.clone(),
            Self::Sql(b) => b.clone(),
        }
    }

    fn deps(
        &self,
        scm: Arc<dyn SourceControlFactory>,
        runners: Arc<CiRunnerFactory>,
        sink: Arc<dyn HookSink>,
        clock: Arc<dyn Clock>,
    ) -> Deps {
        // Every stage, ingest and query asks for its queue's configuration:
        // serve it from a cache at most `CONFIG_STALENESS` old.
        let configs = Arc::new(CachedQueueConfigs::new(self.configs(), clock.clone()));
        // Every hook-able change asks which live releases match it: serve
        // that from a cache at most `HOOK_STALENESS` old too.
        let hooks = Arc::new(CachedHookRegistry::new(self.hooks(), clock.clone()));
        Deps {
            stores: self.stores(),
            configs,
            read: self.read_model(),
            scm,
            runners,
            mq: self.message_queue(),
            feed: self.feed(),
            clock,
            hooks,
            sink,
        }
    }
}

/// The directory of a SQLite database file, so a fresh machine can start
/// with the default `sqlite://.stovepipe/stovepipe.db?mode=rwc`.
fn sqlite_parent_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    if path.is_empty() || path.starts_with(':') {
        return None;
    }
    std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
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
    let sink: Arc<dyn HookSink> =
        Arc::new(WebhookSink::new(clock.clone()).context("starting the webhook sink")?);
    let pipeline = Pipeline::new(backend.deps(scm, runners.clone(), sink, clock));
    Ok(Wired {
        backend,
        pipeline,
        runners,
    })
}
