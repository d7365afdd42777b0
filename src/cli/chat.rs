//! `wsedge chat`: a terminal client for the room server (`wsedge.v1`, docs/protocol.md).
//! It joins one room, publishes each line typed on stdin and prints what arrives for a
//! person to read. It speaks only through `wsedge::client` and `wsedge::wire`: nothing of
//! the server's room layer.
//!
//! What the server's replies mean is decided on their request id and error code
//! ([`wire::code`]), never on an error's message text, which is only printed.

use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use wsedge::client::tls::TrustArgs;
use wsedge::client::{Client, WsUrl};
use wsedge::proto::{CloseCode, Event};
use wsedge::wire::{self, SUBPROTOCOL};

/// The `id` of chat's `auth` request.
const AUTH_ID: &str = "auth";
/// The `id` of chat's first `join`, the one asking for presence.
const JOIN_ID: &str = "join";
/// The `id` of the `join` without presence sent when the first one got 403.
const QUIET_JOIN_ID: &str = "join-quiet";

/// `wsedge chat`'s flags.
#[derive(Args)]
pub(crate) struct ChatArgs {
    /// The room server's WebSocket URL (ws:// or wss://).
    #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
    url: String,
    /// The room to join.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// A JWT to authenticate with, sent in an `auth` request before the join (default:
    /// none, anonymous). Prefer the environment variable: command lines are visible to
    /// other users. A token the server refuses ends the chat.
    #[arg(long, env = "WSEDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Which certificates a `wss://` server may present.
    #[command(flatten)]
    trust: TrustArgs,
}

