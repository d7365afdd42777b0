// Users, not just connections (issue 18): the token's `info`, presence by user (three tabs
// are one member), messages to a user from the backend API, and POST /api/disconnect
// (close 4001: the client stops instead of reconnecting).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { backendCall, clientPool, nextEvent, signToken, startProxy, startServer, waitFor } from "./harness.js";

const SECRET = "wsedge-js-client-users-test-secret-32b!";
const API_KEY = "users-test-api-key";
const INFO = { name: "Ann Lee", avatar: "/a/ann.png" };
let server;
const pool = clientPool();
const client = (opts) => pool.make(server.url, opts);
const as = (sub, info) => client({ token: signToken(SECRET, info ? { sub, info } : { sub }) });

before(async () => {
  // Anonymous connections allowed (no --require-auth): they are users of their own.
  server = await startServer(["--jwt-secret", SECRET, "--api-key", API_KEY]);
});
after(async () => {
  pool.closeAll();
  await server.stop();
});

/** A backend API call (POST /api/publish, /api/disconnect): the reply's JSON. */
const api = (path, body) => backendCall(server, API_KEY, path, body);

/** Three connections (three tabs) of `sub`, connected. Each test has its own users. */
async function tabsOf(sub) {
  const tabs = [as(sub, INFO), as(sub, INFO), as(sub, INFO)];
  await Promise.all(tabs.map((t) => t.ready()));
  return tabs;
}

test("the token's info: client.info, and next to the user in every message's from", async () => {
  const ada = as("ada", INFO);
  await ada.ready();
  assert.equal(ada.user, "ada");
  assert.deepEqual(ada.info, INFO);
  const room = ada.join("users-info");
  const msg = nextEvent(room, "message");
  await room.publish("hi");
  assert.deepEqual((await msg).from, { client: ada.clientId, user: "ada", info: INFO });
  const plain = as("cora");
  await plain.ready();
  assert.equal(plain.info, null, "no info claim");
  const anon = client();
  const welcome = await nextEvent(anon, "welcome");
  assert.deepEqual(welcome, { client: anon.clientId, user: null, info: null });
});

test('presence "users": three connections of one user are one member, one join, one leave', async () => {
  const proxy = await startProxy(server.port);
  const walt = pool.make(proxy.url, { token: signToken(SECRET, { sub: "walt" }) });
  const byUser = walt.join("users-presence", { presence: "users" });
  await nextEvent(byUser, "members");
  assert.deepEqual(byUser.members(), [{ user: "walt", connections: 1 }]);
  const events = [];
  byUser.on("presence", (e) => events.push(e));
  // Beside it, presence per connection as before.
  const cora = as("cora");
  const byConnection = cora.join("users-presence", { presence: true });
  await nextEvent(byConnection, "members");
  await waitFor(() => events.length === 1, "walt sees cora");

  const tabs = await tabsOf("ann");
  await Promise.all(tabs.map((t) => nextEvent(t.join("users-presence"), "joined")));
  await waitFor(() => byConnection.members().length === 5, "cora sees every connection");
  assert.equal(byConnection.members().filter((m) => m.user === "ann").length, 3);
  assert.ok(byConnection.members().every((m) => typeof m.client === "string"));
  const ann = { user: "ann", info: INFO };
  await waitFor(() => byUser.members().some((m) => m.user === "ann"), "walt sees ann");
  assert.deepEqual(events.slice(1), [{ op: "join", room: "users-presence", member: ann }], "one join for three");

  // The counts come with the list: after a join's presence request, or fetchMembers().
  const list = await byUser.fetchMembers();
  const sorted = (l) => [...l].sort((a, b) => (a.user ?? "").localeCompare(b.user ?? ""));
  const expected = [
    { user: "ann", info: INFO, connections: 3 },
    { user: "cora", connections: 1 },
    { user: "walt", connections: 1 },
  ];
  assert.deepEqual(sorted(list), expected);
  assert.deepEqual(sorted(byUser.members()), expected);

  // An anonymous connection is a user of its own, keyed by its client id.
  const anon = client();
  await nextEvent(anon.join("users-presence"), "joined");
  await waitFor(() => byUser.members().length === 4, "walt sees the anonymous one");
  assert.deepEqual(byUser.members().find((m) => m.user === null), { client: anon.clientId, user: null, connections: 1 });
  anon.close();
  await waitFor(() => byUser.members().length === 3, "the anonymous one leaves");

  // A reconnect rejoins by user: the list after it is per user again.
  const rejoined = nextEvent(byUser, "members");
  proxy.cutAll();
  assert.deepEqual(sorted(await rejoined), expected);
  events.length = 0;

  // Two tabs close: still there; the last one out: one leave.
  tabs[0].close();
  tabs[1].close();
  await waitFor(async () => (await byUser.fetchMembers()).find((m) => m.user === "ann")?.connections === 1, "one tab left");
  assert.deepEqual(events, [], "ann is still in the room");
  tabs[2].close();
  await waitFor(() => events.length === 1, "ann's leave");
  assert.deepEqual(events, [{ op: "leave", room: "users-presence", member: ann }]);
  assert.deepEqual(sorted(byUser.members()), expected.slice(1));
  await waitFor(() => byConnection.members().length === 2, "cora sees three connections leave");
  await proxy.close();
});

