//! Shared migration: creates the untenanted `plans` table (master only) and
//! seeds it with the `free`, `pro` and `enterprise` plans.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates and seeds the `plans` table.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

/// Seed rows: `(id, code, name, price_cents)`.
const PLANS: [(i32, &str, &str, i64); 3] =
    [(1, "free", "Free", 0), (2, "pro", "Pro", 1_900), (3, "enterprise", "Enterprise", 9_900)];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Plans::Table)
                    .if_not_exists()
                    .col(integer(Plans::Id).primary_key())
                    .col(string_uniq(Plans::Code))
                    .col(string(Plans::Name))
                    .col(big_integer(Plans::PriceCents))
                    .to_owned(),
            )
            .await?;

        let mut insert = Query::insert();
        insert.into_table(Plans::Table).columns([Plans::Id, Plans::Code, Plans::Name, Plans::PriceCents]);
        for (id, code, name, price_cents) in PLANS {
            insert
                .values([id.into(), code.into(), name.into(), price_cents.into()])
                .map_err(|err| DbErr::Migration(format!("invalid plan seed row: {err}")))?;
        }
        manager.execute(insert).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Plans::Table).if_exists().to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Plans {
    Table,
    Id,
    Code,
    Name,
    PriceCents,
}
