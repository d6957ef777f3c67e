//! `record`: turn a build outcome into an immutable fact, move the
//! promotion ref to the commit that will hold the last-green bookmark, then
//! advance the bookmark (never backwards) and release the request's slot in
//! one write, and emit the events (docs/decisions.md: "The promotion ref
//! moves before the bookmark's write"). Without a promotion ref the fact
//! rides in that write too (`record_with_queue`; decisions.md: "A stage
//! step that changes two rows writes them in one joint write").
//!
//! Every decision after the fact is written uses the **stored** fact, never
//! the value computed in this delivery: a redelivery, or a racing delivery,
//! must reach the same conclusion.

use async_trait::async_trait;
use std::sync::Arc;
use stovepipe_entity::{
    BookmarkMove, BuildId, Degree, Fact, NewChange, ProjectName, Queue, QueueConfig, QueueName,
    Request, RequestState, Timestamp,
};
use stovepipe_ports::{
    Delivery, EntityWrite, Outbox, PromoteOutcome, ScmError, SourceControl, StoreError, Stores,
    Topic,
};
use tracing::{info, warn};

use super::{Handler, Outcome};
use crate::deps::{
    Deps, QueueAttempts, load_request, release_slot, rescue_changes, update_queue, wake_gate,
};
use crate::error::StageError;
use crate::events::{self, OutboxExt as _};
use crate::hops::{RecordHop, decode};
use crate::metrics;

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

        let fact = self
            .new_fact(&stores, &request, degree, hop.build_id.clone())
            .await?;
        let config = self.deps.config(&hop.queue).await?;
        // A broken fact moves no ref: it rides in the release's write too.
        let joint = config.promotion_ref.is_none() || !fact.is_green();
        if joint && self.record_with_queue(&stores, &request, &fact).await? {
            metrics::fact_recorded(&request, &fact, self.deps.now());
            return Ok(Outcome::Ack);
        }
        let (fact, created) = self.create_fact(&stores, &request, fact).await?;
        if created {
            metrics::fact_recorded(&request, &fact, self.deps.now());
        }

        if fact.is_green() {
            // An earlier delivery got past the fact and may have moved the
            // promotion ref before it stopped.
            self.settle_green(&stores, &config, &request, !created)
                .await?;
        } else {
            release_slot(&self.deps, &stores, &request.id, None, Vec::new()).await?;
        }
        Ok(Outcome::Ack)
    }

    /// The fact this delivery would record: of the whole repository, with
    /// the request's terminal build (`stamped`, or looked up).
    async fn new_fact(
        &self,
        stores: &Stores,
        request: &Request,
        degree: Degree,
        stamped: Option<BuildId>,
    ) -> Result<Fact, StageError> {
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
        Ok(Fact {
            queue: request.queue.clone(),
            uri: request.uri.clone(),
            project,
            degree,
            request_id: request.id.clone(),
            build_id,
            created_at: self.deps.now(),
        })
    }

    /// Steps 1 and 3–5 in one write, for a queue without a promotion ref or
    /// a fact that is not green: the fact, and the queue row's write that
    /// moves the bookmark (for a green fact) and releases the slot. Returns
    /// false, having written nothing, when a fact of the commit is stored
    /// already (an earlier delivery's, or an invariant violation): the
    /// caller adopts it, as a delivery that finds the fact does. With a promotion ref the fact is
    /// written first, alone, so that the ref never points at a commit whose
    /// greenness is not recorded yet ([`settle_green`](Self::settle_green)).
    async fn record_with_queue(
        &self,
        stores: &Stores,
        request: &Request,
        fact: &Fact,
    ) -> Result<bool, StageError> {
        let now = self.deps.now();
        let mut attempts = QueueAttempts::new(stores);
        loop {
            let (mut queue, expected_version) = attempts.next().await?;
            let mut outbox =
                Outbox::none().emit(events::validation_recorded(fact), fact.created_at);
            let mut moved = None;
            if fact.is_green() {
                let (step, advanced) = bookmark_step(&mut queue, request, now)?;
                moved = Some(step);
                if let Some(advanced) = advanced {
                    outbox = outbox.emit(advanced, now);
                }
            }
            let released = queue.release_slot(&request.id, now);
            let mut writes = vec![EntityWrite::CreateFact(fact.clone())];
            if released || moved == Some(BookmarkMove::Advanced) {
                writes.push(EntityWrite::UpdateQueue {
                    queue: queue.clone(),
                    expected_version,
                });
            }
            match stores.joint.write_all(writes, outbox).await {
                Ok(()) => {
                    info!(request = %request.id, uri = %fact.uri, green = fact.is_green(), "fact recorded");
                    if let Some(moved) = moved {
                        announce(moved, request, now);
                    }
                    if released {
                        wake_gate(&self.deps, &queue, &request.id).await?;
                    }
                    return Ok(true);
                }
                Err(StoreError::VersionMismatch {
                    entity: "queue", ..
                }) => {}
                Err(StoreError::AlreadyExists { entity: "fact", .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates `fact`, or adopts the stored one written by an earlier
    /// delivery of the same request. A fact of another request for the same
    /// commit is an invariant violation, never overwritten.
    async fn create_fact(
        &self,
        stores: &Stores,
        request: &Request,
        fact: Fact,
    ) -> Result<(Fact, bool), StageError> {
        let project = fact.project.clone();
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

    /// Steps 3–5 for a green fact: the bookmark, the promotion ref and the
    /// slot, with the ref moved **before** the write that moves the bookmark
    /// and releases the slot, so that one write of the queue row does both.
    ///
    /// Each attempt reads the row, promotes the commit that will hold the
    /// bookmark after the write, then writes conditionally on the row read.
    /// A write that lost to another one starts over from the row as it is
    /// now, promoting its holder again: the ref may have been moved behind it
    /// by this promotion. So the last promotion before any successful write
    /// is of the holder that write leaves, and the ref never ends behind the
    /// bookmark. `disturbed`: an earlier delivery may have moved the ref, so
    /// the holder is promoted even when it is another request.
    ///
    /// A promotion that fails moves the bookmark alone and keeps the slot:
    /// last green does not wait for a promotion outage, the next head waits
    /// for the retry.
    async fn settle_green(
        &self,
        stores: &Stores,
        config: &QueueConfig,
        request: &Request,
        disturbed: bool,
    ) -> Result<(), StageError> {
        let scm = match config.promotion_ref {
            Some(_) => Some(self.deps.source_control(config).await?),
            None => None,
        };
        let mut promotions = Promotions {
            scm: scm.as_deref(),
            config,
            queue: &request.queue,
            disturbed,
            told: Vec::new(),
        };
        match self
            .settle_green_attempts(stores, request, &mut promotions)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(rescue_changes(&self.deps, promotions.told, e).await),
        }
    }

    /// [`settle_green`](Self::settle_green)'s compare-and-swap loop. The
    /// `promoted` events wait in `promotions.told` for a write to carry them.
    async fn settle_green_attempts(
        &self,
        stores: &Stores,
        request: &Request,
        promotions: &mut Promotions<'_>,
    ) -> Result<(), StageError> {
        let now = self.deps.now();
        let mut attempts = QueueAttempts::new(stores);
        loop {
            let (mut queue, expected) = attempts.next().await?;
            let (moved, advanced) = bookmark_step(&mut queue, request, now)?;
            if let Err(e) = promotions.before_write(&queue, moved).await {
                if moved == BookmarkMove::Advanced {
                    self.advance_bookmark(stores, request).await?;
                }
                return Err(e);
            }
            let released = queue.release_slot(&request.id, now);
            if !released && advanced.is_none() {
                // The row stays as it is; the ref's moves are told alone.
                let told = std::mem::take(&mut promotions.told);
                if !told.is_empty() {
                    self.deps.feed.append(told).await?;
                }
                return Ok(());
            }
            let outbox = advanced
                .iter()
                .chain(&promotions.told)
                .fold(Outbox::none(), |o, c| o.emit(c.clone(), now));
            if attempts.write(&queue, expected, outbox).await? {
                promotions.told.clear();
                announce(moved, request, now);
                if released {
                    wake_gate(&self.deps, &queue, &request.id).await?;
                }
                return Ok(());
            }
        }
    }

    /// The fallback of a failed promotion: moves the bookmark in a write of
    /// its own, keeping the slot.
    async fn advance_bookmark(&self, stores: &Stores, request: &Request) -> Result<(), StageError> {
        let now = self.deps.now();
        let (moved, _) = update_queue(stores, |q| {
            let (moved, event) = bookmark_step(q, request, now)?;
            Ok((moved, event.map(|e| Outbox::none().emit(e, now))))
        })
        .await?;
        announce(moved, request, now);
        Ok(())
    }
}

/// The promotion ref's side of [`RecordStage::settle_green`].
struct Promotions<'a> {
    /// `None`: the queue has no promotion ref.
    scm: Option<&'a dyn SourceControl>,
    config: &'a QueueConfig,
    queue: &'a QueueName,
    /// The ref may point behind the bookmark because of this request.
    disturbed: bool,
    /// A `promoted` event per move of the ref not yet written.
    told: Vec<NewChange>,
}

impl Promotions<'_> {
    /// Promotes the bookmark of `queue` (the row about to be written) when
    /// this request holds it, or when this request has moved the ref before.
    async fn before_write(&mut self, queue: &Queue, moved: BookmarkMove) -> Result<(), StageError> {
        let Some(scm) = self.scm else {
            return Ok(());
        };
        let Some(mark) = &queue.last_green else {
            return Ok(());
        };
        if !moved.holds() && !self.disturbed {
            return Ok(());
        }
        self.disturbed = true;
        match scm.promote(&mark.uri).await {
            Ok(PromoteOutcome::Moved) => {
                self.told.push(events::promoted(
                    self.queue,
                    mark,
                    self.config.promotion_ref.as_deref(),
                ));
                metrics::promoted(&self.config.name);
            }
            Ok(PromoteOutcome::AlreadyThere | PromoteOutcome::NotConfigured) => {}
            Err(ScmError::NotFound(what)) => {
                warn!(queue = %self.config.name, uri = %mark.uri, %what, "promotion skipped: commit left the branch");
                metrics::promotion_skipped(&self.config.name);
            }
            Err(e) => return Err(StageError::from(e).context("promote")),
        }
        Ok(())
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
