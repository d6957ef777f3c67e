//! The change log and its live tail.
//!
//! Owns: appends, sequence numbers, paging, and the live stream.
//!
//! **Sequence numbers** are strictly increasing in commit order: a
//! transaction that began after another committed gets the higher
//! numbers. Every row gets its `seq` at insert and is never updated.
//! SQLite numbers rows 1, 2, 3, …: its one writer connection commits in
//! that order. On Postgres, writers commit concurrently and in any order,
//! so a row's number comes from its transaction instead: `seq = txid ·
//! 2^20 + n`, `n` its place among the transaction's rows ([`next_seq`]).
//! Numbers ascend in `(txid, n)` order, with gaps between transactions,
//! and a reader sees a row only once every transaction with a lower id has
//! ended (its `seq` below the current snapshot's `xmin · 2^20`,
//! [`readable`]): no row can then commit below one already read. A
//! transaction id is the cluster's, not the database's: once a
//! transaction holds the log back for a while, the tail looks past those
//! of other databases, which cannot append here
//! ([`WATERMARK_OF_THIS_DATABASE`]), and readers see what it proved
//! readable. A long-running write transaction in the same database holds
//! reading back (not the writes) until it ends. A transaction
//! appends at most 2^20 rows; the next would take a number of the
//! transaction after it, and fail on the key if that one appended too.
//!
//! Writers never serialise on the log. Before (2026-12-06), a Postgres row
//! was inserted unnumbered and a sequencer numbered it after commit, under
//! an installation-wide lock, by an `UPDATE` that wrote the row a second
//! time and left a dead tuple: a third of a request's WAL
//! (docs/benchmarks.md).
//!
//! The live stream is one in-process broadcast. On SQLite,
//! [`FeedHub::catch_up_past`] reads the rows after the last one it
//! broadcast, in `seq` order, after every local commit that appended
//! changes. On Postgres, the [tail](spawn_tail) reads the rows after the
//! last one broadcast, below the watermark, in a round (one statement,
//! which under load rides in a batch of writes: [`round`]) whenever a
//! local write appended rows (and every [`TAIL_TICK`]),
//! and broadcasts them; the listener catches up whenever another
//! replica's round is announced on LISTEN/NOTIFY. Either way this happens
//! before a local write returns — on Postgres once the watermark passed
//! its transaction, waiting at most [`BROADCAST_WAIT`] — so a writer's
//! own events are already in every subscriber's buffer when its call
//! returns. A subscriber that falls behind its bounded buffer gets
//! `FeedError::Lagged` once and the stream ends. A subscriber may see a
//! few events committed just before its `subscribe` call but not yet
//! broadcast; never a gap.
//!
//! Does not own: what a change means, or retention (nothing is deleted yet).

use crate::SqlBackend;
use crate::backend::{Dialect, FEED_CHANNEL, Shared, Tx, big, bind, check_changes, limit, values};
use crate::rows::change_event;
use crate::{error, literal};
use async_trait::async_trait;
use futures::StreamExt;
use sea_orm::{DbErr, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use stovepipe_entity::{ChangeEvent, NewChange};
use stovepipe_ports::{ChangeFeed, ChangeStream, FeedError, StoreError};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Rows read per round of a catch-up.
const CATCH_UP_PAGE: usize = 512;

/// Postgres: a row's `seq` is its transaction's id shifted left by this
/// many bits, plus its place among the transaction's rows.
pub(crate) const TXID_SHIFT: u32 = 20;

/// Postgres: the lowest transaction id among transactions still running
/// (the statement's snapshot's `xmin`), as SQL. Every row with a `seq`
/// below it shifted by [`TXID_SHIFT`] is committed for good or gone.
const WATERMARK: &str = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint)";

