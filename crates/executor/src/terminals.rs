//! Terminals: `terminal_open`, `terminal_send`, `terminal_read`, `terminal_resize`,
//! `terminal_list`, `terminal_close`.
//!
//! A terminal is a command (or the account's shell) on a pseudo-terminal, started exactly like
//! a command (same account, cgroup, view: [`crate::spawn::start_tty`]) whose screen the
//! executor keeps rendered with the `vt100` parser. Around it, shaped like [`crate::jobs`]:
//!
//! * **Ownership**: a terminal belongs to the token that opened it; for any other token it does
//!   not exist (`NotFound`, as for an id that never existed).
//! * **Reading**: `terminal_read` answers the rendered screen (rows joined by `\n`, trailing
//!   blanks cut), the cursor, and the output since the previous read as text (escape
//!   sequences removed by `vte`, the parser under `vt100`; at most [`MAX_TEXT`] bytes are kept
//!   between reads, the rest is counted as dropped). With `wait_for` (a regex) it first waits,
//!   up to 60 s, until the screen or the new output matches, the program ends, or the request
//!   is cancelled.
//! * **Sending**: text as is, then named keys as xterm sends them (arrows and Home/End in the
//!   cursor mode the program asked for).
//! * **Limits**: `MYMCP_TERMINAL_MAX_PER_TOKEN` open terminals per token and
//!   `MYMCP_TERMINAL_MAX` in all (`Busy` beyond; nothing queues).
//! * **End**: the program exits, `terminal_close`, no send and no read for
//!   `MYMCP_TERMINAL_IDLE_SEC`, or the executor's shutdown: SIGHUP to the process group, up to
//!   [`HANGUP_GRACE`], then SIGKILL to the group and its cgroup. An ended terminal can still be
//!   read (its last screen) until it is closed or [`KEEP_ENDED`] has passed.
//! * **Recording**: everything the program writes, and each resize, goes to an asciicast v2
//!   file `<MYMCP_STATE_DIR>/terminals/<id>.cast` (directory 0700, file 0600). Input is not
//!   recorded (it may be a password typed at a prompt; its echo, if any, is output). The
//!   `terminal_open` and `terminal_close` audit records name the file, and the
//!   `terminal_finished` record of every end gives its size and SHA-256. Recordings are
//!   deleted `MYMCP_TERMINAL_RECORDING_RETENTION_SEC` after their last change; `mymcpctl
//!   terminal list|replay` shows them.

use crate::audit::{Actor, Audit, Outcome};
use crate::auth::{Authorized, Rw};
use crate::limits::{PerToken, TokenSlot};
use crate::server::{CancelSignal, ShutdownWatch, Stop};
use crate::spawn::{self, BashConfig, CommandSpec, Control, Controller, Sink, StopReason};
use mymcp_protocol::{
    BashExecute, CallOrigin, ErrorCode, TerminalInfo, TerminalOpen, TerminalRead, TerminalResize,
    TerminalScreen, TerminalSend, TokenDigest, ToolFailure,
};
use mymcp_sys::process::GroupSignal;
use mymcp_sys::pty::Master;
use mymcp_tokens::clock;
use regex_automata::meta::Regex;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Text output kept between two reads; older text is dropped (and counted).
const MAX_TEXT: usize = 64 * 1024;
/// Longest `text` of one `terminal_send`, in bytes.
const MAX_SEND_BYTES: usize = 64 * 1024;
/// Most keys in one `terminal_send`.
const MAX_KEYS: usize = 256;
/// Longest `wait_for`, in bytes.
const MAX_PATTERN_BYTES: usize = 1024;
/// Longest wait of `terminal_read`, and its default with `wait_for`.
const MAX_WAIT_SECS: i64 = 60;
const DEFAULT_WAIT_SECS: i64 = 10;
/// Between SIGHUP and SIGKILL when a terminal is closed, idle or shut down.
const HANGUP_GRACE: Duration = Duration::from_secs(1);
/// How long a write to the terminal may wait for the program to read.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// An ended terminal's record (its last screen) is dropped this long after its end.
const KEEP_ENDED: Duration = Duration::from_secs(600);
/// Screen size bounds and defaults.
const ROWS: (i64, i64, i64) = (2, 500, 24);
const COLS: (i64, i64, i64) = (10, 500, 80);
/// Largest recording; what a terminal writes past it is counted, not recorded (a program that
/// prints without end must not fill the state directory).
const MAX_RECORDING_BYTES: u64 = 64 * 1024 * 1024;
/// How long a terminal may live at most (its "deadline" for the shared supervisor).
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// Settings of the terminal subsystem.
#[derive(Clone, Debug)]
pub(crate) struct TerminalConfig {
    /// `<MYMCP_STATE_DIR>/terminals`.
    pub(crate) dir: PathBuf,
    pub(crate) idle: Duration,
    pub(crate) retention: Duration,
    pub(crate) max_per_token: usize,
    pub(crate) max_total: usize,
}

