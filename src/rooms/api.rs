//! The plain-HTTP surface of the room server: the backend API (`POST /api/publish`,
//! `GET /api/rooms`, `GET /api/presence`, `GET /api/history`, bearer-key protected),
//! `GET /healthz`, `GET /metrics`, the demo chat's embedded files (`GET /`,
//! `/client.js`: the `demo` submodule), and the operator's live view (`GET /admin`,
//! `GET /api/admin/stream`: the `admin` submodule).
//!
//! It uses the engine's public calls only: `POST /api/publish` is the engine's `publish`,
//! the same call as a client's, and so are `presence` and `history` (asked as the backend,
//! which needs no membership); `GET /api/rooms` and the room gauges of `/metrics` are
//! its `list_rooms`. Those answers come later, as engine events for this worker
//! ([`Api::on_answer`]); the API keeps what each deferred request waits with.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use sha1::{Digest, Sha1};

use super::auth::MAX_USER_BYTES;
use super::engine::{Answer, Engine, Publish, ReplyTo, RoomsSummary};
use super::error::{ApiRefusal, RoomError};
use super::protocol::{self, ObjectWriter, Presence};
use super::reach::{Action, Reach, Reached};
use super::RoomsConfig;
use crate::proto::handshake::PlainRequest;
use crate::server::{http, ConnId, HttpResponse, Metrics, Now, Outbox};

pub mod admin;
mod demo;

/// A deferred request, waiting for the engine.
#[derive(Debug)]
enum Waiting {
    /// `POST /api/publish`.
    Publish,
    /// `GET /api/rooms`.
    ListRooms,
    /// `GET /api/presence` or `GET /api/history`: answered as a member's request is, a
    /// presence list shown by connection or (`?by=users`) by user.
    Read(Presence),
    /// `GET /metrics`, with the transport counters rendered when the request came.
    Metrics(String),
    /// `POST /api/publish` to a user, or `POST /api/disconnect`: every worker acting on
    /// the user's connections.
    Reach(Arc<str>),
    /// An event stream's request (`POST /publish`, `GET /presence`, `GET /history`), from a
    /// page of `origin` (`None`: no CORS headers), a presence list shown `by`.
    Stream {
        /// The page's origin, when allowed.
        origin: Option<String>,
        /// How a presence list is shown.
        by: Presence,
    },
    /// An admin snapshot, waiting for the room list (on the stream that asked: never
    /// answered as a request).
    Admin(Box<admin::Pending>),
}

/// The backend API of one worker.
#[derive(Debug)]
pub struct Api {
    config: Arc<RoomsConfig>,
    /// By HTTP connection: the loop defers the requests pipelined behind a deferred one,
    /// so each connection waits for one answer at a time.
    waiting: HashMap<ConnId, Waiting>,
    /// The admin streams on this worker.
    admin: admin::Admin,
}

impl Api {
    /// The API under `config` (its path and key), on `node`.
    pub fn new(config: Arc<RoomsConfig>, node: Arc<admin::ThisNode>) -> Self {
        let admin = admin::Admin::new(config.auth.is_some(), node);
        Api { config, waiting: HashMap::new(), admin }
    }

    /// `conn` waits for the answer to an event stream's request, asked from a page of
    /// `origin` when it is allowed; a presence list is shown `by`.
    pub fn await_stream_request(&mut self, conn: ConnId, origin: Option<&str>, by: Presence) {
        self.waiting.insert(conn, Waiting::Stream { origin: origin.map(str::to_owned), by });
    }

