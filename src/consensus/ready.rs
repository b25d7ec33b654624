//! What a call into the core hands back for the caller to do (see the
//! module docs of `consensus` for the order, and `service::durability`
//! for the runtime's policy).

use super::membership::Membership;
use super::{Entry, Event, Index, NodeId, SnapshotMeta, Term};

/// What must survive a crash besides the log (Figure 2, "Persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    /// Not in Figure 2, which assumes a disk that never loses what was
    /// written: non-zero after a storage fault cost this server log
    /// entries it may have acknowledged, up to this index. Until its log
    /// holds that far again (fetched from a leader) it neither votes nor
    /// stands (see [`Raft::repairing`]); then it goes back to 0.
    pub lost_through: Index,
    /// With `lost_through`: our term when the loss was found, at least the
    /// term of every entry lost. While repairing we vote only for a
    /// candidate whose log is at least as up to date as (`lost_term`,
    /// `lost_through`), hence as the log we had (§5.4.1 still holds).
    pub lost_term: Term,
}

/// What the caller must do after a call into [`Raft`]; see the module docs
/// for the order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Term and vote to persist, if they changed.
    pub hard_state: Option<HardState>,
    /// Bytes of the snapshot a leader is sending us, in order, to store
    /// until it is complete (a chunk at offset 0 starts a new one).
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// The snapshot received is complete and its checksum matched: it
    /// becomes this server's snapshot, and the state machine is to be
    /// restored from it.
    pub installed_snapshot: Option<InstalledSnapshot>,
    /// Remove persisted entries from this index on, before appending.
    pub truncate_from: Option<Index>,
    /// Entries to append to the persisted log, in order.
    pub appended: Vec<Entry>,
    /// Newly committed entries to apply, in order, after persisting.
    pub committed: Vec<Entry>,
    /// Outcomes of `read_index` requests, in the order they were made.
    pub reads: Vec<ReadState>,
    pub events: Vec<Event>,
}

/// The answer to [`Raft::read_index`]: once the state machine has applied
/// `index`, a read of it is linearizable. `index: None` means this server
/// stopped being leader before the read was confirmed; ask the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Option<Index>,
}

impl Ready {
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some()
            || !self.snapshot_chunks.is_empty()
            || self.installed_snapshot.is_some()
            || self.truncate_from.is_some()
            || !self.appended.is_empty()
    }
}

/// Part of a snapshot being received: `data` goes at `offset` of the
/// snapshot named by `snapshot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub snapshot: SnapshotMeta,
    pub offset: u64,
    pub data: String,
}

/// A received snapshot to install (Figure 13, rules 5 to 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledSnapshot {
    pub snapshot: SnapshotMeta,
    /// The membership in force at its last index, stored with it.
    pub membership: Membership,
    /// The log held the snapshot's last entry: the entries after it stay
    /// (rule 6). Otherwise the whole log is discarded (rule 7): the log
    /// now ends at the snapshot.
    pub log_kept: bool,
}
