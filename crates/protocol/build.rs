//! Derives a build id from the protocol sources: two binaries speak to each other only when
//! they were built from the same wire types (postcard is not self-describing).
use std::hash::{DefaultHasher, Hasher};
use std::path::Path;

fn main() {
    let dir = Path::new("src");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("protocol/src")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut h = DefaultHasher::new();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        h.write(f.file_name().unwrap().as_encoded_bytes());
        h.write(&std::fs::read(f).expect("read source"));
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rustc-env=MYMCP_PROTOCOL_HASH={:016x}", h.finish());
}