/// Postgres: [`WATERMARK`] less the transactions of other databases of the
/// cluster, which can never append to this log: the lowest of the
/// snapshot's running ids (`xip`) but those `pg_stat_get_activity` shows in
/// a session of another database, the statement's own transaction's
/// (running too, and not in `xip`) and the snapshot's `xmax`. A
/// transaction's database never changes, so a stale view of the sessions
/// (Postgres reads them once per transaction) can only leave an id
/// counted: one that ended meanwhile, or is not shown (a prepared
/// transaction, a session the role may not see), holds the log back as
/// [`WATERMARK`] does. Reading the sessions costs the server 25–45 µs,
/// so a round looks past other databases only once the log has been held
/// back a while ([`LOOK_PAST_AFTER`]); in a round that does not, this is
/// not evaluated (docs/decisions.md, "The change feed on Postgres waits
/// only for its own database's transactions").
const WATERMARK_OF_THIS_DATABASE: &str = "(SELECT LEAST(\
       pg_snapshot_xmax(s.snap)::text::bigint, \
       pg_current_xact_id_if_assigned()::text::bigint, \
       (SELECT MIN(x::text::bigint) FROM pg_snapshot_xip(s.snap) AS x \
        WHERE NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(NULL) AS a \
          WHERE a.backend_xid::text::bigint = x::text::bigint % 4294967296 \
            AND a.datid <> (SELECT d.oid FROM pg_database d \
                            WHERE d.datname = current_database())))) \
     FROM (SELECT pg_current_snapshot() AS snap) AS s)";

/// Operators' gauge: how long committed change rows have waited behind an
/// open transaction, in seconds (0 while the feed keeps up); Postgres only.
const HELD_BACK_SECONDS: &str = "stovepipe_feed_held_back_seconds";

/// How long the tail's watermark stands still, with committed rows waiting
/// above it, before its rounds look past other databases' transactions
/// ([`WATERMARK_OF_THIS_DATABASE`]); they go on doing so while that passes
/// one. Under load the watermark moves every millisecond or two.
const LOOK_PAST_AFTER: Duration = Duration::from_millis(20);

/// The condition every read of the log outside the tail puts on change
/// row `c` of a statement over `values`: that readers may see it. Always
/// on SQLite; on Postgres, below the statement's [`WATERMARK`] or the one
/// the tail proved ([`FeedHub::proven`], bound as the next parameter),
/// whichever is higher: a reader sees what the tail broadcast, even while
/// the tail looks past another database's transaction that holds `xmin`
/// back. A proven watermark holds for every later statement: the
/// transactions below it have ended, and no new one takes an id below it.
pub(crate) fn readable(shared: &Shared, c: &str, values: &mut Vec<Value>) -> String {
    match shared.dialect {
        Dialect::Sqlite => "TRUE".to_owned(),
        Dialect::Postgres => {
            let proven = bind(values, shared.feed.proven().into());
            format!("{c}.seq < (GREATEST({proven}, {WATERMARK}) << {TXID_SHIFT})")
        }
    }
}

/// Postgres: a query of one column, `first`, the `seq` the next change row
/// of this transaction takes: after its rows so far, or the first of its
/// range. With `each_row_of`, a row per row of that (CTE) name, so that a
/// write that touched nothing takes no transaction id.
fn next_seq(each_row_of: Option<&str>) -> String {
    let from = each_row_of.map_or_else(String::new, |name| format!(" FROM {name}"));
    format!(
        "SELECT COALESCE((SELECT MAX(c.seq) + 1 FROM change_log c \
           WHERE c.seq >= t.first AND c.seq < t.first + (1::bigint << {TXID_SHIFT})), \
           t.first) AS first \
         FROM (SELECT pg_current_xact_id()::text::bigint << {TXID_SHIFT} AS first{from} \
           LIMIT 1) AS t"
    )
}

/// Postgres: the insert of change rows bound as `VALUES` rows of `(queue,
/// kind, subject, data, ord)`, each numbered at its place in the
/// transaction ([`next_seq`], with `each_row_of` as there), created at
/// `at`; returns their `seq`. The one way the adapter appends on Postgres,
/// alone or as a write's CTE.
pub(crate) fn insert_numbered(
    rows: &str,
    at: impl std::fmt::Display,
    each_row_of: Option<&str>,
) -> String {
    format!(
        "INSERT INTO change_log (seq, queue, kind, subject, data, created_at) \
         SELECT n.first + v.ord, v.queue, v.kind, v.subject, v.data, {at} \
         FROM ({}) AS n, (VALUES {rows}) AS v(queue, kind, subject, data, ord) \
         RETURNING seq",
        next_seq(each_row_of)
    )
}

