//! A deterministic simulation of a Raft cluster over the pure core.
//!
//! Time is virtual and every random choice comes from one seeded generator,
//! so a seed replays exactly. The network models what the real runtime
//! does: each request ends, for the sender, in exactly one reply or one
//! failure (after `rpc_timeout`); a leader keeps several AppendEntries in
//! flight to a follower (the window varies with the seed); each direction
//! of a link delivers in order, as the runtime's TCP connections do. A leader's log
//! writes become durable a little later, as the runtime's log writer syncs
//! them (`Raft::persisted`); a crash before then keeps a random part of
//! them. Requests and
//! replies can be dropped, delayed, duplicated (the receiver handles a
//! request twice) and reordered (a long delay lets a later RPC overtake an
//! earlier one), and links can be cut by partitions. Nodes crash, losing
//! everything but their fake disk, and restart from it alone.
//!
//! With `snapshot_chance` set, nodes take snapshots of their state machine
//! at random points and compact their logs (§7); followers that fall
//! behind a leader's compacted log get its snapshot through the same
//! unreliable network, in chunks of random size.
//!
//! After every step the [`Checker`] verifies the safety properties of
//! Figure 3 of the Raft paper: election safety, leader append-only, log
//! matching, leader completeness and state machine safety. A violation
//! panics; [`SeedGuard`] then prints the seed and how to replay it.
#![allow(dead_code)] // each test file uses a different part of this module

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use raft::config::Member;
use raft::consensus::{
    Config, Entry, Event, HardState, Index, Json, MAX_TERM, NodeId, Payload, Raft, Ready, Request,
    Role, SnapshotMeta, Term, TransferError,
};
use raft::kv::KvStore;
use raft::service::{ClientService, PeerService};
use raft::wire::{PeerRequest, Response};

pub mod kvsim;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

pub const MS: Duration = Duration::from_millis(1);

/// The cluster id every simulated node uses.
pub const SIM_CLUSTER: &str = "sim";

/// How the simulated network misbehaves.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Probability that a request, and separately its reply, is lost.
    pub drop: f64,
    /// Probability that a delivered request is delivered a second time.
    pub duplicate: f64,
    /// One-way delay, uniform in this range.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Probability of a long delay (up to `long_delay`), which reorders.
    pub long_delay_chance: f64,
    pub long_delay: Duration,
    /// A sender gives up on an RPC after this long.
    pub rpc_timeout: Duration,
}

impl NetConfig {
    pub fn reliable() -> NetConfig {
        NetConfig {
            drop: 0.0,
            duplicate: 0.0,
            min_delay: MS,
            max_delay: 5 * MS,
            long_delay_chance: 0.0,
            long_delay: Duration::ZERO,
            rpc_timeout: 150 * MS,
        }
    }

    /// Roughly the MIT labrpc "unreliable" network: 10% loss, up to 27 ms
    /// of delay, some duplicates and long reorderings.
    pub fn unreliable() -> NetConfig {
        NetConfig {
            drop: 0.1,
            duplicate: 0.05,
            min_delay: Duration::ZERO,
            max_delay: 27 * MS,
            long_delay_chance: 0.05,
            long_delay: 400 * MS,
            rpc_timeout: 150 * MS,
        }
    }
}

/// The Raft settings of simulated node `id`: the runtime's default timing,
/// and a batch size and a pipelining window that vary with the seed (a
/// window of 1 is stop-and-wait).
pub fn raft_config(id: NodeId, n: usize, seed: u64) -> Config {
    Config {
        // Small batches matter: with one entry per AppendEntries a follower
        // can acknowledge an old-term entry without the new leader's no-op,
        // which is what the Figure 8 interleavings need.
        max_entries_per_append: [1, 2, 3, 64][(seed % 4) as usize],
        max_inflight_appends: [4, 1, 2, 8, 3][(seed / 4 % 5) as usize],
        // Few or no trailing entries after a snapshot, so that followers
        // often need the snapshot itself.
        trailing_entries: [0, 2, 0, 10, 1, 0, 20][(seed / 20 % 7) as usize],
        ..Config::new(id, 0..n as NodeId, seed)
    }
}

