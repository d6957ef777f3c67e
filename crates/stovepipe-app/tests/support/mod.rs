//! The scenario harness: the whole pipeline with a manual clock, driven
//! deterministically through [`Pump`], on the memory adapters or on the SQL
//! adapters (SQLite always; Postgres when `STOVEPIPE_TEST_POSTGRES_URL` is
//! set, required with `STOVEPIPE_REQUIRE_SERVICES=1`). One harness, every
//! backend: the same scenarios prove the fakes and the real storage agree.

#![allow(dead_code)] // each test binary uses a different part of the harness
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a test failure

use std::sync::Arc;
use std::time::Duration;

use stovepipe_adapter_memory::{
    ManualClock, MemoryBackend, RecordingHookSink, ScriptedBuildRunner, ScriptedRepo,
    ScriptedRunnerFactory, ScriptedScmFactory,
};
use stovepipe_adapter_sql::{SqlBackend, SqlOptions};
use stovepipe_app::{Deps, IngestOutcome, Pipeline, Pump, RetryPolicy};
use stovepipe_entity::ChangeEvent;
use stovepipe_entity::{
    ChangeKind, Fact, ProjectName, Queue, QueueConfig, QueueName, Request, RequestId, Uri,
};
use stovepipe_ports::{
    ChangeFeed, HookRegistry, MessageQueue, QueueConfigStore, ReadModel, StoreFactory, Topic,
};

/// Every storage-like port, as one backend implements them.
pub trait TestBackend:
    StoreFactory + ReadModel + MessageQueue + ChangeFeed + HookRegistry + QueueConfigStore
{
}
impl<T: StoreFactory + ReadModel + MessageQueue + ChangeFeed + HookRegistry + QueueConfigStore>
    TestBackend for T
{
}

/// Which storage a world runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// What a SQL world must clean up.
enum Keep {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, schema: String },
}

