//! The ports a stage needs, bundled. Built once by whoever wires the
//! application (the server, a test, an embedder).

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use stovepipe_entity::{NewChange, Queue, QueueConfig, QueueName, Request, RequestId, Timestamp};
use stovepipe_ports::{
    BuildRunner, BuildRunnerFactory, ChangeFeed, Clock, HookRegistry, HookSink, MessageQueue,
    Outbox, QueueConfigStore, ReadModel, SourceControl, SourceControlFactory, StoreError,
    StoreFactory, Stores, Topic,
};

use crate::error::StageError;
use crate::events::OutboxExt as _;

/// How many times a compare-and-swap loop reloads after a version conflict
/// before giving the delivery back as retryable.
const CAS_ATTEMPTS: usize = 16;

#[derive(Clone)]
pub struct Deps {
    pub stores: Arc<dyn StoreFactory>,
    pub configs: Arc<dyn QueueConfigStore>,
    pub read: Arc<dyn ReadModel>,
    pub scm: Arc<dyn SourceControlFactory>,
    pub runners: Arc<dyn BuildRunnerFactory>,
    pub mq: Arc<dyn MessageQueue>,
    pub feed: Arc<dyn ChangeFeed>,
    pub clock: Arc<dyn Clock>,
    /// Hooks, their releases and runs.
    pub hooks: Arc<dyn HookRegistry>,
    /// Where hook deliveries go (the webhook adapter in the server).
    pub sink: Arc<dyn HookSink>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").finish_non_exhaustive()
    }
}

impl Deps {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn stores(&self, queue: &QueueName) -> Stores {
        self.stores.for_queue(queue)
    }

    /// The queue's configuration. A queue with work in flight but no
    /// configuration cannot be served: permanent (its requests fail closed).
    pub async fn config(&self, queue: &QueueName) -> Result<QueueConfig, StageError> {
        self.configs
            .get(queue)
            .await?
            .ok_or_else(|| StageError::permanent(format!("queue {queue} is not configured")))
    }

    pub async fn source_control(
        &self,
        config: &QueueConfig,
    ) -> Result<Arc<dyn SourceControl>, StageError> {
        Ok(self.scm.for_queue(config).await?)
    }

    pub async fn runner(&self, config: &QueueConfig) -> Result<Arc<dyn BuildRunner>, StageError> {
        Ok(self.runners.for_queue(config).await?)
    }
}

/// Loads the request a hop names. A hop is published by the write that
/// moved its request on, so a request that reads as `behind` what the hop
/// proves is a kept copy from before that write (another replica's, not yet
/// seen here: see `row_cache`) and is read again from the store.
pub async fn load_request(
    stores: &Stores,
    id: &RequestId,
    behind: impl Fn(&Request) -> bool,
) -> Result<Request, StageError> {
    let request = match stores.requests.get(id).await? {
        Some(r) if behind(&r) => stores.requests.get_fresh(id).await?,
        found => found,
    };
    request.ok_or_else(|| StageError::permanent(format!("request {id} does not exist")))
}

/// Loads the queue row; a missing row means ingest has not run for it, which
/// a hop can only observe through an inconsistency: retryable.
pub async fn load_queue(stores: &Stores) -> Result<Queue, StageError> {
    stores.queues.get().await?.ok_or_else(|| {
        StageError::retryable(format!("queue row {} does not exist yet", stores.queue))
    })
}

/// Compare-and-swap loop on the queue row: `change` mutates a freshly loaded
/// queue and returns its result plus the outbox when a write is needed
/// (`None`: nothing changed, no write). Conflicts reload and re-run `change`.
pub async fn update_queue<R>(
    stores: &Stores,
    change: impl FnMut(&mut Queue) -> Result<(R, Option<Outbox>), StageError>,
) -> Result<(R, Queue), StageError> {
    update_queue_from(stores, None, change).await
}

/// [`update_queue`] starting from `known`, a queue row the caller read or
/// wrote a moment ago, instead of loading it first: the write is
/// conditional on `known.version`, so a stale snapshot only costs the
/// reload a conflict causes anyway.
pub async fn update_queue_from<R>(
    stores: &Stores,
    known: Option<Queue>,
    mut change: impl FnMut(&mut Queue) -> Result<(R, Option<Outbox>), StageError>,
) -> Result<(R, Queue), StageError> {
    let mut attempts = QueueAttempts::with_known(stores, known);
    loop {
        let (mut queue, expected) = attempts.next().await?;
        let (result, outbox) = change(&mut queue)?;
        let Some(outbox) = outbox else {
            return Ok((result, queue));
        };
        if attempts.write(&queue, expected, outbox).await? {
            return Ok((result, queue));
        }
    }
}

/// The attempts of a compare-and-swap loop on the queue row, for a loop
/// that waits on something outside the store between its read and its
/// write ([`update_queue_from`] is the loop for a change that does not):
/// each attempt reads the row, and its write is conditional on the
/// version read; a lost write reloads, up to [`CAS_ATTEMPTS`].
pub(crate) struct QueueAttempts<'a> {
    stores: &'a Stores,
    known: Option<Queue>,
    made: usize,
}

