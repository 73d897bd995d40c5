//! Receiver-side accounting (sans-IO): what a player measures about each stream it receives.
//!
//! - Loss: the server rewrites sequence numbers to be continuous per player, so after extending
//!   them to 64 bits (wrap-around) every gap is a lost packet: `expected - received`, with
//!   `expected = highest - lowest + 1` (RFC 3550 A.3).
//!   A jump of 32768 or more between consecutive arrivals (only under extreme loss) is
//!   ambiguous modulo 2^16 and is read as a late packet: the delivery count (received vs what
//!   the publishers sent, in [`crate::fanout`]) stays exact regardless.
//! - Reordering: a packet older than the highest sequence number already seen.
//! - Duplicates: a sequence number seen before (exact within the last [`WINDOW`] packets).
//! - Jitter: RFC 3550 6.4.1 interarrival jitter, `J += (|D| - J) / 16` where `D` is the change
//!   in transit time (arrival - send stamp), kept in nanoseconds.
//! - Latency: one-way, `arrival - send stamp`, both on CLOCK_MONOTONIC of the same host.

use hdrhistogram::Histogram;

use crate::pkt::parse_packet;

/// Duplicate-detection window, in packets.
pub const WINDOW: i64 = 1024;
/// Highest latency recorded (anything above is clamped): 60 s.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What one packet was, relative to what came before on its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected packet (or the first one).
    InOrder,
    /// Newer than the highest seen, with this many packets missing in between.
    Gap(u64),
    /// Older than the highest seen, not seen before.
    Reordered,
    Duplicate,
}

/// The state of one stream (one publisher) at one player.
#[derive(Debug, Clone)]
pub struct StreamRx {
    started: bool,
    max_ext: i64,
    min_ext: i64,
    /// Unique packets received.
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Number of forward jumps (bursts of loss), not packets.
    pub gap_events: u64,
    seen: [u64; (WINDOW / 64) as usize],
    jitter_ns: f64,
    last_transit: i64,
}

impl Default for StreamRx {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamRx {
    pub fn new() -> Self {
        Self {
            started: false,
            max_ext: 0,
            min_ext: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            gap_events: 0,
            seen: [0; (WINDOW / 64) as usize],
            jitter_ns: 0.0,
            last_transit: 0,
        }
    }

    fn bit(ext: i64) -> (usize, u64) {
        let i = ext.rem_euclid(WINDOW) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    fn is_seen(&self, ext: i64) -> bool {
        let (w, m) = Self::bit(ext);
        self.seen[w] & m != 0
    }

    fn mark(&mut self, ext: i64) {
        let (w, m) = Self::bit(ext);
        self.seen[w] |= m;
    }

    fn unmark(&mut self, ext: i64) {
        let (w, m) = Self::bit(ext);
        self.seen[w] &= !m;
    }

    /// Accounts one packet with sequence number `seq`, stamped `send_ns`, that arrived at
    /// `arrival_ns`.
    pub fn on_packet(&mut self, seq: u16, send_ns: u64, arrival_ns: u64) -> Arrival {
        let transit = arrival_ns as i64 - send_ns as i64;
        if !self.started {
            self.started = true;
            self.max_ext = seq as i64;
            self.min_ext = seq as i64;
            self.mark(seq as i64);
            self.received = 1;
            self.last_transit = transit;
            return Arrival::InOrder;
        }
        // Extend to 64 bits relative to the highest seen: the nearest value mod 2^16.
        let delta = seq.wrapping_sub(self.max_ext as u16) as i16 as i64;
        let ext = self.max_ext + delta;
        let kind = if delta > 0 {
            if delta >= WINDOW {
                self.seen = [0; (WINDOW / 64) as usize];
            } else {
                for e in self.max_ext + 1..ext {
                    self.unmark(e);
                }
            }
            self.mark(ext);
            self.max_ext = ext;
            if delta == 1 {
                Arrival::InOrder
            } else {
                self.gap_events += 1;
                Arrival::Gap(delta as u64 - 1)
            }
        } else if ext > self.max_ext - WINDOW && self.is_seen(ext) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        } else {
            // Older than the window: cannot tell a duplicate, count it as reordered.
            if ext > self.max_ext - WINDOW {
                self.mark(ext);
            }
            self.min_ext = self.min_ext.min(ext);
            self.reordered += 1;
            Arrival::Reordered
        };
        self.received += 1;
        let d = (transit - self.last_transit).unsigned_abs() as f64;
        self.jitter_ns += (d - self.jitter_ns) / 16.0;
        self.last_transit = transit;
        kind
    }

