//! Real clients: ffmpeg publishes H264 + Opus over RTP and SRTP with the SDP it writes itself,
//! and ffmpeg players open the server's SDP file and decode. Needs `ffmpeg` on PATH
//! (`.ci/run` installs Debian's). Every ffmpeg runs under a deadline and is killed after it.

use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tests::clients::wait_or_kill;
use tests::*;

const KEY: &str = "6M28YdFsS2Q3F9rFXkXjgohFgLb93p/yB1R+I2VD";
const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
const H264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
];
const VP8: &[&str] = &[
    "-c:v",
    "libvpx",
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-b:v",
    "500k",
];

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ms-ffmpeg-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// ffmpeg arguments for a 320x240 25 fps H264 (GOP 1 s) + 48 kHz Opus source sent as two
/// RTP outputs to `vport` / `aport` (RTCP to the same ports), SRTP when `srtp`.
fn publisher_args(secs: f32, vport: u16, aport: u16, srtp: bool, video: &[&str]) -> Vec<String> {
    let t = secs.to_string();
    let mut a: Vec<String> = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-t",
        &t,
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        &t,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = |a: &mut Vec<String>, port: u16| {
        let scheme = if srtp {
            a.extend(["-srtp_out_suite", SUITE, "-srtp_out_params", KEY].map(String::from));
            "srtp"
        } else {
            "rtp"
        };
        a.extend(["-f".into(), "rtp".into()]);
        a.push(format!("{scheme}://127.0.0.1:{port}?rtcpport={port}"));
    };
    a.extend(["-map", "0:v", "-g", "25"].map(String::from));
    a.extend(video.iter().map(|s| s.to_string()));
    out(&mut a, vport);
    a.extend(["-map", "1:a", "-c:a", "libopus", "-b:a", "64k"].map(String::from));
    out(&mut a, aport);
    a
}

/// The offer ffmpeg itself writes (`-sdp_file`) for the publisher it will run.
fn ffmpeg_offer(dir: &Path, srtp: bool, video: &[&str]) -> String {
    let f = dir.join("offer.sdp");
    // Port 9 (discard): nothing listens, ffmpeg only needs somewhere to send for 0.2 s.
    let mut args = publisher_args(0.2, 9, 9, srtp, video);
    args.push("-sdp_file".into());
    args.push(f.to_str().unwrap().into());
    let st = run(Command::new("ffmpeg").args(&args), Duration::from_secs(20));
    assert!(st, "ffmpeg wrote the offer");
    std::fs::read_to_string(&f).expect("offer.sdp")
}

/// Runs to completion within `limit` (killed otherwise); returns success.
fn run(cmd: &mut Command, limit: Duration) -> bool {
    let mut c = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg on PATH (apt-get install ffmpeg)");
    wait_or_kill(&mut c, limit).is_some_and(|s| s.success())
}

