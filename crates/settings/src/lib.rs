//! The `MYMCP_*` settings of mymcp: the table of every setting (name, default, meaning, which
//! process reads it), the env file (discovery and parsing), and the logging set-up shared by
//! the daemons.
//!
//! The env file is found as the reference servers find it: `--env-file`, else
//! `MYMCP_ENV_FILE`, else `/etc/mymcp/.env` if it exists. Its syntax is the Go reference's:
//! `KEY=VALUE` lines, `#` comments, an optional `export ` prefix, one pair of matching quotes
//! stripped, no inline comments. Values from the process environment win over the file, and
//! command-line flags win over both.
//!
//! ```
//! let pairs = mymcp_settings::envfile::parse("# c\nexport MYMCP_PORT='8080'\n").unwrap();
//! assert_eq!(pairs, vec![("MYMCP_PORT".to_string(), "8080".to_string())]);
//! ```

#![forbid(unsafe_code)]

pub mod envfile;
pub mod logging;
mod table;
pub mod values;

pub use table::{example_env_file, Setting, SETTINGS};

/// Settings that hold secrets: only the executor reads them, and they are never passed on to
/// the frontend or to commands.
pub const SECRET_SETTINGS: [&str; 2] = ["MYMCP_ADMIN_TOKEN", "MYMCP_METRICS_TOKEN"];

/// Every environment variable any mymcp process treats as a secret: the executor's tokens and
/// the recorder's LLM API keys. A secret belongs in a file (the env file, which the executor
/// reads itself) or a systemd credential, never in a process environment, which
/// `/proc/<pid>/environ` shows for the life of the process. Each mymcp process overwrites
/// these in place at start-up (`mymcp_service::environment::take_secrets`) should one arrive
/// there anyway.
pub const SECRET_VARIABLES: [&str; 5] = [
    "MYMCP_ADMIN_TOKEN",
    "MYMCP_METRICS_TOKEN",
    "MYMCP_RECORDER_LLM_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
];

/// The default env file.
pub const DEFAULT_ENV_FILE: &str = "/etc/mymcp/.env";

/// Parses a boolean setting as every mymcp process does: true/false/1/0/yes/no/on/off, any
/// case; empty means false.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "" | "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!(
            "invalid boolean {other:?} (allowed: true, false, 1, 0, yes, no, on, off)"
        )),
    }
}

#[cfg(test)]
mod bool_tests {
    #[test]
    fn booleans_are_the_executor_s() {
        for t in ["true", "1", "YES", " on "] {
            assert_eq!(super::parse_bool(t), Ok(true));
        }
        for f in ["false", "0", "no", "off", ""] {
            assert_eq!(super::parse_bool(f), Ok(false));
        }
        assert!(super::parse_bool("maybe").is_err());
    }
}
