//! One room as its owner worker on this node follows it in Redis: its members here, and
//! where this node is in the room's stream (`delivered`). Messages come from the room's
//! channel, replies from the command connection; the two are separate connections, so a
//! join's reply may come before or after the channel messages around it. What makes
//! delivery exact anyway:
//!
//! - Messages are delivered strictly in offset order: one ahead of `delivered + 1` is held
//!   and the gap is read from the stream (the engine sends the read); one at or below
//!   `delivered` is a duplicate and dropped.
//! - A join's script publishes a marker on the channel (its join event, or a bare marker
//!   for a member already in), at the very point of the room's order where the join took
//!   effect: the member's `Joined` goes out when both the reply and the marker are here, so
//!   it gets exactly what comes after its join, presence events included. A marker that
//!   comes before its reply pauses the room here until the reply (microseconds). A leave's
//!   `Left` waits for its marker the same way. Without a marker (the channel is down) the
//!   reply's offset (`at`) places the join: when delivery is behind it, `Joined` waits
//!   until delivery reaches `at`; when ahead, the messages in between come from the last
//!   few delivered (`recent`) as part of `missed`.
//! - Another epoch, or a gap the stream no longer holds, is a `reset` for every member
//!   here, never a silent gap.
//!
//! No IO, no clock: what it decides goes out through the [`Router`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::super::room::Membership;
use super::super::route::{Roster, Router};
use super::super::{Event, JoinedRoom, OwnedId};
use super::store::{Kind, Snapshot};
use crate::rooms::local::Audience;
use crate::rooms::protocol::{Presence, Since};
use crate::server::ConnId;

/// Messages delivered here that a join answered late can still take as `missed`.
const RECENT: usize = 64;
/// Messages held ahead of a gap; beyond, newer ones wait in the stream (read with the gap).
const MAX_HELD: usize = 4096;

/// Where this node is in a room's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The room's epoch.
    pub epoch: Arc<str>,
    /// The last offset delivered to the members here.
    pub delivered: u64,
}

/// A message from the channel (or the stream), for this room.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    /// Its epoch (`-` for presence events).
    pub epoch: &'a str,
    /// What it is.
    pub kind: Kind,
    /// The client not to deliver it to.
    pub except: Option<&'a str>,
    /// The push.
    pub push: Bytes,
}

#[derive(Debug)]
struct Held {
    epoch: Arc<str>,
    except: Option<Arc<str>>,
    push: Bytes,
}

/// A join whose reply came: the member and what it recovers.
#[derive(Debug)]
pub struct Answered {
    /// The joining connection.
    pub conn: ConnId,
    /// The request's `id`.
    pub id: OwnedId,
    /// Which presence it watches.
    pub presence: Presence,
    /// Where its last session left off.
    pub since: Option<Since>,
    /// Who it is.
    pub membership: Membership,
    /// Members on every node after the join (from its reply).
    pub members: Option<usize>,
}

/// A channel item waiting while the room is paused.
#[derive(Debug)]
struct Paused {
    epoch: Arc<str>,
    kind: Kind,
    except: Option<Arc<str>>,
    push: Bytes,
}

#[derive(Debug)]
struct Waiting {
    answered: Answered,
    epoch: Arc<str>,
    at: u64,
    missed: Vec<(u64, Bytes)>,
}

/// A room with members on this node, at its owner worker.
#[derive(Debug)]
pub struct FollowedRoom {
    /// Its name.
    pub name: Arc<str>,
    /// The Redis it lives in.
    pub shard: usize,
    roster: Roster,
    /// Client id -> connection, for `except`.
    clients: HashMap<Arc<str>, ConnId>,
    /// `None` until the first join's reply.
    position: Option<Position>,
    held: BTreeMap<u64, Held>,
    recent: VecDeque<(u64, Bytes)>,
    waiting: Vec<Waiting>,
    /// A read of the stream (gap fill, resync) is in flight.
    pub reading: bool,
    /// Resets since the engine last took the count (for `/metrics`).
    resets: u64,
    /// Joins sent from here, by client id, until their marker passes: their reply once
    /// it came.
    expecting: HashMap<Arc<str>, Option<(Answered, Snapshot)>>,
    /// Leaves of members here, by client id, answered when their marker passes.
    leaving: HashMap<Arc<str>, (ConnId, OwnedId)>,
    /// A join's marker came before its reply: what came after it waits here.
    paused: Option<(Arc<str>, VecDeque<Paused>)>,
    /// Connections whose join took effect (or was refused) since the engine last looked.
    settled: Vec<ConnId>,
}

