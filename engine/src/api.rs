//! Messages between the control thread and the shards.

use std::net::{SocketAddr, UdpSocket};

/// Engine-wide session identifier, assigned by control.
pub type SessionId = u64;
/// Engine-wide stream identifier (one per stream name while it has sessions).
pub type StreamId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Player,
}

/// Lifecycle status, as the reference server names it. `Paused`, `PlaybackProblem` and
/// `NotEnoughBandwidth` are WCS statuses this server never reports; they exist so that
/// filters naming them are valid (and match nothing) as they are on WCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    New,
    Pending,
    Publishing,
    Playing,
    Paused,
    /// A publisher that ended normally (its side stopped, or it was terminated).
    Unpublished,
    /// A player that ended normally.
    Stopped,
    Failed,
    PlaybackProblem,
    NotEnoughBandwidth,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::New,
        Status::Pending,
        Status::Publishing,
        Status::Playing,
        Status::Paused,
        Status::Unpublished,
        Status::Stopped,
        Status::Failed,
        Status::PlaybackProblem,
        Status::NotEnoughBandwidth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "NEW",
            Status::Pending => "PENDING",
            Status::Publishing => "PUBLISHING",
            Status::Playing => "PLAYING",
            Status::Paused => "PAUSED",
            Status::Unpublished => "UNPUBLISHED",
            Status::Stopped => "STOPPED",
            Status::Failed => "FAILED",
            Status::PlaybackProblem => "PLAYBACK_PROBLEM",
            Status::NotEnoughBandwidth => "NOT_ENOUGH_BANDWIDTH",
        }
    }

    /// Whether a session in this status has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Unpublished | Status::Stopped | Status::Failed)
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A session to create on a shard. The socket is already bound by control so errors (port in
/// use) are reported synchronously to the REST caller.
#[derive(Debug)]
pub struct NewSession {
    pub id: SessionId,
    pub stream: StreamId,
    pub role: Role,
    /// One leg per media section (at least one, at most [`MAX_LEGS`]). WebRTC: exactly one.
    pub legs: Vec<NewLeg>,
    /// A browser peer connection (WHIP/WHEP) whose offer control already answered; it runs
    /// ICE, DTLS and SRTP on the single leg's socket.
    pub webrtc: Option<Box<crate::webrtc::WebRtcSession>>,
    /// Publishers: when to fail for lack of media.
    pub timeouts: Timeouts,
    /// Players: served before the stream's other players in every fan-out. For a relay toward
    /// another node, whose delay adds to that of every player there.
    pub serve_first: bool,
}

/// Per-session media deadlines; `None` = never. A publisher that misses one fails with
/// [`RTP_ACTIVITY_INFO`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// A publishing publisher with no media for this long fails.
    pub rtp_activity: Option<std::time::Duration>,
    /// A publisher that has not sent its first packet this long after creation fails.
    pub pending: Option<std::time::Duration>,
}

/// Info of a publisher failed for lack of media, as the reference server words it.
pub const RTP_ACTIVITY_INFO: &str = "Failed by RTP activity";

/// Most legs (media sections / sockets) per session.
pub const MAX_LEGS: usize = 4;

/// What a leg carries, so keyframe requests (PLI) go to the video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LegKind {
    /// Unknown or mixed (plain RTP without SDP).
    #[default]
    Any,
    Audio,
    Video,
}

/// One socket of a session: a publisher's m= section or where a player receives one.
#[derive(Debug)]
pub struct NewLeg {
    pub kind: LegKind,
    pub socket: UdpSocket,
    /// Players: where to send media. Publishers: the expected source, or `None` to latch the
    /// first valid RTP packet's source (comedia).
    pub peer: Option<SocketAddr>,
    /// Publishers without `peer`: latch only a source with this address (any port).
    pub source_ip: Option<std::net::IpAddr>,
    /// Players: payload types this leg carries (empty = all). Publishers: ignored.
    pub payload_types: Vec<u8>,
    /// Players: (publisher payload type, payload type this player negotiated) pairs.
    pub pt_map: Vec<(u8, u8)>,
    /// Publishers: H264 payload types, whose SPS/PPS the shard caches for late players.
    pub h264_payload_types: Vec<u8>,
    /// Decrypts what arrives on this leg (publisher media, player RTCP). Built by control
    /// so key derivation stays off the shard.
    pub srtp_in: Option<crate::srtp::SrtpContext>,
    /// Encrypts what this leg sends (player media, RTCP to the publisher).
    pub srtp_out: Option<crate::srtp::SrtpContext>,
}

impl NewLeg {
    /// A plain-RTP leg carrying everything.
    pub fn plain(socket: UdpSocket, peer: Option<SocketAddr>) -> NewLeg {
        NewLeg {
            kind: LegKind::Any,
            socket,
            peer,
            source_ip: None,
            payload_types: Vec::new(),
            pt_map: Vec::new(),
            h264_payload_types: Vec::new(),
            srtp_in: None,
            srtp_out: None,
        }
    }
}

