//! `CachedStores`: the request, queue and build store contracts hold
//! through the cache, and what it serves is never older than
//! `ROW_STALENESS`, nor older than this process's last write.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use stovepipe_adapter_memory::{ManualClock, MemoryBackend};
use stovepipe_app::{CachedStores, ROW_STALENESS};
use stovepipe_contract::fixtures::{build, message, queue_a, request};
use stovepipe_contract::{StoreFixture, contract_tests};
use stovepipe_entity::{Queue, QueueName, Request, RequestId, RequestState, Timestamp};
use stovepipe_ports::{
    MessageQueue, Outbox, QueueStore, RequestStore, StoreError, StoreFactory, Stores, Topic,
};

async fn cached() -> StoreFixture {
    let backend = MemoryBackend::new(Arc::new(ManualClock::default()));
    StoreFixture {
        stores: Arc::new(CachedStores::new(backend.clone(), backend.clock())),
        read_model: backend.clone(),
        feed: backend.clone(),
        messages: backend.clone(),
        hooks: backend,
    }
}

contract_tests!(request_store, cached);
contract_tests!(queue_store, cached);
contract_tests!(build_store, cached);
contract_tests!(joint_writer, cached);

/// The cached stores of `queue_a` and, beside them, the store itself (what
/// another replica writes through), with the clock both use.
struct World {
    clock: ManualClock,
    cached: Stores,
    elsewhere: Stores,
}

fn world() -> World {
    let clock = ManualClock::new(Timestamp(1_000_000));
    let backend = MemoryBackend::new(Arc::new(clock.clone()));
    let cached = CachedStores::new(backend.clone(), Arc::new(clock.clone())).for_queue(&queue_a());
    World {
        clock,
        cached,
        elsewhere: backend.for_queue(&queue_a()),
    }
}

/// Creates request 1 through the cache, then moves it on to `state`
/// elsewhere (another replica's write): returns both versions.
async fn created_here_moved_elsewhere(w: &World, state: RequestState) -> (Request, Request) {
    let r = request(&queue_a(), 1);
    w.cached.requests.create(&r, Outbox::none()).await.unwrap();
    let mut moved = r.clone();
    moved.state = state;
    moved.version += 1;
    w.elsewhere
        .requests
        .update(&moved, r.version, Outbox::none())
        .await
        .unwrap();
    (r, moved)
}

fn just_under(bound: Duration) -> Duration {
    bound.saturating_sub(Duration::from_millis(1))
}

#[tokio::test]
async fn a_row_written_here_is_served_until_the_bound_then_read_again() {
    let w = world();
    let (r, moved) = created_here_moved_elsewhere(&w, RequestState::Superseded).await;

    w.clock.advance(just_under(ROW_STALENESS));
    let served = w.cached.requests.get(&r.id).await.unwrap();
    assert_eq!(
        served,
        Some(r.clone()),
        "within the bound: this process's write"
    );
    w.clock.advance(Duration::from_millis(1));
    let served = w.cached.requests.get(&r.id).await.unwrap();
    assert_eq!(served, Some(moved), "at the bound: the store's row");
}

#[tokio::test]
async fn a_stale_row_costs_one_conflict_and_the_next_read_is_the_store_s() {
    let w = world();
    let queue = Queue::new(queue_a(), Timestamp(1));
    w.cached.queues.create(&queue).await.unwrap();
    let mut theirs = queue.clone();
    theirs.version += 1;
    theirs.updated_at = Timestamp(2);
    w.elsewhere
        .queues
        .update(&theirs, queue.version, Outbox::none())
        .await
        .unwrap();

    // Within the bound this replica still sees its own write, and a
    // compare-and-swap from it loses, as it would from any stale read.
    let mut ours = w.cached.queues.get().await.unwrap().unwrap();
    assert_eq!(ours, queue);
    ours.version += 1;
    let lost = w
        .cached
        .queues
        .update(&ours, queue.version, Outbox::none())
        .await;
    assert!(
        matches!(lost, Err(StoreError::VersionMismatch { .. })),
        "{lost:?}"
    );
    // No time passed: the conflict alone dropped the entry.
    assert_eq!(w.cached.queues.get().await.unwrap(), Some(theirs));
}

