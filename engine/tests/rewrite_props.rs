//! Property tests of engine::rewrite::Rewriter against its documented contract (module docs):
//! within one publisher SSRC the output is the input plus a constant offset (so gaps,
//! reordering and duplicates are preserved, across u16 / u32 wraparound), and when the
//! publisher restarts with a new SSRC the output sequence continues at +1 after the highest
//! one sent, with the timestamp moving forward, under the same output SSRC.

use engine::rewrite::{Rewriter, Rewritten};
use proptest::prelude::*;

/// How the next packet's index relates to the previous ones.
#[derive(Debug, Clone, Copy)]
enum Step {
    InOrder,
    /// `n` packets lost before the next one.
    Loss(u16),
    /// The next two packets arrive swapped.
    Swap,
    /// The previous packet arrives again.
    Duplicate,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::InOrder),
        2 => (1u16..200).prop_map(Step::Loss),
        2 => Just(Step::Swap),
        1 => Just(Step::Duplicate),
    ]
}

/// One publisher run: its SSRC, first sequence number and timestamp, timestamp increase per
/// sequence number, and the arrival order as offsets from the first sequence number.
#[derive(Debug, Clone)]
struct Segment {
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    ts_per_seq: u32,
    arrivals: Vec<u32>,
}

impl Segment {
    fn seq(&self, i: u32) -> u16 {
        self.seq0.wrapping_add(i as u16)
    }
    fn ts(&self, i: u32) -> u32 {
        self.ts0.wrapping_add(i.wrapping_mul(self.ts_per_seq))
    }
}

/// Arrival order from steps. Offsets stay far below 2^15 of each other, as RTP's serial
/// number arithmetic (and the Rewriter's "highest sequence sent") needs.
fn arrivals(steps: &[Step]) -> Vec<u32> {
    let mut out = vec![0u32];
    let mut next = 1u32;
    for s in steps {
        match *s {
            Step::InOrder => {
                out.push(next);
                next += 1;
            }
            Step::Loss(n) => {
                next += n as u32;
                out.push(next);
                next += 1;
            }
            Step::Swap => {
                out.extend([next + 1, next]);
                next += 2;
            }
            Step::Duplicate => out.push(*out.last().unwrap()),
        }
    }
    out
}

fn segment() -> impl Strategy<Value = Segment> {
    (
        any::<u32>(),
        // Often right below the u16 / u32 wrap.
        prop_oneof![any::<u16>(), 65_400u16..=u16::MAX],
        prop_oneof![any::<u32>(), (u32::MAX - 2_000_000)..=u32::MAX],
        prop_oneof![Just(0u32), 1u32..=6000, Just(3000), Just(960)],
        prop::collection::vec(step(), 0..80),
    )
        .prop_map(|(ssrc, seq0, ts0, ts_per_seq, steps)| Segment {
            ssrc,
            seq0,
            ts0,
            ts_per_seq,
            arrivals: arrivals(&steps),
        })
}

/// Consecutive segments with different SSRCs: each new segment is a publisher restart.
fn segments() -> impl Strategy<Value = Vec<Segment>> {
    prop::collection::vec(segment(), 1..6).prop_map(|mut v| {
        for i in 1..v.len() {
            if v[i].ssrc == v[i - 1].ssrc {
                v[i].ssrc = v[i].ssrc.wrapping_add(1);
            }
        }
        v
    })
}

/// Feeds one track's segments and checks the contract; `feed` lets two tracks interleave.
struct TrackCheck {
    pt: u8,
    segments: Vec<Segment>,
    /// (segment, arrival) of the next packet to send.
    pos: (usize, usize),
    out_ssrc: Option<u32>,
    /// Output minus input for the current segment: (seq, ts).
    offset: Option<(u16, u32)>,
    /// Highest output so far (by index within its segment) and its timestamp.
    highest: Option<(u32, Rewritten)>,
}

impl TrackCheck {
    fn new(pt: u8, segments: Vec<Segment>) -> Self {
        TrackCheck {
            pt,
            segments,
            pos: (0, 0),
            out_ssrc: None,
            offset: None,
            highest: None,
        }
    }

    fn done(&self) -> bool {
        self.pos.0 == self.segments.len()
    }

