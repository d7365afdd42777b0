//! `wsedge chat`: a terminal client for the room server (`wsedge.v1`, docs/protocol.md).
//! It joins one room, publishes each line typed on stdin and prints what arrives for a
//! person to read. It speaks only through `wsedge::client` and `wsedge::wire`: nothing of
//! the server's room layer.

use std::time::Duration;

use clap::Args;

use wsedge::client::tls::TrustArgs;
use wsedge::wire::SUBPROTOCOL;

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
    #[command(flatten)]
    trust: TrustArgs,
}

/// `wsedge chat`: stdin lines become publishes; pushes are printed as they arrive. With a
/// token, `auth` goes first; a refused `auth` or `join` ends the chat (an `Err`).
pub(crate) fn chat(args: &ChatArgs) -> Result<(), String> {
    use std::sync::mpsc;
    use wsedge::client::{Client, WsUrl};
    use wsedge::proto::{CloseCode, Event};

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
        let auth = serde_json::json!({"id": "auth", "op": "auth", "token": token});
        client.send_text(&auth.to_string()).map_err(io_error)?;
    }
    let join = serde_json::json!({"id": "join", "op": "join", "room": args.room, "presence": true});
    client.send_text(&join.to_string()).map_err(io_error)?;
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
                let publish = serde_json::json!({"op": "publish", "room": args.room, "data": {"text": line}});
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
                let pushed = print_push(&String::from_utf8_lossy(&data));
                if let Err(Refused::Presence) = pushed {
                    // The token may join but not watch presence: join without it.
                    println!("* joining without presence (not allowed here)");
                    let join = serde_json::json!({"id": "join-quiet", "op": "join", "room": args.room});
                    client.send_text(&join.to_string()).map_err(io_error)?;
                } else if let Err(refused) = pushed {
                    let _ = client.close(CloseCode::NORMAL, "bye");
                    return Err(match refused {
                        Refused::Auth => "authentication failed".to_owned(),
                        Refused::Join | Refused::Presence => format!("cannot join {}", args.room),
                    });
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

/// Which of chat's first requests the server refused.
enum Refused {
    Auth,
    /// The join with presence got 403: it may still join without.
    Presence,
    Join,
}

/// Prints one frame from the server for a person to read. A refused `auth` or `join` (our
/// first requests) is an `Err` saying which: the chat cannot go on as asked.
fn print_push(text: &str) -> Result<(), Refused> {
    use serde_json::Value;

    let Ok(v) = serde_json::from_str::<Value>(text) else {
        println!("{text}");
        return Ok(());
    };
    let str_or = |v: &Value, default: &'static str| v.as_str().unwrap_or(default).to_owned();
    // A member by its user when it has one, else its client id; no client: the backend.
    let who = |m: &Value| m["user"].as_str().or(m["client"].as_str()).unwrap_or("backend").to_owned();
    if let Some(error) = v.get("error") {
        let message = error["message"].as_str().map_or_else(|| error["message"].to_string(), str::to_owned);
        println!("! error {}: {message}", error["code"]);
        return match v["id"].as_str() {
            Some("auth") => Err(Refused::Auth),
            // "not allowed to see presence in this room" (docs/protocol.md, Errors).
            Some("join") if error["code"] == 403 && message.contains("presence") => Err(Refused::Presence),
            Some("join" | "join-quiet") => Err(Refused::Join),
            _ => Ok(()),
        };
    }
    match (v["op"].as_str(), v["id"].as_str()) {
        (Some("welcome"), _) => match v["user"].as_str() {
            Some(user) => println!("* connected as {} (user {user})", str_or(&v["client"], "?")),
            None => println!("* connected as {}", str_or(&v["client"], "?")),
        },
        (Some("message"), _) => {
            let data = &v["data"];
            let body = data["text"].as_str().map_or_else(|| data.to_string(), str::to_owned);
            // Ephemeral messages have no offset.
            let offset = v["offset"].as_u64().map_or_else(String::new, |o| format!(" #{o}"));
            println!("[{}{offset}] {}: {}", str_or(&v["room"], "?"), who(&v["from"]), body);
        }
        (Some(op @ ("join" | "leave")), _) => {
            let verb = if op == "join" { "joined" } else { "left" };
            println!("* {} {verb} {}", who(&v["member"]), str_or(&v["room"], "?"));
        }
        (_, Some("auth")) => println!("* authenticated as {}", str_or(&v["ok"]["user"], "?")),
        (_, Some("join" | "join-quiet")) => {
            let members = &v["ok"]["members"];
            let count = members.as_array().map_or_else(|| members.to_string(), |m| m.len().to_string());
            println!("* joined {} ({count} members)", str_or(&v["ok"]["room"], "?"));
        }
        _ => {}
    }
    Ok(())
}
