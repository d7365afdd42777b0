//! The member side: this worker's room-protocol connections, the rooms each is in, their
//! requests and replies, their publish rate and their strikes.
//!
//! A request is parsed, checked against the connection's session (`sessions.rs`) and its
//! own limits here, and handed to the engine; the engine's events come back here
//! ([`Members::on_event`]): answers become replies, `Joined`/`Left` keep the delivery lists
//! (`local.rs`) in step, deliveries go to the event loop as one broadcast each. Which
//! engine orders the rooms is not known here.
//!
//! An event stream (`GET /sse`, `sse.rs`) is a member too, with no requests: it joins its
//! rooms when it opens (with `since` from its `Last-Event-ID`), and what a socket would get
//! as frames it gets as events, written for it alone (each event's `id` says where it is
//! in every room it follows).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;
use rand::rngs::{StdRng, SysRng};
use rand::{RngExt, SeedableRng};

use super::engine::{Answer, Engine, Event, Identity, Join, JoinedRoom, Leave, Publish, ReplyTo};
use super::error::{close_reason, RoomError};
use super::local::LocalRooms;
use super::protocol::{self, ObjectWriter, Presence, Request, RequestId, Since};
use super::sessions::{Session, Sessions};
use super::sse;
use super::RoomsConfig;
use crate::proto::{CloseCode, MessageKind};
use crate::server::{ConnId, Outbox, TokenBucket};

/// Rejected requests within a window: sustained abuse closes the connection.
#[derive(Debug, Clone, Copy)]
pub struct Strikes {
    count: u32,
    since: Instant,
}

impl Strikes {
    /// No strikes yet, at `now`.
    pub fn new(now: Instant) -> Self {
        Strikes { count: 0, since: now }
    }

    /// Counts one at `now`; true when that is the one past `limit` within `window` (the
    /// count starts again once a window has passed since its first strike).
    pub fn strike(&mut self, now: Instant, window: Duration, limit: u32) -> bool {
        if now.saturating_duration_since(self.since) > window {
            self.count = 0;
            self.since = now;
        }
        // Saturating: a client that keeps sending while its close goes out cannot wrap it.
        self.count = self.count.saturating_add(1);
        self.count == limit.saturating_add(1)
    }
}

/// One of this worker's room-protocol connections.
#[derive(Debug)]
struct Client {
    /// Its client id (its identity's `client`).
    id: Arc<str>,
    /// Rooms the engine confirmed (mirrors the engine's member list).
    rooms: Vec<Arc<str>>,
    /// Rooms asked for whose `Joined` has not come back yet.
    joining: Vec<String>,
    /// Publishes (`RoomsConfig::publish_rate`).
    publishes: TokenBucket,
    strikes: Strikes,
    /// An event stream's own state (`None`: a WebSocket).
    stream: Option<Box<EventStream>>,
}

/// What an event stream follows, and where it is.
#[derive(Debug, Default)]
struct EventStream {
    /// Each room joined: its epoch and the last offset sent.
    positions: sse::Positions,
    /// The presence events it gets.
    presence: Presence,
    /// Rooms joined with `since` (from `Last-Event-ID`) whose answer has not come.
    resuming: Vec<String>,
    /// The secret of the token its `POST /publish` requests name it by (in its `welcome`).
    secret: u128,
}

impl Client {
    fn is_in(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| **r == *room) || self.joining.iter().any(|r| r == room)
    }
}

/// This worker's room-protocol connections.
#[derive(Debug)]
pub struct Members {
    config: Arc<RoomsConfig>,
    /// Random per worker and process: client ids are unique across workers, restarts and
    /// nodes.
    node: String,
    next_client: u64,
    clients: HashMap<ConnId, Client>,
    local: LocalRooms,
    /// The event streams among each room's members here (they get events, not frames).
    streams_in: HashMap<Arc<str>, Vec<ConnId>>,
    /// Every event stream here (for the heartbeats).
    streams: std::collections::HashSet<ConnId>,
    /// When the streams last had a heartbeat.
    last_heartbeat: Option<Instant>,
    /// Each event stream here by its token's secret (`POST /publish` names it).
    stream_tokens: HashMap<u128, ConnId>,
    /// The stream tokens' secret part.
    rng: StdRng,
}

