//! The threaded runtime around the pure core.
//!
//! Threads of one node:
//!
//! * **timer**: waits on the condvar until the election deadline (or, as
//!   leader, until something changes) and calls `Raft::tick`;
//! * **replicator**, one per peer: builds the next request for its peer
//!   under the lock, releases the lock for the blocking RPC, re-locks, and
//!   hands the reply to the core, dropping it if the term or role changed
//!   meanwhile (a reply to a request from an earlier term or role says
//!   nothing about the present one; the Raft Students' Guide makes the same
//!   point);
//! * **applier**: applies committed entries to the key-value store in log
//!   order, once each, and wakes the requests waiting for them;
//! * the **server** threads (see `server`), whose handlers step the core.
//!
//! There is one mutex, over `State`. Whoever steps the core persists the
//! resulting `Ready` (fsync) before releasing the mutex, so any state
//! another thread can observe (and any reply or request built from it) is
//! already durable: the core's contract.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::config::{ClusterConfig, Member};
use crate::consensus::{
    self, Entry, Event, Index, NodeId, Raft, Reply, Request, Role, VoteRefusal,
};
use crate::kv::{ClientId, KvStore};
use crate::server::{self, Handled, Handler, ServerOptions};
use crate::storage::{Storage, StorageError};
use crate::transport;
use crate::wire::{self, ErrorCode, NodeStatus, Response};

/// How a node runs; the binary fills this from its flags.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub id: NodeId,
    pub cluster: ClusterConfig,
    /// This node's own directory, e.g. /tmp/state/node4.
    pub state_dir: PathBuf,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat: Duration,
    /// Bounds each peer RPC (connect, send, receive).
    pub rpc_timeout: Duration,
    pub max_entries_per_append: usize,
    pub server: ServerOptions,
}

