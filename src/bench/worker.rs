//! One load-generating thread: its own `mio::Poll` and its share of the connections.
//!
//! The loop, top to bottom: wait for readiness (or the next send time), read and decode
//! what arrived, react (send the next echo, publish, count), then flush every connection
//! with output with one `write` each. Around it, the stages of a run: open connections in
//! bounded batches (non-blocking connect, upgrade, join) with a deadline each; report ready
//! and wait for the shared [`Schedule`]; send until its end; close every connection with a
//! close handshake, bounded by [`CLOSE_WAIT`].

use std::mem;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use mio::{Events, Poll, Token};

use super::conn::{Conn, Part, Phase, ReadStatus};
use super::payload::{read_stamp, room_push_data, stamp, Template};
use super::report::Stats;
use super::{Plan, Scenario};
use crate::proto::deflate::{self, DeflateConfig};
use crate::proto::handshake::{client_request, parse_response};
use crate::proto::{self, CloseCode, Connection, Event, MessageKind};
use crate::rooms::SUBPROTOCOL;

/// Bytes read from one socket per turn before moving on (fairness between connections).
const READ_BUDGET: usize = 256 * 1024;
/// The thread's read buffer: one `read` call's worth.
const SCRATCH_LEN: usize = 64 * 1024;
/// Longest 101 response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// How long connections get to finish the close handshake at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Most messages a rate-driven publisher sends in one turn when it has fallen behind.
const MAX_BURST: u64 = 1024;
/// A rate-driven publisher whose socket holds this much unwritten output skips sends
/// (the server stopped reading from it); the report shows the rate it reached.
const MAX_UNWRITTEN: usize = 1 << 20;
/// Readiness events taken per `poll`.
const EVENTS: usize = 1024;
/// The `id` of the room protocol's join request, to recognise its reply.
const JOIN_ID: &str = "j";

/// When traffic starts, when measuring starts (after the warmup) and when it all ends.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub measure_from: Instant,
    pub end: Instant,
}

/// What the threads and the coordinator share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Threads done with connection setup.
    pub threads_ready: AtomicUsize,
    /// Connections that opened, across threads.
    pub opened: AtomicUsize,
    /// Connections open now, across threads (the size of a broadcast round).
    pub live: AtomicUsize,
    /// Set by the coordinator once every thread is ready.
    pub schedule: OnceLock<Schedule>,
}

/// Where a thread is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Setup,
    Waiting,
    Running,
    Closing { until: Instant },
    Finished,
}

pub struct Worker {
    poll: Poll,
    conns: Vec<Conn>,
    scratch: Vec<u8>,
    /// Connections with output to flush this turn.
    dirty: Vec<usize>,
    /// Connections whose read stopped at the budget with input left in the socket.
    unread: Vec<usize>,
    /// Connections in their setup phase (at most `plan.connect_batch`).
    setting_up: Vec<usize>,
    next_to_start: usize,
    /// Publishers driven by `--rate` (the others are driven by their acknowledgements).
    rate_publishers: Vec<usize>,
    stage: Stage,
    traffic: Traffic,
}

/// The scenario's traffic: what to send, and the counting of what arrives.
struct Traffic {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    schedule: Option<Schedule>,
    stats: Stats,
    template: Template,
    /// Where a message is built: split off and frozen per send; the codec copies it into
    /// the masked frame and drops it, so the next build reuses the same memory.
    payload: BytesMut,
    /// xorshift64 state for handshake keys and masking seeds.
    rng: u64,
}

impl Worker {
    /// A worker for the connections numbered `ids` (global numbers, across threads).
    pub fn new(plan: Arc<Plan>, shared: Arc<Shared>, ids: Vec<u32>) -> std::io::Result<Worker> {
        let now = Instant::now();
        let conns: Vec<Conn> = ids.into_iter().map(|id| Conn::new(id, plan.part(id), now)).collect();
        let rate_publishers = match plan.scenario {
            Scenario::Fanout { rate, .. } if rate > 0.0 => {
                conns.iter().enumerate().filter(|(_, c)| c.part == Part::Publisher).map(|(i, _)| i).collect()
            }
            _ => Vec::new(),
        };
        let template = match &plan.room {
            Some(room) => Template::room_publish(room, plan.size),
            None => Template::raw(plan.size),
        };
        Ok(Worker {
            poll: Poll::new()?,
            scratch: vec![0; SCRATCH_LEN],
            dirty: Vec::new(),
            unread: Vec::new(),
            setting_up: Vec::new(),
            next_to_start: 0,
            rate_publishers,
            stage: Stage::Setup,
            traffic: Traffic {
                payload: BytesMut::with_capacity(template.bytes.len() * 2),
                template,
                schedule: None,
                stats: Stats::new(),
                rng: seed(),
                plan,
                shared,
            },
            conns,
        })
    }

