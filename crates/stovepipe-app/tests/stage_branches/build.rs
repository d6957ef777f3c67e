//! `build`: trigger the runner for an admitted request, write the build row,
//! hand over to `buildsignal` (pipeline.md, "build").

use stovepipe_app::hops::BuildHop;
use stovepipe_app::stages::build::BuildStage;
use stovepipe_app::{Outcome, StageError};
use stovepipe_entity::{Build, BuildStatus, ChangeKind, ProjectName, RequestState};
use stovepipe_ports::{RunnerError, StoreError, TriggerRequest};

use crate::mocks::{
    Fixture, Journal, NOW, bid, build, build_hop, changes, incremental_request, queue, queue_name,
    request, rid, signal_message, trigger_metadata, uri,
};

async fn run(f: Fixture, n: u64) -> (Result<Outcome, StageError>, Journal) {
    deliver(f, &build_hop(n), true).await
}

/// Runs the stage on `hop`, on its first delivery or not.
async fn deliver(
    f: Fixture,
    hop: &BuildHop,
    first_delivery: bool,
) -> (Result<Outcome, StageError>, Journal) {
    let (deps, log) = f.deps();
    let out = BuildStage::new(deps).run(hop, first_delivery).await;
    (out, log)
}

/// Request 3's build hop, published by the admit or not.
fn hop_of_3(from_admit: bool) -> BuildHop {
    BuildHop {
        from_admit,
        ..build_hop(3)
    }
}

fn trigger(n: u64, base: Option<u64>) -> TriggerRequest {
    TriggerRequest {
        queue: queue_name(),
        request_id: rid(n),
        project: ProjectName::whole_repo(),
        base: base.map(uri),
        head: uri(n),
        metadata: trigger_metadata(n),
    }
}

/// Asserts trigger → build row (`accepted`, v1, `build.status`, buildsignal
/// hop in its outbox).
fn assert_triggered(log: &Journal, n: u64, base: Option<u64>) {
    let w = log.writes();
    assert_eq!(log.names(), ["runner.trigger", "builds.create"], "{w:#?}");
    assert_eq!(w[0], crate::mocks::Write::Trigger(trigger(n, base)));
    let (b, outbox) = w[1].build_create();
    assert_eq!(
        b,
        &Build::accepted(
            bid("b-1"),
            queue_name(),
            rid(n),
            ProjectName::whole_repo(),
            NOW
        )
    );
    assert_eq!(b.status, BuildStatus::Accepted);
    assert_eq!(b.version, 1);
    assert_eq!(
        changes(outbox),
        [(ChangeKind::BuildStatus, "b-1".to_owned())]
    );
    assert_eq!(outbox.messages, [signal_message("b-1")]);
}

fn admitted_fixture() -> Fixture {
    Fixture::new()
        .with_request(request(3, RequestState::Processing))
        .with_queue(queue(Some(3), &[3], None))
}

#[tokio::test]
async fn terminal_request_is_acked_without_trigger() {
    for state in [
        RequestState::Superseded,
        RequestState::Succeeded,
        RequestState::Failed,
        RequestState::Cancelled,
    ] {
        let f = Fixture::new().with_request(request(3, state));
        let (out, log) = run(f, 3).await;
        assert_eq!(out, Ok(Outcome::Ack), "{state}");
        assert!(log.writes().is_empty(), "{state}");
    }
}