/// `wsedge chat`: stdin lines become publishes; pushes are printed as they arrive. With a
/// token, `auth` goes first; a refused `auth` or `join` ends the chat (an `Err`).
pub(crate) fn chat(args: &ChatArgs) -> Result<(), String> {
    let io_error = |e: std::io::Error| e.to_string();
    // Messages name the URL without its query, which may hold a `?token=`.
    let shown = args.url.split('?').next().unwrap_or_default();
    let url = WsUrl::parse(&args.url).map_err(|e| format!("{shown}: {e}"))?;
    let token = args.token.as_deref().filter(|t| !t.is_empty());
    let loopback = url.host == "localhost" || url.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if token.is_some() && !url.tls && !loopback {
        eprintln!(
            "chat: warning: sending a token over ws:// to {}: anyone on the path can read it (use wss://)",
            url.host
        );
    }
    let tls = if url.tls { Some(args.trust.client_config()?) } else { None };
    let mut client = Client::connect(&args.url, &[SUBPROTOCOL], tls).map_err(|e| format!("{shown}: {e}"))?;
    if let Some(token) = token {
        // The server answers requests in order: the auth reply comes before the join's.
        let auth = json!({"id": AUTH_ID, "op": "auth", "token": token});
        client.send_text(&auth.to_string()).map_err(io_error)?;
    }
    let join = json!({"id": JOIN_ID, "op": "join", "room": args.room, "presence": true});
    client.send_text(&join.to_string()).map_err(io_error)?;
    let mut session = Session::new();
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match lines.try_recv() {
            Ok(line) if !line.trim().is_empty() => {
                let publish = json!({"op": "publish", "room": args.room, "data": {"text": line}});
                client.send_text(&publish.to_string()).map_err(io_error)?;
            }
            Ok(_) => {}
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => {
                return client.close(CloseCode::NORMAL, "bye").map_err(io_error);
            }
        }
        match client.recv(Duration::from_millis(50)).map_err(io_error)? {
            Some(Event::Message { data, .. }) => {
                let (shown, next) = session.on_frame(&String::from_utf8_lossy(&data));
                for line in shown {
                    println!("{line}");
                }
                match next {
                    Next::Continue => {}
                    Next::JoinWithoutPresence => {
                        let join = json!({"id": QUIET_JOIN_ID, "op": "join", "room": args.room});
                        client.send_text(&join.to_string()).map_err(io_error)?;
                    }
                    Next::End(refused) => {
                        let _ = client.close(CloseCode::NORMAL, "bye");
                        return Err(match refused {
                            Refused::Auth => "authentication failed".to_owned(),
                            Refused::Join => format!("cannot join {}", args.room),
                        });
                    }
                }
            }
            Some(Event::Close(frame)) => {
                match frame {
                    Some(f) if f.reason.is_empty() => println!("* server closed the connection ({})", f.code.0),
                    Some(f) => println!(
                        "* server closed the connection ({}: {})",
                        f.code.0,
                        String::from_utf8_lossy(&f.reason)
                    ),
                    None => println!("* server closed the connection (no code)"),
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Which of chat's opening requests the server refused: the chat cannot go on as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Auth,
    Join,
}

/// What the chat does after a frame from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    /// Send the `join` without presence ([`QUIET_JOIN_ID`]).
    JoinWithoutPresence,
    /// Close and end with this refusal.
    End(Refused),
}

/// Where chat's join stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Joining {
    /// The join with presence is out (it, or the `auth` before it, may still be refused).
    WithPresence,
    /// The join with presence got 403 (docs/protocol.md, Errors): a token may allow
    /// joining a room but not watching its presence, or not joining it at all, and only
    /// the join without presence tells which. The first refusal's line waits until then.
    WithoutPresence { refusal: String },
    /// A join succeeded: replies no longer change anything.
    Settled,
}

/// What chat has learned from the server's replies to its opening requests.
#[derive(Debug)]
struct Session {
    /// Where the join stands.
    joining: Joining,
}

impl Session {
    /// Before any reply: the join with presence is out.
    fn new() -> Session {
        Session { joining: Joining::WithPresence }
    }

    /// Reads one frame from the server: the lines to print for a person, and what to do
    /// next. Refusals are told apart by request id and error code only.
    fn on_frame(&mut self, text: &str) -> (Vec<String>, Next) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return (vec![text.to_owned()], Next::Continue);
        };
        let Some(error) = v.get("error") else {
            let mut shown = Vec::new();
            if v["id"] == JOIN_ID || v["id"] == QUIET_JOIN_ID {
                if let Joining::WithoutPresence { refusal } = std::mem::replace(&mut self.joining, Joining::Settled) {
                    shown.push(refusal);
                    shown.push("* joining without presence (not allowed here)".to_owned());
                }
            }
            shown.extend(describe(&v));
            return (shown, Next::Continue);
        };
        let message = error["message"].as_str().map_or_else(|| error["message"].to_string(), str::to_owned);
        let line = format!("! error {}: {message}", error["code"]);
        let forbidden = error["code"].as_u64() == Some(u64::from(wire::code::FORBIDDEN));
        let next = match (v["id"].as_str(), &self.joining) {
            (Some(AUTH_ID), _) => Next::End(Refused::Auth),
            (Some(JOIN_ID), Joining::WithPresence) if forbidden => {
                self.joining = Joining::WithoutPresence { refusal: line };
                return (Vec::new(), Next::JoinWithoutPresence);
            }
            (Some(JOIN_ID | QUIET_JOIN_ID), _) => Next::End(Refused::Join),
            _ => Next::Continue,
        };
        (vec![line], next)
    }
}

