//! Checking a log: the key chain from the install key, every seal's signature, and the hash
//! chain of every line in the files present; optionally against the live head the executor
//! reports (which catches a cut-off tail that no seal covers yet).

use crate::keys::{parse_public, verify_hex};
use crate::log::log_files;
use crate::{line_hash, signed_part, GENESIS_PREV, SEALS_FILE};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub dir: PathBuf,
    /// The install key (epoch 0) as printed at installation. Without it, the key named in
    /// `audit.seals` is trusted.
    pub install_key: Option<String>,
    /// `(seq, hash)` of the last line the running executor wrote.
    pub head: Option<(u64, String)>,
}

/// A log that checks out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<PathBuf>,
    /// Lines checked (records and seals).
    pub lines: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Seals in `audit.seals` whose signatures and key chain check out.
    pub seals: u64,
    /// Sequence number of the newest seal, if any.
    pub last_seal_seq: Option<u64>,
    /// Lines after the newest seal (protected by the chain only, not yet by a signature).
    pub unsealed: u64,
    /// Whether older records were rotated away (the first file does not start at seq 1).
    pub starts_after_rotation: bool,
    pub install_key: String,
}

/// The first problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Broken(pub String);

fn broken(s: impl Into<String>) -> Broken {
    Broken(s.into())
}

/// Checks the log in `opts.dir`.
pub fn verify(opts: &VerifyOptions) -> Result<Report, Broken> {
    let mut report = Report::default();
    let seals = check_seals(opts, &mut report)?;

    let files = log_files(&opts.dir);
    if files.is_empty() && seals.is_empty() {
        return Err(broken(format!(
            "no audit log in {} (is MYMCP_AUDIT_ENABLED on?)",
            opts.dir.display()
        )));
    }
    // All lines first: a gap is told apart from a reordering by looking ahead.
    let mut all: Vec<(String, Vec<u8>)> = Vec::new();
    for path in &files {
        let bytes = fs::read(path).map_err(|e| broken(format!("{}: {e}", path.display())))?;
        if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
            let after = all
                .last()
                .and_then(|(_, l)| serde_json::from_slice::<serde_json::Value>(l).ok())
                .and_then(|v| v["seq"].as_u64())
                .unwrap_or(0);
            return Err(broken(format!(
                "{}: truncated: the line after seq {after} is cut off (no final newline)",
                path.display()
            )));
        }
        for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if !line.is_empty() {
                all.push((format!("{} line {}", path.display(), n + 1), line.to_vec()));
            }
        }
    }
    let mut parsed = Vec::with_capacity(all.len());
    for (at, line) in &all {
        let v: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| broken(format!("{at}: altered: not a JSON record ({e})")))?;
        let seq = v["seq"]
            .as_u64()
            .ok_or_else(|| broken(format!("{at}: altered: no seq")))?;
        let prev = v["prev"]
            .as_str()
            .ok_or_else(|| broken(format!("{at}: altered: no prev")))?
            .to_owned();
        parsed.push((seq, prev, v["type"] == "seal"));
    }
    let mut last: Option<(u64, String)> = None;
    for (i, ((at, line), (seq, prev, is_seal))) in all.iter().zip(&parsed).enumerate() {
        let seq = *seq;
        match &last {
            None => {
                report.first_seq = seq;
                if seq == 1 && prev != GENESIS_PREV {
                    return Err(broken(format!(
                        "{at}: altered: the first record does not start the chain"
                    )));
                }
                report.starts_after_rotation = seq != 1;
            }
            Some((last_seq, last_hash)) => {
                let want = last_seq + 1;
                if seq != want {
                    if seq <= *last_seq || parsed[i..].iter().any(|p| p.0 == want) {
                        return Err(broken(format!(
                            "{at}: reordered: seq {seq} follows seq {last_seq}"
                        )));
                    }
                    let missing = if seq == want + 1 {
                        format!("seq {want}")
                    } else {
                        format!("seq {want} to {}", seq - 1)
                    };
                    return Err(broken(format!(
                        "{at}: missing: {missing} (deleted) before seq {seq}"
                    )));
                }
                if prev != last_hash {
                    return Err(broken(format!(
                        "{at}: altered: record seq {last_seq} does not match the hash that seq {seq} holds of it"
                    )));
                }
            }
        }
        if serde_json::from_slice::<serde_json::Value>(line)
            .is_ok_and(|v| v["event"] == crate::log::TAMPERED_EVENT)
        {
            return Err(broken(format!(
                "{at}: truncated: the executor found the log cut while it was stopped (seq {seq} notes it)"
            )));
        }
        if *is_seal {
            match seals.get(&seq) {
                Some(copy) if copy.as_bytes() == line.as_slice() => {}
                Some(_) => {
                    return Err(broken(format!(
                        "{at}: altered: seal seq {seq} differs from its copy in {SEALS_FILE}"
                    )))
                }
                None => {
                    return Err(broken(format!(
                        "{at}: altered: seal seq {seq} is not in {SEALS_FILE}"
                    )))
                }
            }
        }
        report.lines += 1;
        last = Some((seq, line_hash(line)));
    }
    report.files = files;
    let (last_seq, last_hash) = last.unwrap_or((0, GENESIS_PREV.to_owned()));
    report.last_seq = last_seq;

    // Every seal at or after the first line present must be in the log.
    let mut sealed: Vec<u64> = seals.keys().copied().collect();
    sealed.sort_unstable();
    for seq in &sealed {
        if *seq >= report.first_seq && *seq > last_seq {
            return Err(broken(format!(
                "truncated: the log ends at seq {last_seq} but seal seq {seq} was written"
            )));
        }
    }
    report.last_seal_seq = seals.keys().max().copied();
    report.unsealed = last_seq.saturating_sub(report.last_seal_seq.unwrap_or(0));

    if let Some((head_seq, head_hash)) = &opts.head {
        if *head_seq > last_seq {
            return Err(broken(format!(
                "truncated: the log ends at seq {last_seq} but the executor has written up to seq {head_seq}"
            )));
        }
        if *head_seq == last_seq && *head_hash != last_hash {
            return Err(broken(format!(
                "altered: the last record (seq {last_seq}) is not the one the executor wrote"
            )));
        }
    }
    Ok(report)
}

