// Types for wsedge-client and the `wsedge.v1` wire protocol (docs/protocol.md).

// ---- wsedge.v1 on the wire --------------------------------------------------------------

/** Any JSON value: what `data` may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A token's `info` claim: the user's profile for the app (a JSON object of at most 1 KiB). */
export type UserInfo = { [key: string]: Json };

/**
 * A connection: its id (a new one per connection), its token's `sub` (null: anonymous) and
 * `info` (absent when the token has none).
 */
export interface Member {
  client: string;
  user: string | null;
  info?: UserInfo;
}

/**
 * One user in presence by user (`presence: "users"`): a signed-in user (no `client`), or an
 * anonymous connection, a user of its own. `connections`: that user's connections in the
 * room, in the `presence` reply (members() counts a user added by a `join` event as 1).
 */
export type UserMember =
  | { user: string; info?: UserInfo; connections?: number; client?: undefined }
  | { client: string; user: null; connections?: number; info?: undefined };

/** What `join` asks for: presence per connection (true, "connections"), per user, or none. */
export type Presence = boolean | "connections" | "users";

/** The member a room with presence `P` lists: per user with "users", else per connection. */
export type PresenceMember<P extends Presence = Presence> = P extends "users" ? UserMember : Member;

/** Who published a message: a connection, or `{client: null, user: null}` for the backend API. */
export interface From {
  client: string | null;
  user: string | null;
  info?: UserInfo;
}

/** A position in a room's history: what `join` resumes from. */
export interface Since {
  epoch: string;
  offset: number;
}

/** A request id: a number or a string; the reply carries the same. */
export type RequestId = number | string;

export interface JoinRequest {
  op: "join";
  id?: RequestId | null;
  room: string;
  presence?: Presence;
  since?: Since;
}
export interface LeaveRequest {
  op: "leave";
  id?: RequestId | null;
  room: string;
}
export interface PublishRequest {
  op: "publish";
  id?: RequestId | null;
  room: string;
  data: Json;
  echo?: boolean;
  ephemeral?: boolean;
  /** Idempotency key, 1-64 bytes (issue 15; servers without it ignore the field). */
  key?: string;
}
export interface PresenceRequest {
  op: "presence";
  id?: RequestId | null;
  room: string;
}
export interface HistoryRequest {
  op: "history";
  id?: RequestId | null;
  room: string;
  limit?: number;
}
export interface PingRequest {
  op: "ping";
  id?: RequestId | null;
}
export interface AuthRequest {
  op: "auth";
  id?: RequestId | null;
  token: string;
}
/** Every frame a client sends. */
export type ClientFrame = JoinRequest | LeaveRequest | PublishRequest | PresenceRequest | HistoryRequest | PingRequest | AuthRequest;

export interface JoinReply {
  room: string;
  epoch: string;
  /** The room's last offset (0: no message yet). */
  offset: number;
  /** Member count, you included. */
  members: number;
  recovered: boolean;
  missed: MessagePush[];
}
export interface LeaveReply {
  room: string;
}
export interface PublishReply {
  room: string;
  /** Absent for an ephemeral publish. */
  offset?: number;
  /** True when the server had this `key` already (no second message). */
  duplicate?: boolean;
}
export interface PresenceReply {
  room: string;
  /** Per user (with `connections`) when you joined with `"presence": "users"`. */
  members: Member[] | UserMember[];
}
export interface HistoryReply {
  room: string;
  epoch: string;
  offset: number;
  /** Oldest first; each exactly the `message` push members received. */
  messages: MessagePush[];
}
export type PingReply = Record<string, never>;
export interface AuthReply {
  user: string;
}

export interface OkReply<T = unknown> {
  id: RequestId;
  ok: T;
}
export interface ErrorBody {
  /** 400, 401, 403, 404, 413, 429 or 503 (docs/protocol.md, "Errors"). */
  code: number;
  message: string;
}
export interface ErrorReply {
  /** null when the request had no id or an invalid one. */
  id: RequestId | null;
  error: ErrorBody;
}

