//! Feedback routing: players' PLI/FIR and NACK go back to the publisher, on whichever shard it
//! lives; keyframe requests are coalesced per stream.

use std::time::Instant;

use crate::api::*;
use crate::feedback::{self, Feedback, KeyframeCoalescer};
use crate::mesh::Hop;
use crate::webrtc;

use super::Shard;

impl Shard {
    pub(super) fn handle_player_rtcp(&mut self, idx: usize, data: &[u8]) {
        let s = self.sessions[idx].as_mut().expect("live session");
        let stream = s.stream;
        let mut keyframe = false;
        let mut nacks: [(u32, u16, u16); 8] = [(0, 0, 0); 8];
        let mut n_nacks = 0;
        let rewriter = &s.rewriter;
        let counters = &mut s.counters;
        let budget = &mut s.nack_budget;
        let rate = self.cfg.nack_rate_per_player;
        let shard_counters = &mut self.counters;
        let now = Instant::now();
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
                // Entries past the 8 handled per packet, or naming an unknown SSRC, are
                // dropped too; only those that would go upstream take from the budget.
                match rewriter.to_source(media_ssrc, pid) {
                    Some((src, spid)) if n_nacks < nacks.len() && budget.take(now, rate) => {
                        nacks[n_nacks] = (src, spid, blp);
                        n_nacks += 1;
                    }
                    _ => shard_counters.nacks_dropped += 1,
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
    pub(super) fn route_keyframe(&mut self, stream: StreamId) {
        match self.streams.get(&stream).and_then(|l| l.publisher_shard) {
            Some(d) if d != self.me => {
                if self.mesh.push(self.me, d, Hop::Keyframe { stream }).is_ok() {
                    self.wake_pending[d] = true;
                }
            }
            _ => self.request_keyframe(stream),
        }
    }

    pub(super) fn request_keyframe(&mut self, stream: StreamId) {
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

    pub(super) fn send_nack(&mut self, stream: StreamId, ssrc: u32, pid: u16, blp: u16) {
        let Some(p) = self.streams.get(&stream).and_then(|l| l.publisher) else {
            return;
        };
        if self.sessions[p].as_ref().is_some_and(|s| s.rtc.is_some()) {
            // str0m recovers losses on the browser's leg itself; raw RTCP would not be SRTCP.
            return;
        }
        let window = self.cfg.nack_merge_window;
        let merged = self.streams.get_mut(&stream).and_then(|ls| {
            ls.nacks
                .get_or_insert_with(|| feedback::NackMerger::new(window))
                .filter(Instant::now(), ssrc, pid, blp)
        });
        let Some((pid, blp)) = merged else {
            self.counters.nacks_merged += 1;
            return;
        };
        let leg = self.sessions[p]
            .as_ref()
            .and_then(|s| s.legs.iter().position(|l| l.last_ssrc == Some(ssrc)))
            .unwrap_or(0);
        self.counters.nacks_forwarded += 1;
        self.send_control(p, leg, &feedback::build_nack(ssrc, pid, blp));
    }
}
