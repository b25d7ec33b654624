//! Which membership is in force where in the log (thesis §4.1): a server
//! uses the latest membership in its log, committed or not; when that
//! entry is truncated, the one before it is in force again; the snapshot
//! carries the membership it covers. This keeps the memberships of the
//! log's entries past the snapshot, and the one in force at the snapshot,
//! and follows the log through appends, truncation and compaction.

use super::membership::Membership;
use super::{Entry, Index, Payload};

/// The memberships of a server's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Configurations {
    /// In force at `base.0`: the snapshot's, or the bootstrap membership
    /// (index 0).
    base: (Index, Membership),
    /// Membership entries after `base.0`, in log order.
    entries: Vec<(Index, Membership)>,
}

impl Configurations {
    /// `membership` in force at `index`, and the membership entries of
    /// `log` (those after `index`).
    pub(super) fn new(index: Index, membership: Membership, log: &[Entry]) -> Configurations {
        let mut c = Configurations {
            base: (index, membership),
            entries: Vec::new(),
        };
        for e in log.iter().filter(|e| e.index > index) {
            c.appended(e);
        }
        c
    }

    /// The membership in force: the latest in the log.
    pub(super) fn latest(&self) -> &Membership {
        self.entries.last().map_or(&self.base.1, |(_, m)| m)
    }

    /// The index of the latest membership's entry (the base's index if
    /// the log holds none).
    pub(super) fn latest_index(&self) -> Index {
        self.entries.last().map_or(self.base.0, |(i, _)| *i)
    }

    /// The membership in force at `index`: the latest at or before it.
    pub(super) fn at(&self, index: Index) -> &Membership {
        let before = self.entries.iter().rev().find(|(i, _)| *i <= index);
        before.map_or(&self.base.1, |(_, m)| m)
    }

    /// Whether `id` votes in the membership in force at `index`, or in
    /// any after it in the log.
    pub(super) fn voter_since(&self, index: Index, id: super::NodeId) -> bool {
        self.at(index).is_voter(id)
            || self
                .entries
                .iter()
                .any(|(i, m)| *i > index && m.is_voter(id))
    }

    /// The index of the first membership up to `upto` that lists `id` as
    /// removed (the base's index if it already does).
    pub(super) fn removed_at(&self, id: super::NodeId, upto: Index) -> Option<Index> {
        if self.base.1.removed.contains(&id) {
            return Some(self.base.0);
        }
        self.entries
            .iter()
            .find(|(i, m)| *i <= upto && m.removed.contains(&id))
            .map(|(i, _)| *i)
    }

    /// An entry was appended to the log.
    pub(super) fn appended(&mut self, e: &Entry) {
        if let Payload::Membership(m) = &e.payload {
            debug_assert!(e.index > self.latest_index(), "memberships in log order");
            self.entries.push((e.index, m.clone()));
        }
    }

    /// The log lost its entries from `index` on (Figure 2,
    /// AppendEntries rule 3): their memberships are no longer in force.
    /// Returns the memberships that went with them, never to be in force.
    pub(super) fn truncated_from(&mut self, index: Index) -> Vec<(Index, Membership)> {
        let keep = self.entries.iter().take_while(|(i, _)| *i < index).count();
        self.entries.split_off(keep)
    }

    /// The log now starts after a snapshot up to `index` (compaction, or
    /// a snapshot installed over a log that held its last entry): the
    /// membership in force there becomes the base.
    pub(super) fn compacted_to(&mut self, index: Index) {
        if index <= self.base.0 {
            return;
        }
        let at = self.at(index).clone();
        self.entries.retain(|(i, _)| *i > index);
        self.base = (index, at);
    }

    /// A snapshot up to `index` replaced the whole log, with `membership`
    /// in force there (Figure 13, rule 7).
    pub(super) fn reset(&mut self, index: Index, membership: Membership) {
        self.base = (index, membership);
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::membership::Change;

    fn three() -> Membership {
        Membership::bootstrap((1..=3).map(|id| (id, format!("h:{id}"))))
    }

    fn entry(index: Index, m: Option<&Membership>) -> Entry {
        Entry {
            index,
            term: 1,
            payload: m.map_or(Payload::Noop, |m| Payload::Membership(m.clone())),
        }
    }

    #[test]
    fn the_latest_membership_in_the_log_is_in_force_and_truncation_rolls_it_back() {
        let base = three();
        let with_4 = base
            .apply(&Change::AddLearner {
                id: 4,
                address: "h:4".into(),
            })
            .unwrap();
        let promoted = with_4.apply(&Change::Promote(4)).unwrap();
        let log = vec![
            entry(1, None),
            entry(2, Some(&with_4)),
            entry(3, None),
            entry(4, Some(&promoted)),
        ];
        let mut c = Configurations::new(0, base.clone(), &log);
        assert_eq!(c.latest(), &promoted);
        assert_eq!(c.latest_index(), 4);
        assert_eq!(c.at(3), &with_4);
        assert_eq!(c.at(1), &base);
        // A leader's log replaces ours from 4: the promotion is undone.
        c.truncated_from(4);
        assert_eq!(c.latest(), &with_4);
        c.truncated_from(2);
        assert_eq!(c.latest(), &base);
        assert_eq!(c.latest_index(), 0);
    }

    #[test]
    fn compaction_keeps_the_membership_in_force_at_the_snapshot() {
        let base = three();
        let shrunk = base.apply(&Change::Remove(3)).unwrap();
        let log = vec![entry(1, None), entry(2, Some(&shrunk)), entry(3, None)];
        let mut c = Configurations::new(0, base, &log);
        c.compacted_to(3);
        assert_eq!(c.latest(), &shrunk);
        assert_eq!(c.latest_index(), 3);
        assert_eq!(c.at(3), &shrunk);
        // Restarted from that snapshot: the same.
        let again = Configurations::new(3, shrunk.clone(), &log);
        assert_eq!(again.latest(), &shrunk);
        c.reset(10, three());
        assert_eq!(c.latest(), &three());
    }
}
