//! The threaded runtime around the pure core.
//!
//! Threads of one node:
//!
//! * **timer**: waits on its condvar until the core's next deadline
//!   (`Raft::tick_deadline`: a follower's election timeout, a leader's
//!   CheckQuorum check or the end of its leadership transfer's time) and
//!   calls `Raft::tick`;
//! * **replicator** and **receiver**, a pair per peer, on one kept-open
//!   connection (`transport::Link`): the replicator builds each request
//!   the core has for its peer under the lock and writes it with the lock
//!   released, without waiting for the answer, so that several
//!   AppendEntries are in flight (pipelining, as far as the core's window
//!   allows); the receiver reads the answers in order and hands each to
//!   the core. Replies say what they answer, so the core itself drops one
//!   to a request of an earlier term or role (a reply to an old request
//!   says nothing about the present; the Raft Students' Guide makes the
//!   same point);
//! * **applier**: applies committed entries to the key-value store in log
//!   order, once each, with the node mutex released (the store has a lock
//!   of its own), and wakes the requests waiting for them;
//! * **log writer**: on the leader, fsyncs the log with the lock released
//!   and reports what is durable (`Raft::persisted`). Every proposal
//!   written while one fsync runs rides the next: group commit. (Anyone
//!   else syncs its log before it answers, under the lock.)
//! * **snapshotter**: once the log past the last snapshot reaches the
//!   threshold (`--snapshot-threshold`), copies the key-value store (the
//!   only time it holds the store's lock), writes the copy to a new
//!   snapshot file with no lock held, then, under the node's lock, makes
//!   it current and has the core and storage drop the log it covers (§7).
//!   A snapshot installed from the leader replaces the store through the
//!   applier, in log order.
//! * the **server** threads (see `server`), whose handlers step the core
//!   through the two services: `service::peer` for Raft RPCs and
//!   `service::client` for writes and reads.
//!
//! There is one mutex over the node's state (`State`), and one over the
//! key-value store, taken after it or alone. Whoever steps the core writes
//! the resulting `Ready` before releasing the mutex, and syncs it there
//! too, except a leader's log appends, which the log writer syncs; the core
//! counts those only once told they are durable. So every reply and
//! request built from the state follows the core's ordering contract. If
//! the disk fails, nothing more is answered: the node logs the file and
//! the error and exits with status 1 while still holding the mutex (see
//! `Shared::process_ready`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::activity;
use crate::config::{ClusterConfig, Member};
use crate::consensus::{self, Entry, Event, Index, NodeId, Raft, Role, SnapshotMeta};
use crate::events::{self, EventHub, Message};
use crate::kv::KvStore;
use crate::server::{self, Handled, Handler, ServerOptions};
use crate::service::{ClientService, PeerService, ReadTicket, Step, WriteTicket};
use crate::storage::{
    SegmentLimits, SnapshotFile, SnapshotWriter, Storage, StorageError, StorageOptions,
};
use crate::transport;
use crate::wire::{
    self, ErrorCode, FollowerStatus, NodeStatus, PeerRequest, Response, SnapshotTaken,
};

/// When a node takes a snapshot and compacts its log: once the log past
/// the last snapshot holds this many entries, or this many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotThreshold {
    Entries(u64),
    Bytes(u64),
}

impl Default for SnapshotThreshold {
    /// 64 MiB of log.
    fn default() -> Self {
        SnapshotThreshold::Bytes(64 * 1024 * 1024)
    }
}

impl SnapshotThreshold {
    /// Parses `100000` (entries) or `64MiB` (bytes; also B, KiB, GiB).
    pub fn parse(text: &str) -> Result<SnapshotThreshold, String> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a number of entries or bytes"))?;
        let threshold = match unit.trim() {
            "" => SnapshotThreshold::Entries(n),
            "B" => SnapshotThreshold::Bytes(n),
            "KiB" => SnapshotThreshold::Bytes(n << 10),
            "MiB" => SnapshotThreshold::Bytes(n << 20),
            "GiB" => SnapshotThreshold::Bytes(n << 30),
            other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
        };
        match threshold {
            SnapshotThreshold::Entries(0) | SnapshotThreshold::Bytes(0) => {
                Err("the snapshot threshold must be above 0".into())
            }
            t => Ok(t),
        }
    }

    /// The core's defaults for the entries kept after a snapshot, capped
    /// at a quarter of the threshold so that they never make the next
    /// snapshot due at once.
    fn trailing(self, cfg: &mut consensus::Config) {
        match self {
            SnapshotThreshold::Entries(n) => {
                cfg.trailing_entries = cfg.trailing_entries.min(n / 4);
            }
            SnapshotThreshold::Bytes(b) => {
                cfg.trailing_bytes = cfg.trailing_bytes.min((b / 4) as usize);
            }
        }
    }

    /// Segments of a quarter of the threshold, so that compaction can
    /// free most of the log (whole segments only are deleted).
    fn segment_limits(self) -> SegmentLimits {
        let default = SegmentLimits::default();
        match self {
            SnapshotThreshold::Entries(n) => SegmentLimits {
                entries: (n / 4).clamp(1, default.entries),
                ..default
            },
            SnapshotThreshold::Bytes(b) => SegmentLimits {
                bytes: (b / 4).clamp(4096, default.bytes),
                ..default
            },
        }
    }
}

/// The most snapshot bytes per InstallSnapshot chunk. Escaped as a JSON
/// string (at worst six bytes per byte, for control characters) it stays
/// within the 8 MiB line limit.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// How a node runs; the binary fills this from its flags.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The core's settings, this node's id (`raft.id`) and its peers among
    /// them: timings, append limits, read mode, clock drift. Checked with
    /// `consensus::Config::validate` before a node starts. The seed is
    /// the caller's (the binary takes it from the OS's randomness, so it
    /// differs between nodes and restarts); the trailing entries kept
    /// after a snapshot follow `snapshot_threshold`.
    pub raft: consensus::Config,
    pub cluster: ClusterConfig,
    /// The cluster id peer messages must carry; by default derived from
    /// the configuration (`ClusterConfig::derived_cluster_id`).
    pub cluster_id: Option<String>,
    /// This node's own directory, e.g. /tmp/state/node4.
    pub state_dir: PathBuf,
    /// `--vote-floor`: the directory's term and vote are known lost;
    /// start at this term, voting in none up to it.
    pub vote_floor: Option<u64>,
    /// Bounds connecting to a peer and each socket read or write of an RPC
    /// (not the RPC as a whole: a reply trickled in could take longer).
    pub rpc_timeout: Duration,
    /// When to take a snapshot and compact the log.
    pub snapshot_threshold: SnapshotThreshold,
    /// Lab features (`raftnode --lab`): a `lab` request may cut the node
    /// off from its peers.
    pub lab: bool,
    pub server: ServerOptions,
}

