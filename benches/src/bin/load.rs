//! `load`: load generator and raw-relay baseline for the media server.
//!
//! ```text
//! load relay   --listen 127.0.0.1:44000 --to 127.0.0.1:45000-45099
//! load fanout  --server http://127.0.0.1:8081 --publishers 1 --players 100 --pps 1000 \
//!              --size 1200 --duration 10 --json engine.json --svg engine.svg
//! load fanout  --raw-relay 127.0.0.1:44000 --player-base-port 45000 --players 100 ...
//! load publish --server http://127.0.0.1:8081 --name s1 --pps 1000 --duration 30
//! load play    --server http://127.0.0.1:8081 --name s1 --players 50 --duration 30
//! load play    --whep --name s1 --players 500 --server-pid 101   # str0m WHEP players
//! load fanout  --webrtc --players 500 --pps 135 --size 1100 --server-pid 101   # RTP in, WHEP out
//! load publish --whip --name s1 --pps 135 --size 1100 --duration 30   # str0m WHIP publisher
//! load fanout  --srtp AES_CM_128_HMAC_SHA1_80 --players 100 ...   # SDES-keyed SRTP both ways
//! load fanout  --cluster http://127.0.0.2:8081,http://127.0.0.3:8081 --players 1000 --pps 50
//!              --server-pids 101,102 --origin-players 100   # origin first, players on edges
//! load terminate --server http://127.0.0.1:8081     # terminate -> last packet, 10k sessions
//! load compare engine.json raw.json
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use benches::fanout::{self, FanoutConfig, Target};
use benches::relay::{Relay, RelayConfig};
use benches::report::{compare, Report};
use benches::{net, plot, signal, Result};
use clap::{Args, Parser, Subcommand};
use engine::srtp::SrtpProfile;

#[derive(Parser)]
#[command(
    name = "load",
    version,
    about = "Load generator and raw UDP relay baseline for the media server"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Raw baseline: batched UDP relay copying every datagram to every --to address.
    Relay(RelayArgs),
    /// Publishers and players against the server (REST) or the raw relay; full report.
    Fanout(FanoutArgs),
    /// Only publishers, for an existing or new stream.
    Publish(PublishArgs),
    /// Only players, for an existing stream.
    Play(PlayArgs),
    /// Compares an engine report with a raw-relay report (JSON files from --json).
    Compare { engine: PathBuf, baseline: PathBuf },
    /// Terminate -> last packet latency with many sessions (see benches/src/terminate.rs).
    Terminate(TerminateArgs),
}

