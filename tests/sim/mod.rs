//! A deterministic simulation of a Raft cluster over the pure core.
//!
//! Time is virtual and every random choice comes from one seeded generator,
//! so a seed replays exactly. The network models what the real runtime
//! does: each request ends, for the sender, in exactly one reply or one
//! failure (after `rpc_timeout`); a leader keeps several AppendEntries in
//! flight to a follower (the window varies with the seed); each direction
//! of a link delivers in order, as the runtime's TCP connections do.
//! Requests and replies can be dropped, delayed, duplicated (the receiver handles a
//! request twice) and reordered (a long delay lets a later RPC overtake an
//! earlier one), and links can be cut by partitions. Nodes crash, losing
//! everything but their disk, and restart from it alone.
//!
//! What a node does with its core's `Ready` is the runtime's own code,
//! `raft::service::durability`, over a simulated disk ([`disk`]): a
//! leader's log writes become durable a little later, as the runtime's log
//! writer syncs them; a crash before then keeps a random part of them.
//! The peer and client services are the runtime's too.
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
//!
//! Files: this one (the cluster, its nodes, running it, handling a
//! `Ready`); `network.rs` (messages, delays, faults, partitions, forged
//! requests); `clock.rs` (each node's clock, and the lease check);
//! `disk.rs`; `checker.rs`; `kvsim.rs` (key-value clients).
#![allow(dead_code)] // each test file uses a different part of this module

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use raft::config::Member;
use raft::consensus::membership::{Change, Membership};
use raft::consensus::{
    ChangeRefused, Config, Entry, Event, Index, Json, NodeId, NotLeader, Payload, Raft, Ready,
    Role, SnapshotMeta, Term, TransferError,
};
use raft::kv::KvStore;
use raft::service::{ClientService, PeerService, durability};

mod checker;
mod clock;
pub mod disk;
pub mod kvsim;
mod network;

pub use checker::Checker;
use clock::Clock;
use disk::{DiskError, SimDisk};
pub use network::NetConfig;
use network::{Msg, Scheduled};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

pub const MS: Duration = Duration::from_millis(1);

/// The cluster id every simulated node uses.
pub const SIM_CLUSTER: &str = "sim";

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

/// One server: its running core (if up), its disk, its state machine.
pub struct SimNode {
    pub raft: Option<Raft>,
    /// Bumped at every crash, so replies meant for an earlier life are
    /// discarded.
    pub incarnation: u64,
    /// Its disk: exactly what the runtime would have written and synced.
    pub disk: SimDisk,
    /// The log writer has a sync in progress (`Msg::Synced` will end it).
    pub syncing: bool,
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
    /// The last index on its disk, synced or not.
    pub fn disk_last_index(&self) -> Index {
        self.disk.last_index()
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
    /// Fault injection for testing the checker itself: disks ignore log
    /// appends (a node that acknowledges before it fsyncs).
    pub disk_drops_appends: bool,
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
    /// How many servers the cluster started with (the bootstrap
    /// membership: ids `0..initial`); any more are spares.
    pub initial: usize,
    /// Servers told they were removed from the cluster: stopped for good,
    /// as the runtime stops itself (`raftnode` exits).
    pub retired: std::collections::BTreeSet<NodeId>,
}

impl Sim {
    pub fn new(n: usize, seed: u64, net: NetConfig) -> Sim {
        Sim::tuned(n, seed, net, |_| {})
    }

    /// A cluster whose nodes' settings `tune` changes from `raft_config`.
    pub fn tuned(n: usize, seed: u64, net: NetConfig, tune: fn(&mut Config)) -> Sim {
        Sim::build(n, 0, seed, net, tune)
    }

    /// A cluster of `n` servers, and `spares` more (ids `n..n + spares`)
    /// that are not started: servers a membership change may add. Started
    /// ([`Sim::start`]), a spare knows the first `n` (the bootstrap
    /// membership) and learns the rest from the leader's log.
    pub fn with_spares(n: usize, spares: usize, seed: u64, net: NetConfig) -> Sim {
        Sim::build(n, spares, seed, net, |_| {})
    }

