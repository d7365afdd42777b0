//! The traffic of one bench thread: building and stamping the messages it sends, and
//! counting, timing and reacting to the ones that arrive (the next echo, the next publish
//! once a window or a broadcast round is acknowledged).
//!
//! It never touches a socket or the poll loop (that is `worker.rs`): it is handed a
//! connection whose codec it queues messages on. One reused buffer builds every message,
//! so sending allocates nothing per message.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::conn::{Conn, Part};
use super::payload::{read_stamp, room_push_data, stamp, Template};
use super::report::Stats;
use super::verdict::WrongKind;
use super::{Plan, Scenario, Schedule, Shared};

/// The scenario's traffic: what to send, and the counting of what arrives.
pub(super) struct Traffic {
    pub(super) plan: Arc<Plan>,
    pub(super) shared: Arc<Shared>,
    /// Known once the coordinator published it (the worker copies it in).
    pub(super) schedule: Option<Schedule>,
    pub(super) stats: Stats,
    template: Template,
    /// Where a message is built: split off and frozen per send; the codec copies it into
    /// the masked frame and drops it, so the next build reuses the same memory.
    payload: BytesMut,
    /// xorshift64 state for handshake nonces (masking keys come from `MaskKeys`).
    rng: u64,
    /// Which throughput interval of the window a message received now counts in.
    interval: IntervalCursor,
}

/// The throughput interval "now" falls in, found by moving forward from the last one: a
/// thread's clock only goes forward, so this costs a comparison per message, where
/// dividing the time since the window's start would cost a (128-bit) division.
#[derive(Debug, Clone, Copy)]
struct IntervalCursor {
    index: usize,
    ends: Instant,
    length: Duration,
}

impl IntervalCursor {
    /// Intervals `length` long from `start` (a zero length counts everything in the first).
    fn new(start: Instant, length: Duration) -> IntervalCursor {
        IntervalCursor { index: 0, ends: start + length, length }
    }

    /// The index of the interval `now` is in (`now` no earlier than at the last call).
    fn index_at(&mut self, now: Instant) -> usize {
        while now >= self.ends && !self.length.is_zero() {
            self.index += 1;
            self.ends += self.length;
        }
        self.index
    }
}

impl Traffic {
    /// The traffic of one thread: messages built from the plan's template.
    pub(super) fn new(plan: Arc<Plan>, shared: Arc<Shared>) -> Traffic {
        let template = match &plan.room {
            Some(room) => Template::room_publish(room, plan.size),
            None => Template::raw(plan.size),
        };
        Traffic {
            payload: BytesMut::with_capacity(template.bytes.len() * 2),
            template,
            schedule: None,
            stats: Stats::with_intervals(plan.throughput_intervals()),
            // Nothing is counted before `begin` sets the window's start.
            interval: IntervalCursor::new(Instant::now(), plan.throughput_interval),
            rng: seed(),
            plan,
            shared,
        }
    }

    /// The run's schedule is known: traffic may start, intervals are counted from its window.
    pub(super) fn begin(&mut self, schedule: Schedule) {
        self.schedule = Some(schedule);
        self.interval = IntervalCursor::new(schedule.measure_from, self.plan.throughput_interval);
    }

    fn measuring(&self, now: Instant) -> bool {
        self.schedule.is_some_and(|s| now >= s.measure_from && now < s.end)
    }

    fn sending(&self, now: Instant) -> bool {
        self.schedule.is_some_and(|s| now < s.end)
    }

    /// Builds one stamped message and hands it to the connection's codec.
    pub(super) fn send(&mut self, conn: &mut Conn, now: Instant) {
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
    pub(super) fn fill_window(&mut self, conn: &mut Conn, now: Instant) {
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
    pub(super) fn on_message(&mut self, conn: &mut Conn, data: &[u8], now: Instant) -> bool {
        if conn.part == Part::Idle {
            return false; // an idle connection only holds on (a room server's welcome, ...)
        }
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
            // What an echo server or a relay room sends is what bench connections sent:
            // anything else (a welcome, an error reply) tells a server of another kind. In a
            // room of the room protocol anyone may publish: there it is an error only.
            if conn.part != Part::Echo && self.plan.room.is_some() {
                self.stats.error("message without a bench timestamp");
                return false;
            }
            let (url, got) = (self.plan.url(conn.id).to_owned(), WrongKind::excerpt(data));
            self.wrong_kind(match conn.part {
                Part::Echo => WrongKind::NotAnEcho { url, got },
                _ => WrongKind::NotARelay { url, got },
            });
            return false;
        };
        if tag == conn.id {
            self.stats.received_own += 1;
        } else {
            self.stats.received_others += 1;
            if conn.part == Part::Echo {
                let url = self.plan.url(conn.id).to_owned();
                self.wrong_kind(WrongKind::OthersMessage { url });
                return false;
            }
        }
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
            self.stats.count_in_interval(self.interval.index_at(now));
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

    /// Stops the run (every thread): the server is not the kind the scenario drives. The
    /// first thread to find out names the reason.
    pub(super) fn wrong_kind(&self, wrong: WrongKind) {
        log::debug!("wrong kind of server: {wrong}");
        let _ = self.shared.wrong_kind.set(wrong);
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// 16 random bytes for `Sec-WebSocket-Key` (RFC 6455 §4.1: a nonce).
    pub(super) fn next_key(&mut self) -> [u8; 16] {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::BytesMut;

    use super::IntervalCursor;

    #[test]
    fn interval_cursor_follows_the_clock_forward() {
        let start = Instant::now();
        let mut cursor = IntervalCursor::new(start, Duration::from_millis(100));
        let at = |ms| start + Duration::from_millis(ms);
        let indices: Vec<usize> = [0, 99, 100, 101, 350, 350, 1000].map(|ms| cursor.index_at(at(ms))).into();
        assert_eq!(indices, [0, 0, 1, 1, 3, 3, 10]);
    }

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
