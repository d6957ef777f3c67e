//! Contract of `BuildStore`: create/get, duplicates, conditional updates,
//! builds of a request oldest first, the outbox, and queue binding.
//!
//! Does not own: finding a build across queues (see `read_model`).

use crate::fixtures::{
    StoreFixture, T0, build, build_id, change, deliverable_ids, logged_subjects, message,
    outbox_topic, queue_a, queue_b, request_id,
};
use stovepipe_entity::{BuildReport, BuildStatus, Timestamp};
use stovepipe_ports::{Outbox, StoreError};

crate::suite!($, build_store, build_store_tests, StoreFixture, [
    create_then_get_and_unknown_is_none,
    duplicate_create_is_already_exists,
    update_is_a_conditional_write,
    update_of_missing_row_is_mismatch,
    outbox_commits_only_with_a_successful_write,
    list_for_request_is_oldest_first_and_only_that_request,
    entity_of_another_queue_is_wrong_queue,
    queues_are_isolated,
]);

fn outbox(subject: &str) -> Outbox {
    Outbox::none()
        .change(change(&queue_a(), subject))
        .publish(message(&outbox_topic(), "b", subject))
}

async fn create_then_get_and_unknown_is_none(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let b = build(&queue_a(), 1, "b-1");
    s.builds.create(&b, Outbox::none()).await.unwrap();
    assert_eq!(s.builds.get(&b.id).await.unwrap(), Some(b));
    assert_eq!(s.builds.get(&build_id("b-unknown")).await.unwrap(), None);
}

async fn duplicate_create_is_already_exists(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let b = build(&queue_a(), 1, "b-1");
    s.builds.create(&b, Outbox::none()).await.unwrap();
    let other = build(&queue_a(), 2, "b-1");
    let err = s.builds.create(&other, Outbox::none()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { .. }),
        "got {err:?}"
    );
    assert_eq!(s.builds.get(&b.id).await.unwrap(), Some(b));
}

async fn update_is_a_conditional_write(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let b = build(&queue_a(), 1, "b-1");
    s.builds.create(&b, Outbox::none()).await.unwrap();
    let mut running = b.clone();
    running
        .apply_report(
            &BuildReport::with_status(BuildStatus::Running),
            Timestamp(T0.0 + 1),
        )
        .unwrap();
    let err = s
        .builds
        .update(&running, 2, Outbox::none())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::VersionMismatch { expected: 2, .. }),
        "a stale expected version must be VersionMismatch, got {err:?}"
    );
    assert_eq!(s.builds.get(&b.id).await.unwrap(), Some(b));
    s.builds.update(&running, 1, Outbox::none()).await.unwrap();
    assert_eq!(s.builds.get(&running.id).await.unwrap(), Some(running));
}

async fn update_of_missing_row_is_mismatch(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let b = build(&queue_a(), 1, "b-ghost");
    let err = s.builds.update(&b, 1, Outbox::none()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::VersionMismatch { .. }),
        "got {err:?}"
    );
    assert_eq!(
        s.builds.get(&b.id).await.unwrap(),
        None,
        "update must not upsert"
    );
}

async fn outbox_commits_only_with_a_successful_write(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let b = build(&queue_a(), 1, "b-1");
    s.builds.create(&b, outbox("created")).await.unwrap();
    s.builds.create(&b, outbox("duplicate")).await.unwrap_err();
    s.builds.update(&b, 5, outbox("stale")).await.unwrap_err();
    assert_eq!(logged_subjects(&fx.feed).await, ["created"]);
    assert_eq!(
        deliverable_ids(&fx.messages, &outbox_topic()).await,
        ["created"]
    );
}

async fn list_for_request_is_oldest_first_and_only_that_request(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let mut first = build(&queue_a(), 1, "b-z");
    first.created_at = Timestamp(T0.0 + 1);
    let mut second = build(&queue_a(), 1, "b-a");
    second.created_at = Timestamp(T0.0 + 2);
    second.project = crate::fixtures::project("payments");
    let mut third = build(&queue_a(), 1, "b-m");
    third.created_at = Timestamp(T0.0 + 3);
    let unrelated = build(&queue_a(), 2, "b-other");
    // Inserted out of order, so insertion order or id order cannot pass.
    for b in [&second, &unrelated, &third, &first] {
        s.builds.create(b, Outbox::none()).await.unwrap();
    }
    let listed = s
        .builds
        .list_for_request(&request_id(&queue_a(), 1))
        .await
        .unwrap();
    assert_eq!(listed, [first, second, third]);
    assert!(
        s.builds
            .list_for_request(&request_id(&queue_a(), 9))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn entity_of_another_queue_is_wrong_queue(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let of_b = build(&queue_b(), 1, "b-1");
    let err = a.builds.create(&of_b, outbox("x")).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongQueue { .. }), "got {err:?}");
    let err = a.builds.update(&of_b, 1, outbox("y")).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongQueue { .. }), "got {err:?}");
    // The build says queue A but its request is of queue B.
    let mut mixed = build(&queue_b(), 1, "b-2");
    mixed.queue = queue_a();
    let err = a.builds.create(&mixed, Outbox::none()).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongQueue { .. }), "got {err:?}");
    assert!(logged_subjects(&fx.feed).await.is_empty());
}

async fn queues_are_isolated(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let b = fx.stores.for_queue(&queue_b());
    let of_b = build(&queue_b(), 1, "b-only-in-b");
    b.builds.create(&of_b, Outbox::none()).await.unwrap();
    assert_eq!(
        a.builds.get(&of_b.id).await.unwrap(),
        None,
        "A never sees B's builds"
    );
    assert_eq!(b.builds.get(&of_b.id).await.unwrap(), Some(of_b));
}
