//! The bench report as a web page: one self-contained HTML file (inline CSS and SVG, no
//! script, no external asset, and a Content-Security-Policy that allows none) with a run's
//! settings and headline numbers, its throughput over time and its latency by percentile
//! (`wsedge bench --report FILE.html`); or one page that overlays several runs per group
//! (`wsedge bench-report`: benches/compare.sh's servers, per scenario).
//!
//! Pages are drawn from the JSON report (`--json`) read back as a [`RunRecord`], so the page
//! of a run and the overlay of saved runs are made the same way, and a report without the
//! chart data (an older bench, `idle`) still gives a page that says what is missing. No IO:
//! the caller reads and writes the files. Every text from data is escaped ([`escape`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::chart::{escape, latency_label, percentile_chart, throughput_chart};
use super::report::{thousands, Latency, PercentilePoint, Report, Throughput};

/// No script, no request of any kind: only the inline style. Even text that escaped our
/// escaping could not run or load anything.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:860px;margin:24px auto;padding:0 16px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:14px;margin:16px 0 4px}\
.sub{color:#666;margin:0 0 16px;overflow-wrap:anywhere}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:top}\
th{font-weight:600;color:#444}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.settings td:first-child{color:#666}.missing{color:#888;font-style:italic}\
svg.chart{width:100%;height:auto;display:block}svg.chart text{fill:#333}\
svg.chart .grid{stroke:#e6e6e6}svg.chart .frame{fill:none;stroke:#999}\
svg.chart .series{fill:none;stroke-width:2;stroke-linejoin:round}svg.chart .axis-title{fill:#666}";

/// One run as the page shows it: the fields of `wsedge bench --json`'s report it draws.
/// Every field is optional in the file (missing: its default), so any report reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// `echo`, `fanout`, `broadcast`, `idle` (what `wsedge bench` ran).
    pub scenario: String,
    /// The server's URL.
    pub url: String,
    /// The scenario's own settings (size, depth, ...).
    pub settings: BTreeMap<String, Value>,
    /// Client threads.
    pub threads: u64,
    /// Connections asked for.
    pub connections: u64,
    /// Connections that opened.
    pub connections_open: u64,
    /// Connections that failed to open.
    pub connections_failed: u64,
    /// Seconds of traffic before the window.
    pub warmup_secs: f64,
    /// Seconds of the measured window.
    pub duration_secs: f64,
    /// Echo: round trips per second; fan-out: publishes per second.
    pub messages_per_sec: f64,
    /// Messages received per second.
    pub deliveries_per_sec: f64,
    /// Payload megabytes received per second.
    pub mb_per_sec: f64,
    /// Latency percentiles.
    pub latency_us: Option<Latency>,
    /// What went wrong after connections opened.
    pub errors: u64,
    /// CPU seconds the bench itself used in the window.
    pub client_cpu_seconds: f64,
    /// The server's cost, with `--server-pid`.
    pub server: Option<ServerCost>,
    /// The latency distribution, for the percentile chart.
    pub latency_distribution_us: Vec<PercentilePoint>,
    /// Deliveries per second over the window, for the throughput chart.
    pub throughput: Option<Throughput>,
}

/// The part of the server's report the page shows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerCost {
    /// CPU seconds per million messages (echo: round trips).
    pub cpu_seconds_per_million_messages: Option<f64>,
    /// CPU seconds per million deliveries (fan-out).
    pub cpu_seconds_per_million_deliveries: Option<f64>,
    /// Resident memory growth per connection (idle).
    pub rss_growth_per_connection_bytes: Option<f64>,
}

impl RunRecord {
    /// A finished run, read as its JSON report would be.
    pub fn from_report(report: &Report) -> Result<RunRecord, serde_json::Error> {
        serde_json::from_value(serde_json::to_value(report)?)
    }

    /// Echo counts round trips; the others count deliveries (and the charts say which).
    fn is_echo(&self) -> bool {
        self.scenario == "echo"
    }

    /// The headline throughput: messages/s for echo, deliveries/s otherwise.
    fn rate(&self) -> (f64, &'static str) {
        if self.is_echo() {
            (self.messages_per_sec, "messages/s")
        } else {
            (self.deliveries_per_sec, "deliveries/s")
        }
    }

    /// CPU seconds per million of what [`RunRecord::rate`] counts.
    fn server_cpu_per_million(&self) -> Option<f64> {
        let server = self.server.as_ref()?;
        if self.is_echo() {
            server.cpu_seconds_per_million_messages
        } else {
            server.cpu_seconds_per_million_deliveries
        }
    }

    /// "size=32 depth=16" (strings without their JSON quotes).
    fn settings_line(&self) -> String {
        settings_line(self.settings.iter())
    }
}

/// One run on the overlay page: the group whose charts it joins and its name there.
#[derive(Debug, Clone)]
pub struct PageEntry {
    /// The chart it is drawn on (compare.sh's scenario: `echo-32B-d16`).
    pub group: String,
    /// Its line's name (compare.sh's server: `wsedge`, `uwebsockets`).
    pub label: String,
    /// The run.
    pub run: RunRecord,
}

impl PageEntry {
    /// An entry named by its report's file name, `GROUP.LABEL.json` as compare.sh writes
    /// them (`echo-32B-d1.wsedge.json`; a round's `echo-32B-d1.wsedge.r2.json` is labelled
    /// `wsedge.r2`). A name without a dot is its own group, labelled by its scenario.
    pub fn named_by_file(file_stem: &str, run: RunRecord) -> PageEntry {
        let (group, label) = match file_stem.split_once('.') {
            Some((group, label)) => (group.to_owned(), label.to_owned()),
            None => (file_stem.to_owned(), run.scenario.clone()),
        };
        PageEntry { group, label, run }
    }
}

/// The page of one run.
pub fn run_page(run: &RunRecord) -> String {
    let title = format!("wsedge bench: {}", run.scenario);
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1><p class=\"sub\">{}</p>", escape(&title), escape(&run.url));
    body.push_str(&settings_table(run));
    let label = run.scenario.as_str();
    body.push_str("<h2>Latency by percentile</h2>");
    body.push_str(&latency_section(&[(label, run)]));
    body.push_str("<h2>Throughput over time</h2>");
    body.push_str(&throughput_section(&[(label, run)]));
    document(&title, &body)
}

/// One page for many runs: per group (in order of first appearance), a table of the runs'
/// numbers and their latency distributions and throughputs overlaid. `notes` (files that
/// could not be read, say) are listed at the end.
pub fn comparison_page(title: &str, entries: &[PageEntry], notes: &[String]) -> String {
    let mut groups: Vec<(&str, Vec<&PageEntry>)> = Vec::new();
    for entry in entries {
        match groups.iter_mut().find(|(group, _)| *group == entry.group) {
            Some((_, members)) => members.push(entry),
            None => groups.push((&entry.group, vec![entry])),
        }
    }
    let mut body = format!("<h1>{}</h1>", escape(title));
    if !groups.is_empty() {
        let names: Vec<String> = groups.iter().map(|(group, _)| escape(group)).collect();
        let _ = write!(body, "<p class=\"sub\">{}</p>", names.join(" · "));
    }
    for (group, members) in &groups {
        let first = &members[0].run;
        let _ = write!(body, "<h2>{}</h2>", escape(group));
        // What every run of the group was asked for (compare.sh: all of it but the URL).
        let shared = first
            .settings
            .iter()
            .filter(|(key, value)| members.iter().all(|m| m.run.settings.get(key.as_str()) == Some(value)));
        let what = format!(
            "{} {} · {} connection(s), {} thread(s) · {:.1} s measured after {:.1} s warmup",
            first.scenario,
            settings_line(shared),
            first.connections,
            first.threads,
            first.duration_secs,
            first.warmup_secs
        );
        let _ = write!(body, "<p class=\"sub\">{}</p>", escape(&what));
        body.push_str(&comparison_table(members));
        let runs: Vec<(&str, &RunRecord)> = members.iter().map(|e| (e.label.as_str(), &e.run)).collect();
        body.push_str("<h3>Latency by percentile</h3>");
        body.push_str(&latency_section(&runs));
        body.push_str("<h3>Throughput over time</h3>");
        body.push_str(&throughput_section(&runs));
    }
    if groups.is_empty() {
        body.push_str("<p class=\"missing\">No reports.</p>");
    }
    if !notes.is_empty() {
        body.push_str("<h2>Not shown</h2><ul>");
        for note in notes {
            let _ = write!(body, "<li>{}</li>", escape(note));
        }
        body.push_str("</ul>");
    }
    document(title, &body)
}

/// The HTML document around `body`.
fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n",
        escape(title)
    )
}

