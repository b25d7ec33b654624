//! The log on disk: a run of segment files, `log-<first index>.jsonl`,
//! each holding consecutive records (`CRC JSON` lines, see
//! [`super::encode_record`]). Appends go to the last segment; once it
//! holds [`SegmentLimits`] worth, the next append starts a new one.
//!
//! Segments exist so that compaction (§7) never rewrites what stays: once
//! a snapshot covers every entry of a segment, the file is deleted whole.
//! The segment holding the snapshot's last entry stays until a later
//! snapshot covers it too, so up to one segment's worth of covered entries
//! remains on disk (and is skipped when the log is read back).
//!
//! **Crash safety of the multi-file steps.**
//! * Compaction deletes covered segments oldest first, each file one
//!   unlink: a crash part way leaves a log that still starts at or below
//!   the snapshot's end. A segment that reappears because the directory
//!   was not synced is covered by the snapshot and skipped.
//! * A suffix is cut newest first (whole files, then `set_len` on the
//!   segment holding the cut), with the directory synced before the cut,
//!   so a crash never leaves a later segment after a shortened one.
//! * Discarding the whole log for a snapshot (Figure 13, rule 7) deletes
//!   newest first as well: what remains after a crash is a prefix of the
//!   old log, which recovery discards again (the snapshot is installed
//!   first, and a log that does not hold the snapshot's last entry with
//!   its term is discarded when read back).

mod recovery;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::synced::SyncMarker;
use super::{StorageError, encode_record, io_err, remove, sync_dir};
use crate::consensus::{Entry, Index};

/// When the last segment is full and the next append starts a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentLimits {
    pub bytes: u64,
    pub entries: u64,
}

impl Default for SegmentLimits {
    /// 8 MiB, or a million entries.
    fn default() -> Self {
        SegmentLimits {
            bytes: 8 * 1024 * 1024,
            entries: 1_000_000,
        }
    }
}

/// The file name of the segment whose first record is `first`. Zero-padded
/// so that `ls` and `cat log-*.jsonl` list segments in log order.
pub fn segment_name(first: Index) -> String {
    format!("log-{first:016}.jsonl")
}

/// The first index a segment file name stands for, if it is one.
fn parse_segment_name(name: &str) -> Option<Index> {
    let digits = name.strip_prefix("log-")?.strip_suffix(".jsonl")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The name the log had before segments: read as the segment from 1.
pub const LEGACY_LOG: &str = "log.jsonl";

#[derive(Debug)]
struct Segment {
    first: Index,
    path: PathBuf,
    /// `offsets[k]` is the byte offset of the record for `first + k`.
    offsets: Vec<u64>,
    len: u64,
}

impl Segment {
    /// One past the last index held.
    fn end(&self) -> Index {
        self.first + self.offsets.len() as Index
    }
}

/// Entries a storage fault took that the server may have acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    /// Entries up to here may have been acknowledged; some are gone.
    pub through: Index,
    /// What was found and what was done, naming files and offsets.
    pub what: String,
}

/// What [`SegmentedLog::open`] found.
pub struct RecoveredLog {
    pub log: SegmentedLog,
    /// The entries after `after`, in order.
    pub entries: Vec<Entry>,
    /// A torn final record that was cut: (file, byte offset, bytes).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Why the log read from disk was (partly) dropped at start, if it was.
    pub discarded: Option<String>,
    /// Damage to records that were synced, so perhaps acknowledged: the
    /// readable prefix was kept, the rest moved aside (only when healing).
    pub loss: Option<Loss>,
}

pub struct SegmentedLog {
    dir: PathBuf,
    /// In index order; never empty: the last is the one appended to.
    segments: Vec<Segment>,
    /// The last segment, open for appending; shared with the log writer,
    /// which syncs it with the node's lock released (`active_handle`).
    active: Arc<File>,
    limits: SegmentLimits,
    /// Counts writes to the log; `synced` is the count known durable.
    written: u64,
    synced: u64,
    /// (write count, last index written by it) for writes not yet synced.
    unsynced: VecDeque<(u64, Index)>,
    marker: SyncMarker,
}

impl SegmentedLog {
    /// Records in the marker that the log (with the snapshot before it)
    /// is whole up to where it ends now, durably: called at start once a
    /// loss found is recorded elsewhere.
    pub fn reset_marker(&mut self) -> Result<(), StorageError> {
        let last = self.next_index() - 1;
        self.marker.write(last)?;
        self.marker.sync()
    }

    /// The index the next append must have.
    pub fn next_index(&self) -> Index {
        self.segments.last().expect("never empty").end()
    }

    /// Bytes of all segment files together.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Bytes of the records after `index`.
    pub fn bytes_after(&self, index: Index) -> u64 {
        self.segments
            .iter()
            .map(|seg| {
                if seg.first > index {
                    seg.len
                } else {
                    let k = (index + 1 - seg.first) as usize;
                    seg.offsets.get(k).map_or(0, |&at| seg.len - at)
                }
            })
            .sum()
    }

    pub fn active_path(&self) -> &Path {
        &self.segments.last().expect("never empty").path
    }

