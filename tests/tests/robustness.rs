//! Robustness over real sockets: garbage at the media ports, terminate storms over thousands
//! of streaming sessions with nothing leaked, bugs in a shard, hook servers that reset,
//! limits. Every loop is bounded in count and time.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::*;

const T: Duration = Duration::from_secs(5);

/// xorshift64*: deterministic garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A datagram no RTP/RTCP parser may accept: wrong version, truncated header, or an RTCP
/// packet whose length field runs past the datagram.
fn invalid_datagram(r: &mut Rng) -> Vec<u8> {
    match r.next() % 4 {
        0 => {
            let n = 1 + (r.next() % 1400) as usize;
            let mut b = r.bytes(n);
            b[0] = (b[0] & 0x3f) | 0x40; // version 1
            b
        }
        1 => {
            let n = (r.next() % 12) as usize;
            let mut b = r.bytes(n);
            if let Some(x) = b.first_mut() {
                *x = 0x80;
            }
            b
        }
        2 => vec![0x81, 201, 0xff, 0xff, 1, 2, 3, 4],
        _ => Vec::new(),
    }
}

#[test]
fn garbage_at_media_ports_does_not_disturb_good_streams() {
    let srv = start(2);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "g");
    let players: Vec<Player> = (0..8)
        .map(|i| Player::join(&base, "g", Some(i % 2)))
        .collect();
    let n_good: u16 = 1500;
    // Players read concurrently so their sockets never overflow.
    let stop = Arc::new(AtomicBool::new(false));
    let received: Vec<Arc<std::sync::atomic::AtomicUsize>> =
        players.iter().map(|_| Arc::default()).collect();
    let readers: Vec<_> = players
        .iter()
        .zip(&received)
        .map(|(p, n)| {
            let (sock, n) = (p.sock.try_clone().unwrap(), n.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < n_good as usize {
                    let more = recv_rtp(&sock, 1, T);
                    if more.is_empty() {
                        break;
                    }
                    got.extend(more);
                    n.store(got.len(), Ordering::Relaxed);
                }
                got
            })
        })
        .collect();
    // Foreign sources spray random bytes at every server port of the stream.
    let targets: Vec<SocketAddr> = std::iter::once(media)
        .chain(players.iter().map(|p| p.server))
        .collect();
    let s2 = stop.clone();
    let sprayer = std::thread::spawn(move || {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let socks: Vec<UdpSocket> = (0..4)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut sent = 0u64;
        let end = Instant::now() + Duration::from_secs(20);
        while !s2.load(Ordering::Relaxed) && Instant::now() < end {
            for t in &targets {
                let len = (r.next() % 1500) as usize;
                let b = r.bytes(len);
                let _ = socks[(r.next() % 4) as usize].send_to(&b, t);
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        sent
    });
    // The publisher interleaves invalid datagrams from its own (latched) address.
    let pubsock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut r = Rng(42);
    let mut invalid = 0u64;
    for i in 0..n_good {
        let p = rtp_packet(
            96,
            5000u16.wrapping_add(i),
            i as u32 * 3000,
            0xBEEF,
            &i.to_be_bytes(),
        );
        pubsock.send_to(&p, media).unwrap();
        if i > 0 {
            for _ in 0..2 {
                pubsock.send_to(&invalid_datagram(&mut r), media).unwrap();
                invalid += 1;
            }
        }
        // A window of 50: what sits in socket buffers stays far below their size even when
        // the machine is busy, so any loss would be the server's.
        if i % 50 == 49 {
            let want = i as usize + 1;
            assert!(
                wait_until(T, || received
                    .iter()
                    .all(|n| n.load(Ordering::Relaxed) >= want)),
                "players reached packet {want}"
            );
        }
    }
    // The server sent every good packet to every player, and dropped nothing of them...
    let live = srv.core.live();
    for p in &players {
        let id = internal_id(&srv, &p.id);
        assert_eq!(
            live.counters[&id].packets_out, n_good as u64,
            "player {} was sent every good packet",
            p.id
        );
    }
    for c in &live.shard_counters {
        assert_eq!(
            (c.dropped_ring_full, c.dropped_no_send_slot, c.send_errors),
            (0, 0, 0),
            "{c:?}"
        );
    }
    // ...and what the players read is the good stream, in order, seq following the payload
    // index (a test thread starved by the other tests can lose datagrams at its own socket).
    for (k, rd) in readers.into_iter().enumerate() {
        let got = rd.join().unwrap();
        let good: Vec<&Rtp> = got.iter().filter(|p| p.payload.len() == 2).collect();
        assert!(
            good.len() >= n_good as usize / 2,
            "player {k}: {} packets",
            good.len()
        );
        let idx = |p: &Rtp| u16::from_be_bytes([p.payload[0], p.payload[1]]);
        for w in good.windows(2) {
            assert!(idx(w[1]) > idx(w[0]), "player {k}: in order");
            assert_eq!(
                w[1].seq.wrapping_sub(w[0].seq),
                idx(w[1]) - idx(w[0]),
                "player {k}: seq follows the source"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sprayed = sprayer.join().unwrap();
    let c = srv.core.live().shard_counters;
    let unknown: u64 = c.iter().map(|c| c.dropped_unknown_source).sum();
    let malformed: u64 = c.iter().map(|c| c.dropped_malformed).sum();
    println!("sprayed {sprayed}, invalid from the publisher {invalid}; dropped unknown {unknown}, malformed {malformed}");
    assert!(
        malformed >= invalid,
        "every invalid datagram counted: {c:?}"
    );
    assert!(unknown > 0);
    assert_eq!(c.iter().map(|c| c.session_panics).sum::<u64>(), 0);
    // The server still answers and still has all 9 sessions.
    assert_eq!(find(&base, json!({"name": "g"})).len(), 9);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn terminate_storm_over_2000_streaming_sessions_leaves_exactly_the_rest() {
    const STREAMS: usize = 20;
    const PLAYERS: usize = 99; // 20 x (1 + 99) = 2,000 sessions
                               // Players outlive their publisher here (opt-in; by default they stop with it).
    let mut cfg = control::Config::for_tests(2);
    cfg.media.players_outlive_publisher = true;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let fds_before = open_fds();
    // All players receive on one socket; the server port a packet comes from tells the session.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let mut publishers = Vec::new();
    let mut players: Vec<(String, u16)> = Vec::new();
    for s in 0..STREAMS {
        let (_, media, _) = publish(&base, &format!("st{s}"));
        publishers.push(media);
        for _ in 0..PLAYERS {
            let (st, v) = post(
                &base,
                "/rest-api/play",
                json!({"name": format!("st{s}"), "host": "127.0.0.1", "port": sink_port}),
            );
            assert_eq!(st, 200, "{v}");
            players.push((
                v["mediaSessionId"].as_str().unwrap().to_string(),
                v["port"].as_u64().unwrap() as u16,
            ));
        }
    }
    assert_eq!(srv.core.session_count(), 2000);
    // Last arrival per server port, recorded by a reader thread.
    let last: Arc<Mutex<HashMap<u16, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (l2, s2) = (last.clone(), stop.clone());
    let reader = std::thread::spawn(move || {
        sink.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let end = Instant::now() + Duration::from_secs(120);
        while !s2.load(Ordering::Relaxed) && Instant::now() < end {
            if let Ok((_, from)) = sink.recv_from(&mut buf) {
                l2.lock().unwrap().insert(from.port(), Instant::now());
            }
        }
    });
    let s3 = stop.clone();
    let sender = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let end = Instant::now() + Duration::from_secs(120);
        let mut seq = 0u16;
        while !s3.load(Ordering::Relaxed) && Instant::now() < end {
            for (i, m) in publishers.iter().enumerate() {
                let p = rtp_packet(96, seq, seq as u32 * 9000, 0x1000 + i as u32, &[7; 100]);
                let _ = sock.send_to(&p, m);
            }
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(200)); // 5 pps per stream
        }
    });
    // Everyone is streaming before the storm.
    assert!(wait_until(Duration::from_secs(60), || last
        .lock()
        .unwrap()
        .len()
        == players.len()));

    // 1,000 terminate calls (every other player), from 4 threads at once.
    let doomed: Vec<(String, u16)> = players.iter().step_by(2).cloned().collect();
    let kept: Vec<(String, u16)> = players.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(doomed.len(), 990);
    // Plus ten calls that stop one publisher each by name and status.
    let threads: Vec<_> = doomed
        .chunks(doomed.len().div_ceil(4))
        .map(|chunk| {
            let (base, ids) = (base.clone(), chunk.to_vec());
            std::thread::spawn(move || {
                for (id, _) in ids {
                    let (st, v) = post(
                        &base,
                        "/rest-api/stream/terminate",
                        json!({"mediaSessionId": id}),
                    );
                    assert_eq!(st, 200, "{v}");
                    assert_eq!(v["terminated"], json!([id]));
                }
            })
        })
        .collect();
    for s in 0..10 {
        let (st, v) = post(
            &base,
            "/rest-api/stream/terminate",
            json!({"name": format!("st{s}"), "status": "PUBLISHING"}),
        );
        assert_eq!(st, 200, "{v}");
    }
    for t in threads {
        t.join().unwrap();
    }
    // Exactly the expected sessions are alive.
    let alive: HashSet<String> = find(&base, json!({}))
        .iter()
        .map(|s| s["mediaSessionId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(alive.len(), 2000 - 1000);
    assert!(kept.iter().all(|(id, _)| alive.contains(id)));
    assert!(doomed.iter().all(|(id, _)| !alive.contains(id)));
    assert_eq!(
        find(&base, json!({"published": true})).len(),
        10,
        "ten publishers left"
    );
    // Once the shards released them, a terminated player never sends again; kept players of
    // streams that still have a publisher keep receiving.
    assert!(wait_until(T, || srv.core.stopping_count() == 0));
    let released = Instant::now();
    let live_streams: Vec<(String, u16)> = kept
        .iter()
        .filter(|(id, _)| {
            let s = &find(&base, json!({"mediaSessionId": id}))[0];
            s["name"].as_str().unwrap()[2..].parse::<usize>().unwrap() >= 10
        })
        .cloned()
        .collect();
    assert_eq!(live_streams.len(), 10 * 50 - 5); // streams 10..19, odd players
    assert!(
        wait_until(Duration::from_secs(30), || {
            let last = last.lock().unwrap();
            live_streams.iter().all(|(_, port)| last[port] > released)
        }),
        "every kept player of a live stream still receives"
    );
    {
        let last = last.lock().unwrap();
        let late: Vec<&String> = doomed
            .iter()
            .filter(|(_, port)| last[port] >= released)
            .map(|(id, _)| id)
            .collect();
        assert!(
            late.is_empty(),
            "terminated players still sending: {late:?}"
        );
    }

    // Stop everything: nothing stays behind on any shard, in the registry, or as an fd.
    let (st, _) = post(&base, "/rest-api/stream/terminate", json!({"all": true}));
    assert_eq!(st, 200);
    assert!(wait_until(T, || {
        let live = srv.core.live();
        live.per_shard.iter().all(|&n| n == 0)
            && srv.core.session_count() == 0
            && srv.core.stopping_count() == 0
    }));
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    sender.join().unwrap();
    assert!(find(&base, json!({})).is_empty());
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("mediaserver_shard_sessions{shard=\"0\"} 0"));
    assert!(metrics.contains("mediaserver_shard_sessions{shard=\"1\"} 0"));
    let fds_after = open_fds();
    assert!(
        fds_after <= fds_before + 8,
        "session sockets closed: {fds_before} fds before, {fds_after} after"
    );
    // And the names can be used again.
    let (_, media, _) = publish(&base, "st0");
    let p = Player::join(&base, "st0", None);
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&rtp_packet(96, 1, 0, 5, b"x"), media)
        .unwrap();
    assert_eq!(p.recv(1, T).len(), 1);
}

#[test]
fn a_panic_in_one_session_fails_only_that_session() {
    // Players outlive their publisher here (opt-in; by default they stop with it).
    let mut cfg = control::Config::for_tests(2);
    cfg.media.players_outlive_publisher = true;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let events = srv.core.subscribe();
    let (pid, media, pub_shard) = publish(&base, "p");
    let a = Player::join(&base, "p", Some(0));
    let b = Player::join(&base, "p", Some(0));
    let c = Player::join(&base, "p", Some(1));
    let pubsock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |seq: u16| {
        pubsock
            .send_to(&rtp_packet(96, seq, 0, 9, &seq.to_be_bytes()), media)
            .unwrap()
    };
    send(0);
    for p in [&a, &b, &c] {
        assert_eq!(p.recv(1, T).len(), 1);
    }
    // A bug while handling player a's RTCP.
    srv.core.inject_fault(
        a.shard,
        engine::Fault::PanicOnNextPacket(internal_id(&srv, &a.id)),
    );
    std::thread::sleep(Duration::from_millis(50));
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
    a.sock.send_to(&rr, a.server).unwrap();
    assert!(wait_until(T, || find(
        &base,
        json!({"mediaSessionId": a.id})
    )
    .is_empty()));
    let failed = events
        .iter()
        .find(|e| e.record.media_session_id == a.id && e.status == engine::Status::Failed)
        .unwrap();
    assert!(failed.info.contains("internal error"), "{}", failed.info);
    // Everyone else, on both shards, is untouched.
    send(1);
    assert!(a.recv(1, Duration::from_millis(300)).is_empty());
    for p in [&b, &c] {
        assert_eq!(p.recv(1, T).len(), 1);
    }
    let counters = srv.core.live().shard_counters;
    assert_eq!(counters.iter().map(|c| c.session_panics).sum::<u64>(), 1);
    // The same for the publisher: it fails, players stay, the name can be published again.
    srv.core.inject_fault(
        pub_shard,
        engine::Fault::PanicOnNextPacket(internal_id(&srv, &pid)),
    );
    std::thread::sleep(Duration::from_millis(50));
    send(2);
    assert!(wait_until(T, || find(
        &base,
        json!({"mediaSessionId": pid})
    )
    .is_empty()));
    assert_eq!(
        find(&base, json!({"name": "p", "published": false})).len(),
        2
    );
    let (_, media2, _) = publish(&base, "p");
    pubsock
        .send_to(&rtp_packet(96, 3, 0, 9, b"again"), media2)
        .unwrap();
    for p in [&b, &c] {
        assert_eq!(p.recv(1, T)[0].payload, b"again");
    }
}

/// The engine-wide session id of a mediaSessionId (for fault injection).
#[test]
fn a_shard_panic_exits_the_process_non_zero() {
    // Re-run this test binary with only the child below, which must die with exit code 70.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "shard_panic_child", "--ignored", "--nocapture"])
        .env("SHARD_PANIC_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(70),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("shard panicked") || stderr.contains("shard panicked"),
        "logged: {stdout}\n{stderr}"
    );
}

#[test]
#[ignore = "run by a_shard_panic_exits_the_process_non_zero in a child process"]
fn shard_panic_child() {
    if std::env::var("SHARD_PANIC_CHILD").is_err() {
        return;
    }
    tracing_init();
    let srv = start(2);
    let _ = publish(&srv.base_url(), "x");
    srv.core.inject_fault(1, engine::Fault::PanicShard);
    std::thread::sleep(Duration::from_secs(10));
    panic!("still running 10 s after a shard panicked");
}

fn tracing_init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
}

#[test]
fn a_hook_server_that_resets_connections_stalls_nothing() {
    // Accepts, lets the request arrive, closes without reading: the kernel answers with RST.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/MyAPI", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::sleep(Duration::from_millis(5));
            drop(s);
        }
    });
    let mut cfg = control::Config::for_tests(2);
    cfg.apps[0].url = url.clone();
    cfg.apps[0].methods = ["publishStream", "playStream", "StreamStatusEvent"]
        .map(String::from)
        .into();
    let srv = start_with(cfg);
    let base = srv.base_url();
    let t0 = Instant::now();
    let (_, media, _) = publish(&base, "r");
    let p = Player::join(&base, "r", None);
    let pubsock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20u16 {
        pubsock
            .send_to(&rtp_packet(96, i, 0, 3, &i.to_be_bytes()), media)
            .unwrap();
        assert_eq!(p.recv(1, T).len(), 1, "packet {i} delivered");
        assert_eq!(find(&base, json!({"name": "r"})).len(), 2);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "nothing waited on the hooks"
    );
    drop(srv);

    // With FAIL the same resets deny at once, with a reason.
    let mut cfg = control::Config::for_tests(1);
    cfg.apps[0].url = url;
    cfg.apps[0].methods = vec!["publishStream".into()];
    cfg.apps[0].rest_client_config.insert(
        "publishStream".into(),
        control::config::RestClientConfig {
            rest_on_error: control::config::RestOnError::Fail,
            ..Default::default()
        },
    );
    let srv = start_with(cfg);
    let (st, v) = post(&srv.base_url(), "/rest-api/publish", json!({"name": "r"}));
    assert_eq!(st, 502, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("publishStream"),
        "{v}"
    );
}