    fn feed(&mut self, rw: &mut Rewriter) -> Result<(), TestCaseError> {
        let (si, ai) = self.pos;
        let seg = &self.segments[si];
        let i = seg.arrivals[ai];
        let (seq, ts) = (seg.seq(i), seg.ts(i));
        let o = rw
            .rewrite(self.pt, seq, ts, seg.ssrc)
            .ok_or_else(|| TestCaseError::fail("track refused"))?;

        // One output SSRC per track for the player's whole life, whatever the publisher does.
        prop_assert_ne!(o.ssrc, 0);
        prop_assert_eq!(*self.out_ssrc.get_or_insert(o.ssrc), o.ssrc);
        prop_assert_eq!(rw.out_ssrc(self.pt), Some(o.ssrc));

        if ai == 0 {
            if let Some((_, top)) = self.highest {
                // Restart: right after the highest sequence number sent, timestamp forward.
                prop_assert_eq!(o.seq, top.seq.wrapping_add(1), "restart seq");
                let dts = o.timestamp.wrapping_sub(top.timestamp);
                prop_assert!(dts != 0 && dts < 1 << 31, "restart ts step {}", dts);
            }
            self.offset = Some((o.seq.wrapping_sub(seq), o.timestamp.wrapping_sub(ts)));
            self.highest = None;
        }
        // Within a segment: a constant offset, so every delta (mod 2^16 / 2^32) is kept.
        let (dseq, dts) = self.offset.unwrap();
        prop_assert_eq!(o.seq, seq.wrapping_add(dseq), "seq offset changed");
        prop_assert_eq!(o.timestamp, ts.wrapping_add(dts), "ts offset changed");
        // NACKs for what the player saw map back to what the publisher sent.
        prop_assert_eq!(rw.to_source(o.ssrc, o.seq), Some((seg.ssrc, seq)));
        if self.highest.is_none_or(|(hi, _)| i > hi) {
            self.highest = Some((i, o));
        }

        self.pos = if ai + 1 < seg.arrivals.len() {
            (si, ai + 1)
        } else {
            (si + 1, 0)
        };
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Seq/ts offsets are constant within a source, restarts continue at +1; two tracks
    /// interleaved in any order do not affect each other.
    #[test]
    fn rewriter_keeps_deltas_and_continues_after_restart(
        seed in any::<u32>(),
        video in segments(),
        audio in prop::option::of(segments()),
        order in prop::collection::vec(any::<bool>(), 0..1000),
    ) {
        let mut rw = Rewriter::new(seed);
        let mut tracks = vec![TrackCheck::new(96, video)];
        if let Some(a) = audio {
            tracks.push(TrackCheck::new(111, a));
        }
        let mut order = order.into_iter().chain(std::iter::repeat(false));
        while !tracks.iter().all(TrackCheck::done) {
            let pick = usize::from(order.next().unwrap() && tracks.len() > 1);
            let t = if tracks[pick].done() { 1 - pick } else { pick };
            tracks[t].feed(&mut rw)?;
        }
        if tracks.len() == 2 {
            prop_assert_ne!(tracks[0].out_ssrc, tracks[1].out_ssrc);
        }
    }

    /// For a steady stream (no loss, no reordering, a fixed timestamp step per packet) the
    /// restart timestamp is exactly one step after the last one sent: no jump at all.
    #[test]
    fn steady_stream_restart_is_seamless(
        seed in any::<u32>(),
        a in (any::<u32>(), any::<u16>(), any::<u32>(), 1u32..=90_000, 2u32..50),
        b in (any::<u32>(), any::<u16>(), any::<u32>(), 1u32..50),
    ) {
        let (ssrc_a, seq_a, ts_a, step, n_a) = a;
        let (ssrc_b, seq_b, ts_b, n_b) = b;
        prop_assume!(ssrc_a != ssrc_b);
        let mut rw = Rewriter::new(seed);
        let mut last = None;
        for i in 0..n_a {
            let ts = ts_a.wrapping_add(i.wrapping_mul(step));
            last = rw.rewrite(96, seq_a.wrapping_add(i as u16), ts, ssrc_a);
        }
        let last = last.unwrap();
        for i in 0..n_b {
            let ts = ts_b.wrapping_add(i.wrapping_mul(step));
            let o = rw.rewrite(96, seq_b.wrapping_add(i as u16), ts, ssrc_b).unwrap();
            prop_assert_eq!(o.seq, last.seq.wrapping_add(1 + i as u16));
            prop_assert_eq!(o.timestamp, last.timestamp.wrapping_add((1 + i).wrapping_mul(step)));
            prop_assert_eq!(o.ssrc, last.ssrc);
        }
    }
}
