//! `read_file`: streamed, paginated reads with bounded memory.
//!
//! The reference read whole files into memory (a read of `/dev/zero` or a multi-GB log exhausted
//! it). Here the file is streamed through a 64 KiB buffer:
//!
//! * lines before `offset` are skipped without being stored;
//! * each returned line keeps at most `max_line_bytes` bytes, the rest of an over-long line is
//!   scanned past, never buffered;
//! * the page stops at `limit` lines or before the line that would make it exceed
//!   `max_page_bytes` (the first line is always returned: it is at most `max_line_bytes` long);
//! * after the page, newlines are counted for `total_lines` only within `count_budget_bytes`;
//!   past that, `total_lines` is a lower bound and `total_lines_exact` is false.
//!
//! Bytes scanned without being stored (the tails of over-long returned lines and the count after
//! the page) share that one budget, so a call reads at most the skipped prefix, the page and
//! `count_budget_bytes`. Skipping to `offset` is not budgeted: it is what the client asked for.
//!
//! Only regular files are read, and only after the protected-path check on the opened object
//! ([`paths::open_for_read`]): the path is opened with `O_PATH`, which never opens a device or a
//! FIFO (opening some devices has side effects, e.g. arming a watchdog); that descriptor is
//! checked and only then reopened for reading through `/proc/self/fd`, so the check and the read
//! concern the same inode.
//!
//! A regular file of a disk or network file system ends; one of procfs, sysfs, debugfs,
//! tracefs, FUSE or any other file system need not: `/proc/kmsg` or tracefs' `trace_pipe` wait
//! for the next message, and a read of them would hold its thread for as long. Such a file
//! ([`stores_bytes`] says which by the `fstatfs` magic of the opened file) is read
//! non-blocking, waiting for data with `poll`, within `ReadConfig::timeout` for the whole call
//! and for no longer than shutdown allows; past the deadline the call is a `TimeoutError`.

use crate::auth::{Authorized, Ro};
use crate::paths::{self, Policy};
use mymcp_protocol::{ErrorCode, ReadFile, ReadFileOutput, ToolFailure};
use mymcp_sys::fs as sysfs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Size of the read buffer.
const CHUNK: usize = 64 * 1024;
/// Appended to a line that was cut at `max_line_bytes`.
const LINE_TRUNCATED: &str = " [LINE TRUNCATED]";

/// Limits of `read_file`. Built by `config`; the defaults match the reference where it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReadConfig {
    /// Lines returned when the client gives no `limit`.
    pub(crate) default_limit: u64,
    /// Upper clamp of `limit`.
    pub(crate) max_limit: u64,
    /// Bytes kept of one line; longer lines get `" [LINE TRUNCATED]"`.
    pub(crate) max_line_bytes: usize,
    /// Largest `content` returned; the page stops before the line that would exceed it.
    max_page_bytes: usize,
    /// Bytes scanned without being stored (over-long line tails, the count after the page).
    count_budget_bytes: u64,
    /// `MYMCP_READ_FILE_TIMEOUT_SEC`: longest a call may read a file that need not end (one
    /// not on a disk or network file system, see [`stores_bytes`]).
    pub(crate) timeout: Duration,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            default_limit: mymcp_settings::READ_FILE_DEFAULT_LIMIT.default(),
            max_limit: mymcp_settings::READ_FILE_MAX_LIMIT.default(),
            max_line_bytes: mymcp_settings::READ_FILE_MAX_LINE_BYTES.default() as usize,
            max_page_bytes: 8 << 20,
            count_budget_bytes: 64 << 20,
            timeout: Duration::from_secs(mymcp_settings::READ_FILE_TIMEOUT_SEC.default()),
        }
    }
}

/// The number of lines to return: default `cfg.default_limit`, clamped to [1, `cfg.max_limit`].
fn clamp_limit(limit: Option<i64>, cfg: &ReadConfig) -> u64 {
    let max = cfg.max_limit.max(1);
    match limit {
        None => cfg.default_limit.clamp(1, max),
        Some(l) => (l.max(1) as u64).min(max),
    }
}

/// Runs one `read_file` call. Blocking: run it on a blocking thread.
#[cfg(test)]
pub(crate) fn read_file(
    auth: &Authorized<Ro>,
    args: &ReadFile,
    cfg: &ReadConfig,
    policy: &Policy,
) -> Result<ReadFileOutput, ToolFailure> {
    read_file_until(auth, args, cfg, policy, &|| false)
}

/// Runs one `read_file` call for the holder of `auth` (blocking), with its account's rights,
/// giving up (with `ShuttingDown`) when `stop` says so while it waits for a file that need not
/// end.
pub(crate) fn read_file_until(
    auth: &Authorized<Ro>,
    args: &ReadFile,
    cfg: &ReadConfig,
    policy: &Policy,
    stop: &dyn Fn() -> bool,
) -> Result<ReadFileOutput, ToolFailure> {
    let path = args.file_path.as_str();
    paths::check_absolute("file_path", path)?;
    let _as = auth.act()?;
    let checked = paths::open_for_read(policy, path)?;
    let page = if stores_bytes(&checked.file) {
        let size = checked.meta.len();
        read_sized_page(checked.file, Some(size), args.offset, args.limit, cfg)
    } else {
        // Its size says nothing (0 in procfs, 4096 in sysfs), and it may never end.
        sysfs::set_nonblocking(checked.file.as_fd())
            .map_err(|e| ToolFailure::new(ErrorCode::InternalError, paths::os_message(&e, path)))?;
        let waiting = Waiting {
            file: &checked.file,
            deadline: Instant::now() + cfg.timeout,
            stop,
            woken: false,
        };
        read_sized_page(waiting, None, args.offset, args.limit, cfg)
    };
    page.map_err(|e| read_failure(&e, path, cfg))
}

