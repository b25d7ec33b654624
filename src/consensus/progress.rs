//! What a leader knows about replicating its log to one follower.
//!
//! Figure 2 gives a leader two numbers per follower, `nextIndex` and
//! `matchIndex`. Sending one AppendEntries at a time and waiting for its
//! answer (stop-and-wait) is enough for correctness, but then every batch
//! waits a full round trip, including the follower's fsync. A
//! [`Progress`] lets a leader keep several AppendEntries in flight to a
//! follower whose position it knows, and only one to a follower whose
//! position it is still looking for. The split follows etcd-io/raft's
//! `tracker` package (and tikv/raft-rs's `tracker` module):
//!
//! * **Probe**: the follower's log position is unknown (a new leader, a
//!   rejected append, a lost connection). One request at a time; each
//!   rejection moves `next_index` back using the follower's hint (§5.3).
//! * **Replicate**: the last answer was a success, so the follower holds
//!   our log up to `match_index`. Requests are sent back to back, each
//!   starting where the previous one ended (`next_index` advances when a
//!   request is *sent*, optimistically), up to `window` unanswered. A
//!   rejection means something was lost on the way: back to Probe.
//!
//! Only **full** batches are pipelined (see [`Batch`]): a batch that
//! would take everything unsent waits until nothing is in flight, so that
//! while an answer is awaited, new proposals gather into one batch. Each
//! AppendEntries costs the follower an fsync before it answers; sending
//! every proposal the moment it arrives would turn a steady trickle of
//! small writes into one fsync per write on every follower (measured
//! here: 20 % fewer writes per second at 64 clients than batching per
//! round trip). The window opens when a whole batch is waiting: catching
//! a follower up, or large entries.
//!
//! * **Snapshot**: the entries the follower lacks are gone from the
//!   leader's log, compacted into a snapshot (§7). The leader sends the
//!   snapshot with InstallSnapshot, one chunk at a time (so what it has
//!   outstanding per follower is one chunk), resuming from the offset the
//!   follower reports, and keeps sending heartbeats meanwhile so that the
//!   follower's election timer never fires during a long transfer. Once
//!   the follower has installed it, the follower holds everything up to
//!   the snapshot's last index: back to Probe from just after it.
//!
//! Replies are matched to nothing: each one says what it answers (see
//! `AppendEntriesReply`), and every request ends in exactly one reply or
//! in a failure reported for the whole connection, so the window counts
//! requests, not indices. A reply that arrives late, after a newer one or
//! after a state change, is recognised as stale by what it carries and
//! changes nothing but the count.

use std::time::Duration;

use super::message::{Index, SnapshotMeta};

/// What the next AppendEntries would carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// No entries: a heartbeat, a new commit index or a read round.
    Empty,
    /// Everything unsent, which is less than a batch's limit.
    Partial,
    /// A batch filled to its limit, with more waiting behind it.
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// A snapshot on its way to a follower (state Snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    /// The snapshot being sent. It stays the one sent until the follower
    /// has it, even if the leader takes a newer one meanwhile: restarting
    /// with each newer snapshot would never finish when snapshots come
    /// faster than a transfer (a small threshold, a large state).
    pub snapshot: SnapshotMeta,
    /// How many of its bytes the follower holds, as it last said: the next
    /// chunk starts here.
    pub offset: u64,
    /// A chunk is on its way; the next waits for its answer.
    pub chunk_in_flight: bool,
    /// When the transfer started, for the activity log.
    pub started: Duration,
}

/// What a rejected AppendEntries meant; see [`Progress::rejected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An old answer, overtaken by newer ones: nothing changes.
    Stale,
    /// The follower lacks an entry we have not seen it acknowledge: probe
    /// further back (§5.3).
    Retry,
    /// The follower no longer holds entries `from..=to` that it had
    /// acknowledged (storage damage repaired at its restart).
    Lost { from: Index, to: Index },
}

