//! Membership change on the running server (thesis chapter 4): the
//! membership in force is the latest in the log, committed or not (§4.1),
//! and the server follows it as soon as it changes, whether by an entry
//! appended (by a leader's proposal or from an AppendEntries), by a
//! truncation that rolls an uncommitted one back, or by a snapshot.
//! Following it means: replicate to the servers it names and to no others,
//! and count the voters it names (both sets while joint, §4.3).

use std::time::Duration;

use super::membership::{Change, ChangeError, Membership, Suffrage};
use super::{Event, Index, NodeId, NotLeader, Payload, Progress, Raft, Role};

impl Raft {
    /// The membership in force: the latest in the log (or the snapshot's,
    /// or the bootstrap one).
    pub fn membership(&self) -> &Membership {
        self.configs.latest()
    }

    /// The index of the membership in force's entry (the snapshot's index,
    /// or 0, if the log holds none): committed once the commit index
    /// reaches it.
    pub fn membership_index(&self) -> Index {
        self.configs.latest_index()
    }

    /// The membership in force at `index` (the latest at or before it),
    /// for a snapshot covering the log up to there.
    pub fn membership_at(&self, index: Index) -> &Membership {
        self.configs.at(index)
    }

    /// Whether `id` was removed from the cluster by a committed membership
    /// (ids are never reused, so this is final): the index of the
    /// membership that removed it. The runtime stops a removed server
    /// (once it no longer leads: a removed leader hands over first) and
    /// tells a removed peer so when it asks for votes.
    pub fn removed_at(&self, id: NodeId) -> Option<Index> {
        self.configs.removed_at(id, self.commit_index)
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
        let fresh = Progress::new(self.log.last_index(), Duration::ZERO);
        self.peers.set_membership(self.cfg.id, &latest, fresh);
        self.events.push(Event::MembershipInForce {
            index: self.configs.latest_index(),
            membership: latest.clone(),
        });
        self.in_force = latest;
    }
}

fn list(ids: &[NodeId]) -> String {
    let names: Vec<String> = ids.iter().map(|id| format!("node{id}")).collect();
    names.join(", ")
}

fn them(ids: &[NodeId]) -> &'static str {
    if ids.len() == 1 { "it" } else { "them" }
}

/// How many entries a learner may lag the leader's log and still be
/// promoted to voter. Under load the leader's log runs ahead of any
/// follower by the entries in flight (a few hundred at most: the
/// pipeline's window), so a learner this close has caught up; one further
/// behind would make the new quorum wait for it to catch up before
/// anything more commits.
pub const PROMOTION_LAG: Index = 1000;

/// Why a leader did not start a membership change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    #[error("not the leader")]
    NotLeader(NotLeader),
    /// A new leader must commit an entry of its own term before it
    /// changes the membership: two changes proposed in different terms
    /// from the same committed membership could otherwise both commit,
    /// under majorities that do not overlap (the single-server bug posted
    /// to raft-dev in 2015, and its fix).
    #[error("this leader has not yet committed an entry of its term; try again in a moment")]
    NotYetCommitted,
    /// At most one change is uncommitted at a time (§4.1).
    #[error(
        "a membership change is in progress (index {index}: {membership}); it must commit first"
    )]
    InProgress {
        index: Index,
        membership: Membership,
    },
    #[error("a leadership transfer is in progress")]
    Transferring,
    /// The voters after the change would have no majority that answered
    /// lately: the change could not commit, and nothing after it either
    /// (etcd's `--strict-reconfig-check`).
    #[error(
        "after this change no majority of the voters would be answering: {} not heard from lately; start {} first, or remove {} instead",
        list(.unheard), them(.unheard), them(.unheard)
    )]
    WouldLoseQuorum { unheard: Vec<NodeId> },
    /// A learner is promoted only once it holds nearly all of the
    /// leader's log, so that the new quorum can commit at once (thesis
    /// §4.2.1; etcd refuses below 90% of the leader's log).
    #[error(
        "node{id} is {lag} entries behind the leader (it holds up to index {match_index}); a learner is promoted once it is at most {PROMOTION_LAG} behind"
    )]
    Behind {
        id: NodeId,
        lag: Index,
        match_index: Index,
    },
    #[error(transparent)]
    Invalid(#[from] ChangeError),
}

