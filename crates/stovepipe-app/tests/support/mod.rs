//! The scenario harness: the whole pipeline on the memory adapters with a
//! manual clock, driven deterministically through [`Pump`].

#![allow(dead_code)] // each test binary uses a different part of the harness
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a test failure

use std::sync::Arc;
use std::time::Duration;

use stovepipe_adapter_memory::{
    ManualClock, MemoryBackend, RecordingHookSink, ScriptedBuildRunner, ScriptedRepo,
    ScriptedRunnerFactory, ScriptedScmFactory,
};
use stovepipe_app::{Deps, IngestOutcome, Pipeline, Pump, RetryPolicy};
use stovepipe_entity::{
    ChangeKind, Fact, ProjectName, Queue, QueueConfig, QueueName, Request, RequestId, Uri,
};
use stovepipe_ports::{QueueConfigStore, StoreFactory};

pub struct World {
    pub clock: ManualClock,
    pub backend: Arc<MemoryBackend>,
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
    pub async fn new(configure: impl FnOnce(&mut QueueConfig)) -> Self {
        let clock = ManualClock::default();
        let backend = MemoryBackend::new(Arc::new(clock.clone()));
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
        Self {
            clock,
            backend,
            repo,
            runner,
            sink,
            pipeline,
            pump,
            queue,
            config,
        }
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
            let pending: Vec<_> = self
                .pump
                .topics()
                .into_iter()
                .map(|t| (t.to_string(), self.backend.pending_messages(&t)))
                .filter(|(_, n)| *n > 0)
                .collect();
            panic!(
                "{e}\npending: {pending:?}\nqueue: {:#?}\nrequests: {:#?}",
                self.backend.for_queue(&self.queue).queues.get().await,
                self.backend.all_requests(&self.queue)
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

    pub fn change_count(&self, kind: ChangeKind) -> usize {
        self.backend
            .changes()
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
