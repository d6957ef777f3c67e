//! The external runner: the team's own CI learns about builds from
//! Stovepipe's hooks and events and reports back through
//! `POST /v1/builds/{build_id}/status`.
//!
//! Owns: minting ids (`ext-<uuid v4>`). Everything else lives in the build
//! store: `status` answers `status: None` so the pipeline reads what was
//! reported there.

use async_trait::async_trait;
use stovepipe_entity::{BuildId, BuildReport};
use stovepipe_ports::{BuildRunner, RunnerError, TriggerRequest};

const ID_PREFIX: &str = "ext-";

/// Mints build ids for an outside CI that reports through the API.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExternalRunner;

impl ExternalRunner {
    pub fn new() -> Self {
        Self
    }
}

fn check_id(id: &BuildId) -> Result<(), RunnerError> {
    if id
        .as_str()
        .strip_prefix(ID_PREFIX)
        .is_some_and(|u| !u.is_empty())
    {
        Ok(())
    } else {
        Err(RunnerError::NotFound(id.to_string()))
    }
}

#[async_trait]
impl BuildRunner for ExternalRunner {
    async fn trigger(&self, _request: &TriggerRequest) -> Result<BuildId, RunnerError> {
        Ok(BuildId::new(format!(
            "{ID_PREFIX}{}",
            uuid::Uuid::new_v4()
        ))?)
    }

    /// Ids this runner could have minted answer `status: None` (the store
    /// holds what was reported); any other id is `NotFound`.
    async fn status(&self, id: &BuildId) -> Result<BuildReport, RunnerError> {
        check_id(id)?;
        Ok(BuildReport::default())
    }

    /// Nothing to stop here: the outside CI is told through events.
    async fn cancel(&self, id: &BuildId) -> Result<(), RunnerError> {
        check_id(id)
    }

    fn reports_via_api(&self) -> bool {
        true
    }
}