/// A push or a successful reply, as a line for a person to read (`None`: nothing to say).
fn describe(v: &Value) -> Option<String> {
    let str_or = |v: &Value, default: &'static str| v.as_str().unwrap_or(default).to_owned();
    // A member by its user when it has one, else its client id; no client: the backend.
    let who = |m: &Value| m["user"].as_str().or(m["client"].as_str()).unwrap_or("backend").to_owned();
    let line = match (v["op"].as_str(), v["id"].as_str()) {
        (Some("welcome"), _) => match v["user"].as_str() {
            Some(user) => format!("* connected as {} (user {user})", str_or(&v["client"], "?")),
            None => format!("* connected as {}", str_or(&v["client"], "?")),
        },
        (Some("message"), _) => {
            let data = &v["data"];
            let body = data["text"].as_str().map_or_else(|| data.to_string(), str::to_owned);
            // Ephemeral messages have no offset.
            let offset = v["offset"].as_u64().map_or_else(String::new, |o| format!(" #{o}"));
            format!("[{}{offset}] {}: {}", str_or(&v["room"], "?"), who(&v["from"]), body)
        }
        (Some(op @ ("join" | "leave")), _) => {
            let verb = if op == "join" { "joined" } else { "left" };
            format!("* {} {verb} {}", who(&v["member"]), str_or(&v["room"], "?"))
        }
        (_, Some(AUTH_ID)) => format!("* authenticated as {}", str_or(&v["ok"]["user"], "?")),
        (_, Some(JOIN_ID | QUIET_JOIN_ID)) => {
            let members = &v["ok"]["members"];
            let count = members.as_array().map_or_else(|| members.to_string(), |m| m.len().to_string());
            format!("* joined {} ({count} members)", str_or(&v["ok"]["room"], "?"))
        }
        _ => return None,
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(id: &str, code: u16, message: &str) -> String {
        json!({"id": id, "error": {"code": code, "message": message}}).to_string()
    }

    fn joined(id: &str) -> String {
        json!({"id": id, "ok": {"room": "r", "members": [{"client": "c1"}]}}).to_string()
    }

    #[test]
    fn a_403_to_the_join_with_presence_retries_without_it_once() {
        let mut session = Session::new();
        // The text says nothing about presence: the code alone decides.
        let (shown, next) = session.on_frame(&error(JOIN_ID, wire::code::FORBIDDEN, "no"));
        assert_eq!((shown, next), (vec![], Next::JoinWithoutPresence));
        let (shown, next) = session.on_frame(&joined(QUIET_JOIN_ID));
        assert_eq!(next, Next::Continue);
        assert_eq!(
            shown,
            ["! error 403: no", "* joining without presence (not allowed here)", "* joined r (1 members)"]
        );
    }

    #[test]
    fn a_403_to_the_join_without_presence_is_a_refusal_shown_once() {
        let mut session = Session::new();
        let text = "not allowed to see presence in this room"; // the text does not matter
        assert_eq!(session.on_frame(&error(JOIN_ID, 403, text)).1, Next::JoinWithoutPresence);
        let (shown, next) = session.on_frame(&error(QUIET_JOIN_ID, wire::code::FORBIDDEN, "not allowed to join"));
        assert_eq!((shown, next), (vec!["! error 403: not allowed to join".to_owned()], Next::End(Refused::Join)));
    }

    #[test]
    fn other_refusals_of_the_join_or_auth_end_the_chat_at_once() {
        let mut session = Session::new();
        let (shown, next) = session.on_frame(&error(JOIN_ID, wire::code::UNAVAILABLE, "room is full"));
        assert_eq!((shown, next), (vec!["! error 503: room is full".to_owned()], Next::End(Refused::Join)));
        let mut session = Session::new();
        assert_eq!(session.on_frame(&error(AUTH_ID, wire::code::UNAUTHORIZED, "x")).1, Next::End(Refused::Auth));
    }

    #[test]
    fn errors_to_publishes_are_shown_and_the_chat_goes_on() {
        let mut session = Session::new();
        assert_eq!(session.on_frame(&joined(JOIN_ID)).1, Next::Continue);
        let publish_error = json!({"id": null, "error": {"code": 403, "message": "no"}}).to_string();
        assert_eq!(session.on_frame(&publish_error), (vec!["! error 403: no".to_owned()], Next::Continue));
        // A late 403 with the join's id (not ours after it succeeded) retries nothing.
        assert_ne!(session.on_frame(&error(JOIN_ID, 403, "no")).1, Next::JoinWithoutPresence);
    }
}
