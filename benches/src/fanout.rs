//! One load run: create sessions, send paced RTP from the publishers, receive at the players,
//! then clean up and build the [`Report`].
//!
//! Topology: publisher `i` publishes stream `names[i]`; against the server, player `j` plays
//! `names[j % names.len()]` (one play session per player socket). Against the raw relay every
//! player receives every publisher (the relay copies each datagram to all its destinations), so
//! compare the two with one publisher, or mind that the relay's load is `publishers` times
//! larger.
//!
//! SRTP mode ([`FanoutConfig::srtp`], server only): publishers publish with an SDP offer
//! carrying their `a=crypto` key and encrypt every packet; players play with an offer carrying
//! theirs and get, in the answer, the key the server encrypts their copy with. The send stamp
//! rides in an RTP header extension (authenticated, not encrypted: see [`crate::pkt`]), so
//! players account loss/latency without decrypting; each player authenticates and decrypts one
//! datagram in [`FanoutConfig::srtp_check_every`] to prove its key works
//! ([`crate::report::SrtpCheck`]).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use engine::srtp::{SrtpContext, SrtpKeys, SrtpProfile};

use crate::clock::realtime_offset_ns;
use crate::clock::{mono_ns, sleep_until};
use crate::net::{
    bind_udp, cpu_seconds, enable_rx_drop_counter, enable_rx_timestamps, rss_kib,
    udp_rcvbuf_errors, Ancillary, Epoll, RecvBatch, SendBatch,
};
use crate::pkt::{
    publisher_ssrc, ts_step, write_fields, write_fields_at, StampAt, MIN_PACKET_LEN_EXT,
};
use crate::report::{Cpu, Jitter, Latency, Point, Received, Report, Rss, Sent, Setup, SrtpCheck};
use crate::rest::{answer_keys, srtp_offer, Client};
use crate::rx::{latency_histogram, PlayerRx, RxTotals, Series};
use crate::{signal, Result};

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The media server, through its REST API.
    Server { url: String, token: Option<String> },
    /// The raw relay baseline at this address; players must be where the relay sends.
    Raw { relay: SocketAddr },
}

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub target: Target,
    /// Stream names. With publishers, publisher `i` publishes `names[i]` (so there must be as
    /// many names as publishers); players play `names[j % len]`.
    pub names: Vec<String>,
    /// Publisher sockets (0: play only).
    pub publishers: u32,
    /// Player sockets (0: publish only).
    pub players: u32,
    /// Packets per second per publisher; 0 = as fast as possible (flat profile only).
    pub pps: u32,
    /// What publishers send: evenly paced packets (flat) or frames (video, audio, av).
    pub profile: crate::profile::Profile,
    /// RTP packet size in bytes (header included).
    pub size: usize,
    pub duration: Duration,
    /// Longest the players keep receiving after the publishers stop; they stop earlier once
    /// nothing arrived for [`QUIET_NS`] (a saturated target may still be working through its
    /// backlog: what is still queued at the end counts as lost).
    pub drain: Duration,
    /// Time-series resolution.
    pub interval: Duration,
    /// Local address of the player and publisher sockets (also sent to the server as the
    /// players' destination).
    pub local_ip: IpAddr,
    /// Player `j` binds `player_base_port + j` (0: ephemeral ports).
    pub player_base_port: u16,
    /// Publisher `i` binds `publisher_base_port + i` (0: ephemeral ports).
    pub publisher_base_port: u16,
    pub recv_threads: usize,
    /// Datagrams per sendmmsg / recvmmsg.
    pub batch: usize,
    /// Socket buffer size requested for every socket.
    pub buffer_bytes: usize,
    /// Server process whose RSS is sampled before/after creating the players.
    pub server_pid: Option<u32>,
    /// Measure arrival with the kernel's receive timestamp (SO_TIMESTAMPNS) instead of the
    /// time the tool read the packet, so latency excludes the players' own scheduling delay.
    pub kernel_timestamps: bool,
    pub progress: bool,
    /// SRTP with this suite (server only): see the module docs. `size` is the RTP packet
    /// before protection; on the wire each datagram is `size + suite overhead` bytes.
    pub srtp: Option<SrtpProfile>,
    /// SRTP mode: each player decrypts one datagram in this many (>= 1).
    pub srtp_check_every: u32,
    /// Plain RTP publishers post a VP8 SDP offer ([`crate::rest::rtp_offer`]), so the stream
    /// has a codec and WHEP players can play it (with the stamp in the payload).
    pub vp8_sdp: bool,
    /// Frame profiles: publishers send each run of a frame as one UDP GSO datagram.
    pub publisher_gso: bool,
    /// Set from outside to end the run early (as the duration would): `load fanout --webrtc`
    /// stops its publisher once the WHEP players are done.
    pub stop: Arc<AtomicBool>,
}