#[derive(Args)]
struct TerminateArgs {
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    server: String,
    #[arg(long)]
    token: Option<String>,
    /// Streams whose players are terminated and timed.
    #[arg(long, default_value_t = 2)]
    probe_streams: u32,
    /// Players per probe stream.
    #[arg(long, default_value_t = 50)]
    probe_players: u32,
    /// Packets/s per probe publisher (1000: the last packet is known to 1 ms).
    #[arg(long, default_value_t = 1000)]
    probe_pps: u32,
    /// Background streams (they make up the session count).
    #[arg(long, default_value_t = 98)]
    streams: u32,
    /// Players per background stream.
    #[arg(long, default_value_t = 100)]
    players: u32,
    /// Packets/s per background publisher.
    #[arg(long, default_value_t = 2)]
    pps: u32,
    #[arg(long, default_value_t = 1100)]
    size: usize,
    /// Passes over the probe players (each terminates and re-creates every probe player).
    #[arg(long, default_value_t = 5)]
    passes: u32,
    /// Milliseconds between two terminates.
    #[arg(long, default_value_t = 20)]
    gap_ms: u64,
    /// Milliseconds after a pass's last terminate before the last arrivals are read.
    #[arg(long, default_value_t = 300)]
    grace_ms: u64,
    #[arg(long, default_value_t = 2)]
    recv_threads: usize,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RelayArgs {
    /// Address to receive on.
    #[arg(long)]
    listen: SocketAddr,
    /// Destinations: ip:port or ip:first-last ranges, comma separated.
    #[arg(long, value_parser = parse_targets)]
    to: Targets,
    /// Datagrams per recvmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Sending threads (destinations split between them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds (always bounded).
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Print rates every second.
    #[arg(long)]
    quiet: bool,
    /// Write the final counters as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone)]
struct Targets(Vec<SocketAddr>);

fn parse_targets(s: &str) -> std::result::Result<Targets, String> {
    net::parse_targets(s).map(Targets)
}

/// Knobs shared by fanout / publish / play.
#[derive(Args, Clone)]
struct LoadArgs {
    /// Packets per second per publisher (0 = as fast as possible; flat profile only).
    #[arg(long, default_value_t = 1000)]
    pps: u32,
    /// What publishers send: flat (evenly paced --pps packets of --size), video (30 fps
    /// frames: a 60-packet keyframe every 2 s, P-frames of 3-15 packets, each frame a burst),
    /// audio (50 pps x 160 B) or av (both).
    #[arg(long, default_value = "flat")]
    profile: benches::profile::Profile,
    /// Frame profiles: each run of equal-sized packets of a frame goes as one UDP GSO send,
    /// so the server's socket sees the burst coalesced as a NIC's GRO would deliver it
    /// (exercises `media.gro`; on loopback nothing else coalesces).
    #[arg(long)]
    publisher_gso: bool,
    /// RTP packet size in bytes, header included.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Seconds of sending (or receiving, for `play`).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Longest the players keep receiving after the publishers stop, in milliseconds (they stop
    /// earlier after 300 ms without a packet).
    #[arg(long, default_value_t = 3000)]
    drain_ms: u64,
    /// Time-series resolution in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Local IP of publisher and player sockets (and the players' address given to the server).
    #[arg(long, default_value = "127.0.0.1")]
    local_ip: IpAddr,
    /// Player j binds this port + j (0 = ephemeral). Keep it outside the server's media range.
    #[arg(long, default_value_t = 0)]
    player_base_port: u16,
    /// Publisher i binds this port + i (0 = ephemeral).
    #[arg(long, default_value_t = 0)]
    publisher_base_port: u16,
    /// Player receive threads.
    #[arg(long, default_value_t = 1)]
    recv_threads: usize,
    /// Datagrams per sendmmsg / recvmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Socket buffer bytes per socket.
    #[arg(long, default_value_t = 4 << 20)]
    socket_buffer: usize,
    /// Server PID: sample its VmRSS before/after creating players.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Bearer token for the REST API.
    #[arg(long)]
    token: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of throughput and latency here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Latency from the time the tool reads a packet instead of the kernel's receive timestamp
    /// (SO_TIMESTAMPNS); then it includes the players' own scheduling delay.
    #[arg(long)]
    user_timestamps: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// SRTP (server only): publishers and players post SDP offers with `a=crypto` keys of this
    /// suite (AES_CM_128_HMAC_SHA1_80 or AEAD_AES_128_GCM); publishers encrypt, the server
    /// decrypts once and encrypts per player. --size is the RTP packet before protection.
    #[arg(long, value_parser = parse_suite)]
    srtp: Option<SrtpProfile>,
    /// SRTP: each player authenticates and decrypts one datagram in this many (loss and
    /// latency come from the header-extension stamp of every datagram, without decrypting).
    #[arg(long, default_value_t = 64)]
    srtp_check_every: u32,
    /// Plain RTP publishers post a VP8 SDP offer, so WHEP players (`play --whep`) can play
    /// the stream and read the send stamp from the payload (latency).
    #[arg(long)]
    vp8_sdp: bool,
}

fn parse_suite(s: &str) -> std::result::Result<SrtpProfile, String> {
    s.parse::<SrtpProfile>().map_err(|e| e.to_string())
}

#[derive(Args)]
struct FanoutArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    server: String,
    /// Run against the raw relay at this address instead of the server (no REST; players bind
    /// --player-base-port.. which must match the relay's --to range).
    #[arg(long)]
    raw_relay: Option<SocketAddr>,
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    #[arg(long, default_value_t = 10)]
    players: u32,
    /// Stream i is named PREFIX-i.
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Cluster mode: REST URLs of the nodes, comma separated. Publishers publish on the first
    /// (the origin), --players are spread over the others (edges, which pull the streams);
    /// reports per node and the play -> first-packet time, cold and warm.
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
    /// Cluster mode: server PIDs, one per --cluster URL (CPU per node).
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Cluster mode: players on the origin too (to compare an origin player's cost).
    #[arg(long, default_value_t = 0)]
    origin_players: u32,
    /// Cluster mode: milliseconds from the last join to the measurement window.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// WebRTC players: one plain RTP publisher (VP8 SDP, send stamp in the payload) and
    /// --players str0m WHEP players on it (`play --whep`'s report: delivery, loss, latency,
    /// server CPU per packet, RSS per player, connect-time percentiles).
    #[arg(long)]
    webrtc: bool,
    /// --webrtc: seconds a player may take to connect before it counts as failed.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
    /// --webrtc: threads POSTing offers concurrently.
    #[arg(long, default_value_t = 8)]
    signal_threads: usize,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct PublishArgs {
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    server: String,
    /// Send to the raw relay at this address instead.
    #[arg(long)]
    raw_relay: Option<SocketAddr>,
    /// Stream name (NAME-i when --publishers > 1).
    #[arg(long)]
    name: String,
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// A WebRTC publisher: a str0m peer POSTs a WHIP offer (ICE + DTLS-SRTP) and sends
    /// --pps packets of --size bytes for --duration s, the send stamp in the payload.
    #[arg(long)]
    whip: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct PlayArgs {
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    server: String,
    /// Stream name(s), comma separated; player j plays name j % count.
    #[arg(long, value_delimiter = ',')]
    name: Vec<String>,
    #[arg(long, default_value_t = 1)]
    players: u32,
    /// WebRTC players: str0m peers POST WHEP offers (ICE + DTLS-SRTP), all on one thread;
    /// reports connect-time percentiles, delivery, loss, server CPU per packet, RSS per player.
    #[arg(long)]
    whep: bool,
    /// --whep: seconds a player may take to connect before it counts as failed.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
    /// --whep: threads POSTing offers concurrently.
    #[arg(long, default_value_t = 8)]
    signal_threads: usize,
    #[command(flatten)]
    load: LoadArgs,
}

fn config(
    target: Target,
    names: Vec<String>,
    publishers: u32,
    players: u32,
    a: &LoadArgs,
) -> Result<FanoutConfig> {
    if !(a.duration > 0.0 && a.duration <= 86_400.0) {
        return Err("--duration must be in (0, 86400] seconds".into());
    }
    let mut c = FanoutConfig::new(target, names, publishers, players);
    c.pps = a.pps;
    c.profile = a.profile;
    c.publisher_gso = a.publisher_gso;
    c.size = a.size;
    c.duration = Duration::from_secs_f64(a.duration);
    c.drain = Duration::from_millis(a.drain_ms);
    c.interval = Duration::from_millis(a.interval_ms.max(10));
    c.local_ip = a.local_ip;
    c.player_base_port = a.player_base_port;
    c.publisher_base_port = a.publisher_base_port;
    c.recv_threads = a.recv_threads;
    c.batch = a.batch;
    c.buffer_bytes = a.socket_buffer;
    c.server_pid = a.server_pid;
    c.kernel_timestamps = !a.user_timestamps;
    c.progress = !a.quiet;
    c.srtp = a.srtp;
    c.srtp_check_every = a.srtp_check_every;
    c.vp8_sdp = a.vp8_sdp;
    Ok(c)
}

fn target(server: &str, raw: Option<SocketAddr>, token: &Option<String>) -> Target {
    match raw {
        Some(relay) => Target::Raw { relay },
        None => Target::Server {
            url: server.to_string(),
            token: token.clone(),
        },
    }
}

/// Runs, prints, writes outputs. Fails if players were expected to receive and got nothing.
fn run_load(cfg: FanoutConfig, a: &LoadArgs) -> Result<()> {
    if cfg.srtp.is_some() && cfg.pps == 0 {
        eprintln!(
            "warning: unpaced SRTP: if the server falls behind and its input socket drops 2^15 \
             consecutive packets, its SRTP rollover counter for the publisher desynchronises \
             (RFC 3711 3.3.1) and every later packet fails authentication; give a --pps"
        );
    }
    let report = fanout::run(&cfg)?;
    print!("{}", report.summary());
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        println!("  json     {}", p.display());
    }
    if let Some(p) = &a.svg {
        plot::write_svg(p, &report)?;
        println!("  svg      {}", p.display());
    }
    if cfg.players > 0 && report.received.packets == 0 && !signal::stopped() {
        return Err("players received nothing".into());
    }
    Ok(())
}

/// `fanout --webrtc`: the publisher runs on its own threads (as in `fanout`) until the WHEP
/// players, driven here, are done; then it stops and its session is removed.
fn run_webrtc_fanout(a: FanoutArgs) -> Result<()> {
    let l = &a.load;
    if a.raw_relay.is_some() || l.srtp.is_some() || a.publishers != 1 {
        return Err("--webrtc is one plain RTP publisher to the server (no --raw-relay, --srtp, --publishers)".into());
    }
    let name = format!("{}-0", a.prefix);
    let mut pcfg = config(
        target(&a.server, None, &l.token),
        vec![name.clone()],
        1,
        0,
        l,
    )?;
    pcfg.vp8_sdp = true;
    pcfg.progress = false;
    pcfg.server_pid = None;
    // Outlives the connect phase and the window; stopped as soon as the players are done.
    pcfg.duration = Duration::from_secs_f64(l.duration + a.connect_timeout + 30.0);
    let stop = pcfg.stop.clone();
    let publisher = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || fanout::run(&pcfg).map_err(|e| e.to_string()))?;
    // The publisher's REST session and first packets, before the first WHEP offer.
    std::thread::sleep(Duration::from_millis(700));
    let cfg = whep_config(
        &a.server,
        l,
        name,
        a.players,
        a.connect_timeout,
        a.signal_threads,
    );
    let r = benches::whep::run(&cfg);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publisher.join().map_err(|_| "publisher thread panicked")?;
    let r = r?;
    let published = published?;
    println!("{}", r.summary());
    println!("  publisher sent {} packets", published.sent.packets);
    finish_whep(&r, l)?;
    if r.rx_packets == 0 {
        return Err("players received nothing".into());
    }
    Ok(())
}

/// The WHEP players of `play --whep` and `fanout --webrtc`, from the shared flags.
fn whep_config(
    server: &str,
    l: &LoadArgs,
    name: String,
    players: u32,
    connect_timeout: f64,
    signal_threads: usize,
) -> benches::whep::WhepConfig {
    benches::whep::WhepConfig {
        server: server.to_string(),
        token: l.token.clone(),
        name,
        players,
        duration: Duration::from_secs_f64(l.duration),
        local_ip: l.local_ip,
        base_port: l.player_base_port,
        server_pid: l.server_pid,
        connect_timeout: Duration::from_secs_f64(connect_timeout),
        signal_threads,
    }
}

/// Writes a WHEP report (`--json`); fails when a player did not connect.
fn finish_whep(r: &benches::whep::WhepReport, l: &LoadArgs) -> Result<()> {
    if let Some(p) = &l.json {
        std::fs::write(p, serde_json::to_string_pretty(r)?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if r.connected < r.players {
        return Err(format!(
            "{} of {} players did not connect",
            r.players - r.connected,
            r.players
        )
        .into());
    }
    Ok(())
}

fn run_cluster(a: FanoutArgs) -> Result<()> {
    let l = &a.load;
    if a.raw_relay.is_some() || l.srtp.is_some() {
        return Err("--cluster runs plain RTP against the server (no --raw-relay, --srtp)".into());
    }
    if !(l.duration > 0.0 && l.duration <= 3600.0) {
        return Err("--duration must be in (0, 3600] seconds".into());
    }
    let cfg = benches::cluster::ClusterConfig {
        nodes: a.cluster.clone(),
        server_pids: a.server_pids.clone(),
        token: l.token.clone(),
        names: (0..a.publishers)
            .map(|i| format!("{}-{i}", a.prefix))
            .collect(),
        players: a.players,
        origin_players: a.origin_players,
        pps: l.pps,
        size: l.size,
        duration: Duration::from_secs_f64(l.duration),
        settle: Duration::from_millis(a.settle_ms),
        local_ip: l.local_ip,
        recv_threads: l.recv_threads,
        batch: l.batch,
        buffer_bytes: l.socket_buffer,
        kernel_timestamps: !l.user_timestamps,
        progress: !l.quiet,
    };
    let report = benches::cluster::run(&cfg)?;
    print!("{}", report.summary());
    if let Some(p) = &l.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        println!("  json     {}", p.display());
    }
    if report.received == 0 && !signal::stopped() {
        return Err("players received nothing".into());
    }
    Ok(())
}

fn read_report(p: &PathBuf) -> Result<Report> {
    let s = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(serde_json::from_str(&s).map_err(|e| format!("{}: {e}", p.display()))?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    signal::install();
    let r: Result<()> = (|| match cli.cmd {
        Cmd::Relay(a) => {
            let to = a.to.0;
            let n = to.len();
            let relay = Relay::bind(RelayConfig {
                listen: a.listen,
                to,
                batch: a.batch,
                threads: a.threads,
                duration: Duration::from_secs(a.duration.max(1)),
                report_every: (!a.quiet).then_some(Duration::from_secs(1)),
                buffer_bytes: 8 << 20,
            })?;
            eprintln!(
                "relay: {} -> {n} destination(s), {} sending thread(s), up to {} s",
                relay.local_addr()?,
                a.threads.clamp(1, n),
                a.duration
            );
            let st = relay.run(&std::sync::atomic::AtomicBool::new(false))?;
            println!(
                "relay: in {} pkts ({:.0} pps), out {} pkts ({:.0} pps), send failures {}, active {:.2} s",
                st.packets_in, st.pps_in, st.packets_out, st.pps_out, st.send_failed, st.active_s
            );
            if let Some(p) = &a.json {
                std::fs::write(p, serde_json::to_string_pretty(&st)?)?;
            }
            Ok(())
        }
        Cmd::Fanout(a) if !a.cluster.is_empty() => run_cluster(a),
        Cmd::Fanout(a) if a.webrtc => run_webrtc_fanout(a),
        Cmd::Fanout(a) => {
            let names = (0..a.publishers)
                .map(|i| format!("{}-{i}", a.prefix))
                .collect();
            let cfg = config(
                target(&a.server, a.raw_relay, &a.load.token),
                names,
                a.publishers,
                a.players,
                &a.load,
            )?;
            run_load(cfg, &a.load)
        }
        Cmd::Publish(a) if a.whip => {
            if a.publishers != 1 || a.raw_relay.is_some() {
                return Err("--whip is one publisher to the server".into());
            }
            let cfg = benches::whip::WhipConfig {
                server: a.server.clone(),
                token: a.load.token.clone(),
                name: a.name.clone(),
                pps: a.load.pps,
                payload: a.load.size.saturating_sub(12),
                duration: Duration::from_secs_f64(a.load.duration),
                local_ip: a.load.local_ip,
                port: a.load.publisher_base_port,
                connect_timeout: Duration::from_secs(15),
            };
            let r = benches::whip::run(&cfg)?;
            println!("{}", r.summary());
            if let Some(p) = &a.load.json {
                std::fs::write(p, serde_json::to_string_pretty(&r)?)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Ok(())
        }
        Cmd::Publish(a) => {
            let names = if a.publishers == 1 {
                vec![a.name.clone()]
            } else {
                (0..a.publishers)
                    .map(|i| format!("{}-{i}", a.name))
                    .collect()
            };
            let cfg = config(
                target(&a.server, a.raw_relay, &a.load.token),
                names,
                a.publishers,
                0,
                &a.load,
            )?;
            run_load(cfg, &a.load)
        }
        Cmd::Play(a) if a.whep => {
            let [name] = &a.name[..] else {
                return Err("--whep plays exactly one --name".into());
            };
            let cfg = whep_config(
                &a.server,
                &a.load,
                name.clone(),
                a.players,
                a.connect_timeout,
                a.signal_threads,
            );
            let r = benches::whep::run(&cfg)?;
            println!("{}", r.summary());
            finish_whep(&r, &a.load)
        }
        Cmd::Play(a) => {
            if a.name.is_empty() {
                return Err("--name is required".into());
            }
            let cfg = config(
                target(&a.server, None, &a.load.token),
                a.name.clone(),
                0,
                a.players,
                &a.load,
            )?;
            run_load(cfg, &a.load)
        }
        Cmd::Terminate(a) => {
            let mut c = benches::terminate::TerminateConfig::new(&a.server);
            c.token = a.token;
            c.probe_streams = a.probe_streams;
            c.probe_players = a.probe_players;
            c.probe_pps = a.probe_pps;
            c.streams = a.streams;
            c.players = a.players;
            c.pps = a.pps;
            c.size = a.size;
            c.passes = a.passes;
            c.gap = Duration::from_millis(a.gap_ms);
            c.grace = Duration::from_millis(a.grace_ms);
            c.recv_threads = a.recv_threads;
            c.progress = !a.quiet;
            let r = benches::terminate::run(&c)?;
            print!("{}", r.summary());
            if let Some(p) = &a.json {
                std::fs::write(p, serde_json::to_string_pretty(&r)?)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            if r.still_receiving > 0 {
                return Err(
                    format!("{} terminated players kept receiving", r.still_receiving).into(),
                );
            }
            Ok(())
        }
        Cmd::Compare { engine, baseline } => {
            let (e, b) = (read_report(&engine)?, read_report(&baseline)?);
            print!("{}", compare(&e, &b));
            Ok(())
        }
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: error: {e}");
            ExitCode::FAILURE
        }
    }
}
