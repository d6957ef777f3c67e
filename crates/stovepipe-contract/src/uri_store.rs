//! Contract of `RequestUriStore`: the `(queue, uri) → request id` dedup
//! index. First writer keeps the entry; queues are independent.
//!
//! Does not own: the requests themselves (see `request_store`).

use crate::fixtures::{StoreFixture, queue_a, queue_b, request_id, uri};
use stovepipe_ports::StoreError;

crate::suite!($, uri_store, uri_store_tests, StoreFixture, [
    create_then_get,
    get_unindexed_is_none,
    indexed_uri_is_already_exists_and_keeps_the_first,
    request_id_of_another_queue_is_wrong_queue,
    queues_are_isolated,
]);

async fn create_then_get(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    s.request_uris
        .create(&uri("c1"), &request_id(&queue_a(), 1))
        .await
        .unwrap();
    assert_eq!(
        s.request_uris.get(&uri("c1")).await.unwrap(),
        Some(request_id(&queue_a(), 1))
    );
}

async fn get_unindexed_is_none(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    assert_eq!(s.request_uris.get(&uri("nothing")).await.unwrap(), None);
}

async fn indexed_uri_is_already_exists_and_keeps_the_first(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    s.request_uris
        .create(&uri("c1"), &request_id(&queue_a(), 1))
        .await
        .unwrap();
    for n in [1, 2] {
        let err = s
            .request_uris
            .create(&uri("c1"), &request_id(&queue_a(), n))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::AlreadyExists { .. }),
            "indexing an indexed URI again (request {n}) must be AlreadyExists, got {err:?}"
        );
    }
    assert_eq!(
        s.request_uris.get(&uri("c1")).await.unwrap(),
        Some(request_id(&queue_a(), 1)),
        "the first entry stays"
    );
}

async fn request_id_of_another_queue_is_wrong_queue(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let err = s
        .request_uris
        .create(&uri("c1"), &request_id(&queue_b(), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongQueue { .. }), "got {err:?}");
    assert_eq!(s.request_uris.get(&uri("c1")).await.unwrap(), None);
}

async fn queues_are_isolated(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let b = fx.stores.for_queue(&queue_b());
    a.request_uris
        .create(&uri("same"), &request_id(&queue_a(), 1))
        .await
        .unwrap();
    assert_eq!(b.request_uris.get(&uri("same")).await.unwrap(), None);
    b.request_uris
        .create(&uri("same"), &request_id(&queue_b(), 4))
        .await
        .unwrap();
    assert_eq!(
        a.request_uris.get(&uri("same")).await.unwrap(),
        Some(request_id(&queue_a(), 1))
    );
    assert_eq!(
        b.request_uris.get(&uri("same")).await.unwrap(),
        Some(request_id(&queue_b(), 4))
    );
}
