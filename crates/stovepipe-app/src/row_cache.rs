//! The rows the pipeline just wrote or read, kept for the next stage.
//!
//! Each hop carries ids and its stage reloads the entities it names: the
//! request that the previous stage wrote a moment ago, the queue row that
//! ingest or `record` just moved. Reading them back from the database was
//! about a third of a validated request's statements (4 request reads, 4
//! queue-row reads, a build read). [`CachedStores`] wraps a
//! [`StoreFactory`] and keeps each request, queue row and build as this
//! process last wrote or read it, for at most [`ROW_STALENESS`] after that
//! write or read began (the rules of [`crate::cache::FreshCache`], ordered
//! by the row's `version`, which only grows).
//!
//! Why a cached row cannot make a stage decide wrongly:
//! - Every write is a compare-and-swap on the row's version. A stage that
//!   starts from a stale row loses its write with `VersionMismatch`, the
//!   entry is dropped, and the stage reloads from the store, exactly as
//!   when another writer moved the row between its read and its write.
//! - What a stage decides without writing the row it read only ever
//!   depends on what cannot go back: a terminal request stays terminal, the
//!   latest pointer and the bookmark only move forward, a recorded outcome
//!   is first-writer-wins. A stale row can only say "not yet": a stage
//!   that finds its row behind what its hop proves, or a gate closed, asks
//!   `get_fresh` (the store, never the copy) before it acts on that.
//! - Within one process every write goes through the cache, so a single
//!   replica always reads exactly what is stored. Another replica's write
//!   is seen within the bound, or at the first conflicting write.
//!
//! While a write is in flight its rows are not served as they were: its
//! hop can reach the next stage before the write returns here, and that
//! stage must not be served a row as it was before. A read that meets the
//! write waits for it (at most [`crate::cache::WRITE_WAIT`]) and is served
//! the rows it kept; after a failed write, or past the wait, it reads the
//! store. (Reading the store at once, as it did until 2026-12-07, found the
//! row as it was before the write, still uncommitted, and the reader's own
//! compare-and-swap then lost to it: the benchmark's next ingest of a queue
//! meets `record`'s write of that queue's row.) One read passes such a
//! write instead: `QueueStore::get_passing_writes`, ingest's read of the
//! latest pointer, which only moves forward, is served the row as kept
//! before the write. The write hands the store a
//! [`CommitHook`] that keeps its rows the moment it commits, which is
//! before the store wakes this process's consumers of its hop; so the next
//! stage, woken by that hop, finds the rows kept, not marked.
//!
//! A failed write of any kind drops the entry (its outcome is unknown), a
//! read that finds nothing drops it, and facts, builds lists and the read
//! side are never served from here: the server's query service reads
//! requests and queue rows from the store on every call.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use stovepipe_entity::{Build, BuildId, Queue, QueueName, Request, RequestId};
use stovepipe_ports::{
    BuildStore, Clock, CommitHook, EntityWrite, JointWriter, Outbox, QueueStore, RequestStore,
    StoreError, StoreFactory, Stores,
};

use crate::cache::FreshCache;
use crate::metrics::RowCacheReads;

/// How long a row may be served after the write or read that produced it
/// began. One second: the next stage of a request runs milliseconds after
/// the previous one wrote it, and a replica that did not write the row
/// sees another's write within the bound or at its first conflict.
pub const ROW_STALENESS: Duration = Duration::from_secs(1);

/// A [`StoreFactory`] whose request, queue and build stores keep the rows
/// they wrote or read for [`ROW_STALENESS`] (see the module). Everything
/// else (the URI index and its numbering, facts, build lists) is the
/// inner store's.
pub struct CachedStores {
    inner: Arc<dyn StoreFactory>,
    rows: Arc<Rows>,
}

