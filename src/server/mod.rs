//! The IO shell: a single-threaded mio event loop that owns sockets and time, drives the
//! `proto` codec, and hands complete messages to a [`Handler`].
//!
//! The handler API is the seam between transport and application: `echo` is one handler,
//! the room layer another. Handlers never touch sockets; they queue work on an [`Outbox`]
//! (send a message to one connection, or one message to many, framed once for all; answer
//! a deferred HTTP request; close), which the loop applies after the handler returns and
//! flushes once per loop turn, one write per connection (small frames gathered into one
//! contiguous run, large payloads passed as they are). Handlers need not read a clock either:
//! the loop's [`Now`] reaches them through the `Outbox` and as `accept`'s argument.
//!
//! With several workers (`Config::workers`) each worker runs its own loop and its own
//! handler; handlers reach each other over a [`Mesh`] (see `src/server/workers.rs`).

pub mod access;
mod bucket;
mod conn;
mod deadlines;
mod event_loop;
pub mod http;
mod http_phase;
mod listener;
#[cfg(test)]
mod loop_tests;
pub mod metrics;
mod output;
mod payload;
mod policy;
mod pool;
mod reading;
pub mod tls;
mod workers;
mod write_buffers;
mod writing;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::proto::deflate::DeflateConfig;
use crate::proto::handshake::{PlainRequest, UpgradeRequest};
use crate::proto::{self, CloseCode, MessageKind};

pub use bucket::TokenBucket;
pub use event_loop::Server;
pub use http::HttpResponse;
pub use metrics::Metrics;
pub use payload::Payload;
pub use tls::{TlsConfig, TlsError};
pub use workers::{Doorbell, Mesh, ShutdownHandle, Workers, MAX_WORKERS};

/// Transport limits and timeouts. Every limit has a defined outcome, noted per field.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on (port 0: any free port; see `Server::local_addr`).
    pub listen: SocketAddr,
    /// Event loops (threads), each with its own `SO_REUSEPORT` listener on `listen`
    /// (`Workers`; `Server` is always one). The CLI defaults to the number of cores.
    pub workers: usize,
    /// Frame and message limits (-> close 1009).
    pub protocol: proto::Config,
    /// Largest HTTP request head (-> 431).
    pub max_head_bytes: usize,
    /// Time allowed from accept to a complete request head (-> connection dropped).
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's close frame, then for its FIN, before dropping.
    pub close_linger: Duration,
    /// Open connections per server (all workers together); beyond it an upgrade gets 503.
    pub max_connections: usize,
    /// The listen(2) backlog: connections the kernel queues before `accept` (capped by
    /// net.core.somaxconn).
    pub backlog: u32,
    /// Sockets still in their HTTP phase (handshaking, or idle keep-alive) on top of the
    /// open connections; beyond it a new socket is accepted and closed at once, so a flood
    /// of silent sockets cannot exhaust file descriptors. Counted across all workers.
    pub max_handshakes: usize,
    /// A server ping goes to a connection silent for this long, and it is dropped after
    /// twice this (a half-open TCP connection otherwise lives forever). Zero disables.
    pub ping_interval: Duration,
    /// After SIGINT/SIGTERM or `ShutdownHandle::shutdown`, how long to wait for clients
    /// to answer close 1001 before exiting anyway.
    pub shutdown_timeout: Duration,
    /// Stop gracefully on SIGINT/SIGTERM (the CLI sets this; embedded servers use
    /// `ShutdownHandle`).
    pub handle_signals: bool,
    /// Outbound bytes queued per connection before the server stops reading from it
    /// (backpressure: a client that sends but does not read is not read from either).
    pub write_high_water: usize,
    /// Outbound bytes queued per connection for traffic it did not ask for (fan-out from
    /// other connections) before it is closed with 1013 "slow consumer" (a connection whose
    /// socket is still taking bytes may hold up to twice this through a burst). Fast
    /// receivers never wait for a slow one; the slow one can reconnect and recover from
    /// history.
    pub max_outbound_bytes: usize,
    /// Largest plain HTTP request body (-> 413).
    pub max_body_bytes: usize,
    /// How often the handler's `on_tick` runs (history expiry and the like).
    pub tick_interval: Duration,
    /// Reads during one turn's writes: a flush of more than `FLUSH_SLICE` (512)
    /// connections reads what became ready after each slice, at most this many times a
    /// turn, so messages arriving during a big fan-out join it instead of waiting for the
    /// next turn; such a flush also writes the connections read this turn first (see
    /// `writing.rs`). 0: neither (each turn writes, then polls).
    pub flush_reads: usize,
    /// Subprotocols the server speaks, in no particular order; the client's first offered
    /// one that is here is selected.
    pub subprotocols: Vec<String>,
    /// permessage-deflate (RFC 7692): on by default, in the lean `shared` mode.
    pub deflate: DeflateConfig,
    /// TLS on the listener (`wss://`, `https://`), or `None` for plaintext. Its
    /// certificate reloads on SIGHUP (with `handle_signals`) or through
    /// [`TlsConfig::reload`] on any clone.
    pub tls: Option<TlsConfig>,
    /// Who may upgrade: allowed origins (-> 403), per-IP limits (-> 429), trusted proxies.
    pub access: access::AccessConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            workers: 1,
            protocol: proto::Config::default(),
            max_head_bytes: 8 * 1024,
            handshake_timeout: Duration::from_secs(10),
            close_linger: Duration::from_secs(5),
            max_connections: 10_000,
            backlog: 4096,
            max_handshakes: 2048,
            ping_interval: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            handle_signals: false,
            write_high_water: 4 << 20,
            max_outbound_bytes: 4 << 20,
            max_body_bytes: 1 << 20,
            tick_interval: Duration::from_secs(1),
            flush_reads: 4,
            subprotocols: Vec::new(),
            deflate: DeflateConfig::default(),
            tls: None,
            access: access::AccessConfig::default(),
        }
    }
}