enum Msg {
    Request {
        rpc: u64,
        from: NodeId,
        to: NodeId,
        request: Request,
    },
    /// Replies say what they answer: no copy of the request comes back.
    Reply {
        rpc: u64,
        to: NodeId,
        incarnation: u64,
        from: NodeId,
        response: Response,
    },
    Timeout {
        rpc: u64,
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
    /// A rule-breaking copy of a real request, as a confused or
    /// misconfigured node (or someone with `nc`) might send it.
    Forged { to: NodeId, request: PeerRequest },
    /// A leader's log sync, started when entries up to (`index`, `term`)
    /// were written, has ended.
    Synced {
        node: NodeId,
        incarnation: u64,
        index: Index,
        term: Term,
    },
}

struct Scheduled {
    at: Duration,
    seq: u64,
    msg: Msg,
}
impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One server: its running core (if up), its disk, its state machine.
pub struct SimNode {
    pub raft: Option<Raft>,
    /// Bumped at every crash, so replies meant for an earlier life are
    /// discarded.
    pub incarnation: u64,
    /// The fake disk: exactly what the runtime would have fsynced.
    pub disk_state: HardState,
    /// The log entries after the snapshot, in index order.
    pub disk_log: Vec<Entry>,
    /// Entries a leader wrote after `disk_log` that are not yet synced.
    pub unsynced_log: Vec<Entry>,
    /// The latest snapshot and its bytes (`KvStore::write_snapshot`).
    pub disk_snapshot: Option<(SnapshotMeta, String)>,
    /// Snapshots replaced since this incarnation started, still readable
    /// (the runtime keeps the file of a transfer in progress open).
    pub replaced_snapshots: Vec<(SnapshotMeta, String)>,
    /// The bytes of a snapshot being received.
    pub receiving: String,
    /// The last index this incarnation's state machine has applied
    /// (restored from a snapshot, or entry by entry).
    pub applied_index: Index,
    /// This incarnation's state machine.
    pub kv: KvStore,
    /// The runtime's services, run by the simulation as the runtime runs
    /// them: Raft RPCs go through `peers`, client operations through
    /// `clients`. New for each incarnation.
    pub peers: PeerService,
    pub clients: ClientService,
}

/// The services of a fresh incarnation of node `id` in an `n`-node cluster.
fn services(id: NodeId, n: usize) -> (PeerService, ClientService) {
    let members = (0..n as NodeId).map(|m| Member {
        id: m,
        host: format!("sim{m}"),
        port: 1,
    });
    (
        PeerService::new(id, SIM_CLUSTER.into()),
        ClientService::new(members.collect()),
    )
}

impl SimNode {
    /// The last index on the fake disk, synced or not.
    pub fn disk_last_index(&self) -> Index {
        self.unsynced_log
            .last()
            .or(self.disk_log.last())
            .map(|e| e.index)
            .or(self.disk_snapshot.as_ref().map(|(m, _)| m.last_index))
            .unwrap_or(0)
    }
}

/// Safety properties checked after every step (Raft paper, Figure 3).
#[derive(Default)]
pub struct Checker {
    /// Election safety: at most one leader per term.
    leaders: HashMap<Term, NodeId>,
    /// Log matching: every (index, term) ever stored anywhere maps to one
    /// payload and one previous-entry term.
    entries: HashMap<(Index, Term), (Payload, Term)>,
    /// State machine safety: the entry applied at each index, by anyone.
    pub committed: BTreeMap<Index, Entry>,
    /// Leader completeness: the term in which each index was first
    /// committed. A leader applies what it commits in the same step, with
    /// its term; anyone applying it later has a term at least as high, so
    /// the smallest term seen is the commit term. Leaders of later terms
    /// must hold the entry (§5.4, Figure 3); leaders of earlier terms that
    /// still run in a partition need not.
    commit_term: BTreeMap<Index, Term>,
    /// Leader append-only: (term, last index) of each current leader.
    leader_last: HashMap<NodeId, (Term, Index)>,
    /// State machine safety across snapshots: the CRC-32 of the snapshot
    /// bytes of every index a snapshot was taken or installed at. Any two
    /// snapshots of one index must be equal byte for byte, and equal to
    /// the reference state machine's at that index.
    snapshots: HashMap<Index, u32>,
    /// A state machine fed the committed entries in order, ahead of no
    /// snapshot not yet compared with it.
    reference: KvStore,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// Leadership transfers started (chaos counts them here).
    pub transfers: u64,
    pub steps: u64,
}

impl Checker {
    /// An entry committed in a term before `leader`'s that `leader` lacks.
    fn lacking_committed(&self, leader: &Raft) -> Option<&Entry> {
        // What the leader's snapshot covers it holds, committed.
        let base = leader.log().base_index();
        self.committed
            .range(base + 1..)
            .find(|(index, e)| {
                self.commit_term[index] < leader.term() && leader.log().get(**index) != Some(*e)
            })
            .map(|(_, e)| e)
    }

    /// A snapshot of `bytes` at `meta` was taken or installed by `node`:
    /// it must match every other snapshot of that index, and the reference
    /// state machine's state there.
    fn check_snapshot(
        &mut self,
        node: NodeId,
        meta: SnapshotMeta,
        bytes: &str,
    ) -> Result<(), String> {
        let crc = crc32fast::hash(bytes.as_bytes());
        if crc != meta.crc32 || bytes.len() as u64 != meta.size {
            return Err(format!(
                "node {node}'s snapshot bytes do not match {meta:?}"
            ));
        }
        if let Some(&seen) = self.snapshots.get(&meta.last_index)
            && seen != crc
        {
            return Err(format!(
                "state machine safety: node {node}'s snapshot at {} differs from another's",
                meta.last_index
            ));
        }
        self.snapshots.insert(meta.last_index, crc);
        // The reference can only move forward: compare when it is not past.
        if self.reference.applied_index() <= meta.last_index {
            let next = self.reference.applied_index() + 1;
            if next <= meta.last_index {
                for (_, e) in self.committed.range(next..=meta.last_index) {
                    self.reference.apply(e);
                }
            }
            if self.reference.applied_index() != meta.last_index {
                return Err(format!(
                    "node {node} snapshotted index {} that nobody applied",
                    meta.last_index
                ));
            }
            if self.reference.snapshot_text() != bytes {
                return Err(format!(
                    "state machine safety: node {node}'s snapshot at {} is not the state the committed entries give",
                    meta.last_index
                ));
            }
        }
        Ok(())
    }
}

pub struct Sim {
    pub seed: u64,
    rng: Xoshiro256PlusPlus,
    pub now: Duration,
    pub nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    next_rpc: u64,
    completed: HashSet<u64>,
    /// Per direction of each link, the latest arrival scheduled so far:
    /// like the runtime's TCP connection, a link delivers in order, save
    /// for the long delays, which model a message overtaken after a
    /// reconnection.
    link_clock: HashMap<(NodeId, NodeId), Duration>,
    pub net: NetConfig,
    /// A node that is not connected reaches nobody (MIT's disconnect).
    pub connected: Vec<bool>,
    /// Nodes reach each other only within the same group (partitions).
    pub group: Vec<u32>,
    pub rpc_count: u64,
    /// Bytes of entry payload sent in AppendEntries, all peers together.
    pub payload_bytes_sent: u64,
    pub checker: Checker,
    /// Every event of every node, for tests that look at them.
    pub events: Vec<(NodeId, Event)>,
    pub keep_events: bool,
    /// Fault injection for testing the checker itself: the fake disk
    /// ignores log appends (a node that acknowledges before it fsyncs).
    pub disk_drops_appends: bool,
    /// Nodes whose disk fails (full, I/O error) at their next write. The
    /// write stops part way, and the node stops as the runtime does on a
    /// storage error: at once, answering nothing more.
    pub disk_broken: Vec<bool>,
    /// How many nodes stopped on a failed write.
    pub disk_failures: u64,
    /// Storage faults injected into stopped nodes' disks ([`Sim::damage_disk`]).
    pub disk_damage: u64,
    /// Whether recovery marks what a storage fault took
    /// (`HardState::lost_through`), as `raft::storage` does. Off only to
    /// test the checker: a node then rejoins as if it had never held the
    /// lost entries.
    pub mark_losses: bool,
    /// Probability that a request sent is followed by a forged,
    /// rule-breaking copy of it (see [`Sim::forge`]). Each must be refused
    /// and change nothing.
    pub forge: f64,
    /// How many forged requests were refused.
    pub forged_refused: u64,
    /// A leader's log sync ends up to this long after the write.
    pub max_sync_delay: Duration,
    /// The chance, at each step, that each running node takes a snapshot
    /// of what it has applied and compacts its log (0: never).
    pub snapshot_chance: f64,
    /// Every node takes a snapshot once it has applied this many entries
    /// past its last one (the MIT 6.5840 tester's `SnapShotInterval`).
    pub snapshot_every: Option<u64>,
    /// InstallSnapshot chunks carry 1 to this many bytes.
    pub max_chunk: usize,
    /// Fault injection for testing the checker itself: snapshots lose
    /// their last key (a state machine whose snapshot misses some state).
    pub snapshots_lose_a_key: bool,
    /// Applied to every node's settings at each start (PreVote and
    /// CheckQuorum off, say).
    tune: fn(&mut Config),
    /// Each node's clock (the clock model of lease reads): by default
    /// every clock shows the virtual real time.
    clocks: Vec<Clock>,
    /// Check after every step that no lease holds while a newer leader
    /// exists (off only to watch what a broken lease does to reads).
    pub check_leases: bool,
}

/// A node's clock: it showed `local` at real time `real`, and since then
/// counts `rate` seconds per real second. It never goes back.
#[derive(Clone, Copy, Debug)]
struct Clock {
    rate: f64,
    real: Duration,
    local: Duration,
}

impl Sim {
    pub fn new(n: usize, seed: u64, net: NetConfig) -> Sim {
        Sim::tuned(n, seed, net, |_| {})
    }

