//! `grep` and `glob`: in-process searches with ripgrep's own crates.
//!
//! No child process is started, so a pattern or a path can never be read as an option
//! (`"--pre=/bin/sh"` is just a regex), and there is one engine with one documented behaviour
//! (the references switched between ripgrep and a fallback scanner that disagreed on hidden
//! files, ignore files, binary files, regex dialect, counts and order).
//!
//! **grep** walks like ripgrep (hidden files and directories skipped, `.gitignore`/`.ignore`
//! honoured inside git repositories, symlinks not followed, binary files — a NUL byte — skipped)
//! in **sorted path order**, and searches the files on a pool of threads. Results are emitted in
//! walk order, so the output is deterministic, and the walk stops as soon as more than
//! `max_results` output lines are known. Each directory is opened below the checked root without
//! following symlinks; each file is opened `O_NOFOLLOW` inside its checked directory. Whether a
//! directory is entered and a file read is the one rule of walks, [`Walk::verdict`] (by path,
//! and by inode where a second name of a protected object may exist), so protected content (or
//! a context line of it) is never read, whatever is swapped in during the walk. `glob` asks the
//! same rule before it lists an entry.
//!
//! Output lines (ripgrep's format):
//! * `content`: `path:line:text` for a match, `path-line-text` for a context line, `--` between
//!   non-adjacent groups when `context_lines` > 0; `path` is omitted when `path` names a file.
//! * `files`: one path per file with a match.
//! * `count`: `path:N` (N matching lines; just `N` when `path` names a file).
//!
//! **glob** walks in parallel (order does not matter: results are sorted by mtime, newest
//! first, ties by path), skips hidden names, prunes protected directories, keeps only the newest
//! `MYMCP_GLOB_MAX_RESULTS` in memory and counts the rest. Unreadable directories and symlink
//! loops are skipped, never fatal. It has its own walker rather than `ignore`'s: directories
//! are opened below their checked parent and read with `getdents64`, and a match is `fstatat`ed
//! relative to its directory, so no entry's path is resolved from `/` and nothing is allocated
//! per entry but the paths kept (with one malloc arena, `ignore`'s per-entry allocations on two
//! threads made its walk wait on the allocator's lock).

use crate::auth::{Authorized, Ro};
use crate::paths::{self, CheckedDir, Kind, Met, Policy, SearchRoot, Verdict, Walk};
use globset::GlobBuilder;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{
    BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkContextKind, SinkMatch,
};
use ignore::{DirEntry, WalkBuilder};
use mymcp_protocol::{ErrorCode, Glob, GlobOutput, Grep, GrepMode, GrepOutput, ToolFailure};
use mymcp_sys::fs::{self as sysfs, Base};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Appended to an output line cut at `max_line_bytes`.
const LINE_TRUNCATED: &str = " [LINE TRUNCATED]";
/// Longest accepted regex or glob, in bytes.
const MAX_PATTERN_BYTES: usize = 64 * 1024;
/// Largest `context_lines`.
const MAX_CONTEXT_LINES: u64 = 1000;

/// Limits of `grep` and `glob`. Built by `config`; defaults are the reference's where it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SearchConfig {
    /// `MYMCP_GLOB_MAX_RESULTS`.
    pub(crate) glob_max_results: u64,
    /// `MYMCP_GREP_DEFAULT_MAX_RESULTS`.
    pub(crate) grep_default_max_results: u64,
    /// `MYMCP_GREP_MAX_RESULTS`.
    pub(crate) grep_max_results: u64,
    /// Bytes kept of one output line.
    pub(crate) max_line_bytes: usize,
    /// Largest `results` text; the output stops (truncated) before it would exceed this.
    pub(crate) max_output_bytes: usize,
    /// Most memory one file's search may use for a line (longer lines: the file is skipped).
    heap_limit: usize,
    /// `MYMCP_SEARCH_TIMEOUT_SEC`: the whole call.
    pub(crate) timeout: Duration,
    /// Search threads (0: one per CPU).
    pub(crate) threads: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            glob_max_results: mymcp_settings::GLOB_MAX_RESULTS.default(),
            grep_default_max_results: mymcp_settings::GREP_DEFAULT_MAX_RESULTS.default(),
            grep_max_results: mymcp_settings::GREP_MAX_RESULTS.default(),
            max_line_bytes: 4096,
            max_output_bytes: 8 << 20,
            heap_limit: 64 << 20,
            timeout: Duration::from_secs(mymcp_settings::SEARCH_TIMEOUT_SEC.default()),
            threads: 0,
        }
    }
}

impl SearchConfig {
    fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}

/// Why a search stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abort {
    Timeout,
    Cancelled,
    /// A search thread could not act as the caller's account (it did nothing).
    Unacted,
}

/// The deadline and the cancellation flag of one call.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    deadline: Instant,
    timeout: Duration,
    cancelled: Arc<AtomicBool>,
}

impl Budget {
    pub(crate) fn new(timeout: Duration, cancelled: Arc<AtomicBool>) -> Self {
        Budget {
            deadline: Instant::now() + timeout,
            timeout,
            cancelled,
        }
    }

    fn check(&self) -> Result<(), Abort> {
        if self.cancelled.load(Ordering::Relaxed) {
            Err(Abort::Cancelled)
        } else if Instant::now() >= self.deadline {
            Err(Abort::Timeout)
        } else {
            Ok(())
        }
    }

    fn failure(&self, tool: &str, abort: Abort) -> ToolFailure {
        match abort {
            Abort::Timeout => ToolFailure::new(
                ErrorCode::TimeoutError,
                format!("{tool} timed out after {}s", self.timeout.as_secs()),
            )
            .with_suggestion("Narrow the path or the pattern"),
            Abort::Cancelled => ToolFailure::new(ErrorCode::Cancelled, "The call was cancelled"),
            Abort::Unacted => ToolFailure::new(
                ErrorCode::InternalError,
                format!("{tool} failed: a search thread could not act as the token's account"),
            ),
        }
    }
}

fn check_pattern_len(field: &str, p: &str) -> Result<(), ToolFailure> {
    if p.len() > MAX_PATTERN_BYTES {
        return Err(ToolFailure::new(
            ErrorCode::InvalidArguments,
            format!("{field} is {} bytes, max is {MAX_PATTERN_BYTES}", p.len()),
        ));
    }
    Ok(())
}

/// `shown` joined with a relative path, without doubling a trailing `/`.
fn display_join(shown: &str, rel: &Path) -> String {
    let rel = rel.to_string_lossy();
    if rel.is_empty() {
        shown.to_owned()
    } else if shown.ends_with('/') {
        format!("{shown}{rel}")
    } else {
        format!("{shown}/{rel}")
    }
}

