//! What `#[tenant_scoped]` needs to know about the sea-orm model it is on.
//!
//! It reads the same `#[sea_orm(...)]` attributes sea-orm's macros read, and names columns
//! the way `DeriveEntityModel` in sea-orm-macros 2.0 does (with `heck`, as it does), so
//! that the generated code names the `Column` variant and SQL column sea-orm generated.
//!
//! Malformed `#[sea_orm]` attributes are not reported here: sea-orm reports them itself,
//! and a second error for the same mistake would only be noise.

use heck::{ToKebabCase, ToLowerCamelCase, ToShoutySnakeCase, ToSnakeCase, ToTitleCase, ToUpperCamelCase};
use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::token::Comma;
use syn::{Attribute, Data, DeriveInput, Field, Fields, Ident, LitStr};

use crate::attr::skip_to_comma;
use crate::ctxt::Ctxt;

/// The parts of a model struct the checks and the expansion use.
pub(crate) struct Model<'a> {
    /// The struct's name (`Model`), where model-level errors point.
    pub(crate) ident: &'a Ident,
    /// `#[sea_orm(table_name = "...")]`, if given.
    pub(crate) table_name: Option<String>,
    /// `#[sea_orm(rename_all = "...")]`, if given: it changes every column's SQL name.
    pub(crate) rename_all: Option<String>,
    /// The named fields.
    pub(crate) fields: &'a Punctuated<Field, Comma>,
}

impl<'a> Model<'a> {
    /// Reads the model, or records why `input` is not a model struct.
    pub(crate) fn from_ast(cx: &mut Ctxt, input: &'a DeriveInput) -> Option<Self> {
        const NOT_A_MODEL: &str = "#[tenant_scoped] must be used on a sea-orm model: a struct with named fields";
        if input.ident == "ModelEx" {
            // `#[sea_orm::model]` copies the attributes below it onto the `ModelEx` it
            // generates, so this is a second expansion for the same `Entity`.
            cx.error(
                Span::call_site(),
                "#[tenant_scoped] must come before #[sea_orm::model], which copies the attributes below it onto `ModelEx`",
            );
            return None;
        }
        let fields = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(fields) => &fields.named,
                other => {
                    cx.error(other.span(), NOT_A_MODEL);
                    return None;
                }
            },
            Data::Enum(data) => {
                cx.error(data.enum_token.span, NOT_A_MODEL);
                return None;
            }
            Data::Union(data) => {
                cx.error(data.union_token.span, NOT_A_MODEL);
                return None;
            }
        };
        let mut table_name = None;
        let mut rename_all = None;
        for_each_sea_orm_meta(&input.attrs, |key, value| {
            if key == "table_name" {
                table_name = value;
            } else if key == "rename_all" {
                rename_all = value;
            }
        });
        Some(Self { ident: &input.ident, table_name, rename_all, fields })
    }
}

/// The `#[sea_orm(...)]` attributes of a field that change its column's names.
#[derive(Default)]
pub(crate) struct ColumnAttrs {
    /// `column_name = "..."`: the SQL name.
    column_name: Option<String>,
    /// `enum_name = "..."`: the `Column` variant's name.
    enum_name: Option<String>,
    /// `ignore`: the field is not a column at all.
    pub(crate) ignore: Option<Span>,
}

impl ColumnAttrs {
    /// Reads a field's attributes.
    pub(crate) fn from_field(field: &Field) -> Self {
        let mut attrs = Self::default();
        for attr in field.attrs.iter().filter(|attr| attr.path().is_ident("sea_orm")) {
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("column_name") {
                    attrs.column_name = Some(meta.value()?.parse::<LitStr>()?.value());
                } else if meta.path.is_ident("enum_name") {
                    attrs.enum_name = Some(meta.value()?.parse::<LitStr>()?.value());
                } else if meta.path.is_ident("ignore") {
                    attrs.ignore = Some(meta.path.span());
                } else {
                    skip_to_comma(meta.input)?;
                }
                Ok(())
            });
        }
        attrs
    }
}

