//! The session table: what a session and its legs hold, how sessions join and leave their
//! stream, and how a stopped session is released once the kernel lets go of its sockets.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use io_uring::opcode;

use crate::api::*;
use crate::feedback::KeyframeCoalescer;
use crate::rewrite::Rewriter;
use crate::srtp::SrtpContext;
use crate::webrtc;

use super::ring::{ud, RawAddr, KIND_CANCEL, KIND_RECV, KIND_RECV_GRO};
use super::Shard;

/// One socket of a session (one media section).
pub(super) struct Leg {
    /// The socket's address (WebRTC: the host candidate the browser was given).
    pub(super) local: SocketAddr,
    pub(super) socket: UdpSocket,
    pub(super) peer: Option<SocketAddr>,
    pub(super) peer_raw: Option<RawAddr>,
    /// Publishers: the only address a source may be latched from, when known.
    pub(super) source_ip: Option<std::net::IpAddr>,
    pub(super) kind: LegKind,
    /// Players: payload types carried (empty = all).
    pub(super) pts: Vec<u8>,
    pub(super) srtp_in: Option<SrtpContext>,
    pub(super) srtp_out: Option<SrtpContext>,
    pub(super) recv_armed: bool,
    /// Publishers: the SSRC last received, the target of keyframe requests and NACKs.
    pub(super) last_ssrc: Option<u32>,
    /// Players: (publisher payload type, player payload type).
    pub(super) pt_map: Vec<(u8, u8)>,
    /// Publishers: H264 payload types and the latest parameter sets seen on them.
    pub(super) h264: Vec<u8>,
    pub(super) sps: Vec<u8>,
    pub(super) pps: Vec<u8>,
    /// Players: this socket refused a GSO send, so it sends packet by packet.
    pub(super) gso_off: bool,
    /// Publishers: the socket delivers UDP GRO datagrams (receives from `BGID_GRO`).
    pub(super) gro: bool,
    /// The socket's slot in the ring's file table, if it has one.
    pub(super) fixed: Option<u32>,
    /// Publishers: the kernel's drop count last reported (SO_RXQ_OVFL), and the stream's
    /// rate over the current window (start ns, bytes) with the receive buffer it led to.
    pub(super) kernel_drops: u32,
    pub(super) rate: (u64, u64),
    pub(super) rcvbuf: usize,
}

impl Leg {
    /// How SQEs name this leg's socket.
    pub(super) fn sock(&self) -> super::files::Sock {
        match self.fixed {
            Some(i) => super::files::Sock::Fixed(i),
            None => super::files::Sock::Fd(std::os::fd::AsRawFd::as_raw_fd(&self.socket)),
        }
    }
}

pub(super) struct Session {
    pub(super) id: SessionId,
    pub(super) gen: u32,
    pub(super) stream: StreamId,
    pub(super) role: Role,
    pub(super) legs: Vec<Leg>,
    pub(super) rewriter: Rewriter,
    pub(super) counters: SessionCounters,
    /// Highest sequence seen per payload type (publishers, for loss counting).
    pub(super) highest: [(u8, u16, bool); 4],
    pub(super) payload_types: [Option<u8>; 4],
    pub(super) active: bool,
    pub(super) closing: bool,
    /// Test hook ([`Fault::PanicOnNextPacket`]).
    pub(super) fault: bool,
    /// WebRTC sessions: the peer connection (ICE, DTLS, SRTP by str0m) and its next timer.
    pub(super) rtc: Option<Box<webrtc::WebRtcSession>>,
    pub(super) rtc_deadline: Instant,
    /// The deadline of this session's live entry in the shard's `rtc_timers` (older entries
    /// for it are stale and skipped when they fire).
    pub(super) rtc_armed: Option<Instant>,
    /// WebRTC publishers: the video payload type (keyframe requests name it).
    pub(super) rtc_video_pt: Option<u8>,
    /// Publishers: media deadlines (see `timers.rs`), when the session was added and when
    /// its last media packet arrived.
    pub(super) timeouts: Timeouts,
    pub(super) created: Instant,
    pub(super) last_media: Instant,
    /// Players: how many NACKs may still go upstream (see [`NackBudget`]).
    pub(super) nack_budget: crate::feedback::NackBudget,
}

