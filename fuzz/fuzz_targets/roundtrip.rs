//! Messages encoded by a `Connection` of one role and decoded by one of the other, the
//! byte stream cut into fuzz-chosen chunks, with and without permessage-deflate.
//!
//! The sender uses `send_message`, `send_message_pooled` with a shared `CompressorPool`,
//! and (server side) the fan-out path the event loop uses for broadcasts
//! (`Connection::broadcast_frame`: one frame encoded, and compressed once per window, shared
//! by receivers). Checks: the receiver reports exactly the same
//! messages, pings and close, in order, without an error; what it sends back (pongs, the
//! close reply) decodes on the sender's side to the matching pongs and close.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wsedge::proto::close::CloseCode;
use wsedge::proto::connection::BroadcastFrames;
use wsedge::proto::deflate::{CompressorPool, DeflateParams};
use wsedge::proto::frame::MAX_CONTROL_PAYLOAD;
use wsedge::proto::{Config, Connection, MaskKeys, MessageKind, Role};
use wsedge_fuzz::input::Reader;
use wsedge_fuzz::{check_transmitted_frames, decode_chunked, seen, transmitted, Seen};

#[derive(Debug)]
enum Payload {
    Text(String),
    Binary(Vec<u8>),
    /// A long, compressible message: `len` copies of a short pattern.
    Repeated {
        text: bool,
        pattern: u8,
        len: u16,
    },
}

impl Payload {
    fn build(&self) -> (MessageKind, Vec<u8>) {
        match self {
            Payload::Text(s) => (MessageKind::Text, s.as_bytes().to_vec()),
            Payload::Binary(b) => (MessageKind::Binary, b.clone()),
            Payload::Repeated { text, pattern, len } => {
                let unit: &[u8] = if *text { "abcé ".as_bytes() } else { &[*pattern, 0, 1, *pattern] };
                let data: Vec<u8> = unit.iter().copied().cycle().take(usize::from(*len) * unit.len()).collect();
                (if *text { MessageKind::Text } else { MessageKind::Binary }, data)
            }
        }
    }
}

#[derive(Debug)]
enum Item {
    /// `send_message`, or `send_message_pooled` with the shared pool.
    Send {
        payload: Payload,
        pooled: bool,
    },
    /// The event loop's broadcast path (server sender only; a plain send otherwise).
    Fanout(Payload),
    Ping(Vec<u8>),
}

#[derive(Debug)]
struct Deflate {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_bits: u8,
    client_bits: u8,
    threshold: u8,
    level: u8,
}

/// The input, read front to back (lengths are little-endian u16 in front of what they
/// measure):
///
/// ```text
/// flags     bit0 the client sends (else the server), bit1 deflate,
///           bit2 server_no_context_takeover, bit3 client_no_context_takeover,
///           bit4 end with a close
/// bits      deflate windows: server 8 + (low nibble % 8), client 8 + (high nibble % 8)
/// threshold deflate threshold (bytes)
/// level     zlib level % 10
/// chunks    count % 8, then that many u16 chunk sizes for the receiver's input
/// close     if flagged: u16 code, len + reason
/// items     the rest, each a tag byte and its payload:
///           tag % 4 = 0 text (len + UTF-8), 1 binary (len + bytes),
///           2 repeated (text flag byte, pattern byte, u16 count % 16384), 3 ping (len + bytes);
///           tag bit 4: send through the shared CompressorPool; bit 5: the fan-out path
/// ```
#[derive(Debug)]
struct Input {
    sender_is_client: bool,
    deflate: Option<Deflate>,
    items: Vec<Item>,
    chunks: Vec<u16>,
    close: Option<(u16, String)>,
}

impl Input {
    fn read(data: &[u8]) -> Input {
        let mut r = Reader::new(data);
        let flags = r.byte();
        let bits = r.byte();
        let threshold = r.byte();
        let level = r.byte();
        let deflate = (flags & 2 != 0).then_some(Deflate {
            server_no_context_takeover: flags & 4 != 0,
            client_no_context_takeover: flags & 8 != 0,
            server_bits: bits & 0x0F,
            client_bits: bits >> 4,
            threshold,
            level,
        });
        let chunk_count = r.byte() % 8;
        let chunks = (0..chunk_count).map(|_| r.u16()).collect();
        let close = (flags & 16 != 0).then(|| (r.u16(), r.lp_str().into_owned()));
        let mut items = Vec::new();
        let mut total = 0;
        while !r.is_empty() && items.len() < 32 && total < MAX_TOTAL {
            let tag = r.byte();
            let payload = match tag % 4 {
                0 => Payload::Text(r.lp_str().into_owned()),
                1 => Payload::Binary(r.lp_bytes().to_vec()),
                2 => Payload::Repeated { text: r.bool(), pattern: r.byte(), len: r.u16() % 16384 },
                _ => {
                    items.push(Item::Ping(r.lp_bytes().to_vec()));
                    continue;
                }
            };
            total += payload.build().1.len();
            items.push(if tag & 0x20 != 0 {
                Item::Fanout(payload)
            } else {
                Item::Send { payload, pooled: tag & 0x10 != 0 }
            });
        }
        Input { sender_is_client: flags & 1 != 0, deflate, items, chunks, close }
    }
}

