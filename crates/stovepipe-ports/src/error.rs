//! Port error types. Each variant is classified once, here: retryable
//! (a later attempt may succeed: conflicts, timeouts, unavailable
//! dependencies) or permanent (dead-letter at once).

use stovepipe_entity::InvalidValue;
use thiserror::Error;

/// Retryable or permanent, decided where the error is produced.
pub trait Classify {
    fn is_retryable(&self) -> bool;
}

/// Errors of the stores, counter, read model and queue config store.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("{entity} {key} already exists")]
    AlreadyExists { entity: &'static str, key: String },
    #[error("{entity} {key} not found")]
    NotFound { entity: &'static str, key: String },
    /// The conditional write found another version (or no row at all).
    #[error("{entity} {key}: version conflict (expected version {expected})")]
    VersionMismatch {
        entity: &'static str,
        key: String,
        expected: u64,
    },
    #[error("{entity} of queue {got:?} given to a store bound to queue {bound:?}")]
    WrongQueue {
        entity: &'static str,
        bound: String,
        got: String,
    },
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// Connection refused, pool timeout, database busy: try again later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reports; not expected to heal by itself.
    #[error("storage error: {0}")]
    Backend(String),
}

impl Classify for StoreError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::VersionMismatch { .. } | Self::Unavailable(_))
    }
}

/// Errors of the message queue.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MqError {
    /// The delivery's lease expired and another consumer may own it now;
    /// the caller MUST NOT assume its ack/hold/retry took effect.
    #[error("lease lost for delivery {0}")]
    LeaseLost(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error("message queue unavailable: {0}")]
    Unavailable(String),
    #[error("message queue error: {0}")]
    Backend(String),
}

impl Classify for MqError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Errors of the source-control adapter.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScmError {
    /// The revision, URI or commit is unknown to this queue's branch.
    #[error("not found: {0}")]
    NotFound(String),
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// Fetch failed, remote unreachable, repository locked: try again.
    #[error("source control unavailable: {0}")]
    Unavailable(String),
    #[error("source control error: {0}")]
    Backend(String),
}

impl Classify for ScmError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Errors of build runners.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RunnerError {
    #[error("build {0} not found")]
    NotFound(String),
    /// The CI refused the call (4xx other than 408/429): permanent.
    #[error("build runner rejected the call: {0}")]
    Rejected(String),
    /// The CI answered with a status this runner cannot map.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// 408, 429, 5xx on a status call, connection errors: try again.
    #[error("build runner unavailable: {0}")]
    Unavailable(String),
    /// Misconfigured runner (missing command, token…).
    #[error("build runner misconfigured: {0}")]
    Config(String),
}

impl Classify for RunnerError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Errors of the hook registry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HookError {
    #[error("{0} not found")]
    NotFound(String),
    /// The hook exists with a different contract.
    #[error("hook {0} exists with a different contract")]
    ContractConflict(String),
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for HookError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
}

/// Errors of the change feed's live stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FeedError {
    /// The subscriber fell behind the live buffer and missed events; it
    /// MUST reconnect and replay from its last sequence number.
    #[error("subscriber lagged behind the live buffer by {0} events")]
    Lagged(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}
