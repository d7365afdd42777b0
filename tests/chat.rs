//! `wsedge chat`, the real binary, against a TLS room server with token authentication:
//! it trusts `--ca`, authenticates with `--token` (or `WSEDGE_TOKEN`) and publishes what
//! is typed as the token's user; a refused token, a `ws://` URL on a TLS port, a `wss://`
//! URL without trust, a CA certificate served as the server's own and a server requiring a
//! token chat does not have each end it with a message saying why. On joining it prints
//! the room's last messages; it reconnects by itself after a cut link (printing what it
//! missed, once each) and after a server restart (saying the room's history restarted).
//! And the library client it runs on (`wsedge::client::Client`): its read timeout over TLS.
//!
//! Every wait is bounded: the chat's output is read with a deadline and the process is
//! killed if it outlives one.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use support::process::{self, Running};
use support::proxy::Proxy;
use support::rooms::{RoomClient, PATH};
use support::tls::{fixture, server_tls};
use support::{TestServer, IO_TIMEOUT, ROOM_WORKERS};
use wsedge::client::Client;
use wsedge::proto::Event;
use wsedge::rooms::auth::AuthConfig;
use wsedge::rooms::RoomsConfig;
use wsedge::server::TlsConfig;
use wsedge::wire::SUBPROTOCOL;

const SECRET: &[u8] = b"an HS256 secret for the chat tests only";

/// A TLS room server taking HS256 tokens signed with [`SECRET`] (anonymous clients too).
fn server() -> TestServer {
    let auth = AuthConfig::default().with_hs256_secret(SECRET).unwrap();
    let rooms = RoomsConfig { auth: Some(auth), ..RoomsConfig::default() };
    let config = wsedge::server::Config { workers: ROOM_WORKERS, tls: Some(server_tls()), ..support::config() };
    TestServer::rooms_with(config, rooms)
}

/// A token for `sub` whose `exp` is `exp_from_now` seconds away (negative: expired).
fn token(sub: &str, exp_from_now: i64) -> String {
    token_for_rooms(sub, exp_from_now, serde_json::Value::Null)
}

/// [`token`] with a `rooms` claim (null: none, every room).
fn token_for_rooms(sub: &str, exp_from_now: i64, rooms: serde_json::Value) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut claims = json!({"sub": sub, "exp": now + exp_from_now});
    if !rooms.is_null() {
        claims["rooms"] = rooms;
    }
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// The test CA as a file for `--ca`, named for the test.
fn ca_file(test: &str) -> PathBuf {
    pem_file(test, &fixture().ca_pem())
}

/// `pem` in a temporary file named for the test.
fn pem_file(test: &str, pem: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wsedge-chat-{}-{test}.pem", std::process::id()));
    std::fs::write(&path, pem).unwrap();
    path
}

/// The next message push `observer` did not publish itself (its own come back to it too).
fn next_from_others(observer: &mut RoomClient) -> Value {
    loop {
        let message = observer.next_message();
        if message["from"]["client"] != observer.id.as_str() {
            return message;
        }
    }
}

/// A plaintext room server, anonymous clients welcome.
fn plain_server() -> TestServer {
    TestServer::rooms(RoomsConfig::default())
}

/// A running `wsedge chat`: its stdin, and its stdout and stderr lines as they come.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// Lines read while waiting for another one, not yet matched by [`Chat::expect_line`].
    unmatched: Vec<String>,
}

