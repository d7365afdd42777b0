//! The report page's charts, as inline SVG: latency by percentile on HdrHistogram's
//! percentile axis (x = log10 of 1/(1-p): 0 %, 90 %, 99 %, 99.9 %, … evenly apart; y =
//! latency on a log scale) and throughput over time (linear axes). Several runs overlay as
//! several lines, each in a colour of its own, named in a legend.
//!
//! Pure functions from numbers to SVG text: no IO, no script, no external asset. Every text
//! that comes from data (a series' label) goes through [`escape`], so a server or scenario
//! name is shown as text and can never become markup.

use std::fmt::Write as _;

use super::report::{PercentilePoint, DISTRIBUTION_DECADES};

/// The chart's size in SVG units (the page scales it to its width).
const WIDTH: f64 = 760.0;
const PLOT_HEIGHT: f64 = 300.0;
/// Room for the y tick labels on the left, the x tick labels and axis title below.
const LEFT: f64 = 72.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 16.0;
const BELOW_PLOT: f64 = 52.0;
/// One legend row, and the width the legend assumes per character of a label.
const LEGEND_ROW: f64 = 20.0;
const LEGEND_CHAR_WIDTH: f64 = 7.2;
/// The lowest latency the log axis shows (1 µs, in ms): a message timed at 0 sits there.
const MIN_LATENCY_MS: f64 = 0.001;
/// Okabe–Ito colours, told apart with the common colour-vision deficiencies; more series
/// than colours repeat them.
const COLOURS: [&str; 8] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#999999"];
/// The percentiles marked with a dot (its tooltip gives the value) on each curve.
const MARKED_PERCENTILES: [f64; 6] = [50.0, 90.0, 99.0, 99.9, 99.99, 99.999];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// Its name in the legend and in tooltips (escaped when drawn).
    pub label: &'a str,
    /// Its points in data units, in order of x.
    pub points: Vec<(f64, f64)>,
    /// Points to mark with a dot, each with its tooltip text (escaped when drawn).
    pub marks: Vec<(f64, f64, String)>,
}

/// How data values map onto an axis: the fraction 0..=1 of its length.
#[derive(Debug, Clone, Copy)]
enum Scale {
    Linear { min: f64, max: f64 },
    Log { min: f64, max: f64 },
}

