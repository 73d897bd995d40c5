//! The real binary's life under signals: SIGTERM drains every session through its hooks and
//! exits 0 (with `/ready` 503 meanwhile), SIGHUP reloads apps and tokens without a restart.

mod common;

use std::time::{Duration, Instant};

use common::{http, start, tmp, wait, write_config, Hooks, Node};
use serde_json::{json, Value};

#[test]
fn sigterm_stops_players_then_publishers_through_their_hooks_and_exits_0() {
    // Each hook answer takes 1 s: the drain waits that long for the final hooks, long
    // enough to watch /ready and a publish during it.
    let hooks = Hooks::start(Duration::from_millis(1000));
    let dir = tmp("term");
    let conf = write_config(
        &dir,
        23000,
        300,
        &format!(
            "shutdown_timeout_ms = 20000\n[hooks]\ntimeout_ms = 2000\n[[apps]]\nkey = \"defaultApp\"\nurl = \"{}\"\n\
             methods = [\"StreamStatusEvent\", \"unPublishStream\", \"stopStream\"]\n",
            hooks.url
        ),
    );
    let mut node = start(&dir, &conf);
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let mut ports = Vec::new();
    let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
    pkt.extend_from_slice(&[0u8; 20]);
    for i in 0..50 {
        let (st, v) = http(
            &node.addr,
            "POST",
            "/rest-api/publish",
            &json!({"name": format!("s{i}")}).to_string(),
            None,
        );
        assert_eq!(st, 200, "{v}");
        ports.push(v["port"].as_u64().unwrap() as u16);
        let (st, v) = http(
            &node.addr,
            "POST",
            "/rest-api/play",
            &json!({"name": format!("s{i}"), "host": "127.0.0.1", "port": sink_port}).to_string(),
            None,
        );
        assert_eq!(st, 200, "{v}");
    }
    // Media flows (a packet per publisher per round) until every publisher is PUBLISHING.
    let (mut publishing, mut seq) = (0, 1u16);
    assert!(
        wait(Duration::from_secs(10), || {
            seq += 1;
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            for &p in &ports {
                rtp.send_to(&pkt, ("127.0.0.1", p)).unwrap();
            }
            publishing = hooks
                .of("StreamStatusEvent")
                .iter()
                .filter(|b| b["status"] == "PUBLISHING")
                .count();
            publishing == 50
        }),
        "{publishing} of 50 publishers PUBLISHING: {}",
        node.log()
    );
    let (st, _) = http(&node.addr, "GET", "/ready", "", None);
    assert_eq!(st, 200);

    let t0 = Instant::now();
    node.signal(libc::SIGTERM);
    let mut ready = (0, Value::Null);
    assert!(
        wait(Duration::from_secs(5), || {
            ready = http(&node.addr, "GET", "/ready", "", None);
            ready.0 == 503
        }),
        "/ready while draining: {ready:?}"
    );
    assert_eq!(ready.1["status"], "draining", "{}", ready.1);
    let (st, v) = http(
        &node.addr,
        "POST",
        "/rest-api/publish",
        &json!({"name": "late"}).to_string(),
        None,
    );
    assert_eq!(st, 503, "a new session while draining: {v}");

    let mut code = None;
    assert!(
        wait(Duration::from_secs(25), || {
            code = node.child.try_wait().unwrap();
            code.is_some()
        }),
        "no exit"
    );
    eprintln!("drain + exit took {:?}", t0.elapsed());
    assert_eq!(code.unwrap().code(), Some(0), "{}", node.log());

    let finals: Vec<Value> = hooks
        .of("StreamStatusEvent")
        .into_iter()
        .filter(|b| b["info"] == "Server shutdown")
        .collect();
    let of = |published: bool, status: &str| {
        finals
            .iter()
            .filter(|b| b["published"] == published && b["status"] == status)
            .count()
    };
    assert_eq!(finals.len(), 100, "{finals:?}");
    assert_eq!(of(true, "UNPUBLISHED"), 50);
    assert_eq!(
        of(false, "STOPPED"),
        50,
        "players stopped first, by the drain"
    );
    let shutdown = |m: &str| {
        hooks
            .of(m)
            .iter()
            .filter(|b| b["info"] == "Server shutdown")
            .count()
    };
    assert_eq!(shutdown("unPublishStream"), 50);
    assert_eq!(shutdown("stopStream"), 50);
    let log = node.log();
    assert!(
        log.contains("drained: every session stopped and its hooks sent"),
        "{log}"
    );
}

