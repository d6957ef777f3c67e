//! Scenario tests (quality.md layer 3): the whole pipeline with a manual
//! clock, every scenario on every backend (memory, SQLite, Postgres).

#![allow(clippy::unwrap_used)] // scenarios are tests: a failure is a test failure

#[macro_use]
mod support;

use stovepipe_entity::{BuildStatus, BuildStrategy, ChangeKind, Degree, RequestState, Uri};
use stovepipe_ports::{Clock as _, RunnerError, Topic};
use support::{Backend, World, secs};

/// Heads A→F with max_concurrent = 1: A is in flight while B, C, D arrive;
/// D is in flight while E, F arrive. A, D, F are validated; B, C, E are
/// superseded; the slot set ends empty.
async fn coalescing_walk_a_to_f(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.runner.set_polls_before_finish(1);

    w.push_and_ingest("A").await;
    w.until("A processing", async |w| {
        w.request(&w.id(1)).await.state == RequestState::Processing
    })
    .await;
    for c in ["B", "C", "D"] {
        w.push_and_ingest(c).await;
    }
    w.until("D processing", async |w| {
        w.request(&w.id(4)).await.state == RequestState::Processing
    })
    .await;
    assert_eq!(w.request(&w.id(2)).await.state, RequestState::Superseded);
    assert_eq!(w.request(&w.id(3)).await.state, RequestState::Superseded);
    assert_eq!(w.request(&w.id(1)).await.state, RequestState::Succeeded);
    for c in ["E", "F"] {
        w.push_and_ingest(c).await;
    }
    w.settle().await;

    let mut states = Vec::new();
    for n in 1..=6 {
        states.push(w.request(&w.id(n)).await.state);
    }
    let (ok, skip) = (RequestState::Succeeded, RequestState::Superseded);
    assert_eq!(states, [ok, skip, skip, ok, skip, ok]);
    assert_eq!(
        w.runner.triggers().len(),
        3,
        "exactly one build per validated head"
    );

    let d = w.request(&w.id(4)).await;
    assert_eq!(d.build_strategy, Some(BuildStrategy::IncrementalSinceGreen));
    assert_eq!(
        d.base_uri,
        Some(w.uri("A")),
        "D builds since the freshest green, A"
    );
    let f = w.request(&w.id(6)).await;
    assert_eq!(f.base_uri, Some(w.uri("D")));

    let q = w.queue_row().await;
    assert_eq!(q.in_flight_count(), 0);
    assert_eq!(q.last_green.as_ref().unwrap().uri, w.uri("F"));
    assert_eq!(w.repo.promoted(), Some(w.uri("F")));
    for c in ["A", "D", "F"] {
        assert!(w.fact(&w.uri(c)).await.unwrap().is_green(), "{c} green");
    }
    for c in ["B", "C", "E"] {
        assert!(w.fact(&w.uri(c)).await.is_none(), "{c} skipped, no fact");
    }
    assert_eq!(w.change_count(ChangeKind::ValidationRecorded).await, 3);
    assert_eq!(w.change_count(ChangeKind::LastGreenAdvanced).await, 3);
}

async fn first_request_builds_in_full_then_incrementally(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.push_and_ingest("A").await;
    w.settle().await;
    w.push_and_ingest("B").await;
    w.settle().await;
    let a = w.request(&w.id(1)).await;
    assert_eq!(
        (a.build_strategy, a.base_uri),
        (Some(BuildStrategy::Full), None)
    );
    let triggers = w.runner.triggers();
    assert_eq!(triggers[0].base, None);
    assert_eq!(triggers[1].base, Some(w.uri("A")));
    assert_eq!(triggers[1].head, w.uri("B"));
}

