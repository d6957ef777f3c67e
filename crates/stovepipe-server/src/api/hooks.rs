//! The hook operations (`/v1/hooks…`): identities, releases, the live
//! pointer and runs. Each gates first (`hooks:write` to change, `read` to
//! look), then calls the application's `HookService` and maps the result.
//!
//! A release's secret is write-only: no response carries it, nor the
//! release's headers (they often hold credentials too).

use std::collections::BTreeMap;
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use stovepipe_app::{HookServiceError, ReleaseInfo};
use stovepipe_entity::{Hook, HookReleaseSpec, HookRun, HookRunStatus};

use super::problem::ApiError;
use super::views::rfc3339;
use super::{ApiTags, AppState, BearerAuth};
use crate::auth::Scope;

type State<'a> = Data<&'a Arc<AppState>>;

/// Default and largest number of runs listed.
const DEFAULT_RUNS: u32 = 50;
const MAX_RUNS: u32 = 500;

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct HookBody {
    /// Event types the hook subscribes to (`validation.recorded`,
    /// `validation.project.recorded`, `validation.error`,
    /// `last_green.advanced`, `build.finished`, `culprit.found`).
    pub events: Vec<String>,
    /// Queues it subscribes to; every queue when absent or empty.
    #[oai(nullable)]
    pub queues: Option<Vec<String>>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ReleaseBody {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// HMAC-SHA256 signing secret; never returned.
    #[oai(nullable)]
    pub secret: Option<String>,
    /// Extra request headers.
    #[oai(nullable)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Per-attempt timeout (default 10000).
    #[oai(nullable)]
    pub timeout_ms: Option<u32>,
    /// Attempts before giving up on transient failures (default 5).
    #[oai(nullable)]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct LiveBody {
    /// An existing release version.
    pub version: u32,
}

#[derive(Debug, Object)]
pub struct HookView {
    pub name: String,
    pub events: Vec<String>,
    /// Empty: every queue.
    pub queues: Vec<String>,
    /// The live release; null until the first release.
    #[oai(nullable)]
    pub live_version: Option<u32>,
    pub created_at: String,
}

impl From<&Hook> for HookView {
    fn from(h: &Hook) -> Self {
        Self {
            name: h.name.to_string(),
            events: h
                .contract
                .events
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            queues: h.contract.queues.iter().map(ToString::to_string).collect(),
            live_version: h.live_version,
            created_at: rfc3339(h.created_at),
        }
    }
}

#[derive(Debug, Object)]
pub struct HookList {
    pub hooks: Vec<HookView>,
}

#[derive(Debug, Object)]
pub struct ReleaseView {
    pub name: String,
    pub version: u32,
    /// Hash of the delivery settings.
    pub digest: String,
    /// Whether this is the hook's live release.
    pub live: bool,
    pub url: String,
    pub timeout_ms: u32,
    pub max_attempts: u32,
    /// Whether deliveries are signed.
    pub signed: bool,
    pub created_by: String,
    pub created_at: String,
}

impl From<&ReleaseInfo> for ReleaseView {
    fn from(i: &ReleaseInfo) -> Self {
        let r = &i.release;
        Self {
            name: r.hook.to_string(),
            version: r.version,
            digest: r.digest.clone(),
            live: i.live,
            url: r.spec.url.clone(),
            timeout_ms: r.spec.timeout_ms,
            max_attempts: r.spec.max_attempts,
            signed: r.spec.secret.is_some(),
            created_by: r.created_by.clone(),
            created_at: rfc3339(r.created_at),
        }
    }
}

#[derive(Debug, Object)]
pub struct ReleaseList {
    /// Newest first.
    pub releases: Vec<ReleaseView>,
}

#[derive(Debug, Object)]
pub struct RunView {
    pub id: String,
    pub hook: String,
    /// The release that delivered (snapshotted when the event was picked
    /// up).
    pub release_version: u32,
    pub event_id: String,
    /// `delivered`, `failed` or `gave_up`.
    pub status: String,
    pub attempts: u32,
    #[oai(nullable)]
    pub last_http_status: Option<u16>,
    pub started_at: String,
    pub finished_at: String,
}

impl From<&HookRun> for RunView {
    fn from(r: &HookRun) -> Self {
        Self {
            id: r.id.clone(),
            hook: r.hook.to_string(),
            release_version: r.release_version,
            event_id: r.event_id.clone(),
            status: match r.status {
                HookRunStatus::Delivered => "delivered",
                HookRunStatus::Failed => "failed",
                HookRunStatus::GaveUp => "gave_up",
            }
            .to_owned(),
            attempts: r.attempts,
            last_http_status: r.last_http_status,
            started_at: rfc3339(r.started_at),
            finished_at: rfc3339(r.finished_at),
        }
    }
}

#[derive(Debug, Object)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunView>,
}

#[derive(Debug, ApiResponse)]
pub enum HookResponse {
    /// The hook was created.
    #[oai(status = 201)]
    Created(Json<HookView>),
    /// The hook exists with this contract; nothing changed.
    #[oai(status = 200)]
    Unchanged(Json<HookView>),
}

#[derive(Debug, ApiResponse)]
pub enum ReleaseResponse {
    /// A new version, now live.
    #[oai(status = 201)]
    Created(Json<ReleaseView>),
    /// A release with these settings exists; nothing moved.
    #[oai(status = 200)]
    Existing(Json<ReleaseView>),
}

