//! RTP header parsing and per-player rewriting: the per-packet work on the engine's hot path.

use std::hint::black_box;

use benches::pkt::write_packet;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::rewrite::Rewriter;
use engine::rtp::{parse_rtp, write_rewritten_header};

fn packet(size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    write_packet(&mut p, 1000, 90_000, 0x1234_5678, 0, 0);
    p
}

/// Same packet with 2 CSRCs and a one-byte header extension (the parser's longer path).
fn packet_with_extension(size: usize) -> Vec<u8> {
    let base = packet(size);
    let mut p = base[..12].to_vec();
    p[0] |= 0x10 | 2;
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
    p.extend_from_slice(&base[12..]);
    p
}

fn bench_rtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    let plain = packet(1200);
    let ext = packet_with_extension(1200);

    g.bench_function("parse/plain", |b| {
        b.iter(|| parse_rtp(black_box(&plain)).unwrap())
    });
    g.bench_function("parse/csrc+ext", |b| {
        b.iter(|| parse_rtp(black_box(&ext)).unwrap())
    });

    g.bench_function("rewrite", |b| {
        let mut r = Rewriter::new(42);
        let mut seq = 0u16;
        b.iter(|| {
            seq = seq.wrapping_add(1);
            r.rewrite(96, black_box(seq), seq as u32 * 3000, 0x1234_5678)
                .unwrap()
        })
    });

    g.bench_function("rewrite/4-tracks", |b| {
        // Worst lookup: the packet's track is the last of MAX_TRACKS.
        let mut r = Rewriter::new(42);
        for pt in [111, 97, 98] {
            r.rewrite(pt, 0, 0, pt as u32).unwrap();
        }
        let mut seq = 0u16;
        b.iter(|| {
            seq = seq.wrapping_add(1);
            r.rewrite(96, black_box(seq), seq as u32 * 3000, 0x1234_5678)
                .unwrap()
        })
    });

    g.bench_function("parse+rewrite+header", |b| {
        // What a shard does per packet per player before queueing the send.
        let mut r = Rewriter::new(7);
        let mut p = plain.clone();
        let mut seq = 0u16;
        let mut out = [0u8; 12];
        b.iter(|| {
            seq = seq.wrapping_add(1);
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            let h = parse_rtp(black_box(&p)).unwrap();
            let rw = r
                .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc)
                .unwrap();
            write_rewritten_header(&p, rw.seq, rw.timestamp, rw.ssrc, &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_rtp);
criterion_main!(benches);
