//! The framework's own migrations of the master database: the registry table, the fleet
//! migration ledger, the operations journal, the custom domains, and the triggers that announce registry changes to the live registry
//! ([`super::live`]).

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

use super::live::{REGISTRY_CHANGES_TABLE, REGISTRY_CHANNEL};
use super::{REGISTRY_TABLE, entity};

/// The table that records which of the framework's own master-database migrations ran.
///
/// It is not `seaql_migrations`, which belongs to the application's migrator: in table
/// isolation the application migrates the same master database.
pub const FRAMEWORK_MIGRATIONS_TABLE: &str = "tenancy_migrations";

/// The framework's migrations of the master database.
///
/// [`crate::Tenancy::connect`] applies them, so applications never create the registry
/// by hand. They are recorded in [`FRAMEWORK_MIGRATIONS_TABLE`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryMigrator;

impl MigratorTrait for RegistryMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateTenantsTable),
            Box::new(CreateMigrationLedger),
            Box::new(AddTenantSuspension),
            Box::new(CreateOperationsJournal),
            Box::new(AnnounceRegistryChanges),
            Box::new(CreateLeftovers),
            Box::new(AddLedgerRenamedFrom),
            Box::new(CreateServers),
            Box::new(AddLedgerServer),
            Box::new(CreateDomains),
        ]
    }

    fn migration_table_name() -> DynIden {
        FRAMEWORK_MIGRATIONS_TABLE.into_iden()
    }
}

struct CreateTenantsTable;

