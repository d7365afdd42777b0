//! What a run counted ([`Stats`], one per thread, merged) and what it reports ([`Report`]:
//! JSON for scripts, a few aligned lines for people; the HTML page is `page.rs`'s, drawn
//! from the same JSON). No IO: printing is the caller's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in nanoseconds from 1 ns to 60 s with 3 significant digits.
const LATENCY_MAX_NANOS: u64 = 60_000_000_000;
/// The latency distribution is reported up to 1/(1-p) = 10^5, that is p99.999 ...
pub(super) const DISTRIBUTION_DECADES: u32 = 5;
/// ... at 10 points per decade of 1/(1-p), evenly spaced on the page's logarithmic axis.
const DISTRIBUTION_POINTS_PER_DECADE: u32 = 10;

/// One thread's counts. Messages count only inside the measured window; connection
/// outcomes count over the whole run.
#[derive(Debug)]
pub struct Stats {
    /// Connections that completed setup (connect, upgrade and, for rooms, the join).
    pub opened: u64,
    /// Connections that never opened, by reason.
    pub failed: BTreeMap<String, u64>,
    /// What went wrong after opening, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Open connections lost before the end.
    pub dropped: u64,
    /// Connections still open when the run ended.
    pub open_at_end: u64,
    /// Connections whose close handshake completed at the end.
    pub closed_cleanly: u64,
    /// Messages sent in the window.
    pub sent: u64,
    /// Timed messages received in the window.
    pub received: u64,
    /// Payload bytes of `received`.
    pub received_bytes: u64,
    /// Pings from the server (each answered by the codec).
    pub pings: u64,
    /// Bench messages received over the whole run by the connection that sent them.
    pub received_own: u64,
    /// Bench messages received over the whole run by another connection than their sender.
    pub received_others: u64,
    /// Send-to-receive time of each received message, in nanoseconds.
    pub latency: Histogram<u64>,
    /// `received`, per interval of the window (`Plan::throughput_interval` long, the last
    /// one possibly shorter). Sized before the run ([`Stats::with_intervals`]): counting
    /// into it never allocates; a message past its end is not counted here.
    pub received_per_interval: Vec<u64>,
}

