//! The bench's report page end to end: a real `wsedge bench echo --report FILE.html --json`
//! against `wsedge echo` writes a self-contained page whose charts draw every point of the
//! JSON's latency distribution and throughput series; `wsedge bench-report` overlays saved
//! reports per group, naming the ones it cannot read. The real binary on both sides
//! (`support::process`), the server on an ephemeral port.

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;
use support::process::{wsedge, Running};

/// A fresh folder for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsedge-bench-report-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// `wsedge echo` on an ephemeral port.
fn echo_server() -> Running {
    let mut command = wsedge();
    command.args(["echo", "--listen", "127.0.0.1:0", "--workers", "1"]);
    Running::start(command)
}

/// Runs `wsedge ARGS` quietly.
fn run(args: &[&str]) -> Output {
    wsedge().args(args).env("RUST_LOG", "warn").output().expect("run wsedge")
}

/// One second of echo through 4 connections; the JSON report (the page goes to `page`).
fn echo_run(url: &str, page: &str) -> Value {
    let args = ["bench", "echo", "--url", url, "--connections", "4", "--duration", "1", "--warmup", "0.2"];
    let out = run(&[&args[..], &["--json", "--report", page]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wsedge bench: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("a JSON report ({e}): {stderr}"))
}

/// The `data-points` of each chart line (`<path class="series">`), in page order.
fn drawn_points(page: &str) -> Vec<usize> {
    page.split("<path class=\"series\"")
        .skip(1)
        .filter_map(|rest| rest.split("data-points=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect()
}

/// Nothing to run, nothing to load: no script, no URL of the web.
fn assert_self_contained(page: &str) {
    assert!(page.starts_with("<!doctype html>"), "{}", &page[..page.len().min(200)]);
    assert!(!page.contains("<script") && !page.contains("http:") && !page.contains("https:"), "{page}");
    assert!(page.contains("Content-Security-Policy"), "{page}");
}

#[test]
fn bench_report_draws_the_runs_distribution_and_throughput() {
    let dir = scratch("run");
    let echo = echo_server();
    let page_path = dir.join("report.html");
    let report = echo_run(&echo.url("/"), &page_path.to_string_lossy());

    // The JSON carries what the page draws.
    let distribution = report["latency_distribution_us"].as_array().expect("a latency distribution");
    let percentiles: Vec<f64> = distribution.iter().filter_map(|p| p["percentile"].as_f64()).collect();
    assert_eq!((percentiles.first(), percentiles.last()), (Some(&0.0), Some(&99.999)), "{percentiles:?}");
    assert!(percentiles.contains(&50.0) && percentiles.contains(&99.9), "{percentiles:?}");
    let latencies: Vec<f64> = distribution.iter().filter_map(|p| p["us"].as_f64()).collect();
    assert!(latencies.windows(2).all(|w| w[0] <= w[1]) && latencies[0] > 0.0, "{latencies:?}");
    let throughput = &report["throughput"];
    assert_eq!(throughput["interval_secs"].as_f64(), Some(0.1), "{throughput}");
    let rates: Vec<f64> =
        throughput["deliveries_per_sec"].as_array().unwrap().iter().filter_map(Value::as_f64).collect();
    assert_eq!(rates.len(), 10, "1 s in 100 ms intervals: {rates:?}");
    // The intervals add up to the window's deliveries.
    let counted: f64 = rates.iter().map(|r| r * 0.1).sum();
    let deliveries = report["deliveries"].as_f64().unwrap();
    assert!((counted - deliveries).abs() < 1.0, "{counted} counted per interval, {deliveries} in all");
    // Existing fields are unchanged.
    assert_eq!(report["latency_us"]["samples"].as_f64(), Some(deliveries));

    let page = fs::read_to_string(&page_path).expect("the page was written");
    assert_self_contained(&page);
    assert_eq!(drawn_points(&page), [distribution.len(), rates.len()], "every point, both charts");
    assert!(page.contains(&echo.url("/")) && page.contains("depth=1"), "the settings are on the page");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn bench_report_command_overlays_saved_reports_per_group() {
    let dir = scratch("overlay");
    let echo = echo_server();
    // Two "servers" of one scenario (the same server twice will do), and a report that failed.
    let mut files = Vec::new();
    for label in ["first", "second"] {
        let report = echo_run(&echo.url("/"), &dir.join(format!("{label}.html")).to_string_lossy());
        let file = dir.join(format!("echo-4.{label}.json"));
        fs::write(&file, report.to_string()).unwrap();
        files.push(file);
    }
    let broken = dir.join("echo-4.broken.json");
    fs::write(&broken, "").unwrap();
    files.push(broken);

    let out_path = dir.join("compare.html");
    let mut args = vec!["bench-report".to_owned(), "--title".to_owned(), "two runs".to_owned()];
    args.extend(["--out".to_owned(), out_path.to_string_lossy().into_owned()]);
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let out = wsedge().args(&args).output().expect("run wsedge bench-report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("echo-4.broken.json: not a bench report"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), out_path.to_string_lossy(), "prints the page's path");

    let page = fs::read_to_string(&out_path).unwrap();
    assert_self_contained(&page);
    let points = drawn_points(&page);
    assert_eq!(points.len(), 4, "two distributions, two throughputs: {points:?}");
    assert!(page.contains("<h2>echo-4</h2>") && page.contains(">first<") && page.contains(">second<"));
    assert!(page.contains("Not shown") && page.contains("echo-4.broken.json"));

    // Nothing readable: exit 1 and no page.
    let nothing = dir.join("nothing.html");
    let out = run(&["bench-report", "--out", &nothing.to_string_lossy(), &files[2].to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!nothing.exists());
    let _ = fs::remove_dir_all(dir);
}
