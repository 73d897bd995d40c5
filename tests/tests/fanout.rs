//! Engine core over real UDP on 127.0.0.1: fan-out, rewriting, cross-shard forwarding,
//! unknown sources, keyframe-request coalescing, NACK translation.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use serde_json::json;
use tests::*;

const T: Duration = Duration::from_secs(3);

/// Sends `n` packets from `sock` to `to`, seq from `seq0`, pacing lightly.
fn send_stream(sock: &UdpSocket, to: std::net::SocketAddr, ssrc: u32, seq0: u16, n: u16, tag: u8) {
    for i in 0..n {
        let seq = seq0.wrapping_add(i);
        let payload = [tag, (i >> 8) as u8, i as u8, 0xAB];
        let pkt = rtp_packet(
            96,
            seq,
            3000u32.wrapping_mul(i as u32).wrapping_add(90_000),
            ssrc,
            &payload,
        );
        sock.send_to(&pkt, to).unwrap();
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Checks one player's packets: all `n` in order, its own SSRC, +1 seq, constant ts offset.
fn assert_continuous(p: &[Rtp], n: usize, pub_ssrc: u32, tag: u8) {
    assert_eq!(p.len(), n, "packets received");
    let ssrc = p[0].ssrc;
    assert_ne!(ssrc, pub_ssrc, "SSRC rewritten");
    for (i, w) in p.windows(2).enumerate() {
        assert_eq!(w[1].ssrc, ssrc);
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "seq continuous at {i}");
        assert_eq!(
            w[1].ts.wrapping_sub(w[0].ts),
            3000,
            "ts step preserved at {i}"
        );
    }
    for (i, r) in p.iter().enumerate() {
        assert_eq!(
            r.payload,
            [tag, (i >> 8) as u8, i as u8, 0xAB],
            "payload {i} in order"
        );
        assert_eq!(r.pt, 96);
    }
}

#[test]
fn one_publisher_to_200_players_over_all_shards() {
    let srv = start(2);
    let base = srv.base_url();
    let (_, media, pub_shard) = publish(&base, "big");
    let players: Vec<Player> = (0..200).map(|_| Player::join(&base, "big", None)).collect();
    let shards: BTreeSet<usize> = players.iter().map(|p| p.shard).collect();
    assert_eq!(
        shards,
        [0, 1].into_iter().collect(),
        "players spread over all shards"
    );
    assert!(
        players.iter().any(|p| p.shard == pub_shard),
        "some on the publisher's shard"
    );
    assert!(
        players.iter().any(|p| p.shard != pub_shard),
        "some on another shard"
    );

    // Each player reads on its own thread while the publisher sends, as a real client would.
    let n = 300u16;
    let readers: Vec<_> = players
        .iter()
        .map(|p| p.recv_in_background(n as usize, T))
        .collect();
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&publisher, media, 0x1111_2222, 65_000, n, 7); // wraps the sequence number
    let mut ssrcs = BTreeSet::new();
    for (i, (p, r)) in players.iter().zip(readers).enumerate() {
        let got = r.join().unwrap();
        assert_eq!(
            got.len(),
            n as usize,
            "player {i} (shard {}) got {} of {n}",
            p.shard,
            got.len()
        );
        assert_continuous(&got, n as usize, 0x1111_2222, 7);
        ssrcs.insert(got[0].ssrc);
    }
    assert_eq!(ssrcs.len(), 200, "each player has its own SSRC");

    let live = srv.core.live();
    let sessions: usize = live.per_shard.iter().sum();
    assert_eq!(sessions, 201);
    let dropped: u64 = live
        .shard_counters
        .iter()
        .map(|c| c.dropped_ring_full + c.dropped_no_send_slot)
        .sum();
    assert_eq!(dropped, 0);
}

#[test]
fn same_shard_and_cross_shard_players_and_late_join() {
    let srv = start(2);
    let base = srv.base_url();
    let (_, media, pub_shard) = publish(&base, "s");
    let other = 1 - pub_shard;
    let same = Player::join(&base, "s", Some(pub_shard));
    let cross = Player::join(&base, "s", Some(other));
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&publisher, media, 42, 100, 50, 1);
    for p in [&same, &cross] {
        assert_continuous(&p.recv(50, T), 50, 42, 1);
    }
    // A late player starts at its own sequence and sees only what follows.
    let late = Player::join(&base, "s", Some(other));
    send_stream(&publisher, media, 42, 150, 20, 2);
    let got = late.recv(20, T);
    assert_continuous(&got, 20, 42, 2);
    assert_eq!(same.recv(20, T).len(), 20);
}

