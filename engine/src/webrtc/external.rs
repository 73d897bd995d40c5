//! Play sessions whose media the engine protects itself (issue 11, `docs/webrtc-inplace.md`).
//!
//! Once DTLS is up, a play session hands the engine the SRTP keys of its outgoing half
//! (RFC 5764 §4.2, exported by the patched str0m, `patches/README.md`) and, per track, the
//! SSRC, payload type and RTX stream str0m announced in the answer: [`Output::ExternalMedia`].
//! From then on the engine rewrites, protects in place and sends the player's RTP on the same
//! path as an SDES SRTP player's (GSO batches included); str0m keeps ICE, DTLS and all of
//! RTCP. What stays consistent between the two:
//!
//! * **One SRTP index per SSRC.** str0m never writes RTP for these SSRCs (`send_rtp` is
//!   refused with [`SendError::External`], no RTX padding: BWE is off), so only the engine's
//!   context advances their rollover counters.
//! * **Sender reports.** The engine reports each packet it sent ([`WebRtcSession::note_sent`],
//!   a few additions, no call into str0m); the tallies go to str0m
//!   (`StreamTx::note_sent`) right before each timeout it handles, so its SR counts
//!   packets and octets, and maps RTP time to wallclock from the last packet actually sent.
//! * **NACKs.** str0m hands them over instead of answering from its (now empty) RTX cache:
//!   [`Output::Nack`] in the player's sequence space. The engine answers from the stream's
//!   shared history with an RTX packet ([`WebRtcSession::rtx_header`], RFC 4588).

use std::num::NonZeroU32;
use std::time::Instant;

use str0m::crypto::dtls::SrtpProfile as DtlsProfile;
use str0m::media::Frequency;
use str0m::rtp::SeqNo;

use super::{MediaKind, Output, WebRtcSession};
use crate::srtp::{SrtpKeys, SrtpProfile};

/// What the engine needs to send a play session's media itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalMedia {
    /// The keys of the server → browser direction.
    pub keys: SrtpKeys,
    pub tracks: Vec<ExternalTrack>,
}

/// One track of a play session, as the engine must send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalTrack {
    /// The publisher's payload type (what the fan-out carries).
    pub src_pt: u8,
    /// The player's payload type and SSRC for it (as in the answer).
    pub pt: u8,
    pub ssrc: u32,
    /// The player's RTX payload type and SSRC, when it negotiated RTX.
    pub rtx: Option<(u8, u32)>,
    pub kind: MediaKind,
}

/// Packets sent on one track since the last report to str0m.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    packets: u64,
    bytes: u64,
    /// The last packet's sequence number, RTP time and send time.
    last: Option<(u16, u32, Instant)>,
    /// The last sequence number reported, extended (str0m's `SeqNo`).
    ext: Option<u64>,
}

