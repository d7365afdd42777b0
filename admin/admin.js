// wsedge admin page: one event stream of the server's own (GET api/admin/stream, read with
// fetch so it can carry the key as `Authorization: Bearer`), one `stats` snapshot per second;
// rates are taken from two successive snapshots (totals since start, as /metrics has them).
// Everything from the server is shown with textContent / createElement: never as HTML.
// No dependency, no build step; served embedded in the binary with a policy that forbids
// inline script.

const KEY_ITEM = "wsedge-admin-key";
const HISTORY_POINTS = 300; // five minutes of one-second points
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

let key = sessionStorage.getItem(KEY_ITEM);
let stream = null; // the AbortController of the open stream
let previous = null; // the last snapshot
let retryTimer = 0;
const series = new Map(); // chart name -> numbers

// ---- the key ----

function lock(message) {
  stream?.abort();
  stream = null;
  clearTimeout(retryTimer);
  key = null;
  sessionStorage.removeItem(KEY_ITEM);
  previous = null;
  $("live").hidden = true;
  $("forget").hidden = true;
  $("unlock").hidden = false;
  $("unlock-error").textContent = message || "";
  setStatus("locked", "locked");
  $("key").focus();
}

function unlock(newKey) {
  key = newKey;
  sessionStorage.setItem(KEY_ITEM, key);
  $("unlock").hidden = true;
  $("live").hidden = false;
  $("forget").hidden = false;
  connect();
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

const authorized = (init = {}) => ({ ...init, cache: "no-store", headers: { ...init.headers, Authorization: `Bearer ${key}` } });

// ---- the stream ----

async function connect() {
  clearTimeout(retryTimer);
  stream?.abort();
  const controller = new AbortController();
  stream = controller;
  setStatus("connecting", "connecting…");
  let response;
  try {
    response = await fetch("api/admin/stream", authorized({ signal: controller.signal }));
  } catch (e) {
    return retry(controller, `offline (${e.message})`);
  }
  if (response.status === 401) return lock("Wrong key: the server refused it.");
  if (response.status === 404) return lock("The backend API is off on this server.");
  if (!response.ok || !response.body) return retry(controller, `refused: ${response.status}`);
  setStatus("live", "live");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        dispatch(block);
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
  }
  retry(controller, "disconnected");
}

function retry(controller, why) {
  if (stream !== controller) return; // replaced or locked meanwhile
  setStatus("offline", `${why}: retrying`);
  retryTimer = setTimeout(connect, 2000);
}

/** One SSE block: `event:` and `data:` lines (comments and other fields ignored). */
function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (event !== "stats" || data.length === 0) return;
  try {
    show(JSON.parse(data.join("\n")));
  } catch (e) {
    console.error("bad stats event", e);
  }
}

// ---- showing a snapshot ----

