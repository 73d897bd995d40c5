//! The raw baseline: a minimal batched UDP relay. No parsing, no state: every datagram received
//! on `listen` is sent to every destination, with one `recvmmsg` for up to `batch` datagrams and
//! `sendmmsg` calls of up to [`MAX_BATCH`] copies (the payload is not copied in user space: the
//! send iovecs point into the receive buffers). This is what the kernel's UDP path costs on this
//! machine, the yardstick for the engine.
//!
//! With `threads > 1` the destinations are split between sending threads (as the engine splits
//! players between shards): the receiving thread serves the first share itself and passes each
//! batch, copied once, to the others.

use std::io;
use std::mem::zeroed;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::mono_ns;
use crate::net::{bind_udp, send_all, RawAddr, RecvBatch, MAX_BATCH};
use crate::signal;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    pub to: Vec<SocketAddr>,
    /// Datagrams per `recvmmsg`.
    pub batch: usize,
    /// Sending threads. With more than one, the destinations are split between them: the
    /// receiving thread serves the first share zero-copy and hands each batch (copied once)
    /// to the others over bounded channels.
    pub threads: usize,
    /// The relay stops by itself after this long.
    pub duration: Duration,
    /// Print a rate line to stderr this often.
    pub report_every: Option<Duration>,
    pub buffer_bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub send_failed: u64,
    /// From the first received datagram to the last one sent.
    pub active_s: f64,
    pub pps_in: f64,
    pub pps_out: f64,
}

/// Output counters of one sending thread.
#[derive(Debug, Default)]
struct Out {
    packets: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    last_ns: AtomicU64,
}

/// Sends every packet (`iovs`) to every destination from `fd`, in `sendmmsg` calls of up to
/// [`MAX_BATCH`] messages.
fn fan_out(
    fd: RawFd,
    iovs: &mut [libc::iovec],
    dests: &[RawAddr],
    msgs: &mut Vec<libc::mmsghdr>,
    out: &Out,
) {
    let flush = |msgs: &mut Vec<libc::mmsghdr>| {
        // SAFETY: each message points at a destination in `dests` and an iovec in `iovs`, both
        // alive and unmodified during the call.
        let r = unsafe { send_all(fd, msgs) };
        let bytes: u64 = msgs[..r.sent.min(msgs.len())]
            .iter()
            // SAFETY: msg_iov points into `iovs`.
            .map(|m| unsafe { (*m.msg_hdr.msg_iov).iov_len } as u64)
            .sum();
        out.packets.fetch_add(r.sent as u64, Ordering::Relaxed);
        out.bytes.fetch_add(bytes, Ordering::Relaxed);
        out.failed.fetch_add(r.failed as u64, Ordering::Relaxed);
        msgs.clear();
    };
    let base = iovs.as_mut_ptr();
    for i in 0..iovs.len() {
        for d in dests {
            // SAFETY: zeroed mmsghdr is valid; fields set below.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_name = d.as_ptr();
            m.msg_hdr.msg_namelen = d.len();
            // SAFETY: i < iovs.len().
            m.msg_hdr.msg_iov = unsafe { base.add(i) };
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
            if msgs.len() == MAX_BATCH {
                flush(msgs);
            }
        }
    }
    if !msgs.is_empty() {
        flush(msgs);
    }
    out.last_ns.store(mono_ns(), Ordering::Relaxed);
}

/// A received batch copied for the other sending threads: packets back to back.
struct Copied {
    data: Vec<u8>,
    lens: Vec<usize>,
}

fn worker(rx: mpsc::Receiver<Arc<Copied>>, sock: UdpSocket, dests: Vec<RawAddr>, out: &Out) {
    let mut msgs = Vec::with_capacity(MAX_BATCH);
    let mut iovs: Vec<libc::iovec> = Vec::new();
    while let Ok(b) = rx.recv() {
        iovs.clear();
        let mut off = 0;
        for &len in &b.lens {
            iovs.push(libc::iovec {
                iov_base: b.data[off..].as_ptr() as *mut libc::c_void,
                iov_len: len,
            });
            off += len;
        }
        fan_out(sock.as_raw_fd(), &mut iovs, &dests, &mut msgs, out);
    }
}

pub struct Relay {
    cfg: RelayConfig,
    sock: UdpSocket,
}