impl From<HookServiceError> for ApiError {
    fn from(e: HookServiceError) -> Self {
        match e {
            HookServiceError::NotFound(_) => Self::not_found(e.to_string()),
            HookServiceError::Conflict(m) => Self::conflict(m),
            HookServiceError::Invalid(m) => Self::bad_request(m),
            HookServiceError::Unavailable(m) => Self::unavailable(m),
            HookServiceError::Internal(m) => Self::internal(m),
        }
    }
}

#[derive(Debug)]
pub struct HooksApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Hooks")]
impl HooksApi {
    /// Create a hook, or confirm one with the same contract (a different
    /// contract is a conflict: contracts are immutable).
    #[oai(path = "/hooks/:name", method = "put", operation_id = "putHook")]
    async fn put_hook(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        name: Path<String>,
        body: Json<HookBody>,
    ) -> Result<HookResponse, ApiError> {
        state.gate(&auth, Scope::HooksWrite)?;
        let (hook, created) = state
            .wired
            .pipeline
            .hooks()
            .upsert(&name, &body.0.events, &body.0.queues.unwrap_or_default())
            .await?;
        let view = Json(HookView::from(&hook));
        Ok(if created {
            HookResponse::Created(view)
        } else {
            HookResponse::Unchanged(view)
        })
    }

    /// Every hook with its live version.
    #[oai(path = "/hooks", method = "get", operation_id = "listHooks")]
    async fn list(&self, state: State<'_>, auth: BearerAuth) -> Result<Json<HookList>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let hooks = state.wired.pipeline.hooks().list().await?;
        Ok(Json(HookList {
            hooks: hooks.iter().map(Into::into).collect(),
        }))
    }

    /// One hook.
    #[oai(path = "/hooks/:name", method = "get", operation_id = "getHook")]
    async fn get(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        name: Path<String>,
    ) -> Result<Json<HookView>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let hook = state.wired.pipeline.hooks().get(&name).await?;
        Ok(Json((&hook).into()))
    }

    /// Create a release. New settings mint the next version and make it
    /// live (201); settings equal to an existing release return it and
    /// move nothing (200).
    #[oai(
        path = "/hooks/:name/releases",
        method = "post",
        operation_id = "createHookRelease"
    )]
    async fn create_release(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        name: Path<String>,
        body: Json<ReleaseBody>,
    ) -> Result<ReleaseResponse, ApiError> {
        let principal = state.gate(&auth, Scope::HooksWrite)?;
        let body = body.0;
        let spec = HookReleaseSpec {
            url: body.url,
            secret: body.secret,
            headers: body.headers.unwrap_or_default(),
            timeout_ms: body
                .timeout_ms
                .unwrap_or(HookReleaseSpec::DEFAULT_TIMEOUT_MS),
            max_attempts: body
                .max_attempts
                .unwrap_or(HookReleaseSpec::DEFAULT_MAX_ATTEMPTS),
        };
        let (info, created) = state
            .wired
            .pipeline
            .hooks()
            .create_release(&name, &spec, &principal.id)
            .await?;
        let view = Json(ReleaseView::from(&info));
        Ok(if created {
            ReleaseResponse::Created(view)
        } else {
            ReleaseResponse::Existing(view)
        })
    }

    /// The hook's releases, newest first.
    #[oai(
        path = "/hooks/:name/releases",
        method = "get",
        operation_id = "listHookReleases"
    )]
    async fn releases(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        name: Path<String>,
    ) -> Result<Json<ReleaseList>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let releases = state.wired.pipeline.hooks().releases(&name).await?;
        Ok(Json(ReleaseList {
            releases: releases.iter().map(Into::into).collect(),
        }))
    }

    /// Point the hook at an existing release (a rollback or roll-forward).
    /// Deliveries already picked up keep the release they were picked up
    /// with.
    #[oai(
        path = "/hooks/:name/live",
        method = "put",
        operation_id = "setHookLive"
    )]
    async fn set_live(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        name: Path<String>,
        body: Json<LiveBody>,
    ) -> Result<Json<HookView>, ApiError> {
        state.gate(&auth, Scope::HooksWrite)?;
        let hook = state
            .wired
            .pipeline
            .hooks()
            .set_live(&name, body.0.version)
            .await?;
        Ok(Json((&hook).into()))
    }

    /// The hook's runs, newest first, each with the release that delivered.
    #[oai(
        path = "/hooks/:name/runs",
        method = "get",
        operation_id = "listHookRuns"
    )]
    async fn runs(
        &self,
        state: State<'_>,
        auth: BearerAuth,
        name: Path<String>,
        /// How many runs (1..=500, default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<RunList>, ApiError> {
        state.gate(&auth, Scope::Read)?;
        let limit = match limit.0.unwrap_or(DEFAULT_RUNS) {
            n @ 1..=MAX_RUNS => n as usize,
            n => {
                return Err(ApiError::bad_request(format!(
                    "limit {n}: expected 1..={MAX_RUNS}"
                )));
            }
        };
        let runs = state.wired.pipeline.hooks().runs(&name, limit).await?;
        Ok(Json(RunList {
            runs: runs.iter().map(Into::into).collect(),
        }))
    }
}
