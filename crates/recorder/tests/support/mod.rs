//! A fake LLM API on loopback for the recorder's tests: it speaks just enough HTTP/1.1, records
//! every request, and answers from a script (fixed replies, replies computed from the request,
//! hangs, dropped connections). Reply builders cover both dialects.

#![allow(dead_code)]

use mymcp_recorder::llm::Provider;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted answer.
pub enum Scripted {
    /// Status and JSON body.
    Json(u16, Value),
    /// Status and raw body.
    Raw(u16, String),
    /// A reply computed from the request body.
    With(Box<dyn Fn(&Value) -> Value + Send>),
    /// Wait this long, then close without answering.
    Hang(Duration),
}

/// A request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The text of the prompt's first user message (both dialects).
    pub fn prompt(&self) -> String {
        let msgs = self.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for m in msgs {
            if m["role"] == "user" {
                return match &m["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(""),
                    _ => String::new(),
                };
            }
        }
        String::new()
    }

    /// The audit events listed in a merge prompt.
    pub fn events(&self) -> Vec<Value> {
        let p = self.prompt();
        let Some((_, rest)) = p.split_once("<events>\n") else {
            return Vec::new();
        };
        let body = rest.split("</events>").next().unwrap_or("");
        body.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub struct FakeLlm {
    pub url: String,
    script: Arc<Mutex<VecDeque<Scripted>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeLlm {
    pub fn start() -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script: Arc<Mutex<VecDeque<Scripted>>> = Arc::default();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let (s, r) = (script.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &s, &r));
            }
        });
        FakeLlm {
            url,
            script,
            requests,
        }
    }

    pub fn push(&self, s: Scripted) {
        self.script.lock().unwrap().push_back(s);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Drops the answers still waiting.
    pub fn clear(&self) {
        self.script.lock().unwrap().clear();
    }

    /// Answers still waiting in the script.
    pub fn unused(&self) -> usize {
        self.script.lock().unwrap().len()
    }
}

fn serve(conn: TcpStream, script: &Mutex<VecDeque<Scripted>>, requests: &Mutex<Vec<Recorded>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    requests.lock().unwrap().push(Recorded {
        path,
        headers,
        body: body.clone(),
    });
    let next = script.lock().unwrap().pop_front();
    let (status, text) = match next {
        Some(Scripted::Json(s, v)) => (s, v.to_string()),
        Some(Scripted::Raw(s, t)) => (s, t),
        Some(Scripted::With(f)) => (200, f(&body).to_string()),
        Some(Scripted::Hang(d)) => {
            std::thread::sleep(d);
            return;
        }
        None => (500, r#"{"error":"no scripted answer"}"#.to_owned()),
    };
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// A reply that calls `tool` with `input`.
pub fn tool_call(p: Provider, tool: &str, input: Value) -> Value {
    match p {
        Provider::Anthropic => json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "tool_use", "id": format!("tu_{tool}"), "name": tool, "input": input}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 100, "output_tokens": 20}
        }),
        Provider::OpenAi => json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": format!("call_{tool}"), "type": "function",
                    "function": {"name": tool, "arguments": input.to_string()}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20}
        }),
    }
}

/// A reply cut by the token limit (the tool input cut too).
pub fn max_tokens(p: Provider) -> Value {
    match p {
        Provider::Anthropic => json!({
            "content": [{"type": "tool_use", "id": "tu_1", "name": "record_changes", "input": {}}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 100, "output_tokens": 32768}
        }),
        Provider::OpenAi => json!({
            "choices": [{"finish_reason": "length", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "record_changes", "arguments": "{\"new_changelog_lines\": [\"2026"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 32768}
        }),
    }
}

/// A merge answer with one changelog line per event in the request (its path), and a section
/// update naming them.
pub fn echo_merge(p: Provider) -> Scripted {
    Scripted::With(Box::new(move |body| {
        let rec = Recorded {
            path: String::new(),
            headers: Vec::new(),
            body: body.clone(),
        };
        let lines: Vec<String> = rec
            .events()
            .iter()
            .map(|e| {
                format!(
                    "2026-11-21 18:00 | {} | {}",
                    e["tool"].as_str().unwrap(),
                    e["params"]["file_path"].as_str().unwrap_or("?")
                )
            })
            .collect();
        tool_call(
            p,
            "record_changes",
            json!({"new_changelog_lines": lines,
                   "section_updates": [{"section": "Data Locations", "content": format!("{} files written", lines.len())}]}),
        )
    }))
}
