//! The stream REST API end to end: a real server, a real HTTP client, real UDP media.
//! Every terminate filter example is checked at the UDP level (media stops) and for reuse
//! (the same name publishes / plays again and media resumes).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::{json, Value};
use tests::*;

const T: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(300);

struct Pub {
    id: String,
    media: SocketAddr,
    sock: UdpSocket,
    ssrc: u32,
    seq: u16,
}

impl Pub {
    fn start(base: &str, name: &str) -> Pub {
        let (id, media, _) = publish(base, name);
        Pub {
            id,
            media,
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
            ssrc: 0x5000 + name.len() as u32,
            seq: 0,
        }
    }

    fn send(&mut self, n: u16) {
        for _ in 0..n {
            let pkt = rtp_packet(96, self.seq, self.seq as u32 * 3000, self.ssrc, b"media");
            self.sock.send_to(&pkt, self.media).unwrap();
            self.seq = self.seq.wrapping_add(1);
        }
    }
}

/// Sends `n` packets and returns how many each player received.
/// Sends 5 packets and counts what each player gets. A player waits up to 1 s for the next
/// packet: long enough for a machine busy with the other tests, short enough for the checks
/// that expect nothing.
fn flow(p: &mut Pub, players: &[&Player]) -> Vec<usize> {
    p.send(5);
    players
        .iter()
        .map(|pl| pl.recv(5, Duration::from_secs(1)).len())
        .collect()
}

