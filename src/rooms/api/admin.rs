//! The operator's live view: the `/admin` page (static files embedded in the binary, served
//! only when an API key is configured) and its data, `GET /api/admin/stream`, an event
//! stream behind the API's bearer key that carries one `stats` event per tick.
//!
//! Owns this worker's admin streams and what one snapshot needs from the last (each room's
//! offset, for its traffic). A snapshot is built from the transport counters `/metrics`
//! renders (`server::Metrics`, every worker's, handed in by `Handler::on_stats`) and the
//! engine's room list (`list_rooms`, the source of `/metrics`' room gauges): one
//! bookkeeping, two views. Its cost is per worker and per room, never per connection, and
//! only a worker holding a stream pays it. Routing and the key check stay in `Api::serve`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::proto::MessageKind;
use crate::rooms::engine::{NodeReport, RoomsSummary, StoreLink};
use crate::rooms::sse;
use crate::server::{ConnId, HttpResponse, Metrics, Now, Outbox};

/// Rooms listed in each of a snapshot's top lists (by members, by traffic).
pub const TOP_ROOMS: usize = 8;

/// Admin streams one worker holds; beyond it a stream is refused (429): each costs a
/// snapshot per tick, and an operator needs a few.
pub const MAX_STREAMS: usize = 16;

/// A room list not answered in this long is asked for again (it should always come; a
/// lost one must not stop the view).
const OVERDUE: Duration = Duration::from_secs(5);

/// This node, as the admin views name it (one per process, shared by its workers).
#[derive(Debug, Clone, Serialize)]
pub struct ThisNode {
    /// Random per process: a restarted node is a new one.
    pub id: String,
    /// The operator's name for it (`RoomsConfig::node_name`; its id when that is empty).
    pub name: String,
    #[serde(skip)]
    started_ms: u64,
}

impl ThisNode {
    /// This process, named `name` (empty: by its random id).
    pub fn new(name: &str) -> Self {
        let id = crate::rooms::protocol::random_id();
        let name = if name.is_empty() { id.clone() } else { name.to_owned() };
        ThisNode { id, name, started_ms: unix_ms(Now::read()) }
    }

    /// The report this node gives the others sharing its store: `workers`' counters
    /// summed (the same as `/metrics`), and its `store` link.
    pub fn report(&self, now: Now, workers: &[Metrics], store: StoreLink) -> NodeReport {
        let mut total = Metrics::default();
        for worker in workers {
            total.add(worker);
        }
        NodeReport {
            id: self.id.clone(),
            name: self.name.clone(),
            at_ms: unix_ms(now),
            started_ms: self.started_ms,
            workers: workers.len() as u64,
            connections: total.connections,
            streams: total.streams,
            messages_in: total.messages_in,
            messages_out: total.messages_out,
            busy_us: workers.iter().map(|w| w.busy_micros).fold(0, u64::saturating_add),
            store,
        }
    }
}

impl Default for ThisNode {
    fn default() -> Self {
        ThisNode::new("")
    }
}

fn unix_ms(now: Now) -> u64 {
    u64::try_from(now.unix.as_millis()).unwrap_or(u64::MAX)
}

/// The admin streams of one worker.
#[derive(Debug, Default)]
pub struct Admin {
    /// The server knows users (tokens are configured): the page offers to disconnect one.
    users: bool,
    node: Arc<ThisNode>,
    /// Answered with a stream, waiting for the server's admission.
    opening: Vec<ConnId>,
    /// Open: each gets every snapshot.
    streams: Vec<ConnId>,
    /// Since when a snapshot waits for the engine's room list (the next tick does not ask
    /// again, unless the answer is overdue).
    asking: Option<Instant>,
    /// Each room's offset at the last snapshot, and when that was.
    last: Option<(Now, HashMap<Arc<str>, u64>)>,
}

/// The transport half of a snapshot, taken at a tick; the rooms half comes with the
/// engine's answer.
#[derive(Debug)]
pub struct Pending {
    at: Now,
    transport: Transport,
    workers: Vec<WorkerStats>,
    store: Option<StoreLink>,
    nodes: Option<Arc<[NodeReport]>>,
}