#[derive(Debug)]
pub enum NodeError {
    UnknownId(NodeId),
    Storage(StorageError),
    Bind {
        address: String,
        source: std::io::Error,
    },
    Spawn(std::io::Error),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::UnknownId(id) => write!(f, "node id {id} is not in the configuration"),
            NodeError::Storage(e) => write!(f, "{e}"),
            NodeError::Bind { address, source } => {
                write!(f, "cannot listen on {address}: {source}")
            }
            NodeError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for NodeError {}

/// Everything behind the one mutex.
struct State {
    /// The protocol state. Written by every thread, always under the lock,
    /// and each write is followed by `Shared::sync` before unlocking.
    raft: Raft,
    /// Written only inside `Shared::sync`, under the lock.
    storage: Storage,
    /// Committed entries not yet taken by the applier, in log order.
    /// Filled by `sync`, drained by the applier.
    apply_queue: VecDeque<Entry>,
    /// The state machine. Written by the applier only, in log order.
    kv: KvStore,
    /// Linearizable reads in progress, by the `ctx` given to
    /// `Raft::read_index`: `None` until the core answers (filled by
    /// `sync`), removed by the waiting request handler.
    reads: HashMap<u64, Option<Option<Index>>>,
    /// The next `ctx` for `Raft::read_index`.
    next_read: u64,
    /// Set by `Node::stop_and_exit`, which keeps the lock until the process
    /// exits, so today no other thread ever sees it set. The loops and
    /// handlers still check it so that they stay correct if a node is one
    /// day stopped without ending the process (in-process tests, say).
    stopping: bool,
}

struct Shared {
    id: NodeId,
    members: Vec<Member>,
    /// Time origin for the core's `now`.
    epoch: Instant,
    state: Mutex<State>,
    /// Notified (`notify_all`) by exactly two places:
    /// * `Shared::sync`, after every input to the core (a tick, a peer
    ///   request, a reply or failure, a proposal, a read request), so after
    ///   every change of term, role, log, commit index or read state;
    /// * the applier, after each batch of entries it applies.
    ///
    /// Waiters, and what they wait for:
    /// * the timer: an election deadline that moved or appeared;
    /// * replicators: a request that became due for their peer;
    /// * the applier: newly committed entries;
    /// * request handlers: their write applied, their read confirmed and
    ///   applied, or a change of leadership that ends their wait.
    ///
    /// No thread needs waking to stop: `Node::stop_and_exit` ends the
    /// process while holding the lock.
    changed: Condvar,
}

/// A running node. Dropping it does not stop the threads; the process
/// ends with `stop_and_exit`.
pub struct Node {
    shared: Arc<Shared>,
    address: std::net::SocketAddr,
}

fn now(shared: &Shared) -> Duration {
    shared.epoch.elapsed()
}

impl Node {
    /// Opens storage, binds the listening socket and starts every thread.
    pub fn start(options: NodeOptions) -> Result<Node, NodeError> {
        let me = options
            .cluster
            .member(options.id)
            .ok_or(NodeError::UnknownId(options.id))?
            .clone();
        let (storage, recovered) = Storage::open(&options.state_dir).map_err(NodeError::Storage)?;
        if let Some((offset, bytes)) = recovered.torn_tail {
            warn!(
                "{}: cut a torn final record ({bytes} bytes at offset {offset}) left by a crash during a write",
                options.state_dir.join("log.jsonl").display()
            );
        }
        let listener =
            TcpListener::bind((me.host.as_str(), me.port)).map_err(|source| NodeError::Bind {
                address: me.address(),
                source,
            })?;

        let peers: Vec<Member> = options
            .cluster
            .members
            .iter()
            .filter(|m| m.id != options.id)
            .cloned()
            .collect();
        let raft_config = consensus::Config {
            id: options.id,
            peers: peers.iter().map(|m| m.id).collect(),
            election_timeout_min: options.election_timeout_min,
            election_timeout_max: options.election_timeout_max,
            heartbeat_interval: options.heartbeat,
            max_entries_per_append: options.max_entries_per_append,
            // Leaves room under the 8 MiB line limit for JSON escaping.
            max_bytes_per_append: 1024 * 1024,
            // Differs between nodes and restarts, from the OS's randomness.
            seed: rand::random(),
        };
        let epoch = Instant::now();
        let last = (
            recovered.entries.len(),
            recovered.entries.last().map_or(0, |e| e.term),
        );
        let raft = Raft::new(
            raft_config,
            recovered.hard_state,
            recovered.entries,
            Duration::ZERO,
        );
        info!(
            "[T{} Follower] started on {} with term {}, voted_for {}, log {} entries (last term {}); state in {}",
            raft.term(),
            me.address(),
            raft.term(),
            raft.voted_for()
                .map_or("none".to_string(), |v| format!("node{v}")),
            last.0,
            last.1,
            options.state_dir.display()
        );
        let shared = Arc::new(Shared {
            id: options.id,
            members: options.cluster.members.clone(),
            epoch,
            state: Mutex::new(State {
                raft,
                storage,
                apply_queue: VecDeque::new(),
                kv: KvStore::new(),
                reads: HashMap::new(),
                next_read: 0,
                stopping: false,
            }),
            changed: Condvar::new(),
        });

        let bind_ip: Option<IpAddr> = listener
            .local_addr()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name)
                .spawn(f)
                .map(|_| ())
                .map_err(NodeError::Spawn)
        };
        {
            let s = shared.clone();
            spawn("timer".into(), Box::new(move || s.run_timer()))?;
            let s = shared.clone();
            spawn("applier".into(), Box::new(move || s.run_applier()))?;
        }
        for peer in peers {
            let s = shared.clone();
            let client = transport::Peer::new(peer.clone(), bind_ip, options.rpc_timeout);
            spawn(
                format!("replicate-{}", peer.id),
                Box::new(move || s.run_replicator(peer.id, client)),
            )?;
        }
        let address = server::spawn(listener, Arc::new(Service(shared.clone())), options.server)
            .map_err(NodeError::Spawn)?;
        Ok(Node { shared, address })
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Stops the node and exits the process with `code`. Taking the lock
    /// waits for any write in progress (writes happen under it), and
    /// holding it until exit keeps a new one from starting.
    pub fn stop_and_exit(&self, reason: &str, code: i32) -> ! {
        let mut st = self.shared.state.lock();
        st.stopping = true;
        info!(
            "[T{} {}] stopped: {reason} (commit index {}, last log index {})",
            st.raft.term(),
            st.raft.role(),
            st.raft.commit_index(),
            st.raft.log().last_index()
        );
        log::logger().flush();
        std::process::exit(code)
    }

    pub fn status(&self) -> NodeStatus {
        self.shared.status(&self.shared.state.lock())
    }
}