impl Stats {
    /// All counts zero, an empty latency histogram.
    pub fn new() -> Stats {
        Stats {
            opened: 0,
            failed: BTreeMap::new(),
            errors: BTreeMap::new(),
            dropped: 0,
            open_at_end: 0,
            closed_cleanly: 0,
            sent: 0,
            received: 0,
            received_bytes: 0,
            pings: 0,
            received_own: 0,
            received_others: 0,
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_NANOS, 3)
                .expect("constant bounds: low >= 1, high >= 2 * low, 3 significant digits"),
            received_per_interval: Vec::new(),
        }
    }

    /// All counts zero, with room for `intervals` throughput counts.
    pub fn with_intervals(intervals: usize) -> Stats {
        Stats { received_per_interval: vec![0; intervals], ..Stats::new() }
    }

    /// Counts one timed message received in interval `index` of the window.
    pub fn count_in_interval(&mut self, index: usize) {
        if let Some(count) = self.received_per_interval.get_mut(index) {
            *count += 1;
        }
    }

    /// Counts a connection that failed to open, for `reason`.
    pub fn fail(&mut self, reason: &str) {
        *self.failed.entry(reason.to_owned()).or_default() += 1;
    }

    /// Counts something that went wrong after opening (the text is cut to 160 chars).
    pub fn error(&mut self, kind: &str) {
        // Long texts (error replies carrying a payload) are cut to keep the map small.
        let kind: String = kind.chars().take(160).collect();
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Adds another thread's counts and latencies to these.
    pub fn merge(&mut self, other: Stats) {
        self.opened += other.opened;
        for (reason, n) in other.failed {
            *self.failed.entry(reason).or_default() += n;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.dropped += other.dropped;
        self.open_at_end += other.open_at_end;
        self.closed_cleanly += other.closed_cleanly;
        self.sent += other.sent;
        self.received += other.received;
        self.received_bytes += other.received_bytes;
        self.pings += other.pings;
        self.received_own += other.received_own;
        self.received_others += other.received_others;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        if self.received_per_interval.len() < other.received_per_interval.len() {
            self.received_per_interval.resize(other.received_per_interval.len(), 0);
        }
        for (sum, n) in self.received_per_interval.iter_mut().zip(other.received_per_interval) {
            *sum += n;
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Messages timed.
    pub samples: u64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The 99.9th percentile.
    pub p99_9: f64,
    /// The slowest message.
    pub max: f64,
}

impl Latency {
    /// The percentiles of a histogram of nanoseconds; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |nanos: u64| nanos as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }

    /// The latency at each of [`distribution_percentiles`], in microseconds: the curve the
    /// report page draws. Empty when nothing was timed.
    pub fn distribution(h: &Histogram<u64>) -> Vec<PercentilePoint> {
        if h.is_empty() {
            return Vec::new();
        }
        distribution_percentiles()
            .map(|percentile| PercentilePoint {
                percentile,
                us: h.value_at_quantile(percentile / 100.0) as f64 / 1000.0,
            })
            .collect()
    }
}

/// The percentiles the distribution is reported at: p0 (the fastest message), then evenly
/// spaced in log10(1/(1-p)) up to p99.999 (HdrHistogram's percentile axis), with p50
/// added. Rounded to 4 decimals, so p99.9 reads 99.9 in the JSON.
pub fn distribution_percentiles() -> impl Iterator<Item = f64> {
    let steps = DISTRIBUTION_DECADES * DISTRIBUTION_POINTS_PER_DECADE;
    let spaced = (0..=steps).map(|step| {
        let decades = f64::from(step) / f64::from(DISTRIBUTION_POINTS_PER_DECADE);
        (100.0 * (1.0 - 10f64.powf(-decades)) * 1e4).round() / 1e4
    });
    // p50 sits between the steps at 0.3 decades (49.88) and 0.4 (60.19).
    let mut percentiles: Vec<f64> = spaced.chain([50.0]).collect();
    percentiles.sort_by(f64::total_cmp);
    percentiles.into_iter()
}

/// One point of the latency distribution: `percentile` % of the messages took at most `us`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// 0 to 100 (99.9 is p99.9).
    pub percentile: f64,
    /// Microseconds.
    pub us: f64,
}

/// Deliveries per second through the measured window, interval by interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// The length of each interval (the last one may be shorter: the window's rest).
    pub interval_secs: f64,
    /// Timed messages received per second in each interval (echo: round trips; fan-out:
    /// deliveries), in order from the start of the window.
    pub deliveries_per_sec: Vec<f64>,
}

impl Throughput {
    /// Rates from the counts of intervals `interval` long in a window `window` long; `None`
    /// without intervals.
    pub fn from_counts(counts: &[u64], interval: Duration, window: Duration) -> Option<Throughput> {
        if counts.is_empty() || interval.is_zero() {
            return None;
        }
        let mut start = Duration::ZERO;
        let rates = counts.iter().map(|&count| {
            // Widths in whole nanoseconds: a 0.25 s window's last interval is 0.05 s exactly.
            let width = window.saturating_sub(start).min(interval);
            start += interval;
            if width.is_zero() {
                0.0
            } else {
                count as f64 / width.as_secs_f64()
            }
        });
        Some(Throughput { interval_secs: interval.as_secs_f64(), deliveries_per_sec: rates.collect() })
    }
}

/// The server's cost, from `/proc/PID` (with `--server-pid`).
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// The server's process id (`--server-pid`).
    pub pid: u32,
    /// CPU seconds (user + system) the server used in the measured window.
    pub cpu_seconds: f64,
    /// `cpu_seconds` per second of the window: 1.0 is one core fully busy.
    pub cpu_cores: f64,
    /// CPU seconds per million messages (echo: round trips; fan-out: publishes, the same
    /// as `cpu_seconds_per_million_publishes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds_per_million_messages: Option<f64>,
    /// CPU seconds per million publishes (fan-out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds_per_million_publishes: Option<f64>,
    /// CPU seconds per million deliveries (fan-out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds_per_million_deliveries: Option<f64>,
    /// Resident memory before the bench connected, once every connection was set up, and
    /// at the end of the window.
    pub rss_before_bytes: u64,
    /// Resident memory once every connection was set up.
    pub rss_connected_bytes: u64,
    /// Resident memory at the end of the window.
    pub rss_end_bytes: u64,
    /// `rss_connected_bytes - rss_before_bytes`.
    pub rss_growth_bytes: i64,
    /// The growth divided by the connections that opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_growth_per_connection_bytes: Option<f64>,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `echo`, `fanout` or `idle`.
    pub scenario: &'static str,
    /// The server's URL (with several, the first, where publishers connect; all of them
    /// are in `settings.urls`).
    pub url: String,
    /// What was asked for, in the scenario's own terms.
    pub settings: BTreeMap<&'static str, serde_json::Value>,
    /// Client threads.
    pub threads: usize,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened.
    pub connections_open: u64,
    /// Connections that failed to open (`failures` says why).
    pub connections_failed: u64,
    /// Why connections failed to open, with counts.
    pub failures: BTreeMap<String, u64>,
    /// Seconds of traffic before the window.
    pub warmup_secs: f64,
    /// Seconds of the measured window.
    pub duration_secs: f64,
    /// Echo: round trips completed. Fan-out: messages published.
    pub messages: u64,
    /// `messages` per second of the window.
    pub messages_per_sec: f64,
    /// Messages received by the bench's connections (echo: = messages).
    pub deliveries: u64,
    /// `deliveries` per second of the window.
    pub deliveries_per_sec: f64,
    /// Payload megabytes (10^6 bytes) received per second.
    pub mb_per_sec: f64,
    /// Send-to-receive time of every delivery in the window.
    pub latency_us: Option<Latency>,
    /// Everything that went wrong after connections opened (`error_kinds` says what).
    pub errors: u64,
    /// `errors` by kind, with counts.
    pub error_kinds: BTreeMap<String, u64>,
    /// Open connections lost before the end.
    pub connections_dropped: u64,
    /// Connections still open when the window ended.
    pub connections_open_at_end: u64,
    /// Connections whose close handshake completed at the end.
    pub connections_closed_cleanly: u64,
    /// Pings from the server, each answered with a pong.
    pub pings_answered: u64,
    /// CPU seconds the bench itself used in the window (is the client the bottleneck?).
    pub client_cpu_seconds: f64,
    /// The server's cost (with `--server-pid`).
    pub server: Option<ServerReport>,
    /// The latency at percentiles from p0 to p99.999, for charts (empty: nothing timed).
    pub latency_distribution_us: Vec<PercentilePoint>,
    /// Deliveries per second over the window, for charts (`None` for `idle`).
    pub throughput: Option<Throughput>,
}