/// Checks `audit.seals`: the install key, then each seal signed by the key the previous one
/// named. Returns the seal lines by sequence number.
fn check_seals(opts: &VerifyOptions, report: &mut Report) -> Result<HashMap<u64, String>, Broken> {
    let path = opts.dir.join(SEALS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(broken(format!(
                "{} is missing: the key chain cannot be checked",
                path.display()
            )))
        }
        Err(e) => return Err(broken(format!("{}: {e}", path.display()))),
    };
    let mut lines = text.lines();
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| broken(format!("{}: no install line", path.display())))?;
    let stored = header["key"].as_str().unwrap_or_default().to_owned();
    if header["type"] != "install" || parse_public(&stored).is_none() {
        return Err(broken(format!("{}: bad install line", path.display())));
    }
    if let Some(given) = &opts.install_key {
        if !given.trim().eq_ignore_ascii_case(&stored) {
            return Err(broken(format!(
                "{}: the install key is {stored}, not the key given: the key chain was replaced",
                path.display()
            )));
        }
    }
    report.install_key = stored.clone();
    let mut expected_key = stored;
    let mut last_seq = 0u64;
    let mut seals = HashMap::new();
    for (i, line) in lines.enumerate() {
        let expected_epoch = i as u64;
        let at = format!("{} line {}", path.display(), i + 2);
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| broken(format!("{at}: altered: not JSON ({e})")))?;
        let seq = v["seq"].as_u64().unwrap_or(0);
        if v["epoch"].as_u64() != Some(expected_epoch) {
            return Err(broken(format!(
                "{at}: seal seq {seq}: epoch {} where {expected_epoch} was expected",
                v["epoch"]
            )));
        }
        if v["key"].as_str() != Some(expected_key.as_str()) {
            return Err(broken(format!(
                "{at}: seal seq {seq} is signed by a key the previous seal did not name"
            )));
        }
        let key = parse_public(&expected_key)
            .ok_or_else(|| broken(format!("{at}: unusable public key")))?;
        let signed = signed_part(line).ok_or_else(|| broken(format!("{at}: no signature")))?;
        if !verify_hex(&key, signed.as_bytes(), v["sig"].as_str().unwrap_or("")) {
            return Err(broken(format!(
                "{at}: altered: the signature of seal seq {seq} does not verify"
            )));
        }
        if seq <= last_seq {
            return Err(broken(format!("{at}: reordered: seal seq {seq}")));
        }
        last_seq = seq;
        expected_key = v["next_key"].as_str().unwrap_or("").to_owned();
        seals.insert(seq, line.to_owned());
        report.seals += 1;
    }
    Ok(seals)
}

