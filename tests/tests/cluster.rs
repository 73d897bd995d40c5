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

/// The server binary, built if this test run did not build it.
fn server_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("mediaserver");
    if !bin.exists() {
        let st = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "control", "--bin", "mediaserver"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    bin
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
    let dir = std::env::temp_dir().join(format!("cluster-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = dir.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "node_id = \"node-c\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [https]\nenabled = false\n[media]\nbind = \"127.0.0.1\"\nshards = 1\npin_cores = false\n\
             [cluster]\nenabled = true\nnats_url = \"{}\"\n",
            dir.display(),
            nats.url
        ),
    )
    .unwrap();
    let mut c = std::process::Command::new(server_binary())
        .args(["run", "--config"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let bc = format!("http://127.0.0.1:{port}");
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    wait_connected(&bc);
    assert_eq!(publish_status(&bc, "crash").0, 200);
    let (st, v) = publish_status(&bb, "crash");
    assert_eq!(st, 409);
    assert!(v["error"].as_str().unwrap().contains("node-c"));
    c.kill().unwrap();
    let t0 = Instant::now();
    c.wait().unwrap();
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
    // NATS comes back: claims work again, without a restart.
    nats.restart();
    assert!(wait_until(Duration::from_secs(15), || publish_status(
        &ba, "new"
    )
    .0 == 200));
}
