//! permessage-deflate, RFC 7692: negotiation, and per-message compression/decompression.
//!
//! No IO, no clock. Negotiation turns a `Sec-WebSocket-Extensions` header into agreed
//! [`DeflateParams`] (server side: [`negotiate`]; client side: [`offer`] and
//! [`accept_response`]). [`Compressor`] and [`Decompressor`] wrap flate2 on its pure-Rust
//! `zlib-rs` backend, which (unlike miniz) honours window sizes below 32 KiB.
//!
//! Memory is the design constraint: zlib-rs allocates ~371 KiB of deflate state and ~46 KiB
//! of inflate state at 15-bit windows (~335 KiB of it resident per idle connection). With
//! `server_no_context_takeover` the server's compressor holds nothing between messages, so
//! one [`CompressorPool`] per worker serves every connection, and a message
//! published to many connections is compressed once (the result does not depend on any
//! connection's history). With `client_no_context_takeover` a connection's decompressor
//! only exists while a compressed message is arriving.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension token.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// RFC 7692 §7.2.1: a sync flush ends with this empty stored block; senders strip it and
/// receivers append it back before inflating.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Output is produced in steps of this size, so a decompression bomb is stopped within one
/// step of the message limit.
const INFLATE_STEP: usize = 64 * 1024;

/// How the server spends memory on compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeflateMode {
    /// The server asks for `server_no_context_takeover` and `client_no_context_takeover`:
    /// one compressor per worker (reset per message) and no idle zlib state per connection.
    Shared,
    /// Context takeover both ways (unless the client asks otherwise): the best ratio, at
    /// ~335 KiB of zlib state per idle connection (measured: benches/idle_memory.sh).
    Dedicated,
}

/// Server-side permessage-deflate settings.
#[derive(Debug, Clone)]
pub struct DeflateConfig {
    /// Accept the extension at all (`--no-deflate` turns it off).
    pub enabled: bool,
    /// Memory against ratio: one shared compressor per worker, or one per connection.
    pub mode: DeflateMode,
    /// Messages shorter than this many bytes are sent uncompressed.
    pub threshold: usize,
    /// zlib compression level, 0-9.
    pub level: u32,
    /// The largest window the server compresses with (9-15).
    pub server_max_window_bits: u8,
    /// The window asked of clients that allow choosing it (8-15; smaller saves the
    /// server's inflate memory).
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: true,
            mode: DeflateMode::Shared,
            threshold: 64,
            level: 6,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// The parameters both ends agreed on, named as in RFC 7692 (server/client direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after every message (keeps no window).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message (keeps no window).
    pub client_no_context_takeover: bool,
    /// 8-15; the server's compression window.
    pub server_max_window_bits: u8,
    /// 8-15; the client's compression window.
    pub client_max_window_bits: u8,
}

/// One `permessage-deflate` offer from a client, RFC 7692 §7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offer {
    /// The client asks the server to reset its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client will reset its own compressor after every message.
    pub client_no_context_takeover: bool,
    /// The largest window the client lets the server compress with (8-15; `None`: 15).
    pub server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (the client lets the server choose).
    pub client_max_window_bits: Option<Option<u8>>,
}

/// Why an offer or response was not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    /// A parameter RFC 7692 does not define.
    Unknown,
    /// A parameter given twice in one offer or response.
    Duplicate,
    /// A missing, unexpected or out-of-range value.
    BadValue,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamError::Unknown => "unknown permessage-deflate parameter",
            ParamError::Duplicate => "duplicate permessage-deflate parameter",
            ParamError::BadValue => "bad permessage-deflate parameter value",
        })
    }
}

impl std::error::Error for ParamError {}

/// One element of an extension list: a name and its parameters (values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: &'a str,
    /// Its parameters in order: name and value (`None` for a bare name).
    pub params: Vec<(&'a str, Option<String>)>,
}

/// Splits a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1) into extensions and their
/// parameters. Commas and semicolons inside quoted strings do not split. Malformed
/// elements are kept with whatever parsed; callers decline what they do not understand.
pub fn parse_extensions(header: &str) -> Vec<Extension<'_>> {
    split_outside_quotes(header, ',')
        .into_iter()
        .filter_map(|element| {
            let mut parts = split_outside_quotes(element, ';').into_iter();
            let name = parts.next()?.trim();
            if name.is_empty() {
                return None;
            }
            let params = parts
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
                    None => (p.trim(), None),
                })
                .collect();
            Some(Extension { name, params })
        })
        .collect()
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_owned(),
    }
}