impl Admin {
    /// No streams yet; `users`: the server knows users (tokens are configured).
    pub fn new(users: bool, node: Arc<ThisNode>) -> Self {
        Admin { users, node, ..Admin::default() }
    }

    /// This node.
    pub fn node(&self) -> &ThisNode {
        &self.node
    }

    /// `GET /api/admin/stream`, its key checked: a stream, admitted by the server next.
    pub fn open(&mut self, conn: ConnId) -> HttpResponse {
        if self.opening.len() + self.streams.len() >= MAX_STREAMS {
            return HttpResponse::json_error(429, "too many admin streams").with_header("Retry-After", "5");
        }
        self.opening.push(conn);
        HttpResponse::event_stream()
            // Operator data: never kept by a proxy or the browser.
            .with_header("X-Content-Type-Options", "nosniff")
    }

    /// The server admitted `conn`'s stream; false if it is not an admin stream.
    pub fn opened(&mut self, out: &mut Outbox, conn: ConnId) -> bool {
        let Some(i) = self.opening.iter().position(|&c| c == conn) else { return false };
        self.opening.swap_remove(i);
        self.streams.push(conn);
        // A first line at once: the page knows it is connected before the first tick.
        out.send(conn, MessageKind::Text, Bytes::from_static(b": wsedge admin\n\n"));
        true
    }

    /// `conn` is gone (whatever it was).
    pub fn close(&mut self, conn: ConnId) {
        self.opening.retain(|&c| c != conn);
        self.streams.retain(|&c| c != conn);
        if self.streams.is_empty() {
            self.last = None;
        }
    }

    /// Whether a snapshot is wanted at the next tick.
    pub fn watching(&self) -> bool {
        !self.streams.is_empty()
    }

    /// A tick: the transport half of a snapshot (with the engine's link to its store, and
    /// the nodes sharing it), and the stream the engine's room list is asked for (`None`:
    /// no stream, or the last list has not come yet).
    pub fn tick(
        &mut self,
        now: Now,
        workers: &[Metrics],
        store: Option<StoreLink>,
        nodes: Option<Arc<[NodeReport]>>,
    ) -> Option<(ConnId, Pending)> {
        let asker = *self.streams.first()?;
        if self.asking.is_some_and(|since| now.mono.saturating_duration_since(since) < OVERDUE) {
            return None;
        }
        self.asking = Some(now.mono);
        let mut total = Metrics::default();
        for worker in workers {
            total.add(worker);
        }
        let pending = Pending {
            at: now,
            transport: Transport::from(&total),
            workers: workers.iter().map(WorkerStats::from).collect(),
            store,
            nodes,
        };
        Some((asker, pending))
    }

    /// The engine's room list came (or `None`: it could not): the snapshot goes to every
    /// admin stream.
    pub fn finish(&mut self, out: &mut Outbox, pending: Pending, rooms: Option<RoomsSummary>, relay_rooms: usize) {
        self.asking = None;
        if self.streams.is_empty() {
            return;
        }
        let rooms = rooms.map(|all| self.rooms_part(pending.at, all, relay_rooms));
        let snapshot = Snapshot {
            at_ms: unix_ms(pending.at),
            users: self.users,
            node: &self.node,
            transport: pending.transport,
            workers: pending.workers,
            rooms,
            store: pending.store,
            nodes: pending.nodes.as_deref(),
        };
        let Ok(json) = serde_json::to_string(&snapshot) else { return };
        let event = Bytes::from(sse::event("stats", None, &json));
        for &conn in &self.streams {
            out.send(conn, MessageKind::Text, event.clone());
        }
    }

