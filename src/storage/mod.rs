//! Durable state of one node, in `STATE_DIR/node<ID>/`:
//!
//! * `state.json` and `state.copy.json`: whose state this is (cluster and
//!   node id), the term and vote, and the mark of a storage fault not yet
//!   repaired; two copies, each a checksummed line replaced atomically,
//!   both written before anything depends on them (see [`state_file`]).
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
//! * `log.synced`: the index the log was last known synced through,
//!   rewritten after every sync (see [`synced`]).
//! * `snapshot.jsonl`: the latest snapshot of the state machine, with the
//!   last index and term it covers (see [`snapshot_file`]). Once it is
//!   durable, the log segments it covers are deleted whole (§7).
//! * `lock`: held (flock) while a node runs, so two processes cannot share
//!   the directory; once the node listens, it holds the node's pid.
//!
//! **Recovery: a crash or a fault.** Raft's proofs assume that what a
//! server wrote stays written; a crash keeps that promise for everything
//! synced, a damaged disk does not. So at start:
//!
//! * A record that does not read back (incomplete, failing its checksum,
//!   out of sequence) *beyond* the index `log.synced` names was never
//!   synced, hence never acknowledged: a write torn by a crash. It is cut,
//!   with everything after it, and reported. Without a `log.synced` (a
//!   directory from before it), a bad *final* record is taken for one.
//! * Anything else is a fault a crash cannot cause: a bad record within
//!   what was synced, a log ending before `log.synced` says, a segment
//!   missing from the run, a snapshot failing its checks. Its entries may
//!   be committed with this server's acknowledgement among the majority.
//!   With [`StorageOptions::heal`] (the server has peers) the readable
//!   prefix is kept, the rest set aside as `*.damaged`, and the loss
//!   recorded in the state files (`lost_through`) *before* `log.synced` is
//!   lowered; the core then keeps the server from voting for, or being, a
//!   leader that may lack what it lost, until a leader has sent it again
//!   (Alagappan et al., "Protocol-Aware Recovery for Consensus-Based
//!   Storage", FAST 2018). Without, it is an error naming the file and
//!   byte offset, and nothing is changed.
//! * The term and vote come from whichever of the two copies is later and
//!   whole; a term below the log's last term is not trusted; neither copy
//!   usable on a server that has run is an error ([`StorageError::VoteLost`]).
//!   A directory that names another node or cluster is refused before
//!   anything in it changes.

pub mod segments;
pub mod snapshot_file;
pub mod state_file;
pub mod synced;

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::consensus::{Entry, HardState, Index, NodeId, Ready, SnapshotMeta};

use segments::SegmentedLog;
pub use segments::{Loss, SegmentLimits, segment_name};
use snapshot_file::Receiving;
pub use snapshot_file::{SNAPSHOT_FILE, SnapshotFile, SnapshotWriter, WrittenSnapshot};
pub use state_file::{Identity, STATE_COPY, STATE_FILE};
pub use synced::SYNCED_FILE;

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
    /// The directory holds another server's state.
    WrongNode {
        path: PathBuf,
        found: Identity,
        expected: Identity,
    },
    /// Neither copy of the term and vote can be trusted, but a log or
    /// snapshot shows the server has run: it may have voted in a term it
    /// no longer knows (`why` says what is wrong with each copy).
    VoteLost {
        dir: PathBuf,
        why: String,
        last_term: u64,
    },
    /// `--vote-floor` was given for a directory whose vote is intact.
    VoteFloorRefused { path: PathBuf },
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
            StorageError::WrongNode {
                path,
                found,
                expected,
            } if found.node != expected.node => write!(
                f,
                "{}: this is the state of node {} (of cluster {}), not of node {}: start node {} on it, or give node {} its own --state-dir (a node started on another's votes and log can lose acknowledged writes)",
                path.display(),
                found.node,
                found.cluster,
                expected.node,
                found.node,
                expected.node
            ),
            StorageError::WrongNode {
                path,
                found,
                expected,
            } => write!(
                f,
                "{}: this state belongs to cluster {}, but the configuration now describes cluster {} (other members or addresses). To go on with the old cluster, start every node with its configuration, or with --cluster-id {} if only addresses changed; to start a new cluster, remove this node's state directory (its data is lost)",
                path.display(),
                found.cluster,
                expected.cluster,
                found.cluster
            ),
            StorageError::VoteLost {
                dir,
                why,
                last_term,
            } => write!(
                f,
                "{}: the term and vote are lost ({why}), but the log or snapshot shows this node has run (last term {last_term}). It may have voted in a term it no longer knows, and voting again could elect two leaders in one term. Find the highest term any node shows (raftctl status), then start this node once with --vote-floor TERM at least that high: it will vote in no term up to it",
                dir.display()
            ),
            StorageError::VoteFloorRefused { path } => write!(
                f,
                "{}: the term and vote are intact; --vote-floor is only for a node whose state.json and state.copy.json are both lost",
                path.display()
            ),
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

