//! Requests, keyed by `(queue, number)`: the number orders them (request 10
//! is newer than 9), the id text is kept for joins and display.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Requests {
    Table,
    Queue,
    Number,
    Id,
    Uri,
    State,
    Strategy,
    BaseUri,
    Origin,
    FailedClosed,
    FailureReason,
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
                    .table(Requests::Table)
                    .col(ColumnDef::new(Requests::Queue).text().not_null())
                    .col(ColumnDef::new(Requests::Number).big_integer().not_null())
                    .col(ColumnDef::new(Requests::Id).text().not_null())
                    .col(ColumnDef::new(Requests::Uri).text().not_null())
                    .col(ColumnDef::new(Requests::State).text().not_null())
                    .col(ColumnDef::new(Requests::Strategy).text())
                    .col(ColumnDef::new(Requests::BaseUri).text())
                    .col(ColumnDef::new(Requests::Origin).text().not_null())
                    .col(ColumnDef::new(Requests::FailedClosed).boolean().not_null())
                    .col(ColumnDef::new(Requests::FailureReason).text())
                    .col(ColumnDef::new(Requests::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Requests::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Requests::Version).big_integer().not_null())
                    .primary_key(Index::create().col(Requests::Queue).col(Requests::Number))
                    .to_owned(),
            )
            .await?;
        // requests_for_uris and the timeline join look requests up by URI.
        manager
            .create_index(
                Index::create()
                    .name("requests_queue_uri")
                    .table(Requests::Table)
                    .col(Requests::Queue)
                    .col(Requests::Uri)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Requests::Table).to_owned())
            .await
    }
}