#[test]
fn sighup_reloads_apps_and_tokens_and_refuses_a_broken_file() {
    let a = Hooks::start(Duration::ZERO);
    let b = Hooks::start(Duration::ZERO);
    let dir = tmp("hup");
    let app = |url: &str| {
        format!("[[apps]]\nkey = \"defaultApp\"\nurl = \"{url}\"\nmethods = [\"publishStream\"]\n")
    };
    let conf = write_config(&dir, 23400, 300, &app(&a.url));
    let mut node = start(&dir, &conf);
    let publish = |node: &Node, name: &str, token: Option<&str>| {
        http(
            &node.addr,
            "POST",
            "/rest-api/publish",
            &json!({ "name": name }).to_string(),
            token,
        )
        .0
    };
    assert_eq!(publish(&node, "one", None), 200);
    assert_eq!(a.of("publishStream").len(), 1);

    // The app's URL moves to b, and an operator token appears.
    let conf2 = write_config(&dir, 23400, 300, &app(&b.url));
    let mut text = std::fs::read_to_string(&conf2).unwrap();
    text = text.replace("[http]\n", "[http]\ntoken = \"op\"\n");
    std::fs::write(&conf2, text).unwrap();
    node.signal(libc::SIGHUP);
    assert!(
        wait(Duration::from_secs(5), || node
            .log()
            .contains("SIGHUP: configuration reloaded")),
        "{}",
        node.log()
    );
    assert_eq!(publish(&node, "two", None), 200);
    assert_eq!(a.of("publishStream").len(), 1);
    assert_eq!(b.of("publishStream").len(), 1, "the new URL is used");
    let body = "{}";
    assert_eq!(
        http(&node.addr, "POST", "/rest-api/stream/find_all", body, None).0,
        401
    );
    assert_eq!(
        http(
            &node.addr,
            "POST",
            "/rest-api/stream/find_all",
            body,
            Some("op")
        )
        .0,
        200
    );

    // A file that does not parse changes nothing and kills nothing.
    std::fs::write(&conf2, "[http\n").unwrap();
    node.signal(libc::SIGHUP);
    assert!(
        wait(Duration::from_secs(5), || node
            .log()
            .contains("SIGHUP: reload refused")),
        "{}",
        node.log()
    );
    assert!(node.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(publish(&node, "three", None), 200);
    assert_eq!(b.of("publishStream").len(), 2);
    node.signal(libc::SIGTERM);
    assert!(wait(Duration::from_secs(10), || node
        .child
        .try_wait()
        .unwrap()
        .is_some()));
}

/// A self-signed certificate for `cn` written to `dir/cert.pem` and `dir/key.pem`.
fn make_cert(dir: &std::path::Path, cn: &str) {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The subject of the certificate served at `addr`.
fn served_subject(addr: &str) -> String {
    let s = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&s.stdout).trim().to_string()
}

#[test]
fn sighup_swaps_the_tls_certificate_for_new_connections() {
    let dir = tmp("tls");
    make_cert(&dir, "first.example");
    let conf = write_config(&dir, 23700, 100, "");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "[https]\nenabled = false\n",
        &format!(
            "[https]\nenabled = true\nlisten = \"127.0.0.1:0\"\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n",
            dir.display()
        ),
    );
    std::fs::write(&conf, text).unwrap();
    let node = start(&dir, &conf);
    let mut https = String::new();
    assert!(wait(Duration::from_secs(5), || {
        https = node
            .log()
            .lines()
            .find(|l| l.contains("REST API listening (https)"))
            .and_then(|l| l.split("addr=").nth(1))
            .map(|a| a.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_default();
        !https.is_empty()
    }));
    assert!(
        served_subject(&https).contains("first.example"),
        "{}",
        served_subject(&https)
    );
    make_cert(&dir, "second.example");
    node.signal(libc::SIGHUP);
    assert!(wait(Duration::from_secs(5), || node
        .log()
        .contains("SIGHUP: configuration reloaded")));
    assert!(
        node.log()
            .lines()
            .any(|l| l.contains("configuration reloaded") && l.contains("\"tls\"")),
        "{}",
        node.log()
    );
    let subject = served_subject(&https);
    assert!(subject.contains("second.example"), "{subject}");
}

#[test]
fn a_second_sigterm_during_a_stuck_drain_exits_at_once() {
    // The web server never answers StreamStatusEvent: the drain would wait its 20 s out.
    let hooks = Hooks::start_hanging(Duration::ZERO, Some("StreamStatusEvent"));
    let dir = tmp("twice");
    let conf = write_config(
        &dir,
        23900,
        50,
        &format!(
            "shutdown_timeout_ms = 20000\n[hooks]\ntimeout_ms = 30000\n[[apps]]\nkey = \"defaultApp\"\n\
             url = \"{}\"\nmethods = [\"StreamStatusEvent\"]\n",
            hooks.url
        ),
    );
    let mut node = start(&dir, &conf);
    let (st, _) = http(
        &node.addr,
        "POST",
        "/rest-api/publish",
        &json!({"name": "stuck"}).to_string(),
        None,
    );
    assert_eq!(st, 200);
    node.signal(libc::SIGTERM);
    assert!(wait(Duration::from_secs(5), || hooks.held() >= 1));
    assert!(node.child.try_wait().unwrap().is_none(), "still draining");
    node.signal(libc::SIGTERM);
    let mut code = None;
    assert!(wait(Duration::from_secs(5), || {
        code = node.child.try_wait().unwrap();
        code.is_some()
    }));
    assert_eq!(code.unwrap().code(), Some(1), "{}", node.log());
    assert!(node.log().contains("second signal during the drain"));
}
