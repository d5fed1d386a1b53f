//! Typed tool calls, their results and the closed set of failure codes.
//!
//! JSON never crosses the socket: the frontend decodes MCP `tools/call` arguments into these
//! types (rejecting wrong types and missing fields), and the executor re-validates every value
//! as if it came from an attacker (clamps, length limits, absolute paths).

use crate::{PrepareDownload, PrepareUpload, Role, TransferGrant};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The tools this build offers. Names are the MCP tool names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ToolName {
    BashExecute,
    ReadFile,
    WriteFile,
    EditFile,
    Glob,
    Grep,
    JobStatus,
    JobOutput,
    JobKill,
    PrepareUpload,
    PrepareDownload,
    ServerOverview,
    TerminalOpen,
    TerminalSend,
    TerminalRead,
    TerminalResize,
    TerminalList,
    TerminalClose,
}

impl ToolName {
    /// Every tool, in the order `tools/list` shows them.
    pub const ALL: [ToolName; 18] = [
        ToolName::BashExecute,
        ToolName::ReadFile,
        ToolName::WriteFile,
        ToolName::EditFile,
        ToolName::Glob,
        ToolName::Grep,
        ToolName::JobStatus,
        ToolName::JobOutput,
        ToolName::JobKill,
        ToolName::PrepareUpload,
        ToolName::PrepareDownload,
        ToolName::ServerOverview,
        ToolName::TerminalOpen,
        ToolName::TerminalSend,
        ToolName::TerminalRead,
        ToolName::TerminalResize,
        ToolName::TerminalList,
        ToolName::TerminalClose,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ToolName::BashExecute => "bash_execute",
            ToolName::ReadFile => "read_file",
            ToolName::WriteFile => "write_file",
            ToolName::EditFile => "edit_file",
            ToolName::Glob => "glob",
            ToolName::Grep => "grep",
            ToolName::JobStatus => "job_status",
            ToolName::JobOutput => "job_output",
            ToolName::JobKill => "job_kill",
            ToolName::PrepareUpload => "prepare_upload",
            ToolName::PrepareDownload => "prepare_download",
            ToolName::ServerOverview => "server_overview",
            ToolName::TerminalOpen => "terminal_open",
            ToolName::TerminalSend => "terminal_send",
            ToolName::TerminalRead => "terminal_read",
            ToolName::TerminalResize => "terminal_resize",
            ToolName::TerminalList => "terminal_list",
            ToolName::TerminalClose => "terminal_close",
        }
    }

    pub fn parse(s: &str) -> Option<ToolName> {
        ToolName::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The role a caller needs. This table is the policy: the executor enforces it on every
    /// call; the frontend uses it only to filter `tools/list`.
    pub fn required_role(self) -> Role {
        match self {
            ToolName::BashExecute => Role::Rw,
            ToolName::ReadFile => Role::Ro,
            ToolName::WriteFile => Role::Rw,
            ToolName::EditFile => Role::Rw,
            ToolName::Glob => Role::Ro,
            ToolName::Grep => Role::Ro,
            // Jobs are commands: looking at one is as privileged as starting one.
            ToolName::JobStatus | ToolName::JobOutput | ToolName::JobKill => Role::Rw,
            ToolName::PrepareUpload => Role::Rw,
            ToolName::PrepareDownload => Role::Ro,
            ToolName::ServerOverview => Role::Ro,
            // A terminal runs commands: every terminal tool is as privileged as bash_execute.
            ToolName::TerminalOpen
            | ToolName::TerminalSend
            | ToolName::TerminalRead
            | ToolName::TerminalResize
            | ToolName::TerminalList
            | ToolName::TerminalClose => Role::Rw,
        }
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tool invocation with its arguments as the client gave them (before clamping).
/// Integers are `i64` so that the executor, not the decoder, applies the reference's clamps
/// (`timeout: 0` → 1, `limit: -5` → 1, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolCall {
    BashExecute(BashExecute),
    ReadFile(ReadFile),
    WriteFile(WriteFile),
    EditFile(EditFile),
    Glob(Glob),
    Grep(Grep),
    JobStatus(JobRef),
    JobOutput(JobOutputArgs),
    JobKill(JobKillArgs),
    PrepareUpload(PrepareUpload),
    PrepareDownload(PrepareDownload),
    /// `server_overview` takes no arguments.
    ServerOverview,
    TerminalOpen(TerminalOpen),
    TerminalSend(TerminalSend),
    TerminalRead(TerminalRead),
    TerminalResize(TerminalResize),
    /// `terminal_list` takes no arguments.
    TerminalList,
    TerminalClose(TerminalRef),
}

impl ToolCall {
    pub fn name(&self) -> ToolName {
        match self {
            ToolCall::BashExecute(_) => ToolName::BashExecute,
            ToolCall::ReadFile(_) => ToolName::ReadFile,
            ToolCall::WriteFile(_) => ToolName::WriteFile,
            ToolCall::EditFile(_) => ToolName::EditFile,
            ToolCall::Glob(_) => ToolName::Glob,
            ToolCall::Grep(_) => ToolName::Grep,
            ToolCall::JobStatus(_) => ToolName::JobStatus,
            ToolCall::JobOutput(_) => ToolName::JobOutput,
            ToolCall::JobKill(_) => ToolName::JobKill,
            ToolCall::PrepareUpload(_) => ToolName::PrepareUpload,
            ToolCall::PrepareDownload(_) => ToolName::PrepareDownload,
            ToolCall::ServerOverview => ToolName::ServerOverview,
            ToolCall::TerminalOpen(_) => ToolName::TerminalOpen,
            ToolCall::TerminalSend(_) => ToolName::TerminalSend,
            ToolCall::TerminalRead(_) => ToolName::TerminalRead,
            ToolCall::TerminalResize(_) => ToolName::TerminalResize,
            ToolCall::TerminalList => ToolName::TerminalList,
            ToolCall::TerminalClose(_) => ToolName::TerminalClose,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BashExecute {
    pub command: String,
    /// Seconds; clamped to [1, 600], default 30.
    pub timeout: Option<i64>,
    /// Absolute directory; default `/`.
    pub working_dir: Option<String>,
    /// Per-stream capture cap; clamped to [1, `MYMCP_BASH_MAX_OUTPUT_BYTES_HARD`].
    pub max_output_bytes: Option<i64>,
    /// Start a background job and return its id at once (`job_status`, `job_output`,
    /// `job_kill` follow it). `timeout` then defaults to an hour and may be up to a day.
    pub background: bool,
    /// Seconds after which a foreground call that still runs answers with its output so far
    /// (a [`ToolOutput::JobOutput`] from offset 0) and goes on as a background job; 0 turns
    /// hand-off off for this call; `None`: `MYMCP_BASH_HANDOFF_SEC`.
    pub handoff_after: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFile {
    pub file_path: String,
    /// 1-based first line; values below 1 mean 1.
    pub offset: Option<i64>,
    /// Number of lines; clamped to [1, `MYMCP_READ_FILE_MAX_LIMIT`].
    pub limit: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFile {
    pub file_path: String,
    /// At most `MYMCP_WRITE_FILE_MAX_BYTES` bytes (UTF-8).
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditFile {
    pub file_path: String,
    /// Not empty; at most `MYMCP_EDIT_STRING_MAX_BYTES` bytes.
    pub old_string: String,
    /// At most `MYMCP_EDIT_STRING_MAX_BYTES` bytes.
    pub new_string: String,
    /// Default false: `old_string` must then occur exactly once.
    pub replace_all: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Glob {
    /// `*`, `?`, `[...]`, `{a,b}` and `**`; relative to `path` unless absolute.
    pub pattern: String,
    /// Absolute directory; default `/`.
    pub path: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrepMode {
    /// Matching lines (with context lines when asked).
    #[default]
    Content,
    /// Paths of files with a match.
    Files,
    /// Matching lines per file.
    Count,
}

impl GrepMode {
    pub const ALL: [GrepMode; 3] = [GrepMode::Content, GrepMode::Files, GrepMode::Count];

    pub fn as_str(self) -> &'static str {
        match self {
            GrepMode::Content => "content",
            GrepMode::Files => "files",
            GrepMode::Count => "count",
        }
    }

    pub fn parse(s: &str) -> Option<GrepMode> {
        GrepMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grep {
    /// A Rust regex (ripgrep's dialect); never interpreted as an option.
    pub pattern: String,
    /// Absolute file or directory; default `/`.
    pub path: Option<String>,
    /// File-name filter, as ripgrep's `--glob`.
    pub glob: Option<String>,
    pub output_mode: Option<GrepMode>,
    /// Lines before and after each match; values below 0 mean 0.
    pub context_lines: Option<i64>,
    /// Output lines; clamped to [1, `MYMCP_GREP_MAX_RESULTS`].
    pub max_results: Option<i64>,
    pub case_insensitive: Option<bool>,
}

/// `job_status`: which job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: String,
}

/// `job_output`: a piece of a job's output from byte offsets, optionally waiting for more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutputArgs {
    pub job_id: String,
    /// Byte offset into stdout; values below 0 mean 0.
    pub stdout_offset: Option<i64>,
    /// Byte offset into stderr; values below 0 mean 0.
    pub stderr_offset: Option<i64>,
    /// Bytes per stream at most; clamped to [1, `MYMCP_BASH_MAX_OUTPUT_BYTES_HARD`].
    pub max_bytes: Option<i64>,
    /// Seconds to wait for output past the offsets or for the job to end; clamped to [0, 60].
    pub wait_seconds: Option<i64>,
}

/// `job_kill`: signal a job's process group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobKillArgs {
    pub job_id: String,
    /// `TERM` (default: SIGKILL follows after the grace if the job is still running), `KILL`,
    /// `INT` or `HUP`; a `SIG` prefix is allowed.
    pub signal: Option<String>,
}

/// A successful tool result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolOutput {
    Bash(BashOutput),
    ReadFile(ReadFileOutput),
    WriteFile(WriteFileOutput),
    EditFile(EditFileOutput),
    Glob(GlobOutput),
    Grep(GrepOutput),
    /// A background job: started (`bash_execute` with `background`), looked at (`job_status`)
    /// or signalled (`job_kill`).
    Job(JobInfo),
    JobOutput(JobOutputChunk),
    /// `prepare_upload` / `prepare_download`: a grant for the frontend to wrap in a ticket.
    TransferGrant(TransferGrant),
    /// `server_overview`: the recorder's Markdown document about the host.
    Overview(OverviewOutput),
    /// A terminal opened, resized or closed.
    Terminal(TerminalInfo),
    /// `terminal_send`: bytes written to the terminal.
    TerminalSent(u64),
    TerminalScreen(TerminalScreen),
    TerminalList(Vec<TerminalInfo>),
}

/// `terminal_open`: a command (default: the account's shell) on a new pseudo-terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalOpen {
    /// Run with `<shell> -c`; `None` starts the account's shell.
    pub command: Option<String>,
    /// Absolute directory; default as for `bash_execute`.
    pub working_dir: Option<String>,
    /// Clamped to [2, 500], default 24.
    pub rows: Option<i64>,
    /// Clamped to [10, 500], default 80.
    pub cols: Option<i64>,
}

/// `terminal_close`: which terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalRef {
    pub terminal_id: String,
}

/// `terminal_send`: `text` as is, then each of `keys` (names such as `Enter`, `Ctrl-C`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSend {
    pub terminal_id: String,
    pub text: Option<String>,
    pub keys: Vec<String>,
}

/// `terminal_read`: the screen and the output since the last read, optionally after waiting
/// for a regex to match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalRead {
    pub terminal_id: String,
    /// A regex (Rust syntax) to wait for, in the screen or the new output.
    pub wait_for: Option<String>,
    /// Seconds to wait; clamped to [0, 60], default 10 with `wait_for`, else 0.
    pub timeout: Option<i64>,
}

/// `terminal_resize`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalResize {
    pub terminal_id: String,
    /// Clamped like `terminal_open`'s; absent: unchanged.
    pub rows: Option<i64>,
    pub cols: Option<i64>,
}

/// What is known about a terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalInfo {
    pub terminal_id: String,
    pub command: String,
    pub rows: u16,
    pub cols: u16,
    pub running: bool,
    /// Once the program has ended: its exit status, or `-signo`.
    pub exit_code: Option<i32>,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// The asciicast v2 recording (for the audit log; not shown to the model).
    pub recording: String,
    /// Its size and SHA-256 once the terminal has ended.
    pub recording_bytes: u64,
    pub recording_sha256: Option<String>,
}

