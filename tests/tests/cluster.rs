//! The cluster's stream directory and node liveness against a real nats-server: one
//! publisher per name cluster-wide (409 naming the owner, races included), a node's streams
//! leave the directory at once on a graceful stop and within 3 s of a crash (kill -9 of a
//! real server process), and with NATS away local media goes on while cluster calls get 503.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use control::Config;
use serde_json::json;
use tests::*;

fn node(nats: &NatsServer, id: &str) -> control::Server {
    let mut cfg = Config::for_tests(1);
    cfg.node_id = id.into();
    cfg.cluster.enabled = true;
    cfg.cluster.nats_url = nats.url.clone();
    start_with(cfg)
}

fn publish_status(base: &str, name: &str) -> (u16, serde_json::Value) {
    post(base, "/rest-api/publish", json!({ "name": name }))
}

/// Waits until the node's NATS connection is up (its first claim succeeds).
fn wait_connected(base: &str) {
    let mut last = (0, serde_json::Value::Null);
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = publish_status(base, "probe");
            last.0 == 200
        }),
        "node connected to NATS: {last:?}"
    );
    post(base, "/rest-api/stream/terminate", json!({"name": "probe"}));
}

#[test]
fn a_name_has_one_publisher_cluster_wide() {
    let nats = NatsServer::start();
    let a = node(&nats, "node-a");
    let b = node(&nats, "node-b");
    let (ba, bb) = (a.base_url(), b.base_url());
    wait_connected(&ba);
    wait_connected(&bb);
    let (st, v) = publish_status(&ba, "s1");
    assert_eq!(st, 200, "{v}");
    let pid = v["mediaSessionId"].as_str().unwrap().to_string();
    let (st, v) = publish_status(&bb, "s1");
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("node-a"), "{v}");
    // The same node: the local rule's answer.
    let (st, _) = publish_status(&ba, "s1");
    assert_eq!(st, 409);
    // The publisher ends: its claim goes with it, and B may publish the name.
    let (st, _) = post(
        &ba,
        "/rest-api/stream/terminate",
        json!({"mediaSessionId": pid}),
    );
    assert_eq!(st, 200);
    assert!(wait_until(Duration::from_secs(2), || publish_status(
        &bb, "s1"
    )
    .0 == 200));

    // Races: both nodes claim each of 20 names at once; exactly one wins each.
    for i in 0..20 {
        let name = format!("race-{i}");
        let (n1, n2) = (name.clone(), name.clone());
        let (u1, u2) = (ba.clone(), bb.clone());
        let t1 = std::thread::spawn(move || publish_status(&u1, &n1));
        let t2 = std::thread::spawn(move || publish_status(&u2, &n2));
        let (r1, r2) = (t1.join().unwrap(), t2.join().unwrap());
        let mut codes = [r1.0, r2.0];
        codes.sort();
        assert_eq!(codes, [200, 409], "{name}: {r1:?} {r2:?}");
        let loser = if r1.0 == 409 { &r1.1 } else { &r2.1 };
        let winner = if r1.0 == 200 { "node-a" } else { "node-b" };
        assert!(
            loser["error"].as_str().unwrap().contains(winner),
            "the 409 names the winner: {loser}"
        );
    }
}

/// Env var naming the config a child process of this test binary runs a server from.
const CHILD_CONFIG: &str = "CLUSTER_TEST_CHILD_CONFIG";

