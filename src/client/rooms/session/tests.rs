//! The session on scripted server frames: what it sends, what it delivers, across drops.

use super::*;

fn session() -> Session {
    Session::new(
        SessionLimits { max_queued_publishes: 3, history_limit: 100, max_held: 4, max_in_flight: 2 },
        "k".to_owned(),
    )
}

/// Everything the session wants to send now, parsed.
fn sent(s: &mut Session) -> Vec<Value> {
    std::iter::from_fn(|| s.poll_transmit()).map(|t| serde_json::from_str(&t).unwrap()).collect()
}

/// A drop and a new connection (with `token`): what the session sends on it.
fn reconnect(s: &mut Session, token: Option<&str>) -> Vec<Value> {
    s.disconnected();
    s.connected(token);
    sent(s)
}

fn events(s: &mut Session) -> Vec<RoomEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The offsets of the message events, in order.
fn offsets(events: &[RoomEvent]) -> Vec<u64> {
    events.iter().filter_map(|e| if let RoomEvent::Message { offset, .. } = e { *offset } else { None }).collect()
}

fn message(offset: u64) -> Value {
    json!({"op": "message", "room": "r", "offset": offset, "from": {"client": "x", "user": null}, "data": offset})
}

fn push(s: &mut Session, v: Value) {
    s.on_text(&v.to_string());
}

fn reply(s: &mut Session, id: &Value, ok: Value) {
    push(s, json!({"id": id, "ok": ok}));
}

fn joined(epoch: &str, offset: u64, recovered: bool, missed: Vec<Value>) -> Value {
    json!({"room": "r", "epoch": epoch, "offset": offset, "members": 2, "recovered": recovered, "missed": missed})
}

/// Connects, joins "r" without history and answers at (epoch e1, offset 10).
fn joined_at_10() -> Session {
    let mut s = session();
    s.join("r", JoinOptions::default());
    s.connected(None);
    let join = sent(&mut s).remove(0);
    assert_eq!(join["op"], "join");
    assert!(join.get("since").is_none(), "the first join has no since: {join}");
    reply(&mut s, &join["id"], joined("e1", 10, false, vec![]));
    assert_eq!(s.position("r"), Some(("e1", 10)));
    events(&mut s);
    s
}

#[test]
fn live_messages_are_delivered_once_each_in_order() {
    let mut s = joined_at_10();
    for o in [11, 12, 12, 11, 13] {
        push(&mut s, message(o));
    }
    assert_eq!(offsets(&events(&mut s)), [11, 12, 13]);
    // Ephemeral messages have no offset and are always delivered.
    push(&mut s, json!({"op": "message", "room": "r", "from": {}, "data": 1}));
    assert!(matches!(events(&mut s)[..], [RoomEvent::Message { offset: None, .. }]));
}

#[test]
fn a_rejoin_sends_since_and_delivers_missed_before_the_live_messages_held_meanwhile() {
    let mut s = joined_at_10();
    push(&mut s, message(11));
    let join = reconnect(&mut s, None).remove(0);
    assert_eq!(join["since"], json!({"epoch": "e1", "offset": 11}));
    // Live pushes that beat the join's reply wait for it.
    push(&mut s, message(14));
    push(&mut s, message(15));
    assert_eq!(offsets(&events(&mut s)), [11]);
    reply(&mut s, &join["id"], joined("e1", 13, true, vec![message(12), message(13), message(14)]));
    let evs = events(&mut s);
    assert!(matches!(&evs[0], RoomEvent::Joined { recovered: true, first: false, .. }), "{evs:?}");
    assert_eq!(offsets(&evs), [12, 13, 14, 15], "missed, then held, 14 once");
    assert_eq!(s.position("r"), Some(("e1", 15)));
}