#[test]
fn limits_give_clear_errors() {
    let mut cfg = control::Config::for_tests(2);
    cfg.media.max_sessions = 4;
    cfg.media.max_players_per_stream = 2;
    let srv = start_with(cfg);
    let base = srv.base_url();
    publish(&base, "a");
    Player::join(&base, "a", None);
    Player::join(&base, "a", None);
    let (st, v) = post(
        &base,
        "/rest-api/play",
        json!({"name": "a", "host": "127.0.0.1", "port": 9}),
    );
    assert_eq!(st, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("max_players_per_stream"),
        "{v}"
    );
    let (st, v) = post(&base, "/rest-api/publish", json!({"name": "a"}));
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"], "Stream name is already in use");
    publish(&base, "b");
    let (st, v) = post(&base, "/rest-api/publish", json!({"name": "c"}));
    assert_eq!(st, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_sessions"), "{v}");
    // A body over the limit: 413, and the server goes on.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(100_000));
    let (st, v) = post_raw(&base, "/rest-api/stream/find", &big, None);
    assert_eq!(st, 413, "{v}");
    // Freed capacity is usable again.
    post(&base, "/rest-api/stream/terminate", json!({"name": "b"}));
    assert!(wait_until(T, || srv.core.session_count() == 3));
    let (st, v) = post(&base, "/rest-api/publish", json!({"name": "c"}));
    assert_eq!(st, 200, "{v}");
    let _: Value = v;
}