impl FanoutConfig {
    /// Defaults for everything but the target and the counts.
    pub fn new(target: Target, names: Vec<String>, publishers: u32, players: u32) -> Self {
        Self {
            target,
            names,
            publishers,
            players,
            pps: 1000,
            profile: crate::profile::Profile::Flat,
            size: 1200,
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(3),
            interval: Duration::from_secs(1),
            local_ip: IpAddr::from([127, 0, 0, 1]),
            player_base_port: 0,
            publisher_base_port: 0,
            recv_threads: 1,
            batch: 64,
            buffer_bytes: 4 << 20,
            server_pid: None,
            kernel_timestamps: true,
            progress: true,
            srtp: None,
            srtp_check_every: 64,
            vp8_sdp: false,
            publisher_gso: false,
            stop: Arc::default(),
        }
    }

    /// Where packets carry the send stamp.
    fn stamp_at(&self) -> StampAt {
        if self.srtp.is_some() {
            StampAt::Extension
        } else {
            StampAt::Payload
        }
    }

    /// Bytes on the wire per packet.
    fn wire_size(&self) -> usize {
        self.size + self.srtp.map_or(0, |p| p.rtp_overhead())
    }

    fn validate(&self) -> Result<()> {
        let (min, max) = (
            self.stamp_at().min_len(),
            crate::net::MAX_DATAGRAM - (self.wire_size() - self.size),
        );
        if self.size < min || self.size > max {
            return Err(format!("--size must be in {min}..={max}").into());
        }
        if self.srtp.is_some() {
            if let Target::Raw { .. } = self.target {
                return Err("--srtp needs the server (the raw relay baseline is plain UDP)".into());
            }
            if self.srtp_check_every == 0 {
                return Err("--srtp-check-every must be at least 1".into());
            }
        }
        if self.publishers == 0 && self.players == 0 {
            return Err("nothing to do: no publishers and no players".into());
        }
        if self.names.is_empty() {
            return Err("no stream name".into());
        }
        if self.publishers > 0 && self.names.len() != self.publishers as usize {
            return Err(format!(
                "{} names for {} publishers",
                self.names.len(),
                self.publishers
            )
            .into());
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            return Err("--duration must be between 1 s and 24 h".into());
        }
        let top = |base: u16, n: u32| base == 0 || base as u32 + n <= 65536;
        if !top(self.player_base_port, self.players)
            || !top(self.publisher_base_port, self.publishers)
        {
            return Err("port range runs past 65535".into());
        }
        if let Target::Raw { .. } = self.target {
            if self.players > 0 && self.player_base_port == 0 {
                return Err("against the raw relay players need --player-base-port (the relay's --to range)".into());
            }
        }
        Ok(())
    }
}

/// Sessions created on the server; terminated on drop if not done explicitly.
struct Sessions<'a> {
    client: Option<&'a Client>,
    ids: Vec<String>,
}

impl Sessions<'_> {
    fn terminate(&mut self) -> Result<()> {
        let ids = std::mem::take(&mut self.ids);
        match self.client {
            Some(c) if !ids.is_empty() => c.terminate(&ids),
            _ => Ok(()),
        }
    }
}

impl Drop for Sessions<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("warning: terminating sessions: {e}");
        }
    }
}

/// The drain ends early after this long without a packet.
pub const QUIET_NS: u64 = 300_000_000;

pub(crate) struct SenderResult {
    pub(crate) per_publisher: Vec<u64>,
    pub(crate) bytes: u64,
    pub(crate) failed: u64,
    /// Packets sent per interval since `t0`, by the send stamp they carry.
    pub(crate) per_interval: Vec<u64>,
    pub(crate) end_ns: u64,
}

impl SenderResult {
    pub(crate) fn new(publishers: usize, t0: u64) -> Self {
        Self {
            per_publisher: vec![0; publishers],
            bytes: 0,
            failed: 0,
            per_interval: Vec::new(),
            end_ns: t0,
        }
    }

    /// Accounts one `sendmmsg` made `since_t0_ns` into the run (`bytes`: what it sent).
    pub(crate) fn record(
        &mut self,
        since_t0_ns: u64,
        interval_ns: u64,
        r: &crate::net::SendResult,
        bytes: u64,
        tx_count: &AtomicU64,
    ) {
        self.failed += r.failed as u64;
        self.bytes += bytes;
        tx_count.fetch_add(r.sent as u64, Ordering::Relaxed);
        let slot = (since_t0_ns / interval_ns) as usize;
        if self.per_interval.len() <= slot {
            self.per_interval.resize(slot + 1, 0);
        }
        self.per_interval[slot] += r.sent as u64;
    }

    /// The run's end and what each publisher sent.
    pub(crate) fn finish(mut self, pubs: &[Publisher], end: u64, t0: u64) -> Self {
        self.end_ns = mono_ns().min(end).max(t0);
        for (i, p) in pubs.iter().enumerate() {
            self.per_publisher[i] = p.sent;
        }
        self
    }
}

