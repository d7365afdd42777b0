// The admin page served by `wsedge serve` at `/admin` (issue 20), in headless Chromium
// (Debian's `chromium`, driven by playwright-core), against a server behind
// `--allowed-origin` (an origin the page is not served from) with users and an API key:
// under load (a node loop publishing from clients, connecting and disconnecting) it shows
// non-zero rates within 3 s of the key being entered, draws its charts and lists the rooms;
// a wrong key is refused (the page asks again; the stream answers 401 with a JSON error);
// user names, message data and a room name that are HTML stay text; an operator publishes,
// reads presence and history, and disconnects a user from it. Two nodes on one Redis are
// both listed, each with its Redis round trip, whichever serves the page. The screenshots go to
// target/admin/ (the README's docs/admin.png is admin.png). Without a Chromium the test
// skips, unless WSEDGE_REQUIRE_BROWSER=1 (CI), where that is a failure.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { clientPool, findBrowser, signToken, startRedis, startServer, waitFor } from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const SHOTS = resolve(here, "../../../target/admin");
const SECRET = "wsedge-js-admin-test-secret-32-bytes!";
const API_KEY = "admin-test-api-key";
const HOSTILE = `<img src=x onerror="window.__pwned=1">`;

const { CHROMIUM, playwright, missing, skip } = await findBrowser();

let server;
let browser;
let load;
const pool = clientPool();

before(async () => {
  if (missing) return;
  server = await startServer([
    "--jwt-secret", SECRET, "--api-key", API_KEY, "--allowed-origin", "https://ops.example.test",
    "--publish-rate", "1000", "--publish-burst", "1000",
  ]);
  browser = await playwright.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  load = await startLoad();
});

after(async () => {
  load?.stop();
  pool.closeAll();
  await browser?.close();
  await server?.kill();
});

const as = (sub) => pool.make(server.url, { token: signToken(SECRET, { sub }) });

/**
 * Traffic for the page to show: members in three rooms publishing every 50 ms, and a
 * connection opened and closed every 200 ms (handshakes, closes by code).
 */
async function startLoad() {
  const rooms = ["chat:lobby", "chat:ops", "news"];
  const members = rooms.flatMap((room, i) =>
    Array.from({ length: 3 + 2 * i }, (_, j) => {
      const c = as(`user-${i}-${j}`);
      return { c, room: c.join(room) };
    }),
  );
  const hostile = as(HOSTILE);
  const hostileRoom = hostile.join("hostile");
  await Promise.all([...members.map((m) => m.c.ready()), hostile.ready()]);
  await hostileRoom.publish(HOSTILE);
  let n = 0;
  const publishing = setInterval(() => {
    for (const m of members.slice(0, 6)) m.room.publish({ n: n++ }).catch(() => {});
  }, 50);
  const churning = setInterval(() => {
    const c = as(`churn-${n}`);
    c.ready().then(() => c.close(), () => c.close());
  }, 200);
  return {
    stop() {
      clearInterval(publishing);
      clearInterval(churning);
    },
  };
}

async function openAdmin() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.on("dialog", (d) => errors.push(new Error(`a dialog opened: ${d.message()}`)));
  await page.goto(`${server.http}/admin`);
  return { page, errors };
}

const value = (page, id) => page.getAttribute(`#${id}`, "data-value").then(Number);

test("under load the page shows non-zero rates within 3 s, with charts and rooms", { skip, timeout: 90000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  const { page, errors } = await openAdmin();
  assert.equal(await page.getAttribute("#status", "data-state"), "locked");
  await page.fill("#key", API_KEY);
  const t0 = Date.now();
  await page.click("#unlock button");
  const rates = ["v-handshakes", "v-messages-in", "v-published", "v-deliveries", "v-bytes-in", "v-bytes-out"];
  await waitFor(
    async () => (await Promise.all(rates.map((id) => value(page, id)))).every((v) => v > 0),
    "every rate above zero",
    3000,
  );
  const elapsed = Date.now() - t0;
  assert.ok(elapsed <= 3000, `rates shown after ${elapsed} ms`);
  assert.equal(await page.getAttribute("#status", "data-state"), "live");
  assert.ok((await value(page, "v-connections")) >= 13, "the load's connections");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("wsedge-admin-key")), API_KEY, "kept for the tab");
  assert.ok(!page.url().includes(API_KEY), "never in the URL");
  assert.deepEqual(await page.context().cookies(), [], "never in a cookie");
  // The rooms, by members and by traffic; a worker with its load.
  await waitFor(async () => (await page.locator("#top-traffic tr").allInnerTexts()).some((r) => r.startsWith("chat:")), "top traffic");
  const byMembers = await page.locator("#top-members tr td:first-child").allInnerTexts();
  assert.equal(byMembers[0], "news", "the room with the most members first");
  assert.equal(await page.locator("#workers tr").count(), 1);
  // A few seconds of charts for the screenshot.
  await waitFor(async () => (await page.locator("svg.chart polyline").count()) === 5, "five charts");
  await new Promise((r) => setTimeout(r, 12000));
  const points = await page.locator("svg.chart polyline").first().getAttribute("points");
  assert.ok(points.split(" ").length >= 4, points);
  await waitFor(async () => (await page.locator("#closes tr td:first-child").allInnerTexts()).includes("1000"), "closes by code");
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: resolve(SHOTS, "admin.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await page.context().close();
});

