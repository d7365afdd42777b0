// Compiled with `tsc --noEmit` by test.sh: index.d.ts must type the README's examples and
// every wsedge.v1 frame. Not run.
import { EventStreamParser, WsedgeClient, WsedgeError, backoffDelay, type ClientFrame, type MessagePush, type ServerFrame, type Transport, type WebSocketConstructor } from "wsedge-client";

declare const WebSocket: WebSocketConstructor; // e.g. the `ws` package's

const client = new WsedgeClient("ws://127.0.0.1:9001/ws", {
  token: "t",
  getToken: async () => "fresh",
  minReconnectDelay: 500,
  maxReconnectDelay: 30000,
  WebSocket,
});
const off: () => void = client.on("state", (s, { reason, retryIn }) => {
  const state: "connecting" | "connected" | "disconnected" = s;
  if (retryIn === null) console.log(state, reason);
});
off();

interface Chat {
  text: string;
}
const room = client.join<Chat>("lobby", { presence: true, history: 50 });
room.on("message", (m) => {
  const offset: number = m.offset;
  const text: string = m.data.text;
  const who: string | null = m.from.user;
  console.log(offset, text, who);
});
room.on("presence", (e) => console.log(e.op === "join" ? "+" : "-", e.member.client));
room.on("reset", (r) => r.messages.map((m: MessagePush) => m.offset));
room.on("typing", ({ typers }) => typers.length);
room.on("members", (list) => list.map((m) => m.user));
const connectionIds: string[] = room.members().map((m) => m.client);

// Presence by user: one entry per user, with its connections and the token's info.
const byUser = client.join("team", { presence: "users" });
byUser.on("presence", (e) => console.log(e.op, e.member.user ?? e.member.client, e.member.info?.name));
for (const m of byUser.members()) {
  const who: string = m.user ?? m.client;
  const tabs: number | undefined = m.connections;
  console.log(who, tabs);
}
const typedByUser = client.join<Chat, "users">("team-chat", { presence: "users" });
typedByUser.on("members", (list) => list.map((m) => m.connections));
client.on("welcome", ({ user, info }) => console.log(user, info?.name, client.info));
client.on("message", (m) => {
  const to: string = m.user;
  console.log(to, m.data);
});
client.on("kicked", ({ code, reason }) => console.log(code, reason));

async function use(): Promise<void> {
  const { offset } = await room.publish({ text: "hi" });
  await room.publish({ text: "quiet" }, { echo: false, key: "k1" });
  room.typing();
  const h = await room.history({ limit: 50 });
  console.log(offset, h.epoch, h.offset, h.messages.length, room.members(), await room.fetchMembers());
  await room.leave();
  console.log(await client.ping(), client.stats.resent, backoffDelay(3));
  client.close();
  try {
    await room.publish({ text: "late" });
  } catch (e) {
    if (e instanceof WsedgeError && e.code === "queue_full") console.log("full");
  }
}
void use();

function handle(frame: ServerFrame): void {
  if ("id" in frame) {
    if ("error" in frame) console.log(frame.error.code, frame.error.message);
    return;
  }
  switch (frame.op) {
    case "welcome":
      console.log(frame.client, frame.user);
      break;
    case "message":
      if (frame.room === undefined) console.log("to", frame.user, frame.data);
      else console.log(frame.room, frame.offset ?? "ephemeral", frame.from.info, frame.data);
      break;
    case "join":
    case "leave":
      console.log(frame.member.client, frame.member.user, frame.member.info);
      break;
    case "reset":
      console.log(frame.epoch, frame.offset);
      break;
  }
}
handle(JSON.parse("{}") as ServerFrame);
const requests: ClientFrame[] = [
  { op: "auth", id: 1, token: "t" },
  { op: "join", id: 2, room: "r", presence: true, since: { epoch: "e", offset: 3 } },
  { op: "join", room: "r", presence: "users" },
  { op: "publish", id: 3, room: "r", data: { a: [1, null] }, echo: false, ephemeral: true, key: "k" },
  { op: "history", room: "r", limit: 5 },
  { op: "presence", room: "r" },
  { op: "leave", id: "x", room: "r" },
  { op: "ping" },
];
console.log(requests.length);

// The fallback to Server-Sent Events.
const fallback = new WsedgeClient("wss://example.com/ws", { transports: ["websocket", "sse"], fallbackAfter: 2, probeInterval: 60000, fetch: globalThis.fetch });
const sseOnly = new WsedgeClient("wss://example.com/ws", { transports: ["sse"], sseUrl: "https://example.com/sse", publishUrl: "https://example.com/publish" });
const now: Transport | null = fallback.transport;
console.log(now, sseOnly.transport === "sse");
new EventStreamParser(({ event, data, id }) => console.log(event, data, id ?? "no id")).feed("data: x\n\n");
