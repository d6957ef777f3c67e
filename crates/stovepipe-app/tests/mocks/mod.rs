//! Layer-2 fixture (quality.md): one mockall mock per port, wired into
//! [`Deps`], plus a [`Journal`] of every write-like call in call order.
//!
//! Reads are answered from small "rows" the test seeds (`with_request`,
//! `with_queue`, …); a successful write replaces the row, so a stage that
//! reloads after writing sees its own write, as on a real store. Writes are
//! only accepted where the test set an expectation (`expect_*`): mockall
//! panics on any other write, which is how "no write happened" is asserted.

#![allow(dead_code)] // each stage's tests use a different part of the fixture
#![allow(clippy::unwrap_used, clippy::expect_used)] // test fixture: a bad literal or a poisoned lock is a test failure

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use stovepipe_app::Deps;
use stovepipe_app::hops::{BuildHop, BuildSignalHop, ProcessHop, RecordHop};
use stovepipe_entity::{
    Bookmark, Build, BuildId, BuildStatus, BuildStrategy, ChangeKind, Fact, NewChange, Origin,
    ProjectName, Queue, QueueConfig, QueueName, Request, RequestId, RequestState, Timestamp, Uri,
};
use stovepipe_entity::{BuildReport, Degree};
use stovepipe_ports::{
    BuildRunner, Delivery, EntityWrite, MockBuildRunner, MockBuildRunnerFactory, MockBuildStore,
    MockChangeFeed, MockClock, MockFactStore, MockJointWriter, MockMessageQueue,
    MockQueueConfigStore, MockQueueStore, MockReadModel, MockRequestStore, MockRequestUriStore,
    MockSourceControl, MockSourceControlFactory, MockStoreFactory, Outbox, OutgoingMessage,
    PromoteOutcome, RunnerError, ScmError, SourceControl, StoreError, Stores, Topic,
    TriggerRequest,
};

/// When the seeded entities were written (and slots admitted).
pub const T0: Timestamp = Timestamp(1_700_000_000_000);
/// What the clock says during every test: ten minutes after [`T0`], well
/// inside [`MAX_VALIDATION`].
pub const NOW: Timestamp = Timestamp(1_700_000_600_000);
/// The version the seeded queue row carries.
pub const QUEUE_VERSION: u64 = 5;

pub const GATE_WAIT: Duration = Duration::from_secs(7);
pub const POLL_ACCEPTED: Duration = Duration::from_secs(11);
pub const POLL_RUNNING: Duration = Duration::from_secs(3);
pub const MAX_VALIDATION: Duration = Duration::from_hours(1);
pub const PROMOTION_REF: &str = "refs/heads/green";

pub fn queue_name() -> QueueName {
    QueueName::new("monorepo/main").unwrap()
}

pub fn rid(n: u64) -> RequestId {
    RequestId::new(&queue_name(), n).unwrap()
}

/// The commit of request `n`.
pub fn uri(n: u64) -> Uri {
    Uri::new(format!("git://repo/main/c{n}")).unwrap()
}

pub fn bid(name: &str) -> BuildId {
    BuildId::new(name).unwrap()
}

/// Request `n` (ingested at [`T0`]) moved to `state` through the entity's
/// own transitions, so version and fields are what the pipeline would have
/// written: accepted v1, superseded/processing v2, outcomes v3.
pub fn request(n: u64, state: RequestState) -> Request {
    let mut r = Request::accepted(rid(n), queue_name(), uri(n), Origin::Ingest, T0);
    match state {
        RequestState::Accepted => {}
        RequestState::Superseded => r.supersede(T0).unwrap(),
        RequestState::Processing => r.admit(BuildStrategy::Full, None, T0).unwrap(),
        RequestState::Succeeded | RequestState::Failed | RequestState::Cancelled => {
            r.admit(BuildStrategy::Full, None, T0).unwrap();
            let outcome = match state {
                RequestState::Succeeded => BuildStatus::Succeeded,
                RequestState::Failed => BuildStatus::Failed,
                _ => BuildStatus::Cancelled,
            };
            r.record_outcome(outcome, T0).unwrap();
        }
    }
    r
}

/// Request `n` admitted with an incremental strategy on `base`.
pub fn incremental_request(n: u64, base: u64) -> Request {
    let mut r = request(n, RequestState::Accepted);
    r.admit(BuildStrategy::IncrementalSinceGreen, Some(uri(base)), T0)
        .unwrap();
    r
}

/// Request `n` failed closed by the pipeline while processing (v3).
pub fn failed_closed_request(n: u64) -> Request {
    let mut r = request(n, RequestState::Processing);
    r.fail_closed("build dead-lettered: boom", T0).unwrap();
    r
}

