//! The event loop: one thread, one `mio::Poll`, one listener, a slab of connections. A
//! server with several workers runs one of these per worker (see `workers.rs`).
//!
//! A turn ([`Server::turn`]) reads top to bottom:
//! 1. wait for readiness, or the next deadline;
//! 2. read and decode what arrived, connection by connection (`reading.rs`; the HTTP phase
//!    and the upgrade are in `http_phase.rs`), handing messages to the handler;
//! 3. act on deadlines and the handler's tick (`deadlines.rs`);
//! 4. flush every connection that has output, one vectored write each (`writing.rs`); a
//!    flush of more than 512 connections also reads, between slices, what arrived
//!    meanwhile, handling it as step 2 does, so it joins the writes still to do.
//!
//! Each step on a connection returns an [`Outcome`] (keep it, finish it, remove it) and
//! [`Server::settle`] acts on it, the one place a connection changes phase for good or
//! leaves the table. What the handler asks for goes into its [`Outbox`] and is applied
//! right after each handler call (`output.rs`), in a loop, never recursively: a close that
//! makes the handler say goodbye to others queues more commands for the same loop. Only the
//! flush at the end of the turn writes to sockets, with one exception the slow-consumer
//! rule decides on (see `output.rs`). The rules themselves (deadlines, keepalive,
//! backpressure, fairness, slow consumers) are plain functions in `policy.rs`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::access::IpLimits;
use super::conn::{Conn, Phase};
use super::listener::bind_listener;
use super::metrics::Metrics;
use super::policy::{self, Deadlines};
use super::pool::ReadPool;
use super::workers::{Shared, ShutdownHandle};
use super::write_buffers::WriteBuffers;
use super::{Config, ConnId, Handler, Now, Outbox};
use crate::proto::deflate::CompressorPool;
use crate::proto::CloseCode;

pub(super) const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
pub(super) const SIGNALS: Token = Token(usize::MAX - 3);

/// What a step decided for its connection; [`Server::settle`] acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum Outcome {
    /// Nothing more to do now.
    Keep,
    /// No more input matters: flush what is queued, then send FIN ([`Phase::Finishing`]).
    Finish,
    /// Drop the connection now (how it ended is counted where that was decided).
    Remove,
}

/// Whether the loop goes on after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Exit,
}

/// One event loop with its listener, its connections and its handler: a complete
/// single-threaded server, or one worker of [`Workers`](super::Workers).
pub struct Server<H: Handler> {
    pub(super) poll: Poll,
    pub(super) listener: TcpListener,
    local_addr: SocketAddr,
    pub(super) config: Config,
    pub(super) handler: H,
    /// This worker's index (part of every `ConnId` it hands out).
    pub(super) worker: u16,
    pub(super) conns: Slab<Conn>,
    pub(super) next_generation: u32,
    pub(super) open_count: usize,
    pub(super) deadlines: Deadlines,
    pub(super) outbox: Outbox,
    pub(super) metrics: Metrics,
    /// The scratch chunk sockets are read into, and the read buffers connections borrow.
    pub(super) read_pool: ReadPool,
    /// The cork and the gather scratch every connection's writes go through.
    pub(super) write_buffers: WriteBuffers,
    next_tick: Instant,
    /// Compressors shared by every connection without server context takeover.
    pub(super) compressors: CompressorPool,
    /// The last payload sent to a chunked stream, and it as a chunk: a payload the handler
    /// sends to many streams (one event for all) is framed once, then shared.
    pub(super) last_chunk: Option<(Bytes, Bytes)>,
    /// Connections with output to flush at the end of this turn.
    pub(super) dirty: Vec<usize>,
    /// Connections read this turn: written first in a flush that reads between slices
    /// (see `writing.rs`).
    pub(super) talkers: Vec<usize>,
    /// What a read between slices of the flush found ready (see `writing.rs`).
    pub(super) slice_events: Option<Events>,
    /// Connections whose deferred HTTP response went out: serve their pipelined requests.
    pub(super) resume_http: Vec<usize>,
    /// Connections to read first thing next turn: they had more input than one turn's
    /// budget, or their reading resumed (edge-triggered: no new event comes for either).
    pub(super) more_input: Vec<usize>,
    /// The handler cannot take input this turn (`Handler::accepting_input`): open
    /// connections are not read, and wait in `held` (each once: `Conn::held`).
    pub(super) hold_input: bool,
    pub(super) held: Vec<usize>,

