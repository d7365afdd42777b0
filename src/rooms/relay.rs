//! The raw relay: every connection joins the room named by its URL path, and every text or
//! binary message a member sends goes verbatim to all members, the sender included.
//!
//! No JSON, no offsets, no history: game state, cursors and sensor feeds. Like a room, a
//! relay room has an owner worker; a member's message goes to the owner, which hands it to
//! every worker with members (in one order for all), and each worker broadcasts it to its
//! members through the same fan-out path as room publishes (framed and compressed once).
//! The same slow-consumer and size limits apply. Output to other workers leaves through
//! [`Relay::poll`], as the engine's does.
//!
//! With the Redis engine a relay room spans nodes: its owner on each node subscribes the
//! room's relay channel while it has members, and hands a member's message to Redis
//! instead of to its workers; every node (this one too) delivers what comes on the
//! channel, so all members see one order. While Redis is unreachable the room works on
//! this node alone. Member and room limits stay per node.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;

use super::auth::Permissions;
use super::count::SharedCount;
use super::engine::redis::{Backplane, Inbound, Inbox, Part};
use super::error::{close_reason, UpgradeRefusal};
use super::local::{Audience, LocalRooms};
use super::sessions::{Admission, Sessions};
use super::RoomsConfig;
use crate::proto::{CloseCode, MessageKind};
use crate::server::{ConnId, Outbox, MAX_WORKERS};

/// What the relay on one worker tells the relay on another.
#[derive(Debug)]
pub enum Msg {
    /// To the owner: count a member on its worker.
    Join {
        /// The member.
        conn: ConnId,
        /// Its relay room.
        room: Arc<str>,
    },
    /// To the owner: uncount a member.
    Leave {
        /// The member.
        conn: ConnId,
        /// Its relay room.
        room: Arc<str>,
    },
    /// To the owner: a member's message, for every worker with members.
    Forward {
        /// The relay room.
        room: Arc<str>,
        /// Text or binary, as sent.
        kind: MessageKind,
        /// The message, verbatim.
        data: Bytes,
    },
    /// To a worker with members: broadcast to them.
    Deliver {
        /// The relay room.
        room: Arc<str>,
        /// Text or binary, as sent.
        kind: MessageKind,
        /// The message, verbatim.
        data: Bytes,
    },
    /// To a member's worker: the room is full, close it.
    Refused {
        /// The member.
        conn: ConnId,
    },
}

/// Messages of a relay room held while its channel is being subscribed, at most.
const MAX_WAITING: usize = 1024;

/// What an upgrade's path leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'p> {
    /// The room protocol (`RoomsConfig::path`).
    Protocol,
    /// A relay room (the path under `RoomsConfig::relay_prefix`).
    Relay(&'p str),
    /// Nothing (404).
    None,
}

/// What every worker's relay shares: routing keys and the server-wide relay room count.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    router: RandomState,
    rooms: SharedCount,
}

/// A member of a relay room on this worker.
#[derive(Debug)]
struct RelayMember {
    room: Arc<str>,
    /// Decided at the upgrade from its session's permissions.
    may_publish: bool,
}

/// Relay rooms: this worker's members (member side) and the rooms it owns (owner side).
#[derive(Debug)]
pub struct Relay {
    config: Arc<RoomsConfig>,
    me: usize,
    workers: usize,
    shared: Shared,
    member_of: HashMap<ConnId, RelayMember>,
    local: LocalRooms,
    /// Owned relay rooms: members per worker.
    owned: HashMap<Arc<str>, Vec<u32>>,
    output: VecDeque<(usize, Msg)>,
    /// With the Redis engine: the link, and this worker's inbox of relay channel messages.
    link: Option<(Backplane, Inbox)>,
    /// Owned rooms whose channel is not subscribed yet: their members' messages wait, so
    /// that this node receives its own messages too.
    subscribing: HashMap<Arc<str>, (u64, Vec<Vec<u8>>)>,
}

impl Relay {
    /// The relay of worker `me` of `workers` (`link`: relay rooms span the nodes on that
    /// Redis).
    pub fn new(
        config: Arc<RoomsConfig>,
        me: usize,
        workers: usize,
        shared: Shared,
        link: Option<(Backplane, Inbox)>,
    ) -> Self {
        Relay {
            config,
            me,
            workers: workers.max(1),
            shared,
            member_of: HashMap::new(),
            local: LocalRooms::default(),
            owned: HashMap::new(),
            output: VecDeque::new(),
            link,
            subscribing: HashMap::new(),
        }
    }

