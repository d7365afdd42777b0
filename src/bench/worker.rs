//! One load-generating thread: its own `mio::Poll` and its share of the connections.
//!
//! The loop, top to bottom: wait for readiness (or the next send time), read and decode
//! what arrived, react (send the next echo, publish, count), then flush every connection
//! with output with one `write` each. Around it, the stages of a run: open connections in
//! bounded batches (non-blocking connect, upgrade, join) with a deadline each; report ready
//! and wait for the shared [`Schedule`](super::Schedule); send until its end; close every
//! connection with a close handshake, bounded by [`CLOSE_WAIT`].
//!
//! It owns the sockets, the stages and the setup of each connection; what is sent and how
//! arrivals are counted is [`Traffic`]'s (`traffic.rs`).

use std::mem;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use mio::{Events, Poll, Token};

use super::conn::{Conn, Part, Phase, ReadStatus};
use super::report::Stats;
use super::sse;
use super::traffic::Traffic;
use super::verdict::WrongKind;
use super::{Plan, Scenario, Shared};
use crate::proto::deflate::{self, DeflateConfig};
use crate::proto::handshake::{client_request, parse_response, MAX_RESPONSE_HEAD};
use crate::proto::{self, CloseCode, Connection, Event, MaskKeys, MessageKind};

/// Bytes read from one socket per turn before moving on (fairness between connections).
const READ_BUDGET: usize = 256 * 1024;
/// The thread's read buffer: one `read` call's worth.
const SCRATCH_LEN: usize = 64 * 1024;
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
        Ok(Worker {
            poll: Poll::new()?,
            scratch: vec![0; SCRATCH_LEN],
            dirty: Vec::new(),
            unread: Vec::new(),
            setting_up: Vec::new(),
            next_to_start: 0,
            rate_publishers,
            stage: Stage::Setup,
            traffic: Traffic::new(plan, shared),
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
        let stopping = matches!(self.stage, Stage::Setup | Stage::Waiting | Stage::Running);
        if stopping && self.traffic.shared.wrong_kind.get().is_some() {
            self.stop(now);
        }
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
                self.traffic.begin(schedule);
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
            let target = plan.target(conn.id);
            let connected = conn.connect(self.poll.registry(), Token(index), target.addr, bind).and_then(|()| {
                match (&plan.tls, &target.tls_name) {
                    (Some(config), Some(name)) => conn.start_tls(config, name),
                    _ => Ok(()),
                }
            });
            match connected {
                Ok(()) => {
                    conn.deadline = now + plan.handshake_timeout;
                    self.setting_up.push(index);
                }
                Err(e) => self.fail_setup(index, &format!("connect {}: {e}", target.addr)),
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
            Ok(true) if self.traffic.plan.sse_target(conn.part).is_some() => {
                let plan = &self.traffic.plan;
                let target = plan.sse_target(conn.part).unwrap_or_default();
                conn.queue(&sse::request(&plan.target(conn.id).host, target));
                conn.sse = Some(Box::default());
                conn.phase = Phase::Joining; // until the stream's `joined` event
                self.mark_dirty(index);
            }
            Ok(true) => {
                let key = self.traffic.next_key();
                let plan = &self.traffic.plan;
                let target = plan.target(conn.id);
                let (mut request, key) = client_request(&target.host, &target.path, key, plan.protocols());
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
                let addr = self.traffic.plan.target(conn.id).addr;
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
                let why = format!("upgrade response head over {} KiB", MAX_RESPONSE_HEAD / 1024);
                return self.fail_setup(index, &why);
            }
            Ok(None) => return,
            Err(e) => return self.fail_setup(index, &format!("upgrade refused: {e}")),
        };
        conn.read_buf.advance(head_len);
        // A fresh OS seed per connection, expanded by a CSPRNG (cheap per frame).
        let mask_keys = match MaskKeys::from_os() {
            Ok(keys) => keys,
            Err(e) => return self.fail_setup(index, &e.to_string()),
        };
        let mut codec = Connection::client(proto::Config::default(), mask_keys);
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
            // A server that did not pick wsedge.v1 will not understand a join.
            Some(_) if response.protocol.is_none() => {
                let url = plan.url(conn.id).to_owned();
                self.traffic.wrong_kind(WrongKind::NoSubprotocol { url });
                return self.fail_setup(index, "the server did not accept the wsedge.v1 subprotocol");
            }
            Some(room) => {
                if let Some(codec) = conn.codec.as_mut() {
                    codec.send_message(MessageKind::Text, join_request(room).into());
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
        let plan = &self.traffic.plan;
        if plan.room.as_deref().is_some_and(|room| text == join_request(room).as_bytes()) {
            let url = plan.url(self.conns[index].id).to_owned();
            self.traffic.wrong_kind(WrongKind::JoinEchoed { url });
            return self.fail_setup(index, "the join request came back as sent");
        }
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
            _ if conn.sse.is_some() => return self.read_events(index, status, now),
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

    /// An event stream's input: its `joined` event opens it (an `error` event is a refused
    /// join), then every `message` event is counted as a socket's message is.
    fn read_events(&mut self, index: usize, status: ReadStatus, now: Instant) {
        let (conn, traffic) = (&mut self.conns[index], &mut self.traffic);
        let Some(mut reader) = conn.sse.take() else { return };
        let mut buf = mem::take(&mut conn.read_buf);
        let (mut open, mut joined, mut refused) = (conn.phase == Phase::Open, false, None);
        let result = reader.read(&mut buf, |event, data| match event {
            "message" if open => {
                traffic.on_message(conn, data, now);
            }
            "joined" if !open => (open, joined) = (true, true),
            "error" if !open => refused = Some(String::from_utf8_lossy(data).into_owned()),
            _ => {}
        });
        conn.read_buf = buf;
        conn.sse = Some(reader);
        if joined {
            self.opened(index);
        }
        match (refused, result, status) {
            (Some(why), _, _) => self.fail_setup(index, &format!("join refused: {why}")),
            (_, Err(e), _) => self.lost(index, &e),
            (_, _, ReadStatus::Drained) => {}
            (_, _, ReadStatus::Budget) => self.unread.push(index),
            (_, _, ReadStatus::Eof) => self.lost(index, "server closed the event stream's connection"),
            (_, _, ReadStatus::Failed(e)) => self.lost(index, &format!("read: {e}")),
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

    /// The server is of the wrong kind (this thread or another found out): connections in
    /// setup are dropped, open ones closed with a close handshake, nothing more is sent.
    fn stop(&mut self, now: Instant) {
        self.next_to_start = self.conns.len();
        for index in 0..self.conns.len() {
            if self.conns[index].phase.in_setup() {
                self.finish(index);
            }
        }
        self.setting_up.clear();
        self.begin_close(now);
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
            if conn.sse.is_some() {
                // An event stream has no close handshake: the client just leaves.
                conn.phase = Phase::Closing;
                self.traffic.stats.closed_cleanly += 1;
                self.finish(index);
                continue;
            }
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

/// The room protocol's join request (its reply carries the same `id`).
fn join_request(room: &str) -> String {
    format!(r#"{{"id":"{JOIN_ID}","op":"join","room":"{room}"}}"#)
}
