//! Rejected messages, kept for operators until requeued or purged.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    Topic,
    PartitionKey,
    MessageId,
    Payload,
    Attempts,
    LastError,
    PublishedAt,
    DeadAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeadLetters::Table)
                    .col(
                        ColumnDef::new(DeadLetters::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(DeadLetters::Topic).text().not_null())
                    .col(ColumnDef::new(DeadLetters::PartitionKey).text().not_null())
                    .col(ColumnDef::new(DeadLetters::MessageId).text().not_null())
                    .col(
                        ColumnDef::new(DeadLetters::Payload)
                            .json_binary()
                            .not_null(),
                    )
                    .col(ColumnDef::new(DeadLetters::Attempts).integer().not_null())
                    .col(ColumnDef::new(DeadLetters::LastError).text().not_null())
                    .col(
                        ColumnDef::new(DeadLetters::PublishedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(DeadLetters::DeadAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("dead_letters_topic")
                    .table(DeadLetters::Table)
                    .col(DeadLetters::Topic)
                    .col(DeadLetters::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeadLetters::Table).to_owned())
            .await
    }
}
