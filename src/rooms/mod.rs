//! The pub/sub room layer: rooms, presence, ordered delivery, history and recovery, and
//! the backend HTTP API. Contract: `wsedge.v1` (../shared/specs/rooms-protocol.md; the
//! user-facing description is docs/protocol.md).
//!
//! [`Rooms`] is a `server::Handler`: it lives on the event loop's thread, so the registry
//! needs no locks. Every publish — from a client or from `POST /api/publish` — goes through
//! [`Rooms::publish`], the one path a backplane can later sit behind. A publish is
//! validated, given the room's next offset, serialized once and handed to the server as
//! one broadcast, which frames (and compresses) it once for all members.
//!
//! A connection's identity and permissions live in [`Client`] (today: an id and no user;
//! authentication fills in `user` and narrows what it may do).

mod api;
pub mod protocol;
mod relay;
mod room;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;

use crate::proto::handshake::{PlainRequest, UpgradeRequest};
use crate::proto::{CloseCode, MessageKind};
use crate::server::{ConnId, Handler, HttpResponse, Metrics, Outbox};
use protocol::{Member, ObjectWriter, Request, RequestError, RequestId};
use relay::Relay;
use room::{Kept, Membership, Room};

/// The subprotocol name of the room protocol.
pub const SUBPROTOCOL: &str = "wsedge.v1";

/// Room-layer limits and settings; every limit has a defined outcome.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// The WebSocket path of the room protocol (other paths get 404; empty: none).
    pub path: String,
    /// Paths under this prefix are raw relay rooms (the rest of the path names the room);
    /// `Some("/")` makes every path a relay room. `None`: no relay.
    pub relay_prefix: Option<String>,
    /// Messages kept per room for `since` and `history`.
    pub history_size: usize,
    /// Bytes of messages kept across all rooms. Beyond it, a room that publishes drops its
    /// own oldest messages (its clients then recover with `recovered: false`): memory stays
    /// bounded however many rooms there are.
    pub max_history_bytes: usize,
    /// How long a message is kept; an empty room is dropped (and its epoch forgotten)
    /// this long after its last member left.
    pub history_ttl: Duration,
    /// Rooms one connection may be in (-> 503).
    pub max_rooms_per_connection: usize,
    /// Members per room (-> 503).
    pub max_members_per_room: usize,
    /// Rooms per server (-> 503).
    pub max_rooms: usize,
    /// Largest `data` of a publish, as JSON text (-> 413).
    pub max_message_bytes: usize,
    /// Publishes per second per connection (token bucket refill, -> 429).
    pub publish_rate: f64,
    /// Token bucket size: publishes allowed in a burst.
    pub publish_burst: f64,
    /// Rejected requests (400, 413, 429) within `abuse_window` that close the connection
    /// with 1008.
    pub abuse_limit: u32,
    pub abuse_window: Duration,
    /// `publish`, `presence` and `history` require membership (-> 404) unless false.
    pub require_membership: bool,
    /// Key for the backend HTTP API; the API answers 404 without one.
    pub api_key: Option<String>,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            path: "/ws".to_owned(),
            relay_prefix: Some("/relay/".to_owned()),
            history_size: 100,
            max_history_bytes: 256 << 20,
            history_ttl: Duration::from_secs(300),
            max_rooms_per_connection: 64,
            max_members_per_room: 100_000,
            max_rooms: 100_000,
            max_message_bytes: 64 * 1024,
            publish_rate: 100.0,
            publish_burst: 200.0,
            abuse_limit: 200,
            abuse_window: Duration::from_secs(10),
            require_membership: true,
            api_key: None,
        }
    }
}

/// A connection's identity, memberships and rate-limit state.
#[derive(Debug)]
struct Client {
    id: Arc<str>,
    /// The authenticated user (none until authentication exists).
    user: Option<Arc<str>>,
    rooms: Vec<String>,
    tokens: f64,
    refilled_at: Instant,
    strikes: u32,
    strikes_since: Instant,
}

impl Client {
    fn member(&self) -> Member<'_> {
        Member { client: Some(&self.id), user: self.user.as_deref() }
    }
}

