//! Postgres change-log rows get their `seq` when they are inserted, from
//! their transaction's id, and are never updated again.
//!
//! Before: a row was inserted with `seq` NULL and numbered after its commit
//! by the adapter's sequencer, an `UPDATE` that wrote every row a second
//! time (the row and an entry in each of its indexes, never a HOT update,
//! since `seq` is indexed) and left a dead tuple behind for vacuum. Now a
//! row's `seq` is `txid * 2^20 + n`, `n` its place among its
//! transaction's rows: numbers ascend in `(txid, n)` order, the order the
//! sequencer gave, with gaps between transactions. Readers see a row once
//! every transaction with a lower id has ended (`seq` below the current
//! snapshot's `xmin * 2^20`), so no row can appear behind one already read
//! (the adapter's `feed` module).
//!
//! Up: rows still unnumbered get numbers after the highest, in the
//! sequencer's order, as it would have given them; the row id, the
//! transaction id and their indexes go, and `seq` becomes the key. Numbers
//! already given are kept, so a client's cursor stays valid; every number
//! given from now on is higher (a transaction id times 2^20 is far above
//! any count of rows so far: the migration checks it).
//!
//! SQLite is unchanged: its one writer connection commits in `seq` order.

use crate::m20250101_000014_change_log_sequencing::{NUMBER_WAITING_ROWS, SEQ_AS_KEY};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Refuses to run if a number given so far is not below every number the
/// adapter gives from now on (a transaction id times 2^20).
const CHECK_NUMBERS_BELOW_TXIDS: &str = "DO $$ BEGIN \
       IF (SELECT COALESCE(MAX(seq), 0) FROM change_log) \
          >= (pg_current_xact_id()::text::bigint << 20) THEN \
         RAISE EXCEPTION 'change_log: seq % is not below this transaction''s first number', \
           (SELECT MAX(seq) FROM change_log); \
       END IF; \
     END $$";

const UP: &[&[&str]] = &[
    &[NUMBER_WAITING_ROWS, CHECK_NUMBERS_BELOW_TXIDS],
    SEQ_AS_KEY,
];

/// Back to rows numbered after commit: the numbers stay, each row gets an
/// id in `seq` order and the transaction id its number came from.
const DOWN: &[&[&str]] = &[&[
    "ALTER TABLE change_log DROP CONSTRAINT change_log_pkey",
    "ALTER TABLE change_log ALTER COLUMN seq DROP NOT NULL",
    "ALTER TABLE change_log ADD COLUMN txid BIGINT",
    "UPDATE change_log SET txid = seq >> 20",
    "ALTER TABLE change_log ALTER COLUMN txid \
     SET DEFAULT (pg_current_xact_id()::text::bigint)",
    "ALTER TABLE change_log ADD COLUMN id BIGINT",
    "CREATE SEQUENCE change_log_id_seq OWNED BY change_log.id",
    "UPDATE change_log c SET id = s.n FROM (\
       SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM change_log) s \
     WHERE c.seq = s.seq",
    "SELECT setval('change_log_id_seq', (SELECT COALESCE(MAX(id), 0) + 1 FROM change_log), false)",
    "ALTER TABLE change_log ALTER COLUMN id SET DEFAULT nextval('change_log_id_seq')",
    "ALTER TABLE change_log ALTER COLUMN id SET NOT NULL",
    "ALTER TABLE change_log ADD PRIMARY KEY (id)",
    "CREATE UNIQUE INDEX change_log_seq_key ON change_log (seq)",
    "CREATE INDEX change_log_unsequenced ON change_log (txid, id) WHERE seq IS NULL",
]];

postgres_only!();