impl CachedStores {
    pub fn new(inner: Arc<dyn StoreFactory>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            rows: Arc::new(Rows {
                clock,
                requests: FreshCache::versioned(ROW_STALENESS, |r: &Request| r.version),
                queues: FreshCache::versioned(ROW_STALENESS, |q: &Queue| q.version),
                builds: FreshCache::versioned(ROW_STALENESS, |b: &Build| b.version),
                request_reads: RowCacheReads::new("request"),
                queue_reads: RowCacheReads::new("queue"),
                build_reads: RowCacheReads::new("build"),
            }),
        }
    }
}

impl std::fmt::Debug for CachedStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStores").finish_non_exhaustive()
    }
}

impl StoreFactory for CachedStores {
    fn for_queue(&self, queue: &QueueName) -> Stores {
        let inner = self.inner.for_queue(queue);
        Stores {
            requests: Arc::new(self.bind(queue, inner.requests.clone())),
            queues: Arc::new(self.bind(queue, inner.queues.clone())),
            builds: Arc::new(self.bind(queue, inner.builds.clone())),
            joint: Arc::new(self.bind(queue, inner.joint.clone())),
            ..inner
        }
    }
}

impl CachedStores {
    fn bind<S: ?Sized>(&self, queue: &QueueName, store: Arc<S>) -> Bound<S> {
        Bound {
            queue: queue.clone(),
            store,
            rows: self.rows.clone(),
        }
    }
}

/// The kept rows of every queue. Keys lead with the queue the store was
/// bound to, so a store of another queue never finds them (and answers
/// `WrongQueue` from the inner store, as the contract says).
struct Rows {
    clock: Arc<dyn Clock>,
    requests: FreshCache<(QueueName, RequestId), Request>,
    queues: FreshCache<QueueName, Queue>,
    builds: FreshCache<(QueueName, BuildId), Build>,
    request_reads: RowCacheReads,
    queue_reads: RowCacheReads,
    build_reads: RowCacheReads,
}

impl Rows {
    /// A row at most the bound old: kept, or read from the store and kept
    /// (counted in `reads` by where it came from).
    async fn read<K: Eq + std::hash::Hash + Clone, V: Clone>(
        &self,
        reads: &RowCacheReads,
        cache: &FreshCache<K, V>,
        key: &K,
        on_write: OnWrite,
        fetch: impl Future<Output = Result<Option<V>, StoreError>>,
    ) -> Result<Option<V>, StoreError> {
        let now = self.clock.now();
        let (found, served) = match on_write {
            OnWrite::Wait => cache.get_served(key, now, fetch).await?,
            OnWrite::Pass => cache.get_served_passing_writes(key, now, fetch).await?,
        };
        reads.read(served);
        Ok(found.map(|row| (*row).clone()))
    }

    /// The row as stored now (a kept copy is not used), kept for the next
    /// reads.
    async fn read_fresh<K: Eq + std::hash::Hash + Clone, V: Clone>(
        &self,
        cache: &FreshCache<K, V>,
        key: &K,
        fetch: impl Future<Output = Result<Option<V>, StoreError>>,
    ) -> Result<Option<V>, StoreError> {
        let found = cache.refresh(key, self.clock.now(), fetch).await?;
        Ok(found.map(|row| (*row).clone()))
    }

    /// Runs `write` of the rows `pending` (one create or update, or a
    /// joint write's), handing it `outbox` with a commit hook that keeps
    /// them; kept when it committed, dropped otherwise (a conflict means
    /// the row moved; any other error leaves the outcome unknown). While it
    /// runs, until it commits, they are read from the store (module docs).
    /// The caller's own commit hook, if any, runs after this one.
    async fn write<W>(
        self: &Arc<Self>,
        pending: Pending,
        mut outbox: Outbox,
        write: impl FnOnce(Outbox) -> W,
    ) -> Result<(), StoreError>
    where
        W: Future<Output = Result<(), StoreError>>,
    {
        let written = Written::begin(self, pending);
        let theirs = std::mem::take(&mut outbox.on_commit);
        let hook = {
            let written = written.clone();
            CommitHook::new(move || {
                written.end(true);
                theirs.run();
            })
        };
        let result = write(outbox.on_commit(hook.clone())).await;
        // Both are no-ops when the store ran the hook: the write committed,
        // and what the call returns after that cannot unmake it.
        match result {
            Ok(()) => hook.run(),
            Err(_) => written.end(false),
        }
        result
    }
}