/// A field's `Column` variant and SQL column name, as `DeriveEntityModel` derives them.
pub(crate) struct ColumnNames {
    /// The variant of the generated `Column` enum, spanned at the field.
    pub(crate) variant: Ident,
    /// The column's name in SQL.
    pub(crate) sql: String,
}

impl ColumnNames {
    /// Derives the names, or `None` if they would not be a valid identifier (sea-orm
    /// rejects such a field itself).
    pub(crate) fn of(field_ident: &Ident, attrs: &ColumnAttrs, rename_all: Option<&str>) -> Option<Self> {
        let original = unraw(field_ident);
        let upper_camel = original.to_upper_camel_case();
        // sea-orm only records a SQL name when it differs from the variant's snake case.
        let mut sql = match rename_all.and_then(convert_case_fn) {
            Some(convert) => Some(convert(&upper_camel)),
            None if original != upper_camel.to_snake_case() => Some(original.to_snake_case()),
            None => None,
        };
        if let Some(column_name) = &attrs.column_name {
            sql = Some(column_name.clone());
        }
        let mut variant = attrs.enum_name.clone().unwrap_or(upper_camel);
        // sea-orm escapes keywords; an upper-camel-case name can only collide with `Self`.
        if variant == "Self" {
            variant.push('_');
        }
        let sql = sql.unwrap_or_else(|| variant.to_snake_case());
        let mut variant = syn::parse_str::<Ident>(&variant).ok()?;
        variant.set_span(field_ident.span());
        Some(Self { variant, sql })
    }
}

/// A field or option name without its `r#` prefix, as sea-orm compares names.
pub(crate) fn unraw(name: &impl ToString) -> String {
    let name = name.to_string();
    match name.strip_prefix("r#") {
        Some(stripped) => stripped.to_owned(),
        None => name,
    }
}

/// The conversion sea-orm applies for a `rename_all` case style (its `CaseStyle`).
fn convert_case_fn(style: &str) -> Option<fn(&str) -> String> {
    let convert: fn(&str) -> String = match style {
        "camel_case" | "PascalCase" => |s| s.to_upper_camel_case(),
        "camelCase" => |s| {
            let upper = s.to_upper_camel_case();
            let mut chars = upper.chars();
            chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
        },
        "snake_case" | "snek_case" => |s| s.to_snake_case(),
        "kebab_case" | "kebab-case" => |s| s.to_kebab_case(),
        "SCREAMING-KEBAB-CASE" => |s| s.to_kebab_case().to_uppercase(),
        "shouty_snake_case" | "shouty_snek_case" | "SCREAMING_SNAKE_CASE" => |s| s.to_shouty_snake_case(),
        "title_case" => |s| s.to_title_case(),
        "mixed_case" => |s| s.to_lower_camel_case(),
        "lowercase" => |s| s.to_lowercase(),
        "UPPERCASE" => |s| s.to_uppercase(),
        _ => return None,
    };
    Some(convert)
}

/// Calls `f(key, string value)` for each `key = "value"` or bare `key` in the
/// `#[sea_orm(...)]` attributes.
pub(crate) fn for_each_sea_orm_meta(attrs: &[Attribute], mut f: impl FnMut(&str, Option<String>)) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("sea_orm")) {
        let _ = attr.parse_nested_meta(|meta| {
            let Some(key) = meta.path.get_ident().map(Ident::to_string) else {
                return skip_to_comma(meta.input);
            };
            if meta.input.peek(syn::Token![=]) {
                let value = meta.value()?;
                if value.peek(LitStr) {
                    f(&key, Some(value.parse::<LitStr>()?.value()));
                    return Ok(());
                }
            }
            f(&key, None);
            skip_to_comma(meta.input)
        });
    }
}
