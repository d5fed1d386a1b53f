//! `cargo xtask`: the tasks of the mymcp workspace, in Rust so that they need nothing but
//! cargo. The daemons carry none of this: their command lines live in their libraries
//! (`mymcp_executor::cli`, `mymcp_frontend::cli`, `mymcpctl::cli`, `mymcp_recorder::cli`),
//! and this crate renders them.
//!
//! ```text
//! cargo xtask man [--out DIR]           man pages (section 8) of the four binaries
//! cargo xtask completions [--out DIR]   bash, zsh and fish completions of mymcpctl
//! cargo xtask settings [--check]        deploy/*.env.example and the table of
//!                                       docs/configuration.md, from the settings' declarations
//! cargo xtask deb [BUILD-DEB ARGS…]     release build, then deploy/debian/build-deb
//! cargo xtask check-modules [--root DIR]
//!                                       fails when modules of a crate import one another
//!                                       in a circle
//! ```
//!
//! Its tests (`cargo test -p xtask`) fail when anything made from the declarations drifts
//! from them ([`drift`]), and when a crate's modules import one another in a circle
//! ([`modules`]).

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::Command;

mod drift;
mod generated;
mod modules;
mod pages;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "The tasks of the mymcp workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Write the man pages (section 8) of mymcp-executor, mymcp-frontend, mymcpctl and
    /// mymcp-recorder.
    Man {
        /// Where the pages go (default: <target>/xtask/man).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write mymcpctl's shell completions: bash/mymcpctl, zsh/_mymcpctl, fish/mymcpctl.fish.
    Completions {
        /// Where they go (default: <target>/xtask/completions).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write the files generated from the settings' declarations (deploy/mymcp.env.example,
    /// deploy/recorder.env.example, the table in docs/configuration.md).
    Settings {
        /// Only check that they are up to date (exit 1 if not).
        #[arg(long)]
        check: bool,
    },
    /// Check that no crate of the workspace has modules that import one another in a circle
    /// (exit 1 and name them if one does).
    CheckModules {
        /// The workspace to check (default: this one).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Build the release binaries and the Debian package (deploy/debian/build-deb).
    Deb {
        /// Passed on to build-deb (--out DIR, --bundle).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The workspace's root directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

/// The target directory: `CARGO_TARGET_DIR`, else `target/` at the root.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Man { out } => {
            let out = out.unwrap_or_else(|| target_dir().join("xtask/man"));
            for path in pages::write_man_pages(&out)? {
                println!("{}", path.display());
            }
        }
        Task::Completions { out } => {
            let out = out.unwrap_or_else(|| target_dir().join("xtask/completions"));
            for path in pages::write_completions(&out)? {
                println!("{}", path.display());
            }
        }
        Task::Settings { check } => {
            let stale = generated::stale()?;
            if check {
                for file in &stale {
                    eprintln!("{file}: out of date; run: cargo xtask settings");
                }
                if !stale.is_empty() {
                    std::process::exit(1);
                }
            } else {
                generated::write()?;
                for file in &stale {
                    println!("updated {file}");
                }
            }
        }
        Task::CheckModules { root: dir } => {
            let circles = modules::check(&dir.unwrap_or_else(root))?;
            for circle in &circles {
                eprintln!("import circle in {circle}");
            }
            if !circles.is_empty() {
                std::process::exit(1);
            }
            println!("no import circles between modules");
        }
        Task::Deb { args } => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let built = Command::new(&cargo)
                .args(["build", "--release", "--workspace", "--bins"])
                .current_dir(root())
                .status()
                .context("running cargo build")?;
            if !built.success() {
                bail!("cargo build --release failed");
            }
            let status = Command::new(root().join("deploy/debian/build-deb"))
                .arg("--bin-dir")
                .arg(target_dir().join("release"))
                .args(&args)
                .current_dir(root())
                .status()
                .context("running deploy/debian/build-deb")?;
            if !status.success() {
                bail!("deploy/debian/build-deb failed");
            }
        }
    }
    Ok(())
}
