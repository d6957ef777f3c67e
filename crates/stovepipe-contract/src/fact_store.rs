//! Contract of `FactStore`: create-only facts keyed by `(uri, project)`,
//! first writer wins, and queue binding.
//!
//! Does not own: fact queries (see `read_model`).

use crate::fixtures::{
    StoreFixture, change, deliverable_ids, fact, logged_subjects, message, outbox_topic, project,
    queue_a, queue_b, uri,
};
use stovepipe_entity::ProjectName;
use stovepipe_ports::{Outbox, StoreError};

crate::suite!($, fact_store, fact_store_tests, StoreFixture, [
    create_then_get,
    get_without_fact_is_none,
    first_writer_wins,
    projects_are_distinct_facts,
    fact_of_another_queue_is_wrong_queue,
    queues_are_isolated,
]);

async fn create_then_get(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let f = fact(&queue_a(), &uri("c1"), &ProjectName::whole_repo(), 0.0, 1);
    s.facts.create(&f, Outbox::none()).await.unwrap();
    assert_eq!(s.facts.get(&f.uri, &f.project).await.unwrap(), Some(f));
}

async fn get_without_fact_is_none(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    assert_eq!(
        s.facts
            .get(&uri("c1"), &ProjectName::whole_repo())
            .await
            .unwrap(),
        None
    );
}

async fn first_writer_wins(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let whole = ProjectName::whole_repo();
    let green = fact(&queue_a(), &uri("c1"), &whole, 0.0, 1);
    let broken = fact(&queue_a(), &uri("c1"), &whole, 1.0, 2);
    let win = Outbox::none()
        .change(change(&queue_a(), "winner"))
        .publish(message(&outbox_topic(), "f", "winner"));
    let lose = Outbox::none()
        .change(change(&queue_a(), "loser"))
        .publish(message(&outbox_topic(), "g", "loser"));
    s.facts.create(&green, win).await.unwrap();
    let err = s.facts.create(&broken, lose).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { .. }),
        "a second fact for the same (uri, project) must be AlreadyExists, got {err:?}"
    );
    assert_eq!(
        s.facts.get(&green.uri, &whole).await.unwrap(),
        Some(green),
        "facts never change"
    );
    assert_eq!(logged_subjects(&fx.feed).await, ["winner"]);
    assert_eq!(
        deliverable_ids(&fx.messages, &outbox_topic()).await,
        ["winner"]
    );
}

async fn projects_are_distinct_facts(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let whole = fact(&queue_a(), &uri("c1"), &ProjectName::whole_repo(), 1.0, 1);
    let payments = fact(&queue_a(), &uri("c1"), &project("payments"), 0.0, 1);
    s.facts.create(&whole, Outbox::none()).await.unwrap();
    s.facts.create(&payments, Outbox::none()).await.unwrap();
    assert_eq!(
        s.facts.get(&whole.uri, &whole.project).await.unwrap(),
        Some(whole)
    );
    assert_eq!(
        s.facts.get(&payments.uri, &payments.project).await.unwrap(),
        Some(payments)
    );
}

async fn fact_of_another_queue_is_wrong_queue(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let of_b = fact(&queue_b(), &uri("c1"), &ProjectName::whole_repo(), 0.0, 1);
    let err = a.facts.create(&of_b, Outbox::none()).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongQueue { .. }), "got {err:?}");
    assert_eq!(a.facts.get(&of_b.uri, &of_b.project).await.unwrap(), None);
}

async fn queues_are_isolated(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let b = fx.stores.for_queue(&queue_b());
    let whole = ProjectName::whole_repo();
    let in_a = fact(&queue_a(), &uri("same"), &whole, 0.0, 1);
    let in_b = fact(&queue_b(), &uri("same"), &whole, 1.0, 1);
    a.facts.create(&in_a, Outbox::none()).await.unwrap();
    assert_eq!(b.facts.get(&uri("same"), &whole).await.unwrap(), None);
    b.facts.create(&in_b, Outbox::none()).await.unwrap();
    assert_eq!(a.facts.get(&uri("same"), &whole).await.unwrap(), Some(in_a));
    assert_eq!(b.facts.get(&uri("same"), &whole).await.unwrap(), Some(in_b));
}
