// The demo chat's behaviour: one WsedgeClient (the npm package, served by wsedge at
// /client.js), one room at a time with presence, history on join, a typing indicator, names
// announced with ephemeral messages, and a connection status that shows every drop and its
// healing. Everything the server sends is rendered as text, never as HTML.

import { WsedgeClient } from "./client.js";

const ROOMS = ["lobby", "random", "wsedge-dev"]; // the picker's suggestions; any valid name works
const HISTORY_ON_JOIN = 50;
const ROOM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/; // the server's rule (docs/protocol.md)

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// Per tab (sessionStorage, not localStorage): two tabs of one browser are two people.
let myName = (params.get("name") || sessionStorage.getItem("wsedge-demo-name") || randomName()).slice(0, 32);
sessionStorage.setItem("wsedge-demo-name", myName);

// The room protocol's endpoint on the server that served this page (ws: or wss: to match).
const wsUrl = new URL("ws", location.href);
wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const client = new WsedgeClient(wsUrl.href);

/** client id -> display name, learned from messages and `hello` announcements. */
const names = new Map();
/** Publishes not yet confirmed by their own message, by nonce: shown as "sending…". */
const pending = new Map();
const stats = { connects: 0, drops: 0, lastOutage: null, downSince: null, resets: 0 };

let room = null;

// ---- connection status ------------------------------------------------------------------

client.on("state", (state, { reason, retryIn }) => {
  const status = $("status");
  const banner = $("banner");
  if (state === "connected") {
    stats.connects++;
    if (stats.downSince !== null) stats.lastOutage = Date.now() - stats.downSince;
    stats.downSince = null;
    status.dataset.state = "connected";
    status.textContent = "connected";
    banner.hidden = true;
  } else if (retryIn === null) {
    status.dataset.state = "offline";
    status.textContent = "offline";
    banner.hidden = false;
    banner.textContent = `Disconnected: ${reason || "stopped"}. Reload the page to try again.`;
  } else {
    if (stats.downSince === null && stats.connects > 0) {
      stats.downSince = Date.now();
      stats.drops++;
    }
    // Before the first connection it is "connecting…"; after a drop, "reconnecting…" until
    // the client is back by itself (backoff with jitter, at once on the browser's `online`).
    const again = stats.connects > 0;
    status.dataset.state = again ? "reconnecting" : "connecting";
    status.textContent = again ? "reconnecting…" : "connecting…";
    if (again) {
      banner.hidden = false;
      banner.textContent =
        "Connection lost: reconnecting by itself. Messages you send now wait and go out once it is back.";
    }
  }
  // The member list is as last known: dimmed while we cannot know better.
  $("members").classList.toggle("stale", state !== "connected");
  renderStats();
});

client.on("welcome", ({ client: id }) => {
  names.set(id, myName);
  renderStats();
});

// ---- rooms ------------------------------------------------------------------------------

function enterRoom(name) {
  if (!ROOM_NAME.test(name) || (room && room.name === name)) return;
  if (room) {
    room.leave().catch(() => {}); // queued publishes of the old room reject: shown as failed
    for (const p of pending.values()) markFailed(p, "left the room");
    pending.clear();
  }
  $("log").replaceChildren();
  $("typing").textContent = "";
  $("room-title").textContent = `# ${name}`;
  params.set("room", name);
  history.replaceState(null, "", `?${params}`);

  room = client.join(name, { presence: true, history: HISTORY_ON_JOIN });
  const here = room;
  const live = (fn) => (...args) => here === room && fn(...args); // ignore a room we left

  here.on("reset", live(({ messages, reason, epoch, previousEpoch }) => {
    if (reason === "join") {
      // The first join: history on join, then live messages after it (messages typed
      // meanwhile stay, still "sending…").
      $("log").replaceChildren(...$("log").querySelectorAll(".pending"));
      if (messages.length) addNotice(`${messages.length} earlier message${messages.length === 1 ? "" : "s"}`);
    } else {
      // Continuity lost (the server restarted, or this room's history aged out): what is on
      // screen may miss messages, so it is kept but dimmed, and the server's history follows.
      stats.resets++;
      for (const li of $("log").querySelectorAll(".msg:not(.pending), .notice")) li.classList.add("stale");
      const why = epoch !== previousEpoch ? "the server restarted (new epoch)" : "messages aged out";
      addNotice(`history reloaded: ${why}; ${messages.length} message${messages.length === 1 ? "" : "s"} kept`, "reset");
    }
    for (const m of messages) addMessage(m);
    renderStats();
  }));
  here.on("message", live(addMessage));
  here.on("ephemeral", live(({ from, data }) => {
    if (from && from.client && data && typeof data.hello === "string") {
      names.set(from.client, data.hello.slice(0, 32));
      renderMembers();
    }
  }));
  here.on("joined", live(({ recovered, first, offset, epoch }) => {
    announce();
    // Recovered: the messages published while we were away come next, each exactly once.
    if (!first && recovered && epoch === here.epoch) {
      const missed = offset - here.offset;
      addNotice(`reconnected: ${missed} missed message${missed === 1 ? "" : "s"} recovered`, "recovered");
    }
  }));
  here.on("members", live(renderMembers));
  here.on("presence", live(({ op, member }) => {
    // A newcomer does not know our name yet: tell it (ephemeral, so nothing is stored).
    if (op === "join" && member.client !== client.clientId) announce();
    renderMembers();
  }));
  here.on("typing", live(renderTyping));
  here.on("error", live((e) => addNotice(`could not join ${here.name}: ${e.message}`, "error")));
  renderRooms();
}

