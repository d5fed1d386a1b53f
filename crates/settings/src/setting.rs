//! What a setting is: its name, its kind (the type, default and allowed values), which
//! processes read it, where it is listed, and its help text. Each kind has its own typed
//! getters, so a process reads a value through the declaration and never writes the name, the
//! default or the range a second time.
//!
//! ```
//! use mymcp_settings::PORT;
//! use std::collections::HashMap;
//! let src: HashMap<String, String> = [("MYMCP_PORT".into(), "8080".into())].into();
//! assert_eq!(PORT.read(&src).unwrap(), 8080);
//! assert_eq!(PORT.read(&HashMap::new()).unwrap(), PORT.default());
//! ```

use crate::values::{self, ConfigError, Source};
use std::fmt;
use std::path::PathBuf;

/// A process that reads a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    Executor,
    Frontend,
    /// `mymcpctl` (for example `serve`, `doctor`, `audit verify`).
    Ctl,
    Recorder,
}

impl Process {
    /// The short name used in the generated documentation.
    pub fn as_str(self) -> &'static str {
        match self {
            Process::Executor => "executor",
            Process::Frontend => "frontend",
            Process::Ctl => "mymcpctl",
            Process::Recorder => "recorder",
        }
    }
}

/// Where a setting is listed in the example env files and the documentation. The order of
/// [`crate::ALL`] is the order of the groups; each group's settings stand together there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Network,
    Https,
    Limits,
    Daemons,
    Commands,
    Jobs,
    Terminals,
    Files,
    Transfers,
    OAuth,
    Audit,
    Telemetry,
    Overview,
    RecorderLlm,
    RecorderCycles,
    RecorderBootstrap,
    Logging,
}

impl Group {
    /// The heading of the group.
    pub fn title(self) -> &'static str {
        match self {
            Group::Network => "Network: where the frontend listens and whom it answers",
            Group::Https => "HTTPS",
            Group::Limits => "Connections and request limits",
            Group::Daemons => "Sockets, users, tokens and state",
            Group::Commands => "Commands (bash_execute)",
            Group::Jobs => "Background jobs",
            Group::Terminals => "Terminals (terminal_open and the other terminal tools)",
            Group::Files => "File tools",
            Group::Transfers => "Transfers (prepare_upload, prepare_download)",
            Group::OAuth => "OAuth 2.1: connectors (claude.ai, ChatGPT) approved on the host",
            Group::Audit => "Audit log",
            Group::Telemetry => "OpenTelemetry (OTLP export through the frontend)",
            Group::Overview => "Host overview (server_overview) and the recorder's files",
            Group::RecorderLlm => "Recorder: the LLM",
            Group::RecorderCycles => "Recorder: merge cycles",
            Group::RecorderBootstrap => "Recorder: the first overview (bootstrap)",
            Group::Logging => "Logging",
        }
    }
}

/// One `MYMCP_*` setting. `K` is its kind ([`Bool`], [`Integer`], [`Interval`], [`Path`],
/// [`Text`], [`List`], [`Choice`] or [`Secret`]), which holds the default and the allowed
/// values and gives the typed getters.
#[derive(Clone, Copy, Debug)]
pub struct Setting<K> {
    pub name: &'static str,
    pub kind: K,
    pub read_by: &'static [Process],
    pub group: Group,
    /// One or a few sentences; shown by `--help`, in the env files and in the docs.
    pub help: &'static str,
}

impl<K> Setting<K> {
    /// The value exactly as set (untrimmed, possibly empty), `None` when unset.
    pub fn raw(&self, src: &dyn Source) -> Option<String> {
        src.get(self.name)
    }

