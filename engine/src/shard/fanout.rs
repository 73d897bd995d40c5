//! Fan-out and send: one publisher packet to every local player (header rewritten per player,
//! SRTP protected in place in the send slot) and to the shards that have players of the stream.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::age;
use crate::api::*;
use crate::mesh::Hop;
use crate::rtp;

use super::files;
use super::ring::{ud, RawAddr, KIND_SEND};
use super::session::Session;
use super::Shard;

/// Size of a send slot's SRTP buffer: a protected packet that fits an Ethernet frame (1,472
/// bytes of UDP payload on a 1,500-byte MTU) with room to spare. Bigger packets (jumbo frames,
/// loopback) take the allocating `protect_rtp` path instead. The buffers are one slab per
/// shard (`Shard::srtp_slab`), resident only where SRTP sends have used it.
pub(super) const SRTP_SLOT_LEN: usize = 1536;
/// The largest SRTP tag of the suites we speak (AEAD_AES_128_GCM).
pub(super) const SRTP_MAX_OVERHEAD: usize = 16;

impl Shard {
    pub(super) fn fanout_remote(&mut self, stream: StreamId, pkt: &Bytes, stamp: u64) {
        let Some(ls) = self.streams.get(&stream) else {
            return;
        };
        for &d in &ls.routes {
            let hop = Hop::Media {
                stream,
                pkt: pkt.clone(),
                stamp,
            };
            if self.mesh.push(self.me, d, hop).is_err() {
                self.counters.dropped_ring_full += 1;
            } else {
                self.wake_pending[d] = true;
            }
        }
    }

    /// One packet for the stream's local players: queued for a batched (GSO) send at the end
    /// of the loop turn, or (`media.gso = false`) sent to each player now.
    pub(super) fn fanout_local(
        &mut self,
        stream: StreamId,
        pkt: &Bytes,
        h: &rtp::RtpHeader,
        stamp: u64,
    ) {
        if let Some(hist) = self
            .streams
            .get_mut(&stream)
            .and_then(|ls| ls.history.as_mut())
        {
            hist.put(pkt, h, stamp);
        }
        if self.gso {
            self.queue_fanout(stream, pkt, h, stamp);
            return;
        }
        let Some(ls) = self.streams.get_mut(&stream) else {
            return;
        };
        if ls.players.is_empty() {
            return;
        }
        self.send_at = std::time::Instant::now();
        let now = age::now_ns();
        if age::stale(now, stamp, self.cfg.max_queue.as_nanos() as u64) {
            self.counters.dropped_stale += 1;
            return;
        }
        self.counters
            .age_at_send
            .record(age::age(now, stamp), ls.players.len() as u64);
        // Iterate a copy (reused buffer, no allocation once grown) so `send_media` can borrow
        // the shard, and so a panic caught mid-way leaves the stream's player list intact.
        self.rtc_payload = None;
        let mut players = std::mem::take(&mut self.fanout_scratch);
        players.clear();
        players.extend_from_slice(&ls.players);
        for &p in &players {
            self.send_media(p, pkt, h);
        }
        self.fanout_scratch = players;
        self.rtc_payload = None;
    }

