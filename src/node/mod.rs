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
//!   the core. A replicator sleeps on a condvar of its own and is woken
//!   only when the core has something for its peer sooner than it sleeps
//!   until (`Raft::peer_wakeup`). Replies say what they answer, so the core itself drops one
//!   to a request of an earlier term or role (a reply to an old request
//!   says nothing about the present; the Raft Students' Guide makes the
//!   same point);
//! * **applier**: applies committed entries to the key-value store in log
//!   order, once each, with the node mutex released (the store has a lock
//!   of its own), then answers the writes and wakes the reads waiting for
//!   them. On the leader, the receiver or log writer whose step commits
//!   entries usually does this itself (`Shared::apply_here`), sparing a
//!   wake-up per commit; the applier takes what they cannot (a snapshot
//!   to restore, entries committed elsewhere);
//! * **log writer**: proposes the writes that clients' connections queued
//!   (`log_writer::Proposals`), all that are queued in one step, and on
//!   the leader fsyncs the log with the lock released and reports what is
//!   durable (`Raft::persisted`). Every write queued while one fsync runs
//!   rides the next: group commit. (Anyone else syncs its log before it
//!   answers, under the lock: once for a batch of AppendEntries that
//!   arrived together, `Handler::peers`.)
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
//! key-value store, taken after it or alone. Whoever steps the core hands
//! the resulting `Ready` to `Shared::process_ready` before releasing the
//! mutex; it runs the durability policy shared with the simulation
//! (`service::durability`): written, and synced there too, except a
//! leader's log appends, which the log writer syncs; the core counts those
//! only once told they are durable. So every reply and request built from
//! the state follows the core's ordering contract. If the disk fails,
//! nothing more is answered: the thread that saw it halts while still
//! holding the mutex, and the error goes to `Node::failure` (raftnode then
//! exits with status 1; see `Shared::halt`).
//!
//! **Stopping.** `Node::stop` sets `State::stopping` under the mutex and
//! wakes every thread; each checks the flag whenever it takes the mutex,
//! and ends (handlers answer `shutting_down`). The server and the links to
//! peers are closed, every thread joined, and the storage closed with the
//! last reference to `Shared`.
//!
//! **The lock convention.** A function taking `&State`, `&mut State` or a
//! `MutexGuard<State>` is called with the node's lock held; one that
//! releases it for a while (a write, an fsync, a wait) says so, and does
//! it with `MutexGuard::unlocked` or a condvar wait. The key-value store's
//! lock is taken after the node's or alone, never the other way round.
//!
//! **Files**, one job each: this one (start-up and stopping, `State` and
//! `Shared`, handling a `Ready`, status); `options.rs`; `replicate.rs` (a replicator and a
//! receiver per peer); `timer.rs`; `log_writer.rs`; `apply.rs` (the
//! applier, and the waiters it wakes); `snapshots.rs`; `handlers.rs` (the
//! request handlers, waiting for outcomes, leadership hand-over).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use log::{debug, error, info, warn};
use parking_lot::{Condvar, Mutex, MutexGuard};

mod apply;
mod handlers;
mod log_writer;
mod members;
mod options;
mod replicate;
mod snapshots;
mod timer;

use apply::Waiters;
use handlers::{LOG_TAIL, Service};
pub use options::{NodeError, NodeOptions, SnapshotThreshold, StateOptions};

use crate::activity;
use crate::config::Member;
use crate::consensus::membership::Suffrage;
use crate::consensus::{self, Entry, Event, Index, NodeId, Raft, Role, SnapshotMeta};
use crate::events::{self, EventHub, Message};
use crate::kv::{Command, KvStore};
use crate::server::{self, Handled, Handler};
use crate::service::{
    ClientService, PeerService, Query, ReadTicket, Step, WriteTicket, durability,
};
use crate::storage::{SnapshotFile, SnapshotWriter, Storage, StorageError, StorageOptions};
use crate::transport;
use crate::wire::{
    self, ErrorCode, FollowerStatus, NodeStatus, PeerRequest, Response, SnapshotTaken,
};

