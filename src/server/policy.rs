//! The loop's rules as plain functions of state and time, with no sockets: what a deadline
//! means in each phase, keepalive, when reading pauses and resumes (backpressure), how much
//! one connection may read per turn (fairness), and the slow-consumer rule of fan-out. The
//! loop (`event_loop.rs` and its sibling files) asks these and acts on the answers, so each
//! rule is tested here with driven time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::conn::Phase;
use super::{Config, ConnId};

/// Bytes read from one open connection per turn before decoding them: a flood waits for
/// the next turn while the others are served (fairness), and decoding works in bounded
/// batches.
pub const READ_BUDGET: usize = 256 * 1024;

/// How much to read from a connection in `phase` that already buffers `buffered` bytes.
/// In the HTTP phase: a request head and its body, plus one byte to notice an oversized
/// one (never zero, so EOF is still seen).
pub fn read_budget(phase: Phase, buffered: usize, config: &Config) -> usize {
    match phase {
        Phase::Handshake => {
            let most = config.max_head_bytes.saturating_add(config.max_body_bytes).saturating_add(1);
            most.saturating_sub(buffered).max(1)
        }
        Phase::Open | Phase::CloseSent | Phase::Streaming | Phase::Finishing | Phase::Draining => READ_BUDGET,
    }
}

/// Whether a connection is read this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadGate {
    Read,
    /// Backpressure: the peer sends without reading what it is sent; reading resumes once
    /// the queue is down to half the high-water mark ([`may_resume_reading`]).
    Pause,
    /// The handler takes no input this turn (`Handler::accepting_input`): open connections
    /// wait, and are read again when it does.
    Hold,
}

/// The backpressure rule: a peer whose input makes us answer (requests, pipelined HTTP,
/// messages to echo) is not read while more than `high_water` bytes wait for it to read.
pub fn read_gate(phase: Phase, queued: usize, high_water: usize, holding_input: bool) -> ReadGate {
    let answers_input = matches!(phase, Phase::Handshake | Phase::Open | Phase::CloseSent);
    if answers_input && queued > high_water {
        ReadGate::Pause
    } else if holding_input && phase == Phase::Open {
        ReadGate::Hold
    } else {
        ReadGate::Read
    }
}

/// A paused connection is read again once its queue is down to half the high-water mark
/// (not at the mark itself: a peer reading slowly would flip it every turn).
pub fn may_resume_reading(queued: usize, high_water: usize) -> bool {
    queued <= high_water / 2
}

/// What the slow-consumer rule says about one more fan-out frame for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// Queue it.
    Queue,
    /// Over the cap with what is queued: offer the queue to the socket first (frames
    /// queued earlier this turn have not met it yet), then ask again with what it took.
    OfferFirst,
    /// Not reading: close it with 1013 "slow consumer" (what is queued still goes out).
    SlowConsumer,
}

/// The slow-consumer rule: fan-out may not push a connection's queue past `cap`
/// (`max_outbound_bytes`). `written` is `None` before the queue was offered to the socket,
/// else what the socket took just now: a member whose socket took bytes is reading, and a
/// burst bigger than the cap (several publishes in one turn, from other workers too) may
/// take it to twice the cap; one that took nothing is judged by the cap.
pub fn fanout(queued: usize, len: usize, cap: usize, written: Option<usize>) -> Fanout {
    let after = queued.saturating_add(len);
    match written {
        _ if after <= cap => Fanout::Queue,
        None => Fanout::OfferFirst,
        Some(written) if written > 0 && after <= cap.saturating_mul(2) => Fanout::Queue,
        Some(_) => Fanout::SlowConsumer,
    }
}

/// What a connection's deadline means when it comes, by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Open: the keepalive check ([`Liveness::check`]).
    Keepalive,
    /// No complete request in time (`handshake_timeout`): drop, counted as a handshake
    /// failure.
    HandshakeTimeout,
    /// Our close frame got no answer in time (`close_linger`): drop, counted as abrupt.
    CloseUnanswered,
    /// Our last bytes were not taken, or the peer's FIN did not come, in time: drop.
    Linger,
}

