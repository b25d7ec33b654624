//! Durable state of one node, in `STATE_DIR/node<ID>/`:
//!
//! * `state.json`: `{"term":7,"voted_for":2}`. Replaced atomically: written
//!   to `state.json.tmp`, fsynced, renamed over the old file, and the
//!   directory fsynced, so a crash leaves either the old or the new file.
//! * `log-<first index>.jsonl`: the log, in segment files (see
//!   [`segments`]), one record per line, `CRC JSON`, where CRC is the
//!   CRC-32 (8 hex digits) of the JSON bytes, e.g.
//!   `1a2b3c4d {"index":3,"term":2,"payload":{"kind":"noop"}}`.
//!   [`Storage::persist`] writes appends; it fsyncs them before returning
//!   when asked to (a follower, which acknowledges them in its reply), or
//!   leaves that to [`Storage::sync_log`] or a [`LogSyncer`] (a leader,
//!   whose log writer syncs outside the node's lock: group commit). A
//!   conflicting suffix is cut and fsynced at once. (A log written before
//!   segments, `log.jsonl`, is renamed to the first segment at start.)
//!
//!   **Cutting while a sync is outstanding.** Only a non-leader cuts, but
//!   the log writer's sync from when it led may still be running. That is
//!   allowed: the cut's own fsync makes the shortened log, and every write
//!   before it, durable; the older sync, when it ends, reports only the
//!   count of writes it covered ([`Storage::synced_through`] never lowers
//!   the count), and the core ignores its `persisted(index, term)` when the
//!   entry at `index` has since been replaced (its term differs).
//! * `snapshot.jsonl`: the latest snapshot of the state machine, with the
//!   last index and term it covers (see [`snapshot_file`]). Once it is
//!   durable, the log segments it covers are deleted whole (§7).
//! * `lock`: held (flock) while a node runs, so two processes cannot share
//!   the directory; once the node listens, it holds the node's pid.
//!
//! At start, a final record that is incomplete or fails its checksum is a
//! write torn by a crash: it was never fsynced, hence never acknowledged,
//! and is cut (and reported). A bad record *before* the last one, a
//! segment missing from the run, or a snapshot that fails its checks is
//! damage that a crash cannot cause; the node refuses to start and names
//! the file and byte offset, rather than silently dropping entries that
//! may be committed.

pub mod segments;
pub mod snapshot_file;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::consensus::{Entry, HardState, Index, NodeId, Ready, SnapshotMeta};
use serde::{Deserialize, Serialize};

use segments::SegmentedLog;
pub use segments::{SegmentLimits, segment_name};
use snapshot_file::Receiving;
pub use snapshot_file::{SNAPSHOT_FILE, SnapshotFile, SnapshotWriter, WrittenSnapshot};

#[derive(Debug)]
pub enum StorageError {
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// Another process holds the directory's lock; `pid` is the one it
    /// recorded there once it served, if it got that far.
    Locked { path: PathBuf, pid: Option<u32> },
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
            StorageError::Locked {
                path,
                pid: Some(pid),
            } => write!(
                f,
                "{}: in use by a running node (pid {pid}); stop it first (kill -TERM {pid}), or give this one another --state-dir",
                path.display()
            ),
            StorageError::Locked { path, pid: None } => write!(
                f,
                "{}: in use by another running node (lock held)",
                path.display()
            ),
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

pub(crate) fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> StorageError + 'a {
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
    /// The latest snapshot, checked whole.
    pub snapshot: Option<Arc<SnapshotFile>>,
    /// The log entries after the snapshot.
    pub entries: Vec<Entry>,
    /// A torn final record that was cut: (file, byte offset, bytes removed).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// The log did not run on from the snapshot (an install that a crash
    /// interrupted) and was discarded: why, for the activity log.
    pub discarded_log: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    term: u64,
    voted_for: Option<NodeId>,
}

pub struct Storage {
    dir: PathBuf,
    log: SegmentedLog,
    snapshot: Option<Arc<SnapshotFile>>,
    receiving: Option<Receiving>,
    /// Held (flock) while this value lives; see [`Storage::record_pid`].
    lock: File,
}

impl Storage {
    /// Records in the lock file that process `pid` serves from this
    /// directory (called once the node listens), so that scripts and
    /// operators can find the node by its state directory, however it was
    /// started: `cat /tmp/state/node3/lock`. Not fsynced: it describes
    /// this run only, and the lock itself says whether the run goes on.
    pub fn record_pid(&self, pid: u32) -> Result<(), StorageError> {
        let path = self.dir.join("lock");
        self.lock
            .set_len(0)
            .and_then(|()| self.lock.write_all_at(format!("{pid}\n").as_bytes(), 0))
            .map_err(io_err(&path, "write"))
    }

