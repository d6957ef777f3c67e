//! The six queue-bound stores (`StoreFactory::for_queue`) and the queue
//! configuration store.
//!
//! Owns: per-queue rows, the conditional-write rule (a stored version must
//! equal the expected one; a missing row is a mismatch), queue binding
//! (`WrongQueue`), and committing each write's [`Outbox`] under the same lock.
//! Does not own: listing/query logic (see `read_model`) or any transition
//! rule (entities bump their own versions).

use super::{MemoryBackend, Shared, State};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use stovepipe_entity::{
    Build, BuildId, Fact, ProjectName, Queue, QueueConfig, QueueName, Request, RequestId,
    Timestamp, Uri,
};
use stovepipe_ports::{
    BuildStore, EntityWrite, FactStore, JointWriter, Outbox, QueueConfigStore, QueueStore,
    RequestStore, RequestUriStore, StoreError, StoreFactory, Stores,
};

/// Everything stored for one queue.
#[derive(Default)]
pub(crate) struct QueueData {
    pub(crate) row: Option<Queue>,
    /// By request number: ids of one queue differ only by number.
    pub(crate) requests: BTreeMap<u64, Request>,
    pub(crate) uris: HashMap<Uri, RequestId>,
    /// With an insertion sequence, to list oldest first on equal timestamps.
    pub(crate) builds: HashMap<BuildId, (u64, Build)>,
    pub(crate) facts: BTreeMap<(Uri, ProjectName), Fact>,
    pub(crate) counter: u64,
}

impl QueueData {
    /// Why `write` cannot be made now, if it cannot (the stores' rules: a
    /// create finds its key taken, an update its row missing or at another
    /// version).
    fn refusal(&self, write: &EntityWrite) -> Option<StoreError> {
        let stored = match write {
            EntityWrite::CreateRequest(r) => {
                return self
                    .requests
                    .contains_key(&r.id.number())
                    .then(|| refused(write));
            }
            EntityWrite::CreateFact(f) => {
                let key = (f.uri.clone(), f.project.clone());
                return self.facts.contains_key(&key).then(|| refused(write));
            }
            EntityWrite::UpdateRequest { request, .. } => {
                self.requests.get(&request.id.number()).map(|r| r.version)
            }
            EntityWrite::UpdateQueue { .. } => self.row.as_ref().map(|q| q.version),
            EntityWrite::UpdateBuild { build, .. } => {
                self.builds.get(&build.id).map(|(_, b)| b.version)
            }
        };
        (stored != write.expected_version()).then(|| refused(write))
    }

    /// Makes `write`, which [`refusal`](Self::refusal) allowed.
    fn apply(&mut self, write: EntityWrite) {
        match write {
            EntityWrite::CreateRequest(request) | EntityWrite::UpdateRequest { request, .. } => {
                self.requests.insert(request.id.number(), request);
            }
            EntityWrite::UpdateQueue { queue, .. } => self.row = Some(queue),
            EntityWrite::UpdateBuild { build, .. } => {
                if let Some((_, stored)) = self.builds.get_mut(&build.id) {
                    *stored = build;
                }
            }
            EntityWrite::CreateFact(fact) => {
                self.facts
                    .insert((fact.uri.clone(), fact.project.clone()), fact);
            }
        }
    }
}

impl State {
    pub(crate) fn queue_mut(&mut self, queue: &QueueName) -> &mut QueueData {
        self.queues.entry(queue.clone()).or_default()
    }

    /// Commits an outbox, once its write is applied: runs its commit hook,
    /// then appends the change-log rows in order, then publishes the
    /// messages (deduplicated as any publish), then its hook events when a
    /// hook is live.
    pub(crate) fn apply_outbox(&mut self, outbox: Outbox, now: Timestamp) {
        outbox.on_commit.run();
        self.append_changes(outbox.changes, now);
        let hook_events = if self.hooks.any_live() {
            outbox.hook_events
        } else {
            Vec::new()
        };
        for message in outbox.messages.into_iter().chain(hook_events) {
            self.publish(message, now);
        }
    }
}

/// A store handle bound to one queue.
#[derive(Clone)]
struct Bound {
    shared: Arc<Shared>,
    queue: QueueName,
}

impl Bound {
    fn check(&self, entity: &'static str, got: &str) -> Result<(), StoreError> {
        if got == self.queue.as_str() {
            Ok(())
        } else {
            Err(StoreError::WrongQueue {
                entity,
                bound: self.queue.to_string(),
                got: got.to_owned(),
            })
        }
    }

    fn check_request_id(&self, entity: &'static str, id: &RequestId) -> Result<(), StoreError> {
        self.check(entity, id.queue_str())
    }

