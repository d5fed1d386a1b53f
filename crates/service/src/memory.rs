//! Gives the heap back to the kernel after large answers, and keeps freed memory out of
//! per-thread caches ([`without_thread_caches`]).
//!
//! glibc keeps freed memory in its arenas, and after a large allocation is freed it raises its
//! own mmap and trim thresholds, so a daemon that once served a 10 MiB read or a megabyte of
//! command output stays tens of megabytes larger for the rest of its life (one arena per worker
//! thread, each kept full). Calling `malloc_trim` after every call would cost the small, common
//! calls; instead, code that just handled a large payload calls [`large_payload`], and a
//! background thread trims soon after — twice, so that buffers still being written to a slow
//! client when the first trim ran are given back by the second. Every payload, large or not,
//! also counts as activity: when a busy daemon goes idle, the thread trims once, so that an idle
//! daemon holds what it uses and not the free pages of its last burst.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Sets glibc's allocator for a daemon that serves many small calls and now and then a large one:
///
/// - one arena: every thread allocates from the main heap (small allocations still come from
///   each thread's cache without a lock, unless [`without_thread_caches`] turned those off),
///   because `malloc_trim` can give back the free top of the main heap but not that of the
///   other arenas, which glibc otherwise creates up to eight per core;
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
    mymcp_sys::memory::set_daemon_parameters();
}

/// The tunable that turns glibc's per-thread caches off.
const NO_THREAD_CACHE: &str = "glibc.malloc.tcache_count=0";

/// Turns off glibc's per-thread cache of freed small chunks (tcache), for a daemon whose work
/// runs on many threads that live long.
///
/// Each thread keeps, for itself, up to 7 freed chunks of each of the 64 sizes up to 1,032
/// bytes: up to about 240 KiB per thread, which no other thread can use, [`trim`] cannot give
/// back, and which, scattered over the heap, keep it from being reused. The executor runs its
/// file tools on tokio's blocking pool, 70 to 90 threads under 64 concurrent calls (up to 512
/// in all): its RSS grew for minutes as the threads filled their caches (24,784 → 39,648 KiB
/// in ten minutes of mixed load; paused after three, 9.8 MB of heap counted in use, 0.34 MB
/// without the caches). Without them its heap stays at its first size. Every allocation then
/// takes the single arena's lock ([`tune_allocator`]); the mixed load showed no loss of
/// throughput.
///
/// glibc reads the setting only from `GLIBC_TUNABLES`, when a program starts. Unless that
/// already holds a `glibc.malloc.tcache_count` (the administrator's choice is kept), this adds
/// it and executes the program's file again (same pid, name, arguments and descriptors), so it
/// returns `Ok` only in the new image. An error means the program could not be executed
/// again; it carries on with the caches.
///
/// Call first thing in `main`, before any other thread exists.
pub fn without_thread_caches() -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let current = std::env::var_os("GLIBC_TUNABLES");
    let chosen = current.as_deref().is_some_and(|v| {
        v.as_bytes()
            .split(|&b| b == b':')
            .any(|t| t.starts_with(b"glibc.malloc.tcache_count="))
    });
    if chosen {
        return Ok(());
    }
    let value = match &current {
        Some(v) if !v.is_empty() => {
            let mut v = v.clone();
            v.push(":");
            v.push(NO_THREAD_CACHE);
            v
        }
        _ => NO_THREAD_CACHE.into(),
    };
    std::env::set_var("GLIBC_TUNABLES", value);
    let e = mymcp_sys::process::exec_self();
    match current {
        Some(v) => std::env::set_var("GLIBC_TUNABLES", v),
        None => std::env::remove_var("GLIBC_TUNABLES"),
    }
    Err(e)
}

/// A payload at least this large marks the heap for trimming.
pub const LARGE: usize = 1 << 20;

static PENDING: AtomicBool = AtomicBool::new(false);
/// A payload was handled since the trimmer's last check.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Notes that a payload of `len` bytes was just handled; from [`LARGE`] on, the heap is
/// trimmed shortly after. Any payload is activity (see [`start_trimmer`]).
#[inline]
pub fn large_payload(len: usize) {
    if len >= LARGE {
        PENDING.store(true, Ordering::Relaxed);
    }
    // Read first: under load the flag is already set, and a load keeps the cache line shared.
    if !ACTIVE.load(Ordering::Relaxed) {
        ACTIVE.store(true, Ordering::Relaxed);
    }
}

/// Starts the thread that trims the heap after [`large_payload`]. It checks every `period`,
/// and trims at the first check after a large payload and again at the next one, and once
/// when a period with payloads is followed by one without (the daemon went idle).
pub fn start_trimmer(period: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("heap-trim".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let (mut again, mut busy) = (false, false);
            loop {
                std::thread::sleep(period);
                let marked = PENDING.swap(false, Ordering::Relaxed);
                let active = ACTIVE.swap(false, Ordering::Relaxed);
                if marked || again || (busy && !active) {
                    trim();
                }
                again = marked;
                busy = active;
            }
        })
        .map(drop)
}

/// Returns the arenas' free memory to the kernel now.
pub fn trim() {
    mymcp_sys::memory::trim();
}
