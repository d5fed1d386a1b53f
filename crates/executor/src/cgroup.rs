//! Confinement by cgroups: every command (a foreground `bash_execute` or a background job)
//! runs in a cgroup of its own, which the kernel keeps it in and which is killed as a whole
//! when the call ends, and which carries the call's kernel limits (memory, tasks, CPU).
//!
//! How it is laid out (see `docs/confinement.md`):
//!
//! * **Where.** In each cgroup hierarchy used, under the executor's own cgroup: `<mount><own
//!   cgroup>/mymcp/<pid>-<start time>-<pid namespace>/c<n>`. The instance directory is named
//!   after this executor process (pid and start time, as in `/proc/<pid>/stat`, and its pid
//!   namespace), so several executors on one host never touch each other's calls, and one left
//!   by a crashed executor is recognised (its process is gone) and removed, with whatever still
//!   runs in it, at the next start.
//! * **Which hierarchies.** cgroup v2 when it is mounted: `cgroup.kill` (Linux 5.14) kills
//!   everything in a call's cgroup at once, and the `memory`, `pids` and `cpu` controllers are
//!   used where they are delegated (enabled in the executor's cgroup). Under systemd with
//!   `Delegate=yes` the executor first moves itself into the leaf `mymcp-executor` of its
//!   unit's cgroup, as the "no processes in inner nodes" rule wants. On a hybrid host (v1
//!   controllers, a v2 tree without them) the v1 `memory`, `pids` and `cpu` hierarchies carry
//!   the limits; without v2, the v1 `freezer` (or `pids`) hierarchy finds the processes to
//!   kill. Without any, commands fall back to process-group signals only ([`KillMode`]).
//! * **Placement.** The command's first process is created in the call's v2 cgroup
//!   (`clone3` with `CLONE_INTO_CGROUP`) or writes itself into it, and writes itself into the
//!   v1 ones, before it executes anything ([`mymcp_sys::process::spawn_confined`]), so there
//!   is no moment at which it, or anything it starts, is outside.
//! * **Bounded.** One directory per running call in each hierarchy used; removed when the call
//!   ends, and all of them at shutdown. **Recycled**: a call's cgroup that is empty once the
//!   call ended (killed, and waited for) is kept, at most [`IDLE_MAX`] of them, for the next
//!   call with the same limits, instead of being removed and made again: on a host whose
//!   limits are in cgroup v1, making and removing a call's four directories was most of what
//!   a confined command cost beyond an unconfined one (and serialised other calls on the
//!   kernel's cgroup lock). The limit counters a call reads (`oom_kill`, `pids.events max`)
//!   are taken relative to what they were when it got the cgroup.

use mymcp_sys::process::{self, Pid, Placement};
use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The name of mymcp's directory under the executor's cgroup.
const SUBTREE: &str = "mymcp";
/// The leaf the executor moves itself into when its own cgroup must delegate controllers.
const EXECUTOR_LEAF: &str = "mymcp-executor";
/// How long removing a killed call's cgroup waits for its processes to be gone.
const EMPTY_WAIT: Duration = Duration::from_secs(2);
/// Poll interval of that wait.
const EMPTY_POLL: Duration = Duration::from_millis(5);
/// Rounds of "list the members, SIGKILL each" when there is no `cgroup.kill`.
const SWEEP_ROUNDS: usize = 200;
/// Numbers the call cgroups of this process.
static NEXT_CALL: AtomicU64 = AtomicU64::new(0);
/// The CPU period for `cpu.max` / `cpu.cfs_period_us`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Empty call cgroups kept for the next calls with the same limits; beyond this many the one
/// kept longest is removed.
const IDLE_MAX: usize = 8;

/// The kernel limits of one call. `None`: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Bytes of memory (swap included where the kernel can say so).
    pub(crate) memory_max: Option<u64>,
    /// Processes and threads.
    pub(crate) tasks_max: Option<u64>,
    /// Percent of one CPU (200 = two CPUs).
    pub(crate) cpu_max_percent: Option<u64>,
}

impl Limits {
    /// From the `MYMCP_DEFAULT_*` values, where 0 means no limit; memory in MiB.
    pub(crate) fn from_settings(memory_mib: u64, tasks: u64, cpu_percent: u64) -> Limits {
        let some = |v: u64| (v > 0).then_some(v);
        Limits {
            memory_max: some(memory_mib).map(|m| m.saturating_mul(1 << 20)),
            tasks_max: some(tasks),
            cpu_max_percent: some(cpu_percent),
        }
    }
}

/// How the processes of a call are killed when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KillMode {
    /// cgroup v2 `cgroup.kill`: everything in the call's cgroup, at once.
    CgroupKill,
    /// cgroup v1: freeze the call's cgroup (when the freezer is there), SIGKILL every member,
    /// thaw, until it is empty.
    Sweep,
    /// No usable cgroup: signals to the command's process group only. A process that left the
    /// group survives the call.
    ProcessGroup,
}

impl KillMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KillMode::CgroupKill => "cgroup v2 cgroup.kill",
            KillMode::Sweep => "cgroup v1 freeze and kill",
            KillMode::ProcessGroup => "process group only",
        }
    }
}

/// A controller, and the limit it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
    Freezer,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Freezer => "freezer",
        }
    }
}

/// One hierarchy this executor uses, and its instance directory there.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TreeKind {
    /// cgroup v2, with the controllers enabled for the calls.
    V2 {
        controllers: Vec<Controller>,
        kill: bool,
    },
    /// A cgroup v1 hierarchy, named by the controller it is used for.
    V1(Controller),
}

#[derive(Clone, Debug)]
struct Tree {
    kind: TreeKind,
    /// `<mount><own>/mymcp/<pid>-<start>-<pid namespace>`.
    instance: PathBuf,
}

impl Tree {
    fn carries(&self, c: Controller) -> bool {
        match &self.kind {
            TreeKind::V2 { controllers, .. } => controllers.contains(&c),
            TreeKind::V1(k) => *k == c,
        }
    }
}

/// The executor's confinement: which hierarchies, how calls are killed, the default limits.
#[derive(Debug)]
pub(crate) struct Confinement {
    kill: KillMode,
    trees: Vec<Tree>,
    defaults: Limits,
    /// Why cgroups are not (fully) used, for the start-up line, `status` and `doctor`.
    notes: Vec<String>,
    /// Empty cgroups of ended calls, with their limits set, for the next calls (newest last).
    idle: Mutex<Vec<CallCgroup>>,
}

