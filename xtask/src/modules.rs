//! No import circles between the modules of a crate: a lower module never needs a higher one.
//!
//! Each top-level module of a crate (`src/<name>.rs`, or `src/<name>/` with what lies below it)
//! is a node; a `crate::<name>` path anywhere in its code — a `use`, a qualified call, a group
//! `use crate::{a, b::C}` — is an edge to module `<name>`. Comments and string literals are
//! left out, so a doc link to a higher module (`[`crate::dispatch`]`) is no edge. A strongly
//! connected set of more than one module is a circle, reported with one loop through it.
//! `lib.rs` and `main.rs` declare the modules and are not nodes; a `crate::Name` that is not a
//! module (a re-export at the crate root) is no edge either.
//!
//! `cargo xtask check-modules` prints the circles and fails when there is one; the test
//! `tests::no_crate_of_the_workspace_has_an_import_circle` runs it in `cargo test`.

use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules of one crate and what each one uses.
#[derive(Debug)]
pub struct Graph {
    /// The crate, as its directory is named (`crates/executor`).
    pub krate: String,
    /// Module → the other modules of the crate it names.
    pub uses: BTreeMap<String, BTreeSet<String>>,
}

/// The source directories of every workspace member: `crates/*/src`, `tests/src`,
/// `fuzzing/src`, `xtask/src`.
pub fn source_dirs(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut dirs = Vec::new();
    let crates = root.join("crates");
    for entry in std::fs::read_dir(&crates).with_context(|| crates.display().to_string())? {
        let dir = entry?.path();
        if dir.join("src").is_dir() {
            let name = format!(
                "crates/{}",
                dir.file_name().unwrap_or_default().to_string_lossy()
            );
            dirs.push((name, dir.join("src")));
        }
    }
    for other in ["tests", "fuzzing", "xtask"] {
        if root.join(other).join("src").is_dir() {
            dirs.push((other.to_owned(), root.join(other).join("src")));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Reads the modules of the crate whose sources are in `src`.
pub fn graph(krate: &str, src: &Path) -> anyhow::Result<Graph> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).with_context(|| src.display().to_string())? {
        let path = entry?.path();
        let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        if path.is_dir() {
            // `src/bin/*` are crates of their own.
            if stem != "bin" {
                files.entry(stem).or_default().extend(rust_files(&path)?);
            }
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" && stem != "main" {
            files.entry(stem).or_default().push(path);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut uses = BTreeMap::new();
    for (module, paths) in &files {
        let mut named = BTreeSet::new();
        for path in paths {
            let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            named.extend(
                crate_paths(&code_only(&text))
                    .into_iter()
                    .filter(|m| m != module && modules.contains(m)),
            );
        }
        uses.insert(module.clone(), named);
    }
    Ok(Graph {
        krate: krate.to_owned(),
        uses,
    })
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// `text` with comments and the contents of string and character literals blanked out (each
/// replaced by a space), so that only code is searched.
pub fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            // A raw string: r"…", r#"…"#, br#"…"# (the `b` was copied as code).
            'r' if (i == 0
                || !ident(c[i - 1])
                || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
                && matches!(c.get(i + 1), Some('"' | '#')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push(' ');
                i = j;
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(' ');
            }
            '\'' => {
                // A character literal ('x', '\n', '\u{..}'), else a lifetime or label.
                if c.get(i + 1) == Some(&'\\') {
                    let mut j = i + 2;
                    while j < c.len() && c[j] != '\'' {
                        j += 1;
                    }
                    i = j + 1;
                    out.push(' ');
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                    out.push(' ');
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

/// The first segment of every `crate::…` path in `code`, groups included:
/// `use crate::{a, b::{C, D}}` names `a` and `b`.
pub fn crate_paths(code: &str) -> BTreeSet<String> {
    let c: Vec<char> = code.chars().collect();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut found = BTreeSet::new();
    let word: Vec<char> = "crate".chars().collect();
    let mut i = 0;
    while i + word.len() < c.len() {
        let starts = c[i..].starts_with(&word) && (i == 0 || !ident(c[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = skip_space(&c, i + word.len());
        if !(c.get(j) == Some(&':') && c.get(j + 1) == Some(&':')) {
            i += word.len();
            continue;
        }
        j = skip_space(&c, j + 2);
        if c.get(j) == Some(&'{') {
            // Each item of the group at depth one starts with the module it names.
            let mut depth = 0;
            let mut at_item = true;
            while j < c.len() {
                match c[j] {
                    '{' => {
                        depth += 1;
                        at_item = depth == 1;
                        j += 1;
                    }
                    '}' => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' => {
                        at_item = depth == 1;
                        j += 1;
                    }
                    ch if ident(ch) && at_item => {
                        let start = j;
                        while j < c.len() && ident(c[j]) {
                            j += 1;
                        }
                        found.insert(c[start..j].iter().collect());
                        at_item = false;
                    }
                    _ => j += 1,
                }
            }
        } else {
            let start = j;
            while j < c.len() && ident(c[j]) {
                j += 1;
            }
            if j > start {
                found.insert(c[start..j].iter().collect());
            }
        }
        i = j.max(i + 1);
    }
    found.remove("self");
    found
}

fn skip_space(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The circles of `g`: each strongly connected set of more than one module, as one loop
/// through all of it that starts and ends at its first module (`a → b → c → a`).
pub fn circles(g: &Graph) -> Vec<Vec<String>> {
    // Tarjan's algorithm, recursive: a crate has a few dozen modules.
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        sets: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.g.uses.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.push(w);
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort_unstable();
                s.sets.push(set);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        sets: Vec::new(),
    };
    for v in g.uses.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    let mut sets = s.sets;
    sets.sort();
    sets.iter().map(|set| one_loop(g, set)).collect()
}

/// The shortest loop from the set's first module back to it, staying inside the set,
/// followed by the set's other modules if the loop misses some (`a → b → a (+ c)`).
fn one_loop(g: &Graph, set: &[&str]) -> Vec<String> {
    let first = set[0];
    let inside: BTreeSet<&str> = set.iter().copied().collect();
    // Breadth first from `first`; the first edge back to it closes the loop.
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([first]);
    let mut last = first;
    'search: while let Some(v) = queue.pop_front() {
        for w in g.uses.get(v).into_iter().flatten() {
            let w = w.as_str();
            if w == first {
                last = v;
                break 'search;
            }
            if inside.contains(w) && !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut walk = vec![first.to_owned()];
    let mut at = last;
    while at != first {
        walk.push(at.to_owned());
        at = prev[at];
    }
    walk.push(first.to_owned());
    walk.reverse();
    let missed: Vec<&str> = set
        .iter()
        .copied()
        .filter(|m| !walk.iter().any(|w| w == m))
        .collect();
    if !missed.is_empty() {
        walk.push(format!("(+ {})", missed.join(", ")));
    }
    walk
}

/// Every circle of every crate of the workspace at `root`, as `crate: a → b → a` lines.
pub fn check(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for (krate, src) in source_dirs(root)? {
        let g = graph(&krate, &src)?;
        for circle in circles(&g) {
            found.push(format!("{}: {}", g.krate, circle.join(" → ")).replace(" → (+", " (+"));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_of(edges: &[(&str, &[&str])]) -> Graph {
        Graph {
            krate: "k".into(),
            uses: edges
                .iter()
                .map(|(m, to)| (m.to_string(), to.iter().map(|t| t.to_string()).collect()))
                .collect(),
        }
    }

    #[test]
    fn no_crate_of_the_workspace_has_an_import_circle() {
        let circles = check(&crate::root()).unwrap();
        assert!(
            circles.is_empty(),
            "modules that import one another in a circle (a lower module must not need a higher one; move what they share down):\n{}",
            circles.join("\n")
        );
    }

    #[test]
    fn every_member_with_sources_is_checked() {
        let dirs: Vec<String> = source_dirs(&crate::root())
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in [
            "crates/executor",
            "crates/frontend",
            "crates/recorder",
            "xtask",
        ] {
            assert!(dirs.iter().any(|d| d == k), "{k} in {dirs:?}");
        }
        let executor = graph(
            "crates/executor",
            &crate::root().join("crates/executor/src"),
        )
        .unwrap();
        assert!(
            executor.uses.contains_key("dispatch"),
            "{:?}",
            executor.uses
        );
        assert!(executor.uses["dispatch"].contains("paths"));
    }

    #[test]
    fn paths_in_code_count_and_those_in_comments_and_strings_do_not() {
        let code = code_only(
            r####"
            //! See [`crate::dispatch`].
            use crate::{audit::{self, Audit}, auth, paths::Policy};
            use crate :: limits;
            /* crate::nested /* crate::deeper */ crate::still */
            fn f<'a>(x: &'a str) -> char {
                let _ = "crate::in_a_string \" crate::escaped";
                let _ = r#"crate::raw "quoted""#;
                let _ = br"crate::raw_bytes";
                crate::metrics::count();
                let _: pub(crate) = ();
                '"'
            }
            fn g() { crate::server::on_blocking_pool(); $crate::macros(); }
            "####,
        );
        let found: Vec<String> = crate_paths(&code).into_iter().collect();
        assert_eq!(
            found,
            ["audit", "auth", "limits", "macros", "metrics", "paths", "server"]
        );
    }

    #[test]
    fn a_circle_is_reported_once_with_a_loop_through_it() {
        let g = graph_of(&[
            ("config", &["transfer", "paths"]),
            ("dispatch", &["config", "paths"]),
            ("transfer", &["dispatch", "paths"]),
            ("paths", &[]),
            ("a", &["b"]),
            ("b", &["a"]),
            ("c", &["a"]),
        ]);
        assert_eq!(
            circles(&g),
            [
                vec!["a", "b", "a"],
                vec!["config", "transfer", "dispatch", "config"]
            ]
        );
        let layered = graph_of(&[("dispatch", &["config"]), ("config", &["paths"])]);
        assert!(circles(&layered).is_empty());
    }
}
