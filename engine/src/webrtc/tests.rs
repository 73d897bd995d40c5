//! The session against a second str0m `Rtc` playing the browser, in memory, with simulated
//! time: offer/answer, ICE-lite + DTLS connect, media both ways, PLI, NACK/RTX, garbage,
//! bad offers, and a Chrome-style WHIP offer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec as S0Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind as S0Kind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Rtc};

use super::*;

const CHROME_WHIP_OFFER: &str = include_str!("testdata/chrome_whip_offer.sdp");

fn server_addr() -> SocketAddr {
    "127.0.0.1:20000".parse().unwrap()
}

fn browser_addr() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

mod external;

/// str0m's own send path (`protect_in_place` off): what these tests cover; `external.rs`
/// covers the engine-protected one.
fn cfg() -> WebRtcConfig {
    let mut c = cfg_default();
    c.protect_in_place = false;
    c
}

fn cfg_default() -> WebRtcConfig {
    // Certificate generation once per test binary.
    static CFG: OnceLock<WebRtcConfig> = OnceLock::new();
    CFG.get_or_init(|| WebRtcConfig::new().unwrap()).clone()
}

fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(64..96).contains(&(d[1] & 0x7f))
}

/// The browser: a plain (non-lite) str0m in RTP mode with its default codecs, like Chrome
/// offering everything it has.
struct Browser {
    rtc: Rtc,
    events: Vec<Event>,
    timeout: Instant,
}

impl Browser {
    fn new(now: Instant) -> Browser {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(Candidate::host(browser_addr(), "udp").unwrap())
            .unwrap();
        Browser {
            rtc,
            events: Vec::new(),
            timeout: now,
        }
    }

    fn offer(&mut self, media: &[(S0Kind, Direction)]) -> (String, SdpPendingOffer, Vec<Mid>) {
        let mut api = self.rtc.sdp_api();
        let mids = media
            .iter()
            .map(|&(k, d)| api.add_media(k, d, None, None, None))
            .collect();
        let (offer, pending) = api.apply().unwrap();
        (offer.to_sdp_string(), pending, mids)
    }

    /// The browser's negotiated PT for `codec` on `mid`.
    fn pt(&self, mid: Mid, codec: S0Codec) -> Pt {
        let media = self.rtc.media(mid).unwrap();
        let cfg = self.rtc.codec_config();
        *media
            .remote_pts()
            .iter()
            .find(|pt| {
                cfg.iter()
                    .any(|p| p.pt() == **pt && p.spec().codec == codec)
            })
            .unwrap_or_else(|| panic!("{codec} not negotiated on {mid}"))
    }

    fn rtp_packets(&self) -> Vec<&RtpPacket> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::RtpPacket(p) => Some(p),
                _ => None,
            })
            .collect()
    }
}

/// Session + browser + the wire between them.
struct Harness {
    s: WebRtcSession,
    b: Browser,
    now: Instant,
    /// Everything the session output except transmits (those go on the wire).
    outs: Vec<Output>,
    /// Indices (0-based, counting RTP datagrams only) to drop per direction.
    drop_to_server: Vec<u32>,
    drop_to_browser: Vec<u32>,
    rtp_to_server: u32,
    rtp_to_browser: u32,
    /// Browser → server link down (consent loss).
    cut: bool,
    /// Browser → server STUN dropped, media passes: a peer that keeps alive with
    /// unauthenticated binding indications (libnice's default) looks like this to ICE.
    cut_stun: bool,
    browser_mids: Vec<Mid>,
}

impl Harness {
    fn new(role: WebRtcRole, tracks: &[TrackInfo]) -> Harness {
        Harness::new_with(&cfg(), role, tracks)
    }

    fn new_with(cfg: &WebRtcConfig, role: WebRtcRole, tracks: &[TrackInfo]) -> Harness {
        let now = Instant::now();
        let mut b = Browser::new(now);
        let dir = match role {
            WebRtcRole::Publish => Direction::SendOnly,
            WebRtcRole::Play => Direction::RecvOnly,
        };
        let (offer, pending, mids) = b.offer(&[(S0Kind::Video, dir), (S0Kind::Audio, dir)]);
        let (s, answer) =
            WebRtcSession::accept_offer(cfg, role, &offer, server_addr(), now, tracks)
                .unwrap_or_else(|e| panic!("{e}\n{offer}"));
        b.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap_or_else(|e| panic!("browser refused the answer: {e}\n{answer}"));
        let mut h = Harness {
            s,
            b,
            now,
            outs: Vec::new(),
            drop_to_server: Vec::new(),
            drop_to_browser: Vec::new(),
            rtp_to_server: 0,
            rtp_to_browser: 0,
            cut: false,
            cut_stun: false,
            browser_mids: mids,
        };
        h.drain_browser();
        h.drain_session();
        h
    }

    fn connected(role: WebRtcRole, tracks: &[TrackInfo]) -> Harness {
        Harness::connected_with(&cfg(), role, tracks)
    }

    fn connected_with(cfg: &WebRtcConfig, role: WebRtcRole, tracks: &[TrackInfo]) -> Harness {
        let mut h = Harness::new_with(cfg, role, tracks);
        assert!(
            h.run_until(Duration::from_secs(5), |h| h.s.is_connected()
                && h.b.rtc.is_connected()),
            "no connection; outputs: {:?}",
            h.outs
        );
        assert!(h.outs.contains(&Output::Connected));
        h
    }

    fn video_mid(&self) -> Mid {
        self.browser_mids[0]
    }