fn ids(v: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = v
        .iter()
        .map(|x| x["mediaSessionId"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn terminate(base: &str, filter: Value) -> (u16, Value) {
    post(base, "/rest-api/stream/terminate", filter)
}

#[test]
fn find_all_and_find() {
    let srv = start(2);
    let base = srv.base_url();
    let (st, v) = post(&base, "/rest-api/stream/find_all", json!({}));
    assert_eq!((st, v), (200, json!([])));
    let (st, v) = post_raw(&base, "/rest-api/stream/find_all", "", None);
    assert_eq!((st, v), (200, json!([])), "empty body is fine for find_all");
    let (st, v) = post(&base, "/rest-api/stream/find", json!({"name": "nope"}));
    assert_eq!((st, v), (404, json!({"error": "Stream not found"})));

    let mut p = Pub::start(&base, "s1");
    let pl = Player::join(&base, "s1", None);
    assert_eq!(flow(&mut p, &[&pl]), vec![5]);
    // Status changes reach the registry through the shards' event channel: wait for them.
    assert!(wait_until(QUIET * 10, || find(&base, json!({}))
        .iter()
        .all(
            |s| s["status"] == "PUBLISHING" || s["status"] == "PLAYING"
        )));
    let all = find(&base, json!({}));
    assert_eq!(all.len(), 2);
    let publ = find(&base, json!({"name": "s1", "published": true}));
    assert_eq!(publ.len(), 1);
    let s = &publ[0];
    assert_eq!(s["mediaSessionId"], p.id.as_str());
    assert_eq!(s["status"], "PUBLISHING");
    assert_eq!(s["appKey"], "defaultApp");
    assert_eq!(s["mediaType"], "publish");
    assert_eq!(s["remoteAddress"], p.sock.local_addr().unwrap().to_string());
    assert_eq!(s["packetsIn"], 5);
    assert!(s["createDate"].as_u64().unwrap() > 1_700_000_000_000);
    for k in [
        "hasAudio",
        "hasVideo",
        "audioCodec",
        "videoCodec",
        "bytesIn",
        "packetsOut",
        "bytesOut",
        "lost",
    ] {
        assert!(s.get(k).is_some(), "field {k}");
    }
    assert!(s.get("metrics").is_none());
    let play = find(&base, json!({"published": false, "display": ["metrics"]}));
    assert_eq!(play[0]["status"], "PLAYING");
    assert_eq!(play[0]["packetsOut"], 5);
    assert_eq!(play[0]["metrics"]["PACKETS_OUT"], 5);
    let (st, v) = post(
        &base,
        "/rest-api/stream/find_all",
        json!({"display": ["metrics"]}),
    );
    assert_eq!(st, 200);
    assert!(v[0]["metrics"].is_object());
}

#[test]
fn terminate_all_players_then_replay() {
    let srv = start(2);
    let base = srv.base_url();
    let events = srv.core.subscribe();
    let mut p1 = Pub::start(&base, "s1");
    let mut p2 = Pub::start(&base, "s2");
    let a = Player::join(&base, "s1", Some(0));
    let b = Player::join(&base, "s1", Some(1));
    let c = Player::join(&base, "s2", None);
    assert_eq!(flow(&mut p1, &[&a, &b]), vec![5, 5]);
    assert_eq!(flow(&mut p2, &[&c]), vec![5]);

    let (st, v) = terminate(&base, json!({"published": false}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["terminated"].as_array().unwrap().len(), 3);
    assert_eq!(
        flow(&mut p1, &[&a, &b]),
        vec![0, 0],
        "players' media stopped"
    );
    assert_eq!(flow(&mut p2, &[&c]), vec![0]);
    let left = find(&base, json!({}));
    assert_eq!(ids(&left), {
        let mut v = vec![p1.id.clone(), p2.id.clone()];
        v.sort();
        v
    });
    assert!(left.iter().all(|s| s["status"] == "PUBLISHING"));

    let stopped: Vec<_> = events
        .try_iter()
        .chain(std::iter::from_fn(|| {
            events.recv_timeout(Duration::from_millis(500)).ok()
        }))
        .filter(|e| e.status == engine::Status::Stopped)
        .take(3)
        .collect();
    assert_eq!(stopped.len(), 3);
    assert!(stopped
        .iter()
        .all(|e| e.info == "Stopped by rest /terminate" && !e.record.published));

    // Nothing left to match: 404.
    let (st, v) = terminate(&base, json!({"published": false}));
    assert_eq!((st, v), (404, json!({"error": "Stream not found"})));
    // The same players can play again and receive.
    let a2 = Player::join(&base, "s1", Some(0));
    assert_eq!(flow(&mut p1, &[&a2]), vec![5]);
}

#[test]
fn terminate_players_of_one_stream() {
    let srv = start(2);
    let base = srv.base_url();
    let mut p1 = Pub::start(&base, "s1");
    let mut p2 = Pub::start(&base, "s2");
    let a = Player::join(&base, "s1", None);
    let b = Player::join(&base, "s1", None);
    let c = Player::join(&base, "s2", None);
    let (st, v) = terminate(&base, json!({"name": "s1", "published": false}));
    assert_eq!(st, 200);
    assert_eq!(
        ids(&v["terminated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| json!({"mediaSessionId": x}))
            .collect::<Vec<_>>()),
        {
            let mut v = vec![a.id.clone(), b.id.clone()];
            v.sort();
            v
        }
    );
    assert_eq!(flow(&mut p1, &[&a, &b]), vec![0, 0]);
    assert_eq!(flow(&mut p2, &[&c]), vec![5], "s2's player untouched");
}

#[test]
fn terminate_publisher_by_name_and_status_then_republish() {
    // Players waiting for a republish is opt-in (WCS stops them with the publisher).
    let mut cfg = control::Config::for_tests(2);
    cfg.media.players_outlive_publisher = true;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let mut p1 = Pub::start(&base, "s1");
    let a = Player::join(&base, "s1", Some(0));
    let b = Player::join(&base, "s1", Some(1));
    assert_eq!(flow(&mut p1, &[&a, &b]), vec![5, 5]);
    let (st, _) = terminate(
        &base,
        json!({"name": "s1", "status": "PLAYING", "published": true}),
    );
    assert_eq!(st, 404, "status and published must both match");
    let (st, v) = terminate(&base, json!({"name": "s1", "status": "PUBLISHING"}));
    assert_eq!(st, 200);
    assert_eq!(v["terminated"], json!([p1.id]));
    // The old publisher's further packets are dropped: nobody receives them.
    assert_eq!(flow(&mut p1, &[&a, &b]), vec![0, 0]);
    // The players are still there, and a new publisher of the same name reaches them.
    assert_eq!(find(&base, json!({"name": "s1"})).len(), 2);
    let mut again = Pub::start(&base, "s1");
    assert_eq!(
        flow(&mut again, &[&a, &b]),
        vec![5, 5],
        "media resumes after re-publish"
    );
    assert_eq!(
        find(&base, json!({"name": "s1", "published": true}))[0]["mediaSessionId"],
        again.id.as_str()
    );
}

#[test]
fn terminate_by_media_session_ids() {
    let srv = start(2);
    let base = srv.base_url();
    let mut p1 = Pub::start(&base, "s1");
    let a = Player::join(&base, "s1", None);
    let b = Player::join(&base, "s1", None);
    let c = Player::join(&base, "s1", None);
    let (st, v) = terminate(
        &base,
        json!({"mediaSessionIds": [a.id, c.id, "no-such-id"]}),
    );
    assert_eq!(st, 200);
    assert_eq!(v["terminated"].as_array().unwrap().len(), 2);
    assert_eq!(flow(&mut p1, &[&a, &b, &c]), vec![0, 5, 0]);
    let (st, _) = terminate(&base, json!({"mediaSessionId": b.id}));
    assert_eq!(st, 200);
    assert_eq!(flow(&mut p1, &[&b]), vec![0]);
}

#[test]
fn empty_filter_needs_all_true() {
    let srv = start(2);
    let base = srv.base_url();
    let mut p1 = Pub::start(&base, "s1");
    let a = Player::join(&base, "s1", None);
    let (st, v) = terminate(&base, json!({}));
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("all"));
    assert_eq!(flow(&mut p1, &[&a]), vec![5], "nothing stopped");
    let (st, v) = terminate(&base, json!({"all": true}));
    assert_eq!(st, 200);
    assert_eq!(v["terminated"].as_array().unwrap().len(), 2);
    assert_eq!(flow(&mut p1, &[&a]), vec![0]);
    // No session state is left behind on any shard.
    assert!(wait_until(T, || srv
        .core
        .live()
        .per_shard
        .iter()
        .all(|&n| n == 0)));
    assert_eq!(srv.core.stopping_count(), 0);
    assert_eq!(srv.core.session_count(), 0);
}

#[test]
fn bad_input_gets_clear_errors() {
    let srv = start(2);
    let base = srv.base_url();
    let cases = [
        ("/rest-api/stream/find", "{not json", "invalid request body"),
        (
            "/rest-api/stream/find",
            r#"{"published":"yes"}"#,
            "field `published`",
        ),
        ("/rest-api/stream/find", r#"{"status":"DANCING"}"#, "status"),
        ("/rest-api/stream/terminate", r#"{"nmae":"s1"}"#, "nmae"),
        (
            "/rest-api/stream/terminate",
            r#"{"mediaSessionIds":"a"}"#,
            "invalid type",
        ),
        ("/rest-api/stream/terminate", r#"[1,2]"#, "invalid type"),
        ("/rest-api/publish", r#"{}"#, "name"),
        ("/rest-api/publish", r#"{"name":""}"#, "name"),
        (
            "/rest-api/publish",
            r#"{"name":"x","appKey":"nope"}"#,
            "appKey",
        ),
        (
            "/rest-api/play",
            r#"{"name":"x","host":"localhost","port":5}"#,
            "invalid",
        ),
        (
            "/rest-api/play",
            r#"{"name":"x","host":"127.0.0.1","port":70000}"#,
            "invalid value",
        ),
        ("/rest-api/publish", r#"{"name":"x","shard":99}"#, "shard"),
    ];
    for (path, body, needle) in cases {
        let (st, v) = post_raw(&base, path, body, None);
        assert_eq!(st, 400, "{path} {body} -> {v}");
        let e = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("JSON error body for {body}: {v}"));
        assert!(
            e.contains(needle),
            "{body}: error `{e}` should mention `{needle}`"
        );
    }
    // Name in use.
    publish(&base, "dup");
    let (st, v) = post(&base, "/rest-api/publish", json!({"name": "dup"}));
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("Stream name is already in use"))
    );
    // Oversize body.
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(100_000));
    let (st, v) = post_raw(&base, "/rest-api/stream/find", &big, None);
    assert_eq!(st, 413);
    assert!(v["error"].as_str().unwrap().contains("larger"));
    // Unknown route and wrong method.
    let (st, _) = post(&base, "/rest-api/stream/nope", json!({}));
    assert_eq!(st, 404);
    let r = ureq::get(&format!("{base}/rest-api/stream/find")).call();
    assert!(matches!(r, Err(ureq::Error::Status(405, _))));
    // The server is still fine.
    assert_eq!(post(&base, "/rest-api/stream/find_all", json!({})).0, 200);
}

#[test]
fn bearer_token_is_enforced() {
    let mut cfg = control::Config::for_tests(1);
    cfg.http.token = Some("s3cret".into());
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (st, v) = post(&base, "/rest-api/stream/find_all", json!({}));
    assert_eq!(st, 401);
    assert!(v["error"].as_str().unwrap().contains("token"));
    let (st, _) = post_raw(&base, "/rest-api/stream/find_all", "{}", Some("wrong"));
    assert_eq!(st, 401);
    let (st, v) = post_raw(&base, "/rest-api/stream/find_all", "{}", Some("s3cret"));
    assert_eq!((st, v), (200, json!([])));
}

#[test]
fn https_with_generated_self_signed_certificate() {
    let dir = std::env::temp_dir().join(format!("ms-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = control::Config::for_tests(1);
    cfg.https.enabled = true;
    cfg.https.auto_cert_dir = Some(dir.clone());
    let srv = start_with(cfg.clone());
    let (addr, cert) = srv.https.clone().expect("https enabled");
    assert!(
        cert.starts_with(&dir) && cert.exists(),
        "certificate generated at first start"
    );
    let pem = std::fs::read(&cert).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let c: rustls::pki_types::CertificateDer = c.unwrap();
        roots.add(c).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let agent = ureq::AgentBuilder::new()
        .tls_config(std::sync::Arc::new(tls))
        .build();
    let url = format!("https://localhost:{}/rest-api/stream/find_all", addr.port());
    let r = agent.post(&url).send_string("{}").unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.into_string().unwrap(), "[]");
    // An untrusting client fails the handshake instead of talking plaintext.
    assert!(
        ureq::post(&format!("http://127.0.0.1:{}/health", addr.port()))
            .call()
            .is_err()
    );
    drop(srv);
    // A restart reuses the same certificate.
    let srv2 = start_with(cfg);
    assert_eq!(
        std::fs::read(srv2.https.as_ref().unwrap().1.clone()).unwrap(),
        pem
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_and_openapi() {
    let srv = start(2);
    let base = srv.base_url();
    let mut p = Pub::start(&base, "m");
    let a = Player::join(&base, "m", None);
    assert_eq!(flow(&mut p, &[&a]), vec![5]);
    let text = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let total = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    };
    assert_eq!(total("mediaserver_shard_sessions{"), 2);
    assert_eq!(total("mediaserver_registry_sessions{"), 2);
    assert_eq!(total("mediaserver_sent_packets_total{"), 5);
    assert!(text.contains("# TYPE mediaserver_dropped_packets_total counter"));
    assert!(
        text.contains(r#"mediaserver_dropped_packets_total{shard="0",reason="unknown_source"}"#)
    );
    assert_eq!(
        total(r#"mediaserver_sessions{kind="publisher",status="PUBLISHING"}"#),
        1
    );
    assert_eq!(
        total(r#"mediaserver_sessions{kind="player",status="PLAYING"}"#),
        1
    );
    // One publisher leg and one player leg hold a port each.
    assert_eq!(total(r#"mediaserver_media_ports{state="used"}"#), 2);
    assert!(
        total(
            r#"mediaserver_http_requests_total{route="/rest-api/play",method="POST",status="200"}"#
        ) >= 1,
        "{text}"
    );
    assert!(total("process_open_fds") > 0);
    assert!(text.contains("mediaserver_build_info{version="));
    // Prometheus's own linter accepts the exposition (tests/run.sh installs promtool).
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/run.sh installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let spec: Value = ureq::get(&format!("{base}/openapi.json"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(spec["openapi"], "3.0.3");
    assert!(spec["paths"]["/rest-api/stream/terminate"]["post"].is_object());
}

#[test]
fn apps_admin_api_as_the_cli_uses_it() {
    let srv = start(1);
    let t = control::cli::Target {
        server: srv.base_url(),
        token: None,
    };
    let shown = control::cli::show(&t).unwrap();
    assert!(shown.contains("defaultApp"), "{shown}");
    assert!(!shown.contains("StreamKeepAliveEvent"));
    control::cli::call(
        &t,
        "/rest-api/admin/apps/add_rest_method",
        json!({"key": "defaultApp", "method": "StreamKeepAliveEvent"}),
    )
    .unwrap();
    control::cli::call(
        &t,
        "/rest-api/admin/apps/update",
        json!({"key": "defaultApp", "url": "http://127.0.0.1:9/MyAPI"}),
    )
    .unwrap();
    let shown = control::cli::show(&t).unwrap();
    assert!(
        shown.contains("StreamKeepAliveEvent") && shown.contains("http://127.0.0.1:9/MyAPI"),
        "{shown}"
    );
    assert_eq!(
        srv.core
            .apps
            .lock()
            .unwrap()
            .hook_url("defaultApp", "StreamKeepAliveEvent")
            .as_deref(),
        Some("http://127.0.0.1:9/MyAPI/StreamKeepAliveEvent")
    );
    let e = control::cli::call(
        &t,
        "/rest-api/admin/apps/update",
        json!({"key": "nope", "url": "http://x"}),
    )
    .unwrap_err();
    assert!(e.contains("app `nope` not found"), "{e}");
    let e = control::cli::call(
        &t,
        "/rest-api/admin/apps/add_rest_method",
        json!({"key": "defaultApp", "method": "Dance"}),
    )
    .unwrap_err();
    assert!(e.contains("unknown REST method `Dance`"), "{e}");
}
