//! Whether a run measured what its report says: a server of the wrong kind for the
//! scenario ([`WrongKind`], told by what it sends; it stops the run) and a report whose
//! numbers count failures rather than the server ([`RunFailure`]). Either is exit code 1,
//! with a sentence saying why. No IO: the coordinator prints.

use std::fmt;

use super::report::Report;

/// Longest excerpt of an unexpected message quoted in an error.
const EXCERPT_CHARS: usize = 80;

/// What the server sent shows it is not the kind the scenario drives: nothing it would
/// report would measure what the report claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrongKind {
    /// `echo`: a message that carries no bench stamp (a room server's welcome, say).
    NotAnEcho {
        /// The URL of the connection that found out.
        url: String,
        /// What it sent, cut to a few dozen characters.
        got: String,
    },
    /// `echo`: a connection received a message another connection sent (a relay room).
    OthersMessage {
        /// The URL of the connection that found out.
        url: String,
    },
    /// Raw fan-out: a message no bench connection published (the room protocol's welcome).
    NotARelay {
        /// The URL of the connection that found out.
        url: String,
        /// What it sent, cut to a few dozen characters.
        got: String,
    },
    /// `--rooms-protocol`: the upgrade response did not select `wsedge.v1`.
    NoSubprotocol {
        /// The URL of the connection that found out.
        url: String,
    },
    /// `--rooms-protocol`: the join request came back as sent.
    JoinEchoed {
        /// The URL of the connection that found out.
        url: String,
    },
    /// Fan-out: every message came back to its publisher only, none to another member.
    NoFanOut {
        /// The first URL (where the publishers connect).
        url: String,
        /// Messages that came back to their publisher.
        own_copies: u64,
    },
}

impl WrongKind {
    /// `got` quoted for a message: its first characters, lossily decoded.
    pub fn excerpt(message: &[u8]) -> String {
        let text = String::from_utf8_lossy(message);
        let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
        if text.chars().nth(EXCERPT_CHARS).is_some() {
            out.push('…');
        }
        out
    }
}

impl fmt::Display for WrongKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WrongKind::NotAnEcho { url, got } => write!(
                f,
                "{url} answered with something that is not an echo of what was sent: {got} \
                 (a room server? `bench echo` needs an echo server such as `wsedge echo`; drive \
                 `wsedge serve` with `bench fanout` at /relay/ROOM, or at /ws with --rooms-protocol)"
            ),
            WrongKind::OthersMessage { url } => write!(
                f,
                "{url} is not an echo server: a connection received a message another connection \
                 sent (a relay room? drive it with `bench fanout`; `bench echo` needs an echo \
                 server such as `wsedge echo`)"
            ),
            WrongKind::NotARelay { url, got } => write!(
                f,
                "{url} is not a raw relay room: it sent {got}, which no bench connection published \
                 (the wsedge.v1 endpoint? add --rooms-protocol, or use a relay room: `wsedge serve` \
                 at /relay/ROOM, `wsedge relay` at any path)"
            ),
            WrongKind::NoSubprotocol { url } => write!(
                f,
                "{url} did not accept the wsedge.v1 subprotocol, so it does not speak the room \
                 protocol (`wsedge serve` does, at /ws; without --rooms-protocol the bench uses a \
                 raw relay room such as /relay/ROOM)"
            ),
            WrongKind::JoinEchoed { url } => write!(
                f,
                "{url} sent the join request back as it was: an echo or relay endpoint, not the \
                 wsedge.v1 room protocol (`wsedge serve` speaks it at /ws; drop --rooms-protocol \
                 for a relay room)"
            ),
            WrongKind::NoFanOut { url, own_copies } => write!(
                f,
                "{url} does not fan out: {} received came back only \
                 to the connection that published it, none reached another member (an echo \
                 server? `bench fanout` needs a room: `wsedge serve` at /relay/ROOM or at /ws with \
                 --rooms-protocol, or `wsedge relay`)",
                if *own_copies == 1 {
                    "the 1 message".to_owned()
                } else {
                    format!("each of the {own_copies} messages")
                }
            ),
        }
    }
}

/// Why a report's numbers do not measure the server, though the run completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFailure {
    /// Not one connection opened (`failures` says why).
    NoConnection,
    /// Connections opened, but not one message was delivered in the measured window.
    NothingDelivered,
    /// More errors than what the run counts as done (deliveries; for idle, connections
    /// still open at the end).
    ErrorsDominate {
        /// Errors after connections opened.
        errors: u64,
        /// What the run did count as done.
        done: u64,
        /// What `done` counts: one, and more than one.
        what: [&'static str; 2],
    },
}

impl RunFailure {
    /// What is wrong with `report`, if anything.
    pub fn of(report: &Report) -> Option<RunFailure> {
        if report.connections_open == 0 {
            return Some(RunFailure::NoConnection);
        }
        let (done, what) = match report.scenario {
            "idle" => (report.connections_open_at_end, ["connection open at the end", "connections open at the end"]),
            _ => (report.deliveries, ["delivery in the measured window", "deliveries in the measured window"]),
        };
        if report.errors > 0 && report.errors >= done {
            return Some(RunFailure::ErrorsDominate { errors: report.errors, done, what });
        }
        if report.scenario != "idle" && report.deliveries == 0 {
            return Some(RunFailure::NothingDelivered);
        }
        None
    }
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunFailure::NoConnection => f.write_str("no connection opened (the reasons are listed under `failed`)"),
            RunFailure::NothingDelivered => {
                f.write_str("no message was delivered in the measured window: there is nothing to report")
            }
            RunFailure::ErrorsDominate { errors, done, what: [one, many] } => write!(
                f,
                "{errors} {} against {done} {}: the errors dominate, so these numbers \
                 measure failures, not the server (the kinds are listed under `errors`)",
                if *errors == 1 { "error" } else { "errors" },
                if *done == 1 { one } else { many },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::sample_report;
    use super::*;

    #[test]
    fn runs_that_measure_failures_are_failures() {
        let mut echo = sample_report("echo");
        echo.deliveries = 1000;
        echo.errors = 3;
        assert_eq!(RunFailure::of(&echo), None, "a few errors among many deliveries");
        echo.errors = 1000;
        assert!(matches!(RunFailure::of(&echo), Some(RunFailure::ErrorsDominate { errors: 1000, done: 1000, .. })));
        echo.errors = 0;
        echo.deliveries = 0;
        assert_eq!(RunFailure::of(&echo), Some(RunFailure::NothingDelivered));
        echo.connections_open = 0;
        assert_eq!(RunFailure::of(&echo), Some(RunFailure::NoConnection));

        // Idle delivers nothing by design; what counts is connections that stayed.
        let mut idle = sample_report("idle");
        assert_eq!(RunFailure::of(&idle), None);
        idle.errors = 1;
        idle.connections_open_at_end = 0;
        assert!(matches!(RunFailure::of(&idle), Some(RunFailure::ErrorsDominate { done: 0, .. })));
    }

    #[test]
    fn long_messages_are_cut_in_errors() {
        assert_eq!(WrongKind::excerpt(br#"{"op":"welcome"}"#), r#"{"op":"welcome"}"#);
        let long = WrongKind::excerpt(&[b'x'; 200]);
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
