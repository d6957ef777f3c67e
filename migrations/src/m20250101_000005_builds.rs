//! Builds, keyed by `(queue, build_id)`. `inserted` is a per-queue insertion
//! number that orders builds created at the same instant (oldest first).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Builds {
    Table,
    Queue,
    BuildId,
    RequestNumber,
    RequestId,
    Project,
    Status,
    Url,
    Metadata,
    Targets,
    Reason,
    CreatedAt,
    UpdatedAt,
    Version,
    Inserted,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Builds::Table)
                    .col(ColumnDef::new(Builds::Queue).text().not_null())
                    .col(ColumnDef::new(Builds::BuildId).text().not_null())
                    .col(
                        ColumnDef::new(Builds::RequestNumber)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Builds::RequestId).text().not_null())
                    .col(ColumnDef::new(Builds::Project).text().not_null())
                    .col(ColumnDef::new(Builds::Status).text().not_null())
                    .col(ColumnDef::new(Builds::Url).text())
                    .col(ColumnDef::new(Builds::Metadata).json_binary().not_null())
                    .col(ColumnDef::new(Builds::Targets).json_binary().not_null())
                    .col(ColumnDef::new(Builds::Reason).text())
                    .col(ColumnDef::new(Builds::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Builds::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Builds::Version).big_integer().not_null())
                    .col(ColumnDef::new(Builds::Inserted).big_integer().not_null())
                    .primary_key(Index::create().col(Builds::Queue).col(Builds::BuildId))
                    .to_owned(),
            )
            .await?;
        // Builds of a request (the build stage's redelivery check).
        manager
            .create_index(
                Index::create()
                    .name("builds_queue_request")
                    .table(Builds::Table)
                    .col(Builds::Queue)
                    .col(Builds::RequestNumber)
                    .to_owned(),
            )
            .await?;
        // ReadModel::find_build looks a build up by id across queues.
        manager
            .create_index(
                Index::create()
                    .name("builds_build_id")
                    .table(Builds::Table)
                    .col(Builds::BuildId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Builds::Table).to_owned())
            .await
    }
}
