//! Acting as a Unix account: its groups and expiry from NSS, and this *thread's* credentials.
//!
//! The executor is root so that it can act as any account. It never changes the credentials
//! of the whole process: [`act_as`] changes those of the calling thread only, with the raw
//! system calls (glibc's `setresuid` and `setgroups` wrappers would change every thread of the
//! process, as POSIX requires). While an [`ActingAs`] lives, the thread's real and effective
//! ids are the account's and its effective capability set is empty (the kernel clears it when
//! the effective uid leaves 0), so the kernel checks every file access, and every `execve` of
//! a child spawned from this thread, as the account's. The saved uid stays 0, which is what
//! lets the thread become root again when the guard drops; a child's saved ids are set to its
//! effective ones by `execve`, so a command cannot use it.
//!
//! Two forms, because the kernel lets a process signal a thread whose *real* or saved uid is
//! its own (`kill_ok_by_cred`), and SIGKILL to any thread ends the whole executor:
//! [`act_as_effective`] changes only the effective (and so the file-system) ids and keeps the
//! real ones root, which is what the file tools use: the kernel checks every access as the
//! account's (file-system ids, empty effective capabilities), and no process of the account
//! can signal the thread meanwhile. [`act_as`] changes the real ids too, as a command spawned
//! from the thread would need; the executor does not spawn that way, though, because the
//! thread could be signalled during the spawn: [`crate::process::spawn_isolated_as`] sets the
//! ids in the child instead, and the calling thread never changes.

use std::ffi::CString;
use std::io;

/// The supplementary groups of account `name` whose primary group is `gid`, as `initgroups`
/// would set them (`getgrouplist`, through NSS: local files, LDAP, SSSD, …).
pub fn groups_of(name: &str, gid: u32) -> io::Result<Vec<u32>> {
    let cname = CString::new(name).map_err(|_| io::Error::other("user name contains NUL"))?;
    let mut n: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let asked = n;
        // SAFETY: `cname` is NUL-terminated; `groups` has room for `n` entries and `n` says
        // so; getgrouplist writes at most that many and stores the real count in `n`.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return Ok(groups);
        }
        if n <= asked {
            // -1 without a larger count: the list cannot be had.
            n = asked.saturating_mul(4);
        }
        if n > 65_536 {
            return Err(io::Error::other("more than 65536 groups"));
        }
    }
}

