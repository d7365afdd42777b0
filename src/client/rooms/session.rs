//! The room protocol's client side as a state machine, with no IO and no clock: what
//! [`RoomClient`](super::RoomClient) keeps across connections. Fed the frames a connection
//! receives ([`Session::on_text`]) and told when a connection starts and ends, it says what
//! to send ([`Session::poll_transmit`]) and what the program should hear
//! ([`Session::poll_event`]).
//!
//! It keeps the contract of docs/protocol.md, "Recovery after a reconnect": per room the
//! epoch and the last offset delivered; rejoins with `since`; `missed` is delivered before
//! any live message (live pushes that arrive while a room is syncing wait); a room that was
//! not recovered is reloaded with `history` and reported as a [`RoomEvent::Reset`]; every
//! offset reaches the program once, in order. Publishes carry an idempotency key and are
//! sent again after a drop until a reply settles them, so none is lost or published twice.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Value};

use crate::wire::code;

/// What a room asks for when it is joined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinOptions {
    /// Ask for `join`/`leave` pushes about the other members.
    pub presence: bool,
    /// On the first join, the room's last `history` messages, delivered as a
    /// [`RoomEvent::Reset`] (0: none, the room starts at its current offset).
    pub history: usize,
}

/// Why a room's state was replaced by a `history` reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The first join, with [`JoinOptions::history`] asked for.
    Join,
    /// A rejoin that was not recovered (`recovered: false`): a gap, or a new epoch.
    NotRecovered,
    /// The server's `reset` push: it lost continuity.
    Reset,
}

/// What the program hears from a [`RoomClient`](super::RoomClient). Fields carry the
/// protocol's names (docs/protocol.md); each variant says what they mean.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum RoomEvent {
    /// A connection is up and the server welcomed it.
    Connected { client: String, user: Option<String> },
    /// The connection ended; another is tried in `retry_in` (`None`: the client stopped,
    /// see [`RoomEvent::Stopped`]).
    Disconnected { reason: String, retry_in: Option<std::time::Duration> },
    /// The client gave up for good: nothing more will happen.
    Stopped { reason: String },
    /// A (re)join's reply. `recovered` is the server's word; whether a reload follows is
    /// told by a [`RoomEvent::Reset`].
    Joined { room: String, epoch: String, offset: u64, members: u64, recovered: bool, first: bool },
    /// The server refused to join `room`; the room is dropped.
    JoinRefused { room: String, code: u16, message: String },
    /// The room's state is replaced: `messages` (oldest first) are what the room keeps up
    /// to `offset` in `epoch`. `previous_epoch` is the epoch held before (`None` on the
    /// first join); when it equals `epoch`, messages at or below the offset held before
    /// were delivered already.
    Reset {
        room: String,
        reason: ResetReason,
        epoch: String,
        offset: u64,
        previous_epoch: Option<String>,
        previous_offset: u64,
        messages: Vec<Value>,
    },
    /// A message push (or one from `missed`): each offset once, in order. `offset` is
    /// `None` for ephemeral messages, which are live only.
    Message { room: String, offset: Option<u64>, message: Value },
    /// A `join` or `leave` push about another member (rooms joined with presence).
    Presence { room: String, push: Value },
    /// A message from the backend to our user (`{"op":"message","user","data"}`): live
    /// only, no room, no offset.
    UserMessage { user: String, data: Value },
    /// A publish of ours got its offset (`duplicate`: it had been published before a drop,
    /// and this is the original offset).
    Published { seq: u64, room: String, offset: Option<u64>, duplicate: bool },
    /// A publish of ours was refused; it will not be sent again.
    PublishRefused { seq: u64, room: String, code: u16, message: String },
    /// The server accepted our token (after connecting, or a refresh).
    Authenticated { user: Option<String> },
    /// The server refused our token: the connection is of no use with it.
    AuthRefused { code: u16, message: String },
    /// An error reply to no request of ours that is still waiting.
    Error { code: u16, message: String },
}

impl RoomEvent {
    /// For a [`RoomEvent::Reset`], its messages not delivered before: those above the offset
    /// held when the epoch goes on, all of them when it changed (empty for other events).
    /// `messages` stays the room's whole state, for a program that replaces its own.
    pub fn unseen_messages(&self) -> &[Value] {
        let RoomEvent::Reset { epoch, previous_epoch, previous_offset, messages, .. } = self else { return &[] };
        if previous_epoch.as_deref() != Some(epoch.as_str()) {
            return messages;
        }
        // Oldest first: the unseen ones are a tail.
        let seen = messages.iter().take_while(|m| m["offset"].as_u64().is_some_and(|o| o <= *previous_offset));
        &messages[seen.count()..]
    }
}

