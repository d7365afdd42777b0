//! Relay/broadcast server on tokio-tungstenite, after the crate's
//! `examples/server.rs` (the chat server): a shared map of peer senders
//! (`futures_channel::mpsc::unbounded`), one task per connection that runs
//! "broadcast incoming" and "forward my channel to my socket" side by side
//! with `future::select`.
//!
//! Relay semantics (wsedge's `relay`): the map is keyed by room, and the room
//! is the URL path of the upgrade request (read in the `accept_hdr_async`
//! callback, as in `examples/server-headers.rs`; `/` is a room too). Every
//! text or binary message a member sends goes verbatim to every member of its
//! room, the sender included (the chat example skips the sender; the relay
//! does not). Ping/pong/close stay tungstenite's defaults.
//!
//! Message clones are cheap: tungstenite 0.30 payloads are `Bytes`, so a
//! fan-out is a refcount bump per member plus the channel push. Queues are
//! unbounded as in the example: a slow reader grows memory, never drops.
//!
//! Other deviations, for the benchmark: `--listen`/`--workers` flags,
//! TCP_NODELAY, no per-message println, no panics on connection errors, and
//! accept errors do not stop the server.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{future, pin_mut, stream::TryStreamExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{
    handshake::server::{Request, Response},
    protocol::Message,
};
use wsedge_peers::{accept_error, announce, Args};

const NAME: &str = "tokio-tungstenite-broadcast";

type Tx = UnboundedSender<Message>;
/// room (URL path) -> members of the room.
type RoomMap = Arc<Mutex<HashMap<String, HashMap<SocketAddr, Tx>>>>;

fn lock(rooms: &RoomMap) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<SocketAddr, Tx>>> {
    // Nothing panics while the lock is held; recover the map if that changes.
    rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn handle_connection(rooms: RoomMap, raw_stream: TcpStream, addr: SocketAddr, verbose: bool) {
    let _ = raw_stream.set_nodelay(true);
    let mut room = String::from("/");
    // tungstenite's Callback signature returns Result<Response, ErrorResponse>.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, response: Response| {
        room = req.uri().path().to_owned();
        Ok(response)
    };
    let ws_stream = match tokio_tungstenite::accept_hdr_async(raw_stream, callback).await {
        Ok(ws) => ws,
        Err(e) => {
            if verbose {
                eprintln!("handshake failed: {e}");
            }
            return;
        }
    };

    // Insert the write part of this peer into its room.
    let (tx, rx) = unbounded();
    lock(&rooms).entry(room.clone()).or_default().insert(addr, tx);

    let (outgoing, incoming) = ws_stream.split();

    let broadcast_incoming = incoming.try_for_each(|msg| {
        if msg.is_text() || msg.is_binary() {
            let rooms = lock(&rooms);
            // Everyone in the room, ourselves included.
            if let Some(members) = rooms.get(&room) {
                for recp in members.values() {
                    let _ = recp.unbounded_send(msg.clone());
                }
            }
        }
        future::ok(())
    });

    let receive_from_others = rx.map(Ok).forward(outgoing);

    pin_mut!(broadcast_incoming, receive_from_others);
    match future::select(broadcast_incoming, receive_from_others).await {
        future::Either::Left((Err(e), _)) | future::Either::Right((Err(e), _)) if verbose => {
            eprintln!("connection error: {e}")
        }
        _ => {}
    }

    let mut rooms = lock(&rooms);
    if let Some(members) = rooms.get_mut(&room) {
        members.remove(&addr);
        if members.is_empty() {
            rooms.remove(&room);
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse(NAME);
    let verbose = args.verbose;
    let state = RoomMap::default();
    args.runtime().block_on(async move {
        let listener = TcpListener::bind(&args.listen).await?;
        announce(NAME, listener.local_addr());
        // Let's spawn the handling of each connection in a separate task.
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    tokio::spawn(handle_connection(state.clone(), stream, addr, verbose));
                }
                Err(e) => accept_error(e).await,
            }
        }
    })
}
