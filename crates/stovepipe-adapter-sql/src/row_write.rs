//! One store write as SQL pieces, and several of them as one statement.
//!
//! A [`RowWrite`] is a conditional write of one row, its values already
//! bound (`$n`) into the statement's value list: an `UPDATE … WHERE <key>
//! AND version = <expected>` or an `INSERT … ON CONFLICT (<key>) DO
//! NOTHING`. Alone it is the statement the stores always ran
//! ([`RowWrite::alone`]). A joint write (`JointWriter`) runs several as one,
//! all or nothing:
//!
//! - **Postgres** ([`postgres_joint`]): one statement of data-modifying
//!   CTEs. Each update's row is first locked, `FOR UPDATE`, where its
//!   version is still the expected one, each lock only once the one before
//!   it was taken, in one order of tables (the queue row, the request, the
//!   build: [`lock_rank`]), so two joint writes take their common locks in
//!   the same order. The create, if any, inserts
//!   only when every lock was taken; the updates run only when it did, and
//!   then cannot miss: their rows are locked at the expected version.
//!   The write touched its rows exactly when `main` has its row. A lock
//!   that was not taken, or a create that found its key taken, is the
//!   miss reported. Two joint writes alone cannot deadlock on each other;
//!   two lanes' batches, each holding the rows of its earlier statements
//!   until it commits, can, and a batch waits at most
//!   `held::BATCH_LOCK_WAIT` for a row before its writes run again alone
//!   (`write_batch`). A joint statement costs about what its writes cost
//!   alone (the rows, their index entries and WAL stay; the locks add
//!   their own): it saves a round trip and a wait in the caller's chain,
//!   not the server's work (docs/benchmarks.md, 2026-12-06, fifth
//!   session).
//! - **SQLite** ([`sqlite_joint`]): the writer runs one transaction at a
//!   time, so the checks can come first: a row per write that would miss
//!   (`part` 3, its index in `miss`), a note in `WRITE_HIT` when none
//!   would, then every write guarded by the note.
//!
//! At most one create per joint write: two inserts cannot both be made
//! conditional on the other's conflict in one Postgres statement.

use crate::backend::Placeholder;

/// One conditional write of one row (module docs).
pub(crate) struct RowWrite {
    pub(crate) table: &'static str,
    /// The row's key over bound values, `queue = $1 AND number = $2`; for
    /// a create, the conflict target's columns.
    pub(crate) key: String,
    pub(crate) op: RowOp,
}

pub(crate) enum RowOp {
    /// `SET {set}` where the stored version is `expected` (bound).
    Update { set: String, expected: Placeholder },
    /// `({columns}) VALUES ({values})`, nothing on a `conflict`.
    Create {
        columns: String,
        values: String,
        conflict: &'static str,
    },
}

impl RowWrite {
    /// The write as a statement of its own.
    pub(crate) fn alone(&self) -> String {
        self.statement(None)
    }

    /// The write, made only where `guard` (a condition), if any, holds.
    fn statement(&self, guard: Option<&str>) -> String {
        let Self { table, op, .. } = self;
        let row = self.row();
        match (op, guard) {
            (RowOp::Update { set, .. }, None) => format!("UPDATE {table} SET {set} WHERE {row}"),
            (RowOp::Update { set, .. }, Some(guard)) => {
                format!("UPDATE {table} SET {set} WHERE {row} AND {guard}")
            }
            (
                RowOp::Create {
                    columns,
                    values,
                    conflict,
                },
                guard,
            ) => {
                let source = match guard {
                    None => format!("VALUES ({values})"),
                    Some(guard) => format!("SELECT {values} WHERE {guard}"),
                };
                format!(
                    "INSERT INTO {table} ({columns}) {source} ON CONFLICT ({conflict}) DO NOTHING"
                )
            }
        }
    }

