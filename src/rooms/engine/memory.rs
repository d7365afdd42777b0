//! The in-memory engine, the default: rooms live in this process, each in the memory of
//! one worker, its owner (a hash of the room's name, the same on every worker). With one
//! worker every room is owned here and every message is a direct call.
//!
//! Everything that reads or changes a room goes to its owner (`route.rs`); the owner
//! answers the asker's worker, and sends each worker with members one `Deliver` per
//! message. Why per-room order holds across workers: the owner assigns offsets one at a
//! time on its own thread, and sends its events for a worker in that order over a FIFO
//! link (or queues them for itself in that order). A member is added to its worker's
//! delivery list when the owner's `Joined` arrives, which the owner sent after every
//! message before the join and before every message after it: so each member gets exactly
//! the messages after its join, once, in offset order.
//!
//! No clock reads, no IO: time comes with each call, output leaves through `poll`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::gather::{Gatherings, Question};
use super::room::{Kept, Membership, Room};
use super::route::{Msg, Router};
use super::{Answer, Engine, Event, Identity, Join, JoinedRoom, Leave, Output, Publish, ReplyTo, RoomsSummary};
use crate::rooms::count::SharedCount;
use crate::rooms::error::RoomError;
use crate::rooms::local::Audience;
use crate::rooms::protocol::{self, Member, Presence};
use crate::rooms::RoomsConfig;
use crate::server::{ConnId, Now};

/// The rooms of one worker's engine and its view of the others.
#[derive(Debug)]
pub struct MemoryEngine {
    config: Arc<RoomsConfig>,
    router: Router,
    /// Rooms across all workers (one atomic operation per room created or dropped).
    room_count: SharedCount,
    /// Random per worker and process: epochs are unique across workers, restarts and
    /// nodes.
    node: String,
    next_epoch: u64,
    /// The rooms whose name hashes to this worker.
    rooms: HashMap<Arc<str>, Room>,
    /// Sum of every owned room's kept bytes.
    history_bytes: usize,
    gatherings: Gatherings,
}

pub use super::route::Shared;

/// Tells a room's watchers that `who` (`conn`) joined or left (`op`): those watching
/// connections, and those watching users when it was also the user's first or last
/// connection in the room (`user_changed`). Never `conn` itself.
fn tell_watchers(router: &mut Router, room: &Room, op: &str, who: &Identity, conn: ConnId, user_changed: bool) {
    let kinds: &[Presence] =
        if user_changed { &[Presence::Connections, Presence::Users] } else { &[Presence::Connections] };
    for &by in kinds {
        let audience = Audience::watching(by);
        let mask = room.worker_mask(audience);
        if mask != 0 {
            let event = Bytes::from(protocol::presence_event(op, &room.name, who.member(), by));
            router.deliver(mask, &room.name, audience, Some(conn), &event);
        }
    }
}

impl MemoryEngine {
    /// The engine of worker `me` of `workers`, with what all of them share; its epochs
    /// start with `node` (random per worker and process).
    pub fn new(config: Arc<RoomsConfig>, node: String, me: usize, workers: usize, shared: &Shared) -> Self {
        MemoryEngine {
            config,
            router: Router::new(me, workers, shared.router.clone()),
            room_count: shared.room_count.clone(),
            node,
            next_epoch: 0,
            rooms: HashMap::new(),
            history_bytes: 0,
            gatherings: Gatherings::default(),
        }
    }

    /// Sends `msg` to the engine on worker `to`: handled now when that is this one.
    fn send(&mut self, now: Now, to: usize, msg: Msg) {
        if let Some(msg) = self.router.send(to, msg) {
            self.handle(now, msg);
        }
    }

    fn answer(&mut self, to: ReplyTo, result: Result<Answer, RoomError>) {
        self.router.answer(to, result);
    }

