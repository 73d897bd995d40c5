//! WHIP/WHEP over real sockets, with str0m peers standing in for browsers (the headless
//! Chromium test is `browser.rs`): a WHIP publisher's media reaches WHEP players and plain RTP
//! players; an ffmpeg-style RTP publisher reaches a WHEP player; a WHEP player's PLI reaches
//! the publisher; REST terminate closes a player at the media level; DELETE ends a session;
//! a WHEP player's losses are resent from the stream's history within its NACK budget.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::json;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tests::*;

const T: Duration = Duration::from_secs(10);

/// A str0m peer on its own UDP socket, driven by the test thread.
struct Peer {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    events: Vec<Event>,
    mids: Vec<Mid>,
    location: String,
    /// Simulated loss: every `lose_every`-th SRTP datagram of the first media SSRC seen (read
    /// from the header, which is in the clear) never reaches str0m; RTX (its own SSRC) does.
    lose_ssrc: Option<u32>,
    lose_every: usize,
    seen: usize,
    lost: usize,
}

impl Peer {
    /// Offers video+audio in `dir`, POSTs it to `url` (WHIP/WHEP) and applies the answer.
    fn connect(url: &str, dir: Direction) -> Result<Peer, (u16, String)> {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let now = Instant::now();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mids = vec![
            api.add_media(MediaKind::Video, dir, None, None, None),
            api.add_media(MediaKind::Audio, dir, None, None, None),
        ];
        let (offer, pending): (_, SdpPendingOffer) = api.apply().unwrap();
        let resp = ureq::post(url)
            .set("Content-Type", "application/sdp")
            .send_string(&offer.to_sdp_string());
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => return Err((code, r.into_string().unwrap())),
            Err(e) => panic!("POST {url}: {e}"),
        };
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.content_type(), "application/sdp");
        let location = resp.header("location").expect("Location").to_string();
        let answer = resp.into_string().unwrap();
        assert!(answer.contains("a=ice-lite"), "{answer}");
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        sock.set_nonblocking(false).unwrap();
        Ok(Peer {
            rtc,
            sock,
            addr,
            events: Vec::new(),
            mids,
            location,
            lose_ssrc: None,
            lose_every: 0,
            seen: 0,
            lost: 0,
        })
    }

    /// Drives the peer (timers, datagrams both ways) until `done` or `max`.
    fn run_until(&mut self, max: Duration, mut done: impl FnMut(&mut Peer) -> bool) -> bool {
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
                    Output::Event(e) => self.events.push(e),
                }
            };
            let wait = timeout
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(20));
            self.sock.set_read_timeout(Some(wait)).unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    // RTP, not RTCP (RFC 5761: RTCP packet types 200-206 share the byte).
                    let rtp = n >= 12 && buf[0] >> 6 == 2 && !(200..=206).contains(&buf[1]);
                    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    if rtp && self.lose_every > 0 && *self.lose_ssrc.get_or_insert(ssrc) == ssrc {
                        self.seen += 1;
                        if self.seen.is_multiple_of(self.lose_every) {
                            self.lost += 1;
                            continue;
                        }
                    }
                    let r = Receive::new(Protocol::Udp, from, self.addr, &buf[..n]).unwrap();
                    self.rtc
                        .handle_input(Input::Receive(Instant::now(), r))
                        .unwrap();
                }
                Err(_) => self
                    .rtc
                    .handle_input(Input::Timeout(Instant::now()))
                    .unwrap(),
            }
        }
        done(self)
    }

    fn connected(&mut self) -> bool {
        self.run_until(T, |p| {
            p.events.iter().any(|e| matches!(e, Event::Connected))
        })
    }

    /// The negotiated PT of `codec` on media `i`.
    fn pt(&self, i: usize, codec: Codec) -> Pt {
        let media = self.rtc.media(self.mids[i]).unwrap();
        let cfg = self.rtc.codec_config();
        *media
            .remote_pts()
            .iter()
            .find(|pt| {
                cfg.iter()
                    .any(|p| p.pt() == **pt && p.spec().codec == codec)
            })
            .unwrap_or_else(|| panic!("{codec} not negotiated"))
    }

    fn write(&mut self, i: usize, pt: Pt, seq: u64, ts: u32, payload: Vec<u8>) {
        let now = Instant::now();
        let mut api = self.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(self.mids[i], None)
            .expect("send stream");
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload)
                .marker(true)
                .nackable(true),
        );
    }

    /// Payloads of the RTP packets of `kind` received so far (audio is Opus, the rest video).
    fn received(&self, kind: MediaKind) -> Vec<Vec<u8>> {
        let opus = self.pt(1, Codec::Opus);
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::RtpPacket(p) => ((p.header.payload_type == opus)
                    == (kind == MediaKind::Audio))
                    .then(|| p.payload.to_vec()),
                _ => None,
            })
            .collect()
    }
}

