//! Paginated history: a resumable newest-first walk and its opaque cursor.
//!
//! Order: commits reachable from the head, newest commit time first (ties
//! broken by commit id), each exactly once; on ordinary histories this is
//! `git rev-list <head>`'s order.
//!
//! Cursor: `<head-sha>.<offset>`, the head the first page started from and
//! the number of commits already returned. Pinning the head makes paging
//! stable: if the branch moves (or is force-pushed) while a reader pages,
//! the reader goes on walking the history as it was at its first page, sees
//! every commit of it exactly once and none of the new ones; a new first page
//! sees the new head. A cursor whose head commit no longer exists (garbage
//! collected after a rewrite) is `NotFound`.
//!
//! Resuming by offset would cost a walk of `offset` commits per page, so the
//! walk state after each page is kept in a small cache keyed by the cursor;
//! the next page continues where the last one stopped. A cache miss (another
//! process, eviction) recomputes the same walk, so answers never depend on it.

use crate::error::{ctx, invalid};
use git2::{Oid, Repository};
use std::collections::{BinaryHeap, HashSet, VecDeque};
use stovepipe_ports::ScmError;

/// How many suspended walks to keep (concurrent readers paging).
const CACHED_WALKS: usize = 8;

/// A parsed history cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) head: Oid,
    pub(crate) offset: usize,
}

impl Cursor {
    pub(crate) fn parse(text: &str) -> Result<Self, ScmError> {
        let bad = || invalid("history cursor", text, "a cursor returned by history()");
        let (head, offset) = text.split_once('.').ok_or_else(bad)?;
        if !crate::uri::is_full_sha(head)
            || offset.is_empty()
            || !offset.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        Ok(Self {
            head: Oid::from_str(head).map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
        })
    }

    pub(crate) fn render(self) -> String {
        format!("{}.{}", self.head, self.offset)
    }
}

/// A newest-first walk that can be suspended and resumed: it owns all its
/// state, unlike git2's `Revwalk`, which borrows the repository.
#[derive(Debug)]
pub(crate) struct Walk {
    /// Commits to emit, newest first: (commit time, id).
    pending: BinaryHeap<(i64, Oid)>,
    /// Every commit ever queued, so merges do not emit a commit twice.
    queued: HashSet<Oid>,
    emitted: usize,
}

impl Walk {
    pub(crate) fn new(repo: &Repository, head: Oid) -> Result<Self, ScmError> {
        let commit = repo
            .find_commit(head)
            .map_err(ctx(format_args!("history head {head}")))?;
        let mut walk = Self {
            pending: BinaryHeap::new(),
            queued: HashSet::new(),
            emitted: 0,
        };
        walk.queued.insert(head);
        walk.pending.push((commit.time().seconds(), head));
        Ok(walk)
    }

    /// The next commit, or `None` at the end of history.
    pub(crate) fn next(&mut self, repo: &Repository) -> Result<Option<Oid>, ScmError> {
        let Some((_, oid)) = self.pending.pop() else {
            return Ok(None);
        };
        let commit = repo
            .find_commit(oid)
            .map_err(ctx(format_args!("commit {oid}")))?;
        for parent in commit.parent_ids() {
            if self.queued.insert(parent) {
                let time = repo
                    .find_commit(parent)
                    .map_err(ctx(format_args!("commit {parent}")))?
                    .time()
                    .seconds();
                self.pending.push((time, parent));
            }
        }
        self.emitted += 1;
        Ok(Some(oid))
    }

    pub(crate) fn is_done(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Suspended walks keyed by the cursor that resumes them.
#[derive(Debug, Default)]
pub(crate) struct WalkCache {
    walks: VecDeque<(Cursor, Walk)>,
}

impl WalkCache {
    /// The walk positioned at `cursor`: from the cache, or recomputed.
    pub(crate) fn resume(&mut self, repo: &Repository, cursor: Cursor) -> Result<Walk, ScmError> {
        if let Some(i) = self.walks.iter().position(|(c, _)| *c == cursor)
            && let Some((_, walk)) = self.walks.remove(i)
        {
            return Ok(walk);
        }
        let mut walk = match Walk::new(repo, cursor.head) {
            Err(ScmError::NotFound(m)) => {
                return Err(ScmError::NotFound(format!(
                    "history cursor {}: {m}",
                    cursor.render()
                )));
            }
            other => other?,
        };
        while walk.emitted < cursor.offset {
            if walk.next(repo)?.is_none() {
                return Err(invalid(
                    "history cursor",
                    &cursor.render(),
                    "an offset within the history of its head",
                ));
            }
        }
        Ok(walk)
    }

    /// Keeps `walk` to serve the page after `cursor`.
    pub(crate) fn suspend(&mut self, cursor: Cursor, walk: Walk) {
        if self.walks.len() >= CACHED_WALKS {
            self.walks.pop_front();
        }
        self.walks.push_back((cursor, walk));
    }

    pub(crate) fn emitted(walk: &Walk) -> usize {
        walk.emitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            head: Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap(),
            offset: 42,
        };
        assert_eq!(Cursor::parse(&c.render()).unwrap(), c);
        for bad in [
            "",
            "x",
            "abc.1",
            "0123456789abcdef0123456789abcdef01234567.",
            ".5",
            "0123456789abcdef0123456789abcdef01234567.-1",
            "0123456789abcdef0123456789abcdef01234567.99999999999999999999999",
        ] {
            assert!(
                matches!(Cursor::parse(bad), Err(ScmError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