impl Scale {
    fn fraction(self, value: f64) -> f64 {
        let f = match self {
            Scale::Linear { min, max } => (value - min) / (max - min),
            Scale::Log { min, max } => (value.max(min).log10() - min.log10()) / (max.log10() - min.log10()),
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// An axis: its scale, its ticks (value and label) and its title.
#[derive(Debug, Clone)]
struct Axis {
    scale: Scale,
    ticks: Vec<(f64, String)>,
    title: &'static str,
}

/// Latency by percentile for each series of `(label, distribution)`: HdrHistogram's plot.
pub fn percentile_chart(runs: &[(&str, &[PercentilePoint])]) -> String {
    let series: Vec<Series> = runs
        .iter()
        .map(|&(label, points)| Series {
            label,
            points: points.iter().map(|p| (percentile_x(p.percentile), p.us / 1000.0)).collect(),
            marks: points
                .iter()
                .filter(|p| MARKED_PERCENTILES.contains(&p.percentile))
                .map(|p| {
                    let tip = format!("{label}: p{} = {}", p.percentile, latency_label(p.us / 1000.0));
                    (percentile_x(p.percentile), p.us / 1000.0, tip)
                })
                .collect(),
        })
        .collect();
    // 0 %, 90 %, 99 %, ... as far as the distribution goes.
    let x_ticks = (0..=DISTRIBUTION_DECADES).map(|d| (f64::from(d), percentile_label(f64::from(d)))).collect();
    let x_max = f64::from(DISTRIBUTION_DECADES);
    let x = Axis { scale: Scale::Linear { min: 0.0, max: x_max }, ticks: x_ticks, title: "percentile" };
    let latencies = series.iter().flat_map(|s| s.points.iter().map(|&(_, y)| y));
    let (min, max) = log_range(latencies);
    let y = Axis { scale: Scale::Log { min, max }, ticks: log_ticks(min, max), title: "latency" };
    draw("latency by percentile", &x, &y, &series)
}

/// Deliveries per second over the window for each series of `(label, interval seconds,
/// rates)`; `rate_title` names the y axis ("messages/s").
pub fn throughput_chart(runs: &[(&str, f64, &[f64])], rate_title: &'static str) -> String {
    let series: Vec<Series> = runs
        .iter()
        .map(|&(label, interval, rates)| Series {
            label,
            // Each rate at the middle of its interval.
            points: rates.iter().enumerate().map(|(i, &r)| ((i as f64 + 0.5) * interval, r)).collect(),
            marks: Vec::new(),
        })
        .collect();
    let end = runs.iter().map(|&(_, interval, rates)| interval * rates.len() as f64).fold(0.0, f64::max);
    let top = series.iter().flat_map(|s| s.points.iter().map(|&(_, y)| y)).fold(0.0, f64::max);
    let (x_max, x_step) = nice_range(end);
    let (y_max, y_step) = nice_range(top);
    let x = Axis {
        scale: Scale::Linear { min: 0.0, max: x_max },
        ticks: linear_ticks(x_max, x_step, |s| format!("{s} s")),
        title: "seconds into the measured window",
    };
    let y = Axis {
        scale: Scale::Linear { min: 0.0, max: y_max },
        ticks: linear_ticks(y_max, y_step, rate_label),
        title: rate_title,
    };
    draw("throughput over time", &x, &y, &series)
}

/// Where percentile `p` (0..100) sits on the x axis: log10(1/(1-p)), so 90 % is 1, 99 % 2.
fn percentile_x(p: f64) -> f64 {
    let rest = (1.0 - p / 100.0).max(1e-12);
    -rest.log10()
}

/// The label of the x tick `decades` along: "0%", "90%", "99%", "99.9%", ...
fn percentile_label(decades: f64) -> String {
    if decades == 0.0 {
        return "0%".to_owned();
    }
    let digits = decades as usize;
    format!("{:.*}%", digits.saturating_sub(2), 100.0 - 10f64.powf(2.0 - decades))
}

/// A latency in milliseconds for people: "850 µs", "1.2 ms", "2 s".
pub fn latency_label(ms: f64) -> String {
    let trimmed = |v: f64| {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if ms >= 1000.0 {
        format!("{} s", trimmed(ms / 1000.0))
    } else if ms >= 1.0 {
        format!("{} ms", trimmed(ms))
    } else {
        format!("{} µs", trimmed(ms * 1000.0))
    }
}

/// A rate for an axis: "0", "500", "20k", "1.5M".
fn rate_label(rate: f64) -> String {
    let trimmed = |v: f64| {
        let text = format!("{v:.1}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if rate >= 1e6 {
        format!("{}M", trimmed(rate / 1e6))
    } else if rate >= 1e3 {
        format!("{}k", trimmed(rate / 1e3))
    } else {
        trimmed(rate)
    }
}

/// Whole decades around the latencies (ms), at least one, none below [`MIN_LATENCY_MS`].
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 || !hi.is_finite() {
        return (MIN_LATENCY_MS, 1.0);
    }
    let lo = 10f64.powf(lo.max(MIN_LATENCY_MS).log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// Ticks at every decade, and at 2 and 5 times it when the range spans few decades.
fn log_ticks(min: f64, max: f64) -> Vec<(f64, String)> {
    let decades = (max / min).log10().round() as i32;
    let steps: &[f64] = if decades <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    let mut ticks = Vec::new();
    for d in 0..=decades {
        for &step in steps {
            let value = min * 10f64.powi(d) * step;
            if value <= max * 1.0001 {
                ticks.push((value, latency_label(value)));
            }
        }
    }
    ticks
}

/// A round top for an axis from 0 to `max` and its tick step (1, 2 or 5 times a power of
/// ten, about five ticks).
fn nice_range(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(raw);
    ((max / step).ceil() * step, step)
}

fn linear_ticks(max: f64, step: f64, label: impl Fn(f64) -> String) -> Vec<(f64, String)> {
    let count = (max / step).round() as u32;
    (0..=count).map(|i| f64::from(i) * step).map(|v| (v, label((v * 1e6).round() / 1e6))).collect()
}

/// The SVG: grid and ticks, one path per series (with its marks), then the legend (with
/// two series or more).
fn draw(name: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    let plot_width = WIDTH - LEFT - RIGHT;
    let px = |v: f64| LEFT + x.scale.fraction(v) * plot_width;
    let py = |v: f64| TOP + (1.0 - y.scale.fraction(v)) * PLOT_HEIGHT;
    // One line needs no legend: the heading names it.
    let legend = if series.len() > 1 { legend_layout(series.iter().map(|s| s.label), plot_width) } else { Vec::new() };
    let legend_rows = legend.last().map_or(0.0, |&(_, row)| row + 1.0);
    let height = TOP + PLOT_HEIGHT + BELOW_PLOT + legend_rows * LEGEND_ROW;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}" font-size="12">"#,
        escape(name)
    );
    let (bottom, right) = (TOP + PLOT_HEIGHT, LEFT + plot_width);
    for (value, label) in &x.ticks {
        let at = px(*value);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{at:.1}" y1="{TOP}" x2="{at:.1}" y2="{bottom}"/><text x="{at:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            escape(label)
        );
    }
    for (value, label) in &y.ticks {
        let at = py(*value);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{at:.1}" x2="{right}" y2="{at:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            at + 4.0,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_width}" height="{PLOT_HEIGHT}"/><text class="axis-title" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="axis-title" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        LEFT + plot_width / 2.0,
        bottom + 36.0,
        escape(x.title),
        TOP + PLOT_HEIGHT / 2.0,
        escape(y.title)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        for (j, &(vx, vy)) in s.points.iter().enumerate() {
            let _ = write!(d, "{}{:.1} {:.1}", if j == 0 { "M" } else { " L" }, px(vx), py(vy));
        }
        let _ = write!(
            svg,
            r#"<path class="series" d="{d}" stroke="{colour}" data-points="{}"><title>{}</title></path>"#,
            s.points.len(),
            escape(s.label)
        );
        for (vx, vy, tip) in &s.marks {
            let _ = write!(
                svg,
                r#"<circle class="mark" cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}</title></circle>"#,
                px(*vx),
                py(*vy),
                escape(tip)
            );
        }
    }
    for (i, (&(x_at, row), s)) in legend.iter().zip(series).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let y_at = bottom + BELOW_PLOT + row * LEGEND_ROW + 4.0;
        let _ = write!(
            svg,
            r#"<line x1="{x_at:.1}" y1="{y_at:.1}" x2="{:.1}" y2="{y_at:.1}" stroke="{colour}" stroke-width="3"/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
            x_at + 18.0,
            x_at + 24.0,
            y_at + 4.0,
            escape(s.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Where each legend entry starts: (x, row), wrapping at the plot's width.
fn legend_layout<'a>(labels: impl Iterator<Item = &'a str>, width: f64) -> Vec<(f64, f64)> {
    let mut layout = Vec::new();
    let (mut x, mut row) = (0.0, 0.0);
    for label in labels {
        let entry = 24.0 + label.chars().count() as f64 * LEGEND_CHAR_WIDTH + 20.0;
        if x > 0.0 && x + entry > width {
            (x, row) = (0.0, row + 1.0);
        }
        layout.push((LEFT + x, row));
        x += entry;
    }
    layout
}

/// `text` safe as HTML/SVG text and inside a double- or single-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_is_hdrhistograms() {
        let labels: Vec<String> = (0..=5).map(|d| percentile_label(f64::from(d))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        assert!((percentile_x(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(percentile_x(0.0), 0.0);
    }

    #[test]
    fn axes_get_round_ticks() {
        assert_eq!(nice_range(87_000.0), (100_000.0, 20_000.0));
        assert_eq!(nice_range(1.0), (1.0, 0.2));
        assert_eq!(rate_label(1_500_000.0), "1.5M");
        assert_eq!(rate_label(20_000.0), "20k");
        assert_eq!(latency_label(0.85), "850 µs");
        assert_eq!(latency_label(1.25), "1.25 ms");
        assert_eq!(log_range([0.03, 4.0].into_iter()), (0.01, 10.0));
        let ticks: Vec<String> = log_ticks(0.01, 1.0).into_iter().map(|(_, l)| l).collect();
        assert_eq!(ticks, ["10 µs", "20 µs", "50 µs", "100 µs", "200 µs", "500 µs", "1 ms"]);
    }

    #[test]
    fn labels_are_text_never_markup() {
        assert_eq!(
            escape(r#"<img src=x onerror="alert('1')">&"#),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
        let points = [PercentilePoint { percentile: 0.0, us: 10.0 }, PercentilePoint { percentile: 99.0, us: 20.0 }];
        let svg = percentile_chart(&[("<b>x</b>", &points)]);
        assert!(!svg.contains("<b>") && svg.contains("&lt;b&gt;x&lt;/b&gt;"), "{svg}");
    }
}