/// Publishes `name` from a real ffmpeg; returns (mediaSessionId, the ffmpeg process).
fn ffmpeg_publish(
    base: &str,
    dir: &Path,
    name: &str,
    srtp: bool,
    secs: f32,
    video: &[&str],
) -> (String, Child) {
    let offer = ffmpeg_offer(dir, srtp, video);
    let (st, v) = post(
        base,
        "/rest-api/publish",
        json!({"name": name, "sdp": offer}),
    );
    assert_eq!(st, 200, "{v}");
    let answer = v["sdp"].as_str().expect("answer");
    let ports: Vec<u16> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        ports,
        v["serverPorts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap() as u16)
            .collect::<Vec<_>>()
    );
    if srtp {
        assert_eq!(
            answer
                .matches("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
                .count(),
            2
        );
        assert!(!answer.contains(KEY), "the server answers with its own key");
    }
    let child = Command::new("ffmpeg")
        .args(publisher_args(secs, ports[0], ports[1], srtp, video))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    (v["mediaSessionId"].as_str().unwrap().to_string(), child)
}

/// Four consecutive free UDP ports starting at an even one (video P, P+1; audio P+2, P+3).
fn free_ports() -> u16 {
    for _ in 0..200 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port() & !1;
        drop(s);
        if p > 1024 && p < 65530 && (0..4).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no free port quad");
}

/// An ffmpeg player of the server's SDP file.
struct FfPlayer {
    child: Child,
    id: String,
    sdp: String,
}

impl FfPlayer {
    /// GETs the SDP file for `name` (SRTP with `srtp`) and starts ffmpeg decoding `secs` of it.
    fn start(base: &str, dir: &Path, name: &str, srtp: bool, secs: u32) -> FfPlayer {
        let port = free_ports();
        let mut url = format!("{base}/rest-api/stream/{name}.sdp?port={port}");
        if srtp {
            url.push_str(&format!("&srtp={SUITE}"));
        }
        let resp = ureq::get(&url).call().expect("GET .sdp");
        assert_eq!(resp.content_type(), "application/sdp");
        let id = resp.header("x-media-session-id").unwrap().to_string();
        let sdp = resp.into_string().unwrap();
        let f = dir.join(format!("play-{port}.sdp"));
        std::fs::write(&f, &sdp).unwrap();
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args(["-protocol_whitelist", "file,udp,rtp,srtp,crypto"])
            .arg("-i")
            .arg(&f)
            .args(["-t", &secs.to_string(), "-map", "0:v", "-map", "0:a"])
            .args(["-f", "framecrc", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg");
        FfPlayer { child, id, sdp }
    }

    /// Waits for ffmpeg to finish; returns (video frames, audio frames) it decoded.
    fn frames(mut self, limit: Duration) -> (usize, usize) {
        let mut out = String::new();
        let mut stdout = self.child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let _ = stdout.read_to_string(&mut out);
            out
        });
        wait_or_kill(&mut self.child, limit);
        let out = reader.join().unwrap();
        // framecrc: one line per decoded frame, "<stream index>, dts, pts, ...".
        let count = |i: &str| out.lines().filter(|l| l.starts_with(i)).count();
        (count("0,"), count("1,"))
    }
}

fn stream(base: &str, id: &str) -> Value {
    find(base, json!({"mediaSessionId": id}))
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
}

fn publish_and_play(name: &str, video: &[&str], codec: &str) {
    let srv = start(2);
    let base = srv.base_url();
    let dir = tmpdir(name);
    let (pid, mut publisher) = ffmpeg_publish(&base, &dir, name, false, 8.0, video);
    assert!(wait_until(Duration::from_secs(5), || stream(&base, &pid)
        ["status"]
        == "PUBLISHING"));
    let s = stream(&base, &pid);
    assert_eq!(s["hasVideo"], true);
    assert_eq!(s["hasAudio"], true);
    assert_eq!(s["videoCodec"], codec);
    assert_eq!(s["audioCodec"], "opus");
    let player = FfPlayer::start(&base, &dir, name, false, 3);
    assert!(player.sdp.contains("m=video ") && player.sdp.contains("m=audio "));
    let pl_id = player.id.clone();
    let (video, audio) = player.frames(Duration::from_secs(15));
    println!("{codec}: plain RTP player decoded {video} video / {audio} audio frames");
    assert!(video >= 40, "video frames decoded: {video}");
    assert!(audio >= 50, "audio frames decoded: {audio}");
    let pl = stream(&base, &pl_id);
    assert_eq!(pl["status"], "PLAYING");
    assert_eq!(pl["videoCodec"], codec);
    assert_eq!(pl["audioCodec"], "opus");
    assert!(pl["packetsOut"].as_u64().unwrap() > 100, "{pl}");
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ffmpeg_publishes_h264_opus_over_rtp_and_an_ffmpeg_player_decodes_it() {
    publish_and_play("ff1", H264, "H264");
}

#[test]
fn ffmpeg_publishes_vp8_opus_over_rtp_and_an_ffmpeg_player_decodes_it() {
    publish_and_play("ff5", VP8, "VP8");
}

#[test]
fn ffmpeg_publishes_srtp_and_srtp_and_plain_players_decode_it() {
    let srv = start(2);
    let base = srv.base_url();
    let dir = tmpdir("srtp");
    let (pid, mut publisher) = ffmpeg_publish(&base, &dir, "ff2", true, 8.0, H264);
    assert!(wait_until(Duration::from_secs(5), || stream(&base, &pid)
        ["status"]
        == "PUBLISHING"));
    assert_eq!(stream(&base, &pid)["srtp"], true);
    // A packet that fails SRTP authentication is dropped and counted, and does not latch
    // the source of a publisher that has not sent yet.
    let (st, v) = post(
        &base,
        "/rest-api/publish",
        json!({"name": "forged", "sdp": ffmpeg_offer(&dir, true, H264)}),
    );
    assert_eq!(st, 200, "{v}");
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forged = rtp_packet(96, 1, 0, 0x1234, &[0u8; 100]);
    forged.extend_from_slice(&[0u8; 10]);
    let port = v["serverPorts"][0].as_u64().unwrap() as u16;
    forger.send_to(&forged, ("127.0.0.1", port)).unwrap();
    let srtp_drops = || -> u64 {
        srv.core
            .live()
            .shard_counters
            .iter()
            .map(|c| c.dropped_srtp)
            .sum()
    };
    assert!(wait_until(Duration::from_secs(3), || srtp_drops() == 1));
    let forged_id = v["mediaSessionId"].as_str().unwrap();
    assert_eq!(stream(&base, forged_id)["status"], "PENDING");
    assert_eq!(stream(&base, forged_id)["remoteAddress"], Value::Null);

    let secure = FfPlayer::start(&base, &dir, "ff2", true, 3);
    assert_eq!(secure.sdp.matches("RTP/SAVP").count(), 2, "{}", secure.sdp);
    let plain = FfPlayer::start(&base, &dir, "ff2", false, 3);
    let (sv, sa) = secure.frames(Duration::from_secs(15));
    let (pv, pa) = plain.frames(Duration::from_secs(15));
    println!("SRTP player: {sv} video / {sa} audio; plain player: {pv} / {pa}");
    assert!(
        sv >= 40 && sa >= 50,
        "SRTP player decoded {sv} video / {sa} audio frames"
    );
    assert!(
        pv >= 40 && pa >= 50,
        "plain player decoded {pv} video / {pa} audio frames"
    );
    assert_eq!(
        srtp_drops(),
        1,
        "the real publisher's packets all authenticate"
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_ffmpeg_players_join_late_and_decode() {
    let srv = start(2);
    let base = srv.base_url();
    let dir = tmpdir("late");
    let (pid, mut publisher) = ffmpeg_publish(&base, &dir, "ff3", false, 10.0, H264);
    assert!(wait_until(Duration::from_secs(5), || stream(&base, &pid)
        ["status"]
        == "PUBLISHING"));
    // Join well after the start: the SDP files carry the SPS/PPS the shard cached from the
    // stream (ffmpeg's offer had none).
    std::thread::sleep(Duration::from_millis(2500));
    let a = FfPlayer::start(&base, &dir, "ff3", false, 3);
    std::thread::sleep(Duration::from_millis(700));
    let b = FfPlayer::start(&base, &dir, "ff3", true, 3);
    for p in [&a, &b] {
        assert!(p.sdp.contains("sprop-parameter-sets="), "{}", p.sdp);
    }
    let (av, aa) = a.frames(Duration::from_secs(15));
    let (bv, ba) = b.frames(Duration::from_secs(15));
    println!("late players decoded {av}/{aa} and {bv}/{ba} frames");
    assert!(
        av >= 40 && aa >= 50,
        "first late player: {av} video / {aa} audio"
    );
    assert!(
        bv >= 40 && ba >= 50,
        "second late player: {bv} video / {ba} audio"
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_player_offer_gets_its_own_payload_types_and_ports() {
    let srv = start(2);
    let base = srv.base_url();
    let dir = tmpdir("offer");
    let (pid, mut publisher) = ffmpeg_publish(&base, &dir, "ff4", false, 6.0, H264);
    assert!(wait_until(Duration::from_secs(5), || stream(&base, &pid)
        ["status"]
        == "PUBLISHING"));
    let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
    let video = UdpSocket::bind("127.0.0.1:0").unwrap();
    let offer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=player\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=recvonly\r\n\
         m=video {} RTP/AVP 102\r\na=rtpmap:102 H264/90000\r\na=recvonly\r\n",
        audio.local_addr().unwrap().port(),
        video.local_addr().unwrap().port()
    );
    let (st, v) = post(
        &base,
        "/rest-api/play",
        json!({"name": "ff4", "sdp": offer}),
    );
    assert_eq!(st, 200, "{v}");
    let answer = v["sdp"].as_str().unwrap();
    assert!(
        answer.contains(" RTP/AVP 111\r\n") && answer.contains(" RTP/AVP 102\r\n"),
        "{answer}"
    );
    let a = recv_rtp(&audio, 20, Duration::from_secs(3));
    let vv = recv_rtp(&video, 20, Duration::from_secs(3));
    assert_eq!(a.len(), 20);
    assert_eq!(vv.len(), 20);
    assert!(a.iter().all(|p| p.pt == 111), "audio mapped to 111");
    assert!(vv.iter().all(|p| p.pt == 102), "video mapped to 102");
    assert_ne!(a[0].ssrc, vv[0].ssrc);
    // Errors name what is wrong.
    let (st, v) = post(
        &base,
        "/rest-api/play",
        json!({"name": "nope", "sdp": offer}),
    );
    assert_eq!(st, 404, "{v}");
    let (st, v) = post(
        &base,
        "/rest-api/play",
        json!({"name": "ff4", "sdp": offer.replace("H264", "AV1").replace("opus", "PCMA")}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("matches"), "{v}");
    let (st, v) = post(
        &base,
        "/rest-api/publish",
        json!({"name": "x", "sdp": "v=0\r\nbad"}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().starts_with("field `sdp`: SDP"),
        "{v}"
    );
    let r = ureq::get(&format!("{base}/rest-api/stream/ff4.sdp")).call();
    assert!(
        matches!(r, Err(ureq::Error::Status(400, _))),
        "port is required"
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