async fn history_rewrite_forces_a_full_build(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.push("root");
    w.push_and_ingest("A").await;
    w.settle().await;
    // Force-push: A2 replaces A on top of root; A is no longer an ancestor.
    w.repo.commit("A2", &["root"]);
    w.repo.set_head("A2");
    w.ingest().await;
    w.settle().await;
    let r = w.request(&w.id(2)).await;
    assert_eq!(r.state, RequestState::Succeeded);
    assert_eq!(
        (r.build_strategy, r.base_uri),
        (Some(BuildStrategy::Full), None)
    );
    assert_eq!(w.runner.triggers()[1].base, None);
    assert_eq!(w.queue_row().await.last_green.unwrap().uri, w.uri("A2"));
    assert_eq!(w.repo.promoted(), Some(w.uri("A2")));
}

async fn failure_keeps_last_green(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.push_and_ingest("A").await;
    w.settle().await;
    let b = w.push("B");
    w.runner.set_outcome(&b, BuildStatus::Failed);
    w.ingest().await;
    w.settle().await;
    let fact = w.fact(&b).await.unwrap();
    assert_eq!(fact.degree, Degree::BROKEN);
    assert_eq!(w.request(&w.id(2)).await.state, RequestState::Failed);
    assert!(!w.request(&w.id(2)).await.failed_closed);
    let q = w.queue_row().await;
    assert_eq!(q.last_green.as_ref().unwrap().uri, w.uri("A"));
    assert_eq!(q.in_flight_count(), 0);
    assert_eq!(w.repo.promoted(), Some(w.uri("A")));
    // The next head still builds since A, the last green.
    w.push_and_ingest("C").await;
    w.settle().await;
    assert_eq!(w.request(&w.id(3)).await.base_uri, Some(w.uri("A")));
}

/// On a queue with two slots: A is admitted and its build does not finish
/// (until the test says so), then B is pushed and ingested. Returns A's URI.
async fn a_builds_while_b_is_ingested(w: &World) -> Uri {
    let a = w.push("A");
    w.runner.set_never_finishes(&a);
    w.ingest().await;
    w.step().await;
    w.push_and_ingest("B").await;
    a
}

/// With two slots, B (newer) goes green before A (older): the bookmark and
/// the promotion ref stay on B when A's green arrives late.
async fn late_older_green_never_moves_the_bookmark_back(backend: Backend) {
    let Some(w) = World::on(backend, |c| c.max_concurrent = 2).await else {
        return;
    };
    let a = a_builds_while_b_is_ingested(&w).await;
    w.until("B recorded", async |w| w.fact(&w.uri("B")).await.is_some())
        .await;
    assert_eq!(w.request(&w.id(1)).await.state, RequestState::Processing);
    assert_eq!(w.queue_row().await.last_green.unwrap().uri, w.uri("B"));

    w.runner.set_outcome(&a, BuildStatus::Succeeded);
    w.settle().await;
    assert!(
        w.fact(&a).await.unwrap().is_green(),
        "A's fact is still recorded"
    );
    let q = w.queue_row().await;
    assert_eq!(
        q.last_green.as_ref().unwrap().uri,
        w.uri("B"),
        "bookmark never moves back"
    );
    assert_eq!(
        w.repo.promoted(),
        Some(w.uri("B")),
        "promotion only by the holder"
    );
    assert_eq!(q.in_flight_count(), 0);
    assert_eq!(w.change_count(ChangeKind::LastGreenAdvanced).await, 1);
}

/// Without a promotion ref, record moves the bookmark and releases the slot
/// in one write: B's green frees its slot while A still holds its own, and
/// A's late green releases without moving the bookmark back.
async fn without_promotion_the_bookmark_and_the_release_are_one_write(backend: Backend) {
    let Some(w) = World::on(backend, |c| {
        c.max_concurrent = 2;
        c.promotion_ref = None;
    })
    .await
    else {
        return;
    };
    let a = a_builds_while_b_is_ingested(&w).await;
    w.until("B released", async |w| {
        !w.queue_row().await.holds_slot(&w.id(2))
    })
    .await;
    assert!(w.fact(&w.uri("B")).await.unwrap().is_green());
    let q = w.queue_row().await;
    assert_eq!(
        q.last_green.as_ref().unwrap().uri,
        w.uri("B"),
        "the bookmark moved with B's release"
    );
    assert!(q.holds_slot(&w.id(1)), "A still builds");

    w.runner.set_outcome(&a, BuildStatus::Succeeded);
    w.settle().await;
    assert!(w.fact(&a).await.unwrap().is_green());
    let q = w.queue_row().await;
    assert_eq!(
        q.last_green.as_ref().unwrap().uri,
        w.uri("B"),
        "bookmark never moves back"
    );
    assert_eq!(q.in_flight_count(), 0, "A released too");
    assert_eq!(w.repo.promoted(), None, "nothing to promote");
    assert_eq!(w.change_count(ChangeKind::LastGreenAdvanced).await, 1);
}

