//! WebRTC sessions (WHIP publish / WHEP play from browsers), sans-IO, on top of `str0m`.
//!
//! One [`WebRtcSession`] is one browser peer connection on one UDP socket owned by a shard:
//! a publisher ([`WebRtcRole::Publish`], the browser sends) or a player
//! ([`WebRtcRole::Play`], the browser receives). It wraps one `str0m::Rtc` in **RTP mode**
//! (`RtcConfig::set_rtp_mode(true)`): str0m does ICE-lite, DTLS, SRTP and RTCP (receiver and
//! sender reports, NACK, PLI/FIR, transport-wide CC feedback, RTX); the engine sees plain
//! RTP packets, never frames.
//!
//! # Driving a session
//!
//! ```text
//! control:  (session, answer) = WebRtcSession::accept_offer(cfg, role, offer, local, now, tracks)
//!           -> answer is the WHIP/WHEP HTTP 201 body; the session moves to the shard (it is Send)
//! shard:    datagram on the session's socket -> handle_datagram(now, src, dst, bytes)
//!           timer reached                    -> handle_timeout(now)
//!           fan-out packet for a player      -> send_rtp(now, &OutgoingRtp)
//!           keyframe wanted from a publisher -> request_keyframe(now, kind, pt)
//!           then: loop { match poll_output() { Timeout(t) => { arm timer at t; break } o => act } }
//! ```
//!
//! * **str0m's one rule** is "after every mutation, poll until `Timeout` before the next
//!   mutation". The session keeps it internally: each mutating call above drives str0m to its
//!   timeout and queues what came out, and [`WebRtcSession::poll_output`] only pops that
//!   queue. So the shard may feed a whole batch of datagrams before polling; the outputs just
//!   wait in the queue (poll once per loop turn, or they accumulate).
//! * **Time** is whatever `Instant` the caller passes; str0m never reads the clock. It must
//!   not go backwards (the session clamps if it does). [`Output::Timeout`] can be "now" (for
//!   instance right after `send_rtp`): call `handle_timeout` at once then. An idle connected
//!   session wants about one timeout per second (RTCP reports, ICE); unconnected sessions
//!   also time out at [`WebRtcConfig::connect_timeout`].
//! * **Ending**: [`Output::Disconnected`] with a [`DisconnectReason`]: connect timeout, ICE
//!   consent lost (str0m's ICE-lite agent gives up 15 s after the peer's last binding
//!   request or authenticated SRTP/SRTCP, `patches/README.md`), DTLS failure (at once with
//!   its reason while connecting), the browser closing (DTLS
//!   close_notify), or [`WebRtcSession::close`]. The session is inert afterwards: drop it.
//! * **Panics**: str0m promises not to panic on input, but a panic in a shard takes the
//!   process down (`engine::Engine::start`), so every call into str0m runs under
//!   `catch_unwind`; a panic ends only that session, with [`DisconnectReason::Internal`].
//!
//! # ICE-lite, candidate, DTLS role
//!
//! * The only ICE candidate is `local`, a host candidate: the address of the session's
//!   socket **as the browser reaches it** (the public address behind a 1:1 NAT, never
//!   `0.0.0.0`). No STUN/TURN gathering: this is ICE-lite (`a=ice-lite` in the answer), so
//!   the browser is the controlling agent, sends the binding requests and nominates; the
//!   session learns the browser's address from them (peer-reflexive), whatever NAT the
//!   browser is behind. The server's address must be directly reachable.
//! * Every datagram is attributed to `local`, whatever `dst` says: str0m drops STUN whose
//!   destination is not a local candidate, which a socket bound to `0.0.0.0` or a NATed
//!   address would otherwise trigger.
//! * Datagrams from an address ICE has not validated are dropped before str0m
//!   (`Rtc::accepts`): only a STUN request with this session's credentials introduces an
//!   address. The destination of a [`Transmit`] is the nominated address and can change
//!   mid-session (ICE): send each datagram to its own `destination`, do not latch a peer.
//! * DTLS: the browser offers `a=setup:actpass`, the answer says `a=setup:passive`: **the
//!   server is the DTLS server**, the browser sends the ClientHello once ICE is up. (An offer
//!   with `setup:passive` makes the session the DTLS client.) The certificate is ECDSA P-256,
//!   self-signed, generated once in [`WebRtcConfig::new`] and shared by all sessions; the
//!   browser checks it against the answer's `a=fingerprint`.
//!
//! # What the answer contains
//!
//! `a=ice-lite`, `a=group:BUNDLE` of the accepted m-lines, per m-line `a=ice-ufrag`,
//! `a=ice-pwd`, `a=fingerprint:sha-256`, `a=setup:passive`, `a=mid`, `a=rtcp-mux`, the
//! direction (`recvonly` for Publish, `sendonly` for Play, also when the browser offered
//! `sendrecv`), the host candidate in the first m-line, and exactly **one codec** per m-line
//! (video with its RTX payload type, `nack`, `nack pli`, `ccm fir`, `transport-cc`). Play
//! answers also carry `a=ssrc` / `a=ssrc-group:FID` for the session's send streams. Header
//! extensions: audio level, abs-send-time, transport-wide CC, `sdes:mid`; deliberately
//! **not** video-orientation (the fan-out forwards 12-byte headers, so a browser relying on
//! CVO would look rotated on every player; without it the browser rotates the pixels) and
//! not rid (no simulcast). An m-line that cannot be used (wrong direction, a second m-line
//! of the same kind, no acceptable codec) is rejected (port 0) and the rest answered; with
//! nothing usable, [`WebRtcSession::accept_offer`] fails with a message listing what the
//! offer had. See the test `chrome_whip_offer_is_answered` for a full example.
//!
//! # Codecs and payload types
//!
//! str0m's codec list is per session, not per m-line, so each session is built with one
//! codec per media kind (see `codecs.rs`): a publisher gets the first of
//! [`WebRtcConfig::codecs`] its offer supports (H264 only with `packetization-mode=1` and
//! profile 42e01f or 42001f; VP8; Opus); a player gets the publisher's codecs
//! ([`TrackInfo`]).
//!
//! * Payload type numbers follow the browser: a publish session outputs the publisher's own
//!   PTs ([`TrackInfo::payload_type`], what [`WebRtcSession::tracks`] returns); a play
//!   session sends with the player's PTs. **The engine always speaks publisher PTs**: pass
//!   them to [`WebRtcSession::send_rtp`], which translates through the session's PT map
//!   (publisher PT → the player's m-line and PT). A publisher PT the player has no codec
//!   for is refused ([`SendError::UnknownPayloadType`]).
//! * Sequence numbers for `send_rtp` (a choice): pass the output of the engine's per-player
//!   [`crate::rewrite::Rewriter`] (continuous per track, random start below 0x8000, no jump
//!   when the publisher restarts). The session extends the 16-bit number to str0m's 64-bit
//!   `SeqNo` (the SRTP rollover counter starts at 0 with the first packet). The SSRC is not
//!   taken from the fan-out: each play session sends with the SSRC str0m announced in the
//!   answer (plus an RTX SSRC), so only the Rewriter's seq and timestamp matter here.
//!
//! # Feedback
//!
//! * Player NACKs are answered by str0m itself from the session's retransmission buffer
//!   ([`WebRtcConfig::nack_buffer_video`] packets, at most 3 s old), on the RTX stream
//!   (every browser offers RTX; without it str0m does not retransmit). The engine does not
//!   see them. Player PLI/FIR becomes [`Output::KeyframeRequest`] carrying the publisher's
//!   video PT; route it to the publisher through the engine's `KeyframeCoalescer`.
//! * Toward a publishing browser, str0m sends receiver reports, transport-wide CC feedback
//!   (the browser's bandwidth estimate depends on it) and NACKs for gaps; retransmissions
//!   come back on RTX and are output unwrapped, hence possibly **out of order** (the fan-out
//!   forwards them as they come; the Rewriter preserves reordering). Keyframes are asked
//!   with [`WebRtcSession::request_keyframe`]. **Never send the engine's raw PLI/NACK
//!   packets (`feedback::build_pli`/`build_nack`) to a WebRTC publisher's socket**: they are
//!   not SRTCP; keyframe requests go through `request_keyframe`, and NACKs from plain-RTP
//!   players are not needed (str0m already recovers losses on the browser leg).
//!
//! # Per-packet cost (measured in `tests/webrtc_alloc.rs`)
//!
//! Unlike the plain RTP path (no allocation per packet, `tests/no_alloc.rs`), str0m
//! allocates; acceptable for the WebRTC path, and here is where:
//!
//! * **Publish: 1 allocation per packet**: str0m copies the decrypted payload into a fresh
//!   `Arc<[u8]>` (`Session::handle_rtp`, decryption itself is into a reused scratch
//!   buffer). **2** while the browser still puts the `sdes:mid` header extension on its
//!   packets (str0m builds a `String` to parse it): Chrome stops after the session's first
//!   receiver report (about a second), a str0m-based publisher with RTX never does. The
//!   session adds none: [`RtpIn`] holds str0m's `Arc`, and [`RtpIn::write_to`] writes plain
//!   RTP into a caller buffer (a stack array, then the shard arena's single copy).
//! * **Play: 1 allocation per packet per player**: the SRTP output `Vec<u8>` (str0m
//!   `protect_rtp`), handed over as [`Transmit::contents`] (wrap it with `Bytes::from(vec)`,
//!   no copy). Plus the payload `Arc<[u8]>` of [`OutgoingRtp`]: **once per publisher packet**
//!   if the shard builds it once and clones it for all its WebRTC players, otherwise one
//!   allocation and copy per player. Each player then copies the payload twice (into
//!   str0m's serialization buffer, then while encrypting). RTCP and reports: ~0.02 per
//!   packet, amortized.
//! * **Memory per player**: the retransmission buffer keeps a 408-byte `RtpPacket` per sent
//!   video packet (up to `nack_buffer_video`, 3 s): at 200 packets/s about 600 entries,
//!   ~240 KiB per player, plus the shared payloads of the last 3 s.
//! * `accept_offer` (control thread) parses the SDP once, clones it, and builds small codec
//!   configs to match each offered payload: negligible next to the HTTP exchange.
//!
//! # Not done here
//!
//! Header extension values (audio level, CVO) are not forwarded; A/V sync at the player
//! uses the send time as the sender-report wallclock; no simulcast, ICE restart or trickle
//! (an ICE-lite server needs no remote candidates: a WHIP PATCH with candidates can be
//! answered 204 and ignored); no data channels (an offered m=application is answered by
//! str0m but unused).

