//! WebRTC sessions (WHIP publish / WHEP play from browsers), sans-IO, on top of `str0m`.
//!
//! One [`WebRtcSession`] is one browser peer connection on one UDP socket owned by a shard:
//! a publisher ([`WebRtcRole::Publish`], the browser sends) or a player
//! ([`WebRtcRole::Play`], the browser receives). It wraps one `str0m::Rtc` in **RTP mode**
//! (`RtcConfig::set_rtp_mode(true)`): str0m does ICE-lite, DTLS, SRTP and RTCP (receiver and
//! sender reports, NACK, PLI/FIR, transport-wide CC feedback, RTX); the engine sees plain
//! RTP packets, never frames.
//!
//! Files: this one is the session (driving str0m, its outputs, sending media); `types.rs`
//! its public types (config, errors, outputs, counters); `answer.rs` the planning of an
//! answer to an offer; `codecs.rs` which codecs may be negotiated.
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
//! * Player NACKs, on the default in-place path ([`WebRtcConfig::protect_in_place`]):
//!   str0m parses them and hands the sequence numbers over (patched
//!   `StreamTx::take_nacks`); the session outputs [`Output::Nack`] with the publisher PT
//!   and the player's sequence number, and the shard answers with an RFC 4588 RTX packet
//!   built from the stream's shared history (`shard/rtx.rs`), within the player's NACK
//!   budget (`nack_rate_per_player`, one token per packet). On the str0m path they are
//!   answered by str0m from the session's own buffer ([`WebRtcConfig::nack_buffer_video`]
//!   packets, at most 3 s old), on the RTX stream (without RTX nothing is retransmitted).
//! * Player PLI/FIR becomes [`Output::KeyframeRequest`] carrying the publisher's
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
//! * **Play, in place (the default): 0 allocations per packet per player.** Once DTLS is up
//!   the session outputs [`Output::ExternalMedia`] (the local DTLS-SRTP keys, RFC 5764, and
//!   the SSRC/PT/RTX of every track); the shard then treats the player like an SDES SRTP
//!   one: each copy is rewritten and protected in place in the shard's send arena and goes
//!   out in the same GSO batches. [`WebRtcSession::note_sent`] tallies what went out (a few
//!   integer adds) and [`WebRtcSession::report_sent`] hands the tally to str0m before each
//!   timeout, so its sender reports count it. str0m keeps ICE, DTLS and all RTCP; it never
//!   sends RTP on these SSRCs, so the engine's SRTP context is the only one for them.
//!   Memory: str0m's per-peer floor (24 KiB of heap after the handshake with the patches
//!   in `patches/README.md`; 53 KiB without), no per-player history.
//! * **Play through str0m** (`protect_in_place = false`): 1 allocation per packet per player,
//!   the SRTP output `Vec<u8>` (str0m `protect_rtp`), handed over as [`Transmit::contents`];
//!   the payload `Arc<[u8]>` of [`OutgoingRtp`] once per publisher packet when the shard
//!   shares it; two payload copies per player (str0m's serialization buffer, then while
//!   encrypting); a retransmission buffer of 408-byte `RtpPacket`s per player
//!   (`nack_buffer_video`, 3 s: ~240–290 KiB per player at 135–200 packets/s).
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

mod answer;
mod codecs;
mod external;
#[cfg(test)]
mod tests;
mod types;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc, RtcError};

use answer::{clean_parse_error, codec_config_for, plan};
pub use codecs::{Codec, MediaKind, TrackInfo, H264_BASELINE, H264_CONSTRAINED_BASELINE};
pub use external::{local_keys, ExternalMedia, ExternalTrack};
pub use types::*;

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
    clock_rate: u32,
    /// External media (`external.rs`): the SSRC and RTX (PT, SSRC) str0m announced, the
    /// next RTX sequence number, and what was sent since the last report to str0m.
    ssrc: u32,
    rtx: Option<(u8, u32)>,
    rtx_seq: u16,
    tally: external::Tally,
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
    /// Play: switch to engine-protected media on connect ([`WebRtcConfig::protect_in_place`]),
    /// and whether it did.
    in_place: bool,
    external: bool,
    nack_scratch: Vec<u16>,
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

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
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
            // Grows to what one poll needs (a handful of outputs), kept per session.
            queue: VecDeque::with_capacity(4),
            rtc_timeout: now,
            last_now: now,
            connect_deadline: now + cfg.connect_timeout,
            tracks: Vec::new(),
            out: Vec::new(),
            media_in: Vec::new(),
            remote: None,
            counters: WebRtcCounters::default(),
            in_place: cfg.protect_in_place && role == WebRtcRole::Play,
            external: false,
            nack_scratch: Vec::new(),
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
                            clock_rate: t.clock_rate,
                            ssrc: 0,
                            rtx: None,
                            rtx_seq: 0,
                            tally: Default::default(),
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
        self.collect_nacks();
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
        self.report_sent(now);
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
        if self.external {
            return Err(SendError::External);
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
                if self.role == WebRtcRole::Play {
                    self.try_external();
                }
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

fn reason_of(e: RtcError) -> DisconnectReason {
    match e {
        RtcError::Dtls(e) => DisconnectReason::Dtls(e.to_string()),
        RtcError::RemoteSdp(m) => DisconnectReason::Dtls(m),
        e => DisconnectReason::Internal(e.to_string()),
    }
}