/// How to open a node's directory.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Whose directory this must be (checked against what it records).
    pub identity: Identity,
    pub limits: SegmentLimits,
    /// The server has others to repair damaged entries from: damage to
    /// synced records is cut and reported (see [`Recovered::loss`])
    /// instead of stopping the node.
    pub heal: bool,
    /// Both copies of the term and vote are known lost: start at this
    /// term, voting in none up to it (see [`StorageError::VoteLost`]).
    pub vote_floor: Option<u64>,
}

impl StorageOptions {
    /// A directory for node `node` of cluster `cluster`, with default
    /// segment limits, healing, and no vote floor.
    pub fn new(cluster: &str, node: NodeId) -> StorageOptions {
        StorageOptions {
            identity: Identity {
                cluster: cluster.to_string(),
                node,
            },
            limits: SegmentLimits::default(),
            heal: true,
            vote_floor: None,
        }
    }
}

/// What was on disk at start.
#[derive(Debug)]
pub struct Recovered {
    /// Term and vote; `lost_through` covers any loss found now.
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
    /// Damage to what may have been acknowledged, kept out and to be
    /// repaired from the leader (only with [`StorageOptions::heal`]).
    pub loss: Option<Loss>,
    /// Other things done at start (copies of the state repaired, the
    /// identity recorded), for the activity log.
    pub notes: Vec<String>,
}

pub struct Storage {
    dir: PathBuf,
    identity: Identity,
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
    pub fn open(
        dir: &Path,
        options: &StorageOptions,
    ) -> Result<(Storage, Recovered), StorageError> {
        Storage::open_restoring(dir, options, |_| ()).map(|(s, r, _)| (s, r))
    }

