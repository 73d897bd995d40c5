//! In-process fan-out: one incoming packet to N players, doing what a shard does per player
//! before the send (rewrite SSRC/seq/ts, write the 12-byte header into the send slot, keep a
//! `Bytes` clone of the packet), then releasing the clones as completed sends would.
//!
//! `srtp-aes-cm/N`: the same for SRTP players (1,100-byte packets), as `send_media` does it:
//! rewrite, copy header and payload into the slot's own buffer, protect it there in place
//! with the player's own key (no allocation).

use std::hint::black_box;

use benches::pkt::write_packet;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::arena::PacketArena;
use engine::rewrite::Rewriter;
use engine::rtp::{parse_rtp, write_rewritten_header};
use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};

/// Mirrors a shard's send slot: the rewritten header and the packet it points into.
struct Slot {
    head: [u8; 12],
    pkt: Option<Bytes>,
}

fn bench_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let mut raw = vec![0u8; 1200];
    write_packet(&mut raw, 0, 0, 0x1234_5678, 0, 0);
    for players in [1usize, 100, 1000] {
        g.throughput(Throughput::Elements(players as u64));
        g.bench_with_input(
            BenchmarkId::new("rewrite+clone", players),
            &players,
            |b, &n| {
                let mut rewriters: Vec<Rewriter> = (0..n as u32).map(Rewriter::new).collect();
                let mut slots: Vec<Slot> = (0..n)
                    .map(|_| Slot {
                        head: [0; 12],
                        pkt: None,
                    })
                    .collect();
                let mut arena = PacketArena::new(256 * 1024, 8, 64);
                let mut seq = 0u16;
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    raw[2..4].copy_from_slice(&seq.to_be_bytes());
                    // Once per packet: parse and copy into the arena.
                    let h = parse_rtp(black_box(&raw)).unwrap();
                    let pkt = arena.copy(&raw);
                    // Per player.
                    for (rw, slot) in rewriters.iter_mut().zip(slots.iter_mut()) {
                        let o = rw
                            .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc)
                            .unwrap();
                        write_rewritten_header(&pkt, o.seq, o.timestamp, o.ssrc, &mut slot.head);
                        slot.pkt = Some(pkt.clone());
                    }
                    black_box(&slots);
                    // Completions release the clones.
                    for slot in slots.iter_mut() {
                        slot.pkt = None;
                    }
                })
            },
        );
    }
    let mut raw = vec![0u8; 1100];
    write_packet(&mut raw, 0, 0, 0x1234_5678, 0, 0);
    for players in [1usize, 100, 1000] {
        g.throughput(Throughput::Elements(players as u64));
        g.bench_with_input(
            BenchmarkId::new("srtp-aes-cm", players),
            &players,
            |b, &n| {
                let mut rewriters: Vec<Rewriter> = (0..n as u32).map(Rewriter::new).collect();
                let mut ctxs: Vec<SrtpContext> = (0..n)
                    .map(|_| {
                        let k = SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80).unwrap();
                        SrtpContext::new(&k).unwrap()
                    })
                    .collect();
                let mut bufs: Vec<Box<[u8]>> =
                    (0..n).map(|_| vec![0u8; 1536].into_boxed_slice()).collect();
                let mut arena = PacketArena::new(256 * 1024, 8, 64);
                let mut seq = 0u16;
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    raw[2..4].copy_from_slice(&seq.to_be_bytes());
                    let h = parse_rtp(black_box(&raw)).unwrap();
                    let pkt = arena.copy(&raw);
                    let mut head = [0u8; 12];
                    for ((rw, ctx), buf) in rewriters.iter_mut().zip(&mut ctxs).zip(&mut bufs) {
                        let o = rw
                            .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc)
                            .unwrap();
                        write_rewritten_header(&pkt, o.seq, o.timestamp, o.ssrc, &mut head);
                        buf[..12].copy_from_slice(&head);
                        buf[12..pkt.len()].copy_from_slice(&pkt[12..]);
                        ctx.protect_rtp_in_place(buf, pkt.len()).unwrap();
                    }
                    black_box(&bufs);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
