//! The session's public types: role, config, errors, why a session ended, and what it
//! outputs and takes. Kept apart from the session so its interface reads on one page.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::media::KeyframeRequestKind;

use super::codecs::{Codec, MediaKind};

/// Whether a session receives media from a browser (WHIP) or sends media to one (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebRtcRole {
    Publish,
    Play,
}

/// Settings shared by all WebRTC sessions of a server. Cheap to clone (the DTLS certificate
/// and the crypto provider are generated / looked up once in [`WebRtcConfig::new`]).
#[derive(Clone)]
pub struct WebRtcConfig {
    /// Codecs a publisher may use, in preference order per media kind. The first one the
    /// offer supports is the only one of its kind in the answer. Default: H264, VP8, Opus.
    pub codecs: Vec<Codec>,
    /// A session that is not connected (ICE + DTLS) this long after the offer was accepted
    /// ends with [`DisconnectReason::ConnectTimeout`].
    pub connect_timeout: Duration,
    /// Player side: sent video packets kept for answering NACKs (str0m's RTX cache, which
    /// also drops entries older than 3 s). Each entry is a 408-byte `RtpPacket` holding an
    /// `Arc` of the payload. Audio is never retransmitted (no RTX for Opus).
    pub nack_buffer_video: usize,
    /// Player side: once DTLS is up, the engine protects and sends the player's media
    /// itself with the DTLS-SRTP keys, like an SDES SRTP player's (in place, GSO batches,
    /// no allocation; [`Output::ExternalMedia`]). False keeps every packet on str0m's
    /// send path (one allocation and two copies per packet per player). Default: true.
    pub protect_in_place: bool,
    pub(super) dtls_cert: DtlsCert,
    pub(super) crypto: Arc<CryptoProvider>,
}

impl fmt::Debug for WebRtcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRtcConfig")
            .field("codecs", &self.codecs)
            .field("connect_timeout", &self.connect_timeout)
            .field("nack_buffer_video", &self.nack_buffer_video)
            .field("protect_in_place", &self.protect_in_place)
            .finish_non_exhaustive()
    }
}

impl WebRtcConfig {
    /// Generates the server's DTLS certificate (ECDSA P-256, self-signed; browsers check it
    /// against the `a=fingerprint` of the answer, not against a CA). All sessions created
    /// from this config share it, which saves a key generation per session.
    pub fn new() -> Result<WebRtcConfig, WebRtcError> {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let dtls_cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| WebRtcError::Internal("DTLS certificate generation failed".into()))?;
        Ok(WebRtcConfig {
            codecs: vec![Codec::H264, Codec::Vp8, Codec::Opus],
            connect_timeout: Duration::from_secs(15),
            nack_buffer_video: 1000,
            protect_in_place: true,
            dtls_cert,
            crypto,
        })
    }
}

/// Why [`WebRtcSession::accept_offer`](super::WebRtcSession::accept_offer) refused an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebRtcError {
    /// The offer is not parseable SDP.
    InvalidSdp(String),
    /// The offer parsed but cannot be answered (no ICE credentials, no fingerprint, BUNDLE
    /// group not matching the m-lines, both sides ICE-lite, ...).
    BadOffer(String),
    /// No audio/video m-line with a direction usable for the role (a publisher must send,
    /// a player must receive).
    NoUsableMedia(String),
    /// No m-line offers a codec we accept (publish) or that the publisher sends (play).
    NoSupportedCodec(String),
    /// Play was asked with an empty track list.
    NoTracks,
    /// `local` cannot be an ICE host candidate (unspecified, multicast, link-local...).
    BadLocalAddress(String),
    /// str0m failed or panicked where it should not have.
    Internal(String),
}

impl fmt::Display for WebRtcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebRtcError::InvalidSdp(m) => write!(f, "offer is not valid SDP: {m}"),
            WebRtcError::BadOffer(m) => write!(f, "offer cannot be answered: {m}"),
            WebRtcError::NoUsableMedia(m) => write!(f, "offer has no usable media: {m}"),
            WebRtcError::NoSupportedCodec(m) => write!(f, "no supported codec in offer: {m}"),
            WebRtcError::NoTracks => write!(f, "the stream has no tracks to play"),
            WebRtcError::BadLocalAddress(m) => write!(f, "bad local address: {m}"),
            WebRtcError::Internal(m) => write!(f, "internal WebRTC error: {m}"),
        }
    }
}

