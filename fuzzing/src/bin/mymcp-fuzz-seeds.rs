//! Writes the seed corpus: `mymcp-fuzz-seeds DIR` creates `DIR/<target>/seed-<name>` for every
//! seed of [`mymcp_fuzzing::seeds::all`] (replacing older versions of the same seeds; other
//! files, such as inputs the fuzzer found, are left alone).

#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: mymcp-fuzz-seeds DIR   (normally fuzz/corpus)");
        std::process::exit(2);
    };
    let seeds = mymcp_fuzzing::seeds::all();
    for seed in &seeds {
        let target = dir.join(seed.target);
        std::fs::create_dir_all(&target)?;
        std::fs::write(target.join(format!("seed-{}", seed.name)), &seed.bytes)?;
    }
    println!("{} seeds written under {}", seeds.len(), dir.display());
    Ok(())
}
