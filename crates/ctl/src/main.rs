//! mymcpctl: argument parsing and output. See the library docs.

#![forbid(unsafe_code)]

use anyhow::bail;
use clap::Parser;
use mymcp_protocol::{AuditState, ControlRequest, ControlResponse, Role, TokenInfo};
use mymcp_settings::values::Env;
use mymcpctl::cli::{AuditCmd, Cli, Cmd, ConfigCmd, TerminalCmd, TokenCmd};
use mymcpctl::client::ControlClient;
use mymcpctl::doctor::{self, DoctorOptions, Level};
use mymcpctl::import;
use mymcpctl::install;
use mymcpctl::serve::{serve, ServeOptions};
use std::path::{Path, PathBuf};

fn main() {
    // First, while this is the only thread: a secret that came in the environment is
    // overwritten where /proc/<pid>/environ shows it (and no child inherits it).
    let env_secrets = mymcp_service::environment::take_secrets(&mymcp_settings::SECRET_VARIABLES);
    let cli = Cli::parse();
    match run(cli, env_secrets) {
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
        "id": t.id, "name": t.name, "role": t.role.as_str(), "user": t.user,
        "created_at": t.created_at, "last_used": t.last_used, "enabled": t.enabled,
        "limits": limits_json(&t.limits),
        "write_roots": t.view.write_roots, "hide": t.view.hide, "no_network": t.view.no_network,
    })
}

/// A token's own limits in `--json` listings: only the fields that are set, as the admin
/// API shows them.
fn limits_json(l: &mymcp_protocol::TokenLimits) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    let fields = [
        ("memory_max_mib", l.memory_max_mib),
        ("tasks_max", l.tasks_max),
        ("cpu_max_percent", l.cpu_max_percent),
        ("timeout_max_secs", l.timeout_max_secs),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.into(), v.into());
        }
    }
    serde_json::Value::Object(m)
}

fn audit_json(a: &AuditState) -> serde_json::Value {
    serde_json::json!({
        "enabled": a.enabled, "dir": a.dir, "head_seq": a.head_seq, "head_hash": a.head_hash,
        "write_failures": a.write_failures,
        "last_seal": a.last_seal.as_ref().map(|(seq, epoch, ts)| serde_json::json!({"seq": seq, "epoch": epoch, "ts": ts})),
    })
}

fn rotate(runtime_dir: &Path, role: Role, json: bool) -> anyhow::Result<i32> {
    match control(runtime_dir, ControlRequest::TokenRotate { role })? {
        ControlResponse::Rotated {
            token,
            info,
            removed,
        } => {
            if json {
                let mut v = info_json(&info);
                v["token"] = token.into();
                v["revoked"] = removed.into();
                println!("{v}");
            } else {
                println!("{token}");
                eprintln!(
                    "new {role} token (id {}); {removed} previous {role} token(s) revoked; it is shown only now",
                    info.id
                );
            }
            Ok(0)
        }
        other => bail!("unexpected answer: {other:?}"),
    }
}

fn audit_verify(
    runtime_dir: &Path,
    key: Option<String>,
    dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<i32> {
    // The running executor knows its directory and its live head (which catches a cut tail).
    let live = ControlClient::connect(&runtime_dir.join("control.sock"))
        .and_then(|mut c| c.call(ControlRequest::AuditState))
        .ok()
        .and_then(|r| match r {
            ControlResponse::AuditState(a) if a.enabled => Some(a),
            _ => None,
        });
    let dir = dir
        .or_else(|| live.as_ref().map(|a| PathBuf::from(&a.dir)))
        .map_or_else(|| mymcp_settings::AUDIT_LOG_DIR.read(&Env), Ok)?;
    let same_dir = live
        .as_ref()
        .is_some_and(|a| Path::new(&a.dir) == dir.as_path());
    let opts = mymcp_audit::verify::VerifyOptions {
        dir: dir.clone(),
        install_key: key.clone(),
        head: live.filter(|_| same_dir).map(|a| (a.head_seq, a.head_hash)),
    };
    let live_checked = opts.head.is_some();
    match mymcp_audit::verify::verify(&opts) {
        Ok(r) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "dir": dir, "lines": r.lines, "first_seq": r.first_seq,
                        "last_seq": r.last_seq, "seals": r.seals, "last_seal_seq": r.last_seal_seq,
                        "unsealed": r.unsealed, "install_key": r.install_key, "key_given": key.is_some(),
                        "live_head_checked": live_checked})
                );
            } else {
                println!(
                    "OK: {} lines (seq {}..{}) in {} file(s), {} seal(s), {} line(s) after the last seal",
                    r.lines,
                    r.first_seq,
                    r.last_seq,
                    r.files.len(),
                    r.seals,
                    r.unsealed
                );
                if r.starts_after_rotation {
                    println!("note: records before seq {} were rotated away", r.first_seq);
                }
                if key.is_none() {
                    println!(
                        "note: no --key given; trusted the install key in audit.seals ({})",
                        r.install_key
                    );
                }
                if !live_checked {
                    println!("note: executor not reachable; a cut-off tail after the last seal cannot be detected");
                }
            }
            Ok(0)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "dir": dir, "error": e.0})
                );
            } else {
                println!("BROKEN: {e}");
            }
            Ok(1)
        }
    }
}

