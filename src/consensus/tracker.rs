//! A server's view of the other servers (after raft-rs's `tracker` and
//! etcd-io/raft's `ProgressTracker`): for each peer, how replication to it
//! stands ([`Progress`], a leader's, made anew each term), whether it
//! answers (backoff, reachability, when last heard), and a candidate's
//! vote bookkeeping; and, through the [`Quorum`] of the configuration,
//! what a majority of them has reached: the commit index, the read round
//! answered, when last heard from. This server counts in every majority
//! with its own value, which the caller gives.

use std::collections::BTreeMap;
use std::time::Duration;

use super::membership::Membership;
use super::quorum::Quorum;
use super::{Index, NodeId, Progress};

/// What a server knows about one peer. The leader's replication state is
/// a [`Progress`], made anew for each term of leadership; the vote fields
/// are a candidate's, reset on every role change.
#[derive(Clone, Debug)]
pub(super) struct Peer {
    /// Leader: replication to this peer.
    pub(super) progress: Progress,
    /// Candidate: a RequestVote was sent this term (or answered).
    pub(super) vote_requested: bool,
    /// After a failed RPC, no new request before this.
    pub(super) retry_at: Duration,
    /// Current backoff; zero while the peer answers.
    pub(super) backoff: Duration,
    /// Whether the last RPC to this peer got an answer; kept across roles
    /// so that "unreachable" and "back" are reported once each.
    pub(super) reachable: bool,
    /// Leader: when the peer last answered in this leadership
    /// (CheckQuorum).
    pub(super) last_heard: Duration,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            progress: Progress::new(0, Duration::ZERO),
            vote_requested: false,
            retry_at: Duration::ZERO,
            backoff: Duration::ZERO,
            reachable: true,
            last_heard: Duration::ZERO,
        }
    }
}

/// The peers, and the configuration they and this server form.
#[derive(Clone, Debug)]
pub(super) struct Tracker {
    peers: BTreeMap<NodeId, Peer>,
    /// Whose agreement counts: this server and its peers (one majority,
    /// or two while a change is under way).
    voters: Quorum,
}

impl Tracker {
    /// Server `me` of `membership`.
    pub(super) fn new(me: NodeId, membership: &Membership) -> Tracker {
        let peers = membership.peers_of(me);
        Tracker {
            peers: peers.into_iter().map(|p| (p, Peer::new())).collect(),
            voters: membership.quorum(),
        }
    }

    /// `membership` is now in force: servers no longer in it are
    /// forgotten, new ones start with `progress` (a leader's first guess
    /// for them), and the quorum is the new one's.
    pub(super) fn set_membership(
        &mut self,
        me: NodeId,
        membership: &Membership,
        progress: Progress,
    ) {
        let ids = membership.peers_of(me);
        self.peers.retain(|id, _| ids.contains(id));
        for id in ids {
            self.peers.entry(id).or_insert_with(|| Peer {
                progress: progress.clone(),
                ..Peer::new()
            });
        }
        self.voters = membership.quorum();
    }

    pub(super) fn voters(&self) -> &Quorum {
        &self.voters
    }

    pub(super) fn get(&self, id: &NodeId) -> Option<&Peer> {
        self.peers.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Peer> {
        self.peers.get_mut(id)
    }

    pub(super) fn contains_key(&self, id: &NodeId) -> bool {
        self.peers.contains_key(id)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.keys()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Peer)> {
        self.peers.iter()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.peers.values_mut()
    }

    /// Whether `me` is the only voter (learners aside): nobody else can
    /// lead, and no one else's answer counts.
    pub(super) fn sole_voter(&self, me: NodeId) -> bool {
        self.voters.voters().into_iter().all(|id| id == me)
    }

    /// Figure 2, Leaders rule 4: the highest index a majority holds, ours
    /// counted as `own` (as far as our own disk holds the log).
    pub(super) fn committed(&self, own: Index) -> Index {
        self.voters
            .reached(|id| self.peers.get(&id).map_or(own, |p| p.progress.match_index))
            .unwrap_or(0)
    }

    /// The latest read round a majority has answered, ours counted as
    /// `own` (the round we started last: we take part in every one).
    pub(super) fn answered_round(&self, own: u64) -> u64 {
        self.voters
            .reached(|id| self.peers.get(&id).map_or(own, |p| p.progress.acked_round))
            .unwrap_or(0)
    }

    /// When a majority was last all heard from (CheckQuorum); we always
    /// hear from ourselves.
    pub(super) fn majority_heard(&self) -> Duration {
        self.voters
            .reached(|id| self.peers.get(&id).map_or(Duration::MAX, |p| p.last_heard))
            .unwrap_or(Duration::ZERO)
    }

    /// How many servers, ourselves included, were heard from within
    /// `window` before `now`.
    pub(super) fn heard_within(&self, now: Duration, window: Duration) -> usize {
        self.voters.count(|id| {
            self.peers
                .get(&id)
                .is_none_or(|p| now.saturating_sub(p.last_heard) < window)
        })
    }
}

impl std::ops::Index<&NodeId> for Tracker {
    type Output = Peer;

    fn index(&self, id: &NodeId) -> &Peer {
        &self.peers[id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn this_server_counts_in_every_majority_with_its_own_value() {
        // Server 0 among peers 1..=4: a majority is three of five.
        let five = Membership::bootstrap((0..5).map(|id| (id, format!("h:{id}"))));
        let mut t = Tracker::new(0, &five);
        for (id, matched, heard) in [(1, 9, 50), (2, 7, 40), (3, 3, 30), (4, 0, 0)] {
            let p = t.get_mut(&id).unwrap();
            p.progress.match_index = matched;
            p.progress.acked_round = matched;
            p.last_heard = heard * MS;
        }
        // Our own disk holds up to 8: {9, 8, 7} is a majority.
        assert_eq!(t.committed(8), 7);
        // Holding only up to 2, we are not part of a majority at 7.
        assert_eq!(t.committed(2), 3);
        assert_eq!(t.answered_round(10), 7);
        // We hear from ourselves always: peers 1 and 2 complete a majority.
        assert_eq!(t.majority_heard(), 40 * MS);
        assert_eq!(t.heard_within(60 * MS, 25 * MS), 3);
    }
}
