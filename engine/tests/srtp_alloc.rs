//! Counts heap allocations per `SrtpContext` call with a counting global allocator, so the
//! numbers documented on `engine::srtp::SrtpContext` stay true. Run with `--nocapture` to
//! see the table.

use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};

mod common;
use common::counted;

#[global_allocator]
static A: common::Counting = common::Counting;

/// Allocations made by `f`, averaged over `n` runs (the result is dropped inside `f`, which
/// does not allocate).
fn count<F: FnMut(u16)>(n: u16, mut f: F) -> f64 {
    let ((), allocs) = counted(|| {
        for i in 0..n {
            f(i);
        }
    });
    allocs as f64 / n as f64
}

fn rtp(seq: u16, ext: bool, payload: usize) -> Vec<u8> {
    let mut p = vec![if ext { 0x90 } else { 0x80 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&0x1111_2222u32.to_be_bytes());
    if ext {
        // One-byte-header extension (RFC 8285), one element (id 1, 2 bytes), padded.
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x11, 0xaa, 0xbb, 0]);
    }
    p.resize(p.len() + payload, 0x5a);
    p
}

fn rtcp_rr() -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&0x1111_2222u32.to_be_bytes());
    p
}

#[derive(Debug, PartialEq)]
struct Row {
    protect_rtp_into: f64,
    protect_rtp_in_place: f64,
    protect_rtp_into_ext: f64,
    protect_rtp: f64,
    unprotect_rtp: f64,
    protect_rtp_ext: f64,
    unprotect_rtp_ext: f64,
    protect_rtcp: f64,
    unprotect_rtcp: f64,
}

fn measure(profile: SrtpProfile) -> Row {
    const N: u16 = 300;
    let keys = SrtpKeys::generate(profile).unwrap();
    let plain: Vec<Vec<u8>> = (0..N * 2).map(|s| rtp(s, false, 1200)).collect();
    let plain_ext: Vec<Vec<u8>> = (0..N * 2).map(|s| rtp(s, true, 1200)).collect();

    let mut tx = SrtpContext::new(&keys).unwrap();
    let mut rx = SrtpContext::new(&keys).unwrap();
    // Warm up: first packet of the SSRC creates per-SSRC state.
    let w = tx.protect_rtp(&rtp(65000, false, 10)).unwrap();
    rx.unprotect_rtp(&w).unwrap();
    let enc: Vec<_> = plain.iter().map(|p| tx.protect_rtp(p).unwrap()).collect();
    let enc_ext: Vec<_> = plain_ext[N as usize..]
        .iter()
        .map(|p| tx.protect_rtp(p).unwrap())
        .collect();

    let mut tx2 = SrtpContext::new(&keys).unwrap();
    tx2.protect_rtp(&plain[0]).unwrap();
    let protect_rtp = count(N, |i| drop(tx2.protect_rtp(&plain[i as usize]).unwrap()));
    let protect_rtp_ext = count(N, |i| {
        drop(tx2.protect_rtp(&plain_ext[i as usize]).unwrap())
    });
    // The allocation-free entry points (what a shard uses per player), into / in a buffer
    // owned by the caller, continuing the same sequence numbers on fresh contexts.
    let mut out = vec![0u8; 2048];
    let mut tx3 = SrtpContext::new(&keys).unwrap();
    tx3.protect_rtp_into(&plain[0], &mut out).unwrap();
    let protect_rtp_into = count(N, |i| {
        let n = tx3.protect_rtp_into(&plain[i as usize], &mut out).unwrap();
        assert_eq!(n, plain[i as usize].len() + profile.rtp_overhead());
    });
    let protect_rtp_into_ext = count(N, |i| {
        tx3.protect_rtp_into(&plain_ext[N as usize + i as usize], &mut out)
            .unwrap();
    });
    let mut tx4 = SrtpContext::new(&keys).unwrap();
    tx4.protect_rtp_into(&plain[0], &mut out).unwrap();
    let protect_rtp_in_place = count(N, |i| {
        let p = &plain[i as usize];
        out[..p.len()].copy_from_slice(p);
        tx4.protect_rtp_in_place(&mut out, p.len()).unwrap();
    });
    let unprotect_rtp = count(N, |i| drop(rx.unprotect_rtp(&enc[i as usize]).unwrap()));
    // Skip the packets that `enc` and `enc_ext` share sequence numbers for.
    let unprotect_rtp_ext = count(N, |i| drop(rx.unprotect_rtp(&enc_ext[i as usize]).unwrap()));

    let rr = rtcp_rr();
    let mut ttx = SrtpContext::new(&keys).unwrap();
    let mut trx = SrtpContext::new(&keys).unwrap();
    trx.unprotect_rtcp(&ttx.protect_rtcp(&rr).unwrap()).unwrap();
    let srtcp: Vec<_> = (0..N).map(|_| ttx.protect_rtcp(&rr).unwrap()).collect();
    let protect_rtcp = count(N, |_| drop(ttx.protect_rtcp(&rr).unwrap()));
    let unprotect_rtcp = count(N, |i| drop(trx.unprotect_rtcp(&srtcp[i as usize]).unwrap()));

    Row {
        protect_rtp_into,
        protect_rtp_in_place,
        protect_rtp_into_ext,
        protect_rtp,
        unprotect_rtp,
        protect_rtp_ext,
        unprotect_rtp_ext,
        protect_rtcp,
        unprotect_rtcp,
    }
}

