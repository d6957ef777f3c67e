//! Group commit of the stores' writes, on both backends.
//!
//! Every store write on Postgres is one statement (the write, its messages
//! and its change rows in one `WITH`) that committed alone. Under load the
//! server spent as much on each one's round trip and commit as on the
//! write itself. Now a write joins the pending list and waits for a lane
//! (`SqlOptions::write_lanes`, two by default); the write that gets one
//! takes every pending write and runs them, one after another in the order
//! they came, in **one transaction** on one held connection, then hands
//! each its own rows. A write that finds a lane free and nothing pending
//! runs at once as a statement of its own, so an idle backend pays nothing
//! for this; a busy one pays one commit per batch instead of one per write.
//!
//! SQLite has one lane, its one writer (`sqlite_writer`), and more goes
//! through it: the stores' writes (each a list of statements), `mint` and
//! the message queue's lease operations, every write of the process but
//! explicit transactions. A batch there is one transaction on the
//! writer, the first call beginning it and the last committing it
//! ([`WriteTarget`] for `SqliteWriter`): the writer was the pipeline's
//! serial bound, and a commit (writing its WAL frames, and the
//! checkpoints they bring on) was about a third of its CPU
//! (docs/benchmarks.md, 2026-12-06, second session). The writes that
//! share a statement text run as one call (`sqlite_merge`): one call for
//! the whole batch would be a new text each time, and SQLite would
//! prepare every statement of it, at about four times a cached
//! statement's cost. If the writer's holder is cancelled half way, the
//! open transaction is rolled back (`HeldWriter`'s drop) and the batch's
//! other writes get a retryable error.
//!
//! A batch goes to the server as **one message** (`HeldConnections::
//! fetch_each_in_one_message`): the simple query protocol runs the
//! statements of a message as one transaction, each as `EXECUTE` of a
//! statement prepared on the connection, its values written as constants
//! (`literal`). Sent one by one, with `BEGIN` and `COMMIT`, a batch of n
//! writes took n + 2 round trips, and it held its lane all that time: a
//! write waited for the batch ahead of it and then its own, so under load
//! the lanes' round trips, not the server, set the pace (docs/benchmarks.md,
//! 2026-12-06). A batch with a value `literal` does not write as text
//! (none of the stores' writes has one) goes one statement at a time.
//!
//! Several writes in one transaction behave as the same writes one after
//! another: each statement sees what the ones before it wrote (READ
//! COMMITTED: a fresh snapshot per statement, plus the transaction's own
//! writes), so an optimistic-lock update that an earlier write of the
//! batch outdated touches nothing, as it would have a moment later. What
//! changes is what fails together. When the server fails a statement (its
//! own error, a deadlock between two lanes' batches, which Postgres
//! detects, or a wait for a row lock past `held::BATCH_LOCK_WAIT`, which
//! breaks such a deadlock sooner), the batch is rolled back whole and each
//! of its writes runs again alone, to get its own answer. When the connection is lost
//! instead, whether the batch committed is unknown, as for a statement
//! alone, and each write gets a retryable error.
//!
//! The lanes and the pending list are `group_commit`'s. A write whose
//! caller went away while it waited still runs with its batch (its answer
//! is dropped), as a statement already sent would have. If the caller
//! holding a lane is cancelled before its batch's result, the batch's
//! other writes get a retryable error: the server already has the whole
//! message, so whether it commits is unknown to them, as when a
//! connection is lost (a batch sent statement by statement is rolled back
//! instead, by sqlx's `Transaction` before the connection's next
//! statement).
//!
//! Operators see it in two counters: `stovepipe_db_writes_total` by
//! `path` (`alone`, `batched`; each statement once, by the path it took
//! first) and `role` (`write`, `lease`, `read`, `tail`), and
//! `stovepipe_db_write_batches_total` by
//! `outcome` (`committed`; `rolled_back`, whose writes then ran alone;
//! `lost` with the connection). Writes per batch is the ratio of the
//! batched writes to the batches; a rising `rolled_back` means writes
//! failing or lanes deadlocking.
//!
//! On Postgres **every statement outside a transaction** comes here: the
//! stores' writes and `mint`, the message queue's lease operations
//! (receive, ack, hold, retry, renew), the reads and the change feed
//! tail's rounds ([`Role`]). Under load a request's receives, acks,
//! reads and tail rounds were each a round trip of their own beside the
//! batches, about 7 of its 8.8 transactions; the server's CPU per request
//! went with the round trips, not with the statements' execution
//! (docs/benchmarks.md, 2026-12-06, fourth session). Now they ride in
//! the batch that is forming, as more statements of its message. Alone,
//! each still runs where it ran before ([`PostgresHeld`]): a lease
//! operation or a tail's round on the lease connections, whose commits
//! do not wait for their WAL flush, the others on the statements'
//! connections. In a batch a lease operation commits with the batch,
//! waiting for the flush the batch's writes wait for anyway, and a read
//! sees what committed before its statement began and the batch's
//! earlier statements, as it would have a moment later alone. Only
//! transactions ([`Tx`]) keep connections of their own. On SQLite the
//! lease operations come here too (the writer runs them); transactions
//! hold the writer themselves, and reads go to the reader connections.
//!
//! [`Tx`]: crate::backend::Tx

