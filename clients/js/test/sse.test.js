// The fallback to Server-Sent Events (issue 19): the client over `GET /sse` + `POST
// /publish` joins, receives and publishes with the same API; a stream cut over and over
// by a proxy delivers every offset once, in order; joining and leaving reopens the stream
// where the client is; a restarted server gives a `reset`; a proxy that refuses WebSocket
// upgrades makes the default client fall back by itself, and it goes back to WebSocket on
// the next full reconnect.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { EventStreamParser } from "../src/index.js";
import { clientPool, nextEvent, signToken, startProxy, startServer, waitFor } from "./harness.js";

const SECRET = "wsedge-js-client-sse-test-secret-32b!!";
const API_KEY = "sse-test-api-key";
let server;
const pool = clientPool();
const proxies = [];

before(async () => {
  // History big enough that every resume recovers; no publish rate limit in the way.
  server = await startServer([
    ...["--jwt-secret", SECRET, "--api-key", API_KEY, "--history-size", "5000"],
    ...["--publish-rate", "1000000", "--publish-burst", "1000000"],
  ]);
});
after(async () => {
  pool.closeAll();
  for (const p of proxies) await p.close();
  await server.stop();
});

async function proxy(options) {
  const p = await startProxy(server.port, options);
  proxies.push(p);
  return p;
}