export interface WelcomePush {
  op: "welcome";
  client: string;
  user: string | null;
  info?: UserInfo;
  /** Over `GET /sse` only: what `POST /publish` is made as (opaque). */
  stream?: string;
}
export interface MessagePush<T = Json> {
  op: "message";
  room: string;
  /** Absent for an ephemeral message. */
  offset?: number;
  from: From;
  data: T;
}
/** A message to a user from the backend (`POST /api/publish {"user"}`): no room, live only. */
export interface UserMessagePush<T = Json> {
  op: "message";
  user: string;
  data: T;
  room?: undefined;
  offset?: undefined;
  from?: undefined;
}
/** By user (`"presence": "users"`): for a user's first connection in and its last out. */
export interface PresencePush<M extends Member | UserMember = Member | UserMember> {
  op: "join" | "leave";
  room: string;
  member: M;
}
/** Continuity lost (engines that can lose it send this): reload the room. */
export interface ResetPush {
  op: "reset";
  room: string;
  epoch: string;
  offset: number;
}
/** Every frame a server sends. */
export type ServerFrame = WelcomePush | MessagePush | UserMessagePush | PresencePush | ResetPush | OkReply | ErrorReply;

// ---- the client -------------------------------------------------------------------------

/** The subprotocol: "wsedge.v1". */
export const PROTOCOL: "wsedge.v1";

export type ConnectionState = "connecting" | "connected" | "disconnected";

/** With every "state" event. */
export interface StateDetail {
  /** The close code that ended the last connection (1006: lost), when there was one. */
  code?: number | null;
  /** Why: the close reason, "no reply to ping", or, when stopped, what to do about it. */
  reason?: string;
  /** ms until the next attempt; null: stopped (close(), authentication with no new token, or code 4001: kicked). */
  retryIn?: number | null;
}

/** Client-side error codes; a server error has its numeric code. */
export type ClientErrorCode =
  | "disconnected" // the connection closed before the reply (or was not up)
  | "timeout" // no reply within requestTimeout
  | "queue_full" // maxQueue publishes are already waiting
  | "rate" // typing() over publishRate
  | "left" // the room was left (or the server refused the join)
  | "closed" // client.close()
  | "stopped" // the client stopped (authentication, kicked) or was closed
  | "auth" // getToken failed
  | "connect" // the WebSocket constructor threw
  | "protocol"; // a frame that is not JSON

export class WsedgeError extends Error {
  constructor(code: number | ClientErrorCode, message: string);
  readonly name: "WsedgeError";
  readonly code: number | ClientErrorCode;
}

/** Anything shaped like the browser's WebSocket constructor (e.g. the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** How the client connects: a WebSocket, or Server-Sent Events (`GET /sse` + `POST /publish`). */
export type Transport = "websocket" | "sse";

