//! REST hooks against a real HTTP hook server run by the test.

use std::net::UdpSocket;
use std::time::Duration;

use control::config::{RestClientConfig, RestOnError, RestPolicy};
use control::Config;
use serde_json::json;
use tests::*;

const T: Duration = Duration::from_secs(5);

/// A config whose defaultApp calls `url` for `methods`, with keep-alive every 100 ms.
fn config(url: &str, methods: &[&str], rcc: &[(&str, RestClientConfig)]) -> Config {
    let mut cfg = Config::for_tests(2);
    let app = &mut cfg.apps[0];
    app.url = url.to_string();
    app.methods = methods.iter().map(|s| s.to_string()).collect();
    app.rest_client_config = rcc
        .iter()
        .map(|(m, r)| (m.to_string(), r.clone()))
        .collect();
    cfg.hooks.keep_alive.enabled = true;
    cfg.hooks.keep_alive.interval_ms = 100;
    cfg.hooks.timeout_ms = 1000;
    cfg
}

fn send(sock: &UdpSocket, to: std::net::SocketAddr, seq: u16) {
    sock.send_to(&rtp_packet(96, seq, 0, 77, b"x"), to).unwrap();
}

/// Sends a packet and returns whether `p` received it (after draining what was queued).
fn gets(p: &Player, pubsock: &UdpSocket, media: std::net::SocketAddr, seq: u16) -> bool {
    p.recv(1000, Duration::from_millis(50));
    send(pubsock, media, seq);
    !p.recv(1, Duration::from_millis(300)).is_empty()
}

fn status_of(base: &str, id: &str) -> Option<String> {
    find(base, json!({"mediaSessionId": id}))
        .first()
        .map(|s| s["status"].as_str().unwrap().to_string())
}

#[test]
fn keepalive_403_for_publisher_stops_only_the_publisher_and_it_can_publish_again() {
    // The web server refuses the keep-alive of one publisher session (by id).
    let banned = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let b2 = banned.clone();
    let hook = HookServer::start(move |m, b| {
        if m == "StreamKeepAliveEvent"
            && b["published"] == true
            && b["mediaSessionId"] == b2.lock().unwrap().as_str()
        {
            (403, json!({"status": 403, "reason": "unpaid"}))
        } else {
            (200, json!({}))
        }
    });
    let mut cfg = config(
        &hook.url,
        &["StreamKeepAliveEvent", "StreamStatusEvent"],
        &[],
    );
    // The player waits for the republish (WCS would stop it with the publisher).
    cfg.media.players_outlive_publisher = true;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let events = srv.core.subscribe();
    let (pid, media, _) = publish(&base, "s1");
    let pl = Player::join(&base, "s1", None);
    let (other_pub, _, _) = publish(&base, "s2");
    let pubsock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(gets(&pl, &pubsock, media, 0), "media flows before");
    *banned.lock().unwrap() = pid.clone();
    assert!(
        wait_until(T, || status_of(&base, &pid).is_none()),
        "publisher terminated"
    );
    let stop = events
        .iter()
        .find(|e| e.record.media_session_id == pid && e.status == engine::Status::Unpublished)
        .unwrap();
    assert_eq!(stop.info, "Terminated by keep-alive");
    // The player and the other stream stay.
    assert!(status_of(&base, &pl.id).is_some(), "player kept");
    assert!(status_of(&base, &other_pub).is_some(), "other stream kept");
    assert!(
        !gets(&pl, &pubsock, media, 1),
        "stopped publisher's media is dropped"
    );
    // The web server sees both kinds of keep-alive, with `published` telling which.
    let ka = hook.calls_of("StreamKeepAliveEvent");
    assert!(ka
        .iter()
        .any(|c| c.body["published"] == false && c.body["mediaSessionId"] == pl.id.as_str()));
    // StreamStatusEvent UNPUBLISHED (a publisher's normal end) reached the web server.
    assert!(wait_until(T, || hook
        .calls_of("StreamStatusEvent")
        .iter()
        .any(|c| c.body["mediaSessionId"] == pid.as_str()
            && c.body["status"] == "UNPUBLISHED"
            && c.body["info"] == "Terminated by keep-alive")));
    // The same name publishes again, survives keep-alives and reaches the same player.
    let (pid2, media2, _) = publish(&base, "s1");
    let sock2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(
        gets(&pl, &sock2, media2, 100),
        "media resumes after re-publish"
    );
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(status_of(&base, &pid2).as_deref(), Some("PUBLISHING"));
}