/// The publish queue is full: [`Session::publish`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

impl std::fmt::Display for QueueFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too many publishes waiting for a reply")
    }
}

impl std::error::Error for QueueFull {}

/// One room's position and the live pushes held while it syncs.
#[derive(Debug)]
struct Room {
    options: JoinOptions,
    /// `None` until the first join's reply.
    epoch: Option<String>,
    /// The last offset delivered.
    offset: u64,
    /// A join (or its reload) is on its way on this connection: live pushes wait.
    syncing: bool,
    held: Vec<Value>,
    /// Which `join` of this name it is: a reply to an earlier one (left and joined again
    /// meanwhile) is not this room's.
    generation: u64,
}

/// A publish not settled by a reply yet.
#[derive(Debug)]
struct Publish {
    seq: u64,
    room: String,
    data: Value,
    key: String,
    /// Sent on the current connection (else it goes when the room is joined).
    sent: bool,
}

/// What a request id is waiting for (rooms by name and generation).
#[derive(Debug)]
enum Pending {
    /// `refresh`: on a connection already authenticated (a 429 then leaves it as it is).
    Auth {
        refresh: bool,
    },
    Join {
        room: String,
        generation: u64,
        first: bool,
    },
    History {
        room: String,
        generation: u64,
        reason: ResetReason,
    },
    Publish {
        seq: u64,
    },
    Leave,
}

/// Knobs of the session (set through [`RoomClient`](super::RoomClient)'s options).
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Most publishes waiting for a reply (queued offline, or sent).
    pub max_queued_publishes: usize,
    /// Messages asked for when a room is reloaded after a gap.
    pub history_limit: usize,
    /// Most live pushes held for one room while it syncs; beyond, the connection is made
    /// again (and the rejoin recovers them).
    pub max_held: usize,
    /// Most publishes sent and not answered yet: a queue built up offline goes out at this
    /// pace, within the server's burst (`--publish-burst`, 200 by default).
    pub max_in_flight: usize,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits { max_queued_publishes: 1000, history_limit: 100, max_held: 10_000, max_in_flight: 64 }
    }
}

/// The client side of the room protocol across connections. See the module header.
#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    rooms: BTreeMap<String, Room>,
    publishes: VecDeque<Publish>,
    pending: HashMap<u64, Pending>,
    transmit: VecDeque<String>,
    events: VecDeque<RoomEvent>,
    next_id: u64,
    next_seq: u64,
    /// Makes publish keys unique to this session (keys are per room on the server).
    key_prefix: String,
    connected: bool,
    /// Why the current connection can no longer keep the contract (the IO side drops it and
    /// reconnects, and the rejoin with `since` recovers).
    broken: Option<String>,
    /// The server refused this connection's token.
    token_refused: bool,
    /// Publishes sent on this connection and not answered yet.
    in_flight: usize,
    /// The server said to slow down (429 or 503 to a publish): nothing more is sent until
    /// [`Session::resume_publishes`].
    publishes_paused: bool,
    /// Rooms joined so far (the next one's generation).
    joins: u64,
}

impl Session {
    /// A session with no rooms; `key_prefix` should be random (e.g. 12 random characters).
    pub fn new(limits: SessionLimits, key_prefix: String) -> Session {
        Session {
            limits,
            rooms: BTreeMap::new(),
            publishes: VecDeque::new(),
            pending: HashMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            next_seq: 1,
            key_prefix,
            connected: false,
            broken: None,
            token_refused: false,
            in_flight: 0,
            publishes_paused: false,
            joins: 0,
        }
    }

