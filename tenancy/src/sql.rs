//! The one place where names reach SQL text.
//!
//! Values are always bound parameters. PostgreSQL does not accept parameters in DDL
//! (`CREATE ROLE`, `CREATE DATABASE`, `GRANT`), so identifiers go through
//! [`quote_ident`] and the few DDL literals (a SCRAM verifier) through [`quote_literal`].
//! Both are applied to names that were already validated; quoting is the second fence.

/// Quotes an SQL identifier: `acme` becomes `"acme"`, an embedded `"` is doubled.
///
/// ```
/// assert_eq!(tenancy::sql::quote_ident("acme"), "\"acme\"");
/// assert_eq!(tenancy::sql::quote_ident("a\"b"), "\"a\"\"b\"");
/// ```
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars().filter(|c| *c != '\0') {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Quotes an SQL string literal for the places PostgreSQL accepts no parameter.
///
/// Relies on `standard_conforming_strings = on` (the default since PostgreSQL 9.1), under
/// which a backslash is an ordinary character and only `'` needs doubling.
///
/// ```
/// assert_eq!(tenancy::sql::quote_literal("it's"), "'it''s'");
/// ```
pub fn quote_literal(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars().filter(|c| *c != '\0') {
        if c == '\'' {
            quoted.push('\'');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}
