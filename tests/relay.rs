//! The raw relay (`/relay/<room>` on the room server, every path on `wsedge relay`): each
//! message goes verbatim to every member of the path's room, the sender included; rooms
//! are separate; the room limits apply.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};
use wsedge::rooms::RoomsConfig;

use support::TestServer;

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(server: &TestServer, path: &str) -> Ws {
    let (ws, _) = tungstenite::connect(server.url_at(path)).expect("relay upgrade");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    }
    ws
}

fn relay_only() -> RoomsConfig {
    RoomsConfig { path: String::new(), relay_prefix: Some("/".to_owned()), ..RoomsConfig::default() }
}

/// Nothing arrives within a short wait.
fn expect_silence(ws: &mut Ws) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    }
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
}

#[test]
fn messages_go_verbatim_to_every_member_including_the_sender() {
    let server = TestServer::rooms(RoomsConfig::default());
    let mut a = connect(&server, "/relay/game-1");
    let mut b = connect(&server, "/relay/game-1");
    let mut other = connect(&server, "/relay/game-2");
    // b's join is complete once b hears its own message.
    b.send(Message::text("b is here")).unwrap();
    assert_eq!(b.read().unwrap(), Message::text("b is here"));
    assert_eq!(a.read().unwrap(), Message::text("b is here"));

    let binary = Message::binary(vec![0u8, 1, 2, 255]);
    a.send(binary.clone()).unwrap();
    assert_eq!(a.read().unwrap(), binary);
    assert_eq!(b.read().unwrap(), binary);
    expect_silence(&mut other);
}

#[test]
fn every_path_is_a_room_on_the_relay_command() {
    let server = TestServer::rooms(relay_only());
    let mut root = connect(&server, "/");
    let mut ws_path = connect(&server, "/ws");
    root.send(Message::text("{\"op\":\"ping\"}")).unwrap();
    // Not the room protocol: the JSON comes back verbatim, with no reply or welcome.
    assert_eq!(root.read().unwrap(), Message::text("{\"op\":\"ping\"}"));
    expect_silence(&mut ws_path);
}

#[test]
fn a_message_over_the_room_limit_closes_with_1009() {
    let server = TestServer::rooms(RoomsConfig { max_message_bytes: 100, ..RoomsConfig::default() });
    let mut a = connect(&server, "/relay/r");
    a.send(Message::binary(vec![7u8; 101])).unwrap();
    match a.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[test]
fn a_full_relay_room_refuses_the_upgrade() {
    // One worker: the worker that accepts the upgrade owns the room and knows it is full.
    let config = support::config();
    let server = TestServer::rooms_with(config, RoomsConfig { max_members_per_room: 1, ..RoomsConfig::default() });
    let _first = connect(&server, "/relay/r");
    match tungstenite::connect(server.url_at("/relay/r")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_full_relay_room_on_another_worker_closes_the_newcomer_with_1013() {
    // Several workers: an upgrade accepted by a worker that does not own the room is
    // refused by the owner a moment later, with close 1013; the member stays.
    let server = TestServer::rooms(RoomsConfig { max_members_per_room: 1, ..RoomsConfig::default() });
    let mut first = connect(&server, "/relay/r");
    let (mut refused_503, mut closed_1013) = (0, 0);
    for _ in 0..12 {
        match tungstenite::connect(server.url_at("/relay/r")) {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
                refused_503 += 1;
            }
            Ok((mut ws, _)) => match ws.read() {
                Ok(Message::Close(Some(frame))) => {
                    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1013, "relay room full"));
                    closed_1013 += 1;
                }
                other => panic!("expected close 1013, got {other:?}"),
            },
            Err(e) => panic!("upgrade failed: {e}"),
        }
    }
    println!("full relay room: {refused_503} refused with 503, {closed_1013} closed with 1013");
    assert_eq!(refused_503 + closed_1013, 12);
    first.send(Message::text("still here")).unwrap();
    assert_eq!(first.read().unwrap(), Message::text("still here"));
}
