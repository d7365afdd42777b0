//! A room-server client that stays connected: [`RoomClient`] reconnects after a drop or a
//! server restart (backoff with full jitter), rejoins its rooms with `since`, delivers
//! `missed` before live messages and each offset once, reports a room that could not be
//! recovered ([`RoomEvent::Reset`]), sends publishes again after a drop with their
//! idempotency key, and refreshes its token before it expires. Blocking, on
//! [`Client`](super::Client): the program calls [`RoomClient::next_event`] in a loop, which
//! does all the IO. `ws://` and `wss://`.
//!
//! ```no_run
//! use std::time::Duration;
//! use wsedge::client::rooms::{JoinOptions, RoomClient, RoomEvent};
//!
//! let mut client = RoomClient::new("ws://127.0.0.1:9001/ws").unwrap();
//! client.join("lobby", JoinOptions { presence: false, history: 20 });
//! client.publish("lobby", serde_json::json!({"text": "hello"})).unwrap();
//! loop {
//!     match client.next_event(Duration::from_secs(1)) {
//!         Some(RoomEvent::Message { offset, message, .. }) => println!("{offset:?} {message}"),
//!         Some(RoomEvent::Stopped { .. }) => break,
//!         _ => {}
//!     }
//! }
//! ```
//!
//! The protocol's state lives in [`Session`] (no IO, no clock; unit-tested); this file
//! owns the connection, the backoff, the token and time.

mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::{RngExt, SeedableRng};
use rustls::ClientConfig;
use serde_json::Value;

use super::{Client, WsUrl};
use crate::proto::{CloseCode, Event};
use crate::wire::SUBPROTOCOL;
pub use session::{JoinOptions, QueueFull, ResetReason, RoomEvent, Session, SessionLimits};

/// How a [`RoomClient`] reconnects, and its bounds.
#[derive(Debug, Clone)]
pub struct Options {
    /// The backoff's base: the delay before attempt `n` (0-based) is uniformly random in
    /// `[0, min(max_reconnect_delay, min_reconnect_delay * 2^n)]` ("full jitter").
    pub min_reconnect_delay: Duration,
    /// The backoff's cap.
    pub max_reconnect_delay: Duration,
    /// A connection up this long resets the backoff to attempt 0.
    pub stable_after: Duration,
    /// Nothing received for this long: the client pings; twice this long: the link is
    /// taken for dead and a new connection is made.
    pub ping_after: Duration,
    /// Refresh the token this long before its `exp` (at most half its lifetime before).
    pub refresh_before: Duration,
    /// The protocol state's bounds.
    pub limits: SessionLimits,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            min_reconnect_delay: Duration::from_millis(500),
            max_reconnect_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            ping_after: Duration::from_secs(25),
            refresh_before: Duration::from_secs(30),
            limits: SessionLimits::default(),
        }
    }
}

/// The delay before reconnect attempt `attempt` (0-based) with full jitter: `random` in
/// `[0, 1)` scales `min(max, min * 2^attempt)`.
pub fn backoff_delay(attempt: u32, min: Duration, max: Duration, random: f64) -> Duration {
    let ceiling = min.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).min(max);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

/// A JWT's `exp` claim (seconds since the Unix epoch), read without verifying: only to
/// know when to refresh. `None` when the token has none or is not a JWT.
pub fn token_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_u64()
}

/// Where a token comes from: fixed, or asked for before each connection and each refresh.
type TokenSource = Box<dyn FnMut() -> Option<String> + Send>;

/// A room-server client that reconnects and recovers. See the module header.
pub struct RoomClient {
    url: String,
    tls: Option<Arc<ClientConfig>>,
    options: Options,
    token: Option<String>,
    token_source: Option<TokenSource>,
    session: Session,
    link: Option<Link>,
    /// Failed attempts since the last stable connection.
    attempt: u32,
    /// When the next connection attempt is due (now, at first).
    retry_at: Instant,
    /// The last token was refused: reconnecting needs a new one.
    token_refused: bool,
    /// Why the last connection attempt failed (`None` after one that succeeded).
    connect_error: Option<std::io::ErrorKind>,
    stopped: bool,
    rng: rand::rngs::StdRng,
}

