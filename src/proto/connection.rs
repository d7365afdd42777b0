//! The RFC 6455 connection state machine, for both roles, after the opening handshake.
//!
//! No IO, no clock: [`Connection::decode`] takes bytes from the front of the caller's read
//! buffer and returns at most one [`Event`]; frames to send (automatic pongs, close replies,
//! messages given to [`Connection::send_message`]) queue up as `Bytes` and are taken with
//! [`Connection::poll_transmit`]. Timeouts are the caller's business.
//!
//! Zero-copy: a payload is unmasked in place in the read buffer and handed out as a `Bytes`
//! split off that buffer; only fragmented messages are copied (into one reassembly buffer).
//! A text payload is validated as its bytes arrive, so invalid UTF-8 fails the connection at
//! the first bad byte, even in the middle of a frame (RFC 6455 §8.1, Autobahn 6.4.*).

use std::collections::VecDeque;
use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::close::{CloseCode, CloseFrame, ClosePayloadError};
use super::frame::{FrameError, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Which end of the connection this is. A server requires masked frames and sends unmasked
/// ones; a client the reverse (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

impl MessageKind {
    fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// What the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete message; text is valid UTF-8.
    Message {
        kind: MessageKind,
        data: Bytes,
    },
    /// A ping; the pong is already queued.
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's close frame (`None`: it carried no status code). If we had not sent a
    /// close yet, the reply is already queued. No event follows.
    Close(Option<CloseFrame>),
}

/// A protocol violation by the peer. Each maps to the close code sent before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    Frame(FrameError),
    /// RSV bits set that no negotiated extension defines.
    ReservedBits,
    /// A server got an unmasked frame (§5.1).
    UnmaskedFrame,
    /// A client got a masked frame (§5.1).
    MaskedFrame,
    /// A control frame with FIN clear (§5.5).
    FragmentedControl,
    /// A control frame payload over 125 bytes (§5.5).
    ControlTooLong,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress (§5.4).
    ExpectedContinuation,
    /// A 1-byte close payload or a close code that may not be sent (§7.4).
    InvalidCloseCode,
    /// A close reason that is not UTF-8 (§5.5.1).
    InvalidCloseReason,
    /// A text message that is not UTF-8 (§8.1).
    InvalidUtf8,
    /// A frame over `Config::max_frame_size`.
    FrameTooBig,
    /// A message over `Config::max_message_size`.
    MessageTooBig,
}

