//! A `wsedge.v1` client for the room tests, over tungstenite: JSON in and out, requests
//! numbered and matched to their replies, and a barrier (a `ping` with an id) that shows
//! everything the server queued for this client before it.
//!
//! The server handles one connection's frames in order and queues every push caused by a
//! request before that request's reply, so "nothing arrived before the barrier's reply"
//! proves "nothing was sent", without sleeping.

use std::collections::VecDeque;

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use super::tls::ClientStream;
use super::TestServer;

/// The room server's WebSocket path.
pub const PATH: &str = "/ws";

/// A connected client that has read its welcome.
pub struct RoomClient {
    ws: WebSocket<ClientStream>,
    /// The client id from the welcome.
    pub id: String,
    next_id: u64,
    /// Frames read while waiting for a reply, in arrival order.
    pending: VecDeque<Value>,
}

impl RoomClient {
    /// Connects to `/ws` (over TLS on a TLS server), checks the welcome and keeps the
    /// client id it carries.
    pub fn connect(server: &TestServer) -> RoomClient {
        let request = server.url_at(PATH).into_client_request().expect("a client request");
        RoomClient::connect_with(server, request)
    }

    /// Connects with a prepared handshake request.
    pub fn connect_with(server: &TestServer, request: tungstenite::handshake::client::Request) -> RoomClient {
        let (ws, response) = tungstenite::client(request, server.stream()).expect("WebSocket handshake");
        assert_eq!(response.status(), 101);
        RoomClient::welcomed(ws)
    }

    /// Connects to a room server at `url` (one this test did not start in-process).
    pub fn connect_url(url: &str) -> RoomClient {
        let (ws, response) = super::tls::connect(url);
        assert_eq!(response.status(), 101);
        RoomClient::welcomed(ws)
    }

    /// Reads the welcome on an upgraded `ws` and keeps the client id it carries.
    fn welcomed(ws: WebSocket<ClientStream>) -> RoomClient {
        let mut client = RoomClient::without_welcome(ws);
        let welcome = client.next();
        assert_eq!(welcome["op"], "welcome", "the first frame must be the welcome: {welcome}");
        client.id =
            welcome["client"].as_str().unwrap_or_else(|| panic!("welcome without a client id: {welcome}")).into();
        client
    }

    /// A client over an upgraded `ws` that has read nothing yet (a connection that must
    /// authenticate gets no welcome first).
    pub fn without_welcome(ws: WebSocket<ClientStream>) -> RoomClient {
        RoomClient { ws, id: String::new(), next_id: 0, pending: VecDeque::new() }
    }

    /// The underlying WebSocket, for sending what this client does not (binary frames,
    /// closes).
    pub fn ws(&mut self) -> &mut WebSocket<ClientStream> {
        &mut self.ws
    }

    /// Sends one JSON value as a text frame.
    pub fn send(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    /// Sends a text frame as is.
    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send a text frame");
    }

    /// Queues a JSON value without flushing (for bursts); see [`RoomClient::flush`].
    pub fn write(&mut self, value: &Value) {
        self.ws.write(Message::text(value.to_string())).expect("queue a text frame");
    }

    pub fn flush(&mut self) {
        self.ws.flush().expect("flush");
    }

    /// The next frame from the server as JSON (frames kept by [`RoomClient::request`]
    /// first). Panics on anything but a text frame holding one JSON object.
    pub fn next(&mut self) -> Value {
        if let Some(value) = self.pending.pop_front() {
            return value;
        }
        self.read_json()
    }

    fn read_json(&mut self) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {}", text.as_str()));
                    assert!(value.is_object(), "server sent a JSON non-object: {value}");
                    return value;
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("expected a text frame, got {other:?}"),
                Err(e) => panic!("reading from the room server: {e}"),
            }
        }
    }

    /// Sends `request` with a fresh numeric `id` and returns the reply carrying it; frames
    /// that arrive before it are kept for [`RoomClient::next`].
    pub fn request(&mut self, mut request: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        request["id"] = json!(id);
        self.send(&request);
        loop {
            let value = self.read_json();
            if value.get("id") == Some(&json!(id)) {
                return value;
            }
            assert!(value.get("id").is_none(), "a reply to another request: {value} (waiting for {id})");
            self.pending.push_back(value);
        }
    }

    /// [`RoomClient::request`], expecting success: returns the `ok` body.
    pub fn ok(&mut self, request: Value) -> Value {
        let reply = self.request(request.clone());
        match reply.get("ok") {
            Some(ok) => ok.clone(),
            None => panic!("{request} failed: {reply}"),
        }
    }

    /// [`RoomClient::request`], expecting an error: returns its code.
    pub fn error(&mut self, request: Value) -> u64 {
        let reply = self.request(request.clone());
        let error = reply.get("error").unwrap_or_else(|| panic!("{request} succeeded: {reply}"));
        assert!(error["message"].is_string(), "an error has a message: {reply}");
        error["code"].as_u64().unwrap_or_else(|| panic!("error without a numeric code: {reply}"))
    }

    /// Joins `room` (no presence, no `since`); returns the `ok` body.
    pub fn join(&mut self, room: &str) -> Value {
        self.ok(json!({"op": "join", "room": room}))
    }

    /// Publishes `data` to `room`; returns the offset.
    pub fn publish(&mut self, room: &str, data: Value) -> u64 {
        let ok = self.ok(json!({"op": "publish", "room": room, "data": data}));
        ok["offset"].as_u64().unwrap_or_else(|| panic!("publish reply without an offset: {ok}"))
    }

    /// Sends a `ping` with an id and returns every frame the server sent before its reply
    /// (including frames kept earlier), in order.
    pub fn barrier(&mut self) -> Vec<Value> {
        let reply = self.request(json!({"op": "ping"}));
        assert_eq!(reply["ok"], json!({}), "ping reply");
        self.pending.drain(..).collect()
    }

    /// The frames kept while waiting for replies (what arrived before them), in order.
    pub fn take_pending(&mut self) -> Vec<Value> {
        self.pending.drain(..).collect()
    }

    /// Asserts that nothing was sent to this client (see [`RoomClient::barrier`]).
    pub fn expect_nothing(&mut self) {
        let got = self.barrier();
        assert!(got.is_empty(), "expected nothing, got {got:?}");
    }

    /// The next `message` push for `room`, skipping nothing: panics on any other frame.
    pub fn next_message(&mut self) -> Value {
        let value = self.next();
        assert_eq!(value["op"], "message", "expected a message push, got {value}");
        value
    }

    /// Reads until the server's close frame; returns it and the JSON frames before it.
    pub fn read_until_close(&mut self) -> (Vec<Value>, Option<CloseFrame>) {
        let mut before: Vec<Value> = self.pending.drain(..).collect();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    before.push(serde_json::from_str(text.as_str()).expect("server sent invalid JSON"))
                }
                Ok(Message::Close(frame)) => return (before, frame),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("expected text or a close, got {other:?}"),
                Err(e) => panic!("reading until the close: {e} (after {} frames)", before.len()),
            }
        }
    }
}

/// The offset of a message push (panics when it has none).
pub fn offset_of(message: &Value) -> u64 {
    message["offset"].as_u64().unwrap_or_else(|| panic!("message without an offset: {message}"))
}