/**
 * Tells the room who this connection is (ids are per connection, names are not). Called on
 * "joined", before the join is complete: the client sends it right after.
 */
function announce() {
  if (room) room.publish({ hello: myName }, { ephemeral: true, echo: false }).catch(() => {});
}

// ---- rendering --------------------------------------------------------------------------

function nameOf(from) {
  if (!from || !from.client) return "server";
  return from.user || names.get(from.client) || `guest ${from.client.slice(-4)}`;
}

function addMessage(m) {
  const data = m.data && typeof m.data === "object" ? m.data : { text: String(m.data) };
  if (m.from && m.from.client && typeof data.name === "string") names.set(m.from.client, data.name.slice(0, 32));
  const done = typeof data.nonce === "string" && pending.get(data.nonce);
  if (done) {
    done.remove();
    pending.delete(data.nonce);
  }
  const li = document.createElement("li");
  li.className = "msg";
  if (m.from && m.from.client === client.clientId) li.classList.add("mine");
  li.dataset.offset = m.offset;
  const who = document.createElement("b");
  who.textContent = typeof data.name === "string" ? data.name.slice(0, 32) : nameOf(m.from);
  const text = document.createElement("span");
  text.textContent = typeof data.text === "string" ? data.text : JSON.stringify(m.data);
  const offset = document.createElement("small");
  offset.textContent = `#${m.offset}`;
  li.append(who, text, offset);
  append(li);
  renderMembers(); // a message may have taught us a name
}

function addNotice(text, kind = "info") {
  const li = document.createElement("li");
  li.className = `notice ${kind}`;
  li.textContent = text;
  append(li);
}

/** Appends to the log, keeping it scrolled to the end if it was there. */
function append(li) {
  const log = $("log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 40;
  const firstPending = log.querySelector(".pending");
  log.insertBefore(li, li.classList.contains("pending") ? null : firstPending);
  if (atEnd) log.scrollTop = log.scrollHeight;
}

function markFailed(li, why) {
  li.classList.remove("pending");
  li.classList.add("failed");
  li.querySelector("small").textContent = `not sent: ${why}`;
}

function renderMembers() {
  const list = $("members");
  if (!room) return list.replaceChildren();
  const members = room.members();
  $("member-count").textContent = members.length ? `(${members.length})` : "";
  list.replaceChildren(
    ...members.map((m) => {
      const li = document.createElement("li");
      li.textContent = nameOf(m);
      if (m.client === client.clientId) {
        li.classList.add("me");
        li.textContent = `${myName} (you)`;
      }
      li.title = `connection ${m.client}`;
      return li;
    }),
  );
}

function renderTyping({ typers }) {
  const who = typers.map(nameOf);
  $("typing").textContent =
    who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.slice(0, -1).join(", ")} and ${who.at(-1)} are typing…`;
}

function renderRooms() {
  const all = [...new Set([...ROOMS, ...(room ? [room.name] : [])])];
  $("rooms").replaceChildren(
    ...all.map((name) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `# ${name}`;
      button.dataset.room = name;
      if (room && room.name === name) button.setAttribute("aria-current", "true");
      button.onclick = () => enterRoom(name);
      li.append(button);
      return li;
    }),
  );
}

function renderStats() {
  const rows = [
    ["you", myName],
    ["connection", client.clientId || "–"],
    ["connects", String(stats.connects)],
    ["drops", String(stats.drops)],
    ["last outage", stats.lastOutage === null ? "–" : `${(stats.lastOutage / 1000).toFixed(1)} s`],
    ["history reloads", String(stats.resets)],
  ];
  $("stats").replaceChildren(
    ...rows.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dd.dataset.stat = k;
      return [dt, dd];
    }),
  );
}

// ---- input ------------------------------------------------------------------------------

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || !room) return;
  input.value = "";
  // Shown at once as "sending…"; replaced by the message itself when it comes back with its
  // offset (offline it waits in the client's queue and goes out after the rejoin).
  const nonce = Math.random().toString(36).slice(2);
  const li = document.createElement("li");
  li.className = "msg mine pending";
  const who = document.createElement("b");
  who.textContent = myName;
  const body = document.createElement("span");
  body.textContent = text;
  const note = document.createElement("small");
  note.textContent = "sending…";
  li.append(who, body, note);
  pending.set(nonce, li);
  append(li);
  room.publish({ text, name: myName, nonce }).catch((err) => {
    if (pending.delete(nonce)) markFailed(li, err.message);
  });
});

$("message-input").addEventListener("input", () => {
  if (room && $("message-input").value) room.typing(); // throttled by the client
});

$("room-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("room-input").value.trim();
  if (!ROOM_NAME.test(name)) return;
  $("room-input").value = "";
  enterRoom(name);
});

$("name-input").value = myName;
$("name-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("name-input").value.trim().slice(0, 32);
  if (!name || name === myName) return;
  myName = name;
  sessionStorage.setItem("wsedge-demo-name", myName);
  if (client.clientId) names.set(client.clientId, myName);
  announce();
  renderMembers();
  renderStats();
});

function randomName() {
  const animals = ["otter", "heron", "lynx", "badger", "gecko", "puffin", "marten", "ibis"];
  return `${animals[Math.floor(Math.random() * animals.length)]}-${Math.floor(Math.random() * 900 + 100)}`;
}

// For the browser test and the curious: `wsedgeDemo.client.stats` in the console.
window.wsedgeDemo = { client, get room() { return room; }, stats };

renderStats();
enterRoom(ROOM_NAME.test(params.get("room") || "") ? params.get("room") : ROOMS[0]);
