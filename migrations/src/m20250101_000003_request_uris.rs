//! The `(queue, uri) → request id` dedup index of ingest.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RequestUris {
    Table,
    Queue,
    Uri,
    RequestId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RequestUris::Table)
                    .col(ColumnDef::new(RequestUris::Queue).text().not_null())
                    .col(ColumnDef::new(RequestUris::Uri).text().not_null())
                    .col(ColumnDef::new(RequestUris::RequestId).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(RequestUris::Queue)
                            .col(RequestUris::Uri),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RequestUris::Table).to_owned())
            .await
    }
}