    /// Packets the sequence range says should have arrived.
    pub fn expected(&self) -> u64 {
        if self.started {
            (self.max_ext - self.min_ext + 1) as u64
        } else {
            0
        }
    }

    /// Packets lost inside the received sequence range (tail loss after the last packet is
    /// invisible here: compare with what the publisher sent for that).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn jitter_ns(&self) -> f64 {
        self.jitter_ns
    }
}

/// Everything one player socket received, per publisher.
#[derive(Debug, Clone, Default)]
pub struct PlayerRx {
    /// (publisher index, state); a player has few streams, a linear scan beats a map.
    pub streams: Vec<(u32, StreamRx)>,
    last: usize,
    /// Datagrams received, including malformed ones.
    pub packets: u64,
    pub bytes: u64,
    pub malformed: u64,
    /// Datagrams the player's socket dropped (receive buffer full: the tool fell behind).
    pub socket_drops: u64,
}

impl PlayerRx {
    /// Records the socket's cumulative drop counter (SO_RXQ_OVFL) seen with a datagram.
    pub fn note_socket_drops(&mut self, cumulative: u32) {
        self.socket_drops = self.socket_drops.max(cumulative as u64);
    }

    /// Accounts one datagram; returns its one-way latency in ns if it was one of ours.
    pub fn on_datagram(&mut self, data: &[u8], arrival_ns: u64) -> Option<u64> {
        self.packets += 1;
        self.bytes += data.len() as u64;
        let Some(p) = parse_packet(data) else {
            self.malformed += 1;
            return None;
        };
        let i = match self.streams.get(self.last) {
            Some((idx, _)) if *idx == p.publisher => self.last,
            _ => match self.streams.iter().position(|(idx, _)| *idx == p.publisher) {
                Some(i) => i,
                None => {
                    self.streams.push((p.publisher, StreamRx::new()));
                    self.streams.len() - 1
                }
            },
        };
        self.last = i;
        self.streams[i].1.on_packet(p.seq, p.send_ns, arrival_ns);
        Some(arrival_ns.saturating_sub(p.send_ns))
    }

    /// Unique packets received from publisher `idx`.
    pub fn received_from(&self, idx: u32) -> u64 {
        self.streams
            .iter()
            .find(|(i, _)| *i == idx)
            .map_or(0, |(_, s)| s.received)
    }
}

/// Totals over many players.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RxTotals {
    pub players: u64,
    pub streams: u64,
    pub packets: u64,
    pub bytes: u64,
    pub malformed: u64,
    pub socket_drops: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub seq_gap_loss: u64,
    pub seq_expected: u64,
    pub gap_events: u64,
    pub jitter_mean_ns: f64,
    pub jitter_max_ns: f64,
}

impl RxTotals {
    pub fn add(&mut self, p: &PlayerRx) {
        self.players += 1;
        self.packets += p.packets;
        self.bytes += p.bytes;
        self.malformed += p.malformed;
        self.socket_drops += p.socket_drops;
        for (_, s) in &p.streams {
            // Running mean over streams.
            self.streams += 1;
            self.jitter_mean_ns += (s.jitter_ns() - self.jitter_mean_ns) / self.streams as f64;
            self.jitter_max_ns = self.jitter_max_ns.max(s.jitter_ns());
            self.unique += s.received;
            self.duplicates += s.duplicates;
            self.reordered += s.reordered;
            self.seq_gap_loss += s.lost();
            self.seq_expected += s.expected();
            self.gap_events += s.gap_events;
        }
    }
}

/// A latency histogram in nanoseconds with `sigfig` significant digits.
pub fn latency_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, sigfig).expect("valid histogram bounds")
}

/// One time slice of a run.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub packets: u64,
    pub bytes: u64,
    pub latency: Histogram<u64>,
}

/// Received packets and latency per fixed interval since `start_ns`.
#[derive(Debug, Clone)]
pub struct Series {
    pub start_ns: u64,
    pub interval_ns: u64,
    pub buckets: Vec<Bucket>,
}

/// Upper bound on buckets, so a wrong clock cannot exhaust memory.
const MAX_BUCKETS: usize = 100_000;

