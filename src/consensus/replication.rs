//! The leader's half of log replication, and every server's outgoing
//! requests: building the next request for a peer as its `Progress`
//! allows (Figure 2's AppendEntries, pipelined; Figure 13's chunks when
//! the entries it needs are compacted), knowing when one is next due, and
//! taking the peer's answer or its silence. (A candidate's RequestVote
//! goes out the same way; `election` decides what the votes mean.) The
//! receiving side, `handle_append_entries`, is in the module root.

use std::time::Duration;

use super::*;

impl Raft {
    /// A candidate's RequestVote, or a pre-candidate's question.
    fn vote_request(&self) -> Request {
        let pre_vote = self.role == Role::PreCandidate;
        Request::RequestVote(RequestVote {
            // A pre-vote asks about the term we would take.
            term: if pre_vote { self.term + 1 } else { self.term },
            candidate_id: self.cfg.id,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            transfer: !pre_vote && self.transfer_election,
        })
    }

    /// The next request to send to `peer`, if one may be sent now; call it
    /// until it returns `None`. A candidate sends one RequestVote per peer
    /// per term. A leader sends AppendEntries as the peer's [`Progress`]
    /// allows: one at a time while probing, back to back (pipelined) while
    /// replicating. Every request sent must end, for the core, in
    /// `handle_reply` or in `handle_failure`.
    pub fn poll_peer(&mut self, peer: NodeId, now: Duration) -> Option<Request> {
        let window = self.cfg.max_inflight_appends;
        let (term, id, commit, round) = (
            self.term,
            self.cfg.id,
            self.commit_index,
            self.reads.round(),
        );
        let last_index = self.log.last_index();
        if self.timeout_now_due(peer) && now >= self.peers[&peer].retry_at {
            return Some(self.send_timeout_now(peer));
        }
        let p = self.peers.get_mut(&peer)?;
        if now < p.retry_at {
            return None;
        }
        match self.role {
            Role::Follower => None,
            Role::PreCandidate | Role::Candidate => {
                if p.vote_requested {
                    return None;
                }
                p.vote_requested = true;
                Some(self.vote_request())
            }
            Role::Leader => {
                let pr = &mut p.progress;
                // The entries this follower needs next are compacted:
                // send the snapshot instead (the current one; a transfer
                // in progress goes on with its own, see SnapshotTransfer).
                if self.log.is_compacted(pr.next_index - 1) && pr.snapshot.is_none() {
                    pr.send_snapshot(self.snapshot, now);
                    self.events.push(Event::SnapshotSendStarted {
                        peer,
                        index: self.snapshot.last_index,
                        size: self.snapshot.size,
                    });
                }
                if let Some(t) = pr.snapshot.filter(|_| pr.chunk_due()) {
                    pr.chunk_sent();
                    pr.heartbeat_due = now + self.cfg.heartbeat_interval;
                    return Some(Request::InstallSnapshot(InstallSnapshot {
                        term,
                        leader_id: id,
                        snapshot: t.snapshot,
                        offset: t.offset,
                        data: String::new(),
                        membership: Some(Box::new(self.configs.at(t.snapshot.last_index).clone())),
                    }));
                }
                let batch = match pr.state {
                    ProgressState::Snapshot => Batch::Empty,
                    _ => self.log.batch_from(pr.next_index, &self.cfg),
                };
                let (with_entries, at) = next_append(pr, window, batch, commit, round)?;
                if now < at {
                    return None;
                }
                // During a transfer, heartbeats name the snapshot's last
                // entry, the earliest whose term we still know.
                let prev_log_index = match pr.state {
                    ProgressState::Snapshot => self.log.base_index(),
                    _ => pr.next_index - 1,
                };
                let entries = if with_entries {
                    let last =
                        (prev_log_index + self.cfg.max_entries_per_append as Index).min(last_index);
                    self.log
                        .slice_bounded(prev_log_index + 1, last, self.cfg.max_bytes_per_append)
                        .to_vec()
                } else {
                    Vec::new()
                };
                pr.sent(prev_log_index + entries.len() as Index, round);
                self.reads.sent(round, now);
                pr.sent_commit = commit;
                pr.heartbeat_due = now + self.cfg.heartbeat_interval;
                Some(Request::AppendEntries(AppendEntries {
                    term,
                    leader_id: id,
                    prev_log_index,
                    prev_log_term: self
                        .log
                        .term_at(prev_log_index)
                        .expect("next_index <= last + 1"),
                    entries,
                    leader_commit: commit,
                    read_round: round,
                }))
            }
        }
    }