#[derive(Debug)]
pub enum NodeError {
    UnknownId(NodeId),
    /// The core's settings cannot run a server.
    Config(consensus::InvalidConfig),
    Storage(StorageError),
    /// The snapshot file passed its checks but its state does not read.
    Snapshot {
        path: PathBuf,
        error: crate::kv::SnapshotError,
    },
    Bind {
        address: String,
        source: std::io::Error,
    },
    Spawn(std::io::Error),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::UnknownId(id) => write!(f, "node id {id} is not in the configuration"),
            NodeError::Config(e) => write!(f, "invalid settings: {e}"),
            NodeError::Storage(e) => write!(f, "{e}"),
            NodeError::Snapshot { path, error } => {
                write!(
                    f,
                    "{}: cannot restore the state machine: {error}",
                    path.display()
                )
            }
            NodeError::Bind { address, source } => {
                write!(f, "cannot listen on {address}: {source}")
            }
            NodeError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for NodeError {}

/// Everything behind the one mutex.
struct State {
    /// The protocol state. Written by every thread, always under the lock,
    /// and each write is followed by `Shared::process_ready` before
    /// unlocking.
    raft: Raft,
    /// Written only inside `Shared::process_ready`, under the lock.
    storage: Storage,
    /// Committed entries (and snapshots to restore) not yet taken by the
    /// applier, in log order. Filled by `process_ready`, drained by the
    /// applier.
    apply_queue: VecDeque<Apply>,
    /// The index the applier has applied up to (the store's, as of its
    /// last batch), for the snapshotter's threshold.
    applied: Index,
    /// The threshold is stretched by this fraction, drawn anew in
    /// [0, 0.5) after each snapshot, so that the nodes of a cluster (which
    /// hold the same log) do not all write their snapshots at once
    /// (hashicorp/raft jitters its snapshot interval for the same reason).
    /// Measured with three nodes on one disk: three 60 MB snapshots synced
    /// at the same moment took writes from 9,000 to 47 in one second; one
    /// at a time, they dipped by half for the snapshot's 1.5 s.
    snapshot_jitter: f64,
    /// Checks and answers Raft RPCs; remembers what it has reported.
    peers: PeerService,
    /// Writes and linearizable reads in progress.
    clients: ClientService,
    /// Client requests waiting for an answer.
    waiters: Waiters,
    /// The core deadline the timer sleeps until (`None`: none).
    timer_deadline: Option<Duration>,
    /// Set by `Node::stop_and_exit` once any leadership handover is over;
    /// it then keeps the lock until the process exits, so today no other
    /// thread ever sees it set. The loops and handlers still check it so
    /// that they stay correct if a node is one day stopped without ending
    /// the process (in-process tests, say).
    stopping: bool,
}

struct Shared {
    id: NodeId,
    /// Time origin for the core's `now`.
    epoch: Instant,
    state: Mutex<State>,
    /// The state machine, under a lock of its own so that applying
    /// entries does not hold up the node (as LogCabin's StateMachine).
    /// Written by the applier only, in log order, with `state` released.
    /// Lock order: `state` before `kv`; a thread holding `kv` never takes
    /// `state`, so a request holding `state` waits at most one entry's
    /// apply (the applier takes `kv` per entry).
    kv: Mutex<KvStore>,
    /// One condvar per kind of waiter, each notified only when something
    /// that kind waits for may have changed, so that a change wakes only
    /// who needs waking. No thread needs waking to stop:
    /// `Node::stop_and_exit` ends the process while holding the lock.
    ///
    /// Replicators wait here for a request to become due for their peer
    /// (new entries, a new commit index, a read round, a role change).
    /// Notified (`notify_all`) by `process_ready` after every input to the
    /// core.
    changed: Condvar,
    /// The timer waits here for its election deadline. Notified by
    /// `process_ready` only when the deadline moved earlier than the one
    /// the timer sleeps until (`State::timer_deadline`): a deadline that
    /// moved later (every heartbeat a follower receives) is found when the
    /// timer wakes at the old one.
    timer: Condvar,
    /// The applier waits here for committed entries. Notified by
    /// `process_ready` when it queues some.
    committed: Condvar,
    // Client requests waiting for their answer each have a condvar of
    // their own, in `State::waiters`.
    /// Wakes the log writer: notified by `process_ready` when a leader has
    /// written log entries that are not yet durable.
    log_written: Condvar,
    /// Wakes the snapshotter: notified by the applier when the log past
    /// the snapshot has reached the threshold.
    snapshot_due: Condvar,
    snapshot_threshold: SnapshotThreshold,
    /// The longest election timeout: bounds a leadership transfer.
    election_timeout: Duration,
    /// Held while a snapshot is taken: one at a time (the snapshotter's,
    /// or one asked for with `raftctl snapshot`).
    snapshotting: Mutex<()>,
    /// Publishes what the activity log records to subscribers (`events`).
    events: Arc<EventHub>,
    /// Lab features are on (`--lab`).
    lab: bool,
    /// Lab: cut off from every peer. Its Raft messages are neither sent
    /// nor answered, as in a network partition; clients are still served
    /// (and told `not_leader` or time out, as the cut requires).
    isolated: AtomicBool,
}

/// Why a snapshot chunk could not be read for sending.
enum ChunkError {
    /// Reading failed: the disk is failing; the node stops.
    Read(StorageError),
    /// The file fails its checks: it is replaced.
    Damaged(StorageError),
}

/// What the applier applies next.
enum Apply {
    Entry(Entry),
    /// Replace the store by this snapshot (installed from the leader).
    Restore(Arc<SnapshotFile>),
}

/// A running node. Dropping it does not stop the threads; the process
/// ends with `stop_and_exit`.
pub struct Node {
    shared: Arc<Shared>,
    address: std::net::SocketAddr,
}

fn now(shared: &Shared) -> Duration {
    shared.epoch.elapsed()
}

impl Node {
    /// Opens storage, binds the listening socket and starts every thread.
    pub fn start(options: NodeOptions) -> Result<Node, NodeError> {
        let me = options
            .cluster
            .member(options.raft.id)
            .ok_or(NodeError::UnknownId(options.raft.id))?
            .clone();
        let opening = Instant::now();
        let cluster_id = options
            .cluster_id
            .clone()
            .unwrap_or_else(|| options.cluster.derived_cluster_id());
        let storage_options = StorageOptions {
            limits: options.snapshot_threshold.segment_limits(),
            // Damaged entries are repaired from the leader; a server with
            // no one to repair from stops instead.
            heal: options.cluster.members.len() > 1,
            vote_floor: options.vote_floor,
            ..StorageOptions::new(&cluster_id, options.raft.id)
        };
        // The store is rebuilt from the snapshot while the log is read.
        let (storage, recovered, restored) =
            Storage::open_restoring(&options.state_dir, &storage_options, |file| {
                let started = Instant::now();
                let kv = KvStore::read_snapshot(file.body());
                (kv, started.elapsed())
            })
            .map_err(NodeError::Storage)?;
        if let Some((path, offset, bytes)) = &recovered.torn_tail {
            warn!(
                "{}: cut a torn final record ({bytes} bytes at offset {offset}) left by a crash during a write; it was never synced, so never acknowledged",
                path.display()
            );
        }
        if let Some(why) = &recovered.discarded_log {
            warn!("{}: {why}", options.state_dir.display());
        }
        for note in &recovered.notes {
            warn!("{note}");
        }
        if let Some(loss) = &recovered.loss {
            warn!(
                "storage fault: {}; entries up to {} may have been acknowledged, so this node repairs them from the leader before it votes again",
                loss.what, loss.through
            );
        }
        // The state machine starts from the snapshot, if there is one.
        let (snapshot, kv, restore_time) = match (&recovered.snapshot, restored) {
            (Some(file), Some((kv, took))) => {
                let kv = kv.map_err(|error| NodeError::Snapshot {
                    path: file.path.clone(),
                    error,
                })?;
                (file.meta, kv, took)
            }
            _ => (SnapshotMeta::default(), KvStore::new(), Duration::ZERO),
        };
        let listener =
            TcpListener::bind((me.host.as_str(), me.port)).map_err(|source| NodeError::Bind {
                address: me.address(),
                source,
            })?;
        storage
            .record_pid(std::process::id())
            .map_err(NodeError::Storage)?;

        let peers: Vec<Member> = options
            .cluster
            .members
            .iter()
            .filter(|m| m.id != options.raft.id)
            .cloned()
            .collect();
        let mut raft_config = options.raft.clone();
        options.snapshot_threshold.trailing(&mut raft_config);
        raft_config.validate().map_err(NodeError::Config)?;
        let epoch = Instant::now();
        let raft = Raft::restore(
            raft_config,
            recovered.hard_state,
            snapshot,
            recovered.entries,
            Duration::ZERO,
        );
        let log = raft.log();
        let from_snapshot = match snapshot.last_index {
            0 => String::new(),
            index => format!(
                "snapshot up to index {index} ({} keys, {} bytes, read in {} ms), then ",
                kv.len(),
                snapshot.size,
                restore_time.as_millis()
            ),
        };
        let started = format!(
            "started on {} in cluster {cluster_id} with term {}, voted_for {}, {from_snapshot}log {} entries (last index {}, term {}); state in {}, recovered in {} ms",
            me.address(),
            raft.term(),
            raft.voted_for()
                .map_or("none".to_string(), |v| format!("node{v}")),
            log.entries().len(),
            log.last_index(),
            log.last_term(),
            options.state_dir.display(),
            opening.elapsed().as_millis()
        );
        info!("[T{} {}] {started}", raft.term(), raft.role());
        // The first of the node's events, for watchers that see it restart.
        let events = EventHub::new(options.raft.id);
        events.note(raft.term(), raft.role(), log::Level::Info, started);
        let members = &options.cluster.members;
        let shared = Arc::new(Shared {
            id: options.raft.id,
            epoch,
            state: Mutex::new(State {
                raft,
                storage,
                apply_queue: VecDeque::new(),
                applied: kv.applied_index(),
                snapshot_jitter: rand::random::<f64>() / 2.0,
                peers: PeerService::new(options.raft.id, cluster_id.clone()),
                clients: ClientService::new(members.clone()),
                waiters: Waiters::default(),
                timer_deadline: None,
                stopping: false,
            }),
            changed: Condvar::new(),
            timer: Condvar::new(),
            kv: Mutex::new(kv),
            committed: Condvar::new(),
            log_written: Condvar::new(),
            snapshot_due: Condvar::new(),
            snapshot_threshold: options.snapshot_threshold,
            election_timeout: options.raft.election_timeout_max,
            snapshotting: Mutex::new(()),
            events,
            lab: options.lab,
            isolated: AtomicBool::new(false),
        });

        let bind_ip: Option<IpAddr> = listener
            .local_addr()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name)
                .spawn(f)
                .map(|_| ())
                .map_err(NodeError::Spawn)
        };
        {
            let s = shared.clone();
            spawn("timer".into(), Box::new(move || s.run_timer()))?;
            let s = shared.clone();
            spawn("applier".into(), Box::new(move || s.run_applier()))?;
            let s = shared.clone();
            spawn("log-writer".into(), Box::new(move || s.run_log_writer()))?;
            let s = shared.clone();
            spawn("snapshotter".into(), Box::new(move || s.run_snapshotter()))?;
        }
        for peer in peers {
            let link = Arc::new(transport::Link::new(
                peer.clone(),
                bind_ip,
                options.rpc_timeout,
            ));
            let (s, l) = (shared.clone(), link.clone());
            let cluster_id = cluster_id.clone();
            spawn(
                format!("replicate-{}", peer.id),
                Box::new(move || s.run_replicator(peer.id, &cluster_id, &l)),
            )?;
            let s = shared.clone();
            spawn(
                format!("receive-{}", peer.id),
                Box::new(move || s.run_receiver(peer.id, &link)),
            )?;
        }
        let address = server::spawn(listener, Arc::new(Service(shared.clone())), options.server)
            .map_err(NodeError::Spawn)?;
        Ok(Node { shared, address })
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Stops the node and exits the process with `code`. A leader first
    /// hands its leadership to the most up-to-date follower (thesis
    /// §3.10), so that the cluster has a new leader within milliseconds
    /// instead of an election timeout; it waits for that at most about two
    /// election timeouts. Then taking the lock waits for any write in
    /// progress (writes happen under it), and holding it until exit keeps
    /// a new one from starting.
    pub fn stop_and_exit(&self, reason: &str, code: i32) -> ! {
        self.shared.hand_over(reason);
        let mut st = self.shared.state.lock();
        st.stopping = true;
        let text = format!(
            "stopped: {reason} (commit index {}, last log index {})",
            st.raft.commit_index(),
            st.raft.log().last_index()
        );
        self.shared.note(&st, log::Level::Info, text);
        log::logger().flush();
        std::process::exit(code)
    }

