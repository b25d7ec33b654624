//! What is done with a [`Ready`], in one place: the durability policy that
//! the threaded runtime (`node`) and the deterministic simulation
//! (tests/sim) both run, each over its own [`Disk`] (the segmented log of
//! `storage`, and a simulated disk that loses what was not synced when its
//! node crashes). The safety checker of the simulation therefore checks
//! this code, not a copy of it.
//!
//! The rule, which is the core's ordering contract (see `consensus`,
//! rules 1 to 3) turned into steps:
//!
//! 1. Everything durable in a `Ready` is written before anything built
//!    on it leaves the node, in the core's order: term and vote; snapshot
//!    chunks and a snapshot to install (with the log cut as it says); the
//!    log's truncation, then its appends. The caller holds the lock over
//!    the core while [`handle_ready`] runs, so no reply or request built
//!    after the step can be sent before this returns.
//! 2. A server that is not leader syncs its appends before it answers,
//!    since its replies acknowledge them and a leader counts the
//!    acknowledgement toward a majority (§5.3). That includes entries it
//!    wrote as a deposed leader and had not synced yet. Its core is then
//!    told at once that the whole log is durable ([`Raft::persisted`]).
//! 3. A leader's appends are written but not synced here: the log writer
//!    syncs them later, off the lock, while they are already on their way
//!    to the followers (thesis §10.2.1). It notes [`sync_point`] before it
//!    syncs and reports it with [`log_synced`] after; only then does the
//!    leader count itself toward committing those entries. Every proposal
//!    written meanwhile rides the next sync (group commit).
//! 4. Answers to reads go to the client service, which holds the tickets.
//!
//! Committed entries, a snapshot to restore and the events are left to the
//! caller, in the returned [`Handled`]: the runtime hands them to its
//! applier and event stream, the simulation to its state machine and
//! checker.

use crate::consensus::{Index, Raft, Ready, Role, Term};
use crate::service::ClientService;

/// Where a node keeps its term, vote, log and snapshot.
pub trait Disk {
    type Error;

    /// Writes the durable parts of `ready` in the core's order (term and
    /// vote; snapshot chunks, and a snapshot to install; the log's
    /// truncation, then its appends). All but the appends are durable when
    /// this returns, and the appends too if `sync_log` (with every append
    /// written before them).
    fn persist(&mut self, ready: &Ready, sync_log: bool) -> Result<(), Self::Error>;

    /// Whether log appends have been written that are not yet synced.
    fn needs_sync(&self) -> bool;
}

/// A `Ready` written: what is left for the caller to do.
#[derive(Debug)]
pub struct Handled {
    /// The `Ready`, on disk now, its reads already routed: committed
    /// entries to apply, a snapshot to restore the state machine from
    /// before them, and the events.
    pub ready: Ready,
    /// The reads answered (their `ctx`), for whoever waits on them.
    pub reads_answered: Vec<u64>,
    /// A leader wrote appends that wait for the log writer's sync.
    pub sync_wanted: bool,
    /// Telling the core what is durable gave it output of its own (the end
    /// of a repair): call [`handle_ready`] again now rather than at the
    /// next input.
    pub again: bool,
}

/// Takes the core's `Ready` and writes it to `disk` by the rule above;
/// reports durability to the core and routes reads to `clients`. On an
/// error the node must stop answering at once: what failed to reach the
/// disk may already be in the core's state.
pub fn handle_ready<D: Disk>(
    raft: &mut Raft,
    disk: &mut D,
    clients: &mut ClientService,
) -> Result<Handled, D::Error> {
    let mut ready = raft.take_ready();
    let leader = raft.role() == Role::Leader;
    // Rules 2 and 3: a leader's appends are synced by the log writer;
    // anyone else's before it answers.
    disk.persist(&ready, !leader)?;
    let mut again = false;
    if !leader {
        let (index, term) = sync_point(raft);
        raft.persisted(index, term);
        again = raft.has_ready();
    }
    let reads = std::mem::take(&mut ready.reads);
    let reads_answered = reads.iter().map(|r| r.ctx).collect();
    clients.route_reads(reads);
    Ok(Handled {
        ready,
        reads_answered,
        sync_wanted: leader && disk.needs_sync(),
        again,
    })
}

/// Where a log sync started now ends: at the core's last entry, since
/// every input is followed by [`handle_ready`] before the lock over the
/// core is released, so everything in its log has been written.
pub fn sync_point(raft: &Raft) -> (Index, Term) {
    (raft.log().last_index(), raft.log().last_term())
}

/// A leader's log sync that began at `point` (from [`sync_point`]) has
/// ended: the leader may now count its own copy of those entries toward a
/// commit (thesis §10.2.1). The core ignores the report if those entries
/// were replaced meanwhile (a deposed leader's tail).
pub fn log_synced(raft: &mut Raft, point: (Index, Term)) {
    raft.persisted(point.0, point.1);
}
