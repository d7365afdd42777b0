//! The Redis engine (`wsedge serve --redis URL`): rooms, presence and history live in
//! Redis and span every node started with the same Redis; several URLs spread rooms over
//! several Redis instances (shards) by a hash of the room name.
//!
//! How it meets the workers: within a node, a room still has one owner worker
//! (`route.rs`), which follows it in Redis (`room.rs`): it subscribes the room's channel
//! once for the whole node, orders what comes, and fans each message out to the workers
//! with members, as the in-memory engine does. The owner talks to Redis through the link
//! threads (`link.rs`: one command and one channel connection per shard), whose replies
//! and channel messages come back through the worker's inbox and doorbell; `poll` hands
//! them on. What Redis holds and the scripts that change it: `store.rs`.
//!
//! Per publish: one script call (offset, stream, TTL, publish), one channel message per
//! node with members. Per join: one script call (presence entry, join event, epoch and
//! offset, and the messages after `since`), and on a node's first member of a room, one
//! subscribe. Presence entries expire unless their node refreshes them (every quarter of
//! `presence_ttl`, entries living half of it), so a node that dies has its members leave,
//! with leave events, within `presence_ttl`.

mod link;
mod room;
pub mod store;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::gather::{Gatherings, Question};
use super::room::Membership;
use super::route::{Msg, Router, Shared};
use super::{Answer, Engine, Event, Join, Leave, NodeReport, Output, Publish, ReplyTo};
use crate::rooms::count::SharedCount;
use crate::rooms::error::RoomError;
use crate::rooms::protocol::{self, Presence};
use crate::rooms::RoomsConfig;
use crate::server::{ConnId, Doorbell, Now};
pub use link::{Backplane, Inbound, Inbox, LinkStats, Op, Part, Reply, ROUND_TRIP_BOUNDS};
use room::{Answered, FollowedRoom, Incoming};
use store::{JoinArgs, Outgoing, Push, Retention, RoomKeys, Scripts};

/// A room this worker owns, with what the engine tracks around it.
#[derive(Debug)]
struct Owned {
    room: FollowedRoom,
    /// The token of this room's subscription ([`Backplane::subscribe`]): only its
    /// confirmation counts.
    subscription: u64,
    /// The channel is subscribed (joins wait for it: a join's reply must not come before
    /// the messages after it can).
    subscribed: bool,
    /// Joins waiting for the subscription.
    queued: Vec<Join>,
    /// Join scripts in flight.
    joining: usize,
    /// Connections that closed while their join was in flight.
    cancelled: HashSet<ConnId>,
    /// Connections with a join queued or in flight: their next requests to this room wait
    /// for it (`deferred`), so that one connection's requests take effect in order.
    pending_joins: HashSet<ConnId>,
    deferred: Vec<Msg>,
}

/// The connection whose request `msg` is (`None`: the backend's, or a closed one's).
fn requester(msg: &Msg) -> Option<ConnId> {
    match msg {
        Msg::Join(join) => Some(join.conn),
        Msg::Leave(leave) if !leave.gone => Some(leave.conn),
        Msg::Publish(publish) => publish.from.as_ref().map(|(conn, _)| *conn),
        Msg::Presence { to: ReplyTo::Member { conn, .. }, .. }
        | Msg::History { to: ReplyTo::Member { conn, .. }, .. } => Some(*conn),
        _ => None,
    }
}

/// What a reply is for.
#[derive(Debug)]
enum Pending {
    /// `hold`: the publisher is a member here with `echo`: its reply waits for its message.
    Published {
        reply: ReplyTo,
        room: String,
        hold: bool,
        seq: u64,
    },
    Joined {
        room: Arc<str>,
        answered: Answered,
    },
    Read {
        room: Arc<str>,
    },
    Presence {
        to: ReplyTo,
        room: String,
    },
    History {
        to: ReplyTo,
        room: String,
    },
    Ack {
        ack: u64,
    },
    Rooms {
        gathering: u64,
    },
    /// This node's report, answered with every node's.
    Nodes,
    Nothing,
}

/// A `sync` barrier on this worker: acknowledged to `reply_to` once every shard answered
/// and every publish reply held from before it (`seq`) went out.
#[derive(Debug)]
struct Ack {
    token: u64,
    reply_to: usize,
    remaining: usize,
    seq: u64,
}

