//! Each node's clock (the clock model of lease reads): by default every
//! clock shows the virtual real time; a test can make one run fast or
//! slow. The lease check lives here too.

use std::time::Duration;

use raft::consensus::{NodeId, Role};

use super::Sim;

/// A node's clock: it showed `local` at real time `real`, and since then
/// counts `rate` seconds per real second. It never goes back.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    pub(super) rate: f64,
    pub(super) real: Duration,
    pub(super) local: Duration,
}

impl Sim {
    /// What node `id`'s clock shows now: every input to its core is timed
    /// by it, as the runtime times its core by its own machine's clock.
    pub fn local_now(&self, id: NodeId) -> Duration {
        self.local(id, self.now)
    }

    pub(super) fn local(&self, id: NodeId, at: Duration) -> Duration {
        let c = self.clocks[id as usize];
        if c.rate == 1.0 {
            return c.local + (at - c.real);
        }
        c.local + Duration::from_nanos(((at - c.real).as_nanos() as f64 * c.rate) as u64)
    }

    /// The real time at which node `id`'s clock first shows `local` (now,
    /// if it does already).
    pub(super) fn real_at(&self, id: NodeId, local: Duration) -> Duration {
        let c = self.clocks[id as usize];
        let ahead = local.saturating_sub(c.local);
        if c.rate == 1.0 {
            return c.real + ahead;
        }
        let real =
            c.real + Duration::from_nanos((ahead.as_nanos() as f64 / c.rate).ceil() as u64 + 1);
        real.max(self.now)
    }

    /// From now on node `id`'s clock counts `rate` seconds per second.
    pub fn set_clock_rate(&mut self, id: NodeId, rate: f64) {
        assert!(rate > 0.0);
        let local = self.local_now(id);
        self.clocks[id as usize] = Clock {
            rate,
            real: self.now,
            local,
        };
    }

    /// Lease reads (thesis §6.4.1): a leader whose lease holds now, on its
    /// own clock, must be the only leader: none of a newer term may have
    /// been elected meanwhile, or its lease reads could be stale.
    pub(super) fn check_leases(&self) {
        for id in (0..self.n() as NodeId).filter(|_| self.check_leases) {
            let Some(raft) = self.raft(id) else { continue };
            if raft.lease_read(self.local_now(id)).is_none() {
                continue;
            }
            let newer = (0..self.n() as NodeId).find(|&other| {
                self.raft(other)
                    .is_some_and(|r| r.role() == Role::Leader && r.term() > raft.term())
            });
            if let Some(other) = newer {
                self.fail(format!(
                    "node {id}'s lease of term {} still holds, but node {other} leads term {}",
                    raft.term(),
                    self.raft(other).unwrap().term()
                ));
            }
        }
    }
}
