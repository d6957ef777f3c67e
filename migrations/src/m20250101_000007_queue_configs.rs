//! Operator configuration of queues, one JSON document per queue (upsert
//! replaces it whole).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum QueueConfigs {
    Table,
    Name,
    Config,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QueueConfigs::Table)
                    .col(
                        ColumnDef::new(QueueConfigs::Name)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(QueueConfigs::Config)
                            .json_binary()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(QueueConfigs::Table).to_owned())
            .await
    }
}
