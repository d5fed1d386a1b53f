//! `mymcpctl migrate [--from /etc/mymcp] [--dry-run]`: takes an existing install of an earlier
//! mymcp to this layout, printing every step.
//!
//! Two kinds of source are recognised:
//!
//! - **Python 2.x / Go 3.x** (`/etc/mymcp`): an env file `.env` with `MYMCP_*` settings
//!   (the admin and metrics tokens among them), a plaintext `tokens.json`
//!   (`MYMCP_TOKEN_FILE`), and an audit directory (`MYMCP_AUDIT_LOG_DIR`, `/var/log/mymcp`)
//!   with the reference's unchained `audit.log*`.
//! - **1.x** (`/opt/mymcp`): the same files with `MCP_*` names (`MCP_PORT`, `MCP_ADMIN_TOKEN`,
//!   …; tokens in `tokens.json`, the audit log in `logs/` unless `MCP_AUDIT_LOG_DIR` says
//!   otherwise). Each `MCP_X` becomes `MYMCP_X` when that is a known setting.
//!
//! What it does:
//!
//! 1. Settings: the executor's go to `/etc/mymcp/.env`, the frontend's (`MYMCP_HOST`,
//!    `MYMCP_PORT`, origins, proxies, TLS, …) to `/etc/mymcp/frontend.env` (the unit's
//!    `EnvironmentFile=`); both 0600. Keys an existing target file already sets win. Paths that
//!    the new layout fixes (`MYMCP_TOKEN_FILE`, `MYMCP_AUDIT_LOG_DIR`, `MYMCP_ENV_FILE`) and
//!    unknown keys are not carried over (each is reported).
//! 2. Tokens: every plaintext token and the admin and metrics tokens of the env file become
//!    digests in `/etc/mymcp/tokens.json` — over the control socket when the executor runs, else
//!    in the store file itself (with the executor's own store code). The tokens keep working;
//!    no token value is written anywhere, and the secrets are not carried into the new env file.
//!    A plaintext store at the target path is converted in place; one elsewhere is reported for
//!    deletion.
//! 3. Audit: the old `audit.log*` files are moved (or, from outside `/var/log/mymcp`, copied)
//!    to `/var/log/mymcp/legacy-<kind>/`, so the new hash-chained log starts clean and the old
//!    records are kept.
//!
//! `--root DIR` migrates inside another root (tests, images): every path above is taken under
//! it and the running executor is not used.

use crate::client::ControlClient;
use anyhow::{bail, Context};
use mymcp_protocol::{ControlRequest, ControlResponse, ImportedToken, Role};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What `migrate` works on.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The old install's configuration directory (under `root`).
    pub from: PathBuf,
    /// `/`, or another root to migrate inside.
    pub root: PathBuf,
    /// Print the steps without changing anything.
    pub dry_run: bool,
    /// Where the running executor's control.sock is (used only when `root` is `/`).
    pub runtime_dir: PathBuf,
}

/// The kind of install found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Python mymcp 2.x or Go mymcp 3.x: `MYMCP_*` settings.
    Reference,
    /// mymcp 1.x in /opt/mymcp: `MCP_*` settings.
    V1,
}

impl SourceKind {
    fn label(self) -> &'static str {
        match self {
            SourceKind::Reference => "Python 2.x / Go 3.x install (MYMCP_* settings)",
            SourceKind::V1 => "1.x install (MCP_* settings)",
        }
    }
    fn legacy_dir(self) -> &'static str {
        match self {
            SourceKind::Reference => "legacy-2.x-3.x",
            SourceKind::V1 => "legacy-1.x",
        }
    }
}

/// Where a migrated setting goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Executor,
    Frontend,
    Secret(Role),
    Dropped(&'static str),
    Unknown,
}

/// The new name of an old key and where it goes.
fn classify(kind: SourceKind, key: &str) -> Option<(String, Destination)> {
    let name = match kind {
        SourceKind::Reference => key.strip_prefix("MYMCP_").map(|_| key.to_owned()),
        SourceKind::V1 => key
            .strip_prefix("MCP_")
            .map(|rest| format!("MYMCP_{rest}"))
            .or_else(|| key.strip_prefix("MYMCP_").map(|_| key.to_owned())),
    }?;
    use mymcp_settings::Process::{Executor, Frontend};
    let destination = if let Some(role) = crate::import::secret_role(&name) {
        Destination::Secret(role)
    } else if name == mymcp_settings::TOKEN_FILE.name {
        Destination::Dropped("the token store is /etc/mymcp/tokens.json")
    } else if name == mymcp_settings::AUDIT_LOG_DIR.name {
        Destination::Dropped("the audit log lives in /var/log/mymcp")
    } else if name == mymcp_settings::ENV_FILE.name {
        Destination::Dropped("the env file is /etc/mymcp/.env")
    } else {
        match mymcp_settings::find(&name).map(|s| s.read_by()) {
            Some(p) if p.contains(&Frontend) && !p.contains(&Executor) => Destination::Frontend,
            Some(p) if p.contains(&Executor) => Destination::Executor,
            // The recorder's own settings belong in its own file: not carried over.
            _ => Destination::Unknown,
        }
    };
    Some((name, destination))
}

