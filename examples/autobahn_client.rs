//! The client role against Autobahn's fuzzingserver (issue 17, item 2): runs every case
//! the server has, echoing each message back as `wsedge::client` receives it, then asks
//! the server to write its report.
//!
//!   wstest -m fuzzingserver -s autobahn/fuzzingserver.json   # listens on 9001
//!   cargo run --release --example autobahn_client -- ws://127.0.0.1:9001
//!
//! Each case is a connection to `/runCase?case=N&agent=wsedge`; the case ends when the
//! server closes (or the connection fails, which some cases expect).

use std::time::Duration;

use wsedge::client::Client;
use wsedge::proto::{CloseCode, Event};

const AGENT: &str = "wsedge";

/// Longest a case may stay silent before the client gives up on it.
const CASE_SILENCE: Duration = Duration::from_secs(60);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let count = case_count(&base)?;
    eprintln!("autobahn client: {count} cases at {base}");
    for case in 1..=count {
        if let Err(e) = run_case(&format!("{base}/runCase?case={case}&agent={AGENT}")) {
            eprintln!("autobahn client: case {case}: {e}");
        }
    }
    let mut report = Client::connect(&format!("{base}/updateReports?agent={AGENT}"), &[], None)?;
    // Until the server closes, fails, or stays silent (a timeout ends the wait too).
    while let Ok(Some(event)) = report.recv(CASE_SILENCE) {
        if matches!(event, Event::Close(_)) {
            break;
        }
    }
    eprintln!("autobahn client: report written");
    Ok(())
}

/// The server's first message on `/getCaseCount` is the number of cases.
fn case_count(base: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let mut client = Client::connect(&format!("{base}/getCaseCount"), &[], None)?;
    loop {
        match client.recv(CASE_SILENCE)? {
            Some(Event::Message { data, .. }) => return Ok(std::str::from_utf8(&data)?.trim().parse()?),
            Some(_) => {}
            None => return Err("no case count".into()),
        }
    }
}

/// Echoes every message until the case ends.
fn run_case(url: &str) -> std::io::Result<()> {
    let mut client = Client::connect(url, &[], None)?;
    loop {
        match client.recv(CASE_SILENCE)? {
            Some(Event::Message { kind, data }) => client.send(kind, data)?,
            Some(Event::Close(_)) => return Ok(()),
            Some(_) => {}
            None => return client.close(CloseCode::NORMAL, "case timed out"),
        }
    }
}
