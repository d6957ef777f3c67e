//! The read side: what users and deploy gates ask.
//!
//! Owns the rule that turns stored knowledge into a commit status:
//!
//! | stored | status |
//! |---|---|
//! | a green fact | `green` |
//! | a non-green fact | `broken` (with its degree) |
//! | request accepted / processing, or a verdict not yet recorded | `pending` |
//! | request superseded | `skipped` (never validated, never red) |
//! | request failed closed or cancelled | `error` (never red) |
//! | no request | `not_validated` |
//!
//! Nothing but a green fact is ever green.
//!
//! A fact is created once and never changes, so a greenness read keeps the
//! facts it found ([`RecordedFacts`], bounded in count) and answers the
//! next read of that commit without the store. Everything that changes, a
//! request and the absence of a fact, is read from the store on every
//! call. (Queue configurations come from `Deps::configs`, which the server
//! wires through [`CachedQueueConfigs`](crate::CachedQueueConfigs).)

use serde::Serialize;
use std::sync::Arc;
use stovepipe_entity::{
    Bookmark, Build, Degree, Fact, FactKey, InvalidValue, ProjectName, Queue, QueueConfig,
    QueueName, Request, RequestId, RequestState, Timestamp, Uri,
};
use stovepipe_ports::{ChangeInfo, Classify, CommitRecord, ScmError, SourceControl};
use thiserror::Error;

use crate::cache::SettledCache;
use crate::deps::Deps;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitStatus {
    Green,
    Broken,
    Pending,
    Skipped,
    Error,
    NotValidated,
}