    fn audio_mid(&self) -> Mid {
        self.browser_mids[1]
    }

    /// Polls the browser to its timeout, putting its datagrams on the wire to the session.
    fn drain_browser(&mut self) {
        loop {
            match self.b.rtc.poll_output().unwrap() {
                str0m::Output::Timeout(t) => {
                    self.b.timeout = t;
                    return;
                }
                str0m::Output::Transmit(t) => {
                    if self.cut || (self.cut_stun && t.contents[0] < 2) {
                        continue;
                    }
                    if is_rtp(&t.contents) {
                        let i = self.rtp_to_server;
                        self.rtp_to_server += 1;
                        if self.drop_to_server.contains(&i) {
                            continue;
                        }
                    }
                    self.s
                        .handle_datagram(self.now, t.source, t.destination, &t.contents);
                }
                str0m::Output::Event(e) => self.b.events.push(e),
            }
        }
    }

    /// Takes the session's queued outputs; transmits go to the browser.
    fn drain_session(&mut self) {
        let mut wire = VecDeque::new();
        loop {
            match self.s.poll_output() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    assert_eq!(t.source, server_addr());
                    assert_eq!(t.destination, browser_addr());
                    if is_rtp(&t.contents) {
                        let i = self.rtp_to_browser;
                        self.rtp_to_browser += 1;
                        if self.drop_to_browser.contains(&i) {
                            continue;
                        }
                    }
                    wire.push_back(t.contents);
                }
                o => self.outs.push(o),
            }
        }
        for d in wire {
            let r = Receive::new(Protocol::Udp, server_addr(), browser_addr(), &d).unwrap();
            self.b
                .rtc
                .handle_input(Input::Receive(self.now, r))
                .unwrap();
            self.drain_browser();
        }
    }

    /// One turn: exchange everything pending, then advance time to the earliest timeout.
    fn step(&mut self) {
        self.drain_session();
        let next = self.b.timeout.min(self.s.timeout());
        self.now = next.max(self.now + Duration::from_millis(1));
        self.b.rtc.handle_input(Input::Timeout(self.now)).unwrap();
        self.drain_browser();
        self.s.handle_timeout(self.now);
        self.drain_session();
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn run_until(&mut self, max: Duration, done: impl Fn(&Harness) -> bool) -> bool {
        let end = self.now + max;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    fn rtp_out(&self) -> Vec<&RtpIn> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::Rtp(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Browser (publisher) writes one RTP packet on `mid`.
    fn browser_write(&mut self, mid: Mid, pt: Pt, seq: u64, ts: u32, marker: bool, payload: &[u8]) {
        let now = self.now;
        let mut api = self.b.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(mid, None)
            .expect("browser send stream");
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload.to_vec())
                .marker(marker)
                .nackable(true),
        );
        self.drain_browser();
    }
}

fn video_payload(i: u32) -> Vec<u8> {
    // A fake H.264 NAL unit (type 1, non-IDR slice) with the index in it.
    let mut v = vec![0x41, 0x9a];
    v.extend_from_slice(&i.to_be_bytes());
    v.extend(std::iter::repeat_n(
        (i % 251) as u8,
        200 + (i as usize % 700),
    ));
    v
}

fn audio_payload(i: u32) -> Vec<u8> {
    let mut v = vec![0xfc];
    v.extend_from_slice(&i.to_be_bytes());
    v.extend(std::iter::repeat_n(0x11, 60));
    v
}

fn play_tracks() -> Vec<TrackInfo> {
    vec![
        TrackInfo {
            kind: MediaKind::Video,
            codec: Codec::H264,
            clock_rate: 90_000,
            payload_type: 102,
            h264_profile_level_id: Some(H264_CONSTRAINED_BASELINE),
        },
        TrackInfo {
            kind: MediaKind::Audio,
            codec: Codec::Opus,
            clock_rate: 48_000,
            payload_type: 111,
            h264_profile_level_id: None,
        },
    ]
}

// ---------------------------------------------------------------- publish

#[test]
fn sessions_can_move_between_threads() {
    // Control accepts the offer (it owes the HTTP answer), the shard drives the session.
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<WebRtcSession>();
    send::<Output>();
    send::<WebRtcConfig>();
    sync::<WebRtcConfig>();
}

