//! The SQLite writer: the one connection every write of this process goes
//! through, kept out of sqlx's pool, with its transactions begun and ended
//! by statements in the same call as the work.
//!
//! Through sea-orm a write took the pool's only connection (waking the
//! task that waited for it), sent BEGIN, the statements and COMMIT (each a
//! hand-over to the connection's thread and back), and the pool pinged the
//! connection on its way back (one more, with no option to turn it off),
//! all while every other write waited for that connection. Here a write of
//! the stores is one call, `BEGIN IMMEDIATE; …; COMMIT`, and so is a
//! statement on its own (a lease operation). Writes that come while the
//! writer is busy commit together in one transaction, those that share a
//! statement text in one call (`write_batch`; this module's
//! [`WriteTarget`]; `sqlite_merge`).
//!
//! The transactions are statements, so sqlx does not track them. The slot
//! remembers that one may be open: set before a call that begins one,
//! cleared once a call that ends it returned. A holder that stops in
//! between (a cancelled future, an error half way through a list) leaves
//! it set, and the transaction is rolled back before the connection runs
//! anything else: by a task the dropped holder spawns, else by the next
//! holder. (A list whose future was dropped runs on in the connection's
//! thread up to its next row; the rollback is queued behind it.)
//!
//! `BEGIN IMMEDIATE` takes the database's write lock at once, waiting for
//! another process's writer under `busy_timeout`. A deferred transaction
//! that read first would fail at once with `SQLITE_BUSY` when another
//! process committed in between (a stale snapshot cannot be upgraded).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::sea_query::Values;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Sqlite, SqlitePool};
use sea_orm::{ConnAcquireErr, DbErr, QueryResult, Value};
use sea_query_binder::SqlxValues;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::held::{Driver, failed};
use crate::sqlite_merge::{self, MergedCall};
use crate::write_batch::{Answer, Role, WriteTarget};

/// A connection-local table that says whether a list's write touched a row
/// (see [`HeldWriter::transaction`]'s callers): one row while it did.
pub(crate) const WRITE_HIT: &str = "temp.write_hit";

pub(crate) struct SqliteWriter {
    pool: SqlitePool,
    slot: Arc<Mutex<Slot>>,
    acquire_timeout: Duration,
}

#[derive(Default)]
struct Slot {
    /// Taken from the pool on demand; given back only by
    /// [`SqliteWriter::release`] and [`SqliteWriter::park`].
    conn: Option<PoolConnection<Sqlite>>,
    /// A transaction may be open on `conn`.
    open: bool,
}

impl SqliteWriter {
    /// The writer over `pool` (one connection), waiting at most
    /// `acquire_timeout` for another holder.
    pub(crate) fn new(pool: SqlitePool, acquire_timeout: Duration) -> Self {
        Self {
            pool,
            slot: Arc::default(),
            acquire_timeout,
        }
    }

    /// Runs `sql` outside a transaction (each statement commits on its own).
    pub(crate) async fn fetch_all(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.hold().await?.fetch_all(sql, values).await
    }

    /// Holds the writer: waits for the holder before (at most the acquire
    /// timeout), takes the connection from the pool if the slot has none,
    /// and rolls back a transaction a holder before left open.
    pub(crate) async fn hold(&self) -> Result<HeldWriter, DbErr> {
        let slot = tokio::time::timeout(self.acquire_timeout, self.slot.clone().lock_owned())
            .await
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?;
        let mut held = HeldWriter { slot };
        let slot = &mut *held.slot;
        if slot.conn.is_none() {
            let mut conn = self.pool.acquire().await.map_err(failed)?;
            let create = format!("CREATE TEMP TABLE IF NOT EXISTS {WRITE_HIT} (hit INTEGER)");
            Sqlite::fetch_all(&mut conn, &create, vec![])
                .await
                .map_err(failed)?;
            slot.conn = Some(conn);
            slot.open = false;
        }
        rollback_if_open(slot).await?;
        Ok(held)
    }

    /// Holds the writer with its connection given back to the pool, for
    /// what must run on the pool itself (the migrations); the next holder
    /// takes it again.
    pub(crate) async fn park(&self) -> Result<HeldWriter, DbErr> {
        let mut held = self.hold().await?;
        held.slot.conn = None;
        Ok(held)
    }

