//! Batched fan-out with UDP GSO. The packets of a stream that arrive in one loop turn (a
//! video frame comes as a burst) are queued on the stream; at the end of the turn each player
//! gets them as few `sendmsg` calls as `UDP_SEGMENT` allows: one per run of equal-sized
//! packets (the last may be shorter), at most 64 segments and 64 KiB. The kernel splits the
//! run into datagrams once, instead of walking the send path per packet.
//!
//! Plain RTP: the iovecs alternate each packet's rewritten 12-byte header (in the batch) and
//! its payload (the shared packet, kept alive by the batch). SRTP: each packet is protected
//! in place, back to back in the batch's own buffer, so every segment is a whole SRTP packet.
//! A socket that refuses GSO (EINVAL/EIO) gets its batch resent packet by packet and sends
//! singly from then on (counted in `gso_refused`).

use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;

use crate::age;
use crate::api::*;
use crate::rtp;

use super::fanout::SRTP_MAX_OVERHEAD;
use super::ring::{setsockopt_int, ud, RawAddr, KIND_BATCH};
use super::Shard;
use crate::mapped::MappedBytes;

/// Segments per GSO send (the kernel's UDP_MAX_SEGMENTS).
pub(super) const MAX_SEGS: usize = 64;
/// Bytes per GSO send: one UDP datagram's worth (64 KiB less the IP and UDP headers).
const MAX_BATCH_BYTES: usize = 65_000;
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// With this set the kernel refuses GSO sends with EINVAL (`udp_send_skb`).
const SO_NO_CHECK: libc::c_int = 11;

/// A packet of a stream waiting for the end of the loop turn.
pub(super) struct Pending {
    pub(super) pkt: Bytes,
    pub(super) h: rtp::RtpHeader,
    /// When it reached the host (ns, CLOCK_REALTIME).
    pub(super) stamp: u64,
}

/// Memory for one in-flight batched sendmsg; boxed, so it does not move while the kernel
/// may read it. A shard makes all of them at start with their vectors at full capacity, so
/// nothing is allocated afterwards (the SRTP buffer's pages stay untouched, so not resident,
/// until a batch needs them).
pub(super) struct BatchSlot {
    hdr: libc::msghdr,
    iov: Vec<libc::iovec>,
    heads: [[u8; 12]; MAX_SEGS],
    pkts: Vec<Bytes>,
    /// SRTP: the protected packets back to back, `buf_len` bytes of them.
    buf: MappedBytes,
    buf_len: usize,
    /// One cmsghdr carrying the u16 segment size (CMSG_SPACE(2) = 24 bytes), 8-aligned.
    cmsg: [u64; 3],
    addr: RawAddr,
    seg: usize,
    segs: usize,
    total: usize,
    srtp: bool,
    /// (session slot, generation, leg) it was sent from, for the fallback.
    owner: (usize, u32, usize),
}

impl BatchSlot {
    pub(super) fn new() -> std::io::Result<Box<Self>> {
        Ok(Box::new(Self {
            // SAFETY: a zeroed msghdr is a valid placeholder, filled before each use.
            hdr: unsafe { std::mem::zeroed() },
            iov: Vec::with_capacity(2 * MAX_SEGS),
            heads: [[0; 12]; MAX_SEGS],
            pkts: Vec::with_capacity(MAX_SEGS),
            buf: MappedBytes::zeroed(MAX_BATCH_BYTES + MAX_SEGS * SRTP_MAX_OVERHEAD)?,
            buf_len: 0,
            cmsg: [0; 3],
            addr: RawAddr::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            seg: 0,
            segs: 0,
            total: 0,
            srtp: false,
            owner: (0, 0, 0),
        }))
    }

    /// Segment `i` as (pointer, length) pairs of iovecs: one for SRTP, two for plain RTP.
    fn segment(&self, i: usize) -> &[libc::iovec] {
        if self.srtp {
            &self.iov[i..i + 1]
        } else {
            &self.iov[2 * i..2 * i + 2]
        }
    }
}