#[test]
fn publish_connects_and_outputs_the_browsers_rtp_in_order() {
    let mut h = Harness::connected(WebRtcRole::Publish, &[]);
    let tracks = h.s.tracks().to_vec();
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    let video = *tracks.iter().find(|t| t.kind == MediaKind::Video).unwrap();
    let audio = *tracks.iter().find(|t| t.kind == MediaKind::Audio).unwrap();
    assert_eq!(video.codec, Codec::H264, "H264 is preferred by default");
    assert_eq!(video.h264_profile_level_id, Some(H264_CONSTRAINED_BASELINE));
    assert_eq!(audio.codec, Codec::Opus);

    let (vmid, amid) = (h.video_mid(), h.audio_mid());
    let vpt = h.b.pt(vmid, S0Codec::H264);
    let apt = h.b.pt(amid, S0Codec::Opus);
    // The answer kept the browser's numbering: the session outputs the browser's PTs.
    assert_eq!(*vpt, video.payload_type);
    assert_eq!(*apt, audio.payload_type);

    for i in 0..60u32 {
        let marker = i % 3 == 2;
        h.browser_write(
            vmid,
            vpt,
            7000 + i as u64,
            90_000 + (i / 3) * 3000,
            marker,
            &video_payload(i),
        );
        if i % 2 == 0 {
            h.browser_write(
                amid,
                apt,
                300 + (i / 2) as u64,
                960 * i,
                false,
                &audio_payload(i),
            );
        }
        h.step();
    }
    h.run_for(Duration::from_millis(200));

    let vssrc =
        *h.b.rtc
            .direct_api()
            .stream_tx_by_mid(vmid, None)
            .unwrap()
            .ssrc();
    let out = h.rtp_out();
    let v: Vec<_> = out.iter().filter(|p| p.kind == MediaKind::Video).collect();
    let a: Vec<_> = out.iter().filter(|p| p.kind == MediaKind::Audio).collect();
    assert_eq!(v.len(), 60);
    assert_eq!(a.len(), 30);
    for (i, p) in v.iter().enumerate() {
        let i = i as u32;
        assert_eq!(&p.payload[..], &video_payload(i)[..], "video packet {i}");
        assert_eq!(p.seq, 7000 + i as u16);
        assert_eq!(p.timestamp, 90_000 + (i / 3) * 3000);
        assert_eq!(p.marker, i % 3 == 2);
        assert_eq!(p.payload_type, video.payload_type);
        assert_eq!(p.codec, Codec::H264);
        assert_eq!(p.ssrc, vssrc);
        // The plain RTP form parses back to the same values.
        let raw = p.to_vec();
        let hdr = crate::rtp::parse_rtp(&raw).unwrap();
        assert_eq!(
            (hdr.seq, hdr.timestamp, hdr.ssrc),
            (p.seq, p.timestamp, p.ssrc)
        );
        assert_eq!(hdr.payload_type, p.payload_type);
        assert_eq!(hdr.marker, p.marker);
        assert_eq!(&raw[hdr.payload_offset..], &p.payload[..]);
    }
    for (i, p) in a.iter().enumerate() {
        assert_eq!(
            &p.payload[..],
            &audio_payload(2 * i as u32)[..],
            "audio packet {i}"
        );
        assert_eq!(p.codec, Codec::Opus);
    }
    let c = h.s.counters();
    assert_eq!(c.rtp_in, 90);
    assert_eq!(
        c.dropped_malformed + c.dropped_unknown_source + c.input_errors,
        0
    );
    assert_eq!(c.rtp_discarded, 0, "{c:?}");
}

#[test]
fn publish_lost_packet_is_nacked_and_recovered_via_rtx() {
    let mut h = Harness::connected(WebRtcRole::Publish, &[]);
    let vmid = h.video_mid();
    let vpt = h.b.pt(vmid, S0Codec::H264);
    // Drop the 10th RTP datagram the browser sends (packets are sent in write order).
    h.drop_to_server = vec![h.rtp_to_server + 10];
    for i in 0..40u32 {
        h.browser_write(vmid, vpt, 100 + i as u64, i * 3000, true, &video_payload(i));
        h.run_for(Duration::from_millis(20));
    }
    h.run_for(Duration::from_millis(500));
    let mut got: Vec<_> = h
        .rtp_out()
        .iter()
        .map(|p| (p.seq, p.payload.clone()))
        .collect();
    assert_eq!(got.len(), 40, "the dropped packet came back through RTX");
    // It arrives late, after its successors.
    let pos = got.iter().position(|(s, _)| *s == 110).unwrap();
    assert!(
        pos > 10,
        "retransmission arrives after later packets (pos {pos})"
    );
    got.sort_by_key(|(s, _)| *s);
    for (i, (seq, payload)) in got.iter().enumerate() {
        assert_eq!(*seq, 100 + i as u16);
        assert_eq!(&payload[..], &video_payload(i as u32)[..]);
    }
}

#[test]
fn publish_request_keyframe_reaches_the_browser() {
    let mut h = Harness::connected(WebRtcRole::Publish, &[]);
    let vmid = h.video_mid();
    let vpt = h.b.pt(vmid, S0Codec::H264);
    h.browser_write(vmid, vpt, 1, 0, true, &video_payload(0));
    h.step();
    let audio_pt =
        h.s.tracks()
            .iter()
            .find(|t| t.kind == MediaKind::Audio)
            .unwrap()
            .payload_type;
    assert!(!h
        .s
        .request_keyframe(h.now, KeyframeKind::Pli, Some(audio_pt)));
    assert!(h.s.request_keyframe(h.now, KeyframeKind::Pli, Some(*vpt)));
    h.run_for(Duration::from_millis(100));
    let got = h.b.events.iter().any(|e| {
        matches!(e, Event::KeyframeRequest(r) if r.mid == vmid && r.kind == KeyframeRequestKind::Pli)
    });
    assert!(got, "browser saw no PLI: {:?}", h.b.events);
    assert_eq!(h.s.counters().keyframe_requests_out, 1);
}

// ---------------------------------------------------------------- play