use futures::future::BoxFuture;
use metrics::counter;
use sea_orm::sqlx::Postgres;
use sea_orm::{DbErr, QueryResult, Value};

use crate::error;
use crate::group_commit::{GroupCommit, Pending};
use crate::held::HeldConnections;

/// At most this many writes per transaction (a longer list is several).
const MAX_BATCH: usize = 32;

/// The writes, by `path`: `alone` or `batched`.
const WRITES: &str = "stovepipe_db_writes_total";
/// The batches, by `outcome`: `committed`, `rolled_back` or `lost`.
const BATCHES: &str = "stovepipe_db_write_batches_total";

pub(crate) type Answer = Result<Vec<QueryResult>, DbErr>;

/// A write: its statement (on SQLite possibly several, separated by `;`)
/// and values.
type Write = (String, Vec<Value>);

/// What a statement outside a transaction does, which decides where it
/// runs alone (the stores' writes and `mint` are `Write`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Read,
    Write,
    /// The message queue's lease operations (receive, ack, hold, retry,
    /// renew; `SqlBackend::lease_write`).
    Lease,
    /// The change feed tail's round (`feed`): a read and its announcement.
    Tail,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Lease => "lease",
            Self::Tail => "tail",
        }
    }
}

/// A statement waiting for its flush.
type PendingWrite = Pending<(Role, Write), Answer>;

/// Where a backend's writes run: Postgres's held connections, SQLite's
/// one writer.
pub(crate) trait WriteTarget: Sync {
    /// Runs one statement alone, as a transaction of its own, where a
    /// statement of its `role` runs.
    fn alone<'a>(&'a self, role: Role, sql: &'a str, values: Vec<Value>) -> BoxFuture<'a, Answer>;

    /// Runs `writes` (at least two), in order (SQLite: grouped by text,
    /// each text's writes in order), in one transaction and
    /// returns each one's rows; the first error ends it, and nothing of it
    /// commits unless the error is a lost connection (then the outcome is
    /// unknown). The writes are borrowed, so each can run again alone.
    /// `locking`: some write may wait for a row lock (a store write or a
    /// lease operation; reads and the tail's rounds never do).
    fn together<'a>(
        &'a self,
        writes: &'a [Write],
        locking: bool,
    ) -> BoxFuture<'a, Result<Vec<Vec<QueryResult>>, DbErr>>;
}

impl WriteTarget for HeldConnections<Postgres> {
    fn alone<'a>(&'a self, _: Role, sql: &'a str, values: Vec<Value>) -> BoxFuture<'a, Answer> {
        Box::pin(self.fetch_all(sql, values))
    }

