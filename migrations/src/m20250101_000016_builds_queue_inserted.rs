//! A build's insert numbers it `MAX(inserted) + 1` within its queue: an
//! index on `(queue, inserted)` reads that maximum from the index's last
//! entry instead of every build the queue ever had (without it each new
//! build costs a read of the queue's whole build history).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Builds {
    Table,
    Queue,
    Inserted,
}

const INDEX: &str = "builds_queue_inserted";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Builds::Table)
                    .col(Builds::Queue)
                    .col(Builds::Inserted)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Builds::Table).to_owned())
            .await
    }
}
