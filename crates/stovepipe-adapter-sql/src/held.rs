//! Connections kept out of sqlx's pool between statements.
//!
//! sqlx sends every pooled connection a ping when it goes back to its pool
//! (`PoolConnection`'s drop: on Postgres a Sync message and its
//! ReadyForQuery, "a band-aid" in sqlx's words; on SQLite a hand-over to the
//! connection's thread and back; no option turns it off), and sea-orm takes
//! a connection from the pool for each statement. So every Postgres
//! statement cost the server two round trips, and every SQLite read two
//! trips to its connection's thread. The statements that run outside a
//! transaction (Postgres: reads, the stores' one-statement writes, the
//! message queue's lease operations; SQLite: reads) go through
//! [`HeldConnections`] instead: each slot keeps a connection it took from
//! the pool once, and a statement borrows a slot, not the connection. (The
//! SQLite writer is one such connection with transactions on it:
//! `sqlite_writer`.)
//!
//! A Postgres statement whose future is dropped half way leaves its
//! connection with a reply to read; sqlx reads up to the connection's
//! ReadyForQuery before its next statement, as the release ping did. (A
//! SQLite read dropped half way stops at its next row; the connection's
//! thread takes the next command after it.) A statement that fails with
//! a retryable error (a lost connection, the server shutting the session
//! down, also a deadlock or serialisation failure, where a fresh
//! connection costs little) gives its connection back to the pool, which
//! closes it when its ping fails; the slot takes a fresh one on its next
//! use. Any other error is the server's answer to the statement, and the
//! connection stays.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::TryStreamExt;
use futures::future::BoxFuture;
use sea_orm::sea_query::Values;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, PgConnection, Pool, Postgres, Sqlite};
use sea_orm::{DbErr, QueryResult, RuntimeErr, Value};
use sea_query_binder::SqlxValues;
use tokio::sync::{Mutex, MutexGuard};

use crate::{error, literal};

/// A database whose connections can run a sea-orm statement directly.
pub(crate) trait Driver: sqlx::Database {
    /// Runs `sql` (`$n` placeholders; on SQLite possibly several
    /// statements separated by `;`) on `conn` and returns every row.
    fn fetch_all<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
        values: Vec<Value>,
    ) -> BoxFuture<'c, Result<Vec<QueryResult>, sqlx::Error>>;
}

/// The same code for each driver; the types differ.
macro_rules! driver {
    ($db:ty) => {
        impl Driver for $db {
            fn fetch_all<'c>(
                conn: &'c mut Self::Connection,
                sql: &'c str,
                values: Vec<Value>,
            ) -> BoxFuture<'c, Result<Vec<QueryResult>, sqlx::Error>> {
                Box::pin(async move {
                    let query = sqlx::query_with(sql, SqlxValues(Values(values)));
                    let rows = query.fetch_all(conn).await?;
                    Ok(rows.into_iter().map(QueryResult::from).collect())
                })
            }
        }
    };
}
driver!(Postgres);
driver!(Sqlite);

