//! Storage ports: key/value shaped stores bound to one queue, the counter,
//! the read model (the query side) and the queue configuration store.
//!
//! Writes are pure conditional writes: the caller loads an entity, applies a
//! transition (which bumps `version`), and calls `update(entity,
//! expected_version)`. The store compares the stored version with
//! `expected_version`; the caller does the arithmetic.
//!
//! Every write takes an [`Outbox`]: the change-log rows and next-hop messages
//! that MUST commit with it (transactional outbox). On success all of them
//! are written; on any error none is.
//!
//! Hook events are the one conditional part: an outbox's `hook_events` are
//! published only when, as the write commits, the hook registry of the same
//! backend holds at least one hook with a live release. Nobody could receive
//! them otherwise, and they would cost a message's publish, receive and ack
//! each (three of a request's seven messages). Whether a live hook's
//! contract matches an event stays the dispatcher's decision at pick-up.
//! A hook event MUST be keyed by its own message id (partition key =
//! message id), so that it is alone in its partition; an adapter MAY reject
//! another as `InvalidValue`.
//! A backend whose stores do not share a transaction with a hook registry
//! MUST publish them unconditionally.
//!
//! An outbox may carry a [`CommitHook`]: the writer's own bookkeeping of
//! the write (the pipeline's row cache keeps the rows it wrote). A store
//! MUST run it once the write has committed and before it wakes this
//! process's consumers of the write's messages, and never for a write that
//! did not commit; a write whose hook ran returns `Ok`. So the next stage,
//! woken by the write's hop, finds the bookkeeping in place even while the
//! write's call has not yet returned (a store may wait for other readers,
//! its change feed say, before it returns).

use crate::error::StoreError;
use crate::messaging::OutgoingMessage;
use async_trait::async_trait;
use std::sync::{Arc, Mutex, PoisonError};
use stovepipe_entity::{
    Build, BuildId, Fact, InvalidValue, NewChange, ProjectName, Queue, QueueConfig, QueueName,
    Request, RequestId, Uri,
};

/// Side effects that commit together with a store write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outbox {
    /// Appended to the change log, in order.
    pub changes: Vec<NewChange>,
    /// Published to the message queue (deduplicated as any publish).
    pub messages: Vec<OutgoingMessage>,
    /// Published as `messages` are, but only when the backend's hook
    /// registry holds a hook with a live release at commit (module docs).
    pub hook_events: Vec<OutgoingMessage>,
    /// Run once the write has committed, before this process's consumers
    /// are woken for `messages` (module docs). Not part of what is written.
    pub on_commit: CommitHook,
}

/// A writer's bookkeeping of its write, run at most once (see the module):
/// by the store when the write commits, or by the writer when the call
/// returns, whichever comes first. Clones share the one run. Empty by
/// default, when running it does nothing.
///
/// A store may run it while it holds its own locks (the memory adapter
/// does, so that no consumer sees the write before it ran): a hook must be
/// short and must not call into the store.
#[derive(Clone, Default)]
pub struct CommitHook(Option<Arc<Mutex<Option<HookFn>>>>);

/// A commit hook's body; taken out of its slot when it runs.
type HookFn = Box<dyn FnOnce() + Send>;

impl CommitHook {
    pub fn new(hook: impl FnOnce() + Send + 'static) -> Self {
        Self(Some(Arc::new(Mutex::new(Some(Box::new(hook))))))
    }

    /// Runs the hook, unless it ran before (or there is none).
    pub fn run(&self) {
        let Some(once) = &self.0 else { return };
        // Taken whole: a panic elsewhere cannot leave the slot half-written.
        let hook = once.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            None => "none",
            Some(_) => "set",
        };
        f.debug_tuple("CommitHook").field(&state).finish()
    }
}

/// Two hooks are equal when both are empty or they are clones of one.
impl PartialEq for CommitHook {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Outbox {
    pub fn none() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn change(mut self, change: NewChange) -> Self {
        self.changes.push(change);
        self
    }

    #[must_use]
    pub fn publish(mut self, message: OutgoingMessage) -> Self {
        self.messages.push(message);
        self
    }

    /// Feeds the hook dispatcher `event` (a message of topic `hook`), if a
    /// live hook exists when the write commits.
    #[must_use]
    pub fn publish_hook_event(mut self, event: OutgoingMessage) -> Self {
        self.hook_events.push(event);
        self
    }

