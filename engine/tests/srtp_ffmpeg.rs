//! Interop with a real ffmpeg (needs `ffmpeg` on PATH; Debian's 5.1 is used, `.ci/run`
//! installs it): `cargo test -p engine --test srtp_ffmpeg -- --nocapture`.
//!
//! ffmpeg publishes H264 over SRTP with key A to a relay socket here; the relay
//! unprotects with `SrtpContext` (key A), re-protects with `SrtpContext` (key B) and
//! forwards to an ffmpeg player that reads key B from an SDP file's `a=crypto` line. The
//! player must decode frames: webrtc-srtp's output is what ffmpeg accepts, both ways.

use std::io::Read;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};

fn free_port_pair() -> u16 {
    // An even port whose successor is free too (ffmpeg's player binds port and port+1).
    for _ in 0..100 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port() & !1;
        drop(s);
        if p > 1024
            && UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair");
}

#[test]
fn srtp_relay_between_ffmpeg_publisher_and_player() {
    // ffmpeg has no AEAD_AES_128_GCM; we do not offer AES_CM_128_HMAC_SHA1_32 (see srtp.rs).
    relay(SrtpProfile::AesCm128HmacSha1_80);
}

fn relay(profile: SrtpProfile) {
    let key_in = SrtpKeys::generate(profile).unwrap();
    let key_out = SrtpKeys::generate(profile).unwrap();

    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let player_port = free_port_pair();

    let dir = std::env::temp_dir().join(format!("srtp_ffmpeg_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sdp_path = dir.join("play.sdp");
    std::fs::write(
        &sdp_path,
        format!(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=relay\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video {player_port} RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\n\
             a=fmtp:96 packetization-mode=1\r\na=crypto:{}\r\n",
            key_out.to_sdes(1)
        ),
    )
    .unwrap();

    let mut player = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-loglevel", "error"])
        .args(["-protocol_whitelist", "file,udp,rtp", "-i"])
        .arg(&sdp_path)
        .args(["-t", "3", "-progress", "pipe:1", "-f", "null", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg on PATH");
    std::thread::sleep(Duration::from_millis(1000));

    let mut publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "5",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g",
            "25",
            "-f",
            "rtp",
            "-srtp_out_suite",
            profile.sdes_name(),
        ])
        .args(["-srtp_out_params", &key_in.to_ffmpeg_params()])
        // rtcpport: send SRTCP to the RTP port too (default: port+1), so the relay sees it.
        .arg(format!(
            "srtp://127.0.0.1:{relay_port}?rtcpport={relay_port}"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut rx = SrtpContext::new(&key_in).unwrap();
    let mut tx = SrtpContext::new(&key_out).unwrap();
    let (mut relayed, mut rtcp, mut failed) = (0u32, 0u32, 0u32);
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        let Ok((n, _)) = relay.recv_from(&mut buf) else {
            continue;
        };
        let pkt = &buf[..n];
        if n >= 2 && (200..=206).contains(&pkt[1]) {
            rtcp += rx.unprotect_rtcp(pkt).is_ok() as u32;
            continue;
        }
        match rx.unprotect_rtp(pkt).and_then(|p| tx.protect_rtp(&p)) {
            Ok(out) => {
                relay.send_to(&out, ("127.0.0.1", player_port)).unwrap();
                relayed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    let _ = publisher.wait();
    let mut progress = String::new();
    player
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut progress)
        .unwrap();
    let _ = player.wait();
    let _ = std::fs::remove_dir_all(&dir);
    // `-progress` prints a block every 0.5 s; the last `frame=` is the total.
    let frames: u32 = progress
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("frame="))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0);
    println!("{profile}: relayed {relayed} RTP packets ({failed} failed), {rtcp} SRTCP ok; player decoded {frames} frames");
    assert_eq!(failed, 0);
    assert!(rtcp >= 1, "ffmpeg's SRTCP sender reports must authenticate");
    assert!(relayed > 100, "{relayed}");
    assert!(frames >= 50, "player decoded only {frames} frames in 3 s");
}