/** A backend API call (POST /api/publish, /api/disconnect): the reply's JSON. */
async function api(path, body) {
  const res = await fetch(`${server.http}${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
  return res.json();
}

const sseClient = (url, options) => pool.make(url, { transports: ["sse"], ...options });

/** Records a room's message offsets and fails on a reset. */
function record(room) {
  const rec = { offsets: [], data: [], resets: 0 };
  room.on("message", (m) => {
    rec.offsets.push(m.offset);
    rec.data.push(m.data);
  });
  room.on("reset", (r) => r.reason === "join" || rec.resets++);
  return rec;
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test("the event-stream parser: CRLF, CR or LF, split anywhere, comments, data on several lines", () => {
  const text = ": keepalive\r\n\r\nid: a~e~1\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent:x\rdata\r\rdata: two\n\n: c\n\n";
  for (let size = 1; size <= text.length; size++) {
    const events = [];
    const parser = new EventStreamParser((e) => events.push(e));
    for (let i = 0; i < text.length; i += size) parser.feed(text.slice(i, i + size));
    assert.deepEqual(
      events,
      [
        { event: "message", data: '{"a":\n1}', id: "a~e~1" },
        { event: "x", data: "", id: null },
        { event: "message", data: "two", id: null },
      ],
      `chunks of ${size}`,
    );
  }
});

test("SSE only: joins, receives what others publish, presence, and the stream's client id", async () => {
  const c = sseClient(server.url);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(c.state, "connecting", "a stream needs a room: none is opened before the first join");
  const room = c.join("sse-basic", { presence: true });
  const rec = record(room);
  await waitFor(() => room.joined, "joined over SSE");
  assert.equal(c.transport, "sse");
  assert.match(c.clientId, /./);

  const other = pool.make(server.url);
  const peer = other.join("sse-basic");
  const seen = nextEvent(room, "presence", 5000, (e) => e.op === "join");
  await waitFor(() => peer.joined, "the WebSocket peer joined");
  assert.equal((await seen).member.client, other.clientId);
  for (let n = 1; n <= 3; n++) await peer.publish({ n });
  await api("/api/publish", { room: "sse-basic", data: { n: 4 } });
  await waitFor(() => rec.offsets.length === 4, "four messages over the stream");
  assert.deepEqual(rec.offsets, [1, 2, 3, 4]);
  assert.deepEqual(rec.data, [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);

  // Over a stream there is no `history` request: it says so instead of hanging.
  await assert.rejects(room.history(), (e) => e.code === 501);
});

test("SSE only: publishes as the stream's member, echo on and off, a repeated key answers the first offset", async () => {
  const c = sseClient(server.url);
  const room = c.join("sse-publish");
  const rec = record(room);
  const watcher = pool.make(server.url);
  const seen = record(watcher.join("sse-publish"));
  await waitFor(() => room.joined && watcher.rooms()[0].joined, "both joined");

  const first = await room.publish({ text: "hello" });
  assert.deepEqual(first, { room: "sse-publish", offset: 1 });
  await waitFor(() => rec.offsets.length === 1 && seen.offsets.length === 1, "the own copy (echo), and the watcher's");
  const fromMsg = await new Promise((res) => {
    const off = watcher.rooms()[0].on("message", (m) => (off(), res(m)));
    room.publish({ text: "quiet" }, { echo: false });
  });
  assert.equal(fromMsg.offset, 2);
  assert.equal(fromMsg.from.client, c.clientId, "published as the stream's member");

  const again = await room.publish({ text: "once" }, { key: "sse-key-1" });
  const dup = await room.publish({ text: "once" }, { key: "sse-key-1" });
  assert.equal(again.offset, 3);
  assert.deepEqual(dup, { room: "sse-publish", offset: 3, duplicate: true });

  await waitFor(() => seen.offsets.length === 3, "the watcher has every message");
  assert.deepEqual(seen.offsets, [1, 2, 3]);
  assert.deepEqual(rec.offsets, [1, 3], "no own copy of the echo: false one, the duplicate not delivered again");

});

test("SSE only: a stream cut over and over while the backend publishes: every offset once, in order", { timeout: 60000 }, async () => {
  const p = await proxy();
  const N = 400;
  const c = sseClient(p.url, { minReconnectDelay: 5, maxReconnectDelay: 50 });
  const room = c.join("sse-cuts");
  const rec = record(room);
  await waitFor(() => room.joined, "joined over SSE");

  let cutting = true;
  const cutter = (async () => {
    while (cutting) {
      await new Promise((r) => setTimeout(r, 30 + Math.random() * 120));
      if (cutting) p.cutAll();
    }
  })();
  for (let n = 1; n <= N; n++) {
    await api("/api/publish", { room: "sse-cuts", data: { n } });
    if (n % 40 === 0) await new Promise((r) => setTimeout(r, 20));
  }
  cutting = false;
  await cutter;
  await waitFor(() => rec.offsets.length >= N, `all ${N} messages (have ${rec.offsets.length})`, 20000);
  assert.deepEqual(rec.offsets, range(1, N), "every offset once, in order");
  assert.equal(rec.resets, 0, "every resume recovered");
  assert.ok(p.cuts >= 5, `the proxy cut the stream (${p.cuts} cuts)`);
  console.log(`sse: ${N} messages through ${p.cuts} cuts, ${c.stats.connects} streams`);
});

test("SSE only: the client's own publishes through cuts: each once, every offset once, in order", { timeout: 60000 }, async () => {
  const p = await proxy();
  const N = 200;
  const c = sseClient(p.url, { minReconnectDelay: 5, maxReconnectDelay: 50, publishRate: 0 });
  const room = c.join("sse-cut-publish");
  const rec = record(room);
  const watcher = pool.make(server.url);
  const seen = record(watcher.join("sse-cut-publish"));
  await waitFor(() => room.joined && watcher.rooms()[0].joined, "both joined");

  let cutting = true;
  const cutter = (async () => {
    while (cutting) {
      await new Promise((r) => setTimeout(r, 40 + Math.random() * 150));
      if (cutting) p.cutAll();
    }
  })();
  const replies = await Promise.all(range(1, N).map((n) => room.publish({ n })));
  cutting = false;
  await cutter;
  await waitFor(() => seen.offsets.length >= N && rec.offsets.length >= N, () => `every message on both sides (watcher ${seen.offsets.length}, publisher ${rec.offsets.length}, ${c.state})`, 20000);
  assert.deepEqual(seen.offsets, range(1, N), "the watcher: every offset once, in order");
  assert.deepEqual(seen.data.map((d) => d.n), range(1, N), "each publish once, in order");
  assert.deepEqual(rec.offsets, range(1, N), "the publisher's own copies: every offset once, in order");
  assert.deepEqual(replies.map((r) => r.offset), range(1, N), "each promise has its message's offset");
  console.log(`sse: ${N} publishes through ${p.cuts} cuts, ${c.stats.resent} sent again, ${c.stats.settledByMessage} settled by their message`);
});

test("SSE only: joining and leaving reopens the stream where the client is, nothing lost or repeated", { timeout: 30000 }, async () => {
  const c = sseClient(server.url);
  const a = c.join("sse-set-a");
  const rec = record(a);
  await waitFor(() => a.joined, "a joined");
  let n = 0;
  let flowing = true;
  const flow = (async () => {
    while (flowing) {
      await api("/api/publish", { room: "sse-set-a", data: { n: ++n } });
      await new Promise((r) => setTimeout(r, 3));
    }
  })();
  const streams = () => c.clientId;
  const before = streams();
  const b = c.join("sse-set-b");
  const recB = record(b);
  await waitFor(() => b.joined, "b joined on a new stream");
  assert.notEqual(streams(), before, "a new stream");
  await api("/api/publish", { room: "sse-set-b", data: "to b" });
  await waitFor(() => recB.offsets.length === 1, "b's message");
  await b.leave();
  await new Promise((r) => setTimeout(r, 100));
  const c2 = c.join("sse-set-c", { presence: true });
  await waitFor(() => c2.joined, "c joined with presence");
  flowing = false;
  await flow;
  await waitFor(() => rec.offsets.length === n, `all ${n} of a's messages`);
  assert.deepEqual(rec.offsets, range(1, n), "a: every offset once, in order, across three new streams");
  assert.equal(c.state, "connected", "a new room set is no disconnect");
  await api("/api/publish", { room: "sse-set-b", data: "after leaving" });
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(recB.offsets, [1], "nothing from a room left");
});

