//! The shared in-memory state behind every storage-like port.
//!
//! Owns: one [`State`] under one mutex, so a store write, its change-log rows
//! and its outbox messages commit together or not at all (the memory form
//! of a database transaction); fault injection for crash tests; wake-ups of
//! message-queue waiters. Does not own: source control, build runners or hook
//! delivery (see the scripted fakes), nor any pipeline rule.
//!
//! The mutex is a `std::sync::Mutex` and is never held across an `.await`.

mod feed;
mod hooks;
mod mq;
mod read_model;
mod stores;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use stovepipe_entity::{ChangeEvent, QueueConfig, QueueName, Request, Timestamp};
use stovepipe_ports::{Clock, HookError, MqError, StoreError, Topic};
use tokio::sync::{Notify, broadcast};

pub(crate) use hooks::HookState;
pub(crate) use mq::MqState;
pub(crate) use stores::QueueData;

/// Live buffer of each change-feed subscriber when none is given.
pub const DEFAULT_FEED_BUFFER: usize = 1024;

/// One in-memory installation: stores of every queue, read model, queue
/// configuration, message queue, change feed and hook registry, all over
/// one shared state.
///
/// Use it as `Arc<MemoryBackend>` and coerce to the port you need
/// (`backend.clone() as Arc<dyn MessageQueue>`); the trait methods share
/// names (`get`, `list`…), so call them through the trait object.
///
/// # Fault injection
///
/// Every *mutating call* passes a gate: store `create`/`update` (all six
/// stores), `Counter::next`, `QueueConfigStore::upsert`, `publish`, `ack`,
/// `hold`, `retry`, `reject`, `wake`, `requeue_dead_letter`,
/// `purge_dead_letter`, `ChangeFeed::append`, and the hook registry's
/// `upsert_hook`, `create_release`, `set_live`, `record_run`. Reads,
/// `receive` and `renew` are not gated: they are the consumer runtime's
/// housekeeping and their number depends on scheduling, which would make
/// crash points unrepeatable.
///
/// [`writes_performed`](Self::writes_performed) counts the calls that passed
/// the gate (whatever their logical result: a duplicate `create` counts).
/// Calls refused before touching state (`WrongQueue`, an invalid release
/// spec) never reach the gate: they are neither counted nor failed.
/// After [`fail_writes_after(n)`](Self::fail_writes_after), the next `n`
/// mutating calls pass and the `(n+1)`-th returns `Unavailable`
/// (`StoreError`, `MqError`, or `HookError::Store`) having written nothing;
/// later calls pass again. A crash test runs a scenario once to read the
/// count `W`, then replays it on fresh backends with `fail_writes_after(k)`
/// for every `k` in `0..W`.
pub struct MemoryBackend {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

pub(crate) struct State {
    faults: Faults,
    pub(crate) queues: BTreeMap<QueueName, QueueData>,
    pub(crate) configs: BTreeMap<QueueName, QueueConfig>,
    pub(crate) mq: MqState,
    pub(crate) log: Vec<ChangeEvent>,
    /// Live tail of `log`; sent to under the lock so subscribers see the
    /// commit order.
    pub(crate) feed_tx: broadcast::Sender<Arc<ChangeEvent>>,
    pub(crate) hooks: HookState,
    /// Waiters to notify once the lock is released.
    pub(crate) to_wake: Vec<Arc<Notify>>,
    pub(crate) wakers: HashMap<Topic, Arc<Notify>>,
}

#[derive(Default)]
struct Faults {
    /// Mutating calls still allowed before the injected failure.
    fail_after: Option<usize>,
    performed: u64,
}

/// The injected failure of one mutating call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Injected;

impl From<Injected> for StoreError {
    fn from(_: Injected) -> Self {
        StoreError::Unavailable("injected fault (MemoryBackend::fail_writes_after)".into())
    }
}

impl From<Injected> for MqError {
    fn from(_: Injected) -> Self {
        MqError::Unavailable("injected fault (MemoryBackend::fail_writes_after)".into())
    }
}

impl From<Injected> for HookError {
    fn from(e: Injected) -> Self {
        HookError::Store(e.into())
    }
}

impl State {
    fn gate(&mut self) -> Result<(), Injected> {
        match self.faults.fail_after {
            Some(0) => {
                self.faults.fail_after = None;
                Err(Injected)
            }
            Some(n) => {
                self.faults.fail_after = Some(n - 1);
                self.faults.performed += 1;
                Ok(())
            }
            None => {
                self.faults.performed += 1;
                Ok(())
            }
        }
    }

