//! The drift tests: whatever is made from, or names, the settings' declarations agrees with
//! them. Each failure says what to fix.
//!
//! - the generated files (`deploy/*.env.example`, the table of `docs/configuration.md`) are
//!   what `cargo xtask settings` writes;
//! - every flag that reads a `MYMCP_*` variable shows the declared default and help;
//! - every `MYMCP_*` name in the code (tests aside), `deploy/` and the documentation is a
//!   declared setting, so a setting cannot be read, or documented, without a declaration.

#![cfg(test)]

use mymcp_settings::{find, ALL};
use std::path::{Path, PathBuf};

#[test]
fn generated_files_are_what_the_declarations_make() {
    let stale = crate::generated::stale().unwrap();
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}; run: cargo xtask settings"
    );
}

/// Every argument of `cmd` and of its subcommands, with the command path.
fn arguments(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
    for arg in cmd.get_arguments() {
        out.push((path.to_owned(), arg.clone()));
    }
    for sub in cmd.get_subcommands() {
        arguments(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_flag_of_a_setting_shows_its_declared_default_and_help() {
    let mut checked = 0;
    for (binary, cmd) in crate::pages::commands() {
        let mut args = Vec::new();
        arguments(&cmd, binary, &mut args);
        for (path, arg) in args {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_string_lossy();
            let flag = format!("{path} --{}", arg.get_long().unwrap_or_default());
            let Some(setting) = find(&env) else {
                panic!("{flag} reads {env}, which is not declared in crates/settings");
            };
            assert_eq!(
                arg.get_help().map(|h| h.to_string()).as_deref(),
                Some(setting.help()),
                "{flag}: take the help from the declaration (help = {}.help)",
                &env["MYMCP_".len()..]
            );
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() {
                assert_eq!(
                    defaults,
                    [setting.kind().default_text()],
                    "{flag}: the default differs from the declaration's"
                );
            }
            checked += 1;
        }
    }
    // At the time of writing: executor 5, frontend 18, mymcpctl 4, recorder 2.
    assert!(
        checked >= 29,
        "only {checked} flags read a setting: are the commands all here?"
    );
}

/// Names that look like settings and are not: build and test-harness variables, and a
/// placeholder of the migration guide.
const NOT_SETTINGS: &[&str] = &[
    "MYMCP_PROTOCOL_HASH",
    "MYMCP_BIN_DIR",
    "MYMCP_NODE_DIR",
    "MYMCP_LOAD_SECONDS",
    // tests/deny-check: where cargo-deny is cached, whether advisories must be checked.
    "MYMCP_TOOLS_DIR",
    "MYMCP_DENY_ADVISORIES",
    "MYMCP_X",
];
const NOT_SETTING_PREFIXES: &[&str] = &["MYMCP_TEST_", "MYMCP_BENCH_"];

/// The `MYMCP_*` names in `text`; a name followed by `*`, or ending in `_`, is a prefix
/// (`MYMCP_TLS_*`) and comes back with its `*`.
fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("MYMCP_") {
        let after = &rest[at..];
        let len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..len];
        if after[len..].starts_with('*') || name.ends_with('_') {
            out.push(format!("{}*", name.trim_end_matches('*')));
        } else {
            out.push(name.to_owned());
        }
        rest = &after[len..];
    }
    out
}

fn files(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, keep, out);
        } else if keep(&path) {
            out.push(path);
        }
    }
}

#[test]
fn every_mymcp_name_in_the_code_and_the_docs_is_declared() {
    let root = crate::root();
    let mut paths = Vec::new();
    let rust = |p: &Path| p.extension().is_some_and(|e| e == "rs");
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        files(&krate.path().join("src"), &rust, &mut paths);
        paths.push(krate.path().join("build.rs"));
    }
    files(
        &root.join("docs"),
        &|p| p.extension().is_some_and(|e| e == "md"),
        &mut paths,
    );
    files(&root.join("deploy"), &|_| true, &mut paths);
    paths.extend(["README.md", "CONTRIBUTING.md"].map(|f| root.join(f)));

    let mut undeclared = Vec::new();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // Tests use names of their own: read up to a file's tests.
        let text = match path.extension().is_some_and(|e| e == "rs") {
            true => text.split("#[cfg(test)]").next().unwrap_or_default(),
            false => &text,
        };
        for name in names(text) {
            let known = match name.strip_suffix('*') {
                Some(prefix) => ALL.iter().any(|s| s.name().starts_with(prefix)),
                None => find(&name).is_some(),
            };
            let harness = NOT_SETTINGS.contains(&name.as_str())
                || NOT_SETTING_PREFIXES.iter().any(|p| name.starts_with(p));
            if !known && !harness {
                let shown = path.strip_prefix(&root).unwrap_or(&path).display();
                undeclared.push(format!("{shown}: {name}"));
            }
        }
    }
    undeclared.sort();
    undeclared.dedup();
    assert!(
        undeclared.is_empty(),
        "not declared in crates/settings/src/table.rs:\n{}",
        undeclared.join("\n")
    );
}

#[test]
fn names_and_prefixes_are_found() {
    assert_eq!(
        names("a `MYMCP_TLS_*`, MYMCP_PORT=1 and \"MYMCP_TLS_\" MYMCP_"),
        ["MYMCP_TLS_*", "MYMCP_PORT", "MYMCP_TLS_*", "MYMCP_*"]
    );
}
