//! The `wsedge.v1` wire protocol: parsing client requests and writing replies and pushes.
//!
//! Contract: docs/protocol.md.
//! No state, no IO: text in, [`Request`] out; values in, JSON text out. A request's `data`
//! is kept as the client's raw JSON text and embedded verbatim in the message pushed to
//! members, so it is never re-serialized.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::value::RawValue;

use super::error::RoomError;

/// `join` with `since`: the last offset the client saw in that epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The epoch the client's offsets belong to.
    pub epoch: String,
    /// The last offset it received.
    pub offset: u64,
}

/// A parsed client request. `data` borrows the request text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Enter a room.
    Join {
        /// The room.
        room: String,
        /// Which join and leave events of others it receives.
        presence: Presence,
        /// Recover what was missed since then.
        since: Option<Since>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
    /// Send a message to a room's members.
    Publish {
        /// The room.
        room: String,
        /// The raw JSON text of the field, as the client wrote it.
        data: &'a str,
        /// False: not sent back to the publisher.
        echo: bool,
        /// True: no offset, not kept (typing, cursors).
        ephemeral: bool,
        /// The client's idempotency key (1-64 bytes): a publish with a key already seen in
        /// the room's history window is not published again.
        key: Option<String>,
    },
    /// A room's members.
    Presence {
        /// The room.
        room: String,
    },
    /// A room's last kept messages.
    History {
        /// The room.
        room: String,
        /// How many (default [`DEFAULT_HISTORY_LIMIT`]).
        limit: Option<u64>,
    },
    /// Answered once everything asked before it is done.
    Ping,
    /// Authenticates (or, with a newer token for the same user, extends) the session. The
    /// token is a secret: it is verified and dropped, never echoed or logged.
    Auth {
        /// The JWT.
        token: String,
    },
}

/// Which presence a member watches in a room (`join`'s `presence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Presence {
    /// No join or leave events (`false`, the default).
    #[default]
    Off,
    /// An event per connection (`true` or `"connections"`).
    Connections,
    /// An event per user (`"users"`): `join` for a user's first connection in the room,
    /// `leave` for its last; an anonymous connection is a user of its own. Its `presence`
    /// reply lists users, each with its number of connections.
    Users,
}

impl Presence {
    /// Whether it receives any presence events.
    pub fn watches(self) -> bool {
        self != Presence::Off
    }
}

impl<'de> serde::Deserialize<'de> for Presence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Flag(bool),
            Named(String),
        }
        match Wire::deserialize(d)? {
            Wire::Flag(false) => Ok(Presence::Off),
            Wire::Flag(true) => Ok(Presence::Connections),
            Wire::Named(name) if name == "connections" => Ok(Presence::Connections),
            Wire::Named(name) if name == "users" => Ok(Presence::Users),
            Wire::Named(_) => Err(serde::de::Error::custom("expected true, false, \"connections\" or \"users\"")),
        }
    }
}

/// A request's `id` as raw JSON (a number or a string), echoed verbatim in the reply.
pub type RequestId<'a> = Option<&'a RawValue>;

/// Parses one text frame. The id is returned even when the rest is invalid, so the error
/// reply can carry it; when the JSON itself is malformed the id is unknown (`None`).
pub fn parse_request(text: &str) -> (RequestId<'_>, Result<Request<'_>, RoomError>) {
    let fields: HashMap<String, &RawValue> = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(_) => return (None, Err(RoomError::MalformedJson)),
    };
    let id = match fields.get("id") {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) if raw.get().starts_with('"') || raw.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            Some(*raw)
        }
        Some(_) => return (None, Err(RoomError::BadId)),
    };
    (id, parse_fields(&fields))
}

fn parse_fields<'a>(fields: &HashMap<String, &'a RawValue>) -> Result<Request<'a>, RoomError> {
    let op: String = required(fields, "op")?;
    match op.as_str() {
        "join" => Ok(Request::Join {
            room: room(fields)?,
            presence: optional(fields, "presence")?.unwrap_or_default(),
            since: since(fields)?,
        }),
        "leave" => Ok(Request::Leave { room: room(fields)? }),
        "publish" => publish(fields),
        "presence" => Ok(Request::Presence { room: room(fields)? }),
        "history" => Ok(Request::History { room: room(fields)?, limit: optional(fields, "limit")? }),
        "ping" => Ok(Request::Ping),
        "auth" => Ok(Request::Auth { token: required(fields, "token")? }),
        other => Err(RoomError::UnknownOp(truncate(other, 32).to_owned())),
    }
}

