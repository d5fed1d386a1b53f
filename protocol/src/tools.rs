//! Typed tool calls, their results and the closed set of failure codes.
//!
//! JSON never crosses the socket: the frontend decodes MCP `tools/call` arguments into these
//! types (rejecting wrong types and missing fields), and the executor re-validates every value
//! as if it came from an attacker (clamps, length limits, absolute paths).

use crate::Role;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The tools this build offers. Names are the MCP tool names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ToolName {
    BashExecute,
    ReadFile,
}

impl ToolName {
    /// Every tool, in the order `tools/list` shows them.
    pub const ALL: [ToolName; 2] = [ToolName::BashExecute, ToolName::ReadFile];

    pub fn as_str(self) -> &'static str {
        match self {
            ToolName::BashExecute => "bash_execute",
            ToolName::ReadFile => "read_file",
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
}

impl ToolCall {
    pub fn name(&self) -> ToolName {
        match self {
            ToolCall::BashExecute(_) => ToolName::BashExecute,
            ToolCall::ReadFile(_) => ToolName::ReadFile,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFile {
    pub file_path: String,
    /// 1-based first line; values below 1 mean 1.
    pub offset: Option<i64>,
    /// Number of lines; clamped to [1, `MYMCP_READ_FILE_MAX_LIMIT`].
    pub limit: Option<i64>,
}

/// A successful tool result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolOutput {
    Bash(BashOutput),
    ReadFile(ReadFileOutput),
}

/// The first bytes a command wrote to one stream, and how many it wrote in all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedStream {
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
    /// A control-socket selector matched no token.
    NotFound,
    /// Unexpected failure; the message says what failed.
    InternalError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::PermissionDenied => "PermissionDenied",
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
        assert_eq!(ToolName::parse("server_overview"), None);
        assert_eq!(ToolName::BashExecute.required_role(), Role::Rw);
        assert_eq!(ToolName::ReadFile.required_role(), Role::Ro);
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
