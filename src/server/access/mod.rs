//! Who may open a WebSocket, decided on the upgrade before the handler sees it: the
//! `Origin` allow-list ([`OriginPattern`]), the client address behind trusted proxies
//! ([`Cidr`], [`client_ip`]), and the per-IP limits shared by every worker (`IpLimits`).
//!
//! The parsers (origins, CIDRs, `Forwarded` / `X-Forwarded-For`) are pure functions of
//! their input, never panic and allocate little; the fuzz target `access` drives them.
//! The per-IP table is touched on upgrade and on close only, never on the message path.
//!
//! Rules, stated once:
//! - Origins (RFC 6454 §6.2 serialization, `scheme://host[:port]`, nothing after) compare
//!   scheme and host ASCII-case-insensitively and by effective port: a missing port is the
//!   scheme's default (80 for http/ws, 443 for https/wss), so `https://a.com` and
//!   `https://a.com:443` are the same origin; other schemes without a port only match
//!   patterns without a port. `https://*.example.com` matches any subdomain at any depth
//!   (`a.example.com`, `a.b.example.com`) with the same scheme and port, never
//!   `example.com` itself. The opaque origin `null` matches only the exact pattern `null`.
//! - Client IP: an IPv4-mapped IPv6 address counts as its IPv4 address; IPv6 clients are
//!   limited per /64 prefix (one host usually holds a whole /64, so per-address limits
//!   would be a formality), IPv4 clients per address.
//! - Behind proxies: only when the TCP peer is in a trusted CIDR is the chosen header read,
//!   from the right, skipping trusted hops; the first untrusted address is the client. An
//!   element that is malformed, `unknown` or obfuscated ends the walk at the hop that sent
//!   it (the nearest trusted proxy): a proxy's garbage never lets a client pick its address.
//!
//! Files: `origin.rs` (the allow-list), `address.rs` (CIDRs, forwarding headers, the
//! client address), `limits.rs` (the per-IP table).

mod address;
mod limits;
mod origin;

use std::net::IpAddr;

use super::http::HttpResponse;

pub use address::{client_ip, Cidr};
pub(crate) use limits::{IpLimits, IpSlot};
pub use origin::{OriginPattern, ParseError};

// ---- configuration ----

/// Which header a trusted proxy states the client address in. Only one is read: a proxy
/// that sets one passes the other through from the client unchecked, so reading both would
/// let a client choose its own address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the de facto standard).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The transport's admission rules (`Config::access`). The default admits everyone, as
/// before these rules existed.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// Origins allowed to open WebSockets; empty: every origin (-> 403 when not matched).
    pub allowed_origins: Vec<OriginPattern>,
    /// Refuse upgrades without an `Origin` header (-> 403). Non-browser clients send none.
    pub require_origin: bool,
    /// Open WebSocket connections per client IP across all workers (-> 429).
    pub max_conns_per_ip: Option<u32>,
    /// Upgrades per second per client IP, a token bucket with this burst (-> 429 with
    /// `Retry-After`).
    pub handshakes_per_ip: Option<u32>,
    /// Client IPs tracked at once by the per-IP limits; a new IP beyond it gets 503 until
    /// entries expire (fail closed: a flood of addresses cannot switch the limits off).
    pub max_tracked_ips: usize,
    /// Proxies whose client-address header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The header those proxies set.
    pub proxy_header: ProxyHeader,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            allowed_origins: Vec::new(),
            require_origin: false,
            max_conns_per_ip: None,
            handshakes_per_ip: None,
            max_tracked_ips: 100_000,
            trusted_proxies: Vec::new(),
            proxy_header: ProxyHeader::XForwardedFor,
        }
    }
}

/// Why an upgrade was refused here; `response` says it on the wire, and
/// `metrics::HandshakeFailure::from` names it in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` present and not on the allow-list (403).
    OriginNotAllowed,
    /// No `Origin` and `require_origin` (403).
    OriginMissing,
    /// Over `handshakes_per_ip` (429).
    HandshakeRate {
        /// Seconds until the next handshake token (the `Retry-After` value).
        retry_after_secs: u64,
    },
    /// At `max_conns_per_ip` (429).
    TooManyConnections,
    /// The per-IP table is at `max_tracked_ips` (503).
    TooManyClients,
}