    /// Runs `hook` when the write commits (see [`CommitHook`]).
    #[must_use]
    pub fn on_commit(mut self, hook: CommitHook) -> Self {
        self.on_commit = hook;
        self
    }

    /// Nothing to write (a commit hook is not written).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.messages.is_empty() && self.hook_events.is_empty()
    }
}

/// Requests of one queue.
///
/// Contract (MUST):
/// - `create` returns `AlreadyExists` when a request with the id exists, and
///   writes nothing (not even the outbox);
/// - `get` returns `Ok(None)` for an unknown id;
/// - `update` returns `VersionMismatch` when the stored version differs from
///   `expected_version` or the row does not exist, and writes nothing;
/// - every method returns `WrongQueue` for a request of another queue.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait RequestStore: Send + Sync {
    async fn create(&self, request: &Request, outbox: Outbox) -> Result<(), StoreError>;
    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError>;
    /// The request as stored now. A decorator that keeps rows (the
    /// pipeline's row cache) answers `get` from its copy and this from the
    /// store; a store that keeps nothing needs no implementation.
    async fn get_fresh(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.get(id).await
    }
    async fn update(
        &self,
        request: &Request,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError>;
}

/// The `(queue, uri) → request id` dedup index, and the queue's durable
/// request numbering behind it.
///
/// Contract (MUST): `mint` returns the request id indexed for the URI with
/// `false`, or indexes the URI under a new id, `request/<queue>/<n>`, and
/// returns it with `true`; `n` is 1 for a queue's first mint, then strictly
/// increasing, and never handed out twice, even to concurrent callers or
/// after a caller lost a race (its number is spent). Concurrent mints of
/// one URI return one id, `true` to exactly one of them. `create` returns
/// `AlreadyExists` when the URI is indexed (whatever the request id) and
/// leaves the existing entry; `get` returns `Ok(None)` for an unindexed
/// URI; a request id of another queue is `WrongQueue`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait RequestUriStore: Send + Sync {
    /// Ingest's dedup step in one call: look the URI up and, when it is
    /// not indexed, number and index it.
    async fn mint(&self, uri: &Uri) -> Result<(RequestId, bool), StoreError>;
    async fn create(&self, uri: &Uri, request_id: &RequestId) -> Result<(), StoreError>;
    async fn get(&self, uri: &Uri) -> Result<Option<RequestId>, StoreError>;
}

/// The queue row (latest pointer, slots, bookmarks).
///
/// Contract (MUST): as [`RequestStore`]; `create` of an existing queue is
/// `AlreadyExists`; a queue whose name differs from the bound queue is
/// `WrongQueue`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait QueueStore: Send + Sync {
    async fn create(&self, queue: &Queue) -> Result<(), StoreError>;
    async fn get(&self) -> Result<Option<Queue>, StoreError>;
    /// The queue row as stored now. A decorator that keeps rows (the
    /// pipeline's row cache) answers `get` from its copy and this from the
    /// store; a store that keeps nothing needs no implementation.
    async fn get_fresh(&self) -> Result<Option<Queue>, StoreError> {
        self.get().await
    }
    /// The queue row as `get` answers it, except that a decorator that
    /// keeps rows may answer its copy as it was before a write of the row
    /// now in flight, instead of waiting for that write. For a caller that
    /// takes from it only what never goes back (ingest: the latest
    /// pointer, which only moves forward); a store that keeps nothing
    /// needs no implementation.
    async fn get_passing_writes(&self) -> Result<Option<Queue>, StoreError> {
        self.get().await
    }
    async fn update(
        &self,
        queue: &Queue,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError>;
}

/// Builds of one queue.
///
/// Contract (MUST): as [`RequestStore`]; `list_for_request` returns every
/// build of the request (any project), oldest first, and an empty list for
/// an unknown request.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait BuildStore: Send + Sync {
    async fn create(&self, build: &Build, outbox: Outbox) -> Result<(), StoreError>;
    async fn get(&self, id: &BuildId) -> Result<Option<Build>, StoreError>;
    /// The build as stored now. A decorator that keeps rows (the
    /// pipeline's row cache) answers `get` from its copy and this from the
    /// store; a store that keeps nothing needs no implementation.
    async fn get_fresh(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        self.get(id).await
    }
    async fn update(
        &self,
        build: &Build,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError>;
    async fn list_for_request(&self, request_id: &RequestId) -> Result<Vec<Build>, StoreError>;
}

