//! Writing the log: chain, rotation, seals.
//!
//! Each record is written with one `write(2)` on an `O_APPEND` descriptor and counts as written
//! only when that call succeeded in full; a short or failed write is cut off again
//! (`ftruncate` to the previous size), so the file never keeps half a record and the chain
//! does not advance. There is no fsync per record (that would cost milliseconds per tool
//! call); seals and rotations fsync.

use crate::keys::{write_atomic, EpochKey};
use crate::{chain_line, line_hash, now_rfc3339, GENESIS_PREV, LOG_FILE, SEALS_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where and how the log is written.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `MYMCP_AUDIT_LOG_DIR`.
    pub dir: PathBuf,
    /// The file holding the current epoch's secret key (in the state directory).
    pub key_file: PathBuf,
    /// `MYMCP_AUDIT_MAX_BYTES`: roll over before a record would take the file to this size.
    pub max_bytes: u64,
    /// `MYMCP_AUDIT_BACKUP_COUNT`: rolled-over files kept (0: none).
    pub backup_count: u32,
    /// Seal after this many records since the last seal.
    pub seal_records: u64,
    /// Seal at least this often while there are unsealed records.
    pub seal_interval: Duration,
}

/// The last seal written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealInfo {
    pub seq: u64,
    pub epoch: u64,
    pub ts: String,
}

/// An open audit log. Not thread-safe by itself: keep it behind a mutex.
#[derive(Debug)]
pub struct AuditLog {
    cfg: LogConfig,
    file: File,
    size: u64,
    seq: u64,
    prev: String,
    key: EpochKey,
    random: fn(&mut [u8]) -> io::Result<()>,
    unsealed: u64,
    last_seal_at: Instant,
    last_seal: Option<SealInfo>,
    tampered_at_start: bool,
}

/// `event` of the notice written when start-up finds the log shorter than it was left.
pub const TAMPERED_EVENT: &str = "log_cut_while_stopped";

fn head_file(cfg: &LogConfig) -> PathBuf {
    cfg.key_file.with_file_name("head")
}

fn read_head(path: &Path) -> Option<(u64, String)> {
    let text = fs::read_to_string(path).ok()?;
    let (seq, hash) = text.trim().split_once(' ')?;
    Some((seq.parse().ok()?, hash.to_owned()))
}

/// What opening found.
#[derive(Debug)]
pub struct Opened {
    pub log: AuditLog,
    /// The public key of epoch 0 when this open created the log's key chain: print it once.
    pub new_install_key: Option<String>,
}

