//! `bash_execute`: runs a shell command in its own session with bounded capture and a hard deadline.
//!
//! The engine ([`start`], [`Started::supervise`]) is shared by foreground calls
//! ([`bash_execute`], output kept in memory) and background jobs ([`crate::jobs`], output
//! spooled to files): only the [`Sink`]s and the [`Controller`] differ.
//!
//! How a command runs:
//!
//! * `<shell> -c <command>` with stdin `/dev/null`, stdout and stderr piped, the working
//!   directory given, and exactly the environment of [`BashConfig::env`] (the executor's own
//!   variables and secrets never reach the child).
//! * As the token's account ([`crate::accounts`]): a token mapped to another account than
//!   root runs its command with that account's uid, primary gid and supplementary groups, set
//!   in the child before it executes the shell ([`process::spawn_isolated_as`]: the executor's
//!   thread never changes its ids, so no process of the account can signal it), with `HOME`,
//!   `USER`, `LOGNAME` and `SHELL` of the account and a user's `PATH`, in its home directory
//!   unless a `working_dir` is given (`/` when the home is missing or closed to it). The
//!   working directory is checked, and entered, with the account's rights. `sudo -n` then
//!   works as the sudoers file allows the account, and fails at once otherwise (there is no
//!   terminal to ask a password on).
//! * The child calls `setsid`, so it leads a new session and process group whose id equals its
//!   pid. That id is recorded at spawn time and every signal goes to the whole group; it is never
//!   looked up again (the references' `getpgid` after the leader was reaped is what let a
//!   background job hold a call open forever). Descriptors from 3 up are marked close-on-exec in
//!   the child, and signal dispositions and mask are reset.
//! * stdout and stderr are read concurrently. Each keeps only its first `max_output_bytes` in
//!   memory and counts the rest, so memory stays bounded whatever the command prints and the
//!   command never blocks on a full pipe.
//! * The command is done when the shell has exited **and** both pipes are at EOF. At the
//!   deadline: SIGTERM to the group, up to [`BashConfig::kill_grace`] to finish, SIGKILL, at most
//!   one more second for the pipes, then the pipes are dropped whatever still holds them. A call
//!   therefore returns within `timeout + kill_grace + 1 s`, keeping the partial output.
//! * A [`Controller`] can signal the group meanwhile (shutdown sends SIGTERM, `job_kill` any of
//!   [`GroupSignal`]) or stop the command at once (client cancellation, end of the shutdown
//!   grace).
//! * However the call ends (completion, deadline, cancellation, or the future being dropped),
//!   the group gets a final SIGKILL, and the call's cgroup ([`crate::cgroup`]) is killed as a
//!   whole and removed, so no process the command started outlives the call, including those
//!   that left the group themselves (`setsid`, double fork, `nohup … &`). The shell is placed in
//!   that cgroup before it executes, with the call's kernel limits; a limit the kernel enforced
//!   is reported with the result. Without a usable cgroup (see [`crate::cgroup::KillMode`])
//!   processes that left the group are out of reach: they no longer hold the call open, but
//!   they are not killed either.
//! * The shell is not reaped until that final SIGKILL has been sent: while it is a zombie its
//!   pid, and so the group id, cannot be given to another process, so the signal can never hit
//!   an unrelated group.

use crate::accounts::Account;
use crate::auth::{Authorized, Rw};
use crate::cgroup::{CallCgroup, Confinement, Limits};
use crate::paths::os_message;
use crate::server::{CancelSignal, Stop};
use mymcp_protocol::{
    BashExecute, BashOutput, CapturedStream, ErrorCode, TokenLimits, TokenView, ToolFailure,
};
use mymcp_sys::process::{self, GroupSignal, Pid, PidFd, Placement};
use std::ffi::{CString, OsString};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::time::{sleep, sleep_until, Instant};

/// Timeout when the client gives none, in seconds.
pub(crate) const DEFAULT_TIMEOUT_SECS: u32 = 30;
/// Longest timeout a client may ask for, in seconds.
pub(crate) const MAX_TIMEOUT_SECS: u32 = 600;
/// The shell used when none is configured.
const DEFAULT_SHELL: &str = mymcp_settings::BASH_SHELL.default();
/// `PATH` of every command.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `PATH` of the commands of an account other than root, unless the operator passes one through
/// (Debian's `ENV_PATH` of `login.defs`, without the games).
const ACCOUNT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `SHELL` of an account whose entry names no login shell (as `login` does).
const NO_LOGIN_SHELL: &str = "/bin/sh";
/// How long the pipes may stay open after the group was sent SIGKILL.
const PIPE_DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);
/// How long a stopped command waits for its killed shell before leaving it to tokio's reaper.
const REAP_AFTER_STOP: Duration = Duration::from_secs(1);
/// Size of each pipe read once output flows (a pipe holds 64 KiB by default).
const READ_CHUNK: usize = 64 * 1024;
/// Size of the first pipe reads.
const FIRST_READ_CHUNK: usize = 4 * 1024;
/// Poll interval of the exit check when pidfds are not available (Linux < 5.3).
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How commands run. Built by `config`; the defaults match the reference.
#[derive(Clone, Debug)]
pub(crate) struct BashConfig {
    /// The shell, run as `<shell> -c <command>`.
    pub(crate) shell: PathBuf,
    /// Per-stream capture when the client gives no `max_output_bytes`.
    pub(crate) default_max_output: u64,
    /// Upper clamp of `max_output_bytes`.
    pub(crate) hard_max_output: u64,
    /// Time between SIGTERM and SIGKILL at the deadline.
    pub(crate) kill_grace: Duration,
    /// The complete environment of every command.
    pub(crate) env: Vec<(OsString, OsString)>,
    /// The cgroups commands run in, and their default limits.
    pub(crate) confine: Arc<Confinement>,
    /// `MYMCP_BASH_HANDOFF_SEC`: seconds after which a foreground call without
    /// `handoff_after` is handed off to a job; 0: never.
    pub(crate) handoff_secs: u32,
    /// mymcp's own paths (state, token store, audit log, configuration, env file): read-only
    /// to every command, root-mapped tokens' included.
    pub(crate) protect: Arc<[PathBuf]>,
    /// Why commands cannot get a view of their own here ([`probe_views`]), if they cannot:
    /// then a token with a view runs nothing (and `mymcpctl status` and `doctor` say why).
    pub(crate) views_unavailable: Option<String>,
}

impl Default for BashConfig {
    fn default() -> Self {
        BashConfig {
            shell: PathBuf::from(DEFAULT_SHELL),
            default_max_output: mymcp_settings::BASH_MAX_OUTPUT_BYTES.default(),
            hard_max_output: mymcp_settings::BASH_MAX_OUTPUT_BYTES_HARD.default(),
            kill_grace: Duration::from_secs(2),
            env: BashConfig::default_env(&[]),
            confine: Arc::default(),
            handoff_secs: 0,
            protect: Arc::new([]),
            views_unavailable: None,
        }
    }
}