/// Facts of one queue: create-only.
///
/// Contract (MUST): `create` returns `AlreadyExists` when a fact with the
/// same `(uri, project)` exists and never overwrites it (first writer wins);
/// `get` returns `Ok(None)` when there is no fact.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait FactStore: Send + Sync {
    async fn create(&self, fact: &Fact, outbox: Outbox) -> Result<(), StoreError>;
    async fn get(&self, uri: &Uri, project: &ProjectName) -> Result<Option<Fact>, StoreError>;
}

/// One entity's part of a joint write ([`JointWriter::write_all`]): what
/// the entity's own store method of the same name would write.
#[derive(Debug, Clone, PartialEq)]
pub enum EntityWrite {
    /// [`RequestStore::create`].
    CreateRequest(Request),
    /// [`RequestStore::update`].
    UpdateRequest {
        request: Request,
        expected_version: u64,
    },
    /// [`QueueStore::update`].
    UpdateQueue { queue: Queue, expected_version: u64 },
    /// [`BuildStore::update`].
    UpdateBuild { build: Build, expected_version: u64 },
    /// [`FactStore::create`].
    CreateFact(Fact),
}

impl EntityWrite {
    /// Whether this write inserts a row (a create) rather than updating one.
    pub fn is_create(&self) -> bool {
        self.expected_version().is_none()
    }

    /// The version an update expects the stored row at (`None`: a create).
    pub fn expected_version(&self) -> Option<u64> {
        match self {
            Self::CreateRequest(_) | Self::CreateFact(_) => None,
            Self::UpdateRequest {
                expected_version, ..
            }
            | Self::UpdateQueue {
                expected_version, ..
            }
            | Self::UpdateBuild {
                expected_version, ..
            } => Some(*expected_version),
        }
    }

    /// The entity written and its key, as errors name them.
    pub fn entity(&self) -> (&'static str, String) {
        match self {
            Self::CreateRequest(request) | Self::UpdateRequest { request, .. } => {
                ("request", request.id.to_string())
            }
            Self::UpdateQueue { queue, .. } => ("queue", queue.name.to_string()),
            Self::UpdateBuild { build, .. } => ("build", build.id.to_string()),
            Self::CreateFact(fact) => ("fact", format!("{} {:?}", fact.uri, fact.project.as_str())),
        }
    }

    /// Checks a joint write's list ([`JointWriter`]'s contract): at least
    /// one write, at most one create, no entity twice.
    pub fn check_list(writes: &[EntityWrite]) -> Result<(), StoreError> {
        let refuse = |value: String, expected: &str| {
            Err(StoreError::Invalid(InvalidValue {
                kind: "joint write",
                value,
                expected: expected.to_owned(),
            }))
        };
        if writes.is_empty() {
            return refuse("no writes".to_owned(), "at least one entity write");
        }
        let creates = writes.iter().filter(|w| w.is_create()).count();
        if creates > 1 {
            return refuse(format!("{creates} creates"), "at most one create");
        }
        for (i, write) in writes.iter().enumerate() {
            if writes[..i].iter().any(|earlier| earlier.same_row(write)) {
                let (entity, key) = write.entity();
                return refuse(
                    format!("{entity} {key} twice"),
                    "each entity written at most once",
                );
            }
        }
        Ok(())
    }

    /// Whether two writes are of the same entity's row.
    fn same_row(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::CreateRequest(a) | Self::UpdateRequest { request: a, .. },
                Self::CreateRequest(b) | Self::UpdateRequest { request: b, .. },
            ) => a.id == b.id,
            (Self::UpdateQueue { queue: a, .. }, Self::UpdateQueue { queue: b, .. }) => {
                a.name == b.name
            }
            (Self::UpdateBuild { build: a, .. }, Self::UpdateBuild { build: b, .. }) => {
                a.id == b.id
            }
            (Self::CreateFact(a), Self::CreateFact(b)) => a.uri == b.uri && a.project == b.project,
            _ => false,
        }
    }
}

/// Several entities of one queue written as one: a stage step that changes
/// two rows (a slot and the request it admits, a terminal build and its
/// request's outcome, a fact and the bookmark it moves) commits them
/// together, in one round trip, instead of in two writes with a crash
/// window between them.
///
/// Contract (MUST):
/// - `write_all` writes every one of `writes` and the outbox, or nothing;
/// - each write succeeds or fails as the entity's own store method would
///   (a create whose key is taken is `AlreadyExists`, an update of a stale
///   version or a missing row is `VersionMismatch`, an entity of another
///   queue is `WrongQueue`); when several would fail, the error is one of
///   theirs, and nothing is written;
/// - `writes` holds at least one write, at most one create, and no entity
///   twice; another list is `Invalid`, naming what is wrong, and writes
///   nothing;
/// - concurrent joint and single writes of the same rows behave as if run
///   one after another (one winner per expected version).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait JointWriter: Send + Sync {
    async fn write_all(&self, writes: Vec<EntityWrite>, outbox: Outbox) -> Result<(), StoreError>;
}