async fn promotion_is_skipped_when_the_commit_left_the_branch(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.push("root");
    w.push_and_ingest("A").await;
    w.settle().await;
    w.runner.set_polls_before_finish(1);
    w.push_and_ingest("B").await;
    w.until("B building", async |w| {
        w.request(&w.id(2)).await.state == RequestState::Processing
    })
    .await;
    // B is force-pushed away while its build runs.
    w.repo.commit("B2", &["root"]);
    w.repo.set_head("B2");
    w.settle().await;
    assert!(w.fact(&w.uri("B")).await.unwrap().is_green());
    assert_eq!(w.queue_row().await.last_green.unwrap().uri, w.uri("B"));
    assert_eq!(
        w.repo.promoted(),
        Some(w.uri("A")),
        "the ref never points off the branch"
    );
    assert_eq!(w.queue_row().await.in_flight_count(), 0);
}

async fn hung_build_fails_closed_after_max_validation(backend: Backend) {
    let Some(w) = World::on(backend, |c| c.max_validation = secs(600)).await else {
        return;
    };
    w.runner.set_default_never_finishes();
    w.push_and_ingest("A").await;
    w.settle().await;
    let r = w.request(&w.id(1)).await;
    assert_eq!(r.state, RequestState::Failed);
    assert!(r.failed_closed);
    assert!(
        r.failure_reason
            .as_deref()
            .unwrap()
            .contains("max_validation"),
        "{r:?}"
    );
    assert_eq!(w.runner.cancels().len(), 1, "the hung build is cancelled");
    assert!(
        w.fact(&w.uri("A")).await.is_none(),
        "no fact: unknown is never green nor broken"
    );
    assert_eq!(w.queue_row().await.in_flight_count(), 0);
    assert_eq!(w.change_count(ChangeKind::ValidationError).await, 1);
    // The queue keeps working.
    w.runner.set_default_outcome(BuildStatus::Succeeded);
    w.push_and_ingest("B").await;
    w.settle().await;
    assert_eq!(w.queue_row().await.last_green.unwrap().uri, w.uri("B"));
}

async fn a_build_that_cannot_be_triggered_fails_closed_through_the_dead_letter_reconciler(
    backend: Backend,
) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.runner
        .fail_trigger_with(RunnerError::Rejected("401 bad credentials".into()));
    w.push_and_ingest("A").await;
    w.settle().await;
    let r = w.request(&w.id(1)).await;
    assert_eq!(r.state, RequestState::Failed);
    assert!(r.failed_closed);
    assert!(
        r.failure_reason
            .as_deref()
            .unwrap()
            .contains("build dead-lettered"),
        "{r:?}"
    );
    assert!(
        r.failure_reason.as_deref().unwrap().contains("401"),
        "{r:?}"
    );
    assert!(w.fact(&w.uri("A")).await.is_none());
    assert_eq!(w.queue_row().await.in_flight_count(), 0);
    let dead = w
        .backend
        .dead_letters(Some(Topic::build()), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
}

async fn retryable_failures_are_retried_then_dead_lettered(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    for _ in 0..5 {
        w.runner
            .fail_trigger_with(RunnerError::Unavailable("503".into()));
    }
    w.push_and_ingest("A").await;
    w.settle().await;
    let r = w.request(&w.id(1)).await;
    assert!(r.failed_closed, "{r:?}");
    assert!(
        r.failure_reason
            .as_deref()
            .unwrap()
            .contains("after 5 attempts"),
        "{r:?}"
    );

    // Four transient failures are absorbed by retries.
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    for _ in 0..4 {
        w.runner
            .fail_trigger_with(RunnerError::Unavailable("503".into()));
    }
    w.push_and_ingest("A").await;
    w.settle().await;
    assert_eq!(w.request(&w.id(1)).await.state, RequestState::Succeeded);
}