struct Run<'a> {
    opts: &'a MigrateOptions,
}

impl Run<'_> {
    fn at(&self, path: &Path) -> PathBuf {
        self.opts.root.join(path.strip_prefix("/").unwrap_or(path))
    }
    fn live(&self) -> bool {
        self.opts.root == Path::new("/")
    }
    fn say(&self, what: impl AsRef<str>) {
        println!("[migrate] {}", what.as_ref());
    }
    fn act(&self, what: impl AsRef<str>) -> bool {
        if self.opts.dry_run {
            println!("[migrate] would: {}", what.as_ref());
        } else {
            println!("[migrate] {}", what.as_ref());
        }
        !self.opts.dry_run
    }
}

/// Finds the kind of install in `dir` from its env file's keys.
pub fn detect(env: &[(String, String)], tokens_exist: bool) -> Option<SourceKind> {
    let mymcp = env.iter().any(|(k, _)| k.starts_with("MYMCP_"));
    let mcp = env.iter().any(|(k, _)| k.starts_with("MCP_"));
    match (mymcp, mcp) {
        (false, true) => Some(SourceKind::V1),
        (true, _) => Some(SourceKind::Reference),
        (false, false) if tokens_exist => Some(SourceKind::Reference),
        _ => None,
    }
}

/// Runs the migration; returns the number of tokens now in the store from this install.
pub fn migrate(opts: &MigrateOptions) -> anyhow::Result<usize> {
    let run = Run { opts };
    let from = run.at(&opts.from);
    if !from.is_dir() {
        bail!("{} is not a directory", from.display());
    }
    let env_path = from.join(".env");
    let env = if env_path.is_file() {
        mymcp_settings::envfile::read(&env_path)
            .with_context(|| format!("reading {}", env_path.display()))?
    } else {
        Vec::new()
    };
    let lookup = |names: &[&str]| {
        env.iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let old_tokens = lookup(&["MYMCP_TOKEN_FILE", "MCP_TOKEN_FILE"])
        .map(|p| run.at(Path::new(&p)))
        .unwrap_or_else(|| from.join("tokens.json"));
    let Some(kind) = detect(&env, old_tokens.is_file()) else {
        bail!(
            "no mymcp install found in {}: neither a .env with MYMCP_*/MCP_* settings nor a tokens.json",
            from.display()
        );
    };
    run.say(format!("source: {} — {}", from.display(), kind.label()));

    // 1. Settings.
    let target_env = run.at(Path::new("/etc/mymcp/.env"));
    let target_frontend = run.at(Path::new("/etc/mymcp/frontend.env"));
    let mut executor_settings = BTreeMap::new();
    let mut frontend_settings = BTreeMap::new();
    let mut secrets: Vec<(Role, String)> = Vec::new();
    if env.is_empty() {
        run.say(format!(
            "env file: {} not found; defaults apply",
            env_path.display()
        ));
    } else {
        run.say(format!(
            "env file: {} ({} settings)",
            env_path.display(),
            env.len()
        ));
    }
    for (key, value) in &env {
        let as_name = |name: &str| {
            if name == key {
                String::new()
            } else {
                format!(" as {name}")
            }
        };
        match classify(kind, key) {
            None => run.say(format!("  {key}: not a mymcp setting, skipped")),
            Some((name, Destination::Executor)) => {
                run.say(format!(
                    "  {key}{} → {}",
                    as_name(&name),
                    target_env.display()
                ));
                executor_settings.insert(name, value.clone());
            }
            Some((name, Destination::Frontend)) => {
                run.say(format!(
                    "  {key}{} → {}",
                    as_name(&name),
                    target_frontend.display()
                ));
                if name == "MYMCP_HOST" && !is_loopback(value) {
                    run.say(format!("    note: the frontend refuses plain HTTP on {value}: configure HTTPS (MYMCP_TLS_CERT/KEY or the systemd credentials) or set MYMCP_ALLOW_PLAINTEXT=true behind a TLS proxy; under systemd the address is ListenStream= in mymcp-frontend.socket"));
                }
                frontend_settings.insert(name, value.clone());
            }
            Some((_, Destination::Secret(role))) => {
                if value.trim().is_empty() {
                    run.say(format!("  {key}: empty, skipped"));
                } else {
                    run.say(format!(
                        "  {key}: the {role} token, stored as a digest; not written to the new env file"
                    ));
                    secrets.push((role, value.trim().to_owned()));
                }
            }
            Some((_, Destination::Dropped(why))) => {
                run.say(format!("  {key}: not carried over: {why}"))
            }
            Some((name, Destination::Unknown)) => run.say(format!(
                "  {key}{}: unknown setting, not carried over",
                as_name(&name)
            )),
        }
    }
    write_env(&run, &target_env, &env_path, &executor_settings, "executor")?;
    write_env(
        &run,
        &target_frontend,
        &env_path,
        &frontend_settings,
        "frontend",
    )?;

    // 2. Tokens.
    let mut tokens: Vec<ImportedToken> = Vec::new();
    if old_tokens.is_file() && is_digest_store(&old_tokens) {
        run.say(format!(
            "tokens: {} already holds digests only (migrated before)",
            old_tokens.display()
        ));
    } else if old_tokens.is_file() {
        let plain = crate::import::from_token_file(&old_tokens)
            .with_context(|| format!("reading {}", old_tokens.display()))?;
        run.say(format!(
            "tokens: {} holds {} plaintext token(s)",
            old_tokens.display(),
            plain.len()
        ));
        tokens.extend(plain);
    } else {
        run.say(format!("tokens: {} not found", old_tokens.display()));
    }
    for (role, value) in &secrets {
        tokens.push(ImportedToken {
            digest: mymcp_tokens::digest(value),
            name: role.as_str().to_owned(),
            role: *role,
            created_at: mymcp_tokens::clock::now_rfc3339(),
            last_used: None,
            enabled: true,
        });
    }
    let store = run.at(Path::new("/etc/mymcp/tokens.json"));
    let total = tokens.len();
    let in_place = same_file(&old_tokens, &store);
    let control = opts.runtime_dir.join("control.sock");
    let executor_running = run.live() && ControlClient::connect(&control).is_ok();
    if executor_running {
        if run.act(format!(
            "import {total} token(s) as digests through the running executor ({})",
            control.display()
        )) {
            let mut client = ControlClient::connect(&control)?;
            match client.call(ControlRequest::TokenImport { tokens })? {
                ControlResponse::Imported { added, skipped } => run.say(format!(
                    "  {added} added, {skipped} already present or revoked"
                )),
                ControlResponse::Error { message, .. } => bail!("token import: {message}"),
                other => bail!("token import: unexpected answer {other:?}"),
            }
        }
    } else if run.act(format!(
        "store {total} token(s) as digests in {}{}",
        store.display(),
        if in_place {
            " (converting the plaintext file in place)"
        } else {
            ""
        }
    )) {
        ensure_private_dir(store.parent().expect("store has a directory"))?;
        // Opening converts a plaintext store found at the path (in place, digests only).
        let opened = mymcp_tokens::TokenStore::open(&store)
            .with_context(|| format!("token store {}", store.display()))?;
        let (added, skipped) = opened.import(tokens)?;
        run.say(format!(
            "  {added} added, {skipped} already present (or revoked)"
        ));
    }
    if old_tokens.is_file() && !in_place && !is_digest_store(&old_tokens) {
        run.say(format!(
            "  note: {} still holds the tokens in plaintext; delete it (shred -u) once the new install works",
            old_tokens.display()
        ));
    }

    // 3. Audit log.
    let old_audit = lookup(&["MYMCP_AUDIT_LOG_DIR", "MCP_AUDIT_LOG_DIR"])
        .map(|p| run.at(Path::new(&p)))
        .unwrap_or_else(|| match kind {
            SourceKind::Reference => run.at(Path::new("/var/log/mymcp")),
            SourceKind::V1 => from.join("logs"),
        });
    let audit_dir = run.at(Path::new("/var/log/mymcp"));
    let files = audit_files(&old_audit);
    if files.is_empty() {
        run.say(format!("audit: no audit.log* in {}", old_audit.display()));
    } else {
        let legacy = audit_dir.join(kind.legacy_dir());
        let moving = same_file(&old_audit, &audit_dir);
        let verb = if moving { "move" } else { "copy" };
        if run.act(format!(
            "{verb} {} audit file(s) from {} to {} (the new log starts a fresh hash chain)",
            files.len(),
            old_audit.display(),
            legacy.display()
        )) {
            std::fs::create_dir_all(&legacy)
                .with_context(|| format!("creating {}", legacy.display()))?;
            for f in &files {
                let dst = legacy.join(f.file_name().expect("audit file name"));
                if moving {
                    std::fs::rename(f, &dst)
                } else {
                    std::fs::copy(f, &dst).map(|_| ())
                }
                .with_context(|| format!("{verb} {}", f.display()))?;
            }
        }
    }

    run.say(if opts.dry_run {
        "dry run: nothing was changed"
    } else {
        "done; check with: mymcpctl doctor (restart the executor to pick up the new .env)"
    });
    Ok(total)
}

/// Whether `path` is already a mymcp token store (digests), not a plaintext one.
fn is_digest_store(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["format"] == "mymcp-tokens-v1")
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `audit.log` and its rotations in `dir`, sorted.
fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "audit.log" || n.starts_with("audit.log."))
        })
        .collect();
    files.sort();
    files
}

fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Writes `settings` to `target` (0600), keeping every key the target already sets.
fn write_env(
    run: &Run<'_>,
    target: &Path,
    source: &Path,
    settings: &BTreeMap<String, String>,
    whose: &str,
) -> anyhow::Result<()> {
    let in_place = same_file(source, target);
    let existing: BTreeMap<String, String> = if target.is_file() && !in_place {
        mymcp_settings::envfile::read(target)?.into_iter().collect()
    } else {
        BTreeMap::new()
    };
    let mut merged = existing.clone();
    for (k, v) in settings {
        if let Some(old) = existing.get(k) {
            if old != v {
                run.say(format!(
                    "  {k}: {} already sets {old:?}; keeping it",
                    target.display()
                ));
            }
            continue;
        }
        merged.insert(k.clone(), v.clone());
    }
    if merged.is_empty() && !in_place {
        return Ok(());
    }
    if !run.act(format!(
        "write {} ({} {whose} setting(s), mode 0600{})",
        target.display(),
        merged.len(),
        if in_place {
            ", replacing the old file: its secrets are now digests"
        } else {
            ""
        }
    )) {
        return Ok(());
    }
    ensure_private_dir(target.parent().expect("env file has a directory"))?;
    let mut text = format!(
        "# mymcp {whose} settings, migrated by mymcpctl migrate from {}.\n",
        source.display()
    );
    if whose == "executor" {
        text.push_str("# Read by mymcp-executor only. MYMCP_ADMIN_TOKEN/MYMCP_METRICS_TOKEN are in the token store.\n");
    } else {
        text.push_str(
            "# Read by systemd for mymcp-frontend.service (EnvironmentFile=); no secrets.\n",
        );
    }
    for (k, v) in &merged {
        text.push_str(&format!("{k}={}\n", quote(v)));
    }
    let tmp = target.with_extension("migrate-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, target).with_context(|| format!("writing {}", target.display()))?;
    Ok(())
}

/// Values with spaces, quotes or `#` are written in double quotes (the parser strips one pair).
fn quote(v: &str) -> String {
    if v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c == '#' || c == '\'')
    {
        format!("\"{v}\"")
    } else {
        v.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_renamed_and_routed() {
        use Destination::*;
        let r = |k| classify(SourceKind::Reference, k);
        assert_eq!(r("MYMCP_PORT"), Some(("MYMCP_PORT".into(), Frontend)));
        assert_eq!(
            r("MYMCP_BASH_SHELL"),
            Some(("MYMCP_BASH_SHELL".into(), Executor))
        );
        assert_eq!(
            r("MYMCP_ADMIN_TOKEN"),
            Some(("MYMCP_ADMIN_TOKEN".into(), Secret(Role::Admin)))
        );
        assert!(matches!(r("MYMCP_TOKEN_FILE"), Some((_, Dropped(_)))));
        assert_eq!(r("MYMCP_NOPE"), Some(("MYMCP_NOPE".into(), Unknown)));
        assert_eq!(r("PATH"), None);
        let v1 = |k| classify(SourceKind::V1, k);
        assert_eq!(v1("MCP_PORT"), Some(("MYMCP_PORT".into(), Frontend)));
        assert_eq!(
            v1("MCP_METRICS_TOKEN"),
            Some(("MYMCP_METRICS_TOKEN".into(), Secret(Role::Metrics)))
        );
    }

    #[test]
    fn the_kind_comes_from_the_keys() {
        let kv = |k: &str| vec![(k.to_owned(), "1".to_owned())];
        assert_eq!(detect(&kv("MCP_PORT"), false), Some(SourceKind::V1));
        assert_eq!(
            detect(&kv("MYMCP_PORT"), false),
            Some(SourceKind::Reference)
        );
        assert_eq!(detect(&[], true), Some(SourceKind::Reference));
        assert_eq!(detect(&[], false), None);
    }

    #[test]
    fn values_that_need_quotes_get_them() {
        assert_eq!(quote("8765"), "8765");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote(""), "\"\"");
    }
}
