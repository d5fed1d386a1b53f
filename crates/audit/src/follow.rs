//! Following the log from outside the executor: the recorder's cursor, which records it folds
//! into the host overview, and how many are still waiting.
//!
//! `mymcp-recorder` reads `audit.log` as it grows and keeps its place in `cursor.json`
//! (`{"file","inode","offset"}`, the reference's format, plus the `seq` of the last line read)
//! in its data directory. The inode, not the name, says which file the offset belongs to: after
//! a rotation the file the cursor points into is `audit.log.1`, or further back.
//!
//! The executor's `server_overview` counts the events behind the cursor with
//! [`pending_events`], looking at one rotation as the reference did (a hint: 0 when unsure).
//! The recorder reads them with [`read_events`], which follows any number of rotations and uses
//! the chain's `seq` numbers so that nothing is read twice (an inode number can be reused) and
//! every line lost to rotation is counted.

use crate::LOG_FILE;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The recorder's cursor file, in its data directory.
pub const CURSOR_FILE: &str = "cursor.json";

/// Tools whose successful calls change the host and so belong in the overview (the
/// reference's set).
pub const MERGED_TOOLS: [&str; 6] = [
    "bash_execute",
    "write_file",
    "edit_file",
    "prepare_upload",
    "prepare_download",
    "transfer_upload",
];

/// Longest line the followers look at; a longer one is skipped (the executor caps every field,
/// so its lines stay far below this).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Where the recorder stands in the log: `offset` bytes into the file with inode `inode`
/// (that file was called `file` when the cursor was written).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub file: String,
    pub inode: u64,
    pub offset: u64,
    /// The `seq` of the last line consumed (0: unknown, as in the reference's cursors). Lines
    /// up to it are never read twice, and a gap after it is counted as lost.
    #[serde(default)]
    pub seq: u64,
}

