//! The `wsedge.v1` request/reply surface against a real client (tungstenite): the welcome,
//! every op's reply body with its id, `"id": null` on errors, silent success without an
//! id, `echo: false`, ephemeral messages, the message push's shape, subprotocol selection
//! and the endpoint path (contract: docs/protocol.md).
//!
//! Ordering, recovery, presence events, limits and the HTTP API have their own files.

mod support;

use std::collections::HashSet;
use std::io::Write;

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

use support::rooms::{offset_of, RoomClient, PATH};
use support::TestServer;
use wsedge::rooms::RoomsConfig;

fn server() -> TestServer {
    TestServer::rooms(RoomsConfig::default())
}

#[test]
fn welcome_comes_first_with_a_unique_client_id_and_no_user() {
    let server = server();
    let mut ids = HashSet::new();
    for _ in 0..5 {
        let request = server.url_at(PATH).into_client_request().unwrap();
        let (mut ws, _) = tungstenite::client(request, server.tcp()).expect("handshake");
        let Message::Text(text) = ws.read().expect("read the welcome") else { panic!("welcome is text") };
        let welcome: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(welcome["op"], "welcome");
        assert_eq!(welcome["user"], Value::Null);
        let id = welcome["client"].as_str().expect("client id is a string");
        assert!(!id.is_empty());
        assert!(ids.insert(id.to_owned()), "client id {id} handed out twice");
    }
}

#[test]
fn welcome_comes_before_replies_to_frames_sent_with_the_upgrade() {
    // Raw TCP: the request head and two frames in one write.
    let server = server();
    let mut stream = server.tcp();
    let mut bytes = support::upgrade_request(&server.addr().to_string()).replacen("GET / ", "GET /ws ", 1).into_bytes();
    bytes.extend(support::client_frame(0x81, br#"{"id":1,"op":"join","room":"r"}"#));
    bytes.extend(support::client_frame(0x81, br#"{"room":"r","data":[1],"op":"publish","id":2}"#));
    stream.write_all(&bytes).unwrap();
    assert_eq!(support::read_head(&mut stream).status, 101);
    let mut frames = Vec::new();
    for _ in 0..4 {
        let frame = support::read_frame(&mut stream);
        assert_eq!(frame.b0, 0x81, "one unfragmented text frame per message");
        frames.push(serde_json::from_slice::<Value>(&frame.payload).expect("JSON"));
    }
    assert_eq!(frames[0]["op"], "welcome");
    assert_eq!(frames[1]["id"], 1);
    assert_eq!(frames[1]["ok"]["room"], "r");
    assert_eq!(frames[2]["op"], "message");
    assert_eq!(frames[2]["data"], json!([1]));
    assert_eq!(frames[3], json!({"id": 2, "ok": {"room": "r", "offset": 1}}));
}

#[test]
fn without_authentication_everyone_may_join_publish_and_see_presence_anywhere() {
    let server = server();
    let mut clients: Vec<RoomClient> = (0..3).map(|_| RoomClient::connect(&server)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        for room in ["a", "b:c", "private.room-1_x"] {
            let ok = client.ok(json!({"op": "join", "room": room, "presence": true}));
            assert_eq!(ok["members"], i + 1, "{room}: created on first join, then joined");
            client.ok(json!({"op": "publish", "room": room, "data": i}));
            let presence = client.ok(json!({"op": "presence", "room": room}));
            assert_eq!(presence["members"].as_array().unwrap().len(), i + 1);
        }
    }
}

#[test]
fn join_reply_carries_the_id_and_the_room_state() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.send(&json!({"id": 7, "op": "join", "room": "lobby"}));
    let reply = a.next();
    assert_eq!(reply["id"], 7);
    let ok = &reply["ok"];
    assert_eq!(ok["room"], "lobby");
    assert!(ok["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{reply}");
    assert_eq!(ok["offset"], 0);
    assert_eq!(ok["members"], 1);
    assert_eq!(ok["recovered"], false);
    assert_eq!(ok["missed"], json!([]));

    // A string id comes back as the same string; the second member is counted.
    let mut b = RoomClient::connect(&server);
    b.send(&json!({"id": "join-1", "op": "join", "room": "lobby"}));
    let reply = b.next();
    assert_eq!(reply["id"], "join-1");
    assert_eq!(reply["ok"]["members"], 2);
    assert_eq!(reply["ok"]["epoch"], ok["epoch"], "same room, same epoch");
}

#[test]
fn every_op_replies_once_with_its_id() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.join("r");

    a.send(&json!({"id": "p", "op": "publish", "room": "r", "data": {"text": "hi"}}));
    // The publisher is a member: its own copy and the reply, in that order (the push is
    // queued while the publish is handled, the reply after it).
    let message = a.next();
    assert_eq!(message["op"], "message");
    let reply = a.next();
    assert_eq!(reply, json!({"id": "p", "ok": {"room": "r", "offset": 1}}));

    a.send(&json!({"id": 1.5, "op": "presence", "room": "r"}));
    let reply = a.next();
    assert_eq!(reply["id"], 1.5);
    assert_eq!(reply["ok"], json!({"room": "r", "members": [{"client": a.id, "user": null}]}));

    a.send(&json!({"id": -3, "op": "history", "room": "r"}));
    let reply = a.next();
    assert_eq!(reply["id"], -3);
    let ok = &reply["ok"];
    assert_eq!(ok["room"], "r");
    assert!(ok["epoch"].is_string());
    assert_eq!(ok["offset"], 1);
    assert_eq!(ok["messages"], json!([message]));

    a.send(&json!({"id": 0, "op": "ping"}));
    assert_eq!(a.next(), json!({"id": 0, "ok": {}}));

    a.send(&json!({"id": "bye", "op": "leave", "room": "r"}));
    assert_eq!(a.next(), json!({"id": "bye", "ok": {"room": "r"}}));
    a.expect_nothing();
}

#[test]
fn message_push_has_the_contract_shape_and_data_verbatim() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    b.join("r");
    let data = json!({"nested": [1, 2.5, "three", null, true, {"k": "ü\"\\"}], "empty": {}});
    a.publish("r", data.clone());
    let message = b.next_message();
    assert_eq!(
        message,
        json!({"op": "message", "room": "r", "offset": 1, "from": {"client": a.id, "user": null}, "data": data})
    );
    // `data` may be any JSON value, not just an object.
    for data in [json!("text"), json!(42), json!(null), json!([])] {
        a.publish("r", data.clone());
        assert_eq!(b.next_message()["data"], data);
    }
}

#[test]
fn errors_without_an_id_carry_id_null() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    for request in
        [json!({"op": "publish", "room": "nowhere", "data": 1}), json!({"op": "dance"}), json!({"op": "join"})]
    {
        a.send(&request);
        let reply = a.next();
        assert_eq!(reply["id"], Value::Null, "{reply}");
        assert!(reply.as_object().unwrap().contains_key("id"), "the id field is present: {reply}");
        assert!(reply["error"]["code"].is_u64(), "{reply}");
        assert!(reply["error"]["message"].is_string(), "{reply}");
        assert!(reply.get("ok").is_none());
    }
    // Malformed JSON: no id can be known.
    a.send_text("{not json");
    let reply = a.next();
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(reply["error"]["code"], 400);
}

#[test]
fn errors_with_an_id_carry_it() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.send(&json!({"id": "x1", "op": "publish", "room": "nowhere", "data": 1}));
    let reply = a.next();
    assert_eq!(reply["id"], "x1");
    assert_eq!(reply["error"]["code"], 404);
}

