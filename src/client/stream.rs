//! What a blocking client's bytes travel over: a TCP socket (`ws://`), or a rustls session
//! over one (`wss://`). Used by [`super::Client`], and by the integration tests for raw
//! bytes over TLS.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// A connected socket, plain or under TLS; reads and writes go through `Read`/`Write`.
pub enum Stream {
    /// `ws://`: the TCP socket itself.
    Plain(TcpStream),
    /// Boxed: the session holds its buffers inline and is large next to a socket.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Completes a TLS handshake over `tcp` with `host` (a name or an IP address, which the
    /// certificate must be valid for), so that a refused certificate or a server that does
    /// not speak TLS fails here, with a message saying so, not at the first read. Bounded
    /// by `tcp`'s read and write timeouts.
    pub fn tls(tcp: TcpStream, config: Arc<ClientConfig>, host: &str) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                let rustls_error = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
                let why = if super::is_timeout(&e) {
                    let waited = tls.sock.read_timeout().ok().flatten().map(|t| format!(" within {t:?}"));
                    format!("no answer{}", waited.unwrap_or_default())
                } else if e.kind() == io::ErrorKind::UnexpectedEof {
                    "the server closed the connection (is it a ws:// server?)".to_owned()
                } else if let Some(rustls::Error::InvalidMessage(_)) = rustls_error {
                    format!("the server does not speak TLS, use a ws:// URL ({e})")
                } else if let Some(advice) = rustls_error.and_then(|r| super::tls::certificate_advice(r, host)) {
                    format!("{e}: {advice}")
                } else {
                    e.to_string()
                };
                let with = match tls.sock.peer_addr() {
                    Ok(peer) if host.trim_matches(['[', ']']).parse() == Ok(peer.ip()) => peer.to_string(),
                    Ok(peer) => format!("{host} ({peer})"),
                    Err(_) => host.to_owned(),
                };
                return Err(io::Error::new(e.kind(), format!("TLS handshake with {with} failed: {why}")));
            }
        }
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// The TCP socket underneath (for its timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }

    /// The TLS session, if this is TLS.
    pub fn session(&self) -> Option<&ClientConnection> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => Some(&tls.conn),
        }
    }

    /// Over TLS, sends close_notify: nothing more will be written. Nothing over TCP.
    pub fn close_notify(&mut self) -> io::Result<()> {
        if let Stream::Tls(tls) = self {
            tls.conn.send_close_notify();
            tls.flush()?;
        }
        Ok(())
    }

    /// Shuts the TCP socket down (no close_notify: an abrupt end, as a crash would be).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    /// Over TLS this is where records reach the socket, and where a failed write shows:
    /// rustls's `write` only buffers plaintext and keeps socket errors for later.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
