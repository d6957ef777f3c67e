//! Dead-letter reconcilers: fail closed (pipeline.md, "DLQ reconcilers").

use serde_json::json;
use stovepipe_app::stages::dead_letter::DeadLetterReconciler;
use stovepipe_app::{Handler, Outcome, StageError};
use stovepipe_entity::{BuildStatus, ChangeKind, RequestState};
use stovepipe_ports::{Delivery, Topic};

use crate::mocks::{
    Fixture, Journal, QUEUE_VERSION, build, changes, delivery, failed_closed_record_message,
    hook_feeds, hops, queue, request, rid,
};

async fn handle(
    f: Fixture,
    original: Topic,
    d: &Delivery,
) -> (Result<Outcome, StageError>, Journal) {
    let (deps, log) = f.deps();
    let reconciler = DeadLetterReconciler::new(deps, original.clone());
    assert_eq!(reconciler.topic(), original.dlq());
    let out = reconciler.handle(d).await;
    (out, log)
}

/// A dead letter of `original` naming request `n`.
fn request_letter(original: &Topic, n: u64, error: Option<&str>) -> Delivery {
    let payload = if original.as_str() == Topic::PROCESS {
        json!({ "request_id": rid(n), "queue": "monorepo/main" })
    } else {
        json!({ "request_id": rid(n), "queue": "monorepo/main", "project": "" })
    };
    delivery(original.dlq(), payload, error)
}

fn signal_letter(build: &str) -> Delivery {
    delivery(
        Topic::buildsignal().dlq(),
        json!({ "build_id": build, "queue": "monorepo/main" }),
        Some("status: build runner unavailable: 503"),
    )
}

/// Asserts the single write: request `n` failed closed from `from_version`
/// with a reason naming `stage` and `error`, `validation.error` and the
/// repair record hop in its outbox.
fn assert_failed_closed(log: &Journal, n: u64, from_version: u64, stage: &str, error: &str) {
    let w = log.writes();
    assert_eq!(log.names(), ["requests.update"], "{w:#?}");
    let (r, expected, outbox) = w[0].request_update();
    assert_eq!(expected, from_version);
    assert_eq!(r.version, from_version + 1);
    assert_eq!(r.state, RequestState::Failed);
    assert!(r.failed_closed);
    let reason = r.failure_reason.as_deref().unwrap_or_default();
    assert!(reason.contains(stage), "{reason:?} names the stage");
    assert!(reason.contains(error), "{reason:?} carries the last error");
    assert_eq!(
        changes(outbox),
        [
            (ChangeKind::RequestChanged, rid(n).to_string()),
            (ChangeKind::ValidationError, rid(n).to_string()),
        ]
    );
    assert_eq!(hook_feeds(outbox), [format!("validation.error/{}", rid(n))]);
    assert_eq!(hops(outbox), [failed_closed_record_message(n)]);
}

#[tokio::test]
async fn missing_request_is_acked() {
    for topic in [Topic::process(), Topic::build()] {
        let d = request_letter(&topic, 3, Some("boom"));
        let (out, log) = handle(Fixture::new(), topic.clone(), &d).await;
        assert_eq!(out, Ok(Outcome::Ack), "{topic}");
        assert!(log.writes().is_empty(), "{topic}");
    }
}

#[tokio::test]
async fn process_dead_letter_fails_an_accepted_request_closed() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], None));
    f.expect_request_update();
    let d = request_letter(&Topic::process(), 3, Some("is_ancestor: corrupt pack"));
    let (out, log) = handle(f, Topic::process(), &d).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_failed_closed(&log, 3, 1, "process", "is_ancestor: corrupt pack");
}

#[tokio::test]
async fn build_dead_letter_fails_a_processing_request_closed() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Processing))
        .with_queue(queue(Some(3), &[3], None));
    f.expect_request_update();
    let d = request_letter(&Topic::build(), 3, Some("trigger: rejected 401"));
    let (out, log) = handle(f, Topic::build(), &d).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_failed_closed(&log, 3, 2, "build", "trigger: rejected 401");
}