/// The most snapshot bytes per InstallSnapshot chunk. Escaped as a JSON
/// string (at worst six bytes per byte, for control characters) it stays
/// within the 8 MiB line limit.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

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
    /// Peer requests are being answered as a batch (`Handler::peers`): a
    /// follower's appends are synced once, at its end.
    in_batch: bool,
    /// Someone is applying entries with the lock released (the applier,
    /// or a thread in `Shared::apply_here`): nobody else may.
    applying: bool,
    /// Set by a thread about to step the core that will call
    /// `Shared::apply_here` right after: `process_ready` then leaves the
    /// entries it commits to it instead of waking the applier.
    apply_here: bool,
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
    /// Set by `Node::stop` once any leadership handover is over. Every
    /// thread's loop and every handler checks it after taking the lock:
    /// the loops end, handlers answer `shutting_down`.
    stopping: bool,
    /// Each other server of the membership in force: its link, whose
    /// replicator and receiver run while it is here (`members.rs`), and
    /// how its replicator sleeps.
    links: BTreeMap<NodeId, PeerLink>,
}

struct Shared {
    id: NodeId,
    /// Itself, for starting the threads of a server that joins.
    me: Weak<Shared>,
    /// Every thread the node started, joined by `Node::stop`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Where connections to peers leave from (`None`: any address).
    bind_ip: Option<IpAddr>,
    rpc_timeout: Duration,
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
    /// who needs waking. `Node::stop` notifies them all.
    ///
    /// Waits for the core to change (a leadership transfer's end, a
    /// membership change's progress). Notified (`notify_all`) by
    /// `process_ready` after every input to the core. (Replicators each
    /// sleep on a condvar of their own: `PeerLink`.)
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
    /// written log entries that are not yet durable, and by a client's
    /// write queued while it sleeps.
    log_written: Condvar,
    /// Clients' writes waiting for the log writer to propose them.
    proposals: log_writer::Proposals,
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
    /// The keys each applied command changed, for `watch` streams.
    feed: crate::kv::feed::ChangeFeed,
    /// Lab features are on (`--lab`).
    lab: bool,
    /// Linearizable reads served from the local store (see
    /// `NodeOptions::unsafe_local_reads`).
    unsafe_local_reads: bool,
    /// Lab: cut off from every peer. Its Raft messages are neither sent
    /// nor answered, as in a network partition; clients are still served
    /// (and told `not_leader` or time out, as the cut requires).
    isolated: AtomicBool,
    /// A fatal error halted the node (see `Shared::halt`); the first one
    /// goes to whoever holds `Node::failure`.
    halted: AtomicBool,
    failure: Sender<NodeError>,
}

/// Another server's link, and its replicator's wake-up.
struct PeerLink {
    link: Arc<transport::Link>,
    /// The replicator sleeps here while the core has nothing for its peer.
    wake: Arc<Condvar>,
    /// While it sleeps: until when (`None`: until woken). `process_ready`
    /// wakes it only when the core has something for the peer sooner
    /// (`Raft::peer_wakeup`), not after every step: that woke every
    /// replicator several times per write, on followers too, to find
    /// nothing to send (issue 24).
    asleep_until: Option<Option<Duration>>,
}

impl PeerLink {
    /// Wakes the replicator whatever it waits for (the link closed, the
    /// node stops, the lab reconnected it).
    fn wake(&mut self) {
        if self.asleep_until.take().is_some() {
            self.wake.notify_one();
        }
    }
}

/// What the applier applies next.
enum Apply {
    Entry(Entry),
    /// Replace the store by this snapshot (installed from the leader).
    Restore(Arc<SnapshotFile>),
}

/// A running node. Dropping it does not stop the threads: call
/// [`Node::stop`].
pub struct Node {
    shared: Arc<Shared>,
    server: server::Server,
    failures: Receiver<NodeError>,
}

fn now(shared: &Shared) -> Duration {
    shared.epoch.elapsed()
}