/// A window-bits value: 1-2 ASCII digits in 8..=15 (leading zeros and signs rejected).
fn window_bits(value: &str) -> Result<u8, ParamError> {
    let ok =
        !value.is_empty() && value.len() <= 2 && value.bytes().all(|b| b.is_ascii_digit()) && !value.starts_with('0');
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) if ok => Ok(bits),
        _ => Err(ParamError::BadValue),
    }
}

impl Offer {
    /// Reads the parameters of one `permessage-deflate` element.
    pub fn parse(params: &[(&str, Option<String>)]) -> Result<Offer, ParamError> {
        let mut offer = Offer::default();
        let mut seen = [false; 4];
        for (name, value) in params {
            let slot = match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                _ => return Err(ParamError::Unknown),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(ParamError::Duplicate);
            }
            match (slot, value) {
                (0, None) => offer.server_no_context_takeover = true,
                (1, None) => offer.client_no_context_takeover = true,
                (2, Some(v)) => offer.server_max_window_bits = Some(window_bits(v)?),
                (3, None) => offer.client_max_window_bits = Some(None),
                (3, Some(v)) => offer.client_max_window_bits = Some(Some(window_bits(v)?)),
                _ => return Err(ParamError::BadValue),
            }
        }
        Ok(offer)
    }
}

/// Server side: picks the first acceptable `permessage-deflate` offer in a
/// `Sec-WebSocket-Extensions` header and returns the agreed parameters with the response
/// header value. Offers with unknown, duplicate or out-of-range parameters are declined
/// (skipped), never an error (RFC 7692 §5).
pub fn negotiate(header: &str, config: &DeflateConfig) -> Option<(DeflateParams, String)> {
    if !config.enabled {
        return None;
    }
    let offer = parse_extensions(header)
        .into_iter()
        .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|e| Offer::parse(&e.params).ok())?;
    let shared = config.mode == DeflateMode::Shared;
    let ours_server = config.server_max_window_bits.clamp(8, 15);
    let ours_client = config.client_max_window_bits.clamp(8, 15);
    let params = DeflateParams {
        // §7.1.1.1: if the client asks, the server must comply; it may also decide alone.
        server_no_context_takeover: offer.server_no_context_takeover || shared,
        // §7.1.1.2: the server may always ask the client to reset per message.
        client_no_context_takeover: offer.client_no_context_takeover || shared,
        server_max_window_bits: offer.server_max_window_bits.map_or(ours_server, |b| b.min(ours_server)),
        // §7.1.2.2: the server may pick the client's window only if the client allows it.
        client_max_window_bits: match offer.client_max_window_bits {
            Some(Some(b)) => b.min(ours_client),
            Some(None) => ours_client,
            None => 15,
        },
    };
    let mut response = String::from(EXTENSION_NAME);
    if params.server_no_context_takeover {
        response.push_str("; server_no_context_takeover");
    }
    if params.client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    // §7.1.2.1: echo a requested server window (with a value no larger), or announce ours.
    if offer.server_max_window_bits.is_some() || params.server_max_window_bits < 15 {
        response.push_str(&format!("; server_max_window_bits={}", params.server_max_window_bits));
    }
    if offer.client_max_window_bits.is_some() && params.client_max_window_bits < 15 {
        response.push_str(&format!("; client_max_window_bits={}", params.client_max_window_bits));
    }
    Some((params, response))
}

/// Client side: the offer header value for a client that accepts whatever the server picks.
pub fn offer() -> &'static str {
    "permessage-deflate; client_max_window_bits"
}

/// Client side: checks the server's response to [`offer`] and returns the agreed
/// parameters (`Ok(None)`: the server declined the extension).
pub fn accept_response(header: Option<&str>) -> Result<Option<DeflateParams>, ParamError> {
    let Some(header) = header else { return Ok(None) };
    let extensions = parse_extensions(header);
    let mut agreed = None;
    for e in &extensions {
        if !e.name.eq_ignore_ascii_case(EXTENSION_NAME) || agreed.is_some() {
            return Err(ParamError::Unknown); // only one permessage-deflate was offered
        }
        let answer = Offer::parse(&e.params)?;
        agreed = Some(DeflateParams {
            server_no_context_takeover: answer.server_no_context_takeover,
            client_no_context_takeover: answer.client_no_context_takeover,
            server_max_window_bits: answer.server_max_window_bits.unwrap_or(15),
            // A bare `client_max_window_bits` is not a valid answer (§7.1.2.2).
            client_max_window_bits: match answer.client_max_window_bits {
                None => 15,
                Some(Some(b)) => b,
                Some(None) => return Err(ParamError::BadValue),
            },
        });
    }
    Ok(agreed)
}

