//! The Buildkite runner: one Buildkite build per Stovepipe build, created and
//! polled through the REST API.
//!
//! Settings (`[queue.build] settings`): `organization`, `pipeline` (slugs),
//! `branch` (default the queue branch), `token_env` (default
//! `BUILDKITE_TOKEN`), `api_url` (default `https://api.buildkite.com`).
//!
//! The build gets `STOVEPIPE_QUEUE`, `STOVEPIPE_HEAD_COMMIT`,
//! `STOVEPIPE_BASE_COMMIT` (empty for full builds), `STOVEPIPE_REQUEST_ID`
//! and `STOVEPIPE_PROJECT` (empty for whole-repository builds) in its
//! environment.
//!
//! Build id: `bk-<organization>/<pipeline>/<build number>`.
//!
//! Status mapping: [`map_build_state`], the only place Buildkite states are
//! interpreted.

use crate::env::{Env, Settings};
use crate::http::{Api, Call};
use crate::scm::{base_commit_of, commit_of};
use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use stovepipe_entity::{BuildId, BuildReport, BuildStatus, InvalidValue, QueueConfig, QueueName};
use stovepipe_ports::{BuildRunner, RunnerError, SourceControl, TriggerRequest};

const ID_PREFIX: &str = "bk-";
const DEFAULT_API: &str = "https://api.buildkite.com";
const DEFAULT_TOKEN_ENV: &str = "BUILDKITE_TOKEN";

/// Maps a Buildkite build `state` to a build status.
///
/// Decisions beyond the obvious:
/// - `creating`, `scheduled`, `waiting` → accepted (no job has started);
/// - `blocked` → running: the build waits on a block step for a human;
///   `max_validation` bounds how long Stovepipe waits;
/// - `failing` and `waiting_failed` → running: a job failed but the build
///   has not finished; it will end `failed`;
/// - `timed_out` → failed, like the command runner's timeout;
/// - `skipped` (superseded by a newer build of the branch) and `not_run`
///   produced no verdict on the code → cancelled (an error, never green and
///   never broken);
/// - anything else (including the `finished` filter pseudo-state) is
///   `Invalid`, never guessed.
pub(crate) fn map_build_state(state: &str) -> Result<BuildStatus, RunnerError> {
    Ok(match state {
        "creating" | "scheduled" | "waiting" => BuildStatus::Accepted,
        "running" | "blocked" | "canceling" | "failing" | "waiting_failed" => BuildStatus::Running,
        "passed" => BuildStatus::Succeeded,
        "failed" | "timed_out" => BuildStatus::Failed,
        "canceled" | "skipped" | "not_run" => BuildStatus::Cancelled,
        other => {
            return Err(RunnerError::Invalid(InvalidValue {
                kind: "Buildkite build state",
                value: other.to_owned(),
                expected: "one of creating, scheduled, waiting, running, blocked, canceling, \
                           failing, waiting_failed, passed, failed, timed_out, canceled, \
                           skipped, not_run"
                    .to_owned(),
            }));
        }
    })
}

/// A Buildkite build, as the API returns it (only what is read).
#[derive(Debug, Deserialize)]
struct Build {
    number: u64,
    state: Option<String>,
    web_url: Option<String>,
}

/// Creates and watches Buildkite builds. See the module docs.
pub struct BuildkiteRunner {
    api: Api,
    organization: String,
    pipeline: String,
    branch: String,
    queue: QueueName,
    scm: Arc<dyn SourceControl>,
}

impl std::fmt::Debug for BuildkiteRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildkiteRunner")
            .field("organization", &self.organization)
            .field("pipeline", &self.pipeline)
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