/// An RTP publisher of `name` that signalled H264 + Opus with SDP (as ffmpeg does); returns
/// the server's video port.
fn publish_h264_opus(base: &str, name: &str) -> u16 {
    let offer = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
        m=audio 9 RTP/AVP 97\r\na=rtpmap:97 opus/48000/2\r\n";
    let (st, v) = post(
        base,
        "/rest-api/publish",
        json!({"name": name, "sdp": offer}),
    );
    assert_eq!(st, 200, "{v}");
    v["serverPorts"][0].as_u64().unwrap() as u16
}

fn video_payload(i: u32) -> Vec<u8> {
    // An H.264 non-IDR slice NAL unit with the index in it.
    let mut v = vec![0x41, 0x9a];
    v.extend_from_slice(&i.to_be_bytes());
    v.extend(std::iter::repeat_n(i as u8, 300));
    v
}

#[test]
fn whip_publisher_reaches_whep_and_rtp_players_and_terminate_closes_them() {
    let srv = start(2);
    let base = srv.base_url();
    let mut publisher =
        Peer::connect(&format!("{base}/whip/w1"), Direction::SendOnly).expect("WHIP accepted");
    assert!(
        publisher.location.starts_with("/whip/w1/"),
        "{}",
        publisher.location
    );
    assert!(publisher.connected(), "WHIP publisher connects");
    let vpt = publisher.pt(0, Codec::H264);

    // Two WHEP players and one plain RTP player.
    let mut players: Vec<Peer> = (0..2)
        .map(|_| Peer::connect(&format!("{base}/whep/w1"), Direction::RecvOnly).expect("WHEP"))
        .collect();
    for p in &mut players {
        assert!(p.connected(), "WHEP player connects");
    }
    let rtp_player = Player::join(&base, "w1", None);
    let s = find(&base, json!({"name": "w1", "published": true}));
    assert_eq!(s[0]["webrtc"], true);
    assert_eq!(s[0]["videoCodec"], "H264");

    // The players asked for a keyframe when they joined: the publisher got a PLI.
    assert!(publisher.run_until(T, |p| p.events.iter().any(|e| matches!(
        e,
        Event::KeyframeRequest(k) if k.kind == KeyframeRequestKind::Pli
    ))));

    for i in 0..50u32 {
        publisher.write(0, vpt, 1000 + i as u64, i * 3000, video_payload(i));
        publisher.run_until(Duration::from_millis(2), |_| false);
    }
    publisher.run_until(Duration::from_millis(200), |_| false);
    for (k, p) in players.iter_mut().enumerate() {
        assert!(
            p.run_until(T, |p| p.received(MediaKind::Video).len() >= 50),
            "WHEP player {k} got {} packets",
            p.received(MediaKind::Video).len()
        );
        let got = p.received(MediaKind::Video);
        for (i, pl) in got.iter().take(50).enumerate() {
            assert_eq!(pl, &video_payload(i as u32), "player {k} packet {i}");
        }
    }
    let rtp = rtp_player.recv(50, T);
    assert_eq!(rtp.len(), 50, "plain RTP player");
    assert_eq!(rtp[7].payload, video_payload(7));
    assert_eq!(rtp[0].pt, *vpt);

    // REST terminate of the WHEP players closes them at the media level.
    let (st, v) = post(
        &base,
        "/rest-api/stream/terminate",
        json!({"name": "w1", "published": false}),
    );
    assert_eq!(st, 200, "{v}");
    for (k, p) in players.iter_mut().enumerate() {
        assert!(
            p.run_until(T, |p| p.events.iter().any(|e| matches!(
                e,
                Event::IceConnectionStateChange(IceConnectionState::Disconnected)
            ) || !p.rtc.is_alive())),
            "WHEP player {k} sees the end"
        );
    }
    // DELETE on the publisher's resource ends it; a second DELETE is 404.
    let url = format!("{base}{}", publisher.location);
    assert_eq!(ureq::delete(&url).call().unwrap().status(), 200);
    assert!(matches!(
        ureq::delete(&url).call(),
        Err(ureq::Error::Status(404, _))
    ));
    assert!(wait_until(T, || find(&base, json!({})).is_empty()));
    assert!(wait_until(T, || srv
        .core
        .live()
        .per_shard
        .iter()
        .all(|&n| n == 0)));
}