/// What a read of a kept row does when a write of that row is in flight.
#[derive(Clone, Copy)]
enum OnWrite {
    /// Waits for the write and is served the row it kept (module docs).
    Wait,
    /// Is served the row as kept before the write
    /// (`QueueStore::get_passing_writes`).
    Pass,
}

/// The rows one write stores, by cache.
#[derive(Default)]
struct Pending {
    requests: Vec<((QueueName, RequestId), Request)>,
    queues: Vec<(QueueName, Queue)>,
    builds: Vec<((QueueName, BuildId), Build)>,
}

impl Pending {
    fn request(queue: &QueueName, row: &Request) -> Self {
        let mut pending = Self::default();
        pending.add_request(queue, row);
        pending
    }

    fn queue(queue: &QueueName, row: &Queue) -> Self {
        let mut pending = Self::default();
        pending.add_queue(queue, row);
        pending
    }

    fn build(queue: &QueueName, row: &Build) -> Self {
        let mut pending = Self::default();
        pending.add_build(queue, row);
        pending
    }

    fn add_request(&mut self, queue: &QueueName, row: &Request) {
        let key = (queue.clone(), row.id.clone());
        self.requests.push((key, row.clone()));
    }

    fn add_queue(&mut self, queue: &QueueName, row: &Queue) {
        self.queues.push((queue.clone(), row.clone()));
    }

    fn add_build(&mut self, queue: &QueueName, row: &Build) {
        let key = (queue.clone(), row.id.clone());
        self.builds.push((key, row.clone()));
    }
}

/// A write's rows, marked in flight in their caches from before the write
/// is sent until it ends: by its commit hook, by its call's return, or, if
/// neither came (the call was dropped), when the last handle goes.
struct Written {
    rows: Arc<Rows>,
    /// Clock time when the write began: the rows are at least this new.
    began: stovepipe_entity::Timestamp,
    /// Taken when the write ends.
    pending: Mutex<Option<Pending>>,
}

impl Written {
    fn begin(rows: &Arc<Rows>, pending: Pending) -> Arc<Self> {
        for (key, _) in &pending.requests {
            rows.requests.begin_write(key.clone());
        }
        for (key, _) in &pending.queues {
            rows.queues.begin_write(key.clone());
        }
        for (key, _) in &pending.builds {
            rows.builds.begin_write(key.clone());
        }
        Arc::new(Self {
            rows: rows.clone(),
            began: rows.clock.now(),
            pending: Mutex::new(Some(pending)),
        })
    }