impl Session {
    pub(super) fn remote(&self) -> Option<SocketAddr> {
        self.legs.iter().find_map(|l| l.peer)
    }

    /// A WebRTC session whose media str0m still protects and sends (a player before
    /// connect, or not switched to engine-protected media: `webrtc/external.rs`).
    pub(super) fn on_str0m_path(&self) -> bool {
        self.rtc.as_ref().is_some_and(|r| !r.is_external())
    }

    /// A WebRTC player whose media the engine protects (its NACKs use the stream's history).
    pub(super) fn engine_protected(&self) -> bool {
        self.rtc.as_ref().is_some_and(|r| r.is_external())
    }

    /// The leg a player sends payload type `pt` on.
    pub(super) fn leg_for(&self, pt: u8) -> Option<usize> {
        self.legs
            .iter()
            .position(|l| l.pts.contains(&pt))
            .or_else(|| self.legs.iter().position(|l| l.pts.is_empty()))
    }
}

#[derive(Default)]
pub(super) struct LocalStream {
    pub(super) publisher: Option<usize>,
    pub(super) players: Vec<usize>,
    /// Other shards with players of this stream (only meaningful on the publisher's shard).
    pub(super) routes: Vec<usize>,
    pub(super) publisher_shard: Option<usize>,
    pub(super) keyframes: Option<KeyframeCoalescer>,
    /// Publisher's shard: NACKs asked upstream recently (made at the first NACK).
    pub(super) nacks: Option<crate::feedback::NackMerger>,
    /// Packets waiting for the end of the loop turn (GSO fan-out).
    pub(super) pending: Vec<super::gso::Pending>,
    /// Recent packets, for NACKs of WebRTC players with engine-protected media (made when
    /// the first such player connects).
    pub(super) history: Option<Box<super::rtx::RtxHistory>>,
}

impl LocalStream {
    pub(super) fn is_empty(&self) -> bool {
        self.publisher.is_none()
            && self.players.is_empty()
            && self.routes.is_empty()
            && self.publisher_shard.is_none()
    }
}

