//! Real media clients for tests that span several servers (the cluster): an ffmpeg H264+Opus
//! publisher using the SDP ffmpeg writes itself, an ffmpeg player of a server's SDP file
//! that counts decoded frames, and a str0m WHEP player. Every process runs under a deadline.
//! (`ffmpeg.rs` and `webrtc.rs` keep their own richer variants.)

use std::io::Read;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ms-clients-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 320x240 25 fps H264 (GOP 0.4 s, so late players start soon) + 48 kHz Opus to
/// `host:vport` / `host:aport`.
fn publisher_args(secs: f32, host: IpAddr, vport: u16, aport: u16) -> Vec<String> {
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
        "-map",
        "0:v",
        "-g",
        "10",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-f",
        "rtp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(format!("rtp://{host}:{vport}?rtcpport={vport}"));
    a.extend(["-map", "1:a", "-c:a", "libopus", "-b:a", "64k", "-f", "rtp"].map(String::from));
    a.push(format!("rtp://{host}:{aport}?rtcpport={aport}"));
    a
}

pub fn wait_or_kill(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// A running ffmpeg publisher; killed on drop.
pub struct FfPublisher {
    pub id: String,
    child: Child,
}

impl Drop for FfPublisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `name` on `base` (media at `host`) from ffmpeg for `secs`.
pub fn ffmpeg_publish(base: &str, host: IpAddr, dir: &Path, name: &str, secs: f32) -> FfPublisher {
    let f = dir.join(format!("offer-{name}.sdp"));
    let mut args = publisher_args(0.2, IpAddr::from([127, 0, 0, 1]), 9, 9);
    args.push("-sdp_file".into());
    args.push(f.to_str().unwrap().into());
    let mut c = Command::new("ffmpeg")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg on PATH");
    assert!(wait_or_kill(&mut c, Duration::from_secs(20)).is_some_and(|s| s.success()));
    let offer = std::fs::read_to_string(&f).expect("offer.sdp");
    let (st, v) = crate::post(
        base,
        "/rest-api/publish",
        json!({"name": name, "sdp": offer}),
    );
    assert_eq!(st, 200, "{v}");
    let ports: Vec<u16> = v["serverPorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u16)
        .collect();
    let child = Command::new("ffmpeg")
        .args(publisher_args(secs, host, ports[0], ports[1]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    FfPublisher {
        id: v["mediaSessionId"].as_str().unwrap().to_string(),
        child,
    }
}

/// Four consecutive free UDP ports starting at an even one (video P, P+1; audio P+2, P+3).
pub fn free_port_quad() -> u16 {
    for _ in 0..200 {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let p = s.local_addr().unwrap().port() & !1;
        drop(s);
        if p > 1024 && p < 65530 && (0..4).all(|i| UdpSocket::bind(("0.0.0.0", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no free port quad");
}

/// An ffmpeg player of a server's SDP file (`GET /rest-api/stream/<name>.sdp`).
pub struct FfPlayer {
    pub id: String,
    child: Child,
}

impl FfPlayer {
    /// Starts ffmpeg decoding `secs` of `name` from `base`; Err((status, body)) when the
    /// server refuses the play.
    pub fn start(base: &str, dir: &Path, name: &str, secs: u32) -> Result<FfPlayer, (u16, String)> {
        let port = free_port_quad();
        let url = format!("{base}/rest-api/stream/{name}.sdp?port={port}&host=127.0.0.1");
        let resp = match ureq::get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => return Err((code, r.into_string().unwrap())),
            Err(e) => panic!("GET {url}: {e}"),
        };
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
        Ok(FfPlayer { id, child })
    }

    /// Waits for ffmpeg to finish; (video frames, audio frames) decoded.
    pub fn frames(mut self, limit: Duration) -> (usize, usize) {
        let mut stdout = self.child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        wait_or_kill(&mut self.child, limit);
        let out = reader.join().unwrap();
        let count = |i: &str| out.lines().filter(|l| l.starts_with(i)).count();
        (count("0,"), count("1,"))
    }
}

/// A str0m WHEP player (receive-only video + audio) on its own socket, driven by the caller.
pub struct WhepPlayer {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    pub id: String,
    pub connected: bool,
    /// RTP packets received per kind.
    pub video: usize,
    pub audio: usize,
}

impl WhepPlayer {
    pub fn connect(base: &str, name: &str) -> Result<WhepPlayer, (u16, String)> {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending): (_, SdpPendingOffer) = api.apply().unwrap();
        let url = format!("{base}/whep/{name}");
        let resp = match ureq::post(&url)
            .set("Content-Type", "application/sdp")
            .send_string(&offer.to_sdp_string())
        {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => return Err((code, r.into_string().unwrap())),
            Err(e) => panic!("POST {url}: {e}"),
        };
        let id = resp.header("x-media-session-id").unwrap_or("").to_string();
        let answer = resp.into_string().unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        Ok(WhepPlayer {
            rtc,
            sock,
            addr,
            id,
            connected: false,
            video: 0,
            audio: 0,
        })
    }

    /// Drives the peer for `max` or until `done`.
    pub fn run_until(&mut self, max: Duration, mut done: impl FnMut(&WhepPlayer) -> bool) -> bool {
        let end = Instant::now() + max;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < end {
            if done(self) {
                return true;
            }
            let timeout = loop {
                match self.rtc.poll_output().unwrap() {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let _ = self.sock.send_to(&t.contents, t.destination);
                    }
                    Output::Event(Event::Connected) => self.connected = true,
                    Output::Event(Event::RtpPacket(p)) => {
                        // Opus is the only audio codec the server offers browsers.
                        if p.header.payload_type == self.opus_pt() {
                            self.audio += 1;
                        } else {
                            self.video += 1;
                        }
                    }
                    Output::Event(_) => {}
                }
            };
            let wait = timeout
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(20));
            self.sock.set_read_timeout(Some(wait)).unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Ok(r) = Receive::new(Protocol::Udp, from, self.addr, &buf[..n]) {
                        let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
                    }
                }
                Err(_) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
        done(self)
    }

    fn opus_pt(&self) -> str0m::media::Pt {
        self.rtc
            .codec_config()
            .iter()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .map(|p| p.pt())
            .unwrap_or(111.into())
    }
}

/// A WHEP (receive-only audio+video) offer as a browser would send it, for signalling-only
/// checks.
pub fn whep_offer_sdp() -> String {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// A network namespace joined to this one by a veth pair: a client inside it reaches the
/// host at `host_ip` from `ns_ip`, an address that is not loopback. Removed on drop.
pub struct NetNs {
    pub name: String,
    pub host_ip: IpAddr,
    pub ns_ip: IpAddr,
    veth: String,
}

impl NetNs {
    /// Needs root and iproute2 (`ip`).
    pub fn create(tag: &str) -> NetNs {
        // Namespaces of one test process (tests run in parallel) get their own subnets.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = std::process::id() % 10000;
        let name = format!("ms-{tag}-{id}");
        let veth = format!("v{tag}{id}h");
        let peer = format!("v{tag}{id}n");
        let net = (std::process::id() * 8 + n) % 250 + 1;
        let host_ip: IpAddr = format!("10.231.{net}.1").parse().unwrap();
        let ns_ip: IpAddr = format!("10.231.{net}.2").parse().unwrap();
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("iproute2 `ip`");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &veth]).output();
        ip(&["netns", "add", &name]);
        let me = NetNs {
            name: name.clone(),
            host_ip,
            ns_ip,
            veth: veth.clone(),
        };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        let exec = |args: &[&str]| {
            let mut a = vec!["netns", "exec", &name, "ip"];
            a.extend_from_slice(args);
            ip(&a);
        };
        exec(&["addr", "add", &format!("{ns_ip}/30"), "dev", &peer]);
        exec(&["link", "set", &peer, "up"]);
        exec(&["link", "set", "lo", "up"]);
        me
    }

    /// Runs `curl` inside the namespace; returns (HTTP status, body).
    pub fn curl(&self, method: &str, url: &str, content_type: &str, body: &str) -> (u16, String) {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "curl", "-s", "-m", "10", "-X", method,
            ])
            .args(["-H", &format!("Content-Type: {content_type}")])
            .args(["--data-binary", body, "-w", "\n%{http_code}", url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
