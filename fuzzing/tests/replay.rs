//! Replays the fuzz corpus without a fuzzer: every seed as built now, and every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, through the same target bodies
//! that `fuzz/` runs under libFuzzer. A crash the fuzzer found, saved under
//! `fuzz/regressions/<target>/`, fails this test until it is fixed.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs every file under `dir/<target>/` through its target; returns how many ran per target.
fn replay(dir: &Path) -> Vec<(String, usize)> {
    let mut counts = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return counts;
    };
    let mut targets: Vec<PathBuf> = entries.map(|e| e.expect("entry").path()).collect();
    targets.sort();
    for path in targets.into_iter().filter(|p| p.is_dir()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let target = mymcp_fuzzing::target(&name)
            .unwrap_or_else(|| panic!("{}: no fuzz target is called {name}", path.display()));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .expect("readable")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in &files {
            let bytes = std::fs::read(file).expect("readable");
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(
                outcome.is_ok(),
                "{} fails its target {name} (see the panic above)",
                file.display()
            );
        }
        counts.push((name, files.len()));
    }
    counts
}

#[test]
fn seeds_as_built_now_pass_every_target() {
    let seeds = mymcp_fuzzing::seeds::all();
    for (name, _) in mymcp_fuzzing::TARGETS {
        assert!(
            seeds.iter().any(|s| s.target == name),
            "target {name} has no seed"
        );
    }
    for seed in &seeds {
        let target = mymcp_fuzzing::target(seed.target).expect("a seed's target exists");
        target(&seed.bytes);
    }
}

#[test]
fn committed_corpus_passes_every_target() {
    let counts = replay(&fuzz_dir().join("corpus"));
    for (name, _) in mymcp_fuzzing::TARGETS {
        let n = counts
            .iter()
            .find(|(t, _)| t == name)
            .map_or(0, |(_, n)| *n);
        assert!(n > 0, "fuzz/corpus/{name} is missing or empty");
    }
}

#[test]
fn regressions_stay_fixed() {
    // Each file is an input that once crashed its target.
    replay(&fuzz_dir().join("regressions"));
}
