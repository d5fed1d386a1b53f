//! The heap is given back after a large payload, with the allocator set as the daemons set it;
//! and, once the per-thread caches are off, what a thread frees goes back to the heap while
//! the thread lives on. Each check runs in a child process of its own (this test binary
//! again), so that no other test's allocations share its heap, with one arena from its first
//! allocation on, as in the daemons, which call `tune_allocator` before any thread exists.

use mymcp_service::memory;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_burst_of_large_payloads_is_given_back_to_the_kernel() {
    if std::env::var_os("MYMCP_MEMORY_CHILD").is_some() {
        return burst_then_trim();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_burst_of_large_payloads_is_given_back_to_the_kernel",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env("MYMCP_MEMORY_CHILD", "1")
        .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed:\n{text}");
    assert!(
        text.contains("heap trimmed after a large payload"),
        "the child ran no check:\n{text}"
    );
}

fn burst_then_trim() {
    memory::tune_allocator();
    // 32 MiB of medium buffers with small live allocations between them, as a burst of large
    // answers leaves the heap.
    let mut pins = Vec::new();
    let mut bufs = Vec::new();
    for i in 0..64u8 {
        bufs.push(vec![i | 1; 512 << 10]);
        pins.push(vec![i; 4096]);
    }
    let full = rss_kib();
    drop(bufs);
    memory::start_trimmer(Duration::from_millis(50)).unwrap();

    // Without a mark, the heap keeps them (nothing below 64 MiB is trimmed on free) ...
    std::thread::sleep(Duration::from_millis(300));
    let kept = rss_kib();
    assert!(
        kept + 8 * 1024 > full,
        "RSS fell from {full} to {kept} KiB without a mark: the test no longer shows the trimmer's work"
    );

    // ... and after one, they go back to the kernel within a few periods.
    memory::large_payload(memory::LARGE);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rss_kib() + 24 * 1024 > full && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = rss_kib();
    assert!(
        after + 24 * 1024 <= full,
        "RSS {full} KiB with 32 MiB of buffers, {after} KiB after they were freed and trimmed"
    );
    assert_eq!(pins.len(), 64);
    println!("heap trimmed after a large payload: {full} KiB -> {after} KiB");
}

#[test]
fn the_heap_is_trimmed_when_a_busy_daemon_goes_idle_and_not_before() {
    const TEST: &str = "the_heap_is_trimmed_when_a_busy_daemon_goes_idle_and_not_before";
    if std::env::var_os("MYMCP_MEMORY_CHILD").is_some() {
        return busy_then_idle();
    }
    let text = child(TEST, "idle", "glibc.malloc.arena_max=1");
    assert!(
        text.contains("heap trimmed when idle"),
        "the child ran no check:\n{text}"
    );
}

fn busy_then_idle() {
    memory::tune_allocator();
    memory::start_trimmer(Duration::from_millis(50)).unwrap();
    // The free pages a burst of small calls leaves: no payload is large.
    let mut pins = Vec::new();
    let mut bufs = Vec::new();
    for i in 0..64u8 {
        memory::large_payload(4096);
        bufs.push(vec![i | 1; 512 << 10]);
        pins.push(vec![i; 4096]);
    }
    let full = rss_kib();
    drop(bufs);

    // While payloads keep coming, the heap is kept (trimming would cost the calls) ...
    let busy_until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < busy_until {
        memory::large_payload(100);
        std::thread::sleep(Duration::from_millis(5));
    }
    let kept = rss_kib();
    assert!(
        kept + 8 * 1024 > full,
        "RSS fell from {full} to {kept} KiB while payloads kept coming"
    );

    // ... and given back once they stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rss_kib() + 24 * 1024 > full && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = rss_kib();
    assert!(
        after + 24 * 1024 <= full,
        "RSS {full} KiB with 32 MiB of buffers, {after} KiB after they were freed and the \
         payloads stopped"
    );
    assert_eq!(pins.len(), 64);
    println!("heap trimmed when idle: {full} KiB -> {kept} KiB while busy -> {after} KiB");
}

/// Runs this test binary again as a child doing `check` (see `child_check`), with
/// `tunables` in `GLIBC_TUNABLES`; its output.
fn child(test: &str, check: &str, tunables: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("MYMCP_MEMORY_CHILD", check)
        .env("GLIBC_TUNABLES", tunables)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed:\n{text}");
    text
}

/// Bytes the allocator counts as in use (chunks held in a thread's cache count as in use).
fn in_use() -> usize {
    mymcp_sys::memory::in_use()
}

#[test]
fn what_a_living_thread_frees_goes_back_to_the_heap_without_thread_caches() {
    const TEST: &str = "what_a_living_thread_frees_goes_back_to_the_heap_without_thread_caches";
    if std::env::var_os("MYMCP_MEMORY_CHILD").is_some() {
        return frees_on_living_threads();
    }
    let held = |text: &str| -> usize {
        let line = text
            .lines()
            .find_map(|l| Some(l.split_once("held by living threads: ")?.1))
            .unwrap_or_else(|| panic!("the child ran no check:\n{text}"));
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    // As the executor starts: `without_thread_caches` executes the child again with the caches
    // off (added to what GLIBC_TUNABLES held).
    let off = held(&child(TEST, "off", "glibc.malloc.arena_max=1"));
    // The administrator's choice is kept: here glibc's default, so the check can tell.
    let kept = held(&child(
        TEST,
        "kept",
        "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=7",
    ));
    println!("held by 8 living threads: {kept} bytes with the caches, {off} without");
    assert!(
        kept > 1 << 20,
        "with the caches, the threads held only {kept} bytes: the check no longer shows them"
    );
    assert!(
        off < 256 << 10,
        "without the caches, the threads still held {off} bytes"
    );
}

/// In the child: 8 threads allocate and free 7 chunks of each small size, then wait; what the
/// allocator still counts as in use meanwhile is what their caches hold.
fn frees_on_living_threads() {
    memory::without_thread_caches().unwrap();
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap();
    let expected = match std::env::var("MYMCP_MEMORY_CHILD").as_deref() {
        Ok("off") => "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0",
        _ => "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=7",
    };
    assert_eq!(tunables, expected);
    memory::tune_allocator();
    let before = in_use();
    let done = std::sync::Barrier::new(9);
    let exit = std::sync::Barrier::new(9);
    let held = std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut chunks = Vec::new();
                for size in (24..=1000).step_by(16) {
                    for _ in 0..7 {
                        chunks.push(std::hint::black_box(Vec::<u8>::with_capacity(size)));
                    }
                }
                drop(chunks);
                done.wait();
                exit.wait();
            });
        }
        done.wait();
        let held = in_use().saturating_sub(before);
        exit.wait();
        held
    });
    println!("held by living threads: {held} bytes ({tunables})");
}