impl Shared {
    /// Takes the core's `Ready`, makes it durable, logs its events, queues
    /// committed entries and wakes every waiter. Called under the lock
    /// after every input to the core. A storage failure is fatal: a node
    /// that cannot persist must not answer anything.
    fn sync(&self, st: &mut State) {
        let ready = st.raft.take_ready();
        if let Err(e) = st.storage.persist(&ready) {
            error!("cannot persist state: {e}; stopping");
            log::logger().flush();
            eprintln!("raftnode: cannot persist state: {e}");
            std::process::exit(1);
        }
        for event in &ready.events {
            self.log_event(&st.raft, event);
        }
        st.apply_queue.extend(ready.committed);
        for read in ready.reads {
            if let Some(slot) = st.reads.get_mut(&read.ctx) {
                *slot = Some(read.index);
            }
        }
        self.changed.notify_all();
    }

    fn log_event(&self, raft: &Raft, event: &Event) {
        let prefix = format!("[T{} {}]", raft.term(), raft.role());
        let addr = |id: NodeId| format!("node{id}");
        match event {
            Event::RoleChanged { role, term } => info!("{prefix} STATE: {role} | TERM: {term}"),
            Event::TermAdopted { term, from } => {
                info!("{prefix} adopted term {term} seen from {}", addr(*from))
            }
            Event::LeaderKnown { leader, term } => {
                info!("{prefix} leader for term {term} is {}", addr(*leader))
            }
            Event::ElectionStarted {
                term,
                last_log_index,
                last_log_term,
            } => info!(
                "{prefix} election started for term {term} (last log index {last_log_index}, term {last_log_term})"
            ),
            Event::ElectionWon {
                term,
                votes,
                cluster_size,
            } => {
                info!("{prefix} election won for term {term} with {votes} of {cluster_size} votes")
            }
            Event::ElectionLost {
                term,
                votes,
                refusals,
                cluster_size,
            } => info!(
                "{prefix} election lost for term {term}: {votes} votes, {refusals} refusals of {cluster_size}"
            ),
            Event::VoteGranted { candidate, term } => info!(
                "{prefix} vote granted to {} for term {term}",
                addr(*candidate)
            ),
            Event::VoteRefused {
                candidate,
                term,
                reason,
            } => {
                let why = match reason {
                    VoteRefusal::StaleTerm => format!("its term {term} is older than ours"),
                    VoteRefusal::AlreadyVoted(v) => {
                        format!("already voted for {} this term", addr(*v))
                    }
                    VoteRefusal::LogBehind { ours, theirs } => format!(
                        "its log (last term {}, index {}) is behind ours (last term {}, index {})",
                        theirs.0, theirs.1, ours.0, ours.1
                    ),
                };
                info!(
                    "{prefix} vote refused to {} for term {term}: {why}",
                    addr(*candidate)
                )
            }
            Event::Appended { from, to } if from == to => info!("{prefix} appended entry {from}"),
            Event::Appended { from, to } => info!("{prefix} appended entries {from}..={to}"),
            Event::Truncated { from, removed } => {
                warn!("{prefix} removed {removed} conflicting entries from index {from}")
            }
            Event::Committed { index } => info!("{prefix} committed up to index {index}"),
            Event::PeerUnreachable { peer } => warn!(
                "{prefix} {} is unreachable; retrying with backoff",
                addr(*peer)
            ),
            Event::PeerReachable { peer } => info!("{prefix} {} is reachable again", addr(*peer)),
        }
    }

    fn status(&self, st: &State) -> NodeStatus {
        NodeStatus {
            id: self.id,
            role: st.raft.role().to_string().to_lowercase(),
            term: st.raft.term(),
            leader_id: st.raft.leader_id(),
            commit_index: st.raft.commit_index(),
            last_log_index: st.raft.log().last_index(),
            last_applied: st.kv.applied_index(),
        }
    }

    fn run_timer(&self) {
        let mut st = self.state.lock();
        while !st.stopping {
            st.raft.tick(now(self));
            self.sync(&mut st);
            match st.raft.election_deadline() {
                Some(deadline) => {
                    self.changed.wait_until(&mut st, self.epoch + deadline);
                }
                None => self.changed.wait(&mut st),
            }
        }
    }