/// Rows read per round of the Postgres tail at most.
const ROUND_PAGE: i64 = 4096;

/// How long a Postgres writer waits, after its commit, for its change rows
/// to be read and broadcast before returning anyway (the rows are
/// committed; they reach the tail when the transaction holding the
/// watermark back ends), counted from when the log began to be held back
/// ([`FeedHub::await_broadcast`]).
pub(crate) const BROADCAST_WAIT: Duration = Duration::from_secs(2);

/// How often an idle tail looks for rows nobody asked it to read (another
/// replica's whose announcement was lost, or rows an older transaction
/// held back).
const TAIL_TICK: Duration = Duration::from_secs(1);

/// The tail's pause while committed rows wait behind an open
/// transaction: doubles from the first value up to the second.
const HELD_BACK_PAUSE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(50));

pub(crate) struct FeedHub {
    tx: broadcast::Sender<Arc<ChangeEvent>>,
    /// The highest seq broadcast so far; held while reading and sending, so
    /// concurrent catch-ups broadcast each row once, in order.
    last: Mutex<u64>,
    /// Postgres: every change row of a transaction with a lower id than
    /// this is broadcast.
    watermark: watch::Sender<i64>,
    /// Postgres: every change row of a transaction with a lower id than
    /// this is committed for good or gone, as a round of the tail found it
    /// (set before the round's rows are broadcast): a bound for every later
    /// reader ([`readable`]).
    proven: AtomicI64,
    /// Postgres: since when committed rows have waited with the watermark
    /// standing still, as the tail's rounds find it (`None` while it keeps
    /// up): what looking past other databases, the writers' wait and the
    /// operators' gauge go by.
    held_back_since: std::sync::Mutex<Option<Instant>>,
    /// Postgres: asks the tail for a round.
    poke: Notify,
    /// Postgres: the round's statement ([`round_statement`]), the same
    /// text for every round of this backend.
    round_statement: OnceLock<String>,
}

impl FeedHub {
    pub(crate) fn new(buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self {
            tx,
            last: Mutex::new(0),
            watermark: watch::Sender::new(0),
            proven: AtomicI64::new(0),
            held_back_since: std::sync::Mutex::new(None),
            poke: Notify::new(),
            round_statement: OnceLock::new(),
        }
    }

    /// Postgres, after a commit that appended rows as transaction `txid`:
    /// asks for a round of the tail and waits until the rows are
    /// broadcast, or until the log has been held back for
    /// [`BROADCAST_WAIT`] ([`held_back_for`](Self::held_back_for)).
    ///
    /// So while an older transaction holds the log back, only the writes
    /// of its first [`BROADCAST_WAIT`] wait: each later one would only
    /// wait as long again, every handler of the pipeline down to one write
    /// per wait. Their rows follow, in order, when it ends.
    pub(crate) async fn await_broadcast(&self, txid: i64) {
        let mut watermark = self.watermark.subscribe();
        self.poke.notify_one();
        let wait = BROADCAST_WAIT.saturating_sub(self.held_back_for().unwrap_or_default());
        if wait.is_zero() {
            return;
        }
        let broadcast = tokio::time::timeout(wait, watermark.wait_for(|w| *w > txid))
            .await
            .is_ok();
        if !broadcast {
            tracing::warn!(
                txid,
                waited = ?wait,
                "change feed: rows committed but not yet readable (an older transaction \
                 of this database is still open); they follow when it ends, and writes \
                 return without waiting for the feed until then"
            );
        }
    }

    /// Postgres: how long committed rows have waited with the watermark
    /// standing still (`None` while the feed keeps up).
    pub(crate) fn held_back_for(&self) -> Option<Duration> {
        self.lock_held_back_since().map(|since| since.elapsed())
    }