#[test]
fn srtp_allocations_per_call() {
    let mut rows = Vec::new();
    for p in SrtpProfile::ALL {
        let r = measure(p);
        println!("{p:<24} {r:?}");
        rows.push((p, r));
    }
    // Keep in sync with the table on `SrtpContext`.
    let want = |p| match p {
        SrtpProfile::AesCm128HmacSha1_80 => Row {
            protect_rtp_into: 0.0,
            protect_rtp_in_place: 0.0,
            protect_rtp_into_ext: 0.0,
            protect_rtp: 1.0,
            unprotect_rtp: 1.0,
            protect_rtp_ext: 1.0,
            unprotect_rtp_ext: 3.0,
            protect_rtcp: 1.0,
            unprotect_rtcp: 1.0,
        },
        SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => Row {
            protect_rtp_into: 0.0,
            protect_rtp_in_place: 0.0,
            protect_rtp_into_ext: 0.0,
            protect_rtp: 1.0,
            unprotect_rtp: 3.0,
            protect_rtp_ext: 1.0,
            unprotect_rtp_ext: 5.0,
            protect_rtcp: 4.0,
            unprotect_rtcp: 4.0,
        },
    };
    for (p, r) in rows {
        assert_eq!(r, want(p), "{p}");
    }
}

#[test]
fn srtp_error_paths_do_not_allocate() {
    let keys = SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80).unwrap();
    let mut tx = SrtpContext::new(&keys).unwrap();
    let mut rx = SrtpContext::new(&keys).unwrap();
    let e = tx.protect_rtp(&rtp(1, false, 100)).unwrap();
    rx.unprotect_rtp(&e).unwrap();
    let mut v1 = e.to_vec();
    v1[0] = 0x40; // version 1
    let r = tx.protect_rtcp(&rtcp_rr()).unwrap();
    let mut clear_e = r.to_vec();
    let at = clear_e.len() - 14;
    clear_e[at] &= 0x7f;
    let n = count(100, |_| {
        assert!(rx.unprotect_rtp(&e).is_err()); // replay
        assert!(rx.unprotect_rtp(&e[..15]).is_err()); // too short
        assert!(rx.unprotect_rtp(&v1).is_err()); // not RTP
        assert!(rx.unprotect_rtcp(&e[..10]).is_err()); // too short
        assert!(rx.unprotect_rtcp(&clear_e).is_err()); // E flag clear
    });
    assert_eq!(n, 0.0);

    // Authentication failures go through the library, which allocates its output first.
    let mut forged = rtp(2, false, 100);
    forged.extend_from_slice(&[0; 10]);
    let n = count(100, |_| assert!(rx.unprotect_rtp(&forged).is_err()));
    println!("AES_CM unprotect_rtp auth failure: {n} allocations");
    assert_eq!(n, 1.0);
}