/// The room registry and protocol handler.
#[derive(Debug)]
pub struct Rooms {
    config: RoomsConfig,
    /// Random per process: client ids and epochs are unique across restarts.
    node: String,
    next_client: u64,
    next_epoch: u64,
    rooms: HashMap<String, Room>,
    clients: HashMap<ConnId, Client>,
    /// Sum of every room's `history_bytes()`.
    history_bytes: usize,
    relay: Relay,
}

impl Rooms {
    pub fn new(config: RoomsConfig) -> Self {
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Rooms {
            config,
            // 64 random bits: ids and epochs do not repeat across restarts or nodes.
            node: base36(seed),
            next_client: 0,
            next_epoch: 0,
            rooms: HashMap::new(),
            clients: HashMap::new(),
            history_bytes: 0,
            relay: Relay::default(),
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The relay room a path names, if the path is under the relay prefix.
    fn relay_room<'p>(&self, path: &'p str) -> Option<&'p str> {
        let prefix = self.config.relay_prefix.as_deref()?;
        path.strip_prefix(prefix).or_else(|| (prefix == "/" && path.is_empty()).then_some(""))
    }

    fn new_epoch(&mut self) -> Arc<str> {
        self.next_epoch += 1;
        format!("{}.{}", self.node, base36(self.next_epoch)).into()
    }

    /// Publishes `data` (raw JSON) to `room`: the one publish path. `from` is the
    /// publishing connection (`None`: the backend API); `echo` false skips it. Returns the
    /// offset (`None` for ephemeral messages).
    pub fn publish(
        &mut self,
        out: &mut Outbox,
        room_name: &str,
        data: &str,
        from: Option<ConnId>,
        echo: bool,
        ephemeral: bool,
    ) -> Result<Option<u64>, RequestError> {
        if data.len() > self.config.max_message_bytes {
            return Err(RequestError::new(413, format!("data over {} bytes", self.config.max_message_bytes)));
        }
        let sender = from.and_then(|c| self.clients.get(&c)).map(|c| (c.id.clone(), c.user.clone()));
        let is_member = match (from, self.rooms.get(room_name)) {
            (Some(conn), Some(room)) => room.members.contains_key(&conn),
            _ => false,
        };
        if from.is_some() && !is_member && self.config.require_membership {
            return Err(RequestError::new(404, "not a member of that room"));
        }
        let from_member = match &sender {
            Some((id, user)) => Member { client: Some(id), user: user.as_deref() },
            None => Member { client: None, user: None },
        };
        let now = out.now();
        if !self.rooms.contains_key(room_name) {
            // The backend may publish into a room nobody joined yet: its history waits.
            if self.rooms.len() >= self.config.max_rooms {
                return Err(RequestError::new(503, "server full: too many rooms"));
            }
            let epoch = self.new_epoch();
            self.rooms.insert(room_name.to_owned(), Room::new(epoch, now));
        }
        let Some(room) = self.rooms.get_mut(room_name) else {
            return Err(RequestError::new(503, "room unavailable"));
        };
        let offset = (!ephemeral).then(|| room.next_offset());
        // One allocation per publish: the same bytes are kept in history and broadcast.
        let json = Bytes::from(protocol::message(room_name, offset, from_member, data));
        if let Some(offset) = offset {
            let freed = room.keep(Kept { offset, at: now, json: json.clone() }, self.config.history_size);
            self.history_bytes = (self.history_bytes + json.len()).saturating_sub(freed);
            while self.history_bytes > self.config.max_history_bytes {
                let Some(freed) = room.evict_oldest() else { break };
                self.history_bytes -= freed;
            }
        }
        let recipients: Vec<ConnId> = room.members.keys().copied().filter(|c| echo || Some(*c) != from).collect();
        if !recipients.is_empty() {
            out.broadcast(recipients, MessageKind::Text, json);
        }
        Ok(offset)
    }

