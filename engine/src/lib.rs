//! The data plane: N shards (one per core by default), each a pinned thread with its own
//! io_uring, forwarding RTP from publishers to players. See README "Architecture".

pub mod age;
pub mod api;
pub mod arena;
mod bufring;
pub mod feedback;
pub mod h264;
mod mapped;
pub mod mesh;
pub mod rewrite;
pub mod rtp;
mod shard;
pub mod srtp;
pub mod webrtc;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

pub use api::*;
pub use shard::ShardConfig;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of shards; 0 means one per available core.
    pub shards: usize,
    /// Pin shard i to core i (mod cores).
    pub pin: bool,
    /// Capacity of each shard-to-shard queue, in packets.
    pub ring_capacity: usize,
    pub shard: ShardConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            pin: true,
            ring_capacity: 8192,
            shard: ShardConfig::default(),
        }
    }
}

struct ShardHandle {
    tx: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// A running engine. Dropping it stops the shards.
pub struct Engine {
    mesh: Arc<Mesh>,
    shards: Vec<ShardHandle>,
    events: Receiver<Event>,
}

use mesh::Mesh;

impl Engine {
    pub fn start(cfg: EngineConfig) -> std::io::Result<Engine> {
        let n = if cfg.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.shards
        };
        raise_fd_limit();
        let mesh = Arc::new(Mesh::new(n, cfg.ring_capacity)?);
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = crossbeam_channel::unbounded();
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let mesh2 = mesh.clone();
            let ev = ev_tx.clone();
            let scfg = cfg.shard.clone();
            let core = if cfg.pin && !cores.is_empty() {
                Some(cores[i % cores.len()])
            } else {
                None
            };
            let thread = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    match shard::Shard::new(i, scfg, mesh2, rx, ev) {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            let r =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.run()));
                            if r.is_err() {
                                // A half-dead data plane is worse than a restart by the supervisor.
                                tracing::error!(shard = i, "shard panicked; exiting");
                                std::process::exit(70);
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?;
            ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("shard thread died during start"))??;
            shards.push(ShardHandle {
                tx,
                thread: Some(thread),
            });
        }
        tracing::info!(
            shards = n,
            pinned = cfg.pin,
            "engine started (io_uring, multishot recvmsg, provided buffers)"
        );
        Ok(Engine {
            mesh,
            shards,
            events: ev_rx,
        })
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Sends a command to shard `i` and wakes it.
    pub fn send(&self, i: usize, cmd: Command) {
        if self.shards[i].tx.send(cmd).is_ok() {
            self.mesh.wakers[i].wake();
        }
    }

    /// Status events from all shards.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Shards whose thread has ended or that do not answer a ping within `timeout`.
    pub fn unresponsive(&self, timeout: std::time::Duration) -> Vec<usize> {
        let rxs: Vec<_> = (0..self.shards.len())
            .map(|i| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                self.send(i, Command::Ping { reply: tx });
                rx
            })
            .collect();
        let deadline = std::time::Instant::now() + timeout;
        rxs.into_iter()
            .enumerate()
            .filter(|(i, rx)| {
                let ended = self.shards[*i]
                    .thread
                    .as_ref()
                    .is_none_or(|t| t.is_finished());
                ended || rx.recv_deadline(deadline).is_err()
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Collects a stats snapshot from every shard.
    pub fn stats(&self) -> Vec<ShardStats> {
        let rxs: Vec<_> = (0..self.shards.len())
            .map(|i| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                self.send(i, Command::Stats { reply: tx });
                rx
            })
            .collect();
        rxs.into_iter()
            .filter_map(|rx| rx.recv_timeout(std::time::Duration::from_secs(5)).ok())
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for i in 0..self.shards.len() {
            self.send(i, Command::Shutdown);
        }
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Each session owns a socket, so thousands of sessions need more than the default 1024 fds.
fn raise_fd_limit() {
    // SAFETY: get/setrlimit on our own process with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
