//! The Raft algorithm as a pure state machine.
//!
//! Nothing in this module reads a clock, opens a socket or a file, or starts
//! a thread. The caller feeds it inputs and acts on what it hands back:
//!
//! * time: [`Raft::tick`] with the caller's notion of "now" (a `Duration`
//!   since any fixed origin); [`Raft::tick_deadline`] (an election timeout,
//!   or a leader's CheckQuorum check and transfer deadline) and
//!   [`Raft::peer_wakeup`] say when the next input is due;
//! * requests from other servers: [`Raft::handle_request`] returns the reply;
//! * outgoing requests: [`Raft::poll_peer`] builds the next request for one
//!   peer (several AppendEntries may be in flight to a follower, as its
//!   [`Progress`] allows), and the caller reports each answer with
//!   [`Raft::handle_reply`] (answers say what they answer, so they need
//!   no matching up) or a lost connection with [`Raft::handle_failure`];
//! * client commands: [`Raft::propose`], and [`Raft::read_index`] for a
//!   linearizable read (thesis §6.4), answered by a [`ReadState`];
//! * [`Raft::transfer_leadership`] hands leadership to another server
//!   (thesis §3.10; see [`transfer`]). Elections ask a pre-vote first and
//!   leaders step down without a majority (see [`election`]); neither
//!   adds anything to the contract below, since a pre-vote changes no
//!   durable state and a step-down keeps the term;
//! * after every call: [`Raft::take_ready`] returns what must be made durable,
//!   what may be applied, and which reads may now be served;
//! * durability: [`Raft::persisted`] says the log is on disk up to an
//!   entry;
//! * compaction (§7): [`Raft::compact`] says the caller has stored a
//!   snapshot of the state machine covering the log up to an entry, which
//!   the log then drops. A follower whose next entries are gone gets the
//!   snapshot (InstallSnapshot, Figure 13) in chunks: the core says which
//!   snapshot and from which offset, and the caller, who holds the bytes,
//!   fills each chunk in. The core never sees a snapshot's contents except
//!   as chunks passing through, whose CRC-32 it checks.
//!
//! **The caller's contract: what may leave before what is on disk.** A
//! [`Ready`] holds three kinds of durable state, with different rules:
//!
//! 1. `hard_state` (term and vote) must be on disk before the caller sends
//!    any request or reply obtained after the call that produced it. A vote
//!    or a term that could be forgotten in a crash would let a server vote
//!    twice in one term (§5.2).
//! 2. `snapshot_chunks` are stored in order (where they go need not be
//!    durable until the snapshot is complete). `installed_snapshot` must
//!    be durable, and the log cut as it says, before the reply that
//!    reported it `done` is sent; the state machine is replaced by the
//!    snapshot before any entry of a later `committed` is applied. Then
//!    `truncate_from` and `appended` must be written in order, and are
//!    durable once synced. A server acknowledges entries only in the reply
//!    `handle_request` returns (its `match_index`): that reply must not be
//!    sent until the log is durable up to the acknowledged entry, because a
//!    leader counts the acknowledgement toward a majority (§5.3).
//! 3. A **leader** may send AppendEntries carrying entries that are not yet
//!    durable on its own disk: writing its log in parallel with replicating
//!    it is safe (thesis §10.2.1), because the leader counts *itself*
//!    toward a commit only for entries the caller has reported durable with
//!    [`Raft::persisted`]. A crash before the sync loses only entries that
//!    no one was told are committed.
//!
//! A server whose storage lost entries it may have acknowledged starts with
//! [`HardState::lost_through`] set (the caller's storage finds the loss);
//! `persisted` clears it once the log is durable that far again, which
//! produces a `Ready` of its own: check [`Raft::has_ready`] after it.
//!
//! `committed` entries may be applied in the order given as soon as they
//! are handed out: they are on a majority's disks. `persisted(index, term)`
//! names the entry by term as well, so a report about entries replaced
//! since (a deposed leader's tail) is ignored.
//!
//! The runtime writes everything in a `Ready` before releasing its lock,
//! syncs hard state and a non-leader's log before unlocking, and lets a log
//! writer thread sync the leader's log outside the lock (group commit); the
//! simulation models the same with a disk whose leader syncs complete
//! later.
//!
//! Rule references are to the extended Raft paper (Ongaro and Ousterhout,
//! 2014): "Figure 2" and section numbers like §5.3; "thesis §6.4" is
//! Ongaro's dissertation, "Consensus: Bridging Theory and Practice" (2014).

mod election;
mod event;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
mod read_only;
mod snapshot;
mod tracker;
mod transfer;
pub mod validate;

use std::fmt;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

pub use election::LeaseRead;
pub use event::{Event, VoteRefusal};
pub use log::Log;
pub use message::{
    AppendEntries, AppendEntriesReply, Entry, Index, InstallSnapshot, InstallSnapshotReply, Json,
    NodeId, Payload, Reply, Request, RequestVote, RequestVoteReply, SnapshotMeta, Term, TimeoutNow,
    TimeoutNowReply,
};
pub use progress::{Batch, Progress, ProgressState, Refusal, SnapshotTransfer};
pub use transfer::{Transfer, TransferError};
pub use validate::{MAX_INDEX, MAX_TERM, Rejection};

