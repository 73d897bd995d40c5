//! Packet age: when a datagram reached the host (the kernel's receive timestamp) against when
//! the server sends it on. A packet older than `media.max_queue_ms` is dropped rather than
//! sent late (live media is useless late), and the age of what is sent is kept as a
//! histogram with fixed buckets (no allocation; one array per shard).

/// Nanoseconds on CLOCK_REALTIME, the clock the kernel stamps received datagrams with
/// (SO_TIMESTAMPNS). A vDSO read, no syscall.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Upper bounds of the age buckets, in seconds (the last bucket, +Inf, is implied).
pub const AGE_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];
const AGE_BUCKETS_NS: [u64; 12] = [
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
];

/// Counts of packets sent by age at send (per bucket, not cumulative), and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgeHistogram {
    pub buckets: [u64; 13],
    pub sum_ns: u64,
}

impl AgeHistogram {
    /// Records `n` packets of age `age_ns`.
    pub fn record(&mut self, age_ns: u64, n: u64) {
        let i = AGE_BUCKETS_NS
            .iter()
            .position(|&b| age_ns <= b)
            .unwrap_or(AGE_BUCKETS_NS.len());
        self.buckets[i] += n;
        self.sum_ns = self.sum_ns.wrapping_add(age_ns.saturating_mul(n));
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn merge(&mut self, o: &AgeHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.wrapping_add(o.sum_ns);
    }

    /// The upper bound (seconds) of the bucket holding quantile `q` (None when empty; the
    /// +Inf bucket reports infinity).
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(AGE_BUCKETS_S.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// Age of a packet stamped `stamp_ns` at `now_ns` (0 if the clock stepped back).
pub fn age(now_ns: u64, stamp_ns: u64) -> u64 {
    now_ns.saturating_sub(stamp_ns)
}

/// Whether a packet stamped `stamp_ns` is too old to send at `now_ns` (`max_ns == 0`: never).
pub fn stale(now_ns: u64, stamp_ns: u64, max_ns: u64) -> bool {
    max_ns > 0 && age(now_ns, stamp_ns) > max_ns
}

/// The SO_RCVBUF a publisher socket needs to hold `max_queue_ns` of a stream arriving at
/// `bytes_per_s`, twice over for bursts (the kernel doubles the value set, for its own
/// per-datagram overhead), never less than a keyframe burst needs nor more than 4 MiB. Past
/// that, waiting packets would be dropped as stale anyway; a smaller buffer lets the kernel
/// drop them for free instead of the shard paying to dequeue them.
pub fn recv_buffer_for(bytes_per_s: u64, max_queue_ns: u64) -> usize {
    const MIN: u64 = 256 << 10;
    const MAX: u64 = 4 << 20;
    let need = (bytes_per_s as u128 * max_queue_ns as u128 / 1_000_000_000) as u64 * 2;
    need.clamp(MIN, MAX) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let mut h = AgeHistogram::default();
        h.record(100_000, 98); // 0.1 ms
        h.record(30_000_000, 1); // 30 ms
        h.record(3_000_000_000, 1); // 3 s: +Inf
        assert_eq!(h.count(), 100);
        assert_eq!(h.buckets[0], 98);
        assert_eq!(h.buckets[6], 1);
        assert_eq!(h.buckets[12], 1);
        assert_eq!(h.quantile_bound(0.5), Some(0.0005));
        assert_eq!(h.quantile_bound(0.99), Some(0.05));
        assert_eq!(h.quantile_bound(1.0), Some(f64::INFINITY));
        let mut m = AgeHistogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count(), 200);
        assert_eq!(AgeHistogram::default().quantile_bound(0.99), None);
    }

    #[test]
    fn age_is_never_negative_and_buffers_are_bounded() {
        assert_eq!(age(5, 10), 0);
        assert_eq!(age(10, 4), 6);
        assert!(stale(100, 10, 50) && !stale(100, 60, 50) && !stale(100, 0, 0));
        // 2,600 pps x 1,200 B for 50 ms, twice: ~312 KB, above the floor.
        let b = recv_buffer_for(2_600 * 1_200, 50_000_000);
        assert!(b > 256 << 10 && b < 4 << 20, "{b}");
        assert_eq!(recv_buffer_for(1_000, 50_000_000), 256 << 10);
        assert_eq!(recv_buffer_for(u64::MAX / 4, 50_000_000), 4 << 20);
    }
}