    /// A cluster whose nodes' settings `tune` changes from `raft_config`.
    pub fn tuned(n: usize, seed: u64, net: NetConfig, tune: fn(&mut Config)) -> Sim {
        let mut sim = Sim {
            seed,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            now: Duration::ZERO,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            next_rpc: 0,
            completed: HashSet::new(),
            link_clock: HashMap::new(),
            net,
            connected: vec![true; n],
            group: vec![0; n],
            rpc_count: 0,
            payload_bytes_sent: 0,
            checker: Checker::default(),
            events: Vec::new(),
            keep_events: false,
            disk_drops_appends: false,
            disk_broken: vec![false; n],
            disk_failures: 0,
            disk_damage: 0,
            mark_losses: true,
            forge: 0.0,
            forged_refused: 0,
            max_sync_delay: 2 * MS,
            snapshot_chance: 0.0,
            snapshot_every: None,
            max_chunk: 64,
            snapshots_lose_a_key: false,
            tune,
            check_leases: true,
            clocks: vec![
                Clock {
                    rate: 1.0,
                    real: Duration::ZERO,
                    local: Duration::ZERO,
                };
                n
            ],
        };
        for id in 0..n as NodeId {
            let (peers, clients) = services(id, n);
            sim.nodes.push(SimNode {
                raft: None,
                incarnation: 0,
                disk_state: HardState::default(),
                disk_log: Vec::new(),
                unsynced_log: Vec::new(),
                disk_snapshot: None,
                replaced_snapshots: Vec::new(),
                receiving: String::new(),
                applied_index: 0,
                kv: KvStore::new(),
                peers,
                clients,
            });
        }
        for id in 0..n as NodeId {
            sim.start(id);
        }
        sim
    }

    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    /// What node `id`'s clock shows now: every input to its core is timed
    /// by it, as the runtime times its core by its own machine's clock.
    pub fn local_now(&self, id: NodeId) -> Duration {
        self.local(id, self.now)
    }

    fn local(&self, id: NodeId, at: Duration) -> Duration {
        let c = self.clocks[id as usize];
        if c.rate == 1.0 {
            return c.local + (at - c.real);
        }
        c.local + Duration::from_nanos(((at - c.real).as_nanos() as f64 * c.rate) as u64)
    }

    /// The real time at which node `id`'s clock first shows `local` (now,
    /// if it does already).
    fn real_at(&self, id: NodeId, local: Duration) -> Duration {
        let c = self.clocks[id as usize];
        let ahead = local.saturating_sub(c.local);
        if c.rate == 1.0 {
            return c.real + ahead;
        }
        let real =
            c.real + Duration::from_nanos((ahead.as_nanos() as f64 / c.rate).ceil() as u64 + 1);
        real.max(self.now)
    }

    /// From now on node `id`'s clock counts `rate` seconds per second.
    pub fn set_clock_rate(&mut self, id: NodeId, rate: f64) {
        assert!(rate > 0.0);
        let local = self.local_now(id);
        self.clocks[id as usize] = Clock {
            rate,
            real: self.now,
            local,
        };
    }

    pub fn raft(&self, id: NodeId) -> Option<&Raft> {
        self.nodes[id as usize].raft.as_ref()
    }

    // ----- Faults -----

    /// Crashes a node: its volatile state is gone, its disk stays.
    pub fn crash(&mut self, id: NodeId) {
        let n = self.n();
        // Writes not yet synced may or may not have reached the disk.
        let kept = self
            .rng
            .random_range(0..=self.nodes[id as usize].unsynced_log.len());
        let node = &mut self.nodes[id as usize];
        let unsynced = std::mem::take(&mut node.unsynced_log);
        node.disk_log.extend(unsynced.into_iter().take(kept));
        node.raft = None;
        node.incarnation += 1;
        node.applied_index = 0;
        node.receiving.clear();
        node.replaced_snapshots.clear();
        node.kv = KvStore::new();
        (node.peers, node.clients) = services(id, n);
        self.checker.leader_last.remove(&id);
    }

    /// A storage fault on stopped node `id`'s disk, after which it starts
    /// from what `raft::storage`'s recovery keeps: `lost` log entries off
    /// the end of its log (a damaged or cut tail, a segment gone), or its
    /// snapshot (damaged: set aside, and the log after it with it). The
    /// entries it held were synced, so perhaps acknowledged: recovery
    /// records that it lost everything up to its old last index
    /// (`lost_through`), and the core keeps it from voting until a leader
    /// has repaired it. (Losing one copy of the term and vote changes
    /// nothing, as the other restores it; both is a refusal to start.)
    pub fn damage_disk(&mut self, id: NodeId, lost: usize, snapshot: bool) {
        let node = &mut self.nodes[id as usize];
        assert!(node.raft.is_none(), "damage a stopped node's disk");
        let had = node.disk_last_index();
        if snapshot && node.disk_snapshot.is_some() {
            node.replaced_snapshots.extend(node.disk_snapshot.take());
            node.disk_log.clear();
        } else {
            // Only entries after the snapshot: the ones it covers that
            // trail in the log are not read back at start anyway.
            let floor = node.disk_snapshot.as_ref().map_or(0, |(m, _)| m.last_index);
            let after = node.disk_log.iter().filter(|e| e.index > floor).count();
            let keep = node.disk_log.len() - lost.min(after);
            node.disk_log.truncate(keep);
        }
        if self.mark_losses && node.disk_last_index() < had {
            node.disk_state.lost_through = node.disk_state.lost_through.max(had);
            node.disk_state.lost_term = node.disk_state.lost_term.max(node.disk_state.term);
        }
        self.disk_damage += 1;
    }

