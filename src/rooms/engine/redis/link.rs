//! The link between one node and its Redis instances (shards): per shard, two threads
//! with blocking `redis` connections, never a worker's event loop.
//!
//! - The **command thread** takes requests from every worker, pipelines what has queued
//!   up (one round trip per batch), and sends each reply to the asking worker. Scripts
//!   are loaded on connect and called by hash.
//! - The **channel thread** holds the pub/sub connection: it subscribes a room's channel
//!   when the room's owner worker asks (one subscription per room per node, whatever its
//!   members) and hands each message to that worker.
//!
//! Workers are reached through a [`Port`]: an mpsc channel and the worker's doorbell,
//! rung once per batch (a flag says whether the worker has been rung since it last
//! drained). Either connection lost: requests are answered [`Down`] (the engine answers
//! 503: nothing is accepted that could be lost), the thread reconnects with backoff, the
//! channel thread resubscribes every room, and every worker hears `Down`/`Up` so owners
//! can read what they missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{info, warn};
use redis::{Cmd, Connection, Value};

use super::store::{self, Scripts};
use crate::rooms::engine::{NodeReport, RoomsSummary};
use crate::server::Doorbell;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A command batch not answered within this is a dead link.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the channel thread looks for (un)subscribe requests while no message comes.
const CHANNEL_POLL: Duration = Duration::from_millis(10);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Commands sent in one pipeline at most.
const MAX_BATCH: usize = 512;

/// A request could not be answered: the link to that Redis is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Down;

/// What a worker asks of a shard.
#[derive(Debug)]
pub enum Op {
    /// One command (a script call, mostly).
    Command(Cmd),
    /// Every room in this Redis, for `GET /api/rooms` and `/metrics`.
    Rooms {
        /// Presence entries older than this are not counted.
        now_ms: u64,
    },
}

/// A reply.
#[derive(Debug)]
pub enum Reply {
    /// A command's reply (a server error included, as `Value::ServerError`).
    Value(Value),
    /// The rooms of one shard.
    Rooms(RoomsSummary),
}

/// What the link hands a worker.
#[derive(Debug)]
pub enum Inbound {
    /// The reply to request `token`.
    Reply {
        /// The request's token.
        token: u64,
        /// Its reply, or why none.
        result: Result<Reply, Down>,
    },
    /// A message on the channel of `room` (a room this worker owns).
    Channel {
        /// The room.
        room: Arc<str>,
        /// The message, as published.
        payload: Bytes,
    },
    /// The channel of `room` is subscribed (by the subscription `token` that
    /// [`Backplane::subscribe`] returned): messages published from now on will come. A
    /// token other than the latest one asked for that room is a subscription since undone.
    Subscribed {
        /// The room.
        room: Arc<str>,
        /// Which subscription.
        token: u64,
    },
    /// The link to shard `.0` is down.
    Down(usize),
    /// The link to shard `.0` is back, every channel subscribed again.
    Up(usize),
}

/// A request to a shard's command thread; its reply goes to `part` of `worker`.
#[derive(Debug)]
struct Request {
    worker: usize,
    part: Part,
    token: u64,
    op: Op,
}

#[derive(Debug)]
enum Subscription {
    Subscribe { channel: String, room: Arc<str>, worker: usize, part: Part, token: u64 },
    Unsubscribe { channel: String },
}

/// Which part of a worker a channel's messages go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The engine (a room's channel).
    Engine,
    /// The raw relay (a relay room's channel).
    Relay,
    /// Reaching users across nodes (`rooms/reach.rs`): its channels are named in full.
    Users,
}

/// Where a subscribed channel's messages go.
#[derive(Debug, Clone)]
struct Route {
    room: Arc<str>,
    worker: usize,
    part: Part,
    token: u64,
}