/// The run's settings and headline numbers, a row each.
fn settings_table(run: &RunRecord) -> String {
    let mut rows: Vec<(&str, String)> = vec![("scenario", run.scenario.clone())];
    if !run.settings.is_empty() {
        rows.push(("settings", run.settings_line()));
    }
    rows.push((
        "connections",
        format!(
            "{} open of {} ({} failed), {} client thread(s)",
            run.connections_open, run.connections, run.connections_failed, run.threads
        ),
    ));
    rows.push(("window", format!("{:.1} s measured after {:.1} s warmup", run.duration_secs, run.warmup_secs)));
    if run.scenario != "idle" {
        let (rate, unit) = run.rate();
        rows.push(("throughput", format!("{} {unit}, {:.2} MB/s received", thousands(rate), run.mb_per_sec)));
    }
    if let Some(l) = &run.latency_us {
        let ms = |us: f64| latency_label(us / 1000.0);
        let text = format!(
            "p50 {}, p99 {}, p99.9 {}, max {} (mean {}, {} messages)",
            ms(l.p50),
            ms(l.p99),
            ms(l.p99_9),
            ms(l.max),
            ms(l.mean),
            thousands(l.samples as f64)
        );
        rows.push(("latency", text));
    }
    rows.push(("errors", run.errors.to_string()));
    if let Some(cpu) = run.server_cpu_per_million() {
        let unit = if run.is_echo() { "messages" } else { "deliveries" };
        rows.push(("server CPU", format!("{cpu:.3} s per million {unit}")));
    }
    if let Some(bytes) = run.server.as_ref().and_then(|s| s.rss_growth_per_connection_bytes) {
        rows.push(("server memory", format!("{bytes:.0} B per connection")));
    }
    rows.push(("client CPU", format!("{:.2} s in the window", run.client_cpu_seconds)));
    let mut table = String::from("<table class=\"settings\">");
    for (name, value) in rows {
        let _ = write!(table, "<tr><td>{}</td><td>{}</td></tr>", escape(name), escape(&value));
    }
    table.push_str("</table>");
    table
}

