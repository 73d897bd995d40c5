//! Batched fan-out over real UDP on 127.0.0.1: a burst (a video frame) reaches each player as
//! UDP GSO sends, and every segment arrives whole and in order, as plain RTP and as SRTP
//! (decrypted here); a socket that refuses GSO still gets everything; a packet that waited
//! too long in the server is dropped and the newest are kept; with `media.gro`, a publisher's
//! GSO burst is read as one GRO datagram and split back into its packets.
//!
//! A burst is made to land in one loop turn by stalling the shard (Fault::Stall) while the
//! publisher sends: the kernel queues the datagrams, and the shard reads them all at once.

use std::net::UdpSocket;
use std::time::Duration;

use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};
use serde_json::json;
use tests::*;

const T: Duration = Duration::from_secs(3);
const BURST: u16 = 100;

fn server(max_queue_ms: u64) -> control::Server {
    let mut cfg = control::Config::for_tests(1);
    cfg.media.max_queue_ms = max_queue_ms;
    start_with(cfg)
}

/// Packet `i` of a burst: 1,000-byte payloads except packet 70 (300 bytes), so the runs are
/// 0..64 (64 segments, the limit), 64..71 (the last one shorter) and 71..100.
fn payload(tag: u8, i: u16) -> Vec<u8> {
    let len = if i == 70 { 300 } else { 1000 };
    (0..len)
        .map(|k| tag ^ (i as u8).wrapping_add((k % 251) as u8))
        .collect()
}

fn send_burst(sock: &UdpSocket, to: std::net::SocketAddr, seq0: u16, tag: u8) {
    for i in 0..BURST {
        let seq = seq0.wrapping_add(i);
        let p = rtp_packet(96, seq, 90_000 + 3000 * i as u32, 0x5150, &payload(tag, i));
        sock.send_to(&p, to).unwrap();
    }
}

/// Stalls the shard, sends a burst meanwhile, and lets the shard read it in one go.
fn stalled_burst(
    srv: &control::Server,
    publisher: &UdpSocket,
    media: std::net::SocketAddr,
    seq0: u16,
    tag: u8,
) {
    srv.core
        .inject_fault(0, engine::Fault::Stall(Duration::from_millis(150)));
    std::thread::sleep(Duration::from_millis(30));
    send_burst(publisher, media, seq0, tag);
}

/// Reads a burst on its own thread with room for all of it.
fn reader(p: &Player) -> std::thread::JoinHandle<Vec<Rtp>> {
    p.recv_in_background(BURST as usize, T)
}

fn counters(srv: &control::Server) -> engine::ShardCounters {
    srv.core.live().shard_counters[0]
}

fn assert_burst(got: &[Rtp], tag: u8, what: &str) {
    assert_eq!(got.len(), BURST as usize, "{what}: packets received");
    for (i, w) in got.windows(2).enumerate() {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "{what}: seq continuous at {i}"
        );
    }
    for (i, r) in got.iter().enumerate() {
        assert_eq!(
            r.payload,
            payload(tag, i as u16),
            "{what}: packet {i} intact, in order"
        );
    }
}

#[test]
fn a_burst_reaches_each_player_whole_and_in_order_through_gso() {
    let srv = server(1000);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "v");
    let players: Vec<Player> = (0..3).map(|_| Player::join(&base, "v", None)).collect();
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = counters(&srv);
    let readers: Vec<_> = players.iter().map(reader).collect();
    stalled_burst(&srv, &publisher, media, 1000, 7);
    for (i, r) in readers.into_iter().enumerate() {
        assert_burst(&r.join().unwrap(), 7, &format!("player {i}"));
    }
    let c = counters(&srv);
    let (batches, segs) = (
        c.gso_batches - before.gso_batches,
        c.gso_segments - before.gso_segments,
    );
    // Three runs per player (64 + 7 + 29 packets) when the whole burst is read in one turn.
    assert!(
        batches >= 3 * 3 && segs >= 3 * 90,
        "GSO used: {batches} sends, {segs} segments"
    );
    assert!(
        batches < 3 * 20,
        "a burst costs each player a few sends, not one per packet: {batches}"
    );
    assert_eq!(c.gso_refused, 0);
    assert_eq!(c.send_errors, 0);
}

#[test]
fn srtp_segments_are_each_a_whole_srtp_packet() {
    let srv = server(1000);
    let base = srv.base_url();
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                 m=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=sendonly\r\n";
    let (_, media, _) = publish_sdp(&base, "s", offer);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let keys = SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80).unwrap();
    let port = sock.local_addr().unwrap().port();
    let offer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {port} RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\na=recvonly\r\na=crypto:{}\r\n",
        keys.to_sdes(1)
    );
    let (st, v) = post(&base, "/rest-api/play", json!({"name": "s", "sdp": offer}));
    assert_eq!(st, 200, "{v}");
    let server_key = v["sdp"]
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(|c| SrtpKeys::parse_sdes(c).unwrap())
        .unwrap();
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = counters(&srv);
    stalled_burst(&srv, &publisher, media, 40_000, 9);
    let mut dec = SrtpContext::new(&server_key).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    for _ in 0..BURST {
        let n = sock.recv(&mut buf).unwrap();
        let plain = dec
            .unprotect_rtp(&buf[..n])
            .expect("each datagram authenticates");
        got.push(parse_rtp(&plain).unwrap());
    }
    assert_burst(&got, 9, "SRTP player");
    let c = counters(&srv);
    assert!(c.gso_batches - before.gso_batches >= 3, "GSO used for SRTP");
    assert_eq!(c.dropped_srtp, 0);
}

