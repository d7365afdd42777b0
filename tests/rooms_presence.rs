//! Presence (contract: the `presence` op; "Server -> client pushes", presence events): the
//! member list; join and leave events only to members that joined with `presence: true`,
//! never about the member itself; a leave event when a member vanishes without a close
//! handshake, or is closed by the server.

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use support::rooms::RoomClient;
use support::TestServer;
use wsedge::rooms::RoomsConfig;

fn server() -> TestServer {
    TestServer::rooms(RoomsConfig::default())
}

fn join_watching(client: &mut RoomClient, room: &str) -> Value {
    client.ok(json!({"op": "join", "room": room, "presence": true}))
}

fn event(op: &str, room: &str, client: &str) -> Value {
    json!({"op": op, "room": room, "member": {"client": client, "user": null}})
}

fn member_ids(presence: &Value) -> BTreeSet<String> {
    presence["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {presence}"))
        .iter()
        .map(|m| {
            assert_eq!(m["user"], Value::Null);
            m["client"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn presence_lists_every_member_with_client_and_user() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    let mut c = RoomClient::connect(&server);
    a.join("r");
    join_watching(&mut b, "r");
    c.join("elsewhere");
    let ok = a.ok(json!({"op": "presence", "room": "r"}));
    assert_eq!(ok["room"], "r");
    assert_eq!(member_ids(&ok), BTreeSet::from([a.id.clone(), b.id.clone()]));
    b.ok(json!({"op": "leave", "room": "r"}));
    let ok = a.ok(json!({"op": "presence", "room": "r"}));
    assert_eq!(member_ids(&ok), BTreeSet::from([a.id.clone()]));
}

#[test]
fn join_and_leave_events_go_only_to_members_that_asked() {
    let server = server();
    let mut watcher = RoomClient::connect(&server);
    let mut quiet = RoomClient::connect(&server);
    let mut x = RoomClient::connect(&server);
    join_watching(&mut watcher, "r");
    quiet.ok(json!({"op": "join", "room": "r", "presence": false}));
    assert_eq!(watcher.barrier(), [event("join", "r", &quiet.id)]);

    x.join("r");
    assert_eq!(watcher.barrier(), [event("join", "r", &x.id)]);
    x.ok(json!({"op": "leave", "room": "r"}));
    assert_eq!(watcher.barrier(), [event("leave", "r", &x.id)]);

    // Joining twice is one membership: no second join event.
    x.join("r");
    x.join("r");
    assert_eq!(watcher.barrier(), [event("join", "r", &x.id)]);

    quiet.expect_nothing();
    x.expect_nothing();
}

#[test]
fn events_are_per_room() {
    let server = server();
    let mut watcher = RoomClient::connect(&server);
    let mut x = RoomClient::connect(&server);
    join_watching(&mut watcher, "a");
    watcher.join("b"); // a member of b, not watching it
    x.join("b");
    x.join("c");
    watcher.expect_nothing();
    x.join("a");
    assert_eq!(watcher.barrier(), [event("join", "a", &x.id)]);
}

#[test]
fn a_member_never_hears_about_itself() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    join_watching(&mut a, "r");
    a.expect_nothing();
    a.ok(json!({"op": "leave", "room": "r"}));
    join_watching(&mut a, "r");
    a.expect_nothing();

    // With another watcher around, each hears only about the other.
    let mut b = RoomClient::connect(&server);
    join_watching(&mut b, "r");
    assert_eq!(a.barrier(), [event("join", "r", &b.id)]);
    b.expect_nothing();
    b.ok(json!({"op": "leave", "room": "r"}));
    assert_eq!(a.barrier(), [event("leave", "r", &b.id)]);
    b.expect_nothing();
}

#[test]
fn abrupt_disconnect_sends_a_leave_event() {
    let server = server();
    let mut watcher = RoomClient::connect(&server);
    join_watching(&mut watcher, "r");
    let mut x = RoomClient::connect(&server);
    x.join("r");
    x.join("s");
    let x_id = x.id.clone();
    assert_eq!(watcher.next(), event("join", "r", &x_id));
    // No close frame: the TCP socket just goes.
    x.ws().get_mut().shutdown(std::net::Shutdown::Both).expect("shutdown");
    drop(x);
    assert_eq!(watcher.next(), event("leave", "r", &x_id));
    let ok = watcher.ok(json!({"op": "presence", "room": "r"}));
    assert_eq!(member_ids(&ok), BTreeSet::from([watcher.id.clone()]));
    watcher.expect_nothing();
}

#[test]
fn closing_with_a_handshake_sends_a_leave_event() {
    let server = server();
    let mut watcher = RoomClient::connect(&server);
    join_watching(&mut watcher, "r");
    let mut x = RoomClient::connect(&server);
    x.join("r");
    assert_eq!(watcher.next(), event("join", "r", &x.id));
    x.ws().close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).expect("close");
    let (_, frame) = x.read_until_close();
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Normal));
    assert_eq!(watcher.next(), event("leave", "r", &x.id));
}

#[test]
fn a_server_close_sends_a_leave_event() {
    // Sustained abuse closes the connection (1008): its memberships end like any other.
    let server = TestServer::rooms(RoomsConfig { abuse_limit: 1, ..RoomsConfig::default() });
    let mut watcher = RoomClient::connect(&server);
    join_watching(&mut watcher, "r");
    let mut x = RoomClient::connect(&server);
    x.join("r");
    assert_eq!(watcher.next(), event("join", "r", &x.id));
    x.send_text("bad");
    x.send_text("bad");
    let (_, frame) = x.read_until_close();
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Policy));
    assert_eq!(watcher.next(), event("leave", "r", &x.id));
}

#[test]
fn presence_requires_membership() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    assert_eq!(b.error(json!({"op": "presence", "room": "r"})), 404);
    assert_eq!(b.error(json!({"op": "presence", "room": "nowhere"})), 404);
}