    pub fn status(&self) -> NodeStatus {
        self.shared.status(&self.shared.state.lock())
    }
}

impl Shared {
    /// Takes the core's `Ready`, writes it (and syncs it, but for a
    /// leader's log appends, which the log writer syncs), logs its events,
    /// queues committed entries, routes read answers, and wakes whoever
    /// waits for what changed. Called under the lock after every input to
    /// the core.
    ///
    /// A storage failure (disk full, I/O error) is fatal: see
    /// `storage_failed`. After a restart the node recovers what reached
    /// its disk (a torn final record is cut, never acknowledged).
    fn process_ready(&self, st: &mut State) {
        let ready = st.raft.take_ready();
        // A leader's log is synced by the log writer, outside the lock;
        // anyone else's before it answers, since its replies acknowledge
        // entries (the core's contract, rules 2 and 3). That includes
        // entries a deposed leader wrote and had not synced yet.
        let leader = st.raft.role() == Role::Leader;
        if let Err(e) = st.storage.persist(&ready, !leader) {
            self.storage_failed(st, &e);
        }
        // Whether reporting durability produced output of its own (the end
        // of a repair), to be handled now rather than at the next input.
        let mut again = false;
        if !leader {
            let log = st.raft.log();
            let (index, term) = (log.last_index(), log.last_term());
            st.raft.persisted(index, term);
            again = st.raft.has_ready();
        } else if st.storage.needs_sync() {
            self.log_written.notify_one();
        }
        for event in &ready.events {
            activity::log_event(&st.raft, event);
            self.events.core(st.raft.term(), st.raft.role(), event);
        }
        let ends_waits = ready.events.iter().any(|e| {
            matches!(
                e,
                Event::RoleChanged { .. }
                    | Event::TermAdopted { .. }
                    | Event::ElectionStarted { .. }
                    | Event::Truncated { .. }
            )
        });
        if ready.installed_snapshot.is_some() {
            let file = st.storage.snapshot().expect("just installed");
            st.apply_queue.push_back(Apply::Restore(file));
            self.committed.notify_one();
        }
        if !ready.committed.is_empty() {
            st.apply_queue
                .extend(ready.committed.into_iter().map(Apply::Entry));
            self.committed.notify_one();
        }
        for read in &ready.reads {
            st.waiters.read_answered(read.ctx);
        }
        st.clients.route_reads(ready.reads);
        if ends_waits {
            st.waiters.wake_all();
        }
        let deadline = st.raft.tick_deadline();
        if deadline.is_some_and(|d| st.timer_deadline.is_none_or(|t| d < t)) {
            self.timer.notify_one();
        }
        self.changed.notify_all();
        if again {
            self.process_ready(st);
        }
    }

