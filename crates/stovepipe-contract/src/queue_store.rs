//! Contract of `QueueStore`: the one queue row of the bound queue, with
//! conditional updates and the outbox.
//!
//! Does not own: listing queues (see `read_model`).

use crate::fixtures::{
    StoreFixture, T0, change, deliverable_ids, logged_subjects, message, outbox_topic, queue_a,
    queue_b, request_id,
};
use stovepipe_entity::{Queue, Timestamp};
use stovepipe_ports::{Outbox, StoreError};

crate::suite!($, queue_store, queue_store_tests, StoreFixture, [
    get_before_create_is_none,
    create_then_get,
    duplicate_create_is_already_exists,
    update_with_expected_version_commits_row_and_outbox,
    update_with_stale_version_is_mismatch_without_outbox,
    update_of_missing_row_is_mismatch,
    queue_of_another_name_is_wrong_queue,
]);

fn outbox(subject: &str) -> Outbox {
    Outbox::none()
        .change(change(&queue_a(), subject))
        .publish(message(&outbox_topic(), "q", subject))
}

async fn get_before_create_is_none(fx: StoreFixture) {
    assert_eq!(
        fx.stores.for_queue(&queue_a()).queues.get().await.unwrap(),
        None
    );
}

async fn create_then_get(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let q = Queue::new(queue_a(), T0);
    s.queues.create(&q).await.unwrap();
    assert_eq!(s.queues.get().await.unwrap(), Some(q));
}

async fn duplicate_create_is_already_exists(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let q = Queue::new(queue_a(), T0);
    s.queues.create(&q).await.unwrap();
    let later = Queue::new(queue_a(), Timestamp(T0.0 + 99));
    let err = s.queues.create(&later).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { .. }),
        "got {err:?}"
    );
    assert_eq!(s.queues.get().await.unwrap(), Some(q));
}

async fn update_with_expected_version_commits_row_and_outbox(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let mut q = Queue::new(queue_a(), T0);
    s.queues.create(&q).await.unwrap();
    assert!(
        q.advance_latest(&request_id(&queue_a(), 3), Timestamp(T0.0 + 1))
            .unwrap()
    );
    s.queues.update(&q, 1, outbox("latest")).await.unwrap();
    assert_eq!(s.queues.get().await.unwrap(), Some(q));
    assert_eq!(logged_subjects(&fx.feed).await, ["latest"]);
    assert_eq!(
        deliverable_ids(&fx.messages, &outbox_topic()).await,
        ["latest"]
    );
}

async fn update_with_stale_version_is_mismatch_without_outbox(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let q = Queue::new(queue_a(), T0);
    s.queues.create(&q).await.unwrap();
    let mut moved = q.clone();
    moved
        .advance_latest(&request_id(&queue_a(), 3), Timestamp(T0.0 + 1))
        .unwrap();
    let err = s
        .queues
        .update(&moved, 2, outbox("stale"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::VersionMismatch { .. }),
        "got {err:?}"
    );
    assert_eq!(s.queues.get().await.unwrap(), Some(q));
    assert!(logged_subjects(&fx.feed).await.is_empty());
    assert!(
        deliverable_ids(&fx.messages, &outbox_topic())
            .await
            .is_empty()
    );
}

async fn update_of_missing_row_is_mismatch(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let q = Queue::new(queue_a(), T0);
    let err = s.queues.update(&q, 1, Outbox::none()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::VersionMismatch { .. }),
        "update of a never-created queue must be VersionMismatch, got {err:?}"
    );
    assert_eq!(
        s.queues.get().await.unwrap(),
        None,
        "update must not upsert"
    );
}

async fn queue_of_another_name_is_wrong_queue(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let qb = Queue::new(queue_b(), T0);
    let err = a.queues.create(&qb).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongQueue { .. }), "got {err:?}");
    let err = a.queues.update(&qb, 1, Outbox::none()).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongQueue { .. }), "got {err:?}");
    assert_eq!(a.queues.get().await.unwrap(), None);
    assert_eq!(
        fx.stores.for_queue(&queue_b()).queues.get().await.unwrap(),
        None
    );
}
