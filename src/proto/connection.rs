//! The RFC 6455 connection state machine, for both roles, after the opening handshake.
//!
//! No IO, no clock: [`Connection::decode`] takes bytes from the front of the caller's read
//! buffer and returns at most one [`Event`]; frames to send (automatic pongs, close replies,
//! messages given to [`Connection::send_message`]) queue up as [`Transmit`] chunks (a header
//! held inline, a payload as `Bytes`) and are taken with [`Connection::poll_transmit`].
//! Timeouts are the caller's business. Sending a message allocates nothing on the server
//! side: the payload is not copied and the header needs no buffer of its own.
//!
//! Zero-copy: a payload is unmasked in place in the read buffer and handed out as a `Bytes`
//! split off that buffer; only fragmented messages are copied (into one reassembly buffer).
//! A text payload is validated as its bytes arrive, so invalid UTF-8 fails the connection at
//! the first bad byte, even in the middle of a frame (RFC 6455 §8.1, Autobahn 6.4.*).
//!
//! With permessage-deflate (RFC 7692) negotiated, a message whose first frame has RSV1 set
//! is inflated frame by frame into a buffer bounded by the message limit, and its text is
//! validated as it is inflated.
//!
//! Next door: `error.rs` names the violations this module detects, `transmit.rs` holds the
//! outgoing chunk type, `broadcast.rs` the encodings one message shares across many
//! connections (this module only picks which one a connection takes, in
//! [`Connection::broadcast_frame`]).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

// Broadcast encoding and the transmit chunk were written here first; their old paths
// (`proto::connection::BroadcastFrames`, `encode_server_frame`, ...) keep working.
pub use super::broadcast::{encode_compressed_server_frame, encode_server_frame, BroadcastFrames};
use super::close::{CloseCode, CloseFrame, ClosePayloadError};
use super::deflate::{Compressor, CompressorPool, Decompressor, DeflateParams, InflateError};
pub use super::error::ProtocolError;
use super::frame::{EncodedHeader, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::mask_keys::MaskKeys;
use super::transmit::Transmit;
use super::utf8::Utf8Validator;

/// Which end of the connection this is. A server requires masked frames and sends unmasked
/// ones; a client the reverse (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepted the connection: expects masked frames, sends unmasked ones.
    Server,
    /// Opened the connection: masks what it sends, rejects masked frames.
    Client,
}

/// Limits, each with a defined outcome (close code 1009 when exceeded).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Largest payload of a single frame, in bytes.
    pub max_frame_size: usize,
    /// Largest message (all fragments together), in bytes.
    pub max_message_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        // 16 MiB: the largest messages Autobahn 9.* sends.
        Config { max_frame_size: 16 << 20, max_message_size: 16 << 20 }
    }
}

/// A data message's type, from the opcode of its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text (validated on receipt).
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of a message's first frame.
    pub(super) fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }

    /// The kind a message's first frame opens (None: not a data opcode).
    fn of(opcode: OpCode) -> Option<MessageKind> {
        match opcode {
            OpCode::Text => Some(MessageKind::Text),
            OpCode::Binary => Some(MessageKind::Binary),
            _ => None,
        }
    }
}

/// What the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete message; text is valid UTF-8.
    Message {
        /// Text or binary.
        kind: MessageKind,
        /// The whole payload (inflated, if it was compressed).
        data: Bytes,
    },
    /// A ping; the pong is already queued.
    Ping(Bytes),
    /// A pong (an answer to our ping, or unsolicited); nothing to do but note the peer
    /// is alive.
    Pong(Bytes),
    /// The peer's close frame (`None`: it carried no status code). If we had not sent a
    /// close yet, the reply is already queued. No event follows.
    Close(Option<CloseFrame>),
}

/// What [`Connection::decode_in_place`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An event, as [`Connection::decode`] returns it.
    Event(Event),
    /// A message that arrived whole in one uncompressed frame (the common case): its `len`
    /// payload bytes are at the front of the input, unmasked and checked (text is valid
    /// UTF-8). The caller takes them (`split_to`) or skips them (`advance`) before it
    /// decodes again.
    InPlace {
        /// Text or binary.
        kind: MessageKind,
        /// The payload's length.
        len: usize,
    },
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close and wait for the peer's; its data messages are discarded.
    CloseSent,
    /// Both closes exchanged: the caller should flush and close TCP.
    Closed,
    /// We failed the connection (a close with an error code is queued); input is ignored.
    Failed,
}

/// A frame whose header has been parsed and whose payload is (partly) in the read buffer.
#[derive(Debug, Clone, Copy)]
struct FrameInProgress {
    header: FrameHeader,
    len: usize,
    /// Payload bytes at the front of the read buffer already unmasked (and validated).
    processed: usize,
}

/// A data message whose first frame has been seen.
#[derive(Debug)]
struct MessageInProgress {
    kind: MessageKind,
    /// RSV1 was set on the first frame: the payload is deflated (RFC 7692 §6.1).
    compressed: bool,
    /// Payload of the frames completed so far (inflated, if compressed). Empty until a
    /// non-final frame completes, so single-frame messages are never copied.
    fragments: Vec<u8>,
}

/// permessage-deflate state, from this endpoint's point of view (boxed: most of a
/// connection's life it is not needed, and connections without it pay one pointer).
#[derive(Debug)]
struct DeflateState {
    /// Our sending direction: window and whether we reset after each message.
    send_window_bits: u8,
    send_no_context_takeover: bool,
    /// The peer's sending direction.
    receive_window_bits: u8,
    receive_no_context_takeover: bool,
    /// Messages shorter than this are sent uncompressed.
    threshold: usize,
    level: u32,
    /// Our own compressor: only for context takeover (or when no pool is given).
    compressor: Option<Compressor>,
    /// Exists while a compressed message arrives; kept between messages only if the peer
    /// uses context takeover.
    decompressor: Option<Decompressor>,
}

/// One end of a WebSocket connection.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    frame: Option<FrameInProgress>,
    message: Option<MessageInProgress>,
    utf8: Utf8Validator,
    transmit: VecDeque<Transmit>,
    deflate: Option<Box<DeflateState>>,
    /// A client's masking keys (§10.3: unpredictable, see `mask_keys.rs`); None on a server.
    mask_keys: Option<MaskKeys>,
}

impl Connection {
    /// A server connection just after the opening handshake, without extensions.
    pub fn server(config: Config) -> Self {
        Connection::new(Role::Server, config, None)
    }

    /// A client connection just after the opening handshake, without extensions, masking
    /// its frames with keys from `mask_keys`.
    pub fn client(config: Config, mask_keys: MaskKeys) -> Self {
        Connection::new(Role::Client, config, Some(mask_keys))
    }

