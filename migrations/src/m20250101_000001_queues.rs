//! The queue row: latest pointer, build slots and last-green bookmarks.
//! The whole-repository bookmark has columns of its own (the API reads it
//! on every greenness query); slots and per-project bookmarks are JSON.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Queues {
    Table,
    Name,
    LastGreenUri,
    LastGreenRequestId,
    LastGreenRecordedAt,
    InFlight,
    ProjectLastGreen,
    LatestRequestId,
    CreatedAt,
    UpdatedAt,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Queues::Table)
                    .col(ColumnDef::new(Queues::Name).text().not_null().primary_key())
                    .col(ColumnDef::new(Queues::LastGreenUri).text())
                    .col(ColumnDef::new(Queues::LastGreenRequestId).text())
                    .col(ColumnDef::new(Queues::LastGreenRecordedAt).big_integer())
                    .col(ColumnDef::new(Queues::InFlight).json_binary().not_null())
                    .col(
                        ColumnDef::new(Queues::ProjectLastGreen)
                            .json_binary()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Queues::LatestRequestId).text())
                    .col(ColumnDef::new(Queues::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Queues::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Queues::Version).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Queues::Table).to_owned())
            .await
    }
}
