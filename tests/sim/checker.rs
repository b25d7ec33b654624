//! The safety checker: the properties of Figure 3 of the Raft paper
//! (election safety, leader append-only, log matching, leader completeness,
//! state machine safety), checked on every `Ready` a node handles, and in
//! full every few hundred steps.

use std::collections::{BTreeMap, HashMap};

use raft::consensus::{Entry, Index, NodeId, Payload, Raft, Ready, Role, SnapshotMeta, Term};
use raft::kv::KvStore;

use super::Sim;

/// Safety properties checked after every step (Raft paper, Figure 3).
#[derive(Default)]
pub struct Checker {
    /// Election safety: at most one leader per term.
    leaders: HashMap<Term, NodeId>,
    /// Log matching: every (index, term) ever stored anywhere maps to one
    /// payload and one previous-entry term.
    entries: HashMap<(Index, Term), (Payload, Term)>,
    /// State machine safety: the entry applied at each index, by anyone.
    pub committed: BTreeMap<Index, Entry>,
    /// Leader completeness: the term in which each index was first
    /// committed. A leader applies what it commits in the same step, with
    /// its term; anyone applying it later has a term at least as high, so
    /// the smallest term seen is the commit term. Leaders of later terms
    /// must hold the entry (§5.4, Figure 3); leaders of earlier terms that
    /// still run in a partition need not.
    commit_term: BTreeMap<Index, Term>,
    /// Leader append-only: (term, last index) of each current leader.
    leader_last: HashMap<NodeId, (Term, Index)>,
    /// State machine safety across snapshots: the CRC-32 of the snapshot
    /// bytes of every index a snapshot was taken or installed at. Any two
    /// snapshots of one index must be equal byte for byte, and equal to
    /// the reference state machine's at that index.
    snapshots: HashMap<Index, u32>,
    /// A state machine fed the committed entries in order, ahead of no
    /// snapshot not yet compared with it.
    reference: KvStore,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// Leadership transfers started (chaos counts them here).
    pub transfers: u64,
    pub steps: u64,
}

impl Checker {
    /// An entry committed in a term before `leader`'s that `leader` lacks.
    fn lacking_committed(&self, leader: &Raft) -> Option<&Entry> {
        // What the leader's snapshot covers it holds, committed.
        let base = leader.log().base_index();
        self.committed
            .range(base + 1..)
            .find(|(index, e)| {
                self.commit_term[index] < leader.term() && leader.log().get(**index) != Some(*e)
            })
            .map(|(_, e)| e)
    }

    /// What node `id` wrote: a leader never truncates its log (leader
    /// append-only), and an (index, term) pair identifies one payload and
    /// one predecessor everywhere (log matching).
    pub(super) fn check_written(
        &mut self,
        id: NodeId,
        raft: &Raft,
        ready: &Ready,
    ) -> Result<(), String> {
        if let Some(from) = ready.truncate_from
            && raft.role() == Role::Leader
        {
            return Err(format!(
                "leader {id} truncated its log at {from} (leader append-only)"
            ));
        }
        for e in &ready.appended {
            let prev = raft.log().term_at(e.index - 1).unwrap();
            let seen = self
                .entries
                .entry((e.index, e.term))
                .or_insert((e.payload.clone(), prev));
            if *seen != (e.payload.clone(), prev) {
                return Err(format!(
                    "log matching: node {id} has {e:?} after term {prev}, elsewhere {seen:?}"
                ));
            }
        }
        Ok(())
    }

    /// Node `id`, in `term`, applied `e`: state machine safety.
    pub(super) fn check_applied(
        &mut self,
        id: NodeId,
        term: Term,
        e: &Entry,
    ) -> Result<(), String> {
        let seen = self.commit_term.entry(e.index).or_insert(term);
        *seen = (*seen).min(term);
        match self.committed.get(&e.index) {
            Some(other) if other != e => Err(format!(
                "state machine safety: node {id} applied {e:?}, another {other:?}"
            )),
            Some(_) => Ok(()),
            None => {
                self.committed.insert(e.index, e.clone());
                Ok(())
            }
        }
    }