impl BashConfig {
    /// The environment commands get: a fixed `PATH`, `HOME`/`USER`/`LOGNAME` of the executing
    /// user, `SHELL=/bin/bash`, `LANG` (the executor's, else `C.UTF-8`), `LC_ALL` (only if the
    /// executor has one), `TERM=dumb`, plus every variable named in `passthrough` that is set in
    /// the executor's environment (overriding the defaults above). Nothing else is inherited.
    pub(crate) fn default_env(passthrough: &[String]) -> Vec<(OsString, OsString)> {
        let (user, home) = match process::current_user() {
            Some(u) => (u.name, u.home),
            None => match mymcp_sys::euid() {
                0 => ("root".into(), "/root".into()),
                uid => (uid.to_string().into(), "/".into()),
            },
        };
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        set_var(&mut env, "PATH", DEFAULT_PATH);
        set_var(&mut env, "HOME", home);
        set_var(&mut env, "USER", user.clone());
        set_var(&mut env, "LOGNAME", user);
        set_var(&mut env, "SHELL", DEFAULT_SHELL);
        set_var(
            &mut env,
            "LANG",
            std::env::var_os("LANG").unwrap_or_else(|| "C.UTF-8".into()),
        );
        // LC_ALL overrides every other locale variable, so it is only set when the operator set
        // it: forcing C.UTF-8 here would make a passed-through LANG pointless.
        if let Some(lc_all) = std::env::var_os("LC_ALL") {
            set_var(&mut env, "LC_ALL", lc_all);
        }
        set_var(&mut env, "TERM", "dumb");
        for name in passthrough {
            if name.is_empty() || name.contains(['=', '\0']) {
                continue;
            }
            if let Some(value) = std::env::var_os(name) {
                set_var(&mut env, name, value);
            }
        }
        env
    }
}

/// The environment of a command of `account` (one that is acted as): `cfg_env` with the
/// account's `HOME`, `USER`, `LOGNAME`, `SHELL`, and a user's `PATH` unless the operator
/// passed one through.
fn account_env(cfg_env: &[(OsString, OsString)], account: &Account) -> Vec<(OsString, OsString)> {
    let mut env = cfg_env.to_vec();
    set_var(&mut env, "HOME", account.home.as_str());
    set_var(&mut env, "USER", account.name.as_str());
    set_var(&mut env, "LOGNAME", account.name.as_str());
    let shell = if account.shell.is_empty() {
        NO_LOGIN_SHELL
    } else {
        account.shell.as_str()
    };
    set_var(&mut env, "SHELL", shell);
    if env.iter().any(|(k, v)| k == "PATH" && v == DEFAULT_PATH) {
        set_var(&mut env, "PATH", ACCOUNT_PATH);
    }
    env
}

fn set_var(env: &mut Vec<(OsString, OsString)>, name: &str, value: impl Into<OsString>) {
    let value = value.into();
    match env.iter_mut().find(|(k, _)| k == name) {
        Some(entry) => entry.1 = value,
        None => env.push((name.into(), value)),
    }
}

/// The timeout that applies, in seconds: default 30, clamped to [1, 600].
pub(crate) fn clamp_timeout(timeout: Option<i64>) -> u32 {
    match timeout {
        None => DEFAULT_TIMEOUT_SECS,
        Some(t) => t.clamp(1, MAX_TIMEOUT_SECS as i64) as u32,
    }
}

/// The per-stream capture size: default `cfg.default_max_output`, clamped to
/// [1, `cfg.hard_max_output`].
pub(crate) fn clamp_max_output(max: Option<i64>, cfg: &BashConfig) -> u64 {
    let hard = cfg.hard_max_output.max(1);
    match max {
        None => cfg.default_max_output.clamp(1, hard),
        Some(m) => (m.max(1) as u64).min(hard),
    }
}

/// Something a supervised command is told while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// Send this signal to the command's process group and carry on. SIGKILL also starts
    /// the short wait after which the output pipes are given up on.
    Signal(GroupSignal),
    /// Stop now: the group is killed and the command ends as stopped.
    Stop(StopReason),
}

/// Why a command was stopped before it ended by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The client cancelled the request or went away.
    Client,
    /// The executor is shutting down and the grace period is over.
    Shutdown,
}

/// Where a supervised command's [`Control`]s come from. `next` must be cancel-safe.
pub(crate) trait Controller: Send {
    fn next(&mut self) -> impl Future<Output = Control> + Send;
}

impl Controller for CancelSignal {
    async fn next(&mut self) -> Control {
        match CancelSignal::next(self).await {
            Stop::Terminate => Control::Signal(GroupSignal::Term),
            Stop::Cancel => Control::Stop(StopReason::Client),
            Stop::Kill => Control::Stop(StopReason::Shutdown),
        }
    }
}

/// Where the bytes of one output stream go.
pub(crate) trait Sink: Send {
    fn push(&mut self, bytes: &[u8]);
}

/// Bytes written so far by a running command, readable while it runs (for progress).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    pub(crate) stdout: AtomicU64,
    pub(crate) stderr: AtomicU64,
}

/// Runs one `bash_execute` call in the foreground for the holder of `auth`. See the module
/// documentation for the process model. `activity` counts output bytes as they arrive.
///
/// A [`Control::Stop`] from `controls` kills the command's group and fails the call with
/// [`ErrorCode::Cancelled`] (client) or [`ErrorCode::ShuttingDown`] (shutdown).
pub(crate) async fn bash_execute(
    auth: &Authorized<Rw>,
    args: &BashExecute,
    cfg: &BashConfig,
    controls: &mut impl Controller,
    activity: &Activity,
) -> Result<BashOutput, ToolFailure> {
    let timeout_secs = cap_timeout(clamp_timeout(args.timeout), auth.limits());
    let max_output = clamp_max_output(args.max_output_bytes, cfg);
    let spec = CommandSpec::check(auth, args)?;
    let started = start(auth, &spec, cfg)?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(timeout_secs));
    let mut out = Capture::new(max_output, &activity.stdout);
    let mut err = Capture::new(max_output, &activity.stderr);
    let finished = started
        .supervise(&mut out, &mut err, controls, deadline, cfg.kill_grace)
        .await;
    match finished.stopped {
        Some(StopReason::Client) => Err(ToolFailure::new(
            ErrorCode::Cancelled,
            "Command cancelled: the client cancelled the request or went away",
        )),
        Some(StopReason::Shutdown) => Err(ToolFailure::new(
            ErrorCode::ShuttingDown,
            "Command killed: the server is shutting down",
        )),
        None => Ok(BashOutput {
            stdout: out.into_stream(),
            stderr: err.into_stream(),
            exit_code: finished.exit_code,
            timed_out: finished.timed_out,
            timeout_secs,
            limit_hit: finished.limit_hit,
        }),
    }
}

/// A command that passed the checks that do not need a process.
#[derive(Clone, Debug)]
pub(crate) struct CommandSpec {
    pub(crate) command: String,
    pub(crate) dir: PathBuf,
}

impl CommandSpec {
    /// Refuses a NUL in the command and a working directory that is not an absolute,
    /// existing directory the caller's account may search. Without one: `/`, or for an
    /// account that is acted as its home directory (`/` when that is missing or closed to it).
    pub(crate) fn check(
        auth: &Authorized<Rw>,
        args: &BashExecute,
    ) -> Result<CommandSpec, ToolFailure> {
        if args.command.contains('\0') {
            return Err(ToolFailure::new(
                ErrorCode::InvalidArguments,
                "command contains a NUL byte",
            ));
        }
        let account = auth.account();
        let _as = auth.act()?;
        let dir = match args.working_dir.as_deref() {
            Some(dir) => check_working_dir(dir)?,
            None if account.acts() && !account.home.is_empty() => {
                check_working_dir(&account.home).unwrap_or_else(|_| PathBuf::from("/"))
            }
            None => check_working_dir("/")?,
        };
        Ok(CommandSpec {
            command: args.command.clone(),
            dir,
        })
    }
}

/// The kernel limits of `auth`'s commands: the token's own (`mymcpctl token add
/// --memory-max …`) where it has them, the defaults (`MYMCP_DEFAULT_*`) for the rest; a
/// token's 0 lifts a default.
pub(crate) fn limits_for(auth: &Authorized<Rw>, confine: &Confinement) -> Limits {
    merge_limits(auth.limits(), confine.limits())
}