/// Counters of the link, for `/metrics`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Connections made again after a loss.
    pub reconnects: AtomicU64,
    /// Commands sent and not answered yet.
    pub in_flight: AtomicU64,
    /// Bytes received on channels.
    pub channel_bytes: AtomicU64,
    /// Command round trips (batches), and their total time in microseconds.
    pub round_trips: AtomicU64,
    /// Sum of round-trip times, microseconds.
    pub round_trip_micros: AtomicU64,
    /// Round trips per latency bucket: <0.25, <0.5, <1, <2, <5, <10, <50 ms, more.
    pub round_trip_buckets: [AtomicU64; 8],
    /// Reads of a room's stream to fill a gap (after a lost channel connection).
    pub gap_fills: AtomicU64,
    /// Rooms whose continuity was lost (`reset` pushes to their members here).
    pub resets: AtomicU64,
}

/// Upper bounds of `LinkStats::round_trip_buckets`, in seconds (the last is +Inf).
pub const ROUND_TRIP_BOUNDS: [f64; 7] = [0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05];

impl LinkStats {
    /// Appends the Prometheus text of these counters (`up`: every shard reachable).
    pub fn render(&self, up: bool, out: &mut String) {
        use std::fmt::Write as _;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let name = "wsedge_redis_round_trip_seconds";
        let _ = writeln!(out, "# HELP {name} Round trips to Redis (one per pipelined batch).\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bucket, bound) in self.round_trip_buckets.iter().zip(ROUND_TRIP_BOUNDS.iter().map(Some).chain([None])) {
            cumulative += get(bucket);
            let le = bound.map_or_else(|| "+Inf".to_owned(), f64::to_string);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}", get(&self.round_trip_micros) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", get(&self.round_trips));
        let mut metric = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric("wsedge_redis_up", "1 while every Redis is reachable (commands and channels).", "gauge", u64::from(up));
        metric(
            "wsedge_redis_reconnects_total",
            "Connections to Redis made again after a loss.",
            "counter",
            get(&self.reconnects),
        );
        metric(
            "wsedge_redis_commands_in_flight",
            "Commands sent to Redis and not answered yet.",
            "gauge",
            get(&self.in_flight),
        );
        metric(
            "wsedge_redis_channel_bytes_total",
            "Bytes received on room channels.",
            "counter",
            get(&self.channel_bytes),
        );
        metric(
            "wsedge_redis_gap_fills_total",
            "Stream reads filling a gap in a room's delivery.",
            "counter",
            get(&self.gap_fills),
        );
        metric(
            "wsedge_redis_resets_total",
            "Rooms whose continuity was lost (members got a reset).",
            "counter",
            get(&self.resets),
        );
    }

    fn round_trip(&self, took: Duration) {
        let bucket = ROUND_TRIP_BOUNDS.iter().position(|b| took.as_secs_f64() < *b).unwrap_or(7);
        self.round_trip_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.round_trip_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

struct Shard {
    /// For logs: the address without credentials.
    name: String,
    commands: Sender<Request>,
    subscriptions: Sender<Subscription>,
    commands_up: AtomicBool,
    channel_up: AtomicBool,
}

struct Port {
    tx: Sender<Inbound>,
    doorbell: Doorbell,
    rung: Arc<AtomicBool>,
}

impl Port {
    fn send(&self, item: Inbound) {
        if self.tx.send(item).is_ok() && !self.rung.swap(true, Ordering::SeqCst) {
            self.doorbell.ring();
        }
    }
}

struct Inner {
    shards: Vec<Shard>,
    /// Per worker: its engine's inbox, its relay's, and its part reaching users.
    ports: Vec<OnceLock<Port>>,
    relay_ports: Vec<OnceLock<Port>>,
    users_ports: Vec<OnceLock<Port>>,
    stats: LinkStats,
    /// The last subscription token handed out.
    subscriptions: AtomicU64,
    /// Every node's latest report, as the last report read them (`Backplane::nodes`).
    nodes: Mutex<Arc<[NodeReport]>>,
}

impl Inner {
    fn port(&self, worker: usize) -> Option<&Port> {
        self.ports.get(worker)?.get()
    }

    fn port_of(&self, route: &Route) -> Option<&Port> {
        self.port_for(route.part, route.worker)
    }

    fn port_for(&self, part: Part, worker: usize) -> Option<&Port> {
        match part {
            Part::Engine => self.port(worker),
            Part::Relay => self.relay_ports.get(worker)?.get(),
            Part::Users => self.users_ports.get(worker)?.get(),
        }
    }

    fn tell_all(&self, item: impl Fn() -> Inbound) {
        for port in self.ports.iter().filter_map(OnceLock::get) {
            port.send(item());
        }
    }
}

/// One node's link to its Redis shards, shared by its workers.
#[derive(Clone)]
pub struct Backplane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inner.shards.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Backplane").field("shards", &names).finish_non_exhaustive()
    }
}

