//! Source control: the only place that mints and interprets URIs.

use crate::error::ScmError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use stovepipe_entity::{QueueConfig, Timestamp, Uri};

/// What a reader wants to know about one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInfo {
    pub uri: Uri,
    /// The commit id as users know it (a git sha).
    pub commit: String,
    pub author: String,
    pub title: String,
    /// Commit time; always > 0.
    pub created_at: Timestamp,
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub items: Vec<ChangeInfo>,
    /// Opaque; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromoteOutcome {
    /// The ref now points at the commit.
    Moved,
    /// The ref already pointed there.
    AlreadyThere,
    /// The queue has no promotion ref configured.
    NotConfigured,
}

/// One queue's view of a repository branch.
///
/// Contract (MUST):
/// - `latest` is the branch head's URI;
/// - `resolve` accepts a full or abbreviated commit id, a ref name, or a URI
///   minted for this queue, of a commit on the branch, and answers
///   `NotFound` otherwise (a commit a force-push dropped is not found);
/// - `is_ancestor(a, d)` is true when `a` is `d` or an ancestor of it;
///   `NotFound` when either is unknown;
/// - `history(cursor, limit)` walks the branch newest first; following
///   `next_cursor` visits every commit exactly once; a cursor that does not
///   parse is `Invalid`;
/// - `history_between(base, head)` lists commits reachable from `head` and
///   not from `base` (all of them without base), newest first;
/// - `change_info` of an unknown URI is `NotFound`; `created_at` > 0;
/// - `resolve_info(rev)` is `resolve(rev)` followed by `change_info` of
///   the URI it gives: the same answer, or the first of their errors;
/// - `changed_paths(base, head)` lists paths changed between the two
///   (every path of `head` without base);
/// - `promote(uri)` moves the configured promotion ref (idempotent);
///   `NotFound` when the commit is no longer on the branch.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SourceControl: Send + Sync {
    async fn latest(&self) -> Result<Uri, ScmError>;
    async fn resolve(&self, rev: &str) -> Result<Uri, ScmError>;
    async fn is_ancestor(&self, ancestor: &Uri, descendant: &Uri) -> Result<bool, ScmError>;
    async fn history(&self, cursor: Option<String>, limit: usize) -> Result<HistoryPage, ScmError>;
    async fn history_between(&self, base: Option<Uri>, head: &Uri) -> Result<Vec<Uri>, ScmError>;
    async fn change_info(&self, uri: &Uri) -> Result<ChangeInfo, ScmError>;
    /// A revision's details in one call (what a greenness read asks). The
    /// default makes the two calls; an adapter with a costly hand-off per
    /// call (git's blocking pool) answers it with one.
    async fn resolve_info(&self, rev: &str) -> Result<ChangeInfo, ScmError> {
        let uri = self.resolve(rev).await?;
        self.change_info(&uri).await
    }
    async fn changed_paths(&self, base: Option<Uri>, head: &Uri) -> Result<Vec<String>, ScmError>;
    async fn promote(&self, uri: &Uri) -> Result<PromoteOutcome, ScmError>;
    /// Moves an arbitrary ref (per-project promotion refs).
    async fn promote_to(&self, reference: &str, uri: &Uri) -> Result<PromoteOutcome, ScmError>;
    /// A clean working tree of the commit, for runners that build locally.
    /// The directory is reused across builds of the same queue (one per
    /// concurrent slot) and safe under concurrent builds of different queues.
    /// `NotFound` for an unknown URI.
    async fn checkout(&self, uri: &Uri, slot: u32) -> Result<PathBuf, ScmError>;
}

/// Builds the `SourceControl` of a queue from its configuration.
///
/// Contract (MUST): `Invalid` for a configuration it cannot serve (a missing
/// repository, an unknown branch), with a message naming the bad value.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SourceControlFactory: Send + Sync {
    async fn for_queue(&self, config: &QueueConfig) -> Result<Arc<dyn SourceControl>, ScmError>;
}
