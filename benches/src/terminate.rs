//! Terminate latency: how long a player still receives media after `POST
//! /rest-api/stream/terminate` for its session, with many sessions on the server.
//!
//! Topology: `probe_streams` publishers at `probe_pps` with `probe_players` players each (the
//! ones terminated and timed: at 1,000 pps a player's last packet is known to 1 ms), and
//! `streams` background publishers at `pps` with `players` players each (they make up the
//! session count, e.g. 10,000, and keep every shard busy with live sessions).
//!
//! Each pass terminates every probe player once, one REST call at a time `gap` apart, then
//! waits `grace` and reads each terminated player's last arrival (kernel receive timestamp);
//! then it re-creates the probe players (new play sessions on the same sockets) and lets them
//! run before the next pass. Per terminate:
//! * `after_reply` = last arrival - time the REST reply was read (clamped at 0: the shard may
//!   stop the session before control answers);
//! * `after_request` = last arrival - time the request was sent;
//! * the REST round trip.
//!
//! A probe player that received nothing in the `stale` window before its terminate is not
//! sampled (counted as `not_live`); one that still receives after the grace period counts as
//! `still_receiving`. Every loop is bounded: passes, players, and each wait.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::{mono_ns, realtime_offset_ns, sleep_until};
use crate::net::{bind_udp, enable_rx_timestamps, Epoll, RecvBatch};
use crate::pkt::{publisher_ssrc, ts_step, write_packet};
use crate::report::Latency;
use crate::rest::Client;
use crate::rx::latency_histogram;
use crate::{signal, Result};

#[derive(Debug, Clone)]
pub struct TerminateConfig {
    pub url: String,
    pub token: Option<String>,
    pub probe_streams: u32,
    /// Players per probe stream.
    pub probe_players: u32,
    pub probe_pps: u32,
    /// Background streams.
    pub streams: u32,
    /// Players per background stream.
    pub players: u32,
    /// Packets/s per background publisher.
    pub pps: u32,
    pub size: usize,
    /// Passes over the probe players (terminates = passes x probe players).
    pub passes: u32,
    /// Between two terminates.
    pub gap: Duration,
    /// After the last terminate of a pass, before reading the last arrivals.
    pub grace: Duration,
    /// Before the first pass and after re-creating the probe players.
    pub warmup: Duration,
    pub local_ip: IpAddr,
    pub recv_threads: usize,
    pub progress: bool,
}

