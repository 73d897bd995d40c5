//! WebRTC glue: str0m peer connections fed datagrams and time, their outputs acted on, and
//! fan-out packets handed to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
                    self.next_rtc_deadline = self.next_rtc_deadline.min(t);
                    return;
                }
            }
        }
    }

    /// Runs WebRTC timers that are due; returns whether any was.
    pub(super) fn run_rtc_timers(&mut self) -> bool {
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
