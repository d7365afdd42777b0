//! A raw event-stream client for the SSE tests: an HTTP/1.1 `GET`, its response head, then
//! the chunked body read chunk by chunk and parsed into events as a browser's
//! `EventSource` does (`event:`, `id:`, `data:` lines; comment lines kept apart, so a test
//! can see the heartbeats).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};

use super::tls::ClientStream;
use super::{read_head, ResponseHead, TestServer};

/// One event as `EventSource` would dispatch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:` (`message` when absent).
    pub event: String,
    /// `id:` of this event, if it had one.
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// What the stream sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    /// A comment line (`: ...`), the heartbeat.
    Comment(String),
}

/// An open event stream.
pub struct SseStream {
    reader: BufReader<ClientStream>,
    /// The response head.
    pub head: ResponseHead,
    /// Decoded body bytes not yet parsed into items.
    body: Vec<u8>,
    items: VecDeque<Item>,
    /// How it ended, once it did.
    end: Option<End>,
}

/// Opens `target` on `server` with extra header lines: the stream, or the refusal's head
/// and body.
pub fn open(server: &TestServer, target: &str, headers: &[&str]) -> Result<SseStream, (ResponseHead, String)> {
    open_on(server.stream(), target, headers)
}

/// A stream through `addr` (a proxy that may cut it anywhere in front of a plain server):
/// `None` when the connection ends before the stream starts.
pub fn open_at(addr: std::net::SocketAddr, target: &str, headers: &[&str]) -> Option<SseStream> {
    let tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(super::IO_TIMEOUT)).ok()?;
    let mut stream = ClientStream::Plain(tcp);
    stream.write_all(request(target, headers).as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let head = super::try_read_head(&mut reader).ok()?;
    assert_eq!(head.status, 200, "{head:?}");
    Some(SseStream { reader, head, body: Vec::new(), items: VecDeque::new(), end: None })
}

fn request(target: &str, headers: &[&str]) -> String {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

fn open_on(mut stream: ClientStream, target: &str, headers: &[&str]) -> Result<SseStream, (ResponseHead, String)> {
    stream.write_all(request(target, headers).as_bytes()).expect("send the request");
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    if head.status != 200 {
        let len: usize = head.header("Content-Length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body).expect("the refusal's body");
        return Err((head, String::from_utf8_lossy(&body).into_owned()));
    }
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"), "{head:?}");
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"), "{head:?}");
    Ok(SseStream { reader, head, body: Vec::new(), items: VecDeque::new(), end: None })
}

/// How a stream stopped giving items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server's last chunk: it ended the stream.
    LastChunk,
    /// The connection closed, reset, or broke off mid-chunk (a proxy's cut, say).
    Closed,
    /// Nothing came for the read timeout: neither an end nor more items.
    Silent,
}

impl SseStream {
    /// The next event, skipping comments. Panics when the stream ends first.
    pub fn next_event(&mut self) -> Event {
        loop {
            match self.next_item() {
                Some(Item::Event(event)) => return event,
                Some(Item::Comment(_)) => continue,
                None => panic!("the stream ended while an event was expected"),
            }
        }
    }

    /// The next event or comment; `None` once the server ended the stream (its last
    /// chunk). Any other end is a failure.
    pub fn next_item(&mut self) -> Option<Item> {
        match self.next_or_end() {
            Ok(item) => Some(item),
            Err(End::LastChunk) => None,
            Err(end) => panic!("the stream stopped without its last chunk: {end:?}"),
        }
    }

    /// The next event or comment; `None` once the stream ended, however it ended
    /// ([`SseStream::silent`] tells a timeout apart).
    pub fn next_item_or_end(&mut self) -> Option<Item> {
        self.next_or_end().ok()
    }

    /// Whether the server ended the stream (its last chunk) before sending more items.
    pub fn ends(&mut self) -> bool {
        match self.next_or_end() {
            Ok(item) => {
                self.items.push_front(item);
                false
            }
            Err(End::LastChunk) => true,
            Err(end) => panic!("the stream stopped without its last chunk: {end:?}"),
        }
    }

    /// Whether the stream stopped because nothing came for the read timeout.
    pub fn silent(&self) -> bool {
        self.end == Some(End::Silent)
    }

    /// The next item, or how the stream ended.
    fn next_or_end(&mut self) -> Result<Item, End> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Ok(item);
            }
            if let Some(end) = self.end {
                return Err(end);
            }
            self.end = self.read_chunk().err();
        }
    }

    /// Reads one chunk into the body and parses what is whole.
    fn read_chunk(&mut self) -> Result<(), End> {
        let mut size = String::new();
        match self.reader.read_line(&mut size) {
            Ok(0) => return Err(End::Closed),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(End::Silent)
            }
            Err(_) => return Err(End::Closed),
            Ok(_) => {}
        }
        let size = usize::from_str_radix(size.trim_end(), 16).map_err(|_| End::Closed)?;
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).map_err(|_| End::Closed)?;
        assert_eq!(&chunk[size..], b"\r\n", "a chunk ends with CRLF");
        if size == 0 {
            return Err(End::LastChunk);
        }
        self.body.extend_from_slice(&chunk[..size]);
        self.parse();
        Ok(())
    }

    /// Whole items (up to a blank line) from the body.
    fn parse(&mut self) {
        while let Some(end) = self.body.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.body.drain(..end + 2).collect();
            let text = String::from_utf8(block).expect("events are UTF-8");
            let mut event = Event { event: "message".into(), id: None, data: String::new() };
            let mut data_lines = Vec::new();
            for line in text.lines().filter(|l| !l.is_empty()) {
                if let Some(comment) = line.strip_prefix(':') {
                    self.items.push_back(Item::Comment(comment.trim().to_owned()));
                } else if let Some(name) = line.strip_prefix("event: ") {
                    event.event = name.to_owned();
                } else if let Some(id) = line.strip_prefix("id: ") {
                    event.id = Some(id.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    data_lines.push(data.to_owned());
                } else {
                    panic!("a line of no known field: {line:?}");
                }
            }
            if !data_lines.is_empty() {
                event.data = data_lines.join("\n");
                self.items.push_back(Item::Event(event));
            }
        }
    }
}
