//! What the Redis engine parses from Redis (`rooms::engine::redis::store`): messages on a
//! room's channel and the replies of its scripts (stream entries, snapshots, joins,
//! presence lists), which another program sharing the Redis could have shaped.
//!
//! Input: the first byte picks what the rest is: a channel payload, or RESP bytes parsed
//! by the `redis` crate into the value a script reply would be.
//!
//! Checks: nothing panics; a channel message that parses prints back to text that parses
//! to the same message; snapshot entries come oldest first, none older than the TTL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsedge::rooms::engine::redis::store::{self, Kind};

const TTL_MS: u64 = 60_000;
const NOW_MS: u64 = 100_000;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    if selector % 2 == 0 {
        check_channel(rest);
        return;
    }
    let Ok(value) = redis::parse_redis_value(rest) else { return };
    if let Some(snapshot) = store::parse_snapshot(value.clone(), TTL_MS, NOW_MS) {
        check_entries(&snapshot.entries);
    }
    if let Some(store::Joined::Ok(snapshot)) = store::parse_joined(value.clone(), TTL_MS, NOW_MS) {
        check_entries(&snapshot.entries);
    }
    let _ = store::parse_members(value.clone());
    let _ = store::parse_published(value.clone());
    let _ = store::stream_entries(value);
});

fn check_channel(payload: &[u8]) {
    let Some(msg) = store::parse_channel_message(payload) else { return };
    let kind = match msg.kind {
        Kind::Presence => "p".to_owned(),
        Kind::Marker => "m".to_owned(),
        Kind::UserPresence => "u".to_owned(),
        Kind::Message(offset) => offset.to_string(),
    };
    let printed = format!("{} {kind} {} {}", msg.epoch, msg.except.unwrap_or("-"), msg.push);
    assert_eq!(store::parse_channel_message(printed.as_bytes()).as_ref(), Some(&msg), "{printed}");
}

fn check_entries(entries: &[store::Entry]) {
    assert!(entries.windows(2).all(|w| w[0].offset <= w[1].offset), "entries out of order");
    assert!(entries.iter().all(|e| e.time_ms > NOW_MS - TTL_MS), "an entry older than the TTL");
}
