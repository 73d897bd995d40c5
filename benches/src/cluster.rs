//! `load fanout --cluster URL1,URL2,...`: one run against several nodes of a cluster.
//!
//! The publishers publish on the first node (the origin); players are spread round-robin over
//! the other nodes (the edges), which pull each stream from the origin on their first play of
//! it, plus `origin_players` on the origin itself so that an edge player's cost can be set
//! against an origin player's in the same run.
//!
//! Unlike [`crate::fanout`], the publishers stream *before* the players join, so that each
//! play request can be timed to its first packet: **cold** is the first play of a stream on an
//! edge (the pull from the origin is in that time), **warm** every later one. Players join
//! while the stream flows, so delivery is counted over a measurement window that opens
//! `settle` after the last join: every packet the publishers stamp inside the window must reach
//! every player (send stamps are compared, so no packet is counted twice or on one side only).
//! Origin egress is read from the origin's REST counters over the same window: the packets its
//! relay players sent divided by the packets its publishers received is the number of copies
//! per packet (one per pulling edge when the edges pull from the origin).
//!
//! Server CPU per node is read from `/proc/PID/stat` over the window (`--server-pids`, one per
//! URL) and divided by the packets that node delivered (to the tool's players, and for the
//! origin also to its relay players).

use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::{mono_ns, realtime_offset_ns};
use crate::fanout::{bind_many, sender, ArrivalClock, Publisher};
use crate::net::{cpu_seconds, enable_rx_drop_counter, enable_rx_timestamps, Epoll, RecvBatch};
use crate::pkt::{parse_packet, publisher_ssrc};
use crate::report::Latency;
use crate::rest::Client;
use crate::rx::{latency_histogram, Arrival, StreamRx, MAX_LATENCY_NS};
use crate::{signal, Result};

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// REST base URLs; the first is the origin.
    pub nodes: Vec<String>,
    /// Server PIDs, one per node (or none): CPU per node over the window.
    pub server_pids: Vec<u32>,
    pub token: Option<String>,
    /// One stream per publisher, all published on the origin.
    pub names: Vec<String>,
    /// Players spread over the edges.
    pub players: u32,
    /// Players on the origin itself.
    pub origin_players: u32,
    pub pps: u32,
    pub size: usize,
    /// Length of the measurement window.
    pub duration: Duration,
    /// From the last join to the start of the window.
    pub settle: Duration,
    pub local_ip: IpAddr,
    pub recv_threads: usize,
    pub batch: usize,
    pub buffer_bytes: usize,
    pub kernel_timestamps: bool,
    pub progress: bool,
}

/// Where player `j` plays: (node index, stream index). Origin players come first; then edge
/// player `k` goes to edge `k % edges` and stream `(k / edges) % streams`, so the first
/// `edges * streams` edge players are each the first play of one stream on one edge.
pub fn placement(j: usize, origin_players: usize, edges: usize, streams: usize) -> (usize, usize) {
    if j < origin_players {
        return (0, j % streams);
    }
    let k = j - origin_players;
    (1 + k % edges, (k / edges) % streams)
}

/// What the tool measured about one play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Join {
    /// On the origin: no pull involved.
    Origin,
    /// The first play of its stream on its edge.
    Cold,
    Warm,
}