impl TerminalConfig {
    /// The defaults for a state directory.
    pub(crate) fn new(state_dir: &Path) -> TerminalConfig {
        TerminalConfig {
            dir: state_dir.join("terminals"),
            idle: Duration::from_secs(mymcp_settings::TERMINAL_IDLE_SEC.default()),
            retention: Duration::from_secs(
                mymcp_settings::TERMINAL_RECORDING_RETENTION_SEC.default(),
            ),
            max_per_token: mymcp_settings::TERMINAL_MAX_PER_TOKEN.default() as usize,
            max_total: mymcp_settings::TERMINAL_MAX.default() as usize,
        }
    }
}

/// The terminal table.
#[derive(Debug)]
pub(crate) struct Terminals {
    cfg: TerminalConfig,
    unavailable: Option<String>,
    open: PerToken,
    /// Running terminals in all, against `max_total`.
    total: Arc<AtomicUsize>,
    table: Mutex<HashMap<String, Arc<Terminal>>>,
    audit: Arc<Audit>,
}

#[derive(Debug)]
struct Terminal {
    id: String,
    owner: TokenDigest,
    owner_name: String,
    actor: Actor,
    command: String,
    started_at: SystemTime,
    started: Instant,
    recording: PathBuf,
    master: Arc<AsyncFd<Master>>,
    state: Mutex<TermState>,
    /// Bumped on new output and at the end.
    changed: watch::Sender<()>,
    control: mpsc::Sender<Close>,
}

/// Why the supervisor is asked to end a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    Close,
}

struct TermState {
    screen: vt100::Parser,
    text_parser: vte::Parser,
    text: Text,
    rows: u16,
    cols: u16,
    last_active: Instant,
    exit_code: Option<i32>,
    /// The program's output reached EOF (everything it wrote is parsed).
    drained: bool,
    cast: Cast,
}

impl std::fmt::Debug for TermState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TermState")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("exit_code", &self.exit_code)
            .finish_non_exhaustive()
    }
}

/// Output as plain text: printed characters, newlines and tabs.
#[derive(Debug, Default)]
struct Text {
    buf: String,
    dropped: u64,
}

impl vte::Perform for Text {
    fn print(&mut self, c: char) {
        self.buf.push(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => self.buf.push('\n'),
            b'\t' => self.buf.push('\t'),
            _ => {}
        }
    }
}

impl Text {
    fn bound(&mut self) {
        if self.buf.len() > MAX_TEXT {
            let mut cut = self.buf.len() - MAX_TEXT;
            while !self.buf.is_char_boundary(cut) {
                cut += 1;
            }
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }
}

/// The asciicast v2 recording of one terminal.
struct Cast {
    file: Option<File>,
    start: Instant,
    /// The end of a UTF-8 sequence cut by a read, for the next event.
    pending: Vec<u8>,
    bytes: u64,
    /// At most this many bytes are written ([`MAX_RECORDING_BYTES`]).
    max: u64,
    /// Bytes of events left out because the recording was full.
    dropped: u64,
    sha: Sha256,
    /// Set once the terminal has ended.
    sha256: Option<String>,
}

impl Cast {
    fn new(file: File, max: u64) -> Cast {
        Cast {
            file: Some(file),
            start: Instant::now(),
            pending: Vec::new(),
            bytes: 0,
            max,
            dropped: 0,
            sha: Sha256::new(),
            sha256: None,
        }
    }

    fn line(&mut self, line: &str) {
        let Some(file) = &mut self.file else { return };
        let mut line = line.to_owned();
        line.push('\n');
        if self.bytes + line.len() as u64 > self.max {
            self.dropped += line.len() as u64;
            return;
        }
        match file.write_all(line.as_bytes()) {
            Ok(()) => {
                self.bytes += line.len() as u64;
                self.sha.update(line.as_bytes());
            }
            Err(e) => {
                tracing::warn!("cannot write a terminal recording ({e}); it stops here");
                self.file = None;
            }
        }
    }

    fn event(&mut self, kind: &str, data: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let line = serde_json::to_string(&json!([(t * 1e6).round() / 1e6, kind, data]))
            .expect("an event serializes");
        self.line(&line);
    }

    fn output(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let keep = complete_utf8_prefix(&self.pending);
        if keep == 0 {
            return;
        }
        let rest = self.pending.split_off(keep);
        let data = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        self.event("o", &data);
    }