/// A connection a slot holds, and the statements prepared on it (Postgres:
/// `fetch_each_in_one_message`), which go with it.
struct HeldConnection<DB: sqlx::Database> {
    conn: PoolConnection<DB>,
    /// A statement's text → the types it is prepared with and its name.
    prepared: HashMap<String, (Vec<&'static str>, Arc<str>)>,
}

type Slot<DB> = Option<HeldConnection<DB>>;

pub(crate) struct HeldConnections<DB: Driver> {
    pool: Pool<DB>,
    /// Filled on demand: a slot takes a connection only when every filled
    /// slot is busy, so an idle backend holds one.
    slots: Vec<Mutex<Slot<DB>>>,
    next: AtomicUsize,
}

impl<DB: Driver> HeldConnections<DB> {
    /// At most `size` connections of `pool` held (the pool keeps the rest
    /// for transactions).
    pub(crate) fn new(pool: Pool<DB>, size: usize) -> Self {
        Self {
            pool,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// All of `pool`'s connections but `leave` held (the pool keeps those
    /// for transactions).
    pub(crate) fn all_but(pool: &Pool<DB>, leave: usize) -> Self {
        let size = pool.options().get_max_connections() as usize;
        Self::new(pool.clone(), size.saturating_sub(leave))
    }

    /// Runs one statement (`$n` placeholders) and returns its rows.
    pub(crate) async fn fetch_all(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let mut slot = self.slot().await;
        let conn = self.connection(&mut slot).await?;
        DB::fetch_all(&mut *conn.conn, sql, values)
            .await
            .map_err(|e| failed_in(&mut slot, e))
    }

    /// Runs `statements` (`$n` placeholders) in one transaction on one
    /// held connection and returns each one's rows. The first error ends
    /// it: nothing of it commits, and the error is returned. A future
    /// dropped half way leaves its connection's transaction to be rolled
    /// back before that connection's next statement (sqlx's `Transaction`).
    /// The statements are borrowed, so a caller can run them again alone.
    pub(crate) async fn fetch_each_in_transaction(
        &self,
        statements: &[(String, Vec<Value>)],
    ) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        let mut slot = self.slot().await;
        let conn = self.connection(&mut slot).await?;
        let run = async {
            let mut tx = sqlx::Connection::begin(&mut *conn.conn).await?;
            let mut answers = Vec::with_capacity(statements.len());
            for (sql, values) in statements {
                answers.push(DB::fetch_all(&mut *tx, sql, values.clone()).await?);
            }
            tx.commit().await?;
            Ok(answers)
        };
        run.await.map_err(|e| failed_in(&mut slot, e))
    }

    /// The slot's connection, taken from the pool if it has none.
    async fn connection<'s>(
        &self,
        slot: &'s mut Slot<DB>,
    ) -> Result<&'s mut HeldConnection<DB>, DbErr> {
        Ok(match slot {
            Some(held) => held,
            empty => empty.insert(HeldConnection {
                conn: self.pool.acquire().await.map_err(failed)?,
                prepared: HashMap::new(),
            }),
        })
    }

    /// Gives every held connection back to the pool (which a pool's
    /// `close` waits for), waiting for statements running on them.
    pub(crate) async fn release(&self) {
        for slot in &self.slots {
            *slot.lock().await = None;
        }
    }

    /// [`release`](Self::release), then closes the pool.
    pub(crate) async fn close(&self) {
        self.release().await;
        self.pool.close().await;
    }

    /// A free slot holding a connection, else a free empty one, else the
    /// next slot in turn once it is free.
    async fn slot(&self) -> MutexGuard<'_, Slot<DB>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut empty = None;
        for i in 0..n {
            if let Ok(slot) = self.slots[(start + i) % n].try_lock() {
                if slot.is_some() {
                    return slot;
                }
                if empty.is_none() {
                    empty = Some(slot);
                }
            }
        }
        match empty {
            Some(slot) => slot,
            None => self.slots[start % n].lock().await,
        }
    }

    /// Takes one of the connections until the guard is dropped, so that a
    /// test can keep statements waiting for it.
    #[cfg(test)]
    pub(crate) async fn occupy(&self) -> impl Sized + '_ {
        self.slot().await
    }
}

/// At most about this many statements (plus one batch's new ones) stay
/// prepared per connection for `fetch_each_in_one_message`.
pub(crate) const MAX_PREPARED: usize = 256;

/// Numbers the statements prepared for `fetch_each_in_one_message`, over
/// every connection of the process.
static PREPARED_NAMES: AtomicU64 = AtomicU64::new(1);

/// Postgres: runs `sql` (statements separated by `;`, no parameters) as one
/// message of the simple query protocol, one round trip, and returns each
/// statement's rows. Postgres runs the message as one transaction unless
/// it says `BEGIN`/`COMMIT` itself; the first error ends it.
pub(crate) fn simple_message<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> BoxFuture<'c, Result<Vec<Vec<PgRow>>, sqlx::Error>> {
    // Boxed here: an async fn over `raw_sql` cannot be proven `Send` for
    // the spawned tasks that run statements (the change-log tail).
    Box::pin(async move {
        let mut replies = sqlx::Executor::fetch_many(conn, sqlx::raw_sql(sql));
        let mut statements = Vec::new();
        let mut rows = Vec::new();
        // Each statement's rows, then its completion.
        while let Some(reply) = replies.try_next().await? {
            match reply {
                sqlx::Either::Left(_done) => statements.push(std::mem::take(&mut rows)),
                sqlx::Either::Right(row) => rows.push(row),
            }
        }
        Ok(statements)
    })
}

/// A write of a batch, made ready for one message: its statement, the
/// types of its values and the values as constants.
struct Call<'a> {
    sql: &'a str,
    types: Vec<&'static str>,
    args: String,
}

