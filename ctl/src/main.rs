//! mymcpctl: argument parsing and output. See the library docs.

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use mymcp_protocol::{ControlRequest, ControlResponse, Role, TokenInfo};
use mymcpctl::client::ControlClient;
use mymcpctl::serve::{serve, ServeOptions};
use std::path::PathBuf;

/// Administer mymcp: tokens, status, and a quick-try server.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Runtime directory of the executor (where control.sock lives).
    #[arg(
        long,
        global = true,
        env = "MYMCP_RUNTIME_DIR",
        default_value = "/run/mymcp"
    )]
    runtime_dir: PathBuf,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Quick try: start executor and frontend in the foreground with temporary tokens.
    ///
    /// State lives in a private temporary directory that is deleted on Ctrl-C or SIGTERM.
    /// Run as root, the frontend runs as MYMCP_FRONTEND_USER (default mymcp, else nobody).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MYMCP_HOST", default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on (0 picks a free one).
        #[arg(long, env = "MYMCP_PORT", default_value_t = 8765)]
        port: u16,
        /// User the frontend runs as (root only).
        #[arg(long, env = "MYMCP_FRONTEND_USER")]
        frontend_user: Option<String>,
        /// Log level of both daemons.
        #[arg(long, default_value = "warn")]
        log_level: String,
    },
    /// Manage client tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Show whether the executor is up, its version, uptime and token count.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create a token and print it (shown once; only its digest is stored).
    Add(AddArgs),
    /// List tokens (never their values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by value or by id (as shown by `token list`).
    Revoke { selector: String },
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Name of the token (who or what uses it).
    #[arg(long = "name", value_name = "NAME")]
    name_flag: Option<String>,
    /// Name, given positionally.
    #[arg(value_name = "NAME", conflicts_with = "name_flag")]
    name: Option<String>,
    /// Role: ro (read tools), rw (all tools), admin (token API), metrics (/metrics).
    #[arg(long, default_value = "ro", value_parser = ["ro", "rw", "admin", "metrics"])]
    role: String,
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("mymcpctl: {e:#}");
            std::process::exit(1);
        }
    }
}

fn control(cli_dir: &std::path::Path, req: ControlRequest) -> anyhow::Result<ControlResponse> {
    let mut client = ControlClient::connect(&cli_dir.join("control.sock"))?;
    match client.call(req)? {
        ControlResponse::Error { code, message } => bail!("{message} ({code})"),
        ok => Ok(ok),
    }
}

fn info_json(t: &TokenInfo) -> serde_json::Value {
    serde_json::json!({
        "id": t.id, "name": t.name, "role": t.role.as_str(), "created_at": t.created_at,
        "last_used": t.last_used, "enabled": t.enabled,
    })
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Cmd::Serve {
            host,
            port,
            frontend_user,
            log_level,
        } => serve(&ServeOptions {
            host,
            port,
            frontend_user,
            log_level,
        }),
        Cmd::Token(TokenCmd::Add(a)) => {
            let Some(name) = a.name_flag.or(a.name) else {
                bail!("give the token a name: mymcpctl token add --name NAME [--role ro|rw]");
            };
            let role = Role::parse(&a.role).expect("clap checked the role");
            match control(&cli.runtime_dir, ControlRequest::TokenAdd { name, role })? {
                ControlResponse::TokenAdded { token, info } => {
                    if a.json {
                        let mut v = info_json(&info);
                        v["token"] = token.into();
                        println!("{v}");
                    } else {
                        println!("{token}");
                        eprintln!(
                            "created {} token {:?} (id {}); it is shown only now",
                            info.role, info.name, info.id
                        );
                    }
                    Ok(0)
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Cmd::Token(TokenCmd::List { json }) => {
            match control(&cli.runtime_dir, ControlRequest::TokenList)? {
                ControlResponse::Tokens(list) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::Value::Array(list.iter().map(info_json).collect())
                        );
                    } else if list.is_empty() {
                        println!("(no tokens)");
                    } else {
                        println!(
                            "{:<12}  {:<7}  {:<20}  {:<20}  {:<20}  ENABLED",
                            "ID", "ROLE", "NAME", "CREATED", "LAST USED"
                        );
                        for t in &list {
                            println!(
                                "{:<12}  {:<7}  {:<20}  {:<20}  {:<20}  {}",
                                t.id,
                                t.role.as_str(),
                                t.name,
                                t.created_at,
                                t.last_used.as_deref().unwrap_or("-"),
                                if t.enabled { "yes" } else { "no" }
                            );
                        }
                    }
                    Ok(0)
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Cmd::Token(TokenCmd::Revoke { selector }) => {
            match control(
                &cli.runtime_dir,
                ControlRequest::TokenRevoke {
                    selector: selector.clone(),
                },
            ) {
                Ok(ControlResponse::Revoked(info)) => {
                    println!("revoked {} ({} token {:?})", info.id, info.role, info.name);
                    Ok(0)
                }
                Ok(other) => bail!("unexpected answer: {other:?}"),
                Err(e) => {
                    eprintln!("mymcpctl: {e:#}");
                    Ok(1)
                }
            }
        }
        Cmd::Status { json } => match control(&cli.runtime_dir, ControlRequest::Status)? {
            ControlResponse::Status(s) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"executor":"running","version":s.version,"build_id":s.build_id,
                            "uptime_secs":s.uptime_secs,"tokens":s.tokens,"running_commands":s.running_commands,
                            "running_jobs":s.running_jobs,"token_file":s.token_file})
                    );
                } else {
                    println!(
                        "executor:         running (version {}, build {})",
                        s.version, s.build_id
                    );
                    println!("uptime:           {} s", s.uptime_secs);
                    println!("tokens:           {} ({})", s.tokens, s.token_file);
                    println!("running commands: {}", s.running_commands);
                    println!("running jobs:     {}", s.running_jobs);
                }
                Ok(0)
            }
            other => bail!("unexpected answer: {other:?}"),
        },
    }
}
