//! `/metrics`: prometheus-client, in the Prometheus text format (0.0.4), base-unit names.
//!
//! Two kinds of figures: what control counts as it happens (hook calls, REST requests: the
//! [`Metrics`] families, updated in place), and what is read at scrape time (the shards'
//! counters, sessions, the port pool, the process: a [`Snapshot`] collector built per scrape).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::core::Live;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// What control counts as it happens.
#[derive(Debug, Clone)]
pub struct Metrics {
    hook_calls: Family<Labels, Counter>,
    hook_duration: HistogramFamily,
    http_requests: Family<Labels, Counter>,
    http_duration: HistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            hook_calls: Family::default(),
            hook_duration: Family::new_with_constructor(latency_histogram),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Metrics {
    /// One hook call of `method` that ended with `outcome` (ok, rejected, failed).
    pub fn hook_call(&self, method: &str, outcome: &'static str, secs: f64) {
        self.hook_calls
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("outcome", outcome.into()),
            ])
            .inc();
        self.hook_duration
            .get_or_create(&vec![("method", method.to_string())])
            .observe(secs);
    }

    /// One REST request to `route` (a route pattern, never the raw path) answered `status`.
    pub fn http_request(&self, route: &'static str, method: &str, status: u16, secs: f64) {
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_duration
            .get_or_create(&vec![("route", route.to_string())])
            .observe(secs);
    }
}

/// Scrape-time figures.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub live: Live,
    pub registry_per_shard: Vec<usize>,
    pub stopping: usize,
    /// (kind, status) -> sessions.
    pub sessions: Vec<((&'static str, &'static str), u64)>,
    pub ports_used: u64,
    pub ports_total: u64,
    pub draining: bool,
}

/// Renders everything: the families of `m` and the snapshot `s`.
pub fn render(m: &Metrics, s: Snapshot) -> String {
    let mut r = Registry::with_prefix("mediaserver");
    r.register(
        "hook_calls",
        "Hook calls to the operator's web server, by method and outcome (ok, rejected, failed)",
        m.hook_calls.clone(),
    );
    r.register_with_unit(
        "hook_duration",
        "Hook call latency, the wait for a pool slot included",
        Unit::Seconds,
        m.hook_duration.clone(),
    );
    r.register(
        "http_requests",
        "REST requests, by route pattern, method and status",
        m.http_requests.clone(),
    );
    r.register_with_unit(
        "http_request_duration",
        "REST request latency, by route pattern",
        Unit::Seconds,
        m.http_duration.clone(),
    );
    r.register_collector(Box::new(s));
    let mut process = Registry::default();
    process.register_collector(Box::new(Process));
    let mut out = String::with_capacity(8192);
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &r);
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &process);
    out
}

type CounterFn = fn(&engine::ShardCounters) -> u64;

