//! Contract of `Counter`: 1 first, strictly increasing, never the same
//! value twice even under concurrent callers, one counter per queue.
//!
//! Does not own: minting request ids from the values (ingest does).

use crate::fixtures::{StoreFixture, queue_a, queue_b};
use std::collections::HashSet;
use std::sync::Arc;

crate::suite!($, counter, counter_tests, StoreFixture, [
    starts_at_one_and_increases,
    concurrent_callers_get_unique_increasing_values,
    queues_count_independently,
]);

async fn starts_at_one_and_increases(fx: StoreFixture) {
    let c = fx.stores.for_queue(&queue_a()).counter;
    let mut last = c.next().await.unwrap();
    assert_eq!(last, 1, "the first value is 1");
    for _ in 0..20 {
        let v = c.next().await.unwrap();
        assert!(v > last, "values strictly increase: {v} after {last}");
        last = v;
    }
}

async fn concurrent_callers_get_unique_increasing_values(fx: StoreFixture) {
    const CALLERS: usize = 16;
    const CALLS: usize = 10;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            // Each caller gets its own handle, as separate stages would.
            let c = Arc::clone(&fx.stores.for_queue(&queue_a()).counter);
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(CALLS);
                for _ in 0..CALLS {
                    seen.push(c.next().await.unwrap());
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
            "one caller's values strictly increase: {seen:?}"
        );
        for v in seen {
            assert!(all.insert(v), "value {v} was handed out twice");
        }
    }
    assert_eq!(all.len(), CALLERS * CALLS);
    assert!(all.contains(&1), "the first value handed out is 1");
}

async fn queues_count_independently(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a()).counter;
    let b = fx.stores.for_queue(&queue_b()).counter;
    assert_eq!(a.next().await.unwrap(), 1);
    assert_eq!(a.next().await.unwrap(), 2);
    assert_eq!(b.next().await.unwrap(), 1, "queue B has its own counter");
    assert_eq!(a.next().await.unwrap(), 3);
}