    /// The next frame to send on the current connection.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmit.pop_front()
    }

    /// The next event for the program.
    pub fn poll_event(&mut self) -> Option<RoomEvent> {
        self.events.pop_front()
    }

    /// Why the connection should be dropped and made again, once (see [`Session::on_text`]).
    pub fn take_broken(&mut self) -> Option<String> {
        self.broken.take()
    }

    /// Whether the server refused the current connection's token (then [`Session::take_broken`]
    /// says so too): the next connection needs another.
    pub fn token_refused(&self) -> bool {
        self.token_refused
    }

    /// Whether publishes were paused by a 429 or 503 since the last call: the IO side calls
    /// [`Session::resume_publishes`] after a wait.
    pub fn publishes_paused(&self) -> bool {
        self.publishes_paused
    }

    /// Sends the publishes held back by a pause (and any waiting for room in the window).
    pub fn resume_publishes(&mut self) {
        self.publishes_paused = false;
        self.send_ready_publishes();
    }

    /// Reports an event from the IO side (connections, backoff).
    pub fn report(&mut self, event: RoomEvent) {
        self.events.push_back(event);
    }

    /// The room's epoch and last delivered offset (`None`: not joined yet, or unknown).
    pub fn position(&self, room: &str) -> Option<(&str, u64)> {
        let r = self.rooms.get(room)?;
        Some((r.epoch.as_deref()?, r.offset))
    }

    /// Replaces the bounds (before the first connection).
    pub fn set_limits(&mut self, limits: SessionLimits) {
        self.limits = limits;
    }

    /// Publishes waiting for a reply.
    pub fn queued_publishes(&self) -> usize {
        self.publishes.len()
    }

    fn request(&mut self, op: &str, mut fields: Value, pending: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        fields["id"] = json!(id);
        fields["op"] = json!(op);
        self.pending.insert(id, pending);
        self.transmit.push_back(fields.to_string());
    }

    /// A connection is open (upgraded, not yet welcomed): authenticate with `token`, rejoin
    /// every room (with `since` where a position is known), and send again every publish
    /// not settled.
    pub fn connected(&mut self, token: Option<&str>) {
        self.connected = true;
        self.pending.clear();
        self.transmit.clear();
        if let Some(token) = token {
            self.request("auth", json!({ "token": token }), Pending::Auth { refresh: false });
        }
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.send_join(&name);
        }
    }

    /// The connection ended: replies still awaited will never come.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.broken = None;
        self.token_refused = false;
        self.pending.clear();
        self.transmit.clear();
        for room in self.rooms.values_mut() {
            room.syncing = false;
            room.held.clear();
        }
        self.in_flight = 0;
        self.publishes_paused = false;
        // Sent in a room left since: whether they were published is unknown, and they will
        // not be sent again (the room is not rejoined).
        let rooms = &self.rooms;
        let events = &mut self.events;
        self.publishes.retain(|p| {
            if rooms.contains_key(&p.room) {
                return true;
            }
            let message = "unknown: the connection closed before the reply, after leaving the room".to_owned();
            events.push_back(RoomEvent::PublishRefused { seq: p.seq, room: p.room.clone(), code: 0, message });
            false
        });
        for p in &mut self.publishes {
            p.sent = false;
        }
    }

    /// Sends a new token on the open connection (a refresh before the current one expires).
    pub fn refresh_token(&mut self, token: &str) {
        if self.connected {
            self.request("auth", json!({ "token": token }), Pending::Auth { refresh: true });
        }
    }

    /// Joins `room` (again: replaces its options). Sent at once when connected, else on
    /// connecting.
    pub fn join(&mut self, room: &str, options: JoinOptions) {
        let joins = &mut self.joins;
        let entry = self.rooms.entry(room.to_owned()).or_insert_with(|| {
            *joins += 1;
            Room { options, epoch: None, offset: 0, syncing: false, held: Vec::new(), generation: *joins }
        });
        entry.options = options;
        if self.connected && !entry.syncing {
            self.send_join(room);
        }
    }

    /// Leaves `room`: its publishes not settled are dropped (reported refused).
    pub fn leave(&mut self, room: &str) {
        if self.rooms.remove(room).is_none() {
            return;
        }
        // Those sent are answered (the server takes them before the leave).
        self.drop_publishes(room, 0, "left the room", false);
        if self.connected {
            self.request("leave", json!({ "room": room }), Pending::Leave);
        }
    }

    /// Queues a publish of `data` to `room` and returns its sequence number, which the
    /// [`RoomEvent::Published`] (or `PublishRefused`) settling it names. Sent at once when
    /// the room is joined on a live connection, else after the (re)join.
    pub fn publish(&mut self, room: &str, data: Value) -> Result<u64, QueueFull> {
        if self.publishes.len() >= self.limits.max_queued_publishes {
            return Err(QueueFull);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = format!("{}-{seq}", self.key_prefix);
        self.publishes.push_back(Publish { seq, room: room.to_owned(), data, key, sent: false });
        self.send_ready_publishes();
        Ok(seq)
    }

    fn send_join(&mut self, name: &str) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        room.syncing = true;
        room.held.clear();
        let mut fields = json!({ "room": name });
        if room.options.presence {
            fields["presence"] = json!(true);
        }
        let first = room.epoch.is_none();
        if let Some(epoch) = &room.epoch {
            fields["since"] = json!({ "epoch": epoch, "offset": room.offset });
        }
        let generation = room.generation;
        self.request("join", fields, Pending::Join { room: name.to_owned(), generation, first });
    }

    /// Sends the publishes not sent on this connection whose room is joined and in step,
    /// oldest first, while the window has room (and no 429 paused them).
    fn send_ready_publishes(&mut self) {
        if !self.connected || self.publishes_paused {
            return;
        }
        let mut frames = Vec::new();
        for p in self.publishes.iter_mut().filter(|p| !p.sent) {
            if self.in_flight + frames.len() >= self.limits.max_in_flight {
                break;
            }
            if self.rooms.get(&p.room).is_some_and(|r| r.epoch.is_some() && !r.syncing) {
                p.sent = true;
                frames.push((p.seq, json!({ "room": p.room, "data": p.data, "key": p.key })));
            }
        }
        self.in_flight += frames.len();
        for (seq, fields) in frames {
            self.request("publish", fields, Pending::Publish { seq });
        }
    }

    /// Drops the room's publishes (`sent_too`: also those sent and not answered), reporting
    /// each refused.
    fn drop_publishes(&mut self, room: &str, code: u16, message: &str, sent_too: bool) {
        let events = &mut self.events;
        self.publishes.retain(|p| {
            if p.room != room || (p.sent && !sent_too) {
                return true;
            }
            events.push_back(RoomEvent::PublishRefused {
                seq: p.seq,
                room: p.room.clone(),
                code,
                message: message.to_owned(),
            });
            false
        });
    }

    /// One text frame from the server. Frames that are not the protocol's JSON are
    /// ignored (they cannot come from a wsedge server).
    pub fn on_text(&mut self, text: &str) {
        let Some(v) = parse_frame(text) else { return };
        if let Some(id) = v.get("id").filter(|id| !id.is_null()) {
            let pending = id.as_u64().and_then(|id| self.pending.remove(&id));
            self.on_reply(pending, v);
            return;
        }
        if v.get("error").is_some() {
            return self.on_reply(None, v);
        }
        let room = v["room"].as_str().unwrap_or_default().to_owned();
        match v["op"].as_str() {
            Some("welcome") => self.events.push_back(RoomEvent::Connected {
                client: v["client"].as_str().unwrap_or_default().to_owned(),
                user: v["user"].as_str().map(str::to_owned),
            }),
            // From the backend to our user (`POST /api/publish` with `user`): no room.
            Some("message") if v.get("room").is_none() => {
                if let Some(user) = v["user"].as_str() {
                    let user = user.to_owned();
                    self.events.push_back(RoomEvent::UserMessage { user, data: v["data"].clone() });
                }
            }
            Some("message") => {
                let Some(r) = self.rooms.get_mut(&room) else { return };
                if r.syncing {
                    if r.held.len() < self.limits.max_held {
                        r.held.push(v);
                    } else if self.broken.is_none() {
                        // Holding more would be unbounded; dropping one would be a gap. A new
                        // connection's rejoin with `since` gets them from the room's history.
                        self.broken =
                            Some(format!("more than {} messages held while {room} syncs", self.limits.max_held));
                    }
                    return;
                }
                self.deliver(&room, v);
            }
            Some("join" | "leave") if self.rooms.contains_key(&room) => {
                self.events.push_back(RoomEvent::Presence { room, push: v });
            }
            Some("reset") if self.rooms.get(&room).is_some_and(|r| !r.syncing && r.epoch.is_some()) => {
                self.reload(&room, ResetReason::Reset);
            }
            _ => {}
        }
    }

    /// Delivers a message once: ephemeral ones as they come, others above the room's offset.
    /// Offsets follow each other (docs/protocol.md): one that skips means a message was
    /// missed, and the connection is made again so that the rejoin's `since` recovers it.
    fn deliver(&mut self, room: &str, message: Value) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        let offset = message["offset"].as_u64();
        if let Some(offset) = offset {
            if offset <= r.offset {
                return; // delivered already
            }
            if offset > r.offset + 1 {
                let why = format!("a gap in {room}: offset {offset} after {}", r.offset);
                self.broken.get_or_insert(why);
                return;
            }
            r.offset = offset;
        }
        self.events.push_back(RoomEvent::Message { room: room.to_owned(), offset, message });
    }

    fn reload(&mut self, room: &str, reason: ResetReason) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        r.syncing = true;
        let limit = if reason == ResetReason::Join { r.options.history } else { self.limits.history_limit };
        let pending = Pending::History { room: room.to_owned(), generation: r.generation, reason };
        self.request("history", json!({ "room": room, "limit": limit }), pending);
    }

    /// The room is in step: held pushes go out (those above its offset), then its publishes.
    fn synced(&mut self, room: &str) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        r.syncing = false;
        for message in std::mem::take(&mut r.held) {
            self.deliver(room, message);
        }
        self.send_ready_publishes();
    }

    fn on_reply(&mut self, pending: Option<Pending>, v: Value) {
        if let Some(error) = v.get("error") {
            let code = error["code"].as_u64().and_then(|c| u16::try_from(c).ok()).unwrap_or(0);
            let message = error["message"].as_str().unwrap_or_default().to_owned();
            return self.on_error(pending, code, message);
        }
        let ok = &v["ok"];
        match pending {
            Some(Pending::Auth { .. }) => {
                self.events.push_back(RoomEvent::Authenticated { user: ok["user"].as_str().map(str::to_owned) })
            }
            Some(Pending::Join { room, generation, first }) => self.on_joined(&room, generation, first, ok),
            Some(Pending::History { room, generation, reason }) => self.on_history(&room, generation, reason, ok),
            Some(Pending::Publish { seq }) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if let Some(at) = self.publishes.iter().position(|p| p.seq == seq) {
                    let p = self.publishes.remove(at).expect("found above");
                    self.events.push_back(RoomEvent::Published {
                        seq,
                        room: p.room,
                        offset: ok["offset"].as_u64(),
                        duplicate: ok["duplicate"].as_bool().unwrap_or(false),
                    });
                }
                self.send_ready_publishes();
            }
            Some(Pending::Leave) | None => {}
        }
    }

    fn on_joined(&mut self, name: &str, generation: u64, first: bool, ok: &Value) {
        let Some(room) = room_of(&mut self.rooms, name, generation) else {
            return; // left (and maybe joined again) while the join was on its way
        };
        let epoch = ok["epoch"].as_str().unwrap_or_default().to_owned();
        let offset = ok["offset"].as_u64().unwrap_or(0);
        let recovered = ok["recovered"].as_bool().unwrap_or(false);
        self.events.push_back(RoomEvent::Joined {
            room: name.to_owned(),
            epoch: epoch.clone(),
            offset,
            members: ok["members"].as_u64().unwrap_or(0),
            recovered,
            first,
        });
        if !first && recovered && room.epoch.as_deref() == Some(epoch.as_str()) {
            for message in ok["missed"].as_array().cloned().unwrap_or_default() {
                self.deliver(name, message);
            }
            return self.synced(name);
        }
        if first && room.options.history == 0 {
            room.epoch = Some(epoch);
            room.offset = offset;
            return self.synced(name);
        }
        self.reload(name, if first { ResetReason::Join } else { ResetReason::NotRecovered });
    }

    fn on_history(&mut self, name: &str, generation: u64, reason: ResetReason, ok: &Value) {
        let Some(room) = room_of(&mut self.rooms, name, generation) else { return };
        let epoch = ok["epoch"].as_str().unwrap_or_default().to_owned();
        let offset = ok["offset"].as_u64().unwrap_or(0);
        let previous_epoch = room.epoch.replace(epoch.clone());
        let previous_offset = std::mem::replace(&mut room.offset, offset);
        let messages = ok["messages"].as_array().cloned().unwrap_or_default();
        self.events.push_back(RoomEvent::Reset {
            room: name.to_owned(),
            reason,
            epoch,
            offset,
            previous_epoch,
            previous_offset,
            messages,
        });
        self.synced(name);
    }

    fn on_error(&mut self, pending: Option<Pending>, code: u16, message: String) {
        match pending {
            Some(Pending::Auth { refresh }) => {
                // 429 (too many `auth` requests, or too many connections for the user) says
                // nothing against the token: a refresh is tried again later by the IO side;
                // a first `auth` needs a new connection, after the backoff.
                if code == code::TOO_MANY_REQUESTS {
                    if !refresh {
                        self.broken.get_or_insert_with(|| format!("authentication refused for now: {code} {message}"));
                    }
                } else {
                    self.token_refused = true;
                    self.broken.get_or_insert_with(|| format!("the server refused the token: {code} {message}"));
                }
                self.events.push_back(RoomEvent::AuthRefused { code, message });
            }
            Some(Pending::Join { room, generation, .. }) => {
                // Not this room any more; or the connection is being made again anyway (its
                // `auth` was refused, so the joins behind it got 401): rejoined next time.
                if room_of(&mut self.rooms, &room, generation).is_none() || self.broken.is_some() {
                    return;
                }
                // Refusals that stand (bad request, no token where one is required,
                // forbidden); the rest (429, 503 while the store is down, a full room) may
                // pass: the room is joined again on the next connection, after the backoff.
                if matches!(code, code::BAD_REQUEST | code::UNAUTHORIZED | code::FORBIDDEN | code::NOT_FOUND) {
                    self.rooms.remove(&room);
                    self.drop_publishes(&room, code, "the room could not be joined", true);
                    self.events.push_back(RoomEvent::JoinRefused { room, code, message });
                } else {
                    self.broken.get_or_insert_with(|| format!("joining {room} failed: {code} {message}"));
                    self.events.push_back(RoomEvent::Error { code, message });
                }
            }
            Some(Pending::History { room, .. }) => {
                // The room's state is unknown until a reload succeeds: live pushes keep
                // waiting, and the next connection's rejoin tries again (a 429 or a 503
                // passes).
                if self.broken.is_none() {
                    self.broken = Some(format!("reloading {room} failed: {code} {message}"));
                }
                self.events.push_back(RoomEvent::Error { code, message });
            }
            Some(Pending::Publish { seq }) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                let Some(at) = self.publishes.iter().position(|p| p.seq == seq) else { return };
                if matches!(code, code::TOO_MANY_REQUESTS | code::UNAVAILABLE) {
                    // Slow down, not refused: it goes again after the IO side's wait.
                    self.publishes[at].sent = false;
                    self.publishes_paused = true;
                    return;
                }
                let p = self.publishes.remove(at).expect("found above");
                self.events.push_back(RoomEvent::PublishRefused { seq, room: p.room, code, message });
                self.send_ready_publishes();
            }
            Some(Pending::Leave) | None => self.events.push_back(RoomEvent::Error { code, message }),
        }
    }
}

