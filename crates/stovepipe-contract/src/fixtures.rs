//! What the suites run against, and small builders of valid entities.
//!
//! Owns: the fixture types a factory returns, and helpers that mint valid
//! names, ids and entities so cases read as data. Does not own: any
//! adapter.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use stovepipe_entity::{
    Build, BuildId, BuildStatus, ChangeKind, Degree, EventEnvelope, Fact, HookReleaseSpec,
    NewChange, Origin, ProjectName, QueueName, Request, RequestId, Timestamp, Uri,
};
use stovepipe_ports::{
    BuildRunner, ChangeFeed, CommitHook, HookRegistry, HookSink, MessageQueue, OutgoingMessage,
    ReadModel, SourceControl, StoreFactory, Topic, TriggerRequest,
};

/// Moves the adapter's clock forward (holds, retries and leases are
/// measured by it).
pub type Advance = Arc<dyn Fn(Duration) + Send + Sync>;

/// The storage side of one installation. `feed` and `messages` MUST be the
/// ones the stores' outboxes commit to: the suites read them to check that
/// a write's outbox committed with it (and only with it). `hooks` is the
/// registry whose live hooks decide whether an outbox's hook events are
/// published.
#[derive(Clone)]
pub struct StoreFixture {
    pub stores: Arc<dyn StoreFactory>,
    pub read_model: Arc<dyn ReadModel>,
    pub feed: Arc<dyn ChangeFeed>,
    pub messages: Arc<dyn MessageQueue>,
    pub hooks: Arc<dyn HookRegistry>,
}

/// A message queue and the handle that advances its clock.
#[derive(Clone)]
pub struct MqFixture {
    pub queue: Arc<dyn MessageQueue>,
    pub advance: Advance,
}

/// A change feed and the live buffer of its subscribers (so the suite can
/// overflow it on purpose).
#[derive(Clone)]
pub struct FeedFixture {
    pub feed: Arc<dyn ChangeFeed>,
    pub live_buffer: usize,
}

/// A hook registry and the change feed its `record_run` appends to.
#[derive(Clone)]
pub struct HookFixture {
    pub hooks: Arc<dyn HookRegistry>,
    pub feed: Arc<dyn ChangeFeed>,
}

macro_rules! debug_opaque {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t)).finish_non_exhaustive()
            }
        }
    )*};
}
debug_opaque!(StoreFixture, MqFixture, FeedFixture, HookFixture);

/// A fixed instant for entity timestamps.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

pub fn queue(name: &str) -> QueueName {
    QueueName::new(name).expect("valid queue name")
}

/// The two queues isolation cases use.
pub fn queue_a() -> QueueName {
    queue("contract/a")
}

pub fn queue_b() -> QueueName {
    queue("contract/b")
}

pub fn uri(commit: &str) -> Uri {
    Uri::new(format!("contract://repo/{commit}")).expect("valid uri")
}

pub fn request_id(queue: &QueueName, n: u64) -> RequestId {
    RequestId::new(queue, n).expect("valid request id")
}

/// Request `n` of `queue` for commit `c<n>`, accepted at `T0 + n`.
pub fn request(queue: &QueueName, n: u64) -> Request {
    request_for(queue, n, &uri(&format!("c{n}")))
}

pub fn request_for(queue: &QueueName, n: u64, uri: &Uri) -> Request {
    Request::accepted(
        request_id(queue, n),
        queue.clone(),
        uri.clone(),
        Origin::Ingest,
        Timestamp(T0.0 + n as i64),
    )
}

pub fn build_id(id: &str) -> BuildId {
    BuildId::new(id).expect("valid build id")
}

/// Build `id` of request `n` of `queue` (whole repository).
pub fn build(queue: &QueueName, n: u64, id: &str) -> Build {
    Build::accepted(
        build_id(id),
        queue.clone(),
        request_id(queue, n),
        ProjectName::whole_repo(),
        T0,
    )
}

pub fn project(name: &str) -> ProjectName {
    ProjectName::new(name).expect("valid project name")
}

/// A fact recorded by request `n` of `queue`.
pub fn fact(queue: &QueueName, uri: &Uri, project: &ProjectName, degree: f64, n: u64) -> Fact {
    Fact {
        queue: queue.clone(),
        uri: uri.clone(),
        project: project.clone(),
        degree: Degree::new(degree).expect("valid degree"),
        request_id: request_id(queue, n),
        build_id: None,
        created_at: T0,
    }
}

/// A change row of `queue` about `subject`.
pub fn change(queue: &QueueName, subject: &str) -> NewChange {
    NewChange::new(
        queue,
        ChangeKind::RequestChanged,
        subject,
        json!({ "subject": subject }),
    )
}

pub fn message(topic: &Topic, key: &str, id: &str) -> OutgoingMessage {
    OutgoingMessage::new(topic.clone(), key, id, json!({ "id": id }))
}

