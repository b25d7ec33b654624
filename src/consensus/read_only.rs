//! A leader's linearizable reads, without a log entry each (thesis §6.4,
//! "ReadIndex"), and the clock-bound lease that can skip their round trip
//! (thesis §6.4.1, see `Raft::lease_read`).
//!
//! A read is answered with the commit index it was given once two things
//! hold: the leader has committed an entry of its own term (before that,
//! its commit index may be behind the cluster's), and a majority has
//! answered a heartbeat sent after the read arrived (so no newer leader
//! had been elected when the read index was taken). Heartbeats carry a
//! *round*: every read waiting for a majority joins the current round, and
//! a reply echoing round `r` confirms every read of round `r` or earlier.
//! Reads that arrive while a round is on its way ride the next one
//! together, so a burst of reads costs one heartbeat per follower, not one
//! each (`Progress::round_due`).
//!
//! The state lives here; which rounds a majority has answered is the
//! leader's to say (the quorum of `Progress::acked_round`s).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Index, NotLeader, Raft, ReadState, Role};

/// A read given its read index, waiting for a majority to answer a
/// heartbeat of its round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    ctx: u64,
    index: Index,
    round: u64,
}

/// The reads of one leadership; cleared (and failed) at every role change.
#[derive(Debug, Default)]
pub(super) struct ReadOnly {
    /// The latest round started; heartbeats carry it. 0: none yet.
    round: u64,
    /// Reads waiting for the leader to commit an entry of its own term.
    awaiting_commit: Vec<u64>,
    /// Reads with a read index, in the order of their rounds.
    awaiting_quorum: Vec<Pending>,
    /// Answered, to be handed out in the next `Ready`.
    done: Vec<ReadState>,
    /// When the first request of each round not yet answered by a
    /// majority went out (for the lease).
    started: BTreeMap<u64, Duration>,
}

impl ReadOnly {
    /// The round heartbeats carry now.
    pub(super) fn round(&self) -> u64 {
        self.round
    }

    /// A read asks for a read index.
    pub(super) fn add(&mut self, ctx: u64) {
        self.awaiting_commit.push(ctx);
    }

    /// The leader's commit index is at least the cluster's (an entry of
    /// its term is committed): the waiting reads take it as their read
    /// index, in a new round. Whether any did.
    pub(super) fn start_round(&mut self, commit_index: Index) -> bool {
        if self.awaiting_commit.is_empty() {
            return false;
        }
        self.round += 1;
        let round = self.round;
        self.awaiting_quorum
            .extend(self.awaiting_commit.drain(..).map(|ctx| Pending {
                ctx,
                index: commit_index,
                round,
            }));
        true
    }

    /// A request carrying `round` went out at `now`.
    pub(super) fn sent(&mut self, round: u64, now: Duration) {
        if round > 0 {
            self.started.entry(round).or_insert(now);
        }
    }

    /// A majority has answered every round up to `answered`: their reads
    /// are done, and the older rounds' start times no longer matter.
    pub(super) fn confirm(&mut self, answered: u64) {
        self.started = self.started.split_off(&answered);
        // Rounds only grow along the queue: the confirmed are a prefix.
        let n = self
            .awaiting_quorum
            .iter()
            .take_while(|r| r.round <= answered)
            .count();
        let done = self.awaiting_quorum.drain(..n).map(|r| ReadState {
            ctx: r.ctx,
            index: Some(r.index),
        });
        self.done.extend(done);
    }

    /// When round `round`'s first request went out, if it is still kept.
    pub(super) fn started(&self, round: u64) -> Option<Duration> {
        self.started.get(&round).copied()
    }

    /// The leadership these reads were for has ended: every waiting read
    /// fails (`index: None`), and rounds start again from 0.
    pub(super) fn fail_all(&mut self) {
        let failed = self
            .awaiting_commit
            .drain(..)
            .chain(self.awaiting_quorum.drain(..).map(|r| r.ctx));
        self.done
            .extend(failed.map(|ctx| ReadState { ctx, index: None }));
        self.round = 0;
        self.started.clear();
    }

    pub(super) fn has_done(&self) -> bool {
        !self.done.is_empty()
    }

    pub(super) fn take_done(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.done)
    }
}

impl Raft {
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

    /// Gives reads a read index once the current term has a committed
    /// entry, and a fresh heartbeat round to confirm it.
    pub(super) fn start_reads(&mut self) {
        if self.log.term_at(self.commit_index) == Some(self.term)
            && self.reads.start_round(self.commit_index)
        {
            self.confirm_reads();
        }
    }

    /// The latest read round a majority (ourselves included, having
    /// started every round) has answered.
    pub(super) fn quorum_round(&self) -> u64 {
        self.peers.answered_round(self.reads.round())
    }

    pub(super) fn confirm_reads(&mut self) {
        let answered = self.quorum_round();
        self.reads.confirm(answered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn reads_wait_for_a_commit_of_the_term_then_for_their_round() {
        let mut r = ReadOnly::default();
        r.add(1);
        r.add(2);
        assert!(r.start_round(7));
        assert_eq!(r.round(), 1);
        r.add(3); // arrives while round 1 is on its way
        r.sent(1, 10 * MS);
        r.sent(1, 20 * MS);
        assert_eq!(r.started(1), Some(10 * MS), "the round's first request");
        assert!(r.start_round(9));
        r.confirm(1);
        assert_eq!(
            r.take_done(),
            vec![
                ReadState {
                    ctx: 1,
                    index: Some(7)
                },
                ReadState {
                    ctx: 2,
                    index: Some(7)
                }
            ]
        );
        assert_eq!(r.started(1), Some(10 * MS), "round 1 is the one answered");
        r.confirm(2);
        assert_eq!(
            r.take_done(),
            vec![ReadState {
                ctx: 3,
                index: Some(9)
            }]
        );
        assert_eq!(r.started(1), None);
    }

    #[test]
    fn a_role_change_fails_every_waiting_read() {
        let mut r = ReadOnly::default();
        r.add(1);
        assert!(r.start_round(4));
        r.add(2);
        r.fail_all();
        let failed: Vec<u64> = r.take_done().iter().map(|s| s.ctx).collect();
        assert_eq!(failed, [2, 1]);
        assert_eq!(r.round(), 0);
        assert!(!r.start_round(5), "nothing waits");
    }
}
