//! The table driver: a table-isolated tenant's rows live in the master database's shared
//! tables. On PostgreSQL it gets a login role that the row-level security policies know
//! it by ([`crate::rls`]); on SQLite its handle rewrites statements instead
//! ([`crate::table_isolation`]).

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::login::PlannedLogin;
use crate::connection::binding::{begin_bound, end_bound};
use crate::connection::{Binding, Route};
use crate::deletion::Removal;
use crate::provisioning::{Created, NewTenant, ProvisionStep, Run, StepFailure};
use crate::registry::placement::Placement;
use crate::sql::{quote_ident, quote_literal};
use crate::{Backend, Result, Tenancy, TenantBinding, TenantLogin};
use crate::{Scope, TenantId};

/// A table tenant to make: its login role on PostgreSQL, nothing on SQLite.
pub(crate) struct Plan {
    login: Option<PlannedLogin>,
}

pub(crate) async fn plan(tenancy: &Tenancy, new: &NewTenant) -> Result<Plan> {
    let login = match tenancy.backend() {
        Backend::Postgres => Some(PlannedLogin::new(tenancy, new.id()).await?),
        Backend::Sqlite => None,
    };
    Ok(Plan { login })
}

impl Plan {
    /// The tenant keeps `login`, its role already (a schema tenant moving to the shared
    /// tables): the move's switch makes it a table tenant's role.
    pub(crate) fn keep_login(&mut self, id: &TenantId, login: TenantLogin) {
        self.login = Some(PlannedLogin::existing(id, login));
    }

    pub(crate) fn placement(&self) -> Placement {
        Placement::Table { login: self.login.as_ref().map(|login| login.config.clone()) }
    }

    pub(crate) async fn check_free(&self, tenancy: &Tenancy) -> Result<()> {
        match &self.login {
            Some(login) => login.check_free(tenancy).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn create(&self, tenancy: &Tenancy, run: &mut Run<'_>) -> Result<(), StepFailure> {
        let Some(login) = &self.login else { return Ok(()) };
        if login.existing {
            return Ok(());
        }
        let user = &login.config.user;
        run.step(ProvisionStep::CreateRole, Some(login.undo()), async {
            let txn = sea_orm::TransactionTrait::begin(tenancy.master()).await?;
            let database = &tenancy.master_identity().await?.1;
            super::login::create_table_tenant_role(&txn, &login.tenant, user, &login.verifier, database).await?;
            txn.commit().await?;
            Ok(())
        })
        .await?;
        run.created(Created::Role { name: user.clone(), server: tenancy.master_server() });
        Ok(())
    }
}

/// Table tenants on a SQLite master get their statements rewritten; on PostgreSQL they
/// use their login's pool, or transactions of the master pool bound to them
/// ([`TenantBinding::SharedTransactions`], or a tenant registered without a login).
pub(crate) fn route(tenancy: &Tenancy, login: Option<&TenantLogin>) -> Route {
    match tenancy.backend() {
        Backend::Sqlite => Route::SqliteRewrite,
        Backend::Postgres if login.is_none() || tenancy.tenant_binding() == TenantBinding::SharedTransactions => {
            Route::Bound(Binding::Table)
        }
        Backend::Postgres => Route::OwnPool { sqlite: false },
    }
}

/// What deleting a table tenant removes: its login role (sessions ended first), then its
/// rows of every scoped table, children before the tables their foreign keys reference.
///
/// The scoped tables are the `#[tenant_scoped]` models linked into this program and, on
/// PostgreSQL, every table [`crate::rls::enable_row_security`] secured (found by its
/// policy and the tenant column's default), so a program that links no models still
/// deletes every row.
pub(crate) async fn removals(tenancy: &Tenancy, id: &TenantId, login: Option<&TenantLogin>) -> Result<Vec<Removal>> {
    let present = tenant_tables(tenancy).await?;
    let edges = foreign_keys(tenancy, present.keys()).await?;
    let mut list = Vec::new();
    if let Some(login) = login {
        list.push(Removal::LoginRole { name: login.user.clone(), shard: None });
    }
    for table in delete_order(present.keys().cloned().collect(), &edges) {
        let column = present.get(&table).cloned().unwrap_or_default();
        let rows = count_rows(tenancy, id, &table, &column).await?;
        list.push(Removal::Rows { table, column, rows });
    }
    Ok(list)
}

/// The master's shared tables that hold tenants' rows, with their tenant columns: the
/// `#[tenant_scoped]` models linked into this program and, on PostgreSQL, every table
/// [`crate::rls::enable_row_security`] secured (found by its policy and the tenant
/// column's default), so a program that links no models still finds every one. Only
/// tables that exist (a model may be linked before its migration ran).
pub(crate) async fn tenant_tables(tenancy: &Tenancy) -> Result<BTreeMap<String, String>> {
    let mut present = BTreeMap::new();
    for (table, column) in tenant_columns(tenancy).await? {
        if table_exists(tenancy, &table).await? {
            present.insert(table, column);
        }
    }
    Ok(present)
}

/// The tenant column of every table known to be tenant-scoped, by name (whether or not
/// the master has such a table): what a tenant's own schema or database tables are read
/// by too.
pub(crate) async fn tenant_columns(tenancy: &Tenancy) -> Result<BTreeMap<String, String>> {
    let mut tables = scoped_columns()?;
    if tenancy.backend() == Backend::Postgres {
        let secured = tenancy
            .master()
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT c.relname::text, a.attname::text FROM pg_catalog.pg_policy p \
                 JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' \
                 JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.adnum \
                 WHERE p.polname = $1 AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) LIKE '%' || $2 || '%'",
                [crate::rls::POLICY_NAME.into(), crate::rls::TENANT_SETTING.into()],
            ))
            .await?;
        for row in secured {
            tables.insert(row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        }
    }
    Ok(tables)
}

/// The tenant column of each table of the `#[tenant_scoped]` models linked into this
/// program.
pub(crate) fn scoped_columns() -> Result<BTreeMap<String, String>> {
    let mut tables = BTreeMap::new();
    for model in crate::scoped_models()? {
        if let Scope::Table { column } = model.scope() {
            tables.insert(model.table().to_owned(), column.to_owned());
        }
    }
    Ok(tables)
}

async fn table_exists(tenancy: &Tenancy, table: &str) -> Result<bool> {
    let (backend, sql) = match tenancy.backend() {
        Backend::Postgres => (
            DbBackend::Postgres,
            "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname = $1 AND c.relkind IN ('r', 'p')",
        ),
        Backend::Sqlite => (DbBackend::Sqlite, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"),
    };
    Ok(tenancy.master().query_one_raw(Statement::from_sql_and_values(backend, sql, [table.into()])).await?.is_some())
}

/// `(child, parent)` pairs: `child` has a foreign key to `parent`, both among `tables`.
pub(crate) async fn foreign_keys<'a>(
    tenancy: &Tenancy,
    tables: impl Iterator<Item = &'a String>,
) -> Result<Vec<(String, String)>> {
    let tables: Vec<String> = tables.cloned().collect();
    let mut edges = Vec::new();
    match tenancy.backend() {
        Backend::Postgres => {
            let rows = tenancy
                .master()
                .query_all_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT c.relname::text, p.relname::text FROM pg_catalog.pg_constraint k \
                     JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
                     JOIN pg_catalog.pg_class p ON p.oid = k.confrelid \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' \
                     WHERE k.contype = 'f'",
                ))
                .await?;
            for row in rows {
                edges.push((row.try_get_by_index::<String>(0)?, row.try_get_by_index::<String>(1)?));
            }
        }
        Backend::Sqlite => {
            for table in &tables {
                let rows = tenancy
                    .master()
                    .query_all_raw(Statement::from_string(
                        DbBackend::Sqlite,
                        format!("SELECT \"table\" FROM pragma_foreign_key_list({})", quote_literal(table)),
                    ))
                    .await?;
                for row in rows {
                    edges.push((table.clone(), row.try_get_by_index::<String>(0)?));
                }
            }
        }
    }
    edges.retain(|(child, parent)| child != parent && tables.contains(child) && tables.contains(parent));
    Ok(edges)
}

