//! glibc's allocator: its parameters and giving memory back.

/// Sets glibc's allocator parameters: one arena, buffers up to 32 MiB from the heap, no trim on
/// `free` below 64 MiB (the reasons: `mymcp_service::memory::tune_allocator`). Call before
/// any thread starts.
pub fn set_daemon_parameters() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and rejects values it does not accept (its return value only says so).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Returns the arenas' free memory to the kernel now.
pub fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes the allocator counts as in use (`mallinfo2().uordblks`; chunks held in a thread's
/// cache count as in use).
pub fn in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters under its locks.
    unsafe { libc::mallinfo2() }.uordblks
}
