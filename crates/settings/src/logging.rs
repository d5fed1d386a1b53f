//! Logging of the daemons: `tracing` to journald when started by systemd with its output
//! connected to the journal (`JOURNAL_STREAM` set), else to stderr as text or JSON lines.
//!
//! Field values come from clients (tool names, paths, request ids), so a text line escapes
//! every control character in them ([`EscapedFields`]): one event is one line, whatever a
//! value holds. JSON lines are escaped by JSON itself, and journald keeps each field apart.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How stderr log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// Parses `text` or `json` ([`crate::LOG_FORMAT`], `--log-format`).
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match crate::LOG_FORMAT.parse(s).map_err(|e| e.to_string())? {
            "json" => Ok(LogFormat::Json),
            _ => Ok(LogFormat::Text),
        }
    }
}

/// Checks a level or directive string ([`crate::LOG_LEVEL`], `--log-level`).
pub fn parse_level(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| {
        format!(
            "{}: invalid value {level:?} ({e}; allowed: error, warn, info, debug, trace or tracing directives)",
            crate::LOG_LEVEL.name
        )
    })
}

/// Installs the global subscriber. `ident` is the syslog identifier in the journal.
pub fn init(level: &str, format: LogFormat, ident: &str) -> Result<(), String> {
    let filter = parse_level(level)?;
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journald) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journald.with_syslog_identifier(ident.to_owned()))
                    .init();
                return Ok(());
            }
            Err(e) => eprintln!("{ident}: journald unavailable ({e}); logging to stderr"),
        }
    }
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(text_layer(std::io::stderr, std::io::stderr().is_terminal()))
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .init(),
    }
    Ok(())
}

/// The text layer: the default line format (time, level, message, fields) with every field
/// written by [`EscapedFields`].
fn text_layer<S, W>(
    writer: W,
    ansi: bool,
) -> tracing_subscriber::fmt::Layer<S, EscapedFields, Format, W>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(EscapedFields)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi)
}

/// Writes the fields of events and spans as `tracing-subscriber`'s default does (the message,
/// then `name=value` separated by spaces), escaping in every value each control character
/// (`\n`, `\r`, `\t`, others as `\u{1b}`) and the Unicode characters that break or reorder a
/// line (line and paragraph separators, bidirectional overrides and isolates).
#[derive(Clone, Copy, Debug, Default)]
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldWriter<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        let name = field.name();
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self.result.and_then(|()| write!(self.writer, "{name}="));
        }
        self.result = self
            .result
            .and_then(|()| write!(Escaping(&mut self.writer), "{value:?}"));
    }
}

/// Passes text on with the characters of [`must_escape`] escaped.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| must_escape(c)) {
            self.0.write_str(&rest[..at])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Control characters (C0, DEL, C1), and what ends or reorders a line without being one.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn formats_and_levels_are_checked() {
        assert_eq!(LogFormat::parse("JSON"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert_eq!(
            LogFormat::parse("xml").unwrap_err(),
            "MYMCP_LOG_FORMAT: invalid value \"xml\" (allowed: text, json)"
        );
        assert!(parse_level("debug").is_ok());
        assert!(parse_level("info,mymcp_executor=debug").is_ok());
        assert!(parse_level("bogus=level=x").is_err());
    }

    /// Every byte written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_escape_control_characters_in_every_field() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber =
            tracing_subscriber::registry().with(text_layer(move || writer.clone(), false));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call", path = %"/tmp/a\nb");
            let _entered = span.enter();
            let forged = "x\n2026-01-01T00:00:00.000000Z  INFO forged";
            tracing::info!(
                tool = %forged,
                id = ?"y\r\n",
                r#type = "\u{1b}[2K\u{2028}\u{202e}",
                n = 3,
                "a message\nwith a break {}",
                "\t."
            );
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with('\n'), "{text}");
        for part in [
            r"a message\nwith a break \t.",
            r"tool=x\n2026-01-01T00:00:00.000000Z  INFO forged",
            r#"id="y\r\n""#,
            r#"type="\u{1b}[2K\u{2028}\u{202e}""#,
            " n=3",
            r"path=/tmp/a\nb",
        ] {
            assert!(text.contains(part), "{part:?} not in {text:?}");
        }
    }
}