    fn finish(&mut self) {
        if !self.pending.is_empty() {
            let data = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            self.event("o", &data);
        }
        if let Some(file) = self.file.take() {
            let _ = file.sync_data();
        }
        if self.sha256.is_none() {
            self.sha256 = Some(mymcp_audit::hex(&self.sha.clone().finalize()));
        }
    }
}

/// The length of `buf` without a UTF-8 sequence cut at its end.
fn complete_utf8_prefix(buf: &[u8]) -> usize {
    let start = buf.len().saturating_sub(3);
    for i in (start..buf.len()).rev() {
        let b = buf[i];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue;
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return buf.len(),
        };
        return if buf.len() - i < need { i } else { buf.len() };
    }
    buf.len()
}

impl Terminal {
    fn lock(&self) -> MutexGuard<'_, TermState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn info(&self) -> TerminalInfo {
        let state = self.lock();
        TerminalInfo {
            terminal_id: self.id.clone(),
            command: self.command.clone(),
            rows: state.rows,
            cols: state.cols,
            running: state.exit_code.is_none(),
            exit_code: state.exit_code,
            started_at: rfc3339(self.started_at),
            recording: self.recording.display().to_string(),
            recording_bytes: state.cast.bytes,
            recording_sha256: state.cast.sha256.clone(),
        }
    }

    fn ended(&self) -> bool {
        self.lock().exit_code.is_some()
    }

    fn touch(&self) {
        self.lock().last_active = Instant::now();
    }

    async fn wait_ended(&self, timeout: Duration) -> bool {
        let mut changed = self.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if self.ended() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.ended(),
            }
        }
    }

    /// Feeds the program's output into the screen, the text and the recording.
    fn feed(&self, bytes: &[u8]) {
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            state.screen.process(bytes);
            state.text_parser.advance(&mut state.text, bytes);
            state.text.bound();
            state.cast.output(bytes);
        }
        self.changed.send_replace(());
    }
}

fn rfc3339(t: SystemTime) -> String {
    clock::rfc3339(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64)
}

fn not_found(id: &str) -> ToolFailure {
    let shown: String = id.chars().take(64).collect();
    ToolFailure::new(ErrorCode::NotFound, format!("Terminal not found: {shown}"))
        .with_suggestion("terminal_list shows your terminals; closed and idle ones are gone")
}

fn invalid(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::InvalidArguments, message)
}

fn internal(what: &str, e: &io::Error) -> ToolFailure {
    ToolFailure::new(ErrorCode::InternalError, format!("{what}: {e}"))
}

fn clamp_size(v: Option<i64>, (min, max, default): (i64, i64, i64)) -> u16 {
    v.unwrap_or(default).clamp(min, max) as u16
}

/// Deletes recordings whose last change is older than `retention`.
fn expire_recordings(dir: &Path, retention: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".cast")) else {
            continue;
        };
        if !crate::jobs::is_job_id(id) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > retention);
        if old {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), "cannot delete an old terminal recording: {e}");
            }
        }
    }
}

/// What the supervisor of a terminal obeys: `terminal_close`, the idle timeout, shutdown.
struct TermControls {
    close: mpsc::Receiver<Close>,
    close_open: bool,
    shutdown: ShutdownWatch,
    terminal: Weak<Terminal>,
    idle: Duration,
    /// Why the terminal is being ended, once it is.
    ending: Option<(EndedBy, Instant)>,
}

/// How a terminal ended, as its `terminal_finished` record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndedBy {
    Exit,
    Close,
    Idle,
    Shutdown,
}

impl EndedBy {
    fn as_str(self) -> &'static str {
        match self {
            EndedBy::Exit => "exit",
            EndedBy::Close => "terminal_close",
            EndedBy::Idle => "idle",
            EndedBy::Shutdown => "shutdown",
        }
    }
}

impl Controller for TermControls {
    async fn next(&mut self) -> Control {
        loop {
            // After SIGHUP: SIGKILL (group and cgroup) once the grace is over.
            if let Some((_, at)) = self.ending {
                tokio::time::sleep_until(at + HANGUP_GRACE).await;
                return Control::Stop(StopReason::Client);
            }
            let idle_at = match self.terminal.upgrade() {
                Some(t) => t.lock().last_active + self.idle,
                None => Instant::now() + self.idle,
            };
            tokio::select! {
                c = self.close.recv(), if self.close_open => match c {
                    Some(Close::Close) => {
                        self.ending = Some((EndedBy::Close, Instant::now()));
                        return Control::Signal(GroupSignal::Hup);
                    }
                    None => self.close_open = false,
                },
                () = tokio::time::sleep_until(idle_at) => {
                    let idle_now = self
                        .terminal
                        .upgrade()
                        .is_some_and(|t| t.lock().last_active + self.idle <= Instant::now());
                    if idle_now {
                        self.ending = Some((EndedBy::Idle, Instant::now()));
                        return Control::Signal(GroupSignal::Hup);
                    }
                }
                stop = self.shutdown.next() => {
                    return match stop {
                        Stop::Terminate => {
                            self.ending = Some((EndedBy::Shutdown, Instant::now()));
                            Control::Signal(GroupSignal::Hup)
                        }
                        Stop::Cancel | Stop::Kill => {
                            self.ending = Some((EndedBy::Shutdown, Instant::now()));
                            Control::Stop(StopReason::Shutdown)
                        }
                    };
                }
            }
        }
    }
}

