//! A counting global allocator for the allocation tests (`no_alloc.rs`, `srtp_alloc.rs`,
//! `webrtc_alloc.rs`). Each test binary installs it with
//! `#[global_allocator] static A: common::Counting = common::Counting;` and measures with
//! [`counted`]. Only the calling thread counts: the test harness has threads of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

pub struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated and not yet freed, all threads ([`live_bytes`]).
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Counting on every thread (the engine's shards), not just the caller's.
static ALL: AtomicBool = AtomicBool::new(false);

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if ALL.load(Ordering::Relaxed) || ON.with(|c| c.get()) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

/// Runs `f` and returns its result with the heap allocations (and reallocations) it made on
/// this thread.
#[allow(dead_code)] // not every test binary uses every helper
pub fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCS.load(Ordering::Relaxed);
    ON.with(|c| c.set(true));
    let r = f();
    ON.with(|c| c.set(false));
    (r, ALLOCS.load(Ordering::Relaxed) - before)
}

/// [`counted`] for every thread of the process (the caller must be the only one doing
/// anything but the code under test).
#[allow(dead_code)]
pub fn counted_all<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCS.load(Ordering::Relaxed);
    ALL.store(true, Ordering::SeqCst);
    let r = f();
    ALL.store(false, Ordering::SeqCst);
    (r, ALLOCS.load(Ordering::Relaxed) - before)
}

/// Heap bytes allocated and not freed yet, by every thread (requested sizes, not the
/// allocator's rounding): the difference across a piece of code is what it kept.
#[allow(dead_code)]
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}
