// Test harness: a real `wsedge serve` per test file, a TCP proxy that cuts connections,
// HS256 tokens, and waiting for conditions (never fixed sleeps).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { WsedgeClient } from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));
export const WSEDGE_BIN = process.env.WSEDGE_BIN || resolve(here, "../../../target/release/wsedge");

/**
 * Starts `wsedge serve` (or `command`: `echo`, `relay`) on `port` (0: any free one);
 * resolves once it listens.
 */
export async function startServer(args = [], { port = 0, command = "serve" } = {}) {
  if (!existsSync(WSEDGE_BIN)) {
    throw new Error(`wsedge binary not found at ${WSEDGE_BIN}: run \`cargo build --release --bin wsedge\` in the repository root, or set WSEDGE_BIN`);
  }
  const proc = spawn(WSEDGE_BIN, [command, "--listen", `127.0.0.1:${port}`, "--workers", "1", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, RUST_LOG: "info" },
  });
  let log = "";
  const listening = new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`wsedge did not start within 20 s:\n${log}`)), 20000);
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        res(Number(m[1]));
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`wsedge exited (${code}) before listening:\n${log}`));
    });
  });
  const actual = await listening;
  const exited = new Promise((res) => proc.on("exit", res));
  return {
    port: actual,
    url: `ws://127.0.0.1:${actual}/ws`,
    http: `http://127.0.0.1:${actual}`,
    log: () => log,
    /** SIGKILL: no close frames, like a crash. */
    async kill() {
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await exited;
    },
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

// WSEDGE_TEST_WEBSOCKET=global: Node's own WebSocket (Node 22, or 20 with
// --experimental-websocket) instead of the `ws` package's.
const Socket = process.env.WSEDGE_TEST_WEBSOCKET === "global" ? globalThis.WebSocket : WebSocket;

/** A client with fast test timings. */
export function makeClient(url, options = {}) {
  return new WsedgeClient(url, { WebSocket: Socket, minReconnectDelay: 20, maxReconnectDelay: 300, ...options });
}

/** Clients made with `make` stay open until `closeAll()` (a test file's `after`). */
export function clientPool() {
  const made = [];
  return {
    make(url, options) {
      const c = makeClient(url, options);
      made.push(c);
      return c;
    },
    closeAll() {
      for (const c of made) c.close();
    },
  };
}

/** Resolves when `cond()` is truthy; rejects with `what` after `timeout` ms. */
export async function waitFor(cond, what = "condition", timeout = 20000) {
  const t0 = Date.now();
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() - t0 > timeout) throw new Error(`timed out after ${timeout} ms waiting for ${typeof what === "function" ? what() : what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves with the arguments of the next `event` on `emitter` (or rejects after `timeout`). */
export function nextEvent(emitter, event, timeout = 20000, filter = () => true) {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => {
      off();
      rej(new Error(`timed out after ${timeout} ms waiting for "${event}"`));
    }, timeout);
    const off = emitter.on(event, (...args) => {
      if (!filter(...args)) return;
      off();
      clearTimeout(timer);
      res(args.length > 1 ? args : args[0]);
    });
  });
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** An HS256 JWT for `claims` (exp defaults to an hour from now). */
export function signToken(secret, claims) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims }));
  const sig = createHmac("sha256", secret).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${sig}`;
}

/** What an upgrade-refusing proxy answers a WebSocket handshake with. */
const UPGRADE_REFUSED = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 27\r\nConnection: close\r\n\r\nWebSocket upgrades refused\n";

/**
 * A TCP proxy to `port` the test controls: cutAll() destroys every open pair (both sides,
 * whatever was in flight is lost), chaos() cuts each connection after a random number of
 * bytes (mid-frame, either direction), freeze() holds every byte (a dead link), deafen()
 * drops what the server sends on the open connections (requests arrive, replies are
 * lost), pause() refuses new connections until resume(). With `refuseUpgrades` (or after
 * refuseUpgrades(true)) it answers any request carrying `Upgrade: websocket` with
 * `403 Forbidden` and closes, as a proxy that breaks WebSockets does; other HTTP passes.
 */
export async function startProxy(port, { refuseUpgrades = false } = {}) {
  const pairs = new Set();
  let refusing = false;
  let refusingUpgrades = refuseUpgrades;
  let upgradesRefused = 0;
  let connections = 0;
  let cuts = 0;
  let budget = null; // {min, max}: bytes each connection may carry before its cut
  const random = (min, max) => min + Math.floor(Math.random() * (max - min + 1));
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    connections++;
    const upstream = net.connect(port, "127.0.0.1");
    const pair = { client, upstream, frozen: false, left: budget ? random(budget.min, budget.max) : Infinity };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    const forward = (to) => (chunk) => {
      if (pair.frozen || !pairs.has(pair) || (pair.deaf && to === client)) return;
      if (refusingUpgrades && to === upstream && /\r\nupgrade:[ \t]*websocket/i.test(chunk.toString("latin1"))) {
        // The handshake never reaches the server (the request's headers come in one chunk).
        upgradesRefused++;
        pairs.delete(pair);
        upstream.destroy();
        client.end(UPGRADE_REFUSED);
        return;
      }
      if (budget && pair.left === Infinity) pair.left = random(budget.min, budget.max);
      if (budget && chunk.length >= pair.left) {
        // Cut here: part of this chunk goes through, the rest is lost with the connection.
        to.write(chunk.subarray(0, pair.left));
        cuts++;
        pairs.delete(pair);
        setImmediate(end);
        return;
      }
      pair.left -= chunk.length;
      to.write(chunk);
    };
    client.on("data", forward(upstream)).on("error", end).on("close", end);
    upstream.on("data", forward(client)).on("error", end).on("close", end);
  });
  await new Promise((res) => server.listen(0, "127.0.0.1", res));
  const proxyPort = server.address().port;
  return {
    port: proxyPort,
    url: `ws://127.0.0.1:${proxyPort}/ws`,
    http: `http://127.0.0.1:${proxyPort}`,
    get open() {
      return pairs.size;
    },
    get connections() {
      return connections;
    },
    get cuts() {
      return cuts;
    },
    get upgradesRefused() {
      return upgradesRefused;
    },
    /** Answers WebSocket handshakes with 403 (true) or passes them (false) from now on. */
    refuseUpgrades(on = true) {
      refusingUpgrades = on;
    },
    cutAll() {
      const n = pairs.size;
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      cuts += n;
      return n;
    },
    /** Destroys one open connection, chosen at random. */
    cutOne() {
      const list = [...pairs];
      if (!list.length) return false;
      const pair = list[random(0, list.length - 1)];
      pairs.delete(pair);
      pair.client.destroy();
      pair.upstream.destroy();
      cuts++;
      return true;
    },
    chaos(min, max) {
      budget = { min, max };
      for (const pair of pairs) pair.left = random(min, max);
    },
    calm() {
      budget = null;
      for (const pair of pairs) pair.left = Infinity;
    },
    /** Drops every byte the server sends on the open connections. */
    deafen() {
      for (const pair of pairs) pair.deaf = true;
    },
    /** Holds every byte both ways (a dead link the sockets do not notice). */
    freeze() {
      for (const pair of pairs) pair.frozen = true;
    },
    pause() {
      refusing = true;
    },
    resume() {
      refusing = false;
    },
    async close() {
      this.cutAll();
      await new Promise((res) => server.close(res));
    },
  };
}