/// `r` as the admit write must carry it: processing with this strategy and
/// base at [`NOW`].
pub fn admitted(mut r: Request, strategy: BuildStrategy, base: Option<Uri>) -> Request {
    r.admit(strategy, base, NOW).unwrap();
    r
}

/// `r` superseded at [`NOW`].
pub fn superseded(mut r: Request) -> Request {
    r.supersede(NOW).unwrap();
    r
}

/// `q` with a slot claimed for request `n` at [`NOW`].
pub fn claimed(mut q: Queue, n: u64) -> Queue {
    assert!(q.claim_slot(&rid(n), NOW).unwrap(), "already claimed");
    q
}

/// `q` with request `n`'s slot released at [`NOW`].
pub fn released(mut q: Queue, n: u64) -> Queue {
    assert!(q.release_slot(&rid(n), NOW), "no slot to release");
    q
}

pub fn bookmark(n: u64) -> Bookmark {
    Bookmark {
        uri: uri(n),
        request_id: rid(n),
        recorded_at: T0,
    }
}

/// The queue row: latest pointer at `latest`, slots held by `slots`
/// (admitted at [`T0`]), bookmark at `last_green`; version [`QUEUE_VERSION`].
pub fn queue(latest: Option<u64>, slots: &[u64], last_green: Option<u64>) -> Queue {
    let mut q = Queue::new(queue_name(), T0);
    q.latest_request_id = latest.map(rid);
    for &n in slots {
        q.claim_slot(&rid(n), T0).unwrap();
    }
    q.last_green = last_green.map(bookmark);
    q.version = QUEUE_VERSION;
    q
}

/// The configuration every test runs with unless it says otherwise:
/// distinctive delays, so a hold proves which one was used.
pub fn config() -> QueueConfig {
    let mut c = QueueConfig::new(queue_name(), "file:///srv/repo", "main");
    c.gate_wait_delay = GATE_WAIT;
    c.poll_delay_accepted = POLL_ACCEPTED;
    c.poll_delay_running = POLL_RUNNING;
    c.max_validation = MAX_VALIDATION;
    c.promotion_ref = Some(PROMOTION_REF.to_owned());
    c
}

/// Build `id` of request `n` (whole repo) in `status`, created at [`T0`].
pub fn build(id: &str, n: u64, status: BuildStatus) -> Build {
    let mut b = Build::accepted(bid(id), queue_name(), rid(n), ProjectName::whole_repo(), T0);
    if status != BuildStatus::Accepted {
        b.status = status;
        b.version = 2;
    }
    b
}

pub fn fact(n: u64, of_request: u64, degree: Degree) -> Fact {
    Fact {
        queue: queue_name(),
        uri: uri(n),
        project: ProjectName::whole_repo(),
        degree,
        request_id: rid(of_request),
        build_id: None,
        created_at: T0,
    }
}

pub fn report(status: BuildStatus) -> BuildReport {
    BuildReport::with_status(status)
}

// ---- hops and the messages they become (spelled out, not derived) ----

pub fn process_hop(n: u64) -> ProcessHop {
    ProcessHop {
        request_id: rid(n),
        queue: queue_name(),
    }
}

pub fn build_hop(n: u64) -> BuildHop {
    BuildHop {
        request_id: rid(n),
        queue: queue_name(),
        project: ProjectName::whole_repo(),
        from_admit: false,
    }
}

pub fn signal_hop(id: &str) -> BuildSignalHop {
    BuildSignalHop {
        build_id: bid(id),
        queue: queue_name(),
    }
}

pub fn record_hop(n: u64) -> RecordHop {
    RecordHop {
        request_id: rid(n),
        queue: queue_name(),
        project: ProjectName::whole_repo(),
        build_id: None,
    }
}

/// `process`, partitioned by queue, message id = request id.
pub fn process_message(n: u64) -> OutgoingMessage {
    let id = rid(n).to_string();
    OutgoingMessage::new(
        Topic::process(),
        "monorepo/main",
        id.clone(),
        json!({ "request_id": id, "queue": "monorepo/main" }),
    )
}

/// `build`, partitioned by request id, message id = request id: as
/// published again (a redelivered admit, a repair).
pub fn build_message(n: u64) -> OutgoingMessage {
    let id = rid(n).to_string();
    OutgoingMessage::new(
        Topic::build(),
        id.clone(),
        id.clone(),
        json!({ "request_id": id, "queue": "monorepo/main", "project": "" }),
    )
}

/// [`build_message`] as the admit publishes it, in its own write.
pub fn admitted_build_message(n: u64) -> OutgoingMessage {
    let mut m = build_message(n);
    m.payload["from_admit"] = json!(true);
    m
}