    /// Gives the connection back to the pool (which a pool's `close` waits
    /// for), after the holder before is done.
    pub(crate) async fn release(&self) {
        let mut slot = self.slot.lock().await;
        // A rollback that fails here leaves nothing to protect: the
        // connection is closed with its pool.
        let _ = rollback_if_open(&mut slot).await;
        slot.conn = None;
    }
}

/// The writer's connection, held by one caller. Dropping it with a
/// transaction open rolls that back before anyone else runs a statement.
pub(crate) struct HeldWriter {
    slot: OwnedMutexGuard<Slot>,
}

impl HeldWriter {
    fn conn(&mut self) -> Result<&mut PoolConnection<Sqlite>, DbErr> {
        self.slot
            .conn
            .as_mut()
            .ok_or_else(|| DbErr::Custom("the SQLite writer is parked".into()))
    }

    /// Runs `sql` (statements separated by `;`, numbered `$n` placeholders
    /// over one list of `values`) in one call and returns every row.
    ///
    /// Placeholders are `$n`, never `?n`: sqlx numbers each statement's
    /// `?n` slots up to the highest n, binds the unused ones positionally
    /// across the statements and stops binding once that count passes the
    /// values, leaving later statements' values NULL; a `$n` is a name it
    /// looks up.
    pub(crate) async fn fetch_all(
        &mut self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        Sqlite::fetch_all(self.conn()?, sql, values)
            .await
            .map_err(failed)
    }

    /// Runs one statement; returns the rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
        let query = sqlx::query_with(sql, SqlxValues(Values(values)));
        let done = query.execute(&mut **self.conn()?).await.map_err(failed)?;
        Ok(done.rows_affected())
    }

    /// Begins a transaction (`BEGIN IMMEDIATE`).
    pub(crate) async fn begin(&mut self) -> Result<(), DbErr> {
        self.slot.open = true;
        self.fetch_all("BEGIN IMMEDIATE", vec![]).await?;
        Ok(())
    }

    /// Commits the open transaction.
    pub(crate) async fn commit(&mut self) -> Result<(), DbErr> {
        self.fetch_all("COMMIT", vec![]).await?;
        self.slot.open = false;
        Ok(())
    }

    /// Runs `sql` as [`fetch_all`](Self::fetch_all) does, inside a
    /// transaction begun and committed in the same call. A statement that
    /// fails rolls the transaction back (the ones after it did not run).
    pub(crate) async fn transaction(
        &mut self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let alone = MergedCall {
            sql: sql.into(),
            values,
            members: vec![0],
            statements: None,
        };
        let mut answers = self.transaction_of_merged(vec![alone], 1).await?;
        Ok(answers.pop().unwrap_or_default())
    }

    /// Runs each of `calls` ([`sqlite_merge`]) as
    /// [`fetch_all`](Self::fetch_all) does, a call each, all in one
    /// transaction: `BEGIN IMMEDIATE` rides in the first call and `COMMIT`
    /// in the last, so a transaction costs no calls of its own. Returns the
    /// rows of each of the `writes` the calls stand for, each write's rows
    /// those of its copy's statements. A statement that fails rolls the
    /// whole transaction back (nothing after it ran) and its error is
    /// returned.
    pub(crate) async fn transaction_of_merged(
        &mut self,
        calls: Vec<MergedCall<'_>>,
        writes: usize,
    ) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        self.slot.open = true;
        let last = calls.len().saturating_sub(1);
        let mut answers: Vec<Vec<QueryResult>> = (0..writes).map(|_| Vec::new()).collect();
        for (i, call) in calls.into_iter().enumerate() {
            let begin = if i == 0 { "BEGIN IMMEDIATE;\n" } else { "" };
            let commit = if i == last { ";\nCOMMIT" } else { "" };
            // A call between the first and the last runs its text as it is.
            let sql: Cow<'_, str> = if begin.is_empty() && commit.is_empty() {
                call.sql
            } else {
                format!("{begin}{}{commit}", call.sql).into()
            };
            let conn = self.conn()?;
            let statements = match fetch_statements(conn, &sql, call.values).await {
                Ok(statements) => statements,
                Err(e) => {
                    // Failing here leaves the slot marked open: the next
                    // holder tries again.
                    let _ = rollback_if_open(&mut self.slot).await;
                    return Err(failed(e));
                }
            };
            // BEGIN's statement comes first, COMMIT's last.
            let (begin, commit) = (usize::from(i == 0), usize::from(i == last));
            let found = statements.len().saturating_sub(begin + commit);
            let each = call.statements.unwrap_or(found);
            if found != call.members.len() * each {
                // Only a statement count that SQLite does not share
                // (`sqlite_merge`'s lexer) comes here.
                let _ = rollback_if_open(&mut self.slot).await;
                return Err(DbErr::Custom(format!(
                    "a merged SQLite call ran {found} statements for {} copies of {each}",
                    call.members.len()
                )));
            }
            let mut statements = statements.into_iter().skip(begin);
            for member in call.members {
                for rows in statements.by_ref().take(each) {
                    answers[member].extend(rows);
                }
            }
        }
        self.slot.open = false;
        Ok(answers)
    }
}

