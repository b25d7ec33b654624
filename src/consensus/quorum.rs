//! Who decides: the servers whose agreement counts, and what "a majority
//! of them" has reached. Every rule of Raft that counts servers asks one
//! of three questions, and each is answered here, once:
//!
//! * how far a majority has got ([`Majority::reached`]): the commit index
//!   (Figure 2, Leaders rule 4: the highest N that a majority's
//!   `matchIndex` reaches), the latest read round a majority has answered
//!   (thesis §6.4), and when a majority was last heard from (CheckQuorum,
//!   thesis §6.2);
//! * whether an election is won, lost or still open ([`Majority::vote`]);
//! * how many voters a predicate holds for ([`Majority::count`]), for
//!   reporting.
//!
//! After etcd-io/raft's `quorum` package (`MajorityConfig`,
//! `JointConfig`, `CommittedIndex`, `VoteResult`): the callers name what
//! they count, never how a majority is computed. They ask a [`Quorum`]:
//! one [`Majority`], or during a membership change by joint consensus
//! (thesis §4.3) two, the old configuration's and the new one's, each
//! answer then the one both give.

use std::collections::BTreeSet;

use super::NodeId;

/// Where an election stands (see [`Majority::vote`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    /// Enough voters refused that a win is no longer possible.
    Lost,
    Pending,
}

/// A set of voters, of which any majority decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Majority {
    voters: BTreeSet<NodeId>,
}

impl Majority {
    /// The voters. None at all only on a server joining a running
    /// cluster, before the leader's log has told it the membership: it
    /// decides nothing (nothing is reached, no election won).
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Majority {
        Majority {
            voters: voters.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.voters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied()
    }

    /// How many voters make a majority.
    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The greatest value that a majority of the voters has reached, each
    /// voter's value given by `value`: sorted from the greatest, the
    /// quorum-th one. A commit index, a read round, a time heard from.
    /// `None` with no voters.
    pub fn reached<T: Ord + Copy>(&self, value: impl Fn(NodeId) -> T) -> Option<T> {
        let mut values: Vec<T> = self.voters.iter().map(|&id| value(id)).collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied()
    }

    /// An election in which `granted` voted for the candidate and
    /// `refused` against (others, including non-voters, are ignored).
    pub fn vote(&self, granted: &BTreeSet<NodeId>, refused: &BTreeSet<NodeId>) -> VoteResult {
        let yes = granted.intersection(&self.voters).count();
        let no = refused.intersection(&self.voters).count();
        if self.voters.is_empty() {
            VoteResult::Lost
        } else if yes >= self.quorum() {
            VoteResult::Won
        } else if no > self.voters.len() - self.quorum() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// How many voters `holds` is true of.
    pub fn count(&self, holds: impl Fn(NodeId) -> bool) -> usize {
        self.voters.iter().filter(|&&id| holds(id)).count()
    }
}

/// The configuration's deciders: one majority, or during a change by
/// joint consensus (thesis §4.3) two, the old set's and the new one's,
/// every decision needing both. Answers the same three questions as
/// [`Majority`], so that the tracker, elections and reads ask it without
/// knowing whether a change is under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// The configuration being moved to (or the only one).
    incoming: Majority,
    /// While joint: the configuration being left.
    outgoing: Option<Majority>,
}

impl Quorum {
    /// One majority of `voters`.
    pub fn simple(voters: impl IntoIterator<Item = NodeId>) -> Quorum {
        Quorum {
            incoming: Majority::new(voters),
            outgoing: None,
        }
    }

    /// Joint consensus between the `outgoing` voters and the `incoming`.
    pub fn joint(
        outgoing: impl IntoIterator<Item = NodeId>,
        incoming: impl IntoIterator<Item = NodeId>,
    ) -> Quorum {
        Quorum {
            incoming: Majority::new(incoming),
            outgoing: Some(Majority::new(outgoing)),
        }
    }

    pub fn is_joint(&self) -> bool {
        self.outgoing.is_some()
    }

    /// Whether `id` votes in either configuration.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.as_ref().is_some_and(|m| m.contains(id))
    }

