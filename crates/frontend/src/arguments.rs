//! Decoding `tools/call` arguments (a JSON object) into typed [`ToolCall`]s.
//!
//! The rules follow the tool schemas in [`crate::catalogue`]: required fields must be present,
//! strings must be strings and integers integers (a float with no fractional part such as
//! `30.0` counts as an integer), `null` or an absent optional field means "use the default",
//! and unknown properties are ignored. Ranges are *not* checked here: the executor clamps
//! every value itself (it trusts nothing the frontend sends), so `timeout: 0` reaches it and
//! becomes 1 exactly as in the reference servers.

use mymcp_protocol::{
    BashExecute, EditFile, Glob, Grep, GrepMode, JobKillArgs, JobOutputArgs, JobRef,
    PrepareDownload, PrepareUpload, ReadFile, TerminalOpen, TerminalRead, TerminalRef,
    TerminalResize, TerminalSend, ToolCall, ToolName, WriteFile,
};
use serde_json::{Map, Value};

/// Why arguments do not match a tool's schema. The `Display` text names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    #[error("'{0}' is a required property")]
    Missing(&'static str),
    #[error("'{field}' must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("'{value}' is not one of {allowed}")]
    NotOneOf {
        value: String,
        allowed: &'static str,
    },
    #[error("'arguments' must be an object")]
    NotAnObject,
}

impl ArgumentError {
    /// The text of the MCP error result, in the shape the reference's clients know.
    pub fn message(&self) -> String {
        format!("Input validation error: {self}")
    }
}

const A_STRING: &str = "a string";
const AN_INTEGER: &str = "an integer";
const A_BOOLEAN: &str = "a boolean";
const GREP_MODES: &str = "['content', 'files', 'count']";

/// Decodes the `arguments` of a call to `tool`. `None` (absent) and `null` mean `{}`.
pub fn decode(tool: ToolName, arguments: Option<&Value>) -> Result<ToolCall, ArgumentError> {
    let empty = Map::new();
    let args = match arguments {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ArgumentError::NotAnObject),
    };
    Ok(match tool {
        ToolName::BashExecute => ToolCall::BashExecute(BashExecute {
            command: required_string(args, "command")?,
            timeout: optional_integer(args, "timeout")?,
            working_dir: optional_string(args, "working_dir")?,
            max_output_bytes: optional_integer(args, "max_output_bytes")?,
            background: optional_bool(args, "background")?.unwrap_or(false),
            handoff_after: optional_integer(args, "handoff_after")?,
        }),
        ToolName::ReadFile => ToolCall::ReadFile(ReadFile {
            file_path: required_string(args, "file_path")?,
            offset: optional_integer(args, "offset")?,
            limit: optional_integer(args, "limit")?,
        }),
        ToolName::WriteFile => ToolCall::WriteFile(WriteFile {
            file_path: required_string(args, "file_path")?,
            content: required_string(args, "content")?,
        }),
        ToolName::EditFile => ToolCall::EditFile(EditFile {
            file_path: required_string(args, "file_path")?,
            old_string: required_string(args, "old_string")?,
            new_string: required_string(args, "new_string")?,
            replace_all: optional_bool(args, "replace_all")?,
        }),
        ToolName::Glob => ToolCall::Glob(Glob {
            pattern: required_string(args, "pattern")?,
            path: optional_string(args, "path")?,
        }),
        ToolName::Grep => ToolCall::Grep(Grep {
            pattern: required_string(args, "pattern")?,
            path: optional_string(args, "path")?,
            glob: optional_string(args, "glob")?,
            output_mode: match optional_string(args, "output_mode")? {
                None => None,
                Some(m) => Some(GrepMode::parse(&m).ok_or(ArgumentError::NotOneOf {
                    value: m,
                    allowed: GREP_MODES,
                })?),
            },
            context_lines: optional_integer(args, "context_lines")?,
            max_results: optional_integer(args, "max_results")?,
            case_insensitive: optional_bool(args, "case_insensitive")?,
        }),
        ToolName::JobStatus => ToolCall::JobStatus(JobRef {
            job_id: required_string(args, "job_id")?,
        }),
        ToolName::JobOutput => ToolCall::JobOutput(JobOutputArgs {
            job_id: required_string(args, "job_id")?,
            stdout_offset: optional_integer(args, "stdout_offset")?,
            stderr_offset: optional_integer(args, "stderr_offset")?,
            max_bytes: optional_integer(args, "max_bytes")?,
            wait_seconds: optional_integer(args, "wait_seconds")?,
        }),
        ToolName::JobKill => ToolCall::JobKill(JobKillArgs {
            job_id: required_string(args, "job_id")?,
            signal: optional_string(args, "signal")?,
        }),
        ToolName::PrepareUpload => ToolCall::PrepareUpload(PrepareUpload {
            dest_path: required_string(args, "dest_path")?,
            max_bytes: optional_integer(args, "max_bytes")?,
            expires_in: optional_integer(args, "expires_in")?,
            overwrite: optional_bool(args, "overwrite")?,
            sha256: optional_string(args, "sha256")?,
        }),
        ToolName::PrepareDownload => ToolCall::PrepareDownload(PrepareDownload {
            src_path: required_string(args, "src_path")?,
            expires_in: optional_integer(args, "expires_in")?,
        }),
        // No parameters; unknown properties are ignored, as for every tool.
        ToolName::ServerOverview => ToolCall::ServerOverview,
        ToolName::TerminalOpen => ToolCall::TerminalOpen(TerminalOpen {
            command: optional_string(args, "command")?,
            working_dir: optional_string(args, "working_dir")?,
            rows: optional_integer(args, "rows")?,
            cols: optional_integer(args, "cols")?,
        }),
        ToolName::TerminalSend => ToolCall::TerminalSend(TerminalSend {
            terminal_id: required_string(args, "terminal_id")?,
            text: optional_string(args, "text")?,
            keys: string_list(args, "keys")?,
        }),
        ToolName::TerminalRead => ToolCall::TerminalRead(TerminalRead {
            terminal_id: required_string(args, "terminal_id")?,
            wait_for: optional_string(args, "wait_for")?,
            timeout: optional_integer(args, "timeout")?,
        }),
        ToolName::TerminalResize => ToolCall::TerminalResize(TerminalResize {
            terminal_id: required_string(args, "terminal_id")?,
            rows: optional_integer(args, "rows")?,
            cols: optional_integer(args, "cols")?,
        }),
        ToolName::TerminalList => ToolCall::TerminalList,
        ToolName::TerminalClose => ToolCall::TerminalClose(TerminalRef {
            terminal_id: required_string(args, "terminal_id")?,
        }),
    })
}

