//! `#[tenancy::shared]`: the same parse → check → generate shape as `#[tenant_scoped]`,
//! for a model whose table every tenant shares.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, LitStr, Token, parse_quote};

use crate::attr::parse_each;
use crate::ctxt::Ctxt;
use crate::model::for_each_sea_orm_meta;

const WRITABLE: &str = "writable";
const CRATE: &str = "crate";

/// The options as written.
#[derive(Default)]
struct Options {
    /// `writable`: tenants may write the table, not only read it.
    writable: Option<Span>,
    /// `crate = "..."`: the path to the `tenancy` crate.
    krate: Option<syn::Path>,
}

impl Options {
    fn parse(cx: &mut Ctxt, args: TokenStream) -> Self {
        let mut options = Self::default();
        parse_each(cx, args, |cx, meta| options.parse_one(cx, meta));
        options
    }

    fn parse_one(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta.path.span();
        if meta.path.is_ident(WRITABLE) {
            if !(meta.input.is_empty() || meta.input.peek(Token![,])) {
                return Err(meta.error("`writable` takes no value: write `#[tenancy::shared(writable)]`"));
            }
            if self.writable.replace(key).is_some() {
                cx.error(key, "duplicate shared option `writable`");
            }
        } else if meta.path.is_ident(CRATE) {
            let input = meta.value()?;
            let expected = "`crate` must be a string holding a path, like `crate = \"::tenancy\"`";
            let lit: LitStr = if input.peek(LitStr) { input.parse()? } else { return Err(input.error(expected)) };
            let path = lit.parse_with(syn::Path::parse_mod_style).map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    format!("`crate` must be a path, like \"::tenancy\"; found {:?}", lit.value()),
                )
            })?;
            if self.krate.replace(path).is_some() {
                cx.error(key, "duplicate shared option `crate`");
            }
        } else {
            let name = meta.path.to_token_stream().to_string().replace(' ', "");
            return Err(meta.error(format_args!("unknown shared option `{name}`; expected `{WRITABLE}` or `{CRATE}`")));
        }
        Ok(())
    }
}

/// The whole macro: the item unchanged, followed by the registration or by every error.
pub(crate) fn shared(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let mut options = Options::parse(&mut cx, args);
    let krate: syn::Path = options.krate.take().unwrap_or_else(|| parse_quote!(::tenancy));
    let table = match syn::parse2::<DeriveInput>(input.clone()) {
        Ok(item) => check(&mut cx, &item),
        Err(error) => {
            cx.error(error.span(), "#[tenancy::shared] must be used on a sea-orm model struct");
            None
        }
    };
    match (cx.check(), table) {
        (Ok(()), Some((table, span))) => {
            let generated = generate(&krate, &table, span, options.writable.is_some());
            quote!(#input #generated)
        }
        (Err(errors), _) => {
            let errors = errors.to_compile_error();
            quote!(#input #errors)
        }
        (Ok(()), None) => unreachable!("#[tenancy::shared]: every check that yields no table records an error"),
    }
}

/// Checks the model; its table name and the span of its name when it passes.
fn check(cx: &mut Ctxt, item: &DeriveInput) -> Option<(String, Span)> {
    const NOT_A_MODEL: &str = "#[tenancy::shared] must be used on a sea-orm model: a struct with named fields";
    if item.ident == "ModelEx" {
        cx.error(
            Span::call_site(),
            "#[tenancy::shared] must come before #[sea_orm::model], which copies the attributes below it onto `ModelEx`",
        );
        return None;
    }
    match &item.data {
        Data::Struct(data) if matches!(data.fields, Fields::Named(_)) => {}
        Data::Struct(data) => cx.error(data.fields.span(), NOT_A_MODEL),
        Data::Enum(data) => cx.error(data.enum_token.span, NOT_A_MODEL),
        Data::Union(data) => cx.error(data.union_token.span, NOT_A_MODEL),
    }
    // A table is scoped or shared, never both: said here at compile time, and by
    // `tenancy::shared_models()` for declarations on two different structs.
    if let Some(scoped) =
        item.attrs.iter().find(|attr| attr.path().segments.last().is_some_and(|s| s.ident == "tenant_scoped"))
    {
        cx.error_spanned_by(
            scoped.path(),
            "a model cannot be both #[tenant_scoped] and #[tenancy::shared]: its table either belongs to one \
             tenant per row or to every tenant; keep one of the attributes",
        );
    }
    let mut table_name = None;
    for_each_sea_orm_meta(&item.attrs, |key, value| {
        if key == "table_name" {
            table_name = value;
        }
    });
    let Some(table) = table_name else {
        cx.error(
            item.ident.span(),
            "#[tenancy::shared] must be used on a sea-orm model with a table name: add \
             `#[sea_orm(table_name = \"...\")]` and `#[derive(DeriveEntityModel)]` or `#[sea_orm::model]`",
        );
        return None;
    };
    Some((table, item.ident.span()))
}

/// The registration, and a check that sea-orm generated an `Entity` next to the model.
fn generate(krate: &syn::Path, table: &str, span: Span, writable: bool) -> TokenStream {
    let entity = Ident::new("Entity", span);
    quote! {
        const _: () = {
            #[allow(dead_code)]
            fn __tenancy_shared_model_is_an_entity<E: #krate::__private::EntityTrait>() {}
            fn __tenancy_shared_model_check() {
                __tenancy_shared_model_is_an_entity::<#entity>();
            }
        };

        #krate::__private::inventory::submit! {
            #krate::__private::SharedModel::new(
                #table,
                ::core::concat!(::core::module_path!(), "::Entity"),
                #writable,
                ::core::file!(),
                ::core::line!(),
            )
        }
    }
}
