//! Codec micro-benchmarks: masking throughput, header parsing, decoding a stream of small
//! messages through `Connection::decode` and sending them with `Connection::send_message`
//! (the server's per-frame hot paths, in and out).

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use wsedge::proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use wsedge::proto::mask::apply_mask;
use wsedge::proto::{Config, Connection, Event, MaskKeys, MessageKind};

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [16usize, 1024, 64 * 1024] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box([1, 2, 3, 4]), 0))
        });
    }
    group.finish();
}

fn header_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_parse");
    for (name, len) in [("7bit", 100u64), ("16bit", 1000), ("64bit", 100_000)] {
        let header =
            FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: Some([1, 2, 3, 4]), payload_len: len };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut bytes);
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| b.iter(|| FrameHeader::parse(black_box(&bytes[..n]))));
    }
    group.finish();
}

/// 1,000 masked text messages of 32 bytes, as a client would send them.
fn client_stream(count: usize, size: usize) -> Vec<u8> {
    let mut client = Connection::client(Config::default(), MaskKeys::from_os().unwrap());
    let payload = bytes::Bytes::from("x".repeat(size));
    for _ in 0..count {
        client.send_message(MessageKind::Text, payload.clone());
    }
    let mut wire = Vec::new();
    while let Some(chunk) = client.poll_transmit() {
        wire.extend_from_slice(&chunk);
    }
    wire
}

fn decode_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_stream");
    let count = 1000;
    for size in [32usize, 1024] {
        let wire = client_stream(count, size);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::new("text_messages", size), &wire, |b, wire| {
            b.iter(|| {
                let mut server = Connection::server(Config::default());
                let mut buf = BytesMut::from(&wire[..]);
                let mut n = 0;
                while let Ok(Some(Event::Message { data, .. })) = server.decode(&mut buf) {
                    black_box(data);
                    n += 1;
                }
                assert_eq!(n, count);
            })
        });
    }
    group.finish();
}

/// A server queuing 1,000 text messages and taking the frames it queued: what echo does per
/// message on the way out (framing; the payload is never copied).
fn encode_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_stream");
    let count = 1000;
    for size in [32usize, 1024] {
        let payload = bytes::Bytes::from("x".repeat(size));
        let header_len = if size < 126 { 2 } else { 4 };
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::new("server_text_messages", size), &payload, |b, payload| {
            let mut server = Connection::server(Config::default());
            b.iter(|| {
                for _ in 0..count {
                    server.send_message(MessageKind::Text, payload.clone());
                }
                let mut queued = 0;
                while let Some(chunk) = server.poll_transmit() {
                    queued += chunk.len();
                    black_box(chunk);
                }
                assert_eq!(queued, count * (size + header_len));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, masking, header_parse, decode_stream, encode_stream);
criterion_main!(benches);