/// Percentiles of a set of durations (nearest rank).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Dist {
    pub fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            samples: v.len(),
            p50_ms: rank(0.5),
            p99_ms: rank(0.99),
            max_ms: v[v.len() - 1],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCpu {
    pub pid: u32,
    pub cpu_s: f64,
    pub cores: f64,
    /// Server CPU per packet this node delivered in the window.
    pub us_per_packet: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub url: String,
    pub role: String,
    pub players: usize,
    /// Packets the node's players should have received in the window, and did.
    pub expected: u64,
    pub received: u64,
    pub delivery_pct: f64,
    /// Copies sent to relay players (origin only; from its REST counters).
    pub relay_packets_out: u64,
    pub latency: Latency,
    /// Play request -> first packet.
    pub first_packet_cold: Dist,
    pub first_packet_warm: Dist,
    pub players_without_packets: usize,
    pub cpu: Option<NodeCpu>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Egress {
    pub relay_players: usize,
    pub publisher_packets_in: u64,
    pub relay_packets_out: u64,
    /// relay_packets_out / publisher_packets_in: one per pulling edge.
    pub copies_per_packet: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub publishers: usize,
    pub players: usize,
    pub origin_players: usize,
    pub pps_per_publisher: u32,
    pub packet_size: usize,
    pub window_s: f64,
    pub sent_in_window: u64,
    pub expected: u64,
    pub received: u64,
    pub delivery_pct: f64,
    pub player_socket_drops: u64,
    pub first_packet_cold: Dist,
    pub first_packet_warm: Dist,
    pub first_packet_origin: Dist,
    pub origin_egress: Egress,
    pub nodes: Vec<NodeReport>,
}

/// One player as a receiver thread sees it.
struct Rx {
    idx: usize,
    node: usize,
    sock: UdpSocket,
    stream: StreamRx,
    first_arrival_ns: u64,
    counted: u64,
    socket_drops: u64,
}

struct RxResult {
    players: Vec<(usize, u64, u64, u64)>, // (idx, first arrival, counted, socket drops)
    latency: Vec<Histogram<u64>>,         // per node
}

/// The window's bounds in send-stamp time, set by the main thread once known.
struct Window {
    from: AtomicU64,
    until: AtomicU64,
}

impl Window {
    fn contains(&self, stamp: u64) -> bool {
        stamp >= self.from.load(Ordering::Relaxed) && stamp < self.until.load(Ordering::Relaxed)
    }
}

fn receiver(
    mut socks: Vec<Rx>,
    nodes: usize,
    batch: usize,
    clock: ArrivalClock,
    window: &Window,
    stop: &AtomicBool,
    rx_count: &AtomicU64,
) -> std::io::Result<RxResult> {
    let mut ep = Epoll::new(256)?;
    for (k, p) in socks.iter().enumerate() {
        p.sock.set_nonblocking(true)?;
        ep.add(p.sock.as_raw_fd(), k as u64)?;
    }
    let mut latency: Vec<_> = (0..nodes).map(|_| latency_histogram(3)).collect();
    let mut rb = RecvBatch::with_ancillary(batch);
    let mut ready = Vec::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        ready.clear();
        ready.extend(ep.wait(20)?);
        for &k in &ready {
            let p = &mut socks[k as usize];
            // A receive error (ICMP-induced and such) just ends this socket's turn.
            let _ = rb.drain(p.sock.as_raw_fd(), 16, |rb, n, now| {
                for i in 0..n {
                    let anc = rb.ancillary(i);
                    if let Some(d) = anc.socket_drops {
                        p.socket_drops = p.socket_drops.max(d as u64);
                    }
                    let at = clock.arrival(&anc, now);
                    let Some(pkt) = parse_packet(rb.get(i)) else {
                        continue;
                    };
                    if p.first_arrival_ns == 0 {
                        p.first_arrival_ns = at;
                    }
                    let fresh = p.stream.on_packet(pkt.seq, pkt.send_ns, at) != Arrival::Duplicate;
                    if fresh && window.contains(pkt.send_ns) {
                        p.counted += 1;
                        latency[p.node]
                            .saturating_record(at.saturating_sub(pkt.send_ns).min(MAX_LATENCY_NS));
                    }
                }
                rx_count.fetch_add(n as u64, Ordering::Relaxed);
            });
        }
    }
    Ok(RxResult {
        players: socks
            .iter()
            .map(|p| (p.idx, p.first_arrival_ns, p.counted, p.socket_drops))
            .collect(),
        latency,
    })
}

