//! Group commit: work that arrives while earlier work is being written
//! goes out together when a lane frees up.
//!
//! An item joins the pending list and waits for its answer or one of the
//! lanes, whichever comes first. The caller that gets a lane takes every
//! pending item (in chunks of at most `max_batch`), hands each chunk to
//! the flush, which answers every item of it, and then returns its own
//! answer, given by its own flush or by another lane's. A caller whose
//! item another caller's flush answered returns then, without taking a
//! lane (until 2026-12-07 it queued for one all the same, so the answered
//! items of a batch took the lane in turn, task after task, ahead of the
//! next batch). An item that finds a lane free and nothing pending is
//! flushed alone at once, so an idle backend pays no latency for this. The
//! users are `acks` (one lane: every ack of a chunk in one statement) and
//! `write_batch` (the stores' writes in one transaction).
//!
//! An item whose caller went away while it waited is still flushed with
//! the others (its answer is dropped). If the caller holding a lane is
//! cancelled half way, the items it had taken and not yet answered get
//! the `abandoned` answer.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::sync::{Semaphore, oneshot};

/// One item waiting for its flush, and where its answer goes.
pub(crate) struct Pending<I, A> {
    pub(crate) item: I,
    pub(crate) done: oneshot::Sender<A>,
}

impl<I, A> Pending<I, A> {
    /// Gives the item its answer (dropped when its caller went away).
    pub(crate) fn answer(self, answer: A) {
        let _ = self.done.send(answer);
    }
}

/// The pending items of one kind and the lanes that flush them.
pub(crate) struct GroupCommit<I, A> {
    pending: Mutex<Vec<Pending<I, A>>>,
    /// A permit per flush in flight.
    lanes: Semaphore,
    lane_count: usize,
    max_batch: usize,
}

impl<I, A> GroupCommit<I, A> {
    /// At most `lanes` flushes in flight, each of at most `max_batch`
    /// items (each at least 1).
    pub(crate) fn new(lanes: usize, max_batch: usize) -> Self {
        let lanes = lanes.max(1);
        Self {
            pending: Mutex::new(Vec::new()),
            lanes: Semaphore::new(lanes),
            lane_count: lanes,
            max_batch: max_batch.max(1),
        }
    }