impl std::error::Error for WebRtcError {}

/// Why a session ended. After [`Output::Disconnected`] the session is inert: inputs are
/// ignored and the shard should drop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// ICE + DTLS did not complete within [`WebRtcConfig::connect_timeout`].
    ConnectTimeout,
    /// Nothing authenticated came from the peer for 15 s: no binding request, no
    /// authenticated indication, no SRTP/SRTCP (`patches/README.md`).
    IceDisconnected,
    /// The DTLS handshake failed (bad fingerprint, no common SRTP profile, ...).
    Dtls(String),
    /// The browser closed the connection (DTLS close_notify).
    ClosedByPeer,
    /// [`WebRtcSession::close`](super::WebRtcSession::close) was called.
    Closed,
    /// str0m returned an error it cannot continue from, or panicked.
    Internal(String),
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ConnectTimeout => write!(f, "ICE/DTLS connect timeout"),
            DisconnectReason::IceDisconnected => write!(f, "ICE disconnected (consent lost)"),
            DisconnectReason::Dtls(m) => write!(f, "DTLS failed: {m}"),
            DisconnectReason::ClosedByPeer => write!(f, "closed by peer"),
            DisconnectReason::Closed => write!(f, "closed"),
            DisconnectReason::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

/// A datagram to send on the session's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The session's host candidate (the socket's address).
    pub source: SocketAddr,
    /// The browser's address as ICE nominated it (may change during a session).
    pub destination: SocketAddr,
    /// The datagram: STUN, DTLS, SRTP or SRTCP, ready to send.
    pub contents: Vec<u8>,
}

/// One RTP packet received from a publishing browser, decrypted, with header values as
/// str0m decoded them. RTX retransmissions arrive here already unwrapped (original SSRC,
/// sequence number and payload type), possibly out of order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpIn {
    pub kind: MediaKind,
    pub codec: Codec,
    /// The publisher's negotiated payload type ([`TrackInfo::payload_type`](super::TrackInfo::payload_type)).
    pub payload_type: u8,
    pub seq: u16,
    /// `seq` extended with the rollover count (never wraps).
    pub ext_seq: u64,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    /// The payload, without header, extensions or padding.
    pub payload: Arc<[u8]>,
    /// When str0m received it (the `now` of the datagram).
    pub received: Instant,
}

impl RtpIn {
    /// Length of [`RtpIn::write_to`]'s output.
    pub fn rtp_len(&self) -> usize {
        12 + self.payload.len()
    }

    /// The plain 12-byte RTP header (V=2, no padding, extension or CSRC).
    pub fn header(&self) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = 0x80;
        h[1] = self.payload_type & 0x7f | if self.marker { 0x80 } else { 0 };
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        h
    }

    /// Writes the packet as plain RTP (header + payload) into `out`, without allocating;
    /// returns its length, or `None` when `out` is too small. This is the fan-out's input:
    /// write into a stack buffer and copy that into the shard's arena.
    pub fn write_to(&self, out: &mut [u8]) -> Option<usize> {
        let n = self.rtp_len();
        let out = out.get_mut(..n)?;
        out[..12].copy_from_slice(&self.header());
        out[12..].copy_from_slice(&self.payload);
        Some(n)
    }

    /// The packet as plain RTP in a new `Vec` (allocates; tests and slow paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.rtp_len()];
        self.write_to(&mut v);
        v
    }
}

/// PLI (Picture Loss Indication) or FIR (Full Intra Request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyframeKind {
    Pli,
    Fir,
}

impl KeyframeKind {
    pub(super) fn to_s0(self) -> KeyframeRequestKind {
        match self {
            KeyframeKind::Pli => KeyframeRequestKind::Pli,
            KeyframeKind::Fir => KeyframeRequestKind::Fir,
        }
    }
}

/// A playing browser asked for a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeRequest {
    pub kind: KeyframeKind,
    /// The publisher-side payload type of the track the request is for ([`TrackInfo`](super::TrackInfo)), so
    /// the engine can target the publisher's SSRC for it. `None` if the request names a
    /// media this session does not send.
    pub payload_type: Option<u8>,
}

