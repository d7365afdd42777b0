//! The engine seam: what orders a room. An [`Engine`] assigns offsets and epochs, keeps
//! history and presence, knows every member, and answers `since`; the member side
//! (`members.rs`), the backend API (`api.rs`) and the wiring (`mod.rs`) talk to it through
//! this trait only, and never know which engine it is.
//!
//! Engines: [`memory::MemoryEngine`], the default (each room lives in the memory of one
//! worker, its owner, chosen by a hash of its name; no other service needed), and
//! [`redis::RedisEngine`] (`--redis`: rooms span every node sharing the Redis).
//!
//! The shape is sans-IO, as `proto::Connection`: requests go in as method calls with the
//! time, and everything that comes out is polled ([`Engine::poll`]) by the wiring, in
//! order: events for this worker's member side, and traffic for the engine on another
//! worker (which the wiring carries over the mesh and hands to that engine's
//! [`Engine::receive`]). Nothing is answered by a return value: a publish gets its offset
//! later, in an [`Answer::Published`], as it would from a store across the network. The
//! wiring polls after every handler call and every wake-up of the worker, so an engine fed
//! by a thread of its own (a store's client) hands on what that thread sent from `poll`.
//!
//! What every engine promises, per room:
//! - **One order.** Offsets are assigned one at a time: each message of a room has the
//!   previous offset + 1 within one epoch, and every member, on whatever worker, gets the
//!   room's messages in offset order, each once.
//! - **Joins cut the stream cleanly.** A member's [`Event::Joined`] reaches its worker
//!   after every [`Event::Deliver`] of messages before the join, and before every one
//!   after it: the member side adds the member to its delivery list when `Joined` comes,
//!   so the member gets exactly the messages after its join (and `missed` holds those
//!   after `since`, up to the join).
//! - **Requests in order.** One connection's requests to one room take effect in the order
//!   they were made (a closed connection's `leave` comes after its `join` still in
//!   flight), and are answered in that order; [`Engine::sync`] is answered after
//!   everything this worker asked before it, whatever room.
//! - **Every request answered once.** Each request with a [`ReplyTo`] gets exactly one
//!   answer, an error included (an engine that cannot reach its store answers 503, never
//!   nothing): the API and the member side keep what a request waits with until then.
//! - **The engine enforces** what only it can know: membership (404 for `leave` outside
//!   the room, and with `require_membership` for `publish`, `presence`, `history`), the
//!   server-wide `max_rooms`, `max_members_per_room`, the history budget and TTL, and
//!   `max_message_bytes` for the backend API's publishes. Permissions, rate limits and
//!   per-connection limits are the member side's.
//! - **No silent gaps.** When an engine cannot know what a room's members missed (its link
//!   to a store was down), it says so with an [`Event::Reset`] for the room, never with a
//!   gap. The in-memory engine never loses continuity while a room exists: it never
//!   sends one. History that aged out is reported on the next `join` with `since`
//!   (`recovered: false`), as the contract says.

mod gather;
pub mod memory;
pub mod redis;
mod room;
pub mod route;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::error::RoomError;
use super::local::Audience;
use super::protocol::{Member, Presence, Since};
use crate::server::{ConnId, Now};

/// A request's `id`, owned (it travels to the engine and back with the answer).
pub type OwnedId = Option<Box<RawValue>>;

/// Who a connection is: its client id, and its token's `sub` as `user`. The engine keeps
/// a copy per member for presence lists and `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Unique across workers, restarts and nodes.
    pub client: Arc<str>,
    /// `None`: anonymous.
    pub user: Option<Arc<str>>,
    /// The token's `info` claim (a JSON object, compact), shown with the user.
    pub info: Option<Arc<str>>,
}

impl Identity {
    /// As the wire writes it (`{"client","user"[,"info"]}`).
    pub fn member(&self) -> Member<'_> {
        Member { client: Some(&self.client), user: self.user.as_deref(), info: self.info.as_deref() }
    }
}

/// Who waits for an answer.
#[derive(Debug, Clone)]
pub enum ReplyTo {
    /// A member's request; `id` is echoed in the reply.
    Member {
        /// The asking connection.
        conn: ConnId,
        /// The request's `id`.
        id: OwnedId,
    },
    /// A backend call (`POST /api/publish`, `GET /api/rooms`, `GET /metrics`) waiting on
    /// this HTTP connection.
    Http(ConnId),
}

impl ReplyTo {
    /// The worker whose member side (or API) takes the answer.
    pub fn worker(&self) -> usize {
        match self {
            ReplyTo::Member { conn, .. } | ReplyTo::Http(conn) => conn.worker(),
        }
    }
}

/// A `join`.
#[derive(Debug)]
pub struct Join {
    /// The joining connection.
    pub conn: ConnId,
    /// Who it is (copied into presence lists and events).
    pub identity: Identity,
    /// The room (a valid name).
    pub room: String,
    /// Which join and leave events of others it receives.
    pub presence: Presence,
    /// Where its last session left off, to recover from.
    pub since: Option<Since>,
    /// The request's `id`.
    pub id: OwnedId,
}