impl Default for Confinement {
    /// Process groups only: what tests of other modules and non-root executors get.
    fn default() -> Self {
        Confinement::process_group(Limits::default(), Vec::new())
    }
}

impl Confinement {
    fn process_group(defaults: Limits, notes: Vec<String>) -> Confinement {
        Confinement {
            kill: KillMode::ProcessGroup,
            trees: Vec::new(),
            defaults,
            notes,
            idle: Mutex::default(),
        }
    }

    /// Finds the cgroup hierarchies, makes this executor's instance directories, removes the
    /// ones left by executors that are gone, and picks the kill mode. Never fails: what cannot
    /// be used is noted and the next mode down is taken.
    pub(crate) fn setup(defaults: Limits) -> Confinement {
        Confinement::setup_with(defaults, "", true)
    }

    /// [`Self::setup`] with `suffix` after the instance name (tests: one instance each), and
    /// without cgroup v2 unless `v2` (tests of the v1 mode on a host that has both).
    fn setup_with(defaults: Limits, suffix: &str, v2: bool) -> Confinement {
        let mut notes = Vec::new();
        if mymcp_sys::euid() != 0 {
            notes.push("not running as root".to_owned());
            return Confinement::process_group(defaults, notes);
        }
        let (mountinfo, own) = match (
            fs::read_to_string("/proc/self/mountinfo"),
            fs::read_to_string("/proc/self/cgroup"),
        ) {
            (Ok(m), Ok(c)) => (m, c),
            (Err(e), _) | (_, Err(e)) => {
                notes.push(format!("cannot read /proc/self: {e}"));
                return Confinement::process_group(defaults, notes);
            }
        };
        let mounts = parse_mounts(&mountinfo);
        let own = parse_own(&own);
        let instance = match instance_name(std::process::id() as Pid) {
            Ok(name) => name + suffix,
            Err(e) => {
                notes.push(format!("cannot read /proc/self/stat: {e}"));
                return Confinement::process_group(defaults, notes);
            }
        };
        let mut trees = Vec::new();
        let mut v2_controllers = Vec::new();
        let mut v2_kill = false;
        if let (true, Some(mount), Some(path)) = (v2, &mounts.v2, own.v2.as_deref()) {
            match setup_v2(mount, path, &instance) {
                Ok(tree) => {
                    if let TreeKind::V2 { controllers, kill } = &tree.kind {
                        v2_controllers.clone_from(controllers);
                        v2_kill = *kill;
                    }
                    if !v2_kill {
                        notes.push("cgroup v2 has no cgroup.kill (Linux < 5.14)".to_owned());
                    }
                    trees.push(tree);
                }
                Err(e) => notes.push(format!("cgroup v2 not usable: {e}")),
            }
        } else {
            notes.push("cgroup v2 is not mounted".to_owned());
        }
        for c in [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::Freezer,
        ] {
            if v2_controllers.contains(&c) || (c == Controller::Freezer && v2_kill) {
                continue;
            }
            let (Some(mount), Some(path)) = (mounts.v1_of(c), own.v1_of(c)) else {
                continue;
            };
            let instance = mount.join(relative(path)).join(SUBTREE).join(&instance);
            let made = create_dir_all_retry(&instance).map(|()| {
                remove_stale(instance.parent().unwrap_or(&instance), &TreeKind::V1(c));
            });
            match made {
                Ok(()) => trees.push(Tree {
                    kind: TreeKind::V1(c),
                    instance,
                }),
                Err(e) => notes.push(format!("cgroup v1 {} not usable: {e}", c.name())),
            }
        }
        let kill = if v2_kill {
            KillMode::CgroupKill
        } else if trees.iter().any(|t| {
            matches!(
                t.kind,
                TreeKind::V1(Controller::Freezer | Controller::Pids) | TreeKind::V2 { .. }
            )
        }) {
            KillMode::Sweep
        } else {
            KillMode::ProcessGroup
        };
        let mut c = Confinement {
            kill,
            trees,
            defaults,
            notes,
            idle: Mutex::default(),
        };
        // One command through the whole path (create with the default limits, start inside,
        // kill, remove) before any call depends on it: a host where a step fails (a v2 tree
        // that refuses processes, a limit the kernel refuses) gets process groups, not a
        // bash_execute that always fails.
        if let Err(e) = c.probe() {
            tracing::warn!("cgroups unusable for commands: {e}; falling back to process groups");
            c.close();
            c.trees.clear();
            c.kill = KillMode::ProcessGroup;
            c.notes.push(format!("probe failed: {e}"));
        }
        for (what, set) in [
            (Controller::Memory, defaults.memory_max.is_some()),
            (Controller::Pids, defaults.tasks_max.is_some()),
            (Controller::Cpu, defaults.cpu_max_percent.is_some()),
        ] {
            if set && c.tree_for(what).is_none() {
                tracing::warn!(
                    controller = what.name(),
                    "a default limit is set but no cgroup hierarchy carries this controller: it is not enforced"
                );
            }
        }
        c
    }

    /// Runs `/bin/sh -c :` in a call cgroup with the default limits, then removes it.
    fn probe(&self) -> io::Result<()> {
        let Some(call) = self.make(self.defaults)? else {
            return Ok(());
        };
        let v1 = call.v1_procs();
        let placement = Placement {
            v2: call.v2(),
            procs: &v1,
            ..Placement::default()
        };
        let argv = [
            CString::from(c"sh"),
            CString::from(c"-c"),
            CString::from(c":"),
        ];
        let started = process::spawn_confined(c"/bin/sh", &argv, &[], c"/", None, placement);
        drop(v1);
        let pid = started.as_ref().ok().map(|child| child.pid);
        if let Some(pid) = pid {
            let deadline = Instant::now() + EMPTY_WAIT;
            while matches!(process::try_reap(pid), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(EMPTY_POLL);
            }
        }
        call.kill();
        if let Some(pid) = pid {
            // Killed above if it had not exited: reap it.
            let deadline = Instant::now() + EMPTY_WAIT;
            while matches!(process::try_reap(pid), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(EMPTY_POLL);
            }
        }
        call.rmdir();
        started.map(drop)
    }

    /// How calls are killed.
    pub(crate) fn kill_mode(&self) -> KillMode {
        self.kill
    }

