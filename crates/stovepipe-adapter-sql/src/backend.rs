//! Connections, transactions and wake-ups: the plumbing every port shares.
//!
//! Owns: connecting (SQLite writer + reader pools, or one Postgres pool),
//! running the migrations, the dialect differences (placeholders, row
//! locks, advisory locks, NOTIFY), the [`Tx`] every write goes through —
//! which commits the outbox with the write and runs the after-commit
//! effects (local wake-ups, the change-feed tail) — and the Postgres
//! listener that brings other replicas' commits in.
//!
//! Does not own: any query of a port (see the port modules).

use crate::error;
use crate::feed::{self, FeedHub};
use crate::held::HeldConnections;
use crate::merged_read::MergedReads;
use crate::presence::{PRESENCE_CHANNEL, Presence};
use crate::row_write::{self, RowWrite};
use crate::sqlite_writer::{HeldWriter, SqliteWriter, WRITE_HIT};
use crate::validate;
use crate::wakeups::Wakeups;
use crate::write_batch::{PostgresHeld, Role};
use sea_orm::sqlx::Sqlite;
use sea_orm::sqlx::postgres::PgListener;
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, QueryResult, SqlxSqliteConnector, Statement, TransactionTrait,
    Value,
};
use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use stovepipe_entity::{NewChange, Timestamp};
use stovepipe_migrations::{Migrator, MigratorTrait};
use stovepipe_ports::{Clock, Outbox, OutgoingMessage, StoreError, SystemClock, Topic};
use tokio::task::JoinHandle;

/// Live buffer of each change-feed subscriber when none is given.
pub const DEFAULT_FEED_BUFFER: usize = 1024;

/// NOTIFY channel carrying a topic name: something was published or woken.
pub(crate) const MQ_CHANNEL: &str = "stovepipe_mq";
/// NOTIFY channel: change-log rows were committed.
pub(crate) const FEED_CHANNEL: &str = "stovepipe_feed";

/// What a NOTIFY payload names, unless it came from the backend whose tag
/// is `tag` (`None`): a payload is `<what>@<origin>`, a backend's tag its
/// `@<origin>` ([`Shared::notify_tag`]). Postgres echoes a backend's own
/// notifications to its listener; those are already handled locally (the
/// wake-up after the commit, the tail's own round), and acting on
/// them again was an empty receive or read each time.
pub(crate) fn notification_from_elsewhere<'p>(payload: &'p str, tag: &str) -> Option<&'p str> {
    if payload.ends_with(tag) {
        return None;
    }
    Some(payload.rsplit_once('@').map_or(payload, |(what, _)| what))
}

/// Postgres: batches of store writes in flight at once by default (see
/// `write_batch`).
pub const DEFAULT_WRITE_LANES: usize = 2;

/// How to connect.
#[derive(Clone)]
pub struct SqlOptions {
    /// Stamps rows and measures holds, retries and leases.
    pub clock: Arc<dyn Clock>,
    /// Live buffer of each change-feed subscriber (at least 1).
    pub feed_buffer: usize,
    /// Connections of the Postgres pool, or of the SQLite reader pool.
    /// A Postgres backend opens at most `pool_size` (at least 2; the
    /// change listener's is one of them) + `max(pool_size / 2, 2)` (the
    /// pool of the lease operations and the change-feed tail's rounds that
    /// run alone) connections: budget `max_connections` by that per
    /// replica.
    pub pool_size: u32,
    /// How long a caller waits for a connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long SQLite waits on a lock held by another process.
    pub busy_timeout: Duration,
    /// Postgres: how often a backend tells the other replicas it listens;
    /// they stop notifying it three heartbeats after its last (see
    /// `presence`).
    pub presence_heartbeat: Duration,
    /// Postgres: how many batches of statements outside a transaction
    /// commit at once (see `write_batch`; at least 1).
    pub write_lanes: usize,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock::default()),
            feed_buffer: DEFAULT_FEED_BUFFER,
            pool_size: 8,
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
            presence_heartbeat: Duration::from_secs(2),
            write_lanes: DEFAULT_WRITE_LANES,
        }
    }
}

impl fmt::Debug for SqlOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlOptions")
            .field("feed_buffer", &self.feed_buffer)
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .field("presence_heartbeat", &self.presence_heartbeat)
            .field("write_lanes", &self.write_lanes)
            .finish_non_exhaustive()
    }
}

/// One SQL database behind every storage-like port.
///
/// Use it as `Arc<SqlBackend>` and coerce to the port you need; the trait
/// methods share names (`get`, `list`…), so call them through the trait
/// object. Call [`migrate`](Self::migrate) once before use on a new
/// database.
pub struct SqlBackend {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) dialect: Dialect,
    /// SQLite: the pool of the single writer connection (used directly
    /// only by the migrations). Postgres: the pool.
    writer: DatabaseConnection,
    /// The connections statements run on, kept out of those pools (and,
    /// on Postgres, out of the lease operations' pool: see
    /// [`Shared::lease_write`]).
    held: Held,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) feed: FeedHub,
    pub(crate) wakeups: Wakeups,
    /// `@<origin>`, appended to this backend's NOTIFY payloads
    /// (`<topic>@<origin>`), so its listener can tell its own echoes from
    /// other replicas' commits.
    pub(crate) notify_tag: String,
    /// Postgres: whether another replica of this installation listens
    /// (see `presence`).
    pub(crate) presence: Presence,
    /// Acks waiting to be written together (see `acks`).
    pub(crate) acks: crate::acks::AckBatch,
    /// Postgres: the stores' writes waiting to commit together (see
    /// `write_batch`).
    writes: crate::write_batch::WriteBatch,
    /// The greenness reads of commits (`read_model`); on Postgres those
    /// that wait together go out as one statement (see `merged_read`).
    commit_records: MergedReads<QueryResult>,
    /// Postgres: the LISTEN task, the presence heartbeat and the change-log
    /// tail.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stop_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// The connections kept out of the pools (see `held` and `sqlite_writer`),
/// where everything but a Postgres transaction runs.
enum Held {
    /// `statements` out of `writer`'s pool, `leases` out of `leases`.
    Postgres(PostgresHeld),
    Sqlite {
        /// Every write, and the reads of a private in-memory database (which
        /// exists only on this connection).
        writer: SqliteWriter,
        /// Reads of a database file.
        reader: Option<HeldConnections<Sqlite>>,
    },
}