    /// The value as set, trimmed; `None` when unset or empty.
    pub fn value(&self, src: &dyn Source) -> Option<String> {
        self.raw(src)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// An error about this setting's value.
    pub fn error(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(self.name, problem)
    }
}

/// true/false/1/0/yes/no/on/off, any case; empty means the default.
#[derive(Clone, Copy, Debug)]
pub struct Bool {
    pub default: bool,
}

/// A whole number in `min..=max`; empty means the default.
#[derive(Clone, Copy, Debug)]
pub struct Integer {
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

/// Seconds, read leniently as the reference does: unset, empty or not positive means the
/// default; anything else is a whole number from 1 to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub default: u64,
    pub max: u64,
}

/// A file or directory. `default` is `""` when there is none (or when it depends on another
/// setting: the help says which). An `absolute` path must start with `/`.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    pub default: &'static str,
    pub absolute: bool,
}

/// Free text (`""`: none, or the help says what stands in).
#[derive(Clone, Copy, Debug)]
pub struct Text {
    pub default: &'static str,
}

/// A comma-separated list; empty entries are dropped. Empty by default.
#[derive(Clone, Copy, Debug)]
pub struct List;

/// One of `allowed` (any case); empty means the default.
#[derive(Clone, Copy, Debug)]
pub struct Choice {
    pub default: &'static str,
    pub allowed: &'static [&'static str],
}

/// A secret: no default, never shown with a value, and never left in a process environment
/// ([`crate::SECRET_VARIABLES`]).
#[derive(Clone, Copy, Debug)]
pub struct Secret;

/// What the generated files need to know about a kind.
pub trait Kind: fmt::Debug + Sync {
    /// The default as written in an env file (`""`: none).
    fn default_text(&self) -> String;
    /// The values allowed, in words ("1 to 3600", "true or false", …).
    fn values(&self) -> String;
    /// Whether `raw` is a value the setting `name` accepts (the error says why not).
    fn check(&self, name: &str, raw: &str) -> Result<(), ConfigError>;
    fn is_secret(&self) -> bool {
        false
    }
}

impl Kind for Bool {
    fn default_text(&self) -> String {
        self.default.to_string()
    }
    fn values(&self) -> String {
        "true or false".into()
    }
    fn check(&self, name: &str, raw: &str) -> Result<(), ConfigError> {
        values::parse_boolean(name, Some(raw), self.default).map(drop)
    }
}

impl Kind for Integer {
    fn default_text(&self) -> String {
        self.default.to_string()
    }
    fn values(&self) -> String {
        if self.max == u64::MAX {
            format!("{} or more", self.min)
        } else {
            format!("{} to {}", self.min, self.max)
        }
    }
    fn check(&self, name: &str, raw: &str) -> Result<(), ConfigError> {
        values::parse_integer(name, Some(raw), self.default, self.min, self.max).map(drop)
    }
}

impl Kind for Interval {
    fn default_text(&self) -> String {
        self.default.to_string()
    }
    fn values(&self) -> String {
        format!("1 to {} (0 or less: the default)", self.max)
    }
    fn check(&self, name: &str, raw: &str) -> Result<(), ConfigError> {
        let src: std::collections::HashMap<String, String> =
            [(name.to_owned(), raw.to_owned())].into();
        values::interval(&src, name, self.default, self.max).map(drop)
    }
}

impl Kind for Path {
    fn default_text(&self) -> String {
        self.default.to_owned()
    }
    fn values(&self) -> String {
        if self.absolute {
            "absolute path"
        } else {
            "path"
        }
        .into()
    }
    fn check(&self, name: &str, raw: &str) -> Result<(), ConfigError> {
        let v = raw.trim();
        if self.absolute && !v.is_empty() && !v.starts_with('/') {
            return Err(ConfigError::new(
                name,
                format!("{v} is not an absolute path"),
            ));
        }
        Ok(())
    }
}

