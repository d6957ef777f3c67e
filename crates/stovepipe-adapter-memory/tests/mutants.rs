//! The contract suites must catch subtly wrong adapters: each test wraps
//! the memory backend in one deliberate bug and checks the suite fails.
//! A suite that passes a broken adapter proves nothing.

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use stovepipe_adapter_memory::{ManualClock, MemoryBackend};
use stovepipe_contract::{FeedFixture, HookFixture, MqFixture, StoreFixture};
use stovepipe_entity::{
    Build, BuildId, ChangeEvent, EventType, Fact, Hook, HookContract, HookName, HookRelease,
    HookReleaseSpec, HookRun, NewChange, ProjectName, Queue, QueueName, Request, RequestId,
    Timestamp, Uri,
};
use stovepipe_ports::{
    ChangeFeed, ChangeStream, CommitRecord, DeadLetter, Delivery, HookError, HookRegistry,
    MessageQueue, MqError, Outbox, OutgoingMessage, ReadModel, ReleaseOutcome, RequestStore,
    RequestUriStore, StoreError, StoreFactory, Stores, Topic, UpsertOutcome,
};

/// Runs a whole suite and checks that it fails, naming `case` among the
/// failed cases.
async fn assert_suite_fails(suite: &str, case: &str, run: impl Future<Output = ()>) {
    let Err(panic) = AssertUnwindSafe(run).catch_unwind().await else {
        panic!("the {suite} suite passed a deliberately broken adapter");
    };
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains(&format!("{suite}::{case}:")),
        "expected {suite}::{case} among the failures, got:\n{message}"
    );
}

fn backend() -> (Arc<MemoryBackend>, ManualClock) {
    let clock = ManualClock::default();
    (
        MemoryBackend::with_feed_buffer(Arc::new(clock.clone()), 8),
        clock,
    )
}

// --- a CAS that ignores the expected version -------------------------------

struct CasIgnoring(Arc<dyn RequestStore>);

#[async_trait]
impl RequestStore for CasIgnoring {
    async fn create(&self, r: &Request, o: Outbox) -> Result<(), StoreError> {
        self.0.create(r, o).await
    }
    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.0.get(id).await
    }
    async fn update(&self, r: &Request, expected: u64, o: Outbox) -> Result<(), StoreError> {
        // The bug: write over whatever version is stored.
        match self.0.get(&r.id).await? {
            Some(stored) => self.0.update(r, stored.version, o).await,
            None => Err(StoreError::VersionMismatch {
                entity: "request",
                key: r.id.to_string(),
                expected,
            }),
        }
    }
}

/// Stores whose request store or URI index is swapped for a broken one.
struct Swapped {
    inner: Arc<MemoryBackend>,
    requests: bool,
    /// The broken index's numbers, shared by every handle as a store's
    /// counter would be.
    racy_numbers: Option<Arc<AtomicU64>>,
}

impl StoreFactory for Swapped {
    fn for_queue(&self, queue: &QueueName) -> Stores {
        let mut s = self.inner.for_queue(queue);
        if self.requests {
            s.requests = Arc::new(CasIgnoring(s.requests.clone()));
        }
        if let Some(numbers) = &self.racy_numbers {
            s.request_uris = Arc::new(RacyMint {
                inner: s.request_uris.clone(),
                queue: queue.clone(),
                numbers: numbers.clone(),
            });
        }
        s
    }
}

