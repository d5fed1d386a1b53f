//! The first overview: an LLM loop that explores the host with two probe tools and ends by
//! calling `write_overview`.
//!
//! Bounded by `MYMCP_RECORDER_BOOTSTRAP_MAX_ITERATIONS` calls and
//! `MYMCP_RECORDER_BOOTSTRAP_TOKEN_BUDGET` tokens; when either is nearly spent the model is made
//! to write what it has. The audit log is followed from where it stood when the bootstrap began,
//! so changes made while the model explored are merged afterwards.

use crate::config::Config;
use crate::document::{bootstrap_schema, BootstrapAnswer, Overview};
use crate::llm::{Client, LlmError, Message, Part, Request, Speaker, Stop, ToolSpec};
use crate::metrics::Metrics;
use crate::probe::{self};
use crate::store::Store;
use mymcp_audit::follow;
use serde_json::json;

/// The final tool.
pub const WRITE_TOOL: &str = "write_overview";
const RUN_TOOL: &str = "run_command";
const READ_TOOL: &str = "read_file";

const SYSTEM: &str = "\
You explore one Linux host to write its first overview: a Markdown document for an operator \
or an AI assistant about to work on the host, describing what is installed, deployed and \
configured. You have two probe tools, run as an unprivileged user: run_command (a shell \
command; use read-only commands only: never change, install, stop or delete anything) and \
read_file (the start of a file). Look at the OS and kernel, running services (systemctl \
list-units --type=service --state=running), listening ports (ss -tlnp), web servers and their \
sites, databases, containers, applications under /srv, /opt, /var/www, scheduled jobs, disks \
and where data lives. Be efficient: combine commands, avoid huge outputs.

When you know enough, call write_overview once with these sections: TL;DR (three to five \
lines), Installed Services, Deployed Applications, Network, Data Locations, Known Quirks. \
Bodies are concise Markdown (lists welcome) without `#`/`##` headings. Recent Changes is \
filled in by the recorder; do not write it.";

/// Why a bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("no overview after {0} LLM calls (MYMCP_RECORDER_BOOTSTRAP_MAX_ITERATIONS)")]
    Iterations(u32),
    #[error("the token budget of {0} is spent (MYMCP_RECORDER_BOOTSTRAP_TOKEN_BUDGET)")]
    Budget(u64),
    #[error("stopped")]
    Stopped,
    #[error("reading the audit log or writing the data directory: {0}")]
    Io(#[from] std::io::Error),
}

impl BootstrapError {
    /// The `result` label of `mymcp_recorder_bootstrap_runs_total`.
    pub fn label(&self) -> &'static str {
        match self {
            BootstrapError::Llm(_) => "llm_error",
            BootstrapError::Iterations(_) => "iterations",
            BootstrapError::Budget(_) => "budget",
            BootstrapError::Stopped => "stopped",
            BootstrapError::Io(_) => "io_error",
        }
    }
}

fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: RUN_TOOL,
            description: "Run a read-only shell command (sh -c) as an unprivileged user. Output is cut to its head and tail; commands are killed after a timeout.",
            schema: json!({
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: READ_TOOL,
            description: "Read the start (16 KiB) of a file, by absolute path.",
            schema: json!({
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: WRITE_TOOL,
            description: "Write the overview and finish.",
            schema: bootstrap_schema(),
        },
    ]
}

/// Runs the loop; on success the overview, a first changelog line and the cursor are written.
pub fn run(
    cfg: &Config,
    llm: &Client,
    store: &Store,
    metrics: &Metrics,
    title: &str,
    stop: &dyn Fn() -> bool,
) -> Result<(), BootstrapError> {
    tracing::info!(
        max_iterations = cfg.bootstrap_max_iterations,
        token_budget = cfg.bootstrap_token_budget,
        "no overview yet: exploring the host"
    );
    // Everything logged before this point is part of what the exploration sees.
    let start = follow::end_cursor(&cfg.audit_dir)?;
    let tools = tools();
    let mut messages = vec![Message::user(format!(
        "Explore this host ({title}) and write its overview."
    ))];
    let mut spent = 0u64;
    let mut last_cost = 0u64;
    for i in 0..cfg.bootstrap_max_iterations {
        if stop() {
            return Err(BootstrapError::Stopped);
        }
        if spent >= cfg.bootstrap_token_budget {
            return Err(BootstrapError::Budget(cfg.bootstrap_token_budget));
        }
        // Nearly out of calls or tokens: the model must write what it has (with one more call
        // to mend an answer that is refused). A call resends the whole conversation, so the
        // next one costs at least what the last one did.
        let last = i + 2 >= cfg.bootstrap_max_iterations
            || spent + last_cost >= cfg.bootstrap_token_budget;
        let reply = llm.complete(&Request {
            system: SYSTEM,
            messages: &messages,
            tools: &tools,
            force_tool: last.then_some(WRITE_TOOL),
        });
        let reply = match reply {
            Ok(r) => {
                metrics.inc(
                    "mymcp_recorder_llm_calls_total",
                    &[
                        ("phase", "bootstrap"),
                        (
                            "result",
                            if r.stop == Stop::MaxTokens {
                                "max_tokens"
                            } else {
                                "ok"
                            },
                        ),
                    ],
                    1,
                );
                r
            }
            Err(e) => {
                metrics.inc(
                    "mymcp_recorder_llm_calls_total",
                    &[("phase", "bootstrap"), ("result", e.label())],
                    1,
                );
                return Err(e.into());
            }
        };
        spent += reply.usage.total();
        last_cost = reply.usage.total();
        metrics.inc(
            "mymcp_recorder_llm_tokens_total",
            &[("phase", "bootstrap"), ("direction", "input")],
            reply.usage.input,
        );
        metrics.inc(
            "mymcp_recorder_llm_tokens_total",
            &[("phase", "bootstrap"), ("direction", "output")],
            reply.usage.output,
        );
        let mut results = Vec::new();
        let mut finished = None;
        for p in &reply.parts {
            let Part::ToolUse { id, name, input } = p else {
                continue;
            };
            let content = match name.as_str() {
                RUN_TOOL => {
                    let command = input.get("command").and_then(|c| c.as_str()).unwrap_or("");
                    tracing::info!(command = %command, "bootstrap probe");
                    let (result, text) = probe::run_command(&cfg.probe, command);
                    metrics.inc(
                        "mymcp_recorder_bash_probe_runs_total",
                        &[("result", result.label())],
                        1,
                    );
                    text
                }
                READ_TOOL => probe::read_file(
                    &cfg.probe,
                    input.get("path").and_then(|c| c.as_str()).unwrap_or(""),
                ),
                WRITE_TOOL => match BootstrapAnswer::parse(input) {
                    Ok(a) => {
                        finished = Some(a);
                        "written".to_owned()
                    }
                    Err(e) => format!("error: {e}; call {WRITE_TOOL} again with a valid answer"),
                },
                other => format!("error: there is no tool {other:?}"),
            };
            results.push(Part::ToolResult {
                id: id.clone(),
                content,
            });
        }
        if let Some(answer) = finished {
            let mut doc = Overview::new(title, &answer.sections);
            let line = format!(
                "{} | recorder | first overview written after exploring the host",
                changelog_time()
            );
            store.append_changelog(&[line])?;
            doc.set_recent_changes(&store.changelog_tail()?);
            store.write_overview(&doc.render(&crate::document::now_rfc3339()))?;
            store.save_cursor(&start)?;
            tracing::info!(calls = i + 1, tokens = spent, "first overview written");
            return Ok(());
        }
        messages.push(Message {
            speaker: Speaker::Assistant,
            parts: reply.parts.clone(),
        });
        if results.is_empty() {
            messages.push(Message::user(match reply.stop {
                Stop::MaxTokens => format!(
                    "Your answer was cut by the token limit. Be shorter; when ready, call {WRITE_TOOL}."
                ),
                _ => format!("Continue with a probe tool, or call {WRITE_TOOL} when you know enough."),
            }));
        } else {
            messages.push(Message {
                speaker: Speaker::User,
                parts: results,
            });
        }
    }
    Err(BootstrapError::Iterations(cfg.bootstrap_max_iterations))
}

/// `YYYY-MM-DD HH:MM` now (UTC).
fn changelog_time() -> String {
    let t = mymcp_audit::now_rfc3339();
    format!("{} {}", &t[..10], &t[11..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tools_and_the_changelog_time_have_their_shapes() {
        let names: Vec<&str> = tools().iter().map(|t| t.name).collect();
        assert_eq!(names, [RUN_TOOL, READ_TOOL, WRITE_TOOL]);
        let line = format!("{} | recorder | x", changelog_time());
        assert!(
            crate::document::check_changelog_line(&line).is_ok(),
            "{line}"
        );
    }
}
