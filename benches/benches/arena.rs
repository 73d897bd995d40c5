//! The packet arena: copying a received datagram into a shared chunk and handing out `Bytes`,
//! against a heap allocation per packet.

use std::collections::VecDeque;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::arena::PacketArena;

/// The engine's defaults (ShardConfig::arena_chunk, 8 initial chunks, 64 max).
fn arena() -> PacketArena {
    PacketArena::new(256 * 1024, 8, 64)
}

fn bench_arena(c: &mut Criterion) {
    let mut g = c.benchmark_group("arena");
    for size in [200usize, 1200] {
        let data = vec![0xabu8; size];
        g.throughput(Throughput::Bytes(size as u64));

        g.bench_with_input(BenchmarkId::new("copy+drop", size), &data, |b, d| {
            // Steady state: views die quickly, chunks are reclaimed in place.
            let mut a = arena();
            b.iter(|| black_box(a.copy(black_box(d))))
        });

        g.bench_with_input(BenchmarkId::new("copy/window-1024", size), &data, |b, d| {
            // 1024 packets still referenced (in flight to players) while new ones arrive.
            let mut a = arena();
            let mut window = VecDeque::with_capacity(1024);
            b.iter(|| {
                if window.len() == 1024 {
                    window.pop_front();
                }
                window.push_back(a.copy(black_box(d)));
            })
        });

        g.bench_with_input(
            BenchmarkId::new("heap-Bytes::copy_from_slice", size),
            &data,
            |b, d| b.iter(|| black_box(Bytes::copy_from_slice(black_box(d)))),
        );
    }
    g.finish();
}

criterion_group!(benches, bench_arena);
criterion_main!(benches);
