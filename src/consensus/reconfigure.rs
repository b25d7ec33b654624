//! Membership change on the running server (thesis chapter 4): the
//! membership in force is the latest in the log, committed or not (§4.1),
//! and the server follows it as soon as it changes, whether by an entry
//! appended (by a leader's proposal or from an AppendEntries), by a
//! truncation that rolls an uncommitted one back, or by a snapshot.
//! Following it means: replicate to the servers it names and to no others,
//! and count the voters it names (both sets while joint, §4.3).

use super::membership::Membership;
use super::{Event, Progress, Raft};

impl Raft {
    /// The membership in force: the latest in the log (or the snapshot's,
    /// or the bootstrap one).
    pub fn membership(&self) -> &Membership {
        self.configs.latest()
    }

    /// The membership in force at `index` (the latest at or before it),
    /// for a snapshot covering the log up to there.
    pub fn membership_at(&self, index: super::Index) -> &Membership {
        self.configs.at(index)
    }

    /// After the log changed: if the latest membership is not the one the
    /// tracker counts, switch to it. New servers start as a leader's new
    /// followers do (matchIndex 0, nextIndex after our last entry, a
    /// heartbeat due at once); departed ones are forgotten.
    pub(super) fn follow_membership(&mut self) {
        if *self.configs.latest() == self.in_force {
            return;
        }
        let latest = self.configs.latest().clone();
        let fresh = Progress::new(self.log.last_index(), std::time::Duration::ZERO);
        self.peers.set_membership(self.cfg.id, &latest, fresh);
        self.events.push(Event::MembershipInForce {
            index: self.configs.latest_index(),
            membership: latest.clone(),
        });
        self.in_force = latest;
    }
}
