//! Protocol violations on the wire: each one gets a close frame with the code RFC 6455
//! assigns it (1002 protocol error, 1007 invalid payload, 1009 too big; §7.4.1), then the
//! server ends TCP; one failing connection never disturbs another.
//!
//! Frames are written by hand over raw TCP after a hand-written upgrade, because a client
//! library refuses to send most of them. Valid traffic is `echo.rs`'s concern.

mod support;

use std::io::Write;
use std::net::TcpStream;

use support::{client_frame, client_header, close_payload, expect_close_then_eof, read_frame, TestServer};

// First header bytes: FIN bit | opcode.
const FIN: u8 = 0x80;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const RSV1: u8 = 0x40;

const PROTOCOL_ERROR: u16 = 1002;
const INVALID_PAYLOAD: u16 = 1007;
const MESSAGE_TOO_BIG: u16 = 1009;

/// Opens a connection to `server`, writes `bytes` after the upgrade and expects a close
/// with `code`, then the end of TCP.
fn expect_failure(server: &TestServer, bytes: &[u8], code: u16) {
    let mut stream = server.raw_ws();
    stream.write_all(bytes).expect("write the offending frames");
    expect_close_then_eof(&mut stream, code);
}

/// Same, against a default echo server.
fn expect_failure_by_default(bytes: &[u8], code: u16) {
    let server = TestServer::echo();
    expect_failure(&server, bytes, code);
}

#[test]
fn unmasked_frame_is_a_protocol_error() {
    // §5.1: a server MUST close the connection on an unmasked client frame.
    expect_failure_by_default(&[FIN | TEXT, 0x02, b'h', b'i'], PROTOCOL_ERROR);
}

#[test]
fn reserved_opcode_is_a_protocol_error() {
    expect_failure_by_default(&client_frame(FIN | 0x3, b"?"), PROTOCOL_ERROR);
}

#[test]
fn rsv1_without_an_extension_is_a_protocol_error() {
    // §5.2: RSV bits MUST be 0 unless an extension defines them; none is negotiated.
    expect_failure_by_default(&client_frame(FIN | RSV1 | TEXT, b"compressed?"), PROTOCOL_ERROR);
}

#[test]
fn ping_over_125_bytes_is_a_protocol_error() {
    // §5.5: control frame payloads are at most 125 bytes.
    expect_failure_by_default(&client_frame(FIN | PING, &[b'p'; 126]), PROTOCOL_ERROR);
}

#[test]
fn fragmented_ping_is_a_protocol_error() {
    // §5.5: control frames MUST NOT be fragmented.
    expect_failure_by_default(&client_frame(PING, b"half"), PROTOCOL_ERROR);
}

#[test]
fn continuation_without_a_start_is_a_protocol_error() {
    expect_failure_by_default(&client_frame(FIN | CONTINUATION, b"orphan"), PROTOCOL_ERROR);
}

#[test]
fn new_message_inside_a_fragmented_one_is_a_protocol_error() {
    // §5.4: fragments of one message are not interleaved with another data message.
    let bytes = [client_frame(TEXT, b"first "), client_frame(FIN | TEXT, b"intruder")].concat();
    expect_failure_by_default(&bytes, PROTOCOL_ERROR);
}

#[test]
fn close_codes_not_allowed_on_the_wire_are_protocol_errors() {
    // §7.4.1: 1005 is never sent; 999, 1004 and 2000 are reserved or unassigned.
    let server = TestServer::echo();
    for code in [1005, 999, 1004, 2000] {
        expect_failure(&server, &client_frame(FIN | CLOSE, &close_payload(code, b"")), PROTOCOL_ERROR);
    }
}

#[test]
fn one_byte_close_payload_is_a_protocol_error() {
    // §5.5.1: a close body, if present, starts with a 2-byte code.
    expect_failure_by_default(&client_frame(FIN | CLOSE, &[0x03]), PROTOCOL_ERROR);
}

#[test]
fn close_reason_with_invalid_utf8_is_invalid_payload() {
    // §5.5.1: the close reason is UTF-8.
    expect_failure_by_default(&client_frame(FIN | CLOSE, &close_payload(1000, b"bad \xFF")), INVALID_PAYLOAD);
}

#[test]
fn text_with_invalid_utf8_is_invalid_payload() {
    // §8.1: a text message that is not UTF-8 fails the connection.
    expect_failure_by_default(&client_frame(FIN | TEXT, b"caf\xC3\x28"), INVALID_PAYLOAD);
}

#[test]
fn invalid_utf8_split_across_fragments_is_invalid_payload() {
    // F0 9F starts a 4-byte sequence; 28 ('(') cannot continue it.
    let bytes = [client_frame(TEXT, b"ok \xF0\x9F"), client_frame(FIN | CONTINUATION, b"\x28 rest")].concat();
    expect_failure_by_default(&bytes, INVALID_PAYLOAD);
}

#[test]
fn length_with_the_top_bit_set_is_a_protocol_error() {
    // §5.2: the most significant bit of a 64-bit length MUST be 0.
    expect_failure_by_default(&client_header(FIN | BINARY, 1 << 63), PROTOCOL_ERROR);
}

#[test]
fn frame_declaring_2_pow_62_bytes_is_too_big() {
    // Refused from the header alone: nothing is buffered or allocated for it.
    expect_failure_by_default(&client_header(FIN | BINARY, 1 << 62), MESSAGE_TOO_BIG);
}

#[test]
fn frame_one_byte_over_the_default_limit_is_too_big() {
    // The other side of `echo.rs`'s 16 MiB roundtrip: the limit is inclusive.
    expect_failure_by_default(&client_header(FIN | BINARY, (16 << 20) + 1), MESSAGE_TOO_BIG);
}

#[test]
fn message_over_max_message_size_is_too_big() {
    let mut config = support::config();
    config.protocol.max_message_size = 1024;
    let server = TestServer::start(config);
    // Each fragment is under the limit; together they are over it.
    let bytes = [client_frame(BINARY, &[1; 600]), client_frame(FIN | CONTINUATION, &[2; 600])].concat();
    expect_failure(&server, &bytes, MESSAGE_TOO_BIG);
}

#[test]
fn valid_close_code_and_reason_are_echoed_as_the_code() {
    let server = TestServer::echo();
    expect_failure(&server, &client_frame(FIN | CLOSE, &close_payload(3000, b"bye")), 3000);
}

#[test]
fn protocol_error_on_one_connection_leaves_another_open() {
    let server = TestServer::echo();
    let mut healthy: TcpStream = server.raw_ws();
    let mut failing = server.raw_ws();
    healthy.write_all(&client_frame(FIN | TEXT, b"before")).unwrap();
    assert_eq!(read_frame(&mut healthy).payload, b"before");

    failing.write_all(&client_frame(FIN | 0x3, b"?")).unwrap();
    expect_close_then_eof(&mut failing, PROTOCOL_ERROR);

    healthy.write_all(&client_frame(FIN | TEXT, b"after")).unwrap();
    let echo = read_frame(&mut healthy);
    assert_eq!((echo.b0, echo.payload.as_slice()), (FIN | TEXT, b"after".as_slice()));
}