fn read_failure(e: &io::Error, path: &str, cfg: &ReadConfig) -> ToolFailure {
    if e.kind() == io::ErrorKind::TimedOut {
        return ToolFailure::new(
            ErrorCode::TimeoutError,
            format!(
                "{path} did not end within {} s: it is a stream of a pseudo file system (procfs, sysfs, debugfs, …) that waits for data, not a file with an end",
                cfg.timeout.as_secs()
            ),
        )
        .with_suggestion("Read such a file with a command that ends, e.g. `dmesg` or `timeout 5 cat FILE`");
    }
    if e.get_ref().is_some_and(|inner| inner.is::<Stopped>()) {
        return ToolFailure::new(
            ErrorCode::ShuttingDown,
            format!("The server is shutting down; the read of {path} was stopped"),
        )
        .with_suggestion("Try again once the server is back");
    }
    ToolFailure::new(ErrorCode::InternalError, paths::os_message(e, path))
}

/// `fstatfs` magic numbers of the file systems whose regular files hold stored bytes and so
/// end: local disk file systems, memory ones and network ones (whose reads may wait for a
/// server, but for data that exists). Anything else — procfs, sysfs, debugfs, tracefs,
/// configfs, securityfs, cgroupfs, bpffs, efivarfs, FUSE (a process makes the data up), and
/// any file system not known here — is read as a file that need not end.
const STORES_BYTES: [i64; 30] = [
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58f6, // ramfs
    0xF2F5_2010, // f2fs
    0x4d44,      // vfat, msdos
    0x2011_BAB0, // exfat
    0x5346_544e, // ntfs, ntfs3
    0x2fc1_2fc1, // zfs
    0x794c_7630, // overlayfs
    0x7371_7368, // squashfs
    0x9660,      // iso9660
    0x1501_3346, // udf
    0xE0F5_E1E2, // erofs
    0x3153_464a, // jfs
    0x5265_4973, // reiserfs
    0xca45_1a4e, // bcachefs
    0x482b,      // hfsplus
    0x3434,      // nilfs2
    0xf15f,      // ecryptfs
    0x6969,      // nfs
    0xFE53_4D42, // smb2
    0xFF53_4D42, // cifs
    0x0102_1997, // 9p
    0x00c3_6400, // ceph
    0x5346_414F, // afs
    0x0116_1970, // gfs2
    0x7461_636f, // ocfs2
    0x0BD0_0BD0, // lustre
];

/// Whether `file` is on a file system whose regular files hold stored bytes (and so end),
/// by its `fstatfs` magic; false when that cannot be asked.
fn stores_bytes(file: &std::fs::File) -> bool {
    sysfs::fs_type(file.as_fd()).is_ok_and(|t| STORES_BYTES.contains(&t))
}

/// How often a wait for data looks at the stop signal.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The error a read stopped by shutdown ends with.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}

impl std::error::Error for Stopped {}

/// Reads a non-blocking file that need not end: waits for data with `poll`, never past the
/// deadline (then `TimedOut`, also when data keeps trickling in) and not once `stop` says so
/// (then [`Stopped`]).
struct Waiting<'a> {
    file: &'a std::fs::File,
    deadline: Instant,
    stop: &'a dyn Fn() -> bool,
    /// `poll` said readable, and the last read still found nothing.
    woken: bool,
}

