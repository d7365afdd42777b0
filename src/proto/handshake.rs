//! The HTTP/1.1 opening handshake, RFC 6455 §4, both sides.
//!
//! Server side: [`parse_request`] reads a request head with httparse and classifies it as
//! a WebSocket upgrade (checked per §4.2.1), a plain HTTP request (for the small HTTP
//! surface on the same port), or an error with its HTTP status. [`UpgradeRequest::accept`]
//! builds the 101 response. Client side: [`client_request`] and [`parse_response`].
//! No IO: request bytes in, response bytes out.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 §1.3, appended to the key to form the accept value.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Header lines accepted in a request head (more -> 431).
const MAX_HEADERS: usize = 64;

/// The longest upgrade response head a client waits for; a server sending more without
/// finishing its head is refused.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// A request head that cannot be served, with the HTTP status it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not parseable as HTTP/1.x (400).
    Malformed,
    /// The head exceeds the size limit or has too many header lines (431).
    HeadersTooLarge,
    /// An upgrade that is not `GET` (405).
    MethodNotAllowed,
    /// An upgrade over HTTP/1.0 (400, §4.1 requires HTTP/1.1 or later).
    WrongHttpVersion,
    /// No `Host` header (400, §4.1).
    MissingHost,
    /// `Connection` lacks the `upgrade` token (400).
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13 (426 with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes (400).
    BadKey,
    /// A plain request with `Transfer-Encoding` (411: bodies need a `Content-Length`).
    LengthRequired,
}

impl HandshakeError {
    /// The HTTP status and reason phrase the error is answered with.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HandshakeError::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            HandshakeError::MethodNotAllowed => (405, "Method Not Allowed"),
            HandshakeError::UnsupportedVersion => (426, "Upgrade Required"),
            HandshakeError::LengthRequired => (411, "Length Required"),
            _ => (400, "Bad Request"),
        }
    }

    /// A complete HTTP response for this error; the server closes after sending it.
    pub fn response(self) -> Vec<u8> {
        let (code, reason) = self.status();
        let body = format!("{self}\n");
        let extra = match self {
            HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
            HandshakeError::MethodNotAllowed => "Allow: GET\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {code} {reason}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::Malformed => "malformed HTTP request",
            HandshakeError::HeadersTooLarge => "request headers too large",
            HandshakeError::MethodNotAllowed => "WebSocket upgrade must use GET",
            HandshakeError::WrongHttpVersion => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::MissingConnectionUpgrade => "Connection header lacks the upgrade token",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version (13 is supported)",
            HandshakeError::BadKey => "missing or invalid Sec-WebSocket-Key",
            HandshakeError::LengthRequired => "request bodies need a Content-Length",
        })
    }
}

impl std::error::Error for HandshakeError {}

/// A valid WebSocket upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The request target as sent: path and query (`/ws?token=...`).
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// The `Origin` header (browsers send it; the server's allow-list checks it).
    pub origin: Option<String>,
    /// The client's `Sec-WebSocket-Key`, as sent.
    pub key: String,
    /// Offered subprotocols, in the client's order of preference.
    pub protocols: Vec<String>,
    /// The raw `Sec-WebSocket-Extensions` values, joined with ", ".
    pub extensions: Option<String>,
    /// `X-Forwarded-For` and `Forwarded` (RFC 7239), each header's values joined with ", "
    /// in order; the server reads them only from trusted proxies (`server::access`).
    pub x_forwarded_for: Option<String>,
    /// The `Forwarded` header's values (see `x_forwarded_for`).
    pub forwarded: Option<String>,
    /// The `Authorization` header, if any (a bearer token for the handler to verify).
    pub authorization: Option<String>,
}

/// A request that is not a WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlainRequest {
    /// The HTTP method, as sent (`GET`, `POST`, ...).
    pub method: String,
    /// The request target as sent: path and query.
    pub path: String,
    /// The value of `Content-Length` (0 when absent).
    pub content_length: usize,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// HTTP/1.1 without `Connection: close` (or HTTP/1.0 with `keep-alive`).
    pub keep_alive: bool,
    /// HTTP/1.0, which has no chunked bodies: a stream's body ends when the connection does.
    pub http_1_0: bool,
    /// The `Origin` header (a browser's page asking), if any.
    pub origin: Option<String>,
    /// `Last-Event-ID`: where a reconnecting `EventSource` left off, if any.
    pub last_event_id: Option<String>,
    /// `X-Forwarded-For`, if any (read only from trusted proxies).
    pub x_forwarded_for: Option<String>,
    /// `Forwarded` (RFC 7239), if any (read only from trusted proxies).
    pub forwarded: Option<String>,
    /// Not parsed: the server sets it before its handler sees the request. True when
    /// `origin` passes the server's origin rules (`--allowed-origin`, `--require-origin`),
    /// which a handler applies to requests a browser page makes across origins.
    pub origin_allowed: bool,
}

