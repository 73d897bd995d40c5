//! One shard: a thread pinned to a core that owns its sessions' sockets and drives them with
//! its own io_uring. Datagrams arrive through multishot RecvMsg into a provided-buffer ring;
//! media goes out as SendMsg SQEs, all submitted with one syscall per loop turn.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use io_uring::{types, IoUring};

use crate::api::*;
use crate::arena::PacketArena;
use crate::bufring::BufRing;
use crate::mesh::{Hop, Mesh};
use crate::rtp;

mod fanout;
mod files;
mod gso;
mod ingress;
mod ring;
mod rtc;
mod rtcp;
mod rtx;
mod session;
mod timers;

use ring::*;
use session::*;
use timers::Timers;

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
    /// NACK entries per second a player may send upstream (0 = none); past it they are
    /// dropped and counted.
    pub nack_rate_per_player: u32,
    /// A packet NACKed by any player is not asked for again within this window.
    pub nack_merge_window: Duration,
    /// Batch each player's packets of a loop turn into UDP GSO sends (when the kernel
    /// supports it); false sends every packet on its own.
    pub gso: bool,
    /// connect() a plain-RTP/SRTP player's socket to its peer, so sends go without a name
    /// and the kernel skips a route lookup per send.
    pub connect_players: bool,
    /// A packet older than this since it reached the host is dropped, not sent (zero: never).
    pub max_queue: Duration,
    /// Receive publishers' bursts as UDP GRO datagrams into `gro_buffers` 64 KiB buffers.
    pub gro: bool,
    pub gro_buffers: u16,
    /// Slots of the ring's file table (registered sockets, see `files.rs`); legs past it,
    /// or all when the kernel refuses the table, are named by fd. 0: none.
    pub fixed_files: u32,
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
            nack_rate_per_player: 50,
            nack_merge_window: Duration::from_millis(100),
            gso: true,
            connect_players: true,
            max_queue: Duration::from_millis(50),
            gro: false,
            gro_buffers: 64,
            fixed_files: 16384,
        }
    }
}

pub(crate) struct Shard {
    // Field order matters: the ring must drop before the buffer memory it points into.
    ring: IoUring,
    bufs: BufRing,
    /// Publisher sockets with UDP GRO receive into these (`media.gro`).
    gro_bufs: Option<BufRing>,
    files: files::FileTable,
    recv_hdr: Box<libc::msghdr>,
    wake_buf: Box<u64>,
    slots: Box<[SendSlot]>,
    /// SRTP players: slot i protects its packet in place in `srtp_slab[i * SRTP_SLOT_LEN..]`
    /// and sends from there. Mapped at start (a page costs memory only once an SRTP send has
    /// used it); nothing is allocated per packet or per slot.
    srtp_slab: crate::mapped::MappedBytes,
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
    /// WebRTC sessions' str0m timeouts (`rtc.rs`): one live entry per session.
    rtc_timers: timers::Timers,
    /// Entries popped by `run_rtc_timers`, handled after popping (reused).
    rtc_due: Vec<(Instant, usize, u32)>,
    /// Per-session media deadlines.
    timers: Timers,
    deferred: Vec<(u64, i32, u32)>,
    /// GSO fan-out (see `gso.rs`): whether it is on, streams with queued packets, batch
    /// send memory (made at start, recycled) and a run buffer.
    gso: bool,
    dirty: Vec<StreamId>,
    // Boxed: a slot must stay put while the kernel reads it, even when the Vec grows.
    #[allow(clippy::vec_box)]
    batches: Vec<Box<gso::BatchSlot>>,
    free_batches: Vec<u32>,
    run_scratch: Vec<usize>,
    /// Arrival time of the datagram being handled (ns, CLOCK_REALTIME).
    rx_stamp: u64,
    /// When the fan-out being sent started (the send time WebRTC sender reports get).
    send_at: Instant,
    wake_pending: Vec<bool>,
    next_gen: u32,
    shutdown: bool,
}

