//! Man pages and shell completions, rendered from the command-line definitions in the
//! libraries of the binaries.

use anyhow::Context;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// Each binary and its command line.
pub fn commands() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("mymcp-executor", mymcp_executor::cli::Args::command()),
        ("mymcp-frontend", mymcp_frontend::cli::Cli::command()),
        ("mymcpctl", mymcpctl::cli::Cli::command()),
        ("mymcp-recorder", mymcp_recorder::cli::Args::command()),
    ]
}

/// Writes `<binary>.8` for each binary into `out`.
pub fn write_man_pages(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for (name, command) in commands() {
        let path = out.join(format!("{name}.8"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .section("8")
            .render(&mut page)
            .with_context(|| format!("rendering the man page of {name}"))?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes mymcpctl's completions into `out`, named as the shells look for them:
/// `bash/mymcpctl`, `zsh/_mymcpctl`, `fish/mymcpctl.fish`.
pub fn write_completions(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    let mut written = Vec::new();
    for (shell, file) in [
        (Shell::Bash, "bash/mymcpctl"),
        (Shell::Zsh, "zsh/_mymcpctl"),
        (Shell::Fish, "fish/mymcpctl.fish"),
    ] {
        let path = out.join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut script = Vec::new();
        clap_complete::generate(
            shell,
            &mut mymcpctl::cli::Cli::command(),
            "mymcpctl",
            &mut script,
        );
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_are_rendered() {
        let dir = std::env::temp_dir().join(format!("xtask-pages-{}", std::process::id()));
        let pages = write_man_pages(&dir).unwrap();
        assert_eq!(pages.len(), 4);
        let ctl = std::fs::read_to_string(dir.join("mymcpctl.8")).unwrap();
        assert!(ctl.contains(".TH mymcpctl 8"), "{ctl}");
        let executor = std::fs::read_to_string(dir.join("mymcp-executor.8")).unwrap();
        assert!(executor.contains("MYMCP_RUNTIME_DIR"), "{executor}");
        let scripts = write_completions(&dir).unwrap();
        for s in scripts {
            let text = std::fs::read_to_string(&s).unwrap();
            assert!(
                text.contains("mymcpctl") && text.contains("serve"),
                "{}",
                s.display()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
