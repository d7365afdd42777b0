// The exactly-once property under fire: 1,000 publishes from one client while a proxy cuts
// connections at random points (mid-frame, either direction, and whole connections at
// random times). At the end every subscriber has every offset exactly once, in order, and
// every publish exactly once.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { clientPool, startProxy, startServer, waitFor } from "./harness.js";

const N = 1000;
let server;
let proxy;
const pool = clientPool();

before(async () => {
  // History big enough that every rejoin recovers; no publish rate limit in the way.
  server = await startServer(["--history-size", "5000", "--publish-rate", "1000000", "--publish-burst", "1000000"]);
  proxy = await startProxy(server.port);
});
after(async () => {
  pool.closeAll();
  await proxy.close();
  await server.stop();
});

/** A subscriber that records what its room delivers and fails loudly on a gap or a reset. */
function subscriber(url, name) {
  const c = pool.make(url, { minReconnectDelay: 5, maxReconnectDelay: 100, requestTimeout: 5000, publishRate: 0 });
  const room = c.join("chaos");
  const rec = { name, client: c, room, offsets: [], data: [], resets: 0, rejoins: 0, errors: [] };
  room.on("message", (m) => {
    rec.offsets.push(m.offset);
    rec.data.push(m.data.n);
  });
  room.on("reset", () => rec.resets++);
  room.on("joined", (j) => j.first || rec.rejoins++);
  c.on("error", (e) => rec.errors.push(e.message));
  return rec;
}

test(`${N} publishes through a proxy that cuts connections: every offset exactly once, in order`, { timeout: 110000 }, async (t) => {
  const subs = [subscriber(proxy.url, "proxied-1"), subscriber(proxy.url, "proxied-2"), subscriber(server.url, "direct")];
  const pub = subscriber(proxy.url, "publisher");
  await waitFor(() => [...subs, pub].every((s) => s.room.joined), "everyone joined");

  proxy.chaos(300, 40000);
  let cutting = true;
  const cutter = (async () => {
    while (cutting) {
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 150));
      if (cutting) proxy.cutOne();
    }
  })();

  const t0 = Date.now();
  const replies = new Array(N);
  const inflight = new Set();
  for (let n = 0; n < N; n++) {
    const p = pub.room.publish({ n }).then((r) => {
      replies[n] = r.offset;
      inflight.delete(p);
    });
    inflight.add(p);
    if (inflight.size >= 25) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  cutting = false;
  await cutter;
  proxy.calm();
  const publishMs = Date.now() - t0;

  // Every publish got its own offset, 1..N (none lost, none published twice).
  assert.deepEqual([...replies].sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i + 1));

  for (const s of [...subs, pub]) {
    await waitFor(() => s.offsets.length >= N, `${s.name} to have ${N} messages (has ${s.offsets.length})`, 30000);
  }
  // A barrier: anything still on its way would have arrived before the ping's reply.
  for (const s of [...subs, pub]) await waitFor(() => s.client.ping().then(() => true, () => false), `${s.name} ping`);
  const expected = Array.from({ length: N }, (_, i) => i + 1);
  for (const s of [...subs, pub]) {
    assert.equal(s.resets, 0, `${s.name}: no reset (the history covers every drop)`);
    assert.deepEqual(s.offsets, expected, `${s.name}: offsets 1..${N}, each once, in order`);
    assert.deepEqual([...s.data].sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i), `${s.name}: every publish once`);
    // The publisher's messages keep its order: offset order is publish order.
    assert.deepEqual(s.data, Array.from({ length: N }, (_, i) => i), `${s.name}: in publish order`);
  }
  t.diagnostic(`published ${N} in ${publishMs} ms; proxy connections ${proxy.connections}, cuts ${proxy.cuts}; rejoins: ${[...subs, pub].map((s) => `${s.name} ${s.rejoins}`).join(", ")}; publishes whose reply was lost: ${pub.client.stats.settledByMessage} settled by their message, ${pub.client.stats.resent} sent again`);
  assert.ok(proxy.cuts >= 5, `the proxy cut connections (${proxy.cuts})`);
  assert.ok(pub.rejoins >= 3, `the publisher reconnected (${pub.rejoins})`);
});