    /// Answers a plain HTTP request now, or returns `None` when the answer comes later
    /// (from the engine, or from every worker's `reach`).
    #[allow(clippy::too_many_arguments)] // the request, and each part that may answer it
    pub fn serve(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        request: &PlainRequest,
        body: &[u8],
        metrics: &Metrics,
        engine: &mut dyn Engine,
        reach: &mut Reach,
    ) -> Option<HttpResponse> {
        let path = request.path.split('?').next().unwrap_or_default();
        Some(match (request.method.as_str(), path) {
            ("GET", "/healthz") if engine.healthy() && reach.ready() => HttpResponse::text(200, "ok\n"),
            // A load balancer takes this node out while its store is unreachable.
            ("GET", "/healthz") => HttpResponse::text(503, "degraded\n"),
            ("GET", "/metrics") => {
                let mut text = String::new();
                metrics.render(&mut text);
                engine.render_metrics(&mut text);
                self.waiting.insert(conn, Waiting::Metrics(text));
                engine.list_rooms(out.now(), ReplyTo::Http(conn));
                return None;
            }
            (_, p) if p == "/api" || p.starts_with("/api/") => {
                let Some(key) = self.config.api_key.as_deref() else {
                    return Some(ApiRefusal::Off.response());
                };
                if !authorized(request.authorization.as_deref(), key) {
                    return Some(ApiRefusal::WrongKey.response());
                }
                match (request.method.as_str(), p) {
                    ("POST", "/api/publish") => return self.publish(out, conn, body, engine, reach),
                    ("POST", "/api/disconnect") => return self.disconnect(out, conn, body, reach),
                    ("GET", "/api/rooms") => {
                        self.waiting.insert(conn, Waiting::ListRooms);
                        engine.list_rooms(out.now(), ReplyTo::Http(conn));
                        return None;
                    }
                    ("GET", "/api/presence" | "/api/history") => {
                        return self.read(out, conn, p == "/api/history", &request.path, engine);
                    }
                    ("GET", "/api/admin/stream") => self.admin.open(conn),
                    (
                        _,
                        "/api/publish" | "/api/disconnect" | "/api/rooms" | "/api/presence" | "/api/history"
                        | "/api/admin/stream",
                    ) => ApiRefusal::MethodNotAllowed.response().with_header("Allow", allowed(p)),
                    _ => ApiRefusal::NoEndpoint.response(),
                }
            }
            ("GET", p) if p == self.config.path => http::upgrade_required(),
            // The page is static (its data needs the key), and exists only with a key.
            ("GET", p) if admin::is_page_file(p) && self.config.api_key.is_some() => {
                admin::page_file(p).unwrap_or_else(|| HttpResponse::text(404, "not found\n"))
            }
            (method, p) => self.demo_file(method, p).unwrap_or_else(|| HttpResponse::text(404, "not found\n")),
        })
    }

    /// The demo's file at `path`, when the demo is on. It needs the room protocol, so a
    /// server without its path (`relay`) has no demo.
    fn demo_file(&self, method: &str, path: &str) -> Option<HttpResponse> {
        let on = method == "GET" && self.config.demo && !self.config.path.is_empty();
        on.then(|| demo::response(path)).flatten()
    }

    /// Validates a backend publish and hands it to the engine (to a room) or to every
    /// worker (to a user), which answer.
    fn publish(
        &mut self,
        out: &mut Outbox,
        http: ConnId,
        body: &[u8],
        engine: &mut dyn Engine,
        reach: &mut Reach,
    ) -> Option<HttpResponse> {
        let (target, data, key) = match parse_publish(body) {
            Ok(publish) => publish,
            Err(e) => return Some(error_response(&e)),
        };
        match target {
            Target::Room(room) => {
                self.waiting.insert(http, Waiting::Publish);
                let publish = Publish {
                    reply: ReplyTo::Http(http),
                    from: None,
                    room,
                    data: Bytes::from(data),
                    echo: true,
                    ephemeral: false,
                    key: key.map(String::into_boxed_str),
                };
                engine.publish(out.now(), publish);
            }
            Target::User(user) => {
                // Not kept anywhere (no offset, no history): a live notification.
                if data.len() > self.config.max_message_bytes {
                    return Some(error_response(&RoomError::TooLarge { max: self.config.max_message_bytes }));
                }
                let push = Bytes::from(protocol::user_message(&user, &data));
                self.waiting.insert(http, Waiting::Reach(user.clone()));
                reach.start(out.now().mono, http, user, Action::Send(push));
            }
        }
        None
    }

