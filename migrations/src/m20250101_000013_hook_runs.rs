//! Hook runs: provenance of delivering one event to one hook, keyed by the
//! deterministic run id. `recorded` orders runs started at the same instant.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum HookRuns {
    Table,
    Id,
    Hook,
    ReleaseVersion,
    EventId,
    Status,
    Attempts,
    LastHttpStatus,
    StartedAt,
    FinishedAt,
    Recorded,
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
                    .table(HookRuns::Table)
                    .col(ColumnDef::new(HookRuns::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(HookRuns::Hook).text().not_null())
                    .col(
                        ColumnDef::new(HookRuns::ReleaseVersion)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(HookRuns::EventId).text().not_null())
                    .col(ColumnDef::new(HookRuns::Status).text().not_null())
                    .col(ColumnDef::new(HookRuns::Attempts).integer().not_null())
                    .col(ColumnDef::new(HookRuns::LastHttpStatus).integer())
                    .col(ColumnDef::new(HookRuns::StartedAt).big_integer().not_null())
                    .col(
                        ColumnDef::new(HookRuns::FinishedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(HookRuns::Recorded).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("hook_runs_hook")
                            .from(HookRuns::Table, HookRuns::Hook)
                            .to(Hooks::Table, Hooks::Name)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("hook_runs_hook_started")
                    .table(HookRuns::Table)
                    .col(HookRuns::Hook)
                    .col(HookRuns::StartedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HookRuns::Table).to_owned())
            .await
    }
}