impl TerminateConfig {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            token: None,
            probe_streams: 2,
            probe_players: 50,
            probe_pps: 1000,
            streams: 98,
            players: 100,
            pps: 2,
            size: 1100,
            passes: 5,
            gap: Duration::from_millis(20),
            grace: Duration::from_millis(300),
            warmup: Duration::from_millis(1000),
            local_ip: IpAddr::from([127, 0, 0, 1]),
            recv_threads: 2,
            progress: true,
        }
    }

    /// Sessions on the server while the probes run: publishers + players.
    pub fn sessions(&self) -> u64 {
        (self.probe_streams as u64 * (1 + self.probe_players as u64))
            + (self.streams as u64 * (1 + self.players as u64))
    }

    fn validate(&self) -> Result<()> {
        if self.probe_streams == 0 || self.probe_players == 0 || self.probe_pps == 0 {
            return Err("need at least one probe stream, player and packet per second".into());
        }
        if self.passes == 0 || self.passes > 1000 {
            return Err("--passes must be 1..=1000".into());
        }
        if self.sessions() > 60_000 {
            return Err("more than 60,000 sessions".into());
        }
        if self.size < crate::pkt::MIN_PACKET_LEN || self.size > crate::net::MAX_DATAGRAM {
            return Err("bad --size".into());
        }
        if self.grace < Duration::from_millis(50) || self.grace > Duration::from_secs(10) {
            return Err("--grace-ms must be 50..=10000".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TerminateReport {
    pub sessions: u64,
    pub probe_players: u32,
    pub probe_pps: u32,
    pub passes: u32,
    pub terminates: u64,
    /// Terminates timed (the player was receiving right before).
    pub samples: u64,
    pub not_live: u64,
    /// Terminated players that still received packets after the grace period.
    pub still_receiving: u64,
    /// Samples whose last packet arrived after the REST reply was read.
    pub last_after_reply: u64,
    /// Last packet - REST reply (clamped at 0).
    pub after_reply: Latency,
    /// Last packet - REST request sent.
    pub after_request: Latency,
    /// REST terminate round trip.
    pub rest_round_trip: Latency,
    pub setup_s: f64,
    pub packets_received: u64,
}

impl TerminateReport {
    pub fn summary(&self) -> String {
        let l = |x: &Latency| {
            format!(
                "p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  max {:.0} us",
                x.p50_us, x.p90_us, x.p99_us, x.max_us
            )
        };
        format!(
            "terminate latency: {} sessions, {} probe players at {} pps, {} passes\n  \
             terminates {}  timed {}  not live {}  still receiving after grace {}\n  \
             last packet after the REST reply   {}  ({} of {} arrived after the reply)\n  \
             last packet after the REST request {}\n  \
             REST terminate round trip          {}\n  \
             setup {:.1} s, {} packets received\n",
            self.sessions,
            self.probe_players,
            self.probe_pps,
            self.passes,
            self.terminates,
            self.samples,
            self.not_live,
            self.still_receiving,
            l(&self.after_reply),
            self.last_after_reply,
            self.samples,
            l(&self.after_request),
            l(&self.rest_round_trip),
            self.setup_s,
            self.packets_received,
        )
    }
}

/// Raises the soft open-file limit to the hard one (10k sockets need it).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Terminates every session in `ids` but not in `gone` on drop (also on errors).
struct Cleanup<'a> {
    client: &'a Client,
    ids: Vec<String>,
    gone: std::collections::HashSet<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let live: Vec<String> = self
            .ids
            .iter()
            .filter(|i| !self.gone.contains(*i))
            .cloned()
            .collect();
        if let Err(e) = self.client.terminate(&live) {
            eprintln!("warning: terminating sessions: {e}");
        }
    }
}

struct Shared {
    /// Per player: last arrival (monotonic ns, from the kernel timestamp).
    last: Vec<AtomicU64>,
    packets: AtomicU64,
    stop: AtomicBool,
}

fn receiver(socks: Vec<(usize, UdpSocket)>, sh: &Shared, offset: i64) -> std::io::Result<()> {
    let mut ep = Epoll::new(512)?;
    for (k, (_, s)) in socks.iter().enumerate() {
        s.set_nonblocking(true)?;
        ep.add(s.as_raw_fd(), k as u64)?;
    }
    let mut rb = RecvBatch::with_ancillary(32);
    let mut ready = Vec::with_capacity(512);
    while !sh.stop.load(Ordering::Relaxed) {
        ready.clear();
        ready.extend(ep.wait(20)?);
        for &k in &ready {
            let (j, s) = &socks[k as usize];
            let _ = rb.drain(s.as_raw_fd(), 8, |rb, n, now| {
                let mut newest = 0;
                for i in 0..n {
                    let at = match rb.ancillary(i).kernel_time_ns {
                        Some(rt) => (rt as i64 - offset).max(0) as u64,
                        None => now,
                    };
                    newest = newest.max(at);
                }
                sh.last[*j].fetch_max(newest, Ordering::Relaxed);
                sh.packets.fetch_add(n as u64, Ordering::Relaxed);
            });
        }
    }
    Ok(())
}

/// Paced plain-RTP senders: publisher `i` sends at `rates[i]` pps until `stop`.
fn sender(pubs: Vec<(UdpSocket, u32)>, size: usize, sh: &Shared) {
    let mut buf = vec![0u8; size];
    let t0 = mono_ns();
    let mut sent = vec![0u64; pubs.len()];
    while !sh.stop.load(Ordering::Relaxed) && !signal::stopped() {
        let now = mono_ns();
        let mut next = now + 20_000_000;
        for (i, (sock, pps)) in pubs.iter().enumerate() {
            let due = ((now - t0) as u128 * *pps as u128 / 1_000_000_000) as u64 + 1;
            // Bounded catch-up after a stall: at most 64 packets per publisher per turn, the
            // older ones skipped.
            let mut owed = due.saturating_sub(sent[i]);
            if owed > 64 {
                sent[i] = due - 64;
                owed = 64;
            }
            for _ in 0..owed {
                let n = sent[i];
                write_packet(
                    &mut buf,
                    n as u16,
                    (n as u32).wrapping_mul(ts_step(*pps)),
                    publisher_ssrc(i as u32),
                    mono_ns(),
                    i as u32,
                );
                let _ = sock.send(&buf);
                sent[i] += 1;
            }
            let next_due = t0 + ((sent[i] as u128 * 1_000_000_000) / *pps as u128) as u64;
            next = next.min(next_due);
        }
        sleep_until(next);
    }
}

pub fn run(cfg: &TerminateConfig) -> Result<TerminateReport> {
    cfg.validate()?;
    raise_fd_limit();
    let client = Client::new(&cfg.url, cfg.token.clone());
    let mut cleanup = Cleanup {
        client: &client,
        ids: Vec::new(),
        gone: Default::default(),
    };
    let t_setup = Instant::now();
    let n_probe = (cfg.probe_streams * cfg.probe_players) as usize;
    let n_bg = (cfg.streams * cfg.players) as usize;
    let bind = |n: usize| -> Result<Vec<UdpSocket>> {
        (0..n)
            .map(|_| Ok(bind_udp(SocketAddr::new(cfg.local_ip, 0), 256 << 10)?))
            .collect()
    };
    // Players 0..n_probe are the probes; probe player j plays probe stream j % probe_streams.
    let players = bind(n_probe + n_bg)?;
    for s in &players[..n_probe] {
        enable_rx_timestamps(s)?;
    }
    let n_pubs = (cfg.probe_streams + cfg.streams) as usize;
    let pub_socks = bind(n_pubs)?;
    let name = |i: usize| format!("term-{i}");
    let mut pubs = Vec::with_capacity(n_pubs);
    for (i, sock) in pub_socks.into_iter().enumerate() {
        let r = client.publish(&name(i))?;
        cleanup.ids.push(r.media_session_id.clone());
        sock.connect(r.media_addr()?)?;
        let pps = if i < cfg.probe_streams as usize {
            cfg.probe_pps
        } else {
            cfg.pps
        };
        pubs.push((sock, pps.max(1)));
    }
    let stream_of = |j: usize| -> usize {
        if j < n_probe {
            j % cfg.probe_streams as usize
        } else {
            cfg.probe_streams as usize + (j - n_probe) % cfg.streams.max(1) as usize
        }
    };
    let mut probe_ids: Vec<String> = Vec::with_capacity(n_probe);
    for (j, s) in players.iter().enumerate() {
        let r = client.play(&name(stream_of(j)), s.local_addr()?)?;
        if j < n_probe {
            probe_ids.push(r.media_session_id.clone());
        }
        cleanup.ids.push(r.media_session_id);
        if cfg.progress && j > 0 && j % 2000 == 0 {
            eprintln!("  {j} players created");
        }
    }
    let probe_addrs: Vec<SocketAddr> = players[..n_probe]
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<_>>()?;
    let setup_s = t_setup.elapsed().as_secs_f64();

    let sh = Arc::new(Shared {
        last: (0..players.len()).map(|_| AtomicU64::new(0)).collect(),
        packets: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let offset = realtime_offset_ns();
    let threads = cfg.recv_threads.clamp(1, 8);
    let mut groups: Vec<Vec<(usize, UdpSocket)>> = (0..threads).map(|_| Vec::new()).collect();
    for (j, s) in players.into_iter().enumerate() {
        groups[j % threads].push((j, s));
    }
    let mut handles = Vec::new();
    for (i, g) in groups.into_iter().enumerate() {
        let sh = sh.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("term-rx-{i}"))
                .spawn(move || receiver(g, &sh, offset))?,
        );
    }
    let tx = {
        let sh = sh.clone();
        let size = cfg.size;
        std::thread::Builder::new()
            .name("term-tx".into())
            .spawn(move || sender(pubs, size, &sh))?
    };

    let mut gone = Vec::new();
    let result = (|| -> Result<TerminateReport> {
        let mut after_reply = latency_histogram(3);
        let mut after_request = latency_histogram(3);
        let mut rtt = latency_histogram(3);
        let mut rep = TerminateReport {
            sessions: cfg.sessions(),
            probe_players: n_probe as u32,
            probe_pps: cfg.probe_pps,
            passes: cfg.passes,
            setup_s,
            ..Default::default()
        };
        // Live within the last few packet intervals (and at least 50 ms).
        let stale_ns = (5_000_000_000 / cfg.probe_pps as u64).max(50_000_000);
        std::thread::sleep(cfg.warmup);
        for pass in 0..cfg.passes {
            if signal::stopped() {
                break;
            }
            let mut timed = Vec::with_capacity(n_probe);
            for (j, id) in probe_ids.iter().enumerate() {
                let t_req = mono_ns();
                let live = sh.last[j].load(Ordering::Relaxed) + stale_ns >= t_req;
                client.terminate_one(id)?;
                let t_rep = mono_ns();
                gone.push(id.clone());
                rep.terminates += 1;
                rtt.saturating_record((t_rep - t_req).max(1));
                if live {
                    timed.push((j, t_req, t_rep));
                } else {
                    rep.not_live += 1;
                }
                std::thread::sleep(cfg.gap);
            }
            std::thread::sleep(cfg.grace);
            let now = mono_ns();
            for &(j, t_req, t_rep) in &timed {
                let last = sh.last[j].load(Ordering::Relaxed);
                if last + cfg.grace.as_nanos() as u64 / 2 > now {
                    // Still arriving well after the terminate: a session that did not stop.
                    rep.still_receiving += 1;
                    continue;
                }
                rep.samples += 1;
                if last > t_rep {
                    rep.last_after_reply += 1;
                }
                after_reply.saturating_record(last.saturating_sub(t_rep).max(1));
                after_request.saturating_record(last.saturating_sub(t_req).max(1));
            }
            if cfg.progress {
                eprintln!(
                    "  pass {}/{}: {} terminates, {} timed",
                    pass + 1,
                    cfg.passes,
                    probe_ids.len(),
                    timed.len()
                );
            }
            // New play sessions for the next pass (same sockets).
            if pass + 1 < cfg.passes {
                for (j, a) in probe_addrs.iter().enumerate() {
                    let r = client.play(&name(stream_of(j)), *a)?;
                    probe_ids[j] = r.media_session_id.clone();
                    cleanup.ids.push(r.media_session_id);
                }
                std::thread::sleep(cfg.warmup);
            }
        }
        rep.after_reply = Latency::from_histogram(&after_reply);
        rep.after_request = Latency::from_histogram(&after_request);
        rep.rest_round_trip = Latency::from_histogram(&rtt);
        Ok(rep)
    })();
    sh.stop.store(true, Ordering::Relaxed);
    let _ = tx.join();
    for h in handles {
        let _ = h.join();
    }
    // Terminated probe sessions are gone: a chunk of only those would get a 404.
    cleanup.gone.extend(gone);
    let mut rep = result?;
    rep.packets_received = sh.packets.load(Ordering::Relaxed);
    Ok(rep)
}
