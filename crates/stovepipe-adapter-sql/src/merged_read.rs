//! Reads of one kind that wait together go out as one statement.
//!
//! On Postgres the greenness read of a commit nobody validated (the
//! commit record, `read_model`) reads the database every time. Each used
//! to be a statement of its own, batched with whatever else was pending
//! (`write_batch`): per read the server parsed an `EXECUTE`, started an
//! executor and sent a row description of 38 columns, and this process
//! decoded one, so a read cost Postgres about as much as a whole
//! `pgbench -S` transaction. A [`MergedRead`] is a read that can answer
//! many keys in one statement: its text for n keys takes the n keys'
//! values one after another and returns exactly one row per key, in the
//! keys' order. [`MergedReads`] lets one such statement be in flight at a
//! time (one lane, `group_commit`): the reads that come meanwhile wait,
//! and when it returns they go out together as the next one, at most
//! [`MAX_KEYS`] keys each; each read gets its own row. A read that finds
//! nothing in flight goes out at once, alone, so an idle server pays no
//! latency for this. One lane, not the write lanes' two: with two, the
//! reads split into two smaller statements for the same work
//! (docs/benchmarks.md, 2026-12-08).
//!
//! A merged statement is a read like any other (`SqlBackend::query_all`):
//! it sees what committed before it began, which is after each of its
//! reads was asked. When it fails, or its rows do not match its keys (a
//! text that breaks the rule), each of its reads runs again alone with
//! the one-key text, to get its own answer.
//!
//! Operators see it in `stovepipe_db_merged_reads_total` by `path`:
//! `alone` (a statement of its own), `merged` (one statement with others)
//! and `again_alone` (its merged statement failed or its rows did not
//! match, and it ran again alone). Merged over all is the share of these
//! reads that shared a statement.

use std::future::Future;
use std::sync::OnceLock;

use metrics::counter;
use sea_orm::{DbErr, Value};

use crate::group_commit::{GroupCommit, Pending};

/// The reads, by `path` (see the module).
const READS: &str = "stovepipe_db_merged_reads_total";

/// At most this many keys per merged statement (each key count is a text
/// of its own, prepared on each connection that runs it).
pub(crate) const MAX_KEYS: usize = 16;

/// A read whose statement can answer many keys at once (see the module).
pub(crate) struct MergedRead {
    /// The text for n keys (1 ≤ n ≤ [`MAX_KEYS`]): the keys' values in
    /// order, one row per key, in the keys' order.
    text: fn(usize) -> String,
    texts: OnceLock<Vec<String>>,
}

impl MergedRead {
    /// The read whose text for n keys `text` writes.
    pub(crate) const fn new(text: fn(usize) -> String) -> Self {
        Self {
            text,
            texts: OnceLock::new(),
        }
    }

    /// The text for `keys` keys, clamped to `1..=MAX_KEYS`.
    pub(crate) fn text(&self, keys: usize) -> &str {
        let texts = self
            .texts
            .get_or_init(|| (1..=MAX_KEYS).map(self.text).collect());
        &texts[keys.clamp(1, MAX_KEYS) - 1]
    }