pub(crate) struct Publisher {
    pub(crate) sock: UdpSocket,
    pub(crate) idx: u32,
    pub(crate) ssrc: u32,
    pub(crate) seq0: u16,
    pub(crate) attempted: u64,
    pub(crate) sent: u64,
    /// SRTP mode: the publisher's own key (the one its offer carried).
    pub(crate) srtp: Option<SrtpContext>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn sender(
    mut pubs: Vec<Publisher>,
    pps: u32,
    size: usize,
    wire_size: usize,
    batch: usize,
    t0: u64,
    end: u64,
    interval_ns: u64,
    stop: &AtomicBool,
    tx_count: &AtomicU64,
) -> SenderResult {
    let mut sb = SendBatch::new(batch, wire_size);
    let batch = sb.capacity();
    // SRTP: each packet is built here in the clear, then protected into the send batch.
    let mut plain = vec![0u8; size];
    let step = ts_step(pps);
    let mut res = SenderResult::new(pubs.len(), t0);
    sleep_until(t0);
    if pubs.is_empty() {
        // Play-only run: just keep time.
        while mono_ns() < end && !stop.load(Ordering::Relaxed) && !signal::stopped() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    'outer: while !pubs.is_empty() {
        let now = mono_ns();
        if now >= end || stop.load(Ordering::Relaxed) || signal::stopped() {
            break;
        }
        // Packets each publisher should have sent by now (the first one is due at t0).
        let due = if pps == 0 {
            u64::MAX
        } else {
            ((now - t0) as u128 * pps as u128 / 1_000_000_000) as u64 + 1
        };
        for p in pubs.iter_mut() {
            let mut owed = if pps == 0 {
                batch as u64
            } else {
                due.saturating_sub(p.attempted)
            };
            while owed > 0 {
                let k = owed.min(batch as u64) as usize;
                let stamp = mono_ns();
                if stamp >= end {
                    break 'outer;
                }
                for i in 0..k {
                    let n = p.attempted + i as u64;
                    let (seq, ts) = (p.seq0.wrapping_add(n as u16), (n as u32).wrapping_mul(step));
                    match p.srtp.as_mut() {
                        None => write_fields(sb.packet_mut(i), seq, ts, p.ssrc, stamp, p.idx),
                        Some(ctx) => {
                            let at = StampAt::Extension;
                            write_fields_at(at, &mut plain, seq, ts, p.ssrc, stamp, p.idx);
                            let n = ctx
                                .protect_rtp_into(&plain, sb.packet_mut(i))
                                .expect("SRTP protect of the tool's own packet");
                            debug_assert_eq!(n, wire_size);
                        }
                    }
                }
                let r = sb.send(p.sock.as_raw_fd(), k);
                p.attempted += k as u64;
                p.sent += r.sent as u64;
                owed -= k as u64;
                let bytes = (r.sent * wire_size) as u64;
                res.record(stamp - t0, interval_ns, &r, bytes, tx_count);
            }
        }
        if pps > 0 {
            // Sleep until the next packet of the publisher that is furthest behind is due.
            let behind = pubs.iter().map(|p| p.attempted).min().unwrap_or(0);
            let next = t0 + (behind as u128 * 1_000_000_000 / pps as u128) as u64;
            sleep_until(next.min(end));
        }
    }
    res.finish(&pubs, end, t0)
}

struct ReceiverResult {
    players: Vec<(usize, PlayerRx)>,
    srtp: SrtpTally,
    latency: Histogram<u64>,
    series: Series,
    last_arrival_ns: u64,
}

/// How players timestamp arrivals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArrivalClock {
    /// `Some(realtime - monotonic)`: use the kernel's receive timestamps.
    pub(crate) kernel_offset: Option<i64>,
}

impl ArrivalClock {
    pub(crate) fn arrival(&self, a: &Ancillary, now: u64) -> u64 {
        match (self.kernel_offset, a.kernel_time_ns) {
            (Some(off), Some(rt)) => (rt as i64 - off).max(0) as u64,
            _ => now,
        }
    }
}

/// SRTP mode: one player's decryption context (the key the server answered with).
struct PlayerSrtp {
    ctx: SrtpContext,
    every: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct SrtpTally {
    checked: u64,
    ok: u64,
    auth_failures: u64,
    other_failures: u64,
}

impl SrtpTally {
    fn add(&mut self, o: &SrtpTally) {
        self.checked += o.checked;
        self.ok += o.ok;
        self.auth_failures += o.auth_failures;
        self.other_failures += o.other_failures;
    }

