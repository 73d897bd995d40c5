//! SRTP through the server with this test as both clients, for the suites ffmpeg lacks
//! (AEAD_AES_128_GCM) and for SRTCP both ways: the publisher's key decrypts once, each player
//! gets its own key, a player's SRTCP PLI reaches the publisher re-protected with the key the
//! server answered the publisher with.

use std::net::UdpSocket;
use std::time::Duration;

use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};
use serde_json::json;
use tests::*;

const T: Duration = Duration::from_secs(3);

fn section(kind: &str, port: u16, pt: u8, codec: &str, dir: &str, keys: &SrtpKeys) -> String {
    format!(
        "m={kind} {port} RTP/SAVP {pt}\r\na=rtpmap:{pt} {codec}\r\na={dir}\r\na=crypto:{}\r\n",
        keys.to_sdes(1)
    )
}

fn sdp(sections: &[String]) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{}",
        sections.concat()
    )
}

/// The keys of each `a=crypto` line of an answer, in m= order.
fn answer_keys(answer: &str) -> Vec<SrtpKeys> {
    answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| SrtpKeys::parse_sdes(v).expect("answer crypto parses"))
        .collect()
}

/// An RFC 8285 one-byte-header extension: one element (id 1, 12 bytes) and 3 bytes padding.
fn ext(seq: u16) -> Vec<u8> {
    let mut e = vec![0xbe, 0xde, 0, 4, 0x1b];
    e.extend((0..12).map(|i| (seq as u8).wrapping_mul(7).wrapping_add(i)));
    e.extend([0, 0, 0]);
    e
}

fn srtp_end_to_end(profile: SrtpProfile) {
    let srv = start(2);
    let base = srv.base_url();
    let pub_keys = SrtpKeys::generate(profile).unwrap();
    let offer = sdp(&[section("video", 9, 96, "VP8/90000", "sendonly", &pub_keys)]);
    let (st, v) = post(
        &base,
        "/rest-api/publish",
        json!({"name": "g", "sdp": offer}),
    );
    assert_eq!(st, 200, "{v}");
    let server_to_pub = &answer_keys(v["sdp"].as_str().unwrap())[0];
    assert_eq!(server_to_pub.profile, profile);
    let media = std::net::SocketAddr::from(([127, 0, 0, 1], v["port"].as_u64().unwrap() as u16));
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut enc = SrtpContext::new(&pub_keys).unwrap();
    let send = |enc: &mut SrtpContext, seq: u16| {
        let mut p = rtp_packet(96, seq, seq as u32 * 3000, 0xABCD, &[seq as u8; 200]);
        if seq % 2 == 1 {
            // Odd packets carry a header extension, which the server must forward as is.
            p[0] |= 0x10;
            p.splice(12..12, ext(seq));
        }
        publisher
            .send_to(&enc.protect_rtp(&p).unwrap(), media)
            .unwrap();
    };
    send(&mut enc, 0);
    assert!(wait_until(T, || find(
        &base,
        json!({"name": "g", "status": "PUBLISHING"})
    )
    .len()
        == 1));

    // Two players, each with its own keys.
    let mut players = Vec::new();
    for _ in 0..2 {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let keys = SrtpKeys::generate(profile).unwrap();
        let port = sock.local_addr().unwrap().port();
        let offer = sdp(&[section("video", port, 100, "VP8/90000", "recvonly", &keys)]);
        let (st, v) = post(&base, "/rest-api/play", json!({"name": "g", "sdp": offer}));
        assert_eq!(st, 200, "{v}");
        let server_key = answer_keys(v["sdp"].as_str().unwrap()).remove(0);
        let server =
            std::net::SocketAddr::from(([127, 0, 0, 1], v["port"].as_u64().unwrap() as u16));
        players.push((sock, keys, server_key, server));
    }
    assert_ne!(
        players[0].2.master(),
        players[1].2.master(),
        "a key per player"
    );
    for seq in 1..=20 {
        send(&mut enc, seq);
    }
    for (sock, _, server_key, _) in &players {
        let mut dec = SrtpContext::new(server_key).unwrap();
        sock.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 2048];
        for i in 1..=20u16 {
            let n = sock.recv(&mut buf).unwrap();
            let plain = dec
                .unprotect_rtp(&buf[..n])
                .expect("decrypts with the answered key");
            let p = parse_rtp(&plain).unwrap();
            assert_eq!(p.pt, 100, "mapped to the player's payload type");
            assert_eq!(p.payload, vec![i as u8; 200]);
            // The header extension came through untouched (only the first 12 header bytes
            // are rewritten per player), authenticated by the player's key.
            assert_eq!(plain[0] & 0x10 != 0, i % 2 == 1, "X bit of packet {i}");
            if i % 2 == 1 {
                assert_eq!(&plain[12..32], &ext(i)[..], "extension of packet {i}");
            }
        }
    }

    // SRTCP: a player's PLI, protected with its own key, reaches the publisher protected with
    // the server's key for the publisher.
    let (sock, keys, _, server) = &players[0];
    let mut buf = [0u8; 2048];
    // The player's SSRC for this track (in the clear in the SRTP header).
    send(&mut enc, 21);
    let n = sock.recv(&mut buf).unwrap();
    assert!(n > 12);
    let out_ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    std::thread::sleep(Duration::from_millis(600)); // past the join PLI's coalescing window
                                                    // Drop what reached the publisher so far (the PLIs players' joins triggered).
    publisher
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while publisher.recv(&mut buf).is_ok() {}
    let mut pli = vec![0x81, 206, 0, 2];
    pli.extend_from_slice(&7u32.to_be_bytes());
    pli.extend_from_slice(&out_ssrc.to_be_bytes());
    let mut player_enc = SrtpContext::new(keys).unwrap();
    sock.send_to(&player_enc.protect_rtcp(&pli).unwrap(), server)
        .unwrap();
    publisher.set_read_timeout(Some(T)).unwrap();
    let n = publisher.recv(&mut buf).expect("PLI at the publisher");
    let mut pub_dec = SrtpContext::new(server_to_pub).unwrap();
    let rtcp = pub_dec
        .unprotect_rtcp(&buf[..n])
        .expect("SRTCP with the answered key");
    assert_eq!(rtcp[1], 206);
    assert_eq!(
        rtcp[8..12],
        0xABCDu32.to_be_bytes(),
        "PLI names the publisher's SSRC"
    );

    // A player's RTCP with a wrong key is dropped and counted.
    let mut wrong = SrtpContext::new(&SrtpKeys::generate(profile).unwrap()).unwrap();
    sock.send_to(&wrong.protect_rtcp(&pli).unwrap(), server)
        .unwrap();
    assert!(wait_until(T, || srv
        .core
        .live()
        .shard_counters
        .iter()
        .map(|c| c.dropped_srtp)
        .sum::<u64>()
        == 1));
}

#[test]
fn srtp_aes_cm_end_to_end_with_srtcp() {
    srtp_end_to_end(SrtpProfile::AesCm128HmacSha1_80);
}

#[test]
fn srtp_aead_aes_128_gcm_end_to_end_with_srtcp() {
    srtp_end_to_end(SrtpProfile::AeadAes128Gcm);
}