    /// One message (see the module), waiting at most
    /// `held::BATCH_LOCK_WAIT` for a row lock when `locking`; a batch with
    /// a value `literal` does not write goes statement by statement.
    fn together<'a>(
        &'a self,
        writes: &'a [Write],
        locking: bool,
    ) -> BoxFuture<'a, Result<Vec<Vec<QueryResult>>, DbErr>> {
        Box::pin(async move {
            match self.fetch_each_in_one_message(writes, locking).await? {
                Some(answers) => Ok(answers),
                None => self.fetch_each_in_transaction(writes).await,
            }
        })
    }
}

/// Postgres's connections outside transactions: every statement of one
/// goes through its lanes (see the module), and runs alone on the
/// connections of its role.
pub(crate) struct PostgresHeld {
    /// Reads and the one-statement writes, and every batch.
    pub(crate) statements: HeldConnections<Postgres>,
    /// The lease operations and the tail's rounds alone, whose commits do
    /// not wait for their WAL flush (`SqlBackend::lease_write`, `feed`).
    pub(crate) leases: HeldConnections<Postgres>,
}

impl WriteTarget for PostgresHeld {
    fn alone<'a>(&'a self, role: Role, sql: &'a str, values: Vec<Value>) -> BoxFuture<'a, Answer> {
        match role {
            Role::Lease | Role::Tail => self.leases.alone(role, sql, values),
            Role::Read | Role::Write => self.statements.alone(role, sql, values),
        }
    }

    fn together<'a>(
        &'a self,
        writes: &'a [Write],
        locking: bool,
    ) -> BoxFuture<'a, Result<Vec<Vec<QueryResult>>, DbErr>> {
        self.statements.together(writes, locking)
    }
}

/// The writes of one backend (see the module).
pub(crate) struct WriteBatch(GroupCommit<(Role, Write), Answer>);

impl WriteBatch {
    /// At most `lanes` batches in flight at once.
    pub(crate) fn new(lanes: usize) -> Self {
        Self(GroupCommit::new(lanes, MAX_BATCH))
    }

    /// How many batches may be in flight at once.
    pub(crate) fn lanes(&self) -> usize {
        self.0.lanes()
    }

    /// Runs the write `sql` on `target`, batched with the writes pending
    /// beside it, and returns its rows.
    pub(crate) async fn write<T: WriteTarget>(
        &self,
        target: &T,
        sql: &str,
        values: Vec<Value>,
    ) -> Answer {
        self.run(target, Role::Write, sql, values).await
    }

    /// Runs the statement `sql` of `role` on `target`, batched with the
    /// statements pending beside it, and returns its rows.
    pub(crate) async fn run<T: WriteTarget>(
        &self,
        target: &T,
        role: Role,
        sql: &str,
        values: Vec<Value>,
    ) -> Answer {
        self.0
            .submit(
                (role, (sql.to_owned(), values)),
                || Err(error::abandoned("the write's batch")),
                |chunk| flush(target, chunk),
            )
            .await
    }
}

