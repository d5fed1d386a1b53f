//! The LLM providers: the Anthropic Messages API and any OpenAI-compatible chat-completions
//! endpoint (OpenAI, DeepSeek, a local server…, chosen by `MYMCP_RECORDER_LLM_BASE_URL`).
//!
//! Both are spoken through one small conversation model ([`Message`], [`Part`], [`ToolSpec`])
//! so that the merge cycle and the bootstrap loop do not care which one answers. Structured
//! output is a forced tool call in both dialects (Anthropic `tool_choice: {"type":"tool"}`,
//! OpenAI `tool_choice: {"type":"function"}` with a strict schema), which every provider of
//! either family supports.
//!
//! HTTPS goes through rustls with the Mozilla root certificates bundled in the binary; a
//! `http://` base URL (a local model server, or the tests' fake) is plain HTTP.

use serde_json::{json, Value};
use std::time::Duration;

/// Which API dialect to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Anthropic,
    OpenAi,
}

impl Provider {
    /// `anthropic` or `openai` (`MYMCP_RECORDER_LLM_PROVIDER`).
    pub fn parse(s: &str) -> Option<Provider> {
        match s.trim().to_ascii_lowercase().as_str() {
            "anthropic" => Some(Provider::Anthropic),
            "openai" => Some(Provider::OpenAi),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
        }
    }

    /// The reference's default models.
    pub fn default_model(self) -> &'static str {
        match self {
            Provider::Anthropic => "claude-sonnet-4-6",
            Provider::OpenAi => "gpt-4o",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::OpenAi => "https://api.openai.com/v1",
        }
    }

    /// The variable holding the key when `MYMCP_RECORDER_LLM_API_KEY` is not set.
    pub fn key_variable(self) -> &'static str {
        match self {
            Provider::Anthropic => "ANTHROPIC_API_KEY",
            Provider::OpenAi => "OPENAI_API_KEY",
        }
    }
}

/// How to reach the model.
#[derive(Clone)]
pub struct LlmConfig {
    pub provider: Provider,
    pub model: String,
    pub api_key: String,
    /// Without a trailing `/`: `https://api.anthropic.com`, `https://api.openai.com/v1`, …
    pub base_url: String,
    /// `MYMCP_RECORDER_LLM_MAX_TOKENS`: the answer's length limit.
    pub max_tokens: u32,
    /// The whole request, answer included (`MYMCP_RECORDER_LLM_TIMEOUT_SEC`, 600).
    pub timeout: Duration,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A tool the model may call.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON schema of its input (an object).
    pub schema: Value,
}

/// Who speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaker {
    User,
    Assistant,
}

/// A piece of a message.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    /// The model calls a tool.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// What a tool call gave (sent by the user side).
    ToolResult {
        id: String,
        content: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub speaker: Speaker,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Message {
        Message {
            speaker: Speaker::User,
            parts: vec![Part::Text(text.into())],
        }
    }
}

/// One call.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub system: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
    /// The tool the model must call (structured output); `None`: it may call any or none.
    pub force_tool: Option<&'static str>,
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    EndTurn,
    ToolUse,
    /// The answer hit the token limit: it is cut.
    MaxTokens,
    Other(String),
}

/// Tokens a call cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

impl Usage {
    pub fn total(self) -> u64 {
        self.input + self.output
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub parts: Vec<Part>,
    pub stop: Stop,
    pub usage: Usage,
}

impl Reply {
    /// The input of the first call of `tool`.
    pub fn tool_input(&self, tool: &str) -> Option<&Value> {
        self.parts.iter().find_map(|p| match p {
            Part::ToolUse { name, input, .. } if name == tool => Some(input),
            _ => None,
        })
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the LLM API answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("could not reach the LLM API: {0}")]
    Transport(String),
    #[error("the LLM API's answer is malformed: {0}")]
    Malformed(String),
}

impl LlmError {
    /// The `result` label of `mymcp_recorder_llm_calls_total`.
    pub fn label(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => "timeout",
            LlmError::Status { .. } => "http_error",
            LlmError::Transport(_) => "transport_error",
            LlmError::Malformed(_) => "malformed",
        }
    }
}

