//! The stage error: retryable or permanent, decided where the error was
//! produced (the ports classify their own errors; the stages classify
//! invariant violations as permanent and transient inconsistencies as
//! retryable). The runtime never matches on error strings.

use stovepipe_entity::{InvalidValue, TransitionError};
use stovepipe_ports::{Classify, HookError, MqError, RunnerError, ScmError, StoreError};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StageError {
    /// A later attempt may succeed (version conflicts, unavailable
    /// dependencies, a state another stage is about to write).
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help: dead-letter now.
    #[error("{0}")]
    Permanent(String),
}

impl StageError {
    pub fn retryable(msg: impl Into<String>) -> Self {
        Self::Retryable(msg.into())
    }

    pub fn permanent(msg: impl Into<String>) -> Self {
        Self::Permanent(msg.into())
    }

    /// Adds context while keeping the classification.
    #[must_use]
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            Self::Retryable(m) => Self::Retryable(format!("{what}: {m}")),
            Self::Permanent(m) => Self::Permanent(format!("{what}: {m}")),
        }
    }
}

impl Classify for StageError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// Port errors keep the classification their adapter gave them.
fn classified<E: Classify + std::fmt::Display>(e: &E) -> StageError {
    if e.is_retryable() {
        StageError::Retryable(e.to_string())
    } else {
        StageError::Permanent(e.to_string())
    }
}

macro_rules! from_classified {
    ($($t:ty),*) => {$(
        impl From<$t> for StageError {
            fn from(e: $t) -> Self {
                classified(&e)
            }
        }
    )*};
}
from_classified!(StoreError, MqError, ScmError, RunnerError, HookError);

/// Gives an application service's error (one with `Unavailable(String)`
/// and `Internal(String)` variants) the conversions from `StageError` and
/// from port errors, so a service never re-classifies an error: retryable
/// becomes `Unavailable` (503), permanent becomes `Internal` (500).
macro_rules! service_error {
    ($target:ty) => {
        impl From<$crate::error::StageError> for $target {
            fn from(e: $crate::error::StageError) -> Self {
                match e {
                    $crate::error::StageError::Retryable(m) => Self::Unavailable(m),
                    $crate::error::StageError::Permanent(m) => Self::Internal(m),
                }
            }
        }
        impl From<stovepipe_ports::StoreError> for $target {
            fn from(e: stovepipe_ports::StoreError) -> Self {
                Self::from($crate::error::StageError::from(e))
            }
        }
        impl From<stovepipe_ports::MqError> for $target {
            fn from(e: stovepipe_ports::MqError) -> Self {
                Self::from($crate::error::StageError::from(e))
            }
        }
    };
}
pub(crate) use service_error;

/// A value that does not parse where the pipeline wrote it is an invariant
/// violation: permanent.
impl From<InvalidValue> for StageError {
    fn from(e: InvalidValue) -> Self {
        Self::Permanent(e.to_string())
    }
}

/// An illegal transition attempted by a stage is an invariant violation.
impl From<TransitionError> for StageError {
    fn from(e: TransitionError) -> Self {
        Self::Permanent(format!("invariant: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_classification_is_kept() {
        let conflict = StoreError::VersionMismatch {
            entity: "request",
            key: "request/q/1".into(),
            expected: 3,
        };
        assert!(StageError::from(conflict).is_retryable());
        assert!(StageError::from(StoreError::Unavailable("pool".into())).is_retryable());
        assert!(!StageError::from(StoreError::Backend("bad sql".into())).is_retryable());
        assert!(StageError::from(RunnerError::Unavailable("503".into())).is_retryable());
        assert!(!StageError::from(RunnerError::Rejected("401".into())).is_retryable());
        assert!(!StageError::from(ScmError::NotFound("abc".into())).is_retryable());
        let e = StageError::retryable("x").context("process");
        assert_eq!(e, StageError::Retryable("process: x".into()));
    }
}
