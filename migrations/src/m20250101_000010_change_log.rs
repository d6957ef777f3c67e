//! The append-only change log; `seq` is its order (strictly increasing in
//! commit order; on Postgres `m20250101_000014_change_log_sequencing`
//! changes how it is given, see the adapter's `feed` module).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ChangeLog {
    Table,
    Seq,
    Queue,
    Kind,
    Subject,
    Data,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChangeLog::Table)
                    .col(
                        ColumnDef::new(ChangeLog::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ChangeLog::Queue).text())
                    .col(ColumnDef::new(ChangeLog::Kind).text().not_null())
                    .col(ColumnDef::new(ChangeLog::Subject).text().not_null())
                    .col(ColumnDef::new(ChangeLog::Data).json_binary().not_null())
                    .col(
                        ColumnDef::new(ChangeLog::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeLog::Table).to_owned())
            .await
    }
}