    /// The segment being appended to, for syncing it from another thread.
    /// (A segment that fills up is synced when the next one starts, so
    /// syncing the last one covers every write.) The same open file, not a
    /// second descriptor: duplicating one per sync cost two system calls
    /// per group commit (issue 24's profile).
    pub fn active_handle(&self) -> Arc<File> {
        self.active.clone()
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn needs_sync(&self) -> bool {
        self.written > self.synced
    }

    /// A sync that began when the count of writes was `count` has ended.
    pub fn synced_through(&mut self, count: u64) -> Result<(), StorageError> {
        self.synced = self.synced.max(count);
        let mut last = None;
        while self
            .unsynced
            .front()
            .is_some_and(|&(c, _)| c <= self.synced)
        {
            last = self.unsynced.pop_front().map(|(_, index)| index);
        }
        match last {
            Some(index) => self.marker.write(index),
            None => Ok(()),
        }
    }

    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.needs_sync() {
            self.active
                .sync_data()
                .map_err(io_err(self.active_path(), "fsync"))?;
            self.synced_through(self.written)?;
        }
        Ok(())
    }

    /// Appends consecutive entries, starting at [`SegmentedLog::next_index`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let active = self.segments.last().expect("never empty");
        if active.len >= self.limits.bytes || active.offsets.len() as u64 >= self.limits.entries {
            self.roll()?;
        }
        let seg = self.segments.last_mut().expect("never empty");
        let mut buf = Vec::new();
        for e in entries {
            assert_eq!(e.index, seg.end(), "storage append out of order");
            seg.offsets.push(seg.len + buf.len() as u64);
            encode_record(e, &mut buf);
        }
        (&*self.active)
            .write_all(&buf)
            .map_err(io_err(&seg.path, "write"))?;
        seg.len += buf.len() as u64;
        self.written += 1;
        let last = seg.end() - 1;
        self.unsynced.push_back((self.written, last));
        Ok(())
    }

    /// Starts a new segment after the full one, which is synced first so
    /// that syncing the new one alone covers every write.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.sync()?;
        let next = self.next_index();
        self.start_segment(next)
    }

    /// Creates the segment from `first` (durably: its directory entry
    /// too) and appends there from now on.
    fn start_segment(&mut self, first: Index) -> Result<(), StorageError> {
        let path = self.dir.join(segment_name(first));
        // Appending (O_APPEND), so writes land at the end after a cut.
        // A file of this name can only be a leftover of a crash: empty it.
        self.active = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path, "create"))?,
        );
        self.active.set_len(0).map_err(io_err(&path, "truncate"))?;
        sync_dir(&self.dir)?;
        self.synced = self.written;
        self.segments.push(Segment {
            first,
            path,
            offsets: Vec::new(),
            len: 0,
        });
        Ok(())
    }

    /// Removes the records from `index` on (a conflicting suffix, Figure
    /// 2, AppendEntries rule 3), durably, before anything is appended.
    pub fn truncate_from(&mut self, index: Index) -> Result<(), StorageError> {
        if index >= self.next_index() {
            return Ok(());
        }
        // Whole segments from the newest down to the one holding `index`.
        let mut removed = false;
        while self.segments.len() > 1 && self.segments.last().expect("not empty").first > index {
            let seg = self.segments.pop().expect("not empty");
            remove(&seg.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
            let path = self.active_path().to_path_buf();
            self.active = Arc::new(open_append(&path)?);
        }
        let seg = self.segments.last_mut().expect("never empty");
        let keep = index.saturating_sub(seg.first) as usize;
        if keep < seg.offsets.len() {
            let at = seg.offsets[keep];
            self.active
                .set_len(at)
                .map_err(io_err(&seg.path, "truncate"))?;
            self.active
                .sync_data()
                .map_err(io_err(&seg.path, "fsync"))?;
            seg.offsets.truncate(keep);
            seg.len = at;
        }
        // Every write before the cut is durable too.
        self.synced = self.written;
        self.unsynced.clear();
        self.marker.write(self.next_index() - 1)
    }

    /// A snapshot covers everything up to `index`: deletes the segments
    /// holding nothing after it, oldest first. The last segment stays.
    pub fn compact(&mut self, index: Index) -> Result<usize, StorageError> {
        let covered = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].first <= index + 1)
            .count();
        for seg in self.segments.drain(..covered) {
            remove(&seg.path)?;
        }
        Ok(covered)
    }

    /// Deletes every segment, newest first, and starts an empty one at
    /// `first` (Figure 13, rule 7).
    pub fn discard_all(&mut self, first: Index) -> Result<(), StorageError> {
        while let Some(seg) = self.segments.pop() {
            remove(&seg.path)?;
        }
        sync_dir(&self.dir)?;
        self.start_segment(first)?;
        // The snapshot, installed before, holds everything up to `first`.
        self.unsynced.clear();
        self.marker.write(first - 1)
    }
}

/// Cuts `path` to `len` bytes, durably.
fn cut_file(path: &Path, len: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path, "open"))?;
    file.set_len(len).map_err(io_err(path, "truncate"))?;
    file.sync_all().map_err(io_err(path, "fsync"))
}

fn open_append(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path, "open"))
}

/// A handle to replace at once; never written.
fn placeholder_file(dir: &Path) -> Result<File, StorageError> {
    File::open(dir).map_err(io_err(dir, "open directory"))
}
