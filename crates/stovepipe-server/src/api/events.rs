//! The change log over HTTP: JSON pages (`/v1/changes`) and Server-Sent
//! Events (`/v1/events`).
//!
//! SSE delivers each event exactly once and in order: subscribe to the live
//! feed first, replay the log after the client's cursor, then drain the live
//! buffer, dropping what replay already sent (by `seq`). A client too slow
//! for the live buffer is disconnected (the feed reports `Lagged`); it
//! reconnects with `Last-Event-ID` and replays. A cursor older than the
//! retained log gets a `resync` event first.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use poem::web::Data;
use poem::web::sse::Event;
use poem_openapi::OpenApi;
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::types::ToJSON;
use stovepipe_ports::{ChangeFeed, ChangeStream};

use super::problem::ApiError;
use super::views::{ChangePage, ChangeView};
use super::{ApiTags, AppState, BearerAuth};
use crate::auth::Scope;

/// Events replayed per log read.
const REPLAY_PAGE: usize = 500;

#[derive(Debug)]
pub struct EventsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Events")]
impl EventsApi {
    /// The change log as JSON pages, oldest first.
    #[oai(path = "/changes", method = "get", operation_id = "listChanges")]
    async fn changes(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// Return changes with `seq` greater than this.
        after: Query<Option<u64>>,
        /// Page size (1..=1000, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
    ) -> Result<Json<ChangePage>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let limit = match limit.0.unwrap_or(100) {
            n @ 1..=1000 => n as usize,
            n => {
                return Err(ApiError::bad_request(format!(
                    "limit {n}: expected 1..=1000"
                )));
            }
        };
        let after = after.0.unwrap_or(0);
        let feed = state.wired.backend.feed();
        let items = feed
            .read_after(after, limit)
            .await
            .map_err(ApiError::internal)?;
        let last_seq = items.last().map_or(after, |c| c.seq);
        Ok(Json(ChangePage {
            items: items.iter().map(Into::into).collect(),
            last_seq,
        }))
    }

    /// Live events (Server-Sent Events): `id: <seq>`, `event: <type>`,
    /// `data: <json>`. Resume with `Last-Event-ID` or `?after=`.
    #[oai(path = "/events", method = "get", operation_id = "streamEvents")]
    async fn events(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        after: Query<Option<u64>>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<String>>,
    ) -> Result<EventStream<BoxStream<'static, ChangeView>>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let last_event_id = last_event_id.0.filter(|id| !id.trim().is_empty());
        let after = match (last_event_id, after.0) {
            (Some(id), _) => id.trim().parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("Last-Event-ID {id:?}: expected a sequence number"))
            })?,
            (None, Some(a)) => a,
            (None, None) => state
                .wired
                .backend
                .feed()
                .last_seq()
                .await
                .map_err(ApiError::internal)?,
        };
        let stream = change_stream(state.wired.backend.feed(), after).await?;
        Ok(EventStream::new(stream)
            .keep_alive(Duration::from_secs(15))
            .to_event(to_event))
    }
}

#[allow(clippy::needless_pass_by_value)] // poem's to_event hands items over by value
fn to_event(item: ChangeView) -> Event {
    // Kinds are a fixed vocabulary; still, never let a newline or colon
    // reach the wire's `event:` field.
    let name: String = item
        .kind
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    Event::message(item.to_json_string())
        .event_type(name)
        .id(item.seq.to_string())
}

/// Tells a client whose cursor is older than the retained log that the
/// events up to `removed` are gone; its id is where the replay resumes.
fn resync_event(removed: u64) -> ChangeView {
    ChangeView {
        seq: removed,
        queue: None,
        kind: "resync".into(),
        subject: String::new(),
        data: serde_json::json!({ "removed_through": removed }),
        created_at: String::new(),
    }
}

enum Phase {
    Replay,
    Live,
}

struct Cursor {
    feed: Arc<dyn ChangeFeed>,
    live: ChangeStream,
    last: u64,
    phase: Phase,
}

