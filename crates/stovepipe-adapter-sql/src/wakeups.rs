//! Local wake-ups of a topic's consumers, counted so that a consumer does
//! not receive again for a wake-up its last receive already covered.
//!
//! Owns: per topic, a [`Notify`], the number of wake-ups so far, and that
//! number as the topic's latest receive began. A receive sees every commit
//! whose wake-up came before it began (wake-ups happen after the commit), so
//! only a wake-up counted after that is news. `wait` returns at once for
//! news and otherwise sleeps until the next wake-up or its timeout.
//! Before, each wake-up also left a permit for a consumer not yet waiting,
//! and the consumer that had just received the very message it announced
//! spent an empty receive on it (about 1.5 statements per validated
//! request in the pipeline benchmark).
//!
//! Does not own: when to wake (the backend after each commit, the NOTIFY
//! listener for other replicas).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use stovepipe_ports::Topic;
use tokio::sync::Notify;

/// Wake-ups of every topic seen in this process.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    topics: Mutex<HashMap<Topic, Arc<TopicWakeups>>>,
}

#[derive(Debug, Default)]
struct TopicWakeups {
    notify: Notify,
    /// Wake-ups so far.
    woken: AtomicU64,
    /// `woken` as the latest receive began (the highest, when receives
    /// overlap: a wake-up one of them covered is not news to the others
    /// either, since whichever receive found the message leased it).
    covered: AtomicU64,
}

impl Wakeups {
    fn topic(&self, topic: &Topic) -> Arc<TopicWakeups> {
        self.topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(topic.clone())
            .or_default()
            .clone()
    }

    /// Something may be deliverable on `topic` now.
    pub(crate) fn wake(&self, topic: &Topic) {
        let t = self.topic(topic);
        t.woken.fetch_add(1, Ordering::SeqCst);
        t.notify.notify_waiters();
    }

    /// Every topic (the NOTIFY connection was lost: anything may be news).
    pub(crate) fn wake_all(&self) {
        let all: Vec<Arc<TopicWakeups>> = self
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for t in all {
            t.woken.fetch_add(1, Ordering::SeqCst);
            t.notify.notify_waiters();
        }
    }

    /// A receive of `topic` is about to run: it covers every wake-up so far.
    pub(crate) fn receiving(&self, topic: &Topic) {
        let t = self.topic(topic);
        let woken = t.woken.load(Ordering::SeqCst);
        t.covered.fetch_max(woken, Ordering::SeqCst);
    }

    /// Returns at once when `topic` was woken since its latest receive
    /// began, else at the next wake-up or after `timeout`.
    pub(crate) async fn wait(&self, topic: &Topic, timeout: Duration) {
        let t = self.topic(topic);
        let notified = t.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a wake-up between the check and
        // the sleep still ends it.
        notified.as_mut().enable();
        if t.woken.load(Ordering::SeqCst) > t.covered.load(Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const LONG: Duration = Duration::from_secs(30);
    const SHORT: Duration = Duration::from_millis(50);

    fn topic() -> Topic {
        Topic::new("t")
    }

    #[tokio::test]
    async fn a_wake_up_before_the_wait_is_news_until_a_receive_covers_it() {
        let w = Wakeups::default();
        w.wake(&topic());
        let started = Instant::now();
        w.wait(&topic(), LONG).await;
        assert!(started.elapsed() < LONG / 2, "news: returned at once");

        w.receiving(&topic());
        let started = Instant::now();
        w.wait(&topic(), SHORT).await;
        assert!(
            started.elapsed() >= SHORT,
            "covered by the receive: slept until the timeout"
        );
    }

    #[tokio::test]
    async fn a_wake_up_during_the_wait_ends_it() {
        let w = Arc::new(Wakeups::default());
        w.receiving(&topic());
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                w.wait(&topic(), LONG).await;
                started.elapsed()
            })
        };
        // Wake until the waiter returns: it may not be waiting yet.
        while !waiter.is_finished() {
            w.wake(&topic());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(waiter.await.unwrap() < LONG / 2);
    }

    #[tokio::test]
    async fn topics_are_independent_and_wake_all_reaches_each() {
        let w = Wakeups::default();
        w.receiving(&topic());
        w.receiving(&Topic::new("other"));
        w.wake(&Topic::new("other"));
        let started = Instant::now();
        w.wait(&topic(), SHORT).await;
        assert!(started.elapsed() >= SHORT, "another topic's wake-up");

        w.wake_all();
        let started = Instant::now();
        w.wait(&topic(), LONG).await;
        assert!(started.elapsed() < LONG / 2);
    }

    #[tokio::test]
    async fn a_wake_up_during_a_receive_is_still_news() {
        let w = Wakeups::default();
        w.receiving(&topic());
        // The receive runs; a commit wakes meanwhile.
        w.wake(&topic());
        let started = Instant::now();
        w.wait(&topic(), LONG).await;
        assert!(
            started.elapsed() < LONG / 2,
            "the receive may have missed it"
        );
    }
}