/// `terminal_read`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalScreen {
    pub terminal_id: String,
    /// The rendered screen: rows joined by `\n`, trailing blanks cut.
    pub screen: String,
    /// 0-based.
    pub cursor_row: u16,
    pub cursor_col: u16,
    /// The program's output since the previous read, as text (escape sequences removed).
    pub output: String,
    /// Bytes of text output dropped before this read because it was not read in time.
    pub output_dropped: u64,
    /// `wait_for` matched (false when it was not given).
    pub matched: bool,
    pub running: bool,
    pub exit_code: Option<i32>,
}

/// The host overview kept by `mymcp-recorder`, as `server_overview` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverviewOutput {
    /// The Markdown document; prefixed with a one-line warning when `stale`.
    pub overview: String,
    /// RFC 3339: the document's `_Last updated: …_` stamp, else its modification time; empty
    /// when neither is known.
    pub last_updated: String,
    /// Successful mutating audit events the recorder has not merged yet (0 when unknown).
    pub pending_events: u64,
    /// Events are pending and the document is older than two merge intervals.
    pub stale: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileOutput {
    pub bytes_written: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditFileOutput {
    pub replacements: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobOutput {
    /// The newest first, at most `MYMCP_GLOB_MAX_RESULTS`.
    pub files: Vec<String>,
    /// All matches (not protected).
    pub count: u64,
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepOutput {
    /// Output lines joined by `\n`, cut to `max_results` lines with a `[TRUNCATED: …]` line.
    pub results: String,
    /// Output lines found, or a lower bound when `match_count_exact` is false (the search
    /// stopped once more than `max_results` lines were found).
    pub match_count: u64,
    pub match_count_exact: bool,
}

/// What is known about a background job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job_id: String,
    pub command: String,
    pub working_dir: String,
    pub running: bool,
    /// The exit status or `-signo` once the job has ended (-1 if its shell could not be
    /// reaped); `None` while it runs.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Ended by `job_kill` or by the executor shutting down.
    pub killed: bool,
    /// RFC 3339, UTC, second precision.
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Run time so far, or in all once it ended.
    pub duration_ms: u64,
    pub timeout_secs: u32,
    /// Bytes the job wrote to each stream (including any beyond the spool cap).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Output went past `MYMCP_JOB_MAX_OUTPUT_BYTES`; the rest was counted, not kept.
    pub output_truncated: bool,
    /// The kernel limit the job hit, e.g. `"killed: memory limit 256 MiB reached"`.
    pub limit_hit: Option<String>,
    /// Bytes per stream the starting call's foreground result would carry (its
    /// `max_output_bytes`, clamped): what an MCP task's result returns.
    pub output_cap: u64,
}

/// A piece of a job's spooled output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutputChunk {
    pub job_id: String,
    /// Bytes from the requested offset. A chunk never ends inside a UTF-8 sequence that
    /// continues in the spool, so chunks decode and concatenate exactly.
    #[serde(with = "crate::byte_string")]
    pub stdout: Vec<u8>,
    #[serde(with = "crate::byte_string")]
    pub stderr: Vec<u8>,
    /// Offsets to ask for next: the requested ones plus the bytes returned.
    pub stdout_offset: u64,
    pub stderr_offset: u64,
    pub running: bool,
    pub exit_code: Option<i32>,
    /// The job has ended and both offsets are at the end of what was kept.
    pub complete: bool,
    pub output_truncated: bool,
}

/// The first bytes a command wrote to one stream, and how many it wrote in all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedStream {
    #[serde(with = "crate::byte_string")]
    pub head: Vec<u8>,
    pub total_bytes: u64,
}