/// The origin's relay egress and publisher ingress counters (cluster-wide find, filtered to
/// the origin's own sessions).
fn origin_counters(origin: &Client, names: &[String]) -> Result<(usize, u64, u64)> {
    let relays = origin.find(json!({"relay": true}))?;
    let publishers = origin.find(json!({"published": true}))?;
    let ours = |s: &&Value| names.iter().any(|n| s["name"] == json!(n));
    let (mut legs, mut out) = (0, 0);
    for r in relays.iter().filter(ours) {
        if r["published"] == json!(false) && r["nodeId"] == r["originNode"] {
            legs += 1;
            out += r["packetsOut"].as_u64().unwrap_or(0);
        }
    }
    let pub_in = publishers
        .iter()
        .filter(ours)
        .filter(|s| s.get("relay").is_none())
        .map(|s| s["packetsIn"].as_u64().unwrap_or(0))
        .sum();
    Ok((legs, pub_in, out))
}

fn note(cfg: &ClusterConfig, msg: &str) {
    if cfg.progress {
        eprintln!("cluster: {msg}");
    }
}

pub fn run(cfg: &ClusterConfig) -> Result<ClusterReport> {
    let (n_nodes, n_streams) = (cfg.nodes.len(), cfg.names.len());
    if n_nodes < 2 {
        return Err("--cluster needs at least two node URLs (origin, then edges)".into());
    }
    if n_streams == 0 || cfg.players == 0 {
        return Err("--cluster needs publishers and players".into());
    }
    if !cfg.server_pids.is_empty() && cfg.server_pids.len() != n_nodes {
        return Err("--server-pids needs one PID per --cluster URL".into());
    }
    if cfg.pps == 0 {
        return Err("--cluster needs a paced --pps (first-packet times count in packets)".into());
    }
    let clients: Vec<Client> = cfg
        .nodes
        .iter()
        .map(|u| Client::new(u, cfg.token.clone()))
        .collect();
    let edges = n_nodes - 1;
    let n_play = (cfg.origin_players + cfg.players) as usize;
    let socks = bind_many(cfg.local_ip, 0, n_play as u32, cfg.buffer_bytes)?;
    for s in &socks {
        if cfg.kernel_timestamps {
            enable_rx_timestamps(s)?;
        }
        enable_rx_drop_counter(s)?;
    }
    let pub_socks = bind_many(cfg.local_ip, 0, n_streams as u32, cfg.buffer_bytes)?;
    let mut ids: Vec<(usize, String)> = Vec::new();
    let result = (|| {
        let mut pubs = Vec::new();
        for (i, (name, sock)) in cfg.names.iter().zip(pub_socks).enumerate() {
            let r = clients[0].publish(name)?;
            ids.push((0, r.media_session_id.clone()));
            sock.connect(r.media_addr()?)?;
            pubs.push(Publisher {
                sock,
                idx: i as u32,
                ssrc: publisher_ssrc(i as u32),
                seq0: (i as u16).wrapping_mul(7919),
                attempted: 0,
                sent: 0,
                srtp: None,
            });
        }
        note(
            cfg,
            &format!("{n_streams} stream(s) published on {}", cfg.nodes[0]),
        );

        // Publishers stream from now on; players join while they do.
        let interval_ns = 10_000_000u64;
        let t0 = mono_ns() + 20_000_000;
        let (tx_stop, rx_stop) = (Arc::new(AtomicBool::new(false)), AtomicBool::new(false));
        let tx_count = Arc::new(AtomicU64::new(0));
        let rx_count = AtomicU64::new(0);
        let window = Window {
            from: AtomicU64::new(u64::MAX),
            until: AtomicU64::new(u64::MAX),
        };
        let sender_thread = {
            let (stop, tx_count) = (tx_stop.clone(), tx_count.clone());
            let (pps, size, batch) = (cfg.pps, cfg.size, cfg.batch);
            let end = t0 + 24 * 3600 * 1_000_000_000;
            std::thread::Builder::new()
                .name("publisher-tx".into())
                .spawn(move || {
                    sender(
                        pubs,
                        pps,
                        size,
                        size,
                        batch,
                        t0,
                        end,
                        interval_ns,
                        &stop,
                        &tx_count,
                    )
                })?
        };
        let place: Vec<(usize, usize)> = (0..n_play)
            .map(|j| placement(j, cfg.origin_players as usize, edges, n_streams))
            .collect();
        let clock = ArrivalClock {
            kernel_offset: cfg.kernel_timestamps.then(realtime_offset_ns),
        };
        let threads = cfg.recv_threads.clamp(1, n_play);
        let mut groups: Vec<Vec<Rx>> = (0..threads).map(|_| Vec::new()).collect();
        let addrs: Vec<_> = socks
            .iter()
            .map(|s| s.local_addr())
            .collect::<std::io::Result<_>>()?;
        for (j, sock) in socks.into_iter().enumerate() {
            groups[j % threads].push(Rx {
                idx: j,
                node: place[j].0,
                sock,
                stream: StreamRx::new(),
                first_arrival_ns: 0,
                counted: 0,
                socket_drops: 0,
            });
        }
        std::thread::scope(|scope| -> Result<ClusterReport> {
            let receivers: Vec<_> = groups
                .into_iter()
                .map(|g| {
                    let (window, stop, rx_count) = (&window, &rx_stop, &rx_count);
                    scope.spawn(move || {
                        receiver(g, n_nodes, cfg.batch, clock, window, stop, rx_count)
                    })
                })
                .collect();
            // The stream is on the origin before anyone plays it.
            std::thread::sleep(Duration::from_millis(300));
            let mut joins = Vec::with_capacity(n_play);
            let mut seen = std::collections::HashSet::new();
            let started = Instant::now();
            for (j, &(node, stream)) in place.iter().enumerate() {
                if signal::stopped() {
                    return Err("interrupted".into());
                }
                let kind = if node == 0 {
                    Join::Origin
                } else if seen.insert((node, stream)) {
                    Join::Cold
                } else {
                    Join::Warm
                };
                let t = mono_ns();
                let r = clients[node].play(&cfg.names[stream], addrs[j])?;
                ids.push((node, r.media_session_id));
                joins.push((kind, t));
                if cfg.progress && (j + 1) % 500 == 0 {
                    note(cfg, &format!("{} of {n_play} players joined", j + 1));
                }
            }
            note(
                cfg,
                &format!(
                    "{n_play} players joined in {:.1} s; measuring {:.0} s",
                    started.elapsed().as_secs_f64(),
                    cfg.duration.as_secs_f64()
                ),
            );
            std::thread::sleep(cfg.settle);
            // Open the window on a send-interval boundary so the sender's per-interval counts
            // give exactly the packets stamped inside it.
            let first_slot = (mono_ns() - t0) / interval_ns + 1;
            let from = t0 + first_slot * interval_ns;
            window.from.store(from, Ordering::Relaxed);
            crate::clock::sleep_until(from);
            let counters0 = origin_counters(&clients[0], &cfg.names)?;
            let cpu0: Vec<f64> = cfg
                .server_pids
                .iter()
                .map(|&p| cpu_seconds(p))
                .collect::<std::io::Result<_>>()?;
            let w0 = mono_ns();
            std::thread::sleep(cfg.duration);
            tx_stop.store(true, Ordering::Relaxed);
            let sent = sender_thread.join().map_err(|_| "sender thread panicked")?;
            window.until.store(sent.end_ns, Ordering::Relaxed);
            // Drain: until nothing arrived for 300 ms (at most 3 s).
            let (mut last, mut quiet_since) = (rx_count.load(Ordering::Relaxed), mono_ns());
            let drain_end = mono_ns() + 3_000_000_000;
            while mono_ns() < drain_end && mono_ns() - quiet_since < 300_000_000 {
                std::thread::sleep(Duration::from_millis(10));
                let r = rx_count.load(Ordering::Relaxed);
                if r != last {
                    (last, quiet_since) = (r, mono_ns());
                }
            }
            let cpu1: Vec<f64> = cfg
                .server_pids
                .iter()
                .map(|&p| cpu_seconds(p))
                .collect::<std::io::Result<_>>()?;
            let window_s = (mono_ns() - w0) as f64 / 1e9;
            let counters1 = origin_counters(&clients[0], &cfg.names)?;
            rx_stop.store(true, Ordering::Relaxed);
            let mut players = vec![(0u64, 0u64, 0u64); n_play];
            let mut latency: Vec<_> = (0..n_nodes).map(|_| latency_histogram(3)).collect();
            for r in receivers {
                let r = r.join().map_err(|_| "receiver thread panicked")??;
                for (idx, first, counted, drops) in r.players {
                    players[idx] = (first, counted, drops);
                }
                for (a, b) in latency.iter_mut().zip(&r.latency) {
                    a.add(b).map_err(|e| format!("{e:?}"))?;
                }
            }
            // Packets each stream's publisher stamped inside the window.
            let in_window = sent
                .per_interval
                .iter()
                .skip(first_slot as usize)
                .sum::<u64>();
            let per_stream = in_window / n_streams as u64;
            let egress = Egress {
                relay_players: counters1.0,
                publisher_packets_in: counters1.1 - counters0.1,
                relay_packets_out: counters1.2 - counters0.2,
                copies_per_packet: (counters1.2 - counters0.2) as f64
                    / (counters1.1 - counters0.1).max(1) as f64,
            };
            let ms = |a: u64, b: u64| a.saturating_sub(b) as f64 / 1e6;
            let dist = |node: Option<usize>, kind: Join| {
                Dist::of(
                    (0..n_play)
                        .filter(|&j| joins[j].0 == kind && node.is_none_or(|n| place[j].0 == n))
                        .filter(|&j| players[j].0 > 0)
                        .map(|j| ms(players[j].0, joins[j].1))
                        .collect(),
                )
            };
            let pct = |a: u64, b: u64| {
                if b == 0 {
                    0.0
                } else {
                    a as f64 * 100.0 / b as f64
                }
            };
            let nodes: Vec<NodeReport> = (0..n_nodes)
                .map(|n| {
                    let mine: Vec<usize> = (0..n_play).filter(|&j| place[j].0 == n).collect();
                    let expected = mine.len() as u64 * per_stream;
                    let received: u64 = mine.iter().map(|&j| players[j].1).sum();
                    let relay_out = if n == 0 { egress.relay_packets_out } else { 0 };
                    let cpu = cfg.server_pids.get(n).map(|&pid| {
                        let cpu_s = cpu1[n] - cpu0[n];
                        NodeCpu {
                            pid,
                            cpu_s,
                            cores: cpu_s / window_s,
                            us_per_packet: cpu_s * 1e6 / (received + relay_out).max(1) as f64,
                        }
                    });
                    NodeReport {
                        url: cfg.nodes[n].clone(),
                        role: if n == 0 { "origin" } else { "edge" }.into(),
                        players: mine.len(),
                        expected,
                        received,
                        delivery_pct: pct(received, expected),
                        relay_packets_out: relay_out,
                        latency: Latency::from_histogram(&latency[n]),
                        first_packet_cold: dist(Some(n), Join::Cold),
                        first_packet_warm: dist(Some(n), Join::Warm),
                        players_without_packets: mine
                            .iter()
                            .filter(|&&j| players[j].0 == 0)
                            .count(),
                        cpu,
                    }
                })
                .collect();
            let expected = n_play as u64 * per_stream;
            let received: u64 = players.iter().map(|p| p.1).sum();
            Ok(ClusterReport {
                publishers: n_streams,
                players: cfg.players as usize,
                origin_players: cfg.origin_players as usize,
                pps_per_publisher: cfg.pps,
                packet_size: cfg.size,
                window_s,
                sent_in_window: in_window,
                expected,
                received,
                delivery_pct: pct(received, expected),
                player_socket_drops: players.iter().map(|p| p.2).sum(),
                first_packet_cold: dist(None, Join::Cold),
                first_packet_warm: dist(None, Join::Warm),
                first_packet_origin: dist(None, Join::Origin),
                origin_egress: egress,
                nodes,
            })
        })
    })();
    // Players first, each on its own node, then the publishers (stopping a publisher stops
    // its players, which would make their own terminate a 404).
    let (publishers, players) = ids.split_at(n_streams.min(ids.len()));
    for (node, c) in clients.iter().enumerate() {
        let mine: Vec<String> = players
            .iter()
            .filter(|(n, _)| *n == node)
            .map(|(_, id)| id.clone())
            .collect();
        if let Err(e) = c.terminate(&mine) {
            eprintln!("warning: terminating players on {}: {e}", cfg.nodes[node]);
        }
    }
    let publishers: Vec<String> = publishers.iter().map(|(_, id)| id.clone()).collect();
    if let Err(e) = clients[0].terminate(&publishers) {
        eprintln!("warning: terminating publishers on {}: {e}", cfg.nodes[0]);
    }
    result
}

