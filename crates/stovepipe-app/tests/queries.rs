//! The read side's freshness through the cached configuration store the
//! server wires (`CachedQueueConfigs`): queue configurations are cached for
//! at most `CONFIG_STALENESS` (a change is seen once it has passed, a
//! removed queue stops answering, a change written through the cache at
//! once), while requests and the absence of a fact are read on every call
//! and a fact found once is kept (facts never change). Memory adapters and
//! the manual clock.

#![allow(clippy::unwrap_used)] // tests: a failure is a test failure

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use stovepipe_app::{
    CONFIG_STALENESS, CachedQueueConfigs, CommitStatus, Deps, Pipeline, QueryError,
};
use stovepipe_entity::{
    Degree, Fact, ProjectConfig, ProjectName, QueueConfig, QueueName, RequestState,
};
use stovepipe_ports::{Clock, CommitRecord, MockReadModel, Outbox, QueueConfigStore, StoreError};
use support::World;

/// The world's configuration store, counting reads, able to forget queues.
struct Watched {
    inner: Arc<dyn QueueConfigStore>,
    gets: AtomicUsize,
    removed: Mutex<BTreeSet<QueueName>>,
}

impl Watched {
    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    fn remove(&self, queue: &QueueName) {
        self.removed.lock().unwrap().insert(queue.clone());
    }
}

#[async_trait]
impl QueueConfigStore for Watched {
    async fn get(&self, queue: &QueueName) -> Result<Option<QueueConfig>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.removed.lock().unwrap().contains(queue) {
            return Ok(None);
        }
        self.inner.get(queue).await
    }
    async fn list(&self) -> Result<Vec<QueueConfig>, StoreError> {
        self.inner.list().await
    }
    async fn upsert(&self, config: &QueueConfig) -> Result<(), StoreError> {
        self.inner.upsert(config).await
    }
}