/// A publish reply waiting until the publisher's own message has been delivered here: the
/// contract has echoed messages arrive before the publish reply, and the two come from
/// Redis on different connections.
#[derive(Debug)]
struct HeldReply {
    offset: u64,
    seq: u64,
    reply: ReplyTo,
    answer: Answer,
}

/// One worker's Redis engine.
#[derive(Debug)]
pub struct RedisEngine {
    config: Arc<RoomsConfig>,
    retention: Retention,
    refresh_every: Duration,
    router: Router,
    room_count: SharedCount,
    node: String,
    next_epoch: u64,
    backplane: Backplane,
    inbox: Inbox,
    scripts: Scripts,
    rooms: HashMap<Arc<str>, Owned>,
    pending: HashMap<u64, Pending>,
    next_token: u64,
    gatherings: Gatherings,
    acks: HashMap<u64, Ack>,
    /// Barriers before a room listing: once every worker's earlier commands are done,
    /// the listing is read from Redis.
    listings: HashSet<u64>,
    held: HashMap<Arc<str>, Vec<HeldReply>>,
    /// The `seq` of every held reply (barriers wait for those before them).
    held_seqs: BTreeSet<u64>,
    /// The time of the latest call (replies are handled in `poll`, which has none).
    now: Now,
    next_refresh: Option<Instant>,
}