#[test]
fn whep_player_of_an_rtp_publisher_and_errors() {
    let srv = start(2);
    let base = srv.base_url();
    // No publisher yet.
    let e = Peer::connect(&format!("{base}/whep/r1"), Direction::RecvOnly)
        .err()
        .unwrap();
    assert_eq!(e.0, 404, "{}", e.1);
    // A publisher without SDP has no codecs a browser could take.
    publish(&base, "plain");
    let e = Peer::connect(&format!("{base}/whep/plain"), Direction::RecvOnly)
        .err()
        .unwrap();
    assert_eq!(e.0, 409, "{}", e.1);
    // Garbage offers are 400 with a reason; wrong content type 415.
    let r = ureq::post(&format!("{base}/whip/x"))
        .set("Content-Type", "application/sdp")
        .send_string("v=0\r\nnot sdp");
    match r {
        Err(ureq::Error::Status(400, r)) => {
            let v: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
            assert!(v["error"].as_str().unwrap().contains("WebRTC offer"), "{v}");
        }
        other => panic!("{other:?}"),
    }
    let r = ureq::post(&format!("{base}/whip/x"))
        .set("Content-Type", "application/json")
        .send_string("{}");
    assert!(matches!(r, Err(ureq::Error::Status(415, _))));

    // An RTP publisher with SDP (H264 + Opus, as ffmpeg sends) plays to a WHEP player.
    let vport = publish_h264_opus(&base, "r1");
    let mut player =
        Peer::connect(&format!("{base}/whep/r1"), Direction::RecvOnly).expect("WHEP accepted");
    assert!(player.connected());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..30u32 {
        let p = rtp_packet(96, 500 + i as u16, i * 3000, 0xF00D, &video_payload(i));
        sock.send_to(&p, ("127.0.0.1", vport)).unwrap();
        player.run_until(Duration::from_millis(3), |_| false);
    }
    assert!(player.run_until(T, |p| p.received(MediaKind::Video).len() >= 30));
    assert_eq!(player.received(MediaKind::Video)[5], video_payload(5));
    // The WHEP player's keyframe request reaches the RTP publisher as a PLI.
    std::thread::sleep(Duration::from_millis(600));
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 1500];
    while sock.recv(&mut buf).is_ok() {}
    let mid = player.mids[0];
    player
        .rtc
        .direct_api()
        .stream_rx_by_mid(mid, None)
        .expect("receive stream")
        .request_keyframe(KeyframeRequestKind::Pli);
    player.run_until(Duration::from_millis(300), |_| false);
    sock.set_read_timeout(Some(T)).unwrap();
    let n = sock.recv(&mut buf).expect("PLI at the RTP publisher");
    assert_eq!(buf[1], 206, "PSFB");
    assert_eq!(buf[8..12], 0xF00Du32.to_be_bytes());
    let _ = n;
    // DELETE ends the player; it is gone from the registry.
    let url = format!("{base}{}", player.location);
    assert_eq!(ureq::delete(&url).call().unwrap().status(), 200);
    assert!(wait_until(T, || find(
        &base,
        json!({"name": "r1", "published": false})
    )
    .is_empty()));
}

/// The engine protects a WHEP player's media itself (the default), so str0m has no copy of
/// it: the player's NACKs must be answered as RTX from the stream's shared history. Every
/// 10th of 65 video packets is lost on the way in; all 65 arrive in the end. With the player's NACK
/// budget at 0 (`media.nack_rate_per_player`, the same rule as for RTP players' NACKs)
/// nothing is resent and the NACKs are counted as dropped.
#[test]
fn whep_player_losses_are_resent_from_the_streams_history_within_its_nack_budget() {
    for rate in [50u32, 0] {
        let mut cfg = control::Config::for_tests(1);
        cfg.media.nack_rate_per_player = rate;
        let srv = start_with(cfg);
        let base = srv.base_url();
        let vport = publish_h264_opus(&base, "n1");
        let mut player =
            Peer::connect(&format!("{base}/whep/n1"), Direction::RecvOnly).expect("WHEP accepted");
        assert!(player.connected());
        player.lose_every = 10;
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..65u32 {
            let p = rtp_packet(96, 7000 + i as u16, i * 3000, 0xBEEF, &video_payload(i));
            sock.send_to(&p, ("127.0.0.1", vport)).unwrap();
            player.run_until(Duration::from_millis(5), |_| false);
        }
        let all = |p: &mut Peer| p.received(MediaKind::Video).len() >= 65;
        if rate > 0 {
            assert!(
                player.run_until(T, all),
                "{} of 65",
                player.received(MediaKind::Video).len()
            );
            let mut got = player.received(MediaKind::Video);
            got.sort();
            got.dedup();
            let mut want: Vec<_> = (0..65).map(video_payload).collect();
            want.sort();
            assert_eq!(got, want, "every payload, the lost ones from RTX");
            assert_eq!(player.lost, 6);
            assert!(metric_total(&base, "rtx_sent") >= 6, "RTX answers counted");
        } else {
            player.run_until(Duration::from_millis(1500), |_| false);
            assert_eq!(
                player.received(MediaKind::Video).len(),
                59,
                "nothing resent"
            );
            assert_eq!(metric_total(&base, "rtx_sent"), 0);
            assert!(
                metric_total(&base, "nacks_dropped") >= 6,
                "the NACKs are counted"
            );
        }
    }
}
