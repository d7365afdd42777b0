//! The small plain-HTTP surface on the WebSocket port: requests that are not upgrades.
//!
//! The loop reads a request head and its `Content-Length` body, asks the handler for a
//! response, and keeps the connection alive for the next request when HTTP/1.1 allows it.
//! Without an application API, it answers `GET /healthz` and `GET /metrics`.

use super::Metrics;
use crate::proto::handshake::PlainRequest;

/// A complete response to a plain HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code (its reason phrase is looked up when encoding).
    pub status: u16,
    /// The `Content-Type` value.
    pub content_type: &'static str,
    /// Further headers, sent in order after `Content-Type`, `Content-Length` and
    /// `Connection`.
    pub headers: Vec<(&'static str, String)>,
    /// The body (its length is the `Content-Length`; of a stream, its first chunk).
    pub body: Vec<u8>,
    /// A stream (`text/event-stream`): chunked, never ending by itself. The connection
    /// then carries the handler's `Outbox::send`s as chunks until either side closes it
    /// (see [`HttpResponse::event_stream`]).
    pub stream: bool,
}

impl HttpResponse {
    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: &str) -> Self {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            stream: false,
        }
    }

    /// An `application/json` response; `body` is JSON already.
    pub fn json(status: u16, body: String) -> Self {
        HttpResponse {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into_bytes(),
            stream: false,
        }
    }

    /// A JSON error body: `{"error":{"code","message"}}`.
    pub fn json_error(status: u16, message: &str) -> Self {
        let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".to_owned());
        HttpResponse::json(status, format!("{{\"error\":{{\"code\":{status},\"message\":{message}}}}}"))
    }

    /// A stream of server-sent events (`200 text/event-stream`, chunked, not cached nor
    /// buffered by proxies). The connection leaves the HTTP phase: what the handler sends
    /// it (`Outbox::send`, any kind) goes out as chunks, as it is; `Outbox::close` ends the
    /// stream; input is ignored; the client closing it is its `on_close`; more than
    /// `max_outbound_bytes` waiting for it (a client that does not read) drops it.
    pub fn event_stream() -> Self {
        HttpResponse {
            status: 200,
            content_type: "text/event-stream",
            headers: vec![("Cache-Control", "no-cache".to_owned()), ("X-Accel-Buffering", "no".to_owned())],
            body: Vec::new(),
            stream: true,
        }
    }

    /// The response with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// With the CORS headers of a request from `origin`, an origin the server's rules
    /// allow (`None`: none needed).
    pub fn with_cors(self, origin: Option<&str>) -> Self {
        match origin {
            Some(origin) => self.with_header("Access-Control-Allow-Origin", origin).with_header("Vary", "Origin"),
            None => self,
        }
    }

    /// The answer to a CORS preflight (`OPTIONS`) of an endpoint taking `methods` with
    /// `headers` a page may set (204: no body).
    pub fn preflight(methods: &str, headers: &str) -> Self {
        HttpResponse::text(204, "")
            .with_header("Access-Control-Allow-Methods", format!("{methods}, OPTIONS"))
            .with_header("Access-Control-Allow-Headers", headers)
            .with_header("Access-Control-Max-Age", "600")
    }

    /// The response bytes; `keep_alive` false adds `Connection: close`. A stream's head
    /// says `Transfer-Encoding: chunked`, and its body is the first chunk.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        self.encode_framed(keep_alive, true)
    }

    /// A stream's head and first bytes for an HTTP/1.0 client, which knows no chunks: no
    /// `Transfer-Encoding`, `Connection: close`, and the body ends when the connection
    /// does.
    pub fn encode_close_delimited(&self) -> Vec<u8> {
        self.encode_framed(false, false)
    }

    fn encode_framed(&self, keep_alive: bool, chunked: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type
        );
        if self.stream && chunked {
            out.push_str("Transfer-Encoding: chunked\r\n");
        } else if !self.stream && self.status != 204 {
            // A 204 has no body, and no Content-Length to say so (RFC 9110 §8.6).
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if !keep_alive {
            out.push_str("Connection: close\r\n");
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if self.stream && chunked {
            bytes.extend_from_slice(&chunk(&self.body));
        } else {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// `data` as one chunk of a chunked body (RFC 9112 §7.1); nothing for empty data, which
/// would be the last chunk.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The end of a chunked body: the last chunk, no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The reason phrase sent after `status` (RFC 9110 §15).
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// What a handler without an HTTP API answers: `GET /healthz`, `GET /metrics` (the
/// transport's counters), and 426 for anything else.
pub fn default_response(request: &PlainRequest, metrics: &Metrics) -> HttpResponse {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/healthz") => HttpResponse::text(200, "ok\n"),
        ("GET", "/metrics") => {
            let mut body = String::new();
            metrics.render(&mut body);
            HttpResponse { content_type: "text/plain; version=0.0.4", ..HttpResponse::text(200, &body) }
        }
        _ => upgrade_required(),
    }
}

/// A plain request to a WebSocket endpoint.
pub fn upgrade_required() -> HttpResponse {
    HttpResponse::text(426, "this is a WebSocket endpoint\n")
        .with_header("Upgrade", "websocket")
        .with_header("Sec-WebSocket-Version", "13")
}

/// The answer when the server is at its connection limit.
pub(crate) fn over_capacity() -> HttpResponse {
    HttpResponse::text(503, "too many connections\n")
}

/// The value of query parameter `name` in a request target (`/path?a=1&b=x%20y`),
/// percent-decoded (RFC 3986 §2.1, and `+` as a space, as forms send it). `None`: absent;
/// `Some(Err(()))`: present but not valid percent-encoded UTF-8. The first one wins.
pub fn query_param(target: &str, name: &str) -> Option<Result<String, ()>> {
    let (_, query) = target.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        Some(percent_decode(value).ok_or(()))
    })
}

