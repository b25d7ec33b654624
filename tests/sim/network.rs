//! The simulated network: each request ends, for the sender, in exactly
//! one reply or one failure (after `rpc_timeout`); each direction of a
//! link delivers in order, save for long delays; requests and replies are
//! dropped, delayed, duplicated, reordered, cut by partitions, and now and
//! then followed by a forged, rule-breaking copy.

use std::cmp::Reverse;
use std::time::Duration;

use raft::consensus::{Index, MAX_TERM, NodeId, Payload, Request, Term};
use raft::wire::{ErrorCode, PeerRequest, Response};
use rand::RngExt;

use super::{MS, SIM_CLUSTER, Sim};

/// How the simulated network misbehaves.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Probability that a request, and separately its reply, is lost.
    pub drop: f64,
    /// Probability that a delivered request is delivered a second time.
    pub duplicate: f64,
    /// One-way delay, uniform in this range.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Probability of a long delay (up to `long_delay`), which reorders.
    pub long_delay_chance: f64,
    pub long_delay: Duration,
    /// A sender gives up on an RPC after this long.
    pub rpc_timeout: Duration,
}

impl NetConfig {
    pub fn reliable() -> NetConfig {
        NetConfig {
            drop: 0.0,
            duplicate: 0.0,
            min_delay: MS,
            max_delay: 5 * MS,
            long_delay_chance: 0.0,
            long_delay: Duration::ZERO,
            rpc_timeout: 150 * MS,
        }
    }

    /// Roughly the MIT labrpc "unreliable" network: 10% loss, up to 27 ms
    /// of delay, some duplicates and long reorderings.
    pub fn unreliable() -> NetConfig {
        NetConfig {
            drop: 0.1,
            duplicate: 0.05,
            min_delay: Duration::ZERO,
            max_delay: 27 * MS,
            long_delay_chance: 0.05,
            long_delay: 400 * MS,
            rpc_timeout: 150 * MS,
        }
    }
}

pub(super) enum Msg {
    Request {
        rpc: u64,
        from: NodeId,
        to: NodeId,
        request: Request,
    },
    /// Replies say what they answer: no copy of the request comes back.
    Reply {
        rpc: u64,
        to: NodeId,
        incarnation: u64,
        from: NodeId,
        response: Response,
    },
    Timeout {
        rpc: u64,
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
    /// A rule-breaking copy of a real request, as a confused or
    /// misconfigured node (or someone with `nc`) might send it.
    Forged { to: NodeId, request: PeerRequest },
    /// A leader's log sync, started when the log ended at `point`, has
    /// ended.
    Synced {
        node: NodeId,
        incarnation: u64,
        point: (Index, Term),
    },
}

pub(super) struct Scheduled {
    pub(super) at: Duration,
    seq: u64,
    pub(super) msg: Msg,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

impl Sim {
    pub fn disconnect(&mut self, id: NodeId) {
        self.connected[id as usize] = false;
    }

    pub fn connect(&mut self, id: NodeId) {
        self.connected[id as usize] = true;
    }