/// Whether `ignore`'s walk may enter a directory it met ([`Walk::verdict`]): pruned before it
/// is read, so neither its names nor its ignore files are. Other entries are judged where
/// they are opened ([`search_in_dir`]).
fn may_enter(walk: &Walk, e: &DirEntry) -> bool {
    if !e.file_type().is_some_and(|t| t.is_dir()) {
        return true;
    }
    let met = |id| Met::Entry {
        real: e.path(),
        kind: Kind::Dir,
        id,
    };
    match walk.verdict(met(None)) {
        Verdict::Allowed => true,
        Verdict::Protected => false,
        Verdict::NeedsId => match e.metadata() {
            Ok(m) => walk.verdict(met(Some((m.dev(), m.ino())))) == Verdict::Allowed,
            // Unreadable here: the walker's own open of it ([`paths::open_subdir`]) decides.
            Err(_) => true,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// grep
// ---------------------------------------------------------------------------------------------

/// The clamped parameters of one grep.
#[derive(Clone, Debug)]
struct GrepPlan {
    mode: GrepMode,
    context: usize,
    max_results: u64,
    max_line_bytes: usize,
    max_output_bytes: usize,
}

/// Runs one `grep` call for the holder of `auth`, with its account's rights on this thread
/// and every search thread (a directory it may not read is skipped, as ripgrep does). Blocking.
pub(crate) fn grep(
    auth: &Authorized<Ro>,
    args: &Grep,
    cfg: &SearchConfig,
    policy: &Arc<Policy>,
    budget: &Budget,
) -> Result<GrepOutput, ToolFailure> {
    let path = args.path.as_deref().unwrap_or("/");
    paths::check_absolute("path", path)?;
    let _as = auth.act()?;
    check_pattern_len("pattern", &args.pattern)?;
    if let Some(g) = &args.glob {
        check_pattern_len("glob", g)?;
    }
    let matcher = RegexMatcherBuilder::new()
        .case_insensitive(args.case_insensitive.unwrap_or(false))
        .line_terminator(Some(b'\n'))
        .build(&args.pattern)
        .map_err(|e| {
            ToolFailure::new(ErrorCode::InvalidRegex, e.to_string())
                .with_suggestion("The pattern is a Rust regex (ripgrep's syntax)")
        })?;
    let max_cap = cfg.grep_max_results.max(1);
    let plan = GrepPlan {
        mode: args.output_mode.unwrap_or_default(),
        context: args
            .context_lines
            .unwrap_or(0)
            .clamp(0, MAX_CONTEXT_LINES as i64) as usize,
        max_results: match args.max_results {
            None => cfg.grep_default_max_results.clamp(1, max_cap),
            Some(n) => (n.max(1) as u64).min(max_cap),
        },
        max_line_bytes: cfg.max_line_bytes,
        max_output_bytes: cfg.max_output_bytes,
    };
    let mut searcher = build_searcher(&plan, cfg);
    let mut out = Emitter::new(&plan);
    match paths::open_search_root(policy, path)? {
        None => {}
        Some(SearchRoot::File(f)) => {
            // A file of a pseudo file system may be a stream that waits for data
            // (`/proc/kmsg`): read what it has now, as the walk does (regular files of a disk
            // ignore the flag).
            sysfs::set_nonblocking(std::os::fd::AsFd::as_fd(&f.file)).map_err(|e| {
                ToolFailure::new(ErrorCode::InternalError, paths::os_message(&e, path))
            })?;
            let r = search_file(
                &mut searcher,
                &matcher,
                &plan,
                &f.file,
                budget,
                Prefix::None,
            );
            budget.check().map_err(|a| budget.failure("grep", a))?;
            out.emit(r);
        }
        Some(SearchRoot::Dir(root)) => {
            let filter = match &args.glob {
                None => None,
                Some(g) => {
                    let mut ob = ignore::overrides::OverrideBuilder::new(&root.real);
                    ob.add(g).map_err(|e| invalid_glob(g, &e))?;
                    Some(ob.build().map_err(|e| invalid_glob(g, &e))?)
                }
            };
            walk_and_search(
                auth, root, path, filter, &matcher, &plan, cfg, policy, budget, &mut out,
            )
            .map_err(|a| budget.failure("grep", a))?;
        }
    }
    Ok(out.finish())
}

fn invalid_glob(g: &str, e: &dyn std::fmt::Display) -> ToolFailure {
    ToolFailure::new(
        ErrorCode::InvalidArguments,
        format!("invalid glob {g:?}: {e}"),
    )
}

fn build_searcher(plan: &GrepPlan, cfg: &SearchConfig) -> Searcher {
    let mut b = SearcherBuilder::new();
    b.line_number(true)
        .binary_detection(BinaryDetection::quit(0))
        .heap_limit(Some(cfg.heap_limit));
    if plan.mode == GrepMode::Content {
        b.before_context(plan.context).after_context(plan.context);
    }
    if plan.mode == GrepMode::Files {
        b.max_matches(Some(1));
    }
    b.build()
}

/// What one file contributed.
#[derive(Debug, Default)]
struct FileResult {
    /// Output lines, each ending in `\n`.
    text: String,
    lines: u64,
    /// The file's search stopped before its end (enough lines for the answer).
    incomplete: bool,
}

/// The path shown before each output line of a file.
enum Prefix<'a> {
    /// A single-file search: no prefix.
    None,
    /// Built at the first output line (most files have none).
    Lazy {
        shown: &'a str,
        rel: &'a Path,
        built: Option<String>,
    },
}

impl Prefix<'_> {
    fn get(&mut self) -> Option<&str> {
        match self {
            Prefix::None => None,
            Prefix::Lazy { shown, rel, built } => Some(
                built
                    .get_or_insert_with(|| display_join(shown, rel))
                    .as_str(),
            ),
        }
    }
}

/// A file as the searcher reads it: nothing more once the call's budget is spent (a file
/// that never ends cannot hold the search), and a non-blocking file with no data right now
/// (a kernel stream such as `/proc/kmsg`) ends there instead of failing.
struct Budgeted<'a> {
    file: &'a File,
    budget: &'a Budget,
}

impl io::Read for Budgeted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.budget.check().is_err() {
            return Err(io::Error::other("the search's time budget is spent"));
        }
        match (&mut &*self.file).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            r => r,
        }
    }
}

/// Searches one open file.
fn search_file(
    searcher: &mut Searcher,
    matcher: &RegexMatcher,
    plan: &GrepPlan,
    file: &File,
    budget: &Budget,
    prefix: Prefix<'_>,
) -> FileResult {
    let mut sink = FileSink {
        plan,
        prefix,
        out: FileResult::default(),
        matched_lines: 0,
        binary: false,
        full: false,
    };
    // `search_file` without memory maps or multi-line matching is this very call.
    let ok = searcher
        .search_reader(matcher, Budgeted { file, budget }, &mut sink)
        .is_ok();
    if !ok || sink.binary {
        return FileResult::default();
    }
    let FileSink {
        out,
        mut prefix,
        matched_lines,
        full,
        ..
    } = sink;
    match plan.mode {
        GrepMode::Content => FileResult {
            incomplete: full,
            ..out
        },
        GrepMode::Files => {
            let mut r = FileResult::default();
            if matched_lines > 0 {
                r.text = format!("{}\n", prefix.get().unwrap_or(""));
                r.lines = 1;
            }
            r
        }
        GrepMode::Count => {
            let mut r = FileResult::default();
            if matched_lines > 0 {
                r.text = match prefix.get() {
                    Some(p) => format!("{p}:{matched_lines}\n"),
                    None => format!("{matched_lines}\n"),
                };
                r.lines = 1;
            }
            r
        }
    }
}

struct FileSink<'a> {
    plan: &'a GrepPlan,
    prefix: Prefix<'a>,
    out: FileResult,
    matched_lines: u64,
    binary: bool,
    /// Enough lines for the whole answer: stop reading this file.
    full: bool,
}

impl FileSink<'_> {
    fn push(&mut self, sep: char, lineno: Option<u64>, bytes: &[u8]) -> bool {
        let mut line = bytes;
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        let cut = line.len() > self.plan.max_line_bytes;
        let kept = &line[..line.len().min(self.plan.max_line_bytes)];
        let text = String::from_utf8_lossy(kept);
        let n = lineno.unwrap_or(0);
        let o = &mut self.out.text;
        if let Some(p) = self.prefix.get() {
            o.push_str(p);
            o.push(sep);
        }
        o.push_str(&n.to_string());
        o.push(sep);
        o.push_str(&text);
        if cut {
            o.push_str(LINE_TRUNCATED);
        }
        o.push('\n');
        self.out.lines += 1;
        self.keep_going()
    }

    fn keep_going(&mut self) -> bool {
        if self.out.lines > self.plan.max_results
            || self.out.text.len() > self.plan.max_output_bytes
        {
            self.full = true;
        }
        !self.full
    }
}

impl Sink for FileSink<'_> {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.matched_lines += 1;
        match self.plan.mode {
            GrepMode::Content => Ok(self.push(':', mat.line_number(), mat.bytes())),
            GrepMode::Files => Ok(false),
            GrepMode::Count => Ok(true),
        }
    }

    fn context(&mut self, _: &Searcher, ctx: &SinkContext<'_>) -> Result<bool, io::Error> {
        match ctx.kind() {
            SinkContextKind::Before | SinkContextKind::After => {
                Ok(self.push('-', ctx.line_number(), ctx.bytes()))
            }
            SinkContextKind::Other => Ok(true),
        }
    }

    fn context_break(&mut self, _: &Searcher) -> Result<bool, io::Error> {
        self.out.text.push_str("--\n");
        self.out.lines += 1;
        Ok(self.keep_going())
    }

    fn binary_data(&mut self, _: &Searcher, _offset: u64) -> Result<bool, io::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// Collects file results in order into the answer.
