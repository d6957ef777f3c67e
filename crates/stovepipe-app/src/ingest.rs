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
use stovepipe_ports::{EntityWrite, Outbox, OutgoingMessage, ScmError, StoreError, Stores};
use thiserror::Error;
use tracing::info;

use crate::deps::{Deps, QueueAttempts, update_queue_from};
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
        // Dedup: the queue's latest request when it is of this URI (a head
        // polled again, answered from the rows the pipeline keeps). The
        // pointer is at it already, so all it may still be owed is its
        // process hop (deduplicated).
        let (request, created) = match self.latest_of(&stores, &uri).await? {
            Some(latest) => {
                if latest.state == RequestState::Accepted {
                    self.deps.mq.publish(process_hop(&latest)).await?;
                }
                (latest, false)
            }
            None => self.mint_and_advance(&stores, queue, &uri).await?,
        };
        metrics::ingested(queue, created);
        if created {
            info!(queue = %queue, request = %request.id, uri = %uri, "request created");
        }
        Ok(IngestOutcome {
            request_id: request.id,
            uri,
            state: request.state,
            created,
        })
    }

    /// Ingest of a URI that is not the queue's latest request: the request
    /// indexed for it or a newly numbered one (a mint that lost the race to
    /// a concurrent one adopts the winner), its row ensured, the latest
    /// pointer moved to it when it is the newest, and its process hop.
    /// Returns the request and whether this call minted it.
    async fn mint_and_advance(
        &self,
        stores: &Stores,
        queue: &QueueName,
        uri: &Uri,
    ) -> Result<(Request, bool), IngestError> {
        let (request_id, created) = stores.request_uris.mint(uri).await?;
        let fresh = Request::accepted(
            request_id.clone(),
            queue.clone(),
            uri.clone(),
            Origin::Ingest,
            self.deps.now(),
        );
        let process = process_hop(&fresh);
        if created && self.create_with_latest(stores, &fresh, &process).await? {
            return Ok((fresh, true));
        }
        let request = self.ensure_request(stores, fresh).await?;
        let hop = (request.state == RequestState::Accepted).then_some(process);
        let rode = self
            .advance_latest(stores, &request_id, hop.as_ref())
            .await?;
        if let Some(hop) = hop
            && !rode
        {
            self.deps.mq.publish(hop).await?;
        }
        Ok((request, created))
    }

    /// The queue's latest request when it is of `uri`: the head polled
    /// again, the common case of a poller. Both rows are ones the pipeline
    /// keeps (it wrote them a moment ago), so this usually reads nothing
    /// from the store; and since a request's URI never changes and the
    /// pointer only moves forward, rows up to the cache's bound old answer
    /// rightly. `None` sends the URI to `mint_and_advance`, whose `mint`
    /// dedups any other URI (on Postgres one statement, with no read ahead
    /// of it: docs/decisions.md, "Ingest dedups the head on the queue's
    /// latest request") and whose write of the queue row reads that row
    /// again, since a write of it may have committed meanwhile
    /// (`record`'s).
    async fn latest_of(&self, stores: &Stores, uri: &Uri) -> Result<Option<Request>, IngestError> {
        let queue = stores.queues.get_passing_writes().await?;
        let Some(latest) = queue.and_then(|q| q.latest_request_id) else {
            return Ok(None);
        };
        let request = stores.requests.get(&latest).await?;
        Ok(request.filter(|r| &r.uri == uri))
    }

    /// A request this call just minted, in one write with the queue row's
    /// latest pointer moved to it (when it is the newest) and the
    /// `process` hop. Returns false, having written nothing, when the
    /// request's row exists already (a racing writer's).
    async fn create_with_latest(
        &self,
        stores: &Stores,
        request: &Request,
        hop: &OutgoingMessage,
    ) -> Result<bool, IngestError> {
        let known = self.queue_row(stores).await?;
        let mut attempts = QueueAttempts::with_known(stores, known);
        loop {
            let (mut queue, expected_version) = attempts.next().await?;
            let mut writes = vec![EntityWrite::CreateRequest(request.clone())];
            if queue
                .advance_latest(&request.id, request.created_at)
                .map_err(StageError::from)?
            {
                writes.push(EntityWrite::UpdateQueue {
                    queue,
                    expected_version,
                });
            }
            let outbox = Outbox::none()
                .emit(events::request_created(request), request.created_at)
                .publish(hop.clone());
            match stores.joint.write_all(writes, outbox).await {
                Ok(()) => return Ok(true),
                Err(StoreError::VersionMismatch {
                    entity: "queue", ..
                }) => {}
                Err(StoreError::AlreadyExists {
                    entity: "request", ..
                }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The stored request of an id the index holds; `fresh` (the request
    /// as ingest would create it) when the row is missing, which repairs an
    /// index entry written without its row.
    async fn ensure_request(
        &self,
        stores: &Stores,
        fresh: Request,
    ) -> Result<Request, IngestError> {
        if let Some(existing) = stores.requests.get(&fresh.id).await? {
            return Ok(existing);
        }
        let outbox = Outbox::none().emit(events::request_created(&fresh), fresh.created_at);
        match stores.requests.create(&fresh, outbox).await {
            Ok(()) => Ok(fresh),
            Err(StoreError::AlreadyExists { .. }) => {
                let id = &fresh.id;
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
        let known = self.queue_row(stores).await?;
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

    /// Get-or-creates the queue row; `None` when it was created meanwhile
    /// by another writer (the caller's attempts load it).
    async fn queue_row(&self, stores: &Stores) -> Result<Option<Queue>, IngestError> {
        if let Some(known) = stores.queues.get().await? {
            return Ok(Some(known));
        }
        let fresh = Queue::new(stores.queue.clone(), self.deps.now());
        match stores.queues.create(&fresh).await {
            Ok(()) => Ok(Some(fresh)),
            Err(StoreError::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The hand-over of `request` to `process`.
fn process_hop(request: &Request) -> OutgoingMessage {
    ProcessHop {
        request_id: request.id.clone(),
        queue: request.queue.clone(),
    }
    .message()
}
