//! What is generated from the declarations: the example env files (`mymcpctl config example`,
//! `deploy/mymcp.env.example`, `deploy/recorder.env.example`) and the settings table of
//! `docs/configuration.md`. `cargo xtask settings` writes the files; the drift tests of `xtask`
//! fail when a file differs from what these functions make.

use crate::setting::{Declared, Group, Process};
use crate::table::{ALL, ENV_FILE, RECORDER_ENABLED, RECORDER_LLM_API_KEY};

/// An env file made of declarations: a header, then each listed setting with its help,
/// commented out at its default unless `set` gives it a value.
#[derive(Debug)]
pub struct EnvFile {
    pub header: &'static str,
    /// Which settings it lists.
    pub lists: fn(&dyn Declared) -> bool,
    /// Settings written uncommented, with this value.
    pub set: &'static [(&'static str, &'static str)],
}

/// Every setting (`mymcpctl config example`).
pub const EVERY_SETTING: EnvFile = EnvFile {
    header: "\
# mymcp configuration (env file). Found as: --env-file, then MYMCP_ENV_FILE, then
# /etc/mymcp/.env. Syntax: KEY=VALUE, # comments, optional `export `, one pair of
# quotes stripped. The process environment overrides this file; flags override both.
# Keep it 0600 root: only the executor reads it (the frontend never gets secrets; its own
# settings go to /etc/mymcp/frontend.env, the recorder's to /etc/mymcp/recorder.env).
# Every value below is the default; uncomment to change.
",
    lists: any_in_a_file,
    set: &[],
};

/// `/etc/mymcp/.env`: what the executor reads (`deploy/mymcp.env.example`).
pub const EXECUTOR_ENV_FILE: EnvFile = EnvFile {
    header: "\
# /etc/mymcp/.env — read by mymcp-executor only (mode 0600, root). The frontend never sees it.
# Every setting has a default; uncomment what you change. Generated from the declarations in
# crates/settings (cargo xtask settings).
",
    lists: read_by_the_executor,
    set: &[],
};

/// `/etc/mymcp/recorder.env`: what the recorder reads (`deploy/recorder.env.example`).
pub const RECORDER_ENV_FILE: EnvFile = EnvFile {
    header: "\
# /etc/mymcp/recorder.env — settings of the optional mymcp-recorder (mode 0600, root: systemd
# passes it to the service, which runs as mymcp-recorder, as the credential recorder.env; it
# never enters the process environment). Every setting but the key has a default; uncomment
# what you change. Generated from the declarations in crates/settings (cargo xtask settings).
",
    lists: read_by_the_recorder_from_its_file,
    set: &[
        (RECORDER_ENABLED.name, "true"),
        (RECORDER_LLM_API_KEY.name, ""),
    ],
};

/// The env file cannot name itself.
fn any_in_a_file(s: &dyn Declared) -> bool {
    s.name() != ENV_FILE.name
}

/// The executor's secrets are imported once into the token store: not listed.
fn read_by_the_executor(s: &dyn Declared) -> bool {
    any_in_a_file(s) && s.read_by().contains(&Process::Executor) && !s.kind().is_secret()
}

/// The recorder takes its log settings from its environment and flags, not from its file.
fn read_by_the_recorder_from_its_file(s: &dyn Declared) -> bool {
    any_in_a_file(s) && s.read_by().contains(&Process::Recorder) && s.group() != Group::Logging
}

impl EnvFile {
    pub fn render(&self) -> String {
        let mut out = String::from(self.header);
        let mut group = None;
        for s in ALL.iter().filter(|s| (self.lists)(**s)) {
            if group != Some(s.group()) {
                group = Some(s.group());
                out.push_str(&format!("\n## {}\n", s.group().title()));
            }
            out.push('\n');
            let about = format!("{} [{}; {}]", s.help(), s.kind().values(), readers(*s));
            for line in wrap(&about, 96) {
                out.push_str(&format!("# {line}\n"));
            }
            match self.set.iter().find(|(name, _)| *name == s.name()) {
                Some((name, value)) => out.push_str(&format!("{name}={value}\n")),
                None => out.push_str(&format!("#{}={}\n", s.name(), s.kind().default_text())),
            }
        }
        out
    }
}

/// A commented env file with every setting at its default (`mymcpctl config example`).
pub fn example_env_file() -> String {
    EVERY_SETTING.render()
}

/// The settings table of `docs/configuration.md`: one table per group.
pub fn markdown_table() -> String {
    let mut out = String::new();
    let mut group = None;
    for s in ALL {
        if group != Some(s.group()) {
            group = Some(s.group());
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("### {}\n\n", s.group().title()));
            out.push_str("| Variable | Default | Values | Read by | Meaning |\n");
            out.push_str("|---|---|---|---|---|\n");
        }
        let default = s.kind().default_text();
        let default = if default.is_empty() {
            "(none)".to_owned()
        } else {
            format!("`{default}`")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            s.name(),
            default,
            s.kind().values(),
            readers(*s),
            s.help().replace('|', "\\|")
        ));
    }
    out
}

fn readers(s: &dyn Declared) -> String {
    let names: Vec<&str> = s.read_by().iter().map(|p| p.as_str()).collect();
    names.join(", ")
}

/// Splits `text` into lines of at most `width` characters (longer words stand alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|l| {
                l.strip_prefix('#')
                    .filter(|r| r.starts_with("MYMCP_"))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_names_every_setting_once_and_parses_uncommented() {
        let text = example_env_file();
        for s in ALL.iter().filter(|s| s.name() != ENV_FILE.name) {
            assert_eq!(
                text.matches(&format!("\n#{}=", s.name())).count(),
                1,
                "{}",
                s.name()
            );
        }
        let pairs = crate::envfile::parse(&uncommented(&text)).unwrap();
        assert_eq!(pairs.len(), ALL.len() - 1);
        // Every value in it is the default, and allowed.
        for (name, value) in pairs {
            let s = crate::find(&name).unwrap();
            assert_eq!(value, s.kind().default_text());
            s.kind().check(&name, &value).unwrap();
        }
    }

    #[test]
    fn the_recorder_file_sets_what_the_recorder_needs() {
        let text = RECORDER_ENV_FILE.render();
        let pairs = crate::envfile::parse(&text).unwrap();
        assert_eq!(
            pairs,
            [
                ("MYMCP_RECORDER_ENABLED".to_owned(), "true".to_owned()),
                ("MYMCP_RECORDER_LLM_API_KEY".to_owned(), String::new())
            ]
        );
        assert!(!text.contains("MYMCP_LOG_LEVEL"), "{text}");
        assert!(!EXECUTOR_ENV_FILE.render().contains("MYMCP_ADMIN_TOKEN="));
    }

    #[test]
    fn lines_are_wrapped_at_words() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("aaaaaaa b", 5), ["aaaaaaa", "b"]);
        for line in example_env_file().lines() {
            assert!(line.chars().count() <= 100, "{line}");
        }
    }
}