fn merge_limits(token: &TokenLimits, defaults: Limits) -> Limits {
    let pick = |own: Option<u64>, default: Option<u64>| match own {
        None => default,
        Some(0) => None,
        Some(v) => Some(v),
    };
    Limits {
        memory_max: pick(
            token.memory_max_mib.map(|m| m.saturating_mul(1 << 20)),
            defaults.memory_max,
        ),
        tasks_max: pick(token.tasks_max, defaults.tasks_max),
        cpu_max_percent: pick(token.cpu_max_percent, defaults.cpu_max_percent),
    }
}

/// `timeout_secs` cut to the token's `--timeout-max`, if it has one.
pub(crate) fn cap_timeout(timeout_secs: u32, limits: &TokenLimits) -> u32 {
    match limits.timeout_max_secs {
        Some(max) => timeout_secs
            .min(u32::try_from(max).unwrap_or(u32::MAX))
            .max(1),
        None => timeout_secs,
    }
}

/// Whether commands can get a view of their own on this host: `/bin/sh -c :` started in a
/// mount namespace with `/` bound read-only on itself, as every command's view is made. Fails
/// where the executor is not root or lacks `CAP_SYS_ADMIN` (an unprivileged container), or
/// the kernel is older than 5.12 (`mount_setattr`).
pub(crate) fn probe_views() -> io::Result<()> {
    let protect = [CString::from(c"/")];
    let argv = [
        CString::from(c"sh"),
        CString::from(c"-c"),
        CString::from(c":"),
    ];
    let placement = Placement {
        view: process::View {
            protect: &protect,
            ..process::View::default()
        },
        ..Placement::default()
    };
    let spawned = process::spawn_confined(c"/bin/sh", &argv, &[], c"/", None, placement)?;
    drop((spawned.stdout, spawned.stderr));
    // `:` exits at once; wait up to 2 s to reap it (a zombie is the only cost otherwise).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while matches!(process::try_reap(spawned.pid), Ok(None)) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// What a call's [`process::View`] is made of, prepared before the spawn (the child
/// allocates nothing).
#[derive(Debug, Default)]
struct ViewParts {
    writable: Vec<OwnedFd>,
    writable_paths: Vec<CString>,
    read_only: bool,
    protect: Vec<CString>,
    hide_dirs: Vec<CString>,
    hide_files: Vec<CString>,
    no_network: bool,
}

impl ViewParts {
    /// The view of a call of a token with `view`, with mymcp's own `protect`ed paths
    /// read-only. Paths that do not exist (now) are left out: a missing write root grants
    /// nothing, a missing hidden or protected path has nothing to hide. A write root is
    /// opened without following any symlink, so what is made writable is the tree the token
    /// names, not where a link points at the moment.
    fn for_call(view: &TokenView, protect: &[PathBuf]) -> Result<ViewParts, ToolFailure> {
        let c = |p: &std::path::Path| CString::new(p.as_os_str().as_bytes()).ok();
        let mut parts = ViewParts {
            read_only: !view.write_roots.is_empty(),
            no_network: view.no_network,
            ..ViewParts::default()
        };
        for root in &view.write_roots {
            match mymcp_sys::fs::openat2(
                mymcp_sys::fs::Base::Cwd,
                std::path::Path::new(root).as_os_str(),
                libc::O_PATH | libc::O_CLOEXEC,
                0,
                mymcp_sys::fs::Resolve {
                    no_symlinks: true,
                    ..Default::default()
                },
            ) {
                Ok(fd) => {
                    parts.writable.push(fd);
                    parts.writable_paths.extend(c(root.as_ref()));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ToolFailure::new(
                        ErrorCode::InternalError,
                        format!("cannot open the write root: {}", os_message(&e, root)),
                    ))
                }
            }
        }
        for p in protect {
            // Inside another protected path: covered by that one's mount.
            let covered = protect.iter().any(|q| q != p && p.starts_with(q));
            if !covered && std::fs::symlink_metadata(p).is_ok() {
                parts.protect.extend(c(p));
            }
        }
        for h in &view.hide {
            match std::fs::symlink_metadata(h) {
                Ok(m) if m.is_dir() => parts.hide_dirs.extend(c(h.as_ref())),
                Ok(_) => parts.hide_files.extend(c(h.as_ref())),
                Err(_) => {}
            }
        }
        Ok(parts)
    }
}

/// Starts `<shell> -c <command>` for the holder of `auth` in its own session, as its account,
/// and in a cgroup of its own (see [`process::spawn_confined`]). Must run inside a tokio
/// runtime.
pub(crate) fn start(
    auth: &Authorized<Rw>,
    spec: &CommandSpec,
    cfg: &BashConfig,
) -> Result<Started, ToolFailure> {
    start_with(auth, spec, cfg, None)
}

/// [`start`] on the terminal `tty` (a pty slave, see [`mymcp_sys::pty`]): the command (or,
/// when `spec.command` is empty, the account's shell, else the configured one) gets the
/// terminal as stdin, stdout, stderr and controlling terminal, and `TERM=xterm-256color`.
/// The returned [`Started`] has no pipes: its supervision waits for the shell only.
pub(crate) fn start_tty(
    auth: &Authorized<Rw>,
    spec: &CommandSpec,
    cfg: &BashConfig,
    tty: BorrowedFd<'_>,
) -> Result<Started, ToolFailure> {
    start_with(auth, spec, cfg, Some(tty))
}

fn start_with(
    auth: &Authorized<Rw>,
    spec: &CommandSpec,
    cfg: &BashConfig,
    tty: Option<BorrowedFd<'_>>,
) -> Result<Started, ToolFailure> {
    let account = auth.account();
    let invalid = |what: &str| {
        ToolFailure::new(
            ErrorCode::InvalidArguments,
            format!("{what} contains a NUL byte"),
        )
    };
    let mut shell =
        CString::new(cfg.shell.as_os_str().as_bytes()).map_err(|_| invalid("the shell"))?;
    let argv = if tty.is_some() && spec.command.is_empty() {
        if account.acts() && !account.shell.is_empty() {
            shell = CString::new(account.shell.as_bytes()).map_err(|_| invalid("the shell"))?;
        }
        vec![shell.clone()]
    } else {
        vec![
            shell.clone(),
            CString::from(c"-c"),
            CString::new(spec.command.as_bytes()).map_err(|_| invalid("command"))?,
        ]
    };
    let mut env = if account.acts() {
        self::account_env(&cfg.env, account)
    } else {
        cfg.env.clone()
    };
    if tty.is_some() {
        set_var(&mut env, "TERM", "xterm-256color");
    }
    let envp: Vec<CString> = env
        .iter()
        .filter_map(|(k, v)| {
            let mut var = k.as_bytes().to_vec();
            var.push(b'=');
            var.extend_from_slice(v.as_bytes());
            CString::new(var).ok()
        })
        .collect();
    let dir = CString::new(spec.dir.as_os_str().as_bytes()).map_err(|_| invalid("working_dir"))?;
    let cgroup = cfg
        .confine
        .create(limits_for(auth, &cfg.confine))
        .map_err(|e| {
            ToolFailure::new(
                ErrorCode::InternalError,
                format!("cannot make the command's cgroup: {e}"),
            )
        })?;
    let v1 = cgroup
        .as_ref()
        .map(CallCgroup::v1_procs)
        .unwrap_or_default();
    let refused = (cfg.views_unavailable.is_some() && !auth.view().is_default()).then(|| {
        ToolFailure::new(
            ErrorCode::InternalError,
            "this host cannot give commands a view of their own (mount namespaces unavailable): \
             the token's write roots, hidden paths or no-network cannot be enforced, so nothing ran",
        )
    });
    let view = match refused.map_or_else(|| ViewParts::for_call(auth.view(), &cfg.protect), Err) {
        Ok(v) => v,
        Err(e) => {
            if let Some(cgroup) = cgroup {
                cgroup.remove_later();
            }
            return Err(e);
        }
    };
    let writable: Vec<_> = view.writable.iter().map(AsFd::as_fd).collect();
    let placement = Placement {
        v2: cgroup.as_ref().and_then(CallCgroup::v2),
        procs: &v1,
        view: process::View {
            writable: &writable,
            writable_paths: &view.writable_paths,
            read_only: view.read_only,
            protect: &view.protect,
            hide_dirs: &view.hide_dirs,
            hide_files: &view.hide_files,
            no_network: view.no_network,
        },
    };
    let ids = account.acts().then(|| process::Ids {
        uid: account.uid,
        gid: account.gid,
        groups: &account.groups,
    });
    let spawned = match tty {
        None => process::spawn_confined(&shell, &argv, &envp, &dir, ids, placement)
            .map(|s| (s.pid, Some((s.stdout, s.stderr)))),
        Some(tty) => process::spawn_confined_tty(&shell, &argv, &envp, &dir, ids, placement, tty)
            .map(|pid| (pid, None)),
    };
    drop(v1);
    let (pid, pipes) = match spawned {
        Ok(s) => s,
        Err(e) => {
            if let Some(cgroup) = cgroup {
                cgroup.remove_later();
            }
            return Err(spawn_failure(cfg, e));
        }
    };
    // From here on the group exists (setsid ran before exec, and the spawn returns after
    // exec): `group` kills and reaps it however this call ends.
    let group = Group::new(pid, cgroup);
    let pipe = |fd| pipe::Receiver::from_owned_fd(fd).map_err(|e| spawn_failure(cfg, e));
    let (stdout, stderr) = match pipes {
        Some((out, err)) => (Some(pipe(out)?), Some(pipe(err)?)),
        None => (None, None),
    };
    tracing::debug!(pgid = group.pgid, "command started");
    Ok(Started {
        stdout,
        stderr,
        exit: ExitWatch::new(group.pgid),
        group,
    })
}