mod codecs;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::format::{CodecConfig, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc, RtcError};

pub use codecs::{Codec, MediaKind, TrackInfo, H264_BASELINE, H264_CONSTRAINED_BASELINE};

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
    dtls_cert: DtlsCert,
    crypto: Arc<CryptoProvider>,
}

impl fmt::Debug for WebRtcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRtcConfig")
            .field("codecs", &self.codecs)
            .field("connect_timeout", &self.connect_timeout)
            .field("nack_buffer_video", &self.nack_buffer_video)
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
            dtls_cert,
            crypto,
        })
    }
}

/// Why [`WebRtcSession::accept_offer`] refused an offer.
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
    /// [`WebRtcSession::close`] was called.
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
    /// The publisher's negotiated payload type ([`TrackInfo::payload_type`]).
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
    fn to_s0(self) -> KeyframeRequestKind {
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
    /// The publisher-side payload type of the track the request is for ([`TrackInfo`]), so
    /// the engine can target the publisher's SSRC for it. `None` if the request names a
    /// media this session does not send.
    pub payload_type: Option<u8>,
}

/// What [`WebRtcSession::poll_output`] returns; call it until it returns [`Output::Timeout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram on the session's socket.
    Transmit(Transmit),
    /// Publish: a media packet for the fan-out.
    Rtp(RtpIn),
    /// Play: the browser wants a keyframe; forward to the publisher (coalesced by the engine).
    KeyframeRequest(KeyframeRequest),
    /// ICE and DTLS are up; media can flow ([`WebRtcSession::send_rtp`] is accepted from now).
    Connected,
    /// The session is over; drop it.
    Disconnected(DisconnectReason),
    /// Nothing more to do until this instant (call [`WebRtcSession::handle_timeout`] then),
    /// or until a datagram arrives or the engine sends media.
    Timeout(Instant),
}