/// `buildsignal`, partitioned by build id, message id = build id.
pub fn signal_message(build: &str) -> OutgoingMessage {
    OutgoingMessage::new(
        Topic::buildsignal(),
        build,
        build,
        json!({ "build_id": build, "queue": "monorepo/main" }),
    )
}

/// `record`, partitioned by request id, message id = request id.
pub fn record_message(n: u64) -> OutgoingMessage {
    record_message_with_id(n, &rid(n).to_string())
}

/// `record` as buildsignal publishes it, naming the build it stamped.
pub fn stamped_record_message(n: u64, build: &str) -> OutgoingMessage {
    let mut m = record_message(n);
    m.payload["build_id"] = json!(build);
    m
}

/// `record` as a repair publishes it (own message id).
pub fn record_message_with_id(n: u64, message_id: &str) -> OutgoingMessage {
    let id = rid(n).to_string();
    OutgoingMessage::new(
        Topic::record(),
        id.clone(),
        message_id,
        json!({ "request_id": id, "queue": "monorepo/main", "project": "" }),
    )
}

/// The record hop failing closed publishes: message id `<request>/failed-closed`.
pub fn failed_closed_record_message(n: u64) -> OutgoingMessage {
    record_message_with_id(n, &format!("{}/failed-closed", rid(n)))
}

/// A delivery of `payload` on `topic` (dead-letter topics carry the last error).
pub fn delivery(topic: Topic, payload: serde_json::Value, last_error: Option<&str>) -> Delivery {
    Delivery {
        delivery_id: "d-1".into(),
        topic,
        partition_key: "p".into(),
        message_id: "m".into(),
        payload,
        attempt: 1,
        last_error: last_error.map(str::to_owned),
        published_at: T0,
    }
}

/// `(kind, subject)` of each change in an outbox, in order.
pub fn changes(outbox: &Outbox) -> Vec<(ChangeKind, String)> {
    kinds_and_subjects(&outbox.changes)
}

/// The kind and subject of each change, in order.
pub fn kinds_and_subjects(changes: &[NewChange]) -> Vec<(ChangeKind, String)> {
    changes
        .iter()
        .map(|c| (c.kind, c.subject.clone()))
        .collect()
}

/// Event ids an outbox feeds to the hook dispatcher (topic `hook`), in
/// order; each must be the id of a hook-able change of the same outbox.
pub fn hook_feeds(outbox: &Outbox) -> Vec<String> {
    let feeds: Vec<String> = outbox
        .hook_events
        .iter()
        .map(|m| {
            assert_eq!(m.topic, Topic::hook(), "hook events go to the dispatcher");
            assert_eq!(m.partition_key, m.message_id, "hook feed keyed by event id");
            assert_eq!(
                m.payload["id"],
                json!(m.message_id),
                "payload is the envelope"
            );
            assert_eq!(m.payload["occurred_at"], json!(NOW), "the write's time");
            m.message_id.clone()
        })
        .collect();
    let hookable: Vec<String> = outbox
        .changes
        .iter()
        .filter_map(|c| {
            c.kind
                .event_type()
                .map(|t| format!("{}/{}", t.as_str(), c.subject))
        })
        .collect();
    assert_eq!(
        feeds, hookable,
        "every hook-able change feeds the dispatcher"
    );
    feeds
}

/// An outbox's messages other than hook feeds (the pipeline's hops).
pub fn hops(outbox: &Outbox) -> Vec<OutgoingMessage> {
    assert!(
        outbox.messages.iter().all(|m| m.topic != Topic::hook()),
        "hook feeds are hook events, published only when a hook is live"
    );
    outbox.messages.clone()
}

/// `(kind, subject)` for assertions.
pub fn change(kind: ChangeKind, subject: impl Into<String>) -> (ChangeKind, String) {
    (kind, subject.into())
}

// ---- the journal ----

/// One write-like call a stage made, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    RequestCreate {
        request: Request,
        outbox: Outbox,
    },
    RequestUpdate {
        request: Request,
        expected: u64,
        outbox: Outbox,
    },
    /// A mint that numbered and indexed `uri` as `id`.
    Mint {
        uri: Uri,
        id: RequestId,
    },
    QueueCreate {
        queue: Queue,
    },
    QueueUpdate {
        queue: Queue,
        expected: u64,
        outbox: Outbox,
    },
    BuildCreate {
        build: Build,
        outbox: Outbox,
    },
    BuildUpdate {
        build: Build,
        expected: u64,
        outbox: Outbox,
    },
    FactCreate {
        fact: Fact,
        outbox: Outbox,
    },
    /// `joint.write_all`: several entities' writes as one.
    Joint {
        writes: Vec<EntityWrite>,
        outbox: Outbox,
    },
    Publish(OutgoingMessage),
    /// `mq.wake(topic, partition key)`.
    Wake(String, String),
    FeedAppend(Vec<NewChange>),
    Trigger(TriggerRequest),
    Cancel(BuildId),
    Promote(Uri),
}