#[test]
fn publisher_restart_keeps_player_sequence_continuous() {
    // Players outlive their publisher here (opt-in; by default they stop with it).
    let mut cfg = control::Config::for_tests(2);
    cfg.media.players_outlive_publisher = true;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (pid, media, pub_shard) = publish(&base, "r");
    let player = Player::join(&base, "r", Some(1 - pub_shard));
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&a, media, 1, 10, 30, 3);
    let first = player.recv(30, T);
    assert_eq!(first.len(), 30);
    let (st, _) = post(
        &base,
        "/rest-api/stream/terminate",
        json!({ "mediaSessionId": pid }),
    );
    assert_eq!(st, 200);
    // New publisher: new socket, SSRC, sequence and timestamp bases.
    let (_, media2, _) = publish(&base, "r");
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&b, media2, 2, 50_000, 30, 3);
    let second = player.recv(30, T);
    assert_eq!(second.len(), 30);
    let last = first.last().unwrap();
    assert_eq!(second[0].ssrc, last.ssrc, "same SSRC across the restart");
    assert_eq!(second[0].seq, last.seq.wrapping_add(1), "seq continues");
    assert_eq!(
        second[0].ts,
        last.ts.wrapping_add(3000),
        "ts continues by one step"
    );
}

#[test]
fn unknown_sources_are_dropped_and_counted() {
    let srv = start(2);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "u");
    let player = Player::join(&base, "u", None);
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&publisher, media, 5, 0, 5, 9);
    assert_eq!(player.recv(5, T).len(), 5);

    // A stranger sends to the publisher's port and to the player's port.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..10u16 {
        stranger
            .send_to(&rtp_packet(96, i, 0, 666, b"evil"), media)
            .unwrap();
        stranger
            .send_to(&rtp_packet(96, i, 0, 666, b"evil"), player.server)
            .unwrap();
    }
    // Also a datagram to a port no session owns must not matter; garbage to the publisher.
    publisher.send_to(b"\x00garbage", media).unwrap();
    send_stream(&publisher, media, 5, 5, 5, 9);
    let got = player.recv(100, Duration::from_millis(500));
    assert_eq!(got.len(), 5, "only the publisher's packets arrive");
    assert!(got.iter().all(|p| p.payload[0] == 9));
    let ok = wait_until(T, || {
        let c = srv.core.live().shard_counters;
        let unknown: u64 = c.iter().map(|c| c.dropped_unknown_source).sum();
        let malformed: u64 = c.iter().map(|c| c.dropped_malformed).sum();
        // The player's leg is connected to the player (media.connect_players), so the
        // kernel discards the stranger's datagrams to it before user space sees them:
        // only the 10 sent to the publisher's port are counted.
        unknown == 10 && malformed == 1
    });
    assert!(ok, "drops counted: {:?}", srv.core.live().shard_counters);
}

fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