    /// Opens (creating if needed) the directory and recovers its contents.
    pub fn open(dir: &Path, limits: SegmentLimits) -> Result<(Storage, Recovered), StorageError> {
        Storage::open_restoring(dir, limits, |_| ()).map(|(s, r, _)| (s, r))
    }

    /// [`Storage::open`], running `restore` on the snapshot (once its
    /// checks pass) in a second thread while the log is read: at start a
    /// node rebuilds its state machine and reads its log in parallel.
    pub fn open_restoring<R: Send>(
        dir: &Path,
        limits: SegmentLimits,
        restore: impl FnOnce(&SnapshotFile) -> R + Send,
    ) -> Result<(Storage, Recovered, Option<R>), StorageError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "open"))?;
        if lock.try_lock().is_err() {
            let pid = std::fs::read_to_string(&lock_path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(StorageError::Locked {
                path: dir.to_path_buf(),
                pid,
            });
        }
        // Whoever held it before is gone: its pid no longer means anything.
        lock.set_len(0).map_err(io_err(&lock_path, "truncate"))?;
        let hard_state = read_state(&dir.join("state.json"))?;
        // Snapshots a crash left half written or half received.
        for leftover in [snapshot_file::WRITING_FILE, snapshot_file::RECEIVING_FILE] {
            remove(&dir.join(leftover))?;
        }
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = if snapshot_path.exists() {
            Some(Arc::new(SnapshotFile::open(&snapshot_path)?))
        } else {
            None
        };
        let meta = snapshot
            .as_ref()
            .map_or(SnapshotMeta::default(), |s| s.meta);
        let (recovered, restored) = std::thread::scope(|scope| {
            let worker = snapshot
                .as_deref()
                .map(|file| scope.spawn(move || file.check().map(|()| restore(file))));
            let log = SegmentedLog::open(dir, meta.last_index, meta.last_term, limits);
            let restored = worker.map(|w| w.join().expect("the restore thread panicked"));
            (log, restored)
        });
        let recovered = recovered?;
        let restored = restored.transpose()?;
        // The directory entries of newly created files (and of the node's
        // directory itself) are durable only once their directories are.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let storage = Storage {
            dir: dir.to_path_buf(),
            log: recovered.log,
            snapshot: snapshot.clone(),
            receiving: None,
            lock,
        };
        Ok((
            storage,
            Recovered {
                hard_state,
                snapshot,
                entries: recovered.entries,
                torn_tail: recovered.torn_tail,
                discarded_log: recovered.discarded,
            },
            restored,
        ))
    }

    /// Writes a [`Ready`]'s durable parts in the core's order: term and
    /// vote; snapshot chunks, and a snapshot to install (made current, and
    /// the log cut as it says); then log changes. Everything but the log's
    /// appends is durable when this returns; so are the appends if
    /// `sync_log`, otherwise they may still need a sync (see
    /// [`Storage::needs_sync`]).
    pub fn persist(&mut self, ready: &Ready, sync_log: bool) -> Result<(), StorageError> {
        if let Some(hs) = ready.hard_state {
            self.save_hard_state(hs)?;
        }
        for chunk in &ready.snapshot_chunks {
            if chunk.offset == 0 {
                self.receiving = Some(Receiving::start(&self.dir, chunk.snapshot)?);
            }
            let receiving = self
                .receiving
                .as_mut()
                .filter(|r| r.meta() == chunk.snapshot)
                .expect("the core starts every snapshot at offset 0");
            receiving.write(chunk.offset, &chunk.data)?;
        }
        if let Some(installed) = ready.installed_snapshot {
            let receiving = self
                .receiving
                .take()
                .filter(|r| r.meta() == installed.snapshot)
                .expect("the core installs the snapshot it received");
            let file = receiving.finish(&self.dir)?;
            let index = installed.snapshot.last_index;
            if installed.log_kept {
                self.log.compact(index)?;
            } else {
                self.log.discard_all(index + 1)?;
            }
            self.snapshot = Some(Arc::new(file));
        }
        if let Some(from) = ready.truncate_from {
            self.log.truncate_from(from)?;
        }
        self.log.append(&ready.appended)?;
        if sync_log {
            self.sync_log()?;
        }
        Ok(())
    }

    /// Makes a snapshot of our own, written with [`SnapshotWriter`], the
    /// current one, then deletes the log segments holding nothing after
    /// `cut` (at most the snapshot's last index: the core keeps a few
    /// trailing entries). Returns how many segments went.
    pub fn install_own(
        &mut self,
        written: WrittenSnapshot,
        cut: Index,
    ) -> Result<usize, StorageError> {
        assert!(cut <= written.meta.last_index);
        let file = written.make_current(&self.dir)?;
        self.snapshot = Some(Arc::new(file));
        self.log.compact(cut)
    }

    /// The current snapshot, if any.
    pub fn snapshot(&self) -> Option<Arc<SnapshotFile>> {
        self.snapshot.clone()
    }

    /// This node's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of log on disk, all segments together.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// Bytes of the records after `index` (those a snapshot up to `index`
    /// does not cover).
    pub fn log_bytes_after(&self, index: Index) -> u64 {
        self.log.bytes_after(index)
    }

    /// Whether log writes are not yet known durable.
    pub fn needs_sync(&self) -> bool {
        self.log.needs_sync()
    }

    /// Makes every log write so far durable.
    pub fn sync_log(&mut self) -> Result<(), StorageError> {
        self.log.sync()
    }

    /// A handle for syncing the log without holding `self` (so without
    /// the node's lock): note [`Storage::written`] under the lock, call
    /// [`LogSyncer::sync`] with it released, then report the noted count
    /// with [`Storage::synced_through`]. Take a new one for each sync: the
    /// segment appended to changes as the log grows.
    pub fn log_syncer(&self) -> Result<LogSyncer, StorageError> {
        Ok(LogSyncer {
            file: self.log.active_handle()?,
            path: self.log.active_path().to_path_buf(),
        })
    }

    /// The count of writes a sync started now would cover.
    pub fn written(&self) -> u64 {
        self.log.written()
    }

    /// A sync that started when `written()` was `count` has ended.
    pub fn synced_through(&mut self, count: u64) {
        self.log.synced_through(count);
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

/// Deletes `path`; one already gone is fine.
pub(crate) fn remove(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path, "delete")(e)),
        _ => Ok(()),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
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
        lost_through: 0,
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

