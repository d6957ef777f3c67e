//! Build status reports from an outside CI (the `external` runner): the CI
//! tells Stovepipe a build's status through the API; the report is folded
//! into the stored build (terminal is write-once) and wakes the build's
//! held poll chain so the pipeline moves at once instead of at the next poll.

use std::sync::Arc;
use stovepipe_entity::{Build, BuildId, BuildReport, BuildUpdate};
use stovepipe_ports::{Outbox, StoreError, Topic};
use thiserror::Error;

use crate::deps::Deps;
use crate::events::{self, OutboxExt as _};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReportError {
    #[error("build {0} not found")]
    NotFound(String),
    /// The build is terminal already with another status (409).
    #[error("{0}")]
    Conflict(String),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("report failed: {0}")]
    Internal(String),
}

crate::error::service_error!(ReportError);

#[derive(Debug, Clone)]
pub struct ReportService {
    deps: Arc<Deps>,
}

impl ReportService {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Applies `report` to build `id`; returns the stored build afterwards.
    pub async fn report(&self, id: &BuildId, report: &BuildReport) -> Result<Build, ReportError> {
        for _ in 0..8 {
            let mut build = self
                .deps
                .read
                .find_build(id)
                .await?
                .ok_or_else(|| ReportError::NotFound(id.to_string()))?;
            let expected = build.version;
            match build.apply_report(report, self.deps.now()) {
                Ok(BuildUpdate::Unchanged) => return Ok(build),
                Ok(BuildUpdate::Changed) => {}
                Err(refused) => return Err(ReportError::Conflict(refused.to_string())),
            }
            let now = self.deps.now();
            let mut outbox = Outbox::none().emit(events::build_status(&build), now);
            if build.status.is_terminal() {
                outbox = outbox.emit(events::build_finished(&build), now);
            }
            let stores = self.deps.stores(&build.queue);
            match stores.builds.update(&build, expected, outbox).await {
                Ok(()) => {
                    // Best effort: the held poll chain also wakes at its own
                    // delay if this wake-up is lost.
                    let _ = self
                        .deps
                        .mq
                        .wake(&Topic::buildsignal(), build.id.as_str())
                        .await;
                    return Ok(build);
                }
                Err(StoreError::VersionMismatch { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(ReportError::Unavailable(format!(
            "build {id}: conflicting concurrent reports"
        )))
    }
}