/// The day (since 1970-01-01) on which account `name` expires, from the shadow database
/// (`getspnam_r`: `sp_expire`); `None` when it never expires or has no shadow entry.
pub fn expiry_day(name: &str) -> io::Result<Option<i64>> {
    let cname = CString::new(name).map_err(|_| io::Error::other("user name contains NUL"))?;
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: spwd is a plain C struct of pointers and integers; all-zero is a valid value,
        // read only after getspnam_r filled it.
        let mut sp: libc::spwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::spwd = std::ptr::null_mut();
        // SAFETY: `cname` is NUL-terminated; `sp`, `buf` and `result` are live storage of the
        // sizes given for the duration of the call.
        let rc = unsafe {
            libc::getspnam_r(
                cname.as_ptr(),
                &mut sp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc == libc::ENOENT || (rc == 0 && result.is_null()) {
            return Ok(None);
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((sp.sp_expire >= 0).then_some(sp.sp_expire as i64));
    }
}

/// This thread acting as an account; root again when dropped. Not `Send`: it must be dropped
/// by the thread it changed.
#[derive(Debug)]
#[must_use = "the thread is the account's only while this lives"]
pub struct ActingAs {
    groups: Vec<libc::gid_t>,
    _this_thread: std::marker::PhantomData<*const ()>,
}

/// Makes the calling thread act as `uid`/`gid` with supplementary `groups` until the returned
/// guard drops: real and effective ids (saved ones stay 0), for spawning a command that is the
/// account through and through. Only from root (the thread's effective uid 0); the other
/// threads of the process keep their credentials.
pub fn act_as(uid: u32, gid: u32, groups: &[u32]) -> io::Result<ActingAs> {
    become_ids(Some((uid, gid)), uid, gid, groups)
}

/// As [`act_as`] but the real ids stay root: only the effective ids (and with them the
/// file-system ids) are the account's, and the effective capabilities are empty. For file work:
/// the kernel checks every access as the account's, while no process of the account may signal
/// or trace this thread (both need a real or saved id of the target to match).
pub fn act_as_effective(uid: u32, gid: u32, groups: &[u32]) -> io::Result<ActingAs> {
    become_ids(None, uid, gid, groups)
}

fn become_ids(
    real: Option<(u32, u32)>,
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> io::Result<ActingAs> {
    let saved = thread_groups()?;
    // From here on the guard restores root, also when a step below fails half way.
    let guard = ActingAs {
        groups: saved,
        _this_thread: std::marker::PhantomData,
    };
    let (ruid, rgid) = real.unwrap_or((0, 0));
    // Groups and gids first: changing them needs CAP_SETGID, which leaves the effective set
    // with the effective uid.
    // SAFETY: the raw setgroups system call (this thread only) with a count and a pointer to
    // that many gids, which it only reads.
    check_raw(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
    // SAFETY: the raw setresgid system call (this thread only), integer arguments.
    check_raw(unsafe { libc::syscall(libc::SYS_setresgid, rgid, gid, 0) })?;
    // SAFETY: the raw setresuid system call (this thread only), integer arguments. The saved
    // uid stays 0.
    check_raw(unsafe { libc::syscall(libc::SYS_setresuid, ruid, uid, 0) })?;
    Ok(guard)
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        // The saved uid is 0, so the thread may take it back; the kernel then copies the
        // permitted capabilities to the effective set, which allows the rest.
        // SAFETY: raw setresuid/setresgid/setgroups of this thread, integer arguments and a
        // pointer to `self.groups`' entries, which setgroups only reads.
        let restored = unsafe {
            check_raw(libc::syscall(libc::SYS_setresuid, 0, 0, 0))
                .and_then(|()| check_raw(libc::syscall(libc::SYS_setresgid, 0, 0, 0)))
                .and_then(|()| {
                    check_raw(libc::syscall(
                        libc::SYS_setgroups,
                        self.groups.len(),
                        self.groups.as_ptr(),
                    ))
                })
        };
        if let Err(e) = restored {
            // A root thread left acting as someone else would do the next call with the wrong
            // rights (or fail it): never go on.
            eprintln!("mymcp: cannot give a thread its root credentials back ({e}); aborting");
            std::process::abort();
        }
    }
}

/// This thread's supplementary groups (raw `getgroups`).
fn thread_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: getgroups with a zero count only returns the count.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
    check_raw(n)?;
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` has room for `n` entries, which the call is told.
    let got = unsafe { libc::syscall(libc::SYS_getgroups, n, groups.as_mut_ptr()) };
    check_raw(got)?;
    groups.truncate(got as usize);
    Ok(groups)
}

fn check_raw(rc: libc::c_long) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The calling thread's real, effective, saved and file-system uids and its effective
/// capabilities, as `/proc/thread-self/status` shows them (for tests and `doctor`).
pub fn thread_status() -> io::Result<String> {
    std::fs::read_to_string("/proc/thread-self/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_acts_as_an_account_and_only_that_thread() {
        if crate::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let nobody = crate::user_by_name("nobody").unwrap().unwrap();
        std::thread::spawn(move || {
            let other = std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(200));
                thread_status().unwrap()
            });
            {
                let _as = act_as(nobody.uid, nobody.gid, &[nobody.gid]).unwrap();
                let s = thread_status().unwrap();
                let u = nobody.uid;
                assert_eq!(
                    crate::testing::status_field(&s, "Uid:"),
                    format!("{u} {u} 0 {u}")
                );
                assert_eq!(
                    crate::testing::status_field(&s, "CapEff:"),
                    "0000000000000000"
                );
                // The kernel checks as the account: root's home is closed to it.
                assert!(
                    std::fs::read_dir("/root").is_err() || !std::path::Path::new("/root").exists()
                );
                let theirs = other.join().unwrap();
                assert_eq!(
                    crate::testing::status_field(&theirs, "Uid:"),
                    "0 0 0 0",
                    "another thread changed"
                );
            }
            let s = thread_status().unwrap();
            assert_eq!(crate::testing::status_field(&s, "Uid:"), "0 0 0 0");
            assert_ne!(
                crate::testing::status_field(&s, "CapEff:"),
                "0000000000000000"
            );
        })
        .join()
        .unwrap();
    }

    /// The reason for [`act_as_effective`]: a process of the account may signal (and so
    /// SIGKILL the whole executor through) a thread whose real uid is the account's, but not
    /// one that acts with effective ids only — which the kernel still checks files as.
    #[test]
    fn only_a_thread_with_the_accounts_real_uid_can_be_signalled_by_the_account() {
        if crate::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let nobody = crate::user_by_name("nobody").unwrap().unwrap();
        let probe = |full: bool| -> (String, i32) {
            let (tx, rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let acting = std::thread::spawn(move || {
                let _as = if full {
                    act_as(nobody.uid, nobody.gid, &[nobody.gid]).unwrap()
                } else {
                    act_as_effective(nobody.uid, nobody.gid, &[nobody.gid]).unwrap()
                };
                let tid = std::fs::read_link("/proc/thread-self").unwrap();
                let tid = tid.file_name().unwrap().to_str().unwrap().to_owned();
                let readable = std::fs::read_dir("/root").is_ok();
                tx.send((thread_status().unwrap(), tid, readable)).unwrap();
                done_rx.recv().unwrap();
            });
            let (status, tid, readable) = rx.recv().unwrap();
            assert!(!readable, "root's home was open to the account");
            let argv = [
                c"sh".into(),
                c"-c".into(),
                std::ffi::CString::new(format!("kill -0 {tid}")).unwrap(),
            ];
            let ids = crate::process::Ids {
                uid: nobody.uid,
                gid: nobody.gid,
                groups: &[],
            };
            let child =
                crate::process::spawn_isolated_as(c"/bin/sh", &argv, &[], c"/", ids).unwrap();
            drop(child.stdout);
            let mut code = 0;
            // SAFETY: waitpid of the child just spawned, into `code`.
            unsafe { libc::waitpid(child.pid, &mut code, 0) };
            done_tx.send(()).unwrap();
            acting.join().unwrap();
            (status, libc::WEXITSTATUS(code))
        };
        let u = nobody.uid;
        let (status, code) = probe(false);
        assert_eq!(
            crate::testing::status_field(&status, "Uid:"),
            format!("0 {u} 0 {u}")
        );
        assert_eq!(
            crate::testing::status_field(&status, "CapEff:"),
            "0000000000000000"
        );
        assert_ne!(code, 0, "the account signalled a thread acting effectively");
        let (status, code) = probe(true);
        assert_eq!(
            crate::testing::status_field(&status, "Uid:"),
            format!("{u} {u} 0 {u}")
        );
        assert_eq!(
            code, 0,
            "control: a thread with the account's real uid can be signalled"
        );
    }

    #[test]
    fn root_is_in_its_groups_and_unknown_accounts_have_no_expiry() {
        let root = groups_of("root", 0).unwrap();
        assert!(root.contains(&0));
        assert_eq!(expiry_day("no-such-user-mymcp").unwrap(), None);
    }

    /// What the design rests on: a child spawned (`posix_spawn`) by a thread acting as an
    /// account is that account through and through once it has executed: all four uids, its
    /// groups, and no capability at all (not even permitted), so the saved uid 0 of the
    /// spawning thread is not inherited in any usable form.
    #[test]
    fn a_command_spawned_while_acting_is_the_account_with_no_capability() {
        use std::io::Read;
        if crate::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let nobody = crate::user_by_name("nobody").unwrap().unwrap();
        let out = std::thread::spawn(move || {
            let _as = act_as(nobody.uid, nobody.gid, &[nobody.gid]).unwrap();
            let child = crate::process::spawn_isolated(
                c"/bin/cat",
                &[c"cat".into(), c"/proc/self/status".into()],
                &[],
                c"/",
            )
            .unwrap();
            let mut text = String::new();
            std::fs::File::from(child.stdout)
                .read_to_string(&mut text)
                .unwrap();
            let mut status = 0;
            // Reaped so that no zombie is left behind.
            while crate::process::try_reap(child.pid).unwrap().is_none() {
                std::thread::sleep(std::time::Duration::from_millis(5));
                status += 1;
                assert!(status < 1000);
            }
            text
        })
        .join()
        .unwrap();
        let u = nobody.uid;
        let g = nobody.gid;
        assert_eq!(
            crate::testing::status_field(&out, "Uid:"),
            format!("{u} {u} {u} {u}"),
            "{out}"
        );
        assert_eq!(
            crate::testing::status_field(&out, "Gid:"),
            format!("{g} {g} {g} {g}"),
            "{out}"
        );
        assert_eq!(
            crate::testing::status_field(&out, "Groups:"),
            format!("{g}"),
            "{out}"
        );
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
            assert_eq!(
                crate::testing::status_field(&out, cap),
                "0000000000000000",
                "{cap} in {out}"
            );
        }
    }
}
