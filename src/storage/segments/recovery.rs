//! Reading the log back at start: every segment parsed, damage judged
//! against what `log.synced` says was synced (a torn write is cut, damage
//! to synced records set aside and reported, or refused without `heal`),
//! segments a snapshot covers deleted, and the log checked to run on from
//! the snapshot. One phase per function, in the order `open` runs them.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::super::synced::{SYNCED_FILE, SyncMarker};
use super::super::{
    StorageError, aside_name, checked_json, decode_record, io_err, remove, sync_dir,
};
use super::*;
use crate::consensus::{Entry, Index};

/// What the scan of the segment files found.
struct Scan {
    /// The segments read, in order, each up to its first damaged record.
    loaded: Vec<(Segment, Vec<Entry>)>,
    /// A torn final record that was cut: (file, byte offset, bytes).
    torn_tail: Option<(PathBuf, u64, u64)>,
    /// The first damage a crash cannot explain.
    broken: Option<Broken>,
    /// Whole segments after a cut or damage: never synced (deleted) or
    /// suspect (moved aside).
    dropped: Vec<PathBuf>,
    /// The highest index of any record seen, readable or past damage.
    highest_seen: Index,
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
        let mut scan = Scan::read(dir, synced_through)?;
        let covered = scan.check_order(after);
        if let Some(b) = &scan.broken
            && !heal
        {
            return Err(StorageError::Corrupt {
                path: b.path.clone(),
                offset: b.offset,
                reason: b.reason.clone(),
            });
        }
        let moved = scan.clean_up(dir, &covered)?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut segments = Vec::new();
        for (seg, seg_entries) in scan.loaded {
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
            active: Arc::new(placeholder_file(dir)?),
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
            log.active = Arc::new(open_append(&path)?);
        }
        let kept = log.next_index() - 1;
        let found = Found {
            broken: scan.broken.as_ref(),
            moved: &moved,
            synced_through,
            highest_seen: scan.highest_seen,
            kept,
            discarded: discarded.is_some(),
        };
        let loss = found.loss(dir, heal)?;
        Ok(RecoveredLog {
            log,
            entries,
            torn_tail: scan.torn_tail,
            discarded,
            loss: loss.filter(|l| l.through > 0),
        })
    }
}

