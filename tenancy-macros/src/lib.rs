//! Procedural macros of [`tenancy`](https://docs.rs/tenancy): `#[tenant_scoped]` and
//! `#[tenancy::shared]`.
//!
//! Implementation detail of the `tenancy` crate: use the macro through `tenancy`, whose
//! crate docs ("Scoped models") have the tested example. This crate's API is semver
//! exempt apart from what `tenancy` re-exports.

// The macro is parse → check → generate: `attr` (the options), `model` (the sea-orm
// model), `valid` (the checks), `expand` (the driver and the generated code). Every
// error goes into one `ctxt::Ctxt` so that all of them are reported together.
mod attr;
mod ctxt;
mod expand;
mod model;
mod shared;
mod valid;

use proc_macro::TokenStream;

/// Marks a sea-orm model as tenant-scoped and registers it with `tenancy`.
///
/// Put it on the `Model` struct, above `#[sea_orm::model]` if the model uses that
/// attribute (which copies the attributes below it onto `ModelEx`), and anywhere among
/// the attributes of a `#[derive(DeriveEntityModel)]` model:
///
/// | attribute | scope |
/// | --- | --- |
/// | `#[tenant_scoped]` | table-scoped: rows of a shared table, told apart by the `tenant_id` field |
/// | `#[tenant_scoped(column = "org_id")]` | table-scoped on the `org_id` field |
/// | `#[tenant_scoped(cache)]` | cache-scoped: entries in the tenant's cache namespace |
/// | `#[tenant_scoped(cache, ttl = 300)]` | cache-scoped, entries living 300 seconds |
/// | `#[tenant_scoped(cache, column = "tenant_id")]` | cache-scoped, read through to a table whose `tenant_id` column keeps tenants apart (table isolation scopes it like a table-scoped model's) |
///
/// `crate = "path"` names the `tenancy` crate for crates that re-export it (default
/// `::tenancy`), as in `#[tenant_scoped(crate = "my_app::tenancy")]`.
///
/// The model must have `#[sea_orm(table_name = "...")]`; the tenant field of a
/// table-scoped model must be a `String`. `column` names the field; the registered SQL
/// name follows sea-orm's naming (`column_name`, `rename_all`).
///
/// # Generated code
///
/// Next to the unchanged struct: an impl of `tenancy::TenantScoped` for the model's
/// `Entity`, whose `SCOPE` is the `tenancy::Scope` above and whose `tenant_column()` is
/// the tenant field's `Column` variant (`None` for cache scope without `column`); and a registration that
/// `tenancy::scoped_models()` lists, with the table name, the entity's path, a function
/// reading the entity's primary key (`tenancy::__private::primary_key`), and the file and
/// line of the attribute.
///
/// # Errors
///
/// Every mistake is reported in the same build, at the token at fault: an unknown or
/// repeated option, a `ttl` that is not a positive integer, `ttl` without `cache`, a missing table name, a missing tenant field, and a
/// tenant field that is not a `String`.
#[proc_macro_attribute]
pub fn tenant_scoped(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::tenant_scoped(args.into(), input.into()).into()
}

/// Marks a sea-orm model's table as shared by every tenant and registers it with
/// `tenancy`, which lists it in `tenancy::shared_models()`.
///
/// | attribute | what a table-isolated tenant's handle on a SQLite master may do with the table |
/// | --- | --- |
/// | `#[tenancy::shared]` | read it (`SELECT`, joins, subqueries) |
/// | `#[tenancy::shared(writable)]` | read and write it (`INSERT`, `UPDATE`, `DELETE`) |
///
/// Put it on the `Model` struct like `#[tenant_scoped]` (above `#[sea_orm::model]` if the
/// model uses it); `crate = "path"` names the `tenancy` crate for crates that re-export
/// it. On a SQLite master, which has no privileges to fall back on, such a handle reaches
/// only the `#[tenant_scoped]` tables (scoped to its rows) and the shared tables: a table
/// declared neither way is refused, so declare the shared ones here. Declaring the same
/// table shared twice, or shared and `#[tenant_scoped]`, is an error
/// (`tenancy::Error::ConflictingTableDeclaration`, and a compile error when both
/// attributes are on one model).
///
/// # Generated code
///
/// Next to the unchanged struct: a check that sea-orm generated an `Entity` for it, and a
/// registration with the table name, whether it is writable, the entity's path, and the
/// file and line of the attribute.
///
/// # Errors
///
/// An unknown or repeated option, a `writable` with a value, a model without
/// `#[sea_orm(table_name = "...")]`, a struct that is not a model, and `#[tenant_scoped]`
/// on the same model.
#[proc_macro_attribute]
pub fn shared(args: TokenStream, input: TokenStream) -> TokenStream {
    shared::shared(args.into(), input.into()).into()
}
