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

/// A player's NACK budget: a token bucket of NACK entries (each names up to 17 packets),
/// `rate` per second with a burst of one second's worth. A player past it (a forged flood,
/// a broken client) gets its NACKs dropped and counted instead of forwarded.
#[derive(Debug, Default)]
pub struct NackBudget {
    /// Thousandths of a token.
    milli: u64,
    last: Option<Instant>,
}

impl NackBudget {
    /// Takes one token at `now`; false when the budget is spent (or `rate` is 0: NACKs off).
    pub fn take(&mut self, now: Instant, rate: u32) -> bool {
        let cap = u64::from(rate) * 1000;
        self.milli = match self.last {
            None => cap,
            Some(t) => {
                let us = now.saturating_duration_since(t).as_micros() as u64;
                (self.milli + us.saturating_mul(u64::from(rate)) / 1000).min(cap)
            }
        };
        self.last = Some(now);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Merges NACKs of one stream: a packet asked for within `window` (by any player) is not
/// asked for again, so N players losing the same packet cost the publisher one request.
#[derive(Debug)]
pub struct NackMerger {
    /// Indexed by sequence number mod 256: (SSRC, sequence number, when asked).
    asked: Box<[(u32, u16, Option<Instant>); 256]>,
    window: Duration,
}

impl NackMerger {
    pub fn new(window: Duration) -> Self {
        Self {
            asked: Box::new([(0, 0, None); 256]),
            window,
        }
    }

    /// The part of NACK (`pid`, `blp`) for `ssrc` not asked for recently, as a NACK entry
    /// to forward; None when all of it was.
    pub fn filter(&mut self, now: Instant, ssrc: u32, pid: u16, blp: u16) -> Option<(u16, u16)> {
        let mut out: Option<(u16, u16)> = None;
        for bit in 0..17u16 {
            if bit > 0 && blp & (1 << (bit - 1)) == 0 {
                continue;
            }
            let seq = pid.wrapping_add(bit);
            let slot = &mut self.asked[usize::from(seq as u8)];
            let recent = slot.0 == ssrc
                && slot.1 == seq
                && slot
                    .2
                    .is_some_and(|t| now.saturating_duration_since(t) < self.window);
            if recent {
                continue;
            }
            *slot = (ssrc, seq, Some(now));
            out = Some(match out {
                None => (seq, 0),
                // Later sequence numbers of the same entry are within 16 of the first kept.
                Some((first, mask)) => (first, mask | 1 << (seq.wrapping_sub(first) - 1)),
            });
        }
        out
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
    fn nack_budget_caps_a_flood_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = NackBudget::default();
        let sent = (0..1000).filter(|_| b.take(t0, 50)).count();
        assert_eq!(sent, 50, "one second's burst");
        assert!(!b.take(t0 + Duration::from_millis(10), 50));
        assert!(
            b.take(t0 + Duration::from_millis(21), 50),
            "one token per 20 ms"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            (0..1000).filter(|_| b.take(later, 50)).count(),
            50,
            "burst capped"
        );
        assert!(!NackBudget::default().take(t0, 0), "rate 0 = NACKs off");
    }

    #[test]
    fn nack_merger_forwards_each_lost_packet_once_per_window() {
        let t0 = Instant::now();
        let mut m = NackMerger::new(Duration::from_millis(100));
        // 10 and 12 lost (pid 10, bit 2 set).
        assert_eq!(m.filter(t0, 7, 10, 0b10), Some((10, 0b10)));
        // A second player reports the same: nothing new.
        assert_eq!(m.filter(t0, 7, 10, 0b10), None);
        // Another one reports 10, 12, 13: only 13 goes on.
        assert_eq!(m.filter(t0, 7, 10, 0b110), Some((13, 0)));
        // Another SSRC is another packet.
        assert_eq!(m.filter(t0, 8, 10, 0), Some((10, 0)));
        // After the window, a packet may be asked for again (its retransmission was lost).
        let later = t0 + Duration::from_millis(150);
        assert_eq!(m.filter(later, 7, 10, 0b10), Some((10, 0b10)));
        // Across the wrap.
        assert_eq!(m.filter(t0, 9, 65535, 0b1), Some((65535, 0b1)));
        assert_eq!(m.filter(t0, 9, 0, 0), None);
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