/// zlib cannot deflate with a 256-byte window (windowBits 8) and flate2 refuses it, so 8
/// becomes 9. That is still correct for a peer that asked for 8: zlib's (and zlib-rs's)
/// deflate never emits a distance over `window - MIN_LOOKAHEAD` = 512 - 262 = 250 bytes.
/// For inflate, a larger window than the peer uses is always fine.
fn zlib_window_bits(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// Compresses messages for one direction.
pub struct Compressor {
    inner: Compress,
    no_context_takeover: bool,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor").field("no_context_takeover", &self.no_context_takeover).finish()
    }
}

impl Compressor {
    /// A raw-deflate compressor at zlib `level` (capped at 9) with a window of
    /// `window_bits`; with `no_context_takeover` it forgets the window after each message.
    pub fn new(level: u32, window_bits: u8, no_context_takeover: bool) -> Self {
        let inner =
            Compress::new_with_window_bits(Compression::new(level.min(9)), false, zlib_window_bits(window_bits));
        Compressor { inner, no_context_takeover }
    }

    /// Compresses one message payload (RFC 7692 §7.2.1): deflate, sync flush, strip the
    /// trailing `00 00 FF FF`. `None` if zlib failed (the caller sends it uncompressed).
    pub fn compress(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let start_in = self.inner.total_in();
        loop {
            let consumed = usize::try_from(self.inner.total_in() - start_in).ok()?;
            let rest = input.get(consumed..)?;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            self.inner.compress_vec(rest, &mut out, FlushCompress::Sync).ok()?;
            let consumed = usize::try_from(self.inner.total_in() - start_in).ok()?;
            // The flush is complete once all input is in and zlib left output space unused.
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if self.no_context_takeover {
            self.inner.reset();
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        } else if out.is_empty() {
            // zlib emits nothing for a second sync flush in a row (an empty message with
            // context takeover). The receiver appends 00 00 FF FF, so send the header byte
            // of an empty stored block to make that tail a whole block (RFC 7692 §7.2.3.6).
            out.push(0x00);
        }
        Some(out)
    }
}

/// The per-worker compressors for connections whose server side has no context takeover:
/// one per window size, created on first use and reset after every message. Because the
/// output depends only on the message, a frame compressed here can go to every connection
/// that agreed to this window (or a larger one).
#[derive(Debug)]
pub struct CompressorPool {
    level: u32,
    by_window: [Option<Box<Compressor>>; 8],
}

impl CompressorPool {
    /// An empty pool compressing at zlib `level`; compressors appear on first use.
    pub fn new(level: u32) -> Self {
        CompressorPool { level, by_window: Default::default() }
    }

    /// Compresses `input` for peers that accept `window_bits` (8-15).
    pub fn compress(&mut self, window_bits: u8, input: &[u8]) -> Option<Vec<u8>> {
        let bits = zlib_window_bits(window_bits);
        let slot = self.by_window.get_mut(usize::from(bits - 8))?;
        slot.get_or_insert_with(|| Box::new(Compressor::new(self.level, bits, true))).compress(input)
    }
}

/// Why inflating a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The output would exceed the message size limit (-> 1009).
    TooBig,
    /// Not a valid deflate stream (-> 1007).
    Corrupt,
}

/// Decompresses messages for one direction.
pub struct Decompressor {
    inner: Decompress,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor").finish_non_exhaustive()
    }
}

impl Decompressor {
    /// A raw-inflate state for a peer compressing with a window of `window_bits`.
    pub fn new(window_bits: u8) -> Self {
        Decompressor { inner: Decompress::new_with_window_bits(false, zlib_window_bits(window_bits)) }
    }