const number = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });
const fmt = (n) => (n >= 10000 ? number.format(Math.round(n)) : number.format(n));

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${number.format(n)} ${units[i]}`;
}

function setValue(id, value, text) {
  const el = $(id);
  el.dataset.value = String(value);
  el.textContent = text ?? fmt(value);
}

function show(s) {
  const t = s.transport;
  const p = previous;
  previous = s;
  const dt = p ? (s.at_ms - p.at_ms) / 1000 : 0;
  const rate = (now, before) => (p && dt > 0 ? Math.max(0, (now - before) / dt) : 0);
  const rates = {
    handshakes: rate(t.connections_total + t.streams_total, p ? p.transport.connections_total + p.transport.streams_total : 0),
    messagesIn: rate(t.messages_in, p?.transport.messages_in),
    deliveries: rate(t.messages_out, p?.transport.messages_out),
    bytesIn: rate(t.bytes_in, p?.transport.bytes_in),
    bytesOut: rate(t.bytes_out, p?.transport.bytes_out),
    published: s.rooms && s.rooms.interval_ms > 0 ? (s.rooms.published * 1000) / s.rooms.interval_ms : 0,
  };
  setValue("v-connections", t.connections);
  setValue("v-handshakes", rates.handshakes);
  setValue("v-messages-in", rates.messagesIn);
  setValue("v-published", rates.published);
  setValue("v-deliveries", rates.deliveries);
  setValue("v-bytes-in", rates.bytesIn, `${bytes(rates.bytesIn)}/s`);
  setValue("v-bytes-out", rates.bytesOut, `${bytes(rates.bytesOut)}/s`);
  setValue("v-slow", t.slow_consumer_closes);
  setValue("v-streams", t.streams);
  setValue("v-refusals", t.handshake_failures);
  if (s.rooms) {
    setValue("v-rooms", s.rooms.count, `${fmt(s.rooms.count)} / ${fmt(s.rooms.members)}`);
    setValue("v-history", s.rooms.history_bytes, `${bytes(s.rooms.history_bytes)} (${fmt(s.rooms.history_messages)} msgs)`);
  }
  if (p) {
    record("connections", t.connections, fmt);
    record("handshakes/s", rates.handshakes, fmt);
    record("messages in/s", rates.messagesIn, fmt);
    record("deliveries/s", rates.deliveries, fmt);
    record("bytes out/s", rates.bytesOut, (n) => `${bytes(n)}/s`);
  }
  $("user-form").hidden = !s.users;
  showWorkers(s, p, dt);
  showRooms(s, dt);
  showCloses(t, p, dt);
  showStore(s.store, p?.store);
  showNodes(s);
}

/** Replaces a table body's rows: each row an array of cell texts. */
function rows(id, data, empty) {
  const body = $(id);
  const made = data.map((cells) => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      tr.append(td);
    }
    return tr;
  });
  if (made.length === 0 && empty) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = body.closest("table")?.tHead?.rows[0]?.cells.length ?? 1;
    td.className = "empty";
    td.textContent = empty;
    tr.append(td);
    made.push(tr);
  }
  body.replaceChildren(...made);
}

function showWorkers(s, p, dt) {
  rows(
    "workers",
    s.workers.map((w, i) => {
      const before = p?.workers[i];
      const busy = before && dt > 0 ? Math.min(100, (w.busy_us - before.busy_us) / (dt * 10000)) : 0;
      const msgs = before && dt > 0 ? Math.max(0, (w.messages_in - before.messages_in) / dt) : 0;
      return [i, fmt(w.connections), fmt(w.streams), fmt(msgs), `${busy.toFixed(1)} %`];
    }),
  );
}

function showRooms(s, dt) {
  if (!s.rooms) {
    rows("top-members", [], "room list unavailable");
    rows("top-traffic", [], "room list unavailable");
    return;
  }
  const perSecond = (r) => (s.rooms.interval_ms > 0 ? (r.messages * 1000) / s.rooms.interval_ms : 0);
  rows("top-members", s.rooms.top_members.map((r) => [r.room, fmt(r.members), fmt(perSecond(r))]), "no rooms");
  rows("top-traffic", s.rooms.top_traffic.map((r) => [r.room, fmt(perSecond(r)), fmt(r.members)]), "no traffic");
}

function showCloses(t, p, dt) {
  const per = (list, match, count) => {
    const before = p ? list(p.transport).find(match) : undefined;
    return before && dt > 0 ? Math.max(0, (count - before.count) / dt) : 0;
  };
  rows(
    "closes",
    t.closes.map((c) => [c.code, c.initiator, fmt(c.count), fmt(per((x) => x.closes, (b) => b.code === c.code && b.initiator === c.initiator, c.count))]),
    "none yet",
  );
  rows(
    "refusals",
    t.refusals.map((r) => [r.reason, fmt(r.count), fmt(per((x) => x.refusals, (b) => b.reason === r.reason, r.count))]),
    "none yet",
  );
}

function showStore(store, before) {
  $("store").hidden = !store;
  if (!store) return;
  const trips = before ? store.round_trips - before.round_trips : 0;
  const rtt = trips > 0 ? (store.round_trip_us - before.round_trip_us) / trips / 1000 : null;
  rows("store-rows", [
    ["reachable", store.up ? "yes" : "NO"],
    ["round trip (avg, last second)", rtt === null ? "–" : `${rtt.toFixed(2)} ms`],
    ["round trips", fmt(store.round_trips)],
    ["commands in flight", fmt(store.in_flight)],
    ["reconnects", fmt(store.reconnects)],
  ]);
}

/** Each node's last two distinct reports (id -> [before, latest]): nodes report every
 * second on their own clocks, so rates come from their reports, not from this page's ticks. */
const reports = new Map();

function showNodes(s) {
  $("nodes-section").hidden = !s.nodes;
  if (!s.nodes) return;
  for (const n of s.nodes) {
    const known = reports.get(n.id);
    if (!known) reports.set(n.id, [null, n]);
    else if (n.at_ms > known[1].at_ms) reports.set(n.id, [known[1], n]);
  }
  for (const id of reports.keys()) if (!s.nodes.some((n) => n.id === id)) reports.delete(id);
  rows(
    "nodes",
    s.nodes.map((n) => {
      const before = reports.get(n.id)[0];
      const dt = before ? (n.at_ms - before.at_ms) / 1000 : 0;
      const per = (now, then) => (before && dt > 0 ? Math.max(0, (now - then) / dt) : 0);
      const trips = before ? n.store.round_trips - before.store.round_trips : 0;
      const rtt = trips > 0 ? `${((n.store.round_trip_us - before.store.round_trip_us) / trips / 1000).toFixed(2)} ms` : "–";
      const load = per(n.busy_us, before?.busy_us) / 10000 / Math.max(1, n.workers);
      const silent = (s.at_ms - n.at_ms) / 1000;
      const state = silent > 3 ? `silent ${silent.toFixed(0)} s` : n.store.up ? "up" : "Redis unreachable";
      return [
        n.id === s.node.id ? `${n.name} (this page)` : n.name,
        state,
        fmt(n.connections),
        fmt(n.streams),
        fmt(per(n.messages_in, before?.messages_in)),
        fmt(per(n.messages_out, before?.messages_out)),
        `${Math.min(100, load).toFixed(1)} %`,
        rtt,
        duration((n.at_ms - n.started_ms) / 1000),
      ];
    }),
    "no node has reported yet",
  );
}

function duration(seconds) {
  if (seconds < 120) return `${Math.max(0, Math.round(seconds))} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

