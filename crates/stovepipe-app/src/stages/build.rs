//! `build`: trigger the queue's build runner for an admitted request and
//! hand the build over to `buildsignal`.
//!
//! Redelivery-safe: an existing non-cancelled build of the same request and
//! scope is reused instead of triggering another. (A crash between the
//! runner accepting a trigger and the build row being written can still
//! start a second build; only a runner-side idempotency key could close
//! that window, and none of the supported CIs offers one.) The admit's own
//! hop on its first delivery skips that lookup: no build can exist before
//! it (`BuildHop::from_admit`), and the lookup was one statement more on
//! every request's path.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use stovepipe_entity::{Build, BuildStatus, BuildStrategy, RequestState};
use stovepipe_ports::{Delivery, Outbox, StoreError, Topic, TriggerRequest};
use tracing::info;

use super::{Handler, Outcome};
use crate::deps::{Deps, load_request};
use crate::error::StageError;
use crate::events::{self, OutboxExt as _};
use crate::hops::{BuildHop, BuildSignalHop, decode};

#[derive(Debug)]
pub struct BuildStage {
    deps: Arc<Deps>,
}

impl BuildStage {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// `first_delivery`: no handler has had this hop before
    /// ([`Delivery::is_first`]).
    pub async fn run(&self, hop: &BuildHop, first_delivery: bool) -> Result<Outcome, StageError> {
        let stores = self.deps.stores(&hop.queue);
        // The build hop rides in the admit: an accepted request is behind.
        let request = load_request(&stores, &hop.request_id, |r| {
            r.state == RequestState::Accepted
        })
        .await?;
        if request.state.is_terminal() {
            return Ok(Outcome::Ack);
        }
        if request.state != RequestState::Processing {
            return Err(StageError::retryable(format!(
                "request {} is {} and its strategy is not visible yet",
                request.id, request.state
            )));
        }
        let existing = if hop.from_admit && first_delivery {
            None
        } else {
            stores
                .builds
                .list_for_request(&request.id)
                .await?
                .into_iter()
                .find(|b| b.project == hop.project && b.status != BuildStatus::Cancelled)
        };
        if let Some(build) = existing {
            // Redelivery after the build row was written: make sure its poll
            // chain exists (deduplicated) and stop.
            self.deps.mq.publish(signal_hop(&build).message()).await?;
            return Ok(Outcome::Ack);
        }

        let config = self.deps.config(&hop.queue).await?;
        let runner = self.deps.runner(&config).await?;
        let base = match request.build_strategy {
            Some(BuildStrategy::IncrementalSinceGreen) => request.base_uri.clone(),
            _ => None,
        };
        let trigger = TriggerRequest {
            queue: request.queue.clone(),
            request_id: request.id.clone(),
            project: hop.project.clone(),
            base,
            head: request.uri.clone(),
            metadata: BTreeMap::from([("request_id".to_owned(), request.id.to_string())]),
        };
        let build_id = runner
            .trigger(&trigger)
            .await
            .map_err(|e| StageError::from(e).context("trigger"))?;
        info!(request = %request.id, build = %build_id, "build triggered");

        let build = Build::accepted(
            build_id,
            request.queue.clone(),
            request.id.clone(),
            hop.project.clone(),
            self.deps.now(),
        );
        let outbox = Outbox::none()
            .emit(events::build_status(&build), build.created_at)
            .publish(signal_hop(&build).message());
        match stores.builds.create(&build, outbox).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                self.deps.mq.publish(signal_hop(&build).message()).await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Outcome::Ack)
    }
}

fn signal_hop(build: &Build) -> BuildSignalHop {
    BuildSignalHop {
        build_id: build.id.clone(),
        queue: build.queue.clone(),
    }
}

#[async_trait]
impl Handler for BuildStage {
    fn topic(&self) -> Topic {
        Topic::build()
    }

    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        self.run(&decode(delivery)?, delivery.is_first()).await
    }
}