struct Emitter<'a> {
    plan: &'a GrepPlan,
    text: String,
    /// Lines in `text`.
    shown: u64,
    /// Lines seen in all emitted results.
    total: u64,
    /// More lines were found than can be shown: the search may stop.
    full: bool,
    /// The walk ended before its natural end (so `total` is a lower bound).
    stopped_early: bool,
}

impl<'a> Emitter<'a> {
    fn new(plan: &'a GrepPlan) -> Self {
        Emitter {
            plan,
            text: String::new(),
            shown: 0,
            total: 0,
            full: false,
            stopped_early: false,
        }
    }

    fn emit(&mut self, r: FileResult) {
        if r.lines == 0 {
            return;
        }
        if r.incomplete {
            self.stopped_early = true;
        }
        let separate =
            self.plan.mode == GrepMode::Content && self.plan.context > 0 && self.total > 0;
        let sep = separate.then_some("--");
        for l in sep.into_iter().chain(r.text.split_terminator('\n')) {
            self.total += 1;
            if !self.full
                && self.shown < self.plan.max_results
                && self.text.len() + l.len() < self.plan.max_output_bytes
            {
                if self.shown > 0 {
                    self.text.push('\n');
                }
                self.text.push_str(l);
                self.shown += 1;
            } else {
                self.full = true;
            }
        }
    }

    fn finish(mut self) -> GrepOutput {
        let exact = !self.stopped_early;
        if self.total > self.shown {
            let more = self.total - self.shown;
            if exact {
                self.text
                    .push_str(&format!("\n[TRUNCATED: {more} more matches not shown]"));
            } else {
                self.text.push_str(&format!(
                    "\n[TRUNCATED: at least {more} more matches not shown; the search stopped at max_results]"
                ));
            }
        }
        GrepOutput {
            results: self.text,
            match_count: self.total,
            match_count_exact: exact,
        }
    }
}

/// One file for the search threads.
struct Job {
    dir: Arc<CheckedDir>,
    /// The walked path (below the root's real path); the display path is built only on a match.
    path: PathBuf,
}

/// Files handed to the search threads together (fewer wake-ups than one at a time).
const BATCH: usize = 64;

/// What the walk sent to the search threads.
struct Walked {
    /// Batches sent.
    batches: u64,
    /// The walk reached its end (it was not stopped).
    complete: bool,
}

/// Limits how far the walk may run ahead of the in-order emission.
struct Window {
    state: Mutex<(usize, usize)>,
    changed: Condvar,
}

const WINDOW_BATCHES: usize = 32;
const WINDOW_BYTES: usize = 16 << 20;

impl Window {
    fn new() -> Self {
        Window {
            state: Mutex::new((0, 0)),
            changed: Condvar::new(),
        }
    }

    /// Waits for room for one more batch; false when `stop` was raised meanwhile.
    fn enter(&self, stop: &AtomicBool) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.0 >= WINDOW_BATCHES || s.1 >= WINDOW_BYTES {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.0 += 1;
        true
    }

    fn add_bytes(&self, n: usize) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 += n;
    }

    fn leave(&self, bytes: usize) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.saturating_sub(1);
        s.1 = s.1.saturating_sub(bytes);
        self.changed.notify_all();
    }
}