/// The numbers of a group's runs side by side.
fn comparison_table(members: &[&PageEntry]) -> String {
    let unit = members[0].run.rate().1;
    let mut table = format!(
        "<table><tr><th>run</th><th class=\"n\">{unit}</th><th class=\"n\">p50</th><th class=\"n\">p99</th>\
         <th class=\"n\">p99.9</th><th class=\"n\">max</th><th class=\"n\">errors</th><th class=\"n\">server CPU s/M</th></tr>"
    );
    for entry in members {
        let run = &entry.run;
        let latency = |pick: fn(&Latency) -> f64| {
            run.latency_us.as_ref().map_or_else(|| "-".to_owned(), |l| latency_label(pick(l) / 1000.0))
        };
        let rate = if run.scenario == "idle" { "-".to_owned() } else { thousands(run.rate().0) };
        let _ = write!(
            table,
            "<tr><td>{}</td><td class=\"n\">{rate}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&entry.label),
            escape(&latency(|l| l.p50)),
            escape(&latency(|l| l.p99)),
            escape(&latency(|l| l.p99_9)),
            escape(&latency(|l| l.max)),
            run.errors,
            run.server_cpu_per_million().map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.3}"))
        );
    }
    table.push_str("</table>");
    table
}

/// The percentile chart of the runs that timed messages, or why there is none.
fn latency_section(runs: &[(&str, &RunRecord)]) -> String {
    let curves: Vec<(&str, &[PercentilePoint])> = runs
        .iter()
        .filter(|(_, run)| !run.latency_distribution_us.is_empty())
        .map(|(label, run)| (*label, run.latency_distribution_us.as_slice()))
        .collect();
    if curves.is_empty() {
        return "<p class=\"missing\">No latency distribution in this report (nothing was timed).</p>".to_owned();
    }
    percentile_chart(&curves)
}

/// The throughput chart of the runs that counted it, or why there is none.
fn throughput_section(runs: &[(&str, &RunRecord)]) -> String {
    let lines: Vec<(&str, f64, &[f64])> = runs
        .iter()
        .filter_map(|(label, run)| {
            let t = run.throughput.as_ref().filter(|t| !t.deliveries_per_sec.is_empty())?;
            Some((*label, t.interval_secs, t.deliveries_per_sec.as_slice()))
        })
        .collect();
    if lines.is_empty() {
        return "<p class=\"missing\">No throughput series in this report.</p>".to_owned();
    }
    let unit = runs.first().map_or("deliveries/s", |(_, run)| run.rate().1);
    throughput_chart(&lines, unit)
}

