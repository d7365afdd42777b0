//! The upgrade's admission parsers (`server::access`): origin patterns and their matching,
//! CIDRs, forwarding nodes, and the client address from `X-Forwarded-For` / `Forwarded`.
//!
//! Input: `PATTERN\nREST`: the first line is parsed as an `--allowed-origin` pattern and as
//! a `--trust-proxy` CIDR; the rest is an `Origin` header value, a node, and a forwarding
//! header value (both kinds).
//!
//! Checks: patterns and CIDRs print back to themselves; an exact pattern matches its own
//! text, a wildcard matches one subdomain of its suffix but not the bare domain; only the
//! `null` pattern matches `null`; matching ignores ASCII case; a CIDR contains its network;
//! a parsed node round-trips through its text; an untrusted peer's headers are ignored,
//! and the client address is the peer, a trusted hop, or an address from the header.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use wsedge::server::access::fuzzing::parse_node;
use wsedge::server::access::{client_ip, Cidr, OriginPattern, ProxyHeader};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    check_pattern(first, rest);
    check_cidr(first);
    check_node(rest);
    check_forwarding(rest);
});

fn check_pattern(text: &str, origin: &str) {
    let Ok(pattern) = text.parse::<OriginPattern>() else { return };
    let printed = pattern.to_string();
    assert_eq!(printed.parse::<OriginPattern>().as_ref(), Ok(&pattern), "{printed}");
    let matched = pattern.matches(origin);
    if origin != "null" {
        assert_eq!(pattern.matches(&origin.to_ascii_uppercase()), matched, "case changed the match of {origin:?}");
    }
    match &pattern {
        OriginPattern::Null => assert!(pattern.matches("null")),
        OriginPattern::Exact { .. } => {
            assert!(pattern.matches(&printed), "{printed} does not match itself");
            assert!(!pattern.matches("null"));
        }
        OriginPattern::Subdomains { .. } => {
            assert!(pattern.matches(&printed.replacen("://*.", "://a.", 1)), "{printed}: no subdomain");
            assert!(!pattern.matches(&printed.replacen("://*.", "://", 1)), "{printed}: the bare domain");
            assert!(!pattern.matches(&printed), "a * in an Origin is not a wildcard");
            assert!(!pattern.matches("null"));
        }
    }
}

fn check_cidr(text: &str) {
    let Ok(cidr) = text.parse::<Cidr>() else { return };
    let printed = cidr.to_string();
    assert_eq!(printed.parse::<Cidr>(), Ok(cidr), "{printed}");
    let network: IpAddr = printed.split_once('/').and_then(|(a, _)| a.parse().ok()).expect("network address");
    assert!(cidr.contains(network), "{printed}");
}

fn check_node(text: &str) {
    if let Some(ip) = parse_node(text) {
        assert_eq!(parse_node(&ip.to_string()), Some(ip));
    }
}

fn check_forwarding(value: &str) {
    let trusted: Vec<Cidr> = ["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fd00::/8"]
        .iter()
        .map(|c| c.parse().expect("a valid CIDR"))
        .collect();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let outsider: IpAddr = [192, 0, 2, 1].into();
    let proxy: IpAddr = [127, 0, 0, 1].into();
    for header in [ProxyHeader::XForwardedFor, ProxyHeader::Forwarded] {
        assert_eq!(client_ip(outsider, &trusted, header, Some(value)), outsider, "untrusted peer's header used");
        assert_eq!(client_ip(proxy, &[], header, Some(value)), proxy, "nothing trusted, header used");
        let client = client_ip(proxy, &trusted, header, Some(value));
        if client != proxy && is_trusted(client) {
            continue; // a trusted hop named in the header
        }
        if client != proxy {
            // An untrusted client must be named in the header (as some node's address).
            let named = value
                .split([',', ';', '=', ' ', '"'])
                .filter_map(parse_node)
                .chain(value.split([',', ';', ' ']).filter_map(|p| parse_node(p.trim_start_matches("for="))))
                .any(|ip| ip.to_canonical() == client);
            assert!(named, "{client} is not in {value:?}");
        }
    }
}