#[allow(clippy::too_many_arguments)]
fn walk_and_search(
    auth: &Authorized<Ro>,
    root: CheckedDir,
    shown: &str,
    filter: Option<ignore::overrides::Override>,
    matcher: &RegexMatcher,
    plan: &GrepPlan,
    cfg: &SearchConfig,
    policy: &Arc<Policy>,
    budget: &Budget,
    out: &mut Emitter<'_>,
) -> Result<(), Abort> {
    let root = Arc::new(root);
    let rule = Arc::new(Walk::new(policy.clone(), Some(&root.real)));
    let mut wb = WalkBuilder::new(&root.real);
    wb.follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry({
            let rule = rule.clone();
            move |e| may_enter(&rule, e)
        });
    if let Some(f) = filter {
        wb.overrides(f);
    }
    let walk = wb.build();

    let stop = AtomicBool::new(false);
    let unacted = &AtomicBool::new(false);
    let window = Window::new();
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<Job>)>(WINDOW_BATCHES);
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<(u64, Vec<FileResult>)>();
    let mut abort = None;
    let rule = &*rule;

    std::thread::scope(|s| {
        for _ in 0..cfg.threads() {
            let res_tx = res_tx.clone();
            let (job_rx, stop, window) = (&job_rx, &stop, &window);
            let matcher = matcher.clone();
            let names = Names {
                root: &root.real,
                shown,
            };
            s.spawn(move || {
                // Without the account's rights a search thread opens nothing: it leaves (its
                // files are then never searched and the walk stops on the closed channel).
                let Ok(_as) = auth.act() else {
                    unacted.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                    return;
                };
                let mut searcher = build_searcher(plan, cfg);
                loop {
                    let batch = {
                        let rx = job_rx.lock().unwrap_or_else(|p| p.into_inner());
                        rx.recv()
                    };
                    let Ok((seq, jobs)) = batch else { break };
                    let mut results = Vec::with_capacity(jobs.len());
                    for job in &jobs {
                        results.push(if stop.load(Ordering::Relaxed) {
                            FileResult::default()
                        } else {
                            search_in_dir(&mut searcher, &matcher, plan, rule, job, &names, budget)
                        });
                    }
                    window.add_bytes(results.iter().map(|r| r.text.len()).sum());
                    if res_tx.send((seq, results)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);

        let walker = {
            let (stop, window, root) = (&stop, &window, root.clone());
            s.spawn(move || -> Result<Walked, Abort> {
                let _as = auth.act().map_err(|_| Abort::Unacted)?;
                let mut dirs: Vec<Option<Arc<CheckedDir>>> = vec![Some(root.clone())];
                let mut batches = 0u64;
                let mut batch = Vec::with_capacity(BATCH);
                let mut complete = true;
                let send = |batch: Vec<Job>, batches: &mut u64| -> bool {
                    if !window.enter(stop) || job_tx.send((*batches, batch)).is_err() {
                        return false;
                    }
                    *batches += 1;
                    true
                };
                for (i, entry) in walk.enumerate() {
                    if stop.load(Ordering::Relaxed) {
                        complete = false;
                        break;
                    }
                    if i % 64 == 0 {
                        budget.check()?;
                    }
                    let Ok(entry) = entry else { continue };
                    let depth = entry.depth();
                    let Some(ft) = entry.file_type() else {
                        continue;
                    };
                    if depth == 0 {
                        continue;
                    }
                    if ft.is_dir() {
                        dirs.truncate(depth);
                        let sub = match dirs.get(depth - 1) {
                            Some(Some(parent)) => {
                                paths::open_subdir(rule, parent, entry.file_name())
                                    .ok()
                                    .flatten()
                                    .map(Arc::new)
                            }
                            _ => None,
                        };
                        dirs.push(sub);
                    } else if ft.is_file() {
                        let Some(Some(parent)) = dirs.get(depth - 1) else {
                            continue;
                        };
                        batch.push(Job {
                            dir: parent.clone(),
                            path: entry.into_path(),
                        });
                        if batch.len() == BATCH
                            && !send(
                                std::mem::replace(&mut batch, Vec::with_capacity(BATCH)),
                                &mut batches,
                            )
                        {
                            complete = false;
                            break;
                        }
                    }
                }
                if complete && !batch.is_empty() && !send(batch, &mut batches) {
                    complete = false;
                }
                drop(job_tx);
                Ok(Walked { batches, complete })
            })
        };

        // Emit in walk order.
        let mut next = 0u64;
        let mut pending: BTreeMap<u64, Vec<FileResult>> = BTreeMap::new();
        loop {
            match res_rx.recv_timeout(Duration::from_millis(100)) {
                Ok((seq, r)) => {
                    pending.insert(seq, r);
                    while !out.full {
                        let Some(results) = pending.remove(&next) else {
                            break;
                        };
                        let bytes = results.iter().map(|r| r.text.len()).sum();
                        let mut rest = results.into_iter();
                        for r in rest.by_ref() {
                            out.emit(r);
                            if out.full {
                                break;
                            }
                        }
                        // Lines left unseen in this batch: the count is only a lower bound.
                        if rest.any(|r| r.lines > 0) {
                            out.stopped_early = true;
                        }
                        window.leave(bytes);
                        next += 1;
                    }
                    if out.full {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(a) = budget.check() {
                        abort = Some(a);
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        drop(res_rx);
        match walker.join() {
            Ok(Err(a)) => {
                abort.get_or_insert(a);
            }
            // Every file the walk found was emitted: the count is complete.
            Ok(Ok(Walked { batches, complete })) => {
                if out.full && !(complete && next == batches) {
                    out.stopped_early = true;
                }
            }
            Err(_) => out.stopped_early = true,
        }
    });
    if unacted.load(Ordering::Relaxed) {
        return Err(Abort::Unacted);
    }
    match abort {
        Some(a) => Err(a),
        None => Ok(()),
    }
}

/// How walked paths are shown: the caller's `path` with the part below the root.
#[derive(Clone, Copy)]
struct Names<'a> {
    root: &'a Path,
    shown: &'a str,
}

/// Opens one walked file inside its checked directory and searches it.
fn search_in_dir(
    searcher: &mut Searcher,
    matcher: &RegexMatcher,
    plan: &GrepPlan,
    rule: &Walk,
    job: &Job,
    names: &Names<'_>,
    budget: &Budget,
) -> FileResult {
    let Some(name) = job.path.file_name() else {
        return FileResult::default();
    };
    // The walked path is the real path of the file's checked directory and its name.
    let met = |id| Met::Entry {
        real: &job.path,
        kind: Kind::File,
        id,
    };
    let verdict = rule.verdict(met(None));
    if verdict == Verdict::Protected {
        return FileResult::default();
    }
    let Ok(fd) = sysfs::openat(
        Base::Dir(job.dir.fd()),
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    ) else {
        return FileResult::default();
    };
    let file = File::from(fd);
    // The file is an entry of a checked directory, opened without following a symlink: the
    // rule wants its inode only when it may be a second name of a protected file (a hard link
    // or a bind mount), and then it is the opened object's. (Anything but a regular file —
    // swapped in after the walk saw one — fails to read: FIFOs are opened non-blocking,
    // directories give EISDIR.)
    if verdict == Verdict::NeedsId {
        let Ok(meta) = file.metadata() else {
            return FileResult::default();
        };
        if !meta.is_file() || rule.verdict(met(Some((meta.dev(), meta.ino())))) != Verdict::Allowed
        {
            return FileResult::default();
        }
    }
    let rel = job.path.strip_prefix(names.root).unwrap_or(&job.path);
    let prefix = Prefix::Lazy {
        shown: names.shown,
        rel,
        built: None,
    };
    search_file(searcher, matcher, plan, &file, budget, prefix)
}

// ---------------------------------------------------------------------------------------------
// glob
// ---------------------------------------------------------------------------------------------

fn has_glob_meta(component: &str) -> bool {
    component.contains(['*', '?', '[', '{', '\\'])
}

/// One match: (mtime in ns, display path).
type Found = (i128, String);

/// Keeps the newest `cap` matches and counts all of them.
#[derive(Debug, Default)]
struct Newest {
    cap: usize,
    items: Vec<Found>,
    count: u64,
    /// Once `cap` items are kept: anything older than this cannot make the cut.
    floor: Option<i128>,
}

impl Newest {
    fn new(cap: usize) -> Self {
        Newest {
            cap,
            ..Newest::default()
        }
    }

    /// Counts a match and keeps it if it may be among the newest; `path` is only built then.
    fn push(&mut self, mtime: i128, path: impl FnOnce() -> String) {
        self.count += 1;
        if self.floor.is_some_and(|f| mtime < f) {
            return;
        }
        self.items.push((mtime, path()));
        if self.items.len() >= self.cap.saturating_mul(4).max(64) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.items
            .sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        self.items.truncate(self.cap);
        if self.items.len() == self.cap {
            self.floor = self.items.last().map(|f| f.0);
        }
    }

    fn merge(&mut self, other: Newest) {
        self.count += other.count;
        self.items.extend(other.items);
        self.compact();
    }
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Runs one `glob` call for the holder of `auth`, with its account's rights on this thread and
/// every walking thread (a directory it may not read is skipped). Blocking.
pub(crate) fn glob(
    auth: &Authorized<Ro>,
    args: &Glob,
    cfg: &SearchConfig,
    policy: &Arc<Policy>,
    budget: &Budget,
) -> Result<GlobOutput, ToolFailure> {
    let base = args.path.as_deref().unwrap_or("/");
    paths::check_absolute("path", base)?;
    let _as = auth.act()?;
    check_pattern_len("pattern", &args.pattern)?;
    let cap = cfg.glob_max_results.max(1) as usize;

    // An absolute pattern ignores `path`. Literal leading components join the base, so the walk
    // starts as deep as it can.
    let (mut shown, pattern) = match args.pattern.strip_prefix('/') {
        Some(rest) => (String::from("/"), rest.to_owned()),
        None => (base.to_owned(), args.pattern.clone()),
    };
    let parts: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let literal = parts.iter().take_while(|c| !has_glob_meta(c)).count();
    for c in &parts[..literal] {
        if !shown.ends_with('/') {
            shown.push('/');
        }
        shown.push_str(c);
    }
    let rest = parts[literal..].join("/");
    let empty = GlobOutput {
        files: Vec::new(),
        count: 0,
        truncated: false,
    };

    if rest.is_empty() {
        // Nothing to expand: the path itself, if it exists and is not protected.
        let rule = Walk::new(policy.clone(), None);
        return Ok(match literal_match(&rule, &shown) {
            Some(p) => GlobOutput {
                files: vec![p],
                count: 1,
                truncated: false,
            },
            None => empty,
        });
    }
    let matcher = GlobBuilder::new(&rest)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| {
            ToolFailure::new(
                ErrorCode::InvalidArguments,
                format!("invalid glob pattern {:?}: {}", args.pattern, e.kind()),
            )
        })?
        .compile_matcher();

    let root = match paths::open_search_root(policy, &shown) {
        Ok(Some(SearchRoot::Dir(d))) => d,
        // Missing, a file, or protected: nothing to list (the reference filters silently).
        Ok(_) => return Ok(empty),
        Err(f) if f.code == ErrorCode::ProtectedPath => return Ok(empty),
        Err(f) => return Err(f),
    };
    // `**/x` matches `x` in any directory: test the file name alone (no path to build).
    let name_matcher = match rest.strip_prefix("**/") {
        Some(name) if !name.contains('/') && !name.contains("**") => Some(
            GlobBuilder::new(name)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| {
                    ToolFailure::new(
                        ErrorCode::InvalidArguments,
                        format!("invalid glob pattern {:?}: {}", args.pattern, e.kind()),
                    )
                })?
                .compile_matcher(),
        ),
        _ => None,
    };
    let recursive = rest.split('/').any(|c| c.contains("**"));
    let include_root = rest == "**";
    let mut all = Newest::new(cap);
    if include_root {
        if let Ok(m) = std::fs::symlink_metadata(&root.real) {
            all.push(mtime_ns(&m), || shown.clone());
        }
    }
    let root_bytes = root.real.as_os_str().as_encoded_bytes();
    let root_prefix = root_bytes.len() + usize::from(root_bytes.last() != Some(&b'/'));
    let rule = Walk::new(policy.clone(), Some(&root.real));
    let walk = GlobWalk {
        auth,
        matcher: &matcher,
        name_matcher: name_matcher.as_ref(),
        root_prefix,
        shown: &shown,
        rule: &rule,
        budget,
        skip_hidden: !rest.split('/').any(|c| c.starts_with('.')),
        max_depth: (!recursive).then(|| rest.split('/').count()),
        cap,
    };
    all.merge(
        walk.run(root, cfg.threads())
            .map_err(|a| budget.failure("glob", a))?,
    );
    all.compact();
    // Every result was judged by the rule where the walk met it, in a directory opened below
    // its checked parent: no second look by name.
    let count = all.count;
    let files: Vec<String> = all.items.into_iter().map(|(_, p)| p).collect();
    Ok(GlobOutput {
        truncated: count > files.len() as u64,
        files,
        count,
    })
}

/// A literal path (no wildcard), if it exists and the rule allows it (by name).
fn literal_match(rule: &Walk, p: &str) -> Option<String> {
    std::fs::symlink_metadata(p).ok()?;
    (rule.verdict(Met::Named(Path::new(p))) == Verdict::Allowed).then(|| p.to_owned())
}

/// What one `glob` walks for: everything but the directories, which [`GlobWalk::run`] is given.
struct GlobWalk<'a> {
    /// Whose rights every walking thread has.
    auth: &'a Authorized<Ro>,
    matcher: &'a globset::GlobMatcher,
    /// For `**/<name glob>`: the name glob, matched against the file name alone.
    name_matcher: Option<&'a globset::GlobMatcher>,
    /// Bytes of a walked entry's real path before the part below the root.
    root_prefix: usize,
    shown: &'a str,
    rule: &'a Walk,
    budget: &'a Budget,
    /// Skip names starting with `.` (files and directories).
    skip_hidden: bool,
    /// Entries deeper than this (the root is depth 0) are not listed.
    max_depth: Option<usize>,
    cap: usize,
}

/// A directory waiting to be read: opened only when a thread takes it, so a wide tree does not
/// hold a descriptor per waiting directory.
struct GlobDir {
    parent: Arc<CheckedDir>,
    name: OsString,
    depth: usize,
}

/// The directories still to read, shared by the walking threads (last in, first out, which
/// keeps few parents open); the walk ends when none is queued and no thread is reading one.
struct GlobQueue {
    state: Mutex<GlobQueueState>,
    ready: Condvar,
}

struct GlobQueueState {
    dirs: Vec<GlobDir>,
    reading: usize,
    stop: bool,
}

impl GlobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, GlobQueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next directory, waiting while another thread may still queue one; `None` at the end.
    fn take(&self) -> Option<GlobDir> {
        let mut s = self.lock();
        loop {
            if s.stop {
                return None;
            }
            if let Some(d) = s.dirs.pop() {
                s.reading += 1;
                return Some(d);
            }
            if s.reading == 0 {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A directory taken with [`GlobQueue::take`] is read; `found` are its subdirectories.
    fn done(&self, found: &mut Vec<GlobDir>) {
        let mut s = self.lock();
        let more = found.len();
        s.dirs.append(found);
        s.reading -= 1;
        let end = s.reading == 0 && s.dirs.is_empty();
        drop(s);
        if end || more > 1 {
            self.ready.notify_all();
        } else if more == 1 {
            self.ready.notify_one();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.ready.notify_all();
    }

    fn stopped(&self) -> bool {
        self.lock().stop
    }
}

struct StopOnPanic<'a>(&'a GlobQueue);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

/// What one walking thread reuses from directory to directory.
struct GlobThread {
    /// `getdents64` records.
    dirents: Vec<u8>,
    /// The real path of the entry at hand.
    path: Vec<u8>,
    /// Subdirectories of the directory at hand, queued once it is read.
    found: Vec<GlobDir>,
    /// Entries seen (the budget is checked every 256).
    seen: u64,
    newest: Newest,
}

/// Directory entries read per `getdents64`.
const DIRENT_BUF: usize = 32 * 1024;

impl GlobWalk<'_> {
    /// Walks below `root` on `threads` threads (this one included) and returns the newest
    /// matches. Directories are read with `getdents64` on their descriptors and opened below
    /// their checked parent without following symlinks (`open_subdir`, which prunes protected
    /// ones by path and inode); matches are `fstatat`ed relative to their directory. No path
    /// is resolved from the root for each entry, and nothing is allocated per entry but the
    /// paths kept.
    fn run(&self, root: CheckedDir, threads: usize) -> Result<Newest, Abort> {
        let queue = GlobQueue {
            state: Mutex::new(GlobQueueState {
                dirs: Vec::new(),
                reading: 1,
                stop: false,
            }),
            ready: Condvar::new(),
        };
        let root = Arc::new(root);
        let walk = |first: Option<Arc<CheckedDir>>| -> Result<Newest, Abort> {
            // A thread that panicked would leave the others waiting for its directory.
            let _stop_on_panic = StopOnPanic(&queue);
            // The calling thread acts already (a no-op then); the others take the account's
            // rights before they read anything, or stop the walk.
            let Ok(_as) = self.auth.act() else {
                queue.stop();
                return Err(Abort::Unacted);
            };
            let mut t = GlobThread {
                dirents: vec![0u8; DIRENT_BUF],
                path: Vec::with_capacity(256),
                found: Vec::new(),
                seen: 0,
                newest: Newest::new(self.cap),
            };
            let mut next = first.map(|d| (d, 0));
            loop {
                if let Some((dir, depth)) = next.take() {
                    let r = self.read(&dir, depth, &queue, &mut t);
                    queue.done(&mut t.found);
                    if let Err(a) = r {
                        queue.stop();
                        return Err(a);
                    }
                }
                let Some(job) = queue.take() else {
                    return Ok(t.newest);
                };
                match paths::open_subdir(self.rule, &job.parent, &job.name) {
                    Ok(Some(d)) => next = Some((Arc::new(d), job.depth)),
                    // Gone, unreadable or protected: nothing below it is listed.
                    _ => queue.done(&mut Vec::new()),
                }
            }
        };
        let mut all = Newest::new(self.cap);
        let mut abort = None;
        std::thread::scope(|s| {
            let others: Vec<_> = (1..threads.max(1))
                .map(|_| s.spawn(|| walk(None)))
                .collect();
            let mut add = |r: Result<Newest, Abort>| match r {
                Ok(n) => all.merge(n),
                Err(a) => abort = abort.or(Some(a)),
            };
            add(walk(Some(root)));
            for t in others {
                add(t.join().unwrap_or(Err(Abort::Cancelled)));
            }
        });
        match abort {
            Some(a) => Err(a),
            None => Ok(all),
        }
    }

    /// Lists the entries of one directory that match (in `t.newest`) and gathers its
    /// subdirectories within `max_depth` in `t.found`.
    fn read(
        &self,
        dir: &Arc<CheckedDir>,
        depth: usize,
        queue: &GlobQueue,
        t: &mut GlobThread,
    ) -> Result<(), Abort> {
        use std::os::unix::ffi::OsStrExt;
        let GlobThread {
            dirents: buf,
            path,
            found,
            seen,
            newest,
        } = t;
        // The entries' depth; directories deeper than `max_depth` are never queued.
        let depth = depth + 1;
        let descend = self.max_depth.is_none_or(|m| depth < m);
        path.clear();
        path.extend_from_slice(dir.real.as_os_str().as_bytes());
        if path.last() != Some(&b'/') {
            path.push(b'/');
        }
        let base = path.len();
        loop {
            // An unreadable directory ends here, as if empty.
            let n = match sysfs::getdents(dir.fd(), buf) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            for entry in sysfs::Dirents::new(&buf[..n]) {
                let name = entry.name.to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                *seen += 1;
                if *seen % 256 == 0 {
                    self.budget.check()?;
                    if queue.stopped() {
                        return Ok(());
                    }
                }
                if self.skip_hidden && name.first() == Some(&b'.') {
                    continue;
                }
                path.truncate(base);
                path.extend_from_slice(name);
                let real = Path::new(OsStr::from_bytes(path));
                let mut stat = None;
                let kind = match entry.kind {
                    libc::DT_UNKNOWN => {
                        stat = sysfs::stat_entry_c(dir.fd(), entry.name).ok().flatten();
                        match stat {
                            Some(st) if st.is_dir() => libc::DT_DIR,
                            Some(st) if st.is_symlink() => libc::DT_LNK,
                            Some(_) => libc::DT_REG,
                            None => continue,
                        }
                    }
                    k => k,
                };
                let rel = Path::new(OsStr::from_bytes(&path[self.root_prefix..]));
                let matched = match self.name_matcher {
                    Some(m) => m.is_match(OsStr::from_bytes(name)),
                    None => self.matcher.is_match(rel),
                };
                if kind == libc::DT_DIR && descend {
                    found.push(GlobDir {
                        parent: dir.clone(),
                        name: OsStr::from_bytes(name).to_owned(),
                        depth,
                    });
                }
                if !matched {
                    continue;
                }
                let stat = match stat {
                    Some(st) => st,
                    None => match sysfs::stat_entry_c(dir.fd(), entry.name) {
                        Ok(Some(st)) => st,
                        _ => continue,
                    },
                };
                let met = Met::Entry {
                    real,
                    kind: match kind {
                        libc::DT_DIR => Kind::Dir,
                        libc::DT_LNK => Kind::Symlink,
                        libc::DT_REG => Kind::File,
                        _ => Kind::Other,
                    },
                    id: Some((stat.dev, stat.ino)),
                };
                if self.rule.verdict(met) == Verdict::Allowed {
                    newest.push(stat.mtime_ns, || display_join(self.shown, rel));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::ProtectedPaths;
    use std::fs;

    fn ro() -> Authorized<Ro> {
        Authorized::for_tests()
    }

    fn policy(entries: &[&Path]) -> std::sync::Arc<Policy> {
        ProtectedPaths::new(entries.iter().map(|p| p.to_path_buf()))
            .policy(crate::paths::Access::Read)
    }

    fn budget() -> Budget {
        Budget::new(Duration::from_secs(30), Arc::new(AtomicBool::new(false)))
    }

    fn grep_args(pattern: &str, path: &Path) -> Grep {
        Grep {
            pattern: pattern.into(),
            path: Some(path.to_str().unwrap().into()),
            glob: None,
            output_mode: None,
            context_lines: None,
            max_results: None,
            case_insensitive: None,
        }
    }

    fn run_grep(args: &Grep, p: &Arc<Policy>) -> Result<GrepOutput, ToolFailure> {
        grep(&ro(), args, &SearchConfig::default(), p, &budget())
    }

    /// A small tree: sorted walk order is a.txt, b/c.txt, b/d.rs, z.txt.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("z.txt"), "needle in z\n").unwrap();
        fs::write(
            d.join("a.txt"),
            "one\nneedle two\nthree\nfour\nfive\nneedle six\n",
        )
        .unwrap();
        fs::create_dir(d.join("b")).unwrap();
        fs::write(d.join("b/c.txt"), "NEEDLE upper\n").unwrap();
        fs::write(d.join("b/d.rs"), "fn needle() {}\r\n").unwrap();
        fs::write(d.join(".hidden"), "needle hidden\n").unwrap();
        fs::write(d.join("bin.dat"), b"needle\0binary\n").unwrap();
        dir
    }

    #[test]
    fn content_mode_is_ripgrep_format_in_path_order() {
        let dir = tree();
        let root = dir.path().to_str().unwrap();
        let out = run_grep(&grep_args("needle", dir.path()), &policy(&[])).unwrap();
        assert_eq!(
            out.results,
            format!(
                "{root}/a.txt:2:needle two\n{root}/a.txt:6:needle six\n{root}/b/d.rs:1:fn needle() {{}}\n{root}/z.txt:1:needle in z"
            )
        );
        assert_eq!((out.match_count, out.match_count_exact), (4, true));
    }

    #[test]
    fn case_insensitive_count_and_files_modes() {
        let dir = tree();
        let root = dir.path().to_str().unwrap();
        let mut a = grep_args("needle", dir.path());
        a.case_insensitive = Some(true);
        a.output_mode = Some(GrepMode::Count);
        let out = run_grep(&a, &policy(&[])).unwrap();
        assert_eq!(
            out.results,
            format!("{root}/a.txt:2\n{root}/b/c.txt:1\n{root}/b/d.rs:1\n{root}/z.txt:1")
        );
        assert_eq!(out.match_count, 4);
        a.output_mode = Some(GrepMode::Files);
        let out = run_grep(&a, &policy(&[])).unwrap();
        assert_eq!(
            out.results,
            format!("{root}/a.txt\n{root}/b/c.txt\n{root}/b/d.rs\n{root}/z.txt")
        );
    }

    #[test]
    fn context_lines_and_separators_and_single_file_has_no_prefix() {
        let dir = tree();
        let file = dir.path().join("a.txt");
        let mut a = grep_args("needle", &file);
        a.context_lines = Some(1);
        let out = run_grep(&a, &policy(&[])).unwrap();
        assert_eq!(
            out.results,
            "1-one\n2:needle two\n3-three\n--\n5-five\n6:needle six"
        );
        assert_eq!(out.match_count, 6);
        // Negative context means none.
        a.context_lines = Some(-3);
        assert_eq!(
            run_grep(&a, &policy(&[])).unwrap().results,
            "2:needle two\n6:needle six"
        );
        // Between files too.
        let mut a = grep_args("needle (two|in)", dir.path());
        a.context_lines = Some(1);
        let root = dir.path().to_str().unwrap();
        assert_eq!(
            run_grep(&a, &policy(&[])).unwrap().results,
            format!("{root}/a.txt-1-one\n{root}/a.txt:2:needle two\n{root}/a.txt-3-three\n--\n{root}/z.txt:1:needle in z")
        );
    }

    #[test]
    fn glob_filter_and_gitignore_in_a_repository() {
        let dir = tree();
        let root = dir.path().to_str().unwrap();
        let mut a = grep_args("needle", dir.path());
        a.glob = Some("*.rs".into());
        assert_eq!(
            run_grep(&a, &policy(&[])).unwrap().results,
            format!("{root}/b/d.rs:1:fn needle() {{}}")
        );
        fs::create_dir(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join(".gitignore"), "z.txt\n").unwrap();
        let out = run_grep(&grep_args("needle", dir.path()), &policy(&[])).unwrap();
        assert!(!out.results.contains("z.txt"), "{}", out.results);
        assert_eq!(out.match_count, 3);
    }

    #[test]
    fn max_results_cuts_and_marks_the_output() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            fs::write(dir.path().join(format!("f{i:02}")), "hit\nhit\n").unwrap();
        }
        let mut a = grep_args("hit", dir.path());
        a.max_results = Some(3);
        let out = run_grep(&a, &policy(&[])).unwrap();
        let lines: Vec<&str> = out.results.lines().collect();
        let root = dir.path().to_str().unwrap();
        assert_eq!(
            lines[..3],
            [
                format!("{root}/f00:1:hit"),
                format!("{root}/f00:2:hit"),
                format!("{root}/f01:1:hit")
            ]
        );
        assert!(
            lines[3].starts_with("[TRUNCATED: at least 1 more matches not shown"),
            "{}",
            lines[3]
        );
        assert!(!out.match_count_exact);
        assert!(
            out.match_count >= 4 && out.match_count < 100,
            "{}",
            out.match_count
        );
        // max_results 0 means 1.
        let file = dir.path().join("f00");
        let mut a = grep_args("hit", &file);
        a.max_results = Some(0);
        let out = run_grep(&a, &policy(&[])).unwrap();
        assert_eq!(out.results, "1:hit\n[TRUNCATED: at least 1 more matches not shown; the search stopped at max_results]");
        assert_eq!((out.match_count, out.match_count_exact), (2, false));
        // When every file was searched the count is exact and the marker the reference's.
        let small = tempfile::tempdir().unwrap();
        for f in ["a", "b", "c"] {
            fs::write(small.path().join(f), "hit\n").unwrap();
        }
        let mut a = grep_args("hit", small.path());
        a.max_results = Some(2);
        a.output_mode = Some(GrepMode::Files);
        let out = run_grep(&a, &policy(&[])).unwrap();
        assert!(
            out.results
                .ends_with("/b\n[TRUNCATED: 1 more matches not shown]"),
            "{}",
            out.results
        );
        assert_eq!((out.match_count, out.match_count_exact), (3, true));
        // A single file with many matches stops reading early and says so.
        let many = dir.path().join("many");
        fs::write(&many, "hit\n".repeat(10_000)).unwrap();
        let mut a = grep_args("hit", &many);
        a.max_results = Some(2);
        let out = run_grep(&a, &policy(&[])).unwrap();
        assert_eq!((out.match_count, out.match_count_exact), (3, false));
        assert!(out.results.ends_with(
            "[TRUNCATED: at least 1 more matches not shown; the search stopped at max_results]"
        ));
    }

    #[test]
    fn invalid_regex_and_option_like_patterns() {
        let dir = tree();
        let e = run_grep(&grep_args("(unclosed", dir.path()), &policy(&[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRegex);
        assert!(e.message.contains("unclosed"), "{}", e.message);
        // An option is just a regex: nothing runs, nothing is created.
        let marker = dir.path().join("pwned");
        let out = run_grep(
            &grep_args(
                &format!("--pre=/bin/touch {}", marker.display()),
                dir.path(),
            ),
            &policy(&[]),
        )
        .unwrap();
        assert_eq!(out.match_count, 0);
        assert!(!marker.exists());
        let mut a = grep_args("x", dir.path());
        a.path = Some("-rf".into());
        assert_eq!(
            run_grep(&a, &policy(&[])).unwrap_err().code,
            ErrorCode::InvalidPath
        );
        // A missing path is an empty result, as in the reference.
        let out = run_grep(&grep_args("x", &dir.path().join("nope")), &policy(&[])).unwrap();
        assert_eq!((out.results.as_str(), out.match_count), ("", 0));
    }

    #[test]
    fn protected_files_are_never_searched_nor_named() {
        let dir = tree();
        let prot = dir.path().join("prot");
        fs::create_dir(&prot).unwrap();
        fs::write(prot.join("secret"), "needle SECRET\n").unwrap();
        let loose = dir.path().join("loose-secret");
        fs::write(&loose, "needle LOOSE\n").unwrap();
        fs::hard_link(&loose, dir.path().join("alias")).unwrap();
        std::os::unix::fs::symlink(prot.join("secret"), dir.path().join("link")).unwrap();
        let p = policy(&[&prot, &loose]);
        let mut a = grep_args("needle", dir.path());
        a.context_lines = Some(5);
        let out = run_grep(&a, &p).unwrap();
        assert!(
            !out.results.contains("SECRET") && !out.results.contains("LOOSE"),
            "{}",
            out.results
        );
        for bad in [
            prot.join("secret"),
            dir.path().join("link"),
            prot.clone(),
            loose.clone(),
            dir.path().join("alias"),
        ] {
            let e = run_grep(&grep_args("needle", &bad), &p).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtectedPath, "{bad:?}");
        }
    }

    fn run_glob(pattern: &str, path: &Path, p: &Arc<Policy>) -> GlobOutput {
        glob(
            &ro(),
            &Glob {
                pattern: pattern.into(),
                path: Some(path.to_str().unwrap().into()),
            },
            &SearchConfig::default(),
            p,
            &budget(),
        )
        .unwrap()
    }

    fn set_mtime(p: &Path, secs: u64) {
        let f = fs::File::options().write(true).open(p).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn glob_recursive_braces_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("src/deep/er")).unwrap();
        for (i, f) in [
            "main.c",
            "src/a.c",
            "src/a.h",
            "src/deep/er/b.c",
            "src/x.txt",
            ".hidden.c",
        ]
        .iter()
        .enumerate()
        {
            fs::write(d.join(f), "").unwrap();
            set_mtime(&d.join(f), 1_000 + i as u64);
        }
        let root = d.to_str().unwrap();
        let out = run_glob("**/*.c", d, &policy(&[]));
        assert_eq!(
            out.files,
            [
                format!("{root}/src/deep/er/b.c"),
                format!("{root}/src/a.c"),
                format!("{root}/main.c")
            ]
        );
        assert_eq!((out.count, out.truncated), (3, false));
        let out = run_glob("src/*.{c,h}", d, &policy(&[]));
        assert_eq!(
            out.files,
            [format!("{root}/src/a.h"), format!("{root}/src/a.c")]
        );
        // Absolute pattern ignores path; `*` matches within one name only.
        let out = run_glob(
            &format!("{root}/*.c"),
            Path::new("/nonexistent"),
            &policy(&[]),
        );
        assert_eq!(out.files, [format!("{root}/main.c")]);
        // Explicit dot component matches hidden names.
        assert_eq!(
            run_glob(".*.c", d, &policy(&[])).files,
            [format!("{root}/.hidden.c")]
        );
        // A literal pattern names one path.
        assert_eq!(
            run_glob("src/a.h", d, &policy(&[])).files,
            [format!("{root}/src/a.h")]
        );
        // `**` includes the base; missing base is empty.
        assert!(run_glob("**", d, &policy(&[]))
            .files
            .contains(&root.to_owned()));
        assert_eq!(run_glob("*.c", &d.join("missing"), &policy(&[])).count, 0);
    }

    #[test]
    fn glob_caps_counts_prunes_and_survives_loops() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 0..30 {
            fs::write(d.join(format!("f{i:02}.log")), "").unwrap();
            set_mtime(&d.join(format!("f{i:02}.log")), 1_000 + i);
        }
        let prot = d.join("prot");
        fs::create_dir(&prot).unwrap();
        fs::write(prot.join("in.log"), "").unwrap();
        std::os::unix::fs::symlink(prot.join("in.log"), d.join("zz-link.log")).unwrap();
        std::os::unix::fs::symlink(".", d.join("loop")).unwrap();
        let cfg = SearchConfig {
            glob_max_results: 5,
            ..SearchConfig::default()
        };
        let out = glob(
            &ro(),
            &Glob {
                pattern: "**/*.log".into(),
                path: Some(d.to_str().unwrap().into()),
            },
            &cfg,
            &policy(&[&prot]),
            &budget(),
        )
        .unwrap();
        assert_eq!(out.count, 30, "{:?}", out.files);
        assert!(out.truncated);
        assert_eq!(out.files.len(), 5);
        assert!(out.files[0].ends_with("f29.log"), "{:?}", out.files);
        assert!(out
            .files
            .iter()
            .all(|f| !f.contains("prot") && !f.contains("zz-link")));
        let e = glob(
            &ro(),
            &Glob {
                pattern: "[".into(),
                path: Some(d.to_str().unwrap().into()),
            },
            &cfg,
            &policy(&[]),
            &budget(),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArguments);
    }

    /// What `glob` must list, found the plain way: a recursive `symlink_metadata` walk that
    /// skips hidden names (unless asked for), does not follow symlinks, prunes `protected`,
    /// and matches the path below `root` with the same glob.
    fn glob_oracle(root: &Path, pattern: &str, protected: &Path) -> Vec<String> {
        let m = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .unwrap()
            .compile_matcher();
        let hidden_ok = pattern.split('/').any(|c| c.starts_with('.'));
        let max_depth = (!pattern.contains("**")).then(|| pattern.split('/').count());
        let mut found = Vec::new();
        let mut stack = vec![(root.to_path_buf(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let path = e.path();
                let name = e.file_name();
                if path == protected || (!hidden_ok && name.as_encoded_bytes()[0] == b'.') {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() && max_depth.is_none_or(|d| depth + 1 < d) {
                    stack.push((path.clone(), depth + 1));
                }
                if m.is_match(path.strip_prefix(root).unwrap()) {
                    found.push((mtime_ns(&meta), path.to_str().unwrap().to_owned()));
                }
            }
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        found.into_iter().map(|f| f.1).collect()
    }

    /// An entry the slow walk found: its path below the root, and whether `grep` must search
    /// it.
    struct Seen {
        rel: PathBuf,
        searched: bool,
    }

    /// What `glob` lists and `grep` searches, found the slow way: a recursive `read_dir` walk
    /// that does not follow symlinks and asks, of every entry, the full check a tool makes
    /// when it opens a path — `open_search_root` for a directory (listed and entered only if
    /// it opens as one), `open_for_read` for anything else (listed unless it is refused as
    /// protected; searched when it is a regular file, not a symlink, that opens).
    fn full_check_walk(
        root: &Path,
        policy: &Policy,
        hidden_ok: bool,
        max_depth: Option<usize>,
    ) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut stack = vec![(root.to_path_buf(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let path = e.path();
                if !hidden_ok && e.file_name().as_encoded_bytes()[0] == b'.' {
                    continue;
                }
                let shown = path.to_str().unwrap();
                let rel = path.strip_prefix(root).unwrap().to_owned();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    let dir_ok = matches!(
                        paths::open_search_root(policy, shown),
                        Ok(Some(SearchRoot::Dir(_)))
                    );
                    if dir_ok {
                        if max_depth.is_none_or(|d| depth + 1 < d) {
                            stack.push((path.clone(), depth + 1));
                        }
                        seen.push(Seen {
                            rel,
                            searched: false,
                        });
                    }
                    continue;
                }
                let opened = paths::open_for_read(policy, shown);
                if matches!(&opened, Err(f) if f.code == ErrorCode::ProtectedPath) {
                    continue;
                }
                seen.push(Seen {
                    rel,
                    searched: meta.is_file() && opened.is_ok(),
                });
            }
        }
        seen
    }

    /// Differential test of the walkers (the fast paths) against the full check of each entry
    /// (the slow path they shortcut), over generated trees: protected directories and files
    /// inside and outside the tree, symlinks into and out of them, hard links, FIFOs, hidden
    /// names, and (as root) bind mounts of protected and plain directories and files.
    #[test]
    fn glob_and_grep_find_what_the_full_check_of_every_entry_allows_on_generated_trees() {
        let _mounts = crate::testing::mount_table();
        let mut mounted = false;
        for seed in 0..12 {
            let tree = crate::testing::GeneratedTree::new(seed, seed % 2 == 1);
            mounted |= !tree.mounts.is_empty();
            let refs: Vec<&Path> = tree.protected.iter().map(PathBuf::as_path).collect();
            let p = policy(&refs);
            let root = tree.root.to_str().unwrap();
            let shown = |rel: &Path| display_join(root, rel);
            for threads in [1, 3] {
                let cfg = SearchConfig {
                    glob_max_results: 100_000,
                    grep_max_results: 100_000,
                    threads,
                    ..SearchConfig::default()
                };
                for pattern in ["**/*", "**/*.c", "**", "*/*", "**/.*", "*", "**/s*.c"] {
                    let hidden_ok = pattern.split('/').any(|c| c.starts_with('.'));
                    let max_depth = (!pattern.contains("**")).then(|| pattern.split('/').count());
                    let m = GlobBuilder::new(pattern)
                        .literal_separator(true)
                        .build()
                        .unwrap()
                        .compile_matcher();
                    let mut expected: Vec<String> =
                        full_check_walk(&tree.root, &p, hidden_ok, max_depth)
                            .iter()
                            .filter(|s| m.is_match(&s.rel))
                            .map(|s| shown(&s.rel))
                            .collect();
                    if pattern == "**" {
                        expected.push(root.to_owned());
                    }
                    expected.sort();
                    let out = glob(
                        &ro(),
                        &Glob {
                            pattern: pattern.into(),
                            path: Some(root.into()),
                        },
                        &cfg,
                        &p,
                        &budget(),
                    )
                    .unwrap();
                    let mut files = out.files.clone();
                    files.sort();
                    assert_eq!(
                        files, expected,
                        "glob {pattern}, seed {seed}, {threads} threads"
                    );
                    assert_eq!(out.count, expected.len() as u64);
                }
                let mut expected: Vec<String> = full_check_walk(&tree.root, &p, false, None)
                    .iter()
                    .filter(|s| s.searched)
                    .map(|s| shown(&s.rel))
                    .collect();
                expected.sort();
                let mut a = grep_args("needle", &tree.root);
                a.output_mode = Some(GrepMode::Files);
                a.max_results = Some(100_000);
                let out = grep(&ro(), &a, &cfg, &p, &budget()).unwrap();
                let mut found: Vec<String> = out.results.lines().map(str::to_owned).collect();
                found.sort();
                assert_eq!(found, expected, "grep, seed {seed}, {threads} threads");
            }
        }
        if !mounted {
            eprintln!("skipped: the bind mounts of the generated trees (cannot mount here)");
        }
    }

    #[test]
    fn glob_lists_what_a_plain_recursive_walk_finds_on_any_number_of_threads() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A few hundred entries, some sharing an mtime (ties go by path): files, hidden files
        // and directories, symlinks to a file, a directory and nowhere, a loop, a FIFO, a
        // deep chain and a protected directory.
        let mut n = 0u64;
        let mut file = |p: PathBuf| {
            fs::write(&p, "x").unwrap();
            n += 1;
            set_mtime(&p, 1_000 + n / 3);
        };
        for a in ["a", "b", ".h", "ab"] {
            for b in ["x", "y", ".z"] {
                let sub = d.join(a).join(b);
                fs::create_dir_all(&sub).unwrap();
                for f in ["m.c", "n.h", ".o.c", "p.txt", "q.c"] {
                    file(sub.join(f));
                }
            }
            file(d.join(a).join("top.c"));
        }
        let mut deep = d.to_path_buf();
        for i in 0..20 {
            deep.push(format!("d{i}"));
        }
        fs::create_dir_all(&deep).unwrap();
        file(deep.join("bottom.c"));
        file(d.join("root.c"));
        std::os::unix::fs::symlink(d.join("a/x/m.c"), d.join("link.c")).unwrap();
        std::os::unix::fs::symlink(d.join("b"), d.join("a/dirlink.c")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", d.join("b/dangling.c")).unwrap();
        std::os::unix::fs::symlink(".", d.join("b/x/loop")).unwrap();
        crate::testing::mkfifo(&d.join("ab/fifo.c"));
        let prot = d.join("ab/y");
        let p = policy(&[&prot]);
        for threads in [1, 2, 5] {
            let cfg = SearchConfig {
                glob_max_results: 10_000,
                threads,
                ..SearchConfig::default()
            };
            for pattern in [
                "**/*.c",
                "*",
                "*/*",
                "*/*/*.c",
                "**",
                "**/.*",
                ".*/**/*.c",
                "a*/**/q.c",
                "**/d1?/**",
                "**/*.{c,h}",
                "**/x/*",
                "*/dirlink.c",
            ] {
                let out = glob(
                    &ro(),
                    &Glob {
                        pattern: pattern.into(),
                        path: Some(d.to_str().unwrap().into()),
                    },
                    &cfg,
                    &p,
                    &budget(),
                )
                .unwrap();
                let mut files = out.files.clone();
                if pattern == "**" {
                    // `**` also names the base itself, which the oracle does not list.
                    let base = files.iter().position(|f| f == d.to_str().unwrap()).unwrap();
                    files.remove(base);
                }
                assert_eq!(
                    files,
                    glob_oracle(d, pattern, &prot),
                    "{pattern} on {threads} threads"
                );
                assert_eq!(out.count, out.files.len() as u64);
                assert!(!out.files.is_empty(), "{pattern}");
            }
        }
    }

    #[test]
    fn grep_does_not_read_a_protected_file_bind_mounted_into_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, secret) = (dir.path().join("tree"), dir.path().join("secret.txt"));
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("a.txt"), "needle public\n").unwrap();
        fs::write(tree.join("b.txt"), "placeholder\n").unwrap();
        fs::write(&secret, "needle SECRET\n").unwrap();
        let p = policy(&[&secret]);
        // One name, one link: nothing tells a walk that it may meet this file elsewhere.
        assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
        let _mounts = crate::testing::mount_table();
        let Some(_mount) = crate::testing::bind_mount(&secret, &tree.join("b.txt")) else {
            return;
        };
        assert_eq!(
            fs::read_to_string(tree.join("b.txt")).unwrap(),
            "needle SECRET\n"
        );
        let out = run_grep(&grep_args("needle", &tree), &p).unwrap();
        assert_eq!(out.match_count, 1, "{}", out.results);
        assert!(!out.results.contains("SECRET"), "{}", out.results);
        assert!(out.results.contains("needle public"), "{}", out.results);
    }

    #[test]
    fn a_cancelled_glob_stops_with_cancelled_on_every_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..600 {
            fs::write(dir.path().join(format!("f{i}.c")), "").unwrap();
        }
        for threads in [1, 2, 5] {
            let b = Budget::new(Duration::from_secs(30), Arc::new(AtomicBool::new(true)));
            let cfg = SearchConfig {
                threads,
                ..SearchConfig::default()
            };
            let e = glob(
                &ro(),
                &Glob {
                    pattern: "**/*.c".into(),
                    path: Some(dir.path().to_str().unwrap().into()),
                },
                &cfg,
                &policy(&[]),
                &b,
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::Cancelled, "{threads} threads");
        }
    }

    #[test]
    fn a_kernel_stream_is_searched_for_what_it_has_now() {
        if File::open("/proc/kmsg").is_err() {
            eprintln!("skipped: /proc/kmsg cannot be opened here");
            return;
        }
        let start = Instant::now();
        let out = run_grep(&grep_args("x", Path::new("/proc/kmsg")), &policy(&[])).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(out.match_count_exact, "{out:?}");
    }

    #[test]
    fn an_exhausted_budget_is_a_timeout() {
        let dir = tree();
        let b = Budget::new(Duration::from_secs(0), Arc::new(AtomicBool::new(false)));
        let e = grep(
            &ro(),
            &grep_args("needle", dir.path()),
            &SearchConfig::default(),
            &policy(&[]),
            &b,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::TimeoutError);
        assert_eq!(e.message, "grep timed out after 0s");
    }
}
