//! Accepting sockets and their HTTP phase: the handshake-slot cap, registration, plain
//! requests (keep-alive, pipelining, deferred answers), admission (`access` and the
//! handler) and the upgrade to a WebSocket. Each step returns an [`Outcome`] for the loop.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use log::{debug, warn};
use mio::{Interest, Token};

use super::access::{self, Refusal};
use super::conn::{Conn, Framing, Phase};
use super::event_loop::{Outcome, Server, SIGNALS};
use super::metrics::HandshakeFailure;
use super::policy;
use super::{http, ConnId, Handler, HttpResponse};
use crate::proto::deflate;
use crate::proto::handshake::{parse_request, PlainRequest, Request, UpgradeRequest};
use crate::proto::Connection;

/// How long to stop accepting after the process runs out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl<H: Handler> Server<H> {
    pub(super) fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() || self.shutdown_deadline.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                // The turn's time plus the real time it has run: accepting a thousand
                // sockets takes long enough that the last one's deadline would otherwise
                // start tens of milliseconds before it arrived.
                Ok((stream, peer)) => {
                    let accepted = now + self.turn_began.map_or(Duration::ZERO, |began| began.elapsed());
                    self.add_conn(stream, peer, accepted);
                }
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
        entry.insert(Conn::new(stream, peer.ip(), generation, now, tls));
        self.enter_deadline(index, now);
        debug!("accepted {peer} as {id:?}");
        true
    }

    /// Serves the requests buffered on a connection in its HTTP phase: plain requests
    /// (keep-alive, bodies up to `max_body_bytes`) until one is an upgrade.
    pub(super) fn process_http(&mut self, index: usize, now: Instant) -> Outcome {
        loop {
            let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
            if conn.phase != Phase::Handshake || conn.awaiting_response.is_some() {
                return Outcome::Keep; // pipelined requests wait for the deferred response
            }
            if conn.queued_bytes() > self.config.write_high_water {
                // Pipelined requests wait in the buffer until the responses are read.
                conn.read_paused = true;
                return Outcome::Keep;
            }
            let request = match parse_request(&conn.read_buf, self.config.max_head_bytes) {
                Ok(None) => return Outcome::Keep,
                Ok(Some(parsed)) => parsed,
                Err(e) => {
                    debug!("handshake rejected on {index}: {e}");
                    self.metrics.count_handshake_failure(HandshakeFailure::from(e));
                    return self.queue_final(index, Bytes::from(e.response()));
                }
            };
            match request {
                (Request::Plain(mut req), head_len) => {
                    req.origin_allowed = self.config.access.check_origin(req.origin.as_deref()).is_ok();
                    if req.content_length > self.config.max_body_bytes {
                        let response = HttpResponse::text(413, "request body too large\n");
                        return self.queue_final(index, Bytes::from(response.encode(false)));
                    }
                    let Some(total) = head_len.checked_add(req.content_length) else { return Outcome::Keep };
                    if conn.read_buf.len() < total {
                        return Outcome::Keep; // the body is still arriving
                    }
                    let request_bytes = conn.read_buf.split_to(total);
                    let outcome = self.serve_http(index, &req, request_bytes.get(head_len..).unwrap_or_default(), now);
                    if outcome != Outcome::Keep {
                        return outcome;
                    }
                    // The loop goes on with pipelined requests unless the connection
                    // waits for a deferred response (checked at the top).
                }
                (Request::Upgrade(_), _) if self.shared.open.load(Ordering::Relaxed) >= self.config.max_connections => {
                    debug!("rejecting upgrade on {index}: at max_connections");
                    self.metrics.count_handshake_failure(HandshakeFailure::OverCapacity);
                    return self.queue_final(index, Bytes::from(http::over_capacity().encode(false)));
                }
                (Request::Upgrade(req), head_len) => return self.upgrade(index, &req, head_len, now),
            }
        }
    }

    /// Answers one plain request, now or (when the handler defers it) once the handler
    /// calls `Outbox::respond`.
    fn serve_http(&mut self, index: usize, req: &PlainRequest, body: &[u8], now: Instant) -> Outcome {
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        let Some(id) = ConnId::new(self.worker, index, conn.generation) else { return Outcome::Keep };
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
        let outcome = match response {
            Some(response) if response.stream => self.open_stream(id, req, response, now),
            Some(response) => self.respond(id, response, now),
            None => {
                // The handler answers later (from a store, or from other nodes): the wait
                // is the handler's, not the client's, so it gets a deadline of its own.
                self.set_deadline(
                    index,
                    Some(now + policy::DEFERRED_RESPONSE_TIMEOUT.max(self.config.handshake_timeout)),
                );
                Outcome::Keep
            }
        };
        self.apply_outbox(now);
        outcome
    }

    /// Queues the response a connection in its HTTP phase waits for; with keep-alive it
    /// then waits (the handshake timeout) for its next request, else it finishes.
    pub(super) fn respond(&mut self, id: ConnId, response: HttpResponse, now: Instant) -> Outcome {
        let Some(conn) = self.live_conn(id, Phase::Handshake) else { return Outcome::Keep };
        let Some(keep_alive) = conn.awaiting_response.take() else { return Outcome::Keep };
        if response.stream {
            // Streams are admitted with their request (`open_stream`), which is gone now.
            warn!("a handler deferred a stream response: answering 500 instead");
            return self
                .queue_final(id.index(), Bytes::from(HttpResponse::text(500, "internal error\n").encode(false)));
        }
        conn.queue(Bytes::from(response.encode(keep_alive)));
        if !keep_alive {
            return Outcome::Finish;
        }
        let pipelined = !conn.read_buf.is_empty();
        self.mark_dirty(id.index());
        self.enter_deadline(id.index(), now);
        if pipelined {
            self.resume_http.push(id.index());
        }
        Outcome::Keep
    }

    /// Turns a connection in its HTTP phase into a stream (`HttpResponse::event_stream`),
    /// admitted as an upgrade is: the origin (403; an allowed one gets its CORS header, on a
    /// refusal too), the client IP's rate and connection count (429), `max_connections`
    /// (503). Then it counts
    /// as an open connection, has no deadline, and the handler hears of its end
    /// (`on_close`). Requests pipelined behind it are dropped: the response never ends.
    fn open_stream(&mut self, id: ConnId, req: &PlainRequest, mut response: HttpResponse, now: Instant) -> Outcome {
        let index = id.index();
        let refused = |refusal: Refusal| (HandshakeFailure::from(refusal), refusal.response());
        let admitted = match self.shared.open.load(Ordering::Relaxed) >= self.config.max_connections {
            true => Err((HandshakeFailure::OverCapacity, http::over_capacity())),
            false => self.admit_plain(index, req, now).map_err(refused),
        };
        let ip_slot = match admitted {
            Ok(slot) => slot,
            Err((failure, refusal)) => {
                debug!("stream on {index} refused: {}", failure.label());
                self.metrics.count_handshake_failure(failure);
                // The handler took it for a stream: it hears it is gone.
                let cors = req.origin.as_deref().filter(|_| req.origin_allowed);
                let outcome = self.queue_final(index, Bytes::from(refusal.with_cors(cors).encode(false)));
                if let Some(conn) = self.conns.get_mut(index) {
                    conn.awaiting_response = None;
                    conn.opened = true;
                }
                return outcome;
            }
        };
        response = response.with_cors(req.origin.as_deref());
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        conn.awaiting_response = None;
        conn.ip_slot = ip_slot.map(Box::new);
        let framing = if req.http_1_0 { Framing::CloseDelimited } else { Framing::Chunked };
        let head = if framing == Framing::Chunked { response.encode(true) } else { response.encode_close_delimited() };
        conn.queue(Bytes::from(head));
        conn.discard_input();
        conn.phase = Phase::Streaming;

        conn.opened = true;
        conn.counted = true;
        conn.stream = Some(framing);
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        self.shared.handshaking.fetch_sub(1, Ordering::Relaxed);
        self.metrics.streams += 1;
        self.metrics.streams_total += 1;
        self.mark_dirty(index);
        self.enter_deadline(index, now);
        self.handler.on_stream(&mut self.outbox, id);
        Outcome::Keep
    }

    /// Serves requests that arrived behind a deferred one (not from inside `respond`: a
    /// handler answering many deferred requests at once would recurse).
    pub(super) fn resume_deferred_http(&mut self, now: Instant) {
        while let Some(index) = self.resume_http.pop() {
            let outcome = self.process_http(index, now);
            if let Some(conn) = self.conns.get_mut(index) {
                conn.release_read_buf(&mut self.read_pool);
            }
            self.settle(index, outcome, now);
        }
    }

    /// Completes an upgrade: admission (`access`), 101 response, codec, handler `on_open`,
    /// then the frames that came right behind the request.
    fn upgrade(&mut self, index: usize, req: &UpgradeRequest, head_len: usize, now: Instant) -> Outcome {
        let ip_slot = match self.admit(index, req, now) {
            Ok(slot) => slot,
            Err(refusal) => {
                let failure = HandshakeFailure::from(refusal);
                debug!("upgrade on {index} refused: {}", failure.label());
                self.metrics.count_handshake_failure(failure);
                return self.queue_final(index, Bytes::from(refusal.response().encode(false)));
            }
        };
        let admission = match self.handler.accept(req, self.outbox.now()) {
            Ok(admission) => admission,
            Err(response) => {
                // `ip_slot` drops here: a refused upgrade holds no place in its IP's count.
                // (The request is not logged: its path or headers may hold a token.)
                debug!("upgrade on {index} refused by the handler: {}", response.status);
                self.metrics.count_handshake_failure(HandshakeFailure::Rejected);
                return self.queue_final(index, Bytes::from(response.encode(false)));
            }
        };
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        let Some(id) = ConnId::new(self.worker, index, conn.generation) else { return Outcome::Remove };
        conn.ip_slot = ip_slot.map(Box::new);
        let supported: Vec<&str> = self.config.subprotocols.iter().map(String::as_str).collect();
        let protocol = req.select_protocol(&supported);
        let deflate = req.extensions.as_deref().and_then(|offers| deflate::negotiate(offers, &self.config.deflate));
        conn.queue(Bytes::from(req.accept(protocol, deflate.as_ref().map(|(_, response)| response.as_str()))));
        conn.read_buf.advance(head_len);
        let mut codec = Connection::server(self.config.protocol);
        if let Some((params, _)) = deflate {
            codec = codec.with_deflate(params, self.config.deflate.threshold, self.config.deflate.level);
        }
        conn.codec = Some(codec);
        conn.phase = Phase::Open;
        conn.liveness.heard(now);
        conn.opened = true;
        conn.counted = true;
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        self.shared.handshaking.fetch_sub(1, Ordering::Relaxed);
        self.open_count += 1;
        self.metrics.connections = self.open_count as u64;
        self.metrics.connections_total += 1;
        self.mark_dirty(index);
        self.enter_deadline(index, now);
        self.handler.on_open(&mut self.outbox, id, req, admission);
        self.apply_outbox(now);
        // Frames sent right behind the request head are already buffered.
        self.process_frames(index, now)
    }

    /// The transport's admission rules, before the handler's: the origin (403), then the
    /// client IP's handshake rate and connection count (429). The returned slot holds the
    /// connection's place in its IP's count.
    fn admit(&self, index: usize, req: &UpgradeRequest, now: Instant) -> Result<Option<access::IpSlot>, Refusal> {
        let forwarding = (req.x_forwarded_for.as_deref(), req.forwarded.as_deref());
        self.admit_with(index, req.origin.as_deref(), forwarding, now)
    }

    /// [`Server::admit`] for a plain request that opens a stream.
    fn admit_plain(&self, index: usize, req: &PlainRequest, now: Instant) -> Result<Option<access::IpSlot>, Refusal> {
        let forwarding = (req.x_forwarded_for.as_deref(), req.forwarded.as_deref());
        self.admit_with(index, req.origin.as_deref(), forwarding, now)
    }

    fn admit_with(
        &self,
        index: usize,
        origin: Option<&str>,
        (x_forwarded_for, forwarded): (Option<&str>, Option<&str>),
        now: Instant,
    ) -> Result<Option<access::IpSlot>, Refusal> {
        let rules = &self.config.access;
        rules.check_origin(origin)?;
        let limits = &self.shared.ip_limits;
        if !limits.enabled() {
            return Ok(None);
        }
        let Some(conn) = self.conns.get(index) else { return Ok(None) };
        let client = rules.client_ip(conn.peer, x_forwarded_for, forwarded);
        limits.admit(client, now)
    }
}
