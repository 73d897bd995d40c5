//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write;

use crate::core::Live;

type CounterFn = fn(&engine::ShardCounters) -> u64;

/// Renders shard counters and registry gauges.
pub fn render(live: &Live, registry_per_shard: &[usize], stopping: usize) -> String {
    let mut o = String::with_capacity(4096);
    let mut family =
        |name: &str, kind: &str, help: &str, rows: &mut dyn Iterator<Item = (String, u64)>| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{{{labels}}} {v}");
            }
        };
    let sc = &live.shard_counters;
    let per = |f: CounterFn| {
        sc.iter()
            .enumerate()
            .map(move |(i, c)| (format!("shard=\"{i}\""), f(c)))
    };
    family(
        "mediaserver_shard_sessions",
        "gauge",
        "Sessions held by each shard (including ones being torn down).",
        &mut live
            .per_shard
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("shard=\"{i}\""), *n as u64)),
    );
    family(
        "mediaserver_registry_sessions",
        "gauge",
        "Live sessions in the control registry, by shard.",
        &mut registry_per_shard
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("shard=\"{i}\""), *n as u64)),
    );
    family(
        "mediaserver_stopping_sessions",
        "gauge",
        "Sessions stopped by control and not yet released by their shard.",
        &mut std::iter::once((String::new(), stopping as u64)),
    );
    family(
        "mediaserver_packets_in_total",
        "counter",
        "Datagrams received.",
        &mut per(|c| c.packets_in),
    );
    family(
        "mediaserver_packets_out_total",
        "counter",
        "RTP packets sent to players.",
        &mut per(|c| c.packets_out),
    );
    family(
        "mediaserver_bytes_in_total",
        "counter",
        "Bytes received.",
        &mut per(|c| c.bytes_in),
    );
    family(
        "mediaserver_bytes_out_total",
        "counter",
        "Bytes sent to players.",
        &mut per(|c| c.bytes_out),
    );
    let reasons: [(&str, CounterFn); 5] = [
        ("unknown_source", |c| c.dropped_unknown_source),
        ("malformed", |c| c.dropped_malformed),
        ("srtp", |c| c.dropped_srtp),
        ("ring_full", |c| c.dropped_ring_full),
        ("no_send_slot", |c| c.dropped_no_send_slot),
    ];
    family(
        "mediaserver_dropped_total",
        "counter",
        "Packets dropped, by reason.",
        &mut sc.iter().enumerate().flat_map(|(i, c)| {
            reasons
                .iter()
                .map(move |(r, f)| (format!("shard=\"{i}\",reason=\"{r}\""), f(c)))
        }),
    );
    family(
        "mediaserver_send_errors_total",
        "counter",
        "Failed sends.",
        &mut per(|c| c.send_errors),
    );
    family(
        "mediaserver_session_panics_total",
        "counter",
        "Sessions failed because handling one of their packets panicked (a bug: see the log).",
        &mut per(|c| c.session_panics),
    );
    family(
        "mediaserver_keyframe_requests_total",
        "counter",
        "Keyframe requests sent to publishers (coalesced ones are counted separately).",
        &mut per(|c| c.keyframe_requests_sent),
    );
    family(
        "mediaserver_keyframe_requests_coalesced_total",
        "counter",
        "Keyframe requests absorbed by coalescing.",
        &mut per(|c| c.keyframe_requests_coalesced),
    );
    family(
        "mediaserver_nacks_forwarded_total",
        "counter",
        "NACK entries sent to publishers on players' behalf (after merging).",
        &mut per(|c| c.nacks_forwarded),
    );
    family(
        "mediaserver_nacks_dropped_total",
        "counter",
        "Players' NACK entries dropped past their budget (media.nack_rate_per_player).",
        &mut per(|c| c.nacks_dropped),
    );
    family(
        "mediaserver_nacks_merged_total",
        "counter",
        "Players' NACK entries not forwarded: every packet they name was just asked for.",
        &mut per(|c| c.nacks_merged),
    );
    o
}
