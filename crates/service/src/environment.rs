//! Secrets that arrive in the process environment anyway.
//!
//! No mymcp process should get a secret through its environment: whatever was passed at
//! `execve` stays readable in `/proc/<pid>/environ` for the life of the process, and
//! `std::env::remove_var` does not change that (it edits libc's copy of the pointers, not the
//! strings). Each mymcp process therefore calls [`take_secrets`] first thing in `main`: the
//! values are overwritten where the kernel put them and removed from the environment, and the
//! process keeps them only in its own memory.
//!
//! ```no_run
//! let taken = mymcp_service::environment::take_secrets(&["MYMCP_ADMIN_TOKEN"]);
//! for (name, _value) in &taken {
//!     eprintln!("{name} was in the environment: move it to a file or credential");
//! }
//! assert!(std::env::var_os("MYMCP_ADMIN_TOKEN").is_none());
//! ```

/// Takes the variables named in `names` out of the environment: returns each one found (name,
/// value) after overwriting its value in place and removing it. Call it first in `main`,
/// while no other thread exists and before anything else reads or changes the environment.
pub fn take_secrets(names: &[&str]) -> Vec<(String, String)> {
    let taken = mymcp_sys::environment::scrub_environment(names);
    for name in names {
        std::env::remove_var(name);
    }
    taken
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    /// The overwritten region is what `/proc/self/environ` shows: after taking a secret it is
    /// gone from there, not only from `std::env`. Runs in a child process started with the
    /// secret in its environment (the test binary's own environment is shared by threads).
    #[test]
    fn a_taken_secret_is_gone_from_proc_environ() {
        if std::env::var_os("MYMCP_TEST_SCRUB_CHILD").is_some() {
            let before = std::fs::read("/proc/self/environ").unwrap();
            assert!(contains(&before, b"MYMCP_ADMIN_TOKEN=tok_secret_value"));
            let taken = super::take_secrets(&["MYMCP_ADMIN_TOKEN", "OPENAI_API_KEY"]);
            assert_eq!(
                taken,
                vec![(
                    "MYMCP_ADMIN_TOKEN".to_owned(),
                    "tok_secret_value".to_owned()
                )]
            );
            let after = std::fs::read("/proc/self/environ").unwrap();
            assert!(
                !contains(&after, b"tok_secret_value"),
                "still in /proc/self/environ"
            );
            assert!(contains(&after, b"MYMCP_OTHER=kept"));
            assert!(std::env::var_os("MYMCP_ADMIN_TOKEN").is_none());
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "environment::tests::a_taken_secret_is_gone_from_proc_environ",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("MYMCP_TEST_SCRUB_CHILD", "1")
            .env("MYMCP_ADMIN_TOKEN", "tok_secret_value")
            .env("MYMCP_OTHER", "kept")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
}
