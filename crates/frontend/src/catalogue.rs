//! The tool catalogue that `tools/list` shows: names, titles, descriptions written for the
//! model, input and output schemas and behaviour annotations; and the server's
//! [`INSTRUCTIONS`].
//!
//! The list is filtered by the caller's role with the protocol's policy table
//! ([`ToolName::required_role`]); that filter is a courtesy to the model, not a control: the
//! executor authorizes every call itself. It is always in [`ToolName::ALL`] order, so clients
//! can cache it and models see the same prompt prefix every time.
//!
//! Every tool publishes an [`output_schema`]: the shape of its tool JSON, which a successful
//! call returns twice, as the text item (what the reference servers returned) and as
//! `structuredContent` (see [`crate::results`]). A new tool plugs in with one arm here and its
//! JSON struct in `results`; the `structured_content_matches_the_output_schema` tests there
//! and the end-to-end validator keep the two in step.

use mymcp_protocol::{HostOffer, Role, ToolName};
use serde::Serialize;
use serde_json::{json, Value};

/// One entry of the `tools/list` result.
#[derive(Clone, Debug, Serialize)]
pub struct ToolEntry {
    pub name: &'static str,
    /// A short human-readable name for clients' user interfaces (MCP 2025-06-18 and later).
    pub title: &'static str,
    pub description: &'static str,
    #[serde(rename = "inputSchema")]
    pub input_schema: Value,
    #[serde(rename = "outputSchema")]
    pub output_schema: Value,
    pub annotations: Annotations,
    /// `execution.taskSupport` (2025-11-25): set on `bash_execute` for that revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution: Option<Value>,
}

/// MCP tool annotations: hints for clients deciding whether to ask the user first.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Annotations {
    #[serde(rename = "readOnlyHint")]
    pub read_only: bool,
    #[serde(rename = "destructiveHint", skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    #[serde(rename = "idempotentHint", skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    #[serde(rename = "openWorldHint")]
    pub open_world: bool,
}

const BASH_EXECUTE_DESCRIPTION: &str = "\
Run a shell command on the server (bash -c, the service's privileges, stdin /dev/null, \
its own process group, a clean environment, in working_dir: absolute, default /). Returns \
JSON {\"stdout\", \"stderr\", \"exit_code\", \"timed_out\"}.

