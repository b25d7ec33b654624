//! The applier: takes committed entries off the queue under the node's
//! lock, applies them with the node's lock released (the key-value store
//! has a lock of its own, taken alone), then takes the node's lock again
//! to answer the writes and wake the reads waiting for them (`Waiters`).

use super::*;
use crate::oneshot;

/// Client requests waiting on this node. A proposed write is answered
/// here, by whoever learns its outcome (the applier, or a change that
/// ends it), through its channel: its connection's thread wakes once, to
/// send the answer, and never takes the node's lock. A read waits on a
/// condvar of its own, so that an apply wakes only the reads it answers;
/// it may be filed more than once or woken for nothing, and re-checks its
/// answer each time it wakes.
#[derive(Default)]
pub(super) struct Waiters {
    /// Writes proposed and not yet answered, by index.
    writes: BTreeMap<Index, Vec<(WriteTicket, oneshot::Sender<Response>)>>,
    /// Woken once the state machine has applied up to the key.
    until_applied: BTreeMap<Index, Vec<Arc<Condvar>>>,
    /// Woken when the core answers the read with this ctx.
    until_read: HashMap<u64, Arc<Condvar>>,
}

impl Waiters {
    pub(super) fn until_applied(&mut self, index: Index, waiter: &Arc<Condvar>) {
        self.until_applied
            .entry(index)
            .or_default()
            .push(waiter.clone());
    }

    pub(super) fn write_proposed(
        &mut self,
        ticket: WriteTicket,
        answer: oneshot::Sender<Response>,
    ) {
        self.writes
            .entry(ticket.index)
            .or_default()
            .push((ticket, answer));
    }

    /// Answers the writes up to `through` (all of them if `None`) that
    /// `outcome` has an answer for; the others keep waiting.
    pub(super) fn answer_writes(
        &mut self,
        through: Option<Index>,
        mut outcome: impl FnMut(&WriteTicket) -> Option<Response>,
    ) {
        let mut done = match through {
            Some(index) => {
                let later = self.writes.split_off(&(index + 1));
                std::mem::replace(&mut self.writes, later)
            }
            None => std::mem::take(&mut self.writes),
        };
        for (index, waiting) in std::mem::take(&mut done) {
            for (ticket, answer) in waiting {
                match outcome(&ticket) {
                    // Nobody reads it if the request timed out meanwhile.
                    Some(response) => answer.send(response),
                    None => self.writes.entry(index).or_default().push((ticket, answer)),
                }
            }
        }
    }

    /// The node stops: waiting writes are dropped unanswered, and their
    /// connections answer `shutting_down`.
    pub(super) fn drop_writes(&mut self) {
        self.writes.clear();
    }

    pub(super) fn until_read_answered(&mut self, ctx: u64, waiter: &Arc<Condvar>) {
        self.until_read.insert(ctx, waiter.clone());
    }

    /// The state machine has applied up to `index`.
    pub(super) fn applied(&mut self, index: Index) {
        let later = self.until_applied.split_off(&(index + 1));
        for waiter in std::mem::replace(&mut self.until_applied, later)
            .values()
            .flatten()
        {
            waiter.notify_one();
        }
    }

    pub(super) fn read_answered(&mut self, ctx: u64) {
        if let Some(waiter) = self.until_read.remove(&ctx) {
            waiter.notify_one();
        }
    }

    /// Something that can end any wait happened (a change of term or
    /// role, a truncated log).
    pub(super) fn wake_all(&mut self) {
        let by_index = std::mem::take(&mut self.until_applied);
        let by_read = std::mem::take(&mut self.until_read);
        for waiter in by_index.values().flatten().chain(by_read.values()) {
            waiter.notify_one();
        }
    }
}

impl Shared {
    pub(super) fn run_applier(&self) {
        let mut st = self.state.lock();
        loop {
            while (st.apply_queue.is_empty() || st.applying) && !st.stopping {
                self.committed.wait(&mut st);
            }
            if st.stopping {
                return;
            }
            self.apply_queued(&mut st);
        }
    }

