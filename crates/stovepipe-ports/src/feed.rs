//! The change feed: the append-only change log, read in pages and tailed
//! live (SSE, the hook dispatcher).

use crate::error::{FeedError, StoreError};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;
use stovepipe_entity::{ChangeEvent, NewChange};

/// A live tail of the change log. Each event is shared by every
/// subscriber (one `Arc`, not a copy each): a dashboard more costs a
/// pointer per event, not a copy of its data.
pub type ChangeStream = BoxStream<'static, Result<Arc<ChangeEvent>, FeedError>>;

/// Contract (MUST):
/// - sequence numbers are positive and strictly increasing in commit order,
///   not necessarily contiguous (Postgres leaves gaps between transactions);
///   `read_after(s, n)` returns at most `n` events with `seq > s`, ascending,
///   and once it returned an event it never returns a lower one after it
///   (a cursor never skips);
/// - `subscribe` yields every event committed after the call, in order,
///   until the subscriber falls behind its bounded buffer, when it yields
///   `FeedError::Lagged` once and ends (never silently skips);
/// - `append` commits the changes (for changes not tied to a store write).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    async fn append(&self, changes: Vec<NewChange>) -> Result<Vec<ChangeEvent>, StoreError>;
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError>;
    /// The highest sequence number committed so far (0 when empty).
    async fn last_seq(&self) -> Result<u64, StoreError>;
    /// Every event numbered up to this was removed by retention (0: none
    /// was). A reader whose cursor is below it missed events: the SSE
    /// stream tells it to resync. With gaps between numbers, the oldest
    /// event still retained cannot tell that.
    async fn removed_through(&self) -> Result<u64, StoreError>;
    fn subscribe(&self) -> ChangeStream;
}
