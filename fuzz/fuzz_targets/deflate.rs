//! permessage-deflate on arbitrary input: extension headers (`parse_extensions`,
//! `negotiate`, `accept_response`), `Decompressor::inflate` of arbitrary data under a
//! small limit, and compress-then-inflate of arbitrary messages.
//!
//! Checks: negotiated windows are in 8..=15 and honour the offer (RFC 7692 §7.1), the
//! response re-parses on the client side to the same parameters; an accepted server
//! response re-encodes to itself; inflate never returns more than the limit and never holds
//! more than limit + one 64 KiB step; compression round-trips for every window, level and
//! context-takeover setting.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use wsedge::proto::deflate::{
    self, Compressor, Decompressor, DeflateConfig, DeflateMode, DeflateParams, InflateError, Offer, EXTENSION_NAME,
};
use wsedge_fuzz::input::Reader;

const INFLATE_STEP: usize = 64 * 1024;

/// The input, read front to back (lengths are little-endian u16 in front of what they
/// measure):
///
/// ```text
/// flags        bit0 dedicated mode, bit1 finish the inflated message, bit2 no context takeover
/// server_bits  configured server window (any value: the config is clamped)
/// client_bits  configured client window
/// window       8 + (window % 8) for the inflate and round-trip windows
/// level        zlib level % 10
/// limit: u16   inflate limit
/// header       len + text: a client's Sec-WebSocket-Extensions
/// response     len + text: a server's Sec-WebSocket-Extensions answer
/// count        pieces of deflate data to inflate (count % 8), each len + bytes
/// messages     the rest: len + bytes each, compressed and inflated back (at most 8)
/// ```
#[derive(Debug)]
struct Input<'a> {
    header: Cow<'a, str>,
    dedicated: bool,
    server_bits: u8,
    client_bits: u8,
    response: Cow<'a, str>,
    window: u8,
    limit: u16,
    pieces: Vec<&'a [u8]>,
    finish: bool,
    level: u8,
    no_context_takeover: bool,
    messages: Vec<&'a [u8]>,
}

impl<'a> Input<'a> {
    fn read(data: &'a [u8]) -> Input<'a> {
        let mut r = Reader::new(data);
        let flags = r.byte();
        let server_bits = r.byte();
        let client_bits = r.byte();
        let window = r.byte();
        let level = r.byte();
        let limit = r.u16();
        let header = r.lp_str();
        let response = r.lp_str();
        let count = r.byte() % 8;
        let pieces = (0..count).map(|_| r.lp_bytes()).collect();
        let mut messages = Vec::new();
        while !r.is_empty() && messages.len() < 8 {
            messages.push(r.lp_bytes());
        }
        Input {
            header,
            dedicated: flags & 1 != 0,
            server_bits,
            client_bits,
            response,
            window,
            limit,
            pieces,
            finish: flags & 2 != 0,
            level,
            no_context_takeover: flags & 4 != 0,
            messages,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::read(data);
    check_negotiation(&input);
    check_response(&input.response);
    check_inflate(&input);
    check_roundtrip(&input);
});

fn check_negotiation(input: &Input<'_>) {
    for e in deflate::parse_extensions(&input.header) {
        assert!(!e.name.is_empty() && e.name.trim() == e.name, "extension name {:?}", e.name);
    }
    let config = DeflateConfig {
        mode: if input.dedicated { DeflateMode::Dedicated } else { DeflateMode::Shared },
        server_max_window_bits: input.server_bits,
        client_max_window_bits: input.client_bits,
        ..DeflateConfig::default()
    };
    let Some((params, response)) = deflate::negotiate(&input.header, &config) else { return };
    assert!((8..=15).contains(&params.server_max_window_bits), "{params:?}");
    assert!((8..=15).contains(&params.client_max_window_bits), "{params:?}");
    // The offer that was taken: the first permessage-deflate element that parses.
    let offer = deflate::parse_extensions(&input.header)
        .into_iter()
        .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|e| Offer::parse(&e.params).ok())
        .expect("negotiate accepted an offer that does not parse");
    assert!(params.server_no_context_takeover || !offer.server_no_context_takeover);
    assert!(params.client_no_context_takeover || !offer.client_no_context_takeover);
    if let Some(bits) = offer.server_max_window_bits {
        assert!(params.server_max_window_bits <= bits, "server window over the offer: {params:?} {offer:?}");
    }
    match offer.client_max_window_bits {
        None => assert_eq!(params.client_max_window_bits, 15, "client window set without the client's leave"),
        Some(Some(bits)) => assert!(params.client_max_window_bits <= bits),
        Some(None) => {}
    }
    assert_eq!(deflate::accept_response(Some(&response)), Ok(Some(params)), "response {response:?}");
}

/// The response header for `params`, written independently of `negotiate`.
fn encode_response(p: &DeflateParams) -> String {
    let mut out = String::from(EXTENSION_NAME);
    if p.server_no_context_takeover {
        out.push_str("; server_no_context_takeover");
    }
    if p.client_no_context_takeover {
        out.push_str("; client_no_context_takeover");
    }
    out.push_str(&format!("; server_max_window_bits={}", p.server_max_window_bits));
    out.push_str(&format!("; client_max_window_bits={}", p.client_max_window_bits));
    out
}

fn check_response(response: &str) {
    if let Ok(Some(params)) = deflate::accept_response(Some(response)) {
        assert!((8..=15).contains(&params.server_max_window_bits), "{params:?}");
        assert!((8..=15).contains(&params.client_max_window_bits), "{params:?}");
        assert_eq!(deflate::accept_response(Some(&encode_response(&params))), Ok(Some(params)));
    }
}

fn check_inflate(input: &Input<'_>) {
    let window = 8 + input.window % 8;
    let limit = usize::from(input.limit);
    let mut d = Decompressor::new(window);
    let mut out = Vec::new();
    let mut result = Ok(());
    for piece in &input.pieces {
        result = d.inflate(piece, &mut out, limit);
        check_bounds(&out, limit, result);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() && input.finish {
        result = d.finish(&mut out, limit);
        check_bounds(&out, limit, result);
    }
}

fn check_bounds(out: &Vec<u8>, limit: usize, result: Result<(), InflateError>) {
    if result.is_ok() {
        assert!(out.len() <= limit, "inflated {} bytes past the limit {limit}", out.len());
    }
    assert!(out.capacity() <= limit + 1 + INFLATE_STEP, "{} bytes held for a limit of {limit}", out.capacity());
}

fn check_roundtrip(input: &Input<'_>) {
    let window = 8 + input.window % 8;
    let level = u32::from(input.level % 10);
    let mut c = Compressor::new(level, window, input.no_context_takeover);
    let mut d = Decompressor::new(window);
    for message in &input.messages {
        let z = c.compress(message).expect("compression failed");
        let mut out = Vec::new();
        let limit = message.len();
        d.inflate(&z, &mut out, limit).expect("our own compressed message does not inflate");
        d.finish(&mut out, limit).expect("our own compressed message does not finish");
        assert_eq!(&out[..], *message, "round trip changed the message");
        assert!(out.capacity() <= limit + 1 + INFLATE_STEP, "capacity {}", out.capacity());
        if input.no_context_takeover {
            d.reset();
        }
    }
}
