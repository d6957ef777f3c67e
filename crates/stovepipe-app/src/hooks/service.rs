//! [`HookService`]: the hook registry as the API uses it — parse and
//! validate input, call the registry, classify its errors once.

use std::collections::BTreeSet;
use std::sync::Arc;
use stovepipe_entity::{
    EventType, Hook, HookContract, HookName, HookRelease, HookReleaseSpec, HookRun, QueueName,
};
use stovepipe_ports::{Classify as _, HookError, UpsertOutcome};
use thiserror::Error;

use crate::deps::Deps;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HookServiceError {
    #[error("{0} not found")]
    NotFound(String),
    /// The hook exists with a different contract.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("hook registry unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<HookError> for HookServiceError {
    fn from(e: HookError) -> Self {
        match e {
            HookError::NotFound(what) => Self::NotFound(what),
            HookError::ContractConflict(_) => Self::Conflict(e.to_string()),
            HookError::Invalid(v) => Self::Invalid(v.to_string()),
            HookError::Store(ref s) if s.is_retryable() => Self::Unavailable(e.to_string()),
            HookError::Store(s) => Self::Internal(s.to_string()),
        }
    }
}

/// A release and whether it is the hook's live one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub release: HookRelease,
    pub live: bool,
}

#[derive(Debug, Clone)]
pub struct HookService {
    deps: Arc<Deps>,
}

fn hook_name(name: &str) -> Result<HookName, HookServiceError> {
    HookName::new(name).map_err(|e| HookServiceError::Invalid(e.to_string()))
}

impl HookService {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Creates the hook, or confirms it when it exists with the same
    /// contract. Returns the hook and whether it was created; a different
    /// contract is a `Conflict`.
    pub async fn upsert(
        &self,
        name: &str,
        events: &[String],
        queues: &[String],
    ) -> Result<(Hook, bool), HookServiceError> {
        let name = hook_name(name)?;
        let events = events
            .iter()
            .map(|e| {
                EventType::parse(e).ok_or_else(|| {
                    let known: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    HookServiceError::Invalid(format!(
                        "unknown event type {e:?}: expected one of {}",
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let queues = queues
            .iter()
            .map(|q| QueueName::new(q.as_str()))
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|e| HookServiceError::Invalid(e.to_string()))?;
        let contract = HookContract::new(events, queues)
            .map_err(|e| HookServiceError::Invalid(e.to_string()))?;
        let (hook, outcome) = self
            .deps
            .hooks
            .upsert_hook(&name, &contract, self.deps.now())
            .await?;
        Ok((hook, outcome == UpsertOutcome::Created))
    }

    /// Creates a release (a new digest becomes live) or returns the one with
    /// the same digest (nothing moves). Returns it and whether it was
    /// created.
    pub async fn create_release(
        &self,
        name: &str,
        spec: &HookReleaseSpec,
        created_by: &str,
    ) -> Result<(ReleaseInfo, bool), HookServiceError> {
        let name = hook_name(name)?;
        spec.validate()
            .map_err(|e| HookServiceError::Invalid(e.to_string()))?;
        let outcome = self
            .deps
            .hooks
            .create_release(&name, spec, created_by, self.deps.now())
            .await?;
        let live = if outcome.created {
            true
        } else {
            self.get(name.as_str()).await?.live_version == Some(outcome.release.version)
        };
        Ok((
            ReleaseInfo {
                release: outcome.release,
                live,
            },
            outcome.created,
        ))
    }

    /// Points `live` at an existing version (a rollback or roll-forward).
    pub async fn set_live(&self, name: &str, version: u32) -> Result<Hook, HookServiceError> {
        let name = hook_name(name)?;
        Ok(self.deps.hooks.set_live(&name, version).await?)
    }

    pub async fn get(&self, name: &str) -> Result<Hook, HookServiceError> {
        let name = hook_name(name)?;
        self.deps
            .hooks
            .get(&name)
            .await?
            .ok_or_else(|| HookServiceError::NotFound(format!("hook {name}")))
    }

    /// Every hook, with its live version.
    pub async fn list(&self) -> Result<Vec<Hook>, HookServiceError> {
        Ok(self.deps.hooks.list().await?)
    }

    /// The hook's releases, newest first.
    pub async fn releases(&self, name: &str) -> Result<Vec<ReleaseInfo>, HookServiceError> {
        let hook = self.get(name).await?;
        let releases = self.deps.hooks.list_releases(&hook.name).await?;
        Ok(releases
            .into_iter()
            .map(|release| ReleaseInfo {
                live: hook.live_version == Some(release.version),
                release,
            })
            .collect())
    }

    /// The hook's runs, newest first, with the release each used.
    pub async fn runs(&self, name: &str, limit: usize) -> Result<Vec<HookRun>, HookServiceError> {
        let hook = self.get(name).await?;
        Ok(self.deps.hooks.list_runs(&hook.name, limit).await?)
    }
}
