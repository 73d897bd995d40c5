//! Engine-protected media (`external.rs`): the session hands over DTLS-SRTP keys and track
//! parameters on connect; packets protected with them outside str0m reach the browser
//! (a real str0m peer) intact; the browser's NACKs come out as `Output::Nack` and an RTX
//! answer recovers the packet; sender reports count what the engine reported sent.

use super::*;
use crate::srtp::SrtpContext;

fn cfg_in_place() -> WebRtcConfig {
    let c = cfg_default();
    assert!(c.protect_in_place, "the default");
    c
}

fn external(h: &Harness) -> ExternalMedia {
    h.outs
        .iter()
        .find_map(|o| match o {
            Output::ExternalMedia(m) => Some((**m).clone()),
            _ => None,
        })
        .expect("ExternalMedia after Connected")
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

impl Harness {
    /// A datagram the engine sent from the session's socket, to the browser.
    fn engine_sends(&mut self, d: &[u8]) {
        let r = Receive::new(Protocol::Udp, server_addr(), browser_addr(), d).unwrap();
        self.b
            .rtc
            .handle_input(Input::Receive(self.now, r))
            .unwrap();
        self.drain_browser();
    }
}

#[test]
fn engine_protected_media_reaches_the_browser_and_sender_reports_count_it() {
    let tracks = play_tracks();
    let mut h = Harness::connected_with(&cfg_in_place(), WebRtcRole::Play, &tracks);
    assert!(h.s.is_external());
    let m = external(&h);
    let v = *m.tracks.iter().find(|t| t.src_pt == 102).unwrap();
    let a = *m.tracks.iter().find(|t| t.src_pt == 111).unwrap();
    assert_eq!(v.pt, *h.b.pt(h.video_mid(), S0Codec::H264));
    assert_eq!(a.pt, *h.b.pt(h.audio_mid(), S0Codec::Opus));
    assert!(v.rtx.is_some(), "the browser offered RTX for video");
    assert_ne!(v.ssrc, a.ssrc);

    // str0m's own path is closed: only the engine protects these SSRCs.
    let refused = h.s.send_rtp(
        h.now,
        &OutgoingRtp {
            payload_type: 102,
            seq: 1,
            timestamp: 0,
            marker: false,
            payload: Arc::from(video_payload(0)),
        },
    );
    assert_eq!(refused, Err(SendError::External));

    let mut ctx = SrtpContext::new(&m.keys).unwrap();
    let mut bytes = 0;
    for i in 0..60u32 {
        let (seq, ts) = (20_000 + i as u16, 500_000 + i * 3000);
        let payload = video_payload(i);
        let pkt = rtp(v.pt, seq, ts, v.ssrc, true, &payload);
        let mut buf = vec![0u8; pkt.len() + 16];
        buf[..pkt.len()].copy_from_slice(&pkt);
        let n = ctx.protect_rtp_in_place(&mut buf, pkt.len()).unwrap();
        h.engine_sends(&buf[..n]);
        h.s.note_sent(102, seq, ts, payload.len(), h.now);
        bytes += payload.len() as u64;
        if i % 3 == 0 {
            let ap = audio_payload(i);
            let pkt = rtp(a.pt, 700 + i as u16, 960 * i, a.ssrc, false, &ap);
            let enc = ctx.protect_rtp(&pkt).unwrap();
            h.engine_sends(&enc);
        }
        h.run_for(Duration::from_millis(33));
    }
    h.run_for(Duration::from_millis(1500));

    let bvpt = h.b.pt(h.video_mid(), S0Codec::H264);
    let got: Vec<_> =
        h.b.rtp_packets()
            .into_iter()
            .filter(|p| p.header.payload_type == bvpt)
            .collect();
    assert_eq!(got.len(), 60);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(&p.payload[..], &video_payload(i as u32)[..], "video {i}");
        assert_eq!(p.header.sequence_number, 20_000 + i as u16);
    }
    let bapt = h.b.pt(h.audio_mid(), S0Codec::Opus);
    let audio =
        h.b.rtp_packets()
            .into_iter()
            .filter(|p| p.header.payload_type == bapt)
            .count();
    assert_eq!(audio, 20);

    // The browser saw sender reports carrying the engine's counts: the last video packet
    // arrived after at least one SR, whose counts cover a prefix of what was sent.
    let si = got
        .iter()
        .rev()
        .find_map(|p| p.last_sender_info)
        .expect("a sender report reached the browser");
    assert_eq!(*si.ssrc, v.ssrc);
    assert!(si.sender_packet_count > 0 && si.sender_packet_count <= 60);
    assert!(si.sender_octet_count as u64 <= bytes);
    let per = si.sender_octet_count as f64 / si.sender_packet_count as f64;
    assert!((200.0..1000.0).contains(&per), "octets per packet {per}");
    assert_eq!(h.s.counters().rtp_out, 60);
}

