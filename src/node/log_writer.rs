//! The leader's log writer: takes the node's lock to note what is written,
//! releases it for the fsync, and takes it again to report what is durable
//! (`Raft::persisted`). Proposals written meanwhile ride the next sync.

use super::*;

impl Shared {
    /// The leader's log writer: syncs what has been written with the lock
    /// released, then tells the core, which may then count the leader
    /// toward committing those entries (thesis §10.2.1). Proposals keep
    /// arriving and being written meanwhile; the next sync covers them all.
    pub(super) fn run_log_writer(&self) {
        let mut st = self.state.lock();
        while !st.stopping {
            if st.raft.role() != Role::Leader || !st.storage.needs_sync() {
                self.log_written.wait(&mut st);
                continue;
            }
            // A handle on the segment being appended to now (full ones
            // were synced when the next began).
            let syncer = match st.storage.log_syncer() {
                Ok(syncer) => syncer,
                Err(e) => self.storage_failed(&st, &e),
            };
            // Everything in the in-memory log is written: every input is
            // followed by `process_ready` before the lock is released.
            let count = st.storage.written();
            let point = durability::sync_point(&st.raft);
            if let Err(e) = MutexGuard::unlocked(&mut st, || syncer.sync()) {
                self.storage_failed(&st, &e);
            }
            if let Err(e) = st.storage.synced_through(count) {
                self.storage_failed(&st, &e);
            }
            durability::log_synced(&mut st.raft, point);
            self.process_ready(&mut st);
        }
    }
}
