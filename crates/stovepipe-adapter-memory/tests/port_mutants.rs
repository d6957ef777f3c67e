//! The `source_control`, `build_runner` and `hook_sink` suites must catch
//! subtly wrong adapters: each test wraps a memory fake in one deliberate
//! bug and checks the suite names the case that should catch it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up panics on a broken setup, as the tests do"
)]

use async_trait::async_trait;
use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use stovepipe_adapter_memory::{CommitSpec, RecordingHookSink, ScriptedBuildRunner, ScriptedRepo};
use stovepipe_contract::{RunnerFixture, ScmFixture, SinkFixture, fixtures};
use stovepipe_entity::{BuildId, BuildReport, BuildStatus, EventEnvelope, HookRelease, Uri};
use stovepipe_ports::{
    BuildRunner, ChangeInfo, DeliveryOutcome, HistoryPage, HookSink, PromoteOutcome, RunnerError,
    ScmError, SourceControl, TriggerRequest,
};

async fn assert_suite_fails(suite: &str, case: &str, run: impl Future<Output = ()>) {
    let Err(panic) = AssertUnwindSafe(run).catch_unwind().await else {
        panic!("the {suite} suite passed a deliberately broken adapter");
    };
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains(&format!("{suite}::{case}:")),
        "expected {suite}::{case} among the failures, got:\n{message}"
    );
}

// --- a source control whose commits are not their own ancestors ------------

struct StrictAncestry(ScriptedRepo);

#[async_trait]
impl SourceControl for StrictAncestry {
    async fn latest(&self) -> Result<Uri, ScmError> {
        self.0.latest().await
    }
    async fn resolve(&self, rev: &str) -> Result<Uri, ScmError> {
        self.0.resolve(rev).await
    }
    async fn is_ancestor(&self, a: &Uri, d: &Uri) -> Result<bool, ScmError> {
        // The bug: a commit is not counted as its own ancestor.
        Ok(self.0.is_ancestor(a, d).await? && a != d)
    }
    async fn history(&self, cursor: Option<String>, limit: usize) -> Result<HistoryPage, ScmError> {
        self.0.history(cursor, limit).await
    }
    async fn history_between(&self, base: Option<Uri>, head: &Uri) -> Result<Vec<Uri>, ScmError> {
        self.0.history_between(base, head).await
    }
    async fn change_info(&self, uri: &Uri) -> Result<ChangeInfo, ScmError> {
        self.0.change_info(uri).await
    }
    async fn changed_paths(&self, base: Option<Uri>, head: &Uri) -> Result<Vec<String>, ScmError> {
        self.0.changed_paths(base, head).await
    }
    async fn promote(&self, uri: &Uri) -> Result<PromoteOutcome, ScmError> {
        self.0.promote(uri).await
    }
    async fn promote_to(&self, reference: &str, uri: &Uri) -> Result<PromoteOutcome, ScmError> {
        self.0.promote_to(reference, uri).await
    }
    async fn checkout(&self, uri: &Uri, slot: u32) -> Result<PathBuf, ScmError> {
        self.0.checkout(uri, slot).await
    }
}

struct StrictRepo(ScriptedRepo);

#[async_trait]
impl ScmFixture for StrictRepo {
    async fn commit(&self, name: &str, parents: &[&str], files: &[(&str, &str)]) {
        self.0.commit_with(name, parents, CommitSpec::files(files));
    }
    async fn set_head(&self, name: &str) {
        self.0.set_head(name);
    }
    fn id(&self, name: &str) -> String {
        name.to_owned()
    }
    async fn source_control(&self) -> Arc<dyn SourceControl> {
        Arc::new(StrictAncestry(self.0.clone()))
    }
    async fn promotion_target(&self) -> Option<String> {
        self.0
            .promoted()
            .map(|u| u.as_str().rsplit('/').next().unwrap().to_owned())
    }
    async fn ref_target(&self, reference: &str) -> Option<String> {
        self.0
            .ref_target(reference)
            .map(|u| u.as_str().rsplit('/').next().unwrap().to_owned())
    }
}

