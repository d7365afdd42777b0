//! The byte-stream driver for `connection_server` and `connection_client`.
//!
//! Input layout (everything after the prefix is the peer's byte stream):
//!
//! ```text
//! byte 0   flags: bit0 deflate, bit1 server_no_context_takeover,
//!          bit2 client_no_context_takeover, bit3 compress threshold 0 (else 16),
//!          bit4 small limits (1 KiB frames, 4 KiB messages; else 64 KiB both),
//!          bit5 send a message after the first chunk, bit6 send a ping after it,
//!          bit7 start the close handshake after chunk `close_after`
//! byte 1   window bits: server 8 + (low nibble % 8), client 8 + (high nibble % 8)
//! byte 2   chunk plan: 1 + (bits 0-2) chunk sizes follow; bits 3-5: close_after
//! sizes    one byte each: b < 128 -> b + 1 bytes, else (b - 127) * 512 bytes
//! rest     the stream, fed in chunks of those sizes (cycled)
//! ```
//!
//! Invariants checked after every `decode`: the read buffer never grows and holds less
//! than one frame once decode wants more; reassembly memory stays within the message
//! limit; events are well-formed (UTF-8 text, sizes within limits, control payloads within
//! 125 bytes); a close event or an error is final (then only `Ok(None)` and no output);
//! messages never surface after we sent a close. At the end, the transmitted bytes are
//! checked frame by frame and decoded by a peer in the other role, which must see exactly
//! the pongs, close replies, error closes and messages the driver expects. Without driver
//! actions, feeding the same stream in one piece must give the same events, error and
//! output (chunking independence). `decode_in_place` (the server's path: a message in one
//! frame left in the buffer for the caller to take) must agree with `decode` on all of it.

use bytes::{Bytes, BytesMut};
use wsedge::proto::close::{CloseCode, CloseFrame};
use wsedge::proto::deflate::DeflateParams;
use wsedge::proto::frame::{MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use wsedge::proto::{Config, Connection, Decoded, Event, MaskKeys, MessageKind, ProtocolError, Role};

use crate::{check_transmitted_frames, decode_chunked, seen, transmitted, Seen};

/// What the driver decodes from the prefix.
#[derive(Debug, Clone)]
struct Plan {
    config: Config,
    deflate: Option<(DeflateParams, usize)>,
    send_message: bool,
    send_ping: bool,
    close_after: Option<usize>,
    chunks: Vec<usize>,
}

impl Plan {
    fn parse(data: &[u8]) -> Option<(Plan, &[u8])> {
        let (&flags, rest) = data.split_first()?;
        let (&bits, rest) = rest.split_first()?;
        let (&chunk_plan, rest) = rest.split_first()?;
        let count = 1 + usize::from(chunk_plan & 0x07);
        if rest.len() < count {
            return None;
        }
        let (sizes, stream) = rest.split_at(count);
        let chunks =
            sizes.iter().map(|&b| if b < 128 { usize::from(b) + 1 } else { (usize::from(b) - 127) * 512 }).collect();
        let config = if flags & 0x10 != 0 {
            Config { max_frame_size: 1024, max_message_size: 4096 }
        } else {
            Config { max_frame_size: 64 << 10, max_message_size: 64 << 10 }
        };
        let deflate = (flags & 0x01 != 0).then(|| {
            let params = DeflateParams {
                server_no_context_takeover: flags & 0x02 != 0,
                client_no_context_takeover: flags & 0x04 != 0,
                server_max_window_bits: 8 + (bits & 0x07),
                client_max_window_bits: 8 + ((bits >> 4) & 0x07),
            };
            (params, if flags & 0x08 != 0 { 0 } else { 16 })
        });
        let plan = Plan {
            config,
            deflate,
            send_message: flags & 0x20 != 0,
            send_ping: flags & 0x40 != 0,
            close_after: (flags & 0x80 != 0).then_some(usize::from((chunk_plan >> 3) & 0x07)),
            chunks,
        };
        Some((plan, stream))
    }

    fn has_actions(&self) -> bool {
        self.send_message || self.send_ping || self.close_after.is_some()
    }

    fn connection(&self, role: Role) -> Connection {
        let conn = match role {
            Role::Server => Connection::server(self.config),
            Role::Client => Connection::client(self.config, MaskKeys::from_seed(0x5EED)),
        };
        match self.deflate {
            Some((params, threshold)) => conn.with_deflate(params, threshold, 6),
            None => conn,
        }
    }

    /// The connection in the other role that reads what `role` transmits.
    fn peer(&self, role: Role) -> Connection {
        let config = Config::default();
        let conn = match role {
            Role::Server => Connection::client(config, MaskKeys::from_seed(0xFEED)),
            Role::Client => Connection::server(config),
        };
        match self.deflate {
            Some((params, threshold)) => conn.with_deflate(params, threshold, 6),
            None => conn,
        }
    }
}

/// What came out of one run: events in order, the first error, the transmitted bytes.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Seen>,
    error: Option<ProtocolError>,
    wire: Vec<u8>,
}