    /// Handles a message for this worker's engine (from itself or another worker).
    fn handle(&mut self, now: Now, msg: Msg) {
        match msg {
            Msg::Join(join) => self.owner_join(now, join),
            Msg::Leave(leave) => self.owner_leave(now, leave),
            Msg::Publish(publish) => {
                let (reply, result) = self.owner_publish(now, publish);
                self.answer(reply, result);
            }
            Msg::Presence { to, room } => {
                let result = match self.readable_room(&to, &room) {
                    Ok(r) => Ok(r.members().values().map(|m| m.identity.clone()).collect()),
                    // The backend asks of any room: one that does not exist has nobody in it.
                    Err(RoomError::NoSuchRoom) => Ok(Vec::new()),
                    Err(e) => Err(e),
                };
                self.answer(to, result.map(|members| Answer::Presence { members, room }));
            }
            Msg::History { to, room, limit } => {
                let limit = usize::try_from(limit.unwrap_or(protocol::DEFAULT_HISTORY_LIMIT)).unwrap_or(usize::MAX);
                let result = self.readable_room(&to, &room).map(|r| Answer::History {
                    epoch: r.epoch.clone(),
                    offset: r.offset,
                    messages: r.history(limit).cloned().collect(),
                    room,
                });
                self.answer(to, result);
            }
            Msg::Gather { token, reply_to, summary } => {
                let part = summary.then(|| self.owned_summary());
                self.send(now, reply_to, Msg::Gathered { token, part });
            }
            Msg::Gathered { token, part } => {
                if let Some((to, answer)) = self.gatherings.part(token, part) {
                    self.answer(to, Ok(answer));
                }
            }
            Msg::Event(event) => self.router.emit(self.router.me(), event),
        }
    }

    /// Asks every worker (this one included) and answers `to` once all have replied.
    fn gather(&mut self, now: Now, to: ReplyTo, question: Question) {
        let token = self.gatherings.open(to, question, self.router.workers());
        let summary = question == Question::Rooms;
        for worker in 0..self.router.workers() {
            self.send(now, worker, Msg::Gather { token, reply_to: self.router.me(), summary });
        }
    }

    // ---- the owner side ----

    /// This owner's share of a server-wide limit.
    fn share(&self, limit: usize) -> usize {
        limit.div_ceil(self.router.workers())
    }

    fn new_epoch(&mut self) -> Arc<str> {
        self.next_epoch += 1;
        format!("{}.{}", self.node, protocol::base36(self.next_epoch)).into()
    }

    /// Creates an owned room if it does not exist (503 beyond `max_rooms` in the server).
    fn create_room(&mut self, name: &str, now: Now) -> Result<(), RoomError> {
        if self.rooms.contains_key(name) {
            return Ok(());
        }
        let max = self.config.max_rooms;
        if !self.room_count.take(max) {
            return Err(RoomError::TooManyRooms);
        }
        let epoch = self.new_epoch();
        let name: Arc<str> = name.into();
        self.rooms.insert(name.clone(), Room::new(name, epoch, now.mono, self.router.workers()));
        Ok(())
    }

    /// A room `conn` may read (presence, history): 404 unless it is a member (or
    /// membership is not required and the room exists).
    fn readable_room(&self, to: &ReplyTo, name: &str) -> Result<&Room, RoomError> {
        match to {
            ReplyTo::Member { conn, .. } => {
                let room = self.rooms.get(name).ok_or(RoomError::NotMember)?;
                if self.config.require_membership && !room.is_member(*conn) {
                    return Err(RoomError::NotMember);
                }
                Ok(room)
            }
            ReplyTo::Http(_) => self.rooms.get(name).ok_or(RoomError::NoSuchRoom),
        }
    }

    /// Orders a publish: validated, given the room's next offset, serialized once, kept,
    /// and handed as the same `Bytes` to every worker with members.
    /// Returns who is answered, and with what.
    fn owner_publish(&mut self, now: Now, publish: Publish) -> (ReplyTo, Result<Answer, RoomError>) {
        let Publish { reply, from, room, data, echo, ephemeral, key } = publish;
        let key = key.filter(|_| !ephemeral);
        (reply, self.order(now, from, room, &data, echo, ephemeral, key))
    }

