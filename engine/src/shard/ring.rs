//! The shard's io_uring: request encoding, multishot receives into the provided-buffer ring,
//! send slots, and the completion queue's dispatch.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types};

use super::Shard;

pub(super) const BGID: u16 = 1;
/// Buffers big enough for a UDP GRO datagram (up to 64 segments, 64 KiB) of a publisher.
pub(super) const BGID_GRO: u16 = 2;
pub(super) const GRO_BUF_SIZE: usize = 65_536 + 512;
pub(super) const KIND_RECV: u64 = 1;
pub(super) const KIND_SEND: u64 = 2;
pub(super) const KIND_WAKE: u64 = 3;
pub(super) const KIND_CANCEL: u64 = 4;
pub(super) const KIND_BATCH: u64 = 5;
/// A receive on a publisher socket with UDP GRO (its buffers come from `BGID_GRO`).
pub(super) const KIND_RECV_GRO: u64 = 6;

const SO_TIMESTAMPNS: libc::c_int = 35;
const SO_RXQ_OVFL: libc::c_int = 40;
const UDP_GRO: libc::c_int = 104;
/// Room for the control messages a publisher socket gets: the arrival time (timespec), the
/// socket's drop count (u32) and the GRO segment size (int): CMSG_SPACE(16) + 2 CMSG_SPACE(4).
pub(super) const RECV_CONTROL_LEN: u32 = 32 + 24 + 24;

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
    /// A leg whose socket is connected to its peer: sendmsg then goes without a name, and the
    /// kernel uses the socket's cached route instead of a route lookup per send (about 12% of
    /// a loopback send's kernel cost, measured side by side).
    pub(super) fn connected() -> Self {
        Self {
            // SAFETY: all-zero is a valid sockaddr_in6.
            storage: unsafe { std::mem::zeroed() },
            len: 0,
        }
    }

    /// Points `hdr`'s destination at this address (none for a connected socket). `self` must
    /// stay put while the kernel may read `hdr`.
    pub(super) fn name_into(&mut self, hdr: &mut libc::msghdr) {
        if self.len == 0 {
            hdr.msg_name = std::ptr::null_mut();
        } else {
            hdr.msg_name = &mut self.storage as *mut _ as *mut libc::c_void;
        }
        hdr.msg_namelen = self.len;
    }

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