/// A parsed request head: the port serves WebSocket upgrades and plain HTTP alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade (RFC 6455 §4.2.1).
    Upgrade(UpgradeRequest),
    /// Any other request (health, metrics, the backend API).
    Plain(PlainRequest),
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete (and within
/// `max_head_bytes`); `Ok(Some((request, head_len)))`: complete.
pub fn parse_request(buf: &[u8], max_head_bytes: usize) -> Result<Option<(Request, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_head_bytes => n,
        Ok(httparse::Status::Complete(_)) => return Err(HandshakeError::HeadersTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > max_head_bytes => return Err(HandshakeError::HeadersTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::HeadersTooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    let method = req.method.unwrap_or_default();
    let path = req.path.unwrap_or_default().to_owned();
    let headers = HeaderList(req.headers);

    if !headers.has_token("upgrade", "websocket") {
        // Whatever its value (UTF-8 or not): a body framed some other way than by
        // Content-Length is refused, never guessed at (request smuggling bait).
        if headers.has("transfer-encoding") {
            return Err(HandshakeError::LengthRequired);
        }
        let content_length = match headers.raw_all("content-length").as_slice() {
            [] => 0,
            [v] => content_length(v).ok_or(HandshakeError::Malformed)?,
            _ => return Err(HandshakeError::Malformed), // ambiguous: request smuggling bait
        };
        let keep_alive = match req.version {
            Some(1) => !headers.has_token("connection", "close"),
            _ => headers.has_token("connection", "keep-alive"),
        };
        let header = |name: &str| headers.get(name).map(|v| v.trim().to_owned());
        let plain = PlainRequest {
            method: method.to_owned(),
            path,
            content_length,
            authorization: header("authorization"),
            keep_alive,
            http_1_0: req.version == Some(0),
            origin: header("origin"),
            last_event_id: header("last-event-id"),
            x_forwarded_for: header("x-forwarded-for"),
            forwarded: header("forwarded"),
            origin_allowed: false,
        };
        return Ok(Some((Request::Plain(plain), head_len)));
    }
    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if req.version != Some(1) {
        return Err(HandshakeError::WrongHttpVersion);
    }
    let host = headers.get("host").ok_or(HandshakeError::MissingHost)?.trim().to_owned();
    if !headers.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if headers.get("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = match headers.all("sec-websocket-key").as_slice() {
        [key] => key.trim().to_owned(),
        _ => return Err(HandshakeError::BadKey),
    };
    match BASE64.decode(&key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    let protocols = headers.tokens("sec-websocket-protocol").map(str::to_owned).collect();
    let extensions = headers.all("sec-websocket-extensions");
    let extensions = if extensions.is_empty() { None } else { Some(extensions.join(", ")) };
    // Admission headers keep bytes that are not UTF-8 (as U+FFFD): an `Origin` that is
    // present must never read as absent, nor a forwarding entry vanish from its chain.
    let lossy = |name| headers.raw_all(name).into_iter().map(String::from_utf8_lossy).collect::<Vec<_>>();
    let origin = lossy("origin").first().map(|o| o.trim().to_owned());
    let joined = |name| Some(lossy(name).join(", ")).filter(|v| !v.is_empty());
    let (x_forwarded_for, forwarded) = (joined("x-forwarded-for"), joined("forwarded"));
    let authorization = headers.get("authorization").map(|a| a.trim().to_owned());
    let request =
        UpgradeRequest { path, host, origin, key, protocols, extensions, x_forwarded_for, forwarded, authorization };
    Ok(Some((Request::Upgrade(request), head_len)))
}

/// `Sec-WebSocket-Accept` for a key: base64(sha1(key + GUID)), §4.2.2.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

impl UpgradeRequest {
    /// The first offered subprotocol the server supports (client's order of preference).
    pub fn select_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        self.protocols.iter().find_map(|offered| supported.iter().find(|s| **s == offered.as_str()).copied())
    }

    /// The 101 response accepting this request, with the chosen subprotocol and the
    /// negotiated extensions response (if any).
    pub fn accept(&self, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            accept_key(&self.key)
        );
        if let Some(p) = protocol {
            out.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        if let Some(e) = extensions {
            out.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A `Content-Length` value: ASCII digits only (RFC 9110 §8.6; no sign, no spaces inside).
fn content_length(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Header lookups over httparse's parsed headers (names are case-insensitive, §4.2.1).
struct HeaderList<'h, 'b>(&'h [httparse::Header<'b>]);

impl<'h, 'b> HeaderList<'h, 'b> {
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|h| h.name.eq_ignore_ascii_case(name))
    }

    /// Every value of `name`, as bytes.
    fn raw_all(&self, name: &str) -> Vec<&'b [u8]> {
        self.0.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect()
    }

    /// Every value of `name` that is UTF-8.
    fn all(&self, name: &str) -> Vec<&'b str> {
        self.0
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect()
    }

    fn get(&self, name: &str) -> Option<&'b str> {
        self.0.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
    }

    /// The comma-separated tokens of every `name` header, trimmed, empty ones skipped.
    fn tokens<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b str> + 's {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }
}

// ---- client side ----

/// The upgrade request a client sends. `key` is 16 random bytes (§4.1: a nonce).
pub fn client_request(host: &str, path: &str, key: [u8; 16], protocols: &[&str]) -> (Vec<u8>, String) {
    let key = BASE64.encode(key);
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        out.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", protocols.join(", ")));
    }
    out.push_str("\r\n");
    (out.into_bytes(), key)
}