    fn handle(&mut self, out: &mut Outbox, conn: ConnId, request: Request<'_>) -> Result<String, RequestError> {
        match request {
            Request::Join { room, presence, since } => self.join(out, conn, &room, presence, since.as_ref()),
            Request::Leave { room } => {
                if !self.leave(out, conn, &room) {
                    return Err(RequestError::new(404, "not a member of that room"));
                }
                Ok(ObjectWriter::new().str("room", &room).finish())
            }
            Request::Publish { room, data, echo, ephemeral } => {
                self.take_publish_token(conn, out.now())?;
                let offset = self.publish(out, &room, data, Some(conn), echo, ephemeral)?;
                let body = ObjectWriter::new().str("room", &room);
                Ok(match offset {
                    Some(offset) => body.num("offset", offset),
                    None => body,
                }
                .finish())
            }
            Request::Presence { room } => {
                let room_state = self.readable_room(conn, &room)?;
                let members: Vec<String> = room_state
                    .members
                    .keys()
                    .filter_map(|c| self.clients.get(c))
                    .map(|client| {
                        let mut s = String::new();
                        protocol::push_member(&mut s, client.member());
                        s
                    })
                    .collect();
                Ok(ObjectWriter::new()
                    .str("room", &room)
                    .raw_array("members", members.iter().map(String::as_str))
                    .finish())
            }
            Request::History { room, limit } => {
                let room_state = self.readable_room(conn, &room)?;
                let limit = usize::try_from(limit.unwrap_or(protocol::DEFAULT_HISTORY_LIMIT)).unwrap_or(usize::MAX);
                Ok(ObjectWriter::new()
                    .str("room", &room)
                    .str("epoch", &room_state.epoch)
                    .num("offset", room_state.offset)
                    .raw_array("messages", room_state.history(limit))
                    .finish())
            }
            Request::Ping => Ok("{}".to_owned()),
        }
    }

    /// A room the connection may read (presence, history): 404 unless it is a member
    /// (or membership is not required and the room exists).
    fn readable_room(&self, conn: ConnId, name: &str) -> Result<&Room, RequestError> {
        let not_member = || RequestError::new(404, "not a member of that room");
        let room = self.rooms.get(name).ok_or_else(not_member)?;
        if self.config.require_membership && !room.members.contains_key(&conn) {
            return Err(not_member());
        }
        Ok(room)
    }

    fn join(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        name: &str,
        presence: bool,
        since: Option<&protocol::Since>,
    ) -> Result<String, RequestError> {
        let now = out.now();
        let Some(client) = self.clients.get(&conn) else {
            return Err(RequestError::new(503, "connection is closing"));
        };
        let already = client.rooms.iter().any(|r| r == name);
        if !already && client.rooms.len() >= self.config.max_rooms_per_connection {
            return Err(RequestError::new(
                503,
                format!("too many rooms for one connection (max {})", self.config.max_rooms_per_connection),
            ));
        }
        if !self.rooms.contains_key(name) {
            if self.rooms.len() >= self.config.max_rooms {
                return Err(RequestError::new(503, "server full: too many rooms"));
            }
            let epoch = self.new_epoch();
            self.rooms.insert(name.to_owned(), Room::new(epoch, now));
        }
        let Some(room) = self.rooms.get_mut(name) else {
            return Err(RequestError::new(503, "room unavailable"));
        };
        if !already && room.members.len() >= self.config.max_members_per_room {
            return Err(RequestError::new(503, "room full"));
        }
        room.members.insert(conn, Membership { presence });
        room.emptied_at = None;
        let watchers: Vec<ConnId> =
            room.members.iter().filter(|(c, m)| m.presence && **c != conn).map(|(c, _)| *c).collect();
        let (recovered, missed) = match since {
            Some(since) => {
                let r = room.recover(&since.epoch, since.offset);
                (r.recovered, r.missed)
            }
            None => (false, Vec::new()),
        };
        let body = ObjectWriter::new()
            .str("room", name)
            .str("epoch", &room.epoch)
            .num("offset", room.offset)
            .num("members", room.members.len() as u64)
            .bool("recovered", recovered)
            .raw_array("missed", missed)
            .finish();
        if let Some(client) = self.clients.get_mut(&conn) {
            if !already {
                client.rooms.push(name.to_owned());
                if !watchers.is_empty() {
                    let event = protocol::presence_event("join", name, client.member());
                    out.broadcast(watchers, MessageKind::Text, Bytes::from(event));
                }
            }
        }
        Ok(body)
    }