#[test]
fn a_rejoin_not_recovered_reloads_history_and_reports_a_reset() {
    let mut s = joined_at_10();
    let join = reconnect(&mut s, None).remove(0);
    reply(&mut s, &join["id"], joined("e2", 3, false, vec![]));
    let history = sent(&mut s).remove(0);
    assert_eq!((history["op"].as_str(), history["limit"].as_u64()), (Some("history"), Some(100)));
    push(&mut s, message(3)); // covered by the history: dropped after it
    push(&mut s, message(4));
    reply(
        &mut s,
        &history["id"],
        json!({"room": "r", "epoch": "e2", "offset": 3, "messages": [message(2), message(3)]}),
    );
    let evs = events(&mut s);
    let reset = evs.iter().find(|e| matches!(e, RoomEvent::Reset { .. })).expect("a reset");
    assert_eq!(
        reset,
        &RoomEvent::Reset {
            room: "r".into(),
            reason: ResetReason::NotRecovered,
            epoch: "e2".into(),
            offset: 3,
            previous_epoch: Some("e1".into()),
            previous_offset: 10,
            messages: vec![message(2), message(3)],
        }
    );
    assert_eq!(offsets(&evs), [4], "held pushes above the history's offset follow it");
}

#[test]
fn the_first_join_with_history_asks_for_that_many() {
    let mut s = session();
    s.join("r", JoinOptions { presence: true, history: 20 });
    s.connected(Some("tok"));
    let out = sent(&mut s);
    assert_eq!((out[0]["op"].as_str(), out[0]["token"].as_str()), (Some("auth"), Some("tok")), "auth goes first");
    assert_eq!(out[1]["presence"], true);
    reply(&mut s, &out[1]["id"], joined("e1", 7, false, vec![]));
    let history = sent(&mut s).remove(0);
    assert_eq!(history["limit"], 20);
    reply(&mut s, &history["id"], json!({"room": "r", "epoch": "e1", "offset": 7, "messages": [message(7)]}));
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, RoomEvent::Reset { reason: ResetReason::Join, previous_epoch: None, .. })));
}

#[test]
fn publishes_wait_for_the_join_and_go_again_with_their_key_after_a_drop() {
    let mut s = session();
    s.join("r", JoinOptions::default());
    let seq = s.publish("r", json!("offline")).unwrap();
    s.connected(None);
    let out = sent(&mut s);
    assert_eq!(out.len(), 1, "only the join before its reply: {out:?}");
    reply(&mut s, &out[0]["id"], joined("e1", 0, false, vec![]));
    let publish = sent(&mut s).remove(0);
    assert_eq!((publish["data"].as_str(), publish["key"].as_str()), (Some("offline"), Some("k-1")));
    // The reply is lost in a drop: the same key goes again after the rejoin.
    let join = reconnect(&mut s, None).remove(0);
    reply(&mut s, &join["id"], joined("e1", 1, true, vec![message(1)]));
    let again = sent(&mut s).remove(0);
    assert_eq!(again["key"], "k-1");
    reply(&mut s, &again["id"], json!({"room": "r", "offset": 1, "duplicate": true}));
    let evs = events(&mut s);
    assert!(evs.contains(&RoomEvent::Published { seq, room: "r".into(), offset: Some(1), duplicate: true }));
    assert_eq!(s.queued_publishes(), 0);
}

#[test]
fn the_publish_queue_is_bounded() {
    let mut s = session();
    s.join("r", JoinOptions::default());
    for _ in 0..3 {
        s.publish("r", json!(1)).unwrap();
    }
    assert_eq!(s.publish("r", json!(1)), Err(QueueFull));
}

#[test]
fn a_refused_token_breaks_the_connection_but_a_rate_limit_does_not() {
    let mut s = session();
    s.connected(Some("tok"));
    let auth = sent(&mut s).remove(0);
    // A first `auth` answered 429 (too many connections for the user): try again later,
    // with the same token.
    push(&mut s, json!({"id": auth["id"], "error": {"code": 429, "message": "too many connections for this user"}}));
    assert!(s.take_broken().is_some() && !s.token_refused());
    let auth = reconnect(&mut s, Some("tok")).remove(0);
    reply(&mut s, &auth["id"], json!({"user": "ann"}));
    // A refresh answered 429 leaves the connection as it is.
    s.refresh_token("tok1");
    let auth = sent(&mut s).remove(0);
    push(&mut s, json!({"id": auth["id"], "error": {"code": 429, "message": "auth rate limit exceeded"}}));
    assert!(s.take_broken().is_none() && !s.token_refused());
    s.refresh_token("tok2");
    let auth = sent(&mut s).remove(0);
    push(&mut s, json!({"id": auth["id"], "error": {"code": 401, "message": "invalid token: expired"}}));
    assert!(s.token_refused());
    assert!(s.take_broken().is_some_and(|why| why.contains("refused the token")));
}

