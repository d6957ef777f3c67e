//! Hook identities: name, immutable contract (JSON), live release version.
//!
//! The live pointer `(name, live_version)` references `hook_releases`; that
//! foreign key is added by the `hook_releases` migration on Postgres (the
//! table does not exist yet here). SQLite cannot add a constraint to an
//! existing table, and accepts a reference to a table created later, so on
//! SQLite this migration declares it inline.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Hooks {
    Table,
    Name,
    Contract,
    LiveVersion,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Sqlite {
            return manager
                .get_connection()
                .execute_unprepared(
                    "CREATE TABLE hooks (\
                       name text NOT NULL PRIMARY KEY, \
                       contract jsonb_text NOT NULL, \
                       live_version integer, \
                       created_at bigint NOT NULL, \
                       CONSTRAINT hooks_live_release FOREIGN KEY (name, live_version) \
                         REFERENCES hook_releases (hook, version) DEFERRABLE INITIALLY DEFERRED)",
                )
                .await
                .map(|_| ());
        }
        manager
            .create_table(
                Table::create()
                    .table(Hooks::Table)
                    .col(ColumnDef::new(Hooks::Name).text().not_null().primary_key())
                    .col(ColumnDef::new(Hooks::Contract).json_binary().not_null())
                    .col(ColumnDef::new(Hooks::LiveVersion).integer())
                    .col(ColumnDef::new(Hooks::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Hooks::Table).to_owned())
            .await
    }
}
