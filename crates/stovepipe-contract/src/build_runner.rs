//! Contract of `BuildRunner`: one distinct build per trigger, `NotFound`
//! for ids it never minted, builds that reach the outcome the fixture
//! scripted and keep it (a final status is written once), idempotent
//! cancel that ends a running build without success, and `status` answers
//! that match `reports_via_api`.
//!
//! The fixture decides outcomes (see [`RunnerFixture`]). Waits poll `status`
//! against a real-time deadline. Does not own: CI APIs, logs, targets
//! reports (each runner's own tests).

use crate::fixtures::{RunnerFixture, build_id, eventually};
use std::sync::Arc;
use std::time::Duration;
use stovepipe_entity::{BuildId, BuildReport, BuildStatus};
use stovepipe_ports::{BuildRunner, RunnerError};

/// The suite runs against a runner whose outcomes the fixture decides.
pub type Fixture = Arc<dyn RunnerFixture>;

crate::suite!($, build_runner, build_runner_tests, Fixture, [
    trigger_returns_a_distinct_id_per_call,
    status_of_unknown_id_is_not_found,
    build_reaches_the_scripted_success_and_stays,
    build_reaches_the_scripted_failure_and_stays,
    cancel_ends_a_running_build_without_success,
    cancel_is_idempotent_and_ok_on_a_finished_build,
    status_is_some_unless_reported_via_api,
]);

/// How long a scripted build may take to end.
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `status` until the build is terminal; panics at the deadline.
async fn terminal(runner: &Arc<dyn BuildRunner>, id: &BuildId) -> BuildReport {
    eventually(&format!("build {id} to end"), DEADLINE, || async {
        let report = runner
            .status(id)
            .await
            .unwrap_or_else(|e| panic!("status of build {id}: {e}"));
        report
            .status
            .is_some_and(BuildStatus::is_terminal)
            .then_some(report)
    })
    .await
}

/// Ids the runner never minted: a fixed one, and `minted` with a digit
/// appended (the runner's own id shape).
fn unknown_ids(minted: Option<&BuildId>) -> Vec<BuildId> {
    let mut ids = vec![build_id("contract-never-minted-0")];
    if let Some(m) = minted {
        ids.push(build_id(&format!("{m}0")));
    }
    ids
}

async fn trigger_returns_a_distinct_id_per_call(fx: Fixture) {
    let runner = fx.runner();
    let mut ids = Vec::new();
    for outcome in [
        BuildStatus::Succeeded,
        BuildStatus::Succeeded,
        BuildStatus::Failed,
    ] {
        let request = fx.head(outcome).await;
        ids.push(runner.trigger(&request).await.unwrap());
    }
    // The same request twice is two builds.
    let request = fx.head(BuildStatus::Succeeded).await;
    ids.push(runner.trigger(&request).await.unwrap());
    ids.push(runner.trigger(&request).await.unwrap());
    let unique: std::collections::BTreeSet<&str> = ids.iter().map(BuildId::as_str).collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "build ids must be distinct: {ids:?}"
    );
    for id in &ids {
        runner
            .status(id)
            .await
            .unwrap_or_else(|e| panic!("status of triggered build {id}: {e}"));
    }
}

async fn status_of_unknown_id_is_not_found(fx: Fixture) {
    let runner = fx.runner();
    for id in unknown_ids(None) {
        let got = runner.status(&id).await;
        assert!(
            matches!(got, Err(RunnerError::NotFound(_))),
            "status of never-minted {id} must be NotFound, got {got:?}"
        );
    }
    let minted = runner
        .trigger(&fx.head(BuildStatus::Succeeded).await)
        .await
        .unwrap();
    for id in unknown_ids(Some(&minted)) {
        let got = runner.status(&id).await;
        assert!(
            matches!(got, Err(RunnerError::NotFound(_))),
            "status of never-minted {id} must be NotFound, got {got:?}"
        );
    }
}

async fn reaches_and_stays(fx: Fixture, outcome: BuildStatus) {
    let runner = fx.runner();
    let id = runner.trigger(&fx.head(outcome).await).await.unwrap();
    if runner.reports_via_api() {
        return; // the pipeline is told; status answers `None` (own case)
    }
    let report = terminal(&runner, &id).await;
    assert_eq!(
        report.status,
        Some(outcome),
        "build {id} scripted to end {outcome:?}: {report:?}"
    );
    for _ in 0..5 {
        let again = runner.status(&id).await.unwrap();
        assert_eq!(
            again.status,
            Some(outcome),
            "a final status never changes: {again:?}"
        );
    }
    // Cancelling a finished build changes nothing either.
    runner.cancel(&id).await.unwrap();
    assert_eq!(runner.status(&id).await.unwrap().status, Some(outcome));
}

async fn build_reaches_the_scripted_success_and_stays(fx: Fixture) {
    reaches_and_stays(fx, BuildStatus::Succeeded).await;
}

async fn build_reaches_the_scripted_failure_and_stays(fx: Fixture) {
    reaches_and_stays(fx, BuildStatus::Failed).await;
}

async fn cancel_ends_a_running_build_without_success(fx: Fixture) {
    let runner = fx.runner();
    let id = runner.trigger(&fx.slow_head().await).await.unwrap();
    if !runner.reports_via_api() {
        let first = runner.status(&id).await.unwrap();
        assert!(
            matches!(
                first.status,
                Some(BuildStatus::Accepted | BuildStatus::Running)
            ),
            "a slow build is still going right after its trigger: {first:?}"
        );
    }
    runner.cancel(&id).await.unwrap();
    runner.cancel(&id).await.unwrap();
    if runner.reports_via_api() {
        return;
    }
    let report = terminal(&runner, &id).await;
    assert!(
        matches!(
            report.status,
            Some(BuildStatus::Cancelled | BuildStatus::Failed)
        ),
        "a cancelled build ends cancelled (or at least not succeeded): {report:?}"
    );
    let again = runner.status(&id).await.unwrap();
    assert_eq!(again.status, report.status, "the end is final");
}

async fn cancel_is_idempotent_and_ok_on_a_finished_build(fx: Fixture) {
    let runner = fx.runner();
    let id = runner
        .trigger(&fx.head(BuildStatus::Failed).await)
        .await
        .unwrap();
    if !runner.reports_via_api() {
        terminal(&runner, &id).await;
    }
    for _ in 0..3 {
        runner
            .cancel(&id)
            .await
            .unwrap_or_else(|e| panic!("cancel of a finished build must be Ok: {e}"));
    }
    if !runner.reports_via_api() {
        assert_eq!(
            runner.status(&id).await.unwrap().status,
            Some(BuildStatus::Failed),
            "cancel must not rewrite a final status"
        );
    }
}

async fn status_is_some_unless_reported_via_api(fx: Fixture) {
    let runner = fx.runner();
    let id = runner.trigger(&fx.slow_head().await).await.unwrap();
    let report = runner.status(&id).await.unwrap();
    if runner.reports_via_api() {
        assert_eq!(
            report.status, None,
            "a runner told statuses through the API answers status None"
        );
    } else {
        assert!(
            report.status.is_some(),
            "a runner that is not told statuses must report one: {report:?}"
        );
    }
    runner.cancel(&id).await.unwrap();
}
