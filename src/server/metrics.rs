//! Transport counters for `GET /metrics` (Prometheus text format).
//!
//! Plain integers owned by the event loop (one per worker, no atomics on the hot path);
//! the handler renders them next to its own gauges.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::access::Refusal;
use crate::proto::handshake::HandshakeError;

/// Who sent the close frame a connection ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CloseInitiator {
    /// The client's close frame came first (the server echoed it).
    Client,
    /// The server closed first (a protocol error, a limit, shutdown, the handler).
    Server,
}

impl CloseInitiator {
    /// The metrics label (`initiator="..."`).
    pub fn label(self) -> &'static str {
        match self {
            CloseInitiator::Client => "client",
            CloseInitiator::Server => "server",
        }
    }
}

/// Why an opening handshake failed: the `reason` of `wsedge_handshake_failures_total`.
///
/// Declared in the alphabetical order of the labels, so counters render in the same order
/// as ever (a test pins it). Dashboards and tests read the labels: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandshakeFailure {
    /// `Sec-WebSocket-Key` missing, repeated or invalid (400).
    BadKey,
    /// The request head is over `max_head_bytes` or has too many header lines (431).
    HeadersTooLarge,
    /// The peer went away with part of a request head sent.
    Incomplete,
    /// The client IP is at `max_conns_per_ip` (429).
    IpConnections,
    /// The client IP is over `handshakes_per_ip` (429).
    IpHandshakeRate,
    /// The per-IP table is at `max_tracked_ips` (503).
    IpTableFull,
    /// A plain request with `Transfer-Encoding` (411).
    LengthRequired,
    /// Not parseable as HTTP/1.x (400).
    Malformed,
    /// An upgrade that is not `GET` (405).
    MethodNotAllowed,
    /// `Connection` lacks the `upgrade` token (400).
    MissingConnectionUpgrade,
    /// No `Host` header (400).
    MissingHost,
    /// No `Origin` header while one is required (403).
    OriginMissing,
    /// `Origin` not on the allow-list (403).
    OriginNotAllowed,
    /// An upgrade while the server is at `max_connections` (503).
    OverCapacity,
    /// The handler's `accept` refused the upgrade (the room layer's 401/403/404).
    Rejected,
    /// No complete request head (or no next request on keep-alive) within the handshake
    /// timeout.
    Timeout,
    /// The TLS handshake failed or the peer went away during it.
    Tls,
    /// A socket accepted while `max_handshakes` sockets were already in their HTTP phase;
    /// closed at once.
    TooManyHandshakes,
    /// `Sec-WebSocket-Version` missing or not 13 (426).
    UnsupportedVersion,
    /// An upgrade over HTTP/1.0 (400).
    WrongHttpVersion,
}

impl HandshakeFailure {
    /// How many reasons there are.
    pub const COUNT: usize = HandshakeFailure::ALL.len();

    /// Every reason, in declaration (and label) order.
    pub const ALL: [HandshakeFailure; 20] = [
        HandshakeFailure::BadKey,
        HandshakeFailure::HeadersTooLarge,
        HandshakeFailure::Incomplete,
        HandshakeFailure::IpConnections,
        HandshakeFailure::IpHandshakeRate,
        HandshakeFailure::IpTableFull,
        HandshakeFailure::LengthRequired,
        HandshakeFailure::Malformed,
        HandshakeFailure::MethodNotAllowed,
        HandshakeFailure::MissingConnectionUpgrade,
        HandshakeFailure::MissingHost,
        HandshakeFailure::OriginMissing,
        HandshakeFailure::OriginNotAllowed,
        HandshakeFailure::OverCapacity,
        HandshakeFailure::Rejected,
        HandshakeFailure::Timeout,
        HandshakeFailure::Tls,
        HandshakeFailure::TooManyHandshakes,
        HandshakeFailure::UnsupportedVersion,
        HandshakeFailure::WrongHttpVersion,
    ];