export interface ClientOptions {
  /** A JWT sent with the `auth` message on every connect. */
  token?: string;
  /** Called on every (re)connect and before the token's `exp`; null/undefined: none. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** The constructor to use (default: globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
  /** Backoff base, ms (default 500). */
  minReconnectDelay?: number;
  /** Backoff cap, ms (default 30000). */
  maxReconnectDelay?: number;
  /** A connection up this long (ms) resets the backoff (default 10000). */
  stableAfter?: number;
  /** ms a request waits for its reply (default 10000). */
  requestTimeout?: number;
  /** ms to open, be welcomed and authenticated (default 15000). */
  connectTimeout?: number;
  /** ms without a frame before a ping (default 25000). */
  idleTimeout?: number;
  /** ms the ping's reply may take before the link counts as dead (default 10000). */
  pingTimeout?: number;
  /** Publishes that may wait while offline (default 1000). */
  maxQueue?: number;
  /** Messages fetched for a `reset` (default 100). */
  historyLimit?: number;
  /** Refresh the token this many ms before `exp`, at most half its life (default 30000). */
  refreshBefore?: number;
  /** room.typing() sends at most once per this many ms (default 2000). */
  typingInterval?: number;
  /** A peer's typing expires after this many ms without another (default 5000). */
  typingTimeout?: number;
  /** Publishes per second this client sends at most; more wait in the queue (default 95: under the server's 100; 0: no limit). */
  publishRate?: number;
  /** Publishes sent at once after a pause (default 190: under the server's burst of 200). */
  publishBurst?: number;
  /** Send each publish's idempotency key (default true). */
  sendKeys?: boolean;
  /**
   * Transports in order (default ["websocket", "sse"]): SSE after `fallbackAfter` WebSocket
   * attempts in a row failed, back to WebSocket on the next full reconnect. ["websocket"]:
   * no fallback; ["sse"]: SSE only (no WebSocket constructor needed).
   */
  transports?: Transport[];
  /** WebSocket attempts in a row that fail before their welcome (a refused upgrade is one) before SSE (default 2). */
  fallbackAfter?: number;
  /** On SSE, try a WebSocket this often (ms); when its upgrade succeeds, reconnect over WebSocket (default 60000; 0: never). */
  probeInterval?: number;
  /** The stream's URL (default: `sse` next to the WebSocket URL, ws://h/ws -> http://h/sse). */
  sseUrl?: string;
  /** Where publishes go over SSE (default: `publish` next to the WebSocket URL). */
  publishUrl?: string;
  /** The fetch SSE uses (default: globalThis.fetch). */
  fetch?: typeof globalThis.fetch;
  /** Connect in the constructor (default true); false: call connect(). */
  autoConnect?: boolean;
  /** The jitter source, [0, 1) (default Math.random). */
  random?: () => number;
}

export interface JoinOptions<P extends Presence = Presence> {
  /** Receive join/leave events and keep members(): per connection (true), per user ("users"); default false. */
  presence?: P;
  /** Fetch the last N messages on the first join and hand them over as a "reset" (default 0). */
  history?: number;
}

export interface PublishOptions {
  /** false: no own copy (default true). */
  echo?: boolean;
  /** true: live only, no offset, never in history (default false). */
  ephemeral?: boolean;
  /** Idempotency key, 1-64 bytes (default: a random one per publish, kept across retries). */
  key?: string;
}

/** "reset": continuity lost (or history asked for on the first join): reload from this. */
export interface ResetEvent {
  room: string;
  epoch: string;
  /** The last offset in `messages`' epoch; "message" events continue after it. */
  offset: number;
  messages: MessagePush[];
  /** "join" (history on the first join), "not recovered" (after a reconnect) or "reset" (the server's push). */
  reason: "join" | "not recovered" | "reset";
  /** The epoch before, if any. */
  previousEpoch?: string | null;
}

/** "joined": after every (re)join. */
export interface JoinedEvent {
  epoch: string;
  offset: number;
  members: number;
  recovered: boolean;
  /** The first join of this Room (not a rejoin). */
  first: boolean;
}

export interface TypingEvent {
  member: From;
  typing: boolean;
  /** Everyone typing now. */
  typers: From[];
}

/** A message with an offset: "message" events carry these. */
export interface RoomMessage<T = Json> extends MessagePush<T> {
  offset: number;
}

export interface RoomEvents<T = Json, P extends Presence = boolean | "connections"> {
  /** Each offset exactly once, in order (across reconnects). */
  message: (m: RoomMessage<T>) => void;
  /** Ephemeral messages other than typing. */
  ephemeral: (m: MessagePush<T>) => void;
  presence: (e: PresencePush<PresenceMember<P>>) => void;
  /** The member list after every (re)join and fetchMembers() (presence on). */
  members: (members: PresenceMember<P>[]) => void;
  reset: (r: ResetEvent) => void;
  joined: (j: JoinedEvent) => void;
  typing: (e: TypingEvent) => void;
  left: (e: Record<string, never>) => void;
  /** The server refused the join (the room is forgotten). */
  error: (e: WsedgeError) => void;
}