impl BuildkiteRunner {
    /// The runner of `config`'s queue; `scm` turns URIs into commit shas and
    /// `env` holds the token.
    pub fn new(
        config: &QueueConfig,
        scm: Arc<dyn SourceControl>,
        env: &Env,
    ) -> Result<Self, RunnerError> {
        let settings = Settings::of(config);
        let organization = settings.segment("organization")?.to_owned();
        let pipeline = settings.segment("pipeline")?.to_owned();
        let branch = settings
            .optional("branch")
            .unwrap_or(&config.branch)
            .to_owned();
        let token = settings.token(env, DEFAULT_TOKEN_ENV)?;
        let api = Api::new(
            "Buildkite",
            settings.api_url(DEFAULT_API),
            &token,
            settings.token_var(DEFAULT_TOKEN_ENV).to_owned(),
            &[("accept", "application/json")],
        )?;
        Ok(Self {
            api,
            organization,
            pipeline,
            branch,
            queue: config.name.clone(),
            scm,
        })
    }

    fn builds_path(&self) -> String {
        format!(
            "/v2/organizations/{}/pipelines/{}/builds",
            self.organization, self.pipeline
        )
    }

    /// The build number of an id minted by this runner; else `NotFound`.
    fn parse_id(&self, id: &BuildId) -> Result<u64, RunnerError> {
        id.as_str()
            .strip_prefix(ID_PREFIX)
            .and_then(|r| r.strip_prefix(self.organization.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_prefix(self.pipeline.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| RunnerError::NotFound(id.to_string()))
    }
}

#[async_trait]
impl BuildRunner for BuildkiteRunner {
    async fn trigger(&self, request: &TriggerRequest) -> Result<BuildId, RunnerError> {
        let scm = self.scm.as_ref();
        let head = commit_of(scm, &request.head).await?;
        let base = base_commit_of(scm, request.base.as_ref()).await?;
        let body = json!({
            "commit": head,
            "branch": self.branch,
            "message": format!("Stovepipe validation of {}", self.queue),
            "env": {
                "STOVEPIPE_QUEUE": self.queue.as_str(),
                "STOVEPIPE_HEAD_COMMIT": head,
                "STOVEPIPE_BASE_COMMIT": base,
                "STOVEPIPE_REQUEST_ID": request.request_id.as_str(),
                "STOVEPIPE_PROJECT": request.project.as_str(),
            },
        });
        let what = format!("creating a build of pipeline {}", self.pipeline);
        let response = self
            .api
            .send(
                Call::Trigger,
                &what,
                self.api
                    .request(Method::POST, &self.builds_path())
                    .json(&body),
            )
            .await?;
        let build: Build = self.api.json(&what, response).await.map_err(|e| {
            // The build was created; only its number is unreadable. Retrying
            // would create another, so this is permanent.
            RunnerError::Rejected(format!(
                "Buildkite created a build but its answer could not be read ({e}); the build may \
                 exist, so it is not retried automatically"
            ))
        })?;
        Ok(BuildId::new(format!(
            "{ID_PREFIX}{}/{}/{}",
            self.organization, self.pipeline, build.number
        ))?)
    }

    async fn status(&self, id: &BuildId) -> Result<BuildReport, RunnerError> {
        let number = self.parse_id(id)?;
        let what = format!("reading build {number}");
        let response = self
            .api
            .send(
                Call::Query { id: id.as_str() },
                &what,
                self.api
                    .request(Method::GET, &format!("{}/{number}", self.builds_path())),
            )
            .await?;
        let build: Build = self.api.json(&what, response).await?;
        let status = map_build_state(build.state.as_deref().unwrap_or("null"))?;
        let mut metadata = BTreeMap::new();
        metadata.insert(
            "buildkite_build_number".to_owned(),
            build.number.to_string(),
        );
        Ok(BuildReport {
            status: Some(status),
            url: build.web_url,
            metadata,
            ..BuildReport::default()
        })
    }

    async fn cancel(&self, id: &BuildId) -> Result<(), RunnerError> {
        let number = self.parse_id(id)?;
        let request = self.api.request(
            Method::PUT,
            &format!("{}/{number}/cancel", self.builds_path()),
        );
        match self
            .api
            .send(
                Call::Query { id: id.as_str() },
                &format!("cancelling build {number}"),
                request,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Buildkite answers 422 for a build that already finished:
            // cancel is idempotent, so that is success.
            Err(RunnerError::Rejected(m)) if m.contains("HTTP 422") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
