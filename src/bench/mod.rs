//! `wsedge bench`: a load generator on the client side of our own codec, driven by mio.
//!
//! Scenarios: `echo` (N connections, each keeping `--depth` messages in flight, every echo
//! timed), `fanout` (subscribers and publishers in one room over the raw relay or the
//! `wsedge.v1` room protocol, every delivery timed; `--all-publish` for broadcast) and
//! `idle` (N connections that only answer pings). It reports messages/s, MB/s, latency
//! percentiles (hdrhistogram) and, given the server's PID, the server's CPU per million
//! echoed messages (fan-out: per million publishes and per million deliveries) and its
//! memory growth, read from `/proc` (Linux).
//!
//! Shape: the command line (`args.rs`) is checked and resolved into a [`Plan`]
//! (`plan.rs`); `--threads` workers (`worker.rs`, their traffic in `traffic.rs`), each a
//! single-threaded mio loop owning its share of the connections; a coordinator (here) that
//! waits until every connection is set up, publishes the `Schedule` (start, end of warmup,
//! end), samples the server at the window's edges and merges the threads' counts into a
//! [`Report`]. `verdict.rs` says when a run measured nothing: a server of the wrong kind
//! for the scenario ([`WrongKind`], told by what it sends) stops every thread, and a report
//! that counts failures rather than the server ([`RunFailure`]) exits 1. Each message
//! carries its send time in its first bytes (`payload.rs`), so no per-message state is
//! kept. It only ever connects as a client: nothing of the server or its room layer is used.
//!
//! `--report FILE.html` also writes the report as a self-contained page (`page.rs`, its SVG
//! charts `chart.rs`): settings, throughput over time (counted per interval of the window)
//! and latency by percentile. `wsedge bench-report` ([`report_page_main`]) draws one page
//! from several saved `--json` reports, their runs overlaid per group (benches/compare.sh).

mod args;
mod chart;
mod conn;
mod page;
mod payload;
mod plan;
mod process;
mod report;
mod sse;
mod traffic;
mod verdict;
mod worker;

use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

pub use args::{BenchArgs, CommonArgs, EchoArgs, FanoutArgs, IdleArgs, ReportPageArgs, ScenarioArgs};
pub use page::{comparison_page, run_page, PageEntry, RunRecord, ServerCost};
pub use plan::{BenchError, Output, Plan, Scenario, Target};
use process::{ProcessProbe, ProcessSample};
pub use report::{distribution_percentiles, Latency, PercentilePoint, Report, ServerReport, Stats, Throughput};
pub use verdict::{RunFailure, WrongKind};
use worker::Worker;

