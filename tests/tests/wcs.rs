//! Drop-in for the reference server's (WCS) operators, over real sockets and real HTTP hook
//! servers: the seed's restClientConfig block, restClientConfig from a connect reply, hook
//! counters and stream-object fields, the stream lifecycle (a publisher's stop stops its
//! players, a silent publisher fails), HTTPS hooks with a private CA, `a=ssrc` in player SDP.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::Config;
use serde_json::json;
use tests::*;

const T: Duration = Duration::from_secs(5);
const H264_OPUS: &str = include_str!("../../control/src/testdata/ffmpeg_h264_opus.sdp");

/// A test config overlaid with `toml` (as an operator's file would be), hooks to `url`.
fn config(url: &str, toml: &str) -> Config {
    let mut cfg = Config::load(Some(toml)).expect("config loads");
    let base = Config::for_tests(1);
    cfg.http = base.http;
    cfg.https = base.https;
    cfg.media.bind = base.media.bind;
    cfg.media.shards = 1;
    cfg.media.pin_cores = false;
    cfg.data_dir = base.data_dir;
    cfg.hooks.timeout_ms = 1000;
    for a in &mut cfg.apps {
        if a.url == "HOOK" {
            a.url = url.to_string();
        }
    }
    cfg
}

/// Publishes `name` with ffmpeg's H264+Opus SDP; returns (id, video port, audio port).
fn publish_sdp(base: &str, name: &str) -> (String, SocketAddr, SocketAddr) {
    let (st, v) = post(
        base,
        "/rest-api/publish",
        json!({"name": name, "sdp": H264_OPUS}),
    );
    assert_eq!(st, 200, "publish: {v}");
    let ports = v["serverPorts"].as_array().expect("serverPorts");
    let at = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i].as_u64().unwrap() as u16));
    (v["mediaSessionId"].as_str().unwrap().into(), at(0), at(1))
}

fn status_of(base: &str, id: &str) -> Option<String> {
    find(base, json!({"mediaSessionId": id}))
        .first()
        .map(|s| s["status"].as_str().unwrap().to_string())
}