test("a message to a user reaches every connection of that user and nobody else", async () => {
  const tabs = await tabsOf("amy");
  const bob = as("bob");
  const anon = client();
  await Promise.all([bob.ready(), anon.ready()]);
  const room = tabs[0].join("users-messages");
  await nextEvent(room, "joined");
  const got = new Map([...tabs, bob, anon].map((c) => [c, []]));
  for (const [c, list] of got) c.on("message", (m) => list.push(m));
  const roomMessages = [];
  room.on("message", (m) => roomMessages.push(m));

  assert.deepEqual(await api("/api/publish", { user: "amy", data: { n: 1 } }), { user: "amy", connections: 3 });
  assert.deepEqual(await api("/api/publish", { user: "amy", data: { n: 2 } }), { user: "amy", connections: 3 });
  for (const tab of tabs) await waitFor(() => got.get(tab).length === 2, "both messages on every tab");
  for (const tab of tabs) {
    assert.deepEqual(got.get(tab), [
      { op: "message", user: "amy", data: { n: 1 } },
      { op: "message", user: "amy", data: { n: 2 } },
    ]);
  }
  // Bob's own message comes after amy's (one server, the API's order): he got nothing else.
  await api("/api/publish", { user: "bob", data: "yours" });
  await waitFor(() => got.get(bob).length === 1, "bob's message");
  assert.deepEqual(got.get(bob), [{ op: "message", user: "bob", data: "yours" }]);
  await anon.ping();
  assert.deepEqual(got.get(anon), []);
  // Not a room message: no room event, no offset, not in history.
  assert.deepEqual(roomMessages, []);
  assert.equal((await room.history()).offset, 0);
  for (const tab of tabs) tab.close();
});

test("POST /api/disconnect: every connection of the user gets kicked (4001) and stays down", async () => {
  const tabs = await tabsOf("kim");
  const bob = as("bob");
  const bobRoom = bob.join("users-kick");
  await nextEvent(bobRoom, "joined");
  const logs = tabs.map((t) => {
    const log = [];
    t.on("state", (s, d) => log.push({ s, ...d }));
    return log;
  });
  const kicks = tabs.map((t) => nextEvent(t, "kicked"));
  const rooms = tabs.map((t) => t.join("users-kick"));
  await Promise.all(rooms.map((r) => nextEvent(r, "joined")));

  assert.deepEqual(await api("/api/disconnect", { user: "kim" }), { user: "kim", connections: 3 });
  for (const kick of kicks) assert.deepEqual(await kick, { code: 4001, reason: "disconnected by the server" });
  for (const [i, tab] of tabs.entries()) {
    assert.equal(tab.state, "disconnected");
    assert.deepEqual(logs[i].at(-1), { s: "disconnected", code: 4001, reason: "disconnected by the server", retryIn: null });
  }
  await assert.rejects(tabs[0].ready(), (e) => e.code === "stopped" && /disconnected by the server/.test(e.message));
  await assert.rejects(rooms[0].publish("late"), (e) => e.code === "stopped");

  // Meanwhile a client dropped on its side reconnects three times, with the same backoff:
  // long enough for the kicked ones to have tried, had they tried.
  const proxy = await startProxy(server.port);
  const control = pool.make(proxy.url);
  for (let n = 1; n <= 3; n++) {
    await waitFor(() => control.stats.connects === n && control.state === "connected", `control connect ${n}`);
    proxy.cutAll();
  }
  await waitFor(() => control.stats.connects === 4, "control's fourth connect");
  for (const [i, tab] of tabs.entries()) {
    assert.equal(tab.stats.connects, 1, "no reconnect");
    assert.equal(logs[i].filter((e) => e.s === "connecting").length, 0);
  }
  const presence = await (await fetch(`${server.http}/api/presence?room=users-kick`, { headers: { Authorization: `Bearer ${API_KEY}` } })).json();
  assert.deepEqual(presence.members.map((m) => m.user), ["bob"]);
  assert.equal(bob.state, "connected", "bob is untouched");

  // The app decides: connect() starts again (the token is still valid).
  const rejoined = nextEvent(rooms[0], "joined");
  await tabs[0].connect();
  await rejoined;
  assert.equal(tabs[0].user, "kim");
  await proxy.close();
});
