//! The operations on queues, builds and dead letters. Each one gates first,
//! then calls one application service and maps the result.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OpenApi};
use stovepipe_entity::{BuildId, BuildReport, BuildStatus, TargetResult, TargetStatus};
use stovepipe_ports::Topic;

use super::problem::ApiError;
use super::views::{
    BuildView, CommitPageView, DeadLetterList, Greenness, IngestBody, IngestView, LastGreen,
    QueueList, QueueStatusView, RequestItem, RequestPageView, StatusReportBody,
};
use super::{ApiTags, AppState, BearerAuth};
use crate::auth::Scope;

type State<'a> = Data<&'a Arc<AppState>>;

/// Default and largest page sizes.
const DEFAULT_LIMIT: u32 = 50;

#[derive(Debug, ApiResponse)]
pub enum IngestResponse {
    /// A new request was minted.
    #[oai(status = 201)]
    Created(Json<IngestView>),
    /// The head was already known: the existing request.
    #[oai(status = 200)]
    Deduplicated(Json<IngestView>),
}

#[derive(Debug)]
pub struct QueuesApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Queues")]
impl QueuesApi {
    /// Ingest a queue head (or a given revision).
    #[oai(
        path = "/queues/:queue/ingest",
        method = "post",
        operation_id = "ingest"
    )]
    async fn ingest(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        /// Queue name, percent-encoded (`monorepo%2Fmain`).
        queue: Path<String>,
        body: Json<IngestBody>,
    ) -> Result<IngestResponse, ApiError> {
        state.gate(&auth, Scope::Ingest)?;
        let outcome = state
            .wired
            .pipeline
            .ingest()
            .ingest(&queue, body.0.rev.as_deref())
            .await?;
        Ok(if outcome.created {
            IngestResponse::Created(Json(outcome.into()))
        } else {
            IngestResponse::Deduplicated(Json(outcome.into()))
        })
    }

    /// Every configured queue with its last green commit and slots.
    #[oai(path = "/queues", method = "get", operation_id = "listQueues")]
    async fn queues(
        &self,
        state: State<'_>,
        auth: BearerAuth,
    ) -> Result<Json<QueueList>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let queues = state.wired.pipeline.query().queues().await?;
        Ok(Json(QueueList {
            queues: queues.into_iter().map(Into::into).collect(),
        }))
    }

    /// One queue's status.
    #[oai(path = "/queues/:queue", method = "get", operation_id = "getQueue")]
    async fn queue(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        queue: Path<String>,
    ) -> Result<Json<QueueStatusView>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        Ok(Json(
            state.wired.pipeline.query().queue(&queue).await?.into(),
        ))
    }

    /// Newest-first branch history with each commit's status.
    #[oai(
        path = "/queues/:queue/commits",
        method = "get",
        operation_id = "listCommits"
    )]
    async fn commits(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        queue: Path<String>,
        /// Page size (1..=200, default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// Opaque cursor from `next_cursor`.
        cursor: Query<Option<String>>,
    ) -> Result<Json<CommitPageView>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let limit = page_limit(limit.0)?;
        let page = state
            .wired
            .pipeline
            .query()
            .commits(&queue, cursor.0, limit)
            .await?;
        Ok(Json(CommitPageView {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Is this commit green? A commit without a fact answers 200 with a
    /// status other than green and a null degree.
    #[oai(
        path = "/queues/:queue/greenness",
        method = "get",
        operation_id = "getGreenness"
    )]
    async fn greenness(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        queue: Path<String>,
        /// A commit id or ref name.
        rev: Query<Option<String>>,
        /// A URI minted by Stovepipe.
        uri: Query<Option<String>>,
        /// A configured project (the whole repository when absent).
        #[oai(validator(pattern = r"^[A-Za-z0-9._-]{0,100}$"))]
        project: Query<Option<String>>,
    ) -> Result<Json<Greenness>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let view = state
            .wired
            .pipeline
            .query()
            .greenness(
                &queue,
                rev.0.as_deref(),
                uri.0.as_deref(),
                project.0.as_deref(),
            )
            .await?;
        Ok(Json(view.into()))
    }

    /// The newest green commit; 404 when nothing is green yet.
    #[oai(
        path = "/queues/:queue/last-green",
        method = "get",
        operation_id = "getLastGreen"
    )]
    async fn last_green(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        queue: Path<String>,
        #[oai(validator(pattern = r"^[A-Za-z0-9._-]{0,100}$"))] project: Query<Option<String>>,
    ) -> Result<Json<LastGreen>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        Ok(Json(
            state
                .wired
                .pipeline
                .query()
                .last_green(&queue, project.0.as_deref())
                .await?
                .into(),
        ))
    }

    /// Requests, newest first.
    #[oai(
        path = "/queues/:queue/requests",
        method = "get",
        operation_id = "listRequests"
    )]
    async fn requests(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        queue: Path<String>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<RequestPageView>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let page = state
            .wired
            .pipeline
            .query()
            .requests(&queue, cursor.0.as_deref(), page_limit(limit.0)?)
            .await?;
        let items = page.items.iter().map(RequestItem::from).collect();
        Ok(Json(RequestPageView {
            items,
            next_cursor: page.next_cursor,
        }))
    }

    /// One request with its builds and facts.
    #[oai(
        path = "/queues/:queue/requests/:number",
        method = "get",
        operation_id = "getRequest"
    )]
    async fn request(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        queue: Path<String>,
        number: Path<u64>,
    ) -> Result<Json<RequestItem>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let view = state
            .wired
            .pipeline
            .query()
            .request(&queue, number.0)
            .await?;
        Ok(Json(RequestItem::from(&view)))
    }
}

fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=200 => Ok(n as usize),
        n => Err(ApiError::bad_request(format!(
            "limit {n}: expected 1..=200"
        ))),
    }
}

#[derive(Debug)]
pub struct BuildsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Builds")]
impl BuildsApi {
    /// The build's log (command runner), as plain text.
    #[oai(
        path = "/builds/:build_id/log",
        method = "get",
        operation_id = "getBuildLog"
    )]
    async fn log(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        build_id: Path<String>,
    ) -> Result<PlainText<String>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let id = BuildId::new(build_id.0).map_err(|e| ApiError::bad_request(e.to_string()))?;
        match state.wired.runners.log(&id).await {
            Ok(text) => Ok(PlainText(text)),
            Err(stovepipe_ports::RunnerError::NotFound(_)) => {
                Err(ApiError::not_found(format!("no log for build {id}")))
            }
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// An external CI reports a build's status.
    #[oai(
        path = "/builds/:build_id/status",
        method = "post",
        operation_id = "reportBuildStatus"
    )]
    async fn report(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        build_id: Path<String>,
        body: Json<StatusReportBody>,
    ) -> Result<Json<BuildView>, ApiError> {
        state.gate(&auth, Scope::BuildsReport)?;
        let id = BuildId::new(build_id.0).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let status =
            BuildStatus::parse(&body.0.status).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut targets = Vec::new();
        for t in body.0.targets.unwrap_or_default() {
            let status = match t.status.as_str() {
                "passed" => TargetStatus::Passed,
                "failed" => TargetStatus::Failed,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "target status {other:?}: expected passed or failed"
                    )));
                }
            };
            targets.push(TargetResult {
                target: t.target,
                status,
            });
        }
        let report = BuildReport {
            status: Some(status),
            url: body.0.url,
            targets,
            ..BuildReport::default()
        };
        let build = state.wired.pipeline.reports().report(&id, &report).await?;
        Ok(Json((&build).into()))
    }
}

#[derive(Debug, ApiResponse)]
pub enum Done {
    /// Done.
    #[oai(status = 200)]
    Ok,
}

#[derive(Debug)]
pub struct AdminApi;

#[OpenApi(prefix_path = "/v1/admin", tag = "ApiTags::Admin")]
impl AdminApi {
    /// Dead letters, oldest first.
    #[oai(
        path = "/dead-letters",
        method = "get",
        operation_id = "listDeadLetters"
    )]
    async fn list(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        /// Only dead letters of this topic.
        topic: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
    ) -> Result<Json<DeadLetterList>, ApiError> {
        state.gate(&auth, Scope::Admin)?;
        let items = state
            .wired
            .backend
            .message_queue()
            .dead_letters(topic.0.map(Topic::new), page_limit(limit.0)?)
            .await?;
        Ok(Json(DeadLetterList {
            items: items.iter().map(Into::into).collect(),
        }))
    }

    /// Publish a dead letter's message to its topic again.
    #[oai(
        path = "/dead-letters/:id/requeue",
        method = "post",
        operation_id = "requeueDeadLetter"
    )]
    async fn requeue(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        id: Path<u64>,
    ) -> Result<Done, ApiError> {
        state.gate(&auth, Scope::Admin)?;
        state
            .wired
            .backend
            .message_queue()
            .requeue_dead_letter(id.0)
            .await?;
        Ok(Done::Ok)
    }

    /// Delete a dead letter.
    #[oai(
        path = "/dead-letters/:id",
        method = "delete",
        operation_id = "purgeDeadLetter"
    )]
    async fn purge(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        id: Path<u64>,
    ) -> Result<Done, ApiError> {
        state.gate(&auth, Scope::Admin)?;
        state
            .wired
            .backend
            .message_queue()
            .purge_dead_letter(id.0)
            .await?;
        Ok(Done::Ok)
    }
}
