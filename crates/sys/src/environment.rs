//! The process environment, where the kernel put it.

/// For every `NAME=value` string of the process environment whose name is in `names`, copies
/// the value out and overwrites its bytes, in place, with NULs. Returns `(name, value)` pairs.
///
/// `std::env::remove_var` only edits libc's `environ` array: the strings themselves stay
/// where the kernel put them at `execve`, at the top of the initial stack, and that region is
/// what `/proc/<pid>/environ` shows for the life of the process. Overwriting the bytes there
/// is the only way to take a secret out of it.
///
/// Must be called while this is the only thread and before anything has modified the
/// environment (so that every entry still points into the region the kernel filled).
pub fn scrub_environment(names: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut taken = Vec::new();
    // SAFETY: `environ` is libc's NULL-terminated array of pointers to NUL-terminated
    // `NAME=value` strings, set up by the kernel and libc at start-up; this is the only thread
    // (documented precondition), so nothing modifies the array or the strings while we walk
    // them. Each string lies in the writable initial stack (or, had it been replaced with
    // setenv, in writable heap memory libc allocated); we write only the `len` bytes of the
    // value that `CStr` measured before its terminating NUL, which stays in place.
    unsafe {
        let mut entry = libc::environ;
        if entry.is_null() {
            return taken;
        }
        while !(*entry).is_null() {
            let text = *entry;
            let bytes = std::ffi::CStr::from_ptr(text).to_bytes();
            if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
                let name = &bytes[..eq];
                if names.iter().any(|n| n.as_bytes() == name) {
                    let value = bytes[eq + 1..].to_vec();
                    let name = String::from_utf8_lossy(name).into_owned();
                    std::ptr::write_bytes(text.add(eq + 1), 0, value.len());
                    taken.push((name, value));
                }
            }
            entry = entry.add(1);
        }
    }
    taken
}