const MESSAGE: &[u8] = b"a message from the fuzz driver, long enough to be compressed";
const PING: &[u8] = b"driver ping";
const CLOSE_REASON: &str = "bye";

/// Runs one input through a connection in `role`.
pub fn run(role: Role, data: &[u8]) {
    let Some((plan, stream)) = Plan::parse(data) else { return };
    let outcome = drive(role, &plan, stream, &plan.chunks, false);
    // The server's path: messages in one frame left in place, then taken from the buffer.
    let in_place = drive(role, &plan, stream, &plan.chunks, true);
    assert_eq!(outcome, in_place, "decode_in_place and decode disagree");
    if !plan.has_actions() {
        // Chunking independence: the whole stream in one piece gives the same result.
        let whole = drive(role, &plan, stream, &[stream.len().max(1)], false);
        assert_eq!(outcome, whole, "chunked and whole-stream decoding disagree");
    }
}

/// The next event as `decode` gives it, or (`in_place`) through `decode_in_place`, taking
/// a message left in place from the front of `buf`.
fn next_event(conn: &mut Connection, buf: &mut BytesMut, in_place: bool) -> Result<Option<Event>, ProtocolError> {
    if !in_place {
        return conn.decode(buf);
    }
    Ok(match conn.decode_in_place(buf)? {
        Some(Decoded::InPlace { kind, len }) => {
            assert!(len <= buf.len(), "a message in place of {len} bytes, {} buffered", buf.len());
            Some(Event::Message { kind, data: buf.split_to(len).freeze() })
        }
        Some(Decoded::Event(event)) => Some(event),
        None => None,
    })
}

