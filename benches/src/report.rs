//! The result of one load run: JSON report, human summary, and a side-by-side comparison of
//! two runs (engine vs raw relay).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// Time to create all publish sessions.
    pub publish_ms: f64,
    /// Time to create all play sessions.
    pub play_ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    /// Packets the kernel refused (e.g. ICMP port unreachable) or could not queue.
    pub failed: u64,
    pub pps: f64,
    pub mbit_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Received {
    pub packets: u64,
    pub bytes: u64,
    /// From the start of sending to the last arrival (at least the sending time): longer
    /// than the sending time when the target drained a backlog afterwards.
    pub window_s: f64,
    /// Received packets per second of `window_s`.
    pub pps: f64,
    pub mbit_s: f64,
    /// Packets without duplicates.
    pub unique: u64,
    /// What the players should have received given what the publishers sent (unknown when the
    /// tool did not send, e.g. `load play`).
    pub expected: Option<u64>,
    pub delivery_loss: Option<u64>,
    pub delivery_loss_pct: Option<f64>,
    /// Loss seen as sequence gaps (excludes packets lost after the last one received).
    pub seq_gap_loss: u64,
    pub seq_gap_loss_pct: f64,
    pub gap_events: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub malformed: u64,
    /// Packets the players' own sockets dropped (receive buffer full): the load tool's
    /// receivers fell behind, so that part of the loss is not the target's.
    pub player_socket_drops: u64,
    /// Streams seen across all players (player x publisher pairs).
    pub streams: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Summarises a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            samples: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jitter {
    /// Mean over streams of the final RFC 3550 jitter estimate.
    pub mean_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rss {
    pub pid: u32,
    pub before_players_kib: u64,
    pub after_players_kib: u64,
    /// After the traffic, before the sessions are terminated.
    pub after_run_kib: u64,
    /// (after players - before players) / play sessions.
    pub per_player_kib: f64,
    /// (after run - before players) / play sessions: includes buffers touched by traffic.
    pub per_player_after_run_kib: f64,
}

/// SRTP mode: what the players' sampled decryption found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SrtpCheck {
    /// Crypto suite (SDES name).
    pub suite: String,
    /// Each player authenticates and decrypts one datagram in this many (the first included).
    pub check_every: u32,
    pub checked: u64,
    /// Authenticated, decrypted, and the payload was what the publisher sent.
    pub ok: u64,
    /// Failed authentication with the key the server answered.
    pub auth_failures: u64,
    /// Any other failure (replay, malformed, decrypted payload differs).
    pub other_failures: u64,
}

/// CPU time of a process over the run (from `/proc/PID/stat`), to turn packets/s into
/// packets/s per core when the load tool shares the machine's cores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub pid: u32,
    /// User + system CPU seconds between the start of sending and the end of the drain.
    pub cpu_s: f64,
    /// Wall-clock seconds of the same window.
    pub wall_s: f64,
    /// cpu_s / wall_s: cores busy on average.
    pub cores: f64,
    /// Packets the players received per CPU second of this process.
    pub rx_pps_per_core: f64,
}

