//! The room layer as the event loop drives it: a `Rooms` handler (small limits) gets a
//! fuzz-chosen sequence of opens, text and binary messages (JSON from a small grammar of
//! ops and fields with arbitrary values, or raw text), closes, clock advances with
//! `on_tick`, and HTTP requests to the backend API via `on_http`.
//!
//! A model tracks open connections, memberships (from requests and their replies), room
//! offsets and epochs. Checks on every command the handler queues: sends go to open
//! connections only; every outgoing text is JSON; a request gets at most one reply, which
//! carries its `id` (and exactly one when it has an id or fails); a message push reaches
//! exactly the room's members (minus the publisher without echo) and its offset is the
//! room's previous one plus 1 (ephemeral pushes have none); presence events reach exactly
//! the presence watchers of their kind, never the subject (by user, `"presence":"users"`:
//! never a connection of that user); join, history and presence replies agree (by user:
//! one entry per user, the connections adding up)
//! with the model (member counts, contiguous history ending at the room's offset,
//! recovery); `GET /api/rooms` after a tick lists the model's rooms with their offsets;
//! an epoch is never reused for a recreated room; `POST /api/publish` to a user and
//! `POST /api/disconnect` reach exactly that user's open connections (a message, or a
//! 4001 close, each) and count them. And no panics.
//!
//! Authentication (flag bit 1; HS256 with a fixed secret): opens may carry a token (valid,
//! for one of a few users and `rooms` claims, or invalid -> 401, no open); with
//! `require_auth` (bit 2) a connection without one gets no welcome until a valid `auth`
//! (its reply, then the welcome), every other request gets 401, and a tick past the
//! deadline closes it with 1008; `auth` refreshes for the same user (403 when the new
//! claim does not cover the rooms it is in) and gets 403 for another; joins, publishes, presence and history the token's claim (or the anonymous
//! default, narrowed by bit 3) does not allow get 403, checked against the model's own
//! pattern matcher.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use wsedge::proto::handshake::{PlainRequest, UpgradeRequest};
use wsedge::proto::MessageKind;
use wsedge::rooms::auth::{AuthConfig, RoomPatterns};
use wsedge::rooms::protocol::{self, Presence, Request};
use wsedge::rooms::{Rooms, RoomsConfig};
use wsedge::server::{Command, ConnId, Handler, HttpResponse, Metrics, Now, Outbox};
use wsedge_fuzz::input::Reader;

const SLOTS: u8 = 6;
const API_KEY: &str = "k3y";
const ROOMS: [&str; 4] = ["a", "b", "lobby:1", "x.y-z_0"];
const MAX_MESSAGE_BYTES: usize = 200;
const HISTORY_SIZE: usize = 4;
const JWT_SECRET: &[u8] = b"the fuzz target's HS256 secret..";
/// The harness's wall clock starts on 2026-12-01.
const START_UNIX: u64 = 1_796_083_200;
/// Tokens the harness signs: valid until 2100, or expired since 2001.
const VALID_EXP: u64 = 4_102_444_800;
const EXPIRED_EXP: u64 = 1_000_000_000;
const USERS: [&str; 3] = ["ann", "ben", "cy"];
/// `rooms` claims by token variant (join, publish, presence); `None`: no claim.
const TOKEN_ROOMS: [Option<[&[&str]; 3]>; 4] = [
    None,
    Some([&["a", "lobby:*"], &["a"], &["lobby:*"]]),
    Some([&["*"], &[], &["b"]]),
    Some([&["x.y-z_0", "b"], &["*"], &["*"]]),
];
const ANON_NARROW: [&str; 2] = ["a", "lobby:*"];
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

// ---- the input grammar ----

#[derive(Debug)]
enum Op {
    Open(u8),
    Close(u8),
    Text(u8, Text),
    Binary(u8, Vec<u8>),
    /// Advance the clock by this many 16 ms steps, then maybe tick.
    Advance(u16, bool),
    Tick,
    Http(Http),
}

#[derive(Debug)]
enum Text {
    Raw(String),
    Request(Box<Req>),
}

#[derive(Debug, Arbitrary)]
struct Req {
    id: Option<Id>,
    op: OpName,
    room: Option<RoomRef>,
    data: Option<Data>,
    presence: Option<Flag>,
    echo: Option<Flag>,
    ephemeral: Option<Flag>,
    since: Option<SinceIn>,
    limit: Option<LimitIn>,
    token: Option<TokenIn>,
    extra: Option<(String, Data)>,
}

/// A token for `auth`: variants index `USERS` and `TOKEN_ROOMS`.
#[derive(Debug, Arbitrary)]
enum TokenIn {
    Valid(u8),
    Expired(u8),
    Forged(u8),
    Garbage(String),
    WrongType(i32),
}

#[derive(Debug, Arbitrary)]
enum Id {
    Int(i64),
    Float(f64),
    Str(String),
    Null,
    Wrong(bool),
}

#[derive(Debug, Arbitrary)]
enum OpName {
    Join,
    Leave,
    Publish,
    Presence,
    History,
    Ping,
    Auth,
    Other(String),
    WrongType(i8),
}

#[derive(Debug, Arbitrary)]
enum RoomRef {
    Known(u8),
    Any(String),
    WrongType(i32),
}

#[derive(Debug, Arbitrary)]
enum Data {
    Str(String),
    Int(i64),
    Float(f64),
    Obj(Vec<(String, i32)>),
    Array(Vec<bool>),
    Null,
    /// A string of this many bytes (often over the limit).
    Long(u16),
}

#[derive(Debug, Arbitrary)]
enum Flag {
    Bool(bool),
    Null,
    Wrong(String),
    /// `"users"` (presence by user; the wrong type for the other flags).
    Users,
    /// `"connections"`.
    Connections,
}

#[derive(Debug, Arbitrary)]
struct SinceIn {
    epoch: EpochRef,
    offset: u8,
    wrong: bool,
}

#[derive(Debug, Arbitrary)]
enum EpochRef {
    Known(u8),
    Any(String),
}

#[derive(Debug, Arbitrary)]
enum LimitIn {
    Num(u64),
    Small(u8),
    Negative(i8),
    Wrong(String),
}

#[derive(Debug)]
struct Http {
    method: u8,
    path: PathRef,
    auth: u8,
    body: Body,
}

#[derive(Debug)]
enum PathRef {
    Known(u8),
    Any(String),
}

