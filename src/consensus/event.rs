//! What the core reports having done: [`Event`]s, for the activity log,
//! the event stream and tests, and the reasons a vote is refused
//! ([`VoteRefusal`]). They carry no obligation (see `Ready::events`).

use std::time::Duration;

use super::membership::Membership;
use super::{Index, NodeId, Role, Term};

/// Why a vote was refused; reported in the activity log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteRefusal {
    /// The candidate's term is older than ours (Figure 2, RequestVote rule 1).
    StaleTerm,
    /// We already voted for someone else this term (RequestVote rule 2).
    AlreadyVoted(NodeId),
    /// The candidate's log is less up-to-date than ours (§5.4.1).
    LogBehind {
        ours: (Term, Index),
        theirs: (Term, Index),
    },
    /// We heard from `leader` `heard_ago`, less than a minimum election
    /// timeout ago (or we are the leader): it is alive, so the candidate
    /// is the one cut off (thesis §9.6, the lease).
    LeaderLease { leader: NodeId, heard_ago: Duration },
    /// We lead this term, and a majority answers us (CheckQuorum).
    Leading,
    /// We started less than a minimum election timeout ago, and a leader
    /// may count on our lease from before (lease reads only).
    JustStarted,
    /// A storage fault cost us entries up to `lost_through`, of terms up
    /// to `lost_term`, that we may have acknowledged; our log ends at
    /// `last_index`. A vote judged on what is left could elect a leader
    /// lacking a committed entry (§5.4.1 compares against the log we
    /// *had*), so until a leader has given them back we vote only for a
    /// log at least as up to date as (`lost_term`, `lost_through`)
    /// (after Alagappan et al., FAST 2018), and never stand ourselves.
    Repairing {
        last_index: Index,
        lost_through: Index,
        lost_term: Term,
    },
}

/// Things that happened, for the activity log, the event stream and
/// tests. They carry no obligation: a caller may ignore them. How the
/// event stream names them is the wire side's business (`events::fields`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    RoleChanged {
        role: Role,
        term: Term,
    },
    /// A request or reply carried a newer term; we adopted it (Figure 2,
    /// "Rules for Servers, all servers").
    TermAdopted {
        term: Term,
        from: NodeId,
    },
    LeaderKnown {
        leader: NodeId,
        term: Term,
    },
    /// Thesis §9.6: asking whether we could win `term` (ours plus one),
    /// without taking it.
    PreVoteStarted {
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
    },
    /// A majority would vote for us in `term`: the real election follows.
    PreVoteWon {
        term: Term,
        votes: usize,
        cluster_size: usize,
    },
    /// The pre-vote for `term` ended without a majority; we stay a
    /// follower in our term.
    PreVoteLost {
        term: Term,
        votes: usize,
        refusals: usize,
        cluster_size: usize,
    },
    /// `transfer`: a leadership transfer asked for this election.
    ElectionStarted {
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
        transfer: bool,
    },
    ElectionWon {
        term: Term,
        votes: usize,
        cluster_size: usize,
    },
    /// The election of `term` ended without a win: refused by a majority or
    /// timed out (then a new one starts).
    ElectionLost {
        term: Term,
        votes: usize,
        refusals: usize,
        cluster_size: usize,
    },
    VoteGranted {
        candidate: NodeId,
        term: Term,
        pre_vote: bool,
    },
    VoteRefused {
        candidate: NodeId,
        term: Term,
        pre_vote: bool,
        reason: VoteRefusal,
    },
    /// CheckQuorum: as leader of `term` we heard from only `heard` of
    /// `cluster_size` servers (ourselves included) within `window`, so we
    /// stepped down.
    QuorumLost {
        term: Term,
        heard: usize,
        cluster_size: usize,
        window: Duration,
    },
    /// Leader: handing leadership to `target`, which holds our log up to
    /// `match_index` of `last_index`; new proposals are refused meanwhile.
    TransferStarted {
        target: NodeId,
        match_index: Index,
        last_index: Index,
    },
    /// Leader: `target` holds our whole log and was told to stand now.
    TimeoutNowSent {
        target: NodeId,
    },
    /// The leader `from` asked us to stand now (leadership transfer).
    TimeoutNowReceived {
        from: NodeId,
    },
    /// The transfer's target started `term`, ending ours.
    TransferHandedOff {
        target: NodeId,
        term: Term,
        elapsed: Duration,
    },
    /// The transfer to `target` ended without a new term (`why`);
    /// proposals are taken again if we still lead.
    TransferAbandoned {
        target: NodeId,
        elapsed: Duration,
        why: &'static str,
    },
    /// Entries `from..=to` were added to our log (by a leader's proposal or
    /// from an AppendEntries).
    Appended {
        from: Index,
        to: Index,
    },
    /// A conflicting suffix from `from` on was removed (Figure 2,
    /// AppendEntries rule 3).
    Truncated {
        from: Index,
        removed: usize,
    },
    Committed {
        index: Index,
    },
    PeerUnreachable {
        peer: NodeId,
    },
    PeerReachable {
        peer: NodeId,
    },
    /// Leader: `peer` refused entries it had acknowledged; it no longer
    /// holds `from..=to` (a storage fault cut them at its restart). They
    /// no longer count toward a commit, and are sent again.
    FollowerLostEntries {
        peer: NodeId,
        from: Index,
        to: Index,
    },
    /// We started after a storage fault cost us entries up to
    /// `lost_through` (our log ends at `last_index`): no vote and no
    /// election until a leader has sent them again.
    Repairing {
        last_index: Index,
        lost_through: Index,
    },
    /// Our log is durable up to `lost_through` again: we vote and stand
    /// as before.
    Repaired {
        lost_through: Index,
    },
    /// A snapshot the caller took covers the log up to `index`
    /// (`Raft::compact`); the log now starts at `kept_from` (trailing
    /// entries stay for followers a little behind). `removed` entries left
    /// memory.
    Compacted {
        index: Index,
        kept_from: Index,
        removed: u64,
    },
    /// Leader: `peer` lacks entries we no longer hold, so it gets the
    /// snapshot ending at `index` (`size` bytes).
    SnapshotSendStarted {
        peer: NodeId,
        index: Index,
        size: u64,
    },
    /// Leader: `peer` has the snapshot ending at `index`, `elapsed` after
    /// the transfer began.
    SnapshotSent {
        peer: NodeId,
        index: Index,
        size: u64,
        elapsed: Duration,
    },
    /// The snapshot ending at `index` that `from` sent us does not match
    /// its CRC-32 (`expected`, `computed` over what arrived): dropped.
    SnapshotChecksumFailed {
        from: NodeId,
        index: Index,
        expected: u32,
        computed: u32,
    },
    /// Leader: `peer` dropped the snapshot ending at `index` we sent it,
    /// whose bytes did not match its CRC-32. The transfer starts over;
    /// the caller should check the file it reads the chunks from.
    SnapshotRefused {
        peer: NodeId,
        index: Index,
    },
    /// The latest membership in our log changed, and is now in force
    /// (thesis §4.1): the one of the entry at `index` (appended, or left
    /// latest by a truncation; the snapshot's or bootstrap one at its
    /// index).
    MembershipInForce {
        index: Index,
        membership: Membership,
    },
    /// The membership entry at `index` is committed: the change it makes
    /// is done (a joint one is then left by the leader's next entry).
    MembershipCommitted {
        index: Index,
        membership: Membership,
        /// What it changed, in words (`node4 promoted to voter`).
        change: String,
    },
    /// The uncommitted membership entry at `index` was truncated (a new
    /// leader's log did not hold it): it will never be in force; the one
    /// before it is again (`MembershipInForce` follows).
    MembershipAbandoned {
        index: Index,
        membership: Membership,
    },
    /// A snapshot from the leader replaced our state machine (Figure 13).
    /// `log_kept`: our log held its last entry, so the entries after it
    /// stay (rule 6); otherwise the whole log went (rule 7).
    SnapshotInstalled {
        index: Index,
        term: Term,
        size: u64,
        log_kept: bool,
    },
}