#[test]
fn a_socket_that_refuses_gso_still_gets_every_packet() {
    let srv = server(1000);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "f");
    let refusing = Player::join(&base, "f", None);
    let normal = Player::join(&base, "f", None);
    srv.core
        .inject_fault(0, engine::Fault::RefuseGso(internal_id(&srv, &refusing.id)));
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (round, tag) in [(0u16, 3u8), (1, 4)] {
        let (r1, r2) = (reader(&refusing), reader(&normal));
        stalled_burst(&srv, &publisher, media, 2000 + round * BURST, tag);
        assert_burst(&r1.join().unwrap(), tag, "refusing player");
        assert_burst(&r2.join().unwrap(), tag, "normal player");
    }
    let c = counters(&srv);
    // Refused once: the socket then sends packet by packet, the other keeps batching.
    assert_eq!(c.gso_refused, 1, "{c:?}");
    assert!(c.gso_batches >= 6, "{c:?}");
}

#[test]
fn packets_that_waited_too_long_are_dropped_and_the_newest_kept() {
    let srv = server(200);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "d");
    let player = Player::join(&base, "d", None);
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Old: sent while the shard is stuck for a second, so ~1 s old when it reads them.
    srv.core
        .inject_fault(0, engine::Fault::Stall(Duration::from_millis(1000)));
    std::thread::sleep(Duration::from_millis(30));
    send_burst(&publisher, media, 100, 1);
    std::thread::sleep(Duration::from_millis(1200));
    // New: sent once it runs again.
    let r = reader(&player);
    send_burst(&publisher, media, 100 + BURST, 2);
    let got = r.join().unwrap();
    assert_burst(&got, 2, "only the newest burst");
    let c = counters(&srv);
    assert_eq!(c.dropped_stale, BURST as u64, "{c:?}");
    // Nothing was sent older than the limit.
    let worst = c.age_at_send.quantile_bound(1.0).unwrap();
    assert!(worst <= 0.2, "oldest packet sent: <= {worst} s");
    // The reason is in /metrics.
    let m = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        m.lines()
            .any(|l| l.starts_with("mediaserver_dropped_packets_total{")
                && l.contains("reason=\"stale\"")
                && l.ends_with(&format!(" {BURST}"))),
        "stale drops in /metrics"
    );
    assert!(m.contains("mediaserver_packet_age_at_send_seconds_bucket{le=\"0.05\"}"));
}

/// Every send on `sock` larger than `size` goes out as `size`-byte GSO segments (0: off).
fn set_udp_segment(sock: &UdpSocket, size: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain int option on a socket we own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            103, // UDP_SEGMENT
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
}

/// Sends a burst as three GSO datagrams (packets 0..64, 64..71 with its shorter last one,
/// 71..100): on loopback each reaches a GRO socket whole, as one datagram.
fn send_burst_gso(sock: &UdpSocket, to: std::net::SocketAddr, seq0: u16, tag: u8) {
    set_udp_segment(sock, 12 + 1000);
    for run in [0..64u16, 64..71, 71..BURST] {
        let mut datagram = Vec::new();
        for i in run {
            let seq = seq0.wrapping_add(i);
            let p = rtp_packet(96, seq, 90_000 + 3000 * i as u32, 0x5150, &payload(tag, i));
            datagram.extend_from_slice(&p);
        }
        sock.send_to(&datagram, to).unwrap();
    }
}

#[test]
fn a_gro_datagram_from_the_publisher_is_split_into_its_packets() {
    let mut cfg = control::Config::for_tests(1);
    cfg.media.gro = true;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "g");
    let players: Vec<Player> = (0..2).map(|_| Player::join(&base, "g", None)).collect();
    let gso_publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let readers: Vec<_> = players.iter().map(reader).collect();
    send_burst_gso(&gso_publisher, media, 500, 5);
    for (i, r) in readers.into_iter().enumerate() {
        assert_burst(&r.join().unwrap(), 5, &format!("player {i}, GRO burst"));
    }
    let c = counters(&srv);
    assert_eq!(c.gro_datagrams, 3, "three coalesced datagrams read: {c:?}");
    assert_eq!(c.dropped_malformed, 0, "{c:?}");
    // Single datagrams (an ordinary publisher) still pass through the GRO socket one by one.
    let readers: Vec<_> = players.iter().map(reader).collect();
    // The same socket (the latched source), its per-socket segmentation turned off.
    set_udp_segment(&gso_publisher, 0);
    send_burst(&gso_publisher, media, 500 + BURST, 6);
    for (i, r) in readers.into_iter().enumerate() {
        assert_burst(
            &r.join().unwrap(),
            6,
            &format!("player {i}, single datagrams"),
        );
    }
    assert_eq!(
        counters(&srv).gro_datagrams,
        3,
        "no more coalesced datagrams"
    );
}