/// The SQL differences between the two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    fn backend(self) -> DatabaseBackend {
        match self {
            Self::Postgres => DatabaseBackend::Postgres,
            Self::Sqlite => DatabaseBackend::Sqlite,
        }
    }

    /// A statement for sea-orm, written with `$n` placeholders (on SQLite
    /// a name sqlx looks up).
    pub(crate) fn stmt(self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.backend(), sql, values)
    }

    /// `FOR UPDATE` on Postgres; nothing on SQLite, whose single writer
    /// connection already serialises every write transaction.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Self::Postgres => " FOR UPDATE",
            Self::Sqlite => "",
        }
    }

    /// Byte-order comparison of text, as the memory adapter sorts names.
    pub(crate) fn bytewise(self) -> &'static str {
        match self {
            Self::Postgres => " COLLATE \"C\"",
            Self::Sqlite => "",
        }
    }
}

/// Builds a `Vec<sea_orm::Value>` from expressions.
macro_rules! values {
    ($($v:expr),* $(,)?) => { vec![$(::sea_orm::Value::from($v)),*] };
}
pub(crate) use values;

pub(crate) fn json_value(v: serde_json::Value) -> Value {
    Value::Json(Some(Box::new(v)))
}

/// Milliseconds and counts as the `BIGINT` the schema stores.
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SqlBackend {
    /// Connects with the system clock and default options. The URL picks
    /// the backend: `postgres://…` or `sqlite://path?mode=rwc`
    /// (`sqlite::memory:` works for one process).
    pub async fn connect(url: &str) -> Result<Arc<Self>, StoreError> {
        Self::connect_with(url, SqlOptions::default()).await
    }

    /// Connects with `clock` (tests use a manual clock to move holds,
    /// leases and timestamps).
    pub async fn connect_with_clock(
        url: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StoreError> {
        Self::connect_with(
            url,
            SqlOptions {
                clock,
                ..SqlOptions::default()
            },
        )
        .await
    }

    /// Connects with every option spelled out.
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<Arc<Self>, StoreError> {
        let (dialect, writer, held) =
            if url.starts_with("postgres:") || url.starts_with("postgresql:") {
                let pool_options = |size: u32| {
                    let mut opts = ConnectOptions::new(url.to_owned());
                    opts.max_connections(size)
                        .min_connections(0)
                        .acquire_timeout(options.acquire_timeout)
                        .connect_timeout(options.acquire_timeout)
                        .sqlx_logging(false)
                        // No ping before lending a connection: it was a
                        // second round trip for every statement (a fifth of
                        // a greenness read's CPU in the API profile). A
                        // connection that died while idle fails its next
                        // statement as `Unavailable`, which every caller
                        // already treats as retryable, and is dropped.
                        .test_before_acquire(false);
                    opts
                };
                let pool = Database::connect(pool_options(options.pool_size.max(2)))
                    .await
                    .map_err(error::store)?;
                let mut relaxed = pool_options((options.pool_size / 2).max(2));
                relaxed.map_sqlx_postgres_opts(|o| o.options([("synchronous_commit", "off")]));
                let leases = Database::connect(relaxed).await.map_err(error::store)?;
                // Two of the pool's connections stay for transactions; the
                // lease pool runs only single statements.
                let held = Held::Postgres(PostgresHeld {
                    statements: HeldConnections::all_but(pool.get_postgres_connection_pool(), 2),
                    leases: HeldConnections::all_but(leases.get_postgres_connection_pool(), 0),
                });
                (Dialect::Postgres, pool, held)
            } else if url.starts_with("sqlite:") {
                let (writer, readers) = connect_sqlite(url, &options).await?;
                let held = Held::Sqlite {
                    writer: SqliteWriter::new(
                        writer.get_sqlite_connection_pool().clone(),
                        options.acquire_timeout,
                    ),
                    reader: readers.map(|pool| HeldConnections::all_but(&pool, 0)),
                };
                (Dialect::Sqlite, writer, held)
            } else {
                return Err(StoreError::Backend(format!(
                    "unsupported database URL (expected postgres:// or sqlite:): {}",
                    url.split('@').next_back().unwrap_or_default()
                )));
            };
        let installation = match dialect {
            Dialect::Postgres => {
                let row = writer
                    .query_one(dialect.stmt(
                        "SELECT COALESCE(current_schema(), '') AS installation",
                        vec![],
                    ))
                    .await
                    .map_err(error::store)?
                    .ok_or_else(|| {
                        StoreError::Backend("current_schema() returned no row".into())
                    })?;
                row.try_get("", "installation").map_err(error::store)?
            }
            Dialect::Sqlite => String::new(),
        };
        let shared = Arc::new(Shared {
            dialect,
            writer,
            held,
            clock: options.clock,
            feed: FeedHub::new(options.feed_buffer),
            wakeups: Wakeups::default(),
            notify_tag: format!("@{}", uuid::Uuid::new_v4().simple()),
            presence: Presence::new(installation, options.presence_heartbeat),
            acks: crate::acks::AckBatch::default(),
            // SQLite has one writer: one lane.
            writes: crate::write_batch::WriteBatch::new(match dialect {
                Dialect::Postgres => options.write_lanes,
                Dialect::Sqlite => 1,
            }),
            commit_records: MergedReads::new(crate::read_model::commit_records_sql),
            tasks: Mutex::new(Vec::new()),
        });
        // A database not yet migrated has no change log: nothing to tail.
        shared
            .feed
            .start_at(shared.last_seq().await.unwrap_or(0))
            .await;
        if dialect == Dialect::Postgres {
            let listener = spawn_listener(&shared).await.map_err(error::store)?;
            // Announced once the listener is subscribed: a replica that
            // hears us may notify us from then on.
            let heartbeat = spawn_heartbeat(&shared);
            let tail = feed::spawn_tail(&shared);
            shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend([listener, heartbeat, tail]);
        }
        Ok(Arc::new(Self { shared }))
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // SQLite: the migrations run on the writer's pool, so its one
        // connection goes back there meanwhile.
        let parked = match &self.shared.held {
            Held::Sqlite { writer, .. } => Some(writer.park().await.map_err(error::store)?),
            Held::Postgres(_) => None,
        };
        Migrator::up(&self.shared.writer, None)
            .await
            .map_err(error::store)?;
        drop(parked);
        let last = self.shared.last_seq().await.map_err(error::store)?;
        self.shared.feed.start_at(last).await;
        Ok(())
    }

    /// True on Postgres, false on SQLite.
    pub fn is_postgres(&self) -> bool {
        self.shared.dialect == Dialect::Postgres
    }

    /// How many batches of writes run at once: `SqlOptions::write_lanes`
    /// on Postgres (at least 1), 1 on SQLite, whose one writer runs them.
    pub fn write_lanes(&self) -> usize {
        self.shared.writes.lanes()
    }

    /// The clock the backend stamps rows and measures leases with.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.shared.clock.clone()
    }

    /// Closes the pools (and stops the Postgres listener and change-log tail).
    /// Further calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.shared.stop_tasks();
        match &self.shared.held {
            Held::Postgres(PostgresHeld { statements, leases }) => {
                statements.release().await;
                leases.close().await;
            }
            Held::Sqlite { writer, reader } => {
                writer.release().await;
                if let Some(reader) = reader {
                    reader.close().await;
                }
            }
        }
        // Closing an already closed pool is a no-op; errors say nothing new.
        let _ = self.shared.writer.clone().close().await;
    }
}