/// A pipeline over the world's ports whose configurations come through the
/// cache, in front of a store whose reads are watched.
fn watched(w: &World) -> (Pipeline, Arc<Watched>) {
    let configs = Arc::new(Watched {
        inner: w.backend.clone(),
        gets: AtomicUsize::new(0),
        removed: Mutex::default(),
    });
    let deps = Deps {
        configs: Arc::new(CachedQueueConfigs::new(
            configs.clone(),
            Arc::new(w.clock.clone()),
        )),
        ..(**w.pipeline.deps()).clone()
    };
    (Pipeline::new(deps), configs)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn status(p: &Pipeline, w: &World, commit: &str, project: Option<&str>) -> CommitStatus {
    p.query()
        .greenness(
            w.queue.as_str(),
            None,
            Some(w.uri(commit).as_str()),
            project,
        )
        .await
        .unwrap()
        .status
}

#[tokio::test]
async fn reads_within_the_bound_share_one_config_fetch() {
    let w = World::new(|_| {}).await;
    w.push_and_ingest("A").await;
    w.settle().await;
    let (p, configs) = watched(&w);

    assert_eq!(status(&p, &w, "A", None).await, CommitStatus::Green);
    assert_eq!(configs.gets(), 1);
    w.clock.advance(CONFIG_STALENESS.saturating_sub(ms(1)));
    for _ in 0..5 {
        // Every `query()` is a clone sharing the pipeline's cache.
        assert_eq!(status(&p, &w, "A", None).await, CommitStatus::Green);
    }
    p.query().last_green(w.queue.as_str(), None).await.unwrap();
    assert_eq!(configs.gets(), 1, "no fetch before the bound");
    w.clock.advance(ms(1));
    assert_eq!(status(&p, &w, "A", None).await, CommitStatus::Green);
    assert_eq!(configs.gets(), 2, "fetched again at the bound");
}

#[tokio::test]
async fn requests_and_missing_facts_are_read_on_every_call() {
    let w = World::new(|_| {}).await;
    let (p, configs) = watched(&w);
    let b = w.push("B");
    assert_eq!(status(&p, &w, "B", None).await, CommitStatus::NotValidated);
    w.ingest().await;
    assert_eq!(status(&p, &w, "B", None).await, CommitStatus::Pending);
    // Written straight to the stores, with no time passing.
    let stores = w.backend.for_queue(&w.queue);
    let mut r = w.request(&w.id(1)).await;
    let expected = r.version;
    r.state = RequestState::Superseded;
    r.version += 1;
    stores
        .requests
        .update(&r, expected, Outbox::none())
        .await
        .unwrap();
    assert_eq!(status(&p, &w, "B", None).await, CommitStatus::Skipped);
    let fact = Fact {
        queue: w.queue.clone(),
        uri: b,
        project: ProjectName::whole_repo(),
        degree: Degree::GREEN,
        request_id: r.id,
        build_id: None,
        created_at: w.clock.now(),
    };
    stores.facts.create(&fact, Outbox::none()).await.unwrap();
    assert_eq!(status(&p, &w, "B", None).await, CommitStatus::Green);
    assert_eq!(configs.gets(), 1, "the configuration, though, was cached");
}

#[tokio::test]
async fn a_written_config_is_seen_once_the_bound_has_passed() {
    let w = World::new(|_| {}).await;
    w.push_and_ingest("A").await;
    w.settle().await;
    let (p, _) = watched(&w);
    let web = Some("web");
    assert!(matches!(
        p.query()
            .greenness(w.queue.as_str(), None, Some(w.uri("A").as_str()), web)
            .await,
        Err(QueryError::NotFound(_))
    ));

    let mut config = w.config.clone();
    config.projects.push(ProjectConfig {
        name: ProjectName::new("web").unwrap(),
        paths: vec!["web/".to_owned()],
        targets: Vec::new(),
    });
    w.backend.upsert(&config).await.unwrap();
    w.clock.advance(CONFIG_STALENESS);
    assert_eq!(
        status(&p, &w, "A", web).await,
        CommitStatus::Pending,
        "the new project is known (validated, no project fact yet)"
    );
}

#[tokio::test]
async fn a_removed_queue_stops_answering_once_the_bound_has_passed() {
    let w = World::new(|_| {}).await;
    w.push_and_ingest("A").await;
    w.settle().await;
    let (p, configs) = watched(&w);
    assert_eq!(status(&p, &w, "A", None).await, CommitStatus::Green);

    configs.remove(&w.queue);
    w.clock.advance(CONFIG_STALENESS);
    assert!(matches!(
        p.query()
            .greenness(w.queue.as_str(), None, Some(w.uri("A").as_str()), None)
            .await,
        Err(QueryError::UnknownQueue(_))
    ));
    assert!(matches!(
        p.query().last_green(w.queue.as_str(), None).await,
        Err(QueryError::UnknownQueue(_))
    ));
}

#[tokio::test]
async fn an_unknown_queue_is_never_cached() {
    let w = World::new(|_| {}).await;
    let (p, configs) = watched(&w);
    let other = "other/queue";
    for _ in 0..2 {
        assert!(matches!(
            p.query().last_green(other, None).await,
            Err(QueryError::UnknownQueue(_))
        ));
    }
    assert_eq!(configs.gets(), 2, "each miss asks the store");
    // Configured now, with no time passing: answered at once.
    let config = QueueConfig::new(QueueName::new(other).unwrap(), "mem", "main");
    w.backend.upsert(&config).await.unwrap();
    assert!(matches!(
        p.query().last_green(other, None).await,
        Err(QueryError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_found_fact_is_kept_and_a_missing_one_is_asked_for_every_time() {
    let w = World::new(|_| {}).await;
    let (a, b) = (w.push("A"), w.push("B"));
    let green = Fact {
        queue: w.queue.clone(),
        uri: a.clone(),
        project: ProjectName::whole_repo(),
        degree: Degree::GREEN,
        request_id: w.id(1),
        build_id: None,
        created_at: w.clock.now(),
    };
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut read = MockReadModel::new();
    let log = asked.clone();
    read.expect_commit_record().returning(move |_, uri, _| {
        log.lock().unwrap().push(uri.clone());
        let fact = (uri == &green.uri).then(|| green.clone());
        Ok(CommitRecord {
            fact,
            request: None,
        })
    });
    let p = Pipeline::new(Deps {
        read: Arc::new(read),
        ..(**w.pipeline.deps()).clone()
    });
    for _ in 0..3 {
        assert_eq!(status(&p, &w, "A", None).await, CommitStatus::Green);
        assert_eq!(status(&p, &w, "B", None).await, CommitStatus::NotValidated);
    }
    let view = p
        .query()
        .greenness(w.queue.as_str(), None, Some(a.as_str()), None)
        .await
        .unwrap();
    assert_eq!(view.request_id, Some(w.id(1)), "the kept fact's request");
    assert_eq!(view.degree, Some(Degree::GREEN));
    assert_eq!(
        *asked.lock().unwrap(),
        [a, b.clone(), b.clone(), b],
        "A's fact was read once; B, with none, on every call"
    );
}
