// wsedge-client: the client for the `wsedge.v1` room protocol (docs/protocol.md).
// Owns one connection at a time: connects, authenticates, rejoins every room with `since`
// after a drop and delivers each message offset exactly once, in order. Queues publishes
// while offline. The connection is a WebSocket, or where WebSockets fail, Server-Sent
// Events (`GET /sse`) with `POST /publish` behind the same interface. No dependencies:
// browsers and Node 20+ (global WebSocket or one passed in; global fetch).

/** The subprotocol this client speaks (docs/protocol.md, "Connecting"). */
export const PROTOCOL = "wsedge.v1";

const DEFAULTS = {
  minReconnectDelay: 500, // backoff base: full jitter in [0, min(max, min * 2^attempt)]
  maxReconnectDelay: 30000,
  stableAfter: 10000, // a connection up this long resets the backoff
  requestTimeout: 10000, // a request without a reply by then rejects (a join: reconnect)
  connectTimeout: 15000, // open + welcome (+ auth reply) within this, or try again
  idleTimeout: 25000, // no frame received this long: send a ping ...
  pingTimeout: 10000, // ... and reconnect when its reply is not back by then
  maxQueue: 1000, // publishes waiting while offline; a full queue rejects
  historyLimit: 100, // messages fetched for a `reset` (the server keeps 100 by default)
  refreshBefore: 30000, // refresh the token this long before its `exp` (at most half its life)
  typingInterval: 2000, // room.typing() sends at most once per this
  typingTimeout: 5000, // a peer's typing indicator expires after this without a new one
  // Publishes per second and burst, client side: a queue flushed after a drop must not hit
  // the server's limit (100/s after a burst of 200 by default -> error 429). 5 % under it
  // for timing; set them to the server's --publish-rate/--publish-burst (0: no limit here).
  publishRate: 95,
  publishBurst: 190,
  sendKeys: true, // send each publish's idempotency `key` (the server publishes a key once)
  // Transports in order of preference: WebSocket, and Server-Sent Events (GET /sse plus
  // POST /publish) after `fallbackAfter` WebSocket attempts in a row failed before their
  // welcome (a refused upgrade is one). Two: one failure is a blip (a restart, a lost
  // network), the second in a row is a pattern worth working around.
  transports: ["websocket", "sse"],
  fallbackAfter: 2,
  // On SSE, a WebSocket is tried this often (ms; 0: never); when its upgrade succeeds, the
  // client reconnects over WebSocket. Without it, clients that fell back during an outage
  // (a refused connection looks like a refused upgrade) would stay on SSE until a drop.
  probeInterval: 60000,
  random: Math.random, // the backoff's jitter source (tests pin it)
};

/** An error from the server (`code` is its number) or from the client (`code` a string). */
export class WsedgeError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "WsedgeError";
    this.code = code;
  }
}

/**
 * The reconnect delay before attempt `attempt` (0-based), "full jitter": uniformly random
 * in [0, min(max, min * 2^attempt)].
 */
export function backoffDelay(attempt, min = DEFAULTS.minReconnectDelay, max = DEFAULTS.maxReconnectDelay, random = Math.random) {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 52));
  return random() * ceiling;
}

