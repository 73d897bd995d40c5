//! RTCP feedback from players (sans-IO): find PLI / FIR / NACK in a compound packet, build
//! the requests sent upstream, and coalesce keyframe requests so N players asking at once
//! cost the publisher one keyframe.
//!
//! Parsing walks the compound packet in place (no allocation); the `rtcp` crate is used in
//! tests to produce real packets.

use std::time::{Duration, Instant};

/// What a player asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Picture Loss Indication or Full Intra Request for `media_ssrc`.
    Keyframe { media_ssrc: u32 },
    /// Generic NACK: `pid` lost plus the 16 following per `blp` bits.
    Nack { media_ssrc: u32, pid: u16, blp: u16 },
}

/// Calls `f` for each feedback item in a (validated) compound RTCP packet.
pub fn for_each_feedback(buf: &[u8], mut f: impl FnMut(Feedback)) {
    let mut off = 0;
    while off + 4 <= buf.len() {
        let fmt = buf[off] & 0x1f;
        let pt = buf[off + 1];
        let len = (u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize + 1) * 4;
        let end = (off + len).min(buf.len());
        let pkt = &buf[off..end];
        if pkt.len() >= 12 {
            let media_ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
            match (pt, fmt) {
                (206, 1) => f(Feedback::Keyframe { media_ssrc }),
                (206, 4) => {
                    // FIR: media SSRC field is unused; targets are in the FCI entries.
                    let mut i = 12;
                    while i + 8 <= pkt.len() {
                        let ssrc = u32::from_be_bytes([pkt[i], pkt[i + 1], pkt[i + 2], pkt[i + 3]]);
                        f(Feedback::Keyframe { media_ssrc: ssrc });
                        i += 8;
                    }
                }
                (205, 1) => {
                    let mut i = 12;
                    while i + 4 <= pkt.len() {
                        let pid = u16::from_be_bytes([pkt[i], pkt[i + 1]]);
                        let blp = u16::from_be_bytes([pkt[i + 2], pkt[i + 3]]);
                        f(Feedback::Nack {
                            media_ssrc,
                            pid,
                            blp,
                        });
                        i += 4;
                    }
                }
                _ => {}
            }
        }
        off += len;
    }
}

/// The SSRC the server uses as "sender SSRC" in feedback it originates.
pub const SERVER_SSRC: u32 = 0x5EC0_0001;

/// A 12-byte PLI for `media_ssrc`.
pub fn build_pli(media_ssrc: u32) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0] = 0x81;
    p[1] = 206;
    p[3] = 2;
    p[4..8].copy_from_slice(&SERVER_SSRC.to_be_bytes());
    p[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    p
}

/// A 16-byte generic NACK with one FCI entry.
pub fn build_nack(media_ssrc: u32, pid: u16, blp: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 0x81;
    p[1] = 205;
    p[3] = 3;
    p[4..8].copy_from_slice(&SERVER_SSRC.to_be_bytes());
    p[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    p[12..14].copy_from_slice(&pid.to_be_bytes());
    p[14..16].copy_from_slice(&blp.to_be_bytes());
    p
}

/// Coalesces keyframe requests: at most one per `interval` reaches the publisher.
#[derive(Debug)]
pub struct KeyframeCoalescer {
    interval: Duration,
    last_sent: Option<Instant>,
    /// Requests absorbed since the last one sent (for stats).
    pub coalesced: u64,
}

impl KeyframeCoalescer {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: None,
            coalesced: 0,
        }
    }

    /// Returns true when a request arriving at `now` should be sent upstream.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(t) if now.duration_since(t) < self.interval => {
                self.coalesced += 1;
                false
            }
            _ => {
                self.last_sent = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    use webrtc_util::Marshal;

    fn collect(buf: &[u8]) -> Vec<Feedback> {
        let mut v = Vec::new();
        for_each_feedback(buf, |f| v.push(f));
        v
    }

    #[test]
    fn finds_pli_fir_nack_in_compound() {
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 10,
        };
        let fir = FullIntraRequest {
            sender_ssrc: 1,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: 11,
                sequence_number: 3,
            }],
        };
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 12,
            nacks: vec![NackPair {
                packet_id: 500,
                lost_packets: 0b101,
            }],
        };
        let mut buf = Vec::new();
        buf.extend_from_slice(&pli.marshal().unwrap());
        buf.extend_from_slice(&fir.marshal().unwrap());
        buf.extend_from_slice(&nack.marshal().unwrap());
        crate::rtp::validate_rtcp(&buf).unwrap();
        assert_eq!(
            collect(&buf),
            vec![
                Feedback::Keyframe { media_ssrc: 10 },
                Feedback::Keyframe { media_ssrc: 11 },
                Feedback::Nack {
                    media_ssrc: 12,
                    pid: 500,
                    blp: 0b101
                },
            ]
        );
    }

    #[test]
    fn built_packets_parse_with_rtcp_crate() {
        let pkts =
            rtcp::packet::unmarshal(&mut bytes::Bytes::copy_from_slice(&build_pli(77))).unwrap();
        let pli = pkts[0]
            .as_any()
            .downcast_ref::<PictureLossIndication>()
            .unwrap();
        assert_eq!(pli.media_ssrc, 77);
        let pkts =
            rtcp::packet::unmarshal(&mut bytes::Bytes::copy_from_slice(&build_nack(5, 9, 3)))
                .unwrap();
        let n = pkts[0]
            .as_any()
            .downcast_ref::<TransportLayerNack>()
            .unwrap();
        assert_eq!(
            (n.media_ssrc, n.nacks[0].packet_id, n.nacks[0].lost_packets),
            (5, 9, 3)
        );
    }

    #[test]
    fn coalesces_within_interval() {
        let mut c = KeyframeCoalescer::new(Duration::from_millis(500));
        let t0 = Instant::now();
        assert!(c.request(t0));
        assert!(!c.request(t0 + Duration::from_millis(10)));
        assert!(!c.request(t0 + Duration::from_millis(499)));
        assert!(c.request(t0 + Duration::from_millis(501)));
        assert_eq!(c.coalesced, 2);
    }

    #[test]
    fn truncated_input_is_harmless() {
        let buf = build_nack(5, 9, 3);
        for n in 0..buf.len() {
            let _ = collect(&buf[..n]);
        }
    }
}