/// A `leave`, or a closed connection leaving every room it was in.
#[derive(Debug)]
pub struct Leave {
    /// The leaving connection.
    pub conn: ConnId,
    /// The room.
    pub room: String,
    /// The request's `id`.
    pub id: OwnedId,
    /// The connection is gone: nobody to answer (not even "not a member").
    pub gone: bool,
}

/// A `publish`, or a backend's `POST /api/publish`.
#[derive(Debug)]
pub struct Publish {
    /// Who is answered with the offset.
    pub reply: ReplyTo,
    /// The publishing member and who it is (`None`: the backend API, which needs no
    /// membership and is shown as `{"client":null,"user":null}`).
    pub from: Option<(ConnId, Identity)>,
    /// The room (a valid name).
    pub room: String,
    /// The message's `data`: raw JSON text, embedded verbatim in the push.
    pub data: Bytes,
    /// False: the publisher does not receive its own message.
    pub echo: bool,
    /// True: no offset, not kept in history (typing indicators, cursors).
    pub ephemeral: bool,
    /// The idempotency key: a publish whose key is still in the room's history window is
    /// answered with the original offset (`duplicate`) and not published again. Ignored
    /// for an ephemeral publish (it is not kept).
    pub key: Option<Box<str>>,
}

/// A successful join, as the member side answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRoom {
    /// The room's current epoch.
    pub epoch: Arc<str>,
    /// The room's last offset at the join.
    pub offset: u64,
    /// Members after the join.
    pub members: usize,
    /// `since` was given and every message after it is in `missed`.
    pub recovered: bool,
    /// The kept messages after `since` (each the exact push members received), in order.
    pub missed: Vec<Bytes>,
}

/// The rooms an engine holds, for `GET /api/rooms` and the room gauges of `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoomsSummary {
    /// Each room: (name, members, last offset).
    pub rooms: Vec<(Arc<str>, usize, u64)>,
    /// Messages kept for recovery, across rooms.
    pub history_messages: usize,
    /// Bytes of those messages.
    pub history_bytes: usize,
}

impl RoomsSummary {
    /// Adds another part (another worker's rooms) to this one.
    pub fn absorb(&mut self, part: RoomsSummary) {
        self.rooms.extend(part.rooms);
        self.history_messages += part.history_messages;
        self.history_bytes += part.history_bytes;
    }
}

/// The answer to a request, for whoever asked ([`ReplyTo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The message got `offset` (`None`: ephemeral).
    Published {
        /// The room.
        room: String,
        /// Its offset.
        offset: Option<u64>,
        /// Its key was seen already: `offset` is the original's, nothing was published.
        duplicate: bool,
    },
    /// The room's members.
    Presence {
        /// The room.
        room: String,
        /// Who is in it.
        members: Vec<Identity>,
    },
    /// The room's last kept messages.
    History {
        /// The room.
        room: String,
        /// Its epoch.
        epoch: Arc<str>,
        /// Its last offset.
        offset: u64,
        /// The kept messages (exact pushes), oldest first.
        messages: Vec<Bytes>,
    },
    /// Everything asked before the `sync` has been done (the `ping` reply).
    Synced,
    /// Every room.
    Rooms(RoomsSummary),
}

/// What an engine tells a worker's member side.
#[derive(Debug, Clone)]
pub enum Event {
    /// The answer to a `join`: on success the member joins the delivery list.
    Joined {
        /// The joining connection.
        conn: ConnId,
        /// The request's `id`.
        id: OwnedId,
        /// The room.
        room: Arc<str>,
        /// Which presence events it asked for.
        presence: Presence,
        /// The join, or why not.
        result: Result<JoinedRoom, RoomError>,
    },
    /// The answer to a successful `leave`: the member leaves the delivery list.
    Left {
        /// The leaving connection.
        conn: ConnId,
        /// The request's `id`.
        id: OwnedId,
        /// The room.
        room: Arc<str>,
    },
    /// The answer to any other request (and a `leave` refused).
    Answer {
        /// Who asked.
        to: ReplyTo,
        /// The answer, or why not.
        result: Result<Answer, RoomError>,
    },
    /// A message (or presence event, for `Audience::Watchers`) for this worker's members
    /// of `room`, all but `except`.
    Deliver {
        /// The room.
        room: Arc<str>,
        /// Members, or only those watching presence.
        audience: Audience,
        /// A member not to send it to (the publisher with `echo: false`; the joiner of
        /// its own join event).
        except: Option<ConnId>,
        /// The push, serialized once for every receiver.
        payload: Bytes,
    },
    /// Continuity lost: this worker's members of `room` cannot know what they missed and
    /// must reload from `epoch`/`offset` (an engine whose link to its store was down).
    Reset {
        /// The room.
        room: Arc<str>,
        /// Its epoch now.
        epoch: Arc<str>,
        /// Its last offset now.
        offset: u64,
    },
}

