// Reconnect: backoff bounds, recovery with `since` across drops, a restarted server (new
// epoch -> reset), the offline queue, dead-link detection, the `online` event.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { backoffDelay, newKey, tokenExpiry } from "../src/index.js";
import { clientPool, nextEvent, startProxy, startServer, waitFor } from "./harness.js";

let server;
let proxy;
const pool = clientPool();
const client = (url, opts) => pool.make(url, opts);

before(async () => {
  server = await startServer();
  proxy = await startProxy(server.port);
});
after(async () => {
  pool.closeAll();
  await proxy.close();
  await server.stop();
});

test("backoff: full jitter within [0, min(cap, base * 2^n)]", () => {
  for (let n = 0; n < 40; n++) {
    const ceiling = Math.min(30000, 500 * 2 ** n);
    assert.equal(backoffDelay(n, 500, 30000, () => 0), 0);
    assert.ok(Math.abs(backoffDelay(n, 500, 30000, () => 0.999999) - ceiling) < 1);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(n, 500, 30000);
      assert.ok(d >= 0 && d <= ceiling, `attempt ${n}: ${d} outside [0, ${ceiling}]`);
    }
  }
  assert.equal(backoffDelay(0, 500, 30000, () => 0.5), 250);
  assert.equal(backoffDelay(3, 500, 30000, () => 0.5), 2000);
  assert.equal(backoffDelay(1e9, 500, 30000, () => 1), 30000, "no overflow for huge attempts");
});

test("tokenExpiry reads exp without verifying; newKey is 22 url-safe chars", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "ünï", exp: 1234567890 })).toString("base64url");
  assert.equal(tokenExpiry(`x.${payload}.y`), 1234567890);
  assert.equal(tokenExpiry("garbage"), null);
  assert.equal(tokenExpiry(`x.${Buffer.from("{}").toString("base64url")}.y`), null);
  const keys = new Set(Array.from({ length: 100 }, newKey));
  assert.equal(keys.size, 100);
  for (const k of keys) assert.match(k, /^[A-Za-z0-9_-]{22}$/);
});

test("a dropped connection rejoins with since: missed messages once, in order, no reset", async () => {
  const sub = client(proxy.url);
  const pub = client(server.url);
  const rs = sub.join("re-since");
  const rp = pub.join("re-since");
  await Promise.all([nextEvent(rs, "joined"), nextEvent(rp, "joined")]);
  const got = [];
  rs.on("message", (m) => got.push(m.offset));
  const resets = [];
  rs.on("reset", (r) => resets.push(r));
  for (let i = 0; i < 3; i++) await rp.publish(i);
  await waitFor(() => got.length === 3, "3 live messages");
  proxy.pause();
  proxy.cutAll();
  await waitFor(() => sub.state !== "connected", "the drop noticed");
  for (let i = 3; i < 8; i++) await rp.publish(i);
  proxy.resume();
  const joined = await nextEvent(rs, "joined");
  assert.equal(joined.recovered, true);
  await waitFor(() => got.length === 8, "the missed messages");
  for (let i = 8; i < 10; i++) await rp.publish(i);
  await waitFor(() => got.length === 10, "live after the rejoin");
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(resets.length, 0);
});

test("offline publishes: bounded queue, flushed in order after the rejoin", async () => {
  const c = client(proxy.url, { maxQueue: 5 });
  const room = c.join("re-queue");
  await nextEvent(room, "joined");
  const seen = [];
  room.on("message", (m) => seen.push(m.data));
  proxy.pause();
  proxy.cutAll();
  await waitFor(() => c.state !== "connected", "offline");
  const queued = [1, 2, 3, 4, 5].map((n) => room.publish(n));
  await assert.rejects(room.publish(6), (e) => e.code === "queue_full" && /queue full/.test(e.message));
  assert.equal(c.state === "connected", false);
  proxy.resume();
  const offsets = (await Promise.all(queued)).map((r) => r.offset);
  assert.deepEqual(offsets, [1, 2, 3, 4, 5]);
  await waitFor(() => seen.length === 5, "echoes");
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  assert.deepEqual((await room.history()).messages.map((m) => m.data), [1, 2, 3, 4, 5]);
});

test("a publish whose reply was lost is sent again with its key and published once", async () => {
  const c = client(proxy.url, { minReconnectDelay: 5, maxReconnectDelay: 50 });
  const watcher = client(server.url);
  const room = c.join("re-idem");
  const seen = [];
  const wr = watcher.join("re-idem");
  wr.on("message", (m) => seen.push(m.data));
  await Promise.all([nextEvent(room, "joined"), nextEvent(wr, "joined")]);
  proxy.deafen(); // the publish reaches the server; its reply does not come back
  const published = room.publish({ once: true });
  await waitFor(() => seen.length === 1, "the server published it");
  proxy.cutAll();
  // After the rejoin the client finds its message in `missed`, or sends it again with the
  // same key and the server answers `duplicate`: either way one message, offset 1.
  const reply = await published;
  assert.equal(reply.offset, 1);
  assert.deepEqual((await wr.history()).messages.map((m) => m.data), [{ once: true }], "published once");
  assert.deepEqual(seen, [{ once: true }]);
});

