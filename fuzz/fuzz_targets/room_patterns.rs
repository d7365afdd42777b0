//! The room permission matcher (`rooms::auth::pattern_matches`, `RoomPatterns::allows`)
//! against a definition written apart from it, on arbitrary patterns and room names:
//! a pattern without a final `*` matches exactly its own name; with one, every name that
//! starts with the rest (a `*` elsewhere is a literal); a list allows a room when one of its
//! patterns matches; `*` allows everything and the empty list nothing. Patterns the command
//! line accepts (`parse_patterns`) are names of room characters with at most a final `*`.
//! And no panics (the matcher runs on every join and publish).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsedge::rooms::auth::{parse_patterns, pattern_matches, RoomPatterns};
use wsedge_fuzz::input::Reader;

/// The definition, by counting characters rather than slicing bytes.
fn expected(pattern: &str, room: &str) -> bool {
    let star = pattern.ends_with('*');
    let literal: Vec<char> = pattern.chars().take(pattern.chars().count() - usize::from(star)).collect();
    let name: Vec<char> = room.chars().collect();
    if star {
        name.len() >= literal.len() && name[..literal.len()] == literal[..]
    } else {
        name == literal
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let room = r.lp_str().into_owned();
    let mut patterns = Vec::new();
    while !r.is_empty() && patterns.len() < 16 {
        patterns.push(r.lp_str().into_owned());
    }
    for p in &patterns {
        assert_eq!(pattern_matches(p, &room), expected(p, &room), "pattern {p:?}, room {room:?}");
    }
    let any = patterns.iter().any(|p| expected(p, &room));
    assert_eq!(RoomPatterns::new(&patterns).allows(&room), any);
    assert!(RoomPatterns::everything().allows(&room));
    assert!(!RoomPatterns::default().allows(&room));
    if parse_patterns(&patterns).is_ok() {
        for p in &patterns {
            let name = p.strip_suffix('*').unwrap_or(p);
            assert!(!p.is_empty() && !name.contains('*'), "accepted pattern {p:?}");
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)), "accepted {p:?}");
        }
    }
});
