//! How cache keys are spelled in the store.
//!
//! A tenant's key is `<prefix>:{<tenant>}:<model>:<key>` and a global key is
//! `<prefix>:g:<model>:<key>`, where each component is *encoded*: ASCII letters,
//! digits, `_`, `-` and `.` stay as they are and every other byte becomes `%XX`
//! (upper-case hex). So the separator `:`, Redis's glob characters `*`, `?`, `[`, `]`,
//! `\`, the hash-tag braces `{`, `}` and `%` itself never appear raw in a component.
//!
//! That gives the three properties the tenant boundary rests on:
//!
//! - **Injective.** Encoding a component is reversible and its output has no `:`, `{`
//!   or `}`, so a key splits back into its components in exactly one way: two different
//!   (prefix, tenant, model, key) tuples never share a store key, and a tenant key
//!   (`{` after the first `:`) is never a global key (`g` after it).
//! - **Glob-safe.** The pattern that finds one tenant's keys, `<prefix>:{<tenant>}:*`,
//!   has no glob character but the final `*`, so it matches exactly the keys that start
//!   with that namespace, and the closing `}` keeps `acme` from matching `acme2`.
//! - **One slot per tenant.** The first `{...}` of a key is the tenant, which Redis
//!   Cluster takes as the key's hash tag: all of a tenant's keys live in one slot.

use std::fmt::Write as _;

/// Whether `byte` stands for itself in an encoded component.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')
}

/// Appends the encoding of `component` to `out`.
pub(crate) fn push_component(out: &mut String, component: &str) {
    for byte in component.bytes() {
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The encoding of one component.
pub(crate) fn encode(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    push_component(&mut out, component);
    out
}

/// `<prefix>:{<tenant>}:`, the start of every key of the tenant.
pub(crate) fn tenant_namespace(prefix: &str, tenant: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + tenant.len() + 4);
    push_component(&mut out, prefix);
    out.push_str(":{");
    push_component(&mut out, tenant);
    out.push_str("}:");
    out
}

/// `<prefix>:{`, the start of every tenant key under `prefix`.
pub(crate) fn tenant_keys_start(prefix: &str) -> String {
    let mut out = encode(prefix);
    out.push_str(":{");
    out
}

/// The (encoded) tenant of a store key that begins with `start` ([`tenant_keys_start`]).
pub(crate) fn tenant_of_key<'a>(start: &str, store_key: &'a str) -> Option<&'a str> {
    let (tenant, _) = store_key.strip_prefix(start)?.split_once("}:")?;
    Some(tenant)
}

/// `<prefix>:g:`, the start of every global key.
pub(crate) fn global_namespace(prefix: &str) -> String {
    let mut out = encode(prefix);
    out.push_str(":g:");
    out
}

/// `<namespace><model>:<key>`.
pub(crate) fn full_key(namespace: &str, model: &str, key: &str) -> String {
    let mut out = String::with_capacity(namespace.len() + model.len() + key.len() + 1);
    out.push_str(namespace);
    push_component(&mut out, model);
    out.push(':');
    push_component(&mut out, key);
    out
}

