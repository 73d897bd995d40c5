//! A datagram's way in: source latching (comedia), SRTP unprotect, validation, loss counting,
//! parameter-set caching, then fan-out.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::age;
use crate::api::*;
use crate::h264;
use crate::rtp;

use super::ring::RawAddr;
use super::session::{Leg, Session};
use super::Shard;

impl Shard {
    pub(super) fn handle_datagram(
        &mut self,
        idx: usize,
        leg: usize,
        src: Option<SocketAddr>,
        data: &[u8],
    ) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        let s = self.sessions[idx].as_mut().expect("live session");
        if s.fault {
            s.fault = false;
            panic!("injected fault in session {}", s.id);
        }
        if s.rtc.is_some() {
            s.counters.packets_in += 1;
            if let Some(src) = src {
                self.rtc_datagram(idx, leg, src, data);
            }
            return;
        }
        let Some(l) = s.legs.get_mut(leg) else {
            return;
        };
        let Some(src) = src else {
            self.counters.dropped_unknown_source += 1;
            return;
        };
        let rtcp = rtp::is_rtcp(data);
        match l.peer {
            Some(p) if p == src => {}
            // Comedia: the first RTP packet decides who the publisher is (for SRTP, only
            // once it authenticates, so a forged packet cannot hijack the leg).
            // With a known source address only that host may be latched.
            None if s.role == Role::Publisher
                && !rtcp
                && l.source_ip.is_none_or(|ip| ip == src.ip().to_canonical())
                && rtp::parse_rtp(data).is_ok() => {}
            _ => {
                self.counters.dropped_unknown_source += 1;
                s.counters.dropped += 1;
                return;
            }
        }
        if rtcp {
            let plain;
            let data: &[u8] = match l.srtp_in.as_mut() {
                Some(ctx) => match ctx.unprotect_rtcp(data) {
                    Ok(p) => {
                        plain = p;
                        &plain
                    }
                    Err(_) => {
                        self.counters.dropped_srtp += 1;
                        s.counters.dropped += 1;
                        return;
                    }
                },
                None => data,
            };
            s.counters.packets_in += 1;
            s.counters.bytes_in += data.len() as u64;
            if rtp::validate_rtcp(data).is_err() {
                self.counters.dropped_malformed += 1;
                s.counters.dropped += 1;
                return;
            }
            s.counters.rtcp_in += 1;
            if s.role == Role::Player {
                self.handle_player_rtcp(idx, data);
            }
            return;
        }
        if s.role == Role::Player {
            // Players only send RTCP.
            s.counters.packets_in += 1;
            self.counters.dropped_malformed += 1;
            s.counters.dropped += 1;
            return;
        }
        // SRTP: the library hands back the decrypted packet as its own `Bytes`, which is
        // forwarded as is. Plain RTP is validated first, then copied once into the arena.
        let (pkt, h) = match l.srtp_in.as_mut() {
            Some(ctx) => {
                let Ok(p) = ctx.unprotect_rtp(data) else {
                    self.counters.dropped_srtp += 1;
                    s.counters.dropped += 1;
                    return;
                };
                match rtp::parse_rtp(&p) {
                    Ok(h) => (p, h),
                    Err(_) => {
                        self.counters.dropped_malformed += 1;
                        s.counters.dropped += 1;
                        return;
                    }
                }
            }
            None => match rtp::parse_rtp(data) {
                Ok(h) => {
                    let p = self.arena.copy(data);
                    self.counters.arena_grows = self.arena.grows;
                    (p, h)
                }
                Err(_) => {
                    self.counters.dropped_malformed += 1;
                    s.counters.dropped += 1;
                    return;
                }
            },
        };
        if l.peer.is_none() {
            l.peer = Some(src);
            l.peer_raw = Some(RawAddr::new(src));
        }
        s.counters.bytes_in += data.len() as u64;
        let stamp = self.rx_stamp;
        self.publisher_rtp(idx, leg, pkt, h, src, stamp);
    }

    /// A publisher's media packet, plain RTP whatever it arrived as (SRTP already decrypted,
    /// so the rollover counter stays in step even when the packet is then dropped as stale):
    /// cache what late players need, count, and fan out unless it waited too long.
    pub(super) fn publisher_rtp(
        &mut self,
        idx: usize,
        leg: usize,
        pkt: Bytes,
        h: rtp::RtpHeader,
        src: SocketAddr,
        stamp: u64,
    ) {
        let s = self.sessions[idx].as_mut().expect("live session");
        let l = &mut s.legs[leg];
        l.last_ssrc = Some(h.ssrc);
        if l.h264.contains(&h.payload_type) {
            let payload = pkt.get(h.payload_offset..).unwrap_or_default();
            if h264::may_have_param_sets(payload) && cache_param_sets(l, payload) {
                let _ = self.events.send(Event::ParamSets {
                    id: s.id,
                    sps: l.sps.clone(),
                    pps: l.pps.clone(),
                });
            }
        }
        s.counters.packets_in += 1;
        // A vDSO clock read per publisher packet (not per player): the media deadline.
        s.last_media = Instant::now();
        track_loss(s, &h);
        let now = age::now_ns();
        let max_queue = self.cfg.max_queue.as_nanos() as u64;
        if max_queue > 0 {
            if let Some(bytes) = size_recv_buffer(&mut s.legs[leg], pkt.len(), now, max_queue) {
                self.counters.recv_buffer_resizes += 1;
                tracing::debug!(
                    shard = self.me,
                    id = s.id,
                    bytes,
                    "publisher receive buffer sized to its rate"
                );
            }
        }
        let stream = s.stream;
        if !s.active {
            s.active = true;
            let _ = self.events.send(Event::Status {
                id: s.id,
                status: Status::Publishing,
                info: String::new(),
                remote: Some(src),
                counters: s.counters,
            });
        }
        if age::stale(now, stamp, max_queue) {
            self.counters.dropped_stale += 1;
            return;
        }
        self.fanout_local(stream, &pkt, &h, stamp);
        self.fanout_remote(stream, &pkt, stamp);
    }
}