fn publish<'a>(fields: &HashMap<String, &'a RawValue>) -> Result<Request<'a>, RoomError> {
    Ok(Request::Publish {
        room: room(fields)?,
        data: fields.get("data").map(|raw| raw.get()).ok_or(RoomError::MissingField("data"))?,
        echo: optional(fields, "echo")?.unwrap_or(true),
        ephemeral: optional(fields, "ephemeral")?.unwrap_or(false),
        key: publish_key(fields)?,
    })
}

/// The longest stream token (`POST /publish`'s `stream`) worth looking up.
pub const MAX_STREAM_TOKEN_BYTES: usize = 64;

/// An event stream's request over HTTP: the body of `POST /publish` (the `publish`
/// request's fields, `op` left out or `"publish"`), or what `GET /presence` and
/// `GET /history` carry (`"op":"presence"` or `"history"` and their fields); each with
/// `stream`, the token the stream's `welcome` event gave. Returns the token and the
/// request.
pub fn parse_stream_request(text: &str) -> Result<(String, Request<'_>), RoomError> {
    let fields: HashMap<String, &RawValue> = serde_json::from_str(text).map_err(|_| RoomError::MalformedJson)?;
    let request = match optional::<String>(&fields, "op")?.as_deref() {
        None | Some("publish") => publish(&fields)?,
        Some("presence" | "history") => parse_fields(&fields)?,
        Some(other) => return Err(RoomError::UnknownOp(truncate(other, 32).to_owned())),
    };
    let stream: String = required(&fields, "stream")?;
    if stream.len() > MAX_STREAM_TOKEN_BYTES {
        return Err(RoomError::NoSuchStream);
    }
    Ok((stream, request))
}

/// The longest idempotency key.
pub const MAX_KEY_BYTES: usize = 64;

/// A publish's `key`: absent, or 1-[`MAX_KEY_BYTES`] bytes.
pub fn publish_key(fields: &HashMap<String, &RawValue>) -> Result<Option<String>, RoomError> {
    match optional::<String>(fields, "key")? {
        Some(key) if key.is_empty() || key.len() > MAX_KEY_BYTES => Err(RoomError::BadKey),
        key => Ok(key),
    }
}

fn required<T: serde::de::DeserializeOwned>(
    fields: &HashMap<String, &RawValue>,
    name: &'static str,
) -> Result<T, RoomError> {
    optional(fields, name)?.ok_or(RoomError::MissingField(name))
}

/// A field that may be absent (or null); present with the wrong type is an error.
fn optional<T: serde::de::DeserializeOwned>(
    fields: &HashMap<String, &RawValue>,
    name: &'static str,
) -> Result<Option<T>, RoomError> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| RoomError::WrongType(name)),
    }
}

fn room(fields: &HashMap<String, &RawValue>) -> Result<String, RoomError> {
    let room: String = required(fields, "room")?;
    validate_room_name(&room)?;
    Ok(room)
}

fn since(fields: &HashMap<String, &RawValue>) -> Result<Option<Since>, RoomError> {
    #[derive(serde::Deserialize)]
    struct RawSince {
        epoch: String,
        offset: u64,
    }
    let raw: Option<RawSince> = optional(fields, "since")?;
    Ok(raw.map(|s| Since { epoch: s.epoch, offset: s.offset }))
}

/// Messages a `history` request returns when it names no `limit` (contract: "default 100",
/// whatever the configured history size).
pub const DEFAULT_HISTORY_LIMIT: u64 = 100;

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 128;

/// Room names are 1-128 bytes of `[A-Za-z0-9_.:-]`: safe in URLs, logs and metrics labels.
pub fn validate_room_name(room: &str) -> Result<(), RoomError> {
    let valid_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
    if room.is_empty() || room.len() > MAX_ROOM_NAME || !room.bytes().all(valid_byte) {
        return Err(RoomError::BadRoomName);
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---- ids ----

/// `n` in base 36 (lowercase): short ids for epochs and clients.
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// 64 random bits in base 36: the prefix of a worker's client ids and epochs, so that
/// they do not repeat across workers, restarts or nodes.
pub fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    base36(std::collections::hash_map::RandomState::new().build_hasher().finish())
}

// ---- writing ----

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// Appends a JSON string or `null`.
pub fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

/// Who a message or presence event is about.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Its client id (`None`: the backend API).
    pub client: Option<&'a str>,
    /// Its user (`None`: anonymous, or the backend API).
    pub user: Option<&'a str>,
    /// Its token's `info` claim, compact JSON (an object the auth layer checked).
    pub info: Option<&'a str>,
}