    /// Removes `conn` from `name`, telling presence watchers. Returns whether it was a member.
    fn leave(&mut self, out: &mut Outbox, conn: ConnId, name: &str) -> bool {
        let Some(room) = self.rooms.get_mut(name) else { return false };
        if room.members.remove(&conn).is_none() {
            return false;
        }
        if room.members.is_empty() {
            room.emptied_at = Some(out.now());
        }
        let watchers: Vec<ConnId> = room.members.iter().filter(|(_, m)| m.presence).map(|(c, _)| *c).collect();
        if let Some(client) = self.clients.get_mut(&conn) {
            client.rooms.retain(|r| r != name);
            if !watchers.is_empty() {
                let event = protocol::presence_event("leave", name, client.member());
                out.broadcast(watchers, MessageKind::Text, Bytes::from(event));
            }
        }
        true
    }

    fn take_publish_token(&mut self, conn: ConnId, now: Instant) -> Result<(), RequestError> {
        let Some(client) = self.clients.get_mut(&conn) else { return Ok(()) };
        let elapsed = now.saturating_duration_since(client.refilled_at).as_secs_f64();
        client.tokens = (client.tokens + elapsed * self.config.publish_rate).min(self.config.publish_burst);
        client.refilled_at = now;
        if client.tokens < 1.0 {
            return Err(RequestError::new(429, "publish rate limit exceeded"));
        }
        client.tokens -= 1.0;
        Ok(())
    }

    /// Counts a rejected request; sustained abuse closes the connection with 1008.
    fn strike(&mut self, out: &mut Outbox, conn: ConnId) {
        let now = out.now();
        let Some(client) = self.clients.get_mut(&conn) else { return };
        if now.saturating_duration_since(client.strikes_since) > self.config.abuse_window {
            client.strikes = 0;
            client.strikes_since = now;
        }
        client.strikes += 1;
        if client.strikes == self.config.abuse_limit.saturating_add(1) {
            debug!("closing {conn:?}: {} rejected requests", client.strikes);
            out.close(conn, CloseCode::POLICY_VIOLATION, "too many rejected requests");
        }
    }

    fn reply(out: &mut Outbox, conn: ConnId, id: RequestId<'_>, result: &Result<String, RequestError>) {
        let text = match result {
            Ok(_) if id.is_none() => return, // success without an id is silent
            Ok(body) => protocol::reply_ok(id, body),
            Err(e) => protocol::reply_error(id, e),
        };
        out.send(conn, MessageKind::Text, Bytes::from(text));
    }
}

impl Handler for Rooms {
    fn accept(&mut self, request: &UpgradeRequest) -> Result<(), HttpResponse> {
        let path = request.path.split('?').next().unwrap_or_default();
        if !self.config.path.is_empty() && path == self.config.path {
            return Ok(());
        }
        match self.relay_room(path) {
            Some(room) if self.relay.members(room) >= self.config.max_members_per_room => {
                Err(HttpResponse::text(503, "relay room full\n"))
            }
            Some(room) if self.relay.members(room) == 0 && self.relay.room_count() >= self.config.max_rooms => {
                Err(HttpResponse::text(503, "server full: too many rooms\n"))
            }
            Some(_) => Ok(()),
            None => Err(HttpResponse::text(404, "no WebSocket endpoint at this path\n")),
        }
    }

    fn on_open(&mut self, out: &mut Outbox, conn: ConnId, request: &UpgradeRequest) {
        let path = request.path.split('?').next().unwrap_or_default();
        if self.config.path.is_empty() || path != self.config.path {
            if let Some(room) = self.relay_room(path).map(str::to_owned) {
                self.relay.join(conn, &room);
                return;
            }
        }
        self.next_client += 1;
        let id: Arc<str> = format!("{}-{}", self.node, base36(self.next_client)).into();
        out.send(conn, MessageKind::Text, Bytes::from(protocol::welcome(&id, None)));
        let now = out.now();
        let client = Client {
            id,
            user: None,
            rooms: Vec::new(),
            tokens: self.config.publish_burst,
            refilled_at: now,
            strikes: 0,
            strikes_since: now,
        };
        self.clients.insert(conn, client);
    }

