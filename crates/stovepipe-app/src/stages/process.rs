//! `process`: coalesce a backlog to the newest head, gate concurrency per
//! queue, choose the build strategy, claim a slot, hand over to `build`.
//!
//! Partitioned by queue and strictly serial per partition, so the
//! coalescing decision and the gate see a consistent queue.

use async_trait::async_trait;
use std::cmp::Ordering;
use std::sync::Arc;
use stovepipe_entity::{
    BuildStrategy, Origin, ProjectName, Queue, QueueConfig, Request, RequestState, Uri,
};
use stovepipe_ports::{
    Delivery, EntityWrite, Outbox, ScmError, SourceControl, StoreError, Stores, Topic,
};
use tracing::{debug, warn};

use super::{Handler, Outcome};
use crate::deps::{Deps, load_queue, release_slot_in_process};
use crate::error::StageError;
use crate::events::{self, OutboxExt as _};
use crate::hops::{BuildHop, ProcessHop, decode};
use crate::metrics;

#[derive(Debug)]
pub struct ProcessStage {
    deps: Arc<Deps>,
}

impl ProcessStage {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    pub async fn run(&self, hop: &ProcessHop) -> Result<Outcome, StageError> {
        let stores = self.deps.stores(&hop.queue);
        let Some(mut request) = stores.requests.get(&hop.request_id).await? else {
            // Ingest writes the row before publishing; a hop without a row is
            // an invariant violation.
            return Err(StageError::permanent(format!(
                "request {} does not exist",
                hop.request_id
            )));
        };
        match request.state {
            s if s.is_terminal() => return Ok(Outcome::Ack),
            RequestState::Processing => {
                // Admitted by an earlier delivery that may have died before
                // the build hop left: hand over again (deduplicated).
                self.deps
                    .mq
                    .publish(build_hop(&request, false).message())
                    .await?;
                return Ok(Outcome::Ack);
            }
            _ => {}
        }
        let config = self.deps.config(&hop.queue).await?;
        let scm = self.deps.source_control(&config).await?;

        // Coalesce → gate → strategy → claim; a conflicting queue write
        // reloads and starts over, since latest or the slots may have moved.
        // A closed gate is checked once more on the stored row before the
        // hold: a kept row can still hold a slot another replica freed.
        let mut stored_row: Option<Queue> = None;
        let mut gate_rechecked = false;
        loop {
            let queue = match stored_row.take() {
                Some(queue) => queue,
                None => load_queue(&stores).await?,
            };
            if request.origin == Origin::Ingest {
                match queue.compare_with_latest(&request.id)? {
                    None => {
                        return Err(StageError::retryable(format!(
                            "queue {} has no latest request yet while {} is accepted",
                            queue.name, request.id
                        )));
                    }
                    Some(Ordering::Less) => {
                        return self.supersede(&stores, &queue, &mut request).await;
                    }
                    Some(_) => {}
                }
            }
            let already_claimed = queue.holds_slot(&request.id);
            if !already_claimed && queue.in_flight_count() >= config.max_concurrent as usize {
                if !gate_rechecked {
                    gate_rechecked = true;
                    stored_row = stores.queues.get_fresh().await?;
                    if stored_row.is_some() {
                        continue;
                    }
                }
                debug!(request = %request.id, in_flight = queue.in_flight_count(), "gate closed: holding");
                metrics::gate_held(&queue.name);
                return Ok(Outcome::Hold(config.gate_wait_delay));
            }
            let (strategy, base) = strategy(scm.as_ref(), &queue, &request.uri, &config).await?;
            let claim = if already_claimed {
                None
            } else {
                let mut claimed = queue.clone();
                let expected_version = claimed.version;
                claimed.claim_slot(&request.id, self.deps.now())?;
                Some(EntityWrite::UpdateQueue {
                    queue: claimed,
                    expected_version,
                })
            };
            match self
                .admit(&stores, request.clone(), strategy, base, claim)
                .await
            {
                // Reload: latest or the slots may have moved.
                Err(Admit::QueueMoved) => {}
                Err(Admit::Failed(e)) => return Err(e),
                Ok(outcome) => return Ok(outcome),
            }
        }
    }

