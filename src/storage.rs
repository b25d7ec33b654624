//! Durable state of one node, in `STATE_DIR/node<ID>/`:
//!
//! * `state.json`: `{"term":7,"voted_for":2}`. Replaced atomically: written
//!   to `state.json.tmp`, fsynced, renamed over the old file, and the
//!   directory fsynced, so a crash leaves either the old or the new file.
//! * `log.jsonl`: one record per line, `CRC JSON`, where CRC is the CRC-32
//!   (8 hex digits) of the JSON bytes, e.g.
//!   `1a2b3c4d {"index":3,"term":2,"payload":{"kind":"data","data":"SET 5"}}`.
//!   [`Storage::persist`] writes appends; it fsyncs them before returning
//!   when asked to (a follower, which acknowledges them in its reply), or
//!   leaves that to [`Storage::sync_log`] or a [`LogSyncer`] (a leader,
//!   whose log writer syncs outside the node's lock: group commit). A
//!   conflicting suffix is cut with `set_len` and fsynced at once.
//!
//!   **Cutting while a sync is outstanding.** Only a non-leader cuts, but
//!   the log writer's sync from when it led may still be running. That is
//!   allowed: the cut's own fsync makes the shortened log, and every write
//!   before it, durable; the older sync, when it ends, reports only the
//!   count of writes it covered ([`Storage::synced_through`] never lowers
//!   the count), and the core ignores its `persisted(index, term)` when the
//!   entry at `index` has since been replaced (its term differs).
//! * `lock`: held (flock) while a node runs, so two processes cannot share
//!   the directory.
//!
//! At start, a final record that is incomplete or fails its checksum is a
//! write torn by a crash: it was never fsynced, hence never acknowledged,
//! and is cut (and reported). A bad record *before* the last one is damage
//! that a crash cannot cause; the node refuses to start and names the file
//! and byte offset, rather than silently dropping entries that may be
//! committed.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::consensus::{Entry, HardState, Index, NodeId, Ready};
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub enum StorageError {
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// Another process holds the directory's lock.
    Locked { path: PathBuf },
    /// Damage that a crash cannot explain.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, op, source } => {
                write!(f, "{}: {op} failed: {source}", path.display())
            }
            StorageError::Locked { path } => {
                write!(
                    f,
                    "{}: in use by another running node (lock held)",
                    path.display()
                )
            }
            StorageError::Corrupt {
                path,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "{}: corrupt at byte offset {offset}: {reason}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for StorageError {}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// What was on disk at start.
#[derive(Debug)]
pub struct Recovered {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
    /// A torn final record that was cut: (byte offset, bytes removed).
    pub torn_tail: Option<(u64, u64)>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    term: u64,
    voted_for: Option<NodeId>,
}

pub struct Storage {
    dir: PathBuf,
    log_path: PathBuf,
    log: File,
    /// Counts writes to the log; `synced` is the count known durable.
    /// A write is durable once a sync that started after it has ended.
    written: u64,
    synced: u64,
    /// `offsets[k]` is the byte offset where the record of index k+1 starts.
    offsets: Vec<u64>,
    /// Current length of the log file.
    len: u64,
    _lock: File,
}

impl Storage {
    /// Opens (creating if needed) the directory and recovers its contents.
    pub fn open(dir: &Path) -> Result<(Storage, Recovered), StorageError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "open"))?;
        if lock.try_lock().is_err() {
            return Err(StorageError::Locked {
                path: dir.to_path_buf(),
            });
        }
        let hard_state = read_state(&dir.join("state.json"))?;
        let log_path = dir.join("log.jsonl");
        let mut log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path, "open"))?;
        let bytes = {
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut log, &mut buf).map_err(io_err(&log_path, "read"))?;
            buf
        };
        // The directory entries of newly created files (and of the node's
        // directory itself) are durable only once their directories are.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let (entries, offsets, valid_len) = parse_log(&bytes, &log_path)?;
        let mut torn_tail = None;
        if valid_len < bytes.len() as u64 {
            torn_tail = Some((valid_len, bytes.len() as u64 - valid_len));
            log.set_len(valid_len)
                .map_err(io_err(&log_path, "truncate torn record"))?;
            log.sync_all().map_err(io_err(&log_path, "fsync"))?;
        }
        let storage = Storage {
            dir: dir.to_path_buf(),
            log_path,
            log,
            written: 0,
            synced: 0,
            offsets,
            len: valid_len,
            _lock: lock,
        };
        Ok((
            storage,
            Recovered {
                hard_state,
                entries,
                torn_tail,
            },
        ))
    }

    /// Writes a [`Ready`]'s term, vote and log changes, in that order.
    /// Term and vote are durable when this returns; so is the log if
    /// `sync_log`, otherwise it is written but may still need a sync (see
    /// [`Storage::needs_sync`]).
    pub fn persist(&mut self, ready: &Ready, sync_log: bool) -> Result<(), StorageError> {
        if let Some(hs) = ready.hard_state {
            self.save_hard_state(hs)?;
        }
        if let Some(from) = ready.truncate_from {
            self.truncate_from(from)?;
        }
        if !ready.appended.is_empty() {
            self.append(&ready.appended)?;
        }
        if sync_log {
            self.sync_log()?;
        }
        Ok(())
    }

    /// Whether log writes are not yet known durable.
    pub fn needs_sync(&self) -> bool {
        self.written > self.synced
    }

    /// Makes every log write so far durable.
    pub fn sync_log(&mut self) -> Result<(), StorageError> {
        if self.needs_sync() {
            self.log
                .sync_data()
                .map_err(io_err(&self.log_path, "fsync"))?;
            self.synced = self.written;
        }
        Ok(())
    }

    /// A handle for syncing the log without holding `self` (so without
    /// the node's lock): note [`Storage::written`] under the lock, call
    /// [`LogSyncer::sync`] with it released, then report the noted count
    /// with [`Storage::synced_through`].
    pub fn log_syncer(&self) -> Result<LogSyncer, StorageError> {
        let file = self
            .log
            .try_clone()
            .map_err(io_err(&self.log_path, "open a second handle"))?;
        Ok(LogSyncer {
            file,
            path: self.log_path.clone(),
        })
    }

    /// The count of writes a sync started now would cover.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A sync that started when `written()` was `count` has ended.
    pub fn synced_through(&mut self, count: u64) {
        self.synced = self.synced.max(count);
    }

    fn save_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let mut text = serde_json::to_string(&StateFile {
            term: hs.term,
            voted_for: hs.voted_for,
        })
        .expect("serializing plain numbers cannot fail");
        text.push('\n');
        let mut f = File::create(&tmp).map_err(io_err(&tmp, "create"))?;
        f.write_all(text.as_bytes())
            .map_err(io_err(&tmp, "write"))?;
        f.sync_all().map_err(io_err(&tmp, "fsync"))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))?;
        // The rename itself is durable only once the directory is.
        sync_dir(&self.dir)
    }

    fn truncate_from(&mut self, index: Index) -> Result<(), StorageError> {
        let k = index as usize - 1;
        if k >= self.offsets.len() {
            return Ok(());
        }
        let at = self.offsets[k];
        self.log
            .set_len(at)
            .map_err(io_err(&self.log_path, "truncate"))?;
        self.log
            .sync_data()
            .map_err(io_err(&self.log_path, "fsync"))?;
        self.synced = self.written; // every write before the cut, too
        self.offsets.truncate(k);
        self.len = at;
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in entries {
            assert_eq!(
                e.index as usize,
                self.offsets.len() + offsets.len() + 1,
                "storage append out of order"
            );
            offsets.push(self.len + buf.len() as u64);
            encode_record(e, &mut buf);
        }
        self.log
            .write_all(&buf)
            .map_err(io_err(&self.log_path, "write"))?;
        self.written += 1;
        self.len += buf.len() as u64;
        self.offsets.extend(offsets);
        Ok(())
    }
}