/// The current connection and its clocks.
struct Link {
    client: Client,
    since: Instant,
    last_heard: Instant,
    pinged: bool,
    /// When to send the token refresh (`None`: no expiry known, no source to ask, or one
    /// is on its way).
    refresh_at: Option<Instant>,
    /// A refresh is on its way, with its token's `exp` (if any): the next refresh is
    /// scheduled from its reply.
    refreshing: Option<Option<u64>>,
    /// Publishes paused by the server (429 or 503) resume then.
    resume_publishes_at: Option<Instant>,
}

/// After a refresh the server refused for now (429), or one whose token did not move `exp`
/// on, the next is tried this much later at the soonest.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// After a 429 or 503 to a publish, publishing waits this long.
const PUBLISH_PAUSE: Duration = Duration::from_secs(1);

impl RoomClient {
    /// A client for the room server at `url` (`ws://` or `wss://`). Nothing is connected
    /// until [`RoomClient::next_event`] runs.
    pub fn new(url: &str) -> Result<RoomClient, String> {
        // Checked now so that a typo fails here, not on every reconnect.
        WsUrl::parse(url).map_err(|e| format!("{}: {e}", url.split('?').next().unwrap_or_default()))?;
        let mut rng = rand::rngs::StdRng::try_from_rng(&mut rand::rngs::SysRng)
            .map_err(|e| format!("no entropy from the OS: {e}"))?;
        // Publish keys are per room on the server: random, they cannot collide with another
        // client's.
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let key_prefix = (0..12).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
        Ok(RoomClient {
            url: url.to_owned(),
            tls: None,
            options: Options::default(),
            token: None,
            token_source: None,
            session: Session::new(SessionLimits::default(), key_prefix),
            link: None,
            attempt: 0,
            retry_at: Instant::now(),
            token_refused: false,
            connect_error: None,
            stopped: false,
            rng,
        })
    }

    /// The TLS configuration for `wss://` (see [`tls::client_config`](super::tls::client_config)).
    pub fn with_tls(mut self, config: Arc<ClientConfig>) -> RoomClient {
        self.tls = Some(config);
        self
    }

    /// Reconnect and bounds knobs (before the first [`RoomClient::next_event`]).
    pub fn with_options(mut self, options: Options) -> RoomClient {
        self.session.set_limits(options.limits.clone());
        self.options = options;
        self
    }

    /// A fixed token, sent in an `auth` request first on every connection. When the server
    /// refuses it (or closes with "token expired") the client stops: use
    /// [`RoomClient::with_token_source`] to be able to get a new one.
    pub fn with_token(mut self, token: impl Into<String>) -> RoomClient {
        self.token = Some(token.into());
        self
    }

    /// Asks `source` for a token before each connection, and again before the token's
    /// `exp` (minus [`Options::refresh_before`]) to refresh it on the open connection.
    pub fn with_token_source(mut self, source: impl FnMut() -> Option<String> + Send + 'static) -> RoomClient {
        self.token_source = Some(Box::new(source));
        self
    }

    /// Joins `room` now or on connecting, and again after every reconnect.
    pub fn join(&mut self, room: &str, options: JoinOptions) {
        self.session.join(room, options);
    }

    /// Leaves `room`.
    pub fn leave(&mut self, room: &str) {
        self.session.leave(room);
    }

    /// Publishes `data` to `room` (a room joined): sent now, or queued until the room is
    /// joined on a live connection; sent again after a drop until settled. Returns the
    /// sequence number the settling [`RoomEvent::Published`] names.
    pub fn publish(&mut self, room: &str, data: Value) -> Result<u64, QueueFull> {
        self.session.publish(room, data)
    }

    /// The room's epoch and the last offset delivered.
    pub fn position(&self, room: &str) -> Option<(&str, u64)> {
        self.session.position(room)
    }