#[test]
fn too_many_pushes_held_while_syncing_break_the_connection_instead_of_dropping_one() {
    let mut s = joined_at_10();
    let join = reconnect(&mut s, None).remove(0);
    for o in 11..=15 {
        push(&mut s, message(o));
    }
    assert!(s.take_broken().is_some(), "the fifth held push is over the bound of 4");
    // The next connection recovers them all from `since`.
    let rejoin = reconnect(&mut s, None).remove(0);
    assert_ne!(rejoin["id"], join["id"]);
    assert_eq!(rejoin["since"]["offset"], 10);
}

#[test]
fn a_refused_join_drops_the_room_and_its_publishes() {
    let mut s = session();
    s.join("r", JoinOptions::default());
    let seq = s.publish("r", json!(1)).unwrap();
    s.connected(None);
    let join = sent(&mut s).remove(0);
    push(&mut s, json!({"id": join["id"], "error": {"code": 403, "message": "not allowed to join this room"}}));
    let evs = events(&mut s);
    assert!(evs.iter().any(|e| matches!(e, RoomEvent::PublishRefused { seq: s2, code: 403, .. } if *s2 == seq)));
    assert!(evs.iter().any(|e| matches!(e, RoomEvent::JoinRefused { code: 403, .. })));
    assert_eq!(s.position("r"), None);
    assert!(reconnect(&mut s, None).is_empty(), "no rejoin of a refused room");
}