/// Commands from control to one shard.
#[derive(Debug)]
pub enum Command {
    AddSession(NewSession),
    /// Sent to the publisher's shard: the shards (other than itself) that have players of
    /// `stream`, so it knows where to forward.
    SetRoutes {
        stream: StreamId,
        shards: Vec<usize>,
    },
    /// Sent to shards with players of `stream`: where keyframe requests and NACKs go.
    SetPublisherShard {
        stream: StreamId,
        shard: Option<usize>,
    },
    Terminate {
        id: SessionId,
        info: String,
    },
    Stats {
        reply: crossbeam_channel::Sender<ShardStats>,
    },
    /// Liveness: the shard answers at once (readiness checks; no snapshot built).
    Ping {
        reply: crossbeam_channel::Sender<()>,
    },
    /// For robustness tests: make a bug happen where production code would hit one.
    InjectFault(Fault),
    Shutdown,
}

/// Faults a test can inject (see `tests/tests/robustness.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Handling this session's next datagram panics: the shard must fail only that session.
    PanicOnNextPacket(SessionId),
    /// The shard's loop panics: the process must exit non-zero rather than run half-dead.
    PanicShard,
    /// The shard's loop sleeps this long (a stuck shard: readiness must notice).
    Stall(std::time::Duration),
    /// This session's sockets refuse GSO sends, as the kernel does for real (SO_NO_CHECK
    /// makes UDP_SEGMENT sends fail with EINVAL): the fallback must deliver everything.
    RefuseGso(SessionId),
}

/// Events from shards to control.
#[derive(Debug, Clone)]
pub enum Event {
    Status {
        id: SessionId,
        status: Status,
        info: String,
        remote: Option<SocketAddr>,
        /// The session's counters when the status changed (final figures on a stop).
        counters: SessionCounters,
    },
    /// A publisher's H264 parameter sets changed (sent once per change, not per packet).
    ParamSets {
        id: SessionId,
        sps: Vec<u8>,
        pps: Vec<u8>,
    },
    /// A session's resources are gone from its shard (after a stop).
    Removed { id: SessionId },
}

/// Per-session counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Publishers: sequence gaps seen. Players: packets dropped for this player (full rings,
    /// send errors).
    pub lost: u64,
    pub rtcp_in: u64,
    pub pli_in: u64,
    pub nack_in: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone)]
pub struct SessionStats {
    pub id: SessionId,
    pub stream: StreamId,
    pub role: Role,
    pub remote: Option<SocketAddr>,
    pub counters: SessionCounters,
    pub payload_types: Vec<u8>,
}

/// Shard-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardCounters {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped_unknown_source: u64,
    pub dropped_malformed: u64,
    pub dropped_ring_full: u64,
    pub dropped_no_send_slot: u64,
    /// SRTP/SRTCP packets that failed authentication, replay or decryption.
    pub dropped_srtp: u64,
    pub send_errors: u64,
    /// Sessions failed because handling their packet panicked.
    pub session_panics: u64,
    pub keyframe_requests_sent: u64,
    pub keyframe_requests_coalesced: u64,
    /// NACK entries sent to publishers; dropped past a player's budget; merged (every packet
    /// they name was asked for within the merge window).
    pub nacks_forwarded: u64,
    pub nacks_dropped: u64,
    pub nacks_merged: u64,
    /// WebRTC players with engine-protected media: NACKed packets resent on RTX from the
    /// stream's shared history, and NACK entries it could not answer (older than the
    /// history, or no RTX negotiated).
    pub rtx_sent: u64,
    pub nacks_unanswered: u64,
    pub arena_grows: u64,
    pub recv_rearms: u64,
    /// Packets older than `max_queue` when dequeued or about to be sent (dropped, not sent
    /// late), and datagrams the kernel dropped on full publisher sockets (SO_RXQ_OVFL).
    pub dropped_stale: u64,
    pub dropped_socket_overflow: u64,
    /// GSO: sendmsg calls that carried more than one packet, the packets they carried, and
    /// sockets that refused GSO (EINVAL/EIO; their batch was resent packet by packet and the
    /// socket sends singly from then on).
    pub gso_batches: u64,
    pub gso_segments: u64,
    pub gso_refused: u64,
    /// UDP GRO: datagrams from publishers that carried more than one packet (`media.gro`).
    pub gro_datagrams: u64,
    /// Publisher sockets whose receive buffer was resized to the stream's rate.
    pub recv_buffer_resizes: u64,
    /// Age at send of every packet copy sent to a player (arrival to send, in the server).
    pub age_at_send: crate::age::AgeHistogram,
}

#[derive(Debug, Clone)]
pub struct ShardStats {
    pub shard: usize,
    pub counters: ShardCounters,
    pub sessions: Vec<SessionStats>,
}