/// Not a test of its own: when this test binary is re-executed with [`CHILD_CONFIG`] set,
/// this runs a real server in that separate process (so the test can kill -9 it) until it
/// is killed. In a normal run it returns at once.
#[test]
fn child_server_process() {
    let Ok(path) = std::env::var(CHILD_CONFIG) else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    let cfg = Config::load(Some(&text)).unwrap();
    let _srv = start_with(cfg);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Starts a server from `conf` in a child process (this test binary re-executed).
fn spawn_server_process(conf: &std::path::Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_server_process", "--nocapture"])
        .env(CHILD_CONFIG, conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A real server process (this test binary re-executed, so the test can kill -9 it) on
/// 127.0.0.`n`, connected to NATS; returns it, its REST base URL and its data directory.
fn node_process(
    nats: &NatsServer,
    id: &str,
    n: u8,
) -> (std::process::Child, String, std::path::PathBuf) {
    let ip = format!("127.0.0.{n}");
    let dir = std::env::temp_dir().join(format!("cluster-{id}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind((ip.as_str(), 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = dir.join("node.toml");
    std::fs::write(
        &conf,
        format!(
            "node_id = \"{id}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{ip}:{port}\"\n\
             [https]\nenabled = false\n[media]\nbind = \"{ip}\"\npublic_ip = \"{ip}\"\n\
             shards = 1\npin_cores = false\n\
             [cluster]\nenabled = true\nnats_url = \"{}\"\nadvertise = \"{ip}\"\n",
            dir.display(),
            nats.url
        ),
    )
    .unwrap();
    let child = spawn_server_process(&conf);
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect((ip.as_str(), port)).is_ok()
    }));
    let base = format!("http://{ip}:{port}");
    wait_connected(&base);
    (child, base, dir)
}

#[test]
fn a_nodes_streams_leave_the_directory_on_stop_and_on_crash() {
    let nats = NatsServer::start();
    let b = node(&nats, "node-b");
    let bb = b.base_url();
    wait_connected(&bb);
    // Graceful stop of an in-process node: its entries go at once.
    {
        let a = node(&nats, "node-a");
        wait_connected(&a.base_url());
        assert_eq!(publish_status(&a.base_url(), "g").0, 200);
        assert_eq!(publish_status(&bb, "g").0, 409);
        drop(a);
        let (st, v) = publish_status(&bb, "g");
        assert_eq!(st, 200, "released on graceful stop: {v}");
    }
    // A crash: a real server process, killed with SIGKILL.
    let (mut c, bc, dir) = node_process(&nats, "node-c", 1);
    assert_eq!(publish_status(&bc, "crash").0, 200);
    // Its stream stays its own while it lives (peers hear its heartbeats).
    std::thread::sleep(Duration::from_millis(2500));
    let (st, v) = publish_status(&bb, "crash");
    assert_eq!(st, 409);
    assert!(v["error"].as_str().unwrap().contains("node-c"));
    c.kill().unwrap();
    let t0 = Instant::now();
    c.wait().unwrap();
    // Until peers declare it dead, a cluster call names it as not answering, never skips it.
    let r = ureq::post(&format!("{bb}/rest-api/stream/find_all"))
        .send_string("{}")
        .unwrap();
    assert_eq!(r.header("x-cluster-missing"), Some("node-c"));
    assert!(r.into_json::<serde_json::Value>().unwrap().is_array());
    assert!(wait_until(Duration::from_secs(6), || publish_status(
        &bb, "crash"
    )
    .0 == 200));
    let gone = t0.elapsed();
    eprintln!("crashed node's stream claimable again after {gone:?}");
    assert!(
        gone <= Duration::from_secs(3),
        "within 3 s of the crash: {gone:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_nats_local_media_goes_on_and_cluster_calls_get_503() {
    let mut nats = NatsServer::start();
    let a = node(&nats, "node-a");
    let ba = a.base_url();
    wait_connected(&ba);
    let (st, v) = publish_status(&ba, "live");
    assert_eq!(st, 200);
    let media = std::net::SocketAddr::from(([127, 0, 0, 1], v["port"].as_u64().unwrap() as u16));
    let p1 = Player::join(&ba, "live", None);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flows = |p: &Player, seq: u16| {
        p.recv(100, Duration::from_millis(20));
        sock.send_to(&rtp_packet(96, seq, 0, 1, b"x"), media)
            .unwrap();
        !p.recv(1, Duration::from_millis(500)).is_empty()
    };
    assert!(flows(&p1, 1));
    nats.stop();
    // A new publish cannot claim its name: 503 naming NATS, at once.
    assert!(wait_until(Duration::from_secs(10), || {
        let (st, v) = publish_status(&ba, "new");
        st == 503 && v["error"].as_str().unwrap().contains("NATS")
    }));
    let t = Instant::now();
    let (st, _) = publish_status(&ba, "new2");
    assert_eq!(st, 503);
    assert!(t.elapsed() < Duration::from_secs(2), "never stalls on NATS");
    // Local sessions and media are untouched; a play of a stream this node has works.
    assert!(flows(&p1, 2));
    let p2 = Player::join(&ba, "live", None);
    assert!(flows(&p2, 3));
    // find answers with this node's sessions and says so.
    let r = ureq::post(&format!("{ba}/rest-api/stream/find_all"))
        .send_string("{}")
        .unwrap();
    assert_eq!(r.header("x-cluster-scope"), Some("local"));
    let all: serde_json::Value = r.into_json().unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
    // NATS comes back: claims work again, without a restart.
    nats.restart();
    assert!(wait_until(Duration::from_secs(15), || publish_status(
        &ba, "new"
    )
    .0 == 200));
}

#[test]
fn find_and_terminate_act_on_every_node() {
    let nats = NatsServer::start();
    let nodes: Vec<control::Server> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|id| node(&nats, id))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.base_url()).collect();
    for u in &urls {
        wait_connected(u);
    }
    // Every node hears every other before the calls (heartbeats every 500 ms).
    std::thread::sleep(Duration::from_millis(1200));
    let (st, v) = publish_status(&urls[0], "s");
    assert_eq!(st, 200, "{v}");
    let pa = Player::join(&urls[0], "s", None);
    // A player on B: B pulls the stream from A (a relay publisher on B, a relay player
    // on A).
    let pb = Player::join(&urls[1], "s", None);
    let (st, v) = publish_status(&urls[1], "other");
    assert_eq!(st, 200, "{v}");
    // find_all on C lists every node's sessions, with nodeId.
    let r = ureq::post(&format!("{}/rest-api/stream/find_all", urls[2]))
        .send_string("{}")
        .unwrap();
    assert_eq!(r.header("x-cluster-missing"), None);
    let all: serde_json::Value = r.into_json().unwrap();
    let mut seen: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["nodeId"].as_str().unwrap().into(),
                s["mediaSessionId"].as_str().unwrap().into(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 6, "{all}");
    let relays: Vec<&serde_json::Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["relay"] == true)
        .collect();
    assert_eq!(
        relays.len(),
        2,
        "relay publisher on B, relay player on A: {all}"
    );
    assert!(seen.contains(&("node-a".into(), pa.id.clone())));
    assert!(seen.contains(&("node-b".into(), pb.id.clone())));
    // find with a filter, sent to C.
    let hits = find(&urls[2], json!({"name": "s", "published": false}));
    assert_eq!(hits.len(), 2);
    // terminate on C stops the players on A and B; media stops at the UDP level.
    let (st, v) = post(
        &urls[2],
        "/rest-api/stream/terminate",
        json!({"name": "s", "published": false}),
    );
    assert_eq!(st, 200, "{v}");
    let mut ids: Vec<String> = v["terminated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![pa.id.clone(), pb.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(find(&urls[0], json!({"mediaSessionId": pa.id})).is_empty());
    let media = std::net::SocketAddr::from((
        [127, 0, 0, 1],
        find(&urls[0], json!({"name": "s"}))[0]["serverPort"]
            .as_u64()
            .unwrap() as u16,
    ));
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&rtp_packet(96, 1, 0, 1, b"x"), media)
        .unwrap();
    assert!(pa.recv(1, Duration::from_millis(300)).is_empty());
    // Nothing matches anywhere: 404, after every node answered.
    let (st, _) = post(
        &urls[1],
        "/rest-api/stream/terminate",
        json!({"name": "nothing"}),
    );
    assert_eq!(st, 404);
    assert_eq!(
        post(
            &urls[1],
            "/rest-api/stream/find",
            json!({"name": "nothing"})
        )
        .0,
        404
    );
}

