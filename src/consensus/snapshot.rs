//! Snapshots (§7 and Figure 13): a follower receiving one from the
//! leader, chunk by chunk, and installing it; a server compacting its log
//! behind a snapshot of its own; and the caller telling the core that a
//! snapshot file had to be written again. Sending chunks is the leader's
//! replication (`poll_peer`, [`super::Progress`] in state Snapshot).

use std::time::Duration;

use super::membership::Membership;
use super::validate::Rejection;
use super::{
    Entry, Event, Index, InstallSnapshot, InstallSnapshotReply, InstalledSnapshot, NodeId, Raft,
    SnapshotChunk, SnapshotMeta,
};

/// A follower's snapshot being received, chunk by chunk.
#[derive(Clone, Debug)]
pub(super) struct Receiving {
    pub(super) snapshot: SnapshotMeta,
    /// Bytes received so far, in order.
    pub(super) received: u64,
    /// The CRC-32 of those bytes, checked against the snapshot's before
    /// it is installed.
    pub(super) crc: crc32fast::Hasher,
}

impl Raft {
    /// Figure 13: takes one chunk of the leader's snapshot. Chunks are
    /// taken in order: one that does not continue what we hold is answered
    /// with the offset we want, so a leader resumes a transfer after a
    /// lost chunk or reply, or restarts it (offset 0) after our restart.
    /// The last chunk's CRC must match the snapshot's; then the snapshot
    /// replaces the state machine, and the log is kept after it if it held
    /// the snapshot's last entry (rule 6), or discarded (rule 7). A
    /// snapshot covering no more than we have committed changes nothing
    /// (it is stale or a duplicate) and is answered `done`.
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        req: InstallSnapshot,
        now: Duration,
    ) -> Result<InstallSnapshotReply, Rejection> {
        let meta = req.snapshot;
        let mut reply = InstallSnapshotReply {
            term: self.term,
            request_term: req.term,
            last_index: meta.last_index,
            next_offset: 0,
            done: false,
            checksum_failed: false,
        };
        // Rule 1: reply immediately if term < currentTerm.
        if req.term < self.term {
            return Ok(reply);
        }
        let held = self
            .receiving
            .as_ref()
            .filter(|r| r.snapshot == meta)
            .map(|r| (r.received, r.crc.clone()));
        let stale = meta.last_index <= self.commit_index;
        let accepted = match (&held, req.offset) {
            (_, 0) => Some(crc32fast::Hasher::new()),
            (Some((received, crc)), offset) if *received == offset => Some(crc.clone()),
            _ => None,
        };
        // The checksum first, so that a bad snapshot changes nothing.
        let damaged = accepted
            .clone()
            .filter(|_| !stale && req.is_last())
            .map(|mut crc| {
                crc.update(req.data.as_bytes());
                crc.finalize()
            })
            .filter(|&computed| computed != meta.crc32);
        self.follow(from, req.term, now);
        reply.term = self.term;
        if let Some(computed) = damaged {
            // What arrived is not the snapshot the leader described: drop
            // it all, and say so, so that the leader checks its file and
            // starts over rather than resending the same last chunk.
            self.receiving = None;
            self.events.push(Event::SnapshotChecksumFailed {
                from,
                index: meta.last_index,
                expected: meta.crc32,
                computed,
            });
            reply.checksum_failed = true;
            return Ok(reply);
        }
        if stale {
            reply.done = true;
            reply.next_offset = meta.size;
            return Ok(reply);
        }
        let Some(mut crc) = accepted else {
            reply.next_offset = held.map_or(0, |(received, _)| received);
            return Ok(reply);
        };
        crc.update(req.data.as_bytes());
        let received = req.offset + req.data.len() as u64;
        reply.next_offset = received;
        let last = req.is_last();
        self.snapshot_chunks.push(SnapshotChunk {
            snapshot: meta,
            offset: req.offset,
            data: req.data,
        });
        if !last {
            self.receiving = Some(Receiving {
                snapshot: meta,
                received,
                crc,
            });
            return Ok(reply);
        }
        self.receiving = None;
        self.install_snapshot(meta, req.membership.map(|m| *m));
        reply.done = true;
        Ok(reply)
    }

    /// Figure 13, rules 5 to 8, for a complete snapshot beyond our commit
    /// index.
    fn install_snapshot(&mut self, meta: SnapshotMeta, membership: Option<Membership>) {
        let index = meta.last_index;
        debug_assert!(index > self.commit_index);
        let log_kept = self.log.term_at(index) == Some(meta.last_term);
        if log_kept {
            // Rule 6: our log holds the snapshot's last entry: keep what
            // follows it.
            self.log.compact_to(index);
            self.configs.compacted_to(index);
            self.follow_membership();
            self.persisted_index = self.persisted_index.max(index);
            self.unstable_from = self.unstable_from.map(|u| u.max(index + 1));
        } else {
            // Rule 7: discard the entire log. The membership in force is
            // the snapshot's (from a leader that predates memberships in
            // the log, the latest we know up to its index).
            self.log.reset_to(index, meta.last_term);
            let membership = membership.unwrap_or_else(|| self.configs.at(index).clone());
            self.configs.reset(index, membership);
            self.follow_membership();
            self.persisted_index = index;
            self.handed_out_last = index;
            self.unstable_from = None;
        }
        self.snapshot = meta;
        // Rule 8: reset the state machine using the snapshot contents. It
        // holds committed entries only, up to `index`.
        self.commit_index = index;
        self.emitted_index = index;
        self.installed_snapshot = Some(InstalledSnapshot {
            snapshot: meta,
            membership: self.configs.at(index).clone(),
            log_kept,
        });
        self.events.push(Event::SnapshotInstalled {
            index,
            term: meta.last_term,
            size: meta.size,
            log_kept,
        });
    }

    /// The caller has made a snapshot of the state machine durable, which
    /// covers the entries up to `meta.last_index` (handed out in
    /// `Ready::committed` and applied): drop them from the log (§7), but
    /// for a trailing few (`Config::trailing_entries`). Returns the index
    /// the log now starts after (the caller may delete what it stores up
    /// to there), or `None`, changing nothing, if the current snapshot
    /// covers as much already (one installed from a leader meanwhile, say).
    pub fn compact(&mut self, meta: SnapshotMeta) -> Option<Index> {
        if meta.last_index <= self.snapshot.last_index {
            return None;
        }
        assert!(
            meta.last_index <= self.emitted_index,
            "a snapshot holds only entries handed out as committed"
        );
        assert_eq!(
            self.log.term_at(meta.last_index),
            Some(meta.last_term),
            "the snapshot's last term is its last entry's"
        );
        // Keep the trailing entries, back from the snapshot's end.
        let mut cut = meta.last_index;
        let mut bytes = 0;
        while cut > self.log.base_index() && meta.last_index - cut < self.cfg.trailing_entries {
            bytes += self.log.get(cut).map_or(0, Entry::approx_size);
            if bytes > self.cfg.trailing_bytes {
                break;
            }
            cut -= 1;
        }
        let removed = cut - self.log.base_index();
        self.log.compact_to(cut);
        self.configs.compacted_to(cut);
        self.snapshot = meta;
        // What the snapshot covers is durable in it.
        self.persisted_index = self.persisted_index.max(meta.last_index);
        self.events.push(Event::Compacted {
            index: meta.last_index,
            kept_from: cut + 1,
            removed,
        });
        Some(cut)
    }

    /// The caller wrote the current snapshot again (same last index and
    /// term: the same state), to replace a damaged file; its size and
    /// CRC-32 may differ.
    pub fn snapshot_rewritten(&mut self, meta: SnapshotMeta) {
        assert_eq!(
            (meta.last_index, meta.last_term),
            (self.snapshot.last_index, self.snapshot.last_term),
            "a rewritten snapshot covers the same entries"
        );
        self.snapshot = meta;
    }

    /// The caller's snapshot file cannot be sent (it fails its checks):
    /// every transfer in progress stops, and starts again with the
    /// current snapshot at the next chance. Call it once a sound snapshot
    /// is current (see `Raft::compact`), or the same file is chosen again.
    pub fn restart_snapshot_transfers(&mut self) {
        for p in self.peers.values_mut() {
            p.progress.restart_snapshot();
        }
    }
}
