//! Postgres change-log rows get their `seq` after they commit, not when
//! they are inserted.
//!
//! Before: every appending transaction took one installation-wide advisory
//! lock and held it through its commit, so that `seq` (a `bigserial`) was
//! commit order. That serialised every writer and every WAL flush. Now a
//! writer inserts its rows with `seq` NULL, an `id` for identity and its
//! transaction id (`txid`); the adapter's sequencer gives committed rows
//! their `seq`, contiguous and in `(txid, id)` order, once every transaction
//! with a lower id has ended (`pg_snapshot_xmin`), so no row can commit
//! behind one already numbered. Readers only ever see numbered rows.
//!
//! SQLite is unchanged: its one writer connection commits in `seq` order.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&[&str]] = &[&[
    "ALTER TABLE change_log ADD COLUMN id BIGSERIAL",
    "ALTER TABLE change_log ADD COLUMN txid BIGINT \
     DEFAULT (pg_current_xact_id()::text::bigint)",
    "ALTER TABLE change_log DROP CONSTRAINT change_log_pkey",
    "ALTER TABLE change_log ADD PRIMARY KEY (id)",
    "ALTER TABLE change_log ALTER COLUMN seq DROP DEFAULT",
    "ALTER TABLE change_log ALTER COLUMN seq DROP NOT NULL",
    "DROP SEQUENCE IF EXISTS change_log_seq_seq",
    "CREATE UNIQUE INDEX change_log_seq_key ON change_log (seq)",
    "CREATE INDEX change_log_unsequenced ON change_log (txid, id) WHERE seq IS NULL",
]];

/// Gives the rows still unnumbered numbers after the highest, in the
/// sequencer's order, as it would have given them.
pub(crate) const NUMBER_WAITING_ROWS: &str = "UPDATE change_log c SET seq = s.n FROM (\
       SELECT id, (SELECT COALESCE(MAX(seq), 0) FROM change_log) \
         + row_number() OVER (ORDER BY txid, id) AS n \
       FROM change_log WHERE seq IS NULL) s \
     WHERE c.id = s.id";

/// Once every row is numbered: drops the row id, the transaction id and
/// their indexes, and makes `seq` the key again.
pub(crate) const SEQ_AS_KEY: &[&str] = &[
    "DROP INDEX change_log_unsequenced",
    "DROP INDEX change_log_seq_key",
    "ALTER TABLE change_log DROP CONSTRAINT change_log_pkey",
    "ALTER TABLE change_log DROP COLUMN id",
    "ALTER TABLE change_log DROP COLUMN txid",
    "ALTER TABLE change_log ALTER COLUMN seq SET NOT NULL",
    "ALTER TABLE change_log ADD PRIMARY KEY (seq)",
];

/// Numbers whatever is still unnumbered, then restores the `bigserial`
/// key.
const DOWN: &[&[&str]] = &[
    &[NUMBER_WAITING_ROWS],
    SEQ_AS_KEY,
    &[
        "CREATE SEQUENCE change_log_seq_seq OWNED BY change_log.seq",
        "SELECT setval('change_log_seq_seq', (SELECT COALESCE(MAX(seq), 0) + 1 FROM change_log), false)",
        "ALTER TABLE change_log ALTER COLUMN seq SET DEFAULT nextval('change_log_seq_seq')",
    ],
];

postgres_only!();
