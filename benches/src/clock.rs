//! The clock shared by publishers and players (same host): CLOCK_MONOTONIC in nanoseconds.

/// Nanoseconds on CLOCK_MONOTONIC.
#[inline]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as in mono_ns.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC in ns, to convert kernel receive timestamps (realtime) to
/// the monotonic clock the senders stamp with. Best of a few samples (tightest bracket).
pub fn realtime_offset_ns() -> i64 {
    let mut best = (u64::MAX, 0i64);
    for _ in 0..5 {
        let a = mono_ns();
        let r = realtime_ns();
        let b = mono_ns();
        if b - a < best.0 {
            best = (b - a, r as i64 - (a + (b - a) / 2) as i64);
        }
    }
    best.1
}

/// Sleeps until `deadline_ns` on [`mono_ns`] (returns at once if it has passed).
pub fn sleep_until(deadline_ns: u64) {
    let now = mono_ns();
    if deadline_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(deadline_ns - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_sleeps() {
        let a = mono_ns();
        sleep_until(a + 2_000_000);
        let b = mono_ns();
        assert!(b >= a + 2_000_000, "slept {} ns", b - a);
        let off = realtime_offset_ns();
        let real_now = (mono_ns() as i64 + off) as u64;
        assert!(real_now.abs_diff(realtime_ns()) < 1_000_000);
    }
}