#[tokio::test]
async fn an_older_version_read_later_never_replaces_a_newer_write() {
    let w = world();
    let b = build(&queue_a(), 1, "b-1");
    w.cached.builds.create(&b, Outbox::none()).await.unwrap();
    let mut newer = b.clone();
    newer.version += 1;
    w.cached
        .builds
        .update(&newer, b.version, Outbox::none())
        .await
        .unwrap();
    // Past the bound the row is read again and kept from then on.
    w.clock.advance(ROW_STALENESS);
    assert_eq!(
        w.cached.builds.get(&b.id).await.unwrap(),
        Some(newer.clone())
    );
    let mut newest = newer.clone();
    newest.version += 1;
    w.elsewhere
        .builds
        .update(&newest, newer.version, Outbox::none())
        .await
        .unwrap();
    w.clock.advance(just_under(ROW_STALENESS));
    assert_eq!(
        w.cached.builds.get(&b.id).await.unwrap(),
        Some(newer),
        "the read is served for the bound from when it began"
    );
}

#[tokio::test]
async fn nothing_found_is_not_kept_and_a_failed_write_drops_the_row() {
    let w = world();
    let r = request(&queue_a(), 1);
    assert_eq!(w.cached.requests.get(&r.id).await.unwrap(), None);
    // Created elsewhere right after: seen at once, absence was not kept.
    w.elsewhere
        .requests
        .create(&r, Outbox::none())
        .await
        .unwrap();
    assert_eq!(w.cached.requests.get(&r.id).await.unwrap(), Some(r.clone()));
    // A create here of a row that exists fails and drops what was kept.
    let mut moved = r.clone();
    moved.version += 1;
    moved.state = RequestState::Processing;
    w.elsewhere
        .requests
        .update(&moved, r.version, Outbox::none())
        .await
        .unwrap();
    let dup = w.cached.requests.create(&r, Outbox::none()).await;
    assert!(
        matches!(dup, Err(StoreError::AlreadyExists { .. })),
        "{dup:?}"
    );
    assert_eq!(w.cached.requests.get(&r.id).await.unwrap(), Some(moved));
}

