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
//! writer's commit). Each replica's sequencer has a connection of its own,
//! and a round is one round trip on it (its statements in one message of
//! the simple query protocol), committed without waiting for its WAL
//! flush: see [`round`] for why a lost round costs nothing. Readers only
//! see numbered rows (`seq > s` excludes NULL). A long-running write
//! transaction anywhere on the Postgres cluster holds numbering back (not
//! the writes) until it ends.
//!
//! The live stream is one in-process broadcast. On SQLite,
//! [`FeedHub::catch_up_past`] reads the rows after the last one it
//! broadcast, in `seq` order, after every local commit that appended
//! changes. On
//! Postgres, the sequencer broadcasts the rows its round numbered, returned
//! by the round itself, when the tail stands right before them, and
//! catches up from the log when it does not (rows another replica
//! numbered in between); the listener catches up whenever another
//! replica's round is announced on LISTEN/NOTIFY. Either way this happens
//! before a local write returns — on Postgres once the sequencer has
//! numbered its rows, waiting at most [`SEQUENCING_WAIT`] — so a writer's
//! own events are already in every subscriber's buffer when its call
//! returns. A subscriber that falls behind its bounded buffer gets
//! `FeedError::Lagged` once and the stream ends. A subscriber may see a
//! few events committed just before its `subscribe` call but not yet
//! broadcast; never a gap.
//!
//! Does not own: what a change means, or retention (nothing is deleted yet).

use crate::SqlBackend;
use crate::backend::{Dialect, FEED_CHANNEL, Shared, Tx, big, check_changes, limit, values};
use crate::held::simple_message;
use crate::rows::change_event;
use crate::{error, literal};
use async_trait::async_trait;
use futures::StreamExt;
use sea_orm::sqlx::{self, PgConnection};
use sea_orm::{DbErr, QueryResult};
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
    /// Postgres: the sequencer's own connection, once it opened one
    /// (see [`round`]); taken by [`close_sequencer`](Self::close_sequencer).
    sequencer: Mutex<Option<PgConnection>>,
}