    /// Splits the nodes into groups that cannot reach each other.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                self.group[m as usize] = g as u32;
            }
        }
    }

    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.connected.iter_mut().for_each(|c| *c = true);
    }

    pub(super) fn reachable(&self, a: NodeId, b: NodeId) -> bool {
        self.connected[a as usize]
            && self.connected[b as usize]
            && self.group[a as usize] == self.group[b as usize]
    }

    /// When a message sent now from `from` to `to` arrives: after every
    /// earlier one on the link, unless it draws a long delay.
    pub(super) fn arrival(&mut self, from: NodeId, to: NodeId) -> Duration {
        if self.chance(self.net.long_delay_chance) {
            let long = self
                .rng
                .random_range(0..=self.net.long_delay.as_nanos() as u64);
            return self.now + Duration::from_nanos(long);
        }
        let (lo, hi) = (
            self.net.min_delay.as_nanos() as u64,
            self.net.max_delay.as_nanos() as u64,
        );
        let at = self.now + Duration::from_nanos(self.rng.random_range(lo..=hi));
        let clock = self.link_clock.entry((from, to)).or_default();
        *clock = (*clock).max(at);
        *clock
    }

    pub(super) fn delay(&mut self) -> Duration {
        if self.chance(self.net.long_delay_chance) {
            return Duration::from_nanos(
                self.rng
                    .random_range(0..=self.net.long_delay.as_nanos() as u64),
            );
        }
        let (lo, hi) = (
            self.net.min_delay.as_nanos() as u64,
            self.net.max_delay.as_nanos() as u64,
        );
        Duration::from_nanos(self.rng.random_range(lo..=hi))
    }

    pub(super) fn schedule(&mut self, at: Duration, msg: Msg) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            msg,
        }));
    }

    pub(super) fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Request {
                rpc,
                from,
                to,
                request,
            } => {
                if !self.reachable(from, to) || !self.is_up(to) {
                    return; // the sender's timeout will fire
                }
                if self.chance(self.net.duplicate) {
                    let at = self.now + self.delay();
                    self.schedule(
                        at,
                        Msg::Request {
                            rpc,
                            from,
                            to,
                            request: request.clone(),
                        },
                    );
                }
                let now = self.local_now(to);
                let node = &mut self.nodes[to as usize];
                let envelope = PeerRequest {
                    cluster: SIM_CLUSTER.into(),
                    from,
                    rpc: request.clone(),
                };
                let answer = node
                    .peers
                    .handle(node.raft.as_mut().unwrap(), envelope, now);
                if let Some(line) = answer.report {
                    // A vote request from a server whose removal is
                    // committed is refused, rightly (`removed`).
                    let removed = matches!(
                        &answer.response,
                        Response::Error {
                            code: ErrorCode::Removed,
                            ..
                        }
                    );
                    if !removed || !self.removal_committed(from) {
                        self.fail(format!(
                            "node {to} refused a correct node's message: {line}"
                        ));
                    }
                }
                self.after(to); // persisted before the reply leaves
                if !self.is_up(to) {
                    return; // its disk failed: it stopped without answering
                }
                if self.chance(self.net.drop) {
                    return;
                }
                let incarnation = self.nodes[from as usize].incarnation;
                let at = self.arrival(to, from);
                self.schedule(
                    at,
                    Msg::Reply {
                        rpc,
                        to: from,
                        incarnation,
                        from: to,
                        response: answer.response,
                    },
                );
            }
            Msg::Reply {
                rpc,
                to,
                incarnation,
                from,
                response,
            } => {
                // A reply crossing a partition made after it left is lost.
                if !self.reachable(from, to) || self.completed.contains(&rpc) {
                    return;
                }
                let now = self.local_now(to);
                let node = &mut self.nodes[to as usize];
                if node.incarnation != incarnation || node.raft.is_none() {
                    return;
                }
                self.completed.insert(rpc);
                let (reply, line) = node.peers.check_response(from, response);
                if node.peers.take_removed().is_some() {
                    // Told it was removed: it stops for good.
                    self.crash(to);
                    self.retired.insert(to);
                    return;
                }
                let raft = node.raft.as_mut().unwrap();
                let refused = match reply {
                    Some(reply) => raft.handle_reply(from, reply, now).err(),
                    None => {
                        raft.handle_failure(from, now);
                        None
                    }
                };
                if let Some(problem) = line.or(refused.map(|r| r.to_string())) {
                    self.fail(format!(
                        "node {to} refused a correct node's reply: {problem}"
                    ));
                }
                self.after(to);
            }
            Msg::Forged { to, request } => self.deliver_forged(to, request),
            Msg::Synced {
                node,
                incarnation,
                point,
            } => self.synced(node, incarnation, point),
            Msg::Timeout {
                rpc,
                node,
                incarnation,
                peer,
            } => {
                if !self.completed.insert(rpc) {
                    return;
                }
                let now = self.local_now(node);
                let n = &mut self.nodes[node as usize];
                if n.incarnation != incarnation || n.raft.is_none() {
                    return;
                }
                n.raft.as_mut().unwrap().handle_failure(peer, now);
                self.after(node);
            }
        }
    }

    /// Whether a committed membership (by the checker's record of what was
    /// committed) removed `id`.
    fn removal_committed(&self, id: NodeId) -> bool {
        self.checker
            .committed
            .values()
            .any(|e| matches!(&e.payload, Payload::Membership(m) if m.removed.contains(&id)))
    }

    pub(super) fn send(&mut self, from: NodeId, to: NodeId, mut request: Request) {
        self.rpc_count += 1;
        if let Request::InstallSnapshot(is) = &mut request {
            // The runtime's part: fill in a chunk of the snapshot's bytes.
            let node = &self.nodes[from as usize];
            let Some((_, bytes)) = node
                .disk
                .snapshot
                .iter()
                .chain(&node.disk.replaced_snapshots)
                .find(|(meta, _)| *meta == is.snapshot)
            else {
                self.fail(format!("node {from} sends a snapshot it does not have"));
            };
            let start = is.offset as usize;
            let mut end = (start + self.rng.random_range(1..=self.max_chunk)).min(bytes.len());
            while !bytes.is_char_boundary(end) {
                end -= 1;
            }
            is.data = bytes[start..end].to_string();
        }
        if std::env::var_os("SIM_TRACE").is_some() {
            let what = match &request {
                Request::AppendEntries(ae) => format!(
                    "append prev {} entries {} commit {} round {}",
                    ae.prev_log_index,
                    ae.entries.len(),
                    ae.leader_commit,
                    ae.read_round
                ),
                Request::RequestVote(rv) => format!(
                    "{} term {}",
                    if rv.pre_vote { "pre-vote" } else { "vote" },
                    rv.term
                ),
                Request::TimeoutNow(tn) => format!("timeout-now term {}", tn.term),
                Request::InstallSnapshot(is) => format!(
                    "snapshot {} offset {} len {} of {}",
                    is.snapshot.last_index,
                    is.offset,
                    is.data.len(),
                    is.snapshot.size
                ),
            };
            eprintln!("{:>12?} n{from} -> n{to} {what}", self.now);
        }
        if let Request::AppendEntries(ae) = &request {
            for e in &ae.entries {
                if let Payload::Command(d) = &e.payload {
                    self.payload_bytes_sent += d.text().len() as u64;
                }
            }
        }
        if self.chance(self.forge) {
            let forged = self.forge_copy(from, &request);
            let at = self.now + self.delay();
            self.schedule(
                at,
                Msg::Forged {
                    to,
                    request: forged,
                },
            );
        }
        self.next_rpc += 1;
        let rpc = self.next_rpc;
        let incarnation = self.nodes[from as usize].incarnation;
        let timeout_at = self.now + self.net.rpc_timeout;
        self.schedule(
            timeout_at,
            Msg::Timeout {
                rpc,
                node: from,
                incarnation,
                peer: to,
            },
        );
        if self.reachable(from, to) && !self.chance(self.net.drop) {
            let at = self.arrival(from, to);
            self.schedule(
                at,
                Msg::Request {
                    rpc,
                    from,
                    to,
                    request,
                },
            );
        }
    }

    /// A copy of `request` (sent by `from`) broken in one random way that
    /// every node must refuse whatever its state: another cluster, a
    /// stranger or the receiver's own id as sender, a sender that is not
    /// the named leader or candidate, a term beyond `MAX_TERM`, entries
    /// out of order or with decreasing terms or a term above the message's,
    /// a log position newer than the message's term.
    fn forge_copy(&mut self, from: NodeId, request: &Request) -> PeerRequest {
        let n = self.n() as NodeId;
        let mut forged = PeerRequest {
            cluster: SIM_CLUSTER.into(),
            from,
            rpc: request.clone(),
        };
        let kind = self.rng.random_range(0..9);
        match (&mut forged.rpc, kind) {
            (_, 0) => forged.cluster = "another-cluster".into(),
            (_, 1) => forged.from = n + self.rng.random_range(0..5),
            (Request::RequestVote(rv), 2) => rv.candidate_id = (from + 1) % n,
            (Request::AppendEntries(ae), 2) => ae.leader_id = (from + 1) % n,
            (Request::InstallSnapshot(is), 2) => is.leader_id = (from + 1) % n,
            (Request::TimeoutNow(tn), 2) => tn.leader_id = (from + 1) % n,
            (Request::TimeoutNow(tn), _) => tn.term = MAX_TERM + 1,
            (Request::RequestVote(rv), 3) => rv.term = MAX_TERM + 1,
            (Request::AppendEntries(ae), 3) => ae.term = MAX_TERM + self.rng.random_range(1..9),
            (Request::InstallSnapshot(is), 3) => is.term = MAX_TERM + 1,
            (Request::InstallSnapshot(is), 4) => is.snapshot.last_term = is.term + 1,
            (Request::InstallSnapshot(is), 5) => is.snapshot.last_index = 0,
            (Request::InstallSnapshot(is), _) => {
                is.offset = is.snapshot.size + 1 - is.data.len().min(1) as u64
            }
            (Request::RequestVote(rv), _) => rv.last_log_term = rv.term + 1,
            (Request::AppendEntries(ae), 4..6) if !ae.entries.is_empty() => {
                let k = self.rng.random_range(0..ae.entries.len());
                ae.entries[k].index += self.rng.random_range(1..4);
            }
            (Request::AppendEntries(ae), 6) if !ae.entries.is_empty() => {
                let k = self.rng.random_range(0..ae.entries.len());
                ae.entries[k].term = ae.term + 1;
            }
            (Request::AppendEntries(ae), 7) if ae.prev_log_term > 0 && !ae.entries.is_empty() => {
                ae.entries[0].term = ae.prev_log_term - 1;
            }
            (Request::AppendEntries(ae), _) => ae.prev_log_term = ae.term + 1,
        }
        forged
    }

    fn deliver_forged(&mut self, to: NodeId, request: PeerRequest) {
        let now = self.local_now(to);
        let node = &mut self.nodes[to as usize];
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let before = (raft.hard_state(), raft.role(), raft.log().last_index());
        let description = format!("{request:?}");
        let answer = node.peers.handle(raft, request, now);
        let after = (raft.hard_state(), raft.role(), raft.log().last_index());
        if !matches!(answer.response, Response::Error { .. }) || before != after {
            self.fail(format!(
                "node {to} accepted a forged request {description}: {:?}",
                answer.response
            ));
        }
        self.forged_refused += 1;
        self.after(to);
    }
}