/// A query value percent-decoded (`+` as a space); `None` when it is not UTF-8 or has a
/// broken escape.
pub fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                (hi * 16 + lo) as u8
            }
            b'+' => b' ',
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod query_tests {
    use super::query_param;

    #[test]
    fn query_parameters_are_found_by_name_and_percent_decoded() {
        let target = "/api/history?roomy=no&room=chat%3Alobby&limit=5#frag";
        assert_eq!(query_param(target, "room"), Some(Ok("chat:lobby".to_owned())));
        assert_eq!(query_param(target, "limit"), Some(Ok("5".to_owned())));
        assert_eq!(query_param(target, "frag"), None);
        assert_eq!(query_param("/p?a=x+y", "a"), Some(Ok("x y".to_owned())));
        assert_eq!(query_param("/p?a=%zz", "a"), Some(Err(())));
        assert_eq!(query_param("/p?a=%ff", "a"), Some(Err(())), "not UTF-8");
        assert_eq!(query_param("/p", "a"), None);
    }
}

#[cfg(test)]
mod response_tests {
    use super::HttpResponse;

    #[test]
    fn a_preflight_is_a_204_without_a_length_and_cors_names_the_origin() {
        let head = String::from_utf8(
            HttpResponse::preflight("POST", "Content-Type").with_cors(Some("https://a.example")).encode(true),
        )
        .unwrap();
        assert!(head.starts_with("HTTP/1.1 204 "), "{head}");
        assert!(!head.contains("Content-Length"), "a 204 has no Content-Length: {head}");
        assert!(head.contains("\r\nAccess-Control-Allow-Methods: POST, OPTIONS\r\n"), "{head}");
        assert!(head.contains("\r\nAccess-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let plain = String::from_utf8(HttpResponse::text(200, "").with_cors(None).encode(true)).unwrap();
        assert!(plain.contains("Content-Length: 0\r\n") && !plain.contains("Access-Control"), "{plain}");
    }
}