impl Node {
    /// Opens storage, binds the listening socket and starts every thread.
    pub fn start(options: NodeOptions) -> Result<Node, NodeError> {
        let opening = Instant::now();
        options.validate()?;
        let me = options
            .cluster
            .member(options.raft.id)
            .ok_or(NodeError::UnknownId(options.raft.id))?
            .clone();
        let cluster_id = options
            .cluster_id
            .clone()
            .unwrap_or_else(|| options.cluster.derived_cluster_id());
        let (storage, recovered, kv, restore_time) = open_storage(&options, &cluster_id)?;
        let listen = options.listen.clone().unwrap_or_else(|| me.address());
        let listener = TcpListener::bind(listen.as_str()).map_err(|source| NodeError::Bind {
            address: listen.clone(),
            source,
        })?;
        storage
            .record_pid(std::process::id())
            .map_err(NodeError::Storage)?;
        let raft = restore_core(&options, recovered)?;
        let epoch = Instant::now();
        let (failure, failures) = crossbeam::channel::bounded(1);
        let started = started_line(
            &raft,
            &me,
            &cluster_id,
            &kv,
            restore_time,
            &options,
            opening,
        );
        info!("[T{} {}] {started}", raft.term(), raft.role());
        // The first of the node's events, for watchers that see it restart.
        let events = EventHub::new(options.raft.id);
        events.note(raft.term(), raft.role(), log::Level::Info, started);
        // Outgoing connections leave from our own address, unless we
        // listen on all of them.
        let bind_ip: Option<IpAddr> = listener
            .local_addr()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let applied_at_start = kv.applied_index();
        let shared = Arc::new_cyclic(|me| Shared {
            id: options.raft.id,
            me: me.clone(),
            threads: Mutex::new(Vec::new()),
            bind_ip,
            rpc_timeout: options.rpc_timeout,
            epoch,
            state: Mutex::new(State {
                raft,
                storage,
                apply_queue: VecDeque::new(),
                applied: kv.applied_index(),
                applying: false,
                in_batch: false,
                apply_here: false,
                snapshot_jitter: rand::random::<f64>() / 2.0,
                peers: PeerService::new(options.raft.id, cluster_id.clone()),
                clients: ClientService::new(options.cluster.members.clone()),
                waiters: Waiters::default(),
                timer_deadline: None,
                stopping: false,
                links: BTreeMap::new(),
            }),
            changed: Condvar::new(),
            timer: Condvar::new(),
            kv: Mutex::new(kv),
            committed: Condvar::new(),
            log_written: Condvar::new(),
            proposals: log_writer::Proposals::default(),
            snapshot_due: Condvar::new(),
            snapshot_threshold: options.storage.snapshot_threshold,
            election_timeout: options.raft.election_timeout_max,
            snapshotting: Mutex::new(()),
            events,
            feed: crate::kv::feed::ChangeFeed::new(applied_at_start),
            lab: options.lab,
            unsafe_local_reads: options.unsafe_local_reads,
            isolated: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            failure,
        });
        spawn_threads(&shared)?;
        // A replicator and a receiver for every other server.
        shared.follow_membership(&mut shared.state.lock());
        let server = server::spawn(listener, Arc::new(Service(shared.clone())), options.server)
            .map_err(NodeError::Spawn)?;
        Ok(Node {
            shared,
            server,
            failures,
        })
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }

    /// Delivers the error that halted the node, if one does: a failed
    /// write or fsync, or a snapshot that does not restore. The halted
    /// node holds its lock for good, so it answers and sends nothing more;
    /// a program running it should then exit (raftnode exits with status
    /// 1), since its threads stay blocked and its directory locked.
    pub fn failure(&self) -> Receiver<NodeError> {
        self.failures.clone()
    }