/// Engine traffic between the workers of one node (opaque outside the engines): a room's
/// requests to its owner worker, events back (`route.rs`).
pub type EngineMsg = route::Msg;

/// What [`Engine::poll`] hands the wiring.
#[derive(Debug)]
pub enum Output {
    /// For this worker's member side (or API, for [`ReplyTo::Http`] answers).
    Event(Event),
    /// For the engine on worker `.0` (over the mesh, in order).
    Send(usize, EngineMsg),
}

/// What orders rooms: the seam between the member side and where rooms live. See the
/// module header for what an engine promises.
pub trait Engine: fmt::Debug + Send {
    /// Adds `join.conn` to `join.room`, creating the room (its epoch) if need be, within
    /// `max_rooms` and `max_members_per_room` (503). Answered with [`Event::Joined`]
    /// (with `missed` after `join.since`, and `recovered`).
    fn join(&mut self, now: Now, join: Join);
    /// Removes a member. Answered with [`Event::Left`], or an error [`Event::Answer`]
    /// (404) unless `gone`.
    fn leave(&mut self, now: Now, leave: Leave);
    /// Orders a message: answered with [`Answer::Published`], delivered to members
    /// (all but the publisher without `echo`) as [`Event::Deliver`]. A member's publish
    /// needs membership (404, with `require_membership`); the backend's creates the room.
    fn publish(&mut self, now: Now, publish: Publish);
    /// Answered with [`Answer::Presence`]. A member's request needs membership (404, with
    /// `require_membership`); the backend's (`GET /api/presence`) reads any room (a room
    /// that does not exist has no members).
    fn presence(&mut self, now: Now, to: ReplyTo, room: String);
    /// Answered with [`Answer::History`] (`limit`: the last so many; `None`: the
    /// protocol's default). A member's request needs membership (404, with
    /// `require_membership`); the backend's reads any room that exists (else 404).
    fn history(&mut self, now: Now, to: ReplyTo, room: String, limit: Option<u64>);
    /// Answered with [`Answer::Synced`] once everything asked of the engine before it
    /// from this worker is done.
    fn sync(&mut self, now: Now, to: ReplyTo);
    /// Answered with [`Answer::Rooms`].
    fn list_rooms(&mut self, now: Now, to: ReplyTo);
    /// Time passed: history ages out, empty rooms go.
    fn tick(&mut self, now: Now);
    /// Traffic from the engine on another worker.
    fn receive(&mut self, now: Now, msg: EngineMsg);
    /// The next output, in order; `None` when there is nothing more for now.
    fn poll(&mut self) -> Option<Output>;
    /// Rooms held in this engine's memory (this worker's share).
    fn room_count(&self) -> usize;
    /// Whether the engine can take requests (an engine whose store is unreachable answers
    /// 503 meanwhile, and `/healthz` says `degraded`).
    fn healthy(&self) -> bool {
        true
    }
    /// Appends the engine's own metrics (Prometheus text) to `/metrics`.
    fn render_metrics(&self, _out: &mut String) {}
    /// The store link's counters (those `render_metrics` renders) for the admin view;
    /// `None` for an engine without a store (rooms in memory).
    fn store_link(&self) -> Option<StoreLink> {
        None
    }
    /// Every node sharing this engine's store, this one included, as each last reported
    /// itself ([`Engine::report_node`]); `None` for an engine no other node shares.
    fn nodes(&self) -> Option<Arc<[NodeReport]>> {
        None
    }
    /// Records this node's report where every node reads it (one worker per node calls
    /// it, once a tick, while [`Engine::nodes`] is `Some`).
    fn report_node(&mut self, _now: Now, _report: &NodeReport) {}
}

/// One node as it reports itself to the others sharing a store, for their admin views:
/// its transport counters summed over its workers (totals since its start: a reader takes
/// rates from two reports) and its link to the store.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NodeReport {
    /// Random per process: a restarted node is a new one.
    pub id: String,
    /// The operator's name for it (`--node-name`).
    pub name: String,
    /// When it reported, Unix milliseconds (its own clock).
    pub at_ms: u64,
    /// When it started, Unix milliseconds.
    pub started_ms: u64,
    /// Its workers.
    pub workers: u64,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Open event streams.
    pub streams: u64,
    /// Messages received from clients.
    pub messages_in: u64,
    /// Messages sent to clients (deliveries).
    pub messages_out: u64,
    /// Microseconds its loops spent working, over every worker (1,000,000 a second is
    /// one core).
    pub busy_us: u64,
    /// Its link to the store.
    pub store: StoreLink,
}

/// An engine's link to its store as of now (the same counters as its `/metrics` lines).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct StoreLink {
    /// Every shard of the store reachable.
    pub up: bool,
    /// Round trips (pipelined batches) so far.
    pub round_trips: u64,
    /// Their total time, microseconds.
    #[serde(rename = "round_trip_us")]
    pub round_trip_micros: u64,
    /// Commands sent and not answered yet.
    pub in_flight: u64,
    /// Connections made again after a loss.
    pub reconnects: u64,
}