impl Write {
    /// A short name, for asserting the order of calls.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RequestCreate { .. } => "requests.create",
            Self::RequestUpdate { .. } => "requests.update",
            Self::Mint { .. } => "request_uris.mint",
            Self::QueueCreate { .. } => "queues.create",
            Self::QueueUpdate { .. } => "queues.update",
            Self::BuildCreate { .. } => "builds.create",
            Self::BuildUpdate { .. } => "builds.update",
            Self::FactCreate { .. } => "facts.create",
            Self::Joint { .. } => "joint.write_all",
            Self::Publish(_) => "mq.publish",
            Self::Wake(..) => "mq.wake",
            Self::FeedAppend(_) => "feed.append",
            Self::Trigger(_) => "runner.trigger",
            Self::Cancel(_) => "runner.cancel",
            Self::Promote(_) => "scm.promote",
        }
    }

    pub fn request_update(&self) -> (&Request, u64, &Outbox) {
        match self {
            Self::RequestUpdate {
                request,
                expected,
                outbox,
            } => (request, *expected, outbox),
            other => panic!("expected requests.update, got {other:#?}"),
        }
    }

    pub fn request_create(&self) -> (&Request, &Outbox) {
        match self {
            Self::RequestCreate { request, outbox } => (request, outbox),
            other => panic!("expected requests.create, got {other:#?}"),
        }
    }

    pub fn queue_update(&self) -> (&Queue, u64, &Outbox) {
        match self {
            Self::QueueUpdate {
                queue,
                expected,
                outbox,
            } => (queue, *expected, outbox),
            other => panic!("expected queues.update, got {other:#?}"),
        }
    }

    pub fn build_create(&self) -> (&Build, &Outbox) {
        match self {
            Self::BuildCreate { build, outbox } => (build, outbox),
            other => panic!("expected builds.create, got {other:#?}"),
        }
    }

    pub fn build_update(&self) -> (&Build, u64, &Outbox) {
        match self {
            Self::BuildUpdate {
                build,
                expected,
                outbox,
            } => (build, *expected, outbox),
            other => panic!("expected builds.update, got {other:#?}"),
        }
    }

    pub fn fact_create(&self) -> (&Fact, &Outbox) {
        match self {
            Self::FactCreate { fact, outbox } => (fact, outbox),
            other => panic!("expected facts.create, got {other:#?}"),
        }
    }

    pub fn joint(&self) -> (&[EntityWrite], &Outbox) {
        match self {
            Self::Joint { writes, outbox } => (writes, outbox),
            other => panic!("expected joint.write_all, got {other:#?}"),
        }
    }

    /// The request a joint write updates or creates, with the version its
    /// update expects (`None` for a create).
    pub fn joint_request(&self) -> (&Request, Option<u64>) {
        self.joint()
            .0
            .iter()
            .find_map(|w| match w {
                EntityWrite::UpdateRequest {
                    request,
                    expected_version,
                } => Some((request, Some(*expected_version))),
                EntityWrite::CreateRequest(request) => Some((request, None)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the joint write has no request: {self:#?}"))
    }

    /// The queue row a joint write updates and the version it expects.
    pub fn joint_queue(&self) -> Option<(&Queue, u64)> {
        self.joint().0.iter().find_map(|w| match w {
            EntityWrite::UpdateQueue {
                queue,
                expected_version,
            } => Some((queue, *expected_version)),
            _ => None,
        })
    }

    /// The build a joint write updates and the version it expects.
    pub fn joint_build(&self) -> Option<(&Build, u64)> {
        self.joint().0.iter().find_map(|w| match w {
            EntityWrite::UpdateBuild {
                build,
                expected_version,
            } => Some((build, *expected_version)),
            _ => None,
        })
    }

    /// The fact a joint write creates.
    pub fn joint_fact(&self) -> Option<&Fact> {
        self.joint().0.iter().find_map(|w| match w {
            EntityWrite::CreateFact(fact) => Some(fact),
            _ => None,
        })
    }

    pub fn published(&self) -> &OutgoingMessage {
        match self {
            Self::Publish(m) => m,
            other => panic!("expected mq.publish, got {other:#?}"),
        }
    }
}

/// Every write-like call, in the order the stage made them.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<Write>>>);

impl Journal {
    fn push(&self, w: Write) {
        self.0.lock().unwrap().push(w);
    }

    pub fn writes(&self) -> Vec<Write> {
        self.0.lock().unwrap().clone()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().map(Write::name).collect()
    }
}

type Row<T> = Arc<Mutex<Option<T>>>;

fn row<T>(value: Option<T>) -> Row<T> {
    Arc::new(Mutex::new(value))
}

fn conflict(entity: &'static str) -> StoreError {
    StoreError::VersionMismatch {
        entity,
        key: "k".into(),
        expected: 0,
    }
}

/// The stored rows a joint write changes (the fixture's cells).
pub struct Rows {
    pub request: Row<Request>,
    pub queue: Row<Queue>,
    pub build: Row<Build>,
    pub fact: Row<Fact>,
}

impl Rows {
    fn store(&self, write: EntityWrite) {
        match write {
            EntityWrite::CreateRequest(r) | EntityWrite::UpdateRequest { request: r, .. } => {
                *self.request.lock().unwrap() = Some(r);
            }
            EntityWrite::UpdateQueue { queue, .. } => *self.queue.lock().unwrap() = Some(queue),
            EntityWrite::UpdateBuild { build, .. } => *self.build.lock().unwrap() = Some(build),
            EntityWrite::CreateFact(fact) => *self.fact.lock().unwrap() = Some(fact),
        }
    }
}

// ---- the fixture ----

pub struct Fixture {
    pub joint: MockJointWriter,
    pub requests: MockRequestStore,
    pub uris: MockRequestUriStore,
    pub queues: MockQueueStore,
    pub builds: MockBuildStore,
    pub facts: MockFactStore,
    pub configs: MockQueueConfigStore,
    pub scm: MockSourceControl,
    pub runner: MockBuildRunner,
    pub mq: MockMessageQueue,
    pub feed: MockChangeFeed,
    pub log: Journal,
    request_row: Row<Request>,
    queue_row: Row<Queue>,
    build_row: Row<Build>,
    fact_row: Row<Fact>,
    uri_row: Row<RequestId>,
    builds_of_request: Vec<Build>,
    config: Option<QueueConfig>,
    reports_via_api: bool,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// Nothing stored, the default [`config`], every mock strict.
    pub fn new() -> Self {
        Self {
            joint: MockJointWriter::new(),
            requests: MockRequestStore::new(),
            uris: MockRequestUriStore::new(),
            queues: MockQueueStore::new(),
            builds: MockBuildStore::new(),
            facts: MockFactStore::new(),
            configs: MockQueueConfigStore::new(),
            scm: MockSourceControl::new(),
            runner: MockBuildRunner::new(),
            mq: MockMessageQueue::new(),
            feed: MockChangeFeed::new(),
            log: Journal::default(),
            request_row: row(None),
            queue_row: row(None),
            build_row: row(None),
            fact_row: row(None),
            uri_row: row(None),
            builds_of_request: Vec::new(),
            config: Some(config()),
            reports_via_api: false,
        }
    }

    // -- seeded rows (reads) --

    #[must_use]
    pub fn with_request(self, r: Request) -> Self {
        *self.request_row.lock().unwrap() = Some(r);
        self
    }

    #[must_use]
    pub fn with_queue(self, q: Queue) -> Self {
        *self.queue_row.lock().unwrap() = Some(q);
        self
    }

    /// The build `builds.get` answers.
    #[must_use]
    pub fn with_build(self, b: Build) -> Self {
        *self.build_row.lock().unwrap() = Some(b);
        self
    }

    /// What `builds.list_for_request` answers (filtered by request).
    #[must_use]
    pub fn with_builds_of_request(mut self, builds: Vec<Build>) -> Self {
        self.builds_of_request = builds;
        self
    }

    #[must_use]
    pub fn with_fact(self, f: Fact) -> Self {
        *self.fact_row.lock().unwrap() = Some(f);
        self
    }

    #[must_use]
    pub fn with_uri_indexed(self, id: RequestId) -> Self {
        *self.uri_row.lock().unwrap() = Some(id);
        self
    }

    #[must_use]
    pub fn with_config(mut self, c: QueueConfig) -> Self {
        self.config = Some(c);
        self
    }

    #[must_use]
    pub fn without_config(mut self) -> Self {
        self.config = None;
        self
    }

    #[must_use]
    pub fn reporting_via_api(mut self) -> Self {
        self.reports_via_api = true;
        self
    }

    // -- expected writes --

    /// One `requests.update` that succeeds (the row becomes the written one).
    pub fn expect_request_update(&mut self) {
        let (log, cell) = (self.log.clone(), self.request_row.clone());
        self.requests
            .expect_update()
            .times(1)
            .returning(move |r, expected, outbox| {
                log.push(Write::RequestUpdate {
                    request: r.clone(),
                    expected,
                    outbox,
                });
                *cell.lock().unwrap() = Some(r.clone());
                Ok(())
            });
    }

    /// One `requests.update` that loses to a concurrent writer, which left
    /// `concurrent` stored.
    pub fn expect_request_update_conflict(&mut self, concurrent: Request) {
        let (log, cell) = (self.log.clone(), self.request_row.clone());
        self.requests
            .expect_update()
            .times(1)
            .returning(move |r, expected, outbox| {
                log.push(Write::RequestUpdate {
                    request: r.clone(),
                    expected,
                    outbox,
                });
                *cell.lock().unwrap() = Some(concurrent.clone());
                Err(conflict("request"))
            });
    }

    /// One `requests.create` answering `result` (the row is stored on Ok).
    pub fn expect_request_create(&mut self, result: Result<(), StoreError>) {
        let (log, cell) = (self.log.clone(), self.request_row.clone());
        self.requests
            .expect_create()
            .times(1)
            .returning(move |r, outbox| {
                log.push(Write::RequestCreate {
                    request: r.clone(),
                    outbox,
                });
                if result.is_ok() {
                    *cell.lock().unwrap() = Some(r.clone());
                }
                result.clone()
            });
    }

    /// One `queues.update` that succeeds.
    pub fn expect_queue_update(&mut self) {
        self.expect_queue_update_answering(|q| Some(q.clone()), Ok(()));
    }

    /// One `queues.update` that fails with `err` (nothing written).
    pub fn expect_queue_update_err(&mut self, err: StoreError) {
        self.expect_queue_update_answering(|_| None, Err(err));
    }

    /// One `queues.update` that loses to a concurrent writer, which left
    /// `concurrent` stored.
    pub fn expect_queue_update_conflict(&mut self, concurrent: Queue) {
        self.expect_queue_update_answering(
            move |_| Some(concurrent.clone()),
            Err(conflict("queue")),
        );
    }

    /// One `queues.update`, logged, that leaves `stored(written)` as the
    /// row (when `Some`) and answers `result`.
    fn expect_queue_update_answering(
        &mut self,
        stored: impl Fn(&Queue) -> Option<Queue> + Send + 'static,
        result: Result<(), StoreError>,
    ) {
        let (log, cell) = (self.log.clone(), self.queue_row.clone());
        self.queues
            .expect_update()
            .times(1)
            .returning(move |q, expected, outbox| {
                log.push(Write::QueueUpdate {
                    queue: q.clone(),
                    expected,
                    outbox,
                });
                if let Some(row) = stored(q) {
                    *cell.lock().unwrap() = Some(row);
                }
                result.clone()
            });
    }

    /// One `queues.create` that succeeds.
    pub fn expect_queue_create(&mut self) {
        let (log, cell) = (self.log.clone(), self.queue_row.clone());
        self.queues.expect_create().times(1).returning(move |q| {
            log.push(Write::QueueCreate { queue: q.clone() });
            *cell.lock().unwrap() = Some(q.clone());
            Ok(())
        });
    }

    /// One `builds.create` answering `result`.
    pub fn expect_build_create(&mut self, result: Result<(), StoreError>) {
        let log = self.log.clone();
        self.builds
            .expect_create()
            .times(1)
            .returning(move |b, outbox| {
                log.push(Write::BuildCreate {
                    build: b.clone(),
                    outbox,
                });
                result.clone()
            });
    }

    /// One `builds.update` that succeeds.
    pub fn expect_build_update(&mut self) {
        let (log, cell) = (self.log.clone(), self.build_row.clone());
        self.builds
            .expect_update()
            .times(1)
            .returning(move |b, expected, outbox| {
                log.push(Write::BuildUpdate {
                    build: b.clone(),
                    expected,
                    outbox,
                });
                *cell.lock().unwrap() = Some(b.clone());
                Ok(())
            });
    }

    /// One `builds.update` answering `err` (nothing stored).
    pub fn expect_build_update_err(&mut self, err: StoreError) {
        self.expect_build_updates_err(1, err);
    }

    /// `times` `builds.update`s, each answering `err` (nothing stored).
    pub fn expect_build_updates_err(&mut self, times: usize, err: StoreError) {
        let log = self.log.clone();
        self.builds
            .expect_update()
            .times(times)
            .returning(move |b, expected, outbox| {
                log.push(Write::BuildUpdate {
                    build: b.clone(),
                    expected,
                    outbox,
                });
                Err(err.clone())
            });
    }

    /// One `facts.create` answering `result` (stored on Ok).
    pub fn expect_fact_create(&mut self, result: Result<(), StoreError>) {
        let (log, cell) = (self.log.clone(), self.fact_row.clone());
        self.facts
            .expect_create()
            .times(1)
            .returning(move |f, outbox| {
                log.push(Write::FactCreate {
                    fact: f.clone(),
                    outbox,
                });
                if result.is_ok() {
                    *cell.lock().unwrap() = Some(f.clone());
                }
                result.clone()
            });
    }

    /// One `joint.write_all` that succeeds: every row it writes becomes
    /// the stored one.
    pub fn expect_joint(&mut self) {
        self.expect_joint_answering(1, Ok(()), |_| {});
    }

    /// One `joint.write_all` that fails with `err` (nothing written), after
    /// which `concurrent` (another writer's) may change the stored rows.
    pub fn expect_joint_err(
        &mut self,
        err: StoreError,
        concurrent: impl Fn(&Rows) + Send + 'static,
    ) {
        self.expect_joint_answering(1, Err(err), concurrent);
    }

    /// `times` `joint.write_all`s, each failing with `err`.
    pub fn expect_joints_err(&mut self, times: usize, err: StoreError) {
        self.expect_joint_answering(times, Err(err), |_| {});
    }

    /// A joint write that loses on `entity` to a concurrent writer.
    pub fn joint_conflict(entity: &'static str) -> StoreError {
        conflict(entity)
    }

    fn expect_joint_answering(
        &mut self,
        times: usize,
        result: Result<(), StoreError>,
        after: impl Fn(&Rows) + Send + 'static,
    ) {
        let log = self.log.clone();
        let rows = Rows {
            request: self.request_row.clone(),
            queue: self.queue_row.clone(),
            build: self.build_row.clone(),
            fact: self.fact_row.clone(),
        };
        self.joint
            .expect_write_all()
            .times(times)
            .returning(move |writes, outbox| {
                log.push(Write::Joint {
                    writes: writes.clone(),
                    outbox,
                });
                if result.is_ok() {
                    for w in writes {
                        rows.store(w);
                    }
                } else {
                    after(&rows);
                }
                result.clone()
            });
    }

    /// `times` publishes, each answering `Ok(true)`.
    pub fn expect_publishes(&mut self, times: usize) {
        let log = self.log.clone();
        self.mq.expect_publish().times(times).returning(move |m| {
            log.push(Write::Publish(m));
            Ok(true)
        });
    }

    pub fn expect_publish(&mut self) {
        self.expect_publishes(1);
    }

    /// One `mq.wake`, answering that something was woken.
    pub fn expect_wake(&mut self) {
        let log = self.log.clone();
        self.mq.expect_wake().times(1).returning(move |t, k| {
            log.push(Write::Wake(t.to_string(), k.to_owned()));
            Ok(true)
        });
    }

    /// One `request_uris.mint` that numbers the URI `n` and indexes it
    /// (the index then answers it).
    pub fn expect_mint(&mut self, n: u64) {
        let (log, cell) = (self.log.clone(), self.uri_row.clone());
        self.uris.expect_mint().times(1).returning(move |u| {
            let id = rid(n);
            log.push(Write::Mint {
                uri: u.clone(),
                id: id.clone(),
            });
            *cell.lock().unwrap() = Some(id.clone());
            Ok((id, true))
        });
    }

    /// One `runner.trigger` answering `result`.
    pub fn expect_trigger(&mut self, result: Result<BuildId, RunnerError>) {
        let log = self.log.clone();
        self.runner.expect_trigger().times(1).returning(move |t| {
            log.push(Write::Trigger(t.clone()));
            result.clone()
        });
    }

    /// One `runner.cancel` answering `result`.
    pub fn expect_cancel(&mut self, result: Result<(), RunnerError>) {
        let log = self.log.clone();
        self.runner.expect_cancel().times(1).returning(move |id| {
            log.push(Write::Cancel(id.clone()));
            result.clone()
        });
    }

    /// One `scm.promote` answering `result`.
    pub fn expect_promote(&mut self, result: Result<PromoteOutcome, ScmError>) {
        let log = self.log.clone();
        self.scm.expect_promote().times(1).returning(move |u| {
            log.push(Write::Promote(u.clone()));
            result.clone()
        });
    }

    /// One `scm.promote` answering `result`, during which another record
    /// moves the bookmark: the queue row becomes `moved_on`.
    pub fn expect_promote_while_bookmark_moves(
        &mut self,
        result: Result<PromoteOutcome, ScmError>,
        moved_on: Queue,
    ) {
        let (log, cell) = (self.log.clone(), self.queue_row.clone());
        self.scm.expect_promote().times(1).returning(move |u| {
            log.push(Write::Promote(u.clone()));
            *cell.lock().unwrap() = Some(moved_on.clone());
            result.clone()
        });
    }

    /// One `feed.append`.
    pub fn expect_feed_append(&mut self) {
        let log = self.log.clone();
        self.feed.expect_append().times(1).returning(move |c| {
            log.push(Write::FeedAppend(c));
            Ok(Vec::new())
        });
    }

    // -- wiring --

    /// Answers reads from the rows and wires every mock into [`Deps`].
    pub fn deps(mut self) -> (Arc<Deps>, Journal) {
        // `get` and `get_fresh` answer alike: a mock keeps no copies.
        let cell = self.request_row.clone();
        let request =
            move |id: &RequestId| Ok(cell.lock().unwrap().clone().filter(|r| &r.id == id));
        self.requests.expect_get().returning(request.clone());
        self.requests.expect_get_fresh().returning(request);
        let cell = self.queue_row.clone();
        let queue = move || Ok(cell.lock().unwrap().clone());
        self.queues.expect_get().returning(queue.clone());
        self.queues
            .expect_get_passing_writes()
            .returning(queue.clone());
        self.queues.expect_get_fresh().returning(queue);
        let cell = self.build_row.clone();
        let build = move |id: &BuildId| Ok(cell.lock().unwrap().clone().filter(|b| &b.id == id));
        self.builds.expect_get().returning(build.clone());
        self.builds.expect_get_fresh().returning(build);
        let listed = self.builds_of_request.clone();
        self.builds.expect_list_for_request().returning(move |id| {
            Ok(listed
                .iter()
                .filter(|b| &b.request_id == id)
                .cloned()
                .collect())
        });
        let cell = self.fact_row.clone();
        self.facts.expect_get().returning(move |u, p| {
            Ok(cell
                .lock()
                .unwrap()
                .clone()
                .filter(|f| &f.uri == u && &f.project == p))
        });
        let cell = self.uri_row.clone();
        self.uris
            .expect_get()
            .returning(move |_| Ok(cell.lock().unwrap().clone()));
        // A mint the test did not expect can only find the indexed entry.
        let cell = self.uri_row.clone();
        self.uris.expect_mint().returning(move |u| {
            let indexed = cell.lock().unwrap().clone();
            let id = indexed.unwrap_or_else(|| panic!("unexpected mint of {u}"));
            Ok((id, false))
        });
        let config = self.config.clone();
        self.configs
            .expect_get()
            .returning(move |name| Ok(config.clone().filter(|c| &c.name == name)));
        self.runner
            .expect_reports_via_api()
            .return_const(self.reports_via_api);

        let stores = Stores {
            queue: queue_name(),
            requests: Arc::new(self.requests),
            request_uris: Arc::new(self.uris),
            queues: Arc::new(self.queues),
            builds: Arc::new(self.builds),
            facts: Arc::new(self.facts),
            joint: Arc::new(self.joint),
        };
        let mut factory = MockStoreFactory::new();
        factory.expect_for_queue().returning(move |q| {
            assert_eq!(q, &queue_name(), "stores asked for another queue");
            stores.clone()
        });

        let scm: Arc<dyn SourceControl> = Arc::new(self.scm);
        let mut scm_factory = MockSourceControlFactory::new();
        scm_factory
            .expect_for_queue()
            .returning(move |_| Ok(scm.clone()));
        let runner: Arc<dyn BuildRunner> = Arc::new(self.runner);
        let mut runner_factory = MockBuildRunnerFactory::new();
        runner_factory
            .expect_for_queue()
            .returning(move |_| Ok(runner.clone()));

        let mut clock = MockClock::new();
        clock.expect_now().return_const(NOW);

        let deps = Deps {
            stores: Arc::new(factory),
            configs: Arc::new(self.configs),
            read: Arc::new(MockReadModel::new()),
            scm: Arc::new(scm_factory),
            runners: Arc::new(runner_factory),
            mq: Arc::new(self.mq),
            feed: Arc::new(self.feed),
            clock: Arc::new(clock),
            // Stage tests never reach hooks: an unexpected call fails.
            hooks: Arc::new(stovepipe_ports::MockHookRegistry::new()),
            sink: Arc::new(stovepipe_ports::MockHookSink::new()),
        };
        (Arc::new(deps), self.log)
    }
}

/// Metadata every trigger carries.
pub fn trigger_metadata(n: u64) -> BTreeMap<String, String> {
    BTreeMap::from([("request_id".to_owned(), rid(n).to_string())])
}