#[test]
fn play_delivers_send_rtp_payloads_to_the_browser() {
    let tracks = play_tracks();
    let mut h = Harness::connected(WebRtcRole::Play, &tracks);
    assert_eq!(h.s.tracks(), &tracks[..]);
    let (vmid, amid) = (h.video_mid(), h.audio_mid());
    let bvpt = h.b.pt(vmid, S0Codec::H264);
    let bapt = h.b.pt(amid, S0Codec::Opus);

    for i in 0..50u32 {
        let pkt = OutgoingRtp {
            payload_type: 102,
            seq: 30_000 + i as u16,
            timestamp: 1_000_000 + (i / 2) * 3000,
            marker: i % 2 == 1,
            payload: Arc::from(video_payload(i)),
        };
        h.s.send_rtp(h.now, &pkt).unwrap();
        if i % 2 == 0 {
            let a = OutgoingRtp {
                payload_type: 111,
                seq: 500 + (i / 2) as u16,
                timestamp: 960 * i,
                marker: false,
                payload: Arc::from(audio_payload(i)),
            };
            h.s.send_rtp(h.now, &a).unwrap();
        }
        h.step();
    }
    h.run_for(Duration::from_millis(200));

    let pkts = h.b.rtp_packets();
    let v: Vec<_> = pkts
        .iter()
        .filter(|p| p.header.payload_type == bvpt)
        .collect();
    let a: Vec<_> = pkts
        .iter()
        .filter(|p| p.header.payload_type == bapt)
        .collect();
    assert_eq!(v.len(), 50);
    assert_eq!(a.len(), 25);
    for (i, p) in v.iter().enumerate() {
        let i = i as u32;
        assert_eq!(&p.payload[..], &video_payload(i)[..], "video {i}");
        assert_eq!(p.header.sequence_number, 30_000 + i as u16);
        assert_eq!(p.header.timestamp, 1_000_000 + (i / 2) * 3000);
        assert_eq!(p.header.marker, i % 2 == 1);
    }
    for (i, p) in a.iter().enumerate() {
        assert_eq!(
            &p.payload[..],
            &audio_payload(2 * i as u32)[..],
            "audio {i}"
        );
    }
    assert_eq!(h.s.counters().rtp_out, 75);
}

#[test]
fn play_translates_payload_types_to_the_players_numbering() {
    // The publisher's PTs (102 / 111 here, 35 / 63 below) need not be the player's.
    let mut tracks = play_tracks();
    tracks[0].payload_type = 35;
    tracks[1].payload_type = 63;
    let mut h = Harness::connected(WebRtcRole::Play, &tracks);
    let bvpt = h.b.pt(h.video_mid(), S0Codec::H264);
    assert_ne!(*bvpt, 35);
    let pkt = OutgoingRtp {
        payload_type: 35,
        seq: 1,
        timestamp: 0,
        marker: true,
        payload: Arc::from(video_payload(7)),
    };
    h.s.send_rtp(h.now, &pkt).unwrap();
    h.run_for(Duration::from_millis(50));
    let pkts = h.b.rtp_packets();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].header.payload_type, bvpt);
    // A PT the publisher does not have is refused, not sent.
    let mut other = pkt.clone();
    other.payload_type = 99;
    assert_eq!(
        h.s.send_rtp(h.now, &other),
        Err(SendError::UnknownPayloadType(99))
    );
    assert_eq!(h.s.counters().rtp_out_dropped, 1);
}

#[test]
fn play_media_line_without_a_publisher_track_is_rejected_not_fatal() {
    // Video-only publisher, player offering audio + video.
    let tracks = &play_tracks()[..1];
    let mut h = Harness::connected(WebRtcRole::Play, tracks);
    assert_eq!(h.s.tracks(), tracks);
    let pkt = OutgoingRtp {
        payload_type: 102,
        seq: 9,
        timestamp: 0,
        marker: true,
        payload: Arc::from(video_payload(1)),
    };
    h.s.send_rtp(h.now, &pkt).unwrap();
    h.run_for(Duration::from_millis(50));
    assert_eq!(h.b.rtp_packets().len(), 1);
    assert_eq!(
        h.s.send_rtp(
            h.now,
            &OutgoingRtp {
                payload_type: 111,
                ..pkt
            }
        ),
        Err(SendError::UnknownPayloadType(111))
    );
}

#[test]
fn play_lost_packet_is_retransmitted_from_strom_buffer() {
    let mut h = Harness::connected(WebRtcRole::Play, &play_tracks());
    // Drop the 5th RTP datagram the session sends.
    h.drop_to_browser = vec![h.rtp_to_browser + 5];
    for i in 0..30u32 {
        let pkt = OutgoingRtp {
            payload_type: 102,
            seq: 65_520u16.wrapping_add(i as u16), // crosses the 16-bit wrap
            timestamp: i * 3000,
            marker: true,
            payload: Arc::from(video_payload(i)),
        };
        h.s.send_rtp(h.now, &pkt).unwrap();
        h.run_for(Duration::from_millis(20));
    }
    h.run_for(Duration::from_millis(500));
    let bvpt = h.b.pt(h.video_mid(), S0Codec::H264);
    let mut got: Vec<_> =
        h.b.rtp_packets()
            .iter()
            .filter(|p| p.header.payload_type == bvpt)
            .map(|p| (*p.seq_no, p.payload.to_vec()))
            .collect();
    assert_eq!(got.len(), 30, "lost packet recovered by NACK + RTX");
    got.sort_by_key(|(s, _)| *s);
    for (i, (_, payload)) in got.iter().enumerate() {
        assert_eq!(payload, &video_payload(i as u32));
    }
}

