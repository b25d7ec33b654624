//! The simulated disk: a [`Disk`] for the shared durability policy
//! (`raft::service::durability`), holding exactly what the runtime's
//! storage would hold after the same calls, and losing what the runtime's
//! would lose: a crash keeps a random part of the log appends not yet
//! synced (they may or may not have reached the platters), a power loss
//! none of them; a broken disk fails part way through a write.

use raft::consensus::membership::Membership;
use raft::consensus::{Entry, HardState, Index, NodeId, Ready, SnapshotMeta};
use raft::service::Disk;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::Sim;

/// One node's disk.
pub struct SimDisk {
    /// Term and vote (and what a storage fault took).
    pub state: HardState,
    /// The synced log entries, in index order (after a snapshot, those it
    /// covers may trail, as in the runtime's segments).
    pub log: Vec<Entry>,
    /// Entries written after `log` and not yet synced.
    pub unsynced: Vec<Entry>,
    /// The latest snapshot and its bytes (`KvStore::write_snapshot`).
    pub snapshot: Option<(SnapshotMeta, String)>,
    /// The membership in force at the snapshot, stored with it.
    pub snapshot_membership: Option<Membership>,
    /// Snapshots replaced since the node started, still readable (the
    /// runtime keeps the file of a transfer in progress open).
    pub replaced_snapshots: Vec<(SnapshotMeta, String)>,
    /// The bytes of a snapshot being received.
    pub receiving: String,
    /// The disk fails (full, I/O error) at the next write.
    pub broken: bool,
    /// Fault injection for testing the checker itself: log appends are
    /// dropped (a node that acknowledges what it never wrote).
    pub drops_appends: bool,
    /// Where a failing write stops.
    rng: Xoshiro256PlusPlus,
}

/// Why a write did not happen.
#[derive(Debug)]
pub enum DiskError {
    /// The disk failed part way through: the node must stop.
    Failed,
    /// The runtime asked for something its storage would refuse: a bug.
    Violation(String),
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: HardState::default(),
            log: Vec::new(),
            unsynced: Vec::new(),
            snapshot: None,
            snapshot_membership: None,
            replaced_snapshots: Vec::new(),
            receiving: String::new(),
            broken: false,
            drops_appends: false,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// The last index on the disk, synced or not.
    pub fn last_index(&self) -> Index {
        self.unsynced
            .last()
            .or(self.log.last())
            .map(|e| e.index)
            .or(self.snapshot.as_ref().map(|(m, _)| m.last_index))
            .unwrap_or(0)
    }

    /// Every write so far is synced.
    pub fn sync(&mut self) {
        let unsynced = std::mem::take(&mut self.unsynced);
        self.log.extend(unsynced);
    }

    /// A sync that began when the log ended at `index` has ended.
    pub fn synced_through(&mut self, index: Index) {
        let synced = self
            .unsynced
            .iter()
            .take_while(|e| e.index <= index)
            .count();
        self.log.extend(self.unsynced.drain(..synced));
    }

    /// The node's process died: its unsynced appends reached the disk or
    /// not, a random prefix of them.
    pub fn crash(&mut self, kept: usize) {
        let unsynced = std::mem::take(&mut self.unsynced);
        self.log.extend(unsynced.into_iter().take(kept));
        self.receiving.clear();
        self.replaced_snapshots.clear();
    }

    /// A failed write: the steps of `ready` before a random failure point
    /// reach the disk (term and vote, truncation, then entries one by one,
    /// as the runtime's storage writes them). The process stops, the
    /// machine does not: what it wrote earlier stays in the page cache and
    /// reaches the disk.
    fn fail_part_way(&mut self, ready: &Ready) {
        // (A snapshot being received is not on the disk until installed,
        // and a failed write stops the node before it installs one.)
        let steps = usize::from(ready.hard_state.is_some())
            + usize::from(ready.truncate_from.is_some())
            + ready.appended.len();
        let mut left = self.rng.random_range(0..=steps);
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!(
                "disk write fails after {left} of {steps} steps: {:?} {:?} {:?}",
                ready.hard_state,
                ready.truncate_from,
                ready.appended.iter().map(|e| e.index).collect::<Vec<_>>()
            );
        }
        self.sync();
        if let Some(hs) = ready.hard_state {
            if left == 0 {
                return;
            }
            left -= 1;
            self.state = hs;
        }
        if let Some(from) = ready.truncate_from {
            if left == 0 {
                return;
            }
            left -= 1;
            self.log.retain(|e| e.index < from);
        }
        self.log.extend(ready.appended.iter().take(left).cloned());
    }

    /// Snapshot chunks, then a snapshot to install with the log cut as the
    /// core says (Figure 13, rules 6 and 7).
    fn persist_snapshot(&mut self, ready: &Ready) -> Result<(), DiskError> {
        for c in &ready.snapshot_chunks {
            if c.offset == 0 {
                self.receiving.clear();
            }
            if c.offset != self.receiving.len() as u64 {
                return Err(DiskError::Violation(format!(
                    "a chunk at {} after {} bytes",
                    c.offset,
                    self.receiving.len()
                )));
            }
            self.receiving.push_str(&c.data);
        }
        if let Some(installed) = &ready.installed_snapshot {
            let meta = installed.snapshot;
            // Stored with the snapshot, as the runtime's file keeps it.
            self.snapshot_membership = Some(installed.membership.clone());
            let bytes = std::mem::take(&mut self.receiving);
            if installed.log_kept {
                self.log.retain(|e| e.index > meta.last_index);
                self.unsynced.retain(|e| e.index > meta.last_index);
            } else {
                self.log.clear();
                self.unsynced.clear();
            }
            self.replaced_snapshots.extend(self.snapshot.take());
            self.snapshot = Some((meta, bytes));
        }
        Ok(())
    }
}

