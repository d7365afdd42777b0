//! `wsedge bench` cannot mislead: against a server of the wrong kind it stops, says so on
//! stderr and exits 1 without a report; a run whose errors dominate prints its report and
//! exits 1; `bench idle`'s default URL is one `wsedge serve` accepts. The real binary on
//! both sides (`support::process`), each server on an ephemeral port.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::{wsedge, Running};

/// Far less than the `--duration` asked of a run that must stop at once.
const STOPS_WITHIN: Duration = Duration::from_secs(10);

/// Runs `wsedge bench ARGS --json` (after 0.2 s of warmup); its output and how long it took.
fn bench(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = wsedge()
        .arg("bench")
        .args(args)
        .args(["--json", "--warmup", "0.2"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wsedge bench");
    (out, started.elapsed())
}

/// `wsedge echo` on an ephemeral port.
fn echo_server(args: &[&str]) -> Running {
    let mut command = wsedge();
    command.args(["echo", "--listen", "127.0.0.1:0", "--workers", "1"]).args(args);
    Running::start(command)
}

/// The run exited 1, printed no report, and its stderr says every one of `says`.
fn assert_refused(out: &Output, says: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no report from the wrong server: {}", String::from_utf8_lossy(&out.stdout));
    for text in says {
        assert!(stderr.contains(text), "stderr lacks {text:?}: {stderr}");
    }
    stderr
}

#[test]
fn echo_against_the_room_server_stops_at_once_and_says_so() {
    let serve = Running::serve(&["--workers", "1"]);
    let url = serve.url("/ws");
    let (out, took) = bench(&["echo", "--url", &url, "--connections", "5", "--duration", "30"]);
    let stderr = assert_refused(&out, &[&url, "not an echo of what was sent", r#""op":"welcome""#, "bench fanout"]);
    assert!(took < STOPS_WITHIN, "took {took:?} of a 30 s run: {stderr}");
}

#[test]
fn echo_against_a_relay_room_stops_at_once_and_says_so() {
    // Every connection in the room receives every other's messages: not echoes.
    let serve = Running::serve(&["--workers", "1"]);
    let url = serve.url("/relay/bench");
    let (out, took) = bench(&["echo", "--url", &url, "--connections", "5", "--duration", "30"]);
    let stderr = assert_refused(&out, &[&url, "is not an echo server", "another connection sent"]);
    assert!(took < STOPS_WITHIN, "took {took:?} of a 30 s run: {stderr}");
}

#[test]
fn fanout_against_an_echo_server_says_it_does_not_fan_out() {
    let echo = echo_server(&[]);
    let url = echo.url("/relay/bench");
    let (out, _) = bench(&["fanout", "--url", &url, "--subscribers", "3", "--duration", "1"]);
    assert_refused(&out, &[&url, "does not fan out", "only to the connection that published it"]);
    let (out, _) = bench(&["fanout", "--all-publish", "--url", &url, "--subscribers", "3", "--duration", "1"]);
    assert_refused(&out, &[&url, "does not fan out"]);
}

#[test]
fn raw_fanout_at_the_room_protocol_endpoint_stops_at_once() {
    let serve = Running::serve(&["--workers", "1"]);
    let url = serve.url("/ws");
    let (out, took) = bench(&["fanout", "--url", &url, "--subscribers", "3", "--duration", "30"]);
    let stderr = assert_refused(&out, &[&url, "not a raw relay room", r#""op":"welcome""#, "--rooms-protocol"]);
    assert!(took < STOPS_WITHIN, "took {took:?} of a 30 s run: {stderr}");
}

#[test]
fn room_protocol_fanout_needs_the_room_protocol_endpoint() {
    let echo = echo_server(&[]);
    let url = echo.url("/ws");
    let (out, _) = bench(&["fanout", "--rooms-protocol", "--url", &url, "--subscribers", "3", "--duration", "30"]);
    assert_refused(&out, &[&url, "did not accept the wsedge.v1 subprotocol"]);

    let serve = Running::serve(&["--workers", "1"]);
    let url = serve.url("/relay/bench");
    let (out, _) = bench(&["fanout", "--rooms-protocol", "--url", &url, "--subscribers", "3", "--duration", "30"]);
    assert_refused(&out, &[&url, "sent the join request back as it was"]);
}

#[test]
fn a_run_whose_errors_dominate_reports_then_exits_1() {
    // Every 32-byte message is over the server's limit: each connection is closed (1009).
    let echo = echo_server(&["--max-message", "16"]);
    let (out, _) = bench(&["echo", "--url", &echo.url("/"), "--connections", "3", "--size", "32", "--duration", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report comes first");
    assert_eq!(report["errors"], 3, "{report:#}");
    assert_eq!(report["deliveries"], 0, "{report:#}");
    assert!(stderr.contains("the errors dominate"), "{stderr}");
}

/// The value clap shows as `[default: …]` for `flag` in `wsedge ARGS --help`.
fn default_of(args: &[&str], flag: &str) -> String {
    let out = wsedge().args(args).arg("--help").output().expect("wsedge --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let after_flag = help.split_once(&format!("{flag} <")).map(|(_, rest)| rest).unwrap_or_default();
    let default = after_flag.split_once("[default: ").map(|(_, rest)| rest).unwrap_or_default();
    default.split(']').next().unwrap_or_default().to_owned()
}

#[test]
fn bench_idle_by_default_connects_where_wsedge_serve_accepts() {
    // The default URL is serve's default address...
    let default_url = default_of(&["bench", "idle"], "--url");
    let serve_listen = default_of(&["serve"], "--listen");
    assert!(!serve_listen.is_empty(), "serve --help shows its --listen default");
    let path = default_url
        .strip_prefix(&format!("ws://{serve_listen}"))
        .unwrap_or_else(|| panic!("bench idle's default {default_url:?} is not serve's ws://{serve_listen}"));
    // ... and a path serve upgrades (tried on a serve of our own: the default port may be
    // taken on this machine). Its welcome is no error to an idle connection.
    let serve = Running::serve(&["--workers", "1"]);
    let (out, _) = bench(&["idle", "--url", &serve.url(path), "--connections", "10", "--duration", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench idle at {path}: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["connections_open"], 10, "{report:#}");
    assert_eq!(report["connections_open_at_end"], 10, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
}
