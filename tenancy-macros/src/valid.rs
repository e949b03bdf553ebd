//! The checks that involve more than one option, or the options and the model.

use proc_macro2::Ident;
use syn::{Type, TypePath};

use crate::attr::Options;
use crate::ctxt::Ctxt;
use crate::model::{ColumnAttrs, ColumnNames, Model, unraw};

/// The tenant column when the model does not name one.
pub(crate) const DEFAULT_COLUMN: &str = "tenant_id";

/// A scope that passed every check.
pub(crate) enum Scope {
    /// Table scope on this column.
    Table {
        /// The `Column` variant for the tenant field.
        variant: Ident,
        /// The column's SQL name.
        column: String,
    },
    /// Cache scope, with this time to live in seconds.
    Cache {
        /// `ttl = ...`, in seconds.
        ttl: Option<u64>,
        /// `column = "..."`: the tenant column of the table behind the model, checked like
        /// a table-scoped model's (the `Column` variant and the SQL name).
        column: Option<(Ident, String)>,
    },
}

/// Checks the options against each other and against the model, recording every
/// violation in `cx`. Returns the scope if it could be determined.
pub(crate) fn check(cx: &mut Ctxt, options: &Options, model: &Model<'_>) -> Option<Scope> {
    if let (None, Some(ttl)) = (options.cache, &options.ttl) {
        cx.error(ttl.key, "`ttl` applies only to cache-scoped models: write `#[tenant_scoped(cache, ttl = ...)]`");
    }
    if model.table_name.is_none() {
        cx.error(
            model.ident.span(),
            "#[tenant_scoped] must be used on a sea-orm model with a table name: add \
             `#[sea_orm(table_name = \"...\")]` and `#[derive(DeriveEntityModel)]` or `#[sea_orm::model]`",
        );
    }
    let ttl = options.ttl.as_ref().map(|ttl| ttl.value);
    match (options.cache, &options.column) {
        (Some(_), None) => Some(Scope::Cache { ttl, column: None }),
        // A cache-scoped model read through to a table with a tenant column: the column is
        // checked exactly as a table-scoped model's is.
        (Some(_), Some(_)) => match table_column(cx, options, model)? {
            Scope::Table { variant, column } => Some(Scope::Cache { ttl, column: Some((variant, column)) }),
            cache @ Scope::Cache { .. } => Some(cache),
        },
        (None, _) => table_column(cx, options, model),
    }
}

/// Finds and checks the tenant column of a table-scoped model.
fn table_column(cx: &mut Ctxt, options: &Options, model: &Model<'_>) -> Option<Scope> {
    let name = options.column.as_ref().map_or_else(|| DEFAULT_COLUMN.to_owned(), |column| unraw(&column.value.value()));
    let Some(field) = model.fields.iter().find(|field| field.ident.as_ref().is_some_and(|ident| unraw(ident) == name))
    else {
        let hint = if options.column.is_some() {
            ""
        } else {
            ", or name the tenant column with `#[tenant_scoped(column = \"...\")]`"
        };
        cx.error(
            model.ident.span(),
            format_args!(
                "missing tenant column: `{}` has no field `{name}`; add `pub {name}: String`{hint}",
                model.ident
            ),
        );
        return None;
    };
    let ident = field.ident.as_ref()?;
    let mut ok = true;
    if !is_string(&field.ty) {
        cx.error_spanned_by(&field.ty, format_args!("wrong tenant column type: `{name}` must be a `String`"));
        ok = false;
    }
    let attrs = ColumnAttrs::from_field(field);
    if let Some(ignore) = attrs.ignore {
        cx.error(ignore, format_args!("the tenant column `{name}` must be a column, not `#[sea_orm(ignore)]`"));
        ok = false;
    }
    let Some(names) = ColumnNames::of(ident, &attrs, model.rename_all.as_deref()) else {
        cx.error(ident.span(), format_args!("cannot name the `Column` variant of the tenant column `{name}`"));
        return None;
    };
    ok.then_some(Scope::Table { variant: names.variant, column: names.sql })
}

/// Whether the field's type is `String`, spelled `String`, `std::string::String` or
/// `::std::string::String`. Aliases are not followed: a macro only sees tokens.
fn is_string(ty: &Type) -> bool {
    match ty {
        // A type passed through a `macro_rules!` `$ty` arrives wrapped in a group.
        Type::Group(group) => is_string(&group.elem),
        Type::Paren(paren) => is_string(&paren.elem),
        Type::Path(TypePath { qself: None, path }) => {
            if path.segments.iter().any(|segment| !segment.arguments.is_none()) {
                return false;
            }
            let segments: Vec<String> = path.segments.iter().map(|segment| segment.ident.to_string()).collect();
            match segments.as_slice() {
                [string] => path.leading_colon.is_none() && string == "String",
                [std, module, string] => std == "std" && module == "string" && string == "String",
                _ => false,
            }
        }
        _ => false,
    }
}
