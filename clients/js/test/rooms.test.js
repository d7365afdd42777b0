// The room protocol through the client against a real server: welcome, join, publish,
// messages, presence, history, typing, ephemeral messages, leave, server errors.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WsedgeError } from "../src/index.js";
import { clientPool, nextEvent, startServer, waitFor } from "./harness.js";

let server;
const pool = clientPool();
const client = (opts) => pool.make(server.url, opts);

before(async () => {
  server = await startServer();
});
after(async () => {
  pool.closeAll();
  await server.stop();
});

test("connects: state events, welcome with a client id", async () => {
  const c = client();
  const states = [];
  const off = c.on("state", (s) => states.push(s));
  const welcome = await nextEvent(c, "welcome");
  await c.ready();
  assert.equal(c.state, "connected");
  assert.match(welcome.client, /.+/);
  assert.equal(c.clientId, welcome.client);
  assert.equal(welcome.user, null);
  assert.deepEqual(states, ["connecting", "connected"]);
  off();
  assert.ok((await c.ping()) >= 0);
});

test("join, publish, message: the reply's offset, every member gets it in order", async () => {
  const a = client();
  const b = client();
  const ra = a.join("rooms-pub");
  const rb = b.join("rooms-pub");
  await Promise.all([nextEvent(ra, "joined"), nextEvent(rb, "joined")]);
  const got = { a: [], b: [] };
  ra.on("message", (m) => got.a.push(m));
  rb.on("message", (m) => got.b.push(m));
  const replies = [];
  for (let i = 1; i <= 5; i++) replies.push(await ra.publish({ text: `hi ${i}` }));
  assert.deepEqual(replies.map((r) => r.offset), [1, 2, 3, 4, 5]);
  await waitFor(() => got.b.length === 5, "b's 5 messages");
  for (const list of [got.a, got.b]) {
    assert.deepEqual(list.map((m) => m.offset), [1, 2, 3, 4, 5]);
    assert.deepEqual(list.map((m) => m.data.text), ["hi 1", "hi 2", "hi 3", "hi 4", "hi 5"]);
    assert.equal(list[0].from.client, a.clientId);
  }
  assert.equal(rb.offset, 5);
  // echo: false -> no own copy, the offset still comes back
  const r = await ra.publish("quiet", { echo: false });
  assert.equal(r.offset, 6);
  await waitFor(() => got.b.length === 6, "b's 6th message");
  assert.equal(got.a.length, 5);
});

test("publish before the connection is up waits and goes out after the join", async () => {
  const c = client();
  const room = c.join("rooms-early");
  const seen = [];
  room.on("message", (m) => seen.push(m.data));
  const p = [room.publish(1), room.publish(2), room.publish(3)];
  assert.equal(c.state, "disconnected");
  const offsets = (await Promise.all(p)).map((r) => r.offset);
  assert.deepEqual(offsets, [1, 2, 3]);
  await waitFor(() => seen.length === 3, "3 echoes");
  assert.deepEqual(seen, [1, 2, 3]);
});

test("a queue beyond the server's burst (200) is paced, not refused with 429", async () => {
  const c = client({ autoConnect: false });
  const room = c.join("rooms-paced");
  const queued = Array.from({ length: 320 }, (_, n) => room.publish(n));
  c.connect();
  const offsets = (await Promise.all(queued)).map((r) => r.offset);
  assert.deepEqual(offsets, Array.from({ length: 320 }, (_, n) => n + 1));
  assert.equal(c.stats.retried429, 0);
  // Without the client's limit the server refuses what is over its burst: sent again later.
  const fast = client({ publishRate: 0 });
  const fr = fast.join("rooms-unpaced");
  await nextEvent(fr, "joined");
  const results = await Promise.all(Array.from({ length: 300 }, (_, n) => fr.publish(n)));
  assert.equal(new Set(results.map((r) => r.offset)).size, 300);
  assert.ok(fast.stats.retried429 > 0, "the server refused a burst over 200");
});

test("presence: join/leave events and members()", async () => {
  const a = client();
  const ra = a.join("rooms-presence", { presence: true });
  await nextEvent(ra, "members");
  await a.ready();
  assert.deepEqual(ra.members().map((m) => m.client), [a.clientId]);
  const events = [];
  ra.on("presence", (e) => events.push(e));
  const b = client();
  const rb = b.join("rooms-presence", { presence: true });
  await nextEvent(rb, "members");
  await waitFor(() => ra.members().length === 2, "a sees b");
  assert.deepEqual(new Set(rb.members().map((m) => m.client)), new Set([a.clientId, b.clientId]));
  assert.equal(events[0].op, "join");
  assert.equal(events[0].member.client, b.clientId);
  await rb.leave();
  await waitFor(() => ra.members().length === 1, "a sees b leave");
  assert.equal(events.at(-1).op, "leave");
  assert.deepEqual(await ra.fetchMembers(), [{ client: a.clientId, user: null }]);
});

