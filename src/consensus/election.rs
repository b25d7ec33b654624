//! Elections, and how long leadership lasts.
//!
//! * **Votes** (Figure 2, §5.2): a candidate takes a new term, votes for
//!   itself and asks the others; a majority of grants makes it leader.
//! * **PreVote** (thesis §9.6): before taking a new term, a server whose
//!   election timer fired asks whether it *could* win. The question
//!   changes nothing at the voters, and the asker keeps its term, so a
//!   server cut off from the others (which would otherwise raise its term
//!   at every timeout, and on its return force the working leader to step
//!   down) comes back in the term it left. A pre-candidate that gets a
//!   majority stands for real; one refused by a majority stays a follower.
//! * **The lease** (thesis §9.6, and §6.2's CheckQuorum): a server that
//!   heard from a leader less than a minimum election timeout ago refuses
//!   pre-votes, and with CheckQuorum on also real votes, without adopting
//!   the asker's term: the leader it hears from is alive, so the asker is
//!   the one cut off. The leader counts as hearing from itself. A
//!   candidate standing because of a leadership transfer (`transfer` in
//!   its request) is answered regardless.
//! * **CheckQuorum** (thesis §6.2): a leader that has not heard from a
//!   majority (itself included) for a minimum election timeout steps down
//!   to follower in its term, so that it stops taking writes it cannot
//!   commit, and clients go to the majority's side at once. This is what
//!   makes the followers' lease safe for liveness: a leader holds its
//!   office only as long as a majority keeps answering it.
//!
//! Safety never depends on any of this: a vote is still granted at most
//! once per term to an up-to-date log (§5.2, §5.4.1), and ReadIndex reads
//! are still confirmed by a heartbeat round (thesis §6.4). The lease and
//! CheckQuorum read the clock only to decide *when* to act.
//!
//! * **Lease reads** (thesis §6.4.1, `Config::lease_reads`, off by
//!   default) are the one exception, and trade that for speed: a leader
//!   answers a read without a heartbeat round while its lease holds. The
//!   lease comes from ReadIndex rounds (thesis §6.4): if a majority
//!   (itself included) answered requests of a read round whose first
//!   request the leader sent at time `T` on its clock (answers echo the
//!   round, so a late or repeated answer vouches only for its own round),
//!   each of those followers refuses votes for a minimum election timeout
//!   `E` on *its* clock after it received one,
//!   so no other leader can be elected before `T + E / (1 + d)` in real
//!   time, if no clock runs faster than `1 + d` or slower than `1 - d`
//!   (`d` = `Config::max_clock_drift`). The leader's clock, slow by at
//!   most `1 - d`, may show `T + E (1 - d) / (1 + d)` by then: that is
//!   where its lease ends. While the lease holds, reads skip the round;
//!   the first read after it ends goes through ReadIndex, and the round
//!   it starts renews the lease. The argument needs every follower to honour
//!   the lease, also right after a restart, when it has forgotten whom it
//!   heard from: with lease reads on, a server refuses votes for `E`
//!   after it starts. During a leadership transfer the target's election
//!   ignores leases, so a leader handing over serves no lease reads.

use std::collections::BTreeSet;
use std::time::Duration;

use super::message::{Index, NodeId, RequestVote, RequestVoteReply, Term};
use super::quorum::{Quorum, VoteResult};
use super::{Event, Raft, Role, VoteRefusal};

/// A read the leader's lease covers; see [`Raft::lease_read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRead {
    /// Read the state machine once it has applied this index.
    pub index: Index,
    /// On this server's clock: a read made later is not covered.
    pub expires: Duration,
}

/// The answers a (pre-)candidate has collected in this round.
#[derive(Clone, Debug, Default)]
pub(super) struct Votes {
    granted: BTreeSet<NodeId>,
    refused: BTreeSet<NodeId>,
}

impl Votes {
    /// A new round in which `me` votes for itself.
    fn new(me: NodeId) -> Votes {
        Votes {
            granted: BTreeSet::from([me]),
            refused: BTreeSet::new(),
        }
    }

    fn record(&mut self, voter: NodeId, granted: bool) {
        if granted {
            self.granted.insert(voter);
        } else {
            self.refused.insert(voter);
        }
    }

    /// Where the round stands among `voters`.
    fn tally(&self, voters: &Quorum) -> VoteResult {
        voters.vote(&self.granted, &self.refused)
    }
}