- timeout: seconds before the whole process group is killed (default 30, 1-600); output so \
far comes back with timed_out true.
- max_output_bytes: bytes kept per stream (default 102400); longer output ends with a \
[TRUNCATED: …] line. Redirect large output to a file and use read_file.
- exit_code: the exit status, or -N when killed by signal N.
- background: true returns a job_id at once (job timeout default 3600 s, at most 86400); \
follow with job_output, job_status, job_kill. Use it beyond about a minute.
- handoff_after: N seconds; a command still running then answers with its output so far and \
a job_id (job_output's JSON) and goes on as a job.

Everything the command left running is killed when the call ends. Each call is a fresh \
shell: cd and variables do not carry over.";

const JOB_STATUS_DESCRIPTION: &str = "\
Show a background job (bash_execute with background: true): running, exit_code, \
timed_out, killed, times, output sizes. Only the token that started it sees it; ended jobs \
are deleted after a retention period (an hour by default).";

const JOB_OUTPUT_DESCRIPTION: &str = "\
Read a background job's output from byte offsets (default 0). Pass back the \
stdout_offset/stderr_offset of the previous answer to continue: the pieces join up exactly. \
max_bytes: per stream (default 65536). wait_seconds (0-60): wait for new output or the end \
instead of polling. complete: the job ended and all output was read; output_truncated: it \
wrote more than the server keeps.";

const JOB_KILL_DESCRIPTION: &str = "\
Stop a background job: SIGTERM to its process group, SIGKILL after 2 s. Answers \
with its status (as job_status) once it ended. signal may be KILL, INT or HUP instead.";

const READ_FILE_DESCRIPTION: &str = "\
Read a text file on the server, a page of lines at a time. Returns JSON \
{\"content\", \"total_lines\", \"truncated\"}; content has each line prefixed with its number and \
a tab (cat -n).

- file_path: absolute path.
- offset: first line, 1-based (default 1); limit: lines (default 2000, at most 50000).

truncated: more lines follow (call again with offset + limit). Lines over 32768 bytes are \
cut ([LINE TRUNCATED]); invalid UTF-8 shows as U+FFFD; total_lines may be a lower bound \
(\"total_lines_exact\": false). Directories, devices and protected paths are refused. For \
large or binary files use prepare_download when listed.";

const WRITE_FILE_DESCRIPTION: &str = "\
Create or overwrite a file on the server with content (verbatim, at most 10 MiB). \
Returns {\"success\": true, \"bytes_written\"}. file_path is absolute; missing parent \
directories are created. Atomic (temporary file, fsync, rename); a replaced file keeps its \
mode and owner, a new one gets 0644; a symlink's target is written. Prefer edit_file for \
partial changes, prepare_upload (when listed) for large or binary files. Protected paths are \
refused.";

const EDIT_FILE_DESCRIPTION: &str = "\
Replace text in an existing file on the server. Returns {\"success\": true, \
\"replacements\"}.

- old_string: the exact text (not empty; whitespace and line endings must match).
- new_string: the replacement.
- replace_all: every occurrence (default false: old_string must occur exactly once, else \
AmbiguousMatch says how often; add surrounding text).

Only the replaced bytes change (line endings, invalid UTF-8, a missing final newline are \
kept). Not found: StringNotFound. Atomic; mode and owner kept.";

const GLOB_DESCRIPTION: &str = "\
Find files and directories on the server by name. Returns {\"files\", \"count\", \
\"truncated\"}, newest first.

- pattern: relative to path (or absolute): * and ? within a name, [abc], {a,b}, ** any \
directories, e.g. **/*.py.
- path: absolute directory to search (default /).

Dot names match only a pattern part starting with a dot. At most 1000 are listed (truncated): \
narrow the search. Symlinks are listed, not followed; protected paths are left out.";

const GREP_DESCRIPTION: &str = "\
Search file contents on the server with a regex (ripgrep's engine and rules). Returns \
{\"results\", \"match_count\"}.

- pattern: Rust regex syntax (no look-around or backreferences); never an option.
- path: absolute file or directory (default /).
- glob: only files matching it, e.g. *.py (!*.min.js excludes).
- output_mode: content (default: path:line:text, path-line-text for context, -- between \
groups), files (paths), count (path:N).
- context_lines (default 0), case_insensitive (default false), max_results: output lines \
(default 500, at most 5000).

Hidden, .gitignored (in git repositories) and binary files are skipped; symlinks are not \
followed; files come in path order. Past max_results, results ends with [TRUNCATED: …] and \
\"match_count_exact\" may be false. Protected paths are never searched.";

const PREPARE_UPLOAD_DESCRIPTION: &str = "\
Prepare a one-time URL to upload a file from the client to the server (large or \
binary files: the bytes never pass through the conversation). Returns the url, ticket, \
expiry and a curl_example to run in the CLIENT's local shell (not bash_execute), e.g. \
curl -fsS -T ./build.tar.gz '<url>'; the server answers {\"ok\": true, \"path\", \
\"bytes_written\", \"sha256\"}.

- dest_path: absolute; missing parent directories are created.
- max_bytes: largest body (default and cap 2 GiB); expires_in: seconds (default 300, at \
most 900).
- overwrite: replace an existing file (default true; false never replaces one).
- sha256: expected hex digest; a body that differs is refused.

Atomic (temporary file, sync, rename); a replaced file keeps mode and owner. One completed \
upload per URL. Protected paths are refused.";

const PREPARE_DOWNLOAD_DESCRIPTION: &str = "\
Prepare a one-time URL to download a regular file from the server to the client \
(large or binary files: the bytes never pass through the conversation). Returns the url, \
ticket, expiry, size and a curl_example to run in the CLIENT's local shell (not \
bash_execute), e.g. curl -fsS '<url>' -o ./data.bin. src_path: absolute; expires_in: \
seconds (default 300, at most 900). One completed download per URL (HEAD does not use it). \
Protected paths are refused.";

const SERVER_OVERVIEW_DESCRIPTION: &str = "\
Read this host's overview: a Markdown document of what is installed, deployed and \
recently changed (services, applications, network, data, quirks), kept current from the \
audit log by the mymcp recorder. Call it first to get oriented. pending_events: changes not \
folded in yet; stale: changes are waiting and it is older than two merge intervals (it then \
starts with a warning). RecorderDisabled: no overview on this host.";

const TERMINAL_OPEN_DESCRIPTION: &str = "\
Open a terminal (a pseudo-terminal) running command, or your shell without one, for programs \
that need a TTY: REPLs, pagers, editors, password prompts. Returns JSON: {\"terminal_id\", \
\"command\", \"rows\", \"cols\", \"running\", \"exit_code\", \"started_at\"}. \
The session is recorded.";

const TERMINAL_SEND_DESCRIPTION: &str = "\
Type into a terminal: text as is, then keys by name: Enter, Tab, Escape, Backspace, Up, Down, \
Left, Right, Home, End, PageUp, PageDown, Delete, F1-F12, Ctrl-A..Ctrl-Z (Ctrl-C, Ctrl-D). \
A line needs Enter. Returns {\"success\": true, \"bytes_sent\"}.";

const TERMINAL_READ_DESCRIPTION: &str = "\
Read a terminal: the screen as text (trailing blanks cut), cursor [row, col], and the output \
since the previous read without escape sequences. wait_for: a regex (e.g. a prompt) to wait \
for in the screen or new output, up to timeout seconds (default 10, at most 60); matched says \
if it appeared. Returns {\"screen\", \"cursor\", \"output\", \"matched\", \"running\", \
\"exit_code\"}.";

const TERMINAL_RESIZE_DESCRIPTION: &str = "Resize a terminal; its program is told (SIGWINCH).";

const TERMINAL_LIST_DESCRIPTION: &str = "List your terminals: {\"terminals\": [...]}.";

const TERMINAL_CLOSE_DESCRIPTION: &str = "\
Close a terminal: SIGHUP to its programs, SIGKILL after 1 s. Returns its final status.";

/// The `instructions` of the `initialize` and `server/discover` results: what a model should
/// know about this server before its first call. They name `server_overview` only when the
/// host offers it (see [`visible_to`]).
pub fn instructions(offer: HostOffer) -> &'static str {
    if offer.server_overview {
        INSTRUCTIONS_WITH_OVERVIEW
    } else {
        INSTRUCTIONS
    }
}

/// Builds both texts of [`instructions`] from one source.
macro_rules! instructions {
    ($overview:expr, $ro_overview:expr) => {
        concat!(
            "This server operates one Linux host: run shell commands (bash_execute), read, \
write and edit text files (read_file, write_file, edit_file), find files by name (glob) and \
search their contents (grep).",
            $overview,
            "

- Paths are absolute (/etc/hosts, not hosts). Relative paths are refused, never resolved.
- Your token's role decides the tools you see: ro tokens get read_file, glob, grep, \
prepare_download",
            $ro_overview,
            "; rw tokens get every tool, and bash_execute runs with the server's privileges (root \
in a standard install). Each call starts a fresh shell: cd and variables do not carry over.
- Commands longer than a minute or so: bash_execute with background: true returns a job_id at \
once; follow it with job_output (pass back stdout_offset/stderr_offset, use wait_seconds \
instead of polling), check it with job_status, stop it with job_kill. A foreground command is \
killed at its timeout (30 s by default, at most 600 s).
- Programs that need a TTY (REPLs, less, top, editors, password prompts): terminal_open, then \
terminal_send text and keys (Enter, Ctrl-C, …) and terminal_read with wait_for (a regex such \
as the prompt) instead of polling; terminal_close when done. An unused terminal is closed \
after a while (30 min by default); only your token sees it.
- Output is bounded: read_file pages with offset/limit, glob and grep cap their results \
(narrow the path or pattern), command output is cut at max_output_bytes.
- Protected paths (the server's configuration, tokens, state, logs and binaries, plus what \
the administrator adds) are refused by every file tool with ProtectedPath; do not try to \
reach them another way.
- Large or binary files do not belong in read_file/write_file: if the tool list offers \
prepare_upload/prepare_download, use them (they hand out a one-time URL for the bytes); \
otherwise move them with bash_execute (curl, scp, tar).
- Every failed call, arguments that do not match a tool's schema included, is a normal \
result with isError true and JSON {\"success\": false, \"error\": code, \"message\": text}; \
read the message, fix the arguments and retry."
        )
    };
}

/// [`instructions`] on a host without an overview.
pub const INSTRUCTIONS: &str = instructions!("", "");

/// [`instructions`] on a host whose recorder keeps an overview.
pub const INSTRUCTIONS_WITH_OVERVIEW: &str = instructions!(
    " server_overview describes the host (what is installed, deployed and recently changed): \
read it first to get oriented.",
    ", server_overview"
);

/// The catalogue entry of one tool.
pub fn entry(tool: ToolName) -> ToolEntry {
    match tool {
        ToolName::BashExecute => ToolEntry {
            name: tool.as_str(),
            title: "Run shell command",
            output_schema: output_schema(tool),
            description: BASH_EXECUTE_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "command": {
                        "type": "string",
                        "description": "Shell command line, run with bash -c.",
                    },
                    "timeout": {
                        "type": "integer",
                        "default": 30,
                        "description": "Seconds before the command is killed (1-600).",
                    },
                    "working_dir": {
                        "type": "string",
                        "default": "/",
                        "description": "Absolute directory to run the command in.",
                    },
                    "max_output_bytes": {
                        "type": "integer",
                        "default": 102400,
                        "description": "Bytes of stdout and of stderr to return; the rest is cut.",
                    },
                    "background": {
                        "type": "boolean",
                        "default": false,
                        "description": "Start a background job and return its job_id at once.",
                    },
                    "handoff_after": {
                        "type": "integer",
                        "description": "Seconds after which a still running command returns its output so far and becomes a job (0: never).",
                    },
                },
                "required": ["command"],
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(true),
                idempotent: Some(false),
                open_world: true,
            },
            execution: None,
        },
        ToolName::ReadFile => ToolEntry {
            name: tool.as_str(),
            title: "Read text file",
            output_schema: output_schema(tool),
            description: READ_FILE_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "file_path": {
                        "type": "string",
                        "description": "Absolute path of the file to read.",
                    },
                    "offset": {
                        "type": "integer",
                        "default": 1,
                        "description": "First line to return, 1-based.",
                    },
                    "limit": {
                        "type": "integer",
                        "default": 2000,
                        "description": "Number of lines to return (at most 50000).",
                    },
                },
                "required": ["file_path"],
            }),
            annotations: READ_ONLY,
            execution: None,
        },
        ToolName::WriteFile => ToolEntry {
            name: tool.as_str(),
            title: "Write file",
            output_schema: output_schema(tool),
            description: WRITE_FILE_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "file_path": {
                        "type": "string",
                        "description": "Absolute path of the file to create or overwrite.",
                    },
                    "content": {
                        "type": "string",
                        "description": "The complete contents of the file.",
                    },
                },
                "required": ["file_path", "content"],
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(true),
                idempotent: Some(true),
                open_world: false,
            },
            execution: None,
        },
        ToolName::EditFile => ToolEntry {
            name: tool.as_str(),
            title: "Edit file",
            output_schema: output_schema(tool),
            description: EDIT_FILE_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "file_path": {
                        "type": "string",
                        "description": "Absolute path of the file to edit.",
                    },
                    "old_string": {
                        "type": "string",
                        "description": "Exact text to replace (must be unique unless replace_all).",
                    },
                    "new_string": {
                        "type": "string",
                        "description": "Replacement text.",
                    },
                    "replace_all": {
                        "type": "boolean",
                        "default": false,
                        "description": "Replace every occurrence of old_string.",
                    },
                },
                "required": ["file_path", "old_string", "new_string"],
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(true),
                idempotent: Some(false),
                open_world: false,
            },
            execution: None,
        },
        ToolName::Glob => ToolEntry {
            name: tool.as_str(),
            title: "Find files by name",
            output_schema: output_schema(tool),
            description: GLOB_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "pattern": {
                        "type": "string",
                        "description": "Glob such as **/*.py or src/*.{c,h}.",
                    },
                    "path": {
                        "type": "string",
                        "default": "/",
                        "description": "Absolute directory to search from.",
                    },
                },
                "required": ["pattern"],
            }),
            annotations: READ_ONLY,
            execution: None,
        },
        ToolName::Grep => ToolEntry {
            name: tool.as_str(),
            title: "Search file contents",
            output_schema: output_schema(tool),
            description: GREP_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "pattern": {
                        "type": "string",
                        "description": "Regular expression (Rust/ripgrep syntax).",
                    },
                    "path": {
                        "type": "string",
                        "default": "/",
                        "description": "Absolute file or directory to search.",
                    },
                    "glob": {
                        "type": "string",
                        "description": "Only search files matching this glob (e.g. *.py).",
                    },
                    "output_mode": {
                        "type": "string",
                        "enum": ["content", "files", "count"],
                        "default": "content",
                        "description": "content: matching lines; files: file paths; count: matches per file.",
                    },
                    "context_lines": {
                        "type": "integer",
                        "default": 0,
                        "description": "Lines of context around each match.",
                    },
                    "max_results": {
                        "type": "integer",
                        "default": 500,
                        "description": "Output lines to return (at most 5000).",
                    },
                    "case_insensitive": {
                        "type": "boolean",
                        "default": false,
                        "description": "Ignore case.",
                    },
                },
                "required": ["pattern"],
            }),
            annotations: READ_ONLY,
            execution: None,
        },
        ToolName::JobStatus => ToolEntry {
            name: tool.as_str(),
            title: "Background job status",
            output_schema: output_schema(tool),
            description: JOB_STATUS_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": { "job_id": job_id_property() },
                "required": ["job_id"],
            }),
            annotations: Annotations {
                read_only: true,
                destructive: None,
                idempotent: None,
                open_world: false,
            },
            execution: None,
        },
        ToolName::JobOutput => ToolEntry {
            name: tool.as_str(),
            title: "Background job output",
            output_schema: output_schema(tool),
            description: JOB_OUTPUT_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "job_id": job_id_property(),
                    "stdout_offset": {
                        "type": "integer",
                        "default": 0,
                        "description": "Byte offset in stdout to read from.",
                    },
                    "stderr_offset": {
                        "type": "integer",
                        "default": 0,
                        "description": "Byte offset in stderr to read from.",
                    },
                    "max_bytes": {
                        "type": "integer",
                        "default": 65536,
                        "description": "Bytes per stream to return at most.",
                    },
                    "wait_seconds": {
                        "type": "integer",
                        "default": 0,
                        "description": "Seconds to wait for new output or the end of the job (0-60).",
                    },
                },
                "required": ["job_id"],
            }),
            annotations: Annotations {
                read_only: true,
                destructive: None,
                idempotent: None,
                open_world: false,
            },
            execution: None,
        },
        ToolName::JobKill => ToolEntry {
            name: tool.as_str(),
            title: "Stop background job",
            output_schema: output_schema(tool),
            description: JOB_KILL_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "job_id": job_id_property(),
                    "signal": {
                        "type": "string",
                        "default": "TERM",
                        "enum": ["TERM", "KILL", "INT", "HUP"],
                        "description": "TERM (then KILL after 2 s), or KILL, INT, HUP as given.",
                    },
                },
                "required": ["job_id"],
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(true),
                idempotent: Some(true),
                open_world: false,
            },
            execution: None,
        },
        ToolName::PrepareUpload => ToolEntry {
            title: "Prepare file upload",
            output_schema: output_schema(tool),
            name: tool.as_str(),
            description: PREPARE_UPLOAD_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "dest_path": {
                        "type": "string",
                        "description": "Absolute path of the file to create or replace.",
                    },
                    "max_bytes": {
                        "type": "integer",
                        "default": 2_147_483_648u64,
                        "description": "Largest accepted upload in bytes (capped by the server).",
                    },
                    "expires_in": expires_in_property(),
                    "overwrite": {
                        "type": "boolean",
                        "default": true,
                        "description": "Replace an existing file.",
                    },
                    "sha256": {
                        "type": "string",
                        "description": "Expected SHA-256 of the file, 64 hex digits.",
                    },
                },
                "required": ["dest_path"],
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(true),
                idempotent: Some(false),
                open_world: false,
            },
            execution: None,
        },
        ToolName::PrepareDownload => ToolEntry {
            title: "Prepare file download",
            output_schema: output_schema(tool),
            name: tool.as_str(),
            description: PREPARE_DOWNLOAD_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "src_path": {
                        "type": "string",
                        "description": "Absolute path of the file to download.",
                    },
                    "expires_in": expires_in_property(),
                },
                "required": ["src_path"],
            }),
            annotations: READ_ONLY,
            execution: None,
        },
        ToolName::TerminalOpen => ToolEntry {
            name: tool.as_str(),
            title: "Open terminal",
            output_schema: output_schema(tool),
            description: TERMINAL_OPEN_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "command": { "type": "string", "description": "Run with bash -c; default: your shell." },
                    "working_dir": { "type": "string", "description": "Absolute directory." },
                    "rows": { "type": "integer", "default": 24 },
                    "cols": { "type": "integer", "default": 80 },
                },
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(true),
                idempotent: Some(false),
                open_world: true,
            },
            execution: None,
        },
        ToolName::TerminalSend => ToolEntry {
            name: tool.as_str(),
            title: "Type into terminal",
            output_schema: output_schema(tool),
            description: TERMINAL_SEND_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "terminal_id": terminal_id_property(),
                    "text": { "type": "string" },
                    "keys": { "type": "array", "items": { "type": "string" } },
                },
                "required": ["terminal_id"],
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(true),
                idempotent: Some(false),
                open_world: true,
            },
            execution: None,
        },
        ToolName::TerminalRead => ToolEntry {
            name: tool.as_str(),
            title: "Read terminal",
            output_schema: output_schema(tool),
            description: TERMINAL_READ_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "terminal_id": terminal_id_property(),
                    "wait_for": { "type": "string" },
                    "timeout": { "type": "integer" },
                },
                "required": ["terminal_id"],
            }),
            annotations: Annotations {
                read_only: true,
                destructive: None,
                idempotent: None,
                open_world: false,
            },
            execution: None,
        },
        ToolName::TerminalResize => ToolEntry {
            name: tool.as_str(),
            title: "Resize terminal",
            output_schema: output_schema(tool),
            description: TERMINAL_RESIZE_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {
                    "terminal_id": terminal_id_property(),
                    "rows": { "type": "integer" },
                    "cols": { "type": "integer" },
                },
                "required": ["terminal_id"],
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(false),
                idempotent: Some(true),
                open_world: false,
            },
            execution: None,
        },
        ToolName::TerminalList => ToolEntry {
            name: tool.as_str(),
            title: "List terminals",
            output_schema: output_schema(tool),
            description: TERMINAL_LIST_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {},
            }),
            annotations: READ_ONLY,
            execution: None,
        },
        ToolName::TerminalClose => ToolEntry {
            name: tool.as_str(),
            title: "Close terminal",
            output_schema: output_schema(tool),
            description: TERMINAL_CLOSE_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": { "terminal_id": terminal_id_property() },
                "required": ["terminal_id"],
            }),
            annotations: Annotations {
                read_only: false,
                destructive: Some(true),
                idempotent: Some(true),
                open_world: false,
            },
            execution: None,
        },
        ToolName::ServerOverview => ToolEntry {
            name: tool.as_str(),
            title: "Host overview",
            output_schema: output_schema(tool),
            description: SERVER_OVERVIEW_DESCRIPTION,
            input_schema: json!({
                "type": "object",
                "properties": {},
            }),
            annotations: READ_ONLY,
            execution: None,
        },
    }
}

/// The schema property of a ticket's lifetime.
fn expires_in_property() -> Value {
    json!({
        "type": "integer",
        "default": 300,
        "description": "Seconds the URL stays valid (at most 900).",
    })
}

/// The JSON Schema of a tool's result, the object that is both its text item and its
/// `structuredContent`: one of its successes or a failure (`anyOf`). A failure
/// (`isError: true`) is `{"success": false, "error", "message"[, "suggestion"]}` for every
/// tool; a schema without that branch would make clients that validate failures against it
/// (the TypeScript SDK validates any `structuredContent`; Gemini CLI makes one out of the text)
/// replace the server's message with a schema error.
///
/// The root is `type: object`, as revisions 2025-06-18 and 2025-11-25 require. Objects are
/// closed (`additionalProperties: false`) so that a field added to a result without its schema
/// fails the tests instead of surprising a validating client.
pub fn output_schema(tool: ToolName) -> Value {
    let (description, mut branches) = match tool {
        ToolName::BashExecute => (
            "A finished command, the started job when background was true, or the output so \
             far of a command handed off to a job; or a failure.",
            vec![
                bash_result_schema(),
                job_schema(),
                success_schema(ToolName::JobOutput),
            ],
        ),
        _ => (
            "The tool's result; or a failure.",
            vec![success_schema(tool)],
        ),
    };
    branches.push(failure_schema());
    json!({
        "type": "object",
        "description": description,
        "anyOf": branches,
    })
}

/// A failure of any tool (`isError: true`), as the reference servers wrote it.
fn failure_schema() -> Value {
    object(
        json!({
            "success": { "const": false },
            "error": {
                "type": "string",
                "description": "The error code, e.g. InvalidPath, FileNotFoundError, ProtectedPath, InvalidArguments.",
            },
            "message": {
                "type": "string",
                "description": "What went wrong, for the model: read it, fix the arguments and retry.",
            },
            "suggestion": { "type": "string" },
        }),
        &["success", "error", "message"],
    )
}

/// The schema of a tool's successful result (`bash_execute` has two: see [`output_schema`]).
fn success_schema(tool: ToolName) -> Value {
    match tool {
        ToolName::PrepareUpload => grant_schema(
            json!({
                "max_bytes": { "type": "integer", "minimum": 0, "description": "Largest body the URL accepts." },
                "dest_path": { "type": "string", "description": "Where the upload lands." },
                "overwrite": { "type": "boolean", "description": "Whether an existing file is replaced." },
                "sha256": { "type": "string", "description": "The SHA-256 the upload must have, if one was given." },
            }),
            &["max_bytes", "dest_path", "overwrite"],
        ),
        ToolName::PrepareDownload => grant_schema(
            json!({
                "size": { "type": "integer", "minimum": 0, "description": "Size of the file when the URL was made." },
                "src_path": { "type": "string", "description": "The file the URL serves." },
            }),
            &["size", "src_path"],
        ),
        ToolName::BashExecute => json!({
            "anyOf": [bash_result_schema(), job_schema(), success_schema(ToolName::JobOutput)],
        }),
        ToolName::ReadFile => object(
            json!({
                "content": {
                    "type": "string",
                    "description": "The selected lines, each as its line number, a tab and the text, joined by newlines.",
                },
                "total_lines": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Lines in the file (a lower bound when total_lines_exact is false).",
                },
                "truncated": {
                    "type": "boolean",
                    "description": "More lines follow: call again with offset + limit.",
                },
                "total_lines_exact": {
                    "type": "boolean",
                    "description": "Present (false) only when the file was too large to count to the end.",
                },
            }),
            &["content", "total_lines", "truncated"],
        ),
        ToolName::WriteFile => object(
            json!({
                "success": { "const": true },
                "bytes_written": { "type": "integer", "minimum": 0 },
            }),
            &["success", "bytes_written"],
        ),
        ToolName::EditFile => object(
            json!({
                "success": { "const": true },
                "replacements": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Occurrences replaced (0 when the edit changed nothing).",
                },
            }),
            &["success", "replacements"],
        ),
        ToolName::Glob => object(
            json!({
                "files": {
                    "type": "array",
                    "items": { "type": "string" },
                    "description": "Absolute paths, newest first.",
                },
                "count": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "All matches, including those not listed.",
                },
                "truncated": {
                    "type": "boolean",
                    "description": "More matched than are listed.",
                },
            }),
            &["files", "count", "truncated"],
        ),
        ToolName::Grep => object(
            json!({
                "results": {
                    "type": "string",
                    "description": "Output lines joined by newlines (path:line:text, paths, or path:N).",
                },
                "match_count": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Output lines found (a lower bound when match_count_exact is false).",
                },
                "match_count_exact": {
                    "type": "boolean",
                    "description": "Present (false) only when the search stopped early.",
                },
            }),
            &["results", "match_count"],
        ),
        ToolName::JobStatus | ToolName::JobKill => job_schema(),
        ToolName::TerminalOpen | ToolName::TerminalResize | ToolName::TerminalClose => {
            terminal_schema()
        }
        ToolName::TerminalList => object(
            json!({ "terminals": { "type": "array", "items": terminal_schema() } }),
            &["terminals"],
        ),
        ToolName::TerminalSend => object(
            json!({
                "success": { "const": true },
                "bytes_sent": { "type": "integer", "minimum": 0 },
            }),
            &["success", "bytes_sent"],
        ),
        ToolName::TerminalRead => object(
            json!({
                "screen": { "type": "string", "description": "The screen's rows joined by newlines." },
                "cursor": {
                    "type": "array",
                    "items": { "type": "integer" },
                    "description": "Row and column, from 0.",
                },
                "output": { "type": "string", "description": "Text written since the previous read." },
                "output_dropped": {
                    "type": "integer",
                    "description": "Present when older unread text was dropped (bytes).",
                },
                "matched": { "type": "boolean" },
                "running": { "type": "boolean" },
                "exit_code": nullable("integer", "null while running."),
            }),
            &[
                "screen",
                "cursor",
                "output",
                "matched",
                "running",
                "exit_code",
            ],
        ),
        ToolName::ServerOverview => object(
            json!({
                "success": { "const": true },
                "overview": {
                    "type": "string",
                    "description": "The Markdown document; starts with a warning line when stale.",
                },
                "last_updated": {
                    "type": "string",
                    "description": "RFC 3339 time of the last update (empty when unknown).",
                },
                "pending_events": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Changes in the audit log not merged into the overview yet.",
                },
                "stale": {
                    "type": "boolean",
                    "description": "Changes are waiting and the overview is older than two merge intervals.",
                },
            }),
            &[
                "success",
                "overview",
                "last_updated",
                "pending_events",
                "stale",
            ],
        ),
        ToolName::JobOutput => object(
            json!({
                "job_id": { "type": "string" },
                "stdout": { "type": "string", "description": "Output from stdout_offset on." },
                "stderr": { "type": "string", "description": "Output from stderr_offset on." },
                "stdout_offset": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Pass back to continue reading stdout.",
                },
                "stderr_offset": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Pass back to continue reading stderr.",
                },
                "running": { "type": "boolean" },
                "exit_code": nullable("integer", "null while running."),
                "complete": {
                    "type": "boolean",
                    "description": "The job ended and all its output was read.",
                },
                "output_truncated": {
                    "type": "boolean",
                    "description": "The job wrote more than the server keeps.",
                },
            }),
            &[
                "job_id",
                "stdout",
                "stderr",
                "stdout_offset",
                "stderr_offset",
                "running",
                "exit_code",
                "complete",
                "output_truncated",
            ],
        ),
    }
}

/// A value of `kind` or `null`, spelled with `anyOf` (single-`type` schema dialects, such as
/// the one some model providers map tool schemas onto, do not take a list of types).
fn nullable(kind: &str, description: &str) -> Value {
    json!({
        "anyOf": [{ "type": kind }, { "type": "null" }],
        "description": description,
    })
}

/// A closed object schema.
/// The result of `prepare_upload`/`prepare_download`: the common grant keys plus `extra`.
fn grant_schema(extra: Value, extra_required: &[&str]) -> Value {
    let mut properties = json!({
        "success": { "const": true },
        "url": { "type": "string", "description": "The one-time URL (relative unless MYMCP_PUBLIC_BASE_URL is set)." },
        "method": { "type": "string", "enum": ["PUT", "GET"] },
        "ticket": { "type": "string", "description": "The signed ticket inside the URL." },
        "expires_in": { "type": "integer", "minimum": 1, "description": "Seconds the URL stays valid." },
        "expires_at": { "type": "string", "description": "UTC expiry, YYYY-MM-DDTHH:MM:SSZ." },
        "curl_example": { "type": "string", "description": "A curl command to run in the client's own shell." },
        "instructions": { "type": "string" },
        "on_error": { "type": "string" },
    });
    let map = properties.as_object_mut().expect("object");
    for (k, v) in extra.as_object().expect("object") {
        map.insert(k.clone(), v.clone());
    }
    let mut required = vec![
        "success",
        "url",
        "method",
        "ticket",
        "expires_in",
        "expires_at",
        "curl_example",
        "instructions",
        "on_error",
    ];
    required.extend_from_slice(extra_required);
    object(properties, &required)
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn bash_result_schema() -> Value {
    object(
        json!({
            "stdout": { "type": "string" },
            "stderr": {
                "type": "string",
                "description": "Ends with 'Command timed out after Ns' when timed_out.",
            },
            "exit_code": {
                "type": "integer",
                "description": "Exit status, or -N when killed by signal N.",
            },
            "timed_out": { "type": "boolean" },
            "limit_hit": {
                "type": "string",
                "description": "Present when the kernel enforced a limit on the command, e.g. 'killed: memory limit 256 MiB reached'.",
            },
        }),
        &["stdout", "stderr", "exit_code", "timed_out"],
    )
}

fn job_schema() -> Value {
    object(
        json!({
            "job_id": { "type": "string" },
            "command": { "type": "string" },
            "working_dir": { "type": "string" },
            "running": { "type": "boolean" },
            "exit_code": nullable("integer", "null while running; -N when killed by signal N."),
            "timed_out": { "type": "boolean" },
            "killed": { "type": "boolean", "description": "Ended by job_kill." },
            "started_at": { "type": "string", "description": "RFC 3339 UTC time." },
            "finished_at": nullable("string", "RFC 3339 UTC time; null while running."),
            "duration_ms": { "type": "integer", "minimum": 0 },
            "timeout": { "type": "integer", "description": "Seconds the job may run." },
            "stdout_bytes": { "type": "integer", "minimum": 0 },
            "stderr_bytes": { "type": "integer", "minimum": 0 },
            "output_truncated": { "type": "boolean" },
            "limit_hit": {
                "type": "string",
                "description": "Present when the kernel enforced a limit on the job, e.g. 'killed: memory limit 256 MiB reached'.",
            },
        }),
        &[
            "job_id",
            "command",
            "working_dir",
            "running",
            "exit_code",
            "timed_out",
            "killed",
            "started_at",
            "finished_at",
            "duration_ms",
            "timeout",
            "stdout_bytes",
            "stderr_bytes",
            "output_truncated",
        ],
    )
}

/// The schema property naming a terminal.
fn terminal_id_property() -> Value {
    json!({ "type": "string" })
}

fn terminal_schema() -> Value {
    object(
        json!({
            "terminal_id": { "type": "string" },
            "command": { "type": "string" },
            "rows": { "type": "integer" },
            "cols": { "type": "integer" },
            "running": { "type": "boolean" },
            "exit_code": nullable("integer", "null while running; -N when killed by signal N."),
            "started_at": { "type": "string" },
        }),
        &[
            "terminal_id",
            "command",
            "rows",
            "cols",
            "running",
            "exit_code",
            "started_at",
        ],
    )
}

/// The schema property naming a job.
fn job_id_property() -> Value {
    json!({
        "type": "string",
        "description": "The job_id that bash_execute with background: true returned.",
    })
}

const READ_ONLY: Annotations = Annotations {
    read_only: true,
    destructive: None,
    idempotent: None,
    open_world: false,
};

/// The tools a holder of `role` may call and the host can serve now (`offer`), in
/// [`ToolName::ALL`] order. `server_overview` is listed only where there is an overview to
/// return: elsewhere (the quick try, a host without the recorder) every call of it would fail,
/// and a model told to read it first would start with an error. It stays callable.
pub fn visible_to(role: Role, offer: HostOffer) -> Vec<ToolEntry> {
    ToolName::ALL
        .into_iter()
        .filter(|t| role.allows(t.required_role()))
        .filter(|t| *t != ToolName::ServerOverview || offer.server_overview)
        .map(entry)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_OVERVIEW: HostOffer = HostOffer {
        server_overview: true,
    };

    fn names(role: Role) -> Vec<&'static str> {
        visible_to(role, WITH_OVERVIEW)
            .iter()
            .map(|e| e.name)
            .collect()
    }

    #[test]
    fn server_overview_is_listed_and_named_only_where_the_host_has_an_overview() {
        let without = HostOffer::default();
        for role in [Role::Ro, Role::Rw] {
            let listed: Vec<_> = visible_to(role, without).iter().map(|e| e.name).collect();
            assert!(!listed.contains(&"server_overview"), "{listed:?}");
            let mut expected = names(role);
            expected.retain(|n| *n != "server_overview");
            assert_eq!(listed, expected);
        }
        assert!(!instructions(without).contains("server_overview"));
        assert!(instructions(WITH_OVERVIEW).contains("server_overview describes the host"));
        assert!(instructions(WITH_OVERVIEW).contains("prepare_download, server_overview;"));
        // Everything else is the same text.
        assert_eq!(
            instructions(WITH_OVERVIEW)
                .replace(
                    " server_overview describes the host (what is installed, deployed and \
recently changed): read it first to get oriented.",
                    ""
                )
                .replace(", server_overview;", ";"),
            instructions(without)
        );
        // Every tool the instructions name for ro is one ro sees.
        for name in ["read_file", "glob", "grep", "prepare_download"] {
            assert!(names(Role::Ro).contains(&name));
        }
    }

    #[test]
    fn ro_sees_only_read_tools_and_rw_sees_all_in_order() {
        assert_eq!(
            names(Role::Ro),
            [
                "read_file",
                "glob",
                "grep",
                "prepare_download",
                "server_overview"
            ]
        );
        assert_eq!(
            names(Role::Rw),
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
        assert!(names(Role::Admin).is_empty());
        assert!(names(Role::Metrics).is_empty());
    }

    /// What the model reads of this server: the instructions, and every tool's name, title,
    /// description and input schema (as `tools/list` sends them). The budget of issue 24.
    pub(crate) fn model_text_bytes(role: Role, offer: HostOffer) -> usize {
        instructions(offer).len()
            + visible_to(role, offer)
                .iter()
                .map(|e| {
                    e.name.len()
                        + e.title.len()
                        + e.description.len()
                        + serde_json::to_string(&e.input_schema).unwrap().len()
                })
                .sum::<usize>()
    }

    #[test]
    fn what_the_model_reads_fits_in_16_kib() {
        let total = model_text_bytes(Role::Rw, WITH_OVERVIEW);
        eprintln!("model text: {total} bytes");
        assert!(total <= 16 * 1024, "{total} bytes");
    }

    #[test]
    fn schemas_name_required_fields_and_defaults() {
        let bash = serde_json::to_value(entry(ToolName::BashExecute)).unwrap();
        assert_eq!(bash["inputSchema"]["required"], json!(["command"]));
        assert_eq!(bash["inputSchema"]["properties"]["timeout"]["default"], 30);
        assert_eq!(
            bash["inputSchema"]["properties"]["max_output_bytes"]["default"],
            102400
        );
        assert_eq!(
            bash["annotations"],
            json!({"readOnlyHint": false, "destructiveHint": true,
                   "idempotentHint": false, "openWorldHint": true})
        );
        let read = serde_json::to_value(entry(ToolName::ReadFile)).unwrap();
        assert_eq!(read["inputSchema"]["required"], json!(["file_path"]));
        assert_eq!(read["inputSchema"]["properties"]["limit"]["default"], 2000);
        assert_eq!(
            read["annotations"],
            json!({"readOnlyHint": true, "openWorldHint": false})
        );
    }

    #[test]
    fn every_schema_property_is_one_the_decoder_reads() {
        // A property advertised but not decoded would be silently ignored.
        for tool in ToolName::ALL {
            let schema = entry(tool).input_schema;
            let props = schema["properties"].as_object().unwrap();
            for (name, prop) in props {
                let mut args = serde_json::Map::new();
                for (n, p) in props {
                    let v = match p["type"].as_str() {
                        Some("string") => p["enum"].get(0).cloned().unwrap_or(json!("/x")),
                        Some("boolean") => json!(true),
                        Some("array") => json!(["x"]),
                        _ => json!(1),
                    };
                    args.insert(n.clone(), v);
                }
                assert!(
                    crate::arguments::decode(tool, Some(&Value::Object(args.clone()))).is_ok(),
                    "{tool}: a valid sample must decode"
                );
                // Now give this one property the wrong type: decoding must complain about it.
                let wrong = if prop["type"] == "string" || prop["type"] == "array" {
                    json!(1)
                } else {
                    json!("1")
                };
                args.insert(name.clone(), wrong);
                let err = crate::arguments::decode(tool, Some(&Value::Object(args))).unwrap_err();
                assert!(err.to_string().contains(name.as_str()), "{tool}: {err}");
            }
        }
    }
}
