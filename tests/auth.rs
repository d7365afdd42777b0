//! Token authentication and room permissions against a real client (tungstenite), with
//! tokens signed in the test (HS256 with a shared secret; RS256 and ES256 with the test
//! keys in tests/keys/): who gets in on the upgrade (401 and its causes), the `auth` op
//! (require-auth flow, deadline, refresh, another user), expiry while connected (1008
//! "token expired"), and what a token's `rooms` claim or `--anon-rooms` allow (403).
//!
//! Every server here speaks TLS (a certificate from `support::tls`, made with rcgen), as
//! an edge server taking tokens must; every connection goes through `upgrade` (raw
//! outcome) or `connect` (a welcomed room client).

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::WebSocket;

use support::rooms::{RoomClient, PATH};
use support::tls::{server_tls, ClientStream};
use support::{TestServer, ROOM_WORKERS};
use wsedge::rooms::auth::{AuthConfig, RoomPatterns};
use wsedge::rooms::RoomsConfig;

const SECRET: &[u8] = b"an HS256 secret for the auth tests only";
const ES256_PRIVATE: &[u8] = include_bytes!("keys/es256-private.pem");
const ES256_PUBLIC: &[u8] = include_bytes!("keys/es256-public.pem");
const RS256_PRIVATE: &[u8] = include_bytes!("keys/rs256-private.pem");
const RS256_PUBLIC: &[u8] = include_bytes!("keys/rs256-public.pem");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(claims: &Value) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// Claims for `sub`, valid for `secs` from now, with `rooms` unless it is null.
fn claims(sub: &str, secs: u64, rooms: Value) -> Value {
    let mut claims = json!({"sub": sub, "exp": now() + secs});
    if !rooms.is_null() {
        claims["rooms"] = rooms;
    }
    claims
}

fn hs256_config() -> AuthConfig {
    AuthConfig::default().with_hs256_secret(SECRET).unwrap()
}

fn requiring_auth() -> AuthConfig {
    let mut config = hs256_config();
    config.require_auth = true;
    config
}

fn server_with(auth: AuthConfig, edit: impl FnOnce(&mut RoomsConfig)) -> TestServer {
    let mut rooms = RoomsConfig { auth: Some(auth), ..RoomsConfig::default() };
    edit(&mut rooms);
    let config = wsedge::server::Config { workers: ROOM_WORKERS, tls: Some(server_tls()), ..support::config() };
    TestServer::rooms_with(config, rooms)
}

fn server() -> TestServer {
    server_with(hs256_config(), |_| {})
}

/// How a client presents its token on the upgrade.
#[derive(Clone, Copy, Debug)]
enum Via {
    Query,
    Bearer,
}

/// The upgrade to `path`, with `token` presented `via`: the WebSocket, or the HTTP status
/// it was refused with.
fn upgrade(server: &TestServer, path: &str, token: Option<(&str, Via)>) -> Result<WebSocket<ClientStream>, u16> {
    let url = match token {
        Some((token, Via::Query)) => format!("{}?token={token}", server.url_at(path)),
        _ => server.url_at(path),
    };
    let mut request = url.into_client_request().unwrap();
    if let Some((token, Via::Bearer)) = token {
        request.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    }
    match tungstenite::client(request, server.stream()) {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            Ok(ws)
        }
        Err(tungstenite::handshake::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("upgrade failed otherwise: {e}"),
    }
}

/// A welcomed room client; returns it with its welcome's `user`.
fn connect(server: &TestServer, token: Option<(&str, Via)>) -> (RoomClient, Value) {
    let ws = upgrade(server, PATH, token).unwrap_or_else(|status| panic!("upgrade refused with {status}"));
    let mut client = RoomClient::without_welcome(ws);
    let welcome = client.next();
    assert_eq!(welcome["op"], "welcome", "the first frame must be the welcome: {welcome}");
    (client, welcome["user"].clone())
}