    #[allow(clippy::too_many_arguments)] // a publish's parts, taken apart once above
    fn order(
        &mut self,
        now: Now,
        from: Option<(ConnId, Identity)>,
        room_name: String,
        data: &[u8],
        echo: bool,
        ephemeral: bool,
        key: Option<Box<str>>,
    ) -> Result<Answer, RoomError> {
        if data.len() > self.config.max_message_bytes {
            return Err(RoomError::TooLarge { max: self.config.max_message_bytes });
        }
        // UTF-8 already (a slice of a validated text frame at a JSON value's bounds, or
        // the API's body).
        let data = std::str::from_utf8(data).map_err(|_| RoomError::DataNotUtf8)?;
        let is_member = match (&from, self.rooms.get(room_name.as_str())) {
            (Some((conn, _)), Some(room)) => room.is_member(*conn),
            _ => false,
        };
        if from.is_some() && !is_member && self.config.require_membership {
            return Err(RoomError::NotMember);
        }
        // The backend may publish into a room nobody joined yet: its history waits.
        self.create_room(&room_name, now)?;
        let history_budget = self.share(self.config.max_history_bytes);
        let history_size = self.config.history_size;
        let Some(room) = self.rooms.get_mut(room_name.as_str()) else {
            return Err(RoomError::RoomUnavailable);
        };
        if let Some(offset) = key.as_deref().and_then(|k| room.offset_of_key(k)) {
            return Ok(Answer::Published { room: room_name, offset: Some(offset), duplicate: true });
        }
        let offset = (!ephemeral).then(|| room.next_offset());
        let from_member = from.as_ref().map_or(Member::BACKEND, |(_, who)| who.member());
        // One allocation per publish: the same bytes are kept in history and broadcast.
        let json = Bytes::from(protocol::message(&room_name, offset, from_member, data));
        if let Some(offset) = offset {
            let freed = room.keep(Kept { offset, at: now.mono, json: json.clone(), key }, history_size);
            self.history_bytes = (self.history_bytes + json.len()).saturating_sub(freed);
            while self.history_bytes > history_budget {
                let Some(freed) = room.evict_oldest() else { break };
                self.history_bytes -= freed;
            }
        }
        let (name, mask) = (room.name.clone(), room.worker_mask(Audience::Members));
        let except = if echo { None } else { from.map(|(conn, _)| conn) };
        self.router.deliver(mask, &name, Audience::Members, except, &json);
        Ok(Answer::Published { room: room_name, offset, duplicate: false })
    }

    /// Adds a member (on any worker) to an owned room; answers its worker with `Joined`.
    fn owner_join(&mut self, now: Now, join: Join) {
        let Join { conn, identity, room: name, presence, since, id } = join;
        let max_members = self.config.max_members_per_room;
        let result = self.create_room(&name, now).and_then(|()| {
            let room = self.rooms.get_mut(name.as_str()).ok_or(RoomError::RoomUnavailable)?;
            if !room.is_member(conn) && room.members().len() >= max_members {
                return Err(RoomError::RoomFull);
            }
            let arrival = room.insert_member(conn, Membership { presence, identity: identity.clone() });
            if arrival.new {
                tell_watchers(&mut self.router, room, "join", &identity, conn, arrival.first_of_user);
            }
            let (recovered, missed) = match &since {
                Some(since) => {
                    let r = room.recover(&since.epoch, since.offset);
                    (r.recovered, r.missed)
                }
                None => (false, Vec::new()),
            };
            let joined = JoinedRoom {
                epoch: room.epoch.clone(),
                offset: room.offset,
                members: room.members().len(),
                recovered,
                missed,
            };
            Ok((room.name.clone(), joined))
        });
        let (room, result) = match result {
            Ok((room, joined)) => (room, Ok(joined)),
            Err(e) => (name.into(), Err(e)),
        };
        self.router.emit(conn.worker(), Event::Joined { conn, id, room, presence, result });
    }

    /// Removes a member from an owned room, telling presence watchers and (unless the
    /// connection is gone) its worker.
    fn owner_leave(&mut self, now: Now, leave: Leave) {
        let Leave { conn, room: name, id, gone } = leave;
        let left = self.rooms.get_mut(name.as_str()).and_then(|room| {
            let (membership, last_of_user) = room.remove_member(conn, now.mono)?;
            tell_watchers(&mut self.router, room, "leave", &membership.identity, conn, last_of_user);
            Some(room.name.clone())
        });
        match left {
            Some(room) if !gone => self.router.emit(conn.worker(), Event::Left { conn, id, room }),
            Some(_) => {}
            None if !gone => self.router.emit(
                conn.worker(),
                Event::Answer { to: ReplyTo::Member { conn, id }, result: Err(RoomError::NotMember) },
            ),
            None => {}
        }
    }

    /// The rooms this worker owns.
    fn owned_summary(&self) -> RoomsSummary {
        RoomsSummary {
            rooms: self.rooms.values().map(|r| (r.name.clone(), r.members().len(), r.offset)).collect(),
            history_messages: self.rooms.values().map(Room::history_len).sum(),
            history_bytes: self.history_bytes,
        }
    }
}

impl Engine for MemoryEngine {
    fn join(&mut self, now: Now, join: Join) {
        let owner = self.router.owner(&join.room);
        self.send(now, owner, Msg::Join(join));
    }

    fn leave(&mut self, now: Now, leave: Leave) {
        let owner = self.router.owner(&leave.room);
        self.send(now, owner, Msg::Leave(leave));
    }

    fn publish(&mut self, now: Now, publish: Publish) {
        let owner = self.router.owner(&publish.room);
        self.send(now, owner, Msg::Publish(publish));
    }

    fn presence(&mut self, now: Now, to: ReplyTo, room: String) {
        let owner = self.router.owner(&room);
        self.send(now, owner, Msg::Presence { to, room });
    }

