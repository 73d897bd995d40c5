//! Per-session deadlines of a shard in min-heaps (media deadlines; WebRTC sessions' str0m
//! timeouts in a second one, `rtc.rs`), so the loop pops what is due instead of scanning
//! every session. An entry names a session slot and its generation; when it fires,
//! the session decides whether the deadline still holds (media may have arrived meanwhile,
//! which only moved a timestamp: nothing is touched per packet here). A stale entry (its
//! session gone, the slot reused) is dropped, so nothing ever needs cancelling.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::api::{Status, RTP_ACTIVITY_INFO};

use super::Shard;

/// Deadlines as (when, session slot, generation).
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

impl Timers {
    pub(super) fn arm(&mut self, at: Instant, idx: usize, gen: u32) {
        self.heap.push(Reverse((at, idx, gen)));
    }

    /// The earliest deadline, if any.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes one entry due at `now`: (deadline, session slot, generation).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u32)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

impl Shard {
    /// Arms a new publisher's first media deadline (pending, else activity).
    pub(super) fn arm_media_timer(&mut self, idx: usize) {
        let Some(s) = self.sessions[idx].as_ref() else {
            return;
        };
        if let Some(t) = s.timeouts.pending.or(s.timeouts.rtp_activity) {
            self.timers.arm(s.created + t, idx, s.gen);
        }
    }

    /// Fails publishers whose media deadline passed; re-arms the others at their new
    /// deadline. Returns whether any entry was due.
    pub(super) fn run_timers(&mut self) -> bool {
        let now = Instant::now();
        let mut any = false;
        while let Some((_, idx, gen)) = self.timers.pop_due(now) {
            any = true;
            let Some(s) = self.sessions[idx]
                .as_ref()
                .filter(|s| s.gen == gen && !s.closing)
            else {
                continue;
            };
            let t = s.timeouts;
            let deadline = if s.active {
                t.rtp_activity.map(|d| s.last_media + d)
            } else {
                // Not started: the pending deadline, or (none set) look again later so the
                // activity deadline applies once media starts.
                match (t.pending, t.rtp_activity) {
                    (Some(p), _) => Some(s.created + p),
                    (None, Some(a)) => {
                        self.timers.arm(now + a, idx, gen);
                        continue;
                    }
                    (None, None) => None,
                }
            };
            match deadline {
                Some(d) if d <= now => {
                    let id = s.id;
                    tracing::info!(
                        shard = self.me,
                        id,
                        started = s.active,
                        "no media before the deadline; failing the session"
                    );
                    self.stop_session(id, Status::Failed, RTP_ACTIVITY_INFO.into());
                }
                Some(d) => self.timers.arm(d, idx, gen),
                None => {}
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.arm(t0 + Duration::from_millis(30), 3, 1);
        t.arm(t0 + Duration::from_millis(10), 1, 1);
        t.arm(t0 + Duration::from_millis(20), 2, 7);
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0), None);
        let now = t0 + Duration::from_millis(25);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(t.pop_due(now), Some((ms(10), 1, 1)));
        assert_eq!(t.pop_due(now), Some((ms(20), 2, 7)));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.pop_due(ms(30)), Some((ms(30), 3, 1)));
        assert_eq!(t.next(), None);
    }
}