fn close_of(client: &mut RoomClient) -> (u16, String) {
    let (_, frame) = client.read_until_close();
    let frame = frame.expect("a close frame with a code");
    (u16::from(frame.code), frame.reason.to_string())
}

#[test]
fn a_token_joins_and_publishes_where_its_claim_allows_and_gets_403_elsewhere() {
    let server = server();
    let rooms = json!({"join": ["chat:*", "news"], "publish": ["chat:1"], "presence": ["chat:1"]});
    let token = hs256(&claims("alice", 60, rooms));
    let (mut alice, user) = connect(&server, Some((&token, Via::Query)));
    assert_eq!(user, "alice", "sub becomes the user");
    alice.ok(json!({"op": "join", "room": "chat:1", "presence": true}));
    alice.publish("chat:1", json!("hi"));
    let message = alice.next_message();
    assert_eq!(message["from"]["user"], "alice", "{message}");
    let presence = alice.ok(json!({"op": "presence", "room": "chat:1"}));
    assert_eq!(presence["members"][0]["user"], "alice");
    alice.join("news");
    for denied in [
        json!({"op": "join", "room": "sport"}),
        json!({"op": "join", "room": "chat:2", "presence": true}),
        json!({"op": "publish", "room": "news", "data": 1}),
        json!({"op": "presence", "room": "news"}),
        json!({"op": "history", "room": "sport"}),
    ] {
        assert_eq!(alice.error(denied.clone()), 403, "{denied}");
    }
    // Denied requests leave the connection open and change nothing.
    alice.join("chat:2");
    alice.expect_nothing();
    assert_eq!(alice.error(json!({"op": "publish", "room": "chat:2", "data": 1})), 403);
    // Others see the user too.
    let (mut bob, _) = connect(&server, Some((&hs256(&claims("bob", 60, Value::Null)), Via::Bearer)));
    bob.join("chat:1");
    alice.publish("chat:1", json!(2));
    assert_eq!(bob.next_message()["from"]["user"], "alice");
}

#[test]
fn invalid_tokens_on_the_upgrade_get_401_and_no_upgrade() {
    let server = server_with(
        {
            let mut config = hs256_config();
            config.audience = vec!["wsedge".into()];
            config
        },
        |_| {},
    );
    let valid = json!({"sub": "a", "exp": now() + 60, "aud": "wsedge"});
    let forged = encode(&Header::new(Algorithm::HS256), &valid, &EncodingKey::from_secret(b"a guess")).unwrap();
    // `alg: none` cannot be written with jsonwebtoken: by hand, with an empty signature.
    let b64 = |v: &Value| {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&valid));
    let other_algorithm =
        encode(&Header::new(Algorithm::ES256), &valid, &EncodingKey::from_ec_pem(ES256_PRIVATE).unwrap()).unwrap();
    let hs512 = encode(&Header::new(Algorithm::HS512), &valid, &EncodingKey::from_secret(SECRET)).unwrap();
    let expired = hs256(&json!({"sub": "a", "exp": now() - 10, "aud": "wsedge"}));
    let early = hs256(&json!({"sub": "a", "exp": now() + 60, "nbf": now() + 30, "aud": "wsedge"}));
    let audience = hs256(&json!({"sub": "a", "exp": now() + 60, "aud": "elsewhere"}));
    for via in [Via::Query, Via::Bearer] {
        for (what, token) in [
            ("forged signature", &forged),
            ("alg none", &unsigned),
            ("ES256 to an HS256 server", &other_algorithm),
            ("HS512", &hs512),
            ("expired", &expired),
            ("not yet valid", &early),
            ("wrong audience", &audience),
            ("garbage", &"not.a.token".to_owned()),
        ] {
            assert_eq!(upgrade(&server, PATH, Some((token, via))).err(), Some(401), "{what} via {via:?}");
        }
        assert!(upgrade(&server, PATH, Some((&hs256(&valid), via))).is_ok(), "the valid one via {via:?}");
    }
    // The refusal says why and how to authenticate, never echoing the token.
    let mut stream = server.stream();
    let request = format!(
        "GET /ws?token={expired} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        support::KEY
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let reply = support::read_response(&mut stream);
    assert_eq!(reply.head.status, 401);
    assert_eq!(reply.head.header("WWW-Authenticate"), Some("Bearer error=\"invalid_token\""));
    assert_eq!(reply.text(), "invalid token: expired\n");
}