/// What [`WebRtcSession::poll_output`](super::WebRtcSession::poll_output) returns; call it until it returns [`Output::Timeout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram on the session's socket.
    Transmit(Transmit),
    /// Publish: a media packet for the fan-out.
    Rtp(RtpIn),
    /// Play: the browser wants a keyframe; forward to the publisher (coalesced by the engine).
    KeyframeRequest(KeyframeRequest),
    /// ICE and DTLS are up; media can flow ([`WebRtcSession::send_rtp`](super::WebRtcSession::send_rtp) is accepted from now).
    Connected,
    /// Play, right after `Connected`: from now on the engine protects and sends this
    /// player's media itself with these keys and track parameters (`send_rtp` is refused);
    /// report each packet with `note_sent`. Not output when the session stays on str0m's
    /// send path (config, or a profile the engine has no in-place protect for).
    ExternalMedia(Box<super::ExternalMedia>),
    /// Play, external media: the browser lost this packet of the track of publisher
    /// payload type `payload_type`; `seq` is in the player's sequence space. Answer with
    /// an RTX packet (`rtx_header`) or ignore it.
    Nack { payload_type: u8, seq: u16 },
    /// The session is over; drop it.
    Disconnected(DisconnectReason),
    /// Nothing more to do until this instant (call [`WebRtcSession::handle_timeout`](super::WebRtcSession::handle_timeout) then),
    /// or until a datagram arrives or the engine sends media.
    Timeout(Instant),
}

/// One RTP packet for a playing browser, from the fan-out.
#[derive(Debug, Clone)]
pub struct OutgoingRtp {
    /// The publisher's payload type ([`TrackInfo::payload_type`](super::TrackInfo::payload_type)); the session translates it
    /// to the player's.
    pub payload_type: u8,
    /// Sequence number, continuous per track for this player: pass the output of the
    /// engine's per-player [`crate::rewrite::Rewriter`] (random start below 0x8000, no jump
    /// when the publisher restarts). The session extends it to 64 bits for SRTP.
    pub seq: u16,
    /// RTP timestamp, likewise rewritten (or the publisher's; only continuity matters).
    pub timestamp: u32,
    pub marker: bool,
    /// The payload without RTP header. An `Arc` so one allocation per publisher packet can
    /// be shared by every WebRTC player of the shard (str0m keeps it in its send queue and,
    /// for video, its NACK buffer).
    pub payload: Arc<[u8]>,
}

/// Why [`WebRtcSession::send_rtp`](super::WebRtcSession::send_rtp) dropped a packet (also counted in [`WebRtcCounters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Not a Play session.
    NotPlayer,
    /// ICE/DTLS not up yet (or the session ended). Media before [`Output::Connected`] would
    /// only pile up in str0m's queue.
    NotConnected,
    /// No track of this session carries that publisher payload type (the player's offer had
    /// no matching codec for it).
    UnknownPayloadType(u8),
    /// The sequence number is older than the first packet sent on this track (extended, it
    /// would be negative): a reordered packet from before the player joined.
    TooOld,
    /// The engine sends this session's media itself ([`Output::ExternalMedia`]).
    External,
}

/// Per-session counters (cheap to copy; the shard can fold them into its stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebRtcCounters {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    /// Datagrams that are neither STUN, DTLS, RTP nor RTCP (or unparseable STUN).
    pub dropped_malformed: u64,
    /// Datagrams from an address ICE has not validated (and STUN with wrong credentials).
    pub dropped_unknown_source: u64,
    /// Datagrams after the session ended.
    pub dropped_after_close: u64,
    /// Datagrams str0m returned an error for (bad DTLS record, ...) without ending.
    pub input_errors: u64,
    /// Publish: RTP packets output.
    pub rtp_in: u64,
    /// RTP-looking datagrams str0m took but produced no packet for: failed SRTP
    /// authentication, replays and duplicates (including RTX copies of packets that had
    /// arrived after all), unknown SSRC or payload type, RTX padding probes. str0m drops
    /// these silently; this is the only trace of them.
    pub rtp_discarded: u64,
    /// Play: packets accepted by [`WebRtcSession::send_rtp`](super::WebRtcSession::send_rtp).
    pub rtp_out: u64,
    /// Play: packets refused by [`WebRtcSession::send_rtp`](super::WebRtcSession::send_rtp).
    pub rtp_out_dropped: u64,
    pub keyframe_requests_in: u64,
    pub keyframe_requests_out: u64,
    pub transmits: u64,
    pub bytes_out: u64,
}