    /// `POST /api/disconnect {"user"}`: closes every connection of the user (4001).
    fn disconnect(&mut self, out: &mut Outbox, http: ConnId, body: &[u8], reach: &mut Reach) -> Option<HttpResponse> {
        let user = match parse_body(body).and_then(|fields| user_field(&fields)) {
            Ok(Some(user)) => user,
            Ok(None) => return Some(error_response(&RoomError::MissingField("user"))),
            Err(e) => return Some(error_response(&e)),
        };
        self.waiting.insert(http, Waiting::Reach(user.clone()));
        reach.start(out.now().mono, http, user, Action::Disconnect);
        None
    }

    /// The server admitted `conn`'s stream: true if it is an admin stream (it has no other
    /// part to open).
    pub fn on_stream(&mut self, out: &mut Outbox, conn: ConnId) -> bool {
        self.admin.opened(out, conn)
    }

    /// `conn` is gone.
    pub fn on_close(&mut self, conn: ConnId) {
        self.admin.close(conn);
    }

    /// Whether an admin stream is open here (the server then hands in its counters each tick).
    pub fn wants_stats(&self) -> bool {
        self.admin.watching()
    }

    /// A tick with every worker's counters: this node's report to the others sharing the
    /// engine's store (from one worker per node).
    pub fn report_node(&mut self, now: Now, workers: &[Metrics], engine: &mut dyn Engine) {
        let report = self.admin.node().report(now, workers, engine.store_link().unwrap_or_default());
        engine.report_node(now, &report);
    }

    /// A tick with every worker's counters: an admin snapshot, completed when the engine
    /// lists its rooms.
    pub fn on_stats(&mut self, out: &mut Outbox, workers: &[Metrics], engine: &mut dyn Engine) {
        if let Some((asker, pending)) = self.admin.tick(out.now(), workers, engine.store_link(), engine.nodes()) {
            self.waiting.insert(asker, Waiting::Admin(Box::new(pending)));
            engine.list_rooms(out.now(), ReplyTo::Http(asker));
        }
    }

    /// Every worker (every node) acted for the call waiting on `http`, or could not.
    pub fn on_reached(&mut self, out: &mut Outbox, http: ConnId, result: Result<Reached, RoomError>) {
        let Some(Waiting::Reach(user)) = self.waiting.remove(&http) else { return };
        let response = match result {
            Ok(Reached { connections, complete }) => {
                let body = ObjectWriter::new().str("user", &user).num("connections", connections);
                // A node that did not answer in time may have reached more: say so.
                HttpResponse::json(200, if complete { body } else { body.bool("complete", false) }.finish())
            }
            Err(e) => error_response(&e),
        };
        out.respond(http, response);
    }

    /// `GET /api/presence?room=R` or `GET /api/history?room=R&limit=N` (`history`): the
    /// engine answers as it answers a member, without the membership check.
    fn read(
        &mut self,
        out: &mut Outbox,
        http: ConnId,
        history: bool,
        target: &str,
        engine: &mut dyn Engine,
    ) -> Option<HttpResponse> {
        let room = match http::query_param(target, "room") {
            Some(Ok(room)) => room,
            Some(Err(())) => return Some(error_response(&RoomError::WrongType("room"))),
            None => return Some(error_response(&RoomError::MissingField("room"))),
        };
        if let Err(e) = protocol::validate_room_name(&room) {
            return Some(error_response(&e));
        }
        let limit = match http::query_param(target, "limit") {
            None => None,
            Some(Ok(limit)) if history => match limit.parse::<u64>() {
                Ok(limit) => Some(limit),
                Err(_) => return Some(error_response(&RoomError::WrongType("limit"))),
            },
            Some(_) => return Some(error_response(&RoomError::WrongType("limit"))),
        };
        // `by=users`: presence by user, as a member that joined with `"presence":"users"`.
        let by = match http::query_param(target, "by") {
            None => Presence::Connections,
            Some(Ok(by)) if !history && by == "connections" => Presence::Connections,
            Some(Ok(by)) if !history && by == "users" => Presence::Users,
            Some(_) => return Some(error_response(&RoomError::WrongType("by"))),
        };
        self.waiting.insert(http, Waiting::Read(by));
        let to = ReplyTo::Http(http);
        if history {
            engine.history(out.now(), to, room, limit);
        } else {
            engine.presence(out.now(), to, room);
        }
        None
    }

