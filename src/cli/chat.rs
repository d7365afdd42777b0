//! `wsedge chat`: a terminal client for the room server (`wsedge.v1`, docs/protocol.md),
//! and the reference for a client built on [`RoomClient`]. It joins one room (printing its
//! recent history), publishes each line typed on stdin, and prints what arrives for a
//! person to read. It stays connected: after a drop or a server restart it reconnects by
//! itself, says so on stderr, prints what it missed (each message once), and says when
//! messages could not be recovered. It speaks only through `wsedge::client` and
//! `wsedge::wire`: nothing of the server's room layer.
//!
//! What the events mean for the person at the terminal is decided in [`Chat::on_event`],
//! with no IO (unit-tested below); [`chat`] owns stdin, stdout and the [`RoomClient`].
//! Refusals are told apart by error code ([`wire::code`]), never by an error's message
//! text, which is only printed.

use std::io::ErrorKind;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use wsedge::client::rooms::{JoinOptions, ResetReason, RoomClient, RoomEvent};
use wsedge::client::tls::TrustArgs;
use wsedge::client::WsUrl;
use wsedge::wire;

/// How long chat waits for an event before looking at stdin again.
const TICK: Duration = Duration::from_millis(50);
/// After stdin ends, how long chat waits for the server to take the messages typed.
const DRAIN: Duration = Duration::from_secs(5);

/// `wsedge chat`'s flags.
#[derive(Args)]
pub(crate) struct ChatArgs {
    /// The room server's WebSocket URL (ws:// or wss://).
    #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
    url: String,
    /// The room to join.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// How many of the room's last messages to print on joining (0: none).
    #[arg(long, value_name = "N", default_value_t = 20)]
    history: usize,
    /// A JWT to authenticate with, sent in an `auth` request before the join (default:
    /// none, anonymous). Prefer the environment variable: command lines are visible to
    /// other users. A token the server refuses ends the chat.
    #[arg(long, env = "WSEDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Which certificates a `wss://` server may present.
    #[command(flatten)]
    trust: TrustArgs,
}

/// `wsedge chat`: stdin lines become publishes; events are printed as they arrive. Ends
/// with `Ok` when stdin ends (after the messages typed were published), with an `Err`
/// when the chat cannot go on: a refused token or join, or a first connection refused for
/// a reason retrying will not mend.
pub(crate) fn chat(args: &ChatArgs) -> Result<(), String> {
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
    let mut client = RoomClient::new(&args.url)?;
    if url.tls {
        client = client.with_tls(args.trust.client_config()?);
    }
    if let Some(token) = token {
        client = client.with_token(token);
    }
    client.join(&args.room, JoinOptions { history: args.history, presence: true });
    let mut state = Chat::new(shown, token.is_some());

    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Set when stdin ends: the publishes still unsettled get until then.
    let mut drain_until: Option<Instant> = None;
    loop {
        while drain_until.is_none() {
            match lines.try_recv() {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => {
                    if let Err(full) = client.publish(&args.room, json!({"text": line})) {
                        eprintln!("chat: not sent: {full}");
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => drain_until = Some(Instant::now() + DRAIN),
            }
        }
        if let Some(until) = drain_until {
            let unsent = client.queued_publishes();
            if unsent == 0 || Instant::now() >= until {
                client.close();
                return match unsent {
                    0 => Ok(()),
                    1 => Err("1 message typed was not published".to_owned()),
                    n => Err(format!("{n} messages typed were not published")),
                };
            }
        }
        let Some(event) = client.next_event(TICK) else { continue };
        let reaction = state.on_event(&event, client.last_connect_error());
        for line in reaction.lines {
            match line {
                Line::Out(text) => println!("{text}"),
                Line::Note(text) => eprintln!("chat: {text}"),
            }
        }
        match reaction.next {
            Next::Continue => {}
            Next::JoinWithoutPresence => {
                client.join(&args.room, JoinOptions { history: args.history, presence: false });
            }
            Next::End(why) => {
                client.close();
                return Err(why);
            }
        }
    }
}

/// A line for the person at the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// What happens in the room: stdout.
    Out(String),
    /// About the connection: stderr, after `chat: `.
    Note(String),
}

/// What the chat does after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    Continue,
    /// Join the room again without presence (the first join's was refused with 403).
    JoinWithoutPresence,
    /// Close and end with this error.
    End(String),
}

