//! Turning source-control answers into runner errors, once.
//!
//! Runners ask the queue's `SourceControl` for commit ids and checkouts; a
//! failure there is classified here so a flaky fetch stays retryable and an
//! unknown commit is refused, never turned into a build.

use stovepipe_entity::Uri;
use stovepipe_ports::{RunnerError, ScmError, SourceControl};

pub(crate) fn runner_error(context: &str, err: ScmError) -> RunnerError {
    match err {
        ScmError::Unavailable(m) => RunnerError::Unavailable(format!("{context}: {m}")),
        ScmError::Invalid(v) => RunnerError::Invalid(v),
        ScmError::NotFound(m) => {
            RunnerError::Rejected(format!("{context}: unknown to source control: {m}"))
        }
        ScmError::Backend(m) => {
            RunnerError::Rejected(format!("{context}: source control error: {m}"))
        }
    }
}

/// The commit id (git sha) users know for `uri`.
pub(crate) async fn commit_of(scm: &dyn SourceControl, uri: &Uri) -> Result<String, RunnerError> {
    scm.change_info(uri)
        .await
        .map(|info| info.commit)
        .map_err(|e| runner_error(&format!("looking up commit {uri}"), e))
}

/// The commit id of the base, or `""` for a full build.
pub(crate) async fn base_commit_of(
    scm: &dyn SourceControl,
    base: Option<&Uri>,
) -> Result<String, RunnerError> {
    match base {
        Some(uri) => commit_of(scm, uri).await,
        None => Ok(String::new()),
    }
}
