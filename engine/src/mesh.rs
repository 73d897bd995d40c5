//! Lock-free links between shards: one bounded queue per (source, destination) pair, so each
//! queue has a single producer and a single consumer, plus a parked flag and eventfd per shard
//! so an idle shard sleeps in the kernel yet is woken when work arrives.

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};

use crate::api::StreamId;

/// What travels between shards.
#[derive(Debug)]
pub enum Hop {
    /// One RTP packet of `stream`, for the destination's local players.
    /// `stamp`: when the packet reached the host (ns, CLOCK_REALTIME), for the age rule.
    Media {
        stream: StreamId,
        pkt: Bytes,
        stamp: u64,
    },
    /// A player asked for a keyframe (destination: the publisher's shard).
    Keyframe { stream: StreamId },
    /// A player NACKed `pid`/`blp` of the publisher's `ssrc`.
    Nack {
        stream: StreamId,
        ssrc: u32,
        pid: u16,
        blp: u16,
    },
}

/// Wake-up state of one shard.
pub struct Waker {
    efd: OwnedFd,
    parked: AtomicBool,
}

impl Waker {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
            parked: AtomicBool::new(false),
        })
    }

    pub fn fd(&self) -> i32 {
        self.efd.as_raw_fd()
    }

    /// Always wakes (used for control commands, which are rare).
    pub fn wake(&self) {
        self.parked.store(false, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
        unsafe { libc::write(self.fd(), &one as *const u64 as *const libc::c_void, 8) };
    }

    /// Wakes only if the shard is parked: after pushing to its queues, a busy shard costs nothing.
    pub fn wake_if_parked(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: as above.
            unsafe { libc::write(self.fd(), &one as *const u64 as *const libc::c_void, 8) };
        }
    }

    /// Consumer side: announce the intent to sleep; the caller must re-check its queues after.
    pub fn park(&self) {
        self.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }
}

/// The full mesh of queues between `n` shards.
pub struct Mesh {
    n: usize,
    queues: Vec<ArrayQueue<Hop>>,
    pub wakers: Vec<Waker>,
}

impl Mesh {
    pub fn new(n: usize, capacity: usize) -> std::io::Result<Self> {
        let queues = (0..n * n)
            .map(|_| ArrayQueue::new(capacity.max(1)))
            .collect();
        let wakers = (0..n).map(|_| Waker::new()).collect::<Result<_, _>>()?;
        Ok(Self { n, queues, wakers })
    }

    pub fn shards(&self) -> usize {
        self.n
    }

    /// Pushes without blocking; a full queue gives the hop back so the caller can count it.
    pub fn push(&self, from: usize, to: usize, hop: Hop) -> Result<(), Hop> {
        self.queues[from * self.n + to].push(hop)
    }

    pub fn pop(&self, from: usize, to: usize) -> Option<Hop> {
        self.queues[from * self.n + to].pop()
    }

    pub fn has_inbound(&self, to: usize) -> bool {
        (0..self.n).any(|from| !self.queues[from * self.n + to].is_empty())
    }
}