    fn on_message(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Bytes) {
        if self.relay.is_member(conn) {
            return self.relay.forward(out, conn, kind, data, self.config.max_message_bytes);
        }
        let result = match kind {
            MessageKind::Binary => (None, Err(RequestError::bad_request("binary frames are not part of wsedge.v1"))),
            MessageKind::Text => {
                // The codec validated UTF-8; this cannot fail.
                let text = std::str::from_utf8(&data).unwrap_or_default();
                let (id, request) = protocol::parse_request(text);
                (id, request.and_then(|r| self.handle(out, conn, r)))
            }
        };
        let (id, result) = result;
        if let Err(e) = &result {
            if matches!(e.code, 400 | 413 | 429) {
                self.strike(out, conn);
            }
        }
        Rooms::reply(out, conn, id, &result);
    }

    fn on_close(&mut self, out: &mut Outbox, conn: ConnId) {
        let rooms = self.clients.get(&conn).map(|c| c.rooms.clone()).unwrap_or_default();
        for room in rooms {
            self.leave(out, conn, &room);
        }
        self.clients.remove(&conn);
        self.relay.leave(conn);
    }

    fn on_http(&mut self, out: &mut Outbox, request: &PlainRequest, body: &[u8], metrics: &Metrics) -> HttpResponse {
        api::serve(self, out, request, body, metrics)
    }

    fn on_tick(&mut self, out: &mut Outbox) {
        let now = out.now();
        let ttl = self.config.history_ttl;
        let mut freed = 0;
        self.rooms.retain(|_, room| {
            freed += room.expire(now, ttl);
            // Memory must not grow with rooms used once: an empty room goes once it has
            // been empty for the TTL and its history has aged out (its epoch with it). A
            // message the backend published into the empty room is kept its full TTL.
            let idle = room.emptied_at.is_some_and(|t| now.saturating_duration_since(t) >= ttl);
            !(idle && room.history_len() == 0)
        });
        self.history_bytes = self.history_bytes.saturating_sub(freed);
    }
}

fn base36(mut n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_room_lives_until_its_last_message_ages_out() {
        let ttl = Duration::from_secs(300);
        let mut rooms = Rooms::new(RoomsConfig { history_ttl: ttl, ..RoomsConfig::default() });
        let t0 = Instant::now();
        let mut out = Outbox::new(t0);
        // The backend publishes into a room nobody is in (it is empty from the start).
        assert_eq!(rooms.publish(&mut out, "r", "1", None, true, false), Ok(Some(1)));
        out.set_now(t0 + Duration::from_secs(200));
        assert_eq!(rooms.publish(&mut out, "r", "2", None, true, false), Ok(Some(2)));
        out.set_now(t0 + Duration::from_secs(301));
        rooms.on_tick(&mut out);
        assert_eq!(rooms.room_count(), 1, "message 2 is 101 s old: the room and its epoch stay");
        out.set_now(t0 + Duration::from_secs(500));
        rooms.on_tick(&mut out);
        assert_eq!(rooms.room_count(), 0, "empty and nothing kept: dropped");
    }

    #[test]
    fn history_memory_stays_within_the_global_budget() {
        let budget = 10_000;
        let mut rooms = Rooms::new(RoomsConfig { max_history_bytes: budget, ..RoomsConfig::default() });
        let mut out = Outbox::new(Instant::now());
        let data = format!("\"{}\"", "x".repeat(300));
        for i in 0..500 {
            let room = format!("room-{}", i % 50);
            assert!(rooms.publish(&mut out, &room, &data, None, true, false).is_ok());
            let held: usize = rooms.rooms.values().map(Room::history_bytes).sum();
            assert_eq!(held, rooms.history_bytes, "the running total matches the rooms");
            assert!(held <= budget, "{held} bytes kept over a {budget} budget");
        }
        // Expiry frees the running total too.
        out.set_now(out.now() + Duration::from_secs(301));
        rooms.on_tick(&mut out);
        assert_eq!(rooms.history_bytes, 0);
    }
}