/// Sends `n` RTP packets of payload type `pt` from `sock` to `to`, 5 ms apart.
fn send(sock: &UdpSocket, to: SocketAddr, pt: u8, first: u16, n: u16, ssrc: u32) {
    for i in 0..n {
        let seq = first.wrapping_add(i);
        sock.send_to(
            &rtp_packet(pt, seq, seq as u32 * 3000, ssrc, b"payload"),
            to,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn seed_block_keepalive_without_sdp_and_fail_on_error_terminates() {
    // The seed page's block, key for key; the web server fails the keep-alives of "doomed".
    let hook = HookServer::start(|m, b| {
        if m == "StreamKeepAliveEvent" && b["name"] == "doomed" {
            (500, json!({}))
        } else {
            (200, json!({}))
        }
    });
    let srv = start_with(config(
        &hook.url,
        r#"
[[apps]]
key = "defaultApp"
url = "HOOK"
methods = ["StreamKeepAliveEvent", "StreamStatusEvent", "unPublishStream"]
[apps.rest_client_config.StreamKeepAliveEvent]
clientExclude = ""
restExclude = "sdp"
restOnError = "FAIL"
restPolicy = "NOTIFY"
restOverwrite = ""
[hooks.keep_alive]
enabled = true
interval_ms = 100
"#,
    ));
    let base = srv.base_url();
    let (live, ..) = publish_sdp(&base, "live");
    let (doomed, ..) = publish_sdp(&base, "doomed");
    // find shows the SDP; the keep-alive body leaves it out as restExclude says.
    assert!(find(&base, json!({"mediaSessionId": live}))[0]["sdp"]
        .as_str()
        .is_some_and(|s| s.contains("H264/90000")));
    assert!(wait_until(T, || hook
        .calls_of("StreamKeepAliveEvent")
        .iter()
        .any(|c| c.body["mediaSessionId"] == live.as_str())));
    for c in hook.calls_of("StreamKeepAliveEvent") {
        assert!(
            c.body.get("sdp").is_none(),
            "keep-alive carries no sdp: {}",
            c.body
        );
        assert!(c.body["name"].as_str().is_some());
    }
    // restOnError FAIL: the failing keep-alive terminates that stream only.
    assert!(
        wait_until(T, || status_of(&base, &doomed).is_none()),
        "doomed terminated"
    );
    assert!(wait_until(T, || hook
        .calls_of("unPublishStream")
        .iter()
        .any(|c| c.body["mediaSessionId"] == doomed.as_str()
            && c.body["status"] == "UNPUBLISHED"
            && c.body["info"] == "Terminated by keep-alive")));
    // Methods without restExclude still carry the SDP.
    assert!(hook
        .calls_of("unPublishStream")
        .iter()
        .any(|c| c.body["sdp"].as_str().is_some()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status_of(&base, &live).as_deref(), Some("PENDING"));
}

#[test]
fn connect_reply_rest_client_config_governs_that_sessions_later_hooks() {
    // For stream "a" the web server answers connect with its own settings for the session.
    let hook = HookServer::start(|m, b| {
        if m == "connect" && b["name"] == "a" {
            (
                200,
                json!({"restClientConfig": {
                    "StreamKeepAliveEvent": {"restExclude": "packetsIn,remoteAddress"},
                    "StreamStatusEvent": {"restPolicy": "DISABLE"},
                    "publishStream": {"clientExclude": "shard"}
                }}),
            )
        } else {
            (200, json!({}))
        }
    });
    let srv = start_with(config(
        &hook.url,
        r#"
[[apps]]
key = "defaultApp"
url = "HOOK"
methods = ["connect", "publishStream", "StreamKeepAliveEvent", "StreamStatusEvent"]
[hooks.keep_alive]
enabled = true
interval_ms = 100
"#,
    ));
    let base = srv.base_url();
    let (st, va) = post(&base, "/rest-api/publish", json!({"name": "a"}));
    assert_eq!(st, 200, "{va}");
    assert!(
        va.get("shard").is_none(),
        "clientExclude stripped `shard`: {va}"
    );
    let (st, vb) = post(&base, "/rest-api/publish", json!({"name": "b"}));
    assert_eq!(st, 200);
    assert!(vb.get("shard").is_some(), "b keeps the app's settings");
    let (ida, idb) = (
        va["mediaSessionId"].as_str().unwrap().to_string(),
        vb["mediaSessionId"].as_str().unwrap().to_string(),
    );
    // Start both streams so StreamStatusEvent PUBLISHING would fire.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for v in [&va, &vb] {
        let to = SocketAddr::from(([127, 0, 0, 1], v["port"].as_u64().unwrap() as u16));
        send(&sock, to, 96, 0, 3, 5);
    }
    let ka_of = |id: &str| {
        hook.calls_of("StreamKeepAliveEvent")
            .into_iter()
            .filter(|c| c.body["mediaSessionId"] == id)
            .collect::<Vec<_>>()
    };
    assert!(wait_until(T, || !ka_of(&ida).is_empty() && !ka_of(&idb).is_empty()));
    for c in ka_of(&ida) {
        assert!(c.body.get("packetsIn").is_none() && c.body.get("remoteAddress").is_none());
    }
    for c in ka_of(&idb) {
        assert!(c.body.get("packetsIn").is_some());
    }
    assert!(wait_until(T, || hook
        .calls_of("StreamStatusEvent")
        .iter()
        .any(
            |c| c.body["mediaSessionId"] == idb.as_str() && c.body["status"] == "PUBLISHING"
        )));
    assert!(
        !hook
            .calls_of("StreamStatusEvent")
            .iter()
            .any(|c| c.body["mediaSessionId"] == ida.as_str()),
        "StreamStatusEvent disabled for session a by its connect reply"
    );
}

#[test]
fn keepalive_counters_grow_and_stream_objects_have_wcs_fields() {
    let hook = HookServer::start(|_, _| (200, json!({})));
    let mut cfg = config(
        &hook.url,
        r#"
node_id = "node-test-1"
[[apps]]
key = "defaultApp"
url = "HOOK"
methods = ["StreamKeepAliveEvent"]
[hooks.keep_alive]
enabled = true
interval_ms = 100
"#,
    );
    cfg.media.rtp_activity_timeout_ms = 0;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (pid, video, _) = publish_sdp(&base, "cam");
    // An SPS/PPS pair for 320x240 (ffmpeg's), as single-NAL H264 packets.
    let sps = [
        0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40,
        0x00, 0x00, 0x0c, 0x83, 0xc5, 0x0a, 0xa8,
    ];
    let pps = [0x68, 0xce, 0x0f, 0xc8];
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&rtp_packet(96, 1, 0, 9, &sps), video).unwrap();
    sock.send_to(&rtp_packet(96, 2, 0, 9, &pps), video).unwrap();
    let (st, file) = {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = port.local_addr().unwrap().port();
        drop(port);
        let r = ureq::get(&format!(
            "{base}/rest-api/stream/cam.sdp?port={p}&srtp=AES_CM_128_HMAC_SHA1_80"
        ))
        .call()
        .unwrap();
        (r.status(), r.into_string().unwrap())
    };
    assert_eq!(st, 200, "{file}");
    // Packets keep arriving; the keep-alive counters follow.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let sender = std::thread::spawn(move || {
        let mut seq = 3u16;
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            send(&sock, video, 96, seq, 4, 9);
            seq = seq.wrapping_add(4);
        }
    });
    let pub_ka = |h: &HookServer| -> Vec<u64> {
        h.calls_of("StreamKeepAliveEvent")
            .iter()
            .filter(|c| c.body["mediaSessionId"] == pid.as_str())
            .map(|c| c.body["packetsIn"].as_u64().unwrap())
            .collect()
    };
    assert!(wait_until(T, || pub_ka(&hook).len() >= 4));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    sender.join().unwrap();
    let counts = pub_ka(&hook);
    assert!(counts[0] > 0, "non-zero counters: {counts:?}");
    assert!(
        counts.last() > counts.first(),
        "growing counters: {counts:?}"
    );
    let player_ka = hook
        .calls_of("StreamKeepAliveEvent")
        .into_iter()
        .rev()
        .find(|c| c.body["published"] == false)
        .expect("player keep-alive");
    assert!(player_ka.body["packetsOut"].as_u64().unwrap() > 0);
    assert!(player_ka.body["bytesOut"].as_u64().unwrap() > 0);
    // The stream objects.
    let p = &find(&base, json!({"mediaSessionId": pid}))[0];
    assert_eq!(p["nodeId"], "node-test-1");
    assert_eq!(p["mediaProvider"], "RTP");
    assert!(
        p["sessionId"].as_str().unwrap().starts_with("/127.0.0.1:"),
        "{p}"
    );
    assert_eq!(
        (p["width"].as_u64(), p["height"].as_u64()),
        (Some(320), Some(240))
    );
    let pl = &find(&base, json!({"name": "cam", "published": "false"}))[0];
    assert_eq!(pl["mediaProvider"], "SRTP");
    assert_ne!(pl["sessionId"], p["sessionId"]);
    // Filters: WCS status names, published as a string, sessionId.
    assert_eq!(
        find(&base, json!({"status": "PUBLISHING", "published": "true"})).len(),
        1
    );
    assert!(find(&base, json!({"status": "UNPUBLISHED"})).is_empty());
    assert!(find(&base, json!({"status": "PLAYBACK_PROBLEM"})).is_empty());
    let by_session = find(&base, json!({"sessionId": p["sessionId"]}));
    assert_eq!(by_session.len(), 1);
    assert_eq!(by_session[0]["mediaSessionId"], pid.as_str());
}