#[test]
fn rs256_and_es256_tokens_verify_with_a_public_key() {
    let claims = claims("carol", 60, Value::Null);
    for (public, private, alg) in
        [(RS256_PUBLIC, RS256_PRIVATE, Algorithm::RS256), (ES256_PUBLIC, ES256_PRIVATE, Algorithm::ES256)]
    {
        let server = server_with(AuthConfig::default().with_public_key_pem(public).unwrap(), |_| {});
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private).unwrap(),
            _ => EncodingKey::from_ec_pem(private).unwrap(),
        };
        let token = encode(&Header::new(alg), &claims, &key).unwrap();
        let (_, user) = connect(&server, Some((&token, Via::Bearer)));
        assert_eq!(user, "carol", "{alg:?}");
        // An HMAC token signed with the public key as its secret (key confusion): refused.
        let confused = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(public)).unwrap();
        assert_eq!(upgrade(&server, PATH, Some((&confused, Via::Bearer))).err(), Some(401), "{alg:?}");
    }
}

#[test]
fn require_auth_welcomes_only_after_a_valid_auth_op() {
    let server = server_with(requiring_auth(), |_| {});
    let ws = upgrade(&server, PATH, None).expect("the upgrade succeeds without a token");
    let mut client = RoomClient::without_welcome(ws);
    assert_eq!(client.error(json!({"op": "join", "room": "r"})), 401, "requests before auth");
    assert_eq!(client.error(json!({"op": "ping"})), 401);
    let forged =
        encode(&Header::new(Algorithm::HS256), &claims("dave", 60, Value::Null), &EncodingKey::from_secret(b"nope"))
            .unwrap();
    assert_eq!(client.error(json!({"op": "auth", "token": forged})), 401);
    let reply = client.request(json!({"op": "auth", "token": hs256(&claims("dave", 60, Value::Null))}));
    assert_eq!(reply["ok"], json!({"user": "dave"}), "{reply}");
    let welcome = client.next();
    assert_eq!(welcome["op"], "welcome", "the welcome right after the auth reply: {welcome}");
    assert_eq!(welcome["user"], "dave");
    assert!(welcome["client"].is_string());
    client.join("r");
    client.expect_nothing();
    // A token on the upgrade skips the step.
    let (_, user) = connect(&server, Some((&hs256(&claims("erin", 60, Value::Null)), Via::Query)));
    assert_eq!(user, "erin");
}

#[test]
fn require_auth_closes_1008_when_no_valid_auth_comes_in_time() {
    let timeout = Duration::from_secs(1);
    let server = server_with(requiring_auth(), |r| r.auth_timeout = timeout);
    let start = Instant::now();
    let mut client = RoomClient::without_welcome(upgrade(&server, PATH, None).unwrap());
    assert_eq!(client.error(json!({"op": "auth", "token": "not.a.token"})), 401);
    let (code, reason) = close_of(&mut client);
    assert_eq!((code, reason.as_str()), (1008, "authentication required"));
    let took = start.elapsed();
    // The deadline is checked once a tick (1 s).
    assert!(took >= timeout && took < timeout + Duration::from_secs(3), "closed after {took:?}");
}