/// Polls `check` until it returns `Some`, up to a real-time deadline;
/// panics naming `what` when the deadline passes. For results that cannot
/// be awaited directly.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Subjects of every change-log row, oldest first.
pub async fn logged_subjects(feed: &Arc<dyn ChangeFeed>) -> Vec<String> {
    feed.read_after(0, 10_000)
        .await
        .expect("read the change log")
        .into_iter()
        .map(|e| e.subject)
        .collect()
}

/// A commit hook and how many times it ran.
pub fn counted_commit_hook() -> (CommitHook, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let hook = CommitHook::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    (hook, runs)
}

/// Ids of the messages of `topic` deliverable now (leases them for a minute).
pub async fn deliverable_ids(mq: &Arc<dyn MessageQueue>, topic: &Topic) -> Vec<String> {
    let mut ids: Vec<String> = mq
        .receive(topic, "contract-observer", 10_000, Duration::from_mins(1))
        .await
        .expect("receive")
        .into_iter()
        .map(|d| d.message_id)
        .collect();
    ids.sort();
    ids
}

/// A hook release delivering to `url` (no secret, one-second timeout,
/// three attempts).
pub fn release_spec(url: &str) -> HookReleaseSpec {
    HookReleaseSpec {
        url: url.to_owned(),
        secret: None,
        headers: std::collections::BTreeMap::new(),
        timeout_ms: 1000,
        max_attempts: 3,
    }
}

/// The topic store-suite outboxes publish to.
pub fn outbox_topic() -> Topic {
    Topic::new("contract_outbox")
}

/// What a source-control adapter supports beyond the port's minimum, so
/// the suite skips only what an adapter declares it cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScmCapabilities {
    /// `resolve` accepts an unambiguous prefix of a commit id.
    pub abbreviated_ids: bool,
}

impl Default for ScmCapabilities {
    fn default() -> Self {
        Self {
            abbreviated_ids: true,
        }
    }
}

/// A repository the `source_control` suite can script, and the adapter
/// under test reading it.
///
/// Commits are named by the suite; the fixture maps names to the adapter's
/// commit ids. Commit times MUST increase with every `commit` call (so
/// "newest first" is unambiguous). The adapter MUST serve the branch that
/// `set_head` moves, with the promotion ref of `promotion_target`.
#[async_trait::async_trait]
pub trait ScmFixture: Send + Sync {
    fn capabilities(&self) -> ScmCapabilities {
        ScmCapabilities::default()
    }

    /// Adds commit `name` with `parents` (a root when empty); its tree is
    /// the first parent's with `files` (path → content) written on top. The
    /// branch does not move. Every commit has a non-empty title and author.
    async fn commit(&self, name: &str, parents: &[&str], files: &[(&str, &str)]);

    /// Moves the queue's branch to `name` (a force-push when it does not
    /// descend from the current head).
    async fn set_head(&self, name: &str);

    /// The commit id of `name` as users know it (`ChangeInfo::commit`).
    fn id(&self, name: &str) -> String;

    /// The adapter under test, configured with a promotion ref. Called
    /// after the first `set_head`.
    async fn source_control(&self) -> Arc<dyn SourceControl>;

    /// The name of the commit the promotion ref points at, read without
    /// the adapter.
    async fn promotion_target(&self) -> Option<String>;

    /// The name of the commit `reference` (a full ref name) points at, read
    /// without the adapter.
    async fn ref_target(&self, reference: &str) -> Option<String>;
}

/// A build runner, and builds whose outcome the fixture decides.
#[async_trait::async_trait]
pub trait RunnerFixture: Send + Sync {
    /// The runner under test.
    fn runner(&self) -> Arc<dyn BuildRunner>;

    /// A trigger whose build ends with `outcome` (`Succeeded` or `Failed`)
    /// within seconds.
    async fn head(&self, outcome: BuildStatus) -> TriggerRequest;

    /// A trigger whose build runs far longer than a case (until cancelled).
    async fn slow_head(&self) -> TriggerRequest;
}

/// A hook sink, and receivers whose answers the fixture scripts.
#[async_trait::async_trait]
pub trait SinkFixture: Send + Sync {
    /// The sink under test.
    fn sink(&self) -> Arc<dyn HookSink>;

    /// A fresh release URL whose successive deliveries are answered with
    /// `statuses`, in order (HTTP status codes).
    async fn url_answering(&self, statuses: &[u16]) -> String;

    /// Every envelope the receiver of `url` got, in order of arrival.
    async fn received(&self, url: &str) -> Vec<EventEnvelope>;
}

/// A trigger for `head` of queue `contract/a`, request 1, whole repository.
pub fn trigger(head: Uri) -> TriggerRequest {
    TriggerRequest {
        queue: queue_a(),
        request_id: request_id(&queue_a(), 1),
        project: ProjectName::whole_repo(),
        base: None,
        head,
        metadata: std::collections::BTreeMap::new(),
    }
}