    /// The metrics label (`wsedge_handshake_failures_total{reason="..."}`).
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::BadKey => "bad_key",
            HandshakeFailure::HeadersTooLarge => "headers_too_large",
            HandshakeFailure::Incomplete => "incomplete",
            HandshakeFailure::IpConnections => "ip_connections",
            HandshakeFailure::IpHandshakeRate => "ip_handshake_rate",
            HandshakeFailure::IpTableFull => "ip_table_full",
            HandshakeFailure::LengthRequired => "length_required",
            HandshakeFailure::Malformed => "malformed",
            HandshakeFailure::MethodNotAllowed => "method_not_allowed",
            HandshakeFailure::MissingConnectionUpgrade => "missing_connection_upgrade",
            HandshakeFailure::MissingHost => "missing_host",
            HandshakeFailure::OriginMissing => "origin_missing",
            HandshakeFailure::OriginNotAllowed => "origin_not_allowed",
            HandshakeFailure::OverCapacity => "over_capacity",
            HandshakeFailure::Rejected => "rejected",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Tls => "tls",
            HandshakeFailure::TooManyHandshakes => "too_many_handshakes",
            HandshakeFailure::UnsupportedVersion => "unsupported_version",
            HandshakeFailure::WrongHttpVersion => "wrong_http_version",
        }
    }
}

impl From<HandshakeError> for HandshakeFailure {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Malformed => HandshakeFailure::Malformed,
            HandshakeError::HeadersTooLarge => HandshakeFailure::HeadersTooLarge,
            HandshakeError::MethodNotAllowed => HandshakeFailure::MethodNotAllowed,
            HandshakeError::WrongHttpVersion => HandshakeFailure::WrongHttpVersion,
            HandshakeError::MissingHost => HandshakeFailure::MissingHost,
            HandshakeError::MissingConnectionUpgrade => HandshakeFailure::MissingConnectionUpgrade,
            HandshakeError::UnsupportedVersion => HandshakeFailure::UnsupportedVersion,
            HandshakeError::BadKey => HandshakeFailure::BadKey,
            HandshakeError::LengthRequired => HandshakeFailure::LengthRequired,
        }
    }
}

impl From<Refusal> for HandshakeFailure {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::OriginNotAllowed => HandshakeFailure::OriginNotAllowed,
            Refusal::OriginMissing => HandshakeFailure::OriginMissing,
            Refusal::HandshakeRate { .. } => HandshakeFailure::IpHandshakeRate,
            Refusal::TooManyConnections => HandshakeFailure::IpConnections,
            Refusal::TooManyClients => HandshakeFailure::IpTableFull,
        }
    }
}

/// One worker's transport counters (or, summed with [`Metrics::add`], the server's).
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections: u64,
    /// WebSocket connections accepted since start.
    pub connections_total: u64,
    /// Event streams (streaming HTTP responses, `GET /sse`) open now.
    pub streams: u64,
    /// Event streams opened since start.
    pub streams_total: u64,
    /// Complete messages received from clients.
    pub messages_in: u64,
    /// Messages queued to clients (a broadcast counts once per receiver).
    pub messages_out: u64,
    /// Bytes read from sockets (all protocols, headers included).
    pub bytes_in: u64,
    /// Bytes written to sockets (all protocols, headers included).
    pub bytes_out: u64,
    /// Close frames by status code and by who sent the first one.
    pub closes: BTreeMap<(u16, CloseInitiator), u64>,
    /// Connections gone without a close handshake (EOF, reset, timeout).
    pub abrupt_closes: u64,
    /// Connections dropped after two ping intervals of silence (half-open TCP).
    pub idle_timeouts: u64,
    /// Connections closed with 1013 because they did not read fast enough.
    pub slow_consumer_closes: u64,
    /// Failed opening handshakes, indexed by [`HandshakeFailure`] (see
    /// [`Metrics::handshake_failures`]).
    handshake_failures: [u64; HandshakeFailure::COUNT],
    /// Plain HTTP requests answered.
    pub http_requests: u64,
    /// Microseconds the event loop spent working (not waiting in `poll`): a worker's load
    /// is how fast this grows.
    pub busy_micros: u64,
    /// Bumped whenever `closes` changes (so a copy can skip the map).
    closes_version: u64,
}