impl Raft {
    /// Leader: appends the membership `change` makes of the one in force
    /// (in force at once, §4.1). Returns its index and the new membership;
    /// the change is done once that index is committed (and, for a change
    /// by joint consensus, once the leader's own entry leaving the joint
    /// configuration, appended when it commits, is committed too).
    /// `now`: a change of voters is refused unless a majority of the new
    /// voters (each half, while joint) answered shortly before it.
    pub fn propose_change(
        &mut self,
        change: &Change,
        now: Duration,
    ) -> Result<(Index, Membership), ChangeRefused> {
        if self.role != Role::Leader {
            return Err(ChangeRefused::NotLeader(self.not_leader()));
        }
        if self.transfer.is_some() {
            return Err(ChangeRefused::Transferring);
        }
        if self.log.term_at(self.commit_index) != Some(self.term) {
            return Err(ChangeRefused::NotYetCommitted);
        }
        if self.configs.latest_index() > self.commit_index {
            return Err(ChangeRefused::InProgress {
                index: self.configs.latest_index(),
                membership: self.configs.latest().clone(),
            });
        }
        let latest = self.configs.latest();
        let next = latest.apply(change)?;
        if next.quorum() != latest.quorum() {
            self.check_live_majority(&next, now)?;
        }
        let latest = self.configs.latest();
        for id in next.voters() {
            if latest.servers.get(&id).map(|s| s.suffrage) != Some(Suffrage::Learner) {
                continue;
            }
            let match_index = self.match_index(id).unwrap_or(0);
            let lag = self.log.last_index().saturating_sub(match_index);
            if lag > PROMOTION_LAG {
                return Err(ChangeRefused::Behind {
                    id,
                    lag,
                    match_index,
                });
            }
        }
        let index = self.append_local(Payload::Membership(next.clone()));
        self.advance_commit(); // alone, or the quorum shrank
        Ok((index, next))
    }

    /// Whether a majority of `next`'s voters (of each half, while joint)
    /// answered within half a minimum election timeout (several
    /// heartbeats) before `now`, and did not fail to answer since (a
    /// server killed a moment ago was heard recently, but its connection
    /// is refused now); we always answer. A heuristic, as etcd's check
    /// is: a server that dies just after answering still counts.
    fn check_live_majority(&self, next: &Membership, now: Duration) -> Result<(), ChangeRefused> {
        let horizon = now.saturating_sub(self.cfg.election_timeout_min / 2);
        let heard = |id: NodeId| {
            if id == self.cfg.id {
                return now;
            }
            self.peers
                .get(&id)
                .filter(|p| p.reachable)
                .map_or(Duration::ZERO, |p| p.last_heard)
        };
        let quorum = next.quorum();
        if quorum.reached(heard).is_some_and(|t| t >= horizon) {
            return Ok(());
        }
        let unheard = quorum
            .voters()
            .into_iter()
            .filter(|&id| heard(id) < horizon)
            .collect();
        Err(ChangeRefused::WouldLoseQuorum { unheard })
    }

    /// Whether this server may stand for election: it votes in a
    /// membership not known to be superseded by a committed one: the one
    /// at our commit index or any later in the log, in either half while
    /// joint. Thesis §4.2.2: a server of the old configuration may lead
    /// until the new one is committed, and it may be the only one holding
    /// the log (a leader that appended its own removal and restarted
    /// before committing it: the others cannot win without its vote). It
    /// counts votes by the latest membership all the same, as every
    /// candidate does. Learners never stand.
    pub(super) fn may_stand(&self) -> bool {
        self.configs.voter_since(self.commit_index, self.cfg.id)
    }

    /// Whether `id` votes in the membership being moved to (a voter of
    /// the latest membership; while joint, of its new half).
    pub(super) fn stays_voter(&self, id: NodeId) -> bool {
        self.configs.latest().voters().contains(&id)
    }

    /// Leader: once a joint membership is committed, leave it for its new
    /// half (thesis §4.3: the leader appends C_new itself).
    pub(super) fn leave_joint_once_committed(&mut self) {
        let latest = self.configs.latest();
        if self.role != Role::Leader
            || !latest.is_joint()
            || self.configs.latest_index() > self.commit_index
        {
            return;
        }
        let next = latest
            .apply(&Change::LeaveJoint)
            .expect("a joint membership can be left");
        self.append_local(Payload::Membership(next));
        self.advance_commit();
    }

    /// Leader: the committed membership leaves us out of its voters
    /// (thesis §4.2.2): we replicated it without counting ourselves;
    /// now we stop leading.
    pub(super) fn must_leave(&self) -> bool {
        self.role == Role::Leader
            && self.configs.latest_index() <= self.commit_index
            && !self.stays_voter(self.cfg.id)
    }

    /// Leader, removed: hand leadership to the most up-to-date voter left
    /// (TimeoutNow, thesis §3.10), or, with none to hand to or while a
    /// handover runs out of time, step down and let the voters elect one.
    pub(super) fn leave_if_removed(&mut self, now: Duration) {
        if !self.must_leave() || self.transfer.is_some() {
            return;
        }
        if self.transfer_leadership(None, now).is_err() {
            self.set_role(Role::Follower, now);
            self.leader_id = None;
            self.reset_election_timer(now);
        }
    }
}