impl RedisEngine {
    /// The engine of worker `me` of `workers`; its epochs start with `node`. `doorbell`
    /// wakes this worker when the link has something for it.
    pub fn new(
        config: Arc<RoomsConfig>,
        node: String,
        (me, workers): (usize, usize),
        shared: &Shared,
        backplane: Backplane,
        doorbell: Doorbell,
    ) -> Self {
        let retention = Retention {
            history_size: config.history_size,
            ttl_ms: config.history_ttl.as_millis() as u64,
            presence_ms: (config.presence_ttl / 2).as_millis() as u64,
            // Rooms are spread evenly over the Redis instances: each holds its share.
            max_rooms: config.max_rooms.div_ceil(backplane.shards().max(1)),
        };
        RedisEngine {
            retention,
            refresh_every: config.presence_ttl / 4,
            config,
            router: Router::new(me, workers, shared.router.clone()),
            room_count: shared.room_count.clone(),
            node,
            next_epoch: 0,
            inbox: backplane.attach(me, doorbell),
            backplane,
            scripts: Scripts::default(),
            rooms: HashMap::new(),
            pending: HashMap::new(),
            next_token: 0,
            gatherings: Gatherings::default(),
            acks: HashMap::new(),
            listings: HashSet::new(),
            held: HashMap::new(),
            held_seqs: BTreeSet::new(),
            now: Now::read(),
            next_refresh: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.now.unix.as_millis() as u64
    }

    /// An epoch for a room Redis does not have (it keeps the first one given).
    fn new_epoch(&mut self) -> String {
        self.next_epoch += 1;
        format!("{}.{}", self.node, protocol::base36(self.next_epoch))
    }

    fn request(&mut self, shard: usize, op: Op, pending: Pending) {
        let token = self.next_token;
        self.next_token += 1;
        self.pending.insert(token, pending);
        self.backplane.request(shard, self.router.me(), token, op);
    }

    fn send(&mut self, now: Now, to: usize, msg: Msg) {
        if let Some(msg) = self.router.send(to, msg) {
            self.handle(now, msg);
        }
    }

    fn route(&mut self, now: Now, msg: Msg) {
        let owner = msg.room().map_or(self.router.me(), |room| self.router.owner(room));
        self.send(now, owner, msg);
    }

    fn handle(&mut self, now: Now, msg: Msg) {
        self.now = now;
        let waits = |o: &Owned| requester(&msg).is_some_and(|conn| o.pending_joins.contains(&conn));
        if let Some(owned) = msg.room().and_then(|room| self.rooms.get_mut(room)).filter(|o| waits(o)) {
            owned.deferred.push(msg);
            return;
        }
        match msg {
            Msg::Join(join) => self.owner_join(join),
            Msg::Leave(leave) => self.owner_leave(leave),
            Msg::Publish(publish) => self.owner_publish(publish),
            Msg::Presence { to, room } => {
                if let Err(e) = self.readable(&to, &room) {
                    return self.router.answer(to, Err(e));
                }
                let cmd = self.scripts.presence(&RoomKeys::new(&room), self.now_ms());
                let shard = self.backplane.shard_of(&room);
                self.request(shard, Op::Command(cmd), Pending::Presence { to, room });
            }
            Msg::History { to, room, limit } => {
                if let Err(e) = self.readable(&to, &room) {
                    return self.router.answer(to, Err(e));
                }
                let limit = usize::try_from(limit.unwrap_or(protocol::DEFAULT_HISTORY_LIMIT)).unwrap_or(usize::MAX);
                let last = Some(limit.min(self.config.history_size));
                let cmd = self.scripts.read(&RoomKeys::new(&room), None, 0, last, self.now_ms());
                let shard = self.backplane.shard_of(&room);
                self.request(shard, Op::Command(cmd), Pending::History { to, room });
            }
            Msg::Gather { token, reply_to, .. } => {
                // A barrier: acknowledged once every shard answered what came before it.
                let ack = self.next_token;
                self.acks.insert(ack, Ack { token, reply_to, remaining: self.backplane.shards(), seq: ack });
                for shard in 0..self.backplane.shards() {
                    self.request(shard, Op::Command(redis::cmd("PING")), Pending::Ack { ack });
                }
            }
            Msg::Gathered { token, part } => {
                let Some((to, answer)) = self.gatherings.part(token, part) else { return };
                if self.listings.remove(&token) {
                    self.read_rooms(to);
                } else {
                    self.router.answer(to, Ok(answer));
                }
            }
            Msg::Event(event) => self.router.emit(self.router.me(), event),
        }
    }

    /// A member's `presence` and `history` need membership here (with
    /// `require_membership`); the backend's read any room.
    fn readable(&self, to: &ReplyTo, room: &str) -> Result<(), RoomError> {
        let ReplyTo::Member { conn, .. } = to else { return Ok(()) };
        let member = self.rooms.get(room).is_some_and(|o| o.room.roster().contains(*conn));
        if self.config.require_membership && !member {
            return Err(RoomError::NotMember);
        }
        Ok(())
    }

    fn owner_join(&mut self, join: Join) {
        let shard = self.backplane.shard_of(&join.room);
        let refuse = |router: &mut Router, join: Join, e: RoomError| {
            let event = Event::Joined {
                conn: join.conn,
                id: join.id,
                room: join.room.into(),
                presence: join.presence,
                result: Err(e),
            };
            router.emit(join.conn.worker(), event);
        };
        if !self.backplane.is_up(shard) {
            return refuse(&mut self.router, join, RoomError::BackplaneUnavailable);
        }
        if !self.rooms.contains_key(join.room.as_str()) {
            if !self.room_count.take(self.config.max_rooms) {
                return refuse(&mut self.router, join, RoomError::TooManyRooms);
            }
            let name: Arc<str> = join.room.as_str().into();
            let room = FollowedRoom::new(name.clone(), shard, self.router.workers());
            let subscription = self.backplane.subscribe(shard, self.router.me(), name.clone(), Part::Engine);
            let owned = Owned {
                room,
                subscription,
                subscribed: false,
                queued: Vec::new(),
                joining: 0,
                cancelled: HashSet::new(),
                pending_joins: HashSet::new(),
                deferred: Vec::new(),
            };
            self.rooms.insert(name, owned);
        }
        if let Some(owned) = self.rooms.get_mut(join.room.as_str()) {
            owned.pending_joins.insert(join.conn);
        }
        match self.rooms.get_mut(join.room.as_str()) {
            Some(owned) if !owned.subscribed => owned.queued.push(join),
            Some(_) => self.send_join(join),
            None => refuse(&mut self.router, join, RoomError::RoomUnavailable),
        }
    }

    fn send_join(&mut self, join: Join) {
        let Join { conn, identity, room, presence, since, id } = join;
        let mut member_json = String::new();
        protocol::push_member(&mut member_json, identity.member());
        let event = protocol::presence_event("join", &room, identity.member(), Presence::Connections);
        let args = JoinArgs {
            client: &identity.client,
            member_json: &member_json,
            event: &event,
            since: since.as_ref().map(|s| (&*s.epoch, s.offset)),
            max_members: self.config.max_members_per_room,
        };
        let epoch = self.new_epoch();
        let cmd = self.scripts.join(&RoomKeys::new(&room), &epoch, args, self.retention, self.now_ms());
        let Some(owned) = self.rooms.get_mut(room.as_str()) else { return };
        owned.joining += 1;
        owned.room.expect_join(identity.client.clone());
        let (shard, name) = (owned.room.shard, owned.room.name.clone());
        let membership = Membership { presence, identity };
        let answered = Answered { conn, id, presence, since, membership, members: None };
        self.request(shard, Op::Command(cmd), Pending::Joined { room: name, answered });
    }

    fn owner_leave(&mut self, leave: Leave) {
        let Leave { conn, room, id, gone } = leave;
        let now_ms = self.now_ms();
        let Some(owned) = self.rooms.get_mut(room.as_str()) else {
            if !gone {
                self.router.answer(ReplyTo::Member { conn, id }, Err(RoomError::NotMember));
            }
            return;
        };
        let name = owned.room.name.clone();
        match owned.room.remove(conn) {
            Some(membership) => {
                let client = membership.identity.client.clone();
                let cmd = self.scripts.leave(&RoomKeys::new(&name), &name, &client, now_ms);
                let shard = owned.room.shard;
                if !gone && self.backplane.is_up(shard) {
                    // Answered when the leave's marker passes: after every event before it.
                    owned.room.expect_leave(client, conn, id);
                } else if !gone {
                    self.router.emit(conn.worker(), Event::Left { conn, id, room: name.clone() });
                }
                self.request(shard, Op::Command(cmd), Pending::Nothing);
            }
            None if gone => {
                // Closed while joining: the join is dropped when it is answered.
                owned.deferred.retain(|m| requester(m) != Some(conn));
                if let Some(i) = owned.queued.iter().position(|j| j.conn == conn) {
                    owned.queued.swap_remove(i);
                    owned.pending_joins.remove(&conn);
                } else if owned.pending_joins.contains(&conn) {
                    owned.cancelled.insert(conn);
                }
            }
            None => self.router.answer(ReplyTo::Member { conn, id }, Err(RoomError::NotMember)),
        }
        self.drop_if_unused(&name);
    }

    /// Forgets a room nobody here is in or joining: unsubscribed, no longer counted.
    fn drop_if_unused(&mut self, name: &str) {
        let unused = self.rooms.get(name).is_some_and(|o| {
            o.room.roster().is_empty()
                && o.joining == 0
                && o.queued.is_empty()
                && o.deferred.is_empty()
                && !o.room.has_waiting()
        });
        if unused {
            if let Some(owned) = self.rooms.remove(name) {
                self.backplane.unsubscribe(owned.room.shard, name, Part::Engine);
                self.room_count.release(1);
            }
            self.release(name, u64::MAX);
        }
    }

    fn owner_publish(&mut self, publish: Publish) {
        let Publish { reply, from, room, data, echo, ephemeral, key } = publish;
        let result = self.check_publish(from.as_ref().map(|(conn, _)| *conn), &room, &data);
        let data = match result {
            Ok(data) => data,
            Err(e) => return self.router.answer(reply, Err(e)),
        };
        let mut head = String::from("{\"op\":\"message\",\"room\":");
        protocol::push_str(&mut head, &room);
        let mut tail = String::from(",\"from\":");
        let member = from.as_ref().map_or(protocol::Member::BACKEND, |(_, who)| who.member());
        protocol::push_member(&mut tail, member);
        tail.push_str(",\"data\":");
        tail.push_str(data);
        tail.push('}');
        let except = if echo { None } else { from.as_ref().map(|(_, who)| who.client.clone()) };
        let here = from
            .as_ref()
            .is_some_and(|(conn, _)| self.rooms.get(room.as_str()).is_some_and(|o| o.room.roster().contains(*conn)));
        let hold = echo && here;
        let epoch = self.new_epoch();
        let push = Push { head: &head, tail: &tail };
        let key = key.as_deref().filter(|_| !ephemeral);
        let msg = Outgoing { push, ephemeral, except: except.as_deref(), key };
        let cmd = self.scripts.publish(&RoomKeys::new(&room), &epoch, msg, self.retention, self.now_ms());
        let shard = self.backplane.shard_of(&room);
        let seq = self.next_token;
        self.request(shard, Op::Command(cmd), Pending::Published { reply, room, hold, seq });
    }

    /// The checks of a publish only the engine can make; the data as text.
    fn check_publish<'a>(&self, from: Option<ConnId>, room: &str, data: &'a [u8]) -> Result<&'a str, RoomError> {
        if data.len() > self.config.max_message_bytes {
            return Err(RoomError::TooLarge { max: self.config.max_message_bytes });
        }
        let data = std::str::from_utf8(data).map_err(|_| RoomError::DataNotUtf8)?;
        if let Some(conn) = from {
            let member = self.rooms.get(room).is_some_and(|o| o.room.roster().contains(conn));
            if !member && self.config.require_membership {
                return Err(RoomError::NotMember);
            }
        }
        if !self.backplane.takes_commands(self.backplane.shard_of(room)) {
            return Err(RoomError::BackplaneUnavailable);
        }
        Ok(data)
    }

    /// Reads what `room` missed since its last delivered offset.
    fn send_read(&mut self, room: &Arc<str>) {
        let (epoch, now_ms) = (self.new_epoch(), self.now_ms());
        let Some(owned) = self.rooms.get_mut(room) else { return };
        let Some(after) = owned.room.position().map(|p| p.delivered) else { return };
        owned.room.reading = true;
        self.backplane.stats().gap_fills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cmd = self.scripts.read(&RoomKeys::new(room), Some(&epoch), after, None, now_ms);
        let shard = owned.room.shard;
        self.request(shard, Op::Command(cmd), Pending::Read { room: room.clone() });
    }

    /// Something from the link.
    fn on_inbound(&mut self, item: Inbound) {
        match item {
            Inbound::Reply { token, result } => {
                if let Some(pending) = self.pending.remove(&token) {
                    self.on_reply(pending, result);
                }
            }
            Inbound::Channel { room, payload } => self.on_channel(room, payload),
            Inbound::Subscribed { room, token } => {
                let Some(owned) = self.rooms.get_mut(&room) else { return };
                // A confirmation of an earlier subscription, undone since (the room was
                // dropped and followed again): the channel may not be live yet. A join
                // sent now could publish its marker before it is, and wait for it forever.
                if owned.subscribed || owned.subscription != token {
                    return;
                }
                owned.subscribed = true;
                for join in std::mem::take(&mut owned.queued) {
                    self.send_join(join);
                }
            }
            Inbound::Down(shard) => {
                let on_shard: Vec<Arc<str>> =
                    self.rooms.values().filter(|o| o.room.shard == shard).map(|o| o.room.name.clone()).collect();
                for room in on_shard {
                    let need_read = self.rooms.get_mut(&room).is_some_and(|o| o.room.on_link_down(&mut self.router));
                    if need_read {
                        self.send_read(&room);
                    }
                    self.settle(&room);
                }
                // Held replies wait for messages that may not come soon: send them now.
                let rooms: Vec<Arc<str>> =
                    self.held.keys().filter(|r| self.backplane.shard_of(r) == shard).cloned().collect();
                for room in rooms {
                    self.release(&room, u64::MAX);
                }
            }
            Inbound::Up(shard) => {
                let behind: Vec<Arc<str>> = self
                    .rooms
                    .values()
                    .filter(|o| o.room.shard == shard && o.room.position().is_some() && !o.room.reading)
                    .map(|o| o.room.name.clone())
                    .collect();
                for room in behind {
                    self.send_read(&room);
                }
            }
        }
    }

    fn on_channel(&mut self, room: Arc<str>, payload: Bytes) {
        let Some(msg) = store::parse_channel_message(&payload) else {
            log::warn!("room {room}: skipping a message of another shape on its channel");
            return;
        };
        let Some(owned) = self.rooms.get_mut(&room) else { return };
        let push = payload.slice_ref(msg.push.as_bytes());
        let incoming = Incoming { epoch: msg.epoch, kind: msg.kind, except: msg.except, push };
        if owned.room.on_message(&mut self.router, incoming) {
            self.send_read(&room);
        }
        self.settle(&room);
    }

    fn on_reply(&mut self, pending: Pending, result: Result<Reply, link::Down>) {
        let value = match result {
            Ok(Reply::Value(redis::Value::ServerError(e))) => {
                log::warn!("Redis refused a command: {e:?}");
                None
            }
            Ok(Reply::Value(value)) => Some(value),
            Ok(Reply::Rooms(summary)) => {
                if let Pending::Rooms { gathering } = pending {
                    self.gathered(gathering, summary);
                }
                return;
            }
            Err(link::Down) => None,
        };
        let (ttl, now_ms) = (self.retention.ttl_ms, self.now_ms());
        let unavailable = RoomError::BackplaneUnavailable;
        match pending {
            Pending::Published { reply, room, hold, seq } => {
                let published = match value.and_then(store::parse_published) {
                    Some(Ok(published)) => published,
                    Some(Err(())) => return self.router.answer(reply, Err(RoomError::TooManyRooms)),
                    None => return self.router.answer(reply, Err(unavailable)),
                };
                let (offset, duplicate) = (published.offset, published.duplicate);
                let followed = self.rooms.get_key_value(room.as_str()).map(|(k, _)| k.clone());
                let answer = Answer::Published { room, offset: (offset > 0).then_some(offset), duplicate };
                match followed {
                    // (A duplicate was delivered when it was first published.)
                    Some(key) if hold && offset > 0 && !duplicate => {
                        self.held.entry(key.clone()).or_default().push(HeldReply { offset, seq, reply, answer });
                        self.held_seqs.insert(seq);
                        self.settle(&key);
                    }
                    _ => self.router.answer(reply, Ok(answer)),
                }
            }
            Pending::Joined { room, answered } => self.on_joined(room, answered, value, ttl, now_ms),
            Pending::Read { room } => {
                let snapshot = value.and_then(|v| store::parse_snapshot(v, ttl, now_ms));
                let Some(owned) = self.rooms.get_mut(&room) else { return };
                let again = match snapshot {
                    Some(snapshot) => owned.room.on_read(&mut self.router, snapshot),
                    None => {
                        owned.room.reading = false; // tried again when the link is back
                        false
                    }
                };
                if again {
                    self.send_read(&room);
                }
                self.settle(&room);
            }
            Pending::Presence { to, room } => {
                let members = value.and_then(store::parse_members).map(|members| Answer::Presence { room, members });
                self.router.answer(to, members.ok_or(unavailable));
            }
            Pending::History { to, room } => {
                let result = match value.and_then(|v| store::parse_snapshot(v, ttl, now_ms)) {
                    Some(store::Snapshot { epoch: Some(epoch), offset, entries, .. }) => Ok(Answer::History {
                        room,
                        epoch: epoch.into(),
                        offset,
                        messages: entries.into_iter().map(|e| Bytes::from(e.push)).collect(),
                    }),
                    // No such room.
                    Some(_) if matches!(to, ReplyTo::Http(_)) => Err(RoomError::NoSuchRoom),
                    Some(_) => Err(RoomError::NotMember),
                    None => Err(unavailable),
                };
                self.router.answer(to, result);
            }
            Pending::Ack { ack } => {
                if let Some(a) = self.acks.get_mut(&ack) {
                    a.remaining = a.remaining.saturating_sub(1);
                }
                self.check_acks();
            }
            Pending::Rooms { gathering } => self.gathered(gathering, Default::default()),
            // Unanswered (Redis down): the last list stays, each node's `at_ms` telling
            // how old it is.
            Pending::Nodes => {
                if let Some(nodes) = value.and_then(store::parse_nodes) {
                    self.backplane.set_nodes(nodes);
                }
            }
            Pending::Nothing => {}
        }
    }

    fn gathered(&mut self, gathering: u64, part: super::RoomsSummary) {
        if let Some((to, answer)) = self.gatherings.part(gathering, Some(part)) {
            self.router.answer(to, Ok(answer));
        }
    }

    fn on_joined(&mut self, room: Arc<str>, answered: Answered, value: Option<redis::Value>, ttl: u64, now_ms: u64) {
        let Some(owned) = self.rooms.get_mut(&room) else { return };
        owned.joining = owned.joining.saturating_sub(1);
        let conn = answered.conn;
        let client = answered.membership.identity.client.clone();
        let error = match value.and_then(|v| store::parse_joined(v, ttl, now_ms)) {
            Some(store::Joined::Ok(_)) if owned.cancelled.remove(&conn) => {
                // Closed while joining: out of presence again.
                let cmd = self.scripts.leave(&RoomKeys::new(&room), &room, &client, now_ms);
                let shard = owned.room.shard;
                let need_read = owned.room.forget_join(&mut self.router, conn, &client);
                self.request(shard, Op::Command(cmd), Pending::Nothing);
                if need_read {
                    self.send_read(&room);
                }
                None
            }
            Some(store::Joined::Ok(snapshot)) => {
                if owned.room.on_join_reply(&mut self.router, answered, snapshot) {
                    self.send_read(&room);
                }
                self.settle(&room);
                return;
            }
            Some(store::Joined::Full) => Some(RoomError::RoomFull),
            Some(store::Joined::RoomsFull) => Some(RoomError::TooManyRooms),
            None => Some(RoomError::BackplaneUnavailable),
        };
        if let Some(e) = error {
            if let Some(owned) = self.rooms.get_mut(&room) {
                if owned.room.forget_join(&mut self.router, conn, &client) {
                    self.send_read(&room);
                }
            }
            let event = Event::Joined {
                conn,
                id: answered.id,
                room: room.clone(),
                presence: answered.presence,
                result: Err(e),
            };
            self.router.emit(conn.worker(), event);
        }
        self.settle(&room);
    }

    /// Reads every room of the cluster from Redis (each shard once) for `to`.
    fn read_rooms(&mut self, to: ReplyTo) {
        let gathering = self.gatherings.open(to, Question::Rooms, self.backplane.shards());
        for shard in 0..self.backplane.shards() {
            self.request(shard, Op::Rooms { now_ms: self.now_ms() }, Pending::Rooms { gathering });
        }
    }

    /// After each call that may deliver in `room`: counts its resets, and sends the
    /// publish replies whose messages have been delivered (all of them after a reset, or
    /// when the room is gone: their order cannot be kept any more).
    fn settle(&mut self, room: &str) {
        let resets = self.rooms.get_mut(room).map_or(0, |o| o.room.take_resets());
        if resets > 0 {
            self.backplane.stats().resets.fetch_add(resets, std::sync::atomic::Ordering::Relaxed);
        }
        let delivered = match self.rooms.get(room).and_then(|o| o.room.position()) {
            Some(position) if resets == 0 => position.delivered,
            _ => u64::MAX,
        };
        self.release(room, delivered);
        // What a connection asked after its join takes effect now, in order.
        let mut replay = Vec::new();
        if let Some(owned) = self.rooms.get_mut(room) {
            for conn in owned.room.take_settled() {
                owned.pending_joins.remove(&conn);
                let (mine, rest): (Vec<Msg>, Vec<Msg>) =
                    std::mem::take(&mut owned.deferred).into_iter().partition(|m| requester(m) == Some(conn));
                owned.deferred = rest;
                replay.extend(mine);
            }
        }
        for msg in replay {
            self.handle(self.now, msg);
        }
        self.drop_if_unused(room);
    }

    /// Sends the held publish replies of `room` up to offset `upto`.
    fn release(&mut self, room: &str, upto: u64) {
        let Some(held) = self.held.get_mut(room) else { return };
        let (ready, waiting): (Vec<HeldReply>, Vec<HeldReply>) = held.drain(..).partition(|h| h.offset <= upto);
        *held = waiting;
        if held.is_empty() {
            self.held.remove(room);
        }
        if ready.is_empty() {
            return;
        }
        for h in ready {
            self.held_seqs.remove(&h.seq);
            self.router.answer(h.reply, Ok(h.answer));
        }
        self.check_acks();
    }

    /// Acknowledges the barriers that nothing before them holds up any more.
    fn check_acks(&mut self) {
        let first_held = self.held_seqs.first().copied().unwrap_or(u64::MAX);
        let done: Vec<u64> =
            self.acks.iter().filter(|(_, a)| a.remaining == 0 && a.seq <= first_held).map(|(k, _)| *k).collect();
        for key in done {
            if let Some(a) = self.acks.remove(&key) {
                self.send(self.now, a.reply_to, Msg::Gathered { token: a.token, part: None });
            }
        }
    }

    /// Keeps this node's members present and their rooms alive; sweeps dead nodes' entries.
    fn refresh(&mut self) {
        let now_ms = self.now_ms();
        let mut cmds = Vec::with_capacity(self.rooms.len());
        for owned in self.rooms.values().filter(|o| !o.room.roster().is_empty()) {
            let members = owned.room.members().map(|m| {
                let mut json = String::new();
                protocol::push_member(&mut json, m.identity.member());
                (&*m.identity.client, json)
            });
            let keys = RoomKeys::new(&owned.room.name);
            cmds.push((
                owned.room.shard,
                self.scripts.refresh(&keys, &owned.room.name, members, self.retention, now_ms),
            ));
        }
        for (shard, cmd) in cmds {
            self.request(shard, Op::Command(cmd), Pending::Nothing);
        }
    }
}

