// Server-Sent Events in headless Chromium (issue 19): (a) a page with a plain
// `EventSource`, loaded through a proxy that cuts its stream again and again while the
// backend publishes, receives every offset exactly once, in order (the browser's own
// reconnect with Last-Event-ID); (b) the demo wsedge serves at `/`, loaded through a
// proxy that refuses WebSocket upgrades, chats through the JS client's fallback to SSE.
// A screenshot of the demo on SSE goes to target/demo/sse-fallback.png. Without a Chromium
// both skip, unless WSEDGE_REQUIRE_BROWSER=1 (CI).

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { findBrowser, startProxy, startServer, waitFor } from "./harness.js";

const API_KEY = "sse-browser-test-api-key";
const SHOTS = resolve(dirname(fileURLToPath(import.meta.url)), "../../../target/demo");
const { CHROMIUM, playwright, missing, skip } = await findBrowser();

let server;
let browser;
const proxies = [];

before(async () => {
  if (missing) return;
  server = await startServer(["--api-key", API_KEY, "--history-size", "1000"]);
  browser = await playwright.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  for (const p of proxies) await p.close();
  await server?.kill();
});

async function proxy(options) {
  const p = await startProxy(server.port, options);
  proxies.push(p);
  return p;
}

/** POST /api/publish: the reply's offset. */
async function publish(room, data) {
  const res = await fetch(`${server.http}/api/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ room, data }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).offset;
}

test("a plain EventSource whose stream a proxy cuts mid-way receives every offset exactly once, in order", { skip, timeout: 30000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  const ROOM = "sse-eventsource";
  const CUTS = 3;
  const PER_ROUND = 20;
  const p = await proxy();
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  // An empty page of the proxy's origin: the EventSource is same-origin, as in an app.
  await page.route(`${p.http}/blank`, (route) => route.fulfill({ contentType: "text/html", body: "<!doctype html><title>EventSource</title>" }));
  await page.goto(`${p.http}/blank`);
  await page.evaluate((room) => {
    window.got = [];
    window.joins = 0;
    const events = new EventSource(`/sse?room=${room}`);
    events.addEventListener("message", (e) => window.got.push(JSON.parse(e.data).offset));
    events.addEventListener("joined", () => window.joins++);
  }, ROOM);
  const got = () => page.evaluate(() => window.got);
  const joins = () => page.evaluate(() => window.joins);
  await waitFor(async () => (await joins()) === 1, "the stream joined");

  // Each round: half the messages while the stream is up, a cut mid-way, the other half
  // while the browser is reconnecting (it resumes with Last-Event-ID).
  let n = 0;
  for (let round = 1; round <= CUTS + 1; round++) {
    for (let i = 0; i < PER_ROUND / 2; i++) n = await publish(ROOM, { n: n + 1 });
    await waitFor(async () => (await got()).length >= n - PER_ROUND / 4, `round ${round}: messages arriving`);
    if (round > CUTS) break;
    assert.ok(p.cutAll() >= 1, "a stream to cut");
    for (let i = 0; i < PER_ROUND / 2; i++) n = await publish(ROOM, { n: n + 1 });
    await waitFor(async () => (await joins()) === round + 1, `round ${round}: the stream resumed`);
  }
  await waitFor(async () => (await got()).length >= n, `all ${n} messages`);
  await new Promise((r) => setTimeout(r, 200)); // nothing more may come
  const offsets = await got();
  assert.deepEqual(offsets, Array.from({ length: n }, (_, i) => i + 1), "every offset once, in order");
  assert.ok(p.cuts >= CUTS, `${p.cuts} cuts`);
  assert.deepEqual(errors, []);
  await context.close();
});

test("the demo, with WebSocket upgrades refused by a proxy, chats through the client's fallback to SSE", { skip, timeout: 30000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  const ROOM = "sse-demo";
  const p = await proxy({ refuseUpgrades: true });
  const open = async (name) => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 600 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    await page.goto(`${p.http}/?room=${ROOM}&name=${name}`);
    return { page, name, errors };
  };
  const text = (pg, selector) => pg.page.locator(selector).allInnerTexts();
  const logHas = async (pg, what) => (await text(pg, "#log .msg:not(.pending) span")).includes(what);
  const say = async (pg, message) => {
    await pg.page.locator("#message-input").fill(message);
    await pg.page.locator("#composer button").click();
  };
  const ada = await open("ada");
  const grace = await open("grace");
  for (const pg of [ada, grace]) {
    await waitFor(async () => (await pg.page.getAttribute("#status", "data-state")) === "connected", `${pg.name} connected`);
    assert.equal(await pg.page.evaluate(() => window.wsedgeDemo.client.transport), "sse", `${pg.name} is on SSE`);
  }
  assert.ok(p.upgradesRefused >= 4, `each page tried WebSocket first (${p.upgradesRefused} upgrades refused)`);

  await say(ada, "hello grace, over SSE");
  await waitFor(() => logHas(grace, "hello grace, over SSE"), "ada's message on grace's page");
  await say(grace, "hi ada, no WebSocket here");
  await waitFor(() => logHas(ada, "hi ada, no WebSocket here"), "grace's message on ada's page");
  mkdirSync(SHOTS, { recursive: true });
  await ada.page.screenshot({ path: resolve(SHOTS, "sse-fallback.png") });
  for (const pg of [ada, grace]) {
    await waitFor(async () => (await logHas(pg, "hello grace, over SSE")) && (await logHas(pg, "hi ada, no WebSocket here")), `both messages on ${pg.name}'s page`);
    assert.deepEqual(pg.errors, [], `no uncaught errors on ${pg.name}'s page`);
    await pg.page.context().close();
  }
});