    /// Inflates the next piece of a compressed message, appending to `out`, which never
    /// grows past `limit` (+ one step of slack): exceeding it is `TooBig`. Call
    /// [`Decompressor::finish`] after the message's last piece.
    pub fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        let start_in = self.inner.total_in();
        loop {
            let consumed_before =
                usize::try_from(self.inner.total_in() - start_in).map_err(|_| InflateError::Corrupt)?;
            let rest = input.get(consumed_before..).unwrap_or_default();
            // Room for at most one step, and never (much) past limit + 1: producing one
            // byte beyond the limit is how we know it was exceeded.
            let room = limit.saturating_add(1).saturating_sub(out.len()).min(INFLATE_STEP);
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            if out.capacity() - out.len() < room {
                out.reserve_exact(room);
            }
            let spare_before = out.capacity() - out.len();
            let len_before = out.len();
            let status =
                self.inner.decompress_vec(rest, out, FlushDecompress::Sync).map_err(|_| InflateError::Corrupt)?;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            let consumed = usize::try_from(self.inner.total_in() - start_in).map_err(|_| InflateError::Corrupt)?;
            let filled = out.capacity() - out.len() == 0 && spare_before > 0;
            let progressed = consumed > consumed_before || out.len() > len_before;
            match status {
                // A final block ended the stream; anything after it is ignored.
                Status::StreamEnd => return Ok(()),
                _ if consumed >= input.len() && !filled => return Ok(()),
                // No progress possible without more input.
                Status::BufError if consumed >= input.len() => return Ok(()),
                Status::BufError if !filled => return Err(InflateError::Corrupt),
                // zlib made no progress with input and room available: never loop on it.
                _ if !progressed => return Err(InflateError::Corrupt),
                _ => {}
            }
        }
    }

    /// Ends a message: feeds the stripped `00 00 FF FF` tail (RFC 7692 §7.2.2).
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        self.inflate(&SYNC_TAIL, out, limit)
    }

    /// Forgets the window (no context takeover).
    pub fn reset(&mut self) {
        self.inner.reset(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inflate_all(d: &mut Decompressor, input: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        d.inflate(input, &mut out, limit)?;
        d.finish(&mut out, limit)?;
        Ok(out)
    }

    #[test]
    fn rfc7692_7_2_3_1_hello_unfragmented() {
        let mut d = Decompressor::new(15);
        assert_eq!(inflate_all(&mut d, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_1_hello_fragmented() {
        // The compressed payload split across two frames.
        let mut d = Decompressor::new(15);
        let mut out = Vec::new();
        d.inflate(&[0xf2, 0x48, 0xcd], &mut out, 100).unwrap();
        d.inflate(&[0xc9, 0xc9, 0x07, 0x00], &mut out, 100).unwrap();
        d.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_2_context_takeover_shares_the_window() {
        let mut d = Decompressor::new(15);
        assert_eq!(inflate_all(&mut d, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(), b"Hello");
        // The second "Hello" refers back into the first message.
        assert_eq!(inflate_all(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00], 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_3_stored_block() {
        let mut d = Decompressor::new(15);
        let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(inflate_all(&mut d, &stored, 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_4_two_deflate_blocks() {
        let mut d = Decompressor::new(15);
        let two = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_all(&mut d, &two, 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_6_empty_message_with_final_block() {
        // An empty message may be a single empty final block: 0x03 0x00.
        let mut d = Decompressor::new(15);
        assert_eq!(inflate_all(&mut d, &[0x03, 0x00], 100).unwrap(), b"");
    }

    #[test]
    fn compressor_output_matches_rfc_hello() {
        let mut c = Compressor::new(6, 15, true);
        let out = c.compress(b"Hello").unwrap();
        let mut d = Decompressor::new(15);
        assert_eq!(inflate_all(&mut d, &out, 100).unwrap(), b"Hello");
        assert!(!out.ends_with(&SYNC_TAIL));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compresses to ~64 KiB; with a 1 MiB limit inflate must stop early.
        let mut c = Compressor::new(9, 15, true);
        let zeros = vec![0u8; 64 << 20];
        let bomb = c.compress(&zeros).unwrap();
        assert!(bomb.len() < 128 * 1024);
        let mut d = Decompressor::new(15);
        let mut out = Vec::new();
        assert_eq!(d.inflate(&bomb, &mut out, 1 << 20), Err(InflateError::TooBig));
        assert!(out.capacity() <= (1 << 20) + INFLATE_STEP + 1, "capacity {}", out.capacity());
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut d = Decompressor::new(15);
        assert_eq!(inflate_all(&mut d, &[0xff; 16], 1000), Err(InflateError::Corrupt));
    }

    #[test]
    fn extension_lists_parse_with_quotes_and_several_offers() {
        let header = r#"permessage-deflate; client_max_window_bits="10"; server_no_context_takeover, permessage-deflate, x-foo; a="b,c;d""#;
        let exts = parse_extensions(header);
        assert_eq!(exts.len(), 3);
        assert_eq!(
            exts[0].params,
            vec![("client_max_window_bits", Some("10".to_owned())), ("server_no_context_takeover", None)]
        );
        assert_eq!(exts[2].name, "x-foo");
        assert_eq!(exts[2].params, vec![("a", Some("b,c;d".to_owned()))]);
    }

    #[test]
    fn offers_with_bad_parameters_are_declined_not_failed() {
        let dedicated = DeflateConfig { mode: DeflateMode::Dedicated, ..DeflateConfig::default() };
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=010",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate(bad, &dedicated), None, "{bad}");
        }
        // The first acceptable offer wins.
        let (params, response) =
            negotiate("permessage-deflate; foo, permessage-deflate; server_max_window_bits=10", &dedicated).unwrap();
        assert_eq!(params.server_max_window_bits, 10);
        assert_eq!(response, "permessage-deflate; server_max_window_bits=10");
    }

    #[test]
    fn negotiation_per_mode() {
        let shared = DeflateConfig::default();
        let dedicated = DeflateConfig { mode: DeflateMode::Dedicated, ..DeflateConfig::default() };
        // A browser's offer.
        let browser = "permessage-deflate; client_max_window_bits";
        let (p, r) = negotiate(browser, &shared).unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(r, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        let (p, r) = negotiate(browser, &dedicated).unwrap();
        assert!(!p.server_no_context_takeover && !p.client_no_context_takeover);
        assert_eq!(r, "permessage-deflate");
        // The client's requests are honoured in either mode.
        let (p, r) =
            negotiate("permessage-deflate; server_no_context_takeover; client_max_window_bits=9", &dedicated).unwrap();
        assert!(p.server_no_context_takeover);
        assert_eq!(p.client_max_window_bits, 9);
        assert_eq!(r, "permessage-deflate; server_no_context_takeover; client_max_window_bits=9");
        // A smaller configured client window is asked for only when the client allows it.
        let small = DeflateConfig { client_max_window_bits: 10, ..dedicated.clone() };
        assert_eq!(negotiate(browser, &small).unwrap().1, "permessage-deflate; client_max_window_bits=10");
        assert_eq!(negotiate("permessage-deflate", &small).unwrap().0.client_max_window_bits, 15);
        assert_eq!(negotiate(browser, &DeflateConfig { enabled: false, ..shared }), None);
    }

    #[test]
    fn client_checks_the_response() {
        let (params, response) = negotiate(offer(), &DeflateConfig::default()).unwrap();
        assert_eq!(accept_response(Some(&response)), Ok(Some(params)));
        assert_eq!(accept_response(None), Ok(None));
        assert!(accept_response(Some("permessage-deflate; client_max_window_bits")).is_err());
        assert!(accept_response(Some("permessage-deflate, permessage-deflate")).is_err());
        assert!(accept_response(Some("x-other")).is_err());
    }

    #[test]
    fn window_bits_8_is_served_by_a_9_bit_zlib_window() {
        let mut pool = CompressorPool::new(6);
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8 ^ (i / 700) as u8).collect();
        let out = pool.compress(8, &data).unwrap();
        assert_eq!(inflate_all(&mut Decompressor::new(8), &out, 1 << 20).unwrap(), data);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn compress_then_inflate_roundtrips_for_any_window_and_takeover(
            messages in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..2000),
                    "[a-c]{0,3000}".prop_map(String::into_bytes),
                ],
                1..5,
            ),
            bits in 8u8..=15,
            no_context_takeover in any::<bool>(),
            level in 0u32..=9,
            cut in any::<prop::sample::Index>(),
        ) {
            let mut c = Compressor::new(level, bits, no_context_takeover);
            let mut d = Decompressor::new(bits);
            for m in &messages {
                let z = c.compress(m).unwrap();
                // Feed in two pieces, as two frames of one message would arrive.
                let split = cut.index(z.len() + 1);
                let mut out = Vec::new();
                d.inflate(&z[..split], &mut out, 1 << 20).unwrap();
                d.inflate(&z[split..], &mut out, 1 << 20).unwrap();
                d.finish(&mut out, 1 << 20).unwrap();
                prop_assert_eq!(&out, m);
                if no_context_takeover {
                    d.reset();
                }
            }
        }
    }
}
