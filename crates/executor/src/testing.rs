//! Helpers shared by the unit tests.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Held by the tests that mount and those that expect a resolution of the protected set to be
/// reused: any mount in the process's namespace makes the next call resolve anew.
static MOUNT_TABLE: Mutex<()> = Mutex::new(());

pub(crate) fn mount_table() -> MutexGuard<'static, ()> {
    MOUNT_TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bind mount, unmounted (lazily) on drop.
pub(crate) struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = mymcp_sys::testing::unmount(&self.0);
    }
}

/// `mount --bind from to`; `None` (and a line on stderr saying the test is skipped) where this
/// process may not mount: not root, or a container without the capability.
pub(crate) fn bind_mount(from: &Path, to: &Path) -> Option<BindMount> {
    if let Err(e) = mymcp_sys::testing::bind_mount(from, to) {
        eprintln!("skipped: cannot bind-mount here ({e})");
        return None;
    }
    Some(BindMount(to.to_owned()))
}

/// Makes a FIFO at `p` (mode 0600).
pub(crate) fn mkfifo(p: &Path) {
    mymcp_sys::testing::mkfifo(p, 0o600).unwrap_or_else(|e| panic!("mkfifo {p:?}: {e}"));
}