    /// Whether `self` and `other` are the same read.
    fn is(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

/// A read waiting: which read, and its key's values.
struct Key {
    read: &'static MergedRead,
    values: Vec<Value>,
}

type Answer<R> = Result<Vec<R>, DbErr>;

/// The merged reads of one backend: one statement in flight, the reads
/// waiting meanwhile merged into the next (see the module). `R` is a row.
pub(crate) struct MergedReads<R> {
    waiting: GroupCommit<Key, Answer<R>>,
}

impl<R> MergedReads<R> {
    pub(crate) fn new() -> Self {
        Self {
            waiting: GroupCommit::new(1, MAX_KEYS),
        }
    }

    /// The rows of `read` for the key `values`, run by `run` (a statement
    /// and its values) alone or merged with the reads waiting beside it.
    pub(crate) async fn read<F, Fut>(
        &self,
        read: &'static MergedRead,
        values: Vec<Value>,
        run: F,
    ) -> Answer<R>
    where
        F: Fn(&'static str, Vec<Value>) -> Fut,
        Fut: Future<Output = Answer<R>>,
    {
        let key = Key { read, values };
        self.waiting
            .submit(key, || Err(abandoned()), |chunk| flush(chunk, &run))
            .await
    }
}

/// The flush that took a read was cancelled before its answer.
fn abandoned() -> DbErr {
    DbErr::Conn(sea_orm::RuntimeErr::Internal(
        "the read's merged statement was abandoned before its answer".into(),
    ))
}

/// Runs `chunk` (at most `MAX_KEYS` reads): the reads of each kind as one
/// statement, in the order each kind first came.
async fn flush<R, F, Fut>(mut chunk: Vec<Pending<Key, Answer<R>>>, run: &F)
where
    F: Fn(&'static str, Vec<Value>) -> Fut,
    Fut: Future<Output = Answer<R>>,
{
    while let Some(first) = chunk.first() {
        let read = first.item.read;
        let (same, rest) = chunk.into_iter().partition(|p| p.item.read.is(read));
        chunk = rest;
        merged(read, same, run).await;
    }
}

/// Runs the reads `same` of `read` as one statement and gives each its
/// row; each alone when that fails or its rows do not match its keys.
async fn merged<R, F, Fut>(
    read: &'static MergedRead,
    mut same: Vec<Pending<Key, Answer<R>>>,
    run: &F,
) where
    F: Fn(&'static str, Vec<Value>) -> Fut,
    Fut: Future<Output = Answer<R>>,
{
    let keys = same.len();
    let count = |path: &'static str, reads: usize| {
        counter!(READS, "path" => path).increment(reads as u64);
    };
    if keys == 1 {
        count("alone", 1);
        alone(read, same.remove(0), run).await;
        return;
    }
    let values = same
        .iter()
        .flat_map(|p| p.item.values.iter().cloned())
        .collect();
    match run(read.text(keys), values).await {
        Ok(rows) if rows.len() == keys => {
            count("merged", keys);
            for (p, row) in same.into_iter().zip(rows) {
                p.answer(Ok(vec![row]));
            }
        }
        outcome => {
            match outcome {
                Ok(rows) => tracing::warn!(
                    keys,
                    rows = rows.len(),
                    "a merged read's rows do not match its keys; each runs alone"
                ),
                Err(e) => {
                    tracing::debug!(keys, error = %e, "a merged read failed; each runs alone");
                }
            }
            count("again_alone", keys);
            for p in same {
                alone(read, p, run).await;
            }
        }
    }
}

/// Runs the read `p` alone, with the one-key text of `read`.
async fn alone<R, F, Fut>(read: &'static MergedRead, mut p: Pending<Key, Answer<R>>, run: &F)
where
    F: Fn(&'static str, Vec<Value>) -> Fut,
    Fut: Future<Output = Answer<R>>,
{
    let values = std::mem::take(&mut p.item.values);
    p.answer(run(read.text(1), values).await);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn numbered(keys: usize) -> String {
        format!("double {keys}")
    }

    static DOUBLE: MergedRead = MergedRead::new(numbered);
    /// The same text, another read: never merged with `DOUBLE`.
    static DOUBLE_TOO: MergedRead = MergedRead::new(numbered);

    fn key(value: &Value) -> i64 {
        match value {
            Value::BigInt(Some(n)) => *n,
            other => panic!("a key is a number: {other:?}"),
        }
    }

    /// A database stand-in: answers `double <n>` with each key doubled,
    /// after `delay`, and records each statement's text and keys. A key of
    /// 0 fails its statement; `short` answers a merged statement one row
    /// short.
    struct Doubler {
        delay: Duration,
        short: bool,
        statements: Mutex<Vec<(String, Vec<i64>)>>,
    }

    impl Doubler {
        fn new(delay_ms: u64) -> Self {
            Self {
                delay: Duration::from_millis(delay_ms),
                short: false,
                statements: Mutex::new(Vec::new()),
            }
        }

        async fn run(&self, sql: &'static str, values: Vec<Value>) -> Answer<i64> {
            let keys: Vec<i64> = values.iter().map(key).collect();
            self.statements
                .lock()
                .unwrap()
                .push((sql.to_owned(), keys.clone()));
            tokio::time::sleep(self.delay).await;
            if keys.contains(&0) {
                return Err(DbErr::Custom("key 0".into()));
            }
            let mut rows: Vec<i64> = keys.iter().map(|k| k * 2).collect();
            if self.short && rows.len() > 1 {
                rows.pop();
            }
            Ok(rows)
        }

        fn statements(&self) -> Vec<(String, Vec<i64>)> {
            self.statements.lock().unwrap().clone()
        }
    }

    async fn read(
        reads: &MergedReads<i64>,
        db: &Doubler,
        which: &'static MergedRead,
        k: i64,
    ) -> Answer<i64> {
        reads
            .read(which, vec![k.into()], |sql, v| db.run(sql, v))
            .await
    }

    fn texts_keys(db: &Doubler) -> Vec<(&'static str, usize)> {
        db.statements()
            .into_iter()
            .map(|(sql, keys)| {
                let text = if sql == "double 1" { "one" } else { "merged" };
                (text, keys.len())
            })
            .collect()
    }

    #[test]
    fn each_key_count_has_its_text_within_the_bound() {
        assert_eq!(DOUBLE.text(1), "double 1");
        assert_eq!(DOUBLE.text(3), "double 3");
        assert_eq!(DOUBLE.text(MAX_KEYS + 5), format!("double {MAX_KEYS}"));
        assert_eq!(DOUBLE.text(0), "double 1");
    }

    /// The first read finds nothing in flight and goes alone; the ones
    /// that came while it ran go out as one statement, each with its own
    /// row, in the order they came.
    #[tokio::test(start_paused = true)]
    async fn reads_that_wait_for_the_statement_in_flight_are_the_next_one() {
        let (reads, db) = (MergedReads::new(), Doubler::new(10));
        let answers =
            futures::future::join_all((1..=5).map(|k| read(&reads, &db, &DOUBLE, k))).await;
        let answers: Vec<Vec<i64>> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, [[2], [4], [6], [8], [10]], "each its own row");
        assert_eq!(
            db.statements(),
            [
                ("double 1".to_owned(), vec![1]),
                ("double 4".to_owned(), vec![2, 3, 4, 5])
            ]
        );
    }

    /// Past `MAX_KEYS` waiting reads, the rest are the statement after.
    #[tokio::test(start_paused = true)]
    async fn a_statement_holds_at_most_max_keys() {
        let (reads, db) = (MergedReads::new(), Doubler::new(10));
        let many = i64::try_from(MAX_KEYS).unwrap() + 3;
        let answers =
            futures::future::join_all((1..=many).map(|k| read(&reads, &db, &DOUBLE, k))).await;
        let answers: Vec<i64> = answers.into_iter().map(|a| a.unwrap()[0]).collect();
        assert_eq!(answers, (1..=many).map(|k| k * 2).collect::<Vec<_>>());
        assert_eq!(
            texts_keys(&db),
            [("one", 1), ("merged", MAX_KEYS), ("merged", 2)]
        );
    }

    /// Reads of another `MergedRead` waiting beside them are a statement
    /// of their own, even with the same text.
    #[tokio::test(start_paused = true)]
    async fn only_reads_of_one_kind_merge() {
        let (reads, db) = (MergedReads::new(), Doubler::new(10));
        let (first, a, b, c) = tokio::join!(
            read(&reads, &db, &DOUBLE, 1),
            read(&reads, &db, &DOUBLE, 2),
            read(&reads, &db, &DOUBLE_TOO, 3),
            read(&reads, &db, &DOUBLE, 4),
        );
        let answers = [first, a, b, c].map(|a| a.unwrap()[0]);
        assert_eq!(answers, [2, 4, 6, 8]);
        assert_eq!(
            db.statements(),
            [
                ("double 1".to_owned(), vec![1]),
                ("double 2".to_owned(), vec![2, 4]),
                ("double 1".to_owned(), vec![3]),
            ]
        );
    }

    /// A merged statement that fails runs each of its reads alone: the
    /// others get their rows, the failing key its own error.
    #[tokio::test(start_paused = true)]
    async fn a_failed_merged_statement_runs_each_read_alone() {
        let (reads, db) = (MergedReads::new(), Doubler::new(10));
        let answers =
            futures::future::join_all([1, 2, 0, 3].map(|k| read(&reads, &db, &DOUBLE, k))).await;
        assert_eq!(answers[1].as_ref().unwrap(), &[4]);
        assert_eq!(answers[3].as_ref().unwrap(), &[6]);
        let err = answers[2].as_ref().unwrap_err();
        assert!(err.to_string().contains("key 0"), "its own error: {err}");
        assert_eq!(
            texts_keys(&db),
            [
                ("one", 1),
                ("merged", 3),
                ("one", 1),
                ("one", 1),
                ("one", 1)
            ]
        );
    }

    /// The counter an operator reads: how many reads went alone, merged,
    /// or alone again after their merged statement failed.
    #[tokio::test(start_paused = true)]
    async fn the_counter_tells_reads_alone_from_merged() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let (reads, db) = (MergedReads::new(), Doubler::new(10));
        for keys in [[1, 2, 3], [4, 0, 5]] {
            futures::future::join_all(keys.map(|k| read(&reads, &db, &DOUBLE, k))).await;
        }
        let text = scrape.render();
        for line in [
            // The first of each round; then each round's failed key alone.
            r#"stovepipe_db_merged_reads_total{path="alone"} 2"#,
            r#"stovepipe_db_merged_reads_total{path="merged"} 2"#,
            r#"stovepipe_db_merged_reads_total{path="again_alone"} 2"#,
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    /// A merged statement whose rows do not match its keys gives no read
    /// a wrong row: each runs alone.
    #[tokio::test(start_paused = true)]
    async fn rows_that_do_not_match_the_keys_run_each_read_alone() {
        let reads = MergedReads::new();
        let db = Doubler {
            short: true,
            ..Doubler::new(10)
        };
        let answers =
            futures::future::join_all((1..=3).map(|k| read(&reads, &db, &DOUBLE, k))).await;
        let answers: Vec<i64> = answers.into_iter().map(|a| a.unwrap()[0]).collect();
        assert_eq!(answers, [2, 4, 6]);
        assert_eq!(
            texts_keys(&db),
            [("one", 1), ("merged", 2), ("one", 1), ("one", 1)]
        );
    }
}