impl Members {
    /// No connections yet; client ids start with `node` (random per worker and process).
    pub fn new(config: Arc<RoomsConfig>, node: String) -> Self {
        Members {
            config,
            node,
            next_client: 0,
            clients: HashMap::new(),
            local: LocalRooms::default(),
            streams_in: HashMap::new(),
            streams: std::collections::HashSet::new(),
            last_heartbeat: None,
            stream_tokens: HashMap::new(),
            // A CSPRNG seeded by the OS; should the OS have none, from the clock and the
            // process (the tokens are then only as good as that, as the client ids are).
            rng: StdRng::try_from_rng(&mut SysRng).unwrap_or_else(|_| {
                let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0);
                StdRng::seed_from_u64(seed)
            }),
        }
    }

    /// A new stream token: the worker (where `POST /publish` finds the stream), then 128
    /// random bits in hex (only the stream's reader can know them); and those bits.
    fn new_stream_token(&mut self, conn: ConnId) -> (String, u128) {
        let secret: u128 = self.rng.random();
        (format!("{}.{secret:032x}", conn.worker()), secret)
    }

    /// A new connection: welcomed now, unless its session waits for `auth`.
    pub fn open(&mut self, out: &mut Outbox, conn: ConnId, session: &Session) {
        let id = self.new_client_id();
        if !session.is_pending() {
            let welcome = protocol::welcome(&id, session.user.as_deref(), session.info.as_deref());
            out.send(conn, MessageKind::Text, Bytes::from(welcome));
        }
        let client = self.new_client(id, out.now().mono, None);
        self.clients.insert(conn, client);
    }

    fn new_client_id(&mut self) -> Arc<str> {
        self.next_client += 1;
        format!("{}-{}", self.node, protocol::base36(self.next_client)).into()
    }

    fn new_client(&self, id: Arc<str>, now: Instant, stream: Option<Box<EventStream>>) -> Client {
        Client {
            id,
            rooms: Vec::new(),
            joining: Vec::new(),
            publishes: TokenBucket::full(self.config.publish_burst, now),
            strikes: Strikes::new(now),
            stream,
        }
    }

    /// A new event stream (`GET /sse`, its session checked and allowed every room): its
    /// `welcome` event, and a join of each room (`since` where its `Last-Event-ID` left off).
    pub fn open_stream(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        session: &Session,
        request: sse::StreamRequest,
        mut since: std::collections::BTreeMap<String, Since>,
        engine: &mut dyn Engine,
    ) {
        let id = self.new_client_id();
        let (token, secret) = self.new_stream_token(conn);
        let welcome = protocol::stream_welcome(&id, session.user.as_deref(), session.info.as_deref(), &token);
        out.send(conn, MessageKind::Text, Bytes::from(sse::event("welcome", None, &welcome)));
        self.stream_tokens.insert(secret, conn);
        let identity = Identity { client: id.clone(), user: session.user.clone(), info: session.info.clone() };
        let resuming: Vec<String> = request.rooms.iter().filter(|r| since.contains_key(*r)).cloned().collect();
        // A resumed room keeps its place in every id until its join is answered: a drop
        // meanwhile resumes it from the same place again (else it would rejoin from now).
        // Room for every room it joins: its place is kept without growing.
        let mut positions = sse::Positions::with_capacity(request.rooms.len());
        for room in &resuming {
            if let Some(s) = since.get(room) {
                positions.insert(Arc::from(room.as_str()), (Arc::from(s.epoch.as_str()), s.offset));
            }
        }
        let stream = EventStream { presence: request.presence, resuming, positions, secret };
        let mut client = self.new_client(id, out.now().mono, Some(Box::new(stream)));
        client.joining = request.rooms.clone();
        self.clients.insert(conn, client);
        self.streams.insert(conn);
        for room in request.rooms {
            let since = since.remove(&room);
            let join = Join { conn, identity: identity.clone(), room, presence: request.presence, since, id: None };
            engine.join(out.now(), join);
        }
    }

    /// Sends every event stream a comment line once `sse_heartbeat` has passed since the
    /// last one.
    pub fn heartbeat(&mut self, out: &mut Outbox) {
        let now = out.now().mono;
        let last = *self.last_heartbeat.get_or_insert(now);
        if now.saturating_duration_since(last) < self.config.sse_heartbeat {
            return;
        }
        self.last_heartbeat = Some(now);
        for &conn in &self.streams {
            out.send(conn, MessageKind::Text, Bytes::from_static(sse::HEARTBEAT));
        }
    }

    /// Whether `conn` is one of this worker's room-protocol connections (sockets and
    /// event streams).
    pub fn is_client(&self, conn: ConnId) -> bool {
        self.clients.contains_key(&conn)
    }

    /// The most rooms one connection (or event stream) may be in.
    pub fn max_rooms_per_connection(&self) -> usize {
        self.config.max_rooms_per_connection
    }

    /// Sends `push` (a message to the connection's user) as a frame, or as an event to an
    /// event stream.
    pub fn send_push(&self, out: &mut Outbox, conn: ConnId, push: &Bytes) {
        match self.clients.get(&conn) {
            Some(client) if client.stream.is_some() => {
                out.send(conn, MessageKind::Text, Bytes::from(sse::event("message", None, text(push))))
            }
            Some(_) => out.send(conn, MessageKind::Text, push.clone()),
            None => {}
        }
    }

    /// Before the server closes `conn` with `code` and `reason`: an event stream, which has
    /// no close frame, gets a `close` event saying so (a page should then `close()` its
    /// `EventSource`, which would otherwise reconnect by itself).
    pub fn closing(&self, out: &mut Outbox, conn: ConnId, code: CloseCode, reason: &str) {
        if self.clients.get(&conn).is_some_and(|c| c.stream.is_some()) {
            let body = ObjectWriter::new().num("code", u64::from(code.0)).str("reason", reason).finish();
            out.send(conn, MessageKind::Text, Bytes::from(sse::event("close", None, &body)));
        }
    }

    /// A closed connection leaves every room (those still being joined too: the engine
    /// handles the join before this leave).
    pub fn close(&mut self, out: &mut Outbox, conn: ConnId, engine: &mut dyn Engine) {
        let Some(client) = self.clients.remove(&conn) else { return };
        self.streams.remove(&conn);
        if let Some(stream) = &client.stream {
            self.stream_tokens.remove(&stream.secret);
        }
        let names = client.rooms.iter().map(|r| r.to_string()).chain(client.joining);
        for room in names {
            self.local.remove(&room, conn);
            if let Some(streams) = self.streams_in.get_mut(room.as_str()) {
                streams.retain(|&c| c != conn);
                if streams.is_empty() {
                    self.streams_in.remove(room.as_str());
                }
            }
            engine.leave(out.now(), Leave { conn, room, id: None, gone: true });
        }
    }

    /// A text or binary message from one of this worker's connections.
    pub fn on_message(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        kind: MessageKind,
        data: &Bytes,
        sessions: &mut Sessions,
        engine: &mut dyn Engine,
    ) {
        if kind == MessageKind::Binary {
            return self.answer(out, conn, None, Err(RoomError::BinaryFrame));
        }
        // The codec validated UTF-8; this cannot fail.
        let text = std::str::from_utf8(data).unwrap_or_default();
        match protocol::parse_request(text) {
            (id, Ok(request)) => self.request(out, conn, data, id, request, sessions, engine),
            (id, Err(e)) => self.answer(out, conn, id, Err(e)),
        }
    }

    /// A request from one of this worker's connections, handed to the engine when it
    /// passes the session's permissions and the connection's limits.
    /// `frame` is the text frame the request was parsed from (`data` is sliced from it).
    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        frame: &Bytes,
        id: RequestId<'_>,
        request: Request<'_>,
        sessions: &mut Sessions,
        engine: &mut dyn Engine,
    ) {
        let owned_id = || id.map(ToOwned::to_owned);
        let now = out.now();
        if let Request::Auth { token } = request {
            return self.authenticate(out, conn, id, &token, sessions);
        }
        let (Some(client), Some(session)) = (self.clients.get_mut(&conn), sessions.get(conn)) else { return };
        if session.is_pending() {
            return self.answer(out, conn, id, Err(RoomError::AuthenticateFirst));
        }
        if let Err(e) = session.permits(&request) {
            return self.answer(out, conn, id, Err(e));
        }
        let identity =
            || Identity { client: client.id.clone(), user: session.user.clone(), info: session.info.clone() };
        match request {
            Request::Ping => engine.sync(now, ReplyTo::Member { conn, id: owned_id() }),
            Request::Auth { .. } => {}
            Request::Join { room, presence, since } => {
                let known = client.is_in(&room);
                let max = self.config.max_rooms_per_connection;
                if !known && client.rooms.len() + client.joining.len() >= max {
                    return self.answer(out, conn, id, Err(RoomError::TooManyRoomsForConnection { max }));
                }
                if !known {
                    client.joining.push(room.clone());
                }
                let identity = identity();
                engine.join(now, Join { conn, identity, room, presence, since, id: owned_id() });
            }
            Request::Leave { room } => engine.leave(now, Leave { conn, room, id: owned_id(), gone: false }),
            publish @ Request::Publish { .. } => {
                let reply = ReplyTo::Member { conn, id: owned_id() };
                if let Err(e) = publish_as(&self.config, (conn, client, session), frame, publish, reply, now, engine) {
                    self.answer(out, conn, id, Err(e));
                }
            }
            Request::Presence { room } => engine.presence(now, ReplyTo::Member { conn, id: owned_id() }, room),
            Request::History { room, limit } => {
                engine.history(now, ReplyTo::Member { conn, id: owned_id() }, room, limit)
            }
        }
    }

    /// An event stream's request over HTTP (`POST /publish`, `GET /presence`, `GET
    /// /history`; see `protocol::parse_stream_request`), the stream named by the token of
    /// its `welcome`: checked as that stream's own request would be; `http` waits for the
    /// engine's answer (on this worker or another). A refusal is returned, and counts
    /// toward the stream's strikes.
    pub fn request_from_stream(
        &mut self,
        out: &mut Outbox,
        body: &Bytes,
        http: ConnId,
        sessions: &Sessions,
        engine: &mut dyn Engine,
    ) -> Result<(), RoomError> {
        let text = std::str::from_utf8(body).map_err(|_| RoomError::BodyNotUtf8)?;
        let (token, request) = protocol::parse_stream_request(text)?;
        let secret = token.split_once('.').and_then(|(_, hex)| (hex.len() == 32).then_some(hex));
        let secret = secret.and_then(|hex| u128::from_str_radix(hex, 16).ok()).ok_or(RoomError::NoSuchStream)?;
        let conn = *self.stream_tokens.get(&secret).ok_or(RoomError::NoSuchStream)?;
        let (Some(client), Some(session)) = (self.clients.get_mut(&conn), sessions.get(conn)) else {
            return Err(RoomError::NoSuchStream);
        };
        let now = out.now();
        // The engine takes an HTTP reader for the backend, who needs no membership: the
        // stream's membership is checked here.
        let member = match &request {
            Request::Presence { room } | Request::History { room, .. } => {
                client.rooms.iter().any(|r| **r == **room) || !self.config.require_membership
            }
            _ => true,
        };
        let result = session.permits(&request).and_then(|()| match request {
            Request::Presence { room } if member => {
                engine.presence(now, ReplyTo::Http(http), room);
                Ok(())
            }
            Request::History { room, limit } if member => {
                engine.history(now, ReplyTo::Http(http), room, limit);
                Ok(())
            }
            Request::Presence { .. } | Request::History { .. } => Err(RoomError::NotMember),
            publish => {
                publish_as(&self.config, (conn, client, session), body, publish, ReplyTo::Http(http), now, engine)
            }
        });
        if let Err(e) = &result {
            if e.is_strike() {
                self.strike(out, conn);
            }
        }
        result
    }

    /// The `auth` request (see `Sessions::authenticate`); a connection that was waiting
    /// for it gets its welcome after the reply.
    fn authenticate(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        id: RequestId<'_>,
        token: &str,
        sessions: &mut Sessions,
    ) {
        let Some(client) = self.clients.get(&conn) else { return };
        let rooms: Vec<&str> =
            client.rooms.iter().map(|r| &**r).chain(client.joining.iter().map(String::as_str)).collect();
        let result = sessions.authenticate(conn, token, &rooms, out.now());
        let welcome = match &result {
            Ok(done) if done.first => Some(protocol::welcome(&client.id, Some(&done.user), done.info.as_deref())),
            _ => None,
        };
        let reply = result.map(|done| ObjectWriter::new().str("user", &done.user).finish());
        self.answer(out, conn, id, reply);
        if let Some(welcome) = welcome {
            out.send(conn, MessageKind::Text, Bytes::from(welcome));
        }
    }

    /// What the engine says to this worker's member side.
    pub fn on_event(&mut self, out: &mut Outbox, event: Event) {
        match event {
            Event::Deliver { room, audience, except, payload } => {
                let Some(to) = self.local.audience(&room, audience) else { return };
                // Event streams in the list are left out by the loop: they get theirs here.
                self.deliver_to_streams(out, &room, audience, except, &payload);
                // Nobody here but the excluded member: nothing to send.
                if to.iter().any(|&c| Some(c) != except) {
                    out.broadcast(to, except, MessageKind::Text, payload);
                }
            }
            Event::Joined { conn, id, room, presence, result } => {
                let Some(client) = self.clients.get_mut(&conn) else {
                    return; // closed meanwhile: the engine gets (or got) its `Leave`
                };
                if client.stream.is_some() {
                    return self.stream_joined(out, conn, room, result);
                }
                if let Some(i) = client.joining.iter().position(|r| **r == *room) {
                    client.joining.swap_remove(i);
                }
                if result.is_ok() {
                    if !client.rooms.contains(&room) {
                        client.rooms.push(room.clone());
                    }
                    self.local.insert(&room, conn, presence);
                }
                let body = result.map(|joined| joined_body(&room, joined));
                self.answer(out, conn, id.as_deref(), body);
            }
            Event::Left { conn, id, room } => {
                if let Some(client) = self.clients.get_mut(&conn) {
                    client.rooms.retain(|r| *r != room);
                }
                self.local.remove(&room, conn);
                self.answer(out, conn, id.as_deref(), Ok(ObjectWriter::new().str("room", &room).finish()));
            }
            Event::Answer { to: ReplyTo::Member { conn, id }, result } => {
                // A presence list shows what the asker watches in that room.
                let by = match &result {
                    Ok(Answer::Presence { room, .. }) => self.local.presence_of(room, conn).unwrap_or_default(),
                    _ => Presence::Off,
                };
                let body = result.map(|answer| answer_body(answer, by));
                self.answer(out, conn, id.as_deref(), body);
            }
            // The API's answers go to the API (the wiring routes them).
            Event::Answer { to: ReplyTo::Http(_), .. } => {}
            Event::Reset { room, epoch, offset } => {
                let Some(to) = self.local.audience(&room, super::local::Audience::Members) else { return };
                out.broadcast(to, None, MessageKind::Text, Bytes::from(protocol::reset(&room, &epoch, offset)));
                for conn in self.streams_in.get(&room).cloned().unwrap_or_default() {
                    self.stream_reset(out, conn, &room, &epoch, offset);
                }
            }
        }
    }

    /// A join of an event stream's room was answered: the messages it missed (from its
    /// `Last-Event-ID`) as events, a `reset` when continuity is lost, else a `joined` event
    /// whose `id` places the stream in the room; a refusal is an `error` event.
    fn stream_joined(&mut self, out: &mut Outbox, conn: ConnId, room: Arc<str>, result: Result<JoinedRoom, RoomError>) {
        let Some(client) = self.clients.get_mut(&conn) else { return };
        if let Some(i) = client.joining.iter().position(|r| **r == *room) {
            client.joining.swap_remove(i);
        }
        let Some(stream) = client.stream.as_mut() else { return };
        let joined = match result {
            Ok(joined) => joined,
            Err(e) => {
                let body = ObjectWriter::new()
                    .str("room", &room)
                    .num("code", u64::from(e.code()))
                    .str("message", &e.to_string());
                out.send(conn, MessageKind::Text, Bytes::from(sse::event("error", None, &body.finish())));
                if client.rooms.is_empty() && client.joining.is_empty() {
                    // In no room at all: ended, and the browser tries again after its
                    // retry delay (a full room or an unreachable store may be back by then).
                    out.close(conn, CloseCode::NORMAL, "no room joined");
                }
                return;
            }
        };
        if !client.rooms.contains(&room) {
            client.rooms.push(room.clone());
        }
        let resumed = match stream.resuming.iter().position(|r| **r == *room) {
            Some(i) => {
                stream.resuming.swap_remove(i);
                true
            }
            None => false,
        };
        stream.positions.insert(room.clone(), (joined.epoch.clone(), 0));
        // Resuming without every message since (another epoch, or aged out): no partial
        // replay, a `reset` (the client reloads, as a socket's client does).
        let lost = resumed && !joined.recovered;
        let missed = if lost { &[][..] } else { &joined.missed[..] };
        for push in missed {
            let offset = offset_of(push);
            if let (Some(offset), Some(position)) = (offset, stream.positions.get_mut(&room)) {
                position.1 = offset;
            }
            let id = sse::event_id(&stream.positions);
            out.send(conn, MessageKind::Text, Bytes::from(sse::event("message", Some(&id), text(push))));
        }
        if let Some(position) = stream.positions.get_mut(&room) {
            position.1 = joined.offset;
        }
        let id = sse::event_id(&stream.positions);
        let (name, body) = if !lost {
            let body = ObjectWriter::new()
                .str("room", &room)
                .str("epoch", &joined.epoch)
                .num("offset", joined.offset)
                .num("members", joined.members as u64)
                .bool("recovered", joined.recovered)
                .finish();
            ("joined", body)
        } else {
            ("reset", protocol::reset(&room, &joined.epoch, joined.offset))
        };
        out.send(conn, MessageKind::Text, Bytes::from(sse::event(name, Some(&id), &body)));
        let presence = stream.presence;
        self.local.insert(&room, conn, presence);
        let streams = self.streams_in.entry(room).or_default();
        if !streams.contains(&conn) {
            streams.push(conn);
        }
    }

    /// Continuity of `room` was lost: the stream takes the room's position now.
    fn stream_reset(&mut self, out: &mut Outbox, conn: ConnId, room: &Arc<str>, epoch: &Arc<str>, offset: u64) {
        let Some(stream) = self.clients.get_mut(&conn).and_then(|c| c.stream.as_mut()) else { return };
        stream.positions.insert(room.clone(), (epoch.clone(), offset));
        let id = sse::event_id(&stream.positions);
        let event = sse::event("reset", Some(&id), &protocol::reset(room, epoch, offset));
        out.send(conn, MessageKind::Text, Bytes::from(event));
    }

    /// A delivery to `room`, as events for the event streams among its members here.
    fn deliver_to_streams(
        &mut self,
        out: &mut Outbox,
        room: &Arc<str>,
        audience: super::local::Audience,
        except: Option<ConnId>,
        payload: &Bytes,
    ) {
        let Some(streams) = self.streams_in.get(room) else { return };
        let push = text(payload);
        // Which push it is: a message (with its offset, or ephemeral) or a presence event.
        let op = op_of(push);
        let offset = if op == "message" { offset_of(payload) } else { None };
        // An event without an id (presence, ephemeral) is the same for every stream: once.
        let mut shared: Option<Bytes> = None;
        // So is the message event of every stream in this room alone (of one epoch): its id
        // names only this room. The server then frames it once for all of them too.
        let mut alone: Option<(Arc<str>, Bytes)> = None;
        for &conn in streams {
            let Some(stream) = self.clients.get_mut(&conn).and_then(|c| c.stream.as_mut()) else { continue };
            if Some(conn) == except || !audience.includes(stream.presence) {
                continue;
            }
            // A message with an offset moves the stream's place in the room (and gets an id).
            let placed = match (offset, stream.positions.get_mut(room)) {
                (Some(offset), Some(position)) => {
                    position.1 = offset;
                    true
                }
                _ => false,
            };
            let with_id =
                |positions: &sse::Positions| Bytes::from(sse::event(op, Some(&sse::event_id(positions)), push));
            let event = match (placed, stream.positions.only()) {
                (false, _) => shared.get_or_insert_with(|| Bytes::from(sse::event(op, None, push))).clone(),
                (true, Some((epoch, _))) => match &alone {
                    Some((of, event)) if Arc::ptr_eq(of, epoch) || of == epoch => event.clone(),
                    _ => {
                        let event = with_id(&stream.positions);
                        alone = Some((epoch.clone(), event.clone()));
                        event
                    }
                },
                (true, None) => with_id(&stream.positions),
            };
            out.send(conn, MessageKind::Text, event);
        }
    }

    /// Replies to one of this worker's connections; rejected requests count as strikes.
    fn answer(&mut self, out: &mut Outbox, conn: ConnId, id: RequestId<'_>, result: Result<String, RoomError>) {
        if let Err(e) = &result {
            if e.is_strike() {
                self.strike(out, conn);
            }
        }
        let text = match &result {
            Ok(_) if id.is_none() => return, // success without an id is silent
            Ok(body) => protocol::reply_ok(id, body),
            Err(e) => protocol::reply_error(id, e),
        };
        out.send(conn, MessageKind::Text, Bytes::from(text));
    }

    /// Counts a rejected request; sustained abuse closes the connection with 1008.
    fn strike(&mut self, out: &mut Outbox, conn: ConnId) {
        let now = out.now().mono;
        let Some(client) = self.clients.get_mut(&conn) else { return };
        if client.strikes.strike(now, self.config.abuse_window, self.config.abuse_limit) {
            debug!("closing {conn:?}: {} rejected requests", client.strikes.count);
            self.closing(out, conn, CloseCode::POLICY_VIOLATION, close_reason::ABUSE);
            out.close(conn, CloseCode::POLICY_VIOLATION, close_reason::ABUSE);
        }
    }
}