    pub(super) fn send_media(&mut self, p: usize, pkt: &Bytes, h: &rtp::RtpHeader) {
        if self.sessions[p].as_ref().is_some_and(|s| s.on_str0m_path()) {
            // str0m owns the datagrams it sends (send_bytes); no slot is needed here.
            self.send_media_rtc(p, pkt, h);
            return;
        }
        let Some(slot) = self.alloc_slot() else {
            self.counters.dropped_no_send_slot += 1;
            if let Some(s) = self.sessions[p].as_mut() {
                s.counters.lost += 1;
            }
            return;
        };
        let Some(s) = self.sessions[p].as_mut() else {
            self.free_slots.push(slot as u32);
            return;
        };
        // A player that did not ask for this payload type (e.g. audio-only) just skips it.
        let Some(li) = s.leg_for(h.payload_type) else {
            self.free_slots.push(slot as u32);
            return;
        };
        let l = &mut s.legs[li];
        let (Some(raw), Some(rw)) = (
            l.peer_raw,
            s.rewriter
                .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc),
        ) else {
            s.counters.dropped += 1;
            self.free_slots.push(slot as u32);
            return;
        };
        let sl = &mut self.slots[slot];
        let head = sl.head.first_chunk_mut::<12>().expect("16-byte head");
        rtp::write_rewritten_header(pkt, rw.seq, rw.timestamp, rw.ssrc, head);
        if let Some(&(_, to)) = l.pt_map.iter().find(|(from, _)| *from == h.payload_type) {
            head[1] = (head[1] & 0x80) | to;
        }
        let payload = &pkt[12..];
        if let Some(ctx) = l.srtp_out.as_mut() {
            // Each player has its own keys, so the packet is encrypted per player: the
            // rewritten header and the payload are copied into the slot's own buffer and
            // protected there, in place (no allocation; `engine/tests/no_alloc.rs`). The
            // kernel sends from that buffer, which stays put until the send completes.
            let len = 12 + payload.len();
            let protected = if len + SRTP_MAX_OVERHEAD <= SRTP_SLOT_LEN {
                let buf = &mut self.srtp_slab[slot * SRTP_SLOT_LEN..(slot + 1) * SRTP_SLOT_LEN];
                buf[..12].copy_from_slice(&sl.head[..12]);
                buf[12..len].copy_from_slice(payload);
                ctx.protect_rtp_in_place(buf, len)
                    .map(|n| (buf.as_mut_ptr(), n, None))
            } else {
                // Larger than a slot buffer (more than an Ethernet frame): assemble in the
                // shard's scratch buffer and send the allocated output of `protect_rtp`.
                self.scratch.clear();
                self.scratch.extend_from_slice(&sl.head[..12]);
                self.scratch.extend_from_slice(payload);
                ctx.protect_rtp(&self.scratch)
                    .map(|enc| (enc.as_ptr() as *mut u8, enc.len(), Some(enc)))
            };
            match protected {
                Ok((ptr, n, owner)) => {
                    sl.iov[0] = libc::iovec {
                        iov_base: ptr as *mut libc::c_void,
                        iov_len: n,
                    };
                    sl.hdr.msg_iovlen = 1;
                    sl.pkt = owner;
                }
                Err(_) => {
                    self.counters.dropped_srtp += 1;
                    s.counters.dropped += 1;
                    self.free_slots.push(slot as u32);
                    return;
                }
            }
        } else {
            sl.iov[0] = libc::iovec {
                iov_base: sl.head.as_mut_ptr() as *mut libc::c_void,
                iov_len: 12,
            };
            sl.iov[1] = libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            };
            sl.hdr.msg_iovlen = 2;
            sl.pkt = Some(pkt.clone());
        }
        sl.addr = raw;
        sl.addr.name_into(&mut sl.hdr);
        sl.hdr.msg_iov = sl.iov.as_mut_ptr();
        let out_len = sl.iov[..sl.hdr.msg_iovlen]
            .iter()
            .map(|v| v.iov_len)
            .sum::<usize>();
        let first = note_sent(
            Sent {
                payload_types: &mut s.payload_types,
                counters: &mut s.counters,
                active: &mut s.active,
            },
            &mut self.counters,
            h.payload_type,
            out_len,
        );
        if let Some(rtc) = s.rtc.as_mut() {
            rtc.note_sent(
                h.payload_type,
                rw.seq,
                rw.timestamp,
                payload.len(),
                self.send_at,
            );
        }
        let e = files::sendmsg(l.sock(), &sl.hdr).user_data(ud(KIND_SEND, 0, 0, slot));
        if first {
            announce_playing(&self.events, s);
        }
        self.push_sqe(e);
    }

    /// Sends a small RTCP packet (PLI/NACK) from leg `leg` of session `idx` to its peer,
    /// SRTCP-protected when the leg is encrypted.
    pub(super) fn send_control(&mut self, idx: usize, leg: usize, bytes: &[u8]) {
        let Some(slot) = self.alloc_slot() else {
            self.counters.dropped_no_send_slot += 1;
            return;
        };
        let Some(l) = self.sessions[idx]
            .as_mut()
            .and_then(|s| s.legs.get_mut(leg))
        else {
            self.free_slots.push(slot as u32);
            return;
        };
        let Some(raw) = l.peer_raw else {
            self.free_slots.push(slot as u32);
            return;
        };
        let sl = &mut self.slots[slot];
        if let Some(ctx) = l.srtp_out.as_mut() {
            match ctx.protect_rtcp(bytes) {
                Ok(enc) => {
                    sl.iov[0] = libc::iovec {
                        iov_base: enc.as_ptr() as *mut libc::c_void,
                        iov_len: enc.len(),
                    };
                    sl.pkt = Some(enc);
                }
                Err(_) => {
                    self.counters.dropped_srtp += 1;
                    self.free_slots.push(slot as u32);
                    return;
                }
            }
        } else {
            let n = bytes.len().min(sl.head.len());
            sl.head[..n].copy_from_slice(&bytes[..n]);
            sl.iov[0] = libc::iovec {
                iov_base: sl.head.as_mut_ptr() as *mut libc::c_void,
                iov_len: n,
            };
            sl.pkt = None;
        }
        sl.addr = raw;
        sl.addr.name_into(&mut sl.hdr);
        sl.hdr.msg_iov = sl.iov.as_mut_ptr();
        sl.hdr.msg_iovlen = 1;
        let e = files::sendmsg(l.sock(), &sl.hdr).user_data(ud(KIND_SEND, 0, 0, slot));
        self.push_sqe(e);
    }

    /// Sends an owned datagram (WebRTC transmits) from leg `leg` of session `idx`.
    pub(super) fn send_bytes(&mut self, idx: usize, leg: usize, to: SocketAddr, data: Bytes) {
        let Some(slot) = self.alloc_slot() else {
            self.counters.dropped_no_send_slot += 1;
            return;
        };
        let Some(l) = self.sessions[idx].as_ref().and_then(|s| s.legs.get(leg)) else {
            self.free_slots.push(slot as u32);
            return;
        };
        let sock = l.sock();
        let sl = &mut self.slots[slot];
        sl.iov[0] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        sl.pkt = Some(data);
        sl.addr = RawAddr::new(to);
        sl.addr.name_into(&mut sl.hdr);
        sl.hdr.msg_iov = sl.iov.as_mut_ptr();
        sl.hdr.msg_iovlen = 1;
        let e = files::sendmsg(sock, &sl.hdr).user_data(ud(KIND_SEND, 0, 0, slot));
        self.push_sqe(e);
    }
}

