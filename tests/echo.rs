//! The echo server against a real client (tungstenite): every message comes back unchanged
//! to its sender, in order, whatever its size or fragmentation; pings get pongs; the close
//! handshake ends the TCP connection; subprotocols are negotiated (RFC 6455 §1.9, §4.2.2,
//! §5.4, §5.5, §7.1).
//!
//! Never checks malformed input (see `protocol_errors.rs`) or the HTTP side (`handshake.rs`).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Bytes, Message, WebSocket};

use support::TestServer;

fn connect(server: &TestServer) -> WebSocket<TcpStream> {
    let (ws, response) = tungstenite::client(server.url(), server.tcp()).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `message` and returns the next message the server sends.
fn roundtrip(ws: &mut WebSocket<TcpStream>, message: Message) -> Message {
    ws.send(message).expect("send");
    ws.read().expect("read the echo")
}

#[test]
fn text_roundtrips() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    assert_eq!(roundtrip(&mut ws, Message::text("hello, wsedge ✓")), Message::text("hello, wsedge ✓"));
}

#[test]
fn binary_roundtrips() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    let data: Vec<u8> = (0..=255).collect();
    assert_eq!(roundtrip(&mut ws, Message::binary(data.clone())), Message::binary(data));
}

#[test]
fn one_mib_text_roundtrips() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    // Two-byte code points, so UTF-8 validation sees sequences cut at every read boundary.
    let text = "é".repeat(512 * 1024);
    assert_eq!(text.len(), 1 << 20);
    match roundtrip(&mut ws, Message::text(text.clone())) {
        Message::Text(echo) => assert!(echo.as_str() == text, "1 MiB text came back changed"),
        other => panic!("expected text, got {:?}", other.len()),
    }
}

#[test]
fn message_at_the_default_16_mib_limit_roundtrips() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 251) as u8).collect();
    match roundtrip(&mut ws, Message::binary(data.clone())) {
        Message::Binary(echo) => assert!(echo == data, "16 MiB binary came back changed"),
        other => panic!("expected binary, got {:?}", other.len()),
    }
}

#[test]
fn fragmented_text_comes_back_as_one_message() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    // "→" (E2 86 92) is cut across the first two fragments.
    let fragments: [(&[u8], OpCode, bool); 3] = [
        (b"left \xE2\x86", OpCode::Data(Data::Text), false),
        (b"\x92 ", OpCode::Data(Data::Continue), false),
        (b"right", OpCode::Data(Data::Continue), true),
    ];
    for (payload, opcode, fin) in fragments {
        ws.send(Message::Frame(Frame::message(Bytes::from_static(payload), opcode, fin))).expect("send fragment");
    }
    assert_eq!(ws.read().expect("read the echo"), Message::text("left → right"));
}

#[test]
fn ping_between_fragments_is_answered_and_the_message_stays_whole() {
    // §5.4: control frames may be injected in the middle of a fragmented message.
    let server = TestServer::echo();
    let mut ws = connect(&server);
    ws.send(Message::Frame(Frame::message(Bytes::from_static(b"one "), OpCode::Data(Data::Binary), false)))
        .expect("send first fragment");
    ws.send(Message::Ping(Bytes::from_static(b"mid"))).expect("send ping");
    ws.send(Message::Frame(Frame::message(Bytes::from_static(b"two"), OpCode::Data(Data::Continue), true)))
        .expect("send last fragment");
    assert_eq!(ws.read().expect("read the pong"), Message::Pong(Bytes::from_static(b"mid")));
    assert_eq!(ws.read().expect("read the echo"), Message::binary(b"one two".to_vec()));
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    let payload = Bytes::from_static(b"are you there?");
    assert_eq!(roundtrip(&mut ws, Message::Ping(payload.clone())), Message::Pong(payload));
}

#[test]
fn pipelined_messages_echo_in_order() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    for i in 0..1000 {
        ws.write(Message::text(format!("message {i}"))).expect("queue");
    }
    ws.flush().expect("flush");
    for i in 0..1000 {
        assert_eq!(ws.read().expect("read an echo"), Message::text(format!("message {i}")));
    }
}

#[test]
fn concurrent_clients_get_only_their_own_echoes() {
    let server = TestServer::echo();
    std::thread::scope(|scope| {
        for client in 0..8 {
            let server = &server;
            scope.spawn(move || {
                let mut ws = connect(server);
                for i in 0..100 {
                    let text = format!("client {client} message {i}");
                    assert_eq!(roundtrip(&mut ws, Message::text(text.clone())), Message::text(text));
                }
                // And a burst, so the server has several clients' data in one turn.
                for i in 0..100 {
                    ws.write(Message::binary(vec![client; i + 1])).expect("queue");
                }
                ws.flush().expect("flush");
                for i in 0..100 {
                    assert_eq!(ws.read().expect("read an echo"), Message::binary(vec![client; i + 1]));
                }
            });
        }
    });
}

#[test]
fn client_close_is_answered_and_tcp_ends() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "done here".into() })).expect("send close");
    match ws.read().expect("read the close reply") {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close with 1000, got {other:?}"),
    }
    // tungstenite reports ConnectionClosed only once the server ended TCP.
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the server to end TCP, got {other:?}"),
    }
    assert_eq!(ws.get_mut().read(&mut [0u8; 16]).expect("read after close"), 0);
}

fn subprotocol_server() -> TestServer {
    let mut config = support::config();
    config.subprotocols = vec!["wsedge.v1".into()];
    TestServer::start(config)
}

#[test]
fn supported_subprotocol_is_selected_from_the_offer() {
    let server = subprotocol_server();
    let mut request = server.url().into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "foo, wsedge.v1".parse().unwrap());
    let (mut ws, response) = tungstenite::client(request, server.tcp()).expect("WebSocket handshake");
    let protocol = response.headers().get("Sec-WebSocket-Protocol").map(|v| v.to_str().unwrap());
    assert_eq!(protocol, Some("wsedge.v1"));
    assert_eq!(roundtrip(&mut ws, Message::text("v1")), Message::text("v1"));
}

#[test]
fn unsupported_subprotocol_gets_no_protocol_header() {
    // By hand: tungstenite fails a handshake whose offer the server declined (§4.1 lets
    // the client decide), and this test is about what the server sends.
    let server = subprotocol_server();
    let mut stream = server.tcp();
    let request = support::upgrade_request(&server.addr().to_string())
        .replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: foo\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let head = support::read_head(&mut stream);
    assert_eq!(head.status, 101);
    assert_eq!(head.header("Sec-WebSocket-Protocol"), None, "{head:?}");
}