    /// Postgres, after a round of the tail: whether it left committed rows
    /// waiting without moving the watermark; returns how long they have
    /// waited so.
    fn note_held_back(&self, held_back: bool) -> Option<Duration> {
        let mut since = self.lock_held_back_since();
        *since = held_back.then(|| since.unwrap_or_else(Instant::now));
        since.map(|since| since.elapsed())
    }

    fn lock_held_back_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A plain value, replaced whole.
        self.held_back_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Postgres: the watermark a round of the tail proved, as
    /// [`readable`]'s `proven` parameter.
    pub(crate) fn proven(&self) -> i64 {
        self.proven.load(Ordering::Acquire)
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

    /// Postgres, after a round of the tail that read `rows` (every
    /// readable row after the tail's position when it began, in order):
    /// broadcasts those the tail has not passed since. A catch-up that ran
    /// meanwhile (on another replica's announcement) broadcast a prefix of
    /// them or more, never a row beyond a gap: it read every readable row
    /// in order too.
    async fn broadcast_round(&self, rows: Vec<ChangeEvent>) {
        let mut last = self.last.lock().await;
        for event in rows {
            if event.seq > *last {
                *last = event.seq;
                let _ = self.tx.send(Arc::new(event));
            }
        }
    }

    /// Broadcasts the committed rows after `last`, moving it on.
    async fn read_on(last: &mut u64, tx: &broadcast::Sender<Arc<ChangeEvent>>, shared: &Shared) {
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
                let _ = tx.send(Arc::new(event));
            }
            if !full {
                return;
            }
        }
    }
}

async fn read_after(shared: &Shared, after: u64, n: usize) -> Result<Vec<ChangeEvent>, DbErr> {
    let mut values = values![big(after), limit(n)];
    let sql = format!(
        "SELECT seq, queue, kind, subject, data, created_at FROM change_log c \
         WHERE seq > $1 AND {} ORDER BY seq LIMIT $2",
        readable(shared, "c", &mut values)
    );
    shared
        .query_all(&sql, values)
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
        let seqs = run.await.map_err(error::store)?;
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

    async fn removed_through(&self) -> Result<u64, StoreError> {
        // Nothing is deleted yet (module docs).
        Ok(0)
    }

    fn subscribe(&self) -> ChangeStream {
        let rx = self.shared.feed.tx.subscribe();
        futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx: broadcast::Receiver<Arc<ChangeEvent>> = rx?;
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

/// What one round of the tail found.
struct Round {
    /// Every row of a transaction below this id is read (0: not promised,
    /// a full page may have left some).
    watermark: i64,
    /// Every row of a transaction below this id is committed for good or
    /// gone ([`FeedHub::proven`]), whether read or not.
    proven: i64,
    /// The watermark passed a running transaction of another database
    /// ([`WATERMARK_OF_THIS_DATABASE`]).
    looked_past: bool,
    /// Committed rows wait to be read (above the watermark, or beyond one
    /// page).
    backlog: bool,
    /// The rows it read, in `seq` order.
    rows: Vec<ChangeEvent>,
}

/// Starts the Postgres tail: a round whenever a local writer asks
/// (and every [`TAIL_TICK`] otherwise), repeated with a short pause
/// while committed rows wait behind an open transaction, and after a
/// failed round (a lost connection is replaced at once; the pause doubles
/// up to the tick while rounds keep failing). Once the watermark has stood
/// still over waiting rows for [`LOOK_PAST_AFTER`], rounds look past other
/// databases' transactions, and go on doing so while that passes one.
pub(crate) fn spawn_tail(shared: &Arc<Shared>) -> JoinHandle<()> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut wait = TAIL_TICK;
        // The last round left rows behind or failed: `wait` is a pause.
        let mut again = false;
        let mut look_past = false;
        let held_back = metrics::gauge!(HELD_BACK_SECONDS);
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
            match round(&shared, look_past).await {
                Ok(round) => {
                    // Proven before its rows go out: a subscriber that
                    // then replays from the log reads at least as far.
                    shared.feed.proven.fetch_max(round.proven, Ordering::AcqRel);
                    shared.feed.broadcast_round(round.rows).await;
                    let moved = shared.feed.watermark.send_if_modified(|w| {
                        let moved = round.watermark > *w;
                        *w = (*w).max(round.watermark);
                        moved
                    });
                    let held_for = shared.feed.note_held_back(round.backlog && !moved);
                    held_back.set(held_for.unwrap_or_default().as_secs_f64());
                    look_past =
                        round.looked_past || held_for.is_some_and(|held| held >= LOOK_PAST_AFTER);
                    wait = if round.backlog {
                        pause(HELD_BACK_PAUSE.1)
                    } else {
                        TAIL_TICK
                    };
                    again = round.backlog;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: tail round failed");
                    wait = pause(TAIL_TICK);
                    again = true;
                }
            }
        }
    })
}