/// One RTP packet for a playing browser, from the fan-out.
#[derive(Debug, Clone)]
pub struct OutgoingRtp {
    /// The publisher's payload type ([`TrackInfo::payload_type`]); the session translates it
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

/// Why [`WebRtcSession::send_rtp`] dropped a packet (also counted in [`WebRtcCounters`]).
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
    /// Play: packets accepted by [`WebRtcSession::send_rtp`].
    pub rtp_out: u64,
    /// Play: packets refused by [`WebRtcSession::send_rtp`].
    pub rtp_out_dropped: u64,
    pub keyframe_requests_in: u64,
    pub keyframe_requests_out: u64,
    pub transmits: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Connected,
    Dead,
}

/// Play: how one publisher track goes out to this player.
#[derive(Debug)]
struct OutTrack {
    /// Publisher payload type.
    src_pt: u8,
    mid: Mid,
    /// The player's payload type.
    pt: Pt,
    kind: MediaKind,
    /// Last extended sequence number written.
    last_seq: Option<u64>,
}

/// Publish: a media section and the payload types it carries.
#[derive(Debug)]
struct InMedia {
    mid: Mid,
    kind: MediaKind,
    pts: Vec<u8>,
}

/// One browser peer connection (one publisher or one player) on one UDP socket.
pub struct WebRtcSession {
    rtc: Rtc,
    role: WebRtcRole,
    local: SocketAddr,
    state: State,
    queue: VecDeque<Output>,
    /// str0m's next timeout, from the last drain.
    rtc_timeout: Instant,
    last_now: Instant,
    connect_deadline: Instant,
    tracks: Vec<TrackInfo>,
    out: Vec<OutTrack>,
    media_in: Vec<InMedia>,
    remote: Option<SocketAddr>,
    counters: WebRtcCounters,
}

impl fmt::Debug for WebRtcSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRtcSession")
            .field("role", &self.role)
            .field("local", &self.local)
            .field("state", &self.state)
            .field("tracks", &self.tracks)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// What the offer's m-lines allow, decided before str0m sees it.
