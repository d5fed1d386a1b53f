//! Helpers shared by the unit tests.

use std::ffi::CString;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Held by the tests that mount and those that expect a resolution of the protected set to be
/// reused: any mount in the process's namespace makes the next call resolve anew.
static MOUNT_TABLE: Mutex<()> = Mutex::new(());

pub(crate) fn mount_table() -> MutexGuard<'static, ()> {
    MOUNT_TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bind mount, unmounted (lazily) on drop.
pub(crate) struct BindMount(CString);

impl Drop for BindMount {
    fn drop(&mut self) {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

/// `mount --bind from to`; `None` (and a line on stderr saying the test is skipped) where this
/// process may not mount: not root, or a container without the capability.
pub(crate) fn bind_mount(from: &Path, to: &Path) -> Option<BindMount> {
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let (from, to) = (c(from), c(to));
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
    if rc != 0 {
        eprintln!(
            "skipped: cannot bind-mount here ({})",
            std::io::Error::last_os_error()
        );
        return None;
    }
    Some(BindMount(to))
}

/// Makes a FIFO at `p` (mode 0600).
pub(crate) fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {p:?}");
}
