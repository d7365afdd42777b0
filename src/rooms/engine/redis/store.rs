//! What the Redis engine keeps in Redis, and the scripts that change it. Every room `R`
//! has (`{R}`: the room name as a hash tag, so a room's keys share a Redis Cluster slot):
//!
//! - `wsedge:{R}:meta`, a hash: `epoch` (the room's epoch) and `offset` (its last offset);
//! - `wsedge:{R}:stream`, a stream of the room's kept messages: entry id `<offset>-0`,
//!   fields `t` (publish time, Unix ms), `m` (the message push, exactly as members
//!   receive it) and, for a publish with `echo: false`, `x` (the publisher's client id);
//! - `wsedge:{R}:presence`, a sorted set: client id -> when its entry expires (Unix ms),
//!   refreshed by the client's node; `wsedge:{R}:who`: client id -> `{"client","user"}`;
//!   `wsedge:{R}:users`: user -> its connections present (for presence by user);
//! - `wsedge:rooms`, one per Redis: every room -> when its keys expire (Unix ms), which
//!   bounds the rooms (`max_rooms`, per Redis) and lists them for `GET /api/rooms`;
//! - `wsedge:nodes` and `wsedge:nodes:seen`, in the first Redis: each node's latest report
//!   for the admin views (node id -> report JSON, and -> when it came, Unix ms), written
//!   every second by each node, which forgets nodes silent for `presence_ttl`;
//! - the pub/sub channel `wsedge:{R}`, carrying `<epoch> <offset> <except> <push>`: offset
//!   `0` for an ephemeral message, `p` for a presence event, `m` for a bare marker (then
//!   the epoch is `-`), `u` for a presence event by user (a user's first connection in or
//!   last out, published just before that connection's `p`); `except` is the client id not
//!   to deliver to, or `-` (for `p` and `m`: the member whose join or leave it marks in the
//!   room's order).
//!
//! One script per publish assigns the offset, appends to the stream, trims it to the
//! history size and age, refreshes the keys' TTL and publishes: atomically, so every node
//! sees one order. History lost in Redis (flushed, expired, a restart without persistence)
//! loses the meta hash with it: the next publish or join starts a new epoch, and clients
//! recover with `recovered: false` (or get a `reset`), never across a silent gap.
//!
//! This module only builds commands and parses replies: the link thread (`link.rs`) sends
//! them, pipelined. Replies written by another program in another shape are refused
//! (`None`) or, for single stream entries, skipped with a log line; never trusted.

use std::sync::Arc;

use redis::{Cmd, Script, Value};

use super::super::{Identity, NodeReport};

/// The keys and channel of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    /// The meta hash.
    pub meta: String,
    /// The stream of kept messages.
    pub stream: String,
    /// The presence sorted set.
    pub presence: String,
    /// Who each present client is.
    pub who: String,
    /// Each user's connections present.
    pub users: String,
    /// The idempotency keys of kept messages -> their offsets.
    pub keys: String,
    /// The pub/sub channel.
    pub channel: String,
}

/// The registry of rooms (one per Redis): room -> when its keys expire.
pub const ROOMS: &str = "wsedge:rooms";

/// Every node's latest report (in the first Redis only): node id -> `NodeReport` JSON.
pub const NODES: &str = "wsedge:nodes";
/// When each node last reported: node id -> Unix ms (a node silent for `presence_ttl` is
/// forgotten, as its members are).
pub const NODES_SEEN: &str = "wsedge:nodes:seen";

/// Nodes listed at most (a reply beyond it is cut: the list's memory is bounded whatever
/// Redis holds).
pub const MAX_NODES: usize = 256;

impl RoomKeys {
    /// The room's name (from its channel).
    pub fn room(&self) -> &str {
        self.channel.strip_prefix("wsedge:{").and_then(|r| r.strip_suffix('}')).unwrap_or_default()
    }

    /// The keys of room `room` (a valid room name: no braces, spaces or quotes).
    pub fn new(room: &str) -> RoomKeys {
        RoomKeys {
            meta: format!("wsedge:{{{room}}}:meta"),
            stream: format!("wsedge:{{{room}}}:stream"),
            presence: format!("wsedge:{{{room}}}:presence"),
            who: format!("wsedge:{{{room}}}:who"),
            users: format!("wsedge:{{{room}}}:users"),
            keys: format!("wsedge:{{{room}}}:keys"),
            channel: format!("wsedge:{{{room}}}"),
        }
    }
}