impl Kind for Text {
    fn default_text(&self) -> String {
        self.default.to_owned()
    }
    fn values(&self) -> String {
        "text".into()
    }
    fn check(&self, _: &str, _: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl Kind for List {
    fn default_text(&self) -> String {
        String::new()
    }
    fn values(&self) -> String {
        "comma-separated list".into()
    }
    fn check(&self, _: &str, _: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl Kind for Choice {
    fn default_text(&self) -> String {
        self.default.to_owned()
    }
    fn values(&self) -> String {
        self.allowed.join(", ")
    }
    fn check(&self, name: &str, raw: &str) -> Result<(), ConfigError> {
        let v = raw.trim().to_ascii_lowercase();
        if v.is_empty() || self.allowed.contains(&v.as_str()) {
            Ok(())
        } else {
            Err(ConfigError::new(
                name,
                format!(
                    "invalid value {raw:?} (allowed: {})",
                    self.allowed.join(", ")
                ),
            ))
        }
    }
}

impl Kind for Secret {
    fn default_text(&self) -> String {
        String::new()
    }
    fn values(&self) -> String {
        "secret".into()
    }
    fn is_secret(&self) -> bool {
        true
    }
    fn check(&self, _: &str, _: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Any declared setting, whatever its kind: what [`crate::ALL`] lists and the generated files
/// are made from.
pub trait Declared: fmt::Debug + Sync {
    fn name(&self) -> &'static str;
    fn help(&self) -> &'static str;
    fn read_by(&self) -> &'static [Process];
    fn group(&self) -> Group;
    fn kind(&self) -> &dyn Kind;
}

impl<K: Kind> Declared for Setting<K> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn read_by(&self) -> &'static [Process] {
        self.read_by
    }
    fn group(&self) -> Group {
        self.group
    }
    fn kind(&self) -> &dyn Kind {
        &self.kind
    }
}

impl Setting<Bool> {
    pub const fn default(&self) -> bool {
        self.kind.default
    }

    pub fn read(&self, src: &dyn Source) -> Result<bool, ConfigError> {
        values::boolean(src, self.name, self.kind.default)
    }

    /// Parses one value (a flag's or the environment's).
    pub fn parse(&self, raw: &str) -> Result<bool, ConfigError> {
        values::parse_boolean(self.name, Some(raw), self.kind.default)
    }

    /// A clap value parser: `#[arg(value_parser = X.parser())]`.
    pub fn parser(
        self,
    ) -> impl Fn(&str) -> Result<bool, ConfigError> + Clone + Send + Sync + 'static {
        move |raw: &str| self.parse(raw)
    }
}

impl Setting<Integer> {
    pub const fn default(&self) -> u64 {
        self.kind.default
    }

    /// The default as the type a flag holds (`u16`, `usize`); a declared default that does
    /// not fit is a programming error, caught by the drift tests.
    pub fn default_as<T: TryFrom<u64>>(&self) -> T {
        T::try_from(self.kind.default)
            .unwrap_or_else(|_| panic!("{}: the default does not fit", self.name))
    }

    pub fn read(&self, src: &dyn Source) -> Result<u64, ConfigError> {
        self.read_within(src, self.kind.min, self.kind.max)
    }

    /// Reads the value within `min..=max`, narrower bounds than the declared ones that
    /// depend on another setting (`MYMCP_BASH_MAX_OUTPUT_BYTES` at most
    /// `MYMCP_BASH_MAX_OUTPUT_BYTES_HARD`); the default is clamped into them.
    pub fn read_within(&self, src: &dyn Source, min: u64, max: u64) -> Result<u64, ConfigError> {
        let default = self.kind.default.clamp(min.min(max), max);
        values::parse_integer(self.name, src.get(self.name).as_deref(), default, min, max)
    }

    pub fn parse(&self, raw: &str) -> Result<u64, ConfigError> {
        let k = self.kind;
        values::parse_integer(self.name, Some(raw), k.default, k.min, k.max)
    }

    /// A clap value parser: `#[arg(value_parser = X.parser::<u16>())]`.
    pub fn parser<T: TryFrom<u64>>(
        self,
    ) -> impl Fn(&str) -> Result<T, ConfigError> + Clone + Send + Sync + 'static {
        move |raw: &str| {
            let v = self.parse(raw)?;
            T::try_from(v).map_err(|_| self.error(format!("{v} is too large")))
        }
    }
}

impl Setting<Interval> {
    pub const fn default(&self) -> u64 {
        self.kind.default
    }

    pub fn read(&self, src: &dyn Source) -> Result<u64, ConfigError> {
        values::interval(src, self.name, self.kind.default, self.kind.max)
    }
}

impl Setting<Path> {
    /// The declared default (`""`: none).
    pub const fn default(&self) -> &'static str {
        self.kind.default
    }

    /// The path set, else the declared default; checked to be absolute when declared so.
    pub fn read(&self, src: &dyn Source) -> Result<PathBuf, ConfigError> {
        self.read_or(src, self.kind.default)
    }

    /// The path set, else `fallback` (a default that depends on another setting).
    pub fn read_or(&self, src: &dyn Source, fallback: &str) -> Result<PathBuf, ConfigError> {
        if self.kind.absolute {
            values::directory(src, self.name, fallback)
        } else {
            Ok(PathBuf::from(
                self.value(src).unwrap_or_else(|| fallback.to_owned()),
            ))
        }
    }
}

impl Setting<Text> {
    pub const fn default(&self) -> &'static str {
        self.kind.default
    }

