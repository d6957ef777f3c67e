//! `record`: turn a build outcome into an immutable fact, advance the
//! last-green bookmark (never backwards), move the promotion ref, release
//! the request's slot, and emit the events.
//!
//! Every decision after the fact is written uses the **stored** fact, never
//! the value computed in this delivery: a redelivery, or a racing delivery,
//! must reach the same conclusion.

use async_trait::async_trait;
use std::sync::Arc;
use stovepipe_entity::{
    BookmarkMove, BuildId, Degree, Fact, NewChange, ProjectName, Queue, QueueConfig, Request,
    RequestState, Timestamp,
};
use stovepipe_ports::{Delivery, Outbox, PromoteOutcome, ScmError, StoreError, Stores, Topic};
use tracing::{info, warn};

use super::{Handler, Outcome};
use crate::deps::{
    Deps, load_request, release_slot, release_slot_and, rescue_changes, update_queue,
};
use crate::error::StageError;
use crate::events::{self, OutboxExt as _};
use crate::hops::{RecordHop, decode};
use crate::metrics;

/// How many times promotion chases a bookmark that moved while promoting.
const PROMOTE_CHASES: usize = 4;

#[derive(Debug)]
pub struct RecordStage {
    deps: Arc<Deps>,
}

impl RecordStage {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    pub async fn run(&self, hop: &RecordHop) -> Result<Outcome, StageError> {
        let stores = self.deps.stores(&hop.queue);
        // Record rides in (or follows) the write that ended the request:
        // one that reads as not ended is behind.
        let request = load_request(&stores, &hop.request_id, |r| {
            matches!(r.state, RequestState::Accepted | RequestState::Processing)
        })
        .await?;
        let degree = match request.state {
            RequestState::Succeeded => Degree::GREEN,
            RequestState::Failed if !request.failed_closed => Degree::BROKEN,
            RequestState::Failed => {
                // Failed closed: no fact (unknown is never green, and it is
                // not broken code either). `validation.error` went out with
                // the write that failed it.
                release_slot(&self.deps, &stores, &request.id, None, Vec::new()).await?;
                return Ok(Outcome::Ack);
            }
            RequestState::Cancelled => {
                release_slot(&self.deps, &stores, &request.id, None, Vec::new()).await?;
                return Ok(Outcome::Ack);
            }
            RequestState::Superseded => return Ok(Outcome::Ack),
            // Even as stored: retried, and dead-lettered after the
            // attempts if it stays so.
            RequestState::Accepted | RequestState::Processing => {
                return Err(StageError::retryable(format!(
                    "record for request {} which reads as {}",
                    request.id, request.state
                )));
            }
        };
        if !hop.project.is_whole_repo() {
            return Err(StageError::permanent(format!(
                "project-scoped record for {} ({}) needs per-project greenness, which is not enabled in this build",
                request.id, hop.project
            )));
        }

        let (fact, created) = self
            .create_fact(&stores, &request, degree, hop.build_id.clone())
            .await?;
        let config = self.deps.config(&hop.queue).await?;
        if created {
            metrics::fact_recorded(&request, &fact, self.deps.now());
        }

        if fact.is_green() && config.promotion_ref.is_none() {
            // Steps 3 and 5 in one write: with no promotion between them,
            // nothing can tell the two writes apart, and one is cheaper.
            self.advance_bookmark_and_release(&stores, &request).await?;
            return Ok(Outcome::Ack);
        }
        // The release starts from the queue row as the bookmark step last saw
        // it instead of reading it again; the promotions' events ride with it.
        let (known, promoted) = if fact.is_green() {
            let (moved, queue) = self.advance_bookmark(&stores, &request).await?;
            if moved.holds() {
                self.promote(&stores, &config, &request, queue).await?
            } else {
                (Some(queue), Vec::new())
            }
        } else {
            (None, Vec::new())
        };
        release_slot(&self.deps, &stores, &request.id, known, promoted).await?;
        Ok(Outcome::Ack)
    }