struct Plan {
    /// The offer with unusable m-lines made inactive and `sendrecv` made one-way.
    offer: SdpOffer,
    /// The codecs to configure (one per media kind; two H.264 flavours for a player).
    candidates: Vec<codecs::CodecChoice>,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

/// Chooses directions and codecs for an offer. Every audio/video m-line that cannot be used
/// (wrong direction, second m-line of a kind, no acceptable codec) is made inactive; if none
/// is left the offer is refused.
fn plan(
    cfg: &WebRtcConfig,
    role: WebRtcRole,
    offer: SdpOffer,
    tracks: &[TrackInfo],
) -> Result<Plan, WebRtcError> {
    // Candidates per kind, in preference order.
    let per_track: Vec<(TrackInfo, Vec<codecs::CodecChoice>)> = tracks
        .iter()
        .map(|t| (*t, codecs::play_candidates(t)))
        .collect();
    let publish = codecs::publish_candidates(&cfg.codecs);

    let mut sdp = (*offer).clone();
    let mut chosen: Vec<codecs::CodecChoice> = Vec::new();
    let mut used_tracks: Vec<usize> = Vec::new();
    let mut kinds_taken: Vec<MediaKind> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut codec_problems: Vec<String> = Vec::new();
    let mut usable = 0;

    // str0m's `set_direction` panics on an m-line without a direction attribute (which it
    // reads as inactive), so only ever change a direction that is there. (A macro: str0m's
    // m-line type is public but lives in a private module, so it cannot be named.)
    macro_rules! set_dir {
        ($line:expr, $d:expr) => {
            if $line.direction() != $d {
                $line.set_direction($d);
            }
        };
    }

    for (i, line) in sdp.media_lines.iter_mut().enumerate() {
        if !line.typ.is_media() || line.disabled {
            continue;
        }
        let remote = line.rtp_params();
        let Some(kind) = remote
            .iter()
            .map(|p| MediaKind::from_s0(p.spec().codec.kind()))
            .next()
        else {
            codec_problems.push(format!("m-line {i}: no audio/video payload types"));
            set_dir!(line, Direction::Inactive);
            continue;
        };
        let dir = line.direction();
        let wanted = match role {
            WebRtcRole::Publish => Direction::SendOnly,
            WebRtcRole::Play => Direction::RecvOnly,
        };
        let ok_dir = dir == wanted || dir == Direction::SendRecv;
        if !ok_dir {
            problems.push(format!(
                "m-line {i} ({kind:?}) is {dir}, a {} offer needs {wanted} or sendrecv",
                match role {
                    WebRtcRole::Publish => "WHIP publish",
                    WebRtcRole::Play => "WHEP play",
                }
            ));
            set_dir!(line, Direction::Inactive);
            continue;
        }
        if kinds_taken.contains(&kind) {
            problems.push(format!("m-line {i}: only one {kind:?} track per session"));
            set_dir!(line, Direction::Inactive);
            continue;
        }
        // sendrecv is answered one-way: the session never sends to a publisher nor receives
        // media from a player.
        set_dir!(line, wanted);

        let pick = match role {
            WebRtcRole::Publish => publish
                .iter()
                .find(|c| c.codec.kind() == kind && remote.iter().any(|r| c.matches(r)))
                .copied()
                .map(|c| vec![c]),
            WebRtcRole::Play => {
                let hit = per_track
                    .iter()
                    .enumerate()
                    .filter(|(ti, (t, _))| t.kind == kind && !used_tracks.contains(ti))
                    .find_map(|(ti, (_, cands))| {
                        let ok: Vec<_> = cands
                            .iter()
                            .filter(|c| remote.iter().any(|r| c.matches(r)))
                            .copied()
                            .collect();
                        (!ok.is_empty()).then_some((ti, ok))
                    });
                hit.map(|(ti, ok)| {
                    used_tracks.push(ti);
                    ok
                })
            }
        };
        match pick {
            Some(c) => {
                kinds_taken.push(kind);
                chosen.extend(c);
                usable += 1;
            }
            None => {
                let want = match role {
                    WebRtcRole::Publish => cfg
                        .codecs
                        .iter()
                        .filter(|c| c.kind() == kind)
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join("/"),
                    WebRtcRole::Play => tracks
                        .iter()
                        .filter(|t| t.kind == kind)
                        .map(|t| t.codec.name())
                        .collect::<Vec<_>>()
                        .join("/"),
                };
                let want = if want.is_empty() {
                    "nothing".to_string()
                } else {
                    want
                };
                codec_problems.push(format!(
                    "m-line {i} ({kind:?}) offers {}; accepted: {want}{}",
                    codecs::describe(&remote),
                    if want.contains("H264") {
                        " (H264 needs packetization-mode=1, profile 42e0xx or 4200xx)"
                    } else {
                        ""
                    }
                ));
                set_dir!(line, Direction::Inactive);
            }
        }
    }
    if usable == 0 {
        if !codec_problems.is_empty() {
            let mut all = codec_problems;
            all.extend(problems);
            return Err(WebRtcError::NoSupportedCodec(all.join("; ")));
        }
        if problems.is_empty() {
            return Err(WebRtcError::NoUsableMedia(
                "no audio or video m-line".into(),
            ));
        }
        return Err(WebRtcError::NoUsableMedia(problems.join("; ")));
    }
    for p in problems.iter().chain(codec_problems.iter()) {
        tracing::debug!(role = ?role, "offer m-line not used: {p}");
    }
    Ok(Plan {
        offer: SdpOffer::from(sdp),
        candidates: chosen,
    })
}

/// Payload types for the provisional local config: distinct, in the dynamic range.
/// str0m re-numbers to the remote's PTs while answering.
fn codec_config_for(cands: &[codecs::CodecChoice]) -> CodecConfig {
    let mut cfg = CodecConfig::empty();
    let mut next = 96u8;
    for c in cands {
        let pt = next;
        next += 1;
        let rtx = if c.codec.kind() == MediaKind::Video {
            next += 1;
            Some(next - 1)
        } else {
            None
        };
        c.add_to(&mut cfg, pt, rtx);
    }
    cfg
}

impl WebRtcSession {
    /// Accepts a WHIP (`Publish`) or WHEP (`Play`) SDP offer and returns the session and the
    /// answer SDP to send back (HTTP 201 body).
    ///
    /// * `local`: the server's address for this session's UDP socket as the browser must
    ///   reach it (the only ICE host candidate; ICE-lite). Not `0.0.0.0`.
    /// * `now`: the session's time zero; every later `now` must be `>=` (monotonic).
    /// * `tracks`: Play only: what the publisher sends ([`WebRtcSession::tracks`] of its
    ///   publish session, or built by hand for a non-WebRTC publisher). Ignored for Publish.
    pub fn accept_offer(
        cfg: &WebRtcConfig,
        role: WebRtcRole,
        offer_sdp: &str,
        local: SocketAddr,
        now: Instant,
        tracks: &[TrackInfo],
    ) -> Result<(WebRtcSession, String), WebRtcError> {
        if role == WebRtcRole::Play && tracks.is_empty() {
            return Err(WebRtcError::NoTracks);
        }
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| WebRtcError::InvalidSdp(clean_parse_error(&e.to_string())))?;
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| WebRtcError::BadLocalAddress(format!("{local}: {e}")))?;
        // `plan` edits str0m's parsed SDP; contain any panic in there like str0m's own.
        let plan =
            catch_unwind(AssertUnwindSafe(|| plan(cfg, role, offer, tracks))).map_err(|p| {
                WebRtcError::Internal(format!("panic planning the answer: {}", panic_message(p)))
            })??;
        // str0m has no media iterator; the answer's mids are the offer's.
        let mids: Vec<Mid> = plan.offer.media_lines.iter().map(|l| l.mid()).collect();