#[test]
fn terminating_a_publisher_stops_its_players_at_the_udp_level() {
    let hook = HookServer::start(|_, _| (200, json!({})));
    let srv = start_with(config(
        &hook.url,
        r#"
[[apps]]
key = "defaultApp"
url = "HOOK"
methods = ["StreamStatusEvent", "stopStream", "unPublishStream"]
"#,
    ));
    let base = srv.base_url();
    let (pid, media, _) = publish(&base, "s1");
    let players: Vec<Player> = (0..3).map(|_| Player::join(&base, "s1", None)).collect();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    send(&sock, media, 96, 0, 3, 1);
    for p in &players {
        assert_eq!(p.recv(3, Duration::from_secs(1)).len(), 3, "media flows");
    }
    let t0 = Instant::now();
    let (st, v) = post(
        &base,
        "/rest-api/stream/terminate",
        json!({"mediaSessionId": pid}),
    );
    assert_eq!(st, 200, "{v}");
    // Every player leaves (find no longer lists them) within 1 s ...
    assert!(wait_until(Duration::from_secs(1), || find(
        &base,
        json!({"name": "s1"})
    )
    .is_empty()));
    let gone = t0.elapsed();
    // ... and nothing reaches them any more, even from a new publisher of the name.
    let (_, media2, _) = publish(&base, "s1");
    send(&sock, media2, 96, 10, 5, 2);
    for p in &players {
        assert!(
            p.recv(1, Duration::from_millis(300)).is_empty(),
            "player stopped"
        );
    }
    // Hooks: STOPPED "Stopped by publisher stop" and stopStream for each player,
    // UNPUBLISHED for the publisher.
    assert!(wait_until(T, || hook.calls_of("stopStream").len() == 3));
    for p in &players {
        assert!(hook
            .calls_of("StreamStatusEvent")
            .iter()
            .any(|c| c.body["mediaSessionId"] == p.id.as_str()
                && c.body["status"] == "STOPPED"
                && c.body["info"] == "Stopped by publisher stop"));
    }
    assert!(hook
        .calls_of("unPublishStream")
        .iter()
        .any(|c| c.body["mediaSessionId"] == pid.as_str()
            && c.body["status"] == "UNPUBLISHED"
            && c.body["info"] == "Stopped by rest /terminate"));
    eprintln!("publisher terminate -> players gone from find: {gone:?}");
}

