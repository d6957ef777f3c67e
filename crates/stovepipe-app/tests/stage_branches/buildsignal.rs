//! `buildsignal`: poll the runner, fold the status into the build, stamp
//! the request's outcome and hand over to `record`; time out after
//! `max_validation` (pipeline.md, "buildsignal").

use stovepipe_app::stages::buildsignal::BuildSignalStage;
use stovepipe_app::{Outcome, StageError};
use stovepipe_entity::{BuildStatus, ChangeKind, Queue, RequestState, Timestamp};
use stovepipe_ports::{RunnerError, StoreError};

use crate::mocks::{
    Fixture, Journal, MAX_VALIDATION, NOW, POLL_ACCEPTED, POLL_RUNNING, bid, build, changes,
    failed_closed_record_message, failed_closed_request, hook_feeds, hops, queue, report, request,
    rid, signal_hop, stamped_record_message,
};

async fn run(f: Fixture) -> (Result<Outcome, StageError>, Journal) {
    let (deps, log) = f.deps();
    let out = BuildSignalStage::new(deps).run(&signal_hop("b-1")).await;
    (out, log)
}

/// Request 3 processing, holding its slot since T0, build b-1 in `status`.
fn polling(status: BuildStatus) -> Fixture {
    Fixture::new()
        .with_request(request(3, RequestState::Processing))
        .with_queue(queue(Some(3), &[3], None))
        .with_build(build("b-1", 3, status))
}

/// The runner answers `status` for b-1, once.
fn runner_says(f: &mut Fixture, status: BuildStatus) {
    f.runner
        .expect_status()
        .withf(|id| id == &bid("b-1"))
        .times(1)
        .returning(move |_| Ok(report(status)));
}

/// A queue whose slot for request 3 was admitted `ago_ms` before [`NOW`].
fn admitted_ago(ago_ms: i64) -> Queue {
    let mut q = queue(Some(3), &[], None);
    let claimed = q.claim_slot(&rid(3), Timestamp(NOW.0 - ago_ms));
    assert_eq!(claimed, Ok(true));
    q
}

#[tokio::test]
async fn superseded_request_is_acked_without_polling() {
    let f = Fixture::new()
        .with_request(request(3, RequestState::Superseded))
        .with_build(build("b-1", 3, BuildStatus::Running));
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert!(log.writes().is_empty());
}

/// A request with a build was admitted: reading it as accepted is a view
/// from before the admit (another replica's write, not yet seen), so the
/// poll chain is kept (retried) rather than dropped.
#[tokio::test]
async fn a_build_of_a_request_read_as_accepted_is_retried_without_polling() {
    let f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_build(build("b-1", 3, BuildStatus::Running));
    let (out, log) = run(f).await;
    assert!(
        matches!(&out, Err(StageError::Retryable(m)) if m.contains("accepted")),
        "{out:?}"
    );
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn missing_build_is_permanent() {
    let f = Fixture::new().with_request(request(3, RequestState::Processing));
    let (out, log) = run(f).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn running_report_writes_the_build_and_holds_for_the_running_delay() {
    let mut f = polling(BuildStatus::Accepted);
    runner_says(&mut f, BuildStatus::Running);
    f.expect_joint();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Hold(POLL_RUNNING)));
    let w = log.writes();
    assert_eq!(log.names(), ["joint.write_all"]);
    assert_eq!(w[0].joint().0.len(), 1, "the build alone: {w:#?}");
    let (b, expected) = w[0].joint_build().unwrap();
    let outbox = w[0].joint().1;
    assert_eq!(expected, 1);
    let mut want = build("b-1", 3, BuildStatus::Accepted);
    want.status = BuildStatus::Running;
    want.updated_at = NOW;
    want.version = 2;
    assert_eq!(b, &want);
    assert_eq!(
        changes(outbox),
        [(ChangeKind::BuildStatus, "b-1".to_owned())]
    );
    assert!(outbox.messages.is_empty());
}

#[tokio::test]
async fn unchanged_accepted_holds_for_the_accepted_delay_without_writes() {
    let mut f = polling(BuildStatus::Accepted);
    runner_says(&mut f, BuildStatus::Accepted);
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Hold(POLL_ACCEPTED)));
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn unchanged_running_holds_for_the_running_delay_without_writes() {
    let mut f = polling(BuildStatus::Running);
    runner_says(&mut f, BuildStatus::Running);
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Hold(POLL_RUNNING)));
    assert!(log.writes().is_empty());
}