    fn history(&mut self, now: Now, to: ReplyTo, room: String, limit: Option<u64>) {
        let owner = self.router.owner(&room);
        self.send(now, owner, Msg::History { to, room, limit });
    }

    fn sync(&mut self, now: Now, to: ReplyTo) {
        self.gather(now, to, Question::Sync);
    }

    fn list_rooms(&mut self, now: Now, to: ReplyTo) {
        self.gather(now, to, Question::Rooms);
    }

    fn tick(&mut self, now: Now) {
        let ttl = self.config.history_ttl;
        let mut freed = 0;
        let before = self.rooms.len();
        self.rooms.retain(|_, room| {
            freed += room.expire(now.mono, ttl);
            // Memory must not grow with rooms used once: an empty room goes once it has
            // been empty for the TTL and its history has aged out (its epoch with it). A
            // message the backend published into the empty room is kept its full TTL.
            let idle = room.emptied_at.is_some_and(|t| now.mono.saturating_duration_since(t) >= ttl);
            !(idle && room.history_len() == 0)
        });
        self.room_count.release(before - self.rooms.len());
        self.history_bytes = self.history_bytes.saturating_sub(freed);
    }

    fn receive(&mut self, now: Now, msg: Msg) {
        self.handle(now, msg);
    }

    fn poll(&mut self) -> Option<Output> {
        self.router.poll()
    }

    fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::value::RawValue;

    use super::*;
    use crate::rooms::engine::Identity;
    use crate::rooms::protocol::Since;

    fn engine(config: RoomsConfig) -> MemoryEngine {
        MemoryEngine::new(Arc::new(config), "n".into(), 0, 1, &Shared::default())
    }

    fn at(t0: Instant, secs: u64) -> Now {
        Now { mono: t0 + Duration::from_secs(secs), unix: Duration::from_secs(1_800_000_000 + secs) }
    }

    /// A backend publish; returns the offset it got.
    fn publish(engine: &mut MemoryEngine, now: Now, room: &str, data: &str) -> Result<Option<u64>, RoomError> {
        let http = ConnId::from_parts(9, 0);
        let publish = Publish {
            reply: ReplyTo::Http(http),
            from: None,
            room: room.into(),
            data: Bytes::copy_from_slice(data.as_bytes()),
            echo: true,
            ephemeral: false,
            key: None,
        };
        engine.publish(now, publish);
        let mut answer = None;
        while let Some(output) = engine.poll() {
            if let Output::Event(Event::Answer { result, .. }) = output {
                answer = Some(result.map(|a| match a {
                    Answer::Published { offset, .. } => offset,
                    other => panic!("{other:?}"),
                }));
            }
        }
        answer.expect("an answer")
    }

    /// The events the engine has now.
    fn events(engine: &mut MemoryEngine) -> Vec<Event> {
        std::iter::from_fn(|| engine.poll())
            .map(|output| match output {
                Output::Event(event) => event,
                Output::Send(to, msg) => panic!("one worker sent {msg:?} to {to}"),
            })
            .collect()
    }

    /// `conn` joins `room` (with `since`); the join as answered.
    fn join(engine: &mut MemoryEngine, now: Now, conn: ConnId, room: &str, since: Option<(&str, u64)>) -> JoinedRoom {
        let identity = Identity { client: format!("c{}", conn.parts().0).into(), user: None, info: None };
        let since = since.map(|(epoch, offset)| Since { epoch: epoch.into(), offset });
        let id = Some(RawValue::from_string("1".into()).unwrap());
        engine.join(now, Join { conn, identity, room: room.into(), presence: Presence::Off, since, id });
        events(engine)
            .into_iter()
            .find_map(|e| match e {
                Event::Joined { result, .. } => Some(result.expect("joined")),
                _ => None,
            })
            .expect("a Joined event")
    }

    /// The offsets of `room`'s history, as `conn` reads it.
    fn history(engine: &mut MemoryEngine, now: Now, conn: ConnId, room: &str) -> Vec<u64> {
        let id = Some(RawValue::from_string("2".into()).unwrap());
        engine.history(now, ReplyTo::Member { conn, id }, room.into(), None);
        match events(engine).pop() {
            Some(Event::Answer { result: Ok(Answer::History { messages, .. }), .. }) => offsets(&messages),
            other => panic!("{other:?}"),
        }
    }

    fn offsets(messages: &[Bytes]) -> Vec<u64> {
        let offset = |m: &Bytes| serde_json::from_slice::<serde_json::Value>(m).unwrap()["offset"].as_u64().unwrap();
        messages.iter().map(offset).collect()
    }