/** A JWT's claims, read without verifying (the server verifies); null if unreadable. */
function tokenClaims(token) {
  try {
    const part = String(token).split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4);
    const text = decodeURIComponent(
      Array.from(atob(b64), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    const claims = JSON.parse(text);
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** The `exp` claim (seconds since the epoch) of a JWT, read without verifying; null if none. */
export function tokenExpiry(token) {
  const exp = tokenClaims(token)?.exp;
  return typeof exp === "number" && Number.isFinite(exp) ? exp : null;
}

/** The `info` claim of a token the server accepted (it refuses any but an object). */
function tokenInfo(token) {
  const info = tokenClaims(token)?.info;
  return info && typeof info === "object" && !Array.isArray(info) ? info : null;
}

/** The close code of `POST /api/disconnect` (docs/protocol.md): do not reconnect. */
const DISCONNECTED_BY_SERVER = 4001;

/** What a join's `presence` option asks for: false, "connections" (true) or "users". */
function presenceMode(presence) {
  return presence === "users" ? "users" : presence ? "connections" : false;
}

/** How a member is keyed in `members()`: by connection, or by user ("users" presence). */
function memberKey(presence, member) {
  if (presenceMode(presence) !== "users") return member.client;
  // An anonymous connection is a user of its own; the prefixes keep a user named like a
  // client id apart from it.
  return member.user != null ? `u:${member.user}` : `c:${member.client}`;
}

/** A random idempotency key: 22 characters of base64url (128 bits). */
export function newKey() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  /** Calls `fn` for every `event`; returns a function that stops it. */
  on(event, fn) {
    let set = this._handlers.get(event);
    if (!set) this._handlers.set(event, (set = new Set()));
    const entry = (...args) => fn(...args);
    set.add(entry);
    return () => set.delete(entry);
  }

  /** Like `on`, for the next `event` only. */
  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  _emit(event, ...args) {
    const set = this._handlers.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        // A throwing handler must not break delivery to the others, nor the client's state.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

/** One room this client is in (or will be, once connected). Made by `client.join`. */
export class Room extends Emitter {
  constructor(client, name, options) {
    super();
    this._client = client;
    this.name = name;
    this.presence = options.presence || false; // false, true, "connections" or "users"
    this._historyOnJoin = options.history ?? 0;
    this.epoch = null; // the epoch `offset` belongs to
    this.offset = 0; // the last offset delivered to "message" handlers
    this.joined = false; // the join (and any reload) on the current connection is done
    this.left = false;
    this._syncing = false;
    this._buffer = []; // live pushes that came while syncing
    this._inflight = []; // publishes sent, reply not seen (a drop leaves them unconfirmed)
    this._members = new Map(); // memberKey -> {client, user, info} (or a user's entry)
    this._typers = new Map(); // client id -> {member, timer}
    this._lastTyping = -Infinity;
  }

  /**
   * The room's members (presence: true), you included, as last known: one per connection,
   * or with presence: "users" one per user `{user, info, connections}` (an anonymous
   * connection: `{client, user: null, connections}`).
   */
  members() {
    return [...this._members.values()];
  }

  /** Peers typing now (room.typing() on their side, not yet expired). */
  typers() {
    return [...this._typers.values()].map((t) => t.member);
  }

  /**
   * Publishes `data` (any JSON value). Resolves with the reply `{room, offset}` once the
   * server has the message. Offline (or while the room is rejoining) it waits in the
   * queue and goes out after the rejoin. options: {echo: false, ephemeral: true, key}.
   */
  publish(data, options = {}) {
    return this._client._publish(this, data, options);
  }

  /** Tells peers you are typing: an ephemeral `{typing: true}`, at most once per typingInterval. */
  typing() {
    const now = Date.now();
    if (now - this._lastTyping < this._client.options.typingInterval || !this.joined) return false;
    this._lastTyping = now;
    this._client._publish(this, { typing: true }, { ephemeral: true, echo: false, noQueue: true }).catch(() => {});
    return true;
  }

  /** The room's last kept messages: `{room, epoch, offset, messages}`. */
  history({ limit } = {}) {
    return this._client._roomRequest(this, "history", limit === undefined ? {} : { limit });
  }

  /**
   * Asks the server for the member list (works without presence: true). With presence on,
   * members() takes it too: the way to fresh `connections` counts with presence: "users".
   */
  async fetchMembers() {
    const { members } = await this._client._roomRequest(this, "presence", {});
    if (this.presence && !this.left) this._setMembers(members);
    return members;
  }

  /** Leaves the room: queued publishes reject, no more events. */
  leave() {
    return this._client._leave(this);
  }

  _setMembers(list) {
    this._members = new Map(list.map((m) => [memberKey(this.presence, m), m]));
    this._emit("members", this.members());
  }

  /** A `join`/`leave` push: by user, one for a user's first connection in and last out. */
  _presenceEvent(msg) {
    if (msg.member) {
      const key = memberKey(this.presence, msg.member);
      if (msg.op === "leave") this._members.delete(key);
      else if (presenceMode(this.presence) === "users") this._members.set(key, { ...msg.member, connections: 1 });
      else this._members.set(key, msg.member);
    }
    this._emit("presence", msg);
  }

  _typing(msg) {
    const id = msg.from.client;
    const old = this._typers.get(id);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(() => {
      this._typers.delete(id);
      this._emit("typing", { member: msg.from, typing: false, typers: this.typers() });
    }, this._client.options.typingTimeout);
    this._typers.set(id, { member: msg.from, timer });
    this._emit("typing", { member: msg.from, typing: true, typers: this.typers() });
  }

  _clearTypers() {
    for (const t of this._typers.values()) clearTimeout(t.timer);
    this._typers.clear();
  }
}

// ---- Server-Sent Events: the fallback transport -----------------------------------------

/** Presence asked of a stream: the strongest any of its rooms wants (one per stream). */
const PRESENCE_RANK = { false: 0, connections: 1, users: 2 };

/**
 * A push parser of `text/event-stream` (HTML, "Server-sent events", §9.2.6 "Interpreting an
 * event stream"): `feed` text as it comes, get `{event, data, id}` at each blank line. A
 * line may end with CRLF, LF or CR, and a chunk may end between CR and LF.
 */
export class EventStreamParser {
  constructor(onEvent) {
    this._onEvent = onEvent;
    this._rest = ""; // an unfinished line
    this._event = "";
    this._data = [];
    this._id = null;
  }

  feed(text) {
    const buf = this._rest + text;
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      if (c === 13 && i + 1 === buf.length) break; // CR last: its LF may be in the next chunk
      this._line(buf.slice(start, i));
      if (c === 13 && buf.charCodeAt(i + 1) === 10) i++;
      start = i + 1;
    }
    this._rest = buf.slice(start);
  }

  _line(line) {
    if (line === "") {
      // Dispatch; an event with no data line is none (the spec's "if the data buffer is empty").
      const event = { event: this._event || "message", data: this._data.join("\n"), id: this._id };
      const had = this._data.length > 0;
      this._event = "";
      this._data = [];
      this._id = null;
      if (had) this._onEvent(event);
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ":" a comment (the server's keepalive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === "event") this._event = value;
    else if (field === "data") this._data.push(value);
    else if (field === "id" && !value.includes("\0")) this._id = value;
    // "retry": the client schedules its own reconnects.
  }
}

/**
 * The room protocol over `GET /sse` and `POST /publish` (docs/protocol.md, "Server-Sent
 * Events"), shaped like a WebSocket so that the client's connection logic stays one: the
 * client `send`s the same request frames and gets the same pushes and replies through
 * `onmessage`. A `join` is answered by the stream's `joined` (or `reset`, or `error`) event
 * for the room; a room the stream does not follow yet, or a `leave`, opens the stream again
 * with the new room set (`restream`), resuming every room where the client is; a `publish`
 * is a `POST /publish` as the stream's member; a `ping` is answered by the next bytes on
 * the stream (the server's keepalive comes every 15 s); `history` and `presence` are
 * `GET /history` and `GET /presence` as the stream's member. `auth` has no equivalent: 501.
 *
 * Why `fetch` and not `EventSource`: the client writes `Last-Event-ID` itself, from its own
 * position in every room, on the first request too (an `EventSource` sends one only on its
 * own reconnects, so a switch from WebSocket, or a new room set, would start from now and
 * lose messages); reconnects follow the client's backoff, not the browser's fixed delay; a
 * refusal's status and JSON body are readable; and Node 20 has `fetch` but no `EventSource`.
 */
class EventStreamSocket {
  constructor(client, token) {
    this.readyState = 0; // CONNECTING; 1 OPEN; 3 CLOSED, as a WebSocket's
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._client = client;
    this._fetch = client.options.fetch ?? globalThis.fetch.bind(globalThis);
    this._token = token;
    this._abort = null; // the AbortController of the stream being read
    this._rooms = []; // the rooms the current stream follows, and its presence
    this._presence = false;
    this._stream = null; // the welcome's `stream`: what POST /publish is made as
    this._joins = new Map(); // room -> id of the `join` waiting for the stream's answer
    this._answers = new Map(); // room -> the answer that came before its `join` was sent
    this._posts = Promise.resolve(); // one publish at a time: in order, as on one socket
    this._welcomeWaiters = []; // publishes waiting for a stream (after a 410)
    this._pings = [];
    this._restreamTimer = null;
    this._open();
  }

  send(text) {
    const req = JSON.parse(text);
    switch (req.op) {
      case "join":
        return this._join(req);
      case "leave":
        this._reply(req.id, { ok: {} });
        return this._restreamSoon();
      case "publish":
        // A failure here must not stop the chain: the request then times out.
        this._posts = this._posts.then(() => this._publish(req)).catch(() => {});
        return;
      case "ping":
        return void this._pings.push(req.id);
      case "history":
      case "presence":
        return void this._read(req).catch(() => {}); // a failure: the request times out
      default:
        return this._reply(req.id, { error: { code: 501, message: `${req.op}: not available over Server-Sent Events` } });
    }
  }

  close() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    clearTimeout(this._restreamTimer);
    this._abort?.abort();
    for (const w of this._welcomeWaiters.splice(0)) w();
  }

  /** Opens the stream for the client's rooms, resuming each where the client is. */
  async _open() {
    const { rooms, presence, lastEventId } = this._client._streamQuery();
    const abort = new AbortController();
    this._abort = abort;
    this._rooms = rooms;
    this._presence = presence;
    this._answers.clear();
    this._stream = null;
    this._welcomed = false; // this stream's welcome came (with a `stream`, or from a server without POST /publish)
    this._closeEvent = null;
    // GET /sse needs a room: the last one left, the connection ends (the client opens
    // none without a room, and tries WebSocket meanwhile if it may).
    if (!rooms.length) return this._ended(abort, 1000, "no room to stream");
    const headers = { accept: "text/event-stream" };
    if (lastEventId) headers["last-event-id"] = lastEventId;
    let res;
    try {
      const url = new URL(this._client._sseUrl);
      for (const room of rooms) url.searchParams.append("room", room);
      if (presence) url.searchParams.set("presence", presence === "users" ? "users" : "1");
      // In the query, as an EventSource sends it: the token then adds no header that a
      // cross-origin fetch would have to ask about in its preflight.
      if (this._token) url.searchParams.set("token", this._token);
      res = await this._fetch(url.href, { headers, signal: abort.signal, cache: "no-store" });
    } catch (e) {
      return this._ended(abort, 1006, `stream: ${e && e.message ? e.message : e}`);
    }
    if (abort !== this._abort) return res.body?.cancel().catch(() => {});
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      const why = body?.error?.message ?? res.statusText;
      // 401: the token (missing, expired, refused): like a WebSocket's 1008 close about it.
      if (res.status === 401) return this._ended(abort, 1008, `token refused (HTTP 401: ${why})`);
      return this._ended(abort, 1006, `GET /sse: HTTP ${res.status} ${why}`);
    }
    if (this.readyState === 0) {
      this.readyState = 1;
      this.onopen?.({});
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = new EventStreamParser((event) => abort === this._abort && this._event(event));
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (abort !== this._abort) return reader.cancel().catch(() => {});
        if (done) break;
        for (const id of this._pings.splice(0)) this._reply(id, { ok: {} }); // bytes: alive
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch {
      // Cut (or aborted by a restream or close, handled below).
    }
    if (abort !== this._abort) return;
    const close = this._closeEvent; // the server said why before it ended the stream
    this._ended(abort, close?.code ?? 1006, close?.reason ?? "the event stream ended");
  }

  _event({ event, data }) {
    // message, join, leave: the push a socket gets, byte for byte.
    if (event === "message" || event === "join" || event === "leave") return this.onmessage?.({ data });
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (event) {
      case "welcome":
        this._stream = msg.stream ?? null;
        this._welcomed = true;
        this._push(msg);
        for (const w of this._welcomeWaiters.splice(0)) w();
        return;
      case "joined":
        return this._answer(msg.room, { ok: { ...msg, missed: [] } });
      case "reset":
        // During a join, its answer (not recovered); afterwards a push, as on a socket.
        if (this._joins.has(msg.room)) {
          return this._answer(msg.room, { ok: { room: msg.room, epoch: msg.epoch, offset: msg.offset, members: 0, recovered: false, missed: [] } });
        }
        return this._push(msg);
      case "error":
        if (msg.room !== undefined) return this._answer(msg.room, { error: { code: msg.code, message: msg.message } });
        return this._push({ id: null, error: msg });
      case "close":
        this._closeEvent = { code: msg.code, reason: msg.reason ?? "" };
    }
  }

  _join(req) {
    this._joins.set(req.room, req.id);
    const want = PRESENCE_RANK[presenceMode(this._client._rooms.get(req.room)?.presence)] ?? 0;
    if (!this._rooms.includes(req.room) || want > PRESENCE_RANK[presenceMode(this._presence)]) return this._restreamSoon();
    const answer = this._answers.get(req.room);
    if (answer) this._answer(req.room, answer);
  }

  _answer(room, body) {
    const id = this._joins.get(room);
    if (id === undefined) return void this._answers.set(room, body);
    this._joins.delete(room);
    this._answers.delete(room);
    this._reply(id, body);
  }

  /** A new room set: one new stream for every change made in this turn of the event loop. */
  _restreamSoon() {
    if (this._restreamTimer !== null || this.readyState === 3) return;
    this._restreamTimer = setTimeout(() => {
      this._restreamTimer = null;
      if (this.readyState === 3) return;
      this._abort?.abort();
      this._open();
    }, 0);
  }

  async _publish(req) {
    const body = { stream: null, room: req.room, data: req.data };
    for (const k of ["key", "echo", "ephemeral"]) if (req[k] !== undefined) body[k] = req[k];
    for (let failures = 0; ; ) {
      if (this.readyState === 3) return; // the client rejects it as "disconnected"
      if (!this._stream && this._welcomed && this._rooms.length) {
        return this._reply(req.id, { error: { code: 501, message: "publish: this server takes no publishes over Server-Sent Events (no POST /publish)" } });
      }
      if (!this._stream) {
        await new Promise((resolve) => this._welcomeWaiters.push(resolve));
        continue;
      }
      body.stream = this._stream;
      let res;
      let reply;
      try {
        res = await this._fetch(this._client._publishUrl, {
          method: "POST",
          // A "simple" request: a cross-origin page needs no preflight.
          headers: { "content-type": "text/plain;charset=UTF-8" },
          body: JSON.stringify(body),
        });
        reply = await res.json().catch(() => null);
      } catch (e) {
        // A keyed publish may go again (the server publishes a key once); otherwise, or
        // twice in a row, the link is bad: reconnect, and the client sends it again.
        if (body.key !== undefined && ++failures < 2) continue;
        return this._ended(this._abort, 1006, `POST /publish: ${e && e.message ? e.message : e}`);
      }
      if (res.status === 410) {
        // The stream ended (or is on another node): wait for the next one, same key. A
        // stream still read here is one the server no longer knows: open a new one.
        if (this._stream === body.stream) {
          this._stream = null;
          this._welcomed = false;
          this._restreamSoon();
        }
        continue;
      }
      if (res.ok) return this._reply(req.id, { ok: reply ?? {} });
      return this._reply(req.id, { error: reply?.error ?? { code: res.status, message: `POST /publish: HTTP ${res.status}` } });
    }
  }

  /** `history` or `presence` of one of the stream's rooms, asked as the stream's member. */
  async _read(req) {
    for (;;) {
      if (this.readyState === 3) return;
      if (!this._stream) {
        if (this._welcomed && this._rooms.length) {
          return this._reply(req.id, { error: { code: 501, message: `${req.op}: this server has no GET /${req.op} for streams` } });
        }
        await new Promise((resolve) => this._welcomeWaiters.push(resolve));
        continue;
      }
      const stream = this._stream;
      const url = new URL(req.op, this._client._publishUrl);
      url.searchParams.set("stream", stream);
      url.searchParams.set("room", req.room);
      if (req.op === "history" && req.limit !== undefined) url.searchParams.set("limit", String(req.limit));
      if (req.op === "presence" && this._presence === "users") url.searchParams.set("by", "users");
      const res = await this._fetch(url.href, { cache: "no-store" });
      const reply = await res.json().catch(() => null);
      if (res.status === 410) {
        // The stream ended: ask again as the next one.
        if (this._stream === stream) {
          this._stream = null;
          this._welcomed = false;
          this._restreamSoon();
        }
        continue;
      }
      if (res.ok) return this._reply(req.id, { ok: reply ?? {} });
      return this._reply(req.id, { error: reply?.error ?? { code: res.status, message: `GET /${req.op}: HTTP ${res.status}` } });
    }
  }

  _reply(id, body) {
    queueMicrotask(() => this.readyState !== 3 && this._push({ id, ...body }));
  }

  _push(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }

  _ended(abort, code, reason) {
    if (abort !== this._abort || this.readyState === 3) return;
    this.close();
    this.onclose?.({ code, reason });
  }
}

/**
 * A connection to a wsedge server that stays up: see README.md.
 * Events: "state" (state, {code, reason, retryIn}), "welcome" ({client, user, info}),
 * "message" ({op, user, data}: to this user from the backend, in no room), "kicked"
 * ({code, reason}: the server closed the user's connections; stopped), "error"
 * (WsedgeError no promise was waiting for).
 */
export class WsedgeClient extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) this.options[k] = v;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    const transports = this.options.transports;
    if (!transports.length || transports.some((t) => t !== "websocket" && t !== "sse")) {
      throw new TypeError(`wsedge-client: transports must list "websocket" and/or "sse", not ${JSON.stringify(transports)}`);
    }
    if (transports.includes("websocket") && typeof this.WebSocket !== "function") {
      throw new TypeError("wsedge-client: no WebSocket: pass {WebSocket} (e.g. from the `ws` package) or run Node with a global WebSocket");
    }
    this.state = "disconnected";
    this.clientId = null; // this connection's id (a reconnect gets a new one)
    this.user = null; // the token's `sub`, or null
    this.info = null; // the token's `info` claim (the user's profile for the app), or null
    this.token = options.token ?? null;
    this.transport = null; // the current connection's: "websocket" or "sse" (null: none)
    // GET /sse and POST /publish next to the WebSocket endpoint (ws://h/ws -> http://h/sse).
    let http = null;
    try {
      http = new URL(url, globalThis.location?.href);
      http.protocol = http.protocol === "wss:" ? "https:" : http.protocol === "ws:" ? "http:" : http.protocol;
      http.search = http.hash = "";
    } catch {
      // Not a URL: the WebSocket constructor says so at connect.
    }
    this._sseUrl = options.sseUrl ?? (http && new URL("sse", http).href);
    this._publishUrl = options.publishUrl ?? (http && new URL("publish", http).href);
    this._wsFailures = 0; // WebSocket attempts in a row that failed before their welcome
    /** Counters for dashboards and tests. */
    this.stats = { connects: 0, resets: 0, settledByMessage: 0, resent: 0, retried429: 0 };
    this._rooms = new Map();
    this._outbox = []; // publishes waiting for their room to be joined, in order
    this._waiting = []; // other requests waiting for a connection
    this._pending = new Map(); // request id -> {resolve, reject, timer}
    this._nextId = 0;
    this._seq = 0;
    this._ws = null;
    this._attempt = 0;
    this._stopped = false;
    this._needToken = false; // the last connection failed on its token
    this._timers = {};
    this._connectedAt = 0;
    this._lastFrame = 0;
    this._onOnline = () => {
      // The browser says the network is back: don't sit out the backoff.
      if (!this._stopped && this._timers.retry) {
        this._clearTimer("retry");
        this._connect();
      }
    };
    this._listen(true);
    if (options.autoConnect !== false) queueMicrotask(() => this._stopped || this._ws || this._timers.retry || this.state === "connecting" || this._connect());
  }

  _listen(on) {
    // The browser's `online` event; Node has no window and no such event.
    if (on === this._listening || typeof globalThis.addEventListener !== "function") return;
    this._listening = on;
    if (on) globalThis.addEventListener("online", this._onOnline);
    else globalThis.removeEventListener("online", this._onOnline);
  }

  /** Resolves once connected (now, or at the next successful connect). */
  ready() {
    if (this.state === "connected") return Promise.resolve();
    if (this._stopped) return Promise.reject(new WsedgeError("stopped", this._stopReason || "the client is closed"));
    return new Promise((resolve, reject) => {
      const off = this.on("state", (s) => {
        if (s === "connected") {
          off();
          resolve();
        } else if (this._stopped) {
          off();
          reject(new WsedgeError("stopped", this._stopReason || "the client is closed"));
        }
      });
    });
  }

  /** Starts connecting again after close() or a stop on an authentication failure. */
  connect() {
    this._stopped = false;
    this._stopReason = null;
    this._listen(true);
    if (!this._ws && this.state !== "connecting") {
      this._clearTimer("retry");
      this._connect();
    }
    return this.ready();
  }

  /**
   * Joins `name` now (or once connected) and after every reconnect.
   * options: {presence: true} for join/leave events and members() per connection,
   * {presence: "users"} per user; {history: N} to get the last N messages as a "reset" on
   * the first join.
   */
  join(name, options = {}) {
    const existing = this._rooms.get(name);
    if (existing) {
      // Presence is turned on or switched between modes, never off: another part of the
      // app may be showing it.
      if (options.presence && presenceMode(options.presence) !== presenceMode(existing.presence)) {
        existing.presence = options.presence;
        existing._members.clear(); // keyed for the other mode; the rejoin lists them again
        if (existing.joined) this._sync(existing);
      }
      return existing;
    }
    const room = new Room(this, name, options);
    this._rooms.set(name, room);
    if (this.state === "connected") this._sync(room);
    if (this._awaitingRoom) {
      this._awaitingRoom = false;
      this._connect();
    }
    return room;
  }

  /** The rooms joined (and not left). */
  rooms() {
    return [...this._rooms.values()];
  }

  /** Round trip to the server; resolves with the time it took (ms). */
  async ping() {
    const t0 = Date.now();
    await this._request("ping", {}, { wait: true });
    return Date.now() - t0;
  }

  /** Closes for good (until connect()): pending and queued requests reject. */
  close() {
    this._stop("closed by the application", new WsedgeError("closed", "the client was closed"));
  }

  // ---- connection lifecycle -------------------------------------------------------------

  async _connect() {
    if (this._stopped || this._ws) return;
    this._setState("connecting");
    const epochOfThisTry = {};
    this._try = epochOfThisTry;
    let token = this.token;
    if (this.options.getToken) {
      try {
        token = await this.options.getToken();
      } catch (e) {
        token = undefined;
        this._emit("error", new WsedgeError("auth", `getToken failed: ${e && e.message ? e.message : e}`));
        if (this._try === epochOfThisTry) this._retry({ code: 0, reason: "getToken failed" });
        return;
      }
      if (this._try !== epochOfThisTry || this._stopped) return;
      this.token = token ?? null;
    }
    if (this._needToken && !token) {
      return this._stop(`authentication failed (${this._authFailure}) and there is no new token (no getToken, or it gave none)`);
    }
    if (this._needToken && token === this._failedToken && !this.options.getToken) {
      return this._stop(`authentication failed (${this._authFailure}): the token was refused and there is no getToken to fetch a new one`);
    }
    const sse = this._useEventStream();
    if (sse && !this._rooms.size) {
      // A stream needs a room: wait for the first join (join() connects), "connecting".
      this._awaitingRoom = true;
      return;
    }
    let ws;
    try {
      ws = sse ? new EventStreamSocket(this, token) : new this.WebSocket(this.url, PROTOCOL);
    } catch (e) {
      this._emit("error", new WsedgeError("connect", String(e && e.message ? e.message : e)));
      return this._retry({ code: 0, reason: "cannot connect" });
    }
    this._ws = ws;
    this.transport = sse ? "sse" : "websocket";
    this._welcomed = false;
    this._authed = !token || sse; // a stream's token goes with its request
    this._sentToken = token;
    this._setTimer("connect", this.options.connectTimeout, () => this._drop(4000, "connect timeout"));
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._lastFrame = Date.now();
      if (token && !sse) {
        // The `auth` message: the token stays out of URLs (docs/protocol.md, "Authentication").
        this._send(ws, "auth", { token }, { timeout: this.options.connectTimeout }).then(
          (ok) => {
            if (ws !== this._ws) return;
            this.user = ok.user;
            // The reply has no `info`: after an anonymous welcome it is the token's (a
            // welcome after the reply carries the server's).
            if (this._welcomed) this.info = tokenInfo(token);
            this._authed = true;
            this._maybeReady();
          },
          (e) => {
            if (ws !== this._ws || e.code === "disconnected") return;
            if (e.code === 400) {
              // Authentication is not configured on this server: carry on anonymously.
              this._emit("error", e);
              this._authed = true;
              return this._maybeReady();
            }
            this._authFailed(e.message, token);
            this._drop(4004, "authentication failed"); // 4001 is the server's: DISCONNECTED_BY_SERVER
          },
        );
      }
    };
    ws.onmessage = (event) => {
      if (ws !== this._ws) return;
      this._lastFrame = Date.now();
      let msg;
      try {
        msg = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
      } catch {
        return this._emit("error", new WsedgeError("protocol", "a frame that is not JSON"));
      }
      if (msg && typeof msg === "object") this._onFrame(msg);
    };
    ws.onclose = (event) => ws === this._ws && this._onClose(event.code, event.reason || "", { byServer: true });
    ws.onerror = () => {}; // a close event follows
  }

  /** Whether this attempt is over Server-Sent Events (see `transports`, `fallbackAfter`). */
  _useEventStream() {
    const transports = this.options.transports;
    if (!transports.includes("sse")) return false;
    if (!transports.includes("websocket")) return true;
    // With no room there is nothing to stream: keep trying WebSocket.
    return this._wsFailures >= this.options.fallbackAfter && this._rooms.size > 0;
  }

  /**
   * What a stream follows: every room, the strongest presence asked, and where to resume
   * each room (`Last-Event-ID`). The client writes it from its own positions, in the
   * server's format (src/rooms/sse.rs: `room~epoch~offset`, joined by `,`), so a stream
   * opened after a WebSocket, or for a new room set, resumes exactly where the client is.
   */
  _streamQuery() {
    const rooms = [];
    const since = [];
    let rank = 0;
    for (const room of this._rooms.values()) {
      rooms.push(room.name);
      rank = Math.max(rank, PRESENCE_RANK[presenceMode(room.presence)]);
      if (room.epoch !== null) since.push(`${room.name}~${room.epoch}~${room.offset}`);
    }
    return { rooms, presence: [false, "connections", "users"][rank], lastEventId: since.join(",") };
  }

  _maybeReady() {
    if (!this._welcomed || !this._authed || this.state === "connected") return;
    this._clearTimer("connect");
    this._connectedAt = Date.now();
    this._needToken = false;
    this._tokens = this.options.publishBurst || this.options.publishRate; // the server's bucket starts full
    this._tokensAt = Date.now();
    this.stats.connects++;
    this._setState("connected");
    this._scheduleRefresh();
    this._scheduleIdle();
    this._scheduleProbe();
    for (const w of this._waiting.splice(0)) w.go();
    for (const room of this._rooms.values()) this._sync(room);
  }

  _onClose(code, reason, { byServer = false } = {}) {
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null;
    this._clearTimer("connect");
    this._clearTimer("idle");
    this._clearTimer("pong");
    this._clearTimer("refresh");
    this._clearTimer("flush");
    this._endProbe();
    const wasConnected = this.state === "connected";
    if (wasConnected && Date.now() - this._connectedAt >= this.options.stableAfter) this._attempt = 0;
    // Back to WebSocket on the next full reconnect after a stream, with one try: it failed
    // before. A socket that was up counts no failure.
    if (this.transport === "sse") this._wsFailures = Math.max(0, this.options.fallbackAfter - 1);
    else if (this.transport === "websocket") this._wsFailures = wasConnected ? 0 : this._wsFailures + 1;
    this.transport = null;
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(new WsedgeError("disconnected", "the connection closed before the reply"));
    }
    this._pending.clear();
    for (const room of this._rooms.values()) this._roomDropped(room);
    // RFC 6455 §7.4.1: 1008 is a policy violation; the server uses it for tokens
    // (expired, missing) and for abuse (docs/protocol.md, "Errors"): the former needs a
    // new token, not the same one again.
    if (code === 1008 && /token|auth/i.test(reason)) this._authFailed(`${code} ${reason}`, this._sentToken);
    if (this._stopped) return;
    if (byServer && code === DISCONNECTED_BY_SERVER) {
      // The backend closed every connection of this user (POST /api/disconnect): a logout,
      // a ban. Reconnecting on our own would undo it; the app decides (connect()).
      this._stop(reason || "disconnected by the server", null, { code });
      return this._emit("kicked", { code, reason });
    }
    this._retry({ code, reason });
  }

  _authFailed(why, token) {
    this._needToken = true;
    this._authFailure = why;
    this._failedToken = token;
    if (!this.options.getToken) this.token = null;
  }

  /** Drops the current socket (dead link, timeout, auth failure) and reconnects. */
  _drop(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
    this._onClose(code, reason);
  }

  _retry(detail) {
    if (this._stopped) return;
    if (this._needToken && !this.options.getToken) {
      return this._stop(`authentication failed (${this._authFailure}); no getToken to fetch a new token`, null, detail);
    }
    const delay = backoffDelay(this._attempt++, this.options.minReconnectDelay, this.options.maxReconnectDelay, this.options.random);
    this._setState("disconnected", { ...detail, retryIn: Math.round(delay) });
    this._setTimer("retry", delay, () => this._connect());
  }

  _stop(reason, error, detail = {}) {
    this._stopped = true;
    this._awaitingRoom = false;
    this._endProbe();
    this._stopReason = reason;
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    if (error) this._listen(false); // close(): for good
    const err = error || new WsedgeError("stopped", reason);
    if (this._ws) this._drop(1000, "bye");
    for (const w of this._waiting.splice(0)) w.fail(err);
    for (const item of this._outbox.splice(0)) item.reject(err);
    for (const room of this._rooms.values()) {
      for (const item of room._inflight.splice(0)) item.reject(err);
      room._clearTypers();
    }
    this._setState("disconnected", { code: detail.code ?? null, reason, retryIn: null });
  }

  _setState(state, detail = {}) {
    const changed = state !== this.state;
    this.state = state;
    if (state !== "connected") this.clientId = null;
    if (changed || state === "disconnected") this._emit("state", state, detail);
  }

  _setTimer(name, ms, fn) {
    clearTimeout(this._timers[name]);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      fn();
    }, ms);
  }

  _clearTimer(name) {
    clearTimeout(this._timers[name]);
    delete this._timers[name];
  }

  /**
   * On SSE: a WebSocket opened every probeInterval and closed at once; an upgrade that
   * succeeds ends the stream, and the reconnect (WebSocket first) resumes every room.
   */
  _scheduleProbe() {
    if (this.transport !== "sse" || !this.options.probeInterval || !this.options.transports.includes("websocket")) return;
    this._setTimer("probe", this.options.probeInterval, () => {
      if (this.transport !== "sse" || this.state !== "connected") return;
      let probe;
      try {
        probe = new this.WebSocket(this.url, PROTOCOL);
      } catch {
        return this._scheduleProbe();
      }
      this._probe = probe;
      const done = (upgraded) => {
        if (this._probe !== probe) return;
        this._endProbe();
        if (upgraded) this._drop(1000, "WebSocket works again");
        else this._scheduleProbe();
      };
      probe.onopen = () => done(true);
      probe.onclose = () => done(false);
      probe.onerror = () => {}; // a close event follows
      this._setTimer("probeTimeout", this.options.connectTimeout, () => done(false));
    });
  }

  _endProbe() {
    this._clearTimer("probe");
    this._clearTimer("probeTimeout");
    const probe = this._probe;
    if (!probe) return;
    this._probe = null;
    probe.onopen = probe.onclose = probe.onmessage = null;
    try {
      probe.close(1000, "probe");
    } catch {
      // already closing
    }
  }

  /** Dead-link detection: a link silent for idleTimeout gets a ping; no reply, reconnect. */
  _scheduleIdle() {
    const since = Date.now() - this._lastFrame;
    const wait = Math.max(0, this.options.idleTimeout - since);
    this._setTimer("idle", wait, () => {
      if (this.state !== "connected") return;
      if (Date.now() - this._lastFrame < this.options.idleTimeout) return this._scheduleIdle();
      const ws = this._ws;
      this._send(ws, "ping", {}, { timeout: this.options.pingTimeout }).then(
        () => ws === this._ws && this._scheduleIdle(),
        (e) => {
          if (ws !== this._ws) return;
          if (e.code === "timeout") this._drop(4002, "no reply to ping");
          else this._scheduleIdle();
        },
      );
    });
  }

  /** Sends `auth` with a fresh token before the current one's `exp`. */
  _scheduleRefresh() {
    const exp = this._sentToken && tokenExpiry(this._sentToken);
    // A stream cannot take a new token: at `exp` the server ends it and the reconnect
    // asks getToken.
    if (!exp || !this.options.getToken || this.transport === "sse") return;
    const left = exp * 1000 - Date.now();
    const wait = Math.max(0, left - Math.min(this.options.refreshBefore, left / 2));
    this._setTimer("refresh", wait, async () => {
      const ws = this._ws;
      let token;
      try {
        token = await this.options.getToken();
      } catch (e) {
        this._emit("error", new WsedgeError("auth", `getToken failed: ${e && e.message ? e.message : e}`));
      }
      if (ws !== this._ws || this.state !== "connected") return;
      if (!token) {
        // Try again while there is time; past `exp` the server closes with 1008 and the
        // reconnect asks getToken again.
        const left = exp * 1000 - Date.now();
        if (left > 2000) this._setTimer("refresh", Math.min(5000, left / 2), () => this._scheduleRefresh());
        return;
      }
      try {
        await this._send(ws, "auth", { token });
        if (ws !== this._ws) return;
        this.token = token;
        this._sentToken = token;
        this._emit("refresh", { exp: tokenExpiry(token) });
        this._scheduleRefresh();
      } catch (e) {
        // The server closes with 1008 at `exp`; the reconnect fetches a token again.
        if (e.code !== "disconnected") this._emit("error", e);
      }
    });
  }

  // ---- frames and requests --------------------------------------------------------------

  _send(ws, op, fields, { timeout = this.options.requestTimeout } = {}) {
    if (!ws || ws !== this._ws || ws.readyState !== 1) {
      return Promise.reject(new WsedgeError("disconnected", "not connected"));
    }
    const id = ++this._nextId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new WsedgeError("timeout", `${op}: no reply within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ id, op, ...fields }));
    });
  }

  /** A request that waits for a connection (wait: true) or fails at once when offline. */
  _request(op, fields, { wait = false } = {}) {
    if (this.state === "connected") return this._send(this._ws, op, fields);
    if (this._stopped) return Promise.reject(new WsedgeError("stopped", this._stopReason || "the client is closed"));
    if (!wait) return Promise.reject(new WsedgeError("disconnected", "not connected"));
    return new Promise((resolve, reject) => {
      const w = {
        go: () => {
          clearTimeout(timer);
          this._send(this._ws, op, fields).then(resolve, reject);
        },
        fail: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this._waiting = this._waiting.filter((x) => x !== w);
        reject(new WsedgeError("timeout", `${op}: not connected within ${this.options.requestTimeout} ms`));
      }, this.options.requestTimeout);
      this._waiting.push(w);
    });
  }

  /** A request about a joined room: waits (up to requestTimeout) for its join. */
  _roomRequest(room, op, fields) {
    if (room.left) return Promise.reject(new WsedgeError("left", `not in room ${room.name}`));
    if (room.joined) return this._send(this._ws, op, { room: room.name, ...fields });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new WsedgeError("timeout", `${op}: room ${room.name} not joined within ${this.options.requestTimeout} ms`));
      }, this.options.requestTimeout);
      const off = room.on("_ready", (ok) => {
        off();
        clearTimeout(timer);
        if (!ok) return reject(new WsedgeError("left", `not in room ${room.name}`));
        this._send(this._ws, op, { room: room.name, ...fields }).then(resolve, reject);
      });
    });
  }

  _onFrame(msg) {
    if ("id" in msg) {
      // A reply (pushes never carry an id).
      const p = this._pending.get(msg.id);
      if (!p) {
        if (msg.error) this._emit("error", new WsedgeError(msg.error.code, msg.error.message));
        return;
      }
      this._pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.error) p.reject(new WsedgeError(msg.error.code, msg.error.message));
      else p.resolve(msg.ok ?? {});
      return;
    }
    if (msg.op === "welcome") {
      this.clientId = msg.client;
      // An `auth` reply after this one (anonymous welcome first) sets them.
      this.user = msg.user;
      this.info = msg.info ?? null;
      this._welcomed = true;
      this._emit("welcome", { client: msg.client, user: msg.user, info: this.info });
      return this._maybeReady();
    }
    if (msg.op === "message" && msg.room === undefined && msg.user !== undefined) {
      // A message to this user from the backend (POST /api/publish {"user"}): on every
      // connection of the user, in no room, live only.
      return this._emit("message", msg);
    }
    const room = this._rooms.get(msg.room);
    if (!room) return;
    switch (msg.op) {
      case "message":
        if (room._syncing) return void room._buffer.push(msg);
        return this._deliver(room, msg);
      case "join":
      case "leave":
        // A stream asks one presence for all its rooms: not every room wanted it.
        if (!room.presence) return;
        return room._presenceEvent(msg);
      case "reset":
        // The engine lost continuity (future engines): reload like recovered: false. While a
        // join is on its way its reply already tells (a new epoch: not recovered).
        if (!room.joined) return;
        return this._reload(room, { reason: "reset", epoch: msg.epoch, offset: msg.offset });
    }
  }

  /** Delivers one message push: ephemeral ones as they come, others once each, in order. */
  _deliver(room, msg) {
    if (typeof msg.offset !== "number") {
      if (msg.data && msg.data.typing === true && Object.keys(msg.data).length === 1 && msg.from && msg.from.client) {
        return room._typing(msg);
      }
      return room._emit("ephemeral", msg);
    }
    this._match(room, msg);
    if (msg.offset <= room.offset) return; // seen already
    room.offset = msg.offset;
    if (msg.from && room._typers.has(msg.from.client)) {
      // A message from a typer ends its typing indicator.
      clearTimeout(room._typers.get(msg.from.client).timer);
      room._typers.delete(msg.from.client);
      room._emit("typing", { member: msg.from, typing: false, typers: room.typers() });
    }
    room._emit("message", msg);
  }

  /**
   * A message from the connection a publish of ours went out on is that publish: the
   * server handles a connection's publishes to a room in order, so the first unmatched one
   * is it. This is how a publish whose reply was lost in a drop still learns its offset.
   */
  _match(room, msg) {
    const from = msg.from && msg.from.client;
    if (!from) return;
    const item = room._inflight.find((i) => i.offset === undefined && i.sentAs === from && !i.ephemeral);
    if (item) item.offset = msg.offset;
  }

  // ---- rooms ------------------------------------------------------------------------------

  _roomDropped(room) {
    room.joined = false;
    room._syncing = false;
    room._buffer = [];
    room._clearTypers();
    // Publishes that went out without a reply: those whose message we saw are done; the
    // others are settled after the rejoin (found in `missed`) or sent again.
    room._inflight = room._inflight.filter((item) => {
      if (item.ephemeral) {
        item.reject(new WsedgeError("disconnected", "the connection closed before the reply"));
        return false;
      }
      if (item.offset !== undefined) {
        this.stats.settledByMessage++;
        item.resolve({ room: room.name, offset: item.offset });
        return false;
      }
      item.unconfirmed = true;
      return true;
    });
  }

  async _sync(room) {
    const ws = this._ws;
    room._syncing = true;
    room._buffer = [];
    room.joined = false;
    // `true` rather than "connections": servers before presence by user know only booleans.
    const mode = presenceMode(room.presence);
    const fields = { room: room.name, presence: mode === "users" ? "users" : !!mode };
    const first = room.epoch === null;
    if (!first) fields.since = { epoch: room.epoch, offset: room.offset };
    let ok;
    try {
      ok = await this._send(ws, "join", fields);
    } catch (e) {
      return this._syncFailed(room, ws, e);
    }
    if (ws !== this._ws) return;
    if (room.left) {
      // Left while the join was on its way: the server has us as a member; undo that
      // (unless the room was joined again meanwhile).
      if (!this._rooms.has(room.name)) this._send(ws, "leave", { room: room.name }).catch(() => {});
      return;
    }
    this._emit("joined", room.name);
    room._emit("joined", { epoch: ok.epoch, offset: ok.offset, members: ok.members, recovered: ok.recovered, first });
    if (!first && ok.recovered && ok.epoch === room.epoch) {
      for (const m of ok.missed) this._deliver(room, m);
      return this._synced(room, ws);
    }
    if (first && !this._historyWanted(room)) {
      room.epoch = ok.epoch;
      room.offset = ok.offset;
      return this._synced(room, ws);
    }
    return this._reload(room, { epoch: ok.epoch, offset: ok.offset, reason: first ? "join" : "not recovered", ws });
  }

  _historyWanted(room) {
    return room._historyOnJoin > 0;
  }

  /** Continuity lost (or history wanted on the first join): reload from `history`. */
  async _reload(room, { reason, ws = this._ws, epoch, offset }) {
    room._syncing = true;
    const previousEpoch = room.epoch;
    const first = reason === "join";
    const limit = first ? room._historyOnJoin : this.options.historyLimit;
    let h;
    if (this.transport === "sse") {
      // No `history` over a stream: the reset says where to continue from, with no messages.
      h = { room: room.name, epoch, offset, messages: [] };
    } else {
      try {
        h = await this._send(ws, "history", { room: room.name, limit });
      } catch (e) {
        return this._syncFailed(room, ws, e);
      }
    }
    if (ws !== this._ws || room.left) return;
    // Publishes of ours whose replies were lost and whose messages are still kept.
    if (h.epoch === room.epoch) for (const m of h.messages) if (m.offset > room.offset) this._match(room, m);
    room.epoch = h.epoch;
    room.offset = h.offset;
    if (reason !== "join") this.stats.resets++;
    room._emit("reset", { room: room.name, epoch: h.epoch, offset: h.offset, messages: h.messages, reason, previousEpoch });
    this._synced(room, ws);
  }

  _synced(room, ws) {
    room._syncing = false;
    room.joined = true;
    for (const m of room._buffer.splice(0)) this._deliver(room, m); // live pushes held meanwhile
    // Unconfirmed publishes from before the drop: matched ones are done, the rest go again
    // (with the same key) ahead of anything queued after them.
    const resend = [];
    room._inflight = room._inflight.filter((item) => {
      if (!item.unconfirmed) return true;
      if (item.offset !== undefined) {
        this.stats.settledByMessage++;
        item.resolve({ room: room.name, offset: item.offset });
      } else resend.push(item);
      return false;
    });
    if (resend.length) {
      for (const item of resend) item.unconfirmed = false;
      this.stats.resent += resend.length;
      this._outbox = [...resend, ...this._outbox].sort((a, b) => a.seq - b.seq);
    }
    room._emit("_ready", true);
    if (room.presence) {
      this._send(ws, "presence", { room: room.name }).then(
        (ok) => ws === this._ws && !room.left && room._setMembers(ok.members),
        () => {},
      );
    }
    this._flush();
  }

  _syncFailed(room, ws, e) {
    if (ws !== this._ws || room.left) return;
    room._syncing = false;
    if (typeof e.code === "number" && e.code !== 429) {
      // Refused (400, 403, 503...): retrying will not help. Forget the room.
      room._emit("error", e);
      this._emit("error", e);
      this._forget(room, e);
    } else if (e.code === "timeout" || e.code === 429) {
      // No answer: the link is suspect; reconnect and rejoin everything.
      this._drop(4003, "join timed out");
    }
  }

  _forget(room, error) {
    room.left = true;
    room.joined = false;
    this._rooms.delete(room.name);
    room._clearTypers();
    for (const item of room._inflight.splice(0)) item.reject(error);
    this._outbox = this._outbox.filter((item) => {
      if (item.room !== room) return true;
      item.reject(error);
      return false;
    });
    room._emit("_ready", false);
  }

  async _leave(room) {
    if (room.left) return;
    const wasJoined = room.joined;
    this._forget(room, new WsedgeError("left", `left room ${room.name}`));
    room._emit("left", {});
    if (wasJoined && this.state === "connected") {
      await this._send(this._ws, "leave", { room: room.name }).catch((e) => {
        if (e.code !== 404 && e.code !== "disconnected") throw e;
      });
    }
  }

  _publish(room, data, options) {
    if (room.left) return Promise.reject(new WsedgeError("left", `not in room ${room.name}`));
    if (this._stopped) return Promise.reject(new WsedgeError("stopped", this._stopReason || "the client is closed"));
    try {
      if (JSON.stringify(data) === undefined) throw new TypeError("undefined");
    } catch (e) {
      return Promise.reject(new TypeError(`publish: data must be a JSON value (${e.message})`));
    }
    const { echo, ephemeral, noQueue } = options;
    const key = options.key ?? (ephemeral ? undefined : newKey());
    return new Promise((resolve, reject) => {
      const item = { room, data, echo, ephemeral: !!ephemeral, key, seq: ++this._seq, resolve, reject };
      const ready = room.joined && this.state === "connected" && !this._outbox.some((i) => i.room === room);
      if (ready && this._takeToken()) return this._transmit(item);
      if (noQueue) return reject(new WsedgeError(ready ? "rate" : "disconnected", ready ? "over the publish rate" : "not connected"));
      if (this._outbox.length >= this.options.maxQueue) {
        return reject(new WsedgeError("queue_full", `publish queue full: ${this.options.maxQueue} publishes are waiting (offline, rejoining or over the publish rate)`));
      }
      this._outbox.push(item);
      if (ready) this._scheduleFlush();
    });
  }

  _transmit(item) {
    const { room } = item;
    const fields = { room: room.name, data: item.data };
    if (item.echo === false) fields.echo = false;
    if (item.ephemeral) fields.ephemeral = true;
    // The idempotency key: the server answers a repeat with the first offset (`duplicate`).
    if (item.key !== undefined && this.options.sendKeys) fields.key = item.key;
    // Over a stream the POST goes out later (one at a time), maybe as the next stream's
    // member after a 410: which connection sends it is not known here, so no matching by
    // message; the key settles a lost reply (every server with POST /publish has keys).
    item.sentAs = this.transport === "sse" ? undefined : this.clientId;
    item.offset = undefined;
    if (!item.ephemeral) room._inflight.push(item); // ephemeral ones are never recovered
    this._send(this._ws, "publish", fields).then(
      (ok) => {
        room._inflight = room._inflight.filter((i) => i !== item);
        item.resolve(ok);
      },
      (e) => {
        if (e.code === "disconnected" && room._inflight.includes(item)) return; // settled after the rejoin
        room._inflight = room._inflight.filter((i) => i !== item);
        if (e.code === 429 && !item.ephemeral && !room.left && (item.refused = (item.refused || 0) + 1) <= 10) {
          // Over the server's rate (its limit is lower than publishRate): wait, then again.
          // Later publishes already sent may land first; publishRate avoids getting here.
          this._tokens = 0;
          this.stats.retried429++;
          this._outbox = [item, ...this._outbox].sort((a, b) => a.seq - b.seq);
          return this._scheduleFlush(1000);
        }
        item.reject(e);
      },
    );
  }

  /** Takes one publish from the client-side bucket (publishRate per second, publishBurst). */
  _takeToken() {
    const rate = this.options.publishRate;
    if (!rate) return true;
    const now = Date.now();
    this._tokens = Math.min(this.options.publishBurst || rate, this._tokens + ((now - this._tokensAt) * rate) / 1000);
    this._tokensAt = now;
    if (this._tokens < 1) return false;
    this._tokens -= 1;
    return true;
  }

  _scheduleFlush(ms) {
    if (this._timers.flush) return;
    const rate = this.options.publishRate || 1000;
    const wait = ms ?? Math.max(1, Math.ceil(((1 - this._tokens) * 1000) / rate));
    this._setTimer("flush", wait, () => this._flush());
  }

  /** Sends queued publishes whose room is joined, keeping each room's order. */
  _flush() {
    if (this.state !== "connected") return;
    const keep = [];
    const blocked = new Set();
    let limited = false;
    for (const item of this._outbox) {
      if (item.room.left) continue;
      if (!item.room.joined || blocked.has(item.room) || limited || !this._takeToken()) {
        if (item.room.joined) limited = true;
        blocked.add(item.room);
        keep.push(item);
      } else {
        this._transmit(item);
      }
    }
    this._outbox = keep;
    if (limited) this._scheduleFlush();
  }
}

export default WsedgeClient;
