//! The shard's io_uring: request encoding, multishot receives into the provided-buffer ring,
//! send slots, and the completion queue's dispatch.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types};

use super::Shard;

pub(super) const BGID: u16 = 1;
pub(super) const KIND_RECV: u64 = 1;
pub(super) const KIND_SEND: u64 = 2;
pub(super) const KIND_WAKE: u64 = 3;
pub(super) const KIND_CANCEL: u64 = 4;

/// user_data layout: kind (8 bits) | leg (8) | generation (16) | slot index (32).
pub(super) fn ud(kind: u64, gen: u32, leg: usize, idx: usize) -> u64 {
    (kind << 56) | ((leg as u64 & 0xff) << 48) | ((gen as u64 & 0xffff) << 32) | idx as u64
}

pub(super) fn ud_parts(u: u64) -> (u64, u32, usize, usize) {
    (
        u >> 56,
        ((u >> 32) & 0xffff) as u32,
        ((u >> 48) & 0xff) as usize,
        (u & 0xffff_ffff) as usize,
    )
}

/// A sockaddr in the form sendmsg wants, prepared once per peer.
#[derive(Clone, Copy)]
pub(super) struct RawAddr {
    pub(super) storage: libc::sockaddr_in6,
    pub(super) len: libc::socklen_t,
}

impl RawAddr {
    pub(super) fn new(a: SocketAddr) -> Self {
        // SAFETY: all-zero is a valid sockaddr_in6 / sockaddr_in.
        let mut storage: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let len = match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_in fits in sockaddr_in6.
                unsafe {
                    std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin);
                }
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                storage.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                storage.sin6_port = v6.port().to_be();
                storage.sin6_addr.s6_addr = v6.ip().octets();
                storage.sin6_flowinfo = v6.flowinfo();
                storage.sin6_scope_id = v6.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        Self {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

/// Decodes the source address the kernel wrote into a multishot RecvMsg buffer.
pub(super) fn parse_name(name: &[u8]) -> Option<SocketAddr> {
    if name.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([name[0], name[1]]) as i32;
    if family == libc::AF_INET && name.len() >= 8 {
        let port = u16::from_be_bytes([name[2], name[3]]);
        let ip = Ipv4Addr::new(name[4], name[5], name[6], name[7]);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    } else if family == libc::AF_INET6 && name.len() >= 24 {
        let port = u16::from_be_bytes([name[2], name[3]]);
        let mut o = [0u8; 16];
        o.copy_from_slice(&name[8..24]);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(o),
            port,
            0,
            0,
        )))
    } else {
        None
    }
}

/// Memory for one in-flight SendMsg; must not move while the kernel may read it.
pub(super) struct SendSlot {
    pub(super) hdr: libc::msghdr,
    pub(super) iov: [libc::iovec; 2],
    pub(super) addr: RawAddr,
    pub(super) head: [u8; 16],
    pub(super) pkt: Option<Bytes>,
    /// SRTP players: the packet is protected in place here (header, payload, tag) and sent
    /// from here. Allocated the first time this slot carries an SRTP packet and kept for the
    /// shard's life (at most `send_slots` allocations per shard, none per packet; plain-RTP
    /// shards never allocate them, and only slots actually used cost memory).
    pub(super) srtp_buf: Option<Box<[u8]>>,
}