    /// For a thread that has just stepped the core with `State::apply_here`
    /// set (so `process_ready` did not wake the applier): applies what is
    /// now committed itself, unless someone is applying already (they
    /// take it next) or a snapshot must be restored (the applier's job:
    /// it can take seconds). On the leader, the receiver whose reply
    /// commits entries, or the log writer whose sync does, applies them
    /// and answers their writes at once: the applier's wake-up and switch
    /// are spared on every write's path (issue 24).
    pub(super) fn apply_here(&self, st: &mut MutexGuard<State>) {
        st.apply_here = false;
        if st.applying || st.apply_queue.is_empty() || st.stopping {
            return;
        }
        if st
            .apply_queue
            .iter()
            .any(|item| matches!(item, Apply::Restore(_)))
        {
            self.committed.notify_one();
            return;
        }
        self.apply_queued(st);
    }

    /// Applies everything queued, in batches, with the node's lock
    /// released while the store applies (`State::applying` meanwhile, so
    /// that nobody else applies).
    fn apply_queued(&self, st: &mut MutexGuard<State>) {
        st.applying = true;
        while !st.apply_queue.is_empty() && !st.stopping {
            // The one ordered apply path: entries arrive in log order,
            // once each, and the store applies them (it asserts the
            // order). Only the thread that set `applying` takes entries
            // off the queue, so the order holds with the node lock
            // released.
            let batch = std::mem::take(&mut st.apply_queue);
            let applied = MutexGuard::unlocked(st, || {
                let mut changes = Vec::new();
                for item in &batch {
                    match item {
                        Apply::Entry(entry) => {
                            if let Some(applied) = self.kv.lock().apply(entry) {
                                changes
                                    .extend(applied.changes.into_iter().map(|c| (entry.index, c)));
                            }
                        }
                        Apply::Restore(file) => {
                            let before = self.kv.lock().applied_index();
                            self.feed.publish(std::mem::take(&mut changes), before);
                            self.restore(file);
                            self.feed.reset(file.meta.last_index);
                        }
                    }
                }
                let applied = self.kv.lock().applied_index();
                self.feed.publish(changes, applied);
                applied
            });
            // Under the node lock, where reads check the store and
            // register before they sleep: none misses this wake-up.
            self.answer_writes(st, Some(applied));
            st.waiters.applied(applied);
            st.applied = applied;
            if self.snapshot_is_due(st) {
                self.snapshot_due.notify_one();
            }
        }
        st.applying = false;
    }

    /// Answers the waiting writes up to `through` (all if `None`) whose
    /// outcome is known: applied, or lost (`ClientService::poll_write`).
    pub(super) fn answer_writes(&self, st: &mut State, through: Option<Index>) {
        let State {
            raft,
            clients,
            waiters,
            ..
        } = st;
        let kv = self.kv.lock();
        waiters.answer_writes(through, |ticket| clients.poll_write(raft, &kv, ticket));
    }

    /// Replaces the store by a snapshot installed from the leader. It was
    /// checked (CRC) as it arrived; one that does not read is a state
    /// machine this build cannot restore, and the node stops.
    pub(super) fn restore(&self, file: &SnapshotFile) {
        let started = Instant::now();
        match KvStore::read_snapshot(file.body()) {
            Ok(kv) => {
                let keys = kv.len();
                *self.kv.lock() = kv;
                info!(
                    "restored the key-value store from the snapshot up to index {} ({keys} keys) in {} ms",
                    file.meta.last_index,
                    started.elapsed().as_millis()
                );
            }
            Err(e) => {
                let text = format!(
                    "{}: cannot restore the state machine from the snapshot: {e}",
                    file.path.display()
                );
                error!("{text}; stopping");
                self.halt(&self.state.lock(), NodeError::Failed(text))
            }
        }
    }
}