/// Longest error body kept in a message.
const MAX_ERROR_BODY: usize = 512;

/// A client for one provider.
#[derive(Debug)]
pub struct Client {
    cfg: LlmConfig,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(cfg: LlmConfig) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("mymcp-recorder/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client { cfg, agent }
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    /// Sends one request and reads the reply. A reply cut by the token limit is returned with
    /// [`Stop::MaxTokens`] (the caller decides); any other failure is an [`LlmError`].
    pub fn complete(&self, req: &Request<'_>) -> Result<Reply, LlmError> {
        let (url, body) = match self.cfg.provider {
            Provider::Anthropic => (
                format!("{}/v1/messages", self.cfg.base_url),
                anthropic_body(&self.cfg, req),
            ),
            Provider::OpenAi => (
                format!("{}/chat/completions", self.cfg.base_url),
                openai_body(&self.cfg, req),
            ),
        };
        let mut call = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        call = match self.cfg.provider {
            Provider::Anthropic => call
                .header("x-api-key", &self.cfg.api_key)
                .header("anthropic-version", "2023-06-01"),
            Provider::OpenAi => {
                call.header("authorization", &format!("Bearer {}", self.cfg.api_key))
            }
        };
        let bytes = serde_json::to_vec(&body).expect("requests serialize");
        let mut resp = call.send(&bytes[..]).map_err(|e| self.failed(e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.failed(e))?;
        if !(200..300).contains(&status) {
            return Err(LlmError::Status {
                status,
                body: cut(&text, MAX_ERROR_BODY),
            });
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LlmError::Malformed(format!("not JSON ({e}): {}", cut(&text, 200))))?;
        match self.cfg.provider {
            Provider::Anthropic => anthropic_reply(&v),
            Provider::OpenAi => openai_reply(&v),
        }
    }

    fn failed(&self, e: ureq::Error) -> LlmError {
        match e {
            ureq::Error::Timeout(_) => LlmError::Timeout(self.cfg.timeout),
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                LlmError::Timeout(self.cfg.timeout)
            }
            e => LlmError::Transport(e.to_string()),
        }
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The Messages API request.
pub fn anthropic_body(cfg: &LlmConfig, req: &Request<'_>) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let content: Vec<Value> = m
                .parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => json!({"type": "text", "text": t}),
                    Part::ToolUse { id, name, input } => {
                        json!({"type": "tool_use", "id": id, "name": name, "input": input})
                    }
                    Part::ToolResult { id, content } => {
                        json!({"type": "tool_result", "tool_use_id": id, "content": content})
                    }
                })
                .collect();
            json!({"role": speaker(m.speaker), "content": content})
        })
        .collect();
    let mut body = json!({
        "model": cfg.model,
        "max_tokens": cfg.max_tokens,
        "system": req.system,
        "messages": messages,
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(
                |t| json!({"name": t.name, "description": t.description, "input_schema": t.schema}),
            )
            .collect();
        body["tool_choice"] = match req.force_tool {
            Some(name) => json!({"type": "tool", "name": name}),
            None => json!({"type": "auto"}),
        };
    }
    body
}

