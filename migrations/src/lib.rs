//! Stovepipe's SQL schema, for Postgres and SQLite, as sea-orm migrations.
//!
//! Owns: every table, key and index of the SQL adapter, one migration per
//! file, applied in file-name order by [`Migrator`]. Does not own: any query
//! (the `stovepipe-adapter-sql` crate is the only code that reads or writes
//! these tables).
//!
//! Layout rules:
//! - every primary key leads with the `queue` column where the table has
//!   one, so the data can be sharded by queue;
//! - instants are `BIGINT` milliseconds since the Unix epoch (the adapter's
//!   injected clock hands them out), never database `now()`;
//! - structured values (slots, bookmarks, metadata, configuration, payloads)
//!   are JSON (`jsonb` on Postgres, text on SQLite);
//! - the message queue and the dead letters use an auto-incremented
//!   `BIGINT` key (`bigserial` on Postgres) for order; so does the change
//!   log on SQLite, while on Postgres its `seq` comes from the writing
//!   transaction's id (`m20250101_000018_change_log_numbered_at_insert`).

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// The `MigrationTrait` of a migration that runs its `UP` and `DOWN`
/// statements on Postgres only ([`on_postgres`]).
macro_rules! postgres_only {
    () => {
        #[async_trait::async_trait]
        impl MigrationTrait for Migration {
            async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                crate::on_postgres(manager, UP).await
            }

            async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                crate::on_postgres(manager, DOWN).await
            }
        }
    };
}

mod m20250101_000001_queues;
mod m20250101_000002_requests;
mod m20250101_000003_request_uris;
mod m20250101_000004_counters;
mod m20250101_000005_builds;
mod m20250101_000006_facts;
mod m20250101_000007_queue_configs;
mod m20250101_000008_messages;
mod m20250101_000009_dead_letters;
mod m20250101_000010_change_log;
mod m20250101_000011_hooks;
mod m20250101_000012_hook_releases;
mod m20250101_000013_hook_runs;
mod m20250101_000014_change_log_sequencing;
mod m20250101_000015_messages_topic_order;
mod m20250101_000016_builds_queue_inserted;
mod m20250101_000017_hook_runs_hook_recorded;
mod m20250101_000018_change_log_numbered_at_insert;
mod m20250101_000019_messages_fillfactor;

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_queues::Migration),
            Box::new(m20250101_000002_requests::Migration),
            Box::new(m20250101_000003_request_uris::Migration),
            Box::new(m20250101_000004_counters::Migration),
            Box::new(m20250101_000005_builds::Migration),
            Box::new(m20250101_000006_facts::Migration),
            Box::new(m20250101_000007_queue_configs::Migration),
            Box::new(m20250101_000008_messages::Migration),
            Box::new(m20250101_000009_dead_letters::Migration),
            Box::new(m20250101_000010_change_log::Migration),
            Box::new(m20250101_000011_hooks::Migration),
            Box::new(m20250101_000012_hook_releases::Migration),
            Box::new(m20250101_000013_hook_runs::Migration),
            Box::new(m20250101_000014_change_log_sequencing::Migration),
            Box::new(m20250101_000015_messages_topic_order::Migration),
            Box::new(m20250101_000016_builds_queue_inserted::Migration),
            Box::new(m20250101_000017_hook_runs_hook_recorded::Migration),
            Box::new(m20250101_000018_change_log_numbered_at_insert::Migration),
            Box::new(m20250101_000019_messages_fillfactor::Migration),
        ]
    }
}

/// Runs `statements` (in groups) in order on Postgres; nothing on SQLite
/// (for the migrations that change only how Postgres numbers the change
/// log).
async fn on_postgres(manager: &SchemaManager<'_>, statements: &[&[&str]]) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for sql in statements.iter().flat_map(|group| group.iter()) {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}