impl Read for Waiting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if (self.stop)() {
                return Err(io::Error::other(Stopped));
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            match (&mut &*self.file).read(buf) {
                Ok(n) => {
                    self.woken = false;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait = left.min(STOP_POLL);
                    if self.woken {
                        // A file without a wait of its own is always "readable": do not spin.
                        std::thread::sleep(wait.min(Duration::from_millis(10)));
                    }
                    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
                    self.woken = sysfs::wait_readable(self.file.as_fd(), ms)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// [`read_file_until`] for a runtime worker, which must not wait: `None` when opening or reading the
/// file might wait for a disk, a network or another process (see
/// [`paths::open_for_read_now`]; the data is read with `RWF_NOWAIT`, from the page cache only),
/// and the caller then runs [`read_file_until`] on the blocking pool. What it answers is what
/// that would.
pub(crate) fn read_file_now(
    auth: &Authorized<Ro>,
    args: &ReadFile,
    cfg: &ReadConfig,
    current: &paths::Current,
) -> Option<Result<ReadFileOutput, ToolFailure>> {
    let path = args.file_path.as_str();
    if let Err(f) = paths::check_absolute("file_path", path) {
        return Some(Err(f));
    }
    // On a runtime worker too: nothing in between waits, and the guard is this thread's.
    let _as = match auth.act() {
        Ok(a) => a,
        Err(f) => return Some(Err(f)),
    };
    let checked = match paths::open_for_read_now(current, path)? {
        Ok(c) => c,
        Err(f) => return Some(Err(f)),
    };
    let size = checked.meta.len();
    let cached = Cached {
        file: &checked.file,
        pos: 0,
        size,
    };
    read_sized_page(cached, Some(size), args.offset, args.limit, cfg)
        .ok()
        .map(Ok)
}

/// Reads what the page cache holds; `WouldBlock` at the first byte it does not. Ends at the
/// size the file had when it was opened: what is appended after that was not there when the
/// call looked (each end-of-file question would otherwise be a system call).
struct Cached<'a> {
    file: &'a std::fs::File,
    pos: u64,
    size: u64,
}

impl Read for Cached<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let buf = &mut buf[..want];
        let n = mymcp_sys::fs::pread_nowait(self.file.as_fd(), buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads one page of numbered lines from `reader`. `offset` and `limit` are the client's values
/// before clamping. See the module documentation for the bounds.
#[cfg(test)]
fn read_page(
    reader: impl Read,
    offset: Option<i64>,
    limit: Option<i64>,
    cfg: &ReadConfig,
) -> io::Result<ReadFileOutput> {
    read_sized_page(reader, None, offset, limit, cfg)
}

/// Reads one page of numbered lines from `reader`, of `size` bytes when that is known (it may
/// still change: its buffers are then no larger than the file needs). `offset` and `limit` are
/// the client's values before clamping. See the module documentation for the bounds.
fn read_sized_page(
    reader: impl Read,
    size: Option<u64>,
    offset: Option<i64>,
    limit: Option<i64>,
    cfg: &ReadConfig,
) -> io::Result<ReadFileOutput> {
    let offset = offset.unwrap_or(1).max(1) as u64;
    let limit = clamp_limit(limit, cfg);
    // One byte more than the file, so that its end is seen by the first read.
    let fits = |cap: usize| match size {
        Some(n) => usize::try_from(n.saturating_add(1)).map_or(cap, |n| n.max(256).min(cap)),
        None => cap,
    };
    let mut lines = Lines::new(reader, fits(CHUNK));

    // Lines read so far (returned or not); after the loop, the number of the last one.
    let mut lineno: u64 = 0;
    while lineno + 1 < offset {
        if !lines.skip_line()? {
            return Ok(ReadFileOutput {
                content: String::new(),
                total_lines: lineno,
                total_lines_exact: true,
                truncated: false,
            });
        }
        lineno += 1;
    }

    let mut budget = cfg.count_budget_bytes;
    let mut content = String::new();
    let mut taken: u64 = 0;
    let mut line = Vec::with_capacity(fits(cfg.max_line_bytes.min(CHUNK)));
    let stop = loop {
        if taken == limit {
            break Stop::Limit;
        }
        let Some(read) = lines.read_line(&mut line, cfg.max_line_bytes, &mut budget)? else {
            break Stop::Eof;
        };
        lineno += 1;
        let entry = Numbered::new(lineno, &line, read.cut);
        if taken > 0 && content.len() + 1 + entry.len() > cfg.max_page_bytes {
            break Stop::PageFull {
                mid_line: read.out_of_budget,
            };
        }
        if taken > 0 {
            content.push('\n');
        }
        entry.push_to(&mut content);
        taken += 1;
        if read.out_of_budget {
            break Stop::OutOfBudget;
        }
    };

    let (extra, exact) = match stop {
        Stop::Eof => (0, true),
        Stop::Limit => lines.count_rest(false, &mut budget)?,
        Stop::PageFull { mid_line } => lines.count_rest(mid_line, &mut budget)?,
        Stop::OutOfBudget => lines.count_rest(true, &mut budget)?,
    };
    // When the count stopped early it is unknown whether more lines follow; say so rather than
    // let the client believe it saw the end.
    let truncated = matches!(stop, Stop::PageFull { .. }) || extra > 0 || !exact;
    Ok(ReadFileOutput {
        content,
        total_lines: lineno + extra,
        total_lines_exact: exact,
        truncated,
    })
}

/// Why the page ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The file ended.
    Eof,
    /// `limit` lines were taken.
    Limit,
    /// The next line (already read, not returned) would not fit in `max_page_bytes`;
    /// `mid_line` when even that line could not be scanned to its end.
    PageFull { mid_line: bool },
    /// The last returned line could not be scanned to its end within the budget.
    OutOfBudget,
}

/// `"%4d\t%s"` of one line: lossy UTF-8, with the marker when it was cut. Appended to the
/// page in place rather than formatted into a string of its own.
struct Numbered<'a> {
    lineno: u64,
    text: std::borrow::Cow<'a, str>,
    cut: bool,
}

impl<'a> Numbered<'a> {
    fn new(lineno: u64, kept: &'a [u8], cut: bool) -> Self {
        let text = if cut {
            kept
        } else {
            let end = kept.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
            &kept[..end]
        };
        // Checked whole first: far faster than the lossy decoder on text that is valid.
        let text = match std::str::from_utf8(text) {
            Ok(valid) => std::borrow::Cow::Borrowed(valid),
            Err(_) => String::from_utf8_lossy(text),
        };
        Numbered { lineno, text, cut }
    }

    fn len(&self) -> usize {
        let digits = self.lineno.checked_ilog10().map_or(1, |d| d as usize + 1);
        let marker = if self.cut { LINE_TRUNCATED.len() } else { 0 };
        digits.max(4) + 1 + self.text.len() + marker
    }

    fn push_to(&self, out: &mut String) {
        // `{:>4}\t` by hand: the formatter's padding path cost more than the rest of a short
        // line.
        let mut digits = [b' '; 21];
        let mut at = digits.len() - 1;
        digits[at] = b'\t';
        let mut n = self.lineno;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let start = at.min(digits.len() - 5);
        out.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII"));
        out.push_str(&self.text);
        if self.cut {
            out.push_str(LINE_TRUNCATED);
        }
    }
}

/// One line as [`Lines::read_line`] returned it.
#[derive(Clone, Copy, Debug)]
struct ReadLine {
    /// Longer than the limit after stripping trailing `\r`: the kept bytes are a prefix.
    cut: bool,
    /// The budget ran out before the end of the line; the reader is in the middle of it.
    out_of_budget: bool,
}

/// A byte stream split into lines after each `\n`.
struct Lines<R> {
    r: BufReader<R>,
}

impl<R: Read> Lines<R> {
    fn new(reader: R, capacity: usize) -> Self {
        Lines {
            r: BufReader::with_capacity(capacity, reader),
        }
    }