    /// The rooms half: totals, and the top rooms by members and by messages since the
    /// last snapshot (a room's offset grows by one per message it orders).
    fn rooms_part(&mut self, now: Now, all: RoomsSummary, relay_rooms: usize) -> Rooms {
        let last = self.last.take();
        let interval_ms = last.as_ref().map_or(0, |(at, _)| {
            u64::try_from(now.mono.saturating_duration_since(at.mono).as_millis()).unwrap_or(u64::MAX)
        });
        let mut offsets = HashMap::with_capacity(all.rooms.len());
        let mut ranked: Vec<TopRoom> = Vec::with_capacity(all.rooms.len());
        let mut published = 0;
        for (name, members, offset) in all.rooms {
            // A room new since the last snapshot counts from 0; the first snapshot has no
            // last one, so no traffic.
            let before = last.as_ref().map(|(_, seen)| seen.get(&name).copied().unwrap_or(0));
            let messages = before.map_or(0, |b| offset.saturating_sub(b));
            published += messages;
            offsets.insert(name.clone(), offset);
            ranked.push(TopRoom { room: name, members, offset, messages });
        }
        self.last = Some((now, offsets));
        let members = ranked.iter().map(|r| r.members).sum();
        let count = ranked.len();
        let top_members = top(&mut ranked, |r| (r.members as u64, r.messages));
        let top_traffic: Vec<TopRoom> =
            top(&mut ranked, |r| (r.messages, r.members as u64)).into_iter().filter(|r| r.messages > 0).collect();
        Rooms {
            count,
            members,
            relay_rooms,
            history_messages: all.history_messages,
            history_bytes: all.history_bytes,
            interval_ms,
            published,
            top_members,
            top_traffic,
        }
    }
}

/// The `TOP_ROOMS` greatest by `key`, greatest first, ties by name; O(rooms).
fn top(rooms: &mut [TopRoom], key: impl Fn(&TopRoom) -> (u64, u64)) -> Vec<TopRoom> {
    let order = |a: &TopRoom, b: &TopRoom| key(b).cmp(&key(a)).then_with(|| a.room.cmp(&b.room));
    let n = TOP_ROOMS.min(rooms.len());
    if n < rooms.len() {
        rooms.select_nth_unstable_by(n, order);
    }
    let mut best = rooms.get(..n).unwrap_or_default().to_vec();
    best.sort_unstable_by(order);
    best
}

/// One `stats` event. Counters are totals since start: the page takes rates from two
/// successive snapshots (as Prometheus does from `/metrics`).
#[derive(Debug, Serialize)]
struct Snapshot<'a> {
    /// Wall-clock time of the tick, Unix milliseconds.
    at_ms: u64,
    /// Users exist on this server (`POST /api/disconnect` can find some).
    users: bool,
    /// The node serving this stream (`id`, `name`).
    node: &'a ThisNode,
    transport: Transport,
    workers: Vec<WorkerStats>,
    /// `null` when the engine could not list its rooms (its store unreachable).
    rooms: Option<Rooms>,
    /// The engine's store link (Redis), or `null`.
    store: Option<StoreLink>,
    /// Every node sharing the store, as each last reported itself (by name), or `null`
    /// without a shared store.
    nodes: Option<&'a [NodeReport]>,
}

/// The server's transport counters, summed over its workers (`/metrics`' lines).
#[derive(Debug, Serialize)]
struct Transport {
    connections: u64,
    connections_total: u64,
    streams: u64,
    streams_total: u64,
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u64,
    abrupt_closes: u64,
    idle_timeouts: u64,
    slow_consumer_closes: u64,
    /// Failed opening handshakes, summed over reasons.
    handshake_failures: u64,
    /// Close handshakes by code and initiator.
    closes: Vec<Close>,
    /// Failed handshakes by reason (reasons counted at least once).
    refusals: Vec<Refusal>,
}

#[derive(Debug, Serialize)]
struct Close {
    code: u16,
    initiator: &'static str,
    count: u64,
}

#[derive(Debug, Serialize)]
struct Refusal {
    reason: &'static str,
    count: u64,
}

impl From<&Metrics> for Transport {
    fn from(m: &Metrics) -> Self {
        let refusals: Vec<Refusal> = m
            .handshake_failures()
            .filter(|&(_, count)| count > 0)
            .map(|(reason, count)| Refusal { reason: reason.label(), count })
            .collect();
        Transport {
            connections: m.connections,
            connections_total: m.connections_total,
            streams: m.streams,
            streams_total: m.streams_total,
            messages_in: m.messages_in,
            messages_out: m.messages_out,
            bytes_in: m.bytes_in,
            bytes_out: m.bytes_out,
            http_requests: m.http_requests,
            abrupt_closes: m.abrupt_closes,
            idle_timeouts: m.idle_timeouts,
            slow_consumer_closes: m.slow_consumer_closes,
            handshake_failures: refusals.iter().map(|r| r.count).sum(),
            closes: m
                .closes
                .iter()
                .map(|(&(code, initiator), &count)| Close { code, initiator: initiator.label(), count })
                .collect(),
            refusals,
        }
    }
}