impl<'a> Call<'a> {
    /// `None` when a value is of a kind `literal` does not write.
    fn new(sql: &'a str, values: &[Value]) -> Option<Self> {
        let mut types = Vec::with_capacity(values.len());
        let mut args = String::with_capacity(values.len() * 16);
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                args.push_str(", ");
            }
            types.push(literal::write_typed(&mut args, value)?);
        }
        Some(Self { sql, types, args })
    }
}

impl HeldConnection<Postgres> {
    /// The name each call's statement is prepared under on this
    /// connection, preparing the ones it lacks first, in one message.
    /// Past [`MAX_PREPARED`], ours are deallocated (sqlx's own stay) and
    /// prepared again as they come: outboxes of varying length make
    /// statements of many shapes.
    async fn prepared_names(&mut self, calls: &[Call<'_>]) -> Result<Vec<Arc<str>>, sqlx::Error> {
        if self.prepared.len() >= MAX_PREPARED {
            let deallocate: Vec<String> = self
                .prepared
                .drain()
                .map(|(_, (_, name))| format!("DEALLOCATE {name}"))
                .collect();
            simple_message(&mut self.conn, &deallocate.join(";\n")).await?;
        }
        let mut names = Vec::with_capacity(calls.len());
        let mut prepare = Vec::new();
        let mut fresh = Vec::new();
        for call in calls {
            if let Some((types, name)) = self.prepared.get(call.sql)
                && *types == call.types
            {
                names.push(name.clone());
                continue;
            }
            // Never reused: a statement a failed message prepared before
            // failing stays on the connection unrecorded.
            let name: Arc<str> = format!(
                "stovepipe_w{}",
                PREPARED_NAMES.fetch_add(1, Ordering::Relaxed)
            )
            .into();
            prepare.push(if call.types.is_empty() {
                format!("PREPARE {name} AS {}", call.sql)
            } else {
                format!("PREPARE {name} ({}) AS {}", call.types.join(", "), call.sql)
            });
            self.prepared
                .insert(call.sql.to_owned(), (call.types.clone(), name.clone()));
            fresh.push(call.sql);
            names.push(name);
        }
        if !prepare.is_empty()
            && let Err(e) = simple_message(&mut self.conn, &prepare.join(";\n")).await
        {
            for sql in fresh {
                self.prepared.remove(sql);
            }
            return Err(e);
        }
        Ok(names)
    }
}

/// How long a transaction of several writes in one message waits for a row
/// lock before it fails (and its writes run again alone: `write_batch`).
/// Two lanes' batches can wait on each other's rows; the server breaks such
/// a deadlock only after its `deadlock_timeout` (1 s by default), and all
/// that time both lanes, and every statement waiting for one, stood still:
/// a second of the whole pipeline, several times a minute under the
/// pipeline benchmark once joint writes held two rows each
/// (docs/benchmarks.md, 2026-12-06, fifth session). A batch's own
/// statements take a few milliseconds, so a wait this long is a deadlock
/// or a stalled peer, and running the writes alone is the cheaper way out.
pub(crate) const BATCH_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// [`BATCH_LOCK_WAIT`] as a message's first statement (`SET LOCAL`: for
/// its transaction only), written once.
static LOCK_WAIT_SETTING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SET LOCAL lock_timeout = '{}ms'",
        BATCH_LOCK_WAIT.as_millis()
    )
});