    /// Creates the fact, or adopts the stored one written by an earlier
    /// delivery of the same request. A fact of another request for the same
    /// commit is an invariant violation, never overwritten.
    async fn create_fact(
        &self,
        stores: &Stores,
        request: &Request,
        degree: Degree,
        stamped: Option<BuildId>,
    ) -> Result<(Fact, bool), StageError> {
        let project = ProjectName::whole_repo();
        let build_id = match stamped {
            Some(id) => Some(id),
            None => stores
                .builds
                .list_for_request(&request.id)
                .await?
                .into_iter()
                .rev()
                .find(|b| b.project == project && b.status.is_terminal())
                .map(|b| b.id),
        };
        let fact = Fact {
            queue: request.queue.clone(),
            uri: request.uri.clone(),
            project: project.clone(),
            degree,
            request_id: request.id.clone(),
            build_id,
            created_at: self.deps.now(),
        };
        let outbox = Outbox::none().emit(events::validation_recorded(&fact), fact.created_at);
        match stores.facts.create(&fact, outbox).await {
            Ok(()) => {
                info!(request = %request.id, uri = %fact.uri, green = fact.is_green(), "fact recorded");
                Ok((fact, true))
            }
            Err(StoreError::AlreadyExists { .. }) => {
                let existing = stores
                    .facts
                    .get(&fact.uri, &project)
                    .await?
                    .ok_or_else(|| {
                        StageError::retryable(format!(
                            "fact for {} exists but cannot be read",
                            fact.uri
                        ))
                    })?;
                if existing.request_id != request.id {
                    return Err(StageError::permanent(format!(
                        "invariant: fact for {} belongs to {}, not {}",
                        fact.uri, existing.request_id, request.id
                    )));
                }
                Ok((existing, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn advance_bookmark(
        &self,
        stores: &Stores,
        request: &Request,
    ) -> Result<(BookmarkMove, Queue), StageError> {
        let now = self.deps.now();
        let (moved, queue) = update_queue(stores, |q| {
            let (moved, event) = bookmark_step(q, request, now)?;
            Ok((moved, event.map(|e| Outbox::none().emit(e, now))))
        })
        .await?;
        announce(moved, request, now);
        Ok((moved, queue))
    }

    /// [`advance_bookmark`](Self::advance_bookmark) and the slot's release
    /// as one write of the queue row.
    async fn advance_bookmark_and_release(
        &self,
        stores: &Stores,
        request: &Request,
    ) -> Result<(), StageError> {
        let now = self.deps.now();
        let mut moved = BookmarkMove::NotHeld;
        release_slot_and(&self.deps, stores, &request.id, None, Vec::new(), |q| {
            let (step, event) = bookmark_step(q, request, now)?;
            moved = step;
            Ok(event)
        })
        .await?;
        announce(moved, request, now);
        Ok(())
    }

    /// Moves the promotion ref to the bookmark. If the bookmark moved on
    /// while promoting (several slots recording at once), promote the newer
    /// holder so the ref ends on the bookmark, never behind it. Returns the
    /// queue row as last read and a `promoted` event per move of the ref, for
    /// the release to append (on an error, the moves made so far are
    /// appended at once: see [`rescue_changes`]).
    async fn promote(
        &self,
        stores: &Stores,
        config: &QueueConfig,
        request: &Request,
        queue: Queue,
    ) -> Result<(Option<Queue>, Vec<NewChange>), StageError> {
        let mut promoted = Vec::new();
        match self
            .chase(stores, config, request, queue, &mut promoted)
            .await
        {
            Ok(latest) => Ok((latest, promoted)),
            Err(e) => Err(rescue_changes(&self.deps, promoted, e).await),
        }
    }

    /// [`promote`](Self::promote)'s loop, pushing an event per move. Only
    /// queues with a promotion ref get here (`run` writes the bookmark and
    /// the release together otherwise).
    async fn chase(
        &self,
        stores: &Stores,
        config: &QueueConfig,
        request: &Request,
        queue: Queue,
        promoted: &mut Vec<NewChange>,
    ) -> Result<Option<Queue>, StageError> {
        let scm = self.deps.source_control(config).await?;
        let mut target = queue.last_green.clone();
        let mut latest = Some(queue);
        for _ in 0..PROMOTE_CHASES {
            let Some(mark) = target else {
                return Ok(latest);
            };
            match scm.promote(&mark.uri).await {
                Ok(PromoteOutcome::Moved) => {
                    promoted.push(events::promoted(
                        &request.queue,
                        &mark,
                        config.promotion_ref.as_deref(),
                    ));
                    metrics::promoted(&config.name);
                }
                Ok(PromoteOutcome::AlreadyThere | PromoteOutcome::NotConfigured) => {}
                Err(ScmError::NotFound(what)) => {
                    warn!(queue = %config.name, uri = %mark.uri, %what, "promotion skipped: commit left the branch");
                    metrics::promotion_skipped(&config.name);
                }
                Err(e) => return Err(StageError::from(e).context("promote")),
            }
            latest = stores.queues.get().await?;
            let now_holder = latest.as_ref().and_then(|q| q.last_green.clone());
            if now_holder.as_ref().map(|b| &b.request_id) == Some(&mark.request_id) {
                return Ok(latest);
            }
            target = now_holder;
        }
        Ok(latest)
    }
}

#[async_trait]
impl Handler for RecordStage {
    fn topic(&self) -> Topic {
        Topic::record()
    }

    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        self.run(&decode(delivery)?).await
    }
}

/// Step 3 on a loaded queue row: moves the whole-repository bookmark to
/// `request` unless it holds a newer one, with `last_green.advanced` when
/// it moved.
fn bookmark_step(
    queue: &mut Queue,
    request: &Request,
    now: Timestamp,
) -> Result<(BookmarkMove, Option<NewChange>), StageError> {
    let whole = ProjectName::whole_repo();
    let previous = queue.last_green.clone();
    let moved = queue.advance_last_green(&whole, &request.uri, &request.id, now)?;
    let event = (moved == BookmarkMove::Advanced)
        .then(|| events::last_green_advanced(request, &whole, previous.as_ref()));
    Ok((moved, event))
}

/// Logs and counts a bookmark move once its write has committed.
fn announce(moved: BookmarkMove, request: &Request, now: Timestamp) {
    if moved == BookmarkMove::Advanced {
        info!(queue = %request.queue, request = %request.id, uri = %request.uri, "last green advanced");
        metrics::last_green_advanced(&request.queue, now);
    }
}