impl Shard {
    pub(super) fn add_session(&mut self, ns: NewSession) {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1) & 0xffff;
        let seed = crate::rewrite::player_seed(ns.id);
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
                    source_ip: l.source_ip,
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
                    gso_off: false,
                    gro: false,
                    fixed: None,
                    kernel_drops: 0,
                    rate: (0, 0),
                    rcvbuf: 0,
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
        if ns.role == Role::Player && !is_rtc && self.cfg.connect_players {
            // A player's peer never changes (datagrams from any other source are dropped
            // anyway), so the socket can be connected to it: sends then go without a name.
            for l in legs.iter_mut() {
                if let Some(peer) = l.peer {
                    match l.socket.connect(peer) {
                        Ok(()) => l.peer_raw = Some(RawAddr::connected()),
                        Err(err) => {
                            tracing::debug!(shard = self.me, id = ns.id, %peer, %err, "connect failed; sending unconnected")
                        }
                    }
                }
            }
        }
        let session = Session {
            rtc: ns.webrtc,
            rtc_deadline: Instant::now(),
            rtc_armed: None,
            rtc_video_pt,
            timeouts: ns.timeouts,
            created: Instant::now(),
            last_media: Instant::now(),
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
            nack_budget: Default::default(),
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
            // Insertion at the front is O(players), once per attach, never per packet.
            Role::Player if ns.serve_first => ls.players.insert(0, idx),
            Role::Player => ls.players.push(idx),
        }
        if ns.role == Role::Publisher {
            if let Some(s) = self.sessions[idx].as_ref() {
                for l in &s.legs {
                    Shard::enable_arrival_stamps(std::os::fd::AsRawFd::as_raw_fd(&l.socket));
                }
            }
            // WebRTC publishers' datagrams go to str0m one by one: GRO for RTP/SRTP only.
            if self.gro_bufs.is_some() && !is_rtc {
                if let Some(s) = self.sessions[idx].as_mut() {
                    for l in s.legs.iter_mut() {
                        l.gro = Shard::enable_gro(std::os::fd::AsRawFd::as_raw_fd(&l.socket));
                    }
                }
            }
        }
        if let Some(s) = self.sessions[idx].as_mut() {
            for l in s.legs.iter_mut() {
                l.fixed = self
                    .files
                    .register(&self.ring, std::os::fd::AsRawFd::as_raw_fd(&l.socket));
            }
        }
        for leg in 0..n_legs {
            self.arm_recv(idx, leg);
        }
        if is_rtc {
            self.arm_rtc(idx, Instant::now());
        }
        if ns.role == Role::Publisher {
            self.arm_media_timer(idx);
        }
        if ns.role == Role::Player {
            // A joining player needs a keyframe to start decoding.
            self.route_keyframe(ns.stream);
        }
        tracing::debug!(shard = self.me, id = ns.id, role = ?ns.role, legs = n_legs, "session added");
    }

    /// Stops a session: it leaves its stream at once, and is released when the kernel no
    /// longer references its sockets. `status` is Stopped (control asked) or Failed.
    pub(super) fn stop_session(&mut self, id: SessionId, status: Status, info: String) {
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
        let (stream, role, gen, counters) = (s.stream, s.role, s.gen, s.counters);
        let armed: Vec<(usize, bool)> = (0..s.legs.len())
            .filter(|&i| s.legs[i].recv_armed)
            .map(|i| (i, s.legs[i].gro))
            .collect();
        if let Some(ls) = self.streams.get_mut(&stream) {
            match role {
                Role::Publisher => {
                    if ls.publisher == Some(idx) {
                        ls.publisher = None;
                    }
                }
                Role::Player => {
                    ls.players.retain(|&p| p != idx);
                    // The shared history serves engine-protected WebRTC players only.
                    let sessions = &self.sessions;
                    let in_place =
                        |p: &usize| sessions[*p].as_ref().is_some_and(|s| s.engine_protected());
                    if ls.history.is_some() && !ls.players.iter().any(in_place) {
                        ls.history = None;
                    }
                }
            }
        }
        let _ = self.events.send(Event::Status {
            id,
            status,
            info,
            remote,
            counters,
        });
        if armed.is_empty() {
            self.finalize(idx);
        }
        // The session is released when the last cancelled receive completes.
        for (leg, gro) in armed {
            let kind = if gro { KIND_RECV_GRO } else { KIND_RECV };
            let e = opcode::AsyncCancel::new(ud(kind, gen, leg, idx))
                .build()
                .user_data(ud(KIND_CANCEL, 0, 0, 0));
            self.push_sqe(e);
        }
        self.gc_stream(stream);
    }

    /// Releases a stopped session's socket and slot once the kernel no longer references it.
    pub(super) fn finalize(&mut self, idx: usize) {
        if let Some(s) = self.sessions[idx].take() {
            if s.legs.iter().any(|l| l.fixed.is_some()) {
                // Queued SQEs naming the slots go first (see FileTable::unregister).
                if let Err(err) = self.ring.submit() {
                    tracing::warn!(shard = self.me, %err, "io_uring submit failed");
                }
                for slot in s.legs.iter().filter_map(|l| l.fixed) {
                    self.files.unregister(&self.ring, slot);
                }
            }
            self.by_id.remove(&s.id);
            self.free_sessions.push(idx);
            let _ = self.events.send(Event::Removed { id: s.id });
            tracing::debug!(shard = self.me, id = s.id, "session removed");
        }
    }

    pub(super) fn gc_stream(&mut self, stream: StreamId) {
        if self.streams.get(&stream).is_some_and(|l| l.is_empty()) {
            self.streams.remove(&stream);
        }
    }

    /// Fails a session whose packet handling panicked (the panic message went to stderr).
    pub(super) fn session_panicked(&mut self, idx: usize) {
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
}