#[derive(Debug, Arbitrary)]
enum Body {
    Raw(Vec<u8>),
    Publish { room: Option<RoomRef>, data: Option<Data>, extra: bool, user: Option<u8> },
}

/// The input, read front to back (lengths are little-endian u16 in front of what they
/// measure):
///
/// ```text
/// flags      bit0: require_membership, bit1: authentication, bit2: require_auth,
///            bit3: anonymous users only in `ANON_NARROW`
/// ops        the rest, each a tag byte (tag % 8) and its operands:
///            0 open byte: slot (byte % 6); (byte / 6) % 4: no token, a valid one in the
///              query, a valid one as Bearer, an invalid one; token variant byte / 24
///                               1 close slot
///            2 text: slot, len + raw text (a real request, or anything)
///            3 text: slot, len + bytes decoded by `arbitrary` as a request from the grammar
///            4 binary: slot, len + bytes
///            5 advance: u16 steps of 16 ms, tick flag byte
///            6 tick
///            7 http: method byte, path byte (< 128: a known path, else len + path),
///              auth byte (0 none, 1 right key, 2 wrong key, 3 Basic), body byte
///              (even: len + raw body; odd: len + bytes decoded as a publish body,
///              to a room or a user)
/// ```
struct Input {
    flags: u8,
    ops: Vec<Op>,
}

impl Input {
    fn read(data: &[u8]) -> Input {
        let mut r = Reader::new(data);
        let flags = r.byte();
        let mut ops = Vec::new();
        while !r.is_empty() && ops.len() < 256 {
            let op = match r.byte() % 8 {
                0 => Op::Open(r.byte()),
                1 => Op::Close(r.byte()),
                2 => {
                    let slot = r.byte();
                    Op::Text(slot, Text::Raw(r.lp_str().into_owned()))
                }
                3 => {
                    let slot = r.byte();
                    let Ok(req) = Req::arbitrary(&mut Unstructured::new(r.lp_bytes())) else { continue };
                    Op::Text(slot, Text::Request(Box::new(req)))
                }
                4 => {
                    let slot = r.byte();
                    Op::Binary(slot, r.lp_bytes().to_vec())
                }
                5 => Op::Advance(r.u16(), r.bool()),
                6 => Op::Tick,
                _ => {
                    let method = r.byte();
                    let path = match r.byte() {
                        b if b < 128 => PathRef::Known(b),
                        _ => PathRef::Any(r.lp_str().into_owned()),
                    };
                    let auth = r.byte();
                    let body = if r.bool() {
                        match Body::arbitrary(&mut Unstructured::new(r.lp_bytes())) {
                            Ok(body) => body,
                            Err(_) => continue,
                        }
                    } else {
                        Body::Raw(r.lp_bytes().to_vec())
                    };
                    Op::Http(Http { method, path, auth, body })
                }
            };
            ops.push(op);
        }
        Input { flags, ops }
    }
}

// ---- building JSON from the grammar ----

fn room_name(r: &RoomRef) -> Value {
    match r {
        RoomRef::Known(i) => json!(ROOMS[usize::from(*i) % ROOMS.len()]),
        RoomRef::Any(s) => json!(s),
        RoomRef::WrongType(n) => json!(n),
    }
}

fn data_value(d: &Data) -> Value {
    match d {
        Data::Str(s) => json!(s),
        Data::Int(n) => json!(n),
        Data::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Data::Obj(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
        Data::Array(items) => json!(items),
        Data::Null => Value::Null,
        Data::Long(n) => json!("d".repeat(usize::from(*n) % 1024)),
    }
}

fn flag(f: &Flag) -> Value {
    match f {
        Flag::Bool(b) => json!(b),
        Flag::Null => Value::Null,
        Flag::Wrong(s) => json!(s),
        Flag::Users => json!("users"),
        Flag::Connections => json!("connections"),
    }
}

impl Req {
    fn to_json(&self, model: &Model) -> String {
        let mut m = Map::new();
        match &self.id {
            None => {}
            Some(Id::Int(n)) => {
                m.insert("id".into(), json!(n));
            }
            Some(Id::Float(f)) => {
                m.insert("id".into(), serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number));
            }
            Some(Id::Str(s)) => {
                m.insert("id".into(), json!(s));
            }
            Some(Id::Null) => {
                m.insert("id".into(), Value::Null);
            }
            Some(Id::Wrong(b)) => {
                m.insert("id".into(), if *b { json!([1]) } else { json!({"x": true}) });
            }
        }
        let op = match &self.op {
            OpName::Join => json!("join"),
            OpName::Leave => json!("leave"),
            OpName::Publish => json!("publish"),
            OpName::Presence => json!("presence"),
            OpName::History => json!("history"),
            OpName::Ping => json!("ping"),
            OpName::Auth => json!("auth"),
            OpName::Other(s) => json!(s),
            OpName::WrongType(n) => json!(n),
        };
        m.insert("op".into(), op);
        if let Some(r) = &self.room {
            m.insert("room".into(), room_name(r));
        }
        if let Some(d) = &self.data {
            m.insert("data".into(), data_value(d));
        }
        for (name, f) in [("presence", &self.presence), ("echo", &self.echo), ("ephemeral", &self.ephemeral)] {
            if let Some(f) = f {
                m.insert(name.into(), flag(f));
            }
        }
        if let Some(s) = &self.since {
            let epoch = match &s.epoch {
                EpochRef::Known(i) if !model.epochs_seen.is_empty() => {
                    let all: Vec<&String> = model.epochs_seen.iter().collect();
                    json!(all[usize::from(*i) % all.len()])
                }
                EpochRef::Known(_) => json!("none"),
                EpochRef::Any(e) => json!(e),
            };
            let since = if s.wrong { json!({ "epoch": epoch }) } else { json!({ "epoch": epoch, "offset": s.offset }) };
            m.insert("since".into(), since);
        }
        if let Some(l) = &self.limit {
            let v = match l {
                LimitIn::Num(n) => json!(n),
                LimitIn::Small(n) => json!(n % 8),
                LimitIn::Negative(n) => json!(-i16::from(*n).abs() - 1),
                LimitIn::Wrong(s) => json!(s),
            };
            m.insert("limit".into(), v);
        }
        if let Some(t) = &self.token {
            let token = match t {
                TokenIn::Valid(v) => json!(token(*v, VALID_EXP, JWT_SECRET)),
                TokenIn::Expired(v) => json!(token(*v, EXPIRED_EXP, JWT_SECRET)),
                TokenIn::Forged(v) => json!(token(*v, VALID_EXP, b"not the secret")),
                TokenIn::Garbage(s) => json!(s),
                TokenIn::WrongType(n) => json!(n),
            };
            m.insert("token".into(), token);
        }
        if let Some((k, d)) = &self.extra {
            m.entry(k.clone()).or_insert_with(|| data_value(d));
        }
        Value::Object(m).to_string()
    }
}

