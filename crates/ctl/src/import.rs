//! `mymcpctl token import`: reads a Python/Go install's `tokens.json` (plaintext tokens) and the
//! `MYMCP_ADMIN_TOKEN` / `MYMCP_METRICS_TOKEN` of its env file, and turns them into digests for
//! the executor's store. Token values never leave this process; the old tokens keep working.

use anyhow::Context;
use mymcp_protocol::{ImportedToken, Role, TokenDigest};
use sha2::{Digest, Sha256};
use std::path::Path;

fn digest(token: &str) -> TokenDigest {
    TokenDigest(Sha256::digest(token.as_bytes()).into())
}

/// Tokens of a reference `tokens.json`: `{"tokens": {"tok_…": {name, created_at, last_used,
/// enabled, role}}, "admin_token": …}`. A missing role means rw; any role but rw means ro (the
/// references' rules). `admin_token` is ignored, as the references ignore it on load.
pub fn from_token_file(path: &Path) -> anyhow::Result<Vec<ImportedToken>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let tokens = v
        .get("tokens")
        .and_then(|t| t.as_object())
        .with_context(|| {
            format!(
                "{} has no \"tokens\" object (not a Python/Go token file)",
                path.display()
            )
        })?;
    let now = now();
    let mut out = Vec::new();
    for (token, info) in tokens {
        let name = info["name"].as_str().unwrap_or("").trim();
        let created = info["created_at"].as_str().filter(|c| *c != "ephemeral");
        out.push(ImportedToken {
            digest: digest(token),
            name: if name.is_empty() {
                "imported".to_owned()
            } else {
                name.chars().filter(|c| !c.is_control()).take(64).collect()
            },
            role: match info.get("role").and_then(|r| r.as_str()) {
                None | Some("rw") => Role::Rw,
                Some(_) => Role::Ro,
            },
            created_at: created.map(str::to_owned).unwrap_or_else(|| now.clone()),
            last_used: info["last_used"].as_str().map(str::to_owned),
            enabled: info["enabled"].as_bool().unwrap_or(true),
        });
    }
    out.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
    Ok(out)
}

/// The token role a secret setting holds: `MYMCP_ADMIN_TOKEN` the admin token,
/// `MYMCP_METRICS_TOKEN` the metrics token.
pub fn secret_role(setting: &str) -> Option<Role> {
    if setting == mymcp_settings::ADMIN_TOKEN.name {
        Some(Role::Admin)
    } else if setting == mymcp_settings::METRICS_TOKEN.name {
        Some(Role::Metrics)
    } else {
        None
    }
}

/// The admin and metrics tokens of an env file.
pub fn from_env_file(path: &Path) -> anyhow::Result<Vec<ImportedToken>> {
    let pairs = mymcp_settings::envfile::read(path)?;
    let now = now();
    Ok(pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let role = secret_role(&k)?;
            let v = v.trim();
            (!v.is_empty()).then(|| ImportedToken {
                digest: digest(v),
                name: role.as_str().to_owned(),
                role,
                created_at: now.clone(),
                last_used: None,
                enabled: true,
            })
        })
        .collect())
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (the audit crate's formatter, without the fraction).
fn now() -> String {
    let t = mymcp_audit::now_rfc3339();
    format!("{}Z", &t[..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_files_become_digests_with_the_reference_role_rules() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.json");
        std::fs::write(
            &tokens,
            r#"{"tokens":{"tok_aa":{"name":"a","role":"rw","created_at":"2026-01-01T00:00:00Z","enabled":true},
               "tok_bb":{"name":"b","created_at":"ephemeral"},"tok_cc":{"name":"c","role":"admin","enabled":false}},
               "admin_token":"tok_admin"}"#,
        )
        .unwrap();
        let list = from_token_file(&tokens).unwrap();
        assert_eq!(list.len(), 3);
        let by = |n: &str| list.iter().find(|t| t.name == n).unwrap();
        assert_eq!(by("a").role, Role::Rw);
        assert_eq!(by("b").role, Role::Rw);
        assert_eq!(by("c").role, Role::Ro);
        assert!(!by("c").enabled);
        assert_eq!(by("a").digest, digest("tok_aa"));
        let env = dir.path().join(".env");
        std::fs::write(
            &env,
            "MYMCP_ADMIN_TOKEN=tok_adm\nMYMCP_METRICS_TOKEN=\nMYMCP_PORT=1\n",
        )
        .unwrap();
        let list = from_env_file(&env).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].role, list[0].digest),
            (Role::Admin, digest("tok_adm"))
        );
    }
}