/// A leader's view of one follower, for one term of leadership.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated on the follower (Figure 2).
    /// Decreases only when the follower shows it lost entries (see
    /// [`Progress::rejected`]).
    pub match_index: Index,
    /// Index of the next entry to send (Figure 2). In Replicate it runs
    /// ahead of what the follower has acknowledged.
    pub next_index: Index,
    pub state: ProgressState,
    /// Requests of this term sent and neither answered nor failed.
    in_flight: usize,
    /// The highest index any request of this term carried (or named as
    /// `prev_log_index`): no honest reply claims to match beyond it.
    pub sent_up_to: Index,
    /// The commit index carried by the last request sent. When ours moves
    /// past it the follower is told at once, not at the next heartbeat,
    /// so that followers apply (and serve stale reads of) new entries
    /// promptly.
    pub sent_commit: Index,
    /// When the next heartbeat is due.
    pub heartbeat_due: Duration,
    /// The highest read round the follower has answered in this term
    /// (thesis §6.4; see `Raft::read_index`).
    pub acked_round: u64,
    /// The highest read round carried by a request sent in this term.
    /// While it is above `acked_round` a round is on its way, and reads
    /// that arrive meanwhile wait to ride the next one together.
    pub sent_round: u64,
    /// The transfer in progress; `Some` exactly in state Snapshot.
    pub snapshot: Option<SnapshotTransfer>,
}