/// One of the `max_total` running terminals, given back when dropped.
struct TotalSlot(Arc<AtomicUsize>);

impl Drop for TotalSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Output of a terminal has no pipes: the supervisor's sinks stay empty.
struct NoSink;

impl Sink for NoSink {
    fn push(&mut self, _bytes: &[u8]) {}
}

/// The xterm bytes of a named key, in the given cursor mode.
fn key_bytes(name: &str, app_cursor: bool) -> Option<Vec<u8>> {
    let lower = name.trim().to_ascii_lowercase();
    let csi = |normal: &str, app: &str| {
        Some(
            if app_cursor {
                format!("\x1bO{app}")
            } else {
                format!("\x1b[{normal}")
            }
            .into_bytes(),
        )
    };
    let fixed = |s: &str| Some(s.as_bytes().to_vec());
    match lower.as_str() {
        "enter" | "return" => fixed("\r"),
        "tab" => fixed("\t"),
        "backtab" | "shift-tab" => fixed("\x1b[Z"),
        "escape" | "esc" => fixed("\x1b"),
        "backspace" => fixed("\x7f"),
        "space" => fixed(" "),
        "up" => csi("A", "A"),
        "down" => csi("B", "B"),
        "right" => csi("C", "C"),
        "left" => csi("D", "D"),
        "home" => csi("H", "H"),
        "end" => csi("F", "F"),
        "pageup" => fixed("\x1b[5~"),
        "pagedown" => fixed("\x1b[6~"),
        "insert" => fixed("\x1b[2~"),
        "delete" => fixed("\x1b[3~"),
        "f1" => fixed("\x1bOP"),
        "f2" => fixed("\x1bOQ"),
        "f3" => fixed("\x1bOR"),
        "f4" => fixed("\x1bOS"),
        "f5" => fixed("\x1b[15~"),
        "f6" => fixed("\x1b[17~"),
        "f7" => fixed("\x1b[18~"),
        "f8" => fixed("\x1b[19~"),
        "f9" => fixed("\x1b[20~"),
        "f10" => fixed("\x1b[21~"),
        "f11" => fixed("\x1b[23~"),
        "f12" => fixed("\x1b[24~"),
        _ => {
            // Ctrl-X, Ctrl+X, C-x, ^X.
            let rest = ["ctrl-", "ctrl+", "c-", "^"]
                .iter()
                .find_map(|p| lower.strip_prefix(p))?;
            let [c] = rest.as_bytes() else { return None };
            let code = match c {
                b'a'..=b'z' => c - b'a' + 1,
                b'@' | b' ' | b'2' => 0,
                b'[' => 0x1b,
                b'\\' => 0x1c,
                b']' => 0x1d,
                b'^' => 0x1e,
                b'_' => 0x1f,
                b'?' => 0x7f,
                _ => return None,
            };
            Some(vec![code])
        }
    }
}

/// The screen as text: rows with trailing blanks cut, trailing empty rows dropped.
fn screen_text(screen: &vt100::Screen) -> String {
    rendered(screen, None)
}

/// The screen as `wait_for` sees it: [`screen_text`], except that the cursor's row keeps its
/// blanks up to the cursor, so that a prompt ending in a space (`>>> `, `$ `) matches.
fn screen_for_match(screen: &vt100::Screen) -> String {
    rendered(screen, Some(screen.cursor_position()))
}

/// The screen's rows with trailing blanks cut (on the `cursor` row, `(row, col)`, only those
/// beyond the cursor), trailing empty rows dropped.
fn rendered(screen: &vt100::Screen, cursor: Option<(u16, u16)>) -> String {
    let (_, cols) = screen.size();
    let rows: Vec<String> = screen
        .rows(0, cols)
        .enumerate()
        .map(|(i, r)| {
            let mut row = r.trim_end().to_owned();
            if let Some((_, cursor_col)) = cursor.filter(|(r, _)| usize::from(*r) == i) {
                let width = row.chars().count();
                let pad = usize::from(cursor_col).saturating_sub(width);
                row.extend(std::iter::repeat_n(' ', pad));
            }
            row
        })
        .collect();
    let last = rows
        .iter()
        .rposition(|r| !r.is_empty())
        .map_or(0, |i| i + 1);
    rows[..last].join("\n")
}

