//! The log writer: proposes the writes clients queued, in batches, and on
//! the leader syncs the log with the node's lock released.
//!
//! A client's write does not take the node's lock on its own: its
//! connection's thread queues it ([`Proposals`]) and waits for its answer,
//! which whoever applies the entry sends (`Waiters`). The log
//! writer takes the lock once for everything queued, proposes it all,
//! writes the entries with one write, and wakes the replicators once; then
//! it syncs (thesis §10.2.1: the entries are already on their way to the
//! followers), and reports what is durable (`Raft::persisted`). Writes
//! queued while it syncs go out together after it. Issue 24's profile
//! found a write handed between four threads, each wake-up a context
//! switch, with waiting threads spinning before they slept (two
//! `sched_yield` per write, in crossbeam's channel receivers: see
//! `oneshot`); a batch now costs one lock, one file write and one round
//! of wake-ups, however many writes it holds.

use super::*;
use crate::oneshot;

/// A client's write, queued for the log writer.
pub(super) struct Proposal {
    pub(super) command: Command,
    /// Where its answer goes; the connection's thread waits on the other
    /// end (at most `WAIT_TIMEOUT`). Dropped unanswered only when the node
    /// stops.
    pub(super) answer: oneshot::Sender<Response>,
}

/// Writes queued by connection threads, under a lock of its own (never
/// held with anything else taken after it).
#[derive(Default)]
pub(super) struct Proposals(Mutex<Queue>);

#[derive(Default)]
struct Queue {
    writes: Vec<Proposal>,
    /// The log writer found nothing to do and waits on `log_written` (set
    /// under this lock, so a write queued after it sees it).
    writer_waits: bool,
    /// The log writer has ended (the node stops): nothing more is queued.
    closed: bool,
}

impl Proposals {
    /// Queues a write; true if the log writer must be woken for it.
    fn push(&self, proposal: Proposal) -> bool {
        let mut q = self.0.lock();
        if q.closed {
            // Dropped: its connection answers `shutting_down`.
            return false;
        }
        q.writes.push(proposal);
        std::mem::take(&mut q.writer_waits)
    }

    /// Ends the queue: what it holds is dropped (answered
    /// `shutting_down`), and so is anything queued later.
    fn close(&self) {
        let mut q = self.0.lock();
        q.closed = true;
        q.writes.clear();
    }

    fn take(&self) -> Vec<Proposal> {
        let mut q = self.0.lock();
        q.writer_waits = false;
        std::mem::take(&mut q.writes)
    }

    /// If nothing is queued, notes that the log writer is about to wait
    /// (it holds the node's lock until it does).
    fn wait_if_empty(&self) -> bool {
        let mut q = self.0.lock();
        q.writer_waits = q.writes.is_empty();
        q.writer_waits
    }
}

impl Shared {
    /// Queues a client's write for the log writer, on the caller's
    /// (connection's) thread, without the node's lock unless the log
    /// writer sleeps. Its answer comes on `answer`.
    pub(super) fn submit_write(&self, command: Command, answer: oneshot::Sender<Response>) {
        if !self.proposals.push(Proposal { command, answer }) {
            return;
        }
        // The log writer checked the queue and went to wait while holding
        // the node's lock, so with the lock held here it is waiting
        // already: this wake-up cannot be lost.
        let _st = self.state.lock();
        self.log_written.notify_one();
    }

    /// The log writer: proposes what is queued, then, on the leader, syncs
    /// what has been written with the lock released and tells the core,
    /// which may then count the leader toward committing those entries
    /// (thesis §10.2.1). Writes keep being queued meanwhile; the next
    /// round takes them all (group commit).
    pub(super) fn run_log_writer(&self) {
        let mut st = self.state.lock();
        while !st.stopping {
            let batch = self.proposals.take();
            self.propose(&mut st, batch);
            if st.raft.role() == Role::Leader && st.storage.needs_sync() {
                self.sync_log(&mut st);
            } else if self.proposals.wait_if_empty() {
                self.log_written.wait(&mut st);
            }
        }
        // Writes still queued are dropped: their waiters answer
        // `shutting_down`.
        self.proposals.close();
    }

    /// Proposes a batch of writes: one step of the core each, then one
    /// `process_ready`, so one log write and one round of wake-ups.
    fn propose(&self, st: &mut State, batch: Vec<Proposal>) {
        if batch.is_empty() {
            return;
        }
        {
            // The store's lock for the session checks only, released
            // before `process_ready` (which may take it).
            let kv = self.kv.lock();
            for Proposal { command, answer } in batch {
                match st.clients.write(&mut st.raft, &kv, command) {
                    Step::Answer(response) => {
                        answer.send(response);
                    }
                    Step::Wait(ticket) => st.waiters.write_proposed(ticket, answer),
                }
            }
        }
        self.process_ready(st);
    }

    fn sync_log(&self, st: &mut MutexGuard<State>) {
        // The segment being appended to now (full ones were synced when
        // the next began). Everything in the in-memory log is written:
        // every input is followed by `process_ready` before the lock is
        // released.
        let syncer = st.storage.log_syncer();
        let count = st.storage.written();
        let point = durability::sync_point(&st.raft);
        if let Err(e) = MutexGuard::unlocked(st, || syncer.sync()) {
            self.storage_failed(st, &e);
        }
        if let Err(e) = st.storage.synced_through(count) {
            self.storage_failed(st, &e);
        }
        durability::log_synced(&mut st.raft, point);
        // The sync may commit entries: applied here, at once.
        st.apply_here = true;
        self.process_ready(st);
        self.apply_here(st);
    }
}