#[test]
fn players_outlive_publisher_keeps_todays_behaviour() {
    let mut cfg = Config::for_tests(1);
    cfg.media.players_outlive_publisher = true;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (pid, _, _) = publish(&base, "s1");
    let p = Player::join(&base, "s1", None);
    let (st, _) = post(
        &base,
        "/rest-api/stream/terminate",
        json!({"mediaSessionId": pid}),
    );
    assert_eq!(st, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        status_of(&base, &p.id).is_some(),
        "player waits for a republish"
    );
    let (_, media, _) = publish(&base, "s1");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    send(&sock, media, 96, 0, 2, 3);
    assert!(!p.recv(1, Duration::from_secs(1)).is_empty(), "resumes");
}

#[test]
fn silent_publisher_fails_by_rtp_activity_and_can_publish_again() {
    let hook = HookServer::start(|_, _| (200, json!({})));
    let mut cfg = config(
        &hook.url,
        r#"
[[apps]]
key = "defaultApp"
url = "HOOK"
methods = ["StreamStatusEvent", "unPublishStream", "stopStream"]
[media]
rtp_activity_timeout_ms = 500
pending_timeout_ms = 1000
"#,
    );
    cfg.media.shards = 1;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let (pid, media, _) = publish(&base, "s1");
    let player = Player::join(&base, "s1", None);
    let (never, _, _) = publish(&base, "quiet");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // 300 ms of media keeps it alive past its 500 ms deadline from creation.
    let t0 = Instant::now();
    let mut silent_at = Instant::now();
    for i in 0..6u16 {
        send(&sock, media, 96, i * 10, 1, 4);
        silent_at = Instant::now();
        std::thread::sleep(Duration::from_millis(95));
    }
    assert_eq!(status_of(&base, &pid).as_deref(), Some("PUBLISHING"));
    assert!(wait_until(T, || status_of(&base, &pid).is_none()));
    let failed_after = silent_at.elapsed();
    assert!(
        failed_after >= Duration::from_millis(400),
        "not before the timeout: {failed_after:?}"
    );
    assert!(wait_until(T, || hook
        .calls_of("StreamStatusEvent")
        .iter()
        .any(|c| c.body["mediaSessionId"] == pid.as_str()
            && c.body["status"] == "FAILED"
            && c.body["info"] == "Failed by RTP activity")));
    // Its player stopped with it; a restarted sender publishes the name again at once.
    assert!(wait_until(T, || status_of(&base, &player.id).is_none()));
    let (pid2, media2, _) = publish(&base, "s1");
    send(&sock, media2, 96, 100, 2, 5);
    assert!(wait_until(T, || status_of(&base, &pid2).as_deref()
        == Some("PUBLISHING")));
    // A publisher that never sent fails after the pending timeout.
    assert!(wait_until(T, || status_of(&base, &never).is_none()));
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(hook
        .calls_of("StreamStatusEvent")
        .iter()
        .any(|c| c.body["mediaSessionId"] == never.as_str()
            && c.body["status"] == "FAILED"
            && c.body["info"] == "Failed by RTP activity"));
}

