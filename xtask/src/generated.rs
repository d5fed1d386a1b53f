//! The files generated from the settings' declarations ([`mymcp_settings`]): the example env
//! files in `deploy/` and the settings table of `docs/configuration.md` (between two marker
//! lines; the rest of that page is written by hand).

use anyhow::{bail, Context};
use mymcp_settings::render::{markdown_table, EXECUTOR_ENV_FILE, RECORDER_ENV_FILE};

/// The first line of the generated part of `docs/configuration.md`.
pub const TABLE_START: &str = "<!-- settings table: generated from crates/settings/src/table.rs by `cargo xtask settings`; do not edit by hand -->";
/// The line after it.
pub const TABLE_END: &str = "<!-- end of the settings table -->";

/// Each generated file (relative to the workspace root) and what it must hold.
pub fn expected() -> anyhow::Result<Vec<(&'static str, String)>> {
    let docs = "docs/configuration.md";
    let page = std::fs::read_to_string(crate::root().join(docs))
        .with_context(|| format!("reading {docs}"))?;
    Ok(vec![
        ("deploy/mymcp.env.example", EXECUTOR_ENV_FILE.render()),
        ("deploy/recorder.env.example", RECORDER_ENV_FILE.render()),
        (docs, with_table(&page, &markdown_table()).context(docs)?),
    ])
}

/// `page` with the text between the marker lines replaced by `table`.
pub fn with_table(page: &str, table: &str) -> anyhow::Result<String> {
    let Some(start) = page.find(TABLE_START) else {
        bail!("no line {TABLE_START}");
    };
    let body = start + TABLE_START.len();
    let Some(end) = page[body..].find(TABLE_END) else {
        bail!("no line {TABLE_END} after the start marker");
    };
    Ok(format!(
        "{}\n\n{table}\n{}",
        &page[..body],
        &page[body + end..]
    ))
}

/// The generated files that differ from what the declarations make.
pub fn stale() -> anyhow::Result<Vec<&'static str>> {
    let mut stale = Vec::new();
    for (file, want) in expected()? {
        let have = std::fs::read_to_string(crate::root().join(file)).unwrap_or_default();
        if have != want {
            stale.push(file);
        }
    }
    Ok(stale)
}

/// Writes every generated file.
pub fn write() -> anyhow::Result<()> {
    for (file, text) in expected()? {
        let path = crate::root().join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_replaces_only_what_is_between_the_markers() {
        let page = format!("intro\n{TABLE_START}\nold\n{TABLE_END}\nrest\n");
        let new = with_table(&page, "| a |\n").unwrap();
        assert_eq!(
            new,
            format!("intro\n{TABLE_START}\n\n| a |\n\n{TABLE_END}\nrest\n")
        );
        assert_eq!(with_table(&new, "| a |\n").unwrap(), new);
        assert!(with_table("no markers", "").is_err());
    }
}