// ---- tokens and permissions ----

/// Token variants: user and `rooms` claim by `variant % 12`; odd dozens carry an `info`.
const VARIANTS: u8 = 2 * USERS.len() as u8 * TOKEN_ROOMS.len() as u8;

/// The `info` claim of a variant: every other dozen has one (the first dozen, as older
/// seeds signed them, has none).
fn info_of(variant: u8) -> Option<Value> {
    let dozen = USERS.len() as u8 * TOKEN_ROOMS.len() as u8;
    ((variant / dozen) % 2 == 1).then(|| json!({"name": USERS[usize::from(variant) % USERS.len()], "n": variant % dozen}))
}

fn claims(variant: u8, exp: u64) -> Value {
    let user = USERS[usize::from(variant) % USERS.len()];
    let mut claims = json!({"sub": user, "exp": exp});
    if let Some([join, publish, presence]) = TOKEN_ROOMS[usize::from(variant) % TOKEN_ROOMS.len()] {
        claims["rooms"] = json!({"join": join, "publish": publish, "presence": presence});
    }
    if let Some(info) = info_of(variant) {
        claims["info"] = info;
    }
    claims
}

fn token(variant: u8, exp: u64, secret: &[u8]) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims(variant, exp), &jsonwebtoken::EncodingKey::from_secret(secret))
        .expect("signing")
}

/// What the model knows of a token: `Some((user, variant))` when the harness signed it
/// valid (any string not signed with the secret is invalid; seeds sign the same claims).
fn known_token(token: &str) -> Option<(&'static str, u8)> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET);
    let claims_seen = jsonwebtoken::decode::<Value>(token, &key, &validation).ok()?.claims;
    (0..VARIANTS)
        .find(|v| claims(*v, VALID_EXP) == claims_seen)
        .map(|v| (USERS[usize::from(v) % USERS.len()], v))
}

/// The model's matcher, written apart from the server's: `*` anywhere but last is a
/// literal; a last `*` matches any rest.
fn model_matches(pattern: &str, room: &str) -> bool {
    let p = pattern.as_bytes();
    match p.last() {
        Some(b'*') => room.len() >= p.len() - 1 && room.as_bytes()[..p.len() - 1] == p[..p.len() - 1],
        _ => p == room.as_bytes(),
    }
}

/// Per action (join, publish, presence): the patterns allowed; `None`: everything.
#[derive(Debug, Clone, Default)]
struct Perms(Option<[Vec<String>; 3]>);

impl Perms {
    fn of_variant(variant: u8) -> Perms {
        Perms(
            TOKEN_ROOMS[usize::from(variant) % TOKEN_ROOMS.len()]
                .map(|lists| lists.map(|l| l.iter().map(|p| p.to_string()).collect())),
        )
    }

    fn allows(&self, action: usize, room: &str) -> bool {
        self.0.as_ref().is_none_or(|lists| lists[action].iter().any(|p| model_matches(p, room)))
    }

    /// Whether the request is denied (403).
    fn denies(&self, request: &Request<'_>) -> bool {
        match request {
            Request::Join { room, presence, .. } => !self.allows(0, room) || (presence.watches() && !self.allows(2, room)),
            Request::Publish { room, .. } => !self.allows(1, room),
            Request::Presence { room } => !self.allows(2, room),
            Request::History { room, .. } => !self.allows(0, room),
            _ => false,
        }
    }
}

/// A connection's authentication as the model sees it.
#[derive(Debug, Clone)]
struct Session {
    user: Option<&'static str>,
    /// The `info` claim of the token that named the user (a refresh keeps it).
    info: Option<Value>,
    perms: Perms,
    /// Waiting for `auth` (no welcome yet) until this time.
    deadline: Option<Instant>,
}

// ---- the model ----

#[derive(Debug, Default)]
struct Model {
    /// Open connections by slot, with their client id from the welcome.
    open: BTreeMap<ConnId, String>,
    generation: [u32; SLOTS as usize],
    /// conn -> room -> the presence it watches there.
    members: HashMap<ConnId, BTreeMap<String, Presence>>,
    /// Rooms known to exist (joined, or published into), with their last offset.
    offsets: BTreeMap<String, u64>,
    /// The current epoch of each room, once seen.
    epochs: HashMap<String, String>,
    epochs_seen: BTreeSet<String>,
    sessions: HashMap<ConnId, Session>,
    /// Authentication configured, and its settings.
    auth: bool,
    require_auth: bool,
    anon: Perms,
}

impl Model {
    fn slot(&self, i: u8) -> ConnId {
        let slot = i % SLOTS;
        ConnId::from_parts(u32::from(slot), self.generation[usize::from(slot)])
    }

    fn room_members(&self, room: &str) -> BTreeSet<ConnId> {
        self.members.iter().filter(|(_, rooms)| rooms.contains_key(room)).map(|(c, _)| *c).collect()
    }

    /// The members of `room` that watch presence `by` connection or user.
    fn watchers(&self, room: &str, by: Presence) -> BTreeSet<ConnId> {
        self.members.iter().filter(|(_, rooms)| rooms.get(room) == Some(&by)).map(|(c, _)| *c).collect()
    }

    /// The users in `room` as presence by user counts them: each named user once, each
    /// anonymous connection as one of its own.
    fn room_users(&self, room: &str) -> usize {
        let members = self.room_members(room);
        let named: BTreeSet<&str> = members.iter().filter_map(|c| self.sessions[c].user).collect();
        named.len() + members.iter().filter(|c| self.sessions[c].user.is_none()).count()
    }

    /// An epoch seen in a reply for `room`: the same while the room lives, new otherwise.
    fn see_epoch(&mut self, room: &str, epoch: &str) {
        match self.epochs.get(room) {
            Some(known) => assert_eq!(known, epoch, "room {room} changed its epoch while it existed"),
            None => {
                assert!(!self.epochs_seen.contains(epoch), "epoch {epoch} reused for room {room}");
                self.epochs.insert(room.to_owned(), epoch.to_owned());
                self.epochs_seen.insert(epoch.to_owned());
            }
        }
    }
}