    /// A write or fsync failed: stop at once, still holding the lock, so
    /// that nothing built on the state that failed to reach the disk is
    /// sent. What was acknowledged before is on disk.
    fn storage_failed(&self, st: &State, e: &StorageError) -> ! {
        error!(
            "[T{} {}] cannot persist state: {e}; stopping without answering anything more",
            st.raft.term(),
            st.raft.role()
        );
        log::logger().flush();
        eprintln!("raftnode: cannot persist state: {e}");
        std::process::exit(1)
    }

    /// The leader's log writer: syncs what has been written with the lock
    /// released, then tells the core, which may then count the leader
    /// toward committing those entries (thesis §10.2.1). Proposals keep
    /// arriving and being written meanwhile; the next sync covers them all.
    fn run_log_writer(&self) {
        let mut st = self.state.lock();
        while !st.stopping {
            if st.raft.role() != Role::Leader || !st.storage.needs_sync() {
                self.log_written.wait(&mut st);
                continue;
            }
            // A handle on the segment being appended to now (full ones
            // were synced when the next began).
            let syncer = match st.storage.log_syncer() {
                Ok(syncer) => syncer,
                Err(e) => self.storage_failed(&st, &e),
            };
            // Everything in the in-memory log is written: every input is
            // followed by `process_ready` before the lock is released.
            let count = st.storage.written();
            let log = st.raft.log();
            let (index, term) = (log.last_index(), log.last_term());
            if let Err(e) = MutexGuard::unlocked(&mut st, || syncer.sync()) {
                self.storage_failed(&st, &e);
            }
            if let Err(e) = st.storage.synced_through(count) {
                self.storage_failed(&st, &e);
            }
            st.raft.persisted(index, term);
            self.process_ready(&mut st);
        }
    }

    /// Writes a line of the runtime's own to the activity log, prefixed
    /// with the node's term and role, and publishes it to subscribers.
    fn note(&self, st: &State, level: log::Level, text: String) {
        let (term, role) = (st.raft.term(), st.raft.role());
        log::log!(level, "[T{term} {role}] {text}");
        self.events.note(term, role, level, text);
    }

    /// A `lab` request: cut the node off from its peers, or reconnect it.
    fn lab(&self, st: &State, isolate: bool) -> Response {
        if !self.lab {
            return Response::error(
                ErrorCode::BadRequest,
                "lab features are off: start the node with --lab",
            );
        }
        if self.isolated.swap(isolate, Ordering::Relaxed) != isolate {
            let text = if isolate {
                "lab: cut off from every peer (Raft messages neither sent nor answered)"
            } else {
                "lab: reconnected to the peers"
            };
            self.note(st, log::Level::Warn, text.to_string());
            // Replicators waiting out a backoff try again now.
            self.changed.notify_all();
        }
        Response::Status(Box::new(self.status(st)))
    }

    /// Publishes a Raft message sent or received, if a subscriber wants
    /// messages; only then is it described.
    fn message(&self, st: &State, sent: bool, describe: impl FnOnce() -> Option<Message>) {
        if self.events.wants_messages()
            && let Some(message) = describe()
        {
            self.events
                .message(st.raft.term(), st.raft.role(), sent, message);
        }
    }

    /// Logs a refusal the peer service reported (once per kind and peer).
    fn report(&self, st: &State, line: Option<String>) {
        if let Some(line) = line {
            self.note(st, log::Level::Warn, line);
        }
    }

    fn status(&self, st: &State) -> NodeStatus {
        let snapshot = st.raft.snapshot();
        let t = now(self);
        let millis = |d: Duration| d.as_millis() as u64;
        NodeStatus {
            id: self.id,
            role: st.raft.role().to_string().to_lowercase(),
            term: st.raft.term(),
            leader_id: st.raft.leader_id(),
            commit_index: st.raft.commit_index(),
            last_log_index: st.raft.log().last_index(),
            last_applied: self.kv.lock().applied_index(),
            cluster_id: st.peers.cluster_id().to_string(),
            refused_messages: st.peers.refused(),
            snapshot_index: snapshot.last_index,
            snapshot_bytes: snapshot.size,
            log_entries: st.raft.log().entries().len() as u64,
            log_bytes: st.storage.log_bytes(),
            isolated: self.isolated.load(Ordering::Relaxed),
            subscribers: self.events.subscribers() as u64,
            log_tail_terms: {
                let entries = st.raft.log().entries();
                let tail = &entries[entries.len().saturating_sub(LOG_TAIL)..];
                tail.iter().map(|e| e.term).collect()
            },
            heard_from_leader_ms: st
                .raft
                .leader_contact()
                .map(|at| millis(t.saturating_sub(at))),
            repairing_through: Some(st.raft.hard_state().lost_through).filter(|&i| i != 0),
            followers: st
                .raft
                .followers()
                .into_iter()
                .map(|f| FollowerStatus {
                    id: f.id,
                    match_index: f.match_index,
                    next_index: f.next_index,
                    in_flight: f.in_flight as u64,
                    state: format!("{:?}", f.state).to_lowercase(),
                    reachable: f.reachable,
                    heard_ms: millis(t.saturating_sub(f.last_heard)),
                })
                .collect(),
        }
    }

    fn run_timer(&self) {
        let mut st = self.state.lock();
        while !st.stopping {
            st.raft.tick(now(self));
            self.process_ready(&mut st);
            st.timer_deadline = st.raft.tick_deadline();
            match st.timer_deadline {
                Some(deadline) => {
                    self.timer.wait_until(&mut st, self.epoch + deadline);
                }
                None => self.timer.wait(&mut st),
            }
        }
    }