impl CapturedStream {
    pub fn truncated(&self) -> bool {
        self.total_bytes > self.head.len() as u64
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BashOutput {
    pub stdout: CapturedStream,
    pub stderr: CapturedStream,
    /// Exit status, or `-signo` when the shell was killed by a signal, or -1 when it did not
    /// finish (its output was cut at the deadline).
    pub exit_code: i32,
    pub timed_out: bool,
    /// The timeout that applied, in seconds (after clamping).
    pub timeout_secs: u32,
    /// The kernel limit the command hit, e.g. `"memory limit 256 MiB reached"`.
    pub limit_hit: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileOutput {
    /// Numbered lines, `"%4d\t%s"` joined by `\n`.
    pub content: String,
    /// Number of lines in the file, or a lower bound when `total_lines_exact` is false
    /// (very large files are not scanned to the end).
    pub total_lines: u64,
    pub total_lines_exact: bool,
    /// More lines follow the returned page.
    pub truncated: bool,
}

/// Stable failure codes. The strings are what clients see in the tool JSON's `error` field;
/// they keep the reference's spelling where one exists (`FileNotFoundError`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The caller's role may not use this tool.
    PermissionDenied,
    /// An OAuth client approved for less may not use this tool: it may ask for more (the
    /// frontend answers HTTP 403 with `insufficient_scope`, MCP's step-up).
    InsufficientScope,
    /// No such tool.
    UnknownTool,
    /// An argument is of the wrong type, missing, or out of its allowed range.
    InvalidArguments,
    /// A path is not absolute, contains NUL, or is too long.
    InvalidPath,
    FileNotFoundError,
    /// The operating system refused access.
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    /// Devices, FIFOs and sockets are not read as files.
    NotARegularFile,
    ProtectedPath,
    FileTooLarge,
    /// A concurrency limit was reached; try again later.
    Busy,
    /// The client went away or cancelled the request.
    Cancelled,
    /// The executor is stopping and takes no new work.
    ShuttingDown,
    TimeoutError,
    /// A control-socket selector matched no token, or no job has this id for this token.
    NotFound,
    /// Unexpected failure; the message says what failed.
    InternalError,
    /// edit_file: `old_string` does not occur in the file.
    StringNotFound,
    /// edit_file: `old_string` occurs more than once and `replace_all` is false.
    AmbiguousMatch,
    /// grep: the pattern is not a valid regex.
    InvalidRegex,
    /// prepare_*: `MYMCP_TRANSFER_ENABLED` is false.
    TransferDisabled,
    /// prepare_upload: the destination exists and `overwrite` is false.
    FileExists,
    /// prepare_upload: `max_bytes` is not positive.
    InvalidMaxBytes,
    /// prepare_download: the source does not exist (the reference's spelling, not
    /// `FileNotFoundError`).
    FileNotFound,
    /// prepare_*: `expires_in` is not positive.
    InvalidExpiresIn,
    /// server_overview: no overview has been generated (or it cannot be read).
    RecorderDisabled,
    /// The token's Unix account is unknown, deleted or expired, or cannot be acted as:
    /// nothing ran.
    AccountUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::PermissionDenied => "PermissionDenied",
            ErrorCode::InsufficientScope => "InsufficientScope",
            ErrorCode::UnknownTool => "UnknownTool",
            ErrorCode::InvalidArguments => "InvalidArguments",
            ErrorCode::InvalidPath => "InvalidPath",
            ErrorCode::FileNotFoundError => "FileNotFoundError",
            ErrorCode::PermissionError => "PermissionError",
            ErrorCode::IsADirectoryError => "IsADirectoryError",
            ErrorCode::NotADirectoryError => "NotADirectoryError",
            ErrorCode::NotARegularFile => "NotARegularFile",
            ErrorCode::ProtectedPath => "ProtectedPath",
            ErrorCode::FileTooLarge => "FileTooLarge",
            ErrorCode::Busy => "Busy",
            ErrorCode::Cancelled => "Cancelled",
            ErrorCode::ShuttingDown => "ShuttingDown",
            ErrorCode::TimeoutError => "TimeoutError",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::StringNotFound => "StringNotFound",
            ErrorCode::AmbiguousMatch => "AmbiguousMatch",
            ErrorCode::InvalidRegex => "InvalidRegex",
            ErrorCode::TransferDisabled => "TransferDisabled",
            ErrorCode::FileExists => "FileExists",
            ErrorCode::InvalidMaxBytes => "InvalidMaxBytes",
            ErrorCode::FileNotFound => "FileNotFound",
            ErrorCode::InvalidExpiresIn => "InvalidExpiresIn",
            ErrorCode::RecorderDisabled => "RecorderDisabled",
            ErrorCode::AccountUnavailable => "AccountUnavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool that ran (or was refused) and failed in an ordinary, expected way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolFailure {
    pub code: ErrorCode,
    pub message: String,
    pub suggestion: Option<String>,
}

impl ToolFailure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ToolFailure {
            code,
            message: message.into(),
            suggestion: None,
        }
    }