struct Harness {
    rooms: Rooms,
    model: Model,
    now: Instant,
    /// Wall-clock time (seconds since the Unix epoch), advanced with `now`: tokens are
    /// checked against it, so runs do not depend on the day they run.
    unix: Duration,
    metrics: Metrics,
}

/// A text as JSON: it must be valid JSON; `None` when serde_json cannot hold it as a
/// `Value` (a number out of f64 range or a lone surrogate escape the client sent raw).
fn json_of(text: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(text).expect("outgoing text is not UTF-8");
    assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(), "outgoing text is not JSON: {text}");
    serde_json::from_str(text).ok()
}

fn offset_of(v: &Value) -> Option<u64> {
    v.get("offset").and_then(Value::as_u64)
}

/// Message pushes (as found in `missed` and `messages`): all for `room`, offsets
/// contiguous and increasing. Returns the offsets.
fn check_kept(list: &Value, room: &str) -> Vec<u64> {
    let items = list.as_array().expect("kept messages are not an array");
    let offsets: Vec<u64> = items
        .iter()
        .map(|m| {
            assert_eq!(m["op"], "message");
            assert_eq!(m["room"], room, "history of another room");
            offset_of(m).expect("kept message without offset")
        })
        .collect();
    for w in offsets.windows(2) {
        assert_eq!(w[1], w[0] + 1, "kept offsets are not contiguous: {offsets:?}");
    }
    offsets
}

/// The `error.code` of a reply, if it is an error.
fn error_code_of(reply: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Error {
        code: u64,
    }
    let fields: HashMap<String, &RawValue> = serde_json::from_str(reply).expect("a reply is a JSON object");
    let error = fields.get("error")?;
    Some(serde_json::from_str::<Error>(error.get()).expect("an error has a numeric code").code)
}

/// The messages queued for `conn` alone (replies), in order.
fn replies_to(commands: &[Command], conn: ConnId) -> Vec<&Bytes> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Message(to, _, p) if *to == conn => Some(p),
            _ => None,
        })
        .collect()
}

impl Harness {
    /// The time handed to the room layer.
    fn time(&self) -> Now {
        Now { mono: self.now, unix: self.unix }
    }

    fn outbox(&self) -> Outbox {
        Outbox::new(self.time())
    }