/// An event's lines and what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reaction {
    lines: Vec<Line>,
    next: Next,
}

impl Reaction {
    fn go_on(lines: Vec<Line>) -> Reaction {
        Reaction { lines, next: Next::Continue }
    }
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
    /// A join succeeded: a later refusal (of a rejoin) ends the chat.
    Settled,
}

/// What chat knows of its connection and room, to turn [`RoomEvent`]s into lines. No IO.
#[derive(Debug)]
struct Chat {
    /// The server's URL without its query, for errors.
    url: String,
    has_token: bool,
    joining: Joining,
    /// A server welcomed us once: from then on every failure is retried.
    welcomed_once: bool,
    /// A connection is open and welcomed now.
    connected: bool,
    /// "authenticated as" is said once, not after every reconnect.
    authenticated_once: bool,
    /// The first refused connection got its hint.
    refused_hint_given: bool,
}

impl Chat {
    fn new(url: &str, has_token: bool) -> Chat {
        Chat {
            url: url.to_owned(),
            has_token,
            joining: Joining::WithPresence,
            welcomed_once: false,
            connected: false,
            authenticated_once: false,
            refused_hint_given: false,
        }
    }

    /// One event from the [`RoomClient`]: the lines to print and what to do next.
    /// `connect_error` is [`RoomClient::last_connect_error`] when the event came.
    fn on_event(&mut self, event: &RoomEvent, connect_error: Option<ErrorKind>) -> Reaction {
        let out = |text: String| vec![Line::Out(text)];
        match event {
            RoomEvent::Connected { client, user } => {
                self.connected = true;
                if std::mem::replace(&mut self.welcomed_once, true) {
                    return Reaction::go_on(vec![Line::Note(format!("reconnected as {client}"))]);
                }
                Reaction::go_on(out(match user {
                    Some(user) => format!("* connected as {client} (user {user})"),
                    None => format!("* connected as {client}"),
                }))
            }
            RoomEvent::Disconnected { reason, retry_in: Some(delay) } => {
                self.on_disconnected(reason, *delay, connect_error)
            }
            // `Stopped` follows with the same reason.
            RoomEvent::Disconnected { retry_in: None, .. } => Reaction::go_on(Vec::new()),
            RoomEvent::Stopped { reason } => Reaction { lines: Vec::new(), next: Next::End(reason.clone()) },
            RoomEvent::Authenticated { user } => {
                if std::mem::replace(&mut self.authenticated_once, true) {
                    return Reaction::go_on(Vec::new());
                }
                Reaction::go_on(out(format!("* authenticated as {}", user.as_deref().unwrap_or("?"))))
            }
            RoomEvent::AuthRefused { code, message } => {
                let lines = out(format!("! error {code}: {message}"));
                // A 429 (too many `auth` requests) says nothing about the token.
                if *code == wire::code::TOO_MANY_REQUESTS {
                    return Reaction::go_on(lines);
                }
                Reaction { lines, next: Next::End("authentication failed".to_owned()) }
            }
            RoomEvent::Joined { room, members, first, .. } => {
                let mut lines = Vec::new();
                if let Joining::WithoutPresence { refusal } = std::mem::replace(&mut self.joining, Joining::Settled) {
                    lines.push(Line::Out(refusal));
                    lines.push(Line::Out("* joining without presence (not allowed here)".to_owned()));
                }
                let verb = if *first { "joined" } else { "rejoined" };
                let noun = if *members == 1 { "member" } else { "members" };
                lines.push(Line::Out(format!("* {verb} {room} ({members} {noun})")));
                Reaction::go_on(lines)
            }
            RoomEvent::JoinRefused { room, code, message } => self.on_join_refused(room, *code, message),
            RoomEvent::Reset { room, reason, epoch, previous_epoch, previous_offset, messages, .. } => {
                let mut lines = Vec::new();
                let same_epoch = previous_epoch.as_deref() == Some(epoch.as_str());
                if *reason != ResetReason::Join {
                    lines.push(Line::Out(gap_line(room, *reason, same_epoch, *previous_offset, messages)));
                }
                lines.extend(event.unseen_messages().iter().filter_map(describe).map(Line::Out));
                Reaction::go_on(lines)
            }
            RoomEvent::Message { message, .. } => {
                Reaction::go_on(describe(message).into_iter().map(Line::Out).collect())
            }
            RoomEvent::Presence { push, .. } => Reaction::go_on(describe(push).into_iter().map(Line::Out).collect()),
            RoomEvent::UserMessage { data, .. } => Reaction::go_on(out(format!("* to you: {data}"))),
            // Our own message comes back as a push, which is what is printed.
            RoomEvent::Published { .. } => Reaction::go_on(Vec::new()),
            RoomEvent::PublishRefused { code, message, .. } | RoomEvent::Error { code, message } => {
                Reaction::go_on(out(format!("! error {code}: {message}")))
            }
        }
    }