/// A player's send-side bookkeeping, borrowed apart from its legs and rewriter (which the
/// send uses at the same time).
pub(super) struct Sent<'a> {
    pub(super) payload_types: &'a mut [Option<u8>; 4],
    pub(super) counters: &'a mut SessionCounters,
    pub(super) active: &'a mut bool,
}

/// Counts one packet sent to a player; true for the player's first (it is now Playing).
pub(super) fn note_sent(s: Sent<'_>, shard: &mut ShardCounters, pt: u8, out_len: usize) -> bool {
    if let Some(free) = s
        .payload_types
        .iter_mut()
        .find(|x| x.is_none() || **x == Some(pt))
    {
        *free = Some(pt);
    }
    s.counters.packets_out += 1;
    s.counters.bytes_out += out_len as u64;
    shard.packets_out += 1;
    shard.bytes_out += out_len as u64;
    let first = !*s.active;
    *s.active = true;
    first
}

/// The Playing event of a player's first packet (its counters travel with it, once).
pub(super) fn announce_playing(events: &crossbeam_channel::Sender<Event>, s: &Session) {
    let _ = events.send(Event::Status {
        id: s.id,
        status: Status::Playing,
        info: String::new(),
        remote: s.legs.iter().find_map(|l| l.peer),
        counters: s.counters,
    });
}
