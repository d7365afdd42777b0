//! What an event stream's requests carry (`rooms::sse`, `rooms::protocol`): the query of
//! `GET /sse`, the `Last-Event-ID` a reconnecting `EventSource` sends back, and the body of
//! its `POST /publish`, all written by whoever opens the stream.
//!
//! Input: the first byte picks which; the rest is the text (lossy UTF-8, as headers and
//! targets reach the parser as text).
//!
//! Checks: nothing panics; an accepted query names 1 to `MAX_QUERY_ROOMS` valid rooms, each once; an accepted
//! `Last-Event-ID` prints back (as the server writes ids) to one that parses to the same
//! positions; every event written from any text keeps its data whole on `data:` lines; an
//! accepted stream request names a stream token of at most 64 bytes and is a publish whose
//! `data` is valid JSON and whose room and key are valid, or a presence or history read
//! of a valid room.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use wsedge::rooms::protocol;
use wsedge::rooms::sse;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    match selector % 4 {
        0 => check_query(&text),
        1 => check_last_event_id(&text),
        2 => check_event(&text),
        _ => check_publish_body(&text),
    }
});

fn check_query(target: &str) {
    let Ok(request) = sse::parse_query(target) else { return };
    assert!(!request.rooms.is_empty() && request.rooms.len() <= sse::MAX_QUERY_ROOMS);
    for (i, room) in request.rooms.iter().enumerate() {
        assert!(protocol::validate_room_name(room).is_ok(), "{room:?}");
        assert!(!request.rooms[..i].contains(room), "{room:?} twice");
    }
}

fn check_last_event_id(id: &str) {
    let Ok(since) = sse::parse_last_event_id(id) else { return };
    let positions: sse::Positions = since
        .iter()
        .map(|(room, s)| (Arc::<str>::from(room.as_str()), (Arc::<str>::from(s.epoch.as_str()), s.offset)))
        .collect();
    let printed = sse::event_id(&positions);
    let again = sse::parse_last_event_id(&printed).expect("an id the server writes parses");
    let as_map = |m: &BTreeMap<String, protocol::Since>| m.iter().map(|(r, s)| (r.clone(), s.clone())).collect::<Vec<_>>();
    assert_eq!(as_map(&again), as_map(&since), "{id:?} -> {printed:?}");
}

fn check_event(data: &str) {
    let event = sse::event("message", Some("r~e~1"), data);
    assert!(event.ends_with("\n\n"));
    let lines: Vec<&str> = event.trim_end_matches('\n').split('\n').collect();
    assert_eq!(&lines[..2], ["id: r~e~1", "event: message"]);
    let data_lines: Vec<&str> = lines[2..].iter().map(|l| l.strip_prefix("data: ").expect("a data line")).collect();
    // The browser joins data lines with \n: the text, its line breaks made \n (blank lines
    // between tokens are whitespace JSON does not need).
    let expected: Vec<&str> = data.split(['\n', '\r']).filter(|l| !l.is_empty()).collect();
    assert_eq!(data_lines, expected);
}

fn check_publish_body(body: &str) {
    let Ok((stream, request)) = protocol::parse_stream_request(body) else { return };
    assert!(stream.len() <= protocol::MAX_STREAM_TOKEN_BYTES);
    let (room, data, key) = match request {
        protocol::Request::Publish { room, data, key, .. } => (room, data, key),
        protocol::Request::Presence { room } | protocol::Request::History { room, .. } => (room, "null", None),
        other => panic!("not a stream's request: {other:?}"),
    };
    assert!(protocol::validate_room_name(&room).is_ok(), "{room:?}");
    // JSON as written (a lone surrogate escape included: relayed as the client wrote it).
    assert!(serde_json::from_str::<&serde_json::value::RawValue>(data).is_ok(), "{data:?}");
    assert!(key.is_none_or(|k| !k.is_empty() && k.len() <= protocol::MAX_KEY_BYTES));
}