fn run(cli: Cli, env_secrets: Vec<(String, String)>) -> anyhow::Result<i32> {
    match cli.command {
        Cmd::Serve {
            host,
            port,
            frontend_user,
            log_level,
            env_file,
            tls,
            user,
        } => serve(&ServeOptions {
            host,
            port,
            frontend_user,
            log_level,
            env_file,
            tls,
            env_secrets,
            user,
        }),
        Cmd::Token(TokenCmd::RotateAdmin { json }) => rotate(&cli.runtime_dir, Role::Admin, json),
        Cmd::Token(TokenCmd::RotateMetrics { json }) => {
            rotate(&cli.runtime_dir, Role::Metrics, json)
        }
        Cmd::Token(TokenCmd::DisableMetrics) => {
            match control(
                &cli.runtime_dir,
                ControlRequest::TokenRemoveRole {
                    role: Role::Metrics,
                },
            )? {
                ControlResponse::RemovedRole(n) => {
                    println!("metrics endpoint disabled ({n} metrics token(s) revoked).");
                    Ok(0)
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Cmd::Token(TokenCmd::Import {
            file,
            env_file,
            json,
        }) => {
            if file.is_none() && env_file.is_none() {
                bail!("name a tokens.json and/or --env-file to import");
            }
            let mut tokens = Vec::new();
            if let Some(f) = &file {
                tokens.extend(import::from_token_file(f)?);
            }
            if let Some(f) = &env_file {
                tokens.extend(import::from_env_file(f)?);
            }
            let total = tokens.len();
            match control(&cli.runtime_dir, ControlRequest::TokenImport { tokens })? {
                ControlResponse::Imported { added, skipped } => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"found": total, "added": added, "skipped": skipped})
                        );
                    } else {
                        println!("imported {added} of {total} token(s) as digests ({skipped} already present or revoked); the old tokens keep working");
                        if env_file.is_some() {
                            eprintln!("remove MYMCP_ADMIN_TOKEN and MYMCP_METRICS_TOKEN from the env file: the store holds them now (rotate with mymcpctl token rotate-admin|rotate-metrics)");
                        }
                    }
                    Ok(0)
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Cmd::Oauth(cmd) => oauth(&cli.runtime_dir, cmd),
        Cmd::Terminal { cmd, state_dir } => {
            let dir = state_dir.join("terminals");
            match cmd {
                TerminalCmd::List => mymcpctl::terminal::list(&dir),
                TerminalCmd::Replay { id, events } => mymcpctl::terminal::replay(&dir, &id, events),
            }
        }
        Cmd::Audit(AuditCmd::Verify { key, dir, json }) => {
            audit_verify(&cli.runtime_dir, key, dir, json)
        }
        Cmd::Doctor { json, env_file } => {
            let findings = doctor::run(&DoctorOptions {
                runtime_dir: cli.runtime_dir.clone(),
                env_file,
            });
            let failed = findings.iter().any(|f| f.level == Level::Fail);
            if json {
                let list: Vec<serde_json::Value> = findings
                    .iter()
                    .map(|f| serde_json::json!({"level": f.level.as_str(), "check": f.check, "message": f.message}))
                    .collect();
                println!("{}", serde_json::json!({"ok": !failed, "findings": list}));
            } else {
                for f in &findings {
                    println!("{:<4}  {:<17} {}", f.level.as_str(), f.check, f.message);
                }
                println!(
                    "{}",
                    if failed {
                        "problems found"
                    } else {
                        "no problems found"
                    }
                );
            }
            Ok(i32::from(failed))
        }
        Cmd::Install { layout, tools_user } => {
            install::install(&layout.layout(), tools_user.as_deref())?;
            Ok(0)
        }
        Cmd::Uninstall { layout, purge } => {
            install::uninstall(&layout.layout(), purge)?;
            Ok(0)
        }
        Cmd::Migrate {
            from,
            dry_run,
            root,
        } => {
            mymcpctl::migrate::migrate(&mymcpctl::migrate::MigrateOptions {
                from,
                root,
                dry_run,
                runtime_dir: cli.runtime_dir.clone(),
            })?;
            Ok(0)
        }
        Cmd::Config(ConfigCmd::Example) => {
            print!("{}", mymcp_settings::example_env_file());
            Ok(0)
        }
        Cmd::Token(TokenCmd::Add(a)) => {
            let Some(name) = a.name_flag.or(a.name) else {
                bail!("give the token a name: mymcpctl token add --name NAME [--role ro|rw]");
            };
            let role = Role::parse(&a.role).expect("clap checked the role");
            if a.user.is_some() && !role.is_client() {
                bail!("--user is for ro and rw tokens: {role} tokens run no tool and act as no account");
            }
            let user = a.user;
            let limits = mymcp_protocol::TokenLimits {
                memory_max_mib: a.memory_max,
                tasks_max: a.tasks_max,
                cpu_max_percent: a.cpu_max,
                timeout_max_secs: a.timeout_max,
            };
            // Paths as given, made absolute and normal (`canonicalize` where they exist: the
            // view names the objects, not a symlink to them).
            let normal = |p: String| -> anyhow::Result<String> {
                let path = std::path::Path::new(&p);
                if !path.is_absolute() {
                    bail!("{p:?} must be an absolute path");
                }
                Ok(std::fs::canonicalize(path)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or(p))
            };
            let view = mymcp_protocol::TokenView {
                write_roots: a
                    .write_roots
                    .into_iter()
                    .map(normal)
                    .collect::<Result<_, _>>()?,
                hide: a.hide.into_iter().map(normal).collect::<Result<_, _>>()?,
                no_network: a.no_network,
            };
            let confined = !(limits.is_default() && view.is_default());
            if confined && !role.is_client() {
                bail!("--memory-max, --tasks-max, --cpu-max, --timeout-max, --write-root, --hide and --no-network are for ro and rw tokens: {role} tokens run no command");
            }
            if let Err(why) = limits.check() {
                bail!("invalid limits: {why}");
            }
            if let Err(why) = view.check() {
                bail!("invalid view: {why}");
            }
            match control(
                &cli.runtime_dir,
                ControlRequest::TokenAdd {
                    name,
                    role,
                    user,
                    limits,
                    view,
                },
            )? {
                ControlResponse::TokenAdded { token, info } => {
                    if a.json {
                        let mut v = info_json(&info);
                        v["token"] = token.into();
                        println!("{v}");
                    } else {
                        println!("{token}");
                        let acting = if info.user.is_empty() {
                            String::new()
                        } else {
                            format!(", acting as {}", info.user)
                        };
                        let mut limited = if info.limits.is_default() {
                            String::new()
                        } else {
                            format!(", limits: {}", info.limits.describe())
                        };
                        if !info.view.is_default() {
                            limited.push_str(&format!(", view: {}", info.view.describe()));
                        }
                        eprintln!(
                            "created {} token {:?} (id {}{acting}{limited}); it is shown only now",
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
                            "{:<12}  {:<7}  {:<20}  {:<12}  {:<20}  {:<20}  {:<7}  LIMITS",
                            "ID", "ROLE", "NAME", "USER", "CREATED", "LAST USED", "ENABLED"
                        );
                        for t in &list {
                            println!(
                                "{:<12}  {:<7}  {:<20}  {:<12}  {:<20}  {:<20}  {:<7}  {}",
                                t.id,
                                t.role.as_str(),
                                t.name,
                                if t.user.is_empty() { "-" } else { &t.user },
                                t.created_at,
                                t.last_used.as_deref().unwrap_or("-"),
                                if t.enabled { "yes" } else { "no" },
                                if t.role.is_client() && !t.view.is_default() {
                                    format!("{}; {}", t.limits.describe(), t.view.describe())
                                } else if t.role.is_client() {
                                    t.limits.describe()
                                } else {
                                    "-".to_owned()
                                }
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
        Cmd::Status { json } => match control(&cli.runtime_dir, ControlRequest::Status) {
            Err(e) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"executor": "unreachable", "error": format!("{e:#}")})
                    );
                } else {
                    println!("executor:         unreachable ({e:#})");
                }
                Ok(1)
            }
            Ok(ControlResponse::Status(s)) => {
                let audit_failed = s.audit.write_failures > 0;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"executor":"running","version":s.version,"build_id":s.build_id,
                            "uptime_secs":s.uptime_secs,"tokens":s.tokens,"running_commands":s.running_commands,
                            "running_jobs":s.running_jobs,"token_file":s.token_file,"audit":audit_json(&s.audit),
                            "confinement":s.confinement,"confined":s.confined,
                            "views":s.views_unavailable.as_deref().map_or("available", |_| "unavailable"),
                            "views_unavailable":s.views_unavailable})
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
                    println!("confinement:      {}", s.confinement);
                    match &s.views_unavailable {
                        None => println!("views:            available (mymcp's files read-only to commands; write roots, hidden paths, no network)"),
                        Some(why) => println!("views:            unavailable ({why}): mymcp's files are not read-only to commands; tokens with a view run no command"),
                    }
                    let a = &s.audit;
                    if a.enabled {
                        println!(
                            "audit:            on, {} ({} lines, {} write failures)",
                            a.dir, a.head_seq, a.write_failures
                        );
                        match &a.last_seal {
                            Some((seq, epoch, ts)) => {
                                println!("last seal:        seq {seq}, epoch {epoch}, {ts}")
                            }
                            None => println!("last seal:        none yet"),
                        }
                    } else {
                        println!("audit:            off (MYMCP_AUDIT_ENABLED)");
                    }
                }
                Ok(i32::from(audit_failed))
            }
            Ok(other) => bail!("unexpected answer: {other:?}"),
        },
    }
}

