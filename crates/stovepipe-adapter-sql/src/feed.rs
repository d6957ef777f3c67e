//! The change log and its live tail.
//!
//! Owns: appends, sequence numbers, paging, and the live stream.
//!
//! **Sequence numbers** are contiguous from 1 and strictly increasing in
//! commit order: a transaction that began after another committed gets the
//! higher numbers. SQLite gives `seq` at insert: its one writer connection
//! commits in that order. Postgres gives it *after* commit, so that writers
//! never serialise on the log: a writer inserts its rows with `seq` NULL and
//! its transaction id (`txid`), and the [sequencer](spawn_sequencer) numbers
//! committed rows in `(txid, id)` order, but only those of transactions
//! below the current snapshot's `xmin` — every transaction with a lower id
//! has ended, so no unnumbered row can still commit behind a numbered one.
//! One sequencer runs at a time in the installation (a transaction-scoped
//! advisory lock held for the few milliseconds of a round, never across a
//! writer's commit). Readers only see numbered rows (`seq > s` excludes
//! NULL). A long-running write transaction anywhere on the Postgres cluster
//! holds numbering back (not the writes) until it ends.
//!
//! The live stream is one in-process broadcast fed by [`FeedHub::catch_up`],
//! which reads the rows after the last one it broadcast, in `seq` order.
//! It runs after every local commit that appended changes before the write
//! returns — on Postgres once the sequencer has numbered them, waiting at
//! most [`SEQUENCING_WAIT`] — so a writer's own events are already in every
//! subscriber's buffer when its call returns; and, on Postgres, whenever a
//! sequencer round is announced on LISTEN/NOTIFY. A subscriber that falls
//! behind its bounded buffer gets `FeedError::Lagged` once and the stream
//! ends. A subscriber may see a few events committed just before its
//! `subscribe` call but not yet broadcast; never a gap.
//!
//! Does not own: what a change means, or retention (nothing is deleted yet).

use crate::SqlBackend;
use crate::backend::{Dialect, FEED_CHANNEL, Shared, Tx, big, check_changes, limit, values};
use crate::error;
use crate::rows::change_event;
use async_trait::async_trait;
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use std::sync::{Arc, Weak};
use std::time::Duration;
use stovepipe_entity::{ChangeEvent, NewChange};
use stovepipe_ports::{ChangeFeed, ChangeStream, FeedError, StoreError};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;

/// Rows read per round of a catch-up.
const CATCH_UP_PAGE: usize = 512;

/// Rows numbered per sequencer round at most.
const SEQUENCE_BATCH: i64 = 4096;

/// How long a Postgres writer waits, after its commit, for its change rows
/// to be numbered and broadcast before returning anyway (the rows are
/// committed; they reach the tail when the transaction holding the
/// watermark back ends).
pub(crate) const SEQUENCING_WAIT: Duration = Duration::from_secs(2);

/// How often an idle sequencer looks for rows nobody asked it to number
/// (a replica that died between its commit and its round).
const SEQUENCER_TICK: Duration = Duration::from_secs(1);

/// The sequencer's pause while committed rows wait behind an open
/// transaction: doubles from the first value up to the second.
const HELD_BACK_PAUSE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(50));

/// Advisory lock held by a sequencer round, so one round at a time numbers
/// rows across replicas ("stovepipe" in ASCII).
const SEQUENCER_LOCK: i64 = 0x0073_746f_7665_7069;

pub(crate) struct FeedHub {
    tx: broadcast::Sender<ChangeEvent>,
    /// The highest seq broadcast so far; held while reading and sending, so
    /// concurrent catch-ups broadcast each row once, in order.
    last: Mutex<u64>,
    /// Postgres: every change row of a transaction with a lower id than
    /// this is numbered and broadcast.
    watermark: watch::Sender<i64>,
    /// Postgres: asks the sequencer for a round.
    poke: Notify,
}

impl FeedHub {
    pub(crate) fn new(buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self {
            tx,
            last: Mutex::new(0),
            watermark: watch::Sender::new(0),
            poke: Notify::new(),
        }
    }

    /// Postgres, after a commit that appended rows as transaction `txid`:
    /// asks for a sequencer round and waits (at most [`SEQUENCING_WAIT`])
    /// until the rows are numbered and broadcast.
    pub(crate) async fn await_sequenced(&self, txid: i64) {
        let mut watermark = self.watermark.subscribe();
        self.poke.notify_one();
        let numbered =
            tokio::time::timeout(SEQUENCING_WAIT, watermark.wait_for(|w| *w > txid)).await;
        if numbered.is_err() {
            tracing::warn!(
                txid,
                waited = ?SEQUENCING_WAIT,
                "change feed: rows committed but not yet numbered (an older transaction \
                 on the Postgres cluster is still open); they follow when it ends"
            );
        }
    }