/// One worker: its connections and its load (`busy_us` grows by the microseconds its loop
/// spent working; a rate of 1,000,000 per second is one core).
#[derive(Debug, Serialize)]
struct WorkerStats {
    connections: u64,
    streams: u64,
    messages_in: u64,
    messages_out: u64,
    busy_us: u64,
}

impl From<&Metrics> for WorkerStats {
    fn from(m: &Metrics) -> Self {
        WorkerStats {
            connections: m.connections,
            streams: m.streams,
            messages_in: m.messages_in,
            messages_out: m.messages_out,
            busy_us: m.busy_micros,
        }
    }
}

/// The rooms as the engine lists them.
#[derive(Debug, Serialize)]
struct Rooms {
    count: usize,
    members: usize,
    relay_rooms: usize,
    history_messages: usize,
    history_bytes: usize,
    /// Since the last snapshot (0 in the first).
    interval_ms: u64,
    /// Messages the rooms ordered since the last snapshot.
    published: u64,
    top_members: Vec<TopRoom>,
    top_traffic: Vec<TopRoom>,
}

#[derive(Debug, Clone, Serialize)]
struct TopRoom {
    #[serde(serialize_with = "as_str")]
    room: Arc<str>,
    members: usize,
    offset: u64,
    /// Messages since the last snapshot.
    messages: u64,
}

fn as_str<S: serde::Serializer>(s: &Arc<str>, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(s)
}

// ---- the page ----

/// One embedded file of the page.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The page and its script and style: no external assets, no build step. Relative links
/// (`admin.js` from `/admin`), so the page works under a proxy's path prefix too.
const ASSETS: [Asset; 3] = [
    Asset { path: "/admin", content_type: "text/html; charset=utf-8", body: include_str!("../../../admin/index.html") },
    Asset {
        path: "/admin.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../admin/admin.js"),
    },
    Asset {
        path: "/admin.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../../admin/admin.css"),
    },
];

/// Its own script and style, `fetch` to its own origin, nothing else: no inline script or
/// event handler runs, so data shown by mistake as HTML still could not act.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is one of the page's files.
pub fn is_page_file(path: &str) -> bool {
    ASSETS.iter().any(|a| a.path == path)
}

/// The page's file at `path`, or `None`.
pub fn page_file(path: &str) -> Option<HttpResponse> {
    let asset = ASSETS.iter().find(|a| a.path == path)?;
    Some(
        HttpResponse { content_type: asset.content_type, ..HttpResponse::text(200, asset.body) }
            .with_header("Cache-Control", "no-cache")
            .with_header("X-Content-Type-Options", "nosniff")
            .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            .with_header("Referrer-Policy", "no-referrer"),
    )
}