impl Engine for RedisEngine {
    fn join(&mut self, now: Now, join: Join) {
        self.route(now, Msg::Join(join));
    }

    fn leave(&mut self, now: Now, leave: Leave) {
        self.route(now, Msg::Leave(leave));
    }

    fn publish(&mut self, now: Now, publish: Publish) {
        self.route(now, Msg::Publish(publish));
    }

    fn presence(&mut self, now: Now, to: ReplyTo, room: String) {
        self.route(now, Msg::Presence { to, room });
    }

    fn history(&mut self, now: Now, to: ReplyTo, room: String, limit: Option<u64>) {
        self.route(now, Msg::History { to, room, limit });
    }

    fn sync(&mut self, now: Now, to: ReplyTo) {
        let token = self.gatherings.open(to, Question::Sync, self.router.workers());
        for worker in 0..self.router.workers() {
            self.send(now, worker, Msg::Gather { token, reply_to: self.router.me(), summary: false });
        }
    }

    fn list_rooms(&mut self, now: Now, to: ReplyTo) {
        // A barrier first: the joins and leaves this node's workers sent before are counted.
        let token = self.gatherings.open(to, Question::Sync, self.router.workers());
        self.listings.insert(token);
        for worker in 0..self.router.workers() {
            self.send(now, worker, Msg::Gather { token, reply_to: self.router.me(), summary: false });
        }
    }