fn drive(role: Role, plan: &Plan, stream: &[u8], chunks: &[usize], in_place: bool) -> Outcome {
    let config = plan.config;
    let mut conn = plan.connection(role);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut error = None;
    // What the peer must decode from our output, in order.
    let mut expected_at_peer: Vec<Seen> = Vec::new();
    let mut wire = Vec::new();
    let mut finished = false;
    let mut pos = 0;
    let mut sizes = chunks.iter().copied().cycle();
    let mut chunk_index = 0;
    while pos < stream.len() {
        let end = (pos + sizes.next().unwrap_or(stream.len())).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            let before = buf.len();
            let was_open = conn.is_open();
            let result = next_event(&mut conn, &mut buf, in_place);
            assert!(buf.len() <= before, "decode grew the read buffer: {before} -> {}", buf.len());
            assert!(
                conn.buffered_message_bytes() <= config.max_message_size,
                "{} bytes buffered for a message, limit {}",
                conn.buffered_message_bytes(),
                config.max_message_size
            );
            let output = transmitted(&mut conn);
            if finished {
                assert_eq!(result, Ok(None), "decode went on after a close event or an error");
                assert!(output.is_empty(), "output after a close event or an error");
                assert!(buf.is_empty(), "input kept after the connection ended");
                break;
            }
            wire.extend_from_slice(&output);
            match result {
                Ok(None) => {
                    if !conn.is_terminated() {
                        // Only an incomplete frame may be left: header + at most one payload.
                        let most = MAX_HEADER_LEN + config.max_frame_size.max(MAX_CONTROL_PAYLOAD);
                        assert!(buf.len() < most, "{} bytes left in the read buffer", buf.len());
                    }
                    break;
                }
                Ok(Some(event)) => {
                    check_event(&event, &config);
                    match &event {
                        Event::Message { .. } => {
                            assert!(was_open, "a message surfaced after our close was sent");
                        }
                        Event::Ping(payload) if was_open => expected_at_peer.push(Seen::Pong(payload.to_vec())),
                        Event::Ping(_) | Event::Pong(_) => {}
                        Event::Close(frame) => {
                            assert!(conn.is_terminated(), "close event but the connection is {:?}", conn.state());
                            if was_open {
                                expected_at_peer.push(Seen::Close(frame.as_ref().map(|f| (f.code.0, Vec::new()))));
                            }
                            finished = true;
                        }
                    }
                    events.push(Seen::from(&event));
                }
                Err(e) => {
                    assert!(conn.is_terminated(), "error {e:?} but the connection is {:?}", conn.state());
                    if was_open {
                        // The close says why: the error's text (cut to fit a control frame).
                        let reason = CloseFrame::encode_payload(e.close_code(), &e.to_string());
                        expected_at_peer.push(Seen::Close(Some((e.close_code().0, reason[2..].to_vec()))));
                    }
                    error = Some(e);
                    finished = true;
                    break;
                }
            }
        }
        // Driver actions between chunks: what the application would do meanwhile.
        if chunk_index == 0 && plan.send_message {
            if conn.is_open() {
                expected_at_peer.push(Seen::Text(MESSAGE.to_vec()));
            }
            conn.send_message(MessageKind::Text, Bytes::from_static(MESSAGE));
        }
        if chunk_index == 0 && plan.send_ping {
            if conn.is_open() {
                expected_at_peer.push(Seen::Ping(PING.to_vec()));
            }
            conn.send_ping(Bytes::from_static(PING));
        }
        if plan.close_after == Some(chunk_index) {
            if conn.is_open() {
                expected_at_peer.push(Seen::Close(Some((CloseCode::NORMAL.0, CLOSE_REASON.as_bytes().to_vec()))));
            }
            conn.close(CloseCode::NORMAL, CLOSE_REASON);
        }
        wire.extend_from_slice(&transmitted(&mut conn));
        chunk_index += 1;
    }

    check_transmitted_frames(&wire, role, plan.deflate.is_some());
    let mut peer = plan.peer(role);
    let (peer_events, peer_error) = decode_chunked(&mut peer, &wire, &[wire.len().max(1)]);
    assert_eq!(peer_error, None, "the peer rejected what we transmitted");
    assert_eq!(seen(&peer_events), expected_at_peer, "the peer decoded something else than we sent");
    Outcome { events, error, wire }
}

/// An event as the application may rely on it.
fn check_event(event: &Event, config: &Config) {
    match event {
        Event::Message { kind, data } => {
            assert!(data.len() <= config.max_message_size, "message of {} bytes", data.len());
            if *kind == MessageKind::Text {
                assert!(std::str::from_utf8(data).is_ok(), "text message is not UTF-8");
            }
        }
        Event::Ping(payload) | Event::Pong(payload) => {
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD, "control payload of {} bytes", payload.len());
        }
        Event::Close(Some(frame)) => {
            assert!(frame.code.is_valid_on_wire(), "close event with code {}", frame.code.0);
            assert!(frame.reason.len() <= MAX_CONTROL_PAYLOAD - 2);
            assert!(std::str::from_utf8(&frame.reason).is_ok(), "close reason is not UTF-8");
        }
        Event::Close(None) => {}
    }
}