impl Series {
    pub fn new(start_ns: u64, interval_ns: u64) -> Self {
        Self {
            start_ns,
            interval_ns: interval_ns.max(1),
            buckets: Vec::new(),
        }
    }

    fn bucket(&mut self, i: usize) -> &mut Bucket {
        let i = i.min(MAX_BUCKETS - 1);
        while self.buckets.len() <= i {
            self.buckets.push(Bucket {
                packets: 0,
                bytes: 0,
                latency: latency_histogram(2),
            });
        }
        &mut self.buckets[i]
    }

    /// Index of the interval containing `at_ns`.
    pub fn index(&self, at_ns: u64) -> usize {
        (at_ns.saturating_sub(self.start_ns) / self.interval_ns) as usize
    }

    pub fn record(&mut self, at_ns: u64, bytes: u64, latency_ns: Option<u64>) {
        let b = self.bucket(self.index(at_ns));
        b.packets += 1;
        b.bytes += bytes;
        if let Some(l) = latency_ns {
            b.latency.saturating_record(l.min(MAX_LATENCY_NS));
        }
    }

    /// Adds `other` (same start and interval) into `self`.
    pub fn merge(&mut self, other: &Series) {
        debug_assert_eq!(self.interval_ns, other.interval_ns);
        for (i, b) in other.buckets.iter().enumerate() {
            let mine = self.bucket(i);
            mine.packets += b.packets;
            mine.bytes += b.bytes;
            mine.latency.add(&b.latency).expect("same histogram bounds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkt::write_packet;

    /// Feeds `seqs` with a constant 100 µs transit, 1 ms apart.
    fn feed(seqs: &[u16]) -> (StreamRx, Vec<Arrival>) {
        let mut s = StreamRx::new();
        let kinds = seqs
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let send = 1_000_000 * i as u64;
                s.on_packet(q, send, send + 100_000)
            })
            .collect();
        (s, kinds)
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let seqs: Vec<u16> = (100..1100).collect();
        let (s, kinds) = feed(&seqs);
        assert!(kinds.iter().all(|k| *k == Arrival::InOrder));
        assert_eq!((s.expected(), s.received, s.lost()), (1000, 1000, 0));
        assert_eq!((s.reordered, s.duplicates, s.gap_events), (0, 0, 0));
        assert_eq!(s.jitter_ns(), 0.0);
    }

    #[test]
    fn gaps_are_counted_as_loss() {
        let (s, kinds) = feed(&[10, 11, 14, 15, 20]);
        assert_eq!(kinds[2], Arrival::Gap(2));
        assert_eq!(kinds[4], Arrival::Gap(4));
        assert_eq!(s.expected(), 11);
        assert_eq!(s.received, 5);
        assert_eq!(s.lost(), 6);
        assert_eq!(s.gap_events, 2);
    }

    #[test]
    fn late_packet_fills_its_gap_and_counts_as_reordered() {
        let (s, kinds) = feed(&[1, 2, 4, 3, 5]);
        assert_eq!(
            kinds,
            [
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::Gap(1),
                Arrival::Reordered,
                Arrival::InOrder
            ]
        );
        assert_eq!(s.lost(), 0);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.received, 5);
    }

    #[test]
    fn duplicates_are_not_received_twice() {
        let (s, kinds) = feed(&[1, 2, 2, 3, 1]);
        assert_eq!(kinds[2], Arrival::Duplicate);
        assert_eq!(kinds[4], Arrival::Duplicate);
        assert_eq!(
            (s.received, s.duplicates, s.lost(), s.reordered),
            (3, 2, 0, 0)
        );
    }

    #[test]
    fn sequence_wraps_around() {
        let mut seqs: Vec<u16> = (65530..=65535).collect();
        seqs.extend([0u16, 1, 3]);
        let (s, kinds) = feed(&seqs);
        assert_eq!(kinds[6], Arrival::InOrder, "65535 -> 0 is in order");
        assert_eq!(kinds[8], Arrival::Gap(1));
        assert_eq!(s.expected(), 10);
        assert_eq!(s.lost(), 1);
        // A late packet from before the wrap is still placed correctly.
        let mut s2 = s.clone();
        assert_eq!(s2.on_packet(2, 0, 0), Arrival::Reordered);
        assert_eq!(s2.lost(), 0);
        assert_eq!(s2.on_packet(65535, 0, 0), Arrival::Duplicate);
    }