/// One round: reads the rows after the last one broadcast whose
/// transaction is below the current `xmin` (every transaction with a lower
/// id has ended, so no row can still commit below them; with `look_past`,
/// every such transaction of this database), announcing it on
/// [`FEED_CHANNEL`] in the same statement when it read any, and returns
/// them with the watermark.
///
/// The round is one statement outside a transaction, so it takes the
/// write lanes (`write_batch`): under load it rides in the message of the
/// batch that is forming, as one more statement, instead of a round trip
/// of its own (it was about 1.5 of a request's 3.8 transactions;
/// docs/benchmarks.md, 2026-12-06, fourth session). Alone it runs on the
/// lease connections, whose commits do not wait for their WAL flush: an
/// announcement lost in a crash costs a tail the wait for its next tick.
/// In a batch it reads what committed before its statement began; the
/// batch's own rows are not readable yet (their transaction is running,
/// so its id is not below `xmin`), and the next round takes them. A lost
/// connection fails the round, and the next takes a fresh one.
///
/// Readers on several replicas read the same rows, each for its own
/// subscribers: the log's numbers are given at insert ([`next_seq`]), so
/// nothing here writes but the announcement.
async fn round(shared: &Shared, look_past: bool) -> Result<Round, DbErr> {
    let base = *shared.feed.last.lock().await;
    let rows = shared
        .tail_round(
            shared
                .feed
                .round_statement
                .get_or_init(|| round_statement(shared)),
            values![
                i64::try_from(base).unwrap_or(i64::MAX),
                // Other replicas' tails hear of the round, while there are
                // any (`presence`); each tail also catches up every tick.
                shared.notifies(),
                look_past
            ],
        )
        .await?;
    let mut summary = None;
    let mut read = Vec::new();
    // Each row has the round's summary and, when it read any, one row of
    // the log.
    for row in rows {
        if summary.is_none() {
            let watermark: i64 = row.try_get("", "watermark")?;
            let held_back: bool = row.try_get("", "held_back")?;
            let looked_past: bool = row.try_get("", "looked_past")?;
            summary = Some((watermark, held_back, looked_past));
        }
        let seq: Option<i64> = row.try_get("", "seq")?;
        if seq.is_some() {
            read.push(change_event(&row)?);
        }
    }
    let (watermark, held_back, looked_past) =
        summary.ok_or_else(|| DbErr::Custom("tail round returned no summary".into()))?;
    // A full page may have left rows below the watermark: do not promise
    // them yet.
    let full = i64::try_from(read.len()).unwrap_or(i64::MAX) >= ROUND_PAGE;
    Ok(Round {
        watermark: if full { 0 } else { watermark },
        proven: watermark,
        looked_past,
        backlog: full || held_back,
        rows: read,
    })
}

