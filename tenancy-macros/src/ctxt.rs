//! Error collection, after serde_derive's `Ctxt`.
//!
//! Every check reports into one [`Ctxt`] instead of returning at its first error, so a
//! model with three mistakes shows three errors in one build rather than one per build.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// The errors of one `#[tenant_scoped]` invocation, in the order they were found.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: Span, message: impl Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    /// Records an error spanning all of `tokens` (a whole type or path, say).
    pub(crate) fn error_spanned_by(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error syn produced.
    pub(crate) fn syn_error(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// All recorded errors as one (rendered as one `compile_error!` each), or `Ok` if none.
    pub(crate) fn check(self) -> syn::Result<()> {
        let mut errors = self.errors.into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for error in errors {
            combined.combine(error);
        }
        Err(combined)
    }
}
