//! Frame decode and encode throughput, and whole-message receive (with UTF-8 validation).
//!
//! `cargo bench -p roomcast-ws --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast_ws::frame::{FrameHeader, encode_frame, encode_shared};
use roomcast_ws::{Config, Connection, FrameDecoder, Message, OpCode, Outbox, Role};

/// `count` masked client frames of `size` bytes each, back to back.
fn client_wire(opcode: OpCode, size: usize, count: usize) -> BytesMut {
    let mut out = Outbox::new();
    let payload = Bytes::from(vec![b'a'; size]);
    for _ in 0..count {
        encode_frame(
            &mut out,
            FrameHeader::new(opcode, 0),
            payload.clone(),
            Some([1, 2, 3, 4]),
        );
    }
    let mut wire = BytesMut::new();
    for b in out.iter() {
        wire.extend_from_slice(b);
    }
    wire
}

fn cases() -> [(usize, usize); 3] {
    // (payload size, frames per iteration): about 1 MiB per iteration.
    [(64, 16_384), (16 * 1024, 64), (1 << 20, 1)]
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (size, count) in cases() {
        let wire = client_wire(OpCode::Binary, size, count);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::new("frames", size), &size, |b, _| {
            b.iter_batched(
                || wire.clone(),
                |mut buf| {
                    let mut d = FrameDecoder::new(Role::Server, 16 << 20);
                    while let Some(f) = d.decode(&mut buf).unwrap_or(None) {
                        black_box(f);
                    }
                },
                BatchSize::LargeInput,
            )
        });
        let text = client_wire(OpCode::Text, size, count);
        group.bench_with_input(BenchmarkId::new("text_messages", size), &size, |b, _| {
            b.iter_batched(
                || text.clone(),
                |mut buf| {
                    let mut conn = Connection::new(Role::Server, Config::default());
                    while let Ok(Some(m)) = conn.receive(&mut buf) {
                        black_box(m);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (size, count) in cases() {
        let payload = Bytes::from(vec![b'a'; size]);
        group.throughput(Throughput::Bytes((size * count) as u64));
        group.bench_with_input(BenchmarkId::new("server", size), &size, |b, _| {
            b.iter(|| {
                let mut out = Outbox::new();
                for _ in 0..count {
                    encode_frame(
                        &mut out,
                        FrameHeader::new(OpCode::Binary, 0),
                        payload.clone(),
                        None,
                    );
                }
                black_box(out)
            })
        });
        group.bench_with_input(BenchmarkId::new("client_masked", size), &size, |b, _| {
            b.iter(|| {
                let mut out = Outbox::new();
                for _ in 0..count {
                    encode_frame(
                        &mut out,
                        FrameHeader::new(OpCode::Binary, 0),
                        payload.clone(),
                        Some([1, 2, 3, 4]),
                    );
                }
                black_box(out)
            })
        });
        group.bench_with_input(BenchmarkId::new("shared_broadcast", size), &size, |b, _| {
            b.iter(|| {
                for _ in 0..count {
                    black_box(encode_shared(FrameHeader::new(OpCode::Text, 0), &payload));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("connection_send", size), &size, |b, _| {
            let msg = Message::Binary(payload.clone());
            b.iter(|| {
                let mut conn = Connection::new(Role::Server, Config::default());
                for _ in 0..count {
                    conn.send(msg.clone()).unwrap_or(());
                }
                black_box(conn.outbox().len_bytes())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
