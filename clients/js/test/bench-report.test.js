// The bench report page in headless Chromium (Debian's `chromium`, driven by
// playwright-core): a real `wsedge bench echo --report` against `wsedge echo` writes the
// page of a one-second run, and `wsedge bench-report` overlays two runs' JSON reports;
// both pages, opened from file://, draw their charts (every point of the JSON in a line
// with a real size on screen), throw nothing, and request nothing but themselves.
// Screenshots go to target/bench-report/ (the README's docs/bench-chart.png is
// latency-chart.png). Without a Chromium the test skips, unless WSEDGE_REQUIRE_BROWSER=1
// (CI), where that is a failure.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { findBrowser, startServer, WSEDGE_BIN } from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const OUT = resolve(here, "../../../target/bench-report");
const run = promisify(execFile);

const { CHROMIUM, playwright, missing, skip } = await findBrowser();

let echo;
let browser;

before(async () => {
  if (missing) return;
  mkdirSync(OUT, { recursive: true });
  echo = await startServer([], { command: "echo" });
  browser = await playwright.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await echo?.stop();
});

/** `wsedge bench echo` for one second with `args`: writes NAME.html and NAME.json in OUT. */
async function bench(name, args) {
  const page = resolve(OUT, `${name}.html`);
  const common = ["--duration", "1", "--warmup", "0.2", "--report", page, "--json"];
  const { stdout } = await run(WSEDGE_BIN, ["bench", "echo", "--url", `ws://127.0.0.1:${echo.port}/`, ...args, ...common], {
    env: { ...process.env, RUST_LOG: "warn" },
  });
  const json = resolve(OUT, `${name}.json`);
  writeFileSync(json, stdout);
  return { page, json, report: JSON.parse(stdout) };
}

/**
 * Opens `file` and returns what its charts drew: per `svg.chart`, each line's point count
 * (from its `d`) and on-screen size. Fails on page errors and on any request but the page.
 */
async function openPage(file) {
  const context = await browser.newContext({ viewport: { width: 900, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  const requests = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("request", (r) => requests.push(r.url()));
  const url = pathToFileURL(file).href;
  await page.goto(url);
  const charts = await page.locator("svg.chart").evaluateAll((svgs) =>
    svgs.map((svg) => ({
      label: svg.getAttribute("aria-label"),
      lines: [...svg.querySelectorAll("path.series")].map((path) => {
        const box = path.getBoundingClientRect();
        return { points: (path.getAttribute("d").match(/[ML]/g) || []).length, width: box.width, height: box.height };
      }),
    })),
  );
  assert.deepEqual(errors, [], "no errors on the page");
  assert.deepEqual(requests, [url], "the page loads nothing else");
  return { page, charts };
}

test("the bench report opens and draws its chart", { skip, timeout: 60000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  const { page: file, report } = await bench("report", ["--connections", "8", "--depth", "4"]);
  const { page, charts } = await openPage(file);

  assert.deepEqual(charts.map((c) => c.label), ["latency by percentile", "throughput over time"]);
  const [latency, throughput] = charts;
  assert.equal(latency.lines.length, 1);
  assert.equal(latency.lines[0].points, report.latency_distribution_us.length, "every percentile drawn");
  assert.equal(throughput.lines[0].points, report.throughput.deliveries_per_sec.length, "every interval drawn");
  for (const { lines } of charts) {
    // Drawn across the plot, not collapsed into a corner.
    assert.ok(lines[0].width > 300 && lines[0].height > 10, JSON.stringify(lines[0]));
  }
  for (const tick of ["99.999%", "99.9%", "90%"]) {
    assert.equal(await page.locator("svg.chart text", { hasText: tick }).count(), 1, `the ${tick} tick`);
  }
  await page.screenshot({ path: resolve(OUT, "report.png"), fullPage: true });
  await page.locator("svg.chart").first().screenshot({ path: resolve(OUT, "latency-chart.png") });
  await page.context().close();
});

test("the overlay page of two runs draws a line per run", { skip, timeout: 60000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  // Two runs of one group, named as benches/compare.sh names its files: GROUP.LABEL.json.
  const runs = [];
  for (const [label, depth] of [["depth-1", "1"], ["depth-16", "16"]]) {
    const { json } = await bench(`run-${label}`, ["--connections", "8", "--depth", depth]);
    const named = resolve(OUT, `echo-8.${label}.json`);
    copyFileSync(json, named);
    runs.push(named);
  }
  const file = resolve(OUT, "compare.html");
  const { stdout } = await run(WSEDGE_BIN, ["bench-report", "--title", "two depths", "--out", file, ...runs]);
  assert.equal(stdout.trim(), file, "prints the page's path");

  const { page, charts } = await openPage(file);
  assert.equal(charts.length, 2);
  for (const { lines } of charts) {
    assert.equal(lines.length, 2, "a line per run");
    for (const line of lines) assert.ok(line.points > 5 && line.width > 300, JSON.stringify(line));
  }
  assert.equal(await page.locator("svg.chart text.legend", { hasText: "depth-16" }).count(), 2, "named in both legends");
  await page.screenshot({ path: resolve(OUT, "compare.png"), fullPage: true });
  await page.context().close();
});
