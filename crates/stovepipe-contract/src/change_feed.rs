//! Contract of `ChangeFeed`: sequence numbers strictly increasing (gaps
//! allowed),
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
    sequence_increases_from_above_zero,
    read_after_pages_ascending,
    concurrent_appends_get_distinct_increasing_sequences,
    subscribe_yields_later_events_in_order,
    subscribers_share_each_event,
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

fn subjects(events: &[ChangeEvent]) -> Vec<&str> {
    events.iter().map(|e| e.subject.as_str()).collect()
}

fn increasing(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}

async fn empty_log_has_no_sequence(fx: FeedFixture) {
    assert_eq!(fx.feed.last_seq().await.unwrap(), 0);
    assert_eq!(fx.feed.removed_through().await.unwrap(), 0);
    assert!(fx.feed.read_after(0, 10).await.unwrap().is_empty());
}

async fn sequence_increases_from_above_zero(fx: FeedFixture) {
    let first = fx.feed.append(changes("a", 3)).await.unwrap();
    assert!(
        first[0].seq > 0,
        "numbers start above 0: {:?}",
        seqs(&first)
    );
    assert!(increasing(&seqs(&first)), "{:?}", seqs(&first));
    assert_eq!(subjects(&first), ["a0", "a1", "a2"]);
    assert_eq!(first[1].queue, Some(queue_a()));
    let second = fx.feed.append(changes("b", 2)).await.unwrap();
    let both = [first.clone(), second.clone()].concat();
    assert!(increasing(&seqs(&both)), "{:?}", seqs(&both));
    assert_eq!(fx.feed.last_seq().await.unwrap(), second[1].seq);
    assert_eq!(
        fx.feed.removed_through().await.unwrap(),
        0,
        "nothing removed"
    );
    let stored = fx.feed.read_after(0, 10).await.unwrap();
    assert_eq!(stored, both, "read back as appended");
}

async fn read_after_pages_ascending(fx: FeedFixture) {
    let all = fx.feed.append(changes("c", 7)).await.unwrap();
    let at = |i: usize| all[i].seq;
    assert_eq!(fx.feed.read_after(0, 3).await.unwrap(), all[..3]);
    assert_eq!(fx.feed.read_after(at(2), 3).await.unwrap(), all[3..6]);
    assert_eq!(fx.feed.read_after(at(5), 3).await.unwrap(), all[6..]);
    assert!(fx.feed.read_after(at(6), 3).await.unwrap().is_empty());
    assert!(
        fx.feed.read_after(at(6) + 100, 3).await.unwrap().is_empty(),
        "a cursor beyond the log"
    );
    // A cursor between two numbers reads from the next one.
    assert_eq!(fx.feed.read_after(at(3) - 1, 1).await.unwrap(), all[3..4]);
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
            increasing(&seqs(&got)),
            "one append's events are in order: {:?}",
            seqs(&got)
        );
    }
    let all = seqs(&fx.feed.read_after(0, 100).await.unwrap());
    assert_eq!(all.len(), 32);
    assert!(increasing(&all), "strictly increasing: {all:?}");
}

async fn subscribe_yields_later_events_in_order(fx: FeedFixture) {
    fx.feed.append(changes("before", 2)).await.unwrap();
    let mut live = fx.feed.subscribe();
    let mut appended = fx.feed.append(changes("after", 3)).await.unwrap();
    appended.extend(fx.feed.append(changes("later", 1)).await.unwrap());
    let mut got = Vec::new();
    for _ in 0..4 {
        let next = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("a live event within 10 s")
            .expect("the stream is open")
            .expect("no lag");
        got.push(Arc::unwrap_or_clone(next));
    }
    assert_eq!(
        subjects(&got),
        ["after0", "after1", "after2", "later0"],
        "only events after subscribe, in order"
    );
    assert_eq!(got, appended, "as append returned them");
}

/// Two subscribers get the same event, not a copy each: the live stream
/// costs a pointer per subscriber and event.
async fn subscribers_share_each_event(fx: FeedFixture) {
    let (mut one, mut other) = (fx.feed.subscribe(), fx.feed.subscribe());
    fx.feed.append(changes("shared", 1)).await.unwrap();
    let next = async |live: &mut stovepipe_ports::ChangeStream| {
        tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("a live event within 10 s")
            .expect("the stream is open")
            .expect("no lag")
    };
    let (a, b) = (next(&mut one).await, next(&mut other).await);
    assert_eq!(a.subject, "shared0");
    assert!(Arc::ptr_eq(&a, &b), "one event, shared by both subscribers");
}

async fn slow_subscriber_gets_lagged_instead_of_a_gap(fx: FeedFixture) {
    let mut live = fx.feed.subscribe();
    // Comfortably past the buffer, even if the adapter rounds it up.
    let overflow = fx.live_buffer * 4 + 8;
    for chunk in changes("flood", overflow).chunks(8) {
        fx.feed.append(chunk.to_vec()).await.unwrap();
    }
    let logged = fx.feed.read_after(0, overflow).await.unwrap();
    let mut seen = 0;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the stream yields within 10 s");
        match item {
            Some(Ok(e)) => {
                assert_eq!(*e, logged[seen], "events before the lag have no gap");
                seen += 1;
                assert!(
                    seen < overflow,
                    "a subscriber {overflow} events behind a {}-event buffer never saw Lagged",
                    fx.live_buffer
                );
            }
            Some(Err(FeedError::Lagged(_))) => break,
            Some(Err(e)) => panic!("expected Lagged, got {e:?}"),
            None => panic!("the stream ended without Lagged after {seen} events"),
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
