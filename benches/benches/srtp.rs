//! SRTP per packet, per suite, at 1,100-byte RTP packets (header included): what a shard pays
//! once per publisher packet (`unprotect_rtp`) and once per player per packet (`protect_*`).
//!
//! * `protect_rtp`: `SrtpContext::protect_rtp`, returns a freshly allocated `Bytes`.
//! * `protect_rtp_into`: `SrtpContext::protect_rtp_into`, into a caller's buffer (no allocation;
//!   what `send_media` uses).
//! * `webrtc-srtp/encrypt_rtp`: the library's `Context::encrypt_rtp` directly (the reference
//!   the in-place code is checked against byte for byte).
//! * `unprotect_rtp`: verify + decrypt (+ our replay window).
//! * `protect_rtcp`: a 32-byte receiver report.
//!
//! Throughput is in packets; criterion's median time per packet is the figure to compare.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};

const SIZE: usize = 1100;
/// Packets pre-protected for the unprotect bench (each can be unprotected once per context).
const RING: usize = 4096;

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32).wrapping_mul(3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..SIZE - 12).map(|i| (i * 31 + seq as usize) as u8));
    p
}

fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[0u8; 20]);
    p
}

fn bench_srtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(1));
    for profile in SrtpProfile::ALL {
        let keys = SrtpKeys::generate(profile).unwrap();
        let name = profile.sdes_name();

        g.bench_with_input(BenchmarkId::new("protect_rtp", name), &keys, |b, k| {
            let mut tx = SrtpContext::new(k).unwrap();
            let mut p = rtp(0, 0x1234_5678);
            let mut seq = 0u16;
            b.iter(|| {
                seq = seq.wrapping_add(1);
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                let out: Bytes = tx.protect_rtp(black_box(&p)).unwrap();
                out
            })
        });

        g.bench_with_input(BenchmarkId::new("protect_rtp_into", name), &keys, |b, k| {
            let mut tx = SrtpContext::new(k).unwrap();
            let mut p = rtp(0, 0x1234_5678);
            let mut out = vec![0u8; 2048];
            let mut seq = 0u16;
            b.iter(|| {
                seq = seq.wrapping_add(1);
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                tx.protect_rtp_into(black_box(&p), &mut out).unwrap()
            })
        });

        g.bench_with_input(
            BenchmarkId::new("webrtc-srtp/encrypt_rtp", name),
            &keys,
            |b, k| {
                let wp = match profile {
                    SrtpProfile::AesCm128HmacSha1_80 => {
                        webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80
                    }
                    SrtpProfile::AeadAes128Gcm => {
                        webrtc_srtp::protection_profile::ProtectionProfile::AeadAes128Gcm
                    }
                    SrtpProfile::AeadAes256Gcm => {
                        webrtc_srtp::protection_profile::ProtectionProfile::AeadAes256Gcm
                    }
                };
                let mut tx =
                    webrtc_srtp::context::Context::new(&k.key, &k.salt, wp, None, None).unwrap();
                let mut p = rtp(0, 0x1234_5678);
                let mut seq = 0u16;
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    p[2..4].copy_from_slice(&seq.to_be_bytes());
                    tx.encrypt_rtp(black_box(&p)).unwrap()
                })
            },
        );

        g.bench_with_input(BenchmarkId::new("unprotect_rtp", name), &keys, |b, k| {
            let mut tx = SrtpContext::new(k).unwrap();
            let ring: Vec<Bytes> = (0..RING as u16)
                .map(|s| tx.protect_rtp(&rtp(s, 0x1234_5678)).unwrap())
                .collect();
            let mut rx = SrtpContext::new(k).unwrap();
            let mut i = 0usize;
            b.iter(|| {
                if i == RING {
                    // Each packet authenticates once per context (replay window): start a
                    // fresh receiver, amortised over RING packets.
                    rx = SrtpContext::new(k).unwrap();
                    i = 0;
                }
                let out = rx.unprotect_rtp(black_box(&ring[i])).unwrap();
                i += 1;
                out
            })
        });

        g.bench_with_input(BenchmarkId::new("protect_rtcp", name), &keys, |b, k| {
            let mut tx = SrtpContext::new(k).unwrap();
            let rr = rtcp_rr(0x1234_5678);
            b.iter(|| tx.protect_rtcp(black_box(&rr)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_srtp);
criterion_main!(benches);