pub(crate) fn decode_record(line: &[u8], expected: Index) -> Result<Entry, String> {
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
    let e = Entry::parse(json).map_err(|e| format!("bad JSON: {e}"))?;
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

    fn open(dir: &Path) -> Result<(Storage, Recovered), StorageError> {
        Storage::open(dir, SegmentLimits::default())
    }

    fn first_segment(dir: &Path) -> PathBuf {
        dir.join(segment_name(1))
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
            let (mut s, rec) = open(dir.path()).unwrap();
            assert_eq!(rec.hard_state, HardState::default());
            assert!(rec.entries.is_empty());
            s.persist(
                &Ready {
                    hard_state: Some(HardState {
                        term: 3,
                        voted_for: Some(2),
                        lost_through: 0,
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
        let (_s, rec) = open(dir.path()).unwrap();
        assert_eq!(
            rec.hard_state,
            HardState {
                term: 3,
                voted_for: Some(2),
                lost_through: 0,
            }
        );
        assert_eq!(rec.entries, vec![entry(1, 1, "a"), entry(2, 3, "B")]);
        assert!(rec.torn_tail.is_none());
        let text = std::fs::read_to_string(first_segment(dir.path())).unwrap();
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
        let (mut s, rec) = open(dir.path()).unwrap();
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
        let (_s, rec) = open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 3);
        assert!(!dir.path().join("log.jsonl").exists(), "renamed");
        let text = std::fs::read_to_string(first_segment(dir.path())).unwrap();
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
        let _first = open(dir.path()).unwrap();
        assert!(matches!(open(dir.path()), Err(StorageError::Locked { .. })));
    }

    #[test]
    fn a_torn_final_record_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = open(dir.path()).unwrap();
            s.persist(
                &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b")]),
                true,
            )
            .unwrap();
        }
        let path = first_segment(dir.path());
        let good = std::fs::read(&path).unwrap();
        let mut torn = good.clone();
        let mut third = Vec::new();
        encode_record(&entry(3, 1, "c"), &mut third);
        torn.extend_from_slice(&third[..third.len() / 2]); // crash mid-write
        std::fs::write(&path, &torn).unwrap();
        let (mut s, rec) = open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 2);
        assert_eq!(
            rec.torn_tail,
            Some((path.clone(), good.len() as u64, (third.len() / 2) as u64))
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
        assert_eq!(open(dir.path()).unwrap().1.entries.len(), 3);
    }

    #[test]
    fn a_complete_final_record_with_a_bad_checksum_is_torn_too() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = open(dir.path()).unwrap();
            s.persist(
                &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b")]),
                true,
            )
            .unwrap();
        }
        let path = first_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 4] ^= 0x01; // flip a bit inside the last record's JSON
        std::fs::write(&path, &bytes).unwrap();
        let (_, rec) = open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 1);
        assert!(rec.torn_tail.is_some());
    }

    #[test]
    fn damage_before_the_tail_stops_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = open(dir.path()).unwrap();
            s.persist(
                &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]),
                true,
            )
            .unwrap();
        }
        let path = first_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second + 20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = open(dir.path()).err().expect("must refuse to start");
        let msg = err.to_string();
        assert!(
            msg.contains(&segment_name(1)) && msg.contains(&format!("byte offset {second}")),
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
        let msg = open(dir.path()).err().expect("must refuse").to_string();
        assert!(
            msg.contains("state.json") && msg.contains("corrupt at byte offset"),
            "{msg}"
        );
    }

    // ----- Segments and snapshots -----

    fn small_segments() -> SegmentLimits {
        SegmentLimits {
            bytes: 1 << 20,
            entries: 3,
        }
    }

    fn segment_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("log-"))
            .collect();
        names.sort();
        names
    }

    /// Writes our own snapshot of `bytes` covering up to (index, term).
    fn own_snapshot(s: &mut Storage, index: Index, term: u64, bytes: &str) -> SnapshotMeta {
        let mut w = SnapshotWriter::create(s.dir(), index, term).unwrap();
        w.write_all(bytes.as_bytes()).unwrap();
        let written = w.finish().unwrap();
        let meta = written.meta;
        s.install_own(written, index).unwrap();
        meta
    }

    #[test]
    fn segments_roll_and_compaction_deletes_only_whole_covered_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path(), small_segments()).unwrap();
            for i in 1..=8 {
                s.persist(&ready_appending(vec![entry(i, 1, "x")]), true)
                    .unwrap();
            }
            assert_eq!(
                segment_names(dir.path()),
                [segment_name(1), segment_name(4), segment_name(7)]
            );
            // A snapshot up to 5 covers the first segment only.
            let meta = own_snapshot(&mut s, 5, 1, "state at 5");
            assert_eq!(meta.size, 10);
            assert_eq!(
                segment_names(dir.path()),
                [segment_name(4), segment_name(7)]
            );
            s.persist(&ready_appending(vec![entry(9, 1, "y")]), true)
                .unwrap();
        }
        let (s, rec) = Storage::open(dir.path(), small_segments()).unwrap();
        let snapshot = rec.snapshot.expect("a snapshot");
        assert_eq!((snapshot.meta.last_index, snapshot.meta.last_term), (5, 1));
        let mut state = String::new();
        std::io::Read::read_to_string(&mut snapshot.body(), &mut state).unwrap();
        assert_eq!(state, "state at 5");
        let indices: Vec<Index> = rec.entries.iter().map(|e| e.index).collect();
        assert_eq!(indices, [6, 7, 8, 9], "only what follows the snapshot");
        assert!(s.log_bytes() > 0);
        let header = std::fs::read_to_string(dir.path().join(SNAPSHOT_FILE)).unwrap();
        assert!(
            header.starts_with(r#"{"last_index":5,"last_term":1,"size":10,"crc32":""#),
            "{header}"
        );
    }

    #[test]
    fn a_cut_across_segments_removes_the_later_ones_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path(), small_segments()).unwrap();
            let entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            let entries: Vec<Entry> = (4..=8).map(|i| entry(i, 1, "b")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            assert_eq!(
                segment_names(dir.path()),
                [segment_name(1), segment_name(4)]
            );
            s.persist(
                &Ready {
                    truncate_from: Some(3),
                    appended: vec![entry(3, 2, "c")],
                    ..Ready::default()
                },
                true,
            )
            .unwrap();
            assert_eq!(segment_names(dir.path()), [segment_name(1)]);
        }
        let (_, rec) = Storage::open(dir.path(), small_segments()).unwrap();
        assert_eq!(
            rec.entries,
            vec![entry(1, 1, "a"), entry(2, 1, "a"), entry(3, 2, "c")]
        );
    }

    /// Figure 13: chunks arrive into snapshot.recv; installing makes it
    /// current and keeps (rule 6) or discards (rule 7) the log.
    fn install(s: &mut Storage, meta: SnapshotMeta, bytes: &str, log_kept: bool) {
        let (a, b) = bytes.split_at(bytes.len() / 2);
        let chunk = |offset: usize, data: &str| crate::consensus::SnapshotChunk {
            snapshot: meta,
            offset: offset as u64,
            data: data.into(),
        };
        s.persist(
            &Ready {
                snapshot_chunks: vec![chunk(0, a)],
                ..Ready::default()
            },
            true,
        )
        .unwrap();
        assert!(s.dir().join("snapshot.recv").exists());
        s.persist(
            &Ready {
                snapshot_chunks: vec![chunk(a.len(), b)],
                installed_snapshot: Some(crate::consensus::InstalledSnapshot {
                    snapshot: meta,
                    log_kept,
                }),
                ..Ready::default()
            },
            true,
        )
        .unwrap();
        assert!(!s.dir().join("snapshot.recv").exists());
    }

    fn meta(index: Index, term: u64, bytes: &str) -> SnapshotMeta {
        SnapshotMeta {
            last_index: index,
            last_term: term,
            size: bytes.len() as u64,
            crc32: checksum(bytes.as_bytes()),
        }
    }

    #[test]
    fn an_installed_snapshot_discards_a_log_lacking_its_end_and_keeps_one_holding_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path(), small_segments()).unwrap();
            let entries: Vec<Entry> = (1..=4).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            install(&mut s, meta(10, 3, "state ten"), "state ten", false);
            assert_eq!(segment_names(dir.path()), [segment_name(11)]);
            s.persist(&ready_appending(vec![entry(11, 3, "b")]), true)
                .unwrap();
        }
        {
            let (mut s, rec) = Storage::open(dir.path(), small_segments()).unwrap();
            assert_eq!(rec.snapshot.unwrap().meta.last_index, 10);
            assert_eq!(rec.entries, vec![entry(11, 3, "b")]);
            let entries: Vec<Entry> = (12..=13).map(|i| entry(i, 3, "c")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            install(&mut s, meta(12, 3, "twelve"), "twelve", true);
        }
        let (_, rec) = Storage::open(dir.path(), small_segments()).unwrap();
        assert_eq!(rec.snapshot.unwrap().meta.last_index, 12);
        assert_eq!(rec.entries, vec![entry(13, 3, "c")]);
    }

    #[test]
    fn an_install_interrupted_before_the_log_was_discarded_is_finished_at_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path(), small_segments()).unwrap();
            let entries: Vec<Entry> = (1..=6).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
        }
        // The snapshot became current (index 5 of term 2, which our entry
        // 5 of term 1 contradicts), then the crash: the log is still there.
        let bytes = "state";
        let mut file = snapshot_file::header_line(&meta(5, 2, bytes));
        file.extend_from_slice(bytes.as_bytes());
        std::fs::write(dir.path().join(SNAPSHOT_FILE), file).unwrap();
        std::fs::write(dir.path().join("snapshot.tmp"), "half written").unwrap();
        let (_, rec) = Storage::open(dir.path(), small_segments()).unwrap();
        assert!(rec.entries.is_empty(), "entry 6 followed another entry 5");
        assert!(rec.discarded_log.is_some());
        assert_eq!(segment_names(dir.path()), [segment_name(6)]);
        assert!(
            !dir.path().join("snapshot.tmp").exists(),
            "leftover removed"
        );
    }

    #[test]
    fn a_damaged_snapshot_stops_the_node_naming_the_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path(), small_segments()).unwrap();
            let entries: Vec<Entry> = (1..=4).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            own_snapshot(&mut s, 4, 1, "some state");
        }
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let msg = Storage::open(dir.path(), small_segments())
            .err()
            .expect("must refuse")
            .to_string();
        assert!(
            msg.contains(SNAPSHOT_FILE) && msg.contains("byte offset 128") && msg.contains("CRC"),
            "{msg}"
        );
        bytes.truncate(last);
        std::fs::write(&path, &bytes).unwrap();
        let msg = Storage::open(dir.path(), small_segments())
            .err()
            .expect("must refuse a short one too")
            .to_string();
        assert!(msg.contains("bytes of state follow"), "{msg}");
    }

    #[test]
    fn a_segment_missing_from_the_middle_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path(), small_segments()).unwrap();
            let entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            let entries: Vec<Entry> = (4..=6).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            let entries: Vec<Entry> = (7..=7).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
        }
        std::fs::remove_file(dir.path().join(segment_name(4))).unwrap();
        let msg = Storage::open(dir.path(), small_segments())
            .err()
            .expect("entries 4..6 are gone")
            .to_string();
        assert!(msg.contains(&segment_name(7)), "{msg}");
    }
}