    /// Sets where the tail starts (the log's last seq when connecting).
    pub(crate) async fn start_at(&self, seq: u64) {
        let mut last = self.last.lock().await;
        *last = (*last).max(seq);
    }

    /// Broadcasts every committed row after the last one broadcast. A read
    /// error is logged and left for the next catch-up: the rows stay in the
    /// log, and the caller's write has already committed.
    pub(crate) async fn catch_up(&self, shared: &Shared) {
        let mut last = self.last.lock().await;
        Self::read_on(&mut last, &self.tx, shared).await;
    }

    /// SQLite, after a commit that appended rows up to `seq`: a
    /// [`catch_up`](Self::catch_up) unless one that ran meanwhile (another
    /// write's, while this one waited for its turn) broadcast them already,
    /// so writes that commit together share one read of the log.
    pub(crate) async fn catch_up_past(&self, shared: &Shared, seq: u64) {
        let mut last = self.last.lock().await;
        if *last < seq {
            Self::read_on(&mut last, &self.tx, shared).await;
        }
    }

    /// Broadcasts the committed rows after `last`, moving it on.
    async fn read_on(last: &mut u64, tx: &broadcast::Sender<ChangeEvent>, shared: &Shared) {
        loop {
            let rows = match read_after(shared, *last, CATCH_UP_PAGE).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: catch-up read failed");
                    return;
                }
            };
            let full = rows.len() == CATCH_UP_PAGE;
            for event in rows {
                *last = event.seq;
                // No subscriber is not an error: the log is the source of truth.
                let _ = tx.send(event);
            }
            if !full {
                return;
            }
        }
    }
}

async fn read_after(shared: &Shared, after: u64, n: usize) -> Result<Vec<ChangeEvent>, DbErr> {
    shared
        .query_all(
            "SELECT seq, queue, kind, subject, data, created_at FROM change_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            values![big(after), limit(n)],
        )
        .await?
        .iter()
        .map(change_event)
        .collect()
}

#[async_trait]
impl ChangeFeed for SqlBackend {
    async fn append(&self, changes: Vec<NewChange>) -> Result<Vec<ChangeEvent>, StoreError> {
        check_changes(&changes)?;
        let now = self.shared.clock.now();
        let run = async {
            let mut tx: Tx = self.shared.begin().await?;
            let keys = tx.append(changes.clone(), now).await?;
            tx.commit().await?;
            Ok::<_, DbErr>(keys)
        };
        let keys = run.await.map_err(error::store)?;
        let seqs = match self.shared.dialect {
            Dialect::Sqlite => keys,
            Dialect::Postgres => numbered(&self.shared, &keys).await?,
        };
        Ok(changes
            .into_iter()
            .zip(seqs)
            .map(|(c, seq)| ChangeEvent {
                seq: u64::try_from(seq).unwrap_or(0),
                queue: c.queue,
                kind: c.kind,
                subject: c.subject,
                data: c.data,
                created_at: now,
            })
            .collect())
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        read_after(&self.shared, after, limit)
            .await
            .map_err(error::store)
    }

    async fn last_seq(&self) -> Result<u64, StoreError> {
        self.shared.last_seq().await.map_err(error::store)
    }

    async fn oldest_retained(&self) -> Result<Option<u64>, StoreError> {
        let row = self
            .shared
            .query_one("SELECT MIN(seq) AS seq FROM change_log", vec![])
            .await
            .map_err(error::store)?;
        let seq: Option<i64> = match row {
            Some(r) => r.try_get("", "seq").map_err(error::store)?,
            None => None,
        };
        Ok(seq.and_then(|s| u64::try_from(s).ok()))
    }

    fn subscribe(&self) -> ChangeStream {
        let rx = self.shared.feed.tx.subscribe();
        futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx: broadcast::Receiver<ChangeEvent> = rx?;
            match rx.recv().await {
                Ok(event) => Some((Ok(event), Some(rx))),
                // Yield Lagged once, then end: the subscriber replays from
                // its last seq with read_after.
                Err(RecvError::Lagged(n)) => Some((Err(FeedError::Lagged(n)), None)),
                Err(RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}

/// Postgres: the `seq` of rows by `id`, in the order given. The write has
/// committed; rows still unnumbered (the wait ran out) are `Unavailable`.
async fn numbered(shared: &Shared, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let rows = shared
        .query_all(
            &format!(
                "SELECT id, seq FROM change_log WHERE id IN ({})",
                placeholders.join(", ")
            ),
            ids.iter().map(|&id| id.into()).collect(),
        )
        .await
        .map_err(error::store)?;
    let mut by_id = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("", "id").map_err(error::store)?;
        let seq: Option<i64> = row.try_get("", "seq").map_err(error::store)?;
        by_id.insert(id, seq);
    }
    ids.iter()
        .map(|id| {
            by_id.get(id).copied().flatten().ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "change row {id} committed but not yet numbered: an older transaction \
                     on the database is still open"
                ))
            })
        })
        .collect()
}

