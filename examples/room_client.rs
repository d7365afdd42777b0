//! A program that follows a room with `wsedge::client::rooms::RoomClient`: prints the
//! room's last messages, then every new one with its offset, each once, across drops and
//! server restarts; publishes a line a second with a counter, so that two of these side by
//! side talk to each other.
//!
//!   cargo run --release &                                   # the room server, :9001
//!   cargo run --example room_client -- ws://127.0.0.1:9001/ws lobby
//!
//! Then stop and restart the server, or cut the network: it says so, reconnects, and
//! prints what it missed. `WSEDGE_TOKEN` is sent as the token when set; for `wss://`,
//! `WSEDGE_CA=FILE` names the CA to trust (the system's roots otherwise).

use std::time::{Duration, Instant};

use serde_json::json;
use wsedge::client::rooms::{JoinOptions, ResetReason, RoomClient, RoomEvent};
use wsedge::client::tls;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001/ws".to_owned());
    let room = args.next().unwrap_or_else(|| "lobby".to_owned());

    let mut client = RoomClient::new(&url)?;
    if url.starts_with("wss://") {
        let ca = std::env::var_os("WSEDGE_CA").map(std::path::PathBuf::from);
        client = client.with_tls(tls::client_config(ca.as_deref(), false)?);
    }
    if let Ok(token) = std::env::var("WSEDGE_TOKEN") {
        client = client.with_token(token);
    }
    client.join(&room, JoinOptions { presence: false, history: 5 });

    let (mut next_publish, mut count) = (Instant::now() + Duration::from_secs(1), 0u64);
    loop {
        if Instant::now() >= next_publish {
            count += 1;
            // Queued while offline; sent once the room is joined, exactly once.
            if client.publish(&room, json!({ "text": format!("tick {count}") })).is_err() {
                eprintln!("(publish queue full: the server is unreachable for long)");
            }
            next_publish += Duration::from_secs(1);
        }
        match client.next_event(Duration::from_millis(200)) {
            Some(reset @ RoomEvent::Reset { reason, .. }) => {
                if reason != ResetReason::Join {
                    eprintln!("(history gap: {reason:?}; reloading the room)");
                }
                // Those of the same epoch at or below the offset held were shown already.
                for m in reset.unseen_messages() {
                    println!("#{} {}", m["offset"], m["data"]);
                }
            }
            Some(RoomEvent::Message { offset: Some(offset), message, .. }) => println!("#{offset} {}", message["data"]),
            Some(RoomEvent::Connected { client, .. }) => eprintln!("(connected as {client})"),
            Some(RoomEvent::Disconnected { reason, retry_in: Some(wait) }) => {
                eprintln!("(disconnected: {reason}; retrying in {:.1} s)", wait.as_secs_f64())
            }
            Some(RoomEvent::Stopped { reason }) => return Err(reason),
            Some(RoomEvent::JoinRefused { code, message, .. }) => {
                return Err(format!("cannot join {room}: {code} {message}"))
            }
            _ => {}
        }
    }
}