    fn on_disconnected(&mut self, reason: &str, delay: Duration, connect_error: Option<ErrorKind>) -> Reaction {
        let was_connected = std::mem::replace(&mut self.connected, false);
        let after = format!("{:.1} s", delay.as_secs_f64());
        if self.welcomed_once {
            let line = if was_connected {
                format!("connection lost ({reason}); reconnecting in {after}")
            } else {
                format!("{reason}; retrying in {after}")
            };
            return Reaction::go_on(vec![Line::Note(line)]);
        }
        match connect_error {
            // The server answered, but not with an upgrade we take (a certificate refused, an
            // HTTP status, TLS on a ws:// URL): a newcomer's misconfiguration, which retrying
            // would only repeat. Once welcomed, the same is taken for a passing state.
            Some(ErrorKind::InvalidData | ErrorKind::InvalidInput) => {
                Reaction { lines: Vec::new(), next: Next::End(format!("{}: {reason}", self.url)) }
            }
            Some(ErrorKind::ConnectionRefused) if !std::mem::replace(&mut self.refused_hint_given, true) => {
                let line = format!("{reason} (is the server running? `wsedge serve` starts one); retrying in {after}");
                Reaction::go_on(vec![Line::Note(line)])
            }
            _ => Reaction::go_on(vec![Line::Note(format!("{reason}; retrying in {after}"))]),
        }
    }

    fn on_join_refused(&mut self, room: &str, code: u16, message: &str) -> Reaction {
        let line = format!("! error {code}: {message}");
        if code == wire::code::FORBIDDEN && self.joining == Joining::WithPresence {
            self.joining = Joining::WithoutPresence { refusal: line };
            return Reaction { lines: Vec::new(), next: Next::JoinWithoutPresence };
        }
        // docs/protocol.md, Authentication: on a `--require-auth` server every request
        // before a valid `auth` gets 401; without a token chat sent none.
        let why = if code == wire::code::UNAUTHORIZED && !self.has_token {
            "the server requires authentication: pass --token TOKEN or set WSEDGE_TOKEN".to_owned()
        } else {
            format!("cannot join {room}")
        };
        Reaction { lines: vec![Line::Out(line)], next: Next::End(why) }
    }
}