/// Reads RTCP packets arriving at the publisher's socket until `timeout`.
fn recv_rtcp(sock: &UdpSocket, timeout: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

fn nack(sender: u32, media: u32, pid: u16, blp: u16) -> Vec<u8> {
    let mut p = vec![0x81, 205, 0, 3];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(&blp.to_be_bytes());
    p
}

#[test]
fn a_forged_nack_flood_reaches_the_publisher_at_most_at_the_cap_and_is_counted() {
    let mut cfg = control::Config::for_tests(1);
    cfg.media.nack_rate_per_player = 20;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "flood");
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&publisher, media, 0xF00D, 100, 1, 0);
    assert!(wait_until(T, || !find(
        &base,
        json!({"name": "flood", "status": "PUBLISHING"})
    )
    .is_empty()));
    let forger = Player::join(&base, "flood", None);
    let honest = Player::join(&base, "flood", None);
    send_stream(&publisher, media, 0xF00D, 101, 4, 0);
    let first = forger.recv(4, T)[0].clone();
    let h = honest.recv(4, T)[0].clone();
    let _ = recv_rtcp(&publisher, Duration::from_millis(300)); // join PLIs

    // 5,000 NACKs, each for a different packet (nothing to merge), as fast as they go.
    let t0 = std::time::Instant::now();
    for i in 0..5000u16 {
        let pid = first.seq.wrapping_add(i.wrapping_mul(17));
        forger
            .sock
            .send_to(&nack(1, first.ssrc, pid, 0xFFFF), forger.server)
            .unwrap();
    }
    let got: Vec<Vec<u8>> = recv_rtcp(&publisher, Duration::from_millis(500))
        .into_iter()
        .filter(|p| p[1] == 205)
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    // Burst (one second's worth) plus the rate over the flood's whole duration.
    let cap = 20.0 + 20.0 * secs;
    eprintln!(
        "{} NACKs reached the publisher in {secs:.2} s (cap {cap:.0})",
        got.len()
    );
    assert!(!got.is_empty(), "the budget lets some through");
    assert!(
        got.len() as f64 <= cap + 1.0,
        "{} > cap {cap:.0}",
        got.len()
    );
    // Every NACK that reached the server (the kernel may drop some of the flood) is either
    // forwarded or counted as dropped.
    let live = srv.core.live();
    let c = live.shard_counters[0];
    let nack_in: u64 = live.counters.values().map(|c| c.nack_in).sum();
    assert_eq!(c.nacks_forwarded, got.len() as u64, "{c:?}");
    assert_eq!(c.nacks_dropped + c.nacks_forwarded, nack_in, "{c:?}");
    // Far more than the cap let through (the server's socket may drop much of the flood
    // when its shard shares a busy machine with the other tests).
    assert!(nack_in > 200, "the flood arrived: {nack_in}");

    // The honest player's own budget is untouched: its NACK goes through.
    honest
        .sock
        .send_to(&nack(2, h.ssrc, h.seq.wrapping_add(1), 0), honest.server)
        .unwrap();
    let got = recv_rtcp(&publisher, Duration::from_millis(300));
    assert_eq!(got.iter().filter(|p| p[1] == 205).count(), 1);
    let text = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(text.contains("mediaserver_nacks_dropped_total"), "{text}");
}

#[test]
fn many_players_losing_one_packet_cost_the_publisher_one_nack() {
    let srv = start(2);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "merge");
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&publisher, media, 0xBEEF, 500, 1, 0);
    assert!(wait_until(T, || !find(
        &base,
        json!({"name": "merge", "status": "PUBLISHING"})
    )
    .is_empty()));
    // Players on both shards: merging holds across the cross-shard hop.
    let players: Vec<Player> = (0..8)
        .map(|i| Player::join(&base, "merge", Some(i % 2)))
        .collect();
    send_stream(&publisher, media, 0xBEEF, 501, 4, 0);
    let firsts: Vec<Rtp> = players.iter().map(|p| p.recv(4, T)[0].clone()).collect();
    let _ = recv_rtcp(&publisher, Duration::from_millis(300));
    for (p, f) in players.iter().zip(&firsts) {
        p.sock
            .send_to(&nack(3, f.ssrc, f.seq.wrapping_add(1), 0), p.server)
            .unwrap();
    }
    let got: Vec<Vec<u8>> = recv_rtcp(&publisher, Duration::from_millis(400))
        .into_iter()
        .filter(|p| p[1] == 205)
        .collect();
    assert_eq!(got.len(), 1, "8 NACKs for seq 502 merged into one");
    assert_eq!(u16::from_be_bytes([got[0][12], got[0][13]]), 502);
    let merged: u64 = srv
        .core
        .live()
        .shard_counters
        .iter()
        .map(|c| c.nacks_merged)
        .sum();
    assert_eq!(merged, 7);
}