    /// Every voter of either configuration, once each, in order.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self.incoming.voters().collect();
        all.extend(self.outgoing.iter().flat_map(|m| m.voters()));
        all
    }

    /// How many servers vote, in either configuration.
    pub fn len(&self) -> usize {
        self.voters().len()
    }

    pub fn is_empty(&self) -> bool {
        self.voters().is_empty()
    }

    /// The greatest value that both majorities have reached: the lesser
    /// of the two (thesis §4.3: an entry is committed once a majority of
    /// the old configuration and one of the new store it).
    /// `None` if a configuration has no voters.
    pub fn reached<T: Ord + Copy>(&self, value: impl Fn(NodeId) -> T) -> Option<T> {
        let incoming = self.incoming.reached(&value)?;
        match &self.outgoing {
            Some(outgoing) => Some(incoming.min(outgoing.reached(&value)?)),
            None => Some(incoming),
        }
    }

    /// An election needs a win in both configurations; a loss in either
    /// loses it.
    pub fn vote(&self, granted: &BTreeSet<NodeId>, refused: &BTreeSet<NodeId>) -> VoteResult {
        let incoming = self.incoming.vote(granted, refused);
        let Some(outgoing) = &self.outgoing else {
            return incoming;
        };
        match (incoming, outgoing.vote(granted, refused)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// How many voters, of either configuration, `holds` is true of.
    pub fn count(&self, holds: impl Fn(NodeId) -> bool) -> usize {
        self.voters().into_iter().filter(|&id| holds(id)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_reaches_the_quorum_th_greatest_value() {
        let five = Majority::new(1..=5);
        let matched = [10, 7, 7, 3, 0];
        assert_eq!(five.reached(|id| matched[id as usize - 1]), Some(7));
        let matched = [10, 9, 3, 2, 1];
        assert_eq!(five.reached(|id| matched[id as usize - 1]), Some(3));
        // Four voters need three: the third greatest.
        let four = Majority::new(1..=4);
        assert_eq!(four.reached(|id| [8, 6, 4, 2][id as usize - 1]), Some(4));
        assert_eq!(Majority::new([7]).reached(|_| 42), Some(42));
    }

    #[test]
    fn an_election_is_won_by_a_majority_and_lost_once_a_win_is_impossible() {
        let five = Majority::new(0..5);
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(five.vote(&set(&[0, 1]), &set(&[])), VoteResult::Pending);
        assert_eq!(five.vote(&set(&[0, 1, 2]), &set(&[])), VoteResult::Won);
        assert_eq!(five.vote(&set(&[0]), &set(&[1, 2])), VoteResult::Pending);
        assert_eq!(five.vote(&set(&[0]), &set(&[1, 2, 3])), VoteResult::Lost);
        // Someone outside the configuration counts for nothing.
        assert_eq!(five.vote(&set(&[0, 1, 9]), &set(&[])), VoteResult::Pending);
        let four = Majority::new(0..4);
        assert_eq!(four.vote(&set(&[0, 1]), &set(&[2])), VoteResult::Pending);
        assert_eq!(four.vote(&set(&[0]), &set(&[1, 2])), VoteResult::Lost);
    }

    #[test]
    fn a_joint_quorum_commits_what_both_majorities_hold() {
        // Replacing 2 and 3 by 4 and 5: {1,2,3} -> {1,4,5}.
        let joint = Quorum::joint([1, 2, 3], [1, 4, 5]);
        let matched = |m: [u64; 5]| move |id: NodeId| m[id as usize - 1];
        // The old majority (1, 2) holds 9, the new one (1, 4) only 5.
        assert_eq!(joint.reached(matched([9, 9, 0, 5, 0])), Some(5));
        // The new majority alone is not enough.
        assert_eq!(joint.reached(matched([9, 0, 0, 9, 9])), Some(0));
        assert_eq!(joint.reached(matched([9, 9, 9, 9, 0])), Some(9));
        assert_eq!(joint.voters(), BTreeSet::from([1, 2, 3, 4, 5]));
        assert!(joint.contains(2) && joint.contains(5) && !joint.contains(6));
        let simple = Quorum::simple([1, 2, 3]);
        assert_eq!(simple.reached(matched([9, 9, 0, 0, 0])), Some(9));
        assert!(!simple.is_joint() && joint.is_joint());
    }

    #[test]
    fn a_joint_election_needs_both_majorities_and_is_lost_by_either() {
        let joint = Quorum::joint([1, 2, 3], [3, 4, 5]);
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        // A majority of the new set only.
        assert_eq!(joint.vote(&set(&[3, 4, 5]), &set(&[])), VoteResult::Pending);
        assert_eq!(
            joint.vote(&set(&[3, 4, 5]), &set(&[1, 2])),
            VoteResult::Lost
        );
        assert_eq!(joint.vote(&set(&[1, 3, 4]), &set(&[])), VoteResult::Won);
        assert_eq!(joint.vote(&set(&[1, 2]), &set(&[4, 5])), VoteResult::Lost);
        assert_eq!(joint.count(|id| id % 2 == 1), 3);
    }

    #[test]
    fn count_counts_voters_only() {
        let three = Majority::new([1, 2, 3]);
        assert_eq!(three.count(|id| id != 2), 2);
        assert_eq!(three.len(), 3);
        assert!(three.contains(2) && !three.contains(4));
    }
}
