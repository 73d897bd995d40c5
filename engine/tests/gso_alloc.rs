//! The shard's batched (GSO) fan-out allocates nothing per packet in steady state: a real
//! engine (one shard, io_uring, real sockets) forwards video-like bursts to plain-RTP and
//! SRTP players while a counting allocator counts on every thread. Warm-up grows the
//! per-stream queue, the batch slots and their SRTP buffers once.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};
use engine::{Command, Engine, EngineConfig, NewLeg, NewSession, Role, ShardConfig};

mod common;
use common::counted_all;

#[global_allocator]
static A: common::Counting = common::Counting;

const PLAYERS: u64 = 10;

fn packet(seq: u16, len: usize) -> Vec<u8> {
    let mut v = vec![0x80, 96];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    v.extend_from_slice(&0x1234u32.to_be_bytes());
    v.resize(len, 0x55);
    v
}

/// A frame: 30 full packets and a shorter last one, sent at once.
fn burst(sock: &UdpSocket, to: std::net::SocketAddr, seq: &mut u16, bufs: &mut [Vec<u8>]) {
    for b in bufs.iter_mut() {
        b[2..4].copy_from_slice(&seq.to_be_bytes());
        *seq = seq.wrapping_add(1);
        sock.send_to(b, to).unwrap();
    }
}

fn sent(engine: &Engine) -> (u64, u64) {
    let c = engine.stats()[0].counters;
    (c.packets_out, c.gso_segments)
}

#[test]
fn gso_fanout_does_not_allocate_per_packet() {
    let engine = Engine::start(EngineConfig {
        shards: 1,
        pin: false,
        shard: ShardConfig {
            max_queue: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let pub_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media = pub_sock.local_addr().unwrap();
    engine.send(
        0,
        Command::AddSession(NewSession {
            id: 1,
            stream: 7,
            role: Role::Publisher,
            legs: vec![NewLeg::plain(pub_sock, None)],
            webrtc: None,
            timeouts: Default::default(),
            serve_first: false,
        }),
    );
    // Players: plain RTP and (one in five: a debug build's AES is slow) SRTP; the receiving sockets are only drained by the
    // kernel dropping what overflows (receiving is not what is measured).
    let mut sinks = Vec::new();
    for i in 0..PLAYERS {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut leg = NewLeg::plain(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            Some(sink.local_addr().unwrap()),
        );
        if i % 5 == 4 {
            let keys = SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80).unwrap();
            leg.srtp_out = Some(SrtpContext::new(&keys).unwrap());
        }
        engine.send(
            0,
            Command::AddSession(NewSession {
                id: 100 + i,
                stream: 7,
                role: Role::Player,
                legs: vec![leg],
                webrtc: None,
                timeouts: Default::default(),
                serve_first: false,
            }),
        );
        sinks.push(sink);
    }
    let src = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bufs: Vec<Vec<u8>> = (0..31)
        .map(|i| packet(0, if i == 30 { 400 } else { 1200 }))
        .collect();
    let mut seq = 0u16;
    // Warm-up: a few seconds' worth of frames.
    for _ in 0..60 {
        burst(&src, media, &mut seq, &mut bufs);
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    while sent(&engine).0 < 60 * 31 * PLAYERS && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (before, segs_before) = sent(&engine);
    assert!(segs_before > 0, "the warm-up went out through GSO");
    let ((), allocs) = counted_all(|| {
        for _ in 0..100 {
            burst(&src, media, &mut seq, &mut bufs);
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the shard finish what it read.
        std::thread::sleep(Duration::from_millis(500));
    });
    let (after, segs_after) = sent(&engine);
    eprintln!(
        "{} copies forwarded, {allocs} allocations; {:?}",
        after - before,
        engine.stats()[0].counters
    );
    let forwarded = after - before;
    assert!(
        forwarded >= 90 * 31 * PLAYERS,
        "the shard forwarded the measured bursts: {forwarded}"
    );
    assert!(
        segs_after - segs_before >= forwarded / 2,
        "mostly as GSO segments"
    );
    assert_eq!(
        allocs, 0,
        "heap allocations while forwarding {forwarded} packet copies"
    );
    drop(sinks);
}
