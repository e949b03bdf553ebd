//! Tenant-scoped models: the [`TenantScoped`] trait that `#[tenant_scoped]` implements,
//! and the registry of every scoped model linked into the program.
//!
//! The registry is built with `inventory`: each `#[tenant_scoped]` model submits a
//! [`ScopedModel`] from wherever it is defined, and [`scoped_models`] lists them all
//! without the application having to name each model in one place.

use std::fmt;
use std::time::Duration;

use sea_orm::{ColumnTrait, ColumnType, EntityTrait, IdenStatic, Iterable, PrimaryKeyToColumn};

use crate::{Error, Result};

/// How a model's data is kept apart per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Rows of a shared table, told apart by a column holding the tenant id
    /// (`#[tenant_scoped]`, `#[tenant_scoped(column = "...")]`).
    Table {
        /// The SQL name of the tenant column: `tenant_id` unless the model names another.
        column: &'static str,
    },
    /// Entries in the shared cache, under the tenant's key namespace
    /// (`#[tenant_scoped(cache)]`, `#[tenant_scoped(cache, ttl = ...)]`).
    ///
    /// A cache-scoped model read through to a table ([`crate::cache::ReadThrough`])
    /// names the table's tenant column with `#[tenant_scoped(cache, column = "...")]`:
    /// the table is then scoped like a [`Scope::Table`] one (row-level security on
    /// PostgreSQL, statement scoping on SQLite). Without a column the table is shared by
    /// every table-isolated tenant, so reading it through for such a tenant is refused.
    Cache {
        /// How long entries live; `None` leaves it to the cache.
        ttl: Option<Duration>,
        /// The SQL name of the tenant column of the table behind the model, if it has one.
        column: Option<&'static str>,
    },
}

impl Scope {
    /// The tenant column of the model's table, when it has one: always for
    /// [`Scope::Table`], for [`Scope::Cache`] when the model names it. Tables with a
    /// tenant column are the ones table isolation keeps apart per tenant.
    pub const fn table_column(&self) -> Option<&'static str> {
        match *self {
            Scope::Table { column } | Scope::Cache { column: Some(column), .. } => Some(column),
            Scope::Cache { column: None, .. } => None,
        }
    }
}

/// A sea-orm entity whose data belongs to one tenant at a time.
///
/// Implemented by `#[tenant_scoped]` on the entity's `Model`; see the crate docs,
/// "Scoped models".
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not tenant-scoped",
    note = "add `#[tenant_scoped]` to the entity's `Model`"
)]
pub trait TenantScoped: EntityTrait {
    /// How the entity is scoped.
    const SCOPE: Scope;

    /// The column holding the tenant id: `Some` for [`Scope::Table`] and for a
    /// [`Scope::Cache`] model that names one, `None` for a cache-scoped model without one.
    fn tenant_column() -> Option<Self::Column>;
}

/// One `#[tenant_scoped]` model, as registered by the macro and listed by
/// [`scoped_models`].
///
/// Displays as its entity and where it was declared, as in
/// `app::invoice::Entity (src/invoice.rs:7)`.
#[derive(Debug)]
pub struct ScopedModel {
    table: &'static str,
    entity: &'static str,
    scope: Scope,
    /// Reads the entity's primary key; a function because sea-orm builds column
    /// definitions at run time, while registrations are statics.
    primary_key: fn() -> Vec<KeyColumn>,
    file: &'static str,
    line: u32,
}

/// A column of a model's primary key as the sea-orm entity declares it
/// ([`ScopedModel::primary_key`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeyColumn {
    /// The column's SQL name.
    pub name: &'static str,
    /// Its sea-orm column type (`ColumnType::Integer` for an `i32` field, ...).
    pub column_type: ColumnType,
}

impl ScopedModel {
    /// A registration; called by the code `#[tenant_scoped]` generates, which is why it is
    /// `const` (registrations are statics).
    #[doc(hidden)]
    pub const fn new(
        table: &'static str,
        entity: &'static str,
        scope: Scope,
        primary_key: fn() -> Vec<KeyColumn>,
        file: &'static str,
        line: u32,
    ) -> Self {
        Self { table, entity, scope, primary_key, file, line }
    }

    /// The primary key the entity declares, in its order: what the model says, which the
    /// doctor's Citus check falls back on where the table is not in the master database.
    pub fn primary_key(&self) -> Vec<KeyColumn> {
        (self.primary_key)()
    }

    /// The table name, from `#[sea_orm(table_name = "...")]`.
    pub const fn table(&self) -> &'static str {
        self.table
    }

    /// The entity's path as written, e.g. `app::invoice::Entity` (from `module_path!()`).
    pub const fn entity(&self) -> &'static str {
        self.entity
    }

    /// How the model is scoped.
    pub const fn scope(&self) -> Scope {
        self.scope
    }

    /// The source file of the `#[tenant_scoped]` attribute (from `file!()`).
    pub const fn file(&self) -> &'static str {
        self.file
    }

    /// The line of the `#[tenant_scoped]` attribute.
    pub const fn line(&self) -> u32 {
        self.line
    }
}

impl fmt::Display for ScopedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.entity, self.file, self.line)
    }
}

