//! What a server's state looks like from outside: the accessors the
//! runtime, status reports and tests read. Nothing here changes it.

use std::time::Duration;

use super::*;

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

impl Raft {
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
}