/// The line saying a room was reloaded because messages could not be recovered.
/// `same_epoch`: the room's history goes on (offsets after `previous_offset` that the
/// reload does not hold are lost); else it restarted and the old offsets mean nothing.
fn gap_line(room: &str, reason: ResetReason, same_epoch: bool, previous_offset: u64, messages: &[Value]) -> String {
    let what = match (reason, same_epoch) {
        (ResetReason::Reset, _) => "the server lost track of the room's messages, as when its Redis link was down",
        (_, true) => "messages were missed while disconnected",
        // Whether anything was published to the old history after we left, nobody knows.
        (_, false) => "messages may have been missed while disconnected",
    };
    let first_kept = messages.iter().filter_map(|m| m["offset"].as_u64()).find(|&o| o > previous_offset);
    let lost_from = previous_offset.saturating_add(1);
    let detail = match (same_epoch, reason, first_kept) {
        (false, ResetReason::Reset, _) => "the room's history restarted".to_owned(),
        (false, ..) => {
            "the room's history restarted: the server restarted without Redis, or the room expired".to_owned()
        }
        (true, _, Some(kept)) if kept == lost_from => "recovered from the room's history".to_owned(),
        (true, _, Some(kept)) if kept == lost_from + 1 => format!("#{lost_from} is no longer kept"),
        (true, _, Some(kept)) => format!("#{lost_from} to #{} are no longer kept", kept - 1),
        (true, _, None) => format!("nothing after #{previous_offset} is kept"),
    };
    format!("* history gap in {room}: {what} ({detail})")
}