/// Lines of the log at `dir`, for tests and tools: (file, line text).
pub fn read_lines(dir: &Path) -> Vec<(PathBuf, String)> {
    log_files(dir)
        .into_iter()
        .flat_map(|p| {
            fs::read_to_string(&p)
                .unwrap_or_default()
                .lines()
                .map(|l| (p.clone(), l.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{AuditLog, LogConfig};
    use std::time::Duration;

    fn random(buf: &mut [u8]) -> std::io::Result<()> {
        use std::io::Read;
        fs::File::open("/dev/urandom")?.read_exact(buf)
    }

    fn config(dir: &Path) -> LogConfig {
        LogConfig {
            dir: dir.join("log"),
            key_file: dir.join("state/audit.key"),
            max_bytes: 1 << 20,
            backup_count: 3,
            seal_records: 4,
            seal_interval: Duration::from_secs(3600),
        }
    }

    fn write(cfg: LogConfig, n: usize) -> (AuditLog, String) {
        let opened = AuditLog::open(cfg, random).unwrap();
        let key = opened.new_install_key.clone().unwrap_or_default();
        let mut log = opened.log;
        for i in 0..n {
            log.append(&format!("{{\"tool\":\"t\",\"i\":{i}}}"))
                .unwrap();
        }
        (log, key)
    }

    fn opts(dir: &Path, key: &str) -> VerifyOptions {
        VerifyOptions {
            dir: dir.join("log"),
            install_key: Some(key.to_owned()),
            head: None,
        }
    }

    #[test]
    fn a_clean_log_verifies_and_resumes_after_reopening() {
        let d = tempfile::tempdir().unwrap();
        let (log, key) = write(config(d.path()), 10);
        let head = log.head();
        drop(log);
        // 10 records + 2 seals (after 4 records each).
        let r = verify(&opts(d.path(), &key)).unwrap();
        assert_eq!((r.lines, r.seals, r.last_seq), (12, 2, 12));
        assert_eq!(r.unsealed, 2);
        let (mut log, again) = write(config(d.path()), 3);
        assert!(again.is_empty(), "the key chain is not created twice");
        log.seal_pending().unwrap();
        let mut o = opts(d.path(), &key);
        o.head = Some(log.head());
        let r = verify(&o).unwrap();
        assert_eq!(r.first_seq, 1);
        assert!(log.head().0 > head.0);
        assert_eq!(r.unsealed, 0);
    }

    #[test]
    fn edits_deletions_reordering_and_cut_tails_are_found() {
        let d = tempfile::tempdir().unwrap();
        let (log, key) = write(config(d.path()), 9);
        let head = log.head();
        drop(log);
        let path = d.path().join("log/audit.log");
        let original = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();
        let check = |text: String, want: &str| {
            fs::write(&path, text).unwrap();
            let mut o = opts(d.path(), &key);
            o.head = Some(head.clone());
            let e = verify(&o).unwrap_err();
            assert!(e.0.contains(want), "{want}: {e}");
        };
        // Edited record.
        check(
            original.replace("\"i\":2", "\"i\":3"),
            "altered: record seq 3",
        );
        // Deleted record.
        let mut del = lines.clone();
        del.remove(3);
        check(del.join("\n") + "\n", "missing: seq 4");
        // Reordered records.
        let mut re = lines.clone();
        re.swap(1, 2);
        check(re.join("\n") + "\n", "reordered");
        // Cut in the middle of the last line.
        check(
            original[..original.len() - 10].to_owned(),
            "truncated: the line after seq",
        );
        // Whole last lines removed: the executor's head says more was written.
        check(lines[..8].join("\n") + "\n", "truncated");
        // Removed back past a seal: audit.seals knows.
        let mut o = opts(d.path(), &key);
        fs::write(&path, lines[..3].join("\n") + "\n").unwrap();
        o.head = None;
        assert!(verify(&o).unwrap_err().0.contains("seal seq 5 was written"));
        // Last line edited, caught only by the live head.
        let mut last = lines.clone();
        let l = last.len() - 1;
        let edited = last[l].replace("\"i\":8", "\"i\":0");
        last[l] = &edited;
        check(last.join("\n") + "\n", "altered: the last record");
        // A seal re-signed with another key fails.
        let other = "a".repeat(64);
        fs::write(&path, &original).unwrap();
        let mut o = opts(d.path(), &other);
        o.head = Some(head.clone());
        assert!(verify(&o).unwrap_err().0.contains("not the key given"));
        // And the original passes.
        let mut o = opts(d.path(), &key);
        o.head = Some(head);
        verify(&o).unwrap();
    }

    #[test]
    fn rotation_keeps_the_chain_across_files() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(d.path());
        cfg.max_bytes = 2000;
        cfg.backup_count = 2;
        let (log, key) = write(cfg, 40);
        let mut o = opts(d.path(), &key);
        o.head = Some(log.head());
        let r = verify(&o).unwrap();
        assert_eq!(r.files.len(), 3, "{:?}", r.files);
        assert!(r.starts_after_rotation);
        assert!(r.first_seq > 1);
        for f in &r.files {
            assert!(fs::metadata(f).unwrap().len() < 2000);
        }
        // Deleting a middle file is a gap.
        fs::remove_file(d.path().join("log/audit.log.1")).unwrap();
        assert!(verify(&o).unwrap_err().0.contains("missing"));
    }

    #[test]
    fn time_based_seals_and_a_log_cut_while_stopped() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(d.path());
        cfg.seal_records = 1000;
        cfg.seal_interval = Duration::from_millis(0);
        let (mut log, key) = write(cfg.clone(), 3);
        assert!(log.seal_if_due().unwrap(), "the interval has passed");
        assert!(!log.seal_if_due().unwrap(), "nothing new to seal");
        log.append(r#"{"tool":"t","i":99}"#).unwrap();
        log.append(r#"{"tool":"t","i":100}"#).unwrap();
        log.seal_pending().unwrap();
        log.append(r#"{"tool":"t","i":101}"#).unwrap();
        log.seal_pending().unwrap();
        drop(log);
        verify(&opts(d.path(), &key)).unwrap();
        // Cut the last record and the last seal while "stopped": the restart notices.
        let path = d.path().join("log/audit.log");
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        fs::write(&path, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
        let seals = d.path().join("log/audit.seals");
        let st = fs::read_to_string(&seals).unwrap();
        let sl: Vec<&str> = st.lines().collect();
        fs::write(&seals, sl[..sl.len() - 1].join("\n") + "\n").unwrap();
        let opened = AuditLog::open(cfg, random).unwrap();
        assert!(opened.log.tampered_at_start());
        drop(opened);
        let e = verify(&opts(d.path(), &key)).unwrap_err();
        assert!(e.0.contains("cut while it was stopped"), "{e}");
    }

    #[test]
    fn a_forged_seal_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (log, key) = write(config(d.path()), 4);
        drop(log);
        let seals = d.path().join("log/audit.seals");
        let text = fs::read_to_string(&seals).unwrap();
        let forged = text.replace("\"records\":4", "\"records\":5");
        fs::write(&seals, forged).unwrap();
        assert!(verify(&opts(d.path(), &key))
            .unwrap_err()
            .0
            .contains("does not verify"));
    }
}