    pub(super) accept_paused_until: Option<Instant>,
    /// The real clock when this turn began (None when a test drives the time): a worker's
    /// load counts from it, and a socket accepted late in a long turn has its deadlines
    /// counted from its accept, not from the turn's start.
    pub(super) turn_began: Option<Instant>,
    pub(super) shared: Arc<Shared>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    /// Set once shutdown began: the time by which the loop exits regardless.
    pub(super) shutdown_deadline: Option<Instant>,
}

impl<H: Handler> Server<H> {
    /// A single-worker server (`Workers` runs several).
    pub fn bind(config: Config, handler: H) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let shared = Arc::new(Shared::new(vec![waker], IpLimits::new(&config.access)));
        Server::worker(config, 0, poll, shared, handler)
    }

    /// Worker `index` of a group sharing `shared`; its waker is registered with `poll`.
    pub(crate) fn worker(
        config: Config,
        index: usize,
        poll: Poll,
        shared: Arc<Shared>,
        handler: H,
    ) -> io::Result<Self> {
        let workers = shared.workers();
        let mut listener = bind_listener(config.listen, config.backlog, workers > 1)?;
        let local_addr = listener.local_addr()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let worker = u16::try_from(index).map_err(|_| io::Error::other("too many workers"))?;
        // Signals go to one worker, which tells the others through `shared`.
        let signals = if config.handle_signals && index == 0 {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            // SIGHUP reloads the TLS certificate; without TLS it is logged and ignored (its
            // default action would end the process at once, e.g. on a `reload` hook).
            let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
            poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        Ok(Server {
            compressors: CompressorPool::new(config.deflate.level),
            last_chunk: None,
            outbox: Outbox::new(Now::read()),
            metrics: Metrics::default(),
            read_pool: ReadPool::new(),
            write_buffers: WriteBuffers::default(),
            next_tick: Instant::now() + config.tick_interval,
            poll,
            listener,
            local_addr,
            config,
            handler,
            worker,
            conns: Slab::new(),
            next_generation: 0,
            open_count: 0,
            deadlines: Deadlines::default(),
            dirty: Vec::new(),
            talkers: Vec::new(),
            slice_events: Some(Events::with_capacity(256)),
            resume_http: Vec::new(),
            more_input: Vec::new(),
            hold_input: false,
            held: Vec::new(),
            accept_paused_until: None,
            turn_began: None,
            shared,
            signals,
            shutdown_deadline: None,
        })
    }

    /// The address the listener is bound to (the port chosen, when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops this server from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { shared: self.shared.clone() }
    }

    /// Runs until a shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        if self.worker == 0 {
            info!("{} worker(s), one event loop each", self.shared.workers());
            let scheme = if self.config.tls.is_some() { "wss" } else { "ws" };
            info!("listening on {scheme}://{}", self.local_addr);
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let before_poll = Instant::now();
            // A worker's load: the time from a turn's start to the next wait (no extra clock read).
            if let Some(began) = self.turn_began.take() {
                let micros =
                    u64::try_from(before_poll.saturating_duration_since(began).as_micros()).unwrap_or(u64::MAX);
                self.metrics.busy_micros = self.metrics.busy_micros.saturating_add(micros);
            }
            let timeout = self.poll_timeout(before_poll);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Now::read();
            self.turn_began = Some(now.mono);
            if self.turn(&events, now) == Flow::Exit {
                return Ok(());
            }
        }
    }

    /// One turn at a time the caller chooses (tests drive deadlines with it): waits up to
    /// `wait` of real time for readiness, then runs the turn as if it were `time`. False
    /// once the loop would exit.
    #[cfg(test)]
    pub(super) fn drive(&mut self, time: Now, wait: Duration) -> bool {
        let mut events = Events::with_capacity(64);
        let _ = self.poll.poll(&mut events, Some(wait));
        self.turn_began = None;
        self.turn(&events, time) == Flow::Continue
    }

    /// One turn of the loop at `time`, after `poll` returned `events`.
    fn turn(&mut self, events: &Events, time: Now) -> Flow {
        let now = time.mono;
        self.outbox.set_now(time);
        self.release_held_input();
        // Last turn's unfinished reads first.
        for index in std::mem::take(&mut self.more_input) {
            self.serve(index, now);
        }
        for event in events.iter() {
            if self.dispatch(event, now) == Flow::Exit {
                return Flow::Exit;
            }
        }
        self.fire_deadlines(now);
        if now >= self.next_tick {
            self.next_tick = now + self.config.tick_interval;
            self.handler.on_tick(&mut self.outbox);
            // Only a handler that asked pays for the copy of every worker's counters.
            if self.handler.wants_stats() {
                let workers = self.shared.worker_metrics(usize::from(self.worker), &self.metrics);
                self.handler.on_stats(&mut self.outbox, &workers);
            }
            // One worker keeps the shared per-IP table trimmed.
            if self.worker == 0 {
                self.shared.ip_limits.sweep(now);
            }
        }
        self.resume_deferred_http(now);
        self.apply_outbox(now);
        // What the handler posted to other workers this turn goes out as one batch each.
        self.handler.end_turn();
        if self.flush_dirty(now) == Flow::Exit {
            return Flow::Exit;
        }
        match self.shutdown_deadline {
            Some(deadline) if self.conns.is_empty() || now >= deadline => {
                info!("shutdown complete (connections dropped at the deadline: {})", self.conns.len());
                Flow::Exit
            }
            _ => Flow::Continue,
        }
    }

    /// Acts on one readiness event (of a turn, or of a read between slices of its flush),
    /// then applies what the handler said.
    pub(super) fn dispatch(&mut self, event: &mio::event::Event, now: Instant) -> Flow {
        match event.token() {
            LISTENER => self.accept(now),
            WAKER => {
                if self.shared.abort.load(Ordering::SeqCst) {
                    return Flow::Exit;
                }
                if self.shared.shutdown.load(Ordering::SeqCst) {
                    self.begin_shutdown(now);
                }
                // Other workers have sent the handler something.
                self.handler.on_wake(&mut self.outbox);
            }
            SIGNALS => {
                if self.on_signals(now) == Flow::Exit {
                    return Flow::Exit;
                }
            }
            Token(index) => {
                if event.is_writable() {
                    self.mark_dirty(index);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.serve(index, now);
                }
            }
        }
        self.apply_outbox(now);
        Flow::Continue
    }

    /// Reads a connection and acts on the outcome.
    fn serve(&mut self, index: usize, now: Instant) {
        self.talkers.push(index);
        let outcome = self.read_conn(index, now);
        self.settle(index, outcome, now);
    }

    /// Input held while the handler could not take it is read again once it can.
    fn release_held_input(&mut self) {
        self.hold_input = !self.handler.accepting_input();
        if self.hold_input {
            return;
        }
        for index in std::mem::take(&mut self.held) {
            if let Some(conn) = self.conns.get_mut(index).filter(|c| c.held) {
                conn.held = false;
                conn.read_paused = false;
                self.more_input.push(index);
            }
        }
    }

    /// SIGHUP reloads TLS; SIGINT/SIGTERM start a graceful shutdown, and a second one ends
    /// the process at once.
    fn on_signals(&mut self, now: Instant) -> Flow {
        let (reloads, received): (Vec<i32>, Vec<i32>) = self
            .signals
            .as_mut()
            .map(|s| s.pending().partition(|&s| s == signal_hook::consts::SIGHUP))
            .unwrap_or_default();
        if !reloads.is_empty() {
            self.reload_tls();
        }
        if !received.is_empty() && self.shutdown_deadline.is_some() {
            info!("second signal: exiting without waiting for the connections still open ({})", self.conns.len());
            self.shared.raise(&self.shared.abort);
            return Flow::Exit;
        }
        if let Some(signal) = received.first() {
            info!("signal {signal}: shutting down gracefully");
            self.shared.raise(&self.shared.shutdown);
            self.begin_shutdown(now);
        }
        Flow::Continue
    }

    /// SIGHUP: the certificate and key files are read again; every worker serves the new
    /// ones to new connections (they share the store). Open connections keep their session.
    fn reload_tls(&self) {
        let Some(tls) = &self.config.tls else {
            info!("SIGHUP: nothing to reload (no TLS)");
            return;
        };
        match tls.reload() {
            Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
            Err(e) => warn!("SIGHUP: TLS certificate not reloaded, keeping the current one: {e}"),
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let times = [self.deadlines.next(), self.accept_paused_until, self.shutdown_deadline, Some(self.next_tick)];
        policy::poll_timeout(now, !self.more_input.is_empty(), !self.held.is_empty(), times)
    }

    // ---- acting on outcomes ----

    /// Acts on what a step decided for connection `index`. The handler's `on_close` runs
    /// here for a connection that leaves; what it queues is applied by the caller's next
    /// `apply_outbox`.
    pub(super) fn settle(&mut self, index: usize, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Keep => {}
            Outcome::Finish => self.enter_finishing(index, now),
            Outcome::Remove => self.remove(index),
        }
    }

    /// No more input matters: flush what is queued, then send FIN (see `writing.rs`).
    fn enter_finishing(&mut self, index: usize, now: Instant) {
        self.leave_open(index);
        let Some(conn) = self.conns.get_mut(index) else { return };
        if matches!(conn.phase, Phase::Finishing | Phase::Draining) {
            return;
        }
        conn.phase = Phase::Finishing;
        conn.discard_input();
        self.enter_deadline(index, now);
        self.mark_dirty(index);
    }

    fn remove(&mut self, index: usize) {
        self.leave_open(index);
        let Some(mut conn) = self.conns.try_remove(index) else { return };
        if conn.counted && conn.stream.is_some() {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            self.metrics.streams -= 1;
        } else if conn.counted {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            self.open_count -= 1;
            self.metrics.connections = self.open_count as u64;
        } else {
            self.shared.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = self.poll.registry().deregister(&mut conn.socket);
        debug!("connection {index} removed");
    }

    /// The handler is done with this connection: tell it once.
    pub(super) fn leave_open(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        if !std::mem::replace(&mut conn.opened, false) {
            return;
        }
        if let Some(id) = ConnId::new(self.worker, index, conn.generation) {
            self.handler.on_close(&mut self.outbox, id);
        }
    }

    /// Gives the connection the deadline of the phase it is in now (`policy`).
    pub(super) fn enter_deadline(&mut self, index: usize, now: Instant) {
        let Some(conn) = self.conns.get(index) else { return };
        let deadline = policy::deadline_on_entering(conn.phase, now, &self.config);
        self.set_deadline(index, deadline);
    }

    pub(super) fn set_deadline(&mut self, index: usize, deadline: Option<Instant>) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        conn.deadline = deadline;
        if let (Some(at), Some(id)) = (deadline, ConnId::new(self.worker, index, conn.generation)) {
            self.deadlines.push(at, id);
        }
    }

    /// Queues a final HTTP response; the caller finishes the connection.
    pub(super) fn queue_final(&mut self, index: usize, response: Bytes) -> Outcome {
        match self.conns.get_mut(index) {
            Some(conn) => {
                conn.queue(response);
                Outcome::Finish
            }
            None => Outcome::Keep,
        }
    }

    /// The connection `id` if it is this worker's, still the same connection, and in `phase`.
    pub(super) fn live_conn(&mut self, id: ConnId, phase: Phase) -> Option<&mut Conn> {
        live_conn(&mut self.conns, self.worker, id, phase)
    }

    // ---- shutdown ----

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!("shutting down: closing the open connections with 1001 ({})", self.open_count);
        let _ = self.poll.registry().deregister(&mut self.listener);
        self.shutdown_deadline = Some(now + self.config.shutdown_timeout);
        // Every connection is closing before the handler's goodbyes (on_close) are applied:
        // none of them goes out, rather than each member hearing of all the others.
        let ids: Vec<(usize, Phase, u32)> = self.conns.iter().map(|(i, c)| (i, c.phase, c.generation)).collect();
        for (index, phase, generation) in ids {
            match (phase, ConnId::new(self.worker, index, generation)) {
                (Phase::Handshake, _) => self.settle(index, Outcome::Remove, now),
                (Phase::Open, Some(id)) => self.start_close(id, CloseCode::GOING_AWAY, "server shutting down", now),
                (Phase::Streaming, Some(id)) => self.end_stream(id, now),
                _ => {}
            }
        }
    }
}

/// [`Server::live_conn`] borrowing only the table (the caller may use other fields).
pub(super) fn live_conn(conns: &mut Slab<Conn>, worker: u16, id: ConnId, phase: Phase) -> Option<&mut Conn> {
    if id.worker() != usize::from(worker) {
        return None;
    }
    conns.get_mut(id.index()).filter(|c| c.generation == id.generation() && c.phase == phase)
}