inventory::collect!(ScopedModel);

/// Every `#[tenant_scoped]` model linked into the program, sorted by table name.
///
/// # Errors
///
/// [`Error::DuplicateScopedTable`] if two models register the same table: each table has
/// one scope, so one of them is a mistake (often a copied model left with its old
/// `table_name`).
pub fn scoped_models() -> Result<Vec<&'static ScopedModel>> {
    let mut models: Vec<&'static ScopedModel> = inventory::iter::<ScopedModel>.into_iter().collect();
    // Link order decides the registry's order; sorting makes the list and the duplicate
    // report the same on every build.
    models.sort_by_key(|model| (model.table, model.entity, model.file, model.line));
    if let Some(pair) = models.windows(2).find(|pair| pair[0].table == pair[1].table) {
        return Err(Error::DuplicateScopedTable { table: pair[0].table, first: pair[0], second: pair[1] });
    }
    Ok(models)
}

/// One `#[tenancy::shared]` model: a table every tenant shares (a catalog of plans,
/// countries, feature flags), as registered by the macro and listed by [`shared_models`].
///
/// It matters where a tenant's statements are checked against the models the program
/// declares: a table-isolated tenant's handle on a SQLite master reaches its
/// `#[tenant_scoped]` tables (scoped to its rows) and the shared tables (read-only,
/// unless declared `writable`), and no other table. Displays as its entity and where it
/// was declared, as [`ScopedModel`] does.
#[derive(Debug)]
pub struct SharedModel {
    table: &'static str,
    entity: &'static str,
    writable: bool,
    file: &'static str,
    line: u32,
}

impl SharedModel {
    /// A registration; called by the code `#[tenancy::shared]` generates, which is why it
    /// is `const` (registrations are statics).
    #[doc(hidden)]
    pub const fn new(table: &'static str, entity: &'static str, writable: bool, file: &'static str, line: u32) -> Self {
        Self { table, entity, writable, file, line }
    }

    /// The table name, from `#[sea_orm(table_name = "...")]`.
    pub const fn table(&self) -> &'static str {
        self.table
    }

    /// The entity's path as written, e.g. `app::plan::Entity` (from `module_path!()`).
    pub const fn entity(&self) -> &'static str {
        self.entity
    }

    /// Whether tenants may write the table (`#[tenancy::shared(writable)]`); by default
    /// they may only read it.
    pub const fn writable(&self) -> bool {
        self.writable
    }

    /// The source file of the `#[tenancy::shared]` attribute (from `file!()`).
    pub const fn file(&self) -> &'static str {
        self.file
    }

    /// The line of the `#[tenancy::shared]` attribute.
    pub const fn line(&self) -> u32 {
        self.line
    }
}

impl fmt::Display for SharedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.entity, self.file, self.line)
    }
}

inventory::collect!(SharedModel);

/// Every `#[tenancy::shared]` model linked into the program, sorted by table name.
///
/// # Errors
///
/// [`Error::ConflictingTableDeclaration`] if two shared models register the same table,
/// or a table is declared both shared and `#[tenant_scoped]`: a table is either one
/// tenant's rows or everyone's, so one of the declarations is a mistake. The scoped
/// models' own errors ([`scoped_models`]) come first.
pub fn shared_models() -> Result<Vec<&'static SharedModel>> {
    let scoped = scoped_models()?;
    let mut models: Vec<&'static SharedModel> = inventory::iter::<SharedModel>.into_iter().collect();
    models.sort_by_key(|model| (model.table, model.entity, model.file, model.line));
    if let Some(pair) = models.windows(2).find(|pair| pair[0].table == pair[1].table) {
        return Err(Error::ConflictingTableDeclaration {
            table: pair[0].table,
            first: format!("#[tenancy::shared] {}", pair[0]),
            second: format!("#[tenancy::shared] {}", pair[1]),
        });
    }
    for model in &models {
        if let Some(other) = scoped.iter().find(|scoped| scoped.table == model.table) {
            return Err(Error::ConflictingTableDeclaration {
                table: model.table,
                first: format!("#[tenant_scoped] {other}"),
                second: format!("#[tenancy::shared] {model}"),
            });
        }
    }
    Ok(models)
}

/// Not public API: the paths the code generated by `#[tenant_scoped]` and
/// `#[tenancy::shared]` uses, so that
/// applications need not depend on `inventory` or name sea-orm themselves. Exempt from
/// semver; anything here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::models::{ScopedModel, SharedModel};
    pub use inventory;
    pub use sea_orm::EntityTrait;

    /// The primary key of `E`, for [`ScopedModel::primary_key`]: the registration holds
    /// this function, instantiated for the model's entity.
    pub fn primary_key<E: EntityTrait>() -> Vec<crate::models::KeyColumn> {
        super::primary_key_of::<E>()
    }
}

/// The columns of `E`'s primary key with their sea-orm types.
fn primary_key_of<E: EntityTrait>() -> Vec<KeyColumn> {
    E::PrimaryKey::iter()
        .map(|key| {
            let column = key.into_column();
            KeyColumn { name: column.as_str(), column_type: column.def().get_column_type().clone() }
        })
        .collect()
}