/// Fixed settings of one server.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Every other member of the cluster.
    pub peers: Vec<NodeId>,
    /// Election timeouts are drawn uniformly from this range, anew each
    /// time the timer is reset (§5.2), so that split votes are rare.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long a leader lets a peer go without an AppendEntries.
    pub heartbeat_interval: Duration,
    /// At most this many entries per AppendEntries.
    pub max_entries_per_append: usize,
    /// And at most about this many bytes of entry data, so that a batch of
    /// large entries stays within the transport's message limit. A single
    /// entry is always sent, whatever its size, so replication never stalls.
    pub max_bytes_per_append: usize,
    /// At most this many AppendEntries carrying entries in flight to one
    /// follower whose log position is known (pipelining; see
    /// [`progress`]). 1 is stop-and-wait. Together with the two limits
    /// above it bounds what a leader has outstanding per follower.
    pub max_inflight_appends: usize,
    /// After a snapshot, the log keeps up to this many of the entries it
    /// covers (and at most about `trailing_bytes` of them), so that a
    /// follower only a little behind catches up from the log instead of
    /// needing the whole snapshot (as hashicorp/raft's `TrailingLogs`).
    pub trailing_entries: u64,
    pub trailing_bytes: usize,
    /// Ask for a pre-vote before standing (thesis §9.6; see [`election`]).
    pub pre_vote: bool,
    /// A leader steps down once a majority has gone quiet for a minimum
    /// election timeout, and servers that heard from a leader within one
    /// refuse votes (thesis §6.2 and §9.6; see [`election`]).
    pub check_quorum: bool,
    /// Lease reads (thesis §6.4.1; see [`Raft::lease_read`]): a leader
    /// answers linearizable reads without a heartbeat round while a
    /// majority answered it recently enough. Every node of the cluster
    /// must have it on: it also makes a node refuse votes for a minimum
    /// election timeout after it starts. Needs `check_quorum`.
    pub lease_reads: bool,
    /// The most any node's clock may run fast or slow, as a fraction
    /// (0.1: between 0.9 and 1.1 seconds per second). Lease reads are
    /// linearizable only within this bound.
    pub max_clock_drift: f64,
    /// Seeds the election-timeout generator, so a simulation replays.
    pub seed: u64,
}

impl Config {
    /// Server `id` of a cluster of `members` (`id` among them), with the
    /// runtime's default settings: election timeouts of 300..600 ms,
    /// heartbeats every 50 ms, and AppendEntries of at most 256 entries or
    /// about 1 MiB, which leaves room under the 8 MiB line limit for JSON
    /// escaping, with up to 4 of them in flight per follower; after a
    /// snapshot, up to 1,000 entries (4 MiB) of trailing log; PreVote and
    /// CheckQuorum on.
    pub fn new(id: NodeId, members: impl IntoIterator<Item = NodeId>, seed: u64) -> Config {
        Config {
            id,
            peers: members.into_iter().filter(|&m| m != id).collect(),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            heartbeat_interval: Duration::from_millis(50),
            max_entries_per_append: 256,
            max_bytes_per_append: 1024 * 1024,
            max_inflight_appends: 4,
            trailing_entries: 1000,
            trailing_bytes: 4 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            max_clock_drift: 0.1,
            seed,
        }
    }

    fn cluster_size(&self) -> usize {
        self.peers.len() + 1
    }

    /// Whether these settings can run a server; the one check, for the
    /// command line and for [`Raft::restore`] alike.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let ms = |d: Duration| d.as_millis();
        let (min, max) = (self.election_timeout_min, self.election_timeout_max);
        if self.peers.contains(&self.id) {
            Err(InvalidConfig::Peers(format!(
                "the peers include this server ({})",
                self.id
            )))
        } else if min.is_zero() || min > max {
            Err(InvalidConfig::ElectionTimeout(format!(
                "needs 0 < MIN <= MAX, not {}..{} ms",
                ms(min),
                ms(max)
            )))
        } else if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= min {
            Err(InvalidConfig::Heartbeat(format!(
                "{} ms must be above 0 and below the shortest election timeout ({} ms)",
                ms(self.heartbeat_interval),
                ms(min)
            )))
        } else if self.max_entries_per_append == 0 || self.max_inflight_appends == 0 {
            Err(InvalidConfig::Batches(
                "entries per AppendEntries and AppendEntries in flight must be above 0".into(),
            ))
        } else if !(0.0..0.5).contains(&self.max_clock_drift) {
            // Beyond a half, a lease would be at most a third of the
            // election timeout: not worth the clock risk.
            Err(InvalidConfig::ClockDrift(format!(
                "must be at least 0 and below 0.5, not {}",
                self.max_clock_drift
            )))
        } else if self.lease_reads && !self.check_quorum {
            Err(InvalidConfig::LeaseReads(
                "lease reads need CheckQuorum".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Retries to an unreachable peer back off up to this; kept below the
    /// shortest election timeout so that a peer that comes back hears from
    /// the leader before it would start an election of its own.
    fn max_backoff(&self) -> Duration {
        (self.election_timeout_min / 2).max(self.heartbeat_interval)
    }
}

/// Settings that cannot run a server (see [`Config::validate`]); each
/// names the setting, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidConfig {
    Peers(String),
    ElectionTimeout(String),
    Heartbeat(String),
    Batches(String),
    ClockDrift(String),
    LeaseReads(String),
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (setting, why) = match self {
            InvalidConfig::Peers(w) => ("peers", w),
            InvalidConfig::ElectionTimeout(w) => ("election timeout", w),
            InvalidConfig::Heartbeat(w) => ("heartbeat interval", w),
            InvalidConfig::Batches(w) => ("append limits", w),
            InvalidConfig::ClockDrift(w) => ("clock drift bound", w),
            InvalidConfig::LeaseReads(w) => ("lease reads", w),
        };
        write!(f, "{setting}: {why}")
    }
}

impl std::error::Error for InvalidConfig {}

/// What must survive a crash besides the log (Figure 2, "Persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    /// Not in Figure 2, which assumes a disk that never loses what was
    /// written: non-zero after a storage fault cost this server log
    /// entries it may have acknowledged, up to this index. Until its log
    /// holds that far again (fetched from a leader) it neither votes nor
    /// stands (see [`Raft::repairing`]); then it goes back to 0.
    pub lost_through: Index,
    /// With `lost_through`: our term when the loss was found, at least the
    /// term of every entry lost. While repairing we vote only for a
    /// candidate whose log is at least as up to date as (`lost_term`,
    /// `lost_through`), hence as the log we had (§5.4.1 still holds).
    pub lost_term: Term,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Follower,
    /// Asking for pre-votes, in its old term (thesis §9.6).
    PreCandidate,
    Candidate,
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "Follower",
            Role::PreCandidate => "PreCandidate",
            Role::Candidate => "Candidate",
            Role::Leader => "Leader",
        })
    }
}