    #[test]
    fn packet_older_than_first_extends_the_range() {
        let (s, _) = feed(&[50, 51, 48]);
        assert_eq!(s.expected(), 4);
        assert_eq!(s.lost(), 1, "49 is missing");
        assert_eq!(s.reordered, 1);
    }

    #[test]
    fn window_is_cleared_after_a_long_gap() {
        let mut s = StreamRx::new();
        s.on_packet(0, 0, 0);
        s.on_packet(2000, 0, 0);
        // 1000 is inside the new window and was never seen: reordered, not a duplicate.
        assert_eq!(s.on_packet(1000, 0, 0), Arrival::Reordered);
        assert_eq!(s.on_packet(1000, 0, 0), Arrival::Duplicate);
        assert_eq!(s.lost(), 2001 - 3);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        // Transit alternates 100 µs / 300 µs: |D| = 200 µs every packet, so J converges to it.
        let mut s = StreamRx::new();
        for i in 0..2000u64 {
            let send = i * 1_000_000;
            let transit = if i % 2 == 0 { 100_000 } else { 300_000 };
            s.on_packet(i as u16, send, send + transit);
        }
        assert!((s.jitter_ns() - 200_000.0).abs() < 1.0, "{}", s.jitter_ns());
        // First step by hand: J1 = 0 + (200000 - 0)/16.
        let mut t = StreamRx::new();
        t.on_packet(0, 0, 100_000);
        t.on_packet(1, 1_000_000, 1_300_000);
        assert_eq!(t.jitter_ns(), 12_500.0);
        // Constant extra delay adds no jitter.
        let mut u = StreamRx::new();
        for i in 0..100u64 {
            u.on_packet(i as u16, i * 1000, i * 1000 + 5_000_000);
        }
        assert_eq!(u.jitter_ns(), 0.0);
    }

    fn packet(seq: u16, send_ns: u64, publisher: u32) -> Vec<u8> {
        let mut b = vec![0u8; 100];
        write_packet(&mut b, seq, 0, 1, send_ns, publisher);
        b
    }

    #[test]
    fn player_tracks_publishers_separately_and_reports_latency() {
        let mut p = PlayerRx::default();
        assert_eq!(p.on_datagram(&packet(5, 1_000, 0), 4_000), Some(3_000));
        assert_eq!(p.on_datagram(&packet(900, 1_000, 1), 2_000), Some(1_000));
        assert_eq!(p.on_datagram(&packet(6, 1_000, 0), 2_000), Some(1_000));
        assert_eq!(p.on_datagram(&packet(902, 1_000, 1), 2_000), Some(1_000));
        assert_eq!(p.on_datagram(b"not rtp at all", 2_000), None);
        assert_eq!(p.streams.len(), 2);
        assert_eq!(
            (p.received_from(0), p.received_from(1), p.received_from(7)),
            (2, 2, 0)
        );
        assert_eq!((p.packets, p.malformed), (5, 1));
        p.note_socket_drops(3);
        p.note_socket_drops(2);
        assert_eq!(
            p.socket_drops, 3,
            "the counter is cumulative: keep the highest"
        );
        let mut t = RxTotals::default();
        t.add(&p);
        t.add(&PlayerRx::default());
        assert_eq!(
            (
                t.players,
                t.streams,
                t.unique,
                t.seq_gap_loss,
                t.seq_expected
            ),
            (2, 2, 4, 1, 5)
        );
        assert_eq!(t.bytes, 400 + 14);
        assert_eq!(t.socket_drops, 3);
    }

    #[test]
    fn series_buckets_and_merges() {
        let mut a = Series::new(1_000, 100);
        a.record(1_000, 10, Some(5_000));
        a.record(1_099, 10, Some(7_000));
        a.record(1_250, 10, None);
        let mut b = Series::new(1_000, 100);
        b.record(1_150, 10, Some(1_000));
        a.merge(&b);
        assert_eq!(a.buckets.len(), 3);
        assert_eq!(
            a.buckets.iter().map(|b| b.packets).collect::<Vec<_>>(),
            [2, 1, 1]
        );
        assert_eq!(a.buckets[0].latency.len(), 2);
        assert_eq!(a.buckets[1].latency.len(), 1);
        assert!(a.buckets[2].latency.is_empty());
        let p50 = a.buckets[0].latency.value_at_quantile(0.5);
        assert!((4_950..=5_050).contains(&p50), "{p50}");
    }
}
