//! The reconcile loop repairs what a lost message or a crash leaves behind,
//! instead of trusting that every event arrived.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

#[macro_use]
mod support;

use std::time::Duration;

use stovepipe_app::runtime::settle;
use stovepipe_app::stages::buildsignal::BuildSignalStage;
use stovepipe_app::{Handler, RetryPolicy};
use stovepipe_entity::{ProjectName, RequestState};
use stovepipe_ports::{MessageQueue, Outbox, Topic};
use support::{Backend, World};

/// Takes every pending message of `topic` off the queue unhandled: the
/// message is lost, as after a broker failure.
async fn lose(w: &World, topic: Topic) -> usize {
    let mq: &dyn MessageQueue = &*w.backend;
    let lost = mq
        .receive(&topic, "thief", 100, Duration::from_mins(1))
        .await
        .unwrap();
    for d in &lost {
        mq.ack(d).await.unwrap();
    }
    lost.len()
}

fn past_grace(w: &World) {
    w.clock.advance(Duration::from_mins(2));
}

async fn a_lost_process_message_is_republished(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.push("A");
    w.ingest().await;
    assert_eq!(lose(&w, Topic::process()).await, 1);
    w.settle().await;
    assert_eq!(
        w.request(&w.id(1)).await.state,
        RequestState::Accepted,
        "stuck without its message"
    );

    let repairs = w.pipeline.reconciler().reconcile_all().await.unwrap();
    assert_eq!(
        repairs.process_republished, 0,
        "not before the grace period"
    );
    past_grace(&w);
    let repairs = w.pipeline.reconciler().reconcile_all().await.unwrap();
    assert_eq!(repairs.process_republished, 1);
    w.settle().await;
    assert_eq!(w.request(&w.id(1)).await.state, RequestState::Succeeded);
    assert!(w.fact(&w.uri("A")).await.unwrap().is_green());
}

async fn a_verdict_without_a_fact_gets_record_republished(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.runner.set_polls_before_finish(1);
    w.push("A");
    w.ingest().await;
    w.step().await;
    // Run one buildsignal poll by hand (the pump would run record right
    // after it), then lose the record hop it published.
    w.clock.advance(Duration::from_secs(10));
    let mq: &dyn MessageQueue = &*w.backend;
    let polls = mq
        .receive(&Topic::buildsignal(), "me", 1, Duration::from_mins(1))
        .await
        .unwrap();
    let stage = BuildSignalStage::new(w.pipeline.deps().clone());
    let outcome = stage.handle(&polls[0]).await;
    settle(mq, &RetryPolicy::default(), &polls[0], outcome)
        .await
        .unwrap();
    assert_eq!(
        w.request(&w.id(1)).await.state,
        RequestState::Succeeded,
        "outcome stamped"
    );
    assert_eq!(lose(&w, Topic::record()).await, 1);
    w.settle().await;
    assert!(w.fact(&w.uri("A")).await.is_none(), "record never ran");
    assert_eq!(
        w.queue_row().await.in_flight_count(),
        1,
        "the slot is still held"
    );

    past_grace(&w);
    let repairs = w.pipeline.reconciler().reconcile_all().await.unwrap();
    assert_eq!(repairs.records_republished, 1);
    assert_eq!(
        repairs.slots_released, 0,
        "the slot waits for record, which moves the bookmark first"
    );
    w.settle().await;
    assert!(w.fact(&w.uri("A")).await.unwrap().is_green());
    assert_eq!(w.queue_row().await.in_flight_count(), 0);
    assert_eq!(w.queue_row().await.last_green.unwrap().uri, w.uri("A"));
}

async fn a_build_whose_poll_chain_was_lost_fails_closed_after_max_validation(backend: Backend) {
    let Some(w) = World::on(backend, |c| c.max_validation = Duration::from_mins(10)).await else {
        return;
    };
    w.runner.set_default_never_finishes();
    w.push("A");
    w.ingest().await;
    w.step().await;
    w.clock.advance(Duration::from_secs(10));
    assert_eq!(
        lose(&w, Topic::buildsignal()).await,
        1,
        "the held poll chain, once visible"
    );
    w.settle().await;
    assert_eq!(w.request(&w.id(1)).await.state, RequestState::Processing);

    w.clock.advance(Duration::from_mins(11));
    let repairs = w.pipeline.reconciler().reconcile_all().await.unwrap();
    assert_eq!(repairs.failed_closed, 1);
    w.settle().await;
    let r = w.request(&w.id(1)).await;
    assert!(r.failed_closed && r.state == RequestState::Failed, "{r:?}");
    assert_eq!(w.runner.cancels().len(), 1, "the build is cancelled");
    assert_eq!(w.queue_row().await.in_flight_count(), 0);
    assert!(
        w.fact(&w.uri("A")).await.is_none(),
        "no fact: error, not broken"
    );
}

async fn a_slot_leaked_by_a_settled_request_is_released(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    w.push("A");
    w.ingest().await;
    w.settle().await;
    // Simulate a crash that left request 1's slot claimed after its verdict
    // was recorded (the release write never happened).
    let stores = stovepipe_ports::StoreFactory::for_queue(&*w.backend, &w.queue);
    let mut q = w.queue_row().await;
    let expected = q.version;
    q.claim_slot(&w.id(1), stovepipe_ports::Clock::now(&w.clock))
        .unwrap();
    stores
        .queues
        .update(&q, expected, Outbox::none())
        .await
        .unwrap();
    assert_eq!(w.queue_row().await.in_flight_count(), 1);

    // The next head is gated by the leak…
    w.push("B");
    w.ingest().await;
    w.step().await;
    assert_eq!(w.request(&w.id(2)).await.state, RequestState::Accepted);
    // …until the reconcile loop releases it.
    past_grace(&w);
    let repairs = w.pipeline.reconciler().reconcile_all().await.unwrap();
    assert_eq!(repairs.slots_released, 1);
    w.settle().await;
    assert!(w.fact(&w.uri("B")).await.unwrap().is_green());
    assert!(
        stores
            .facts
            .get(&w.uri("A"), &ProjectName::whole_repo())
            .await
            .unwrap()
            .is_some()
    );
}

async fn a_healthy_queue_needs_no_repair(backend: Backend) {
    let Some(w) = World::on(backend, |_| {}).await else {
        return;
    };
    for c in ["A", "B", "C"] {
        w.push_and_ingest(c).await;
    }
    w.settle().await;
    past_grace(&w);
    let repairs = w.pipeline.reconciler().reconcile_all().await.unwrap();
    assert_eq!(repairs.total(), 0, "{repairs:?}");
}

on_every_backend!(
    a_lost_process_message_is_republished,
    a_verdict_without_a_fact_gets_record_republished,
    a_build_whose_poll_chain_was_lost_fails_closed_after_max_validation,
    a_slot_leaked_by_a_settled_request_is_released,
    a_healthy_queue_needs_no_repair,
);