impl Raft {
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
    pub(super) fn repair_refusal(
        &self,
        last_log_term: Term,
        last_log_index: Index,
    ) -> Option<VoteRefusal> {
        self.repairing()
            .filter(|_| (last_log_term, last_log_index) < (self.lost_term, self.lost_through))
    }

    /// The election timer fired (Figure 2, Followers rule 2, and
    /// Candidates: "if election timeout elapses, start new election"):
    /// with PreVote, ask first.
    pub(super) fn election_timeout(&mut self, now: Duration) {
        if self.cfg.pre_vote {
            self.start_pre_vote(now);
        } else {
            self.start_election(now, false);
        }
    }

    /// Thesis §9.6: ask whether we could win the next term, keeping ours.
    fn start_pre_vote(&mut self, now: Duration) {
        self.end_round_unwon();
        self.leader_id = None;
        self.set_role(Role::PreCandidate, now);
        self.votes = Votes::new(self.cfg.id);
        self.reset_election_timer(now);
        self.events.push(Event::PreVoteStarted {
            term: self.term + 1,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        });
        self.check_votes(now);
    }

    /// Figure 2, Candidates: increment currentTerm, vote for self, reset
    /// the election timer, send RequestVote to all other servers.
    /// `transfer`: the election a leadership transfer asked for (thesis
    /// §3.10), which voters answer despite their lease.
    pub(super) fn start_election(&mut self, now: Duration, transfer: bool) {
        self.end_round_unwon();
        self.term += 1;
        self.voted_for = Some(self.cfg.id);
        self.hard_state_dirty = true;
        self.leader_id = None;
        self.set_role(Role::Candidate, now);
        self.votes = Votes::new(self.cfg.id);
        self.transfer_election = transfer;
        self.reset_election_timer(now);
        self.events.push(Event::ElectionStarted {
            term: self.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        });
        self.check_votes(now);
    }

    /// A round still open when the next starts was lost (timed out).
    fn end_round_unwon(&mut self) {
        if matches!(self.role, Role::Candidate | Role::PreCandidate)
            && self.votes.tally(self.peers.voters()) == VoteResult::Pending
        {
            self.push_round_lost();
        }
    }

    fn push_round_lost(&mut self) {
        let (votes, refusals) = (self.votes.granted.len(), self.votes.refused.len());
        let cluster_size = self.peers.voters().len();
        self.events.push(if self.role == Role::PreCandidate {
            Event::PreVoteLost {
                term: self.term + 1,
                votes,
                refusals,
                cluster_size,
            }
        } else {
            Event::ElectionLost {
                term: self.term,
                votes,
                refusals,
                cluster_size,
            }
        });
    }

    fn check_votes(&mut self, now: Duration) {
        match self.votes.tally(self.peers.voters()) {
            VoteResult::Pending => {}
            VoteResult::Won if self.role == Role::PreCandidate => {
                self.events.push(Event::PreVoteWon {
                    term: self.term + 1,
                    votes: self.votes.granted.len(),
                    cluster_size: self.peers.voters().len(),
                });
                self.start_election(now, false);
            }
            VoteResult::Won => self.become_leader(now),
            VoteResult::Lost => {
                self.push_round_lost();
                if self.role == Role::PreCandidate {
                    // Thesis §9.6: it stays a follower in its term; its
                    // timer (reset when it asked) fires again later.
                    self.set_role(Role::Follower, now);
                }
                // A candidate stays one until its timer fires, as it may
                // still hear of a leader of its term.
            }
        }
    }

    pub(super) fn become_leader(&mut self, now: Duration) {
        self.events.push(Event::ElectionWon {
            term: self.term,
            votes: self.votes.granted.len(),
            cluster_size: self.peers.voters().len(),
        });
        self.leader_id = Some(self.cfg.id);
        // Figure 2, Leaders: nextIndex = leader last log index + 1,
        // matchIndex = 0, and a heartbeat due at once (`Progress::new`).
        self.set_role(Role::Leader, now);
        // CheckQuorum counts from here: every peer just took part in the
        // election or is about to hear of it.
        for p in self.peers.values_mut() {
            p.last_heard = now;
        }
        // §5.4.2 and thesis §6.4: a leader commits entries of earlier terms
        // only by committing one of its own, so it adds a no-op at once.
        self.append_local(super::Payload::Noop);
        self.advance_commit();
    }

