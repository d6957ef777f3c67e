//! Contract of `ChangeFeed`: sequence numbers strictly increasing from 1,
//! paging with `read_after`, live tailing in order, and `Lagged` (never a
//! silent skip) for a subscriber that falls behind its buffer.
//!
//! Does not own: what the changes mean, or SSE framing (the server's).

use crate::fixtures::{FeedFixture, change, queue_a};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use stovepipe_entity::{ChangeEvent, NewChange};
use stovepipe_ports::FeedError;

crate::suite!($, change_feed, change_feed_tests, FeedFixture, [
    empty_log_has_no_sequence,
    sequence_starts_at_one_and_increases,
    read_after_pages_ascending,
    concurrent_appends_get_distinct_increasing_sequences,
    subscribe_yields_later_events_in_order,
    slow_subscriber_gets_lagged_instead_of_a_gap,
]);

fn changes(prefix: &str, n: usize) -> Vec<NewChange> {
    (0..n)
        .map(|i| change(&queue_a(), &format!("{prefix}{i}")))
        .collect()
}

fn seqs(events: &[ChangeEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

async fn empty_log_has_no_sequence(fx: FeedFixture) {
    assert_eq!(fx.feed.last_seq().await.unwrap(), 0);
    assert_eq!(fx.feed.oldest_retained().await.unwrap(), None);
    assert!(fx.feed.read_after(0, 10).await.unwrap().is_empty());
}

async fn sequence_starts_at_one_and_increases(fx: FeedFixture) {
    let first = fx.feed.append(changes("a", 3)).await.unwrap();
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert_eq!(first[1].subject, "a1");
    assert_eq!(first[1].queue, Some(queue_a()));
    let second = fx.feed.append(changes("b", 2)).await.unwrap();
    assert_eq!(seqs(&second), [4, 5]);
    assert_eq!(fx.feed.last_seq().await.unwrap(), 5);
    assert_eq!(fx.feed.oldest_retained().await.unwrap(), Some(1));
    let stored = fx.feed.read_after(0, 10).await.unwrap();
    assert_eq!(stored, [first, second].concat(), "read back as appended");
}

async fn read_after_pages_ascending(fx: FeedFixture) {
    fx.feed.append(changes("c", 7)).await.unwrap();
    assert_eq!(seqs(&fx.feed.read_after(0, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(seqs(&fx.feed.read_after(3, 3).await.unwrap()), [4, 5, 6]);
    assert_eq!(seqs(&fx.feed.read_after(6, 3).await.unwrap()), [7]);
    assert!(fx.feed.read_after(7, 3).await.unwrap().is_empty());
    assert!(fx.feed.read_after(100, 3).await.unwrap().is_empty());
}

async fn concurrent_appends_get_distinct_increasing_sequences(fx: FeedFixture) {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let feed = Arc::clone(&fx.feed);
            tokio::spawn(async move { feed.append(changes(&format!("t{t}-"), 4)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0].seq < w[1].seq),
            "one append's events are in order: {:?}",
            seqs(&got)
        );
    }
    let all = seqs(&fx.feed.read_after(0, 100).await.unwrap());
    assert_eq!(all.len(), 32);
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {all:?}"
    );
}

async fn subscribe_yields_later_events_in_order(fx: FeedFixture) {
    fx.feed.append(changes("before", 2)).await.unwrap();
    let mut live = fx.feed.subscribe();
    fx.feed.append(changes("after", 3)).await.unwrap();
    fx.feed.append(changes("later", 1)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let next = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("a live event within 10 s")
            .expect("the stream is open")
            .expect("no lag");
        got.push((next.seq, next.subject));
    }
    let expected: Vec<_> = [(3, "after0"), (4, "after1"), (5, "after2"), (6, "later0")]
        .into_iter()
        .map(|(s, n)| (s, n.to_owned()))
        .collect();
    assert_eq!(got, expected, "only events after subscribe, in order");
}

async fn slow_subscriber_gets_lagged_instead_of_a_gap(fx: FeedFixture) {
    let mut live = fx.feed.subscribe();
    // Comfortably past the buffer, even if the adapter rounds it up.
    let overflow = fx.live_buffer * 4 + 8;
    for chunk in changes("flood", overflow).chunks(8) {
        fx.feed.append(chunk.to_vec()).await.unwrap();
    }
    let mut expected_seq = 1;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the stream yields within 10 s");
        match item {
            Some(Ok(e)) => {
                assert_eq!(e.seq, expected_seq, "events before the lag have no gap");
                expected_seq += 1;
                assert!(
                    expected_seq <= overflow as u64,
                    "a subscriber {overflow} events behind a {}-event buffer never saw Lagged",
                    fx.live_buffer
                );
            }
            Some(Err(FeedError::Lagged(_))) => break,
            Some(Err(e)) => panic!("expected Lagged, got {e:?}"),
            None => panic!(
                "the stream ended without Lagged after seq {}",
                expected_seq - 1
            ),
        }
    }
    let after = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("the stream ends promptly after Lagged");
    assert!(
        after.is_none(),
        "the stream ends after Lagged, got {after:?}"
    );
}
