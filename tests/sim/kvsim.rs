//! Key-value clients over the simulated cluster.
//!
//! Each simulated client is a session (client id, numbered writes) with one
//! operation outstanding, driven the way the real client library drives a
//! cluster: send to the node it believes leads, follow the node's leader
//! hint, retry elsewhere with the same number after a timeout or a change
//! of leader, give up after a while. Each node answers through its
//! `ClientService`, the code that answers real clients: a write completes
//! when the node it was sent to has applied it (the session table then
//! holds its outcome); a read completes through ReadIndex (thesis §6.4):
//! the leader confirms the read, its state machine catches up to the read
//! index, and the value is read there. Clients reach every node (they sit
//! outside partitions).
//!
//! Every call and return is recorded in a history for the linearizability
//! checker; an operation that never returned has an unknown outcome.

use std::time::Duration;

use raft::consensus::{Index, NodeId};
use raft::kv::{ClientId, Command, Op, Outcome};
use raft::lincheck::{KvOp, Operation};
use raft::service::{ReadTicket, Step, WriteTicket};
use raft::wire::{ErrorCode, Response};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{MS, Sim};

/// How long one attempt at one node may take before the client tries
/// another, and how long before it gives up on the operation.
const ATTEMPT: Duration = Duration::from_millis(1000);
const GIVE_UP: Duration = Duration::from_secs(8);

/// An operation waiting at one incarnation of one node.
struct Attempt {
    node: NodeId,
    incarnation: u64,
    ticket: Ticket,
}

enum Ticket {
    Write(WriteTicket),
    Read(ReadTicket),
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
            Some((attempt, sent)) => match self.poll(&attempt) {
                Some(answer) => self.answered(k, answer),
                None if now >= sent + ATTEMPT => {
                    // The client stops waiting on this node.
                    self.abandon(&attempt);
                    self.guess_again(k, None);
                }
                None => self.clients[k].pending.as_mut().unwrap().attempt = Some((attempt, sent)),
            },
        }
    }

    /// Points client `k` at the hinted leader, or at a random node.
    fn guess_again(&mut self, k: usize, hint: Option<NodeId>) {
        let n = self.sim.n() as NodeId;
        self.clients[k].leader_guess = hint.unwrap_or_else(|| self.rng.random_range(0..n));
    }

    /// Sends the pending operation to the node the client believes leads,
    /// through that node's client service.
    fn try_send(&mut self, k: usize) {
        let target = self.clients[k].leader_guess;
        let now = self.sim.local_now(target);
        let node = &mut self.sim.nodes[target as usize];
        let incarnation = node.incarnation;
        let Some(raft) = node.raft.as_mut() else {
            self.guess_again(k, None); // connection refused
            return;
        };
        let pending = self.clients[k].pending.as_ref().unwrap();
        let step = match (&pending.command, &pending.read_key) {
            (Some(command), _) => match node.clients.write(raft, &node.kv, command.clone()) {
                Step::Answer(a) => Step::Answer(a),
                Step::Wait(t) => Step::Wait(Ticket::Write(t)),
            },
            (None, Some(key)) => match node.clients.read(raft, &node.kv, key.clone(), now) {
                Step::Answer(a) => Step::Answer(a),
                Step::Wait(t) => Step::Wait(Ticket::Read(t)),
            },
            (None, None) => unreachable!("an operation is a write or a read"),
        };
        match step {
            Step::Answer(answer) => self.answered(k, answer),
            Step::Wait(ticket) => {
                let attempt = Attempt {
                    node: target,
                    incarnation,
                    ticket,
                };
                let now = self.sim.now;
                self.clients[k].pending.as_mut().unwrap().attempt = Some((attempt, now));
                self.sim.after_client_input(target);
            }
        }
    }

    /// The node's answer to an attempt, once it has one. A node that
    /// crashed since never answers (the client's connection broke).
    fn poll(&mut self, attempt: &Attempt) -> Option<Response> {
        let now = self.sim.local_now(attempt.node);
        let n = &mut self.sim.nodes[attempt.node as usize];
        if n.incarnation != attempt.incarnation || n.raft.is_none() {
            return Some(Response::error(ErrorCode::Timeout, "connection lost"));
        }
        let raft = n.raft.as_ref().unwrap();
        match &attempt.ticket {
            Ticket::Write(t) => n.clients.poll_write(raft, &n.kv, t),
            Ticket::Read(t) => n.clients.poll_read(raft, &n.kv, t, now),
        }
    }

    fn abandon(&mut self, attempt: &Attempt) {
        let n = &mut self.sim.nodes[attempt.node as usize];
        if let (Ticket::Read(t), true) = (&attempt.ticket, n.incarnation == attempt.incarnation) {
            n.clients.forget_read(t);
        }
    }

    /// Acts on a node's answer as the client library does: a result ends
    /// the operation; `not_leader` or a lost connection sends it to the
    /// hinted leader or another node, with the same number.
    fn answered(&mut self, k: usize, answer: Response) {
        match answer {
            Response::Written { outcome, index } => self.finish(k, Done::Write(outcome, index)),
            Response::Value { value, .. } => self.finish(k, Done::Read(value)),
            Response::Error {
                code: ErrorCode::NotLeader,
                leader_id,
                ..
            } => self.guess_again(k, leader_id),
            Response::Error {
                code: ErrorCode::Timeout,
                ..
            } => self.guess_again(k, None),
            other => panic!("unexpected answer {other:?}"),
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
