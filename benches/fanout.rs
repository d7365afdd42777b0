//! One publish fanned out to 10,000 room members, in process.
//!
//! Measures the room layer's publish (validation, offset, history, serializing the push
//! once) and the fan-out the event loop does for a broadcast: encode the frame once and
//! put a clone of the same `Bytes` into every member's write queue (a refcount bump each).
//! Sockets are not involved; `wsedge bench fanout` measures the whole server.

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use wsedge::proto::connection::encode_server_frame;
use wsedge::proto::handshake::UpgradeRequest;
use wsedge::proto::MessageKind;
use wsedge::rooms::{Admission, Rooms, RoomsConfig};
use wsedge::server::{Command, ConnId, Handler, Now, Outbox};

const MEMBERS: u32 = 10_000;

fn fanout(c: &mut Criterion) {
    let config = RoomsConfig { publish_rate: 1e12, publish_burst: 1e12, ..RoomsConfig::default() };
    let mut rooms = Rooms::new(config);
    let mut out = Outbox::new(Now::read());
    let request = UpgradeRequest {
        path: "/ws".into(),
        host: "bench".into(),
        origin: None,
        key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
        protocols: vec![],
        extensions: None,
        x_forwarded_for: None,
        forwarded: None,
        authorization: None,
    };
    let join = Bytes::from_static(br#"{"op":"join","room":"bench"}"#);
    for i in 0..MEMBERS {
        let id = ConnId::from_parts(i, 0);
        rooms.on_open(&mut out, id, &request, Admission::Anonymous);
        rooms.on_message(&mut out, id, MessageKind::Text, join.clone().into());
    }
    out.take();
    let mut queues: Vec<VecDeque<Bytes>> = (0..MEMBERS).map(|_| VecDeque::with_capacity(4)).collect();
    let publish = Bytes::from_static(br#"{"op":"publish","room":"bench","data":{"user":"ada","text":"hello, room"}}"#);
    let publisher = ConnId::from_parts(0, 0);

    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(u64::from(MEMBERS)));
    group.bench_function("publish_to_10k_members", |b| {
        b.iter(|| {
            rooms.on_message(&mut out, publisher, MessageKind::Text, black_box(publish.clone()).into());
            let mut delivered = 0;
            for command in out.take() {
                if let Command::Broadcast { to, except, kind, payload } = command {
                    let frame = encode_server_frame(kind, &payload);
                    for &id in to.iter().filter(|&&id| Some(id) != except) {
                        if let Some(queue) = queues.get_mut(id.parts().0 as usize) {
                            queue.push_back(frame.clone());
                            delivered += 1;
                        }
                    }
                }
            }
            assert_eq!(delivered, MEMBERS);
            // The write path: each queue hands its frame to the socket and drops it.
            for queue in &mut queues {
                black_box(queue.pop_front());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
