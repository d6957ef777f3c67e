//! Facts: create-only, keyed by `(queue, uri, project)`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Facts {
    Table,
    Queue,
    Uri,
    Project,
    Degree,
    RequestId,
    BuildId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Facts::Table)
                    .col(ColumnDef::new(Facts::Queue).text().not_null())
                    .col(ColumnDef::new(Facts::Uri).text().not_null())
                    .col(ColumnDef::new(Facts::Project).text().not_null())
                    .col(ColumnDef::new(Facts::Degree).double().not_null())
                    .col(ColumnDef::new(Facts::RequestId).text().not_null())
                    .col(ColumnDef::new(Facts::BuildId).text())
                    .col(ColumnDef::new(Facts::CreatedAt).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(Facts::Queue)
                            .col(Facts::Uri)
                            .col(Facts::Project),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("facts_queue_request")
                    .table(Facts::Table)
                    .col(Facts::Queue)
                    .col(Facts::RequestId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Facts::Table).to_owned())
            .await
    }
}