/// Reads a Messages API reply.
pub fn anthropic_reply(v: &Value) -> Result<Reply, LlmError> {
    let content = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::Malformed("no content".into()))?;
    let mut parts = Vec::new();
    for c in content {
        match c.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(Part::Text(
                c.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            )),
            Some("tool_use") => parts.push(Part::ToolUse {
                id: str_field(c, "id")?,
                name: str_field(c, "name")?,
                input: c.get("input").cloned().unwrap_or(Value::Null),
            }),
            // Thinking blocks and future types carry nothing we act on.
            _ => {}
        }
    }
    let stop = match v.get("stop_reason").and_then(Value::as_str) {
        Some("end_turn") | Some("stop_sequence") => Stop::EndTurn,
        Some("tool_use") => Stop::ToolUse,
        Some("max_tokens") => Stop::MaxTokens,
        other => Stop::Other(other.unwrap_or("none").to_owned()),
    };
    let usage = Usage {
        input: num(v, &["usage", "input_tokens"]),
        output: num(v, &["usage", "output_tokens"]),
    };
    Ok(Reply { parts, stop, usage })
}

/// The chat-completions request.
pub fn openai_body(cfg: &LlmConfig, req: &Request<'_>) -> Value {
    let mut messages = vec![json!({"role": "system", "content": req.system})];
    for m in req.messages {
        match m.speaker {
            Speaker::Assistant => {
                let text: String = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<Value> = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolUse { id, name, input } => Some(json!({
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        })),
                        _ => None,
                    })
                    .collect();
                let mut msg = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            Speaker::User => {
                // Tool results are messages of their own; text follows them.
                let mut text = String::new();
                for p in &m.parts {
                    match p {
                        Part::ToolResult { id, content } => messages
                            .push(json!({"role": "tool", "tool_call_id": id, "content": content})),
                        Part::Text(t) => text.push_str(t),
                        Part::ToolUse { .. } => {}
                    }
                }
                if !text.is_empty() {
                    messages.push(json!({"role": "user", "content": text}));
                }
            }
        }
    }
    let mut body = json!({
        "model": cfg.model,
        "max_tokens": cfg.max_tokens,
        "messages": messages,
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.schema,
                    "strict": req.force_tool == Some(t.name),
                }})
            })
            .collect();
        body["tool_choice"] = match req.force_tool {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => json!("auto"),
        };
    }
    body
}

/// Reads a chat-completions reply.
pub fn openai_reply(v: &Value) -> Result<Reply, LlmError> {
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| LlmError::Malformed("no choices".into()))?;
    let msg = choice
        .get("message")
        .ok_or_else(|| LlmError::Malformed("no message".into()))?;
    let stop = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("stop") => Stop::EndTurn,
        Some("tool_calls") | Some("function_call") => Stop::ToolUse,
        Some("length") => Stop::MaxTokens,
        other => Stop::Other(other.unwrap_or("none").to_owned()),
    };
    let mut parts = Vec::new();
    if let Some(t) = msg.get("content").and_then(Value::as_str) {
        if !t.is_empty() {
            parts.push(Part::Text(t.to_owned()));
        }
    }
    for call in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = call
            .get("function")
            .ok_or_else(|| LlmError::Malformed("tool call without function".into()))?;
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
        let input = match serde_json::from_str(args) {
            Ok(v) => v,
            // Cut arguments are what a length stop looks like: let the caller see the stop.
            Err(_) if stop == Stop::MaxTokens => Value::Null,
            Err(e) => {
                return Err(LlmError::Malformed(format!(
                    "tool arguments are not JSON ({e}): {}",
                    cut(args, 200)
                )))
            }
        };
        parts.push(Part::ToolUse {
            id: str_field(call, "id")?,
            name: str_field(f, "name")?,
            input,
        });
    }
    let usage = Usage {
        input: num(v, &["usage", "prompt_tokens"]),
        output: num(v, &["usage", "completion_tokens"]),
    };
    Ok(Reply { parts, stop, usage })
}

fn speaker(s: Speaker) -> &'static str {
    match s {
        Speaker::User => "user",
        Speaker::Assistant => "assistant",
    }
}

fn str_field(v: &Value, key: &str) -> Result<String, LlmError> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| LlmError::Malformed(format!("missing {key}")))
}