/// Runs `wsedge bench` and prints its report. Exit code 1, with a sentence on stderr, when
/// the server is of the wrong kind for the scenario (no report: it would measure nothing)
/// or the report measures failures rather than the server ([`RunFailure`]); 2 for options
/// that make no run.
pub fn main(args: BenchArgs) -> ExitCode {
    let (plan, output) = match Plan::from_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match run(plan) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if output.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("bench: cannot write the report as JSON: {e}"),
        }
    } else {
        print!("{}", report.to_text());
    }
    if let Some(path) = &output.page {
        let page = RunRecord::from_report(&report).map(|run| run_page(&run));
        match page.map_err(io::Error::other).and_then(|page| fs::write(path, page)) {
            Ok(()) => info!("report page written to {}", path.display()),
            Err(e) => {
                eprintln!("bench: cannot write the report page {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(failure) = RunFailure::of(&report) {
        eprintln!("bench: {failure}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs `wsedge bench-report`: one page from saved JSON reports, their runs overlaid per
/// group. A report that cannot be read is named on the page and on stderr; exit code 1 when
/// none could be read or the page cannot be written.
pub fn report_page_main(args: ReportPageArgs) -> ExitCode {
    let mut entries = Vec::new();
    let mut notes = Vec::new();
    for path in &args.reports {
        match read_run(path) {
            Ok(run) => {
                let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
                entries.push(PageEntry::named_by_file(&stem, run));
            }
            Err(why) => {
                eprintln!("bench-report: {why}");
                notes.push(why);
            }
        }
    }
    if entries.is_empty() {
        eprintln!("bench-report: no report could be read");
        return ExitCode::FAILURE;
    }
    match fs::write(&args.out, comparison_page(&args.title, &entries, &notes)) {
        Ok(()) => {
            println!("{}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-report: cannot write {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}

/// One saved report, or a sentence saying why it cannot be shown.
fn read_run(path: &Path) -> Result<RunRecord, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a bench report: {e}", path.display()))
}

/// When traffic starts, when measuring starts (after the warmup) and when it all ends.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// What the threads and the coordinator share.
#[derive(Debug, Default)]
struct Shared {
    /// Threads done with connection setup.
    threads_ready: AtomicUsize,
    /// Connections that opened, across threads.
    opened: AtomicUsize,
    /// Connections open now, across threads (the size of a broadcast round).
    live: AtomicUsize,
    /// Set by the coordinator once every thread is ready.
    schedule: OnceLock<Schedule>,
    /// Set by the first thread that finds the server is of the wrong kind: every thread
    /// stops, and the run ends with this as its error.
    wrong_kind: OnceLock<WrongKind>,
}

/// Opens the connections, runs the scenario on `plan.threads` threads, and reports.
pub fn run(plan: Plan) -> Result<Report, BenchError> {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::default());
    let server = match plan.server_pid {
        Some(pid) => Some((pid, ProcessProbe::new(pid).map_err(|e| BenchError::ServerPid(pid, e))?)),
        None => None,
    };
    let sample_server = || server.as_ref().and_then(|(_, probe)| probe.sample().ok());
    let own = ProcessProbe::own();
    let server_before = sample_server();

    // Connection i goes to thread i % threads.
    let mut ids: Vec<Vec<u32>> = vec![Vec::new(); plan.threads];
    for id in 0..plan.connections {
        ids[id % plan.threads].push(id as u32);
    }
    let mut handles = Vec::with_capacity(plan.threads);
    for (i, ids) in ids.into_iter().enumerate() {
        let worker = Worker::new(plan.clone(), shared.clone(), ids).map_err(BenchError::Worker)?;
        let handle = thread::Builder::new().name(format!("bench-{i}")).spawn(move || worker.run());
        handles.push(handle.map_err(BenchError::Worker)?);
    }

    let setup_start = Instant::now();
    info!(
        "{}: opening {} to {} ({} thread(s), {} in setup at once each)",
        plan.scenario_name(),
        connections(plan.connections),
        plan.urls.join(", "),
        plan.threads,
        plan.connect_batch
    );
    while shared.threads_ready.load(Ordering::SeqCst) < plan.threads {
        if handles.iter().any(|h| h.is_finished()) || shared.wrong_kind.get().is_some() {
            break; // a thread failed or stopped the run: joined below
        }
        thread::sleep(Duration::from_millis(2));
    }
    let opened = shared.opened.load(Ordering::SeqCst);
    let of = connections(plan.connections);
    info!("{opened} of {of} open after {:.2} s", setup_start.elapsed().as_secs_f64());
    let server_connected = sample_server();

    // Nothing to measure without connections (or from the wrong server): end at once.
    let nothing = opened == 0 || shared.wrong_kind.get().is_some();
    let (warmup, duration) = if nothing { (Duration::ZERO, Duration::ZERO) } else { (plan.warmup, plan.duration) };
    let start = Instant::now();
    let schedule = Schedule { start, measure_from: start + warmup, end: start + warmup + duration };
    let _ = shared.schedule.set(schedule);
    sleep_until(schedule.measure_from, &shared);
    let (server_from, own_from) = (sample_server(), own.sample().ok());
    sleep_until(schedule.end, &shared);
    let (server_end, own_end) = (sample_server(), own.sample().ok());

    let mut stats = Stats::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(thread_stats)) => stats.merge(thread_stats),
            Ok(Err(e)) => return Err(BenchError::Worker(e)),
            Err(_) => return Err(BenchError::Worker(io::Error::other("a client thread panicked"))),
        }
    }
    if let Some(wrong) = shared.wrong_kind.get().cloned().or_else(|| no_fan_out(&plan, &stats)) {
        return Err(BenchError::WrongKind(wrong));
    }
    let server_report = match (&server, server_before, server_connected, server_from, server_end) {
        (Some((pid, _)), Some(before), Some(connected), Some(from), Some(end)) => {
            Some(server_report(*pid, &plan, &stats, [before, connected, from, end]))
        }
        (Some((pid, _)), ..) => {
            warn!("server {pid} could not be sampled throughout the run (did it exit?)");
            None
        }
        _ => None,
    };
    let client_cpu = match (own_from, own_end) {
        (Some(from), Some(end)) => end.cpu_seconds - from.cpu_seconds,
        _ => 0.0,
    };
    Ok(build_report(&plan, stats, [warmup, duration], client_cpu, server_report))
}

/// "1 connection", "2 connections".
fn connections(n: usize) -> String {
    if n == 1 {
        "1 connection".to_owned()
    } else {
        format!("{n} connections")
    }
}

/// Sleeps until `t`, or until a thread found the server is of the wrong kind.
fn sleep_until(t: Instant, shared: &Shared) {
    const STEP: Duration = Duration::from_millis(20);
    loop {
        let now = Instant::now();
        if t <= now || shared.wrong_kind.get().is_some() {
            return;
        }
        thread::sleep((t - now).min(STEP));
    }
}

/// Fan-out where messages came back, but each only to the connection that published it:
/// an echo server. Only told at the end (a subscriber far down a big room may wait a while
/// for its first message) and only with two or more members (one alone is its own room).
fn no_fan_out(plan: &Plan, stats: &Stats) -> Option<WrongKind> {
    let fan_out = matches!(plan.scenario, Scenario::Fanout { .. });
    (fan_out && stats.opened >= 2 && stats.received_own > 0 && stats.received_others == 0).then(|| {
        WrongKind::NoFanOut { url: plan.urls.first().cloned().unwrap_or_default(), own_copies: stats.received_own }
    })
}

/// Echo counts round trips as messages; fan-out counts publishes (and deliveries apart).
fn messages(plan: &Plan, stats: &Stats) -> u64 {
    match plan.scenario {
        Scenario::Echo { .. } => stats.received,
        Scenario::Fanout { .. } => stats.sent,
        Scenario::Idle => 0,
    }
}

fn build_report(
    plan: &Plan,
    stats: Stats,
    [warmup, window]: [Duration; 2],
    client_cpu_seconds: f64,
    server: Option<ServerReport>,
) -> Report {
    let secs = window.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let messages = messages(plan, &stats);
    Report {
        scenario: plan.scenario_name(),
        url: plan.urls.first().cloned().unwrap_or_default(),
        settings: plan.settings.clone(),
        threads: plan.threads,
        connections: plan.connections,
        connections_open: stats.opened,
        connections_failed: stats.failed.values().sum(),
        failures: stats.failed,
        warmup_secs: warmup.as_secs_f64(),
        duration_secs: secs,
        messages,
        messages_per_sec: per_sec(messages),
        deliveries: stats.received,
        deliveries_per_sec: per_sec(stats.received),
        mb_per_sec: per_sec(stats.received_bytes) / 1e6,
        latency_us: Latency::from_histogram(&stats.latency),
        errors: stats.errors.values().sum(),
        error_kinds: stats.errors,
        connections_dropped: stats.dropped,
        connections_open_at_end: stats.open_at_end,
        connections_closed_cleanly: stats.closed_cleanly,
        pings_answered: stats.pings,
        client_cpu_seconds,
        server,
        latency_distribution_us: Latency::distribution(&stats.latency),
        throughput: match plan.scenario {
            Scenario::Idle => None,
            _ => Throughput::from_counts(&stats.received_per_interval, plan.throughput_interval, window),
        },
    }
}

/// Samples: before connecting, once connected, at the start and at the end of the window.
fn server_report(pid: u32, plan: &Plan, stats: &Stats, samples: [ProcessSample; 4]) -> ServerReport {
    let [before, connected, from, end] = samples;
    let cpu_seconds = (end.cpu_seconds - from.cpu_seconds).max(0.0);
    let secs = plan.duration.as_secs_f64();
    let per_million = |n: u64| (n > 0).then(|| cpu_seconds / (n as f64 / 1e6));
    let growth = connected.rss_bytes as i64 - before.rss_bytes as i64;
    ServerReport {
        pid,
        cpu_seconds,
        cpu_cores: if secs > 0.0 { cpu_seconds / secs } else { 0.0 },
        cpu_seconds_per_million_messages: per_million(messages(plan, stats)),
        cpu_seconds_per_million_publishes: match plan.scenario {
            Scenario::Fanout { .. } => per_million(stats.sent),
            _ => None,
        },
        cpu_seconds_per_million_deliveries: match plan.scenario {
            Scenario::Fanout { .. } => per_million(stats.received),
            _ => None,
        },
        rss_before_bytes: before.rss_bytes,
        rss_connected_bytes: connected.rss_bytes,
        rss_end_bytes: end.rss_bytes,
        rss_growth_bytes: growth,
        rss_growth_per_connection_bytes: (stats.opened > 0).then(|| growth as f64 / stats.opened as f64),
    }
}