/// One interval of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Start of the interval, seconds since sending started.
    pub t_s: f64,
    pub tx_pps: f64,
    /// What the players should receive: sent x fan-out.
    pub expected_rx_pps: f64,
    pub rx_pps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `engine` (through the server's REST API) or `raw` (the baseline relay).
    pub target: String,
    /// Server URL or relay address.
    pub target_addr: String,
    pub publishers: u32,
    pub players: u32,
    /// Play sessions created (0 against the raw relay).
    pub play_sessions: u32,
    /// 0 = unpaced (as fast as possible); frame profiles: their mean rate.
    pub pps_per_publisher: u32,
    /// What publishers sent: flat (paced packets), video, audio or av (frames).
    #[serde(default)]
    pub profile: String,
    pub packet_size: usize,
    /// How arrival times were taken (latency = arrival - send stamp).
    pub latency_clock: String,
    /// Requested sending time.
    pub duration_s: f64,
    /// Actual sending time.
    pub send_s: f64,
    pub setup: Setup,
    pub sent: Sent,
    pub received: Received,
    pub latency: Latency,
    pub jitter: Jitter,
    pub rss: Option<Rss>,
    /// SRTP mode only.
    #[serde(default)]
    pub srtp: Option<SrtpCheck>,
    /// The target process's CPU (`--server-pid`).
    #[serde(default)]
    pub target_cpu: Option<Cpu>,
    /// The load tool's own CPU over the same window.
    #[serde(default)]
    pub tool_cpu: Option<Cpu>,
    /// Host-wide UDP receive-buffer drops during the run (/proc/net/snmp RcvbufErrors): the
    /// target's input socket, the players' sockets, and anything else on the host.
    pub host_udp_rcvbuf_errors: Option<u64>,
    pub series: Vec<Point>,
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

impl Report {
    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let r = &self.received;
        let _ = writeln!(
            s,
            "{} {}: {} publisher(s) x {} pps{}, {} player(s), {} B packets, {:.1} s",
            self.target,
            self.target_addr,
            self.publishers,
            if self.pps_per_publisher == 0 {
                "max".to_string()
            } else {
                self.pps_per_publisher.to_string()
            },
            match self.profile.as_str() {
                "" | "flat" => String::new(),
                p => format!(" ({p} frames)"),
            },
            self.players,
            self.packet_size,
            self.send_s
        );
        if self.publishers > 0 {
            let _ = writeln!(
                s,
                "  sent     {:>10} pkts  {:>8} pps  {:>8.1} Mbit/s  failed {}",
                self.sent.packets,
                si(self.sent.pps),
                self.sent.mbit_s,
                self.sent.failed
            );
        }
        if self.players > 0 {
            let _ = writeln!(
                s,
                "  received {:>10} pkts  {:>8} pps  {:>8.1} Mbit/s  (over {:.2} s)",
                r.packets,
                si(r.pps),
                r.mbit_s,
                r.window_s
            );
            let delivery = match (r.delivery_loss, r.delivery_loss_pct, r.expected) {
                (Some(l), Some(p), Some(e)) => format!("{l} of {e} ({p:.3}%)"),
                _ => "n/a".into(),
            };
            let _ = writeln!(
                s,
                "  loss     delivery {delivery}; seq gaps {} ({:.3}%); reordered {}; duplicates {}; malformed {}",
                r.seq_gap_loss, r.seq_gap_loss_pct, r.reordered, r.duplicates, r.malformed
            );
            if let Some(h) = self.host_udp_rcvbuf_errors {
                let _ = writeln!(
                    s,
                    "  drops    at player sockets {}; host-wide UDP receive-buffer drops {h}",
                    r.player_socket_drops
                );
            }
            if r.player_socket_drops > 0 {
                let _ = writeln!(
                    s,
                    "  WARNING  the load tool's receivers fell behind ({} drops at player sockets): try --recv-threads",
                    r.player_socket_drops
                );
            }
            let l = &self.latency;
            let _ = writeln!(
                s,
                "  latency  p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  (n={}, {})",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.samples, self.latency_clock
            );
            let _ = writeln!(
                s,
                "  jitter   mean {:.1} us  max {:.1} us",
                self.jitter.mean_us, self.jitter.max_us
            );
        }
        if let Some(m) = &self.rss {
            let _ = writeln!(
                s,
                "  rss      pid {}: {} KiB -> {} KiB with players -> {} KiB after run: {:.1} KiB/player ({:.1} after run)",
                m.pid,
                m.before_players_kib,
                m.after_players_kib,
                m.after_run_kib,
                m.per_player_kib,
                m.per_player_after_run_kib
            );
        }
        if let Some(c) = &self.srtp {
            let _ = writeln!(
                s,
                "  srtp     {}: checked 1 in {} per player: {} ok, {} auth failures, {} other failures",
                c.suite, c.check_every, c.ok, c.auth_failures, c.other_failures
            );
        }
        for (who, c) in [("target", &self.target_cpu), ("tool", &self.tool_cpu)] {
            if let Some(c) = c {
                let _ = writeln!(
                    s,
                    "  cpu      {who} pid {}: {:.2} CPU s over {:.2} s ({:.2} cores): {} received pps per core",
                    c.pid,
                    c.cpu_s,
                    c.wall_s,
                    c.cores,
                    si(c.rx_pps_per_core)
                );
            }
        }
        if self.setup.publish_ms > 0.0 || self.setup.play_ms > 0.0 {
            let _ = writeln!(
                s,
                "  setup    publish {:.1} ms, play {:.1} ms",
                self.setup.publish_ms, self.setup.play_ms
            );
        }
        s
    }
}

/// `a / b`, or NaN when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// Side-by-side table of an engine run and a baseline run.
/// How a report's target is named in comparisons: `engine`, `engine SRTP <suite>`, `raw relay`.
pub fn label(r: &Report) -> String {
    match (&r.srtp, r.target.as_str()) {
        (Some(c), _) => format!("engine SRTP {}", c.suite),
        (None, "raw") => "raw relay".into(),
        (None, t) => t.into(),
    }
}