/// Identifies a connection for as long as it lives, across all workers; never reused for
/// another connection (the slab index is paired with a generation, and with the worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    worker: u16,
    index: u32,
    generation: u32,
}

impl ConnId {
    pub(crate) fn new(worker: u16, index: usize, generation: u32) -> Option<ConnId> {
        Some(ConnId { worker, index: u32::try_from(index).ok()?, generation })
    }

    /// A connection id of worker 0 from its parts, for driving a handler without a server
    /// (tests, benchmarks, fuzz targets). Ids the server hands out come from its own table.
    /// A test and fuzz door: only with the `fuzzing` feature (or in unit tests).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn from_parts(index: u32, generation: u32) -> ConnId {
        ConnId { worker: 0, index, generation }
    }

    /// An id of any worker from its parts (tests of code that spans workers). A test and
    /// fuzz door: only with the `fuzzing` feature (or in unit tests).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn for_worker(worker: u16, index: u32, generation: u32) -> ConnId {
        ConnId { worker, index, generation }
    }

    /// The slab index and generation.
    pub fn parts(self) -> (u32, u32) {
        (self.index, self.generation)
    }

    /// The worker the connection lives on.
    pub fn worker(self) -> usize {
        usize::from(self.worker)
    }

    pub(crate) fn index(self) -> usize {
        self.index as usize
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation
    }
}

/// The time of one loop turn as a handler sees it. The loop reads the clocks once per turn
/// and hands the result to every [`Handler`] call (through the [`Outbox`], or as an
/// argument to `accept`): a handler never reads a clock, so a test drives its deadlines,
/// rates and token expiry by passing time in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time: deadlines, rate limits, ages.
    pub mono: Instant,
    /// Wall-clock time since the Unix epoch: what tokens (`exp`, `nbf`) and other nodes
    /// speak.
    pub unix: Duration,
}