impl fmt::Debug for SqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBackend")
            .field("dialect", &self.shared.dialect)
            .finish_non_exhaustive()
    }
}

/// Statements the SQLite writer keeps prepared: the 200-odd texts of the
/// stores' writes and lease operations, and the merged forms of those that
/// meet in a batch (`sqlite_merge`). sqlx's default of 100 would prepare
/// them again and again.
const WRITER_STATEMENTS: usize = 512;

/// WAL pages after which SQLite's writer copies the log back into the
/// database (SQLite's default is 1 000). The checkpoint runs in the commit
/// that crosses the mark, on the one writer, and copies each page changed
/// since the last once: the pipeline rewrites the same hot pages (the
/// queue rows, the message queue's pages and indexes) many times over, so
/// a longer interval copies fewer pages per commit. At 128 queues the
/// checkpoints took 5.9 % of the bench's CPU at 1 000 pages and 3.3 % at
/// 4 000; the log stays under 16 MB.
const WAL_AUTOCHECKPOINT_PAGES: &str = "4000";

/// The writer's pool (one connection) and, for a database file, the
/// reader pool.
async fn connect_sqlite(
    url: &str,
    options: &SqlOptions,
) -> Result<(DatabaseConnection, Option<SqlitePool>), StoreError> {
    let base = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Backend(format!("bad SQLite URL: {e}")))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true)
        // The writer's `WRITE_HIT` table lives in memory.
        .pragma("temp_store", "memory")
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES);
    let unavailable = |e: sea_orm::sqlx::Error| StoreError::Unavailable(e.to_string());
    // One writer: every write transaction queues for this connection
    // instead of racing for the database lock.
    // No ping before handing a connection out (sqlx's default): a SQLite
    // connection is a file in this process and does not go away, and the
    // ping was one more hand-over to the connection's thread for every
    // statement or transaction.
    let writer = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .max_connections(1)
        .min_connections(1)
        // Keep the one connection: for `sqlite::memory:` it *is* the
        // database, and reopening it would lose everything.
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(base.clone().statement_cache_capacity(WRITER_STATEMENTS))
        .await
        .map_err(unavailable)?;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let writer = SqlxSqliteConnector::from_sqlx_sqlite_pool(writer);
    if in_memory {
        // A private in-memory database exists only on its one connection.
        return Ok((writer, None));
    }
    let reader = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .max_connections(options.pool_size.max(1))
        .min_connections(0)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(base.read_only(true).create_if_missing(false))
        .await
        .map_err(unavailable)?;
    Ok((writer, Some(reader)))
}

/// Listens for other replicas' commits: a topic on [`MQ_CHANNEL`] wakes
/// that topic's waiters; [`FEED_CHANNEL`] makes the change feed read the
/// rows after the last one it broadcast. After a reconnect (notifications
/// may have been lost) it does both for everything.
async fn spawn_listener(shared: &Arc<Shared>) -> Result<JoinHandle<()>, DbErr> {
    let pool = shared.writer.get_postgres_connection_pool();
    let sql = |e: sea_orm::sqlx::Error| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e));
    let mut listener = PgListener::connect_with(pool).await.map_err(sql)?;
    listener
        .listen_all([MQ_CHANNEL, FEED_CHANNEL, PRESENCE_CHANNEL])
        .await
        .map_err(sql)?;
    let weak: Weak<Shared> = Arc::downgrade(shared);
    Ok(tokio::spawn(async move {
        loop {
            let next = listener.try_recv().await;
            let Some(shared) = weak.upgrade() else { return };
            match next {
                Ok(Some(n)) => {
                    let Some(what) = notification_from_elsewhere(n.payload(), &shared.notify_tag)
                    else {
                        continue;
                    };
                    if n.channel() == MQ_CHANNEL {
                        shared.wake_local(&Topic::new(what));
                    } else if n.channel() == PRESENCE_CHANNEL {
                        shared.presence.heard(what);
                    } else {
                        shared.feed.catch_up(&shared).await;
                    }
                }
                // The connection dropped and was re-established: whatever
                // was notified meanwhile is lost, so catch up on all of it.
                Ok(None) => {
                    shared.wakeups.wake_all();
                    shared.feed.catch_up(&shared).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change listener: reconnecting");
                    drop(shared);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }))
}

/// Announces this backend to the other replicas every heartbeat, starting
/// now (see `presence`). A failed announcement is retried at the next beat;
/// until then the others may stop notifying us, which only costs latency.
fn spawn_heartbeat(shared: &Arc<Shared>) -> JoinHandle<()> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let every = shared.presence.heartbeat();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            let payload = shared.presence.announcement(&shared.notify_tag);
            if let Err(e) = shared
                .lease_write(
                    "SELECT pg_notify($1, $2)",
                    values![PRESENCE_CHANNEL, payload.as_str()],
                )
                .await
            {
                tracing::debug!(error = %e, "presence heartbeat failed; retried at the next beat");
            }
        }
    })
}

impl Shared {
    /// Runs one statement (`$n` placeholders) outside a transaction of
    /// the caller's: on Postgres every one through `write_batch` (alone on
    /// the held connections for its role, or in the batch that is
    /// forming); on SQLite writes and lease operations through it, onto
    /// the writer, and reads on the reader connections.
    async fn statement(
        &self,
        role: Role,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        match (&self.held, role) {
            (Held::Postgres(held), role) => self.writes.run(held, role, sql, values).await,
            (
                Held::Sqlite {
                    reader: Some(reader),
                    ..
                },
                Role::Read | Role::Tail,
            ) => reader.fetch_all(sql, values).await,
            (Held::Sqlite { writer, .. }, role @ (Role::Write | Role::Lease)) => {
                self.writes.run(writer, role, sql, values).await
            }
            (Held::Sqlite { writer, .. }, Role::Read | Role::Tail) => {
                writer.fetch_all(sql, values).await
            }
        }
    }

    /// SQLite: the writer.
    fn sqlite_writer(&self) -> &SqliteWriter {
        match &self.held {
            Held::Sqlite { writer, .. } => writer,
            Held::Postgres(_) => unreachable!("the SQLite writer on Postgres"),
        }
    }