/// Runs `chunk` as one transaction (alone: as a transaction of its own)
/// and answers each write; when the transaction fails, each write again
/// alone.
async fn flush<T: WriteTarget>(target: &T, mut chunk: Vec<PendingWrite>) {
    if chunk.len() == 1 {
        let mut p = chunk.remove(0);
        let role = p.item.0;
        counter!(WRITES, "path" => "alone", "role" => role.label()).increment(1);
        let (sql, values) = std::mem::take(&mut p.item.1);
        p.answer(target.alone(role, &sql, values).await);
        return;
    }
    let locking = chunk
        .iter()
        .any(|p| matches!(p.item.0, Role::Write | Role::Lease));
    // Each item keeps its role; its statement moves into the batch.
    let writes: Vec<Write> = chunk
        .iter_mut()
        .map(|p| {
            counter!(WRITES, "path" => "batched", "role" => p.item.0.label()).increment(1);
            std::mem::take(&mut p.item.1)
        })
        .collect();
    let outcome = match target.together(&writes, locking).await {
        Ok(answers) => {
            for (p, rows) in chunk.into_iter().zip(answers) {
                p.answer(Ok(rows));
            }
            "committed"
        }
        // The server's error (a statement's own, or a deadlock with
        // another transaction) rolled the batch back: each write alone.
        Err(e) if error::is_server_answer(&e) => {
            tracing::debug!(writes = chunk.len(), error = %e, "a batch of writes rolled back; each runs alone");
            for (p, (sql, values)) in chunk.into_iter().zip(writes) {
                let role = p.item.0;
                p.answer(target.alone(role, &sql, values).await);
            }
            "rolled_back"
        }
        // Lost with its connection: whether it committed is unknown, as
        // for a statement alone; each write is told so (retryable).
        Err(e) => {
            for p in chunk {
                p.answer(Err(DbErr::Conn(sea_orm::RuntimeErr::Internal(
                    e.to_string(),
                ))));
            }
            "lost"
        }
    };
    counter!(BATCHES, "outcome" => outcome).increment(1);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::held::tests::scalar;
    use std::time::Duration;

    /// One held connection (so a temporary table is seen by every
    /// statement) and a batch of one lane; `None`: the test skips.
    async fn one_lane() -> Option<(HeldConnections<Postgres>, WriteBatch)> {
        let held = HeldConnections::new(crate::test_postgres_pool(2).await?, 1);
        held.fetch_all(
            "CREATE TEMPORARY TABLE batched (n bigint PRIMARY KEY, version bigint NOT NULL)",
            vec![],
        )
        .await
        .unwrap();
        Some((held, WriteBatch::new(1)))
    }

    /// An insert of `n` returning its transaction's id.
    fn insert(n: i64) -> (String, Vec<Value>) {
        (
            "INSERT INTO batched (n, version) VALUES ($1, 1) RETURNING txid_current() AS txid"
                .to_owned(),
            vec![n.into()],
        )
    }

    async fn write(
        batch: &WriteBatch,
        held: &HeldConnections<Postgres>,
        (sql, values): (String, Vec<Value>),
    ) -> Answer {
        batch.write(held, &sql, values).await
    }

    /// The answers to inserts of 1, 2, 2 and 3 through a batch: only the
    /// duplicate failed, with the database's own error, which `says` so.
    pub(crate) fn only_the_duplicate_failed(answers: &[Answer], says: &str) {
        assert!(answers[0].is_ok() && answers[1].is_ok() && answers[3].is_ok());
        let err = answers[2].as_ref().unwrap_err();
        assert!(
            err.to_string().contains(says),
            "the duplicate's own error: {err}"
        );
    }

    fn txid(rows: &[QueryResult]) -> i64 {
        rows[0].try_get("", "txid").unwrap()
    }

    async fn count(held: &HeldConnections<Postgres>) -> i64 {
        scalar(held, "SELECT COUNT(*) FROM batched", vec![]).await
    }

    /// The first write finds the lane free and runs alone; the ones that
    /// came while it ran commit together, in one transaction.
    ///
    /// The connection is occupied until every write has come: otherwise a
    /// busy machine can let the first write's answer arrive before it is
    /// first polled for it, and each write then finds the lane free.
    #[tokio::test]
    async fn writes_that_wait_for_the_lane_commit_in_one_transaction() {
        let Some((held, batch)) = one_lane().await else {
            return;
        };
        let occupied = held.occupy().await;
        let writes = futures::future::join_all((1..=5).map(|n| write(&batch, &held, insert(n))));
        let free_once_all_came = async {
            // Polled after the writes' first poll, which queued them all.
            tokio::task::yield_now().await;
            drop(occupied);
        };
        let (answers, ()) = futures::join!(writes, free_once_all_came);
        let txids: Vec<i64> = answers.iter().map(|a| txid(a.as_ref().unwrap())).collect();
        assert!(
            txids[1..].iter().all(|t| *t == txids[1]),
            "the waiting writes share one transaction: {txids:?}"
        );
        assert_ne!(txids[0], txids[1], "the first ran alone");
        assert_eq!(count(&held).await, 5);
    }

    /// The counters an operator reads: how many writes went alone or in a
    /// batch, and how each batch ended.
    #[tokio::test]
    async fn the_counters_tell_writes_alone_from_batched_and_how_batches_ended() {
        let Some((held, batch)) = one_lane().await else {
            return;
        };
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        // Each round's first write holds the lane for 50 ms, so the
        // others wait for it and go out together, however fast the
        // server answers.
        let lane_holder = || ("SELECT pg_sleep(0.05)".to_owned(), vec![]);
        let writes = [lane_holder(), insert(1), insert(2)];
        for answer in futures::future::join_all(writes.map(|w| write(&batch, &held, w))).await {
            answer.unwrap();
        }
        let writes = [lane_holder(), insert(3), insert(3)];
        futures::future::join_all(writes.map(|w| write(&batch, &held, w))).await;
        let text = scrape.render();
        for line in [
            // The holds alone; each write counts once, by the path it took
            // first (the failed batch's writes ran again alone).
            r#"stovepipe_db_writes_total{path="alone",role="write"} 2"#,
            r#"stovepipe_db_writes_total{path="batched",role="write"} 4"#,
            r#"stovepipe_db_write_batches_total{outcome="committed"} 1"#,
            r#"stovepipe_db_write_batches_total{outcome="rolled_back"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    /// On Postgres every statement outside a transaction takes the lanes:
    /// a read, a lease operation or a tail's round that waits for one goes
    /// out in the batch, in its transaction; alone, each runs on its
    /// role's connections, a lease operation's or a round's commit not
    /// waiting for its flush.
    #[tokio::test]
    async fn every_role_joins_the_batch_and_alone_keeps_its_connections() {
        let (Some(statements), Some(leases)) = (
            crate::test_postgres_pool(2).await,
            crate::test_postgres_pool(2).await,
        ) else {
            return;
        };
        let held = PostgresHeld {
            statements: HeldConnections::new(statements, 1),
            leases: HeldConnections::new(leases, 1),
        };
        held.leases
            .fetch_all("SET synchronous_commit = off", vec![])
            .await
            .unwrap();
        let batch = WriteBatch::new(1);
        let probe = "SELECT txid_current() AS txid, \
                     current_setting('synchronous_commit') AS sync, \
                     current_setting('lock_timeout') AS lock_wait";
        let run = |role| batch.run(&held, role, probe, vec![]);
        let sync = |rows: &[QueryResult]| -> String { rows[0].try_get("", "sync").unwrap() };
        let lock_wait =
            |rows: &[QueryResult]| -> String { rows[0].try_get("", "lock_wait").unwrap() };

        for (role, expected) in [
            (Role::Lease, "off"),
            (Role::Tail, "off"),
            (Role::Read, "on"),
            (Role::Write, "on"),
        ] {
            let alone = run(role).await.unwrap();
            assert_eq!(sync(&alone), expected, "{role:?} alone");
            assert_eq!(lock_wait(&alone), "0", "{role:?} alone waits as ever");
        }

        // The first holds the lane for 50 ms; the others wait and go out
        // together.
        let holder = batch.run(&held, Role::Write, "SELECT pg_sleep(0.05)", vec![]);
        let (held_lane, read, lease, tail, write) = tokio::join!(
            holder,
            run(Role::Read),
            run(Role::Lease),
            run(Role::Tail),
            run(Role::Write)
        );
        held_lane.unwrap();
        let batched = [read.unwrap(), lease.unwrap(), tail.unwrap(), write.unwrap()];
        for rows in &batched {
            assert_eq!(txid(rows), txid(&batched[0]), "one transaction");
            assert_eq!(sync(rows), "on", "committed with the batch");
            assert_eq!(lock_wait(rows), "100ms", "a batch that may lock is bounded");
        }

        // A batch of reads and tail rounds takes no row lock: no setting.
        let holder = batch.run(&held, Role::Read, "SELECT pg_sleep(0.05)", vec![]);
        let (held_lane, read, tail) = tokio::join!(holder, run(Role::Read), run(Role::Tail));
        held_lane.unwrap();
        let (read, tail) = (read.unwrap(), tail.unwrap());
        assert_eq!(txid(&read), txid(&tail), "one transaction");
        assert_eq!(lock_wait(&read), "0");
    }

    /// A write that fails rolls its batch back; the others are run again
    /// alone and commit, and the failing one gets its own error.
    #[tokio::test]
    async fn a_failing_write_fails_alone() {
        let Some((held, batch)) = one_lane().await else {
            return;
        };
        let writes = [insert(1), insert(2), insert(2), insert(3)];
        let answers = futures::future::join_all(writes.map(|w| write(&batch, &held, w))).await;
        only_the_duplicate_failed(&answers, "duplicate key");
        assert_eq!(count(&held).await, 3);
    }

    /// Two conditional updates of one row on the same version in one batch:
    /// the first wins and the second touches nothing, as one after another.
    #[tokio::test]
    async fn writes_in_a_batch_see_the_ones_before_them() {
        let Some((held, batch)) = one_lane().await else {
            return;
        };
        write(&batch, &held, insert(1)).await.unwrap();
        let update = || {
            (
                "UPDATE batched SET version = version + 1 WHERE n = 1 AND version = 1 \
                 RETURNING version"
                    .to_owned(),
                vec![],
            )
        };
        let answers = futures::future::join_all(
            [insert(2), update(), update()].map(|w| write(&batch, &held, w)),
        )
        .await;
        assert_eq!(
            answers[1].as_ref().unwrap().len(),
            1,
            "the first update won"
        );
        assert!(answers[2].as_ref().unwrap().is_empty(), "the second saw it");
    }

    /// A batch of two writes whose flusher is cancelled half way: the
    /// flusher's write sleeps for `seconds` (bound as given) and inserts
    /// 100, the other inserts 7. Checks that the other write is told it
    /// may not have committed (retryable) and that the connection serves
    /// the next write (8); returns how many rows the table then holds.
    async fn cancel_a_flusher(seconds: Value) -> Option<i64> {
        let (held, batch) = one_lane().await?;
        let sleep = (
            "INSERT INTO batched (n, version) SELECT 100, 1 FROM pg_sleep($1) \
             RETURNING txid_current() AS txid"
                .to_owned(),
            vec![seconds],
        );
        // `first` holds the lane; `flusher` then takes itself and `other`.
        let first = write(&batch, &held, ("SELECT pg_sleep(0.2)".to_owned(), vec![]));
        let rest = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let flusher =
                tokio::time::timeout(Duration::from_millis(500), write(&batch, &held, sleep));
            tokio::join!(flusher, write(&batch, &held, insert(7)))
        };
        let (first, (flusher, other)) = tokio::join!(first, rest);
        first.unwrap();
        assert!(flusher.is_err(), "the flusher was cancelled");
        let err = other.unwrap_err();
        assert!(error::is_transient(&err), "retryable: {err}");
        write(&batch, &held, insert(8)).await.unwrap();
        Some(count(&held).await)
    }

    /// A batch sent statement by statement (an unsigned value is one
    /// `literal` does not write as text) is rolled back when its flusher
    /// is cancelled: nothing of it commits.
    #[tokio::test]
    async fn a_cancelled_flusher_of_a_batch_not_sent_as_one_message_rolls_it_back() {
        let Some(rows) = cancel_a_flusher(Value::BigUnsigned(Some(1))).await else {
            return;
        };
        assert_eq!(rows, 1, "only the write after the batch");
    }

    /// A batch goes out as one message, so the flusher's cancellation
    /// comes after the server has the whole transaction: it commits whole,
    /// and the other writes are told that its outcome is unknown
    /// (retryable), as when a connection is lost.
    #[tokio::test]
    async fn a_cancelled_flusher_of_a_batch_sent_as_one_message_leaves_it_whole() {
        let Some(rows) = cancel_a_flusher(Value::from(1_i64)).await else {
            return;
        };
        assert_eq!(rows, 3, "the whole batch, then the write after it");
    }
}
