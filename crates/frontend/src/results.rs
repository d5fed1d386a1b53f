//! Turning typed tool outcomes into MCP `tools/call` results.
//!
//! Every outcome becomes one text content item holding the *tool JSON*: compact, raw UTF-8,
//! keys in a fixed order (these are `Serialize` structs, not maps, because `serde_json`'s map
//! sorts keys), and carries the very same JSON as `structuredContent`. Every failure — a
//! domain failure from the executor, a refusal by the frontend, arguments that do not match
//! the input schema — has one shape, the reference's `{"success":false,"error":…,"message":…}`
//! (plus `"suggestion"` sometimes), flagged with `isError: true`. Each tool's published
//! [`crate::catalogue::output_schema`] is "its success or a failure" (`anyOf`), so the
//! structured content of every result matches it by construction: clients validate it (the
//! TypeScript SDK does, even on errors), and Gemini CLI parses the text item of a result
//! without `structuredContent` and validates that, so a schema that described successes alone
//! would turn every error into "Structured content does not match the tool's output schema".
//!
//! Command output can be a megabyte per stream and is escaped twice (as a JSON value, then as
//! the text item holding that JSON), so those strings go through `json_string` rather than
//! `serde_json`'s byte-by-byte escaping, and valid UTF-8 is taken over without a copy.

use crate::json_string;
use crate::tickets::Tickets;
use mymcp_protocol::{
    BashOutput, CapturedStream, Direction, EditFileOutput, GlobOutput, GrepOutput, JobInfo,
    JobOutputChunk, ReadFileOutput, TerminalInfo, TerminalScreen, ToolFailure, ToolOutput,
    TransferGrant, WriteFileOutput,
};
use serde::Serialize;

/// The `result` of a `tools/call` response.
#[derive(Clone, Debug)]
pub struct CallToolResult {
    pub content: Vec<TextContent>,
    pub is_error: bool,
    /// The text of the one content item is the tool JSON, and goes out a second time,
    /// embedded as it is, as `structuredContent` (one string, written twice).
    structured: bool,
    /// The tool JSON was taken out by [`CallToolResult::take_tool_json`]: the result
    /// serializes with [`TEXT_MARK`] and [`JSON_MARK`] where it goes.
    taken: bool,
}

/// Stands for the text item's string literal in a result whose tool JSON was taken out. A
/// control character cannot appear raw anywhere else in `serde_json`'s output.
pub const TEXT_MARK: &str = "\u{1}text\u{1}";
/// Stands for `structuredContent` in a result whose tool JSON was taken out.
pub const JSON_MARK: &str = "\u{1}json\u{1}";

impl Serialize for CallToolResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(Serialize)]
        struct Marked {
            #[serde(rename = "type")]
            kind: &'static str,
            text: json_string::Verbatim<'static>,
        }
        let structured = self.structured_content();
        let mut s = serializer.serialize_struct(
            "CallToolResult",
            2 + usize::from(structured.is_some() || self.taken),
        )?;
        if self.taken {
            let marked = [Marked {
                kind: "text",
                text: json_string::Verbatim(TEXT_MARK),
            }];
            s.serialize_field("content", &marked)?;
        } else {
            s.serialize_field("content", &self.content)?;
        }
        s.serialize_field("isError", &self.is_error)?;
        if self.taken {
            s.serialize_field("structuredContent", &json_string::Verbatim(JSON_MARK))?;
        } else if let Some(json) = structured {
            s.serialize_field("structuredContent", &json_string::Verbatim(json))?;
        }
        s.end()
    }
}

/// An MCP text content item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TextContent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(serialize_with = "json_string::serialize")]
    pub text: String,
}

impl CallToolResult {
    /// A result whose one text item is `json`, which is also its `structuredContent`.
    fn tool_json(json: String, is_error: bool) -> Self {
        CallToolResult {
            content: vec![TextContent {
                kind: "text",
                text: json,
            }],
            is_error,
            structured: true,
            taken: false,
        }
    }

    /// Takes out the tool JSON, leaving marks in its place (see [`TEXT_MARK`]):
    /// the caller writes it into the response itself, escaped once for the text item and
    /// as it is for `structuredContent`, with no copy of its own.
    pub fn take_tool_json(&mut self) -> Option<String> {
        if !self.structured || self.taken || self.content.len() != 1 {
            return None;
        }
        self.taken = true;
        Some(std::mem::take(&mut self.content[0].text))
    }