    /// The condition on the row the write is about: its key, and for an
    /// update the expected version.
    fn row(&self) -> String {
        match &self.op {
            RowOp::Update { expected, .. } => format!("{} AND version = {expected}", self.key),
            RowOp::Create { .. } => self.key.clone(),
        }
    }

    /// Whether the write would touch its row now: the row at the expected
    /// version for an update, no row for a create.
    fn would_write(&self) -> String {
        let found = format!("EXISTS (SELECT 1 FROM {} WHERE {})", self.table, self.row());
        if self.is_create() {
            format!("NOT {found}")
        } else {
            found
        }
    }

    fn is_create(&self) -> bool {
        matches!(self.op, RowOp::Create { .. })
    }
}

/// Postgres: the CTEs of a joint write, ending in `main` (a row when every
/// write touched its row), and its checks in the order they are made: each
/// the name of a CTE that has a row when its write's row was found (locked,
/// or created) and that write's index. The write that missed is the first
/// check without a row.
pub(crate) fn postgres_joint(writes: &[RowWrite]) -> (Vec<String>, Vec<(String, usize)>) {
    let mut ctes = Vec::new();
    let mut locked = "true".to_owned();
    let mut checks = Vec::new();
    let mut order: Vec<(usize, &RowWrite)> = writes.iter().enumerate().collect();
    order.sort_by_key(|(i, w)| (lock_rank(w.table), *i));
    for (i, w) in order {
        if !w.is_create() {
            ctes.push(format!(
                "lock{i} AS (SELECT 1 FROM {} WHERE {} AND {locked} FOR UPDATE)",
                w.table,
                w.row()
            ));
            checks.push((format!("lock{i}"), i));
            locked = format!("EXISTS (SELECT 1 FROM lock{i})");
        }
    }
    let mut written = locked;
    let mut sources = Vec::new();
    if let Some(i) = writes.iter().position(RowWrite::is_create) {
        ctes.push(format!(
            "write{i} AS ({} RETURNING 1)",
            writes[i].statement(Some(&written))
        ));
        checks.push((format!("write{i}"), i));
        written = format!("EXISTS (SELECT 1 FROM write{i})");
        sources.push(format!("write{i}"));
    }
    for (i, w) in writes.iter().enumerate().filter(|(_, w)| !w.is_create()) {
        ctes.push(format!(
            "write{i} AS ({} RETURNING 1)",
            w.statement(Some(&written))
        ));
        sources.push(format!("write{i}"));
    }
    ctes.push(format!(
        "main AS (SELECT 1 AS hit FROM {})",
        sources.join(", ")
    ));
    (ctes, checks)
}

/// Joint writes lock their rows in one order of tables, whatever their
/// lists' order, so that two of them never wait for each other's rows.
fn lock_rank(table: &str) -> u8 {
    match table {
        "queues" => 0,
        "requests" => 1,
        "builds" => 2,
        _ => 3,
    }
}

/// SQLite: the statements of a joint write, before its outbox's. They
/// return a row `part` 3 with the index `miss` of each write that would
/// miss, and a row `part` 0 when every one was written; `hit` is the
/// condition the outbox's statements are guarded by.
pub(crate) fn sqlite_joint(writes: &[RowWrite], hit_table: &str) -> Vec<String> {
    let hit = format!("EXISTS (SELECT 1 FROM {hit_table})");
    let mut statements: Vec<String> = writes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "SELECT 3 AS part, {i} AS miss WHERE NOT {}",
                w.would_write()
            )
        })
        .collect();
    let all: Vec<String> = writes.iter().map(RowWrite::would_write).collect();
    statements.push(format!(
        "INSERT INTO {hit_table} (hit) SELECT 1 WHERE {}",
        all.join(" AND ")
    ));
    statements.extend(writes.iter().map(|w| w.statement(Some(&hit))));
    statements.push(format!("SELECT 0 AS part, NULL AS topic WHERE {hit}"));
    statements
}