impl Terminals {
    /// Prepares the terminals directory and deletes expired recordings. Without a usable
    /// directory terminals are unavailable (each open says why).
    pub(crate) fn open(cfg: TerminalConfig, audit: Arc<Audit>) -> Terminals {
        let unavailable = match crate::jobs::prepare_dir(&cfg.dir) {
            Ok(()) => {
                expire_recordings(&cfg.dir, cfg.retention);
                None
            }
            Err(e) => {
                let why = format!("cannot use {}: {e}", cfg.dir.display());
                tracing::warn!("terminals are unavailable: {why}");
                Some(why)
            }
        };
        Terminals {
            open: PerToken::new(cfg.max_per_token),
            total: Arc::default(),
            cfg,
            unavailable,
            table: Mutex::default(),
            audit,
        }
    }

    /// A table that refuses every open (no state directory configured).
    pub(crate) fn disabled() -> Terminals {
        let cfg = TerminalConfig::new(Path::new("/nonexistent"));
        Terminals {
            open: PerToken::new(cfg.max_per_token),
            total: Arc::default(),
            cfg,
            unavailable: Some("no state directory is configured".into()),
            table: Mutex::default(),
            audit: Arc::new(Audit::disabled(Arc::default())),
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Terminal>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn find(&self, auth: &Authorized<Rw>, id: &str) -> Result<Arc<Terminal>, ToolFailure> {
        if !crate::jobs::is_job_id(id) {
            return Err(not_found(id));
        }
        match self.table().get(id) {
            // Someone else's terminal is answered exactly like a missing one.
            Some(t) if t.owner == *auth.token() => Ok(t.clone()),
            _ => Err(not_found(id)),
        }
    }

    /// `terminal_open`.
    pub(crate) fn start(
        self: &Arc<Self>,
        auth: &Authorized<Rw>,
        origin: &CallOrigin,
        args: &TerminalOpen,
        bash: &BashConfig,
        shutdown: ShutdownWatch,
    ) -> Result<TerminalInfo, ToolFailure> {
        if let Some(why) = &self.unavailable {
            return Err(ToolFailure::new(
                ErrorCode::InternalError,
                format!("Terminals are unavailable: {why}"),
            )
            .with_suggestion("Check MYMCP_STATE_DIR, or use bash_execute"));
        }
        let command = args.command.clone().unwrap_or_default();
        let spec = CommandSpec::check(
            auth,
            &BashExecute {
                command: command.clone(),
                timeout: None,
                working_dir: args.working_dir.clone(),
                max_output_bytes: None,
                background: false,
                handoff_after: None,
            },
        )?;
        let max_total = self.cfg.max_total;
        let reserved = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_total).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            return Err(ToolFailure::new(
                ErrorCode::Busy,
                format!(
                    "Too many terminals are open on this server (limit {})",
                    max_total
                ),
            )
            .with_suggestion("Close a terminal with terminal_close, or try again later"));
        }
        let total_slot = TotalSlot(self.total.clone());
        let slot: TokenSlot = self.open.acquire(auth.token()).ok_or_else(|| {
            ToolFailure::new(
                ErrorCode::Busy,
                format!(
                    "Too many terminals are open for this token (limit {})",
                    self.open.max()
                ),
            )
            .with_suggestion("Close one with terminal_close")
        })?;
        let (rows, cols) = (clamp_size(args.rows, ROWS), clamp_size(args.cols, COLS));
        let id = crate::jobs::new_job_id().map_err(|e| internal("cannot make an id", &e))?;
        let recording = self.cfg.dir.join(format!("{id}.cast"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&recording)
            .map_err(|e| internal("cannot create the terminal's recording", &e))?;
        let pty = mymcp_sys::pty::open(rows, cols)
            .map_err(|e| internal("cannot open a pseudo-terminal", &e));
        let started = pty.and_then(|pty| {
            let started = spawn::start_tty(auth, &spec, bash, pty.slave.as_fd())?;
            // The program has the slave now: once it (and its children) close it, reading the
            // master ends.
            drop(pty.slave);
            let master = mymcp_sys::pty::register(pty.master)
                .map_err(|e| internal("cannot watch the pseudo-terminal", &e))?;
            Ok((started, master))
        });
        let (started, master) = match started {
            Ok(s) => s,
            Err(f) => {
                let _ = std::fs::remove_file(&recording);
                return Err(f);
            }
        };
        let shown = if command.is_empty() {
            if auth.account().acts() && !auth.account().shell.is_empty() {
                auth.account().shell.clone()
            } else {
                bash.shell.display().to_string()
            }
        } else {
            command
        };
        let now = SystemTime::now();
        let mut cast = Cast::new(file, MAX_RECORDING_BYTES);
        let header = json!({
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "command": shown,
            "env": { "TERM": "xterm-256color" },
        });
        cast.line(&header.to_string());
        let (control, close) = mpsc::channel(4);
        let terminal = Arc::new(Terminal {
            id: id.clone(),
            owner: *auth.token(),
            owner_name: auth.identity().name.clone(),
            actor: Actor::token(auth.identity(), origin)
                .with_account(&auth.account().name, auth.account().uid),
            command: shown,
            started_at: now,
            started: Instant::now(),
            recording,
            master: Arc::new(master),
            state: Mutex::new(TermState {
                screen: vt100::Parser::new(rows, cols, 0),
                text_parser: vte::Parser::new(),
                text: Text::default(),
                rows,
                cols,
                last_active: Instant::now(),
                exit_code: None,
                drained: false,
                cast,
            }),
            changed: watch::Sender::new(()),
            control,
        });
        self.table().insert(id, terminal.clone());
        tracing::info!(terminal_id = %terminal.id, token = %terminal.owner_name, pgid = started.pgid(), "terminal opened");

        // The reader: the program's output into the screen, the text and the recording,
        // until the pseudo-terminal has no writer left.
        let reader = tokio::spawn({
            let terminal = terminal.clone();
            async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let Ok(mut ready) = terminal.master.readable().await else {
                        break;
                    };
                    match ready.try_io(|fd| fd.get_ref().read(&mut buf)) {
                        Ok(Ok(0)) => break,
                        Ok(Ok(n)) => terminal.feed(&buf[..n]),
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        // EIO: no process has the slave open any more.
                        Ok(Err(_)) => break,
                        Err(_would_block) => {}
                    }
                }
                terminal.lock().drained = true;
                terminal.changed.send_replace(());
            }
        });