impl FeedHub {
    pub(crate) fn new(buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self {
            tx,
            last: Mutex::new(0),
            watermark: watch::Sender::new(0),
            poke: Notify::new(),
            sequencer: Mutex::new(None),
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

    /// Postgres: closes the sequencer's connection, telling the server
    /// (once the sequencer task has stopped; its next round would open
    /// another). A round it ended half way is rolled back by the server.
    pub(crate) async fn close_sequencer(&self) {
        if let Some(conn) = self.sequencer.lock().await.take() {
            // Closing is a courtesy to the server's log; the socket goes
            // either way.
            let _ = sqlx::Connection::close(conn).await;
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

    /// Postgres, after a sequencer round that numbered `numbered` (in
    /// order, from `base + 1`): broadcasts them without reading them back
    /// when the tail stands at `base` or beyond; behind it (rows another
    /// replica numbered, or a catch-up whose read failed), a
    /// [`catch_up`](Self::catch_up) reads everything after the tail,
    /// these rows included.
    async fn broadcast_round(&self, shared: &Shared, base: u64, numbered: Vec<ChangeEvent>) {
        let mut last = self.last.lock().await;
        if *last < base {
            Self::read_on(&mut last, &self.tx, shared).await;
            return;
        }
        for event in numbered {
            // A catch-up on another replica's notification may have read
            // them already.
            if event.seq > *last {
                *last = event.seq;
                let _ = self.tx.send(event);
            }
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
    /// The highest `seq` before the round: its rows follow it.
    base: u64,
    /// The rows it numbered, in `seq` order.
    numbered: Vec<ChangeEvent>,
}

/// Starts the Postgres sequencer: a round whenever a local writer asks
/// (and every [`SEQUENCER_TICK`] otherwise), repeated with a short pause
/// while committed rows wait behind an open transaction, and after a
/// failed round (a lost connection is replaced at once; the pause doubles
/// up to the tick while rounds keep failing).
pub(crate) fn spawn_sequencer(shared: &Arc<Shared>) -> JoinHandle<()> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut wait = SEQUENCER_TICK;
        // The last round left rows behind or failed: `wait` is a pause.
        let mut again = false;
        loop {
            let Some(shared) = weak.upgrade() else { return };
            let _ = tokio::time::timeout(wait, shared.feed.poke.notified()).await;
            let pause = |most: Duration| {
                if again {
                    (wait * 2).min(most)
                } else {
                    HELD_BACK_PAUSE.0
                }
            };
            match round(&shared).await {
                Ok(round) => {
                    shared
                        .feed
                        .broadcast_round(&shared, round.base, round.numbered)
                        .await;
                    shared.feed.watermark.send_if_modified(|w| {
                        let moved = round.watermark > *w;
                        *w = (*w).max(round.watermark);
                        moved
                    });
                    wait = if round.backlog {
                        pause(HELD_BACK_PAUSE.1)
                    } else {
                        SEQUENCER_TICK
                    };
                    again = round.backlog;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: sequencer round failed");
                    wait = pause(SEQUENCER_TICK);
                    again = true;
                }
            }
        }
    })
}

/// Name of the round's prepared statement on the sequencer's connection.
const ROUND_STATEMENT: &str = "stovepipe_sequencer_round";

/// Where its `EXECUTE` stands among the round's statements (the lock,
/// the numbering).
const NUMBERING: usize = 1;

/// One round, on the sequencer's own connection (taken from the writer's
/// pool once and detached from it, the pool opening another in its place,
/// with the numbering prepared on it): numbers every committed row of a
/// transaction below the current `xmin`, in `(txid, id)` order after the
/// highest `seq`, under [`SEQUENCER_LOCK`], announcing it on
/// [`FEED_CHANNEL`] in the same statement when it numbered any, and
/// returns the rows it numbered. A round with nothing to number writes
/// nothing.
///
/// The round is one message of the simple query protocol, so one round
/// trip: the lock, then the prepared numbering. Postgres runs the
/// statements of one such message as one implicit transaction, which
/// holds the lock until the message's end and commits all of it or
/// nothing. Each statement of it takes its own snapshot (READ
/// COMMITTED), so the
/// numbering sees the previous lock holder's numbers, and its
/// watermark is taken after the lock was granted. Any error drops the
/// connection, and with it whatever the message left open; the next
/// round opens a fresh one.
///
/// The commit does not wait for its WAL flush (`synchronous_commit =
/// off`, set on the connection when it is opened), because a lost round
/// is given again, number for number: the
/// rows a round may number were committed durably by their writers
/// (a writer's commit is visible only once flushed), numbering is
/// their rank in `(txid, id)` order among all change rows (each round
/// takes the next ones of that order, and a row can only join the
/// order behind the rows already numbered, as its transaction was not
/// below the watermark of their round), and a crash loses a suffix of
/// the rounds. So a tail that saw a number before a crash sees the
/// same row under it after.
async fn round(shared: &Shared) -> Result<Round, DbErr> {
    let mut slot = shared.feed.sequencer.lock().await;
    let conn = match &mut *slot {
        Some(conn) => conn,
        empty => empty.insert(open(shared).await?),
    };
    let sql = format!(
        "SELECT pg_advisory_xact_lock({SEQUENCER_LOCK}); \
         EXECUTE {ROUND_STATEMENT}({})",
        // Other replicas' tails hear of the round, while there are any
        // (`presence`); each tail also catches up every tick.
        shared.notifies()
    );
    let rows = simple_message(conn, &sql)
        .await
        .map_err(crate::held::failed)
        .and_then(|statements| {
            statements.into_iter().nth(NUMBERING).ok_or_else(|| {
                DbErr::Custom("sequencer round: the numbering did not complete".into())
            })
        });
    // Any failure drops the connection, with whatever the message left
    // open.
    let rows = rows.inspect_err(|_| *slot = None)?;
    let mut summary = None;
    let mut numbered = Vec::new();
    // Each row has the round's summary and, when it numbered any, one
    // numbered row.
    for row in rows {
        let row = QueryResult::from(row);
        if summary.is_none() {
            let watermark: i64 = row.try_get("", "watermark")?;
            let base: i64 = row.try_get("", "base")?;
            let held_back: bool = row.try_get("", "held_back")?;
            summary = Some((watermark, base, held_back));
        }
        let seq: Option<i64> = row.try_get("", "seq")?;
        if seq.is_some() {
            numbered.push(change_event(&row)?);
        }
    }
    let (watermark, base, held_back) =
        summary.ok_or_else(|| DbErr::Custom("sequencer round returned no summary".into()))?;
    // A full batch may have left rows below the watermark: do not
    // promise them yet.
    let full = i64::try_from(numbered.len()).unwrap_or(i64::MAX) >= SEQUENCE_BATCH;
    Ok(Round {
        watermark: if full { 0 } else { watermark },
        backlog: full || held_back,
        base: u64::try_from(base).unwrap_or(0),
        numbered,
    })
}

/// A connection of the writer's pool, detached from it, with the round
/// prepared on it and its commits not waiting for their WAL flush (it
/// runs nothing but rounds). Operators find it in `pg_stat_activity` by
/// its `application_name`, `stovepipe sequencer <schema>` (cut to
/// Postgres' 63 bytes).
async fn open(shared: &Shared) -> Result<PgConnection, DbErr> {
    let pool = shared.writer().get_postgres_connection_pool();
    let mut conn = pool.acquire().await.map_err(crate::held::failed)?.detach();
    let prepare = format!(
        "SELECT set_config('application_name', \
           left('stovepipe sequencer ' || COALESCE(current_schema(), ''), 63), false); \
         SET synchronous_commit = off; \
         PREPARE {ROUND_STATEMENT}(boolean) AS \
         WITH w AS ( \
           SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS watermark), \
         base AS (SELECT COALESCE(MAX(seq), 0) AS base FROM change_log), \
         ready AS ( \
           SELECT c.id, c.txid FROM change_log c, w \
           WHERE c.seq IS NULL AND c.txid < w.watermark \
           ORDER BY c.txid, c.id LIMIT {SEQUENCE_BATCH}), \
         numbered AS ( \
           SELECT ready.id, base.base + row_number() OVER (ORDER BY ready.txid, ready.id) AS n \
           FROM ready, base), \
         done AS ( \
           UPDATE change_log c SET seq = numbered.n FROM numbered \
           WHERE c.id = numbered.id \
           RETURNING c.seq, c.queue, c.kind, c.subject, c.data, c.created_at), \
         announced AS ( \
           SELECT pg_notify({channel}, {tag}) WHERE EXISTS (SELECT 1 FROM done) AND $1), \
         summary AS ( \
           SELECT w.watermark, base.base, \
             EXISTS (SELECT 1 FROM change_log c \
               WHERE c.seq IS NULL AND c.txid >= w.watermark) AS held_back, \
             (SELECT COUNT(*) FROM announced) AS announced \
           FROM w, base) \
         SELECT s.watermark, s.base, s.held_back, s.announced, \
           d.seq, d.queue, d.kind, d.subject, d.data, d.created_at \
         FROM summary s LEFT JOIN done d ON true ORDER BY d.seq",
        channel = literal::text(FEED_CHANNEL),
        tag = literal::text(&shared.notify_tag),
    );
    simple_message(&mut conn, &prepare)
        .await
        .map_err(crate::held::failed)?;
    Ok(conn)
}