test("a wrong key is refused: the page asks again and the stream says 401", { skip, timeout: 30000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  const { page, errors } = await openAdmin();
  await page.fill("#key", "not-the-key");
  await page.click("#unlock button");
  await waitFor(async () => (await page.textContent("#unlock-error")).includes("Wrong key"), "the refusal shown");
  assert.equal(await page.isVisible("#live"), false);
  assert.equal(await page.evaluate(() => sessionStorage.getItem("wsedge-admin-key")), null, "a refused key is not kept");
  const res = await fetch(`${server.http}/api/admin/stream`, { headers: { Authorization: "Bearer not-the-key" } });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, 401);
  assert.equal((await fetch(`${server.http}/api/admin/stream`)).status, 401, "no key at all");
  assert.deepEqual(errors, []);
  await page.context().close();
});

test("names and data that are HTML stay text; the actions work", { skip, timeout: 30000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  const { page, errors } = await openAdmin();
  await page.fill("#key", API_KEY);
  await page.click("#unlock button");
  await waitFor(async () => (await page.getAttribute("#status", "data-state")) === "live", "live");
  const items = () => page.locator("#result-list li").allInnerTexts();
  const title = () => page.textContent("#result-title");

  await page.fill("#room", "hostile");
  await page.click("button[data-action=presence]");
  await waitFor(async () => (await items()).some((i) => i.startsWith(HOSTILE)), "the hostile user, as text");
  await page.click("button[data-action=history]");
  await waitFor(async () => (await items()).some((i) => i.includes(`${HOSTILE}: ${JSON.stringify(HOSTILE)}`)), "the hostile message, as text");

  // A room named like markup: refused by the server, and its name shown as text.
  await page.fill("#room", HOSTILE);
  await page.fill("#data", "hello");
  await page.click("button[data-action=publish]");
  await waitFor(async () => (await title()).startsWith(`publish ${HOSTILE}: room must be`), "the refusal, as text");

  // Publishing reaches the members; disconnecting a user closes its connections.
  await page.fill("#room", "hostile");
  await page.fill("#data", `{"text":"maintenance at 22:00"}`);
  await page.click("button[data-action=publish]");
  await waitFor(async () => (await title()).startsWith("published to hostile at offset 2"), "published");
  await page.click("button[data-action=history]");
  await waitFor(async () => (await items()).some((i) => i.endsWith(`backend: {"text":"maintenance at 22:00"}`)), "in history");
  await waitFor(() => page.isVisible("#user-form"), "the disconnect form: this server has users");
  await page.fill("#user", HOSTILE);
  await page.click("#user-form button");
  await waitFor(async () => (await title()) === `${HOSTILE}: 1 connection(s) closed`, "disconnected");

  assert.equal(await page.locator("main img").count(), 0, "no element made from data");
  assert.equal(await page.evaluate(() => window.__pwned), undefined, "no handler ran");
  assert.deepEqual(errors, []);
  await page.context().close();
});

test("two nodes on one Redis: the page lists both, each with its Redis round trip", { skip, timeout: 60000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  const redis = await startRedis();
  if (redis.missing) return; // said by startRedis; a failure under WSEDGE_REQUIRE_REDIS=1
  const node = (name) => startServer(["--redis", redis.url, "--api-key", API_KEY, "--node-name", name]);
  const [a, b] = await Promise.all([node("edge-a"), node(HOSTILE)]);
  const members = clientPool();
  try {
    for (let i = 0; i < 2; i++) members.make(b.url).join("lobby");
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    await page.goto(`${a.http}/admin`);
    await page.fill("#key", API_KEY);
    await page.click("#unlock button");
    const cells = async () => (await page.locator("#nodes tr").allInnerTexts()).map((row) => row.split("\t"));
    // Both nodes (b, named like markup, sorts first), b's members counted, and a round trip
    // measured for each (from two reports each).
    let seen = [];
    await waitFor(async () => {
      seen = await cells();
      return seen.length === 2 && seen[0][2] === "2" && seen.every((r) => /^\d+\.\d\d ms$/.test(r[7]));
    }, "both nodes with their round trips", 15000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify(seen)}`));
    const rows = await cells();
    assert.deepEqual(rows.map((r) => r[0]), [HOSTILE, "edge-a (this page)"], "by name (\"<\" first); b's shown as text");
    assert.deepEqual(rows.map((r) => r[1]), ["up", "up"]);
    assert.equal(await page.locator("#nodes img").count(), 0, "no element made from a node's name");
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: resolve(SHOTS, "admin-nodes.png"), fullPage: true });
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    members.closeAll();
    await Promise.all([a.kill(), b.kill()]);
    await redis.stop();
  }
});