#[test]
fn an_expired_token_closes_the_connection_with_1008_token_expired() {
    let server = server();
    let exp = now() + 2;
    let token = hs256(&json!({"sub": "frank", "exp": exp}));
    let (mut client, _) = connect(&server, Some((&token, Via::Query)));
    client.join("r");
    let (code, reason) = close_of(&mut client);
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(now() > exp, "closed at {} before the token's exp {exp}", now());
    assert!(now() <= exp + 3, "closed at {}, long after exp {exp}", now());
}

#[test]
fn auth_with_a_newer_token_extends_the_session_and_another_user_gets_403() {
    let server = server();
    // That the session outlives the first token's exp is a unit test that drives time
    // (rooms::sessions); here: the refresh is accepted, another user's token is not.
    let first_exp = now() + 30;
    let (mut client, _) = connect(&server, Some((&hs256(&json!({"sub": "gina", "exp": first_exp})), Via::Bearer)));
    client.join("r");
    let reply = client.request(json!({"op": "auth", "token": hs256(&claims("gina", 60, Value::Null))}));
    assert_eq!(reply["ok"], json!({"user": "gina"}), "{reply}");
    let other = client.request(json!({"op": "auth", "token": hs256(&claims("mallory", 60, Value::Null))}));
    assert_eq!(other["error"]["code"], 403, "{other}");
    // Still open, still gina, no second welcome.
    client.publish("r", json!("still here"));
    let message = client.next_message();
    assert_eq!(message["from"]["user"], "gina");
    client.expect_nothing();
}

#[test]
fn a_refresh_may_not_narrow_the_rooms_a_session_is_in_and_auth_is_rate_limited() {
    let server = server_with(hs256_config(), |rooms| rooms.auth_per_minute = 4);
    let wide = json!({"join": ["team:*", "news"], "presence": ["team:*"]});
    let (mut client, _) = connect(&server, Some((&hs256(&claims("ivy", 60, wide.clone())), Via::Query)));
    client.ok(json!({"op": "join", "room": "team:a", "presence": true}));
    // Without team:a, or without its presence (which the session may be watching): 403,
    // and the old grant stays.
    for narrower in [json!({"join": ["news"]}), json!({"join": ["team:*"]})] {
        let reply = client.request(json!({"op": "auth", "token": hs256(&claims("ivy", 60, narrower.clone()))}));
        assert_eq!(reply["error"]["code"], 403, "{narrower}: {reply}");
    }
    client.join("news");
    // The same rooms, or wider: accepted.
    let reply = client.request(json!({"op": "auth", "token": hs256(&claims("ivy", 120, wide))}));
    assert_eq!(reply["ok"], json!({"user": "ivy"}), "{reply}");
    // Three `auth` requests so far (the upgrade's token is not one); a burst of 4: the 4th
    // is verified (and refused), the 5th gets 429 unverified.
    let reply = client.request(json!({"op": "auth", "token": "not even a token"}));
    assert_eq!(reply["error"]["code"], 401, "{reply}");
    let reply = client.request(json!({"op": "auth", "token": "not even a token"}));
    assert_eq!(reply["error"]["code"], 429, "{reply}");
    client.expect_nothing();
}

#[test]
fn the_auth_op_names_an_anonymous_connection_that_is_in_no_rooms() {
    let server = server();
    let (mut client, user) = connect(&server, None);
    assert_eq!(user, Value::Null);
    let token = hs256(&claims("hank", 60, json!({"join": ["team"], "publish": ["team"]})));
    assert_eq!(client.ok(json!({"op": "auth", "token": token})), json!({"user": "hank"}));
    client.expect_nothing(); // no second welcome
    assert_eq!(client.error(json!({"op": "join", "room": "lobby"})), 403, "the token's rooms apply now");
    client.join("team");
    client.publish("team", json!(1));
    assert_eq!(client.next_message()["from"]["user"], "hank");
    // Once in rooms, an anonymous connection cannot become someone.
    let (mut anon, _) = connect(&server, None);
    anon.join("lobby");
    assert_eq!(anon.error(json!({"op": "auth", "token": hs256(&claims("ivy", 60, Value::Null))})), 403);
}

