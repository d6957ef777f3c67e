//! The hook registry (identities, versioned releases, runs) and the hook
//! sink (delivery).

use crate::error::HookError;
use async_trait::async_trait;
use stovepipe_entity::{
    EventEnvelope, EventType, Hook, HookContract, HookName, HookRelease, HookReleaseSpec, HookRun,
    QueueName, Timestamp,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created,
    /// The hook existed with the same contract; nothing changed.
    Unchanged,
}

/// The result of creating a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOutcome {
    pub release: HookRelease,
    /// True when a new version was minted (and became live); false when a
    /// release with the same digest existed (nothing moved).
    pub created: bool,
}

/// Contract (MUST):
/// - `upsert_hook`: creates the hook, or returns `Unchanged` when it exists
///   with an equal contract, or `ContractConflict` when the contract differs.
///   Concurrent identical calls never fail with a storage error.
/// - `create_release`: `NotFound` for an unknown hook. When a release with
///   the same digest exists, returns it with `created = false` and moves
///   nothing. Otherwise mints version `max + 1` (1 for the first), makes it
///   live, and returns `created = true`; the created flag is decided under
///   the same lock as the insert, so N concurrent identical calls give one
///   `created = true`, and N distinct digests give versions 1..N, no gaps.
/// - `set_live`: `NotFound` for an unknown hook or version; history untouched.
/// - `resolve_live`: every hook whose contract matches, with its live release
///   (hooks without a release are skipped).
/// - `record_run`: idempotent on `run.id` (returns false when it existed, and
///   does not overwrite); appends a `hook.run` change.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait HookRegistry: Send + Sync {
    async fn upsert_hook(
        &self,
        name: &HookName,
        contract: &HookContract,
        now: Timestamp,
    ) -> Result<(Hook, UpsertOutcome), HookError>;
    async fn create_release(
        &self,
        name: &HookName,
        spec: &HookReleaseSpec,
        created_by: &str,
        now: Timestamp,
    ) -> Result<ReleaseOutcome, HookError>;
    async fn set_live(&self, name: &HookName, version: u32) -> Result<Hook, HookError>;
    async fn get(&self, name: &HookName) -> Result<Option<Hook>, HookError>;
    async fn list(&self) -> Result<Vec<Hook>, HookError>;
    /// Newest first.
    async fn list_releases(&self, name: &HookName) -> Result<Vec<HookRelease>, HookError>;
    async fn get_release(
        &self,
        name: &HookName,
        version: u32,
    ) -> Result<Option<HookRelease>, HookError>;
    async fn resolve_live(
        &self,
        event: EventType,
        queue: Option<QueueName>,
    ) -> Result<Vec<(Hook, HookRelease)>, HookError>;
    async fn record_run(&self, run: &HookRun) -> Result<bool, HookError>;
    /// Newest first.
    async fn list_runs(&self, name: &HookName, limit: usize) -> Result<Vec<HookRun>, HookError>;
}

/// What one delivery attempt achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// 2xx.
    Delivered { status: u16 },
    /// 408, 429, 5xx, timeout or connection error: try again later.
    Retryable { status: Option<u16>, error: String },
    /// Any other answer: give up now.
    Failed { status: Option<u16>, error: String },
}

/// Delivers one event to one hook release.
///
/// Contract (MUST): one attempt per call, bounded by the release's
/// `timeout_ms`; never panics on a hostile receiver.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait HookSink: Send + Sync {
    async fn deliver(&self, release: &HookRelease, envelope: &EventEnvelope) -> DeliveryOutcome;
}