impl ProtocolError {
    /// The close code this error is answered with: the one place that decides it.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooBig | ProtocolError::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Frame(e) => write!(f, "bad frame header: {e}"),
            ProtocolError::ReservedBits => f.write_str("RSV bits set without a negotiated extension"),
            ProtocolError::UnmaskedFrame => f.write_str("client frame not masked"),
            ProtocolError::MaskedFrame => f.write_str("server frame masked"),
            ProtocolError::FragmentedControl => f.write_str("fragmented control frame"),
            ProtocolError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            ProtocolError::UnexpectedContinuation => f.write_str("continuation frame without a message"),
            ProtocolError::ExpectedContinuation => f.write_str("new message inside a fragmented message"),
            ProtocolError::InvalidCloseCode => f.write_str("invalid close code"),
            ProtocolError::InvalidCloseReason => f.write_str("close reason is not UTF-8"),
            ProtocolError::InvalidUtf8 => f.write_str("text message is not UTF-8"),
            ProtocolError::FrameTooBig => f.write_str("frame over the size limit"),
            ProtocolError::MessageTooBig => f.write_str("message over the size limit"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
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
    /// Payload of the fragments received so far (empty until a non-final frame completes).
    fragments: BytesMut,
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
    transmit: VecDeque<Bytes>,
    /// xorshift64* state for client masking keys; seeded by the caller (§10.3 wants keys the
    /// server and intermediaries cannot predict, so seed it from the OS).
    mask_state: u64,
}

impl Connection {
    pub fn new(role: Role, config: Config) -> Self {
        Connection {
            role,
            config,
            state: State::Open,
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            transmit: VecDeque::new(),
            mask_state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A client connection whose masking keys come from `seed` (must not be 0).
    pub fn client(config: Config, seed: u64) -> Self {
        let mut conn = Connection::new(Role::Client, config);
        conn.mask_state = seed | 1;
        conn
    }

    pub fn role(&self) -> Role {
        self.role
    }

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
        loop {
            if self.is_terminated() {
                input.clear();
                return Ok(None);
            }
            let frame = match self.frame {
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
                    let frame = FrameInProgress { header, len, processed: 0 };
                    self.frame = Some(frame);
                    frame
                }
            };
            let available = input.len().min(frame.len);
            if available > frame.processed {
                if let Err(e) = self.process_payload(frame, &mut input[frame.processed..available]) {
                    return Err(self.fail(e));
                }
                self.frame = Some(FrameInProgress { processed: available, ..frame });
            }
            if available < frame.len {
                return Ok(None);
            }
            self.frame = None;
            let payload = input.split_to(frame.len).freeze();
            match self.complete_frame(frame.header, payload) {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => continue,
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Validates a header against the role, the limits and the fragmentation state, and
    /// opens a message when a data frame starts one. Returns the payload length.
    fn check_header(&mut self, header: &FrameHeader) -> Result<usize, ProtocolError> {
        if header.rsv != 0 {
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
            return Err(ProtocolError::FrameTooBig);
        }
        // Fits in usize: max_frame_size is a usize.
        let len = header.payload_len as usize;
        match (header.opcode, &self.message) {
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(message)) => {
                if message.fragments.len().saturating_add(len) > self.config.max_message_size {
                    return Err(ProtocolError::MessageTooBig);
                }
                Ok(len)
            }
            (_, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            (opcode, None) => {
                if len > self.config.max_message_size {
                    return Err(ProtocolError::MessageTooBig);
                }
                let kind = if opcode == OpCode::Text { MessageKind::Text } else { MessageKind::Binary };
                self.message = Some(MessageInProgress { kind, fragments: BytesMut::new() });
                Ok(len)
            }
        }
    }

    /// Unmasks newly arrived payload bytes in place and validates text as it streams in.
    fn process_payload(&mut self, frame: FrameInProgress, bytes: &mut [u8]) -> Result<(), ProtocolError> {
        if let Some(key) = frame.header.mask {
            apply_mask(bytes, key, frame.processed);
        }
        let is_text = matches!(&self.message, Some(m) if m.kind == MessageKind::Text);
        if !frame.header.opcode.is_control() && is_text && self.state == State::Open {
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
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                if !header.fin {
                    message.fragments.extend_from_slice(&payload);
                    return Ok(None);
                }
                let kind = message.kind;
                let data = if message.fragments.is_empty() {
                    payload // the common case: one frame, no copy
                } else {
                    let mut fragments = std::mem::take(&mut message.fragments);
                    fragments.extend_from_slice(&payload);
                    fragments.freeze()
                };
                self.message = None;
                if kind == MessageKind::Text && self.state == State::Open {
                    self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                if self.state != State::Open {
                    return Ok(None); // §7.1.4: data after our close is discarded
                }
                Ok(Some(Event::Message { kind, data }))
            }
        }
    }

    /// Fails the connection: queues a close with the error's code (unless a close was
    /// already sent) and ignores all further input.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state == State::Open {
            let payload = CloseFrame::encode_payload(error.close_code(), "");
            self.queue_frame(OpCode::Close, payload);
        }
        self.state = State::Failed;
        self.frame = None;
        self.message = None;
        error
    }

    /// Queues a message. Ignored once a close was sent or received (RFC 6455 §5.5.1).
    pub fn send_message(&mut self, kind: MessageKind, payload: Bytes) {
        if self.state == State::Open {
            self.queue_frame(kind.opcode(), payload);
        }
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

    /// The next queued outgoing chunk (a frame header or payload), in wire order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// Queues one frame: header and payload as separate `Bytes` so the payload is never
    /// copied on the server side (vectored writes send both). Clients mask into a copy.
    fn queue_frame(&mut self, opcode: OpCode, payload: Bytes) {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => Some(self.next_mask_key()),
        };
        let header = FrameHeader { fin: true, rsv: 0, opcode, mask, payload_len: payload.len() as u64 };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        match mask {
            None => {
                self.transmit.push_back(Bytes::copy_from_slice(&buf[..n]));
                if !payload.is_empty() {
                    self.transmit.push_back(payload);
                }
            }
            Some(key) => {
                let mut frame = BytesMut::with_capacity(n + payload.len());
                frame.extend_from_slice(&buf[..n]);
                frame.extend_from_slice(&payload);
                apply_mask(&mut frame[n..], key, 0);
                self.transmit.push_back(frame.freeze());
            }
        }
    }

    fn next_mask_key(&mut self) -> [u8; 4] {
        // xorshift64*
        let mut x = self.mask_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.mask_state = x;
        let out = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let b = out.to_le_bytes();
        [b[4], b[5], b[6], b[7]]
    }
}

/// Encodes one unmasked, final frame (server to client) as a single `Bytes`: the form a
/// handler sends to many connections, each write queue holding a clone (a refcount bump).
pub fn encode_server_frame(kind: MessageKind, payload: &[u8]) -> Bytes {
    let header =
        FrameHeader { fin: true, rsv: 0, opcode: kind.opcode(), mask: None, payload_len: payload.len() as u64 };
    let mut buf = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    let mut frame = BytesMut::with_capacity(n + payload.len());
    frame.extend_from_slice(&buf[..n]);
    frame.extend_from_slice(payload);
    frame.freeze()
}