/// How long and how much a room keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept (the stream's length).
    pub history_size: usize,
    /// How long a message is kept, and how long the room's keys live after their last
    /// use (nodes with members refresh them), in milliseconds.
    pub ttl_ms: u64,
    /// How long a presence entry lives without a refresh, in milliseconds.
    pub presence_ms: u64,
    /// Rooms this Redis may hold (a new one beyond: refused).
    pub max_rooms: usize,
}

impl Retention {
    /// The TTL of the presence keys: they outlive every entry in them.
    fn presence_keys_ms(&self) -> u64 {
        self.ttl_ms.max(self.presence_ms).max(1)
    }
}

/// A message to publish: its push, split around where the offset goes, so that the
/// script writes the same bytes the in-memory engine would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Push<'a> {
    /// `{"op":"message","room":"R"`
    pub head: &'a str,
    /// `,"from":{...},"data":...}`
    pub tail: &'a str,
}

/// A message to publish.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Its push.
    pub push: Push<'a>,
    /// No offset, not kept.
    pub ephemeral: bool,
    /// The client it is not delivered to (`echo: false`).
    pub except: Option<&'a str>,
    /// Its idempotency key.
    pub key: Option<&'a str>,
}

/// One stream entry, as the publish script wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The message's offset.
    pub offset: u64,
    /// When it was published (Unix ms).
    pub time_ms: u64,
    /// The push.
    pub push: String,
    /// The client it was not delivered to (`echo: false`).
    pub except: Option<String>,
}

/// A room's epoch and offset, and kept messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The room's epoch (`None`: the room does not exist in Redis).
    pub epoch: Option<String>,
    /// Its last offset.
    pub offset: u64,
    /// Kept messages younger than the TTL, oldest first.
    pub entries: Vec<Entry>,
    /// Members present on every node (a join's reply only).
    pub members: Option<usize>,
}

/// What a join got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The member is in: the room's state when it joined, and the messages after `since`.
    Ok(Snapshot),
    /// `max_members_per_room` members are present already.
    Full,
    /// The room was new and this Redis holds `max_rooms` rooms already.
    RoomsFull,
}

/// What a publish got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The room's epoch (new if the room had none).
    pub epoch: String,
    /// The message's offset (0: ephemeral).
    pub offset: u64,
    /// Its key was seen: `offset` is the original's, nothing was published.
    pub duplicate: bool,
}

/// What every script that may create a room starts with.
const PRELUDE: &str = r#"
-- The room's epoch; a new room gets `new_epoch` unless the registry `rooms` (expired
-- entries dropped first) holds `max` rooms already (then nil).
local function room_epoch(meta, rooms, new_epoch, now, max)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then return epoch end
  redis.call('ZREMRANGEBYSCORE', rooms, '-inf', now)
  if max and redis.call('ZCARD', rooms) >= max then return nil end
  redis.call('HSET', meta, 'epoch', new_epoch, 'offset', 0)
  return new_epoch
