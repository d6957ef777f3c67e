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
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
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
];

/// Numbers whatever is still unnumbered (in the sequencer's order), then
/// restores the `bigserial` key.
const DOWN: &[&str] = &[
    "UPDATE change_log c SET seq = s.n FROM (\
       SELECT id, (SELECT COALESCE(MAX(seq), 0) FROM change_log) \
         + row_number() OVER (ORDER BY txid, id) AS n \
       FROM change_log WHERE seq IS NULL) s \
     WHERE c.id = s.id",
    "DROP INDEX change_log_unsequenced",
    "DROP INDEX change_log_seq_key",
    "ALTER TABLE change_log DROP CONSTRAINT change_log_pkey",
    "ALTER TABLE change_log DROP COLUMN id",
    "ALTER TABLE change_log DROP COLUMN txid",
    "ALTER TABLE change_log ALTER COLUMN seq SET NOT NULL",
    "ALTER TABLE change_log ADD PRIMARY KEY (seq)",
    "CREATE SEQUENCE change_log_seq_seq OWNED BY change_log.seq",
    "SELECT setval('change_log_seq_seq', (SELECT COALESCE(MAX(seq), 0) + 1 FROM change_log), false)",
    "ALTER TABLE change_log ALTER COLUMN seq SET DEFAULT nextval('change_log_seq_seq')",
];

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, DOWN).await
    }
}