impl Cursor {
    /// Reads a cursor file; `None` when it is missing or not a cursor.
    pub fn load(path: &Path) -> Option<Cursor> {
        let mut text = String::new();
        File::open(path)
            .ok()?
            .take(64 * 1024)
            .read_to_string(&mut text)
            .ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Whether one audit line is an event the overview folds in: an outcome record (not a
/// `start`, `seal` or `notice`) of a [`MERGED_TOOLS`] call whose `result` is `ok` (or
/// `success`, as older writers spelled it).
pub fn is_merge_event(record: &Value) -> bool {
    record.get("type").is_none()
        && matches!(
            record.get("result").and_then(Value::as_str),
            Some("ok" | "success")
        )
        && record
            .get("tool")
            .and_then(Value::as_str)
            .is_some_and(|t| MERGED_TOOLS.contains(&t))
}

/// A cheap test before parsing: lines without an ok result cannot be events.
fn may_be_event(line: &[u8]) -> bool {
    contains(line, br#""result":"ok""#) || contains(line, br#""result":"success""#)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The files of the log a cursor can still be in: the current one and the last rotated one.
fn files(dir: &Path) -> [PathBuf; 2] {
    [dir.join(LOG_FILE), dir.join(format!("{LOG_FILE}.1"))]
}

/// Opens `path` and returns it with its inode.
fn open(path: &Path) -> io::Result<(File, u64)> {
    let f = File::open(path)?;
    let ino = f.metadata()?.ino();
    Ok((f, ino))
}

/// Counts the events after `cursor`: the rest of the file it points into and, when that file
/// has been rotated to `audit.log.1`, all of `audit.log`. An error when the cursor's file is
/// neither (rotated further, or never existed) or its offset lies past the end.
pub fn pending_events(dir: &Path, cursor: &Cursor) -> io::Result<u64> {
    let [current, rotated] = files(dir);
    let (f, ino) = open(&current)?;
    if ino == cursor.inode {
        return count_in(f, cursor.offset);
    }
    let (old, old_ino) = open(&rotated)?;
    if old_ino == cursor.inode {
        return Ok(count_in(old, cursor.offset)? + count_in(f, 0)?);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "the cursor's file is no longer in the log",
    ))
}

fn count_in(mut f: File, offset: u64) -> io::Result<u64> {
    if offset > f.metadata()?.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the cursor lies past the end of its file",
        ));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut n = 0;
    for_each_line(BufReader::new(f), |line| {
        if may_be_event(line)
            && serde_json::from_slice::<Value>(line).is_ok_and(|v| is_merge_event(&v))
        {
            n += 1;
        }
        true
    })?;
    Ok(n)
}

/// Calls `f` with each complete line (without its newline) until it returns false; returns
/// the bytes consumed (complete lines only: a line still being written is left for later).
/// Lines longer than [`MAX_LINE_BYTES`] are passed as empty.
fn for_each_line(mut r: impl BufRead, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<u64> {
    let mut consumed = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(consumed);
        }
        if line.last() != Some(&b'\n') {
            if line.len() <= MAX_LINE_BYTES {
                // A partial last line: not ours yet.
                return Ok(consumed);
            }
            // Too long: skip to its end.
            let mut rest = 0u64;
            loop {
                let mut skip = Vec::new();
                let m = (&mut r).take(1 << 16).read_until(b'\n', &mut skip)?;
                rest += m as u64;
                if m == 0 {
                    // Never finished: leave it for later.
                    return Ok(consumed);
                }
                if skip.last() == Some(&b'\n') {
                    break;
                }
            }
            consumed += n as u64 + rest;
            if !f(&[]) {
                return Ok(consumed);
            }
            continue;
        }
        consumed += n as u64;
        if !f(&line[..line.len() - 1]) {
            return Ok(consumed);
        }
    }
}

/// What [`read_events`] found.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events, oldest first (at most the number asked for).
    pub events: Vec<Value>,
    /// Where to continue after these events (and the other lines between them).
    pub next: Cursor,
    /// Lines that were lost: a gap in the `seq` numbers (the cursor's file rotated out of reach
    /// before it was read, or was cut).
    pub lost: u64,
    /// Lines that were not JSON objects (skipped).
    pub malformed: u64,
    /// The cursor's file was not found (or was shorter than the cursor): reading started again
    /// at the oldest file, skipping what the cursor's `seq` says was read.
    pub restarted: bool,
}

/// One file of the log, opened.
struct LogFile {
    path: PathBuf,
    file: File,
    ino: u64,
    len: u64,
}

/// The log's files, oldest first: `audit.log.N` … `audit.log.1`, `audit.log`. Opened newest
/// first, so a rotation while they are opened can repeat a file (dropped by inode) but never
/// hide one.
fn chain(dir: &Path) -> io::Result<Vec<LogFile>> {
    let mut out: Vec<LogFile> = Vec::new();
    for i in 0..=MAX_ROTATED {
        let path = match i {
            0 => dir.join(LOG_FILE),
            i => dir.join(format!("{LOG_FILE}.{i}")),
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if i == 0 {
                    // Between the renames of a rotation, or no log yet: look at .1 anyway.
                    continue;
                }
                break;
            }
            Err(e) => return Err(e),
        };
        let m = file.metadata()?;
        if out.iter().any(|f| f.ino == m.ino()) {
            continue;
        }
        out.push(LogFile {
            path,
            file,
            ino: m.ino(),
            len: m.len(),
        });
    }
    out.reverse();
    Ok(out)
}

/// Whether the line that ends at the cursor's offset is the one the cursor says it read (its
/// `seq`): an inode number is reused once its file is deleted, so the inode alone does not
/// prove that this is still the cursor's file. Cursors without a `seq` (the reference's) are
/// taken as they are.
fn stands_after(f: &LogFile, cursor: &Cursor) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    if cursor.seq == 0 || cursor.offset == 0 {
        return Ok(true);
    }
    let end = cursor.offset;
    let mut want = 4096u64;
    loop {
        let from = end.saturating_sub(want);
        let mut buf = vec![0; (end - from) as usize];
        f.file.read_exact_at(&mut buf, from)?;
        if buf.last() != Some(&b'\n') {
            return Ok(false);
        }
        let body = &buf[..buf.len() - 1];
        match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(seq_of(&body[i + 1..]) == Some(cursor.seq)),
            None if from == 0 => return Ok(seq_of(body) == Some(cursor.seq)),
            None if want > MAX_LINE_BYTES as u64 => return Ok(false),
            None => want *= 16,
        }
    }
}

fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(line)
        .ok()?
        .get("seq")
        .and_then(Value::as_u64)
}

/// Rotated files looked at (the executor keeps at most `MYMCP_AUDIT_BACKUP_COUNT` ≤ 1000).
const MAX_ROTATED: usize = 1000;

/// Reads up to `max` events after `cursor`, following the log through any number of
/// rotations: the cursor's file is found by inode among `audit.log`, `audit.log.1`, …, read
/// from the cursor's offset, then the newer files. A default cursor starts at the oldest file.
/// The returned cursor stands after the last line consumed, so a batch cut at `max` continues
/// exactly where it stopped, and a line still being written is never consumed.
///
/// The chain's `seq` numbers make this exact: lines at or below the cursor's `seq` are never
/// returned again (a cut file is re-read safely), and a gap in them is counted as lost lines.
pub fn read_events(dir: &Path, cursor: &Cursor, max: usize) -> io::Result<Batch> {
    let mut files = chain(dir)?;
    let mut batch = Batch {
        next: cursor.clone(),
        ..Batch::default()
    };
    if files.is_empty() {
        return Ok(batch);
    }
    let fresh = cursor.inode == 0 && cursor.seq == 0;
    let (first, offset) = match files.iter().position(|f| f.ino == cursor.inode) {
        Some(i) if cursor.offset <= files[i].len && stands_after(&files[i], cursor)? => {
            (i, cursor.offset)
        }
        // The file was cut, or this is another file with a reused inode number: read
        // everything again; the seq numbers skip what was read.
        Some(_) | None => {
            batch.restarted = !fresh;
            (0, 0)
        }
    };
    let mut last_seq = cursor.seq;
    let mut offset = offset;
    for (i, lf) in files.iter_mut().enumerate().skip(first) {
        if i > first {
            offset = 0;
        }
        batch.next = Cursor {
            file: lf.path.display().to_string(),
            inode: lf.ino,
            offset,
            seq: last_seq,
        };
        if batch.events.len() >= max {
            break;
        }
        lf.file.seek(SeekFrom::Start(offset))?;
        let events = &mut batch.events;
        let (mut lost, mut malformed, mut seq_after) = (0, 0, last_seq);
        let consumed = for_each_line(BufReader::new(&lf.file), |line| {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                malformed += 1;
                return true;
            };
            if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
                if seq_after > 0 && seq <= seq_after {
                    // Read before (a cut file read again): never twice.
                    return true;
                }
                if seq_after > 0 && seq > seq_after + 1 {
                    lost += seq - seq_after - 1;
                }
                seq_after = seq;
            }
            if is_merge_event(&v) {
                events.push(v);
            }
            events.len() < max
        })?;
        batch.lost += lost;
        batch.malformed += malformed;
        last_seq = seq_after;
        batch.next.offset = offset + consumed;
        batch.next.seq = last_seq;
        if batch.events.len() >= max || offset + consumed < lf.len {
            // Cut at max, or a line still being written: continue here next time.
            break;
        }
    }
    Ok(batch)
}

/// A cursor at the current end of the log (after its last complete line): where following
/// starts when what came before is already known (the recorder's bootstrap explored the host).
pub fn end_cursor(dir: &Path) -> io::Result<Cursor> {
    let Some(last) = chain(dir)?.pop() else {
        return Ok(Cursor::default());
    };
    let mut f = &last.file;
    // The last complete line, to learn its seq: read back at most one line's worth.
    let from = last.len.saturating_sub(MAX_LINE_BYTES as u64 + 1);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.take(last.len - from).read_to_end(&mut tail)?;
    let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let body = &tail[..complete.saturating_sub(1)];
    let line = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(body, |i| &body[i + 1..]);
    let seq = serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
        .unwrap_or(0);
    Ok(Cursor {
        file: last.path.display().to_string(),
        inode: last.ino,
        offset: from + complete as u64,
        seq,
    })
}