test("upgrades refused: the default client falls back to SSE, chats, and returns to WebSocket on the next full reconnect", { timeout: 30000 }, async () => {
  const p = await proxy();
  const c = pool.make(p.url);
  const room = c.join("sse-fallback");
  const rec = record(room);
  const peer = pool.make(server.url);
  const peerRoom = peer.join("sse-fallback");
  const peerRec = record(peerRoom);
  await waitFor(() => room.joined && peerRoom.joined, "both joined");
  assert.equal(c.transport, "websocket");
  await peerRoom.publish("on a socket");
  await waitFor(() => rec.offsets.length === 1, "the first message");

  // A proxy starts refusing upgrades and the socket is cut: two refusals, then a stream,
  // which resumes the room where the socket left it.
  p.refuseUpgrades(true);
  p.cutAll();
  await peerRoom.publish("during the switch");
  await waitFor(() => c.transport === "sse" && room.joined, "on SSE");
  assert.equal(p.upgradesRefused, 2, "fallbackAfter: 2 refused upgrades, then SSE");

  await room.publish("from the fallback");
  await peerRoom.publish("from a socket");
  await waitFor(() => rec.offsets.length === 4 && peerRec.offsets.length === 4, "every message on both sides");
  assert.deepEqual(rec.data, ["on a socket", "during the switch", "from the fallback", "from a socket"]);
  assert.deepEqual(peerRec.data, rec.data);

  // Upgrades pass again; the stream is cut: the next full reconnect is a WebSocket, which
  // resumes the room where the stream left it.
  p.refuseUpgrades(false);
  p.cutAll();
  await peerRoom.publish("while switching back");
  await waitFor(() => c.transport === "websocket" && room.joined, "back on a WebSocket");
  await peerRoom.publish("on the socket again");
  await waitFor(() => rec.offsets.length === 6, "every message");
  assert.deepEqual(rec.offsets, range(1, 6), "every offset once, in order, across both switches");
  assert.equal(rec.resets, 0);
});

test('transports: ["websocket"] never falls back', { timeout: 10000 }, async () => {
  const p = await proxy({ refuseUpgrades: true });
  const c = pool.make(p.url, { transports: ["websocket"] });
  c.join("sse-never");
  await waitFor(() => p.upgradesRefused >= 4, "four refused upgrades");
  assert.notEqual(c.state, "connected");
  assert.notEqual(c.transport, "sse");
  c.close();
  assert.throws(() => pool.make(server.url, { transports: ["carrier-pigeon"] }), TypeError);
});