#[test]
fn anonymous_connections_may_do_what_anon_rooms_allow() {
    // Default `*`: everything, as without authentication.
    let server = server();
    let (mut anon, _) = connect(&server, None);
    anon.ok(json!({"op": "join", "room": "anything", "presence": true}));
    anon.publish("anything", json!(1));
    // Narrowed.
    let server = server_with(hs256_config(), |r| r.anon_rooms = RoomPatterns::new(&["public:*", "faq"]));
    let (mut anon, user) = connect(&server, None);
    assert_eq!(user, Value::Null);
    anon.join("public:1");
    anon.publish("public:1", json!("hello"));
    anon.next_message();
    anon.join("faq");
    assert_eq!(anon.error(json!({"op": "join", "room": "private"})), 403);
    assert_eq!(anon.error(json!({"op": "join", "room": "faq2"})), 403);
    // A token's own claim is not narrowed by the anonymous default.
    let (mut user, _) = connect(&server, Some((&hs256(&claims("jo", 60, Value::Null)), Via::Query)));
    user.join("private");
    // Without authentication configured, anon-rooms narrows everyone.
    let server = TestServer::rooms(RoomsConfig { anon_rooms: RoomPatterns::new(&["open"]), ..RoomsConfig::default() });
    let (mut anon, _) = connect(&server, None);
    anon.join("open");
    assert_eq!(anon.error(json!({"op": "join", "room": "closed"})), 403);
}

#[test]
fn relay_upgrades_check_the_token_and_the_room() {
    let server = server_with(requiring_auth(), |_| {});
    let token = hs256(&claims("kim", 60, json!({"join": ["a", "b"], "publish": ["a"]})));
    assert_eq!(upgrade(&server, "/relay/a", None).err(), Some(401), "no auth op on the relay");
    // No token at all: a bare challenge (RFC 6750 §3.1), the body says how to send one.
    let mut stream = server.stream();
    let request = support::upgrade_request("x").replace("GET / ", "GET /relay/a ");
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let reply = support::read_response(&mut stream);
    assert_eq!((reply.head.status, reply.head.header("WWW-Authenticate")), (401, Some("Bearer")));
    assert_eq!(reply.text(), "a token is required (Authorization: Bearer, or ?token=)\n");
    assert_eq!(upgrade(&server, "/relay/a", Some(("x.y.z", Via::Query))).err(), Some(401));
    assert_eq!(upgrade(&server, "/relay/c", Some((&token, Via::Query))).err(), Some(403));
    let mut a = upgrade(&server, "/relay/a", Some((&token, Via::Bearer))).expect("may join a");
    a.send(tungstenite::Message::text("hi")).unwrap();
    assert_eq!(a.read().unwrap(), tungstenite::Message::text("hi"), "relayed back");
    let mut b = upgrade(&server, "/relay/b", Some((&token, Via::Bearer))).expect("may join b");
    b.send(tungstenite::Message::text("hi")).unwrap();
    match b.read().unwrap() {
        tungstenite::Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("a publish without permission: {other:?}"),
    }
}