#[test]
fn success_without_an_id_is_silent() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    b.join("r");
    a.send(&json!({"op": "join", "room": "r"}));
    a.send(&json!({"op": "presence", "room": "r"}));
    a.send(&json!({"op": "history", "room": "r"}));
    a.send(&json!({"op": "ping"}));
    a.send(&json!({"op": "publish", "room": "r", "data": "quiet", "echo": false}));
    a.send(&json!({"op": "leave", "room": "r"}));
    // The join and the publish took effect: b got the message, a got no replies.
    a.expect_nothing();
    assert_eq!(b.next_message()["data"], "quiet");
    b.expect_nothing();
}

#[test]
fn id_null_counts_as_no_id() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.send(&json!({"id": null, "op": "ping"}));
    a.expect_nothing();
}

#[test]
fn unknown_fields_are_ignored() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let ok = a.ok(json!({"op": "join", "room": "r", "colour": "blue", "since2": 5}));
    assert_eq!(ok["room"], "r");
    let ok = a.ok(json!({"op": "publish", "room": "r", "data": 1, "extra": {"x": [1]}}));
    assert_eq!(ok["offset"], 1);
}

#[test]
fn publisher_gets_its_own_copy_by_default() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.join("r");
    let offset = a.publish("r", json!("mine"));
    let own = a.barrier();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["data"], "mine");
    assert_eq!(offset_of(&own[0]), offset);
    assert_eq!(own[0]["from"]["client"], a.id);
}

#[test]
fn echo_false_skips_the_publisher_only() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    b.join("r");
    let ok = a.ok(json!({"op": "publish", "room": "r", "data": "not for me", "echo": false}));
    assert_eq!(ok["offset"], 1);
    a.expect_nothing();
    let message = b.next_message();
    assert_eq!(message["data"], "not for me");
    assert_eq!(message["from"]["client"], a.id);
    // echo: true is the default spelled out.
    a.ok(json!({"op": "publish", "room": "r", "data": "for me", "echo": true}));
    assert_eq!(a.barrier().len(), 1);
}

