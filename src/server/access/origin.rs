//! The `Origin` allow-list: origins parsed into their parts and compared as RFC 6454
//! says (see the rules in `access/mod.rs`).

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// A bad `--allowed-origin` or `--trust-proxy` value, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub(super) &'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ParseError {}

/// An origin split into its parts, borrowed from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    /// The effective port (explicit, or the scheme's default); `None`: neither.
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

/// Parses `scheme://host[:port]`. The host is a name (labels of letters, digits, `-`, `_`,
/// and `*` for patterns to check), an IPv4 address, or a bracketed IPv6 address.
fn parse_origin(text: &str) -> Result<Origin<'_>, ParseError> {
    let (scheme, rest) = text.split_once("://").ok_or(ParseError("an origin is scheme://host[:port]"))?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(ParseError("bad scheme in origin"));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').ok_or(ParseError("unclosed [ in origin"))?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(ParseError("bad IPv6 address in origin"));
        }
        // The brackets stay part of the host: compared as text like any host.
        let host = rest.get(..inside.len() + 2).ok_or(ParseError("bad IPv6 address in origin"))?;
        (host, after)
    } else {
        match rest.find(':') {
            Some(i) => (rest.get(..i).unwrap_or_default(), rest.get(i..).unwrap_or_default()),
            None => (rest, ""),
        }
    };
    if !host.starts_with('[') {
        let label_ok =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'));
        if !host.split('.').all(label_ok) {
            return Err(ParseError("bad host in origin (nothing may follow host:port, not even /)"));
        }
    }
    let port = match port {
        "" => default_port(scheme),
        _ => {
            let digits = port.strip_prefix(':').ok_or(ParseError("bad port in origin"))?;
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError("bad port in origin"));
            }
            Some(digits.parse().map_err(|_| ParseError("bad port in origin"))?)
        }
    };
    Ok(Origin { scheme, host, port })
}

/// One `--allowed-origin`: an exact origin, a subdomain wildcard, or `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// The opaque origin `null` (sandboxed iframes, `file:` pages): allowed only this way.
    Null,
    /// `scheme://host[:port]`: that origin only.
    Exact {
        /// Lowercase.
        scheme: String,
        /// Lowercase; an IPv6 address keeps its brackets.
        host: String,
        /// The effective port (explicit, or the scheme's default); `None`: neither.
        port: Option<u16>,
    },
    /// `scheme://*.suffix`: every subdomain of `suffix`, at any depth.
    Subdomains {
        /// Lowercase.
        scheme: String,
        /// Lowercase, with its leading dot (`.example.com`).
        suffix: String,
        /// The effective port (explicit, or the scheme's default); `None`: neither.
        port: Option<u16>,
    },
}

impl FromStr for OriginPattern {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        if text == "null" {
            return Ok(OriginPattern::Null);
        }
        let origin = parse_origin(text)?;
        let scheme = origin.scheme.to_ascii_lowercase();
        let host = origin.host.to_ascii_lowercase();
        match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && !suffix.contains('*') => {
                Ok(OriginPattern::Subdomains { scheme, suffix: suffix.to_owned(), port: origin.port })
            }
            Some(_) => Err(ParseError("a wildcard origin is scheme://*.domain")),
            None if host.contains('*') => Err(ParseError("a wildcard origin is scheme://*.domain")),
            None => Ok(OriginPattern::Exact { scheme, host, port: origin.port }),
        }
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, star, host, port) = match self {
            OriginPattern::Null => return f.write_str("null"),
            OriginPattern::Exact { scheme, host, port } => (scheme, "", host, port),
            OriginPattern::Subdomains { scheme, suffix, port } => (scheme, "*", suffix, port),
        };
        write!(f, "{scheme}://{star}{host}")?;
        match port {
            Some(p) if Some(*p) != default_port(scheme) => write!(f, ":{p}"),
            _ => Ok(()),
        }
    }
}

impl OriginPattern {
    /// Whether the `Origin` header value `origin` matches (see the module header's rules).
    pub fn matches(&self, origin: &str) -> bool {
        if origin == "null" {
            return *self == OriginPattern::Null;
        }
        let Ok(o) = parse_origin(origin) else { return false };
        // A `*` in a header is not a wildcard: only patterns have those.
        if o.host.contains('*') {
            return false;
        }
        match self {
            OriginPattern::Null => false,
            OriginPattern::Exact { scheme, host, port } => {
                o.scheme.eq_ignore_ascii_case(scheme) && o.host.eq_ignore_ascii_case(host) && o.port == *port
            }
            OriginPattern::Subdomains { scheme, suffix, port } => {
                let host = o.host.as_bytes();
                o.scheme.eq_ignore_ascii_case(scheme)
                    && o.port == *port
                    && host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
            }
        }
    }
}