/// One family of ConstCounters / ConstGauges with its rows.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    counter: bool,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let kind = if counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    };
    let mut me = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in rows {
        let fam = me.encode_family(&labels)?;
        if counter {
            ConstCounter::new(v).encode(fam)?;
        } else {
            ConstGauge::new(v as i64).encode(fam)?;
        }
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shard = |i: usize| vec![("shard", i.to_string())];
        let sc = &self.live.shard_counters;
        let per = |f: CounterFn| sc.iter().enumerate().map(move |(i, c)| (shard(i), f(c)));
        let packets = Unit::Other("packets".into());
        let gauge_rows = |v: &[usize]| -> Vec<(Labels, u64)> {
            v.iter()
                .enumerate()
                .map(|(i, n)| (shard(i), *n as u64))
                .collect()
        };
        family(
            &mut enc,
            "build_info",
            "Build information (always 1)",
            None,
            false,
            [(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1)],
        )?;
        family(
            &mut enc,
            "ready",
            "1 while the server accepts new sessions, 0 while it drains",
            None,
            false,
            [(vec![], u64::from(!self.draining))],
        )?;
        family(
            &mut enc,
            "shard_sessions",
            "Sessions held by each shard (including ones being torn down)",
            None,
            false,
            gauge_rows(&self.live.per_shard),
        )?;
        family(
            &mut enc,
            "registry_sessions",
            "Live sessions in the control registry, by shard",
            None,
            false,
            gauge_rows(&self.registry_per_shard),
        )?;
        family(
            &mut enc,
            "stopping_sessions",
            "Sessions stopped by control and not yet released by their shard",
            None,
            false,
            [(vec![], self.stopping as u64)],
        )?;
        family(
            &mut enc,
            "sessions",
            "Live sessions by kind (publisher, player, relay_publisher, relay_player) and status",
            None,
            false,
            self.sessions
                .iter()
                .map(|((k, s), n)| (vec![("kind", k.to_string()), ("status", s.to_string())], *n)),
        )?;
        family(
            &mut enc,
            "media_ports",
            "The media port pool (media.port_min..port_max) by state: used by sessions, free",
            None,
            false,
            [
                (vec![("state", "used".to_string())], self.ports_used),
                (
                    vec![("state", "free".to_string())],
                    self.ports_total.saturating_sub(self.ports_used),
                ),
            ],
        )?;
        for (name, help, unit, f) in [
            (
                "received",
                "Datagrams received",
                &packets,
                (|c| c.packets_in) as CounterFn,
            ),
            ("sent", "RTP packets sent to players", &packets, |c| {
                c.packets_out
            }),
            ("received", "Bytes received", &Unit::Bytes, |c| c.bytes_in),
            ("sent", "Bytes sent to players", &Unit::Bytes, |c| {
                c.bytes_out
            }),
        ] {
            family(&mut enc, name, help, Some(unit), true, per(f))?;
        }
        let reasons: [(&str, CounterFn); 7] = [
            ("stale", |c| c.dropped_stale),
            ("socket_overflow", |c| c.dropped_socket_overflow),
            ("unknown_source", |c| c.dropped_unknown_source),
            ("malformed", |c| c.dropped_malformed),
            ("srtp", |c| c.dropped_srtp),
            ("ring_full", |c| c.dropped_ring_full),
            ("no_send_slot", |c| c.dropped_no_send_slot),
        ];
        family(
            &mut enc,
            "dropped",
            "Packets dropped, by reason",
            Some(&packets),
            true,
            sc.iter().enumerate().flat_map(|(i, c)| {
                reasons.iter().map(move |(r, f)| {
                    (
                        vec![("shard", i.to_string()), ("reason", r.to_string())],
                        f(c),
                    )
                })
            }),
        )?;
        for (name, help, f) in [
            (
                "send_errors",
                "Failed sends",
                (|c| c.send_errors) as CounterFn,
            ),
            (
                "session_panics",
                "Sessions failed because handling one of their packets panicked (a bug: see the log)",
                |c| c.session_panics,
            ),
            (
                "keyframe_requests",
                "Keyframe requests sent to publishers (coalesced ones are counted separately)",
                |c| c.keyframe_requests_sent,
            ),
            (
                "keyframe_requests_coalesced",
                "Keyframe requests absorbed by coalescing",
                |c| c.keyframe_requests_coalesced,
            ),
            (
                "nacks_forwarded",
                "NACK entries sent to publishers on players' behalf (after merging)",
                |c| c.nacks_forwarded,
            ),
            (
                "nacks_dropped",
                "Players' NACK entries dropped past their budget (media.nack_rate_per_player)",
                |c| c.nacks_dropped,
            ),
            (
                "nacks_merged",
                "Players' NACK entries not forwarded: every packet they name was just asked for",
                |c| c.nacks_merged,
            ),
            (
                "rtx_sent",
                "Packets resent on RTX to WebRTC players from the stream's shared history",
                |c| c.rtx_sent,
            ),
            (
                "nacks_unanswered",
                "WebRTC players' NACK entries the shared history could not answer",
                |c| c.nacks_unanswered,
            ),
            (
                "gso_sends",
                "UDP GSO sends that carried more than one packet",
                |c| c.gso_batches,
            ),
            (
                "gso_segments",
                "Packets carried by UDP GSO sends",
                |c| c.gso_segments,
            ),
            (
                "gso_refused",
                "Sockets that refused a GSO send (the batch was resent packet by packet)",
                |c| c.gso_refused,
            ),
            (
                "gro_datagrams",
                "Publisher datagrams received as one UDP GRO batch of several packets",
                |c| c.gro_datagrams,
            ),
            (
                "recv_buffer_resizes",
                "Publisher socket receive buffers sized to their stream's rate",
                |c| c.recv_buffer_resizes,
            ),
        ] {
            family(&mut enc, name, help, None, true, per(f))?;
        }
        let mut age = engine::age::AgeHistogram::default();
        for c in sc {
            age.merge(&c.age_at_send);
        }
        let mut me = enc.encode_descriptor(
            "packet_age_at_send",
            "Time from a packet's arrival on the host to its send to a player, per copy sent",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        AgeMetric(age).encode(me.encode_family(&Vec::<(&str, String)>::new())?)?;
        Ok(())
    }
}

