//! The applier: takes committed entries off the queue under the node's
//! lock, applies them with the node's lock released (the key-value store
//! has a lock of its own, taken alone), then takes the node's lock again
//! to wake the requests waiting for them (`Waiters`).

use super::*;

/// Client requests waiting on this node, each on a condvar of its own, so
/// that an apply wakes only the requests it answers instead of all of
/// them. A waiter may be filed more than once or woken for nothing; it
/// re-checks its answer each time it wakes.
#[derive(Default)]
pub(super) struct Waiters {
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
            while st.apply_queue.is_empty() && !st.stopping {
                self.committed.wait(&mut st);
            }
            if st.stopping {
                return;
            }
            // The one ordered apply path: entries arrive in log order,
            // once each, and the store applies them (it asserts the order).
            // Only this thread takes entries off the queue, so the order
            // holds with the node lock released.
            let batch = std::mem::take(&mut st.apply_queue);
            let applied = MutexGuard::unlocked(&mut st, || {
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
            // Under the node lock, where requests check the store and
            // register before they sleep: none misses this wake-up.
            st.waiters.applied(applied);
            st.applied = applied;
            if self.snapshot_is_due(&st) {
                self.snapshot_due.notify_one();
            }
        }
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