#[test]
fn ephemeral_messages_have_no_offset_and_are_never_kept() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    let epoch = a.join("r")["epoch"].as_str().unwrap().to_owned();
    b.join("r");
    let ok = a.ok(json!({"op": "publish", "room": "r", "data": {"typing": true}, "ephemeral": true}));
    assert_eq!(ok, json!({"room": "r"}), "an ephemeral publish has no offset");
    let message = b.next_message();
    assert!(message.get("offset").is_none(), "{message}");
    assert_eq!(message["data"], json!({"typing": true}));
    assert_eq!(message["from"]["client"], a.id);
    let own = a.barrier();
    assert_eq!(own.len(), 1, "the publisher's own copy: {own:?}");
    assert!(own[0].get("offset").is_none());

    // It used no offset: the next kept message is 1.
    assert_eq!(a.publish("r", json!("kept")), 1);
    let kept = b.next_message();
    assert_eq!(offset_of(&kept), 1);

    // Not in history, not replayed by `since`.
    let history = a.ok(json!({"op": "history", "room": "r"}));
    assert_eq!(history["messages"], json!([kept]));
    let mut c = RoomClient::connect(&server);
    let ok = c.ok(json!({"op": "join", "room": "r", "since": {"epoch": epoch, "offset": 0}}));
    assert_eq!(ok["recovered"], true);
    assert_eq!(ok["missed"], json!([kept]));
}

#[test]
fn rejoining_a_room_is_not_an_error() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.join("r");
    let ok = a.join("r");
    assert_eq!(ok["members"], 1, "still one member: {ok}");
    a.publish("r", json!(1));
    assert_eq!(a.barrier().len(), 1, "one membership, one copy");
}

#[test]
fn leave_stops_delivery() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    b.join("r");
    assert_eq!(b.ok(json!({"op": "leave", "room": "r"})), json!({"room": "r"}));
    a.publish("r", json!("after"));
    b.expect_nothing();
}

#[test]
fn subprotocol_wsedge_v1_is_selected_when_offered() {
    let server = server();
    let mut request = server.url_at(PATH).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "chat, wsedge.v1".parse().unwrap());
    let (mut ws, response) = tungstenite::client(request, server.tcp()).expect("handshake");
    let protocol = response.headers().get("Sec-WebSocket-Protocol").map(|v| v.to_str().unwrap());
    assert_eq!(protocol, Some("wsedge.v1"));
    let Message::Text(welcome) = ws.read().expect("welcome") else { panic!("welcome is text") };
    assert!(welcome.as_str().contains("\"welcome\""));

    // Not offered: none selected, and the protocol works the same.
    let request = server.url_at(PATH).into_client_request().unwrap();
    let (_ws, response) = tungstenite::client(request, server.tcp()).expect("handshake");
    assert!(response.headers().get("Sec-WebSocket-Protocol").is_none());
}

#[test]
fn a_query_string_on_the_path_is_accepted() {
    let server = server();
    let request = server.url_at("/ws?token=abc").into_client_request().unwrap();
    let mut client = RoomClient::connect_with(&server, request);
    client.join("r");
}

#[test]
fn other_paths_get_404_on_upgrade() {
    let server = server();
    for path in ["/", "/wss", "/ws/room", "/api/publish"] {
        let request = server.url_at(path).into_client_request().unwrap();
        match tungstenite::client(request, server.tcp()) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                assert_eq!(response.status(), 404, "{path}");
            }
            Err(e) => panic!("{path}: expected 404, got {e}"),
            Ok(_) => panic!("{path}: upgrade accepted"),
        }
    }
    // By hand too: the 404 ends the connection.
    let mut stream = server.tcp();
    stream.write_all(support::upgrade_request(&server.addr().to_string()).as_bytes()).unwrap();
    let head = support::read_head(&mut stream);
    assert_eq!(head.status, 404);
}

#[test]
fn rooms_are_separate() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("one");
    b.join("two");
    assert_eq!(a.publish("one", json!("1")), 1);
    assert_eq!(b.publish("two", json!("2")), 1, "offsets are per room");
    let got = a.barrier();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["room"], "one");
    let got = b.barrier();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["room"], "two");
}

#[test]
fn a_publish_sent_again_with_its_key_is_not_published_twice() {
    let server = TestServer::rooms(RoomsConfig { history_size: 3, ..RoomsConfig::default() });
    let mut a = RoomClient::connect(&server);
    a.join("r");
    let publish = |data: u32, key: &str| json!({"op": "publish", "room": "r", "data": data, "key": key});
    assert_eq!(a.ok(publish(1, "k-1")), json!({"room": "r", "offset": 1}));
    // The reply was lost, say: the client sends it again with the same key.
    assert_eq!(a.ok(publish(1, "k-1")), json!({"room": "r", "offset": 1, "duplicate": true}));
    assert_eq!(a.ok(publish(2, "k-2"))["offset"], 2);
    let offsets: Vec<u64> = a.barrier().iter().filter(|m| m["op"] == "message").map(offset_of).collect();
    assert_eq!(offsets, [1, 2], "published once each");
    // A key is remembered as long as its message is kept (history size 3 here).
    a.ok(publish(3, "k-3"));
    a.ok(publish(4, "k-4"));
    assert_eq!(a.ok(publish(1, "k-1")), json!({"room": "r", "offset": 5}), "k-1 left the history window");
    for bad in [json!(""), json!("x".repeat(65)), json!(7)] {
        assert_eq!(a.error(json!({"op": "publish", "room": "r", "data": 1, "key": bad})), 400, "{bad}");
    }
    assert_eq!(a.ok(publish(6, &"y".repeat(64)))["offset"], 6, "64 bytes is fine");
}