/// Runs `sql` on `conn` and returns each statement's rows.
async fn fetch_statements(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<Vec<QueryResult>>, sqlx::Error> {
    use futures::TryStreamExt;
    use sqlx::Executor;
    let query = sqlx::query_with(sql, SqlxValues(Values(values)));
    let mut stream = conn.fetch_many(query);
    let mut statements = Vec::new();
    let mut rows = Vec::new();
    while let Some(step) = stream.try_next().await? {
        match step {
            sqlx::Either::Left(_) => statements.push(std::mem::take(&mut rows)),
            sqlx::Either::Right(row) => rows.push(QueryResult::from(row)),
        }
    }
    Ok(statements)
}

/// The writes of the stores and the message queue's lease operations go
/// through `write_batch`, one lane: a write that finds the writer free runs
/// alone as a transaction of its own; the writes that waited meanwhile
/// commit together in one transaction, so several writes pay one commit,
/// and those that share a text run as one call (`sqlite_merge`), so they
/// pay one hand-over to the connection's thread. They run grouped by text,
/// not in the order they came: they waited together, so none of them had
/// returned, and any order is one they could have run in.
impl WriteTarget for SqliteWriter {
    /// Every role the same: the writer is where all of SQLite's writes
    /// run (its reads do not come here).
    fn alone<'a>(&'a self, _: Role, sql: &'a str, values: Vec<Value>) -> BoxFuture<'a, Answer> {
        Box::pin(async move { self.hold().await?.transaction(sql, values).await })
    }

    /// The writer holds SQLite's one write lock: nothing to wait for.
    fn together<'a>(
        &'a self,
        writes: &'a [(String, Vec<Value>)],
        _locking: bool,
    ) -> BoxFuture<'a, Result<Vec<Vec<QueryResult>>, DbErr>> {
        Box::pin(async move {
            let calls = sqlite_merge::merge(writes);
            self.hold()
                .await?
                .transaction_of_merged(calls, writes.len())
                .await
        })
    }
}

impl Drop for HeldWriter {
    fn drop(&mut self) {
        if !self.slot.open || self.slot.conn.is_none() {
            return;
        }
        // Roll back now rather than at the next holder, which may be long
        // in coming: until then the open transaction keeps the database's
        // write lock from other processes. Whichever holds the slot first,
        // this task or a waiting holder, rolls back. Without a runtime
        // (shutting down) the next holder does it.
        let mutex = OwnedMutexGuard::mutex(&self.slot).clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut slot = mutex.lock_owned().await;
                if let Err(e) = rollback_if_open(&mut slot).await {
                    tracing::warn!(error = %e, "rolling back an abandoned SQLite write failed; the next write retries");
                }
            });
        }
    }
}