    pub fn with_suggestion(mut self, s: impl Into<String>) -> Self {
        self.suggestion = Some(s.into());
        self
    }
}

impl fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_round_trip_and_policy() {
        for t in ToolName::ALL {
            assert_eq!(ToolName::parse(t.as_str()), Some(t));
        }
        assert_eq!(ToolName::parse("server_overviews"), None);
        assert_eq!(ToolName::ServerOverview.required_role(), Role::Ro);
        assert_eq!(ToolName::BashExecute.required_role(), Role::Rw);
        assert_eq!(ToolName::ReadFile.required_role(), Role::Ro);
        for t in [ToolName::WriteFile, ToolName::EditFile] {
            assert_eq!(t.required_role(), Role::Rw, "{t}");
        }
        assert_eq!(ToolName::JobOutput.required_role(), Role::Rw);
        for t in [ToolName::Glob, ToolName::Grep] {
            assert_eq!(t.required_role(), Role::Ro, "{t}");
        }
        let names: Vec<&str> = ToolName::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "bash_execute",
                "read_file",
                "write_file",
                "edit_file",
                "glob",
                "grep",
                "job_status",
                "job_output",
                "job_kill",
                "prepare_upload",
                "prepare_download",
                "server_overview",
                "terminal_open",
                "terminal_send",
                "terminal_read",
                "terminal_resize",
                "terminal_list",
                "terminal_close"
            ]
        );
        assert_eq!(ToolName::PrepareUpload.required_role(), Role::Rw);
        assert_eq!(ToolName::PrepareDownload.required_role(), Role::Ro);
    }

    #[test]
    fn grep_modes_round_trip() {
        for m in GrepMode::ALL {
            assert_eq!(GrepMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(GrepMode::parse("bogus"), None);
        assert_eq!(GrepMode::default(), GrepMode::Content);
    }

    #[test]
    fn new_error_codes_keep_the_reference_spelling() {
        assert_eq!(ErrorCode::StringNotFound.as_str(), "StringNotFound");
        assert_eq!(ErrorCode::AmbiguousMatch.as_str(), "AmbiguousMatch");
        assert_eq!(ErrorCode::InvalidRegex.as_str(), "InvalidRegex");
    }

    #[test]
    fn capture_knows_when_it_was_cut() {
        let c = CapturedStream {
            head: b"abc".to_vec(),
            total_bytes: 10,
        };
        assert!(c.truncated());
        let c = CapturedStream {
            head: b"abc".to_vec(),
            total_bytes: 3,
        };
        assert!(!c.truncated());
    }
}