/// Syncs the log from another thread; see [`Storage::log_syncer`].
pub struct LogSyncer {
    file: File,
    path: PathBuf,
}

impl LogSyncer {
    /// fsyncs the log file: every write made before this call is durable
    /// when it returns.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(io_err(&self.path, "fsync"))
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

/// Appends `CRC JSON\n` for one entry to `buf`.
pub fn encode_record(e: &Entry, buf: &mut Vec<u8>) {
    let json = serde_json::to_vec(e).expect("entries always serialize");
    let crc = checksum(&json);
    write!(buf, "{crc:08x} ").expect("writing to a Vec cannot fail");
    buf.extend_from_slice(&json);
    buf.push(b'\n');
}

/// CRC-32 (IEEE 802.3, the zlib polynomial).
fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn read_state(path: &Path) -> Result<HardState, StorageError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(e) => return Err(io_err(path, "read")(e)),
    };
    let s: StateFile = serde_json::from_str(&text).map_err(|e| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: byte_offset(&text, e.line(), e.column()),
        reason: e.to_string(),
    })?;
    Ok(HardState {
        term: s.term,
        voted_for: s.voted_for,
    })
}

fn byte_offset(text: &str, line: usize, column: usize) -> u64 {
    let before: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (before + column.saturating_sub(1)) as u64
}

