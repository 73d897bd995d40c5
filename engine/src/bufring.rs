//! io_uring provided-buffer ring: the kernel picks a buffer per datagram for multishot
//! RecvMsg, so thousands of sockets share one pool instead of each owning a receive buffer.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::sync::atomic::{AtomicU16, Ordering};

pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    buf_size: usize,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    /// `entries` must be a power of two.
    pub fn new(uring: &IoUring, entries: u16, buf_size: usize, bgid: u16) -> std::io::Result<Self> {
        assert!(entries.is_power_of_two());
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping, page aligned as the kernel requires.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut me = Self {
            ring: ptr as *mut BufRingEntry,
            ring_bytes,
            entries,
            buf_size,
            bufs: vec![0u8; entries as usize * buf_size],
            tail: 0,
        };
        // SAFETY: the mapping lives as long as `me`, which the caller keeps alive longer than
        // the io_uring instance's use of the group (the ring is dropped first).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(ptr as u64, entries, bgid, 0)?
        };
        for bid in 0..entries {
            me.push(bid);
        }
        me.publish();
        Ok(me)
    }

    /// The first `len` bytes of buffer `bid`, as filled by the kernel.
    ///
    /// # Safety
    /// `bid` must come from a completion and not have been recycled yet.
    pub unsafe fn get(&self, bid: u16, len: usize) -> &'static [u8] {
        let start = bid as usize * self.buf_size;
        std::slice::from_raw_parts(self.bufs.as_ptr().add(start), len.min(self.buf_size))
    }

    fn push(&mut self, bid: u16) {
        let mask = self.entries - 1;
        // SAFETY: index is masked into the mapping.
        let e = unsafe { &mut *self.ring.add((self.tail & mask) as usize) };
        e.set_addr(self.bufs.as_ptr() as u64 + (bid as usize * self.buf_size) as u64);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives inside the first entry of our mapping.
        unsafe {
            let t = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*t).store(self.tail, Ordering::Release);
        }
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ring as *mut libc::c_void, self.ring_bytes) };
    }
}