end
-- A member's user, and the member as presence by user shows it. `member` is what the
-- engine wrote (protocol::push_member): {"client":"<id>","user":<user>[,"info":{...}]},
-- so without its client it is {"user":<user>[,"info":{...}]} (protocol::push_user). An
-- anonymous connection is a user of its own: nil, and the member as it is.
local function user_of(client, member)
  local ok, decoded = pcall(cjson.decode, member)
  if not ok or type(decoded) ~= 'table' or type(decoded.user) ~= 'string' then return nil, member end
  return decoded.user, '{' .. string.sub(member, 14 + #client)
end
-- Counts a member of `room` (JSON) in (by = 1) or out (by = -1) of its user's connections
-- (the hash `users`, over the hash `who` of present members), and publishes the user's
-- join or leave (op) on `channel` when it was the first in or the last out. A count that
-- would go below zero (its field was lost: evicted, or written by an older wsedge) is
-- counted again from `who`: a leave is told only when nobody of that user is left.
local function count_user(users, who, client, member, by, op, room, channel)
  local user, shown = user_of(client, member)
  if user then
    local now = redis.call('HINCRBY', users, user, by)
    if now < 0 then
      now = 0
      for _, other in ipairs(redis.call('HVALS', who)) do
        local other_user = user_of('', other)
        if other_user == user then now = now + 1 end
      end
    end
    if now <= 0 then redis.call('HDEL', users, user) else redis.call('HSET', users, user, now) end
    if (by > 0 and now ~= 1) or (by < 0 and now > 0) then return end
  end
  redis.call('PUBLISH', channel, '- u ' .. client .. ' {"op":"' .. op .. '","room":' .. room .. ',"member":' .. shown .. '}')
end
-- Removes the members whose entries expired (their node stopped refreshing them: it died)
-- with leave events, so that presence and the users' counts only ever hold live members.
local function sweep(presence, who, users, now, room, channel)
  local gone = redis.call('ZRANGEBYSCORE', presence, '-inf', now)
  for _, client in ipairs(gone) do
    local member = redis.call('HGET', who, client)
    redis.call('ZREM', presence, client)
    redis.call('HDEL', who, client)
    if member then
      count_user(users, who, client, member, -1, 'leave', room, channel)
      redis.call('PUBLISH', channel, '- p - {"op":"leave","room":' .. room .. ',"member":' .. member .. '}')
    end
  end
  return #gone
end
"#;

const PUBLISH: &str = r#"
-- KEYS: meta, stream, rooms, keys. ARGV: new epoch, push head, push tail, history size,
-- ttl ms, now ms, ephemeral (1/0), channel, except (client id or -), max rooms, room,
-- idempotency key ('': none).
local ttl = tonumber(ARGV[5])
local epoch = room_epoch(KEYS[1], KEYS[3], ARGV[1], ARGV[6], tonumber(ARGV[10]))
if not epoch then return {'rooms-full'} end
redis.call('ZADD', KEYS[3], tonumber(ARGV[6]) + ttl, ARGV[11])
if ARGV[7] == '1' then
  redis.call('PUBLISH', ARGV[8], epoch .. ' 0 ' .. ARGV[9] .. ' ' .. ARGV[2] .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {epoch, 0}
end
-- The first kept entry, after dropping those older than the TTL; the keys of messages no
-- longer kept go with them (the history window is what the stream holds).
local function trim()
  local oldest = tonumber(ARGV[6]) - ttl
  while true do
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if not first then
      redis.call('DEL', KEYS[4])
      return
    end
    if (tonumber(first[2][2]) or 0) > oldest then
      redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.match(first[1], '^%d+'))
      return
    end
    redis.call('XDEL', KEYS[2], first[1])
  end
end
local size = tonumber(ARGV[4])
local key = ARGV[12]
if size > 0 and key ~= '' then
  trim()
  local seen = redis.call('ZSCORE', KEYS[4], key)
  if seen then return {epoch, tonumber(seen), 'duplicate'} end
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local push = ARGV[2] .. ',"offset":' .. offset .. ARGV[3]
if size > 0 then
  if ARGV[9] == '-' then
    redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 't', ARGV[6], 'm', push)
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 't', ARGV[6], 'm', push, 'x', ARGV[9])
  end
  if key ~= '' then redis.call('ZADD', KEYS[4], offset, key) end
  trim()
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[8], epoch .. ' ' .. offset .. ' ' .. ARGV[9] .. ' ' .. push)
return {epoch, offset}
"#;

const JOIN: &str = r#"
-- KEYS: meta, stream, presence, who, rooms, users. ARGV: new epoch, client, member json,
-- entry expiry ms, max members, ttl ms, since epoch, since offset, channel, join event,
-- now ms, presence keys ttl ms, max rooms, room.
local epoch = room_epoch(KEYS[1], KEYS[5], ARGV[1], ARGV[11], tonumber(ARGV[13]))
if not epoch then return {'rooms-full'} end
sweep(KEYS[3], KEYS[4], KEYS[6], ARGV[11], '"' .. ARGV[14] .. '"', ARGV[9])
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset')) or 0
local known = redis.call('ZSCORE', KEYS[3], ARGV[2])
if not known and redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[11], '+inf') >= tonumber(ARGV[5]) then
  return {'full'}
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[5], tonumber(ARGV[11]) + tonumber(ARGV[6]), ARGV[14])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[12])
redis.call('PEXPIRE', KEYS[4], ARGV[12])
-- The join's marker in the room's order: its join event, or a bare marker.
if known then
  redis.call('PUBLISH', ARGV[9], '- m ' .. ARGV[2] .. ' {"op":"join"}')