    /// [`Storage::open`], running `restore` on the snapshot (once its
    /// checks pass) in a second thread while the log is read: at start a
    /// node rebuilds its state machine and reads its log in parallel.
    ///
    /// In order: the lock; whose directory this is (before anything is
    /// changed); the snapshot and the log, cutting torn writes and, when
    /// healing, setting aside what is damaged; then the term and vote,
    /// checked against the log, with any loss recorded in them before
    /// the log's sync marker is lowered to where the log now ends.
    pub fn open_restoring<R: Send>(
        dir: &Path,
        options: &StorageOptions,
        restore: impl FnOnce(&SnapshotFile) -> R + Send,
    ) -> Result<(Storage, Recovered, Option<R>), StorageError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
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
        let state_copies = state_file::read(dir, &options.identity)?;
        // Snapshots a crash left half written or half received.
        for leftover in [snapshot_file::WRITING_FILE, snapshot_file::RECEIVING_FILE] {
            remove(&dir.join(leftover))?;
        }
        let mut notes = Vec::new();
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let mut snapshot_damage: Option<(StorageError, u64)> = None;
        let snapshot = if snapshot_path.exists() {
            match SnapshotFile::open(&snapshot_path) {
                Ok(file) => Some(Arc::new(file)),
                Err(e) if options.heal && matches!(e, StorageError::Corrupt { .. }) => {
                    snapshot_damage = Some((e, snapshot_file::claimed_index(&snapshot_path)));
                    None
                }
                Err(e) => return Err(e),
            }
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
            let log = SegmentedLog::open(
                dir,
                meta.last_index,
                meta.last_term,
                options.limits,
                options.heal,
            );
            let restored = worker.map(|w| w.join().expect("the restore thread panicked"));
            (log, restored)
        });
        let mut recovered = recovered?;
        let (snapshot, restored) = match restored.transpose() {
            Ok(restored) => (snapshot, restored),
            Err(e) if options.heal && matches!(e, StorageError::Corrupt { .. }) => {
                snapshot_damage = Some((e, meta.last_index));
                (None, None)
            }
            Err(e) => return Err(e),
        };
        let mut loss = recovered.loss.take();
        if let Some((error, claimed)) = snapshot_damage {
            // Without its snapshot the log has nothing to run on from:
            // both go, and the leader sends a snapshot again.
            let aside = snapshot_file::set_aside(&snapshot_path)?;
            let last = recovered.log.next_index() - 1;
            recovered.log.discard_all(1)?;
            recovered.entries.clear();
            let earlier = loss.as_ref().map_or(0, |l| l.through);
            loss = Some(Loss {
                through: claimed.max(last).max(earlier),
                what: format!(
                    "{error}; moved it aside to {}, and discarded the log after it (to index {last}), which has nothing to run on from",
                    aside.display()
                ),
            });
        }
        let evidence = state_file::Evidence {
            any: snapshot.is_some() || !recovered.entries.is_empty(),
            last_term: recovered
                .entries
                .last()
                .map_or(meta.last_term, |e| e.term)
                .max(snapshot.as_ref().map_or(0, |s| s.meta.last_term)),
        };
        let loaded = state_file::load(
            state_copies,
            dir,
            &options.identity,
            evidence,
            options.vote_floor,
        )?;
        notes.extend(loaded.notes);
        let mut hard_state = loaded.hard_state;
        if let Some(loss) = loss
            .as_ref()
            .filter(|l| l.through > hard_state.lost_through)
        {
            // Every entry we held had a term no later than the current one.
            hard_state.lost_through = loss.through;
            hard_state.lost_term = hard_state.lost_term.max(hard_state.term);
            state_file::write_both(dir, &options.identity, hard_state)?;
        }
        // The loss is recorded; from here the marker tracks the log as it
        // now is.
        recovered.log.reset_marker()?;
        // The directory entries of newly created files (and of the node's
        // directory itself) are durable only once their directories are.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let storage = Storage {
            dir: dir.to_path_buf(),
            identity: options.identity.clone(),
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
                loss,
                notes,
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
    pub fn synced_through(&mut self, count: u64) -> Result<(), StorageError> {
        self.log.synced_through(count)
    }

    /// Term and vote, to both copies (see [`state_file`]).
    fn save_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        state_file::write_both(&self.dir, &self.identity, hs)
    }
}

/// The runtime's [`Disk`](crate::service::Disk): the same calls, for the shared durability
/// policy (`service::durability`).
impl crate::service::Disk for Storage {
    type Error = StorageError;

    fn persist(&mut self, ready: &Ready, sync_log: bool) -> Result<(), StorageError> {
        Storage::persist(self, ready, sync_log)
    }

    fn needs_sync(&self) -> bool {
        Storage::needs_sync(self)
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

/// Where a damaged file is set aside: beside it, `NAME.damaged`, or
/// `NAME.damaged.2` and so on if that is taken (an earlier fault).
pub(crate) fn aside_name(path: &Path) -> PathBuf {
    let base = format!("{}.damaged", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 2;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
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
    checksummed_line(&json, buf);
    buf.push(b'\n');
}

/// Appends `CRC JSON` (no newline) to `buf`: the form of every line this
/// module writes (log records, the state files, `log.synced`), where CRC
/// is the CRC-32 of the JSON bytes in 8 hex digits.
pub(crate) fn checksummed_line(json: &[u8], buf: &mut Vec<u8>) {
    write!(buf, "{:08x} ", checksum(json)).expect("writing to a Vec cannot fail");
    buf.extend_from_slice(json);
}

/// Why a line is not a sound `CRC JSON` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not 8 characters, a space and more.
    Form,
    /// The first 8 characters are not hex digits.
    Hex,
    /// The JSON's CRC-32 is not the one written before it.
    Mismatch,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineError::Form => "not in `CRC JSON` form",
            LineError::Hex => "checksum is not 8 hex digits",
            LineError::Mismatch => "checksum mismatch",
        })
    }
}

/// The JSON of a `CRC JSON` line (without its newline), once its checksum
/// holds (see [`checksummed_line`]).
pub(crate) fn checked_json(line: &[u8]) -> Result<&[u8], LineError> {
    if line.len() < 10 || line[8] != b' ' {
        return Err(LineError::Form);
    }
    let crc = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or(LineError::Hex)?;
    let json = &line[9..];
    if checksum(json) != crc {
        return Err(LineError::Mismatch);
    }
    Ok(json)
}

/// CRC-32 (IEEE 802.3, the zlib polynomial).
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

