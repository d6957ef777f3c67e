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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::TryStreamExt;
use futures::future::BoxFuture;
use sea_orm::sea_query::Values;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Pool, Postgres, Sqlite};
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

/// A connection a slot holds, and the statements prepared on it by name
/// (Postgres: `run_in_one_message`), which go with it.
pub(crate) struct Held<DB: sqlx::Database> {
    conn: PoolConnection<DB>,
    /// `"<types>\n<statement>"` → the name it is prepared under.
    prepared: HashMap<String, String>,
}

type Slot<DB> = Option<Held<DB>>;

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
    async fn connection<'s>(&self, slot: &'s mut Slot<DB>) -> Result<&'s mut Held<DB>, DbErr> {
        Ok(match slot {
            Some(held) => held,
            empty => empty.insert(Held {
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
}

/// At most about this many statements (plus one batch's new ones) stay
/// prepared per connection for `fetch_each_in_one_message`.
pub(crate) const MAX_PREPARED: usize = 256;

/// Numbers the statements prepared for `fetch_each_in_one_message`, over
/// every connection of the process.
static PREPARED_NAMES: AtomicU64 = AtomicU64::new(1);

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
    /// [`fetch_each_in_transaction`]: Self::fetch_each_in_transaction
    pub(crate) async fn fetch_each_in_one_message(
        &self,
        statements: &[(String, Vec<Value>)],
    ) -> Result<Option<Vec<Vec<QueryResult>>>, DbErr> {
        // (prepared statement's key, its parameter types, its values).
        let mut calls = Vec::with_capacity(statements.len());
        for (sql, values) in statements {
            let mut types = Vec::with_capacity(values.len());
            let mut args = Vec::with_capacity(values.len());
            for value in values {
                let Some((ty, arg)) = literal::typed(value) else {
                    return Ok(None);
                };
                types.push(ty);
                args.push(arg);
            }
            let types = types.join(", ");
            calls.push((format!("{types}\n{sql}"), types, args.join(", ")));
        }
        let mut slot = self.slot().await;
        let held = self.connection(&mut slot).await?;
        let run = async {
            // Outboxes of many shapes make many statements: past the
            // bound, ours are deallocated (sqlx's own stay) and prepared
            // again as they come.
            if held.prepared.len() >= MAX_PREPARED {
                let deallocate: Vec<String> = held
                    .prepared
                    .drain()
                    .map(|(_, name)| format!("DEALLOCATE {name}"))
                    .collect();
                sqlx::Executor::execute(&mut *held.conn, sqlx::raw_sql(&deallocate.join(";\n")))
                    .await?;
            }
            let mut prepare = Vec::new();
            let mut named = HashMap::new();
            for ((key, types, _), (sql, _)) in calls.iter().zip(statements) {
                if held.prepared.contains_key(key) || named.contains_key(key) {
                    continue;
                }
                // Never reused: a statement a failed message prepared
                // before failing stays on the connection unrecorded.
                let name = format!(
                    "stovepipe_w{}",
                    PREPARED_NAMES.fetch_add(1, Ordering::Relaxed)
                );
                prepare.push(if types.is_empty() {
                    format!("PREPARE {name} AS {sql}")
                } else {
                    format!("PREPARE {name} ({types}) AS {sql}")
                });
                named.insert(key.clone(), name);
            }
            if !prepare.is_empty() {
                sqlx::Executor::execute(&mut *held.conn, sqlx::raw_sql(&prepare.join(";\n")))
                    .await?;
                held.prepared.extend(named);
            }
            let mut message = Vec::with_capacity(calls.len());
            for (key, _, args) in &calls {
                let name = held.prepared.get(key).ok_or_else(|| {
                    sqlx::Error::Protocol(format!("no prepared statement for {key}"))
                })?;
                message.push(if args.is_empty() {
                    format!("EXECUTE {name}")
                } else {
                    format!("EXECUTE {name}({args})")
                });
            }
            let message = message.join(";\n");
            // Each statement's rows, then its completion.
            let mut replies = sqlx::Executor::fetch_many(&mut *held.conn, sqlx::raw_sql(&message));
            let mut answers = Vec::with_capacity(calls.len());
            let mut rows = Vec::new();
            while let Some(reply) = replies.try_next().await? {
                match reply {
                    sqlx::Either::Left(_done) => answers.push(std::mem::take(&mut rows)),
                    sqlx::Either::Right(row) => rows.push(QueryResult::from(row)),
                }
            }
            if answers.len() != calls.len() {
                return Err(sqlx::Error::Protocol(format!(
                    "{} statements sent in one message, {} completed",
                    calls.len(),
                    answers.len()
                )));
            }
            Ok(Some(answers))
        };
        run.await.map_err(|e| failed_in(&mut slot, e))
    }
}

/// As sea-orm reports a failed statement.
pub(crate) fn failed(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e))
}

/// [`failed`], for a statement on `slot`'s connection: a retryable failure
/// gives the connection back to the pool (which closes it when its ping
/// fails), and the slot takes a fresh one on its next use.
fn failed_in<DB: Driver>(slot: &mut Slot<DB>, e: sqlx::Error) -> DbErr {
    let e = failed(e);
    if error::is_transient(&e) {
        *slot = None;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_postgres_pool as pool;
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
}