        let mut rc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(cfg.crypto.clone())
            .set_dtls_cert(cfg.dtls_cert.clone())
            .set_stats_interval(None)
            .set_send_buffer_video(cfg.nack_buffer_video.max(1))
            // Only extensions the session uses itself. Left out on purpose: video-orientation
            // (the engine forwards plain 12-byte headers, so a browser relying on CVO would
            // look rotated at every player; without it the browser rotates the pixels),
            // rid / repaired-rid (no simulcast), abs-capture-time and friends.
            .clear_extension_map()
            .set_extension(1, Extension::AudioLevel)
            .set_extension(2, Extension::AbsoluteSendTime)
            .set_extension(3, Extension::TransportSequenceNumber)
            .set_extension(4, Extension::RtpMid);
        *rc.codec_config() = codec_config_for(&plan.candidates);

        let built = catch_unwind(AssertUnwindSafe(move || {
            let mut rtc = rc.build(now);
            if rtc.add_local_candidate(candidate).is_none() {
                return Err(WebRtcError::BadLocalAddress(format!(
                    "{local}: refused as ICE candidate"
                )));
            }
            let answer = rtc
                .sdp_api()
                .accept_offer(plan.offer)
                .map_err(|e| match e {
                    RtcError::RemoteSdp(m) => WebRtcError::BadOffer(m),
                    RtcError::Sdp(e) => WebRtcError::InvalidSdp(e.to_string()),
                    e => WebRtcError::BadOffer(e.to_string()),
                })?;
            Ok((rtc, answer.to_sdp_string()))
        }));
        let (rtc, answer) = match built {
            Ok(r) => r?,
            Err(p) => {
                return Err(WebRtcError::Internal(format!(
                    "str0m panicked accepting the offer: {}",
                    panic_message(p)
                )))
            }
        };