/// Subscribe, then replay after `after`, then drain the live feed.
async fn change_stream(
    feed: Arc<dyn ChangeFeed>,
    after: u64,
) -> Result<BoxStream<'static, ChangeView>, ApiError> {
    let live = feed.subscribe();
    let removed = feed.removed_through().await.map_err(ApiError::internal)?;
    let resync = (removed > after).then(|| resync_event(removed));
    let cursor = Cursor {
        feed,
        live,
        last: after,
        phase: Phase::Replay,
    };
    let changes = stream::unfold(cursor, |mut c| async move {
        loop {
            match c.phase {
                Phase::Replay => match c.feed.read_after(c.last, REPLAY_PAGE).await {
                    Ok(page) if page.is_empty() => c.phase = Phase::Live,
                    Ok(page) => {
                        c.last = page.last().map_or(c.last, |e| e.seq);
                        let items: Vec<ChangeView> = page.iter().map(Into::into).collect();
                        return Some((items, c));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream: replay failed; closing");
                        return None;
                    }
                },
                Phase::Live => match c.live.next().await {
                    Some(Ok(ev)) if ev.seq > c.last => {
                        c.last = ev.seq;
                        return Some((vec![ev.as_ref().into()], c));
                    }
                    Some(Ok(_)) => {}
                    // Lagged (or the feed ended): disconnect; the client
                    // resumes from its last id and replays.
                    Some(Err(_)) | None => return None,
                },
            }
        }
    })
    .flat_map(stream::iter);
    Ok(stream::iter(resync).chain(changes).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use stovepipe_entity::{ChangeEvent, ChangeKind, NewChange, Timestamp};
    use stovepipe_ports::StoreError;

    /// A log whose events up to `removed` were removed by retention, with
    /// gaps between the numbers it kept, and no live events.
    struct Retained {
        removed: u64,
        kept: Vec<u64>,
    }

    #[async_trait]
    impl ChangeFeed for Retained {
        async fn append(&self, _: Vec<NewChange>) -> Result<Vec<ChangeEvent>, StoreError> {
            unreachable!("the stream only reads")
        }
        async fn read_after(
            &self,
            after: u64,
            limit: usize,
        ) -> Result<Vec<ChangeEvent>, StoreError> {
            Ok(self
                .kept
                .iter()
                .filter(|s| **s > after)
                .take(limit)
                .map(|&seq| ChangeEvent {
                    seq,
                    queue: None,
                    kind: ChangeKind::RequestChanged,
                    subject: format!("s{seq}"),
                    data: serde_json::json!({}),
                    created_at: Timestamp(0),
                })
                .collect())
        }
        async fn last_seq(&self) -> Result<u64, StoreError> {
            Ok(self.kept.last().copied().unwrap_or(0))
        }
        async fn removed_through(&self) -> Result<u64, StoreError> {
            Ok(self.removed)
        }
        fn subscribe(&self) -> ChangeStream {
            stream::empty().boxed()
        }
    }

    async fn streamed(after: u64) -> Vec<(u64, String)> {
        let feed = Arc::new(Retained {
            removed: 20,
            kept: vec![30, 31, 50],
        });
        change_stream(feed, after)
            .await
            .unwrap()
            .map(|v| (v.seq, v.kind))
            .collect()
            .await
    }

    /// A cursor below what retention removed gets `resync` first, naming
    /// where the replay resumes; a cursor at it or above, or in a gap
    /// between numbers, does not.
    #[tokio::test]
    async fn only_a_cursor_below_the_removed_events_gets_resync() {
        let kept = |seqs: &[u64]| -> Vec<(u64, String)> {
            seqs.iter()
                .map(|s| (*s, "request.changed".to_owned()))
                .collect()
        };
        let mut resync = vec![(20, "resync".to_owned())];
        resync.extend(kept(&[30, 31, 50]));
        assert_eq!(streamed(0).await, resync);
        assert_eq!(streamed(19).await, resync);
        assert_eq!(streamed(20).await, kept(&[30, 31, 50]));
        assert_eq!(streamed(25).await, kept(&[30, 31, 50]), "a cursor in a gap");
        assert_eq!(streamed(31).await, kept(&[50]));
    }
}