impl Chat {
    /// Starts `wsedge chat ARGS` with `env` set (and no `WSEDGE_TOKEN` nor system-root
    /// overrides of the caller's).
    fn start(args: &[&str], env: &[(&str, &str)]) -> Chat {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsedge"));
        command.arg("chat").args(args);
        for name in ["WSEDGE_TOKEN", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsedge chat");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (prefix, pipe) in [("", Box::new(stdout) as Box<dyn std::io::Read + Send>), ("stderr: ", Box::new(stderr))]
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(format!("{prefix}{line}"));
                }
            });
        }
        let stdin = child.stdin.take();
        Chat { child, stdin, lines, seen: Vec::new(), unmatched: Vec::new() }
    }

    /// Waits up to [`IO_TIMEOUT`] for a line containing `text` (stderr lines start with
    /// `stderr: `); returns it. A line that came earlier but was not matched yet counts:
    /// stdout and stderr are separate pipes, so their lines may arrive in either order.
    fn expect_line(&mut self, text: &str) -> String {
        if let Some(at) = self.unmatched.iter().position(|line| line.contains(text)) {
            return self.unmatched.remove(at);
        }
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                    self.unmatched.push(line);
                }
                Err(_) => panic!("no line with {text:?} within {IO_TIMEOUT:?}; chat printed {:#?}", self.seen),
            }
        }
    }

    /// How many lines seen so far end with `text`.
    fn count_ending(&self, text: &str) -> usize {
        self.seen.iter().filter(|line| line.ends_with(text)).count()
    }

    /// Types `line` and Enter.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to chat's stdin");
        stdin.flush().unwrap();
    }

    /// Ends stdin (Ctrl-D).
    fn end_input(&mut self) {
        self.stdin = None;
    }

    /// Its exit status, waiting up to [`IO_TIMEOUT`] (then it is killed and the test fails).
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for chat") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("chat still running after {IO_TIMEOUT:?}; it printed {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn chat_over_wss_with_a_token_publishes_as_the_tokens_user() {
    let server = server();
    let mut observer = RoomClient::connect(&server);
    observer.ok(json!({"op": "join", "room": "r", "presence": true}));
    let ca = ca_file("publishes");
    let url = server.url_at(PATH);
    let token = token("alice", 600);
    let mut chat = Chat::start(&["--url", &url, "--ca", ca.to_str().unwrap(), "--token", &token, "--room", "r"], &[]);
    chat.expect_line("* authenticated as alice");
    chat.expect_line("* joined r (2 members)");
    let joined = observer.next();
    assert_eq!((&joined["op"], &joined["member"]["user"]), (&json!("join"), &json!("alice")), "{joined}");

    chat.type_line("hello from the terminal");
    let message = observer.next_message();
    assert_eq!(message["room"], "r");
    assert_eq!(message["from"]["user"], "alice", "{message}");
    assert_eq!(message["data"], json!({"text": "hello from the terminal"}));
    chat.expect_line("alice: hello from the terminal");

    // The other way, after chat has sat in its read timeout over TLS many times.
    std::thread::sleep(Duration::from_millis(300));
    observer.publish("r", json!({"text": "hi alice"}));
    let line = chat.expect_line("hi alice");
    assert!(line.contains(&observer.id), "an anonymous sender is shown by its client id: {line}");

    chat.end_input();
    assert!(chat.exit_status().success(), "chat printed {:#?}", chat.seen);
    // Skipping the observer's own message, kept while it waited for the publish reply.
    let left = std::iter::repeat_with(|| observer.next()).find(|v| v["op"] != "message").unwrap();
    assert_eq!((&left["op"], &left["member"]["user"]), (&json!("leave"), &json!("alice")), "{left}");
    let _ = std::fs::remove_file(ca);
}

#[test]
fn a_refused_token_prints_the_401_and_ends_chat() {
    let server = server();
    let ca = ca_file("refused");
    let url = server.url_at(PATH);
    let expired = token("alice", -60);
    // The token from the environment; stdin stays open: the refusal alone ends chat.
    let mut chat = Chat::start(&["--url", &url, "--ca", ca.to_str().unwrap()], &[("WSEDGE_TOKEN", &expired)]);
    chat.expect_line("! error 401: invalid token: expired");
    chat.expect_line("stderr: chat: authentication failed");
    assert!(!chat.exit_status().success());
    assert!(!chat.seen.iter().any(|line| line.contains("* joined")), "no join after a refused token: {:#?}", chat.seen);
    let _ = std::fs::remove_file(ca);
}

#[test]
fn a_token_without_presence_joins_quietly_and_a_forbidden_room_ends_chat() {
    let server = server();
    let ca = ca_file("quiet");
    let url = server.url_at(PATH);
    let token = token_for_rooms("bo", 600, json!({"join": ["r"], "publish": ["r"]}));
    let args = |room: &'static str| ["--url", &url, "--ca", ca.to_str().unwrap(), "--token", &token, "--room", room];
    let mut chat = Chat::start(&args("r"), &[]);
    chat.expect_line("! error 403: not allowed to see presence in this room");
    chat.expect_line("* joining without presence");
    chat.expect_line("* joined r");
    let mut observer = RoomClient::connect(&server);
    observer.join("r");
    chat.type_line("quietly here");
    assert_eq!(observer.next_message()["from"]["user"], "bo");
    chat.end_input();
    assert!(chat.exit_status().success(), "chat printed {:#?}", chat.seen);

    let mut chat = Chat::start(&args("x"), &[]);
    chat.expect_line("! error 403: not allowed to join this room");
    chat.expect_line("stderr: chat: cannot join x");
    assert!(!chat.exit_status().success());
    assert!(!chat.seen.iter().any(|l| l.contains("without presence")), "no retry: {:#?}", chat.seen);
    let _ = std::fs::remove_file(ca);
}

#[test]
fn a_ws_url_on_a_tls_port_fails_saying_to_use_wss() {
    let server = server();
    let url = format!("ws://{}{PATH}", server.addr());
    let mut chat = Chat::start(&["--url", &url], &[]);
    chat.expect_line("use a wss:// URL");
    assert!(!chat.exit_status().success());
}

#[test]
fn a_wss_url_trusts_the_system_roots_and_an_unknown_ca_is_named() {
    let server = server();
    let url = server.url_at(PATH);
    // Without --ca, the system's roots: here the test CA, through SSL_CERT_FILE.
    let ca = ca_file("system-roots");
    let mut chat = Chat::start(&["--url", &url, "--room", "r"], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    chat.expect_line("* joined r");
    chat.end_input();
    assert!(chat.exit_status().success(), "chat printed {:#?}", chat.seen);
    let _ = std::fs::remove_file(ca);

    // No system roots at all: the error says what to pass instead.
    let mut chat = Chat::start(&["--url", &url], &[("SSL_CERT_FILE", "/no/such/roots.pem")]);
    let line = chat.expect_line("stderr: chat: no system root certificates found");
    assert!(line.contains("--ca FILE") && line.contains("--insecure"), "{line}");
    assert!(!chat.exit_status().success());

    // A CA that did not sign the server's certificate.
    let other = support::tls::Fixture::new();
    let path = std::env::temp_dir().join(format!("wsedge-chat-{}-other-ca.pem", std::process::id()));
    std::fs::write(&path, other.ca_pem()).unwrap();
    let mut chat = Chat::start(&["--url", &url, "--ca", path.to_str().unwrap()], &[]);
    // (Its subject is the test CA's, so the signature is what fails.)
    chat.expect_line("TLS handshake with 127.0.0.1");
    assert!(chat.seen.iter().any(|line| line.contains("invalid peer certificate")), "{:#?}", chat.seen);
    assert!(!chat.exit_status().success());
    let _ = std::fs::remove_file(path);
}

#[test]
fn chat_prints_the_rooms_last_messages_on_joining() {
    let server = plain_server();
    let mut observer = RoomClient::connect(&server);
    observer.join("h");
    for text in ["one", "two", "three"] {
        observer.publish("h", json!({ "text": text }));
    }
    let url = server.url_at(PATH);
    let mut chat = Chat::start(&["--url", &url, "--room", "h", "--history", "2"], &[]);
    chat.expect_line("* joined h (2 members)");
    let sender = &observer.id;
    chat.expect_line(&format!("[h #2] {sender}: two"));
    chat.expect_line(&format!("[h #3] {sender}: three"));
    // Its own line comes after everything printed before it: then "one" was not.
    chat.type_line("four");
    chat.expect_line("[h #4] ");
    assert_eq!(chat.count_ending(": one"), 0, "only the last 2: {:#?}", chat.seen);
    assert_eq!(next_from_others(&mut observer)["data"], json!({"text": "four"}));

    // --history 0: nothing of the past.
    let mut chat = Chat::start(&["--url", &url, "--room", "h", "--history", "0"], &[]);
    chat.expect_line("* joined h");
    chat.type_line("five");
    chat.expect_line("[h #5] ");
    assert!(!chat.seen.iter().any(|l| l.contains(": four")), "no history: {:#?}", chat.seen);
}

#[test]
fn chat_prints_what_it_missed_while_the_link_was_cut_once_each() {
    let server = plain_server();
    let proxy = Proxy::start(server.addr());
    let url = format!("ws://{}{PATH}", proxy.addr());
    let mut observer = RoomClient::connect(&server);
    observer.join("r");
    let mut chat = Chat::start(&["--url", &url, "--room", "r"], &[]);
    chat.expect_line("* joined r (2 members)");
    observer.publish("r", json!({"text": "m1"}));
    chat.expect_line(": m1");

    // No way back until both are published: chat can only get them by recovering.
    proxy.refuse(true);
    proxy.cut_all();
    let lost = chat.expect_line("stderr: chat: connection lost");
    assert!(lost.contains("; reconnecting in "), "{lost}");
    observer.publish("r", json!({"text": "m2"}));
    observer.publish("r", json!({"text": "m3"}));
    proxy.refuse(false);
    chat.expect_line("stderr: chat: reconnected");
    chat.expect_line(": m2");
    chat.expect_line(": m3");
    observer.publish("r", json!({"text": "m4"}));
    chat.expect_line(": m4");
    for text in ["m1", "m2", "m3", "m4"] {
        assert_eq!(chat.count_ending(&format!(": {text}")), 1, "{text} once: {:#?}", chat.seen);
    }
    assert!(!chat.seen.iter().any(|l| l.contains("history gap")), "recovered: {:#?}", chat.seen);
    chat.end_input();
    assert!(chat.exit_status().success(), "chat printed {:#?}", chat.seen);
}

#[test]
fn chat_reconnects_after_the_server_restarts_and_says_the_history_restarted() {
    let mut server = Running::serve(&[]);
    let addr = server.addr.clone();
    let url = server.url(PATH);
    let mut observer = RoomClient::connect_url(&url);
    observer.join("r");
    observer.publish("r", json!({"text": "before the restart"}));
    let mut chat = Chat::start(&["--url", &url, "--room", "r"], &[]);
    chat.expect_line("before the restart");
    chat.expect_line("* joined r");

    server.kill();
    chat.expect_line("stderr: chat: connection lost");
    let mut command = process::wsedge();
    command.args(["serve", "--listen", &addr]);
    let _server = Running::start(command);
    chat.expect_line("stderr: chat: reconnected");
    // In memory, the rooms began again with the new process: a new epoch.
    let gap = chat.expect_line("* history gap in r");
    assert!(gap.contains("history restarted"), "{gap}");
    let mut observer = RoomClient::connect_url(&url);
    observer.join("r");
    observer.publish("r", json!({"text": "after the restart"}));
    chat.expect_line("after the restart");
    chat.type_line("still here");
    assert_eq!(next_from_others(&mut observer)["data"], json!({"text": "still here"}));
    chat.end_input();
    assert!(chat.exit_status().success(), "chat printed {:#?}", chat.seen);
}

#[test]
fn a_server_requiring_a_token_gets_chat_to_say_how_to_pass_one() {
    let mut auth = AuthConfig::default().with_hs256_secret(SECRET).unwrap();
    auth.require_auth = true;
    let server = TestServer::rooms(RoomsConfig { auth: Some(auth), ..RoomsConfig::default() });
    let url = server.url_at(PATH);
    // Stdin stays open: the refusal alone ends chat, before the server's handshake timeout
    // would close the connection (the reply to the join says it, at once).
    let mut chat = Chat::start(&["--url", &url, "--room", "r"], &[]);
    chat.expect_line("! error 401: authenticate first");
    let line = chat.expect_line("stderr: chat: the server requires authentication");
    assert!(line.contains("--token") && line.contains("WSEDGE_TOKEN"), "{line}");
    assert!(!chat.exit_status().success());
}

#[test]
fn a_ca_certificate_served_as_the_servers_own_is_refused_saying_how_to_make_a_server_one() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let tls = TlsConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let config = wsedge::server::Config { workers: 1, tls: Some(tls), ..support::config() };
    let server = TestServer::rooms_with(config, RoomsConfig::default());
    let ca = pem_file("ca-as-server", &cert.pem());
    let mut chat = Chat::start(&["--url", &server.url_at(PATH), "--ca", ca.to_str().unwrap()], &[]);
    let line = chat.expect_line("stderr: chat: ");
    assert!(line.contains("is a CA certificate"), "{line}");
    assert!(line.contains("-addext basicConstraints=critical,CA:FALSE"), "{line}");
    assert!(line.contains("subjectAltName=IP:127.0.0.1") && line.contains("--ca"), "{line}");
    // The first connection's misconfiguration ends chat: no retrying for ever.
    assert!(!chat.exit_status().success());
    let _ = std::fs::remove_file(ca);
}

/// `Client::recv` over TLS: a timeout with nothing to read is `Ok(None)`, again and
/// again, and the connection works after it.
#[test]
fn the_client_times_out_quietly_over_tls_and_reads_on() {
    let server = server();
    let mut client = Client::connect(&server.url_at(PATH), &[SUBPROTOCOL], Some(fixture().client_config()))
        .expect("connect over wss://");
    assert_eq!(client.protocol.as_deref(), Some(SUBPROTOCOL));
    let text = |event: Option<Event>| -> Value {
        match event {
            Some(Event::Message { data, .. }) => serde_json::from_slice(&data).expect("JSON"),
            other => panic!("expected a message, got {other:?}"),
        }
    };
    let welcome = text(client.recv(IO_TIMEOUT).unwrap());
    assert_eq!(welcome["op"], "welcome");
    for _ in 0..3 {
        let started = Instant::now();
        assert!(client.recv(Duration::from_millis(100)).expect("a timeout is not an error").is_none());
        assert!(started.elapsed() < IO_TIMEOUT, "recv waited {:?}", started.elapsed());
    }
    client.send_text(&json!({"id": 1, "op": "auth", "token": token("bob", 600)}).to_string()).unwrap();
    let reply = text(client.recv(IO_TIMEOUT).unwrap());
    assert_eq!(reply, json!({"id": 1, "ok": {"user": "bob"}}));
}