#[tokio::test]
async fn get_fresh_reads_the_store_and_keeps_what_it_read() {
    let w = world();
    let (r, moved) = created_here_moved_elsewhere(&w, RequestState::Processing).await;
    assert_eq!(w.cached.requests.get(&r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(
        w.cached.requests.get_fresh(&r.id).await.unwrap(),
        Some(moved.clone())
    );
    assert_eq!(w.cached.requests.get(&r.id).await.unwrap(), Some(moved));

    let queue = Queue::new(queue_a(), Timestamp(1));
    w.elsewhere.queues.create(&queue).await.unwrap();
    assert_eq!(w.cached.queues.get_fresh().await.unwrap(), Some(queue));
    let b = build(&queue_a(), 1, "b-1");
    w.elsewhere.builds.create(&b, Outbox::none()).await.unwrap();
    assert_eq!(w.cached.builds.get_fresh(&b.id).await.unwrap(), Some(b));
}

/// A store whose request writes commit `before` after they are called and
/// return `after` after that (as the SQL store waits for its change feed),
/// and that counts the request reads that reach it.
struct Slow {
    inner: Arc<MemoryBackend>,
    reads: Arc<AtomicUsize>,
    before: Duration,
    after: Duration,
}

impl StoreFactory for Slow {
    fn for_queue(&self, queue: &QueueName) -> Stores {
        let inner = self.inner.for_queue(queue);
        Stores {
            requests: Arc::new(SlowRequests {
                inner: inner.requests.clone(),
                reads: self.reads.clone(),
                before: self.before,
                after: self.after,
            }),
            queues: Arc::new(SlowQueues {
                inner: inner.queues.clone(),
                before: self.before,
            }),
            ..inner
        }
    }
}

struct SlowRequests {
    inner: Arc<dyn RequestStore>,
    reads: Arc<AtomicUsize>,
    before: Duration,
    after: Duration,
}

/// Queue rows whose updates commit `before` after they are called.
struct SlowQueues {
    inner: Arc<dyn QueueStore>,
    before: Duration,
}

#[async_trait]
impl QueueStore for SlowQueues {
    async fn create(&self, queue: &Queue) -> Result<(), StoreError> {
        self.inner.create(queue).await
    }

    async fn get(&self) -> Result<Option<Queue>, StoreError> {
        self.inner.get().await
    }

    async fn update(
        &self,
        queue: &Queue,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        tokio::time::sleep(self.before).await;
        self.inner.update(queue, expected_version, outbox).await
    }
}

const SLOW: Duration = Duration::from_millis(300);

/// The cached stores of `queue_a` over a [`Slow`] store, the memory
/// backend beneath it (its message queue) and the count of store reads.
fn slow_cache(before: Duration, after: Duration) -> (Stores, Arc<MemoryBackend>, Arc<AtomicUsize>) {
    let clock = ManualClock::new(Timestamp(1_000_000));
    let backend = MemoryBackend::new(Arc::new(clock.clone()));
    let reads = Arc::new(AtomicUsize::new(0));
    let slow = Slow {
        inner: backend.clone(),
        reads: reads.clone(),
        before,
        after,
    };
    let cached = CachedStores::new(Arc::new(slow), Arc::new(clock)).for_queue(&queue_a());
    (cached, backend, reads)
}

#[async_trait]
impl RequestStore for SlowRequests {
    async fn create(&self, request: &Request, outbox: Outbox) -> Result<(), StoreError> {
        tokio::time::sleep(self.before).await;
        self.inner.create(request, outbox).await?;
        tokio::time::sleep(self.after).await;
        Ok(())
    }

    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(id).await
    }

    async fn update(
        &self,
        request: &Request,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        tokio::time::sleep(self.before).await;
        self.inner.update(request, expected_version, outbox).await?;
        tokio::time::sleep(self.after).await;
        Ok(())
    }
}

/// The next stage, woken by a write's hop while the write's call has not
/// returned yet, is served the written row from the cache: the store ran
/// the write's commit hook before it woke the consumer.
#[tokio::test]
async fn a_hop_s_consumer_is_served_the_row_its_write_kept_at_commit() {
    let (cached, backend, reads) = slow_cache(Duration::ZERO, SLOW);
    let hop = Topic::new("next-stage");
    let next_stage = {
        let (messages, requests, hop) = (backend.clone(), cached.requests.clone(), hop.clone());
        tokio::spawn(async move {
            messages.wait(&hop, Duration::from_secs(30)).await;
            requests.get(&request(&queue_a(), 1).id).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = request(&queue_a(), 1);
    let outbox = Outbox::none().publish(message(&hop, "p", "created"));
    let write = cached.requests.create(&r, outbox);
    let (written, served) = tokio::join!(write, next_stage);
    written.unwrap();
    assert_eq!(served.unwrap(), Some(r));
    assert_eq!(
        reads.load(Ordering::SeqCst),
        0,
        "the next stage read the row from the store"
    );
}

/// Ingest's read of the latest pointer takes the queue row as kept before
/// a write in flight, at once; a plain read waits for the write.
#[tokio::test(start_paused = true)]
async fn a_queue_read_passing_writes_does_not_wait_for_one() {
    let (cached, _, _) = slow_cache(SLOW, Duration::ZERO);
    let before = Queue::new(queue_a(), Timestamp(1_000_000));
    cached.queues.create(&before).await.unwrap();
    let mut moved = before.clone();
    moved
        .advance_latest(&request(&queue_a(), 1).id, Timestamp(1_000_001))
        .unwrap();
    moved.version += 1;
    let write = cached.queues.update(&moved, before.version, Outbox::none());
    let reads = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let began = tokio::time::Instant::now();
        let passing = cached.queues.get_passing_writes().await.unwrap();
        let passed_after = began.elapsed();
        cached.queues.get().await.unwrap();
        (passing, passed_after, began.elapsed())
    };
    let (written, (passing, passed_after, waited)) = tokio::join!(write, reads);
    written.unwrap();
    assert_eq!(passing, Some(before), "the row as kept before the write");
    assert_eq!(passed_after, Duration::ZERO, "without waiting");
    assert!(waited > Duration::ZERO, "a plain read waits for the write");
    assert_eq!(
        cached.queues.get_passing_writes().await.unwrap(),
        Some(moved),
        "once written, the written row"
    );
}

/// Every read is counted by where it was served from: the kept row, the
/// store with nothing kept, or the store because a write was in flight.
#[tokio::test]
async fn reads_are_counted_by_where_they_were_served_from() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (cached, _, reads) = slow_cache(SLOW, Duration::ZERO);
    let r = request(&queue_a(), 1);
    assert_eq!(cached.requests.get(&r.id).await.unwrap(), None);
    let write = cached.requests.create(&r, Outbox::none());
    let read_meanwhile = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cached.requests.get(&r.id).await.unwrap()
    };
    let (written, meanwhile) = tokio::join!(write, read_meanwhile);
    written.unwrap();
    assert_eq!(meanwhile, None, "read from the store before the commit");
    assert_eq!(cached.requests.get(&r.id).await.unwrap(), Some(r));
    assert_eq!(reads.load(Ordering::SeqCst), 2, "the kept row was not read");
    let text = scrape.render();
    for served in ["fetched", "fetched_during_write", "kept"] {
        let line =
            format!(r#"stovepipe_row_cache_reads_total{{entity="request",served="{served}"}} 1"#);
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
}