impl AuditLog {
    /// Opens (or creates) the log in `cfg.dir`, continuing the chain from the last line on
    /// disk. `random` fills buffers from a CSPRNG (new keys).
    pub fn open(cfg: LogConfig, random: fn(&mut [u8]) -> io::Result<()>) -> io::Result<Opened> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&cfg.dir)?;
        if let Some(parent) = cfg.key_file.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let seals_path = cfg.dir.join(SEALS_FILE);
        let mut new_install_key = None;
        let key = match EpochKey::load(&cfg.key_file)? {
            Some(k) => k,
            None => {
                let mut secret = [0u8; 32];
                random(&mut secret)?;
                let k = EpochKey::from_random(0, secret);
                secret.fill(0);
                k.store(&cfg.key_file)?;
                // A new key chain: its first line in audit.seals names the install key.
                let header = format!(
                    "{{\"ts\":\"{}\",\"type\":\"install\",\"key\":\"{}\"}}\n",
                    now_rfc3339(),
                    k.public_hex()
                );
                append_synced(&seals_path, header.as_bytes())?;
                new_install_key = Some(k.public_hex());
                k
            }
        };
        let (seq, prev) = recover_head(&cfg.dir)?;
        let path = cfg.dir.join(LOG_FILE);
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        let last_seal = last_seal(&seals_path);
        let head_path = head_file(&cfg);
        let stored_head = read_head(&head_path);
        let mut opened = Opened {
            log: AuditLog {
                cfg,
                file,
                size,
                seq,
                prev,
                key,
                random,
                unsealed: 0,
                last_seal_at: Instant::now(),
                last_seal,
                tampered_at_start: false,
            },
            new_install_key,
        };
        // The head stored at the last seal or shutdown must still be in the log: if the log
        // now ends earlier, or differently, it was cut or edited while the executor was away.
        // Say so in the log itself, where `verify` will find it.
        if let Some((want_seq, want_hash)) = stored_head {
            let (seq, hash) = opened.log.head();
            if seq < want_seq || (seq == want_seq && hash != want_hash) {
                let notice = format!(
                    "{{\"ts\":\"{}\",\"type\":\"notice\",\"event\":\"{TAMPERED_EVENT}\",\"message\":\"the log ended at seq {seq} at start-up but seq {want_seq} had been written\"}}",
                    now_rfc3339()
                );
                opened.log.append(&notice)?;
                opened.log.tampered_at_start = true;
            }
        }
        Ok(opened)
    }

    /// Whether start-up found the log cut or edited since the executor last stopped.
    pub fn tampered_at_start(&self) -> bool {
        self.tampered_at_start
    }

    /// Records the head in the state directory (at seals and shutdown).
    fn store_head(&self) -> io::Result<()> {
        store_atomic(
            &head_file(&self.cfg),
            format!("{} {}\n", self.seq, self.prev).as_bytes(),
        )
    }

    /// The sequence number and hash of the last line written.
    pub fn head(&self) -> (u64, String) {
        (self.seq, self.prev.clone())
    }

    pub fn last_seal(&self) -> Option<&SealInfo> {
        self.last_seal.as_ref()
    }

    pub fn epoch(&self) -> u64 {
        self.key.epoch
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Appends one record (a serialized JSON object; `seq` and `prev` are added). Returns its
    /// sequence number. On error nothing was written and the chain is unchanged.
    pub fn append(&mut self, body: &str) -> io::Result<u64> {
        let seq = self.write_line(body)?;
        self.unsealed += 1;
        if self.unsealed >= self.cfg.seal_records {
            self.seal()?;
        }
        Ok(seq)
    }

    /// Whether the next [`AuditLog::append`] will also seal (and so fsync and store a key).
    pub fn seals_on_next_append(&self) -> bool {
        self.unsealed + 1 >= self.cfg.seal_records
    }

    /// Seals if records are waiting and the interval has passed.
    pub fn seal_if_due(&mut self) -> io::Result<bool> {
        if self.unsealed > 0 && self.last_seal_at.elapsed() >= self.cfg.seal_interval {
            self.seal()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Seals now if any record is unsealed, and records the head (at shutdown).
    pub fn seal_pending(&mut self) -> io::Result<()> {
        if self.unsealed > 0 {
            self.seal()?;
        }
        self.store_head()
    }

    /// Writes a seal line signed by the current epoch's key, naming the next epoch's public
    /// key; then stores the next key in place of the current one, whose secret is dropped.
    pub fn seal(&mut self) -> io::Result<()> {
        let mut secret = [0u8; 32];
        (self.random)(&mut secret)?;
        let next = EpochKey::from_random(self.key.epoch + 1, secret);
        secret.fill(0);
        let ts = now_rfc3339();
        let unsigned = chain_line(
            &format!(
                "{{\"ts\":\"{ts}\",\"type\":\"seal\",\"epoch\":{},\"records\":{},\"key\":\"{}\",\"next_key\":\"{}\"}}",
                self.key.epoch,
                self.unsealed,
                self.key.public_hex(),
                next.public_hex()
            ),
            self.seq + 1,
            &self.prev,
        );
        let sig = self.key.sign_hex(unsigned.as_bytes());
        let line = format!(
            "{},\"sig\":\"{sig}\"}}",
            unsigned.strip_suffix('}').unwrap_or(&unsigned)
        );
        // The line already carries seq and prev: write it as is.
        self.write_raw(&line)?;
        self.file.sync_data()?;
        append_synced(
            &self.cfg.dir.join(SEALS_FILE),
            format!("{line}\n").as_bytes(),
        )?;
        next.store(&self.cfg.key_file)?;
        self.last_seal = Some(SealInfo {
            seq: self.seq,
            epoch: self.key.epoch,
            ts,
        });
        self.key = next;
        self.unsealed = 0;
        self.last_seal_at = Instant::now();
        self.store_head()
    }

    fn write_line(&mut self, body: &str) -> io::Result<u64> {
        let line = chain_line(body, self.seq + 1, &self.prev);
        self.write_raw(&line)?;
        Ok(self.seq)
    }

    /// Writes a complete line (with seq/prev already in it) and advances the chain.
    fn write_raw(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len >= self.cfg.max_bytes {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        match self.file.write(&buf) {
            Ok(n) if n == buf.len() => {}
            other => {
                // Never leave part of a record behind.
                let _ = self.file.set_len(self.size);
                return Err(match other {
                    Ok(n) => io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write ({n} of {} bytes)", buf.len()),
                    ),
                    Err(e) => e,
                });
            }
        }
        self.size += len;
        self.seq += 1;
        self.prev = line_hash(line.as_bytes());
        Ok(())
    }

    /// `audit.log` → `audit.log.1` → … → `audit.log.N` (the oldest is dropped).
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let dir = &self.cfg.dir;
        let base = dir.join(LOG_FILE);
        let n = self.cfg.backup_count;
        if n == 0 {
            fs::remove_file(&base)?;
        } else {
            for i in (1..n).rev() {
                let from = dir.join(format!("{LOG_FILE}.{i}"));
                if from.exists() {
                    fs::rename(&from, dir.join(format!("{LOG_FILE}.{}", i + 1)))?;
                }
            }
            fs::rename(&base, dir.join(format!("{LOG_FILE}.1")))?;
        }
        File::open(dir)?.sync_all()?;
        self.file = open_append(&base)?;
        self.size = 0;
        Ok(())
    }
}

/// Mode of the log files: the directory's group may read them. That group is root's unless
/// the directory is set-group-id to another one (`/var/log/mymcp` is `2750 root:mymcp-recorder`
/// when the recorder is installed, so that it can follow the log without any privilege).
pub const LOG_FILE_MODE: u32 = 0o640;

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_FILE_MODE)
        .custom_flags(0o2000000 /* O_CLOEXEC */)
        .open(path)?;
    // The umask (0077 under systemd) would take the group's read bit away.
    let meta = f.metadata()?;
    if meta.permissions().mode() & 0o777 != LOG_FILE_MODE {
        f.set_permissions(std::fs::Permissions::from_mode(LOG_FILE_MODE))?;
    }
    // A file from before the directory was given to the recorder's group joins it.
    if let Some(dir) = path.parent().and_then(|d| fs::metadata(d).ok()) {
        use std::os::unix::fs::MetadataExt;
        if dir.mode() & 0o2000 != 0 && meta.gid() != dir.gid() && meta.uid() == dir.uid() {
            // Best effort: only root may always do this, and the log works without it.
            let _ = std::os::unix::fs::fchown(&f, None, Some(dir.gid()));
        }
    }
    Ok(f)
}