impl Metrics {
    /// Counts a close handshake with status `code`, started by `initiator`.
    pub fn count_close(&mut self, code: u16, initiator: CloseInitiator) {
        *self.closes.entry((code, initiator)).or_default() += 1;
        self.closes_version += 1;
    }

    /// Counts a failed opening handshake.
    pub fn count_handshake_failure(&mut self, reason: HandshakeFailure) {
        if let Some(n) = self.handshake_failures.get_mut(reason as usize) {
            *n += 1;
        }
    }

    /// Every reason's failed handshakes, in [`HandshakeFailure::ALL`] order.
    pub fn handshake_failures(&self) -> impl Iterator<Item = (HandshakeFailure, u64)> + '_ {
        HandshakeFailure::ALL.iter().copied().zip(self.handshake_failures)
    }

    /// Makes these counters equal to `other`, copying the `closes` map only if it changed
    /// (a worker does this every loop turn).
    pub fn copy_from(&mut self, other: &Metrics) {
        let mut closes = std::mem::take(&mut self.closes);
        if self.closes_version != other.closes_version {
            closes.clone_from(&other.closes);
        }
        // Every other field is a plain integer or an array of them: copied.
        *self = Metrics { closes, ..*other };
    }

    /// Adds another worker's counters to these (the server's total for `/metrics`).
    pub fn add(&mut self, other: &Metrics) {
        self.connections += other.connections;
        self.connections_total += other.connections_total;
        self.streams += other.streams;
        self.streams_total += other.streams_total;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.abrupt_closes += other.abrupt_closes;
        self.idle_timeouts += other.idle_timeouts;
        self.slow_consumer_closes += other.slow_consumer_closes;
        self.http_requests += other.http_requests;
        self.busy_micros += other.busy_micros;
        for (key, n) in &other.closes {
            *self.closes.entry(*key).or_default() += n;
        }
        for (n, other) in self.handshake_failures.iter_mut().zip(other.handshake_failures) {
            *n += other;
        }
    }

    /// Appends the Prometheus text exposition of these counters.
    pub fn render(&self, out: &mut String) {
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge("wsedge_connections", "WebSocket connections open now.", "gauge", self.connections);
        gauge("wsedge_connections_total", "WebSocket connections accepted.", "counter", self.connections_total);
        gauge("wsedge_sse_streams", "Event streams (GET /sse) open now.", "gauge", self.streams);
        gauge("wsedge_sse_streams_total", "Event streams (GET /sse) opened.", "counter", self.streams_total);
        gauge("wsedge_messages_in_total", "Messages received from clients.", "counter", self.messages_in);
        gauge("wsedge_messages_out_total", "Messages queued to clients.", "counter", self.messages_out);
        gauge("wsedge_bytes_in_total", "Bytes read from sockets.", "counter", self.bytes_in);
        gauge("wsedge_bytes_out_total", "Bytes written to sockets.", "counter", self.bytes_out);
        gauge(
            "wsedge_abrupt_closes_total",
            "Connections gone without a close handshake.",
            "counter",
            self.abrupt_closes,
        );
        gauge(
            "wsedge_idle_timeouts_total",
            "Connections dropped after two silent ping intervals.",
            "counter",
            self.idle_timeouts,
        );
        gauge(
            "wsedge_slow_consumer_closes_total",
            "Connections closed with 1013 for not reading fast enough.",
            "counter",
            self.slow_consumer_closes,
        );
        gauge("wsedge_http_requests_total", "Plain HTTP requests answered.", "counter", self.http_requests);
        // Every client by transport in one family, for one query over both (the gauges above
        // stay as they were for dashboards that use them).
        let _ =
            writeln!(out, "# HELP wsedge_clients Clients connected now, by transport.\n# TYPE wsedge_clients gauge");
        let _ = writeln!(out, "wsedge_clients{{transport=\"websocket\"}} {}", self.connections);
        let _ = writeln!(out, "wsedge_clients{{transport=\"sse\"}} {}", self.streams);
        let busy = "wsedge_loop_busy_seconds_total";
        let _ = writeln!(out, "# HELP {busy} Time the event loops spent working, not waiting.\n# TYPE {busy} counter");
        let _ = writeln!(out, "{busy} {}.{:06}", self.busy_micros / 1_000_000, self.busy_micros % 1_000_000);
        let _ = writeln!(out, "# HELP wsedge_closes_total Close handshakes by status code and initiator.");
        let _ = writeln!(out, "# TYPE wsedge_closes_total counter");
        for ((code, initiator), n) in &self.closes {
            let _ = writeln!(out, "wsedge_closes_total{{code=\"{code}\",initiator=\"{}\"}} {n}", initiator.label());
        }
        let _ = writeln!(out, "# HELP wsedge_handshake_failures_total Failed opening handshakes by reason.");
        let _ = writeln!(out, "# TYPE wsedge_handshake_failures_total counter");
        // Reasons never counted are left out (as a map of the counted ones would).
        for (reason, n) in HandshakeFailure::ALL.iter().zip(self.handshake_failures) {
            if n > 0 {
                let _ = writeln!(out, "wsedge_handshake_failures_total{{reason=\"{}\"}} {n}", reason.label());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut m = Metrics { connections: 3, ..Metrics::default() };
        m.count_close(1000, CloseInitiator::Client);
        m.count_close(1000, CloseInitiator::Client);
        m.count_handshake_failure(HandshakeFailure::BadKey);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("\nwsedge_connections 3\n"));
        assert!(out.contains("wsedge_closes_total{code=\"1000\",initiator=\"client\"} 2\n"));
        assert!(out.contains("wsedge_handshake_failures_total{reason=\"bad_key\"} 1\n"));
        let streams = Metrics { connections: 3, streams: 2, ..Metrics::default() };
        let mut out = String::new();
        streams.render(&mut out);
        assert!(
            out.contains("wsedge_clients{transport=\"websocket\"} 3\nwsedge_clients{transport=\"sse\"} 2\n"),
            "{out}"
        );
    }

    #[test]
    fn copies_and_sums_render_like_the_original() {
        let mut m = Metrics { connections: 3, messages_out: 7, bytes_in: 9, http_requests: 2, ..Metrics::default() };
        m.count_close(1000, CloseInitiator::Client);
        m.count_handshake_failure(HandshakeFailure::BadKey);
        let mut copy = Metrics::default();
        copy.copy_from(&m);
        let (mut a, mut b) = (String::new(), String::new());
        m.render(&mut a);
        copy.render(&mut b);
        assert_eq!(a, b);
        let mut total = Metrics::default();
        total.add(&m);
        total.add(&m);
        let mut c = String::new();
        total.render(&mut c);
        assert!(c.contains("\nwsedge_connections 6\n"), "{c}");
        assert!(c.contains("wsedge_closes_total{code=\"1000\",initiator=\"client\"} 2\n"));
    }

    #[test]
    fn handshake_failures_render_in_label_order_and_index_by_variant() {
        for (i, reason) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?} out of place in ALL");
        }
        let labels: Vec<&str> = HandshakeFailure::ALL.iter().map(|r| r.label()).collect();
        assert!(labels.windows(2).all(|w| w[0] < w[1]), "labels not strictly sorted: {labels:?}");
        let mut m = Metrics::default();
        m.count_handshake_failure(HandshakeFailure::Timeout);
        m.count_handshake_failure(HandshakeFailure::from(Refusal::HandshakeRate { retry_after_secs: 1 }));
        m.count_handshake_failure(HandshakeFailure::from(HandshakeError::BadKey));
        m.count_handshake_failure(HandshakeFailure::Timeout);
        let mut total = Metrics::default();
        total.add(&m);
        total.add(&m);
        let mut out = String::new();
        total.render(&mut out);
        let tail = out.split_once("# TYPE wsedge_handshake_failures_total counter\n").map(|(_, t)| t);
        assert_eq!(
            tail,
            Some(
                "wsedge_handshake_failures_total{reason=\"bad_key\"} 2\n\
                 wsedge_handshake_failures_total{reason=\"ip_handshake_rate\"} 2\n\
                 wsedge_handshake_failures_total{reason=\"timeout\"} 4\n"
            )
        );
    }
}