    /// Runs a read: on SQLite on the reader; on Postgres alone, or in the
    /// batch that is forming (`write_batch`).
    pub(crate) async fn query_all(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.statement(Role::Read, sql, values).await
    }

    /// Reads the commit record of one key, `values` (`read_model`): on
    /// Postgres like [`Self::query_all`], merged with the ones waiting
    /// beside it into one statement (`merged_read`); on SQLite on the
    /// reader, alone (a reader's statement costs no round trip).
    pub(crate) async fn commit_record_rows(
        &self,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let records = &self.commit_records;
        match &self.held {
            Held::Postgres(_) => {
                let run = |sql, values| self.query_all(sql, values);
                records.read(values, run).await
            }
            Held::Sqlite { .. } => self.query_all(records.text(1), values).await,
        }
    }

    pub(crate) async fn query_one(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<QueryResult>, DbErr> {
        Ok(self.query_all(sql, values).await?.into_iter().next())
    }

    /// Runs one atomic write statement, durable when it returns, and
    /// returns its first row. SQLite: on the writer, a transaction of its
    /// own. Postgres: alone, or in one transaction with the writes that
    /// waited beside it (`write_batch`), as if they ran one after another.
    pub(crate) async fn write_one(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<QueryResult>, DbErr> {
        let rows = self.statement(Role::Write, sql, values).await?;
        Ok(rows.into_iter().next())
    }

    /// Runs one lease operation of the message queue (receive, ack, hold,
    /// retry, renew) as one statement outside a transaction of the
    /// caller's, returning the rows it returns: alone (autocommit: one
    /// round trip, no BEGIN/COMMIT) or, when a batch of writes is forming,
    /// in it (`write_batch`). The caller wakes local waiters itself.
    ///
    /// On Postgres these commit, alone, without waiting for their WAL flush
    /// (`synchronous_commit = off`; about half the pipeline's commits). A
    /// crash can lose the last few hundred milliseconds of them, and what
    /// that loses is harmless under at-least-once delivery: a lost lease or
    /// ack means the message is delivered again (every handler is
    /// idempotent), a lost hold or retry means it is due again sooner.
    /// Nothing else is written this way but the feed tail's announcement
    /// (`tail_round`): publishes ride in their write's transaction, and
    /// dead-lettering is a durable transaction.
    pub(crate) async fn lease_write(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.statement(Role::Lease, sql, values).await
    }

    /// Runs a round of the change feed's tail (`feed`): alone on the lease
    /// connections, or in the batch of writes that is forming.
    pub(crate) async fn tail_round(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.statement(Role::Tail, sql, values).await
    }

    /// What follows every write's commit: wakes `woken`'s local waiters at
    /// once and, when change rows were appended, brings the feed tail up to
    /// them — on Postgres (`txid`) once every older transaction ended — so
    /// that they are in every subscriber's buffer when the write returns
    /// (the `feed` module's promise). The next stage need not wait for the
    /// feed's round (a quarter of a request's time at 32 queues): a store
    /// write runs its writer's commit hook before this
    /// ([`write_with_outbox`](Self::write_with_outbox)), so the rows the
    /// writer keeps are in place when a woken consumer reads them. Other
    /// replicas are told at commit by NOTIFY.
    async fn after_commit(&self, woken: impl IntoIterator<Item = &Topic>, appended: Appended) {
        for topic in woken {
            self.wake_local(topic);
        }
        match appended {
            Appended::AsTransaction(txid) => self.feed.await_broadcast(txid).await,
            Appended::UpTo(seq) => self.feed.catch_up_past(self, seq).await,
            Appended::Nothing => {}
        }
    }

    /// A store's conditional writes (one, or several as a joint write:
    /// `row_write`) over `values` and, when every one touched its row, the
    /// outbox, committed together. `Err(i)`: write `i` touched nothing, and
    /// nothing was written. Once committed, runs the outbox's commit hook
    /// (the port's contract: before any local consumer is woken), then
    /// wakes local waiters and brings the change feed up to the write's
    /// rows (`after_commit`).
    pub(crate) async fn write_with_outbox(
        &self,
        writes: &[RowWrite],
        values: Vec<Value>,
        mut outbox: Outbox,
        now: Timestamp,
    ) -> Result<Result<(), usize>, DbErr> {
        let on_commit = std::mem::take(&mut outbox.on_commit);
        let written = match self.dialect {
            Dialect::Postgres => {
                self.write_with_outbox_postgres(writes, values, outbox, now)
                    .await?
            }
            Dialect::Sqlite => {
                self.write_with_outbox_sqlite(writes, values, outbox, now)
                    .await?
            }
        };
        let Committed { woken, appended } = match written {
            Ok(committed) => committed,
            Err(missed) => return Ok(Err(missed)),
        };
        on_commit.run();
        self.after_commit(&woken, appended).await;
        Ok(Ok(()))
    }

    /// SQLite: [`write_with_outbox`](Self::write_with_outbox)'s write as one
    /// transaction in one call to the writer's thread (see
    /// `sqlite_writer`): BEGIN, the write, a note of whether it touched a
    /// row, each message and the change rows, each of those only when the
    /// note says so (SQLite has no data-modifying CTEs to make them depend
    /// on the write), and COMMIT. The note is a row in the connection's
    /// [`WRITE_HIT`] table, deleted again before the commit. A row says
    /// what it is (`part`: 0 the write, 1 a message, 2 the change rows, 3 a
    /// joint write's part that would miss). The write, each message and
    /// the change rows report through a `SELECT … WHERE changes() > 0`
    /// after their statement, not `RETURNING`: SQLite gathers a
    /// statement's `RETURNING` rows in a temporary table opened and
    /// dropped each time, which made about 70 such tables per request and
    /// cost more than the statement's insert (docs/benchmarks.md,
    /// 2026-12-06, ninth session).
    async fn write_with_outbox_sqlite(
        &self,
        writes: &[RowWrite],
        mut values: Vec<Value>,
        outbox: Outbox,
        now: Timestamp,
    ) -> Result<Result<Committed, usize>, DbErr> {
        let at = bind(&mut values, now.as_millis().into());
        let hit = format!("EXISTS (SELECT 1 FROM {WRITE_HIT})");
        let mut statements = match writes {
            [one] => vec![
                one.alone(),
                "SELECT 0 AS part WHERE changes() > 0".to_owned(),
                format!("INSERT INTO {WRITE_HIT} (hit) SELECT 1 WHERE changes() > 0"),
            ],
            _ => row_write::sqlite_joint(writes, WRITE_HIT),
        };
        let mut messages = outbox.messages;
        in_partition_order(&mut messages);
        let hook_condition = format!("{hit} AND {HOOK_IS_LIVE}");
        let conditions = std::iter::repeat(hit.as_str())
            .zip(messages)
            .chain(std::iter::repeat(hook_condition.as_str()).zip(outbox.hook_events));
        for (condition, m) in conditions {
            let t = bind(&mut values, m.topic.as_str().into());
            let k = bind(&mut values, m.partition_key.into());
            let id = bind(&mut values, m.message_id.into());
            let payload = bind(&mut values, json_value(m.payload));
            statements.push(format!(
                "{INSERT_MESSAGE} \
                 SELECT {t}, {k}, {id}, {payload}, 1, NULL, {at}, NULL, NULL, {at} \
                 WHERE {condition} {UNLESS_PENDING}"
            ));
            statements.push(format!(
                "SELECT 1 AS part, {t} AS topic WHERE changes() > 0"
            ));
        }
        if !outbox.changes.is_empty() {
            // In the list's order (`column5`), as the sequence numbers them.
            let rows = bind_changes(&mut values, outbox.changes, |ord| ord);
            statements.push(format!(
                "INSERT INTO change_log (queue, kind, subject, data, created_at) \
                 SELECT column1, column2, column3, column4, {at} FROM (VALUES {rows}) \
                 WHERE {hit} ORDER BY column5"
            ));
            // The rows were numbered in order: the last is the highest.
            statements.push(
                "SELECT 2 AS part, last_insert_rowid() AS seq WHERE changes() > 0".to_owned(),
            );
        }
        statements.push(format!("DELETE FROM {WRITE_HIT}"));
        let rows = self
            .sqlite_transaction(&statements.join(";\n"), values)
            .await?;
        Committed::reported(&rows, Dialect::Sqlite, &[])
    }

    /// SQLite: runs `sql` (statements separated by `;`, `$n` placeholders
    /// over one list of `values`) as one call to the writer's thread in a
    /// transaction, alone or with the writes waiting beside it
    /// (`write_batch`); returns every row the statements returned.
    pub(crate) async fn sqlite_transaction(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.writes.write(self.sqlite_writer(), sql, values).await
    }

    /// Postgres: [`write_with_outbox`](Self::write_with_outbox)'s write as one
    /// autocommit statement — one round
    /// trip instead of BEGIN, the write, each message, the change rows, the
    /// NOTIFYs and COMMIT. Data-modifying CTEs insert the outbox only when
    /// the write touched a row; messages take their partition locks first,
    /// in sorted order (nested subqueries fix the order), and are inserted
    /// in sorted `(topic, partition)` order, as [`Tx::publish`] does.
    async fn write_with_outbox_postgres(
        &self,
        writes: &[RowWrite],
        mut values: Vec<Value>,
        outbox: Outbox,
        now: Timestamp,
    ) -> Result<Result<Committed, usize>, DbErr> {
        let at = bind(&mut values, now.as_millis().into());
        let (mut ctes, checks) = match writes {
            [one] => (
                vec![format!("main AS ({} RETURNING 1 AS hit)", one.alone())],
                Vec::new(),
            ),
            _ => row_write::postgres_joint(writes),
        };
        // The statement reports in rows, as SQLite's do (`part`: 0 the
        // write, 1 a topic published to, 2 a change row, 4 a joint write's
        // check that found its row), each a scan of its CTE. Aggregates
        // over the CTEs (one row of `COUNT`, `json_agg`, `MAX` and a `CASE`
        // of `EXISTS`) cost about a sixth of what a write costs the server
        // beyond a `SELECT 1`, in their plans' start-up and teardown alone
        // (docs/benchmarks.md, 2026-12-07, fourteenth session).
        let mut reports = String::from(
            "SELECT 0::bigint AS part, NULL::text AS topic, NULL::bigint AS seq, \
             NULL::bigint AS held FROM main",
        );
        // Other replicas hear of each insert by a NOTIFY in its RETURNING,
        // while there are any (`presence`). The channel and tag are bound
        // only when some insert uses them: a statement's text and its
        // parameter count must agree every time it runs (prepared once).
        let inserts = !outbox.messages.is_empty() || !outbox.hook_events.is_empty();
        let notify = if inserts && self.notifies() {
            let channel = bind(&mut values, MQ_CHANNEL.into());
            let tag = bind(&mut values, self.notify_tag.as_str().into());
            format!(", pg_notify({channel}, topic || {tag}) IS NULL AS notified")
        } else {
            String::new()
        };
        // One insert of `messages` for the write's messages and its hook
        // events, each row joined with the write's `main` (a row when the
        // write touched its rows) and the partition locks. Hook events come
        // last and are kept only when a hook is live; they need no
        // partition lock of their own, since each is alone in its partition
        // (keyed by its own message id, `check_outbox`), so no order is to
        // keep. One insert, not one per kind: a second `ModifyTable` on
        // `messages` cost its start-up on every write that had hook events,
        // even when no hook was live and it inserted nothing
        // (docs/benchmarks.md, 2026-12-07, thirteenth session).
        let mut messages = outbox.messages;
        in_partition_order(&mut messages);
        let regular = messages.len();
        let filter = match (regular, outbox.hook_events.is_empty()) {
            (_, true) => String::new(),
            (0, false) => format!(" WHERE {HOOK_IS_LIVE}"),
            (_, false) => format!(" WHERE v.ord < {regular} OR {HOOK_IS_LIVE}"),
        };
        let mut sources = "main".to_owned();
        if regular > 0 {
            let keys: BTreeSet<(String, String)> = messages
                .iter()
                .map(|m| (m.topic.as_str().to_owned(), m.partition_key.clone()))
                .collect();
            let mut locks = "SELECT 1 AS l".to_owned();
            for (i, (topic, key)) in keys.into_iter().enumerate() {
                let (t, k) = (
                    bind(&mut values, topic.into()),
                    bind(&mut values, key.into()),
                );
                locks = format!(
                    "SELECT pg_advisory_xact_lock(hashtext({t}), hashtext({k})) AS l \
                     FROM ({locks}) AS lock{i}"
                );
            }
            ctes.push(format!("locks AS ({locks})"));
            sources.push_str(", locks");
        }
        messages.extend(outbox.hook_events);
        if !messages.is_empty() {
            let rows = bind_messages(&mut values, messages);
            ctes.push(format!(
                "published AS ({INSERT_MESSAGE} \
                 SELECT v.topic, v.partition_key, v.message_id, v.payload, 1, NULL, {at}, NULL, \
                 NULL, {at} FROM {sources}, (VALUES {rows}) \
                 AS v(topic, partition_key, message_id, payload, ord){filter} ORDER BY v.ord \
                 {UNLESS_PENDING} RETURNING topic{notify})"
            ));
            reports.push_str(" UNION ALL SELECT 1, topic, NULL, NULL FROM published");
        }
        if !outbox.changes.is_empty() {
            let rows = bind_changes(&mut values, outbox.changes, |ord| ord);
            ctes.push(format!(
                "appended AS ({})",
                feed::insert_numbered(&rows, at, Some("main"))
            ));
            reports.push_str(" UNION ALL SELECT 2, NULL, seq, NULL FROM appended");
        }
        for (cte, i) in &checks {
            let _ = write!(reports, " UNION ALL SELECT 4, NULL, NULL, {i} FROM {cte}");
        }
        let statement = format!("WITH {} {reports}", ctes.join(", "));
        let rows = self.statement(Role::Write, &statement, values).await?;
        Committed::reported(&rows, Dialect::Postgres, &checks)
    }

    /// The highest `seq` a reader may see (on Postgres, below the
    /// watermark: see the `feed` module).
    pub(crate) async fn last_seq(&self) -> Result<u64, DbErr> {
        let mut values = Vec::new();
        let sql = format!(
            "SELECT COALESCE(MAX(seq), 0) AS seq FROM change_log c WHERE {}",
            feed::readable(self, "c", &mut values)
        );
        let row = self.query_one(&sql, values).await?;
        let seq: i64 = match row {
            Some(r) => r.try_get("", "seq")?,
            None => 0,
        };
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// Starts a write transaction on the writer (SQLite: `BEGIN
    /// IMMEDIATE`, see `sqlite_writer`).
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<Tx, DbErr> {
        let conn = match &self.held {
            Held::Postgres(_) => TxConn::Pool(self.writer.begin().await?),
            Held::Sqlite { writer, .. } => {
                let mut writer = writer.hold().await?;
                writer.begin().await?;
                TxConn::Writer(writer)
            }
        };
        Ok(Tx {
            shared: self.clone(),
            conn,
            woken: BTreeSet::new(),
            woken_locally: BTreeSet::new(),
            appended: Appended::Nothing,
        })
    }

    /// Whether this write should NOTIFY other replicas: on Postgres, while
    /// one may be listening (see `presence`).
    pub(crate) fn notifies(&self) -> bool {
        self.dialect == Dialect::Postgres && self.presence.others_listening()
    }

    pub(crate) fn wake_local(&self, topic: &Topic) {
        self.wakeups.wake(topic);
    }
}

/// One write transaction. Dropping it without [`commit`](Self::commit)
/// rolls back; committing runs the after-commit effects.
pub(crate) struct Tx {
    shared: Arc<Shared>,
    conn: TxConn,
    /// Topics to wake once committed (here, and on Postgres in the other
    /// replicas through NOTIFY).
    woken: BTreeSet<Topic>,
    /// Topics to wake here once committed, whose NOTIFY is already in the
    /// transaction.
    woken_locally: BTreeSet<Topic>,
    /// What this transaction appended to the change log.
    appended: Appended,
}

/// The connection a transaction runs on.
enum TxConn {
    /// Postgres: a pool connection, through sea-orm.
    Pool(DatabaseTransaction),
    /// SQLite: the held writer, through sqlx.
    Writer(HeldWriter),
}

/// A committed store write: the topics it published to and what it
/// appended, for [`Shared::after_commit`].
struct Committed {
    woken: BTreeSet<Topic>,
    appended: Appended,
}

/// What a write appended to the change log, which decides how the feed's
/// tail is brought up to it after the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Appended {
    Nothing,
    /// SQLite: rows up to this `seq`, given at insert.
    UpTo(u64),
    /// Postgres: rows of this transaction id, which readers see once
    /// every older transaction ended.
    AsTransaction(i64),
}

impl Committed {
    /// The write a store write's rows report, by `part`: 0 the write
    /// touched its rows, 1 a topic it published to (`topic`), 2 a change
    /// row it appended (`seq`), 3 (SQLite) a joint write's part that would
    /// miss (`miss`), 4 (Postgres) a joint write's check that found its row
    /// (`held`). `Err(i)` when the write touched nothing: write `i` missed,
    /// the first reported missing, else the first of `checks` (a CTE and
    /// its write's index, in check order, as `row_write::postgres_joint`
    /// makes them) not held, else 0.
    fn reported(
        rows: &[QueryResult],
        dialect: Dialect,
        checks: &[(String, usize)],
    ) -> Result<Result<Self, usize>, DbErr> {
        let (mut hit, mut appended, mut woken) = (false, Appended::Nothing, BTreeSet::new());
        let index = |row: &QueryResult, column| {
            row.try_get::<i64>("", column)
                .map(|i| usize::try_from(i).ok())
        };
        let (mut missed, mut held) = (None, Vec::new());
        for row in rows {
            match row.try_get::<i64>("", "part")? {
                0 => hit = true,
                1 => {
                    woken.insert(Topic::new(row.try_get::<String>("", "topic")?));
                }
                2 => appended = appended.and_seq(dialect, row.try_get("", "seq")?),
                3 => missed = missed.or(index(row, "miss")?),
                4 => held.extend(index(row, "held")?),
                other => return Err(DbErr::Custom(format!("a write reported part {other}"))),
            }
        }
        if !hit {
            let first_unheld = || checks.iter().map(|(_, i)| *i).find(|i| !held.contains(i));
            return Ok(Err(missed.or_else(first_unheld).unwrap_or(0)));
        }
        Ok(Ok(Self { woken, appended }))
    }
}

impl Appended {
    /// Postgres: the rows of the transaction that appended row `seq`.
    fn as_transaction_of(seq: i64) -> Self {
        Self::AsTransaction(seq >> feed::TXID_SHIFT)
    }

    /// Also a change row numbered `seq`: on Postgres, the rows of its
    /// transaction (any row of it says which); on SQLite, rows up to the
    /// highest.
    fn and_seq(self, dialect: Dialect, seq: i64) -> Self {
        if dialect == Dialect::Postgres {
            return Self::as_transaction_of(seq);
        }
        let seq = u64::try_from(seq).unwrap_or(0);
        match self {
            Self::UpTo(upto) => Self::UpTo(upto.max(seq)),
            _ => Self::UpTo(seq),
        }
    }
}

impl Tx {
    pub(crate) fn dialect(&self) -> Dialect {
        self.shared.dialect
    }

    /// Runs a statement (`$n` placeholders); returns the rows it changed.
    pub(crate) async fn exec(&mut self, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
        match &mut self.conn {
            TxConn::Pool(txn) => {
                let result = txn.execute(self.shared.dialect.stmt(sql, values)).await?;
                Ok(result.rows_affected())
            }
            TxConn::Writer(writer) => writer.execute(sql, values).await,
        }
    }

    /// Runs a statement (`$n` placeholders); returns its rows.
    pub(crate) async fn all(
        &mut self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        match &mut self.conn {
            TxConn::Pool(txn) => txn.query_all(self.shared.dialect.stmt(sql, values)).await,
            TxConn::Writer(writer) => writer.fetch_all(sql, values).await,
        }
    }

    /// Runs a statement (`$n` placeholders); returns its first row.
    pub(crate) async fn one(
        &mut self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<QueryResult>, DbErr> {
        Ok(self.all(sql, values).await?.into_iter().next())
    }

    /// Wakes `topic`'s waiters after the commit.
    pub(crate) fn wake(&mut self, topic: &Topic) {
        self.woken.insert(topic.clone());
    }

    /// Inserts each message unless its dedup key is pending; returns how
    /// many were inserted.
    ///
    /// On Postgres each insert first takes its partition's advisory lock
    /// until commit, so within a partition `id` order is commit order: a
    /// consumer can never lease a message while an older one of its
    /// partition is still uncommitted. Messages go in sorted `(topic,
    /// partition)` order (stable, so a partition keeps its own order), so
    /// two writers take their locks in one order and cannot deadlock. The
    /// lock, the insert and the NOTIFY for other replicas are one statement.
    pub(crate) async fn publish(
        &mut self,
        mut messages: Vec<OutgoingMessage>,
        last_error: Option<String>,
        now: Timestamp,
    ) -> Result<usize, DbErr> {
        in_partition_order(&mut messages);
        let notify_others = self.shared.notifies();
        let notify = if notify_others {
            " RETURNING pg_notify($7, topic || $8)"
        } else {
            ""
        };
        let sql = match self.dialect() {
            Dialect::Postgres => format!(
                "{INSERT_MESSAGE} SELECT $1, $2, $3, $4, 1, $5, $6, NULL, NULL, $6 \
                 FROM (SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))) AS partition_lock \
                 {UNLESS_PENDING}{notify}"
            ),
            Dialect::Sqlite => format!(
                "{INSERT_MESSAGE} SELECT $1, $2, $3, $4, 1, $5, $6, NULL, NULL, $6 {UNLESS_PENDING}"
            ),
        };
        let mut inserted = 0;
        for m in messages {
            let mut v = vec![
                m.topic.as_str().into(),
                m.partition_key.as_str().into(),
                m.message_id.as_str().into(),
                json_value(m.payload),
                last_error.clone().into(),
                now.as_millis().into(),
            ];
            if notify_others {
                v.push(MQ_CHANNEL.into());
                v.push(self.shared.notify_tag.as_str().into());
            }
            if self.exec(&sql, v).await? > 0 {
                inserted += 1;
                // Other replicas (if any) were notified by the statement.
                self.woken_locally.insert(m.topic);
            }
        }
        Ok(inserted)
    }

    /// Appends change rows; returns their `seq`s, in order (how each
    /// backend numbers them: the `feed` module).
    pub(crate) async fn append(
        &mut self,
        changes: Vec<NewChange>,
        now: Timestamp,
    ) -> Result<Vec<i64>, DbErr> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // One multi-row statement.
        let mut v = Vec::with_capacity(changes.len() * 4 + 1);
        let at = bind(&mut v, now.as_millis().into());
        let sql = match self.dialect() {
            Dialect::Postgres => {
                let rows = bind_changes(&mut v, changes, |ord| ord);
                feed::insert_numbered(&rows, at, None)
            }
            Dialect::Sqlite => {
                let rows = bind_changes(&mut v, changes, |_| at);
                format!(
                    "INSERT INTO change_log (queue, kind, subject, data, created_at) \
                     VALUES {rows} RETURNING seq"
                )
            }
        };
        let returned = self.all(&sql, v).await?;
        let mut seqs = Vec::with_capacity(returned.len());
        for row in &returned {
            let seq = row.try_get::<i64>("", "seq")?;
            seqs.push(seq);
            self.appended = self.appended.and_seq(self.dialect(), seq);
        }
        // Numbers are handed out in row order within the statement;
        // RETURNING promises no order, so sort them back into it.
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Commits, then wakes local waiters and brings the change-feed tail up
    /// to this commit's rows (on Postgres: once every older transaction
    /// ended). On Postgres the wake-up NOTIFYs ride in the transaction, so
    /// other replicas hear of it exactly when it commits.
    pub(crate) async fn commit(mut self) -> Result<(), DbErr> {
        if !self.woken.is_empty() && self.shared.notifies() {
            // One statement for every topic: `SELECT pg_notify($1, $2),
            // pg_notify($1, $3), …`.
            let calls: Vec<String> = (2..self.woken.len() + 2)
                .map(|i| format!("pg_notify($1, ${i})"))
                .collect();
            let mut v = values![MQ_CHANNEL];
            let tag = &self.shared.notify_tag;
            v.extend(
                self.woken
                    .iter()
                    .map(|t| Value::from(format!("{}{tag}", t.as_str()))),
            );
            self.exec(&format!("SELECT {}", calls.join(", ")), v)
                .await?;
        }
        let Self {
            shared,
            conn,
            woken,
            woken_locally,
            appended,
        } = self;
        match conn {
            TxConn::Pool(txn) => txn.commit().await?,
            TxConn::Writer(mut writer) => writer.commit().await?,
        }
        shared
            .after_commit(woken.union(&woken_locally), appended)
            .await;
        Ok(())
    }
}

/// Appends `value` to a statement's values; returns its placeholder.
pub(crate) fn bind(values: &mut Vec<Value>, value: Value) -> Placeholder {
    values.push(value);
    Placeholder(values.len())
}

/// A bound value's place in its statement's text, `$n`, written out where
/// the text is: a statement of the stores binds dozens of values, and a
/// string for each was a large share of a write's allocations
/// (docs/benchmarks.md, 2026-12-06, ninth session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placeholder(usize);

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// Appends each of `items` to `out` with `each`, separated by `, `: a
/// statement's lists of placeholders, assignments and rows, written into
/// its text rather than joined from a string each.
pub(crate) fn write_list<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut String, T),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        each(out, item);
    }
}