pub fn expiry(phase: Phase) -> Expiry {
    match phase {
        Phase::Open => Expiry::Keepalive,
        Phase::Handshake => Expiry::HandshakeTimeout,
        Phase::CloseSent => Expiry::CloseUnanswered,
        // (A stream has no deadline of its own: its handler decides when it ends.)
        Phase::Streaming | Phase::Finishing | Phase::Draining => Expiry::Linger,
    }
}

/// The deadline a connection gets on entering `phase` at `now` (`None`: none in that
/// phase). Open connections get the keepalive check, when keepalive is on.
/// How long a plain HTTP request the handler answers later (`on_http` returned `None`) may
/// wait for its answer (at least the handshake timeout): the backend API's calls that wait
/// on other nodes answer within 5 s.
pub const DEFERRED_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

pub fn deadline_on_entering(phase: Phase, now: Instant, config: &Config) -> Option<Instant> {
    match phase {
        Phase::Handshake => Some(now + config.handshake_timeout),
        Phase::Open => (!config.ping_interval.is_zero()).then(|| now + config.ping_interval),
        Phase::Streaming => None,
        Phase::CloseSent | Phase::Finishing | Phase::Draining => Some(now + config.close_linger),
    }
}

/// An open connection's keepalive: ping it when it has been silent for one interval, drop
/// it when it stays silent for two, and for at least one after the ping (RFC 6455 §5.5.2: a
/// ping may serve as a keepalive). The ping always goes out first, so a loop that stalled
/// past both deadlines does not drop peers it never asked.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// When bytes last arrived.
    last_heard: Instant,
    /// A keepalive ping went out since `last_heard`.
    pinged: bool,
}

/// What [`Liveness::check`] asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    /// Check again at this time.
    Wait(Instant),
    /// Send a ping, then check again at this time.
    Ping(Instant),
    /// Silent too long after a ping: drop the connection (unless [`spare_silent`]).
    Drop,
}

impl Liveness {
    pub fn new(now: Instant) -> Self {
        Liveness { last_heard: now, pinged: false }
    }

    /// Bytes arrived from the peer at `now`.
    pub fn heard(&mut self, now: Instant) {
        *self = Liveness::new(now);
    }

    /// The keepalive deadline came (or any time at or after it): what to do, with pings
    /// every `interval`. Counts the ping as sent when it says [`Keepalive::Ping`].
    pub fn check(&mut self, now: Instant, interval: Duration) -> Keepalive {
        let silent = now.saturating_duration_since(self.last_heard);
        if self.pinged && silent >= interval * 2 {
            Keepalive::Drop
        } else if silent >= interval {
            self.pinged = true;
            Keepalive::Ping((self.last_heard + interval * 2).max(now + interval))
        } else {
            Keepalive::Wait(self.last_heard + interval)
        }
    }

    /// How long the peer has been silent at `now`.
    pub fn silent(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }
}

/// A peer that looks silent is spared when bytes wait for it in the kernel (a pong the
/// loop has not got to yet, or input the worker holds): it is not silent. Not when reading
/// is paused because the peer does not read what it is sent: that peer is dropped, whatever
/// it sends.
pub fn spare_silent(held: bool, read_paused: bool, bytes_waiting: impl FnOnce() -> bool) -> bool {
    (held || !read_paused) && bytes_waiting()
}

/// Connections' deadlines in time order. A connection has one deadline at a time
/// (`Conn::deadline`); setting a new one leaves the old entry here, and an entry that no
/// longer matches its connection's deadline is stale and skipped when it comes up
/// (cheaper than removing from the heap).
#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Deadlines {
    pub fn push(&mut self, at: Instant, id: ConnId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest entry (maybe stale).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        let Reverse((at, id)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some((at, id))
    }
}

