//! The cross-shard ring: `Mesh` push/pop of `Hop::Media` carrying `Bytes` clones.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::mesh::{Hop, Mesh};

fn bench_mesh(c: &mut Criterion) {
    let pkt = Bytes::from(vec![0u8; 1200]);
    let mut g = c.benchmark_group("mesh");

    g.throughput(Throughput::Elements(1));
    g.bench_function("push+pop", |b| {
        let mesh = Mesh::new(2, 8192).unwrap();
        b.iter(|| {
            let hop = Hop::Media {
                stream: 1,
                pkt: pkt.clone(),
                stamp: 0,
            };
            mesh.push(0, 1, hop).unwrap();
            black_box(mesh.pop(0, 1).unwrap())
        })
    });

    g.throughput(Throughput::Elements(64));
    g.bench_function("burst64", |b| {
        let mesh = Mesh::new(2, 8192).unwrap();
        b.iter(|| {
            for _ in 0..64 {
                let hop = Hop::Media {
                    stream: 1,
                    pkt: pkt.clone(),
                    stamp: 0,
                };
                mesh.push(0, 1, hop).unwrap();
            }
            while let Some(h) = mesh.pop(0, 1) {
                black_box(h);
            }
        })
    });

    // One producer shard, one consumer shard on another thread: time per packet through the
    // ring, including cache-line transfers (the consumer drops the clones, as a shard does
    // once its sends complete).
    g.throughput(Throughput::Elements(1));
    g.bench_function("cross-thread", |b| {
        let mesh = Mesh::new(2, 8192).unwrap();
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..iters {
                        let mut hop = Hop::Media {
                            stream: 1,
                            pkt: pkt.clone(),
                            stamp: 0,
                        };
                        while let Err(h) = mesh.push(0, 1, hop) {
                            hop = h;
                            std::hint::spin_loop();
                        }
                    }
                });
                let mut got = 0;
                while got < iters {
                    match mesh.pop(0, 1) {
                        Some(h) => {
                            black_box(h);
                            got += 1;
                        }
                        None => std::hint::spin_loop(),
                    }
                }
            });
            start.elapsed().max(Duration::from_nanos(1))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_mesh);
criterion_main!(benches);