/// The events after `cursor`, counted without keeping them (read in batches).
pub fn count_events(dir: &Path, cursor: &Cursor) -> io::Result<u64> {
    let mut at = cursor.clone();
    let mut n = 0;
    loop {
        let b = read_events(dir, &at, 1024)?;
        n += b.events.len() as u64;
        if b.events.len() < 1024 || b.next == at {
            return Ok(n);
        }
        at = b.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn event(tool: &str, result: &str) -> String {
        format!(r#"{{"ts":"t","tool":"{tool}","params":{{}},"result":"{result}","seq":1}}"#)
    }

    fn append(path: &Path, lines: &[String]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    fn ino(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn only_successful_outcomes_of_mutating_tools_are_events() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(is_merge_event(&v(&event("write_file", "ok"))));
        assert!(is_merge_event(&v(&event("transfer_upload", "success"))));
        assert!(!is_merge_event(&v(&event("write_file", "error"))));
        assert!(!is_merge_event(&v(&event("read_file", "ok"))));
        assert!(!is_merge_event(&v(
            r#"{"type":"start","tool":"bash_execute","result":"ok"}"#
        )));
        assert!(!is_merge_event(&v(r#"{"type":"seal","epoch":0}"#)));
    }

    #[test]
    fn pending_counts_past_the_cursor_and_across_one_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        append(&log, &[event("write_file", "ok"), event("read_file", "ok")]);
        let first = std::fs::metadata(&log).unwrap().len();
        append(
            &log,
            &[event("bash_execute", "ok"), event("bash_execute", "error")],
        );
        let c = Cursor {
            file: log.display().to_string(),
            inode: ino(&log),
            offset: first,
            seq: 0,
        };
        assert_eq!(pending_events(dir.path(), &c).unwrap(), 1);
        assert_eq!(
            pending_events(
                dir.path(),
                &Cursor {
                    offset: 0,
                    ..c.clone()
                }
            )
            .unwrap(),
            2
        );
        // Rotate: the cursor's file is audit.log.1 now.
        std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
        append(&log, &[event("edit_file", "ok")]);
        assert_eq!(pending_events(dir.path(), &c).unwrap(), 2);
        // Twice: out of reach.
        std::fs::rename(
            dir.path().join("audit.log.1"),
            dir.path().join("audit.log.2"),
        )
        .unwrap();
        std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
        append(&log, &[event("edit_file", "ok")]);
        assert!(pending_events(dir.path(), &c).is_err());
        // Past the end of its file.
        let c = Cursor {
            inode: ino(&log),
            offset: 1 << 20,
            ..c
        };
        assert!(pending_events(dir.path(), &c).is_err());
    }

    #[test]
    fn a_line_being_written_is_neither_counted_nor_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        append(&log, &[event("write_file", "ok")]);
        let whole = std::fs::metadata(&log).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(event("write_file", "ok").as_bytes())
            .unwrap();
        let start = Cursor {
            inode: ino(&log),
            ..Cursor::default()
        };
        assert_eq!(pending_events(dir.path(), &start).unwrap(), 1);
        let b = read_events(dir.path(), &start, 10).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.next.offset, whole);
    }

    fn numbered(range: std::ops::Range<u64>) -> Vec<String> {
        range
            .map(|i| {
                format!(
                    r#"{{"tool":"write_file","params":{{"file_path":"/f{i}"}},"result":"ok","seq":{i}}}"#
                )
            })
            .collect()
    }

    fn paths(b: &Batch) -> Vec<String> {
        b.events
            .iter()
            .map(|e| e["params"]["file_path"].as_str().unwrap().to_owned())
            .collect()
    }

    fn rotate(dir: &Path, keep: u32) {
        for i in (1..keep).rev() {
            let from = dir.join(format!("audit.log.{i}"));
            if from.exists() {
                std::fs::rename(&from, dir.join(format!("audit.log.{}", i + 1))).unwrap();
            }
        }
        std::fs::rename(dir.join(LOG_FILE), dir.join("audit.log.1")).unwrap();
    }

    #[test]
    fn reading_stops_at_max_and_continues_exactly_there_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        append(&log, &numbered(1..4));
        let b = read_events(dir.path(), &Cursor::default(), 2).unwrap();
        assert_eq!(paths(&b), ["/f1", "/f2"]);
        assert_eq!(b.next.seq, 2);
        // Two rotations before the next read: the cursor's file is audit.log.2 now.
        rotate(dir.path(), 5);
        append(&log, &numbered(4..6));
        rotate(dir.path(), 5);
        append(&log, &numbered(6..7));
        let b = read_events(dir.path(), &b.next, 10).unwrap();
        assert_eq!(paths(&b), ["/f3", "/f4", "/f5", "/f6"]);
        assert_eq!((b.lost, b.malformed, b.restarted), (0, 0, false));
        assert_eq!(b.next.inode, ino(&log));
        let again = read_events(dir.path(), &b.next, 10).unwrap();
        assert!(again.events.is_empty());
        assert_eq!(again.next, b.next);
    }

    #[test]
    fn a_cursor_rotated_out_of_reach_counts_the_lost_lines_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        append(&log, &numbered(8..10));
        append(&log, &["not json".to_owned()]);
        let c = Cursor {
            file: String::new(),
            inode: 999_999_999,
            offset: 3,
            seq: 4,
        };
        let b = read_events(dir.path(), &c, 10).unwrap();
        assert_eq!(paths(&b), ["/f8", "/f9"]);
        assert_eq!((b.lost, b.malformed, b.restarted), (3, 1, true));
        assert_eq!(b.next.seq, 9);
    }

    #[test]
    fn a_file_cut_under_the_cursor_is_read_again_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        append(&log, &numbered(1..5));
        let b = read_events(dir.path(), &Cursor::default(), 10).unwrap();
        assert_eq!(b.events.len(), 4);
        // Cut to the first two lines, then more is written.
        let keep: usize = numbered(1..3).iter().map(|l| l.len() + 1).sum();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(keep as u64)
            .unwrap();
        append(&log, &numbered(5..6));
        let b = read_events(dir.path(), &b.next, 10).unwrap();
        assert_eq!(paths(&b), ["/f5"]);
        assert!(b.restarted);
    }

    #[test]
    fn the_end_cursor_stands_after_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(end_cursor(dir.path()).unwrap(), Cursor::default());
        let log = dir.path().join(LOG_FILE);
        append(&log, &numbered(1..4));
        let whole = std::fs::metadata(&log).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"{\"seq\":4")
            .unwrap();
        let c = end_cursor(dir.path()).unwrap();
        assert_eq!((c.inode, c.offset, c.seq), (ino(&log), whole, 3));
        assert_eq!(count_events(dir.path(), &Cursor::default()).unwrap(), 3);
        assert_eq!(count_events(dir.path(), &c).unwrap(), 0);
    }

    #[test]
    fn a_reused_inode_number_is_not_taken_for_the_cursors_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        append(&log, &numbered(1..5));
        let three: u64 = numbered(1..4).iter().map(|l| l.len() as u64 + 1).sum();
        // Same inode, but the line before the offset is seq 3, not the cursor's 2: another file.
        let c = Cursor {
            file: String::new(),
            inode: ino(&log),
            offset: three,
            seq: 2,
        };
        let b = read_events(dir.path(), &c, 10).unwrap();
        assert_eq!(paths(&b), ["/f3", "/f4"]);
        assert!(b.restarted);
        // The right seq: read on from the offset.
        let b = read_events(dir.path(), &Cursor { seq: 3, ..c }, 10).unwrap();
        assert_eq!(paths(&b), ["/f4"]);
        assert!(!b.restarted);
    }
}