impl HeldConnections<Postgres> {
    /// Runs `statements` (`$n` placeholders) in one transaction on one
    /// held connection, as **one message** of the simple query protocol,
    /// and returns each one's rows; `Ok(None)`, having run nothing, when a
    /// value is of a kind `literal` does not write as text.
    ///
    /// Postgres runs the statements of one message as one transaction,
    /// each with a fresh snapshot that sees the ones before it; the first
    /// error ends it, nothing of it commits, and the error is returned.
    /// Each statement goes out as `EXECUTE <name>(<values>)` of a statement
    /// prepared on the connection (in a message of its own, the first time
    /// the connection meets it), so the server plans it as it would a
    /// bound one. Unlike [`fetch_each_in_transaction`], a future dropped
    /// half way has already sent the whole transaction: whether it
    /// commits is unknown to the caller, as when a connection is lost.
    ///
    /// With `bounded`, the transaction waits at most [`BATCH_LOCK_WAIT`]
    /// for a row lock (a batch of reads, which take none, goes without the
    /// setting's statement).
    ///
    /// [`fetch_each_in_transaction`]: Self::fetch_each_in_transaction
    pub(crate) async fn fetch_each_in_one_message(
        &self,
        statements: &[(String, Vec<Value>)],
        bounded: bool,
    ) -> Result<Option<Vec<Vec<QueryResult>>>, DbErr> {
        let Some(calls) = statements
            .iter()
            .map(|(sql, values)| Call::new(sql, values))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let mut slot = self.slot().await;
        let held = self.connection(&mut slot).await?;
        let run = async {
            let names = held.prepared_names(&calls).await?;
            // Each call's constants plus `;\nEXECUTE stovepipe_w<n>()`.
            let length = calls.iter().map(|c| c.args.len() + 40).sum::<usize>();
            let mut message = String::with_capacity(LOCK_WAIT_SETTING.len() + length);
            if bounded {
                message.push_str(&LOCK_WAIT_SETTING);
            }
            for (call, name) in calls.iter().zip(names) {
                if !message.is_empty() {
                    message.push_str(";\n");
                }
                message.push_str("EXECUTE ");
                message.push_str(&name);
                if !call.args.is_empty() {
                    message.push('(');
                    message.push_str(&call.args);
                    message.push(')');
                }
            }
            let mut answers = simple_message(&mut held.conn, &message).await?;
            // The setting's completion.
            if bounded && !answers.is_empty() {
                answers.remove(0);
            }
            if answers.len() != calls.len() {
                return Err(sqlx::Error::Protocol(format!(
                    "{} statements sent in one message, {} completed",
                    calls.len(),
                    answers.len()
                )));
            }
            Ok(Some(
                answers
                    .into_iter()
                    .map(|rows| rows.into_iter().map(QueryResult::from).collect())
                    .collect(),
            ))
        };
        run.await.map_err(|e| failed_in(&mut slot, e))
    }
}

/// As sea-orm reports a failed statement.
pub(crate) fn failed(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e))
}