    /// The job a handed-off `bash_execute` goes on as: its answer is `job_output`'s JSON with
    /// `running` true (a finished command's JSON has no `job_id`).
    pub fn handed_off_job(&self) -> Option<String> {
        if self.is_error {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(self.structured_content()?).ok()?;
        if json.get("stdout_offset").is_none() || json["running"] != true {
            return None;
        }
        json["job_id"].as_str().map(str::to_owned)
    }

    /// The tool JSON, which is also the `structuredContent`.
    pub fn structured_content(&self) -> Option<&str> {
        match self.content.as_slice() {
            [item] if self.structured => Some(&item.text),
            _ => None,
        }
    }

    /// The result for a tool outcome from the executor. `tickets` turns a transfer grant into
    /// its ticket and URL.
    pub fn from_outcome(outcome: Result<ToolOutput, ToolFailure>, tickets: &Tickets) -> Self {
        match outcome {
            Ok(output) => CallToolResult::success(output_json(output, tickets)),
            Err(failure) => CallToolResult::failure(&failure),
        }
    }

    /// A success: the tool JSON as text and as structured content.
    fn success(json: String) -> Self {
        CallToolResult::tool_json(json, false)
    }

    /// The result for a failure, whether the executor or the frontend produced it (arguments
    /// that do not match the input schema included): the failure JSON as text and as
    /// structured content, with `isError`.
    pub fn failure(failure: &ToolFailure) -> Self {
        CallToolResult::tool_json(failure_json(failure), true)
    }
}

#[derive(Serialize)]
struct BashJson {
    #[serde(serialize_with = "json_string::serialize")]
    stdout: String,
    #[serde(serialize_with = "json_string::serialize")]
    stderr: String,
    exit_code: i32,
    timed_out: bool,
    /// The kernel limit the command hit (cgroup confinement); absent when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_hit: Option<String>,
}

#[derive(Serialize)]
struct ReadFileJson<'a> {
    #[serde(serialize_with = "json_string::serialize")]
    content: &'a str,
    total_lines: u64,
    truncated: bool,
    #[serde(skip_serializing_if = "is_true")]
    total_lines_exact: bool,
}

#[derive(Serialize)]
struct WriteFileJson {
    success: bool,
    bytes_written: u64,
}

#[derive(Serialize)]
struct EditFileJson {
    success: bool,
    replacements: u64,
}

#[derive(Serialize)]
struct OverviewJson<'a> {
    success: bool,
    overview: &'a str,
    last_updated: &'a str,
    pending_events: u64,
    stale: bool,
}

#[derive(Serialize)]
struct GlobJson<'a> {
    files: &'a [String],
    count: u64,
    truncated: bool,
}

#[derive(Serialize)]
struct GrepJson<'a> {
    results: &'a str,
    match_count: u64,
    #[serde(skip_serializing_if = "is_true")]
    match_count_exact: bool,
}

#[derive(Serialize)]
struct FailureJson<'a> {
    success: bool,
    error: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    suggestion: Option<&'a str>,
}

#[derive(Serialize)]
struct JobJson<'a> {
    job_id: &'a str,
    command: &'a str,
    working_dir: &'a str,
    running: bool,
    exit_code: Option<i32>,
    timed_out: bool,
    killed: bool,
    started_at: &'a str,
    finished_at: Option<&'a str>,
    duration_ms: u64,
    timeout: u32,
    stdout_bytes: u64,
    stderr_bytes: u64,
    output_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_hit: Option<&'a str>,
}

#[derive(Serialize)]
struct JobOutputJson<'a> {
    job_id: &'a str,
    #[serde(serialize_with = "json_string::serialize")]
    stdout: String,
    #[serde(serialize_with = "json_string::serialize")]
    stderr: String,
    stdout_offset: u64,
    stderr_offset: u64,
    running: bool,
    exit_code: Option<i32>,
    complete: bool,
    output_truncated: bool,
}

#[derive(Serialize)]
struct TerminalJson<'a> {
    terminal_id: &'a str,
    command: &'a str,
    rows: u16,
    cols: u16,
    running: bool,
    exit_code: Option<i32>,
    started_at: &'a str,
}

#[derive(Serialize)]
struct TerminalListJson<'a> {
    terminals: Vec<TerminalJson<'a>>,
}

#[derive(Serialize)]
struct TerminalSentJson {
    success: bool,
    bytes_sent: u64,
}

#[derive(Serialize)]
struct TerminalScreenJson {
    #[serde(serialize_with = "json_string::serialize")]
    screen: String,
    cursor: [u16; 2],
    #[serde(serialize_with = "json_string::serialize")]
    output: String,
    #[serde(skip_serializing_if = "is_zero")]
    output_dropped: u64,
    matched: bool,
    running: bool,
    exit_code: Option<i32>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn terminal(t: &TerminalInfo) -> TerminalJson<'_> {
    TerminalJson {
        terminal_id: &t.terminal_id,
        command: &t.command,
        rows: t.rows,
        cols: t.cols,
        running: t.running,
        exit_code: t.exit_code,
        started_at: &t.started_at,
    }
}

fn terminal_screen_json(s: TerminalScreen) -> String {
    to_json(&TerminalScreenJson {
        screen: s.screen,
        cursor: [s.cursor_row, s.cursor_col],
        output: s.output,
        output_dropped: s.output_dropped,
        matched: s.matched,
        running: s.running,
        exit_code: s.exit_code,
    })
}

