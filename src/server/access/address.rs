//! Client addresses: CIDRs of trusted proxies, the forwarding headers they set
//! (`X-Forwarded-For`, RFC 7239 `Forwarded`), and the walk that finds the client in them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::{ParseError, ProxyHeader};

/// Elements of a forwarding header examined (from the right); past this many trusted
/// hops, the farthest one examined counts as the client.
const MAX_FORWARDED_ELEMENTS: usize = 64;

/// The key a client's per-IP limits are counted under: its IPv4 address, or its IPv6 /64.
pub(super) fn limit_key(ip: IpAddr) -> IpAddr {
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
pub(super) fn parse_node(text: &str) -> Option<IpAddr> {
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