async fn redelivered_ingest_is_deduplicated(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.push("A");
    let first = w.ingest().await;
    let second = w.ingest().await;
    assert!(first.created && !second.created);
    assert_eq!(first.request_id, second.request_id);
    w.settle().await;
    let third = w.ingest().await;
    assert_eq!(third.state, RequestState::Succeeded);
    assert_eq!(w.runner.triggers().len(), 1);
}

/// The external-runner style: statuses are told, not polled; buildsignal
/// reads the stored build and holds until a report lands.
async fn reported_builds_wait_for_their_report(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.runner.set_reports_via_api(true);
    w.push_and_ingest("A").await;
    w.step().await;
    for _ in 0..5 {
        w.tick().await;
    }
    assert_eq!(w.request(&w.id(1)).await.state, RequestState::Processing);
    assert!(
        w.backend
            .next_visible_at(&Topic::buildsignal())
            .await
            .unwrap()
            .is_some(),
        "poll chain held"
    );
}

/// The commit timeline tells every status apart, and only a green fact is
/// green.
async fn commit_statuses_tell_green_broken_skipped_error_pending_and_not_validated(
    backend: Backend,
) {
    use stovepipe_app::CommitStatus as S;
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.runner.set_polls_before_finish(1);
    w.push_and_ingest("green").await; // validated green
    w.step().await;
    w.push_and_ingest("skipped").await; // superseded by "broken"
    let broken = w.push("broken");
    w.runner.set_outcome(&broken, BuildStatus::Failed);
    w.ingest().await;
    w.settle().await;
    let error = w.push("error");
    w.runner
        .fail_trigger_with(RunnerError::Rejected("403".into()));
    w.ingest().await;
    w.settle().await;
    w.push("unseen"); // never ingested
    let pending = w.push("pending");
    w.runner.set_never_finishes(&pending);
    w.ingest().await;
    w.step().await;

    let page = w
        .pipeline
        .query()
        .commits(w.queue.as_str(), None, 50)
        .await
        .unwrap();
    let got: Vec<_> = page
        .items
        .iter()
        .map(|c| (c.uri.clone(), c.status))
        .collect();
    assert_eq!(
        got,
        [
            (pending.clone(), S::Pending),
            (w.uri("unseen"), S::NotValidated),
            (error, S::Error),
            (broken.clone(), S::Broken),
            (w.uri("skipped"), S::Skipped),
            (w.uri("green"), S::Green),
        ]
    );
    let g = w
        .pipeline
        .query()
        .greenness(w.queue.as_str(), None, Some(broken.as_str()), None)
        .await
        .unwrap();
    assert_eq!((g.status, g.degree), (S::Broken, Some(Degree::BROKEN)));
    let g = w
        .pipeline
        .query()
        .greenness(w.queue.as_str(), None, Some(pending.as_str()), None)
        .await
        .unwrap();
    assert_eq!((g.status, g.degree), (S::Pending, None));
    let last = w
        .pipeline
        .query()
        .last_green(w.queue.as_str(), None)
        .await
        .unwrap();
    assert_eq!(last.uri, w.uri("green"));
    assert!(matches!(
        w.pipeline.query().last_green("other/queue", None).await,
        Err(stovepipe_app::QueryError::UnknownQueue(_))
    ));
}

