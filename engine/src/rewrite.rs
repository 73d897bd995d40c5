//! Per-player SSRC / sequence / timestamp rewriting (sans-IO).
//!
//! Each player sees one continuous stream per track whatever happens upstream: a player that
//! joins late starts at its own random-looking sequence number, and when the publisher
//! restarts (new SSRC, sequence and timestamp bases) the output continues at +1 instead of
//! jumping, so decoders and jitter buffers do not reset. Reordering and loss are preserved
//! because the mapping is a constant offset between re-bases.

/// Maximum tracks (distinct payload types) per stream; audio + video + spare.
pub const MAX_TRACKS: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Track {
    used: bool,
    payload_type: u8,
    src_ssrc: u32,
    out_ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    last_out_seq: u16,
    last_out_ts: u32,
    /// Timestamp step to use across a re-base: the last observed per-packet increase.
    last_ts_step: u32,
    last_in_ts: u32,
}

/// The rewritten header fields for one outgoing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Rewriting state of one player.
#[derive(Debug, Clone)]
pub struct Rewriter {
    seed: u32,
    tracks: [Track; MAX_TRACKS],
    /// SSRCs imposed per payload type ([`Rewriter::pin_ssrc`]); 0 = none.
    pins: [(u8, u32); MAX_TRACKS],
}