        let mut s = WebRtcSession {
            rtc,
            role,
            local,
            state: State::Connecting,
            queue: VecDeque::with_capacity(16),
            rtc_timeout: now,
            last_now: now,
            connect_deadline: now + cfg.connect_timeout,
            tracks: Vec::new(),
            out: Vec::new(),
            media_in: Vec::new(),
            remote: None,
            counters: WebRtcCounters::default(),
        };
        s.read_negotiation(&mids, tracks)?;
        s.drain();
        Ok((s, answer))
    }

    /// Reads back what str0m negotiated: per media, the payload types (now numbered like the
    /// browser's), and builds the publish track list or the play PT map.
    fn read_negotiation(
        &mut self,
        mids: &[Mid],
        src_tracks: &[TrackInfo],
    ) -> Result<(), WebRtcError> {
        let params: Vec<PayloadParams> = self.rtc.codec_config().params().to_vec();
        for &mid in mids {
            let Some(media) = self.rtc.media(mid) else {
                continue;
            };
            let kind = MediaKind::from_s0(media.kind());
            let dir = media.direction();
            let negotiated: Vec<TrackInfo> = media
                .remote_pts()
                .iter()
                .filter_map(|pt| params.iter().find(|p| p.pt() == *pt))
                .filter_map(|p| codecs::track_of(p, kind))
                .collect();
            match self.role {
                WebRtcRole::Publish if dir.is_receiving() => {
                    if negotiated.is_empty() {
                        continue;
                    }
                    self.media_in.push(InMedia {
                        mid,
                        kind,
                        pts: negotiated.iter().map(|t| t.payload_type).collect(),
                    });
                    self.tracks.extend(negotiated);
                }
                WebRtcRole::Play if dir.is_sending() => {
                    // First source track of this kind not mapped yet whose codec was
                    // negotiated on this media (own profile preferred).
                    let found = src_tracks
                        .iter()
                        .filter(|t| t.kind == kind)
                        .filter(|t| !self.out.iter().any(|o| o.src_pt == t.payload_type))
                        .find_map(|t| {
                            let exact = negotiated.iter().find(|n| {
                                n.codec == t.codec
                                    && n.h264_profile_level_id == t.h264_profile_level_id
                            });
                            let any = negotiated.iter().find(|n| n.codec == t.codec);
                            exact.or(any).map(|n| (*t, n.payload_type))
                        });
                    if let Some((t, pt)) = found {
                        self.tracks.push(t);
                        self.out.push(OutTrack {
                            src_pt: t.payload_type,
                            mid,
                            pt: pt.into(),
                            kind,
                            last_seq: None,
                        });
                    }
                }
                _ => {}
            }
        }
        if self.tracks.is_empty() {
            return Err(WebRtcError::NoSupportedCodec(
                "str0m negotiated no usable payload type".into(),
            ));
        }
        Ok(())
    }

    /// The session's role.
    pub fn role(&self) -> WebRtcRole {
        self.role
    }

    /// Publish: the negotiated tracks (pass them to players' `accept_offer`). Play: the
    /// publisher tracks this player receives (a subset of those given).
    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// The session's host candidate.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The browser's address as ICE nominated it, once known (updated on every transmit).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// False once [`Output::Disconnected`] was queued.
    pub fn is_alive(&self) -> bool {
        self.state != State::Dead
    }

    pub fn counters(&self) -> WebRtcCounters {
        self.counters
    }

    /// Feeds a datagram received on the session's socket (STUN, DTLS, SRTP, SRTCP).
    ///
    /// `dst` is where it arrived. The session has exactly one ICE candidate, `local`, and
    /// str0m drops STUN whose destination is not a local candidate, so the datagram is always
    /// attributed to `local` (a socket bound to `0.0.0.0`, or a 1:1 NAT in front of the
    /// server, would otherwise break ICE); `dst` is only used for tracing.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += data.len() as u64;
        if self.state == State::Dead {
            self.counters.dropped_after_close += 1;
            return;
        }
        let now = self.advance(now);
        if self.check_connect_deadline(now) {
            return;
        }
        let recv = match Receive::new(Protocol::Udp, src, self.local, data) {
            Ok(r) => r,
            Err(e) => {
                self.counters.dropped_malformed += 1;
                tracing::trace!(%src, %dst, len = data.len(), "webrtc: unparseable datagram: {e}");
                return;
            }
        };
        let input = Input::Receive(now, recv);
        if !self.rtc.accepts(&input) {
            self.counters.dropped_unknown_source += 1;
            tracing::trace!(%src, "webrtc: datagram from an address ICE has not validated");
            return;
        }
        let rtp_before = self.counters.rtp_in;
        self.input(input);
        self.drain();
        // str0m's demultiplexing: first byte 128..=191, payload type outside 64..=95 (RTCP).
        let rtp_class =
            data.len() > 2 && data[0] >> 6 == 2 && !(64..96).contains(&(data[1] & 0x7f));
        if rtp_class && self.counters.rtp_in == rtp_before {
            self.counters.rtp_discarded += 1;
        }
    }

    /// Advances time: call at (or after) the instant of the last [`Output::Timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Dead {
            return;
        }
        let now = self.advance(now);
        if self.check_connect_deadline(now) {
            return;
        }
        self.input(Input::Timeout(now));
        self.drain();
    }

    /// The next output. Every mutating call (`handle_*`, `send_rtp`, `request_keyframe`,
    /// `close`) has already driven str0m to its next timeout and queued what it produced, so
    /// this never touches str0m: call it until [`Output::Timeout`], in any order relative to
    /// the mutating calls.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.queue.pop_front() {
            return o;
        }
        Output::Timeout(self.timeout())
    }

    /// When the session next needs [`WebRtcSession::handle_timeout`] (also what
    /// [`Output::Timeout`] carries once the queue is empty).
    pub fn timeout(&self) -> Instant {
        match self.state {
            State::Connecting => self.rtc_timeout.min(self.connect_deadline),
            State::Connected => self.rtc_timeout,
            // Inert: far in the future, like str0m's own "not happening".
            State::Dead => self.last_now + Duration::from_secs(86_400 * 365),
        }
    }

    /// Play: queues one RTP packet for SRTP protection and sending. See [`OutgoingRtp`] for
    /// what the fields must hold. The datagram(s) are in the output queue when this returns.
    pub fn send_rtp(&mut self, now: Instant, pkt: &OutgoingRtp) -> Result<(), SendError> {
        let r = self.try_send_rtp(now, pkt);
        match r {
            Ok(()) => self.counters.rtp_out += 1,
            Err(_) => self.counters.rtp_out_dropped += 1,
        }
        r
    }

    fn try_send_rtp(&mut self, now: Instant, pkt: &OutgoingRtp) -> Result<(), SendError> {
        if self.role != WebRtcRole::Play {
            return Err(SendError::NotPlayer);
        }
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        let now = self.advance(now);
        let Some(t) = self.out.iter_mut().find(|t| t.src_pt == pkt.payload_type) else {
            return Err(SendError::UnknownPayloadType(pkt.payload_type));
        };
        let ext = match t.last_seq {
            None => pkt.seq as u64,
            Some(last) => {
                let delta = pkt.seq.wrapping_sub(last as u16) as i16 as i64;
                let e = last as i64 + delta;
                if e < 0 {
                    return Err(SendError::TooOld);
                }
                e as u64
            }
        };
        if t.last_seq.is_none_or(|l| ext > l) {
            t.last_seq = Some(ext);
        }
        let (mid, pt, nackable) = (t.mid, t.pt, t.kind == MediaKind::Video);
        let write = RtpWrite::new(
            pt,
            SeqNo::from(ext),
            pkt.timestamp,
            now,
            pkt.payload.clone(),
        )
        .marker(pkt.marker)
        .nackable(nackable);
        let written = catch_unwind(AssertUnwindSafe(|| {
            let mut api = self.rtc.direct_api();
            match api.stream_tx_by_mid(mid, None) {
                Some(tx) => {
                    tx.write_rtp(write);
                    true
                }
                None => false,
            }
        }));
        match written {
            Ok(true) => {}
            Ok(false) => return Err(SendError::UnknownPayloadType(pkt.payload_type)),
            Err(p) => {
                self.die(DisconnectReason::Internal(format!(
                    "str0m panicked in write_rtp: {}",
                    panic_message(p)
                )));
                return Err(SendError::NotConnected);
            }
        }
        // write_rtp only enqueues; str0m timestamps the queue on the next timeout input and
        // sends from poll_output. Drain between the two mutations (str0m's rule).
        self.drain();
        self.input(Input::Timeout(now));
        self.drain();
        Ok(())
    }

    /// Publish: asks the browser for a keyframe (PLI or FIR) on the video track with the
    /// given publisher payload type, or on every video track for `None`. Returns false when
    /// there is nothing to ask (not connected, no such video track, or str0m has not seen the
    /// video SSRC yet: browsers announce it in the offer's `a=ssrc`, so this is rare, but a
    /// client without `a=ssrc` gets none before its first packet). Not coalesced here:
    /// the engine's `KeyframeCoalescer` should sit in front.
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        kind: KeyframeKind,
        payload_type: Option<u8>,
    ) -> bool {
        if self.role != WebRtcRole::Publish || self.state != State::Connected {
            return false;
        }
        let now = self.advance(now);
        let mids: Vec<Mid> = self
            .media_in
            .iter()
            .filter(|m| m.kind == MediaKind::Video)
            .filter(|m| payload_type.is_none_or(|pt| m.pts.contains(&pt)))
            .map(|m| m.mid)
            .collect();
        let asked = catch_unwind(AssertUnwindSafe(|| {
            let mut any = false;
            let mut api = self.rtc.direct_api();
            for mid in mids {
                if let Some(rx) = api.stream_rx_by_mid(mid, None) {
                    rx.request_keyframe(kind.to_s0());
                    any = true;
                }
            }
            any
        }));
        let asked = match asked {
            Ok(a) => a,
            Err(p) => {
                self.die(DisconnectReason::Internal(format!(
                    "str0m panicked in request_keyframe: {}",
                    panic_message(p)
                )));
                return false;
            }
        };
        self.drain();
        if asked {
            self.counters.keyframe_requests_out += 1;
            self.input(Input::Timeout(now));
            self.drain();
        }
        asked
    }

    /// Ends the session from our side: str0m queues RTCP BYE and a DTLS close_notify (in the
    /// output queue after this returns), then [`Output::Disconnected`]`(Closed)`.
    pub fn close(&mut self, now: Instant) {
        if self.state == State::Dead {
            return;
        }
        let _ = self.advance(now);
        let r = catch_unwind(AssertUnwindSafe(|| self.rtc.close()));
        if let Ok(Ok(())) = r {
            self.drain();
        }
        self.die(DisconnectReason::Closed);
    }

    fn advance(&mut self, now: Instant) -> Instant {
        // str0m ignores time going backwards (and would then not timestamp queued packets);
        // clamp instead.
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }

    fn check_connect_deadline(&mut self, now: Instant) -> bool {
        if self.state == State::Connecting && now >= self.connect_deadline {
            self.die(DisconnectReason::ConnectTimeout);
            return true;
        }
        false
    }

    /// One str0m mutation (network input or timeout), panics and errors contained.
    fn input(&mut self, input: Input) {
        let r = catch_unwind(AssertUnwindSafe(|| self.rtc.handle_input(input)));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // dimpl's errors are fatal: a handshake that failed (a fatal alert from the
                // peer, a certificate we cannot verify) never completes, so end it now with
                // its reason rather than as a bare connect timeout 15 s later.
                let failed_handshake =
                    self.state == State::Connecting && matches!(e, RtcError::Dtls(_));
                if self.rtc.is_alive() && !failed_handshake {
                    self.counters.input_errors += 1;
                    tracing::debug!(role = ?self.role, "webrtc: input refused: {e}");
                } else {
                    self.die(reason_of(e));
                }
            }
            Err(p) => self.die(DisconnectReason::Internal(format!(
                "str0m panicked in handle_input: {}",
                panic_message(p)
            ))),
        }
    }

    /// Polls str0m until it returns a timeout, queueing what it produced.
    fn drain(&mut self) {
        loop {
            if self.state == State::Dead && !self.rtc.is_alive() {
                return;
            }
            let r = catch_unwind(AssertUnwindSafe(|| self.rtc.poll_output()));
            let out = match r {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => {
                    self.die(reason_of(e));
                    return;
                }
                Err(p) => {
                    self.die(DisconnectReason::Internal(format!(
                        "str0m panicked in poll_output: {}",
                        panic_message(p)
                    )));
                    return;
                }
            };
            match out {
                str0m::Output::Timeout(t) => {
                    self.rtc_timeout = t;
                    return;
                }
                str0m::Output::Transmit(t) => {
                    self.counters.transmits += 1;
                    self.counters.bytes_out += t.contents.len() as u64;
                    self.remote = Some(t.destination);
                    self.queue.push_back(Output::Transmit(Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    }));
                }
                str0m::Output::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected if self.state == State::Connecting => {
                self.state = State::Connected;
                self.queue.push_back(Output::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.die(DisconnectReason::IceDisconnected);
            }
            Event::Closed => self.die(DisconnectReason::ClosedByPeer),
            Event::RtpPacket(p) if self.role == WebRtcRole::Publish => {
                let pt = *p.header.payload_type;
                let Some(t) = self.tracks.iter().find(|t| t.payload_type == pt) else {
                    // str0m only emits negotiated PTs; keep the invariant local anyway.
                    return;
                };
                self.counters.rtp_in += 1;
                self.queue.push_back(Output::Rtp(RtpIn {
                    kind: t.kind,
                    codec: t.codec,
                    payload_type: pt,
                    seq: p.header.sequence_number,
                    ext_seq: *p.seq_no,
                    timestamp: p.header.timestamp,
                    ssrc: *p.header.ssrc,
                    marker: p.header.marker,
                    payload: p.payload,
                    received: p.timestamp,
                }));
            }
            Event::KeyframeRequest(r) if self.role == WebRtcRole::Play => {
                self.counters.keyframe_requests_in += 1;
                let payload_type = self.out.iter().find(|t| t.mid == r.mid).map(|t| t.src_pt);
                self.queue
                    .push_back(Output::KeyframeRequest(KeyframeRequest {
                        kind: match r.kind {
                            KeyframeRequestKind::Pli => KeyframeKind::Pli,
                            KeyframeRequestKind::Fir => KeyframeKind::Fir,
                        },
                        payload_type,
                    }));
            }
            _ => {}
        }
    }

    fn die(&mut self, reason: DisconnectReason) {
        if self.state == State::Dead {
            return;
        }
        tracing::debug!(role = ?self.role, %reason, "webrtc session ended");
        self.state = State::Dead;
        self.rtc.disconnect();
        self.queue.push_back(Output::Disconnected(reason));
    }
}

/// str0m's parse errors start with the parser's memory address ("Parse error at
/// PointerOffset(0x7f..)"), useless to an HTTP client; keep the explanation lines.
fn clean_parse_error(msg: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for line in msg.lines() {
        let line = match line.find("Parse error at PointerOffset(") {
            Some(i) => line[..i].trim_end().trim_end_matches(':'),
            None => line.trim(),
        };
        if !line.is_empty() {
            parts.push(line);
        }
    }
    match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() => format!("{first}: {}", rest.join("; ")),
        _ => parts.join("; "),
    }
}

fn reason_of(e: RtcError) -> DisconnectReason {
    match e {
        RtcError::Dtls(e) => DisconnectReason::Dtls(e.to_string()),
        RtcError::RemoteSdp(m) => DisconnectReason::Dtls(m),
        e => DisconnectReason::Internal(e.to_string()),
    }
}