impl Member<'_> {
    /// The backend API, which publishes as nobody: `{"client":null,"user":null}`.
    pub const BACKEND: Member<'static> = Member { client: None, user: None, info: None };
}

/// Appends `{"client":…,"user":…}`, with `"info":{…}` when the token had one.
pub fn push_member(out: &mut String, m: Member<'_>) {
    out.push_str("{\"client\":");
    push_opt_str(out, m.client);
    out.push_str(",\"user\":");
    push_opt_str(out, m.user);
    push_info(out, m.info);
    out.push('}');
}

/// Appends a member as presence by user shows it: a user as `{"user":…[,"info":…]}` (one
/// entry for all its connections), an anonymous connection as `{"client":…,"user":null}`
/// (a user of its own).
pub fn push_user(out: &mut String, m: Member<'_>) {
    match m.user {
        Some(user) => {
            out.push_str("{\"user\":");
            push_str(out, user);
            push_info(out, m.info);
            out.push('}');
        }
        None => push_member(out, m),
    }
}

/// Appends `,"info":{…}` when there is one (verbatim: compact JSON from the token).
fn push_info(out: &mut String, info: Option<&str>) {
    if let Some(info) = info {
        out.push_str(",\"info\":");
        out.push_str(info);
    }
}

/// `{"op":"welcome","client":…,"user":…[,"info":…]}`
pub fn welcome(client: &str, user: Option<&str>, info: Option<&str>) -> String {
    let mut out = String::from("{\"op\":\"welcome\",\"client\":");
    push_str(&mut out, client);
    out.push_str(",\"user\":");
    push_opt_str(&mut out, user);
    push_info(&mut out, info);
    out.push('}');
    out
}

/// An event stream's `welcome`: as a socket's, plus `"stream"`, the token its
/// `POST /publish` names it by.
pub fn stream_welcome(client: &str, user: Option<&str>, info: Option<&str>, stream: &str) -> String {
    let mut out = welcome(client, user, info);
    out.pop(); // the closing brace
    out.push_str(",\"stream\":");
    push_str(&mut out, stream);
    out.push('}');
    out
}

