//! The plain-HTTP surface of the room server: the backend API (`POST /api/publish`,
//! `GET /api/rooms`, bearer-key protected), `GET /healthz` and `GET /metrics`.
//!
//! `POST /api/publish` goes through `Rooms::publish` on the room's owner, the same path as
//! a client's publish. Answers that need other workers (the publish's offset, the list of
//! rooms, room gauges) are deferred: the handler responds once the owners have answered.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::value::RawValue;
use sha1::{Digest, Sha1};

use super::msg::{OwnedRooms, RoomMsg};
use super::protocol::{self, ObjectWriter};
use super::{Purpose, Rooms};
use crate::proto::handshake::PlainRequest;
use crate::server::{http, ConnId, HttpResponse, Metrics, Outbox};

/// Answers a plain HTTP request now, or returns `None` when the answer comes later.
pub fn serve(
    rooms: &mut Rooms,
    out: &mut Outbox,
    conn: ConnId,
    request: &PlainRequest,
    body: &[u8],
    metrics: &Metrics,
) -> Option<HttpResponse> {
    let path = request.path.split('?').next().unwrap_or_default();
    Some(match (request.method.as_str(), path) {
        ("GET", "/healthz") => HttpResponse::text(200, "ok\n"),
        ("GET", "/metrics") => {
            let mut text = String::new();
            metrics.render(&mut text);
            rooms.gather(out, Purpose::Metrics(conn, text));
            return None;
        }
        (_, p) if p == "/api" || p.starts_with("/api/") => {
            let Some(key) = rooms.config.api_key.as_deref() else {
                return Some(HttpResponse::json_error(404, "the backend API is off (no API key configured)"));
            };
            if !authorized(request.authorization.as_deref(), key) {
                return Some(
                    HttpResponse::json_error(401, "missing or wrong API key").with_header("WWW-Authenticate", "Bearer"),
                );
            }
            match (request.method.as_str(), p) {
                ("POST", "/api/publish") => return publish(rooms, out, conn, body),
                ("GET", "/api/rooms") => {
                    rooms.gather(out, Purpose::ListRooms(conn));
                    return None;
                }
                (_, "/api/publish" | "/api/rooms") => {
                    HttpResponse::json_error(405, "method not allowed").with_header("Allow", allowed(p))
                }
                _ => HttpResponse::json_error(404, "no such API endpoint"),
            }
        }
        ("GET", p) if p == rooms.config.path => http::upgrade_required(),
        _ => HttpResponse::text(404, "not found\n"),
    })
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

/// Validates a backend publish and hands it to the room's owner, which answers.
fn publish(rooms: &mut Rooms, out: &mut Outbox, http: ConnId, body: &[u8]) -> Option<HttpResponse> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Some(HttpResponse::json_error(400, "body is not UTF-8"));
    };
    let Ok(fields) = serde_json::from_str::<HashMap<String, &RawValue>>(text) else {
        return Some(HttpResponse::json_error(400, "body must be a JSON object {\"room\",\"data\"}"));
    };
    let Some(Ok(room)) = fields.get("room").map(|r| serde_json::from_str::<String>(r.get())) else {
        return Some(HttpResponse::json_error(400, "missing or ill-typed field: room"));
    };
    if let Err(e) = protocol::validate_room_name(&room) {
        return Some(HttpResponse::json_error(400, &e.message));
    }
    let Some(data) = fields.get("data") else {
        return Some(HttpResponse::json_error(400, "missing field: data"));
    };
    let owner = rooms.owner(&room);
    rooms.send(out, owner, RoomMsg::ApiPublish { http, room, data: data.get().to_owned() });
    None
}

/// `GET /api/rooms`: every worker's owned rooms, by name.
pub fn list_rooms(mut all: OwnedRooms) -> HttpResponse {
    all.rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<String> = all
        .rooms
        .iter()
        .map(|(name, members, offset)| {
            ObjectWriter::new().str("room", name).num("members", *members as u64).num("offset", *offset).finish()
        })
        .collect();
    HttpResponse::json(200, ObjectWriter::new().raw_array("rooms", items.iter().map(String::as_str)).finish())
}

/// The room gauges of `/metrics`, summed over every worker's owned rooms.
pub fn render_room_metrics(all: &OwnedRooms, out: &mut String) {
    let members: usize = all.rooms.iter().map(|r| r.1).sum();
    for (name, help, value) in [
        ("wsedge_rooms", "Rooms in memory.", all.rooms.len()),
        ("wsedge_room_members", "Memberships across all rooms.", members),
        ("wsedge_history_messages", "Messages kept for recovery.", all.history_messages),
        ("wsedge_history_bytes", "Bytes of messages kept for recovery.", all.history_bytes),
        ("wsedge_relay_rooms", "Raw relay rooms in use.", all.relay_rooms),
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