    /// What an upgrade's path (without its query) leads to.
    pub fn endpoint<'p>(&self, path: &'p str) -> Endpoint<'p> {
        if !self.config.path.is_empty() && path == self.config.path {
            return Endpoint::Protocol;
        }
        let Some(prefix) = self.config.relay_prefix.as_deref() else { return Endpoint::None };
        match path.strip_prefix(prefix).or_else(|| (prefix == "/" && path.is_empty()).then_some("")) {
            Some(room) => Endpoint::Relay(room),
            None => Endpoint::None,
        }
    }

    /// Relay rooms in the server (every worker's).
    pub fn room_count(&self) -> usize {
        self.shared.rooms.get()
    }

    fn owner(&self, room: &str) -> usize {
        if self.workers == 1 {
            return 0;
        }
        (self.shared.router.hash_one(room) % self.workers as u64) as usize
    }

    fn send(&mut self, out: &mut Outbox, to: usize, msg: Msg) {
        if to == self.me {
            self.receive(out, msg);
        } else {
            self.output.push_back((to, msg));
        }
    }

    /// The next message for another worker's relay.
    pub fn poll(&mut self) -> Option<(usize, Msg)> {
        self.output.pop_front()
    }

    // ---- member side ----

    /// Whether an upgrade to relay room `room` may go on: the session must allow joining
    /// it; the limits are checked here when this worker owns the room (always, with one
    /// worker), otherwise the owner checks when the member joins and closes it with 1013
    /// if full.
    pub fn check_upgrade(&self, room: &str, permissions: &Permissions) -> Result<(), UpgradeRefusal> {
        if !permissions.may_join(room) {
            return Err(UpgradeRefusal::RelayDenied);
        }
        if self.owner(room) != self.me {
            return Ok(());
        }
        let members = self.members(room);
        if members >= self.config.max_members_per_room {
            return Err(UpgradeRefusal::RelayFull);
        }
        if members == 0 && self.room_count() >= self.config.max_rooms {
            return Err(UpgradeRefusal::TooManyRelayRooms);
        }
        Ok(())
    }

    /// A new member of relay room `room`. It needs a session only to expire with its
    /// token: an anonymous member keeps none.
    pub fn open(&mut self, out: &mut Outbox, conn: ConnId, room: &str, admission: Admission, sessions: &mut Sessions) {
        let may_publish = sessions.permissions(&admission).may_publish(room);
        if matches!(admission, Admission::Authenticated(_)) {
            sessions.open(conn, admission, out.now());
        }
        let room: Arc<str> = room.into();
        self.local.insert(&room, conn, super::protocol::Presence::Off);
        self.member_of.insert(conn, RelayMember { room: room.clone(), may_publish });
        let owner = self.owner(&room);
        self.send(out, owner, Msg::Join { conn, room });
    }

    /// Whether `conn` is a relay member.
    pub fn is_member(&self, conn: ConnId) -> bool {
        self.member_of.contains_key(&conn)
    }

    /// A member's message: to the owner, for everyone.
    pub fn on_message(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Bytes) {
        let Some(member) = self.member_of.get(&conn) else { return };
        if data.len() > self.config.max_message_bytes {
            // The relay has no reply channel for an error.
            return out.close(conn, CloseCode::MESSAGE_TOO_BIG, close_reason::RELAY_TOO_BIG);
        }
        if !member.may_publish {
            return out.close(conn, CloseCode::POLICY_VIOLATION, close_reason::RELAY_PUBLISH_DENIED);
        }
        let room = member.room.clone();
        let owner = self.owner(&room);
        self.send(out, owner, Msg::Forward { room, kind, data });
    }

    /// A member is gone.
    pub fn close(&mut self, out: &mut Outbox, conn: ConnId) {
        let Some(member) = self.member_of.remove(&conn) else { return };
        self.local.remove(&member.room, conn);
        let owner = self.owner(&member.room);
        self.send(out, owner, Msg::Leave { conn, room: member.room });
    }

    // ---- owner side ----

    /// Members of an owned relay room.
    fn members(&self, room: &str) -> usize {
        self.owned.get(room).map_or(0, |shares| shares.iter().map(|&n| n as usize).sum())
    }

    /// Hands an owned room's message to every worker with members.
    fn fan_out(&mut self, out: &mut Outbox, room: Arc<str>, kind: MessageKind, data: Bytes) {
        let Some(shares) = self.owned.get(&room) else { return };
        let mask = shares.iter().enumerate().filter(|(_, &n)| n > 0).fold(0u64, |mask, (w, _)| mask | 1 << w);
        for worker in 0..self.workers.min(MAX_WORKERS) {
            if mask & (1 << worker) != 0 {
                self.send(out, worker, Msg::Deliver { room: room.clone(), kind, data: data.clone() });
            }
        }
    }

    /// What came on the relay channels of rooms this worker owns (the Redis engine).
    pub fn pump_link(&mut self, out: &mut Outbox) {
        while let Some(item) = self.link.as_ref().and_then(|(_, inbox)| inbox.next()) {
            if let (Inbound::Subscribed { room, token }, Some((backplane, _))) = (&item, &self.link) {
                // Only the latest subscription of the room says its channel is live.
                if self.subscribing.get(room).is_some_and(|(latest, _)| latest == token) {
                    for payload in self.subscribing.remove(room).map(|(_, queued)| queued).unwrap_or_default() {
                        backplane.publish_relay(room, payload);
                    }
                }
                continue;
            }
            let Inbound::Channel { room, payload } = item else { continue };
            let kind = match payload.first() {
                Some(b't') if std::str::from_utf8(&payload[1..]).is_ok() => MessageKind::Text,
                Some(b'b') => MessageKind::Binary,
                _ => {
                    log::warn!("relay room {room}: skipping a message of another shape on its channel");
                    continue;
                }
            };
            self.fan_out(out, room, kind, payload.slice(1..));
        }
    }

    /// A message from a relay (this worker's or another's).
    pub fn receive(&mut self, out: &mut Outbox, msg: Msg) {
        match msg {
            Msg::Join { conn, room } => {
                let members = self.members(&room);
                let admitted = members < self.config.max_members_per_room
                    && (members > 0 || self.shared.rooms.take(self.config.max_rooms));
                if admitted {
                    if let Some((backplane, _)) = self.link.as_ref().filter(|_| members == 0) {
                        let token = backplane.subscribe(backplane.shard_of(&room), self.me, room.clone(), Part::Relay);
                        self.subscribing.insert(room.clone(), (token, Vec::new()));
                    }
                    let shares = self.owned.entry(room).or_insert_with(|| vec![0; self.workers]);
                    if let Some(n) = shares.get_mut(conn.worker()) {
                        *n += 1;
                    }
                } else {
                    self.send(out, conn.worker(), Msg::Refused { conn });
                }
            }
            Msg::Leave { conn, room } => {
                let Some(shares) = self.owned.get_mut(&room) else { return };
                if let Some(n) = shares.get_mut(conn.worker()) {
                    *n = n.saturating_sub(1);
                }
                if shares.iter().all(|&n| n == 0) {
                    self.owned.remove(&room);
                    self.shared.rooms.release(1);
                    if let Some((backplane, _)) = &self.link {
                        backplane.unsubscribe(backplane.shard_of(&room), &room, Part::Relay);
                        self.subscribing.remove(&room);
                    }
                }
            }
            Msg::Forward { room, kind, data } => {
                if let Some((backplane, _)) = &self.link {
                    if backplane.is_up(backplane.shard_of(&room)) {
                        // Every node delivers it when it comes back on the channel.
                        let mut payload = Vec::with_capacity(data.len() + 1);
                        payload.push(if kind == MessageKind::Text { b't' } else { b'b' });
                        payload.extend_from_slice(&data);
                        match self.subscribing.get_mut(&room) {
                            Some((_, waiting)) if waiting.len() < MAX_WAITING => waiting.push(payload),
                            Some(_) => log::warn!("relay room {room}: dropping a message, its channel is not ready"),
                            None => backplane.publish_relay(&room, payload),
                        }
                        return;
                    }
                }
                self.fan_out(out, room, kind, data);
            }
            Msg::Deliver { room, kind, data } => {
                if let Some(to) = self.local.audience(&room, Audience::Members) {
                    out.broadcast(to, None, kind, data);
                }
            }
            Msg::Refused { conn } => {
                // Not counted by the owner: no `Leave` goes to it.
                if let Some(member) = self.member_of.remove(&conn) {
                    self.local.remove(&member.room, conn);
                }
                out.close(conn, CloseCode::TRY_AGAIN_LATER, close_reason::RELAY_FULL);
            }
        }
    }
}
