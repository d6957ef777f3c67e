//! The message queue: pending messages (acked ones are deleted). `id` is the
//! publish order; a partition's head is its lowest id. `attempt` is the
//! attempt number of the next delivery; a lease is `lease_owner` (the
//! delivery id) until `lease_expires`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    Topic,
    PartitionKey,
    MessageId,
    Payload,
    Attempt,
    LastError,
    VisibleAt,
    LeaseOwner,
    LeaseExpires,
    PublishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .col(
                        ColumnDef::new(Messages::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Messages::Topic).text().not_null())
                    .col(ColumnDef::new(Messages::PartitionKey).text().not_null())
                    .col(ColumnDef::new(Messages::MessageId).text().not_null())
                    .col(ColumnDef::new(Messages::Payload).json_binary().not_null())
                    .col(ColumnDef::new(Messages::Attempt).integer().not_null())
                    .col(ColumnDef::new(Messages::LastError).text())
                    .col(ColumnDef::new(Messages::VisibleAt).big_integer().not_null())
                    .col(ColumnDef::new(Messages::LeaseOwner).text())
                    .col(ColumnDef::new(Messages::LeaseExpires).big_integer())
                    .col(
                        ColumnDef::new(Messages::PublishedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Dedup key; also finds a partition's messages in publish order.
        manager
            .create_index(
                Index::create()
                    .name("messages_dedup")
                    .table(Messages::Table)
                    .col(Messages::Topic)
                    .col(Messages::PartitionKey)
                    .col(Messages::MessageId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("messages_partition_order")
                    .table(Messages::Table)
                    .col(Messages::Topic)
                    .col(Messages::PartitionKey)
                    .col(Messages::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Messages::Table).to_owned())
            .await
    }
}