    /// Publishes not settled yet.
    pub fn queued_publishes(&self) -> usize {
        self.session.queued_publishes()
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// The kind of error the last connection attempt failed with (`None` before any, and
    /// after one that succeeded); its text is in the [`RoomEvent::Disconnected`] reporting
    /// it. `InvalidData` means the server answered, but not with an upgrade this client
    /// takes (a refused TLS certificate, an HTTP status other than 101, TLS on a `ws://`
    /// URL): a misconfiguration that retrying will not mend.
    pub fn last_connect_error(&self) -> Option<std::io::ErrorKind> {
        self.connect_error
    }

    /// Runs the client for up to `timeout`: connects when due, sends, receives. Returns the
    /// next event, or `None` when the time passed with none.
    pub fn next_event(&mut self, timeout: Duration) -> Option<RoomEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.session.poll_event() {
                self.watch_refresh(&event);
                return Some(event);
            }
            let now = Instant::now();
            if self.stopped || now >= deadline {
                return None;
            }
            if self.link.is_none() {
                if now < self.retry_at {
                    std::thread::sleep((self.retry_at.min(deadline) - now).min(Duration::from_millis(100)));
                    continue;
                }
                self.connect();
                continue;
            }
            self.step(now, deadline);
        }
    }

    /// Closes the connection (code 1000) and stops: no reconnects.
    pub fn close(&mut self) {
        if let Some(mut link) = self.link.take() {
            let _ = link.client.close(CloseCode::NORMAL, "bye");
        }
        self.session.disconnected();
        self.stopped = true;
    }

    fn connect(&mut self) {
        let token = match self.token_source.as_mut() {
            Some(source) => source().or_else(|| self.token.clone()),
            None if self.token_refused => {
                return self.stop("the token was refused and there is no token source to get another".to_owned())
            }
            None => self.token.clone(),
        };
        if self.token_refused && token.is_none() {
            return self.stop("the token was refused and the token source gave none".to_owned());
        }
        self.token_refused = false;
        let connected = Client::connect(&self.url, &[SUBPROTOCOL], self.tls.clone());
        self.connect_error = connected.as_ref().err().map(std::io::Error::kind);
        match connected {
            Ok(client) => {
                let now = Instant::now();
                let refresh_at = match (&self.token_source, token.as_deref().and_then(token_expiry)) {
                    (Some(_), Some(exp)) => Some(self.refresh_instant(exp, now)),
                    _ => None,
                };
                self.link = Some(Link {
                    client,
                    since: now,
                    last_heard: now,
                    pinged: false,
                    refresh_at,
                    refreshing: None,
                    resume_publishes_at: None,
                });
                self.session.connected(token.as_deref());
            }
            Err(e) => self.lost(format!("cannot connect: {e}"), false),
        }
    }

    /// When to refresh a token expiring at `exp` (Unix seconds): `refresh_before` ahead, at
    /// most half its remaining life ahead.
    fn refresh_instant(&self, exp: u64, now: Instant) -> Instant {
        let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let left = Duration::from_secs(exp).saturating_sub(unix_now);
        let wait = left.saturating_sub(self.options.refresh_before.min(left / 2));
        // An `exp` centuries away would overflow `Instant`: a day is as good as never here.
        now.checked_add(wait).unwrap_or(now + Duration::from_secs(86_400))
    }

    /// Follows the replies to refreshes: the next one is scheduled from the token the server
    /// took (never sooner than [`REFRESH_RETRY`]), or tried again after a 429.
    fn watch_refresh(&mut self, event: &RoomEvent) {
        let now = Instant::now();
        let next = match (event, self.link.as_ref().and_then(|l| l.refreshing)) {
            (RoomEvent::Authenticated { .. }, Some(Some(exp))) => self.refresh_instant(exp, now),
            (RoomEvent::AuthRefused { code: 429, .. }, Some(_)) => now + REFRESH_RETRY,
            _ => return,
        };
        if let Some(link) = self.link.as_mut() {
            link.refreshing = None;
            link.refresh_at = Some(next.max(now + REFRESH_RETRY));
        }
    }

    /// One read (and the writes before it) on the open connection.
    fn step(&mut self, now: Instant, deadline: Instant) {
        let Some(link) = self.link.as_mut() else { return };
        if link.refresh_at.is_some_and(|at| now >= at) {
            link.refresh_at = None;
            if let Some(token) = self.token_source.as_mut().and_then(|source| source()) {
                if let Some(link) = self.link.as_mut() {
                    link.refreshing = Some(token_expiry(&token));
                }
                self.session.refresh_token(&token);
            }
        }
        let Some(link) = self.link.as_mut() else { return };
        if self.session.publishes_paused() {
            match link.resume_publishes_at {
                None => link.resume_publishes_at = Some(now + PUBLISH_PAUSE),
                Some(at) if now >= at => {
                    link.resume_publishes_at = None;
                    self.session.resume_publishes();
                }
                Some(_) => {}
            }
        }
        if let Some(why) = self.session.take_broken() {
            // A refused token makes the connection useless: the next one needs a new token
            // (or the client stops, see `with_token`).
            self.token_refused |= self.session.token_refused();
            return self.lost(why, true);
        }
        let Some(link) = self.link.as_mut() else { return };
        while let Some(frame) = self.session.poll_transmit() {
            if let Err(e) = link.client.send_text(&frame) {
                return self.lost(format!("write failed: {e}"), true);
            }
        }
        let silent = now.saturating_duration_since(link.last_heard);
        if silent >= self.options.ping_after * 2 {
            return self.lost(format!("nothing heard for {} s", silent.as_secs()), true);
        }
        if silent >= self.options.ping_after && !link.pinged {
            link.pinged = true;
            if let Err(e) = link.client.ping() {
                return self.lost(format!("write failed: {e}"), true);
            }
        }
        let wait = (deadline - now).min(Duration::from_millis(50));
        match link.client.recv(wait) {
            Ok(None) => {}
            Ok(Some(event)) => {
                link.last_heard = Instant::now();
                link.pinged = false;
                match event {
                    Event::Message { data, .. } => {
                        if let Ok(text) = std::str::from_utf8(&data) {
                            self.session.on_text(text);
                        }
                    }
                    Event::Close(frame) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (f.code.0, String::from_utf8_lossy(&f.reason).into_owned())
                        });
                        // RFC 6455 §7.4.1: 1008 is a policy violation; the server uses it for
                        // tokens (docs/protocol.md, "Close codes"): a new token is needed.
                        if code == 1008 && reason.contains("token") {
                            self.token_refused = true;
                        }
                        let why = if reason.is_empty() {
                            format!("closed by the server ({code})")
                        } else {
                            format!("closed by the server ({code}: {reason})")
                        };
                        // 4001: the backend disconnected this user (`POST /api/disconnect`);
                        // coming back on our own would undo what it asked for.
                        if code == 4001 {
                            self.link = None;
                            self.session.disconnected();
                            return self.stop(why);
                        }
                        self.lost(why, false);
                    }
                    _ => {}
                }
            }
            Err(e) => self.lost(e.to_string(), false),
        }
    }

    /// The connection is gone (or to be dropped, `close`): report it and schedule the next.
    fn lost(&mut self, reason: String, close: bool) {
        let now = Instant::now();
        if let Some(mut link) = self.link.take() {
            if close {
                let _ = link.client.close(CloseCode::NORMAL, "reconnecting");
            }
            if now.saturating_duration_since(link.since) >= self.options.stable_after {
                self.attempt = 0;
            }
        }
        self.session.disconnected();
        if self.token_refused && self.token_source.is_none() {
            return self.stop(format!("{reason}; the token was refused and there is no token source to get another"));
        }
        let o = &self.options;
        let delay = backoff_delay(self.attempt, o.min_reconnect_delay, o.max_reconnect_delay, self.rng.random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        self.retry_at = now + delay;
        self.session.report(RoomEvent::Disconnected { reason, retry_in: Some(delay) });
    }

    fn stop(&mut self, reason: String) {
        self.stopped = true;
        self.session.report(RoomEvent::Disconnected { reason: reason.clone(), retry_in: None });
        self.session.report(RoomEvent::Stopped { reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_full_jitter() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(backoff_delay(0, min, max, 1.0), min);
        assert_eq!(backoff_delay(3, min, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(40, min, max, 1.0), max, "no overflow, capped");
        assert_eq!(backoff_delay(3, min, max, 0.0), Duration::ZERO, "full jitter reaches zero");
        assert_eq!(backoff_delay(3, min, max, 0.25), Duration::from_secs(1));
    }

    #[test]
    fn a_jwt_expiry_is_read_without_verifying() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(r#"{"sub":"ann","exp":1700000000}"#));
        assert_eq!(token_expiry(&token), Some(1_700_000_000));
        assert_eq!(token_expiry("not a jwt"), None);
        assert_eq!(token_expiry(&format!("a.{}.c", b64(r#"{"sub":"ann"}"#))), None);
    }
}
