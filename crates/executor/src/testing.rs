//! Helpers shared by the unit tests.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Held by the tests that mount and those that expect a resolution of the protected set to be
/// reused: any mount in the process's namespace makes the next call resolve anew.
static MOUNT_TABLE: Mutex<()> = Mutex::new(());

pub(crate) fn mount_table() -> MutexGuard<'static, ()> {
    MOUNT_TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bind mount, unmounted (lazily) on drop.
pub(crate) struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = mymcp_sys::testing::unmount(&self.0);
    }
}

/// `mount --bind from to`; `None` (and a line on stderr saying the test is skipped) where this
/// process may not mount: not root, or a container without the capability.
pub(crate) fn bind_mount(from: &Path, to: &Path) -> Option<BindMount> {
    if let Err(e) = mymcp_sys::testing::bind_mount(from, to) {
        eprintln!("skipped: cannot bind-mount here ({e})");
        return None;
    }
    Some(BindMount(to.to_owned()))
}

/// Makes a FIFO at `p` (mode 0600).
pub(crate) fn mkfifo(p: &Path) {
    mymcp_sys::testing::mkfifo(p, 0o600).unwrap_or_else(|e| panic!("mkfifo {p:?}: {e}"));
}

/// A small deterministic generator (xorshift64*), so that a generated tree that fails a test
/// can be made again from its seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }

    /// True once in `n` times.
    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// A generated tree for the differential tests of the fast paths: directories (some hidden)
/// with text files (each says `needle <its name>`), hidden files, FIFOs, symlinks to files and
/// directories inside and outside it — protected or not, dangling, a loop — hard links to
/// protected and plain files, protected entries inside it by path, and, where this process
/// may mount, bind mounts of a protected directory, a protected file and plain ones into it.
/// `outside` holds what the links and mounts lead to.
pub(crate) struct GeneratedTree {
    /// Removed with everything in it when the tree is dropped.
    _dir: tempfile::TempDir,
    /// The tree's root (no symlink on the way to it).
    pub(crate) root: PathBuf,
    /// The protected entries: `outside/prot`, `outside/prot-file` and a few inside the tree.
    pub(crate) protected: Vec<PathBuf>,
    /// Every path in the tree (not below a bind mount), for tests that try each.
    pub(crate) paths: Vec<PathBuf>,
    /// Unmounted when the tree is dropped (before its directory goes).
    pub(crate) mounts: Vec<BindMount>,
}

impl GeneratedTree {
    /// A tree from `seed`. `mount`: make bind mounts too (callers hold [`mount_table`]).
    pub(crate) fn new(seed: u64, mount: bool) -> GeneratedTree {
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let (root, outside) = (base.join("tree"), base.join("outside"));
        for d in ["prot/sub", "plain/sub", "other"] {
            std::fs::create_dir_all(outside.join(d)).unwrap();
        }
        for f in [
            "prot/secret.c",
            "prot/sub/deep.c",
            "plain/open.c",
            "plain/sub/x.c",
        ] {
            std::fs::write(outside.join(f), "needle outside\n").unwrap();
        }
        std::fs::write(outside.join("prot-file.c"), "needle protected file\n").unwrap();
        std::fs::write(outside.join("plain-file.c"), "needle plain file\n").unwrap();
        let mut protected = vec![outside.join("prot"), outside.join("prot-file.c")];
        let mut paths = Vec::new();
        let mut dirs = vec![root.clone()];
        std::fs::create_dir(&root).unwrap();
        let mut i = 0;
        while i < dirs.len() {
            let d = dirs[i].clone();
            let depth = d.strip_prefix(&root).unwrap().components().count();
            i += 1;
            if depth < 3 {
                for _ in 0..1 + rng.below(3) {
                    let name = ["a", "b", "src", ".h", "x y", "lib"][rng.below(6)];
                    let sub = d.join(format!("{name}{}", rng.below(10)));
                    if std::fs::create_dir(&sub).is_ok() {
                        dirs.push(sub.clone());
                        paths.push(sub);
                    }
                }
            }
            for n in 0..2 + rng.below(4) {
                let name = ["f", ".hid", "g"][rng.below(3)];
                let ext = [".c", ".txt", ".h"][rng.below(3)];
                let f = d.join(format!("{name}{n}{ext}"));
                std::fs::write(&f, format!("needle {}\n", f.display())).unwrap();
                paths.push(f);
            }
            let special = d.join(format!("s{}.c", rng.below(100)));
            if special.exists() {
                continue;
            }
            match rng.below(13) {
                0 => mkfifo(&special),
                1 => std::os::unix::fs::symlink(outside.join("prot-file.c"), &special).unwrap(),
                2 => std::os::unix::fs::symlink(outside.join("prot"), &special).unwrap(),
                3 => std::os::unix::fs::symlink(outside.join("prot/secret.c"), &special).unwrap(),
                4 => std::os::unix::fs::symlink(outside.join("plain"), &special).unwrap(),
                5 => std::os::unix::fs::symlink(outside.join("plain-file.c"), &special).unwrap(),
                6 => std::os::unix::fs::symlink("/nonexistent/x", &special).unwrap(),
                7 => std::os::unix::fs::symlink(".", &special).unwrap(),
                8 if !seed.is_multiple_of(3) => {
                    std::fs::hard_link(outside.join("prot-file.c"), &special).unwrap()
                }
                9 if !seed.is_multiple_of(3) => {
                    std::fs::hard_link(outside.join("plain-file.c"), &special).unwrap()
                }
                10 => std::os::unix::fs::symlink(outside.join("prot/missing.c"), &special).unwrap(),
                // Into the bind mount of the protected directory made below (when it is).
                11 => std::os::unix::fs::symlink(root.join("mnt-prot/secret.c"), &special).unwrap(),
                _ => continue,
            }
            paths.push(special);
        }
        // Some of the tree is protected by path: a directory or two and a few files.
        for p in paths.clone() {
            if rng.one_in(12) && std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_symlink()) {
                protected.push(p);
            }
        }
        let mut mounts = Vec::new();
        if mount {
            let at = |name: &str| root.join(name);
            let points = [
                (outside.join("prot"), at("mnt-prot"), true),
                (outside.join("plain"), at("mnt-plain"), true),
                (outside.join("prot-file.c"), at("bound-prot.c"), false),
                (outside.join("plain-file.c"), at("bound-plain.c"), false),
            ];
            for (from, to, is_dir) in points {
                if is_dir {
                    std::fs::create_dir(&to).unwrap();
                } else {
                    std::fs::write(&to, "needle placeholder\n").unwrap();
                }
                paths.push(to.clone());
                match bind_mount(&from, &to) {
                    Some(m) => mounts.push(m),
                    None => break,
                }
            }
            // Inside the mounts: only through them.
            paths.push(at("mnt-prot").join("secret.c"));
            paths.push(at("mnt-plain").join("open.c"));
        }
        paths.push(root.join("missing.c"));
        paths.push(outside.join("prot/sub/deep.c"));
        GeneratedTree {
            _dir: dir,
            root,
            protected,
            paths,
            mounts,
        }
    }
}

impl Drop for GeneratedTree {
    fn drop(&mut self) {
        // Unmount first: removing the directory must not walk into what is mounted.
        self.mounts.clear();
    }
}