    /// Ends the write's marks, keeping its rows when it `committed`; only
    /// the first call does anything.
    fn end(&self, committed: bool) {
        let taken = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(pending) = taken else { return };
        for (key, row) in pending.requests {
            self.rows
                .requests
                .end_write(key, committed.then_some((row, self.began)));
        }
        for (key, row) in pending.queues {
            self.rows
                .queues
                .end_write(key, committed.then_some((row, self.began)));
        }
        for (key, row) in pending.builds {
            self.rows
                .builds
                .end_write(key, committed.then_some((row, self.began)));
        }
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// A joint write's request, queue row and build, kept as a write of each
/// alone would keep them: all of them when it committed, none otherwise.
#[async_trait]
impl JointWriter for Bound<dyn JointWriter> {
    async fn write_all(&self, writes: Vec<EntityWrite>, outbox: Outbox) -> Result<(), StoreError> {
        let mut pending = Pending::default();
        for write in &writes {
            match write {
                EntityWrite::CreateRequest(r) | EntityWrite::UpdateRequest { request: r, .. } => {
                    pending.add_request(&self.queue, r);
                }
                EntityWrite::UpdateQueue { queue, .. } => pending.add_queue(&self.queue, queue),
                EntityWrite::UpdateBuild { build, .. } => pending.add_build(&self.queue, build),
                EntityWrite::CreateFact(_) => {}
            }
        }
        self.rows
            .write(pending, outbox, |outbox| {
                self.store.write_all(writes, outbox)
            })
            .await
    }
}

/// One inner store of one queue, in front of the shared kept rows.
struct Bound<S: ?Sized> {
    queue: QueueName,
    store: Arc<S>,
    rows: Arc<Rows>,
}

#[async_trait]
impl RequestStore for Bound<dyn RequestStore> {
    async fn create(&self, request: &Request, outbox: Outbox) -> Result<(), StoreError> {
        let pending = Pending::request(&self.queue, request);
        self.rows
            .write(pending, outbox, |outbox| self.store.create(request, outbox))
            .await
    }

    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        let key = (self.queue.clone(), id.clone());
        self.rows
            .read(
                &self.rows.request_reads,
                &self.rows.requests,
                &key,
                OnWrite::Wait,
                self.store.get(id),
            )
            .await
    }

    async fn get_fresh(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        let key = (self.queue.clone(), id.clone());
        self.rows
            .read_fresh(&self.rows.requests, &key, self.store.get(id))
            .await
    }

    async fn update(
        &self,
        request: &Request,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let pending = Pending::request(&self.queue, request);
        self.rows
            .write(pending, outbox, |outbox| {
                self.store.update(request, expected_version, outbox)
            })
            .await
    }
}

impl Bound<dyn QueueStore> {
    async fn read_queue(&self, on_write: OnWrite) -> Result<Option<Queue>, StoreError> {
        self.rows
            .read(
                &self.rows.queue_reads,
                &self.rows.queues,
                &self.queue,
                on_write,
                self.store.get(),
            )
            .await
    }
}

#[async_trait]
impl QueueStore for Bound<dyn QueueStore> {
    async fn create(&self, queue: &Queue) -> Result<(), StoreError> {
        let pending = Pending::queue(&self.queue, queue);
        // No outbox: the row is kept when the call returns.
        self.rows
            .write(pending, Outbox::none(), |_| self.store.create(queue))
            .await
    }

    async fn get(&self) -> Result<Option<Queue>, StoreError> {
        self.read_queue(OnWrite::Wait).await
    }

    async fn get_passing_writes(&self) -> Result<Option<Queue>, StoreError> {
        self.read_queue(OnWrite::Pass).await
    }

    async fn get_fresh(&self) -> Result<Option<Queue>, StoreError> {
        self.rows
            .read_fresh(&self.rows.queues, &self.queue, self.store.get())
            .await
    }

    async fn update(
        &self,
        queue: &Queue,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let pending = Pending::queue(&self.queue, queue);
        self.rows
            .write(pending, outbox, |outbox| {
                self.store.update(queue, expected_version, outbox)
            })
            .await
    }
}

#[async_trait]
impl BuildStore for Bound<dyn BuildStore> {
    async fn create(&self, build: &Build, outbox: Outbox) -> Result<(), StoreError> {
        let pending = Pending::build(&self.queue, build);
        self.rows
            .write(pending, outbox, |outbox| self.store.create(build, outbox))
            .await
    }

    async fn get(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        let key = (self.queue.clone(), id.clone());
        self.rows
            .read(
                &self.rows.build_reads,
                &self.rows.builds,
                &key,
                OnWrite::Wait,
                self.store.get(id),
            )
            .await
    }

    async fn get_fresh(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        let key = (self.queue.clone(), id.clone());
        self.rows
            .read_fresh(&self.rows.builds, &key, self.store.get(id))
            .await
    }

    async fn update(
        &self,
        build: &Build,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let pending = Pending::build(&self.queue, build);
        self.rows
            .write(pending, outbox, |outbox| {
                self.store.update(build, expected_version, outbox)
            })
            .await
    }

    async fn list_for_request(&self, request_id: &RequestId) -> Result<Vec<Build>, StoreError> {
        self.store.list_for_request(request_id).await
    }
}
