//! Gives the heap back to the kernel after large answers.
//!
//! glibc keeps freed memory in its arenas, and after a large allocation is freed it raises its
//! own mmap and trim thresholds, so a daemon that once served a 10 MiB read or a megabyte of
//! command output stays tens of megabytes larger for the rest of its life (one arena per worker
//! thread, each kept full). Calling `malloc_trim` after every call would cost the small, common
//! calls; instead, code that just handled a large payload calls [`large_payload`], and a
//! background thread trims soon after — twice, so that buffers still being written to a slow
//! client when the first trim ran are given back by the second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Sets glibc's allocator for a daemon that serves many small calls and now and then a large one:
///
/// - one arena: every thread allocates from the main heap (small allocations still come from
///   each thread's cache without a lock), because `malloc_trim` can give back the free top of
///   the main heap but not that of the other arenas, which glibc otherwise creates up to eight
///   per core;
/// - buffers up to 32 MiB (the largest frame) come from the heap and are reused within a burst
///   of large answers, instead of being mapped freshly and unmapped on every free, which cost
///   page faults and the kernel zeroing those pages; fixed thresholds also turn off glibc's
///   dynamic ones;
/// - nothing is trimmed on `free` below 64 MiB; [`large_payload`] and [`start_trimmer`] give the
///   memory back within a second of the burst instead.
///
/// Measured on a 10 MiB `read_file` (p50) and the RSS of both daemons 2.5 s after six
/// concurrent clients made 30 of them: glibc's defaults 35 ms and 56–77 MiB kept; these
/// settings with the trimmer 24 ms and 12 MiB (the idle figure).
///
/// Call before any thread starts.
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and rejects values it does not accept (its return value only says so).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// A payload at least this large marks the heap for trimming.
pub const LARGE: usize = 1 << 20;

static PENDING: AtomicBool = AtomicBool::new(false);

/// Notes that a payload of `len` bytes was just handled; from [`LARGE`] on, the heap is
/// trimmed shortly after.
#[inline]
pub fn large_payload(len: usize) {
    if len >= LARGE {
        PENDING.store(true, Ordering::Relaxed);
    }
}

/// Starts the thread that trims the heap after [`large_payload`] (checks every `period`;
/// trims at the first check after a mark and again at the next one).
pub fn start_trimmer(period: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("heap-trim".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut again = false;
            loop {
                std::thread::sleep(period);
                let marked = PENDING.swap(false, Ordering::Relaxed);
                if marked || again {
                    trim();
                }
                again = marked;
            }
        })
        .map(drop)
}

/// Returns the arenas' free memory to the kernel now.
pub fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
