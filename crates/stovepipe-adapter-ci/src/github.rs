//! The GitHub Actions runner: a `workflow_dispatch` per build, then polling
//! the workflow run.
//!
//! Settings (`[queue.build] settings`): `owner`, `repo`, `workflow` (file
//! name such as `stovepipe.yml`, or numeric id), `ref` (branch or tag the
//! workflow runs from; default the queue branch), `token_env` (default
//! `GITHUB_TOKEN`), `api_url` (default `https://api.github.com`),
//! `return_run_details` (`true` to ask GitHub to answer the dispatch with the
//! run id; off by default because older GitHub Enterprise Server versions
//! refuse the field).
//!
//! The workflow must accept the inputs `stovepipe_head`, `stovepipe_base`,
//! `stovepipe_queue`, `stovepipe_request` (and `stovepipe_project` for
//! project-scoped builds), check out `inputs.stovepipe_head`, and set
//! `run-name: ${{ inputs.stovepipe_request }}` so the run can be found.
//!
//! Build ids:
//! - `gha-<owner>/<repo>/<run id>` once the run is known;
//! - `gha-<owner>/<repo>/dispatch/<unix seconds>/<correlation>` while it is
//!   not: the classic dispatch API answers 204 without a run id, and the run
//!   appears a few seconds later. `status` resolves such an id lazily by
//!   listing `workflow_dispatch` runs of the workflow created since the
//!   dispatch (minus a clock-skew margin) and matching the correlation id in
//!   the run's `name`/`display_title`; until then it reports `accepted`.
//!   The listing filters on creation time rather than `head_sha`: a
//!   dispatched run's `head_sha` is the tip of `ref` at dispatch time, not
//!   the commit under validation (bisection builds older commits).
//!
//! Status mapping: [`map_run_status`], the only place GitHub states are
//! interpreted.

use crate::env::{Env, Settings};
use crate::http::{Api, Call};
use crate::scm::{base_commit_of, commit_of};
use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stovepipe_entity::{BuildId, BuildReport, BuildStatus, InvalidValue, QueueConfig, QueueName};
use stovepipe_ports::{BuildRunner, RunnerError, SourceControl, TriggerRequest};

const ID_PREFIX: &str = "gha-";
const DEFAULT_API: &str = "https://api.github.com";
const DEFAULT_TOKEN_ENV: &str = "GITHUB_TOKEN";
/// How far before the dispatch a run may be stamped (clock skew).
const SKEW_MARGIN: Duration = Duration::from_mins(10);

/// Maps a workflow run's `status` and `conclusion` to a build status.
///
/// Decisions beyond the obvious: `skipped`, `neutral` and `stale` runs
/// produced no verdict on the code, so they end `cancelled` (shown as an
/// error, never green and never broken); `action_required` and
/// `startup_failure` end `failed` because the run cannot pass without a
/// change. A state GitHub adds later is `Invalid`, never guessed.
pub(crate) fn map_run_status(
    status: &str,
    conclusion: Option<&str>,
) -> Result<BuildStatus, RunnerError> {
    Ok(match (status, conclusion) {
        ("queued" | "waiting" | "requested" | "pending", _) => BuildStatus::Accepted,
        ("in_progress", _) => BuildStatus::Running,
        ("completed", Some("success")) => BuildStatus::Succeeded,
        ("completed", Some("failure" | "timed_out" | "startup_failure" | "action_required")) => {
            BuildStatus::Failed
        }
        ("completed", Some("cancelled" | "skipped" | "neutral" | "stale")) => {
            BuildStatus::Cancelled
        }
        ("completed", other) => {
            return Err(unknown_state(&format!(
                "completed/{}",
                other.unwrap_or("null")
            )));
        }
        (other, _) => return Err(unknown_state(other)),
    })
}

fn unknown_state(state: &str) -> RunnerError {
    RunnerError::Invalid(InvalidValue {
        kind: "GitHub Actions run state",
        value: state.to_owned(),
        expected: "a status of queued, waiting, requested, pending, in_progress or completed \
                   with a known conclusion"
            .to_owned(),
    })
}

/// A workflow run, as GitHub returns it (only what is read).
#[derive(Debug, Deserialize)]
struct Run {
    id: u64,
    status: Option<String>,
    conclusion: Option<String>,
    html_url: Option<String>,
    name: Option<String>,
    display_title: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RunList {
    workflow_runs: Vec<Run>,
}

/// The 200 answer of a dispatch with `return_run_details`.
#[derive(Debug, Deserialize)]
struct DispatchDetails {
    workflow_run_id: Option<u64>,
}

/// What a build id designates.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Run(u64),
    Dispatch { since: u64, correlation: String },
}