/// "size=32 depth=16" from settings (strings without their JSON quotes).
fn settings_line<'a>(settings: impl Iterator<Item = (&'a String, &'a Value)>) -> String {
    let values = settings.map(|(key, value)| match value {
        Value::String(text) => format!("{key}={text}"),
        other => format!("{key}={other}"),
    });
    values.collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{distribution_percentiles, sample_report};

    const HOSTILE: &str = "<img src=x onerror=alert(1)>";

    /// A report with a distribution (10 µs at p0 rising to 10 ms at p99.999) and a
    /// throughput series, read back as the page reads it.
    fn charted_run(scenario: &'static str) -> RunRecord {
        let mut report = sample_report(scenario);
        report.latency_distribution_us = distribution_percentiles()
            .map(|percentile| PercentilePoint { percentile, us: 10.0 * (1.0 + percentile * percentile / 10.0) })
            .collect();
        report.throughput = Some(Throughput { interval_secs: 0.1, deliveries_per_sec: vec![1000.0; 20] });
        report.settings.insert("size", serde_json::json!(32));
        RunRecord::from_report(&report).expect("a report reads back")
    }

    /// Every data point of every series drawn: `data-points` counts of the `<path>`s.
    fn drawn_points(page: &str) -> Vec<usize> {
        page.split("<path class=\"series\"")
            .skip(1)
            .filter_map(|rest| rest.split("data-points=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect()
    }

    /// No way for the page to run a script or load anything.
    fn assert_inert(page: &str) {
        assert!(!page.contains("http:") && !page.contains("https:"), "no URL to fetch from");
        assert!(!page.contains("<script") && !page.contains("<img"), "no script, no image");
        assert!(page.contains(CONTENT_SECURITY_POLICY));
    }

    #[test]
    fn run_page_draws_both_charts_with_every_point() {
        let run = charted_run("echo");
        let page = run_page(&run);
        assert_inert(&page);
        let points = distribution_percentiles().count();
        assert_eq!(drawn_points(&page), [points, 20], "the percentile curve, then the throughput");
        for tick in ["99.999%", "99.9%", "90%", "messages/s"] {
            assert!(page.contains(&format!(">{tick}<")), "{tick} on an axis");
        }
        assert!(page.contains("size=32") && page.contains("ws://127.0.0.1:9001/"), "the settings");
        assert!(page.contains("p99.9 = "), "marked percentiles say their value");
    }

    #[test]
    fn names_from_reports_are_text_never_markup() {
        let mut run = charted_run("fanout");
        run.scenario = HOSTILE.to_owned();
        run.url = format!("ws://x/{HOSTILE}");
        run.settings.insert(HOSTILE.to_owned(), Value::String(HOSTILE.to_owned()));
        let page = run_page(&run);
        let entries = [
            PageEntry { group: HOSTILE.to_owned(), label: HOSTILE.to_owned(), run: run.clone() },
            PageEntry::named_by_file("echo-32B-d1.wsedge", charted_run("echo")),
        ];
        let overlay = comparison_page(HOSTILE, &entries, &[HOSTILE.to_owned()]);
        for page in [page, overlay] {
            assert_inert(&page);
            assert!(!page.contains("<img") && !page.contains("onerror=alert(1)>"), "escaped everywhere");
            assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        }
    }

    #[test]
    fn overlay_groups_runs_by_file_name_and_draws_one_line_each() {
        let entries = vec![
            PageEntry::named_by_file("echo-32B-d1.wsedge", charted_run("echo")),
            PageEntry::named_by_file("fanout-10k.wsedge", charted_run("fanout")),
            PageEntry::named_by_file("echo-32B-d1.uwebsockets", charted_run("echo")),
            PageEntry::named_by_file("idle.wsedge", RunRecord::from_report(&sample_report("idle")).unwrap()),
        ];
        assert_eq!((entries[2].group.as_str(), entries[2].label.as_str()), ("echo-32B-d1", "uwebsockets"));
        let page = comparison_page("wsedge vs peers", &entries, &[]);
        assert_inert(&page);
        let points = distribution_percentiles().count();
        // echo: two curves, two throughputs; fanout: one each; idle: neither.
        assert_eq!(drawn_points(&page), [points, points, 20, 20, points, 20]);
        assert!(page.find("<h2>echo-32B-d1</h2>") < page.find("<h2>fanout-10k</h2>"), "order of appearance");
        assert!(page.contains("deliveries/s") && page.contains("No latency distribution"));
        assert_eq!(PageEntry::named_by_file("solo", charted_run("echo")).label, "echo");
    }

    #[test]
    fn reports_without_chart_data_still_read() {
        let run: RunRecord = serde_json::from_str(r#"{"scenario":"idle-scale","connections":10}"#).unwrap();
        let page = run_page(&run);
        assert!(page.contains("No throughput series") && page.contains("No latency distribution"));
    }
}