        let mut controls = TermControls {
            close,
            close_open: true,
            shutdown,
            terminal: Arc::downgrade(&terminal),
            idle: self.cfg.idle,
            ending: None,
        };
        let terminals = Arc::downgrade(self);
        let audit = self.audit.clone();
        let grace = bash.kill_grace;
        let supervised = terminal.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + MAX_LIFETIME;
            let finished = started
                .supervise(&mut NoSink, &mut NoSink, &mut controls, deadline, grace)
                .await;
            // The group and the cgroup are gone: the last output is read within moments.
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
            drop((slot, total_slot));
            let terminal = supervised;
            let ended_by = controls.ending.map_or(EndedBy::Exit, |(by, _)| by);
            terminal.lock().cast.finish();
            tracing::info!(terminal_id = %terminal.id, token = %terminal.owner_name, ended_by = ended_by.as_str(), exit_code = finished.exit_code, "terminal ended");
            // In the log before anyone learns of the end (terminal_close answers after it).
            audit_end(&audit, &terminal, ended_by, finished.exit_code);
            terminal.lock().exit_code = Some(finished.exit_code);
            terminal.changed.send_replace(());
            drop(controls);
            if let Some(terminals) = terminals.upgrade() {
                terminals.ended(&terminal);
            }
        });
        Ok(terminal.info())
    }

    /// Once a terminal has ended: its record goes after [`KEEP_ENDED`] (or at close), old
    /// recordings are deleted.
    fn ended(self: &Arc<Self>, terminal: &Arc<Terminal>) {
        let terminals = Arc::downgrade(self);
        let id = terminal.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_ENDED).await;
            if let Some(t) = terminals.upgrade() {
                t.table().remove(&id);
            }
        });
        let (dir, retention) = (self.cfg.dir.clone(), self.cfg.retention);
        tokio::task::spawn_blocking(move || expire_recordings(&dir, retention));
    }

    /// `terminal_send`: `text`, then each key, written to the terminal.
    pub(crate) async fn send(
        &self,
        auth: &Authorized<Rw>,
        args: &TerminalSend,
    ) -> Result<u64, ToolFailure> {
        let terminal = self.find(auth, &args.terminal_id)?;
        let text = args.text.as_deref().unwrap_or("");
        if text.len() > MAX_SEND_BYTES {
            return Err(invalid(format!(
                "text is {} bytes, at most {MAX_SEND_BYTES} are sent at once",
                text.len()
            )));
        }
        if args.keys.len() > MAX_KEYS {
            return Err(invalid(format!("at most {MAX_KEYS} keys are sent at once")));
        }
        let app_cursor = terminal.lock().screen.screen().application_cursor();
        let mut bytes = text.as_bytes().to_vec();
        for key in &args.keys {
            let Some(b) = key_bytes(key, app_cursor) else {
                let shown: String = key.chars().take(32).collect();
                return Err(invalid(format!("unknown key {shown:?}")).with_suggestion(
                    "Keys: Enter, Tab, Escape, Backspace, Up, Down, Left, Right, Home, End, \
                     PageUp, PageDown, Delete, F1-F12, Ctrl-A..Ctrl-Z; other text goes in text",
                ));
            };
            bytes.extend_from_slice(&b);
        }
        if terminal.ended() {
            return Err(ToolFailure::new(
                ErrorCode::InvalidArguments,
                "The terminal's program has ended: nothing can be sent to it",
            )
            .with_suggestion("Read its last screen with terminal_read, then terminal_close it"));
        }
        terminal.touch();
        let deadline = Instant::now() + SEND_TIMEOUT;
        let mut sent = 0;
        while sent < bytes.len() {
            let ready = tokio::time::timeout_at(deadline, terminal.master.writable()).await;
            let Ok(Ok(mut ready)) = ready else {
                return Err(ToolFailure::new(
                    ErrorCode::Busy,
                    format!(
                        "The program did not read its input: {sent} of {} bytes sent",
                        bytes.len()
                    ),
                ));
            };
            match ready.try_io(|fd| fd.get_ref().write(&bytes[sent..])) {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(internal("cannot write to the terminal", &e)),
                Err(_would_block) => {}
            }
        }
        Ok(sent as u64)
    }

    /// `terminal_read`.
    pub(crate) async fn read(
        &self,
        auth: &Authorized<Rw>,
        args: &TerminalRead,
        cancel: &mut CancelSignal,
    ) -> Result<TerminalScreen, ToolFailure> {
        let terminal = self.find(auth, &args.terminal_id)?;
        let pattern = match args.wait_for.as_deref() {
            None | Some("") => None,
            Some(p) if p.len() > MAX_PATTERN_BYTES => {
                return Err(invalid(format!(
                    "wait_for is {} bytes, at most {MAX_PATTERN_BYTES}",
                    p.len()
                )))
            }
            Some(p) => Some(
                Regex::builder()
                    .configure(
                        Regex::config()
                            .nfa_size_limit(Some(1 << 20))
                            .hybrid_cache_capacity(1 << 20),
                    )
                    .build(p)
                    .map_err(|e| invalid(format!("wait_for is not a valid regex: {e}")))?,
            ),
        };
        let wait = args
            .timeout
            .unwrap_or(if pattern.is_some() {
                DEFAULT_WAIT_SECS
            } else {
                0
            })
            .clamp(0, MAX_WAIT_SECS) as u64;
        terminal.touch();
        let deadline = Instant::now() + Duration::from_secs(wait);
        let mut changed = terminal.changed.subscribe();
        let mut matched = false;
        if let Some(re) = &pattern {
            loop {
                let done = {
                    let state = terminal.lock();
                    matched = re.is_match(state.text.buf.as_str())
                        || re.is_match(screen_for_match(state.screen.screen()).as_str());
                    matched || (state.exit_code.is_some() && state.drained)
                };
                if done {
                    break;
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { break },
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = cancel.next() => break,
                }
            }
        }
        terminal.touch();
        let mut state = terminal.lock();
        let screen = state.screen.screen();
        let (cursor_row, cursor_col) = screen.cursor_position();
        let text = screen_text(screen);
        let output = std::mem::take(&mut state.text.buf);
        let output_dropped = std::mem::take(&mut state.text.dropped);
        Ok(TerminalScreen {
            terminal_id: terminal.id.clone(),
            screen: text,
            cursor_row,
            cursor_col,
            output,
            output_dropped,
            matched,
            running: state.exit_code.is_none(),
            exit_code: state.exit_code,
        })
    }

    /// `terminal_resize`: the new size reaches the program (SIGWINCH) and the recording.
    pub(crate) fn resize(
        &self,
        auth: &Authorized<Rw>,
        args: &TerminalResize,
    ) -> Result<TerminalInfo, ToolFailure> {
        let terminal = self.find(auth, &args.terminal_id)?;
        {
            let mut state = terminal.lock();
            let rows = args.rows.map_or(state.rows, |r| clamp_size(Some(r), ROWS));
            let cols = args.cols.map_or(state.cols, |c| clamp_size(Some(c), COLS));
            if state.exit_code.is_none() {
                mymcp_sys::pty::set_size(terminal.master.get_ref().as_fd(), rows, cols)
                    .map_err(|e| internal("cannot resize the terminal", &e))?;
            }
            state.screen.screen_mut().set_size(rows, cols);
            state.rows = rows;
            state.cols = cols;
            state.last_active = Instant::now();
            state.cast.event("r", &format!("{cols}x{rows}"));
        }
        Ok(terminal.info())
    }

    /// `terminal_list`: the caller's terminals, oldest first.
    pub(crate) fn list(&self, auth: &Authorized<Rw>) -> Vec<TerminalInfo> {
        let mut mine: Vec<Arc<Terminal>> = self
            .table()
            .values()
            .filter(|t| t.owner == *auth.token())
            .cloned()
            .collect();
        mine.sort_by_key(|t| (t.started, t.id.clone()));
        mine.iter().map(|t| t.info()).collect()
    }

    /// `terminal_close`: ends the program (SIGHUP, then SIGKILL) and forgets the terminal.
    pub(crate) async fn close(
        &self,
        auth: &Authorized<Rw>,
        id: &str,
    ) -> Result<TerminalInfo, ToolFailure> {
        let terminal = self.find(auth, id)?;
        if !terminal.ended() {
            let _ = terminal.control.send(Close::Close).await;
            terminal
                .wait_ended(HANGUP_GRACE + Duration::from_secs(4))
                .await;
        }
        self.table().remove(&terminal.id);
        Ok(terminal.info())
    }
}

