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
//! **Membership** (thesis chapter 4): the servers, who votes and where
//! each listens are entries in the log (`Payload::Membership`). A server
//! uses the latest membership in its log, committed or not, and goes back
//! to the one before when that entry is truncated (§4.1); a snapshot
//! carries the membership at its last entry. A leader changes it with
//! [`Raft::propose_change`]: not before it has committed an entry of its
//! own term (the fix to the single-server bug of 2015), never with another
//! change uncommitted, one voter more or less in one step (§4.1), more
//! through a joint membership in which every decision needs a majority of
//! the old voters and one of the new (§4.3), left by the leader's own
//! entry once it commits. Learners receive the log and count for nothing;
//! a server stands only while it votes in a membership not known to be
//! superseded; a leader removed by a committed membership hands over and
//! steps down (§4.2.2). Requests are taken from servers outside the
//! latest membership (a leader added since, a removed leader handing
//! over). A learner is promoted only once it lags by at most
//! [`PROMOTION_LAG`] entries; a learner removed leaves its id free (it
//! never voted), a voter removed never comes back ([`Raft::removed_at`]).
//! ReadIndex and lease reads count the membership in force, joint or not:
//! a read round is confirmed by a majority of each half, and the lease
//! (§6.4.1) runs from the start of the latest round such a quorum
//! answered. That holds across a change because the lease's other half,
//! refusing votes to another candidate until an election timeout has run
//! since hearing from the leader, is kept by every server the leader
//! reaches, learners included: a learner promoted with its answers
//! already counted refused votes all along; a brand-new server has
//! answered no round, so it can only hold a round back. A lease is never
//! longer than the quorum now in force gives, so lease reads are not
//! suspended during a change.
//!
//! `committed` entries may be applied in the order given as soon as they
//! are handed out: they are on a majority's disks. `persisted(index, term)`
//! names the entry by term as well, so a report about entries replaced
//! since (a deposed leader's tail) is ignored.
//!
//! The runtime turns this contract into steps in one function,
//! `service::durability::handle_ready`, called after every step of the
//! core before its lock is released: it writes everything in the `Ready`,
//! syncs a non-leader's log before returning, and leaves the leader's to a
//! log writer thread that syncs outside the lock (group commit). The
//! simulation calls the same function over a disk whose syncs complete
//! later.
//!
//! **Files.** This one holds the server's state and reads as Figure 2:
//! role changes, dispatch of requests, the receiver's AppendEntries,
//! proposals, commit, and `take_ready`/`persisted`. Beside it:
//! `replication` (the sender's side: `poll_peer`, replies, failures),
//! `election` (votes, PreVote, CheckQuorum, leases), `transfer` (thesis
//! §3.10), `snapshot` (receiving InstallSnapshot, compaction),
//! `read_only` (ReadIndex), `tracker` and `progress` (what the leader
//! knows of each peer), `quorum` (majorities), `validate` (checks on
//! peer input), `membership` (the membership as data, and its changes),
//! `configuration` (which membership is in force where in the log),
//! `reconfigure` (following it, and a leader's changes, thesis ch. 4),
//! `view` (accessors), `config`, `ready`, `event`, `log` and `message`.
//!
//! Rule references are to the extended Raft paper (Ongaro and Ousterhout,
//! 2014): "Figure 2" and section numbers like §5.3; "thesis §6.4" is
//! Ongaro's dissertation, "Consensus: Bridging Theory and Practice" (2014).

mod config;
mod configuration;
mod election;
mod event;
pub mod log;
pub mod membership;
pub mod message;
pub mod progress;
pub mod quorum;
mod read_only;
mod ready;
mod reconfigure;
mod replication;
mod snapshot;
mod tracker;
mod transfer;
pub mod validate;
mod view;

use std::fmt;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