    /// Election safety, leader completeness for a new leader, and leader
    /// append-only, after node `id` handled a `Ready`.
    pub(super) fn check_leader(&mut self, id: NodeId, raft: &Raft) -> Result<(), String> {
        if raft.role() != Role::Leader {
            self.leader_last.remove(&id);
            return Ok(());
        }
        let term = raft.term();
        let last = raft.log().last_index();
        if let Some(&other) = self.leaders.get(&term) {
            if other != id {
                return Err(format!(
                    "election safety: {other} and {id} both led term {term}"
                ));
            }
        } else {
            self.leaders.insert(term, id);
            if let Some(e) = self.lacking_committed(raft) {
                return Err(format!(
                    "leader completeness: new leader {id} of term {term} lacks {e:?}"
                ));
            }
        }
        if let Some(&(t, l)) = self.leader_last.get(&id)
            && t == term
            && last < l
        {
            return Err(format!(
                "leader append-only: leader {id} shrank from {l} to {last}"
            ));
        }
        self.leader_last.insert(id, (term, last));
        Ok(())
    }

    /// Node `id` stopped: it leads nothing now.
    pub(super) fn crashed(&mut self, id: NodeId) {
        self.leader_last.remove(&id);
    }

    /// A snapshot of `bytes` at `meta` was taken or installed by `node`:
    /// it must match every other snapshot of that index, and the reference
    /// state machine's state there.
    pub(super) fn check_snapshot(
        &mut self,
        node: NodeId,
        meta: SnapshotMeta,
        bytes: &str,
    ) -> Result<(), String> {
        let crc = crc32fast::hash(bytes.as_bytes());
        if crc != meta.crc32 || bytes.len() as u64 != meta.size {
            return Err(format!(
                "node {node}'s snapshot bytes do not match {meta:?}"
            ));
        }
        if let Some(&seen) = self.snapshots.get(&meta.last_index)
            && seen != crc
        {
            return Err(format!(
                "state machine safety: node {node}'s snapshot at {} differs from another's",
                meta.last_index
            ));
        }
        self.snapshots.insert(meta.last_index, crc);
        // The reference can only move forward: compare when it is not past.
        if self.reference.applied_index() <= meta.last_index {
            let next = self.reference.applied_index() + 1;
            if next <= meta.last_index {
                for (_, e) in self.committed.range(next..=meta.last_index) {
                    self.reference.apply(e);
                }
            }
            if self.reference.applied_index() != meta.last_index {
                return Err(format!(
                    "node {node} snapshotted index {} that nobody applied",
                    meta.last_index
                ));
            }
            if self.reference.snapshot_text() != bytes {
                return Err(format!(
                    "state machine safety: node {node}'s snapshot at {} is not the state the committed entries give",
                    meta.last_index
                ));
            }
        }
        Ok(())
    }
}

impl Sim {
    /// The slow checks, every few hundred steps: every pair of logs obeys
    /// log matching in full, and every leader holds every entry committed
    /// in an earlier term. (A deposed leader that has not heard of it yet
    /// may lack entries committed in later terms.)
    pub fn check_deep(&self) {
        let logs: Vec<(NodeId, &raft::consensus::Log)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.raft.as_ref().map(|r| (i as NodeId, r.log())))
            .collect();
        for (a, la) in &logs {
            for (b, lb) in &logs {
                if a >= b {
                    continue;
                }
                // Compare where both still hold entries: the last index
                // where both have the same term, and everything up to it
                // must be identical. (Below a snapshot, entries are
                // committed; the state machine checks cover them.)
                let first = la.first_index().max(lb.first_index());
                let last = la.last_index().min(lb.last_index());
                if first > last {
                    continue;
                }
                if let Some(k) = (first..=last)
                    .rev()
                    .find(|&k| la.term_at(k) == lb.term_at(k))
                    && la.slice(first, k) != lb.slice(first, k)
                {
                    self.fail(format!(
                        "log matching: nodes {a} and {b} agree on index {k} but differ before"
                    ));
                }
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(r) = n.raft.as_ref() else { continue };
            if r.role() == Role::Leader
                && let Some(e) = self.checker.lacking_committed(r)
            {
                self.fail(format!(
                    "leader completeness: leader {i} of term {} lacks {e:?}",
                    r.term()
                ));
            }
        }
    }
}