impl CommitStatus {
    /// The status of a commit from its request (if any) and its fact for the
    /// scope asked about (if any).
    pub fn of(request: Option<&Request>, fact: Option<&Fact>) -> Self {
        if let Some(f) = fact {
            return if f.is_green() {
                Self::Green
            } else {
                Self::Broken
            };
        }
        match request {
            None => Self::NotValidated,
            Some(r) => match r.state {
                RequestState::Superseded => Self::Skipped,
                RequestState::Cancelled => Self::Error,
                RequestState::Failed if r.failed_closed => Self::Error,
                RequestState::Accepted
                | RequestState::Processing
                | RequestState::Succeeded
                | RequestState::Failed => Self::Pending,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Green => "green",
            Self::Broken => "broken",
            Self::Pending => "pending",
            Self::Skipped => "skipped",
            Self::Error => "error",
            Self::NotValidated => "not_validated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    #[error(transparent)]
    InvalidQueue(InvalidValue),
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("query failed: {0}")]
    Internal(String),
}

crate::error::service_error!(QueryError);

fn scm_error(e: ScmError) -> QueryError {
    match e {
        ScmError::NotFound(m) => QueryError::NotFound(m),
        ScmError::Invalid(v) => QueryError::BadRequest(v.to_string()),
        other if other.is_retryable() => QueryError::Unavailable(other.to_string()),
        other => QueryError::Internal(other.to_string()),
    }
}

/// A last-green bookmark with the commit id users know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastGreenView {
    pub uri: Uri,
    pub commit: String,
    pub request_id: RequestId,
    pub recorded_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectStatus {
    pub project: ProjectName,
    pub last_green: Option<LastGreenView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStatus {
    pub name: QueueName,
    pub last_green: Option<LastGreenView>,
    pub in_flight: usize,
    pub in_flight_requests: Vec<RequestId>,
    pub latest_request_id: Option<RequestId>,
    pub projects: Vec<ProjectStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectDegree {
    pub project: ProjectName,
    pub degree: Degree,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitView {
    pub uri: Uri,
    pub commit: String,
    pub title: String,
    pub author: String,
    pub created_at: Timestamp,
    pub status: CommitStatus,
    pub degree: Option<Degree>,
    pub request_id: Option<RequestId>,
    pub projects: Vec<ProjectDegree>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitPage {
    pub items: Vec<CommitView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GreennessView {
    pub uri: Uri,
    pub commit: String,
    pub project: ProjectName,
    pub status: CommitStatus,
    pub degree: Option<Degree>,
    pub request_id: Option<RequestId>,
    pub recorded_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    pub request: Request,
    /// The commit id of the request's URI (empty when it left the repository).
    pub commit: String,
    /// Empty in listings; filled for a single request.
    pub builds: Vec<Build>,
    /// Empty in listings; filled for a single request.
    pub facts: Vec<Fact>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestPage {
    pub items: Vec<RequestView>,
    pub next_cursor: Option<String>,
}

/// Longest page a caller may ask for.
pub const MAX_PAGE: usize = 200;

/// Entries in one generation of [`RecordedFacts`]: with two generations,
/// at most 8 192 facts are kept, about 5 MB (a kept fact and its key:
/// about 600 bytes, estimated from their fields with a typical URI).
/// Deploy gates and dashboards read the recent commits of their queues,
/// far fewer.
pub const RECORDED_FACTS_CAPACITY: usize = 4_096;

/// Facts greenness reads have found, shared by every [`QueryService`] of a
/// pipeline. A fact is never updated or deleted (first writer wins), so a
/// kept one is what the store would return, on this instance or any other.
#[derive(Debug)]
pub struct RecordedFacts(SettledCache<FactKey, Fact>);

impl RecordedFacts {
    pub fn new(capacity: usize) -> Self {
        Self(SettledCache::new(capacity))
    }
}

impl Default for RecordedFacts {
    fn default() -> Self {
        Self::new(RECORDED_FACTS_CAPACITY)
    }
}

#[derive(Debug, Clone)]
pub struct QueryService {
    deps: Arc<Deps>,
    facts: Arc<RecordedFacts>,
}

impl QueryService {
    pub fn new(deps: Arc<Deps>, facts: Arc<RecordedFacts>) -> Self {
        Self { deps, facts }
    }

    async fn config(&self, queue: &str) -> Result<QueueConfig, QueryError> {
        let name = QueueName::new(queue).map_err(QueryError::InvalidQueue)?;
        self.deps
            .configs
            .get(&name)
            .await?
            .ok_or_else(|| QueryError::UnknownQueue(queue.to_owned()))
    }

    async fn scm(&self, config: &QueueConfig) -> Result<Arc<dyn SourceControl>, QueryError> {
        self.deps.scm.for_queue(config).await.map_err(scm_error)
    }

    async fn view(
        &self,
        scm: &dyn SourceControl,
        mark: &Bookmark,
    ) -> Result<LastGreenView, QueryError> {
        let commit = commit_id(scm, &mark.uri).await?;
        Ok(LastGreenView {
            uri: mark.uri.clone(),
            commit,
            request_id: mark.request_id.clone(),
            recorded_at: mark.recorded_at,
        })
    }

    /// Every configured queue's status, by name.
    pub async fn queues(&self) -> Result<Vec<QueueStatus>, QueryError> {
        let mut out = Vec::new();
        for config in self.deps.configs.list().await? {
            out.push(self.status_of(&config).await?);
        }
        Ok(out)
    }

    pub async fn queue(&self, queue: &str) -> Result<QueueStatus, QueryError> {
        let config = self.config(queue).await?;
        self.status_of(&config).await
    }

    async fn status_of(&self, config: &QueueConfig) -> Result<QueueStatus, QueryError> {
        let row = self.deps.stores(&config.name).queues.get().await?;
        let row = row.unwrap_or_else(|| Queue::new(config.name.clone(), Timestamp(0)));
        let scm = self.scm(config).await?;
        let last_green = match &row.last_green {
            Some(mark) => Some(self.view(scm.as_ref(), mark).await?),
            None => None,
        };
        let mut projects = Vec::new();
        for p in &config.projects {
            let last_green = match row.project_last_green.get(&p.name) {
                Some(mark) => Some(self.view(scm.as_ref(), mark).await?),
                None => None,
            };
            projects.push(ProjectStatus {
                project: p.name.clone(),
                last_green,
            });
        }
        Ok(QueueStatus {
            name: config.name.clone(),
            last_green,
            in_flight: row.in_flight_count(),
            in_flight_requests: row.in_flight.iter().map(|s| s.request_id.clone()).collect(),
            latest_request_id: row.latest_request_id,
            projects,
        })
    }

    /// The queue's (or a project's) last green commit; `NotFound` when
    /// nothing is green yet.
    pub async fn last_green(
        &self,
        queue: &str,
        project: Option<&str>,
    ) -> Result<LastGreenView, QueryError> {
        let config = self.config(queue).await?;
        let project = Self::project(&config, project)?;
        let row = self.deps.stores(&config.name).queues.get().await?;
        let mark = row
            .as_ref()
            .and_then(|q| q.bookmark(&project))
            .ok_or_else(|| QueryError::NotFound(format!("nothing is green yet in {queue}")))?;
        let scm = self.scm(&config).await?;
        self.view(scm.as_ref(), mark).await
    }

    fn project(config: &QueueConfig, project: Option<&str>) -> Result<ProjectName, QueryError> {
        let Some(p) = project.filter(|p| !p.is_empty()) else {
            return Ok(ProjectName::whole_repo());
        };
        let name = ProjectName::new(p).map_err(|e| QueryError::BadRequest(e.to_string()))?;
        if config.projects.iter().any(|c| c.name == name) {
            Ok(name)
        } else {
            Err(QueryError::NotFound(format!(
                "queue {} has no project {p:?}",
                config.name
            )))
        }
    }

    /// Greenness of one commit, named by revision (`rev`) or URI (`uri`).
    pub async fn greenness(
        &self,
        queue: &str,
        rev: Option<&str>,
        uri: Option<&str>,
        project: Option<&str>,
    ) -> Result<GreennessView, QueryError> {
        let config = self.config(queue).await?;
        let project = Self::project(&config, project)?;
        let scm = self.scm(&config).await?;
        let target = match (rev, uri) {
            (Some(r), None) => r,
            (None, Some(u)) => u,
            _ => {
                return Err(QueryError::BadRequest(
                    "give exactly one of rev or uri".into(),
                ));
            }
        };
        let info = scm.resolve_info(target).await.map_err(scm_error)?;
        let key = FactKey {
            queue: config.name.clone(),
            uri: info.uri.clone(),
            project,
        };
        let (fact, request) = self.fact_or_request(&key).await?;
        Ok(GreennessView {
            status: CommitStatus::of(request.as_ref(), fact.as_deref()),
            degree: fact.as_ref().map(|f| f.degree),
            request_id: fact
                .as_ref()
                .map(|f| f.request_id.clone())
                .or(request.map(|r| r.id)),
            recorded_at: fact.as_ref().map(|f| f.created_at),
            uri: info.uri,
            commit: info.commit,
            project: key.project,
        })
    }

    /// What decides a commit's status: its fact, kept or read (a fact
    /// decides alone, so a kept one needs no store), else its request.
    async fn fact_or_request(
        &self,
        key: &FactKey,
    ) -> Result<(Option<Arc<Fact>>, Option<Request>), QueryError> {
        if let Some(fact) = self.facts.0.kept(key) {
            return Ok((Some(fact), None));
        }
        let CommitRecord { fact, request } = self
            .deps
            .read
            .commit_record(&key.queue, &key.uri, &key.project)
            .await?;
        let fact = fact.map(Arc::new);
        if let Some(f) = &fact {
            self.facts.0.keep(key.clone(), f.clone());
        }
        Ok((fact, request))
    }

    /// Newest-first branch history joined with what Stovepipe knows.
    pub async fn commits(
        &self,
        queue: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<CommitPage, QueryError> {
        let config = self.config(queue).await?;
        let scm = self.scm(&config).await?;
        let page = scm
            .history(cursor, limit.clamp(1, MAX_PAGE))
            .await
            .map_err(scm_error)?;
        let uris: Vec<Uri> = page.items.iter().map(|c| c.uri.clone()).collect();
        let requests = self
            .deps
            .read
            .requests_for_uris(&config.name, &uris)
            .await?;
        let facts = self.deps.read.facts_for_uris(&config.name, &uris).await?;
        let items = page
            .items
            .into_iter()
            .map(|info| commit_view(info, &requests, &facts))
            .collect();
        Ok(CommitPage {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// Requests newest first; the cursor is the opaque form of the last
    /// number seen.
    pub async fn requests(
        &self,
        queue: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RequestPage, QueryError> {
        let config = self.config(queue).await?;
        let before = cursor.map(decode_cursor).transpose()?;
        let limit = limit.clamp(1, MAX_PAGE);
        let requests = self.deps.read.requests(&config.name, before, limit).await?;
        let next_cursor = (requests.len() == limit)
            .then(|| requests.last().map(|r| encode_cursor(r.id.number())))
            .flatten();
        let scm = self.scm(&config).await?;
        let mut items = Vec::with_capacity(requests.len());
        for request in requests {
            let commit = commit_id(scm.as_ref(), &request.uri).await?;
            items.push(RequestView {
                request,
                commit,
                builds: Vec::new(),
                facts: Vec::new(),
            });
        }
        Ok(RequestPage { items, next_cursor })
    }

    pub async fn request(&self, queue: &str, number: u64) -> Result<RequestView, QueryError> {
        let config = self.config(queue).await?;
        let id = RequestId::new(&config.name, number)
            .map_err(|e| QueryError::BadRequest(e.to_string()))?;
        let stores = self.deps.stores(&config.name);
        let request = stores
            .requests
            .get(&id)
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("request {id} not found")))?;
        let builds = stores.builds.list_for_request(&id).await?;
        let facts = self.deps.read.facts_of_request(&config.name, &id).await?;
        let commit = commit_id(self.scm(&config).await?.as_ref(), &request.uri).await?;
        Ok(RequestView {
            request,
            commit,
            builds,
            facts,
        })
    }
}

/// The commit id users know for `uri`. A commit that left the repository
/// (history rewritten) still answers, with an empty id rather than an error.
async fn commit_id(scm: &dyn SourceControl, uri: &Uri) -> Result<String, QueryError> {
    match scm.change_info(uri).await {
        Ok(info) => Ok(info.commit),
        Err(ScmError::NotFound(_)) => Ok(String::new()),
        Err(e) => Err(scm_error(e)),
    }
}

fn commit_view(info: ChangeInfo, requests: &[Request], facts: &[Fact]) -> CommitView {
    let request = requests.iter().find(|r| r.uri == info.uri);
    let whole = facts
        .iter()
        .find(|f| f.uri == info.uri && f.project.is_whole_repo());
    let projects = facts
        .iter()
        .filter(|f| f.uri == info.uri && !f.project.is_whole_repo())
        .map(|f| ProjectDegree {
            project: f.project.clone(),
            degree: f.degree,
        })
        .collect();
    CommitView {
        status: CommitStatus::of(request, whole),
        degree: whole.map(|f| f.degree),
        request_id: whole
            .map(|f| f.request_id.clone())
            .or_else(|| request.map(|r| r.id.clone())),
        uri: info.uri,
        commit: info.commit,
        title: info.title,
        author: info.author,
        created_at: info.created_at,
        projects,
    }
}

const CURSOR_PREFIX: &str = "r";

fn encode_cursor(number: u64) -> String {
    format!("{CURSOR_PREFIX}{number}")
}

fn decode_cursor(cursor: &str) -> Result<u64, QueryError> {
    cursor
        .strip_prefix(CURSOR_PREFIX)
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            QueryError::BadRequest(format!(
                "invalid cursor {cursor:?}: pass back a next_cursor value unchanged"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stovepipe_entity::{BuildStrategy, Origin};

    fn request(state: RequestState, failed_closed: bool) -> Request {
        let q = QueueName::new("q").unwrap();
        let mut r = Request::accepted(
            RequestId::new(&q, 1).unwrap(),
            q,
            Uri::new("u://1").unwrap(),
            Origin::Ingest,
            Timestamp(1),
        );
        r.state = state;
        r.failed_closed = failed_closed;
        r.build_strategy = Some(BuildStrategy::Full);
        r
    }

    fn fact(degree: Degree) -> Fact {
        let r = request(RequestState::Succeeded, false);
        Fact {
            queue: r.queue,
            uri: r.uri,
            project: ProjectName::whole_repo(),
            degree,
            request_id: r.id,
            build_id: None,
            created_at: Timestamp(2),
        }
    }

    #[test]
    fn statuses() {
        use CommitStatus as S;
        use RequestState as R;
        let cases = [
            (None, None, S::NotValidated),
            (Some(request(R::Accepted, false)), None, S::Pending),
            (Some(request(R::Processing, false)), None, S::Pending),
            (Some(request(R::Succeeded, false)), None, S::Pending),
            (Some(request(R::Superseded, false)), None, S::Skipped),
            (Some(request(R::Failed, true)), None, S::Error),
            (Some(request(R::Cancelled, false)), None, S::Error),
            (
                Some(request(R::Succeeded, false)),
                Some(fact(Degree::GREEN)),
                S::Green,
            ),
            (
                Some(request(R::Failed, false)),
                Some(fact(Degree::BROKEN)),
                S::Broken,
            ),
            (None, Some(fact(Degree::new(0.5).unwrap())), S::Broken),
        ];
        for (r, f, want) in cases {
            assert_eq!(
                CommitStatus::of(r.as_ref(), f.as_ref()),
                want,
                "{r:?} {f:?}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Ok(42));
        for bad in ["", "42", "r", "r0", "r-1", "rx", "r99999999999999999999999"] {
            assert!(
                matches!(decode_cursor(bad), Err(QueryError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }
}
