//! Server-Sent Events (`GET /sse`): the room protocol for a plain `EventSource`. What a
//! stream asks for (its query), where it left off (`Last-Event-ID`), and how pushes are
//! written as events. No state, no IO: the member side (`members.rs`) keeps each stream's
//! rooms and positions and sends what these functions write.
//!
//! An event's `id` says where the stream is in every room it follows: `room~epoch~offset`
//! for each, joined by `,` (opaque to clients; `~` and `,` appear in neither room names nor
//! epochs). A reconnecting `EventSource` sends the last one back as `Last-Event-ID`, and each
//! room is joined again with `since`, exactly as a WebSocket client's rejoin.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::error::RoomError;
use super::protocol::{self, Presence, Since};
use crate::server::http;

/// The most rooms a query is read for (a bound on parsing; `max_rooms_per_connection`
/// is the limit that applies, as for a socket).
pub const MAX_QUERY_ROOMS: usize = 1024;
/// The longest `Last-Event-ID` read (64 rooms of the longest names and epochs fit).
pub const MAX_LAST_EVENT_ID: usize = 16 * 1024;

/// What `GET /sse?room=R[&room=R2...][&presence=1|users]` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// The rooms, in the order asked, each once.
    pub rooms: Vec<String>,
    /// Presence events: none, per connection (`presence=1`) or per user (`presence=users`).
    pub presence: Presence,
}

/// Parses the query of `GET /sse` (the request target).
pub fn parse_query(target: &str) -> Result<StreamRequest, RoomError> {
    let query = target.split_once('?').map_or("", |(_, q)| q).split('#').next().unwrap_or_default();
    let mut rooms: Vec<String> = Vec::new();
    let mut presence = Presence::Off;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = crate::server::http::percent_decode(value);
        match name {
            "room" => {
                let value = decoded.ok_or(RoomError::WrongType("room"))?;
                protocol::validate_room_name(&value)?;
                if !rooms.contains(&value) {
                    if rooms.len() == MAX_QUERY_ROOMS {
                        return Err(RoomError::TooManyRoomsForConnection { max: MAX_QUERY_ROOMS });
                    }
                    rooms.push(value);
                }
            }
            "presence" => {
                presence = match decoded.as_deref().unwrap_or("?") {
                    "" | "0" | "false" => Presence::Off,
                    "1" | "true" | "connections" => Presence::Connections,
                    "users" => Presence::Users,
                    _ => return Err(RoomError::WrongType("presence")),
                }
            }
            _ => {} // `token`, and what a client adds to defeat caches
        }
    }
    if rooms.is_empty() {
        return Err(RoomError::MissingField("room"));
    }
    Ok(StreamRequest { rooms, presence })
}

/// `GET /presence` or `GET /history` (at `path`) of an event stream, its `target`'s query
/// (`stream`, `room`, and `by=users` or `limit=N`) as the body of a stream's request
/// (`protocol::parse_stream_request`), and how a presence list is shown.
pub fn read_request(path: &str, target: &str) -> Result<(bytes::Bytes, Presence), RoomError> {
    let param = |name: &'static str| match http::query_param(target, name) {
        None => Ok(None),
        Some(Ok(value)) => Ok(Some(value)),
        Some(Err(())) => Err(RoomError::WrongType(name)),
    };
    let history = path == "/history";
    let mut body = serde_json::json!({
        "op": if history { "history" } else { "presence" },
        "stream": param("stream")?.ok_or(RoomError::MissingField("stream"))?,
        "room": param("room")?.ok_or(RoomError::MissingField("room"))?,
    });
    let by = match param("by")?.as_deref() {
        None | Some("connections") if !history => Presence::Connections,
        Some("users") if !history => Presence::Users,
        None if history => Presence::Connections,
        _ => return Err(RoomError::WrongType("by")),
    };
    match param("limit")? {
        Some(limit) if history => {
            body["limit"] = limit.parse::<u64>().map_err(|_| RoomError::WrongType("limit"))?.into()
        }
        Some(_) => return Err(RoomError::WrongType("limit")),
        None => {}
    }
    Ok((bytes::Bytes::from(body.to_string()), by))
}