/// A leader's view of one follower (see [`Raft::followers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerView {
    pub id: NodeId,
    pub match_index: Index,
    pub next_index: Index,
    /// Requests sent and not yet answered.
    pub in_flight: usize,
    pub state: ProgressState,
    /// Whether its last RPC got an answer.
    pub reachable: bool,
    /// When it last answered in this leadership; until it does, when the
    /// leadership began (CheckQuorum counts every follower as heard then).
    pub last_heard: Duration,
}

/// Returned by [`Raft::propose`] on a server that is not the leader, or
/// that is handing its leadership over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    pub leader_hint: Option<NodeId>,
    /// A leadership transfer to this server is in progress: the leader
    /// takes no proposals until it ends, moments from now.
    pub transferring_to: Option<NodeId>,
}

/// What the caller must do after a call into [`Raft`]; see the module docs
/// for the order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Term and vote to persist, if they changed.
    pub hard_state: Option<HardState>,
    /// Bytes of the snapshot a leader is sending us, in order, to store
    /// until it is complete (a chunk at offset 0 starts a new one).
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// The snapshot received is complete and its checksum matched: it
    /// becomes this server's snapshot, and the state machine is to be
    /// restored from it.
    pub installed_snapshot: Option<InstalledSnapshot>,
    /// Remove persisted entries from this index on, before appending.
    pub truncate_from: Option<Index>,
    /// Entries to append to the persisted log, in order.
    pub appended: Vec<Entry>,
    /// Newly committed entries to apply, in order, after persisting.
    pub committed: Vec<Entry>,
    /// Outcomes of `read_index` requests, in the order they were made.
    pub reads: Vec<ReadState>,
    pub events: Vec<Event>,
}

/// The answer to [`Raft::read_index`]: once the state machine has applied
/// `index`, a read of it is linearizable. `index: None` means this server
/// stopped being leader before the read was confirmed; ask the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Option<Index>,
}

impl Ready {
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some()
            || !self.snapshot_chunks.is_empty()
            || self.installed_snapshot.is_some()
            || self.truncate_from.is_some()
            || !self.appended.is_empty()
    }
}

/// Part of a snapshot being received: `data` goes at `offset` of the
/// snapshot named by `snapshot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub snapshot: SnapshotMeta,
    pub offset: u64,
    pub data: String,
}

/// A received snapshot to install (Figure 13, rules 5 to 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledSnapshot {
    pub snapshot: SnapshotMeta,
    /// The log held the snapshot's last entry: the entries after it stay
    /// (rule 6). Otherwise the whole log is discarded (rule 7): the log
    /// now ends at the snapshot.
    pub log_kept: bool,
}

/// One Raft server's protocol state.
pub struct Raft {
    cfg: Config,
    rng: Xoshiro256PlusPlus,

    // Persistent state (Figure 2). Changes set `hard_state_dirty`.
    term: Term,
    voted_for: Option<NodeId>,
    /// See [`HardState::lost_through`] and [`HardState::lost_term`].
    lost_through: Index,
    lost_term: Term,
    log: Log,
    /// The latest snapshot (§7). The log starts at or before its end: a
    /// few entries it covers may trail (`Config::trailing_entries`).
    snapshot: SnapshotMeta,
    /// Follower: the snapshot a leader is sending us.
    receiving: Option<snapshot::Receiving>,

    // Volatile state.
    role: Role,
    leader_id: Option<NodeId>,
    /// Highest index known committed. Never decreases while running.
    commit_index: Index,
    /// Highest index handed to the caller in `Ready::committed`.
    emitted_index: Index,
    /// Followers and candidates start an election at this time.
    election_deadline: Duration,
    /// When we last heard from the leader we follow (a valid
    /// AppendEntries or InstallSnapshot): its lease (see [`election`]).
    leader_contact: Duration,
    /// (Pre-)candidate: who granted and who refused our vote this round.
    votes: election::Votes,
    /// Candidate: this election is a leadership transfer's.
    transfer_election: bool,
    /// Leader: a leadership transfer in progress.
    transfer: Option<Transfer>,
    /// When this server started (for `VoteRefusal::JustStarted`).
    started: Duration,
    /// The other servers: how replication to each stands, whether it
    /// answers, and what a majority has reached.
    peers: tracker::Tracker,

    /// Linearizable reads (thesis §6.4), leader only; failed and cleared
    /// on every role change.
    reads: read_only::ReadOnly,

    // Bookkeeping for `take_ready`.
    hard_state_dirty: bool,
    /// Lowest log index changed since the last `take_ready`.
    unstable_from: Option<Index>,
    /// Last log index handed out in a `Ready` (written, perhaps not yet
    /// durable).
    handed_out_last: Index,
    /// The log is durable up to here, as reported by `persisted` (or
    /// recovered at start). A leader counts itself toward a commit only
    /// up to this index (thesis §10.2.1).
    persisted_index: Index,
    snapshot_chunks: Vec<SnapshotChunk>,
    installed_snapshot: Option<InstalledSnapshot>,
    events: Vec<Event>,
}

impl Raft {
    /// A server starting (or restarting) from its durable state, without
    /// a snapshot; see [`Raft::restore`].
    pub fn new(cfg: Config, hard_state: HardState, entries: Vec<Entry>, now: Duration) -> Raft {
        Raft::restore(cfg, hard_state, SnapshotMeta::default(), entries, now)
    }