pub(crate) fn byte_offset(text: &str, line: usize, column: usize) -> u64 {
    let before: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (before + column.saturating_sub(1)) as u64
}

pub(crate) fn decode_record(line: &[u8], expected: Index) -> Result<Entry, String> {
    let json = checked_json(line).map_err(|e| e.to_string())?;
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

    /// Node 1 of cluster "test", with nobody to heal from (the damage
    /// cases stop the node) unless a test says otherwise.
    fn options(limits: SegmentLimits) -> StorageOptions {
        StorageOptions {
            limits,
            heal: false,
            ..StorageOptions::new("test", 1)
        }
    }

    fn open(dir: &Path) -> Result<(Storage, Recovered), StorageError> {
        Storage::open(dir, &options(SegmentLimits::default()))
    }

    fn first_segment(dir: &Path) -> PathBuf {
        dir.join(segment_name(1))
    }

    /// Appends `entries`, in the term of the last (a server adopts a
    /// term, durably, before it takes entries of it).
    fn ready_appending(entries: Vec<Entry>) -> Ready {
        Ready {
            hard_state: entries.last().map(|e| HardState {
                term: e.term,
                ..HardState::default()
            }),
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
                        lost_term: 0,
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
            s.synced_through(count).unwrap();
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
                lost_term: 0,
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
        // And the state file as it was then: plain JSON, no identity.
        std::fs::write(
            dir.path().join("state.json"),
            "{\"term\":1,\"voted_for\":2}\n",
        )
        .unwrap();
        let (mut s, rec) = open(dir.path()).unwrap();
        assert_eq!(
            (rec.hard_state.term, rec.hard_state.voted_for),
            (1, Some(2))
        );
        assert!(
            rec.notes
                .iter()
                .any(|n| n.contains("node 1 of cluster test")),
            "{:?}",
            rec.notes
        );
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

    /// Entries 1 and 2 written and synced by node 1: the marker says 2.
    fn two_synced(dir: &Path) -> PathBuf {
        let (mut s, _) = open(dir).unwrap();
        s.persist(
            &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b")]),
            true,
        )
        .unwrap();
        first_segment(dir)
    }

    fn healing() -> StorageOptions {
        StorageOptions {
            heal: true,
            ..options(SegmentLimits::default())
        }
    }

    /// The three ways issue 19 found a synced tail damaged: each was cut
    /// as a torn write, silently dropping an acknowledged entry.
    #[test]
    fn a_synced_final_record_damaged_later_is_a_loss_not_a_torn_write() {
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 3] = [
            ("cut 7 bytes off", |b| b.truncate(b.len() - 7)),
            ("flip a bit inside it", |b| {
                let n = b.len();
                b[n - 4] ^= 0x01
            }),
            ("flip the newline before it", |b| {
                let first_end = b.iter().position(|&c| c == b'\n').unwrap();
                b[first_end] ^= 0x01
            }),
        ];
        for (what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let path = two_synced(dir.path());
            let mut bytes = std::fs::read(&path).unwrap();
            let good = bytes.clone();
            damage(&mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            // With nobody to repair from, the node stops, cutting nothing.
            let msg = open(dir.path()).err().expect(what).to_string();
            assert!(
                msg.contains(&segment_name(1)) && msg.contains("corrupt at byte offset"),
                "{what}: {msg}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: nothing cut");
            // With peers, it keeps what reads and marks the rest lost.
            let (_, rec) = Storage::open(dir.path(), &healing()).unwrap();
            let loss = rec.loss.expect(what);
            assert_eq!(loss.through, 2, "{what}");
            assert_eq!(rec.hard_state.lost_through, 2, "{what}: recorded");
            let kept = rec.entries.len();
            assert!(kept < 2, "{what}");
            assert!(loss.what.contains(".damaged"), "{what}: {}", loss.what);
            let aside = std::fs::read(format!("{}.damaged", path.display())).unwrap();
            assert_eq!(aside, bytes, "{what}: the damaged file is kept aside");
            assert!(good.starts_with(&std::fs::read(&path).unwrap()));
            // The mark survives a restart; nothing new is found.
            let (_, rec) = Storage::open(dir.path(), &healing()).unwrap();
            assert_eq!(
                (rec.loss, rec.hard_state.lost_through, rec.entries.len()),
                (None, 2, kept),
                "{what}"
            );
        }
    }

    #[test]
    fn a_record_written_after_the_last_sync_is_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = two_synced(dir.path());
        {
            let (mut s, _) = open(dir.path()).unwrap();
            // A leader's append, not yet synced by its log writer.
            s.persist(&ready_appending(vec![entry(3, 1, "c")]), false)
                .unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&path, &bytes).unwrap();
        let (_, rec) = open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 2);
        assert!(rec.torn_tail.is_some() && rec.loss.is_none());
        assert_eq!(rec.hard_state.lost_through, 0);
    }

    #[test]
    fn without_a_sync_marker_a_bad_final_record_is_taken_for_a_torn_write() {
        // A directory from before markers.
        let dir = tempfile::tempdir().unwrap();
        let path = two_synced(dir.path());
        std::fs::remove_file(dir.path().join(SYNCED_FILE)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 4] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let (_, rec) = open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 1);
        assert!(rec.torn_tail.is_some() && rec.loss.is_none());
    }

    #[test]
    fn a_log_cut_at_a_record_boundary_is_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = two_synced(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let first_end = bytes.iter().position(|&c| c == b'\n').unwrap() + 1;
        std::fs::write(&path, &bytes[..first_end]).unwrap();
        assert!(open(dir.path()).is_err(), "alone, the node stops");
        let (_, rec) = Storage::open(dir.path(), &healing()).unwrap();
        assert_eq!(rec.entries.len(), 1);
        assert_eq!(rec.loss.map(|l| l.through), Some(2));
    }

    #[test]
    fn damage_in_the_middle_keeps_the_prefix_and_sets_the_rest_aside() {
        let dir = tempfile::tempdir().unwrap();
        let limits = small_segments();
        {
            let (mut s, _) = Storage::open(dir.path(), &options(limits)).unwrap();
            for i in 1..=8 {
                s.persist(&ready_appending(vec![entry(i, 1, "x")]), true)
                    .unwrap();
            }
        }
        // Segments 1-3, 4-6, 7-8: damage entry 5.
        let path = dir.path().join(segment_name(4));
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes.iter().position(|&c| c == b'\n').unwrap() + 1;
        bytes[second + 15] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let opts = StorageOptions {
            heal: true,
            ..options(limits)
        };
        let (mut s, rec) = Storage::open(dir.path(), &opts).unwrap();
        let indices: Vec<Index> = rec.entries.iter().map(|e| e.index).collect();
        assert_eq!(indices, [1, 2, 3, 4]);
        let loss = rec.loss.unwrap();
        assert_eq!(loss.through, 8, "entry 8 was synced: {}", loss.what);
        assert!(
            loss.what.contains(&format!("byte offset {second}")),
            "{}",
            loss.what
        );
        assert_eq!(
            segment_names(dir.path()),
            [segment_name(1), segment_name(4)]
        );
        assert!(
            dir.path()
                .join(format!("{}.damaged", segment_name(7)))
                .exists()
        );
        // The log goes on from what was kept (the core keeps the mark in
        // every hard state it hands out, until repaired).
        let mut ready = ready_appending(vec![entry(5, 2, "y")]);
        ready.hard_state = Some(HardState {
            term: 2,
            voted_for: None,
            lost_through: 8,
            lost_term: 2,
        });
        s.persist(&ready, true).unwrap();
        drop(s);
        let (_, rec) = Storage::open(dir.path(), &opts).unwrap();
        assert_eq!(rec.entries.len(), 5);
        assert_eq!(rec.hard_state.lost_through, 8, "until the core clears it");
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

    /// Node 1 voted for 2 in term 3 and holds one entry of term 3.
    fn voted(dir: &Path) {
        let (mut s, _) = open(dir).unwrap();
        s.persist(
            &Ready {
                hard_state: Some(HardState {
                    term: 3,
                    voted_for: Some(2),
                    lost_through: 0,
                    lost_term: 0,
                }),
                appended: vec![entry(1, 3, "a")],
                ..Ready::default()
            },
            true,
        )
        .unwrap();
    }

    #[test]
    fn the_vote_survives_losing_or_damaging_either_copy() {
        type Damage = fn(&Path);
        let damages: [(&str, &str, Damage); 4] = [
            (STATE_FILE, "deleted", |p| std::fs::remove_file(p).unwrap()),
            (STATE_COPY, "deleted", |p| std::fs::remove_file(p).unwrap()),
            (STATE_FILE, "a digit changed", |p| {
                let text = std::fs::read_to_string(p).unwrap();
                std::fs::write(p, text.replace("\"term\":3", "\"term\":1")).unwrap()
            }),
            (STATE_COPY, "emptied", |p| std::fs::write(p, "").unwrap()),
        ];
        for (name, what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            voted(dir.path());
            let good = std::fs::read(dir.path().join(name)).unwrap();
            damage(&dir.path().join(name));
            let (_, rec) = open(dir.path()).unwrap();
            assert_eq!(
                (rec.hard_state.term, rec.hard_state.voted_for),
                (3, Some(2)),
                "{name} {what}"
            );
            assert!(
                rec.notes.iter().any(|n| n.contains(name)),
                "{name} {what}: {:?}",
                rec.notes
            );
            assert_eq!(
                std::fs::read(dir.path().join(name)).unwrap(),
                good,
                "{name} {what}: rewritten"
            );
        }
    }

    #[test]
    fn a_node_that_has_run_and_lost_both_copies_refuses_to_start_until_given_a_floor() {
        let dir = tempfile::tempdir().unwrap();
        voted(dir.path());
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        std::fs::remove_file(dir.path().join(STATE_COPY)).unwrap();
        let msg = open(dir.path()).err().expect("must refuse").to_string();
        assert!(
            msg.contains("may have voted")
                && msg.contains("--vote-floor")
                && msg.contains("last term 3"),
            "{msg}"
        );
        let floor = StorageOptions {
            vote_floor: Some(5),
            ..options(SegmentLimits::default())
        };
        let (_, rec) = Storage::open(dir.path(), &floor).unwrap();
        assert_eq!(
            (rec.hard_state.term, rec.hard_state.voted_for),
            (5, Some(1)),
            "as if it had voted (for itself) in term 5"
        );
        // Once is enough; a second --vote-floor is refused.
        let msg = Storage::open(dir.path(), &floor).err().unwrap().to_string();
        assert!(msg.contains("intact"), "{msg}");
        assert_eq!(open(dir.path()).unwrap().1.hard_state.term, 5);
    }

    #[test]
    fn a_term_below_the_logs_is_not_trusted() {
        // Term 0 over a log of term 3 (issue 19: a node started that way
        // and voted again in a term it had voted in).
        let dir = tempfile::tempdir().unwrap();
        voted(dir.path());
        for name in [STATE_FILE, STATE_COPY] {
            let json = r#"{"cluster":"test","node":1,"term":0,"voted_for":null}"#;
            let line = format!("{:08x} {json}\n", checksum(json.as_bytes()));
            std::fs::write(dir.path().join(name), line).unwrap();
        }
        let msg = open(dir.path()).err().expect("must refuse").to_string();
        assert!(msg.contains("says term 0, below the last term"), "{msg}");
    }

    #[test]
    fn another_nodes_directory_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        voted(dir.path());
        let before: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "lock")
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        let as_node_2 = StorageOptions::new("test", 2);
        let msg = Storage::open(dir.path(), &as_node_2)
            .err()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("state of node 1 (of cluster test), not of node 2"),
            "{msg}"
        );
        let other_cluster = StorageOptions::new("other", 1);
        let msg = Storage::open(dir.path(), &other_cluster)
            .err()
            .unwrap()
            .to_string();
        assert!(
            msg.contains(
                "belongs to cluster test, but the configuration now describes cluster other"
            ) && msg.contains("--cluster-id test"),
            "{msg}"
        );
        for (name, bytes) in before {
            assert_eq!(
                std::fs::read(dir.path().join(&name)).unwrap(),
                bytes,
                "{name}"
            );
        }
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
            msg.contains("state.json") && msg.contains("damaged at byte offset"),
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
            .filter(|n| n.starts_with("log-") && n.ends_with(".jsonl"))
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
            let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
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
        let (s, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
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
            let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
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
                    ..ready_appending(vec![entry(3, 2, "c")])
                },
                true,
            )
            .unwrap();
            assert_eq!(segment_names(dir.path()), [segment_name(1)]);
        }
        let (_, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
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
                hard_state: Some(HardState {
                    term: meta.last_term,
                    ..HardState::default()
                }),
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
            let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
            let entries: Vec<Entry> = (1..=4).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            install(&mut s, meta(10, 3, "state ten"), "state ten", false);
            assert_eq!(segment_names(dir.path()), [segment_name(11)]);
            s.persist(&ready_appending(vec![entry(11, 3, "b")]), true)
                .unwrap();
        }
        {
            let (mut s, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
            assert_eq!(rec.snapshot.unwrap().meta.last_index, 10);
            assert_eq!(rec.entries, vec![entry(11, 3, "b")]);
            let entries: Vec<Entry> = (12..=13).map(|i| entry(i, 3, "c")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            install(&mut s, meta(12, 3, "twelve"), "twelve", true);
        }
        let (_, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        assert_eq!(rec.snapshot.unwrap().meta.last_index, 12);
        assert_eq!(rec.entries, vec![entry(13, 3, "c")]);
    }

    #[test]
    fn an_install_interrupted_before_the_log_was_discarded_is_finished_at_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
            let entries: Vec<Entry> = (1..=6).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            // A leader of term 2 sends a snapshot.
            let term2 = HardState {
                term: 2,
                ..HardState::default()
            };
            s.persist(
                &Ready {
                    hard_state: Some(term2),
                    ..Ready::default()
                },
                true,
            )
            .unwrap();
        }
        // The snapshot became current (index 5 of term 2, which our entry
        // 5 of term 1 contradicts), then the crash: the log is still there.
        let bytes = "state";
        let mut file = snapshot_file::header_line(&meta(5, 2, bytes));
        file.extend_from_slice(bytes.as_bytes());
        std::fs::write(dir.path().join(SNAPSHOT_FILE), file).unwrap();
        std::fs::write(dir.path().join("snapshot.tmp"), "half written").unwrap();
        let (_, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        assert!(rec.entries.is_empty(), "entry 6 followed another entry 5");
        assert!(rec.discarded_log.is_some());
        assert_eq!(segment_names(dir.path()), [segment_name(6)]);
        assert!(
            !dir.path().join("snapshot.tmp").exists(),
            "leftover removed"
        );
    }

    /// Entries 1 to 7 and a snapshot up to 5, whose last byte is then
    /// flipped; the snapshot file's path and damaged bytes.
    fn damaged_snapshot(dir: &Path) -> (PathBuf, Vec<u8>) {
        {
            let (mut s, _) = Storage::open(dir, &options(small_segments())).unwrap();
            let entries: Vec<Entry> = (1..=7).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            own_snapshot(&mut s, 5, 1, "some state");
        }
        let path = dir.join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    #[test]
    fn a_damaged_snapshot_stops_the_node_naming_the_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut bytes) = damaged_snapshot(dir.path());
        let msg = Storage::open(dir.path(), &options(small_segments()))
            .err()
            .expect("must refuse")
            .to_string();
        assert!(
            msg.contains(SNAPSHOT_FILE) && msg.contains("byte offset 128") && msg.contains("CRC"),
            "{msg}"
        );
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).unwrap();
        let msg = Storage::open(dir.path(), &options(small_segments()))
            .err()
            .expect("must refuse a short one too")
            .to_string();
        assert!(msg.contains("bytes of state follow"), "{msg}");
    }

    #[test]
    fn a_damaged_snapshot_is_set_aside_and_the_loss_reported_when_healing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = damaged_snapshot(dir.path());
        let opts = StorageOptions {
            heal: true,
            ..options(small_segments())
        };
        let (_, rec) = Storage::open(dir.path(), &opts).unwrap();
        assert!(rec.snapshot.is_none() && rec.entries.is_empty());
        let loss = rec.loss.unwrap();
        assert_eq!(loss.through, 7, "{}", loss.what);
        assert!(loss.what.contains("CRC"), "{}", loss.what);
        assert!(!path.exists());
        assert!(dir.path().join("snapshot.jsonl.damaged").exists());
        assert_eq!(rec.hard_state.lost_through, 7);
    }

    #[test]
    fn a_segment_missing_from_the_middle_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
            let entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            let entries: Vec<Entry> = (4..=6).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
            let entries: Vec<Entry> = (7..=7).map(|i| entry(i, 1, "a")).collect();
            s.persist(&ready_appending(entries), true).unwrap();
        }
        std::fs::remove_file(dir.path().join(segment_name(4))).unwrap();
        let msg = Storage::open(dir.path(), &options(small_segments()))
            .err()
            .expect("entries 4..6 are gone")
            .to_string();
        assert!(msg.contains(&segment_name(7)), "{msg}");
    }
}
