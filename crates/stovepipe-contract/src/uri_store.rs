//! Contract of `RequestUriStore`: the `(queue, uri) → request id` dedup
//! index and the numbering `mint` gives new ids: 1 first, strictly
//! increasing, never the same number twice even under concurrent callers,
//! one sequence per queue. First writer keeps the entry; queues are
//! independent.
//!
//! Does not own: the requests themselves (see `request_store`).

use crate::fixtures::{StoreFixture, queue_a, queue_b, request_id, uri};
use std::collections::HashSet;
use std::sync::Arc;
use stovepipe_ports::StoreError;

crate::suite!($, uri_store, uri_store_tests, StoreFixture, [
    mint_numbers_from_one_and_then_finds_the_entry,
    mint_numbers_strictly_increase,
    concurrent_mints_of_distinct_uris_get_distinct_numbers,
    concurrent_mints_of_one_uri_index_it_once,
    mint_finds_an_entry_made_by_create,
    queues_number_independently,
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

async fn mint_numbers_from_one_and_then_finds_the_entry(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    assert_eq!(
        s.request_uris.mint(&uri("c1")).await.unwrap(),
        (request_id(&queue_a(), 1), true),
        "a queue's first mint is number 1"
    );
    assert_eq!(
        s.request_uris.mint(&uri("c1")).await.unwrap(),
        (request_id(&queue_a(), 1), false),
        "minting an indexed URI finds its entry and numbers nothing"
    );
    assert_eq!(
        s.request_uris.get(&uri("c1")).await.unwrap(),
        Some(request_id(&queue_a(), 1))
    );
    assert_eq!(
        s.request_uris.mint(&uri("c2")).await.unwrap(),
        (request_id(&queue_a(), 2), true),
        "a hit spends no number"
    );
}

async fn mint_numbers_strictly_increase(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let mut last = 0;
    for i in 0..20 {
        let (id, minted) = s.request_uris.mint(&uri(&format!("c{i}"))).await.unwrap();
        assert!(minted, "c{i} was not indexed");
        assert!(
            id.number() > last,
            "numbers strictly increase: {id} after {last}"
        );
        last = id.number();
    }
}

async fn concurrent_mints_of_distinct_uris_get_distinct_numbers(fx: StoreFixture) {
    const CALLERS: usize = 16;
    const CALLS: usize = 10;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            // Each caller gets its own handle, as separate ingests would.
            let index = Arc::clone(&fx.stores.for_queue(&queue_a()).request_uris);
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(CALLS);
                for call in 0..CALLS {
                    let (id, minted) = index
                        .mint(&uri(&format!("c{caller}-{call}")))
                        .await
                        .unwrap();
                    assert!(minted, "c{caller}-{call} was not indexed");
                    seen.push(id.number());
                }
                seen
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        let seen = t.await.unwrap();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "one caller's numbers strictly increase: {seen:?}"
        );
        for n in seen {
            assert!(all.insert(n), "number {n} was handed out twice");
        }
    }
    assert_eq!(all.len(), CALLERS * CALLS);
    assert!(all.contains(&1), "the first number handed out is 1");
}

async fn concurrent_mints_of_one_uri_index_it_once(fx: StoreFixture) {
    const CALLERS: usize = 16;
    for round in 0..5 {
        let same = uri(&format!("same{round}"));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let index = Arc::clone(&fx.stores.for_queue(&queue_a()).request_uris);
                let same = same.clone();
                tokio::spawn(async move { index.mint(&same).await.unwrap() })
            })
            .collect();
        let mut ids = HashSet::new();
        let mut minted = 0;
        for t in tasks {
            let (id, created) = t.await.unwrap();
            ids.insert(id);
            minted += usize::from(created);
        }
        assert_eq!(ids.len(), 1, "round {round}: one id for one URI: {ids:?}");
        assert_eq!(minted, 1, "round {round}: exactly one caller indexed it");
        assert_eq!(
            fx.stores
                .for_queue(&queue_a())
                .request_uris
                .get(&same)
                .await
                .unwrap()
                .as_ref(),
            ids.iter().next(),
            "round {round}: the index holds the id every caller got"
        );
    }
}

async fn mint_finds_an_entry_made_by_create(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    s.request_uris
        .create(&uri("c1"), &request_id(&queue_a(), 9))
        .await
        .unwrap();
    assert_eq!(
        s.request_uris.mint(&uri("c1")).await.unwrap(),
        (request_id(&queue_a(), 9), false)
    );
}

async fn queues_number_independently(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let b = fx.stores.for_queue(&queue_b());
    let number = |minted: (stovepipe_entity::RequestId, bool)| {
        assert!(minted.1);
        minted.0.number()
    };
    assert_eq!(number(a.request_uris.mint(&uri("a1")).await.unwrap()), 1);
    assert_eq!(number(a.request_uris.mint(&uri("a2")).await.unwrap()), 2);
    let (id, minted) = b.request_uris.mint(&uri("a1")).await.unwrap();
    assert_eq!(
        (id, minted),
        (request_id(&queue_b(), 1), true),
        "queue B has its own index and numbering"
    );
    assert_eq!(number(a.request_uris.mint(&uri("a3")).await.unwrap()), 3);
}
