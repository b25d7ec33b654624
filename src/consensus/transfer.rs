//! Leadership transfer (thesis §3.10).
//!
//! The leader hands its office to another server instead of leaving the
//! cluster to notice its absence (a clean stop, a rolling restart, or an
//! operator's `raftctl transfer`):
//!
//! 1. it stops taking new proposals, so that the target can catch up
//!    with a log that no longer grows;
//! 2. it replicates to the target as usual until the target holds its
//!    whole log (`match_index` = last index);
//! 3. it sends the target **TimeoutNow**; the target starts an election at
//!    once, without a pre-vote, and with `transfer` set in its RequestVote
//!    so that voters answer it despite their lease. Its log is as up to
//!    date as anyone's, so it wins unless it fails meanwhile.
//!
//! The old leader learns of the new term from the target's RequestVote
//! and steps down; that ends the transfer. If the new term has not come
//! within an election timeout (the target died, or is cut off), the
//! transfer is abandoned and the leader takes proposals again.

use std::time::Duration;

use super::message::{NodeId, Request, TimeoutNow, TimeoutNowReply};
use super::validate::Rejection;
use super::{Event, Raft, Role};

/// A transfer in progress, on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub target: NodeId,
    pub started: Duration,
    /// Abandoned if still in progress then.
    pub deadline: Duration,
    /// TimeoutNow has gone to the target (and not failed).
    pub(super) timeout_now_sent: bool,
}

/// Why a transfer could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can transfer its leadership.
    #[error("not the leader")]
    NotLeader { leader_hint: Option<NodeId> },
    /// A cluster of one has nobody to transfer to.
    #[error("a cluster of one has nobody to hand over to")]
    NoPeers,
    /// The target is not a member.
    #[error("node{0} is not a member")]
    UnknownTarget(NodeId),
    /// The target is this server, which leads already.
    #[error("that node leads already")]
    AlreadyLeader,
    /// A transfer to another server is in progress.
    #[error("a transfer to node{target} is in progress")]
    InProgress { target: NodeId },
    /// The target does not vote (a learner, or a voter being removed):
    /// it could not win an election.
    #[error("node{0} does not vote in the new configuration")]
    NotAVoter(NodeId),
}

impl Raft {
    /// Starts handing leadership to `to`, or to the most up-to-date peer
    /// (one that answers, if any does); returns the target. Proposals are
    /// refused until the transfer ends (see the module docs). Asking again
    /// for the same target while it is in progress changes nothing.
    pub fn transfer_leadership(
        &mut self,
        to: Option<NodeId>,
        now: Duration,
    ) -> Result<NodeId, TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        let target = match to {
            Some(id) if id == self.cfg.id => return Err(TransferError::AlreadyLeader),
            Some(id) if !self.peers.contains_key(&id) => {
                return Err(TransferError::UnknownTarget(id));
            }
            Some(id) if !self.stays_voter(id) => return Err(TransferError::NotAVoter(id)),
            Some(id) => id,
            None => self
                .peers
                .iter()
                .filter(|(id, _)| self.stays_voter(**id))
                .max_by_key(|(id, p)| {
                    (p.reachable, p.progress.match_index, std::cmp::Reverse(**id))
                })
                .map(|(id, _)| *id)
                .ok_or(TransferError::NoPeers)?,
        };
        if let Some(t) = self.transfer {
            return if t.target == target {
                Ok(target)
            } else {
                Err(TransferError::InProgress { target: t.target })
            };
        }
        let progress = &self.peers[&target].progress;
        self.events.push(Event::TransferStarted {
            target,
            match_index: progress.match_index,
            last_index: self.log.last_index(),
        });
        self.transfer = Some(Transfer {
            target,
            started: now,
            deadline: now + self.cfg.election_timeout_max,
            timeout_now_sent: false,
        });
        Ok(target)
    }

    /// The transfer in progress, if any (leader only).
    pub fn transfer(&self) -> Option<Transfer> {
        self.transfer
    }

    /// Leader: TimeoutNow for `peer`, if it is the transfer's target, holds
    /// our whole log, and has not been sent one yet.
    pub(super) fn timeout_now_due(&self, peer: NodeId) -> bool {
        self.transfer.is_some_and(|t| {
            t.target == peer
                && !t.timeout_now_sent
                && self.peers[&peer].progress.match_index == self.log.last_index()
        })
    }

    pub(super) fn send_timeout_now(&mut self, peer: NodeId) -> Request {
        let t = self.transfer.as_mut().expect("checked by timeout_now_due");
        t.timeout_now_sent = true;
        self.events.push(Event::TimeoutNowSent { target: peer });
        Request::TimeoutNow(TimeoutNow {
            term: self.term,
            leader_id: self.cfg.id,
        })
    }

    /// The TimeoutNow to `peer` may not have arrived: send it again once
    /// the peer answers (its requests are retried after a backoff).
    pub(super) fn timeout_now_failed(&mut self, peer: NodeId) {
        if let Some(t) = self.transfer.as_mut().filter(|t| t.target == peer) {
            t.timeout_now_sent = false;
        }
    }

    /// Ends a transfer that has run out of time, or whose leader is
    /// stepping down for another reason (`why`).
    pub(super) fn abandon_transfer(&mut self, now: Duration, why: &'static str) {
        if let Some(t) = self.transfer.take() {
            self.events.push(Event::TransferAbandoned {
                target: t.target,
                elapsed: now.saturating_sub(t.started),
                why,
            });
        }
    }

    /// The leader's term ends because `from` started term `term`: if that
    /// is the transfer's target, the transfer did its job.
    pub(super) fn transfer_handed_off(&mut self, from: NodeId, term: u64, now: Duration) {
        match self.transfer {
            Some(t) if t.target == from => {
                self.transfer = None;
                self.events.push(Event::TransferHandedOff {
                    target: from,
                    term,
                    elapsed: now.saturating_sub(t.started),
                });
            }
            Some(_) => self.abandon_transfer(now, "another server started a newer term"),
            None => {}
        }
    }

    /// TimeoutNow from the leader of `req.term`: start an election now.
    /// One from an older term is answered and ignored; one claiming a term
    /// whose leader we know to be another is refused (election safety).
    pub(super) fn handle_timeout_now(
        &mut self,
        from: NodeId,
        req: TimeoutNow,
        now: Duration,
    ) -> Result<TimeoutNowReply, Rejection> {
        let mut reply = TimeoutNowReply {
            term: self.term,
            request_term: req.term,
            started: false,
        };
        if req.term < self.term {
            return Ok(reply);
        }
        self.check_leader_claim(from, req.term)?;
        self.follow(from, req.term, now);
        if self.repairing().is_some() || !self.may_stand() {
            // We could not win with a log that lost entries, nor without
            // a vote; the leader's transfer times out and it goes on
            // leading.
            reply.term = self.term;
            return Ok(reply);
        }
        self.events.push(Event::TimeoutNowReceived { from });
        self.start_election(now, true);
        reply.term = self.term;
        reply.started = true;
        Ok(reply)
    }
}