/// A member's publish (`request`, a `Request::Publish` parsed from `frame`) handed to the
/// engine once it passes the member's own limits (its rate, the message size); `reply`
/// is who hears the offset. The session's permissions were checked already.
fn publish_as(
    config: &RoomsConfig,
    (conn, client, session): (ConnId, &mut Client, &Session),
    frame: &Bytes,
    request: Request<'_>,
    reply: ReplyTo,
    now: crate::server::Now,
    engine: &mut dyn Engine,
) -> Result<(), RoomError> {
    let Request::Publish { room, data, echo, ephemeral, key } = request else { return Ok(()) };
    if client.publishes.take(config.publish_rate, config.publish_burst, now.mono).is_err() {
        return Err(RoomError::PublishRate);
    }
    if data.len() > config.max_message_bytes {
        return Err(RoomError::TooLarge { max: config.max_message_bytes });
    }
    let identity = Identity { client: client.id.clone(), user: session.user.clone(), info: session.info.clone() };
    let data = slice_of(frame, data);
    let key = key.map(String::into_boxed_str);
    engine.publish(now, Publish { reply, from: Some((conn, identity)), room, data, echo, ephemeral, key });
    Ok(())
}

/// The reply body of a publish (the API's too): `{"room","offset"}`, and
/// `"duplicate":true` when its key was seen already.
pub fn published_body(room: &str, offset: Option<u64>, duplicate: bool) -> String {
    let body = ObjectWriter::new().str("room", room);
    let body = match offset {
        Some(offset) => body.num("offset", offset),
        None => body,
    };
    if duplicate { body.bool("duplicate", true) } else { body }.finish()
}

