// Authentication: the `auth` message, refresh before `exp`, a new token from getToken after
// 1008, and a clear stop (no retry storm) when there is no new token.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { clientPool, nextEvent, signToken, startServer, waitFor } from "./harness.js";

const SECRET = "wsedge-js-client-test-secret-32-bytes!!";
const now = () => Math.floor(Date.now() / 1000);
let server;
const pool = clientPool();
const client = (opts) => pool.make(server.url, opts);

before(async () => {
  server = await startServer(["--jwt-secret", SECRET, "--require-auth", "--handshake-timeout", "1"]);
});
after(async () => {
  pool.closeAll();
  await server.stop();
});

/** Records the client's state changes. */
const watch = (c) => {
  const log = [];
  c.on("state", (s, d) => log.push({ s, ...d }));
  return log;
};

test("a token goes in the auth message: the server knows the user", async () => {
  const info = { name: "Alice A." };
  const c = client({ token: signToken(SECRET, { sub: "alice", info }) });
  const welcome = await nextEvent(c, "welcome"); // after the auth reply (--require-auth)
  assert.equal(welcome.user, "alice");
  assert.deepEqual(welcome.info, info);
  await c.ready();
  assert.equal(c.user, "alice");
  assert.deepEqual(c.info, info);
  const room = c.join("auth-room");
  const msg = nextEvent(room, "message");
  await room.publish("hello");
  assert.equal((await msg).from.user, "alice");
});

test("getToken before exp: auth refreshes the session on the same connection", async () => {
  let calls = 0;
  const c = client({ getToken: async () => (calls++, signToken(SECRET, { sub: "bob", exp: now() + 3 })) });
  const log = watch(c);
  await c.ready();
  const id = c.clientId;
  const refreshes = [];
  c.on("refresh", (r) => refreshes.push(r));
  // Past the first token's exp (3 s; the server checks once a second) and then some.
  const firstExp = (await waitFor(() => refreshes.length >= 1 && refreshes[0], "a refresh")).exp;
  await waitFor(() => now() > firstExp + 1 && refreshes.length >= 2, "a second refresh, past the first exp", 15000);
  assert.equal(c.state, "connected");
  assert.equal(c.clientId, id, "the same connection");
  assert.equal(log.filter((e) => e.s === "disconnected").length, 0);
  assert.ok(calls >= 3);
});

test("1008 token expired: getToken gives a new token, the client reconnects and rejoins", async () => {
  let calls = 0;
  let down = false; // the token backend: down from the first connect until the server's 1008
  const getToken = async () => {
    calls++;
    if (down) throw new Error("backend down");
    return signToken(SECRET, { sub: "carol", exp: now() + (calls === 1 ? 8 : 3600) });
  };
  const c = client({ getToken });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  const log = watch(c);
  const room = c.join("auth-expiry");
  await nextEvent(room, "joined");
  down = true;
  await room.publish(1);
  const rejoined = nextEvent(room, "joined", 20000, (j) => !j.first);
  const drop = await nextEvent(c, "state", 20000, (s) => s === "disconnected");
  down = false;
  assert.equal(drop[1].code, 1008);
  assert.equal(drop[1].reason, "token expired");
  assert.ok(drop[1].retryIn !== null);
  assert.equal((await rejoined).recovered, true);
  assert.equal(c.user, "carol");
  assert.ok(errors.length >= 1 && errors.every((e) => e.code === "auth"), "the refresh's getToken failures are reported");
  assert.ok(errors.length >= 2, `the refresh tried again (${errors.length} failures)`);
  assert.equal(calls, errors.length + 2, "then the reconnect asked once");
  assert.equal((await room.publish(2)).offset, 2);
  assert.equal(log.filter((e) => e.s === "connecting").length, 2, "one reconnect, no storm");
});

test("1008 with a static token and no getToken: stops with a clear reason, no retries", async () => {
  const c = client({ token: signToken(SECRET, { sub: "dave", exp: now() + 2 }) });
  const log = watch(c);
  await c.ready();
  const stop = await nextEvent(c, "state", 20000, (s) => s === "disconnected");
  assert.equal(stop[1].retryIn, null);
  assert.match(stop[1].reason, /token expired/);
  assert.match(stop[1].reason, /getToken/);
  await assert.rejects(c.ready(), /token expired/);
  assert.equal(log.filter((e) => e.s === "connecting").length, 1);
});

test("an invalid token: error 401 -> getToken is asked for another", async () => {
  const tokens = [signToken("another-secret-of-at-least-32-bytes!!", { sub: "eve" }), signToken(SECRET, { sub: "eve" })];
  let calls = 0;
  const c = client({ getToken: async () => tokens[Math.min(calls++, 1)] });
  const log = watch(c);
  await c.ready();
  assert.equal(c.user, "eve");
  assert.equal(calls, 2);
  assert.match(log.find((e) => e.s === "disconnected").reason, /authentication failed/);
});

test("no token on a --require-auth server: stops after the server's 1008, no storm", async () => {
  const c = client();
  const log = watch(c);
  const stop = await nextEvent(c, "state", 20000, (s) => s === "disconnected" && log.length > 1);
  assert.equal(stop[1].retryIn, null);
  assert.match(stop[1].reason, /authentication required/);
  assert.equal(log.filter((e) => e.s === "connecting").length, 1);
});

test("getToken gives none after a 1008: stops", async () => {
  let calls = 0;
  const c = client({ getToken: async () => (calls++ === 0 ? signToken(SECRET, { sub: "fay", exp: now() + 2 }) : null) });
  const stop = await nextEvent(c, "state", 20000, (s) => s === "disconnected" && c._stopped);
  assert.equal(stop[1].retryIn, null);
  assert.match(stop[1].reason, /no new token/);
});