/// Binds change rows as a `VALUES` list, `($queue, $kind, $subject, $data,
/// <last>), …`, where `last(i)` is row `i`'s fifth column.
fn bind_changes<L: fmt::Display>(
    values: &mut Vec<Value>,
    changes: Vec<NewChange>,
    last: impl Fn(usize) -> L,
) -> String {
    let mut rows = String::with_capacity(changes.len() * 32);
    write_list(
        &mut rows,
        changes.into_iter().enumerate(),
        |rows, (i, c)| {
            let queue = bind(values, c.queue.map(|q| q.as_str().to_owned()).into());
            let kind = bind(values, c.kind.as_str().into());
            let subject = bind(values, c.subject.into());
            let data = bind(values, json_value(c.data));
            let _ = write!(rows, "({queue}, {kind}, {subject}, {data}, {})", last(i));
        },
    );
    rows
}

/// Sorts messages by `(topic, partition)`, stably (a partition keeps its
/// own order): the order publishers take partition locks in, so that two
/// cannot deadlock.
fn in_partition_order(messages: &mut [OutgoingMessage]) {
    messages.sort_by(|a, b| {
        (a.topic.as_str(), a.partition_key.as_str())
            .cmp(&(b.topic.as_str(), b.partition_key.as_str()))
    });
}