    fn run_replicator(&self, peer: NodeId, mut client: transport::Peer) {
        let mut st = self.state.lock();
        while !st.stopping {
            let t = now(self);
            let Some(request) = st.raft.poll_peer(peer, t) else {
                match st.raft.peer_wakeup(peer) {
                    Some(at) => {
                        self.changed.wait_until(&mut st, self.epoch + at);
                    }
                    None => self.changed.wait(&mut st),
                }
                continue;
            };
            let (term, role) = (st.raft.term(), st.raft.role());
            let wire_request = match &request {
                Request::RequestVote(r) => wire::Request::RequestVote(r.clone()),
                Request::AppendEntries(r) => {
                    if r.entries.is_empty() {
                        log::trace!(
                            "heartbeat to node{peer} (term {term}, commit {})",
                            r.leader_commit
                        );
                    }
                    wire::Request::AppendEntries(r.clone())
                }
            };
            // The blocking RPC, with the lock released.
            let result = MutexGuard::unlocked(&mut st, || client.call(&wire_request));
            let t = now(self);
            if st.raft.term() != term || st.raft.role() != role {
                debug!("dropping the answer from node{peer} to a term {term} {role} request");
                continue;
            }
            match result {
                Ok(Response::RequestVote(r)) => {
                    st.raft
                        .handle_reply(peer, &request, Reply::RequestVote(r), t)
                }
                Ok(Response::AppendEntries(r)) => {
                    st.raft
                        .handle_reply(peer, &request, Reply::AppendEntries(r), t)
                }
                Ok(other) => {
                    debug!("node{peer} answered {other:?}");
                    st.raft.handle_failure(peer, &request, t)
                }
                Err(e) => {
                    debug!("request to node{peer} failed: {e}");
                    st.raft.handle_failure(peer, &request, t)
                }
            }
            self.sync(&mut st);
        }
    }

    fn run_applier(&self) {
        let mut st = self.state.lock();
        loop {
            while st.apply_queue.is_empty() && !st.stopping {
                self.changed.wait(&mut st);
            }
            if st.stopping {
                return;
            }
            // The one ordered apply path: entries arrive in log order,
            // once each, and the store applies them (it asserts the order).
            while let Some(entry) = st.apply_queue.pop_front() {
                st.kv.apply(&entry);
            }
            self.changed.notify_all();
        }
    }
}

/// The server's view of a node. Holds an `Arc` so that deferred work
/// (waiting for a commit or a read) can outlive the pool worker that
/// started it.
struct Service(Arc<Shared>);

/// How long a write or a linearizable read waits on this node before it
/// answers `timeout`. Kept shorter than the client's own timeout so the
/// client can still try another node.
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);

impl Handler for Service {
    fn handle(&self, request: wire::Request) -> Handled {
        let shared = &self.0;
        let mut st = shared.state.lock();
        if st.stopping {
            return Handled::Now(Response::error(ErrorCode::ShuttingDown, "node is stopping"));
        }
        Handled::Now(match request {
            wire::Request::RequestVote(rv) => {
                shared.step_peer_request(&mut st, rv.candidate_id, Request::RequestVote(rv))
            }
            wire::Request::AppendEntries(ae) => {
                shared.step_peer_request(&mut st, ae.leader_id, Request::AppendEntries(ae))
            }
            wire::Request::IsLeader => {
                let leader_id = st.raft.leader_id();
                Response::IsLeader {
                    is_leader: st.raft.role() == Role::Leader,
                    leader_id,
                    leader_address: shared.address_of(leader_id),
                }
            }
            wire::Request::Status => Response::Status(shared.status(&st)),
            wire::Request::Log { from, limit } => {
                let commit = st.raft.commit_index();
                let to = from
                    .saturating_add(limit as Index)
                    .saturating_sub(1)
                    .min(commit);
                // Stay well under the line limit: the client asks again
                // from where this answer stops.
                let entries = st.raft.log().slice_bounded(from, to, 1024 * 1024).to_vec();
                Response::Log {
                    entries,
                    commit_index: commit,
                }
            }
            wire::Request::Read { key, stale: true } => Response::Value {
                value: st.kv.get(&key).map(str::to_string),
                key,
                applied_index: st.kv.applied_index(),
            },
            wire::Request::Read { key, stale: false } => {
                let ctx = st.next_read;
                st.next_read += 1;
                if let Err(e) = st.raft.read_index(ctx) {
                    return Handled::Now(shared.not_leader(e.leader_hint));
                }
                st.reads.insert(ctx, None);
                shared.sync(&mut st);
                let shared = shared.clone();
                return Handled::Later(Box::new(move || shared.finish_read(ctx, key)));
            }
            wire::Request::Write(command) => {
                if let Err(problem) = command.op.validate() {
                    return Handled::Now(Response::error(ErrorCode::BadRequest, problem));
                }
                if st.raft.role() != Role::Leader {
                    return Handled::Now(shared.not_leader(st.raft.leader_id()));
                }
                // Already applied (a retry whose first answer was lost):
                // answer from the session, without a new log entry.
                if let Some((outcome, index)) = st.kv.outcome(command.client, command.seq) {
                    return Handled::Now(Response::Written {
                        index,
                        outcome: outcome.clone(),
                    });
                }
                let (client, seq) = (command.client, command.seq);
                let proposed = st.raft.propose(command.encode());
                shared.sync(&mut st);
                match proposed {
                    Err(e) => shared.not_leader(e.leader_hint),
                    Ok((index, term)) => {
                        let shared = shared.clone();
                        return Handled::Later(Box::new(move || {
                            shared.finish_write(client, seq, index, term)
                        }));
                    }
                }
            }
        })
    }
}