#[test]
fn keepalive_403_for_a_player_stops_only_that_player() {
    let victim = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let v2 = victim.clone();
    let hook = HookServer::start(move |m, b| {
        if m == "StreamKeepAliveEvent"
            && b["published"] == false
            && b["mediaSessionId"] == v2.lock().unwrap().as_str()
        {
            (403, json!({}))
        } else {
            (200, json!({}))
        }
    });
    let srv = start_with(config(&hook.url, &["StreamKeepAliveEvent"], &[]));
    let base = srv.base_url();
    let (pid, media, _) = publish(&base, "s1");
    let a = Player::join(&base, "s1", None);
    let b = Player::join(&base, "s1", None);
    *victim.lock().unwrap() = a.id.clone();
    assert!(
        wait_until(T, || status_of(&base, &a.id).is_none()),
        "player a terminated"
    );
    let pubsock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(!gets(&a, &pubsock, media, 1));
    assert!(
        b.recv(1, Duration::from_millis(300)).len() == 1,
        "player b still receives"
    );
    assert!(status_of(&base, &pid).is_some(), "publisher untouched");
    assert!(status_of(&base, &b.id).is_some());
    // The stopped player can play again (the hook only refuses that one session id).
    let a2 = Player::join(&base, "s1", None);
    assert!(gets(&a2, &pubsock, media, 2));
}

#[test]
fn dead_hook_server_log_keeps_going_fail_denies_and_terminates() {
    // Nothing listens on this port.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/MyAPI", l.local_addr().unwrap())
    };
    // LOG (default): publish, play and keep-alive all go on.
    let srv = start_with(config(
        &dead,
        &[
            "publishStream",
            "playStream",
            "StreamKeepAliveEvent",
            "StreamStatusEvent",
        ],
        &[],
    ));
    let base = srv.base_url();
    let (pid, media, _) = publish(&base, "s1");
    let pl = Player::join(&base, "s1", None);
    std::thread::sleep(Duration::from_millis(400)); // several keep-alive rounds fail
    assert!(status_of(&base, &pid).is_some());
    let pubsock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(
        gets(&pl, &pubsock, media, 0),
        "media flows despite the dead hook server"
    );
    drop(srv);

    // FAIL: publish is denied; an existing stream is terminated by the failing keep-alive.
    let fail = RestClientConfig {
        rest_on_error: RestOnError::Fail,
        ..Default::default()
    };
    let srv = start_with(config(
        &dead,
        &["publishStream"],
        &[("publishStream", fail.clone())],
    ));
    let (st, v) = post(&srv.base_url(), "/rest-api/publish", json!({"name": "s1"}));
    assert_eq!(st, 502, "{v}");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("publishStream hook failed"));
    assert!(
        find(&srv.base_url(), json!({})).is_empty(),
        "nothing created"
    );
    drop(srv);
    let srv = start_with(config(
        &dead,
        &["StreamKeepAliveEvent"],
        &[("StreamKeepAliveEvent", fail)],
    ));
    let base = srv.base_url();
    let (pid, _, _) = publish(&base, "s1");
    assert!(
        wait_until(T, || status_of(&base, &pid).is_none()),
        "FAIL keep-alive terminates"
    );
}