/// The reply body of a successful join.
fn joined_body(room: &str, joined: JoinedRoom) -> String {
    ObjectWriter::new()
        .str("room", room)
        .str("epoch", &joined.epoch)
        .num("offset", joined.offset)
        .num("members", joined.members as u64)
        .bool("recovered", joined.recovered)
        .raw_array("missed", joined.missed.iter().map(text))
        .finish()
}

/// The reply body of any other answer (the API's `GET /api/presence` and
/// `GET /api/history` answer with it too); a presence list shown `by` user or connection.
pub fn answer_body(answer: Answer, by: Presence) -> String {
    match answer {
        Answer::Published { room, offset, duplicate } => published_body(&room, offset, duplicate),
        Answer::Presence { room, members } => {
            let members = match by {
                Presence::Users => members_by_user(&members),
                Presence::Off | Presence::Connections => members
                    .iter()
                    .map(|m| {
                        let mut s = String::new();
                        protocol::push_member(&mut s, m.member());
                        s
                    })
                    .collect(),
            };
            ObjectWriter::new().str("room", &room).raw_array("members", members.iter().map(String::as_str)).finish()
        }
        Answer::History { room, epoch, offset, messages } => ObjectWriter::new()
            .str("room", &room)
            .str("epoch", &epoch)
            .num("offset", offset)
            .raw_array("messages", messages.iter().map(text))
            .finish(),
        Answer::Synced => "{}".to_owned(),
        // Asked by the API only.
        Answer::Rooms(_) => "{}".to_owned(),
    }
}

