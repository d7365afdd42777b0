//! The pub/sub room layer: rooms, presence, ordered delivery, history and recovery, and
//! the backend HTTP API. Contract: `wsedge.v1` (../shared/specs/rooms-protocol.md; the
//! user-facing description is docs/protocol.md).
//!
//! [`Rooms`] is a `server::Handler`, one per worker, living on that worker's thread: no
//! locks. Each room has an owner worker (a hash of its name) that holds its members,
//! offsets and history; the other workers hold delivery lists for their own members and
//! reach the owner over the mesh (`msg.rs` says why per-room order holds). With one worker
//! the same code runs, with every message a direct call.
//!
//! Every publish — from a client or from `POST /api/publish` — goes through
//! [`Rooms::publish`] on the room's owner, the one path a backplane can later sit behind.
//! A publish is validated, given the room's next offset, serialized once, and handed as
//! the same `Bytes` to every worker with members, whose event loop frames (and compresses)
//! it once for all of them.
//!
//! A connection's identity lives in [`Identity`] (a client id, and the `sub` of its token
//! as `user`), held by its worker's [`Client`] and copied to the owners of the rooms it
//! joins. What it may do (`auth::Permissions`) and until when (its token's `exp`) stay
//! with the `Client`: permissions are checked on the member's worker before a request
//! goes to a room's owner, so no permission data crosses workers.

mod api;
pub mod auth;
mod local;
mod msg;
pub mod protocol;
mod relay;
mod room;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;

use crate::proto::handshake::{PlainRequest, UpgradeRequest};
use crate::proto::{CloseCode, MessageKind};
use crate::server::{ConnId, Handler, HttpResponse, Mesh, Metrics, Now, Outbox, TokenBucket};
use auth::{AuthConfig, AuthError, Grant, Permissions, RoomPatterns, TokenVerifier};
use local::{Audience, LocalRooms};
pub use msg::RoomMsg;
use msg::{JoinRequest, OwnedId, OwnedRooms};
use protocol::{ObjectWriter, Request, RequestError, RequestId};
use relay::Relay;
pub use room::Identity;
use room::{Kept, Membership, Room};

pub use crate::wire::SUBPROTOCOL;

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
    /// bounded however many rooms there are. With several workers each owner keeps its share.
    pub max_history_bytes: usize,
    /// How long a message is kept; an empty room is dropped (and its epoch forgotten)
    /// this long after its last member left.
    pub history_ttl: Duration,
    /// Rooms one connection may be in (-> 503).
    pub max_rooms_per_connection: usize,
    /// Members per room (-> 503).
    pub max_members_per_room: usize,
    /// Rooms per server, and relay rooms per server (-> 503), counted across workers.
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
    /// Token authentication (`None`: every connection is anonymous). An invalid token on
    /// the upgrade -> HTTP 401; in `auth` -> error 401.
    pub auth: Option<AuthConfig>,
    /// What anonymous connections may join, publish to and watch presence of (default
    /// `*`: everything). Denied -> error 403.
    pub anon_rooms: RoomPatterns,
    /// With `require_auth`: how long a connection without a token on the upgrade has to
    /// send a valid `auth` (-> close 1008). The CLI uses the handshake timeout.
    pub auth_timeout: Duration,
    /// `auth` requests per minute per connection, also the burst (-> error 429): each one
    /// costs a signature check on the worker's thread, so a client may not loop on them.
    pub auth_per_minute: u32,
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
            auth: None,
            anon_rooms: RoomPatterns::everything(),
            auth_timeout: Duration::from_secs(10),
            auth_per_minute: 10,
        }
    }
}

/// One of this worker's connections: its identity and permissions, the rooms it is in,
/// its rate limits.
#[derive(Debug)]
struct Client {
    identity: Identity,
    permissions: Arc<Permissions>,
    /// The last second its token is valid (`exp` + leeway); `None`: anonymous.
    valid_until: Option<u64>,
    /// Set until a valid `auth` arrives (`require_auth`, no token on the upgrade): no
    /// welcome yet, other requests get 401, and at this time the connection is closed.
    auth_deadline: Option<Instant>,
    /// Rooms the owner confirmed (mirrors the owner's member list).
    rooms: Vec<Arc<str>>,
    /// Rooms asked for whose `Joined` has not come back yet.
    joining: Vec<String>,
    /// Publishes (`RoomsConfig::publish_rate`) and `auth` requests (`auth_per_minute`).
    publishes: TokenBucket,
    auths: TokenBucket,
    strikes: u32,
    strikes_since: Instant,
}

/// Something that waits until every worker has answered a `Gather`.
#[derive(Debug)]
enum Purpose {
    /// `GET /api/rooms`.
    ListRooms(ConnId),
    /// `GET /metrics`, with the transport counters rendered when the request came.
    Metrics(ConnId, String),
    /// A client's `ping`: its reply comes after everything its earlier requests caused,
    /// whichever worker owned their rooms.
    Ping(ConnId, OwnedId),
}

#[derive(Debug)]
struct Gathering {
    remaining: usize,
    purpose: Purpose,
    parts: OwnedRooms,
}

/// Rooms across all workers (one atomic operation per room created or dropped).
#[derive(Debug, Default)]
struct RoomCounts {
    rooms: AtomicUsize,
    relay_rooms: AtomicUsize,
}

impl RoomCounts {
    /// Counts one more in `count` unless it is at `max`.
    fn take(count: &AtomicUsize, max: usize) -> bool {
        count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }
}

