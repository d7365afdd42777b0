//! The plain-HTTP surface of the room server: the backend API (`POST /api/publish`,
//! `GET /api/rooms`, bearer-key protected), `GET /healthz` and `GET /metrics`.
//!
//! `POST /api/publish` goes through `Rooms::publish`, the same path as a client's publish.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::value::RawValue;
use sha1::{Digest, Sha1};

use super::protocol::{self, ObjectWriter};
use super::Rooms;
use crate::proto::handshake::PlainRequest;
use crate::server::{http, HttpResponse, Metrics, Outbox};

pub fn serve(
    rooms: &mut Rooms,
    out: &mut Outbox,
    request: &PlainRequest,
    body: &[u8],
    metrics: &Metrics,
) -> HttpResponse {
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("GET", "/healthz") => HttpResponse::text(200, "ok\n"),
        ("GET", "/metrics") => {
            let mut text = String::new();
            metrics.render(&mut text);
            render_room_metrics(rooms, &mut text);
            HttpResponse { content_type: "text/plain; version=0.0.4", ..HttpResponse::text(200, &text) }
        }
        (_, p) if p == "/api" || p.starts_with("/api/") => {
            let Some(key) = rooms.config.api_key.as_deref() else {
                return HttpResponse::json_error(404, "the backend API is off (no API key configured)");
            };
            if !authorized(request.authorization.as_deref(), key) {
                return HttpResponse::json_error(401, "missing or wrong API key")
                    .with_header("WWW-Authenticate", "Bearer");
            }
            match (request.method.as_str(), p) {
                ("POST", "/api/publish") => publish(rooms, out, body),
                ("GET", "/api/rooms") => list_rooms(rooms),
                (_, "/api/publish" | "/api/rooms") => {
                    HttpResponse::json_error(405, "method not allowed").with_header("Allow", allowed(p))
                }
                _ => HttpResponse::json_error(404, "no such API endpoint"),
            }
        }
        ("GET", p) if p == rooms.config.path => http::upgrade_required(),
        _ => HttpResponse::text(404, "not found\n"),
    }
}

fn allowed(path: &str) -> &'static str {
    if path == "/api/publish" {
        "POST"
    } else {
        "GET"
    }
}

/// `Authorization: Bearer <key>`, compared in constant time (over SHA-1 digests, so the
/// key's length does not leak either).
fn authorized(header: Option<&str>, key: &str) -> bool {
    // RFC 9110 §11.1: the scheme name is case-insensitive.
    let Some((scheme, presented)) = header.and_then(|h| h.split_once(' ')) else { return false };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let a = Sha1::digest(presented.trim().as_bytes());
    let b = Sha1::digest(key.as_bytes());
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn publish(rooms: &mut Rooms, out: &mut Outbox, body: &[u8]) -> HttpResponse {
    let Ok(text) = std::str::from_utf8(body) else {
        return HttpResponse::json_error(400, "body is not UTF-8");
    };
    let Ok(fields) = serde_json::from_str::<HashMap<String, &RawValue>>(text) else {
        return HttpResponse::json_error(400, "body must be a JSON object {\"room\",\"data\"}");
    };
    let Some(Ok(room)) = fields.get("room").map(|r| serde_json::from_str::<String>(r.get())) else {
        return HttpResponse::json_error(400, "missing or ill-typed field: room");
    };
    if let Err(e) = protocol::validate_room_name(&room) {
        return HttpResponse::json_error(400, &e.message);
    }
    let Some(data) = fields.get("data") else {
        return HttpResponse::json_error(400, "missing field: data");
    };
    match rooms.publish(out, &room, data.get(), None, true, false) {
        Ok(offset) => {
            HttpResponse::json(200, ObjectWriter::new().str("room", &room).num("offset", offset.unwrap_or(0)).finish())
        }
        Err(e) => HttpResponse::json_error(e.code, &e.message),
    }
}

fn list_rooms(rooms: &Rooms) -> HttpResponse {
    let mut names: Vec<&String> = rooms.rooms.keys().collect();
    names.sort();
    let items: Vec<String> = names
        .into_iter()
        .filter_map(|name| {
            let room = rooms.rooms.get(name)?;
            Some(
                ObjectWriter::new()
                    .str("room", name)
                    .num("members", room.members.len() as u64)
                    .num("offset", room.offset)
                    .finish(),
            )
        })
        .collect();
    HttpResponse::json(200, ObjectWriter::new().raw_array("rooms", items.iter().map(String::as_str)).finish())
}

fn render_room_metrics(rooms: &Rooms, out: &mut String) {
    let members: usize = rooms.rooms.values().map(|r| r.members.len()).sum();
    let kept: usize = rooms.rooms.values().map(|r| r.history_len()).sum();
    let kept_bytes: usize = rooms.rooms.values().map(|r| r.history_bytes()).sum();
    for (name, help, value) in [
        ("wsedge_rooms", "Rooms in memory.", rooms.rooms.len()),
        ("wsedge_room_members", "Memberships across all rooms.", members),
        ("wsedge_history_messages", "Messages kept for recovery.", kept),
        ("wsedge_history_bytes", "Bytes of messages kept for recovery.", kept_bytes),
        ("wsedge_relay_rooms", "Raw relay rooms in use.", rooms.relay.room_count()),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys_compare_exactly() {
        assert!(authorized(Some("Bearer s3cret"), "s3cret"));
        assert!(authorized(Some("bearer s3cret"), "s3cret"));
        assert!(!authorized(Some("Bearer s3cre"), "s3cret"));
        assert!(!authorized(Some("Bearer s3crets"), "s3cret"));
        assert!(!authorized(Some("Basic s3cret"), "s3cret"));
        assert!(!authorized(None, "s3cret"));
    }
}