/// An outside CI reports through the report service: the report wakes the
/// held poll chain, a contradicting report on a terminal build conflicts.
async fn external_reports_drive_the_pipeline(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.runner.set_reports_via_api(true);
    w.push_and_ingest("A").await;
    w.step().await;
    let build = w
        .backend
        .for_queue(&w.queue)
        .builds
        .list_for_request(&w.id(1))
        .await
        .unwrap()
        .remove(0);
    let reports = w.pipeline.reports();
    let succeeded = stovepipe_entity::BuildReport::with_status(BuildStatus::Succeeded);
    reports.report(&build.id, &succeeded).await.unwrap();
    // No time passes: the wake-up alone moves the pipeline.
    w.step().await;
    assert!(w.fact(&w.uri("A")).await.unwrap().is_green());
    // The same report again is fine; another terminal status conflicts.
    reports.report(&build.id, &succeeded).await.unwrap();
    let failed = stovepipe_entity::BuildReport::with_status(BuildStatus::Failed);
    assert!(matches!(
        reports.report(&build.id, &failed).await,
        Err(stovepipe_app::ReportError::Conflict(_))
    ));
    let unknown = stovepipe_entity::BuildId::new("nope").unwrap();
    assert!(matches!(
        reports.report(&unknown, &succeeded).await,
        Err(stovepipe_app::ReportError::NotFound(_))
    ));
}

/// A request failed closed while its build still runs: the poll chain stops
/// and the build is cancelled, instead of polling forever.
async fn a_failed_closed_request_stops_its_poll_chain(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.runner.set_default_never_finishes();
    w.push_and_ingest("A").await;
    w.step().await;
    let stores = w.backend.for_queue(&w.queue);
    stovepipe_app::fail_closed::fail_closed(w.pipeline.deps(), &stores, &w.id(1), "operator: test")
        .await
        .unwrap();
    w.settle().await;
    assert!(
        !w.has_pending(&Topic::buildsignal()).await,
        "no poll chain left"
    );
    assert_eq!(w.runner.cancels().len(), 1);
    assert_eq!(w.queue_row().await.in_flight_count(), 0);
}

/// A head held at the closed gate is let in the moment the slot frees, not
/// when its hold runs out: record wakes the queue's `process` partition
/// when it releases a slot and a newer head is waiting.
async fn a_released_slot_opens_the_gate_at_once(backend: Backend) {
    let hold = secs(3600);
    let Some(w) = World::on(backend, |c| c.gate_wait_delay = hold).await else {
        return;
    };
    w.runner.set_polls_before_finish(1);
    let start = w.clock.now();
    w.push_and_ingest("A").await;
    w.until("A processing", async |w| {
        w.request(&w.id(1)).await.state == RequestState::Processing
    })
    .await;
    w.push_and_ingest("B").await;
    w.step().await;
    assert_eq!(
        w.request(&w.id(2)).await.state,
        RequestState::Accepted,
        "B is held at the gate while A builds"
    );
    w.until("B admitted", async |w| {
        w.request(&w.id(2)).await.state == RequestState::Processing
    })
    .await;
    assert!(w.fact(&w.uri("A")).await.unwrap().is_green());
    assert!(
        w.clock.now().since(start) < hold,
        "B was admitted {:?} after the start, before its {hold:?} hold ran out",
        w.clock.now().since(start)
    );
    w.settle().await;
    assert!(w.fact(&w.uri("B")).await.unwrap().is_green());
}

on_every_backend!(
    a_released_slot_opens_the_gate_at_once,
    coalescing_walk_a_to_f,
    first_request_builds_in_full_then_incrementally,
    history_rewrite_forces_a_full_build,
    failure_keeps_last_green,
    late_older_green_never_moves_the_bookmark_back,
    without_promotion_the_bookmark_and_the_release_are_one_write,
    promotion_is_skipped_when_the_commit_left_the_branch,
    hung_build_fails_closed_after_max_validation,
    a_build_that_cannot_be_triggered_fails_closed_through_the_dead_letter_reconciler,
    retryable_failures_are_retried_then_dead_lettered,
    redelivered_ingest_is_deduplicated,
    reported_builds_wait_for_their_report,
    commit_statuses_tell_green_broken_skipped_error_pending_and_not_validated,
    external_reports_drive_the_pipeline,
    a_failed_closed_request_stops_its_poll_chain,
);