/// How long the loop may sleep in `poll` at `now`: not at all while input from last turn
/// waits (`more_input`), briefly while input is held (the other workers catch up without
/// a wake-up), else until the earliest of the given times.
pub fn poll_timeout(
    now: Instant,
    more_input: bool,
    holding: bool,
    times: impl IntoIterator<Item = Option<Instant>>,
) -> Option<Duration> {
    if more_input {
        return Some(Duration::ZERO);
    }
    if holding {
        return Some(Duration::from_millis(1));
    }
    times.into_iter().flatten().min().map(|t| t.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    #[test]
    fn a_silent_peer_is_pinged_after_one_interval_and_dropped_after_two() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        assert_eq!(liveness.check(start + INTERVAL / 2, INTERVAL), Keepalive::Wait(start + INTERVAL));
        assert_eq!(liveness.check(start + INTERVAL, INTERVAL), Keepalive::Ping(start + INTERVAL * 2));
        assert_eq!(liveness.check(start + INTERVAL * 2, INTERVAL), Keepalive::Drop);
    }

    #[test]
    fn hearing_from_the_peer_after_a_ping_keeps_it() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        assert_eq!(liveness.check(start + INTERVAL, INTERVAL), Keepalive::Ping(start + INTERVAL * 2));
        let pong = start + INTERVAL + Duration::from_secs(1);
        liveness.heard(pong);
        assert_eq!(liveness.check(start + INTERVAL * 2, INTERVAL), Keepalive::Wait(pong + INTERVAL));
        assert_eq!(liveness.check(pong + INTERVAL, INTERVAL), Keepalive::Ping(pong + INTERVAL * 2));
    }

    #[test]
    fn a_loop_that_stalled_past_both_deadlines_pings_before_it_drops() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start);
        // The first check comes three intervals late: the peer was never asked, so it is
        // pinged and given a whole interval to answer.
        let late = start + INTERVAL * 3;
        assert_eq!(liveness.check(late, INTERVAL), Keepalive::Ping(late + INTERVAL));
        assert_eq!(liveness.check(late + INTERVAL, INTERVAL), Keepalive::Drop);
    }

    #[test]
    fn a_silent_peer_with_bytes_waiting_is_spared_unless_it_does_not_read() {
        assert!(spare_silent(false, false, || true), "a pong not yet read");
        assert!(spare_silent(true, true, || true), "input held by the worker");
        assert!(!spare_silent(false, true, || true), "paused for not reading: dropped anyway");
        assert!(!spare_silent(false, false, || false), "nothing waiting: silent");
        assert!(!spare_silent(true, true, || false), "held, but nothing waiting: silent");
        assert!(!spare_silent(false, true, || panic!("no need to look")), "paused: not even looked at");
    }

    #[test]
    fn each_phase_gets_its_deadline_and_says_what_it_means() {
        let config = Config {
            handshake_timeout: Duration::from_secs(3),
            close_linger: Duration::from_secs(2),
            ping_interval: Duration::from_secs(7),
            ..Config::default()
        };
        let now = Instant::now();
        let at = |phase| deadline_on_entering(phase, now, &config);
        assert_eq!(at(Phase::Handshake), Some(now + Duration::from_secs(3)));
        assert_eq!(at(Phase::Open), Some(now + Duration::from_secs(7)));
        for phase in [Phase::CloseSent, Phase::Finishing, Phase::Draining] {
            assert_eq!(at(phase), Some(now + Duration::from_secs(2)), "{phase:?}");
        }
        let no_keepalive = Config { ping_interval: Duration::ZERO, ..config };
        assert_eq!(deadline_on_entering(Phase::Open, now, &no_keepalive), None);
        assert_eq!(expiry(Phase::Open), Expiry::Keepalive);
        assert_eq!(expiry(Phase::Handshake), Expiry::HandshakeTimeout);
        assert_eq!(expiry(Phase::CloseSent), Expiry::CloseUnanswered);
        assert_eq!(expiry(Phase::Finishing), Expiry::Linger);
        assert_eq!(expiry(Phase::Draining), Expiry::Linger);
    }

    #[test]
    fn deadlines_come_due_in_time_order_and_not_before() {
        let start = Instant::now();
        let (a, b) = (ConnId::from_parts(1, 0), ConnId::from_parts(2, 0));
        let mut deadlines = Deadlines::default();
        deadlines.push(start + Duration::from_secs(5), a);
        deadlines.push(start + Duration::from_secs(2), b);
        assert_eq!(deadlines.next(), Some(start + Duration::from_secs(2)));
        assert_eq!(deadlines.pop_due(start + Duration::from_secs(1)), None);
        let later = start + Duration::from_secs(6);
        assert_eq!(deadlines.pop_due(later), Some((start + Duration::from_secs(2), b)));
        assert_eq!(deadlines.pop_due(later), Some((start + Duration::from_secs(5), a)));
        assert_eq!(deadlines.pop_due(later), None);
    }

    #[test]
    fn the_loop_sleeps_until_the_earliest_time_unless_input_waits() {
        let now = Instant::now();
        let times = [None, Some(now + Duration::from_millis(30)), Some(now + Duration::from_millis(20))];
        assert_eq!(poll_timeout(now, false, false, times), Some(Duration::from_millis(20)));
        assert_eq!(poll_timeout(now, true, false, times), Some(Duration::ZERO));
        assert_eq!(poll_timeout(now, false, true, times), Some(Duration::from_millis(1)));
        assert_eq!(poll_timeout(now, true, true, times), Some(Duration::ZERO), "waiting input first");
        assert_eq!(poll_timeout(now, false, false, [None]), None, "nothing to wait for: block");
        // A time already past: poll returns at once.
        assert_eq!(poll_timeout(now + Duration::from_secs(1), false, false, times), Some(Duration::ZERO));
    }

    #[test]
    fn a_peer_that_does_not_read_is_not_read_and_resumes_at_half_the_mark() {
        const HIGH: usize = 1000;
        for phase in [Phase::Handshake, Phase::Open, Phase::CloseSent] {
            assert_eq!(read_gate(phase, HIGH, HIGH, false), ReadGate::Read);
            assert_eq!(read_gate(phase, HIGH + 1, HIGH, false), ReadGate::Pause, "{phase:?}");
        }
        // Once we are finishing, its input is only discarded: reading it costs nothing.
        assert_eq!(read_gate(Phase::Finishing, HIGH + 1, HIGH, false), ReadGate::Read);
        assert!(!may_resume_reading(HIGH / 2 + 1, HIGH), "no flip-flop just under the mark");
        assert!(may_resume_reading(HIGH / 2, HIGH));
    }

    #[test]
    fn held_input_holds_open_connections_only() {
        assert_eq!(read_gate(Phase::Open, 0, 10, true), ReadGate::Hold);
        assert_eq!(read_gate(Phase::Handshake, 0, 10, true), ReadGate::Read, "HTTP is served");
        assert_eq!(read_gate(Phase::CloseSent, 0, 10, true), ReadGate::Read, "closes complete");
        assert_eq!(read_gate(Phase::Open, 11, 10, true), ReadGate::Pause, "backpressure first");
    }

    #[test]
    fn reading_is_bounded_per_turn() {
        let config = Config { max_head_bytes: 100, max_body_bytes: 50, ..Config::default() };
        assert_eq!(read_budget(Phase::Handshake, 0, &config), 151);
        assert_eq!(read_budget(Phase::Handshake, 140, &config), 11);
        assert_eq!(read_budget(Phase::Handshake, 500, &config), 1, "one byte: EOF is still seen");
        assert_eq!(read_budget(Phase::Open, 10, &config), READ_BUDGET);
    }

    #[test]
    fn fan_out_closes_a_member_that_does_not_read_and_spares_one_that_does() {
        const CAP: usize = 100;
        assert_eq!(fanout(90, 10, CAP, None), Fanout::Queue);
        assert_eq!(fanout(91, 10, CAP, None), Fanout::OfferFirst);
        // The socket took bytes: reading, so a burst may reach twice the cap.
        assert_eq!(fanout(150, 50, CAP, Some(1)), Fanout::Queue);
        assert_eq!(fanout(151, 50, CAP, Some(1)), Fanout::SlowConsumer);
        // It took nothing: the cap holds.
        assert_eq!(fanout(95, 10, CAP, Some(0)), Fanout::SlowConsumer);
        assert_eq!(fanout(50, 10, CAP, Some(0)), Fanout::Queue);
    }
}