fn mix(mut x: u32) -> u32 {
    // Cheap integer hash (lowbias32) so per-player SSRCs and initial seqs are spread out.
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The rewriting seed of a player session (the shard derives it from the session id).
pub fn player_seed(id: u64) -> u32 {
    (id as u32) ^ ((id >> 32) as u32) ^ 0xa5a5_5a5a
}

/// The SSRC a player with `seed` receives the publisher's payload type `payload_type` as.
pub fn out_ssrc_for(seed: u32, payload_type: u8) -> u32 {
    mix(seed ^ (payload_type as u32).wrapping_mul(0x9e37_79b9)).max(1)
}

impl Rewriter {
    /// `seed` should differ per player (e.g. derived from its session id).
    pub fn new(seed: u32) -> Self {
        Self {
            seed,
            tracks: [Track::default(); MAX_TRACKS],
            pins: [(0, 0); MAX_TRACKS],
        }
    }

    /// Makes the track of `payload_type` go out as `ssrc` (a WebRTC player: the SSRC its
    /// answer announced), from now on; sequence and timestamp mapping are unchanged.
    pub fn pin_ssrc(&mut self, payload_type: u8, ssrc: u32) {
        if let Some(p) = self
            .pins
            .iter_mut()
            .find(|p| p.1 == 0 || p.0 == payload_type)
        {
            *p = (payload_type, ssrc);
        }
        for t in self.tracks.iter_mut() {
            if t.used && t.payload_type == payload_type {
                t.out_ssrc = ssrc;
            }
        }
    }

    /// The SSRC this player sees for the track carrying `payload_type`, if one was assigned.
    pub fn out_ssrc(&self, payload_type: u8) -> Option<u32> {
        self.tracks
            .iter()
            .find(|t| t.used && t.payload_type == payload_type)
            .map(|t| t.out_ssrc)
    }

    /// Maps an outgoing (player-side) SSRC and sequence number back to the publisher's, for
    /// NACK translation.
    pub fn to_source(&self, out_ssrc: u32, out_seq: u16) -> Option<(u32, u16)> {
        self.tracks
            .iter()
            .find(|t| t.used && t.out_ssrc == out_ssrc)
            .map(|t| (t.src_ssrc, out_seq.wrapping_sub(t.seq_offset)))
    }

    /// All (out_ssrc, src_ssrc) pairs in use.
    pub fn ssrc_pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.tracks
            .iter()
            .filter(|t| t.used)
            .map(|t| (t.out_ssrc, t.src_ssrc))
    }

    /// Rewrites one packet's header fields. Returns `None` when the stream has more distinct
    /// payload types than [`MAX_TRACKS`] (the packet is dropped and counted by the caller).
    pub fn rewrite(&mut self, payload_type: u8, seq: u16, ts: u32, ssrc: u32) -> Option<Rewritten> {
        let idx = match self
            .tracks
            .iter()
            .position(|t| t.used && t.payload_type == payload_type)
        {
            Some(i) => i,
            None => {
                let i = self.tracks.iter().position(|t| !t.used)?;
                // Salted by payload type, not slot, so control can announce the SSRC in the
                // player's SDP (`a=ssrc`) before any packet arrives ([`out_ssrc_for`]).
                let salt = self.seed ^ (payload_type as u32).wrapping_mul(0x9e37_79b9);
                let out_ssrc = self
                    .pins
                    .iter()
                    .find(|p| p.1 != 0 && p.0 == payload_type)
                    .map_or_else(|| out_ssrc_for(self.seed, payload_type), |p| p.1);
                let first_seq = (mix(salt ^ 0x5555) & 0x7fff) as u16;
                let first_ts = mix(salt ^ 0xaaaa);
                self.tracks[i] = Track {
                    used: true,
                    payload_type,
                    src_ssrc: ssrc,
                    out_ssrc,
                    seq_offset: first_seq.wrapping_sub(seq),
                    ts_offset: first_ts.wrapping_sub(ts),
                    last_out_seq: first_seq.wrapping_sub(1),
                    last_out_ts: first_ts,
                    last_ts_step: 0,
                    last_in_ts: ts,
                };
                i
            }
        };
        let t = &mut self.tracks[idx];
        if t.src_ssrc != ssrc {
            // Publisher restarted (or was replaced): continue right after the last output.
            t.src_ssrc = ssrc;
            t.seq_offset = t.last_out_seq.wrapping_add(1).wrapping_sub(seq);
            let next_ts = t.last_out_ts.wrapping_add(t.last_ts_step.max(1));
            t.ts_offset = next_ts.wrapping_sub(ts);
            t.last_in_ts = ts;
        }
        let out_seq = seq.wrapping_add(t.seq_offset);
        let out_ts = ts.wrapping_add(t.ts_offset);
        // Track the highest sequence sent (modulo wrap) so a re-base continues after it.
        if (out_seq.wrapping_sub(t.last_out_seq) as i16) > 0 {
            t.last_out_seq = out_seq;
            let step = ts.wrapping_sub(t.last_in_ts);
            if step != 0 && (step as i32) > 0 {
                t.last_ts_step = step;
            }
            t.last_in_ts = ts;
            t.last_out_ts = out_ts;
        }
        Some(Rewritten {
            seq: out_seq,
            timestamp: out_ts,
            ssrc: t.out_ssrc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_constant_and_preserve_gaps_and_order() {
        let mut r = Rewriter::new(42);
        let a = r.rewrite(96, 100, 1000, 7).unwrap();
        let b = r.rewrite(96, 102, 2000, 7).unwrap();
        let c = r.rewrite(96, 101, 1500, 7).unwrap();
        assert_eq!(b.seq, a.seq.wrapping_add(2));
        assert_eq!(c.seq, a.seq.wrapping_add(1));
        assert_eq!(b.timestamp, a.timestamp.wrapping_add(1000));
        assert_eq!(a.ssrc, b.ssrc);
        assert_ne!(a.ssrc, 7);
    }

    #[test]
    fn wraps_around_u16() {
        let mut r = Rewriter::new(1);
        let first = r.rewrite(96, 65534, 0, 9).unwrap();
        for i in 1..10u16 {
            let o = r.rewrite(96, 65534u16.wrapping_add(i), 0, 9).unwrap();
            assert_eq!(o.seq, first.seq.wrapping_add(i));
        }
    }

    #[test]
    fn publisher_restart_continues_sequence() {
        let mut r = Rewriter::new(5);
        let mut last = r.rewrite(96, 10, 90_000, 1).unwrap();
        last = r.rewrite(96, 11, 93_000, 1).unwrap().max_seq(last);
        let next = r.rewrite(96, 40_000, 7, 2).unwrap();
        assert_eq!(next.seq, last.seq.wrapping_add(1));
        assert_eq!(next.timestamp, last.timestamp.wrapping_add(3000));
        assert_eq!(next.ssrc, last.ssrc);
    }

    #[test]
    fn tracks_are_independent_per_payload_type() {
        let mut r = Rewriter::new(9);
        let v = r.rewrite(96, 1, 0, 100).unwrap();
        let a = r.rewrite(111, 500, 0, 200).unwrap();
        assert_ne!(v.ssrc, a.ssrc);
        assert_eq!(r.to_source(a.ssrc, a.seq), Some((200, 500)));
        assert_eq!(r.to_source(v.ssrc, v.seq.wrapping_add(3)), Some((100, 4)));
        for pt in [1, 2] {
            r.rewrite(pt, 0, 0, 1).unwrap();
        }
        assert!(r.rewrite(3, 0, 0, 1).is_none());
    }

    #[test]
    fn pinned_ssrc_replaces_the_derived_one_and_maps_back() {
        let mut r = Rewriter::new(9);
        let before = r.rewrite(96, 100, 1000, 7).unwrap();
        r.pin_ssrc(96, 0xabcd);
        let after = r.rewrite(96, 101, 1100, 7).unwrap();
        assert_eq!(after.ssrc, 0xabcd);
        assert_eq!(after.seq, before.seq.wrapping_add(1));
        assert_eq!(r.to_source(0xabcd, after.seq), Some((7, 101)));
        r.pin_ssrc(111, 0x1234);
        assert_eq!(r.rewrite(111, 5, 0, 8).unwrap().ssrc, 0x1234);
    }

    #[test]
    fn different_players_get_different_ssrcs() {
        let a = Rewriter::new(1).rewrite(96, 0, 0, 1).unwrap();
        let b = Rewriter::new(2).rewrite(96, 0, 0, 1).unwrap();
        assert_ne!(a.ssrc, b.ssrc);
    }

    trait MaxSeq {
        fn max_seq(self, other: Self) -> Self;
    }
    impl MaxSeq for Rewritten {
        fn max_seq(self, other: Self) -> Self {
            if (self.seq.wrapping_sub(other.seq) as i16) >= 0 {
                self
            } else {
                other
            }
        }
    }
}