impl Now {
    /// Reads both clocks (the loop does, once per turn; so do tests that start from now).
    pub fn read() -> Now {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Now { mono: Instant::now(), unix }
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_secs(self) -> u64 {
        self.unix.as_secs()
    }

    /// The time `d` later, on both clocks.
    #[must_use]
    pub fn after(self, d: Duration) -> Now {
        Now { mono: self.mono + d, unix: self.unix + d }
    }
}

/// Work a handler asks of the loop; applied in order after the handler returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// One message to one connection ([`Outbox::send`]).
    Message(ConnId, MessageKind, Bytes),
    /// One small message to one connection, copied into the outbox
    /// ([`Outbox::send_payload`]): these bytes of it until the loop applies it
    /// ([`Outbox::take`] hands it out as a `Message`).
    Copied(ConnId, MessageKind, std::ops::Range<usize>),
    /// One message to many connections, framed once ([`Outbox::broadcast`]).
    Broadcast {
        /// The receivers (a room's shared member list).
        to: Arc<[ConnId]>,
        /// A receiver left out (e.g. the publisher, without echo).
        except: Option<ConnId>,
        /// Text or binary.
        kind: MessageKind,
        /// The message, shared by every receiver's frame.
        payload: Bytes,
    },
    /// Starts the close handshake with a code and reason ([`Outbox::close`]).
    Close(ConnId, CloseCode, String),
    /// The deferred answer to a plain HTTP request (`Handler::on_http` returned `None`).
    /// (Boxed: a rare command, and the big one; every command moves at the size of the biggest.)
    Respond(ConnId, Box<HttpResponse>),
}

/// Where handlers queue their output. Sends to connections that are gone or closing are
/// dropped (the handler learns of the close through `on_close`). It also carries the loop's
/// notion of now: handlers never read the clock.
#[derive(Debug)]
pub struct Outbox {
    /// Applied from the front while handlers (`on_close` of a close it applies) add to the back.
    commands: VecDeque<Command>,
    /// The bytes of `Copied` commands, emptied once they are applied.
    copied: Vec<u8>,
    now: Now,
}

impl Outbox {
    /// An empty outbox at time `now`.
    pub fn new(now: Now) -> Self {
        Outbox { commands: VecDeque::new(), copied: Vec::new(), now }
    }

    /// The time of the current loop turn.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Moves the outbox to a new turn's time (the loop does this; tests drive time with it).
    pub fn set_now(&mut self, now: Now) {
        self.now = now;
    }

    /// Takes the queued commands (tests inspect them; the loop applies them in place).
    pub fn take(&mut self) -> Vec<Command> {
        let copied = std::mem::take(&mut self.copied);
        let owned = |command| match command {
            Command::Copied(to, kind, at) => {
                Command::Message(to, kind, Bytes::copy_from_slice(copied.get(at).unwrap_or_default()))
            }
            other => other,
        };
        self.commands.drain(..).map(owned).collect()
    }

    /// Sends a message to one connection (encoded with that connection's codec).
    pub fn send(&mut self, to: ConnId, kind: MessageKind, payload: Bytes) {
        self.commands.push_back(Command::Message(to, kind, payload));
    }

    /// Sends a message the handler received on to one connection (an echo): one of up to
    /// `COPY_MAX` bytes is copied here (the loop copies it again, into the connection's
    /// cork, and no reference count is taken); a bigger one goes as the shared `Bytes` it
    /// arrived in, without a copy.
    pub fn send_payload(&mut self, to: ConnId, kind: MessageKind, payload: Payload<'_>) {
        if payload.len() > write_buffers::COPY_MAX {
            return self.send(to, kind, payload.into_bytes());
        }
        let start = self.copied.len();
        self.copied.extend_from_slice(&payload);
        self.commands.push_back(Command::Copied(to, kind, start..self.copied.len()));
    }

    /// The bytes of applied `Copied` commands are no longer needed (the loop calls this
    /// when the queue is empty). A burst's buffer is not kept beyond its turn.
    fn applied(&mut self) {
        self.copied.clear();
        if self.copied.capacity() > 16 * write_buffers::COPY_MAX {
            self.copied = Vec::new();
        }
    }

    /// Sends one message to many connections (all of `to` but `except`). It is framed
    /// once, and compressed at most once per window size, for every receiver without
    /// context takeover on the server side (`shared` deflate mode): each receiver's write
    /// queue holds a clone of the same `Bytes`. Receivers with context takeover
    /// (`dedicated` mode) are compressed one by one, since their compressor's history
    /// differs. `to` is shared: a room hands out the same member list for every publish.
    pub fn broadcast(&mut self, to: Arc<[ConnId]>, except: Option<ConnId>, kind: MessageKind, payload: Bytes) {
        self.commands.push_back(Command::Broadcast { to, except, kind, payload });
    }

