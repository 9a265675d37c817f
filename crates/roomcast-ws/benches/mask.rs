//! Masking throughput: the 32-byte-block loop against a u64 word loop and the byte loop.
//!
//! `cargo bench -p roomcast-ws --bench mask`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast_ws::frame::mask::{apply_mask, apply_mask_bytewise, apply_mask_words};

fn bench_mask(c: &mut Criterion) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut group = c.benchmark_group("mask");
    for size in [64usize, 1024, 16 * 1024, 1 << 20] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("blocks32", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), key, 1))
        });
        group.bench_with_input(BenchmarkId::new("words64", size), &size, |b, _| {
            b.iter(|| apply_mask_words(black_box(&mut buf), key, 1))
        });
        group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), key, 1))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_mask);
criterion_main!(benches);
