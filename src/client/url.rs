//! `ws://` and `wss://` URLs (RFC 6455 §3), split into what a client needs: whether to
//! speak TLS, the Host header, the host to resolve (and to name in TLS) with its port, and
//! the request path. No IO: resolving the host is the caller's.

use std::fmt;

/// A WebSocket URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`.
    pub tls: bool,
    /// `host[:port]` as written: the Host header (RFC 6455 §4.1).
    pub authority: String,
    /// The host without its port or IPv6 brackets: what to resolve, and the TLS server
    /// name (a DNS name or an IP address).
    pub host: String,
    /// The port written, or the scheme's (80 for `ws`, 443 for `wss`; RFC 6455 §3).
    pub port: u16,
    /// The path and query: the request target, `/` when the URL has none.
    pub path: String,
}

/// Why a string is not a WebSocket URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// Neither `ws://` nor `wss://`.
    Scheme,
    /// No host between the scheme and the port or path (or an unclosed `[`).
    NoHost,
    /// A port that is not a number from 0 to 65535 (or junk after a bracketed address).
    BadPort,
    /// RFC 6455 §3: fragment identifiers MUST NOT be used in WebSocket URIs.
    Fragment,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => "only ws:// and wss:// URLs are supported",
            UrlError::NoHost => "no host",
            UrlError::BadPort => "the port is not a number from 0 to 65535",
            UrlError::Fragment => "a WebSocket URL has no #fragment",
        })
    }
}

impl std::error::Error for UrlError {}

impl WsUrl {
    /// Parses `ws[s]://host[:port][/path][?query]`; `host` may be a name, an IPv4 address
    /// or a bracketed IPv6 address.
    pub fn parse(url: &str) -> Result<WsUrl, UrlError> {
        let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(UrlError::Scheme),
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let path = match path.as_bytes().first() {
            None => "/".to_owned(),
            Some(b'?') => format!("/{path}"),
            Some(_) => path.to_owned(),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or(UrlError::NoHost)?;
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':').ok_or(UrlError::BadPort)?)),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| UrlError::BadPort)?,
            None => default_port,
        };
        Ok(WsUrl { tls, authority: authority.to_owned(), host: host.to_owned(), port, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (bool, String, String, u16, String) {
        let u = WsUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (u.tls, u.authority, u.host, u.port, u.path)
    }

    #[test]
    fn urls_split_into_authority_host_port_and_path() {
        let s = |x: &str| x.to_owned();
        assert_eq!(split("ws://127.0.0.1:9001/ws"), (false, s("127.0.0.1:9001"), s("127.0.0.1"), 9001, s("/ws")));
        assert_eq!(split("wss://example.com/a/b?x=1"), (true, s("example.com"), s("example.com"), 443, s("/a/b?x=1")));
        assert_eq!(split("ws://example.com"), (false, s("example.com"), s("example.com"), 80, s("/")));
        assert_eq!(split("ws://example.com?token=t"), (false, s("example.com"), s("example.com"), 80, s("/?token=t")));
        assert_eq!(split("wss://[::1]:9443/ws"), (true, s("[::1]:9443"), s("::1"), 9443, s("/ws")));
        assert_eq!(split("wss://[::1]"), (true, s("[::1]"), s("::1"), 443, s("/")));
    }

    #[test]
    fn non_websocket_urls_are_refused_with_a_reason() {
        assert_eq!(WsUrl::parse("http://127.0.0.1/"), Err(UrlError::Scheme));
        assert_eq!(WsUrl::parse("127.0.0.1:9001"), Err(UrlError::Scheme));
        assert_eq!(WsUrl::parse("ws:///ws"), Err(UrlError::NoHost));
        assert_eq!(WsUrl::parse("ws://:9001/ws"), Err(UrlError::NoHost));
        assert_eq!(WsUrl::parse("ws://[::1/ws"), Err(UrlError::NoHost));
        assert_eq!(WsUrl::parse("ws://host:http/"), Err(UrlError::BadPort));
        assert_eq!(WsUrl::parse("ws://host:65536/"), Err(UrlError::BadPort));
        assert_eq!(WsUrl::parse("ws://[::1]x/"), Err(UrlError::BadPort));
        assert_eq!(WsUrl::parse("ws://host/ws#top"), Err(UrlError::Fragment));
    }
}