/// The tables in an order that deletes rows referencing others first; tables on a cycle
/// come last, in name order.
pub(crate) fn delete_order(mut tables: Vec<String>, edges: &[(String, String)]) -> Vec<String> {
    tables.sort();
    let mut order = Vec::with_capacity(tables.len());
    while !tables.is_empty() {
        // A table nobody left references can go now.
        let free =
            tables.iter().position(|t| !edges.iter().any(|(child, parent)| parent == t && tables.contains(child)));
        match free {
            Some(index) => order.push(tables.remove(index)),
            None => {
                order.append(&mut tables);
            }
        }
    }
    order
}

/// How many rows of `table` hold `id` in `column`, counted as the tenant itself sees them
/// (in a transaction bound to it on PostgreSQL, so row-level security applies).
pub(crate) async fn count_rows(tenancy: &Tenancy, id: &TenantId, table: &str, column: &str) -> Result<u64> {
    let sql = format!("SELECT count(*) FROM {} WHERE {} = $1", quote_ident(table), quote_ident(column));
    let rows = match tenancy.backend() {
        Backend::Postgres => {
            let txn = begin_bound(tenancy, id.as_str(), &Binding::Table, Default::default()).await?;
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, &sql, [id.as_str().into()]))
                .await;
            end_bound(txn, tenancy).await?;
            row?
        }
        Backend::Sqlite => {
            tenancy
                .master()
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    sql.replace("$1", "?"),
                    [id.as_str().into()],
                ))
                .await?
        }
    };
    let count = rows.map(|row| row.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(0);
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Deletes the tenant's rows of one shared table: one statement, in a transaction bound
/// to the tenant on PostgreSQL (so row-level security applies as to the tenant itself).
pub(crate) async fn delete_rows(tenancy: &Tenancy, id: &TenantId, table: &str, column: &str) -> Result<()> {
    let sql = format!("DELETE FROM {} WHERE {} = $1", quote_ident(table), quote_ident(column));
    match tenancy.backend() {
        Backend::Postgres => {
            let txn = begin_bound(tenancy, id.as_str(), &Binding::Table, Default::default()).await?;
            let deleted =
                txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, &sql, [id.as_str().into()])).await;
            if let Err(err) = deleted {
                let _ = txn.rollback().await;
                return Err(err.into());
            }
            end_bound(txn, tenancy).await?;
        }
        Backend::Sqlite => {
            tenancy
                .master()
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    sql.replace("$1", "?"),
                    [id.as_str().into()],
                ))
                .await?;
        }
    }
    Ok(())
}