/// A running command: its group, its output pipes and a watch on its shell.
#[derive(Debug)]
pub(crate) struct Started {
    group: Group,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    exit: ExitWatch,
}

/// How a supervised command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finished {
    /// Exit status, `-signo` if the shell died of a signal, -1 if it could not be reaped.
    pub(crate) exit_code: i32,
    /// The deadline passed (the group was signalled and the pipes given up on).
    pub(crate) timed_out: bool,
    /// Stopped by a [`Control::Stop`].
    pub(crate) stopped: Option<StopReason>,
    /// The kernel limit the command hit (`"memory limit 256 MiB reached"`), if any.
    pub(crate) limit_hit: Option<String>,
}

impl Started {
    /// The command's process group (its shell's pid).
    pub(crate) fn pgid(&self) -> Pid {
        self.group.pgid
    }

    /// Feeds the output into `out` and `err` until the shell has exited and both pipes are at
    /// EOF, enforcing `deadline` (SIGTERM, `grace`, SIGKILL, at most one more second for the
    /// pipes) and obeying `controls`. However it ends, the group is killed at the end.
    pub(crate) async fn supervise(
        self,
        out: &mut impl Sink,
        err: &mut impl Sink,
        controls: &mut impl Controller,
        deadline: Instant,
        grace: Duration,
    ) -> Finished {
        let Started {
            mut group,
            stdout,
            stderr,
            exit,
        } = self;
        let (timed_out, stopped) = {
            let work = pin!(async {
                tokio::join!(exit.wait(), drain(stdout, out), drain(stderr, err));
            });
            supervise(work, controls, deadline, &group, grace).await
            // Dropping `work` here closes both pipes, whoever still holds their other ends.
        };
        if stopped.is_some() {
            group.signal(GroupSignal::Kill);
            let _ = tokio::time::timeout(REAP_AFTER_STOP, exit.wait()).await;
            tracing::debug!(pgid = group.pgid, ?stopped, "command stopped");
        }
        let status = group.finish();
        // Whatever is left of the command (processes that left the group included) dies with
        // its cgroup, which is gone before the call answers.
        let limit_hit = match group.cgroup.take() {
            Some(cgroup) => {
                let hit = cgroup.limit_hit();
                cgroup.remove().await;
                hit
            }
            None => None,
        };
        Finished {
            exit_code: status.map_or(-1, exit_code),
            timed_out,
            stopped,
            limit_hit,
        }
    }
}

/// Where the supervision of a command stands.
#[derive(Clone, Copy, Debug)]
enum Stage {
    Running,
    /// SIGTERM was sent at the deadline; SIGKILL follows at `kill_at`.
    Terminating {
        kill_at: Instant,
    },
    /// SIGKILL was sent; the pipes are given up on at `give_up_at`.
    Killed {
        give_up_at: Instant,
    },
}

/// Drives `work` (exit + both pipes) against the deadline and the controls. Returns whether
/// the deadline passed and whether the command was stopped.
async fn supervise(
    mut work: Pin<&mut impl Future<Output = ()>>,
    controls: &mut impl Controller,
    deadline: Instant,
    group: &Group,
    grace: Duration,
) -> (bool, Option<StopReason>) {
    let pgid = group.pgid;
    let mut stage = Stage::Running;
    let mut timed_out = false;
    loop {
        let wake = match stage {
            Stage::Running => deadline,
            Stage::Terminating { kill_at } => kill_at,
            Stage::Killed { give_up_at } => give_up_at,
        };
        tokio::select! {
            biased;
            control = controls.next() => match control {
                Control::Stop(reason) => return (timed_out, Some(reason)),
                Control::Signal(GroupSignal::Kill) => {
                    group.signal(GroupSignal::Kill);
                    if !matches!(stage, Stage::Killed { .. }) {
                        stage = Stage::Killed { give_up_at: Instant::now() + PIPE_DRAIN_AFTER_KILL };
                    }
                }
                Control::Signal(signal) => send(pgid, signal),
            },
            () = &mut work => return (timed_out, None),
            () = sleep_until(wake) => match stage {
                Stage::Running => {
                    timed_out = true;
                    send(pgid, GroupSignal::Term);
                    stage = Stage::Terminating { kill_at: Instant::now() + grace };
                }
                Stage::Terminating { .. } => {
                    group.signal(GroupSignal::Kill);
                    stage = Stage::Killed { give_up_at: Instant::now() + PIPE_DRAIN_AFTER_KILL };
                }
                Stage::Killed { .. } => {
                    tracing::debug!(pgid, "output pipes still open after SIGKILL; giving up on them");
                    return (timed_out, None);
                }
            },
        }
    }
}

fn send(pgid: Pid, signal: GroupSignal) {
    match process::signal_group(pgid, signal) {
        Ok(_) => tracing::debug!(pgid, ?signal, "signalled command group"),
        Err(e) => tracing::warn!(pgid, ?signal, "cannot signal command group: {e}"),
    }
}

/// The shell, its process group and its cgroup. Dropping it kills the group and the cgroup
/// and leaves the shell to be reaped (and the cgroup removed) in the background (unless the
/// shell has been reaped, after which the group id could belong to someone else).
#[derive(Debug)]
struct Group {
    pgid: Pid,
    /// False once the shell is reaped or handed to [`reap_later`]: from then on the id is not
    /// ours to signal.
    armed: bool,
    /// The call's cgroup, if cgroups are in use: SIGKILL goes to all of it.
    cgroup: Option<CallCgroup>,
}

