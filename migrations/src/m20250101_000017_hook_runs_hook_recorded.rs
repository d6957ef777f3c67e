//! A hook run's insert numbers it `MAX(recorded) + 1` within its hook: an
//! index on `(hook, recorded)` reads that maximum from the index's last
//! entry instead of every run the hook ever had.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum HookRuns {
    Table,
    Hook,
    Recorded,
}

const INDEX: &str = "hook_runs_hook_recorded";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(HookRuns::Table)
                    .col(HookRuns::Hook)
                    .col(HookRuns::Recorded)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(HookRuns::Table).to_owned())
            .await
    }
}