/// Parses the log; returns the entries, their offsets and the length of
/// the valid prefix. Only the final record may be invalid (torn).
fn parse_log(bytes: &[u8], path: &Path) -> Result<(Vec<Entry>, Vec<u64>, u64), StorageError> {
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(nl) = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|k| pos + k)
        else {
            // No newline: the last write stopped part-way.
            return Ok((entries, offsets, pos as u64));
        };
        let expected = entries.len() as Index + 1;
        match decode_record(&bytes[pos..nl], expected) {
            Ok(e) => {
                offsets.push(pos as u64);
                entries.push(e);
            }
            Err(_) if nl + 1 == bytes.len() => return Ok((entries, offsets, pos as u64)),
            Err(reason) => {
                return Err(StorageError::Corrupt {
                    path: path.to_path_buf(),
                    offset: pos as u64,
                    reason: format!(
                        "record for index {expected}: {reason} (and it is not the last record)"
                    ),
                });
            }
        }
        pos = nl + 1;
    }
    Ok((entries, offsets, pos as u64))
}

fn decode_record(line: &[u8], expected: Index) -> Result<Entry, String> {
    if line.len() < 10 || line[8] != b' ' {
        return Err("not in `CRC JSON` form".into());
    }
    let crc = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("checksum is not 8 hex digits")?;
    let json = &line[9..];
    if checksum(json) != crc {
        return Err("checksum mismatch".into());
    }
    let e: Entry = serde_json::from_slice(json).map_err(|e| format!("bad JSON: {e}"))?;
    if e.index != expected {
        return Err(format!("index {} out of sequence", e.index));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{Json, Payload};

    fn entry(index: Index, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Command(Json::string(data)),
        }
    }

    fn ready_appending(entries: Vec<Entry>) -> Ready {
        Ready {
            appended: entries,
            ..Ready::default()
        }
    }

    #[test]
    fn round_trip_with_truncation_and_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, rec) = Storage::open(dir.path()).unwrap();
            assert_eq!(rec.hard_state, HardState::default());
            assert!(rec.entries.is_empty());
            s.persist(
                &Ready {
                    hard_state: Some(HardState {
                        term: 3,
                        voted_for: Some(2),
                    }),
                    appended: vec![
                        entry(1, 1, "a"),
                        entry(2, 1, "b\nwith newline"),
                        entry(3, 2, "c"),
                    ],
                    ..Ready::default()
                },
                false,
            )
            .unwrap();
            // Written, not yet synced: a leader's log writer syncs it from
            // another handle.
            assert!(s.needs_sync());
            let count = s.written();
            s.log_syncer().unwrap().sync().unwrap();
            s.synced_through(count);
            assert!(!s.needs_sync());
            s.persist(
                &Ready {
                    truncate_from: Some(2),
                    appended: vec![entry(2, 3, "B")],
                    ..Ready::default()
                },
                true,
            )
            .unwrap();
            assert!(!s.needs_sync());
        }
        let (_s, rec) = Storage::open(dir.path()).unwrap();
        assert_eq!(
            rec.hard_state,
            HardState {
                term: 3,
                voted_for: Some(2)
            }
        );
        assert_eq!(rec.entries, vec![entry(1, 1, "a"), entry(2, 3, "B")]);
        assert!(rec.torn_tail.is_none());
        let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
        assert_eq!(
            text.lines().count(),
            2,
            "one readable line per record: {text}"
        );
    }

    #[test]
    fn a_log_written_before_commands_were_nested_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let old = [
            r#"{"index":1,"term":1,"payload":{"kind":"noop"}}"#,
            r#"{"index":2,"term":1,"payload":{"kind":"data","data":"{\"client\":7,\"seq\":1,\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"}"}}"#,
        ];
        let text: String = old
            .iter()
            .map(|json| format!("{:08x} {json}\n", checksum(json.as_bytes())))
            .collect();
        std::fs::write(dir.path().join("log.jsonl"), text).unwrap();
        let (mut s, rec) = Storage::open(dir.path()).unwrap();
        let command = r#"{"client":7,"seq":1,"op":"put","key":"k","value":"v"}"#;
        assert_eq!(
            rec.entries[1].payload,
            Payload::Command(Json::parse(command).unwrap())
        );
        // New records go after the old ones, in the new form.
        s.persist(
            &Ready {
                appended: vec![entry(3, 1, "c")],
                ..Ready::default()
            },
            true,
        )
        .unwrap();
        drop(s);
        let (_s, rec) = Storage::open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 3);
        let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
        assert!(
            text.lines()
                .nth(2)
                .unwrap()
                .contains(r#""kind":"command","command":"c""#)
        );
    }

    #[test]
    fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Storage::open(dir.path()).unwrap();
        assert!(matches!(
            Storage::open(dir.path()),
            Err(StorageError::Locked { .. })
        ));
    }

    #[test]
    fn a_torn_final_record_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path()).unwrap();
            s.persist(
                &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b")]),
                true,
            )
            .unwrap();
        }
        let path = dir.path().join("log.jsonl");
        let good = std::fs::read(&path).unwrap();
        let mut torn = good.clone();
        let mut third = Vec::new();
        encode_record(&entry(3, 1, "c"), &mut third);
        torn.extend_from_slice(&third[..third.len() / 2]); // crash mid-write
        std::fs::write(&path, &torn).unwrap();
        let (mut s, rec) = Storage::open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 2);
        assert_eq!(
            rec.torn_tail,
            Some((good.len() as u64, (third.len() / 2) as u64))
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good,
            "the torn bytes are gone from the file"
        );
        // And appending afterwards continues cleanly.
        s.persist(&ready_appending(vec![entry(3, 1, "c")]), true)
            .unwrap();
        drop(s);
        assert_eq!(Storage::open(dir.path()).unwrap().1.entries.len(), 3);
    }

    #[test]
    fn a_complete_final_record_with_a_bad_checksum_is_torn_too() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path()).unwrap();
            s.persist(
                &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b")]),
                true,
            )
            .unwrap();
        }
        let path = dir.path().join("log.jsonl");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 4] ^= 0x01; // flip a bit inside the last record's JSON
        std::fs::write(&path, &bytes).unwrap();
        let (_, rec) = Storage::open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 1);
        assert!(rec.torn_tail.is_some());
    }

    #[test]
    fn damage_before_the_tail_stops_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path()).unwrap();
            s.persist(
                &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]),
                true,
            )
            .unwrap();
        }
        let path = dir.path().join("log.jsonl");
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second + 20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = Storage::open(dir.path())
            .err()
            .expect("must refuse to start");
        let msg = err.to_string();
        assert!(
            msg.contains("log.jsonl") && msg.contains(&format!("byte offset {second}")),
            "{msg}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("state.json"),
            "{\"term\": 4, \"voted_for\": nul",
        )
        .unwrap();
        let msg = Storage::open(dir.path())
            .err()
            .expect("must refuse")
            .to_string();
        assert!(
            msg.contains("state.json") && msg.contains("corrupt at byte offset"),
            "{msg}"
        );
    }
}