    /// Sends `peer` every request the core has for it, releasing the lock
    /// for each write, without waiting for answers (the receiver gets
    /// them): several AppendEntries are in flight at once when the core's
    /// window allows (`consensus::progress`).
    fn run_replicator(&self, peer: NodeId, cluster_id: &str, link: &transport::Link) {
        // The snapshot being sent to this peer, if any.
        let mut sending: Option<Arc<SnapshotFile>> = None;
        let mut st = self.state.lock();
        while !st.stopping {
            let t = now(self);
            let Some(request) = st.raft.poll_peer(peer, t) else {
                match st.raft.peer_wakeup(peer) {
                    Some(at) => {
                        self.changed.wait_until(&mut st, self.epoch + at);
                    }
                    None => self.changed.wait(&mut st),
                }
                continue;
            };
            if let consensus::Request::AppendEntries(r) = &request
                && r.entries.is_empty()
            {
                log::trace!(
                    "heartbeat to node{peer} (term {}, commit {})",
                    r.term,
                    r.leader_commit
                );
            }
            if self.isolated.load(Ordering::Relaxed) {
                // Lab: as if the network dropped it.
                st.raft.handle_failure(peer, t);
                self.process_ready(&mut st);
                continue;
            }
            self.message(&st, true, || {
                Some(Message::request(self.id, peer, &request))
            });
            // A snapshot chunk's bytes come from the file the core's
            // request names, read with the lock released. It is the
            // current snapshot when a transfer starts, and the replicator
            // keeps it open until the transfer ends, so a newer snapshot
            // replacing it on disk meanwhile does not take its bytes away.
            let snapshot = match &request {
                consensus::Request::InstallSnapshot(r) => {
                    if sending.as_ref().is_none_or(|f| f.meta != r.snapshot) {
                        sending = st.storage.snapshot();
                    }
                    sending.clone()
                }
                _ => None,
            };
            let sent = MutexGuard::unlocked(&mut st, || {
                let mut request = request;
                if let consensus::Request::InstallSnapshot(r) = &mut request {
                    let file = snapshot
                        .filter(|f| f.meta == r.snapshot)
                        .expect("a transfer starts with the current snapshot");
                    // Before a transfer (re)starts, the file is read
                    // through and checked against its CRC-32: a follower
                    // would refuse a damaged one only after every byte.
                    if r.offset == 0 {
                        file.check().map_err(ChunkError::Damaged)?;
                    }
                    r.data = file
                        .read_chunk(r.offset, SNAPSHOT_CHUNK)
                        .map_err(|source| {
                            ChunkError::Read(StorageError::Io {
                                path: file.path.clone(),
                                op: "read",
                                source,
                            })
                        })?;
                }
                let wire_request = wire::Request::peer(cluster_id, self.id, request);
                Ok(link.send(&wire_request))
            });
            let sent = match sent {
                Ok(sent) => sent,
                Err(ChunkError::Read(e)) => self.storage_failed(&st, &e),
                Err(ChunkError::Damaged(e)) => {
                    // Not a failure of this node's durability: the state
                    // machine is whole, so a fresh snapshot replaces the
                    // file, and every transfer starts over with it.
                    let damaged = sending.take().map(|f| f.meta);
                    st.raft.handle_failure(peer, now(self));
                    self.process_ready(&mut st);
                    if let Some(damaged) = damaged {
                        self.replace_damaged_snapshot(&mut st, damaged, &e);
                    }
                    continue;
                }
            };
            if let Err(Some(e)) = sent {
                debug!("request to node{peer} failed: {e}");
                st.raft.handle_failure(peer, now(self));
                self.process_ready(&mut st);
            }
        }
    }

    /// Hands `peer`'s answers to the core as they arrive, in order. No
    /// check of term or role is needed here: each reply says what it
    /// answers, and the core drops those that no longer concern it.
    fn run_receiver(&self, peer: NodeId, link: &transport::Link) {
        let (mut reader, mut buf) = (None, Vec::new());
        loop {
            let received = link.receive(&mut reader, &mut buf);
            let mut st = self.state.lock();
            if st.stopping {
                return;
            }
            let t = now(self);
            let reply = match received {
                transport::Received::Answer(response) => {
                    let (reply, line) = st.peers.check_response(peer, response);
                    self.report(&st, line);
                    reply
                }
                transport::Received::Failed(e) => {
                    debug!("requests to node{peer} failed: {e}");
                    None
                }
                transport::Received::Superseded => continue,
            };
            match reply {
                Some(reply) => {
                    self.message(&st, false, || Some(Message::reply(peer, self.id, &reply)));
                    if let Err(rejection) = st.raft.handle_reply(peer, reply, t) {
                        let line = st.peers.reply_refused(peer, &rejection);
                        self.report(&st, line);
                    }
                }
                None => st.raft.handle_failure(peer, t),
            }
            self.process_ready(&mut st);
        }
    }

    fn run_applier(&self) {
        let mut st = self.state.lock();
        loop {
            while st.apply_queue.is_empty() && !st.stopping {
                self.committed.wait(&mut st);
            }
            if st.stopping {
                return;
            }
            // The one ordered apply path: entries arrive in log order,
            // once each, and the store applies them (it asserts the order).
            // Only this thread takes entries off the queue, so the order
            // holds with the node lock released.
            let batch = std::mem::take(&mut st.apply_queue);
            let applied = MutexGuard::unlocked(&mut st, || {
                for item in &batch {
                    match item {
                        Apply::Entry(entry) => {
                            self.kv.lock().apply(entry);
                        }
                        Apply::Restore(file) => self.restore(file),
                    }
                }
                self.kv.lock().applied_index()
            });
            // Under the node lock, where requests check the store and
            // register before they sleep: none misses this wake-up.
            st.waiters.applied(applied);
            st.applied = applied;
            if self.snapshot_is_due(&st) {
                self.snapshot_due.notify_one();
            }
        }
    }

    /// Replaces the store by a snapshot installed from the leader. It was
    /// checked (CRC) as it arrived; one that does not read is a state
    /// machine this build cannot restore, and the node stops.
    fn restore(&self, file: &SnapshotFile) {
        let started = Instant::now();
        match KvStore::read_snapshot(file.body()) {
            Ok(kv) => {
                let keys = kv.len();
                *self.kv.lock() = kv;
                info!(
                    "restored the key-value store from the snapshot up to index {} ({keys} keys) in {} ms",
                    file.meta.last_index,
                    started.elapsed().as_millis()
                );
            }
            Err(e) => {
                error!(
                    "{}: cannot restore the state machine from the snapshot: {e}; stopping",
                    file.path.display()
                );
                log::logger().flush();
                eprintln!(
                    "raftnode: {}: cannot restore the state machine: {e}",
                    file.path.display()
                );
                std::process::exit(1)
            }
        }
    }

    /// Whether the log past the snapshot has reached the threshold, with
    /// applied entries a snapshot could cover.
    fn snapshot_is_due(&self, st: &State) -> bool {
        let base = st.raft.snapshot().last_index;
        let stretch = |n: u64| n + (n as f64 * st.snapshot_jitter) as u64;
        st.applied > base
            && match self.snapshot_threshold {
                SnapshotThreshold::Entries(n) => st.applied - base >= stretch(n),
                SnapshotThreshold::Bytes(b) => st.storage.log_bytes_after(base) >= stretch(b),
            }
    }

