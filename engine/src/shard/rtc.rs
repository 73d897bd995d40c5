//! WebRTC glue: str0m peer connections fed datagrams and time, their outputs acted on, and
//! fan-out packets handed to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::api::*;
use crate::rtp;
use crate::webrtc;

use super::Shard;

impl Shard {
    /// A datagram for a WebRTC session: str0m takes it (STUN, DTLS, SRTP, SRTCP).
    pub(super) fn rtc_datagram(&mut self, idx: usize, leg: usize, src: SocketAddr, data: &[u8]) {
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
    pub(super) fn drain_rtc(&mut self, idx: usize) {
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
                    let external = rtc.is_external();
                    if external {
                        self.follow_nominated(idx, t.destination);
                    }
                    self.send_bytes(idx, 0, t.destination, Bytes::from(t.contents));
                }
                webrtc::Output::ExternalMedia(m) => self.go_external(idx, &m),
                webrtc::Output::Nack { payload_type, seq } => {
                    self.answer_nack(idx, payload_type, seq)
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
                    // Arrival: the datagram being handled, or now when a timer released it.
                    let stamp = match self.rx_stamp {
                        0 => crate::age::now_ns(),
                        t => t,
                    };
                    if let Ok(h) = rtp::parse_rtp(&pkt) {
                        self.publisher_rtp(idx, 0, pkt, h, src, stamp);
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
                    self.arm_rtc(idx, t);
                    return;
                }
            }
        }
    }

    /// Makes sure session `idx` is woken by `at`: a new heap entry only when `at` is
    /// earlier than its live one (a later deadline is found when the live entry fires), so
    /// the heap holds about one entry per session however often str0m moves its timeout.
    pub(super) fn arm_rtc(&mut self, idx: usize, at: Instant) {
        let Some(s) = self.sessions[idx].as_mut() else {
            return;
        };
        if s.rtc_armed.is_none_or(|a| at < a) {
            s.rtc_armed = Some(at);
            self.rtc_timers.arm(at, idx, s.gen);
        }
    }

    /// Runs the WebRTC timeouts that are due (popped from the heap, not a scan of the
    /// sessions); returns whether any entry was due.
    pub(super) fn run_rtc_timers(&mut self) -> bool {
        let now = Instant::now();
        let mut due = std::mem::take(&mut self.rtc_due);
        // Pop first, then handle: a session re-armed at a deadline already past fires on the
        // next loop turn, not in this one (str0m may ask for "now" again).
        while let Some(e) = self.rtc_timers.pop_due(now) {
            due.push(e);
        }
        let any = !due.is_empty();
        for (at, idx, gen) in due.drain(..) {
            let Some(s) = self.sessions[idx]
                .as_mut()
                .filter(|s| s.gen == gen && !s.closing && s.rtc_armed == Some(at))
            else {
                continue; // stale: the session is gone or has an earlier live entry
            };
            s.rtc_armed = None;
            let deadline = s.rtc_deadline;
            match s.rtc.as_mut() {
                Some(rtc) if deadline <= now => {
                    rtc.handle_timeout(now);
                    self.drain_rtc(idx);
                }
                Some(_) => self.arm_rtc(idx, deadline),
                None => {}
            }
        }
        self.rtc_due = due;
        any
    }

    /// A fan-out packet for a WebRTC player on str0m's send path (before connect, or
    /// `protect_in_place` off, or a profile without in-place protect): str0m protects and
    /// sends it.
    pub(super) fn send_media_rtc(&mut self, p: usize, pkt: &Bytes, h: &rtp::RtpHeader) {
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
            .get_or_insert_with(|| Arc::from(super::rtx::rtp_payload(pkt, h)))
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
                        counters: s.counters,
                    });
                }
            }
            Err(_) => s.counters.dropped += 1,
        }
        self.drain_rtc(p);
    }
}
