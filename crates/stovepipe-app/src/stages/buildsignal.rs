//! `buildsignal`: one poll chain per build. Asks the runner for the status
//! (or reads the stored one for runners that are told), folds it into the
//! build (terminal is write-once), stamps the request's outcome when the
//! build is terminal, and holds for the poll delay otherwise. A build still
//! not terminal `max_validation` after admission is cancelled (best effort)
//! and its request failed closed, so a slot can never leak forever.
//!
//! The slot stays claimed until `record` has moved the bookmark, so the next
//! admitted head always builds from the freshest last green.

use async_trait::async_trait;
use std::sync::Arc;
use stovepipe_entity::{Build, BuildId, BuildStatus, BuildUpdate, Request, RequestState};
use stovepipe_ports::{Delivery, EntityWrite, Outbox, StoreError, Stores, Topic};
use tracing::{info, warn};

use super::{Handler, Outcome};
use crate::deps::{Deps, load_queue, load_request, poll_delay};
use crate::error::StageError;
use crate::events::{self, OutboxExt as _};
use crate::fail_closed::fail_closed;
use crate::hops::{BuildSignalHop, RecordHop, decode};

/// Reloads of a build whose status write conflicted before the delivery is
/// given back as retryable.
const RECONCILE_ATTEMPTS: usize = 4;

/// The build as stored now (never a kept copy); a build that is gone is an
/// invariant violation.
async fn stored_build(stores: &Stores, id: &BuildId) -> Result<Build, StageError> {
    stores
        .builds
        .get_fresh(id)
        .await?
        .ok_or_else(|| StageError::permanent(format!("build {id} does not exist")))
}

#[derive(Debug)]
pub struct BuildSignalStage {
    deps: Arc<Deps>,
}

impl BuildSignalStage {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    pub async fn run(&self, hop: &BuildSignalHop) -> Result<Outcome, StageError> {
        let stores = self.deps.stores(&hop.queue);
        let mut build = stores.builds.get(&hop.build_id).await?.ok_or_else(|| {
            StageError::permanent(format!("build {} does not exist", hop.build_id))
        })?;
        // A build exists, so `process` admitted the request: an accepted
        // request is behind.
        let request = load_request(&stores, &build.request_id, |r| {
            r.state == RequestState::Accepted
        })
        .await?;
        match request.state {
            // Superseded: never admitted, no slot to guard, nothing to poll.
            RequestState::Superseded => return Ok(Outcome::Ack),
            // Even as stored: a build of a request never admitted. Retried,
            // then dead-lettered (and failed closed) if it stays so.
            RequestState::Accepted => {
                return Err(StageError::retryable(format!(
                    "request {} has a build but reads as accepted",
                    request.id
                )));
            }
            _ => {}
        }
        let config = self.deps.config(&hop.queue).await?;

        if request.failed_closed && !build.status.is_terminal() {
            // The pipeline already ended this request (dead letter, timeout,
            // reconcile): stop the chain instead of polling a build nobody
            // waits for, and ask the CI to stop it too.
            self.cancel(&config, &build).await;
            return Ok(Outcome::Ack);
        }

        if !build.status.is_terminal() {
            let runner = self.deps.runner(&config).await?;
            if runner.reports_via_api() {
                // The report may have come through another replica, whose
                // wake-up brought this delivery: read what it stored.
                build = stored_build(&stores, &build.id).await?;
            } else {
                let report = runner
                    .status(&build.id)
                    .await
                    .map_err(|e| StageError::from(e).context("status"))?;
                let stamped;
                (build, stamped) = self.reconcile(&stores, build, &report, &request).await?;
                if stamped {
                    return Ok(Outcome::Ack);
                }
            }
        }

        if build.status.is_terminal() {
            return self.stamp_outcome(&stores, &build, request).await;
        }

        if request.state == RequestState::Processing {
            let admitted_at = load_queue(&stores)
                .await?
                .in_flight
                .iter()
                .find(|s| s.request_id == request.id)
                .map_or(build.created_at, |s| s.admitted_at);
            let now = self.deps.now();
            if now.since(admitted_at) >= config.max_validation {
                return self.time_out(&stores, &config, &build, &request).await;
            }
        }
        Ok(Outcome::Hold(poll_delay(
            &config,
            build.status == BuildStatus::Running,
        )))
    }