#[test]
fn hooks_reach_an_https_web_server_with_a_private_ca() {
    let hook = HttpsHookServer::start(|_, _| (200, json!({})));
    let dir = std::env::temp_dir().join(format!("mediaserver-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &hook.ca_pem).unwrap();
    let mut cfg = config(
        &hook.url,
        r#"
[[apps]]
key = "defaultApp"
url = "HOOK"
methods = ["publishStream", "StreamStatusEvent"]
[apps.rest_client_config.publishStream]
restOnError = "FAIL"
"#,
    );
    cfg.hooks.ca_file = Some(ca.clone());
    let srv = start_with(cfg);
    let base = srv.base_url();
    // restOnError FAIL: the publish succeeds only if the HTTPS call did.
    let (pid, media, _) = publish(&base, "tls");
    let calls = hook.calls_of("publishStream");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["name"], "tls");
    assert_eq!(calls[0].path, "/MyAPI/publishStream");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    send(&sock, media, 96, 0, 1, 6);
    assert!(wait_until(T, || hook
        .calls_of("StreamStatusEvent")
        .iter()
        .any(|c| c.body["mediaSessionId"] == pid.as_str())));
    drop(srv);
    // Without the CA the certificate is not trusted: the FAIL policy denies the publish.
    let mut cfg = config(
        &hook.url,
        r#"
[[apps]]
key = "defaultApp"
url = "HOOK"
methods = ["publishStream"]
[apps.rest_client_config.publishStream]
restOnError = "FAIL"
"#,
    );
    cfg.hooks.ca_file = None;
    let srv = start_with(cfg);
    let (st, v) = post(&srv.base_url(), "/rest-api/publish", json!({"name": "tls"}));
    assert_eq!(st, 502, "{v}");
    assert_eq!(hook.calls_of("publishStream").len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// The SSRCs `a=ssrc` announces, per m= section, in order.
fn announced_ssrcs(sdp: &str) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    for l in sdp.lines() {
        if l.starts_with("m=") {
            out.push(Vec::new());
        } else if let Some(rest) = l.strip_prefix("a=ssrc:") {
            let ssrc = rest.split_whitespace().next().unwrap().parse().unwrap();
            out.last_mut().unwrap().push(ssrc);
        }
    }
    out
}

#[test]
fn player_sdp_announces_the_ssrcs_actually_sent() {
    let srv = start(1);
    let base = srv.base_url();
    let (_, video, audio) = publish_sdp(&base, "cam");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for srtp in ["", "&srtp=AES_CM_128_HMAC_SHA1_80"] {
        // Two port pairs for the SDP file's two sections.
        let rx_v = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = rx_v.local_addr().unwrap().port();
        let Ok(rx_a) = UdpSocket::bind(("127.0.0.1", p + 2)) else {
            continue;
        };
        let text = ureq::get(&format!("{base}/rest-api/stream/cam.sdp?port={p}{srtp}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let ssrcs = announced_ssrcs(&text);
        assert_eq!(ssrcs.len(), 2, "{text}");
        assert!(ssrcs.iter().all(|s| s.len() == 1), "{text}");
        send(&sock, video, 96, 0, 2, 11);
        send(&sock, audio, 97, 0, 2, 12);
        // The header's SSRC is in the clear with SRTP too.
        let got_v = recv_ssrc(&rx_v);
        let got_a = recv_ssrc(&rx_a);
        assert_eq!(
            got_v,
            Some(ssrcs[0][0]),
            "video SSRC as announced ({srtp}): {text}"
        );
        assert_eq!(
            got_a,
            Some(ssrcs[1][0]),
            "audio SSRC as announced ({srtp}): {text}"
        );
    }
    // The play answer (SDP offer from the player) announces them too.
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=p\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=video 6002 RTP/AVP 102\r\na=rtpmap:102 H264/90000\r\na=recvonly\r\n";
    let (st, v) = post(
        &base,
        "/rest-api/play",
        json!({"name": "cam", "sdp": offer}),
    );
    assert_eq!(st, 200, "{v}");
    let answer = v["sdp"].as_str().unwrap();
    assert_eq!(announced_ssrcs(answer)[0].len(), 1, "{answer}");
}

fn recv_ssrc(sock: &UdpSocket) -> Option<u32> {
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).ok()?;
    (n >= 12).then(|| u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]))
}