test("history: the last messages, with epoch and offset; {history: N} on join gives a reset", async () => {
  const a = client();
  const ra = a.join("rooms-history");
  for (let i = 1; i <= 4; i++) await ra.publish({ n: i });
  const h = await ra.history({ limit: 2 });
  assert.equal(h.offset, 4);
  assert.equal(typeof h.epoch, "string");
  assert.deepEqual(h.messages.map((m) => m.data.n), [3, 4]);
  const b = client();
  const rb = b.join("rooms-history", { history: 3 });
  const reset = await nextEvent(rb, "reset");
  assert.equal(reset.reason, "join");
  assert.equal(reset.epoch, h.epoch);
  assert.deepEqual(reset.messages.map((m) => m.offset), [2, 3, 4]);
  const next = nextEvent(rb, "message");
  await ra.publish({ n: 5 });
  assert.equal((await next).offset, 5);
});

test("typing: ephemeral, throttled, expires by itself; ephemeral publishes have no offset", async () => {
  const a = client({ typingInterval: 200, typingTimeout: 300 });
  const b = client({ typingInterval: 200, typingTimeout: 300 });
  const ra = a.join("rooms-typing");
  const rb = b.join("rooms-typing");
  await Promise.all([nextEvent(ra, "joined"), nextEvent(rb, "joined")]);
  await waitFor(() => ra.joined && rb.joined, "both joined");
  const typing = [];
  rb.on("typing", (e) => typing.push(e));
  const messages = [];
  rb.on("message", (m) => messages.push(m));
  assert.equal(ra.typing(), true);
  assert.equal(ra.typing(), false, "throttled");
  await waitFor(() => typing.length === 1, "b sees a typing");
  assert.equal(typing[0].typing, true);
  assert.equal(typing[0].member.client, a.clientId);
  assert.deepEqual(rb.typers().map((m) => m.client), [a.clientId]);
  await waitFor(() => typing.length === 2, "the indicator expires");
  assert.equal(typing[1].typing, false);
  assert.equal(rb.typers().length, 0);
  const eph = nextEvent(rb, "ephemeral");
  const r = await ra.publish({ cursor: [1, 2] }, { ephemeral: true });
  assert.equal(r.offset, undefined);
  assert.deepEqual((await eph).data, { cursor: [1, 2] });
  assert.equal(messages.length, 0, "typing and ephemeral messages are not 'message' events");
  assert.equal(rb.offset, 0);
});

test("server errors reject with the server's code; the room keeps working", async () => {
  const c = client();
  const room = c.join("rooms-errors");
  await nextEvent(room, "joined");
  await assert.rejects(room.publish("x".repeat(70000)), (e) => e instanceof WsedgeError && e.code === 413);
  assert.equal((await room.publish("ok")).offset, 1);
  const bad = c.join("bad name!");
  const err = await nextEvent(bad, "error");
  assert.equal(err.code, 400);
  assert.equal(bad.left, true);
  await assert.rejects(bad.publish(1), (e) => e.code === "left");
  assert.ok(!c.rooms().includes(bad));
});

test("leave: the server forgets us, queued publishes reject, close() rejects the rest", async () => {
  const c = client();
  const room = c.join("rooms-leave", { presence: true });
  await nextEvent(room, "members");
  await room.leave();
  await assert.rejects(room.publish(1), (e) => e.code === "left");
  const other = client();
  const ro = other.join("rooms-leave");
  await nextEvent(ro, "joined");
  assert.deepEqual((await ro.fetchMembers()).map((m) => m.client), [other.clientId]);
  const r2 = c.join("rooms-leave-2");
  c.close();
  assert.equal(c.state, "disconnected");
  await assert.rejects(r2.publish(1), (e) => e.code === "stopped" || e.code === "closed");
});

test("leave while the join is on its way: the server does not keep us", async () => {
  const c = client();
  await c.ready();
  const room = c.join("rooms-leave-early");
  await room.leave(); // before the join reply
  const other = client();
  const ro = other.join("rooms-leave-early");
  await nextEvent(ro, "joined");
  await waitFor(async () => (await ro.fetchMembers()).length === 1, "only the other member left");
  assert.equal(c.rooms().length, 0);
});