impl Disk for SimDisk {
    type Error = DiskError;

    fn persist(&mut self, ready: &Ready, sync_log: bool) -> Result<(), DiskError> {
        if self.broken && ready.needs_persist() {
            self.fail_part_way(ready);
            return Err(DiskError::Failed);
        }
        if let Some(hs) = ready.hard_state {
            if hs.term < self.state.term {
                return Err(DiskError::Violation(format!(
                    "term {} persisted after {}",
                    hs.term, self.state.term
                )));
            }
            self.state = hs;
        }
        self.persist_snapshot(ready)?;
        if let Some(from) = ready.truncate_from {
            self.log.retain(|e| e.index < from);
            self.unsynced.retain(|e| e.index < from);
        }
        for e in ready.appended.iter().filter(|_| !self.drops_appends) {
            let last = self.last_index();
            if e.index != last + 1 {
                return Err(DiskError::Violation(format!(
                    "index {} appended to a log of {last}",
                    e.index
                )));
            }
            self.unsynced.push(e.clone());
        }
        if sync_log {
            self.sync();
        }
        Ok(())
    }

    fn sync_log(&mut self) -> Result<(), DiskError> {
        self.sync();
        Ok(())
    }

    fn needs_sync(&self) -> bool {
        !self.unsynced.is_empty()
    }
}

impl Sim {
    /// A storage fault on stopped node `id`'s disk, after which it starts
    /// from what `raft::storage`'s recovery keeps: `lost` log entries off
    /// the end of its log (a damaged or cut tail, a segment gone), or its
    /// snapshot (damaged: set aside, and the log after it with it). The
    /// entries it held were synced, so perhaps acknowledged: recovery
    /// records that it lost everything up to its old last index
    /// (`lost_through`), and the core keeps it from voting until a leader
    /// has repaired it. (Losing one copy of the term and vote changes
    /// nothing, as the other restores it; both is a refusal to start.)
    pub fn damage_disk(&mut self, id: NodeId, lost: usize, snapshot: bool) {
        let node = &mut self.nodes[id as usize];
        assert!(node.raft.is_none(), "damage a stopped node's disk");
        let disk = &mut node.disk;
        let had = disk.last_index();
        if snapshot && disk.snapshot.is_some() {
            disk.replaced_snapshots.extend(disk.snapshot.take());
            disk.snapshot_membership = None;
            disk.log.clear();
        } else {
            // Only entries after the snapshot: the ones it covers that
            // trail in the log are not read back at start anyway.
            let floor = disk.snapshot.as_ref().map_or(0, |(m, _)| m.last_index);
            let after = disk.log.iter().filter(|e| e.index > floor).count();
            let keep = disk.log.len() - lost.min(after);
            disk.log.truncate(keep);
        }
        if self.mark_losses && disk.last_index() < had {
            disk.state.lost_through = disk.state.lost_through.max(had);
            disk.state.lost_term = disk.state.lost_term.max(disk.state.term);
        }
        self.disk_damage += 1;
    }

    /// How many nodes' disks record a storage fault not yet repaired.
    pub fn repairing(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.disk.state.lost_through != 0)
            .count()
    }

    /// Crashes a node with its machine: writes it had not synced are lost.
    pub fn power_loss(&mut self, id: NodeId) {
        self.nodes[id as usize].disk.unsynced.clear();
        self.crash(id);
    }

    /// Node `id`'s disk fails (full, I/O error) at its next write. The
    /// write stops part way, and the node stops as the runtime does on a
    /// storage error: at once, answering nothing more.
    pub fn break_disk(&mut self, id: NodeId) {
        self.nodes[id as usize].disk.broken = true;
    }

    /// Replaces node `id`'s failing disk (its contents survive).
    pub fn repair_disk(&mut self, id: NodeId) {
        self.nodes[id as usize].disk.broken = false;
    }
}
