//! Ingest: the synchronous entry point. A poller, webhook or API caller says
//! "queue Q moved"; ingest resolves the head, dedups on `(queue, uri)`, mints
//! or reuses a request, advances the queue's latest pointer and publishes
//! `process`.
//!
//! Correct on a key/value backend without transactions: every step is
//! idempotent and a crash between two of them is repaired by the next
//! ingest of the same head (or by the reconcile loop).

use serde::Serialize;
use std::sync::Arc;
use stovepipe_entity::{
    InvalidValue, Origin, Queue, QueueName, Request, RequestId, RequestState, Uri,
};
use stovepipe_ports::{Outbox, OutgoingMessage, ScmError, StoreError, Stores};
use thiserror::Error;
use tracing::info;

use crate::deps::{Deps, update_queue_from};
use crate::error::StageError;
use crate::events::{self, OutboxExt as _};
use crate::hops::ProcessHop;
use crate::metrics;

/// What ingest answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestOutcome {
    pub request_id: RequestId,
    pub uri: Uri,
    pub state: RequestState,
    /// True when this call minted the request; false when deduplicated.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IngestError {
    /// The queue name does not parse (400).
    #[error(transparent)]
    InvalidQueue(InvalidValue),
    /// No such queue is configured (404).
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    /// The revision does not resolve on the queue's branch (400).
    #[error("unknown revision {rev:?} for queue {queue}: {detail}")]
    UnknownRevision {
        queue: String,
        rev: String,
        detail: String,
    },
    /// A dependency is unavailable; the caller may retry (503).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error("ingest failed: {0}")]
    Internal(String),
}

crate::error::service_error!(IngestError);

#[derive(Debug, Clone)]
pub struct IngestService {
    deps: Arc<Deps>,
}

impl IngestService {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Ingests the head of `queue`, or `rev` (a commit, ref or URI) when
    /// given.
    pub async fn ingest(
        &self,
        queue: &str,
        rev: Option<&str>,
    ) -> Result<IngestOutcome, IngestError> {
        let queue_name = QueueName::new(queue).map_err(IngestError::InvalidQueue)?;
        let config = self
            .deps
            .configs
            .get(&queue_name)
            .await?
            .ok_or_else(|| IngestError::UnknownQueue(queue.to_owned()))?;
        let scm = self.deps.source_control(&config).await?;
        let resolved = match rev {
            Some(rev) => scm.resolve(rev).await,
            None => scm.latest().await,
        };
        let uri = resolved.map_err(|e| match e {
            ScmError::NotFound(detail)
            | ScmError::Invalid(InvalidValue {
                expected: detail, ..
            }) => IngestError::UnknownRevision {
                queue: queue.to_owned(),
                rev: rev.unwrap_or("HEAD").to_owned(),
                detail,
            },
            other => IngestError::from(StageError::from(other)),
        })?;
        self.ingest_uri(&queue_name, uri).await
    }

    /// Ingests a resolved URI of `queue` (steps 3–7 of ingest).
    pub async fn ingest_uri(
        &self,
        queue: &QueueName,
        uri: Uri,
    ) -> Result<IngestOutcome, IngestError> {
        let stores = self.deps.stores(queue);
        // Dedup: the request indexed for the URI, or a newly numbered one
        // (a mint that lost the race to a concurrent one adopts the winner).
        let (request_id, created) = stores.request_uris.mint(&uri).await?;
        let request = self
            .ensure_request(&stores, &request_id, &uri, created)
            .await?;
        let hop = (request.state == RequestState::Accepted).then(|| {
            ProcessHop {
                request_id: request_id.clone(),
                queue: queue.clone(),
            }
            .message()
        });
        let rode = self
            .advance_latest(&stores, &request_id, hop.as_ref())
            .await?;
        if let Some(hop) = hop
            && !rode
        {
            self.deps.mq.publish(hop).await?;
        }
        metrics::ingested(queue, created);
        if created {
            info!(queue = %queue, request = %request_id, uri = %uri, "request created");
        }
        Ok(IngestOutcome {
            request_id,
            uri,
            state: request.state,
            created,
        })
    }

    /// Makes sure the request row exists; this also repairs an index entry
    /// written without its row. `minted`: this call just indexed the id, so
    /// no row can exist yet and none is looked for (a racing writer still
    /// shows up as `AlreadyExists`).
    async fn ensure_request(
        &self,
        stores: &Stores,
        id: &RequestId,
        uri: &Uri,
        minted: bool,
    ) -> Result<Request, IngestError> {
        if !minted && let Some(existing) = stores.requests.get(id).await? {
            return Ok(existing);
        }
        let request = Request::accepted(
            id.clone(),
            stores.queue.clone(),
            uri.clone(),
            Origin::Ingest,
            self.deps.now(),
        );
        let outbox = Outbox::none().emit(events::request_created(&request), request.created_at);
        match stores.requests.create(&request, outbox).await {
            Ok(()) => Ok(request),
            Err(StoreError::AlreadyExists { .. }) => {
                stores.requests.get(id).await?.ok_or_else(|| {
                    IngestError::Unavailable(format!("request {id} exists but cannot be read"))
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Get-or-creates the queue row and moves its latest pointer forward,
    /// with `hop` (the `process` hop, if the request still needs one) in the
    /// same write. Returns whether the hop rode in it; when the pointer did
    /// not move there was no write, and the caller publishes the hop itself.
    async fn advance_latest(
        &self,
        stores: &Stores,
        id: &RequestId,
        hop: Option<&OutgoingMessage>,
    ) -> Result<bool, IngestError> {
        let now = self.deps.now();
        let mut known = stores.queues.get().await?;
        if known.is_none() {
            let fresh = Queue::new(stores.queue.clone(), now);
            match stores.queues.create(&fresh).await {
                Ok(()) => known = Some(fresh),
                // Created meanwhile: the loop below loads it.
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (rode, _) = update_queue_from(stores, known, |q| {
            if !q.advance_latest(id, now)? {
                return Ok((false, None));
            }
            let outbox = hop.map_or_else(Outbox::none, |m| Outbox::none().publish(m.clone()));
            Ok((hop.is_some(), Some(outbox)))
        })
        .await?;
        Ok(rode)
    }
}