/// `mymcpctl oauth …`: asks the executor on its control socket and prints the answer.
fn oauth(runtime_dir: &Path, cmd: mymcpctl::cli::OauthCmd) -> anyhow::Result<i32> {
    use mymcp_protocol::oauth::{OAuthControl, OAuthControlOutcome};
    use mymcpctl::cli::OauthCmd;
    let mut json = false;
    let request = match cmd {
        OauthCmd::Pending => OAuthControl::Pending,
        OauthCmd::Approve { code, user, role } => OAuthControl::Approve {
            code,
            user,
            role: Role::parse(&role).expect("clap checked the role"),
        },
        OauthCmd::Deny { code } => OAuthControl::Deny { code },
        OauthCmd::Clients { json: j } => {
            json = j;
            OAuthControl::Clients
        }
        OauthCmd::Grants { json: j } => {
            json = j;
            OAuthControl::Grants
        }
        OauthCmd::Revoke { id } => OAuthControl::Revoke { selector: id },
    };
    let outcome = match control(runtime_dir, ControlRequest::OAuth(request))? {
        ControlResponse::OAuth(outcome) => outcome,
        other => anyhow::bail!("unexpected answer: {other:?}"),
    };
    let name = |n: &Option<String>| n.clone().unwrap_or_else(|| "-".into());
    match outcome {
        OAuthControlOutcome::Pending(list) => {
            if list.is_empty() {
                println!("no authorization request is waiting");
            }
            for p in list {
                println!(
                    "{}  {}  {}  {}  {}s left",
                    name(&p.client_name),
                    p.client_id,
                    p.redirect_uri,
                    p.scope.as_str(),
                    p.expires_in
                );
            }
        }
        OAuthControlOutcome::Approved {
            client_id,
            client_name,
            user,
            role,
            ..
        } => println!(
            "approved {} ({client_id}): its tokens act as {user} with role {}; the page continues by itself",
            client_name.as_deref().unwrap_or("the client"),
            role.as_str()
        ),
        OAuthControlOutcome::Denied => println!("denied: the client is told access_denied"),
        OAuthControlOutcome::Clients(list) if json => {
            println!("{}", serde_json::to_string_pretty(&list)?)
        }
        OAuthControlOutcome::Clients(list) => {
            if list.is_empty() {
                println!("no client is registered");
            }
            for c in list {
                println!(
                    "{}  {}  {}  {} grant(s)  {}",
                    c.client_id,
                    name(&c.client_name),
                    c.created_at,
                    c.grants,
                    c.redirect_uris.join(" ")
                );
            }
        }
        OAuthControlOutcome::Grants(list) if json => {
            println!("{}", serde_json::to_string_pretty(&list)?)
        }
        OAuthControlOutcome::Grants(list) => {
            if list.is_empty() {
                println!("no grant is live");
            }
            for g in list {
                println!(
                    "{}  {} ({})  as {}  {}  approved {}  refreshed {}  until {}",
                    g.id,
                    name(&g.client_name),
                    g.client_id,
                    g.user,
                    g.role.as_str(),
                    g.created_at,
                    g.last_refreshed.as_deref().unwrap_or("never"),
                    g.expires_at
                );
            }
        }
        OAuthControlOutcome::Revoked { clients, grants } => {
            println!("revoked {grants} grant(s) and {clients} client(s); their tokens stop working now")
        }
    }
    Ok(0)
}