impl Relay {
    pub fn bind(cfg: RelayConfig) -> io::Result<Self> {
        if cfg.to.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no destination",
            ));
        }
        let sock = bind_udp(cfg.listen, cfg.buffer_bytes)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(Self { cfg, sock })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Relays until `stop`, SIGINT/SIGTERM, or the configured duration.
    pub fn run(self, stop: &AtomicBool) -> io::Result<RelayStats> {
        let fd = self.sock.as_raw_fd();
        let all: Vec<RawAddr> = self.cfg.to.iter().map(|a| RawAddr::new(*a)).collect();
        let threads = self.cfg.threads.clamp(1, all.len());
        let share = all.len().div_ceil(threads);
        let mut shares = all.chunks(share).map(<[RawAddr]>::to_vec);
        let mine = shares.next().unwrap_or_default();
        let outs: Vec<Out> = (0..threads).map(|_| Out::default()).collect();
        let mut rb = RecvBatch::new(self.cfg.batch);
        // SAFETY: plain C structs, filled before use.
        let mut iovs: Vec<libc::iovec> = vec![unsafe { zeroed() }; rb.capacity()];
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(MAX_BATCH);
        let (mut packets_in, mut bytes_in) = (0u64, 0u64);
        let start = mono_ns();
        let deadline = start + self.cfg.duration.as_nanos() as u64;
        let mut first_ns = 0u64;
        let every = self.cfg.report_every.map(|d| d.as_nanos() as u64);
        let (mut next_report, mut last_in, mut last_out) = (start + every.unwrap_or(0), 0u64, 0u64);
        let total_out = |outs: &[Out]| {
            outs.iter()
                .map(|o| o.packets.load(Ordering::Relaxed))
                .sum::<u64>()
        };

        std::thread::scope(|scope| -> io::Result<()> {
            let mut txs = Vec::new();
            for (k, dests) in shares.enumerate() {
                let (tx, rx) = mpsc::sync_channel::<Arc<Copied>>(256);
                let sock = bind_udp(
                    SocketAddr::new(self.cfg.listen.ip(), 0),
                    self.cfg.buffer_bytes,
                )?;
                let out = &outs[k + 1];
                std::thread::Builder::new()
                    .name(format!("relay-tx-{}", k + 1))
                    .spawn_scoped(scope, move || worker(rx, sock, dests, out))?;
                txs.push(tx);
            }
            loop {
                let now = mono_ns();
                if stop.load(Ordering::Relaxed) || signal::stopped() || now >= deadline {
                    break;
                }
                if let Some(e) = every {
                    if now >= next_report {
                        let s = e as f64 / 1e9;
                        let out = total_out(&outs);
                        eprintln!(
                            "relay: in {:.0} pps, out {:.0} pps",
                            (packets_in - last_in) as f64 / s,
                            (out - last_out) as f64 / s,
                        );
                        (last_in, last_out) = (packets_in, out);
                        next_report += e;
                    }
                }
                let n = match rb.recv(fd, libc::MSG_WAITFORONE) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => {
                        eprintln!("relay: recvmmsg: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if first_ns == 0 {
                    first_ns = mono_ns();
                }
                for (i, iov) in iovs.iter_mut().enumerate().take(n) {
                    *iov = rb.iovec(i);
                    packets_in += 1;
                    bytes_in += iov.iov_len as u64;
                }
                if !txs.is_empty() {
                    let mut c = Copied {
                        data: Vec::with_capacity(iovs[..n].iter().map(|v| v.iov_len).sum()),
                        lens: Vec::with_capacity(n),
                    };
                    for i in 0..n {
                        c.data.extend_from_slice(rb.get(i));
                        c.lens.push(rb.get(i).len());
                    }
                    let c = Arc::new(c);
                    for tx in &txs {
                        // Blocks when that thread is behind: back-pressure into our socket.
                        let _ = tx.send(c.clone());
                    }
                }
                fan_out(fd, &mut iovs[..n], &mine, &mut msgs, &outs[0]);
            }
            Ok(())
        })?;

        let mut st = RelayStats {
            packets_in,
            bytes_in,
            ..Default::default()
        };
        let mut last_ns = 0;
        for o in &outs {
            st.packets_out += o.packets.load(Ordering::Relaxed);
            st.bytes_out += o.bytes.load(Ordering::Relaxed);
            st.send_failed += o.failed.load(Ordering::Relaxed);
            last_ns = last_ns.max(o.last_ns.load(Ordering::Relaxed));
        }
        if first_ns != 0 && last_ns > first_ns {
            st.active_s = (last_ns - first_ns) as f64 / 1e9;
            st.pps_in = st.packets_in as f64 / st.active_s;
            st.pps_out = st.packets_out as f64 / st.active_s;
        }
        Ok(st)
    }
}

/// A relay running on its own thread.
pub struct RelayHandle {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<io::Result<RelayStats>>,
}

impl RelayHandle {
    pub fn stop(self) -> io::Result<RelayStats> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("relay thread panicked")
    }
}

/// Binds and starts a relay on a new thread.
pub fn spawn(cfg: RelayConfig) -> io::Result<RelayHandle> {
    let relay = Relay::bind(cfg)?;
    let addr = relay.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || relay.run(&s2))?;
    Ok(RelayHandle { addr, stop, thread })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::bind_udp;

    #[test]
    fn copies_every_datagram_to_every_destination() {
        for threads in [1, 2, 3, 8] {
            relay_round(threads);
        }
    }

    fn relay_round(threads: usize) {
        let players: Vec<UdpSocket> = (0..3)
            .map(|_| bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap())
            .collect();
        let relay = spawn(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            to: players.iter().map(|p| p.local_addr().unwrap()).collect(),
            batch: 16,
            threads,
            duration: Duration::from_secs(20),
            report_every: None,
            buffer_bytes: 1 << 20,
        })
        .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..50u8 {
            tx.send_to(&[i; 33], relay.addr).unwrap();
        }
        for p in &players {
            p.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 100];
            for i in 0..50u8 {
                let n = p.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &[i; 33][..], "threads {threads}");
            }
        }
        let st = relay.stop().unwrap();
        assert_eq!(st.packets_in, 50);
        assert_eq!(st.packets_out, 150);
        assert_eq!(st.bytes_out, 150 * 33);
        assert_eq!(st.send_failed, 0);
    }
}
