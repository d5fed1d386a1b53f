//! System calls that only tests make: mounting, FIFOs, and the page cache.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// `mount --bind from to`.
pub fn bind_mount(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (c_path(from), c_path(to));
    // SAFETY: both strings are valid and NUL-terminated for the call; a bind mount has no
    // other pointer arguments.
    let rc = unsafe {
        libc::mount(
            from.as_ptr(),
            to.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    crate::check(rc)
}

/// Unmounts `at` lazily (`MNT_DETACH`).
pub fn unmount(at: &Path) -> io::Result<()> {
    let at = c_path(at);
    // SAFETY: a valid NUL-terminated path.
    crate::check(unsafe { libc::umount2(at.as_ptr(), libc::MNT_DETACH) })
}

/// Makes a FIFO at `p` with `mode`.
pub fn mkfifo(p: &Path, mode: u32) -> io::Result<()> {
    let c = c_path(p);
    // SAFETY: `c` is a valid NUL-terminated path.
    crate::check(unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) })
}

/// Asks the kernel to drop `f`'s clean pages from the page cache (`POSIX_FADV_DONTNEED`).
pub fn drop_cached_pages(f: &File) -> io::Result<()> {
    // SAFETY: posix_fadvise takes a descriptor and a range and touches no memory.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Whether the file's first page is in the page cache (`mincore`, which starts no read,
/// where an `RWF_NOWAIT` probe would start a readahead that brings it back).
pub fn first_page_cached(f: &File) -> io::Result<bool> {
    // SAFETY: a fresh private read-only mapping of one page of an open file, asked about with
    // mincore into a one-byte value (one page) and unmapped before returning.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let map = libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        );
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut resident = 0u8;
        let rc = libc::mincore(map, page, &mut resident);
        let err = io::Error::last_os_error();
        libc::munmap(map, page);
        if rc != 0 {
            return Err(err);
        }
        Ok(resident & 1 == 1)
    }
}

/// Pins this process to one CPU (wrapping around on machines with fewer).
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    // SAFETY: the index is below the number of CPUs online, within the set's capacity.
    unsafe { libc::CPU_SET(cpu % cpus, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given, living through the call.
    crate::check(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) })
}

/// The value of `key` (e.g. `"Uid:"`) in a `/proc/<pid>/status` text, its fields joined by
/// single spaces ("" when absent).
pub fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