    /// Folds a runner report into the stored build. Unchanged → no write; a
    /// different terminal status than stored → keep the stored one. A build
    /// that moved since it was read (another replica's poll of the same
    /// chain) is read again from the store and the report folded into that.
    /// Applies the runner's report to the build. A report that ends the
    /// build stamps the request's outcome in the same write (see
    /// [`stamp_outcome`](Self::stamp_outcome)); the second value says so.
    async fn reconcile(
        &self,
        stores: &Stores,
        mut current: Build,
        report: &stovepipe_entity::BuildReport,
        request: &Request,
    ) -> Result<(Build, bool), StageError> {
        for _ in 0..RECONCILE_ATTEMPTS {
            let mut updated = current.clone();
            match updated.apply_report(report, self.deps.now()) {
                Ok(BuildUpdate::Unchanged) => return Ok((current, false)),
                Ok(BuildUpdate::Changed) => {
                    let now = self.deps.now();
                    let mut outbox = Outbox::none().emit(events::build_status(&updated), now);
                    let mut writes = vec![EntityWrite::UpdateBuild {
                        build: updated.clone(),
                        expected_version: current.version,
                    }];
                    let mut stamp = None;
                    if updated.status.is_terminal() {
                        outbox = outbox.emit(events::build_finished(&updated), now);
                        if let Some((stamped, expected_version, hop)) =
                            self.stamped(&updated, request)?
                        {
                            outbox = outbox
                                .emit(events::request_changed(&stamped), now)
                                .publish(hop.message());
                            writes.push(EntityWrite::UpdateRequest {
                                request: stamped.clone(),
                                expected_version,
                            });
                            stamp = Some(stamped);
                        }
                    }
                    match stores.joint.write_all(writes, outbox).await {
                        Ok(()) => {
                            if let Some(stamped) = &stamp {
                                info!(request = %stamped.id, build = %updated.id, outcome = %stamped.state, "build outcome stamped");
                            }
                            return Ok((updated, stamp.is_some()));
                        }
                        Err(StoreError::VersionMismatch {
                            entity: "build", ..
                        }) => {
                            current = stored_build(stores, &current.id).await?;
                        }
                        // The request was stamped or failed meanwhile: the
                        // redelivery reloads both.
                        Err(StoreError::VersionMismatch { .. }) => {
                            return Err(outcome_conflict(request));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(refused) => {
                    warn!(build = %current.id, %refused, "runner contradicts a terminal status; keeping the stored one");
                    return Ok((current, false));
                }
            }
        }
        Err(StageError::retryable(format!(
            "build {}: still conflicting after {RECONCILE_ATTEMPTS} attempts",
            current.id
        )))
    }

    /// The request with the terminal `build`'s outcome recorded (first
    /// writer wins), the version its write expects and the record hop that
    /// rides in it; `None` when the request needs no stamp (it carries an
    /// outcome already, or the build is of one project).
    fn stamped(
        &self,
        build: &Build,
        request: &Request,
    ) -> Result<Option<(Request, u64, RecordHop)>, StageError> {
        if request.state.has_build_outcome() || !build.project.is_whole_repo() {
            return Ok(None);
        }
        let mut stamped = request.clone();
        stamped.record_outcome(build.status, self.deps.now())?;
        Ok(Some((stamped, request.version, record_hop(build, request))))
    }

    /// A build found terminal: stamp the request's outcome with `record` in
    /// the same write; a request that needs no stamp just gets `record`
    /// again (deduplicated).
    async fn stamp_outcome(
        &self,
        stores: &Stores,
        build: &Build,
        request: Request,
    ) -> Result<Outcome, StageError> {
        let Some((stamped, expected, hop)) = self.stamped(build, &request)? else {
            let hop = record_hop(build, &request);
            self.deps.mq.publish(hop.message()).await?;
            return Ok(Outcome::Ack);
        };
        let outbox = Outbox::none()
            .emit(events::request_changed(&stamped), self.deps.now())
            .publish(hop.message());
        match stores.requests.update(&stamped, expected, outbox).await {
            Ok(()) => {
                info!(request = %stamped.id, build = %build.id, outcome = %stamped.state, "build outcome stamped");
                Ok(Outcome::Ack)
            }
            // Someone else stamped or failed it meanwhile: the redelivery
            // reloads and republishes record.
            Err(StoreError::VersionMismatch { .. }) => Err(outcome_conflict(&request)),
            Err(e) => Err(e.into()),
        }
    }

    async fn time_out(
        &self,
        stores: &Stores,
        config: &stovepipe_entity::QueueConfig,
        build: &Build,
        request: &Request,
    ) -> Result<Outcome, StageError> {
        self.cancel(config, build).await;
        let reason = format!(
            "buildsignal: build {} not terminal after max_validation ({}s)",
            build.id,
            config.max_validation.as_secs()
        );
        fail_closed(&self.deps, stores, &request.id, &reason).await?;
        Ok(Outcome::Ack)
    }
}

impl BuildSignalStage {
    /// Best effort: the request fails closed whether or not the CI listens.
    async fn cancel(&self, config: &stovepipe_entity::QueueConfig, build: &Build) {
        if let Ok(runner) = self.deps.runner(config).await
            && let Err(e) = runner.cancel(&build.id).await
        {
            warn!(build = %build.id, error = %e, "cancelling the build failed");
        }
    }
}

fn record_hop(build: &Build, request: &Request) -> RecordHop {
    RecordHop {
        request_id: request.id.clone(),
        queue: request.queue.clone(),
        project: build.project.clone(),
        build_id: Some(build.id.clone()),
    }
}

fn outcome_conflict(request: &Request) -> StageError {
    StageError::retryable(format!(
        "request {} changed while stamping its outcome",
        request.id
    ))
}

#[async_trait]
impl Handler for BuildSignalStage {
    fn topic(&self) -> Topic {
        Topic::buildsignal()
    }

    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        self.run(&decode(delivery)?).await
    }
}
