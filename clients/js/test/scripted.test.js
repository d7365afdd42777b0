// What today's `wsedge serve` never does, from a scripted server (the `ws` package): the
// `reset` push of engines that can lose continuity, a lost publish reply answered later
// with `duplicate: true`, and the idempotency key kept across the resend.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocketServer } from "ws";
import { makeClient, nextEvent, waitFor } from "./harness.js";

let wss;
let url;
let script; // (socket, request, connection number) => void
let connections = 0;
const frames = []; // every request the server got: {conn, ...request}

before(async () => {
  wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "wsedge.v1" });
  await new Promise((res) => wss.once("listening", res));
  url = `ws://127.0.0.1:${wss.address().port}/ws`;
  wss.on("connection", (socket) => {
    const conn = ++connections;
    socket.send(JSON.stringify({ op: "welcome", client: `m-${conn}`, user: null }));
    socket.on("message", (raw) => {
      const req = JSON.parse(String(raw));
      frames.push({ conn, ...req });
      script(socket, req, conn);
    });
  });
});
after(async () => {
  for (const s of wss.clients) s.terminate();
  await new Promise((res) => wss.close(res));
});

const reply = (socket, req, ok) => socket.send(JSON.stringify({ id: req.id, ok }));
const msg = (room, offset, n, client = "m-0") => ({ op: "message", room, offset, from: { client, user: null }, data: { n } });

test("a publish whose reply was lost goes again with the same key; duplicate: true resolves it", async () => {
  script = (socket, req, conn) => {
    if (req.op === "join") {
      reply(socket, req, { room: req.room, epoch: "e1", offset: 0, members: 1, recovered: !!req.since, missed: [] });
    } else if (req.op === "publish" && conn === 1) {
      socket.terminate(); // the request may or may not have been applied: the reply is lost
    } else if (req.op === "publish") {
      reply(socket, req, { room: req.room, offset: 1, duplicate: true });
    }
  };
  const c = makeClient(url);
  const room = c.join("keys");
  await nextEvent(room, "joined");
  const r = await room.publish({ n: 1 });
  assert.deepEqual(r, { room: "keys", offset: 1, duplicate: true });
  const sent = frames.filter((f) => f.op === "publish");
  assert.equal(sent.length, 2);
  assert.match(sent[0].key, /^[A-Za-z0-9_-]{22}$/);
  assert.equal(sent[1].key, sent[0].key, "the same key on the resend");
  assert.deepEqual(frames.filter((f) => f.op === "join").map((f) => f.since ?? null), [null, { epoch: "e1", offset: 0 }]);
  assert.equal(c.stats.resent, 1);
  c.close();
});

test("a reset push: history reload, live messages held meanwhile, nothing twice", async () => {
  frames.length = 0;
  script = (socket, req) => {
    if (req.op === "join") {
      reply(socket, req, { room: req.room, epoch: "e1", offset: 2, members: 1, recovered: false, missed: [] });
      socket.send(JSON.stringify(msg(req.room, 3, 3)));
    } else if (req.op === "history") {
      // Live messages of the new epoch before the history reply: 5 is in the history, 6 not.
      socket.send(JSON.stringify(msg(req.room, 5, 5)));
      socket.send(JSON.stringify(msg(req.room, 6, 6)));
      reply(socket, req, { room: req.room, epoch: "e2", offset: 5, messages: [msg(req.room, 4, 4), msg(req.room, 5, 5)] });
    } else if (req.op === "publish") {
      reply(socket, req, { room: req.room, offset: 7 });
    }
  };
  const c = makeClient(url);
  const room = c.join("resets");
  const got = [];
  room.on("message", (m) => got.push(m.offset));
  await waitFor(() => got.length === 1, "the live message after the join");
  const socket = [...wss.clients].at(-1);
  const reset = nextEvent(room, "reset");
  socket.send(JSON.stringify({ op: "reset", room: "resets", epoch: "e2", offset: 5 }));
  const r = await reset;
  assert.equal(r.reason, "reset");
  assert.equal(r.previousEpoch, "e1");
  assert.equal(r.epoch, "e2");
  assert.deepEqual(r.messages.map((m) => m.offset), [4, 5]);
  await waitFor(() => got.length === 2, "the held message");
  assert.deepEqual(got, [3, 6]);
  assert.equal(room.epoch, "e2");
  assert.equal(room.offset, 6);
  socket.send(JSON.stringify(msg("resets", 6, 6))); // a duplicate is dropped
  socket.send(JSON.stringify(msg("resets", 7, 7)));
  await waitFor(() => got.length === 3, "offset 7");
  assert.deepEqual(got, [3, 6, 7]);
  assert.equal(c.stats.resets, 1);
  c.close();
});

test("a publish whose reply was lost but whose message is in missed is not sent again", async () => {
  frames.length = 0;
  let published = null;
  script = (socket, req, conn) => {
    if (req.op === "join") {
      const missed = req.since && published ? [{ ...msg(req.room, 1, 1, published.client) }] : [];
      reply(socket, req, { room: req.room, epoch: "e1", offset: missed.length, members: 1, recovered: !!req.since, missed });
    } else if (req.op === "publish" && !published) {
      published = { client: `m-${conn}` }; // applied, then the connection dies before the reply
      socket.terminate();
    } else if (req.op === "publish") {
      reply(socket, req, { room: req.room, offset: 2 });
    }
  };
  const c = makeClient(url);
  const room = c.join("matched");
  await nextEvent(room, "joined");
  const r = await room.publish({ n: 1 });
  assert.deepEqual(r, { room: "matched", offset: 1 });
  assert.equal(frames.filter((f) => f.op === "publish").length, 1, "not sent again");
  assert.equal(c.stats.settledByMessage, 1);
  assert.equal((await room.publish({ n: 2 })).offset, 2);
  c.close();
});
