//! The HTTP API (`/v1`, OpenAPI 3 via poem-openapi), plus the plain routes:
//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`.
//!
//! Every operation declares its scope gate by calling [`AppState::gate`]
//! first; `tests/api.rs` calls every documented operation without a token
//! and fails if one answers anything but 401.

mod events;
mod hooks;
mod operations;
pub mod problem;
pub mod views;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use poem::endpoint::make_sync;
use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, Route, get};
use poem_openapi::{OpenApiService, SecurityScheme, Tags};
use stovepipe_ports::{Clock, SystemClock};

use crate::auth::{Authenticator, Principal, Scope};
use crate::wiring::Wired;
use problem::{ApiError, problem_response};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Tags)]
enum ApiTags {
    /// Queues, commits and greenness.
    Queues,
    /// Builds: logs and external status reports.
    Builds,
    /// The change log and the live event stream.
    Events,
    /// Hooks: subscriptions, versioned releases, delivery runs.
    Hooks,
    /// Operator tools.
    Admin,
}

/// A bearer JWT (see the authentication section of the documentation).
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct Jwt(poem_openapi::auth::Bearer);

/// The credentials of a call: a bearer JWT, or none. A missing token is not
/// rejected here: dev mode and `auth.anonymous_read` decide in the gate.
#[derive(Debug, SecurityScheme)]
pub enum BearerAuth {
    Jwt(Jwt),
    #[oai(fallback)]
    Anonymous,
}

/// What every handler reaches.
pub struct AppState {
    pub wired: Wired,
    pub auth: Authenticator,
    pub clock: Arc<dyn Clock>,
    pub metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// The scope gate: authenticates the caller and checks `scope`.
    pub fn gate(&self, auth: &BearerAuth, scope: Scope) -> Result<Principal, ApiError> {
        let header = match auth {
            BearerAuth::Jwt(jwt) => Some(format!("Bearer {}", jwt.0.token)),
            BearerAuth::Anonymous => None,
        };
        Ok(self
            .auth
            .authenticate(header.as_deref(), scope, self.clock.now().as_secs())?)
    }
}

/// The OpenAPI service (also what `stovepipe openapi` prints).
pub fn service() -> OpenApiService<
    (
        operations::QueuesApi,
        operations::BuildsApi,
        events::EventsApi,
        hooks::HooksApi,
        operations::AdminApi,
    ),
    (),
> {
    OpenApiService::new(
        (
            operations::QueuesApi,
            operations::BuildsApi,
            events::EventsApi,
            hooks::HooksApi,
            operations::AdminApi,
        ),
        "Stovepipe",
        env!("CARGO_PKG_VERSION"),
    )
    .description("At which commit is a branch, or a project inside it, green?")
}

/// The OpenAPI document as pretty JSON (`api/openapi.json`).
pub fn spec_json() -> String {
    service().spec()
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> impl Endpoint {
    let api = service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    let ready_state = state.clone();
    let metrics_state = state.clone();
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/healthz", get(make_sync(|_| "ok")))
        .at(
            "/readyz",
            get(poem::endpoint::make(move |_| {
                let state = ready_state.clone();
                async move {
                    if state.wired.backend.ready().await {
                        poem::Response::builder().body("ready")
                    } else {
                        problem_response(
                            poem::http::StatusCode::SERVICE_UNAVAILABLE,
                            "database unreachable".into(),
                        )
                    }
                }
            })),
        )
        .at(
            "/metrics",
            get(make_sync(move |_| {
                metrics_state
                    .metrics
                    .as_ref()
                    .map(PrometheusHandle::render)
                    .unwrap_or_default()
            })),
        )
        .around(limit_body)
        .data(state)
        .catch_all_error(as_problem)
        .with(Tracing)
}

/// Every error as problem+json: an operation's own problem document passes
/// through untouched; anything else (unparsable body or parameter, unknown
/// route, wrong method…) is wrapped, keeping its message as the detail.
async fn as_problem(e: poem::Error) -> poem::Response {
    let status = e.status();
    let response = e.into_response();
    let is_problem = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if is_problem {
        return response;
    }
    let detail = response.into_body().into_string().await.unwrap_or_default();
    let detail = if detail.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        detail
    };
    problem_response(status, detail)
}

/// Refuses bodies over [`MAX_BODY`] with 413: at once when the declared
/// length is too large, while reading for chunked bodies. (poem's own
/// `SizeLimit` demands a `Content-Length` even on GET requests.)
async fn limit_body<E: Endpoint>(
    ep: Arc<E>,
    mut req: poem::Request,
) -> poem::Result<poem::Response> {
    use poem::IntoResponse as _;
    let too_large = || {
        poem::Error::from_string(
            format!("request body over {MAX_BODY} bytes"),
            poem::http::StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY as u64 => return Err(too_large()),
        None if req
            .headers()
            .contains_key(poem::http::header::TRANSFER_ENCODING) =>
        {
            let body = req
                .take_body()
                .into_bytes_limit(MAX_BODY)
                .await
                .map_err(|_| too_large())?;
            req.set_body(body);
        }
        // A declared length within the limit, or no body at all.
        _ => {}
    }
    Ok(ep.call(req).await?.into_response())
}

/// A clock for the API when none is injected.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock::default())
}