test("SSE: a token in the query, and a disconnect by the backend stops the client (kicked)", { timeout: 10000 }, async () => {
  const c = sseClient(server.url, { token: signToken(SECRET, { sub: "sse-ann" }) });
  const room = c.join("sse-kick");
  await waitFor(() => room.joined, "joined");
  assert.equal(c.user, "sse-ann");
  const kicked = nextEvent(c, "kicked", 5000);
  await api("/api/disconnect", { user: "sse-ann" });
  assert.equal((await kicked).code, 4001);
  assert.equal(c.state, "disconnected");
  await assert.rejects(c.ready(), (e) => e.code === "stopped");
});

test("SSE only: a restarted server (new epoch): the resumed stream says reset, with no messages, and delivery goes on", { timeout: 30000 }, async () => {
  let own = await startServer(["--api-key", API_KEY]);
  const port = own.port;
  try {
    const c = sseClient(own.url, { minReconnectDelay: 5, maxReconnectDelay: 50 });
    const room = c.join("sse-restart");
    const rec = record(room);
    const resets = [];
    room.on("reset", (r) => resets.push(r));
    await waitFor(() => room.joined, "joined");
    const publish = (data) =>
      fetch(`${own.http}/api/publish`, { method: "POST", headers: { Authorization: `Bearer ${API_KEY}` }, body: JSON.stringify({ room: "sse-restart", data }) });
    await publish("before");
    await waitFor(() => rec.offsets.length === 1, "the first message");
    const epoch = room.epoch;
    await own.kill();
    own = await startServer(["--api-key", API_KEY], { port });
    await waitFor(() => resets.length === 1 && room.joined, "a reset after the restart");
    assert.equal(resets[0].reason, "not recovered");
    assert.equal(resets[0].previousEpoch, epoch);
    assert.notEqual(room.epoch, epoch, "the new epoch");
    assert.deepEqual(resets[0].messages, [], "no history over a stream");
    await publish("after");
    await waitFor(() => rec.offsets.length === 2, "a message after the reset");
    assert.deepEqual(rec.data, ["before", "after"]);
    assert.equal(c.transport, "sse");
  } finally {
    await own.kill();
  }
});

test("SSE only: over the server's publish rate (429) publishes pause and go again, each once", { timeout: 30000 }, async () => {
  const own = await startServer(["--publish-rate", "10", "--publish-burst", "5"]);
  try {
    const c = sseClient(own.url, { publishRate: 0 }); // no client-side pacing: meet the server's limit
    const room = c.join("sse-429");
    const rec = record(room);
    await waitFor(() => room.joined, "joined");
    const replies = await Promise.all(range(1, 12).map((n) => room.publish({ n })));
    assert.ok(c.stats.retried429 > 0, "some were refused with 429 and sent again");
    assert.deepEqual(replies.map((r) => r.offset).sort((a, b) => a - b), range(1, 12), "each published once");
    await waitFor(() => rec.offsets.length === 12, "every message");
    assert.deepEqual(rec.data.map((d) => d.n).sort((a, b) => a - b), range(1, 12));
  } finally {
    await own.kill();
  }
});

test("on SSE, a WebSocket probe that gets through takes the client back to WebSocket without a cut", { timeout: 30000 }, async () => {
  const p = await proxy({ refuseUpgrades: true });
  const c = pool.make(p.url, { probeInterval: 150 });
  const room = c.join("sse-probe");
  const rec = record(room);
  await waitFor(() => c.transport === "sse" && room.joined, "on SSE");
  let n = 0;
  let flowing = true;
  const flow = (async () => {
    while (flowing) {
      await api("/api/publish", { room: "sse-probe", data: { n: ++n } });
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await waitFor(() => p.upgradesRefused >= 4, "probes refused meanwhile");
  assert.equal(c.transport, "sse", "a refused probe changes nothing");
  p.refuseUpgrades(false);
  await waitFor(() => c.transport === "websocket" && room.joined, "back on a WebSocket");
  assert.equal(p.cuts, 0, "no cut: the probe did it");
  flowing = false;
  await flow;
  await waitFor(() => rec.offsets.length === n, `all ${n} messages`);
  assert.deepEqual(rec.offsets, range(1, n), "every offset once, in order, across the switch");
});