impl<'a> QueueAttempts<'a> {
    /// Attempts whose first reads the row.
    pub(crate) fn new(stores: &'a Stores) -> Self {
        Self::with_known(stores, None)
    }

    /// Attempts whose first uses `known`, when given, instead of reading.
    pub(crate) fn with_known(stores: &'a Stores, known: Option<Queue>) -> Self {
        Self {
            stores,
            known,
            made: 0,
        }
    }

    /// The row for the next attempt and the version its write expects;
    /// retryable once every attempt lost to a concurrent writer.
    pub(crate) async fn next(&mut self) -> Result<(Queue, u64), StageError> {
        if self.made == CAS_ATTEMPTS {
            return Err(StageError::retryable(format!(
                "queue {}: still conflicting after {CAS_ATTEMPTS} attempts",
                self.stores.queue
            )));
        }
        self.made += 1;
        let queue = match self.known.take() {
            Some(queue) => queue,
            None => load_queue(self.stores).await?,
        };
        let expected = queue.version;
        Ok((queue, expected))
    }

    /// Writes `queue` if the row is still at `expected`; false when a
    /// concurrent writer got there first (the next attempt reloads).
    pub(crate) async fn write(
        &self,
        queue: &Queue,
        expected: u64,
        outbox: Outbox,
    ) -> Result<bool, StageError> {
        match self.stores.queues.update(queue, expected, outbox).await {
            Ok(()) => Ok(true),
            Err(StoreError::VersionMismatch { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Releases `id`'s build slot; absent means already released. `known` is a
/// recent snapshot of the queue row, if the caller has one. `changes` are
/// appended with the release, or on their own when there was nothing to
/// release. Returns the queue row as written (or as found) and whether it
/// released.
async fn free_slot(
    deps: &Deps,
    stores: &Stores,
    id: &RequestId,
    known: Option<Queue>,
    changes: Vec<NewChange>,
) -> Result<(bool, Queue), StageError> {
    let now = deps.now();
    let written = update_queue_from(stores, known, |q| {
        let released = q.release_slot(id, now);
        let outbox = released.then(|| {
            changes
                .iter()
                .fold(Outbox::none(), |o, c| o.emit(c.clone(), now))
        });
        Ok((released, outbox))
    })
    .await;
    let (released, queue) = match written {
        Ok(written) => written,
        Err(e) => return Err(rescue_changes(deps, changes, e).await),
    };
    if !released && !changes.is_empty() {
        deps.feed.append(changes).await?;
    }
    Ok((released, queue))
}

/// Appends `changes` on their own because the write they were to ride in
/// failed with `error`, which is returned. They report what already
/// happened outside the store (a moved promotion ref), which the retry will
/// not do again, so dropping them would lose the event; if the failed
/// write committed after all, the event is told twice, never not at all.
/// Best effort: an append that fails too is logged.
pub async fn rescue_changes(deps: &Deps, changes: Vec<NewChange>, error: StageError) -> StageError {
    if !changes.is_empty()
        && let Err(e) = deps.feed.append(changes).await
    {
        tracing::warn!(error = %e, "appending the events of a failed write failed too; they are lost");
    }
    error
}

/// Releases `id`'s build slot from inside the queue's own `process`
/// delivery (which is the partition's head, so nothing there is held).
pub async fn release_slot_in_process(
    deps: &Deps,
    stores: &Stores,
    id: &RequestId,
    known: Option<Queue>,
) -> Result<(), StageError> {
    free_slot(deps, stores, id, known, Vec::new())
        .await
        .map(|_| ())
}

/// Releases `id`'s build slot (see [`free_slot`]; `changes` ride with the
/// release) and opens the gate at once (see [`wake_gate`]).
pub async fn release_slot(
    deps: &Deps,
    stores: &Stores,
    id: &RequestId,
    known: Option<Queue>,
    changes: Vec<NewChange>,
) -> Result<(), StageError> {
    let (released, queue) = free_slot(deps, stores, id, known, changes).await?;
    if released {
        wake_gate(deps, &queue, id).await?;
    }
    Ok(())
}

/// Opens the gate at once after `id`'s slot was released in the write that
/// left `queue`: when a newer head than `id` was ingested meanwhile, its
/// `process` delivery is probably held at the closed gate, and it is woken
/// now instead of waiting out `gate_wait_delay`. A wake-up only re-runs
/// coalescing and the gate, so a spurious one is harmless.
pub async fn wake_gate(deps: &Deps, queue: &Queue, id: &RequestId) -> Result<(), StageError> {
    if queue.compare_with_latest(id)? == Some(Ordering::Less) {
        // Best effort: the release is committed; a wake-up lost here only
        // leaves the held head to its own delay.
        if let Err(e) = deps.mq.wake(&Topic::process(), queue.name.as_str()).await {
            tracing::warn!(queue = %queue.name, error = %e, "waking the gate after a release failed");
        }
    }
    Ok(())
}

/// The buildsignal poll delay for a build status.
pub fn poll_delay(config: &QueueConfig, running: bool) -> Duration {
    if running {
        config.poll_delay_running
    } else {
        config.poll_delay_accepted
    }
}
