//! Transport counters for `GET /metrics` (Prometheus text format).
//!
//! Plain integers owned by the event loop (one per worker, no atomics on the hot path);
//! the handler renders them next to its own gauges.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Who sent the close frame a connection ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CloseInitiator {
    Client,
    Server,
}

impl CloseInitiator {
    fn label(self) -> &'static str {
        match self {
            CloseInitiator::Client => "client",
            CloseInitiator::Server => "server",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections: u64,
    /// WebSocket connections accepted since start.
    pub connections_total: u64,
    /// Complete messages received from clients.
    pub messages_in: u64,
    /// Messages queued to clients (a broadcast counts once per receiver).
    pub messages_out: u64,
    /// Bytes read from and written to sockets (all protocols, headers included).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Close frames by status code and by who sent the first one.
    pub closes: BTreeMap<(u16, CloseInitiator), u64>,
    /// Connections gone without a close handshake (EOF, reset, timeout).
    pub abrupt_closes: u64,
    /// Connections dropped after two ping intervals of silence (half-open TCP).
    pub idle_timeouts: u64,
    /// Connections closed with 1013 because they did not read fast enough.
    pub slow_consumer_closes: u64,
    /// Failed opening handshakes, by reason.
    pub handshake_failures: BTreeMap<&'static str, u64>,
    /// Plain HTTP requests answered.
    pub http_requests: u64,
    /// Bumped whenever `closes` or `handshake_failures` change (so a copy can skip them).
    maps_version: u64,
}

impl Metrics {
    pub fn count_close(&mut self, code: u16, initiator: CloseInitiator) {
        *self.closes.entry((code, initiator)).or_default() += 1;
        self.maps_version += 1;
    }

    pub fn count_handshake_failure(&mut self, reason: &'static str) {
        *self.handshake_failures.entry(reason).or_default() += 1;
        self.maps_version += 1;
    }

    /// Makes these counters equal to `other`, copying the maps only if they changed (a
    /// worker does this every loop turn).
    pub fn copy_from(&mut self, other: &Metrics) {
        let mut closes = std::mem::take(&mut self.closes);
        let mut handshake_failures = std::mem::take(&mut self.handshake_failures);
        if self.maps_version != other.maps_version {
            closes.clone_from(&other.closes);
            handshake_failures.clone_from(&other.handshake_failures);
        }
        // Every other field is a plain integer: copied.
        *self = Metrics { closes, handshake_failures, ..*other };
    }

    /// Adds another worker's counters to these (the server's total for `/metrics`).
    pub fn add(&mut self, other: &Metrics) {
        self.connections += other.connections;
        self.connections_total += other.connections_total;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.abrupt_closes += other.abrupt_closes;
        self.idle_timeouts += other.idle_timeouts;
        self.slow_consumer_closes += other.slow_consumer_closes;
        self.http_requests += other.http_requests;
        for (key, n) in &other.closes {
            *self.closes.entry(*key).or_default() += n;
        }
        for (reason, n) in &other.handshake_failures {
            *self.handshake_failures.entry(reason).or_default() += n;
        }
    }

    /// Appends the Prometheus text exposition of these counters.
    pub fn render(&self, out: &mut String) {
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge("wsedge_connections", "WebSocket connections open now.", "gauge", self.connections);
        gauge("wsedge_connections_total", "WebSocket connections accepted.", "counter", self.connections_total);
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
        let _ = writeln!(out, "# HELP wsedge_closes_total Close handshakes by status code and initiator.");
        let _ = writeln!(out, "# TYPE wsedge_closes_total counter");
        for ((code, initiator), n) in &self.closes {
            let _ = writeln!(out, "wsedge_closes_total{{code=\"{code}\",initiator=\"{}\"}} {n}", initiator.label());
        }
        let _ = writeln!(out, "# HELP wsedge_handshake_failures_total Failed opening handshakes by reason.");
        let _ = writeln!(out, "# TYPE wsedge_handshake_failures_total counter");
        for (reason, n) in &self.handshake_failures {
            let _ = writeln!(out, "wsedge_handshake_failures_total{{reason=\"{reason}\"}} {n}");
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
        m.count_handshake_failure("bad_key");
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("\nwsedge_connections 3\n"));
        assert!(out.contains("wsedge_closes_total{code=\"1000\",initiator=\"client\"} 2\n"));
        assert!(out.contains("wsedge_handshake_failures_total{reason=\"bad_key\"} 1\n"));
    }

    #[test]
    fn copies_and_sums_render_like_the_original() {
        let mut m = Metrics { connections: 3, messages_out: 7, bytes_in: 9, http_requests: 2, ..Metrics::default() };
        m.count_close(1000, CloseInitiator::Client);
        m.count_handshake_failure("bad_key");
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
}