impl Shard {
    pub(super) fn push_sqe(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every SQE we build points into memory owned by the shard (slots,
            // recv_hdr, wake_buf) that outlives the request.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            if let Err(err) = self.ring.submit() {
                tracing::warn!(shard = self.me, %err, "io_uring submit failed");
            }
        }
    }

    pub(super) fn arm_wake(&mut self) {
        let fd = self.mesh.wakers[self.me].fd();
        let e = opcode::Read::new(types::Fd(fd), &mut *self.wake_buf as *mut u64 as *mut u8, 8)
            .build()
            .user_data(ud(KIND_WAKE, 0, 0, 0));
        self.push_sqe(e);
    }

    pub(super) fn arm_recv(&mut self, idx: usize, leg: usize) {
        let Some(s) = self.sessions[idx].as_mut() else {
            return;
        };
        let gen = s.gen;
        let Some(l) = s.legs.get_mut(leg) else {
            return;
        };
        l.recv_armed = true;
        let e = opcode::RecvMsgMulti::new(
            types::Fd(l.socket.as_raw_fd()),
            &*self.recv_hdr as *const libc::msghdr,
            BGID,
        )
        .build()
        .user_data(ud(KIND_RECV, gen, leg, idx));
        self.push_sqe(e);
    }

    pub(super) fn process_completions(&mut self) -> bool {
        let mut any = false;
        loop {
            std::mem::swap(&mut self.cqes, &mut self.deferred);
            {
                let mut cq = self.ring.completion();
                cq.sync();
                for cqe in &mut cq {
                    self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
                }
            }
            if self.cqes.is_empty() {
                return any;
            }
            // Datagrams in this batch may have been sent in reaction to a REST reply; the
            // commands control queued before that reply must take effect first.
            self.drain_commands();
            any = true;
            let batch = std::mem::take(&mut self.cqes);
            for &(u, res, flags) in &batch {
                self.handle_cqe(u, res, flags);
            }
            self.cqes = batch;
            self.cqes.clear();
            if self.deferred.is_empty() {
                // One more pass only if the kernel produced more meanwhile.
                if self.ring.completion().is_empty() {
                    return any;
                }
            }
        }
    }

    /// Frees send slots from completions without handling receives (those are deferred), so a
    /// burst of fan-out can recycle slots mid-way.
    pub(super) fn reap_sends(&mut self) {
        if let Err(err) = self.ring.submit() {
            tracing::warn!(shard = self.me, %err, "io_uring submit failed");
        }
        let mut cq = self.ring.completion();
        cq.sync();
        let mut freed = Vec::new();
        std::mem::swap(&mut freed, &mut self.cqes);
        for cqe in &mut cq {
            let (kind, _, _, idx) = ud_parts(cqe.user_data());
            if kind == KIND_SEND {
                freed.push((idx as u64, cqe.result(), 0));
            } else {
                self.deferred
                    .push((cqe.user_data(), cqe.result(), cqe.flags()));
            }
        }
        drop(cq);
        for &(idx, res, _) in &freed {
            self.finish_send(idx as usize, res);
        }
        freed.clear();
        self.cqes = freed;
    }

    pub(super) fn finish_send(&mut self, idx: usize, res: i32) {
        self.slots[idx].pkt = None;
        self.free_slots.push(idx as u32);
        if res < 0 {
            self.counters.send_errors += 1;
        }
    }

    pub(super) fn handle_cqe(&mut self, u: u64, res: i32, flags: u32) {
        let (kind, gen, leg, idx) = ud_parts(u);
        match kind {
            KIND_SEND => self.finish_send(idx, res),
            KIND_WAKE => self.arm_wake(),
            KIND_RECV => self.handle_recv(gen, leg, idx, res, flags),
            KIND_CANCEL => {}
            _ => {}
        }
    }

    pub(super) fn handle_recv(&mut self, gen: u32, leg: usize, idx: usize, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        if res >= 0 {
            if let Some(bid) = bid {
                // SAFETY: bid comes from this completion and is recycled below.
                let buf = unsafe { self.bufs.get(bid, res as usize) };
                let live =
                    matches!(&self.sessions.get(idx), Some(Some(s)) if s.gen == gen && !s.closing);
                if live {
                    if let Ok(out) = types::RecvMsgOut::parse(buf, &self.recv_hdr) {
                        if out.is_payload_truncated() {
                            self.counters.dropped_malformed += 1;
                        } else {
                            let src = parse_name(out.name_data());
                            let data = out.payload_data();
                            // A bug hit by one session's packet fails that session, not the
                            // shard (and with it every other session on this core).
                            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                self.handle_datagram(idx, leg, src, data)
                            }));
                            if r.is_err() {
                                self.session_panicked(idx);
                            }
                        }
                    }
                }
                self.bufs.recycle(bid);
            }
        }
        if !cqueue::more(flags) {
            let Some(Some(s)) = self.sessions.get_mut(idx) else {
                return;
            };
            if s.gen != gen {
                return;
            }
            if let Some(l) = s.legs.get_mut(leg) {
                l.recv_armed = false;
            }
            if s.closing {
                if s.legs.iter().all(|l| !l.recv_armed) {
                    self.finalize(idx);
                }
            } else {
                // ENOBUFS (pool momentarily empty) or a transient error ends multishot.
                self.counters.recv_rearms += 1;
                self.arm_recv(idx, leg);
            }
        }
    }

    pub(super) fn alloc_slot(&mut self) -> Option<usize> {
        if self.free_slots.is_empty() {
            self.reap_sends();
        }
        self.free_slots.pop().map(|i| i as usize)
    }
}