/// A worker's end of the link: what the link threads sent it.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Inbound>,
    rung: Arc<AtomicBool>,
}

impl Inbox {
    /// The next item, if any (the next one sent after this drained rings again).
    pub fn next(&self) -> Option<Inbound> {
        match self.rx.try_recv() {
            Ok(item) => Some(item),
            Err(_) => {
                self.rung.store(false, Ordering::SeqCst);
                // Something may have come between the miss and the reset, without a ring.
                self.rx.try_recv().ok()
            }
        }
    }
}

impl Backplane {
    /// Connects to every Redis (`redis://host:port[/db]` URLs; rooms are spread over them
    /// by a hash of their name) for a node of `workers` workers, and starts the link
    /// threads. An unreachable Redis is an error here; later losses are reconnected.
    pub fn connect(urls: &[String], workers: usize) -> Result<Backplane, String> {
        if urls.is_empty() {
            return Err("no Redis URL".into());
        }
        let mut shards = Vec::new();
        let mut receivers = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.as_str()).map_err(|e| format!("Redis URL {url:?}: {e}"))?;
            let name = {
                let info = client.get_connection_info();
                format!("{}", info.addr())
            };
            // Pub/sub ignores the database number: two databases of one server would hear
            // every channel twice.
            if shards.iter().any(|s: &Shard| s.name == name) {
                return Err(format!("Redis {name} is named twice: give each shard a server of its own"));
            }
            let mut con =
                client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(|e| format!("Redis {name}: {e}"))?;
            redis::cmd("PING").query::<String>(&mut con).map_err(|e| format!("Redis {name}: {e}"))?;
            let (commands, command_rx) = mpsc::channel();
            let (subscriptions, subscription_rx) = mpsc::channel();
            let up = |v| AtomicBool::new(v);
            shards.push(Shard { name, commands, subscriptions, commands_up: up(true), channel_up: up(false) });
            receivers.push((client, command_rx, subscription_rx));
        }
        let ports = (0..workers.max(1)).map(|_| OnceLock::new()).collect();
        let relay_ports = (0..workers.max(1)).map(|_| OnceLock::new()).collect();
        let users_ports = (0..workers.max(1)).map(|_| OnceLock::new()).collect();
        let inner = Arc::new(Inner {
            shards,
            ports,
            relay_ports,
            users_ports,
            stats: LinkStats::default(),
            subscriptions: AtomicU64::new(0),
            nodes: Mutex::new(Arc::from([])),
        });
        for (shard, (client, command_rx, subscription_rx)) in receivers.into_iter().enumerate() {
            let (a, b) = (inner.clone(), inner.clone());
            let client2 = client.clone();
            thread::Builder::new()
                .name(format!("wsedge-redis-{shard}"))
                .spawn(move || run_commands(&a, shard, &client, &command_rx))
                .map_err(|e| e.to_string())?;
            thread::Builder::new()
                .name(format!("wsedge-redis-{shard}-sub"))
                .spawn(move || run_channel(&b, shard, &client2, &subscription_rx))
                .map_err(|e| e.to_string())?;
        }
        // Ready when every channel connection is: a join needs one.
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while !inner.shards.iter().all(|s| s.channel_up.load(Ordering::Relaxed)) {
            if Instant::now() > deadline {
                return Err("Redis: the pub/sub connection did not come up".into());
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(Backplane { inner })
    }

    /// Worker `worker`'s engine inbox, woken through `doorbell`. Once per worker.
    pub fn attach(&self, worker: usize, doorbell: Doorbell) -> Inbox {
        Backplane::open_port(&self.inner.ports, worker, doorbell)
    }

    /// Worker `worker`'s relay inbox (messages of relay rooms it owns). Once per worker.
    pub fn attach_relay(&self, worker: usize, doorbell: Doorbell) -> Inbox {
        Backplane::open_port(&self.inner.relay_ports, worker, doorbell)
    }

    /// Worker `worker`'s inbox for reaching users across nodes. Once per worker.
    pub fn attach_users(&self, worker: usize, doorbell: Doorbell) -> Inbox {
        Backplane::open_port(&self.inner.users_ports, worker, doorbell)
    }

    fn open_port(ports: &[OnceLock<Port>], worker: usize, doorbell: Doorbell) -> Inbox {
        let (tx, rx) = mpsc::channel();
        let rung = Arc::new(AtomicBool::new(false));
        if let Some(slot) = ports.get(worker) {
            let _ = slot.set(Port { tx, doorbell, rung: rung.clone() });
        }
        Inbox { rx, rung }
    }

    /// How many Redis instances rooms are spread over.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The shard of room `name`: a hash that is the same on every node (FNV-1a).
    pub fn shard_of(&self, name: &str) -> usize {
        let hash =
            name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (hash % self.inner.shards.len().max(1) as u64) as usize
    }

    /// Whether both connections to `shard` are up.
    pub fn is_up(&self, shard: usize) -> bool {
        self.inner
            .shards
            .get(shard)
            .is_some_and(|s| s.commands_up.load(Ordering::Relaxed) && s.channel_up.load(Ordering::Relaxed))
    }

    /// Whether `shard` takes commands (a publish needs no subscription: it is in the
    /// stream, and each node's channel catches up from there).
    pub fn takes_commands(&self, shard: usize) -> bool {
        self.inner.shards.get(shard).is_some_and(|s| s.commands_up.load(Ordering::Relaxed))
    }

    /// Whether every shard is up.
    pub fn healthy(&self) -> bool {
        (0..self.shards()).all(|s| self.is_up(s))
    }

    /// The link's counters.
    pub fn stats(&self) -> &LinkStats {
        &self.inner.stats
    }

    /// Every node's latest report, as this node last read them (every worker's admin view
    /// shows the list one worker reads).
    pub fn nodes(&self) -> Arc<[NodeReport]> {
        self.inner.nodes.lock().map(|nodes| nodes.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The node list just read.
    pub fn set_nodes(&self, nodes: Vec<NodeReport>) {
        let nodes = Arc::from(nodes);
        match self.inner.nodes.lock() {
            Ok(mut slot) => *slot = nodes,
            Err(poisoned) => *poisoned.into_inner() = nodes,
        }
    }

    /// Sends `op` to `shard`'s command thread; the reply comes to `worker` as
    /// [`Inbound::Reply`] with `token`.
    pub fn request(&self, shard: usize, worker: usize, token: u64, op: Op) {
        self.request_for(Part::Engine, shard, worker, token, op);
    }

    /// As [`Backplane::request`], the reply going to `part` of `worker`.
    pub fn request_for(&self, part: Part, shard: usize, worker: usize, token: u64, op: Op) {
        let Some(s) = self.inner.shards.get(shard) else { return };
        self.inner.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::SendError(req)) = s.commands.send(Request { worker, part, token, op }) {
            self.inner.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Some(port) = self.inner.port_for(req.part, req.worker) {
                port.send(Inbound::Reply { token, result: Err(Down) });
            }
        }
    }

    /// Subscribes `room`'s channel (a relay room's, for `Part::Relay`) for its owner
    /// `worker`; answered with [`Inbound::Subscribed`] carrying the token returned here (a
    /// room unsubscribed and subscribed again in quick succession hears of both: only the
    /// latest token says the channel is live now).
    pub fn subscribe(&self, shard: usize, worker: usize, room: Arc<str>, part: Part) -> u64 {
        let token = self.inner.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(s) = self.inner.shards.get(shard) {
            let channel = channel_of(&room, part);
            let _ = s.subscriptions.send(Subscription::Subscribe { channel, room, worker, part, token });
        }
        token
    }

    /// Unsubscribes `room`'s channel (nobody is in it here any more).
    pub fn unsubscribe(&self, shard: usize, room: &str, part: Part) {
        if let Some(s) = self.inner.shards.get(shard) {
            let channel = channel_of(room, part);
            let _ = s.subscriptions.send(Subscription::Unsubscribe { channel });
        }
    }

    /// Publishes `payload` on relay room `room`'s channel, expecting no reply.
    pub fn publish_relay(&self, room: &str, payload: Vec<u8>) {
        self.publish(&channel_of(room, Part::Relay), payload);
    }

    /// Publishes `payload` on `channel` (on its shard), expecting no reply.
    pub fn publish(&self, channel: &str, payload: Vec<u8>) {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.request(self.shard_of(channel), usize::MAX, 0, Op::Command(cmd));
    }
}

/// The channel of a room (`wsedge:{R}`) or of a relay room (`wsedge:relay:{R}`).
fn channel_of(room: &str, part: Part) -> String {
    match part {
        Part::Engine => store::RoomKeys::new(room).channel,
        Part::Relay => format!("wsedge:relay:{{{room}}}"),
        Part::Users => room.to_owned(),
    }
}

fn connect(client: &redis::Client, scripts: &Scripts) -> redis::RedisResult<Connection> {
    let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut load = redis::pipe();
    for cmd in scripts.load_commands() {
        load.add_command(cmd);
    }
    load.exec(&mut con)?;
    Ok(con)
}

/// The command thread of `shard`: until every worker has gone.
fn run_commands(inner: &Inner, shard: usize, client: &redis::Client, rx: &Receiver<Request>) {
    let Some(me) = inner.shards.get(shard) else { return };
    let scripts = Scripts::default();
    let mut con: Option<Connection> = None;
    let mut backoff = MIN_BACKOFF;
    let mut was_down = false;
    let answer = |req: Request, result: Result<Reply, Down>| {
        inner.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(port) = inner.port_for(req.part, req.worker) {
            port.send(Inbound::Reply { token: req.token, result });
        }
    };
    loop {
        let Some(link) = con.as_mut() else {
            match connect(client, &scripts) {
                Ok(c) => {
                    con = Some(c);
                    backoff = MIN_BACKOFF;
                    me.commands_up.store(true, Ordering::Relaxed);
                    if was_down {
                        inner.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        info!("Redis {}: commands connected again", me.name);
                        inner.tell_all(|| Inbound::Up(shard));
                    }
                }
                Err(e) => {
                    if !was_down {
                        warn!("Redis {}: commands: {e}; reconnecting", me.name);
                    }
                    was_down = true;
                    me.commands_up.store(false, Ordering::Relaxed);
                    // While down, every request is answered at once: nothing waits.
                    let until = Instant::now() + backoff;
                    loop {
                        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                            Ok(req) => answer(req, Err(Down)),
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        let Ok(first) = rx.recv() else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        match execute(link, &scripts, &batch) {
            Ok(replies) => {
                inner.stats.round_trip(started.elapsed());
                for (req, reply) in batch.into_iter().zip(replies) {
                    answer(req, Ok(reply));
                }
            }
            Err(e) => {
                warn!("Redis {}: commands: {e}; reconnecting", me.name);
                was_down = true;
                me.commands_up.store(false, Ordering::Relaxed);
                inner.tell_all(|| Inbound::Down(shard));
                con = None;
                for req in batch {
                    answer(req, Err(Down));
                }
            }
        }
    }
}

/// Runs a batch: the commands in one pipeline, room listings one by one (in order).
fn execute(con: &mut Connection, scripts: &Scripts, batch: &[Request]) -> redis::RedisResult<Vec<Reply>> {
    let mut replies = Vec::with_capacity(batch.len());
    let mut pipe = redis::pipe();
    let mut queued = 0;
    for req in batch {
        match &req.op {
            Op::Command(cmd) => {
                pipe.add_command(cmd.clone());
                queued += 1;
            }
            Op::Rooms { now_ms } => {
                flush(con, scripts, &mut pipe, &mut queued, &mut replies)?;
                replies.push(Reply::Rooms(list_rooms(con, *now_ms)?));
            }
        }
    }
    flush(con, scripts, &mut pipe, &mut queued, &mut replies)?;
    Ok(replies)
}

fn flush(
    con: &mut Connection,
    scripts: &Scripts,
    pipe: &mut redis::Pipeline,
    queued: &mut usize,
    replies: &mut Vec<Reply>,
) -> redis::RedisResult<()> {
    if *queued == 0 {
        return Ok(());
    }
    let mut values: Vec<Value> = pipe.ignore_errors().query(con)?;
    // Scripts flushed from Redis (SCRIPT FLUSH, a restart between batches): load them and
    // run those commands again, once.
    let noscript = |v: &Value| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT");
    if values.iter().any(noscript) {
        let mut load = redis::pipe();
        for cmd in scripts.load_commands() {
            load.add_command(cmd);
        }
        load.exec(con)?;
        for (value, cmd) in values.iter_mut().zip(pipe.cmd_iter()) {
            if noscript(value) {
                *value = match cmd.query::<Value>(con) {
                    Ok(v) => v,
                    Err(e) if e.is_io_error() => return Err(e),
                    Err(_) => Value::Nil, // refused again: answered 503
                };
            }
        }
    }
    replies.extend(values.into_iter().map(Reply::Value));
    *pipe = redis::pipe();
    *queued = 0;
    Ok(())
}

/// Every room in this Redis (from its registry), with one pipeline of offsets, present
/// members, kept messages and their memory.
fn list_rooms(con: &mut Connection, now_ms: u64) -> redis::RedisResult<RoomsSummary> {
    let rooms: Vec<String> =
        redis::cmd("ZRANGEBYSCORE").arg(store::ROOMS).arg(format!("({now_ms}")).arg("+inf").query(con)?;
    let mut summary = RoomsSummary::default();
    for page in rooms.chunks(1000) {
        let mut pipe = redis::pipe();
        for room in page {
            let keys = store::RoomKeys::new(room);
            pipe.hget(&keys.meta, "offset").cmd("ZCOUNT").arg(&keys.presence).arg(format!("({now_ms}")).arg("+inf");
            pipe.cmd("XLEN").arg(&keys.stream).cmd("MEMORY").arg("USAGE").arg(&keys.stream);
        }
        let values: Vec<Value> = pipe.ignore_errors().query(con)?;
        for (room, v) in page.iter().zip(values.chunks(4)) {
            let num = |v: Option<&Value>| v.and_then(|v| redis::from_redis_value_ref::<u64>(v).ok()).unwrap_or(0);
            summary.rooms.push((Arc::from(room.as_str()), num(v.get(1)) as usize, num(v.first())));
            summary.history_messages += num(v.get(2)) as usize;
            summary.history_bytes += num(v.get(3)) as usize;
        }
    }
    Ok(summary)
}

/// The channel thread of `shard`: until every worker has gone.
fn run_channel(inner: &Inner, shard: usize, client: &redis::Client, rx: &Receiver<Subscription>) {
    let Some(me) = inner.shards.get(shard) else { return };
    // Channel -> where its messages go: what is subscribed, kept across reconnects.
    let mut channels: HashMap<String, Route> = HashMap::new();
    let mut backoff = MIN_BACKOFF;
    let mut connected_before = false;
    loop {
        let mut con = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(con) => con,
            Err(e) => {
                if me.channel_up.swap(false, Ordering::Relaxed) || !connected_before {
                    warn!("Redis {}: channels: {e}; reconnecting", me.name);
                }
                // Keep the wanted subscriptions current while down.
                let until = Instant::now() + backoff;
                loop {
                    match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                        Ok(sub) => apply_offline(&mut channels, sub),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if con.set_read_timeout(Some(CHANNEL_POLL)).is_err() {
            continue;
        }
        let mut pubsub = con.as_pubsub();
        let resubscribed = channels.keys().try_for_each(|channel| pubsub.subscribe(channel));
        if let Err(e) = resubscribed {
            warn!("Redis {}: channels: {e}; reconnecting", me.name);
            thread::sleep(backoff);
            continue;
        }
        backoff = MIN_BACKOFF;
        me.channel_up.store(true, Ordering::Relaxed);
        if connected_before {
            inner.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            info!("Redis {}: channels connected again, {} resubscribed", me.name, channels.len());
        }
        connected_before = true;
        // Owners waiting for a subscription (made while down) hear it is done; every
        // worker hears the link is up (their rooms read what they missed).
        for route in channels.values() {
            if let Some(port) = inner.port_of(route) {
                port.send(Inbound::Subscribed { room: route.room.clone(), token: route.token });
            }
        }
        inner.tell_all(|| Inbound::Up(shard));
        let error = loop {
            if let Err(e) = apply(&mut pubsub, inner, &mut channels, rx) {
                break e;
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    let payload = msg.get_payload_bytes();
                    inner.stats.channel_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    if let Some(route) = channels.get(msg.get_channel_name()) {
                        if let Some(port) = inner.port_of(route) {
                            let room = route.room.clone();
                            port.send(Inbound::Channel { room, payload: Bytes::copy_from_slice(payload) });
                        }
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => break e,
            }
        };
        warn!("Redis {}: channels: {error}; reconnecting", me.name);
        me.channel_up.store(false, Ordering::Relaxed);
        inner.tell_all(|| Inbound::Down(shard));
    }
}

/// (Un)subscribes what owners asked for since the last look.
fn apply(
    pubsub: &mut redis::PubSub<'_>,
    inner: &Inner,
    channels: &mut HashMap<String, Route>,
    rx: &Receiver<Subscription>,
) -> redis::RedisResult<()> {
    while let Ok(sub) = rx.try_recv() {
        match sub {
            Subscription::Subscribe { channel, room, worker, part, token } => {
                // Kept first: if the subscribe fails, the reconnect makes and confirms it.
                let route = Route { room: room.clone(), worker, part, token };
                channels.insert(channel.clone(), route.clone());
                pubsub.subscribe(&channel)?;
                if let Some(port) = inner.port_of(&route) {
                    port.send(Inbound::Subscribed { room, token });
                }
            }
            Subscription::Unsubscribe { channel } => {
                channels.remove(&channel);
                pubsub.unsubscribe(&channel)?;
            }
        }
    }
    Ok(())
}

fn apply_offline(channels: &mut HashMap<String, Route>, sub: Subscription) {
    match sub {
        Subscription::Subscribe { channel, room, worker, part, token } => {
            channels.insert(channel, Route { room, worker, part, token });
        }
        Subscription::Unsubscribe { channel } => {
            channels.remove(&channel);
        }
    }
}