/// The message push: `{"op":"message","room",["offset",]"from","data"}`. `data` is the
/// publisher's raw JSON.
pub fn message(room: &str, offset: Option<u64>, from: Member<'_>, data: &str) -> String {
    let mut out = String::with_capacity(64 + room.len() + data.len());
    out.push_str("{\"op\":\"message\",\"room\":");
    push_str(&mut out, room);
    if let Some(offset) = offset {
        let _ = write!(out, ",\"offset\":{offset}");
    }
    out.push_str(",\"from\":");
    push_member(&mut out, from);
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

/// A message to a user from the backend: `{"op":"message","user","data"}` (no room, no
/// offset: it is not kept). `data` is the backend's raw JSON.
pub fn user_message(user: &str, data: &str) -> String {
    let mut out = String::with_capacity(40 + user.len() + data.len());
    out.push_str("{\"op\":\"message\",\"user\":");
    push_str(&mut out, user);
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

/// A presence event: `{"op":"join"|"leave","room","member"}`, the member as `presence`
/// shows it: a connection ([`push_member`]) or a user ([`push_user`]).
pub fn presence_event(op: &str, room: &str, member: Member<'_>, by: Presence) -> String {
    let mut out = String::from("{\"op\":");
    push_str(&mut out, op);
    out.push_str(",\"room\":");
    push_str(&mut out, room);
    out.push_str(",\"member\":");
    match by {
        Presence::Users => push_user(&mut out, member),
        Presence::Off | Presence::Connections => push_member(&mut out, member),
    }
    out.push('}');
    out
}

/// `{"op":"reset","room","epoch","offset"}`: continuity lost, reload the room (only an
/// engine whose link to its store can break sends it).
pub fn reset(room: &str, epoch: &str, offset: u64) -> String {
    ObjectWriter::new().str("op", "reset").str("room", room).str("epoch", epoch).num("offset", offset).finish()
}

/// `{"id":…,"ok":<body>}`; `body` is a JSON object already written.
pub fn reply_ok(id: RequestId<'_>, body: &str) -> String {
    let mut out = String::with_capacity(16 + body.len());
    out.push_str("{\"id\":");
    out.push_str(id.map_or("null", RawValue::get));
    out.push_str(",\"ok\":");
    out.push_str(body);
    out.push('}');
    out
}

/// `{"id":…,"error":{"code","message"}}`
pub fn reply_error(id: RequestId<'_>, error: &RoomError) -> String {
    let mut out = String::from("{\"id\":");
    out.push_str(id.map_or("null", RawValue::get));
    let _ = write!(out, ",\"error\":{{\"code\":{},\"message\":", error.code());
    push_str(&mut out, &error.to_string());
    out.push_str("}}");
    out
}

/// A small JSON object writer for reply bodies: `{"a":1,"b":"x"}`.
#[derive(Debug, Default)]
pub struct ObjectWriter {
    out: String,
}

impl ObjectWriter {
    /// An empty object.
    pub fn new() -> Self {
        ObjectWriter { out: String::from("{") }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_str(&mut self.out, key);
        self.out.push(':');
    }

    /// Adds a string member.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_str(&mut self.out, value);
        self
    }

    /// Adds a number member.
    pub fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// Adds a boolean member.
    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// A JSON array of already-written JSON values.
    pub fn raw_array<'s>(mut self, key: &str, items: impl IntoIterator<Item = &'s str>) -> Self {
        self.key(key);
        self.out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(item);
        }
        self.out.push(']');
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Option<String>, Result<Request<'_>, RoomError>) {
        let (id, req) = parse_request(text);
        (id.map(|r| r.get().to_owned()), req)
    }

    #[test]
    fn every_op_parses() {
        let (id, req) =
            parse(r#"{"id":7,"op":"join","room":"lobby","presence":true,"since":{"epoch":"e1","offset":3}}"#);
        assert_eq!(id.as_deref(), Some("7"));
        assert_eq!(
            req,
            Ok(Request::Join {
                room: "lobby".into(),
                presence: Presence::Connections,
                since: Some(Since { epoch: "e1".into(), offset: 3 })
            })
        );
        let (id, req) = parse(r#"{"id":"a","op":"publish","room":"r","data":{"x":[1,2]},"echo":false}"#);
        assert_eq!(id.as_deref(), Some("\"a\""));
        match req {
            Ok(Request::Publish { room, data, echo, ephemeral, key }) => {
                assert_eq!((room.as_str(), data, echo, ephemeral, key), ("r", r#"{"x":[1,2]}"#, false, false, None));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(r#"{"op":"leave","room":"r"}"#).1, Ok(Request::Leave { room: "r".into() }));
        assert_eq!(parse(r#"{"op":"presence","room":"r"}"#).1, Ok(Request::Presence { room: "r".into() }));
        assert_eq!(
            parse(r#"{"op":"history","room":"r","limit":5}"#).1,
            Ok(Request::History { room: "r".into(), limit: Some(5) })
        );
        assert_eq!(parse(r#"{"op":"ping","extra":"ignored"}"#).1, Ok(Request::Ping));
        assert_eq!(parse(r#"{"op":"auth","token":"a.b.c"}"#).1, Ok(Request::Auth { token: "a.b.c".into() }));
    }

    #[test]
    fn bad_requests_are_400_and_keep_the_id() {
        for (text, id) in [
            (r#"not json"#, None),
            (r#"[1,2]"#, None),
            (r#"{"id":{"x":1},"op":"ping"}"#, None),
            (r#"{"id":1}"#, Some("1")),
            (r#"{"id":1,"op":"dance"}"#, Some("1")),
            (r#"{"id":1,"op":"join"}"#, Some("1")),
            (r#"{"id":1,"op":"join","room":5}"#, Some("1")),
            (r#"{"id":1,"op":"join","room":"bad room"}"#, Some("1")),
            (r#"{"id":1,"op":"join","room":"r","presence":"yes"}"#, Some("1")),
            (r#"{"id":1,"op":"join","room":"r","presence":1}"#, Some("1")),
            (r#"{"id":1,"op":"join","room":"r","since":{"epoch":"e"}}"#, Some("1")),
            (r#"{"id":1,"op":"publish","room":"r"}"#, Some("1")),
            (r#"{"id":1,"op":"auth"}"#, Some("1")),
            (r#"{"id":1,"op":"auth","token":7}"#, Some("1")),
            (r#"{"id":1,"op":"history","room":"r","limit":-1}"#, Some("1")),
        ] {
            let (got_id, req) = parse(text);
            assert_eq!(req.unwrap_err().code(), 400, "{text}");
            assert_eq!(got_id.as_deref(), id, "{text}");
        }
    }

    #[test]
    fn room_names() {
        assert!(validate_room_name("chat:room-1_a.b").is_ok());
        assert!(validate_room_name(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "ä", "a/b", &"a".repeat(129)] {
            assert!(validate_room_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writers_produce_valid_json() {
        let from = Member { client: Some("c\"1"), user: None, info: None };
        let msg = message("r", Some(4), from, r#"{"t":"hi"}"#);
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(v["offset"], 4);
        assert_eq!(v["from"]["client"], "c\"1");
        assert_eq!(v["data"]["t"], "hi");
        let eph: serde_json::Value = serde_json::from_str(&message("r", None, from, "1")).unwrap();
        assert!(eph.get("offset").is_none());
        let err = reply_error(None, &RoomError::NotMember);
        assert_eq!(err, r#"{"id":null,"error":{"code":404,"message":"not a member of that room"}}"#);
        let body = ObjectWriter::new()
            .str("room", "r")
            .num("offset", 3)
            .bool("recovered", true)
            .raw_array("missed", ["1", "{}"])
            .finish();
        assert_eq!(body, r#"{"room":"r","offset":3,"recovered":true,"missed":[1,{}]}"#);
        let _: serde_json::Value =
            serde_json::from_str(&presence_event("join", "r", from, Presence::Connections)).unwrap();
        let _: serde_json::Value = serde_json::from_str(&welcome("c1", Some("u"), None)).unwrap();
    }

    #[test]
    fn presence_is_a_flag_or_a_grouping() {
        for (value, expected) in [
            ("false", Presence::Off),
            ("null", Presence::Off),
            ("true", Presence::Connections),
            ("\"connections\"", Presence::Connections),
            ("\"users\"", Presence::Users),
        ] {
            let text = format!(r#"{{"op":"join","room":"r","presence":{value}}}"#);
            let (_, req) = parse(&text);
            assert_eq!(req, Ok(Request::Join { room: "r".into(), presence: expected, since: None }), "{value}");
        }
        assert_eq!(
            parse(r#"{"op":"join","room":"r"}"#).1.map(|r| matches!(r, Request::Join { presence: Presence::Off, .. })),
            Ok(true)
        );
    }

    #[test]
    fn a_user_is_shown_once_for_all_its_connections_and_an_anonymous_one_by_its_client() {
        let ann = Member { client: Some("c1"), user: Some("ann"), info: Some(r#"{"name":"Ann"}"#) };
        assert_eq!(
            presence_event("join", "r", ann, Presence::Users),
            r#"{"op":"join","room":"r","member":{"user":"ann","info":{"name":"Ann"}}}"#
        );
        let anon = Member { client: Some("c2"), user: None, info: None };
        assert_eq!(
            presence_event("leave", "r", anon, Presence::Users),
            r#"{"op":"leave","room":"r","member":{"client":"c2","user":null}}"#
        );
        assert_eq!(
            presence_event("join", "r", ann, Presence::Connections),
            r#"{"op":"join","room":"r","member":{"client":"c1","user":"ann","info":{"name":"Ann"}}}"#
        );
    }

    #[test]
    fn info_is_shown_with_the_user_only_when_the_token_had_one() {
        let mut out = String::new();
        push_member(&mut out, Member { client: Some("c1"), user: Some("ann"), info: Some(r#"{"name":"Ann"}"#) });
        assert_eq!(out, r#"{"client":"c1","user":"ann","info":{"name":"Ann"}}"#);
        out.clear();
        push_member(&mut out, Member { client: Some("c1"), user: Some("ann"), info: None });
        assert_eq!(out, r#"{"client":"c1","user":"ann"}"#, "unchanged without info");
        assert_eq!(welcome("c1", Some("ann"), Some("{}")), r#"{"op":"welcome","client":"c1","user":"ann","info":{}}"#);
    }
}