/// The shards' packet-age histogram, as a constant Prometheus histogram.
#[derive(Debug)]
struct AgeMetric(engine::age::AgeHistogram);

impl EncodeMetric for AgeMetric {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = engine::age::AGE_BUCKETS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.0.buckets)
            .collect();
        enc.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum_ns as f64 / 1e9,
            self.0.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The standard `process_*` metrics, from /proc.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcStat::read() else {
            return Ok(());
        };
        let g = |v: f64| ConstGauge::new(v);
        let mut one = |name: &str, help: &str, unit: Option<&Unit>, counter: bool, v: f64| {
            let kind = if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let me = enc.encode_descriptor(name, help, unit, kind)?;
            if counter {
                ConstCounter::new(v).encode(me)
            } else {
                g(v).encode(me)
            }
        };
        one(
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            true,
            p.cpu_seconds,
        )?;
        one(
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            false,
            p.rss_bytes,
        )?;
        one(
            "process_virtual_memory",
            "Virtual memory size",
            Some(&Unit::Bytes),
            false,
            p.vsize_bytes,
        )?;
        one(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            false,
            p.start_time,
        )?;
        one(
            "process_open_fds",
            "Open file descriptors",
            None,
            false,
            p.open_fds,
        )?;
        one(
            "process_max_fds",
            "The open-file limit (soft)",
            None,
            false,
            p.max_fds,
        )?;
        one("process_threads", "Threads", None, false, p.threads)
    }
}

struct ProcStat {
    cpu_seconds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    start_time: f64,
    open_fds: f64,
    max_fds: f64,
    threads: f64,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name (which may hold spaces), from field 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        Some(ProcStat {
            cpu_seconds: (num(14)? + num(15)?) / tck,
            threads: num(20)?,
            start_time: btime + num(22)? / tck,
            vsize_bytes: num(23)?,
            rss_bytes: num(24)? * page,
            open_fds,
            max_fds: rl.rlim_cur as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_base_unit_names_and_process_metrics() {
        let m = Metrics::default();
        m.hook_call("publishStream", "ok", 0.004);
        m.http_request("/rest-api/publish", "POST", 200, 0.002);
        let s = Snapshot {
            live: Live {
                per_shard: vec![1],
                shard_counters: vec![engine::ShardCounters {
                    bytes_in: 1200,
                    packets_in: 10,
                    dropped_malformed: 2,
                    ..Default::default()
                }],
                ..Default::default()
            },
            registry_per_shard: vec![1],
            sessions: vec![(("publisher", "PUBLISHING"), 1)],
            ports_used: 2,
            ports_total: 100,
            ..Default::default()
        };
        let text = render(&m, s);
        for want in [
            "# TYPE mediaserver_received_bytes_total counter",
            "mediaserver_received_bytes_total{shard=\"0\"} 1200",
            "mediaserver_received_packets_total{shard=\"0\"} 10",
            "mediaserver_dropped_packets_total{shard=\"0\",reason=\"malformed\"} 2",
            "mediaserver_sessions{kind=\"publisher\",status=\"PUBLISHING\"} 1",
            "mediaserver_media_ports{state=\"free\"} 98",
            "mediaserver_build_info{version=",
            "mediaserver_hook_calls_total{method=\"publishStream\",outcome=\"ok\"} 1",
            "mediaserver_hook_duration_seconds_bucket{method=\"publishStream\",le=\"0.008\"} 1",
            "mediaserver_http_requests_total{route=\"/rest-api/publish\",method=\"POST\",status=\"200\"} 1",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "process_open_fds ",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
    }
}