#[tokio::test]
async fn dead_letter_without_last_error_still_fails_closed() {
    let mut f = Fixture::new().with_request(request(3, RequestState::Processing));
    f.expect_request_update();
    let d = request_letter(&Topic::build(), 3, None);
    let (out, log) = handle(f, Topic::build(), &d).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_failed_closed(&log, 3, 2, "build", "unknown error");
}

/// A request that already has an outcome is not rewritten; record is
/// republished so its slot is released.
#[tokio::test]
async fn request_with_an_outcome_only_gets_record_again() {
    let mut f = Fixture::new().with_request(request(3, RequestState::Succeeded));
    f.expect_publish();
    let d = request_letter(&Topic::build(), 3, Some("boom"));
    let (out, log) = handle(f, Topic::build(), &d).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["mq.publish"]);
    assert_eq!(
        log.writes()[0].published(),
        &failed_closed_record_message(3)
    );
}

#[tokio::test]
async fn superseded_request_is_left_alone() {
    let f = Fixture::new().with_request(request(3, RequestState::Superseded));
    let d = request_letter(&Topic::process(), 3, Some("boom"));
    let (out, log) = handle(f, Topic::process(), &d).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert!(log.writes().is_empty());
}

/// Losing the fail-closed CAS reloads: here buildsignal stamped an outcome
/// meanwhile, so the request is kept and record republished.
#[tokio::test]
async fn fail_closed_conflict_reloads_and_respects_the_winner() {
    let mut f = Fixture::new().with_request(request(3, RequestState::Processing));
    f.expect_request_update_conflict(request(3, RequestState::Failed));
    f.expect_publish();
    let d = request_letter(&Topic::build(), 3, Some("boom"));
    let (out, log) = handle(f, Topic::build(), &d).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["requests.update", "mq.publish"]);
    assert_eq!(
        log.writes()[1].published(),
        &failed_closed_record_message(3)
    );
}

#[tokio::test]
async fn buildsignal_dead_letter_resolves_the_request_through_the_build() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Processing))
        .with_queue(queue(Some(3), &[3], None))
        .with_build(build("b-1", 3, BuildStatus::Running));
    f.expect_request_update();
    let (out, log) = handle(f, Topic::buildsignal(), &signal_letter("b-1")).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_failed_closed(&log, 3, 2, "buildsignal", "build runner unavailable: 503");
}

#[tokio::test]
async fn buildsignal_dead_letter_of_an_unknown_build_is_acked() {
    let f = Fixture::new().with_request(request(3, RequestState::Processing));
    let (out, log) = handle(f, Topic::buildsignal(), &signal_letter("b-9")).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn dead_letter_naming_no_request_or_build_is_permanent() {
    let d = delivery(
        Topic::build().dlq(),
        json!({ "queue": "monorepo/main" }),
        Some("boom"),
    );
    let (out, log) = handle(Fixture::new(), Topic::build(), &d).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

/// The record reconciler runs record again: a cancelled request's slot is
/// released, and no request is failed.
#[tokio::test]
async fn record_dead_letter_reruns_record() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Cancelled))
        .with_queue(queue(Some(3), &[3], None));
    f.expect_queue_update();
    let d = request_letter(&Topic::record(), 3, Some("queue: still conflicting"));
    let (out, log) = handle(f, Topic::record(), &d).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["queues.update"]);
    let (q, expected, _) = w[0].queue_update();
    assert_eq!(expected, QUEUE_VERSION);
    assert!(!q.holds_slot(&rid(3)));
}

/// Record's own errors stay errors in the reconciler (the runtime retries
/// them, then parks the dead letter for an operator).
#[tokio::test]
async fn record_dead_letter_keeps_record_errors() {
    let f = Fixture::new().with_request(request(3, RequestState::Processing));
    let d = request_letter(&Topic::record(), 3, Some("boom"));
    let (out, log) = handle(f, Topic::record(), &d).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert!(log.writes().is_empty());
}
