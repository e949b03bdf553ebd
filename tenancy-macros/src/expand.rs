//! `#[tenant_scoped]`: parse the options and the model, check them, then generate.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::{DeriveInput, Ident, parse_quote};

use crate::attr::Options;
use crate::ctxt::Ctxt;
use crate::model::Model;
use crate::valid::{self, Scope};

/// The whole macro: the item unchanged, followed by the generated code, or by every error
/// found (and a stand-in impl, so that code using the trait does not add errors of its own).
pub(crate) fn tenant_scoped(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let mut options = Options::parse(&mut cx, args);
    let krate: syn::Path = options.krate.take().unwrap_or_else(|| parse_quote!(::tenancy));
    let item = match syn::parse2::<DeriveInput>(input.clone()) {
        Ok(item) => Some(item),
        Err(error) => {
            cx.error(error.span(), "#[tenant_scoped] must be used on a sea-orm model struct");
            None
        }
    };
    let model = item.as_ref().and_then(|item| Model::from_ast(&mut cx, item));
    let scope = model.as_ref().and_then(|model| valid::check(&mut cx, &options, model));

    match (cx.check(), model, scope) {
        (Ok(()), Some(model), Some(scope)) => {
            let generated = generate(&krate, &model, &scope);
            quote!(#input #generated)
        }
        (Err(errors), model, _) => {
            let errors = errors.to_compile_error();
            // Without a table name sea-orm generates no `Entity` to implement the trait for.
            let stand_in = model.filter(|model| model.table_name.is_some()).map(|model| stand_in(&krate, &model));
            quote!(#input #errors #stand_in)
        }
        (Ok(()), _, _) => unreachable!("#[tenant_scoped]: every check that yields no scope records an error"),
    }
}

/// The trait impl and the registration of a model that passed every check.
fn generate(krate: &syn::Path, model: &Model<'_>, scope: &Scope) -> TokenStream {
    // sea-orm's derive puts `Entity` and `Column` next to `Model`. Spanned at the struct's
    // name so that, were they missing, the error points at the model.
    let entity = Ident::new("Entity", model.ident.span());
    let table = model.table_name.as_deref().unwrap_or_default();
    let (scope, column) = match scope {
        Scope::Table { variant, column } => (
            quote!(#krate::Scope::Table { column: #column }),
            quote_spanned!(variant.span()=> ::core::option::Option::Some(Column::#variant)),
        ),
        Scope::Cache { ttl, column } => {
            let ttl = match ttl {
                Some(seconds) => {
                    let seconds = Literal::u64_unsuffixed(*seconds);
                    quote!(::core::option::Option::Some(::core::time::Duration::from_secs(#seconds)))
                }
                None => quote!(::core::option::Option::None),
            };
            match column {
                Some((variant, column)) => (
                    quote!(#krate::Scope::Cache { ttl: #ttl, column: ::core::option::Option::Some(#column) }),
                    quote_spanned!(variant.span()=> ::core::option::Option::Some(Column::#variant)),
                ),
                None => (
                    quote!(#krate::Scope::Cache { ttl: #ttl, column: ::core::option::Option::None }),
                    quote!(::core::option::Option::None),
                ),
            }
        }
    };
    quote! {
        #[automatically_derived]
        impl #krate::TenantScoped for #entity {
            const SCOPE: #krate::Scope = #scope;

            fn tenant_column() -> ::core::option::Option<<Self as #krate::__private::EntityTrait>::Column> {
                #column
            }
        }

        #krate::__private::inventory::submit! {
            #krate::__private::ScopedModel::new(
                #table,
                ::core::concat!(::core::module_path!(), "::Entity"),
                <#entity as #krate::TenantScoped>::SCOPE,
                #krate::__private::primary_key::<#entity>,
                ::core::file!(),
                ::core::line!(),
            )
        }
    }
}

/// An impl that satisfies the trait after an error. Its values are never used: the
/// build fails on the errors emitted with it.
fn stand_in(krate: &syn::Path, model: &Model<'_>) -> TokenStream {
    let entity = Ident::new("Entity", model.ident.span());
    quote! {
        #[automatically_derived]
        impl #krate::TenantScoped for #entity {
            const SCOPE: #krate::Scope =
                #krate::Scope::Cache { ttl: ::core::option::Option::None, column: ::core::option::Option::None };

            fn tenant_column() -> ::core::option::Option<<Self as #krate::__private::EntityTrait>::Column> {
                ::core::option::Option::None
            }
        }
    }
}