/// The page's size: its files' bytes together.
pub fn page_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::metrics::{CloseInitiator, HandshakeFailure};

    /// `secs` after one start, the same for every call of a test run.
    fn at(secs: u64) -> Now {
        static START: std::sync::OnceLock<Now> = std::sync::OnceLock::new();
        START.get_or_init(Now::read).after(Duration::from_secs(secs))
    }

    fn summary(rooms: &[(&str, usize, u64)]) -> RoomsSummary {
        RoomsSummary {
            rooms: rooms.iter().map(|&(n, m, o)| (Arc::from(n), m, o)).collect(),
            history_messages: 3,
            history_bytes: 300,
        }
    }

    fn events(out: &mut Outbox) -> Vec<(ConnId, serde_json::Value)> {
        out.take()
            .into_iter()
            .filter_map(|c| match c {
                crate::server::Command::Message(to, _, body) => {
                    let text = std::str::from_utf8(&body).ok()?.to_owned();
                    let data = text.strip_prefix("event: stats\ndata: ")?.trim_end().to_owned();
                    Some((to, serde_json::from_str(&data).ok()?))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_snapshot_sums_the_workers_and_ranks_rooms_by_members_and_traffic() {
        let (a, b) = (ConnId::from_parts(1, 0), ConnId::from_parts(2, 0));
        let mut admin = Admin::new(true, Arc::new(ThisNode::new("edge-1")));
        let mut out = Outbox::new(at(0));
        assert!(!admin.watching());
        assert!(admin.open(a).stream);
        assert!(admin.opened(&mut out, a));
        assert!(!admin.opened(&mut out, b), "not an admin stream");
        assert!(admin.watching());
        out.take();

        let mut w0 = Metrics::default();
        (w0.connections, w0.messages_in, w0.busy_micros) = (2, 5, 10);
        w0.count_close(1000, CloseInitiator::Client);
        w0.count_handshake_failure(HandshakeFailure::OriginNotAllowed);
        let mut w1 = Metrics::default();
        (w1.connections, w1.messages_out) = (3, 7);
        let (asker, pending) = admin.tick(at(0), &[w0.clone(), w1.clone()], None, None).unwrap();
        assert_eq!(asker, a);
        assert!(admin.tick(at(0), &[w0.clone(), w1.clone()], None, None).is_none(), "one room list asked at a time");
        assert!(admin.tick(at(6), &[], None, None).is_some(), "unless the answer is overdue");
        admin.finish(&mut out, pending, Some(summary(&[("quiet", 9, 4), ("busy", 1, 10)])), 0);
        let first = events(&mut out);
        assert_eq!(first.len(), 1);
        let s = &first[0].1;
        assert_eq!(s["users"], true);
        assert_eq!(s["transport"]["connections"], 5);
        assert_eq!(s["transport"]["messages_out"], 7);
        assert_eq!(s["transport"]["closes"][0]["code"], 1000);
        assert_eq!(s["transport"]["refusals"][0]["reason"], "origin_not_allowed");
        assert_eq!(s["workers"][0]["busy_us"], 10);
        assert_eq!(s["workers"][1]["connections"], 3);
        assert_eq!(s["rooms"]["members"], 10);
        assert_eq!(s["rooms"]["history_bytes"], 300);
        assert_eq!(s["rooms"]["top_members"][0]["room"], "quiet");
        assert_eq!(s["rooms"]["top_traffic"].as_array().map(Vec::len), Some(0), "no traffic in the first");

        // A second later: "busy" ordered 5 messages, a new room 2.
        let (_, pending) = admin.tick(at(1), &[w0, w1], None, None).unwrap();
        admin.finish(&mut out, pending, Some(summary(&[("quiet", 9, 4), ("busy", 1, 15), ("new", 1, 2)])), 0);
        let s = &events(&mut out)[0].1;
        assert_eq!(s["rooms"]["published"], 7);
        assert_eq!(s["rooms"]["interval_ms"], 1000);
        assert_eq!(s["rooms"]["top_traffic"][0]["room"], "busy");
        assert_eq!(s["rooms"]["top_traffic"][0]["messages"], 5);
        assert_eq!(s["rooms"]["top_traffic"][1]["room"], "new");
    }

    #[test]
    fn a_node_reports_its_workers_summed_and_the_snapshot_lists_every_node() {
        let node = Arc::new(ThisNode::new("edge-1"));
        assert_eq!(node.name, "edge-1");
        assert_ne!(ThisNode::new("").name, ThisNode::new("").name, "unnamed: each process by its own id");
        let mut w0 = Metrics::default();
        (w0.connections, w0.streams, w0.messages_in, w0.busy_micros) = (2, 1, 5, 10);
        let mut w1 = Metrics::default();
        (w1.connections, w1.messages_out, w1.busy_micros) = (3, 7, 30);
        let link = StoreLink { up: true, round_trips: 4, round_trip_micros: 800, ..StoreLink::default() };
        let report = node.report(at(2), &[w0.clone(), w1.clone()], link);
        assert_eq!((report.id.as_str(), report.name.as_str()), (node.id.as_str(), "edge-1"));
        assert_eq!((report.workers, report.connections, report.streams), (2, 5, 1));
        assert_eq!((report.messages_in, report.messages_out, report.busy_us), (5, 7, 40));
        assert_eq!(report.at_ms, at(2).unix.as_millis() as u64);
        assert!(report.started_ms <= report.at_ms + 2000);
        // What another node reads back is what this one wrote.
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains(r#""round_trip_us":800"#), "{json}");
        assert_eq!(serde_json::from_str::<NodeReport>(&json).unwrap(), report);

        let mut admin = Admin::new(false, node.clone());
        let mut out = Outbox::new(at(0));
        admin.open(ConnId::from_parts(1, 0));
        admin.opened(&mut out, ConnId::from_parts(1, 0));
        out.take();
        let other = NodeReport { id: "x".into(), name: "<b>edge-2</b>".into(), ..NodeReport::default() };
        let nodes: Arc<[NodeReport]> = Arc::from(vec![report, other]);
        let (_, pending) = admin.tick(at(2), &[w0, w1], Some(link), Some(nodes)).unwrap();
        admin.finish(&mut out, pending, None, 0);
        let s = &events(&mut out)[0].1;
        assert_eq!(s["node"], serde_json::json!({"id": node.id, "name": "edge-1"}));
        assert_eq!(s["store"]["round_trips"], 4);
        assert_eq!(s["nodes"].as_array().map(Vec::len), Some(2));
        assert_eq!(s["nodes"][0]["connections"], 5);
        assert_eq!(s["nodes"][1]["name"], "<b>edge-2</b>", "names as given: the page shows them as text");
        assert!(s["rooms"].is_null(), "no room list: null, the rest still shown");
    }

    #[test]
    fn top_lists_are_bounded_whatever_the_rooms() {
        let mut rooms: Vec<TopRoom> = (0..1000u64)
            .map(|i| TopRoom { room: format!("r{i}").into(), members: i as usize, offset: 0, messages: 0 })
            .collect();
        let best = top(&mut rooms, |r| (r.members as u64, r.messages));
        assert_eq!(best.len(), TOP_ROOMS);
        assert_eq!(best[0].members, 999);
        assert_eq!(best[TOP_ROOMS - 1].members, 999 - (TOP_ROOMS - 1));
    }

    #[test]
    fn closed_streams_get_nothing_and_the_stream_count_is_bounded() {
        let mut admin = Admin::default();
        let mut out = Outbox::new(at(0));
        for i in 0..MAX_STREAMS as u32 {
            assert_eq!(admin.open(ConnId::from_parts(i, 0)).status, 200);
        }
        assert_eq!(admin.open(ConnId::from_parts(99, 0)).status, 429);
        for i in 0..MAX_STREAMS as u32 {
            admin.close(ConnId::from_parts(i, 0));
        }
        assert!(!admin.opened(&mut out, ConnId::from_parts(0, 0)));
        assert!(!admin.watching());
        assert!(admin.tick(at(0), &[], None, None).is_none());
    }

    #[test]
    fn the_page_is_served_with_a_strict_policy_and_only_its_own_files() {
        for asset in &ASSETS {
            let r = page_file(asset.path).unwrap();
            assert_eq!((r.status, r.content_type), (200, asset.content_type));
            let csp = r.headers.iter().find(|(n, _)| *n == "Content-Security-Policy").map(|(_, v)| v.as_str());
            assert_eq!(csp, Some(CONTENT_SECURITY_POLICY));
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert!(page_file("/admin/").is_none());
        // No inline script or handler: the policy would block it, so the page would break.
        let page = ASSETS[0].body;
        assert!(!page.contains("<script>"), "inline script in the page");
        let handler = page.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "an inline event handler in the page");
        for attr in ["src=\"", "href=\""] {
            for part in page.split(attr).skip(1) {
                let target = part.split('"').next().unwrap_or_default();
                assert!(is_page_file(&format!("/{target}")), "{attr}{target}\" is not an embedded file");
            }
        }
        // The script never writes markup from data.
        let script = ASSETS[1].body;
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!script.contains(sink), "admin.js uses {sink}");
        }
    }
}
