//! Immutable, integer-versioned hook releases: `(hook, version)` with no
//! gaps, one release per digest (`UNIQUE (hook, digest)`).
//!
//! On Postgres this also adds the hooks' live-release foreign key,
//! `DEFERRABLE INITIALLY DEFERRED` so a transaction may insert a release and
//! move the pointer in either order.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum HookReleases {
    Table,
    Hook,
    Version,
    Spec,
    Digest,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Hooks {
    Table,
    Name,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(HookReleases::Table)
                    .col(ColumnDef::new(HookReleases::Hook).text().not_null())
                    .col(ColumnDef::new(HookReleases::Version).integer().not_null())
                    .col(ColumnDef::new(HookReleases::Spec).json_binary().not_null())
                    .col(ColumnDef::new(HookReleases::Digest).text().not_null())
                    .col(ColumnDef::new(HookReleases::CreatedBy).text().not_null())
                    .col(
                        ColumnDef::new(HookReleases::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(HookReleases::Hook)
                            .col(HookReleases::Version),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("hook_releases_hook")
                            .from(HookReleases::Table, HookReleases::Hook)
                            .to(Hooks::Table, Hooks::Name)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("hook_releases_digest")
                    .table(HookReleases::Table)
                    .col(HookReleases::Hook)
                    .col(HookReleases::Digest)
                    .unique()
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE hooks ADD CONSTRAINT hooks_live_release \
                     FOREIGN KEY (name, live_version) REFERENCES hook_releases (hook, version) \
                     DEFERRABLE INITIALLY DEFERRED",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("ALTER TABLE hooks DROP CONSTRAINT hooks_live_release")
                .await?;
        }
        manager
            .drop_table(Table::drop().table(HookReleases::Table).to_owned())
            .await
    }
}