impl Progress {
    /// A follower of a leader just elected, whose last index is
    /// `last_index`: Figure 2 sets nextIndex to last + 1 and matchIndex to
    /// 0; its position is unknown, so it starts in Probe with a heartbeat
    /// due at once ("upon election: send initial empty AppendEntries").
    pub fn new(last_index: Index, now: Duration) -> Progress {
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Probe,
            in_flight: 0,
            sent_up_to: 0,
            sent_commit: 0,
            heartbeat_due: now,
            acked_round: 0,
            sent_round: 0,
            snapshot: None,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether a request carrying `batch` may be sent now. In Probe, only
    /// when nothing is outstanding. In Replicate, a full batch needs a free
    /// slot of the window, a partial one an empty pipe (see the module
    /// docs), and one without entries (a heartbeat, a new commit index, a
    /// read round) may take one slot more than the window, so that a
    /// follower's election timer and the leader's linearizable reads never
    /// wait for a window of appends to be answered.
    pub fn can_send(&self, window: usize, batch: Batch) -> bool {
        match (self.state, batch) {
            (ProgressState::Probe, _) => self.in_flight == 0,
            (ProgressState::Replicate, Batch::Full) => self.in_flight < window,
            (ProgressState::Replicate, Batch::Partial) => self.in_flight == 0,
            (ProgressState::Replicate, Batch::Empty) => self.in_flight <= window,
            // Entries would not connect to what the follower has; only
            // heartbeats, beside the one chunk.
            (ProgressState::Snapshot, Batch::Empty) => self.in_flight <= window,
            (ProgressState::Snapshot, _) => false,
        }
    }

    /// Starts sending `snapshot` from its first byte.
    pub fn send_snapshot(&mut self, snapshot: SnapshotMeta, now: Duration) {
        self.state = ProgressState::Snapshot;
        self.snapshot = Some(SnapshotTransfer {
            snapshot,
            offset: 0,
            chunk_in_flight: false,
            started: now,
        });
    }

    /// Drops the transfer in progress, if any: the follower's position is
    /// as before it began (Probe), and the next request it needs starts a
    /// transfer of whatever snapshot is current then.
    pub fn restart_snapshot(&mut self) {
        if self.snapshot.take().is_some() {
            self.state = ProgressState::Probe;
            self.next_index = self.match_index + 1;
        }
    }

    /// Whether the next chunk of the snapshot may be sent now.
    pub fn chunk_due(&self) -> bool {
        self.snapshot.is_some_and(|t| !t.chunk_in_flight)
    }

    /// Records a chunk sent.
    pub fn chunk_sent(&mut self) {
        self.in_flight += 1;
        if let Some(t) = self.snapshot.as_mut() {
            t.chunk_in_flight = true;
        }
    }

    /// An answer to a chunk of the snapshot ending at `last_index`: the
    /// follower holds `next_offset` bytes of it, or (`done`) has its
    /// entries up to `last_index` (installed, or committed already).
    /// Returns the finished transfer when this ends the one in progress.
    pub fn chunk_answered(
        &mut self,
        last_index: Index,
        next_offset: u64,
        done: bool,
    ) -> Option<SnapshotTransfer> {
        self.answered();
        if done {
            self.sent_up_to = self.sent_up_to.max(last_index);
            self.match_index = self.match_index.max(last_index);
            self.next_index = self.next_index.max(self.match_index + 1);
        }
        let t = self.snapshot.as_mut()?;
        if t.snapshot.last_index != last_index {
            return None; // about an earlier transfer to this follower
        }
        t.chunk_in_flight = false;
        if !done {
            t.offset = next_offset;
            return None;
        }
        let finished = *t;
        // The follower's position is known, but an AppendEntries has yet
        // to confirm it: probe from just after the snapshot.
        self.snapshot = None;
        self.state = ProgressState::Probe;
        Some(finished)
    }

    /// Records a request sent with `prev_log_index` and entries up to
    /// `last` (equal for a heartbeat), carrying read round `round`.
    pub fn sent(&mut self, last: Index, round: u64) {
        self.in_flight += 1;
        self.sent_round = self.sent_round.max(round);
        self.sent_up_to = self.sent_up_to.max(last);
        if self.state == ProgressState::Replicate {
            self.next_index = self.next_index.max(last + 1);
        }
    }

    fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A success: the follower's log matches ours through `index`.
    /// Returns whether `match_index` moved. Replies may arrive late or
    /// twice; `match_index` never moves back.
    pub fn acknowledged(&mut self, index: Index) -> bool {
        self.answered();
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(self.match_index + 1);
        match self.snapshot {
            // The follower got there another way (an append sent before
            // the transfer began): the snapshot is no longer needed.
            Some(t) if self.match_index >= t.snapshot.last_index => {
                self.snapshot = None;
                self.state = ProgressState::Replicate;
            }
            Some(_) => {}
            // Found: from here on, send back to back.
            None => self.state = ProgressState::Replicate,
        }
        moved
    }

    /// A failed consistency check at `rejected` (the request's
    /// `prev_log_index`); `hint` is where the follower's log suggests
    /// trying next (at most `rejected`). A rejection that is stale is
    /// ignored: in Replicate one at or below `match_index` (an answer
    /// overtaken by a later success), and in Probe one for another
    /// position than the probe now outstanding.
    ///
    /// In Probe, the answer to the one outstanding probe is current even
    /// at or below `match_index`: the follower no longer holds entries it
    /// acknowledged. Within a term an honest follower never drops entries
    /// that match the leader's, but a disk can: a damaged log tail cut at
    /// restart (see `storage`). Figure 2 assumes stable storage and so
    /// never lowers matchIndex; counting entries the follower lost toward
    /// a commit could commit an entry held by less than a majority, and
    /// probing above what it holds would never end. So `match_index` drops
    /// to what the follower still holds, and the outcome says what it lost.
    /// (A follower that lost entries has restarted, which broke the
    /// leader's connection to it, and a failed connection puts it in
    /// Probe: see [`Progress::failed`].)
    pub fn rejected(&mut self, rejected: Index, hint: Index) -> Refusal {
        self.answered();
        let current = match self.state {
            ProgressState::Replicate => rejected > self.match_index,
            ProgressState::Probe => rejected + 1 == self.next_index,
            // Heartbeats during a transfer are refused as a rule.
            ProgressState::Snapshot => false,
        };
        if !current {
            return Refusal::Stale;
        }
        let hint = hint.min(rejected);
        let mut outcome = Refusal::Retry;
        if rejected <= self.match_index {
            // The follower lacks `rejected`, so it holds at most what is
            // below `hint`.
            let holds = hint.saturating_sub(1).min(rejected.saturating_sub(1));
            outcome = Refusal::Lost {
                from: holds + 1,
                to: self.match_index,
            };
            self.match_index = holds;
        }
        // Figure 2: decrement nextIndex and retry, here by as much as the
        // hint allows, never below what the follower has.
        self.next_index = hint.max(self.match_index + 1);
        self.state = ProgressState::Probe;
        outcome
    }

    /// Whether a request should go out now to carry read round `round`
    /// (thesis §6.4): the follower has not been sent it, and every round
    /// it was sent is answered. So one heartbeat confirms every read that
    /// arrived while the previous round was on its way, instead of one
    /// heartbeat per read filling the window.
    pub fn round_due(&self, round: u64) -> bool {
        self.sent_round < round && self.sent_round <= self.acked_round
    }

    /// Any answer, success or not, in our term. Rounds are checked by the
    /// caller (`read_round` at most ours).
    pub fn answered_round(&mut self, round: u64) {
        self.acked_round = self.acked_round.max(round);
    }

    /// The connection failed: whatever was in flight is lost. Replicating,
    /// `next_index` ran ahead on requests now lost: start again from what
    /// the follower is known to have. Probing, it did not move with the
    /// probe and stays the best guess (Figure 2 starts it at the leader's
    /// last index + 1, and only a refusal moves it back): going back to
    /// `match_index + 1`, which is 1 when nothing is known yet, would
    /// resend the whole log (or a snapshot) to a follower that was only
    /// down for a moment and may hold nearly all of it. etcd-io/raft's
    /// unreachable report likewise leaves a probing follower alone.
    pub fn failed(&mut self) {
        self.in_flight = 0;
        self.sent_round = self.acked_round;
        if let Some(t) = self.snapshot.as_mut() {
            // Resume the transfer from the offset last acknowledged.
            t.chunk_in_flight = false;
            return;
        }
        if self.state == ProgressState::Replicate {
            self.state = ProgressState::Probe;
            self.next_index = self.match_index + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicating(match_index: Index) -> Progress {
        let mut p = Progress::new(match_index, Duration::ZERO);
        p.sent(match_index, 0);
        assert!(p.acknowledged(match_index) || match_index == 0);
        assert_eq!(p.state, ProgressState::Replicate);
        p
    }

    #[test]
    fn one_read_round_at_a_time_so_reads_arriving_meanwhile_share_the_next() {
        let mut p = replicating(5);
        assert!(p.round_due(1));
        p.sent(5, 1);
        assert!(!p.round_due(1), "round 1 is on its way");
        assert!(!p.round_due(3), "rounds 2 and 3 wait for round 1's answer");
        p.answered_round(1);
        assert!(p.round_due(3));
        p.sent(5, 3);
        // A lost request loses its round: it is due again.
        p.failed();
        assert!(p.round_due(3));
    }

    #[test]
    fn probe_sends_one_request_at_a_time() {
        let mut p = Progress::new(10, Duration::ZERO);
        assert!(p.can_send(4, Batch::Full));
        p.sent(10, 0);
        assert!(!p.can_send(4, Batch::Full) && !p.can_send(4, Batch::Empty));
        assert_eq!(p.next_index, 11, "a probe does not move next_index");
    }

    #[test]
    fn replicate_sends_back_to_back_up_to_the_window_plus_one_heartbeat() {
        let mut p = replicating(5);
        for last in [7, 9, 11] {
            assert!(p.can_send(3, Batch::Full));
            p.sent(last, 0);
            assert_eq!(p.next_index, last + 1);
        }
        assert!(!p.can_send(3, Batch::Full), "the window is full");
        assert!(p.can_send(3, Batch::Empty), "a heartbeat may still go");
        p.sent(11, 0);
        assert!(!p.can_send(3, Batch::Empty));
        assert!(p.acknowledged(7));
        assert!(p.can_send(3, Batch::Empty) && !p.can_send(3, Batch::Full));
        assert_eq!((p.match_index, p.next_index), (7, 12));
    }

    #[test]
    fn a_partial_batch_waits_for_an_empty_pipe() {
        let mut p = replicating(5);
        assert!(p.can_send(4, Batch::Partial));
        p.sent(6, 0);
        assert!(
            !p.can_send(4, Batch::Partial),
            "gathers into the next batch"
        );
        assert!(p.can_send(4, Batch::Full) && p.can_send(4, Batch::Empty));
        p.acknowledged(6);
        assert!(p.can_send(4, Batch::Partial));
    }

    #[test]
    fn a_late_success_never_moves_match_back() {
        let mut p = replicating(5);
        p.sent(8, 0);
        p.sent(9, 0);
        assert!(p.acknowledged(9));
        assert!(!p.acknowledged(8));
        assert_eq!((p.match_index, p.next_index, p.in_flight()), (9, 10, 0));
    }

    #[test]
    fn a_rejection_in_replicate_falls_back_to_probe_and_later_ones_are_stale() {
        let mut p = replicating(5);
        p.sent(8, 0); // prev 5
        p.sent(10, 0); // prev 8
        assert_eq!(
            p.rejected(5 + 3, 6),
            Refusal::Retry,
            "prev 8 rejected: the follower lacks it"
        );
        assert_eq!((p.state, p.next_index), (ProgressState::Probe, 6));
        assert!(
            !p.can_send(4, Batch::Full),
            "wait until the other answer is in"
        );
        assert_eq!(
            p.rejected(8, 5),
            Refusal::Stale,
            "the other answer, not for the probe now due: stale"
        );
        assert_eq!(p.next_index, 6);
        assert!(p.can_send(4, Batch::Full));
    }

    #[test]
    fn in_probe_only_the_outstanding_position_counts() {
        let mut p = Progress::new(20, Duration::ZERO);
        p.sent(20, 0); // prev 20
        assert_eq!(p.rejected(20, 12), Refusal::Retry);
        assert_eq!(p.next_index, 12);
        p.sent(11, 0);
        assert_eq!(
            p.rejected(20, 3),
            Refusal::Stale,
            "an answer to the earlier probe"
        );
        assert_eq!(p.next_index, 12);
        assert_eq!(p.rejected(11, 3), Refusal::Retry);
        assert_eq!(p.next_index, 3);
    }

    #[test]
    fn a_rejection_never_moves_next_below_match() {
        let mut p = replicating(5);
        p.sent(9, 0);
        assert_eq!(p.rejected(7, 1), Refusal::Retry);
        assert_eq!(p.next_index, 6);
    }

    #[test]
    fn a_probe_refused_at_match_means_the_follower_lost_what_it_acknowledged() {
        // The follower acknowledged 101, then restarted with its log cut
        // back to 100 (a damaged tail). The connection broke meanwhile.
        let mut p = replicating(101);
        p.failed();
        assert_eq!((p.state, p.next_index), (ProgressState::Probe, 102));
        p.sent(101, 0); // a heartbeat with prev 101
        assert_eq!(p.rejected(101, 101), Refusal::Lost { from: 101, to: 101 });
        assert_eq!(
            (p.match_index, p.next_index),
            (100, 101),
            "no longer counted for 101; resend it"
        );
        p.sent(101, 0);
        assert!(p.acknowledged(101));
        assert_eq!(p.state, ProgressState::Replicate);
    }

    #[test]
    fn a_follower_that_lost_more_is_probed_from_its_hint() {
        let mut p = replicating(50);
        p.failed();
        p.sent(50, 0);
        assert_eq!(p.rejected(50, 31), Refusal::Lost { from: 31, to: 50 });
        assert_eq!((p.match_index, p.next_index), (30, 31));
    }

    #[test]
    fn a_failure_forgets_what_was_in_flight() {
        let mut p = replicating(5);
        p.sent(9, 0);
        p.sent(12, 0);
        p.failed();
        assert_eq!(
            (p.state, p.next_index, p.in_flight()),
            (ProgressState::Probe, 6, 0)
        );
        assert!(p.can_send(4, Batch::Full));
    }

    /// Issue 22: a follower down since the leader's election showed as
    /// `MATCH 0 NEXT 1`: each failed probe sent next_index back to
    /// match + 1, so when it returned the leader resent its whole log
    /// (or a snapshot) instead of probing from its own last index.
    #[test]
    fn a_failed_probe_keeps_next_index_where_figure_2_put_it() {
        let mut p = Progress::new(27, Duration::ZERO);
        p.sent(27, 0); // the first heartbeat, prev 27
        p.failed();
        assert_eq!(
            (p.state, p.match_index, p.next_index),
            (ProgressState::Probe, 0, 28)
        );
        // Back, with a log ending at 20: one refusal with its hint.
        p.sent(27, 0);
        assert_eq!(p.rejected(27, 21), Refusal::Retry);
        assert_eq!(p.next_index, 21);
        p.failed();
        assert_eq!(p.next_index, 21, "what a refusal taught is kept too");
    }
}