export interface ClientEvents {
  state: (state: ConnectionState, detail: StateDetail) => void;
  welcome: (w: { client: string; user: string | null; info: UserInfo | null }) => void;
  /** A message to this user from the backend, on every connection of the user (not a room's). */
  message: (m: UserMessagePush) => void;
  /** The server closed this user's connections (`POST /api/disconnect`, code 4001): stopped, no reconnect. */
  kicked: (e: { code: number; reason: string }) => void;
  joined: (room: string) => void;
  /** The token was refreshed with `auth`. */
  refresh: (r: { exp: number | null }) => void;
  /** Errors no promise was waiting for. */
  error: (e: WsedgeError) => void;
}

export class Room<T = Json, P extends Presence = boolean | "connections"> {
  readonly name: string;
  readonly presence: P | false;
  /** The epoch `offset` belongs to (null before the first join). */
  readonly epoch: string | null;
  /** The last offset delivered to "message" handlers. */
  readonly offset: number;
  /** Joined on the current connection. */
  readonly joined: boolean;
  readonly left: boolean;
  /** Returns a function that removes the handler. */
  on<E extends keyof RoomEvents<T, P>>(event: E, fn: RoomEvents<T, P>[E]): () => void;
  once<E extends keyof RoomEvents<T, P>>(event: E, fn: RoomEvents<T, P>[E]): () => void;
  /** Members as last known (presence on), you included: per connection, or per user ("users"). */
  members(): PresenceMember<P>[];
  /** Peers typing now. */
  typers(): From[];
  /** Resolves on the server's reply; waits in the queue while offline. */
  publish(data: T, options?: PublishOptions): Promise<PublishReply>;
  /** An ephemeral {typing: true}, throttled; false when throttled or not joined. */
  typing(): boolean;
  history(options?: { limit?: number }): Promise<HistoryReply>;
  /** The member list from the server (presence not needed); members() takes it when presence is on. */
  fetchMembers(): Promise<PresenceMember<P>[]>;
  leave(): Promise<void>;
}

export class WsedgeClient {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly state: ConnectionState;
  /** The current connection's transport (null: none). */
  readonly transport: Transport | null;
  /** This connection's id (null when not connected). */
  readonly clientId: string | null;
  /** The token's `sub`, or null. */
  readonly user: string | null;
  /** The token's `info` claim, or null. */
  readonly info: UserInfo | null;
  readonly stats: {
    /** Connections that reached "connected". */
    connects: number;
    /** "reset" events after the first join (continuity lost). */
    resets: number;
    /** Publishes whose reply was lost, settled by their own message. */
    settledByMessage: number;
    /** Publishes whose reply was lost, sent again (with the same key). */
    resent: number;
    /** Publishes refused with 429 and sent again after a second. */
    retried429: number;
  };
  on<E extends keyof ClientEvents>(event: E, fn: ClientEvents[E]): () => void;
  once<E extends keyof ClientEvents>(event: E, fn: ClientEvents[E]): () => void;
  /** Joins now (or once connected) and after every reconnect; the same Room for the same name. */
  join<T = Json, P extends Presence = boolean | "connections">(room: string, options?: JoinOptions<P>): Room<T, P>;
  rooms(): Room<Json, Presence>[];
  /** Resolves when connected; rejects if the client stops. */
  ready(): Promise<void>;
  /** Starts again after close() or a stop. */
  connect(): Promise<void>;
  /** Round trip in ms (waits for a connection). */
  ping(): Promise<number>;
  /** For good: pending and queued requests reject. */
  close(): void;
}

/** One event of a `text/event-stream` (`event` defaults to "message"; `id` null when none). */
export interface StreamEvent {
  event: string;
  data: string;
  id: string | null;
}
/** A push parser of `text/event-stream`: feed text as it comes, events at each blank line. */
export class EventStreamParser {
  constructor(onEvent: (event: StreamEvent) => void);
  feed(text: string): void;
}

/** Full jitter: uniform in [0, min(max, min * 2^attempt)]. */
export function backoffDelay(attempt: number, min?: number, max?: number, random?: () => number): number;
/** A JWT's `exp` (seconds), read without verifying; null if none. */
export function tokenExpiry(token: string): number | null;
/** A random 22-character idempotency key. */
export function newKey(): string;

export default WsedgeClient;