    /// The limits every call gets (per-token limits will replace them for a token's calls).
    pub(crate) fn limits(&self) -> Limits {
        self.defaults
    }

    /// One line for the start-up log, `mymcpctl status` and `doctor`.
    pub(crate) fn describe(&self) -> String {
        let mut s = self.kill.as_str().to_owned();
        for t in &self.trees {
            match &t.kind {
                TreeKind::V2 { controllers, .. } => {
                    s.push_str(&format!("; v2 {}", t.instance.display()));
                    for c in controllers {
                        s.push_str(&format!(" +{}", c.name()));
                    }
                }
                TreeKind::V1(c) => {
                    s.push_str(&format!("; v1 {} {}", c.name(), t.instance.display()))
                }
            }
        }
        let l = self.defaults;
        let mut limits = Vec::new();
        if let Some(m) = l.memory_max {
            limits.push(format!("memory {}", size(m)));
        }
        if let Some(t) = l.tasks_max {
            limits.push(format!("tasks {t}"));
        }
        if let Some(c) = l.cpu_max_percent {
            limits.push(format!("cpu {c}%"));
        }
        if !limits.is_empty() {
            s.push_str(&format!("; default limits: {}", limits.join(", ")));
        }
        if !self.notes.is_empty() {
            s.push_str(&format!(" ({})", self.notes.join("; ")));
        }
        s
    }

    fn tree_for(&self, c: Controller) -> Option<&Tree> {
        self.trees.iter().find(|t| t.carries(c))
    }