fn num(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(provider: Provider) -> LlmConfig {
        LlmConfig {
            provider,
            model: "m".into(),
            api_key: "secret-key".into(),
            base_url: "http://127.0.0.1:1".into(),
            max_tokens: 100,
            timeout: Duration::from_secs(1),
        }
    }

    fn conversation() -> Vec<Message> {
        vec![
            Message::user("look around"),
            Message {
                speaker: Speaker::Assistant,
                parts: vec![
                    Part::Text("checking".into()),
                    Part::ToolUse {
                        id: "t1".into(),
                        name: "run_command".into(),
                        input: json!({"command": "uname -a"}),
                    },
                ],
            },
            Message {
                speaker: Speaker::User,
                parts: vec![Part::ToolResult {
                    id: "t1".into(),
                    content: "Linux".into(),
                }],
            },
        ]
    }

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "run_command",
            description: "d",
            schema: json!({"type": "object"}),
        }]
    }

    #[test]
    fn anthropic_requests_and_replies() {
        let msgs = conversation();
        let tools = tools();
        let req = Request {
            system: "sys",
            messages: &msgs,
            tools: &tools,
            force_tool: Some("run_command"),
        };
        let b = anthropic_body(&cfg(Provider::Anthropic), &req);
        assert_eq!(b["system"], "sys");
        assert_eq!(b["max_tokens"], 100);
        assert_eq!(b["messages"][1]["content"][1]["type"], "tool_use");
        assert_eq!(b["messages"][2]["content"][0]["tool_use_id"], "t1");
        assert_eq!(
            b["tool_choice"],
            json!({"type": "tool", "name": "run_command"})
        );
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
        let r = anthropic_reply(&json!({
            "content": [{"type": "text", "text": "hi"},
                        {"type": "tool_use", "id": "x", "name": "run_command", "input": {"command": "ls"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5}
        }))
        .unwrap();
        assert_eq!(r.stop, Stop::ToolUse);
        assert_eq!(r.usage.total(), 15);
        assert_eq!(r.tool_input("run_command"), Some(&json!({"command": "ls"})));
        let r = anthropic_reply(&json!({"content": [], "stop_reason": "max_tokens"})).unwrap();
        assert_eq!(r.stop, Stop::MaxTokens);
        assert!(anthropic_reply(&json!({"type": "error"})).is_err());
    }

    #[test]
    fn openai_requests_and_replies() {
        let msgs = conversation();
        let tools = tools();
        let req = Request {
            system: "sys",
            messages: &msgs,
            tools: &tools,
            force_tool: None,
        };
        let b = openai_body(&cfg(Provider::OpenAi), &req);
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"command":"uname -a"}"#
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "Linux"})
        );
        assert_eq!(b["tool_choice"], "auto");
        assert_eq!(b["tools"][0]["function"]["strict"], false);
        let r = openai_reply(&json!({
            "choices": [{"message": {"content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "run_command", "arguments": "{\"command\":\"ls\"}"}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}
        }))
        .unwrap();
        assert_eq!(r.stop, Stop::ToolUse);
        assert_eq!(
            r.usage,
            Usage {
                input: 7,
                output: 3
            }
        );
        assert_eq!(r.tool_input("run_command"), Some(&json!({"command": "ls"})));
        // Cut arguments with a length stop: a max-tokens reply, not a malformed one.
        let r = openai_reply(&json!({"choices": [{"message": {"tool_calls": [
            {"id": "c1", "function": {"name": "f", "arguments": "{\"a\": [1, 2"}}]},
            "finish_reason": "length"}]}))
        .unwrap();
        assert_eq!(r.stop, Stop::MaxTokens);
        let e = openai_reply(&json!({"choices": [{"message": {"tool_calls": [
            {"id": "c1", "function": {"name": "f", "arguments": "{\"a\": [1, 2"}}]},
            "finish_reason": "tool_calls"}]}))
        .unwrap_err();
        assert_eq!(e.label(), "malformed");
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let c = Client::new(cfg(Provider::OpenAi));
        assert!(!format!("{c:?}").contains("secret-key"));
    }
}
