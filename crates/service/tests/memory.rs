//! The heap is given back after a large payload, with the allocator set as the daemons set it.
//! The check runs in a child process of its own (this test binary again), so that no other
//! test's allocations share its heap, with one arena from its first allocation on, as in the
//! daemons, which call `tune_allocator` before any thread exists.

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