/// Where a stream is in each of its rooms: room -> (epoch, last offset delivered), in room
/// order. A sorted `Vec`: a stream follows a few rooms (at most 64), and a `BTreeMap`'s
/// first node alone would cost an idle stream hundreds of bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Positions(Vec<(Arc<str>, Position)>);

/// A room's epoch, and the last offset a stream got in it.
pub type Position = (Arc<str>, u64);

impl Positions {
    /// No rooms.
    pub fn new() -> Self {
        Positions::default()
    }

    /// No rooms, with room for `rooms` without growing.
    pub fn with_capacity(rooms: usize) -> Self {
        Positions(Vec::with_capacity(rooms))
    }

    /// Sets `room`'s position.
    pub fn insert(&mut self, room: Arc<str>, position: Position) {
        match self.0.binary_search_by(|(r, _)| r.cmp(&room)) {
            Ok(i) => self.0[i].1 = position,
            Err(i) => self.0.insert(i, (room, position)),
        }
    }

    /// `room`'s position, to change it.
    pub fn get_mut(&mut self, room: &str) -> Option<&mut Position> {
        let i = self.0.binary_search_by(|(r, _)| (**r).cmp(room)).ok()?;
        self.0.get_mut(i).map(|(_, position)| position)
    }

    /// The position of the one room placed, when there is exactly one.
    pub fn only(&self) -> Option<&Position> {
        match self.0.as_slice() {
            [(_, position)] => Some(position),
            _ => None,
        }
    }

    /// Each room and its position, in room order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Position)> {
        self.0.iter().map(|(room, position)| (room, position))
    }
}

impl FromIterator<(Arc<str>, Position)> for Positions {
    fn from_iter<I: IntoIterator<Item = (Arc<str>, Position)>>(iter: I) -> Self {
        let mut positions = Positions::new();
        for (room, position) in iter {
            positions.insert(room, position);
        }
        positions
    }
}

/// The `id` of the stream's events at `positions` (rooms joined and not yet placed have
/// no position yet and are left out).
pub fn event_id(positions: &Positions) -> String {
    let mut out = String::new();
    for (room, (epoch, offset)) in positions.iter() {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{room}~{epoch}~{offset}");
    }
    out
}

/// Why a `Last-Event-ID` was refused (400, with this reason).
pub const BAD_LAST_EVENT_ID: &str = "malformed Last-Event-ID";

/// Parses a `Last-Event-ID` this server wrote: room -> where to resume (`since`). Empty:
/// nothing to resume. Anything else is refused, never guessed at.
pub fn parse_last_event_id(id: &str) -> Result<BTreeMap<String, Since>, &'static str> {
    let mut out = BTreeMap::new();
    if id.is_empty() {
        return Ok(out);
    }
    if id.len() > MAX_LAST_EVENT_ID {
        return Err(BAD_LAST_EVENT_ID);
    }
    for part in id.split(',') {
        let mut fields = part.split('~');
        let (Some(room), Some(epoch), Some(offset), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(BAD_LAST_EVENT_ID);
        };
        let valid_epoch =
            !epoch.is_empty() && epoch.len() <= 64 && epoch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
        let offset: u64 = match offset.parse() {
            Ok(offset) if valid_epoch && protocol::validate_room_name(room).is_ok() => offset,
            _ => return Err(BAD_LAST_EVENT_ID),
        };
        if out.insert(room.to_owned(), Since { epoch: epoch.to_owned(), offset }).is_some() {
            return Err(BAD_LAST_EVENT_ID);
        }
    }
    Ok(out)
}