    #[test]
    fn an_empty_room_lives_until_its_last_message_ages_out() {
        let t0 = Now::read().mono;
        let mut engine = engine(RoomsConfig { history_ttl: Duration::from_secs(300), ..RoomsConfig::default() });
        // The backend publishes into a room nobody is in (it is empty from the start).
        assert_eq!(publish(&mut engine, at(t0, 0), "r", "1"), Ok(Some(1)));
        let epoch = engine.rooms["r"].epoch.clone();
        assert_eq!(publish(&mut engine, at(t0, 200), "r", "2"), Ok(Some(2)));
        engine.tick(at(t0, 301));
        assert_eq!(engine.room_count(), 1, "message 2 is 101 s old: the room and its epoch stay");
        // Message 1 aged out while the room was kept; recovery after it is complete.
        let reader = ConnId::from_parts(1, 0);
        let joined = join(&mut engine, at(t0, 301), reader, "r", Some((&epoch, 1)));
        assert_eq!((joined.epoch.clone(), joined.recovered, offsets(&joined.missed)), (epoch, true, vec![2]));
        assert_eq!(history(&mut engine, at(t0, 301), reader, "r"), [2]);
        engine.leave(at(t0, 301), Leave { conn: reader, room: "r".into(), id: None, gone: true });
        engine.tick(at(t0, 500));
        assert_eq!(engine.room_count(), 1, "emptied at 301: kept for its TTL");
        engine.tick(at(t0, 601));
        assert_eq!(engine.room_count(), 0, "empty for the TTL and nothing kept: dropped");
    }

    #[test]
    fn a_room_with_members_is_kept_but_its_old_messages_age_out() {
        let t0 = Now::read().mono;
        let mut engine = engine(RoomsConfig { history_ttl: Duration::from_secs(300), ..RoomsConfig::default() });
        let member = ConnId::from_parts(1, 0);
        let epoch = join(&mut engine, at(t0, 0), member, "r", None).epoch;
        assert_eq!(publish(&mut engine, at(t0, 1), "r", "\"old\""), Ok(Some(1)));
        engine.tick(at(t0, 302));
        engine.tick(at(t0, 10_000));
        assert_eq!(engine.room_count(), 1, "a room with a member stays");
        assert_eq!(publish(&mut engine, at(t0, 10_000), "r", "\"fresh\""), Ok(Some(2)), "same epoch: offsets go on");
        assert_eq!(history(&mut engine, at(t0, 10_000), member, "r"), [2], "the old message aged out");
        // Recovery from before the aged-out message is partial; from after it, complete.
        let (b, c) = (ConnId::from_parts(2, 0), ConnId::from_parts(3, 0));
        let partial = join(&mut engine, at(t0, 10_000), b, "r", Some((&epoch, 0)));
        assert_eq!((partial.recovered, offsets(&partial.missed)), (false, vec![2]));
        let complete = join(&mut engine, at(t0, 10_000), c, "r", Some((&epoch, 1)));
        assert_eq!((complete.recovered, offsets(&complete.missed)), (true, vec![2]));
    }

    #[test]
    fn history_memory_stays_within_the_global_budget() {
        let budget = 10_000;
        let t0 = Now::read().mono;
        let mut engine = engine(RoomsConfig { max_history_bytes: budget, ..RoomsConfig::default() });
        let data = format!("\"{}\"", "x".repeat(300));
        for i in 0..500 {
            let room = format!("room-{}", i % 50);
            assert!(publish(&mut engine, at(t0, 0), &room, &data).is_ok());
            let held: usize = engine.rooms.values().map(Room::history_bytes).sum();
            assert_eq!(held, engine.history_bytes, "the running total matches the rooms");
            assert!(held <= budget, "{held} bytes kept over a {budget} budget");
        }
        // Expiry frees the running total too.
        engine.tick(at(t0, 301));
        assert_eq!(engine.history_bytes, 0);
    }

    #[test]
    fn the_room_limit_holds_across_workers() {
        let shared = Shared::default();
        let config = Arc::new(RoomsConfig { max_rooms: 3, ..RoomsConfig::default() });
        let mut a = MemoryEngine::new(config.clone(), "a".into(), 0, 1, &shared);
        let mut b = MemoryEngine::new(config, "b".into(), 0, 1, &shared);
        let now = at(Now::read().mono, 0);
        assert!(publish(&mut a, now, "r1", "1").is_ok());
        assert!(publish(&mut b, now, "r2", "1").is_ok());
        assert!(publish(&mut a, now, "r3", "1").is_ok());
        assert_eq!(publish(&mut b, now, "r4", "1"), Err(RoomError::TooManyRooms));
    }
}
