//! The bootstrap's two probe tools: run a command, read the start of a file. Both run with
//! the recorder's own (unprivileged) rights and bounded output; nothing they do is audited by
//! the executor, which they never talk to.
//!
//! "Read-only" is the instruction given to the model, not something enforced here: the
//! recorder's user and the systemd sandbox (read-only system, no home, writable data directory
//! only) are what bound a probe. Commands get a clean environment (no API key), their own
//! process group (killed whole at the timeout), no stdin, and their output is cut to a head and
//! a tail.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Limits of the probes.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// `MYMCP_RECORDER_BOOTSTRAP_PROBE_TIMEOUT_SEC` (30).
    pub timeout: Duration,
    /// Bytes kept from the start and from the end of each output stream.
    pub head_bytes: usize,
    pub tail_bytes: usize,
    /// Bytes `read_file` returns at most (16 KiB).
    pub read_bytes: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            timeout: Duration::from_secs(
                mymcp_settings::RECORDER_BOOTSTRAP_PROBE_TIMEOUT_SEC.default(),
            ),
            head_bytes: 6 * 1024,
            tail_bytes: 2 * 1024,
            read_bytes: 16 * 1024,
        }
    }
}

/// How a command ended (the `result` label of `mymcp_recorder_bash_probe_runs_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Ok,
    /// It ran and exited non-zero.
    Failed,
    Timeout,
    /// It could not be started.
    Error,
}

impl ProbeResult {
    pub fn label(self) -> &'static str {
        match self {
            ProbeResult::Ok => "ok",
            ProbeResult::Failed => "failed",
            ProbeResult::Timeout => "timeout",
            ProbeResult::Error => "error",
        }
    }
}

/// A stream's first and last bytes and its size.
#[derive(Debug, Default)]
struct Capture {
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
}

impl Capture {
    fn read_all(mut r: impl Read, head: usize, tail: usize) -> Capture {
        let mut c = Capture::default();
        let mut buf = [0u8; 8192];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => return c,
                Ok(n) => n,
            };
            c.total += n as u64;
            let mut chunk = &buf[..n];
            if c.head.len() < head {
                let take = chunk.len().min(head - c.head.len());
                c.head.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
            }
            c.tail.extend_from_slice(chunk);
            if c.tail.len() > 2 * tail.max(1) {
                c.tail.drain(..c.tail.len() - tail);
            }
        }
    }

    fn render(&self, name: &str, tail: usize) -> String {
        let tail_bytes = &self.tail[self.tail.len().saturating_sub(tail)..];
        let shown = self.head.len() + tail_bytes.len();
        let mut out = format!("--- {name} ({} bytes) ---\n", self.total);
        out.push_str(&String::from_utf8_lossy(&self.head));
        if self.total > shown as u64 {
            out.push_str(&format!(
                "\n[… {} bytes omitted …]\n",
                self.total - shown as u64
            ));
        }
        out.push_str(&String::from_utf8_lossy(tail_bytes));
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

/// Runs `command` with `/bin/sh -c` and returns what the model sees.
pub fn run_command(cfg: &ProbeConfig, command: &str) -> (ProbeResult, String) {
    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .env("HOME", "/")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return (
                ProbeResult::Error,
                format!("could not start the command: {e}"),
            )
        }
    };
    let (tx, rx) = mpsc::channel();
    for (name, stream) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ] {
        let (tx, head, tail) = (tx.clone(), cfg.head_bytes, cfg.tail_bytes);
        std::thread::spawn(move || {
            let c = stream
                .map(|s| Capture::read_all(s, head, tail))
                .unwrap_or_default();
            let _ = tx.send((name, c));
        });
    }
    drop(tx);
    let deadline = Instant::now() + cfg.timeout;
    let pgid = child.id();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    // Whatever is left of the group goes now (background children holding the pipes too).
    let _ = mymcp_sys::signals::kill_group(pgid, libc::SIGKILL);
    let _ = child.wait();
    let (mut stdout, mut stderr) = (Capture::default(), Capture::default());
    let until = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(("stdout", c)) => stdout = c,
            Ok((_, c)) => stderr = c,
            Err(_) => break,
        }
    }
    let (result, head) = match status {
        Some(s) if s.success() => (ProbeResult::Ok, "exit_code: 0".to_owned()),
        Some(s) => (
            ProbeResult::Failed,
            match s.code() {
                Some(c) => format!("exit_code: {c}"),
                None => "exit_code: killed by a signal".to_owned(),
            },
        ),
        None => (
            ProbeResult::Timeout,
            format!("timed out after {} s (killed)", cfg.timeout.as_secs()),
        ),
    };
    let text = format!(
        "{head}\n{}{}",
        stdout.render("stdout", cfg.tail_bytes),
        stderr.render("stderr", cfg.tail_bytes)
    );
    (result, text)
}

