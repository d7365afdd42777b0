//! What the Redis engine keeps in Redis, and the scripts that change it. Every room has:
//!
//! - `wsedge:{R}:meta`, a hash: `epoch` (the room's epoch) and `offset` (its last offset);
//! - `wsedge:{R}:stream`, a stream of the room's kept messages: entry id `<offset>-0`,
//!   fields `t` (publish time, Unix ms) and `m` (the message push, exactly as members
//!   receive it);
//! - the pub/sub channel `wsedge:{R}`, on which each message goes to the nodes with
//!   members as `<epoch> <offset> <push>` (offset 0: ephemeral, not kept).
//!
//! (`{R}` is the room name as a hash tag, so a room's keys live on one Redis Cluster slot.)
//! One script per publish assigns the offset, appends to the stream, trims it to the
//! history size and age, refreshes the keys' TTL and publishes: atomically, so every
//! node sees one order. History lost in Redis (flushed, expired, a restart without
//! persistence) loses the meta hash with it: the next publish or join starts a new epoch,
//! and clients recover with `recovered: false`, never across a silent gap.
//!
//! Blocking calls on a `redis::Connection`: the engine's link thread makes them, never a
//! worker's event loop.

use redis::{Connection, RedisResult, Script, Value};

/// The keys and channel of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    /// The meta hash.
    pub meta: String,
    /// The stream of kept messages.
    pub stream: String,
    /// The pub/sub channel.
    pub channel: String,
}

impl RoomKeys {
    /// The keys of room `room` (a valid room name: no braces, spaces or quotes).
    pub fn new(room: &str) -> RoomKeys {
        RoomKeys {
            meta: format!("wsedge:{{{room}}}:meta"),
            stream: format!("wsedge:{{{room}}}:stream"),
            channel: format!("wsedge:{{{room}}}"),
        }
    }
}

/// How long and how much a room keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept (the stream's length).
    pub history_size: usize,
    /// How long a message is kept, and how long the room's keys live after its last
    /// publish (nodes with members refresh them), in milliseconds.
    pub ttl_ms: u64,
}

/// A message to publish: its push, split around where the offset goes, so that the
/// script writes the same bytes the in-memory engine would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push<'a> {
    /// `{"op":"message","room":"R"`
    pub head: &'a str,
    /// `,"from":{...},"data":...}`
    pub tail: &'a str,
}

/// What a publish got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The room's epoch (new if the room had none).
    pub epoch: String,
    /// The message's offset (0: ephemeral).
    pub offset: u64,
}

const PUBLISH: &str = r#"
-- KEYS: meta, stream. ARGV: new epoch, push head, push tail, history size, ttl ms,
-- now ms, ephemeral (1/0), channel.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local ttl = tonumber(ARGV[5])
if ARGV[7] == '1' then
  redis.call('PUBLISH', ARGV[8], epoch .. ' 0 ' .. ARGV[2] .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {epoch, 0}
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local push = ARGV[2] .. ',"offset":' .. offset .. ARGV[3]
local size = tonumber(ARGV[4])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 't', ARGV[6], 'm', push)
  -- Age: drop the oldest entries older than the TTL (bounded by the history size).
  local oldest = tonumber(ARGV[6]) - ttl
  while true do
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if not first or tonumber(first[2][2]) > oldest then break end
    redis.call('XDEL', KEYS[2], first[1])
  end
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[8], epoch .. ' ' .. offset .. ' ' .. push)
return {epoch, offset}
"#;

/// Publishes one message to a room: one script call.
pub fn publish(
    con: &mut Connection,
    keys: &RoomKeys,
    new_epoch: &str,
    push: Push<'_>,
    ephemeral: bool,
    retention: Retention,
    now_ms: u64,
) -> RedisResult<Published> {
    let (epoch, offset): (String, u64) = Script::new(PUBLISH)
        .key(&keys.meta)
        .key(&keys.stream)
        .arg(new_epoch)
        .arg(push.head)
        .arg(push.tail)
        .arg(retention.history_size)
        .arg(retention.ttl_ms.max(1))
        .arg(now_ms)
        .arg(u8::from(ephemeral))
        .arg(&keys.channel)
        .invoke(con)?;
    Ok(Published { epoch, offset })
}

/// A room's state and the kept messages after some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The room's epoch (`None`: the room does not exist in Redis).
    pub epoch: Option<String>,
    /// Its last offset.
    pub offset: u64,
    /// Kept messages after the asked offset, younger than the TTL, oldest first, each
    /// with its offset.
    pub messages: Vec<(u64, String)>,
}

/// The room's epoch and offset, and its kept messages after `after` (all: 0) that are
/// younger than `retention.ttl_ms`, at most the last `limit`. One round trip (a
/// transaction of two reads).
pub fn read(
    con: &mut Connection,
    keys: &RoomKeys,
    after: u64,
    limit: usize,
    retention: Retention,
    now_ms: u64,
) -> RedisResult<Kept> {
    let (meta, entries): (Vec<Option<String>>, Value) = redis::pipe()
        .atomic()
        .cmd("HMGET")
        .arg(&keys.meta)
        .arg("epoch")
        .arg("offset")
        .cmd("XRANGE")
        .arg(&keys.stream)
        .arg(format!("({after}-0"))
        .arg("+")
        .query(con)?;
    let epoch = meta.first().cloned().flatten();
    let offset = meta.get(1).cloned().flatten().and_then(|o| o.parse().ok()).unwrap_or(0);
    let oldest = now_ms.saturating_sub(retention.ttl_ms);
    let mut messages: Vec<(u64, String)> = stream_entries(entries)
        .into_iter()
        .filter(|entry| entry.time_ms > oldest)
        .map(|entry| (entry.offset, entry.push))
        .collect();
    if messages.len() > limit {
        messages.drain(..messages.len() - limit);
    }
    Ok(Kept { epoch, offset, messages })
}

/// One stream entry, as the publish script wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    offset: u64,
    time_ms: u64,
    push: String,
}

/// The entries of an `XRANGE` reply; entries another program wrote in another shape are
/// skipped (logged), never trusted.
fn stream_entries(reply: Value) -> Vec<Entry> {
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
    let Value::Array(parts) = item else { return None };
    let [id, Value::Array(fields)] = <[Value; 2]>::try_from(parts).ok()? else { return None };
    let id = text(id)?;
    let offset = id.strip_suffix("-0")?.parse().ok()?;
    let (mut time_ms, mut push) = (None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match text(name)?.as_str() {
            "t" => time_ms = text(value)?.parse().ok(),
            "m" => push = text(value),
            _ => {}
        }
    }
    Some(Entry { offset, time_ms: time_ms?, push: push? })
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A message as it arrives on a room's channel: `<epoch> <offset> <push>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage<'a> {
    /// The room's epoch when it was published.
    pub epoch: &'a str,
    /// Its offset (0: ephemeral).
    pub offset: u64,
    /// The push, exactly as members receive it.
    pub push: &'a str,
}

/// Parses a channel payload; `None` for anything else (another program's message).
pub fn parse_channel_message(payload: &[u8]) -> Option<ChannelMessage<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let (epoch, rest) = text.split_once(' ')?;
    let (offset, push) = rest.split_once(' ')?;
    if epoch.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ChannelMessage { epoch, offset: offset.parse().ok()?, push })
}