#[test]
fn play_pli_from_the_browser_surfaces_as_keyframe_request() {
    let mut h = Harness::connected(WebRtcRole::Play, &play_tracks());
    let vmid = h.video_mid();
    let pkt = OutgoingRtp {
        payload_type: 102,
        seq: 10,
        timestamp: 0,
        marker: true,
        payload: Arc::from(video_payload(0)),
    };
    h.s.send_rtp(h.now, &pkt).unwrap();
    h.run_for(Duration::from_millis(50));
    h.b.rtc
        .direct_api()
        .stream_rx_by_mid(vmid, None)
        .expect("browser receive stream")
        .request_keyframe(KeyframeRequestKind::Pli);
    h.drain_browser();
    h.run_for(Duration::from_millis(100));
    let reqs: Vec<_> = h
        .outs
        .iter()
        .filter_map(|o| match o {
            Output::KeyframeRequest(r) => Some(*r),
            _ => None,
        })
        .collect();
    assert_eq!(
        reqs,
        vec![KeyframeRequest {
            kind: KeyframeKind::Pli,
            payload_type: Some(102)
        }]
    );
    assert_eq!(h.s.counters().keyframe_requests_in, 1);
}

#[test]
fn play_refuses_media_before_connect_and_from_publish_sessions() {
    let mut h = Harness::new(WebRtcRole::Play, &play_tracks());
    let pkt = OutgoingRtp {
        payload_type: 102,
        seq: 1,
        timestamp: 0,
        marker: false,
        payload: Arc::from(&b"x"[..]),
    };
    assert_eq!(h.s.send_rtp(h.now, &pkt), Err(SendError::NotConnected));
    let mut p = Harness::connected(WebRtcRole::Publish, &[]);
    assert_eq!(p.s.send_rtp(p.now, &pkt), Err(SendError::NotPlayer));
}

// ---------------------------------------------------------------- lifecycle

#[test]
fn no_browser_traffic_ends_in_connect_timeout() {
    let now = Instant::now();
    let (mut s, _) = WebRtcSession::accept_offer(
        &cfg(),
        WebRtcRole::Publish,
        CHROME_WHIP_OFFER,
        server_addr(),
        now,
        &[],
    )
    .unwrap();
    let mut t = now;
    let mut ended = None;
    for _ in 0..10_000 {
        match s.poll_output() {
            Output::Timeout(next) => {
                t = next.max(t + Duration::from_millis(1));
                s.handle_timeout(t);
            }
            Output::Disconnected(r) => {
                ended = Some(r);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(ended, Some(DisconnectReason::ConnectTimeout));
    assert!(t - now >= Duration::from_secs(15) && t - now < Duration::from_secs(16));
    assert!(!s.is_alive());
    // Inert afterwards.
    s.handle_datagram(t, browser_addr(), server_addr(), &[0x80; 40]);
    assert_eq!(s.counters().dropped_after_close, 1);
    assert!(matches!(s.poll_output(), Output::Timeout(_)));
}

#[test]
fn browser_going_silent_ends_in_ice_disconnected() {
    let mut h = Harness::connected(WebRtcRole::Publish, &[]);
    h.run_for(Duration::from_secs(2));
    assert!(h.s.is_alive());
    h.cut = true;
    assert!(h.run_until(Duration::from_secs(30), |h| !h.s.is_alive()));
    assert_eq!(
        h.outs.last(),
        Some(&Output::Disconnected(DisconnectReason::IceDisconnected))
    );
}

#[test]
fn authenticated_media_without_binding_requests_keeps_the_session() {
    let mut h = Harness::connected(WebRtcRole::Publish, &[]);
    let (mid, pt) = (h.video_mid(), h.b.pt(h.video_mid(), S0Codec::H264));
    h.cut_stun = true;
    // 40 s of media at 10 pps (and the browser's sender reports), no binding requests: the
    // ICE-lite agent alone would give up after 15 s.
    for i in 0..400u32 {
        h.browser_write(mid, pt, 1000 + i as u64, i * 9000, true, &[0x65, i as u8]);
        h.run_for(Duration::from_millis(100));
    }
    assert!(h.s.is_alive(), "outputs: {:?}", h.outs.last());
    // The media stops too: consent is lost 15 s later.
    h.cut = true;
    assert!(h.run_until(Duration::from_secs(20), |h| !h.s.is_alive()));
    assert_eq!(
        h.outs.last(),
        Some(&Output::Disconnected(DisconnectReason::IceDisconnected))
    );
}

#[test]
fn a_fatal_dtls_alert_ends_the_handshake_at_once_with_its_reason() {
    let mut h = Harness::new(WebRtcRole::Publish, &[]);
    let started = h.now;
    // From the first step of the handshake on, the browser also sends a plaintext DTLS 1.2
    // alert record: fatal (2), handshake_failure (40), what an OpenSSL client sends when it
    // cannot meet the CertificateRequest. Record sequence numbers past the browser's own.
    for i in 0..50u8 {
        assert!(!h.s.is_connected(), "connected before the alert was read");
        let alert = [21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 100 + i, 0, 2, 2, 40];
        let now = h.now;
        h.s.handle_datagram(now, browser_addr(), server_addr(), &alert);
        h.step();
        if !h.s.is_alive() {
            break;
        }
    }
    match h.outs.last() {
        Some(Output::Disconnected(DisconnectReason::Dtls(m))) => {
            assert!(m.to_lowercase().contains("alert"), "{m}")
        }
        other => panic!("expected a DTLS failure, got {other:?}"),
    }
    assert!(
        h.now - started < Duration::from_secs(1),
        "not at the connect timeout"
    );
}

#[test]
fn close_sends_close_notify_and_ends_the_session() {
    let mut h = Harness::connected(WebRtcRole::Play, &play_tracks());
    h.s.close(h.now);
    h.run_for(Duration::from_millis(50));
    assert_eq!(
        h.outs.last(),
        Some(&Output::Disconnected(DisconnectReason::Closed))
    );
    assert!(
        h.b.events.iter().any(|e| matches!(e, Event::Closed)),
        "browser saw the close: {:?}",
        h.b.events
    );
}

// ---------------------------------------------------------------- robustness

/// xorshift64*: deterministic garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, first: u8, len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
        if let Some(b) = v.first_mut() {
            *b = first;
        }
        v
    }
}

fn garbage(rng: &mut Rng) -> Vec<u8> {
    let len = (rng.next() % 1400) as usize;
    // First bytes that steer str0m's demux into each parser: STUN (0-1), DTLS (20-63),
    // RTP/RTCP (128-191) and nothing (others).
    let first = [
        0u8, 1, 20, 21, 22, 23, 25, 63, 0x80, 0x90, 0xa0, 0xbf, 64, 200, 255,
    ];
    let f = first[(rng.next() % first.len() as u64) as usize];
    let mut v = rng.bytes(f, len);
    if f == 0x80 && v.len() > 1 && rng.next().is_multiple_of(2) {
        v[1] = 200 + (rng.next() % 8) as u8; // RTCP packet types
    }
    if f <= 1 && v.len() >= 8 {
        // STUN magic cookie, so the STUN parser goes deeper.
        v[4..8].copy_from_slice(&0x2112_a442u32.to_be_bytes());
    }
    v
}

#[test]
fn garbage_datagrams_are_counted_and_ignored() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let stranger: SocketAddr = "127.0.0.1:40000".parse().unwrap();

    // Before connecting: from the browser's address and from a stranger.
    let mut h = Harness::new(WebRtcRole::Publish, &[]);
    for i in 0..1000 {
        let src = if i % 2 == 0 { browser_addr() } else { stranger };
        let g = garbage(&mut rng);
        h.s.handle_datagram(h.now, src, server_addr(), &g);
    }
    for empty in [&[][..], &[0u8][..], &[0x80u8, 0x60][..]] {
        h.s.handle_datagram(h.now, browser_addr(), server_addr(), empty);
    }
    let c = h.s.counters();
    assert_eq!(c.datagrams_in, 1003);
    assert!(c.dropped_malformed > 0, "{c:?}");
    assert!(c.dropped_unknown_source > 0, "{c:?}");
    assert!(h.s.is_alive());
    // It still connects afterwards.
    assert!(h.run_until(Duration::from_secs(5), |h| h.s.is_connected()));

    // After connecting: garbage from the browser's (validated) address, interleaved with
    // real media, which must keep flowing.
    let vmid = h.video_mid();
    let vpt = h.b.pt(vmid, S0Codec::H264);
    for i in 0..200u32 {
        for _ in 0..5 {
            let g = garbage(&mut rng);
            let src = if rng.next().is_multiple_of(4) {
                stranger
            } else {
                browser_addr()
            };
            h.s.handle_datagram(h.now, src, server_addr(), &g);
        }
        h.browser_write(vmid, vpt, 1 + i as u64, i * 3000, true, &video_payload(i));
        h.step();
    }
    h.run_for(Duration::from_millis(200));
    assert!(h.s.is_alive() && h.s.is_connected(), "{:?}", h.outs.last());
    let got: Vec<_> = h.rtp_out().iter().map(|p| p.seq).collect();
    assert_eq!(
        got,
        (1..=200).collect::<Vec<u16>>(),
        "garbage displaced no media"
    );
    let c = h.s.counters();
    assert_eq!(c.rtp_in, 200);
    assert!(c.rtp_discarded > 100, "garbage RTP failed SRTP auth: {c:?}");
    let ignored = c.dropped_malformed + c.dropped_unknown_source + c.rtp_discarded;
    assert!(ignored > 1000, "{c:?}");
}

