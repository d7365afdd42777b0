//! Echo server on tokio-tungstenite, after the crate's `examples/echo-server.rs`:
//! accept, `accept_async`, split, and forward every text/binary message from
//! the read half to the write half. Ping/pong and the close handshake are
//! tungstenite's defaults.
//!
//! Deviations from the example, each for the benchmark's sake: `--listen` and
//! `--workers` flags instead of a positional address and `#[tokio::main]`;
//! TCP_NODELAY on every socket (Node `ws` and wsedge set it too); errors end
//! the connection quietly instead of `expect` panicking the task; a failing
//! `accept` (EMFILE) does not stop the server.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use wsedge_peers::{accept_error, announce, Args};

const NAME: &str = "tokio-tungstenite-echo";

fn main() -> std::io::Result<()> {
    let args = Args::parse(NAME);
    let verbose = args.verbose;
    args.runtime().block_on(async move {
        let listener = TcpListener::bind(&args.listen).await?;
        announce(NAME, listener.local_addr());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(accept_connection(stream, verbose));
                }
                Err(e) => accept_error(e).await,
            }
        }
    })
}

async fn accept_connection(stream: TcpStream, verbose: bool) {
    let _ = stream.set_nodelay(true);
    let ws_stream = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(e) => {
            if verbose {
                eprintln!("handshake failed: {e}");
            }
            return;
        }
    };

    let (write, read) = ws_stream.split();
    // We should not forward messages other than text or binary.
    let res = read.try_filter(|msg| future::ready(msg.is_text() || msg.is_binary())).forward(write).await;
    if let Err(e) = res {
        if verbose {
            eprintln!("connection error: {e}");
        }
    }
}