    /// The engine's answer to a deferred request on `http` (`relay_rooms`: the relay rooms
    /// in the server, for `/metrics`).
    pub fn on_answer(&mut self, out: &mut Outbox, http: ConnId, result: Result<Answer, RoomError>, relay_rooms: usize) {
        let Some(waiting) = self.waiting.remove(&http) else { return };
        // The admin stream is not a request: its snapshot goes out as an event, never a response.
        let (waiting, result) = match (waiting, result) {
            (Waiting::Admin(pending), result) => {
                let rooms = match result {
                    Ok(Answer::Rooms(all)) => Some(all),
                    _ => None,
                };
                return self.admin.finish(out, *pending, rooms, relay_rooms);
            }
            other => other,
        };
        let response = match (waiting, result) {
            (Waiting::Stream { origin, by }, result) => {
                let response = match result {
                    Ok(answer @ (Answer::Published { .. } | Answer::Presence { .. } | Answer::History { .. })) => {
                        HttpResponse::json(200, super::members::answer_body(answer, by))
                    }
                    Ok(other) => {
                        log::warn!("the engine answered a stream's request with {other:?}");
                        HttpResponse::json_error(500, "internal error")
                    }
                    Err(e) => error_response(&e),
                };
                response.with_cors(origin.as_deref())
            }
            (_, Err(e)) => error_response(&e),
            (Waiting::Publish, Ok(Answer::Published { room, offset, duplicate })) => {
                HttpResponse::json(200, super::members::published_body(&room, Some(offset.unwrap_or(0)), duplicate))
            }
            (Waiting::ListRooms, Ok(Answer::Rooms(all))) => list_rooms(all),
            (Waiting::Read(by), Ok(answer @ (Answer::Presence { .. } | Answer::History { .. }))) => {
                HttpResponse::json(200, super::members::answer_body(answer, by))
            }
            (Waiting::Metrics(mut text), Ok(Answer::Rooms(all))) => {
                render_room_metrics(&all, relay_rooms, &mut text);
                HttpResponse { content_type: "text/plain; version=0.0.4", ..HttpResponse::text(200, &text) }
            }
            (_, Ok(other)) => {
                log::warn!("the engine answered an API request with {other:?}");
                HttpResponse::json_error(500, "internal error")
            }
        };
        out.respond(http, response);
    }
}

/// A refusal as the API's JSON error, with the wire code as the HTTP status.
fn error_response(e: &RoomError) -> HttpResponse {
    HttpResponse::json_error(e.code(), &e.to_string())
}

/// Where a backend publish goes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A room (a valid name).
    Room(String),
    /// Every connection of a user.
    User(Arc<str>),
}

/// `{"room"|"user","data","key"?}`: where it goes, the raw JSON text of `data`, and the
/// idempotency key (as a client's publish has it; rooms only).
fn parse_publish(body: &[u8]) -> Result<(Target, String, Option<String>), RoomError> {
    let fields = parse_body(body)?;
    let room = fields.get("room").filter(|r| r.get() != "null");
    let key = protocol::publish_key(&fields)?;
    let target = match (room, user_field(&fields)?) {
        (Some(_), Some(_)) => return Err(RoomError::BodyTwoTargets),
        // A message to a user is not kept: a key could not make a retry safe.
        (None, Some(_)) if key.is_some() => return Err(RoomError::BodyUserKey),
        (None, Some(user)) => Target::User(user),
        (room, None) => {
            let Some(Ok(room)) = room.map(|r| serde_json::from_str::<String>(r.get())) else {
                return Err(RoomError::BodyRoomField);
            };
            protocol::validate_room_name(&room)?;
            Target::Room(room)
        }
    };
    let data = fields.get("data").ok_or(RoomError::MissingField("data"))?;
    Ok((target, data.get().to_owned(), key))
}