    fn build(n: usize, spares: usize, seed: u64, net: NetConfig, tune: fn(&mut Config)) -> Sim {
        let total = n + spares;
        let mut sim = Sim {
            initial: n,
            retired: Default::default(),
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
            connected: vec![true; total],
            group: vec![0; total],
            rpc_count: 0,
            payload_bytes_sent: 0,
            checker: Checker::default(),
            events: Vec::new(),
            keep_events: false,
            disk_drops_appends: false,
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
                total
            ],
        };
        for id in 0..total as NodeId {
            let (peers, clients) = services(id, n);
            sim.nodes.push(SimNode {
                raft: None,
                incarnation: 0,
                disk: SimDisk::new(seed ^ (id << 40) ^ 0xd15c),
                syncing: false,
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

    pub fn raft(&self, id: NodeId) -> Option<&Raft> {
        self.nodes[id as usize].raft.as_ref()
    }

    // ----- Faults -----

    /// Crashes a node: its volatile state is gone, its disk stays.
    pub fn crash(&mut self, id: NodeId) {
        let n = self.initial;
        // Writes not yet synced may or may not have reached the disk.
        let kept = self
            .rng
            .random_range(0..=self.nodes[id as usize].disk.unsynced.len());
        let node = &mut self.nodes[id as usize];
        node.disk.crash(kept);
        node.raft = None;
        node.syncing = false;
        node.incarnation += 1;
        node.applied_index = 0;
        node.kv = KvStore::new();
        (node.peers, node.clients) = services(id, n);
        self.checker.crashed(id);
    }

    /// Starts (or restarts) a node from its disk alone.
    pub fn start(&mut self, id: NodeId) {
        let n = self.initial;
        let node = &mut self.nodes[id as usize];
        assert!(node.raft.is_none(), "node {id} is running");
        let seed = self.seed ^ (id << 32) ^ (node.incarnation << 48);
        // The state machine from the snapshot, the log after it.
        let (meta, kv) = match &node.disk.snapshot {
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
            .disk
            .log
            .iter()
            .filter(|e| e.index > meta.last_index)
            .cloned()
            .collect();
        let mut config = raft_config(id, n, seed);
        (self.tune)(&mut config);
        let now = self.local(id, self.now);
        let node = &mut self.nodes[id as usize];
        node.raft = Some(Raft::restore(
            config,
            node.disk.state,
            (meta, node.disk.snapshot_membership.clone()),
            log,
            now,
        ));
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
        let membership = node
            .raft
            .as_ref()
            .unwrap()
            .membership_at(meta.last_index)
            .clone();
        let disk = &mut node.disk;
        disk.replaced_snapshots.extend(disk.snapshot.take());
        disk.snapshot = Some((meta, bytes));
        disk.snapshot_membership = Some(membership);
        let cut = node
            .raft
            .as_mut()
            .unwrap()
            .compact(meta)
            .expect("a newer snapshot");
        // The log files wholly covered go; here, the entries dropped (the
        // core keeps a few trailing ones).
        node.disk.log.retain(|e| e.index > cut);
        node.disk.unsynced.retain(|e| e.index > cut);
        self.checker.snapshots_taken += 1;
        self.after(id);
        true
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[id as usize].raft.is_some()
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

    /// Asks node `id` to change the membership, as `raftctl add` and the
    /// others will: `Err` if it refuses (not leader, a change in progress,
    /// its term's first entry not yet committed, an invalid change).
    pub fn propose_change(
        &mut self,
        id: NodeId,
        change: &Change,
    ) -> Result<(Index, Membership), ChangeRefused> {
        let now = self.local_now(id);
        let raft = self.nodes[id as usize]
            .raft
            .as_mut()
            .ok_or(ChangeRefused::NotLeader(NotLeader {
                leader_hint: None,
                transferring_to: None,
            }))?;
        let result = raft.propose_change(change, now);
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

    /// After any input to `id`: handle its `Ready`, and send whatever
    /// requests it now wants to send (and handle the `Ready` of that).
    fn after(&mut self, id: NodeId) {
        if !self.handle_ready(id) {
            return;
        }
        let raft = self.nodes[id as usize].raft.as_ref().unwrap();
        let peers: Vec<NodeId> = raft.peers().collect();
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
        self.handle_ready(id);
    }

    /// Handles node `id`'s `Ready` as the runtime does, with the runtime's
    /// own durability policy over the simulated disk; applies committed
    /// entries, checks the safety properties, and starts the log writer's
    /// sync if it has work. False if the node is down, or its disk failed
    /// and it stopped.
    fn handle_ready(&mut self, id: NodeId) -> bool {
        loop {
            let node = &mut self.nodes[id as usize];
            let Some(raft) = node.raft.as_mut() else {
                return false;
            };
            node.disk.drops_appends = self.disk_drops_appends;
            let handled = match durability::handle_ready(raft, &mut node.disk, &mut node.clients) {
                Ok(handled) => handled,
                Err(DiskError::Failed) => {
                    self.disk_failures += 1;
                    self.crash(id);
                    return false;
                }
                Err(DiskError::Violation(what)) => self.fail(format!("node {id}'s disk: {what}")),
            };
            self.apply_and_check(id, handled.ready);
            let node = &mut self.nodes[id as usize];
            if handled.sync_wanted && !node.syncing {
                // The log writer wakes and syncs what is written so far.
                node.syncing = true;
                let point = durability::sync_point(node.raft.as_ref().unwrap());
                let incarnation = node.incarnation;
                let at = self.now + self.sync_delay();
                self.schedule(
                    at,
                    Msg::Synced {
                        node: id,
                        incarnation,
                        point,
                    },
                );
            }
            if !handled.again {
                return true;
            }
        }
    }

    /// The log writer's sync that began at `point` has ended.
    fn synced(&mut self, id: NodeId, incarnation: u64, point: (Index, Term)) {
        let node = &mut self.nodes[id as usize];
        let Some(raft) = node
            .raft
            .as_mut()
            .filter(|_| node.incarnation == incarnation)
        else {
            return;
        };
        node.syncing = false;
        node.disk.synced_through(point.0);
        durability::log_synced(raft, point);
        self.after(id);
    }

    /// After a `Ready` is written: restores the state machine from a
    /// snapshot installed, applies committed entries, and checks them and
    /// the rest against the safety properties.
    fn apply_and_check(&mut self, id: NodeId, ready: Ready) {
        let (now, seed) = (self.now, self.seed);
        let fail = |what: String| violation(now, seed, what);
        let node = &mut self.nodes[id as usize];
        let raft = node.raft.as_ref().unwrap();
        if let Some(installed) = &ready.installed_snapshot {
            let meta = installed.snapshot;
            let bytes = &node.disk.snapshot.as_ref().expect("just installed").1;
            if let Err(what) = self.checker.check_snapshot(id, meta, bytes) {
                fail(what);
            }
            let kv = KvStore::read_snapshot(bytes.as_bytes())
                .unwrap_or_else(|e| fail(format!("node {id} cannot read its snapshot: {e}")));
            if kv.applied_index() != meta.last_index {
                fail(format!(
                    "node {id}'s snapshot {meta:?} holds {}",
                    kv.applied_index()
                ));
            }
            node.applied_index = kv.applied_index();
            node.kv = kv;
            self.checker.snapshots_installed += 1;
        }
        if let Err(what) = self.checker.check_written(id, raft, &ready) {
            fail(what);
        }
        // Apply in order, without gaps.
        for e in &ready.committed {
            if e.index != node.applied_index + 1 {
                fail(format!(
                    "node {id} applied {} after {}",
                    e.index, node.applied_index
                ));
            }
            node.applied_index = e.index;
            node.kv.apply(e);
            if let Err(what) = self.checker.check_applied(id, raft.term(), e) {
                fail(what);
            }
        }
        if let Err(what) = self.checker.check_leader(id, raft) {
            fail(what);
        }
        if std::env::var_os("SIM_TRACE").is_some() {
            for e in &ready.events {
                eprintln!("{now:>12?} n{id} {e:?}");
            }
        }
        if self.keep_events {
            self.events
                .extend(ready.events.into_iter().map(|e| (id, e)));
        }
    }

    /// How long a leader's log sync takes: up to `max_sync_delay`.
    fn sync_delay(&mut self) -> Duration {
        let max = self.max_sync_delay.as_nanos() as u64;
        Duration::from_nanos(self.rng.random_range(0..=max))
    }

    fn fail(&self, what: String) -> ! {
        violation(self.now, self.seed, what)
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
