//! The event loop: one thread, one `mio::Poll`, one listener, a slab of connections. A
//! server with several workers runs one of these per worker (see `workers.rs`).
//!
//! Each turn: wait for readiness (or the next deadline), read and decode what arrived,
//! let the handler act, then flush every connection that has output with one vectored
//! write each. Deadlines (handshake, keepalive, close linger) sit in a min-heap checked
//! once per turn; entries made stale by a phase change are skipped when they come up. The
//! handler's tick runs once per `tick_interval`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use log::{debug, info, trace, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::access::{self, IpLimits, Refusal};
use super::conn::{Conn, IoStatus, Keepalive, Phase};
use super::metrics::{CloseInitiator, HandshakeFailure, Metrics};
use super::pool::ReadPool;
use super::workers::{Shared, ShutdownHandle};
use super::{http, Command, Config, ConnId, Handler, HttpResponse, Now, Outbox};
use crate::proto::connection::BroadcastFrames;
use crate::proto::deflate::{self, CompressorPool};
use crate::proto::handshake::{parse_request, PlainRequest, Request};
use crate::proto::{CloseCode, Connection, Event, MessageKind, Role};

const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Bytes read from one socket before decoding them (keeps batches bounded and fair).
const READ_BUDGET: usize = 256 * 1024;
/// How long to stop accepting after the process runs out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One event loop with its listener, its connections and its handler: a complete
/// single-threaded server, or one worker of [`Workers`](super::Workers).
pub struct Server<H: Handler> {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
    handler: H,
    /// This worker's index (part of every `ConnId` it hands out).
    worker: u16,
    conns: Slab<Conn>,
    next_generation: u32,
    open_count: usize,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    outbox: Outbox,
    metrics: Metrics,
    /// The scratch chunk sockets are read into, and the read buffers connections borrow.
    read_pool: ReadPool,
    next_tick: Instant,
    /// Compressors shared by every connection without server context takeover.
    compressors: CompressorPool,
    /// Connections with output to flush at the end of this turn.
    dirty: Vec<usize>,
    /// Connections whose deferred HTTP response went out: serve their pipelined requests.
    resume_http: Vec<usize>,
    /// Connections that had more input than one turn's budget: read again next turn.
    more_input: Vec<usize>,
    /// The handler cannot take input this turn (`Handler::accepting_input`): open
    /// connections are not read, and wait in `held` (each once: `Conn::held`).
    hold_input: bool,
    held: Vec<usize>,