/// What `Rooms::accept` decided about an upgrade, for `on_open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No token (or no authentication configured): `anon_rooms` applies.
    Anonymous,
    /// No token on the upgrade but one is required: `auth` must come first.
    Pending,
    /// A valid token on the upgrade.
    Authenticated(Grant),
}

/// A relay connection's limits from its token (only kept when there are some).
#[derive(Debug, Clone, Copy)]
struct RelaySession {
    may_publish: bool,
    valid_until: Option<u64>,
}

/// The room layer of one worker: owner of some rooms, home of some connections.
#[derive(Debug)]
pub struct Rooms {
    config: RoomsConfig,
    /// Random per worker and process: client ids and epochs are unique across workers,
    /// restarts and nodes.
    node: String,
    next_client: u64,
    next_epoch: u64,
    mesh: Mesh<RoomMsg>,
    /// Room name -> owner worker; the same keys on every worker.
    router: RandomState,
    counts: Arc<RoomCounts>,

    // ---- owner side: the rooms whose name hashes to this worker ----
    rooms: HashMap<Arc<str>, Room>,
    /// Sum of every owned room's `history_bytes()`.
    history_bytes: usize,

    // ---- member side: this worker's connections ----
    clients: HashMap<ConnId, Client>,
    local: LocalRooms,
    gathers: HashMap<u64, Gathering>,
    next_gather: u64,
    /// Set when authentication is configured.
    verifier: Option<TokenVerifier>,
    anon: Arc<Permissions>,
    /// (valid until, connection): closed with 1008 "token expired" after that second.
    expiries: BTreeSet<(u64, ConnId)>,
    /// (deadline, connection) of connections that have yet to send a valid `auth`.
    auth_deadlines: BTreeSet<(Instant, ConnId)>,
    relay_sessions: HashMap<ConnId, RelaySession>,

    /// Relay rooms: both sides.
    relay: Relay,
}

impl Rooms {
    /// The room layer of a single-worker server (`Server::bind`).
    pub fn new(config: RoomsConfig) -> Self {
        Rooms::with_mesh(config, Mesh::single(), RandomState::new(), Arc::default())
    }

    /// Makes the room layer of each worker of a `Workers` server:
    /// `Workers::bind(server_config, Rooms::for_workers(rooms_config))`.
    pub fn for_workers(config: RoomsConfig) -> impl FnMut(Mesh<RoomMsg>) -> Rooms {
        let router = RandomState::new();
        let counts = Arc::<RoomCounts>::default();
        move |mesh| Rooms::with_mesh(config.clone(), mesh, router.clone(), counts.clone())
    }

    fn with_mesh(config: RoomsConfig, mesh: Mesh<RoomMsg>, router: RandomState, counts: Arc<RoomCounts>) -> Self {
        let seed = RandomState::new().build_hasher().finish();
        let verifier = config.auth.as_ref().map(TokenVerifier::new);
        let anon = Arc::new(Permissions::same_for_all(config.anon_rooms.clone()));
        Rooms {
            config,
            // 64 random bits: ids and epochs do not repeat across workers, restarts or nodes.
            node: base36(seed),
            next_client: 0,
            next_epoch: 0,
            mesh,
            router,
            counts,
            rooms: HashMap::new(),
            history_bytes: 0,
            clients: HashMap::new(),
            local: LocalRooms::default(),
            gathers: HashMap::new(),
            next_gather: 0,
            verifier,
            anon,
            expiries: BTreeSet::new(),
            auth_deadlines: BTreeSet::new(),
            relay_sessions: HashMap::new(),
            relay: Relay::default(),
        }
    }

    /// Rooms this worker owns.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The worker that owns room `name` (relay rooms too).
    fn owner(&self, name: &str) -> usize {
        let workers = self.mesh.workers();
        if workers == 1 {
            return 0;
        }
        (self.router.hash_one(name) % workers as u64) as usize
    }

    /// Sends `msg` to worker `to`: over the mesh, or (to itself) as a direct call.
    fn send(&mut self, out: &mut Outbox, to: usize, msg: RoomMsg) {
        if to == self.mesh.me() {
            self.receive(out, msg);
        } else {
            self.mesh.post(to, msg);
        }
    }

    /// Sends a message to every worker in `mask` (bit w: worker w).
    fn send_each(&mut self, out: &mut Outbox, mask: u64, mut msg: impl FnMut() -> RoomMsg) {
        for worker in 0..self.mesh.workers().min(64) {
            if mask & (1 << worker) != 0 {
                self.send(out, worker, msg());
            }
        }
    }

