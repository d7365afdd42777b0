//! The opening handshake over raw TCP (RFC 6455 §4.1, §4.2): a valid upgrade gets 101 with
//! the right accept value; each kind of bad request gets its HTTP status and the connection
//! closes; plain HTTP gets the small HTTP surface; slow and eager clients are handled
//! (request in pieces, frames in the same write as the request). The handshake timeout is
//! crossed on driven time in `src/server/loop_tests.rs`.
//!
//! Raw TCP because a client library would only send valid requests and hide the response.
//! What happens after the upgrade is `echo.rs`'s and `protocol_errors.rs`'s concern.

mod support;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};

use support::{client_frame, read_frame, read_head, upgrade_request, ResponseHead, TestServer, KEY};

/// `Sec-WebSocket-Accept` for `key`, computed here independently of the server (§4.2.2).
fn expected_accept(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64.encode(sha.finalize())
}

/// A valid upgrade request for this server.
fn valid_request(server: &TestServer) -> String {
    upgrade_request(&server.addr().to_string())
}

/// Sends `request` and returns the response head and body, checking that the server
/// closes the connection after the response.
fn refused(server: &TestServer, request: &[u8]) -> (ResponseHead, String) {
    let mut stream = server.tcp();
    stream.write_all(request).expect("write the request");
    let head = read_head(&mut stream);
    let mut body = Vec::new();
    stream.read_to_end(&mut body).expect("the server closes after its response");
    (head, String::from_utf8(body).expect("UTF-8 body"))
}

fn assert_upgraded(head: &ResponseHead, key: &str) {
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("Upgrade").map(str::to_ascii_lowercase).as_deref(), Some("websocket"));
    assert_eq!(head.header("Connection").map(str::to_ascii_lowercase).as_deref(), Some("upgrade"));
    assert_eq!(head.header("Sec-WebSocket-Accept"), Some(expected_accept(key).as_str()));
}

#[test]
fn accept_value_matches_the_rfc_example() {
    // §1.3 gives the accept value for this key; the test's own computation must agree.
    assert_eq!(expected_accept(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn valid_upgrade_gets_101_with_the_accept_value() {
    let server = TestServer::echo();
    let key = BASE64.encode(*b"0123456789abcdef");
    let request = valid_request(&server).replace(KEY, &key);
    let mut stream = server.tcp();
    stream.write_all(request.as_bytes()).unwrap();
    assert_upgraded(&read_head(&mut stream), &key);
}

#[test]
fn unsupported_version_gets_426_naming_version_13() {
    let server = TestServer::echo();
    let request = valid_request(&server).replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let (head, _) = refused(&server, request.as_bytes());
    assert_eq!(head.status, 426, "{head:?}");
    assert_eq!(head.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn missing_or_short_key_gets_400() {
    let server = TestServer::echo();
    let missing = valid_request(&server).replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "");
    // §4.1: the key is 16 random bytes, base64-encoded; this one decodes to 15.
    let short_key = BASE64.encode([7u8; 15]);
    let short = valid_request(&server).replace(KEY, &short_key);
    for request in [missing, short] {
        let (head, _) = refused(&server, request.as_bytes());
        assert_eq!(head.status, 400, "{request:?} got {head:?}");
    }
}

#[test]
fn missing_host_gets_400() {
    let server = TestServer::echo();
    let request = valid_request(&server).replace(&format!("Host: {}\r\n", server.addr()), "");
    assert!(!request.contains("Host"));
    assert_eq!(refused(&server, request.as_bytes()).0.status, 400);
}

#[test]
fn upgrade_with_post_gets_405() {
    let server = TestServer::echo();
    let request = valid_request(&server).replacen("GET", "POST", 1);
    assert_eq!(refused(&server, request.as_bytes()).0.status, 405);
}

#[test]
fn oversized_head_gets_431_and_the_connection_closes() {
    let server = TestServer::echo();
    let padding: String = (0..16).map(|i| format!("X-Pad-{i}: {}\r\n", "a".repeat(4096))).collect();
    let request = valid_request(&server).replace("\r\n\r\n", &format!("\r\n{padding}\r\n"));
    assert!(request.len() > 64 * 1024);
    let mut stream = server.tcp();
    // The server may answer before it has read everything; a write cut short is fine.
    let _ = stream.write_all(request.as_bytes());
    let head = read_head(&mut stream);
    assert_eq!(head.status, 431, "{head:?}");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("the server closes after its 431");
}

#[test]
fn healthz_gets_200() {
    let server = TestServer::echo();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr());
    let (head, body) = refused(&server, request.as_bytes());
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(body, "ok\n");
}

#[test]
fn plain_get_gets_426() {
    let server = TestServer::echo();
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr());
    let (head, _) = refused(&server, request.as_bytes());
    assert_eq!(head.status, 426, "{head:?}");
    assert_eq!(head.header("Upgrade"), Some("websocket"));
}

#[test]
fn header_names_and_tokens_are_case_insensitive() {
    // §4.2.1: header names and the `websocket`/`upgrade` tokens are case-insensitive, and
    // `Connection` is a list.
    let server = TestServer::echo();
    let request = valid_request(&server)
        .replace("Upgrade: websocket", "upgrade: WebSocket")
        .replace("Connection: Upgrade", "connection: keep-alive, Upgrade")
        .replace("Sec-WebSocket-Key", "sec-websocket-key")
        .replace("Sec-WebSocket-Version", "SEC-WEBSOCKET-VERSION");
    let mut stream = server.tcp();
    stream.write_all(request.as_bytes()).unwrap();
    assert_upgraded(&read_head(&mut stream), KEY);
}

#[test]
fn request_sent_one_byte_at_a_time_is_upgraded() {
    let server = TestServer::echo();
    let mut stream = server.tcp(); // TCP_NODELAY: each byte is its own segment
    for byte in valid_request(&server).as_bytes() {
        stream.write_all(&[*byte]).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    assert_upgraded(&read_head(&mut stream), KEY);
}

#[test]
fn frames_in_the_same_write_as_the_request_are_processed() {
    let server = TestServer::echo();
    let mut bytes = valid_request(&server).into_bytes();
    bytes.extend(client_frame(0x81, b"right behind the head"));
    let mut stream = server.tcp();
    stream.write_all(&bytes).unwrap();
    assert_upgraded(&read_head(&mut stream), KEY);
    let echo = read_frame(&mut stream);
    assert_eq!((echo.b0, echo.payload.as_slice()), (0x81, b"right behind the head".as_slice()));
}