fn append_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = open_append(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

/// The log files present, oldest first.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut numbered: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(&format!("{LOG_FILE}."))?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    numbered.sort_by_key(|n| std::cmp::Reverse(n.0));
    let mut files: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(LOG_FILE);
    if current.exists() {
        files.push(current);
    }
    files
}

/// The sequence number and hash of the last complete line on disk, or `(0, GENESIS_PREV)`.
/// A final line without its newline (a crash in the middle of a write) is cut off.
fn recover_head(dir: &Path) -> io::Result<(u64, String)> {
    for path in log_files(dir).iter().rev() {
        let mut f = OpenOptions::new().read(true).write(true).open(path)?;
        let len = f.metadata()?.len();
        if len == 0 {
            continue;
        }
        // Records are capped well below this; read the tail only.
        let start = len.saturating_sub(1 << 20);
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        let mut end = tail.len();
        if tail.last() != Some(&b'\n') {
            let cut = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            f.set_len(start + cut as u64)?;
            end = cut;
        }
        let body = &tail[..end.saturating_sub(1)];
        let line = match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => &body[i + 1..],
            None => body,
        };
        if line.is_empty() {
            continue;
        }
        let seq = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}: the last line is not an audit record; run mymcpctl audit verify",
                    path.display()
                ))
            })?;
        return Ok((seq, line_hash(line)));
    }
    Ok((0, GENESIS_PREV.to_owned()))
}

fn last_seal(seals: &Path) -> Option<SealInfo> {
    let text = fs::read_to_string(seals).ok()?;
    let v: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    (v["type"] == "seal").then(|| SealInfo {
        seq: v["seq"].as_u64().unwrap_or(0),
        epoch: v["epoch"].as_u64().unwrap_or(0),
        ts: v["ts"].as_str().unwrap_or("").to_owned(),
    })
}

/// Writes `body` to `path` atomically, mode 0600 (for callers that keep small state files).
pub fn store_atomic(path: &Path, body: &[u8]) -> io::Result<()> {
    write_atomic(path, body, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn random(buf: &mut [u8]) -> io::Result<()> {
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        Ok(())
    }

    #[test]
    fn log_files_are_group_readable_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            dir: dir.path().join("audit"),
            key_file: dir.path().join("state/signing.key"),
            max_bytes: 200,
            backup_count: 2,
            seal_records: 1000,
            seal_interval: Duration::from_secs(3600),
        };
        let mut log = AuditLog::open(cfg.clone(), random).unwrap().log;
        for _ in 0..5 {
            log.append(r#"{"tool":"write_file","result":"ok","params":{"x":"padding padding"}}"#)
                .unwrap();
        }
        for name in [LOG_FILE, "audit.log.1"] {
            let mode = fs::metadata(cfg.dir.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, LOG_FILE_MODE, "{name}");
        }
    }

    #[test]
    fn in_a_set_group_id_directory_old_files_join_its_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit");
        fs::create_dir(&audit).unwrap();
        fs::write(audit.join(LOG_FILE), "").unwrap();
        let before = fs::metadata(audit.join(LOG_FILE)).unwrap().gid();
        // Only root can give the directory another group; elsewhere this checks nothing.
        if std::os::unix::fs::chown(&audit, None, Some(65534)).is_err() || before == 65534 {
            return;
        }
        fs::set_permissions(&audit, fs::Permissions::from_mode(0o2750)).unwrap();
        open_append(&audit.join(LOG_FILE)).unwrap();
        assert_eq!(fs::metadata(audit.join(LOG_FILE)).unwrap().gid(), 65534);
    }
}
