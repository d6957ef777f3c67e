//! The change log and its live tail.
//!
//! Owns: sequence numbers (strictly increasing from 1, assigned under the
//! state lock so commit order is seq order), paging, and the live stream
//! with a bounded buffer that ends with `Lagged` instead of skipping.
//! Does not own: what a change means (the pipeline writes them) or
//! retention (the memory log keeps everything).

use super::{MemoryBackend, State};
use async_trait::async_trait;
use futures::StreamExt;
use std::sync::Arc;
use stovepipe_entity::{ChangeEvent, NewChange, Timestamp};
use stovepipe_ports::{ChangeFeed, ChangeStream, FeedError, StoreError};
use tokio::sync::broadcast::{self, error::RecvError};

impl State {
    pub(crate) fn append_changes(
        &mut self,
        changes: Vec<NewChange>,
        now: Timestamp,
    ) -> Vec<ChangeEvent> {
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let event = ChangeEvent {
                seq: self.log.len() as u64 + 1,
                queue: change.queue,
                kind: change.kind,
                subject: change.subject,
                data: change.data,
                created_at: now,
            };
            // No subscriber is not an error: the log is the source of truth.
            let _ = self.feed_tx.send(Arc::new(event.clone()));
            self.log.push(event.clone());
            out.push(event);
        }
        out
    }
}

#[async_trait]
impl ChangeFeed for MemoryBackend {
    async fn append(&self, changes: Vec<NewChange>) -> Result<Vec<ChangeEvent>, StoreError> {
        self.shared
            .write(|st, now| Ok(st.append_changes(changes, now)))
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        Ok(self.shared.read(|st| {
            // seq n lives at index n-1.
            let start = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(st.log.len());
            st.log[start..].iter().take(limit).cloned().collect()
        }))
    }

    async fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.shared.read(|st| st.log.len() as u64))
    }

    async fn removed_through(&self) -> Result<u64, StoreError> {
        // The memory log keeps everything.
        Ok(0)
    }

    fn subscribe(&self) -> ChangeStream {
        // Subscribing under the state lock: every event committed after this
        // call is sent after the receiver exists.
        let rx = self.shared.read(|st| st.feed_tx.subscribe());
        futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx: broadcast::Receiver<Arc<ChangeEvent>> = rx?;
            match rx.recv().await {
                Ok(event) => Some((Ok(event), Some(rx))),
                // Yield Lagged once, then end: the subscriber must replay
                // from its last seq with read_after.
                Err(RecvError::Lagged(n)) => Some((Err(FeedError::Lagged(n)), None)),
                Err(RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}
