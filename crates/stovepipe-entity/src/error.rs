//! The two error kinds of the domain: a value that does not parse, and a
//! state transition that is not allowed.

use thiserror::Error;

/// A value failed validation. Names the kind of value, the offending input
/// (truncated) and what was expected, so API errors can quote it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {kind} {value:?}: {expected}")]
pub struct InvalidValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

impl InvalidValue {
    pub(crate) fn new(kind: &'static str, value: &str, expected: impl Into<String>) -> Self {
        // Quote at most 120 characters of hostile input.
        let value: String = value.chars().take(120).collect();
        Self {
            kind,
            value,
            expected: expected.into(),
        }
    }
}

/// An entity refused a state change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{entity} {id}: cannot {action} from state {from}")]
pub struct TransitionError {
    pub entity: &'static str,
    pub id: String,
    pub action: &'static str,
    pub from: String,
}