// ---------------------------------------------------------------- offers

fn accept(role: WebRtcRole, sdp: &str, tracks: &[TrackInfo]) -> Result<String, WebRtcError> {
    WebRtcSession::accept_offer(&cfg(), role, sdp, server_addr(), Instant::now(), tracks)
        .map(|(_, a)| a)
}

/// Removes the payload types of the Chrome video m-line except `keep`, and the lines about
/// them.
fn chrome_video_only(keep: &[&str]) -> String {
    let mut out = String::new();
    for line in CHROME_WHIP_OFFER.lines() {
        if line.starts_with("m=video") {
            out.push_str(&format!(
                "m=video 9 UDP/TLS/RTP/SAVPF {}\r\n",
                keep.join(" ")
            ));
            continue;
        }
        let pt_line = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
            .iter()
            .find_map(|p| line.strip_prefix(p));
        if let Some(rest) = pt_line {
            let pt = rest.split([' ', ':']).next().unwrap();
            let audio = ["111", "63", "9", "0", "8", "13", "110", "126"].contains(&pt);
            if !audio && !keep.contains(&pt) {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// Drops the audio m-line (and its mid from BUNDLE).
fn without_audio(sdp: &str) -> String {
    let (head, rest) = sdp.split_once("m=audio").unwrap();
    let video = &rest[rest.find("m=video").unwrap()..];
    format!(
        "{}{}",
        head.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1"),
        video
    )
}

#[test]
fn chrome_whip_offer_is_answered() {
    let now = Instant::now();
    let (s, answer) = WebRtcSession::accept_offer(
        &cfg(),
        WebRtcRole::Publish,
        CHROME_WHIP_OFFER,
        server_addr(),
        now,
        &[],
    )
    .unwrap();
    let has = |l: &str| answer.lines().any(|x| x.trim_end() == l);
    let starts = |p: &str| answer.lines().any(|x| x.starts_with(p));
    assert!(has("a=ice-lite"), "{answer}");
    assert!(has("a=setup:passive"), "DTLS server role: {answer}");
    assert!(has("a=group:BUNDLE 0 1"), "{answer}");
    assert!(has("a=mid:0") && has("a=mid:1"));
    assert!(has("a=rtcp-mux"));
    assert!(has("a=recvonly") && !has("a=sendonly") && !has("a=sendrecv"));
    assert!(starts("a=fingerprint:sha-256 "));
    assert!(starts("a=ice-ufrag:") && starts("a=ice-pwd:"));
    assert!(
        answer
            .lines()
            .any(|l| l.starts_with("a=candidate:") && l.contains("127.0.0.1 20000 typ host")),
        "{answer}"
    );
    // One codec per m-line, numbered like Chrome: opus 111; H264 CB pm=1 is Chrome's 106
    // with RTX 107.
    assert!(
        starts("m=audio 9 UDP/TLS/RTP/SAVPF 111\r") || has("m=audio 9 UDP/TLS/RTP/SAVPF 111"),
        "{answer}"
    );
    assert!(has("m=video 9 UDP/TLS/RTP/SAVPF 106 107"), "{answer}");
    assert!(has("a=rtpmap:106 H264/90000"));
    assert!(answer.contains("a=fmtp:106 ") && answer.contains("packetization-mode=1"));
    assert!(answer.contains("profile-level-id=42e01f"));
    assert!(has("a=fmtp:107 apt=106"));
    assert!(has("a=rtcp-fb:106 nack") && has("a=rtcp-fb:106 nack pli"));
    assert!(has("a=rtpmap:111 opus/48000/2"));
    // Header extensions: TWCC and mid kept (ids as Chrome numbered them), CVO refused.
    assert!(has(
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
    ));
    assert!(has("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid"));
    assert!(!answer.contains("video-orientation") && !answer.contains("rtp-stream-id"));
    // The answer is valid SDP for str0m too.
    SdpAnswer::from_sdp_string(&answer).unwrap();

    assert_eq!(
        s.tracks(),
        &[
            TrackInfo {
                kind: MediaKind::Audio,
                codec: Codec::Opus,
                clock_rate: 48_000,
                payload_type: 111,
                h264_profile_level_id: None,
            },
            TrackInfo {
                kind: MediaKind::Video,
                codec: Codec::H264,
                clock_rate: 90_000,
                payload_type: 106,
                h264_profile_level_id: Some(H264_CONSTRAINED_BASELINE),
            },
        ]
    );

    // Preferring VP8 picks Chrome's 96 (+ RTX 97).
    let mut vp8_first = cfg();
    vp8_first.codecs = vec![Codec::Vp8, Codec::H264, Codec::Opus];
    let (s, answer) = WebRtcSession::accept_offer(
        &vp8_first,
        WebRtcRole::Publish,
        CHROME_WHIP_OFFER,
        server_addr(),
        now,
        &[],
    )
    .unwrap();
    assert!(
        answer.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97"),
        "{answer}"
    );
    assert_eq!(s.tracks()[1].codec, Codec::Vp8);
    assert_eq!(s.tracks()[1].payload_type, 96);
}

#[test]
fn chrome_whep_offer_is_answered_for_play() {
    // Chrome's WHEP offer: recvonly, no a=ssrc / msid lines.
    let offer: String = CHROME_WHIP_OFFER
        .lines()
        .filter(|l| !l.starts_with("a=ssrc") && !l.starts_with("a=msid:"))
        .map(|l| {
            if l == "a=sendonly" {
                "a=recvonly\r\n".to_string()
            } else {
                format!("{l}\r\n")
            }
        })
        .collect();
    let tracks = play_tracks(); // publisher: H264 CB as pt 102, opus as pt 111
    let (s, answer) = WebRtcSession::accept_offer(
        &cfg(),
        WebRtcRole::Play,
        &offer,
        server_addr(),
        Instant::now(),
        &tracks,
    )
    .unwrap();
    let has = |l: &str| answer.lines().any(|x| x.trim_end() == l);
    assert!(has("a=sendonly") && !has("a=recvonly"), "{answer}");
    // The player's numbering: Chrome's 106 for H264 CB pm=1 (its own profile first), then
    // its Baseline 102 as the fallback flavour.
    assert!(
        answer.contains("m=video 9 UDP/TLS/RTP/SAVPF 106 107 102 103"),
        "{answer}"
    );
    // Our send streams are announced (SSRC + RTX SSRC), so the browser can NACK.
    assert!(answer.contains("a=ssrc-group:FID "), "{answer}");
    // In the player's m-line order (audio first in Chrome's offer).
    assert_eq!(s.tracks(), &[tracks[1], tracks[0]]);
    assert_eq!(*s.out.iter().find(|o| o.src_pt == 102).unwrap().pt, 106);
}

#[test]
fn offers_without_a_supported_codec_are_refused_clearly() {
    // Video only VP9 / H264 High: nothing we take; audio is fine, so the session still
    // works audio-only.
    let vp9 = chrome_video_only(&["98", "99", "112", "113"]);
    let answer = accept(WebRtcRole::Publish, &vp9, &[]).unwrap();
    // str0m rejects that m-line RFC 3264 style (port 0, out of BUNDLE).
    assert!(
        answer.contains("m=video 0 ") && answer.contains("a=inactive"),
        "{answer}"
    );
    assert!(answer.contains("a=group:BUNDLE 0\r\n"), "{answer}");

    // ... but with no audio either there is nothing to answer.
    let only_video = without_audio(&vp9);
    let e = accept(WebRtcRole::Publish, &only_video, &[]).unwrap_err();
    let WebRtcError::NoSupportedCodec(msg) = &e else {
        panic!("{e:?}")
    };
    assert!(msg.contains("VP9/90000 (pt 98)"), "{msg}");
    assert!(msg.contains("profile-level-id=64001f"), "{msg}");
    assert!(msg.contains("accepted: H264/VP8"), "{msg}");

    // H264 with packetization-mode=0 only.
    let pm0 = without_audio(&chrome_video_only(&["104", "105", "108", "109"]));
    let e = accept(WebRtcRole::Publish, &pm0, &[]).unwrap_err();
    assert!(
        matches!(&e, WebRtcError::NoSupportedCodec(m) if m.contains("packetization-mode=0")
            && m.contains("needs packetization-mode=1")),
        "{e}"
    );

    // A player whose offer has none of the publisher's codecs.
    let vp8_only_publisher = [TrackInfo {
        kind: MediaKind::Video,
        codec: Codec::Vp8,
        clock_rate: 90_000,
        payload_type: 96,
        h264_profile_level_id: None,
    }];
    let whep_h264_only = pm0.replace("a=sendonly", "a=recvonly");
    let e = accept(WebRtcRole::Play, &whep_h264_only, &vp8_only_publisher).unwrap_err();
    assert!(
        matches!(&e, WebRtcError::NoSupportedCodec(m) if m.contains("accepted: VP8")),
        "{e}"
    );
}

#[test]
fn malformed_and_wrong_offers_give_clear_errors() {
    let e = accept(WebRtcRole::Publish, "hello", &[]).unwrap_err();
    assert!(matches!(e, WebRtcError::InvalidSdp(_)), "{e:?}");
    assert!(!e.to_string().contains("PointerOffset"), "{e}");
    let e = accept(WebRtcRole::Publish, "", &[]).unwrap_err();
    assert!(matches!(e, WebRtcError::InvalidSdp(_)), "{e:?}");

    let truncated = &CHROME_WHIP_OFFER[..CHROME_WHIP_OFFER.len() / 3];
    // Cut mid-line: either unparseable or unanswerable, never a panic.
    assert!(accept(WebRtcRole::Publish, truncated, &[]).is_err());

    let no_fp: String = CHROME_WHIP_OFFER
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let e = accept(WebRtcRole::Publish, &no_fp, &[]).unwrap_err();
    assert!(
        matches!(&e, WebRtcError::BadOffer(m) if m.contains("fingerprint")),
        "{e:?}"
    );

    let no_ice: String = CHROME_WHIP_OFFER
        .lines()
        .filter(|l| !l.starts_with("a=ice-pwd"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let e = accept(WebRtcRole::Publish, &no_ice, &[]).unwrap_err();
    assert!(
        matches!(e, WebRtcError::BadOffer(_) | WebRtcError::InvalidSdp(_)),
        "{e:?}"
    );

    let lite = CHROME_WHIP_OFFER.replace(
        "a=extmap-allow-mixed\r\n",
        "a=extmap-allow-mixed\r\na=ice-lite\r\n",
    );
    let e = accept(WebRtcRole::Publish, &lite, &[]).unwrap_err();
    assert!(
        matches!(&e, WebRtcError::BadOffer(m) if m.contains("ICE-Lite")),
        "{e:?}"
    );

    // Direction: a WHIP offer must send, a WHEP offer must receive.
    let e = accept(WebRtcRole::Play, CHROME_WHIP_OFFER, &play_tracks()).unwrap_err();
    assert!(
        matches!(&e, WebRtcError::NoUsableMedia(m) if m.contains("sendonly")),
        "{e:?}"
    );
    let recv = CHROME_WHIP_OFFER.replace("a=sendonly", "a=recvonly");
    let e = accept(WebRtcRole::Publish, &recv, &[]).unwrap_err();
    assert!(matches!(e, WebRtcError::NoUsableMedia(_)), "{e:?}");

    // No direction attribute: str0m's parser refuses it.
    let nodir: String = CHROME_WHIP_OFFER
        .lines()
        .filter(|l| *l != "a=sendonly")
        .map(|l| format!("{l}\r\n"))
        .collect();
    let e = accept(WebRtcRole::Publish, &nodir, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "offer is not valid SDP: SDP parse: Expected exactly one of a=sendrecv, a=sendonly, \
         a=recvonly, a=inactive for mid: 0"
    );

    // sendrecv is accepted and answered one-way.
    let sr = CHROME_WHIP_OFFER.replace("a=sendonly", "a=sendrecv");
    let a = accept(WebRtcRole::Publish, &sr, &[]).unwrap();
    assert!(a.contains("a=recvonly") && !a.contains("a=sendrecv"));

    let e = accept(WebRtcRole::Play, CHROME_WHIP_OFFER, &[]).unwrap_err();
    assert_eq!(e, WebRtcError::NoTracks);

    let e = WebRtcSession::accept_offer(
        &cfg(),
        WebRtcRole::Publish,
        CHROME_WHIP_OFFER,
        "0.0.0.0:20000".parse().unwrap(),
        Instant::now(),
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, WebRtcError::BadLocalAddress(_)), "{e:?}");
    // Every error reads as a sentence.
    assert!(e
        .to_string()
        .starts_with("bad local address: 0.0.0.0:20000"));
}