#[test]
fn auth_denial_with_reason_overwrite_exclude_and_signature() {
    let hook = HookServer::start(|m, b| match m {
        "playStream" if b["name"] == "secret" => (
            403,
            json!({"status": 403, "reason": "no ticket for secret"}),
        ),
        "publishStream" if b["name"] == "raw" => (200, json!({"name": "renamed"})),
        "connect" if b["appKey"] == "defaultApp" => (200, json!({})),
        _ => (200, json!({})),
    });
    let overwrite = RestClientConfig {
        rest_policy: RestPolicy::Overwrite,
        rest_overwrite: vec!["name".into()],
        rest_exclude: vec!["remoteAddress".into(), "clientAddress".into()],
        ..Default::default()
    };
    let mut cfg = config(
        &hook.url,
        &[
            "connect",
            "publishStream",
            "playStream",
            "StreamStatusEvent",
        ],
        &[("publishStream", overwrite)],
    );
    cfg.hooks.hmac_secret = Some("k3y".into());
    cfg.hooks.keep_alive.enabled = false;
    let srv = start_with(cfg);
    let base = srv.base_url();

    // Denied with the web server's reason.
    publish(&base, "secret");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let (st, v) = post(
        &base,
        "/rest-api/play",
        json!({"name": "secret", "host": "127.0.0.1", "port": port}),
    );
    assert_eq!((st, v), (403, json!({"error": "no ticket for secret"})));
    assert!(find(&base, json!({"name": "secret", "published": false})).is_empty());

    // OVERWRITE renames the stream; restExclude keeps fields out of the hook body.
    let (st, v) = post(&base, "/rest-api/publish", json!({"name": "raw"}));
    assert_eq!(st, 200);
    assert_eq!(v["name"], "renamed");
    assert_eq!(find(&base, json!({"name": "renamed"})).len(), 1);
    let calls = hook.calls_of("publishStream");
    let raw = calls.iter().find(|c| c.body["name"] == "raw").unwrap();
    assert!(
        raw.body.get("remoteAddress").is_none() && raw.body.get("clientAddress").is_none(),
        "{:?}",
        raw.body
    );
    assert!(raw.body.get("mediaSessionId").is_some());
    assert_eq!(raw.path, "/MyAPI/publishStream");
    // connect was called too, without the exclusions (they are per method).
    assert!(hook
        .calls_of("connect")
        .iter()
        .any(|c| c.body.get("clientAddress").is_some()));

    // Every call is signed: HMAC-SHA256 of the body we received.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k3y");
    for c in hook.calls.lock().unwrap().iter() {
        let sig = c.signature.as_deref().expect("signature header");
        let hex = sig.strip_prefix("sha256=").unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        // The server signs its exact bytes; re-serialising the parsed JSON keeps key order
        // (serde_json preserve_order is off on both sides: sorted keys), so it matches.
        let body = c.body.to_string();
        ring::hmac::verify(&key, body.as_bytes(), &bytes)
            .unwrap_or_else(|_| panic!("bad signature for {}", c.method));
    }
    // A status event for the renamed publisher arrives once media flows.
    let media = std::net::SocketAddr::from(([127, 0, 0, 1], v["port"].as_u64().unwrap() as u16));
    sock.send_to(&rtp_packet(96, 1, 0, 1, b"x"), media).unwrap();
    assert!(wait_until(T, || hook
        .calls_of("StreamStatusEvent")
        .iter()
        .any(
            |c| c.body["name"] == "renamed" && c.body["status"] == "PUBLISHING"
        )));
}

#[test]
fn hanging_hook_server_stalls_neither_media_nor_rest() {
    // Accepts connections and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/MyAPI", l.local_addr().unwrap());
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h2 = held.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h2.lock().unwrap().push(s);
        }
    });
    let mut cfg = config(&url, &["StreamStatusEvent", "StreamKeepAliveEvent"], &[]);
    cfg.hooks.timeout_ms = 15_000;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (_, media, _) = publish(&base, "s1");
    let players: Vec<Player> = (0..5).map(|_| Player::join(&base, "s1", None)).collect();
    let pubsock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for round in 0..5u16 {
        for p in &players {
            assert!(
                gets(p, &pubsock, media, round * 10),
                "round {round}: media flows"
            );
        }
        // REST answers while status events and keep-alives hang.
        assert_eq!(find(&base, json!({})).len(), 6);
    }
    assert!(
        !held.lock().unwrap().is_empty(),
        "hooks were attempted and are hanging"
    );
}

#[test]
fn example_hook_server_script_works() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hook_server.py");
    let child = std::process::Command::new("python3")
        .args([script, "--port", &port.to_string(), "--secret", "k3y"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs the example");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let url = format!("http://127.0.0.1:{port}/MyAPI");
    assert!(wait_until(T, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    let mut cfg = config(&url, &["publishStream", "StreamKeepAliveEvent"], &[]);
    cfg.hooks.hmac_secret = Some("k3y".into());
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (st, v) = post(&base, "/rest-api/publish", json!({"name": "forbidden"}));
    assert_eq!(
        (st, v),
        (403, json!({"error": "stream forbidden is blocked"}))
    );
    let (pid, _, _) = publish(&base, "fine");
    std::thread::sleep(Duration::from_millis(300));
    assert!(status_of(&base, &pid).is_some(), "keep-alives answered 200");
    ureq::post(&format!("http://127.0.0.1:{port}/MyAPI/kick"))
        .send_json(json!({"mediaSessionId": pid}))
        .unwrap();
    assert!(
        wait_until(T, || status_of(&base, &pid).is_none()),
        "kicked at next keep-alive"
    );
}
