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

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {op} failed: {source}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// Another process holds the directory's lock; `pid` is the one it
    /// recorded there once it served, if it got that far.
    #[error("{}", locked_text(.path, *.pid))]
    Locked { path: PathBuf, pid: Option<u32> },
    /// Damage that a crash cannot explain.
    #[error("{}: corrupt at byte offset {offset}: {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The directory holds another server's state.
    #[error("{}", wrong_node_text(.path, .found, .expected))]
    WrongNode {
        path: PathBuf,
        found: Identity,
        expected: Identity,
    },
    /// Neither copy of the term and vote can be trusted, but a log or
    /// snapshot shows the server has run: it may have voted in a term it
    /// no longer knows (`why` says what is wrong with each copy).
    #[error(
        "{}: the term and vote are lost ({why}), but the log or snapshot shows this node has run (last term {last_term}). It may have voted in a term it no longer knows, and voting again could elect two leaders in one term. Find the highest term any node shows (raftctl status), then start this node once with --vote-floor TERM at least that high: it will vote in no term up to it",
        .dir.display()
    )]
    VoteLost {
        dir: PathBuf,
        why: String,
        last_term: u64,
    },
    /// The server was removed from its cluster (`removed.txt` says when
    /// and by which membership): its id is never used again.
    #[error(
        "{}: {text}; a removed server cannot rejoin under its old id: to bring this machine back, add it as a new server (raftctl add NEW_ID HOST:PORT) and start it with an empty --state-dir",
        .path.display()
    )]
    Removed { path: PathBuf, text: String },
    /// `--vote-floor` was given for a directory whose vote is intact.
    #[error(
        "{}: the term and vote are intact; --vote-floor is only for a node whose state.json and state.copy.json are both lost",
        .path.display()
    )]
    VoteFloorRefused { path: PathBuf },
}

fn locked_text(path: &Path, pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(
            "{}: in use by a running node (pid {pid}); stop it first (kill -TERM {pid}), or give this one another --state-dir",
            path.display()
        ),
        None => format!(
            "{}: in use by another running node (lock held)",
            path.display()
        ),
    }
}

fn wrong_node_text(path: &Path, found: &Identity, expected: &Identity) -> String {
    if found.node != expected.node {
        format!(
            "{}: this is the state of node {} (of cluster {}), not of node {}: start node {} on it, or give node {} its own --state-dir (a node started on another's votes and log can lose acknowledged writes)",
            path.display(),
            found.node,
            found.cluster,
            expected.node,
            found.node,
            expected.node
        )
    } else {
        format!(
            "{}: this state belongs to cluster {}, but the configuration now describes cluster {} (other members or addresses). To go on with the old cluster, start every node with its configuration, or with --cluster-id {} if only addresses changed; to start a new cluster, remove this node's state directory (its data is lost)",
            path.display(),
            found.cluster,
            expected.cluster,
            found.cluster
        )
    }
}

/// The directory entries of newly created files (and of the node's
/// directory itself) are durable only once their directories are.
fn sync_dir_and_parent(dir: &Path) -> Result<(), StorageError> {
    sync_dir(dir)?;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Creates `dir` if need be and takes its lock, which the kernel drops
/// when the process ends (so a crashed node never leaves it held).
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
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
    Ok(lock)
}

/// A damaged snapshot: the error, and the index its header claims.
type SnapshotDamage = (StorageError, Index);

/// The snapshot at `path`, if there is one; with `heal`, a damaged one
/// is reported rather than refused.
fn open_snapshot(
    path: &Path,
    heal: bool,
) -> Result<(Option<Arc<SnapshotFile>>, Option<SnapshotDamage>), StorageError> {
    if !path.exists() {
        return Ok((None, None));
    }
    match SnapshotFile::open(path) {
        Ok(file) => Ok((Some(Arc::new(file)), None)),
        Err(e) if heal && matches!(e, StorageError::Corrupt { .. }) => {
            let claimed = snapshot_file::claimed_index(path);
            Ok((None, Some((e, claimed))))
        }
        Err(e) => Err(e),
    }
}

/// The snapshot is damaged: without it the log has nothing to run on
/// from, so both go (the snapshot aside), and the leader sends a
/// snapshot again. Returns the loss, taking in an `earlier` one.
fn snapshot_lost(
    recovered: &mut segments::RecoveredLog,
    earlier: Option<Loss>,
    (error, claimed): SnapshotDamage,
    path: &Path,
) -> Result<Loss, StorageError> {
    let aside = snapshot_file::set_aside(path)?;
    let last = recovered.log.next_index() - 1;
    recovered.log.discard_all(1)?;
    recovered.entries.clear();
    let earlier = earlier.as_ref().map_or(0, |l| l.through);
    Ok(Loss {
        through: claimed.max(last).max(earlier),
        what: format!(
            "{error}; moved it aside to {}, and discarded the log after it (to index {last}), which has nothing to run on from",
            aside.display()
        ),
    })
}

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

/// Written when the server learns it was removed from its cluster; while
/// it exists the directory does not start.
pub const REMOVED_FILE: &str = "removed.txt";

fn refuse_if_removed(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(REMOVED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Err(StorageError::Removed {
            path,
            text: text.trim().to_string(),
        }),
        Err(_) => Ok(()),
    }
}

impl Storage {
    /// Records, durably, that this server was removed from its cluster
    /// (`text` says when and how): the directory will not start again.
    pub fn mark_removed(&self, text: &str) -> Result<(), StorageError> {
        let path = self.dir.join(REMOVED_FILE);
        let tmp = self.dir.join("removed.tmp");
        std::fs::write(&tmp, format!("{text}\n")).map_err(io_err(&tmp, "write"))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp, "fsync"))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))?;
        sync_dir(&self.dir)
    }

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
        let lock = lock_dir(dir)?;
        refuse_if_removed(dir)?;
        let state_copies = state_file::read(dir, &options.identity)?;
        // Snapshots a crash left half written or half received.
        for leftover in [snapshot_file::WRITING_FILE, snapshot_file::RECEIVING_FILE] {
            remove(&dir.join(leftover))?;
        }
        let mut notes = Vec::new();
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (snapshot, mut snapshot_damage) = open_snapshot(&snapshot_path, options.heal)?;
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
        if let Some(damage) = snapshot_damage {
            loss = Some(snapshot_lost(&mut recovered, loss, damage, &snapshot_path)?);
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
        sync_dir_and_parent(dir)?;
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
        if let Some(installed) = &ready.installed_snapshot {
            let receiving = self
                .receiving
                .take()
                .filter(|r| r.meta() == installed.snapshot)
                .expect("the core installs the snapshot it received");
            let file = receiving.finish(&self.dir, &installed.membership)?;
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
    pub fn log_syncer(&self) -> LogSyncer {
        LogSyncer {
            file: self.log.active_handle(),
            path: self.log.active_path().to_path_buf(),
        }
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

    fn sync_log(&mut self) -> Result<(), StorageError> {
        Storage::sync_log(self)
    }
}

/// Syncs the log from another thread; see [`Storage::log_syncer`].
pub struct LogSyncer {
    file: Arc<File>,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LineError {
    /// Not 8 characters, a space and more.
    #[error("not in `CRC JSON` form")]
    Form,
    /// The first 8 characters are not hex digits.
    #[error("checksum is not 8 hex digits")]
    Hex,
    /// The JSON's CRC-32 is not the one written before it.
    #[error("checksum mismatch")]
    Mismatch,
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
mod tests;