    /// The cgroup of one call with `limits`: an idle one of an ended call with the same
    /// limits when there is one, else made now. `None` in process-group mode.
    pub(crate) fn create(self: &Arc<Self>, limits: Limits) -> io::Result<Option<CallCgroup>> {
        if self.trees.is_empty() {
            return Ok(None);
        }
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let found = idle.iter().rposition(|c| c.limits == limits);
            found.map(|i| idle.remove(i))
        };
        let mut call = match idle {
            Some(call) => call,
            None => match self.make(limits)? {
                Some(call) => call,
                None => return Ok(None),
            },
        };
        call.home = Arc::downgrade(self);
        Ok(Some(call))
    }

    /// Keeps the empty cgroup of an ended call (one that had nothing left to kill: see
    /// [`CallCgroup::remove`]) for the next call with its limits (the one kept longest goes
    /// beyond [`IDLE_MAX`]: an rmdir of an empty cgroup).
    fn recycle(&self, mut call: CallCgroup) {
        call.baseline = call.counters();
        call.home = Weak::new();
        let old = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(call);
            (idle.len() > IDLE_MAX).then(|| idle.remove(0))
        };
        if let Some(old) = old {
            old.rmdir();
        }
    }

    /// Makes the cgroup of one call with `limits`, in the hierarchies that kill it and carry
    /// its limits. `None` in process-group mode. An error leaves nothing behind.
    fn make(&self, limits: Limits) -> io::Result<Option<CallCgroup>> {
        if self.trees.is_empty() {
            return Ok(None);
        }
        let name = format!("c{}", NEXT_CALL.fetch_add(1, Ordering::Relaxed));
        let mut call = CallCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            v2_dir: None,
            limits,
            kill: self.kill,
            baseline: Vec::new(),
            home: Weak::new(),
            killed: Default::default(),
        };
        for tree in &self.trees {
            let needed = match &tree.kind {
                TreeKind::V2 { .. } => true,
                TreeKind::V1(Controller::Freezer) => true,
                TreeKind::V1(Controller::Pids) => {
                    limits.tasks_max.is_some()
                        || (self.kill == KillMode::Sweep
                            && self.tree_for(Controller::Freezer).is_none())
                }
                TreeKind::V1(Controller::Memory) => limits.memory_max.is_some(),
                TreeKind::V1(Controller::Cpu) => limits.cpu_max_percent.is_some(),
            };
            if !needed {
                continue;
            }
            let dir = tree.instance.join(&name);
            fs::create_dir(&dir).map_err(|e| context(e, &dir))?;
            call.dirs.push((tree.kind.clone(), dir.clone()));
            if let Err(e) = call.prepare(&tree.kind, &dir) {
                // Nothing runs in them yet: plain rmdirs.
                for (_, dir) in call.dirs.iter().rev() {
                    let _ = fs::remove_dir(dir);
                }
                return Err(e);
            }
        }
        Ok(Some(call))
    }

    /// Kills and removes every call cgroup still there and this executor's instance
    /// directories (shutdown, once no command runs).
    pub(crate) fn close(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        for tree in &self.trees {
            remove_instance(&tree.instance, &tree.kind);
            if let Some(parent) = tree.instance.parent() {
                // Shared with other executors: removed only when empty.
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

impl Drop for Confinement {
    /// The executor is done with its cgroups (a start that failed after [`Confinement::setup`]
    /// included): whatever is left in them is killed and they are removed.
    fn drop(&mut self) {
        self.close();
    }
}

/// The cgroup of one call: its directories (one per hierarchy) and their open `cgroup.procs`.
#[derive(Debug)]
pub(crate) struct CallCgroup {
    dirs: Vec<(TreeKind, PathBuf)>,
    /// `cgroup.procs` of the v1 directories.
    procs: Vec<File>,
    /// The v2 directory and its `cgroup.procs`.
    v2_dir: Option<(File, File)>,
    limits: Limits,
    kill: KillMode,
    /// What the limit counters ([`Self::counters`]) read when this call got the cgroup.
    baseline: Vec<[u64; 2]>,
    /// The confinement to give the cgroup back to once the call ended and it is empty.
    home: Weak<Confinement>,
    /// Whether processes were left to kill. Such a cgroup is not reused: after a
    /// `cgroup.kill` this kernel kills what `clone3(CLONE_INTO_CGROUP)` creates in it later
    /// (its kill sequence number no longer matches the parent's; tested).
    killed: std::sync::atomic::AtomicBool,
}

impl CallCgroup {
    /// Sets the limits of the new directory `dir` and opens what the spawn needs.
    fn prepare(&mut self, kind: &TreeKind, dir: &Path) -> io::Result<()> {
        apply_limits(kind, dir, &self.limits)?;
        let procs = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| context(e, dir))?;
        if matches!(kind, TreeKind::V2 { .. }) {
            let handle = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY)
                .open(dir)
                .map_err(|e| context(e, dir))?;
            self.v2_dir = Some((handle, procs));
        } else {
            self.procs.push(procs);
        }
        Ok(())
    }

    /// The v2 directory the command's first process is created in, with its `cgroup.procs`.
    pub(crate) fn v2(&self) -> Option<(BorrowedFd<'_>, BorrowedFd<'_>)> {
        self.v2_dir.as_ref().map(|(d, p)| (d.as_fd(), p.as_fd()))
    }

    /// The v1 `cgroup.procs` files the command's first process writes itself into.
    pub(crate) fn v1_procs(&self) -> Vec<BorrowedFd<'_>> {
        self.procs.iter().map(|f| f.as_fd()).collect()
    }

    /// Kills every process in the cgroup, wherever it moved in its session or process group.
    pub(crate) fn kill(&self) {
        for (kind, dir) in &self.dirs {
            match kill_dir(kind, dir, self.kill) {
                Ok(false) => {}
                Ok(true) => self.killed.store(true, Ordering::Relaxed),
                Err(e) => {
                    self.killed.store(true, Ordering::Relaxed);
                    tracing::warn!(dir = %dir.display(), "cannot kill the call's cgroup: {e}");
                }
            }
            // One hierarchy holds every process of the call; the first that can kill does.
            if matches!(kind, TreeKind::V2 { kill: true, .. }) || self.kill == KillMode::Sweep {
                break;
            }
        }
    }

    /// Which limit the kernel enforced on the call, if one was hit: `"killed: memory limit 256
    /// MiB reached"` (the kernel's OOM killer killed a process), `"tasks limit 64 reached: a
    /// fork failed"`.
    pub(crate) fn limit_hit(&self) -> Option<String> {
        let before = |i: usize| self.baseline.get(i).copied().unwrap_or_default();
        for (i, [oom, forks]) in self.counters().into_iter().enumerate() {
            let [oom_before, forks_before] = before(i);
            if let Some(max) = self.limits.memory_max.filter(|_| oom > oom_before) {
                return Some(format!("killed: memory limit {} reached", size(max)));
            }
            if let Some(max) = self.limits.tasks_max.filter(|_| forks > forks_before) {
                return Some(format!("tasks limit {max} reached: a fork failed"));
            }
        }
        None
    }

    /// For each directory, the times the kernel enforced a limit so far: processes the OOM
    /// killer killed (v2 `memory.events`, v1 `memory.oom_control`: `oom_kill`) and forks
    /// refused (`pids.events`: `max`); 0 where the directory does not carry that limit.
    fn counters(&self) -> Vec<[u64; 2]> {
        (self.dirs.iter())
            .map(|(kind, dir)| {
                let carries = |c| match kind {
                    TreeKind::V2 { controllers, .. } => controllers.contains(&c),
                    TreeKind::V1(k) => *k == c,
                };
                let oom = if self.limits.memory_max.is_some() && carries(Controller::Memory) {
                    match kind {
                        TreeKind::V2 { .. } => counter(&dir.join("memory.events"), "oom_kill"),
                        TreeKind::V1(_) => counter(&dir.join("memory.oom_control"), "oom_kill"),
                    }
                } else {
                    0
                };
                let forks = if self.limits.tasks_max.is_some() && carries(Controller::Pids) {
                    counter(&dir.join("pids.events"), "max")
                } else {
                    0
                };
                [oom, forks]
            })
            .collect()
    }

    /// Kills what is left, waits (up to [`EMPTY_WAIT`]) for it to be gone and removes the
    /// directories.
    pub(crate) async fn remove(mut self) {
        self.kill();
        let deadline = Instant::now() + EMPTY_WAIT;
        let mut empty = self.is_empty();
        while !empty && Instant::now() < deadline {
            tokio::time::sleep(EMPTY_POLL).await;
            empty = self.is_empty();
        }
        if empty && !*self.killed.get_mut() {
            if let Some(home) = self.home.upgrade() {
                // Nothing of the call is left: its cgroup is kept for the next call (a read
                // of its limit counters at most; no thread of the blocking pool, which calls
                // ending together would grow).
                home.recycle(self);
                return;
            }
        }
        drop(std::mem::take(&mut self.procs));
        self.v2_dir = None;
        let mut left = std::mem::take(&mut self.dirs);
        loop {
            let mut busy = Vec::new();
            for (kind, dir) in left {
                match try_rmdir(&dir) {
                    Ok(true) => {}
                    Ok(false) if Instant::now() < deadline => {
                        let _ = kill_dir(&kind, &dir, self.kill);
                        busy.push((kind, dir));
                    }
                    Ok(false) => {
                        tracing::warn!(dir = %dir.display(), "cannot remove the call's cgroup: processes are still in it")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), "cannot remove the call's cgroup: {e}")
                    }
                }
            }
            if busy.is_empty() {
                return;
            }
            left = busy;
            tokio::time::sleep(EMPTY_POLL).await;
        }
    }

    /// [`Self::remove`] without waiting: in the background when a runtime runs, else at once.
    pub(crate) fn remove_later(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(self.remove());
            }
            Err(_) => {
                self.kill();
                self.rmdir();
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.dirs.iter().all(|(_, d)| members(d).is_empty())
    }

    fn rmdir(mut self) {
        drop(std::mem::take(&mut self.procs));
        self.v2_dir = None;
        for (kind, dir) in &self.dirs {
            if let Err(e) = remove_dir(kind, dir) {
                tracing::warn!(dir = %dir.display(), "cannot remove the call's cgroup: {e}");
            }
        }
    }
}

#[cfg(test)]
static TEST_INSTANCE: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
impl Confinement {
    /// A confinement with an instance directory of its own (tests run side by side in one
    /// process); `None`, with "skipped" on stderr, where cgroups cannot kill.
    pub(crate) fn for_tests(limits: Limits) -> Option<Confinement> {
        let suffix = format!("-t{}", TEST_INSTANCE.fetch_add(1, Ordering::Relaxed));
        let c = Confinement::setup_with(limits, &suffix, true);
        if c.kill_mode() == KillMode::ProcessGroup {
            eprintln!("skipped: no usable cgroup ({})", c.describe());
            return None;
        }
        Some(c)
    }