    pub(crate) fn waker(&mut self, topic: &Topic) -> Arc<Notify> {
        self.wakers.entry(topic.clone()).or_default().clone()
    }

    /// Schedules a wake-up of `topic`'s waiters after the lock is released.
    pub(crate) fn wake_topic(&mut self, topic: &Topic) {
        let n = self.waker(topic);
        self.to_wake.push(n);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a bug in this
        // crate; the state is still structurally valid, so keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a read under the lock.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock())
    }

    /// Runs a mutation that is not gated (receive, renew).
    pub(crate) fn housekeeping<T>(&self, f: impl FnOnce(&mut State, Timestamp) -> T) -> T {
        let now = self.clock.now();
        let (out, wakes) = {
            let mut st = self.lock();
            let out = f(&mut st, now);
            (out, std::mem::take(&mut st.to_wake))
        };
        notify_all(&wakes);
        out
    }

    /// Runs one gated mutating call. `f` MUST validate before it mutates, so
    /// an `Err` leaves the state untouched.
    pub(crate) fn write<T, E: From<Injected>>(
        &self,
        f: impl FnOnce(&mut State, Timestamp) -> Result<T, E>,
    ) -> Result<T, E> {
        let now = self.clock.now();
        let (out, wakes) = {
            let mut st = self.lock();
            st.gate()?;
            let out = f(&mut st, now);
            (out, std::mem::take(&mut st.to_wake))
        };
        notify_all(&wakes);
        out
    }
}

fn notify_all(wakes: &[Arc<Notify>]) {
    for n in wakes {
        n.notify_waiters();
        // Also leave a permit, so a consumer that checked the queue just
        // before this publish and is about to wait does not sleep through it
        // (a spurious wake-up is allowed, a lost one is not).
        n.notify_one();
    }
}

impl MemoryBackend {
    /// A backend whose change-feed subscribers buffer [`DEFAULT_FEED_BUFFER`]
    /// events.
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Self::with_feed_buffer(clock, DEFAULT_FEED_BUFFER)
    }

    /// A backend whose change-feed subscribers buffer `buffer` live events
    /// (at least 1) before they get `FeedError::Lagged`. The buffer may be
    /// rounded up to a power of two.
    pub fn with_feed_buffer(clock: Arc<dyn Clock>, buffer: usize) -> Arc<Self> {
        let (feed_tx, _) = broadcast::channel(buffer.max(1));
        let state = State {
            faults: Faults::default(),
            queues: BTreeMap::new(),
            configs: BTreeMap::new(),
            mq: MqState::default(),
            log: Vec::new(),
            feed_tx,
            hooks: HookState::default(),
            to_wake: Vec::new(),
            wakers: HashMap::new(),
        };
        Arc::new(Self {
            shared: Arc::new(Shared {
                clock,
                state: Mutex::new(state),
            }),
        })
    }

    /// The clock the backend stamps rows and measures holds with.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.shared.clock.clone()
    }

    /// Makes the `(n+1)`-th mutating call from now fail with `Unavailable`
    /// and write nothing (see the type docs); replaces an earlier plan.
    pub fn fail_writes_after(&self, n: usize) {
        self.shared.lock().faults.fail_after = Some(n);
    }

    /// Cancels a pending injected failure.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.fail_after = None;
    }

    /// Mutating calls that passed the fault gate so far.
    pub fn writes_performed(&self) -> u64 {
        self.shared.lock().faults.performed
    }

    /// Every request of `queue`, by number.
    pub fn all_requests(&self, queue: &QueueName) -> Vec<Request> {
        self.shared.read(|st| {
            st.queues
                .get(queue)
                .map(|q| q.requests.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// Messages of `topic` not yet acked or rejected (leased and held ones
    /// included).
    pub fn pending_messages(&self, topic: &Topic) -> usize {
        self.shared.read(|st| st.mq.pending(topic))
    }

    /// The whole change log, oldest first.
    pub fn changes(&self) -> Vec<ChangeEvent> {
        self.shared.read(|st| st.log.clone())
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}