/// The build's terminal status and the request's outcome, with the record
/// hop, in one joint write.
#[tokio::test]
async fn terminal_report_writes_build_and_stamps_the_request_with_record_hop() {
    for (status, outcome) in [
        (BuildStatus::Succeeded, RequestState::Succeeded),
        (BuildStatus::Failed, RequestState::Failed),
        (BuildStatus::Cancelled, RequestState::Cancelled),
    ] {
        let mut f = polling(BuildStatus::Running);
        runner_says(&mut f, status);
        f.expect_joint();
        let (out, log) = run(f).await;
        assert_eq!(out, Ok(Outcome::Ack), "{status}");
        let w = log.writes();
        assert_eq!(log.names(), ["joint.write_all"], "{status}");

        let (b, expected) = w[0].joint_build().unwrap();
        assert_eq!((b.status, b.version, expected), (status, 3, 2));
        let (r, expected) = w[0].joint_request();
        let mut want = request(3, RequestState::Processing);
        want.record_outcome(status, NOW).unwrap();
        assert_eq!(r, &want);
        assert_eq!((r.state, r.version, expected), (outcome, 3, Some(2)));
        assert!(!r.failed_closed);

        let outbox = w[0].joint().1;
        assert_eq!(
            changes(outbox),
            [
                (ChangeKind::BuildStatus, "b-1".to_owned()),
                (ChangeKind::BuildFinished, "b-1".to_owned()),
                (ChangeKind::RequestChanged, rid(3).to_string()),
            ],
            "{status}"
        );
        assert_eq!(hook_feeds(outbox), ["build.finished/b-1"], "{status}");
        assert_eq!(hops(outbox), [stamped_record_message(3, "b-1")], "{status}");
    }
}

/// A request stamped or failed meanwhile: nothing of the joint write is
/// written, and the redelivery reloads both.
#[tokio::test]
async fn terminal_report_beside_a_moved_request_is_retryable_and_writes_nothing() {
    let mut f = polling(BuildStatus::Running);
    runner_says(&mut f, BuildStatus::Succeeded);
    f.expect_joint_err(
        StoreError::VersionMismatch {
            entity: "request",
            key: rid(3).to_string(),
            expected: 2,
        },
        |rows| *rows.request.lock().unwrap() = Some(failed_closed_request(3)),
    );
    let (out, log) = run(f).await;
    assert!(
        matches!(&out, Err(StageError::Retryable(m)) if m.contains("stamping")),
        "{out:?}"
    );
    assert_eq!(log.names(), ["joint.write_all"]);
}

/// Write-once: a stored terminal build is not polled again and its status is
/// what the request is stamped with (a runner now saying otherwise is never
/// asked, so it cannot overwrite it).
#[tokio::test]
async fn stored_terminal_build_is_kept_and_stamped_without_polling() {
    let mut f = polling(BuildStatus::Failed);
    f.expect_request_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["requests.update"], "no build write");
    let (r, _, outbox) = w[0].request_update();
    assert_eq!(r.state, RequestState::Failed);
    assert!(!r.failed_closed);
    assert_eq!(outbox.messages, [stamped_record_message(3, "b-1")]);
}

#[tokio::test]
async fn stored_terminal_with_request_already_stamped_republishes_record() {
    let mut f = polling(BuildStatus::Succeeded).with_request(request(3, RequestState::Succeeded));
    f.expect_publish();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["mq.publish"], "no request write");
    assert_eq!(
        log.writes()[0].published(),
        &stamped_record_message(3, "b-1")
    );
}