fn optional_bool(
    args: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<bool>, ArgumentError> {
    match args.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ArgumentError::WrongType {
            field,
            expected: A_BOOLEAN,
        }),
    }
}

fn required_string(
    args: &Map<String, Value>,
    field: &'static str,
) -> Result<String, ArgumentError> {
    match args.get(field) {
        None => Err(ArgumentError::Missing(field)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ArgumentError::WrongType {
            field,
            expected: A_STRING,
        }),
    }
}

fn optional_string(
    args: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ArgumentError> {
    match args.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ArgumentError::WrongType {
            field,
            expected: A_STRING,
        }),
    }
}

/// An array of strings; one string alone counts as a list of one. Absent or `null`: empty.
fn string_list(
    args: &Map<String, Value>,
    field: &'static str,
) -> Result<Vec<String>, ArgumentError> {
    let wrong = ArgumentError::WrongType {
        field,
        expected: "an array of strings",
    };
    match args.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(wrong.clone()))
            .collect(),
        Some(_) => Err(wrong),
    }
}

fn optional_integer(
    args: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<i64>, ArgumentError> {
    let wrong = ArgumentError::WrongType {
        field,
        expected: AN_INTEGER,
    };
    let n = match args.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(wrong),
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    if n.as_u64().is_some() {
        // Above i64::MAX: the executor clamps every integer field far below this anyway.
        return Ok(Some(i64::MAX));
    }
    match n.as_f64() {
        // `as` saturates, which for out-of-range integral floats is the same clamp.
        Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(Some(f as i64)),
        _ => Err(wrong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(args: Value) -> Result<ToolCall, ArgumentError> {
        decode(ToolName::ReadFile, Some(&args))
    }

    fn bash(args: Value) -> Result<ToolCall, ArgumentError> {
        decode(ToolName::BashExecute, Some(&args))
    }

    #[test]
    fn missing_required_field_is_named() {
        let err = read(json!({"offset": 2})).unwrap_err();
        assert_eq!(
            err.message(),
            "Input validation error: 'file_path' is a required property"
        );
        let err = decode(ToolName::BashExecute, None).unwrap_err();
        assert_eq!(err, ArgumentError::Missing("command"));
    }

    #[test]
    fn string_where_an_integer_is_expected_is_refused() {
        let err = bash(json!({"command": "ls", "timeout": "30"})).unwrap_err();
        assert_eq!(
            err.message(),
            "Input validation error: 'timeout' must be an integer"
        );
        let err = read(json!({"file_path": "/x", "limit": true})).unwrap_err();
        assert_eq!(err.to_string(), "'limit' must be an integer");
    }

    #[test]
    fn fractional_float_is_not_an_integer_but_an_integral_one_is() {
        assert_eq!(
            read(json!({"file_path": "/x", "offset": 2.5})).unwrap_err(),
            ArgumentError::WrongType {
                field: "offset",
                expected: "an integer"
            }
        );
        let call = bash(json!({"command": "ls", "timeout": 30.0, "max_output_bytes": 1e3}));
        let ToolCall::BashExecute(b) = call.unwrap() else {
            panic!("wrong tool")
        };
        assert_eq!(b.timeout, Some(30));
        assert_eq!(b.max_output_bytes, Some(1000));
    }

    #[test]
    fn null_and_absent_optional_fields_mean_default() {
        let call = read(json!({"file_path": "/etc/hostname", "offset": null})).unwrap();
        assert_eq!(
            call,
            ToolCall::ReadFile(ReadFile {
                file_path: "/etc/hostname".into(),
                offset: None,
                limit: None,
            })
        );
        let call = bash(json!({"command": "id", "working_dir": null})).unwrap();
        let ToolCall::BashExecute(b) = call else {
            panic!("wrong tool")
        };
        assert_eq!((b.timeout, b.working_dir), (None, None));
    }

    #[test]
    fn null_for_a_required_string_is_a_type_error() {
        assert_eq!(
            read(json!({"file_path": null})).unwrap_err().to_string(),
            "'file_path' must be a string"
        );
    }

    #[test]
    fn negative_and_huge_integers_reach_the_executor_for_clamping() {
        let call = read(json!({"file_path": "/x", "offset": -5, "limit": 18446744073709551615u64}));
        let ToolCall::ReadFile(r) = call.unwrap() else {
            panic!("wrong tool")
        };
        assert_eq!(r.offset, Some(-5));
        assert_eq!(r.limit, Some(i64::MAX));
        let call = read(json!({"file_path": "/x", "limit": -1e30}));
        let ToolCall::ReadFile(r) = call.unwrap() else {
            panic!("wrong tool")
        };
        assert_eq!(r.limit, Some(i64::MIN));
    }

    #[test]
    fn file_tools_decode_with_defaults_left_to_the_executor() {
        let call = decode(
            ToolName::EditFile,
            Some(&json!({"file_path": "/x", "old_string": "a", "new_string": "b"})),
        )
        .unwrap();
        assert_eq!(
            call,
            ToolCall::EditFile(EditFile {
                file_path: "/x".into(),
                old_string: "a".into(),
                new_string: "b".into(),
                replace_all: None,
            })
        );
        let err = decode(
            ToolName::EditFile,
            Some(&json!({"file_path": "/x", "old_string": "a", "new_string": "b", "replace_all": "yes"})),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "'replace_all' must be a boolean");
        let err = decode(ToolName::WriteFile, Some(&json!({"file_path": "/x"}))).unwrap_err();
        assert_eq!(err, ArgumentError::Missing("content"));
        let call = decode(ToolName::Glob, Some(&json!({"pattern": "**/*.rs"}))).unwrap();
        assert_eq!(
            call,
            ToolCall::Glob(Glob {
                pattern: "**/*.rs".into(),
                path: None
            })
        );
    }

    #[test]
    fn grep_output_mode_is_one_of_three() {
        let call = decode(
            ToolName::Grep,
            Some(&json!({"pattern": "x", "output_mode": "count", "context_lines": 2, "case_insensitive": true})),
        )
        .unwrap();
        let ToolCall::Grep(g) = call else {
            panic!("wrong tool")
        };
        assert_eq!(g.output_mode, Some(GrepMode::Count));
        assert_eq!(g.context_lines, Some(2));
        assert_eq!(g.case_insensitive, Some(true));
        let err = decode(
            ToolName::Grep,
            Some(&json!({"pattern": "x", "output_mode": "bogus"})),
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Input validation error: 'bogus' is not one of ['content', 'files', 'count']"
        );
    }

    #[test]
    fn background_is_a_boolean_defaulting_to_false() {
        let ToolCall::BashExecute(b) = bash(json!({"command": "x"})).unwrap() else {
            panic!("wrong tool")
        };
        assert!(!b.background);
        let ToolCall::BashExecute(b) = bash(json!({"command": "x", "background": true})).unwrap()
        else {
            panic!("wrong tool")
        };
        assert!(b.background);
        assert_eq!(
            bash(json!({"command": "x", "background": "yes"}))
                .unwrap_err()
                .to_string(),
            "'background' must be a boolean"
        );
    }

    #[test]
    fn job_tools_need_a_job_id() {
        for tool in [ToolName::JobStatus, ToolName::JobOutput, ToolName::JobKill] {
            assert_eq!(
                decode(tool, Some(&json!({}))).unwrap_err(),
                ArgumentError::Missing("job_id")
            );
        }
        let call = decode(
            ToolName::JobOutput,
            Some(&json!({"job_id": "j", "stdout_offset": 10, "wait_seconds": 5})),
        )
        .unwrap();
        assert_eq!(
            call,
            ToolCall::JobOutput(JobOutputArgs {
                job_id: "j".into(),
                stdout_offset: Some(10),
                stderr_offset: None,
                max_bytes: None,
                wait_seconds: Some(5),
            })
        );
    }

    #[test]
    fn unknown_properties_are_ignored() {
        assert!(bash(json!({"command": "true", "shell": "zsh", "env": {}})).is_ok());
    }

    #[test]
    fn arguments_must_be_an_object_but_null_is_empty() {
        assert_eq!(
            bash(json!(["ls"])).unwrap_err().message(),
            "Input validation error: 'arguments' must be an object"
        );
        assert_eq!(
            decode(ToolName::ReadFile, Some(&Value::Null)).unwrap_err(),
            ArgumentError::Missing("file_path")
        );
    }
}
