//! Key-value clients over the simulated cluster.
//!
//! Each simulated client is a session (client id, numbered writes) with one
//! operation outstanding, driven the way the real client library drives a
//! cluster: send to the node it believes leads, follow the node's leader
//! hint, retry elsewhere with the same number after a timeout or a change
//! of leader, give up after a while. A write completes when the node it
//! was sent to has applied it (the session table then holds its outcome);
//! a read completes through ReadIndex (thesis §6.4): the leader confirms
//! the read, its state machine catches up to the read index, and the value
//! is read there. Clients reach every node (they sit outside partitions).
//!
//! Every call and return is recorded in a history for the linearizability
//! checker; an operation that never returned has an unknown outcome.

use std::time::Duration;

use raft::consensus::{Index, NodeId, Role, Term};
use raft::kv::{ClientId, Command, Op, Outcome};
use raft::lincheck::{KvOp, Operation};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{MS, Sim};

/// How long one attempt at one node may take before the client tries
/// another, and how long before it gives up on the operation.
const ATTEMPT: Duration = Duration::from_millis(1000);
const GIVE_UP: Duration = Duration::from_secs(8);

enum Attempt {
    /// Proposed at `node` (in this incarnation) as log `index` of `term`.
    Write {
        node: NodeId,
        incarnation: u64,
        index: Index,
        term: Term,
    },
    /// `read_index(ctx)` was accepted by `node`.
    Read {
        node: NodeId,
        incarnation: u64,
        ctx: u64,
    },
}

struct Pending {
    /// Position in the history.
    op: usize,
    command: Option<Command>,
    read_key: Option<String>,
    started: Duration,
    attempt: Option<(Attempt, Duration)>,
}

pub struct SimClient {
    pub id: ClientId,
    seq: u64,
    leader_guess: NodeId,
    pending: Option<Pending>,
}

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Workload {
    pub keys: usize,
    /// Share of reads among operations.
    pub reads: f64,
    /// Pause between a client's operations.
    pub think: Duration,
    /// The first this-many clients only read.
    pub readers: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            keys: 3,
            reads: 0.4,
            think: 5 * MS,
            readers: 1,
        }
    }
}

pub struct KvCluster {
    pub sim: Sim,
    pub clients: Vec<SimClient>,
    pub history: Vec<Operation>,
    rng: Xoshiro256PlusPlus,
    next_ctx: u64,
    pub workload: Workload,
    /// Acknowledged appends: (client, seq).
    pub acked_appends: Vec<(ClientId, u64)>,
    /// Completed operations, and those given up (unknown outcome).
    pub completed: usize,
    pub gave_up: usize,
}

impl KvCluster {
    pub fn new(sim: Sim, clients: usize, workload: Workload) -> KvCluster {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(sim.seed.wrapping_mul(31).wrapping_add(7));
        let n = sim.n() as NodeId;
        let clients = (0..clients)
            .map(|k| SimClient {
                id: 1000 + k as u64,
                seq: 0,
                leader_guess: rng.random_range(0..n),
                pending: None,
            })
            .collect();
        KvCluster {
            sim,
            clients,
            history: Vec::new(),
            rng,
            next_ctx: 0,
            workload,
            acked_appends: Vec::new(),
            completed: 0,
            gave_up: 0,
        }
    }

    fn t(&self) -> u64 {
        self.sim.now.as_nanos() as u64
    }