/// Rolls back the transaction a holder may have left open. "No transaction
/// is active" means the call that would have ended it got as far as its
/// COMMIT (or never began); either way none is open now.
async fn rollback_if_open(slot: &mut Slot) -> Result<(), DbErr> {
    let Some(conn) = slot.conn.as_mut().filter(|_| slot.open) else {
        return Ok(());
    };
    match Sqlite::fetch_all(conn, "ROLLBACK", vec![]).await {
        Ok(_) => {}
        Err(e) if e.to_string().contains("no transaction is active") => {}
        Err(e) => return Err(failed(e)),
    }
    slot.open = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error;
    use crate::write_batch::WriteBatch;
    use crate::write_batch::tests::only_the_duplicate_failed;
    use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use stovepipe_ports::StoreError;

    /// A database file with table `t (x UNIQUE)`, the writer over a pool
    /// of one connection to it, and that pool.
    async fn writer(dir: &tempfile::TempDir) -> (SqliteWriter, SqlitePool) {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options(dir))
            .await
            .unwrap();
        let writer = SqliteWriter::new(pool.clone(), Duration::from_secs(5));
        writer
            .fetch_all("CREATE TABLE t (x INTEGER UNIQUE)", vec![])
            .await
            .unwrap();
        (writer, pool)
    }

    fn options(dir: &tempfile::TempDir) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(dir.path().join("w.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
    }

    async fn count(writer: &SqliteWriter) -> i64 {
        let rows = writer
            .fetch_all("SELECT COUNT(*) AS n FROM t", vec![])
            .await
            .unwrap();
        rows[0].try_get("", "n").unwrap()
    }

    /// Another process's writer: a connection of its own that gives up at
    /// once when the database is locked.
    async fn other_process_writes(dir: &tempfile::TempDir, x: i64) -> Result<(), sqlx::Error> {
        let mut other = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options(dir).busy_timeout(Duration::ZERO))
            .await
            .unwrap()
            .acquire()
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (x) VALUES ($1)")
            .bind(x)
            .execute(&mut *other)
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn statements_keep_the_one_connection_out_of_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer(&dir).await;
        for x in 0..3 {
            let rows = writer
                .fetch_all("INSERT INTO t (x) VALUES ($1) RETURNING x", vec![x.into()])
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
        }
        assert_eq!(count(&writer).await, 3);
        assert_eq!(pool.num_idle(), 0, "held, not back in the pool");
        writer.release().await;
        tokio::time::timeout(Duration::from_secs(5), pool.close())
            .await
            .expect("the pool closes once the writer gave its connection back");
    }

    #[tokio::test]
    async fn a_transaction_commits_its_statements_in_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _pool) = writer(&dir).await;
        let rows = writer
            .hold()
            .await
            .unwrap()
            .transaction(
                "INSERT INTO t (x) VALUES ($1) RETURNING x; INSERT INTO t (x) VALUES ($2) RETURNING x",
                vec![1.into(), 2.into()],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(count(&writer).await, 2);
        other_process_writes(&dir, 3)
            .await
            .expect("the commit released the database's write lock");
    }

    /// The second insert breaks the unique key: the first is rolled back
    /// with it, and the writer is left outside any transaction.
    #[tokio::test]
    async fn a_transaction_failing_half_way_rolls_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _pool) = writer(&dir).await;
        let err = writer
            .hold()
            .await
            .unwrap()
            .transaction(
                "INSERT INTO t (x) VALUES (1); INSERT INTO t (x) VALUES (1); \
                 INSERT INTO t (x) VALUES (2)",
                vec![],
            )
            .await
            .unwrap_err();
        assert!(matches!(error::store(err), StoreError::Backend(_)));
        assert_eq!(count(&writer).await, 0, "nothing of it stayed");
        other_process_writes(&dir, 5)
            .await
            .expect("no transaction holds the write lock");
        let mut held = writer.hold().await.unwrap();
        held.transaction("INSERT INTO t (x) VALUES (1)", vec![])
            .await
            .expect("the next transaction begins");
    }

    /// A holder that stops with its transaction open (here: dropped after
    /// BEGIN and a write) has it rolled back before the next statement,
    /// and soon enough that another process can write in the meantime.
    #[tokio::test]
    async fn a_holder_dropped_in_a_transaction_has_it_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _pool) = writer(&dir).await;
        let mut held = writer.hold().await.unwrap();
        held.begin().await.unwrap();
        held.execute("INSERT INTO t (x) VALUES (1)", vec![])
            .await
            .unwrap();
        drop(held);
        let mut other = Err(sqlx::Error::PoolClosed);
        for _ in 0..100 {
            other = other_process_writes(&dir, 7).await;
            if other.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        other.expect("the abandoned transaction was rolled back without another holder");
        let rows = writer
            .fetch_all("SELECT x FROM t ORDER BY x", vec![])
            .await
            .unwrap();
        let xs: Vec<i64> = rows.iter().map(|r| r.try_get("", "x").unwrap()).collect();
        assert_eq!(xs, [7], "the dropped holder's write is gone");
    }

    /// A list whose future is dropped half way (while it streams a long
    /// count, before the write and COMMIT after it) stops at its next row,
    /// commits nothing and leaves the writer usable.
    #[tokio::test]
    async fn a_transaction_cancelled_half_way_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _pool) = writer(&dir).await;
        let slow = "INSERT INTO t (x) VALUES (1); \
             WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 50000000) \
             SELECT n FROM c; \
             INSERT INTO t (x) VALUES (2)";
        let mut held = writer.hold().await.unwrap();
        let cancelled =
            tokio::time::timeout(Duration::from_millis(50), held.transaction(slow, vec![])).await;
        assert!(cancelled.is_err(), "the list was still running");
        drop(held);
        assert_eq!(count(&writer).await, 0, "nothing of it committed");
        let mut held = writer.hold().await.unwrap();
        held.transaction("INSERT INTO t (x) VALUES (3)", vec![])
            .await
            .expect("the next transaction begins");
        drop(held);
        assert_eq!(count(&writer).await, 1);
    }

    #[tokio::test]
    async fn a_second_holder_waits_at_most_the_acquire_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (first, pool) = writer(&dir).await;
        first.release().await;
        let writer = SqliteWriter::new(pool, Duration::from_millis(50));
        let held = writer.hold().await.unwrap();
        let Err(err) = writer.hold().await else {
            panic!("two holders at once");
        };
        assert!(matches!(error::store(err), StoreError::Unavailable(_)));
        drop(held);
        assert_eq!(count(&writer).await, 0);
    }

    /// The migrations run on the pool: parking gives the connection back
    /// until the parked holder is dropped.
    #[tokio::test]
    async fn parking_lends_the_connection_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer(&dir).await;
        let parked = writer.park().await.unwrap();
        sqlx::query("INSERT INTO t (x) VALUES (9)")
            .execute(&pool)
            .await
            .expect("the pool has its connection");
        drop(parked);
        assert_eq!(count(&writer).await, 1);
        assert_eq!(pool.num_idle(), 0, "held again");
    }

    /// `futures` (writes) through a batch of one lane on `writer`, each started in
    /// turn while the test holds the writer: the first takes the lane and
    /// runs alone, the others wait for it and then go out together.
    async fn batched<F: std::future::Future>(
        writer: &SqliteWriter,
        futures: impl IntoIterator<Item = F>,
    ) -> Vec<F::Output> {
        let held = writer.hold().await.unwrap();
        let release = async move {
            tokio::task::yield_now().await;
            drop(held);
        };
        tokio::join!(futures::future::join_all(futures), release).0
    }

    fn insert(x: i64) -> (String, Vec<Value>) {
        (
            "INSERT INTO t (x) VALUES ($1) RETURNING x".to_owned(),
            vec![x.into()],
        )
    }

    async fn write(
        batch: &WriteBatch,
        writer: &SqliteWriter,
        (sql, values): (String, Vec<Value>),
    ) -> Answer {
        batch.write(writer, &sql, values).await
    }

    /// The writes that waited for the writer commit together: each gets
    /// its own rows, a write sees the ones before it in the batch, and the
    /// counters tell the one alone from the batched ones.
    #[tokio::test]
    async fn writes_that_wait_for_the_writer_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _pool) = writer(&dir).await;
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let batch = WriteBatch::new(1);
        let update = (
            "UPDATE t SET x = 20 WHERE x = 2 RETURNING x".to_owned(),
            vec![],
        );
        let queued = [insert(1), insert(2), update, insert(3)];
        let answers = batched(&writer, queued.map(|w| write(&batch, &writer, w))).await;
        let xs: Vec<Vec<i64>> = answers
            .into_iter()
            .map(|a| {
                a.unwrap()
                    .iter()
                    .map(|r| r.try_get("", "x").unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(
            xs,
            [vec![1], vec![2], vec![20], vec![3]],
            "each its own rows; the update saw the insert before it"
        );
        assert_eq!(count(&writer).await, 3);
        let text = scrape.render();
        assert_scraped(
            &text,
            &[
                r#"stovepipe_db_writes_total{path="alone",role="write"} 1"#,
                r#"stovepipe_db_writes_total{path="batched",role="write"} 3"#,
                r#"stovepipe_db_write_batches_total{outcome="committed"} 1"#,
            ],
        );
    }

    /// Every one of `lines` is in the metrics scrape `text`.
    fn assert_scraped(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    /// Writes of one text that wait together run as one call, each copy
    /// over its own values (a placeholder in quotes is not one), and each
    /// write gets the rows of its own statements, whatever the others'.
    /// The batch commits as it is (a copy bound to another's values would
    /// insert a duplicate and send every write through alone).
    #[tokio::test]
    async fn writes_of_one_text_run_as_one_call_with_their_own_rows() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let dir = tempfile::tempdir().unwrap();
        let (writer, _pool) = writer(&dir).await;
        let batch = WriteBatch::new(1);
        let insert_and_echo = |x: i64| {
            (
                "INSERT INTO t (x) VALUES ($1); \
                 SELECT x, '$1' AS quoted FROM t WHERE x = $1 AND $2 > 0; \
                 SELECT $1 + 1000 AS x WHERE $2 > 1"
                    .to_owned(),
                vec![x.into(), (x % 3).into()],
            )
        };
        let queued: Vec<_> = (1..=7).map(insert_and_echo).collect();
        let answers = batched(
            &writer,
            queued.into_iter().map(|w| write(&batch, &writer, w)),
        )
        .await;
        let rows: Vec<Vec<(i64, Option<String>)>> = answers
            .into_iter()
            .map(|a| {
                a.unwrap()
                    .iter()
                    .map(|r| (r.try_get("", "x").unwrap(), r.try_get("", "quoted").ok()))
                    .collect()
            })
            .collect();
        let own = |x: i64| -> Vec<(i64, Option<String>)> {
            let mut rows = Vec::new();
            if x % 3 > 0 {
                rows.push((x, Some("$1".to_owned())));
            }
            if x % 3 > 1 {
                rows.push((x + 1000, None));
            }
            rows
        };
        assert_eq!(rows, (1..=7).map(own).collect::<Vec<_>>());
        assert_eq!(count(&writer).await, 7);
        assert_scraped(
            &scrape.render(),
            &[
                r#"stovepipe_db_writes_total{path="batched",role="write"} 6"#,
                r#"stovepipe_db_write_batches_total{outcome="committed"} 1"#,
            ],
        );
    }

    /// A write that fails rolls its batch back; the others run again alone
    /// and commit, and the failing one gets its own error.
    #[tokio::test]
    async fn a_failing_write_in_a_batch_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _pool) = writer(&dir).await;
        let batch = WriteBatch::new(1);
        let queued = [insert(1), insert(2), insert(2), insert(3)];
        let answers = batched(&writer, queued.map(|w| write(&batch, &writer, w))).await;
        only_the_duplicate_failed(&answers, "UNIQUE");
        assert_eq!(count(&writer).await, 3);
    }

    /// The batch is one transaction: when its flusher is cancelled after
    /// its own write ran and while the next one runs, nothing of the batch
    /// commits, the other write is told to try again, and the writer
    /// serves the next write.
    #[tokio::test]
    async fn a_batch_whose_flusher_is_cancelled_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _pool) = writer(&dir).await;
        let batch = WriteBatch::new(1);
        let slow = (
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 50000000) \
             SELECT n FROM c"
                .to_owned(),
            vec![],
        );
        let answers = batched(
            &writer,
            vec![
                Box::pin(write(&batch, &writer, insert(1))) as futures::future::BoxFuture<'_, _>,
                Box::pin(async {
                    tokio::time::timeout(
                        Duration::from_millis(100),
                        write(&batch, &writer, insert(2)),
                    )
                    .await
                    .unwrap_or_else(|_| Err(DbErr::Custom("cancelled".into())))
                }),
                Box::pin(write(&batch, &writer, slow)),
            ],
        )
        .await;
        let [first, flusher, other] = <[Answer; 3]>::try_from(answers).unwrap();
        first.unwrap();
        assert_eq!(flusher.unwrap_err().to_string(), "Custom Error: cancelled");
        let err = other.unwrap_err();
        assert!(error::is_transient(&err), "retryable: {err}");
        write(&batch, &writer, insert(3)).await.unwrap();
        assert_eq!(count(&writer).await, 2, "the first and the last; not 2");
    }
}
