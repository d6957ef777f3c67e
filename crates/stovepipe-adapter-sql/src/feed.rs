//! The change log and its live tail.
//!
//! Owns: appends (sequence numbers from the `change_log` key, strictly
//! increasing in commit order: SQLite has one writer, Postgres appends under
//! a transaction-scoped advisory lock), paging, and the live stream.
//!
//! The live stream is one in-process broadcast fed by [`FeedHub::catch_up`],
//! which reads the rows after the last one it broadcast, in `seq` order.
//! It runs after every local commit that appended changes (before the write
//! returns, so a writer's own events are already in every subscriber's
//! buffer when its call returns) and, on Postgres, whenever another
//! replica's commit is announced on LISTEN/NOTIFY. A subscriber that falls
//! behind its bounded buffer gets `FeedError::Lagged` once and the stream
//! ends. A subscriber may see a few events committed just before its
//! `subscribe` call but not yet broadcast; never a gap.
//!
//! Does not own: what a change means, or retention (nothing is deleted yet).

use crate::SqlBackend;
use crate::backend::{Shared, Tx, big, check_changes, limit, values};
use crate::error;
use crate::rows::change_event;
use async_trait::async_trait;
use futures::StreamExt;
use sea_orm::DbErr;
use stovepipe_entity::{ChangeEvent, NewChange};
use stovepipe_ports::{ChangeFeed, ChangeStream, FeedError, StoreError};
use tokio::sync::Mutex;
use tokio::sync::broadcast::{self, error::RecvError};

/// Rows read per round of a catch-up.
const CATCH_UP_PAGE: usize = 512;

pub(crate) struct FeedHub {
    tx: broadcast::Sender<ChangeEvent>,
    /// The highest seq broadcast so far; held while reading and sending, so
    /// concurrent catch-ups broadcast each row once, in order.
    last: Mutex<u64>,
}

impl FeedHub {
    pub(crate) fn new(buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self {
            tx,
            last: Mutex::new(0),
        }
    }

    /// Sets where the tail starts (the log's last seq when connecting).
    pub(crate) async fn start_at(&self, seq: u64) {
        let mut last = self.last.lock().await;
        *last = (*last).max(seq);
    }

    /// Broadcasts every committed row after the last one broadcast. A read
    /// error is logged and left for the next catch-up: the rows stay in the
    /// log, and the caller's write has already committed.
    pub(crate) async fn catch_up(&self, shared: &Shared) {
        let mut last = self.last.lock().await;
        loop {
            let rows = match read_after(shared, *last, CATCH_UP_PAGE).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: catch-up read failed");
                    return;
                }
            };
            let full = rows.len() == CATCH_UP_PAGE;
            for event in rows {
                *last = event.seq;
                // No subscriber is not an error: the log is the source of truth.
                let _ = self.tx.send(event);
            }
            if !full {
                return;
            }
        }
    }
}

async fn read_after(shared: &Shared, after: u64, n: usize) -> Result<Vec<ChangeEvent>, DbErr> {
    shared
        .query_all(
            "SELECT seq, queue, kind, subject, data, created_at FROM change_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            values![big(after), limit(n)],
        )
        .await?
        .iter()
        .map(change_event)
        .collect()
}

#[async_trait]
impl ChangeFeed for SqlBackend {
    async fn append(&self, changes: Vec<NewChange>) -> Result<Vec<ChangeEvent>, StoreError> {
        check_changes(&changes)?;
        let now = self.shared.clock.now();
        let run = async {
            let mut tx: Tx = self.shared.begin().await?;
            let events = tx.append(changes, now).await?;
            tx.commit().await?;
            Ok::<_, DbErr>(events)
        };
        run.await.map_err(error::store)
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        read_after(&self.shared, after, limit)
            .await
            .map_err(error::store)
    }

    async fn last_seq(&self) -> Result<u64, StoreError> {
        self.shared.last_seq().await.map_err(error::store)
    }

    async fn oldest_retained(&self) -> Result<Option<u64>, StoreError> {
        let row = self
            .shared
            .query_one("SELECT MIN(seq) AS seq FROM change_log", vec![])
            .await
            .map_err(error::store)?;
        let seq: Option<i64> = match row {
            Some(r) => r.try_get("", "seq").map_err(error::store)?,
            None => None,
        };
        Ok(seq.and_then(|s| u64::try_from(s).ok()))
    }

    fn subscribe(&self) -> ChangeStream {
        let rx = self.shared.feed.tx.subscribe();
        futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx: broadcast::Receiver<ChangeEvent> = rx?;
            match rx.recv().await {
                Ok(event) => Some((Ok(event), Some(rx))),
                // Yield Lagged once, then end: the subscriber replays from
                // its last seq with read_after.
                Err(RecvError::Lagged(n)) => Some((Err(FeedError::Lagged(n)), None)),
                Err(RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}