#[derive(Serialize)]
struct UploadGrantJson<'a> {
    success: bool,
    url: &'a str,
    method: &'static str,
    ticket: &'a str,
    expires_in: u64,
    expires_at: &'a str,
    max_bytes: u64,
    dest_path: &'a str,
    overwrite: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    curl_example: String,
    instructions: &'static str,
    on_error: &'static str,
}

#[derive(Serialize)]
struct DownloadGrantJson<'a> {
    success: bool,
    url: &'a str,
    method: &'static str,
    ticket: &'a str,
    expires_in: u64,
    expires_at: &'a str,
    size: u64,
    src_path: &'a str,
    curl_example: String,
    instructions: &'static str,
    on_error: &'static str,
}

const UPLOAD_INSTRUCTIONS: &str = "Run curl_example in the client's own shell (not with \
bash_execute: the file is on the client), replacing /local/path/to/file with the file to send. \
The bytes stream straight to the server, never through the conversation. On success the server \
answers {\"ok\": true, \"path\": \"...\", \"bytes_written\": N, \"sha256\": \"...\"}.";

const DOWNLOAD_INSTRUCTIONS: &str = "Run curl_example in the client's own shell (not with \
bash_execute: the file goes to the client), choosing the local path after -o. The bytes stream \
straight from the server, never through the conversation.";

const ON_ERROR: &str = "On an HTTP error the JSON body says why: {\"ok\": false, \"error\": \
code, \"hint\": text}. A ticket is spent by the transfer that completes; after a failed one \
(cut connection, too large, checksum mismatch) the same URL can be retried until it expires. \
Expired (410) or used (409) tickets need a new prepare call.";