/// Reads the first [`ProbeConfig::read_bytes`] of a regular file.
pub fn read_file(cfg: &ProbeConfig, path: &str) -> String {
    match read_start(cfg, path) {
        Ok(text) => text,
        Err(e) => format!("error: {path}: {e}"),
    }
}

fn read_start(cfg: &ProbeConfig, path: &str) -> io::Result<String> {
    if !path.starts_with('/') {
        return Err(io::Error::other("the path must be absolute"));
    }
    // O_NONBLOCK: a FIFO must not hang the bootstrap.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    f.take(cfg.read_bytes as u64).read_to_end(&mut bytes)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if meta.len() > bytes.len() as u64 {
        text.push_str(&format!(
            "\n[… file is {} bytes; the first {} are shown]\n",
            meta.len(),
            bytes.len()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProbeConfig {
        ProbeConfig {
            timeout: Duration::from_secs(2),
            head_bytes: 100,
            tail_bytes: 50,
            read_bytes: 64,
        }
    }

    #[test]
    fn commands_report_exit_status_and_both_streams() {
        let (r, text) = run_command(&cfg(), "echo out; echo err >&2; exit 3");
        assert_eq!(r, ProbeResult::Failed);
        assert!(text.starts_with("exit_code: 3\n"), "{text}");
        assert!(text.contains("--- stdout (4 bytes) ---\nout\n"), "{text}");
        assert!(text.contains("--- stderr (4 bytes) ---\nerr\n"), "{text}");
        let (r, _) = run_command(&cfg(), "true");
        assert_eq!(r, ProbeResult::Ok);
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let (_, text) = run_command(&cfg(), "seq 1 100000");
        assert!(
            text.contains("--- stdout (588895 bytes) ---\n1\n2\n"),
            "{text}"
        );
        assert!(text.contains("bytes omitted"), "{text}");
        assert!(text.contains("99999\n100000\n"), "{text}");
        assert!(text.len() < 600, "{}", text.len());
    }

    #[test]
    fn the_timeout_kills_the_whole_group_even_with_the_pipe_held_open() {
        let start = Instant::now();
        let (r, text) = run_command(&cfg(), "echo started; sleep 60 & sleep 60");
        assert_eq!(r, ProbeResult::Timeout);
        assert!(text.starts_with("timed out after 2 s (killed)"), "{text}");
        assert!(text.contains("started"), "{text}");
        assert!(start.elapsed() < Duration::from_secs(6));
    }

    #[test]
    fn commands_get_no_secret_from_the_environment() {
        std::env::set_var("MYMCP_RECORDER_LLM_API_KEY_TEST_ONLY", "sk-secret");
        let (_, text) = run_command(&cfg(), "env");
        assert!(!text.contains("sk-secret"), "{text}");
    }

    #[test]
    fn files_are_read_from_the_start_and_fifos_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x".repeat(100)).unwrap();
        let text = read_file(&cfg(), f.to_str().unwrap());
        assert!(text.starts_with(&"x".repeat(64)));
        assert!(text.contains("file is 100 bytes; the first 64 are shown"));
        let fifo = dir.path().join("fifo");
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(read_file(&cfg(), fifo.to_str().unwrap()).contains("not a regular file"));
        assert!(read_file(&cfg(), "relative").contains("must be absolute"));
        assert!(read_file(&cfg(), "/nonexistent/x").starts_with("error: /nonexistent/x: "));
    }
}