impl Group {
    fn new(pgid: Pid, cgroup: Option<CallCgroup>) -> Self {
        Group {
            pgid,
            armed: true,
            cgroup,
        }
    }

    /// Sends `signal` to the group; SIGKILL also kills everything in the call's cgroup (which
    /// stays ours until it is removed, whatever happened to the group id).
    fn signal(&self, signal: GroupSignal) {
        if self.armed {
            send(self.pgid, signal);
        }
        if signal == GroupSignal::Kill {
            if let Some(cgroup) = &self.cgroup {
                cgroup.kill();
            }
        }
    }

    /// Kills whatever is left of the group, then reaps the shell if it has exited.
    /// Returns its status, or `None` if it is still running (it is then reaped in the
    /// background once it exits).
    fn finish(&mut self) -> Option<ExitStatus> {
        if !self.armed {
            return None;
        }
        self.signal(GroupSignal::Kill);
        self.armed = false;
        match process::try_reap(self.pgid) {
            Ok(Some(status)) => Some(status),
            Ok(None) => {
                reap_later(self.pgid);
                None
            }
            Err(e) => {
                tracing::warn!(pgid = self.pgid, "cannot reap the shell: {e}");
                None
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Runs when the call's future is dropped mid-way.
        if self.armed {
            self.signal(GroupSignal::Kill);
            self.armed = false;
            reap_later(self.pgid);
        }
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove_later();
        }
    }
}

/// Reaps the killed shell `pid` once it has exited, in the background, so that it does not
/// stay a zombie. Outside a runtime (the executor is exiting) there is nothing to do: the
/// zombie goes with the executor.
fn reap_later(pid: Pid) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        ExitWatch::new(pid).wait().await;
        if let Err(e) = process::try_reap(pid) {
            tracing::debug!(pid, "cannot reap the shell: {e}");
        }
    });
}

/// Exit status → `exit_code`: the status, `-signo` when killed by a signal.
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signo)) => -signo,
        (None, None) => -1,
    }
}

/// Notices that the shell terminated without reaping it.
#[derive(Debug)]
enum ExitWatch {
    PidFd { pid: Pid, fd: AsyncFd<PidFd> },
    Poll { pid: Pid },
}

impl ExitWatch {
    fn new(pid: Pid) -> Self {
        match PidFd::open(pid).and_then(process::register_pidfd) {
            Ok(fd) => ExitWatch::PidFd { pid, fd },
            Err(e) => {
                tracing::debug!("no pidfd ({e}); polling for the shell's exit");
                ExitWatch::Poll { pid }
            }
        }
    }

    async fn wait(&self) {
        let pid = match self {
            ExitWatch::PidFd { pid, fd } => {
                // Readiness may be spurious: confirm with waitid before believing it. A reactor
                // error (runtime shutting down) falls back to polling.
                while let Ok(mut ready) = fd.readable().await {
                    if has_exited(*pid) {
                        return;
                    }
                    ready.clear_ready();
                }
                *pid
            }
            ExitWatch::Poll { pid } => *pid,
        };
        while !has_exited(pid) {
            sleep(EXIT_POLL_INTERVAL).await;
        }
    }
}

fn has_exited(pid: Pid) -> bool {
    // An error (there is no such child any more) cannot change by waiting: count it as exited.
    process::child_has_exited(pid).unwrap_or(true)
}

/// The head of one output stream and its total length.
#[derive(Debug)]
struct Capture<'a> {
    head: Vec<u8>,
    total: u64,
    cap: usize,
    seen: &'a AtomicU64,
}

impl<'a> Capture<'a> {
    fn new(cap: u64, seen: &'a AtomicU64) -> Self {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        Capture {
            // Grows with the output: most commands print little or nothing.
            head: Vec::new(),
            total: 0,
            cap,
            seen,
        }
    }

    fn into_stream(self) -> CapturedStream {
        CapturedStream {
            head: self.head,
            total_bytes: self.total,
        }
    }
}

impl Sink for Capture<'_> {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap - self.head.len();
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.total += bytes.len() as u64;
        self.seen.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
}

/// Reads `pipe` to EOF into `sink`. The buffer starts small (most commands print a few lines)
/// and grows to [`READ_CHUNK`] once a read fills it.
async fn drain(pipe: Option<impl AsyncRead + Unpin>, sink: &mut impl Sink) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; FIRST_READ_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                sink.push(&buf[..n]);
                if n == buf.len() && buf.len() < READ_CHUNK {
                    buf = vec![0u8; READ_CHUNK];
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("reading command output failed: {e}");
                return;
            }
        }
    }
}

/// Validates `working_dir`; the shell is started there.
fn check_working_dir(dir: &str) -> Result<PathBuf, ToolFailure> {
    let Ok(c_dir) = CString::new(dir) else {
        return Err(ToolFailure::new(
            ErrorCode::InvalidArguments,
            "working_dir contains a NUL byte",
        ));
    };
    if !dir.starts_with('/') {
        return Err(ToolFailure::new(
            ErrorCode::InvalidPath,
            format!("working_dir must be an absolute path: {dir}"),
        ));
    }
    let meta = std::fs::metadata(dir).map_err(|e| dir_failure(dir, &e))?;
    if !meta.is_dir() {
        return Err(ToolFailure::new(
            ErrorCode::NotADirectoryError,
            format!("Working directory is not a directory: {dir}"),
        )
        .with_suggestion("Pass a directory as working_dir"));
    }
    process::check_search_access(&c_dir).map_err(|e| dir_failure(dir, &e))?;
    Ok(PathBuf::from(dir))
}

fn dir_failure(dir: &str, e: &io::Error) -> ToolFailure {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => ToolFailure::new(
            ErrorCode::FileNotFoundError,
            format!("Working directory not found: {dir}"),
        )
        .with_suggestion("Check that the working_dir path exists"),
        Some(libc::EACCES | libc::EPERM) => {
            ToolFailure::new(ErrorCode::PermissionError, os_message(e, dir))
                .with_suggestion("Check directory permissions")
        }
        Some(libc::ENAMETOOLONG) => ToolFailure::new(ErrorCode::InvalidPath, os_message(e, dir)),
        _ => ToolFailure::new(ErrorCode::InternalError, os_message(e, dir)),
    }
}