    /// The text set (trimmed), else the default.
    pub fn read(&self, src: &dyn Source) -> String {
        self.value(src)
            .unwrap_or_else(|| self.kind.default.to_owned())
    }
}

impl Setting<List> {
    /// Always empty: a flag's default.
    pub const fn default(&self) -> &'static str {
        ""
    }

    pub fn read(&self, src: &dyn Source) -> Vec<String> {
        values::list(src, self.name)
    }
}

impl Setting<Choice> {
    pub const fn default(&self) -> &'static str {
        self.kind.default
    }

    /// One of the allowed values (as declared, lower case), else the default.
    pub fn read(&self, src: &dyn Source) -> Result<&'static str, ConfigError> {
        match src.get(self.name) {
            None => Ok(self.kind.default),
            Some(raw) => self.parse(&raw),
        }
    }

    pub fn parse(&self, raw: &str) -> Result<&'static str, ConfigError> {
        self.kind.check(self.name, raw)?;
        let v = raw.trim().to_ascii_lowercase();
        Ok(self
            .kind
            .allowed
            .iter()
            .copied()
            .find(|a| *a == v)
            .unwrap_or(self.kind.default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const N: Setting<Integer> = Setting {
        name: "N",
        kind: Integer {
            default: 300,
            min: 1,
            max: 900,
        },
        read_by: &[Process::Executor],
        group: Group::Daemons,
        help: "",
    };
    const C: Setting<Choice> = Setting {
        name: "C",
        kind: Choice {
            default: "text",
            allowed: &["text", "json"],
        },
        read_by: &[Process::Executor],
        group: Group::Logging,
        help: "",
    };

    fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn narrower_bounds_clamp_the_default_and_name_themselves_in_errors() {
        assert_eq!(N.read_within(&src(&[]), 1, 60).unwrap(), 60);
        assert_eq!(N.read_within(&src(&[("N", "")]), 400, 900).unwrap(), 400);
        assert_eq!(
            N.read_within(&src(&[("N", "61")]), 1, 60)
                .unwrap_err()
                .to_string(),
            "N: 61 is out of range (allowed: 1 to 60)"
        );
    }

    #[test]
    fn clap_parsers_keep_the_declared_range() {
        let p = N.parser::<u16>();
        assert_eq!(p("42").unwrap(), 42);
        assert!(p("0").is_err());
        assert_eq!(
            N.parser::<u8>()("300").unwrap_err().to_string(),
            "N: 300 is too large"
        );
        assert_eq!(N.default_as::<u16>(), 300);
    }

    #[test]
    fn choices_are_matched_in_any_case_and_refused_by_name() {
        assert_eq!(C.read(&src(&[("C", " JSON ")])).unwrap(), "json");
        assert_eq!(C.read(&src(&[("C", "")])).unwrap(), "text");
        assert_eq!(
            C.read(&src(&[("C", "xml")])).unwrap_err().to_string(),
            "C: invalid value \"xml\" (allowed: text, json)"
        );
    }
}