/// A presence list by user: each user once (as `protocol::push_user` shows it, with the
/// `info` of one of its connections) with `"connections"`, its number of connections
/// there; each anonymous connection as a user of its own. In order of first appearance.
fn members_by_user(members: &[Identity]) -> Vec<String> {
    let mut users: Vec<(&Identity, u64)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for m in members {
        match m.user.as_deref() {
            Some(user) => match index.get(user) {
                Some(&i) => users[i].1 += 1,
                None => {
                    index.insert(user, users.len());
                    users.push((m, 1));
                }
            },
            None => users.push((m, 1)),
        }
    }
    users
        .into_iter()
        .map(|(m, connections)| {
            let mut s = String::new();
            protocol::push_user(&mut s, m.member());
            s.pop(); // the closing brace: one more field
            let _ = write!(s, ",\"connections\":{connections}}}");
            s
        })
        .collect()
}

/// A push's offset (`None`: ephemeral, or not a message).
fn offset_of(push: &Bytes) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Offset {
        offset: Option<u64>,
    }
    serde_json::from_slice::<Offset>(push).ok()?.offset
}

/// A push's `op` (`"event"` for one that has none, which the engines never write).
fn op_of(push: &str) -> &'static str {
    ["message", "join", "leave", "reset"]
        .into_iter()
        .find(|op| {
            push.strip_prefix(r#"{"op":""#).and_then(|rest| rest.strip_prefix(op)).is_some_and(|r| r.starts_with('"'))
        })
        .unwrap_or("event")
}