/// A message or presence push as a line for a person to read (`None`: nothing to say).
fn describe(v: &Value) -> Option<String> {
    let str_or = |v: &Value, default: &'static str| v.as_str().unwrap_or(default).to_owned();
    // A member by its user when it has one, else its client id; no client: the backend.
    let who = |m: &Value| m["user"].as_str().or(m["client"].as_str()).unwrap_or("backend").to_owned();
    let line = match v["op"].as_str() {
        Some("message") => {
            let data = &v["data"];
            let body = data["text"].as_str().map_or_else(|| data.to_string(), str::to_owned);
            // Ephemeral messages have no offset.
            let offset = v["offset"].as_u64().map_or_else(String::new, |o| format!(" #{o}"));
            format!("[{}{offset}] {}: {}", str_or(&v["room"], "?"), who(&v["from"]), body)
        }
        Some(op @ ("join" | "leave")) => {
            let verb = if op == "join" { "joined" } else { "left" };
            format!("* {} {verb} {}", who(&v["member"]), str_or(&v["room"], "?"))
        }
        _ => return None,
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Chat {
        Chat::new("ws://h/ws", false)
    }

    fn message(offset: u64, text: &str) -> Value {
        json!({"op": "message", "room": "r", "offset": offset, "from": {"client": "c1", "user": "ann"}, "data": {"text": text}})
    }

    fn out(lines: &[&str]) -> Vec<Line> {
        lines.iter().map(|l| Line::Out((*l).to_owned())).collect()
    }

    fn joined(members: u64, first: bool) -> RoomEvent {
        RoomEvent::Joined { room: "r".into(), epoch: "e1".into(), offset: 0, members, recovered: false, first }
    }

    fn refused(code: u16, message: &str) -> RoomEvent {
        RoomEvent::JoinRefused { room: "r".into(), code, message: message.into() }
    }

    fn connected() -> RoomEvent {
        RoomEvent::Connected { client: "c1".into(), user: None }
    }

    fn lost(reason: &str) -> RoomEvent {
        RoomEvent::Disconnected { reason: reason.into(), retry_in: Some(Duration::from_millis(1200)) }
    }

    fn reset(
        reason: ResetReason,
        epochs: (Option<&str>, &str),
        previous_offset: u64,
        messages: Vec<Value>,
    ) -> RoomEvent {
        RoomEvent::Reset {
            room: "r".into(),
            reason,
            epoch: epochs.1.into(),
            offset: 9,
            previous_epoch: epochs.0.map(str::to_owned),
            previous_offset,
            messages,
        }
    }

    #[test]
    fn members_are_counted_in_english() {
        let mut chat = chat();
        assert_eq!(chat.on_event(&joined(1, true), None), Reaction::go_on(out(&["* joined r (1 member)"])));
        assert_eq!(chat.on_event(&joined(2, false), None), Reaction::go_on(out(&["* rejoined r (2 members)"])));
    }

    #[test]
    fn the_history_on_join_is_printed_as_message_lines() {
        let history = vec![message(4, "four"), message(5, "five")];
        let reaction = chat().on_event(&reset(ResetReason::Join, (None, "e1"), 0, history), None);
        assert_eq!(reaction, Reaction::go_on(out(&["[r #4] ann: four", "[r #5] ann: five"])));
    }

    #[test]
    fn a_gap_in_the_same_epoch_prints_what_is_lost_and_only_the_messages_not_seen() {
        let history = vec![message(5, "five"), message(6, "six"), message(7, "seven")];
        let reaction = chat().on_event(&reset(ResetReason::NotRecovered, (Some("e1"), "e1"), 2, history), None);
        assert_eq!(
            reaction.lines,
            out(&[
                "* history gap in r: messages were missed while disconnected (#3 to #4 are no longer kept)",
                "[r #5] ann: five",
                "[r #6] ann: six",
                "[r #7] ann: seven",
            ])
        );
        // Some already seen: not again.
        let history = vec![message(5, "five"), message(6, "six")];
        let reaction = chat().on_event(&reset(ResetReason::NotRecovered, (Some("e1"), "e1"), 5, history), None);
        assert_eq!(
            reaction.lines,
            out(&[
                "* history gap in r: messages were missed while disconnected (recovered from the room's history)",
                "[r #6] ann: six"
            ])
        );
    }

    #[test]
    fn a_new_epoch_says_the_history_restarted_and_prints_all_of_it() {
        let reaction =
            chat().on_event(&reset(ResetReason::NotRecovered, (Some("e1"), "e2"), 40, vec![message(1, "new")]), None);
        assert_eq!(reaction.lines.len(), 2);
        let Line::Out(gap) = &reaction.lines[0] else { panic!("{reaction:?}") };
        assert_eq!(
            gap,
            "* history gap in r: messages may have been missed while disconnected (the room's history restarted: \
             the server restarted without Redis, or the room expired)"
        );
        assert_eq!(reaction.lines[1], Line::Out("[r #1] ann: new".into()));
        let reaction = chat().on_event(&reset(ResetReason::Reset, (Some("e1"), "e2"), 40, vec![]), None);
        assert!(matches!(&reaction.lines[..], [Line::Out(l)] if l.contains("lost track")), "{reaction:?}");
    }

    #[test]
    fn a_403_to_the_join_with_presence_retries_without_it_once() {
        let mut chat = chat();
        // The text says nothing about presence: the code alone decides.
        let reaction = chat.on_event(&refused(wire::code::FORBIDDEN, "no"), None);
        assert_eq!(reaction, Reaction { lines: vec![], next: Next::JoinWithoutPresence });
        assert_eq!(
            chat.on_event(&joined(1, true), None),
            Reaction::go_on(out(&[
                "! error 403: no",
                "* joining without presence (not allowed here)",
                "* joined r (1 member)"
            ]))
        );
    }

    #[test]
    fn a_403_to_the_join_without_presence_is_a_refusal_shown_once() {
        let mut chat = chat();
        let text = "not allowed to see presence in this room"; // the text does not matter
        assert_eq!(chat.on_event(&refused(403, text), None).next, Next::JoinWithoutPresence);
        let reaction = chat.on_event(&refused(wire::code::FORBIDDEN, "not allowed to join"), None);
        assert_eq!(reaction.lines, out(&["! error 403: not allowed to join"]));
        assert_eq!(reaction.next, Next::End("cannot join r".into()));
    }

    #[test]
    fn a_401_to_the_join_without_a_token_says_how_to_pass_one() {
        let reaction = chat().on_event(&refused(wire::code::UNAUTHORIZED, "authenticate first"), None);
        let Next::End(why) = reaction.next else { panic!("{reaction:?}") };
        assert!(why.contains("--token") && why.contains("WSEDGE_TOKEN"), "{why}");
        // With a token, the refusal of the token says it (AuthRefused), not the join.
        let reaction = Chat::new("ws://h/ws", true).on_event(&refused(401, "authenticate first"), None);
        assert_eq!(reaction.next, Next::End("cannot join r".into()));
    }

    #[test]
    fn a_refused_token_or_a_stop_ends_the_chat() {
        let refused = RoomEvent::AuthRefused { code: 401, message: "invalid token: expired".into() };
        let reaction = chat().on_event(&refused, None);
        assert_eq!(reaction.lines, out(&["! error 401: invalid token: expired"]));
        assert_eq!(reaction.next, Next::End("authentication failed".into()));
        let limited = RoomEvent::AuthRefused { code: wire::code::TOO_MANY_REQUESTS, message: "slow down".into() };
        assert_eq!(chat().on_event(&limited, None).next, Next::Continue);
        let stopped = RoomEvent::Stopped { reason: "closed by the server (1008: token expired)".into() };
        assert_eq!(
            chat().on_event(&stopped, None).next,
            Next::End("closed by the server (1008: token expired)".into())
        );
    }

    #[test]
    fn a_first_connection_the_server_answers_wrongly_ends_the_chat_and_others_are_retried() {
        let tls = lost("cannot connect: TLS handshake with 127.0.0.1:1 failed: invalid peer certificate");
        let reaction = chat().on_event(&tls, Some(ErrorKind::InvalidData));
        assert_eq!(
            reaction.next,
            Next::End(
                "ws://h/ws: cannot connect: TLS handshake with 127.0.0.1:1 failed: invalid peer certificate".into()
            )
        );
        // Nobody listening yet: retried, with a hint the first time.
        let mut chat = chat();
        let refused = lost("cannot connect: connection refused");
        let first = chat.on_event(&refused, Some(ErrorKind::ConnectionRefused));
        assert_eq!(first.next, Next::Continue);
        assert!(
            matches!(&first.lines[..], [Line::Note(l)] if l.contains("wsedge serve") && l.ends_with("retrying in 1.2 s"))
        );
        let again = chat.on_event(&refused, Some(ErrorKind::ConnectionRefused));
        assert_eq!(again.lines, vec![Line::Note("cannot connect: connection refused; retrying in 1.2 s".into())]);
    }

    #[test]
    fn after_a_welcome_every_drop_is_retried_and_said_on_stderr() {
        let mut chat = chat();
        assert_eq!(chat.on_event(&connected(), None).lines, out(&["* connected as c1"]));
        let reaction = chat.on_event(&lost("closed by the server (1001: going away)"), None);
        assert_eq!(
            reaction,
            Reaction::go_on(vec![Line::Note(
                "connection lost (closed by the server (1001: going away)); reconnecting in 1.2 s".into()
            )])
        );
        let reaction = chat.on_event(&lost("cannot connect: bad status 502"), Some(ErrorKind::InvalidData));
        assert_eq!(
            reaction,
            Reaction::go_on(vec![Line::Note("cannot connect: bad status 502; retrying in 1.2 s".into())])
        );
        assert_eq!(chat.on_event(&connected(), None), Reaction::go_on(vec![Line::Note("reconnected as c1".into())]));
    }

    #[test]
    fn authenticated_is_said_once_across_reconnects() {
        let mut chat = chat();
        let event = RoomEvent::Authenticated { user: Some("ann".into()) };
        assert_eq!(chat.on_event(&event, None).lines, out(&["* authenticated as ann"]));
        assert_eq!(chat.on_event(&event, None).lines, vec![]);
    }

    #[test]
    fn errors_to_publishes_are_shown_and_the_chat_goes_on() {
        let refused = RoomEvent::PublishRefused { seq: 1, room: "r".into(), code: 403, message: "no".into() };
        assert_eq!(chat().on_event(&refused, None), Reaction::go_on(out(&["! error 403: no"])));
    }
}
