//! `load play --whep`: many str0m WHEP players on one thread against an existing stream, with
//! connect-time percentiles, delivery and loss, the server's CPU per delivered packet and RSS
//! per player (`benches/webrtc.sh` runs it beside SDES SRTP players on the same stream).
//!
//! Each player is a non-lite str0m `Rtc` in RTP mode on its own UDP socket, offering one
//! video m-line `recvonly`, as a browser would. `signal_threads` threads POST the offers
//! concurrently and hand each peer to the driver thread, which drives every peer handed over
//! (so a connect time is the real ICE + DTLS time, not a wait for the driver), then
//! receives until the end. One epoll set serves every socket; str0m timeouts are checked on
//! every turn.
//!
//! Loss is counted from RTP sequence gaps per player (the server rewrites sequence numbers
//! per player and gaps mean packets it did not deliver). Latency comes from the send stamp
//! when the publisher puts it in the payload (plain RTP with `load publish --vp8-sdp`); an
//! SRTP publisher carries it in a header extension the server does not forward to WebRTC
//! players, so then there is none.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::net::{bind_udp, cpu_seconds, rss_kib, Epoll};
use crate::rest::Client;
use crate::Result;

#[derive(Debug, Clone)]
pub struct WhepConfig {
    /// e.g. `http://127.0.0.1:8081`.
    pub server: String,
    pub token: Option<String>,
    pub name: String,
    pub players: u32,
    /// Measured window after every player connected (or gave up).
    pub duration: Duration,
    pub local_ip: IpAddr,
    pub base_port: u16,
    pub server_pid: Option<u32>,
    /// A player not connected this long after its POST counts as failed.
    pub connect_timeout: Duration,
    /// Threads POSTing offers concurrently (a browser audience arrives in parallel).
    pub signal_threads: usize,
}

#[derive(Debug, Serialize)]
pub struct ConnectMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct WhepReport {
    pub players: u32,
    pub connected: u32,
    /// POST sent → str0m `Event::Connected` (ICE + DTLS), over the connected players.
    pub connect_ms: Option<ConnectMs>,
    /// One-way latency over the window, µs (p50, p99, p99.9, max), when the publisher
    /// stamped its payloads (`load publish --vp8-sdp`); merged over every player.
    pub latency_us: Option<[u64; 4]>,
    /// Wall time from the first POST to the last player connected.
    pub connect_all_ms: f64,
    pub window_s: f64,
    /// RTP packets the players received in the window.
    pub rx_packets: u64,
    pub rx_pps: f64,
    /// Packets missing from the players' sequence ranges, percent of expected.
    pub loss_pct: f64,
    pub server_cpu_s: Option<f64>,
    /// Server CPU microseconds per packet delivered to a player, over the window.
    pub server_cpu_us_per_packet: Option<f64>,
    /// (RSS with the players connected − RSS before) / players.
    pub server_rss_kib_per_player: Option<f64>,
    /// This tool's CPU over the window (its own cost bounds what it can measure).
    pub tool_cpu_s: f64,
}

struct Player {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    posted: Instant,
    connected: Option<Instant>,
    timeout: Instant,
    location: String,
    /// RTP packets received in the window, and the sequence range seen in it.
    rx: u64,
    /// One-way latency (µs) from the send stamp at the start of the payload, when the
    /// publisher put it there (plain RTP, `load publish --vp8-sdp`).
    latency: Histogram<u64>,
    seq: Option<(u64, u64)>,
    failed: bool,
}

impl Player {
    /// Handles str0m's outputs until its next timeout.
    fn drain(&mut self, counting: bool) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    self.connected.get_or_insert_with(Instant::now);
                }
                Ok(Output::Event(Event::RtpPacket(p))) if counting => {
                    self.rx += 1;
                    if let Some(us) = stamp_latency_us(&p.payload) {
                        let _ = self.latency.record(us);
                    }
                    let s = *p.seq_no;
                    self.seq = Some(match self.seq {
                        None => (s, s),
                        Some((lo, hi)) => (lo.min(s), hi.max(s)),
                    });
                }
                Ok(Output::Event(_)) => {}
                Err(_) => {
                    self.failed = true;
                    self.timeout = Instant::now() + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    fn receive(&mut self, buf: &mut [u8], counting: bool) {
        loop {
            let (n, from) = match self.sock.recv_from(buf) {
                Ok(v) => v,
                Err(_) => return,
            };
            let Ok(r) = Receive::new(Protocol::Udp, from, self.local, &buf[..n]) else {
                continue;
            };
            if self.failed
                || self
                    .rtc
                    .handle_input(Input::Receive(Instant::now(), r))
                    .is_err()
            {
                continue;
            }
            self.drain(counting);
        }
    }

    fn tick(&mut self, now: Instant, counting: bool) {
        if !self.failed && now >= self.timeout {
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                self.failed = true;
                return;
            }
            self.drain(counting);
        }
    }
}

