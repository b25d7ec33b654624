//! Talking to a cluster from outside: what `raftctl`, the benchmark and
//! the tests use.
//!
//! A [`Client`] is one session (Raft thesis §6.3): a random client id and a
//! sequence number per write. It finds the leader by asking the configured
//! nodes and following `not_leader` hints, remembers it, and retries with
//! backoff until its timeout, always with the same sequence number, so a
//! retried write is applied at most once. Errors say whether the operation
//! definitely did not happen ([`ClientError::is_definite`]) or may have.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::{ClusterConfig, Member};
use crate::consensus::membership::Membership;
use crate::consensus::{Entry, Index, NodeId};
use crate::events::NodeEvent;
use crate::kv::{ClientId, Command, Op, Outcome};
use crate::transport::{self, TransportError};
use crate::wire::{
    ErrorCode, KeyValue, MemberChange, MembersView, NodeStatus, RangeQuery, Request, Response,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Definite: `delete` or `get` of a key that does not exist.
    #[error("key not found: {key}")]
    NotFound { key: String },
    /// Definite: `cas` found another value (`None`: no such key).
    #[error("precondition failed: {key} {}", match .actual {
        Some(v) => format!("is {v}"),
        None => "does not exist".into(),
    })]
    PreconditionFailed { key: String, actual: Option<String> },
    /// Definite: the request itself is unacceptable (too large, …).
    #[error("rejected: {message}")]
    Rejected { message: String },
    /// Unknown outcome: no answer in time. A write may or may not have
    /// been applied (and may still be).
    #[error(
        "no answer in time; the operation may or may not have happened (last error: {last_error})"
    )]
    Timeout { last_error: String },
    /// Unknown outcome: the cluster forgot this client's session, so it
    /// cannot tell whether an earlier attempt of the write was applied.
    #[error("session expired; the operation may or may not have happened")]
    SessionExpired,
    /// No leader could be reached in time, and no attempt got as far as a
    /// node that could have acted on the request: nothing was done.
    #[error("no leader reachable in time; nothing was done (last error: {last_error})")]
    NoLeader { last_error: String },
    /// Definite: every node of the configuration refused the connection
    /// (nothing listens at any of their addresses), so nothing was done.
    /// Told at once, not after the timeout.
    #[error(
        "no node is running: every address in the configuration refused the connection ({}); nothing was done. Is the cluster up? ./boot_all_nodes.sh starts it",
        .addresses.join(", ")
    )]
    NotRunning { addresses: Vec<String> },
    /// A node could not be reached or answered unexpectedly (single-node
    /// requests such as `status` or a stale read of one node).
    #[error("node{id}: {message}")]
    Node { id: NodeId, message: String },
}

impl ClientError {
    /// Whether the operation definitely did not take effect.
    pub fn is_definite(&self) -> bool {
        matches!(
            self,
            ClientError::NotFound { .. }
                | ClientError::PreconditionFailed { .. }
                | ClientError::Rejected { .. }
                | ClientError::NotRunning { .. }
        )
    }
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long one operation may take, retries included.
    pub timeout: Duration,
    /// Bounds one request to one node. Longer than the node's own wait
    /// for a commit (2 s), so a slow commit is answered, not cut off.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(3),
        }
    }
}

/// One client session with a cluster.
pub struct Client {
    config: ClusterConfig,
    options: ClientOptions,
    id: ClientId,
    /// The number of the last write sent; the next one gets `seq + 1`.
    seq: u64,
    /// The node believed to lead; tried first.
    leader: Option<NodeId>,
    /// Where round-robin leader discovery continues.
    next: usize,
    connections: HashMap<NodeId, transport::Peer>,
}

/// A node's answer of the wrong kind.
fn unexpected(id: NodeId, answer: Response) -> ClientError {
    let message = match answer {
        // An error the node explains (TLS required, busy, …): its words.
        Response::Error { message, .. } => message,
        other => format!("unexpected answer {other:?}"),
    };
    ClientError::Node { id, message }
}

impl Client {
    /// A new session with a random id.
    pub fn new(config: ClusterConfig, options: ClientOptions) -> Client {
        Client::with_id(config, options, random_id())
    }