    /// Stops the node and returns once every thread it started has ended
    /// and its storage is closed (the directory can be opened again). A
    /// leader first hands its leadership to the most up-to-date follower
    /// (thesis §3.10), so that the cluster has a new leader within
    /// milliseconds instead of an election timeout; it waits for that at
    /// most about two election timeouts. Taking the lock then waits for
    /// any write in progress (writes happen under it); once `stopping` is
    /// set under it, no thread steps the core again. A halted node cannot
    /// be stopped: its error is returned.
    pub fn stop(self, reason: &str) -> Result<(), NodeError> {
        let halted = || {
            self.failures
                .try_recv()
                .unwrap_or_else(|_| NodeError::Halted("an earlier fatal error".into()))
        };
        if self.shared.halted.load(Ordering::SeqCst) {
            return Err(halted());
        }
        self.shared.hand_over(reason);
        {
            let mut st = self.shared.state.lock();
            st.stopping = true;
            let text = format!(
                "stopped: {reason} (commit index {}, last log index {})",
                st.raft.commit_index(),
                st.raft.log().last_index()
            );
            self.shared.note(&st, log::Level::Info, text);
            st.waiters.wake_all();
            st.waiters.drop_writes();
            let s = &self.shared;
            for condvar in [&s.changed, &s.timer, &s.committed, &s.log_written] {
                condvar.notify_all();
            }
            s.snapshot_due.notify_all();
            for peer in st.links.values_mut() {
                peer.link.close();
                peer.wake();
            }
        }
        self.server.stop();
        // No thread starts once `stopping` is set.
        let threads = std::mem::take(&mut *self.shared.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        log::logger().flush();
        Ok(())
    }

    pub fn status(&self) -> NodeStatus {
        self.shared.status(&self.shared.state.lock())
    }
}

/// The core, from what storage recovered, with the trailing entries kept
/// after a snapshot fitted to the snapshot threshold.
fn restore_core(
    options: &NodeOptions,
    recovered: crate::storage::Recovered,
) -> Result<Raft, NodeError> {
    let mut raft_config = options.raft.clone();
    options
        .storage
        .snapshot_threshold
        .trailing(&mut raft_config);
    // The bootstrap servers listen where the configuration says
    // (`consensus::Config::new` names them only by id).
    for (&id, server) in raft_config.bootstrap.servers.iter_mut() {
        if let Some(member) = options.cluster.member(id) {
            server.address = member.address();
        }
    }
    raft_config.validate().map_err(NodeError::Config)?;
    let (snapshot, membership) = recovered
        .snapshot
        .as_ref()
        .map_or((SnapshotMeta::default(), None), |f| {
            (f.meta, f.membership.clone())
        });
    Ok(Raft::restore(
        raft_config,
        recovered.hard_state,
        (snapshot, membership),
        recovered.entries,
        Duration::ZERO,
    ))
}

/// Opens the node's directory: the log read while the store is rebuilt
/// from the snapshot (in parallel), what recovery did reported in the
/// activity log. Returns the storage, what was recovered, the store and
/// how long reading the snapshot took.
fn open_storage(
    options: &NodeOptions,
    cluster_id: &str,
) -> Result<(Storage, crate::storage::Recovered, KvStore, Duration), NodeError> {
    let storage_options = StorageOptions {
        limits: options.storage.snapshot_threshold.segment_limits(),
        // Damaged entries are repaired from the leader; a server with no
        // one to repair from stops instead.
        // (A single-server cluster has none; a joining server, whose
        // bootstrap membership is empty, has its leader.)
        heal: options.raft.bootstrap.servers.len() != 1,
        vote_floor: options.storage.vote_floor,
        ..StorageOptions::new(cluster_id, options.raft.id)
    };
    let (storage, recovered, restored) =
        Storage::open_restoring(&options.storage.dir, &storage_options, |file| {
            let started = Instant::now();
            let kv = KvStore::read_snapshot(file.body());
            (kv, started.elapsed())
        })
        .map_err(NodeError::Storage)?;
    report_recovery(&recovered, &options.storage.dir);
    // The state machine starts from the snapshot, if there is one.
    let (kv, restore_time) = match (&recovered.snapshot, restored) {
        (Some(file), Some((kv, took))) => {
            let kv = kv.map_err(|error| NodeError::Snapshot {
                path: file.path.clone(),
                error,
            })?;
            (kv, took)
        }
        _ => (KvStore::new(), Duration::ZERO),
    };
    Ok((storage, recovered, kv, restore_time))
}

/// What recovery found and did, for the activity log.
fn report_recovery(recovered: &crate::storage::Recovered, state_dir: &std::path::Path) {
    if let Some((path, offset, bytes)) = &recovered.torn_tail {
        warn!(
            "{}: cut a torn final record ({bytes} bytes at offset {offset}) left by a crash during a write; it was never synced, so never acknowledged",
            path.display()
        );
    }
    if let Some(why) = &recovered.discarded_log {
        warn!("{}: {why}", state_dir.display());
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
}

/// The activity log's first line for a start: where, whose, and from what.
fn started_line(
    raft: &Raft,
    me: &Member,
    cluster_id: &str,
    kv: &KvStore,
    restore_time: Duration,
    options: &NodeOptions,
    opening: Instant,
) -> String {
    let log = raft.log();
    let snapshot = raft.snapshot();
    let from_snapshot = match snapshot.last_index {
        0 => String::new(),
        index => format!(
            "snapshot up to index {index} ({} keys, {} bytes, read in {} ms), then ",
            kv.len(),
            snapshot.size,
            restore_time.as_millis()
        ),
    };
    format!(
        "started on {} in cluster {cluster_id} with term {}, voted_for {}, {from_snapshot}log {} entries (last index {}, term {}); state in {}, recovered in {} ms",
        me.address(),
        raft.term(),
        raft.voted_for()
            .map_or("none".to_string(), |v| format!("node{v}")),
        log.entries().len(),
        log.last_index(),
        log.last_term(),
        options.storage.dir.display(),
        opening.elapsed().as_millis()
    )
}

/// Starts the node's threads: timer, applier, log writer, snapshotter
/// (the replicators and receivers follow the membership, `members.rs`).
fn spawn_threads(shared: &Arc<Shared>) -> Result<(), NodeError> {
    let mut threads = shared.threads.lock();
    let mut spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        threads.push(
            thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(NodeError::Spawn)?,
        );
        Ok::<(), NodeError>(())
    };
    let s = shared.clone();
    spawn("timer", Box::new(move || s.run_timer()))?;
    let s = shared.clone();
    spawn("applier", Box::new(move || s.run_applier()))?;
    let s = shared.clone();
    spawn("log-writer", Box::new(move || s.run_log_writer()))?;
    let s = shared.clone();
    spawn("snapshotter", Box::new(move || s.run_snapshotter()))?;
    Ok(())
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
        // The durability policy, shared with the simulation: written (and
        // synced unless leader), durability reported, reads routed.
        let handle = if st.in_batch {
            durability::handle_ready_in_batch
        } else {
            durability::handle_ready
        };
        let handled = match handle(&mut st.raft, &mut st.storage, &mut st.clients) {
            Ok(handled) => handled,
            Err(e) => self.storage_failed(st, &e),
        };
        if handled.sync_wanted {
            self.log_written.notify_one();
        }
        let ready = handled.ready;
        for event in &ready.events {
            activity::log_event(&st.raft, event);
            self.events.core(st.raft.term(), st.raft.role(), event);
        }
        let membership_changed = ready
            .events
            .iter()
            .any(|e| matches!(e, Event::MembershipInForce { .. }));
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
            if !st.apply_here {
                self.committed.notify_one();
            }
        }
        for ctx in handled.reads_answered {
            st.waiters.read_answered(ctx);
        }
        if ends_waits {
            self.answer_writes(st, None);
            st.waiters.wake_all();
        }
        let deadline = st.raft.tick_deadline();
        if deadline.is_some_and(|d| st.timer_deadline.is_none_or(|t| d < t)) {
            self.timer.notify_one();
        }
        if membership_changed {
            self.follow_membership(st);
        }
        self.leave_if_removed(st);
        self.wake_replicators(st);
        self.changed.notify_all();
        if handled.again {
            self.process_ready(st);
        }
    }

    /// Wakes the replicators that the core has a request for sooner than
    /// they sleep until.
    fn wake_replicators(&self, st: &mut State) {
        for (&peer, p) in st.links.iter_mut() {
            let Some(until) = p.asleep_until else {
                continue;
            };
            if let Some(due) = st.raft.peer_wakeup(peer)
                && until.is_none_or(|until| due < until)
            {
                p.wake();
            }
        }
    }

    /// A write or fsync failed: halt at once, still holding the lock, so
    /// that nothing built on the state that failed to reach the disk is
    /// sent. What was acknowledged before is on disk.
    fn storage_failed(&self, st: &State, e: &StorageError) -> ! {
        error!(
            "[T{} {}] cannot persist state: {e}; stopping without answering anything more",
            st.raft.term(),
            st.raft.role()
        );
        self.halt(st, NodeError::Failed(format!("cannot persist state: {e}")))
    }

    /// Halts the node on a fatal error: the calling thread, which holds
    /// the lock (`st`), never returns and so never releases it. No other
    /// thread can step the core, answer or send again, as if the process
    /// had ended there; the error goes to `Node::failure`, whose holder
    /// decides what to do (raftnode exits).
    fn halt(&self, _st: &State, error: NodeError) -> ! {
        log::logger().flush();
        self.halted.store(true, Ordering::SeqCst);
        let _ = self.failure.try_send(error);
        loop {
            thread::park();
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
    fn lab(&self, st: &mut State, isolate: bool) -> Response {
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
            for peer in st.links.values_mut() {
                peer.wake();
            }
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
        let membership = st.raft.membership();
        let suffrage = |id| membership.servers.get(&id).map(|s| s.suffrage);
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
            election_in_ms: st
                .raft
                .election_timer()
                .map(|(deadline, _)| millis(deadline.saturating_sub(t))),
            election_timeout_ms: st.raft.election_timer().map(|(_, length)| millis(length)),
            repairing_through: Some(st.raft.hard_state().lost_through).filter(|&i| i != 0),
            followers: st
                .raft
                .followers()
                .into_iter()
                .map(|f| FollowerStatus {
                    id: f.id,
                    suffrage: suffrage(f.id).unwrap_or(Suffrage::Voter),
                    match_index: f.match_index,
                    next_index: f.next_index,
                    in_flight: f.in_flight as u64,
                    state: format!("{:?}", f.state).to_lowercase(),
                    reachable: f.reachable,
                    heard_ms: millis(t.saturating_sub(f.last_heard)),
                })
                .collect(),
            suffrage: suffrage(self.id),
            membership_index: st.raft.membership_index(),
            membership_committed: st.raft.membership_index() <= st.raft.commit_index(),
            outgoing_voters: membership.outgoing.iter().copied().collect(),
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
