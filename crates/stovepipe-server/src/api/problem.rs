//! Errors as `application/problem+json` (RFC 9457), mapped from the
//! application's typed errors in one place.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use stovepipe_app::{IngestError, QueryError, ReportError};
use stovepipe_ports::MqError;

use crate::auth::AuthError;

/// RFC 9457 problem details.
#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[oai(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        let title = poem::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_owned();
        let slug = title.to_lowercase().replace(' ', "-");
        Self {
            problem_type: format!("https://stovepipe.dev/problems/{slug}"),
            title,
            status,
            detail: detail.into(),
        }
    }
}

/// Every error an operation can answer.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// Body over 1 MiB (answered by the body-limit middleware).
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// Missing or wrong `Content-Type` on a body.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(Json(Problem::new(400, detail)))
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(Json(Problem::new(404, detail)))
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict(Json(Problem::new(409, detail)))
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable(Json(Problem::new(503, detail)))
    }
    /// The detail goes to the log, not to the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::Internal(Json(Problem::new(
            500,
            "internal error; see the server log",
        )))
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(why) => Self::Unauthorized(Json(Problem::new(401, why))),
            AuthError::Forbidden { needed } => Self::Forbidden(Json(Problem::new(
                403,
                format!("this operation needs scope {}", needed.as_str()),
            ))),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::InvalidQueue(v) => Self::bad_request(v.to_string()),
            IngestError::UnknownQueue(_) => Self::not_found(e.to_string()),
            IngestError::UnknownRevision { .. } => Self::bad_request(e.to_string()),
            IngestError::Unavailable(m) => Self::unavailable(m),
            IngestError::Internal(m) => Self::internal(m),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::InvalidQueue(v) => Self::bad_request(v.to_string()),
            QueryError::UnknownQueue(_) | QueryError::NotFound(_) => Self::not_found(e.to_string()),
            QueryError::BadRequest(m) => Self::bad_request(m),
            QueryError::Unavailable(m) => Self::unavailable(m),
            QueryError::Internal(m) => Self::internal(m),
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::NotFound(_) => Self::not_found(e.to_string()),
            ReportError::Conflict(m) => Self::conflict(m),
            ReportError::Unavailable(m) => Self::unavailable(m),
            ReportError::Internal(m) => Self::internal(m),
        }
    }
}

impl From<MqError> for ApiError {
    fn from(e: MqError) -> Self {
        match e {
            MqError::NotFound(m) => Self::not_found(m),
            MqError::Invalid(v) => Self::bad_request(v.to_string()),
            MqError::Unavailable(m) => Self::unavailable(m),
            other => Self::internal(other.to_string()),
        }
    }
}

/// A problem response for errors raised outside the operations (bad JSON,
/// unknown route, body too large…).
pub fn problem_response(status: poem::http::StatusCode, detail: String) -> poem::Response {
    let problem = Problem::new(status.as_u16(), detail);
    let body = serde_json::json!({
        "type": problem.problem_type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    });
    poem::Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(body.to_string())
}