#[test]
fn browser_nacks_come_out_and_an_rtx_answer_recovers_the_packet() {
    let mut h = Harness::connected_with(&cfg_in_place(), WebRtcRole::Play, &play_tracks());
    let m = external(&h);
    let v = *m.tracks.iter().find(|t| t.src_pt == 102).unwrap();
    let mut ctx = SrtpContext::new(&m.keys).unwrap();
    let lost = 65_533u16; // the RTX answer's sequence space wraps too
    let mut kept = None;
    for i in 0..12u16 {
        let seq = 65_530u16.wrapping_add(i);
        let payload = video_payload(i as u32);
        let pkt = rtp(v.pt, seq, i as u32 * 3000, v.ssrc, true, &payload);
        let enc = ctx.protect_rtp(&pkt).unwrap();
        if seq == lost {
            kept = Some(payload);
        } else {
            h.engine_sends(&enc);
        }
        h.s.note_sent(102, seq, i as u32 * 3000, pkt.len() - 12, h.now);
        h.run_for(Duration::from_millis(20));
    }
    h.run_for(Duration::from_millis(300));
    let nacked: Vec<u16> = h
        .outs
        .iter()
        .filter_map(|o| match o {
            Output::Nack {
                payload_type: 102,
                seq,
            } => Some(*seq),
            _ => None,
        })
        .collect();
    assert!(nacked.contains(&lost), "NACK for {lost}: {nacked:?}");
    assert!(
        nacked.iter().all(|s| *s == lost),
        "only the lost one: {nacked:?}"
    );

    // RFC 4588: RTX PT and SSRC, own sequence number, the original one first in the payload.
    let (rtx_pt, rtx_ssrc, rtx_seq) = h.s.rtx_header(102).unwrap();
    assert_eq!(Some((rtx_pt, rtx_ssrc)), v.rtx);
    let mut body = lost.to_be_bytes().to_vec();
    body.extend_from_slice(kept.as_ref().unwrap());
    let pkt = rtp(rtx_pt, rtx_seq, 3 * 3000, rtx_ssrc, true, &body);
    let enc = ctx.protect_rtp(&pkt).unwrap();
    h.engine_sends(&enc);
    h.run_for(Duration::from_millis(100));
    let bvpt = h.b.pt(h.video_mid(), S0Codec::H264);
    let got: Vec<_> =
        h.b.rtp_packets()
            .into_iter()
            .filter(|p| p.header.payload_type == bvpt)
            .map(|p| (p.header.sequence_number, p.payload.to_vec()))
            .collect();
    assert_eq!(got.len(), 12, "the RTX answer filled the gap");
    let r = got.iter().find(|(s, _)| *s == lost).expect("recovered");
    assert_eq!(&r.1, kept.as_ref().unwrap());
}

#[test]
fn in_place_off_keeps_the_str0m_path() {
    let h = Harness::connected(WebRtcRole::Play, &play_tracks());
    assert!(!h.s.is_external());
    assert!(!h.outs.iter().any(|o| matches!(o, Output::ExternalMedia(_))));
}
