//! engine::srtp::SrtpContext with keys taken from the input.
//!
//! Input: byte 0 picks the profile (bit 0: AES_CM_128_HMAC_SHA1_80 / AEAD_AES_128_GCM);
//! then key||salt (30 or 28 bytes); then operations, each `[op][len][len bytes]` (the last
//! takes what is left):
//! * op % 4 == 0: `unprotect_rtp` of the bytes as they are (forged / garbage SRTP);
//! * op % 4 == 1: `unprotect_rtcp` of the bytes as they are;
//! * op % 4 == 2: RTP round trip: protect, then unprotect on a receiver that only ever sees
//!   genuine packets, which must give back the input (or refuse a replay);
//! * op % 4 == 3: the same for RTCP.
//!
//! In both round trips bit `op >> 2` of the protected packet is also flipped and handed to a
//! third context: a tampered packet must never be accepted.
#![no_main]

use engine::srtp::{SrtpContext, SrtpError, SrtpKeys, SrtpProfile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let profile = SrtpProfile::ALL[sel as usize % SrtpProfile::ALL.len()];
    if rest.len() < profile.master_len() {
        return;
    }
    let (master, mut ops) = rest.split_at(profile.master_len());
    let (key, salt) = master.split_at(profile.key_len());
    let keys = SrtpKeys::new(profile, key.to_vec(), salt.to_vec()).expect("lengths match");
    let new = || SrtpContext::new(&keys).expect("valid keys");
    // Separate receivers: forged packets may fill a context's SSRC slots (they are taken
    // before authentication), which must not make genuine round trips fail.
    let (mut forged_rx, mut tx, mut rx, mut tamper_rx) = (new(), new(), new(), new());
    let mut sane_sender = Sender::default();

    while ops.len() >= 2 {
        let (op, len) = (ops[0], ops[1] as usize);
        let (pkt, tail) = ops[2..].split_at(len.min(ops.len() - 2));
        ops = tail;
        match op % 4 {
            0 => {
                if let Ok(plain) = forged_rx.unprotect_rtp(pkt) {
                    // Only a packet carrying a valid tag gets here: it lost exactly the tag.
                    assert_eq!(plain.len() + profile.rtp_overhead(), pkt.len());
                    assert_eq!(&plain[..12], &pkt[..12]);
                }
            }
            1 => {
                if let Ok(plain) = forged_rx.unprotect_rtcp(pkt) {
                    assert_eq!(plain.len() + profile.rtcp_overhead(), pkt.len());
                    assert_eq!(&plain[..8], &pkt[..8]);
                }
            }
            _ => {
                let rtcp = op % 4 == 3;
                let mut pkt = pkt.to_vec();
                let pkt = &mut pkt[..];
                let enc = if rtcp {
                    tx.protect_rtcp(pkt)
                } else {
                    let sent = sane_sender.renumber(pkt);
                    let enc = tx.protect_rtp(pkt);
                    if let (Some(sent), true) = (sent, enc.is_ok()) {
                        sane_sender.sent(sent);
                    }
                    enc
                };
                let Ok(enc) = enc else { continue };
                let overhead = if rtcp {
                    profile.rtcp_overhead()
                } else {
                    profile.rtp_overhead()
                };
                assert_eq!(enc.len(), pkt.len() + overhead);

                let mut bad = enc.to_vec();
                let bit = (op >> 2) as usize % (bad.len() * 8);
                bad[bit / 8] ^= 1 << (bit % 8);
                let forged = if rtcp {
                    tamper_rx.unprotect_rtcp(&bad)
                } else {
                    tamper_rx.unprotect_rtp(&bad)
                };
                assert!(forged.is_err(), "tampered packet accepted (bit {bit})");

                let dec = if rtcp {
                    rx.unprotect_rtcp(&enc)
                } else {
                    rx.unprotect_rtp(&enc)
                };
                match dec {
                    Ok(dec) => assert_eq!(&dec[..], pkt, "round trip changed the packet"),
                    // The sender may repeat (or go back to) a sequence number; SRTCP
                    // indices only grow.
                    Err(SrtpError::Replay { .. }) if !rtcp => {}
                    Err(e) => panic!("genuine packet refused: {e:?}"),
                }
            }
        }
    }
});

/// Gives round-trip RTP packets the sequence numbers of a sender that RFC 3711's index
/// estimation can follow: per SSRC, each packet is at most 2^15 - 1 ahead of the highest
/// sent and at most [`BACK`] behind it (reordering). The packet's own sequence number,
/// read as i16, is the step from the previous one. Arbitrary jumps are not such a sender:
/// a jump by about 2^15 is ambiguous to any receiver (and `webrtc-srtp`'s sender-side ROC
/// guess follows the last packet, where receivers follow the highest), so a genuine packet
/// can then fail to authenticate; the fuzzer found exactly that before this model existed.
#[derive(Default)]
struct Sender {
    /// (ssrc, last index, highest index)
    ssrcs: Vec<(u32, i64, i64)>,
}

const BACK: i64 = 100;

impl Sender {
    /// Rewrites the sequence number; returns what [`Sender::sent`] needs once it was sent.
    fn renumber(&self, pkt: &mut [u8]) -> Option<(u32, i64)> {
        if pkt.len() < 12 {
            return None;
        }
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let index = match self.ssrcs.iter().find(|s| s.0 == ssrc) {
            None => seq as i64,
            Some(&(_, last, top)) => {
                let step = (seq as i16 as i64).clamp(-BACK, 30_000);
                (last + step).clamp((top - BACK).max(0), top + 30_000)
            }
        };
        pkt[2..4].copy_from_slice(&(index as u16).to_be_bytes());
        Some((ssrc, index))
    }

    /// Records a packet as sent (a packet the sender failed to protect was never sent).
    fn sent(&mut self, (ssrc, index): (u32, i64)) {
        match self.ssrcs.iter_mut().find(|s| s.0 == ssrc) {
            None => self.ssrcs.push((ssrc, index, index)),
            Some(s) => {
                s.1 = index;
                s.2 = s.2.max(index);
            }
        }
    }
}