    /// Authenticates and decrypts `d`; the plaintext after our header must be the
    /// publisher's zero filler.
    fn check(&mut self, s: &mut PlayerSrtp, d: &[u8]) {
        self.checked += 1;
        match s.ctx.unprotect_rtp(d) {
            Ok(p)
                if p.len() >= MIN_PACKET_LEN_EXT
                    && p[MIN_PACKET_LEN_EXT..].iter().all(|&b| b == 0) =>
            {
                self.ok += 1
            }
            Ok(_) => self.other_failures += 1,
            Err(engine::srtp::SrtpError::Auth) => self.auth_failures += 1,
            Err(_) => self.other_failures += 1,
        }
    }
}

type PlayerSock = (usize, UdpSocket, Option<PlayerSrtp>);

fn receiver(
    mut socks: Vec<PlayerSock>,
    batch: usize,
    clock: ArrivalClock,
    t0: u64,
    interval_ns: u64,
    stop: &AtomicBool,
    rx_count: &AtomicU64,
) -> std::io::Result<ReceiverResult> {
    let mut ep = Epoll::new(256)?;
    for (k, (_, s, _)) in socks.iter().enumerate() {
        s.set_nonblocking(true)?;
        ep.add(s.as_raw_fd(), k as u64)?;
    }
    let mut players: Vec<(usize, PlayerRx)> = socks
        .iter()
        .map(|(j, _, _)| (*j, PlayerRx::default()))
        .collect();
    let mut tally = SrtpTally::default();
    let mut latency = latency_histogram(3);
    let mut series = Series::new(t0, interval_ns);
    let mut rb = RecvBatch::with_ancillary(batch);
    let mut ready = Vec::with_capacity(256);
    let mut last_arrival_ns = 0u64;
    let mut reported = false;
    while !stop.load(Ordering::Relaxed) {
        ready.clear();
        ready.extend(ep.wait(20)?);
        for &k in &ready {
            let (_, sock, srtp) = &mut socks[k as usize];
            let (fd, player) = (sock.as_raw_fd(), &mut players[k as usize].1);
            let r = rb.drain(fd, 16, |rb, n, now| {
                for i in 0..n {
                    let d = rb.get(i);
                    let anc = rb.ancillary(i);
                    if let Some(d) = anc.socket_drops {
                        player.note_socket_drops(d);
                    }
                    let at = clock.arrival(&anc, now);
                    let lat = player.on_datagram(d, at);
                    if let Some(s) = srtp.as_mut() {
                        if (player.packets - 1) % s.every == 0 {
                            tally.check(s, d);
                        }
                    }
                    if let Some(l) = lat {
                        latency.saturating_record(l.min(crate::rx::MAX_LATENCY_NS));
                    }
                    series.record(at, d.len() as u64, lat);
                    last_arrival_ns = last_arrival_ns.max(at);
                }
                rx_count.fetch_add(n as u64, Ordering::Relaxed);
            });
            // ECONNREFUSED and friends: report once, keep going.
            if let Err(e) = r {
                if !reported {
                    eprintln!("warning: player recv: {e}");
                    reported = true;
                }
            }
        }
    }
    Ok(ReceiverResult {
        players,
        srtp: tally,
        latency,
        series,
        last_arrival_ns,
    })
}

pub(crate) fn bind_many(ip: IpAddr, base: u16, n: u32, buffer: usize) -> Result<Vec<UdpSocket>> {
    (0..n)
        .map(|j| {
            let port = if base == 0 { 0 } else { base + j as u16 };
            bind_udp(SocketAddr::new(ip, port), buffer).map_err(Into::into)
        })
        .collect()
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Runs one load test; sessions are terminated before returning, also on errors.
pub fn run(cfg: &FanoutConfig) -> Result<Report> {
    cfg.validate()?;
    let (client, target_name, target_addr) = match &cfg.target {
        Target::Server { url, token } => {
            (Some(Client::new(url, token.clone())), "engine", url.clone())
        }
        Target::Raw { relay } => (None, "raw", relay.to_string()),
    };
    let mut sessions = Sessions {
        client: client.as_ref(),
        ids: Vec::new(),
    };
    let n_pub = cfg.publishers as usize;
    let n_play = cfg.players as usize;

    // Sockets first: a port clash fails before any session exists.
    let players = bind_many(
        cfg.local_ip,
        cfg.player_base_port,
        cfg.players,
        cfg.buffer_bytes,
    )?;
    // Ancillary data from the first datagram on: the server may start sending as soon as a
    // play session exists, before the receivers run.
    for s in &players {
        if cfg.kernel_timestamps {
            enable_rx_timestamps(s)?;
        }
        enable_rx_drop_counter(s)?;
    }
    let pub_socks = bind_many(
        cfg.local_ip,
        cfg.publisher_base_port,
        cfg.publishers,
        cfg.buffer_bytes,
    )?;

    // Publish sessions (or the relay) give each publisher its destination.
    let mut setup = Setup::default();
    let t = Instant::now();
    let mut dests = Vec::with_capacity(n_pub);
    let mut pub_srtp: Vec<Option<SrtpContext>> = Vec::with_capacity(n_pub);
    for name in cfg.names.iter().take(n_pub) {
        match (&client, &cfg.target) {
            (Some(c), _) => {
                let r = match cfg.srtp {
                    Some(profile) => {
                        let keys = SrtpKeys::generate(profile)?;
                        let r = c.publish_sdp(name, &srtp_offer(None, &keys))?;
                        pub_srtp.push(Some(SrtpContext::new(&keys)?));
                        r
                    }
                    None if cfg.vp8_sdp => c.publish_sdp(name, &crate::rest::rtp_offer())?,
                    None => c.publish(name)?,
                };
                sessions.ids.push(r.media_session_id.clone());
                dests.push(r.media_addr()?);
            }
            (None, Target::Raw { relay }) => dests.push(*relay),
            (None, Target::Server { .. }) => unreachable!(),
        }
    }
    setup.publish_ms = ms_since(t);

    let rss_before = cfg.server_pid.map(rss_kib).transpose()?;
    let host_drops_before = udp_rcvbuf_errors().ok();
    let t = Instant::now();
    let mut play_sessions = 0u32;
    let mut play_srtp: Vec<Option<PlayerSrtp>> = Vec::with_capacity(n_play);
    if let Some(c) = &client {
        for (j, s) in players.iter().enumerate() {
            let name = &cfg.names[j % cfg.names.len()];
            let r = match cfg.srtp {
                Some(profile) => {
                    // The player's own key would protect the RTCP it sends (none here); the
                    // answer's key is what the server encrypts this player's copy with.
                    let keys = SrtpKeys::generate(profile)?;
                    let r = c.play_sdp(name, &srtp_offer(Some(s.local_addr()?), &keys))?;
                    let answer = r.sdp.as_deref().ok_or("play reply without an SDP answer")?;
                    play_srtp.push(Some(PlayerSrtp {
                        ctx: SrtpContext::new(&answer_keys(answer)?)?,
                        every: cfg.srtp_check_every.max(1) as u64,
                    }));
                    r
                }
                None => c.play(name, s.local_addr()?)?,
            };
            sessions.ids.push(r.media_session_id);
            play_sessions += 1;
        }
    }
    setup.play_ms = ms_since(t);
    let rss_after_players = cfg.server_pid.map(rss_kib).transpose()?;

    pub_srtp.resize_with(n_pub, || None);
    let pubs: Vec<Publisher> = pub_socks
        .into_iter()
        .zip(&dests)
        .zip(pub_srtp)
        .enumerate()
        .map(|(i, ((sock, dest), srtp))| {
            sock.connect(dest)?;
            Ok(Publisher {
                sock,
                idx: i as u32,
                ssrc: publisher_ssrc(i as u32),
                seq0: (i as u16).wrapping_mul(7919),
                attempted: 0,
                sent: 0,
                srtp,
            })
        })
        .collect::<Result<_>>()?;

    // Which publishers each player hears (for the expected packet count).
    let subscribed = |j: usize| -> Vec<usize> {
        match cfg.target {
            Target::Raw { .. } => (0..n_pub).collect(),
            Target::Server { .. } if n_pub > 0 => vec![j % n_pub],
            Target::Server { .. } => Vec::new(),
        }
    };
    let fanout_factor = if n_pub == 0 {
        0.0
    } else {
        (0..n_play).map(|j| subscribed(j).len()).sum::<usize>() as f64 / n_pub as f64
    };

    // Let the server wire the sessions up before the first packet.
    if client.is_some() {
        std::thread::sleep(Duration::from_millis(200));
    }

    let interval_ns = cfg.interval.as_nanos().max(1) as u64;
    let stop = cfg.stop.clone();
    let tx_count = Arc::new(AtomicU64::new(0));
    let rx_count = Arc::new(AtomicU64::new(0));
    let t0 = mono_ns() + 20_000_000;
    let end = t0 + cfg.duration.as_nanos() as u64;

    let clock = ArrivalClock {
        kernel_offset: cfg.kernel_timestamps.then(realtime_offset_ns),
    };
    let threads = cfg.recv_threads.clamp(1, n_play.max(1));
    let mut groups: Vec<Vec<PlayerSock>> = (0..threads).map(|_| Vec::new()).collect();
    play_srtp.resize_with(n_play, || None);
    for (j, (s, srtp)) in players.into_iter().zip(play_srtp).enumerate() {
        groups[j % threads].push((j, s, srtp));
    }
    // CPU of the target (and of this tool) from here to the end of the drain.
    let cpu_start = mono_ns();
    let target_cpu0 = cfg.server_pid.map(cpu_seconds).transpose()?;
    let tool_cpu0 = cpu_seconds(std::process::id()).ok();
    let receivers: Vec<JoinHandle<std::io::Result<ReceiverResult>>> = groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .enumerate()
        .map(|(i, g)| {
            let (stop, rx_count) = (stop.clone(), rx_count.clone());
            let batch = cfg.batch;
            std::thread::Builder::new()
                .name(format!("player-rx-{i}"))
                .spawn(move || receiver(g, batch, clock, t0, interval_ns, &stop, &rx_count))
        })
        .collect::<std::io::Result<_>>()?;

    let sender_thread = {
        let (stop, tx_count) = (stop.clone(), tx_count.clone());
        let (pps, size, wire, batch) = (cfg.pps, cfg.size, cfg.wire_size(), cfg.batch);
        let (profile, stamp_at, gso) = (cfg.profile, cfg.stamp_at(), cfg.publisher_gso);
        std::thread::Builder::new()
            .name("publisher-tx".into())
            .spawn(move || {
                if profile != crate::profile::Profile::Flat {
                    return crate::framesend::sender(
                        pubs,
                        profile,
                        size,
                        wire,
                        batch,
                        stamp_at,
                        gso,
                        t0,
                        end,
                        interval_ns,
                        &stop,
                        &tx_count,
                    );
                }
                sender(
                    pubs,
                    pps,
                    size,
                    wire,
                    batch,
                    t0,
                    end,
                    interval_ns,
                    &stop,
                    &tx_count,
                )
            })?
    };

    progress_loop(
        cfg,
        t0,
        end,
        &tx_count,
        &rx_count,
        fanout_factor,
        &sender_thread,
    );
    let sent = sender_thread.join().map_err(|_| "sender thread panicked")?;
    // Drain what is still in flight, then stop the players.
    let drain_end = mono_ns() + cfg.drain.as_nanos() as u64;
    let (mut last_rx, mut last_change) = (rx_count.load(Ordering::Relaxed), mono_ns());
    // Play-only runs end on time: their publishers are not ours.
    while mono_ns() < drain_end && !signal::stopped() && n_play > 0 && n_pub > 0 {
        std::thread::sleep(Duration::from_millis(10));
        let (r, now) = (rx_count.load(Ordering::Relaxed), mono_ns());
        if r != last_rx {
            (last_rx, last_change) = (r, now);
        } else if now - last_change >= QUIET_NS {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for r in receivers {
        results.push(r.join().map_err(|_| "receiver thread panicked")??);
    }
    let cpu_wall_s = (mono_ns() - cpu_start) as f64 / 1e9;
    let target_cpu1 = cfg.server_pid.map(cpu_seconds).transpose()?;
    let tool_cpu1 = cpu_seconds(std::process::id()).ok();
    let rss_after_run = cfg.server_pid.map(rss_kib).transpose()?;
    let host_udp_rcvbuf_errors =
        host_drops_before.and_then(|b| Some(udp_rcvbuf_errors().ok()?.saturating_sub(b)));
    sessions.terminate()?;

    // Merge what the receivers saw.
    let mut latency = latency_histogram(3);
    let mut series = Series::new(t0, interval_ns);
    let mut all_players: Vec<(usize, PlayerRx)> = Vec::with_capacity(n_play);
    let mut last_arrival_ns = 0u64;
    let mut tally = SrtpTally::default();
    for r in results {
        tally.add(&r.srtp);
        last_arrival_ns = last_arrival_ns.max(r.last_arrival_ns);
        latency.add(&r.latency).map_err(|e| format!("{e:?}"))?;
        series.merge(&r.series);
        all_players.extend(r.players);
    }
    all_players.sort_by_key(|(j, _)| *j);
    let mut totals = RxTotals::default();
    for (_, p) in &all_players {
        totals.add(p);
    }
    let expected: Option<u64> = (n_pub > 0 && n_play > 0).then(|| {
        (0..n_play)
            .map(|j| {
                subscribed(j)
                    .iter()
                    .map(|&i| sent.per_publisher[i])
                    .sum::<u64>()
            })
            .sum()
    });

    // With publishers the run lasts as long as they sent; play-only runs last `duration`.
    let send_ns = if n_pub > 0 {
        sent.end_ns - t0
    } else {
        cfg.duration.as_nanos() as u64
    };
    let send_s = (send_ns as f64 / 1e9).max(1e-9);
    // Receiving lasts until the last arrival when the target drains a backlog after the
    // publishers stopped: the received rate is over that window, not the sending time.
    let rx_window_s = (last_arrival_ns.saturating_sub(t0).max(send_ns) as f64 / 1e9).max(1e-9);
    let sent_packets: u64 = sent.per_publisher.iter().sum();
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            a as f64 * 100.0 / b as f64
        }
    };
    let delivery_loss = expected.map(|e| e.saturating_sub(totals.unique));

    let interval_s = interval_ns as f64 / 1e9;
    let full_intervals = ((send_ns / interval_ns) as usize).max(1);
    let series_points = (0..full_intervals)
        .map(|i| {
            let b = series.buckets.get(i);
            let q = |q: f64| {
                b.filter(|b| !b.latency.is_empty())
                    .map_or(0.0, |b| b.latency.value_at_quantile(q) as f64 / 1000.0)
            };
            let tx_pps = sent.per_interval.get(i).copied().unwrap_or(0) as f64 / interval_s;
            Point {
                t_s: i as f64 * interval_s,
                tx_pps,
                expected_rx_pps: tx_pps * fanout_factor,
                rx_pps: b.map_or(0, |b| b.packets) as f64 / interval_s,
                p50_us: q(0.5),
                p99_us: q(0.99),
                p999_us: q(0.999),
            }
        })
        .collect();

    let rss = match (cfg.server_pid, rss_before, rss_after_players, rss_after_run) {
        (Some(pid), Some(b), Some(a), Some(r)) if play_sessions > 0 => Some(Rss {
            pid,
            before_players_kib: b,
            after_players_kib: a,
            after_run_kib: r,
            per_player_kib: (a as f64 - b as f64) / play_sessions as f64,
            per_player_after_run_kib: (r as f64 - b as f64) / play_sessions as f64,
        }),
        _ => None,
    };

    let cpu = |pid: u32, a: Option<f64>, b: Option<f64>| {
        let cpu_s = b? - a?;
        Some(Cpu {
            pid,
            cpu_s,
            wall_s: cpu_wall_s,
            cores: cpu_s / cpu_wall_s.max(1e-9),
            rx_pps_per_core: if cpu_s > 0.0 {
                totals.packets as f64 / cpu_s
            } else {
                0.0
            },
        })
    };
    let target_cpu = cfg
        .server_pid
        .and_then(|pid| cpu(pid, target_cpu0, target_cpu1));
    let tool_cpu = cpu(std::process::id(), tool_cpu0, tool_cpu1);
    let srtp = cfg.srtp.map(|p| SrtpCheck {
        suite: p.sdes_name().into(),
        check_every: cfg.srtp_check_every,
        checked: tally.checked,
        ok: tally.ok,
        auth_failures: tally.auth_failures,
        other_failures: tally.other_failures,
    });

    Ok(Report {
        target: target_name.into(),
        target_addr,
        publishers: cfg.publishers,
        players: cfg.players,
        play_sessions,
        pps_per_publisher: match cfg.profile {
            crate::profile::Profile::Flat => cfg.pps,
            p => crate::profile::Schedule::new(p, cfg.size)
                .mean_pps()
                .round() as u32,
        },
        profile: format!("{:?}", cfg.profile).to_lowercase(),
        packet_size: cfg.size,
        latency_clock: if cfg.kernel_timestamps {
            "kernel receive timestamp".into()
        } else {
            "user-space receive time".into()
        },
        duration_s: cfg.duration.as_secs_f64(),
        send_s,
        setup,
        sent: Sent {
            packets: sent_packets,
            bytes: sent.bytes,
            failed: sent.failed,
            pps: sent_packets as f64 / send_s,
            mbit_s: sent.bytes as f64 * 8.0 / send_s / 1e6,
        },
        received: Received {
            packets: totals.packets,
            bytes: totals.bytes,
            window_s: rx_window_s,
            pps: totals.packets as f64 / rx_window_s,
            mbit_s: totals.bytes as f64 * 8.0 / rx_window_s / 1e6,
            unique: totals.unique,
            expected,
            delivery_loss,
            delivery_loss_pct: expected.zip(delivery_loss).map(|(e, l)| pct(l, e)),
            seq_gap_loss: totals.seq_gap_loss,
            seq_gap_loss_pct: pct(totals.seq_gap_loss, totals.seq_expected),
            gap_events: totals.gap_events,
            reordered: totals.reordered,
            duplicates: totals.duplicates,
            malformed: totals.malformed,
            player_socket_drops: totals.socket_drops,
            streams: totals.streams,
        },
        latency: Latency::from_histogram(&latency),
        jitter: Jitter {
            mean_us: totals.jitter_mean_ns / 1000.0,
            max_us: totals.jitter_max_ns / 1000.0,
        },
        rss,
        srtp,
        target_cpu,
        tool_cpu,
        host_udp_rcvbuf_errors,
        series: series_points,
    })
}

/// Shows progress until the sender is done (indicatif bar on a terminal, a line per second
/// otherwise).
fn progress_loop(
    cfg: &FanoutConfig,
    t0: u64,
    end: u64,
    tx: &AtomicU64,
    rx: &AtomicU64,
    fanout_factor: f64,
    sender: &JoinHandle<SenderResult>,
) {
    let total_ms = (end - t0) / 1_000_000;
    let tty = std::io::stderr().is_terminal();
    let bar = if cfg.progress && tty {
        let b = ProgressBar::new(total_ms);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
            )
            .expect("valid template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let (mut last_t, mut last_tx, mut last_rx) = (mono_ns(), 0u64, 0u64);
    let mut next_line = t0 + 1_000_000_000;
    while !sender.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        let now = mono_ns();
        if now.saturating_sub(last_t) < 500_000_000 && now < next_line {
            continue;
        }
        let (t, r) = (tx.load(Ordering::Relaxed), rx.load(Ordering::Relaxed));
        let dt = (now - last_t) as f64 / 1e9;
        let (tx_pps, rx_pps) = ((t - last_tx) as f64 / dt, (r - last_rx) as f64 / dt);
        let want = tx_pps * fanout_factor;
        let msg = format!(
            "tx {:.0} pps  rx {:.0} pps{}",
            tx_pps,
            rx_pps,
            if want > 0.0 {
                format!(" ({:.1}% of expected)", rx_pps * 100.0 / want)
            } else {
                String::new()
            }
        );
        bar.set_position(now.saturating_sub(t0).min(end - t0) / 1_000_000);
        bar.set_message(msg.clone());
        if cfg.progress && !tty && now >= next_line {
            eprintln!("t={:>5.1}s {msg}", now.saturating_sub(t0) as f64 / 1e9);
            next_line += 1_000_000_000;
        }
        (last_t, last_tx, last_rx) = (now, t, r);
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{spawn, RelayConfig};

    /// The whole pipeline against the in-process raw relay: nothing is lost on loopback at a
    /// low rate, and the report adds up.
    #[test]
    fn end_to_end_against_the_raw_relay() {
        let base = 47_000 + (std::process::id() % 1000) as u16 * 8;
        let relay = spawn(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            to: (0..3)
                .map(|j| SocketAddr::from(([127, 0, 0, 1], base + j)))
                .collect(),
            batch: 32,
            threads: 2,
            duration: Duration::from_secs(30),
            report_every: None,
            buffer_bytes: 1 << 20,
        })
        .unwrap();
        let mut cfg = FanoutConfig::new(
            Target::Raw { relay: relay.addr },
            vec!["a".into(), "b".into()],
            2,
            3,
        );
        cfg.pps = 200;
        cfg.size = 200;
        cfg.duration = Duration::from_millis(1500);
        cfg.drain = Duration::from_millis(300);
        cfg.interval = Duration::from_millis(500);
        cfg.player_base_port = base;
        cfg.recv_threads = 2;
        cfg.progress = false;
        let r = run(&cfg).unwrap();
        let st = relay.stop().unwrap();
        // 2 publishers x 200 pps x 1.5 s, paced from t0 (the first packet is due at t0).
        assert!(
            (595..=605).contains(&r.sent.packets),
            "sent {}",
            r.sent.packets
        );
        assert_eq!(st.packets_in, r.sent.packets);
        assert_eq!(r.received.expected, Some(3 * r.sent.packets));
        assert_eq!(r.received.delivery_loss, Some(0), "{}", r.summary());
        assert_eq!(r.received.unique, r.received.packets);
        assert_eq!(r.received.streams, 6, "3 players x 2 publishers");
        assert_eq!(
            (
                r.received.seq_gap_loss,
                r.received.duplicates,
                r.received.malformed
            ),
            (0, 0, 0)
        );
        assert_eq!(r.received.player_socket_drops, 0);
        assert_eq!(r.series.len(), 3);
        assert!(
            r.series.iter().all(|p| (350.0..=450.0).contains(&p.tx_pps)),
            "{:?}",
            r.series
        );
        assert!(r.latency.samples == r.received.packets && r.latency.p50_us > 0.0);
        assert!(
            r.latency.p50_us < 100_000.0,
            "loopback latency {} us",
            r.latency.p50_us
        );
        assert_eq!(r.play_sessions, 0);
    }

    #[test]
    fn publish_only_run_sends_at_the_requested_rate() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut cfg = FanoutConfig::new(
            Target::Raw {
                relay: sink.local_addr().unwrap(),
            },
            vec!["p".into()],
            1,
            0,
        );
        cfg.pps = 500;
        cfg.size = 100;
        cfg.duration = Duration::from_millis(400);
        cfg.progress = false;
        // Without players there is nothing to drain: a 60 s drain would show as a 60 s run.
        cfg.drain = Duration::from_secs(60);
        let t = Instant::now();
        let r = run(&cfg).unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no drain without players"
        );
        // The pacer sends at most pps x duration (fewer when this machine starves it), and
        // everything it counts as sent reaches the sink, numbered from 0.
        let sent = r.sent.packets;
        assert!(sent > 0 && sent <= 200, "sent {sent}");
        assert_eq!(r.sent.bytes, sent * 100);
        assert_eq!((r.received.packets, r.received.expected), (0, None));
        sink.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 200];
        let (mut n, mut last) = (0u64, None);
        while sink.recv(&mut buf).is_ok() {
            n += 1;
            last = crate::pkt::parse_packet(&buf[..100]);
        }
        assert_eq!(n, sent);
        let p = last.unwrap();
        assert_eq!(
            (p.seq as u64, p.publisher, p.payload_type),
            (sent - 1, 0, 96)
        );
    }

    #[test]
    fn rejects_bad_configs() {
        let t = Target::Raw {
            relay: "127.0.0.1:9".parse().unwrap(),
        };
        let mut c = FanoutConfig::new(t, vec!["a".into()], 1, 1);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("player-base-port"));
        c.player_base_port = 65535;
        assert!(c.validate().is_ok());
        c.players = 2;
        assert!(c.validate().is_err());
        c.players = 1;
        c.size = 10;
        assert!(c.validate().is_err());
        c.size = 100;
        c.publishers = 2;
        assert!(c.validate().is_err(), "one name for two publishers");
    }
}
