//! Packet arena: turns received datagrams into `Bytes` without a heap allocation per packet.
//!
//! Datagrams are copied into large shared chunks and handed out as `Bytes` views (a refcount
//! bump). When a chunk is full the arena moves to the next one in its pool and reclaims it in
//! place if every view into it has been dropped (`BytesMut::try_reclaim`); only when all
//! chunks are still referenced (players far behind) does it allocate, and it counts that.

use bytes::{Bytes, BytesMut};

pub struct PacketArena {
    chunks: Vec<BytesMut>,
    current: usize,
    chunk_size: usize,
    max_chunks: usize,
    /// Chunk allocations after start-up (should stay flat in steady state).
    pub grows: u64,
}

impl PacketArena {
    pub fn new(chunk_size: usize, initial_chunks: usize, max_chunks: usize) -> Self {
        let chunks = (0..initial_chunks.max(1))
            .map(|_| BytesMut::with_capacity(chunk_size))
            .collect();
        Self {
            chunks,
            current: 0,
            chunk_size,
            max_chunks: max_chunks.max(initial_chunks).max(1),
            grows: 0,
        }
    }

    /// Copies `data` into the arena and returns an immutable, cheaply clonable view.
    pub fn copy(&mut self, data: &[u8]) -> Bytes {
        debug_assert!(data.len() <= self.chunk_size);
        if self.chunks[self.current].capacity() < data.len() {
            self.rotate(data.len());
        }
        let c = &mut self.chunks[self.current];
        c.extend_from_slice(data);
        c.split().freeze()
    }

    fn rotate(&mut self, need: usize) {
        let n = self.chunks.len();
        for step in 1..=n {
            let i = (self.current + step) % n;
            let c = &mut self.chunks[i];
            if c.capacity() >= need || c.try_reclaim(self.chunk_size) {
                self.current = i;
                return;
            }
        }
        self.grows += 1;
        let fresh = BytesMut::with_capacity(self.chunk_size.max(need));
        if n < self.max_chunks {
            self.chunks.push(fresh);
            self.current = n;
        } else {
            // Drop our handle to the oldest chunk; its memory is freed once its views are.
            let i = (self.current + 1) % n;
            self.chunks[i] = fresh;
            self.current = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_hold_their_bytes_and_chunks_are_reused() {
        let mut a = PacketArena::new(4096, 2, 4);
        let mut keep = Vec::new();
        for i in 0..100u8 {
            let b = a.copy(&[i; 1000]);
            assert_eq!(&b[..], &[i; 1000][..]);
            if i < 3 {
                keep.push(b);
            }
        }
        assert_eq!(keep[1][0], 1);
        // Only the chunk pinned by `keep` could not be reclaimed: one growth at most.
        assert!(a.grows <= 1, "grows = {}", a.grows);
    }
}