/// Payload bytes per input, and chunks per stream: enough for 16-bit and 64-bit lengths and
/// many deflate blocks, small enough to keep a few hundred executions a second.
const MAX_TOTAL: usize = 256 << 10;
const MAX_CHUNKS: usize = 4096;

fuzz_target!(|data: &[u8]| run(&Input::read(data)));

fn connection(role: Role, input: &Input) -> Connection {
    let conn = match role {
        Role::Server => Connection::server(Config::default()),
        Role::Client => Connection::client(Config::default(), MaskKeys::from_seed(0xC0FFEE)),
    };
    match &input.deflate {
        Some(d) => {
            let params = DeflateParams {
                server_no_context_takeover: d.server_no_context_takeover,
                client_no_context_takeover: d.client_no_context_takeover,
                server_max_window_bits: 8 + d.server_bits % 8,
                client_max_window_bits: 8 + d.client_bits % 8,
            };
            conn.with_deflate(params, usize::from(d.threshold), u32::from(d.level % 10))
        }
        None => conn,
    }
}

fn run(input: &Input) {
    let (sender_role, receiver_role) =
        if input.sender_is_client { (Role::Client, Role::Server) } else { (Role::Server, Role::Client) };
    let mut sender = connection(sender_role, input);
    let mut receiver = connection(receiver_role, input);
    let mut pool = CompressorPool::new(input.deflate.as_ref().map_or(6, |d| u32::from(d.level % 10)));
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut expected_back = Vec::new();
    for item in &input.items {
        match item {
            Item::Send { payload, pooled } => {
                let (kind, data) = payload.build();
                expected.push(message(kind, &data));
                let pool = pooled.then_some(&mut pool);
                sender.send_message_pooled(kind, Bytes::from(data), pool);
            }
            Item::Fanout(payload) => {
                let (kind, data) = payload.build();
                expected.push(message(kind, &data));
                if sender_role == Role::Server {
                    wire.extend_from_slice(&transmitted(&mut sender));
                    // The event loop's broadcast path for one receiver; `None`: the frame
                    // went into the codec's own transmit queue (context takeover).
                    let mut frames = BroadcastFrames::new(kind, Bytes::from(data));
                    if let Some(frame) = sender.broadcast_frame(&mut frames, &mut pool) {
                        wire.extend_from_slice(&frame);
                    }
                } else {
                    sender.send_message(kind, Bytes::from(data));
                }
            }
            Item::Ping(payload) => {
                let cut = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
                expected.push(Seen::Ping(cut.to_vec()));
                expected_back.push(Seen::Pong(cut.to_vec()));
                sender.send_ping(Bytes::copy_from_slice(payload));
            }
        }
    }
    if let Some((code, reason)) = &input.close {
        let code = CloseCode(*code);
        let sent = if code.is_valid_on_wire() { code } else { CloseCode::NORMAL };
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        expected.push(Seen::Close(Some((sent.0, reason.as_bytes()[..end].to_vec()))));
        expected_back.push(Seen::Close(Some((sent.0, Vec::new()))));
        sender.close(code, reason);
    }
    wire.extend_from_slice(&transmitted(&mut sender));
    check_transmitted_frames(&wire, sender_role, input.deflate.is_some());

    // Tiny chunks over a long stream only repeat themselves: keep at most MAX_CHUNKS.
    let least = wire.len() / MAX_CHUNKS;
    let chunks: Vec<usize> = input.chunks.iter().map(|&c| usize::from(c).max(least)).collect();
    let (events, error) = decode_chunked(&mut receiver, &wire, &chunks);
    assert_eq!(error, None, "the receiver failed the connection");
    assert_eq!(seen(&events), expected, "the receiver decoded something else than was sent");

    let back = transmitted(&mut receiver);
    check_transmitted_frames(&back, receiver_role, input.deflate.is_some());
    let (events, error) = decode_chunked(&mut sender, &back, &chunks);
    assert_eq!(error, None, "the sender failed on the receiver's answers");
    assert_eq!(seen(&events), expected_back, "pongs or the close reply went wrong");
}

fn message(kind: MessageKind, data: &[u8]) -> Seen {
    match kind {
        MessageKind::Text => Seen::Text(data.to_vec()),
        MessageKind::Binary => Seen::Binary(data.to_vec()),
    }
}