/// Measures a publisher leg's rate over ~1 s windows and sets its socket's receive buffer to
/// hold `max_queue` of it (see [`age::recv_buffer_for`]): a syscall only when the size
/// changes by more than a quarter, at most once a second. Returns the new size when set.
fn size_recv_buffer(l: &mut Leg, len: usize, now: u64, max_queue: u64) -> Option<usize> {
    if l.rate.0 == 0 {
        l.rate = (now, 0);
    }
    l.rate.1 += len as u64;
    let elapsed = now.saturating_sub(l.rate.0);
    if elapsed < 1_000_000_000 {
        return None;
    }
    let bps = (l.rate.1 as u128 * 1_000_000_000 / elapsed as u128) as u64;
    l.rate = (now, 0);
    let want = age::recv_buffer_for(bps, max_queue);
    if l.rcvbuf != 0 && want.abs_diff(l.rcvbuf) <= l.rcvbuf / 4 {
        return None;
    }
    let r = socket2::SockRef::from(&l.socket).set_recv_buffer_size(want);
    l.rcvbuf = want;
    r.ok().map(|()| want)
}

fn track_loss(s: &mut Session, h: &rtp::RtpHeader) {
    if let Some(free) = s
        .payload_types
        .iter_mut()
        .find(|x| x.is_none() || **x == Some(h.payload_type))
    {
        *free = Some(h.payload_type);
    }
    let Some(slot) = s
        .highest
        .iter_mut()
        .find(|(pt, _, used)| !*used || *pt == h.payload_type)
    else {
        return;
    };
    if !slot.2 {
        *slot = (h.payload_type, h.seq, true);
        return;
    }
    let delta = h.seq.wrapping_sub(slot.1) as i16;
    if delta > 0 {
        if delta > 1 && delta < 3000 {
            s.counters.lost += (delta - 1) as u64;
        }
        slot.1 = h.seq;
    }
}

/// Updates a publisher leg's cached SPS/PPS from an H264 payload. Returns true when the pair
/// is complete and changed (allocates only then, not per packet).
fn cache_param_sets(l: &mut Leg, payload: &[u8]) -> bool {
    let mut changed = false;
    h264::for_each_param_set(payload, |t, nal| {
        let slot = if t == h264::NAL_SPS {
            &mut l.sps
        } else {
            &mut l.pps
        };
        if slot.as_slice() != nal {
            slot.clear();
            slot.extend_from_slice(nal);
            changed = true;
        }
    });
    changed && !l.sps.is_empty() && !l.pps.is_empty()
}