/// A node on its own loopback address 127.0.0.`n` (REST, media and relay address).
fn node_at(nats: &NatsServer, id: &str, n: u8, f: impl FnOnce(&mut Config)) -> control::Server {
    let ip = std::net::IpAddr::from([127, 0, 0, n]);
    let mut cfg = Config::for_tests(1);
    cfg.node_id = id.into();
    cfg.http.listen = std::net::SocketAddr::new(ip, 0);
    cfg.media.bind = ip;
    cfg.media.public_ip = ip;
    cfg.cluster.enabled = true;
    cfg.cluster.nats_url = nats.url.clone();
    cfg.cluster.advertise = ip;
    f(&mut cfg);
    start_with(cfg)
}

fn status_of(base: &str, id: &str) -> String {
    find(base, json!({ "mediaSessionId": id }))
        .first()
        .map_or(String::new(), |s| s["status"].as_str().unwrap().to_string())
}

#[test]
fn a_stream_published_on_one_node_plays_on_every_node() {
    use tests::clients::*;
    let nats = NatsServer::start();
    let a = node_at(&nats, "node-a", 2, |_| {});
    let b = node_at(&nats, "node-b", 3, |_| {});
    let c = node_at(&nats, "node-c", 4, |_| {});
    // D pulls through B (origin -> edge -> edge).
    let d = node_at(&nats, "node-d", 5, |c| {
        c.cluster.upstream = vec!["node-b".into()]
    });
    let urls: Vec<String> = [&a, &b, &c, &d].iter().map(|n| n.base_url()).collect();
    for u in &urls {
        wait_connected(u);
    }
    std::thread::sleep(Duration::from_millis(1200));
    let dir = tmpdir("cluster-pull");
    let publisher = ffmpeg_publish(&urls[0], [127, 0, 0, 2].into(), &dir, "cam", 20.0);
    assert!(wait_until(Duration::from_secs(10), || status_of(
        &urls[0],
        &publisher.id
    ) == "PUBLISHING"));
    // Cold pull on B, then a warm play there; D pulls through B; C serves a WHEP player.
    let t = Instant::now();
    let pb1 = FfPlayer::start(&urls[1], &dir, "cam", 4).expect("play on B");
    eprintln!("cold play on an edge answered in {:?}", t.elapsed());
    let pb2 = FfPlayer::start(&urls[1], &dir, "cam", 4).expect("second play on B");
    let pd = FfPlayer::start(&urls[3], &dir, "cam", 4).expect("play on D");
    let mut wc = WhepPlayer::connect(&urls[2], "cam").expect("WHEP on C");
    assert!(
        wc.run_until(Duration::from_secs(10), |p| p.connected
            && p.video >= 100
            && p.audio >= 50),
        "WHEP player on C gets video and audio: connected {} video {} audio {}",
        wc.connected,
        wc.video,
        wc.audio
    );
    for (who, p) in [("B", pb1), ("B", pb2), ("D", pd)] {
        let (v, au) = p.frames(Duration::from_secs(20));
        eprintln!("player on {who}: {v} video, {au} audio frames");
        assert!(
            v >= 40 && au >= 40,
            "player on {who} decodes: {v} video, {au} audio"
        );
    }
    // find is cluster-wide; `on(node, filter)` keeps that node's part.
    let on = |n: &str, f: serde_json::Value| -> Vec<serde_json::Value> {
        find(&urls[0], f)
            .into_iter()
            .filter(|s| s["nodeId"] == n)
            .collect()
    };
    // One upstream per edge: A relays to B and C only (D is fed by B), whatever the number
    // of players there.
    let on_a = on("node-a", json!({"relay": true}));
    let mut peers: Vec<&str> = on_a
        .iter()
        .map(|s| s["relayPeer"].as_str().unwrap())
        .collect();
    peers.sort();
    assert_eq!(peers, ["node-b", "node-c"], "{on_a:?}");
    let pub_in = find(&urls[0], json!({"mediaSessionId": publisher.id}))[0]["packetsIn"]
        .as_u64()
        .unwrap();
    for r in &on_a {
        let out = r["packetsOut"].as_u64().unwrap();
        assert!(
            out > 0 && out <= pub_in,
            "one copy per edge: {out} of {pub_in}"
        );
    }
    let on_d = on("node-d", json!({"relay": true}));
    assert_eq!(on_d.len(), 1);
    assert_eq!(on_d[0]["relayPeer"], "node-b");
    assert_eq!(on_d[0]["originNode"], "node-a");
    assert_eq!(
        on("node-b", json!({"relay": true, "published": false})).len(),
        1
    );
    // Name filters skip relays: the publisher and the real players (2 on B, 1 on C, 1 on D).
    assert_eq!(find(&urls[1], json!({"name": "cam"})).len(), 5);
    // find_all on B lists every node's sessions with nodeId.
    let all = find(&urls[1], json!({}));
    let mut nodes: Vec<&str> = all.iter().map(|s| s["nodeId"].as_str().unwrap()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, ["node-a", "node-b", "node-c", "node-d"]);
    // Terminating the publisher through D stops it on A and every player everywhere.
    let (st, v) = post(
        &urls[3],
        "/rest-api/stream/terminate",
        json!({"name": "cam", "published": true}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["terminated"], json!([publisher.id]));
    assert!(
        wait_until(Duration::from_secs(3), || urls.iter().all(|u| find(
            u,
            json!({})
        )
        .is_empty())),
        "every session gone: {:?}",
        urls.iter().map(|u| find(u, json!({}))).collect::<Vec<_>>()
    );
    let before = wc.video;
    wc.run_until(Duration::from_millis(800), |_| false);
    let settled = wc.video;
    wc.run_until(Duration::from_millis(800), |_| false);
    assert_eq!(
        wc.video, settled,
        "media to C's WHEP player stopped (was {before})"
    );
    drop(publisher);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn edge_players_fail_within_3s_when_the_origin_dies() {
    let nats = NatsServer::start();
    let (mut a, ba, dir) = node_process(&nats, "node-a", 6);
    let b = node_at(&nats, "node-b", 7, |_| {});
    let c = node_at(&nats, "node-c", 8, |_| {});
    let (bb, bc) = (b.base_url(), c.base_url());
    wait_connected(&bb);
    wait_connected(&bc);
    std::thread::sleep(Duration::from_millis(1200));
    let offer = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n";
    let (st, v) = post(&ba, "/rest-api/publish", json!({"name": "o", "sdp": offer}));
    assert_eq!(st, 200, "{v}");
    let media = std::net::SocketAddr::from(([127, 0, 0, 6], v["port"].as_u64().unwrap() as u16));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |seq: u16| {
        sock.send_to(
            &rtp_packet(96, seq, seq as u32 * 3000, 7, &[0x41; 50]),
            media,
        )
        .unwrap()
    };
    let changes_b = b.core.subscribe();
    let changes_c = c.core.subscribe();
    let pb = Player::join(&bb, "o", None);
    let pc = Player::join(&bc, "o", None);
    for seq in 0..20 {
        send(seq);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !pb.recv(5, Duration::from_secs(2)).is_empty(),
        "B's player gets media"
    );
    assert!(
        !pc.recv(5, Duration::from_secs(2)).is_empty(),
        "C's player gets media"
    );
    a.kill().unwrap();
    let t0 = Instant::now();
    a.wait().unwrap();
    let failed = |rx: &crossbeam_channel::Receiver<control::core::StatusChange>, id: &str| {
        while let Ok(ch) = rx.recv_timeout(Duration::from_secs(5)) {
            if ch.record.media_session_id == id && ch.status.is_final() {
                return Some((ch.status.as_str().to_string(), ch.info, t0.elapsed()));
            }
        }
        None
    };
    for (rx, p, who) in [(&changes_b, &pb, "B"), (&changes_c, &pc, "C")] {
        let (status, info, after) = failed(rx, &p.id).expect("player ended");
        eprintln!("player on {who}: {status} {info:?} {after:?} after the origin's kill");
        assert_eq!(status, "FAILED");
        assert_eq!(info, "Failed by origin loss");
        assert!(after <= Duration::from_secs(3), "{after:?}");
    }
    // A's streams are gone from the directory: the name can be published elsewhere.
    let mut republished = None;
    assert!(wait_until(Duration::from_secs(3), || {
        let (st, v) = publish_status(&bb, "o");
        republished = (st == 200).then_some(v);
        st == 200
    }));
    // A new play on C pulls from the new origin B.
    let port = republished.unwrap()["port"].as_u64().unwrap() as u16;
    let media_b = std::net::SocketAddr::from(([127, 0, 0, 7], port));
    let pc2 = Player::join(&bc, "o", None);
    for seq in 100..140u16 {
        sock.send_to(&rtp_packet(96, seq, seq as u32 * 3000, 8, b"new"), media_b)
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = pc2.recv(5, Duration::from_secs(2));
    assert!(
        got.iter().any(|p| p.payload == b"new"),
        "a new player on C gets the stream republished on B"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_srtp_relay_lingers_then_ends_and_a_pull_without_nats_gets_503() {
    let mut nats = NatsServer::start();
    let a = node_at(&nats, "node-a", 9, |_| {});
    // B relays with fresh SDES keys though the origin stream is plain RTP, and keeps an
    // upstream 600 ms after its last player.
    let b = node_at(&nats, "node-b", 10, |c| {
        c.cluster.srtp = true;
        c.cluster.linger_ms = 600;
    });
    let (ba, bb) = (a.base_url(), b.base_url());
    wait_connected(&ba);
    wait_connected(&bb);
    std::thread::sleep(Duration::from_millis(1200));
    let offer = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n";
    for name in ["s1", "s2"] {
        let (st, v) = post(
            &ba,
            "/rest-api/publish",
            json!({"name": name, "sdp": offer}),
        );
        assert_eq!(st, 200, "{v}");
    }
    let media = find(&ba, json!({"name": "s1", "published": true}))[0]["serverPort"]
        .as_u64()
        .unwrap() as u16;
    let media = std::net::SocketAddr::from(([127, 0, 0, 9], media));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flows = |p: &Player, seq: u16| {
        p.recv(100, Duration::from_millis(20));
        for i in 0..3 {
            sock.send_to(&rtp_packet(96, seq + i, 0, 1, &[0x41; 40]), media)
                .unwrap();
        }
        p.recv(1, Duration::from_millis(800))
            .first()
            .map(|r| r.payload.clone())
    };
    let p1 = Player::join(&bb, "s1", None);
    assert_eq!(
        flows(&p1, 1).as_deref(),
        Some(&[0x41u8; 40][..]),
        "decrypted on B"
    );
    let relay = find(&ba, json!({"relay": true}))
        .into_iter()
        .find(|s| s["nodeId"] == "node-a")
        .expect("relay player on A");
    assert_eq!(relay["srtp"], true, "{relay}");
    assert_eq!(relay["mediaProvider"], "SRTP");
    // NATS away: B still plays what it has; a play needing a pull gets 503 naming NATS.
    nats.stop();
    let p2 = Player::join(&bb, "s1", None);
    assert!(flows(&p2, 10).is_some(), "local play without NATS");
    let (st, v) = post(
        &bb,
        "/rest-api/play",
        json!({"name": "s2", "host": "127.0.0.1", "port": 9}),
    );
    assert_eq!(st, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("NATS"), "{v}");
    nats.restart();
    assert!(wait_until(Duration::from_secs(15), || publish_status(
        &bb, "probe2"
    )
    .0 == 200));
    // The restarted NATS lost the directory (memory buckets); A claims its names again on
    // its first liveness tick after reconnecting (every heartbeat_ms).
    std::thread::sleep(Duration::from_millis(2000));
    let (st, v) = post(&bb, "/rest-api/publish", json!({"name": "s2"}));
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("node-a"), "{v}");
    // The last player leaves: the relay ends after linger_ms, on both nodes.
    for p in [&p1, &p2] {
        post(
            &bb,
            "/rest-api/stream/terminate",
            json!({"mediaSessionId": p.id}),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        find(&bb, json!({"relay": true, "name": "s1"})).len(),
        2,
        "still lingering"
    );
    assert!(
        wait_until(Duration::from_secs(3), || find(
            &bb,
            json!({"relay": true, "name": "s1"})
        )
        .is_empty()),
        "relay gone from B and A after linger_ms"
    );
}

#[test]
fn a_relay_half_whose_notice_was_lost_while_nats_was_down_ends_after_reconnect() {
    let mut nats = NatsServer::start();
    let a = node_at(&nats, "node-a", 11, |_| {});
    let b = node_at(&nats, "node-b", 12, |c| c.cluster.linger_ms = 300);
    let (ba, bb) = (a.base_url(), b.base_url());
    wait_connected(&ba);
    wait_connected(&bb);
    std::thread::sleep(Duration::from_millis(1200));
    let (st, v) = post(&ba, "/rest-api/publish", json!({"name": "lost"}));
    assert_eq!(st, 200, "{v}");
    let media = std::net::SocketAddr::from(([127, 0, 0, 11], v["port"].as_u64().unwrap() as u16));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let p = Player::join(&bb, "lost", None);
    for seq in 0..10u16 {
        sock.send_to(&rtp_packet(96, seq, 0, 3, b"x"), media)
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !p.recv(3, Duration::from_secs(2)).is_empty(),
        "B plays A's stream"
    );
    let relay_on_a = || {
        find(&ba, json!({"relay": true, "name": "lost"}))
            .into_iter()
            .find(|s| s["nodeId"] == "node-a")
    };
    let relay_id = relay_on_a().expect("A's relay player")["mediaSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let changes = a.core.subscribe();
    // NATS away: B's last player leaves and its relay publisher lingers out; the notice to A
    // cannot be sent.
    nats.stop();
    let (st, v) = post(
        &bb,
        "/rest-api/stream/terminate",
        json!({"mediaSessionId": p.id}),
    );
    assert_eq!(st, 200, "{v}");
    // Local-only while NATS is away: nothing found is a 503 that says so.
    assert!(wait_until(Duration::from_secs(3), || {
        let (st, v) = post(
            &bb,
            "/rest-api/stream/find",
            json!({"relay": true, "name": "lost"}),
        );
        st == 503 && v["error"].as_str().unwrap_or("").contains("NATS")
    }));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        relay_on_a().is_some(),
        "A still sends toward B: the notice was lost"
    );
    // And a node stops promptly without NATS (its leave cannot be flushed).
    let t = Instant::now();
    drop(node_at(&nats, "node-x", 13, |_| {}));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop without NATS took {:?}",
        t.elapsed()
    );
    // NATS back: A's relay player is found orphaned and stopped.
    nats.restart();
    let t0 = Instant::now();
    let mut ended = None;
    while t0.elapsed() < Duration::from_secs(20) && ended.is_none() {
        if let Ok(ch) = changes.recv_timeout(Duration::from_millis(200)) {
            if ch.record.media_session_id == relay_id && ch.status.is_final() {
                ended = Some((ch.status.as_str().to_string(), ch.info));
            }
        }
    }
    eprintln!(
        "orphaned relay player on A: {ended:?} {:?} after NATS came back",
        t0.elapsed()
    );
    let (status, info) = ended.expect("A's orphaned relay player ends after NATS returns");
    assert_eq!(
        (status.as_str(), info.as_str()),
        ("STOPPED", "Stopped by edge loss")
    );
    assert!(relay_on_a().is_none());
    // The publisher on A is untouched.
    assert_eq!(
        find(&ba, json!({"name": "lost", "published": true})).len(),
        1
    );
}
