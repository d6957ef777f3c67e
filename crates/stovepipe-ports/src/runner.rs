//! Build runners: how Stovepipe triggers the team's CI.

use crate::error::RunnerError;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use stovepipe_entity::{BuildId, BuildReport, ProjectName, QueueConfig, QueueName, RequestId, Uri};

/// Everything a runner needs to start a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRequest {
    pub queue: QueueName,
    pub request_id: RequestId,
    /// Empty = whole repository.
    pub project: ProjectName,
    /// The last green commit for an incremental build; `None` for a full one.
    pub base: Option<Uri>,
    pub head: Uri,
    pub metadata: BTreeMap<String, String>,
}

/// Contract (MUST):
/// - `trigger` starts exactly one build per successful call and returns its
///   id (unique per installation); it never pretends a build ran;
/// - `status` of an unknown id is `NotFound`; a backend state the runner
///   cannot map is `Invalid`, never a guessed status;
/// - `cancel` is best effort and idempotent (cancelling a finished build is
///   `Ok`);
/// - a runner that is *told* statuses (`reports_via_api`) answers `status`
///   with `status: None` and the pipeline reads the stored build instead.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait BuildRunner: Send + Sync {
    async fn trigger(&self, request: &TriggerRequest) -> Result<BuildId, RunnerError>;
    async fn status(&self, id: &BuildId) -> Result<BuildReport, RunnerError>;
    async fn cancel(&self, id: &BuildId) -> Result<(), RunnerError>;
    fn reports_via_api(&self) -> bool {
        false
    }
}

/// Builds the runner of a queue from its configuration.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait BuildRunnerFactory: Send + Sync {
    async fn for_queue(&self, config: &QueueConfig) -> Result<Arc<dyn BuildRunner>, RunnerError>;
}