/// What an event is about: how the activity log and the event stream
/// group the code that presents events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Roles, terms, votes and CheckQuorum.
    Elections,
    /// Leadership transfer (thesis §3.10).
    Transfer,
    /// The log, commits, peers' reachability and storage repair.
    LogAndPeers,
    /// Compaction and InstallSnapshot.
    Snapshots,
    /// Membership change (thesis chapter 4).
    Membership,
}

impl Event {
    /// Its topic. The match has no catch-all, so a new event is placed
    /// here, and so reaches its presenters' functions for that topic.
    pub fn topic(&self) -> Topic {
        use Event::*;
        match self {
            RoleChanged { .. }
            | TermAdopted { .. }
            | LeaderKnown { .. }
            | PreVoteStarted { .. }
            | PreVoteWon { .. }
            | PreVoteLost { .. }
            | ElectionStarted { .. }
            | ElectionWon { .. }
            | ElectionLost { .. }
            | VoteGranted { .. }
            | VoteRefused { .. }
            | QuorumLost { .. } => Topic::Elections,
            TransferStarted { .. }
            | TimeoutNowSent { .. }
            | TimeoutNowReceived { .. }
            | TransferHandedOff { .. }
            | TransferAbandoned { .. } => Topic::Transfer,
            Appended { .. }
            | Truncated { .. }
            | Committed { .. }
            | PeerUnreachable { .. }
            | PeerReachable { .. }
            | FollowerLostEntries { .. }
            | Repairing { .. }
            | Repaired { .. } => Topic::LogAndPeers,
            Compacted { .. }
            | SnapshotSendStarted { .. }
            | SnapshotSent { .. }
            | SnapshotChecksumFailed { .. }
            | SnapshotRefused { .. }
            | SnapshotInstalled { .. } => Topic::Snapshots,
            MembershipInForce { .. } | MembershipCommitted { .. } | MembershipAbandoned { .. } => {
                Topic::Membership
            }
        }
    }
}