else
  count_user(KEYS[6], KEYS[4], ARGV[2], ARGV[3], 1, 'join', '"' .. ARGV[14] .. '"', ARGV[9])
  redis.call('PUBLISH', ARGV[9], '- p ' .. ARGV[2] .. ' ' .. ARGV[10])
end
redis.call('PEXPIRE', KEYS[6], ARGV[12])
local entries = {}
if ARGV[7] == epoch and tonumber(ARGV[8]) < offset then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[8] .. '-0', '+')
end
return {'ok', epoch, offset, entries, redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[11], '+inf')}
"#;

const READ: &str = r#"
-- KEYS: meta, stream, rooms. ARGV: new epoch ('': do not create the room), after offset,
-- count (-1: every entry after the offset; n: the last n), now ms.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[1] == '' then return {'', 0, {}} end
  epoch = room_epoch(KEYS[1], KEYS[3], ARGV[1], ARGV[4], nil)
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset')) or 0
local entries = {}
local count = tonumber(ARGV[3])
if count > 0 then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '(' .. ARGV[2] .. '-0', 'COUNT', count)
elseif count < 0 then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2] .. '-0', '+')
end
return {epoch, offset, entries}
"#;

const LEAVE: &str = r#"
-- KEYS: presence, who, users. ARGV: client, channel, room (as JSON), now ms.
-- The leave's marker in the room's order: its leave event, or a bare marker.
sweep(KEYS[1], KEYS[2], KEYS[3], ARGV[4], ARGV[3], ARGV[2])
local member = redis.call('HGET', KEYS[2], ARGV[1])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 and member then
  redis.call('HDEL', KEYS[2], ARGV[1])
  count_user(KEYS[3], KEYS[2], ARGV[1], member, -1, 'leave', ARGV[3], ARGV[2])
  redis.call('PUBLISH', ARGV[2], '- p ' .. ARGV[1] .. ' {"op":"leave","room":' .. ARGV[3] .. ',"member":' .. member .. '}')
else
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('PUBLISH', ARGV[2], '- m ' .. ARGV[1] .. ' {"op":"leave"}')
end
return 1
"#;

const REFRESH: &str = r#"
-- KEYS: meta, stream, presence, who, rooms, users. ARGV: entry expiry ms, ttl ms,
-- presence keys ttl ms, now ms, channel, room (as JSON), room, then client id and member
-- json of each member here.
-- Keeps this node's members present (one that was swept meanwhile comes back with a
-- join event), keeps the room's keys alive, and sweeps the entries of dead nodes.
local room = ARGV[6]
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZADD', KEYS[5], tonumber(ARGV[4]) + tonumber(ARGV[2]), ARGV[7])
end
for i = 8, #ARGV, 2 do
  if redis.call('ZADD', KEYS[3], ARGV[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
    count_user(KEYS[6], KEYS[4], ARGV[i], ARGV[i + 1], 1, 'join', room, ARGV[5])
    redis.call('PUBLISH', ARGV[5], '- p ' .. ARGV[i] .. ' {"op":"join","room":' .. room .. ',"member":' .. ARGV[i + 1] .. '}')
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])
redis.call('PEXPIRE', KEYS[6], ARGV[3])
return sweep(KEYS[3], KEYS[4], KEYS[6], ARGV[4], room, ARGV[5])
"#;

const NODES_SCRIPT: &str = r#"
-- One node's report (KEYS[1]: id -> report, KEYS[2]: id -> when), forgetting the nodes
-- silent since ARGV[4]; both keys live as long as reports keep coming. Every report back.
-- ARGV: node id, report JSON, now (Unix ms), forget before (Unix ms), keys' TTL (ms)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return redis.call('HVALS', KEYS[1])
"#;