impl Refusal {
    /// The HTTP response; the server closes the connection after it.
    pub fn response(self) -> HttpResponse {
        match self {
            Refusal::OriginNotAllowed => HttpResponse::text(403, "origin not allowed\n"),
            Refusal::OriginMissing => HttpResponse::text(403, "origin required\n"),
            Refusal::HandshakeRate { retry_after_secs } => {
                HttpResponse::text(429, "too many handshakes from this address\n")
                    .with_header("Retry-After", retry_after_secs.to_string())
            }
            Refusal::TooManyConnections => HttpResponse::text(429, "too many connections from this address\n"),
            Refusal::TooManyClients => HttpResponse::text(503, "too many clients\n").with_header("Retry-After", "1"),
        }
    }
}

impl AccessConfig {
    /// Checks a request's `Origin` (`None`: the header is absent).
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), Refusal> {
        match origin {
            None if self.require_origin => Err(Refusal::OriginMissing),
            None => Ok(()),
            Some(_) if self.allowed_origins.is_empty() => Ok(()),
            Some(o) if self.allowed_origins.iter().any(|p| p.matches(o)) => Ok(()),
            Some(_) => Err(Refusal::OriginNotAllowed),
        }
    }

    /// The client's address for `peer` and a request's forwarding headers.
    pub fn client_ip(&self, peer: IpAddr, x_forwarded_for: Option<&str>, forwarded: Option<&str>) -> IpAddr {
        let header = match self.proxy_header {
            ProxyHeader::XForwardedFor => x_forwarded_for,
            ProxyHeader::Forwarded => forwarded,
        };
        client_ip(peer, &self.trusted_proxies, self.proxy_header, header)
    }
}