    /// Answers a plain HTTP request the handler deferred.
    pub fn respond(&mut self, to: ConnId, response: HttpResponse) {
        self.commands.push_back(Command::Respond(to, Box::new(response)));
    }

    /// Starts the close handshake with `code`.
    pub fn close(&mut self, to: ConnId, code: CloseCode, reason: &str) {
        self.commands.push_back(Command::Close(to, code, reason.to_owned()));
    }
}

/// The application on top of the transport. All calls happen on the loop's thread.
pub trait Handler {
    /// What `accept` decided about an upgrade (e.g. who the client is), handed to
    /// `on_open` so the request is judged once. `()` for handlers that need nothing.
    type Admission;

    /// Decides whether to accept a valid upgrade request (e.g. by path or token); an `Err`
    /// response is sent instead of the 101.
    /// `now` is the loop turn's time (tokens on the upgrade are checked against it).
    fn accept(&mut self, request: &UpgradeRequest, now: Now) -> Result<Self::Admission, HttpResponse>;

    /// A WebSocket connection was accepted (the 101 response is queued), with what
    /// `accept` returned for its request.
    fn on_open(&mut self, out: &mut Outbox, conn: ConnId, request: &UpgradeRequest, admission: Self::Admission) {
        let _ = (out, conn, request, admission);
    }

    /// A complete message arrived (text is valid UTF-8).
    /// `data` is borrowed from the read buffer: take it with `Payload::into_bytes` to keep
    /// it, or pass it on with `Outbox::send_payload`.
    fn on_message(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Payload<'_>);

    /// A stream `on_http` answered with (`HttpResponse::event_stream`) passed the
    /// transport's admission (origin, per-IP limits, `max_connections`) and is open: what
    /// is sent to it from here on goes out as chunks. A stream refused there never gets
    /// this, only its `on_close`.
    fn on_stream(&mut self, out: &mut Outbox, conn: ConnId) {
        let _ = (out, conn);
    }

    /// The connection is gone, for any reason (close handshake, error, EOF, timeout).
    /// Called exactly once for every connection `on_open` saw, and for every stream
    /// `on_http` answered with, admitted or not.
    fn on_close(&mut self, out: &mut Outbox, conn: ConnId) {
        let _ = (out, conn);
    }

    /// A plain HTTP request on the same port (not an upgrade), with its whole body.
    /// `metrics` are the transport's counters (every worker's), for `/metrics`. `None`
    /// defers the answer: the handler sends it later with `Outbox::respond(conn, ..)`
    /// (requests pipelined behind it wait; the handshake timeout bounds the wait).
    fn on_http(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        request: &PlainRequest,
        body: &[u8],
        metrics: &Metrics,
    ) -> Option<HttpResponse> {
        let _ = (out, conn, body);
        Some(http::default_response(request, metrics))
    }

    /// Called every `Config::tick_interval`.
    fn on_tick(&mut self, out: &mut Outbox) {
        let _ = out;
    }

    /// Whether `on_stats` should run at the next tick (a live view of the counters is
    /// open): it costs a copy of every worker's counters, so only a handler that asks pays.
    fn wants_stats(&self) -> bool {
        false
    }

    /// Called every tick, after `on_tick`, while `wants_stats`: every worker's transport
    /// counters by worker index (the same ones `/metrics` sums), this worker's live.
    fn on_stats(&mut self, out: &mut Outbox, workers: &[Metrics]) {
        let _ = (out, workers);
    }

    /// Another worker woke this one: the handler reads its end of the `Mesh`.
    fn on_wake(&mut self, out: &mut Outbox) {
        let _ = out;
    }

    /// The end of a loop turn: the handler sends what it posted to other workers
    /// (`Mesh::flush`), so each gets one batch per turn.
    fn end_turn(&mut self) {}

    /// False while the handler cannot take more input (another worker is far behind, see
    /// `Mesh::congested`): the loop stops reading WebSocket connections until it can.
    fn accepting_input(&self) -> bool {
        true
    }
}
