//! WebRTC players whose media the engine protects itself (`webrtc/external.rs`): switching a
//! player's leg to the SDES-SRTP send path once DTLS is up, and answering its NACKs from one
//! retransmission history per stream, shared by every such player of the shard (RFC 4588
//! RTX: the player's RTX SSRC and payload type, its original sequence number first).

use bytes::Bytes;

use crate::api::*;
use crate::rtp;
use crate::srtp::SrtpContext;
use crate::webrtc;

use super::fanout::{SRTP_MAX_OVERHEAD, SRTP_SLOT_LEN};
use super::ring::{ud, RawAddr, KIND_SEND};
use super::Shard;

/// Packets kept per stream for retransmission: about 3 s of a 2.5 Mbit/s video stream (and
/// 7 s at the ~135 packets/s of the test streams). Indexed by sequence number modulo this.
const HISTORY_LEN: usize = 1024;
/// A packet older than this since it reached the host is not resent: a browser's jitter
/// buffer has given up on it (and the media it belongs to was shown without it).
const HISTORY_MAX_AGE_NS: u64 = 1_000_000_000;

struct Entry {
    pkt: Bytes,
    h: rtp::RtpHeader,
    stamp: u64,
}

/// The last [`HISTORY_LEN`] packets of a stream (publisher's sequence numbers), for every
/// player's NACKs. Holding a packet is a reference count on the arena's bytes, no copy.
pub(super) struct RtxHistory {
    slots: Box<[Option<Entry>]>,
}

impl RtxHistory {
    pub(super) fn new() -> Self {
        Self {
            slots: (0..HISTORY_LEN).map(|_| None).collect(),
        }
    }

    pub(super) fn put(&mut self, pkt: &Bytes, h: &rtp::RtpHeader, stamp: u64) {
        self.slots[h.seq as usize % HISTORY_LEN] = Some(Entry {
            pkt: pkt.clone(),
            h: *h,
            stamp,
        });
    }

    fn get(&self, ssrc: u32, seq: u16, now: u64) -> Option<&Entry> {
        self.slots[seq as usize % HISTORY_LEN]
            .as_ref()
            .filter(|e| e.h.seq == seq && e.h.ssrc == ssrc)
            .filter(|e| now.saturating_sub(e.stamp) <= HISTORY_MAX_AGE_NS)
    }
}

impl Shard {
    /// A play session's media goes to the engine: its leg gets the DTLS-SRTP keys, the
    /// player's payload types and SSRCs, and the nominated address, so the fan-out sends to
    /// it like to an SDES SRTP player (in place, in GSO batches).
    pub(super) fn go_external(&mut self, idx: usize, m: &webrtc::ExternalMedia) {
        let Some(s) = self.sessions[idx].as_mut() else {
            return;
        };
        let ctx = match SrtpContext::new(&m.keys) {
            Ok(c) => c,
            Err(e) => {
                let id = s.id;
                self.stop_session(id, Status::Failed, format!("Failed: WebRTC SRTP keys: {e}"));
                return;
            }
        };
        let remote = s.rtc.as_ref().and_then(|r| r.remote_addr());
        let l = &mut s.legs[0];
        l.srtp_out = Some(ctx);
        l.pt_map = m.tracks.iter().map(|t| (t.src_pt, t.pt)).collect();
        l.pts = m.tracks.iter().map(|t| t.src_pt).collect();
        if let Some(r) = remote {
            l.peer = Some(r);
            l.peer_raw = Some(RawAddr::new(r));
        }
        for t in &m.tracks {
            s.rewriter.pin_ssrc(t.src_pt, t.ssrc);
        }
        tracing::debug!(
            shard = self.me,
            id = s.id,
            profile = %m.keys.profile,
            "WebRTC player: media protected in place by the engine"
        );
        let stream = s.stream;
        self.streams
            .entry(stream)
            .or_default()
            .history
            .get_or_insert_with(|| Box::new(RtxHistory::new()));
    }

    /// ICE may move a player to another address mid-session: its media follows str0m's.
    pub(super) fn follow_nominated(&mut self, idx: usize, to: std::net::SocketAddr) {
        if let Some(s) = self.sessions[idx].as_mut() {
            let l = &mut s.legs[0];
            if l.srtp_out.is_some() && l.peer != Some(to) {
                l.peer = Some(to);
                l.peer_raw = Some(RawAddr::new(to));
            }
        }
    }

