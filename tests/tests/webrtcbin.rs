//! GStreamer 1.22 `webrtcbin` (not str0m, not Chromium) as the WHIP publisher and the WHEP
//! player, with its defaults: an RSA DTLS certificate and libnice's keepalives (binding
//! indications, no consent requests). Both used to fail here: the handshake on the RSA client
//! certificate, and the session 15 s in on "consent lost". `tests/webrtcbin/peer.py` drives
//! webrtcbin from python3-gi, in a network namespace because libnice does not gather
//! loopback candidates while the host has another interface.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use tests::clients::NetNs;
use tests::{find, start_with, wait_until};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/webrtcbin/peer.py");

/// Runs peer.py inside `ns` for `secs`; returns its JSON report (frames per 5 s and so on).
fn peer(ns: &NetNs, mode: &'static str, url: String, secs: u32) -> thread::JoinHandle<Value> {
    let name = ns.name.clone();
    thread::spawn(move || {
        let out = Command::new("ip")
            .args(["netns", "exec", &name, "/usr/bin/python3", PEER, mode, &url])
            .arg(secs.to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run peer.py");
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or("");
        let v: Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("peer.py {mode}: no report ({e}): {text}"));
        assert!(out.status.success(), "peer.py {mode} failed: {v}");
        v
    })
}

fn statuses(base: &str, published: bool) -> Vec<String> {
    find(base, json!({"name": "gst", "published": published}))
        .iter()
        .map(|s| s["status"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn gstreamer_webrtcbin_publishes_over_whip_and_plays_over_whep_for_40_s() {
    let ns = NetNs::create("gst");
    let mut cfg = control::Config::for_tests(2);
    cfg.http.listen = "0.0.0.0:0".parse().unwrap();
    cfg.media.bind = "0.0.0.0".parse().unwrap();
    // The ICE candidate the namespace can reach.
    cfg.media.public_ip = ns.host_ip;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let far = format!("http://{}:{}", ns.host_ip, srv.http_addr.port());

    let publisher = peer(&ns, "publish", format!("{far}/whip/gst"), 52);
    assert!(
        wait_until(Duration::from_secs(10), || statuses(&base, true)
            == ["PUBLISHING"]),
        "the webrtcbin publisher connects (RSA client certificate): {:?}",
        find(&base, json!({}))
    );
    let player = peer(&ns, "play", format!("{far}/whep/gst"), 44);

    // 40 s in, far past the 15 s after which an ICE-lite agent that counts only binding
    // requests drops both sessions, each is still live on the server.
    thread::sleep(Duration::from_secs(41));
    assert_eq!(statuses(&base, true), ["PUBLISHING"], "publisher at 40 s");
    assert_eq!(statuses(&base, false), ["PLAYING"], "player at 40 s");

    let played = player.join().expect("player thread");
    let published = publisher.join().expect("publisher thread");
    eprintln!("publisher {published}\nplayer {played}");
    assert_eq!(played["failed"], Value::Null, "{played}");
    assert_eq!(played["pc"], "connected", "{played}");
    // Frames decoded in every 5 s window of the 40 s after the first one (30 fps sent; the
    // bound leaves room for a loaded CI machine, not for a stall).
    let per_5s: Vec<u64> = played["per_5s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(per_5s.len() >= 8, "player ran ≥ 40 s: {played}");
    for (i, n) in per_5s.iter().take(8).enumerate() {
        assert!(
            *n >= 75,
            "decoded frames in {}–{} s: {n} ({played})",
            i * 5,
            i * 5 + 5
        );
    }
    assert_eq!(published["failed"], Value::Null, "{published}");
    assert!(
        published["frames"].as_u64().unwrap() >= 1_200,
        "{published}"
    );
}