/**
 * Headless Chromium for the browser tests: Debian's (or WSEDGE_CHROMIUM, then the only one
 * tried) driven by playwright-core. `missing` says why there is none; `skip` is that reason
 * for `test(..., { skip })` locally, and false under WSEDGE_REQUIRE_BROWSER=1 (CI), where a
 * missing browser must fail the run instead.
 */
export async function findBrowser() {
  const candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];
  const CHROMIUM = (process.env.WSEDGE_CHROMIUM ? [process.env.WSEDGE_CHROMIUM] : candidates).find(existsSync);
  let playwright = null;
  try {
    playwright = await import("playwright-core");
  } catch {
    // Reported as `missing`, like a missing browser.
  }
  const missing = !CHROMIUM
    ? `no Chromium at ${process.env.WSEDGE_CHROMIUM || candidates.join(", ")} (apt-get install chromium, or set WSEDGE_CHROMIUM)`
    : !playwright
      ? "playwright-core is not installed (npm ci)"
      : null;
  const skip = missing && process.env.WSEDGE_REQUIRE_BROWSER !== "1" ? `skipped: ${missing}` : false;
  return { CHROMIUM, playwright, missing, skip };
}

/** A backend API call (POST /api/publish, /api/disconnect) on `server` with `apiKey`: the reply's JSON (a 200 is asserted). */
export async function backendCall(server, apiKey, path, body) {
  const res = await fetch(`${server.http}${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
  return res.json();
}

/**
 * A `redis-server` of the test's own on a free port (persistence off), for a cluster of
 * `wsedge serve --redis` nodes: `{ url, stop() }`, or `{ missing }` when there is none
 * (a failure under WSEDGE_REQUIRE_REDIS=1, as in CI).
 */
export async function startRedis() {
  const port = await new Promise((res, rej) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => res(port));
    });
    probe.on("error", rej);
  });
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const spawned = await new Promise((res) => {
    proc.on("error", (e) => res(e));
    proc.on("spawn", () => res(null));
  });
  if (spawned) {
    const missing = `redis-server could not start (${spawned.message}; apt-get install redis-server)`;
    if (process.env.WSEDGE_REQUIRE_REDIS === "1") throw new Error(missing);
    return { missing };
  }
  const exited = new Promise((res) => proc.on("exit", res));
  await waitFor(
    () =>
      new Promise((res) => {
        const socket = net.connect(port, "127.0.0.1", () => {
          socket.end();
          res(true);
        });
        socket.on("error", () => res(false));
      }),
    "redis-server listening",
    10000,
  );
  return {
    url: `redis://127.0.0.1:${port}/`,
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await exited;
    },
  };
}