    /// Runs the cluster and the clients for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration, issue_new: bool) {
        let end = self.sim.now + d;
        while self.sim.now < end {
            self.sim
                .run_for(self.workload.think.min(end - self.sim.now).max(MS));
            for k in 0..self.clients.len() {
                self.drive(k, issue_new);
            }
        }
    }

    pub fn clients_idle(&self) -> bool {
        self.clients.iter().all(|c| c.pending.is_none())
    }

    /// Lets outstanding operations finish (or be given up), issuing none.
    pub fn drain(&mut self, limit: Duration) {
        let end = self.sim.now + limit;
        while self.sim.now < end && self.clients.iter().any(|c| c.pending.is_some()) {
            self.run_for(10 * MS, false);
        }
    }

    fn start_op(&mut self, k: usize) {
        let key = format!("k{}", self.rng.random_range(0..self.workload.keys));
        let n_clients = self.clients.len() as u64;
        let client = &mut self.clients[k];
        let call = self.sim.now.as_nanos() as u64;
        if k < self.workload.readers || self.rng.random_bool(self.workload.reads) {
            self.history.push(Operation {
                key: key.clone(),
                op: KvOp::Get { value: None },
                call,
                ret: None,
            });
            client.pending = Some(Pending {
                op: self.history.len() - 1,
                command: None,
                read_key: Some(key),
                started: self.sim.now,
                attempt: None,
            });
            return;
        }
        client.seq += 1;
        let value = format!("c{}-{}", client.id, client.seq);
        let (op, record) = match self.rng.random_range(0..10) {
            0..4 => (
                Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
                KvOp::Put { value },
            ),
            4..7 => {
                // Swap from a value some client may have written.
                let from = format!(
                    "c{}-{}",
                    1000 + self.rng.random_range(0..n_clients),
                    self.rng.random_range(1..=client.seq)
                );
                (
                    Op::Cas {
                        key: key.clone(),
                        from: from.clone(),
                        to: value.clone(),
                    },
                    KvOp::Cas {
                        from,
                        to: value,
                        result: None,
                    },
                )
            }
            7..8 => (
                Op::Delete { key: key.clone() },
                KvOp::Delete { existed: None },
            ),
            _ => (
                Op::Append { data: value },
                KvOp::Put {
                    value: String::new(),
                },
            ),
        };
        let command = Command {
            client: client.id,
            seq: client.seq,
            op,
        };
        let op_index = if matches!(command.op, Op::Append { .. }) {
            usize::MAX // appends change no key: not in the history
        } else {
            self.history.push(Operation {
                key,
                op: record,
                call,
                ret: None,
            });
            self.history.len() - 1
        };
        client.pending = Some(Pending {
            op: op_index,
            command: Some(command),
            read_key: None,
            started: self.sim.now,
            attempt: None,
        });
    }

    fn drive(&mut self, k: usize, issue_new: bool) {
        if self.clients[k].pending.is_none() {
            if issue_new {
                self.start_op(k);
            }
            return;
        }
        let now = self.sim.now;
        let pending = self.clients[k].pending.as_mut().unwrap();
        if now >= pending.started + GIVE_UP {
            // Unknown outcome: the history keeps the call with no return.
            self.clients[k].pending = None;
            self.gave_up += 1;
            return;
        }
        match pending.attempt.take() {
            None => self.try_send(k),
            Some((attempt, sent)) => {
                if let Some(done) = self.check_attempt(k, &attempt) {
                    self.finish(k, done);
                } else if now >= sent + ATTEMPT || self.attempt_failed(&attempt) {
                    let n = self.sim.n() as NodeId;
                    self.clients[k].leader_guess = self.rng.random_range(0..n);
                } else {
                    self.clients[k].pending.as_mut().unwrap().attempt = Some((attempt, sent));
                }
            }
        }
    }

    /// Sends the pending operation to the node the client believes leads.
    fn try_send(&mut self, k: usize) {
        let target = self.clients[k].leader_guess;
        let n = self.sim.n() as NodeId;
        let node = &mut self.sim.nodes[target as usize];
        let incarnation = node.incarnation;
        let (raft, kv) = (&mut node.raft, &node.kv);
        let Some(raft) = raft.as_mut() else {
            self.clients[k].leader_guess = self.rng.random_range(0..n);
            return;
        };
        if raft.role() != Role::Leader {
            // Follow the hint, or guess again.
            self.clients[k].leader_guess = raft
                .leader_id()
                .unwrap_or_else(|| self.rng.random_range(0..n));
            return;
        }
        let now = self.sim.now;
        let pending = self.clients[k].pending.as_mut().unwrap();
        if let Some(command) = &pending.command {
            // A retry of something already applied is answered from the
            // session, as the real node does.
            if let Some((outcome, index)) = kv.outcome(command.client, command.seq) {
                let done = Done::Write(outcome.clone(), index);
                self.finish(k, done);
                return;
            }
            let (index, term) = raft.propose(command.encode()).expect("checked leader");
            pending.attempt = Some((
                Attempt::Write {
                    node: target,
                    incarnation,
                    index,
                    term,
                },
                now,
            ));
        } else {
            let ctx = self.next_ctx;
            self.next_ctx += 1;
            raft.read_index(ctx).expect("checked leader");
            pending.attempt = Some((
                Attempt::Read {
                    node: target,
                    incarnation,
                    ctx,
                },
                now,
            ));
        }
        self.sim.after_client_input(target);
    }

    fn attempt_failed(&self, attempt: &Attempt) -> bool {
        let (node, incarnation) = match attempt {
            Attempt::Write {
                node, incarnation, ..
            }
            | Attempt::Read {
                node, incarnation, ..
            } => (*node, *incarnation),
        };
        let n = &self.sim.nodes[node as usize];
        if n.incarnation != incarnation || n.raft.is_none() {
            return true;
        }
        match attempt {
            Attempt::Write { index, term, .. } => {
                let r = n.raft.as_ref().unwrap();
                r.term() != *term
                    || r.log().term_at(*index).is_some_and(|t| t != *term)
                    || n.kv.applied_index() >= *index
            }
            Attempt::Read { ctx, .. } => n.reads.iter().any(|r| r.ctx == *ctx && r.index.is_none()),
        }
    }

    /// Whether the attempt has completed, and how.
    fn check_attempt(&mut self, k: usize, attempt: &Attempt) -> Option<Done> {
        let pending = self.clients[k].pending.as_ref().unwrap();
        match attempt {
            Attempt::Write {
                node, incarnation, ..
            } => {
                let n = &self.sim.nodes[*node as usize];
                if n.incarnation != *incarnation {
                    return None;
                }
                let c = pending.command.as_ref().unwrap();
                n.kv.outcome(c.client, c.seq)
                    .map(|(o, i)| Done::Write(o.clone(), i))
            }
            Attempt::Read {
                node,
                incarnation,
                ctx,
            } => {
                let n = &mut self.sim.nodes[*node as usize];
                if n.incarnation != *incarnation {
                    return None;
                }
                let index = n
                    .reads
                    .iter()
                    .find(|r| r.ctx == *ctx)
                    .and_then(|r| r.index)?;
                if n.kv.applied_index() < index {
                    return None;
                }
                n.reads.retain(|r| r.ctx != *ctx);
                let key = pending.read_key.as_ref().unwrap();
                Some(Done::Read(n.kv.get(key).map(str::to_string)))
            }
        }
    }

    fn finish(&mut self, k: usize, done: Done) {
        let pending = self.clients[k].pending.take().unwrap();
        self.completed += 1;
        let ret = Some(self.t());
        if let Done::Write(Outcome::SessionExpired, _) = done {
            // The node no longer (or never) knew this client: the write may
            // or may not have happened, as for a timeout. (Here: the
            // client's first write was lost, so its next one found no
            // session.) The history keeps the call with no return.
            self.gave_up += 1;
            return;
        }
        if let Some(Command {
            op: Op::Append { .. },
            client,
            seq,
        }) = &pending.command
        {
            self.acked_appends.push((*client, *seq));
            return;
        }
        let h = &mut self.history[pending.op];
        h.ret = ret;
        match (&mut h.op, done) {
            (KvOp::Get { value }, Done::Read(v)) => *value = v,
            (KvOp::Put { .. }, Done::Write(o, _)) => {
                assert_eq!(o, Outcome::Ok, "a put always succeeds")
            }
            (KvOp::Delete { existed }, Done::Write(o, _)) => *existed = Some(o == Outcome::Ok),
            (KvOp::Cas { result, .. }, Done::Write(o, _)) => {
                *result = Some(match o {
                    Outcome::Ok => Ok(()),
                    Outcome::PreconditionFailed { actual } => Err(actual),
                    other => panic!("cas outcome {other:?}"),
                })
            }
            (op, done) => panic!("mismatched completion {op:?} / {done:?}"),
        }
    }
}

#[derive(Debug)]
enum Done {
    Write(Outcome, Index),
    Read(Option<String>),
}
