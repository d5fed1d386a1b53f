//! The `MYMCP_*` settings of mymcp, each declared once ([`table`]: name, kind with default and
//! allowed values, the processes that read it, help), the typed getters the processes read
//! them with ([`Setting`]), what is generated from the declarations ([`render`]: example env
//! files, the documentation's table), the env file (discovery and parsing), and the logging
//! set-up shared by the daemons.
//!
//! A process reads a setting through its declaration, so its name, default and range are
//! written once:
//!
//! ```
//! use mymcp_settings::{values::Env, READ_FILE_MAX_LIMIT};
//! let max_limit: u64 = READ_FILE_MAX_LIMIT.read(&Env).unwrap();
//! # let _ = max_limit;
//! ```
//!
//! and a command-line flag takes its variable, default, help and parser from it:
//!
//! ```text
//! #[arg(long, env = PORT.name, help = PORT.help,
//!       default_value_t = PORT.default_as(), value_parser = PORT.parser::<u16>())]
//! port: u16,
//! ```
//!
//! The env file is found as the reference servers find it: `--env-file`, else
//! `MYMCP_ENV_FILE`, else `/etc/mymcp/.env` if it exists. Its syntax is the Go reference's:
//! `KEY=VALUE` lines, `#` comments, an optional `export ` prefix, one pair of matching quotes
//! stripped, no inline comments. Values from the process environment win over the file, and
//! command-line flags win over both.
//!
//! ```
//! let pairs = mymcp_settings::envfile::parse("# c\nexport MYMCP_PORT='8080'\n").unwrap();
//! assert_eq!(pairs, vec![("MYMCP_PORT".to_string(), "8080".to_string())]);
//! ```

#![forbid(unsafe_code)]

pub mod envfile;
pub mod logging;
pub mod render;
mod setting;
pub mod table;
pub mod values;

pub use render::example_env_file;
pub use setting::{
    Bool, Choice, Declared, Group, Integer, Interval, Kind, List, Path, Process, Secret, Setting,
    Text,
};
pub use table::*;

/// The default env file.
pub const DEFAULT_ENV_FILE: &str = "/etc/mymcp/.env";