    /// The queue binding of one entity write (`WrongQueue`).
    fn check_write(&self, write: &EntityWrite) -> Result<(), StoreError> {
        match write {
            EntityWrite::CreateRequest(r) | EntityWrite::UpdateRequest { request: r, .. } => {
                self.check(REQUEST, r.queue.as_str())?;
                self.check_request_id(REQUEST, &r.id)
            }
            EntityWrite::UpdateQueue { queue, .. } => self.check(QUEUE, queue.name.as_str()),
            EntityWrite::UpdateBuild { build, .. } => {
                self.check(BUILD, build.queue.as_str())?;
                self.check_request_id(BUILD, &build.request_id)
            }
            EntityWrite::CreateFact(fact) => {
                self.check(FACT, fact.queue.as_str())?;
                self.check_request_id(FACT, &fact.request_id)
            }
        }
    }

    /// Makes every one of `writes` and commits `outbox`, or refuses the
    /// first write that cannot be made and changes nothing.
    fn write_all(&self, writes: Vec<EntityWrite>, outbox: Outbox) -> Result<(), StoreError> {
        for write in &writes {
            self.check_write(write)?;
        }
        self.shared.write(|st, now| {
            let q = st.queue_mut(&self.queue);
            if let Some(refused) = writes.iter().find_map(|w| q.refusal(w)) {
                return Err(refused);
            }
            for write in writes {
                q.apply(write);
            }
            st.apply_outbox(outbox, now);
            Ok(())
        })
    }
}

/// Several entities' writes as one.
struct Joint(Bound);

#[async_trait]
impl JointWriter for Joint {
    async fn write_all(&self, writes: Vec<EntityWrite>, outbox: Outbox) -> Result<(), StoreError> {
        EntityWrite::check_list(&writes)?;
        self.0.write_all(writes, outbox)
    }
}

fn mismatch(entity: &'static str, key: &impl ToString, expected: u64) -> StoreError {
    StoreError::VersionMismatch {
        entity,
        key: key.to_string(),
        expected,
    }
}

/// The error of a refused joint write's `write`.
fn refused(write: &EntityWrite) -> StoreError {
    let (entity, key) = write.entity();
    match write.expected_version() {
        Some(expected) => mismatch(entity, &key, expected),
        None => exists(entity, &key),
    }
}

fn exists(entity: &'static str, key: &impl ToString) -> StoreError {
    StoreError::AlreadyExists {
        entity,
        key: key.to_string(),
    }
}

struct Requests(Bound);
struct RequestUris(Bound);
struct Queues(Bound);
struct Builds(Bound);
struct Facts(Bound);

const REQUEST: &str = "request";
const REQUEST_URI: &str = "request uri";
const QUEUE: &str = "queue";
const BUILD: &str = "build";
const FACT: &str = "fact";

#[async_trait]
impl RequestStore for Requests {
    async fn create(&self, request: &Request, outbox: Outbox) -> Result<(), StoreError> {
        let write = EntityWrite::CreateRequest(request.clone());
        self.0.write_all(vec![write], outbox)
    }

    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.0.check_request_id(REQUEST, id)?;
        Ok(self.0.shared.read(|st| {
            st.queues
                .get(&self.0.queue)
                .and_then(|q| q.requests.get(&id.number()).cloned())
        }))
    }

    async fn update(
        &self,
        request: &Request,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let write = EntityWrite::UpdateRequest {
            request: request.clone(),
            expected_version,
        };
        self.0.write_all(vec![write], outbox)
    }
}

#[async_trait]
impl RequestUriStore for RequestUris {
    async fn mint(&self, uri: &Uri) -> Result<(RequestId, bool), StoreError> {
        self.0.shared.write(|st, _| {
            let q = st.queue_mut(&self.0.queue);
            if let Some(id) = q.uris.get(uri) {
                return Ok((id.clone(), false));
            }
            q.counter += 1;
            let id = RequestId::new(&self.0.queue, q.counter)?;
            q.uris.insert(uri.clone(), id.clone());
            Ok((id, true))
        })
    }

    async fn create(&self, uri: &Uri, request_id: &RequestId) -> Result<(), StoreError> {
        self.0.check_request_id(REQUEST_URI, request_id)?;
        self.0.shared.write(|st, _| {
            let q = st.queue_mut(&self.0.queue);
            if q.uris.contains_key(uri) {
                return Err(exists(REQUEST_URI, uri));
            }
            q.uris.insert(uri.clone(), request_id.clone());
            Ok(())
        })
    }

    async fn get(&self, uri: &Uri) -> Result<Option<RequestId>, StoreError> {
        Ok(self.0.shared.read(|st| {
            st.queues
                .get(&self.0.queue)
                .and_then(|q| q.uris.get(uri).cloned())
        }))
    }
}

