//! Reads that wait together go out as one statement.
//!
//! On Postgres the greenness read of a commit nobody validated (the
//! commit record, `read_model`) reads the database every time. Each used
//! to be a statement of its own, batched with whatever else was pending
//! (`write_batch`): per read the server parsed an `EXECUTE`, started an
//! executor and sent a row description of 38 columns, and this process
//! decoded one, so a read cost Postgres about as much as a whole
//! `pgbench -S` transaction. A merged read is a read that can answer many
//! keys in one statement: its text for n keys takes the n keys' values
//! one after another and returns exactly one row per key, in the keys'
//! order. [`MergedReads`] holds such a read's texts and lets one of its
//! statements be in flight at a time (one lane, `group_commit`): the
//! reads that come meanwhile wait,
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

use metrics::counter;
use sea_orm::{DbErr, Value};

use crate::error;
use crate::group_commit::{GroupCommit, Pending};

/// The reads, by `path` (see the module).
const READS: &str = "stovepipe_db_merged_reads_total";

/// At most this many keys per merged statement (each key count is a text
/// of its own, prepared on each connection that runs it).
pub(crate) const MAX_KEYS: usize = 16;

type Answer<R> = Result<Vec<R>, DbErr>;

/// A read waiting: its key's values.
type Waiting<R> = Pending<Vec<Value>, Answer<R>>;

/// A read that answers many keys in one statement, and the reads of it
/// waiting for the statement in flight (see the module). `R` is a row.
pub(crate) struct MergedReads<R> {
    /// The text for n keys at `n - 1` (1 ≤ n ≤ [`MAX_KEYS`]).
    texts: Vec<String>,
    waiting: GroupCommit<Vec<Value>, Answer<R>>,
}

impl<R> MergedReads<R> {
    /// The read whose text for n keys `text` writes: the keys' values in
    /// order, one row per key, in the keys' order.
    pub(crate) fn new(text: fn(usize) -> String) -> Self {
        Self {
            texts: (1..=MAX_KEYS).map(text).collect(),
            waiting: GroupCommit::new(1, MAX_KEYS),
        }
    }

    /// The text for `keys` keys, clamped to `1..=MAX_KEYS`.
    pub(crate) fn text(&self, keys: usize) -> &str {
        &self.texts[keys.clamp(1, MAX_KEYS) - 1]
    }

    /// The rows for the key `values`, run by `run` (a statement and its
    /// values) alone or merged with the reads waiting beside it.
    pub(crate) async fn read<'a, F, Fut>(&'a self, values: Vec<Value>, run: F) -> Answer<R>
    where
        F: Fn(&'a str, Vec<Value>) -> Fut,
        Fut: Future<Output = Answer<R>>,
    {
        let abandoned = || Err(error::abandoned("the read's merged statement"));
        self.waiting
            .submit(values, abandoned, |chunk| self.flush(chunk, &run))
            .await
    }

    /// Runs `chunk` (at most `MAX_KEYS` reads) as one statement and gives
    /// each read its row; each alone when that fails or its rows do not
    /// match its keys.
    async fn flush<'a, F, Fut>(&'a self, mut chunk: Vec<Waiting<R>>, run: &F)
    where
        F: Fn(&'a str, Vec<Value>) -> Fut,
        Fut: Future<Output = Answer<R>>,
    {
        let keys = chunk.len();
        let count = |path: &'static str, reads: usize| {
            counter!(READS, "path" => path).increment(reads as u64);
        };
        if keys == 1 {
            count("alone", 1);
            self.alone(chunk.remove(0), run).await;
            return;
        }
        let values = chunk.iter().flat_map(|p| p.item.iter().cloned()).collect();
        match run(self.text(keys), values).await {
            Ok(rows) if rows.len() == keys => {
                count("merged", keys);
                for (p, row) in chunk.into_iter().zip(rows) {
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
                for p in chunk {
                    self.alone(p, run).await;
                }
            }
        }
    }

    /// Runs the read `p` alone, with the one-key text.
    async fn alone<'a, F, Fut>(&'a self, mut p: Waiting<R>, run: &F)
    where
        F: Fn(&'a str, Vec<Value>) -> Fut,
        Fut: Future<Output = Answer<R>>,
    {
        let values = std::mem::take(&mut p.item);
        p.answer(run(self.text(1), values).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn numbered(keys: usize) -> String {
        format!("double {keys}")
    }

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

        async fn run(&self, sql: &str, values: Vec<Value>) -> Answer<i64> {
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

    async fn read(reads: &MergedReads<i64>, db: &Doubler, k: i64) -> Answer<i64> {
        reads.read(vec![k.into()], |sql, v| db.run(sql, v)).await
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
        let reads = MergedReads::<i64>::new(numbered);
        assert_eq!(reads.text(1), "double 1");
        assert_eq!(reads.text(3), "double 3");
        assert_eq!(reads.text(MAX_KEYS + 5), format!("double {MAX_KEYS}"));
        assert_eq!(reads.text(0), "double 1");
    }

    /// The first read finds nothing in flight and goes alone; the ones
    /// that came while it ran go out as one statement, each with its own
    /// row, in the order they came.
    #[tokio::test(start_paused = true)]
    async fn reads_that_wait_for_the_statement_in_flight_are_the_next_one() {
        let (reads, db) = (MergedReads::new(numbered), Doubler::new(10));
        let answers = futures::future::join_all((1..=5).map(|k| read(&reads, &db, k))).await;
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
        let (reads, db) = (MergedReads::new(numbered), Doubler::new(10));
        let many = i64::try_from(MAX_KEYS).unwrap() + 3;
        let answers = futures::future::join_all((1..=many).map(|k| read(&reads, &db, k))).await;
        let answers: Vec<i64> = answers.into_iter().map(|a| a.unwrap()[0]).collect();
        assert_eq!(answers, (1..=many).map(|k| k * 2).collect::<Vec<_>>());
        assert_eq!(
            texts_keys(&db),
            [("one", 1), ("merged", MAX_KEYS), ("merged", 2)]
        );
    }

    /// A merged statement that fails runs each of its reads alone: the
    /// others get their rows, the failing key its own error.
    #[tokio::test(start_paused = true)]
    async fn a_failed_merged_statement_runs_each_read_alone() {
        let (reads, db) = (MergedReads::new(numbered), Doubler::new(10));
        let answers = futures::future::join_all([1, 2, 0, 3].map(|k| read(&reads, &db, k))).await;
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
        let (reads, db) = (MergedReads::new(numbered), Doubler::new(10));
        for keys in [[1, 2, 3], [4, 0, 5]] {
            futures::future::join_all(keys.map(|k| read(&reads, &db, k))).await;
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
        let reads = MergedReads::new(numbered);
        let db = Doubler {
            short: true,
            ..Doubler::new(10)
        };
        let answers = futures::future::join_all((1..=3).map(|k| read(&reads, &db, k))).await;
        let answers: Vec<i64> = answers.into_iter().map(|a| a.unwrap()[0]).collect();
        assert_eq!(answers, [2, 4, 6]);
        assert_eq!(
            texts_keys(&db),
            [("one", 1), ("merged", 2), ("one", 1), ("one", 1)]
        );
    }
}