    /// Submits `item` and returns its answer: `flush` runs on each chunk
    /// this caller takes and must answer every item of it; `abandoned` is
    /// the answer when the flush that took the item stopped before
    /// answering it.
    pub(crate) async fn submit<F, Fut>(&self, item: I, abandoned: fn() -> A, flush: F) -> A
    where
        F: Fn(Vec<Pending<I, A>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (done, mut answer) = oneshot::channel();
        self.lock_pending().push(Pending { item, done });
        // The lane or the answer, whichever comes first: an item that
        // another caller's flush answered returns at once instead of
        // queueing for a lane it no longer needs.
        let lane = tokio::select! {
            biased;
            answered = &mut answer => return answered.unwrap_or_else(|_| abandoned()),
            lane = self.lanes.acquire() => lane,
        };
        // The semaphore is never closed.
        let Ok(lane) = lane else {
            return abandoned();
        };
        match answer.try_recv() {
            Ok(answered) => return answered,
            Err(oneshot::error::TryRecvError::Closed) => return abandoned(),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let taken = std::mem::take(&mut *self.lock_pending());
        let mut taken = taken.into_iter().peekable();
        while taken.peek().is_some() {
            flush(taken.by_ref().take(self.max_batch).collect()).await;
        }
        drop(lane);
        // Answered by now, or in a flush another lane is running.
        answer.await.unwrap_or_else(|_| abandoned())
    }

    /// How many flushes may be in flight at once.
    pub(crate) fn lanes(&self) -> usize {
        self.lane_count
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending<I, A>>> {
        // Entries are pushed and taken whole.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Records each flush's items and answers each with its double.
    struct Doubler {
        flushes: Mutex<Vec<Vec<u32>>>,
    }

    impl Doubler {
        async fn flush(&self, chunk: Vec<Pending<u32, u32>>) {
            // Long enough for the others to queue behind this one.
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.flushes
                .lock()
                .unwrap()
                .push(chunk.iter().map(|p| p.item).collect());
            for p in chunk {
                let n = p.item;
                p.answer(n * 2);
            }
        }
    }

    fn abandoned() -> u32 {
        0
    }

    #[tokio::test]
    async fn items_that_wait_for_the_lane_go_out_together_in_chunks() {
        let commit = GroupCommit::new(1, 3);
        let doubler = Doubler {
            flushes: Mutex::new(Vec::new()),
        };
        let submit = |n| commit.submit(n, abandoned, |chunk| doubler.flush(chunk));
        let answers = futures::future::join_all((1..=6).map(submit)).await;
        assert_eq!(answers, vec![2, 4, 6, 8, 10, 12], "each its own answer");
        assert_eq!(
            *doubler.flushes.lock().unwrap(),
            vec![vec![1], vec![2, 3, 4], vec![5, 6]],
            "the first alone, then the waiting ones in arrival order, chunked"
        );
    }

    /// An item that another caller's flush answered returns then, not
    /// once that caller lets go of the lane: waiting for the lane as well
    /// made every answered item of a batch take the lane in turn, one task
    /// after another, before the next batch could go out.
    #[tokio::test(start_paused = true)]
    async fn an_answered_item_returns_without_waiting_for_the_lane() {
        let commit = GroupCommit::new(1, 8);
        let start = tokio::time::Instant::now();
        let finished = Mutex::new(Vec::new());
        // Answers its chunk after 10 ms, then keeps the lane 100 ms more.
        let flush = |chunk: Vec<Pending<u32, u32>>| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            for p in chunk {
                let n = p.item;
                p.answer(n * 2);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let submit = |n| {
            let (commit, finished) = (&commit, &finished);
            async move {
                let answer = commit.submit(n, abandoned, flush).await;
                let at = start.elapsed().as_millis();
                finished.lock().unwrap().push((n, at));
                answer
            }
        };
        let answers = futures::future::join_all((1..=3).map(submit)).await;
        assert_eq!(answers, vec![2, 4, 6], "each its own answer");
        // 1 flushes alone (answered at 10 ms, the lane free at 110); 2
        // takes the lane and flushes 2 and 3 (answered at 120 ms, the lane
        // free at 220).
        assert_eq!(
            *finished.lock().unwrap(),
            vec![(1, 110), (3, 120), (2, 220)],
            "3, taken and answered by 2's flush, returned at its answer"
        );
    }

    #[tokio::test]
    async fn a_cancelled_lane_holder_abandons_what_it_took() {
        let commit = Arc::new(GroupCommit::new(1, 8));
        let doubler = Arc::new(Doubler {
            flushes: Mutex::new(Vec::new()),
        });
        let never = |_chunk: Vec<Pending<u32, u32>>| std::future::pending::<()>();
        // The holder takes itself, flushes forever, and is cancelled once
        // the second item is pending behind it.
        let holder = commit.submit(1, abandoned, never);
        let second = {
            let (commit, doubler) = (commit.clone(), doubler.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                commit
                    .submit(2, abandoned, |chunk| doubler.flush(chunk))
                    .await
            }
        };
        let cancelled = tokio::time::timeout(Duration::from_millis(50), holder);
        let (cancelled, second) = tokio::join!(cancelled, second);
        assert!(cancelled.is_err(), "the holder was cancelled");
        assert_eq!(second, 4, "the second was not taken, and ran next");
        // An item taken by a flush that is then cancelled is abandoned.
        let commit = GroupCommit::new(1, 8);
        let first = commit.submit(1, abandoned, |_chunk| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
        });
        let taken = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tokio::join!(
                tokio::time::timeout(
                    Duration::from_millis(40),
                    commit.submit(2, abandoned, |_chunk| std::future::pending::<()>())
                ),
                commit.submit(3, abandoned, |chunk| doubler.flush(chunk))
            )
        };
        let (first, (second, third)) = tokio::join!(first, taken);
        assert_eq!(first, 0, "its flush dropped its answer");
        assert!(second.is_err(), "the holder of 2 and 3 was cancelled");
        assert_eq!(third, 0, "3 was taken with 2 and abandoned");
    }
}
