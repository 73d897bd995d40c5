//! One shard: a thread pinned to a core that owns its sessions' sockets and drives them with
//! its own io_uring. Datagrams arrive through multishot RecvMsg into a provided-buffer ring;
//! media goes out as SendMsg SQEs, all submitted with one syscall per loop turn.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::api::*;
use crate::arena::PacketArena;
use crate::bufring::BufRing;
use crate::feedback::{self, Feedback, KeyframeCoalescer};
use crate::h264;
use crate::mesh::{Hop, Mesh};
use crate::rewrite::Rewriter;
use crate::rtp;
use crate::srtp::SrtpContext;
use crate::webrtc;

const BGID: u16 = 1;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;
/// Hops taken from one inbound queue per loop turn, so one busy peer cannot starve the rest.
const HOP_BUDGET: usize = 512;

/// Tuning knobs of a shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub sq_entries: u32,
    pub recv_buffers: u16,
    pub recv_buffer_size: usize,
    pub send_slots: usize,
    pub keyframe_interval: Duration,
    pub arena_chunk: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            sq_entries: 4096,
            recv_buffers: 2048,
            recv_buffer_size: 2048,
            send_slots: 8192,
            keyframe_interval: Duration::from_millis(500),
            arena_chunk: 256 * 1024,
        }
    }
}

/// user_data layout: kind (8 bits) | leg (8) | generation (16) | slot index (32).
fn ud(kind: u64, gen: u32, leg: usize, idx: usize) -> u64 {
    (kind << 56) | ((leg as u64 & 0xff) << 48) | ((gen as u64 & 0xffff) << 32) | idx as u64
}

fn ud_parts(u: u64) -> (u64, u32, usize, usize) {
    (
        u >> 56,
        ((u >> 32) & 0xffff) as u32,
        ((u >> 48) & 0xff) as usize,
        (u & 0xffff_ffff) as usize,
    )
}

/// A sockaddr in the form sendmsg wants, prepared once per peer.
#[derive(Clone, Copy)]
struct RawAddr {
    storage: libc::sockaddr_in6,
    len: libc::socklen_t,
}