fn swapped(requests: bool, racy_mint: bool) -> StoreFixture {
    let (b, _) = backend();
    StoreFixture {
        stores: Arc::new(Swapped {
            inner: b.clone(),
            requests,
            racy_numbers: racy_mint.then(|| Arc::new(AtomicU64::new(0))),
        }),
        read_model: b.clone(),
        feed: b.clone(),
        messages: b.clone(),
        hooks: b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_store_suite_catches_a_cas_that_ignores_the_version() {
    assert_suite_fails(
        "request_store",
        "update_with_stale_version_is_mismatch_and_changes_nothing",
        stovepipe_contract::request_store::run(|| async { swapped(true, false) }),
    )
    .await;
}

// --- a mint that reads, then writes -----------------------------------------

/// Looks the URI up, then indexes it under a number of its own; when a
/// concurrent mint indexed the URI in between, it reports its own id as
/// minted instead of adopting the winner's: the read-then-write race.
struct RacyMint {
    inner: Arc<dyn RequestUriStore>,
    queue: QueueName,
    numbers: Arc<AtomicU64>,
}

#[async_trait]
impl RequestUriStore for RacyMint {
    async fn mint(&self, uri: &Uri) -> Result<(RequestId, bool), StoreError> {
        if let Some(id) = self.inner.get(uri).await? {
            return Ok((id, false));
        }
        // Long enough for the suite's other concurrent mints to read too: a
        // yield let a mint spawned alone run through before the next one
        // started, and the suite then missed the race now and then.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let n = self.numbers.fetch_add(1, Ordering::SeqCst) + 1;
        let id = RequestId::new(&self.queue, n)?;
        match self.inner.create(uri, &id).await {
            // The bug: the lost race goes unnoticed.
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok((id, true)),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, uri: &Uri, request_id: &RequestId) -> Result<(), StoreError> {
        self.inner.create(uri, request_id).await
    }

    async fn get(&self, uri: &Uri) -> Result<Option<RequestId>, StoreError> {
        self.inner.get(uri).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_store_suite_catches_a_mint_that_loses_races_unnoticed() {
    assert_suite_fails(
        "uri_store",
        "concurrent_mints_of_one_uri_index_it_once",
        stovepipe_contract::uri_store::run(|| async { swapped(false, true) }),
    )
    .await;
}

// --- a read model that orders request ids as text ---------------------------

struct TextualOrder(Arc<MemoryBackend>);

#[async_trait]
impl ReadModel for TextualOrder {
    async fn queues(&self) -> Result<Vec<Queue>, StoreError> {
        self.0.queues().await
    }
    async fn requests(
        &self,
        queue: &QueueName,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        let mut all = self.0.requests(queue, None, usize::MAX).await?;
        // The bug: "request/q/9" > "request/q/10" as text.
        all.sort_by(|a, b| b.id.as_str().cmp(a.id.as_str()));
        Ok(all
            .into_iter()
            .filter(|r| before.is_none_or(|b| r.id.number() < b))
            .take(limit)
            .collect())
    }
    async fn open_requests(&self, q: &QueueName, l: usize) -> Result<Vec<Request>, StoreError> {
        self.0.open_requests(q, l).await
    }
    async fn requests_missing_fact(
        &self,
        q: &QueueName,
        l: usize,
    ) -> Result<Vec<Request>, StoreError> {
        self.0.requests_missing_fact(q, l).await
    }
    async fn requests_for_uris(
        &self,
        q: &QueueName,
        u: &[Uri],
    ) -> Result<Vec<Request>, StoreError> {
        self.0.requests_for_uris(q, u).await
    }
    async fn facts_for_uris(&self, q: &QueueName, u: &[Uri]) -> Result<Vec<Fact>, StoreError> {
        self.0.facts_for_uris(q, u).await
    }
    async fn facts_of_request(
        &self,
        q: &QueueName,
        r: &RequestId,
    ) -> Result<Vec<Fact>, StoreError> {
        self.0.facts_of_request(q, r).await
    }
    async fn find_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        self.0.find_build(id).await
    }
    async fn commit_record(
        &self,
        q: &QueueName,
        u: &Uri,
        p: &ProjectName,
    ) -> Result<CommitRecord, StoreError> {
        self.0.commit_record(q, u, p).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_suite_catches_textual_id_order() {
    assert_suite_fails(
        "read_model",
        "requests_are_newest_first_by_number",
        stovepipe_contract::read_model::run(|| async {
            let (b, _) = backend();
            StoreFixture {
                stores: b.clone(),
                read_model: Arc::new(TextualOrder(b.clone())),
                feed: b.clone(),
                messages: b.clone(),
                hooks: b,
            }
        }),
    )
    .await;
}

// --- read models whose commit records go wrong ------------------------------

type RecordKey = (QueueName, Uri, ProjectName);

#[derive(Default)]
struct KeptRecords(Mutex<HashMap<RecordKey, CommitRecord>>);

impl KeptRecords {
    fn map(&self) -> MutexGuard<'_, HashMap<RecordKey, CommitRecord>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a [`BrokenRecords`] answers a commit record wrongly.
enum RecordBug {
    /// The first answer about a commit is served ever after.
    Cached(KeptRecords),
    /// Reads that overlap all get the record of the key asked last (as a
    /// merged statement whose rows went to the wrong readers would).
    Crossed(Mutex<Option<RecordKey>>),
}

struct BrokenRecords(Arc<MemoryBackend>, RecordBug);

#[async_trait]
impl ReadModel for BrokenRecords {
    async fn queues(&self) -> Result<Vec<Queue>, StoreError> {
        self.0.queues().await
    }
    async fn requests(
        &self,
        q: &QueueName,
        before: Option<u64>,
        l: usize,
    ) -> Result<Vec<Request>, StoreError> {
        self.0.requests(q, before, l).await
    }
    async fn open_requests(&self, q: &QueueName, l: usize) -> Result<Vec<Request>, StoreError> {
        self.0.open_requests(q, l).await
    }
    async fn requests_missing_fact(
        &self,
        q: &QueueName,
        l: usize,
    ) -> Result<Vec<Request>, StoreError> {
        self.0.requests_missing_fact(q, l).await
    }
    async fn requests_for_uris(
        &self,
        q: &QueueName,
        u: &[Uri],
    ) -> Result<Vec<Request>, StoreError> {
        self.0.requests_for_uris(q, u).await
    }
    async fn facts_for_uris(&self, q: &QueueName, u: &[Uri]) -> Result<Vec<Fact>, StoreError> {
        self.0.facts_for_uris(q, u).await
    }
    async fn facts_of_request(
        &self,
        q: &QueueName,
        r: &RequestId,
    ) -> Result<Vec<Fact>, StoreError> {
        self.0.facts_of_request(q, r).await
    }
    async fn find_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        self.0.find_build(id).await
    }
    async fn commit_record(
        &self,
        q: &QueueName,
        u: &Uri,
        p: &ProjectName,
    ) -> Result<CommitRecord, StoreError> {
        let key = (q.clone(), u.clone(), p.clone());
        match &self.1 {
            RecordBug::Cached(kept) => {
                if let Some(kept) = kept.map().get(&key) {
                    return Ok(kept.clone());
                }
                let fresh = self.0.commit_record(q, u, p).await?;
                kept.map().insert(key, fresh.clone());
                Ok(fresh)
            }
            RecordBug::Crossed(last) => {
                let lock = || last.lock().unwrap_or_else(PoisonError::into_inner);
                *lock() = Some(key.clone());
                tokio::task::yield_now().await;
                let (q, u, p) = lock().clone().unwrap_or(key);
                self.0.commit_record(&q, &u, &p).await
            }
        }
    }
}

/// The read model suite, its read model `BrokenRecords` with `bug`.
async fn read_model_suite_with(case: &str, bug: fn() -> RecordBug) {
    assert_suite_fails(
        "read_model",
        case,
        stovepipe_contract::read_model::run(|| async {
            let (b, _) = backend();
            StoreFixture {
                stores: b.clone(),
                read_model: Arc::new(BrokenRecords(b.clone(), bug())),
                feed: b.clone(),
                messages: b.clone(),
                hooks: b,
            }
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_suite_catches_cached_commit_records() {
    read_model_suite_with("commit_record_reads_the_current_request", || {
        RecordBug::Cached(KeptRecords::default())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_suite_catches_crossed_commit_records() {
    read_model_suite_with("commit_records_read_at_once_are_each_their_own", || {
        RecordBug::Crossed(Mutex::default())
    })
    .await;
}

// --- a queue whose hold lets the partition's next message through -----------

struct LeakyHold(Arc<MemoryBackend>);

#[async_trait]
impl MessageQueue for LeakyHold {
    async fn publish(&self, m: OutgoingMessage) -> Result<bool, MqError> {
        self.0.publish(m).await
    }
    async fn receive(
        &self,
        t: &Topic,
        c: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, MqError> {
        self.0.receive(t, c, max, lease).await
    }
    async fn ack(&self, d: &Delivery) -> Result<(), MqError> {
        self.0.ack(d).await
    }
    async fn hold(&self, d: &Delivery, _delay: Duration) -> Result<(), MqError> {
        // The bug: "hold" by moving the message to the back of its partition.
        self.0.ack(d).await?;
        let again = OutgoingMessage::new(
            d.topic.clone(),
            d.partition_key.clone(),
            d.message_id.clone(),
            d.payload.clone(),
        );
        self.0.publish(again).await.map(|_| ())
    }
    async fn retry(&self, d: &Delivery, delay: Duration, e: &str) -> Result<(), MqError> {
        self.0.retry(d, delay, e).await
    }
    async fn reject(&self, d: &Delivery, e: &str) -> Result<DeadLetter, MqError> {
        self.0.reject(d, e).await
    }
    async fn renew(&self, d: &Delivery, lease: Duration) -> Result<(), MqError> {
        self.0.renew(d, lease).await
    }
    async fn wake(&self, t: &Topic, k: &str) -> Result<bool, MqError> {
        self.0.wake(t, k).await
    }
    async fn wait(&self, t: &Topic, timeout: Duration) {
        self.0.wait(t, timeout).await;
    }
    async fn next_visible_at(&self, t: &Topic) -> Result<Option<Timestamp>, MqError> {
        self.0.next_visible_at(t).await
    }
    async fn dead_letters(&self, t: Option<Topic>, l: usize) -> Result<Vec<DeadLetter>, MqError> {
        self.0.dead_letters(t, l).await
    }
    async fn requeue_dead_letter(&self, id: u64) -> Result<(), MqError> {
        self.0.requeue_dead_letter(id).await
    }
    async fn purge_dead_letter(&self, id: u64) -> Result<(), MqError> {
        self.0.purge_dead_letter(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_queue_suite_catches_a_hold_that_is_no_barrier() {
    assert_suite_fails(
        "message_queue",
        "hold_is_a_barrier_and_does_not_count_an_attempt",
        stovepipe_contract::message_queue::run(|| async {
            let (b, clock) = backend();
            MqFixture {
                queue: Arc::new(LeakyHold(b)),
                advance: Arc::new(move |d| clock.advance(d)),
            }
        }),
    )
    .await;
}

// --- a feed whose slow subscribers silently skip ----------------------------

struct SilentSkip(Arc<MemoryBackend>);

#[async_trait]
impl ChangeFeed for SilentSkip {
    async fn append(&self, c: Vec<NewChange>) -> Result<Vec<ChangeEvent>, StoreError> {
        self.0.append(c).await
    }
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        self.0.read_after(after, limit).await
    }
    async fn last_seq(&self) -> Result<u64, StoreError> {
        self.0.last_seq().await
    }
    async fn removed_through(&self) -> Result<u64, StoreError> {
        self.0.removed_through().await
    }
    fn subscribe(&self) -> ChangeStream {
        // The bug: drop the Lagged signal.
        self.0
            .subscribe()
            .filter(|item| futures::future::ready(item.is_ok()))
            .boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_suite_catches_silent_skipping() {
    assert_suite_fails(
        "change_feed",
        "slow_subscriber_gets_lagged_instead_of_a_gap",
        stovepipe_contract::change_feed::run(|| async {
            let (b, _) = backend();
            FeedFixture {
                feed: Arc::new(SilentSkip(b)),
                live_buffer: 8,
            }
        }),
    )
    .await;
}

// --- a registry that decides `created` outside the insert --------------------

struct AlwaysCreated(Arc<MemoryBackend>);

#[async_trait]
impl HookRegistry for AlwaysCreated {
    async fn upsert_hook(
        &self,
        n: &HookName,
        c: &HookContract,
        now: Timestamp,
    ) -> Result<(Hook, UpsertOutcome), HookError> {
        self.0.upsert_hook(n, c, now).await
    }
    async fn create_release(
        &self,
        n: &HookName,
        s: &HookReleaseSpec,
        by: &str,
        now: Timestamp,
    ) -> Result<ReleaseOutcome, HookError> {
        // The bug: every caller believes it minted the release.
        let mut outcome = self.0.create_release(n, s, by, now).await?;
        outcome.created = true;
        Ok(outcome)
    }
    async fn set_live(&self, n: &HookName, v: u32) -> Result<Hook, HookError> {
        self.0.set_live(n, v).await
    }
    async fn get(&self, n: &HookName) -> Result<Option<Hook>, HookError> {
        HookRegistry::get(&*self.0, n).await
    }
    async fn list(&self) -> Result<Vec<Hook>, HookError> {
        HookRegistry::list(&*self.0).await
    }
    async fn list_releases(&self, n: &HookName) -> Result<Vec<HookRelease>, HookError> {
        self.0.list_releases(n).await
    }
    async fn get_release(&self, n: &HookName, v: u32) -> Result<Option<HookRelease>, HookError> {
        self.0.get_release(n, v).await
    }
    async fn resolve_live(
        &self,
        e: EventType,
        q: Option<QueueName>,
    ) -> Result<Vec<(Hook, HookRelease)>, HookError> {
        self.0.resolve_live(e, q).await
    }
    async fn record_run(&self, r: &HookRun) -> Result<bool, HookError> {
        self.0.record_run(r).await
    }
    async fn list_runs(&self, n: &HookName, l: usize) -> Result<Vec<HookRun>, HookError> {
        self.0.list_runs(n, l).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_registry_suite_catches_a_racy_created_flag() {
    assert_suite_fails(
        "hook_registry",
        "concurrent_identical_releases_mint_one_version",
        stovepipe_contract::hook_registry::run(|| async {
            let (b, _) = backend();
            HookFixture {
                hooks: Arc::new(AlwaysCreated(b.clone())),
                feed: b,
            }
        }),
    )
    .await;
}