    /// Takes a snapshot whenever the applier says one is due.
    fn run_snapshotter(&self) {
        loop {
            {
                let mut st = self.state.lock();
                while !st.stopping && !self.snapshot_is_due(&st) {
                    self.snapshot_due.wait(&mut st);
                }
                if st.stopping {
                    return;
                }
            }
            if let Err(e) = self.take_snapshot() {
                // The log keeps growing meanwhile; try again a little later.
                warn!("cannot take a snapshot: {e}; retrying in 1 s");
                thread::sleep(Duration::from_secs(1));
            }
        }
    }

    /// Our snapshot file `damaged` failed its checks as a transfer was to
    /// start (`why`): write a fresh one from the state machine, make it
    /// current, and start every transfer over with it. Called and
    /// returning with the lock held; releases it to write.
    fn replace_damaged_snapshot(
        &self,
        st: &mut MutexGuard<'_, State>,
        damaged: SnapshotMeta,
        why: &StorageError,
    ) {
        if st.storage.snapshot().map(|f| f.meta) != Some(damaged) {
            // Another replicator replaced it already.
            st.raft.restart_snapshot_transfers();
            self.process_ready(st);
            return;
        }
        self.note(
            st,
            log::Level::Error,
            format!(
                "our snapshot up to index {} cannot be sent: {why}; taking a fresh one from the state machine and starting its transfers over",
                damaged.last_index
            ),
        );
        let taken = MutexGuard::unlocked(st, || {
            let _one_at_a_time = self.snapshotting.lock();
            self.write_snapshot(Some(damaged))
        });
        match taken {
            Ok(_) => {
                st.raft.restart_snapshot_transfers();
                self.process_ready(st);
            }
            // The transfer fails meanwhile and is retried with backoff.
            Err(e) => self.note(
                st,
                log::Level::Error,
                format!("cannot replace the damaged snapshot: {e}"),
            ),
        }
    }

    /// Takes a snapshot of the store now and compacts the log it covers.
    /// `None` when there is nothing new to cover. The store's lock is held
    /// only to copy it; the copy is written with no lock held; the node's
    /// lock only to make the file current and drop the log.
    fn take_snapshot(&self) -> Result<Option<SnapshotTaken>, StorageError> {
        let _one_at_a_time = self.snapshotting.lock();
        self.write_snapshot(None)
    }

    /// [`Shared::take_snapshot`], with the snapshotting lock held.
    /// `replacing`: the current snapshot's file is damaged; a snapshot of
    /// the same index is written too (replacing the file only), where
    /// otherwise there would be nothing new to cover.
    fn write_snapshot(
        &self,
        replacing: Option<SnapshotMeta>,
    ) -> Result<Option<SnapshotTaken>, StorageError> {
        let started = Instant::now();
        let (kv, blocked) = {
            let kv = self.kv.lock();
            let copied = Instant::now();
            (kv.clone(), copied.elapsed())
        };
        let (dir, current) = {
            let st = self.state.lock();
            (
                st.storage.dir().to_path_buf(),
                st.raft.snapshot().last_index,
            )
        };
        if kv.applied_index() < current
            || (kv.applied_index() == current && replacing.is_none_or(|d| d.last_index != current))
        {
            return Ok(None);
        }
        let mut writer = SnapshotWriter::create(&dir, kv.applied_index(), kv.applied_term())?;
        kv.write_snapshot(&mut writer)
            .map_err(|source| StorageError::Io {
                path: dir.join(crate::storage::snapshot_file::WRITING_FILE),
                op: "write",
                source,
            })?;
        let written = writer.finish()?;
        let meta = written.meta;
        let keys = kv.len();
        drop(kv);
        let mut st = self.state.lock();
        let current = st.raft.snapshot();
        if meta.last_index == current.last_index
            && replacing == Some(current)
            && meta.last_term == current.last_term
        {
            // The same state again, in a sound file.
            st.raft.snapshot_rewritten(meta);
            if let Err(e) = st.storage.install_own(written, 0) {
                self.storage_failed(&st, &e);
            }
            self.note(
                &st,
                log::Level::Warn,
                format!(
                    "snapshot up to index {} written again from the state machine ({} bytes), replacing the damaged file",
                    meta.last_index, meta.size
                ),
            );
            return Ok(None);
        }
        if meta.last_index <= current.last_index {
            written.discard(); // one from the leader got there first
            return Ok(None);
        }
        let entries_before = st.raft.log().entries().len();
        let cut = st.raft.compact(meta).expect("newer than the current one");
        let segments = match st.storage.install_own(written, cut) {
            Ok(n) => n,
            Err(e) => self.storage_failed(&st, &e),
        };
        let dropped = entries_before - st.raft.log().entries().len();
        st.snapshot_jitter = rand::random::<f64>() / 2.0;
        self.process_ready(&mut st);
        let taken = SnapshotTaken {
            taken: true,
            index: meta.last_index,
            term: meta.last_term,
            bytes: meta.size,
            keys: keys as u64,
            millis: started.elapsed().as_millis() as u64,
            store_blocked_micros: blocked.as_micros() as u64,
        };
        self.note(
            &st,
            log::Level::Info,
            format!(
                "snapshot taken up to index {} (term {}): {keys} keys, {} bytes, in {} ms (the store was blocked {} µs to copy it); dropped {dropped} log entries, deleted {segments} log segments",
                meta.last_index, meta.last_term, meta.size, taken.millis, taken.store_blocked_micros
            ),
        );
        Ok(Some(taken))
    }
}

/// The server's view of a node. Holds an `Arc` so that deferred work
/// (waiting for a commit or a read) can outlive the pool worker that
/// started it.
struct Service(Arc<Shared>);

/// A subscriber's stream (see `events`): `subscribed`, then events as
/// they come, with the node's status every `status_every` in between,
/// even while events keep coming.
struct EventStream {
    shared: Arc<Shared>,
    subscription: events::Subscription,
    status_every: Duration,
    next_status: Instant,
    started: bool,
    /// Why the subscription ended, once it has (sent after what was
    /// queued before).
    end: Option<events::StreamError>,
    ended: bool,
}

/// About how many bytes of queued events one write of a stream carries.
const STREAM_BATCH: usize = 64 * 1024;

impl Iterator for EventStream {
    type Item = Arc<str>;

    fn next(&mut self) -> Option<Arc<str>> {
        let encode =
            |r: &Response| -> Option<Arc<str>> { serde_json::to_string(r).ok().map(Into::into) };
        if !self.started {
            self.started = true;
            return encode(&Response::Subscribed {
                node: self.shared.id,
                started_ms: self.shared.events.started_ms(),
            });
        }
        if self.ended {
            return None;
        }
        if let Some(why) = self.end.take() {
            self.ended = true;
            return encode(&Response::error(ErrorCode::TooSlow, why.to_string()));
        }
        let wait = self.next_status.saturating_duration_since(Instant::now());
        let next = if wait.is_zero() {
            events::Next::Idle
        } else {
            self.subscription.next(wait)
        };
        match next {
            // Whatever else is queued goes in the same write: under load
            // a subscriber costs one wake-up and one write per batch, not
            // per event.
            events::Next::Line(first) => {
                let mut batch = String::from(&*first);
                while batch.len() < STREAM_BATCH {
                    match self.subscription.next(Duration::ZERO) {
                        events::Next::Line(line) => {
                            batch.push('\n');
                            batch.push_str(&line);
                        }
                        events::Next::Idle => break,
                        events::Next::Ended(why) => {
                            self.end = Some(why);
                            break;
                        }
                    }
                }
                Some(batch.into())
            }
            events::Next::Idle => {
                self.next_status = Instant::now() + self.status_every;
                let status = self.shared.status(&self.shared.state.lock());
                encode(&Response::Status(Box::new(status)))
            }
            events::Next::Ended(why) => {
                self.ended = true;
                encode(&Response::error(ErrorCode::TooSlow, why.to_string()))
            }
        }
    }
}