/// The engine's profile for a negotiated DTLS-SRTP profile; `None` when it has no in-place
/// protect for it (the session then stays on str0m's own send path).
fn profile_of(p: DtlsProfile) -> Option<SrtpProfile> {
    match p {
        DtlsProfile::AES128_CM_SHA1_80 => Some(SrtpProfile::AesCm128HmacSha1_80),
        DtlsProfile::AEAD_AES_128_GCM => Some(SrtpProfile::AeadAes128Gcm),
        DtlsProfile::AEAD_AES_256_GCM => Some(SrtpProfile::AeadAes256Gcm),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The outgoing keys from DTLS-SRTP keying material, RFC 5764 §4.2:
/// `client_key | server_key | client_salt | server_salt`. The DTLS client (`active`) sends
/// with the client's half.
pub fn local_keys(material: &[u8], profile: SrtpProfile, active: bool) -> Option<SrtpKeys> {
    let (kl, sl) = (profile.key_len(), profile.salt_len());
    if material.len() != 2 * (kl + sl) {
        return None;
    }
    let (k, s) = if active {
        (0, 2 * kl)
    } else {
        (kl, 2 * kl + sl)
    };
    SrtpKeys::new(
        profile,
        material[k..k + kl].to_vec(),
        material[s..s + sl].to_vec(),
    )
    .ok()
}

impl WebRtcSession {
    /// On connect (Play): switch to engine-protected media if the config wants it and the
    /// negotiated profile allows it, and queue [`Output::ExternalMedia`].
    pub(super) fn try_external(&mut self) {
        if !self.in_place {
            return;
        }
        let Some((km, p, active)) = self.rtc.srtp_keying_material() else {
            return;
        };
        let Some(profile) = profile_of(p) else {
            tracing::debug!(profile = ?p, "webrtc: no in-place protect for this profile");
            return;
        };
        let Some(keys) = local_keys(km, profile, active) else {
            return;
        };
        let mut tracks = Vec::with_capacity(self.out.len());
        {
            let params = self.rtc.codec_config().params().to_vec();
            let mut api = self.rtc.direct_api();
            for t in &mut self.out {
                let Some(tx) = api.stream_tx_by_mid(t.mid, None) else {
                    return;
                };
                let rtx_pt = params
                    .iter()
                    .find(|p| p.pt() == t.pt)
                    .and_then(|p| p.resend());
                t.ssrc = *tx.ssrc();
                t.rtx = match (rtx_pt, tx.rtx()) {
                    (Some(pt), Some(ssrc)) => Some((*pt, *ssrc)),
                    _ => None,
                };
                tx.set_external_rtx(true);
                tracks.push(ExternalTrack {
                    src_pt: t.src_pt,
                    pt: *t.pt,
                    ssrc: t.ssrc,
                    rtx: t.rtx,
                    kind: t.kind,
                });
            }
        }
        self.external = true;
        self.queue
            .push_back(Output::ExternalMedia(Box::new(ExternalMedia {
                keys,
                tracks,
            })));
    }

    /// Whether the engine sends this session's media itself (after
    /// [`Output::ExternalMedia`]).
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// External media: records one RTP packet the engine sent on the track of publisher
    /// payload type `src_pt` (player-side `seq` and `timestamp`, `payload_len` payload
    /// bytes, sent at `at`). No allocation, no call into str0m.
    pub fn note_sent(
        &mut self,
        src_pt: u8,
        seq: u16,
        timestamp: u32,
        payload_len: usize,
        at: Instant,
    ) {
        if let Some(t) = self.out.iter_mut().find(|t| t.src_pt == src_pt) {
            let y = &mut t.tally;
            y.packets += 1;
            y.bytes += payload_len as u64;
            let newer = y
                .last
                .is_none_or(|(s, _, _)| (seq.wrapping_sub(s) as i16) > 0);
            if newer {
                y.last = Some((seq, timestamp, at));
            }
            self.counters.rtp_out += 1;
        }
    }

    /// External media: the RTX header fields for resending a packet of the track of
    /// publisher payload type `src_pt`: (RTX payload type, RTX SSRC, RTX sequence number).
    /// `None` without RTX on that track.
    pub fn rtx_header(&mut self, src_pt: u8) -> Option<(u8, u32, u16)> {
        let t = self.out.iter_mut().find(|t| t.src_pt == src_pt)?;
        let (pt, ssrc) = t.rtx?;
        let seq = t.rtx_seq;
        t.rtx_seq = t.rtx_seq.wrapping_add(1);
        Some((pt, ssrc, seq))
    }

    /// Hands str0m what was sent since the last call (before it handles a timeout, so its
    /// sender reports are current).
    pub(super) fn report_sent(&mut self, now: Instant) {
        if !self.external {
            return;
        }
        let mut api = self.rtc.direct_api();
        for t in &mut self.out {
            let y = &mut t.tally;
            let Some((seq, ts, at)) = y.last else {
                continue;
            };
            if y.packets == 0 {
                continue;
            }
            let ext = match y.ext {
                None => seq as u64,
                Some(e) => e.wrapping_add(seq.wrapping_sub(e as u16) as i16 as i64 as u64),
            };
            y.ext = Some(ext);
            let Some(rate) = NonZeroU32::new(t.clock_rate) else {
                continue;
            };
            if let Some(tx) = api.stream_tx_by_mid(t.mid, None) {
                tx.note_sent(
                    y.packets,
                    y.bytes,
                    SeqNo::from(ext),
                    ts,
                    at.min(now),
                    Frequency::from_nonzero(rate),
                );
            }
            y.packets = 0;
            y.bytes = 0;
        }
    }

    /// Moves the NACKs str0m collected into the output queue (one [`Output::Nack`] per
    /// sequence number).
    pub(super) fn collect_nacks(&mut self) {
        if !self.external {
            return;
        }
        let mut api = self.rtc.direct_api();
        for t in &self.out {
            if t.rtx.is_none() {
                continue;
            }
            if let Some(tx) = api.stream_tx_by_mid(t.mid, None) {
                self.nack_scratch.clear();
                tx.take_nacks(&mut self.nack_scratch);
                for &seq in &self.nack_scratch {
                    self.queue.push_back(Output::Nack {
                        payload_type: t.src_pt,
                        seq,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keying_material_halves_follow_rfc5764() {
        for p in SrtpProfile::ALL {
            let (kl, sl) = (p.key_len(), p.salt_len());
            // client_key = 1s, server_key = 2s, client_salt = 3s, server_salt = 4s
            let mut km = vec![1u8; kl];
            km.extend(vec![2u8; kl]);
            km.extend(vec![3u8; sl]);
            km.extend(vec![4u8; sl]);
            let client = local_keys(&km, p, true).unwrap();
            assert_eq!(
                (client.key.clone(), client.salt.clone()),
                (vec![1; kl], vec![3; sl])
            );
            let server = local_keys(&km, p, false).unwrap();
            assert_eq!(
                (server.key.clone(), server.salt.clone()),
                (vec![2; kl], vec![4; sl])
            );
            assert!(local_keys(&km[1..], p, true).is_none());
        }
    }
}