impl MigrationName for CreateTenantsTable {
    fn name(&self) -> &str {
        "m20260101_000001_create_tenancy_tenants"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateTenantsTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use entity::Column;
        manager
            .create_table(
                Table::create()
                    .table(REGISTRY_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(Column::TenantId).string().not_null().primary_key())
                    .col(ColumnDef::new(Column::Name).string().not_null())
                    .col(ColumnDef::new(Column::IsolationType).string().not_null())
                    .col(ColumnDef::new(Column::Config).json_binary().not_null())
                    .col(ColumnDef::new(Column::Status).string().not_null())
                    .col(ColumnDef::new(Column::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Column::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(REGISTRY_TABLE).to_owned()).await
    }
}

/// The fleet migration ledger ([`crate::ledger`]).
struct CreateMigrationLedger;

impl MigrationName for CreateMigrationLedger {
    fn name(&self) -> &str {
        "m20260101_000002_create_tenancy_migration_ledger"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateMigrationLedger {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::ledger::{entries, runs};
        manager
            .create_table(
                Table::create()
                    .table(super::ledger::RUNS_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(runs::Column::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(runs::Column::StartedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(runs::Column::FinishedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(runs::Column::Status).string().not_null())
                    .col(ColumnDef::new(runs::Column::Options).json_binary().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(super::ledger::LEDGER_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(entries::Column::RunId).big_integer().not_null())
                    .col(ColumnDef::new(entries::Column::TenantId).string().not_null())
                    .col(ColumnDef::new(entries::Column::Outcome).string().not_null())
                    .col(ColumnDef::new(entries::Column::Migrations).json_binary().not_null())
                    .col(ColumnDef::new(entries::Column::Detail).text().null())
                    .col(ColumnDef::new(entries::Column::DurationMs).big_integer().not_null())
                    .col(ColumnDef::new(entries::Column::UpdatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(entries::Column::RunId).col(entries::Column::TenantId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(super::ledger::LEDGER_TABLE).to_owned()).await?;
        manager.drop_table(Table::drop().table(super::ledger::RUNS_TABLE).to_owned()).await
    }
}

/// Suspension: why and since when a tenant is suspended. One column per statement, since
/// SQLite alters a table one change at a time.
struct AddTenantSuspension;

impl MigrationName for AddTenantSuspension {
    fn name(&self) -> &str {
        "m20261129_000003_add_tenant_suspension"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for AddTenantSuspension {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use entity::Column;
        let table = || Table::alter().table(REGISTRY_TABLE).to_owned();
        // SQLite runs the two statements outside a transaction: a process killed between
        // them leaves the first column without the migration's record, so each column is
        // added only when missing and a re-run finishes the migration.
        if !manager.has_column(REGISTRY_TABLE, "suspended_reason").await? {
            manager
                .alter_table(table().add_column(ColumnDef::new(Column::SuspendedReason).text().null()).to_owned())
                .await?;
        }
        if !manager.has_column(REGISTRY_TABLE, "suspended_at").await? {
            manager
                .alter_table(
                    table()
                        .add_column(ColumnDef::new(Column::SuspendedAt).timestamp_with_time_zone().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use entity::Column;
        let table = || Table::alter().table(REGISTRY_TABLE).to_owned();
        manager.alter_table(table().drop_column(Column::SuspendedAt).to_owned()).await?;
        manager.alter_table(table().drop_column(Column::SuspendedReason).to_owned()).await
    }
}

/// The operations journal ([`crate::operations`]).
struct CreateOperationsJournal;

impl MigrationName for CreateOperationsJournal {
    fn name(&self) -> &str {
        "m20261130_000004_create_tenancy_operations"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateOperationsJournal {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use crate::operations::{OPERATIONS_TABLE, OperationColumn as Column};
        manager
            .create_table(
                Table::create()
                    .table(OPERATIONS_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(Column::TenantId).string().not_null().primary_key())
                    .col(ColumnDef::new(Column::Kind).string().not_null())
                    .col(ColumnDef::new(Column::Params).json_binary().not_null())
                    .col(ColumnDef::new(Column::Step).text().null())
                    .col(ColumnDef::new(Column::Undo).json_binary().not_null())
                    .col(ColumnDef::new(Column::Worker).string().not_null())
                    .col(ColumnDef::new(Column::StartedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Column::HeartbeatAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(crate::operations::OPERATIONS_TABLE).to_owned()).await
    }
}

/// Every change of a registry row is announced by the database itself, in the changing
/// transaction, so no lifecycle operation (nor a hand-written `UPDATE`) can forget to:
///
/// - PostgreSQL: a row trigger sends `NOTIFY tenancy_registry, '<tenant id>'` (both ids when
///   an update changes the id), a `TRUNCATE` trigger an empty payload ("re-read
///   everything"). PostgreSQL delivers notifications when the transaction commits, and not
///   at all when it rolls back.
/// - SQLite, which has no notifications: row triggers bump the one-row generation counter
///   `tenancy_registry_changes`, which running processes poll.
///
/// Every statement is idempotent (SQLite runs them outside a transaction, so a process
/// killed half-way leaves the rest to the next connect).
struct AnnounceRegistryChanges;

impl MigrationName for AnnounceRegistryChanges {
    fn name(&self) -> &str {
        "m20261206_000005_announce_registry_changes"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for AnnounceRegistryChanges {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let statements = match manager.get_database_backend() {
            DbBackend::Postgres => vec![
                // language=PostgreSQL
                format!(
                    "CREATE OR REPLACE FUNCTION tenancy_registry_announce() RETURNS trigger LANGUAGE plpgsql AS $announce$
                     BEGIN
                       IF TG_OP = 'TRUNCATE' THEN
                         PERFORM pg_notify('{REGISTRY_CHANNEL}', '');
                       ELSIF TG_OP = 'DELETE' THEN
                         PERFORM pg_notify('{REGISTRY_CHANNEL}', OLD.tenant_id);
                       ELSE
                         PERFORM pg_notify('{REGISTRY_CHANNEL}', NEW.tenant_id);
                         IF TG_OP = 'UPDATE' AND OLD.tenant_id <> NEW.tenant_id THEN
                           PERFORM pg_notify('{REGISTRY_CHANNEL}', OLD.tenant_id);
                         END IF;
                       END IF;
                       RETURN NULL;
                     END $announce$"
                ),
                format!("DROP TRIGGER IF EXISTS tenancy_registry_announce ON {REGISTRY_TABLE}"),
                format!(
                    "CREATE TRIGGER tenancy_registry_announce AFTER INSERT OR UPDATE OR DELETE ON {REGISTRY_TABLE} \
                     FOR EACH ROW EXECUTE FUNCTION tenancy_registry_announce()"
                ),
                format!("DROP TRIGGER IF EXISTS tenancy_registry_announce_truncate ON {REGISTRY_TABLE}"),
                format!(
                    "CREATE TRIGGER tenancy_registry_announce_truncate AFTER TRUNCATE ON {REGISTRY_TABLE} \
                     FOR EACH STATEMENT EXECUTE FUNCTION tenancy_registry_announce()"
                ),
            ],
            _ => {
                let mut statements = vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {REGISTRY_CHANGES_TABLE} \
                         (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL)"
                    ),
                    format!("INSERT OR IGNORE INTO {REGISTRY_CHANGES_TABLE} (id, generation) VALUES (1, 0)"),
                ];
                for event in ["insert", "update", "delete"] {
                    statements.push(format!(
                        "CREATE TRIGGER IF NOT EXISTS tenancy_registry_changed_{event} AFTER {} ON {REGISTRY_TABLE} \
                         BEGIN UPDATE {REGISTRY_CHANGES_TABLE} SET generation = generation + 1 WHERE id = 1; END",
                        event.to_uppercase()
                    ));
                }
                statements
            }
        };
        for statement in statements {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let statements = match manager.get_database_backend() {
            DbBackend::Postgres => vec![
                format!("DROP TRIGGER IF EXISTS tenancy_registry_announce_truncate ON {REGISTRY_TABLE}"),
                format!("DROP TRIGGER IF EXISTS tenancy_registry_announce ON {REGISTRY_TABLE}"),
                "DROP FUNCTION IF EXISTS tenancy_registry_announce()".to_owned(),
            ],
            _ => vec![
                "DROP TRIGGER IF EXISTS tenancy_registry_changed_insert".to_owned(),
                "DROP TRIGGER IF EXISTS tenancy_registry_changed_update".to_owned(),
                "DROP TRIGGER IF EXISTS tenancy_registry_changed_delete".to_owned(),
                format!("DROP TABLE IF EXISTS {REGISTRY_CHANGES_TABLE}"),
            ],
        };
        for statement in statements {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }
}

/// Storage a move left behind ([`crate::relocation::Leftover`]): kept until
/// `deletetenant --leftovers` removes it.
struct CreateLeftovers;

impl MigrationName for CreateLeftovers {
    fn name(&self) -> &str {
        "m20261208_000007_create_tenancy_leftovers"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateLeftovers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use crate::relocation::leftovers::{LEFTOVERS_TABLE, LeftoverColumn as Column};
        manager
            .create_table(
                Table::create()
                    .table(LEFTOVERS_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(Column::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Column::TenantId).string().not_null())
                    .col(ColumnDef::new(Column::Object).json_binary().not_null())
                    .col(ColumnDef::new(Column::Reason).text().not_null())
                    .col(ColumnDef::new(Column::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(crate::relocation::leftovers::LEFTOVERS_TABLE).to_owned()).await
    }
}

/// The ledger remembers the id a tenant had when a run recorded it, once the tenant is
/// renamed (`renametenant` keeps the history under the new id).
struct AddLedgerRenamedFrom;

impl MigrationName for AddLedgerRenamedFrom {
    fn name(&self) -> &str {
        "m20261213_000008_add_ledger_renamed_from"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for AddLedgerRenamedFrom {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::ledger::{LEDGER_TABLE, entries::Column};
        // Only when missing: SQLite runs it outside a transaction.
        if !manager.has_column(LEDGER_TABLE, "renamed_from").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(LEDGER_TABLE)
                        .add_column(ColumnDef::new(Column::RenamedFrom).string().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::ledger::{LEDGER_TABLE, entries::Column};
        manager.alter_table(Table::alter().table(LEDGER_TABLE).drop_column(Column::RenamedFrom).to_owned()).await
    }
}

/// The servers tenants are placed on ([`crate::servers`]).
struct CreateServers;

impl MigrationName for CreateServers {
    fn name(&self) -> &str {
        "m20261220_000009_create_tenancy_servers"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateServers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use crate::servers::entity::{Column, SERVERS_TABLE};
        manager
            .create_table(
                Table::create()
                    .table(SERVERS_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(Column::Name).string().not_null().primary_key())
                    .col(ColumnDef::new(Column::Host).string().not_null())
                    .col(ColumnDef::new(Column::Port).integer().not_null())
                    .col(ColumnDef::new(Column::MaintenanceDb).string().not_null())
                    .col(ColumnDef::new(Column::AdminUser).string().null())
                    .col(ColumnDef::new(Column::AdminPassword).text().null())
                    .col(ColumnDef::new(Column::Weight).integer().not_null())
                    .col(ColumnDef::new(Column::State).string().not_null())
                    .col(ColumnDef::new(Column::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Column::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(crate::servers::entity::SERVERS_TABLE).to_owned()).await
    }
}

/// The ledger records the server each outcome happened on, so an operator sees which
/// server a failed or unattempted tenant waits for (`migratealltenants` groups tenants by
/// server).
struct AddLedgerServer;

impl MigrationName for AddLedgerServer {
    fn name(&self) -> &str {
        "m20261221_000010_ledger_server"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for AddLedgerServer {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::ledger::{LEDGER_TABLE, entries::Column};
        // Only when missing: SQLite runs it outside a transaction.
        if !manager.has_column(LEDGER_TABLE, "server").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(LEDGER_TABLE)
                        .add_column(ColumnDef::new(Column::Server).string().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::ledger::{LEDGER_TABLE, entries::Column};
        manager.alter_table(Table::alter().table(LEDGER_TABLE).drop_column(Column::Server).to_owned()).await
    }
}

/// Custom domains ([`crate::domains`]): the table, one primary domain per tenant, the
/// foreign key that removes (and renames) them with their tenant, and the triggers that
/// announce their changes to the live registry as changes of their tenant.
struct CreateDomains;

impl MigrationName for CreateDomains {
    fn name(&self) -> &str {
        "m20261230_000011_create_tenancy_domains"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateDomains {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use crate::domains::DOMAINS_TABLE;
        let db = manager.get_connection();
        // Plain SQL: sea-query writes no partial index for SQLite, and the foreign key's
        // cascades are the point.
        let mut statements = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {DOMAINS_TABLE} (\
                 domain VARCHAR(253) NOT NULL PRIMARY KEY, \
                 tenant_id VARCHAR(255) NOT NULL REFERENCES {REGISTRY_TABLE} (tenant_id) ON DELETE CASCADE ON UPDATE CASCADE, \
                 is_primary BOOLEAN NOT NULL DEFAULT FALSE, \
                 created_at {timestamp} NOT NULL)",
                timestamp = match manager.get_database_backend() {
                    DbBackend::Postgres => "TIMESTAMPTZ",
                    // What sea-query declares for a time zone aware timestamp on SQLite.
                    _ => "timestamp_with_timezone_text",
                }
            ),
            format!("CREATE INDEX IF NOT EXISTS {DOMAINS_TABLE}_tenant ON {DOMAINS_TABLE} (tenant_id)"),
            format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {DOMAINS_TABLE}_one_primary ON {DOMAINS_TABLE} (tenant_id) \
                 WHERE is_primary"
            ),
        ];
        match manager.get_database_backend() {
            // The registry's own announcement: it names the row's `tenant_id`, which a
            // domain's row has too (and, truncated, asks for a full re-read).
            DbBackend::Postgres => statements.extend([
                format!("DROP TRIGGER IF EXISTS tenancy_domains_announce ON {DOMAINS_TABLE}"),
                format!(
                    "CREATE TRIGGER tenancy_domains_announce AFTER INSERT OR UPDATE OR DELETE ON {DOMAINS_TABLE} \
                     FOR EACH ROW EXECUTE FUNCTION tenancy_registry_announce()"
                ),
                format!("DROP TRIGGER IF EXISTS tenancy_domains_announce_truncate ON {DOMAINS_TABLE}"),
                format!(
                    "CREATE TRIGGER tenancy_domains_announce_truncate AFTER TRUNCATE ON {DOMAINS_TABLE} \
                     FOR EACH STATEMENT EXECUTE FUNCTION tenancy_registry_announce()"
                ),
            ]),
            _ => {
                for event in ["insert", "update", "delete"] {
                    statements.push(format!(
                        "CREATE TRIGGER IF NOT EXISTS tenancy_domains_changed_{event} AFTER {} ON {DOMAINS_TABLE} \
                         BEGIN UPDATE {REGISTRY_CHANGES_TABLE} SET generation = generation + 1 WHERE id = 1; END",
                        event.to_uppercase()
                    ));
                }
            }
        }
        for statement in statements {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // The triggers go with the table.
        db.execute_unprepared(&format!("DROP TABLE IF EXISTS {}", crate::domains::DOMAINS_TABLE)).await?;
        Ok(())
    }
}