/// Validates an outbox before its write starts. A hook event must be keyed
/// by its own message id: alone in its partition, it needs no partition
/// lock (the one-statement Postgres write takes none for it).
pub(crate) fn check_outbox(outbox: &Outbox) -> Result<(), stovepipe_entity::InvalidValue> {
    for m in outbox.messages.iter().chain(&outbox.hook_events) {
        check_message(m)?;
    }
    for m in &outbox.hook_events {
        if m.partition_key != m.message_id {
            return Err(validate::invalid(
                "hook event partition key",
                &m.partition_key,
                format!("the event's message id {:?}", m.message_id),
            ));
        }
    }
    check_changes(&outbox.changes)
}

/// The head of every insert of a message; a `SELECT` of the columns follows.
const INSERT_MESSAGE: &str = "INSERT INTO messages (topic, partition_key, message_id, payload, \
     attempt, last_error, visible_at, lease_owner, lease_expires, published_at)";

/// The tail of every insert of a message: a message whose dedup key is
/// pending is not inserted again.
const UNLESS_PENDING: &str = "ON CONFLICT (topic, partition_key, message_id) DO NOTHING";

/// Whether hook events are published: some hook has a live release.
const HOOK_IS_LIVE: &str = "EXISTS (SELECT 1 FROM hooks WHERE live_version IS NOT NULL)";