/// An int socket option that socket2 does not wrap (UDP_SEGMENT, SO_NO_CHECK, SO_TIMESTAMPNS,
/// SO_RXQ_OVFL).
pub(super) fn setsockopt_int(fd: i32, level: i32, name: i32, v: i32) -> std::io::Result<()> {
    // SAFETY: fd is a live socket; the option value is an int on the stack.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
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
        let (kind, group) = if l.gro {
            (KIND_RECV_GRO, BGID_GRO)
        } else {
            (KIND_RECV, BGID)
        };
        let e = super::files::recvmsg_multi(l.sock(), &*self.recv_hdr, group)
            .user_data(ud(kind, gen, leg, idx));
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
            // What this batch of datagrams queued goes out now, in batches per player.
            self.flush_fanout();
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
            if kind == KIND_SEND || kind == KIND_BATCH {
                freed.push((idx as u64, cqe.result(), kind as u32));
            } else {
                self.deferred
                    .push((cqe.user_data(), cqe.result(), cqe.flags()));
            }
        }
        drop(cq);
        for &(idx, res, kind) in &freed {
            if kind as u64 == KIND_BATCH {
                self.finish_batch(idx as usize, res);
            } else {
                self.finish_send(idx as usize, res);
            }
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
            KIND_BATCH => self.finish_batch(idx, res),
            KIND_WAKE => self.arm_wake(),
            KIND_RECV => self.handle_recv(gen, leg, idx, res, flags, false),
            KIND_RECV_GRO => self.handle_recv(gen, leg, idx, res, flags, true),
            KIND_CANCEL => {}
            _ => {}
        }
    }

    pub(super) fn handle_recv(
        &mut self,
        gen: u32,
        leg: usize,
        idx: usize,
        res: i32,
        flags: u32,
        gro: bool,
    ) {
        let bid = cqueue::buffer_select(flags);
        if res >= 0 {
            if let Some(bid) = bid {
                // SAFETY: bid comes from this completion and is recycled below.
                let buf = unsafe { self.recv_bufs(gro).get(bid, res as usize) };
                let live =
                    matches!(&self.sessions.get(idx), Some(Some(s)) if s.gen == gen && !s.closing);
                if live {
                    if let Ok(out) = types::RecvMsgOut::parse(buf, &self.recv_hdr) {
                        if out.is_payload_truncated() {
                            self.counters.dropped_malformed += 1;
                        } else {
                            let src = parse_name(out.name_data());
                            let data = out.payload_data();
                            let (stamp, seg) = self.note_control(idx, leg, out.control_data());
                            self.rx_stamp = stamp;
                            // A GRO datagram is `seg`-byte datagrams back to back (the last
                            // may be shorter), each handled as if it came alone.
                            // (An empty datagram is one datagram too: dropped, counted.)
                            let coalesced = seg > 0 && data.len() > seg;
                            if coalesced {
                                self.counters.gro_datagrams += 1;
                            }
                            // A bug hit by one session's packet fails that session, not the
                            // shard (and with it every other session on this core).
                            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                if coalesced {
                                    for d in data.chunks(seg) {
                                        self.handle_datagram(idx, leg, src, d)
                                    }
                                } else {
                                    self.handle_datagram(idx, leg, src, data)
                                }
                            }));
                            self.rx_stamp = 0;
                            if r.is_err() {
                                self.session_panicked(idx);
                            }
                        }
                    }
                }
                self.recv_bufs(gro).recycle(bid);
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

    /// The buffer ring a receive of this kind draws from (GRO receives: the 64 KiB ring).
    fn recv_bufs(&mut self, gro: bool) -> &mut crate::bufring::BufRing {
        match (gro, self.gro_bufs.as_mut()) {
            (true, Some(r)) => r,
            _ => &mut self.bufs,
        }
    }

    /// Reads a publisher datagram's control messages: returns its arrival time (the kernel's
    /// stamp, else now) and its GRO segment size (0: a single datagram), and counts what the
    /// kernel dropped on the socket since the last one.
    fn note_control(&mut self, idx: usize, leg: usize, control: &[u8]) -> (u64, usize) {
        let mut stamp = None;
        let mut seg = 0;
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut off = 0;
        while off + hdr <= control.len() {
            // SAFETY: bounds checked above; read unaligned from the kernel's bytes.
            let c: libc::cmsghdr =
                unsafe { std::ptr::read_unaligned(control[off..].as_ptr() as *const _) };
            let len = c.cmsg_len as usize;
            if len < hdr || off + len > control.len() {
                break;
            }
            let data = &control[off + hdr..off + len];
            if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == UDP_GRO && data.len() >= 4 {
                seg = i32::from_ne_bytes(data[..4].try_into().expect("4 bytes")).max(0) as usize;
            } else if c.cmsg_level == libc::SOL_SOCKET {
                if c.cmsg_type == SO_TIMESTAMPNS && data.len() >= 16 {
                    let sec = u64::from_ne_bytes(data[..8].try_into().expect("8 bytes"));
                    let nsec = u64::from_ne_bytes(data[8..16].try_into().expect("8 bytes"));
                    stamp = Some(sec * 1_000_000_000 + nsec);
                } else if c.cmsg_type == SO_RXQ_OVFL && data.len() >= 4 {
                    let drops = u32::from_ne_bytes(data[..4].try_into().expect("4 bytes"));
                    if let Some(l) = self.sessions[idx]
                        .as_mut()
                        .and_then(|s| s.legs.get_mut(leg))
                    {
                        let new = drops.wrapping_sub(l.kernel_drops);
                        l.kernel_drops = drops;
                        self.counters.dropped_socket_overflow += new as u64;
                    }
                }
            }
            // CMSG_ALIGN: the next header starts 8-aligned.
            off += (len + 7) & !7;
        }
        (stamp.unwrap_or_else(crate::age::now_ns), seg)
    }

    /// Asks the kernel to coalesce a publisher socket's bursts into GRO datagrams (one
    /// completion per burst); false if it refuses.
    pub(super) fn enable_gro(fd: i32) -> bool {
        setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, 1).is_ok()
    }

    /// Asks the kernel to stamp a publisher socket's datagrams on arrival and report its
    /// drops (one setsockopt each, at session start).
    pub(super) fn enable_arrival_stamps(fd: i32) {
        for opt in [SO_TIMESTAMPNS, SO_RXQ_OVFL] {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, opt, 1);
        }
    }

    pub(super) fn alloc_slot(&mut self) -> Option<usize> {
        if self.free_slots.is_empty() {
            self.reap_sends();
        }
        self.free_slots.pop().map(|i| i as usize)
    }
}