    /// [`Self::for_tests`] with cgroup v1 only: mode 2 (freeze and kill), where the host has
    /// a v1 freezer or pids hierarchy.
    pub(crate) fn for_tests_v1(limits: Limits) -> Option<Confinement> {
        let suffix = format!("-t{}", TEST_INSTANCE.fetch_add(1, Ordering::Relaxed));
        let c = Confinement::setup_with(limits, &suffix, false);
        if c.kill_mode() != KillMode::Sweep {
            eprintln!(
                "skipped: no cgroup v1 freezer or pids hierarchy ({})",
                c.describe()
            );
            return None;
        }
        Some(c)
    }

    /// Whether a hierarchy carries `controller` (`"memory"`, `"pids"`, `"cpu"`).
    pub(crate) fn carries(&self, controller: &str) -> bool {
        self.trees.iter().any(|t| match &t.kind {
            TreeKind::V2 { controllers, .. } => controllers.iter().any(|c| c.name() == controller),
            TreeKind::V1(c) => c.name() == controller,
        })
    }

    /// The call cgroups left once the ended calls' removal in the background is done (it is
    /// waited for, up to [`EMPTY_WAIT`]), the ones kept for reuse left out.
    pub(crate) fn call_dirs(&self) -> Vec<PathBuf> {
        let deadline = Instant::now() + EMPTY_WAIT;
        loop {
            let kept: Vec<PathBuf> = (self.idle.lock().unwrap().iter())
                .flat_map(|c| c.dirs.iter().map(|(_, d)| d.clone()))
                .collect();
            let left: Vec<PathBuf> = self
                .trees
                .iter()
                .flat_map(|t| fs::read_dir(&t.instance).into_iter().flatten().flatten())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|d| !kept.contains(d))
                .collect();
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(EMPTY_POLL);
        }
    }

    /// How many cgroups of ended calls are kept.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    /// Whether any instance directory exists.
    pub(crate) fn instance_exists(&self) -> bool {
        self.trees.iter().any(|t| t.instance.exists())
    }
}

fn context(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A size in the largest binary unit that divides it (`256 MiB`).
pub(crate) fn size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// `key N` in a flat-keyed cgroup file; 0 when absent.
fn counter(file: &Path, key: &str) -> u64 {
    fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok())?
            })
        })
        .unwrap_or(0)
}

/// Whether a v2 cgroup (or one below it) has a process; true when that cannot be read.
fn populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events")).map_or(true, |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("populated "))
            .is_none_or(|v| v.trim() != "0")
    })
}

/// The pids in a cgroup (empty when it is gone or unreadable).
fn members(dir: &Path) -> Vec<Pid> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value).map_err(|e| context(e, &dir.join(file)))
}

fn apply_limits(kind: &TreeKind, dir: &Path, l: &Limits) -> io::Result<()> {
    match kind {
        TreeKind::V2 { controllers, .. } => {
            if let Some(m) = l
                .memory_max
                .filter(|_| controllers.contains(&Controller::Memory))
            {
                write(dir, "memory.max", &m.to_string())?;
                // The limit is the memory a call may use, not the RAM part of it.
                if dir.join("memory.swap.max").exists() {
                    write(dir, "memory.swap.max", "0")?;
                }
            }
            if let Some(t) = l
                .tasks_max
                .filter(|_| controllers.contains(&Controller::Pids))
            {
                write(dir, "pids.max", &t.to_string())?;
            }
            if let Some(c) = l
                .cpu_max_percent
                .filter(|_| controllers.contains(&Controller::Cpu))
            {
                let quota = (c * CPU_PERIOD_US / 100).max(1000);
                write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        }
        TreeKind::V1(Controller::Memory) => {
            if let Some(m) = l.memory_max {
                write(dir, "memory.limit_in_bytes", &m.to_string())?;
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(dir, "memory.memsw.limit_in_bytes", &m.to_string())?;
                }
            }
        }
        TreeKind::V1(Controller::Pids) => {
            if let Some(t) = l.tasks_max {
                write(dir, "pids.max", &t.to_string())?;
            }
        }
        TreeKind::V1(Controller::Cpu) => {
            if let Some(c) = l.cpu_max_percent {
                let quota = (c * CPU_PERIOD_US / 100).max(1000);
                write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        TreeKind::V1(Controller::Freezer) => {}
    }
    Ok(())
}

/// Kills everything in one call's cgroup `dir`. `Ok(true)` when there was something to kill.
fn kill_dir(kind: &TreeKind, dir: &Path, mode: KillMode) -> io::Result<bool> {
    if matches!(kind, TreeKind::V2 { kill: true, .. }) {
        // An empty cgroup cannot fill up again by itself (only a member can fork into it),
        // and reading `cgroup.events` is cheaper than the kill's walk under the cgroup lock.
        if !populated(dir) {
            return Ok(false);
        }
        return write(dir, "cgroup.kill", "1").map(|()| true);
    }
    if mode == KillMode::ProcessGroup {
        return Ok(false);
    }
    let mut found = false;
    let freezer = *kind == TreeKind::V1(Controller::Freezer);
    if freezer {
        write(dir, "freezer.state", "FROZEN")?;
    }
    for _ in 0..SWEEP_ROUNDS {
        let pids = members(dir);
        if pids.is_empty() {
            break;
        }
        found = true;
        for pid in pids {
            // Gone already: fine.
            let _ = mymcp_sys::signals::kill(pid as u32, libc::SIGKILL);
        }
        if freezer {
            // SIGKILL takes effect once the processes run again.
            write(dir, "freezer.state", "THAWED")?;
            write(dir, "freezer.state", "FROZEN")?;
        }
    }
    if freezer {
        write(dir, "freezer.state", "THAWED")?;
    }
    Ok(found)
}

/// rmdir of a cgroup: `Ok(true)` when it is gone, `Ok(false)` while processes are in it.
fn try_rmdir(dir: &Path) -> io::Result<bool> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
        Err(e) => Err(context(e, dir)),
    }
}

/// rmdir of a cgroup, killing and retrying while its last processes finish exiting. Blocks
/// (start-up, shutdown, a call dropped outside the runtime).
fn remove_dir(kind: &TreeKind, dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + EMPTY_WAIT;
    loop {
        if try_rmdir(dir)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(context(io::Error::from_raw_os_error(libc::EBUSY), dir));
        }
        let _ = kill_dir(kind, dir, KillMode::Sweep);
        std::thread::sleep(EMPTY_POLL);
    }
}