const PRESENCE: &str = r#"
-- KEYS: presence, who. ARGV: now ms. The members whose entries have not expired.
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local out = {}
for _, client in ipairs(live) do
  local member = redis.call('HGET', KEYS[2], client)
  if member then out[#out + 1] = member end
end
return out
"#;

/// The scripts, loaded once per connection (`SCRIPT LOAD`) and called by hash.
#[derive(Debug)]
pub struct Scripts {
    publish: Script,
    join: Script,
    read: Script,
    leave: Script,
    refresh: Script,
    presence: Script,
    nodes: Script,
    /// Each script's source, the prelude first.
    sources: [String; 7],
}

impl Default for Scripts {
    fn default() -> Self {
        let sources =
            [PUBLISH, JOIN, READ, LEAVE, REFRESH, PRESENCE, NODES_SCRIPT].map(|body| format!("{PRELUDE}{body}"));
        let [publish, join, read, leave, refresh, presence, nodes] = sources.each_ref().map(|s| Script::new(s));
        Scripts { publish, join, read, leave, refresh, presence, nodes, sources }
    }
}

fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

/// A room name as a JSON string (room names need no escaping, but write it properly).
fn json_str(room: &str) -> String {
    let mut out = String::with_capacity(room.len() + 2);
    crate::rooms::protocol::push_str(&mut out, room);
    out
}

/// A member joining: who it is, and where its last session left off.
#[derive(Debug, Clone, Copy)]
pub struct JoinArgs<'a> {
    /// Its client id.
    pub client: &'a str,
    /// `{"client","user"}` as presence lists show it.
    pub member_json: &'a str,
    /// The join event pushed to watchers.
    pub event: &'a str,
    /// Epoch and offset to read kept messages after (`None`: none).
    pub since: Option<(&'a str, u64)>,
    /// `max_members_per_room`.
    pub max_members: usize,
}

impl Scripts {
    /// Every script's `SCRIPT LOAD`.
    pub fn load_commands(&self) -> Vec<Cmd> {
        self.sources
            .iter()
            .map(|source| {
                let mut cmd = redis::cmd("SCRIPT");
                cmd.arg("LOAD").arg(source);
                cmd
            })
            .collect()
    }

    /// Publishes one message to a room (reply: [`parse_published`]).
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        keys: &RoomKeys,
        new_epoch: &str,
        msg: Outgoing<'_>,
        retention: Retention,
        now_ms: u64,
    ) -> Cmd {
        let mut cmd = evalsha(&self.publish, &[&keys.meta, &keys.stream, ROOMS, &keys.keys]);
        cmd.arg(new_epoch)
            .arg(msg.push.head)
            .arg(msg.push.tail)
            .arg(retention.history_size)
            .arg(retention.ttl_ms.max(1))
            .arg(now_ms)
            .arg(u8::from(msg.ephemeral))
            .arg(&keys.channel)
            .arg(msg.except.unwrap_or("-"))
            .arg(retention.max_rooms)
            .arg(keys.room())
            .arg(msg.key.unwrap_or(""));
        cmd
    }

    /// Adds a member (reply: [`parse_joined`]), publishing its join event.
    pub fn join(&self, keys: &RoomKeys, new_epoch: &str, join: JoinArgs<'_>, retention: Retention, now_ms: u64) -> Cmd {
        let (since_epoch, since_offset) = join.since.unwrap_or(("", u64::MAX));
        let mut cmd = evalsha(&self.join, &[&keys.meta, &keys.stream, &keys.presence, &keys.who, ROOMS, &keys.users]);
        cmd.arg(new_epoch)
            .arg(join.client)
            .arg(join.member_json)
            .arg(now_ms + retention.presence_ms)
            .arg(join.max_members)
            .arg(retention.ttl_ms.max(1))
            .arg(since_epoch)
            .arg(since_offset.min(1 << 53))
            .arg(&keys.channel)
            .arg(join.event)
            .arg(now_ms)
            .arg(retention.presence_keys_ms())
            .arg(retention.max_rooms)
            .arg(keys.room());
        cmd
    }

    /// Reads a room's epoch, offset and kept messages after `after` (`last`: only the
    /// last so many), creating the room with `new_epoch` when given and missing (reply:
    /// [`parse_snapshot`]).
    pub fn read(&self, keys: &RoomKeys, new_epoch: Option<&str>, after: u64, last: Option<usize>, now_ms: u64) -> Cmd {
        let mut cmd = evalsha(&self.read, &[&keys.meta, &keys.stream, ROOMS]);
        let count = last.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        cmd.arg(new_epoch.unwrap_or("")).arg(after.min(1 << 53)).arg(count).arg(now_ms);
        cmd
    }

    /// Removes a member, publishing its leave event (entries expired by `now_ms` are swept
    /// first, as [`Scripts::refresh`] sweeps them).
    pub fn leave(&self, keys: &RoomKeys, room: &str, client: &str, now_ms: u64) -> Cmd {
        let mut cmd = evalsha(&self.leave, &[&keys.presence, &keys.who, &keys.users]);
        cmd.arg(client).arg(&keys.channel).arg(json_str(room)).arg(now_ms);
        cmd
    }

    /// Keeps `members` (client id, member json) present and the room alive; sweeps
    /// expired entries with leave events.
    pub fn refresh<'a>(
        &self,
        keys: &RoomKeys,
        room: &str,
        members: impl Iterator<Item = (&'a str, String)>,
        retention: Retention,
        now_ms: u64,
    ) -> Cmd {
        let mut cmd =
            evalsha(&self.refresh, &[&keys.meta, &keys.stream, &keys.presence, &keys.who, ROOMS, &keys.users]);
        cmd.arg(now_ms + retention.presence_ms)
            .arg(retention.ttl_ms.max(1))
            .arg(retention.presence_keys_ms())
            .arg(now_ms)
            .arg(&keys.channel)
            .arg(json_str(room))
            .arg(room);
        for (client, member_json) in members {
            cmd.arg(client).arg(member_json);
        }
        cmd
    }

    /// The present members' `{"client","user"}` (reply: [`parse_members`]).
    pub fn presence(&self, keys: &RoomKeys, now_ms: u64) -> Cmd {
        let mut cmd = evalsha(&self.presence, &[&keys.presence, &keys.who]);
        cmd.arg(now_ms);
        cmd
    }

    /// This node's report `json` (node `id`), forgetting nodes silent for `forget_ms`
    /// (reply: [`parse_nodes`], every node's report).
    pub fn report_node(&self, id: &str, json: &str, now_ms: u64, forget_ms: u64) -> Cmd {
        let mut cmd = evalsha(&self.nodes, &[NODES, NODES_SEEN]);
        cmd.arg(id).arg(json).arg(now_ms).arg(now_ms.saturating_sub(forget_ms)).arg(forget_ms.max(1));
        cmd
    }
}

