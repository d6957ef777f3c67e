//! Contract of the message queue's hand-offs (`MessageQueue::
//! accept_hand_offs`, the port's module docs), for adapters that offer
//! them: a store write's outbox message that is its partition's head is
//! handed to a consumer of its topic with a free slot, already leased,
//! instead of waiting for a `receive`; one behind a pending message, a
//! second of its partition in the same write, one whose consumer is full
//! or gone, and one of a refused write are not.
//!
//! The fixture's message queue is the store fixture's: the outbox is how
//! a hop is published in the pipeline.

use crate::fixtures::{StoreFixture, deliverable_ids, message, outbox_topic, queue_a, request};
use std::sync::Arc;
use std::time::Duration;
use stovepipe_ports::{HandOff, HandedOff, Outbox, StoreError, Stores};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedReceiver;

crate::suite!($, hand_off, hand_off_tests, StoreFixture, [
    a_written_head_is_handed_off_already_leased,
    a_message_behind_a_pending_one_is_received_instead,
    only_the_first_message_of_a_partition_in_a_write_is_handed_off,
    a_consumer_without_a_free_slot_is_not_handed_off,
    a_consumer_that_has_gone_is_not_handed_off,
    a_refused_write_hands_off_nothing_and_frees_the_slot,
]);

const LEASE: Duration = Duration::from_secs(30);

/// Offers a hand-off of the outbox topic with `slots` free slots.
fn offer(fx: &StoreFixture, slots: usize) -> (Arc<Semaphore>, UnboundedReceiver<HandedOff>) {
    let slots = Arc::new(Semaphore::new(slots));
    let (offer, handed) = HandOff::new(slots.clone(), LEASE);
    assert!(
        fx.messages.accept_hand_offs(&outbox_topic(), offer),
        "the adapter under this suite must offer hand-offs"
    );
    (slots, handed)
}

/// Writes request `n` of `queue_a` with `outbox`.
async fn write(s: &Stores, n: u64, outbox: Outbox) -> Result<(), StoreError> {
    s.requests.create(&request(&queue_a(), n), outbox).await
}

/// Publishes `(partition, id)` pairs in one write of request `n`.
async fn write_messages(s: &Stores, n: u64, messages: &[(&str, &str)]) {
    let mut outbox = Outbox::none();
    for (key, id) in messages {
        outbox = outbox.publish(message(&outbox_topic(), key, id));
    }
    write(s, n, outbox).await.unwrap();
}

/// The message ids handed off so far.
fn handed_ids(handed: &mut UnboundedReceiver<HandedOff>) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(h) = handed.try_recv() {
        ids.push(h.delivery.message_id);
    }
    ids.sort();
    ids
}

async fn a_written_head_is_handed_off_already_leased(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (slots, mut handed) = offer(&fx, 2);
    write_messages(&s, 1, &[("h", "m1")]).await;
    let h = handed
        .try_recv()
        .expect("the head must be handed off by the time the write returns");
    let d = &h.delivery;
    assert_eq!(
        (
            d.topic.clone(),
            d.partition_key.as_str(),
            d.message_id.as_str()
        ),
        (outbox_topic(), "h", "m1")
    );
    assert_eq!((d.attempt, d.last_error.clone()), (1, None));
    assert_eq!(d.payload, message(&outbox_topic(), "h", "m1").payload);
    assert_eq!(slots.available_permits(), 1, "the delivery holds a slot");
    assert!(
        deliverable_ids(&fx.messages, &outbox_topic())
            .await
            .is_empty(),
        "a handed-off message is leased: no receive may return it"
    );
    assert_eq!(
        fx.messages.next_visible_at(&outbox_topic()).await.unwrap(),
        Some(d.published_at.saturating_add(LEASE)),
        "it is leased for the hand-off's lease from its publication"
    );
    fx.messages.ack(d).await.unwrap();
    drop(h);
    assert_eq!(slots.available_permits(), 2);
    // The partition is empty again: the next head is handed off too.
    write_messages(&s, 2, &[("h", "m2")]).await;
    assert_eq!(handed_ids(&mut handed), ["m2"]);
}

async fn a_message_behind_a_pending_one_is_received_instead(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    fx.messages
        .publish(message(&outbox_topic(), "h", "m1"))
        .await
        .unwrap();
    let (slots, mut handed) = offer(&fx, 2);
    write_messages(&s, 1, &[("h", "m2")]).await;
    assert!(
        handed_ids(&mut handed).is_empty(),
        "m2 is behind m1: handing it off would break the partition's order"
    );
    assert_eq!(slots.available_permits(), 2, "the unused claim is freed");
    let first = fx
        .messages
        .receive(&outbox_topic(), "c", 10, LEASE)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message_id, "m1");
    fx.messages.ack(&first[0]).await.unwrap();
    assert_eq!(deliverable_ids(&fx.messages, &outbox_topic()).await, ["m2"]);
}

async fn only_the_first_message_of_a_partition_in_a_write_is_handed_off(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (slots, mut handed) = offer(&fx, 5);
    write_messages(&s, 1, &[("h", "m1"), ("h", "m2"), ("k", "m3")]).await;
    let mut got = Vec::new();
    while let Ok(h) = handed.try_recv() {
        got.push(h);
    }
    let mut ids: Vec<&str> = got.iter().map(|h| h.delivery.message_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["m1", "m3"]);
    assert_eq!(slots.available_permits(), 3);
    assert!(
        deliverable_ids(&fx.messages, &outbox_topic())
            .await
            .is_empty(),
        "m2 waits behind its partition's leased head"
    );
    for h in &got {
        fx.messages.ack(&h.delivery).await.unwrap();
    }
    assert_eq!(deliverable_ids(&fx.messages, &outbox_topic()).await, ["m2"]);
}

async fn a_consumer_without_a_free_slot_is_not_handed_off(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (_slots, mut handed) = offer(&fx, 0);
    write_messages(&s, 1, &[("h", "m1")]).await;
    assert!(handed_ids(&mut handed).is_empty());
    assert_eq!(deliverable_ids(&fx.messages, &outbox_topic()).await, ["m1"]);
}

async fn a_consumer_that_has_gone_is_not_handed_off(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (slots, handed) = offer(&fx, 2);
    drop(handed);
    write_messages(&s, 1, &[("h", "m1")]).await;
    assert_eq!(slots.available_permits(), 2);
    assert_eq!(deliverable_ids(&fx.messages, &outbox_topic()).await, ["m1"]);
}

async fn a_refused_write_hands_off_nothing_and_frees_the_slot(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    write(&s, 1, Outbox::none()).await.unwrap();
    let (slots, mut handed) = offer(&fx, 2);
    // Request 1 exists: creating it again is refused, with its outbox.
    let refused = write(
        &s,
        1,
        Outbox::none().publish(message(&outbox_topic(), "h", "m1")),
    )
    .await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists { .. })),
        "got {refused:?}"
    );
    assert!(handed_ids(&mut handed).is_empty());
    assert_eq!(slots.available_permits(), 2);
    assert!(
        deliverable_ids(&fx.messages, &outbox_topic())
            .await
            .is_empty(),
        "a refused write publishes nothing"
    );
}