/// Starts and watches GitHub Actions workflow runs. See the module docs.
pub struct GithubActionsRunner {
    api: Api,
    owner: String,
    repo: String,
    workflow: String,
    git_ref: String,
    return_run_details: bool,
    queue: QueueName,
    scm: Arc<dyn SourceControl>,
}

impl std::fmt::Debug for GithubActionsRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubActionsRunner")
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .field("workflow", &self.workflow)
            .field("ref", &self.git_ref)
            .finish_non_exhaustive()
    }
}

impl GithubActionsRunner {
    /// The runner of `config`'s queue; `scm` turns URIs into commit shas and
    /// `env` holds the token.
    pub fn new(
        config: &QueueConfig,
        scm: Arc<dyn SourceControl>,
        env: &Env,
    ) -> Result<Self, RunnerError> {
        let settings = Settings::of(config);
        let owner = settings.segment("owner")?.to_owned();
        let repo = settings.segment("repo")?.to_owned();
        let workflow = settings.segment("workflow")?.to_owned();
        let git_ref = settings
            .optional("ref")
            .unwrap_or(&config.branch)
            .to_owned();
        let token = settings.token(env, DEFAULT_TOKEN_ENV)?;
        let api = Api::new(
            "GitHub",
            settings.api_url(DEFAULT_API),
            &token,
            settings.token_var(DEFAULT_TOKEN_ENV).to_owned(),
            &[
                ("accept", "application/vnd.github+json"),
                ("x-github-api-version", "2022-11-28"),
            ],
        )?;
        Ok(Self {
            api,
            owner,
            repo,
            workflow,
            git_ref,
            return_run_details: settings.optional("return_run_details") == Some("true"),
            queue: config.name.clone(),
            scm,
        })
    }

    fn repo_path(&self) -> String {
        format!("/repos/{}/{}/actions", self.owner, self.repo)
    }

    fn run_id(&self, run: u64) -> Result<BuildId, RunnerError> {
        Ok(BuildId::new(format!(
            "{ID_PREFIX}{}/{}/{run}",
            self.owner, self.repo
        ))?)
    }

