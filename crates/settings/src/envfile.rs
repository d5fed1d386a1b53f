//! Finding and reading the env file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why the env file cannot be used. Start-up stops on it.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("env file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("env file {path}, line {line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Which env file to read: `flag`, else `MYMCP_ENV_FILE` (from `env`; `none` means no file),
/// else [`crate::DEFAULT_ENV_FILE`] when it exists. `None` when there is none.
pub fn discover(flag: Option<&Path>, env_var: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_owned());
    }
    if let Some(v) = env_var.map(str::trim).filter(|v| !v.is_empty()) {
        // `none`: no env file at all, not even the default (the quick try uses this).
        return (v != "none").then(|| PathBuf::from(v));
    }
    let default = Path::new(crate::DEFAULT_ENV_FILE);
    default.exists().then(|| default.to_owned())
}

/// Parses env-file text into `(key, value)` pairs in file order.
///
/// Lines: blank, `# comment`, or `[export ]KEY=VALUE`. Keys are letters, digits and `_`, not
/// starting with a digit. Surrounding whitespace of keys and values is dropped; a value wholly
/// inside one pair of matching quotes (`"…"` or `'…'`) loses them (nothing else is unescaped).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, format!("expected KEY=VALUE, got {raw:?}")));
        };
        let key = key.trim();
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((i + 1, format!("invalid variable name {key:?}")));
        }
        let mut value = value.trim();
        for q in ['"', '\''] {
            if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
                value = &value[1..value.len() - 1];
                break;
            }
        }
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// Reads and parses the env file at `path`.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|(line, reason)| EnvFileError::Syntax {
        path: path.to_owned(),
        line,
        reason,
    })
}

/// The settings in force: the env file's values, overridden by the process environment's.
/// Only `MYMCP_*` names (and `JOURNAL_STREAM`) are taken from the process environment.
pub fn merged(file: &[(String, String)]) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = file.iter().cloned().collect();
    for (k, v) in std::env::vars() {
        if k.starts_with("MYMCP_") {
            map.insert(k, v);
        }
    }
    map
}

/// Finds `--env-file PATH` or `--env-file=PATH` in raw arguments, before argument parsing
/// (the file's values become the defaults that the parser sees).
pub fn flag_in_args(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--env-file" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--env-file=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap()
    }

    #[test]
    fn syntax_of_the_go_reference() {
        let text = "# comment\n\nMYMCP_PORT=8080\nexport MYMCP_HOST = \"0.0.0.0\"\n\
                    MYMCP_A='x y'\nMYMCP_B=\"unbalanced'\nMYMCP_C=a#b\nMYMCP_D=\nMYMCP_E=a=b\n";
        assert_eq!(
            pairs(text),
            [
                ("MYMCP_PORT", "8080"),
                ("MYMCP_HOST", "0.0.0.0"),
                ("MYMCP_A", "x y"),
                ("MYMCP_B", "\"unbalanced'"),
                ("MYMCP_C", "a#b"),
                ("MYMCP_D", ""),
                ("MYMCP_E", "a=b"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(parse("A=1\nnot a pair\n").unwrap_err().0, 2);
        assert_eq!(parse("1A=1").unwrap_err().0, 1);
        assert_eq!(parse("A B=1").unwrap_err().0, 1);
    }

    #[test]
    fn discovery_order() {
        assert_eq!(
            discover(Some(Path::new("/x/.env")), Some("/y/.env")),
            Some(PathBuf::from("/x/.env"))
        );
        assert_eq!(
            discover(None, Some("/y/.env")),
            Some(PathBuf::from("/y/.env"))
        );
        assert_eq!(discover(None, Some("none")), None);
    }

    #[test]
    fn env_file_flag_is_found_before_parsing() {
        let args: Vec<std::ffi::OsString> = ["x", "--port", "1", "--env-file", "/e"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(flag_in_args(&args), Some(PathBuf::from("/e")));
        let args: Vec<std::ffi::OsString> = ["x", "--env-file=/f"].iter().map(Into::into).collect();
        assert_eq!(flag_in_args(&args), Some(PathBuf::from("/f")));
    }
}
