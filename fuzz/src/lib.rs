//! Harness code shared by the fuzz targets: a checker for the frames a `Connection`
//! transmits, a peer that decodes them, and the byte-stream driver behind
//! `connection_server` and `connection_client`.
//!
//! The targets assert invariants, not just "no panic": every check here is an `assert!`
//! that libFuzzer reports as a crash with the input that broke it.

pub mod input;
pub mod stream;

use bytes::{Bytes, BytesMut};
use wsedge::proto::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD};
use wsedge::proto::{Connection, Event, ProtocolError, Role};

/// Everything `conn` has queued for the wire, in order.
pub fn transmitted(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Checks frames that a connection in role `sender` transmitted: whole frames only, masked
/// exactly when a client sent them (RFC 6455 §5.1), FIN always set (we never fragment),
/// RSV1 only on data frames and only with deflate, control payloads within 125 bytes, and
/// nothing after a close frame.
pub fn check_transmitted_frames(wire: &[u8], sender: Role, deflate: bool) {
    let mut pos = 0;
    while pos < wire.len() {
        let rest = &wire[pos..];
        let (header, header_len) = match FrameHeader::parse(rest) {
            Ok(Some(parsed)) => parsed,
            other => panic!("transmitted bytes at {pos} are not a frame header: {other:?}"),
        };
        assert_eq!(header.mask.is_some(), sender == Role::Client, "masking does not match the role {sender:?}");
        assert!(header.fin, "a transmitted frame has FIN clear");
        match header.rsv {
            0 => {}
            0b100 => assert!(
                deflate && matches!(header.opcode, OpCode::Text | OpCode::Binary),
                "RSV1 on {:?} (deflate {deflate})",
                header.opcode
            ),
            rsv => panic!("transmitted RSV bits {rsv:03b}"),
        }
        assert_ne!(header.opcode, OpCode::Continuation, "a lone continuation frame was transmitted");
        if header.opcode.is_control() {
            assert!(header.payload_len <= MAX_CONTROL_PAYLOAD as u64, "control frame of {} bytes", header.payload_len);
        }
        let end = (pos + header_len) as u64 + header.payload_len;
        assert!(end <= wire.len() as u64, "transmitted frame is cut off");
        pos = end as usize;
        if header.opcode == OpCode::Close {
            assert_eq!(pos, wire.len(), "frames transmitted after a close frame");
        }
    }
}

/// Feeds `wire` to `conn` in chunks of the given sizes (cycled; 0 is skipped), collecting
/// events until the input is used up or the connection fails.
pub fn decode_chunked(conn: &mut Connection, wire: &[u8], chunks: &[usize]) -> (Vec<Event>, Option<ProtocolError>) {
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut pos = 0;
    let mut sizes = chunks.iter().copied().filter(|&c| c > 0).cycle();
    while pos < wire.len() {
        let size = sizes.next().unwrap_or(wire.len());
        let end = (pos + size).min(wire.len());
        buf.extend_from_slice(&wire[pos..end]);
        pos = end;
        loop {
            match conn.decode(&mut buf) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

/// An event with the parts a comparison should see (close reasons as bytes, payloads as
/// byte vectors), so assertion messages print readably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, Vec<u8>)>),
}

impl From<&Event> for Seen {
    fn from(event: &Event) -> Seen {
        use wsedge::proto::MessageKind;
        match event {
            Event::Message { kind: MessageKind::Text, data } => Seen::Text(data.to_vec()),
            Event::Message { kind: MessageKind::Binary, data } => Seen::Binary(data.to_vec()),
            Event::Ping(p) => Seen::Ping(p.to_vec()),
            Event::Pong(p) => Seen::Pong(p.to_vec()),
            Event::Close(frame) => Seen::Close(frame.as_ref().map(|f| (f.code.0, f.reason.to_vec()))),
        }
    }
}

pub fn seen(events: &[Event]) -> Vec<Seen> {
    events.iter().map(Seen::from).collect()
}

/// A payload as `Bytes`.
pub fn bytes_of(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}