#[tokio::test]
async fn source_control_suite_catches_strict_ancestry() {
    assert_suite_fails(
        "source_control",
        "is_ancestor_of_ancestor_and_of_itself",
        stovepipe_contract::source_control::run(|| async {
            Arc::new(StrictRepo(ScriptedRepo::new(fixtures::queue_a()))) as Arc<dyn ScmFixture>
        }),
    )
    .await;
}

// --- a runner whose cancel of a finished build fails ------------------------

struct TouchyCancel(ScriptedBuildRunner);

#[async_trait]
impl BuildRunner for TouchyCancel {
    async fn trigger(&self, request: &TriggerRequest) -> Result<BuildId, RunnerError> {
        self.0.trigger(request).await
    }
    async fn status(&self, id: &BuildId) -> Result<BuildReport, RunnerError> {
        self.0.status(id).await
    }
    async fn cancel(&self, id: &BuildId) -> Result<(), RunnerError> {
        // The bug: cancelling a finished build is refused.
        if self
            .0
            .status(id)
            .await?
            .status
            .is_some_and(BuildStatus::is_terminal)
        {
            return Err(RunnerError::Rejected(format!("{id} already finished")));
        }
        self.0.cancel(id).await
    }
}

struct TouchyRunner(ScriptedBuildRunner);

#[async_trait]
impl RunnerFixture for TouchyRunner {
    fn runner(&self) -> Arc<dyn BuildRunner> {
        Arc::new(TouchyCancel(self.0.clone()))
    }
    async fn head(&self, outcome: BuildStatus) -> TriggerRequest {
        let request = fixtures::trigger(fixtures::uri(&format!("{outcome:?}")));
        self.0.set_outcome(&request.head, outcome);
        request
    }
    async fn slow_head(&self) -> TriggerRequest {
        let request = fixtures::trigger(fixtures::uri("slow"));
        self.0.set_never_finishes(&request.head);
        request
    }
}

#[tokio::test]
async fn build_runner_suite_catches_a_cancel_that_is_not_idempotent() {
    assert_suite_fails(
        "build_runner",
        "cancel_is_idempotent_and_ok_on_a_finished_build",
        stovepipe_contract::build_runner::run(|| async {
            Arc::new(TouchyRunner(ScriptedBuildRunner::new())) as Arc<dyn RunnerFixture>
        }),
    )
    .await;
}

// --- a sink that gives up on 429 --------------------------------------------

struct NoPatience(RecordingHookSink);

#[async_trait]
impl HookSink for NoPatience {
    async fn deliver(&self, release: &HookRelease, envelope: &EventEnvelope) -> DeliveryOutcome {
        match self.0.deliver(release, envelope).await {
            // The bug: "too many requests" is taken as final.
            DeliveryOutcome::Retryable {
                status: Some(429),
                error,
            } => DeliveryOutcome::Failed {
                status: Some(429),
                error,
            },
            other => other,
        }
    }
}

struct ImpatientSink(RecordingHookSink);

#[async_trait]
impl SinkFixture for ImpatientSink {
    fn sink(&self) -> Arc<dyn HookSink> {
        Arc::new(NoPatience(self.0.clone()))
    }
    async fn url_answering(&self, statuses: &[u16]) -> String {
        let url = format!("http://receiver.invalid/{}", self.0.deliveries().len());
        let url = format!(
            "{url}/{}",
            statuses
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join("-")
        );
        self.0.script(
            &url,
            statuses.iter().map(|&status| match status {
                200..=299 => DeliveryOutcome::Delivered { status },
                408 | 429 | 500..=599 => DeliveryOutcome::Retryable {
                    status: Some(status),
                    error: status.to_string(),
                },
                _ => DeliveryOutcome::Failed {
                    status: Some(status),
                    error: status.to_string(),
                },
            }),
        );
        url
    }
    async fn received(&self, url: &str) -> Vec<EventEnvelope> {
        self.0.deliveries_to(url)
    }
}

#[tokio::test]
async fn hook_sink_suite_catches_a_sink_that_gives_up_on_429() {
    assert_suite_fails(
        "hook_sink",
        "retryable_statuses_are_retryable",
        stovepipe_contract::hook_sink::run(|| async {
            Arc::new(ImpatientSink(RecordingHookSink::new())) as Arc<dyn SinkFixture>
        }),
    )
    .await;
}