    /// How many nodes' disks record a storage fault not yet repaired.
    pub fn repairing(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.disk_state.lost_through != 0)
            .count()
    }

    /// Crashes a node with its machine: writes it had not synced are lost.
    pub fn power_loss(&mut self, id: NodeId) {
        self.nodes[id as usize].unsynced_log.clear();
        self.crash(id);
    }

    /// Starts (or restarts) a node from its disk alone.
    pub fn start(&mut self, id: NodeId) {
        let n = self.n();
        let node = &mut self.nodes[id as usize];
        assert!(node.raft.is_none(), "node {id} is running");
        let seed = self.seed ^ (id << 32) ^ (node.incarnation << 48);
        // The state machine from the snapshot, the log after it.
        let (meta, kv) = match &node.disk_snapshot {
            Some((meta, bytes)) => (
                *meta,
                KvStore::read_snapshot(bytes.as_bytes()).expect("a snapshot we wrote reads back"),
            ),
            None => (SnapshotMeta::default(), KvStore::new()),
        };
        node.applied_index = meta.last_index;
        node.kv = kv;
        (node.peers, node.clients) = services(id, n);
        // The log after the snapshot (trailing entries it covers stay on
        // disk, as in segments, but are not read back).
        let log: Vec<Entry> = node
            .disk_log
            .iter()
            .filter(|e| e.index > meta.last_index)
            .cloned()
            .collect();
        let mut config = raft_config(id, n, seed);
        (self.tune)(&mut config);
        let now = self.local(id, self.now);
        let node = &mut self.nodes[id as usize];
        node.raft = Some(Raft::restore(config, node.disk_state, meta, log, now));
        self.after(id);
    }

    /// Node `id` snapshots its state machine, stores the snapshot on its
    /// disk, and compacts its log, as the runtime's snapshotter does.
    pub fn take_snapshot(&mut self, id: NodeId) -> bool {
        let node = &mut self.nodes[id as usize];
        let Some(raft) = node.raft.as_mut() else {
            return false;
        };
        if node.kv.applied_index() <= raft.snapshot().last_index {
            return false;
        }
        let mut bytes = node.kv.snapshot_text();
        if self.snapshots_lose_a_key && !node.kv.is_empty() {
            bytes = without_last_key(&bytes);
        }
        let meta = SnapshotMeta {
            last_index: node.kv.applied_index(),
            last_term: node.kv.applied_term(),
            size: bytes.len() as u64,
            crc32: crc32fast::hash(bytes.as_bytes()),
        };
        if let Err(what) = self.checker.check_snapshot(id, meta, &bytes) {
            self.fail(what);
        }
        let node = &mut self.nodes[id as usize];
        node.replaced_snapshots.extend(node.disk_snapshot.take());
        node.disk_snapshot = Some((meta, bytes));
        let cut = node
            .raft
            .as_mut()
            .unwrap()
            .compact(meta)
            .expect("a newer snapshot");
        // The log files wholly covered go; here, the entries dropped (the
        // core keeps a few trailing ones).
        node.disk_log.retain(|e| e.index > cut);
        node.unsynced_log.retain(|e| e.index > cut);
        self.checker.snapshots_taken += 1;
        self.after(id);
        true
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[id as usize].raft.is_some()
    }

    pub fn disconnect(&mut self, id: NodeId) {
        self.connected[id as usize] = false;
    }

    pub fn connect(&mut self, id: NodeId) {
        self.connected[id as usize] = true;
    }