/// The room `name` as of the request that named `generation` (not one joined again since).
fn room_of<'a>(rooms: &'a mut BTreeMap<String, Room>, name: &str, generation: u64) -> Option<&'a mut Room> {
    rooms.get_mut(name).filter(|r| r.generation == generation)
}

/// A frame as JSON. A wsedge server relays `data` as the publisher wrote it, which may
/// hold an escaped lone surrogate (`"\\ud800"`, as JavaScript's `JSON.stringify` writes
/// one) that `serde_json` refuses: such escapes become U+FFFD rather than the frame (and
/// its offset) being lost. `None`: not JSON at all (no wsedge server sends that).
fn parse_frame(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| serde_json::from_str(&replace_lone_surrogates(text)).ok())
}

/// `text` with every `\\uXXXX` escape of an unpaired UTF-16 surrogate replaced by `\\ufffd`.
/// Never panics, whatever `text` is (it comes from the network).
fn replace_lone_surrogates(text: &str) -> String {
    let surrogate = |hex: Option<&str>| {
        let hex = hex?.strip_prefix("\\u")?;
        u16::from_str_radix(hex, 16).ok().filter(|u| (0xD800..0xE000).contains(u))
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match surrogate(rest.get(..6)) {
            Some(0xD800..=0xDBFF) if surrogate(rest.get(6..12)).is_some_and(|low| low >= 0xDC00) => {
                out.push_str(&rest[..12]); // a valid pair
                rest = &rest[12..];
            }
            Some(_) => {
                out.push_str("\\ufffd");
                rest = &rest[6..];
            }
            None => {
                // Any other escape, copied with the character it escapes (so that an escaped
                // backslash before a `u` stays one).
                let len = rest[1..].chars().next().map_or(1, |c| 1 + c.len_utf8());
                out.push_str(&rest[..len]);
                rest = &rest[len..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