// ---- charts: one small SVG each, drawn here ----

function record(name, value, format) {
  let points = series.get(name);
  if (!points) {
    points = [];
    series.set(name, points);
  }
  points.push(value);
  if (points.length > HISTORY_POINTS) points.shift();
  draw(name, points, format);
}

function draw(name, points, format) {
  const id = `chart-${name.replace(/[^a-z]+/g, "-")}`;
  let figure = $(id);
  if (!figure) {
    figure = document.createElement("figure");
    figure.id = id;
    const caption = document.createElement("figcaption");
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${HISTORY_POINTS} 60`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "chart");
    const area = document.createElementNS(SVG, "polygon");
    const line = document.createElementNS(SVG, "polyline");
    svg.append(area, line);
    figure.append(caption, svg);
    $("charts").append(figure);
  }
  const max = Math.max(1, ...points);
  // What there is fills the width (up to five minutes), newest on the right.
  const x = (i) => (((HISTORY_POINTS - 1) * i) / Math.max(1, points.length - 1)).toFixed(1);
  const coords = points.map((v, i) => `${x(i)},${(58 - (v / max) * 54).toFixed(1)}`);
  const [area, line] = figure.querySelector("svg").children;
  line.setAttribute("points", coords.join(" "));
  area.setAttribute("points", `${x(0)},60 ${coords.join(" ")} ${HISTORY_POINTS - 1},60`);
  figure.querySelector("figcaption").textContent = `${name}: ${format(points[points.length - 1])} (max ${format(max)}, last ${points.length < 120 ? `${points.length} s` : `${Math.round(points.length / 60)} min`})`;
}

// ---- actions: the backend API, with the key ----

function result(title, items) {
  $("result-title").textContent = title;
  $("result-list").replaceChildren(
    ...items.map((item) => {
      const li = document.createElement("li");
      li.textContent = item;
      return li;
    }),
  );
}

async function call(path, init) {
  const response = await fetch(path, authorized(init));
  let body = null;
  try {
    body = await response.json();
  } catch {
    // a plain-text answer (413, 411): the status says it
  }
  if (response.status === 401) lock("Wrong key: the server refused it.");
  if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
  return body;
}

const describeMember = (m) => {
  const who = m.user ?? `anonymous ${m.client ?? ""}`.trim();
  const parts = [who];
  if (m.connections) parts.push(`${m.connections} connection(s)`);
  if (m.info) parts.push(JSON.stringify(m.info));
  return parts.join(" · ");
};

async function roomAction(action) {
  const room = $("room").value.trim();
  const q = encodeURIComponent(room);
  try {
    if (action === "presence") {
      const body = await call(`api/presence?room=${q}&by=users`);
      result(`${room}: ${body.members.length} present`, body.members.map(describeMember));
    } else if (action === "history") {
      const body = await call(`api/history?room=${q}&limit=20`);
      result(
        `${room}: last ${body.messages.length} message(s), offset ${body.offset}`,
        body.messages.map((m) => `#${m.offset} ${m.from?.user ?? m.from?.client ?? "backend"}: ${JSON.stringify(m.data)}`),
      );
    } else {
      const text = $("data").value;
      let data;
      try {
        data = JSON.parse(text);
      } catch {
        data = text; // plain text is sent as a JSON string
      }
      const body = await call("api/publish", { method: "POST", body: JSON.stringify({ room, data }) });
      result(`published to ${body.room} at offset ${body.offset}`, []);
    }
  } catch (e) {
    result(`${action} ${room}: ${e.message}`, []);
  }
}

async function disconnectUser() {
  const user = $("user").value;
  try {
    const body = await call("api/disconnect", { method: "POST", body: JSON.stringify({ user }) });
    result(`${body.user}: ${body.connections} connection(s) closed${body.complete === false ? " (some nodes did not answer)" : ""}`, []);
  } catch (e) {
    result(`disconnect ${user}: ${e.message}`, []);
  }
}

// ---- wiring ----

$("unlock").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("key").value.trim();
  $("key").value = "";
  if (value) unlock(value);
});
$("forget").addEventListener("click", () => lock(""));
$("room-form").addEventListener("submit", (e) => {
  e.preventDefault();
  roomAction(e.submitter?.dataset.action || "presence");
});
$("user-form").addEventListener("submit", (e) => {
  e.preventDefault();
  disconnectUser();
});

if (key) unlock(key);
else lock("");
