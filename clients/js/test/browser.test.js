// The demo served by `wsedge serve` at `/`, in headless Chromium (Debian's `chromium`, driven
// by playwright-core): two pages chat and see each other in presence and typing, a third
// gets the history on join and moves to another room with the picker; the server
// is killed and started again on the same port, and both pages reconnect by themselves,
// show the reset ("history reloaded") and keep chatting, a message typed while offline
// included. Screenshots go to target/demo/ (the README's docs/demo.png is one of them,
// after-restart-ada.png). Without a Chromium the test skips, unless WSEDGE_REQUIRE_BROWSER=1
// (CI), where that is a failure.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { findBrowser, startServer, waitFor } from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const SHOTS = resolve(here, "../../../target/demo");
const ROOM = "browser-demo";

const { CHROMIUM, playwright, missing, skip } = await findBrowser();

let server;
let browser;

before(async () => {
  if (missing) return;
  server = await startServer();
  browser = await playwright.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await server?.kill();
});

/** A page of the demo in its own browser context (its own storage: another person). */
async function openDemo(name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 600 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  await page.goto(`${server.http}/?room=${ROOM}&name=${name}`);
  return { page, name, errors };
}

const status = (p) => p.page.getAttribute("#status", "data-state");
const text = (p, selector) => p.page.locator(selector).allInnerTexts();
const logHas = async (p, what) => (await text(p, "#log .msg:not(.pending) span")).includes(what);
const membersOf = async (p) => (await text(p, "#members li")).map((m) => m.replace(/ \(you\)$/, ""));

async function say(p, message) {
  await p.page.locator("#message-input").fill(message);
  await p.page.locator("#composer button").click();
}

/**
 * Types into `p`'s input a key at a time until `other` shows `p` typing. Like a person: the
 * client sends `typing` at most once per 2 s, so right after a message (which ends the
 * indicator on the other side) it may take a few keys.
 */
async function typeUntilShown(p, other, keys) {
  const input = p.page.locator("#message-input");
  const shown = async () => (await text(other, "#typing"))[0] === `${p.name} is typing…`;
  await waitFor(async () => {
    if (await shown()) return true;
    await input.press(keys[(await input.inputValue()).length % keys.length]);
    await new Promise((r) => setTimeout(r, 100));
    return shown();
  }, `${p.name} typing, on ${other.name}'s page`);
}

function shoot(p, file) {
  mkdirSync(SHOTS, { recursive: true });
  return p.page.screenshot({ path: resolve(SHOTS, file) });
}

test("two pages chat, see presence and typing, and heal after a server restart", { skip, timeout: 120000 }, async () => {
  if (missing) assert.fail(`${missing}; WSEDGE_REQUIRE_BROWSER=1 makes that a failure`);
  const ada = await openDemo("ada");
  const grace = await openDemo("grace");
  for (const p of [ada, grace]) await waitFor(async () => (await status(p)) === "connected", `${p.name} connected`);

  // Presence: each page lists both members, by name (names travel as ephemeral `hello`s).
  for (const p of [ada, grace]) {
    await waitFor(async () => (await membersOf(p)).sort().join() === "ada,grace", `${p.name}'s member list`);
  }

  // Typing shows on the other page, and goes away with the message.
  await typeUntilShown(ada, grace, "hello gr");
  await ada.page.locator("#message-input").fill("");
  await say(ada, "hello grace");
  await say(grace, "hi ada, from the other tab");
  for (const p of [ada, grace]) {
    await waitFor(() => logHas(p, "hello grace"), `ada's message on ${p.name}'s page`);
    await waitFor(() => logHas(p, "hi ada, from the other tab"), `grace's message on ${p.name}'s page`);
  }
  await waitFor(async () => (await text(grace, "#typing"))[0] === "", "ada's typing ended by her message");
  await shoot(ada, "chat-ada.png");
  await shoot(grace, "chat-grace.png");

  // A late joiner gets the history on join; the room picker takes it elsewhere, and the
  // others see it come and go.
  const linus = await openDemo("linus");
  await waitFor(async () => (await logHas(linus, "hello grace")) && (await logHas(linus, "hi ada, from the other tab")), "history on join");
  await waitFor(async () => (await membersOf(ada)).sort().join() === "ada,grace,linus", "linus in ada's member list");
  await linus.page.locator('#rooms button[data-room="lobby"]').click();
  await waitFor(async () => (await text(linus, "#room-title"))[0] === "# lobby", "linus in the lobby");
  await waitFor(async () => (await membersOf(linus)).join() === "linus", "the lobby's member list");
  assert.equal((await text(linus, "#log .msg")).length, 0, "the lobby has no messages");
  await waitFor(async () => (await membersOf(ada)).sort().join() === "ada,grace", "linus gone from ada's member list");
  assert.deepEqual(linus.errors, []);
  await linus.page.context().close();

  // The server dies (SIGKILL: no close frames) and both pages say so.
  const port = server.port;
  await server.kill();
  for (const p of [ada, grace]) await waitFor(async () => (await status(p)) === "reconnecting", `${p.name} reconnecting`);
  assert.ok(await ada.page.locator("#banner").isVisible(), "the reconnecting banner shows");
  await say(ada, "typed while the server was down"); // waits in the client's queue
  assert.deepEqual(await text(ada, "#log .pending span"), ["typed while the server was down"]);
  await shoot(ada, "reconnecting.png");

  // Back on the same port: a new process, so a new epoch: not recovered -> `reset`.
  const up = Date.now();
  server = await startServer([], { port });
  for (const p of [ada, grace]) await waitFor(async () => (await status(p)) === "connected", `${p.name} reconnected`);
  const reconnectMs = Date.now() - up;
  for (const p of [ada, grace]) {
    await waitFor(
      async () => (await text(p, "#log .notice.reset")).some((t) => t.startsWith("history reloaded")),
      `"history reloaded" on ${p.name}'s page`,
    );
    assert.equal(await p.page.evaluate(() => window.wsedgeDemo.client.stats.resets), 1, `${p.name}: one reset`);
  }

  // And the chat goes on: the queued message went out after the rejoin, new ones flow.
  for (const p of [ada, grace]) await waitFor(() => logHas(p, "typed while the server was down"), `the queued message on ${p.name}'s page`);
  await say(grace, "welcome back");
  await waitFor(() => logHas(ada, "welcome back"), "grace's message after the restart, on ada's page");
  for (const p of [ada, grace]) {
    await waitFor(async () => (await membersOf(p)).sort().join() === "ada,grace", `${p.name}'s member list after the restart`);
  }
  await typeUntilShown(grace, ada, "one more");
  await shoot(ada, "after-restart-ada.png");
  await shoot(grace, "after-restart-grace.png");

  for (const p of [ada, grace]) assert.deepEqual(p.errors, [], `no uncaught errors on ${p.name}'s page`);
  const outages = [];
  for (const p of [ada, grace]) outages.push(`${p.name} ${await p.page.locator('[data-stat="last outage"]').innerText()}`);
  console.log(
    `browser: both pages reconnected within ${reconnectMs} ms of the server being back (outage as each page saw it: ${outages.join(", ")}); screenshots in ${SHOTS}`,
  );
});