    /// Why a vote would depose a live leader, if it would: we heard from
    /// the leader less than a minimum election timeout ago, or we are the
    /// leader (CheckQuorum ends our leadership when majority contact
    /// ends). That is the lease.
    fn lease(&self, now: Duration) -> Option<VoteRefusal> {
        if self.role == Role::Leader {
            return Some(VoteRefusal::Leading);
        }
        let Some(leader) = self.leader_id else {
            let just_started = now < self.started + self.cfg.election_timeout_min;
            return (self.cfg.lease_reads && just_started).then_some(VoteRefusal::JustStarted);
        };
        let heard_ago = now.saturating_sub(self.leader_contact);
        (heard_ago < self.cfg.election_timeout_min)
            .then_some(VoteRefusal::LeaderLease { leader, heard_ago })
    }

    /// RequestVote, real or pre-vote (Figure 2 receiver rules, thesis
    /// §9.6). The answer to a pre-vote changes nothing here.
    pub(super) fn handle_request_vote(
        &mut self,
        req: RequestVote,
        now: Duration,
    ) -> RequestVoteReply {
        if req.pre_vote {
            return self.handle_pre_vote(req, now);
        }
        // The lease: a live leader we heard from keeps our vote, and our
        // term, unless it handed over to this candidate itself.
        let lease = self
            .lease(now)
            .filter(|_| self.cfg.check_quorum && !req.transfer && req.term > self.term);
        let refusal = if lease.is_some() {
            lease
        } else {
            if req.term > self.term {
                self.adopt_term(req.term, req.candidate_id, now);
            }
            if req.term < self.term {
                Some(VoteRefusal::StaleTerm)
            } else if let Some(other) = self.voted_for.filter(|&v| v != req.candidate_id) {
                Some(VoteRefusal::AlreadyVoted(other))
            } else {
                self.repair_refusal(req.last_log_term, req.last_log_index)
                    .or_else(|| self.log_refusal(&req))
            }
        };
        let granted = refusal.is_none();
        if granted {
            if self.voted_for.is_none() {
                self.voted_for = Some(req.candidate_id);
                self.hard_state_dirty = true;
            }
            // Figure 2, Followers rule 2: granting a vote resets the timer.
            self.reset_election_timer(now);
        }
        self.report_vote(&req, refusal);
        RequestVoteReply {
            term: self.term,
            vote_granted: granted,
            pre_vote: false,
        }
    }

    /// Thesis §9.6: would we vote for this candidate in `req.term`? Yes if
    /// no leader we heard from recently is alive, the term is one we could
    /// still vote in, and its log is up to date. Nothing changes here:
    /// not our term, not our vote, not our timer.
    fn handle_pre_vote(&mut self, req: RequestVote, now: Duration) -> RequestVoteReply {
        let refusal = if let Some(lease) = self.lease(now) {
            Some(lease)
        } else if req.term < self.term {
            Some(VoteRefusal::StaleTerm)
        } else if let Some(other) = self
            .voted_for
            .filter(|&v| req.term == self.term && v != req.candidate_id)
        {
            Some(VoteRefusal::AlreadyVoted(other))
        } else {
            self.repair_refusal(req.last_log_term, req.last_log_index)
                .or_else(|| self.log_refusal(&req))
        };
        let granted = refusal.is_none();
        self.report_vote(&req, refusal);
        RequestVoteReply {
            // A grant names the term asked about, which the candidate
            // must not adopt; a refusal names ours, which it may need.
            term: if granted { req.term } else { self.term },
            vote_granted: granted,
            pre_vote: true,
        }
    }

    /// §5.4.1: a vote only for a log at least as up to date as ours.
    fn log_refusal(&self, req: &RequestVote) -> Option<VoteRefusal> {
        (!self
            .log
            .is_up_to_date(req.last_log_index, req.last_log_term))
        .then(|| VoteRefusal::LogBehind {
            ours: (self.log.last_term(), self.log.last_index()),
            theirs: (req.last_log_term, req.last_log_index),
        })
    }

    fn report_vote(&mut self, req: &RequestVote, refusal: Option<VoteRefusal>) {
        let (candidate, term, pre_vote) = (req.candidate_id, req.term, req.pre_vote);
        self.events.push(match refusal {
            None => Event::VoteGranted {
                candidate,
                term,
                pre_vote,
            },
            Some(reason) => Event::VoteRefused {
                candidate,
                term,
                pre_vote,
                reason,
            },
        });
    }

