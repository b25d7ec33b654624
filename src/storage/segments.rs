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

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::synced::{SYNCED_FILE, SyncMarker};
use super::{
    StorageError, aside_name, checked_json, decode_record, encode_record, io_err, remove, sync_dir,
};
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
    /// The last segment, open for appending.
    active: File,
    limits: SegmentLimits,
    /// Counts writes to the log; `synced` is the count known durable.
    written: u64,
    synced: u64,
    /// (write count, last index written by it) for writes not yet synced.
    unsynced: VecDeque<(u64, Index)>,
    marker: SyncMarker,
}

/// The first damage found that a crash cannot explain.
struct Broken {
    path: PathBuf,
    offset: u64,
    reason: String,
}

impl SegmentedLog {
    /// Reads every segment in `dir` and keeps what follows a snapshot
    /// ending at (`after`, `after_term`) ((0, 0) without one): entries
    /// must run on from the snapshot without a gap; a log that does not
    /// hold the snapshot's last entry with its term is discarded whole
    /// (Figure 13, rule 7, finishing an install a crash interrupted), and
    /// segments wholly covered by the snapshot are deleted (finishing a
    /// compaction).
    ///
    /// A damaged record is judged by [`SYNCED_FILE`]: beyond what was
    /// synced it was never acknowledged, and is cut with everything after
    /// it (a write torn by a crash). Within what was synced it is damage
    /// to entries that may be committed: with `heal`, the readable prefix
    /// is kept, the rest moved aside to `*.damaged` files, and the loss
    /// reported, for the server to repair from the leader; without (a
    /// server with no one to repair it from), it is an error naming the
    /// file and offset. Without a marker (a directory from before them),
    /// a damaged final record is taken for a torn write, as before.
    pub fn open(
        dir: &Path,
        after: Index,
        after_term: u64,
        limits: SegmentLimits,
        heal: bool,
    ) -> Result<RecoveredLog, StorageError> {
        migrate_legacy(dir)?;
        let (marker, synced_through) = SyncMarker::open(dir)?;
        let mut found: Vec<(Index, PathBuf)> = Vec::new();
        let listing = std::fs::read_dir(dir).map_err(io_err(dir, "list directory"))?;
        for item in listing {
            let item = item.map_err(io_err(dir, "list directory"))?;
            if let Some(first) = item.file_name().to_str().and_then(parse_segment_name) {
                found.push((first, item.path()));
            }
        }
        found.sort();
        let mut loaded: Vec<(Segment, Vec<Entry>)> = Vec::new();
        let mut torn_tail = None;
        let mut broken: Option<Broken> = None;
        // Whole segments after a cut or damage: never synced (deleted) or
        // suspect (moved aside).
        let mut dropped: Vec<PathBuf> = Vec::new();
        let mut highest_seen: Index = 0;
        let count = found.len();
        for (k, (first, path)) in found.into_iter().enumerate() {
            if broken.is_some() || torn_tail.is_some() {
                highest_seen = highest_seen.max(highest_in(&path)?);
                dropped.push(path);
                continue;
            }
            let file = File::open(&path).map_err(io_err(&path, "open"))?;
            let input = BufReader::with_capacity(4 << 20, file);
            let parsed = parse(input, first, &path)?;
            highest_seen = highest_seen
                .max(parsed.entries.last().map_or(0, |e| e.index))
                .max(parsed.seen_after);
            if let Some(d) = &parsed.damage {
                let never_synced = match synced_through {
                    Some(synced) => d.index > synced,
                    None => k + 1 == count && d.tail,
                };
                if never_synced {
                    cut_file(&path, parsed.valid)?;
                    torn_tail = Some((path.clone(), parsed.valid, parsed.total - parsed.valid));
                } else {
                    broken = Some(Broken {
                        path: path.clone(),
                        offset: d.offset,
                        reason: format!("record for index {}: {}", d.index, d.reason),
                    });
                }
            }
            let segment = Segment {
                first,
                path,
                offsets: parsed.offsets,
                len: parsed.valid,
            };
            loaded.push((segment, parsed.entries));
        }
        // What matters starts at the last segment beginning at or before
        // the entry after the snapshot; those before it hold only covered
        // entries (a compaction a crash interrupted) and go.
        let start = loaded.iter().rposition(|(seg, _)| seg.first <= after + 1);
        let covered: Vec<(Segment, Vec<Entry>)> = match start {
            Some(start) => loaded.drain(..start).collect(),
            None => Vec::new(),
        };
        if let (None, Some((seg, _))) = (start, loaded.first()) {
            // (The first damage found is the one reported.)
            broken.get_or_insert_with(|| Broken {
                path: seg.path.clone(),
                offset: 0,
                reason: format!(
                    "the log starts at index {} but the snapshot ends at {after}: entries are missing",
                    seg.first
                ),
            });
            dropped.extend(loaded.drain(..).map(|(seg, _)| seg.path));
        }
        if let Some(gap) = loaded
            .windows(2)
            .position(|pair| pair[0].0.end() != pair[1].0.first)
        {
            let (before, next) = (&loaded[gap].0, &loaded[gap + 1].0);
            broken.get_or_insert_with(|| Broken {
                path: next.path.clone(),
                offset: 0,
                reason: format!(
                    "this segment starts at index {} but the one before ends at {}",
                    next.first,
                    before.end().saturating_sub(1)
                ),
            });
            let later: Vec<PathBuf> = loaded.drain(gap + 1..).map(|(seg, _)| seg.path).collect();
            dropped.splice(0..0, later);
        }
        if let Some(b) = &broken
            && !heal
        {
            return Err(StorageError::Corrupt {
                path: b.path.clone(),
                offset: b.offset,
                reason: b.reason.clone(),
            });
        }
        for (seg, _) in &covered {
            remove(&seg.path)?;
        }
        // Damage: keep the readable prefix, and a copy of the rest.
        let mut moved = Vec::new();
        if let Some(b) = &broken
            && let Some((seg, _)) = loaded.iter().find(|(seg, _)| seg.path == b.path)
        {
            let aside = aside_name(&seg.path);
            std::fs::copy(&seg.path, &aside).map_err(io_err(&aside, "copy"))?;
            cut_file(&seg.path, seg.len)?;
            moved.push(aside);
        }
        for path in &dropped {
            if broken.is_some() {
                let aside = aside_name(path);
                std::fs::rename(path, &aside).map_err(io_err(path, "rename"))?;
                moved.push(aside);
            } else {
                remove(path)?; // after a torn write: never synced
            }
        }
        if !dropped.is_empty() {
            sync_dir(dir)?;
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut segments = Vec::new();
        for (seg, seg_entries) in loaded {
            entries.extend(seg_entries);
            segments.push(seg);
        }
        // The log must run on from the snapshot: it holds the snapshot's
        // last entry (with its term), or starts right after it.
        let runs_on = after == 0
            || segments.first().is_some_and(|s| s.first == after + 1)
            || entries
                .iter()
                .any(|e| e.index == after && e.term == after_term);
        let mut log = SegmentedLog {
            dir: dir.to_path_buf(),
            active: placeholder_file(dir)?,
            segments,
            limits,
            written: 0,
            synced: 0,
            unsynced: VecDeque::new(),
            marker,
        };
        let mut discarded = None;
        if log.segments.is_empty() {
            log.start_segment(after + 1)?;
        } else if !runs_on {
            if !entries.is_empty() {
                discarded = Some(format!(
                    "the log (indices {}..={}) does not hold the snapshot's last entry (index {after}, term {after_term}); discarded it, as installing the snapshot does",
                    entries[0].index,
                    entries[entries.len() - 1].index
                ));
            }
            log.discard_all(after + 1)?;
            entries.clear();
        } else {
            entries.retain(|e| e.index > after);
            let path = log.active_path().to_path_buf();
            log.active = open_append(&path)?;
        }
        let kept = log.next_index() - 1;
        let loss = match (&broken, synced_through) {
            (Some(b), synced) => Some(Loss {
                through: highest_seen.max(synced.unwrap_or(0)).max(kept),
                what: format!(
                    "{}: damaged at byte offset {}: {}; kept the log up to index {kept}, moved the rest aside to {}",
                    b.path.display(),
                    b.offset,
                    b.reason,
                    moved
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            // Synced further than it now reaches: records or files gone
            // without a trace (a file shortened at a record boundary, a
            // last segment deleted). Not after a discard for a snapshot:
            // entries contradicting a committed snapshot were never
            // committed.
            (None, Some(synced)) if synced > kept && discarded.is_none() => {
                if !heal {
                    return Err(StorageError::Corrupt {
                        path: dir.join(SYNCED_FILE),
                        offset: 0,
                        reason: format!(
                            "the log was synced through index {synced}, but it now ends at {kept}: entries are missing"
                        ),
                    });
                }
                Some(Loss {
                    through: synced,
                    what: format!(
                        "the log was synced through index {synced} ({}), but it now ends at {kept}: entries are missing",
                        dir.join(SYNCED_FILE).display()
                    ),
                })
            }
            _ => None,
        };
        Ok(RecoveredLog {
            log,
            entries,
            torn_tail,
            discarded,
            loss: loss.filter(|l| l.through > 0),
        })
    }

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

    /// A second handle on the segment being appended to, for syncing it
    /// from another thread. (A segment that fills up is synced when the
    /// next one starts, so syncing the last one covers every write.)
    pub fn active_handle(&self) -> Result<File, StorageError> {
        self.active
            .try_clone()
            .map_err(io_err(self.active_path(), "open a second handle"))
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
        self.active
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
        self.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "create"))?;
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
            self.active = open_append(&path)?;
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

/// The highest index of a readable record in a segment.
fn highest_in(path: &Path) -> Result<Index, StorageError> {
    let file = File::open(path).map_err(io_err(path, "open"))?;
    let mut input = BufReader::new(file);
    let mut line = Vec::new();
    let mut highest = 0;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .map_err(io_err(path, "read"))?
            == 0
        {
            return Ok(highest);
        }
        if let Some(index) = record_index(&line) {
            highest = highest.max(index);
        }
    }
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

/// A log written before segments is the segment from index 1.
fn migrate_legacy(dir: &Path) -> Result<(), StorageError> {
    let legacy = dir.join(LEGACY_LOG);
    if !legacy.exists() {
        return Ok(());
    }
    let renamed = dir.join(segment_name(1));
    if renamed.exists() {
        return Err(StorageError::Corrupt {
            path: legacy,
            offset: 0,
            reason: format!(
                "both this and {} exist; remove the one that is not the log",
                renamed.display()
            ),
        });
    }
    std::fs::rename(&legacy, &renamed).map_err(io_err(&legacy, "rename"))?;
    sync_dir(dir)
}

/// The first record of a segment that does not read back.
#[derive(Debug)]
struct Damage {
    offset: u64,
    /// The index the record should have held.
    index: Index,
    reason: String,
    /// Shaped like a write a crash cut short: the last line, incomplete or
    /// failing its checks, with nothing after it.
    tail: bool,
}

/// One segment as read: the records up to the first damaged one.
struct Parsed {
    entries: Vec<Entry>,
    offsets: Vec<u64>,
    /// Length of the readable prefix.
    valid: u64,
    total: u64,
    damage: Option<Damage>,
    /// The highest index of a readable record after the damage, if any
    /// (how far the log went, for saying what was lost).
    seen_after: Index,
}

/// Parses one segment whose first record has index `first`, reading it
/// line by line through one buffer, up to its first damaged record.
fn parse(mut input: impl BufRead, first: Index, path: &Path) -> Result<Parsed, StorageError> {
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut pos = 0u64;
    let mut line = Vec::new();
    let mut damage: Option<Damage> = None;
    let mut seen_after = 0;
    let mut total = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(io_err(path, "read"))? as u64;
        if n == 0 {
            break;
        }
        total += n;
        if damage.is_some() {
            // Past the damage: only note how far the log went.
            if let Some(index) = record_index(&line) {
                seen_after = seen_after.max(index);
            }
            continue;
        }
        let expected = first + entries.len() as Index;
        let decoded = match line.strip_suffix(b"\n") {
            // No newline: the last write stopped part-way.
            None => Err("incomplete (no newline)".to_string()),
            Some(record) => decode_record(record, expected),
        };
        match decoded {
            Ok(e) => {
                offsets.push(pos);
                entries.push(e);
                pos += n;
            }
            Err(reason) => {
                let tail = input.fill_buf().map_err(io_err(path, "read"))?.is_empty();
                damage = Some(Damage {
                    offset: pos,
                    index: expected,
                    reason,
                    tail,
                });
            }
        }
    }
    Ok(Parsed {
        entries,
        offsets,
        valid: pos,
        total,
        damage,
        seen_after,
    })
}

/// The index a record line claims, if it reads as one.
fn record_index(line: &[u8]) -> Option<Index> {
    let json = checked_json(line.strip_suffix(b"\n")?).ok()?;
    Entry::parse(json).ok().map(|e| e.index)
}