#[tokio::test]
async fn accepted_request_is_retryable_strategy_not_visible_yet() {
    let f = Fixture::new().with_request(request(3, RequestState::Accepted));
    let (out, log) = run(f, 3).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn missing_request_is_permanent() {
    let (out, log) = run(Fixture::new(), 3).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn existing_build_is_reused_and_its_poll_chain_republished() {
    for status in [
        BuildStatus::Accepted,
        BuildStatus::Running,
        BuildStatus::Succeeded,
        BuildStatus::Failed,
    ] {
        let mut f = admitted_fixture().with_builds_of_request(vec![build("b-7", 3, status)]);
        f.expect_publish();
        let (out, log) = run(f, 3).await;
        assert_eq!(out, Ok(Outcome::Ack), "{status}");
        assert_eq!(log.names(), ["mq.publish"], "no trigger for {status}");
        assert_eq!(log.writes()[0].published(), &signal_message("b-7"));
    }
}

/// Request 3 admitted, with build `b-7` of it running.
fn fixture_with_running_build() -> Fixture {
    admitted_fixture().with_builds_of_request(vec![build("b-7", 3, BuildStatus::Running)])
}

/// The admit's own hop, on its first delivery, triggers without looking for
/// a build: none can exist before it. (The fixture lists one, which cannot
/// exist then, to show that it is not looked for.)
#[tokio::test]
async fn the_admits_hop_on_its_first_delivery_triggers_without_looking_for_a_build() {
    let mut f = fixture_with_running_build();
    f.expect_trigger(Ok(bid("b-1")));
    f.expect_build_create(Ok(()));
    let (out, log) = deliver(f, &hop_of_3(true), true).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_triggered(&log, 3, None);
}

/// Any other delivery looks and reuses the build: the admit's hop had
/// before (a redelivery, a retry, a requeued dead letter), and every hop
/// published again.
#[tokio::test]
async fn the_admits_hop_had_before_and_hops_published_again_reuse_the_build() {
    for (from_admit, first_delivery) in [(true, false), (false, true), (false, false)] {
        let mut f = fixture_with_running_build();
        f.expect_publish();
        let (out, log) = deliver(f, &hop_of_3(from_admit), first_delivery).await;
        let case = format!("from_admit {from_admit}, first delivery {first_delivery}");
        assert_eq!(out, Ok(Outcome::Ack), "{case}");
        assert_eq!(log.names(), ["mq.publish"], "no trigger: {case}");
        assert_eq!(
            log.writes()[0].published(),
            &signal_message("b-7"),
            "{case}"
        );
    }
}

#[tokio::test]
async fn cancelled_build_is_not_reused() {
    let mut f =
        admitted_fixture().with_builds_of_request(vec![build("b-0", 3, BuildStatus::Cancelled)]);
    f.expect_trigger(Ok(bid("b-1")));
    f.expect_build_create(Ok(()));
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_triggered(&log, 3, None);
}

#[tokio::test]
async fn build_of_another_project_is_not_reused() {
    let mut other = build("b-0", 3, BuildStatus::Running);
    other.project = ProjectName::new("payments").unwrap();
    let mut f = admitted_fixture().with_builds_of_request(vec![other]);
    f.expect_trigger(Ok(bid("b-1")));
    f.expect_build_create(Ok(()));
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_triggered(&log, 3, None);
}

#[tokio::test]
async fn full_build_triggers_without_base() {
    let mut f = admitted_fixture();
    f.expect_trigger(Ok(bid("b-1")));
    f.expect_build_create(Ok(()));
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_triggered(&log, 3, None);
}

#[tokio::test]
async fn incremental_build_triggers_with_the_base() {
    let mut f = Fixture::new()
        .with_request(incremental_request(3, 1))
        .with_queue(queue(Some(3), &[3], Some(1)));
    f.expect_trigger(Ok(bid("b-1")));
    f.expect_build_create(Ok(()));
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_triggered(&log, 3, Some(1));
}

#[tokio::test]
async fn trigger_rejected_is_permanent_without_build_row() {
    let mut f = admitted_fixture();
    f.expect_trigger(Err(RunnerError::Rejected("401 bad token".into())));
    let (out, log) = run(f, 3).await;
    assert!(
        matches!(&out, Err(StageError::Permanent(m)) if m.contains("trigger")),
        "{out:?}"
    );
    assert_eq!(log.names(), ["runner.trigger"]);
}

#[tokio::test]
async fn trigger_unavailable_is_retryable_without_build_row() {
    let mut f = admitted_fixture();
    f.expect_trigger(Err(RunnerError::Unavailable("503".into())));
    let (out, log) = run(f, 3).await;
    assert!(
        matches!(&out, Err(StageError::Retryable(m)) if m.contains("trigger")),
        "{out:?}"
    );
    assert_eq!(log.names(), ["runner.trigger"]);
}

#[tokio::test]
async fn build_row_already_exists_publishes_buildsignal_directly() {
    let mut f = admitted_fixture();
    f.expect_trigger(Ok(bid("b-1")));
    f.expect_build_create(Err(StoreError::AlreadyExists {
        entity: "build",
        key: "b-1".into(),
    }));
    f.expect_publish();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(
        log.names(),
        ["runner.trigger", "builds.create", "mq.publish"]
    );
    assert_eq!(log.writes()[2].published(), &signal_message("b-1"));
}

#[tokio::test]
async fn build_row_unavailable_is_retryable() {
    let mut f = admitted_fixture();
    f.expect_trigger(Ok(bid("b-1")));
    f.expect_build_create(Err(StoreError::Unavailable("pool".into())));
    let (out, log) = run(f, 3).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert_eq!(log.names(), ["runner.trigger", "builds.create"]);
}

#[tokio::test]
async fn queue_not_configured_is_permanent_before_triggering() {
    let f = admitted_fixture().without_config();
    let (out, log) = run(f, 3).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}