fn spawn_failure(cfg: &BashConfig, e: io::Error) -> ToolFailure {
    if e.raw_os_error() == Some(libc::E2BIG) {
        return ToolFailure::new(
            ErrorCode::InvalidArguments,
            "command is too long for the operating system (E2BIG)",
        );
    }
    ToolFailure::new(
        ErrorCode::InternalError,
        format!(
            "cannot start {}: {}",
            cfg.shell.display(),
            os_message(&e, "")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Instant as StdInstant;

    fn rw() -> Authorized<Rw> {
        Authorized::for_tests()
    }

    fn cfg() -> BashConfig {
        BashConfig {
            kill_grace: Duration::from_millis(500),
            ..BashConfig::default()
        }
    }

    fn call(command: &str) -> BashExecute {
        BashExecute {
            command: command.to_string(),
            timeout: None,
            working_dir: None,
            max_output_bytes: None,
            background: false,
            handoff_after: None,
        }
    }

    fn with_timeout(command: &str, timeout: i64) -> BashExecute {
        BashExecute {
            timeout: Some(timeout),
            ..call(command)
        }
    }

    async fn run(args: BashExecute) -> Result<BashOutput, ToolFailure> {
        run_with(args, &cfg()).await
    }

    async fn run_with(args: BashExecute, cfg: &BashConfig) -> Result<BashOutput, ToolFailure> {
        let mut never = CancelSignal::never();
        bash_execute(&rw(), &args, cfg, &mut never, &Activity::default()).await
    }

    fn text(s: &CapturedStream) -> String {
        String::from_utf8_lossy(&s.head).into_owned()
    }

    /// Whether `pid` is a live (not zombie) process.
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next());
                !matches!(state, Some('Z' | 'X') | None)
            }
            Err(_) => false,
        }
    }

    /// Waits up to a second for `pid` to disappear.
    async fn gone(pid: i32) -> bool {
        for _ in 0..50 {
            if !alive(pid) {
                return true;
            }
            sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn first_pid(s: &CapturedStream) -> i32 {
        text(s).lines().next().unwrap().trim().parse().unwrap()
    }

    #[tokio::test]
    async fn captures_stdout_stderr_and_exit_code() {
        let out = run(call("echo out; echo err >&2")).await.unwrap();
        assert_eq!(text(&out.stdout), "out\n");
        assert_eq!(out.stdout.total_bytes, 4);
        assert_eq!(text(&out.stderr), "err\n");
        assert_eq!(out.exit_code, 0);
        assert!(!out.timed_out);
        assert_eq!(out.timeout_secs, 30);
    }

    #[tokio::test]
    async fn exit_status_is_reported() {
        assert_eq!(run(call("exit 3")).await.unwrap().exit_code, 3);
    }

    #[tokio::test]
    async fn death_by_signal_is_minus_signo() {
        assert_eq!(run(call("kill -9 $$")).await.unwrap().exit_code, -9);
    }

    #[tokio::test]
    async fn empty_command_runs() {
        let out = run(call("")).await.unwrap();
        assert_eq!(out.exit_code, 0);
        assert!(out.stdout.head.is_empty() && out.stderr.head.is_empty());
    }

    #[test]
    fn the_call_can_be_spawned_on_a_multi_threaded_runtime() {
        fn assert_send<T: Send>(_: &T) {}
        let (args, cfg, activity) = (call("true"), cfg(), Activity::default());
        let mut never = CancelSignal::never();
        assert_send(&bash_execute(&rw(), &args, &cfg, &mut never, &activity));
    }

    #[test]
    fn clamps() {
        assert_eq!(clamp_timeout(None), 30);
        assert_eq!(clamp_timeout(Some(0)), 1);
        assert_eq!(clamp_timeout(Some(-7)), 1);
        assert_eq!(clamp_timeout(Some(10_000)), 600);
        let c = BashConfig::default();
        assert_eq!(clamp_max_output(None, &c), 102_400);
        assert_eq!(clamp_max_output(Some(0), &c), 1);
        assert_eq!(clamp_max_output(Some(-1), &c), 1);
        assert_eq!(clamp_max_output(Some(i64::MAX), &c), 1_048_576);
    }

    #[tokio::test]
    async fn where_views_cannot_be_made_a_token_with_one_runs_nothing() {
        let auth = Authorized::<Rw>::for_tests_with_view(TokenView {
            no_network: true,
            ..TokenView::default()
        });
        let cfg = BashConfig {
            views_unavailable: Some("no mount namespaces in this test".into()),
            ..cfg()
        };
        let mut never = CancelSignal::never();
        let e = bash_execute(
            &auth,
            &call("echo ran"),
            &cfg,
            &mut never,
            &Activity::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InternalError);
        assert!(
            e.message.contains("cannot give commands a view"),
            "{}",
            e.message
        );
        // A token without a view still runs.
        let out = run_with(call("echo ran"), &cfg).await.unwrap();
        assert_eq!(text(&out.stdout), "ran\n");
    }

    #[test]
    fn a_tokens_limits_replace_the_defaults_field_by_field() {
        let defaults = Limits::from_settings(512, 100, 0);
        assert_eq!(merge_limits(&TokenLimits::default(), defaults), defaults);
        let own = TokenLimits {
            memory_max_mib: Some(64),
            tasks_max: Some(0),
            cpu_max_percent: Some(50),
            timeout_max_secs: Some(5),
        };
        assert_eq!(
            merge_limits(&own, defaults),
            Limits {
                memory_max: Some(64 << 20),
                tasks_max: None,
                cpu_max_percent: Some(50),
            }
        );
        assert_eq!(cap_timeout(30, &own), 5);
        assert_eq!(cap_timeout(3, &own), 3);
        assert_eq!(cap_timeout(30, &TokenLimits::default()), 30);
    }

    #[tokio::test]
    async fn timeout_zero_means_one_second() {
        let start = StdInstant::now();
        let out = run(with_timeout("echo before; sleep 10", 0)).await.unwrap();
        let took = start.elapsed();
        assert!(out.timed_out);
        assert_eq!(out.timeout_secs, 1);
        assert_eq!(out.exit_code, -15, "sleep dies of the SIGTERM");
        assert_eq!(text(&out.stdout), "before\n", "partial output is kept");
        assert!(took >= Duration::from_millis(900), "{took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
    }

    #[tokio::test]
    async fn background_job_holding_stdout_ends_at_the_deadline_and_dies() {
        let start = StdInstant::now();
        let out = run(with_timeout("sleep 1000 & echo $!; echo started", 1))
            .await
            .unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1 + 2 + 1), "{took:?}");
        assert!(out.timed_out);
        assert_eq!(out.exit_code, 0, "the shell itself had exited normally");
        assert!(text(&out.stdout).contains("started"));
        assert!(
            gone(first_pid(&out.stdout)).await,
            "background sleep survived"
        );
    }

    #[tokio::test]
    async fn detached_background_job_is_killed_when_the_call_ends() {
        // Its output goes elsewhere, so the call completes at once; the job must not outlive it.
        let out = run(call("sleep 1000 >/dev/null 2>&1 & echo $!"))
            .await
            .unwrap();
        assert!(!out.timed_out);
        assert_eq!(out.exit_code, 0);
        assert!(
            gone(first_pid(&out.stdout)).await,
            "background sleep survived"
        );
    }

    #[tokio::test]
    async fn memory_stays_bounded_whatever_the_command_prints() {
        fn peak_rss_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        let before = peak_rss_kib();
        let args = BashExecute {
            max_output_bytes: Some(i64::MAX),
            ..call("head -c 200000000 /dev/zero")
        };
        let out = run(args).await.unwrap();
        assert_eq!(out.stdout.total_bytes, 200_000_000);
        assert_eq!(out.stdout.head.len(), 1_048_576, "clamped to the hard cap");
        let grown_mib = (peak_rss_kib() - before) / 1024;
        assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
    }

    #[tokio::test]
    async fn term_ignoring_command_is_killed_after_grace() {
        let start = StdInstant::now();
        let out = run(with_timeout("trap '' TERM; sleep 30; echo never", 1))
            .await
            .unwrap();
        let took = start.elapsed();
        assert!(out.timed_out);
        assert_eq!(out.exit_code, -9);
        assert!(took >= Duration::from_millis(1400), "no grace: {took:?}");
        assert!(took < Duration::from_millis(3000), "{took:?}");
        assert!(!text(&out.stdout).contains("never"));
    }

    #[tokio::test]
    async fn escaped_grandchild_holding_stdout_cannot_hold_the_call() {
        let start = StdInstant::now();
        let out = run(with_timeout("setsid sleep 30 & echo $!", 1))
            .await
            .unwrap();
        let took = start.elapsed();
        let pid = first_pid(&out.stdout);
        // It left the group, so it is out of reach; clean up before asserting.
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        assert!(out.timed_out);
        assert_eq!(out.exit_code, 0);
        // timeout 1 s + grace 0.5 s + 1 s for the pipes.
        assert!(took < Duration::from_millis(3000), "{took:?}");
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_counted_not_kept() {
        let args = BashExecute {
            max_output_bytes: Some(1000),
            ..call("head -c 50000000 /dev/zero; echo tail >&2")
        };
        let out = run(args).await.unwrap();
        assert_eq!(out.stdout.head, vec![0u8; 1000]);
        assert_eq!(out.stdout.total_bytes, 50_000_000);
        assert!(out.stdout.truncated());
        assert_eq!(text(&out.stderr), "tail\n");
        assert_eq!(out.exit_code, 0);
    }

    #[tokio::test]
    async fn invalid_utf8_is_kept_as_bytes() {
        let out = run(call(r"printf 'a\377\376b'")).await.unwrap();
        assert_eq!(out.stdout.head, b"a\xff\xfeb");
    }

    #[tokio::test]
    async fn environment_is_exactly_the_configured_one() {
        // Edition 2021: set_var is safe; the variable is unique to this test.
        std::env::set_var("MYMCP_SECRET_MARKER", "leaked");
        std::env::set_var("MYMCP_PASS_MARKER", "passed");
        let cfg = BashConfig {
            env: BashConfig::default_env(&["MYMCP_PASS_MARKER".to_string()]),
            ..cfg()
        };
        let out = run_with(call("env"), &cfg).await.unwrap();
        let env = text(&out.stdout);
        assert!(!env.contains("MYMCP_SECRET_MARKER"), "{env}");
        assert!(env.lines().any(|l| l == "TERM=dumb"), "{env}");
        assert!(
            env.lines().any(|l| l == "MYMCP_PASS_MARKER=passed"),
            "{env}"
        );
        assert!(
            env.lines().any(|l| l == format!("PATH={DEFAULT_PATH}")),
            "{env}"
        );
        if mymcp_sys::euid() == 0 {
            assert!(env.lines().any(|l| l == "HOME=/root"), "{env}");
            assert!(env.lines().any(|l| l == "USER=root"), "{env}");
        }
    }

    #[tokio::test]
    async fn inherited_descriptors_do_not_reach_the_child() {
        let file = tempfile::tempfile().unwrap();
        let leaked = process::dup_inheritable(file.as_fd()).unwrap();
        // `; true` keeps bash from exec'ing ls, so $$ is the shell.
        let out = run(call("ls /proc/$$/fd; true")).await.unwrap();
        drop(leaked);
        let fds: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        assert_eq!(fds, ["0", "1", "2"]);
    }

    #[tokio::test]
    async fn signals_start_at_their_defaults_and_unblocked() {
        // This test process ignores SIGPIPE (the Rust runtime does); the command must not.
        let out = run(call("grep -E '^Sig(Blk|Ign)' /proc/self/status"))
            .await
            .unwrap();
        let text = text(&out.stdout);
        let mask = |name: &str| {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{text}");
        // glibc's posix_spawn leaves its two internal signals (32, 33) ignored; every glibc
        // program installs its own handlers for them at start.
        let glibc_internal = (1 << 31) | (1 << 32);
        assert_eq!(mask("SigIgn:") & !glibc_internal, 0, "{text}");
    }

    #[tokio::test]
    async fn the_command_leads_its_own_session_with_dev_null_as_stdin() {
        // pid, session id and process group id of the shell, and where its stdin points.
        let out = run(call("ps -o pid=,sid=,pgid= -p $$; readlink /proc/$$/fd/0"))
            .await
            .unwrap();
        let text = text(&out.stdout);
        let mut lines = text.lines();
        let ids: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(ids[0], ids[1], "{text}");
        assert_eq!(ids[0], ids[2], "{text}");
        assert_eq!(lines.next(), Some("/dev/null"));
    }

    #[tokio::test]
    async fn working_dir_is_used_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let args = BashExecute {
            working_dir: Some(path.clone()),
            ..call("pwd")
        };
        assert_eq!(text(&run(args).await.unwrap().stdout), format!("{path}\n"));

        let at = |d: &str| BashExecute {
            working_dir: Some(d.to_string()),
            ..call("pwd")
        };
        let missing = format!("{path}/missing");
        let e = run(at(&missing)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::FileNotFoundError);
        assert_eq!(e.message, format!("Working directory not found: {missing}"));
        assert_eq!(
            e.suggestion.as_deref(),
            Some("Check that the working_dir path exists")
        );

        let e = run(at("tmp")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPath);
        assert_eq!(e.message, "working_dir must be an absolute path: tmp");
        assert_eq!(run(at("")).await.unwrap_err().code, ErrorCode::InvalidPath);

        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = run(at(file.to_str().unwrap())).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotADirectoryError);

        let e = run(at("/tmp\0x")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArguments);
    }

    #[tokio::test]
    async fn nul_in_command_is_refused() {
        let e = run(call("echo a\0b")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArguments);
    }

    #[tokio::test]
    async fn missing_shell_is_an_internal_error() {
        let cfg = BashConfig {
            shell: PathBuf::from("/nonexistent/shell"),
            ..cfg()
        };
        let e = run_with(call("true"), &cfg).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InternalError);
        assert!(
            e.message.contains("No such file or directory"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn cancellation_kills_the_group_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let start = StdInstant::now();
        let mut stop = StopWhen::new(sleep(Duration::from_millis(200)));
        let e = bash_execute(
            &rw(),
            &call(&command),
            &cfg(),
            &mut stop,
            &Activity::default(),
        )
        .await
        .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(e.code, ErrorCode::Cancelled);
        assert_eq!(
            e.message,
            "Command cancelled: the client cancelled the request or went away"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid).await, "sleep survived the cancellation");
    }

    /// A controller that stops the command (as cancelled by the client) when a future resolves,
    /// and never says anything else.
    #[derive(Debug)]
    struct StopWhen<F>(Option<Pin<Box<F>>>);

    impl<F: Future<Output = ()> + Send> StopWhen<F> {
        fn new(f: F) -> Self {
            StopWhen(Some(Box::pin(f)))
        }
    }

    impl<F: Future<Output = ()> + Send> Controller for StopWhen<F> {
        async fn next(&mut self) -> Control {
            match self.0.as_mut() {
                Some(f) => {
                    f.await;
                    self.0 = None;
                    Control::Stop(StopReason::Client)
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Says each control after its delay (from the previous one), then nothing.
    struct Script(Vec<(Duration, Control)>);

    impl Controller for Script {
        async fn next(&mut self) -> Control {
            if self.0.is_empty() {
                return std::future::pending().await;
            }
            let (delay, control) = self.0[0];
            sleep(delay).await;
            self.0.remove(0);
            control
        }
    }

    async fn run_scripted(
        command: &str,
        script: Vec<(Duration, Control)>,
    ) -> Result<BashOutput, ToolFailure> {
        bash_execute(
            &rw(),
            &call(command),
            &cfg(),
            &mut Script(script),
            &Activity::default(),
        )
        .await
    }

    #[tokio::test]
    async fn a_term_from_shutdown_ends_the_command_with_its_output() {
        let start = StdInstant::now();
        let out = run_scripted(
            "echo before; sleep 30",
            vec![(
                Duration::from_millis(300),
                Control::Signal(GroupSignal::Term),
            )],
        )
        .await
        .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(out.exit_code, -15);
        assert!(!out.timed_out);
        assert_eq!(text(&out.stdout), "before\n");
    }

    #[tokio::test]
    async fn a_term_does_not_stop_a_command_that_ignores_it_but_kill_does() {
        let start = StdInstant::now();
        let out = run_scripted(
            "trap '' TERM; sleep 30 & wait; echo survived",
            vec![
                (
                    Duration::from_millis(200),
                    Control::Signal(GroupSignal::Term),
                ),
                (
                    Duration::from_millis(300),
                    Control::Signal(GroupSignal::Kill),
                ),
            ],
        )
        .await
        .unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(out.exit_code, -9);
        assert!(!text(&out.stdout).contains("survived"));
    }

    #[tokio::test]
    async fn a_kill_gives_up_on_pipes_held_by_an_escaped_process() {
        let start = StdInstant::now();
        let out = run_scripted(
            "setsid sleep 30 & echo $!; sleep 30",
            vec![(
                Duration::from_millis(200),
                Control::Signal(GroupSignal::Kill),
            )],
        )
        .await
        .unwrap();
        let pid = first_pid(&out.stdout);
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(200) + PIPE_DRAIN_AFTER_KILL + Duration::from_millis(600),
            "{took:?}"
        );
        assert!(!out.timed_out);
    }

    #[tokio::test]
    async fn a_stop_at_the_end_of_the_shutdown_grace_is_shutting_down() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let e = run_scripted(
            &command,
            vec![(
                Duration::from_millis(200),
                Control::Stop(StopReason::Shutdown),
            )],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ShuttingDown);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid).await, "sleep survived");
    }

    #[tokio::test]
    async fn activity_counts_output_while_the_command_runs() {
        let activity = Activity::default();
        let args = call("head -c 5000 /dev/zero; head -c 7 /dev/zero >&2");
        let mut never = CancelSignal::never();
        let out = bash_execute(&rw(), &args, &cfg(), &mut never, &activity)
            .await
            .unwrap();
        assert_eq!(out.stdout.total_bytes, 5000);
        assert_eq!(activity.stdout.load(Ordering::Relaxed), 5000);
        assert_eq!(activity.stderr.load(Ordering::Relaxed), 7);
    }

    #[tokio::test]
    async fn dropping_the_call_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let args = call(&command);
        let c = cfg();
        let (mut never, activity) = (CancelSignal::never(), Activity::default());
        let auth = rw();
        let call = bash_execute(&auth, &args, &c, &mut never, &activity);
        let _ = tokio::time::timeout(Duration::from_millis(300), call).await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid).await, "sleep survived the dropped call");
    }

    // Each command in a cgroup of its own (real cgroups: root, and a hierarchy that can kill;
    // else "skipped").

    fn confined(limits: Limits) -> Option<BashConfig> {
        Some(BashConfig {
            kill_grace: Duration::from_millis(300),
            confine: Arc::new(Confinement::for_tests(limits)?),
            ..BashConfig::default()
        })
    }

    #[tokio::test]
    async fn processes_that_left_the_group_die_with_the_call_and_no_cgroup_is_left() {
        let Some(cfg) = confined(Limits::default()) else {
            return;
        };
        let out = run_with(
            call(
                "setsid sleep 1000 >/dev/null 2>&1 < /dev/null & echo $!; \
                 (sh -c 'sleep 1001 >/dev/null 2>&1 & echo $!') ; \
                 nohup sleep 1002 >/dev/null 2>&1 & disown; echo $!",
            ),
            &cfg,
        )
        .await
        .unwrap();
        let text = text(&out.stdout);
        let pids: Vec<i32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(pids.len(), 3, "{text}");
        for pid in pids {
            assert!(!alive(pid), "pid {pid} outlived its call");
        }
        assert!(
            cfg.confine.call_dirs().is_empty(),
            "{:?}",
            cfg.confine.call_dirs()
        );
        cfg.confine.close();
        assert!(!cfg.confine.instance_exists());
    }

    #[tokio::test]
    async fn a_fork_bomb_is_contained_by_the_tasks_limit_and_reported() {
        let Some(cfg) = confined(Limits::from_settings(0, 32, 0)) else {
            return;
        };
        if !cfg.confine.carries("pids") {
            eprintln!("skipped: no pids controller ({})", cfg.confine.describe());
            return;
        }
        let started = StdInstant::now();
        let out = run_with(with_timeout(":(){ :|:& };:", 3), &cfg)
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            out.limit_hit.as_deref(),
            Some("tasks limit 32 reached: a fork failed"),
            "{out:?}"
        );
        assert!(
            cfg.confine.call_dirs().is_empty(),
            "{:?}",
            cfg.confine.call_dirs()
        );
        cfg.confine.close();
    }

    #[tokio::test]
    async fn the_memory_limit_kill_is_reported() {
        let Some(cfg) = confined(Limits::from_settings(32, 0, 0)) else {
            return;
        };
        if !cfg.confine.carries("memory") {
            eprintln!("skipped: no memory controller ({})", cfg.confine.describe());
            return;
        }
        let out = run_with(
            call("perl -e '$x = \"a\" x (200*1024*1024); print length $x'"),
            &cfg,
        )
        .await
        .unwrap();
        assert_eq!(out.exit_code, -9, "{out:?}");
        assert_eq!(
            out.limit_hit.as_deref(),
            Some("killed: memory limit 32 MiB reached"),
            "{out:?}"
        );
        let ok = run_with(call("echo fine"), &cfg).await.unwrap();
        assert_eq!(ok.limit_hit, None);
        cfg.confine.close();
    }

    /// Mode 2, cgroup v1 only (freezer, SIGKILL to every member, thaw): the same promise.
    #[tokio::test]
    async fn in_v1_freeze_and_kill_mode_escapees_die_with_the_call_too() {
        let Some(c) = Confinement::for_tests_v1(Limits::from_settings(0, 64, 0)) else {
            return;
        };
        let cfg = BashConfig {
            kill_grace: Duration::from_millis(300),
            confine: Arc::new(c),
            ..BashConfig::default()
        };
        assert!(cfg
            .confine
            .describe()
            .starts_with("cgroup v1 freeze and kill"));
        let out = run_with(
            call(
                "setsid sleep 1000 >/dev/null 2>&1 < /dev/null & echo $!; \
                 (sh -c 'sleep 1001 >/dev/null 2>&1 & echo $!')",
            ),
            &cfg,
        )
        .await
        .unwrap();
        let text = text(&out.stdout);
        let pids: Vec<i32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(pids.len(), 2, "{text}");
        for pid in pids {
            assert!(!alive(pid), "pid {pid} outlived its call");
        }
        // And a fork bomb under the v1 pids limit.
        let out = run_with(with_timeout(":(){ :|:& };:", 2), &cfg)
            .await
            .unwrap();
        assert_eq!(
            out.limit_hit.as_deref(),
            Some("tasks limit 64 reached: a fork failed"),
            "{out:?}"
        );
        assert!(
            cfg.confine.call_dirs().is_empty(),
            "{:?}",
            cfg.confine.call_dirs()
        );
        cfg.confine.close();
        assert!(!cfg.confine.instance_exists());
    }

    /// The CPU limit throttles: a busy loop of 3 s wall time under 5 % of one CPU gets about
    /// 0.15 s of CPU (unthrottled it would get ten times that even on a loaded machine).
    #[tokio::test]
    async fn the_cpu_limit_throttles_a_busy_loop() {
        let Some(cfg) = confined(Limits::from_settings(0, 0, 5)) else {
            return;
        };
        if !cfg.confine.carries("cpu") {
            eprintln!("skipped: no cpu controller ({})", cfg.confine.describe());
            return;
        }
        let out = run_with(
            call("end=$((SECONDS+3)); while [ $SECONDS -lt $end ]; do :; done; cat /proc/$$/stat"),
            &cfg,
        )
        .await
        .unwrap();
        let stat = text(&out.stdout);
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        // utime and stime, fields 14 and 15, in clock ticks (100 per second).
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        assert!(ticks < 60, "{ticks} ticks of CPU in 3 s under a 5 % limit");
        cfg.confine.close();
    }
}