impl Drop for Keep {
    fn drop(&mut self) {
        if let Self::Postgres { base, schema } = self {
            let _ = std::process::Command::new("psql")
                .args([
                    base.as_str(),
                    "-qc",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .status();
        }
    }
}

/// The test Postgres URL, or `None` after saying the test is skipped.
fn postgres_url() -> Option<String> {
    if let Ok(url) = std::env::var("STOVEPIPE_TEST_POSTGRES_URL") {
        return Some(url);
    }
    assert!(
        std::env::var("STOVEPIPE_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "STOVEPIPE_REQUIRE_SERVICES=1 but STOVEPIPE_TEST_POSTGRES_URL is not set"
    );
    eprintln!("skipped: STOVEPIPE_TEST_POSTGRES_URL not set");
    None
}

async fn open_sql(url: &str, clock: &ManualClock) -> Arc<SqlBackend> {
    let options = SqlOptions {
        clock: Arc::new(clock.clone()),
        ..SqlOptions::default()
    };
    let sql = SqlBackend::connect_with(url, options).await.unwrap();
    sql.migrate().await.unwrap();
    sql
}

pub struct World {
    pub clock: ManualClock,
    pub kind: Backend,
    pub backend: Arc<dyn TestBackend>,
    /// The memory backend, for fault injection and introspection.
    memory: Option<Arc<MemoryBackend>>,
    _keep: Option<Keep>,
    pub repo: ScriptedRepo,
    pub runner: ScriptedBuildRunner,
    /// Hook deliveries: recorded, answered as scripted (200 by default).
    pub sink: RecordingHookSink,
    pub pipeline: Pipeline,
    pub pump: Pump,
    pub queue: QueueName,
    pub config: QueueConfig,
}

pub fn queue_name() -> QueueName {
    QueueName::new("monorepo/main").unwrap()
}

impl World {
    /// A world on the memory adapters.
    pub async fn new(configure: impl FnOnce(&mut QueueConfig)) -> Self {
        Self::on(Backend::Memory, configure).await.unwrap()
    }

    /// A world on `kind`; `None` when Postgres is not available (skipped).
    pub async fn on(kind: Backend, configure: impl FnOnce(&mut QueueConfig)) -> Option<Self> {
        let clock = ManualClock::default();
        let (backend, memory, keep): (Arc<dyn TestBackend>, _, _) = match kind {
            Backend::Memory => {
                let m = MemoryBackend::new(Arc::new(clock.clone()));
                (m.clone(), Some(m), None)
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("scenario.db").display()
                );
                (open_sql(&url, &clock).await, None, Some(Keep::Sqlite(dir)))
            }
            Backend::Postgres => {
                let base = postgres_url()?;
                let schema = format!("stovepipe_scenario_{}", uuid::Uuid::new_v4().simple());
                let created = std::process::Command::new("psql")
                    .args([base.as_str(), "-qc", &format!("CREATE SCHEMA {schema}")])
                    .status()
                    .unwrap();
                assert!(created.success(), "cannot create schema {schema}");
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options[search_path]={schema}");
                let keep = Keep::Postgres { base, schema };
                (open_sql(&url, &clock).await, None, Some(keep))
            }
        };
        let queue = queue_name();
        let repo = ScriptedRepo::new(queue.clone());
        let scm = ScriptedScmFactory::new().with(repo.clone());
        let runner = ScriptedBuildRunner::new();
        let runners = ScriptedRunnerFactory::new(runner.clone());
        let mut config = QueueConfig::new(queue.clone(), "mem", "main");
        config.promotion_ref = Some("verified-main".to_owned());
        configure(&mut config);
        backend.upsert(&config).await.unwrap();
        let sink = RecordingHookSink::new();
        let deps = Deps {
            stores: backend.clone(),
            configs: backend.clone(),
            read: backend.clone(),
            scm: Arc::new(scm),
            runners: Arc::new(runners),
            mq: backend.clone(),
            feed: backend.clone(),
            clock: Arc::new(clock.clone()),
            hooks: backend.clone(),
            sink: Arc::new(sink.clone()),
        };
        let pipeline = Pipeline::new(deps);
        let pump = pipeline.pump(RetryPolicy::default());
        Some(Self {
            clock,
            kind,
            backend,
            memory,
            _keep: keep,
            repo,
            runner,
            sink,
            pipeline,
            pump,
            queue,
            config,
        })
    }

    /// The memory backend (fault injection, introspection); panics on a
    /// SQL world: such tests are memory-only by design.
    pub fn memory(&self) -> &Arc<MemoryBackend> {
        self.memory.as_ref().expect("a memory-backed world")
    }

    /// Every request of the queue, oldest first (through the read model).
    pub async fn all_requests(&self) -> Vec<Request> {
        let mut newest_first = self
            .backend
            .requests(&self.queue, None, 100_000)
            .await
            .unwrap();
        newest_first.reverse();
        newest_first
    }

    /// The whole change log, oldest first.
    pub async fn changes(&self) -> Vec<ChangeEvent> {
        self.backend.read_after(0, 1_000_000).await.unwrap()
    }

    /// True when a message of `topic` is pending (visible or held).
    pub async fn has_pending(&self, topic: &Topic) -> bool {
        self.backend.next_visible_at(topic).await.unwrap().is_some()
    }

    /// Pushes commit `id` on top of the branch head (a root when empty).
    pub fn push(&self, id: &str) -> Uri {
        self.repo.push(id)
    }

    pub async fn ingest(&self) -> IngestOutcome {
        self.pipeline
            .ingest()
            .ingest(self.queue.as_str(), None)
            .await
            .unwrap()
    }

    pub async fn push_and_ingest(&self, id: &str) -> IngestOutcome {
        self.push(id);
        self.ingest().await
    }

    /// Handles everything visible now, without moving time.
    pub async fn step(&self) {
        self.pump.run_ready().await.unwrap();
    }

    /// Moves time to the next pending message and handles what is visible
    /// then. Returns false when nothing is pending.
    pub async fn tick(&self) -> bool {
        match self.pump.next_due().await.unwrap() {
            Some(due) => {
                self.clock.set(due);
                self.step().await;
                true
            }
            None => false,
        }
    }

    /// Steps and ticks until `done` holds; panics after a bound.
    pub async fn until(&self, what: &str, done: impl AsyncFnMut(&World) -> bool) {
        let mut done = done;
        self.step().await;
        for _ in 0..500 {
            if done(self).await {
                return;
            }
            if !self.tick().await {
                break;
            }
        }
        assert!(done(self).await, "never reached: {what}");
    }

    /// Runs until no message is pending at all.
    pub async fn settle(&self) {
        let clock = self.clock.clone();
        if let Err(e) = self.pump.run_until_idle(2000, |t| clock.set(t)).await {
            let mut pending = Vec::new();
            for t in self.pump.topics() {
                if self.has_pending(&t).await {
                    pending.push(t.to_string());
                }
            }
            panic!(
                "{e}\npending on: {pending:?}\nqueue: {:#?}\nrequests: {:#?}",
                self.backend.for_queue(&self.queue).queues.get().await,
                self.all_requests().await
            );
        }
    }

    pub fn id(&self, n: u64) -> RequestId {
        RequestId::new(&self.queue, n).unwrap()
    }

    pub async fn request(&self, id: &RequestId) -> Request {
        self.backend
            .for_queue(&self.queue)
            .requests
            .get(id)
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn queue_row(&self) -> Queue {
        self.backend
            .for_queue(&self.queue)
            .queues
            .get()
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn fact(&self, uri: &Uri) -> Option<Fact> {
        self.backend
            .for_queue(&self.queue)
            .facts
            .get(uri, &ProjectName::whole_repo())
            .await
            .unwrap()
    }

    pub async fn change_count(&self, kind: ChangeKind) -> usize {
        self.changes()
            .await
            .iter()
            .filter(|c| c.kind == kind)
            .count()
    }

    pub fn uri(&self, id: &str) -> Uri {
        self.repo.uri(id)
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Instantiates each scenario function `fn name(backend: Backend)` as one
/// test per backend: `memory::name`, `sqlite::name`, `postgres::name`.
#[allow(unused_macros)] // each test binary uses a different part of the harness
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}