impl Scan {
    /// Parses every segment in `dir` in order. A damaged record beyond
    /// `synced_through` (or, without a marker, a damaged final record of
    /// the last segment) was never synced: the file is cut there. Any
    /// other damage is noted as `broken`; either way the segments after
    /// it are dropped.
    fn read(dir: &Path, synced_through: Option<Index>) -> Result<Scan, StorageError> {
        let mut found: Vec<(Index, PathBuf)> = Vec::new();
        let listing = std::fs::read_dir(dir).map_err(io_err(dir, "list directory"))?;
        for item in listing {
            let item = item.map_err(io_err(dir, "list directory"))?;
            if let Some(first) = item.file_name().to_str().and_then(parse_segment_name) {
                found.push((first, item.path()));
            }
        }
        found.sort();
        let mut scan = Scan {
            loaded: Vec::new(),
            torn_tail: None,
            broken: None,
            dropped: Vec::new(),
            highest_seen: 0,
        };
        let count = found.len();
        for (k, (first, path)) in found.into_iter().enumerate() {
            if scan.broken.is_some() || scan.torn_tail.is_some() {
                scan.highest_seen = scan.highest_seen.max(highest_in(&path)?);
                scan.dropped.push(path);
                continue;
            }
            let file = File::open(&path).map_err(io_err(&path, "open"))?;
            let input = BufReader::with_capacity(4 << 20, file);
            let parsed = parse(input, first, &path)?;
            scan.highest_seen = scan
                .highest_seen
                .max(parsed.entries.last().map_or(0, |e| e.index))
                .max(parsed.seen_after);
            if let Some(d) = &parsed.damage {
                let never_synced = match synced_through {
                    Some(synced) => d.index > synced,
                    None => k + 1 == count && d.tail,
                };
                if never_synced {
                    cut_file(&path, parsed.valid)?;
                    scan.torn_tail =
                        Some((path.clone(), parsed.valid, parsed.total - parsed.valid));
                } else {
                    scan.broken = Some(Broken {
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
            scan.loaded.push((segment, parsed.entries));
        }
        Ok(scan)
    }

    /// Takes out the segments a snapshot ending at `after` covers (and
    /// returns them, to delete), and checks that the rest run on without
    /// a gap: a log starting after the snapshot's next entry, or a
    /// segment not following its predecessor, is damage, and what follows
    /// it is dropped.
    fn check_order(&mut self, after: Index) -> Vec<(Segment, Vec<Entry>)> {
        // What matters starts at the last segment beginning at or before
        // the entry after the snapshot; those before it hold only covered
        // entries (a compaction a crash interrupted) and go.
        let start = self
            .loaded
            .iter()
            .rposition(|(seg, _)| seg.first <= after + 1);
        let covered: Vec<(Segment, Vec<Entry>)> = match start {
            Some(start) => self.loaded.drain(..start).collect(),
            None => Vec::new(),
        };
        if let (None, Some((seg, _))) = (start, self.loaded.first()) {
            // (The first damage found is the one reported.)
            self.broken.get_or_insert_with(|| Broken {
                path: seg.path.clone(),
                offset: 0,
                reason: format!(
                    "the log starts at index {} but the snapshot ends at {after}: entries are missing",
                    seg.first
                ),
            });
            let all = self.loaded.drain(..).map(|(seg, _)| seg.path);
            self.dropped.extend(all);
        }
        if let Some(gap) = self
            .loaded
            .windows(2)
            .position(|pair| pair[0].0.end() != pair[1].0.first)
        {
            let (before, next) = (&self.loaded[gap].0, &self.loaded[gap + 1].0);
            self.broken.get_or_insert_with(|| Broken {
                path: next.path.clone(),
                offset: 0,
                reason: format!(
                    "this segment starts at index {} but the one before ends at {}",
                    next.first,
                    before.end().saturating_sub(1)
                ),
            });
            let later: Vec<PathBuf> = self
                .loaded
                .drain(gap + 1..)
                .map(|(seg, _)| seg.path)
                .collect();
            self.dropped.splice(0..0, later);
        }
        covered
    }

    /// Deletes the covered segments; after damage keeps the readable
    /// prefix of the damaged segment with a copy of the whole file set
    /// aside, and sets aside the dropped segments (after a torn write
    /// they were never synced, and are deleted). Returns the files set
    /// aside.
    fn clean_up(
        &self,
        dir: &Path,
        covered: &[(Segment, Vec<Entry>)],
    ) -> Result<Vec<PathBuf>, StorageError> {
        for (seg, _) in covered {
            remove(&seg.path)?;
        }
        let mut moved = Vec::new();
        if let Some(b) = &self.broken
            && let Some((seg, _)) = self.loaded.iter().find(|(seg, _)| seg.path == b.path)
        {
            let aside = aside_name(&seg.path);
            std::fs::copy(&seg.path, &aside).map_err(io_err(&aside, "copy"))?;
            cut_file(&seg.path, seg.len)?;
            moved.push(aside);
        }
        for path in &self.dropped {
            if self.broken.is_some() {
                let aside = aside_name(path);
                std::fs::rename(path, &aside).map_err(io_err(path, "rename"))?;
                moved.push(aside);
            } else {
                remove(path)?; // after a torn write: never synced
            }
        }
        if !self.dropped.is_empty() {
            sync_dir(dir)?;
        }
        Ok(moved)
    }
}

/// What recovery found, for judging whether entries that may have been
/// acknowledged were lost.
struct Found<'a> {
    broken: Option<&'a Broken>,
    moved: &'a [PathBuf],
    synced_through: Option<Index>,
    highest_seen: Index,
    /// The log now ends here.
    kept: Index,
    /// The log was discarded for not running on from the snapshot.
    discarded: bool,
}

impl Found<'_> {
    /// The loss to report, if any; an error if there is one and no
    /// `heal`.
    fn loss(&self, dir: &Path, heal: bool) -> Result<Option<Loss>, StorageError> {
        let kept = self.kept;
        Ok(match (self.broken, self.synced_through) {
            (Some(b), synced) => Some(Loss {
                through: self.highest_seen.max(synced.unwrap_or(0)).max(kept),
                what: format!(
                    "{}: damaged at byte offset {}: {}; kept the log up to index {kept}, moved the rest aside to {}",
                    b.path.display(),
                    b.offset,
                    b.reason,
                    self.moved
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
            (None, Some(synced)) if synced > kept && !self.discarded => {
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
        })
    }
}

/// The first damage found that a crash cannot explain.
struct Broken {
    path: PathBuf,
    offset: u64,
    reason: String,
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