/// Binds messages as `VALUES` rows of `(topic, partition_key, message_id,
/// payload, ord)`.
fn bind_messages(values: &mut Vec<Value>, messages: Vec<OutgoingMessage>) -> String {
    let mut rows = Vec::with_capacity(messages.len());
    for (ord, m) in messages.into_iter().enumerate() {
        let t = bind(values, m.topic.as_str().into());
        let k = bind(values, m.partition_key.into());
        let id = bind(values, m.message_id.into());
        let payload = bind(values, json_value(m.payload));
        rows.push(format!(
            "({t}::text, {k}::text, {id}::text, {payload}::jsonb, {ord})"
        ));
    }
    rows.join(", ")
}

pub(crate) fn check_message(m: &OutgoingMessage) -> Result<(), stovepipe_entity::InvalidValue> {
    validate::text("topic", m.topic.as_str(), validate::MAX_KEY_BYTES)?;
    validate::text("partition key", &m.partition_key, validate::MAX_KEY_BYTES)?;
    validate::text("message id", &m.message_id, validate::MAX_KEY_BYTES)?;
    validate::check_json("message payload", &m.payload)
}

pub(crate) fn check_changes(changes: &[NewChange]) -> Result<(), stovepipe_entity::InvalidValue> {
    for c in changes {
        validate::text("change subject", &c.subject, validate::MAX_TEXT_BYTES)?;
        validate::check_json("change data", &c.data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A database file's writer runs in WAL mode and checkpoints every
    /// [`WAL_AUTOCHECKPOINT_PAGES`] pages.
    #[tokio::test]
    async fn a_sqlite_file_is_written_ahead_and_checkpointed_at_the_set_interval() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let backend = SqlBackend::connect(&url).await.unwrap();
        let writer = backend.shared.sqlite_writer();
        let first = |sql: &'static str| async move {
            writer.fetch_all(sql, vec![]).await.unwrap().remove(0)
        };
        let mode: String = first("PRAGMA journal_mode")
            .await
            .try_get_by_index(0)
            .unwrap();
        let pages: i64 = first("PRAGMA wal_autocheckpoint")
            .await
            .try_get_by_index(0)
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(pages.to_string(), WAL_AUTOCHECKPOINT_PAGES);
    }

    #[test]
    fn a_backend_ignores_its_own_notifications() {
        assert_eq!(notification_from_elsewhere("build@me", "@me"), None);
        assert_eq!(
            notification_from_elsewhere("build@you", "@me"),
            Some("build")
        );
        assert_eq!(notification_from_elsewhere("@you", "@me"), Some(""));
        assert_eq!(notification_from_elsewhere("@me", "@me"), None);
        // Untagged payloads (an older replica) still wake.
        assert_eq!(notification_from_elsewhere("build", "@me"), Some("build"));
    }

    #[test]
    fn a_hook_event_must_be_alone_in_its_partition() {
        let event = |key: &str| {
            Outbox::none().publish_hook_event(OutgoingMessage::new(
                Topic::hook(),
                key,
                "validation.recorded/request/q/1",
                serde_json::json!({}),
            ))
        };
        assert!(check_outbox(&event("validation.recorded/request/q/1")).is_ok());
        let err = check_outbox(&event("q")).unwrap_err().to_string();
        assert!(err.contains("hook event partition key"), "{err}");
        assert!(err.contains("\"q\""), "names the bad key: {err}");
    }

    fn setting(rows: Result<Vec<QueryResult>, DbErr>) -> String {
        rows.unwrap()[0].try_get("", "synchronous_commit").unwrap()
    }

    /// Only lease operations give up waiting for their WAL flush; every
    /// other write stays durable at commit.
    #[tokio::test]
    async fn only_lease_operations_commit_without_waiting_for_the_flush() {
        let Some(url) = crate::test_postgres_url() else {
            return;
        };
        let backend = SqlBackend::connect(&url).await.unwrap();
        let show = "SHOW synchronous_commit";
        let leases = backend.shared.lease_write(show, vec![]).await;
        assert_eq!(setting(leases), "off");
        let writes = backend.shared.write_one(show, vec![]).await;
        assert_eq!(setting(writes.map(Vec::from_iter)), "on");
        backend.close().await;
    }
}