/// Whether this kernel takes UDP_SEGMENT at all (checked once per shard at start).
pub(super) fn gso_supported() -> bool {
    let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    setsockopt_int(s.as_raw_fd(), SOL_UDP, UDP_SEGMENT, 1200).is_ok()
}

pub(super) fn refuse_gso(fd: i32) -> std::io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, SO_NO_CHECK, 1)
}

impl Shard {
    /// Queues a packet for the stream's players until the end of the loop turn.
    pub(super) fn queue_fanout(
        &mut self,
        stream: StreamId,
        pkt: &Bytes,
        h: &rtp::RtpHeader,
        stamp: u64,
    ) {
        let Some(ls) = self.streams.get_mut(&stream) else {
            return;
        };
        if ls.players.is_empty() {
            return;
        }
        if ls.pending.is_empty() {
            self.dirty.push(stream);
        }
        ls.pending.push(Pending {
            pkt: pkt.clone(),
            h: *h,
            stamp,
        });
    }

    /// Sends every queued packet: stale ones are dropped, the rest go to each player in
    /// batches. Called at the end of each batch of completions and hops.
    pub(super) fn flush_fanout(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let now = age::now_ns();
        self.send_at = std::time::Instant::now();
        let max_age = self.cfg.max_queue.as_nanos() as u64;
        let mut dirty = std::mem::take(&mut self.dirty);
        for &stream in &dirty {
            let Some(ls) = self.streams.get_mut(&stream) else {
                continue;
            };
            let mut pending = std::mem::take(&mut ls.pending);
            let mut players = std::mem::take(&mut self.fanout_scratch);
            players.clear();
            players.extend_from_slice(&ls.players);
            let before = pending.len();
            pending.retain(|p| !age::stale(now, p.stamp, max_age));
            self.counters.dropped_stale += (before - pending.len()) as u64;
            for p in &pending {
                self.counters
                    .age_at_send
                    .record(age::age(now, p.stamp), players.len() as u64);
            }
            // A bug hit while sending fails the stream's publisher, not the shard.
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.send_pending(&players, &pending)
            }));
            if r.is_err() {
                let publisher = self.streams.get(&stream).and_then(|ls| ls.publisher);
                if let Some(idx) = publisher {
                    self.session_panicked(idx);
                }
            }
            pending.clear();
            if let Some(ls) = self.streams.get_mut(&stream) {
                if ls.pending.is_empty() {
                    ls.pending = pending;
                }
            }
            self.fanout_scratch = players;
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn send_pending(&mut self, players: &[usize], pending: &[Pending]) {
        let mut any_rtc = false;
        for &p in players {
            match self.sessions[p].as_ref() {
                Some(s) if s.on_str0m_path() => any_rtc = true,
                Some(_) => self.send_batched(p, pending),
                None => {}
            }
        }
        if any_rtc {
            // str0m takes packets one by one; the payload is built once per packet.
            for pd in pending {
                self.rtc_payload = None;
                for &p in players {
                    if self.sessions[p].as_ref().is_some_and(|s| s.on_str0m_path()) {
                        self.send_media_rtc(p, &pd.pkt, &pd.h);
                    }
                }
            }
            self.rtc_payload = None;
        }
    }

    /// One player's share of the queued packets, leg by leg, as runs GSO can carry.
    fn send_batched(&mut self, p: usize, pending: &[Pending]) {
        let Some(s) = self.sessions[p].as_ref() else {
            return;
        };
        let n_legs = s.legs.len();
        let mut run = std::mem::take(&mut self.run_scratch);
        for li in 0..n_legs {
            let Some(s) = self.sessions[p].as_ref() else {
                break;
            };
            let l = &s.legs[li];
            let single = l.gso_off;
            let overhead = if l.srtp_out.is_some() {
                SRTP_MAX_OVERHEAD
            } else {
                0
            };
            run.clear();
            let (mut seg_in, mut short, mut bytes) = (0usize, false, 0usize);
            for (k, pd) in pending.iter().enumerate() {
                let Some(s) = self.sessions[p].as_ref() else {
                    break;
                };
                if s.leg_for(pd.h.payload_type) != Some(li) {
                    continue;
                }
                let len = pd.pkt.len();
                let fits = !single
                    && !short
                    && len <= seg_in
                    && run.len() < MAX_SEGS
                    && bytes + len + overhead <= MAX_BATCH_BYTES;
                if !run.is_empty() && !fits {
                    self.send_run(p, li, &run, pending);
                    run.clear();
                    (short, bytes) = (false, 0);
                }
                if run.is_empty() {
                    seg_in = len;
                } else if len < seg_in {
                    short = true;
                }
                run.push(k);
                bytes += len + overhead;
            }
            if !run.is_empty() {
                self.send_run(p, li, &run, pending);
            }
        }
        run.clear();
        self.run_scratch = run;
    }

    /// Sends `run` (indices into `pending`, equal sizes but the last) to leg `li` of player
    /// `p`: one GSO sendmsg, or the single-packet path for a run of one.
    fn send_run(&mut self, p: usize, li: usize, run: &[usize], pending: &[Pending]) {
        if run.len() == 1 {
            let pd = &pending[run[0]];
            self.send_media(p, &pd.pkt, &pd.h);
            return;
        }
        let Some(bi) = self.alloc_batch() else {
            for &k in run {
                self.send_media(p, &pending[k].pkt, &pending[k].h);
            }
            return;
        };
        let Some(s) = self.sessions[p].as_mut() else {
            self.free_batches.push(bi as u32);
            return;
        };
        let b = &mut *self.batches[bi];
        let l = &mut s.legs[li];
        let Some(raw) = l.peer_raw else {
            self.free_batches.push(bi as u32);
            return;
        };
        b.iov.clear();
        b.pkts.clear();
        b.buf_len = 0;
        b.srtp = l.srtp_out.is_some();
        let (mut n, mut seg, mut total) = (0usize, 0usize, 0usize);
        let mut first = false;
        for &k in run {
            let pd = &pending[k];
            let h = &pd.h;
            let Some(rw) = s
                .rewriter
                .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc)
            else {
                s.counters.dropped += 1;
                continue;
            };
            let head = &mut b.heads[n];
            rtp::write_rewritten_header(&pd.pkt, rw.seq, rw.timestamp, rw.ssrc, head);
            if let Some(&(_, to)) = l.pt_map.iter().find(|(from, _)| *from == h.payload_type) {
                head[1] = (head[1] & 0x80) | to;
            }
            let payload = &pd.pkt[12..];
            let out = if let Some(ctx) = l.srtp_out.as_mut() {
                // Fits: a run's bytes are bounded by MAX_BATCH_BYTES, tags included.
                let (off, len) = (b.buf_len, 12 + payload.len());
                let room = &mut b.buf[off..off + len + SRTP_MAX_OVERHEAD];
                room[..12].copy_from_slice(head);
                room[12..len].copy_from_slice(payload);
                match ctx.protect_rtp_in_place(room, len) {
                    Ok(m) => {
                        b.buf_len = off + m;
                        m
                    }
                    Err(_) => {
                        self.counters.dropped_srtp += 1;
                        s.counters.dropped += 1;
                        continue;
                    }
                }
            } else {
                b.iov.push(libc::iovec {
                    iov_base: head.as_mut_ptr() as *mut libc::c_void,
                    iov_len: 12,
                });
                b.iov.push(libc::iovec {
                    iov_base: payload.as_ptr() as *mut libc::c_void,
                    iov_len: payload.len(),
                });
                b.pkts.push(pd.pkt.clone());
                12 + payload.len()
            };
            if n == 0 {
                seg = out;
            }
            n += 1;
            total += out;
            let sent = super::fanout::Sent {
                payload_types: &mut s.payload_types,
                counters: &mut s.counters,
                active: &mut s.active,
            };
            first |= super::fanout::note_sent(sent, &mut self.counters, h.payload_type, out);
            if let Some(rtc) = s.rtc.as_mut() {
                rtc.note_sent(
                    h.payload_type,
                    rw.seq,
                    rw.timestamp,
                    payload.len(),
                    self.send_at,
                );
            }
        }
        if n == 0 {
            self.free_batches.push(bi as u32);
            return;
        }
        if b.srtp {
            // One iovec per segment, so a fallback can resend them one by one.
            let base = b.buf.as_mut_ptr();
            for i in 0..n {
                let off = i * seg;
                b.iov.push(libc::iovec {
                    // SAFETY: off < total <= buf.len().
                    iov_base: unsafe { base.add(off) } as *mut libc::c_void,
                    iov_len: seg.min(total - off),
                });
            }
        }
        (b.seg, b.segs, b.total) = (seg, n, total);
        b.owner = (p, s.gen, li);
        b.addr = raw;
        b.addr.name_into(&mut b.hdr);
        b.hdr.msg_iov = b.iov.as_mut_ptr();
        b.hdr.msg_iovlen = b.iov.len();
        if n > 1 {
            // SAFETY: cmsg is 24 bytes, 8-aligned: room for one header and a u16.
            unsafe {
                let c = b.cmsg.as_mut_ptr() as *mut libc::cmsghdr;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg as u16);
            }
            b.hdr.msg_control = b.cmsg.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: a pure size computation.
            b.hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            self.counters.gso_batches += 1;
            self.counters.gso_segments += n as u64;
        } else {
            b.hdr.msg_control = std::ptr::null_mut();
            b.hdr.msg_controllen = 0;
        }
        let e = super::files::sendmsg(l.sock(), &b.hdr).user_data(ud(KIND_BATCH, 0, 0, bi));
        if first {
            super::fanout::announce_playing(&self.events, s);
        }
        self.push_sqe(e);
    }

    fn alloc_batch(&mut self) -> Option<usize> {
        if let Some(i) = self.free_batches.pop() {
            return Some(i as usize);
        }
        // All in flight: the kernel finishes UDP sends at submit, so reaping frees them.
        self.reap_sends();
        self.free_batches.pop().map(|i| i as usize)
    }

    /// A batched send completed. A socket that refused GSO gets the batch resent packet by
    /// packet (nothing is lost) and sends singly from then on.
    pub(super) fn finish_batch(&mut self, bi: usize, res: i32) {
        let refused = res == -libc::EINVAL || res == -libc::EIO;
        if refused && self.batches[bi].segs > 1 {
            let (p, gen, li) = self.batches[bi].owner;
            let live = self.sessions[p]
                .as_mut()
                .filter(|s| s.gen == gen && !s.closing);
            if let Some(s) = live {
                let l = &mut s.legs[li];
                // Batches already in flight come back refused too; the socket counts once.
                if !l.gso_off {
                    l.gso_off = true;
                    self.counters.gso_refused += 1;
                    tracing::info!(
                        shard = self.me,
                        id = s.id,
                        err = -res,
                        "socket refused GSO; sending packet by packet"
                    );
                }
                let fd = l.socket.as_raw_fd();
                let b = &mut *self.batches[bi];
                for i in 0..b.segs {
                    // SAFETY: zeroed msghdr filled with pointers into the live batch.
                    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                    b.addr.name_into(&mut h);
                    let iov = b.segment(i);
                    h.msg_iov = iov.as_ptr() as *mut libc::iovec;
                    h.msg_iovlen = iov.len();
                    // A rare path (once per refusing socket), so a direct syscall is fine.
                    // SAFETY: fd is the leg's live socket; h points into the batch.
                    if unsafe { libc::sendmsg(fd, &h, 0) } < 0 {
                        self.counters.send_errors += 1;
                    }
                }
            }
        } else if res < 0 {
            self.counters.send_errors += 1;
        }
        let b = &mut *self.batches[bi];
        b.pkts.clear();
        b.total = 0;
        self.free_batches.push(bi as u32);
    }
}