#[test]
fn keyframe_requests_are_coalesced_and_nacks_translated() {
    let srv = start(2);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "k");
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&publisher, media, 0xCAFE, 1000, 1, 0);
    // Seq 1000 must be forwarded (to nobody) before players join, or the first player gets
    // it and the NACK arithmetic below is off by one.
    assert!(wait_until(T, || !find(
        &base,
        json!({"name": "k", "status": "PUBLISHING"})
    )
    .is_empty()));
    let players: Vec<Player> = (0..6).map(|_| Player::join(&base, "k", None)).collect();
    // Joins trigger keyframe requests; six joins within the interval cost at most two PLIs
    // (the coalescing window may straddle them).
    let join_plis = recv_rtcp(&publisher, Duration::from_millis(700));
    assert!(
        !join_plis.is_empty() && join_plis.len() <= 2,
        "join PLIs: {}",
        join_plis.len()
    );
    assert!(join_plis
        .iter()
        .all(|p| p[1] == 206 && p[8..12] == 0xCAFEu32.to_be_bytes()));

    send_stream(&publisher, media, 0xCAFE, 1001, 4, 0);
    let mut firsts = Vec::new();
    for p in &players {
        let got = p.recv(4, T);
        assert_eq!(got.len(), 4);
        firsts.push(got[0].clone());
    }
    std::thread::sleep(Duration::from_millis(600));
    // Every player asks for a keyframe at once: the publisher gets exactly one PLI.
    for (p, f) in players.iter().zip(&firsts) {
        p.sock.send_to(&pli(1, f.ssrc), p.server).unwrap();
    }
    let plis = recv_rtcp(&publisher, Duration::from_millis(300));
    assert_eq!(plis.len(), 1, "coalesced PLIs");
    assert_eq!(
        plis[0][8..12],
        0xCAFEu32.to_be_bytes(),
        "PLI targets the publisher's SSRC"
    );

    // A NACK for the player's second packet reaches the publisher as seq 1002 of its SSRC.
    let p = &players[0];
    let nack = nack(1, firsts[0].ssrc, firsts[0].seq.wrapping_add(1), 0);
    p.sock.send_to(&nack, p.server).unwrap();
    let got = recv_rtcp(&publisher, Duration::from_millis(500));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][1], 205);
    assert_eq!(got[0][8..12], 0xCAFEu32.to_be_bytes());
    assert_eq!(u16::from_be_bytes([got[0][12], got[0][13]]), 1002);
    let pli_in: u64 = srv.core.live().counters.values().map(|c| c.pli_in).sum();
    assert_eq!(pli_in, 6);
}

#[test]
fn a_stranger_cannot_latch_a_publisher_whose_offer_names_its_address() {
    let srv = start(1);
    let base = srv.base_url();
    // The publisher says (c=) it sends from 127.0.0.5; the server announces 127.0.0.1.
    let offer = "v=0\r\no=- 0 0 IN IP4 127.0.0.5\r\ns=cam\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\n\
                 m=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=sendonly\r\n";
    let (_, media, _) = publish_sdp(&base, "guarded", offer);
    let player = Player::join(&base, "guarded", None);

    // A stranger on another address gets there first: nothing is latched or forwarded.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&stranger, media, 0x5157, 1, 5, 9);
    assert!(player.recv(1, Duration::from_millis(300)).is_empty());
    assert!(wait_until(T, || srv.core.live().shard_counters[0]
        .dropped_unknown_source
        >= 5));
    assert_eq!(
        find(&base, json!({"name": "guarded"}))
            .iter()
            .find(|s| s["published"] == true)
            .unwrap()["status"],
        "PENDING"
    );

    // The real publisher, from the address its offer named, latches and is delivered.
    let real = UdpSocket::bind("127.0.0.5:0").unwrap();
    send_stream(&real, media, 0xCA11, 1, 5, 1);
    let got = player.recv(5, T);
    assert_eq!(got.len(), 5);
    assert!(
        got.iter().all(|p| p.payload[0] == 1),
        "only the real publisher's packets"
    );
    // The stranger stays out after the latch too.
    send_stream(&stranger, media, 0x5157, 6, 5, 9);
    assert!(player.recv(1, Duration::from_millis(300)).is_empty());
}

#[test]
fn a_small_stream_is_served_from_its_publishers_shard_and_spills_past_the_cap() {
    let mut cfg = control::Config::for_tests(2);
    cfg.media.stream_shard_players = 3;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (_, media, pub_shard) = publish(&base, "small");
    let players: Vec<Player> = (0..5).map(|_| Player::join(&base, "small", None)).collect();
    let shards: Vec<usize> = players.iter().map(|p| p.shard).collect();
    assert_eq!(
        &shards[..3],
        &[pub_shard; 3],
        "the first 3 on the publisher's shard"
    );
    assert!(
        shards[3..].iter().all(|&s| s != pub_shard),
        "past the cap, on the other shard: {shards:?}"
    );
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_stream(&publisher, media, 77, 10, 40, 3);
    for p in &players {
        assert_continuous(&p.recv(40, T), 40, 77, 3);
    }
}