/// What one sequencer round found.
struct Round {
    /// Every row of a transaction below this id is numbered.
    watermark: i64,
    /// Committed rows are still unnumbered (above the watermark, or beyond
    /// one batch).
    backlog: bool,
}

/// Starts the Postgres sequencer: a round whenever a local writer asks
/// (and every [`SEQUENCER_TICK`] otherwise), repeated with a short pause
/// while committed rows wait behind an open transaction.
pub(crate) fn spawn_sequencer(shared: &Arc<Shared>) -> JoinHandle<()> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut pause = HELD_BACK_PAUSE.0;
        let mut backlog = false;
        loop {
            let Some(shared) = weak.upgrade() else { return };
            if backlog {
                let _ = tokio::time::timeout(pause, shared.feed.poke.notified()).await;
            } else {
                let _ = tokio::time::timeout(SEQUENCER_TICK, shared.feed.poke.notified()).await;
            }
            match sequence_round(&shared).await {
                Ok(round) => {
                    shared.feed.catch_up(&shared).await;
                    shared.feed.watermark.send_if_modified(|w| {
                        let moved = round.watermark > *w;
                        *w = (*w).max(round.watermark);
                        moved
                    });
                    pause = if round.backlog && backlog {
                        (pause * 2).min(HELD_BACK_PAUSE.1)
                    } else {
                        HELD_BACK_PAUSE.0
                    };
                    backlog = round.backlog;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: sequencer round failed");
                    backlog = false;
                }
            }
        }
    })
}

/// One round: numbers every committed row of a transaction below the
/// current `xmin`, in `(txid, id)` order after the highest `seq`, under
/// [`SEQUENCER_LOCK`], announcing it on [`FEED_CHANNEL`] in the same
/// statement when it numbered any. A round with nothing to number writes
/// nothing. (The lock is its own statement: the numbering must run on a
/// snapshot taken after the lock was granted, to see the previous holder's
/// numbers.)
async fn sequence_round(shared: &Shared) -> Result<Round, DbErr> {
    let dialect = shared.dialect;
    let probe = shared
        .query_one(
            "SELECT w.watermark, \
               EXISTS (SELECT 1 FROM change_log WHERE seq IS NULL AND txid < w.watermark) \
                 AS ready, \
               EXISTS (SELECT 1 FROM change_log WHERE seq IS NULL AND txid >= w.watermark) \
                 AS held_back \
             FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS watermark) w",
            vec![],
        )
        .await?
        .ok_or_else(|| DbErr::Custom("sequencer probe returned no row".into()))?;
    let watermark: i64 = probe.try_get("", "watermark")?;
    let ready: bool = probe.try_get("", "ready")?;
    let held_back: bool = probe.try_get("", "held_back")?;
    if !ready {
        return Ok(Round {
            watermark,
            backlog: held_back,
        });
    }
    let txn = shared.writer().begin().await?;
    txn.execute(dialect.stmt("SELECT pg_advisory_xact_lock($1)", values![SEQUENCER_LOCK]))
        .await?;
    let row = txn
        .query_one(dialect.stmt(
            "WITH ready AS ( \
               SELECT id, txid FROM change_log WHERE seq IS NULL AND txid < $1 \
               ORDER BY txid, id LIMIT $2), \
             numbered AS ( \
               SELECT id, (SELECT COALESCE(MAX(seq), 0) FROM change_log) \
                 + row_number() OVER (ORDER BY txid, id) AS n FROM ready), \
             done AS ( \
               UPDATE change_log c SET seq = numbered.n FROM numbered \
               WHERE c.id = numbered.id RETURNING c.id), \
             announced AS ( \
               SELECT pg_notify($3, $4) WHERE EXISTS (SELECT 1 FROM done) AND $5) \
             SELECT (SELECT COUNT(*) FROM done) AS numbered, \
               (SELECT COUNT(*) FROM change_log WHERE seq IS NULL) AS unnumbered, \
               (SELECT COUNT(*) FROM announced) AS announced",
            values![
                watermark,
                SEQUENCE_BATCH,
                FEED_CHANNEL,
                shared.notify_tag.as_str(),
                // Other replicas' tails hear of the round, while there are
                // any (`presence`); each tail also catches up every tick.
                shared.notifies()
            ],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("sequencer round returned no row".into()))?;
    let numbered: i64 = row.try_get("", "numbered")?;
    let unnumbered: i64 = row.try_get("", "unnumbered")?;
    txn.commit().await?;
    Ok(Round {
        // Beyond one batch, rows below the watermark may remain: do not
        // promise them yet.
        watermark: if numbered < SEQUENCE_BATCH {
            watermark
        } else {
            0
        },
        backlog: unnumbered > numbered,
    })
}