    fn tick(&mut self, now: Now) {
        self.now = now;
        let due = self.next_refresh.is_none_or(|at| now.mono >= at);
        if due {
            self.next_refresh = Some(now.mono + self.refresh_every.max(Duration::from_millis(100)));
            self.refresh();
        }
    }

    fn receive(&mut self, now: Now, msg: Msg) {
        self.handle(now, msg);
    }

    fn poll(&mut self) -> Option<Output> {
        loop {
            if let Some(output) = self.router.poll() {
                return Some(output);
            }
            let item = self.inbox.next()?;
            self.on_inbound(item);
        }
    }

    fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn healthy(&self) -> bool {
        self.backplane.healthy()
    }

    fn render_metrics(&self, out: &mut String) {
        self.backplane.stats().render(self.backplane.healthy(), out);
    }

    fn nodes(&self) -> Option<Arc<[NodeReport]>> {
        Some(self.backplane.nodes())
    }

    fn report_node(&mut self, now: Now, report: &NodeReport) {
        self.now = now;
        let Ok(json) = serde_json::to_string(report) else { return };
        let forget_ms = self.config.presence_ttl.as_millis() as u64;
        let cmd = self.scripts.report_node(&report.id, &json, self.now_ms(), forget_ms);
        // The first Redis holds the node list.
        self.request(0, Op::Command(cmd), Pending::Nodes);
    }

    fn store_link(&self) -> Option<super::StoreLink> {
        let stats = self.backplane.stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Some(super::StoreLink {
            up: self.backplane.healthy(),
            round_trips: get(&stats.round_trips),
            round_trip_micros: get(&stats.round_trip_micros),
            in_flight: get(&stats.in_flight),
            reconnects: get(&stats.reconnects),
        })
    }
}
