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
//!    For requests that arrived together and are answered together (a
//!    leader's pipelined AppendEntries), the caller may instead use
//!    [`handle_ready_in_batch`] for each and [`sync_batch`] once at the
//!    end, before any of their answers leaves: one sync for the batch
//!    (group commit on the follower).
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

    /// Makes every log append written so far durable.
    fn sync_log(&mut self) -> Result<(), Self::Error>;
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
    handle(raft, disk, clients, false)
}

/// As [`handle_ready`], for a step inside a batch of requests whose
/// answers leave together: a follower's appends are written, not synced.
/// The caller must call [`sync_batch`] before any answer leaves.
pub fn handle_ready_in_batch<D: Disk>(
    raft: &mut Raft,
    disk: &mut D,
    clients: &mut ClientService,
) -> Result<Handled, D::Error> {
    handle(raft, disk, clients, true)
}

/// Ends a batch (rule 2): syncs what its steps wrote, and tells the core
/// the log is durable, unless it leads (then that is the log writer's
/// job, rule 3). Returns whether the core has output of its own now (see
/// [`Handled::again`]).
pub fn sync_batch<D: Disk>(raft: &mut Raft, disk: &mut D) -> Result<bool, D::Error> {
    if raft.role() == Role::Leader {
        return Ok(false);
    }
    if disk.needs_sync() {
        disk.sync_log()?;
    }
    Ok(whole_log_durable(raft))
}

/// Tells a server that is not leader that its whole log is durable (rule
/// 2, once it is synced); returns whether the core then has output of its
/// own (the end of a repair).
fn whole_log_durable(raft: &mut Raft) -> bool {
    let (index, term) = sync_point(raft);
    raft.persisted(index, term);
    raft.has_ready()
}

fn handle<D: Disk>(
    raft: &mut Raft,
    disk: &mut D,
    clients: &mut ClientService,
    in_batch: bool,
) -> Result<Handled, D::Error> {
    let mut ready = raft.take_ready();
    let leader = raft.role() == Role::Leader;
    // Rules 2 and 3: a leader's appends are synced by the log writer;
    // anyone else's before it answers (at the end of its batch).
    disk.persist(&ready, !leader && !in_batch)?;
    let again = !leader && !in_batch && whole_log_durable(raft);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{AppendEntries, Config, Entry, HardState, Payload, Request};
    use std::time::Duration;

    /// Counts what is written and synced.
    #[derive(Default)]
    struct Counting {
        appends: usize,
        unsynced: usize,
        syncs: usize,
    }

    impl Disk for Counting {
        type Error = ();
        fn persist(&mut self, ready: &Ready, sync_log: bool) -> Result<(), ()> {
            if !ready.appended.is_empty() {
                self.appends += 1;
                self.unsynced += ready.appended.len();
            }
            if sync_log && self.unsynced > 0 {
                self.sync_log()?;
            }
            Ok(())
        }
        fn needs_sync(&self) -> bool {
            self.unsynced > 0
        }
        fn sync_log(&mut self) -> Result<(), ()> {
            self.syncs += 1;
            self.unsynced = 0;
            Ok(())
        }
    }

    fn append(index: Index) -> Request {
        Request::AppendEntries(AppendEntries {
            term: 1,
            leader_id: 0,
            prev_log_index: index - 1,
            prev_log_term: if index == 1 { 0 } else { 1 },
            entries: vec![Entry {
                index,
                term: 1,
                payload: Payload::Noop,
            }],
            leader_commit: 0,
            read_round: 0,
        })
    }

    fn follower() -> Raft {
        let cfg = Config::new(1, 0..3, 7);
        Raft::new(cfg, HardState::default(), Vec::new(), Duration::ZERO)
    }

    /// A follower given appends of indexes 1 to 3, one request at a time
    /// or as one batch (without its closing `sync_batch`).
    fn three_appends(batch: bool) -> (Raft, Counting) {
        let mut clients = ClientService::new(Vec::new());
        let (mut raft, mut disk) = (follower(), Counting::default());
        let step = if batch {
            handle_ready_in_batch
        } else {
            handle_ready
        };
        for index in 1..=3 {
            raft.handle_request(0, append(index), Duration::ZERO)
                .unwrap();
            step(&mut raft, &mut disk, &mut clients).unwrap();
        }
        (raft, disk)
    }

    #[test]
    fn a_follower_syncs_each_append_alone_and_a_batch_once() {
        // One at a time: a sync before each answer.
        let (raft, disk) = three_appends(false);
        assert_eq!((disk.appends, disk.syncs), (3, 3));
        assert_eq!(raft.persisted_index(), 3);
        // Three that arrived together: written each, synced once, and
        // the core told only after the sync.
        let (mut raft, mut disk) = three_appends(true);
        assert_eq!((disk.appends, disk.syncs), (3, 0));
        assert_eq!(raft.persisted_index(), 0, "nothing is durable yet");
        sync_batch(&mut raft, &mut disk).unwrap();
        assert_eq!((disk.appends, disk.syncs), (3, 1));
        assert_eq!(raft.persisted_index(), 3);
    }
}