/// A body's JSON object, its values as raw JSON.
fn parse_body(body: &[u8]) -> Result<HashMap<String, &RawValue>, RoomError> {
    let text = std::str::from_utf8(body).map_err(|_| RoomError::BodyNotUtf8)?;
    serde_json::from_str::<HashMap<String, &RawValue>>(text).map_err(|_| RoomError::BodyNotObject)
}

/// A body's `user`: absent, or a string of 1-256 bytes (a token's `sub`).
fn user_field(fields: &HashMap<String, &RawValue>) -> Result<Option<Arc<str>>, RoomError> {
    let Some(raw) = fields.get("user") else { return Ok(None) };
    match serde_json::from_str::<String>(raw.get()) {
        Ok(user) if !user.is_empty() && user.len() <= MAX_USER_BYTES => Ok(Some(user.into())),
        _ => Err(RoomError::BodyUserField),
    }
}

fn allowed(path: &str) -> &'static str {
    if path == "/api/publish" || path == "/api/disconnect" {
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

/// `GET /api/rooms`: every worker's owned rooms, by name.
fn list_rooms(mut all: RoomsSummary) -> HttpResponse {
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

/// The room gauges of `/metrics`, summed over every worker's rooms.
fn render_room_metrics(all: &RoomsSummary, relay_rooms: usize, out: &mut String) {
    let members: usize = all.rooms.iter().map(|r| r.1).sum();
    for (name, help, value) in [
        ("wsedge_rooms", "Rooms in memory.", all.rooms.len()),
        ("wsedge_room_members", "Memberships across all rooms.", members),
        ("wsedge_history_messages", "Messages kept for recovery.", all.history_messages),
        ("wsedge_history_bytes", "Bytes of messages kept for recovery.", all.history_bytes),
        ("wsedge_relay_rooms", "Raw relay rooms in use.", relay_rooms),
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

    #[test]
    fn a_backend_publish_goes_to_a_room_or_a_user() {
        let parse = |body: &str| parse_publish(body.as_bytes()).map(|(target, data, _)| (target, data));
        assert_eq!(parse(r#"{"room":"r","data":1}"#), Ok((Target::Room("r".into()), "1".into())));
        assert_eq!(parse(r#"{"user":"ann","data":{"a":1}}"#), Ok((Target::User("ann".into()), r#"{"a":1}"#.into())));
        assert_eq!(parse(r#"{"room":"r","user":"ann","data":1}"#), Err(RoomError::BodyTwoTargets));
        assert_eq!(parse(r#"{"data":1}"#), Err(RoomError::BodyRoomField));
        assert_eq!(parse(r#"{"user":"","data":1}"#), Err(RoomError::BodyUserField));
        assert_eq!(parse(r#"{"user":7,"data":1}"#), Err(RoomError::BodyUserField));
        assert_eq!(parse(&format!(r#"{{"user":"{}","data":1}}"#, "u".repeat(257))), Err(RoomError::BodyUserField));
        assert_eq!(parse(r#"{"user":"ann"}"#), Err(RoomError::MissingField("data")));
        assert_eq!(parse(r#"{"room":null,"user":"ann","data":1}"#), Ok((Target::User("ann".into()), "1".into())));
        assert_eq!(parse(r#"{"user":"ann","data":1,"key":"k1"}"#), Err(RoomError::BodyUserKey));
    }
}
