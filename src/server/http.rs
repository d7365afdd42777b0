//! The small plain-HTTP surface on the WebSocket port: requests that are not upgrades.
//!
//! For now it answers `GET /healthz` and tells everything else to upgrade; the room layer
//! adds its API here. One response per connection, then the connection closes.

use crate::proto::handshake::PlainRequest;

/// A complete response to a plain HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(status: u16, reason: &'static str, body: &str) -> Self {
        HttpResponse { status, reason, content_type: "text/plain; charset=utf-8", body: body.as_bytes().to_vec() }
    }

    /// The response bytes, with `Connection: close`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.status == 426 {
            out.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// What a handler without an HTTP API answers.
pub fn default_response(request: &PlainRequest) -> HttpResponse {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/healthz") => HttpResponse::text(200, "OK", "ok\n"),
        _ => HttpResponse::text(426, "Upgrade Required", "this is a WebSocket endpoint\n"),
    }
}

/// The answer when the server is at its connection limit.
pub fn over_capacity() -> HttpResponse {
    HttpResponse::text(503, "Service Unavailable", "too many connections\n")
}
