//! `mymcpctl terminal list|replay`: the asciicast v2 recordings of terminal sessions, kept by
//! the executor in `<MYMCP_STATE_DIR>/terminals/<id>.cast`.

use anyhow::{bail, Context};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// Whether `id` is a terminal id (16 hex digits): the only names joined to the directory.
fn is_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Prints one line per recording: id, start (RFC 3339), bytes, command.
pub fn list(dir: &Path) -> anyhow::Result<i32> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))?;
    let mut rows = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".cast").filter(|id| is_id(id)) else {
            continue;
        };
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let header = std::fs::File::open(entry.path())
            .ok()
            .and_then(|f| BufReader::new(f).lines().next())
            .and_then(Result::ok)
            .and_then(|l| serde_json::from_str::<Value>(&l).ok())
            .unwrap_or(Value::Null);
        let started = header["timestamp"].as_i64().unwrap_or(0);
        rows.push((
            started,
            id.to_owned(),
            size,
            header["command"].as_str().unwrap_or("").to_owned(),
        ));
    }
    rows.sort();
    for (started, id, size, command) in rows {
        println!(
            "{id}  {}  {size:>9}  {command}",
            mymcp_tokens::clock::rfc3339(started)
        );
    }
    Ok(0)
}

/// Renders the recording `id` through the same parser the executor uses and prints the
/// final screen (or, with `events`, each output event with its time).
pub fn replay(dir: &Path, id: &str, events: bool) -> anyhow::Result<i32> {
    if !is_id(id) {
        bail!("{id:?} is not a terminal id (16 hex digits)");
    }
    let path = dir.join(format!("{id}.cast"));
    let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    let mut lines = BufReader::new(file).lines();
    let header: Value = match lines.next() {
        Some(line) => serde_json::from_str(&line?).context("the header is not JSON")?,
        None => bail!("{} is empty", path.display()),
    };
    if header["version"] != 2 {
        bail!("{} is not an asciicast v2 recording", path.display());
    }
    let size = |k: &str| header[k].as_u64().unwrap_or(0).clamp(1, 1000) as u16;
    let mut parser = vt100::Parser::new(size("height"), size("width"), 0);
    let mut out = std::io::stdout().lock();
    for line in lines {
        let line = line?;
        let Ok(Value::Array(event)) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let (t, kind, data) = (
            event.first().and_then(Value::as_f64).unwrap_or(0.0),
            event.get(1).and_then(Value::as_str).unwrap_or(""),
            event.get(2).and_then(Value::as_str).unwrap_or(""),
        );
        match kind {
            "o" if events => writeln!(out, "{t:>10.3} o {data:?}")?,
            "o" => parser.process(data.as_bytes()),
            "r" => {
                if events {
                    writeln!(out, "{t:>10.3} r {data}")?;
                }
                if let Some((cols, rows)) = data.split_once('x') {
                    if let (Ok(c), Ok(r)) = (cols.parse::<u16>(), rows.parse::<u16>()) {
                        parser.screen_mut().set_size(r.max(1), c.max(1));
                    }
                }
            }
            _ => {}
        }
    }
    if !events {
        writeln!(out, "{}", screen_text(parser.screen()))?;
    }
    Ok(0)
}

/// The screen as text, as `terminal_read` shows it: rows with trailing blanks cut, trailing
/// empty rows dropped.
fn screen_text(screen: &vt100::Screen) -> String {
    let (_, cols) = screen.size();
    let rows: Vec<String> = screen
        .rows(0, cols)
        .map(|r| r.trim_end().to_owned())
        .collect();
    let last = rows
        .iter()
        .rposition(|r| !r.is_empty())
        .map_or(0, |i| i + 1);
    rows[..last].join("\n")
}
