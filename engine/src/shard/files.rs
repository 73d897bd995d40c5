//! Sockets registered in the ring's file table ("fixed files"), so an SQE names a socket by
//! its slot and the kernel skips the `fget`/`fput` (two atomics on the file) of every send
//! and receive. A leg gets a slot when its session is added and gives it back when the
//! session is released; when the table is full, or the kernel refuses it, the leg keeps
//! using its plain fd. The SQE builders here take either.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types, IoUring};

/// How an SQE names a leg's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sock {
    Fd(RawFd),
    Fixed(u32),
}

/// The ring's file table: which slots are free.
pub(super) struct FileTable {
    free: Vec<u32>,
}

impl FileTable {
    /// Registers a sparse table of `n` slots (0: none, every socket by fd).
    pub(super) fn new(ring: &IoUring, n: u32) -> Self {
        let n = n.min(nofile_limit());
        if n == 0 {
            return Self { free: Vec::new() };
        }
        match ring.submitter().register_files_sparse(n) {
            Ok(()) => Self {
                free: (0..n).rev().collect(),
            },
            Err(err) => {
                tracing::info!(%err, "io_uring file table refused: sockets used by fd");
                Self { free: Vec::new() }
            }
        }
    }

    /// A slot holding `fd`, or None (table full or refused: use the fd).
    pub(super) fn register(&mut self, ring: &IoUring, fd: RawFd) -> Option<u32> {
        let slot = self.free.pop()?;
        match ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => Some(slot),
            Err(err) => {
                tracing::debug!(%err, slot, "registering a socket failed: used by fd");
                self.free.push(slot);
                None
            }
        }
    }

    /// Empties `slot`. The caller has submitted every SQE naming it (a queued one would
    /// otherwise find the slot empty, or another socket once it is reused); requests the
    /// kernel already issued hold their own reference to the socket.
    pub(super) fn unregister(&mut self, ring: &IoUring, slot: u32) {
        match ring.submitter().register_files_update(slot, &[-1]) {
            Ok(_) => self.free.push(slot),
            // Not reused: a slot that may still hold a socket is leaked rather than shared.
            Err(err) => tracing::warn!(%err, slot, "unregistering a socket failed"),
        }
    }
}

fn nofile_limit() -> u32 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on our own process with a valid struct. The kernel refuses a table
    // larger than RLIMIT_NOFILE.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 0;
    }
    rl.rlim_cur.min(u32::MAX as u64) as u32
}

pub(super) fn sendmsg(s: Sock, hdr: *const libc::msghdr) -> squeue::Entry {
    match s {
        Sock::Fd(fd) => opcode::SendMsg::new(types::Fd(fd), hdr).build(),
        Sock::Fixed(i) => opcode::SendMsg::new(types::Fixed(i), hdr).build(),
    }
}

pub(super) fn recvmsg_multi(s: Sock, hdr: *const libc::msghdr, group: u16) -> squeue::Entry {
    match s {
        Sock::Fd(fd) => opcode::RecvMsgMulti::new(types::Fd(fd), hdr, group).build(),
        Sock::Fixed(i) => opcode::RecvMsgMulti::new(types::Fixed(i), hdr, group).build(),
    }
}