pub fn compare(engine: &Report, base: &Report) -> String {
    let mut s = String::new();
    let (le, lb) = (label(engine), label(base));
    let _ = writeln!(s, "engine: {le}; baseline: {lb}");
    let _ = writeln!(
        s,
        "{:<22} {:>14} {:>14} {:>9}",
        "", "engine", "baseline", "ratio"
    );
    let mut row = |name: &str, a: f64, b: f64, prec: usize| {
        let r = ratio(a, b);
        let r = if r.is_finite() {
            format!("{r:.3}")
        } else {
            "-".into()
        };
        let _ = writeln!(s, "{name:<22} {a:>14.prec$} {b:>14.prec$} {r:>9}");
    };
    row("received pps", engine.received.pps, base.received.pps, 0);
    row("sent pps", engine.sent.pps, base.sent.pps, 0);
    row(
        "delivery loss %",
        engine.received.delivery_loss_pct.unwrap_or(f64::NAN),
        base.received.delivery_loss_pct.unwrap_or(f64::NAN),
        3,
    );
    row(
        "latency p50 us",
        engine.latency.p50_us,
        base.latency.p50_us,
        1,
    );
    row(
        "latency p99 us",
        engine.latency.p99_us,
        base.latency.p99_us,
        1,
    );
    row(
        "latency p99.9 us",
        engine.latency.p999_us,
        base.latency.p999_us,
        1,
    );
    row(
        "jitter mean us",
        engine.jitter.mean_us,
        base.jitter.mean_us,
        1,
    );
    if let (Some(a), Some(b)) = (&engine.target_cpu, &base.target_cpu) {
        row("target CPU cores", a.cores, b.cores, 2);
        row(
            "rx pps per target core",
            a.rx_pps_per_core,
            b.rx_pps_per_core,
            0,
        );
    }
    let _ = writeln!(
        s,
        "{le}/{lb} throughput ratio: {:.3}",
        ratio(engine.received.pps, base.received.pps)
    );
    if let Some(c) = &engine.srtp {
        let _ = writeln!(
            s,
            "SRTP check: {} of {} sampled packets authenticated and decrypted ({} auth failures)",
            c.ok, c.checked, c.auth_failures
        );
    }
    if let Some(m) = &engine.rss {
        let _ = writeln!(
            s,
            "server RSS per player: {:.1} KiB at creation, {:.1} KiB after traffic ({} play sessions)",
            m.per_player_kib, m.per_player_after_run_kib, engine.play_sessions
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rx::latency_histogram;

    #[test]
    fn latency_summary_in_microseconds() {
        let mut h = latency_histogram(3);
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap(); // 1..1000 us
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(l.samples, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{}", l.p50_us);
        assert!((l.p99_us - 990.0).abs() < 1.5, "{}", l.p99_us);
        assert!((l.min_us - 1.0).abs() < 0.01);
        assert!((l.max_us - 1000.0).abs() < 1.0);
        assert_eq!(
            Latency::from_histogram(&latency_histogram(3)),
            Latency::default()
        );
    }

    #[test]
    fn json_roundtrip_and_compare() {
        let mut e = Report {
            target: "engine".into(),
            ..Default::default()
        };
        e.received.pps = 90_000.0;
        e.received.delivery_loss_pct = Some(0.5);
        e.latency.p99_us = 200.0;
        e.rss = Some(Rss {
            per_player_kib: 12.5,
            ..Default::default()
        });
        let mut b = Report {
            target: "raw".into(),
            ..Default::default()
        };
        b.received.pps = 100_000.0;
        b.latency.p99_us = 100.0;
        let json = serde_json::to_string(&e).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let c = compare(&e, &b);
        assert!(
            c.contains("engine/raw relay throughput ratio: 0.900"),
            "{c}"
        );
        e.srtp = Some(SrtpCheck {
            suite: "AES_CM_128_HMAC_SHA1_80".into(),
            checked: 10,
            ok: 10,
            ..Default::default()
        });
        let c = compare(&e, &b);
        assert!(
            c.contains("engine SRTP AES_CM_128_HMAC_SHA1_80/raw relay throughput ratio: 0.900"),
            "{c}"
        );
        assert!(c.contains("10 of 10 sampled"), "{c}");
        e.srtp = None;
        assert!(c.contains("12.5 KiB"), "{c}");
        let p99 = c.lines().find(|l| l.starts_with("latency p99 us")).unwrap();
        assert!(p99.ends_with("2.000"), "{p99}");
        let loss = c.lines().find(|l| l.starts_with("delivery loss")).unwrap();
        assert!(
            loss.ends_with(" -"),
            "no ratio without a baseline value: {loss}"
        );
        assert!(ratio(1.0, 0.0).is_nan());
        assert!(e.summary().contains("rss"));
    }
}