/// A kept push as text (written by `protocol::message`, so always UTF-8).
fn text(json: &Bytes) -> &str {
    std::str::from_utf8(json).unwrap_or_default()
}

/// `part` (borrowed from `whole`'s bytes) as a slice of `whole`: a reference count, not a
/// copy. Copies if `part` is not inside `whole` (never, for the parser's borrowed values).
fn slice_of(whole: &Bytes, part: &str) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= whole.len() => whole.slice(start..end),
        _ => Bytes::copy_from_slice(part.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::engine::memory::{MemoryEngine, Shared};
    use crate::rooms::engine::Output;
    use crate::rooms::sessions::Admission;
    use crate::server::{Command, Now};

    /// One worker's member side with the in-memory engine, driven by hand.
    struct Worker {
        members: Members,
        sessions: Sessions,
        engine: MemoryEngine,
        out: Outbox,
        /// Connections closed, with the reason.
        closed: Vec<(ConnId, String)>,
    }

    impl Worker {
        fn new(config: RoomsConfig) -> Worker {
            let config = Arc::new(config);
            Worker {
                members: Members::new(config.clone(), "n".into()),
                sessions: Sessions::new(&config),
                engine: MemoryEngine::new(config, "n".into(), 0, 1, &Shared::default()),
                out: Outbox::new(Now::read()),
                closed: Vec::new(),
            }
        }

        fn open(&mut self, conn: ConnId) {
            let session = self.sessions.open(conn, Admission::Anonymous, self.out.now());
            self.members.open(&mut self.out, conn, session);
            self.out.take();
        }

        /// Sends `text` from `conn`; the texts sent back to it.
        fn request(&mut self, conn: ConnId, text: &str) -> Vec<serde_json::Value> {
            let data = Bytes::copy_from_slice(text.as_bytes());
            self.members.on_message(
                &mut self.out,
                conn,
                MessageKind::Text,
                &data,
                &mut self.sessions,
                &mut self.engine,
            );
            while let Some(output) = self.engine.poll() {
                let Output::Event(event) = output else { panic!("one worker sent to another") };
                self.members.on_event(&mut self.out, event);
            }
            let mut replies = Vec::new();
            for command in self.out.take() {
                match command {
                    Command::Message(to, _, payload) if to == conn => {
                        replies.push(serde_json::from_slice(&payload).unwrap())
                    }
                    Command::Close(to, _, reason) => self.closed.push((to, reason)),
                    _ => {}
                }
            }
            replies
        }

        /// The error code of `conn`'s publish of `n` (`None`: accepted).
        fn publish(&mut self, conn: ConnId, n: u32) -> Option<u64> {
            let replies =
                self.request(conn, &format!(r#"{{"id":{n},"op":"publish","room":"r","data":{n},"echo":false}}"#));
            replies.iter().find(|r| r["id"] == n).and_then(|r| r["error"]["code"].as_u64())
        }

        fn advance(&mut self, by: Duration) {
            let later = self.out.now().after(by);
            self.out.set_now(later);
        }
    }

    #[test]
    fn a_resuming_stream_keeps_every_rooms_place_until_its_join_is_answered() {
        let mut w = Worker::new(RoomsConfig::default());
        let conn = ConnId::from_parts(1, 0);
        let session = w.sessions.open(conn, Admission::Anonymous, w.out.now());
        let request = sse::StreamRequest { rooms: vec!["a".into(), "b".into()], presence: Presence::Off };
        let since = [("a", "ea", 5), ("b", "eb", 7)]
            .map(|(room, epoch, offset)| (room.to_owned(), Since { epoch: epoch.into(), offset }))
            .into_iter()
            .collect();
        w.members.open_stream(&mut w.out, conn, session, request, since, &mut w.engine);
        // Only room a's join is answered (b's is on its way, on another worker or store).
        while let Some(output) = w.engine.poll() {
            match output {
                Output::Event(event @ Event::Joined { .. }) if matches!(&event, Event::Joined { room, .. } if &**room == "a") => {
                    w.members.on_event(&mut w.out, event)
                }
                _ => {}
            }
        }
        let events: Vec<String> = w
            .out
            .take()
            .into_iter()
            .filter_map(|c| match c {
                Command::Message(to, _, payload) if to == conn => Some(String::from_utf8(payload.to_vec()).unwrap()),
                _ => None,
            })
            .collect();
        // Room a started over (a new epoch: `reset`); its id still holds b's place.
        let reset = events.iter().find(|e| e.contains("event: reset")).expect("a reset event");
        let id = reset.lines().find_map(|l| l.strip_prefix("id: ")).expect("an id");
        assert!(id.starts_with("a~") && id.ends_with(",b~eb~7"), "{id}");
    }

    #[test]
    fn presence_by_user_lists_each_user_once_with_its_connections() {
        let who = |client: &str, user: Option<&str>, info: Option<&str>| Identity {
            client: client.into(),
            user: user.map(Into::into),
            info: info.map(Into::into),
        };
        let members = [
            who("c1", Some("ann"), Some(r#"{"name":"Ann"}"#)),
            who("c2", None, None),
            who("c3", Some("bob"), None),
            who("c4", Some("ann"), Some(r#"{"name":"Ann"}"#)),
            who("c5", None, None),
            who("c6", Some("ann"), Some(r#"{"name":"Ann"}"#)),
        ];
        let answer = || Answer::Presence { room: "r".into(), members: members.to_vec() };
        assert_eq!(
            answer_body(answer(), Presence::Users),
            concat!(
                r#"{"room":"r","members":[{"user":"ann","info":{"name":"Ann"},"connections":3},"#,
                r#"{"client":"c2","user":null,"connections":1},{"user":"bob","connections":1},"#,
                r#"{"client":"c5","user":null,"connections":1}]}"#
            )
        );
        let by_connection: serde_json::Value = serde_json::from_str(&answer_body(answer(), Presence::Off)).unwrap();
        assert_eq!(by_connection["members"].as_array().unwrap().len(), 6);
        assert_eq!(by_connection["members"][3], serde_json::json!({"client":"c4","user":"ann","info":{"name":"Ann"}}));
    }

    #[test]
    fn a_borrowed_part_is_sliced_and_anything_else_copied() {
        let whole = Bytes::from_static(br#"{"data":[1,2]}"#);
        let text = std::str::from_utf8(&whole).unwrap();
        let part = slice_of(&whole, &text[8..13]);
        assert_eq!(&part[..], b"[1,2]");
        assert_eq!(part.as_ptr(), whole[8..].as_ptr(), "no copy");
        let elsewhere = String::from("[1,2]");
        assert_eq!(&slice_of(&whole, &elsewhere)[..], b"[1,2]");
        assert_eq!(&slice_of(&whole, "")[..], b"");
    }

    #[test]
    fn publishes_over_the_rate_get_429_until_tokens_refill() {
        let mut w = Worker::new(RoomsConfig { publish_rate: 0.5, publish_burst: 3.0, ..RoomsConfig::default() });
        let (a, b) = (ConnId::from_parts(1, 0), ConnId::from_parts(2, 0));
        for conn in [a, b] {
            w.open(conn);
            w.request(conn, r#"{"op":"join","room":"r"}"#);
        }
        for i in 1..=3 {
            assert_eq!(w.publish(a, i), None, "within the burst");
        }
        assert_eq!(w.publish(a, 4), Some(429));
        assert_eq!(w.publish(b, 5), None, "the limit is per connection");
        w.advance(Duration::from_millis(1_999));
        assert_eq!(w.publish(a, 6), Some(429), "half a token per second: not yet");
        w.advance(Duration::from_millis(1));
        assert_eq!(w.publish(a, 7), None, "one token after 2 s");
        assert_eq!(w.publish(a, 8), Some(429));
        w.advance(Duration::from_secs(3_600));
        for i in 9..=11 {
            assert_eq!(w.publish(a, i), None, "refilled up to the burst");
        }
        assert_eq!(w.publish(a, 12), Some(429), "and no more");
    }

    #[test]
    fn rejections_spread_beyond_the_abuse_window_are_tolerated() {
        let config = RoomsConfig { abuse_limit: 3, abuse_window: Duration::from_secs(10), ..RoomsConfig::default() };
        let mut w = Worker::new(config);
        let a = ConnId::from_parts(1, 0);
        w.open(a);
        for _ in 0..4 {
            for _ in 0..3 {
                assert_eq!(w.request(a, r#"{"op":"nope"}"#)[0]["error"]["code"], 400);
            }
            w.advance(Duration::from_secs(11));
        }
        assert_eq!(w.closed, [], "three per window are tolerated");
        for _ in 0..4 {
            w.request(a, r#"{"op":"nope"}"#);
        }
        assert_eq!(w.closed, [(a, close_reason::ABUSE.to_owned())], "the fourth within a window closes");
    }

    #[test]
    fn strikes_close_past_the_limit_within_the_window() {
        let t0 = Now::read().mono;
        let window = Duration::from_secs(10);
        let mut strikes = Strikes::new(t0);
        for i in 1..=3 {
            assert!(!strikes.strike(t0 + Duration::from_secs(i), window, 3), "strike {i} is within the limit");
        }
        assert!(strikes.strike(t0 + Duration::from_secs(4), window, 3), "the 4th within 10 s closes");
    }
}