    /// This owner's share of a server-wide limit.
    fn share(&self, limit: usize) -> usize {
        limit.div_ceil(self.mesh.workers())
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

    // ---- owner side ----

    /// Publishes `data` (raw JSON) to `room`: the one publish path, run by the room's
    /// owner (with one worker: always here). `from` is the publishing connection and who it
    /// is (`None`: the backend API); `echo` false skips it. Returns the offset (`None` for
    /// ephemeral messages).
    pub fn publish(
        &mut self,
        out: &mut Outbox,
        room_name: &str,
        data: &str,
        from: Option<(ConnId, &Identity)>,
        echo: bool,
        ephemeral: bool,
    ) -> Result<Option<u64>, RequestError> {
        if data.len() > self.config.max_message_bytes {
            return Err(RequestError::new(413, format!("data over {} bytes", self.config.max_message_bytes)));
        }
        let is_member = match (from, self.rooms.get(room_name)) {
            (Some((conn, _)), Some(room)) => room.is_member(conn),
            _ => false,
        };
        if from.is_some() && !is_member && self.config.require_membership {
            return Err(RequestError::new(404, "not a member of that room"));
        }
        let now = out.now().mono;
        // The backend may publish into a room nobody joined yet: its history waits.
        self.create_room(room_name, now)?;
        let history_budget = self.share(self.config.max_history_bytes);
        let Some(room) = self.rooms.get_mut(room_name) else {
            return Err(RequestError::new(503, "room unavailable"));
        };
        let offset = (!ephemeral).then(|| room.next_offset());
        let from_member = from.map_or(protocol::Member { client: None, user: None }, |(_, who)| who.member());
        // One allocation per publish: the same bytes are kept in history and broadcast.
        let json = Bytes::from(protocol::message(room_name, offset, from_member, data));
        if let Some(offset) = offset {
            let freed = room.keep(Kept { offset, at: now, json: json.clone() }, self.config.history_size);
            self.history_bytes = (self.history_bytes + json.len()).saturating_sub(freed);
            while self.history_bytes > history_budget {
                let Some(freed) = room.evict_oldest() else { break };
                self.history_bytes -= freed;
            }
        }
        let (name, mask) = (room.name.clone(), room.worker_mask(false));
        let except = if echo { None } else { from.map(|(conn, _)| conn) };
        self.send_each(out, mask, || RoomMsg::Deliver {
            room: name.clone(),
            audience: Audience::Members,
            except,
            payload: json.clone(),
        });
        Ok(offset)
    }

    /// Creates an owned room if it does not exist (503 beyond `max_rooms` in the server).
    fn create_room(&mut self, name: &str, now: Instant) -> Result<(), RequestError> {
        if self.rooms.contains_key(name) {
            return Ok(());
        }
        if !RoomCounts::take(&self.counts.rooms, self.config.max_rooms) {
            return Err(RequestError::new(503, "server full: too many rooms"));
        }
        let epoch = self.new_epoch();
        let name: Arc<str> = name.into();
        self.rooms.insert(name.clone(), Room::new(name, epoch, now, self.mesh.workers()));
        Ok(())
    }

    /// A room `conn` may read (presence, history): 404 unless it is a member (or
    /// membership is not required and the room exists).
    fn readable_room(&self, conn: ConnId, name: &str) -> Result<&Room, RequestError> {
        let not_member = || RequestError::new(404, "not a member of that room");
        let room = self.rooms.get(name).ok_or_else(not_member)?;
        if self.config.require_membership && !room.is_member(conn) {
            return Err(not_member());
        }
        Ok(room)
    }

    /// Adds a member (on any worker) to an owned room; answers its worker with `Joined`.
    fn owner_join(&mut self, out: &mut Outbox, join: JoinRequest) {
        let JoinRequest { conn, identity, room: name, presence, since, id } = join;
        let now = out.now().mono;
        let result = self.create_room(&name, now).and_then(|()| {
            let room = self.rooms.get_mut(name.as_str()).ok_or_else(|| RequestError::new(503, "room unavailable"))?;
            if !room.is_member(conn) && room.members().len() >= self.config.max_members_per_room {
                return Err(RequestError::new(503, "room full"));
            }
            let event = protocol::presence_event("join", &name, identity.member());
            let watchers = room.worker_mask(true); // before the joiner counts as one
            let new = room.insert_member(conn, Membership { presence, identity });
            let (recovered, missed) = match &since {
                Some(since) => {
                    let r = room.recover(&since.epoch, since.offset);
                    (r.recovered, r.missed)
                }
                None => (false, Vec::new()),
            };
            let body = ObjectWriter::new()
                .str("room", &name)
                .str("epoch", &room.epoch)
                .num("offset", room.offset)
                .num("members", room.members().len() as u64)
                .bool("recovered", recovered)
                .raw_array("missed", missed)
                .finish();
            Ok((room.name.clone(), body, new.then_some(event), watchers))
        });
        match result {
            Ok((room, body, event, watchers)) => {
                if let Some(event) = event {
                    let event = Bytes::from(event);
                    self.send_each(out, watchers, || RoomMsg::Deliver {
                        room: room.clone(),
                        audience: Audience::Watchers,
                        except: Some(conn),
                        payload: event.clone(),
                    });
                }
                self.send(out, conn.worker(), RoomMsg::Joined { conn, room, presence, id, result: Ok(body) });
            }
            Err(e) => {
                let msg = RoomMsg::Joined { conn, room: name.into(), presence, id, result: Err(e) };
                self.send(out, conn.worker(), msg);
            }
        }
    }

    /// Removes a member from an owned room, telling presence watchers and (unless the
    /// connection is gone) its worker.
    fn owner_leave(&mut self, out: &mut Outbox, conn: ConnId, name: &str, id: OwnedId, gone: bool) {
        let now = out.now().mono;
        let removed = self.rooms.get_mut(name).and_then(|room| {
            let membership = room.remove_member(conn, now)?;
            Some((room.name.clone(), membership, room.worker_mask(true)))
        });
        let Some((room, membership, watchers)) = removed else {
            if !gone {
                let error = Err(RequestError::new(404, "not a member of that room"));
                self.send(out, conn.worker(), RoomMsg::Reply { conn, id, result: error });
            }
            return;
        };
        let event = Bytes::from(protocol::presence_event("leave", name, membership.identity.member()));
        self.send_each(out, watchers, || RoomMsg::Deliver {
            room: room.clone(),
            audience: Audience::Watchers,
            except: Some(conn),
            payload: event.clone(),
        });
        if !gone {
            self.send(out, conn.worker(), RoomMsg::Left { conn, room, id });
        }
    }

    fn owner_presence(&self, conn: ConnId, name: &str) -> Result<String, RequestError> {
        let room = self.readable_room(conn, name)?;
        let members: Vec<String> = room
            .members()
            .values()
            .map(|m| {
                let mut s = String::new();
                protocol::push_member(&mut s, m.identity.member());
                s
            })
            .collect();
        Ok(ObjectWriter::new().str("room", name).raw_array("members", members.iter().map(String::as_str)).finish())
    }

    fn owner_history(&self, conn: ConnId, name: &str, limit: Option<u64>) -> Result<String, RequestError> {
        let room = self.readable_room(conn, name)?;
        let limit = usize::try_from(limit.unwrap_or(protocol::DEFAULT_HISTORY_LIMIT)).unwrap_or(usize::MAX);
        Ok(ObjectWriter::new()
            .str("room", name)
            .str("epoch", &room.epoch)
            .num("offset", room.offset)
            .raw_array("messages", room.history(limit))
            .finish())
    }

    /// Answers a request from `conn` (on whatever worker) with `result`.
    fn answer_remote(&mut self, out: &mut Outbox, conn: ConnId, id: OwnedId, result: Result<String, RequestError>) {
        if result.is_ok() && id.is_none() {
            return; // success without an id is silent
        }
        self.send(out, conn.worker(), RoomMsg::Reply { conn, id, result });
    }

    /// The rooms this worker owns, for `/api/rooms` and `/metrics`.
    fn owned_summary(&self) -> OwnedRooms {
        OwnedRooms {
            rooms: self.rooms.values().map(|r| (r.name.clone(), r.members().len(), r.offset)).collect(),
            history_messages: self.rooms.values().map(Room::history_len).sum(),
            history_bytes: self.history_bytes,
            relay_rooms: self.relay.room_count(),
        }
    }

    // ---- member side ----

    /// A request from one of this worker's connections: answered here when it can be,
    /// else sent to the room's owner.
    /// `frame` is the text frame the request was parsed from (`data` is sliced from it).
    fn request(&mut self, out: &mut Outbox, conn: ConnId, frame: &Bytes, id: RequestId<'_>, request: Request<'_>) {
        let owned_id = || id.map(ToOwned::to_owned);
        if let Request::Auth { token } = request {
            return self.authenticate(out, conn, id, &token);
        }
        let Some(client) = self.clients.get_mut(&conn) else { return };
        if client.auth_deadline.is_some() {
            let e = RequestError::new(401, "authenticate first: {\"op\":\"auth\",\"token\":...}");
            return self.answer(out, conn, id, Err(e));
        }
        if let Err(e) = permitted(&client.permissions, &request) {
            return self.answer(out, conn, id, Err(e));
        }
        let msg = match request {
            Request::Ping => return self.gather(out, Purpose::Ping(conn, owned_id())),
            Request::Auth { .. } => return,
            Request::Join { room, presence, since } => {
                let known = client.rooms.iter().any(|r| **r == *room) || client.joining.contains(&room);
                let max = self.config.max_rooms_per_connection;
                if !known && client.rooms.len() + client.joining.len() >= max {
                    let e = RequestError::new(503, format!("too many rooms for one connection (max {max})"));
                    return self.answer(out, conn, id, Err(e));
                }
                if !known {
                    client.joining.push(room.clone());
                }
                let identity = client.identity.clone();
                RoomMsg::Join(JoinRequest { conn, identity, room, presence, since, id: owned_id() })
            }
            Request::Leave { room } => RoomMsg::Leave { conn, room, id: owned_id(), gone: false },
            Request::Publish { room, data, echo, ephemeral } => {
                if client.publishes.take(self.config.publish_rate, self.config.publish_burst, out.now().mono).is_err() {
                    return self.answer(out, conn, id, Err(RequestError::new(429, "publish rate limit exceeded")));
                }
                if data.len() > self.config.max_message_bytes {
                    let e = RequestError::new(413, format!("data over {} bytes", self.config.max_message_bytes));
                    return self.answer(out, conn, id, Err(e));
                }
                let identity = client.identity.clone();
                let data = slice_of(frame, data);
                RoomMsg::Publish { conn, identity, room, data, echo, ephemeral, id: owned_id() }
            }
            Request::Presence { room } => RoomMsg::Presence { conn, room, id: owned_id() },
            Request::History { room, limit } => RoomMsg::History { conn, room, limit, id: owned_id() },
        };
        let owner = match &msg {
            RoomMsg::Join(JoinRequest { room, .. })
            | RoomMsg::Leave { room, .. }
            | RoomMsg::Publish { room, .. }
            | RoomMsg::Presence { room, .. }
            | RoomMsg::History { room, .. } => self.owner(room),
            _ => self.mesh.me(),
        };
        self.send(out, owner, msg);
    }

    /// The `auth` request: a first valid token welcomes a waiting connection (or names an
    /// anonymous one that is in no rooms yet); a later one for the same user extends the
    /// session.
    fn authenticate(&mut self, out: &mut Outbox, conn: ConnId, id: RequestId<'_>, token: &str) {
        let Some(verifier) = &self.verifier else {
            let e = RequestError::bad_request("authentication is not configured on this server");
            return self.answer(out, conn, id, Err(e));
        };
        let Some(client) = self.clients.get_mut(&conn) else { return };
        let per_minute = f64::from(self.config.auth_per_minute);
        if client.auths.take(per_minute / 60.0, per_minute, out.now().mono).is_err() {
            return self.answer(out, conn, id, Err(RequestError::new(429, "auth rate limit exceeded")));
        }
        let grant = verifier.verify(token, auth::unix_now());
        let grant = match grant {
            Ok(grant) => grant,
            Err(e) => return self.answer(out, conn, id, Err(RequestError::new(401, e.to_string()))),
        };
        let refused = match &client.identity.user {
            Some(user) if *user != grant.user => Some("the token is for another user"),
            // Room owners hold a copy of the identity: it cannot change under them.
            None if !client.rooms.is_empty() || !client.joining.is_empty() => Some("authenticate before joining rooms"),
            // A refresh may not narrow the rooms under a session that is in them: its
            // rooms keep delivering (and showing presence) whatever the new claim says.
            Some(_) if !covers(&grant.permissions, &client.permissions, &client.rooms, &client.joining) => {
                Some("the token does not allow rooms you are in: leave them first")
            }
            _ => None,
        };
        if let Some(message) = refused {
            return self.answer(out, conn, id, Err(RequestError::new(403, message)));
        }
        let waiting = client.auth_deadline.take();
        if let Some(deadline) = waiting {
            self.auth_deadlines.remove(&(deadline, conn));
        }
        if let Some(old) = client.valid_until.replace(grant.valid_until) {
            self.expiries.remove(&(old, conn));
        }
        self.expiries.insert((grant.valid_until, conn));
        client.permissions = grant.permissions;
        client.identity.user = Some(grant.user.clone());
        let welcome = waiting.map(|_| protocol::welcome(&client.identity.client, Some(&grant.user)));
        self.answer(out, conn, id, Ok(ObjectWriter::new().str("user", &grant.user).finish()));
        if let Some(welcome) = welcome {
            out.send(conn, MessageKind::Text, Bytes::from(welcome));
        }
    }

    /// Closes connections whose token expired, and those that did not authenticate in time.
    fn enforce_sessions(&mut self, out: &mut Outbox) {
        if self.verifier.is_none() {
            return;
        }
        let now_unix = auth::unix_now();
        while let Some(&(until, conn)) = self.expiries.first() {
            if until >= now_unix {
                break;
            }
            self.expiries.pop_first();
            debug!("closing {conn:?}: token expired");
            out.close(conn, CloseCode::POLICY_VIOLATION, "token expired");
        }
        let now = out.now().mono;
        while let Some(&(deadline, conn)) = self.auth_deadlines.first() {
            if deadline > now {
                break;
            }
            self.auth_deadlines.pop_first();
            debug!("closing {conn:?}: no valid auth in time");
            out.close(conn, CloseCode::POLICY_VIOLATION, "authentication required");
        }
    }

    /// Verifies the token an upgrade carries, if any.
    fn admit(&self, request: &UpgradeRequest) -> Result<Admission, HttpResponse> {
        let Some(verifier) = &self.verifier else { return Ok(Admission::Anonymous) };
        let require = self.config.auth.as_ref().is_some_and(|a| a.require_auth);
        let token = auth::upgrade_token(&request.path, request.authorization.as_deref());
        match token {
            Ok(Some(token)) => verifier.verify(&token, auth::unix_now()).map(Admission::Authenticated),
            Ok(None) if require => Ok(Admission::Pending),
            Ok(None) => Ok(Admission::Anonymous),
            Err(e) => Err(e),
        }
        .map_err(unauthorized)
    }

    /// Replies to one of this worker's connections; rejected requests count as strikes.
    fn answer(&mut self, out: &mut Outbox, conn: ConnId, id: RequestId<'_>, result: Result<String, RequestError>) {
        if let Err(e) = &result {
            if matches!(e.code, 400 | 401 | 403 | 413 | 429) {
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

    /// Asks every worker (itself included) for its part; `gathered` finishes the job.
    /// Each worker answers after everything it was sent before, so the answer also comes
    /// after every effect of what was asked before it.
    fn gather(&mut self, out: &mut Outbox, purpose: Purpose) {
        let (token, workers) = (self.next_gather, self.mesh.workers());
        self.next_gather += 1;
        let summary = !matches!(purpose, Purpose::Ping(..));
        self.gathers.insert(token, Gathering { remaining: workers, purpose, parts: OwnedRooms::default() });
        let me = self.mesh.me();
        for worker in 0..workers {
            self.send(out, worker, RoomMsg::Gather { token, reply_to: me, summary });
        }
    }

    fn gathered(&mut self, out: &mut Outbox, token: u64, part: Option<OwnedRooms>) {
        let Some(gathering) = self.gathers.get_mut(&token) else { return };
        if let Some(part) = part {
            gathering.parts.rooms.extend(part.rooms);
            gathering.parts.history_messages += part.history_messages;
            gathering.parts.history_bytes += part.history_bytes;
            gathering.parts.relay_rooms += part.relay_rooms;
        }
        gathering.remaining -= 1;
        if gathering.remaining > 0 {
            return;
        }
        let Some(gathering) = self.gathers.remove(&token) else { return };
        match gathering.purpose {
            Purpose::Metrics(http, mut text) => {
                api::render_room_metrics(&gathering.parts, &mut text);
                let response =
                    HttpResponse { content_type: "text/plain; version=0.0.4", ..HttpResponse::text(200, &text) };
                out.respond(http, response);
            }
            Purpose::ListRooms(http) => out.respond(http, api::list_rooms(gathering.parts)),
            Purpose::Ping(conn, id) => self.answer(out, conn, id.as_deref(), Ok("{}".to_owned())),
        }
    }

    // ---- messages between workers ----

    fn receive(&mut self, out: &mut Outbox, msg: RoomMsg) {
        match msg {
            // To the owner.
            RoomMsg::Join(join) => self.owner_join(out, join),
            RoomMsg::Leave { conn, room, id, gone } => self.owner_leave(out, conn, &room, id, gone),
            RoomMsg::Publish { conn, identity, room, data, echo, ephemeral, id } => {
                // UTF-8 already (a slice of a validated text frame at a JSON value's bounds).
                let data = std::str::from_utf8(&data).map_err(|_| RequestError::bad_request("data is not UTF-8"));
                let result =
                    data.and_then(|data| self.publish(out, &room, data, Some((conn, &identity)), echo, ephemeral));
                let result = result.map(|offset| {
                    let body = ObjectWriter::new().str("room", &room);
                    match offset {
                        Some(offset) => body.num("offset", offset),
                        None => body,
                    }
                    .finish()
                });
                self.answer_remote(out, conn, id, result);
            }
            RoomMsg::ApiPublish { http, room, data } => {
                let response = match self.publish(out, &room, &data, None, true, false) {
                    Ok(offset) => HttpResponse::json(
                        200,
                        ObjectWriter::new().str("room", &room).num("offset", offset.unwrap_or(0)).finish(),
                    ),
                    Err(e) => HttpResponse::json_error(e.code, &e.message),
                };
                self.send(out, http.worker(), RoomMsg::HttpReply { http, response });
            }
            RoomMsg::Presence { conn, room, id } => {
                let result = self.owner_presence(conn, &room);
                self.answer_remote(out, conn, id, result);
            }
            RoomMsg::History { conn, room, limit, id } => {
                let result = self.owner_history(conn, &room, limit);
                self.answer_remote(out, conn, id, result);
            }
            RoomMsg::RelayJoin { conn, room } => {
                let members = self.relay.members(&room);
                let admitted = members < self.config.max_members_per_room
                    && (members > 0 || RoomCounts::take(&self.counts.relay_rooms, self.config.max_rooms));
                if admitted {
                    self.relay.admit(&room, conn.worker(), self.mesh.workers());
                } else {
                    self.send(out, conn.worker(), RoomMsg::RelayRefused { conn });
                }
            }
            RoomMsg::RelayLeave { conn, room } => {
                if self.relay.release(&room, conn.worker()) {
                    self.counts.relay_rooms.fetch_sub(1, Ordering::Relaxed);
                }
            }
            RoomMsg::RelayForward { room, kind, data } => {
                let mask = self.relay.workers_with_members(&room);
                self.send_each(out, mask, || RoomMsg::RelayDeliver { room: room.clone(), kind, data: data.clone() });
            }
            RoomMsg::Gather { token, reply_to, summary } => {
                let part = summary.then(|| self.owned_summary());
                self.send(out, reply_to, RoomMsg::Gathered { token, part });
            }

            // To a member's worker.
            RoomMsg::Reply { conn, id, result } => self.answer(out, conn, id.as_deref(), result),
            RoomMsg::Joined { conn, room, presence, id, result } => {
                let Some(client) = self.clients.get_mut(&conn) else {
                    return; // closed meanwhile: the owner gets (or got) its `Leave`
                };
                if let Some(i) = client.joining.iter().position(|r| **r == *room) {
                    client.joining.swap_remove(i);
                }
                if result.is_ok() {
                    if !client.rooms.contains(&room) {
                        client.rooms.push(room.clone());
                    }
                    self.local.insert(&room, conn, presence);
                }
                self.answer(out, conn, id.as_deref(), result);
            }
            RoomMsg::Left { conn, room, id } => {
                if let Some(client) = self.clients.get_mut(&conn) {
                    client.rooms.retain(|r| *r != room);
                }
                self.local.remove(&room, conn);
                self.answer(out, conn, id.as_deref(), Ok(ObjectWriter::new().str("room", &room).finish()));
            }
            RoomMsg::Deliver { room, audience, except, payload } => {
                let Some(to) = self.local.audience(&room, audience) else { return };
                // Nobody here but the excluded member: nothing to send.
                if to.iter().any(|&c| Some(c) != except) {
                    out.broadcast(to, except, MessageKind::Text, payload);
                }
            }
            RoomMsg::RelayDeliver { room, kind, data } => {
                if let Some(to) = self.relay.receivers(&room) {
                    out.broadcast(to, None, kind, data);
                }
            }
            RoomMsg::RelayRefused { conn } => {
                // Not counted by the owner: no `RelayLeave` follows.
                self.relay.leave_local(conn);
                out.close(conn, CloseCode::TRY_AGAIN_LATER, "relay room full");
            }
            RoomMsg::HttpReply { http, response } => out.respond(http, response),
            RoomMsg::Gathered { token, part } => self.gathered(out, token, part),
        }
    }
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

/// 401 on the upgrade, with the reason (never the token). RFC 6750 §3.1: no error code
/// when no token came at all.
fn unauthorized(e: AuthError) -> HttpResponse {
    let challenge = match e {
        AuthError::MissingToken => "Bearer",
        _ => "Bearer error=\"invalid_token\"",
    };
    HttpResponse::text(401, &format!("{e}\n")).with_header("WWW-Authenticate", challenge)
}

/// Checks a request against the connection's permissions (-> 403). `leave` and `ping`
/// need none; `history` reads a room, as joining it does.
fn permitted(permissions: &Permissions, request: &Request<'_>) -> Result<(), RequestError> {
    let denied = match request {
        Request::Join { room, presence, .. } => {
            if !permissions.may_join(room) {
                Some("not allowed to join this room")
            } else if *presence && !permissions.may_presence(room) {
                Some("not allowed to see presence in this room")
            } else {
                None
            }
        }
        Request::Publish { room, .. } => (!permissions.may_publish(room)).then_some("not allowed to publish here"),
        Request::Presence { room } => {
            (!permissions.may_presence(room)).then_some("not allowed to see presence in this room")
        }
        Request::History { room, .. } => (!permissions.may_join(room)).then_some("not allowed to read this room"),
        Request::Leave { .. } | Request::Ping | Request::Auth { .. } => None,
    };
    denied.map_or(Ok(()), |message| Err(RequestError::new(403, message)))
}

/// Whether `new` permissions allow staying in every room a session is in or joining:
/// joining it, and watching its presence where `old` allowed that (the client may have
/// joined with presence).
fn covers(new: &Permissions, old: &Permissions, rooms: &[Arc<str>], joining: &[String]) -> bool {
    let mut names = rooms.iter().map(|r| &**r).chain(joining.iter().map(String::as_str));
    names.all(|room| new.may_join(room) && (new.may_presence(room) || !old.may_presence(room)))
}

impl Handler for Rooms {
    type Admission = Admission;

    fn accept(&mut self, request: &UpgradeRequest, _now: Now) -> Result<Admission, HttpResponse> {
        let path = request.path.split('?').next().unwrap_or_default();
        if !self.config.path.is_empty() && path == self.config.path {
            return self.admit(request);
        }
        let Some(room) = self.relay_room(path) else {
            return Err(HttpResponse::text(404, "no WebSocket endpoint at this path\n"));
        };
        // The relay has no `auth` op: a required token comes with the upgrade.
        let admission = match self.admit(request)? {
            Admission::Pending => return Err(unauthorized(AuthError::MissingToken)),
            admission => admission,
        };
        let permissions = match &admission {
            Admission::Authenticated(grant) => &grant.permissions,
            _ => &self.anon,
        };
        if !permissions.may_join(room) {
            return Err(HttpResponse::text(403, "not allowed to join this room\n"));
        }
        // Limits are checked here when this worker owns the room (always, with one
        // worker); otherwise the owner checks and closes the connection with 1013.
        if self.owner(room) == self.mesh.me() {
            let members = self.relay.members(room);
            if members >= self.config.max_members_per_room {
                return Err(HttpResponse::text(503, "relay room full\n"));
            }
            if members == 0 && self.counts.relay_rooms.load(Ordering::Relaxed) >= self.config.max_rooms {
                return Err(HttpResponse::text(503, "server full: too many rooms\n"));
            }
        }
        Ok(admission)
    }

    fn on_open(&mut self, out: &mut Outbox, conn: ConnId, request: &UpgradeRequest, admission: Admission) {
        let path = request.path.split('?').next().unwrap_or_default();
        if self.config.path.is_empty() || path != self.config.path {
            if let Some(room) = self.relay_room(path) {
                let room: Arc<str> = room.into();
                let session = match &admission {
                    Admission::Authenticated(grant) => RelaySession {
                        may_publish: grant.permissions.may_publish(&room),
                        valid_until: Some(grant.valid_until),
                    },
                    _ => RelaySession { may_publish: self.anon.may_publish(&room), valid_until: None },
                };
                if let Some(until) = session.valid_until {
                    self.expiries.insert((until, conn));
                }
                if !session.may_publish || session.valid_until.is_some() {
                    self.relay_sessions.insert(conn, session);
                }
                self.relay.join_local(conn, &room);
                let owner = self.owner(&room);
                self.send(out, owner, RoomMsg::RelayJoin { conn, room });
                return;
            }
        }
        self.next_client += 1;
        let client_id: Arc<str> = format!("{}-{}", self.node, base36(self.next_client)).into();
        let now = out.now().mono;
        let (user, permissions, valid_until, auth_deadline) = match admission {
            Admission::Anonymous => (None, self.anon.clone(), None, None),
            Admission::Pending => (None, self.anon.clone(), None, Some(now + self.config.auth_timeout)),
            Admission::Authenticated(grant) => (Some(grant.user), grant.permissions, Some(grant.valid_until), None),
        };
        match auth_deadline {
            // The welcome waits for a valid `auth`.
            Some(deadline) => {
                self.auth_deadlines.insert((deadline, conn));
            }
            None => out.send(conn, MessageKind::Text, Bytes::from(protocol::welcome(&client_id, user.as_deref()))),
        }
        if let Some(until) = valid_until {
            self.expiries.insert((until, conn));
        }
        let client = Client {
            identity: Identity { client: client_id, user },
            permissions,
            valid_until,
            auth_deadline,
            rooms: Vec::new(),
            joining: Vec::new(),
            publishes: TokenBucket::full(self.config.publish_burst, now),
            auths: TokenBucket::full(f64::from(self.config.auth_per_minute), now),
            strikes: 0,
            strikes_since: now,
        };
        self.clients.insert(conn, client);
    }

    fn on_message(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Bytes) {
        if let Some(room) = self.relay.room_of(conn).cloned() {
            if data.len() > self.config.max_message_bytes {
                // The relay has no reply channel for an error.
                out.close(conn, CloseCode::MESSAGE_TOO_BIG, "message over the relay limit");
                return;
            }
            if self.relay_sessions.get(&conn).is_some_and(|s| !s.may_publish) {
                out.close(conn, CloseCode::POLICY_VIOLATION, "not allowed to publish in this room");
                return;
            }
            let owner = self.owner(&room);
            return self.send(out, owner, RoomMsg::RelayForward { room, kind, data });
        }
        match kind {
            MessageKind::Binary => {
                let e = RequestError::bad_request("binary frames are not part of wsedge.v1");
                self.answer(out, conn, None, Err(e));
            }
            MessageKind::Text => {
                // The codec validated UTF-8; this cannot fail.
                let text = std::str::from_utf8(&data).unwrap_or_default();
                match protocol::parse_request(text) {
                    (id, Ok(request)) => self.request(out, conn, &data, id, request),
                    (id, Err(e)) => self.answer(out, conn, id, Err(e)),
                }
            }
        }
    }

    fn on_close(&mut self, out: &mut Outbox, conn: ConnId) {
        if let Some(room) = self.relay.leave_local(conn) {
            let owner = self.owner(&room);
            self.send(out, owner, RoomMsg::RelayLeave { conn, room });
        }
        if let Some(until) = self.relay_sessions.remove(&conn).and_then(|s| s.valid_until) {
            self.expiries.remove(&(until, conn));
        }
        let Some(client) = self.clients.remove(&conn) else { return };
        if let Some(until) = client.valid_until {
            self.expiries.remove(&(until, conn));
        }
        if let Some(deadline) = client.auth_deadline {
            self.auth_deadlines.remove(&(deadline, conn));
        }
        // Rooms still being joined too: the owner handles the join before this leave.
        let names = client.rooms.iter().map(|r| r.to_string()).chain(client.joining);
        for room in names {
            self.local.remove(&room, conn);
            let owner = self.owner(&room);
            self.send(out, owner, RoomMsg::Leave { conn, room, id: None, gone: true });
        }
    }

    fn on_http(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        request: &PlainRequest,
        body: &[u8],
        metrics: &Metrics,
    ) -> Option<HttpResponse> {
        api::serve(self, out, conn, request, body, metrics)
    }

    fn on_tick(&mut self, out: &mut Outbox) {
        self.enforce_sessions(out);
        let now = out.now().mono;
        let ttl = self.config.history_ttl;
        let mut freed = 0;
        let before = self.rooms.len();
        self.rooms.retain(|_, room| {
            freed += room.expire(now, ttl);
            // Memory must not grow with rooms used once: an empty room goes once it has
            // been empty for the TTL and its history has aged out (its epoch with it). A
            // message the backend published into the empty room is kept its full TTL.
            let idle = room.emptied_at.is_some_and(|t| now.saturating_duration_since(t) >= ttl);
            !(idle && room.history_len() == 0)
        });
        self.counts.rooms.fetch_sub(before - self.rooms.len(), Ordering::Relaxed);
        self.history_bytes = self.history_bytes.saturating_sub(freed);
    }

    fn on_wake(&mut self, out: &mut Outbox) {
        let batches: Vec<Vec<RoomMsg>> = self.mesh.receive().collect();
        for msg in batches.into_iter().flatten() {
            self.receive(out, msg);
        }
    }

    fn end_turn(&mut self) {
        self.mesh.flush();
    }

    fn accepting_input(&self) -> bool {
        !self.mesh.congested()
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
    fn an_empty_room_lives_until_its_last_message_ages_out() {
        let ttl = Duration::from_secs(300);
        let mut rooms = Rooms::new(RoomsConfig { history_ttl: ttl, ..RoomsConfig::default() });
        let t0 = Instant::now();
        let mut out = Outbox::new(Now { mono: t0, unix: Duration::ZERO });
        // The backend publishes into a room nobody is in (it is empty from the start).
        assert_eq!(rooms.publish(&mut out, "r", "1", None, true, false), Ok(Some(1)));
        out.set_now(Now { mono: t0 + Duration::from_secs(200), unix: Duration::ZERO });
        assert_eq!(rooms.publish(&mut out, "r", "2", None, true, false), Ok(Some(2)));
        out.set_now(Now { mono: t0 + Duration::from_secs(301), unix: Duration::ZERO });
        rooms.on_tick(&mut out);
        assert_eq!(rooms.room_count(), 1, "message 2 is 101 s old: the room and its epoch stay");
        out.set_now(Now { mono: t0 + Duration::from_secs(500), unix: Duration::ZERO });
        rooms.on_tick(&mut out);
        assert_eq!(rooms.room_count(), 0, "empty and nothing kept: dropped");
    }

    #[test]
    fn history_memory_stays_within_the_global_budget() {
        let budget = 10_000;
        let mut rooms = Rooms::new(RoomsConfig { max_history_bytes: budget, ..RoomsConfig::default() });
        let mut out = Outbox::new(Now::read());
        let data = format!("\"{}\"", "x".repeat(300));
        for i in 0..500 {
            let room = format!("room-{}", i % 50);
            assert!(rooms.publish(&mut out, &room, &data, None, true, false).is_ok());
            let held: usize = rooms.rooms.values().map(Room::history_bytes).sum();
            assert_eq!(held, rooms.history_bytes, "the running total matches the rooms");
            assert!(held <= budget, "{held} bytes kept over a {budget} budget");
        }
        // Expiry frees the running total too.
        out.set_now(out.now().after(Duration::from_secs(301)));
        rooms.on_tick(&mut out);
        assert_eq!(rooms.history_bytes, 0);
    }
}