/// Kills and removes every call directory under `instance`, then `instance` itself.
fn remove_instance(instance: &Path, kind: &TreeKind) {
    if let Ok(entries) = fs::read_dir(instance) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let dir = entry.path();
                let _ = kill_dir(kind, &dir, KillMode::Sweep);
                if let Err(e) = remove_dir(kind, &dir) {
                    tracing::warn!(dir = %dir.display(), "cannot remove a call's cgroup: {e}");
                }
            }
        }
    }
    let _ = kill_dir(kind, instance, KillMode::Sweep);
    if let Err(e) = remove_dir(kind, instance) {
        tracing::warn!(dir = %instance.display(), "cannot remove the executor's cgroup: {e}");
    }
}

/// Removes the instance directories under `subtree` whose executor is gone, with every
/// process still in them.
fn remove_stale(subtree: &Path, kind: &TreeKind) {
    let Ok(entries) = fs::read_dir(subtree) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.split('-');
        let Some(Ok(pid)) = parts.next().map(str::parse::<Pid>) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // An executor in another pid namespace (a container sharing this cgroup) cannot be
        // judged from here: its pid means nothing in ours.
        let ns = parts.nth(1);
        if ns.is_some_and(|ns| Some(ns) != own_pid_namespace().as_deref()) {
            continue;
        }
        if instance_name(pid)
            .is_ok_and(|live| name == live || name.starts_with(&format!("{live}-")))
        {
            continue; // a running executor's
        }
        tracing::info!(dir = %entry.path().display(), "removing the cgroups left by an executor that is gone");
        remove_instance(&entry.path(), kind);
    }
}

/// `<pid>-<start time in clock ticks since boot>-<pid namespace inode>` of a live process.
fn instance_name(pid: Pid) -> io::Result<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let start = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/pid/stat"))?;
    let ns = pid_namespace(&format!("/proc/{pid}/ns/pid"))?;
    Ok(format!("{pid}-{start}-{ns}"))
}

/// The inode of a pid namespace link (`pid:[4026531836]` → `4026531836`).
fn pid_namespace(link: &str) -> io::Result<String> {
    let target = fs::read_link(link)?;
    target
        .to_str()
        .and_then(|t| t.strip_prefix("pid:["))
        .and_then(|t| t.strip_suffix(']'))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected pid namespace link"))
}

fn own_pid_namespace() -> Option<String> {
    pid_namespace("/proc/self/ns/pid").ok()
}

/// `/a/b` → `a/b`, for joining under a mount point.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn create_dir_all_retry(dir: &Path) -> io::Result<()> {
    // Another executor may remove the shared `mymcp` directory between our two mkdirs.
    fs::create_dir_all(dir)
        .or_else(|_| fs::create_dir_all(dir))
        .map_err(|e| context(e, dir))
}

fn setup_v2(mount: &Path, own: &str, instance: &str) -> io::Result<Tree> {
    let mut own_dir = mount.join(relative(own));
    if own_dir.file_name().is_some_and(|n| n == EXECUTOR_LEAF) {
        // Moved there by an earlier life of this process (re-executed in place).
        if let Some(parent) = own_dir.parent() {
            own_dir = parent.to_path_buf();
        }
    }
    let wanted: Vec<Controller> = fs::read_to_string(own_dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| match c {
            "memory" => Some(Controller::Memory),
            "pids" => Some(Controller::Pids),
            "cpu" => Some(Controller::Cpu),
            _ => None,
        })
        .collect();
    let mut controllers = Vec::new();
    if !wanted.is_empty() {
        match enable(&own_dir, &wanted) {
            Ok(()) => controllers.clone_from(&wanted),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && own != "/" => {
                // Processes in our cgroup (us): systemd's Delegate= convention is to move into
                // a leaf and delegate from the now empty inner node.
                let leaf = own_dir.join(EXECUTOR_LEAF);
                let moved = fs::create_dir_all(&leaf)
                    .and_then(|()| fs::write(leaf.join("cgroup.procs"), "0"))
                    .and_then(|()| enable(&own_dir, &wanted));
                match moved {
                    Ok(()) => controllers.clone_from(&wanted),
                    Err(e) => tracing::warn!(
                        cgroup = %own_dir.display(),
                        "cannot delegate cgroup v2 controllers (other processes in the executor's cgroup?): {e}; limits go to v1 hierarchies if any"
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(cgroup = %own_dir.display(), "cannot enable cgroup v2 controllers: {e}")
            }
        }
    }
    let subtree = own_dir.join(SUBTREE);
    let instance = subtree.join(instance);
    create_dir_all_retry(&subtree)?;
    let kind = TreeKind::V2 {
        controllers: controllers.clone(),
        kill: true,
    };
    remove_stale(&subtree, &kind);
    if !controllers.is_empty() {
        enable(&subtree, &controllers)?;
    }
    create_dir_all_retry(&instance)?;
    if !controllers.is_empty() {
        enable(&instance, &controllers)?;
    }
    let kill = instance.join("cgroup.kill").exists();
    Ok(Tree {
        kind: TreeKind::V2 { controllers, kill },
        instance,
    })
}

fn enable(dir: &Path, controllers: &[Controller]) -> io::Result<()> {
    let line: Vec<String> = controllers
        .iter()
        .map(|c| format!("+{}", c.name()))
        .collect();
    fs::write(dir.join("cgroup.subtree_control"), line.join(" "))
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Mounts {
    v2: Option<PathBuf>,
    /// (controllers of the hierarchy, mount point).
    v1: Vec<(Vec<String>, PathBuf)>,
}

impl Mounts {
    fn v1_of(&self, c: Controller) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(cs, _)| cs.iter().any(|x| x == c.name()))
            .map(|(_, p)| p.as_path())
    }
}

/// The cgroup mounts in `/proc/self/mountinfo` (the first of each kind).
fn parse_mounts(mountinfo: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let point = left.split(' ').nth(4).map(unescape);
        let mut right = right.split(' ');
        let (fstype, _source, options) = (right.next(), right.next(), right.next());
        let Some(point) = point else { continue };
        match fstype {
            Some("cgroup2") if m.v2.is_none() => m.v2 = Some(PathBuf::from(point)),
            Some("cgroup") => {
                let controllers: Vec<String> = options
                    .unwrap_or("")
                    .split(',')
                    .filter(|o| ["memory", "pids", "cpu", "freezer"].contains(o))
                    .map(str::to_owned)
                    .collect();
                if !controllers.is_empty()
                    && !m
                        .v1
                        .iter()
                        .any(|(cs, _)| cs.iter().any(|c| controllers.contains(c)))
                {
                    m.v1.push((controllers, PathBuf::from(point)));
                }
            }
            _ => {}
        }
    }
    m
}

