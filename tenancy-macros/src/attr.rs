//! Parsing the options of `#[tenant_scoped(...)]`.
//!
//! Only the form of each option is checked here; how options combine with each other and
//! with the model is [`crate::valid`]'s job.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Lit, LitStr, Token};

use crate::ctxt::Ctxt;

const CACHE: &str = "cache";
const COLUMN: &str = "column";
const TTL: &str = "ttl";
const CRATE: &str = "crate";

/// The options as written, each with the span of its key for error messages.
#[derive(Default)]
pub(crate) struct Options {
    /// `cache`: the model is cache-scoped.
    pub(crate) cache: Option<Span>,
    /// `column = "..."`: the field holding the tenant id.
    pub(crate) column: Option<Keyed<LitStr>>,
    /// `ttl = <seconds>`: a positive number of seconds.
    pub(crate) ttl: Option<Keyed<u64>>,
    /// `crate = "..."`: the path to the `tenancy` crate, for crates that re-export it.
    pub(crate) krate: Option<syn::Path>,
}

/// An option's value together with the span of its key.
pub(crate) struct Keyed<T> {
    pub(crate) key: Span,
    pub(crate) value: T,
}

impl Options {
    /// Parses the attribute's arguments, recording every mistake in `cx` and carrying on
    /// with the options that did parse.
    pub(crate) fn parse(cx: &mut Ctxt, args: TokenStream) -> Self {
        let mut options = Self::default();
        parse_each(cx, args, |cx, meta| options.parse_one(cx, meta));
        options
    }

    fn parse_one(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta.path.span();
        if meta.path.is_ident(CACHE) {
            if !(meta.input.is_empty() || meta.input.peek(Token![,])) {
                return Err(meta.error("`cache` takes no value: write `cache` or `cache, ttl = 300`"));
            }
            set_once(cx, &mut self.cache, key, CACHE, key);
        } else if meta.path.is_ident(COLUMN) {
            let value =
                parse_str(meta, "`column` must be a string naming the tenant field, like `column = \"org_id\"`")?;
            set_once(cx, &mut self.column, key, COLUMN, Keyed { key, value });
        } else if meta.path.is_ident(TTL) {
            let value = parse_ttl(meta.value()?)?;
            set_once(cx, &mut self.ttl, key, TTL, Keyed { key, value });
        } else if meta.path.is_ident(CRATE) {
            let lit = parse_str(meta, "`crate` must be a string holding a path, like `crate = \"::tenancy\"`")?;
            let path = lit.parse_with(syn::Path::parse_mod_style).map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    format!("`crate` must be a path, like \"::tenancy\"; found {:?}", lit.value()),
                )
            })?;
            set_once(cx, &mut self.krate, key, CRATE, path);
        } else {
            let name = meta.path.to_token_stream().to_string().replace(' ', "");
            return Err(meta.error(format_args!(
                "unknown tenant_scoped option `{name}`; expected one of `{COLUMN}`, `{CACHE}`, `{TTL}`, `{CRATE}`"
            )));
        }
        Ok(())
    }
}

/// Parses an attribute's comma-separated options with `parse_one`, recording every
/// mistake in `cx` and carrying on with the next option, so one build reports them all.
pub(crate) fn parse_each(
    cx: &mut Ctxt,
    args: TokenStream,
    mut parse_one: impl FnMut(&mut Ctxt, &ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    let parser = syn::meta::parser(|meta| {
        if let Err(error) = parse_one(cx, &meta) {
            cx.syn_error(error);
            // Skip the rest of this option so the ones after it are still checked.
            skip_to_comma(meta.input)?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }
}

/// Stores an option's value, or records an error if the option was already given.
fn set_once<T>(cx: &mut Ctxt, slot: &mut Option<T>, key: Span, name: &str, value: T) {
    if slot.is_some() {
        cx.error(key, format_args!("duplicate tenant_scoped option `{name}`"));
    } else {
        *slot = Some(value);
    }
}

/// `key = "..."`, with `expected` as the message if the value is not a string literal.
fn parse_str(meta: &ParseNestedMeta<'_>, expected: &str) -> syn::Result<LitStr> {
    let input = meta.value()?;
    if input.peek(LitStr) { input.parse() } else { Err(input.error(expected)) }
}

/// `ttl = 300`: a literal, so the value is known at compile time and checked here.
fn parse_ttl(input: ParseStream<'_>) -> syn::Result<u64> {
    const EXPECTED: &str = "`ttl` must be a positive integer number of seconds, like `ttl = 300`";
    // `Lit` also parses a leading minus sign, so `ttl = -5` gets this message rather than
    // syn's generic "expected literal".
    let lit: Lit = input.parse().map_err(|error| syn::Error::new(error.span(), EXPECTED))?;
    match &lit {
        Lit::Int(int) => match int.base10_parse::<u64>() {
            Ok(0) | Err(_) => Err(syn::Error::new(int.span(), EXPECTED)),
            Ok(seconds) => Ok(seconds),
        },
        _ => Err(syn::Error::new(lit.span(), EXPECTED)),
    }
}

/// Consumes tokens up to (not including) the next top-level `,`. Commas inside brackets
/// belong to a group token and are skipped with it.
pub(crate) fn skip_to_comma(input: ParseStream<'_>) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}