    /// Parses an id minted by this runner; anything else is `NotFound`.
    fn parse_id(&self, id: &BuildId) -> Result<Target, RunnerError> {
        let not_found = || RunnerError::NotFound(id.to_string());
        let rest = id
            .as_str()
            .strip_prefix(ID_PREFIX)
            .and_then(|r| r.strip_prefix(self.owner.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_prefix(self.repo.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(not_found)?;
        if let Ok(run) = rest.parse::<u64>() {
            return Ok(Target::Run(run));
        }
        let (since, correlation) = rest
            .strip_prefix("dispatch/")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(not_found)?;
        let since = since.parse::<u64>().map_err(|_| not_found())?;
        if correlation.is_empty() {
            return Err(not_found());
        }
        Ok(Target::Dispatch {
            since,
            correlation: correlation.to_owned(),
        })
    }

    async fn get_run(&self, id: &BuildId, run: u64) -> Result<Run, RunnerError> {
        let what = format!("reading workflow run {run}");
        let response = self
            .api
            .send(
                Call::Query { id: id.as_str() },
                &what,
                self.api
                    .request(Method::GET, &format!("{}/runs/{run}", self.repo_path())),
            )
            .await?;
        self.api.json(&what, response).await
    }

    /// The dispatched run carrying `correlation`, if GitHub shows it yet.
    async fn find_run(
        &self,
        id: &str,
        since: u64,
        correlation: &str,
    ) -> Result<Option<Run>, RunnerError> {
        let created = UNIX_EPOCH + Duration::from_secs(since) - SKEW_MARGIN;
        let created = format!(">={}", humantime::format_rfc3339_seconds(created));
        let what = format!("listing runs of workflow {}", self.workflow);
        let request = self
            .api
            .request(
                Method::GET,
                &format!("{}/workflows/{}/runs", self.repo_path(), self.workflow),
            )
            .query(&[
                ("event", "workflow_dispatch"),
                ("created", created.as_str()),
                ("per_page", "100"),
            ]);
        let response = self.api.send(Call::Query { id }, &what, request).await?;
        let list: RunList = self.api.json(&what, response).await?;
        Ok(list.workflow_runs.into_iter().find(|run| {
            [&run.name, &run.display_title]
                .into_iter()
                .flatten()
                .any(|title| title.contains(correlation))
        }))
    }

    fn report(run: &Run) -> Result<BuildReport, RunnerError> {
        let status = map_run_status(
            run.status.as_deref().unwrap_or("null"),
            run.conclusion.as_deref(),
        )?;
        let mut metadata = BTreeMap::new();
        metadata.insert("github_run_id".to_owned(), run.id.to_string());
        Ok(BuildReport {
            status: Some(status),
            url: run.html_url.clone(),
            metadata,
            ..BuildReport::default()
        })
    }

    async fn cancel_run(&self, id: &BuildId, run: u64) -> Result<(), RunnerError> {
        let request = self.api.request(
            Method::POST,
            &format!("{}/runs/{run}/cancel", self.repo_path()),
        );
        match self
            .api
            .send(
                Call::Query { id: id.as_str() },
                &format!("cancelling workflow run {run}"),
                request,
            )
            .await
        {
            Ok(_) => Ok(()),
            // GitHub answers 409 for a run that already completed: cancel is
            // idempotent, so that is success.
            Err(RunnerError::Rejected(m)) if m.contains("HTTP 409") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl BuildRunner for GithubActionsRunner {
    async fn trigger(&self, request: &TriggerRequest) -> Result<BuildId, RunnerError> {
        let scm = self.scm.as_ref();
        let head = commit_of(scm, &request.head).await?;
        let base = base_commit_of(scm, request.base.as_ref()).await?;
        let correlation = format!("stovepipe-{}", uuid::Uuid::new_v4().simple());
        let mut inputs = json!({
            "stovepipe_head": head,
            "stovepipe_base": base,
            "stovepipe_queue": self.queue.as_str(),
            "stovepipe_request": correlation,
        });
        if !request.project.as_str().is_empty() {
            inputs["stovepipe_project"] = json!(request.project.as_str());
        }
        let mut body = json!({ "ref": self.git_ref, "inputs": inputs });
        if self.return_run_details {
            body["return_run_details"] = json!(true);
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let what = format!("dispatching workflow {}", self.workflow);
        let response = self
            .api
            .send(
                Call::Trigger,
                &what,
                self.api
                    .request(
                        Method::POST,
                        &format!(
                            "{}/workflows/{}/dispatches",
                            self.repo_path(),
                            self.workflow
                        ),
                    )
                    .json(&body),
            )
            .await?;
        // Newer API versions name the run in a 200 body; the dispatch itself
        // succeeded either way, so an unreadable body only means "look it up".
        if response.status() == StatusCode::OK
            && let Ok(DispatchDetails {
                workflow_run_id: Some(run),
            }) = self.api.json::<DispatchDetails>(&what, response).await
        {
            return self.run_id(run);
        }
        let pending = format!(
            "{ID_PREFIX}{}/{}/dispatch/{since}/{correlation}",
            self.owner, self.repo
        );
        // Usually too early, but free when GitHub was quick. Any failure here
        // must not fail the trigger: the build exists.
        match self.find_run(&pending, since, &correlation).await {
            Ok(Some(run)) => self.run_id(run.id),
            _ => Ok(BuildId::new(pending)?),
        }
    }

    async fn status(&self, id: &BuildId) -> Result<BuildReport, RunnerError> {
        match self.parse_id(id)? {
            Target::Run(run) => Self::report(&self.get_run(id, run).await?),
            Target::Dispatch { since, correlation } => {
                // Not visible yet: the dispatch was accepted, the run will
                // appear.
                let mut report = match self.find_run(id.as_str(), since, &correlation).await? {
                    Some(run) => Self::report(&run)?,
                    None => BuildReport::with_status(BuildStatus::Accepted),
                };
                report
                    .metadata
                    .insert("github_correlation_id".to_owned(), correlation);
                Ok(report)
            }
        }
    }

    async fn cancel(&self, id: &BuildId) -> Result<(), RunnerError> {
        match self.parse_id(id)? {
            Target::Run(run) => self.cancel_run(id, run).await,
            Target::Dispatch { since, correlation } => {
                if let Some(run) = self.find_run(id.as_str(), since, &correlation).await? {
                    self.cancel_run(id, run.id).await
                } else {
                    // Best effort: nothing to cancel yet.
                    tracing::warn!(build = %id, "cancel: the dispatched run is not visible yet");
                    Ok(())
                }
            }
        }
    }
}
