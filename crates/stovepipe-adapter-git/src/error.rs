//! Classification of git2 failures into [`ScmError`], done once, here.
//!
//! Unknown objects and refs are `NotFound`; ambiguous or malformed input is
//! `Invalid`; a held lock, a ref moved under our feet or a transport failure
//! is `Unavailable` (a later attempt may succeed); everything else is
//! `Backend`.

use git2::{ErrorClass, ErrorCode};
use std::fmt::Display;
use stovepipe_entity::InvalidValue;
use stovepipe_ports::ScmError;

/// An `Invalid` error naming the kind of value, the value (at most 120
/// characters of it) and what was expected.
pub(crate) fn invalid(kind: &'static str, value: &str, expected: impl Into<String>) -> ScmError {
    ScmError::Invalid(InvalidValue {
        kind,
        value: value.chars().take(120).collect(),
        expected: expected.into(),
    })
}

/// Classifies a git2 error; `context` says what we were doing.
pub(crate) fn git(context: impl Display, e: &git2::Error) -> ScmError {
    let message = format!("{context}: {}", e.message());
    match e.code() {
        ErrorCode::NotFound | ErrorCode::UnbornBranch => ScmError::NotFound(message),
        ErrorCode::Ambiguous | ErrorCode::InvalidSpec => ScmError::Invalid(InvalidValue {
            kind: "revision",
            value: context.to_string().chars().take(120).collect(),
            expected: e.message().to_owned(),
        }),
        // Another writer holds a lock file, or moved a ref between our read
        // and our conditional write: retrying re-reads and succeeds.
        ErrorCode::Locked | ErrorCode::Modified | ErrorCode::Exists => {
            ScmError::Unavailable(message)
        }
        _ if matches!(
            e.class(),
            ErrorClass::Net | ErrorClass::Ssh | ErrorClass::Http | ErrorClass::Ssl
        ) =>
        {
            ScmError::Unavailable(message)
        }
        _ => ScmError::Backend(message),
    }
}

/// A closure for `map_err` that classifies with a fixed context.
pub(crate) fn ctx<C: Display>(context: C) -> impl FnOnce(git2::Error) -> ScmError {
    move |e| git(context, &e)
}