    /// A session with a chosen id (tests that replay a request use this).
    pub fn with_id(config: ClusterConfig, options: ClientOptions, id: ClientId) -> Client {
        Client {
            config,
            options,
            id,
            seq: 0,
            leader: None,
            next: 0,
            connections: HashMap::new(),
        }
    }

    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The number the last write was sent with.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    pub fn put(&mut self, key: &str, value: &str) -> Result<Index, ClientError> {
        self.write(Op::Put {
            key: key.into(),
            value: value.into(),
        })
    }

    pub fn delete(&mut self, key: &str) -> Result<Index, ClientError> {
        self.write(Op::Delete { key: key.into() })
    }

    pub fn cas(&mut self, key: &str, from: &str, to: &str) -> Result<Index, ClientError> {
        self.write(Op::Cas {
            key: key.into(),
            from: from.into(),
            to: to.into(),
        })
    }

    /// Adds a data entry to the log (changes no key); returns its index.
    pub fn append(&mut self, data: &str) -> Result<Index, ClientError> {
        self.write(Op::Append { data: data.into() })
    }

    /// Sends `op` as the next numbered command and returns the log index it
    /// was applied at.
    pub fn write(&mut self, op: Op) -> Result<Index, ClientError> {
        self.seq += 1;
        self.send_command(Command {
            client: self.id,
            seq: self.seq,
            op,
        })
    }

    /// Sends an exact command again (same client id and number), as a
    /// client that lost an answer would. Applied at most once.
    pub fn resend(&mut self, command: Command) -> Result<Index, ClientError> {
        self.send_command(command)
    }

    /// Removes every key starting with `prefix` ("" for all) in one
    /// command; returns the log index and how many keys went.
    pub fn delete_prefix(&mut self, prefix: &str) -> Result<(Index, u64), ClientError> {
        self.seq += 1;
        let command = Command {
            client: self.id,
            seq: self.seq,
            op: Op::DeletePrefix {
                prefix: prefix.into(),
            },
        };
        let mut count = 0;
        let index = self.send_command_counting(command, &mut count)?;
        Ok((index, count))
    }

    fn send_command(&mut self, command: Command) -> Result<Index, ClientError> {
        self.send_command_counting(command, &mut 0)
    }

