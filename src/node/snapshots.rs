//! The snapshotter, and snapshots taken on request or to replace a
//! damaged file. The store's lock is held only to copy the store; the copy
//! is written with no lock held; the node's lock is taken to make the file
//! current and have the core and storage drop the log it covers (§7).
//! One snapshot at a time (`Shared::snapshotting`, taken before the
//! node's lock, never while holding it).

use super::*;

impl Shared {
    /// Whether the log past the snapshot has reached the threshold, with
    /// applied entries a snapshot could cover.
    pub(super) fn snapshot_is_due(&self, st: &State) -> bool {
        let base = st.raft.snapshot().last_index;
        let stretch = |n: u64| n + (n as f64 * st.snapshot_jitter) as u64;
        st.applied > base
            && match self.snapshot_threshold {
                SnapshotThreshold::Entries(n) => st.applied - base >= stretch(n),
                SnapshotThreshold::Bytes(b) => st.storage.log_bytes_after(base) >= stretch(b),
            }
    }

    /// Takes a snapshot whenever the applier says one is due.
    pub(super) fn run_snapshotter(&self) {
        loop {
            {
                let mut st = self.state.lock();
                while !st.stopping && !self.snapshot_is_due(&st) {
                    self.snapshot_due.wait(&mut st);
                }
                if st.stopping {
                    return;
                }
            }
            if let Err(e) = self.take_snapshot() {
                // The log keeps growing meanwhile; try again a little later.
                warn!("cannot take a snapshot: {e}; retrying in 1 s");
                thread::sleep(Duration::from_secs(1));
            }
        }
    }

    /// Our snapshot file `damaged` failed its checks as a transfer was to
    /// start (`why`): write a fresh one from the state machine, make it
    /// current, and start every transfer over with it. Called and
    /// returning with the lock held; releases it to write.
    pub(super) fn replace_damaged_snapshot(
        &self,
        st: &mut MutexGuard<'_, State>,
        damaged: SnapshotMeta,
        why: &StorageError,
    ) {
        if st.storage.snapshot().map(|f| f.meta) != Some(damaged) {
            // Another replicator replaced it already.
            st.raft.restart_snapshot_transfers();
            self.process_ready(st);
            return;
        }
        self.note(
            st,
            log::Level::Error,
            format!(
                "our snapshot up to index {} cannot be sent: {why}; taking a fresh one from the state machine and starting its transfers over",
                damaged.last_index
            ),
        );
        let taken = MutexGuard::unlocked(st, || {
            let _one_at_a_time = self.snapshotting.lock();
            self.write_snapshot(Some(damaged))
        });
        match taken {
            Ok(_) => {
                st.raft.restart_snapshot_transfers();
                self.process_ready(st);
            }
            // The transfer fails meanwhile and is retried with backoff.
            Err(e) => self.note(
                st,
                log::Level::Error,
                format!("cannot replace the damaged snapshot: {e}"),
            ),
        }
    }

    /// Takes a snapshot of the store now and compacts the log it covers.
    /// `None` when there is nothing new to cover. The store's lock is held
    /// only to copy it; the copy is written with no lock held; the node's
    /// lock only to make the file current and drop the log.
    pub(super) fn take_snapshot(&self) -> Result<Option<SnapshotTaken>, StorageError> {
        let _one_at_a_time = self.snapshotting.lock();
        self.write_snapshot(None)
    }

    /// [`Shared::take_snapshot`], with the snapshotting lock held.
    /// `replacing`: the current snapshot's file is damaged; a snapshot of
    /// the same index is written too (replacing the file only), where
    /// otherwise there would be nothing new to cover.
    pub(super) fn write_snapshot(
        &self,
        replacing: Option<SnapshotMeta>,
    ) -> Result<Option<SnapshotTaken>, StorageError> {
        let started = Instant::now();
        let (kv, blocked) = {
            let kv = self.kv.lock();
            let copied = Instant::now();
            (kv.clone(), copied.elapsed())
        };
        let (dir, current, membership) = {
            let st = self.state.lock();
            let current = st.raft.snapshot().last_index;
            // The membership in force at the state's index, stored with
            // it (the core knows the memberships from its snapshot on).
            let at = kv.applied_index().max(current);
            (
                st.storage.dir().to_path_buf(),
                current,
                st.raft.membership_at(at).clone(),
            )
        };
        if kv.applied_index() < current
            || (kv.applied_index() == current && replacing.is_none_or(|d| d.last_index != current))
        {
            return Ok(None);
        }
        let mut writer = SnapshotWriter::create(&dir, kv.applied_index(), kv.applied_term())?;
        kv.write_snapshot(&mut writer)
            .map_err(|source| StorageError::Io {
                path: dir.join(crate::storage::snapshot_file::WRITING_FILE),
                op: "write",
                source,
            })?;
        let written = writer.finish(&membership)?;
        let meta = written.meta;
        let keys = kv.len();
        drop(kv);
        let mut st = self.state.lock();
        let current = st.raft.snapshot();
        if meta.last_index == current.last_index
            && replacing == Some(current)
            && meta.last_term == current.last_term
        {
            // The same state again, in a sound file.
            st.raft.snapshot_rewritten(meta);
            if let Err(e) = st.storage.install_own(written, 0) {
                self.storage_failed(&st, &e);
            }
            self.note(
                &st,
                log::Level::Warn,
                format!(
                    "snapshot up to index {} written again from the state machine ({} bytes), replacing the damaged file",
                    meta.last_index, meta.size
                ),
            );
            return Ok(None);
        }
        if meta.last_index <= current.last_index {
            written.discard(); // one from the leader got there first
            return Ok(None);
        }
        let entries_before = st.raft.log().entries().len();
        let cut = st.raft.compact(meta).expect("newer than the current one");
        let segments = match st.storage.install_own(written, cut) {
            Ok(n) => n,
            Err(e) => self.storage_failed(&st, &e),
        };
        let dropped = entries_before - st.raft.log().entries().len();
        st.snapshot_jitter = rand::random::<f64>() / 2.0;
        self.process_ready(&mut st);
        let taken = SnapshotTaken {
            taken: true,
            index: meta.last_index,
            term: meta.last_term,
            bytes: meta.size,
            keys: keys as u64,
            millis: started.elapsed().as_millis() as u64,
            store_blocked_micros: blocked.as_micros() as u64,
        };
        self.note(
            &st,
            log::Level::Info,
            format!(
                "snapshot taken up to index {} (term {}): {keys} keys, {} bytes, in {} ms (the store was blocked {} µs to copy it); dropped {dropped} log entries, deleted {segments} log segments",
                meta.last_index, meta.last_term, meta.size, taken.millis, taken.store_blocked_micros
            ),
        );
        Ok(Some(taken))
    }
}