/// Test and fuzz doors (the `fuzzing` feature; never for production builds): internals the
/// fuzz target `access` checks on their own.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing {
    use std::net::IpAddr;

    /// One node of a forwarding chain, as the client-address walk reads it (`unknown`,
    /// obfuscated and malformed nodes are `None`).
    pub fn parse_node(text: &str) -> Option<IpAddr> {
        super::address::parse_node(text)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::address::{limit_key, parse_node};
    use super::*;

    fn pattern(text: &str) -> OriginPattern {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn exact_origins_compare_scheme_host_and_effective_port() {
        let p = pattern("https://App.Example.com");
        for yes in ["https://app.example.com", "HTTPS://APP.EXAMPLE.COM", "https://app.example.com:443"] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com/",
            "https://app.example.com.evil.com",
            "https://xapp.example.com",
            "https://sub.app.example.com",
            "app.example.com",
            "",
            "null",
        ] {
            assert!(!p.matches(no), "{no}");
        }
        let local = pattern("http://localhost:3000");
        assert!(local.matches("http://localhost:3000"));
        assert!(!local.matches("http://localhost"));
        assert!(!local.matches("http://localhost:30000"));
        assert!(pattern("http://localhost:80").matches("http://localhost"), "80 is http's default port");
        assert!(pattern("http://[::1]:8080").matches("http://[::1]:8080"));
        assert!(pattern("chrome-extension://abc").matches("chrome-extension://abc"));
        assert!(!pattern("chrome-extension://abc").matches("chrome-extension://abc:1"));
    }

    #[test]
    fn wildcards_match_subdomains_at_any_depth_only() {
        let p = pattern("https://*.example.com");
        for yes in ["https://a.example.com", "https://a.b.example.com", "https://A.EXAMPLE.COM:443"] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in [
            "https://example.com",
            "https://.example.com",
            "https://evil-example.com",
            "https://a.example.com.evil.com",
            "http://a.example.com",
            "wss://a.example.com",
            "https://a.example.com:8443",
            "https://*.example.com",
            "null",
        ] {
            assert!(!p.matches(no), "{no}");
        }
        assert!(pattern("http://*.example.com:8080").matches("http://a.example.com:8080"));
        assert!(!pattern("http://*.example.com:8080").matches("http://a.example.com"));
    }

    #[test]
    fn null_is_allowed_only_by_name() {
        assert!(pattern("null").matches("null"));
        assert!(!pattern("https://*.example.com").matches("null"));
        assert!(!pattern("null").matches("https://null"));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in [
            "",
            "*",
            "example.com",
            "https://",
            "https://a.*.com",
            "https://*example.com",
            "https://*",
            "https://*.",
            "https://example.com/",
            "https://example.com:99999",
            "https://example.com:",
            "https://exa mple.com",
            "https://[::1",
            "https://[zz]",
            "1https://x",
        ] {
            assert!(bad.parse::<OriginPattern>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(pattern("https://*.Example.com:443").to_string(), "https://*.example.com");
        assert_eq!(pattern("http://localhost:3000").to_string(), "http://localhost:3000");
    }

    #[test]
    fn origin_policy_outcomes() {
        let mut config = AccessConfig::default();
        assert_eq!(config.check_origin(Some("https://anything.test")), Ok(()), "no list: every origin");
        assert_eq!(config.check_origin(None), Ok(()));
        config.allowed_origins = vec![pattern("https://app.example.com")];
        assert_eq!(config.check_origin(Some("https://app.example.com")), Ok(()));
        assert_eq!(config.check_origin(Some("https://evil.test")), Err(Refusal::OriginNotAllowed));
        let not_utf8 = "https://\u{fffd}app.example.com"; // how the parser keeps bad bytes
        assert_eq!(config.check_origin(Some(not_utf8)), Err(Refusal::OriginNotAllowed));
        assert_eq!(config.check_origin(None), Ok(()), "non-browser clients send no Origin");
        config.require_origin = true;
        assert_eq!(config.check_origin(None), Err(Refusal::OriginMissing));
        assert_eq!(Refusal::OriginNotAllowed.response().status, 403);
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let ten: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(ten.contains(ip("10.255.0.1")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped counts as IPv4");
        assert!(!ten.contains(ip("11.0.0.1")));
        assert!(!ten.contains(ip("::a00:1")));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("::1")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8", "host bits cleared");
        for bad in ["", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/-1", "10.0.0.0/+8", "x/8", "/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn nodes_parse_with_ports_brackets_and_quotes() {
        assert_eq!(parse_node(" 192.0.2.1 "), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("192.0.2.1:8080"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("\"[2001:db8::1]:1234\""), Some(ip("2001:db8::1")));
        for bad in
            ["", "unknown", "_hidden", "[2001:db8::1", "[2001:db8::1]x", "1.2.3.4:", "1.2.3.4:x", "\"1.2.3.4", "a:b:c"]
        {
            assert_eq!(parse_node(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let trusted = cidrs(&["127.0.0.0/8", "10.0.0.0/8"]);
        let xff = ProxyHeader::XForwardedFor;
        // Untrusted peer: the header is the client's own claim, ignored.
        assert_eq!(client_ip(ip("192.0.2.9"), &trusted, xff, Some("203.0.113.1")), ip("192.0.2.9"));
        // Trusted peer: rightmost untrusted address; a client's forged prefix is ignored.
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, xff, Some("1.1.1.1, 203.0.113.1")), ip("203.0.113.1"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &trusted, xff, Some("1.1.1.1, 203.0.113.1, 10.0.0.2")),
            ip("203.0.113.1")
        );
        // Every hop trusted: the farthest one.
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, xff, Some("10.0.0.3, 10.0.0.2")), ip("10.0.0.3"));
        // Malformed where it matters: the trusted hop that sent it.
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, xff, Some("1.1.1.1, garbage, 10.0.0.2")), ip("10.0.0.2"));
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, xff, Some("")), ip("127.0.0.1"));
        // Malformed where it does not: ignored.
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, xff, Some("garbage, 203.0.113.1")), ip("203.0.113.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &trusted, xff, None), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &trusted, xff, Some("203.0.113.1")), ip("203.0.113.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &[], xff, Some("203.0.113.1")), ip("127.0.0.1"), "nothing trusted");
    }

    #[test]
    fn rfc7239_forwarded_elements() {
        let trusted = cidrs(&["127.0.0.0/8"]);
        let fwd = ProxyHeader::Forwarded;
        let client = |value| client_ip(ip("127.0.0.1"), &trusted, fwd, Some(value));
        assert_eq!(client("for=192.0.2.43"), ip("192.0.2.43"));
        assert_eq!(client("For=\"[2001:db8:cafe::17]:4711\""), ip("2001:db8:cafe::17"));
        assert_eq!(client("for=192.0.2.60;proto=http;by=203.0.113.43"), ip("192.0.2.60"));
        assert_eq!(client("for=192.0.2.43, for=198.51.100.17"), ip("198.51.100.17"));
        assert_eq!(client("for=192.0.2.43, for=127.0.0.5"), ip("192.0.2.43"));
        assert_eq!(client("for=1.1.1.1;host=\"a,b\", for=192.0.2.43"), ip("192.0.2.43"), "comma inside quotes");
        assert_eq!(client("for=unknown"), ip("127.0.0.1"));
        assert_eq!(client("for=_hidden, for=127.0.0.9"), ip("127.0.0.9"));
        assert_eq!(client("proto=https"), ip("127.0.0.1"), "no for=");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), limit_key(ip("2001:db8:1:2:bbbb::2")));
        assert_ne!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:3::1")));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_ne!(limit_key(ip("192.0.2.1")), limit_key(ip("192.0.2.2")));
    }

    fn limits(conns: Option<u32>, rate: Option<u32>, max_tracked: usize) -> Arc<IpLimits> {
        Arc::new(IpLimits::new(&AccessConfig {
            max_conns_per_ip: conns,
            handshakes_per_ip: rate,
            max_tracked_ips: max_tracked,
            ..AccessConfig::default()
        }))
    }

    #[test]
    fn connection_slots_are_counted_and_given_back_on_drop() {
        let limits = limits(Some(2), None, 100);
        let now = Instant::now();
        let a = limits.admit(ip("192.0.2.1"), now).unwrap();
        let b = limits.admit(ip("192.0.2.1"), now).unwrap();
        assert!(a.is_some() && b.is_some());
        assert_eq!(limits.admit(ip("192.0.2.1"), now).unwrap_err(), Refusal::TooManyConnections);
        assert!(limits.admit(ip("192.0.2.2"), now).unwrap().is_some(), "another IP has its own count");
        drop(a);
        let c = limits.admit(ip("192.0.2.1"), now).unwrap();
        drop((b, c));
        assert_eq!(limits.tracked(), 0, "entries without connections go at once when no rate is kept");
    }

    #[test]
    fn handshake_bucket_refills_at_its_rate() {
        let limits = limits(None, Some(2), 100);
        let t0 = Instant::now();
        assert!(limits.admit(ip("192.0.2.1"), t0).is_ok());
        assert!(limits.admit(ip("192.0.2.1"), t0).is_ok());
        assert_eq!(limits.admit(ip("192.0.2.1"), t0).unwrap_err(), Refusal::HandshakeRate { retry_after_secs: 1 });
        assert!(limits.admit(ip("192.0.2.1"), t0 + Duration::from_millis(400)).is_err(), "0.8 tokens");
        assert!(limits.admit(ip("192.0.2.1"), t0 + Duration::from_millis(600)).is_ok(), "1.2 tokens");
        limits.sweep(t0 + Duration::from_millis(700));
        assert_eq!(limits.tracked(), 1, "bucket not full yet");
        limits.sweep(t0 + Duration::from_secs(2));
        assert_eq!(limits.tracked(), 0, "full bucket, no connections: gone");
    }

    #[test]
    fn the_table_is_capped_and_fails_closed() {
        let limits = limits(Some(5), Some(10), 2);
        let now = Instant::now();
        let _a = limits.admit(ip("192.0.2.1"), now).unwrap();
        let _b = limits.admit(ip("192.0.2.2"), now).unwrap();
        assert_eq!(limits.admit(ip("192.0.2.3"), now).unwrap_err(), Refusal::TooManyClients);
        assert!(limits.admit(ip("192.0.2.1"), now).is_ok(), "known IPs still get in");
        assert_eq!(Refusal::TooManyClients.response().status, 503);
    }

    #[test]
    fn limits_off_track_nothing() {
        let limits = limits(None, None, 0);
        assert!(!limits.enabled());
        assert!(limits.admit(ip("192.0.2.1"), Instant::now()).unwrap().is_none());
        assert_eq!(limits.tracked(), 0);
    }
}