    fn new(role: Role, config: Config, mask_keys: Option<MaskKeys>) -> Self {
        Connection {
            role,
            config,
            state: State::Open,
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            transmit: VecDeque::new(),
            deflate: None,
            mask_keys,
        }
    }

    /// Enables permessage-deflate with the negotiated parameters. Messages of at least
    /// `threshold` bytes are sent compressed at zlib `level`.
    pub fn with_deflate(mut self, params: DeflateParams, threshold: usize, level: u32) -> Self {
        let (send, receive) = match self.role {
            Role::Server => (
                (params.server_max_window_bits, params.server_no_context_takeover),
                (params.client_max_window_bits, params.client_no_context_takeover),
            ),
            Role::Client => (
                (params.client_max_window_bits, params.client_no_context_takeover),
                (params.server_max_window_bits, params.server_no_context_takeover),
            ),
        };
        self.deflate = Some(Box::new(DeflateState {
            send_window_bits: send.0,
            send_no_context_takeover: send.1,
            receive_window_bits: receive.0,
            receive_no_context_takeover: receive.1,
            threshold,
            level,
            compressor: None,
            decompressor: None,
        }));
        self
    }

    /// Sends one message of a broadcast. Receivers that can share an encoding get the frame
    /// cached in `frames` (returned: the caller writes or queues it): the plain frame,
    /// or the frame compressed once per window by the shared `pool` (no context takeover in
    /// our direction makes the output depend on the payload alone). A receiver with context
    /// takeover is compressed by its own compressor into its transmit queue (`None`).
    pub fn broadcast_frame<'f>(
        &mut self,
        frames: &'f mut BroadcastFrames,
        pool: &mut CompressorPool,
    ) -> Option<&'f Bytes> {
        if self.state != State::Open {
            return None;
        }
        let len = frames.payload().len();
        match self.deflate.as_deref() {
            Some(d) if len >= d.threshold && d.send_no_context_takeover => {
                Some(frames.compressed(d.send_window_bits, pool))
            }
            Some(d) if len >= d.threshold => {
                self.send_message(frames.kind(), frames.payload().clone());
                None
            }
            _ => Some(frames.plain()),
        }
    }

    /// Whether this connection holds zlib state right now (for memory accounting).
    pub fn has_zlib_state(&self) -> bool {
        self.deflate.as_deref().is_some_and(|d| d.compressor.is_some() || d.decompressor.is_some())
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the close handshake stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether messages may still be sent (no close sent or received).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the connection is over: no further events, only queued frames to flush.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Closed | State::Failed)
    }

    /// Bytes held for a message being reassembled (for memory accounting).
    pub fn buffered_message_bytes(&self) -> usize {
        self.message.as_ref().map_or(0, |m| m.fragments.len())
    }

    /// Takes bytes from the front of `input` and returns the next event, `Ok(None)` when
    /// more input is needed, or the protocol error that failed the connection (a close
    /// frame with its code is then queued and every later call returns `Ok(None)`).
    ///
    /// Bytes of a frame still arriving stay in `input` (unmasked in place), so the caller
    /// must keep the buffer and append to it.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        Ok(match self.decode_frames(input, false)? {
            Some(Decoded::Event(event)) => Some(event),
            // Not asked for: every message comes as an event.
            Some(Decoded::InPlace { kind, len }) => Some(Event::Message { kind, data: input.split_to(len).freeze() }),
            None => None,
        })
    }

    /// As [`Connection::decode`], but a message in one uncompressed frame stays where it
    /// arrived, at the front of `input` ([`Decoded::InPlace`]): a caller that only reads
    /// it, or copies it, never makes it a `Bytes` (whose reference count costs two atomic
    /// operations per message).
    pub fn decode_in_place(&mut self, input: &mut BytesMut) -> Result<Option<Decoded>, ProtocolError> {
        self.decode_frames(input, true)
    }

    fn decode_frames(&mut self, input: &mut BytesMut, in_place: bool) -> Result<Option<Decoded>, ProtocolError> {
        loop {
            if self.is_terminated() {
                input.clear();
                return Ok(None);
            }
            // Held in `self.frame` only while its payload is still arriving.
            let mut frame = match self.frame.take() {
                Some(frame) => frame,
                None => {
                    let (header, header_len) = match FrameHeader::parse(input) {
                        Ok(Some(parsed)) => parsed,
                        Ok(None) => return Ok(None),
                        Err(e) => return Err(self.fail(ProtocolError::Frame(e))),
                    };
                    let len = match self.check_header(&header) {
                        Ok(len) => len,
                        Err(e) => return Err(self.fail(e)),
                    };
                    input.advance(header_len);
                    FrameInProgress { header, len, processed: 0 }
                }
            };
            let available = input.len().min(frame.len);
            if let Some(fresh) = input.get_mut(frame.processed..available).filter(|f| !f.is_empty()) {
                if let Err(e) = self.process_payload(frame, fresh) {
                    return Err(self.fail(e));
                }
                frame.processed = available;
            }
            if available < frame.len {
                self.frame = Some(frame);
                return Ok(None);
            }
            // A message in one uncompressed frame (`check_header` kept no state).
            let whole = MessageKind::of(frame.header.opcode).filter(|_| in_place && self.message.is_none());
            if let Some(kind) = whole {
                if let Err(e) = self.check_message_end(kind) {
                    return Err(self.fail(e));
                }
                if self.state == State::Open {
                    return Ok(Some(Decoded::InPlace { kind, len: frame.len }));
                }
                input.advance(frame.len); // §7.1.4: data after our close is discarded
                continue;
            }
            let payload = input.split_to(frame.len).freeze();
            match self.complete_frame(frame.header, payload) {
                Ok(Some(event)) => return Ok(Some(Decoded::Event(event))),
                Ok(None) => continue,
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Validates a header against the role, the limits and the fragmentation state, and
    /// opens a message when a data frame starts one. Returns the payload length.
    fn check_header(&mut self, header: &FrameHeader) -> Result<usize, ProtocolError> {
        // RFC 7692 §6.1: RSV1 marks a compressed message, on its first frame only; RSV2
        // and RSV3 belong to no extension we speak.
        let rsv1 = header.rsv & 0b100 != 0;
        let rsv1_allowed = self.deflate.is_some() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if header.rsv & 0b011 != 0 || (rsv1 && !rsv1_allowed) {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            if !header.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlTooLong);
            }
            return Ok(header.payload_len as usize);
        }
        if header.payload_len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooBig { max: self.config.max_frame_size });
        }
        // Fits in usize: max_frame_size is a usize.
        let len = header.payload_len as usize;
        match (header.opcode, &self.message) {
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(message)) => {
                // A compressed message is checked as it inflates (its frames are compressed
                // sizes, `fragments` an inflated one).
                if !message.compressed && message.fragments.len().saturating_add(len) > self.config.max_message_size {
                    return Err(ProtocolError::MessageTooBig { max: self.config.max_message_size });
                }
                Ok(len)
            }
            (_, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            (opcode, None) => {
                if len > self.config.max_message_size {
                    return Err(ProtocolError::MessageTooBig { max: self.config.max_message_size });
                }
                // A message in one uncompressed frame (the common case) needs no state.
                if let Some(kind) = MessageKind::of(opcode).filter(|_| !header.fin || rsv1) {
                    self.message = Some(MessageInProgress { kind, compressed: rsv1, fragments: Vec::new() });
                }
                Ok(len)
            }
        }
    }

    /// Unmasks newly arrived payload bytes in place and validates text as it streams in.
    fn process_payload(&mut self, frame: FrameInProgress, bytes: &mut [u8]) -> Result<(), ProtocolError> {
        if let Some(key) = frame.header.mask {
            apply_mask(bytes, key, frame.processed);
        }
        // Compressed text is validated after inflating, in `complete_frame`.
        let is_text = match (frame.header.opcode, &self.message) {
            (opcode, _) if opcode.is_control() => false,
            (_, Some(m)) => m.kind == MessageKind::Text && !m.compressed,
            // No message state: a text message in one uncompressed frame.
            (opcode, None) => opcode == OpCode::Text,
        };
        if is_text && self.state == State::Open {
            self.utf8.feed(bytes).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    /// Acts on a frame whose whole payload has arrived.
    fn complete_frame(&mut self, header: FrameHeader, payload: Bytes) -> Result<Option<Event>, ProtocolError> {
        match header.opcode {
            OpCode::Ping => {
                if self.state == State::Open {
                    self.queue_frame(OpCode::Pong, payload.clone());
                }
                Ok(Some(Event::Ping(payload)))
            }
            OpCode::Pong => Ok(Some(Event::Pong(payload))),
            OpCode::Close => {
                let frame = CloseFrame::decode(&payload).map_err(|e| match e {
                    ClosePayloadError::InvalidCode => ProtocolError::InvalidCloseCode,
                    ClosePayloadError::InvalidReason => ProtocolError::InvalidCloseReason,
                })?;
                if self.state == State::Open {
                    // §5.5.1: reply with a close, echoing the status code.
                    let reply = match &frame {
                        Some(f) => CloseFrame::encode_payload(f.code, ""),
                        None => Bytes::new(),
                    };
                    self.queue_frame(OpCode::Close, reply);
                }
                self.state = State::Closed;
                self.message = None;
                Ok(Some(Event::Close(frame)))
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let Some(message) = self.message.as_mut() else {
                    // A message in one uncompressed frame (`check_header` kept no state).
                    let kind = MessageKind::of(header.opcode).ok_or(ProtocolError::UnexpectedContinuation)?;
                    return self.complete_message(kind, payload);
                };
                if message.compressed {
                    return self.inflate_frame(header.fin, &payload);
                }
                if !header.fin {
                    message.fragments.extend_from_slice(&payload);
                    return Ok(None);
                }
                let kind = message.kind;
                let data = if message.fragments.is_empty() {
                    payload // the earlier fragments were empty: no copy
                } else {
                    let mut fragments = std::mem::take(&mut message.fragments);
                    fragments.extend_from_slice(&payload);
                    Bytes::from(fragments)
                };
                self.message = None;
                self.complete_message(kind, data)
            }
        }
    }

    /// The last frame of a message arrived: checks the text is complete UTF-8 and emits it.
    fn complete_message(&mut self, kind: MessageKind, data: Bytes) -> Result<Option<Event>, ProtocolError> {
        self.check_message_end(kind)?;
        if self.state != State::Open {
            return Ok(None); // §7.1.4: data after our close is discarded
        }
        Ok(Some(Event::Message { kind, data }))
    }

    /// A message's last byte arrived: its text must be complete UTF-8.
    fn check_message_end(&mut self, kind: MessageKind) -> Result<(), ProtocolError> {
        if kind == MessageKind::Text && self.state == State::Open {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    /// Inflates one frame of a compressed message; on the last one, emits the message.
    fn inflate_frame(&mut self, fin: bool, payload: &[u8]) -> Result<Option<Event>, ProtocolError> {
        let (Some(message), Some(deflate)) = (self.message.as_mut(), self.deflate.as_deref_mut()) else {
            return Err(ProtocolError::ReservedBits);
        };
        let limit = self.config.max_message_size;
        let window = deflate.receive_window_bits;
        let inflater = deflate.decompressor.get_or_insert_with(|| Decompressor::new(window));
        let start = message.fragments.len();
        let result = inflater.inflate(payload, &mut message.fragments, limit).and_then(|()| {
            if fin {
                inflater.finish(&mut message.fragments, limit)
            } else {
                Ok(())
            }
        });
        result.map_err(|e| match e {
            InflateError::TooBig => ProtocolError::MessageTooBig { max: self.config.max_message_size },
            InflateError::Corrupt => ProtocolError::InvalidCompressedData,
        })?;
        let is_text = message.kind == MessageKind::Text;
        if is_text && self.state == State::Open {
            let fresh = message.fragments.get(start..).unwrap_or_default();
            self.utf8.feed(fresh).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if !fin {
            return Ok(None);
        }
        if deflate.receive_no_context_takeover {
            deflate.decompressor = None; // no idle inflate state (RFC 7692 §7.1.1.2)
        }
        let kind = message.kind;
        let data = Bytes::from(std::mem::take(&mut message.fragments));
        self.message = None;
        self.complete_message(kind, data)
    }

    /// Fails the connection: queues a close with the error's code and a reason saying what
    /// was wrong (unless a close was already sent), and ignores all further input.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state == State::Open {
            let payload = CloseFrame::encode_payload(error.close_code(), &error.to_string());
            self.queue_frame(OpCode::Close, payload);
        }
        self.state = State::Failed;
        self.frame = None;
        self.message = None;
        error
    }

    /// Queues a message, compressed with this connection's own compressor if deflate was
    /// negotiated. Ignored once a close was sent or received (RFC 6455 §5.5.1).
    pub fn send_message(&mut self, kind: MessageKind, payload: Bytes) {
        self.send_message_pooled(kind, payload, None);
    }

    /// Queues a message; where our direction has no context takeover, compresses it with
    /// the worker's shared `pool` instead of a per-connection compressor.
    pub fn send_message_pooled(&mut self, kind: MessageKind, payload: Bytes, pool: Option<&mut CompressorPool>) {
        if self.state != State::Open {
            return;
        }
        match self.compress(&payload, pool) {
            Some(compressed) => self.queue_frame_rsv(kind.opcode(), 0b100, Bytes::from(compressed)),
            None => self.queue_frame(kind.opcode(), payload),
        }
    }

    fn compress(&mut self, payload: &[u8], pool: Option<&mut CompressorPool>) -> Option<Vec<u8>> {
        let d = self.deflate.as_deref_mut()?;
        if payload.len() < d.threshold {
            return None;
        }
        let compressed = match pool {
            Some(pool) if d.send_no_context_takeover => pool.compress(d.send_window_bits, payload),
            _ => {
                let (level, bits, reset) = (d.level, d.send_window_bits, d.send_no_context_takeover);
                d.compressor.get_or_insert_with(|| Compressor::new(level, bits, reset)).compress(payload)
            }
        };
        // Incompressible data goes out as it is, when no peer state depends on having seen
        // it compressed (with context takeover, the receiver's window must track ours).
        compressed.filter(|z| !d.send_no_context_takeover || z.len() < payload.len())
    }

    /// Queues a ping (payload cut to 125 bytes).
    pub fn send_ping(&mut self, mut payload: Bytes) {
        if self.state == State::Open {
            payload.truncate(MAX_CONTROL_PAYLOAD);
            self.queue_frame(OpCode::Ping, payload);
        }
    }

    /// Starts the close handshake. Codes that may not be sent on the wire (1005, 1006,
    /// 1015, ...) become 1000.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state != State::Open {
            return;
        }
        let code = if code.is_valid_on_wire() { code } else { CloseCode::NORMAL };
        self.queue_frame(OpCode::Close, CloseFrame::encode_payload(code, reason));
        self.state = State::CloseSent;
    }

    /// The header [`Connection::send_message`] would put before a `len`-byte message of
    /// `kind` sent as it is (one frame, uncompressed, unmasked), for a caller that writes the
    /// frame itself (the server's cork) and counts it as sent. `None` when the message would
    /// not go out that way (compressed, a client's masked frame) or not at all (closing).
    pub fn plain_frame_header(&self, kind: MessageKind, len: usize) -> Option<EncodedHeader> {
        let compressed = self.deflate.as_deref().is_some_and(|d| len >= d.threshold);
        if self.state != State::Open || self.role != Role::Server || compressed || !self.transmit.is_empty() {
            return None;
        }
        let header = FrameHeader { fin: true, rsv: 0, opcode: kind.opcode(), mask: None, payload_len: len as u64 };
        Some(EncodedHeader::new(&header))
    }

    /// Whether outgoing chunks wait to be taken with [`Connection::poll_transmit`].
    pub fn has_output(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The next queued outgoing chunk (a frame header or payload), in wire order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    /// Queues one frame: the header inline and the payload as its own `Bytes`, so the
    /// server side neither copies the payload nor allocates for the header (vectored
    /// writes send both). Clients mask into a copy.
    fn queue_frame(&mut self, opcode: OpCode, payload: Bytes) {
        self.queue_frame_rsv(opcode, 0, payload)
    }

    fn queue_frame_rsv(&mut self, opcode: OpCode, rsv: u8, payload: Bytes) {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => Some(self.next_mask_key()),
        };
        let header = FrameHeader { fin: true, rsv, opcode, mask, payload_len: payload.len() as u64 };
        match mask {
            None => {
                self.transmit.push_back(Transmit::Header(EncodedHeader::new(&header)));
                if !payload.is_empty() {
                    self.transmit.push_back(Transmit::Bytes(payload));
                }
            }
            Some(key) => {
                let mut buf = [0u8; MAX_HEADER_LEN];
                let n = header.encode(&mut buf);
                let mut frame = BytesMut::with_capacity(n + payload.len());
                frame.extend_from_slice(&buf[..n]);
                frame.extend_from_slice(&payload);
                apply_mask(&mut frame[n..], key, 0);
                self.transmit.push_back(Transmit::Bytes(frame.freeze()));
            }
        }
    }

    fn next_mask_key(&mut self) -> [u8; 4] {
        // Only clients mask, and a client is made with its keys.
        self.mask_keys.as_mut().map_or([0; 4], MaskKeys::next_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::deflate::{Compressor, CompressorPool, DeflateParams};
    use crate::proto::frame::FrameError;
    use proptest::prelude::*;

    /// A single frame as a peer in the opposite role would put it on the wire.
    fn frame(fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let header = FrameHeader { fin, rsv: 0, opcode, mask, payload_len: payload.len() as u64 };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut out = head[..n].to_vec();
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
    }

    const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    /// Feeds `wire` in chunks of the given sizes (cycled), collecting events until the
    /// input is used up or the connection fails.
    fn feed_chunked(conn: &mut Connection, wire: &[u8], chunks: &[usize]) -> (Vec<Event>, Option<ProtocolError>) {
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

    fn feed(conn: &mut Connection, wire: &[u8]) -> (Vec<Event>, Option<ProtocolError>) {
        feed_chunked(conn, wire, &[wire.len().max(1)])
    }

    fn server() -> Connection {
        Connection::server(Config::default())
    }

    fn transmitted(conn: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(bytes) = conn.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        out
    }

    fn text(s: &str) -> Event {
        Event::Message { kind: MessageKind::Text, data: Bytes::copy_from_slice(s.as_bytes()) }
    }

    #[test]
    fn rfc6455_5_7_masked_hello_to_server() {
        let wire = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(feed(&mut server(), &wire), (vec![text("Hello")], None));
    }

    #[test]
    fn rfc6455_5_7_unmasked_fragments_to_client() {
        let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let mut client = Connection::client(Config::default(), MaskKeys::from_seed(1));
        assert_eq!(feed(&mut client, &wire), (vec![text("Hello")], None));
    }

    /// §10.3: the keys on the wire come from the OS-seeded generator: two client connections
    /// made at the same moment share none, and none repeats in a large sample.
    #[test]
    fn client_frames_carry_keys_no_other_connection_repeats() {
        let mut keys = Vec::new();
        for _ in 0..2 {
            let mut client = Connection::client(Config::default(), MaskKeys::from_os().unwrap());
            for _ in 0..2_000 {
                client.send_message(MessageKind::Binary, Bytes::from_static(b"x"));
            }
            let wire = transmitted(&mut client);
            let mut rest = &wire[..];
            while let Ok(Some((header, n))) = FrameHeader::parse(rest) {
                keys.push(header.mask.expect("a client masks every frame"));
                rest = &rest[n + header.payload_len as usize..];
            }
        }
        assert_eq!(keys.len(), 4_000);
        let distinct: std::collections::HashSet<[u8; 4]> = keys.iter().copied().collect();
        // 4,000 draws of 32 bits repeat a key with probability 0.2 %; two repeats, 1 in 10^6.
        assert!(distinct.len() >= keys.len() - 1, "{} distinct keys of {}", distinct.len(), keys.len());
    }

    #[test]
    fn rfc6455_5_7_ping_gets_pong_with_same_payload() {
        let mut client = Connection::client(Config::default(), MaskKeys::from_seed(1));
        let (events, _) = feed(&mut client, &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(events, vec![Event::Ping(Bytes::from_static(b"Hello"))]);
        // The client's pong is masked: unmask and compare with the RFC's unmasked pong.
        let pong = transmitted(&mut client);
        let (h, n) = FrameHeader::parse(&pong).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len), (OpCode::Pong, 5));
        let mut payload = pong[n..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn control_frames_between_fragments_are_handled() {
        let mut wire = frame(false, OpCode::Text, b"Hel", KEY);
        wire.extend(frame(true, OpCode::Ping, b"p", KEY));
        wire.extend(frame(true, OpCode::Continuation, b"lo", KEY));
        let mut conn = server();
        let (events, err) = feed(&mut conn, &wire);
        assert_eq!(err, None);
        assert_eq!(events, vec![Event::Ping(Bytes::from_static(b"p")), text("Hello")]);
        assert_eq!(transmitted(&mut conn), [0x8A, 0x01, b'p']);
    }

    #[test]
    fn close_handshake_peer_initiated() {
        let mut conn = server();
        let (events, _) = feed(&mut conn, &frame(true, OpCode::Close, b"\x0b\xb8bye", KEY));
        let expected = CloseFrame { code: CloseCode(3000), reason: Bytes::from_static(b"bye") };
        assert_eq!(events, vec![Event::Close(Some(expected))]);
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(transmitted(&mut conn), [0x88, 0x02, 0x0b, 0xb8]); // code echoed
                                                                      // Nothing after the close is looked at.
        assert_eq!(feed(&mut conn, &frame(true, OpCode::Text, b"late", KEY)), (vec![], None));
    }

    #[test]
    fn close_handshake_locally_initiated() {
        let mut conn = server();
        conn.close(CloseCode::GOING_AWAY, "restart");
        assert_eq!(conn.state(), State::CloseSent);
        assert_eq!(&transmitted(&mut conn)[..4], [0x88, 0x09, 0x03, 0xe9]);
        // Data still in flight from the peer is discarded; its close completes the handshake.
        let mut wire = frame(true, OpCode::Text, b"in flight", KEY);
        wire.extend(frame(true, OpCode::Close, b"\x03\xe9", KEY));
        let (events, err) = feed(&mut conn, &wire);
        assert_eq!(err, None);
        assert!(matches!(events.as_slice(), [Event::Close(Some(f))] if f.code == CloseCode::GOING_AWAY));
        assert_eq!(conn.state(), State::Closed);
        assert!(transmitted(&mut conn).is_empty(), "no second close");
    }

    #[test]
    fn empty_close_is_answered_with_empty_close() {
        let mut conn = server();
        assert_eq!(feed(&mut conn, &frame(true, OpCode::Close, b"", KEY)).0, vec![Event::Close(None)]);
        assert_eq!(transmitted(&mut conn), [0x88, 0x00]);
    }

    /// Each violation fails the connection with its close code, which is queued.
    #[test]
    fn violations_fail_with_their_close_code() {
        let mut reserved_bits = frame(true, OpCode::Text, b"x", KEY);
        reserved_bits[0] |= 0x40;
        let mut fragmented_utf8 = frame(false, OpCode::Text, &[b'a', 0xF0, 0x9F], KEY);
        fragmented_utf8.extend(frame(true, OpCode::Continuation, &[0x28, b'b'], KEY));
        let cases: Vec<(&str, Vec<u8>, ProtocolError, u16)> = vec![
            ("unmasked", frame(true, OpCode::Text, b"x", None), ProtocolError::UnmaskedFrame, 1002),
            (
                "reserved opcode",
                vec![0x83, 0x80, 0, 0, 0, 0],
                ProtocolError::Frame(FrameError::ReservedOpcode(3)),
                1002,
            ),
            ("rsv bits", reserved_bits, ProtocolError::ReservedBits, 1002),
            ("long ping", frame(true, OpCode::Ping, &[0; 126], KEY), ProtocolError::ControlTooLong, 1002),
            ("fragmented ping", frame(false, OpCode::Ping, b"x", KEY), ProtocolError::FragmentedControl, 1002),
            (
                "bare continuation",
                frame(true, OpCode::Continuation, b"x", KEY),
                ProtocolError::UnexpectedContinuation,
                1002,
            ),
            ("close 1005", frame(true, OpCode::Close, &[0x03, 0xED], KEY), ProtocolError::InvalidCloseCode, 1002),
            ("close 1 byte", frame(true, OpCode::Close, &[0x03], KEY), ProtocolError::InvalidCloseCode, 1002),
            (
                "close reason",
                frame(true, OpCode::Close, &[0x03, 0xE8, 0xC0], KEY),
                ProtocolError::InvalidCloseReason,
                1007,
            ),
            ("bad utf-8", frame(true, OpCode::Text, &[0xCE, 0xBA, 0xFF], KEY), ProtocolError::InvalidUtf8, 1007),
            ("split bad utf-8", fragmented_utf8, ProtocolError::InvalidUtf8, 1007),
            (
                "2^62 bytes",
                vec![0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                ProtocolError::FrameTooBig { max: 16 << 20 },
                1009,
            ),
            (
                "top bit",
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                ProtocolError::Frame(FrameError::LengthTooLarge),
                1002,
            ),
        ];
        for (name, wire, error, code) in cases {
            let mut conn = server();
            let (_, err) = feed(&mut conn, &wire);
            assert_eq!(err, Some(error), "{name}");
            assert_eq!(error.close_code().0, code, "{name}");
            assert_eq!(conn.state(), State::Failed, "{name}");
            // A close with the code and a reason that says what was wrong.
            let out = transmitted(&mut conn);
            let reason = error.to_string();
            assert_eq!(&out[..4], [0x88, 2 + reason.len() as u8, (code >> 8) as u8, code as u8], "{name}");
            assert_eq!(&out[4..], reason.as_bytes(), "{name}");
            // A failed connection ignores the rest of the stream.
            assert_eq!(feed(&mut conn, &frame(true, OpCode::Text, b"more", KEY)), (vec![], None), "{name}");
        }
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_an_error() {
        let mut wire = frame(false, OpCode::Text, b"a", KEY);
        wire.extend(frame(true, OpCode::Text, b"b", KEY));
        assert_eq!(feed(&mut server(), &wire).1, Some(ProtocolError::ExpectedContinuation));
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_is_complete() {
        // Autobahn 6.4.*: the frame header promises 1000 bytes; the bad byte comes early.
        let mut payload = b"valid start ".to_vec();
        payload.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80]);
        payload.resize(1000, b'x');
        let wire = frame(true, OpCode::Text, &payload, KEY);
        let mut conn = server();
        let mut buf = BytesMut::from(&wire[..40]);
        assert_eq!(conn.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn a_message_in_one_frame_is_left_in_place_and_the_rest_comes_as_events() {
        let mut wire = frame(true, OpCode::Text, b"whole", KEY);
        wire.extend(frame(false, OpCode::Binary, b"frag", KEY));
        wire.extend(frame(true, OpCode::Ping, b"p", KEY));
        wire.extend(frame(true, OpCode::Continuation, b"ment", KEY));
        wire.extend(frame(true, OpCode::Binary, b"", KEY));
        let mut conn = server();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(conn.decode_in_place(&mut buf), Ok(Some(Decoded::InPlace { kind: MessageKind::Text, len: 5 })));
        assert_eq!(&buf[..5], b"whole", "unmasked, at the front");
        buf.advance(5);
        assert_eq!(conn.decode_in_place(&mut buf), Ok(Some(Decoded::Event(Event::Ping(Bytes::from_static(b"p"))))));
        let fragmented = Event::Message { kind: MessageKind::Binary, data: Bytes::from_static(b"fragment") };
        assert_eq!(conn.decode_in_place(&mut buf), Ok(Some(Decoded::Event(fragmented))));
        assert_eq!(conn.decode_in_place(&mut buf), Ok(Some(Decoded::InPlace { kind: MessageKind::Binary, len: 0 })));
        assert_eq!(conn.decode_in_place(&mut buf), Ok(None));
        assert!(buf.is_empty());
        // Text in one frame is checked before it is offered.
        let mut conn = server();
        let mut buf = BytesMut::from(&frame(true, OpCode::Text, &[0xff], KEY)[..]);
        assert_eq!(conn.decode_in_place(&mut buf), Err(ProtocolError::InvalidUtf8));
        // After our close, data is discarded, in place too.
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "");
        let mut buf = BytesMut::from(&frame(true, OpCode::Text, b"late", KEY)[..]);
        assert_eq!(conn.decode_in_place(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn message_limit_counts_all_fragments() {
        let mut conn = Connection::server(Config { max_frame_size: 1000, max_message_size: 1024 });
        let mut wire = frame(false, OpCode::Binary, &[0; 600], KEY);
        wire.extend(frame(true, OpCode::Continuation, &[0; 600], KEY));
        assert_eq!(feed(&mut conn, &wire).1, Some(ProtocolError::MessageTooBig { max: 1024 }));
        let mut conn = Connection::server(Config { max_frame_size: 1000, max_message_size: 1024 });
        assert_eq!(
            feed(&mut conn, &frame(true, OpCode::Binary, &[0; 1001], KEY)).1,
            Some(ProtocolError::FrameTooBig { max: 1000 })
        );
    }

    #[test]
    fn client_rejects_masked_frames() {
        let mut client = Connection::client(Config::default(), MaskKeys::from_seed(7));
        assert_eq!(feed(&mut client, &frame(true, OpCode::Text, b"x", KEY)).1, Some(ProtocolError::MaskedFrame));
    }

    #[test]
    fn sends_are_ignored_after_close() {
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "");
        transmitted(&mut conn);
        conn.send_message(MessageKind::Text, Bytes::from_static(b"x"));
        conn.send_ping(Bytes::new());
        assert!(transmitted(&mut conn).is_empty());
    }

    #[test]
    fn single_frame_messages_are_not_copied() {
        let wire = frame(true, OpCode::Binary, &[9; 100], KEY);
        let mut buf = BytesMut::from(&wire[..]);
        let base = buf.as_ptr() as usize;
        let Ok(Some(Event::Message { data, .. })) = server().decode(&mut buf) else { panic!() };
        // The payload is the read buffer itself, just past the 6-byte header.
        assert_eq!(data.as_ptr() as usize, base + 6);
    }

    // ---- permessage-deflate ----

    fn params(server_nct: bool, client_nct: bool, server_bits: u8, client_bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        }
    }

    /// A compressed message as a client would send it, cut into `pieces` frames: RSV1 on
    /// the first frame only (RFC 7692 §6.1).
    fn compressed_frames(kind: MessageKind, compressed: &[u8], pieces: usize) -> Vec<u8> {
        let chunk = compressed.len().div_ceil(pieces.max(1)).max(1);
        let chunks: Vec<&[u8]> = if compressed.is_empty() { vec![&[][..]] } else { compressed.chunks(chunk).collect() };
        let mut wire = Vec::new();
        for (i, piece) in chunks.iter().enumerate() {
            let opcode = if i == 0 { kind.opcode() } else { OpCode::Continuation };
            let mut f = frame(i + 1 == chunks.len(), opcode, piece, KEY);
            if i == 0 {
                f[0] |= 0x40;
            }
            wire.extend(f);
        }
        wire
    }

    fn deflate_server(p: DeflateParams) -> Connection {
        server().with_deflate(p, 0, 6)
    }

    #[test]
    fn rfc7692_7_2_3_1_hello_on_the_wire() {
        // "Hello" compressed, in one frame and split over two (RSV1 on the first only).
        let one = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let two = [0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00];
        for wire in [&one[..], &two[..]] {
            let mut client = Connection::client(Config::default(), MaskKeys::from_seed(5)).with_deflate(
                params(false, false, 15, 15),
                0,
                6,
            );
            assert_eq!(feed(&mut client, wire), (vec![text("Hello")], None));
        }
    }

    #[test]
    fn rsv1_is_only_valid_on_the_first_data_frame() {
        let p = params(true, true, 15, 15);
        let mut on_continuation = frame(false, OpCode::Text, b"a", KEY);
        let mut cont = frame(true, OpCode::Continuation, b"b", KEY);
        cont[0] |= 0x40;
        on_continuation.extend(cont);
        assert_eq!(feed(&mut deflate_server(p), &on_continuation).1, Some(ProtocolError::ReservedBits));
        let mut on_ping = frame(true, OpCode::Ping, b"", KEY);
        on_ping[0] |= 0x40;
        assert_eq!(feed(&mut deflate_server(p), &on_ping).1, Some(ProtocolError::ReservedBits));
        let mut rsv2 = frame(true, OpCode::Text, b"", KEY);
        rsv2[0] |= 0x20;
        assert_eq!(feed(&mut deflate_server(p), &rsv2).1, Some(ProtocolError::ReservedBits));
    }

    #[test]
    fn corrupt_compressed_data_fails_with_1007() {
        let mut conn = deflate_server(params(true, true, 15, 15));
        let (_, err) = feed(&mut conn, &compressed_frames(MessageKind::Binary, &[0xff; 20], 1));
        assert_eq!(err, Some(ProtocolError::InvalidCompressedData));
        assert_eq!(err.map(|e| e.close_code()), Some(CloseCode::INVALID_PAYLOAD));
    }

    #[test]
    fn compressed_invalid_utf8_fails_with_1007() {
        let z = Compressor::new(6, 15, true).compress(&[b'a', 0xC0, 0xAF, b'b']).unwrap();
        let mut conn = deflate_server(params(true, true, 15, 15));
        assert_eq!(feed(&mut conn, &compressed_frames(MessageKind::Text, &z, 1)).1, Some(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn a_gigabyte_bomb_ends_in_1009_with_bounded_memory() {
        // 1 GiB of zeros as one compressed message, built cheaply: with context takeover,
        // every further 8 MiB of zeros compresses to the same bytes.
        let mut c = Compressor::new(9, 15, false);
        let zeros = vec![0u8; 8 << 20];
        let mut bomb = c.compress(&zeros).unwrap();
        let repeat = c.compress(&zeros).unwrap();
        assert_eq!(c.compress(&zeros).unwrap(), repeat);
        for _ in 1..128 {
            // Each piece ended in a sync flush whose 00 00 FF FF tail was stripped.
            bomb.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF]);
            bomb.extend_from_slice(&repeat);
        }
        assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
        let mut conn = deflate_server(params(true, true, 15, 15)); // default 16 MiB limit
        let mut buf = BytesMut::from(&compressed_frames(MessageKind::Binary, &bomb, 1)[..]);
        assert_eq!(conn.decode(&mut buf), Err(ProtocolError::MessageTooBig { max: 16 << 20 }));
        let reason = format!("message over {} bytes", 16 << 20);
        let out = transmitted(&mut conn);
        assert_eq!(&out[..4], [0x88, 2 + reason.len() as u8, 0x03, 0xF1]); // close 1009
        assert_eq!(&out[4..], reason.as_bytes());
    }

    #[test]
    fn inflate_state_is_dropped_between_messages_without_client_context_takeover() {
        let z = Compressor::new(6, 15, true).compress(&[7u8; 1000]).unwrap();
        let mut shared = deflate_server(params(true, true, 15, 15));
        assert_eq!(feed(&mut shared, &compressed_frames(MessageKind::Binary, &z, 2)).0.len(), 1);
        assert!(!shared.has_zlib_state());
        let mut dedicated = deflate_server(params(false, false, 15, 15));
        assert_eq!(feed(&mut dedicated, &compressed_frames(MessageKind::Binary, &z, 2)).0.len(), 1);
        assert!(dedicated.has_zlib_state(), "context takeover keeps the window");
    }

    #[test]
    fn a_broadcast_is_encoded_once_per_variant_and_shared() {
        let mut pool = CompressorPool::new(6);
        let payload = Bytes::from("shared text ".repeat(20));
        let mut frames = BroadcastFrames::new(MessageKind::Text, payload.clone());
        let mut shared_a = server().with_deflate(params(true, true, 15, 15), 64, 6);
        let mut shared_b = server().with_deflate(params(true, true, 15, 15), 64, 6);
        let mut plain = server();
        let mut takeover = server().with_deflate(params(false, false, 15, 15), 64, 6);
        let a = shared_a.broadcast_frame(&mut frames, &mut pool).unwrap().clone();
        let b = shared_b.broadcast_frame(&mut frames, &mut pool).unwrap().clone();
        assert_eq!(a.as_ptr(), b.as_ptr(), "one compressed frame, shared");
        assert_eq!(a[0], 0xC1);
        let p = plain.broadcast_frame(&mut frames, &mut pool).unwrap().clone();
        assert_eq!(p[0], 0x81);
        assert_eq!(&p[p.len() - payload.len()..], &payload[..]);
        // Context takeover: compressed by its own compressor, into its transmit queue.
        assert_eq!(takeover.broadcast_frame(&mut frames, &mut pool), None);
        assert_eq!(transmitted(&mut takeover)[0], 0xC1);
        let mut client = Connection::client(Config::default(), MaskKeys::from_seed(3)).with_deflate(
            params(true, true, 15, 15),
            64,
            6,
        );
        assert_eq!(feed(&mut client, &a).0, vec![Event::Message { kind: MessageKind::Text, data: payload }]);
    }

    #[test]
    fn small_messages_are_sent_uncompressed() {
        let mut conn = server().with_deflate(params(true, true, 15, 15), 64, 6);
        conn.send_message(MessageKind::Text, Bytes::from_static(b"short"));
        assert_eq!(transmitted(&mut conn)[0], 0x81); // no RSV1
        conn.send_message(MessageKind::Text, Bytes::from("x".repeat(100)));
        assert_eq!(transmitted(&mut conn)[0], 0xC1); // RSV1
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every parameter combination, both directions, random frame splits of the
        /// compressed payload (received side) and random chunking of the byte stream.
        #[test]
        fn compressed_messages_roundtrip_for_any_parameters(
            server_nct in any::<bool>(),
            client_nct in any::<bool>(),
            server_bits in 8u8..=15,
            client_bits in 8u8..=15,
            threshold in prop_oneof![Just(0usize), 0usize..200],
            messages in proptest::collection::vec(
                prop_oneof![
                    "[a-d ]{0,400}".prop_map(|s| (MessageKind::Text, s.into_bytes())),
                    any::<String>().prop_map(|s| (MessageKind::Text, s.into_bytes())),
                    proptest::collection::vec(any::<u8>(), 0..600).prop_map(|b| (MessageKind::Binary, b)),
                ],
                1..6,
            ),
            chunks in proptest::collection::vec(1usize..300, 1..5),
            pieces in 1usize..4,
        ) {
            let p = params(server_nct, client_nct, server_bits, client_bits);
            let expected: Vec<Event> = messages
                .iter()
                .map(|(kind, payload)| Event::Message { kind: *kind, data: Bytes::copy_from_slice(payload) })
                .collect();
            let mut pool = CompressorPool::new(6);
            // Server -> client, through the shared pool where the parameters allow it.
            let mut srv = server().with_deflate(p, threshold, 6);
            let mut cli = Connection::client(Config::default(), MaskKeys::from_seed(11)).with_deflate(p, threshold, 6);
            for (kind, payload) in &messages {
                srv.send_message_pooled(*kind, Bytes::copy_from_slice(payload), Some(&mut pool));
            }
            let wire = transmitted(&mut srv);
            prop_assert_eq!(feed_chunked(&mut cli, &wire, &chunks), (expected.clone(), None));
            // Client -> server, each compressed message cut into `pieces` frames.
            let mut srv = server().with_deflate(p, threshold, 6);
            let mut compressor = Compressor::new(6, client_bits, client_nct);
            let mut wire = Vec::new();
            for (kind, payload) in &messages {
                let z = compressor.compress(payload).unwrap();
                wire.extend(compressed_frames(*kind, &z, pieces));
            }
            prop_assert_eq!(feed_chunked(&mut srv, &wire, &chunks), (expected, None));
        }
    }

    // ---- properties ----

    /// One message to send: its kind, payload, where to cut it into fragments, and whether
    /// to put a ping after its first fragment.
    #[derive(Debug, Clone)]
    struct Planned {
        kind: MessageKind,
        payload: Vec<u8>,
        cuts: Vec<usize>,
        ping_inside: bool,
    }

    fn planned() -> impl Strategy<Value = Planned> {
        (
            prop_oneof![
                any::<String>().prop_map(|s| (MessageKind::Text, s.into_bytes())),
                proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| (MessageKind::Binary, b)),
            ],
            proptest::collection::vec(0usize..300, 0..4),
            any::<bool>(),
        )
            .prop_map(|((kind, payload), mut cuts, ping_inside)| {
                cuts.iter_mut().for_each(|c| *c = (*c).min(payload.len()));
                cuts.sort_unstable();
                Planned { kind, payload, cuts, ping_inside }
            })
    }

    /// The wire bytes a peer in the other role would send for `messages`, and the events
    /// the receiver must report.
    fn encode_plan(messages: &[Planned], receiver: Role) -> (Vec<u8>, Vec<Event>) {
        let mask = |i: usize| match receiver {
            Role::Server => Some([i as u8, 0xA5, (i >> 8) as u8, 0x3C]),
            Role::Client => None,
        };
        let mut wire = Vec::new();
        let mut events = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let mut bounds = vec![0];
            bounds.extend(&m.cuts);
            bounds.push(m.payload.len());
            let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &m.payload[w[0]..w[1]]).collect();
            for (j, piece) in pieces.iter().enumerate() {
                let opcode = if j == 0 { m.kind.opcode() } else { OpCode::Continuation };
                wire.extend(frame(j + 1 == pieces.len(), opcode, piece, mask(i + j)));
                if j == 0 && m.ping_inside && pieces.len() > 1 {
                    wire.extend(frame(true, OpCode::Ping, b"ping", mask(i)));
                    events.push(Event::Ping(Bytes::from_static(b"ping")));
                }
            }
            events.push(Event::Message { kind: m.kind, data: Bytes::copy_from_slice(&m.payload) });
        }
        (wire, events)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_fragmentation_and_chunking_roundtrips(
            messages in proptest::collection::vec(planned(), 0..6),
            chunks in proptest::collection::vec(1usize..80, 1..8),
            server_side in any::<bool>(),
        ) {
            let role = if server_side { Role::Server } else { Role::Client };
            let (wire, expected) = encode_plan(&messages, role);
            let mut conn = match role {
                Role::Server => server(),
                Role::Client => Connection::client(Config::default(), MaskKeys::from_seed(3)),
            };
            prop_assert_eq!(feed_chunked(&mut conn, &wire, &chunks), (expected, None));
        }

        #[test]
        fn one_byte_at_a_time_gives_the_same_events_as_all_at_once(
            messages in proptest::collection::vec(planned(), 0..4),
            server_side in any::<bool>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            // Valid messages followed by arbitrary bytes (which may or may not be an error).
            let role = if server_side { Role::Server } else { Role::Client };
            let (mut wire, _) = encode_plan(&messages, role);
            wire.extend(garbage);
            let new_conn = || match role {
                Role::Server => server(),
                Role::Client => Connection::client(Config::default(), MaskKeys::from_seed(3)),
            };
            let mut whole = new_conn();
            let mut bytewise = new_conn();
            prop_assert_eq!(feed(&mut whole, &wire), feed_chunked(&mut bytewise, &wire, &[1]));
            prop_assert_eq!(transmitted(&mut whole), transmitted(&mut bytewise));
        }

        /// Whole frames and frames in pieces: the same events, errors and replies, for text
        /// that may not be UTF-8 and messages over the limit.
        #[test]
        fn whole_frames_decode_as_frames_in_pieces_do(
            frames in proptest::collection::vec(
                (any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200)),
                1..6,
            ),
            max_message in 0usize..220,
        ) {
            let mut wire = Vec::new();
            for (text, fin, payload) in &frames {
                let opcode = if *text { OpCode::Text } else { OpCode::Binary };
                wire.extend(frame(*fin, opcode, payload, Some([1, 2, 3, 4])));
            }
            let config = Config { max_message_size: max_message, ..Config::default() };
            let mut whole = Connection::server(config);
            let mut bytewise = Connection::server(config);
            prop_assert_eq!(feed(&mut whole, &wire), feed_chunked(&mut bytewise, &wire, &[1]));
            prop_assert_eq!(transmitted(&mut whole), transmitted(&mut bytewise));
        }

        #[test]
        fn sent_messages_decode_on_the_other_side(
            messages in proptest::collection::vec(
                prop_oneof![
                    any::<String>().prop_map(|s| (MessageKind::Text, s.into_bytes())),
                    proptest::collection::vec(any::<u8>(), 0..70_000).prop_map(|b| (MessageKind::Binary, b)),
                ],
                0..5,
            ),
            chunks in proptest::collection::vec(1usize..5000, 1..4),
            from_client in any::<bool>(),
        ) {
            let (mut sender, mut receiver) = if from_client {
                (Connection::client(Config::default(), MaskKeys::from_seed(99)), server())
            } else {
                (server(), Connection::client(Config::default(), MaskKeys::from_seed(99)))
            };
            for (kind, payload) in &messages {
                sender.send_message(*kind, Bytes::copy_from_slice(payload));
            }
            let wire = transmitted(&mut sender);
            let expected: Vec<Event> = messages
                .iter()
                .map(|(kind, payload)| Event::Message { kind: *kind, data: Bytes::copy_from_slice(payload) })
                .collect();
            prop_assert_eq!(feed_chunked(&mut receiver, &wire, &chunks), (expected, None));
        }
    }
}