/// One event: `event: <name>`, `id: <id>` when given, and `data` as `data:` lines (JSON
/// written by a client may hold line breaks between its tokens: each line is its own
/// `data:` line, which the browser joins again with `\n`, still the same JSON).
pub fn event(name: &str, id: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + name.len() + id.map_or(0, str::len) + 24);
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = writeln!(out, "event: {name}");
    for line in data.split(['\n', '\r']).filter(|line| !line.is_empty()) {
        let _ = writeln!(out, "data: {line}");
    }
    out.push('\n');
    out
}

/// The heartbeat: a comment line, which `EventSource` ignores and proxies see as traffic.
pub const HEARTBEAT: &[u8] = b": keepalive\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_rooms_once_each_and_the_presence_wanted() {
        let req = parse_query("/sse?room=chat%3Alobby&room=news&room=news&presence=users&token=x&_=17").unwrap();
        assert_eq!(req, StreamRequest { rooms: vec!["chat:lobby".into(), "news".into()], presence: Presence::Users });
        assert_eq!(parse_query("/sse?room=a&presence=1").unwrap().presence, Presence::Connections);
        assert_eq!(parse_query("/sse?room=a").unwrap().presence, Presence::Off);
        assert_eq!(parse_query("/sse"), Err(RoomError::MissingField("room")));
        assert_eq!(parse_query("/sse?room=a%20b"), Err(RoomError::BadRoomName));
        assert_eq!(parse_query("/sse?room=a&presence=maybe"), Err(RoomError::WrongType("presence")));
        assert_eq!(parse_query("/sse?room=%zz"), Err(RoomError::WrongType("room")));
        assert_eq!(parse_query("/sse?room=a&presence=%zz"), Err(RoomError::WrongType("presence")));
        let many: String = (0..=MAX_QUERY_ROOMS).map(|i| format!("room=r{i}&")).collect();
        assert!(matches!(parse_query(&format!("/sse?{many}")), Err(RoomError::TooManyRoomsForConnection { .. })));
    }

    #[test]
    fn an_event_id_reads_back_as_where_each_room_resumes() {
        let mut positions = Positions::new();
        positions.insert("news".into(), ("k2v9.7".into(), 12));
        positions.insert("chat:lobby".into(), ("q3.1".into(), 0));
        let id = event_id(&positions);
        assert_eq!(id, "chat:lobby~q3.1~0,news~k2v9.7~12");
        let since = parse_last_event_id(&id).unwrap();
        assert_eq!(since["news"], Since { epoch: "k2v9.7".into(), offset: 12 });
        assert_eq!(since["chat:lobby"], Since { epoch: "q3.1".into(), offset: 0 });
        assert_eq!(parse_last_event_id(""), Ok(BTreeMap::new()));
    }

    #[test]
    fn a_malformed_last_event_id_is_refused_not_guessed_at() {
        for bad in [
            "news",
            "news~e1",
            "news~e1~x",
            "news~e1~-1",
            "news~e1~1~2",
            "ne ws~e1~1",
            "news~e 1~1",
            "news~~1",
            "news~e1~1,",
            "news~e1~1,news~e1~2",
            &"a".repeat(MAX_LAST_EVENT_ID + 1),
        ] {
            assert_eq!(parse_last_event_id(bad), Err(BAD_LAST_EVENT_ID), "{bad:?}");
        }
    }

    #[test]
    fn events_keep_their_data_on_data_lines_whatever_line_breaks_it_holds() {
        assert_eq!(event("message", Some("r~e~3"), r#"{"a":1}"#), "id: r~e~3\nevent: message\ndata: {\"a\":1}\n\n");
        let text = event("message", None, "{\"a\":\r\n1,\r\"b\":\n2}");
        assert_eq!(text, "event: message\ndata: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n");
        let rejoined: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        let value: serde_json::Value = serde_json::from_str(&rejoined.join("\n")).unwrap();
        assert_eq!(value, serde_json::json!({"a": 1, "b": 2}));
    }
}
