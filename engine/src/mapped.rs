//! Zeroed memory straight from `mmap`, for a shard's large send buffers (the SRTP slot slab,
//! the GSO batch buffers): reserved at start so the hot path never allocates, yet a page
//! costs resident memory only once a send has written it. (A heap allocation of the same
//! size may come from memory malloc already touched, or be zeroed by calloc page by page.)

use std::ops::{Deref, DerefMut};

pub struct MappedBytes {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned exclusively, like a Box<[u8]>.
unsafe impl Send for MappedBytes {}

impl MappedBytes {
    /// `len` zero bytes (at least one page is mapped; `len == 0` maps nothing).
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        if len == 0 {
            return Ok(Self {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: an anonymous private mapping, owned by the returned value.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: p as *mut u8,
            len,
        })
    }
}

impl Drop for MappedBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `zeroed`, unmapped once.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

impl Deref for MappedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for the mapping's life.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for MappedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and borrowed mutably through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_writable_and_empty_is_fine() {
        let mut m = MappedBytes::zeroed(3 * 4096 + 10).unwrap();
        assert!(m.iter().all(|&b| b == 0));
        m[4096 * 3 + 9] = 7;
        assert_eq!(m[m.len() - 1], 7);
        assert!(MappedBytes::zeroed(0).unwrap().is_empty());
    }
}