test("dead link (no traffic, socket still open): ping, no reply, reconnect", async () => {
  const c = client(proxy.url, { idleTimeout: 300, pingTimeout: 300 });
  const room = c.join("re-dead");
  await nextEvent(room, "joined");
  const before = proxy.connections;
  proxy.freeze();
  const st = await nextEvent(c, "state", 10000, (s) => s === "disconnected");
  assert.equal(st[1].reason, "no reply to ping");
  await waitFor(() => c.state === "connected", "reconnected");
  assert.ok(proxy.connections > before);
  assert.equal((await room.publish("alive")).offset, 1);
  proxy.cutAll(); // the frozen pair
});

test("the online event reconnects at once, not after the backoff", async (t) => {
  // Node has no window: give globalThis the browser's addEventListener for this test.
  const win = new EventTarget();
  globalThis.addEventListener = win.addEventListener.bind(win);
  globalThis.removeEventListener = win.removeEventListener.bind(win);
  t.after(() => {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  });
  const c = client(proxy.url, { minReconnectDelay: 60000, maxReconnectDelay: 60000, random: () => 1 });
  await c.ready();
  const drop = nextEvent(c, "state", 10000, (s) => s === "disconnected");
  proxy.cutAll();
  assert.equal((await drop)[1].retryIn, 60000);
  // The first retry waits up to a minute; the browser's `online` event cuts it short.
  await waitFor(() => c.state === "disconnected", "the drop noticed");
  if (c.state === "disconnected") win.dispatchEvent(new Event("online"));
  await waitFor(() => c.state === "connected", "reconnected on online", 10000);
});

test("server restarted: a new epoch -> reset from history, then live messages continue", async () => {
  const own = await startServer();
  const port = own.port;
  const a = client(own.url);
  const b = client(own.url);
  const ra = a.join("re-restart");
  const rb = b.join("re-restart", { presence: true });
  await Promise.all([nextEvent(ra, "joined"), nextEvent(rb, "members")]);
  const got = [];
  rb.on("message", (m) => got.push(m.offset));
  for (let i = 0; i < 3; i++) await ra.publish(i);
  await waitFor(() => got.length === 3, "3 messages");
  const oldEpoch = rb.epoch;
  await own.kill();
  await waitFor(() => a.state !== "connected" && b.state !== "connected", "both notice");
  // Publishes while the server is down wait in the queue.
  const queued = ra.publish("after restart");
  const restarted = await startServer([], { port });
  try {
    const reset = await nextEvent(rb, "reset");
    assert.equal(reset.reason, "not recovered");
    assert.equal(reset.previousEpoch, oldEpoch);
    assert.notEqual(reset.epoch, oldEpoch);
    assert.equal(rb.epoch, reset.epoch);
    assert.equal((await queued).offset >= 1, true);
    await waitFor(() => rb.members().length === 2, "presence after the restart");
    const next = nextEvent(rb, "message", 20000, (m) => m.data === "live");
    const r = await ra.publish("live");
    assert.equal((await next).offset, r.offset);
  } finally {
    a.close();
    b.close();
    await restarted.stop();
  }
});

test("backoff grows while connects fail, capped, and resets after a connection that stayed up", async () => {
  const c = client(proxy.url, { minReconnectDelay: 40, maxReconnectDelay: 300, stableAfter: 400, random: () => 1 });
  await c.ready();
  const delays = [];
  c.on("state", (s, d) => s === "disconnected" && delays.push(d.retryIn));
  proxy.pause(); // connects fail: accepted and closed at once
  proxy.cutAll();
  await waitFor(() => delays.length >= 6, "6 failed attempts");
  assert.deepEqual(delays.slice(0, 6), [40, 80, 160, 300, 300, 300]);
  proxy.resume();
  await waitFor(() => c.state === "connected", "reconnected");
  const upAt = Date.now();
  await waitFor(() => Date.now() - upAt > 500, "the connection stays up past stableAfter");
  delays.length = 0;
  proxy.cutAll();
  await waitFor(() => delays.length >= 1, "the drop");
  assert.equal(delays[0], 40, "a stable connection resets the backoff");
});

test("a server that accepts and never answers: connect timeout, then backoff", async () => {
  const held = [];
  const { createServer } = await import("node:net");
  const silent = createServer((s) => held.push(s));
  await new Promise((res) => silent.listen(0, "127.0.0.1", res));
  try {
    const c = client(`ws://127.0.0.1:${silent.address().port}/ws`, { connectTimeout: 300 });
    const st = await nextEvent(c, "state", 10000, (s) => s === "disconnected");
    assert.equal(st[1].reason, "connect timeout");
    assert.ok(st[1].retryIn >= 0);
    c.close();
  } finally {
    for (const s of held) s.destroy();
    await new Promise((res) => silent.close(res));
  }
});
