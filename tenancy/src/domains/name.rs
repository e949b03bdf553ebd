//! [`Domain`]: a host name as the domains table stores it, parsed once.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The longest domain name DNS allows, in ASCII (punycode) form.
const MAX_LEN: usize = 253;

/// The longest label of a domain name.
const MAX_LABEL: usize = 63;

/// A customer's domain name, normalised: lower case, no trailing dot, international names
/// in their ASCII (punycode) form, so `Shop.Example.COM.` and `shop.example.com` are one
/// domain and `bücher.example` is stored as `xn--bcher-kva.example`.
///
/// Parsing refuses what no `Host` header of a customer's site can be: a scheme, port,
/// path or user, an IP address, a single label (`localhost`), labels that are empty,
/// longer than 63 bytes or that start or end with `-`, and names longer than 253 bytes.
///
/// ```
/// use tenancy::Domain;
/// let domain: Domain = "Shop.Example.COM.".parse()?;
/// assert_eq!(domain.as_str(), "shop.example.com");
/// assert_eq!("bücher.example".parse::<Domain>()?.as_str(), "xn--bcher-kva.example");
/// assert!("https://shop.example.com".parse::<Domain>().is_err());
/// # Ok::<(), tenancy::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// Parses and normalises `input` (see the type's docs).
    ///
    /// # Errors
    /// [`Error::InvalidDomain`], saying what was wrong.
    pub fn new(input: &str) -> Result<Domain> {
        let invalid =
            |reason: &str| Error::InvalidDomain { given: input.escape_debug().to_string(), reason: reason.to_owned() };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        if trimmed.contains("://") {
            return Err(invalid("give the host name alone, without a scheme such as https://"));
        }
        if let Some(c) = trimmed.chars().find(|c| matches!(c, '/' | '?' | '#' | '@' | '\\')) {
            return Err(invalid(&format!("'{c}' has no place in a host name (no path, query or user)")));
        }
        if trimmed.starts_with('[') || trimmed.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid("an IP address is not a domain"));
        }
        if trimmed.contains(':') {
            return Err(invalid("give the host name without a port"));
        }
        let without_dot = trimmed.strip_suffix('.').unwrap_or(trimmed);
        // URL host parsing: IDNA (UTS 46) mapping to lower-case ASCII, forbidden code points.
        let ascii = match url::Host::parse(without_dot) {
            Ok(url::Host::Domain(ascii)) => ascii,
            Ok(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => return Err(invalid("an IP address is not a domain")),
            Err(err) => return Err(invalid(&format!("not a valid host name ({err})"))),
        };
        if ascii.len() > MAX_LEN {
            return Err(invalid(&format!("longer than {MAX_LEN} bytes")));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("a domain has at least two labels, such as example.com"));
        }
        for label in &labels {
            if label.is_empty() {
                return Err(invalid("it has an empty label ('..')"));
            }
            if label.len() > MAX_LABEL {
                return Err(invalid(&format!("the label '{label}' is longer than {MAX_LABEL} bytes")));
            }
            if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(invalid(&format!("the label '{label}' has characters other than letters, digits, '-'")));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid(&format!("the label '{label}' starts or ends with '-'")));
            }
        }
        if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid("the last label is all digits (an IP address is not a domain)"));
        }
        Ok(Domain(ascii))
    }

    /// The domain as a request's `Host` header names it: the port, if any, removed,
    /// normalised as [`Domain::new`]; `None` when the host is no domain (an IP address).
    pub fn from_host(host: &str) -> Option<Domain> {
        let name = match host.rsplit_once(':') {
            // `[::1]:8080` and bare IPv6 literals are no domain anyway.
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        Domain::new(name).ok()
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A domain the registry stored (already normalised).
    pub(crate) fn from_stored(stored: String) -> Domain {
        Domain(stored)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Domain {
    type Err = Error;

    fn from_str(input: &str) -> Result<Domain> {
        Domain::new(input)
    }
}

impl TryFrom<&str> for Domain {
    type Error = Error;

    fn try_from(input: &str) -> Result<Domain> {
        Domain::new(input)
    }
}

impl TryFrom<String> for Domain {
    type Error = Error;

    fn try_from(input: String) -> Result<Domain> {
        Domain::new(&input)
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        Domain::new(input).unwrap_or_else(|err| panic!("{input}: {err}")).to_string()
    }

    fn refused(input: &str) -> String {
        match Domain::new(input) {
            Ok(domain) => panic!("{input} parsed as {domain}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn normalises_case_trailing_dot_and_international_names() {
        assert_eq!(ok("Shop.Example.COM."), "shop.example.com");
        assert_eq!(ok("  shop.example.com "), "shop.example.com");
        assert_eq!(ok("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(ok("BÜCHER.example"), "xn--bcher-kva.example");
        assert_eq!(ok("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(ok("a-b.c_d.example.co.uk"), "a-b.c_d.example.co.uk");
    }

    #[test]
    fn refuses_what_is_no_domain_with_the_reason() {
        assert!(refused("").contains("empty"));
        assert!(refused("https://shop.example.com").contains("scheme"));
        assert!(refused("shop.example.com/path").contains("'/'"));
        assert!(refused("user@shop.example.com").contains("'@'"));
        assert!(refused("shop.example.com:8080").contains("port"));
        assert!(refused("127.0.0.1").contains("IP address"));
        assert!(refused("[::1]").contains("IP address"));
        assert!(refused("::1").contains("IP address"));
        let numeric = refused("1.2.3.400");
        assert!(
            numeric.contains("digits") || numeric.contains("IP") || numeric.contains("valid host name"),
            "{numeric}"
        );
        assert!(refused("localhost").contains("two labels"));
        assert!(refused("shop..example.com").contains("empty label"));
        assert!(refused("-shop.example.com").contains("'-'"));
        assert!(refused("shop example.com").contains("valid host name"));
        assert!(refused(&format!("{}.com", "a".repeat(64))).contains("63"));
        let long = format!("{}com", "abcdefghi.".repeat(26));
        assert!(refused(&long).contains("253"));
        assert_eq!(ok("shop.example.com\n"), "shop.example.com", "surrounding whitespace is no part of it");
    }

    #[test]
    fn a_host_header_drops_its_port() {
        assert_eq!(Domain::from_host("Shop.Example.com:8443").map(|d| d.to_string()), Some("shop.example.com".into()));
        assert_eq!(Domain::from_host("shop.example.com").map(|d| d.to_string()), Some("shop.example.com".into()));
        assert_eq!(Domain::from_host("127.0.0.1:80"), None);
        assert_eq!(Domain::from_host("[::1]:80"), None);
        assert_eq!(Domain::from_host("localhost:80"), None);
    }
}