    /// A server starting (or restarting) from its durable state: term and
    /// vote, its latest snapshot, and the log entries after the snapshot.
    /// It is a follower with no known leader and a fresh election timer.
    /// Its commit index is the snapshot's last index (a snapshot holds only
    /// committed entries) until a leader tells it more (Figure 2: volatile
    /// state); the caller restores the state machine from the snapshot.
    pub fn restore(
        cfg: Config,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
        now: Duration,
    ) -> Raft {
        if let Err(e) = cfg.validate() {
            panic!("Raft::restore with invalid settings (call Config::validate first): {e}");
        }
        let log = Log::after(snapshot.last_index, snapshot.last_term, entries);
        let on_disk = log.last_index();
        let peers = tracker::Tracker::new(cfg.id, &cfg.peers);
        let mut raft = Raft {
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            cfg,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            lost_through: hard_state.lost_through,
            lost_term: hard_state.lost_term,
            log,
            snapshot,
            receiving: None,
            role: Role::Follower,
            leader_id: None,
            commit_index: snapshot.last_index,
            emitted_index: snapshot.last_index,
            election_deadline: Duration::ZERO,
            leader_contact: Duration::ZERO,
            votes: election::Votes::default(),
            transfer_election: false,
            transfer: None,
            started: now,
            peers,
            reads: read_only::ReadOnly::default(),
            hard_state_dirty: false,
            unstable_from: None,
            handed_out_last: on_disk,
            persisted_index: on_disk,
            snapshot_chunks: Vec::new(),
            installed_snapshot: None,
            events: Vec::new(),
        };
        raft.reset_election_timer(now);
        if let Some(VoteRefusal::Repairing {
            last_index,
            lost_through,
            ..
        }) = raft.repairing()
        {
            raft.events.push(Event::Repairing {
                last_index,
                lost_through,
            });
        }
        raft
    }