/// [`failed`], for a statement on `slot`'s connection: a failed
/// connection (`error::connection_failed`) goes back to the pool (which
/// closes it when its ping fails), and the slot takes a fresh one on its
/// next use; a statement the server refused keeps it, with what it has
/// prepared.
fn failed_in<DB: Driver>(slot: &mut Slot<DB>, e: sqlx::Error) -> DbErr {
    let e = failed(e);
    if error::connection_failed(&e) {
        *slot = None;
    }
    e
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_postgres_pool as pool;
    use sea_orm::sqlx::Row;
    use std::time::Duration;
    use stovepipe_ports::StoreError;

    /// The server process behind the connection a statement got.
    async fn backend_pid(held: &HeldConnections<Postgres>) -> i32 {
        let rows = held
            .fetch_all("SELECT pg_backend_pid() AS pid", vec![])
            .await
            .unwrap();
        rows[0].try_get("", "pid").unwrap()
    }

    #[tokio::test]
    async fn statements_one_after_another_keep_one_connection_out_of_the_pool() {
        let Some(pool) = pool(4).await else { return };
        let held = HeldConnections::new(pool.clone(), 3);
        let first = backend_pid(&held).await;
        for _ in 0..5 {
            assert_eq!(backend_pid(&held).await, first, "the same connection");
        }
        assert_eq!(pool.size(), 1, "an idle user holds one connection");
        assert_eq!(pool.num_idle(), 0, "held, not back in the pool");
        held.release().await;
        tokio::time::timeout(Duration::from_secs(5), pool.close())
            .await
            .expect("the pool closes once the held connections are back");
    }

    #[tokio::test]
    async fn concurrent_statements_take_more_slots_up_to_the_size() {
        let Some(pool) = pool(4).await else { return };
        let held = HeldConnections::new(pool.clone(), 2);
        let sleep = || held.fetch_all("SELECT pg_sleep(0.2)", vec![]);
        let (a, b, c) = tokio::join!(sleep(), sleep(), sleep());
        a.unwrap();
        b.unwrap();
        c.unwrap();
        assert_eq!(pool.size(), 2, "never more connections than slots");
        held.release().await;
        pool.close().await;
    }

    /// A statement whose future was dropped before its reply leaves the
    /// reply on the connection; the next statement on it reads past it.
    #[tokio::test]
    async fn a_statement_dropped_half_way_leaves_a_usable_connection() {
        let Some(pool) = pool(2).await else { return };
        let held = HeldConnections::new(pool.clone(), 1);
        let pid = backend_pid(&held).await;
        let dropped = tokio::time::timeout(
            Duration::from_millis(20),
            held.fetch_all("SELECT pg_sleep(0.3)", vec![]),
        )
        .await;
        assert!(dropped.is_err(), "the statement was dropped");
        let rows = held
            .fetch_all("SELECT $1::bigint + 1 AS n", vec![Value::from(41_i64)])
            .await
            .unwrap();
        assert_eq!(rows[0].try_get::<i64>("", "n").unwrap(), 42);
        assert_eq!(backend_pid(&held).await, pid, "the same connection");
        held.release().await;
        pool.close().await;
    }

    /// A connection that died costs the statement that meets it, reported
    /// as retryable; the next statement takes a fresh one.
    #[tokio::test]
    async fn a_dead_connection_fails_one_statement_as_retryable_and_is_replaced() {
        let Some(pool) = pool(3).await else { return };
        let held = HeldConnections::new(pool.clone(), 1);
        let pid = backend_pid(&held).await;
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&pool)
            .await
            .unwrap();
        let err = held.fetch_all("SELECT 1 AS one", vec![]).await.unwrap_err();
        assert!(
            matches!(error::store(err), StoreError::Unavailable(_)),
            "a lost connection is retryable"
        );
        assert_ne!(backend_pid(&held).await, pid, "a fresh connection");
        held.release().await;
        pool.close().await;
    }

    /// The server's answer to a statement (here a division by zero) is the
    /// statement's error; the connection stays.
    #[tokio::test]
    async fn a_database_error_keeps_the_connection() {
        let Some(pool) = pool(2).await else { return };
        let held = HeldConnections::new(pool.clone(), 1);
        let pid = backend_pid(&held).await;
        let err = held
            .fetch_all("SELECT 1 / 0 AS x", vec![])
            .await
            .unwrap_err();
        assert!(matches!(error::store(err), StoreError::Backend(_)));
        assert_eq!(backend_pid(&held).await, pid);
        held.release().await;
        pool.close().await;
    }

    /// The one bigint a query of one row and one column returns.
    pub(crate) async fn scalar(
        held: &HeldConnections<Postgres>,
        sql: &str,
        values: Vec<Value>,
    ) -> i64 {
        let rows = held.fetch_all(sql, values).await.unwrap();
        rows[0].try_get_by_index(0).unwrap()
    }

    /// The statements prepared on `held`'s connection for batches.
    async fn prepared_statements(held: &HeldConnections<Postgres>) -> i64 {
        let sql = "SELECT COUNT(*) FROM pg_prepared_statements WHERE name LIKE 'stovepipe_w%'";
        scalar(held, sql, vec![]).await
    }

    /// The version stored for row `n` of the test's `kinds` table.
    async fn stored_version(held: &HeldConnections<Postgres>, n: i64) -> i64 {
        let sql = "SELECT version FROM kinds WHERE n = $1";
        scalar(held, sql, vec![Value::from(n)]).await
    }

    /// A batch's statements run in one message in arrival order, each
    /// seeing the ones before it; every kind of value the stores bind
    /// reaches the server as it would bound (quotes, backslashes, NULLs,
    /// JSON); a statement is prepared once per connection.
    #[tokio::test]
    async fn a_batch_in_one_message_runs_as_bound_statements_would() {
        let Some(held) = pool(2).await.map(|p| HeldConnections::new(p, 1)) else {
            return;
        };
        held.fetch_all(
            "CREATE TEMPORARY TABLE kinds (n bigint PRIMARY KEY, i integer, t text, j jsonb, b boolean, d double precision, version bigint)",
            vec![],
        )
        .await
        .unwrap();
        let text = "it's a \\ back'slash \\' and ünïcode, $1 and ; too";
        let json = serde_json::json!({"q": "it's", "b": "\\", "n": [1, null]});
        let insert = (
            "INSERT INTO kinds (n, i, t, j, b, d, version) VALUES ($1, $2, $3, $4, $5, $6, 1) \
             RETURNING n, i, t, j, b, d"
                .to_owned(),
            vec![
                Value::from(1_i64),
                Value::from(-2_i32),
                Value::from(text),
                Value::from(json.clone()),
                Value::Bool(None),
                Value::from(0.1_f64),
            ],
        );
        let bump = |n: i64| {
            (
                "UPDATE kinds SET version = version + 1 WHERE n = $1 RETURNING version".to_owned(),
                vec![Value::from(n)],
            )
        };
        let answers = held
            .fetch_each_in_one_message(&[insert, bump(1), bump(1), bump(2)], true)
            .await
            .unwrap()
            .expect("every value is written as text");
        assert_eq!(answers.len(), 4);
        let row = &answers[0][0];
        assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);
        assert_eq!(row.try_get::<i32>("", "i").unwrap(), -2);
        assert_eq!(row.try_get::<String>("", "t").unwrap(), text);
        assert_eq!(row.try_get::<serde_json::Value>("", "j").unwrap(), json);
        assert_eq!(row.try_get::<Option<bool>>("", "b").unwrap(), None);
        assert_eq!(
            row.try_get::<f64>("", "d").unwrap().to_bits(),
            0.1_f64.to_bits()
        );
        let version = |rows: &Vec<QueryResult>| rows[0].try_get::<i64>("", "version").unwrap();
        assert_eq!(version(&answers[1]), 2, "sees the insert before it");
        assert_eq!(version(&answers[2]), 3, "sees the update before it");
        assert!(answers[3].is_empty(), "no row 2: no rows, its own answer");
        assert_eq!(
            prepared_statements(&held).await,
            2,
            "two statements, each prepared once"
        );
        held.fetch_each_in_one_message(&[bump(1), bump(1)], true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            prepared_statements(&held).await,
            2,
            "prepared statements are reused"
        );

        // The first error ends the message and nothing of it commits.
        let failing = (
            "INSERT INTO kinds (n, version) VALUES ($1, 1) RETURNING n".to_owned(),
            vec![Value::from(1_i64)],
        );
        let err = held
            .fetch_each_in_one_message(&[bump(1), failing], true)
            .await
            .unwrap_err();
        assert!(error::is_server_answer(&err), "the server's answer: {err}");
        assert_eq!(stored_version(&held, 1).await, 5, "the bump rolled back");

        // A value not written as text: nothing runs, the caller binds.
        let unsigned = (
            "SELECT $1 AS x".to_owned(),
            vec![Value::BigUnsigned(Some(5))],
        );
        assert!(
            held.fetch_each_in_one_message(&[bump(1), unsigned], true)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(stored_version(&held, 1).await, 5, "nothing ran");
    }

    /// A statement the server refuses to prepare fails its message, and
    /// the statement prepared before it in that message does not stand in
    /// the way of the next batches.
    #[tokio::test]
    async fn a_statement_that_fails_to_prepare_leaves_the_connection_usable() {
        let Some(held) = pool(2).await.map(|p| HeldConnections::new(p, 1)) else {
            return;
        };
        let good = || ("SELECT $1 + 1 AS n".to_owned(), vec![Value::from(41_i64)]);
        let bad = (
            "SELECT no_such_column FROM pg_class WHERE oid = $1".to_owned(),
            vec![Value::from(1_i64)],
        );
        let err = held
            .fetch_each_in_one_message(&[good(), bad], true)
            .await
            .unwrap_err();
        assert!(error::is_server_answer(&err), "the server's answer: {err}");
        let answers = held
            .fetch_each_in_one_message(&[good(), good()], true)
            .await
            .unwrap()
            .unwrap();
        for rows in answers {
            assert_eq!(rows[0].try_get::<i64>("", "n").unwrap(), 42);
        }
    }

    /// A batch that waits for a row another transaction holds gives up
    /// after `BATCH_LOCK_WAIT`, with the server's answer and nothing of it
    /// committed, instead of waiting as long as the holder (or, in a
    /// deadlock, the server's `deadlock_timeout`); the setting ends with
    /// its transaction.
    #[tokio::test]
    async fn a_batch_waiting_for_a_row_lock_gives_up_after_the_bound() {
        let Some(pool) = pool(3).await else {
            return;
        };
        let held = HeldConnections::new(pool.clone(), 1);
        let table = format!("lock_wait_{}", std::process::id());
        held.fetch_all(
            &format!("CREATE TABLE {table} (n bigint PRIMARY KEY, version bigint)"),
            vec![],
        )
        .await
        .unwrap();
        held.fetch_all(&format!("INSERT INTO {table} VALUES (1, 1)"), vec![])
            .await
            .unwrap();
        let mut holder = pool.begin().await.unwrap();
        sqlx::query(&format!("UPDATE {table} SET version = 9 WHERE n = 1"))
            .execute(&mut *holder)
            .await
            .unwrap();
        let bump = || {
            (
                format!("UPDATE {table} SET version = version + 1 WHERE n = $1"),
                vec![Value::from(1_i64)],
            )
        };
        let began = std::time::Instant::now();
        let writes = [bump(), bump()];
        let batch = held.fetch_each_in_one_message(&writes, true);
        let err = tokio::time::timeout(Duration::from_secs(5), batch)
            .await
            .expect("the batch gave up waiting for the held row")
            .unwrap_err();
        let waited = began.elapsed();
        assert!(error::is_server_answer(&err), "the server's answer: {err}");
        let slot = held.slots[0].lock().await;
        let prepared = slot.as_ref().map(|c| c.prepared.len());
        drop(slot);
        assert_eq!(
            prepared,
            Some(1),
            "the connection, and the statement it prepared, are kept"
        );
        assert!(
            waited >= BATCH_LOCK_WAIT && waited < Duration::from_millis(900),
            "gave up after {waited:?}"
        );
        holder.rollback().await.unwrap();
        let timeout = held.fetch_all("SHOW lock_timeout", vec![]).await.unwrap();
        assert_eq!(
            timeout[0].try_get::<String>("", "lock_timeout").unwrap(),
            "0",
            "the setting was the batch's transaction's only"
        );
        held.fetch_each_in_one_message(&[bump(), bump()], true)
            .await
            .unwrap()
            .unwrap();
        let version = scalar(
            &held,
            &format!("SELECT version FROM {table} WHERE n = $1"),
            vec![Value::from(1_i64)],
        )
        .await;
        assert_eq!(version, 3, "the failed batch wrote nothing");
        held.fetch_all(&format!("DROP TABLE {table}"), vec![])
            .await
            .unwrap();
    }

    /// Batches of ever new statements keep a bounded number prepared on
    /// the connection, and each still answers rightly.
    #[tokio::test]
    async fn prepared_statements_stay_bounded_per_connection() {
        let Some(held) = pool(2).await.map(|p| HeldConnections::new(p, 1)) else {
            return;
        };
        let bound = i64::try_from(MAX_PREPARED + 25).unwrap();
        let mut most = 0;
        for first in (0..MAX_PREPARED + 100).step_by(25) {
            let batch: Vec<(String, Vec<Value>)> = (first..first + 25)
                .map(|k| (format!("SELECT $1 + {k} AS n"), vec![Value::from(1_i64)]))
                .collect();
            let answers = held
                .fetch_each_in_one_message(&batch, false)
                .await
                .unwrap()
                .unwrap();
            for (k, rows) in (first..).zip(answers) {
                let n: i64 = rows[0].try_get("", "n").unwrap();
                assert_eq!(n, 1 + i64::try_from(k).unwrap());
            }
            most = most.max(prepared_statements(&held).await);
        }
        assert!(most <= bound, "{most} prepared, bound {bound}");
        assert!(
            most >= i64::try_from(MAX_PREPARED).unwrap(),
            "the bound was reached: {most}"
        );
        assert!(
            prepared_statements(&held).await < most,
            "and some deallocated"
        );
    }

    /// What a batch of writes (`write_batch`) rests on: a
    /// transaction-scoped lock taken in a message of several statements (a
    /// publish's partition lock) is held until the message ends (its
    /// implicit transaction), and released then.
    #[tokio::test]
    async fn a_lock_taken_in_a_message_is_held_to_its_end() {
        let Some(pool) = pool(2).await else {
            return;
        };
        let (mut holder, mut other) = (
            pool.acquire().await.unwrap().detach(),
            pool.acquire().await.unwrap().detach(),
        );
        let key = 0x5eed_1e55_i64;
        let try_lock = format!("SELECT pg_try_advisory_xact_lock({key}) AS got");
        let message = format!("SELECT pg_advisory_xact_lock({key}); SELECT pg_sleep(0.3)");
        let probe = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let during = simple_message(&mut other, &try_lock).await.unwrap();
            during[0][0].try_get::<bool, _>("got").unwrap()
        };
        let (ran, got_during) = tokio::join!(simple_message(&mut holder, &message), probe);
        ran.unwrap();
        assert!(!got_during, "held while the message ran");
        let after = simple_message(&mut other, &try_lock).await.unwrap();
        assert!(
            after[0][0].try_get::<bool, _>("got").unwrap(),
            "released at the message's end"
        );
    }
}
