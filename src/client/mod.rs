//! A small blocking WebSocket client on `std::net`, driving the same codec as the server
//! (client role), over TCP (`ws://`) or rustls (`wss://`, ALPN `http/1.1`). Handy in
//! examples and tests, and the transport of [`rooms::RoomClient`] (which `wsedge chat` uses).
//!
//! [`Client`] is one connection, blocking IO, no reconnects: for a program that must stay
//! connected to a room server, use [`rooms::RoomClient`]. Every wait is
//! bounded: connecting, the TLS and HTTP handshakes and each write by [`IO_TIMEOUT`], each
//! read by the timeout given to [`Client::recv`].

mod stream;
mod url;

pub mod rooms;
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::ClientConfig;

use crate::proto::deflate::{self, DeflateConfig};
use crate::proto::handshake::{client_request, parse_response, MAX_RESPONSE_HEAD};
use crate::proto::{CloseCode, Config, Connection, Event, MaskKeys, MessageKind};
pub use stream::Stream;
pub use url::{UrlError, WsUrl};

/// Longest the client waits to connect, for each handshake (TLS, then HTTP), and for a
/// write to be taken by the socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One open WebSocket connection, client role: connect, send, receive with a timeout,
/// close. Masking keys come from a generator seeded by the OS ([`MaskKeys`]).
pub struct Client {
    stream: Stream,
    codec: Connection,
    read_buf: BytesMut,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// A TCP connection to `url`'s host, trying each address it resolves to for up to
/// [`IO_TIMEOUT`]; with that timeout set on reads and writes.
fn connect_tcp(url: &WsUrl) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {}: {e}", url.host)))?;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                tcp.set_read_timeout(Some(IO_TIMEOUT))?;
                tcp.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(io::Error::new(last.kind(), format!("cannot connect to {}: {last}", url.authority)))
}

impl Client {
    /// Connects to `url` (`ws://` or `wss://`), offering `protocols` and
    /// permessage-deflate. A `wss://` URL needs `tls` (see [`tls::client_config`]); the
    /// certificate must be valid for the URL's host (a name or an IP address).
    pub fn connect(url: &str, protocols: &[&str], tls: Option<Arc<ClientConfig>>) -> io::Result<Client> {
        let url = WsUrl::parse(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}")))?;
        let tls = match (url.tls, tls) {
            (false, _) => None,
            (true, Some(config)) => Some(config),
            (true, None) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "a wss:// URL needs a TLS client config"))
            }
        };
        let tcp = connect_tcp(&url)?;
        let mut stream = match tls {
            Some(config) => Stream::tls(tcp, config, &url.host)?,
            None => Stream::Plain(tcp),
        };
        // The handshake's nonce (RFC 6455 §4.1: randomly selected), from the OS.
        let mut key = [0u8; 16];
        rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut key)
            .map_err(|e| io::Error::other(format!("no entropy from the OS: {e}")))?;
        let (mut request, key) = client_request(&url.authority, &url.path, key, protocols);
        // Offer permessage-deflate: insert the header before the blank line.
        request.truncate(request.len() - 2);
        request.extend_from_slice(format!("Sec-WebSocket-Extensions: {}\r\n\r\n", deflate::offer()).as_bytes());
        stream.write_all(&request)?;
        stream.flush()?;
        let (response, buf) = read_response(&mut stream, &url, &key, protocols)?;
        let mut codec = Connection::client(Config::default(), MaskKeys::from_os()?);
        let params = deflate::accept_response(response.extensions.as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if let Some(params) = params {
            let defaults = DeflateConfig::default();
            codec = codec.with_deflate(params, defaults.threshold, defaults.level);
        }
        Ok(Client { stream, codec, read_buf: buf, protocol: response.protocol })
    }

    /// Sends `text` as one text message (compressed if deflate was agreed) and writes it
    /// out before returning.
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(MessageKind::Text, Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Sends one text or binary message (compressed if deflate was agreed) and writes it
    /// out before returning.
    pub fn send(&mut self, kind: MessageKind, payload: Bytes) -> io::Result<()> {
        self.codec.send_message(kind, payload);
        self.flush()
    }

    /// Sends a ping (the server answers with a pong, which [`Client::recv`] returns).
    pub fn ping(&mut self) -> io::Result<()> {
        self.codec.send_ping(Bytes::new());
        self.flush()
    }

    /// Sends a close frame (and, over TLS, close_notify: nothing more will be written).
    pub fn close(&mut self, code: CloseCode, reason: &str) -> io::Result<()> {
        self.codec.close(code, reason);
        self.flush()?;
        self.stream.close_notify()
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(bytes) = self.codec.poll_transmit() {
            self.stream.write_all(&bytes)?;
        }
        self.stream.flush()
    }

    /// The next event, waiting up to `timeout` (`Ok(None)` when nothing came). Pongs are
    /// sent automatically. After a close event the connection is over.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Event>> {
        self.stream.tcp().set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        loop {
            let event = self.codec.decode(&mut self.read_buf);
            self.flush()?;
            match event {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) if self.codec.is_terminated() => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed"))
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection")),
                Ok(n) => self.read_buf.extend_from_slice(&chunk[..n]),
                // The read timeout. rustls passes the socket's error up as it is (keeping a
                // partial record for the next read), and has `WouldBlock` of its own when
                // the records read held no application data.
                Err(e) if is_timeout(&e) => return Ok(None),
                // rustls: TCP ended without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads the upgrade response; returns it and the bytes read after its head.
fn read_response(
    stream: &mut Stream,
    url: &WsUrl,
    key: &str,
    protocols: &[&str],
) -> io::Result<(crate::proto::handshake::UpgradeResponse, BytesMut)> {
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                let why = format!("no WebSocket handshake response within {}s", IO_TIMEOUT.as_secs());
                return Err(io::Error::new(io::ErrorKind::TimedOut, why));
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            let hint = if url.tls { "" } else { " (is it a wss:// server?)" };
            let why = format!("server closed the connection during the WebSocket handshake{hint}");
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS record (an alert, or a handshake record) where HTTP was expected: the
        // plaintext request reached a TLS port (RFC 8446 §5.1: content types 21 and 22).
        if !url.tls && matches!(buf.first(), Some(0x15 | 0x16)) {
            let why = "the server answered with TLS: use a wss:// URL";
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        match parse_response(&buf, key, protocols) {
            Ok(Some((response, head_len))) => {
                let _ = buf.split_to(head_len);
                return Ok((response, buf));
            }
            Ok(None) if buf.len() < MAX_RESPONSE_HEAD => continue,
            Ok(None) => return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large")),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server on loopback: reads the request, answers `reply`, closes.
    fn answering(reply: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf);
            let _ = tcp.write_all(reply);
        });
        format!("ws://{addr}/ws")
    }

    #[test]
    fn a_tls_alert_to_a_ws_url_says_to_use_wss() {
        // RFC 8446 §6: a fatal (2) unexpected_message (10) alert, as a TLS port answers HTTP.
        let url = answering(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a]);
        let e = Client::connect(&url, &[], None).err().expect("the connection fails");
        assert!(e.to_string().contains("use a wss:// URL"), "{e}");
    }

    #[test]
    fn a_refused_upgrade_names_the_status() {
        let url = answering(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
        let e = Client::connect(&url, &[], None).err().expect("the connection fails");
        assert!(e.to_string().contains("401"), "{e}");
    }

    #[test]
    fn wss_without_a_tls_config_is_refused_before_connecting() {
        let e = Client::connect("wss://127.0.0.1:9/ws", &[], None).err().expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }
}