/// The reply of [`Scripts::report_node`]: the reports, by name (then id), at most
/// [`MAX_NODES`]; entries in another shape are skipped.
pub fn parse_nodes(reply: Value) -> Option<Vec<NodeReport>> {
    let Value::Array(items) = reply else { return None };
    let mut nodes: Vec<NodeReport> =
        items.into_iter().filter_map(|item| serde_json::from_str(&text(item)?).ok()).collect();
    nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    nodes.truncate(MAX_NODES);
    Some(nodes)
}

/// The reply of [`Scripts::publish`]: `Err(())` when the room was new and this Redis holds
/// `max_rooms` rooms already.
pub fn parse_published(reply: Value) -> Option<Result<Published, ()>> {
    let Value::Array(mut parts) = reply else { return None };
    if parts.len() == 1 {
        return (text(parts.pop()?)? == "rooms-full").then_some(Err(()));
    }
    let duplicate = parts.len() == 3 && text(parts.pop()?)? == "duplicate";
    let [epoch, offset] = <[Value; 2]>::try_from(parts).ok()?;
    Some(Ok(Published { epoch: text(epoch)?, offset: number(offset)?, duplicate }))
}

/// The reply of [`Scripts::join`]; entries older than `ttl_ms` are left out.
pub fn parse_joined(reply: Value, ttl_ms: u64, now_ms: u64) -> Option<Joined> {
    let Value::Array(mut parts) = reply else { return None };
    if parts.len() == 1 {
        return match text(parts.pop()?)?.as_str() {
            "full" => Some(Joined::Full),
            "rooms-full" => Some(Joined::RoomsFull),
            _ => None,
        };
    }
    let [status, epoch, offset, entries, members] = <[Value; 5]>::try_from(parts).ok()?;
    if text(status)? != "ok" {
        return None;
    }
    let members = usize::try_from(number(members)?).ok();
    snapshot(epoch, offset, entries, ttl_ms, now_ms).map(|s| Joined::Ok(Snapshot { members, ..s }))
}

/// The reply of [`Scripts::read`]; entries older than `ttl_ms` are left out.
pub fn parse_snapshot(reply: Value, ttl_ms: u64, now_ms: u64) -> Option<Snapshot> {
    let [epoch, offset, entries] = array::<3>(reply)?;
    snapshot(epoch, offset, entries, ttl_ms, now_ms)
}