impl Shared {
    /// A RequestVote or AppendEntries from a peer: step the core, make the
    /// result durable, and only then answer.
    fn step_peer_request(&self, st: &mut State, from: NodeId, request: Request) -> Response {
        let reply = st.raft.handle_request(from, request, now(self));
        self.sync(st);
        match reply {
            Reply::RequestVote(r) => Response::RequestVote(r),
            Reply::AppendEntries(r) => Response::AppendEntries(r),
        }
    }

    fn address_of(&self, id: Option<NodeId>) -> Option<String> {
        id.and_then(|id| self.members.iter().find(|m| m.id == id))
            .map(Member::address)
    }

    fn not_leader(&self, hint: Option<NodeId>) -> Response {
        Response::Error {
            code: ErrorCode::NotLeader,
            message: match hint {
                Some(l) => format!("not the leader; node{l} is"),
                None => "not the leader; the leader is not known".into(),
            },
            leader_id: hint,
            leader_address: self.address_of(hint),
        }
    }

    /// Waits until client `client`'s command `seq`, proposed at (`index`,
    /// `term`), has been applied, and answers with its outcome. If another
    /// entry took the index, or this node stops leading first, the answer
    /// says so, and the client retries with the same number: the session
    /// table makes that safe.
    fn finish_write(
        &self,
        client: ClientId,
        seq: u64,
        index: Index,
        term: consensus::Term,
    ) -> Response {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let mut st = self.state.lock();
        loop {
            // Answer with where it was applied: an earlier attempt may have
            // been applied before this one was proposed.
            if let Some((outcome, applied_at)) = st.kv.outcome(client, seq) {
                return Response::Written {
                    index: applied_at,
                    outcome: outcome.clone(),
                };
            }
            let overwritten = st.raft.log().term_at(index).is_some_and(|t| t != term);
            if overwritten || st.raft.term() != term || st.kv.applied_index() >= index {
                return self.not_leader(st.raft.leader_id());
            }
            if st.stopping {
                return Response::error(
                    ErrorCode::ShuttingDown,
                    "node is stopping; retry elsewhere",
                );
            }
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                return Response::error(
                    ErrorCode::Timeout,
                    "not applied in time; retry with the same number",
                );
            }
        }
    }

    /// Waits for the core to confirm read `ctx`, then for the state machine
    /// to apply up to its read index, and reads `key`.
    fn finish_read(&self, ctx: u64, key: String) -> Response {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let mut st = self.state.lock();
        let response = loop {
            match st.reads.get(&ctx) {
                Some(Some(None)) => break self.not_leader(st.raft.leader_id()),
                Some(Some(Some(index))) if st.kv.applied_index() >= *index => {
                    break Response::Value {
                        value: st.kv.get(&key).map(str::to_string),
                        key,
                        applied_index: st.kv.applied_index(),
                    };
                }
                _ => {}
            }
            if st.stopping {
                break Response::error(
                    ErrorCode::ShuttingDown,
                    "node is stopping; retry elsewhere",
                );
            }
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                break Response::error(ErrorCode::Timeout, "read not confirmed in time");
            }
        };
        st.reads.remove(&ctx);
        response
    }
}