/// The round's statement (`$1` the last seq broadcast, `$2` whether to
/// announce, `$3` whether to look past other databases' transactions):
/// the same text every time (built once per backend), so each connection
/// prepares it once. Postgres evaluates a subquery of a `CASE` branch only
/// when the branch is taken, so a round that does not look past other
/// databases does not read the server's sessions.
///
/// `held_back` compares the log's highest number with the watermark: as
/// `EXISTS (… seq >= watermark)` the planner, taking a third of the rows
/// to match an open range, scanned the table for it. `ready` puts the
/// watermark in its own condition, a scalar subquery of `w` (computed
/// once, a bound of the index scan) rather than joining `w`: joined, it
/// became a filter on a scan of every row after `$1`, which read the
/// whole backlog at every round while an open transaction held rows back.
fn round_statement(shared: &Shared) -> String {
    format!(
        "WITH w AS (SELECT \
           CASE WHEN $3 THEN {WATERMARK_OF_THIS_DATABASE} ELSE {WATERMARK} END AS watermark, \
           {WATERMARK} AS xmin), \
         ready AS ( \
           SELECT c.seq, c.queue, c.kind, c.subject, c.data, c.created_at \
           FROM change_log c \
           WHERE c.seq > $1 AND c.seq < ((SELECT watermark FROM w) << {TXID_SHIFT}) \
           ORDER BY c.seq LIMIT {ROUND_PAGE}), \
         announced AS ( \
           SELECT pg_notify({channel}, {tag}) WHERE EXISTS (SELECT 1 FROM ready) AND $2), \
         summary AS ( \
           SELECT w.watermark, w.watermark > w.xmin AS looked_past, \
             COALESCE((SELECT MAX(c.seq) FROM change_log c) \
               >= (w.watermark << {TXID_SHIFT}), false) AS held_back, \
             (SELECT COUNT(*) FROM announced) AS announced \
           FROM w) \
         SELECT s.watermark, s.looked_past, s.held_back, s.announced, \
           d.seq, d.queue, d.kind, d.subject, d.data, d.created_at \
         FROM summary s LEFT JOIN ready d ON true ORDER BY d.seq",
        channel = literal::text(FEED_CHANNEL),
        tag = literal::text(&shared.notify_tag),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_postgres_pool as pool;
    use sea_orm::sqlx::{self, PgConnection, Row};

    /// Appends `n` rows to `change_log` in one statement, as the adapter
    /// does; returns their numbers in row order.
    async fn append(conn: &mut PgConnection, n: usize) -> Vec<i64> {
        let rows: Vec<String> = (0..n)
            .map(|ord| format!("('q', 'k', 's', '{{}}'::jsonb, {ord})"))
            .collect();
        let sql = insert_numbered(&rows.join(", "), "0", None);
        let mut seqs: Vec<i64> = sqlx::query(&sql)
            .fetch_all(conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("seq"))
            .collect();
        seqs.sort_unstable();
        seqs
    }

    async fn txid(conn: &mut PgConnection) -> i64 {
        sqlx::query("SELECT pg_current_xact_id()::text::bigint AS t")
            .fetch_one(conn)
            .await
            .unwrap()
            .get("t")
    }

    /// A transaction's rows take the numbers of its range in order, across
    /// its statements (a batch of writes is several in one transaction),
    /// and a later transaction's come after them.
    #[tokio::test]
    async fn a_transactions_rows_number_on_across_its_statements() {
        let Some(pool) = pool(1).await else { return };
        let mut conn = pool.acquire().await.unwrap().detach();
        // A table of this session only, shadowing any other.
        sqlx::raw_sql(
            "CREATE TEMP TABLE change_log (seq bigint PRIMARY KEY, queue text, \
             kind text NOT NULL, subject text NOT NULL, data jsonb NOT NULL, \
             created_at bigint NOT NULL); \
             BEGIN",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let first = append(&mut conn, 3).await;
        let second = append(&mut conn, 2).await;
        let t = txid(&mut conn).await;
        sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
        let base = t << TXID_SHIFT;
        assert_eq!(first, [base, base + 1, base + 2]);
        assert_eq!(second, [base + 3, base + 4], "after the first statement's");

        let later = append(&mut conn, 1).await;
        assert!(later[0] > base + 4, "a later transaction numbers above");
        assert_eq!(later[0] % (1 << TXID_SHIFT), 0, "from its range's start");
    }
}