/// Issue 18: a token's `info` claim (profile data for the app) travels with its user:
/// in the welcome (on the upgrade and after `auth`), presence entries and events, and every
/// message's `from`; on every engine (the Redis engine stores it in presence entries).
#[test]
fn the_info_claim_shows_wherever_the_user_does() {
    let server = server_with(hs256_config(), |_| {});
    let info = json!({"name": "Ann Lee", "avatar": "/a/ann.png"});
    let mut with_info = claims("ann", 60, Value::Null);
    with_info["info"] = info.clone();
    let ws = upgrade(&server, PATH, Some((&hs256(&with_info), Via::Bearer))).expect("upgrade");
    let mut ann = RoomClient::without_welcome(ws);
    let welcome = ann.next();
    assert_eq!((welcome["user"].clone(), welcome["info"].clone()), (json!("ann"), info.clone()), "{welcome}");

    let (mut bob, _) = connect(&server, Some((&hs256(&claims("bob", 60, Value::Null)), Via::Query)));
    bob.ok(json!({"op": "join", "room": "r", "presence": true}));
    ann.join("r");
    let event = bob.next();
    assert_eq!((event["op"].clone(), event["member"]["info"].clone()), (json!("join"), info.clone()), "{event}");
    let members = bob.ok(json!({"op": "presence", "room": "r"}))["members"].clone();
    let entry = members.as_array().unwrap().iter().find(|m| m["user"] == "ann").cloned().expect("ann is listed");
    assert_eq!(entry["info"], info, "{members}");
    let bob_entry = members.as_array().unwrap().iter().find(|m| m["user"] == "bob").cloned().unwrap();
    assert!(bob_entry.get("info").is_none(), "no info claim, no info field: {bob_entry}");
    ann.publish("r", json!("hi"));
    assert_eq!(bob.next_message()["from"]["info"], info);

    // After `auth` on a server that requires it: in the welcome that follows the reply.
    let server = server_with(requiring_auth(), |_| {});
    let mut late = RoomClient::without_welcome(upgrade(&server, PATH, None).expect("upgrade"));
    late.ok(json!({"op": "auth", "token": hs256(&with_info)}));
    let welcome = late.next();
    assert_eq!(welcome["info"], info, "{welcome}");

    // An info that is not an object, or over 1 KiB, makes the token invalid, saying why.
    let mut big = claims("ann", 60, Value::Null);
    big["info"] = json!({"bio": "x".repeat(1100)});
    let mut refused = RoomClient::without_welcome(upgrade(&server, PATH, None).expect("upgrade"));
    let reply = refused.request(json!({"op": "auth", "token": hs256(&big)}));
    assert_eq!(reply["error"]["code"], 401, "{reply}");
    assert_eq!(reply["error"]["message"], "invalid token: info must be a JSON object of at most 1024 bytes");
    let mut not_object = claims("ann", 60, Value::Null);
    not_object["info"] = json!("Ann");
    assert_eq!(upgrade(&server, PATH, Some((&hs256(&not_object), Via::Bearer))).err(), Some(401));
}

/// Issue 18: `max_conns_per_user` counts a user's connections across the workers: beyond
/// it, HTTP 429 on the upgrade and error 429 to an `auth` naming that user; a connection
/// that closes frees its place; other users are not affected.
#[test]
fn a_user_beyond_max_conns_per_user_gets_429() {
    let server = server_with(hs256_config(), |rooms| rooms.max_conns_per_user = 3);
    let ann = hs256(&claims("ann", 60, Value::Null));
    let mut open: Vec<RoomClient> = (0..3).map(|_| connect(&server, Some((&ann, Via::Bearer))).0).collect();
    assert_eq!(upgrade(&server, PATH, Some((&ann, Via::Query))).err(), Some(429), "a fourth connection of ann");
    let (_bob, user) = connect(&server, Some((&hs256(&claims("bob", 60, Value::Null)), Via::Bearer)));
    assert_eq!(user, "bob");
    // An anonymous connection naming ann with `auth`.
    let (mut anon, _) = connect(&server, None);
    let reply = anon.request(json!({"op": "auth", "token": ann}));
    assert_eq!(reply["error"]["code"], 429, "{reply}");
    assert_eq!(reply["error"]["message"], "too many connections for this user");
    // A refresh on one of ann's connections is not a new connection.
    assert_eq!(open[0].request(json!({"op": "auth", "token": ann}))["ok"]["user"], "ann");
    // Closing one frees its place (once the server has seen the close).
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match upgrade(&server, PATH, Some((&ann, Via::Bearer))) {
            Ok(_) => break,
            Err(429) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(status) => panic!("the freed place never came back: {status}"),
        }
    }
}