    accept_paused_until: Option<Instant>,
    shared: Arc<Shared>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    /// Set once shutdown began: the time by which the loop exits regardless.
    shutdown_deadline: Option<Instant>,
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
            outbox: Outbox::new(Now::read()),
            metrics: Metrics::default(),
            read_pool: ReadPool::new(),
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
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            resume_http: Vec::new(),
            more_input: Vec::new(),
            hold_input: false,
            held: Vec::new(),
            accept_paused_until: None,
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
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let time = Now::read();
            let now = time.mono;
            self.outbox.set_now(time);
            self.hold_input = !self.handler.accepting_input();
            if !self.hold_input {
                for index in std::mem::take(&mut self.held) {
                    if let Some(conn) = self.conns.get_mut(index).filter(|c| c.held) {
                        conn.held = false;
                        conn.read_paused = false;
                        self.more_input.push(index);
                    }
                }
            }
            // Last turn's unfinished reads first (edge-triggered: no new event comes for them).
            for index in std::mem::take(&mut self.more_input) {
                self.read_conn(index, now);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {
                        if self.shared.abort.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        if self.shared.shutdown.load(Ordering::SeqCst) {
                            self.begin_shutdown(now);
                        }
                        // Other workers have sent the handler something.
                        self.handler.on_wake(&mut self.outbox);
                        self.apply_outbox(now);
                    }
                    SIGNALS => {
                        let (reloads, received): (Vec<i32>, Vec<i32>) = self
                            .signals
                            .as_mut()
                            .map(|s| s.pending().partition(|&s| s == signal_hook::consts::SIGHUP))
                            .unwrap_or_default();
                        if !reloads.is_empty() {
                            self.reload_tls();
                        }
                        if !received.is_empty() && self.shutdown_deadline.is_some() {
                            info!("second signal: exiting without waiting for {} connections", self.conns.len());
                            self.shared.raise(&self.shared.abort);
                            return Ok(());
                        }
                        if let Some(signal) = received.first() {
                            info!("signal {signal}: shutting down gracefully");
                            self.shared.raise(&self.shared.shutdown);
                            self.begin_shutdown(now);
                        }
                    }
                    Token(index) => {
                        if event.is_writable() {
                            self.mark_dirty(index);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_conn(index, now);
                        }
                    }
                }
            }
            self.fire_timers(now);
            if now >= self.next_tick {
                self.next_tick = now + self.config.tick_interval;
                self.handler.on_tick(&mut self.outbox);
                self.apply_outbox(now);
                // One worker keeps the shared per-IP table trimmed.
                if self.worker == 0 {
                    self.shared.ip_limits.sweep(now);
                }
            }
            self.resume_deferred_http(now);
            // What the handler posted to other workers this turn goes out as one batch each.
            self.handler.end_turn();
            // Before the writes: a client that sees this turn's effects finds them counted.
            if self.shared.workers() > 1 {
                self.shared.publish_metrics(usize::from(self.worker), &self.metrics);
            }
            self.flush_dirty(now);
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    info!("shutdown complete ({} connections dropped at the deadline)", self.conns.len());
                    return Ok(());
                }
            }
        }
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

    fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.more_input.is_empty() {
            return Some(Duration::ZERO); // input is waiting: just collect new events
        }
        if !self.held.is_empty() {
            // Held input resumes once the other workers catch up: look again soon.
            return Some(Duration::from_millis(1));
        }
        let mut next = self.timers.peek().map(|Reverse((t, _))| *t);
        for t in [self.accept_paused_until, self.shutdown_deadline, Some(self.next_tick)].into_iter().flatten() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    // ---- accepting ----

    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() || self.shutdown_deadline.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.add_conn(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the pending connection stays in the backlog;
                    // retrying at once would spin, so back off and let closes free fds.
                    warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, stream: mio::net::TcpStream, peer: SocketAddr, now: Instant) {
        // Reserve the slot before anything else, so workers accepting at the same moment
        // cannot together go past the cap (a load-then-add could).
        let handshaking = self.shared.handshaking.fetch_add(1, Ordering::Relaxed);
        if handshaking >= self.config.max_handshakes {
            self.shared.handshaking.fetch_sub(1, Ordering::Relaxed);
            // Dropping the stream closes it: the client learns at once instead of waiting
            // in the backlog, and silent sockets cannot pile up.
            self.metrics.count_handshake_failure(HandshakeFailure::TooManyHandshakes);
            debug!("dropping {peer}: {handshaking} sockets already handshaking");
            return;
        }
        if !self.register_conn(stream, peer, now) {
            self.shared.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Puts an accepted socket (whose handshake slot is reserved) into the table and the
    /// poll; false when it was dropped instead.
    fn register_conn(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr, now: Instant) -> bool {
        let entry = self.conns.vacant_entry();
        let index = entry.key();
        let generation = self.next_generation;
        let Some(id) = ConnId::new(self.worker, index, generation).filter(|_| index < SIGNALS.0) else {
            warn!("connection table full; dropping {peer}");
            return false;
        };
        let tls = match self.config.tls.as_ref().map(|t| t.new_session()).transpose() {
            Ok(tls) => tls.map(Box::new),
            Err(e) => {
                warn!("TLS session for {peer} failed: {e}");
                return false;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)
        {
            warn!("register failed for {peer}: {e}");
            return false;
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let deadline = now + self.config.handshake_timeout;
        entry.insert(Conn::new(stream, peer.ip(), generation, deadline, tls));
        self.timers.push(Reverse((deadline, id)));
        debug!("accepted {peer} as {id:?}");
        true
    }

    // ---- reading ----

    fn read_conn(&mut self, index: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        // Backpressure: a peer that sends (requests, pipelined HTTP, messages to echo)
        // without reading the replies is not read from either; flush_dirty resumes it.
        let answers_input = matches!(conn.phase, Phase::Handshake | Phase::Open | Phase::CloseSent);
        if answers_input && conn.queued_bytes() > self.config.write_high_water {
            conn.read_paused = true;
            return;
        }
        if self.hold_input && conn.phase == Phase::Open {
            conn.read_paused = true;
            if !conn.held {
                conn.held = true;
                self.held.push(index);
            }
            return;
        }
        let status = match conn.phase {
            Phase::Handshake => {
                // A request head and its body, plus one byte to notice an oversized one.
                let most = self.config.max_head_bytes + self.config.max_body_bytes + 1;
                let budget = most.saturating_sub(conn.read_buf.len()).max(1);
                let (status, n) = conn.read_some(budget, &mut self.read_pool);
                self.metrics.bytes_in += n as u64;
                self.process_http(index, now);
                status
            }
            Phase::Open | Phase::CloseSent => {
                let (status, n) = conn.read_some(READ_BUDGET, &mut self.read_pool);
                self.metrics.bytes_in += n as u64;
                if n > 0 {
                    conn.liveness.heard(now);
                }
                self.process_frames(index, now);
                status
            }
            Phase::Finishing | Phase::Draining => {
                let (status, n) = conn.read_some(READ_BUDGET, &mut self.read_pool);
                self.metrics.bytes_in += n as u64;
                conn.discard_input();
                status
            }
        };
        if status != IoStatus::More {
            self.release_read_buf(index);
        }
        // TLS: handshake messages, tickets and alerts go out even when nothing was queued.
        if self.conns.get(index).is_some_and(Conn::tls_wants_write) {
            self.mark_dirty(index);
        }
        match status {
            // Fairness: one connection's flood waits for the next turn while the rest are
            // served, and what it caused is flushed (and handed to other workers) in
            // between, so a burst reaches receivers as a stream, not all at once.
            IoStatus::More => self.more_input.push(index),
            IoStatus::Ok => {}
            IoStatus::Eof => self.on_eof(index, now),
            IoStatus::Error => {
                self.count_abrupt(index);
                self.remove(index, now);
            }
        }
    }

    /// After decoding what arrived: the connection's read buffer goes back to the pool
    /// (see `Conn::release_read_buf`), so an idle connection holds none.
    fn release_read_buf(&mut self, index: usize) {
        if let Some(conn) = self.conns.get_mut(index) {
            conn.release_read_buf(&mut self.read_pool);
        }
    }

    /// Counts a connection that ends without a close handshake.
    fn count_abrupt(&mut self, index: usize) {
        if let Some(conn) = self.conns.get(index) {
            match conn.phase {
                Phase::Open | Phase::CloseSent => self.metrics.abrupt_closes += 1,
                Phase::Handshake if conn.tls_handshaking() => {
                    self.metrics.count_handshake_failure(HandshakeFailure::Tls)
                }
                Phase::Handshake if !conn.read_buf.is_empty() => {
                    self.metrics.count_handshake_failure(HandshakeFailure::Incomplete)
                }
                _ => {}
            }
        }
    }

    fn on_eof(&mut self, index: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        conn.peer_eof = true;
        match conn.phase {
            // Peer's FIN after we finished: done. While we still flush: drop once flushed.
            Phase::Draining => self.remove(index, now),
            Phase::Finishing => {}
            // Gone without a close handshake (abrupt close, reset, half-open).
            Phase::Handshake | Phase::Open | Phase::CloseSent => {
                debug!("peer closed {index} without a close handshake");
                self.count_abrupt(index);
                self.remove(index, now)
            }
        }
    }

    /// Serves the requests buffered on a connection in its HTTP phase: plain requests
    /// (keep-alive, bodies up to `max_body_bytes`) until one is an upgrade.
    fn process_http(&mut self, index: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(index) else { return };
            if conn.phase != Phase::Handshake || conn.awaiting_response.is_some() {
                return; // pipelined requests wait for the deferred response
            }
            if conn.queued_bytes() > self.config.write_high_water {
                // Pipelined requests wait in the buffer until the responses are read.
                conn.read_paused = true;
                return;
            }
            let request = match parse_request(&conn.read_buf, self.config.max_head_bytes) {
                Ok(None) => return,
                Ok(Some(parsed)) => parsed,
                Err(e) => {
                    debug!("handshake rejected on {index}: {e}");
                    self.metrics.count_handshake_failure(HandshakeFailure::from(e));
                    let response = Bytes::from(e.response());
                    return self.finish_with(index, response, now);
                }
            };
            match request {
                (Request::Plain(req), head_len) => {
                    if req.content_length > self.config.max_body_bytes {
                        let response = HttpResponse::text(413, "request body too large\n");
                        return self.finish_with(index, Bytes::from(response.encode(false)), now);
                    }
                    let Some(total) = head_len.checked_add(req.content_length) else { return };
                    if conn.read_buf.len() < total {
                        return; // the body is still arriving
                    }
                    let request_bytes = conn.read_buf.split_to(total);
                    self.serve_http(index, &req, request_bytes.get(head_len..).unwrap_or_default(), now);
                    // The loop goes on with pipelined requests unless the connection is
                    // finishing or waits for a deferred response (checked at the top).
                }
                (Request::Upgrade(_), _) if self.shared.open.load(Ordering::Relaxed) >= self.config.max_connections => {
                    debug!("rejecting upgrade on {index}: at max_connections");
                    self.metrics.count_handshake_failure(HandshakeFailure::OverCapacity);
                    return self.finish_with(index, Bytes::from(http::over_capacity().encode(false)), now);
                }
                (Request::Upgrade(req), head_len) => return self.upgrade(index, &req, head_len, now),
            }
        }
    }

    /// Answers one plain request, now or (when the handler defers it) once the handler
    /// calls `Outbox::respond`.
    fn serve_http(&mut self, index: usize, req: &PlainRequest, body: &[u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        let Some(id) = ConnId::new(self.worker, index, conn.generation) else { return };
        let keep_alive = req.keep_alive && self.shutdown_deadline.is_none();
        // Marked before the handler runs: it may answer through the outbox right away.
        conn.awaiting_response = Some(keep_alive);
        self.metrics.http_requests += 1;
        let metrics = if self.shared.workers() > 1 {
            std::borrow::Cow::Owned(self.shared.total_metrics(usize::from(self.worker), &self.metrics))
        } else {
            std::borrow::Cow::Borrowed(&self.metrics)
        };
        let response = self.handler.on_http(&mut self.outbox, id, req, body, &metrics);
        if let Some(response) = response {
            self.respond(id, response, now);
        }
        self.apply_outbox(now);
    }

    /// Sends the response a connection in its HTTP phase waits for; with keep-alive it then
    /// waits (the handshake timeout) for its next request.
    fn respond(&mut self, id: ConnId, response: HttpResponse, now: Instant) {
        let Some(conn) = self.live_conn(id, Phase::Handshake) else { return };
        let Some(keep_alive) = conn.awaiting_response.take() else { return };
        conn.queue(Bytes::from(response.encode(keep_alive)));
        if !keep_alive {
            return self.enter_finishing(id.index(), now);
        }
        self.mark_dirty(id.index());
        self.set_deadline(id.index(), now + self.config.handshake_timeout);
        if self.conns.get(id.index()).is_some_and(|c| !c.read_buf.is_empty()) {
            self.resume_http.push(id.index());
        }
    }

    /// Serves requests that arrived behind a deferred one (not from inside `respond`: a
    /// handler answering many deferred requests at once would recurse).
    fn resume_deferred_http(&mut self, now: Instant) {
        while let Some(index) = self.resume_http.pop() {
            self.process_http(index, now);
            self.release_read_buf(index);
        }
    }

    /// Completes an upgrade: admission (`access`), 101 response, codec, handler `on_open`.
    fn upgrade(&mut self, index: usize, req: &crate::proto::handshake::UpgradeRequest, head_len: usize, now: Instant) {
        let ip_slot = match self.admit(index, req, now) {
            Ok(slot) => slot,
            Err(refusal) => {
                let failure = HandshakeFailure::from(refusal);
                debug!("upgrade on {index} refused: {}", failure.label());
                self.metrics.count_handshake_failure(failure);
                return self.finish_with(index, Bytes::from(refusal.response().encode(false)), now);
            }
        };
        let admission = match self.handler.accept(req, self.outbox.now()) {
            Ok(admission) => admission,
            Err(response) => {
                // `ip_slot` drops here: a refused upgrade holds no place in its IP's count.
                // (The request is not logged: its path or headers may hold a token.)
                debug!("upgrade on {index} refused by the handler: {}", response.status);
                self.metrics.count_handshake_failure(HandshakeFailure::Rejected);
                return self.finish_with(index, Bytes::from(response.encode(false)), now);
            }
        };
        let Some(conn) = self.conns.get_mut(index) else { return };
        conn.ip_slot = ip_slot.map(Box::new);
        let supported: Vec<&str> = self.config.subprotocols.iter().map(String::as_str).collect();
        let protocol = req.select_protocol(&supported);
        let deflate = req.extensions.as_deref().and_then(|offers| deflate::negotiate(offers, &self.config.deflate));
        conn.queue(Bytes::from(req.accept(protocol, deflate.as_ref().map(|(_, response)| response.as_str()))));
        conn.read_buf.advance(head_len);
        let mut codec = Connection::new(Role::Server, self.config.protocol);
        if let Some((params, _)) = deflate {
            codec = codec.with_deflate(params, self.config.deflate.threshold, self.config.deflate.level);
        }
        conn.codec = Some(codec);
        conn.phase = Phase::Open;
        conn.deadline = None;
        conn.liveness.heard(now);
        conn.opened = true;
        conn.counted = true;
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        self.shared.handshaking.fetch_sub(1, Ordering::Relaxed);
        self.open_count += 1;
        self.metrics.connections = self.open_count as u64;
        self.metrics.connections_total += 1;
        let id = ConnId::new(self.worker, index, conn.generation);
        self.mark_dirty(index);
        if !self.config.ping_interval.is_zero() {
            self.set_deadline(index, now + self.config.ping_interval);
        }
        if let Some(id) = id {
            self.handler.on_open(&mut self.outbox, id, req, admission);
            self.apply_outbox(now);
        }
        // Frames sent right behind the request head are already buffered.
        self.process_frames(index, now);
    }

    /// The transport's admission rules, before the handler's: the origin (403), then the
    /// client IP's handshake rate and connection count (429). The returned slot holds the
    /// connection's place in its IP's count.
    fn admit(
        &self,
        index: usize,
        req: &crate::proto::handshake::UpgradeRequest,
        now: Instant,
    ) -> Result<Option<access::IpSlot>, Refusal> {
        let rules = &self.config.access;
        rules.check_origin(req.origin.as_deref())?;
        let limits = &self.shared.ip_limits;
        if !limits.enabled() {
            return Ok(None);
        }
        let Some(conn) = self.conns.get(index) else { return Ok(None) };
        let client = rules.client_ip(conn.peer, req.x_forwarded_for.as_deref(), req.forwarded.as_deref());
        limits.admit(client, now)
    }

    /// Decodes buffered frames and hands messages to the handler.
    fn process_frames(&mut self, index: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(index) else { return };
            let Some(codec) = conn.codec.as_mut() else { return };
            let result = codec.decode(&mut conn.read_buf);
            let terminated = codec.is_terminated();
            conn.queue_codec_output();
            let id = ConnId::new(self.worker, index, conn.generation);
            let deliver = conn.phase == Phase::Open;
            self.mark_dirty(index);
            let needs_input = matches!(result, Ok(None));
            match result {
                Ok(Some(Event::Message { kind, data })) => {
                    trace!("{index}: {kind:?} message of {} bytes", data.len());
                    self.metrics.messages_in += 1;
                    if let (true, Some(id)) = (deliver, id) {
                        self.handler.on_message(&mut self.outbox, id, kind, data);
                        self.apply_outbox(now);
                    }
                }
                Ok(Some(Event::Close(frame))) => {
                    debug!("{index}: close received {:?}", frame.as_ref().map(|f| f.code));
                    if deliver {
                        // The client started the close handshake (else it answered ours).
                        let code = frame.as_ref().map_or(CloseCode::NO_STATUS, |f| f.code);
                        self.metrics.count_close(code.0, CloseInitiator::Client);
                    }
                }
                Ok(Some(Event::Ping(_) | Event::Pong(_))) => {}
                Ok(None) => {}
                Err(e) => {
                    debug!("{index}: failing connection: {e} (close {})", e.close_code().0);
                    if deliver {
                        self.metrics.count_close(e.close_code().0, CloseInitiator::Server);
                    }
                }
            }
            if terminated {
                return self.enter_finishing(index, now);
            }
            if needs_input {
                // read_conn gives the drained buffer back to the pool.
                return;
            }
        }
    }

    // ---- phase changes ----

    /// Queues a final HTTP response and closes after it.
    fn finish_with(&mut self, index: usize, response: Bytes, now: Instant) {
        if let Some(conn) = self.conns.get_mut(index) {
            conn.queue(response);
            self.enter_finishing(index, now);
        }
    }

    /// No more input matters: flush what is queued, then send FIN (see `flush_dirty`).
    fn enter_finishing(&mut self, index: usize, now: Instant) {
        self.leave_open(index, now);
        let Some(conn) = self.conns.get_mut(index) else { return };
        conn.phase = Phase::Finishing;
        conn.discard_input();
        self.set_deadline(index, now + self.config.close_linger);
        self.mark_dirty(index);
    }

    /// The handler is done with this connection: tell it once.
    fn leave_open(&mut self, index: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        if !conn.opened {
            return;
        }
        conn.opened = false;
        if let Some(id) = ConnId::new(self.worker, index, conn.generation) {
            self.handler.on_close(&mut self.outbox, id);
            self.apply_outbox(now);
        }
    }

    fn set_deadline(&mut self, index: usize, deadline: Instant) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        conn.deadline = Some(deadline);
        if let Some(id) = ConnId::new(self.worker, index, conn.generation) {
            self.timers.push(Reverse((deadline, id)));
        }
    }

    fn remove(&mut self, index: usize, now: Instant) {
        self.leave_open(index, now);
        let Some(mut conn) = self.conns.try_remove(index) else { return };
        if conn.counted {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            self.open_count -= 1;
            self.metrics.connections = self.open_count as u64;
        } else {
            self.shared.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = self.poll.registry().deregister(&mut conn.socket);
        debug!("connection {index} removed");
    }

    // ---- handler output ----

    fn apply_outbox(&mut self, now: Instant) {
        while !self.outbox.commands.is_empty() {
            let mut commands = std::mem::take(&mut self.outbox.commands);
            for command in commands.drain(..) {
                match command {
                    Command::Message(id, kind, payload) => {
                        let mine = id.worker() == usize::from(self.worker);
                        let live = |c: &&mut Conn| mine && c.generation == id.generation() && c.phase == Phase::Open;
                        if let Some(conn) = self.conns.get_mut(id.index()).filter(live) {
                            if let Some(codec) = conn.codec.as_mut() {
                                codec.send_message_pooled(kind, payload, Some(&mut self.compressors));
                            }
                            conn.queue_codec_output();
                            self.metrics.messages_out += 1;
                            self.mark_dirty(id.index());
                        }
                    }
                    Command::Broadcast { to, except, kind, payload } => {
                        self.broadcast(&to, except, kind, &payload, now)
                    }
                    Command::Respond(id, response) => self.respond(id, response, now),
                    Command::Close(id, code, reason) => self.start_close(id, code, &reason, now),
                }
            }
            // Keep the (now empty) vector's capacity unless the handler queued more.
            if self.outbox.commands.is_empty() {
                self.outbox.commands = commands;
            }
        }
    }

    /// The fan-out path: one encoding per variant (plain, or compressed for a window size),
    /// shared by every receiver of that variant as clones of one `Bytes`. Compressing once
    /// is sound because pooled compressors reset after every message (no context
    /// takeover): the output depends on the payload alone, never on a receiver's history.
    fn broadcast(&mut self, ids: &[ConnId], except: Option<ConnId>, kind: MessageKind, payload: &Bytes, now: Instant) {
        let mut frames = BroadcastFrames::new(kind, payload.clone());
        for &id in ids {
            if Some(id) == except || !self.admit_fanout(id, payload.len(), now) {
                continue;
            }
            // admit_fanout checked the connection is live and open.
            let Some(conn) = self.conns.get_mut(id.index()) else { continue };
            let Some(codec) = conn.codec.as_mut() else { continue };
            match codec.broadcast_frame(&mut frames, &mut self.compressors) {
                Some(frame) => conn.queue(frame),
                None => conn.queue_codec_output(),
            }
            self.metrics.messages_out += 1;
            self.mark_dirty(id.index());
        }
    }

    /// The slow-consumer rule: fan-out traffic may not push a connection's queue past
    /// `max_outbound_bytes` (twice that while it is reading); the connection is closed with
    /// 1013 instead (its queued data is still sent ahead of the close). Returns whether the
    /// frame may be queued.
    fn admit_fanout(&mut self, id: ConnId, len: usize, now: Instant) -> bool {
        let cap = self.config.max_outbound_bytes;
        let Some(conn) = self.live_conn(id, Phase::Open) else { return false };
        if conn.queued_bytes().saturating_add(len) <= cap {
            return true;
        }
        // Frames queued earlier in this turn have not met the socket yet: offer them now,
        // so a member that is reading is judged by what it failed to read, not by the
        // size of one burst. (A socket error is handled at the end of the turn.)
        let (_, written) = conn.flush();
        self.metrics.bytes_out += written as u64;
        let Some(conn) = self.live_conn(id, Phase::Open) else { return false };
        let queued = conn.queued_bytes();
        // A member whose socket took bytes just now is reading: a burst bigger than the cap
        // (several publishes handed over in one turn, from other workers too) may take it to
        // twice the cap. One that took nothing is not reading: the cap holds.
        let allowed = if written > 0 { cap.saturating_mul(2) } else { cap };
        if queued.saturating_add(len) <= allowed {
            return true;
        }
        debug!("connection {} is a slow consumer ({queued} bytes queued)", id.index());
        self.metrics.slow_consumer_closes += 1;
        self.start_close(id, CloseCode::TRY_AGAIN_LATER, "slow consumer", now);
        false
    }

    fn live_conn(&mut self, id: ConnId, phase: Phase) -> Option<&mut Conn> {
        if id.worker() != usize::from(self.worker) {
            return None;
        }
        self.conns.get_mut(id.index()).filter(|c| c.generation == id.generation() && c.phase == phase)
    }

    /// Sends a close frame and waits (up to the linger time) for the peer's.
    fn start_close(&mut self, id: ConnId, code: CloseCode, reason: &str, now: Instant) {
        let Some(conn) = self.live_conn(id, Phase::Open) else { return };
        if let Some(codec) = conn.codec.as_mut() {
            codec.close(code, reason);
        }
        conn.queue_codec_output();
        conn.phase = Phase::CloseSent;
        self.metrics.count_close(code.0, CloseInitiator::Server);
        self.set_deadline(id.index(), now + self.config.close_linger);
        self.mark_dirty(id.index());
        self.leave_open(id.index(), now);
    }

    fn mark_dirty(&mut self, index: usize) {
        if let Some(conn) = self.conns.get_mut(index) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(index);
            }
        }
    }

    // ---- writing ----

    fn flush_dirty(&mut self, now: Instant) {
        while let Some(index) = self.dirty.pop() {
            let Some(conn) = self.conns.get_mut(index) else { continue };
            conn.dirty = false;
            let (status, written) = conn.flush();
            self.metrics.bytes_out += written as u64;
            if status == IoStatus::Error {
                self.count_abrupt(index);
                self.remove(index, now);
                continue;
            }
            let mut drained = conn.is_drained();
            if drained && conn.phase == Phase::Finishing && conn.queue_close_notify() {
                // TLS: close_notify goes out ahead of our FIN.
                if conn.flush().0 == IoStatus::Error {
                    self.remove(index, now);
                    continue;
                }
                drained = conn.is_drained();
            }
            if drained && conn.phase == Phase::Finishing {
                conn.shutdown_write();
                conn.phase = Phase::Draining;
                if conn.peer_eof {
                    self.remove(index, now);
                } else {
                    self.set_deadline(index, now + self.config.close_linger);
                }
            } else if conn.read_paused && conn.queued_bytes() <= self.config.write_high_water / 2 {
                conn.read_paused = false;
                // Edge-triggered: data already in the socket raises no new event.
                self.read_conn(index, now);
            }
        }
    }

    // ---- deadlines and shutdown ----

    fn fire_timers(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.accept(now);
        }
        while let Some(Reverse((deadline, id))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get(id.index()) else { continue };
            if conn.generation != id.generation() || conn.deadline != Some(deadline) {
                continue; // stale: the connection moved on
            }
            if conn.phase == Phase::Open {
                self.keepalive(id.index(), now);
                continue;
            }
            debug!("connection {} timed out in {:?}", id.index(), conn.phase);
            if conn.phase == Phase::Handshake {
                self.metrics.count_handshake_failure(HandshakeFailure::Timeout);
            } else if conn.phase == Phase::CloseSent {
                self.metrics.abrupt_closes += 1;
            }
            self.remove(id.index(), now);
        }
    }

    /// An open connection's keepalive deadline came: see [`Liveness`].
    fn keepalive(&mut self, index: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else { return };
        let next = match conn.liveness.check(now, self.config.ping_interval) {
            // Bytes waiting in the kernel (a pong the loop has not got to yet, or input the
            // worker holds) mean the peer is not silent. Not when reading is paused because
            // the peer does not read what it is sent: that peer is dropped, whatever it sends.
            Keepalive::Drop
                if (conn.held || !conn.read_paused) && conn.socket.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0) =>
            {
                conn.liveness.heard(now);
                now + self.config.ping_interval
            }
            Keepalive::Drop => {
                debug!("connection {index} silent for {:?}: dropping it", conn.liveness.silent(now));
                self.metrics.idle_timeouts += 1;
                return self.remove(index, now);
            }
            Keepalive::Ping(next) => {
                if let Some(codec) = conn.codec.as_mut() {
                    codec.send_ping(Bytes::new());
                }
                conn.queue_codec_output();
                self.mark_dirty(index);
                next
            }
            Keepalive::Wait(next) => next,
        };
        self.set_deadline(index, next);
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!("shutting down: closing {} connections with 1001", self.open_count);
        let _ = self.poll.registry().deregister(&mut self.listener);
        self.shutdown_deadline = Some(now + self.config.shutdown_timeout);
        let ids: Vec<(usize, Phase, u32)> = self.conns.iter().map(|(i, c)| (i, c.phase, c.generation)).collect();
        for (index, phase, generation) in ids {
            match (phase, ConnId::new(self.worker, index, generation)) {
                (Phase::Handshake, _) => self.remove(index, now),
                (Phase::Open, Some(id)) => self.start_close(id, CloseCode::GOING_AWAY, "server shutting down", now),
                _ => {}
            }
        }
    }
}

/// A non-blocking listener with a real accept backlog: mio's `bind` uses 128, which a
/// reconnect storm overflows (the kernel then drops handshakes and clients wait for SYN
/// retransmits, a second or more). With several workers each binds the same address with
/// `SO_REUSEPORT`, and the kernel spreads incoming connections across them.
/// Fails when another socket listens on `addr`. The workers of one server share their port
/// with SO_REUSEPORT, which would also let a second server in silently (taking part of the
/// connections): a plain bind first, before the shared ones, tells the two apart.
pub(crate) fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Socket, Type};
    if addr.port() == 0 {
        return Ok(()); // a fresh ephemeral port
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    probe.set_reuse_address(true)?; // a previous run's TIME_WAIT sockets do not count
    probe.bind(&addr.into()).map_err(in_use)
}

/// `EADDRINUSE`, said plainly.
fn in_use(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        return io::Error::new(e.kind(), "address already in use (is another server listening there?)");
    }
    e
}

fn bind_listener(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into()).map_err(in_use)?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}