    /// A WebRTC player lost packet `seq` (its own numbering) of the track carrying publisher
    /// payload type `src_pt`: resend it on RTX from the stream's history, if it is there.
    /// Each NACKed packet takes one token of the player's NACK budget (the same
    /// `nack_rate_per_player` that bounds what an RTP player may ask upstream): a lossy or
    /// hostile player cannot make the shard resend without bound.
    pub(super) fn answer_nack(&mut self, idx: usize, src_pt: u8, seq: u16) {
        let now = crate::age::now_ns();
        let rate = self.cfg.nack_rate_per_player;
        let Some(s) = self.sessions[idx].as_mut() else {
            return;
        };
        if !s.nack_budget.take(std::time::Instant::now(), rate) {
            self.counters.nacks_dropped += 1;
            return;
        }
        let found = s
            .rewriter
            .out_ssrc(src_pt)
            .and_then(|out| s.rewriter.to_source(out, seq))
            .and_then(|(ssrc, src_seq)| {
                self.streams
                    .get(&s.stream)
                    .and_then(|ls| ls.history.as_ref())
                    .and_then(|hist| hist.get(ssrc, src_seq, now))
                    .map(|e| (e.pkt.clone(), e.h))
            });
        let rtx = found
            .as_ref()
            .and_then(|_| s.rtc.as_mut().and_then(|r| r.rtx_header(src_pt)));
        let (Some((pkt, h)), Some((rtx_pt, rtx_ssrc, rtx_seq))) = (found, rtx) else {
            self.counters.nacks_unanswered += 1;
            return;
        };
        // The timestamp as this player sees it (an old packet leaves the rewriter as it is).
        let Some(rw) = s
            .rewriter
            .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc)
        else {
            self.counters.nacks_unanswered += 1;
            return;
        };
        let payload = rtp_payload(&pkt, &h);
        // RFC 4588 §4: RTX header (no padding, extension or CSRC), then the original
        // sequence number, then the original payload.
        let len = 12 + 2 + payload.len();
        if len + SRTP_MAX_OVERHEAD > SRTP_SLOT_LEN {
            self.counters.nacks_unanswered += 1;
            return;
        }
        let Some(slot) = self.alloc_slot() else {
            self.counters.dropped_no_send_slot += 1;
            return;
        };
        let Some(s) = self.sessions[idx].as_mut() else {
            self.free_slots.push(slot as u32);
            return;
        };
        let l = &mut s.legs[0];
        let (Some(ctx), Some(raw)) = (l.srtp_out.as_mut(), l.peer_raw) else {
            self.free_slots.push(slot as u32);
            return;
        };
        let buf = &mut self.srtp_slab[slot * SRTP_SLOT_LEN..(slot + 1) * SRTP_SLOT_LEN];
        buf[0] = 0x80;
        buf[1] = (pkt[1] & 0x80) | (rtx_pt & 0x7f);
        buf[2..4].copy_from_slice(&rtx_seq.to_be_bytes());
        buf[4..8].copy_from_slice(&rw.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&rtx_ssrc.to_be_bytes());
        buf[12..14].copy_from_slice(&seq.to_be_bytes());
        buf[14..len].copy_from_slice(payload);
        let n = match ctx.protect_rtp_in_place(buf, len) {
            Ok(n) => n,
            Err(_) => {
                self.counters.dropped_srtp += 1;
                self.free_slots.push(slot as u32);
                return;
            }
        };
        let sl = &mut self.slots[slot];
        sl.iov[0] = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: n,
        };
        sl.pkt = None;
        sl.addr = raw;
        sl.addr.name_into(&mut sl.hdr);
        sl.hdr.msg_iov = sl.iov.as_mut_ptr();
        sl.hdr.msg_iovlen = 1;
        s.counters.bytes_out += n as u64;
        self.counters.rtx_sent += 1;
        let e = super::files::sendmsg(l.sock(), &sl.hdr).user_data(ud(KIND_SEND, 0, 0, slot));
        self.push_sqe(e);
    }
}

/// The payload of an RTP packet: after header, CSRCs and extension, without padding.
pub(super) fn rtp_payload<'a>(pkt: &'a [u8], h: &rtp::RtpHeader) -> &'a [u8] {
    let end = if pkt[0] & 0x20 != 0 {
        pkt.len().saturating_sub(pkt[pkt.len() - 1] as usize)
    } else {
        pkt.len()
    };
    pkt.get(h.payload_offset..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ssrc: u32) -> (Bytes, rtp::RtpHeader) {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[1, 2, 3]);
        let h = rtp::parse_rtp(&p).unwrap();
        (Bytes::from(p), h)
    }

    #[test]
    fn history_answers_recent_packets_of_the_same_source_only() {
        let mut hist = RtxHistory::new();
        for seq in 0..2000u16 {
            let (p, h) = pkt(seq, 7);
            hist.put(&p, &h, 1_000 + seq as u64);
        }
        let now = 5_000;
        assert_eq!(hist.get(7, 1999, now).unwrap().h.seq, 1999);
        assert_eq!(hist.get(7, 1000, now).unwrap().h.seq, 1000);
        // Overwritten by seq 1000 + 1024k, or older than the history.
        assert!(hist.get(7, 975, now).is_none());
        assert!(hist.get(8, 1999, now).is_none(), "other SSRC");
        let late = 1_000 + 1999 + HISTORY_MAX_AGE_NS + 1;
        assert!(hist.get(7, 1999, late).is_none(), "too old");
    }

    #[test]
    fn payload_skips_padding() {
        let mut p = vec![0xa0, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7, 9, 9, 0, 0, 3];
        let h = rtp::parse_rtp(&p).unwrap();
        assert_eq!(rtp_payload(&p, &h), &[9, 9]);
        p[16] = 200;
        assert_eq!(rtp_payload(&p, &h), &[] as &[u8]);
    }
}