    // ----- Accessors -----

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    pub fn commit_index(&self) -> Index {
        self.commit_index
    }
    pub fn log(&self) -> &Log {
        &self.log
    }
    /// The latest snapshot (taken here or installed from a leader).
    pub fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
            lost_through: self.lost_through,
            lost_term: self.lost_term,
        }
    }
    /// Leader: the highest index known replicated on `peer`.
    pub fn match_index(&self, peer: NodeId) -> Option<Index> {
        self.peers.get(&peer).map(|p| p.progress.match_index)
    }
    /// Leader: replication to `peer` (meaningful while leader).
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.peers.get(&peer).map(|p| &p.progress)
    }

    /// When we last heard from the leader we follow (a valid
    /// AppendEntries or InstallSnapshot); `None` unless we follow one.
    pub fn leader_contact(&self) -> Option<Duration> {
        (self.role != Role::Leader && self.leader_id.is_some()).then_some(self.leader_contact)
    }
    /// Leader: what it knows of each follower, for status displays; empty
    /// on any other server.
    pub fn followers(&self) -> Vec<FollowerView> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        self.peers
            .iter()
            .map(|(&id, p)| FollowerView {
                id,
                match_index: p.progress.match_index,
                next_index: p.progress.next_index,
                in_flight: p.progress.in_flight(),
                state: p.progress.state,
                reachable: p.reachable,
                last_heard: p.last_heard,
            })
            .collect()
    }

    // ----- Time -----

    /// When [`Raft::tick`] next has something to do: a follower's or
    /// candidate's election timeout; a leader's CheckQuorum deadline, or
    /// the end of its leadership transfer's time. `None`: nothing until
    /// another input.
    pub fn tick_deadline(&self) -> Option<Duration> {
        match self.role {
            Role::Leader => {
                let transfer = self.transfer.map(|t| t.deadline);
                self.quorum_deadline().into_iter().chain(transfer).min()
            }
            _ => Some(self.election_deadline),
        }
    }

    /// Acts on whatever timer is due: the election timeout (Figure 2,
    /// Followers rule 2, and Candidates: "if election timeout elapses"),
    /// with a pre-vote first if configured; as leader, a transfer out of
    /// time, and CheckQuorum.
    pub fn tick(&mut self, now: Duration) {
        if self.role != Role::Leader {
            if now < self.election_deadline {
            } else if self.repairing().is_some() {
                // Standing with a log that lost entries could win without
                // a committed one; wait for a leader to repair us.
                self.reset_election_timer(now);
            } else {
                self.election_timeout(now);
            }
            return;
        }
        if self.transfer.is_some_and(|t| now >= t.deadline) {
            self.abandon_transfer(now, "no new term within an election timeout");
        }
        self.check_quorum(now);
    }

    /// Starts an election now, as a leadership transfer's target does
    /// (thesis §3.10): without a pre-vote, and asking voters to disregard
    /// their lease. Tests use it to script elections. A leader ignores it.
    pub fn campaign(&mut self, now: Duration) {
        if self.role != Role::Leader && self.repairing().is_none() {
            self.start_election(now, true);
        }
    }

    fn reset_election_timer(&mut self, now: Duration) {
        let min = self.cfg.election_timeout_min.as_nanos() as u64;
        let max = self.cfg.election_timeout_max.as_nanos() as u64;
        let timeout = Duration::from_nanos(self.rng.random_range(min..=max));
        self.election_deadline = now + timeout;
    }

    // ----- Role changes -----

    fn set_role(&mut self, role: Role, now: Duration) {
        if self.role != role {
            self.role = role;
            self.events.push(Event::RoleChanged {
                role,
                term: self.term,
            });
        }
        // Whatever was in flight belongs to the old role; its answers
        // carry the old term and are dropped (see `handle_reply`).
        let last = self.log.last_index();
        for p in self.peers.values_mut() {
            p.progress = Progress::new(last, now);
            p.vote_requested = false;
            p.retry_at = now;
        }
        if role != Role::Leader {
            self.abandon_transfer(now, "no longer leader");
        }
        // Pending reads were for the old role's leadership: fail them.
        self.reads.fail_all();
    }

    /// Adopts a newer term seen in any request or reply, stepping down to
    /// follower first (Figure 2, all servers: "If RPC request or response
    /// contains term T > currentTerm: set currentTerm = T, convert to
    /// follower").
    fn adopt_term(&mut self, term: Term, from: NodeId, now: Duration) {
        debug_assert!(term > self.term);
        if self.role == Role::Leader {
            self.transfer_handed_off(from, term, now);
        }
        self.term = term;
        self.voted_for = None;
        self.leader_id = None;
        self.hard_state_dirty = true;
        self.events.push(Event::TermAdopted { term, from });
        if self.role != Role::Follower {
            self.set_role(Role::Follower, now);
            // A deposed leader has no running timer; a fresh one keeps it
            // from starting an election the moment it steps down.
            self.reset_election_timer(now);
        }
    }

    // ----- Requests from other servers -----

    /// Handles a request from `from` and returns the reply to send back once
    /// the resulting `Ready` is persisted. A request that breaks the
    /// protocol (see [`validate`]) is refused and changes nothing.
    pub fn handle_request(
        &mut self,
        from: NodeId,
        request: Request,
        now: Duration,
    ) -> Result<Reply, Rejection> {
        if !self.peers.contains_key(&from) {
            return Err(Rejection::UnknownSender { from });
        }
        match request {
            Request::RequestVote(rv) => {
                validate::check_request_vote(from, &rv)?;
                Ok(Reply::RequestVote(self.handle_request_vote(rv, now)))
            }
            Request::AppendEntries(ae) => {
                validate::check_append_entries(from, &ae)?;
                if ae.term >= self.term {
                    self.check_append_against_state(from, &ae)?;
                }
                Ok(Reply::AppendEntries(
                    self.handle_append_entries(from, ae, now),
                ))
            }
            Request::InstallSnapshot(is) => {
                validate::check_install_snapshot(from, &is)?;
                if is.term >= self.term {
                    self.check_leader_claim(from, is.term)?;
                }
                self.handle_install_snapshot(from, is, now)
                    .map(Reply::InstallSnapshot)
            }
            Request::TimeoutNow(tn) => {
                validate::check_timeout_now(from, &tn)?;
                self.handle_timeout_now(from, tn, now)
                    .map(Reply::TimeoutNow)
            }
        }
    }

    fn handle_append_entries(
        &mut self,
        from: NodeId,
        req: AppendEntries,
        now: Duration,
    ) -> AppendEntriesReply {
        let mut reply = AppendEntriesReply::answering(&req, self.term);
        // AppendEntries rule 1: reply false if term < currentTerm.
        if req.term < self.term {
            return reply;
        }
        self.follow(from, req.term, now);
        reply.term = self.term;

        let mut req = req;
        if self.log.is_compacted(req.prev_log_index) {
            // Our snapshot covers prevLogIndex. Everything it covers is
            // committed, so it matches the leader's log (Leader
            // Completeness, §5.4): skip the entries it covers and check
            // the rest from its last entry, as if the leader had started
            // there.
            let covered = (self.log.base_index() - req.prev_log_index) as usize;
            if req.entries.len() <= covered {
                reply.success = true;
                reply.match_index = req.prev_log_index + req.entries.len() as Index;
                return reply;
            }
            req.entries.drain(..covered);
            req.prev_log_index = self.log.base_index();
            req.prev_log_term = self.log.base_term();
        }

        // AppendEntries rule 2: the log must contain an entry at
        // prevLogIndex whose term matches prevLogTerm. Heartbeats too.
        match self.log.term_at(req.prev_log_index) {
            None => {
                reply.conflict_index = self.log.last_index() + 1;
                return reply;
            }
            Some(t) if t != req.prev_log_term => {
                reply.conflict_term = Some(t);
                reply.conflict_index = self.log.first_index_of_term_ending_at(req.prev_log_index);
                return reply;
            }
            Some(_) => {}
        }

        // Rules 3 and 4: skip entries we already have; on the first real
        // conflict (same index, different term) delete it and all that
        // follow, then append the rest. An entry that matches is never
        // removed, so a delayed, shorter AppendEntries cannot undo a longer
        // one.
        let last_new = req.prev_log_index + req.entries.len() as Index;
        let mut appended_from = None;
        for entry in req.entries {
            match self.log.term_at(entry.index) {
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    // Refused before we got here if it were committed.
                    debug_assert!(entry.index > self.commit_index);
                    let removed = (self.log.last_index() + 1 - entry.index) as usize;
                    self.log.truncate_from(entry.index);
                    self.persisted_index = self.persisted_index.min(entry.index - 1);
                    self.mark_unstable(entry.index);
                    self.events.push(Event::Truncated {
                        from: entry.index,
                        removed,
                    });
                }
                None => {}
            }
            appended_from.get_or_insert(entry.index);
            self.mark_unstable(entry.index);
            self.log.append(entry);
        }
        if let Some(from) = appended_from {
            self.events.push(Event::Appended { from, to: last_new });
        }

        // Rule 5: commitIndex = min(leaderCommit, index of last new entry).
        let commit = req.leader_commit.min(last_new);
        if commit > self.commit_index {
            self.set_commit(commit);
        }
        reply.success = true;
        reply.match_index = last_new;
        reply
    }

    /// A valid AppendEntries or InstallSnapshot of term `term` (at least
    /// ours) from `leader`: follow it.
    fn follow(&mut self, leader: NodeId, term: Term, now: Duration) {
        if term > self.term {
            self.adopt_term(term, leader, now);
        }
        // The sender won the election of this term, so a candidate of the
        // same term lost it (§5.2). (A leader of this term refused it in
        // `check_leader_claim`: two leaders of one term cannot exist.)
        debug_assert!(self.role != Role::Leader);
        if self.role == Role::Candidate {
            self.set_role(Role::Follower, now);
        }
        if self.leader_id != Some(leader) {
            self.leader_id = Some(leader);
            self.events.push(Event::LeaderKnown {
                leader,
                term: self.term,
            });
        }
        // Followers rule 2: a valid AppendEntries (or InstallSnapshot)
        // from the current leader resets the election timer; its lease
        // runs from now.
        self.leader_contact = now;
        self.reset_election_timer(now);
    }

    // ----- Outgoing requests -----

    /// The next request to send to `peer`, if one may be sent now; call it
    /// until it returns `None`. A candidate sends one RequestVote per peer
    /// per term. A leader sends AppendEntries as the peer's [`Progress`]
    /// allows: one at a time while probing, back to back (pipelined) while
    /// replicating. Every request sent must end, for the core, in
    /// `handle_reply` or in `handle_failure`.
    pub fn poll_peer(&mut self, peer: NodeId, now: Duration) -> Option<Request> {
        let window = self.cfg.max_inflight_appends;
        let (term, id, commit, round) = (
            self.term,
            self.cfg.id,
            self.commit_index,
            self.reads.round(),
        );
        let last_index = self.log.last_index();
        if self.timeout_now_due(peer) && now >= self.peers[&peer].retry_at {
            return Some(self.send_timeout_now(peer));
        }
        let p = self.peers.get_mut(&peer)?;
        if now < p.retry_at {
            return None;
        }
        match self.role {
            Role::Follower => None,
            Role::PreCandidate | Role::Candidate => {
                if p.vote_requested {
                    return None;
                }
                p.vote_requested = true;
                let pre_vote = self.role == Role::PreCandidate;
                Some(Request::RequestVote(RequestVote {
                    // A pre-vote asks about the term we would take.
                    term: if pre_vote { term + 1 } else { term },
                    candidate_id: id,
                    last_log_index: last_index,
                    last_log_term: self.log.last_term(),
                    pre_vote,
                    transfer: !pre_vote && self.transfer_election,
                }))
            }
            Role::Leader => {
                let pr = &mut p.progress;
                // The entries this follower needs next are compacted:
                // send the snapshot instead (the current one; a transfer
                // in progress goes on with its own, see SnapshotTransfer).
                if self.log.is_compacted(pr.next_index - 1) && pr.snapshot.is_none() {
                    pr.send_snapshot(self.snapshot, now);
                    self.events.push(Event::SnapshotSendStarted {
                        peer,
                        index: self.snapshot.last_index,
                        size: self.snapshot.size,
                    });
                }
                if let Some(t) = pr.snapshot.filter(|_| pr.chunk_due()) {
                    pr.chunk_sent();
                    pr.heartbeat_due = now + self.cfg.heartbeat_interval;
                    return Some(Request::InstallSnapshot(InstallSnapshot {
                        term,
                        leader_id: id,
                        snapshot: t.snapshot,
                        offset: t.offset,
                        data: String::new(),
                    }));
                }
                let batch = match pr.state {
                    ProgressState::Snapshot => Batch::Empty,
                    _ => self.log.batch_from(pr.next_index, &self.cfg),
                };
                let (with_entries, at) = next_append(pr, window, batch, commit, round)?;
                if now < at {
                    return None;
                }
                // During a transfer, heartbeats name the snapshot's last
                // entry, the earliest whose term we still know.
                let prev_log_index = match pr.state {
                    ProgressState::Snapshot => self.log.base_index(),
                    _ => pr.next_index - 1,
                };
                let entries = if with_entries {
                    let last =
                        (prev_log_index + self.cfg.max_entries_per_append as Index).min(last_index);
                    self.log
                        .slice_bounded(prev_log_index + 1, last, self.cfg.max_bytes_per_append)
                        .to_vec()
                } else {
                    Vec::new()
                };
                pr.sent(prev_log_index + entries.len() as Index, round);
                self.reads.sent(round, now);
                pr.sent_commit = commit;
                pr.heartbeat_due = now + self.cfg.heartbeat_interval;
                Some(Request::AppendEntries(AppendEntries {
                    term,
                    leader_id: id,
                    prev_log_index,
                    prev_log_term: self
                        .log
                        .term_at(prev_log_index)
                        .expect("next_index <= last + 1"),
                    entries,
                    leader_commit: commit,
                    read_round: round,
                }))
            }
        }
    }

    /// When `poll_peer(peer)` may next return a request; `None` when only
    /// another input (a reply, a role change, a proposal) can change that.
    pub fn peer_wakeup(&self, peer: NodeId) -> Option<Duration> {
        let p = self.peers.get(&peer)?;
        match self.role {
            Role::Follower => None,
            Role::PreCandidate | Role::Candidate => (!p.vote_requested).then_some(p.retry_at),
            Role::Leader if self.timeout_now_due(peer) => Some(p.retry_at),
            Role::Leader => {
                let pr = &p.progress;
                let starts_transfer =
                    self.log.is_compacted(pr.next_index - 1) && pr.snapshot.is_none();
                if starts_transfer || pr.chunk_due() {
                    return Some(p.retry_at);
                }
                let batch = match pr.state {
                    ProgressState::Snapshot => Batch::Empty,
                    _ => self.log.batch_from(pr.next_index, &self.cfg),
                };
                next_append(
                    pr,
                    self.cfg.max_inflight_appends,
                    batch,
                    self.commit_index,
                    self.reads.round(),
                )
                .map(|(_, at)| at.max(p.retry_at))
            }
        }
    }

    /// The earliest time any timer or peer needs attention; for drivers
    /// that poll everything (the simulation).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.peers
            .keys()
            .filter_map(|&p| self.peer_wakeup(p))
            .chain(self.tick_deadline())
            .min()
    }

    /// Reports a reply from `peer`. Replies say what they answer, so they
    /// may arrive in any order, late or twice: one to a request of an
    /// earlier term, or of a role we no longer have, is dropped (after
    /// adopting a newer term it carries). A reply that breaks the protocol
    /// counts as a failed RPC (the peer is retried after a backoff) and is
    /// returned as the error, for the caller to log.
    pub fn handle_reply(
        &mut self,
        peer: NodeId,
        reply: Reply,
        now: Duration,
    ) -> Result<(), Rejection> {
        if !self.peers.contains_key(&peer) {
            return Ok(());
        }
        let checked = match &reply {
            Reply::AppendEntries(r) => self.check_append_reply(peer, r),
            Reply::RequestVote(r) => validate::check_term(r.term),
            Reply::InstallSnapshot(r) => self.check_snapshot_reply(peer, r),
            Reply::TimeoutNow(r) => self.check_timeout_now_reply(r),
        };
        if let Err(rejection) = checked {
            self.handle_failure(peer, now);
            return Err(rejection);
        }
        if let Reply::RequestVote(r) = reply {
            // (A granted pre-vote names a term not to adopt.)
            self.handle_vote_reply(peer, r, now);
            return Ok(());
        }
        if reply.term() > self.term {
            self.adopt_term(reply.term(), peer, now);
            return Ok(());
        }
        match reply {
            // Only a leader of `request_term` sent it; if that is us now,
            // the answer is about this leadership.
            Reply::AppendEntries(r) if self.role == Role::Leader && r.request_term == self.term => {
                self.peer_answered(peer, now);
                let hint = if r.success {
                    0
                } else {
                    match r.conflict_term {
                        Some(t) => match self.log.last_index_of_term(t) {
                            Some(last_of_term) => last_of_term + 1,
                            None => r.conflict_index,
                        },
                        None => r.conflict_index,
                    }
                };
                let pr = &mut self.peers.get_mut(&peer).expect("checked above").progress;
                // Any answer in our term, success or not, shows the peer
                // still took us for leader when it answered.
                pr.answered_round(r.read_round);
                if r.success {
                    if pr.acknowledged(r.match_index) {
                        self.advance_commit();
                    }
                } else {
                    // Figure 2: decrement nextIndex and retry; with the
                    // follower's hint we skip a whole term at a time.
                    if let progress::Refusal::Lost { from, to } =
                        pr.rejected(r.prev_log_index, hint)
                    {
                        self.events
                            .push(Event::FollowerLostEntries { peer, from, to });
                    }
                }
                self.confirm_reads();
            }
            Reply::InstallSnapshot(r)
                if self.role == Role::Leader && r.request_term == self.term =>
            {
                self.peer_answered(peer, now);
                let pr = &mut self.peers.get_mut(&peer).expect("checked above").progress;
                if r.checksum_failed {
                    self.events.push(Event::SnapshotRefused {
                        peer,
                        index: r.last_index,
                    });
                }
                if let Some(t) = pr.chunk_answered(r.last_index, r.next_offset, r.done) {
                    self.events.push(Event::SnapshotSent {
                        peer,
                        index: t.snapshot.last_index,
                        size: t.snapshot.size,
                        elapsed: now.saturating_sub(t.started),
                    });
                }
            }
            Reply::TimeoutNow(r) if self.role == Role::Leader && r.request_term == self.term => {
                // It stands now; its RequestVote ends our term.
                self.peer_answered(peer, now);
            }
            _ => {} // from an earlier term or role
        }
        Ok(())
    }

    /// The peer answered: it is reachable, and backoff ends.
    fn peer_answered(&mut self, peer: NodeId, now: Duration) {
        let p = self.peers.get_mut(&peer).expect("a peer");
        p.backoff = Duration::ZERO;
        p.retry_at = now;
        p.last_heard = now;
        if !p.reachable {
            p.reachable = true;
            self.events.push(Event::PeerReachable { peer });
        }
    }

    /// Reports that requests to `peer` got no reply (a timeout, a refused
    /// connection, a broken pipe): everything in flight to it is taken as
    /// lost. The peer is retried after a backoff.
    pub fn handle_failure(&mut self, peer: NodeId, now: Duration) {
        let max_backoff = self.cfg.max_backoff();
        let heartbeat = self.cfg.heartbeat_interval;
        let role = self.role;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        match role {
            Role::Leader => p.progress.failed(),
            Role::PreCandidate | Role::Candidate => p.vote_requested = false, // ask again
            Role::Follower => {}
        }
        p.backoff = if p.backoff.is_zero() {
            heartbeat
        } else {
            (p.backoff * 2).min(max_backoff)
        };
        p.retry_at = now + p.backoff;
        if p.reachable {
            p.reachable = false;
            self.events.push(Event::PeerUnreachable { peer });
        }
        if role == Role::Leader {
            self.timeout_now_failed(peer);
        }
    }

    // ----- Client commands -----

    /// Appends a command to the leader's log. It is committed once a
    /// majority store it; watch `Ready::committed` for its index.
    /// A leader handing its office over refuses proposals (thesis §3.10).
    pub fn propose(&mut self, command: Json) -> Result<(Index, Term), NotLeader> {
        if self.role != Role::Leader || self.transfer.is_some() {
            return Err(self.not_leader());
        }
        let index = self.append_local(Payload::Command(command));
        self.advance_commit(); // a one-server cluster commits at once
        Ok((index, self.term))
    }

    /// Asks for a linearizable read (thesis §6.4, ReadIndex). The answer,
    /// a [`ReadState`] with the same `ctx`, comes in a later `Ready` once
    /// (1) this leader has committed an entry of its own term, so its
    /// commit index is at least the cluster's, and (2) a majority has
    /// answered a heartbeat sent after this call, so no newer leader had
    /// been elected when the read index was taken.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), NotLeader> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        self.reads.add(ctx);
        self.start_reads();
        Ok(())
    }

    fn not_leader(&self) -> NotLeader {
        let transferring_to = self.transfer.map(|t| t.target);
        NotLeader {
            leader_hint: transferring_to.or(self.leader_id.filter(|&l| l != self.cfg.id)),
            transferring_to,
        }
    }

    /// Gives reads a read index once the current term has a committed
    /// entry, and a fresh heartbeat round to confirm it.
    fn start_reads(&mut self) {
        if self.log.term_at(self.commit_index) == Some(self.term)
            && self.reads.start_round(self.commit_index)
        {
            self.confirm_reads();
        }
    }

    /// The latest read round a majority (ourselves included, having
    /// started every round) has answered.
    fn quorum_round(&self) -> u64 {
        self.peers.answered_round(self.reads.round())
    }

    fn confirm_reads(&mut self) {
        let answered = self.quorum_round();
        self.reads.confirm(answered);
    }

    fn append_local(&mut self, payload: Payload) -> Index {
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            payload,
        });
        self.mark_unstable(index);
        self.events.push(Event::Appended {
            from: index,
            to: index,
        });
        index
    }

    /// Leaders rule 4: commit the highest N stored on a majority whose
    /// entry is of the current term. Entries of earlier terms are committed
    /// only indirectly, by that (§5.4.2, Figure 8).
    fn advance_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        // Ourselves, only as far as our own disk holds the log (rule 3 of
        // the module docs).
        let n = self.peers.committed(self.persisted_index);
        if n > self.commit_index && self.log.term_at(n) == Some(self.term) {
            self.set_commit(n);
            self.start_reads();
        }
    }

    fn set_commit(&mut self, index: Index) {
        debug_assert!(index > self.commit_index && index <= self.log.last_index());
        self.commit_index = index;
        self.events.push(Event::Committed { index });
    }

    // ----- Durability -----

    /// Reports that the log is durable on this server's disk up to the
    /// entry at `index` of `term`, and so everything before it. Ignored if
    /// that entry has been replaced since (its term differs), or if it says
    /// nothing new. A leader may now count itself for these entries.
    pub fn persisted(&mut self, index: Index, term: Term) {
        if self.lost_through != 0
            && index >= self.lost_through
            && self.log.term_at(index) == Some(term)
        {
            // Durable again up to what a storage fault took (and, being
            // reported here, after everything handed out before).
            self.events.push(Event::Repaired {
                lost_through: self.lost_through,
            });
            self.lost_through = 0;
            self.lost_term = 0;
            self.hard_state_dirty = true;
        }
        // (At or below the snapshot, `persisted_index` is already there.)
        if index <= self.persisted_index || self.log.term_at(index) != Some(term) {
            return;
        }
        debug_assert!(index <= self.handed_out_last, "durable before handed out");
        self.persisted_index = index;
        self.advance_commit();
    }

    /// Why this server may not vote or stand now, if a storage fault cost
    /// it entries it may have acknowledged and a leader has not yet given
    /// them back (see [`HardState::lost_through`]).
    pub fn repairing(&self) -> Option<VoteRefusal> {
        let last_index = self.log.last_index();
        (self.lost_through > last_index).then_some(VoteRefusal::Repairing {
            last_index,
            lost_through: self.lost_through,
            lost_term: self.lost_term,
        })
    }

    /// While repairing: whether a candidate with this last entry may lack
    /// an entry we lost (see [`VoteRefusal::Repairing`]).
    fn repair_refusal(&self, last_log_term: Term, last_log_index: Index) -> Option<VoteRefusal> {
        self.repairing()
            .filter(|_| (last_log_term, last_log_index) < (self.lost_term, self.lost_through))
    }

    /// How far this server's log is known to be durable.
    pub fn persisted_index(&self) -> Index {
        self.persisted_index
    }

    // ----- Output -----

    fn mark_unstable(&mut self, index: Index) {
        self.unstable_from = Some(self.unstable_from.map_or(index, |u| u.min(index)));
    }

    /// Whether [`Raft::take_ready`] would return anything: after an input
    /// that may produce output outside the usual step (as `persisted`
    /// does when it ends a repair).
    pub fn has_ready(&self) -> bool {
        !self.events.is_empty()
            || self.hard_state_dirty
            || self.unstable_from.is_some()
            || self.commit_index > self.emitted_index
            || self.reads.has_done()
            || !self.snapshot_chunks.is_empty()
            || self.installed_snapshot.is_some()
    }

    /// Everything that changed since the last call; see the module docs for
    /// what the caller must do with it.
    pub fn take_ready(&mut self) -> Ready {
        let mut ready = Ready {
            events: std::mem::take(&mut self.events),
            ..Ready::default()
        };
        if std::mem::take(&mut self.hard_state_dirty) {
            ready.hard_state = Some(self.hard_state());
        }
        ready.snapshot_chunks = std::mem::take(&mut self.snapshot_chunks);
        ready.installed_snapshot = self.installed_snapshot.take();
        if let Some(from) = self.unstable_from.take() {
            if from <= self.handed_out_last {
                ready.truncate_from = Some(from);
            }
            ready.appended = self.log.slice(from, self.log.last_index()).to_vec();
            self.handed_out_last = self.log.last_index();
        }
        if self.commit_index > self.emitted_index {
            ready.committed = self
                .log
                .slice(self.emitted_index + 1, self.commit_index)
                .to_vec();
            self.emitted_index = self.commit_index;
        }
        ready.reads = self.reads.take_done();
        ready
    }
}

/// Leader: the next AppendEntries `pr` allows, as (whether it carries
/// entries, when it is due), where `batch` is what entries it could
/// carry; `None` while it must wait for an answer. Entries go as soon as
/// `pr` lets them (`Progress::can_send`); news without entries goes at
/// once: a read round the peer has not answered (in the window's spare
/// slot if need be), or a commit index it has not been told (once nothing
/// is in flight); otherwise a heartbeat when due. `poll_peer` and `peer_wakeup` share this, so that
/// a driver woken at the time given here finds the request there.
fn next_append(
    pr: &Progress,
    window: usize,
    batch: Batch,
    commit: Index,
    round: u64,
) -> Option<(bool, Duration)> {
    let with_entries = batch != Batch::Empty && pr.can_send(window, batch);
    if !pr.can_send(window, Batch::Empty) {
        return None; // wait for an answer
    }
    // A new commit index alone waits for the pipe to empty: a request in
    // flight is answered soon, and what follows it carries the news.
    let news =
        with_entries || pr.round_due(round) || (pr.sent_commit < commit && pr.in_flight() == 0);
    Some((
        with_entries,
        if news {
            Duration::ZERO
        } else {
            pr.heartbeat_due
        },
    ))
}

#[cfg(test)]
mod tests;
