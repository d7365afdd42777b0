//! permessage-deflate throughput on a 1 KiB JSON-like message: compression through the
//! shared pool (no context takeover, the default `shared` mode), compression with context
//! takeover (`dedicated`), and inflating each result.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use wsedge::proto::deflate::{Compressor, CompressorPool, Decompressor};

/// A chat/dashboard-like JSON message of about 1 KiB.
fn json_1k() -> Vec<u8> {
    let mut s = String::from(r#"{"op":"message","room":"lobby","offset":1234,"data":{"items":["#);
    let mut i = 0;
    while s.len() < 1000 {
        s.push_str(&format!(r#"{{"id":{i},"user":"user-{}","text":"hello from the dashboard","ok":true}},"#, i % 7));
        i += 1;
    }
    s.pop();
    s.push_str("]}}");
    s.into_bytes()
}

fn deflate(c: &mut Criterion) {
    let msg = json_1k();
    let mut group = c.benchmark_group("deflate_1k_json");
    group.throughput(Throughput::Bytes(msg.len() as u64));

    let mut pool = CompressorPool::new(6);
    group.bench_function("compress_shared", |b| b.iter(|| pool.compress(15, black_box(&msg))));
    let mut takeover = Compressor::new(6, 15, false);
    group.bench_function("compress_context_takeover", |b| b.iter(|| takeover.compress(black_box(&msg))));

    let compressed = pool.compress(15, &msg).unwrap_or_default();
    println!("1 KiB JSON: {} bytes -> {} bytes compressed (no context takeover)", msg.len(), compressed.len());
    let mut inflater = Decompressor::new(15);
    let mut out = Vec::with_capacity(4096);
    group.bench_function("decompress", |b| {
        b.iter(|| {
            out.clear();
            inflater.inflate(black_box(&compressed), &mut out, 1 << 20).ok();
            inflater.finish(&mut out, 1 << 20).ok();
            inflater.reset();
            assert_eq!(out.len(), msg.len());
        })
    });
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