#[tokio::test]
async fn past_max_validation_cancels_the_build_and_fails_the_request_closed() {
    let max_ms = i64::try_from(MAX_VALIDATION.as_millis()).unwrap();
    let mut f = polling(BuildStatus::Running).with_queue(admitted_ago(max_ms));
    runner_says(&mut f, BuildStatus::Running);
    f.expect_cancel(Ok(()));
    f.expect_request_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["runner.cancel", "requests.update"]);
    assert_eq!(w[0], crate::mocks::Write::Cancel(bid("b-1")));
    let (r, expected, outbox) = w[1].request_update();
    assert_eq!(expected, 2);
    assert_eq!((r.state, r.version), (RequestState::Failed, 3));
    assert!(r.failed_closed);
    let reason = r.failure_reason.as_deref().unwrap();
    assert!(reason.contains("max_validation"), "{reason}");
    assert!(reason.contains("b-1"), "{reason}");
    assert_eq!(
        changes(outbox),
        [
            (ChangeKind::RequestChanged, rid(3).to_string()),
            (ChangeKind::ValidationError, rid(3).to_string()),
        ]
    );
    assert_eq!(hook_feeds(outbox), [format!("validation.error/{}", rid(3))]);
    assert_eq!(hops(outbox), [failed_closed_record_message(3)]);
}

#[tokio::test]
async fn max_validation_fails_closed_even_when_cancel_fails() {
    let max_ms = i64::try_from(MAX_VALIDATION.as_millis()).unwrap();
    let mut f = polling(BuildStatus::Running).with_queue(admitted_ago(max_ms + 1));
    runner_says(&mut f, BuildStatus::Running);
    f.expect_cancel(Err(RunnerError::Unavailable("503".into())));
    f.expect_request_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["runner.cancel", "requests.update"]);
    assert!(log.writes()[1].request_update().0.failed_closed);
}

#[tokio::test]
async fn just_inside_max_validation_keeps_polling() {
    let max_ms = i64::try_from(MAX_VALIDATION.as_millis()).unwrap();
    let mut f = polling(BuildStatus::Running).with_queue(admitted_ago(max_ms - 1));
    runner_says(&mut f, BuildStatus::Running);
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Hold(POLL_RUNNING)));
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn runner_reporting_via_api_is_not_polled() {
    for (status, delay) in [
        (BuildStatus::Accepted, POLL_ACCEPTED),
        (BuildStatus::Running, POLL_RUNNING),
    ] {
        // No status expectation: a call would panic.
        let f = polling(status).reporting_via_api();
        let (out, log) = run(f).await;
        assert_eq!(out, Ok(Outcome::Hold(delay)), "{status}");
        assert!(log.writes().is_empty());
    }
}

#[tokio::test]
async fn runner_reporting_via_api_stamps_the_stored_terminal_status() {
    let mut f = polling(BuildStatus::Succeeded).reporting_via_api();
    f.expect_request_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(
        log.writes()[0].request_update().0.state,
        RequestState::Succeeded
    );
}

#[tokio::test]
async fn status_unavailable_is_retryable_without_writes() {
    let mut f = polling(BuildStatus::Running);
    f.runner
        .expect_status()
        .times(1)
        .returning(|_| Err(RunnerError::Unavailable("429".into())));
    let (out, log) = run(f).await;
    assert!(
        matches!(&out, Err(StageError::Retryable(m)) if m.contains("status")),
        "{out:?}"
    );
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn status_not_found_is_permanent() {
    let mut f = polling(BuildStatus::Running);
    f.runner
        .expect_status()
        .times(1)
        .returning(|_| Err(RunnerError::NotFound("b-1".into())));
    let (out, log) = run(f).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

/// A conflicting status write reloads the stored build and folds the
/// report into it again; a build that keeps moving is given back as
/// retryable after a few reloads, with nothing stamped.
#[tokio::test]
async fn build_cas_conflicts_reload_then_are_retryable_and_stamp_nothing() {
    let mut f = polling(BuildStatus::Running);
    runner_says(&mut f, BuildStatus::Succeeded);
    f.expect_joints_err(
        4,
        StoreError::VersionMismatch {
            entity: "build",
            key: "b-1".into(),
            expected: 2,
        },
    );
    let (out, log) = run(f).await;
    assert!(
        matches!(&out, Err(StageError::Retryable(m)) if m.contains("still conflicting")),
        "{out:?}"
    );
    assert_eq!(log.names(), ["joint.write_all"; 4]);
}

#[tokio::test]
async fn request_cas_conflict_is_retryable() {
    let mut f = polling(BuildStatus::Succeeded);
    f.expect_request_update_conflict(failed_closed_request(3));
    let (out, log) = run(f).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert_eq!(log.names(), ["requests.update"]);
}

#[tokio::test]
async fn queue_not_configured_is_permanent() {
    let f = polling(BuildStatus::Running).without_config();
    let (out, log) = run(f).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}