#[test]
fn a_lone_surrogate_in_data_is_replaced_not_lost() {
    let mut s = joined_at_10();
    // As JavaScript's JSON.stringify writes a lone surrogate; the server relays it as is.
    s.on_text(r#"{"op":"message","room":"r","offset":11,"from":{"client":"x","user":null},"data":"a\ud800b"}"#);
    let evs = events(&mut s);
    assert_eq!(offsets(&evs), [11]);
    let RoomEvent::Message { message, .. } = &evs[0] else { panic!("{evs:?}") };
    assert_eq!(message["data"], "a\u{fffd}b");
    assert_eq!(
        replace_lone_surrogates(r#""\ud83d\ude00 \\ud800 \udc00 é\u00e9""#),
        r#""\ud83d\ude00 \\ud800 \ufffd é\u00e9""#
    );
    for odd in ["\\", "\\u", "\\ud8", "é\\é", "\\\u{e9}", "\\ud800\\u", "\\ud800\\udc0"] {
        let _ = replace_lone_surrogates(odd); // no panic, whatever comes
    }
}

#[test]
fn an_offset_that_skips_breaks_the_connection_so_that_since_recovers_it() {
    let mut s = joined_at_10();
    push(&mut s, message(12));
    assert!(offsets(&events(&mut s)).is_empty(), "12 is not delivered before 11");
    assert!(s.take_broken().is_some_and(|why| why.contains("gap")));
    assert_eq!(reconnect(&mut s, None)[0]["since"]["offset"], 10);
}

#[test]
fn a_join_that_may_pass_later_is_retried_and_one_that_stands_drops_the_room() {
    let mut s = joined_at_10();
    let join = reconnect(&mut s, None).remove(0);
    push(&mut s, json!({"id": join["id"], "error": {"code": 503, "message": "backplane unavailable"}}));
    assert!(s.take_broken().is_some(), "503: made again after the backoff");
    assert_eq!(s.position("r"), Some(("e1", 10)), "the room stays");
    let join = reconnect(&mut s, None).remove(0);
    push(&mut s, json!({"id": join["id"], "error": {"code": 403, "message": "not allowed to join this room"}}));
    assert_eq!(s.position("r"), None, "403 stands: the room is dropped");
}

#[test]
fn publishes_go_out_within_the_window_and_wait_after_a_429() {
    let mut s = joined_at_10();
    let seqs: Vec<u64> = (0..3).map(|n| s.publish("r", json!(n)).unwrap()).collect();
    let out = sent(&mut s);
    assert_eq!(out.len(), 2, "a window of 2");
    push(&mut s, json!({"id": out[0]["id"], "error": {"code": 429, "message": "publish rate limit exceeded"}}));
    assert!(s.publishes_paused());
    reply(&mut s, &out[1]["id"], json!({"room": "r", "offset": 11}));
    assert!(sent(&mut s).is_empty(), "nothing goes while paused");
    assert!(!events(&mut s).iter().any(|e| matches!(e, RoomEvent::PublishRefused { .. })), "a 429 refuses nothing");
    s.resume_publishes();
    let again = sent(&mut s);
    assert_eq!(again.len(), 2);
    assert_eq!(
        (again[0]["key"].as_str(), again[1]["data"].as_i64()),
        (Some(format!("k-{}", seqs[0]).as_str()), Some(2))
    );
}

#[test]
fn leaving_keeps_the_publishes_already_sent_until_their_reply() {
    let mut s = joined_at_10();
    let seq = s.publish("r", json!("x")).unwrap();
    let publish = sent(&mut s).remove(0);
    s.leave("r");
    assert!(!events(&mut s).iter().any(|e| matches!(e, RoomEvent::PublishRefused { .. })));
    reply(&mut s, &publish["id"], json!({"room": "r", "offset": 11}));
    assert!(events(&mut s).contains(&RoomEvent::Published {
        seq,
        room: "r".into(),
        offset: Some(11),
        duplicate: false
    }));
}

#[test]
fn a_reply_to_an_earlier_join_of_a_room_left_and_joined_again_is_ignored() {
    let mut s = session();
    s.connected(None);
    s.join("r", JoinOptions::default());
    let old = sent(&mut s).remove(0);
    s.leave("r");
    s.join("r", JoinOptions::default());
    let out = sent(&mut s);
    let new = out.iter().find(|f| f["op"] == "join").unwrap().clone();
    reply(&mut s, &old["id"], joined("e1", 5, false, vec![]));
    assert_eq!(s.position("r"), None, "the old join's reply is not this room's");
    reply(&mut s, &new["id"], joined("e1", 6, false, vec![]));
    assert_eq!(s.position("r"), Some(("e1", 6)));
}

#[test]
fn joins_behind_a_refused_auth_are_not_dropped() {
    let mut s = session();
    s.join("r", JoinOptions::default());
    s.connected(Some("tok"));
    let out = sent(&mut s);
    push(&mut s, json!({"id": out[0]["id"], "error": {"code": 429, "message": "too many connections for this user"}}));
    push(&mut s, json!({"id": out[1]["id"], "error": {"code": 401, "message": "authenticate first"}}));
    assert!(s.take_broken().is_some());
    assert_eq!(reconnect(&mut s, Some("tok"))[1]["op"], "join", "the room is joined again");
}

#[test]
fn a_reset_names_the_messages_not_delivered_before() {
    let reset = |previous_epoch: &str| RoomEvent::Reset {
        room: "r".into(),
        reason: ResetReason::NotRecovered,
        epoch: "e1".into(),
        offset: 7,
        previous_epoch: Some(previous_epoch.into()),
        previous_offset: 5,
        messages: (4..=7).map(message).collect(),
    };
    assert_eq!(reset("e1").unseen_messages(), [message(6), message(7)], "same epoch: after the offset held");
    assert_eq!(reset("e0").unseen_messages().len(), 4, "a new epoch: all of them");
    assert!(RoomEvent::Stopped { reason: String::new() }.unseen_messages().is_empty());
}

#[test]
fn a_message_to_our_user_is_its_own_event_and_leaves_the_rooms_alone() {
    let mut s = joined_at_10();
    events(&mut s);
    push(&mut s, json!({"op": "message", "user": "ann", "data": {"text": "your order shipped"}}));
    push(&mut s, message(11));
    let got = events(&mut s);
    assert!(
        matches!(&got[0], RoomEvent::UserMessage { user, data } if user == "ann" && data["text"] == "your order shipped"),
        "{got:?}"
    );
    assert_eq!(offsets(&got), [11], "the room's offsets go on");
}