    /// Runs the whole scenario for this thread's connections and returns what it counted.
    pub fn run(mut self) -> std::io::Result<Stats> {
        let mut events = Events::with_capacity(EVENTS);
        let mut now = Instant::now();
        loop {
            self.advance(now);
            self.flush_dirty();
            if self.stage == Stage::Finished {
                return Ok(self.traffic.stats);
            }
            let timeout = self.timeout(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            now = Instant::now();
            for event in events.iter() {
                let index = event.token().0;
                let Some(conn) = self.conns.get(index) else { continue };
                if conn.phase == Phase::Connecting {
                    self.on_connect_event(index);
                }
                if event.is_writable() {
                    self.mark_dirty(index);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(index, now);
                }
            }
            for index in mem::take(&mut self.unread) {
                self.read(index, now);
            }
        }
    }

    /// Stage changes and everything driven by time rather than by sockets.
    fn advance(&mut self, now: Instant) {
        if self.stage == Stage::Setup {
            self.start_connections(now);
            self.expire_setup(now);
            if self.next_to_start == self.conns.len() && self.setting_up.is_empty() {
                self.traffic.shared.threads_ready.fetch_add(1, Ordering::SeqCst);
                self.stage = Stage::Waiting;
            }
        }
        if self.stage == Stage::Waiting {
            if let Some(schedule) = self.traffic.shared.schedule.get().copied() {
                self.traffic.schedule = Some(schedule);
                self.start_traffic(now);
                self.stage = Stage::Running;
            }
        }
        if self.stage == Stage::Running {
            match self.traffic.schedule {
                Some(s) if now >= s.end => self.begin_close(now),
                _ => self.publish_due(now),
            }
        }
        if let Stage::Closing { until } = self.stage {
            if now >= until || self.conns.iter().all(|c| matches!(c.phase, Phase::Done | Phase::Pending)) {
                for index in 0..self.conns.len() {
                    if self.conns[index].phase == Phase::Closing {
                        self.traffic.stats.error("close handshake not finished in time");
                        self.finish(index);
                    }
                }
                self.stage = Stage::Finished;
            }
        }
    }

    fn timeout(&self, now: Instant) -> Duration {
        if !self.unread.is_empty() {
            return Duration::ZERO;
        }
        match (self.stage, self.traffic.schedule) {
            (Stage::Running, Some(s)) => {
                let mut wait = s.end.saturating_duration_since(now).min(Duration::from_millis(100));
                if let Scenario::Fanout { rate, .. } = self.traffic.plan.scenario {
                    // The next message due from any open rate-driven publisher; at least
                    // 1 ms, so a publisher held back by a full socket does not spin.
                    let per_publisher = rate / self.traffic.plan.publishers() as f64;
                    let open = self.rate_publishers.iter().map(|&i| &self.conns[i]).filter(|c| c.phase == Phase::Open);
                    if let Some(sent) = open.map(|c| c.sent).min() {
                        let next = s.start + Duration::from_secs_f64(sent as f64 / per_publisher);
                        wait = wait.min(next.saturating_duration_since(now).max(Duration::from_millis(1)));
                    }
                }
                wait
            }
            (Stage::Waiting, _) => Duration::from_millis(1),
            (Stage::Finished, _) => Duration::ZERO,
            _ => Duration::from_millis(10),
        }
    }

    // ---- connection setup ----

    /// Starts connects while fewer than `connect_batch` connections are in setup.
    fn start_connections(&mut self, now: Instant) {
        let plan = self.traffic.plan.clone();
        while self.setting_up.len() < plan.connect_batch && self.next_to_start < self.conns.len() {
            let index = self.next_to_start;
            self.next_to_start += 1;
            let conn = &mut self.conns[index];
            let bind = plan.bind_ips.get(conn.id as usize % plan.bind_ips.len().max(1)).copied();
            let connected = conn.connect(self.poll.registry(), Token(index), plan.target.addr, bind).and_then(|()| {
                match (&plan.tls, &plan.target.tls_name) {
                    (Some(config), Some(name)) => conn.start_tls(config, name),
                    _ => Ok(()),
                }
            });
            match connected {
                Ok(()) => {
                    conn.deadline = now + plan.handshake_timeout;
                    self.setting_up.push(index);
                }
                Err(e) => self.fail_setup(index, &format!("connect {}: {e}", plan.target.addr)),
            }
        }
    }

    /// Fails connections whose setup outlived the handshake timeout.
    fn expire_setup(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.setting_up.len() {
            let conn_index = self.setting_up[index];
            let conn = &self.conns[conn_index];
            if !conn.phase.in_setup() {
                self.setting_up.swap_remove(index);
                continue;
            }
            if now >= conn.deadline {
                let what = match conn.phase {
                    Phase::Connecting => "TCP connect",
                    Phase::Handshaking => "upgrade response",
                    _ => "join reply",
                };
                let timeout = self.traffic.plan.handshake_timeout.as_secs_f64();
                self.fail_setup(conn_index, &format!("timed out after {timeout} s waiting for the {what}"));
                self.setting_up.swap_remove(index);
                continue;
            }
            index += 1;
        }
    }

    /// A connecting socket became writable (or failed): send the upgrade request.
    fn on_connect_event(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        match conn.finish_connect() {
            Ok(false) => {}
            Ok(true) => {
                let key = self.traffic.next_key();
                let plan = &self.traffic.plan;
                let (mut request, key) = client_request(&plan.target.host, &plan.target.path, key, plan.protocols());
                if plan.deflate {
                    // Insert the offer before the blank line that ends the head.
                    request.truncate(request.len().saturating_sub(2));
                    request.extend_from_slice(
                        format!("Sec-WebSocket-Extensions: {}\r\n\r\n", deflate::offer()).as_bytes(),
                    );
                }
                conn.key = key;
                conn.queue(&request);
                conn.phase = Phase::Handshaking;
                self.mark_dirty(index);
            }
            Err(e) => {
                let addr = self.traffic.plan.target.addr;
                self.fail_setup(index, &format!("connect {addr}: {e}"));
            }
        }
    }

    /// Reads the 101 response; on success the codec takes over.
    fn finish_handshake(&mut self, index: usize, now: Instant) {
        let plan = self.traffic.plan.clone();
        let conn = &mut self.conns[index];
        let (response, head_len) = match parse_response(&conn.read_buf, &conn.key, plan.protocols()) {
            Ok(Some(parsed)) => parsed,
            Ok(None) if conn.read_buf.len() > MAX_RESPONSE_HEAD => {
                return self.fail_setup(index, "upgrade response head over 16 KiB");
            }
            Ok(None) => return,
            Err(e) => return self.fail_setup(index, &format!("upgrade refused: {e}")),
        };
        conn.read_buf.advance(head_len);
        let mut codec = Connection::client(proto::Config::default(), self.traffic.next_u64());
        match (plan.deflate, deflate::accept_response(response.extensions.as_deref())) {
            (true, Ok(Some(params))) => {
                let defaults = DeflateConfig::default();
                codec = codec.with_deflate(params, defaults.threshold, defaults.level);
            }
            (_, Ok(None)) => {}
            (false, Ok(Some(_))) => return self.fail_setup(index, "server accepted an extension that was not offered"),
            (_, Err(e)) => return self.fail_setup(index, &format!("bad permessage-deflate response: {e}")),
        }
        conn.codec = Some(codec);
        conn.key = String::new();
        match &plan.room {
            Some(room) => {
                let join = format!(r#"{{"id":"{JOIN_ID}","op":"join","room":"{room}"}}"#);
                if let Some(codec) = conn.codec.as_mut() {
                    codec.send_message(MessageKind::Text, join.into());
                }
                conn.queue_codec_output();
                conn.phase = Phase::Joining;
                self.mark_dirty(index);
            }
            None => self.opened(index),
        }
        // Frames may have arrived right behind the response head.
        self.decode(index, now);
    }

    /// Room protocol, while joining: the welcome is skipped, the join reply decides.
    fn on_join_reply(&mut self, index: usize, text: &[u8]) {
        let reply_prefix = format!(r#"{{"id":"{JOIN_ID}","#);
        if !text.starts_with(reply_prefix.as_bytes()) {
            return; // the welcome
        }
        if text.get(reply_prefix.len()..).is_some_and(|rest| rest.starts_with(b"\"ok\"")) {
            self.opened(index);
        } else {
            self.fail_setup(index, &format!("join refused: {}", String::from_utf8_lossy(text)));
        }
    }

    fn opened(&mut self, index: usize) {
        self.conns[index].phase = Phase::Open;
        self.traffic.stats.opened += 1;
        self.traffic.shared.opened.fetch_add(1, Ordering::SeqCst);
        self.traffic.shared.live.fetch_add(1, Ordering::SeqCst);
    }

    fn fail_setup(&mut self, index: usize, reason: &str) {
        log::debug!("connection {} failed: {reason}", self.conns[index].id);
        self.traffic.stats.fail(reason);
        self.finish(index);
    }

    // ---- reading ----

    fn read(&mut self, index: usize, now: Instant) {
        let conn = &mut self.conns[index];
        if matches!(conn.phase, Phase::Pending | Phase::Connecting | Phase::Done) {
            return;
        }
        let status = conn.read_some(&mut self.scratch, READ_BUDGET);
        // TLS: handshake messages (and what waited for the handshake) go out now.
        if conn.tls_wants_write() {
            self.mark_dirty(index);
        }
        let conn = &mut self.conns[index];
        match conn.phase {
            Phase::Handshaking => self.finish_handshake(index, now),
            _ => self.decode(index, now),
        }
        match status {
            ReadStatus::Drained => {}
            ReadStatus::Budget => self.unread.push(index),
            ReadStatus::Eof => self.lost(index, "server closed the TCP connection without a close frame"),
            ReadStatus::Failed(e) => self.lost(index, &format!("read: {e}")),
        }
    }

    /// Decodes every complete frame in the read buffer and acts on it.
    fn decode(&mut self, index: usize, now: Instant) {
        loop {
            let conn = &mut self.conns[index];
            let Some(codec) = conn.codec.as_mut() else { return };
            let result = codec.decode(&mut conn.read_buf);
            conn.queue_codec_output();
            if conn.unwritten() > 0 {
                self.mark_dirty(index);
            }
            let conn = &mut self.conns[index];
            match result {
                Ok(None) => return,
                Ok(Some(Event::Message { data, .. })) => {
                    // Messages after our close are not counted.
                    if conn.phase == Phase::Joining {
                        self.on_join_reply(index, &data);
                    } else if conn.phase == Phase::Open && self.traffic.on_message(conn, &data, now) {
                        self.mark_dirty(index);
                    }
                }
                Ok(Some(Event::Ping(_))) => self.traffic.stats.pings += 1,
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close(frame))) => {
                    if conn.phase == Phase::Closing {
                        self.traffic.stats.closed_cleanly += 1;
                        self.finish(index);
                    } else {
                        let why = frame.map_or_else(
                            || "no status".to_owned(),
                            |f| format!("{} {}", f.code.0, String::from_utf8_lossy(&f.reason)).trim_end().to_owned(),
                        );
                        // Send the codec's close reply before dropping the socket.
                        let _ = conn.flush();
                        self.lost(index, &format!("server closed the connection ({why})"));
                    }
                    return;
                }
                Err(e) => {
                    let _ = conn.flush();
                    return self.lost(index, &format!("protocol error from the server: {e}"));
                }
            }
        }
    }

    /// A connection ended before we closed it (or during our close, without its close).
    fn lost(&mut self, index: usize, reason: &str) {
        let phase = self.conns[index].phase;
        match phase {
            Phase::Pending | Phase::Done => {}
            Phase::Connecting | Phase::Handshaking | Phase::Joining => self.fail_setup(index, reason),
            Phase::Open => {
                log::debug!("connection {} lost: {reason}", self.conns[index].id);
                self.traffic.stats.error(reason);
                self.traffic.stats.dropped += 1;
                self.finish(index);
            }
            Phase::Closing => {
                self.traffic.stats.error("connection ended during the close handshake");
                self.finish(index);
            }
        }
    }

    fn finish(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        if conn.phase == Phase::Open {
            self.traffic.shared.live.fetch_sub(1, Ordering::SeqCst);
        }
        conn.finish(self.poll.registry());
    }

    // ---- traffic ----

    /// The schedule's start: first messages on every open connection.
    fn start_traffic(&mut self, now: Instant) {
        for index in 0..self.conns.len() {
            let conn = &mut self.conns[index];
            if conn.phase != Phase::Open {
                continue;
            }
            match (conn.part, self.traffic.plan.scenario) {
                (Part::Echo, Scenario::Echo { depth }) => {
                    for _ in 0..depth {
                        self.traffic.send(conn, now);
                    }
                }
                (Part::Publisher, Scenario::Fanout { rate, .. }) if rate <= 0.0 => self.traffic.fill_window(conn, now),
                (Part::Broadcaster, _) => self.traffic.send(conn, now),
                _ => {}
            }
            self.mark_dirty(index);
        }
    }

    /// Rate-driven publishers send what their schedule says is due.
    fn publish_due(&mut self, now: Instant) {
        let (Scenario::Fanout { rate, .. }, Some(schedule)) = (self.traffic.plan.scenario, self.traffic.schedule)
        else {
            return;
        };
        if self.rate_publishers.is_empty() || now < schedule.start {
            return;
        }
        let per_publisher = rate / self.traffic.plan.publishers() as f64;
        // The first message goes at the start, the next 1/rate later, and so on.
        let due = (now.duration_since(schedule.start).as_secs_f64() * per_publisher) as u64 + 1;
        for i in 0..self.rate_publishers.len() {
            let index = self.rate_publishers[i];
            let conn = &mut self.conns[index];
            if conn.phase != Phase::Open || conn.unwritten() > MAX_UNWRITTEN {
                continue;
            }
            let burst = due.saturating_sub(conn.sent).min(MAX_BURST);
            for _ in 0..burst {
                self.traffic.send(conn, now);
            }
            if burst > 0 {
                self.mark_dirty(index);
            }
        }
    }

    /// The schedule's end: stop sending, close every connection with a close handshake.
    fn begin_close(&mut self, now: Instant) {
        for index in 0..self.conns.len() {
            let conn = &mut self.conns[index];
            if conn.phase != Phase::Open {
                continue;
            }
            self.traffic.stats.open_at_end += 1;
            self.traffic.shared.live.fetch_sub(1, Ordering::SeqCst);
            if let Some(codec) = conn.codec.as_mut() {
                codec.close(CloseCode::NORMAL, "bench done");
            }
            conn.queue_codec_output();
            conn.phase = Phase::Closing;
            self.mark_dirty(index);
        }
        self.stage = Stage::Closing { until: now + CLOSE_WAIT };
    }

    // ---- writing ----

    fn mark_dirty(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        if !conn.dirty && conn.socket.is_some() {
            conn.dirty = true;
            self.dirty.push(index);
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(index) = self.dirty.pop() {
            let conn = &mut self.conns[index];
            conn.dirty = false;
            if let Err(e) = conn.flush() {
                self.lost(index, &format!("write: {e}"));
            }
        }
    }
}

impl Traffic {
    fn measuring(&self, now: Instant) -> bool {
        self.schedule.is_some_and(|s| now >= s.measure_from && now < s.end)
    }

    fn sending(&self, now: Instant) -> bool {
        self.schedule.is_some_and(|s| now < s.end)
    }

    /// Builds one stamped message and hands it to the connection's codec.
    fn send(&mut self, conn: &mut Conn, now: Instant) {
        let Some(codec) = conn.codec.as_mut() else { return };
        self.payload.extend_from_slice(&self.template.bytes);
        if let Some(header) = self.payload.get_mut(self.template.stamp_at..) {
            stamp(header, self.plan.nanos(now), conn.id);
        }
        codec.send_message(self.plan.kind, self.payload.split().freeze());
        conn.queue_codec_output();
        conn.sent += 1;
        if self.measuring(now) {
            self.stats.sent += 1;
        }
    }

    /// A window-driven publisher (`--rate 0`) sends until `window` of its messages are
    /// unacknowledged.
    fn fill_window(&mut self, conn: &mut Conn, now: Instant) {
        let Scenario::Fanout { window, rate, .. } = self.plan.scenario else { return };
        if rate > 0.0 {
            return;
        }
        while self.sending(now) && conn.sent.saturating_sub(conn.acked) < window {
            self.send(conn, now);
        }
    }

    /// Counts and times a message that arrived on an open connection, and reacts per the
    /// connection's part. Returns whether it queued output.
    fn on_message(&mut self, conn: &mut Conn, data: &[u8], now: Instant) -> bool {
        let payload = if self.plan.room.is_some() {
            match room_push_data(data) {
                Some(payload) => payload,
                None => {
                    // Replies are silent on success; an error reply (429 rate limit, ...)
                    // means the server refused a publish, which will not come back: it
                    // frees its place in the window (a broadcaster moves on to the next).
                    if !data.windows(9).any(|w| w == br#""error":{"#) {
                        return false;
                    }
                    self.stats.error(&format!("server error reply: {}", String::from_utf8_lossy(data)));
                    let sent_before = conn.sent;
                    match conn.part {
                        Part::Publisher => {
                            conn.acked += 1;
                            self.fill_window(conn, now);
                        }
                        Part::Broadcaster if self.sending(now) => self.send(conn, now),
                        _ => {}
                    }
                    return conn.sent != sent_before;
                }
            }
        } else {
            data
        };
        let Some((sent_nanos, tag)) = read_stamp(payload) else {
            self.stats.error("message without a bench timestamp");
            return false;
        };
        if payload.len() != self.plan.size {
            self.stats.error(&format!("message of {} bytes, expected {}", payload.len(), self.plan.size));
        }
        if self.measuring(now) {
            // Stamps hold 48 bits of nanoseconds. With several client threads a message
            // may be stamped by another thread after this thread took `now` (a negative
            // latency of a few microseconds, at most a loop turn): count it as 0.
            let elapsed = self.plan.nanos(now).wrapping_sub(sent_nanos) & ((1 << 48) - 1);
            let latency = if elapsed >= 1 << 47 { 0 } else { elapsed };
            self.stats.received += 1;
            self.stats.received_bytes += payload.len() as u64;
            self.stats.latency.saturating_record(latency);
        }
        let sent_before = conn.sent;
        match conn.part {
            Part::Echo if self.sending(now) => self.send(conn, now),
            Part::Publisher if tag == conn.id => {
                conn.acked += 1;
                self.fill_window(conn, now);
            }
            Part::Broadcaster => {
                // The next round once a round's worth of messages arrived (counted
                // cumulatively: see `Part::Broadcaster`).
                conn.acked += 1;
                let round = self.shared.live.load(Ordering::Relaxed).max(1) as u64;
                if conn.acked >= round && self.sending(now) {
                    conn.acked -= round;
                    self.send(conn, now);
                }
            }
            _ => {}
        }
        conn.sent != sent_before
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// 16 random bytes for `Sec-WebSocket-Key` (RFC 6455 §4.1: a nonce).
    fn next_key(&mut self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        key[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        key
    }
}

/// A seed from the OS-seeded hasher (std has no RNG; a load generator needs no more).
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish() | 1
}

impl Plan {
    /// The subprotocols offered: `wsedge.v1` for the room protocol, none otherwise.
    pub fn protocols(&self) -> &'static [&'static str] {
        if self.room.is_some() {
            &[SUBPROTOCOL]
        } else {
            &[]
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    /// What `Traffic::send` and the read buffers rely on for "no allocation per message":
    /// once the `Bytes` split off a buffer is dropped, the next append reuses the memory.
    #[test]
    fn message_buffers_are_reused_not_reallocated() {
        let mut buf = BytesMut::with_capacity(128);
        let memory = buf.as_ptr() as usize..buf.as_ptr() as usize + 128;
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 40]);
            assert!(memory.contains(&(buf.as_ptr() as usize)), "reallocated");
            let message = buf.split().freeze();
            drop(message);
        }
    }
}