#[async_trait]
impl QueueStore for Queues {
    async fn create(&self, queue: &Queue) -> Result<(), StoreError> {
        self.0.check(QUEUE, queue.name.as_str())?;
        self.0.shared.write(|st, _| {
            let q = st.queue_mut(&self.0.queue);
            if q.row.is_some() {
                return Err(exists(QUEUE, &queue.name));
            }
            q.row = Some(queue.clone());
            Ok(())
        })
    }

    async fn get(&self) -> Result<Option<Queue>, StoreError> {
        Ok(self
            .0
            .shared
            .read(|st| st.queues.get(&self.0.queue).and_then(|q| q.row.clone())))
    }

    async fn update(
        &self,
        queue: &Queue,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let write = EntityWrite::UpdateQueue {
            queue: queue.clone(),
            expected_version,
        };
        self.0.write_all(vec![write], outbox)
    }
}

impl Builds {
    fn check(&self, build: &Build) -> Result<(), StoreError> {
        self.0.check(BUILD, build.queue.as_str())?;
        self.0.check_request_id(BUILD, &build.request_id)
    }
}

#[async_trait]
impl BuildStore for Builds {
    async fn create(&self, build: &Build, outbox: Outbox) -> Result<(), StoreError> {
        self.check(build)?;
        self.0.shared.write(|st, now| {
            let q = st.queue_mut(&self.0.queue);
            if q.builds.contains_key(&build.id) {
                return Err(exists(BUILD, &build.id));
            }
            let seq = q.builds.len() as u64;
            q.builds.insert(build.id.clone(), (seq, build.clone()));
            st.apply_outbox(outbox, now);
            Ok(())
        })
    }

    async fn get(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        Ok(self.0.shared.read(|st| {
            st.queues
                .get(&self.0.queue)
                .and_then(|q| q.builds.get(id).map(|(_, b)| b.clone()))
        }))
    }

    async fn update(
        &self,
        build: &Build,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let write = EntityWrite::UpdateBuild {
            build: build.clone(),
            expected_version,
        };
        self.0.write_all(vec![write], outbox)
    }

    async fn list_for_request(&self, request_id: &RequestId) -> Result<Vec<Build>, StoreError> {
        self.0.check_request_id(BUILD, request_id)?;
        Ok(self.0.shared.read(|st| {
            let Some(q) = st.queues.get(&self.0.queue) else {
                return Vec::new();
            };
            let mut found: Vec<_> = q
                .builds
                .values()
                .filter(|(_, b)| &b.request_id == request_id)
                .collect();
            found.sort_by_key(|(seq, b)| (b.created_at, *seq));
            found.into_iter().map(|(_, b)| b.clone()).collect()
        }))
    }
}

#[async_trait]
impl FactStore for Facts {
    async fn create(&self, fact: &Fact, outbox: Outbox) -> Result<(), StoreError> {
        self.0
            .write_all(vec![EntityWrite::CreateFact(fact.clone())], outbox)
    }

    async fn get(&self, uri: &Uri, project: &ProjectName) -> Result<Option<Fact>, StoreError> {
        Ok(self.0.shared.read(|st| {
            st.queues
                .get(&self.0.queue)
                .and_then(|q| q.facts.get(&(uri.clone(), project.clone())).cloned())
        }))
    }
}

impl StoreFactory for MemoryBackend {
    fn for_queue(&self, queue: &QueueName) -> Stores {
        let bound = Bound {
            shared: self.shared.clone(),
            queue: queue.clone(),
        };
        Stores {
            queue: queue.clone(),
            requests: Arc::new(Requests(bound.clone())),
            request_uris: Arc::new(RequestUris(bound.clone())),
            queues: Arc::new(Queues(bound.clone())),
            builds: Arc::new(Builds(bound.clone())),
            facts: Arc::new(Facts(bound.clone())),
            joint: Arc::new(Joint(bound)),
        }
    }
}

#[async_trait]
impl QueueConfigStore for MemoryBackend {
    async fn get(&self, queue: &QueueName) -> Result<Option<QueueConfig>, StoreError> {
        Ok(self.shared.read(|st| st.configs.get(queue).cloned()))
    }

    async fn list(&self) -> Result<Vec<QueueConfig>, StoreError> {
        Ok(self
            .shared
            .read(|st| st.configs.values().cloned().collect()))
    }

    async fn upsert(&self, config: &QueueConfig) -> Result<(), StoreError> {
        self.shared.write(|st, _| {
            st.configs.insert(config.name.clone(), config.clone());
            Ok(())
        })
    }
}