/// How many of the last log entries' terms a status carries (for the
/// web view's row of boxes).
const LOG_TAIL: usize = 40;

/// How long a write or a linearizable read waits on this node before it
/// answers `timeout`. Kept shorter than the client's own timeout so the
/// client can still try another node.
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);

fn shutting_down() -> Response {
    Response::error(ErrorCode::ShuttingDown, "node is stopping; retry elsewhere")
}

impl Handler for Service {
    fn peer(&self, request: PeerRequest) -> (Response, Option<NodeId>) {
        let shared = &self.0;
        let mut st = shared.state.lock();
        if st.stopping {
            return (shutting_down(), None);
        }
        let st = &mut *st;
        if shared.isolated.load(Ordering::Relaxed) {
            return (
                Response::error(
                    ErrorCode::Isolated,
                    "this node is cut off from its peers (lab)",
                ),
                None,
            );
        }
        let from = request.from;
        shared.message(st, false, || {
            Some(Message::request(from, shared.id, &request.rpc))
        });
        let answer = st.peers.handle(&mut st.raft, request, now(shared));
        shared.report(st, answer.report);
        // Durable before the answer leaves (the core's contract).
        shared.process_ready(st);
        shared.message(st, true, || {
            let reply = answer.response.clone().into_peer().ok()?;
            Some(Message::reply(shared.id, from, &reply))
        });
        (answer.response, answer.from_member.then_some(from))
    }

    fn admin(&self, request: wire::Request) -> Response {
        let shared = &self.0;
        let st = shared.state.lock();
        match request {
            wire::Request::IsLeader => st.clients.is_leader(&st.raft),
            wire::Request::Status => Response::Status(Box::new(shared.status(&st))),
            wire::Request::Events => Response::Events {
                events: shared.events.recent(),
            },
            wire::Request::Lab { isolate } => shared.lab(&st, isolate),
            other => Response::error(
                ErrorCode::BadRequest,
                format!("not an admin request: {other:?}"),
            ),
        }
    }

    fn subscribe(&self, request: wire::Request) -> Result<server::Lines, Response> {
        let wire::Request::Subscribe {
            recent,
            messages,
            status_ms,
        } = request
        else {
            return Err(Response::error(
                ErrorCode::BadRequest,
                format!("not a subscription: {request:?}"),
            ));
        };
        if !(100..=60_000).contains(&status_ms) {
            return Err(Response::error(
                ErrorCode::BadRequest,
                format!("status_ms must be between 100 and 60000, not {status_ms}"),
            ));
        }
        let subscription = self
            .0
            .events
            .subscribe(recent, messages)
            .map_err(|e| Response::error(ErrorCode::Busy, e.to_string()))?;
        Ok(Box::new(EventStream {
            shared: self.0.clone(),
            subscription,
            status_every: Duration::from_millis(status_ms),
            next_status: Instant::now(),
            started: false,
            end: None,
            ended: false,
        }))
    }

    fn client(&self, request: wire::Request) -> Handled {
        let shared = &self.0;
        if let wire::Request::Read { key, stale: true } = request {
            // The store alone: a stale read never waits for the node.
            return Handled::Now(ClientService::stale_read(&shared.kv.lock(), key));
        }
        if let wire::Request::Snapshot = request {
            let shared = shared.clone();
            return Handled::Later(Box::new(move || shared.snapshot_now()));
        }
        if let wire::Request::Transfer { to } = request {
            let shared = shared.clone();
            return Handled::Later(Box::new(move || shared.transfer_now(to)));
        }
        let mut st = shared.state.lock();
        if st.stopping {
            return Handled::Now(shutting_down());
        }
        let st = &mut *st;
        Handled::Now(match request {
            wire::Request::Log { from, limit } => ClientService::log(&st.raft, from, limit),
            wire::Request::Read { key, stale: false } => {
                // The store's lock only while the read starts (a lease
                // read answers from it at once): not through
                // `process_ready`, as for writes below.
                let step = st
                    .clients
                    .read(&mut st.raft, &shared.kv.lock(), key, now(shared));
                match step {
                    Step::Answer(r) => r,
                    Step::Wait(ticket) => {
                        shared.process_ready(st);
                        let shared = shared.clone();
                        return Handled::Later(Box::new(move || shared.finish_read(ticket)));
                    }
                }
            }
            wire::Request::Write(command) => {
                // The store's lock only for the session check: a guard
                // in the match's scrutinee would be held through
                // `process_ready` and its log write, stalling the applier.
                let step = st.clients.write(&mut st.raft, &shared.kv.lock(), command);
                match step {
                    Step::Answer(r) => r,
                    Step::Wait(ticket) => {
                        shared.process_ready(st);
                        let shared = shared.clone();
                        return Handled::Later(Box::new(move || shared.finish_write(ticket)));
                    }
                }
            }
            other => Response::error(
                ErrorCode::BadRequest,
                format!("not a client request: {other:?}"),
            ),
        })
    }
}

impl Shared {
    /// Before stopping: a leader hands its leadership over and waits until
    /// it hears from the new leader (so that the vote and the answers it
    /// owes leave before it exits), or the transfer is abandoned.
    fn hand_over(&self, reason: &str) {
        let mut st = self.state.lock();
        let target = match st.raft.transfer_leadership(None, now(self)) {
            Ok(target) => target,
            Err(_) => return, // not leader, or alone
        };
        self.note(
            &st,
            log::Level::Info,
            format!("{reason}: handing leadership to node{target} before stopping"),
        );
        self.process_ready(&mut st);
        let term = st.raft.term();
        let _ = self.wait_for_handover(&mut st, term, 2 * self.election_timeout);
    }

    /// Waits, under the lock, until the transfer started in `term` ends:
    /// `Ok(new leader)` once a leader of a later term is known here,
    /// `Err(true)` if it was abandoned (we still lead), `Err(false)` if
    /// `timeout` passed first.
    fn wait_for_handover(
        &self,
        st: &mut MutexGuard<State>,
        term: consensus::Term,
        timeout: Duration,
    ) -> Result<NodeId, bool> {
        let deadline = Instant::now() + timeout;
        loop {
            match st.raft.leader_id() {
                Some(l) if st.raft.term() > term => return Ok(l),
                _ if st.raft.role() == Role::Leader && st.raft.transfer().is_none() => {
                    return Err(true);
                }
                _ => {}
            }
            // Notified after every input to the core.
            if self.changed.wait_until(st, deadline).timed_out() {
                return Err(false);
            }
        }
    }