/// The Redis `MATCH` pattern of every key under `namespace` (as made by
/// [`tenant_namespace`]): the namespace holds no glob character, so only the final `*`
/// is one.
#[cfg_attr(not(any(test, feature = "redis")), allow(dead_code, reason = "only the Redis backend scans"))]
pub(crate) fn namespace_pattern(namespace: &str) -> String {
    debug_assert!(!namespace.bytes().any(|b| matches!(b, b'*' | b'?' | b'[' | b']' | b'\\')));
    format!("{namespace}*")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inverse of [`encode`], for the tests: `None` for anything `encode` cannot produce.
    fn decode(encoded: &str) -> Option<String> {
        let bytes = encoded.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    let hex = encoded.get(i + 1..i + 3)?;
                    if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                        return None;
                    }
                    let byte = u8::from_str_radix(hex, 16).ok()?;
                    if is_plain(byte) {
                        return None;
                    }
                    out.push(byte);
                    i += 3;
                }
                b if is_plain(b) => {
                    out.push(b);
                    i += 1;
                }
                _ => return None,
            }
        }
        String::from_utf8(out).ok()
    }

    /// Splits a tenant key back into (prefix, tenant, model, key).
    fn parse_tenant_key(key: &str) -> Option<(String, String, String, String)> {
        let (prefix, rest) = key.split_once(":{")?;
        let (tenant, rest) = rest.split_once("}:")?;
        let (model, key) = rest.split_once(':')?;
        Some((decode(prefix)?, decode(tenant)?, decode(model)?, decode(key)?))
    }

    /// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[...]` with ranges and `^`,
    /// and `\` escapes. Used to show that a tenant's pattern matches its keys and nothing
    /// else, as Redis would evaluate it.
    fn glob(pattern: &[u8], string: &[u8]) -> bool {
        match pattern.split_first() {
            None => string.is_empty(),
            Some((b'*', rest)) => (0..=string.len()).any(|skip| glob(rest, &string[skip..])),
            Some((b'?', rest)) => !string.is_empty() && glob(rest, &string[1..]),
            Some((b'\\', rest)) if !rest.is_empty() => {
                string.first() == Some(&rest[0]) && glob(&rest[1..], &string[1..])
            }
            Some((b'[', rest)) => {
                let Some(&c) = string.first() else { return false };
                let (negate, mut p) = match rest.first() {
                    Some(b'^') => (true, &rest[1..]),
                    _ => (false, rest),
                };
                let mut matched = false;
                loop {
                    match p {
                        [] => return false,
                        [b']', tail @ ..] => {
                            p = tail;
                            break;
                        }
                        [b'\\', x, tail @ ..] => {
                            matched |= *x == c;
                            p = tail;
                        }
                        [a, b'-', z, tail @ ..] if *z != b']' => {
                            let (lo, hi) = if a <= z { (*a, *z) } else { (*z, *a) };
                            matched |= (lo..=hi).contains(&c);
                            p = tail;
                        }
                        [x, tail @ ..] => {
                            matched |= *x == c;
                            p = tail;
                        }
                    }
                }
                matched != negate && glob(p, &string[1..])
            }
            Some((x, rest)) => string.first() == Some(x) && glob(rest, &string[1..]),
        }
    }

    /// Every string of up to `max_len` characters over an alphabet of the characters
    /// that could break an encoding: separators, glob and escape characters, braces,
    /// `%` and what looks like an escape, a prefix pair (`a`, `a2`), multi-byte UTF-8.
    fn tricky_strings(max_len: usize) -> Vec<String> {
        const ALPHABET: [&str; 14] = ["a", "2", ":", "*", "?", "[", "]", "\\", "%", "{", "}", "%3A", "é", "-"];
        let mut all = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for s in &frontier {
                for c in ALPHABET {
                    next.push(format!("{s}{c}"));
                }
            }
            all.extend(next.iter().cloned());
            frontier = next;
        }
        all
    }

    #[test]
    fn plain_components_are_readable() {
        assert_eq!(tenant_namespace("tenancy", "acme"), "tenancy:{acme}:");
        assert_eq!(
            full_key(&tenant_namespace("tenancy", "acme"), "sessions", "abc-1"),
            "tenancy:{acme}:sessions:abc-1"
        );
        assert_eq!(full_key(&global_namespace("tenancy"), "plans", "gold"), "tenancy:g:plans:gold");
        assert_eq!(encode("a:b*c?[d]\\e%f{g}"), "a%3Ab%2Ac%3F%5Bd%5D%5Ce%25f%7Bg%7D");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn encoding_round_trips_and_never_emits_special_bytes() {
        for s in tricky_strings(3) {
            let encoded = encode(&s);
            assert_eq!(decode(&encoded).as_deref(), Some(s.as_str()), "{s:?}");
            assert!(
                !encoded.bytes().any(|b| b":*?[]\\{}".contains(&b)),
                "{s:?} encodes to {encoded:?}, which has a special byte"
            );
        }
    }

    #[test]
    fn tenant_keys_parse_back_uniquely() {
        let strings = tricky_strings(2);
        let mut seen = std::collections::HashMap::new();
        for tenant in &strings {
            let namespace = tenant_namespace("p:*", tenant);
            for model in strings.iter().step_by(7) {
                for key in strings.iter().step_by(3) {
                    let full = full_key(&namespace, model, key);
                    let parsed = parse_tenant_key(&full);
                    assert_eq!(parsed, Some(("p:*".to_owned(), tenant.clone(), model.clone(), key.clone())));
                    let tuple = (tenant.clone(), model.clone(), key.clone());
                    assert!(seen.insert(full.clone(), tuple).is_none(), "{full:?} made twice");
                    assert!(!full.starts_with(&global_namespace("p:*")));
                }
            }
        }
    }

    #[test]
    fn a_tenants_pattern_matches_its_keys_and_no_one_elses() {
        let strings = tricky_strings(2);
        let tenants: Vec<&String> = strings.iter().filter(|s| !s.is_empty()).collect();
        let samples: Vec<&String> = strings.iter().step_by(29).collect();
        for prefix in ["tenancy", "app*", "x[a-z]?"] {
            for tenant in &tenants {
                let namespace = tenant_namespace(prefix, tenant);
                let pattern = namespace_pattern(&namespace);
                for other in tenants.iter().step_by(5).chain([tenant]) {
                    let other_namespace = tenant_namespace(prefix, other);
                    for model in &samples {
                        for key in &samples {
                            let full = full_key(&other_namespace, model, key);
                            assert_eq!(
                                glob(pattern.as_bytes(), full.as_bytes()),
                                other == tenant,
                                "pattern {pattern:?} vs key {full:?}"
                            );
                        }
                    }
                }
                let global = full_key(&global_namespace(prefix), tenant, tenant);
                assert!(!glob(pattern.as_bytes(), global.as_bytes()));
            }
        }
    }

    #[test]
    fn acme_never_matches_acme2_and_hash_tag_is_the_tenant() {
        let pattern = namespace_pattern(&tenant_namespace("tenancy", "acme"));
        assert!(glob(pattern.as_bytes(), b"tenancy:{acme}:m:k"));
        assert!(!glob(pattern.as_bytes(), b"tenancy:{acme2}:m:k"));
        // Redis Cluster hashes the bytes between the first `{` and the next `}`.
        for tenant in ["acme", "a}b", "{x}"] {
            let key = full_key(&tenant_namespace("pre{fix}", tenant), "m{", "}k");
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            assert_eq!(decode(&key[open + 1..close]).as_deref(), Some(tenant));
        }
    }

    #[test]
    fn the_glob_helper_is_a_real_matcher() {
        // So the tests above would catch a raw metacharacter.
        assert!(glob(b"a*", b"a:{x}"));
        assert!(glob(b"a?c", b"abc"));
        assert!(glob(b"[a-c]x", b"bx"));
        assert!(!glob(b"[^a-c]x", b"bx"));
        assert!(glob(b"\\*", b"*"));
        assert!(!glob(b"\\*", b"a"));
        assert!(glob(b"p:{a*}:*", b"p:{ab}:m:k"), "an unencoded `*` in a tenant would leak");
    }
}