impl FollowedRoom {
    /// A room on `shard`, with nobody yet.
    pub fn new(name: Arc<str>, shard: usize, workers: usize) -> Self {
        FollowedRoom {
            name,
            shard,
            roster: Roster::new(workers),
            clients: HashMap::new(),
            position: None,
            held: BTreeMap::new(),
            recent: VecDeque::new(),
            waiting: Vec::new(),
            reading: false,
            resets: 0,
            expecting: HashMap::new(),
            leaving: HashMap::new(),
            paused: None,
            settled: Vec::new(),
        }
    }

    /// The members here.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Where this node is (`None`: not synced yet).
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// Resets since the last call.
    pub fn take_resets(&mut self) -> u64 {
        std::mem::take(&mut self.resets)
    }

    /// Joins or leaves still waiting for their marker or their offset.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() || !self.expecting.is_empty() || !self.leaving.is_empty() || self.paused.is_some()
    }

    /// A join of `client` was sent: its reply waits for its marker.
    pub fn expect_join(&mut self, client: Arc<str>) {
        self.expecting.insert(client, None);
    }

    /// A join's reply. Returns whether a read is needed.
    pub fn on_join_reply(&mut self, router: &mut Router, answered: Answered, snapshot: Snapshot) -> bool {
        let client = answered.membership.identity.client.clone();
        if self.paused.as_ref().is_some_and(|(c, _)| *c == client) {
            self.expecting.remove(&client);
            let queue = self.paused.take().map(|(_, q)| q).unwrap_or_default();
            let mut need_read = self.on_joined(router, answered, snapshot);
            for item in queue {
                let incoming =
                    Incoming { epoch: &item.epoch, kind: item.kind, except: item.except.as_deref(), push: item.push };
                need_read |= self.on_message(router, incoming);
            }
            return need_read;
        }
        match self.expecting.get_mut(&client) {
            Some(slot) => {
                *slot = Some((answered, snapshot));
                false
            }
            None => self.on_joined(router, answered, snapshot),
        }
    }

    /// Connections whose join took effect or was refused since the last call (their
    /// next requests to the room may go now).
    pub fn take_settled(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.settled)
    }

    /// A join that will not take effect (refused, or closed meanwhile).
    pub fn forget_join(&mut self, router: &mut Router, conn: ConnId, client: &str) -> bool {
        self.settled.push(conn);
        self.expecting.remove(client);
        if self.paused.as_ref().is_some_and(|(c, _)| **c == *client) {
            return self.unpause(router);
        }
        false
    }

    /// A member here left (`Left` answered when its marker passes).
    pub fn expect_leave(&mut self, client: Arc<str>, conn: ConnId, id: OwnedId) {
        self.leaving.insert(client, (conn, id));
    }

    /// The channel is down: markers may never come. What waits for one goes now (the
    /// reply's offset places each join; a read fills the gap once the link is back).
    pub fn on_link_down(&mut self, router: &mut Router) -> bool {
        for (client, (conn, id)) in std::mem::take(&mut self.leaving) {
            let _ = client;
            router.emit(conn.worker(), Event::Left { conn, id, room: self.name.clone() });
        }
        let mut need_read = false;
        for (_, reply) in std::mem::take(&mut self.expecting) {
            if let Some((answered, snapshot)) = reply {
                need_read |= self.on_joined(router, answered, snapshot);
            }
        }
        need_read | self.unpause(router)
    }

    fn unpause(&mut self, router: &mut Router) -> bool {
        let mut need_read = false;
        for item in self.paused.take().map(|(_, q)| q).unwrap_or_default() {
            let incoming =
                Incoming { epoch: &item.epoch, kind: item.kind, except: item.except.as_deref(), push: item.push };
            need_read |= self.on_message(router, incoming);
        }
        need_read
    }

    /// A marker of `client` passed (`push`: its event, `{"op":"join"...` or
    /// `{"op":"leave"...`): its join or leave takes effect here now.
    fn on_marker(&mut self, router: &mut Router, client: &str, push: &[u8]) -> bool {
        if push.starts_with(br#"{"op":"leave""#) {
            if let Some((conn, id)) = self.leaving.remove(client) {
                router.emit(conn.worker(), Event::Left { conn, id, room: self.name.clone() });
            }
            return false;
        }
        match self.expecting.get_mut(client).map(Option::take) {
            Some(Some((answered, snapshot))) => {
                self.expecting.remove(client);
                self.on_joined(router, answered, snapshot)
            }
            Some(None) => {
                // The reply is not here yet: everything after the marker waits for it.
                self.paused = Some((client.into(), VecDeque::new()));
                false
            }
            None => false,
        }
    }

    /// The connection of `client` here, for `except`. (A leaver is out of `clients` but on
    /// its worker's delivery list until its `Left`.)
    fn conn_of(&self, client: &str) -> Option<ConnId> {
        self.clients.get(client).copied().or_else(|| self.leaving.get(client).map(|l| l.0))
    }

    /// Removes a member here; `None` if it was not one.
    pub fn remove(&mut self, conn: ConnId) -> Option<Membership> {
        let (membership, _) = self.roster.remove(conn)?;
        self.clients.remove(&membership.identity.client);
        Some(membership)
    }

    /// A message from the channel. Returns whether a read of the stream after
    /// `delivered` is needed (a gap, and none in flight).
    pub fn on_message(&mut self, router: &mut Router, msg: Incoming<'_>) -> bool {
        if let Some((_, queue)) = &mut self.paused {
            let except = msg.except.map(Arc::from);
            queue.push_back(Paused { epoch: msg.epoch.into(), kind: msg.kind, except, push: msg.push });
            return false;
        }
        let except = msg.except.and_then(|c| self.conn_of(c));
        let offset = match msg.kind {
            Kind::Presence => {
                let mask = self.roster.worker_mask(Audience::Watchers);
                router.deliver(mask, &self.name, Audience::Watchers, except, &msg.push);
                return msg.except.is_some_and(|client| self.on_marker(router, client, &msg.push));
            }
            Kind::UserPresence => {
                let mask = self.roster.worker_mask(Audience::UserWatchers);
                router.deliver(mask, &self.name, Audience::UserWatchers, except, &msg.push);
                return false;
            }
            Kind::Marker => return msg.except.is_some_and(|client| self.on_marker(router, client, &msg.push)),
            Kind::Message(0) => {
                let mask = self.roster.worker_mask(Audience::Members);
                router.deliver(mask, &self.name, Audience::Members, except, &msg.push);
                return false;
            }
            Kind::Message(offset) => offset,
        };
        let Some(position) = &self.position else {
            // Not synced yet: the first join's reply says where delivery starts.
            self.hold(offset, msg.epoch.into(), msg.except, msg.push);
            return false;
        };
        if *position.epoch != *msg.epoch {
            // The room was lost in Redis and started again: continuity is gone.
            self.reset(router, msg.epoch.into(), offset - 1);
        }
        let delivered = self.position.as_ref().map_or(0, |p| p.delivered);
        if offset <= delivered {
            return false; // delivered already (from the stream, in a gap fill)
        }
        if offset == delivered + 1 && self.held.is_empty() {
            self.deliver(router, offset, msg.except, msg.push);
            return false;
        }
        self.hold(offset, msg.epoch.into(), msg.except, msg.push);
        self.drain_held(router)
    }

    fn hold(&mut self, offset: u64, epoch: Arc<str>, except: Option<&str>, push: Bytes) {
        if self.held.len() < MAX_HELD {
            self.held.insert(offset, Held { epoch, except: except.map(Arc::from), push });
        }
    }

    /// Delivers what is held in order; returns whether a gap remains (and no read is in
    /// flight to fill it).
    fn drain_held(&mut self, router: &mut Router) -> bool {
        let Some(position) = &self.position else { return false };
        let epoch = position.epoch.clone();
        while let Some(entry) = self.held.first_entry() {
            let delivered = self.position.as_ref().map_or(0, |p| p.delivered);
            let offset = *entry.key();
            if offset > delivered + 1 {
                break;
            }
            let held = entry.remove();
            if offset == delivered + 1 && held.epoch == epoch {
                self.deliver(router, offset, held.except.as_deref(), held.push);
            }
        }
        let gap = !self.held.is_empty();
        if gap && !self.reading {
            self.reading = true;
            return true;
        }
        false
    }

    /// Delivers message `offset` (the next one) to the members here.
    fn deliver(&mut self, router: &mut Router, offset: u64, except: Option<&str>, push: Bytes) {
        let except = except.and_then(|c| self.conn_of(c));
        let mask = self.roster.worker_mask(Audience::Members);
        router.deliver(mask, &self.name, Audience::Members, except, &push);
        if let Some(position) = &mut self.position {
            position.delivered = offset;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((offset, push));
        self.release_waiting(router);
    }

    /// Sends the `Joined` of every join whose offset delivery has reached.
    fn release_waiting(&mut self, router: &mut Router) {
        let Some(position) = &self.position else { return };
        let delivered = position.delivered;
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].at <= delivered {
                let w = self.waiting.swap_remove(i);
                self.emit_joined(router, w.answered, w.epoch, w.at, w.missed);
            } else {
                i += 1;
            }
        }
    }

    /// Continuity lost: every member here reloads from `epoch`/`offset`.
    fn reset(&mut self, router: &mut Router, epoch: Arc<str>, offset: u64) {
        // Joins answered before the reset go out first: their members reset with the rest.
        for w in std::mem::take(&mut self.waiting) {
            self.emit_joined(router, w.answered, w.epoch, w.at, w.missed);
        }
        log::warn!("room {}: continuity lost, reset to epoch {epoch} offset {offset}", self.name);
        self.resets += 1;
        let mask = self.roster.worker_mask(Audience::Members);
        for worker in 0..router.workers() {
            if mask & (1 << worker) != 0 {
                let event = Event::Reset { room: self.name.clone(), epoch: epoch.clone(), offset };
                router.emit(worker, event);
            }
        }
        self.held.retain(|&o, held| held.epoch == epoch && o > offset);
        self.recent.clear();
        self.position = Some(Position { epoch, delivered: offset });
    }

    /// A read of the stream after `delivered` came back (gap fill, or resync after the
    /// link was down). Returns whether another read is needed.
    pub fn on_read(&mut self, router: &mut Router, snapshot: Snapshot) -> bool {
        self.reading = false;
        let Some(position) = self.position.clone() else { return false };
        let Some(epoch) = snapshot.epoch.as_deref() else { return false };
        if *position.epoch != *epoch {
            self.reset(router, epoch.into(), snapshot.offset);
            return self.drain_held(router);
        }
        for entry in snapshot.entries {
            let delivered = self.position.as_ref().map_or(0, |p| p.delivered);
            if entry.offset <= delivered {
                continue;
            }
            if entry.offset > delivered + 1 {
                break; // aged or trimmed out of the stream
            }
            self.deliver(router, entry.offset, entry.except.as_deref(), Bytes::from(entry.push));
        }
        let delivered = self.position.as_ref().map_or(0, |p| p.delivered);
        if delivered < snapshot.offset {
            self.reset(router, epoch.into(), snapshot.offset);
        }
        self.drain_held(router)
    }

    /// A join takes effect here: the room's state when the member joined
    /// (`snapshot.offset`) and the kept messages after its `since`. Returns whether a read
    /// is needed.
    fn on_joined(&mut self, router: &mut Router, mut answered: Answered, snapshot: Snapshot) -> bool {
        answered.members = snapshot.members.or(answered.members);
        let Some(epoch) = snapshot.epoch.as_deref().map(Arc::<str>::from) else { return false };
        let after = answered.since.as_ref().filter(|s| *s.epoch == *epoch).map_or(u64::MAX, |s| s.offset);
        let at = snapshot.offset;
        let mut missed: Vec<(u64, Bytes)> = snapshot
            .entries
            .into_iter()
            .filter(|e| e.offset > after && e.offset <= at)
            .map(|e| (e.offset, Bytes::from(e.push)))
            .collect();
        let membership = answered.membership.clone();
        if self.roster.insert(answered.conn, membership.clone()).new {
            self.clients.insert(membership.identity.client.clone(), answered.conn);
        }
        let mut need_read = false;
        match self.position.clone() {
            None => {
                self.position = Some(Position { epoch: epoch.clone(), delivered: at });
                self.emit_joined(router, answered, epoch, at, missed);
                need_read = self.drain_held(router);
            }
            Some(position) if position.epoch != epoch => {
                self.reset(router, epoch.clone(), at);
                self.emit_joined(router, answered, epoch, at, missed);
            }
            Some(position) if position.delivered == at => self.emit_joined(router, answered, epoch, at, missed),
            Some(position) if position.delivered > at => {
                // Delivered here already, before this member was in: it takes them as
                // missed (only when it asked to recover; otherwise they are before its join).
                if answered.since.is_some() {
                    missed.extend(self.recent.iter().filter(|(o, _)| *o > at).cloned());
                }
                self.emit_joined(router, answered, epoch, position.delivered, missed);
            }
            Some(_) => self.waiting.push(Waiting { answered, epoch, at, missed }),
        }
        need_read
    }

    fn emit_joined(&mut self, router: &mut Router, a: Answered, epoch: Arc<str>, at: u64, missed: Vec<(u64, Bytes)>) {
        self.settled.push(a.conn);
        let recovered = a.since.as_ref().is_some_and(|since| {
            *since.epoch == *epoch && since.offset <= at && missed.iter().map(|(o, _)| *o).eq(since.offset + 1..=at)
        });
        let joined = JoinedRoom {
            epoch,
            offset: at,
            members: a.members.unwrap_or(self.roster.len()),
            recovered,
            missed: missed.into_iter().map(|(_, push)| push).collect(),
        };
        let event =
            Event::Joined { conn: a.conn, id: a.id, room: self.name.clone(), presence: a.presence, result: Ok(joined) };
        router.emit(a.conn.worker(), event);
    }

    /// Every member here, as `(client id, {"client","user"})`, for the presence refresh.
    pub fn members(&self) -> impl Iterator<Item = &Membership> {
        self.roster.members().values()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;

    use super::super::store::Entry;
    use super::*;
    use crate::rooms::engine::{Identity, Output};

    fn msg(offset: u64) -> Incoming<'static> {
        Incoming { epoch: "e1", kind: Kind::Message(offset), except: None, push: Bytes::from(format!("m{offset}")) }
    }

    fn member(n: u32) -> Answered {
        let identity = Identity { client: format!("c{n}").into(), user: None, info: None };
        Answered {
            conn: ConnId::for_worker(0, n, 0),
            id: None,
            presence: Presence::Off,
            since: None,
            membership: Membership { presence: Presence::Off, identity },
            members: None,
        }
    }

    /// A snapshot at `offset` with stream entries `entries` (0..=0: none).
    fn snapshot(epoch: &str, offset: u64, entries: std::ops::RangeInclusive<u64>) -> Snapshot {
        let entries = entries
            .filter(|&o| o > 0)
            .map(|o| Entry { offset: o, time_ms: 1, push: format!("m{o}"), except: None })
            .collect();
        Snapshot { epoch: Some(epoch.into()), offset, entries, members: None }
    }

    /// What the router has: deliveries as their payloads, joins as "J<offset>", resets.
    fn drain(router: &mut Router) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(o) = router.poll() {
            match o {
                Output::Event(Event::Deliver { payload, .. }) => out.push(String::from_utf8_lossy(&payload).into()),
                Output::Event(Event::Joined { result: Ok(j), .. }) => {
                    out.push(format!("J{}{:?}", j.offset, j.missed.iter().map(|m| m.len()).collect::<Vec<_>>()))
                }
                Output::Event(Event::Reset { epoch, offset, .. }) => out.push(format!("R{epoch}/{offset}")),
                other => out.push(format!("{other:?}")),
            }
        }
        out
    }

    fn setup() -> (Router, FollowedRoom) {
        let router = Router::new(0, 1, RandomState::new());
        (router, FollowedRoom::new("r".into(), 0, 1))
    }

    #[test]
    fn messages_before_the_first_reply_wait_and_duplicates_are_dropped() {
        let (mut router, mut room) = setup();
        assert!(!room.on_message(&mut router, msg(5)));
        assert!(!room.on_message(&mut router, msg(6)));
        // The join happened at 5: 5 is before it, 6 after.
        assert!(!room.on_joined(&mut router, member(1), snapshot("e1", 5, 1..=5)));
        assert_eq!(drain(&mut router), ["J5[]", "m6"]);
        assert!(!room.on_message(&mut router, msg(6)));
        assert!(!room.on_message(&mut router, msg(7)));
        assert_eq!(drain(&mut router), ["m7"]);
    }

    #[test]
    fn a_gap_is_read_from_the_stream_and_filled_in_order() {
        let (mut router, mut room) = setup();
        room.on_joined(&mut router, member(1), snapshot("e1", 2, 0..=0));
        drain(&mut router);
        assert!(room.on_message(&mut router, msg(5)), "3 and 4 are missing: read");
        assert!(!room.on_message(&mut router, msg(6)), "a read is in flight already");
        assert_eq!(drain(&mut router), Vec::<String>::new());
        assert!(!room.on_read(&mut router, snapshot("e1", 6, 3..=6)));
        assert_eq!(drain(&mut router), ["m3", "m4", "m5", "m6"]);
    }

    #[test]
    fn a_gap_the_stream_lost_is_a_reset() {
        let (mut router, mut room) = setup();
        room.on_joined(&mut router, member(1), snapshot("e1", 2, 0..=0));
        drain(&mut router);
        assert!(room.on_message(&mut router, msg(9)));
        // The stream kept only 8..9: 3..7 are gone.
        assert!(!room.on_read(&mut router, snapshot("e1", 9, 8..=9)));
        assert_eq!(drain(&mut router), ["Re1/9"]);
        room.on_message(&mut router, msg(10));
        assert_eq!(drain(&mut router), ["m10"]);
    }

    #[test]
    fn another_epoch_on_the_channel_is_a_reset() {
        let (mut router, mut room) = setup();
        room.on_joined(&mut router, member(1), snapshot("e1", 4, 0..=0));
        drain(&mut router);
        let next = Incoming { epoch: "e2", ..msg(1) };
        assert!(!room.on_message(&mut router, next));
        assert_eq!(drain(&mut router), ["Re2/0", "m1"]);
    }

    #[test]
    fn a_join_answered_behind_delivery_waits_and_one_ahead_takes_recent_as_missed() {
        let (mut router, mut room) = setup();
        room.on_joined(&mut router, member(1), snapshot("e1", 2, 0..=0));
        drain(&mut router);
        // Joined at 4 while this node has delivered 2: out after 4, before 5.
        room.on_joined(&mut router, member(2), snapshot("e1", 4, 0..=0));
        for o in 3..=5 {
            room.on_message(&mut router, msg(o));
        }
        assert_eq!(drain(&mut router), ["m3", "m4", "J4[]", "m5"]);
        // Joined at 3 with since 2, while this node has delivered 5: missed 3 (from the
        // stream), 4 and 5 (from recent), and it is complete.
        let mut late = member(3);
        late.since = Some(Since { epoch: "e1".into(), offset: 2 });
        room.on_joined(&mut router, late, snapshot("e1", 3, 3..=3));
        assert_eq!(drain(&mut router), ["J5[2, 2, 2]"]);
    }

    fn marker(client: &'static str, event: bool) -> Incoming<'static> {
        let (kind, push) = if event { (Kind::Presence, "join") } else { (Kind::Marker, r#"{"op":"join"}"#) };
        Incoming { epoch: "-", kind, except: Some(client), push: Bytes::from_static(push.as_bytes()) }
    }

    #[test]
    fn a_join_takes_effect_at_its_marker_whichever_comes_first() {
        let (mut router, mut room) = setup();
        room.on_joined(&mut router, member(1), snapshot("e1", 2, 0..=0));
        drain(&mut router);
        // Reply first: Joined waits for the marker, then comes before what follows it.
        room.expect_join("c2".into());
        assert!(!room.on_join_reply(&mut router, member(2), snapshot("e1", 3, 0..=0)));
        room.on_message(&mut router, msg(3));
        assert_eq!(drain(&mut router), ["m3"]);
        room.on_message(&mut router, marker("c2", true));
        room.on_message(&mut router, msg(4));
        assert_eq!(drain(&mut router), ["J3[]", "m4"], "(nobody watches presence: no join event)");
        // Marker first: the room pauses until the reply, then goes on in order.
        room.expect_join("c3".into());
        room.on_message(&mut router, marker("c3", false));
        room.on_message(&mut router, msg(5));
        room.on_message(&mut router, marker("c9", true));
        assert_eq!(drain(&mut router), Vec::<String>::new(), "paused");
        room.on_join_reply(&mut router, member(3), snapshot("e1", 4, 0..=0));
        assert_eq!(drain(&mut router), ["J4[]", "m5"]);
        assert_eq!(room.take_settled().len(), 3);
        assert!(!room.has_waiting());
    }

    #[test]
    fn a_lost_channel_releases_what_waits_for_a_marker() {
        let (mut router, mut room) = setup();
        room.on_joined(&mut router, member(1), snapshot("e1", 2, 0..=0));
        room.expect_join("c2".into());
        room.on_join_reply(&mut router, member(2), snapshot("e1", 2, 0..=0));
        room.expect_leave("c1".into(), ConnId::for_worker(0, 1, 0), None);
        drain(&mut router);
        room.on_link_down(&mut router);
        let out = drain(&mut router);
        assert!(out.iter().any(|e| e.starts_with("J2")) && out.iter().any(|e| e.contains("Left")), "{out:?}");
        assert!(!room.has_waiting());
    }

    /// One step of a simulated link: what the room's channel and the engine's reads do.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// A message is published; the channel carries it (or it is lost: the
        /// subscription was down), and maybe carries an older one again.
        Publish { carried: bool, repeat: Option<u8> },
        /// The read the room asked for comes back.
        Read,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (any::<u8>(), proptest::option::of(any::<u8>()))
                .prop_map(|(c, repeat)| Step::Publish { carried: c % 5 != 0, repeat }),
            1 => Just(Step::Read),
        ]
    }

    proptest::proptest! {
        /// Whatever the channel loses or repeats, members get every offset once, in order:
        /// gaps are read from the stream (which keeps `kept` messages; a gap it no longer
        /// holds is a reset, and delivery goes on after it, still in order).
        #[test]
        fn delivery_is_in_order_once_whatever_the_channel_loses(
            steps in proptest::collection::vec(step(), 1..200),
            kept in 1usize..50,
        ) {
            let (mut router, mut room) = setup();
            room.on_joined(&mut router, member(1), snapshot("e1", 0, 0..=0));
            drain(&mut router);
            let (mut published, mut read_wanted, mut delivered) = (0u64, false, Vec::<String>::new());
            let stream = |published: u64| {
                let first = published.saturating_sub(kept as u64) + 1;
                snapshot("e1", published, first.max(1)..=published)
            };
            let run = |steps: &[Step], room: &mut FollowedRoom, router: &mut Router, published: &mut u64, read_wanted: &mut bool, out: &mut Vec<String>| {
                for step in steps {
                    match *step {
                        Step::Publish { carried, repeat } => {
                            *published += 1;
                            if carried {
                                *read_wanted |= room.on_message(router, msg(*published));
                            }
                            if let Some(r) = repeat {
                                let old = 1 + u64::from(r) % *published;
                                *read_wanted |= room.on_message(router, msg(old));
                            }
                        }
                        Step::Read if *read_wanted => {
                            *read_wanted = room.on_read(router, stream(*published));
                        }
                        Step::Read => {}
                    }
                    out.extend(drain(router));
                }
            };
            run(&steps, &mut room, &mut router, &mut published, &mut read_wanted, &mut delivered);
            // The link comes back: the engine reads what the room missed.
            room.reading = true;
            read_wanted = room.on_read(&mut router, stream(published));
            delivered.extend(drain(&mut router));
            proptest::prop_assert!(!read_wanted, "caught up");
            // Offsets strictly one after the other, except across a reset.
            let mut last = 0u64;
            for event in &delivered {
                if let Some(reset) = event.strip_prefix("Re1/") {
                    let to: u64 = reset.parse().unwrap();
                    proptest::prop_assert!(to > last, "a reset moves forward");
                    last = to;
                } else {
                    let offset: u64 = event.strip_prefix('m').unwrap().parse().unwrap();
                    proptest::prop_assert_eq!(offset, last + 1, "in order, once: {:?}", delivered);
                    last = offset;
                }
            }
            proptest::prop_assert_eq!(last, published, "caught up with the stream");
            let resets = delivered.iter().filter(|e| e.starts_with('R')).count();
            if published <= kept as u64 {
                proptest::prop_assert_eq!(resets, 0, "nothing aged out of the stream: no reset");
            }
        }
    }
}