/// `\040` and friends of mountinfo.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's place in each hierarchy, from `/proc/self/cgroup`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Own {
    v2: Option<String>,
    v1: Vec<(Vec<String>, String)>,
}

impl Own {
    fn v1_of(&self, c: Controller) -> Option<&str> {
        self.v1
            .iter()
            .find(|(cs, _)| cs.iter().any(|x| x == c.name()))
            .map(|(_, p)| p.as_str())
    }
}

fn parse_own(text: &str) -> Own {
    let mut own = Own::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            own.v2 = Some(path.to_owned());
        } else {
            own.v1.push((
                controllers.split(',').map(str::to_owned).collect(),
                path.to_owned(),
            ));
        }
    }
    own
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = self.memory_max {
            parts.push(format!("memory {}", size(m)));
        }
        if let Some(t) = self.tasks_max {
            parts.push(format!("tasks {t}"));
        }
        if let Some(c) = self.cpu_max_percent {
            parts.push(format!("cpu {c}%"));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
37 30 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
38 30 0:34 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
";

    #[test]
    fn mounts_of_a_hybrid_host_are_found() {
        let m = parse_mounts(HYBRID_MOUNTINFO);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            m.v1_of(Controller::Cpu),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            m.v1_of(Controller::Memory),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            m.v1_of(Controller::Pids),
            Some(Path::new("/sys/fs/cgroup/pids"))
        );
        assert_eq!(
            m.v1_of(Controller::Freezer),
            Some(Path::new("/sys/fs/cgroup/freezer"))
        );
        let pure = parse_mounts("28 22 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(pure.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(pure.v1.is_empty());
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
    }

    #[test]
    fn own_cgroups_are_parsed() {
        let own = parse_own(
            "9:name=systemd:/\n4:memory:/a/b\n1:cpu,cpuacct:/c\n0::/system.slice/x.service\n",
        );
        assert_eq!(own.v2.as_deref(), Some("/system.slice/x.service"));
        assert_eq!(own.v1_of(Controller::Memory), Some("/a/b"));
        assert_eq!(own.v1_of(Controller::Cpu), Some("/c"));
        assert_eq!(own.v1_of(Controller::Pids), None);
    }

    #[test]
    fn sizes_and_limits_read_as_people_write_them() {
        assert_eq!(size(256 << 20), "256 MiB");
        assert_eq!(size(3 << 30), "3 GiB");
        assert_eq!(size(1536), "1536 bytes");
        assert_eq!(size(1000), "1000 bytes");
        let l = Limits::from_settings(256, 64, 50);
        assert_eq!(l.memory_max, Some(256 << 20));
        assert_eq!(l.to_string(), "memory 256 MiB, tasks 64, cpu 50%");
        assert_eq!(Limits::from_settings(0, 0, 0), Limits::default());
        assert_eq!(Limits::default().to_string(), "none");
    }

    #[test]
    fn counters_are_read_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        fs::write(
            &f,
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(counter(&f, "oom_kill"), 1);
        assert_eq!(counter(&f, "max"), 12);
        assert_eq!(counter(&f, "nothing"), 0);
        assert_eq!(counter(&dir.path().join("absent"), "max"), 0);
    }

    // The v2 controller paths cannot run on this hybrid host (its v2 tree has no controllers):
    // what they write and read is checked on plain files here.

    #[test]
    fn limits_are_written_in_each_hierarchys_own_terms() {
        let l = Limits::from_settings(256, 64, 150);
        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("memory.swap.max"), "max").unwrap();
        let all = vec![Controller::Memory, Controller::Pids, Controller::Cpu];
        apply_limits(
            &TreeKind::V2 {
                controllers: all,
                kill: true,
            },
            v2.path(),
            &l,
        )
        .unwrap();
        let read = |d: &Path, f: &str| fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read(v2.path(), "memory.max"), "268435456");
        assert_eq!(read(v2.path(), "memory.swap.max"), "0");
        assert_eq!(read(v2.path(), "pids.max"), "64");
        assert_eq!(read(v2.path(), "cpu.max"), "150000 100000");
        // A controller that is not delegated is not written.
        let bare = tempfile::tempdir().unwrap();
        apply_limits(
            &TreeKind::V2 {
                controllers: vec![Controller::Pids],
                kill: true,
            },
            bare.path(),
            &l,
        )
        .unwrap();
        assert!(!bare.path().join("memory.max").exists());
        assert_eq!(read(bare.path(), "pids.max"), "64");

        let mem = tempfile::tempdir().unwrap();
        fs::write(mem.path().join("memory.memsw.limit_in_bytes"), "").unwrap();
        apply_limits(&TreeKind::V1(Controller::Memory), mem.path(), &l).unwrap();
        assert_eq!(read(mem.path(), "memory.limit_in_bytes"), "268435456");
        assert_eq!(read(mem.path(), "memory.memsw.limit_in_bytes"), "268435456");
        let cpu = tempfile::tempdir().unwrap();
        apply_limits(&TreeKind::V1(Controller::Cpu), cpu.path(), &l).unwrap();
        assert_eq!(read(cpu.path(), "cpu.cfs_period_us"), "100000");
        assert_eq!(read(cpu.path(), "cpu.cfs_quota_us"), "150000");
    }

    #[test]
    fn v2_events_name_the_limit_that_was_hit() {
        let dir = tempfile::tempdir().unwrap();
        let call = |limits| CallCgroup {
            dirs: vec![(
                TreeKind::V2 {
                    controllers: vec![Controller::Memory, Controller::Pids],
                    kill: true,
                },
                dir.path().to_owned(),
            )],
            procs: Vec::new(),
            v2_dir: None,
            limits,
            kill: KillMode::CgroupKill,
            baseline: Vec::new(),
            home: Weak::new(),
            killed: Default::default(),
        };
        let limits = Limits::from_settings(256, 64, 0);
        fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 0\noom_kill 0\n",
        )
        .unwrap();
        fs::write(dir.path().join("pids.events"), "max 0\n").unwrap();
        assert_eq!(call(limits).limit_hit(), None);
        fs::write(dir.path().join("pids.events"), "max 17\n").unwrap();
        assert_eq!(
            call(limits).limit_hit().as_deref(),
            Some("tasks limit 64 reached: a fork failed")
        );
        fs::write(
            dir.path().join("memory.events"),
            "max 9\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(
            call(limits).limit_hit().as_deref(),
            Some("killed: memory limit 256 MiB reached")
        );
        // Without that limit, its events are not blamed.
        assert_eq!(call(Limits::default()).limit_hit(), None);
        // A recycled cgroup: what earlier calls hit is not this call's.
        let mut reused = call(limits);
        reused.baseline = reused.counters();
        assert_eq!(reused.limit_hit(), None);
        fs::write(
            dir.path().join("pids.events"),
            "max 18
",
        )
        .unwrap();
        assert_eq!(
            reused.limit_hit().as_deref(),
            Some("tasks limit 64 reached: a fork failed")
        );
    }

    #[test]
    fn a_delegated_v2_tree_gets_its_controllers_at_every_level() {
        // A stand-in for a systemd unit's cgroup with Delegate=yes (plain files: no EBUSY).
        let mount = tempfile::tempdir().unwrap();
        let unit = mount.path().join("system.slice/mymcp-executor.service");
        fs::create_dir_all(&unit).unwrap();
        fs::write(
            unit.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let tree = setup_v2(mount.path(), "/system.slice/mymcp-executor.service", "7-42").unwrap();
        assert_eq!(tree.instance, unit.join("mymcp/7-42"));
        let TreeKind::V2 { controllers, kill } = &tree.kind else {
            panic!("{tree:?}")
        };
        assert_eq!(
            controllers,
            &[Controller::Cpu, Controller::Memory, Controller::Pids]
        );
        assert!(!kill, "no cgroup.kill file in a stand-in");
        for level in [unit.clone(), unit.join("mymcp"), unit.join("mymcp/7-42")] {
            assert_eq!(
                fs::read_to_string(level.join("cgroup.subtree_control")).unwrap(),
                "+cpu +memory +pids",
                "{}",
                level.display()
            );
        }
        // Re-executed inside its leaf: the unit's cgroup is still the parent of mymcp/.
        let again = setup_v2(
            mount.path(),
            "/system.slice/mymcp-executor.service/mymcp-executor",
            "7-43",
        )
        .unwrap();
        assert_eq!(again.instance, unit.join("mymcp/7-43"));
    }

    #[test]
    fn the_instance_name_is_pid_and_start_time() {
        let me = instance_name(std::process::id() as Pid).unwrap();
        assert!(me.starts_with(&format!("{}-", std::process::id())), "{me}");
        assert_eq!(me, instance_name(std::process::id() as Pid).unwrap());
    }

    // Real cgroups: these need root and a hierarchy that can kill (else "skipped"). The
    // ones that run commands are in `spawn`'s tests.

    fn confinement(limits: Limits) -> Option<Confinement> {
        Confinement::for_tests(limits)
    }

    fn paths(call: &CallCgroup) -> Vec<PathBuf> {
        call.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    /// Waits (up to 2 s) for the cgroups of ended calls to be kept, `n` of them.
    fn wait_idle(c: &Confinement, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        while c.idle() != n && Instant::now() < deadline {
            std::thread::sleep(EMPTY_POLL);
        }
        c.idle()
    }

    #[tokio::test]
    async fn a_call_reuses_the_empty_cgroup_of_an_ended_call_with_its_limits() {
        let Some(c) = confinement(Limits::default()) else {
            return;
        };
        let c = Arc::new(c);
        let tasks = |n| Limits {
            tasks_max: Some(n),
            ..Limits::default()
        };
        let first = c.create(tasks(10)).unwrap().unwrap();
        let dirs = paths(&first);
        let other = c.create(tasks(10)).unwrap().unwrap();
        assert_ne!(paths(&other), dirs, "two running calls share nothing");
        first.remove().await;
        assert_eq!(wait_idle(&c, 1), 1);
        let again = c.create(tasks(10)).unwrap().unwrap();
        assert_eq!(
            paths(&again),
            dirs,
            "the ended call's cgroup was not reused"
        );
        if let Some((_, dir)) = again.dirs.iter().find(|(k, _)| match k {
            TreeKind::V2 { controllers, .. } => controllers.contains(&Controller::Pids),
            TreeKind::V1(k) => *k == Controller::Pids,
        }) {
            assert_eq!(
                fs::read_to_string(dir.join("pids.max")).unwrap().trim(),
                "10"
            );
        }
        // Other limits do not take it, and only so many are kept.
        for n in 20..20 + IDLE_MAX as u64 + 3 {
            let call = c.create(tasks(n)).unwrap().unwrap();
            assert!(!dirs.contains(&paths(&call)[0]));
            call.remove().await;
        }
        again.remove().await;
        other.remove().await;
        assert_eq!(wait_idle(&c, IDLE_MAX), IDLE_MAX);
        assert!(c.call_dirs().is_empty(), "{:?}", c.call_dirs());
        c.close();
        assert_eq!(c.idle(), 0);
        assert!(!c.instance_exists());
    }

    #[test]
    fn an_instance_left_by_a_dead_executor_is_removed_with_its_processes() {
        let Some(c) = confinement(Limits::default()) else {
            return;
        };
        // A gone executor's instance (pid 1 with another start time cannot be alive), with a
        // call cgroup and a process in it.
        let tree = &c.trees[0];
        let ns = own_pid_namespace().unwrap();
        let stale = tree.instance.parent().unwrap().join(format!("1-0-{ns}"));
        let call = stale.join("c0");
        fs::create_dir_all(&call).unwrap();
        // Another pid namespace's executor: pid 1 there may well be alive; left alone.
        let foreign = tree.instance.parent().unwrap().join("1-0-1");
        fs::create_dir_all(foreign.join("c0")).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        fs::write(call.join("cgroup.procs"), child.id().to_string()).unwrap();
        let again = Confinement::setup_with(Limits::default(), "-stale-test", true);
        assert!(!stale.exists(), "{}", stale.display());
        let status = child.wait().unwrap();
        assert!(!status.success(), "the leftover process was killed");
        assert!(
            foreign.join("c0").exists(),
            "another namespace's cgroups were touched"
        );
        fs::remove_dir(foreign.join("c0")).unwrap();
        fs::remove_dir(&foreign).unwrap();
        again.close();
        c.close();
    }
}