    /// A voter's answer. A granted pre-vote carries the term asked about,
    /// never to be adopted; anything else with a newer term is adopted
    /// (Figure 2, all servers) before it is counted.
    pub(super) fn handle_vote_reply(&mut self, peer: NodeId, r: RequestVoteReply, now: Duration) {
        if !(r.pre_vote && r.vote_granted) && r.term > self.term {
            self.adopt_term(r.term, peer, now);
            return;
        }
        // A vote is granted only in the candidate's own term, so a grant
        // of our term answers this election's request; a pre-vote grant
        // names the term we would take. A refusal of our term (or older,
        // for a pre-vote) may answer an older request; it only feeds the
        // "lost" report.
        let counts = match self.role {
            Role::Candidate => !r.pre_vote && r.term == self.term,
            Role::PreCandidate => r.pre_vote && (!r.vote_granted || r.term == self.term + 1),
            _ => false,
        };
        if counts {
            self.peer_answered(peer, now);
            self.votes.record(peer, r.vote_granted);
            self.check_votes(now);
        }
    }

    /// Thesis §6.4.1: a linearizable read at `now` without a heartbeat
    /// round, if lease reads are on and the lease holds (see the module
    /// docs): reading the state machine once it has applied `index` is
    /// linearizable until `expires` on this server's clock. `None`: use
    /// [`Raft::read_index`].
    pub fn lease_read(&self, now: Duration) -> Option<LeaseRead> {
        if !(self.cfg.lease_reads && self.cfg.check_quorum)
            || self.role != Role::Leader
            || self.transfer.is_some()
            // As for ReadIndex: until an entry of our term is committed,
            // our commit index may be behind the cluster's.
            || self.log.term_at(self.commit_index) != Some(self.term)
        {
            return None;
        }
        let start = if self.peers.sole_voter(self.cfg.id) {
            now // the only voter: nobody else can lead
        } else {
            // The latest read round a majority has answered began when
            // its first request was sent: every answer echoing it comes
            // from a request sent no earlier.
            self.reads.started(self.quorum_round())?
        };
        let drift = self.cfg.max_clock_drift;
        let expires = start
            + self
                .cfg
                .election_timeout_min
                .mul_f64((1.0 - drift) / (1.0 + drift));
        (now < expires).then_some(LeaseRead {
            index: self.commit_index,
            expires,
        })
    }

    /// CheckQuorum: when the leader will have gone a minimum election
    /// timeout without hearing from a majority (itself included), at the
    /// latest; `None` when it need not check (off, or alone).
    pub(super) fn quorum_deadline(&self) -> Option<Duration> {
        if !self.cfg.check_quorum || self.role != Role::Leader || self.peers.sole_voter(self.cfg.id)
        {
            return None;
        }
        // When a majority, ourselves included (heard from always), was
        // last all heard from.
        let majority_heard = self.peers.majority_heard();
        Some(majority_heard.saturating_add(self.cfg.election_timeout_min))
    }

    /// CheckQuorum's step-down, if it is due.
    pub(super) fn check_quorum(&mut self, now: Duration) {
        if self.quorum_deadline().is_none_or(|d| now < d) {
            return;
        }
        let window = self.cfg.election_timeout_min;
        let heard = self.peers.heard_within(now, window);
        self.events.push(Event::QuorumLost {
            term: self.term,
            heard,
            cluster_size: self.peers.voters().len(),
            window,
        });
        self.leader_id = None;
        self.set_role(Role::Follower, now);
        self.reset_election_timer(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_won_by_a_majority_and_lost_once_a_majority_refuses() {
        let five = Quorum::simple(0..5);
        let mut v = Votes::new(0);
        assert_eq!(v.tally(&five), VoteResult::Pending);
        v.record(1, true);
        assert_eq!(v.tally(&five), VoteResult::Pending);
        v.record(2, true);
        assert_eq!(v.tally(&five), VoteResult::Won);
        let mut v = Votes::new(0);
        v.record(1, false);
        v.record(2, false);
        assert_eq!(
            v.tally(&five),
            VoteResult::Pending,
            "two of five may still lose"
        );
        v.record(3, false);
        assert_eq!(v.tally(&five), VoteResult::Lost);
        // A repeated answer counts once.
        let mut v = Votes::new(0);
        v.record(1, false);
        v.record(1, false);
        assert_eq!(v.tally(&Quorum::simple(0..3)), VoteResult::Pending);
        assert_eq!(Votes::new(0).tally(&Quorum::simple([0])), VoteResult::Won);
    }
}