    /// CAS the request to `superseded`. A slot it holds while accepted (a
    /// claim written apart from its admit, as releases before joint writes
    /// did) is released first, so a crash between the two writes leaves an
    /// accepted request that the redelivery supersedes, never a superseded
    /// request owning a slot.
    async fn supersede(
        &self,
        stores: &Stores,
        queue: &Queue,
        request: &mut Request,
    ) -> Result<Outcome, StageError> {
        if queue.holds_slot(&request.id) {
            release_slot_in_process(&self.deps, stores, &request.id, Some(queue.clone())).await?;
        }
        let expected = request.version;
        request.supersede(self.deps.now())?;
        let outbox = Outbox::none().emit(events::request_changed(request), self.deps.now());
        stores.requests.update(request, expected, outbox).await?;
        metrics::superseded(&request.queue);
        Ok(Outcome::Ack)
    }

    /// CAS the request to `processing` with the build hop in its outbox,
    /// in one write with `claim`, the queue row's write that claims its
    /// slot (none when the request holds one already). If the queue row
    /// moved meanwhile nothing is written, and the caller starts over. If
    /// the request moved: a request another delivery admitted keeps its
    /// slot (and gets its hop again); one that ended releases any slot it
    /// holds.
    async fn admit(
        &self,
        stores: &Stores,
        mut request: Request,
        strategy: BuildStrategy,
        base: Option<Uri>,
        claim: Option<EntityWrite>,
    ) -> Result<Outcome, Admit> {
        let expected_version = request.version;
        request.admit(strategy, base, self.deps.now())?;
        let outbox = Outbox::none()
            .emit(events::request_changed(&request), self.deps.now())
            .publish(build_hop(&request, true).message());
        let admitted = EntityWrite::UpdateRequest {
            request: request.clone(),
            expected_version,
        };
        let writes = claim.into_iter().chain([admitted]).collect();
        match stores.joint.write_all(writes, outbox).await {
            Ok(()) => {
                metrics::admitted(&request.queue, strategy);
                Ok(Outcome::Ack)
            }
            Err(StoreError::VersionMismatch {
                entity: "queue", ..
            }) => Err(Admit::QueueMoved),
            Err(StoreError::VersionMismatch { .. }) => {
                let current = stores.requests.get(&request.id).await?.ok_or_else(|| {
                    StageError::permanent(format!("request {} vanished", request.id))
                })?;
                match current.state {
                    RequestState::Processing => {
                        self.deps
                            .mq
                            .publish(build_hop(&current, false).message())
                            .await?;
                        Ok(Outcome::Ack)
                    }
                    s if s.is_terminal() => {
                        release_slot_in_process(&self.deps, stores, &current.id, None).await?;
                        Ok(Outcome::Ack)
                    }
                    _ => Err(Admit::Failed(StageError::retryable(format!(
                        "request {} changed while being admitted",
                        request.id
                    )))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Why [`ProcessStage::admit`] did not admit.
enum Admit {
    /// The queue row moved since it was read: nothing was written.
    QueueMoved,
    Failed(StageError),
}

impl<E: Into<StageError>> From<E> for Admit {
    fn from(e: E) -> Self {
        Self::Failed(e.into())
    }
}

/// The hand-over to `build`; `from_admit` only in the admit's own write
/// (see [`BuildHop::from_admit`]).
fn build_hop(request: &Request, from_admit: bool) -> BuildHop {
    BuildHop {
        request_id: request.id.clone(),
        queue: request.queue.clone(),
        project: ProjectName::whole_repo(),
        from_admit,
    }
}

/// No last green → full. Otherwise incremental when the last green commit is
/// an ancestor of the head, full when history was rewritten (not an
/// ancestor, or no longer known at all).
async fn strategy(
    scm: &dyn SourceControl,
    queue: &Queue,
    head: &Uri,
    config: &QueueConfig,
) -> Result<(BuildStrategy, Option<Uri>), StageError> {
    let Some(last_green) = &queue.last_green else {
        return Ok((BuildStrategy::Full, None));
    };
    match scm.is_ancestor(&last_green.uri, head).await {
        Ok(true) => Ok((
            BuildStrategy::IncrementalSinceGreen,
            Some(last_green.uri.clone()),
        )),
        Ok(false) => Ok((BuildStrategy::Full, None)),
        Err(ScmError::NotFound(what)) => {
            warn!(queue = %config.name, last_green = %last_green.uri, %what,
                "last green commit unknown to source control; building in full");
            metrics::last_green_unknown(&config.name);
            Ok((BuildStrategy::Full, None))
        }
        Err(e) => Err(StageError::from(e).context("is_ancestor")),
    }
}

#[async_trait]
impl Handler for ProcessStage {
    fn topic(&self) -> Topic {
        Topic::process()
    }

    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        self.run(&decode(delivery)?).await
    }
}