/// What the server agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeResponse {
    /// The subprotocol the server selected (one the client offered).
    pub protocol: Option<String>,
    /// The raw `Sec-WebSocket-Extensions` value the server accepted.
    pub extensions: Option<String>,
}

/// Why a client rejects the server's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// Not a parseable HTTP response head.
    Malformed,
    /// Any status other than 101.
    Status(u16),
    /// `Upgrade: websocket` or `Connection: Upgrade` is missing.
    MissingUpgrade,
    /// `Sec-WebSocket-Accept` does not match the key sent (RFC 6455 §4.1).
    BadAccept,

    /// A subprotocol the client did not offer.
    UnexpectedProtocol,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Malformed => f.write_str("malformed HTTP response"),
            ResponseError::Status(s) => write!(f, "server answered {s} instead of 101"),
            ResponseError::MissingUpgrade => f.write_str("response lacks Upgrade/Connection headers"),
            ResponseError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept"),
            ResponseError::UnexpectedProtocol => f.write_str("server chose a subprotocol not offered"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Parses and checks the server's response to a request made with `key` (as returned by
/// [`client_request`]) offering `protocols`.
pub fn parse_response(
    buf: &[u8],
    key: &str,
    protocols: &[&str],
) -> Result<Option<(UpgradeResponse, usize)>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::Malformed),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(ResponseError::Status(code));
    }
    let headers = HeaderList(resp.headers);
    if !headers.has_token("upgrade", "websocket") || !headers.has_token("connection", "upgrade") {
        return Err(ResponseError::MissingUpgrade);
    }
    if headers.get("sec-websocket-accept").map(str::trim) != Some(accept_key(key).as_str()) {
        return Err(ResponseError::BadAccept);
    }
    let protocol = headers.get("sec-websocket-protocol").map(|p| p.trim().to_owned());
    if let Some(p) = &protocol {
        if !protocols.contains(&p.as_str()) {
            return Err(ResponseError::UnexpectedProtocol);
        }
    }
    let extensions = headers.get("sec-websocket-extensions").map(|e| e.trim().to_owned());
    Ok(Some((UpgradeResponse { protocol, extensions }, head_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn upgrade(req: &str) -> Result<UpgradeRequest, HandshakeError> {
        match parse_request(req.as_bytes(), 8192)? {
            Some((Request::Upgrade(u), n)) => {
                assert_eq!(n, req.len());
                Ok(u)
            }
            other => panic!("not an upgrade: {other:?}"),
        }
    }

    #[test]
    fn forwarding_headers_are_kept_in_order_and_bad_bytes_stay_visible() {
        // The RFC request without its Origin, plus `extra` header lines.
        let with = |extra: &[u8]| {
            let mut req = RFC_REQUEST.replace("Origin: http://example.com\r\n", "").into_bytes();
            req.truncate(req.len() - 2);
            req.extend_from_slice(extra);
            req.extend_from_slice(b"\r\n");
            match parse_request(&req, 8192) {
                Ok(Some((Request::Upgrade(u), _))) => u,
                other => panic!("not an upgrade: {other:?}"),
            }
        };
        let u = with(b"X-Forwarded-For: 1.1.1.1\r\nForwarded: for=2.2.2.2\r\nx-forwarded-for: 3.3.3.3\r\n");
        assert_eq!(u.x_forwarded_for.as_deref(), Some("1.1.1.1, 3.3.3.3"));
        assert_eq!(u.forwarded.as_deref(), Some("for=2.2.2.2"));
        assert_eq!((u.origin, with(b"").x_forwarded_for, with(b"").forwarded), (None, None, None));
        let bad = with(b"Origin: https://\xffevil.test\r\nX-Forwarded-For: \xff, 1.1.1.1\r\n");
        assert_eq!(bad.origin.as_deref(), Some("https://\u{fffd}evil.test"), "present, matching nothing");
        assert_eq!(bad.x_forwarded_for.as_deref(), Some("\u{fffd}, 1.1.1.1"));
    }

    #[test]
    fn rfc6455_1_3_accept_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn rfc6455_1_2_request_is_accepted() {
        let u = upgrade(RFC_REQUEST).unwrap();
        assert_eq!(u.path, "/chat");
        assert_eq!(u.host, "server.example.com");
        assert_eq!(u.origin.as_deref(), Some("http://example.com"));
        assert_eq!(u.protocols, ["chat", "superchat"]);
        assert_eq!(u.select_protocol(&["superchat", "chat"]), Some("chat"));
        assert_eq!(u.select_protocol(&["other"]), None);
        let resp = String::from_utf8(u.accept(Some("chat"), None)).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: chat\r\n"));
    }

    #[test]
    fn token_lists_are_case_insensitive() {
        let req = RFC_REQUEST
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "CONNECTION: keep-alive, UPGRADE");
        assert!(upgrade(&req).is_ok());
    }

    #[test]
    fn partial_head_needs_more() {
        for cut in 0..RFC_REQUEST.len() {
            assert_eq!(parse_request(&RFC_REQUEST.as_bytes()[..cut], 8192), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn errors_map_to_statuses() {
        let cases = [
            (RFC_REQUEST.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), 426),
            (RFC_REQUEST.replace("Sec-WebSocket-Version: 13\r\n", ""), 426),
            (RFC_REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400),
            (RFC_REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!"), 400),
            (RFC_REQUEST.replace("Host: server.example.com\r\n", ""), 400),
            (RFC_REQUEST.replace("Connection: Upgrade", "Connection: keep-alive"), 400),
            (RFC_REQUEST.replace("GET", "POST"), 405),
            (RFC_REQUEST.replace("HTTP/1.1", "HTTP/1.0"), 400),
        ];
        for (req, status) in cases {
            let err = upgrade(&req).unwrap_err();
            assert_eq!(err.status().0, status, "{err}");
        }
        let resp = String::from_utf8(HandshakeError::UnsupportedVersion.response()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 426 "));
        assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn oversized_heads_get_431() {
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n", "a".repeat(9000));
        assert_eq!(parse_request(big.as_bytes(), 8192), Err(HandshakeError::HeadersTooLarge));
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_request(req.as_bytes(), 8192), Err(HandshakeError::HeadersTooLarge));
    }

    #[test]
    fn plain_requests_are_classified() {
        let req = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n";
        match parse_request(req, 8192).unwrap() {
            Some((Request::Plain(p), n)) => {
                assert_eq!(
                    (p.method.as_str(), p.path.as_str(), p.content_length, n),
                    ("POST", "/api/publish", 12, req.len())
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_roundtrip_against_server() {
        let (request, key) = client_request("localhost:9001", "/ws", [7; 16], &["wsedge.v1"]);
        let Some((Request::Upgrade(u), _)) = parse_request(&request, 8192).unwrap() else { panic!() };
        let response = u.accept(u.select_protocol(&["wsedge.v1"]), None);
        let (resp, n) = parse_response(&response, &key, &["wsedge.v1"]).unwrap().unwrap();
        assert_eq!(n, response.len());
        assert_eq!(resp.protocol.as_deref(), Some("wsedge.v1"));
        assert_eq!(parse_response(&response, "AAAAAAAAAAAAAAAAAAAAAA==", &[]), Err(ResponseError::BadAccept));
    }
}