impl RawAddr {
    fn new(a: SocketAddr) -> Self {
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
fn parse_name(name: &[u8]) -> Option<SocketAddr> {
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
struct SendSlot {
    hdr: libc::msghdr,
    iov: [libc::iovec; 2],
    addr: RawAddr,
    head: [u8; 16],
    pkt: Option<Bytes>,
    /// SRTP players: the packet is protected in place here (header, payload, tag) and sent
    /// from here. Allocated the first time this slot carries an SRTP packet and kept for the
    /// shard's life (at most `send_slots` allocations per shard, none per packet; plain-RTP
    /// shards never allocate them, and only slots actually used cost memory).
    srtp_buf: Option<Box<[u8]>>,
}

/// Size of a send slot's SRTP buffer: a protected packet that fits an Ethernet frame (1,472
/// bytes of UDP payload on a 1,500-byte MTU) with room to spare. Bigger packets (jumbo frames,
/// loopback) take the allocating `protect_rtp` path instead. A slot buffer is only allocated
/// once the slot carries SRTP, so it costs at most `send_slots` x 1.5 KiB per shard, in
/// proportion to how many SRTP sends are in flight at once.
const SRTP_SLOT_LEN: usize = 1536;
/// The largest SRTP tag of the suites we speak (AEAD_AES_128_GCM).
const SRTP_MAX_OVERHEAD: usize = 16;

/// One socket of a session (one media section).
struct Leg {
    /// The socket's address (WebRTC: the host candidate the browser was given).
    local: SocketAddr,
    socket: UdpSocket,
    peer: Option<SocketAddr>,
    peer_raw: Option<RawAddr>,
    kind: LegKind,
    /// Players: payload types carried (empty = all).
    pts: Vec<u8>,
    srtp_in: Option<SrtpContext>,
    srtp_out: Option<SrtpContext>,
    recv_armed: bool,
    /// Publishers: the SSRC last received, the target of keyframe requests and NACKs.
    last_ssrc: Option<u32>,
    /// Players: (publisher payload type, player payload type).
    pt_map: Vec<(u8, u8)>,
    /// Publishers: H264 payload types and the latest parameter sets seen on them.
    h264: Vec<u8>,
    sps: Vec<u8>,
    pps: Vec<u8>,
}

struct Session {
    id: SessionId,
    gen: u32,
    stream: StreamId,
    role: Role,
    legs: Vec<Leg>,
    rewriter: Rewriter,
    counters: SessionCounters,
    /// Highest sequence seen per payload type (publishers, for loss counting).
    highest: [(u8, u16, bool); 4],
    payload_types: [Option<u8>; 4],
    active: bool,
    closing: bool,
    /// Test hook ([`Fault::PanicOnNextPacket`]).
    fault: bool,
    /// WebRTC sessions: the peer connection (ICE, DTLS, SRTP by str0m) and its next timer.
    rtc: Option<Box<webrtc::WebRtcSession>>,
    rtc_deadline: Instant,
    /// WebRTC publishers: the video payload type (keyframe requests name it).
    rtc_video_pt: Option<u8>,
}

impl Session {
    fn remote(&self) -> Option<SocketAddr> {
        self.legs.iter().find_map(|l| l.peer)
    }

    /// The leg a player sends payload type `pt` on.
    fn leg_for(&self, pt: u8) -> Option<usize> {
        self.legs
            .iter()
            .position(|l| l.pts.contains(&pt))
            .or_else(|| self.legs.iter().position(|l| l.pts.is_empty()))
    }
}

#[derive(Default)]
struct LocalStream {
    publisher: Option<usize>,
    players: Vec<usize>,
    /// Other shards with players of this stream (only meaningful on the publisher's shard).
    routes: Vec<usize>,
    publisher_shard: Option<usize>,
    keyframes: Option<KeyframeCoalescer>,
}

impl LocalStream {
    fn is_empty(&self) -> bool {
        self.publisher.is_none()
            && self.players.is_empty()
            && self.routes.is_empty()
            && self.publisher_shard.is_none()
    }
}

pub(crate) struct Shard {
    // Field order matters: the ring must drop before the buffer memory it points into.
    ring: IoUring,
    bufs: BufRing,
    recv_hdr: Box<libc::msghdr>,
    wake_buf: Box<u64>,
    slots: Box<[SendSlot]>,
    free_slots: Vec<u32>,
    me: usize,
    cfg: ShardConfig,
    mesh: Arc<Mesh>,
    cmds: Receiver<Command>,
    events: Sender<Event>,
    sessions: Vec<Option<Session>>,
    free_sessions: Vec<usize>,
    by_id: HashMap<SessionId, usize>,
    streams: HashMap<StreamId, LocalStream>,
    arena: PacketArena,
    counters: ShardCounters,
    cqes: Vec<(u64, i32, u32)>,
    /// Where a packet is assembled for per-player SRTP protection (reused, never shrinks).
    scratch: Vec<u8>,
    /// The player list of the stream being fanned out (reused).
    fanout_scratch: Vec<usize>,
    /// The payload of the packet being fanned out, as WebRTC players take it (built once).
    rtc_payload: Option<Arc<[u8]>>,
    /// Sessions with a WebRTC peer connection, and the earliest timer among them.
    rtc_sessions: Vec<usize>,
    next_rtc_deadline: Instant,
    deferred: Vec<(u64, i32, u32)>,
    wake_pending: Vec<bool>,
    next_gen: u32,
    shutdown: bool,
}

impl Shard {
    pub(crate) fn new(
        me: usize,
        cfg: ShardConfig,
        mesh: Arc<Mesh>,
        cmds: Receiver<Command>,
        events: Sender<Event>,
    ) -> std::io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(cfg.sq_entries * 8)
            .build(cfg.sq_entries)?;
        let bufs = BufRing::new(&ring, cfg.recv_buffers, cfg.recv_buffer_size, BGID)?;
        // SAFETY: all-zero msghdr is valid; only the name length matters for multishot.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let slots = (0..cfg.send_slots)
            .map(|_| SendSlot {
                // SAFETY: zeroed C structs are valid placeholders, filled before each use.
                hdr: unsafe { std::mem::zeroed() },
                iov: unsafe { std::mem::zeroed() },
                addr: RawAddr::new(SocketAddr::from(([0, 0, 0, 0], 0))),
                head: [0; 16],
                pkt: None,
                srtp_buf: None,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let free_slots = (0..cfg.send_slots as u32).rev().collect();
        let n = mesh.shards();
        let mut shard = Self {
            ring,
            bufs,
            recv_hdr,
            wake_buf: Box::new(0),
            slots,
            free_slots,
            me,
            arena: PacketArena::new(cfg.arena_chunk, 8, 64),
            cfg,
            mesh,
            cmds,
            events,
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            by_id: HashMap::new(),
            streams: HashMap::new(),
            counters: ShardCounters::default(),
            cqes: Vec::with_capacity(8192),
            scratch: Vec::with_capacity(2048),
            fanout_scratch: Vec::with_capacity(1024),
            rtc_payload: None,
            rtc_sessions: Vec::new(),
            next_rtc_deadline: Instant::now(),
            deferred: Vec::with_capacity(8192),
            wake_pending: vec![false; n],
            next_gen: 1,
            shutdown: false,
        };
        shard.arm_wake();
        Ok(shard)
    }

    fn push_sqe(&mut self, e: squeue::Entry) {
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

    fn arm_wake(&mut self) {
        let fd = self.mesh.wakers[self.me].fd();
        let e = opcode::Read::new(types::Fd(fd), &mut *self.wake_buf as *mut u64 as *mut u8, 8)
            .build()
            .user_data(ud(KIND_WAKE, 0, 0, 0));
        self.push_sqe(e);
    }

    fn arm_recv(&mut self, idx: usize, leg: usize) {
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

    /// The loop: commands, inbound hops, completions; park in the kernel when idle.
    pub(crate) fn run(mut self) {
        let idle_wait = types::Timespec::new().nsec(100_000_000);
        while !self.shutdown {
            let mut work = self.drain_commands();
            work |= self.run_rtc_timers();
            work |= self.drain_hops();
            work |= self.process_completions();
            self.flush_wakes();
            if work {
                if let Err(err) = self.ring.submit() {
                    tracing::warn!(shard = self.me, %err, "io_uring submit failed");
                }
                continue;
            }
            let waker = &self.mesh.wakers[self.me];
            waker.park();
            if !self.cmds.is_empty() || self.mesh.has_inbound(self.me) {
                waker.unpark();
                continue;
            }
            let wait = if self.rtc_sessions.is_empty() {
                idle_wait
            } else {
                let d = self
                    .next_rtc_deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100));
                types::Timespec::new().nsec(d.as_nanos().max(1) as u32)
            };
            let args = types::SubmitArgs::new().timespec(&wait);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
                Err(err) => tracing::warn!(shard = self.me, %err, "io_uring wait failed"),
            }
            self.mesh.wakers[self.me].unpark();
        }
        tracing::info!(shard = self.me, "shard stopped");
    }

    fn flush_wakes(&mut self) {
        for d in 0..self.wake_pending.len() {
            if self.wake_pending[d] {
                self.wake_pending[d] = false;
                self.mesh.wakers[d].wake_if_parked();
            }
        }
    }

    fn drain_commands(&mut self) -> bool {
        let mut work = false;
        while let Ok(cmd) = self.cmds.try_recv() {
            work = true;
            self.handle_command(cmd);
        }
        work
    }

    fn drain_hops(&mut self) -> bool {
        // A hop was pushed after the commands that set up its players (control sends those
        // before answering the REST call that led to the packet), so read commands first.
        let mut work = self.mesh.has_inbound(self.me) && self.drain_commands();
        for from in 0..self.mesh.shards() {
            for _ in 0..HOP_BUDGET {
                let Some(hop) = self.mesh.pop(from, self.me) else {
                    break;
                };
                work = true;
                self.handle_hop(hop);
            }
        }
        work
    }

    fn handle_hop(&mut self, hop: Hop) {
        match hop {
            Hop::Media { stream, pkt } => {
                if let Ok(h) = rtp::parse_rtp(&pkt) {
                    self.fanout_local(stream, &pkt, &h);
                }
            }
            Hop::Keyframe { stream } => self.request_keyframe(stream),
            Hop::Nack {
                stream,
                ssrc,
                pid,
                blp,
            } => self.send_nack(stream, ssrc, pid, blp),
        }
    }

    fn process_completions(&mut self) -> bool {
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
    fn reap_sends(&mut self) {
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

    fn finish_send(&mut self, idx: usize, res: i32) {
        self.slots[idx].pkt = None;
        self.free_slots.push(idx as u32);
        if res < 0 {
            self.counters.send_errors += 1;
        }
    }

    fn handle_cqe(&mut self, u: u64, res: i32, flags: u32) {
        let (kind, gen, leg, idx) = ud_parts(u);
        match kind {
            KIND_SEND => self.finish_send(idx, res),
            KIND_WAKE => self.arm_wake(),
            KIND_RECV => self.handle_recv(gen, leg, idx, res, flags),
            KIND_CANCEL => {}
            _ => {}
        }
    }

    fn handle_recv(&mut self, gen: u32, leg: usize, idx: usize, res: i32, flags: u32) {
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

    /// Fails a session whose packet handling panicked (the panic message went to stderr).
    fn session_panicked(&mut self, idx: usize) {
        self.counters.session_panics += 1;
        let Some(id) = self.sessions[idx].as_ref().map(|s| s.id) else {
            return;
        };
        tracing::error!(
            shard = self.me,
            id,
            "session panicked while handling a packet; failing it"
        );
        self.stop_session(
            id,
            Status::Failed,
            "Failed: internal error (see server log)".into(),
        );
    }

    fn handle_datagram(&mut self, idx: usize, leg: usize, src: Option<SocketAddr>, data: &[u8]) {
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
            None if s.role == Role::Publisher && !rtcp && rtp::parse_rtp(data).is_ok() => {}
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
        self.publisher_rtp(idx, leg, pkt, h, src);
    }

    /// A publisher's media packet, plain RTP whatever it arrived as: cache what late players
    /// need, count, and fan out.
    fn publisher_rtp(
        &mut self,
        idx: usize,
        leg: usize,
        pkt: Bytes,
        h: rtp::RtpHeader,
        src: SocketAddr,
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
        track_loss(s, &h);
        let stream = s.stream;
        if !s.active {
            s.active = true;
            let _ = self.events.send(Event::Status {
                id: s.id,
                status: Status::Publishing,
                info: String::new(),
                remote: Some(src),
            });
        }
        self.fanout_local(stream, &pkt, &h);
        self.fanout_remote(stream, &pkt);
    }

    /// A datagram for a WebRTC session: str0m takes it (STUN, DTLS, SRTP, SRTCP).
    fn rtc_datagram(&mut self, idx: usize, leg: usize, src: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let s = self.sessions[idx].as_mut().expect("live session");
        let local = s.legs[leg].local;
        s.counters.bytes_in += data.len() as u64;
        if let Some(rtc) = s.rtc.as_mut() {
            rtc.handle_datagram(now, src, local, data);
        }
        self.drain_rtc(idx);
    }

    /// Acts on everything a WebRTC session has queued, until it wants a timer.
    fn drain_rtc(&mut self, idx: usize) {
        loop {
            let Some(s) = self.sessions[idx].as_mut() else {
                return;
            };
            let Some(rtc) = s.rtc.as_mut() else {
                return;
            };
            match rtc.poll_output() {
                webrtc::Output::Transmit(t) => {
                    s.counters.bytes_out += t.contents.len() as u64;
                    self.send_bytes(idx, 0, t.destination, Bytes::from(t.contents));
                }
                webrtc::Output::Rtp(r) => {
                    let n = r.rtp_len();
                    if n > self.scratch.capacity() {
                        self.counters.dropped_malformed += 1;
                        continue;
                    }
                    self.scratch.resize(n, 0);
                    r.write_to(&mut self.scratch);
                    let pkt = self.arena.copy(&self.scratch);
                    self.counters.arena_grows = self.arena.grows;
                    let src = rtc.remote_addr().unwrap_or(s.legs[0].local);
                    if let Ok(h) = rtp::parse_rtp(&pkt) {
                        self.publisher_rtp(idx, 0, pkt, h, src);
                    }
                }
                webrtc::Output::KeyframeRequest(_) => {
                    s.counters.pli_in += 1;
                    let stream = s.stream;
                    self.route_keyframe(stream);
                }
                webrtc::Output::Connected => {
                    tracing::debug!(shard = self.me, id = s.id, "WebRTC connected");
                }
                webrtc::Output::Disconnected(reason) => {
                    let id = s.id;
                    let (status, info) = match reason {
                        webrtc::DisconnectReason::Closed => return,
                        webrtc::DisconnectReason::ClosedByPeer => {
                            (Status::Stopped, "Stopped by session disconnect".to_string())
                        }
                        r => (Status::Failed, format!("Failed: WebRTC {r}")),
                    };
                    self.stop_session(id, status, info);
                    return;
                }
                webrtc::Output::Timeout(t) => {
                    s.rtc_deadline = t;
                    self.next_rtc_deadline = self.next_rtc_deadline.min(t);
                    return;
                }
            }
        }
    }

    /// Runs WebRTC timers that are due; returns whether any was.
    fn run_rtc_timers(&mut self) -> bool {
        if self.rtc_sessions.is_empty() {
            return false;
        }
        let now = Instant::now();
        if now < self.next_rtc_deadline {
            return false;
        }
        self.next_rtc_deadline = now + Duration::from_secs(1);
        let list = std::mem::take(&mut self.rtc_sessions);
        for &idx in &list {
            let due = self.sessions[idx]
                .as_mut()
                .filter(|s| !s.closing)
                .and_then(|s| {
                    let d = s.rtc_deadline;
                    s.rtc.as_mut().map(|r| (r, d))
                });
            match due {
                Some((rtc, d)) if d <= now => {
                    rtc.handle_timeout(now);
                    self.drain_rtc(idx);
                }
                Some((_, d)) => self.next_rtc_deadline = self.next_rtc_deadline.min(d),
                None => {}
            }
        }
        // `finalize` could not remove sessions that ended meanwhile from the taken list.
        let mut list = list;
        list.retain(|&i| self.sessions[i].as_ref().is_some_and(|s| s.rtc.is_some()));
        list.append(&mut self.rtc_sessions);
        self.rtc_sessions = list;
        true
    }

    /// Sends an owned datagram (WebRTC transmits) from leg `leg` of session `idx`.
    fn send_bytes(&mut self, idx: usize, leg: usize, to: SocketAddr, data: Bytes) {
        let Some(slot) = self.alloc_slot() else {
            self.counters.dropped_no_send_slot += 1;
            return;
        };
        let Some(l) = self.sessions[idx].as_ref().and_then(|s| s.legs.get(leg)) else {
            self.free_slots.push(slot as u32);
            return;
        };
        let fd = l.socket.as_raw_fd();
        let sl = &mut self.slots[slot];
        sl.iov[0] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        sl.pkt = Some(data);
        sl.addr = RawAddr::new(to);
        sl.hdr.msg_name = &mut sl.addr.storage as *mut _ as *mut libc::c_void;
        sl.hdr.msg_namelen = sl.addr.len;
        sl.hdr.msg_iov = sl.iov.as_mut_ptr();
        sl.hdr.msg_iovlen = 1;
        let e = opcode::SendMsg::new(types::Fd(fd), &sl.hdr as *const libc::msghdr)
            .build()
            .user_data(ud(KIND_SEND, 0, 0, slot));
        self.push_sqe(e);
    }

    fn fanout_remote(&mut self, stream: StreamId, pkt: &Bytes) {
        let Some(ls) = self.streams.get(&stream) else {
            return;
        };
        for &d in &ls.routes {
            let hop = Hop::Media {
                stream,
                pkt: pkt.clone(),
            };
            if self.mesh.push(self.me, d, hop).is_err() {
                self.counters.dropped_ring_full += 1;
            } else {
                self.wake_pending[d] = true;
            }
        }
    }

    fn fanout_local(&mut self, stream: StreamId, pkt: &Bytes, h: &rtp::RtpHeader) {
        let Some(ls) = self.streams.get_mut(&stream) else {
            return;
        };
        if ls.players.is_empty() {
            return;
        }
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

    fn alloc_slot(&mut self) -> Option<usize> {
        if self.free_slots.is_empty() {
            self.reap_sends();
        }
        self.free_slots.pop().map(|i| i as usize)
    }

    fn send_media(&mut self, p: usize, pkt: &Bytes, h: &rtp::RtpHeader) {
        if self.sessions[p].as_ref().is_some_and(|s| s.rtc.is_some()) {
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
                let buf = sl
                    .srtp_buf
                    .get_or_insert_with(|| vec![0u8; SRTP_SLOT_LEN].into_boxed_slice());
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
        sl.hdr.msg_name = &mut sl.addr.storage as *mut _ as *mut libc::c_void;
        sl.hdr.msg_namelen = sl.addr.len;
        sl.hdr.msg_iov = sl.iov.as_mut_ptr();
        let out_len = sl.iov[..sl.hdr.msg_iovlen]
            .iter()
            .map(|v| v.iov_len)
            .sum::<usize>() as u64;
        if let Some(free) = s
            .payload_types
            .iter_mut()
            .find(|x| x.is_none() || **x == Some(h.payload_type))
        {
            *free = Some(h.payload_type);
        }
        s.counters.packets_out += 1;
        s.counters.bytes_out += out_len;
        self.counters.packets_out += 1;
        self.counters.bytes_out += out_len;
        let first = !s.active;
        s.active = true;
        let (id, remote) = (s.id, l.peer);
        let e = opcode::SendMsg::new(
            types::Fd(l.socket.as_raw_fd()),
            &sl.hdr as *const libc::msghdr,
        )
        .build()
        .user_data(ud(KIND_SEND, 0, 0, slot));
        self.push_sqe(e);
        if first {
            let _ = self.events.send(Event::Status {
                id,
                status: Status::Playing,
                info: String::new(),
                remote,
            });
        }
    }

    /// A fan-out packet for a WebRTC player: str0m protects and sends it.
    fn send_media_rtc(&mut self, p: usize, pkt: &Bytes, h: &rtp::RtpHeader) {
        let Some(s) = self.sessions[p].as_mut() else {
            return;
        };
        let Some(rtc) = s.rtc.as_mut() else {
            return;
        };
        let Some(rw) = s
            .rewriter
            .rewrite(h.payload_type, h.seq, h.timestamp, h.ssrc)
        else {
            s.counters.dropped += 1;
            return;
        };
        // One payload Arc per publisher packet, shared by this shard's WebRTC players.
        let payload = self
            .rtc_payload
            .get_or_insert_with(|| Arc::from(rtp_payload(pkt, h)))
            .clone();
        let out = webrtc::OutgoingRtp {
            payload_type: h.payload_type,
            seq: rw.seq,
            timestamp: rw.timestamp,
            marker: h.marker,
            payload,
        };
        match rtc.send_rtp(Instant::now(), &out) {
            Ok(()) => {
                s.counters.packets_out += 1;
                self.counters.packets_out += 1;
                if !s.active {
                    s.active = true;
                    let _ = self.events.send(Event::Status {
                        id: s.id,
                        status: Status::Playing,
                        info: String::new(),
                        remote: rtc.remote_addr(),
                    });
                }
            }
            Err(_) => s.counters.dropped += 1,
        }
        self.drain_rtc(p);
    }

    /// Sends a small RTCP packet (PLI/NACK) from leg `leg` of session `idx` to its peer,
    /// SRTCP-protected when the leg is encrypted.
    fn send_control(&mut self, idx: usize, leg: usize, bytes: &[u8]) {
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
        sl.hdr.msg_name = &mut sl.addr.storage as *mut _ as *mut libc::c_void;
        sl.hdr.msg_namelen = sl.addr.len;
        sl.hdr.msg_iov = sl.iov.as_mut_ptr();
        sl.hdr.msg_iovlen = 1;
        let e = opcode::SendMsg::new(
            types::Fd(l.socket.as_raw_fd()),
            &sl.hdr as *const libc::msghdr,
        )
        .build()
        .user_data(ud(KIND_SEND, 0, 0, slot));
        self.push_sqe(e);
    }

    fn handle_player_rtcp(&mut self, idx: usize, data: &[u8]) {
        let s = self.sessions[idx].as_mut().expect("live session");
        let stream = s.stream;
        let mut keyframe = false;
        let mut nacks: [(u32, u16, u16); 8] = [(0, 0, 0); 8];
        let mut n_nacks = 0;
        let rewriter = &s.rewriter;
        let counters = &mut s.counters;
        feedback::for_each_feedback(data, |f| match f {
            Feedback::Keyframe { .. } => {
                counters.pli_in += 1;
                keyframe = true;
            }
            Feedback::Nack {
                media_ssrc,
                pid,
                blp,
            } => {
                counters.nack_in += 1;
                if let Some((src, spid)) = rewriter.to_source(media_ssrc, pid) {
                    if n_nacks < nacks.len() {
                        nacks[n_nacks] = (src, spid, blp);
                        n_nacks += 1;
                    }
                }
            }
        });
        if keyframe {
            self.route_keyframe(stream);
        }
        for &(ssrc, pid, blp) in &nacks[..n_nacks] {
            match self.streams.get(&stream).and_then(|l| l.publisher_shard) {
                Some(d) if d != self.me => {
                    if self
                        .mesh
                        .push(
                            self.me,
                            d,
                            Hop::Nack {
                                stream,
                                ssrc,
                                pid,
                                blp,
                            },
                        )
                        .is_ok()
                    {
                        self.wake_pending[d] = true;
                    }
                }
                _ => self.send_nack(stream, ssrc, pid, blp),
            }
        }
    }

    /// Sends a keyframe request towards the publisher of `stream`, wherever it is.
    fn route_keyframe(&mut self, stream: StreamId) {
        match self.streams.get(&stream).and_then(|l| l.publisher_shard) {
            Some(d) if d != self.me => {
                if self.mesh.push(self.me, d, Hop::Keyframe { stream }).is_ok() {
                    self.wake_pending[d] = true;
                }
            }
            _ => self.request_keyframe(stream),
        }
    }

    fn request_keyframe(&mut self, stream: StreamId) {
        let now = Instant::now();
        let interval = self.cfg.keyframe_interval;
        let Some(ls) = self.streams.get_mut(&stream) else {
            return;
        };
        let Some(p) = ls.publisher else {
            return;
        };
        if let Some(s) = self.sessions[p].as_mut().filter(|s| s.rtc.is_some()) {
            let kf = ls
                .keyframes
                .get_or_insert_with(|| KeyframeCoalescer::new(interval));
            if !kf.request(now) {
                self.counters.keyframe_requests_coalesced += 1;
                return;
            }
            let pt = s.rtc_video_pt;
            if let Some(rtc) = s.rtc.as_mut() {
                if rtc.request_keyframe(now, webrtc::KeyframeKind::Pli, pt) {
                    self.counters.keyframe_requests_sent += 1;
                }
            }
            self.drain_rtc(p);
            return;
        }
        // The video leg (or a leg of unknown kind) that has seen an SSRC: a PLI names it.
        let Some((leg, target)) = self.sessions[p].as_ref().and_then(|s| {
            s.legs.iter().enumerate().find_map(|(i, l)| {
                (l.kind != LegKind::Audio)
                    .then_some(l.last_ssrc)
                    .flatten()
                    .map(|ssrc| (i, ssrc))
            })
        }) else {
            return;
        };
        let kf = ls
            .keyframes
            .get_or_insert_with(|| KeyframeCoalescer::new(interval));
        if kf.request(now) {
            self.counters.keyframe_requests_sent += 1;
            self.send_control(p, leg, &feedback::build_pli(target));
        } else {
            self.counters.keyframe_requests_coalesced += 1;
        }
    }

    fn send_nack(&mut self, stream: StreamId, ssrc: u32, pid: u16, blp: u16) {
        let Some(p) = self.streams.get(&stream).and_then(|l| l.publisher) else {
            return;
        };
        if self.sessions[p].as_ref().is_some_and(|s| s.rtc.is_some()) {
            // str0m recovers losses on the browser's leg itself; raw RTCP would not be SRTCP.
            return;
        }
        let leg = self.sessions[p]
            .as_ref()
            .and_then(|s| s.legs.iter().position(|l| l.last_ssrc == Some(ssrc)))
            .unwrap_or(0);
        self.send_control(p, leg, &feedback::build_nack(ssrc, pid, blp));
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::AddSession(ns) => self.add_session(ns),
            Command::SetRoutes { stream, shards } => {
                let me = self.me;
                let ls = self.streams.entry(stream).or_default();
                ls.routes = shards.into_iter().filter(|&s| s != me).collect();
                self.gc_stream(stream);
            }
            Command::SetPublisherShard { stream, shard } => {
                self.streams.entry(stream).or_default().publisher_shard = shard;
                self.gc_stream(stream);
            }
            Command::Terminate { id, info } => self.stop_session(id, Status::Stopped, info),
            Command::InjectFault(Fault::PanicOnNextPacket(id)) => {
                if let Some(s) = self.by_id.get(&id).and_then(|&i| self.sessions[i].as_mut()) {
                    s.fault = true;
                }
            }
            Command::InjectFault(Fault::PanicShard) => panic!("injected shard fault"),
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Shutdown => self.shutdown = true,
        }
    }

    fn add_session(&mut self, ns: NewSession) {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1) & 0xffff;
        let seed = (ns.id as u32) ^ ((ns.id >> 32) as u32) ^ 0xa5a5_5a5a;
        let legs: Vec<Leg> = ns
            .legs
            .into_iter()
            .take(MAX_LEGS)
            .map(|l| {
                if let Err(err) = l.socket.set_nonblocking(true) {
                    tracing::warn!(shard = self.me, %err, "set_nonblocking failed");
                }
                Leg {
                    local: l
                        .socket
                        .local_addr()
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                    socket: l.socket,
                    peer: l.peer,
                    peer_raw: l.peer.map(RawAddr::new),
                    kind: l.kind,
                    pts: l.payload_types,
                    srtp_in: l.srtp_in,
                    srtp_out: l.srtp_out,
                    recv_armed: false,
                    last_ssrc: None,
                    pt_map: l.pt_map,
                    h264: l.h264_payload_types,
                    sps: Vec::new(),
                    pps: Vec::new(),
                }
            })
            .collect();
        let n_legs = legs.len();
        let rtc_video_pt = ns.webrtc.as_ref().and_then(|r| {
            r.tracks()
                .iter()
                .find(|t| t.kind == webrtc::MediaKind::Video)
                .map(|t| t.payload_type)
        });
        let mut legs = legs;
        if let (Some(r), Some(l)) = (ns.webrtc.as_ref(), legs.first_mut()) {
            // ICE-lite: the session's host candidate is the address the browser was told.
            l.local = r.local_addr();
            if ns.role == Role::Publisher {
                l.h264 = r
                    .tracks()
                    .iter()
                    .filter(|t| t.codec == webrtc::Codec::H264)
                    .map(|t| t.payload_type)
                    .collect();
            }
        }
        let is_rtc = ns.webrtc.is_some();
        let session = Session {
            rtc: ns.webrtc,
            rtc_deadline: Instant::now(),
            rtc_video_pt,
            id: ns.id,
            gen,
            stream: ns.stream,
            role: ns.role,
            legs,
            rewriter: Rewriter::new(seed),
            counters: SessionCounters::default(),
            highest: [(0, 0, false); 4],
            payload_types: [None; 4],
            active: false,
            closing: false,
            fault: false,
        };
        let idx = match self.free_sessions.pop() {
            Some(i) => {
                self.sessions[i] = Some(session);
                i
            }
            None => {
                self.sessions.push(Some(session));
                self.sessions.len() - 1
            }
        };
        self.by_id.insert(ns.id, idx);
        let me = self.me;
        let ls = self.streams.entry(ns.stream).or_default();
        match ns.role {
            Role::Publisher => {
                ls.publisher = Some(idx);
                ls.publisher_shard = Some(me);
            }
            Role::Player => ls.players.push(idx),
        }
        for leg in 0..n_legs {
            self.arm_recv(idx, leg);
        }
        if is_rtc {
            self.rtc_sessions.push(idx);
            self.next_rtc_deadline = Instant::now();
        }
        if ns.role == Role::Player {
            // A joining player needs a keyframe to start decoding.
            self.route_keyframe(ns.stream);
        }
        tracing::debug!(shard = self.me, id = ns.id, role = ?ns.role, legs = n_legs, "session added");
    }

    /// Stops a session: it leaves its stream at once, and is released when the kernel no
    /// longer references its sockets. `status` is Stopped (control asked) or Failed.
    fn stop_session(&mut self, id: SessionId, status: Status, info: String) {
        let Some(&idx) = self.by_id.get(&id) else {
            return;
        };
        let Some(s) = self.sessions[idx].as_mut() else {
            return;
        };
        if s.closing {
            return;
        }
        let remote = s.remote();
        if let Some(rtc) = s.rtc.as_mut() {
            // Tell the browser (DTLS close_notify) before the socket goes.
            rtc.close(Instant::now());
            self.drain_rtc(idx);
        }
        let Some(s) = self.sessions[idx].as_mut() else {
            return;
        };
        s.closing = true;
        let (stream, role, gen) = (s.stream, s.role, s.gen);
        let armed: Vec<usize> = (0..s.legs.len())
            .filter(|&i| s.legs[i].recv_armed)
            .collect();
        if let Some(ls) = self.streams.get_mut(&stream) {
            match role {
                Role::Publisher => {
                    if ls.publisher == Some(idx) {
                        ls.publisher = None;
                    }
                }
                Role::Player => ls.players.retain(|&p| p != idx),
            }
        }
        let _ = self.events.send(Event::Status {
            id,
            status,
            info,
            remote,
        });
        if armed.is_empty() {
            self.finalize(idx);
        }
        // The session is released when the last cancelled receive completes.
        for leg in armed {
            let e = opcode::AsyncCancel::new(ud(KIND_RECV, gen, leg, idx))
                .build()
                .user_data(ud(KIND_CANCEL, 0, 0, 0));
            self.push_sqe(e);
        }
        self.gc_stream(stream);
    }

    /// Releases a stopped session's socket and slot once the kernel no longer references it.
    fn finalize(&mut self, idx: usize) {
        if let Some(s) = self.sessions[idx].take() {
            if s.rtc.is_some() {
                self.rtc_sessions.retain(|&i| i != idx);
            }
            self.by_id.remove(&s.id);
            self.free_sessions.push(idx);
            let _ = self.events.send(Event::Removed { id: s.id });
            tracing::debug!(shard = self.me, id = s.id, "session removed");
        }
    }

    fn gc_stream(&mut self, stream: StreamId) {
        if self.streams.get(&stream).is_some_and(|l| l.is_empty()) {
            self.streams.remove(&stream);
        }
    }

    fn stats(&self) -> ShardStats {
        let sessions = self
            .sessions
            .iter()
            .flatten()
            .filter(|s| !s.closing)
            .map(|s| SessionStats {
                id: s.id,
                stream: s.stream,
                role: s.role,
                remote: s.rtc.as_ref().and_then(|r| r.remote_addr()).or(s.remote()),
                counters: s.counters,
                payload_types: s.payload_types.iter().flatten().copied().collect(),
            })
            .collect();
        ShardStats {
            shard: self.me,
            counters: self.counters,
            sessions,
        }
    }
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

/// The payload of an RTP packet: after header, CSRCs and extension, without padding.
fn rtp_payload<'a>(pkt: &'a [u8], h: &rtp::RtpHeader) -> &'a [u8] {
    let end = if pkt[0] & 0x20 != 0 {
        pkt.len() - pkt[pkt.len() - 1] as usize
    } else {
        pkt.len()
    };
    pkt.get(h.payload_offset..end).unwrap_or_default()
}