impl ClusterReport {
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let d = |d: &Dist| {
            format!(
                "n={} p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                d.samples, d.p50_ms, d.p99_ms, d.max_ms
            )
        };
        let _ = writeln!(
            s,
            "cluster: {} stream(s) x {} pps x {} B; {} edge players, {} origin players; window {:.1} s",
            self.publishers,
            self.pps_per_publisher,
            self.packet_size,
            self.players,
            self.origin_players,
            self.window_s
        );
        let _ = writeln!(
            s,
            "  delivery     {} of {} ({:.3}%), player socket drops {}",
            self.received, self.expected, self.delivery_pct, self.player_socket_drops
        );
        let e = &self.origin_egress;
        let _ = writeln!(
            s,
            "  origin egress {:.3} copies per packet ({} relay players; {} out / {} in)",
            e.copies_per_packet, e.relay_players, e.relay_packets_out, e.publisher_packets_in
        );
        let _ = writeln!(s, "  first packet cold   {}", d(&self.first_packet_cold));
        let _ = writeln!(s, "  first packet warm   {}", d(&self.first_packet_warm));
        let _ = writeln!(s, "  first packet origin {}", d(&self.first_packet_origin));
        for n in &self.nodes {
            let cpu = n.cpu.as_ref().map_or(String::new(), |c| {
                format!(
                    "  cpu {:.2} s ({:.1}% core) {:.2} us/pkt",
                    c.cpu_s,
                    c.cores * 100.0,
                    c.us_per_packet
                )
            });
            let _ = writeln!(
                s,
                "  {} {:6} players {:5}  delivery {:.3}%  lat p50 {:.0} us p99 {:.0} us  silent {}{cpu}",
                n.url,
                n.role,
                n.players,
                n.delivery_pct,
                n.latency.p50_us,
                n.latency.p99_us,
                n.players_without_packets
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_makes_the_first_play_of_each_stream_on_each_edge_cold() {
        // 2 origin players, 3 edges, 2 streams.
        let p: Vec<_> = (0..10).map(|j| placement(j, 2, 3, 2)).collect();
        assert_eq!(&p[..2], &[(0, 0), (0, 1)]);
        assert_eq!(&p[2..8], &[(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 1)]);
        assert_eq!(&p[8..], &[(1, 0), (2, 0)]);
    }

    #[test]
    fn dist_is_nearest_rank() {
        let d = Dist::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (d.samples, d.p50_ms, d.p99_ms, d.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(Dist::of(vec![]), Dist::default());
        assert_eq!(Dist::of(vec![7.0]).p99_ms, 7.0);
    }

    #[test]
    fn the_window_counts_stamps_from_its_start_to_its_end() {
        let w = Window {
            from: AtomicU64::new(100),
            until: AtomicU64::new(u64::MAX),
        };
        assert!(!w.contains(99) && w.contains(100) && w.contains(1 << 40));
        w.until.store(200, Ordering::Relaxed);
        assert!(w.contains(199) && !w.contains(200));
    }
}