fn snapshot(epoch: Value, offset: Value, entries: Value, ttl_ms: u64, now_ms: u64) -> Option<Snapshot> {
    let epoch = Some(text(epoch)?).filter(|e| !e.is_empty());
    let oldest = now_ms.saturating_sub(ttl_ms);
    let mut entries: Vec<Entry> = stream_entries(entries).into_iter().filter(|e| e.time_ms > oldest).collect();
    entries.sort_by_key(|e| e.offset);
    Some(Snapshot { epoch, offset: number(offset)?, entries, members: None })
}

/// The reply of [`Scripts::presence`]: each member's identity (as `push_member` wrote it);
/// entries in another shape are skipped.
pub fn parse_members(reply: Value) -> Option<Vec<Identity>> {
    #[derive(serde::Deserialize)]
    struct Member {
        client: String,
        user: Option<String>,
        #[serde(default)]
        info: Option<Box<serde_json::value::RawValue>>,
    }
    let Value::Array(items) = reply else { return None };
    let members = items
        .into_iter()
        .filter_map(|item| match serde_json::from_str::<Member>(&text(item)?) {
            Ok(m) => Some(Identity {
                client: m.client.into(),
                user: m.user.map(Arc::from),
                // Only objects: an entry another program wrote is never trusted further.
                info: m.info.filter(|i| i.get().starts_with('{')).map(|i| Arc::from(i.get())),
            }),
            Err(_) => {
                log::warn!("skipping a malformed presence entry");
                None
            }
        })
        .collect();
    Some(members)
}

/// The entries of an `XRANGE` reply; entries another program wrote in another shape are
/// skipped (logged), never trusted.
pub fn stream_entries(reply: Value) -> Vec<Entry> {
    let Value::Array(items) = reply else { return Vec::new() };
    items
        .into_iter()
        .filter_map(|item| match entry(item) {
            Some(entry) => Some(entry),
            None => {
                log::warn!("skipping a malformed entry in a room stream");
                None
            }
        })
        .collect()
}

fn entry(item: Value) -> Option<Entry> {
    let [id, Value::Array(fields)] = array::<2>(item)? else { return None };
    let offset = text(id)?.strip_suffix("-0")?.parse().ok()?;
    let (mut time_ms, mut push, mut except) = (None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match text(name)?.as_str() {
            "t" => time_ms = text(value)?.parse().ok(),
            "m" => push = text(value),
            "x" => except = text(value),
            _ => {}
        }
    }
    Some(Entry { offset, time_ms: time_ms?, push: push?, except })
}

fn array<const N: usize>(value: Value) -> Option<[Value; N]> {
    let Value::Array(parts) = value else { return None };
    <[Value; N]>::try_from(parts).ok()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Nil => Some(String::new()),
        _ => None,
    }
}

fn number(value: Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// What a message on a room's channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message with an offset (0: ephemeral).
    Message(u64),
    /// A presence event, for watchers; `except` is the member it is about (the marker of
    /// its join or leave).
    Presence,
    /// Only a marker: where a join or leave of `except` took effect in the room's order.
    Marker,
    /// A presence event by user, for those watching users (not a marker).
    UserPresence,
}

/// A message as it arrives on a room's channel: `<epoch> <offset|p> <except|-> <push>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage<'a> {
    /// The room's epoch when it was published (`-` for presence events).
    pub epoch: &'a str,
    /// What it is.
    pub kind: Kind,
    /// The client not to deliver it to.
    pub except: Option<&'a str>,
    /// The push, exactly as members receive it.
    pub push: &'a str,
}

/// Parses a channel payload; `None` for anything else (another program's message).
pub fn parse_channel_message(payload: &[u8]) -> Option<ChannelMessage<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(4, ' ');
    let (epoch, kind, except, push) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let kind = match kind {
        "p" => Kind::Presence,
        "m" => Kind::Marker,
        "u" => Kind::UserPresence,
        digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Kind::Message(digits.parse().ok()?)
        }
        _ => return None,
    };
    if epoch.is_empty() || except.is_empty() || !push.starts_with('{') {
        return None;
    }
    Some(ChannelMessage { epoch, kind, except: Some(except).filter(|x| *x != "-"), push })
}