/// The stores of one queue, as the stages use them.
#[derive(Clone)]
pub struct Stores {
    pub queue: QueueName,
    pub requests: Arc<dyn RequestStore>,
    pub request_uris: Arc<dyn RequestUriStore>,
    pub queues: Arc<dyn QueueStore>,
    pub builds: Arc<dyn BuildStore>,
    pub facts: Arc<dyn FactStore>,
    pub joint: Arc<dyn JointWriter>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Hands out the stores bound to a queue.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait StoreFactory: Send + Sync {
    fn for_queue(&self, queue: &QueueName) -> Stores;
}

/// What is stored about one commit of a queue, for one project: the two
/// things its status is made of (see [`ReadModel::commit_record`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitRecord {
    /// The fact of `(uri, project)`, when one is recorded.
    pub fact: Option<Fact>,
    /// The request the URI index names for `uri`, when it is stored.
    pub request: Option<Request>,
}

/// The query side, for the API and the reconcile loop. Kept apart so the
/// pipeline stays key/value shaped. Lists are bounded by `limit`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ReadModel: Send + Sync {
    /// Every queue row, by name.
    async fn queues(&self) -> Result<Vec<Queue>, StoreError>;
    /// Requests of `queue`, newest first, with number < `before` when given.
    async fn requests(
        &self,
        queue: &QueueName,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError>;
    /// Requests of `queue` not yet terminal, oldest first.
    async fn open_requests(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError>;
    /// Requests of `queue` that ended on a build verdict (succeeded or failed,
    /// not failed closed) and have no whole-repository fact.
    async fn requests_missing_fact(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError>;
    /// Every request of `queue` for any of `uris` (a URI has at most one).
    async fn requests_for_uris(
        &self,
        queue: &QueueName,
        uris: &[Uri],
    ) -> Result<Vec<Request>, StoreError>;
    /// Every fact (any project) of `queue` for any of `uris`.
    async fn facts_for_uris(
        &self,
        queue: &QueueName,
        uris: &[Uri],
    ) -> Result<Vec<Fact>, StoreError>;
    /// Every fact recorded by a request.
    async fn facts_of_request(
        &self,
        queue: &QueueName,
        request_id: &RequestId,
    ) -> Result<Vec<Fact>, StoreError>;
    /// A build by id, whatever its queue (runners mint ids unique per
    /// installation).
    async fn find_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError>;
    /// What a greenness read needs about one commit, in one call (one round
    /// trip on a database).
    ///
    /// Contract (MUST):
    /// - `fact` is what `FactStore::get(uri, project)` of `queue` returns:
    ///   the fact of exactly that project (the whole repository is
    ///   [`ProjectName::whole_repo`]), never another project's or queue's;
    /// - `request` is the request whose id the `(queue, uri)` URI index
    ///   holds, provided that request is stored and is for `uri`; it is
    ///   `None` when the URI is not indexed, when the indexed request is not
    ///   stored (yet), and when it is a request for another URI (ingest
    ///   never indexes one; a commit never shows another commit's request);
    ///   a stored request for `uri` that the index does not name is not
    ///   returned either;
    /// - both are read from the store at call time, never from a cache (a
    ///   request's state changes while it is pending);
    /// - an unknown queue or URI is an empty record, not an error.
    async fn commit_record(
        &self,
        queue: &QueueName,
        uri: &Uri,
        project: &ProjectName,
    ) -> Result<CommitRecord, StoreError>;
}

/// Operator configuration of queues.
///
/// Contract (MUST): `get` of an unknown queue is `Ok(None)`; `upsert`
/// replaces the whole configuration; `list` is ordered by name.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait QueueConfigStore: Send + Sync {
    async fn get(&self, queue: &QueueName) -> Result<Option<QueueConfig>, StoreError>;
    async fn list(&self) -> Result<Vec<QueueConfig>, StoreError>;
    async fn upsert(&self, config: &QueueConfig) -> Result<(), StoreError>;
}