impl Report {
    /// A few lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "{} {}  {}", self.scenario, self.url, settings.join(" "));
        let _ = writeln!(
            out,
            "  connections  {} open, {} failed, {} thread(s); measured {:.1} s after {:.1} s warmup",
            self.connections_open, self.connections_failed, self.threads, self.duration_secs, self.warmup_secs
        );
        for (reason, n) in &self.failures {
            let _ = writeln!(out, "    failed x{n}: {reason}");
        }
        if let Some(hint) = self.failure_hint() {
            let _ = writeln!(out, "    hint: {hint}");
        }
        if self.scenario == "idle" {
            let _ = writeln!(
                out,
                "  idle         {} of {} open at the end, {} dropped, {} pings answered",
                self.connections_open_at_end, self.connections_open, self.connections_dropped, self.pings_answered
            );
        } else if self.scenario == "echo" {
            let _ = writeln!(
                out,
                "  messages     {} echoed ({}/s)   {:.2} MB/s received",
                self.messages,
                thousands(self.messages_per_sec),
                self.mb_per_sec
            );
        } else {
            let _ = writeln!(
                out,
                "  publishes    {} ({}/s)   deliveries {} ({}/s)   {:.2} MB/s received",
                self.messages,
                thousands(self.messages_per_sec),
                self.deliveries,
                thousands(self.deliveries_per_sec),
                self.mb_per_sec
            );
        }
        if let Some(l) = &self.latency_us {
            let _ = writeln!(
                out,
                "  latency      p50 {}  p99 {}  p99.9 {}  max {}  mean {}  (n={})",
                micros(l.p50),
                micros(l.p99),
                micros(l.p99_9),
                micros(l.max),
                micros(l.mean),
                l.samples
            );
        }
        let _ = writeln!(out, "  errors       {}", self.errors);
        for (kind, n) in &self.error_kinds {
            let _ = writeln!(out, "    x{n}: {kind}");
        }
        if self.error_kinds.keys().any(|k| k.contains("\"code\":429")) {
            let _ = writeln!(
                out,
                "    hint: the server's per-connection publish rate limit: `wsedge serve --publish-rate N --publish-burst N`, or a lower --rate"
            );
        }
        if let Some(s) = &self.server {
            let _ = writeln!(
                out,
                "  server       pid {}: {:.2} CPU s in the measured window ({:.2} cores busy)",
                s.pid, s.cpu_seconds, s.cpu_cores
            );
            let per_million: Vec<String> = [
                (s.cpu_seconds_per_million_messages.filter(|_| self.scenario == "echo"), "echoed messages"),
                (s.cpu_seconds_per_million_publishes, "publishes"),
                (s.cpu_seconds_per_million_deliveries, "deliveries"),
            ]
            .into_iter()
            .filter_map(|(value, unit)| value.map(|v| format!("{v:.3} CPU s per million {unit}")))
            .collect();
            if !per_million.is_empty() {
                let _ = writeln!(out, "               {}", per_million.join(", "));
            }
            let mut rss = format!(
                "               RSS {} before, {} connected, {} at the end",
                mib(s.rss_before_bytes),
                mib(s.rss_connected_bytes),
                mib(s.rss_end_bytes)
            );
            if let Some(per) = s.rss_growth_per_connection_bytes {
                let _ = write!(rss, " ({per:.0} B per connection)");
            }
            let _ = writeln!(out, "{rss}");
        }
        let _ = writeln!(out, "  client       {:.2} CPU s in the measured window", self.client_cpu_seconds);
        out
    }

    /// What to do about the commonest setup failures.
    fn failure_hint(&self) -> Option<&'static str> {
        let any = |needle: &str| self.failures.keys().any(|r| r.contains(needle));
        if any("os error 24") {
            Some("out of file descriptors: fewer connections, or a higher `ulimit -n`")
        } else if any("os error 99") {
            Some("out of ephemeral ports: spread connections with --bind-ips 127.0.0.2,127.0.0.3,...")
        } else if any("404") {
            Some("no WebSocket endpoint at that path (`wsedge serve`: /ws and /relay/ROOM; `wsedge echo`: any path)")
        } else if any("503") {
            Some("the server is at its connection limit (wsedge: --max-connections)")
        } else if any("os error 111") {
            Some("nothing listens at that address")
        } else {
            None
        }
    }
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `1234567.8` as `1,234,568`.
pub(super) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A report of `scenario` with one connection open, nothing counted yet, and a server
/// sample: for the tests of what is printed and judged.
#[cfg(test)]
pub(super) fn sample_report(scenario: &'static str) -> Report {
    Report {
        scenario,
        url: "ws://127.0.0.1:9001/".to_owned(),
        settings: BTreeMap::new(),
        threads: 1,
        connections: 1,
        connections_open: 1,
        connections_failed: 0,
        failures: BTreeMap::new(),
        warmup_secs: 1.0,
        duration_secs: 10.0,
        messages: 0,
        messages_per_sec: 0.0,
        deliveries: 0,
        deliveries_per_sec: 0.0,
        mb_per_sec: 0.0,
        latency_us: None,
        errors: 0,
        error_kinds: BTreeMap::new(),
        connections_dropped: 0,
        connections_open_at_end: 1,
        connections_closed_cleanly: 1,
        pings_answered: 0,
        client_cpu_seconds: 1.0,
        server: Some(ServerReport {
            pid: 1,
            cpu_seconds: 2.0,
            cpu_cores: 0.2,
            cpu_seconds_per_million_messages: None,
            cpu_seconds_per_million_publishes: None,
            cpu_seconds_per_million_deliveries: None,
            rss_before_bytes: 1 << 20,
            rss_connected_bytes: 1 << 20,
            rss_end_bytes: 1 << 20,
            rss_growth_bytes: 0,
            rss_growth_per_connection_bytes: Some(0.0),
        }),
        latency_distribution_us: Vec::new(),
        throughput: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_figures_say_what_they_are_per() {
        let mut echo = sample_report("echo");
        if let Some(s) = echo.server.as_mut() {
            s.cpu_seconds_per_million_messages = Some(0.6);
        }
        let text = echo.to_text();
        assert!(text.contains("0.600 CPU s per million echoed messages"), "{text}");
        assert!(!text.contains("publishes"), "{text}");

        for scenario in ["fanout", "broadcast"] {
            let mut fanout = sample_report(scenario);
            if let Some(s) = fanout.server.as_mut() {
                // As `server_report` fills them: messages are publishes in fan-out.
                (s.cpu_seconds_per_million_messages, s.cpu_seconds_per_million_publishes) = (Some(400.0), Some(400.0));
                s.cpu_seconds_per_million_deliveries = Some(0.4);
            }
            let text = fanout.to_text();
            let line = "400.000 CPU s per million publishes, 0.400 CPU s per million deliveries";
            assert!(text.contains(line), "{text}");
            assert!(!text.contains("per million messages") && !text.contains("echoed"), "{text}");
            assert!(text.contains("  publishes    "), "{text}");
        }
    }

    #[test]
    fn merged_stats_add_up() {
        let mut a = Stats::new();
        a.received = 2;
        a.latency.record(1_000).unwrap();
        a.fail("refused");
        let mut b = Stats::new();
        b.received = 3;
        b.latency.record(3_000).unwrap();
        b.fail("refused");
        b.error("dropped");
        a.merge(b);
        assert_eq!(a.received, 5);
        assert_eq!(a.failed["refused"], 2);
        assert_eq!(a.errors["dropped"], 1);
        let l = Latency::from_histogram(&a.latency).unwrap();
        assert_eq!(l.samples, 2);
        assert!((l.max - 3.0).abs() < 0.01, "{l:?}");
    }

    #[test]
    fn distribution_reaches_p99_999_evenly_on_the_log_axis() {
        let percentiles: Vec<f64> = distribution_percentiles().collect();
        assert_eq!(percentiles.first(), Some(&0.0));
        assert_eq!(percentiles.last(), Some(&99.999));
        for p in [50.0, 90.0, 99.0, 99.9, 99.99] {
            assert!(percentiles.contains(&p), "{p} in {percentiles:?}");
        }
        assert!(percentiles.windows(2).all(|w| w[0] < w[1]), "{percentiles:?}");

        let mut h = Stats::new().latency;
        for nanos in 1..=100_000u64 {
            h.record(nanos * 1000).unwrap(); // 1 µs to 100 ms, evenly
        }
        let points = Latency::distribution(&h);
        assert_eq!(points.len(), percentiles.len());
        let at = |p: f64| points.iter().find(|pt| pt.percentile == p).map(|pt| pt.us).unwrap();
        assert!((at(50.0) - 50_000.0).abs() < 100.0, "{points:?}");
        assert!((at(99.0) - 99_000.0).abs() < 100.0, "{points:?}");
        assert!(points.windows(2).all(|w| w[0].us <= w[1].us), "{points:?}");
        assert!(Latency::distribution(&Stats::new().latency).is_empty());
    }

    #[test]
    fn throughput_counts_become_rates_per_interval() {
        let mut stats = Stats::with_intervals(3);
        let tenth = Duration::from_millis(100);
        for index in [0, 0, 0, 1, 2, 2, 3] {
            stats.count_in_interval(index);
        }
        assert_eq!(stats.received_per_interval, [3, 1, 2], "past the end is not counted");
        let mut other = Stats::with_intervals(3);
        other.received_per_interval[1] = 4;
        stats.merge(other);
        assert_eq!(stats.received_per_interval, [3, 5, 2]);
        // A 0.25 s window: the last interval is 50 ms.
        let t = Throughput::from_counts(&stats.received_per_interval, tenth, tenth * 5 / 2).unwrap();
        assert_eq!(t.deliveries_per_sec, [30.0, 50.0, 40.0]);
        assert!(Throughput::from_counts(&[], tenth, tenth).is_none());
    }

    #[test]
    fn numbers_print_for_people() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(micros(512.4), "512 µs");
        assert_eq!(micros(1_500.0), "1.50 ms");
    }
}
