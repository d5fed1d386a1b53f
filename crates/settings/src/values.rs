//! The readers behind the declarations: whole numbers in a range, booleans, absolute paths,
//! lists, intervals, with errors that name the variable, the value and what is allowed, and
//! [`Source`], where values come from. Processes read their settings through the declarations
//! ([`crate::Setting`]), which call these with the declared name, default and range.
//!
//! ```
//! use mymcp_settings::values::integer;
//! use std::collections::HashMap;
//! let src: HashMap<String, String> = [("MYMCP_PORT".into(), "abc".into())].into();
//! let e = integer(&src, "MYMCP_PORT", 8765, 0, 65535).unwrap_err();
//! assert_eq!(e.to_string(), "MYMCP_PORT: invalid integer \"abc\" (expected a whole number from 0 to 65535)");
//! ```

use std::path::PathBuf;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    pub name: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(name: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            name: name.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Where the settings come from: the process environment by default, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug)]
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads a non-negative integer setting within `[min, max]`.
pub fn integer(
    src: &dyn Source,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    parse_integer(name, src.get(name).as_deref(), default, min, max)
}

/// Parses one integer value (`None`: unset) of the setting `name`.
pub(crate) fn parse_integer(
    name: &str,
    raw: Option<&str>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(default);
    }
    let v: u64 = raw.parse().map_err(|_| {
        ConfigError::new(
            name,
            format!("invalid integer {raw:?} (expected a whole number from {min} to {max})"),
        )
    })?;
    if v < min || v > max {
        return Err(ConfigError::new(
            name,
            format!("{v} is out of range (allowed: {min} to {max})"),
        ));
    }
    Ok(v)
}

/// Reads an absolute path setting.
pub fn directory(src: &dyn Source, name: &str, default: &str) -> Result<PathBuf, ConfigError> {
    let v = src
        .get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned());
    let p = PathBuf::from(&v);
    if !p.is_absolute() {
        return Err(ConfigError::new(
            name,
            format!("{v} is not an absolute path"),
        ));
    }
    Ok(p)
}

/// Reads a comma-separated list setting (empty entries dropped).
pub fn list(src: &dyn Source, name: &str) -> Vec<String> {
    src.get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a boolean setting: true/false/1/0/yes/no/on/off, any case.
pub fn boolean(src: &dyn Source, name: &str, default: bool) -> Result<bool, ConfigError> {
    parse_boolean(name, src.get(name).as_deref(), default)
}

/// Parses one boolean value (`None`: unset) of the setting `name`.
pub(crate) fn parse_boolean(
    name: &str,
    raw: Option<&str>,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            format!(
                "invalid boolean {:?} (allowed: true, false, 1, 0, yes, no, on, off)",
                raw.trim()
            ),
        )),
    }
}

/// Reads a number of seconds that the reference treats leniently: unset, empty or not positive
/// means `default`; anything else must be a whole number from 1 to `max`.
pub fn interval(src: &dyn Source, name: &str, default: u64, max: u64) -> Result<u64, ConfigError> {
    match src.get(name).map(|v| v.trim().to_owned()) {
        Some(v) if v.parse::<i64>().is_ok_and(|n| n <= 0) => Ok(default),
        _ => integer(src, name, default, 1, max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn intervals_that_are_not_positive_mean_the_default() {
        for (v, want) in [("", 300), ("0", 300), ("-5", 300), ("60", 60)] {
            assert_eq!(
                interval(&src(&[("I", v)]), "I", 300, 86_400).unwrap(),
                want,
                "{v}"
            );
        }
        assert_eq!(interval(&src(&[]), "I", 300, 86_400).unwrap(), 300);
        assert!(interval(&src(&[("I", "x")]), "I", 300, 86_400).is_err());
        assert!(interval(&src(&[("I", "90000")]), "I", 300, 86_400).is_err());
    }

    #[test]
    fn booleans_paths_and_lists() {
        assert!(boolean(&src(&[("B", "Yes")]), "B", false).unwrap());
        assert!(boolean(&src(&[("B", "maybe")]), "B", false).is_err());
        assert!(directory(&src(&[("D", "rel")]), "D", "/x").is_err());
        assert_eq!(
            directory(&src(&[]), "D", "/x").unwrap(),
            PathBuf::from("/x")
        );
        assert_eq!(list(&src(&[("L", " a, ,b ,")]), "L"), vec!["a", "b"]);
    }
}