    /// One plain HTTP request: the response (given at once or deferred to the outbox, as
    /// the handler likes) and the other commands it queued.
    fn serve_http(&mut self, request: &PlainRequest, body: &[u8]) -> (HttpResponse, Vec<Command>) {
        let http = ConnId::from_parts(u32::MAX, 0); // not one of the model's WebSocket slots
        let mut out = self.outbox();
        let now = self.rooms.on_http(&mut out, http, request, body, &self.metrics);
        let mut commands = out.take();
        let deferred: Vec<HttpResponse> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Respond(to, response) if *to == http => Some(HttpResponse::clone(response)),
                _ => None,
            })
            .collect();
        commands.retain(|c| !matches!(c, Command::Respond(..)));
        let response = match (now, &deferred[..]) {
            (Some(response), []) => response,
            (None, [response]) => response.clone(),
            (now, deferred) => panic!("HTTP answered {now:?} now and {deferred:?} later"),
        };
        (response, commands)
    }

    /// Generic checks on every command; returns them for the caller's specific checks.
    fn check_commands(&self, commands: &[Command]) {
        for command in commands {
            match command {
                Command::Message(to, kind, payload) => {
                    assert!(self.model.open.contains_key(to), "send to a connection that is not open: {to:?}");
                    assert_eq!(*kind, MessageKind::Text);
                    json_of(payload);
                }
                Command::Broadcast { to, except, kind, payload } => {
                    assert_eq!(*kind, MessageKind::Text);
                    let to: Vec<ConnId> = to.iter().copied().filter(|c| Some(*c) != *except).collect();
                    assert!(!to.is_empty(), "broadcast to nobody");
                    let unique: HashSet<_> = to.iter().collect();
                    assert_eq!(unique.len(), to.len(), "a broadcast names a receiver twice");
                    for c in &to {
                        assert!(self.model.open.contains_key(c), "broadcast to a connection that is not open");
                    }
                    json_of(payload);
                }
                Command::Respond(..) => panic!("a deferred HTTP response outside an HTTP request"),
                // `Outbox::take` hands these out as `Message`s.
                Command::Copied(..) => panic!("a copied message taken as it is"),
                Command::Close(to, code, reason) => {
                    assert!(self.model.open.contains_key(to), "close of a connection that is not open");
                    // Abuse, limits and tokens: 1008; the API's disconnect: 4001.
                    let disconnect = (code.0, reason.as_str()) == (4001, "disconnected by the server");
                    assert!(code.0 == 1008 || disconnect, "close {code:?} {reason:?}");
                }
            }
        }
    }

    /// Checks presence events and message pushes against the model (after its update).
    /// `publish`: the room, publisher, echo and ephemeral flag of a successful publish in
    /// this call, and its offset.
    fn check_broadcasts(&self, commands: &[Command], publish: Option<(&str, Option<ConnId>, bool, Option<u64>)>) {
        let mut pushes = 0;
        for command in commands {
            let Command::Broadcast { to, except, payload, .. } = command else { continue };
            let Some(v) = json_of(payload) else { continue };
            let to: BTreeSet<ConnId> = to.iter().copied().filter(|c| Some(*c) != *except).collect();
            let room = v["room"].as_str().expect("broadcast without a room").to_owned();
            match v["op"].as_str() {
                Some("message") => {
                    pushes += 1;
                    let Some((p_room, from, echo, offset)) = publish else {
                        panic!("a message push without a publish: {v}");
                    };
                    assert_eq!(room, p_room);
                    assert_eq!(offset_of(&v), offset, "push offset");
                    let mut expected = self.model.room_members(&room);
                    if let (Some(from), false) = (from, echo) {
                        expected.remove(&from);
                    }
                    assert_eq!(to, expected, "message push receivers for {room}");
                    let from_client = from.map(|c| self.model.open[&c].as_str());
                    assert_eq!(v["from"]["client"].as_str(), from_client, "push sender");
                    let from_info = from.and_then(|c| self.model.sessions[&c].info.as_ref());
                    assert_eq!(v["from"].get("info"), from_info, "push sender's info");
                }
                Some("join" | "leave") => {
                    // By connection: about a client, to those watching connections but it.
                    // By user (no client): to those watching users, none of that user's
                    // connections (the first in or the last out: none other is in the
                    // room). An anonymous connection looks the same either way.
                    let member = &v["member"];
                    let subject = member["client"].as_str().map(|subject| {
                        self.model
                            .open
                            .iter()
                            .find(|(_, id)| id.as_str() == subject)
                            .map(|(c, _)| *c)
                            .expect("presence event about an unknown client")
                    });
                    let by_connection = self.model.watchers(&room, Presence::Connections);
                    let by_user = self.model.watchers(&room, Presence::Users);
                    match (subject, member["user"].as_str()) {
                        (Some(subject), named) => {
                            let mut expected = by_connection;
                            expected.remove(&subject);
                            if named.is_none() && to != expected {
                                let mut expected = by_user;
                                expected.remove(&subject);
                                assert_eq!(to, expected, "anonymous presence receivers for {room}");
                            } else {
                                assert_eq!(to, expected, "presence receivers for {room}");
                            }
                            if let Some(user) = named {
                                assert_eq!(self.model.sessions[&subject].user, Some(user), "presence event's user");
                            }
                        }
                        (None, Some(user)) => {
                            let expected: BTreeSet<ConnId> =
                                by_user.into_iter().filter(|c| self.model.sessions[c].user != Some(user)).collect();
                            assert_eq!(to, expected, "presence-by-user receivers for {room}");
                            let infos: Vec<Option<&Value>> = self
                                .model
                                .sessions
                                .values()
                                .filter(|s| s.user == Some(user))
                                .map(|s| s.info.as_ref())
                                .collect();
                            assert!(infos.contains(&member.get("info")), "a user's info: {member}");
                        }
                        (None, None) => panic!("a presence event about nobody: {v}"),
                    }
                }
                other => panic!("unexpected broadcast op {other:?}"),
            }
        }
        assert!(pushes <= 1, "several pushes for one call");
        if let Some((room, from, echo, _)) = publish {
            let mut expected = self.model.room_members(room);
            if let (Some(from), false) = (from, echo) {
                expected.remove(&from);
            }
            assert_eq!(pushes, usize::from(!expected.is_empty()), "publish to {room} reached {pushes} times");
        }
    }

    fn open(&mut self, i: u8) {
        let conn = self.model.slot(i);
        if self.model.open.contains_key(&conn) {
            return;
        }
        let variant = i / 24;
        let (path, authorization, valid) = match (i / SLOTS) % 4 {
            0 => ("/ws".to_owned(), None, None),
            1 => (format!("/ws?token={}", token(variant, VALID_EXP, JWT_SECRET)), None, Some(true)),
            2 => ("/ws".to_owned(), Some(format!("Bearer {}", token(variant, VALID_EXP, JWT_SECRET))), Some(true)),
            _ => (format!("/ws?x=1&token={}", token(variant, EXPIRED_EXP, JWT_SECRET)), None, Some(false)),
        };
        let request = UpgradeRequest {
            path,
            host: "localhost".into(),
            origin: None,
            key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
            protocols: vec![wsedge::wire::SUBPROTOCOL.into()],
            extensions: None,
            x_forwarded_for: None,
            forwarded: None,
            authorization,
        };
        // Without authentication configured, tokens are ignored.
        let valid = valid.filter(|_| self.model.auth);
        let admission = match self.rooms.accept(&request, self.time()) {
            Ok(admission) => admission,
            Err(response) => {
                assert_eq!(response.status, 401, "upgrade refused with {}", response.status);
                assert_eq!(valid, Some(false), "a valid upgrade refused");
                return;
            }
        };
        assert_ne!(valid, Some(false), "an invalid token admitted");
        let session = match valid {
            Some(_) => Session {
                user: Some(USERS[usize::from(variant) % USERS.len()]),
                info: info_of(variant),
                perms: Perms::of_variant(variant),
                deadline: None,
            },
            None if self.model.require_auth => {
                Session {
                    user: None,
                    info: None,
                    perms: self.model.anon.clone(),
                    deadline: Some(self.now + AUTH_TIMEOUT),
                }
            }
            None => Session { user: None, info: None, perms: self.model.anon.clone(), deadline: None },
        };
        let mut out = self.outbox();
        self.rooms.on_open(&mut out, conn, &request, admission);
        let commands = out.take();
        let id = if session.deadline.is_some() {
            assert!(commands.is_empty(), "on_open queued {commands:?} for a connection that must authenticate");
            String::new()
        } else {
            let [Command::Message(to, MessageKind::Text, welcome)] = &commands[..] else {
                panic!("on_open queued {commands:?}");
            };
            assert_eq!(*to, conn);
            self.welcomed(welcome, session.user, session.info.as_ref())
        };
        self.model.open.insert(conn, id);
        self.model.members.insert(conn, BTreeMap::new());
        self.model.sessions.insert(conn, session);
    }

    /// Checks a welcome; returns the client id it gives.
    fn welcomed(&self, welcome: &Bytes, user: Option<&str>, info: Option<&Value>) -> String {
        let v = json_of(welcome).expect("welcome");
        assert_eq!(v["op"], "welcome");
        assert_eq!(v["user"].as_str(), user, "welcome user");
        assert_eq!(v.get("info"), info, "welcome info");
        let id = v["client"].as_str().expect("welcome without client id").to_owned();
        assert!(!self.model.open.values().any(|other| *other == id), "client id {id} given twice");
        id
    }

    fn close(&mut self, conn: ConnId) {
        if !self.model.open.contains_key(&conn) {
            return;
        }
        let mut out = self.outbox();
        self.rooms.on_close(&mut out, conn);
        let commands = out.take();
        self.check_commands(&commands);
        // Leave events go to the remaining watchers; the leaver is still known by id.
        self.model.members.remove(&conn);
        self.check_broadcasts(&commands, None);
        self.model.open.remove(&conn);
        self.model.sessions.remove(&conn);
        let slot = conn.parts().0 as usize;
        self.model.generation[slot] = self.model.generation[slot].wrapping_add(1);
        self.apply_closes(&commands);
    }

    /// The loop ends connections the handler closed (here at once: on_close follows).
    fn apply_closes(&mut self, commands: &[Command]) {
        for command in commands {
            if let Command::Close(to, _, _) = command {
                self.close(*to);
            }
        }
    }

    fn binary(&mut self, i: u8, data: &[u8]) {
        let conn = self.model.slot(i);
        if !self.model.open.contains_key(&conn) {
            return;
        }
        let mut out = self.outbox();
        self.rooms.on_message(&mut out, conn, MessageKind::Binary, Bytes::copy_from_slice(data).into());
        let commands = out.take();
        self.check_commands(&commands);
        let replies = replies_to(&commands, conn);
        let [reply] = &replies[..] else { panic!("binary message got {} replies", replies.len()) };
        let v = json_of(reply).expect("reply");
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], 400);
        self.apply_closes(&commands);
    }

    fn text(&mut self, i: u8, text: &str) {
        let conn = self.model.slot(i);
        if !self.model.open.contains_key(&conn) {
            return;
        }
        let mut out = self.outbox();
        self.rooms.on_message(&mut out, conn, MessageKind::Text, Bytes::copy_from_slice(text.as_bytes()).into());
        let commands = out.take();
        self.check_commands(&commands);

        // The reply: at most one message to the sender, carrying the request's id (and
        // after a first valid `auth`, the welcome).
        let (raw_id, request) = protocol::parse_request(text);
        let mut replies = replies_to(&commands, conn);
        let welcome = match replies.last() {
            Some(last) if json_of(last).is_some_and(|v| v["op"] == "welcome") => replies.pop(),
            _ => None,
        };
        assert!(replies.len() <= 1, "{} replies to one request", replies.len());
        let reply = replies.first().copied();
        let reply_text = reply.map(|r| std::str::from_utf8(r).expect("reply is not UTF-8"));
        if let Some(reply_text) = reply_text {
            let prefix = format!("{{\"id\":{},", raw_id.map_or("null", |r| r.get()));
            assert!(reply_text.starts_with(&prefix), "reply {reply_text} does not carry the id ({prefix})");
        }
        // Independently of the handler's parser: a number or string `id` comes back.
        let sent_id = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .filter(|id| id.is_number() || id.is_string());
        let reply_value = reply.and_then(|r| json_of(r));
        if let (Some(id), Some(v)) = (&sent_id, &reply_value) {
            assert_eq!(&v["id"], id, "reply id");
        }
        let failed = reply_value.as_ref().is_some_and(|v| v.get("error").is_some())
            || reply_text.is_some_and(|t| t.contains(",\"error\":{\"code\":") && !t.contains(",\"ok\":"));
        if raw_id.is_some() || request.is_err() {
            assert!(reply.is_some(), "no reply to {text}");
        }
        if request.is_err() {
            assert!(failed, "an invalid request succeeded: {text}");
        }
        let ok_body = reply_value.as_ref().and_then(|v| v.get("ok")).cloned();
        // Read from the raw fields: the reply may echo an id a `Value` cannot hold (1e400).
        let error_code = reply_text.and_then(error_code_of);
        if let Some(code) = error_code {
            assert!(matches!(code, 400 | 401 | 403 | 404 | 413 | 429 | 503), "error code {code}");
        }
        // Authentication and permissions, decided before anything else.
        let session = self.model.sessions.get(&conn).cloned().expect("open connection without a session");
        match &request {
            Ok(Request::Auth { token }) => {
                let expected = match (self.model.auth, known_token(token)) {
                    (false, _) => Err(400u64),
                    (true, None) => Err(401),
                    (true, Some((user, _))) if session.user.is_some_and(|u| u != user) => Err(403),
                    // A refresh must allow staying in every room (and its presence, where
                    // the old grant allowed presence).
                    (true, Some((_, variant)))
                        if session.user.is_some()
                            && !self.model.members[&conn].keys().all(|room| {
                                let new = Perms::of_variant(variant);
                                new.allows(0, room) && (new.allows(2, room) || !session.perms.allows(2, room))
                            }) =>
                    {
                        Err(403)
                    }
                    (true, Some(_))
                        if session.user.is_none()
                            && session.deadline.is_none()
                            && !self.model.members[&conn].is_empty() =>
                    {
                        Err(403)
                    }
                    (true, Some(found)) => Ok(found),
                };
                match expected {
                    Err(code) => {
                        assert_eq!(error_code, Some(code), "auth: {reply_text:?}");
                        assert!(welcome.is_none());
                    }
                    Ok((user, variant)) => {
                        if raw_id.is_some() {
                            // By its text: the id may be one a `Value` cannot hold.
                            let body = format!(",\"ok\":{{\"user\":\"{user}\"}}}}");
                            assert!(reply_text.is_some_and(|t| t.ends_with(&body)), "auth reply {reply_text:?}");
                        } else {
                            assert!(reply.is_none(), "a reply without an id: {reply_text:?}");
                        }
                        let waiting = session.deadline.is_some();
                        assert_eq!(welcome.is_some(), waiting, "a welcome iff it was waiting for auth");
                        // The first token naming the user gives the info; a refresh keeps it.
                        let info = match session.user {
                            Some(_) => session.info.clone(),
                            None => info_of(variant),
                        };
                        if let Some(welcome) = welcome {
                            let id = self.welcomed(welcome, Some(user), info.as_ref());
                            self.model.open.insert(conn, id);
                        }
                        let s = self.model.sessions.get_mut(&conn).expect("session");
                        *s = Session { user: Some(user), info, perms: Perms::of_variant(variant), deadline: None };
                    }
                }
            }
            Ok(_) if session.deadline.is_some() => {
                assert_eq!(error_code, Some(401), "a request before auth: {reply_text:?}");
            }
            Ok(other) if session.perms.denies(other) => {
                assert_eq!(error_code, Some(403), "a denied request: {reply_text:?}");
            }
            _ => assert!(welcome.is_none(), "a welcome out of turn"),
        }
        if error_code.is_some_and(|c| c == 403 || c == 401) {
            assert!(matches!(request, Ok(_)), "a request that does not parse got {error_code:?}");
        }

        let mut publish = None;
        if let (Ok(request), false) = (&request, failed) {
            match request {
                Request::Join { room, presence, since } => {
                    let rooms = self.model.members.get_mut(&conn).expect("open connection without rooms");
                    rooms.insert(room.clone(), *presence);
                    self.model.offsets.entry(room.clone()).or_insert(0);
                    if let Some(body) = &ok_body {
                        assert_eq!(body["room"], room.as_str());
                        let epoch = body["epoch"].as_str().expect("join reply without epoch").to_owned();
                        self.model.see_epoch(room, &epoch);
                        let offset = offset_of(body).expect("join reply without offset");
                        assert_eq!(offset, self.model.offsets[room], "join reply offset for {room}");
                        let members = body["members"].as_u64().expect("join reply without members");
                        assert_eq!(members, self.model.room_members(room).len() as u64, "member count of {room}");
                        let missed = check_kept(&body["missed"], room);
                        let recovered = body["recovered"].as_bool().expect("recovered");
                        match since {
                            Some(s) if s.epoch == epoch && s.offset <= offset => {
                                assert!(missed.iter().all(|&o| o > s.offset && o <= offset));
                                if let Some(&last) = missed.last() {
                                    assert_eq!(last, offset, "recovery does not end at the room's offset");
                                }
                                let complete = s.offset == offset || missed.first() == Some(&(s.offset + 1));
                                assert_eq!(recovered, complete, "recovered flag for since {s:?}: {missed:?}");
                            }
                            _ => {
                                assert!(!recovered && missed.is_empty(), "recovery across epochs");
                            }
                        }
                    }
                }
                Request::Leave { room } => {
                    let rooms = self.model.members.get_mut(&conn).expect("open connection without rooms");
                    assert!(rooms.remove(room).is_some(), "leave of {room} succeeded for a non-member");
                }
                Request::Publish { room, echo, ephemeral, .. } => {
                    let offset = if *ephemeral {
                        None
                    } else {
                        let last = self.model.offsets.entry(room.clone()).or_insert(0);
                        *last += 1;
                        Some(*last)
                    };
                    self.model.offsets.entry(room.clone()).or_insert(0);
                    if let Some(body) = &ok_body {
                        assert_eq!(offset_of(body), offset, "publish reply offset for {room}");
                    }
                    publish = Some((room.as_str(), Some(conn), *echo, offset));
                }
                Request::Presence { room } => {
                    if let Some(body) = &ok_body {
                        let members = body["members"].as_array().expect("presence members");
                        let by = self.model.members.get(&conn).and_then(|rooms| rooms.get(room)).copied();
                        let connections = self.model.room_members(room).len();
                        if by == Some(Presence::Users) {
                            assert_eq!(members.len(), self.model.room_users(room), "users in {room}");
                            let counted: u64 = members.iter().map(|m| m["connections"].as_u64().expect("connections")).sum();
                            assert_eq!(counted, connections as u64, "connections of the users in {room}");
                        } else {
                            assert_eq!(members.len(), connections, "presence of {room}");
                        }
                    }
                }
                Request::History { room, limit } => {
                    if let Some(body) = &ok_body {
                        self.model.see_epoch(room, body["epoch"].as_str().expect("history epoch"));
                        let offset = offset_of(body).expect("history offset");
                        assert_eq!(offset, self.model.offsets[room], "history offset of {room}");
                        let kept = check_kept(&body["messages"], room);
                        let limit = limit.unwrap_or(protocol::DEFAULT_HISTORY_LIMIT);
                        assert!(kept.len() as u64 <= limit.min(HISTORY_SIZE as u64), "history too long");
                        if let Some(&last) = kept.last() {
                            assert_eq!(last, offset, "history does not end at the room's offset");
                        }
                    }
                }
                Request::Ping | Request::Auth { .. } => {}
            }
        }
        self.check_broadcasts(&commands, publish);
        self.apply_closes(&commands);
    }

    fn http(&mut self, h: &Http) {
        const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "HEAD"];
        const PATHS: [&str; 9] = [
            "/api/publish",
            "/api/rooms",
            "/api",
            "/api/other",
            "/healthz",
            "/metrics",
            "/ws",
            "/api/publish?x=1",
            "/api/disconnect",
        ];
        let method = METHODS[usize::from(h.method) % METHODS.len()];
        let path = match &h.path {
            PathRef::Known(i) => PATHS[usize::from(*i) % PATHS.len()].to_owned(),
            PathRef::Any(p) => p.clone(),
        };
        let authorization = match h.auth % 4 {
            0 => None,
            1 => Some(format!("Bearer {API_KEY}")),
            2 => Some("Bearer wrong".to_owned()),
            _ => Some(format!("Basic {API_KEY}")),
        };
        let body = match &h.body {
            Body::Raw(b) => b.clone(),
            Body::Publish { room, data, extra, user } => {
                let mut m = Map::new();
                if let Some(r) = room {
                    m.insert("room".into(), room_name(r));
                }
                if let Some(u) = user {
                    // One of the tokens' users (or one nobody is).
                    let name = USERS.get(usize::from(*u) % (USERS.len() + 1)).copied().unwrap_or("zed");
                    m.insert("user".into(), json!(name));
                }
                if let Some(d) = data {
                    m.insert("data".into(), data_value(d));
                }
                if *extra {
                    m.insert("echo".into(), json!(false));
                }
                Value::Object(m).to_string().into_bytes()
            }
        };
        // Read the way the API reads it (raw fields), not as a `Value`, which refuses some
        // JSON the API takes (numbers beyond f64).
        let fields = std::str::from_utf8(&body).ok().and_then(|t| serde_json::from_str::<HashMap<String, &RawValue>>(t).ok());
        let field = |name: &str| {
            fields.as_ref().and_then(|f| f.get(name).and_then(|r| serde_json::from_str::<String>(r.get()).ok()))
        };
        let (publish_room, target_user) = (field("room"), field("user"));
        let request = PlainRequest {
            method: method.to_owned(),
            path: path.clone(),
            content_length: body.len(),
            authorization: authorization.clone(),
            keep_alive: true,
            ..PlainRequest::default()
        };
        let (response, commands) = self.serve_http(&request, &body);
        self.check_commands(&commands);
        assert!(
            matches!(response.status, 200 | 400 | 401 | 404 | 405 | 413 | 426 | 503),
            "HTTP status {}",
            response.status
        );
        if response.content_type == "application/json" {
            json_of(&response.body);
        }
        let is_publish = method == "POST" && path.split('?').next() == Some("/api/publish");
        let is_disconnect = method == "POST" && path.split('?').next() == Some("/api/disconnect");
        let authorized = authorization.as_deref() == Some(&format!("Bearer {API_KEY}"));
        let mut publish = None;
        if (is_publish || is_disconnect) && response.status == 200 && target_user.is_some() {
            // To a user: every open connection of that user (a message each, or a 4001
            // close each), nobody else, and the reply counts them.
            assert!(authorized, "a user reached without the key");
            let user = target_user.expect("checked");
            let of_user: BTreeSet<ConnId> =
                self.model.sessions.iter().filter(|(_, s)| s.user == Some(user.as_str())).map(|(c, _)| *c).collect();
            let v = json_of(&response.body).expect("a user API response");
            assert_eq!(v["user"], user.as_str());
            assert_eq!(v["connections"].as_u64(), Some(of_user.len() as u64), "connections of {user} reached");
            let reached: BTreeSet<ConnId> = commands
                .iter()
                .map(|c| match c {
                    Command::Message(to, MessageKind::Text, push) if is_publish => {
                        let push = json_of(push).expect("a user message");
                        assert_eq!((&push["op"], &push["user"]), (&json!("message"), &json!(user)), "{push}");
                        assert!(push.get("room").is_none() && push.get("offset").is_none(), "{push}");
                        *to
                    }
                    Command::Close(to, code, reason) if is_disconnect => {
                        assert_eq!((code.0, reason.as_str()), (4001, "disconnected by the server"));
                        *to
                    }
                    other => panic!("reaching {user} queued {other:?}"),
                })
                .collect();
            assert_eq!(reached, of_user, "who {user}'s message or disconnect reached");
            assert_eq!(reached.len(), commands.len(), "one command per connection");
            self.apply_closes(&commands);
            return;
        }
        if is_publish && response.status == 200 {
            assert!(authorized, "publish without the key succeeded");
            let room = publish_room.expect("API publish succeeded without a room");
            let v = json_of(&response.body).expect("publish response");
            let last = self.model.offsets.entry(room.clone()).or_insert(0);
            *last += 1;
            assert_eq!(offset_of(&v), Some(*last), "API publish offset for {room}");
            publish = Some(room);
        } else {
            assert!(commands.is_empty(), "HTTP {method} {path} queued {commands:?}");
        }
        if let Some(room) = &publish {
            let offset = self.model.offsets[room];
            self.check_broadcasts(&commands, Some((room, None, true, Some(offset))));
        }
        if path.starts_with("/api") && !authorized {
            assert!(matches!(response.status, 401 | 404), "API answered {} without the key", response.status);
        }
    }

    fn tick(&mut self) {
        let mut out = self.outbox();
        self.rooms.on_tick(&mut out);
        let commands = out.take();
        self.check_commands(&commands);
        // Only connections past their deadline for `auth` are closed (tokens here are
        // valid until 2100: none expires).
        let closed: BTreeSet<ConnId> = commands
            .iter()
            .map(|c| match c {
                Command::Close(to, _, reason) if reason == "authentication required" => *to,
                other => panic!("on_tick queued {other:?}"),
            })
            .collect();
        let late: BTreeSet<ConnId> = self
            .model
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= self.now))
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(closed, late, "closes for a missing auth");
        self.apply_closes(&commands);
        self.sync_rooms();
    }

    /// `GET /api/rooms`: the rooms that exist, with offsets and member counts.
    fn sync_rooms(&mut self) {
        let request = PlainRequest {
            method: "GET".into(),
            path: "/api/rooms".into(),
            content_length: 0,
            authorization: Some(format!("Bearer {API_KEY}")),
            keep_alive: true,
            ..PlainRequest::default()
        };
        let (response, _) = self.serve_http(&request, &[]);
        assert_eq!(response.status, 200);
        let v = json_of(&response.body).expect("room list");
        let listed: BTreeMap<String, (u64, u64)> = v["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .map(|r| {
                let name = r["room"].as_str().expect("room name").to_owned();
                (name, (r["offset"].as_u64().expect("offset"), r["members"].as_u64().expect("members")))
            })
            .collect();
        assert_eq!(listed.len(), self.rooms.room_count());
        let gone: Vec<String> = self.model.offsets.keys().filter(|r| !listed.contains_key(*r)).cloned().collect();
        for room in gone {
            assert!(self.model.room_members(&room).is_empty(), "room {room} dropped with members");
            self.model.offsets.remove(&room);
            self.model.epochs.remove(&room);
        }
        for (room, (offset, members)) in &listed {
            let known = self.model.offsets.get(room).copied();
            assert_eq!(known, Some(*offset), "room {room} offset (listed {offset}, model {known:?})");
            assert_eq!(*members, self.model.room_members(room).len() as u64, "room {room} member count");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::read(data);
    let auth = input.flags & 2 != 0;
    let require_auth = auth && input.flags & 4 != 0;
    let narrow = input.flags & 8 != 0;
    let auth_config = auth.then(|| {
        let mut config = AuthConfig::default().with_hs256_secret(JWT_SECRET).expect("secret");
        config.require_auth = require_auth;
        config
    });
    let config = RoomsConfig {
        history_size: HISTORY_SIZE,
        history_ttl: Duration::from_secs(2),
        max_rooms_per_connection: 3,
        max_members_per_room: 3,
        max_rooms: 6,
        max_message_bytes: MAX_MESSAGE_BYTES,
        publish_rate: 5.0,
        publish_burst: 3.0,
        abuse_limit: 4,
        abuse_window: Duration::from_secs(1),
        require_membership: input.flags & 1 != 0,
        api_key: Some(API_KEY.to_owned()),
        auth: auth_config,
        anon_rooms: if narrow { RoomPatterns::new(&ANON_NARROW) } else { RoomPatterns::everything() },
        auth_timeout: AUTH_TIMEOUT,
        // The auth rate limit is left to tests/auth.rs: here every `auth` is verified.
        auth_per_minute: u32::MAX,
        ..RoomsConfig::default()
    };
    let anon = Perms(narrow.then(|| [0, 1, 2].map(|_| ANON_NARROW.iter().map(|p| p.to_string()).collect())));
    let mut h = Harness {
        rooms: Rooms::new(config),
        model: Model { auth, require_auth, anon, ..Model::default() },
        now: Instant::now(),
        unix: Duration::from_secs(START_UNIX),
        metrics: Metrics::default(),
    };
    for op in &input.ops {
        match op {
            Op::Open(i) => h.open(*i),
            Op::Close(i) => {
                let conn = h.model.slot(*i);
                h.close(conn);
            }
            Op::Text(i, Text::Raw(s)) => h.text(*i, s),
            Op::Text(i, Text::Request(r)) => {
                let text = r.to_json(&h.model);
                h.text(*i, &text);
            }
            Op::Binary(i, data) => h.binary(*i, data),
            Op::Advance(steps, tick) => {
                h.now += Duration::from_millis(u64::from(*steps) * 16);
                h.unix += Duration::from_millis(u64::from(*steps) * 16);
                if *tick {
                    h.tick();
                }
            }
            Op::Tick => h.tick(),
            Op::Http(http) => h.http(http),
        }
    }
    h.tick();
});