    /// When `poll_peer(peer)` may next return a request; `None` when only
    /// another input (a reply, a role change, a proposal) can change that.
    pub fn peer_wakeup(&self, peer: NodeId) -> Option<Duration> {
        let p = self.peers.get(&peer)?;
        match self.role {
            Role::Follower => None,
            Role::PreCandidate | Role::Candidate => (!p.vote_requested).then_some(p.retry_at),
            Role::Leader if self.timeout_now_due(peer) => Some(p.retry_at),
            Role::Leader => {
                let pr = &p.progress;
                let starts_transfer =
                    self.log.is_compacted(pr.next_index - 1) && pr.snapshot.is_none();
                if starts_transfer || pr.chunk_due() {
                    return Some(p.retry_at);
                }
                let batch = match pr.state {
                    ProgressState::Snapshot => Batch::Empty,
                    _ => self.log.batch_from(pr.next_index, &self.cfg),
                };
                next_append(
                    pr,
                    self.cfg.max_inflight_appends,
                    batch,
                    self.commit_index,
                    self.reads.round(),
                )
                .map(|(_, at)| at.max(p.retry_at))
            }
        }
    }

    /// The earliest time any timer or peer needs attention; for drivers
    /// that poll everything (the simulation).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.peers
            .keys()
            .filter_map(|&p| self.peer_wakeup(p))
            .chain(self.tick_deadline())
            .min()
    }

    /// Reports a reply from `peer`. Replies say what they answer, so they
    /// may arrive in any order, late or twice: one to a request of an
    /// earlier term, or of a role we no longer have, is dropped (after
    /// adopting a newer term it carries). A reply that breaks the protocol
    /// counts as a failed RPC (the peer is retried after a backoff) and is
    /// returned as the error, for the caller to log.
    pub fn handle_reply(
        &mut self,
        peer: NodeId,
        reply: Reply,
        now: Duration,
    ) -> Result<(), Rejection> {
        if !self.peers.contains_key(&peer) {
            return Ok(());
        }
        let checked = match &reply {
            Reply::AppendEntries(r) => self.check_append_reply(peer, r),
            Reply::RequestVote(r) => validate::check_term(r.term),
            Reply::InstallSnapshot(r) => self.check_snapshot_reply(peer, r),
            Reply::TimeoutNow(r) => self.check_timeout_now_reply(r),
        };
        if let Err(rejection) = checked {
            self.handle_failure(peer, now);
            return Err(rejection);
        }
        if let Reply::RequestVote(r) = reply {
            // (A granted pre-vote names a term not to adopt.)
            self.handle_vote_reply(peer, r, now);
            return Ok(());
        }
        if reply.term() > self.term {
            self.adopt_term(reply.term(), peer, now);
            return Ok(());
        }
        match reply {
            // Only a leader of `request_term` sent it; if that is us now,
            // the answer is about this leadership.
            Reply::AppendEntries(r) if self.role == Role::Leader && r.request_term == self.term => {
                self.peer_answered(peer, now);
                let hint = if r.success {
                    0
                } else {
                    match r.conflict_term {
                        Some(t) => match self.log.last_index_of_term(t) {
                            Some(last_of_term) => last_of_term + 1,
                            None => r.conflict_index,
                        },
                        None => r.conflict_index,
                    }
                };
                let pr = &mut self.peers.get_mut(&peer).expect("checked above").progress;
                // Any answer in our term, success or not, shows the peer
                // still took us for leader when it answered.
                pr.answered_round(r.read_round);
                if r.success {
                    if pr.acknowledged(r.match_index) {
                        self.advance_commit();
                    }
                } else {
                    // Figure 2: decrement nextIndex and retry; with the
                    // follower's hint we skip a whole term at a time.
                    if let progress::Refusal::Lost { from, to } =
                        pr.rejected(r.prev_log_index, hint)
                    {
                        self.events
                            .push(Event::FollowerLostEntries { peer, from, to });
                    }
                }
                self.confirm_reads();
            }
            Reply::InstallSnapshot(r)
                if self.role == Role::Leader && r.request_term == self.term =>
            {
                self.peer_answered(peer, now);
                let pr = &mut self.peers.get_mut(&peer).expect("checked above").progress;
                if r.checksum_failed {
                    self.events.push(Event::SnapshotRefused {
                        peer,
                        index: r.last_index,
                    });
                }
                if let Some(t) = pr.chunk_answered(r.last_index, r.next_offset, r.done) {
                    self.events.push(Event::SnapshotSent {
                        peer,
                        index: t.snapshot.last_index,
                        size: t.snapshot.size,
                        elapsed: now.saturating_sub(t.started),
                    });
                }
            }
            Reply::TimeoutNow(r) if self.role == Role::Leader && r.request_term == self.term => {
                // It stands now; its RequestVote ends our term.
                self.peer_answered(peer, now);
            }
            _ => {} // from an earlier term or role
        }
        Ok(())
    }

    /// The peer answered: it is reachable, and backoff ends.
    pub(super) fn peer_answered(&mut self, peer: NodeId, now: Duration) {
        let p = self.peers.get_mut(&peer).expect("a peer");
        p.backoff = Duration::ZERO;
        p.retry_at = now;
        p.last_heard = now;
        if !p.reachable {
            p.reachable = true;
            self.events.push(Event::PeerReachable { peer });
        }
    }

    /// Reports that requests to `peer` got no reply (a timeout, a refused
    /// connection, a broken pipe): everything in flight to it is taken as
    /// lost. The peer is retried after a backoff.
    pub fn handle_failure(&mut self, peer: NodeId, now: Duration) {
        let max_backoff = self.cfg.max_backoff();
        let heartbeat = self.cfg.heartbeat_interval;
        let role = self.role;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        match role {
            Role::Leader => p.progress.failed(),
            Role::PreCandidate | Role::Candidate => p.vote_requested = false, // ask again
            Role::Follower => {}
        }
        p.backoff = if p.backoff.is_zero() {
            heartbeat
        } else {
            (p.backoff * 2).min(max_backoff)
        };
        p.retry_at = now + p.backoff;
        if p.reachable {
            p.reachable = false;
            self.events.push(Event::PeerUnreachable { peer });
        }
        if role == Role::Leader {
            self.timeout_now_failed(peer);
        }
    }
}

/// Leader: the next AppendEntries `pr` allows, as (whether it carries
/// entries, when it is due), where `batch` is what entries it could
/// carry; `None` while it must wait for an answer. Entries go as soon as
/// `pr` lets them (`Progress::can_send`); news without entries goes at
/// once: a read round the peer has not answered (in the window's spare
/// slot if need be), or a commit index it has not been told (once nothing
/// is in flight); otherwise a heartbeat when due. `poll_peer` and `peer_wakeup` share this, so that
/// a driver woken at the time given here finds the request there.
fn next_append(
    pr: &Progress,
    window: usize,
    batch: Batch,
    commit: Index,
    round: u64,
) -> Option<(bool, Duration)> {
    let with_entries = batch != Batch::Empty && pr.can_send(window, batch);
    if !pr.can_send(window, Batch::Empty) {
        return None; // wait for an answer
    }
    // A new commit index alone waits for the pipe to empty: a request in
    // flight is answered soon, and what follows it carries the news.
    let news =
        with_entries || pr.round_due(round) || (pr.sent_commit < commit && pr.in_flight() == 0);
    Some((
        with_entries,
        if news {
            Duration::ZERO
        } else {
            pr.heartbeat_due
        },
    ))
}
