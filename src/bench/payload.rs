//! What a bench message carries: its send time and its publisher, in the first bytes of the
//! payload, written in a 64-letter alphabet so that any payload is valid UTF-8 text and
//! needs no escaping inside a JSON string (the room protocol carries it as `data`).
//!
//! Layout: bytes 0..8 the send time (48 bits of nanoseconds since the bench's epoch, good
//! for 78 hours), bytes 8..12 the publishing connection (24 bits), then padding up to the
//! message size. No IO, no clock: times come in as numbers.

/// Bytes holding the send timestamp (the first ones of every payload).
pub const STAMP_LEN: usize = 8;
/// Bytes holding the publisher's connection number, right after the stamp.
pub const TAG_LEN: usize = 4;
/// Smallest payload that carries both.
pub const HEADER_LEN: usize = STAMP_LEN + TAG_LEN;

/// The RFC 4648 §5 base64url alphabet: no byte that JSON would escape.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const INVALID: u8 = 0xFF;
const DECODE: [u8; 256] = decode_table();

const fn decode_table() -> [u8; 256] {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
}

/// Writes the low `6 * out.len()` bits of `value`, most significant first.
fn encode(value: u64, out: &mut [u8]) {
    let digits = out.len();
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 6 * (digits - 1 - i);
        *byte = ALPHABET[((value >> shift) & 63) as usize];
    }
}

fn decode(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, &b| match DECODE[usize::from(b)] {
        INVALID => None,
        digit => Some(acc << 6 | u64::from(digit)),
    })
}

/// Writes the send time and publisher into the first [`HEADER_LEN`] bytes of `out`
/// (which must be at least that long; shorter slices are left alone).
pub fn stamp(out: &mut [u8], sent_nanos: u64, publisher: u32) {
    if let Some(header) = out.get_mut(..HEADER_LEN) {
        let (time, tag) = header.split_at_mut(STAMP_LEN);
        encode(sent_nanos, time);
        encode(u64::from(publisher), tag);
    }
}

/// The send time and publisher of a payload written by [`stamp`], if it is one.
pub fn read_stamp(payload: &[u8]) -> Option<(u64, u32)> {
    let header = payload.get(..HEADER_LEN)?;
    let (time, tag) = header.split_at(STAMP_LEN);
    Some((decode(time)?, u32::try_from(decode(tag)?).ok()?))
}

/// A message to send, built once: every send copies it and stamps it in place.
#[derive(Debug, Clone)]
pub struct Template {
    pub bytes: Vec<u8>,
    /// Where the stamp goes.
    pub stamp_at: usize,
}

/// Padding after the header: a printable byte that JSON does not escape.
const PAD: u8 = b'x';

impl Template {
    /// A raw payload of `size` bytes (echo, relay).
    pub fn raw(size: usize) -> Template {
        Template { bytes: vec![PAD; size.max(HEADER_LEN)], stamp_at: 0 }
    }

    /// A `wsedge.v1` publish whose `data` is a JSON string of `size` characters.
    pub fn room_publish(room: &str, size: usize) -> Template {
        let head = format!(r#"{{"op":"publish","room":"{room}","data":""#);
        let mut bytes = head.into_bytes();
        let stamp_at = bytes.len();
        bytes.resize(stamp_at + size.max(HEADER_LEN), PAD);
        bytes.extend_from_slice(b"\"}");
        Template { bytes, stamp_at }
    }
}

/// The `data` string of a `wsedge.v1` message push, which the server writes as the last
/// field: `{"op":"message",...,"data":"<payload>"}`. `None` for any other text.
pub fn room_push_data(text: &[u8]) -> Option<&[u8]> {
    const PUSH: &[u8] = br#"{"op":"message""#;
    const DATA: &[u8] = br#""data":""#;
    if !text.starts_with(PUSH) {
        return None;
    }
    let body = text.strip_suffix(b"\"}")?;
    let start = body.windows(DATA.len()).position(|w| w == DATA)? + DATA.len();
    body.get(start..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_roundtrip_and_stay_json_safe_text() {
        for (nanos, tag) in [(0, 0), (1, 1), ((1 << 48) - 1, (1 << 24) - 1), (123_456_789_012, 77)] {
            let mut payload = [b'x'; 20];
            stamp(&mut payload, nanos, tag);
            assert_eq!(read_stamp(&payload), Some((nanos, tag)));
            assert!(payload.iter().all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\'));
        }
    }

    #[test]
    fn foreign_payloads_are_not_mistaken_for_stamps() {
        assert_eq!(read_stamp(b"hello world!"), None); // ' ' and '!' are not in the alphabet
        assert_eq!(read_stamp(b"short"), None);
    }

    #[test]
    fn room_publish_template_is_json_and_its_push_data_is_found() {
        let mut t = Template::room_publish("bench", 16);
        stamp(&mut t.bytes[t.stamp_at..], 42, 3);
        let v: serde_json::Value = serde_json::from_slice(&t.bytes).unwrap();
        let data = v["data"].as_str().unwrap();
        assert_eq!(data.len(), 16);
        let push = format!(
            r#"{{"op":"message","room":"bench","offset":1,"from":{{"client":"a-1","user":null}},"data":"{data}"}}"#
        );
        assert_eq!(room_push_data(push.as_bytes()).and_then(read_stamp), Some((42, 3)));
        assert_eq!(room_push_data(br#"{"op":"welcome","client":"a-1","user":null}"#), None);
    }
}