/// Writes the `terminal_finished` record (best effort: the terminal has ended either way).
fn audit_end(audit: &Audit, terminal: &Terminal, ended_by: EndedBy, exit_code: i32) {
    let info = terminal.info();
    let dropped = terminal.lock().cast.dropped;
    let params = json!({
        "terminal_id": terminal.id,
        "command": crate::audit::param(&terminal.command),
    });
    let op = audit.operation("terminal_finished", terminal.actor.clone(), params);
    let duration = Some(terminal.started.elapsed());
    audit.op_outcome(
        &op,
        Outcome::ok(duration, None).with_output(json!({
            "ended_by": ended_by.as_str(),
            "exit_code": exit_code,
            "recording": info.recording,
            "recording_bytes": info.recording_bytes,
            "recording_sha256": info.recording_sha256,
            "recording_dropped_bytes": dropped,
        })),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_xterm_sequences() {
        assert_eq!(key_bytes("Enter", false).unwrap(), b"\r");
        assert_eq!(key_bytes("ctrl-c", false).unwrap(), b"\x03");
        assert_eq!(key_bytes("Ctrl+D", false).unwrap(), b"\x04");
        assert_eq!(key_bytes("^[", false).unwrap(), b"\x1b");
        assert_eq!(key_bytes("Up", false).unwrap(), b"\x1b[A");
        assert_eq!(key_bytes("Up", true).unwrap(), b"\x1bOA");
        assert_eq!(key_bytes("F5", false).unwrap(), b"\x1b[15~");
        assert!(key_bytes("Hyper-Q", false).is_none());
        assert!(key_bytes("Ctrl-CC", false).is_none());
    }

    #[test]
    fn text_keeps_printed_characters_and_newlines() {
        let mut text = Text::default();
        let mut parser = vte::Parser::new();
        parser.advance(&mut text, b"\x1b[1;31mred\x1b[0m\r\n\x1b]0;title\x07ok\tx");
        assert_eq!(text.buf, "red\nok\tx");
    }

    #[test]
    fn screens_are_cut_at_trailing_blanks() {
        let mut parser = vt100::Parser::new(5, 20, 0);
        parser.process(b"one   \r\n\r\nthree\r\n");
        assert_eq!(screen_text(parser.screen()), "one\n\nthree");
    }

    #[test]
    fn a_prompt_keeps_its_space_for_matching() {
        let mut parser = vt100::Parser::new(5, 20, 0);
        parser.process(b"42\r\n>>> ");
        assert_eq!(screen_text(parser.screen()), "42\n>>>");
        assert_eq!(screen_for_match(parser.screen()), "42\n>>> ");
    }

    #[test]
    fn old_recordings_are_deleted_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        for name in [
            "0123456789abcdef.cast",
            "fedcba9876543210.cast",
            "notes.cast",
            "0123456789abcdef.txt",
        ] {
            let f = File::create(dir.path().join(name)).unwrap();
            if name != "fedcba9876543210.cast" {
                f.set_modified(old).unwrap();
            }
        }
        expire_recordings(dir.path(), Duration::from_secs(60));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "0123456789abcdef.txt",
                "fedcba9876543210.cast",
                "notes.cast"
            ]
        );
    }

    #[test]
    fn a_full_recording_counts_what_it_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0123456789abcdef.cast");
        let mut cast = Cast::new(File::create(&path).unwrap(), 100);
        cast.line(r#"{"version":2,"width":80,"height":24}"#);
        for _ in 0..10 {
            cast.output(b"0123456789");
        }
        cast.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= 100, "{text}");
        assert_eq!(cast.bytes, text.len() as u64);
        assert!(cast.dropped > 0);
        // What was written is whole lines, each valid JSON, and the hash is of exactly them.
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert_eq!(
            cast.sha256.as_deref(),
            Some(mymcp_audit::hex(&Sha256::digest(text.as_bytes())).as_str())
        );
    }

    #[test]
    fn cut_utf8_waits_for_its_end() {
        assert_eq!(complete_utf8_prefix("é".as_bytes()), 2);
        assert_eq!(complete_utf8_prefix(&"é".as_bytes()[..1]), 0);
        assert_eq!(complete_utf8_prefix(b"ab\xe2\x82"), 2);
    }
}