/// Quotes a string for a POSIX shell command line.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The tool JSON of `prepare_upload`/`prepare_download`: the reference's keys, in its order.
fn transfer_json(grant: &TransferGrant, tickets: &Tickets) -> String {
    let ticket = tickets.mint(grant);
    let url = tickets.url(&ticket);
    match grant.direction {
        Direction::Upload => to_json(&UploadGrantJson {
            success: true,
            url: &url,
            method: "PUT",
            ticket: &ticket,
            expires_in: grant.expires_in,
            expires_at: &grant.expires_at,
            max_bytes: grant.bytes,
            dest_path: &grant.path,
            overwrite: grant.overwrite,
            sha256: grant.sha256.as_deref(),
            curl_example: format!("curl -fsS -T /local/path/to/file {}", shell_quote(&url)),
            instructions: UPLOAD_INSTRUCTIONS,
            on_error: ON_ERROR,
        }),
        Direction::Download => {
            let name = std::path::Path::new(&grant.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "download".into());
            to_json(&DownloadGrantJson {
                success: true,
                url: &url,
                method: "GET",
                ticket: &ticket,
                expires_in: grant.expires_in,
                expires_at: &grant.expires_at,
                size: grant.bytes,
                src_path: &grant.path,
                curl_example: format!(
                    "curl -fsS {} -o {}",
                    shell_quote(&url),
                    shell_quote(&format!("/local/path/{name}"))
                ),
                instructions: DOWNLOAD_INSTRUCTIONS,
                on_error: ON_ERROR,
            })
        }
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

fn to_json<T: Serialize>(value: &T) -> String {
    // These structs hold only strings, integers and booleans: serialization cannot fail.
    serde_json::to_string(value).expect("tool JSON serializes")
}

/// The tool JSON of a successful result.
pub fn output_json(output: ToolOutput, tickets: &Tickets) -> String {
    match output {
        ToolOutput::Bash(bash) => bash_json(bash),
        ToolOutput::ReadFile(read) => read_file_json(&read),
        ToolOutput::WriteFile(WriteFileOutput { bytes_written }) => to_json(&WriteFileJson {
            success: true,
            bytes_written,
        }),
        ToolOutput::EditFile(EditFileOutput { replacements }) => to_json(&EditFileJson {
            success: true,
            replacements,
        }),
        ToolOutput::Glob(GlobOutput {
            files,
            count,
            truncated,
        }) => to_json(&GlobJson {
            files: &files,
            count,
            truncated,
        }),
        ToolOutput::Grep(GrepOutput {
            results,
            match_count,
            match_count_exact,
        }) => to_json(&GrepJson {
            results: &results,
            match_count,
            match_count_exact,
        }),
        ToolOutput::Job(job) => job_json(&job),
        ToolOutput::JobOutput(chunk) => job_output_json(chunk),
        ToolOutput::TransferGrant(grant) => transfer_json(&grant, tickets),
        ToolOutput::Terminal(t) => to_json(&terminal(&t)),
        ToolOutput::TerminalList(list) => to_json(&TerminalListJson {
            terminals: list.iter().map(terminal).collect(),
        }),
        ToolOutput::TerminalSent(bytes_sent) => to_json(&TerminalSentJson {
            success: true,
            bytes_sent,
        }),
        ToolOutput::TerminalScreen(s) => terminal_screen_json(s),
        ToolOutput::Overview(o) => to_json(&OverviewJson {
            success: true,
            overview: &o.overview,
            last_updated: &o.last_updated,
            pending_events: o.pending_events,
            stale: o.stale,
        }),
    }
}

/// Bytes as text: taken over as they are when they are UTF-8, else with each invalid sequence
/// replaced by U+FFFD.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn job_json(job: &JobInfo) -> String {
    to_json(&JobJson {
        job_id: &job.job_id,
        command: &job.command,
        working_dir: &job.working_dir,
        running: job.running,
        exit_code: job.exit_code,
        timed_out: job.timed_out,
        killed: job.killed,
        started_at: &job.started_at,
        finished_at: job.finished_at.as_deref(),
        duration_ms: job.duration_ms,
        timeout: job.timeout_secs,
        stdout_bytes: job.stdout_bytes,
        stderr_bytes: job.stderr_bytes,
        output_truncated: job.output_truncated,
        limit_hit: job.limit_hit.as_deref(),
    })
}

/// Bytes become text with invalid UTF-8 replaced by U+FFFD; the offsets stay byte offsets.
fn job_output_json(chunk: JobOutputChunk) -> String {
    to_json(&JobOutputJson {
        job_id: &chunk.job_id,
        stdout: text(chunk.stdout),
        stderr: text(chunk.stderr),
        stdout_offset: chunk.stdout_offset,
        stderr_offset: chunk.stderr_offset,
        running: chunk.running,
        exit_code: chunk.exit_code,
        complete: chunk.complete,
        output_truncated: chunk.output_truncated,
    })
}

fn bash_json(out: BashOutput) -> String {
    let mut stderr = stream_text(out.stderr);
    if out.timed_out {
        if !stderr.is_empty() {
            stderr.push('\n');
        }
        stderr.push_str(&format!("Command timed out after {}s", out.timeout_secs));
    }
    if let Some(limit) = &out.limit_hit {
        if !stderr.is_empty() {
            stderr.push('\n');
        }
        stderr.push_str(&format!("Command {limit}"));
    }
    to_json(&BashJson {
        stdout: stream_text(out.stdout),
        stderr,
        exit_code: out.exit_code,
        timed_out: out.timed_out,
        limit_hit: out.limit_hit,
    })
}

/// A captured stream as text, with the reference's marker when it was cut.
fn stream_text(stream: CapturedStream) -> String {
    let (truncated, kept) = (stream.truncated(), stream.head.len());
    let mut text = text(stream.head);
    if truncated {
        text.push_str(&format!(
            "\n[TRUNCATED: total {} bytes, showing first {kept} bytes]",
            stream.total_bytes,
        ));
    }
    text
}

fn read_file_json(out: &ReadFileOutput) -> String {
    to_json(&ReadFileJson {
        content: &out.content,
        total_lines: out.total_lines,
        truncated: out.truncated,
        total_lines_exact: out.total_lines_exact,
    })
}

/// The tool JSON of a failure.
pub fn failure_json(failure: &ToolFailure) -> String {
    to_json(&FailureJson {
        success: false,
        error: failure.code.as_str(),
        message: &failure.message,
        suggestion: failure.suggestion.as_deref(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_protocol::ErrorCode;

    fn tickets() -> Tickets {
        Tickets::with_key([5; 32], "http://h:1/")
    }

    #[test]
    fn transfer_grants_become_urls_tickets_and_curl_lines() {
        let grant = TransferGrant {
            grant: mymcp_protocol::GrantId([9; 16]),
            direction: Direction::Upload,
            expires_at_unix: 4_000_000_000,
            expires_in: 300,
            expires_at: "2096-10-02T07:06:40Z".into(),
            path: "/srv/in/a b.bin".into(),
            bytes: 1024,
            overwrite: false,
            sha256: None,
        };
        let r =
            CallToolResult::from_outcome(Ok(ToolOutput::TransferGrant(grant.clone())), &tickets());
        assert!(!r.is_error);
        let v: serde_json::Value = serde_json::from_str(&r.content[0].text).unwrap();
        // The reference's keys in its order (the text, not the parsed value, keeps the order).
        let text = &r.content[0].text;
        let at = |k: &str| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k}"))
        };
        let order = [
            "success",
            "url",
            "method",
            "ticket",
            "expires_in",
            "expires_at",
            "max_bytes",
            "dest_path",
            "overwrite",
            "curl_example",
            "instructions",
            "on_error",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{text}");
        assert!(v.get("sha256").is_none());
        let ticket = v["ticket"].as_str().unwrap();
        assert_eq!(v["url"], format!("http://h:1/files/raw/{ticket}"));
        assert_eq!(v["method"], "PUT");
        assert_eq!(
            v["curl_example"],
            format!("curl -fsS -T /local/path/to/file 'http://h:1/files/raw/{ticket}'")
        );
        assert!(tickets().verify(ticket, 0).is_ok());

        let download = TransferGrant {
            direction: Direction::Download,
            path: "/var/log/it's.log".into(),
            ..grant
        };
        let v: serde_json::Value =
            serde_json::from_str(&transfer_json(&download, &tickets())).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["size"], 1024);
        assert_eq!(v["src_path"], "/var/log/it's.log");
        assert!(v.get("max_bytes").is_none());
        let ticket = v["ticket"].as_str().unwrap();
        assert_eq!(
            v["curl_example"],
            format!("curl -fsS 'http://h:1/files/raw/{ticket}' -o '/local/path/it'\\''s.log'")
        );
    }

    fn stream(head: &[u8], total: u64) -> CapturedStream {
        CapturedStream {
            head: head.to_vec(),
            total_bytes: total,
        }
    }

    fn bash(stdout: CapturedStream, stderr: CapturedStream, timed_out: bool) -> BashOutput {
        BashOutput {
            stdout,
            stderr,
            exit_code: if timed_out { -1 } else { 0 },
            timed_out,
            timeout_secs: 5,
            limit_hit: None,
        }
    }

    #[test]
    fn a_limit_the_kernel_enforced_is_named_in_stderr_and_its_own_key() {
        let mut out = bash(stream(b"", 0), stream(b"Killed", 6), false);
        out.limit_hit = Some("killed: memory limit 256 MiB reached".into());
        let json: serde_json::Value = serde_json::from_str(&bash_json(out)).unwrap();
        assert_eq!(
            json["stderr"],
            "Killed\nCommand killed: memory limit 256 MiB reached"
        );
        assert_eq!(json["limit_hit"], "killed: memory limit 256 MiB reached");
        let plain = bash(stream(b"", 0), stream(b"", 0), false);
        let json: serde_json::Value = serde_json::from_str(&bash_json(plain)).unwrap();
        assert!(json.get("limit_hit").is_none(), "{json}");
    }

    #[test]
    fn bash_result_has_the_reference_keys_in_order() {
        let out = bash(stream(b"hi\n", 3), stream(b"", 0), false);
        let result = CallToolResult::from_outcome(Ok(ToolOutput::Bash(out)), &tickets());
        assert!(!result.is_error);
        assert_eq!(
            result.content[0].text,
            r#"{"stdout":"hi\n","stderr":"","exit_code":0,"timed_out":false}"#
        );
    }

    #[test]
    fn truncated_stream_gets_the_marker_and_a_cut_character_becomes_replacement() {
        // "é" is two bytes; the head ends in the middle of it.
        let out = bash(stream(b"ab\xc3", 10), stream(b"", 0), false);
        let json: serde_json::Value = serde_json::from_str(&bash_json(out)).unwrap();
        assert_eq!(
            json["stdout"],
            "ab\u{fffd}\n[TRUNCATED: total 10 bytes, showing first 3 bytes]"
        );
    }

    #[test]
    fn timeout_text_is_appended_to_stderr() {
        let out = bash(stream(b"partial", 7), stream(b"", 0), true);
        let json: serde_json::Value = serde_json::from_str(&bash_json(out)).unwrap();
        assert_eq!(json["stderr"], "Command timed out after 5s");
        assert_eq!(json["stdout"], "partial");
        assert_eq!(json["timed_out"], true);
        assert_eq!(json["exit_code"], -1);

        let out = bash(stream(b"", 0), stream(b"warning", 7), true);
        let json: serde_json::Value = serde_json::from_str(&bash_json(out)).unwrap();
        assert_eq!(json["stderr"], "warning\nCommand timed out after 5s");
    }

    #[test]
    fn output_is_raw_utf8_not_escaped() {
        let text = "ü <&>".as_bytes();
        let out = bash(stream(text, text.len() as u64), stream(b"", 0), false);
        assert!(bash_json(out).contains(r#""stdout":"ü <&>""#));
    }

    #[test]
    fn read_file_marks_only_inexact_line_counts() {
        let mut out = ReadFileOutput {
            content: "   1\thello".into(),
            total_lines: 1,
            total_lines_exact: true,
            truncated: false,
        };
        assert_eq!(
            read_file_json(&out),
            r#"{"content":"   1\thello","total_lines":1,"truncated":false}"#
        );
        out.total_lines_exact = false;
        assert_eq!(
            read_file_json(&out),
            r#"{"content":"   1\thello","total_lines":1,"truncated":false,"total_lines_exact":false}"#
        );
    }

    #[test]
    fn file_tool_results_have_the_reference_keys_in_order() {
        let j = |o| output_json(o, &tickets());
        assert_eq!(
            j(ToolOutput::WriteFile(WriteFileOutput { bytes_written: 5 })),
            r#"{"success":true,"bytes_written":5}"#
        );
        assert_eq!(
            j(ToolOutput::EditFile(EditFileOutput { replacements: 2 })),
            r#"{"success":true,"replacements":2}"#
        );
        assert_eq!(
            j(ToolOutput::Glob(GlobOutput {
                files: vec![],
                count: 0,
                truncated: false
            })),
            r#"{"files":[],"count":0,"truncated":false}"#
        );
        assert_eq!(
            j(ToolOutput::Grep(GrepOutput {
                results: "a:1:x".into(),
                match_count: 1,
                match_count_exact: true
            })),
            r#"{"results":"a:1:x","match_count":1}"#
        );
        assert_eq!(
            j(ToolOutput::Grep(GrepOutput {
                results: "".into(),
                match_count: 9,
                match_count_exact: false
            })),
            r#"{"results":"","match_count":9,"match_count_exact":false}"#
        );
    }

    #[test]
    fn overview_result_has_the_reference_keys_in_order() {
        let out = ToolOutput::Overview(mymcp_protocol::OverviewOutput {
            overview: "# h\n".into(),
            last_updated: "2026-01-01T00:00:00Z".into(),
            pending_events: 2,
            stale: true,
        });
        assert_eq!(
            output_json(out, &tickets()),
            r##"{"success":true,"overview":"# h\n","last_updated":"2026-01-01T00:00:00Z","pending_events":2,"stale":true}"##
        );
    }

    #[test]
    fn failure_json_key_order_and_is_error() {
        let f = ToolFailure::new(ErrorCode::FileNotFoundError, "File not found: /nope")
            .with_suggestion("Check the file path");
        let result = CallToolResult::from_outcome(Err(f), &tickets());
        assert!(result.is_error);
        assert_eq!(
            result.content[0].text,
            r#"{"success":false,"error":"FileNotFoundError","message":"File not found: /nope","suggestion":"Check the file path"}"#
        );
        let f = ToolFailure::new(ErrorCode::UnknownTool, "Unknown tool: x");
        assert_eq!(
            failure_json(&f),
            r#"{"success":false,"error":"UnknownTool","message":"Unknown tool: x"}"#
        );
    }

    #[test]
    fn job_json_key_order_and_nulls_while_running() {
        let job = JobInfo {
            job_id: "0123456789abcdef".into(),
            command: "sleep 9".into(),
            working_dir: "/".into(),
            running: true,
            exit_code: None,
            timed_out: false,
            killed: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            duration_ms: 5,
            timeout_secs: 3600,
            stdout_bytes: 0,
            stderr_bytes: 0,
            output_truncated: false,
            limit_hit: None,
            output_cap: 102_400,
        };
        assert_eq!(
            job_json(&job),
            r#"{"job_id":"0123456789abcdef","command":"sleep 9","working_dir":"/","running":true,"exit_code":null,"timed_out":false,"killed":false,"started_at":"2026-01-01T00:00:00Z","finished_at":null,"duration_ms":5,"timeout":3600,"stdout_bytes":0,"stderr_bytes":0,"output_truncated":false}"#
        );
        let chunk = JobOutputChunk {
            job_id: "0123456789abcdef".into(),
            stdout: b"hi\xff".to_vec(),
            stderr: Vec::new(),
            stdout_offset: 3,
            stderr_offset: 0,
            running: false,
            exit_code: Some(0),
            complete: true,
            output_truncated: false,
        };
        let json: serde_json::Value = serde_json::from_str(&job_output_json(chunk)).unwrap();
        assert_eq!(json["stdout"], "hi\u{fffd}");
        assert_eq!(json["stdout_offset"], 3);
        assert_eq!(json["exit_code"], 0);
        assert_eq!(json["complete"], true);
    }

    /// Checks `value` against the subset of JSON Schema the catalogue uses: `type` (a name or
    /// a list), `const`, `properties`, `required`, `additionalProperties: false`, `items`,
    /// `anyOf`, `minimum`. Returns what does not match.
    fn schema_errors(schema: &serde_json::Value, value: &serde_json::Value) -> Vec<String> {
        use serde_json::Value;
        let mut errors = Vec::new();
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|s| schema_errors(s, value).is_empty()) {
                errors.push(format!("{value} matches no anyOf branch"));
            }
        }
        if let Some(c) = schema.get("const") {
            if c != value {
                errors.push(format!("{value} is not {c}"));
            }
        }
        if let Some(t) = schema.get("type") {
            let names: Vec<&str> = match t {
                Value::String(n) => vec![n],
                Value::Array(ns) => ns.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let ok = names.iter().any(|n| match *n {
                "object" => value.is_object(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "boolean" => value.is_boolean(),
                "array" => value.is_array(),
                "null" => value.is_null(),
                _ => false,
            });
            if !ok {
                errors.push(format!("{value} is not of type {t}"));
            }
        }
        if let (Some(min), Some(n)) = (
            schema.get("minimum").and_then(Value::as_i64),
            value.as_i64(),
        ) {
            if n < min {
                errors.push(format!("{n} < {min}"));
            }
        }
        if let Some(obj) = value.as_object() {
            let props = schema.get("properties").and_then(Value::as_object);
            for key in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !obj.contains_key(key.as_str().unwrap()) {
                    errors.push(format!("missing {key}"));
                }
            }
            for (key, v) in obj {
                match props.and_then(|p| p.get(key)) {
                    Some(s) => errors.extend(schema_errors(s, v)),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("unexpected {key}"))
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for v in array {
                errors.extend(schema_errors(items, v));
            }
        }
        errors
    }

    fn sample_job(running: bool) -> JobInfo {
        JobInfo {
            job_id: "0123456789abcdef".into(),
            command: "sleep 9".into(),
            working_dir: "/".into(),
            running,
            exit_code: (!running).then_some(-15),
            timed_out: false,
            killed: !running,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: (!running).then(|| "2026-01-01T00:00:01Z".into()),
            duration_ms: 5,
            timeout_secs: 3600,
            stdout_bytes: 0,
            stderr_bytes: 0,
            output_truncated: false,
            limit_hit: None,
            output_cap: 102_400,
        }
    }

    fn sample_terminal(running: bool) -> TerminalInfo {
        TerminalInfo {
            terminal_id: "0123456789abcdef".into(),
            command: "python3".into(),
            rows: 24,
            cols: 80,
            running,
            exit_code: (!running).then_some(0),
            started_at: "2026-01-01T00:00:00Z".into(),
            recording: "/var/lib/mymcp/terminals/0123456789abcdef.cast".into(),
            recording_bytes: 10,
            recording_sha256: None,
        }
    }

    #[test]
    fn structured_content_matches_the_output_schema() {
        use crate::catalogue::output_schema;
        use mymcp_protocol::ToolName;
        let chunk = JobOutputChunk {
            job_id: "0123456789abcdef".into(),
            stdout: b"hi\n".to_vec(),
            stderr: Vec::new(),
            stdout_offset: 3,
            stderr_offset: 0,
            running: true,
            exit_code: None,
            complete: false,
            output_truncated: false,
        };
        let cases: Vec<(ToolName, ToolOutput)> = vec![
            (
                ToolName::BashExecute,
                ToolOutput::Bash(bash(stream(b"x", 9), stream(b"", 0), true)),
            ),
            (ToolName::BashExecute, ToolOutput::Job(sample_job(true))),
            (
                ToolName::ReadFile,
                ToolOutput::ReadFile(ReadFileOutput {
                    content: "   1\thi".into(),
                    total_lines: 1,
                    total_lines_exact: true,
                    truncated: false,
                }),
            ),
            (
                ToolName::ReadFile,
                ToolOutput::ReadFile(ReadFileOutput {
                    content: String::new(),
                    total_lines: 9,
                    total_lines_exact: false,
                    truncated: true,
                }),
            ),
            (
                ToolName::WriteFile,
                ToolOutput::WriteFile(WriteFileOutput { bytes_written: 3 }),
            ),
            (
                ToolName::EditFile,
                ToolOutput::EditFile(EditFileOutput { replacements: 1 }),
            ),
            (
                ToolName::Glob,
                ToolOutput::Glob(GlobOutput {
                    files: vec!["/a".into()],
                    count: 2,
                    truncated: true,
                }),
            ),
            (
                ToolName::Grep,
                ToolOutput::Grep(GrepOutput {
                    results: "a:1:x".into(),
                    match_count: 1,
                    match_count_exact: false,
                }),
            ),
            (ToolName::JobStatus, ToolOutput::Job(sample_job(true))),
            (ToolName::JobKill, ToolOutput::Job(sample_job(false))),
            (ToolName::JobOutput, ToolOutput::JobOutput(chunk)),
            (
                ToolName::TerminalOpen,
                ToolOutput::Terminal(sample_terminal(true)),
            ),
            (
                ToolName::TerminalResize,
                ToolOutput::Terminal(sample_terminal(true)),
            ),
            (
                ToolName::TerminalClose,
                ToolOutput::Terminal(sample_terminal(false)),
            ),
            (
                ToolName::TerminalList,
                ToolOutput::TerminalList(vec![sample_terminal(true), sample_terminal(false)]),
            ),
            (ToolName::TerminalSend, ToolOutput::TerminalSent(3)),
            (
                ToolName::TerminalRead,
                ToolOutput::TerminalScreen(TerminalScreen {
                    terminal_id: "0123456789abcdef".into(),
                    screen: ">>> 42\n>>>".into(),
                    cursor_row: 1,
                    cursor_col: 4,
                    output: "42\n".into(),
                    output_dropped: 7,
                    matched: true,
                    running: true,
                    exit_code: None,
                }),
            ),
            (
                ToolName::ServerOverview,
                ToolOutput::Overview(mymcp_protocol::OverviewOutput {
                    overview: "# host\n".into(),
                    last_updated: "2026-01-01T00:00:00Z".into(),
                    pending_events: 3,
                    stale: false,
                }),
            ),
        ];
        let mut cases = cases;
        for (tool, direction, sha256) in [
            (
                ToolName::PrepareUpload,
                Direction::Upload,
                Some("ab".repeat(32)),
            ),
            (ToolName::PrepareUpload, Direction::Upload, None),
            (ToolName::PrepareDownload, Direction::Download, None),
        ] {
            let grant = TransferGrant {
                grant: mymcp_protocol::GrantId([7; 16]),
                direction,
                expires_at_unix: 4_000_000_000,
                expires_in: 300,
                expires_at: "2096-10-02T07:06:40Z".into(),
                path: "/srv/in/a.bin".into(),
                bytes: 1024,
                overwrite: true,
                sha256,
            };
            cases.push((tool, ToolOutput::TransferGrant(grant)));
        }
        let mut covered = std::collections::HashSet::new();
        for (tool, output) in cases {
            covered.insert(tool);
            let result = CallToolResult::from_outcome(Ok(output), &tickets());
            let structured: serde_json::Value =
                serde_json::from_str(result.structured_content().unwrap()).unwrap();
            let text: serde_json::Value = serde_json::from_str(&result.content[0].text).unwrap();
            assert_eq!(
                structured, text,
                "{tool}: structured content is the tool JSON"
            );
            let errors = schema_errors(&output_schema(tool), &structured);
            assert!(errors.is_empty(), "{tool}: {errors:?} in {structured}");
        }
        assert_eq!(
            covered.len(),
            ToolName::ALL.len(),
            "every tool has a sample"
        );
        // And the checker does catch drift.
        let schema = output_schema(ToolName::WriteFile);
        assert!(!schema_errors(&schema, &serde_json::json!({"success": true})).is_empty());
        assert!(!schema_errors(
            &schema,
            &serde_json::json!({"success": true, "bytes_written": 1, "extra": 0})
        )
        .is_empty());
    }

    #[test]
    fn failures_carry_their_json_as_structured_content_too() {
        let f = ToolFailure::new(ErrorCode::FileNotFoundError, "File not found: /nope");
        let json =
            serde_json::to_string(&CallToolResult::from_outcome(Err(f), &tickets())).unwrap();
        assert_eq!(
            json,
            r#"{"content":[{"type":"text","text":"{\"success\":false,\"error\":\"FileNotFoundError\",\"message\":\"File not found: /nope\"}"}],"isError":true,"structuredContent":{"success":false,"error":"FileNotFoundError","message":"File not found: /nope"}}"#
        );
        let ok = CallToolResult::from_outcome(
            Ok(ToolOutput::WriteFile(WriteFileOutput { bytes_written: 5 })),
            &tickets(),
        );
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"content":[{"type":"text","text":"{\"success\":true,\"bytes_written\":5}"}],"isError":false,"structuredContent":{"success":true,"bytes_written":5}}"#
        );
    }

    #[test]
    fn every_failure_matches_every_output_schema() {
        use crate::catalogue::output_schema;
        use mymcp_protocol::ToolName;
        let failures = [
            ToolFailure::new(
                ErrorCode::InvalidPath,
                "file_path must be an absolute path: x",
            ),
            ToolFailure::new(ErrorCode::FileNotFoundError, "File not found: /nope")
                .with_suggestion("Check the file path"),
            ToolFailure::new(
                ErrorCode::InvalidArguments,
                "Input validation error: 'file_path' is a required property",
            ),
            ToolFailure::new(ErrorCode::RecorderDisabled, "overview not generated yet"),
        ];
        for tool in ToolName::ALL {
            let schema = output_schema(tool);
            for f in &failures {
                let result = CallToolResult::failure(f);
                assert!(result.is_error);
                let structured: serde_json::Value =
                    serde_json::from_str(result.structured_content().unwrap()).unwrap();
                let text: serde_json::Value =
                    serde_json::from_str(&result.content[0].text).unwrap();
                assert_eq!(structured, text);
                let errors = schema_errors(&schema, &structured);
                assert!(errors.is_empty(), "{tool}: {errors:?} in {structured}");
            }
            // The failure branch is closed too: it is no catch-all.
            for wrong in [
                serde_json::json!({"success": false, "error": "X"}),
                serde_json::json!({"success": false, "error": "X", "message": "m", "extra": 1}),
                serde_json::json!({"success": true, "error": "X", "message": "m"}),
            ] {
                assert!(
                    !schema_errors(&schema, &wrong).is_empty(),
                    "{tool}: {wrong}"
                );
            }
        }
    }
}