    /// The buffered bytes, reading more if the buffer is empty; empty at EOF.
    fn fill(&mut self) -> io::Result<&[u8]> {
        loop {
            match self.r.fill_buf() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        // Already filled: this returns the buffer without reading.
        self.r.fill_buf()
    }

    /// Consumes one line without storing it. False at EOF (no line left).
    fn skip_line(&mut self) -> io::Result<bool> {
        let mut any = false;
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(any);
            }
            any = true;
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    self.r.consume(i + 1);
                    return Ok(true);
                }
                None => {
                    let n = buf.len();
                    self.r.consume(n);
                }
            }
        }
    }

    /// Reads the next line into `kept` (without its `\n`), storing at most `max` bytes and
    /// scanning the rest against `budget`. `None` at EOF.
    fn read_line(
        &mut self,
        kept: &mut Vec<u8>,
        max: usize,
        budget: &mut u64,
    ) -> io::Result<Option<ReadLine>> {
        kept.clear();
        let mut any = false;
        // Whether the part past `max` holds anything but `\r` (which stripping would remove).
        let mut cut = false;
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(any.then_some(ReadLine {
                    cut,
                    out_of_budget: false,
                }));
            }
            any = true;
            let (len, newline) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            let keep = (max - kept.len()).min(len);
            kept.extend_from_slice(&buf[..keep]);
            let rest = &buf[keep..len];
            if !rest.is_empty() {
                let allowed = usize::try_from(*budget).unwrap_or(usize::MAX);
                if rest.len() > allowed {
                    *budget = 0;
                    self.r.consume(keep + allowed);
                    return Ok(Some(ReadLine {
                        cut: true,
                        out_of_budget: true,
                    }));
                }
                *budget -= rest.len() as u64;
                cut = cut || rest.iter().any(|&b| b != b'\r');
            }
            self.r.consume(len + usize::from(newline));
            if newline {
                return Ok(Some(ReadLine {
                    cut,
                    out_of_budget: false,
                }));
            }
        }
    }

    /// Counts the lines after the current position within `budget`: `(lines, reached_eof)`.
    /// `mid_line`: the reader is inside a line that was already counted.
    fn count_rest(&mut self, mid_line: bool, budget: &mut u64) -> io::Result<(u64, bool)> {
        let mut newlines: u64 = 0;
        // Bytes follow the last newline seen: a line (or the current one) goes on.
        let mut pending = false;
        let exact = loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                break true;
            }
            if *budget == 0 {
                break false;
            }
            let n = buf
                .len()
                .min(usize::try_from(*budget).unwrap_or(usize::MAX));
            let part = &buf[..n];
            newlines += memchr::memchr_iter(b'\n', part).count() as u64;
            pending = part[n - 1] != b'\n';
            self.r.consume(n);
            *budget -= n as u64;
        };
        let lines = newlines + u64::from(pending);
        Ok((
            if mid_line {
                lines.saturating_sub(1)
            } else {
                lines
            },
            exact,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::{Atime, Mounts};
    use crate::paths::{Access, Current, ProtectedPaths};
    use std::fs::File;
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn page(bytes: &[u8], offset: Option<i64>, limit: Option<i64>) -> ReadFileOutput {
        read_page(bytes, offset, limit, &ReadConfig::default()).unwrap()
    }

    fn ro() -> Authorized<Ro> {
        Authorized::for_tests()
    }

    fn no_policy() -> std::sync::Arc<Policy> {
        crate::paths::ProtectedPaths::default().policy(crate::paths::Access::Read)
    }

    fn args(path: &str) -> ReadFile {
        ReadFile {
            file_path: path.to_string(),
            offset: None,
            limit: None,
        }
    }

    #[test]
    fn a_numbered_line_knows_its_length_before_it_is_written() {
        for (lineno, kept, cut) in [
            (1, &b"plain"[..], false),
            (9999, b"", false),
            (10000, b"x\r\r", false),
            (123456789, b"cut\r", true),
            (7, b"bad \xff\xfe utf-8 \xe2\x82", false),
            (8, "ünïcødé".as_bytes(), true),
        ] {
            let entry = Numbered::new(lineno, kept, cut);
            let mut out = String::from("before");
            entry.push_to(&mut out);
            assert_eq!(entry.len(), out.len() - "before".len(), "{out:?}");
        }
    }

    #[test]
    fn numbers_lines_width_four_and_wider() {
        let out = page(b"alpha\nbeta\n", None, None);
        assert_eq!(out.content, "   1\talpha\n   2\tbeta");
        assert_eq!(out.total_lines, 2);
        assert!(out.total_lines_exact);
        assert!(!out.truncated);

        let many: String = (1..=10_001).map(|i| format!("l{i}\n")).collect();
        let out = page(many.as_bytes(), Some(10_000), Some(2));
        assert_eq!(out.content, "10000\tl10000\n10001\tl10001");
        assert_eq!(out.total_lines, 10_001);
    }

    #[test]
    fn line_splitting_matches_the_reference() {
        assert_eq!(page(b"", None, None).total_lines, 0);
        assert_eq!(page(b"", None, None).content, "");
        assert_eq!(page(b"a\n", None, None).total_lines, 1);
        let out = page(b"a\n\n", None, None);
        assert_eq!(out.total_lines, 2);
        assert_eq!(out.content, "   1\ta\n   2\t");
        let out = page(b"a\nb", None, None);
        assert_eq!(out.total_lines, 2);
        assert_eq!(out.content, "   1\ta\n   2\tb");
    }

    #[test]
    fn trailing_carriage_returns_are_stripped_inner_ones_kept() {
        let out = page(b"dos\r\nmulti\r\r\nin\rside\nnul\0byte\n", None, None);
        assert_eq!(
            out.content,
            "   1\tdos\n   2\tmulti\n   3\tin\rside\n   4\tnul\0byte"
        );
    }

    #[test]
    fn offset_and_limit_select_and_flag_truncation() {
        let text = b"1\n2\n3\n4\n5\n";
        let out = page(text, Some(2), Some(2));
        assert_eq!(out.content, "   2\t2\n   3\t3");
        assert!(out.truncated);
        assert_eq!(out.total_lines, 5);
        assert!(out.total_lines_exact);

        let out = page(text, Some(4), Some(2));
        assert_eq!(out.content, "   4\t4\n   5\t5");
        assert!(!out.truncated, "nothing after line 5");

        let out = page(text, Some(0), Some(-3));
        assert_eq!(out.content, "   1\t1", "offset 0 → 1, limit -3 → 1");
        assert!(out.truncated);
    }

    #[test]
    fn offset_past_eof_is_empty_and_exact() {
        let out = page(b"1\n2\n3\n", Some(10), None);
        assert_eq!(out.content, "");
        assert!(!out.truncated);
        assert_eq!(out.total_lines, 3);
        assert!(out.total_lines_exact);
        let out = page(b"1\n2\n3\n", Some(4), None);
        assert_eq!(
            (out.content.as_str(), out.truncated, out.total_lines),
            ("", false, 3)
        );
    }

    #[test]
    fn line_truncation_marker_starts_past_max_line_bytes() {
        let cfg = ReadConfig {
            max_line_bytes: 5,
            ..ReadConfig::default()
        };
        let read = |b: &[u8]| read_page(b, None, None, &cfg).unwrap().content;
        assert_eq!(read(b"12345\n"), "   1\t12345");
        assert_eq!(read(b"123456\n"), "   1\t12345 [LINE TRUNCATED]");
        // Stripping happens before the length check.
        assert_eq!(read(b"12345\r\r\r\n"), "   1\t12345");
        assert_eq!(read(b"1234\r\r\r\n"), "   1\t1234");
        assert_eq!(read(b"12345\r\rx\n"), "   1\t12345 [LINE TRUNCATED]");
        // A character cut at the limit becomes U+FFFD.
        assert_eq!(
            read("1234é\n".as_bytes()),
            "   1\t1234\u{FFFD} [LINE TRUNCATED]"
        );
        let long = [b"x".repeat(200_000), b"\nnext\n".to_vec()].concat();
        let out = read_page(&long[..], None, None, &cfg).unwrap();
        assert_eq!(out.content, "   1\txxxxx [LINE TRUNCATED]\n   2\tnext");
        assert_eq!(out.total_lines, 2);
    }

    #[test]
    fn default_line_limit_is_32768_bytes() {
        let exact = [b"y".repeat(32_768), b"\n".to_vec()].concat();
        let out = page(&exact, None, None);
        assert!(!out.content.ends_with(LINE_TRUNCATED));
        assert_eq!(out.content.len(), 5 + 32_768);
        let over = [b"y".repeat(32_769), b"\n".to_vec()].concat();
        let out = page(&over, None, None);
        assert_eq!(
            out.content,
            format!("   1\t{} [LINE TRUNCATED]", "y".repeat(32_768))
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_numbering_kept() {
        let out = page(b"ok\n\xff\xfebad\nend\n", None, None);
        assert_eq!(
            out.content,
            "   1\tok\n   2\t\u{FFFD}\u{FFFD}bad\n   3\tend"
        );
        assert_eq!(out.total_lines, 3);
    }

    #[test]
    fn buffers_sized_for_a_file_that_then_grew_read_the_same_page() {
        let mut text = Vec::new();
        for i in 0..200u32 {
            text.extend(std::iter::repeat_n(
                b'a' + (i % 26) as u8,
                (i as usize * 37) % 700,
            ));
            text.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        }
        let small = ReadConfig {
            max_line_bytes: 300,
            max_page_bytes: 20_000,
            count_budget_bytes: 30_000,
            ..ReadConfig::default()
        };
        for cfg in [ReadConfig::default(), small] {
            for (offset, limit) in [(None, None), (Some(7), Some(40)), (Some(150), Some(3))] {
                let whole = read_page(&text[..], offset, limit, &cfg).unwrap();
                for size in [0, 5, 300, 4096, text.len() as u64] {
                    let sized = read_sized_page(&text[..], Some(size), offset, limit, &cfg);
                    assert_eq!(sized.unwrap(), whole, "size {size} {offset:?} {limit:?}");
                }
            }
        }
    }

    #[test]
    fn page_stops_at_max_page_bytes() {
        let cfg = ReadConfig {
            max_page_bytes: 30,
            ..ReadConfig::default()
        };
        // Each entry is "   N\tline" = 9 bytes; three fit with separators (29), four do not.
        let out = read_page(&b"line\nline\nline\nline\nline\n"[..], None, None, &cfg).unwrap();
        assert_eq!(out.content.lines().count(), 3);
        assert!(out.content.len() <= 30);
        assert!(out.truncated);
        assert_eq!(out.total_lines, 5);
        assert!(out.total_lines_exact);
    }

    #[test]
    fn counting_stops_at_the_budget() {
        let cfg = ReadConfig {
            count_budget_bytes: 10,
            ..ReadConfig::default()
        };
        let text: String = (0..100).map(|_| "abcd\n").collect();
        let out = read_page(text.as_bytes(), None, Some(1), &cfg).unwrap();
        assert_eq!(out.content, "   1\tabcd");
        assert!(out.truncated);
        assert!(!out.total_lines_exact);
        // 1 returned + 2 whole lines in the 10 budget bytes.
        assert_eq!(out.total_lines, 3);
        // The same with a budget that reaches the end is exact.
        let out = read_page(text.as_bytes(), None, Some(1), &ReadConfig::default()).unwrap();
        assert_eq!((out.total_lines, out.total_lines_exact), (100, true));
    }

    #[test]
    fn relative_empty_and_nul_paths_are_invalid() {
        let cfg = ReadConfig::default();
        for p in ["etc/passwd", "", "tokens.json", "/etc/pass\0wd"] {
            let e = read_file(&ro(), &args(p), &cfg, &no_policy()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidPath, "{p:?}");
        }
        let e = read_file(&ro(), &args("tokens.json"), &cfg, &no_policy()).unwrap_err();
        assert_eq!(e.message, "file_path must be an absolute path: tokens.json");
    }

    /// As an account: the kernel decides with its rights (a root-only file is refused, a file
    /// of its group is read), and the thread is root again afterwards.
    #[test]
    fn an_account_reads_what_it_may_and_nothing_else() {
        if mymcp_sys::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let Some(nobody) = crate::accounts::Account::for_tests("nobody") else {
            eprintln!("skipped: no account nobody");
            return;
        };
        let gid = nobody.gid;
        let auth = Authorized::<Ro>::for_tests_as(std::sync::Arc::new(nobody));
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let closed = dir.path().join("root-only");
        std::fs::write(&closed, "secret\n").unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o600)).unwrap();
        let grouped = dir.path().join("group-only");
        std::fs::write(&grouped, "shared\n").unwrap();
        std::os::unix::fs::chown(&grouped, Some(0), Some(gid)).unwrap();
        std::fs::set_permissions(&grouped, std::fs::Permissions::from_mode(0o640)).unwrap();
        let cfg = ReadConfig::default();

        let e = read_file(&auth, &args(closed.to_str().unwrap()), &cfg, &no_policy()).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionError, "{e:?}");
        let out = read_file(&auth, &args(grouped.to_str().unwrap()), &cfg, &no_policy()).unwrap();
        assert!(out.content.contains("shared"), "{}", out.content);
        // Root again: root's own reads work on this thread.
        let out = read_file(&ro(), &args(closed.to_str().unwrap()), &cfg, &no_policy()).unwrap();
        assert!(out.content.contains("secret"), "{}", out.content);
    }

    #[test]
    fn missing_file_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ReadConfig::default();
        let missing = dir.path().join("nope");
        let missing = missing.to_str().unwrap();
        let e = read_file(&ro(), &args(missing), &cfg, &no_policy()).unwrap_err();
        assert_eq!(e.code, ErrorCode::FileNotFoundError);
        assert_eq!(e.message, format!("File not found: {missing}"));
        assert_eq!(e.suggestion.as_deref(), Some("Check the file path"));

        let file = dir.path().join("f");
        std::fs::write(&file, "x\n").unwrap();
        let below_file = format!("{}/x", file.display());
        let e = read_file(&ro(), &args(&below_file), &cfg, &no_policy()).unwrap_err();
        assert_eq!(e.code, ErrorCode::FileNotFoundError);

        let d = dir.path().to_str().unwrap();
        let e = read_file(&ro(), &args(d), &cfg, &no_policy()).unwrap_err();
        assert_eq!(e.code, ErrorCode::IsADirectoryError);
        assert_eq!(e.message, format!("{d} is a directory"));
        assert_eq!(
            e.suggestion.as_deref(),
            Some("Use glob to list directory contents")
        );
    }

    #[test]
    fn reads_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.txt");
        std::fs::write(&file, "one\r\ntwo\nthree").unwrap();
        let out = read_file(
            &ro(),
            &ReadFile {
                file_path: file.to_str().unwrap().to_string(),
                offset: Some(2),
                limit: Some(5),
            },
            &ReadConfig::default(),
            &no_policy(),
        )
        .unwrap();
        assert_eq!(out.content, "   2\ttwo\n   3\tthree");
        assert_eq!((out.total_lines, out.truncated), (3, false));
    }

    /// The read-side protected set, resolved and kept as the dispatcher finds it.
    fn resolved(protected: &ProtectedPaths) -> Current {
        protected.policy(Access::Read);
        protected.last(Access::Read).expect("a watched resolution")
    }

    /// A first read on the pool (which leaves the access time past the modification time),
    /// and the resolution it left behind.
    fn first_read(path: &Path, protected: &ProtectedPaths) -> (ReadFileOutput, Current) {
        let policy = protected.policy(Access::Read);
        let out = read_file(
            &ro(),
            &args_at(path, None, None),
            &ReadConfig::default(),
            &policy,
        );
        (out.unwrap(), resolved(protected))
    }

    fn args_at(path: &Path, offset: Option<i64>, limit: Option<i64>) -> ReadFile {
        ReadFile {
            file_path: path.to_str().unwrap().to_string(),
            offset,
            limit,
        }
    }

    /// A new file whose modification time the next read's access time will be past.
    fn fresh_file(path: &Path, text: impl AsRef<[u8]>) {
        std::fs::write(path, text).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Drops the file's pages from the page cache (written back first: only clean pages go).
    fn evict(path: &Path) {
        let f = File::open(path).unwrap();
        f.sync_all().unwrap();
        // The kernel drops a page only once it has left the per-CPU batches it was added
        // through, so under load one request may not be enough: asked until it is gone.
        for _ in 0..200 {
            mymcp_sys::testing::drop_cached_pages(&f).unwrap();
            if !mymcp_sys::testing::first_page_cached(&f).unwrap() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{path:?} stayed in the page cache");
    }

    fn tmp_atime_rule(dir: &Path) -> Option<Atime> {
        let real = std::fs::canonicalize(dir).unwrap();
        Mounts::read().unwrap().local(&real)
    }

    /// A temporary directory on a file system reads may be answered from (ext4, tmpfs, …);
    /// `None`, said on stderr, where the test machine has none (e.g. an overlay root).
    fn local_tempdir() -> Option<tempfile::TempDir> {
        let dir = tempfile::tempdir().unwrap();
        if tmp_atime_rule(dir.path()).is_none() {
            eprintln!("skipped: {:?} is not on a local file system", dir.path());
            return None;
        }
        Some(dir)
    }

    #[test]
    fn a_file_in_memory_is_answered_now_exactly_as_on_the_pool() {
        let Some(dir) = local_tempdir() else { return };
        let path = dir.path().join("f.txt");
        let mut text: Vec<u8> = (1..=300)
            .flat_map(|i| format!("line {i}\r\n").into_bytes())
            .collect();
        text.extend_from_slice(b"last, with \xff no newline");
        fresh_file(&path, &text);
        let protected = ProtectedPaths::default();
        let cfg = ReadConfig::default();
        let (_, last) = first_read(&path, &protected);
        let small = ReadConfig {
            max_page_bytes: 100,
            count_budget_bytes: 50,
            max_line_bytes: 4,
            ..ReadConfig::default()
        };
        for cfg in [cfg, small] {
            for (offset, limit) in [
                (None, None),
                (Some(5), Some(10)),
                (Some(300), None),
                (Some(301), Some(1)),
                (Some(999), None),
                (Some(-3), Some(0)),
            ] {
                let a = args_at(&path, offset, limit);
                let pool = read_file(&ro(), &a, &cfg, last.policy()).unwrap();
                let now = read_file_now(&ro(), &a, &cfg, &last).expect("answered from memory");
                assert_eq!(now.unwrap(), pool, "{offset:?} {limit:?} {cfg:?}");
            }
        }
    }

    #[test]
    fn a_file_read_back_from_disk_gets_the_pools_answer_or_goes_to_the_pool() {
        let Some(dir) = local_tempdir() else { return };
        let path = dir.path().join("f.txt");
        // Larger than a small file's data kept inside its inode (ext4 inline data), which
        // is read back from memory.
        let text: String = (1..=500).map(|i| format!("line {i:05}\n")).collect();
        fresh_file(&path, text);
        let protected = ProtectedPaths::default();
        let cfg = ReadConfig::default();
        let a = args_at(&path, None, None);
        let (expected, last) = first_read(&path, &protected);
        // A miss under RWF_NOWAIT declines, but it also starts a readahead, and on a fast disk
        // that can finish before the read looks again: then the answer comes from memory
        // after all. Which of the two happens is the disk's race, so what is checked is that
        // any answer given is exactly the pool's, never a partial page.
        for _ in 0..20 {
            evict(&path);
            if let Some(answer) = read_file_now(&ro(), &a, &cfg, &last) {
                assert_eq!(answer.unwrap(), expected);
            }
        }
        // The pool reads it back into memory; then it is answered now.
        assert_eq!(read_file(&ro(), &a, &cfg, last.policy()).unwrap(), expected);
        assert_eq!(read_file_now(&ro(), &a, &cfg, &last), Some(Ok(expected)));
    }

    #[test]
    fn a_read_that_would_update_the_access_time_is_left_to_the_pool() {
        let Some(dir) = local_tempdir() else { return };
        let path = dir.path().join("f.txt");
        fresh_file(&path, "one\n");
        let protected = ProtectedPaths::default();
        let cfg = ReadConfig::default();
        let a = args_at(&path, None, None);
        let last = resolved(&protected);
        let rule = tmp_atime_rule(dir.path()).expect("local");
        let now = read_file_now(&ro(), &a, &cfg, &last);
        match rule {
            // Never read since it was written: this read updates the access time.
            Atime::Relative | Atime::Always => assert_eq!(now, None),
            Atime::Never => assert!(now.is_some()),
        }
        read_file(&ro(), &a, &cfg, last.policy()).unwrap();
        let again = read_file_now(&ro(), &a, &cfg, &last);
        assert_eq!(again.is_some(), rule != Atime::Always, "{rule:?}");
        // Written again: its modification time is past the last access.
        fresh_file(&path, "two\n");
        let third = read_file_now(&ro(), &a, &cfg, &last);
        assert_eq!(third.is_some(), rule == Atime::Never, "{rule:?}");
    }

    #[test]
    fn refusals_are_answered_now_and_big_files_left_to_the_pool() {
        let Some(dir) = local_tempdir() else { return };
        let secret = dir.path().join("secret");
        fresh_file(&secret, "token\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        crate::testing::mkfifo(&dir.path().join("fifo"));
        let big = dir.path().join("big");
        fresh_file(&big, "x".repeat(paths::READ_NOW_MAX_BYTES as usize + 1));
        let protected = ProtectedPaths::new([secret.clone()]);
        let cfg = ReadConfig::default();
        let (_, last) = first_read(&big, &protected);
        let code = |p: &Path| match read_file_now(&ro(), &args_at(p, None, None), &cfg, &last) {
            Some(Err(f)) => Some(f.code),
            Some(Ok(_)) => panic!("{p:?} was read"),
            None => None,
        };
        assert_eq!(code(&secret), Some(ErrorCode::ProtectedPath));
        // Following a symlink never followed since it was made updates its access time,
        // which a cached lookup leaves to the pool; once followed, it is answered now.
        if tmp_atime_rule(dir.path()) != Some(Atime::Never) {
            assert_eq!(code(&link), None);
        }
        let e = read_file(&ro(), &args_at(&link, None, None), &cfg, last.policy()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtectedPath);
        assert_eq!(code(&link), Some(ErrorCode::ProtectedPath));
        assert_eq!(code(dir.path()), Some(ErrorCode::IsADirectoryError));
        assert_eq!(
            code(&dir.path().join("fifo")),
            Some(ErrorCode::NotARegularFile)
        );
        assert_eq!(code(Path::new("relative")), Some(ErrorCode::InvalidPath));
        assert_eq!(code(&big), None);
        // Not found is the pool's to say (a cached lookup cannot tell it from "not cached").
        assert_eq!(code(&dir.path().join("missing")), None);
    }

    /// Differential test of the on-worker read (the fast path: `open_for_read_now` with
    /// `RESOLVE_CACHED`, the last resolution of the protected set, `RWF_NOWAIT` reads) against
    /// the blocking pool's (`open_for_read`, a fresh policy, plain reads) over generated trees:
    /// protected files and directories, symlinks into them, hard links, FIFOs, directories,
    /// missing paths and (as root) bind mounts. Whatever the fast path answers is the pool's
    /// answer; it may decline (`None`), never answer otherwise.
    #[test]
    fn the_read_now_answers_exactly_as_the_pool_on_generated_trees() {
        let _mounts = crate::testing::mount_table();
        let Some(probe) = local_tempdir() else { return };
        drop(probe);
        let (mut answered, mut refused, mut asked) = (0, 0, 0);
        for seed in 0..8 {
            let tree = crate::testing::GeneratedTree::new(seed, seed % 2 == 1);
            let protected = ProtectedPaths::new(tree.protected.clone());
            let small = ReadConfig {
                max_page_bytes: 40,
                max_line_bytes: 8,
                ..ReadConfig::default()
            };
            let pages = [(None, None), (Some(2), Some(1)), (Some(1), Some(1))];
            let pool = |a: &ReadFile, cfg: &ReadConfig| {
                read_file(&ro(), a, cfg, &protected.policy(Access::Read))
            };
            // The pool first: its reads leave each file's access time past its modification
            // time (a read that would update it is the pool's).
            for p in &tree.paths {
                let _ = pool(&args_at(p, None, None), &ReadConfig::default());
            }
            let last = resolved(&protected);
            for p in &tree.paths {
                for cfg in [ReadConfig::default(), small.clone()] {
                    for (offset, limit) in pages {
                        let a = args_at(p, offset, limit);
                        asked += 1;
                        let Some(now) = read_file_now(&ro(), &a, &cfg, &last) else {
                            continue;
                        };
                        let expected = pool(&a, &cfg);
                        assert_eq!(now, expected, "{p:?} {offset:?} {limit:?}, seed {seed}");
                        answered += 1;
                        refused += usize::from(
                            matches!(&now, Err(f) if f.code == ErrorCode::ProtectedPath),
                        );
                    }
                }
            }
        }
        eprintln!("{answered} of {asked} reads answered now, {refused} of them refusals");
        assert!(answered > 0 && refused > 0, "{answered} {refused}");
    }

    #[test]
    fn a_protected_set_that_changed_is_not_used() {
        let Some(dir) = local_tempdir() else { return };
        let secret = dir.path().join("secret");
        fresh_file(&secret, "token\n");
        let plain = dir.path().join("plain");
        fresh_file(&plain, "text\n");
        let protected = ProtectedPaths::new([secret.clone()]);
        let cfg = ReadConfig::default();
        let a = args_at(&plain, None, None);
        let (_, last) = first_read(&plain, &protected);
        assert!(read_file_now(&ro(), &a, &cfg, &last).is_some());
        // The store is rewritten by rename: a new inode the old resolution does not know.
        let new = dir.path().join("secret.new");
        std::fs::write(&new, "other\n").unwrap();
        std::fs::rename(&new, &secret).unwrap();
        assert_eq!(read_file_now(&ro(), &a, &cfg, &last), None);
        assert!(protected.current(Access::Read).is_none());
        let fresh = resolved(&protected);
        assert!(read_file_now(&ro(), &a, &cfg, &fresh).is_some());
        let s = args_at(&secret, None, None);
        assert_eq!(
            read_file_now(&ro(), &s, &cfg, &fresh)
                .unwrap()
                .unwrap_err()
                .code,
            ErrorCode::ProtectedPath
        );
    }

    #[test]
    fn a_file_that_never_ends_is_a_timeout_within_the_deadline_or_stopped_by_shutdown() {
        if std::fs::File::open("/proc/kmsg").is_err() {
            eprintln!("skipped: /proc/kmsg cannot be opened here");
            return;
        }
        let cfg = ReadConfig {
            timeout: Duration::from_millis(600),
            ..ReadConfig::default()
        };
        let start = Instant::now();
        let e = read_file(&ro(), &args("/proc/kmsg"), &cfg, &no_policy()).unwrap_err();
        let took = start.elapsed();
        assert_eq!(e.code, ErrorCode::TimeoutError, "{e}");
        assert!(
            e.message.starts_with("/proc/kmsg did not end within"),
            "{e}"
        );
        assert!(
            took >= cfg.timeout && took < Duration::from_secs(3),
            "{took:?}"
        );

        let start = Instant::now();
        let asked = std::sync::atomic::AtomicU32::new(0);
        let stop = || asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 2;
        let long = ReadConfig {
            timeout: Duration::from_secs(60),
            ..ReadConfig::default()
        };
        let e =
            read_file_until(&ro(), &args("/proc/kmsg"), &long, &no_policy(), &stop).unwrap_err();
        assert_eq!(e.code, ErrorCode::ShuttingDown, "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn pseudo_files_that_end_are_read_whole_and_disk_files_as_before() {
        let cfg = ReadConfig::default();
        // procfs says its files are empty; what they hold is read all the same.
        let out = read_file(&ro(), &args("/proc/self/status"), &cfg, &no_policy()).unwrap();
        assert!(out.content.contains("\tName:"), "{}", out.content);
        assert!(out.total_lines > 5 && out.total_lines_exact, "{out:?}");
        assert!(!stores_bytes(&File::open("/proc/self/status").unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x\n").unwrap();
        let on_disk = stores_bytes(&File::open(&f).unwrap());
        let real = std::fs::canonicalize(dir.path()).unwrap();
        if Mounts::read().unwrap().local(&real).is_some() {
            assert!(on_disk, "{f:?} is on a local disk or memory file system");
        }
    }

    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        let cfg = ReadConfig::default();
        let start = Instant::now();
        let e = read_file(&ro(), &args("/dev/zero"), &cfg, &no_policy()).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotARegularFile);
        assert_eq!(e.message, "/dev/zero is not a regular file");

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        crate::testing::mkfifo(&fifo);
        let e = read_file(&ro(), &args(fifo.to_str().unwrap()), &cfg, &no_policy()).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotARegularFile);

        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = read_file(&ro(), &args(sock.to_str().unwrap()), &cfg, &no_policy()).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotARegularFile);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn huge_sparse_file_answers_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ReadConfig::default();

        // 20 short lines, then a 10 GiB hole (one enormous line of NUL bytes).
        let path = dir.path().join("big");
        let head: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &head).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10 << 30)
            .unwrap();
        let start = Instant::now();
        let out = read_file(
            &ro(),
            &ReadFile {
                file_path: path.to_str().unwrap().to_string(),
                offset: None,
                limit: Some(10),
            },
            &cfg,
            &no_policy(),
        )
        .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(out.content.lines().count(), 10);
        assert!(out.truncated);
        assert!(!out.total_lines_exact);
        assert!(out.total_lines >= 20, "{}", out.total_lines);

        // Nothing but the hole: the first line is 10 GiB long.
        let path = dir.path().join("hole");
        File::create(&path).unwrap().set_len(10 << 30).unwrap();
        let start = Instant::now();
        let out = read_file(&ro(), &args(path.to_str().unwrap()), &cfg, &no_policy()).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(out.content.starts_with("   1\t\0"));
        assert!(out.content.ends_with(LINE_TRUNCATED));
        assert_eq!(out.content.len(), 5 + 32_768 + LINE_TRUNCATED.len());
        assert!(!out.total_lines_exact);
        assert_eq!(out.total_lines, 1);
        assert!(out.truncated, "the end was not seen");
    }

    #[test]
    fn os_message_drops_the_errno_suffix() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(paths::os_message(&e, "/x"), "Permission denied: /x");
    }
}
