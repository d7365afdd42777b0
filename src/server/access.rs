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

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::http::HttpResponse;
use super::TokenBucket;

/// Shards of the per-IP table: workers contend only when their clients hash alike.
const SHARDS: usize = 16;

/// Elements of a forwarding header examined (from the right); past this many trusted
/// hops, the farthest one examined counts as the client.
const MAX_FORWARDED_ELEMENTS: usize = 64;

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

// ---- origins ----

/// A bad `--allowed-origin` or `--trust-proxy` value, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(&'static str);

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

// ---- addresses ----

/// The key a client's per-IP limits are counted under: its IPv4 address, or its IPv6 /64.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// An address block, `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| ParseError("bad address in CIDR (want 10.0.0.0/8 or ::1/128)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or(ParseError("CIDR prefix too long"))?
            }
            Some(_) => return Err(ParseError("bad prefix length in CIDR")),
        };
        // Host bits set (`10.1.2.3/8`) are cleared: the block is what the prefix says.
        Ok(Cidr { network: mask(addr, prefix), prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(v4.to_bits() & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(v6.to_bits() & keep))
        }
    }
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

/// A node of a forwarding chain (`for=` of RFC 7239 §6, or an `X-Forwarded-For` entry):
/// an address with an optional port (`192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`), quoted or not. `unknown`, obfuscated names (`_hidden`) and
/// anything else are `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = match text.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => text,
    };
    if let Some(bracketed) = text.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = text.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.60;proto=http;by=...`).
/// Parameter names are case-insensitive (RFC 7239 §4).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value.trim())
    })
}

/// Splits a `Forwarded` header into its comma-separated elements, not splitting inside
/// quoted strings (RFC 7230 §3.2.6; a quoted value may hold a comma).
fn forwarded_elements(value: &str) -> Vec<&str> {
    let mut elements = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                elements.push(value.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    elements.push(value.get(start..).unwrap_or_default());
    elements
}

/// The client's address: `peer`, unless `peer` is a trusted proxy, in which case the
/// header `value` (every instance of it, joined with `,`) is read from the right and the
/// first address that is not itself a trusted proxy is the client (see the module header
/// for malformed elements).
pub fn client_ip(peer: IpAddr, trusted: &[Cidr], header: ProxyHeader, value: Option<&str>) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    // A dual-stack listener reports IPv4 clients as IPv4-mapped IPv6: counted as IPv4.
    let peer = peer.to_canonical();
    let Some(value) = value.filter(|_| is_trusted(peer)) else { return peer };
    match header {
        ProxyHeader::XForwardedFor => walk_chain(peer, value.rsplit(',').map(parse_node), is_trusted),
        ProxyHeader::Forwarded => {
            let elements = forwarded_elements(value);
            walk_chain(peer, elements.into_iter().rev().map(|e| forwarded_for(e).and_then(parse_node)), is_trusted)
        }
    }
}

/// Walks a chain of nodes from the nearest hop outwards (see [`client_ip`]).
fn walk_chain(
    peer: IpAddr,
    nodes: impl Iterator<Item = Option<IpAddr>>,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    let mut current = peer;
    for node in nodes.take(MAX_FORWARDED_ELEMENTS) {
        // Malformed, `unknown` or obfuscated: the hop that sent it is as far as we know.
        let Some(ip) = node.map(|ip| ip.to_canonical()) else { return current };
        if !is_trusted(ip) {
            return ip;
        }
        current = ip;
    }
    // Every address trusted (or too long a chain): the farthest trusted hop seen.
    current
}

// ---- per-IP limits ----

#[derive(Debug)]
struct IpEntry {
    /// Open WebSocket connections holding an [`IpSlot`].
    conns: u32,
    /// Handshake tokens (unused without a handshake rate).
    bucket: TokenBucket,
}

/// Per-IP connection counts and handshake buckets, shared by every worker. Memory is
/// bounded: at most `max_tracked_ips` entries (about: workers check the count without a
/// common lock), and an entry goes away once it has no connections and its bucket is full
/// again ([`IpLimits::sweep`]).
#[derive(Debug)]
pub(crate) struct IpLimits {
    max_conns: Option<u32>,
    /// Burst and refill per second.
    handshake_rate: Option<u32>,
    max_tracked: usize,
    shards: Box<[Mutex<HashMap<IpAddr, IpEntry>>]>,
    tracked: AtomicUsize,
    /// Picks a shard; random per process so clients cannot aim at one shard.
    hasher: RandomState,
}

/// A connection's hold on its IP's count; dropping it (when the connection is removed, by
/// whatever path) gives the slot back, exactly once.
#[derive(Debug)]
pub(crate) struct IpSlot {
    limits: Arc<IpLimits>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.limits.release(self.key);
    }
}

impl IpLimits {
    /// Empty limits as `config` sets them.
    pub fn new(config: &AccessConfig) -> Self {
        IpLimits {
            max_conns: config.max_conns_per_ip,
            handshake_rate: config.handshakes_per_ip.filter(|n| *n > 0),
            max_tracked: config.max_tracked_ips,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            tracked: AtomicUsize::new(0),
            hasher: RandomState::new(),
        }
    }

    /// Whether any per-IP limit is on (if not, nothing is tracked).
    pub fn enabled(&self) -> bool {
        self.max_conns.is_some() || self.handshake_rate.is_some()
    }

    /// IPs tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    fn shard(&self, key: IpAddr) -> Option<&Mutex<HashMap<IpAddr, IpEntry>>> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards.get(index)
    }

    /// Admits one upgrade from `ip` (already the client address, see [`client_ip`]): takes
    /// a handshake token, then a connection slot. The slot (when connections are limited)
    /// must live as long as the connection.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Option<IpSlot>, Refusal> {
        if !self.enabled() {
            return Ok(None);
        }
        let key = limit_key(ip);
        let Some(shard) = self.shard(key) else { return Ok(None) };
        // A poisoned lock means another worker panicked, and the server is stopping.
        let Ok(mut table) = shard.lock() else { return Err(Refusal::TooManyClients) };
        let entry = match table.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                if self.tracked.load(Ordering::Relaxed) >= self.max_tracked {
                    return Err(Refusal::TooManyClients);
                }
                self.tracked.fetch_add(1, Ordering::Relaxed);
                let burst = f64::from(self.handshake_rate.unwrap_or(0));
                e.insert(IpEntry { conns: 0, bucket: TokenBucket::full(burst, now) })
            }
        };
        if let Some(rate) = self.handshake_rate {
            let rate = f64::from(rate);
            if let Err(wait) = entry.bucket.take(rate, rate, now) {
                let retry_after_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                return Err(Refusal::HandshakeRate { retry_after_secs });
            }
        }
        let Some(max) = self.max_conns else { return Ok(None) };
        if entry.conns >= max {
            return Err(Refusal::TooManyConnections);
        }
        entry.conns += 1;
        Ok(Some(IpSlot { limits: self.clone(), key }))
    }

    fn release(&self, key: IpAddr) {
        let Some(shard) = self.shard(key) else { return };
        let Ok(mut table) = shard.lock() else { return };
        let Some(entry) = table.get_mut(&key) else { return };
        entry.conns = entry.conns.saturating_sub(1);
        // Without a bucket to refill, an entry without connections is done with now.
        if entry.conns == 0 && self.handshake_rate.is_none() {
            table.remove(&key);
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops entries without connections whose bucket has refilled by `now` (one worker
    /// calls this every tick).
    pub fn sweep(&self, now: Instant) {
        if !self.enabled() {
            return;
        }
        let rate = self.handshake_rate.map(f64::from);
        for shard in self.shards.iter() {
            let Ok(mut table) = shard.lock() else { continue };
            let before = table.len();
            table.retain(|_, e| {
                let refilling = rate.is_some_and(|rate| e.bucket.level(rate, rate, now) < rate);
                e.conns > 0 || refilling
            });
            self.tracked.fetch_sub(before - table.len(), Ordering::Relaxed);
        }
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
        super::parse_node(text)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