    /// Sends `command`; `deleted` gets a `delete_prefix`'s count.
    fn send_command_counting(
        &mut self,
        command: Command,
        deleted: &mut u64,
    ) -> Result<Index, ClientError> {
        let key = command.op.key().unwrap_or_default().to_string();
        match self.leader_request(&Request::Write(command))? {
            Response::Written { index, outcome } => match outcome {
                Outcome::Ok => Ok(index),
                Outcome::Deleted { count } => {
                    *deleted = count;
                    Ok(index)
                }
                Outcome::NotFound => Err(ClientError::NotFound { key }),
                Outcome::PreconditionFailed { actual } => {
                    Err(ClientError::PreconditionFailed { key, actual })
                }
                Outcome::SessionExpired => {
                    // The cluster does not know this session (it was
                    // forgotten, or its first write was lost): continue
                    // under a new one, as the protocol asks.
                    self.id = random_id();
                    self.seq = 0;
                    Err(ClientError::SessionExpired)
                }
            },
            other => Err(ClientError::Timeout {
                last_error: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// A linearizable read (through the leader, thesis §6.4).
    pub fn get(&mut self, key: &str) -> Result<String, ClientError> {
        match self.leader_request(&Request::Read {
            key: key.into(),
            stale: false,
        })? {
            Response::Value { value: Some(v), .. } => Ok(v),
            Response::Value { value: None, .. } => Err(ClientError::NotFound { key: key.into() }),
            other => Err(ClientError::Timeout {
                last_error: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// Sends the next request to node `id` first, instead of the node
    /// believed to lead: a follower names the leader, and the request
    /// follows (`raftctl check` spreads its reads over the nodes so).
    pub fn try_first(&mut self, id: NodeId) {
        if self.config.member(id).is_some() {
            self.leader = Some(id);
        }
    }

    /// The node that answered the last request, if it was answered.
    pub fn answered_by(&self) -> Option<NodeId> {
        self.leader
    }

    /// A read from whichever node answers first (node `only` if given):
    /// possibly stale, as it reflects only what that node has applied.
    pub fn get_stale(&mut self, key: &str, only: Option<NodeId>) -> Result<String, ClientError> {
        let request = Request::Read {
            key: key.into(),
            stale: true,
        };
        match self.any_node(&request, only, |r| matches!(r, Response::Value { .. }))? {
            Response::Value { value: Some(v), .. } => Ok(v),
            _ => Err(ClientError::NotFound { key: key.into() }),
        }
    }

    /// Keys in a range or with a prefix: linearizable through the leader,
    /// or with `query.stale` from whichever node answers (node `only` if
    /// given). Follows `more` until `query.limit` keys are in (the server
    /// answers at most about 4 MiB at a time); returns the keys and
    /// whether the range holds more than the limit.
    pub fn range(
        &mut self,
        mut query: RangeQuery,
        only: Option<NodeId>,
    ) -> Result<(Vec<KeyValue>, bool), ClientError> {
        let limit = query.limit;
        let mut all = Vec::new();
        loop {
            query.limit = limit - all.len();
            let request = Request::Range(query.clone());
            let answer = if query.stale {
                self.any_node(&request, only, |r| matches!(r, Response::Range { .. }))?
            } else {
                self.leader_request(&request)?
            };
            let Response::Range { kvs, more, .. } = answer else {
                return Err(ClientError::Timeout {
                    last_error: format!("unexpected answer {answer:?}"),
                });
            };
            let last = kvs.last().map(|kv| kv.key.clone());
            all.extend(kvs);
            match last {
                Some(last) if more && all.len() < limit => {
                    // Just after the last key: the key with a NUL added.
                    query.from = format!("{last}\0");
                }
                _ => return Ok((all, more)),
            }
        }
    }

    /// `request` to each node in turn (node `only` if given) until one
    /// gives an answer `wanted` accepts; the last failure otherwise.
    fn any_node(
        &mut self,
        request: &Request,
        only: Option<NodeId>,
        wanted: impl Fn(&Response) -> bool,
    ) -> Result<Response, ClientError> {
        let candidates: Vec<NodeId> = match only {
            Some(id) => vec![id],
            None => self.config.members.iter().map(|m| m.id).collect(),
        };
        let mut last = ClientError::Timeout {
            last_error: "no node tried".into(),
        };
        for id in candidates {
            last = match self.call(id, request) {
                Ok(answer) if wanted(&answer) => return Ok(answer),
                Ok(Response::Error { message, .. }) => ClientError::Node { id, message },
                Ok(other) => unexpected(id, other),
                Err(e) => ClientError::Node {
                    id,
                    message: e.to_string(),
                },
            };
        }
        Err(last)
    }

    /// The leader's id and address, as the leader itself confirms.
    pub fn leader(&mut self) -> Result<Member, ClientError> {
        let mut pace = Pace::new(self.options.timeout, self.config.members.len());
        loop {
            let target = self.pick_target();
            let mut follow_hint = false;
            let result = self.call(target, &Request::IsLeader);
            pace.note(target, &result);
            let last_error = match result {
                Ok(Response::IsLeader {
                    is_leader: true, ..
                }) => {
                    self.leader = Some(target);
                    return Ok(self
                        .config
                        .member(target)
                        .expect("picked from config")
                        .clone());
                }
                Ok(Response::IsLeader {
                    leader_id,
                    leader_address,
                    ..
                }) => {
                    self.leader = self.hint(target, leader_id, leader_address);
                    follow_hint = self.leader.is_some();
                    format!("node{target} is not the leader")
                }
                Ok(other) => format!("node{target} answered {other:?}"),
                Err(e) => format!("node{target}: {e}"),
            };
            match self.after_failure(&mut pace, target, follow_hint) {
                Next::TryAgain => {}
                Next::TimeIsUp => return Err(ClientError::NoLeader { last_error }),
                Next::NothingRuns(e) => return Err(e),
            }
        }
    }

    /// After a failed attempt at `target`: stop, or wait as long as the
    /// next attempt should.
    fn after_failure(&self, pace: &mut Pace, target: NodeId, follow_hint: bool) -> Next {
        if pace.all_refused(self.config.members.len()) {
            let addresses = self.config.members.iter().map(Member::address).collect();
            return Next::NothingRuns(ClientError::NotRunning { addresses });
        }
        match pace.next_attempt(target, follow_hint) {
            Ok(()) => Next::TryAgain,
            Err(TimeIsUp) => Next::TimeIsUp,
        }
    }

    /// Has the leader hand its leadership to node `to` (or to its most
    /// up-to-date follower), and returns who leads now, and since when
    /// after the request: (old leader, new leader, new term, milliseconds).
    pub fn transfer(
        &mut self,
        to: Option<NodeId>,
    ) -> Result<(NodeId, NodeId, crate::consensus::Term, u64), ClientError> {
        match self.leader_request(&Request::Transfer { to })? {
            Response::Transferred {
                from,
                to,
                term,
                millis,
            } => {
                self.leader = Some(to);
                Ok((from, to, term, millis))
            }
            other => Err(ClientError::Timeout {
                last_error: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// The membership as the leader sees it, with each member's progress.
    pub fn members(&mut self) -> Result<MembersView, ClientError> {
        let leader = self.leader()?;
        match self.call_node(leader.id, &Request::Members)? {
            Response::Members(view) => Ok(*view),
            other => Err(unexpected(leader.id, other)),
        }
    }

    /// Has the leader change the membership; once the change is
    /// committed: the index of the new membership's entry, the membership,
    /// and how long it took (ms). A refused change is `Rejected`, saying
    /// why; nothing changed.
    pub fn change_members(
        &mut self,
        change: MemberChange,
    ) -> Result<(Index, Membership, u64), ClientError> {
        match self.leader_request(&Request::ChangeMembers { change })? {
            Response::MembersChanged {
                index,
                membership,
                millis,
            } => Ok((index, membership, millis)),
            other => Err(ClientError::Timeout {
                last_error: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// Has node `id` take a snapshot now and compact its log.
    pub fn snapshot(&mut self, id: NodeId) -> Result<crate::wire::SnapshotTaken, ClientError> {
        match self.call_node(id, &Request::Snapshot)? {
            Response::Snapshot(taken) => Ok(taken),
            Response::Error { message, .. } => Err(ClientError::Node { id, message }),
            other => Err(unexpected(id, other)),
        }
    }

    /// One request to node `id`, not to whoever leads; a failed exchange
    /// is an error naming the node.
    fn call_node(&mut self, id: NodeId, request: &Request) -> Result<Response, ClientError> {
        self.call(id, request).map_err(|e| ClientError::Node {
            id,
            message: e.to_string(),
        })
    }

    /// Committed log entries of node `id` from index `from` (or from its
    /// first index, if a snapshot covers `from`), its commit index, and
    /// its first index.
    pub fn log(
        &mut self,
        id: NodeId,
        from: Index,
        limit: usize,
    ) -> Result<(Vec<Entry>, Index, Index), ClientError> {
        match self.call_node(id, &Request::Log { from, limit })? {
            Response::Log {
                entries,
                commit_index,
                first_index,
            } => Ok((entries, commit_index, first_index)),
            other => Err(unexpected(id, other)),
        }
    }

    /// The leader `target` named, if it is another server we can reach: a
    /// server added since our configuration was written is learned from
    /// its address in the hint.
    fn hint(
        &mut self,
        target: NodeId,
        leader_id: Option<NodeId>,
        leader_address: Option<String>,
    ) -> Option<NodeId> {
        let id = leader_id.filter(|&l| l != target)?;
        if self.config.member(id).is_none() {
            let member = Member::at(id, &leader_address?)?;
            self.config.members.push(member);
        }
        Some(id)
    }

    fn pick_target(&mut self) -> NodeId {
        if let Some(l) = self.leader {
            return l;
        }
        self.next = (self.next + 1) % self.config.members.len();
        self.config.members[self.next].id
    }

    fn call(&mut self, id: NodeId, request: &Request) -> Result<Response, TransportError> {
        let member = self
            .config
            .member(id)
            .expect("ids come from the config")
            .clone();
        let timeout = self.options.request_timeout;
        let peer = self
            .connections
            .entry(id)
            .or_insert_with(|| transport::Peer::new(member, None, timeout));
        peer.call(request)
    }

    /// Sends `request` to the leader, finding it as needed, until it is
    /// answered or the timeout passes.
    fn leader_request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let mut pace = Pace::new(self.options.timeout, self.config.members.len());
        // Whether some attempt may have reached a leader that acted on it;
        // until then a failure means nothing was done.
        let mut maybe_sent = false;
        loop {
            let target = self.pick_target();
            let mut follow_hint = false;
            let last_error;
            let result = self.call(target, request);
            pace.note(target, &result);
            match result {
                Ok(Response::Error {
                    code: ErrorCode::NotLeader,
                    leader_id,
                    leader_address,
                    message,
                }) => {
                    // A leader that lost its office mid-request says so too,
                    // after it may have proposed the write.
                    maybe_sent |=
                        matches!(request, Request::Write(_) | Request::ChangeMembers { .. });
                    last_error = format!("node{target}: {message}");
                    self.leader = self.hint(target, leader_id, leader_address);
                    follow_hint = self.leader.is_some();
                }
                Ok(Response::Error {
                    code:
                        ErrorCode::BadRequest
                        | ErrorCode::TooLarge
                        | ErrorCode::StaleRequest
                        | ErrorCode::ChangeRefused,
                    message,
                    ..
                }) => {
                    return Err(ClientError::Rejected { message });
                }
                Ok(Response::Error {
                    code: ErrorCode::Internal,
                    message,
                    ..
                }) => {
                    // The leader could not do it, and said why.
                    return Err(ClientError::Node {
                        id: target,
                        message,
                    });
                }
                Ok(Response::Error { code, message, .. }) => {
                    // timeout, busy, shutting down: try elsewhere
                    maybe_sent |= code == ErrorCode::Timeout || code == ErrorCode::ShuttingDown;
                    last_error = format!("node{target}: {message}");
                    self.leader = None;
                }
                Ok(response) => {
                    self.leader = Some(target);
                    return Ok(response);
                }
                Err(e) => {
                    maybe_sent |=
                        !matches!(e, TransportError::Connect(_) | TransportError::Resolve(_));
                    last_error = format!("node{target}: {e}");
                    self.leader = None;
                }
            }
            match self.after_failure(&mut pace, target, follow_hint) {
                Next::TryAgain => {}
                Next::TimeIsUp if maybe_sent => return Err(ClientError::Timeout { last_error }),
                Next::TimeIsUp => return Err(ClientError::NoLeader { last_error }),
                Next::NothingRuns(e) => return Err(e),
            }
        }
    }
}

/// What a client does after a failed attempt.
enum Next {
    TryAgain,
    /// Its timeout has passed.
    TimeIsUp,
    /// No node of the cluster is running: a definite failure.
    NothingRuns(ClientError),
}

/// [`Pace::next_attempt`]'s refusal: the timeout has passed.
struct TimeIsUp;

/// When a client tries again after a failed attempt, and when it stops.
struct Pace {
    deadline: Instant,
    backoff: Duration,
    /// Hints followed after the deadline: a leader named by a node is
    /// still asked, so that even `--timeout 0` reaches a leader that
    /// exists, but a chain of hints (during an election) is cut off.
    late_hints: usize,
    max_late_hints: usize,
    /// Nodes that refused the connection since anything else happened.
    refused: std::collections::HashSet<NodeId>,
}

impl Pace {
    fn new(timeout: Duration, members: usize) -> Pace {
        Pace {
            deadline: Instant::now() + timeout,
            backoff: Duration::from_millis(10),
            late_hints: 0,
            max_late_hints: members,
            refused: Default::default(),
        }
    }

    /// Notes how an attempt at `target` went: a refused connection means
    /// nothing listens there; anything else, that something does.
    fn note<T>(&mut self, target: NodeId, result: &Result<T, TransportError>) {
        match result {
            Err(TransportError::Connect(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                self.refused.insert(target);
            }
            _ => self.refused.clear(),
        }
    }

    /// Whether each of the `members` refused, one after the other, with
    /// nothing else in between: no node of the cluster is running.
    fn all_refused(&self, members: usize) -> bool {
        self.refused.len() == members
    }

    /// Waits before the next attempt, unless it follows a leader hint or
    /// `target` just refused the connection (a refusal is immediate: try
    /// the next node now).
    fn next_attempt(&mut self, target: NodeId, follow_hint: bool) -> Result<(), TimeIsUp> {
        let now = Instant::now();
        if follow_hint {
            if now >= self.deadline {
                self.late_hints += 1;
                if self.late_hints > self.max_late_hints {
                    return Err(TimeIsUp);
                }
            }
            return Ok(());
        }
        if now >= self.deadline {
            return Err(TimeIsUp);
        }
        if !self.refused.contains(&target) {
            std::thread::sleep(self.backoff.min(self.deadline - now));
            self.backoff = (self.backoff * 2).min(Duration::from_millis(200));
        }
        Ok(())
    }
}

/// A random client id, kept within 53 bits so that clients written in
/// JavaScript can hold it exactly.
fn random_id() -> ClientId {
    rand::random::<u64>() >> 11
}

/// One row of `raftctl status`.
#[derive(Debug)]
pub struct MemberStatus {
    pub member: Member,
    pub status: Result<NodeStatus, ClientError>,
}

/// One request to one node on a connection of its own.
pub fn ask_once(
    member: &Member,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    transport::call_once(member, request, timeout).map_err(|e| ClientError::Node {
        id: member.id,
        message: format!("{}: {e}", member.address()),
    })
}

/// Asks one node for its status.
pub fn status(member: &Member, timeout: Duration) -> Result<NodeStatus, ClientError> {
    match ask_once(member, &Request::Status, timeout)? {
        Response::Status(s) => Ok(*s),
        other => Err(unexpected(member.id, other)),
    }
}

/// Asks one node for the membership in force there (`members`), with each
/// member's progress if it leads.
pub fn members(member: &Member, timeout: Duration) -> Result<MembersView, ClientError> {
    match ask_once(member, &Request::Members, timeout)? {
        Response::Members(view) => Ok(*view),
        other => Err(unexpected(member.id, other)),
    }
}

/// The cluster as it is now: `config` (where it started) with its members
/// replaced by those of the membership in force, as the leader (or, with
/// none reachable, the most recent member) reports it. Unchanged if no
/// node of `config` answers. So a client keeps working once servers have
/// been added and removed, as long as one node it knows still runs.
pub fn current_config(config: &ClusterConfig, timeout: Duration) -> ClusterConfig {
    let views: Vec<MembersView> = ask_all(&config.members, |m| members(m, timeout))
        .into_iter()
        .flatten()
        .collect();
    let best = views
        .iter()
        .find(|v| v.leader_id == Some(v.node))
        .or_else(|| views.iter().max_by_key(|v| (v.term, v.index)));
    let Some(view) = best else {
        return config.clone();
    };
    let members: Vec<Member> = view
        .members
        .iter()
        .filter_map(|m| Member::at(m.id, &m.address))
        .collect();
    if members.is_empty() {
        return config.clone();
    }
    ClusterConfig {
        members,
        ..config.clone()
    }
}

/// Sends a streaming request (`watch`) to `member` and returns its lines
/// as they come, decoded, until the connection ends. `timeout` bounds
/// connecting; a stream is silent at most a second between lines (a
/// `progress` line), so reads time out after a few.
pub fn stream(
    member: &Member,
    request: &Request,
    timeout: Duration,
) -> std::io::Result<impl Iterator<Item = Response>> {
    use std::io::{BufRead, Write};
    let mut conn = crate::tls::open(member, timeout)?;
    conn.tcp().set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_vec(request).expect("a request serializes");
    line.push(b'\n');
    conn.write_all(&line)?;
    let lines = std::io::BufReader::new(conn).lines();
    Ok(lines
        .map_while(|l| l.ok())
        .filter_map(|l| serde_json::from_str(&l).ok()))
}

/// Asks one node for its recent events (`events`), oldest first.
pub fn recent_events(member: &Member, timeout: Duration) -> Result<Vec<NodeEvent>, ClientError> {
    match ask_once(member, &Request::Events, timeout)? {
        Response::Events { events } => Ok(events),
        other => Err(unexpected(member.id, other)),
    }
}

/// Runs `ask` for every one of `members` at once, each on a thread of
/// its own; the results in their order.
fn ask_all<T: Send>(members: &[Member], ask: impl Fn(&Member) -> T + Sync) -> Vec<T> {
    let ask = &ask;
    std::thread::scope(|scope| {
        let handles: Vec<_> = members
            .iter()
            .map(|m| scope.spawn(move || ask(m)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread asking a node panicked"))
            .collect()
    })
}

/// Asks every node of the configuration at once; results in config order.
pub fn status_all(config: &ClusterConfig, timeout: Duration) -> Vec<MemberStatus> {
    ask_all(&config.members, |m| MemberStatus {
        member: m.clone(),
        status: status(m, timeout),
    })
}

/// Asks each of `members` at once for its recent events; in their order.
pub fn recent_events_all(
    members: &[Member],
    timeout: Duration,
) -> Vec<Result<Vec<NodeEvent>, ClientError>> {
    ask_all(members, |m| recent_events(m, timeout))
}