/// POSTs one WHEP offer and applies the answer; the caller drives the player from then on.
fn connect(client: &Client, cfg: &WhepConfig, local_port: u16) -> Result<Player> {
    let sock = bind_udp(SocketAddr::new(cfg.local_ip, local_port), 256 * 1024)?;
    sock.set_nonblocking(true)?;
    let local = sock.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending): (_, SdpPendingOffer) = api.apply().ok_or("str0m made no offer")?;
    let path = format!("/whep/{}", cfg.name);
    let (location, answer) = client.post_sdp(&path, &offer.to_sdp_string())?;
    let answer = SdpAnswer::from_sdp_string(&answer)
        .map_err(|e| format!("POST {path}: bad SDP answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("POST {path}: answer refused: {e}"))?;
    let mut p = Player {
        rtc,
        sock,
        local,
        posted: now,
        connected: None,
        timeout: now,
        location,
        rx: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        seq: None,
        failed: false,
    };
    p.drain(false);
    Ok(p)
}

/// Latency of a packet whose payload starts with the load tool's stamp (send time on
/// CLOCK_MONOTONIC, publisher index 0): `None` when the bytes are not a plausible stamp (an
/// SRTP publisher carries the stamp in a header extension, which the server does not
/// forward to WebRTC players, and its payload starts with filler).
fn stamp_latency_us(payload: &[u8]) -> Option<u64> {
    let (sent, publisher) = crate::pkt::read_stamp(payload)?;
    let now = crate::clock::mono_ns();
    (publisher == 0 && sent <= now && now - sent < 60_000_000_000).then(|| (now - sent) / 1000)
}

/// One turn over every player: readable sockets first, then due str0m timeouts.
fn turn(players: &mut [Player], epoll: &mut Epoll, buf: &mut [u8], counting: bool, wait_ms: i32) {
    if let Ok(ready) = epoll.wait(wait_ms) {
        for i in ready {
            if let Some(p) = players.get_mut(i as usize) {
                p.receive(buf, counting);
            }
        }
    }
    let now = Instant::now();
    for p in players.iter_mut() {
        p.tick(now, counting);
    }
}

pub fn run(cfg: &WhepConfig) -> Result<WhepReport> {
    if cfg.players == 0 {
        return Err("--players must be at least 1".into());
    }
    let client = Client::new(&cfg.server, cfg.token.clone());
    let mut epoll = Epoll::new(1024)?;
    let mut buf = vec![0u8; 2048];
    let mut players: Vec<Player> = Vec::with_capacity(cfg.players as usize);
    let rss0 = cfg.server_pid.map(rss_kib).transpose()?;

    // Connect: `signal_threads` threads POST the offers (each builds its peer and applies
    // the answer); this thread drives every peer handed over so far, so a connect time is
    // the handshake's, not a wait for the driver.
    let t0 = Instant::now();
    let next = std::sync::atomic::AtomicU32::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<Result<Player>>();
    let mut first_error: Option<String> = None;
    std::thread::scope(|scope| {
        for _ in 0..cfg.signal_threads.clamp(1, cfg.players as usize) {
            let (tx, next, stop, client) = (tx.clone(), &next, &stop, &client);
            scope.spawn(move || loop {
                let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if j >= cfg.players || stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let port = match cfg.base_port {
                    0 => Some(0),
                    b => b.checked_add(j as u16),
                };
                let r = match port {
                    Some(port) => connect(client, cfg, port),
                    None => Err("--player-base-port + --players exceeds 65535".into()),
                };
                if tx.send(r).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut handed = 0u32;
        while handed < cfg.players && first_error.is_none() {
            loop {
                match rx.try_recv() {
                    Ok(Ok(p)) => {
                        handed += 1;
                        if let Err(e) = epoll.add(p.sock.as_raw_fd(), players.len() as u64) {
                            first_error = Some(e.to_string());
                        }
                        players.push(p);
                    }
                    Ok(Err(e)) => {
                        handed += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        handed = cfg.players;
                        break;
                    }
                }
            }
            turn(&mut players, &mut epoll, &mut buf, false, 1);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    if let Some(e) = first_error {
        return Err(e.into());
    }
    let give_up = Instant::now() + cfg.connect_timeout;
    while Instant::now() < give_up && players.iter().any(|p| p.connected.is_none() && !p.failed) {
        turn(&mut players, &mut epoll, &mut buf, false, 5);
    }
    let connect_all_ms = players
        .iter()
        .filter_map(|p| p.connected)
        .max()
        .map_or(0.0, |t| (t - t0).as_secs_f64() * 1e3);
    let mut hist = Histogram::<u64>::new(3)?;
    for p in &players {
        if let Some(c) = p.connected {
            hist.record((c - p.posted).as_micros() as u64)?;
        }
    }
    let connected = hist.len() as u32;
    let connect_ms = (connected > 0).then(|| ConnectMs {
        p50: hist.value_at_quantile(0.50) as f64 / 1e3,
        p95: hist.value_at_quantile(0.95) as f64 / 1e3,
        p99: hist.value_at_quantile(0.99) as f64 / 1e3,
        max: hist.max() as f64 / 1e3,
    });

    // Settle (the server sends each new player a keyframe request's worth of catch-up), then
    // measure a window.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        turn(&mut players, &mut epoll, &mut buf, false, 5);
    }
    let rss1 = cfg.server_pid.map(rss_kib).transpose()?;
    let cpu0 = cfg.server_pid.map(cpu_seconds).transpose()?;
    let tool0 = cpu_seconds(std::process::id())?;
    let w0 = Instant::now();
    let end = w0 + cfg.duration;
    while Instant::now() < end {
        turn(&mut players, &mut epoll, &mut buf, true, 5);
    }
    let window_s = w0.elapsed().as_secs_f64();
    let cpu1 = cfg.server_pid.map(cpu_seconds).transpose()?;
    let tool_cpu_s = cpu_seconds(std::process::id())? - tool0;

    let rx_packets: u64 = players.iter().map(|p| p.rx).sum();
    let expected: u64 = players
        .iter()
        .filter_map(|p| p.seq.map(|(lo, hi)| hi - lo + 1))
        .sum();
    let loss_pct = if expected == 0 {
        0.0
    } else {
        100.0 * expected.saturating_sub(rx_packets) as f64 / expected as f64
    };
    let server_cpu_s = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let mut lat = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for p in &players {
        lat.add(&p.latency)?;
    }
    let latency_us = (!lat.is_empty()).then(|| {
        [
            lat.value_at_quantile(0.5),
            lat.value_at_quantile(0.99),
            lat.value_at_quantile(0.999),
            lat.max(),
        ]
    });
    let report = WhepReport {
        players: cfg.players,
        connected,
        connect_ms,
        latency_us,
        connect_all_ms,
        window_s,
        rx_packets,
        rx_pps: rx_packets as f64 / window_s,
        loss_pct,
        server_cpu_s,
        server_cpu_us_per_packet: server_cpu_s
            .filter(|_| rx_packets > 0)
            .map(|c| c * 1e6 / rx_packets as f64),
        server_rss_kib_per_player: rss0
            .zip(rss1)
            .map(|(a, b)| (b as f64 - a as f64) / cfg.players as f64),
        tool_cpu_s,
    };

    // End the sessions (bounded: one DELETE each, 10 s timeout).
    for p in players.iter().filter(|p| !p.location.is_empty()) {
        client.delete(&p.location);
    }
    Ok(report)
}

impl WhepReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "whep: {}/{} players connected in {:.0} ms",
            self.connected, self.players, self.connect_all_ms
        );
        if let Some(c) = &self.connect_ms {
            s += &format!(
                " (connect p50 {:.1} / p95 {:.1} / p99 {:.1} / max {:.1} ms)",
                c.p50, c.p95, c.p99, c.max
            );
        }
        s += &format!(
            "\n  received {} packets in {:.2} s ({:.0} pps), loss {:.3}%",
            self.rx_packets, self.window_s, self.rx_pps, self.loss_pct
        );
        if let Some([p50, p99, p999, max]) = self.latency_us {
            s += &format!(
                "\n  latency p50 {p50} / p99 {p99} / p99.9 {p999} / max {max} us (send stamp)"
            );
        }
        if let (Some(c), Some(us)) = (self.server_cpu_s, self.server_cpu_us_per_packet) {
            s += &format!("\n  server cpu {c:.2} s: {us:.3} us per delivered packet");
        }
        if let Some(r) = self.server_rss_kib_per_player {
            s += &format!("\n  server rss {r:.1} KiB per player");
        }
        s += &format!("\n  tool cpu {:.2} s", self.tool_cpu_s);
        s
    }
}