    /// `raftctl transfer`: hands leadership to `to` (or the most
    /// up-to-date follower) and answers once a new leader is known here.
    fn transfer_now(&self, to: Option<NodeId>) -> Response {
        let started = Instant::now();
        let mut st = self.state.lock();
        let term = st.raft.term();
        let target = match st.raft.transfer_leadership(to, now(self)) {
            Ok(target) => target,
            Err(consensus::TransferError::AlreadyLeader) => {
                return Response::Transferred {
                    from: self.id,
                    to: self.id,
                    term,
                    millis: 0,
                };
            }
            Err(consensus::TransferError::NotLeader { leader_hint }) => {
                return st.clients.not_leader(leader_hint);
            }
            Err(e @ consensus::TransferError::InProgress { .. }) => {
                return Response::error(ErrorCode::Internal, e.to_string());
            }
            Err(e) => return Response::error(ErrorCode::BadRequest, e.to_string()),
        };
        self.note(
            &st,
            log::Level::Info,
            format!("asked to hand leadership to node{target}"),
        );
        self.process_ready(&mut st);
        match self.wait_for_handover(&mut st, term, 2 * self.election_timeout) {
            Ok(leader) => Response::Transferred {
                from: self.id,
                to: leader,
                term: st.raft.term(),
                millis: started.elapsed().as_millis() as u64,
            },
            Err(abandoned) => Response::error(
                if abandoned {
                    ErrorCode::Internal
                } else {
                    ErrorCode::Timeout
                },
                if abandoned {
                    format!(
                        "the transfer to node{target} was abandoned: it did not start an election within an election timeout; node{} still leads",
                        self.id
                    )
                } else {
                    format!(
                        "no new leader known after {} ms",
                        started.elapsed().as_millis()
                    )
                },
            ),
        }
    }

    /// `raftctl snapshot`: takes one now, however short the log.
    fn snapshot_now(&self) -> Response {
        match self.take_snapshot() {
            Ok(Some(taken)) => Response::Snapshot(taken),
            Ok(None) => {
                let meta = self.state.lock().raft.snapshot();
                Response::Snapshot(SnapshotTaken {
                    taken: false,
                    index: meta.last_index,
                    term: meta.last_term,
                    bytes: meta.size,
                    ..SnapshotTaken::default()
                })
            }
            Err(e) => Response::error(ErrorCode::Internal, format!("cannot take a snapshot: {e}")),
        }
    }

    /// Waits, at most `WAIT_TIMEOUT`, until `poll` has an answer; `None`
    /// on timeout. `poll` runs under the lock; in between, the request
    /// sleeps on its own condvar, which `register` files where the change
    /// it waits for will wake it.
    fn wait_for(
        &self,
        mut poll: impl FnMut(&mut State) -> Option<Response>,
        register: impl Fn(&mut State, &Arc<Condvar>),
    ) -> Option<Response> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let me = Arc::new(Condvar::new());
        let mut st = self.state.lock();
        loop {
            if let Some(answer) = poll(&mut st) {
                return Some(answer);
            }
            if st.stopping {
                return Some(shutting_down());
            }
            register(&mut st, &me);
            if me.wait_until(&mut st, deadline).timed_out() {
                return poll(&mut st);
            }
        }
    }

    /// Waits for a proposed write to be applied or lost.
    fn finish_write(&self, ticket: WriteTicket) -> Response {
        let answer = self.wait_for(
            |st| st.clients.poll_write(&st.raft, &self.kv.lock(), &ticket),
            |st, me| st.waiters.until_applied(ticket.index, me),
        );
        answer.unwrap_or_else(ClientService::write_timed_out)
    }

    /// Waits for a linearizable read to be confirmed and applied.
    fn finish_read(&self, ticket: ReadTicket) -> Response {
        let answer = self.wait_for(
            |st| {
                st.clients
                    .poll_read(&st.raft, &self.kv.lock(), &ticket, now(self))
            },
            |st, me| match st.clients.confirmed_index(&ticket) {
                Some(index) => st.waiters.until_applied(index, me),
                None => st.waiters.until_read_answered(ticket.ctx, me),
            },
        );
        answer.unwrap_or_else(|| {
            self.state.lock().clients.forget_read(&ticket);
            ClientService::read_timed_out()
        })
    }
}

/// Client requests waiting on this node, each on a condvar of its own, so
/// that an apply wakes only the requests it answers instead of all of
/// them. A waiter may be filed more than once or woken for nothing; it
/// re-checks its answer each time it wakes.
#[derive(Default)]
struct Waiters {
    /// Woken once the state machine has applied up to the key.
    until_applied: BTreeMap<Index, Vec<Arc<Condvar>>>,
    /// Woken when the core answers the read with this ctx.
    until_read: HashMap<u64, Arc<Condvar>>,
}

impl Waiters {
    fn until_applied(&mut self, index: Index, waiter: &Arc<Condvar>) {
        self.until_applied
            .entry(index)
            .or_default()
            .push(waiter.clone());
    }

    fn until_read_answered(&mut self, ctx: u64, waiter: &Arc<Condvar>) {
        self.until_read.insert(ctx, waiter.clone());
    }

    /// The state machine has applied up to `index`.
    fn applied(&mut self, index: Index) {
        let later = self.until_applied.split_off(&(index + 1));
        for waiter in std::mem::replace(&mut self.until_applied, later)
            .values()
            .flatten()
        {
            waiter.notify_one();
        }
    }

    fn read_answered(&mut self, ctx: u64) {
        if let Some(waiter) = self.until_read.remove(&ctx) {
            waiter.notify_one();
        }
    }

    /// Something that can end any wait happened (a change of term or
    /// role, a truncated log).
    fn wake_all(&mut self) {
        let by_index = std::mem::take(&mut self.until_applied);
        let by_read = std::mem::take(&mut self.until_read);
        for waiter in by_index.values().flatten().chain(by_read.values()) {
            waiter.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_thresholds_read_as_entries_or_sizes() {
        use SnapshotThreshold::{Bytes, Entries};
        assert_eq!(SnapshotThreshold::parse("100000"), Ok(Entries(100_000)));
        assert_eq!(SnapshotThreshold::parse("64MiB"), Ok(Bytes(64 << 20)));
        assert_eq!(SnapshotThreshold::parse(" 4KiB "), Ok(Bytes(4096)));
        assert_eq!(SnapshotThreshold::parse("512B"), Ok(Bytes(512)));
        assert_eq!(SnapshotThreshold::parse("2GiB"), Ok(Bytes(2 << 30)));
        for bad in ["", "0", "0MiB", "12MB", "MiB", "-5", "1.5GiB"] {
            assert!(SnapshotThreshold::parse(bad).is_err(), "{bad:?}");
        }
        // Segments of a quarter of the threshold, within their bounds.
        assert_eq!(Entries(100).segment_limits().entries, 25);
        assert_eq!(Bytes(64 << 20).segment_limits().bytes, 8 << 20);
        assert_eq!(Bytes(1024).segment_limits().bytes, 4096);
    }
}