    /// Splits the nodes into groups that cannot reach each other.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                self.group[m as usize] = g as u32;
            }
        }
    }

    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.connected.iter_mut().for_each(|c| *c = true);
    }

    fn reachable(&self, a: NodeId, b: NodeId) -> bool {
        self.connected[a as usize]
            && self.connected[b as usize]
            && self.group[a as usize] == self.group[b as usize]
    }

    /// Makes node `id` start an election now.
    pub fn campaign(&mut self, id: NodeId) {
        let now = self.local_now(id);
        if let Some(raft) = self.nodes[id as usize].raft.as_mut() {
            raft.campaign(now);
            self.after(id);
        }
    }

    /// Asks node `id` to hand its leadership to `to` (or the most
    /// up-to-date peer), as `raftctl transfer` does.
    pub fn transfer(&mut self, id: NodeId, to: Option<NodeId>) -> Result<NodeId, TransferError> {
        let now = self.local_now(id);
        let raft = self.nodes[id as usize]
            .raft
            .as_mut()
            .ok_or(TransferError::NotLeader { leader_hint: None })?;
        let result = raft.transfer_leadership(to, now);
        self.after(id);
        result
    }

    /// After a client called into node `id`'s core directly (propose,
    /// read_index): persist, check and send as after any other input.
    pub fn after_client_input(&mut self, id: NodeId) {
        self.after(id);
    }

    // ----- Clients -----

    /// Proposes `data` at node `id`; `Some((index, term))` if it is leader.
    pub fn propose(&mut self, id: NodeId, data: &str) -> Option<(Index, Term)> {
        self.propose_json(id, Json::string(data))
    }

    /// Proposes a JSON command (a key-value `Command`, say) at node `id`.
    pub fn propose_json(&mut self, id: NodeId, command: Json) -> Option<(Index, Term)> {
        let raft = self.nodes[id as usize].raft.as_mut()?;
        let result = raft.propose(command).ok();
        self.after(id);
        result
    }

    // ----- Running -----

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p)
    }

    /// When a message sent now from `from` to `to` arrives: after every
    /// earlier one on the link, unless it draws a long delay.
    fn arrival(&mut self, from: NodeId, to: NodeId) -> Duration {
        if self.chance(self.net.long_delay_chance) {
            let long = self
                .rng
                .random_range(0..=self.net.long_delay.as_nanos() as u64);
            return self.now + Duration::from_nanos(long);
        }
        let (lo, hi) = (
            self.net.min_delay.as_nanos() as u64,
            self.net.max_delay.as_nanos() as u64,
        );
        let at = self.now + Duration::from_nanos(self.rng.random_range(lo..=hi));
        let clock = self.link_clock.entry((from, to)).or_default();
        *clock = (*clock).max(at);
        *clock
    }

    fn delay(&mut self) -> Duration {
        if self.chance(self.net.long_delay_chance) {
            return Duration::from_nanos(
                self.rng
                    .random_range(0..=self.net.long_delay.as_nanos() as u64),
            );
        }
        let (lo, hi) = (
            self.net.min_delay.as_nanos() as u64,
            self.net.max_delay.as_nanos() as u64,
        );
        Duration::from_nanos(self.rng.random_range(lo..=hi))
    }

    fn schedule(&mut self, at: Duration, msg: Msg) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            msg,
        }));
    }

    /// Lease reads (thesis §6.4.1): a leader whose lease holds now, on its
    /// own clock, must be the only leader: none of a newer term may have
    /// been elected meanwhile, or its lease reads could be stale.
    fn check_leases(&self) {
        for id in (0..self.n() as NodeId).filter(|_| self.check_leases) {
            let Some(raft) = self.raft(id) else { continue };
            if raft.lease_read(self.local_now(id)).is_none() {
                continue;
            }
            let newer = (0..self.n() as NodeId).find(|&other| {
                self.raft(other)
                    .is_some_and(|r| r.role() == Role::Leader && r.term() > raft.term())
            });
            if let Some(other) = newer {
                self.fail(format!(
                    "node {id}'s lease of term {} still holds, but node {other} leads term {}",
                    raft.term(),
                    self.raft(other).unwrap().term()
                ));
            }
        }
    }

    /// Advances to the next event or timer, but not past `limit`, and
    /// handles it.
    pub fn step(&mut self, limit: Duration) {
        let next_msg = self.queue.peek().map(|Reverse(s)| s.at);
        let next_timer = (0..self.n() as NodeId)
            .filter_map(|id| {
                let at = self.raft(id)?.next_deadline()?;
                Some(self.real_at(id, at))
            })
            .min();
        let next = [next_msg, next_timer, Some(limit)]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        self.now = self.now.max(next);
        if next_msg.is_some_and(|t| t <= self.now) {
            let Reverse(s) = self.queue.pop().unwrap();
            self.deliver(s.msg);
        }
        for id in 0..self.n() as NodeId {
            let now = self.local_now(id);
            if let Some(raft) = self.nodes[id as usize].raft.as_mut() {
                raft.tick(now);
                self.after(id);
            }
            if self.snapshot_chance > 0.0 && self.chance(self.snapshot_chance) {
                self.take_snapshot(id);
            }
            if let Some(every) = self.snapshot_every
                && let Some(raft) = self.raft(id)
                && self.nodes[id as usize].applied_index >= raft.snapshot().last_index + every
            {
                self.take_snapshot(id);
            }
        }
        self.check_leases();
        self.checker.steps += 1;
        if self.checker.steps.is_multiple_of(512) {
            self.check_deep();
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(end);
        }
    }

    /// Runs until `cond` holds or `limit` of virtual time passes.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if cond(self) {
                return true;
            }
            self.step(end);
        }
        cond(self)
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Request {
                rpc,
                from,
                to,
                request,
            } => {
                if !self.reachable(from, to) || !self.is_up(to) {
                    return; // the sender's timeout will fire
                }
                if self.chance(self.net.duplicate) {
                    let at = self.now + self.delay();
                    self.schedule(
                        at,
                        Msg::Request {
                            rpc,
                            from,
                            to,
                            request: request.clone(),
                        },
                    );
                }
                let now = self.local_now(to);
                let node = &mut self.nodes[to as usize];
                let envelope = PeerRequest {
                    cluster: SIM_CLUSTER.into(),
                    from,
                    rpc: request.clone(),
                };
                let answer = node
                    .peers
                    .handle(node.raft.as_mut().unwrap(), envelope, now);
                if let Some(line) = answer.report {
                    self.fail(format!(
                        "node {to} refused a correct node's message: {line}"
                    ));
                }
                self.after(to); // persisted before the reply leaves
                if !self.is_up(to) {
                    return; // its disk failed: it stopped without answering
                }
                if self.chance(self.net.drop) {
                    return;
                }
                let incarnation = self.nodes[from as usize].incarnation;
                let at = self.arrival(to, from);
                self.schedule(
                    at,
                    Msg::Reply {
                        rpc,
                        to: from,
                        incarnation,
                        from: to,
                        response: answer.response,
                    },
                );
            }
            Msg::Reply {
                rpc,
                to,
                incarnation,
                from,
                response,
            } => {
                // A reply crossing a partition made after it left is lost.
                if !self.reachable(from, to) || self.completed.contains(&rpc) {
                    return;
                }
                let now = self.local_now(to);
                let node = &mut self.nodes[to as usize];
                if node.incarnation != incarnation || node.raft.is_none() {
                    return;
                }
                self.completed.insert(rpc);
                let (reply, line) = node.peers.check_response(from, response);
                let raft = node.raft.as_mut().unwrap();
                let refused = match reply {
                    Some(reply) => raft.handle_reply(from, reply, now).err(),
                    None => {
                        raft.handle_failure(from, now);
                        None
                    }
                };
                if let Some(problem) = line.or(refused.map(|r| r.to_string())) {
                    self.fail(format!(
                        "node {to} refused a correct node's reply: {problem}"
                    ));
                }
                self.after(to);
            }
            Msg::Forged { to, request } => self.deliver_forged(to, request),
            Msg::Synced {
                node,
                incarnation,
                index,
                term,
            } => {
                let n = &mut self.nodes[node as usize];
                if n.incarnation != incarnation || n.raft.is_none() {
                    return;
                }
                let synced = n
                    .unsynced_log
                    .iter()
                    .take_while(|e| e.index <= index)
                    .count();
                let durable: Vec<Entry> = n.unsynced_log.drain(..synced).collect();
                n.disk_log.extend(durable);
                n.raft.as_mut().unwrap().persisted(index, term);
                self.after(node);
            }
            Msg::Timeout {
                rpc,
                node,
                incarnation,
                peer,
            } => {
                if !self.completed.insert(rpc) {
                    return;
                }
                let now = self.local_now(node);
                let n = &mut self.nodes[node as usize];
                if n.incarnation != incarnation || n.raft.is_none() {
                    return;
                }
                n.raft.as_mut().unwrap().handle_failure(peer, now);
                self.after(node);
            }
        }
    }

    /// After any input to `id`: persist and apply its `Ready`, check the
    /// invariants, and send whatever requests it now wants to send.
    fn after(&mut self, id: NodeId) {
        let Some(raft) = self.nodes[id as usize].raft.as_mut() else {
            return;
        };
        let ready = raft.take_ready();
        if !self.persist_and_check(id, ready) {
            return;
        }
        self.report_durable(id);
        let peers: Vec<NodeId> = self.nodes[id as usize]
            .raft
            .as_ref()
            .unwrap()
            .peers()
            .collect();
        let now = self.local_now(id);
        for peer in peers {
            while let Some(request) = self.nodes[id as usize]
                .raft
                .as_mut()
                .unwrap()
                .poll_peer(peer, now)
            {
                self.send(id, peer, request);
            }
        }
        let ready = self.nodes[id as usize].raft.as_mut().unwrap().take_ready();
        if self.persist_and_check(id, ready) {
            self.report_durable(id);
        }
    }

    /// A non-leader's log is synced before it answers, so all of it is
    /// durable now: tell its core, as the runtime does.
    fn report_durable(&mut self, id: NodeId) {
        let raft = self.nodes[id as usize].raft.as_mut().unwrap();
        if raft.role() != Role::Leader {
            let (index, term) = (raft.log().last_index(), raft.log().last_term());
            raft.persisted(index, term);
        }
    }

    /// A failed write: the steps of `ready` before a random failure point
    /// reach the disk (term and vote, truncation, then entries one by one,
    /// as `Storage::persist` writes them), and the node stops.
    fn fail_write(&mut self, id: NodeId, ready: Ready) {
        // (A snapshot being received is not on the disk until installed,
        // and a failed write stops the node before it installs one.)
        let steps = usize::from(ready.hard_state.is_some())
            + usize::from(ready.truncate_from.is_some())
            + ready.appended.len();
        let mut left = self.rng.random_range(0..=steps);
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!(
                "{:>12?} n{id} disk write fails after {left} of {steps} steps: {:?} {:?} {:?}",
                self.now,
                ready.hard_state,
                ready.truncate_from,
                ready.appended.iter().map(|e| e.index).collect::<Vec<_>>()
            );
        }
        let node = &mut self.nodes[id as usize];
        // The process stops, the machine does not: what it wrote earlier
        // stays in the page cache and reaches the disk.
        let unsynced = std::mem::take(&mut node.unsynced_log);
        node.disk_log.extend(unsynced);
        if let Some(hs) = ready.hard_state {
            if left == 0 {
                return self.crash_on_failed_write(id);
            }
            left -= 1;
            node.disk_state = hs;
        }
        if let Some(from) = ready.truncate_from {
            if left == 0 {
                return self.crash_on_failed_write(id);
            }
            left -= 1;
            node.disk_log.retain(|e| e.index < from);
        }
        node.disk_log.extend(ready.appended.into_iter().take(left));
        self.crash_on_failed_write(id);
    }

    fn crash_on_failed_write(&mut self, id: NodeId) {
        self.disk_failures += 1;
        self.crash(id);
    }

    /// Replaces node `id`'s failing disk (its contents survive).
    pub fn repair_disk(&mut self, id: NodeId) {
        self.disk_broken[id as usize] = false;
    }

    fn send(&mut self, from: NodeId, to: NodeId, mut request: Request) {
        self.rpc_count += 1;
        if let Request::InstallSnapshot(is) = &mut request {
            // The runtime's part: fill in a chunk of the snapshot's bytes.
            let node = &self.nodes[from as usize];
            let Some((_, bytes)) = node
                .disk_snapshot
                .iter()
                .chain(&node.replaced_snapshots)
                .find(|(meta, _)| *meta == is.snapshot)
            else {
                self.fail(format!("node {from} sends a snapshot it does not have"));
            };
            let start = is.offset as usize;
            let mut end = (start + self.rng.random_range(1..=self.max_chunk)).min(bytes.len());
            while !bytes.is_char_boundary(end) {
                end -= 1;
            }
            is.data = bytes[start..end].to_string();
        }
        if std::env::var_os("SIM_TRACE").is_some() {
            let what = match &request {
                Request::AppendEntries(ae) => format!(
                    "append prev {} entries {} commit {} round {}",
                    ae.prev_log_index,
                    ae.entries.len(),
                    ae.leader_commit,
                    ae.read_round
                ),
                Request::RequestVote(rv) => format!(
                    "{} term {}",
                    if rv.pre_vote { "pre-vote" } else { "vote" },
                    rv.term
                ),
                Request::TimeoutNow(tn) => format!("timeout-now term {}", tn.term),
                Request::InstallSnapshot(is) => format!(
                    "snapshot {} offset {} len {} of {}",
                    is.snapshot.last_index,
                    is.offset,
                    is.data.len(),
                    is.snapshot.size
                ),
            };
            eprintln!("{:>12?} n{from} -> n{to} {what}", self.now);
        }
        if let Request::AppendEntries(ae) = &request {
            for e in &ae.entries {
                if let Payload::Command(d) = &e.payload {
                    self.payload_bytes_sent += d.text().len() as u64;
                }
            }
        }
        if self.chance(self.forge) {
            let forged = self.forge_copy(from, &request);
            let at = self.now + self.delay();
            self.schedule(
                at,
                Msg::Forged {
                    to,
                    request: forged,
                },
            );
        }
        self.next_rpc += 1;
        let rpc = self.next_rpc;
        let incarnation = self.nodes[from as usize].incarnation;
        let timeout_at = self.now + self.net.rpc_timeout;
        self.schedule(
            timeout_at,
            Msg::Timeout {
                rpc,
                node: from,
                incarnation,
                peer: to,
            },
        );
        if self.reachable(from, to) && !self.chance(self.net.drop) {
            let at = self.arrival(from, to);
            self.schedule(
                at,
                Msg::Request {
                    rpc,
                    from,
                    to,
                    request,
                },
            );
        }
    }

    fn fail(&self, what: String) -> ! {
        violation(self.now, self.seed, what)
    }

    /// A copy of `request` (sent by `from`) broken in one random way that
    /// every node must refuse whatever its state: another cluster, a
    /// stranger or the receiver's own id as sender, a sender that is not
    /// the named leader or candidate, a term beyond `MAX_TERM`, entries
    /// out of order or with decreasing terms or a term above the message's,
    /// a log position newer than the message's term.
    fn forge_copy(&mut self, from: NodeId, request: &Request) -> PeerRequest {
        let n = self.n() as NodeId;
        let mut forged = PeerRequest {
            cluster: SIM_CLUSTER.into(),
            from,
            rpc: request.clone(),
        };
        let kind = self.rng.random_range(0..9);
        match (&mut forged.rpc, kind) {
            (_, 0) => forged.cluster = "another-cluster".into(),
            (_, 1) => forged.from = n + self.rng.random_range(0..5),
            (Request::RequestVote(rv), 2) => rv.candidate_id = (from + 1) % n,
            (Request::AppendEntries(ae), 2) => ae.leader_id = (from + 1) % n,
            (Request::InstallSnapshot(is), 2) => is.leader_id = (from + 1) % n,
            (Request::TimeoutNow(tn), 2) => tn.leader_id = (from + 1) % n,
            (Request::TimeoutNow(tn), _) => tn.term = MAX_TERM + 1,
            (Request::RequestVote(rv), 3) => rv.term = MAX_TERM + 1,
            (Request::AppendEntries(ae), 3) => ae.term = MAX_TERM + self.rng.random_range(1..9),
            (Request::InstallSnapshot(is), 3) => is.term = MAX_TERM + 1,
            (Request::InstallSnapshot(is), 4) => is.snapshot.last_term = is.term + 1,
            (Request::InstallSnapshot(is), 5) => is.snapshot.last_index = 0,
            (Request::InstallSnapshot(is), _) => {
                is.offset = is.snapshot.size + 1 - is.data.len().min(1) as u64
            }
            (Request::RequestVote(rv), _) => rv.last_log_term = rv.term + 1,
            (Request::AppendEntries(ae), 4..6) if !ae.entries.is_empty() => {
                let k = self.rng.random_range(0..ae.entries.len());
                ae.entries[k].index += self.rng.random_range(1..4);
            }
            (Request::AppendEntries(ae), 6) if !ae.entries.is_empty() => {
                let k = self.rng.random_range(0..ae.entries.len());
                ae.entries[k].term = ae.term + 1;
            }
            (Request::AppendEntries(ae), 7) if ae.prev_log_term > 0 && !ae.entries.is_empty() => {
                ae.entries[0].term = ae.prev_log_term - 1;
            }
            (Request::AppendEntries(ae), _) => ae.prev_log_term = ae.term + 1,
        }
        forged
    }

    fn deliver_forged(&mut self, to: NodeId, request: PeerRequest) {
        let now = self.local_now(to);
        let node = &mut self.nodes[to as usize];
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let before = (raft.hard_state(), raft.role(), raft.log().last_index());
        let description = format!("{request:?}");
        let answer = node.peers.handle(raft, request, now);
        let after = (raft.hard_state(), raft.role(), raft.log().last_index());
        if !matches!(answer.response, Response::Error { .. }) || before != after {
            self.fail(format!(
                "node {to} accepted a forged request {description}: {:?}",
                answer.response
            ));
        }
        self.forged_refused += 1;
        self.after(to);
    }

    /// Writes `ready` to node `id`'s fake disk and checks the safety
    /// properties; false if the write failed and the node stopped.
    fn persist_and_check(&mut self, id: NodeId, ready: Ready) -> bool {
        if self.disk_broken[id as usize] && ready.needs_persist() {
            self.fail_write(id, ready);
            return false;
        }
        let (now, seed) = (self.now, self.seed);
        let fail = |what: String| violation(now, seed, what);
        let node = &mut self.nodes[id as usize];
        let raft = node.raft.as_ref().unwrap();
        // The fake disk, written the way the runtime writes the real one.
        if let Some(hs) = ready.hard_state {
            if hs.term < node.disk_state.term {
                fail(format!(
                    "node {id} persisted term {} after {}",
                    hs.term, node.disk_state.term
                ));
            }
            node.disk_state = hs;
        }
        let leader = raft.role() == Role::Leader;
        if !leader {
            // Synced before it answers, with whatever it wrote as leader.
            let unsynced = std::mem::take(&mut node.unsynced_log);
            node.disk_log.extend(unsynced);
        }
        // A snapshot being received, then installed: stored whole, and
        // the log cut as the core says (Figure 13, rules 6 and 7).
        for c in &ready.snapshot_chunks {
            if c.offset == 0 {
                node.receiving.clear();
            }
            if c.offset != node.receiving.len() as u64 {
                fail(format!(
                    "node {id} got a chunk at {} after {} bytes",
                    c.offset,
                    node.receiving.len()
                ));
            }
            node.receiving.push_str(&c.data);
        }
        let mut restored = None;
        if let Some(installed) = ready.installed_snapshot {
            let meta = installed.snapshot;
            let bytes = std::mem::take(&mut node.receiving);
            if let Err(what) = self.checker.check_snapshot(id, meta, &bytes) {
                fail(what);
            }
            if installed.log_kept {
                node.disk_log.retain(|e| e.index > meta.last_index);
            } else {
                node.disk_log.clear();
            }
            let kv = KvStore::read_snapshot(bytes.as_bytes())
                .unwrap_or_else(|e| fail(format!("node {id} cannot read its snapshot: {e}")));
            if kv.applied_index() != meta.last_index {
                fail(format!(
                    "node {id}'s snapshot {meta:?} holds {}",
                    kv.applied_index()
                ));
            }
            node.replaced_snapshots.extend(node.disk_snapshot.take());
            node.disk_snapshot = Some((meta, bytes));
            restored = Some(kv);
            self.checker.snapshots_installed += 1;
        }
        if let Some(kv) = restored {
            node.applied_index = kv.applied_index();
            node.kv = kv;
        }
        if let Some(from) = ready.truncate_from {
            if leader {
                fail(format!(
                    "leader {id} truncated its log at {from} (leader append-only)"
                ));
            }
            node.disk_log.retain(|e| e.index < from);
        }
        for e in ready.appended.iter().filter(|_| !self.disk_drops_appends) {
            let last = node.disk_last_index();
            if e.index != last + 1 {
                fail(format!(
                    "node {id} appended index {} to a log of {last}",
                    e.index
                ));
            }
            if leader {
                node.unsynced_log.push(e.clone());
            } else {
                node.disk_log.push(e.clone());
            }
        }
        // A leader's log writer syncs what it wrote a little later.
        let sync = ready
            .appended
            .last()
            .filter(|_| leader)
            .map(|e| (e.index, e.term, node.incarnation));
        // Log matching: an (index, term) pair identifies one payload and
        // one predecessor everywhere.
        for e in &ready.appended {
            let prev = raft.log().term_at(e.index - 1).unwrap();
            let seen = self
                .checker
                .entries
                .entry((e.index, e.term))
                .or_insert((e.payload.clone(), prev));
            if *seen != (e.payload.clone(), prev) {
                let seen = seen.clone();
                fail(format!(
                    "log matching: node {id} has {e:?} after term {prev}, elsewhere {seen:?}"
                ));
            }
        }
        // State machine safety, and applying in order without gaps.
        for e in &ready.committed {
            if e.index != node.applied_index + 1 {
                fail(format!(
                    "node {id} applied {} after {}",
                    e.index, node.applied_index
                ));
            }
            node.applied_index = e.index;
            node.kv.apply(e);
            let seen = self
                .checker
                .commit_term
                .entry(e.index)
                .or_insert(raft.term());
            *seen = (*seen).min(raft.term());
            if let Some(other) = self.checker.committed.get(&e.index) {
                if other != e {
                    fail(format!(
                        "state machine safety: node {id} applied {e:?}, another {other:?}"
                    ));
                }
            } else {
                self.checker.committed.insert(e.index, e.clone());
            }
        }
        // Election safety and leader append-only.
        if raft.role() == Role::Leader {
            let term = raft.term();
            let last = raft.log().last_index();
            if let Some(&other) = self.checker.leaders.get(&term) {
                if other != id {
                    fail(format!(
                        "election safety: {other} and {id} both led term {term}"
                    ));
                }
            } else {
                self.checker.leaders.insert(term, id);
                if let Some(e) = self.checker.lacking_committed(raft) {
                    fail(format!(
                        "leader completeness: new leader {id} of term {term} lacks {e:?}"
                    ));
                }
            }
            if let Some(&(t, l)) = self.checker.leader_last.get(&id)
                && t == term
                && last < l
            {
                fail(format!(
                    "leader append-only: leader {id} shrank from {l} to {last}"
                ));
            }
            self.checker.leader_last.insert(id, (term, last));
        } else {
            self.checker.leader_last.remove(&id);
        }
        node.clients.route_reads(ready.reads);
        if std::env::var_os("SIM_TRACE").is_some() {
            for e in &ready.events {
                eprintln!("{now:>12?} n{id} {e:?}");
            }
        }
        if self.keep_events {
            self.events
                .extend(ready.events.into_iter().map(|e| (id, e)));
        }
        if let Some((index, term, incarnation)) = sync {
            let at = self.now + self.sync_delay();
            self.schedule(
                at,
                Msg::Synced {
                    node: id,
                    incarnation,
                    index,
                    term,
                },
            );
        }
        true
    }

    /// How long a leader's log sync takes: up to `max_sync_delay`.
    fn sync_delay(&mut self) -> Duration {
        let max = self.max_sync_delay.as_nanos() as u64;
        Duration::from_nanos(self.rng.random_range(0..=max))
    }

    /// The slow checks, every few hundred steps: every pair of logs obeys
    /// log matching in full, and every leader holds every entry committed
    /// in an earlier term. (A deposed leader that has not heard of it yet
    /// may lack entries committed in later terms.)
    pub fn check_deep(&self) {
        let logs: Vec<(NodeId, &raft::consensus::Log)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.raft.as_ref().map(|r| (i as NodeId, r.log())))
            .collect();
        for (a, la) in &logs {
            for (b, lb) in &logs {
                if a >= b {
                    continue;
                }
                // Compare where both still hold entries: the last index
                // where both have the same term, and everything up to it
                // must be identical. (Below a snapshot, entries are
                // committed; the state machine checks cover them.)
                let first = la.first_index().max(lb.first_index());
                let last = la.last_index().min(lb.last_index());
                if first > last {
                    continue;
                }
                if let Some(k) = (first..=last)
                    .rev()
                    .find(|&k| la.term_at(k) == lb.term_at(k))
                    && la.slice(first, k) != lb.slice(first, k)
                {
                    self.fail(format!(
                        "log matching: nodes {a} and {b} agree on index {k} but differ before"
                    ));
                }
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(r) = n.raft.as_ref() else { continue };
            if r.role() == Role::Leader
                && let Some(e) = self.checker.lacking_committed(r)
            {
                self.fail(format!(
                    "leader completeness: leader {i} of term {} lacks {e:?}",
                    r.term()
                ));
            }
        }
    }

    // ----- Observations -----

    /// The leader of the highest term among running, connected nodes.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| self.connected[*i])
            .filter_map(|(i, n)| {
                n.raft
                    .as_ref()
                    .filter(|r| r.role() == Role::Leader)
                    .map(|r| (r.term(), i as NodeId))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// How many running nodes have applied `index` (entry by entry or
    /// through a snapshot), and its payload. (The checker has verified
    /// that they all applied the same one.)
    pub fn n_applied(&self, index: Index) -> (usize, Option<Payload>) {
        let count = self
            .nodes
            .iter()
            .filter(|n| n.raft.is_some() && n.applied_index >= index)
            .count();
        let payload = (count > 0)
            .then(|| {
                self.checker
                    .committed
                    .get(&index)
                    .map(|e| e.payload.clone())
            })
            .flatten();
        (count, payload)
    }
}

/// A snapshot's text with its last key left out (and the header's count
/// lowered to match, so that it still reads back).
fn without_last_key(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    let mut header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    header["keys"] = (header["keys"].as_u64().unwrap() - 1).into();
    let header = header.to_string();
    lines[0] = &header;
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn violation(now: Duration, seed: u64, what: String) -> ! {
    panic!("safety violation at t={now:?} (seed {seed}): {what}")
}

/// Prints the seed and the replay command if the test panics while this
/// guard is alive.
pub struct SeedGuard {
    /// The test binary, i.e. the file name under tests/ without `.rs`.
    pub file: &'static str,
    pub test: &'static str,
    pub seed: u64,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n*** {} failed with seed {}; replay with:\n    SIM_SEED={} cargo test --test {} -- --exact {}\n",
                self.test, self.seed, self.seed, self.file, self.test
            );
        }
    }
}

/// Runs `scenario` once per seed of `seeds(base, count)`, each under a
/// [`SeedGuard`] so a failure says how to replay it.
pub fn for_seeds(
    file: &'static str,
    test: &'static str,
    base: u64,
    count: u64,
    scenario: impl Fn(u64),
) {
    for seed in seeds(base, count) {
        let _guard = SeedGuard { file, test, seed };
        scenario(seed);
    }
}

/// The seeds a test should run: `SIM_SEED` alone if set, otherwise
/// `default_count` seeds (scaled by `SIM_SEEDS_SCALE`) starting from a
/// fixed base, so CI runs are reproducible.
pub fn seeds(base: u64, default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.parse().expect("SIM_SEED must be a number")];
    }
    let scale: f64 = std::env::var("SIM_SEEDS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let count = ((default_count as f64 * scale).round() as u64).max(1);
    (base..base + count).collect()
}