pub use config::{Config, InvalidConfig};
pub use election::LeaseRead;
pub use event::{Event, Topic, VoteRefusal};
pub use log::Log;
pub use message::{
    AppendEntries, AppendEntriesReply, Entry, Index, InstallSnapshot, InstallSnapshotReply, Json,
    NodeId, Payload, Reply, Request, RequestVote, RequestVoteReply, SnapshotMeta, Term, TimeoutNow,
    TimeoutNowReply,
};
pub use progress::{Batch, Progress, ProgressState, Refusal, SnapshotTransfer};
pub use ready::{HardState, InstalledSnapshot, ReadState, Ready, SnapshotChunk};
pub use reconfigure::{ChangeRefused, PROMOTION_LAG};
pub use transfer::{Transfer, TransferError};
pub use validate::{MAX_INDEX, MAX_TERM, Rejection};
pub use view::FollowerView;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Returned by [`Raft::propose`] on a server that is not the leader, or
/// that is handing its leadership over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    pub leader_hint: Option<NodeId>,
    /// A leadership transfer to this server is in progress: the leader
    /// takes no proposals until it ends, moments from now.
    pub transferring_to: Option<NodeId>,
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
    /// Followers and candidates start an election at this time,
    election_deadline: Duration,
    /// which was this long after the timer was last reset (a random
    /// choice each time, §5.2).
    timer_length: Duration,
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
    /// The memberships in the log, and the one in force (thesis §4.1).
    configs: configuration::Configurations,
    /// The membership the tracker was last set to (see
    /// `follow_membership`).
    in_force: membership::Membership,

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
        Raft::restore(
            cfg,
            hard_state,
            (SnapshotMeta::default(), None),
            entries,
            now,
        )
    }

    /// A server starting (or restarting) from its durable state: term and
    /// vote, its latest snapshot with the membership in force there (thesis
    /// §4.1; `None` for none, or a snapshot from before memberships were
    /// kept: then the bootstrap membership), and the log entries after the
    /// snapshot. It is a follower with no known leader and a fresh
    /// election timer.
    /// Its commit index is the snapshot's last index (a snapshot holds only
    /// committed entries) until a leader tells it more (Figure 2: volatile
    /// state); the caller restores the state machine from the snapshot.
    pub fn restore(
        cfg: Config,
        hard_state: HardState,
        (snapshot, snapshot_membership): (SnapshotMeta, Option<membership::Membership>),
        entries: Vec<Entry>,
        now: Duration,
    ) -> Raft {
        if let Err(e) = cfg.validate() {
            panic!("Raft::restore with invalid settings (call Config::validate first): {e}");
        }
        let log = Log::after(snapshot.last_index, snapshot.last_term, entries);
        let on_disk = log.last_index();
        let configs = configuration::Configurations::new(
            snapshot.last_index,
            snapshot_membership.unwrap_or_else(|| cfg.bootstrap.clone()),
            log.entries(),
        );
        let peers = tracker::Tracker::new(cfg.id, configs.latest());
        let in_force = configs.latest().clone();
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
            timer_length: Duration::ZERO,
            leader_contact: Duration::ZERO,
            votes: election::Votes::default(),
            transfer_election: false,
            transfer: None,
            started: now,
            peers,
            configs,
            in_force,
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

    // ----- Time -----

    /// When [`Raft::tick`] next has something to do: a follower's or
    /// candidate's election timeout; a leader's CheckQuorum deadline, or
    /// the end of its leadership transfer's time. `None`: nothing until
    /// another input.
    pub fn tick_deadline(&self) -> Option<Duration> {
        match self.role {
            Role::Leader => {
                let transfer = self.transfer.map(|t| t.deadline);
                // Removed by a committed membership: leave at once (once:
                // a handover started runs to its deadline).
                let leave =
                    (self.must_leave() && self.transfer.is_none()).then_some(Duration::ZERO);
                let due = self.quorum_deadline().into_iter().chain(transfer);
                due.chain(leave).min()
            }
            _ => Some(self.election_deadline),
        }
    }

    /// A follower's or candidate's election timer: when it runs out, and
    /// how long it was when last reset. `None` for a leader, which has
    /// none. For displays (`raftctl web` draws it running down).
    pub fn election_timer(&self) -> Option<(Duration, Duration)> {
        (self.role != Role::Leader).then_some((self.election_deadline, self.timer_length))
    }

    /// Acts on whatever timer is due: the election timeout (Figure 2,
    /// Followers rule 2, and Candidates: "if election timeout elapses"),
    /// with a pre-vote first if configured; as leader, a transfer out of
    /// time, and CheckQuorum.
    pub fn tick(&mut self, now: Duration) {
        if self.role != Role::Leader {
            if now < self.election_deadline {
            } else if self.repairing().is_some() || !self.may_stand() {
                // Standing with a log that lost entries could win without
                // a committed one; wait for a leader to repair us. A
                // learner, or a server not in the membership, never
                // stands (§4.2.1).
                self.reset_election_timer(now);
            } else {
                self.election_timeout(now);
            }
            return;
        }
        if self.transfer.is_some_and(|t| now >= t.deadline) {
            self.abandon_transfer(now, "no new term within an election timeout");
        }
        self.leave_if_removed(now);
        if self.role == Role::Leader {
            self.check_quorum(now);
        }
    }

    /// Starts an election now, as a leadership transfer's target does
    /// (thesis §3.10): without a pre-vote, and asking voters to disregard
    /// their lease. Tests use it to script elections. A leader ignores it.
    pub fn campaign(&mut self, now: Duration) {
        if self.role != Role::Leader && self.repairing().is_none() && self.may_stand() {
            self.start_election(now, true);
        }
    }

    fn reset_election_timer(&mut self, now: Duration) {
        let min = self.cfg.election_timeout_min.as_nanos() as u64;
        let max = self.cfg.election_timeout_max.as_nanos() as u64;
        let timeout = Duration::from_nanos(self.rng.random_range(min..=max));
        self.election_deadline = now + timeout;
        self.timer_length = timeout;
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
        // Thesis §4.1: requests are taken from servers outside our latest
        // membership too: a leader added in a membership we have not yet
        // received, one whose log rolls back an uncommitted membership of
        // ours that left it out, or a removed leader handing over. Only
        // our own id is refused. (A stranger cannot disrupt a cluster that
        // hears from its leader: votes are refused within a leader's lease
        // without adopting the term, thesis §9.6.)
        if from == self.cfg.id {
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
                    for (index, membership) in self.configs.truncated_from(entry.index) {
                        self.events
                            .push(Event::MembershipAbandoned { index, membership });
                    }
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
            self.configs.appended(&entry);
            self.log.append(entry);
        }
        if let Some(from) = appended_from {
            self.events.push(Event::Appended { from, to: last_new });
        }
        self.follow_membership();

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

    fn not_leader(&self) -> NotLeader {
        let transferring_to = self.transfer.map(|t| t.target);
        NotLeader {
            leader_hint: transferring_to.or(self.leader_id.filter(|&l| l != self.cfg.id)),
            transferring_to,
        }
    }

    fn append_local(&mut self, payload: Payload) -> Index {
        let index = self.log.last_index() + 1;
        let entry = Entry {
            index,
            term: self.term,
            payload,
        };
        if matches!(entry.payload, Payload::Membership(_)) {
            self.configs.appended(&entry);
            self.log.append(entry);
            self.follow_membership();
        } else {
            self.log.append(entry);
        }
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
            self.leave_joint_once_committed();
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
            for e in &ready.committed {
                if let Payload::Membership(m) = &e.payload {
                    let change = m.changes_from(self.configs.at(e.index - 1));
                    ready.events.push(Event::MembershipCommitted {
                        index: e.index,
                        membership: m.clone(),
                        change,
                    });
                }
            }
        }
        ready.reads = self.reads.take_done();
        ready
    }
}

#[cfg(test)]
mod tests;
