//! Logging of the daemons: `tracing` to journald when started by systemd with its output
//! connected to the journal (`JOURNAL_STREAM` set), else to stderr as text or JSON lines.

use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How stderr log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// Parses `text` or `json` (`MYMCP_LOG_FORMAT`, `--log-format`).
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "MYMCP_LOG_FORMAT: invalid value {s:?} (allowed: text, json)"
            )),
        }
    }
}

/// Checks a level or directive string (`MYMCP_LOG_LEVEL`, `--log-level`).
pub fn parse_level(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| {
        format!(
            "MYMCP_LOG_LEVEL: invalid value {level:?} ({e}; allowed: error, warn, info, debug, trace or tracing directives)"
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
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