/// The shard's ring. Only the shard thread that builds it submits (SINGLE_ISSUER), so the
/// kernel may keep completion work for that thread's next `io_uring_enter` (DEFER_TASKRUN)
/// instead of interrupting it for every receive; TASKRUN_FLAG tells `submit()` when such
/// work waits, so a busy loop still collects it. Kernels before 6.1 get the cooperative
/// variant (5.19) or the plain ring.
fn new_ring(me: usize, sq_entries: u32) -> std::io::Result<IoUring> {
    type Setup = fn(&mut io_uring::Builder);
    let builders: [(&str, Setup); 3] = [
        ("deferred task work", |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag();
        }),
        ("cooperative task work", |b| {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }),
        ("plain", |_| {}),
    ];
    let mut last = None;
    for (what, set) in builders {
        let mut b = IoUring::builder();
        b.setup_cqsize(sq_entries * 8);
        set(&mut b);
        match b.build(sq_entries) {
            Ok(ring) => {
                tracing::debug!(shard = me, ring = what, "io_uring ready");
                return Ok(ring);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

impl Shard {
    pub(crate) fn new(
        me: usize,
        cfg: ShardConfig,
        mesh: Arc<Mesh>,
        cmds: Receiver<Command>,
        events: Sender<Event>,
    ) -> std::io::Result<Self> {
        let ring = new_ring(me, cfg.sq_entries)?;
        let files = files::FileTable::new(&ring, cfg.fixed_files);
        let bufs = BufRing::new(&ring, cfg.recv_buffers, cfg.recv_buffer_size, BGID)?;
        let gro_bufs = if cfg.gro {
            let n = cfg.gro_buffers.max(1).next_power_of_two();
            Some(BufRing::new(&ring, n, GRO_BUF_SIZE, BGID_GRO)?)
        } else {
            None
        };
        // SAFETY: all-zero msghdr is valid; only the name length matters for multishot.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        recv_hdr.msg_controllen = RECV_CONTROL_LEN as usize;
        let gso = cfg.gso && gso::gso_supported();
        if cfg.gso && !gso {
            tracing::warn!(
                shard = me,
                "the kernel refuses UDP_SEGMENT: sending without GSO"
            );
        }
        let slots = (0..cfg.send_slots)
            .map(|_| SendSlot {
                // SAFETY: zeroed C structs are valid placeholders, filled before each use.
                hdr: unsafe { std::mem::zeroed() },
                iov: unsafe { std::mem::zeroed() },
                addr: RawAddr::new(SocketAddr::from(([0, 0, 0, 0], 0))),
                head: [0; 16],
                pkt: None,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let free_slots = (0..cfg.send_slots as u32).rev().collect();
        let n = mesh.shards();
        // In-flight batches: 1/32 of the send slots (a batch carries up to 64 packets).
        let n_batches = if gso {
            (cfg.send_slots / 32).max(16)
        } else {
            0
        };
        let mut shard = Self {
            ring,
            bufs,
            gro_bufs,
            files,
            recv_hdr,
            wake_buf: Box::new(0),
            srtp_slab: crate::mapped::MappedBytes::zeroed(cfg.send_slots * fanout::SRTP_SLOT_LEN)?,
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
            rtc_timers: Default::default(),
            rtc_due: Vec::new(),
            timers: Timers::default(),
            deferred: Vec::with_capacity(8192),
            gso,
            dirty: Vec::new(),
            batches: (0..n_batches)
                .map(|_| gso::BatchSlot::new())
                .collect::<std::io::Result<_>>()?,
            free_batches: (0..n_batches as u32).rev().collect(),
            run_scratch: Vec::with_capacity(gso::MAX_SEGS),
            rx_stamp: 0,
            send_at: Instant::now(),
            wake_pending: vec![false; n],
            next_gen: 1,
            shutdown: false,
        };
        shard.arm_wake();
        Ok(shard)
    }

    /// The loop: commands, inbound hops, completions; park in the kernel when idle.
    pub(crate) fn run(mut self) {
        let idle_wait = types::Timespec::new().nsec(100_000_000);
        while !self.shutdown {
            let mut work = self.drain_commands();
            work |= self.run_rtc_timers();
            work |= self.run_timers();
            work |= self.drain_hops();
            work |= self.process_completions();
            self.flush_fanout();
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
            // Wake for the earliest of the WebRTC timers and the media deadlines.
            let next = self
                .timers
                .next()
                .into_iter()
                .chain(self.rtc_timers.next())
                .min();
            let wait = match next {
                None => idle_wait,
                Some(at) => {
                    let d = at
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100));
                    types::Timespec::new().nsec(d.as_nanos().max(1) as u32)
                }
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
        self.flush_fanout();
        work
    }

    fn handle_hop(&mut self, hop: Hop) {
        match hop {
            Hop::Media { stream, pkt, stamp } => {
                if let Ok(h) = rtp::parse_rtp(&pkt) {
                    self.fanout_local(stream, &pkt, &h, stamp);
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
            Command::InjectFault(Fault::Stall(d)) => std::thread::sleep(d),
            Command::InjectFault(Fault::RefuseGso(id)) => {
                if let Some(s) = self.by_id.get(&id).and_then(|&i| self.sessions[i].as_ref()) {
                    for l in &s.legs {
                        if let Err(err) =
                            gso::refuse_gso(std::os::fd::AsRawFd::as_raw_fd(&l.socket))
                        {
                            tracing::warn!(shard = self.me, %err, "SO_NO_CHECK failed");
                        }
                    }
                }
            }
            Command::Ping { reply } => {
                let _ = reply.send(());
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Shutdown => self.shutdown = true,
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
