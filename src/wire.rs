//! The wire protocol: newline-delimited JSON over TCP. Each request is one
//! line, answered by one response line, in order; a connection is kept
//! open and reused for many requests.
//!
//! Every message is a JSON object with a `type` field, e.g.
//! `{"type":"is_leader"}` → `{"type":"is_leader","is_leader":false,...}`.
//! A line that is not valid JSON, names an unknown type, or is longer than
//! [`MAX_LINE`] gets an `error` response and the connection stays usable.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::consensus::membership::{Change, Membership, Suffrage};
use crate::consensus::{
    self, AppendEntries, AppendEntriesReply, Entry, Index, InstallSnapshot, InstallSnapshotReply,
    NodeId, RequestVote, RequestVoteReply, Term, TimeoutNow, TimeoutNowReply,
};
use crate::kv::{Command, Outcome};

/// The longest request or response line accepted, newline excluded.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// A peer RPC's arguments with who sent them: the cluster the sender
/// belongs to and its node id. Checked before the core sees the message
/// (see `service::peer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's cluster id (`config::ClusterConfig::cluster_id`).
    pub cluster: String,
    /// The sender's node id.
    pub from: NodeId,
    #[serde(flatten)]
    pub body: T,
}

/// A peer RPC as the peer service sees it: who sent it, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRequest {
    pub cluster: String,
    pub from: NodeId,
    pub rpc: consensus::Request,
}

/// Where the server runs a request; see `server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestClass {
    /// A Raft RPC from another node.
    Peer,
    /// A cheap question about the node (`status`, `is_leader`,
    /// `events`).
    Admin,
    /// A `subscribe`: the connection becomes a stream of events.
    Stream,
    /// Everything else: writes, reads, the log.
    Client,
}

/// Decodes one request line (without its newline).
///
/// `Request` is tagged by a `type` field inside the object, which serde
/// can only decode by buffering the whole message into an intermediate
/// tree first, and the peer envelope's flattened fields buffer it again.
/// The lines a write makes (a client's `write` and `read`, the leader's
/// `append_entries`, a `request_vote`) are decoded tag first instead: a
/// scan finds the top-level `type` (and the envelope's `cluster` and
/// `from`), then serde reads the same line straight into the variant's own
/// type (which ignores the fields it does not have). Everything else, and
/// any line the scan does not understand (escapes in those fields, a
/// field twice, not an object), goes the general way, which also gives
/// the error messages.
pub fn decode_request(line: &[u8]) -> Result<Request, serde_json::Error> {
    match tag_first(line) {
        Some(Ok(request)) => Ok(request),
        // The general decoder says what is wrong, in its words.
        Some(Err(_)) | None => serde_json::from_slice(line),
    }
}

/// [`decode_request`]'s fast path; `None` where it does not apply.
fn tag_first(line: &[u8]) -> Option<Result<Request, serde_json::Error>> {
    let [kind, cluster, from] = scan::top_level(line, ["type", "cluster", "from"])?;
    let kind = scan::plain_string(kind?)?;
    let envelope = || -> Option<(String, NodeId)> {
        let cluster = scan::plain_string(cluster?)?.to_string();
        let from = std::str::from_utf8(from?).ok()?.parse().ok()?;
        Some((cluster, from))
    };
    Some(match kind {
        "write" => serde_json::from_slice(line).map(Request::Write),
        "read" => serde_json::from_slice::<ReadFields>(line).map(|r| Request::Read {
            key: r.key,
            stale: r.stale,
        }),
        "append_entries" => {
            let (cluster, from) = envelope()?;
            serde_json::from_slice(line).map(|body| {
                Request::AppendEntries(Envelope {
                    cluster,
                    from,
                    body,
                })
            })
        }
        "request_vote" => {
            let (cluster, from) = envelope()?;
            serde_json::from_slice(line).map(|body| {
                Request::RequestVote(Envelope {
                    cluster,
                    from,
                    body,
                })
            })
        }
        _ => return None,
    })
}

/// The fields of [`Request::Read`], decoded on their own.
#[derive(Deserialize)]
struct ReadFields {
    key: String,
    #[serde(default)]
    stale: bool,
}

/// A scan of a JSON object's top level, without decoding it.
mod scan {
    /// The raw text of the top-level fields `names` of the object `line`
    /// (`None` for each one absent). `None` altogether if `line` is not an
    /// object the scan understands: a key with an escape, one of `names`
    /// twice, or malformed (the general decoder then says what is wrong).
    pub fn top_level<'a, const N: usize>(
        line: &'a [u8],
        names: [&str; N],
    ) -> Option<[Option<&'a [u8]>; N]> {
        let mut found = [None; N];
        let mut at = skip_space(line, 0);
        if line.get(at) != Some(&b'{') {
            return None;
        }
        at = skip_space(line, at + 1);
        if line.get(at) == Some(&b'}') {
            return Some(found);
        }
        loop {
            let key_end = string_end(line, at)?;
            let key = &line[at + 1..key_end - 1];
            if key.contains(&b'\\') {
                return None;
            }
            at = skip_space(line, key_end);
            if line.get(at) != Some(&b':') {
                return None;
            }
            let start = skip_space(line, at + 1);
            let end = value_end(line, start)?;
            if let Some(k) = names.iter().position(|n| n.as_bytes() == key) {
                if found[k].is_some() {
                    return None;
                }
                found[k] = Some(&line[start..end]);
            }
            at = skip_space(line, end);
            match line.get(at) {
                Some(b',') => at = skip_space(line, at + 1),
                Some(b'}') => return Some(found),
                _ => return None,
            }
        }
    }

    /// A JSON string's contents, if it holds no escape.
    pub fn plain_string(raw: &[u8]) -> Option<&str> {
        let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if inner.contains(&b'\\') {
            return None;
        }
        std::str::from_utf8(inner).ok()
    }

    fn skip_space(line: &[u8], mut at: usize) -> usize {
        while line.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
            at += 1;
        }
        at
    }

    /// Where the string starting at `at` ends (after its closing quote).
    fn string_end(line: &[u8], at: usize) -> Option<usize> {
        if line.get(at) != Some(&b'"') {
            return None;
        }
        let mut i = at + 1;
        loop {
            match line.get(i)? {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
    }

    /// Where the value starting at `at` ends: a string, an object or array
    /// (nesting counted, strings inside skipped), or a scalar.
    fn value_end(line: &[u8], at: usize) -> Option<usize> {
        match line.get(at)? {
            b'"' => string_end(line, at),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut i = at;
                loop {
                    match line.get(i)? {
                        b'"' => {
                            i = string_end(line, i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                let len = line[at..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(line.len() - at);
                (len > 0).then_some(at + len)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    RequestVote(Envelope<RequestVote>),
    AppendEntries(Envelope<AppendEntries>),
    InstallSnapshot(Envelope<InstallSnapshot>),
    TimeoutNow(Envelope<TimeoutNow>),
    /// The courses' `is_leader()`.
    IsLeader,
    /// What `raftctl status` shows.
    Status,
    /// A client's numbered command (leader only): appended to the log,
    /// applied once however often it is sent, answered once applied.
    Write(Command),
    /// The value of `key`: linearizable (leader only, thesis §6.4), or with
    /// `stale`, whatever this node has applied.
    Read {
        key: String,
        #[serde(default)]
        stale: bool,
    },
    /// Keys in a range or with a prefix (`raftctl get --prefix`, `--to`):
    /// linearizable (leader only), or with `stale`, whatever this node has
    /// applied.
    Range(RangeQuery),
    /// Take a snapshot now and compact the log (`raftctl snapshot`).
    Snapshot,
    /// Turns the connection into a stream of the changes to `key` (or,
    /// with `prefix`, to every key starting with it), from log index
    /// `from` on (default: from now): `watching`, then `change` lines in
    /// log order, `progress` every second when nothing changes. See
    /// docs/PROTOCOL.md.
    Watch {
        key: String,
        #[serde(default)]
        prefix: bool,
        #[serde(default)]
        from: Option<Index>,
    },
    /// Leader only: the whole store, as of a linearizable read, streamed
    /// as the lines of a snapshot (`raftctl snapshot save FILE`); the
    /// connection closes after the last line.
    Backup,
    /// Leader only: hand leadership to node `to`, or to the most up-to-date
    /// follower (`raftctl transfer`); answered once it has moved.
    Transfer {
        #[serde(default)]
        to: Option<NodeId>,
    },
    /// The node's recent events (see `events`), oldest first.
    Events,
    /// Lab features (a node started with `--lab` only): cut the node off
    /// from its peers (`isolate`), or reconnect it. Answered with the
    /// node's status.
    Lab {
        isolate: bool,
    },
    /// Turns the connection into a stream: `subscribed`, then the recent
    /// events (with `recent`), then each new event as it happens, Raft
    /// messages too with `messages`, and the node's `status` every
    /// `status_ms` (50 to 60000) whether or not anything happened. See
    /// docs/PROTOCOL.md.
    Subscribe {
        #[serde(default = "yes")]
        recent: bool,
        #[serde(default)]
        messages: bool,
        #[serde(default = "default_status_ms")]
        status_ms: u64,
    },
    /// The membership in force, with the leader's view of each member's
    /// progress when asked of the leader (`raftctl members`).
    Members,
    /// Leader only: change the membership (`raftctl add`, `promote`,
    /// `remove`, `members set`); answered once the change is committed
    /// (for a change of several voters, once the joint configuration has
    /// been left).
    ChangeMembers {
        change: MemberChange,
    },
    /// This node's committed log entries `from..`, at most `limit`.
    Log {
        #[serde(default = "first_index")]
        from: Index,
        #[serde(default = "default_log_limit")]
        limit: usize,
    },
}

impl Request {
    /// Wraps a core request for sending from node `from` of `cluster`.
    pub fn peer(cluster: &str, from: NodeId, rpc: consensus::Request) -> Request {
        let cluster = cluster.to_string();
        match rpc {
            consensus::Request::RequestVote(body) => Request::RequestVote(Envelope {
                cluster,
                from,
                body,
            }),
            consensus::Request::AppendEntries(body) => Request::AppendEntries(Envelope {
                cluster,
                from,
                body,
            }),
            consensus::Request::InstallSnapshot(body) => Request::InstallSnapshot(Envelope {
                cluster,
                from,
                body,
            }),
            consensus::Request::TimeoutNow(body) => Request::TimeoutNow(Envelope {
                cluster,
                from,
                body,
            }),
        }
    }

    /// The peer RPC in this request, or the request itself if it is not one.
    pub fn into_peer(self) -> Result<PeerRequest, Request> {
        let (cluster, from, rpc) = match self {
            Request::RequestVote(e) => (e.cluster, e.from, consensus::Request::RequestVote(e.body)),
            Request::AppendEntries(e) => {
                (e.cluster, e.from, consensus::Request::AppendEntries(e.body))
            }
            Request::InstallSnapshot(e) => (
                e.cluster,
                e.from,
                consensus::Request::InstallSnapshot(e.body),
            ),
            Request::TimeoutNow(e) => (e.cluster, e.from, consensus::Request::TimeoutNow(e.body)),
            other => return Err(other),
        };
        Ok(PeerRequest { cluster, from, rpc })
    }

    pub fn class(&self) -> RequestClass {
        match self {
            Request::RequestVote(_)
            | Request::AppendEntries(_)
            | Request::InstallSnapshot(_)
            | Request::TimeoutNow(_) => RequestClass::Peer,
            Request::IsLeader
            | Request::Status
            | Request::Events
            | Request::Members
            | Request::Lab { .. } => RequestClass::Admin,
            Request::Subscribe { .. } | Request::Backup | Request::Watch { .. } => {
                RequestClass::Stream
            }
            Request::Write(_)
            | Request::Read { .. }
            | Request::Range(_)
            | Request::Log { .. }
            | Request::Snapshot
            | Request::ChangeMembers { .. }
            | Request::Transfer { .. } => RequestClass::Client,
        }
    }
}

impl Response {
    /// The core's reply to a peer RPC, for sending back.
    pub fn peer(reply: consensus::Reply) -> Response {
        match reply {
            consensus::Reply::RequestVote(r) => Response::RequestVote(r),
            consensus::Reply::AppendEntries(r) => Response::AppendEntries(r),
            consensus::Reply::InstallSnapshot(r) => Response::InstallSnapshot(r),
            consensus::Reply::TimeoutNow(r) => Response::TimeoutNow(r),
        }
    }

    /// The reply to a peer RPC in this response, or the response itself if
    /// it is something else (an error, say).
    pub fn into_peer(self) -> Result<consensus::Reply, Response> {
        match self {
            Response::RequestVote(r) => Ok(consensus::Reply::RequestVote(r)),
            Response::AppendEntries(r) => Ok(consensus::Reply::AppendEntries(r)),
            Response::InstallSnapshot(r) => Ok(consensus::Reply::InstallSnapshot(r)),
            Response::TimeoutNow(r) => Ok(consensus::Reply::TimeoutNow(r)),
            other => Err(other),
        }
    }
}

fn first_index() -> Index {
    1
}

fn default_log_limit() -> usize {
    1000
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

fn default_status_ms() -> u64 {
    1000
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    RequestVote(RequestVoteReply),
    AppendEntries(AppendEntriesReply),
    InstallSnapshot(InstallSnapshotReply),
    TimeoutNow(TimeoutNowReply),
    IsLeader {
        is_leader: bool,
        leader_id: Option<NodeId>,
        leader_address: Option<String>,
    },
    Status(Box<NodeStatus>),
    /// The command was applied (or had been: see `kv`), at log `index`
    /// when this node proposed it.
    Written {
        index: Index,
        #[serde(flatten)]
        outcome: Outcome,
    },
    /// `value` is null when the key does not exist; `applied_index` is the
    /// log index the answering state machine had applied.
    Value {
        key: String,
        value: Option<String>,
        applied_index: Index,
    },
    Log {
        entries: Vec<Entry>,
        commit_index: Index,
        /// The first index still in the log; the entries before it are
        /// compacted into the snapshot (1 when nothing is).
        #[serde(default = "first_index")]
        first_index: Index,
    },
    Snapshot(SnapshotTaken),
    /// Leadership moved from node `from` to node `to`, which leads `term`,
    /// `millis` after the transfer began (`from == to`: it led already).
    Transferred {
        from: NodeId,
        to: NodeId,
        term: Term,
        millis: u64,
    },
    /// The answer to `range`: keys in order; `more` when the range holds
    /// more than were sent (ask again from after the last key).
    Range {
        kvs: Vec<KeyValue>,
        more: bool,
        applied_index: Index,
    },
    /// The first line of a `watch` stream: changes follow from `from`.
    Watching {
        from: Index,
    },
    /// A key changed by the entry at `index`: its new value, or deleted.
    Change {
        index: Index,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default)]
        deleted: bool,
    },
    /// A `watch` stream with nothing to report: the node has applied up to
    /// `applied_index` (a watcher resuming later starts after it).
    Progress {
        applied_index: Index,
    },
    /// The answer to `members`.
    Members(Box<MembersView>),
    /// The change asked for is done: the membership of the entry at
    /// `index` is committed (and a joint one left), `millis` after the
    /// request.
    MembersChanged {
        index: Index,
        membership: Membership,
        millis: u64,
    },
    /// The first line of a stream (`subscribe`). `started_ms`: when the
    /// node's process started (ms since the Unix epoch), so that a client
    /// that reconnects can tell a restarted node, whose event numbers
    /// start again at 1, from one it was following.
    Subscribed {
        node: NodeId,
        started_ms: u64,
    },
    /// One event of a stream.
    Event(Box<NodeEvent>),
    /// The answer to `events`.
    Events {
        events: Vec<NodeEvent>,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// With `not_leader`: the leader, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader_id: Option<NodeId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader_address: Option<String>,
    },
}

impl Response {
    /// An error without a leader hint.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
            leader_id: None,
            leader_address: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: String,
    pub term: Term,
    pub leader_id: Option<NodeId>,
    pub commit_index: Index,
    pub last_log_index: Index,
    pub last_applied: Index,
    /// The cluster id this node's peer messages carry and require.
    pub cluster_id: String,
    /// Peer messages refused so far, in either direction (see
    /// `service::peer`).
    pub refused_messages: u64,
    /// The last index the latest snapshot covers (0: none yet).
    #[serde(default)]
    pub snapshot_index: Index,
    /// The size of the snapshot's state, in bytes.
    #[serde(default)]
    pub snapshot_bytes: u64,
    /// Entries in the log after the snapshot.
    #[serde(default)]
    pub log_entries: u64,
    /// Bytes of log on disk.
    #[serde(default)]
    pub log_bytes: u64,
    /// Lab: the node is cut off from its peers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
    /// Event-stream subscribers being served (`subscribe`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subscribers: u64,
    /// The terms of the last log entries (at most 40), the last one at
    /// `last_log_index`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail_terms: Vec<Term>,
    /// A follower: how long ago it last heard from its leader, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_from_leader_ms: Option<u64>,
    /// A follower or candidate: its election timer runs out in this many
    /// ms, of the `election_timeout_ms` it was set to when last reset
    /// (a leader has none). `raftctl web` draws it running down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_in_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_timeout_ms: Option<u64>,
    /// A storage fault cost this node log entries up to this index that it
    /// may have acknowledged; until its log holds them again (from the
    /// leader) it neither votes nor stands for election.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repairing_through: Option<Index>,
    /// The leader: its view of each follower (empty on others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<FollowerStatus>,
    /// This node's place in the membership in force (`voter`, `learner`,
    /// `leaving`); `None`: not in it (a server that joins, before it is
    /// added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffrage: Option<Suffrage>,
    /// The index of the membership in force's entry (0: the bootstrap
    /// one), whether it is committed, and while a change by joint
    /// consensus is under way, the old voters.
    #[serde(default)]
    pub membership_index: Index,
    #[serde(default = "yes")]
    pub membership_committed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outgoing_voters: Vec<NodeId>,
}

/// A range read: keys from `from` (inclusive) to `to` (exclusive; the
/// end if absent) that start with `prefix`, at most `limit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeQuery {
    #[serde(default)]
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_range_limit")]
    pub limit: usize,
    /// Keys without their values.
    #[serde(default)]
    pub keys_only: bool,
    #[serde(default)]
    pub stale: bool,
}

fn default_range_limit() -> usize {
    1000
}

/// One key of a range read (`value` absent with `keys_only`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A membership change as a client asks for it; `op` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MemberChange {
    /// A new server, as a learner: it receives the log without voting.
    AddLearner { id: NodeId, address: String },
    /// A learner becomes a voter (refused while it lags).
    Promote { id: NodeId },
    /// A server leaves; its id is never used again.
    Remove { id: NodeId },
    /// The voters become exactly these (learners among them promoted,
    /// voters not among them removed): by joint consensus when more than
    /// one voter changes.
    SetVoters { voters: Vec<NodeId> },
}

impl MemberChange {
    pub fn to_change(&self) -> Change {
        match self {
            MemberChange::AddLearner { id, address } => Change::AddLearner {
                id: *id,
                address: address.clone(),
            },
            MemberChange::Promote { id } => Change::Promote(*id),
            MemberChange::Remove { id } => Change::Remove(*id),
            MemberChange::SetVoters { voters } => {
                Change::SetVoters(voters.iter().copied().collect())
            }
        }
    }
}

/// The answer to `members`: the membership in force on the node asked,
/// and, from the leader, each member's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersView {
    /// The node that answered, and the leader it knows.
    pub node: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: Term,
    pub cluster_id: String,
    /// The index of the membership's entry (0: the bootstrap one), and
    /// whether it is committed (otherwise a change is in progress).
    pub index: Index,
    pub committed: bool,
    /// While a change by joint consensus is under way: the old voters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outgoing: Vec<NodeId>,
    /// Ids removed from the cluster, never to be used again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<NodeId>,
    pub last_log_index: Index,
    pub commit_index: Index,
    pub members: Vec<MemberView>,
}

/// One member, as `members` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: NodeId,
    pub address: String,
    /// `voter`, `learner`, or `leaving` (a voter of the old half of a
    /// joint configuration only).
    pub suffrage: Suffrage,
    /// From the leader: the highest index known to be in its log, how
    /// many entries it is behind the leader's log, and how long ago it
    /// last answered (ms). `None` from a follower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_index: Option<Index>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<Index>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
}

/// What a leader knows of one follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerStatus {
    pub id: NodeId,
    /// `voter`, `learner` (receives the log, counts for nothing) or
    /// `leaving` (a voter of the old half of a joint configuration only).
    #[serde(default = "voter")]
    pub suffrage: Suffrage,
    /// The highest index known to be in its log (Figure 2's matchIndex).
    pub match_index: Index,
    /// The next index to send it (nextIndex).
    pub next_index: Index,
    /// Requests sent to it and not answered yet.
    pub in_flight: u64,
    /// `probe` (finding where its log matches ours), `replicate`
    /// (streaming entries) or `snapshot` (receiving our snapshot).
    pub state: String,
    /// Whether its last request got an answer.
    pub reachable: bool,
    /// How long ago it last answered in this leadership, in ms; until it
    /// has, since the leadership began (CheckQuorum counts every follower
    /// as heard then).
    pub heard_ms: u64,
}

fn voter() -> Suffrage {
    Suffrage::Voter
}

/// The answer to a `snapshot` request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTaken {
    /// False when there was nothing new to cover; the rest then describes
    /// the current snapshot.
    pub taken: bool,
    pub index: Index,
    pub term: Term,
    pub bytes: u64,
    #[serde(default)]
    pub keys: u64,
    /// How long taking it took.
    #[serde(default)]
    pub millis: u64,
    /// How long the key-value store was locked to copy it: the only time
    /// writes and stale reads waited for the snapshot.
    #[serde(default)]
    pub store_blocked_micros: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a known request.
    BadRequest,
    /// Longer than `MAX_LINE`.
    TooLarge,
    /// The server has too many open connections.
    Busy,
    /// The server is stopping.
    ShuttingDown,
    /// This node is not the leader (or stopped being it before the request
    /// completed); see `leader_id`/`leader_address`. For a write, the
    /// command may still be applied: retry it with the same number.
    NotLeader,
    /// No answer in time. For a write, the command may or may not be
    /// applied: retry it with the same number to find out.
    Timeout,
    /// A peer message from a node of another cluster (a different cluster
    /// id: another configuration file, or another `--cluster-id`).
    WrongCluster,
    /// A peer message claiming the receiver's own id.
    UnknownSender,
    /// A peer message from a server that a committed membership removed:
    /// it is out of the cluster for good, and should stop.
    Removed,
    /// A well-formed peer message that breaks Raft's rules (entries out of
    /// order, a second leader in one term, …). Nothing was changed.
    Rejected,
    /// The node could not do what was asked (a snapshot it could not
    /// write, say); the message says why.
    Internal,
    /// A membership change the leader did not make: another is in
    /// progress, the learner lags, the id was removed, … (the message
    /// says which). Nothing changed.
    ChangeRefused,
    /// A `watch` from an index the node's change feed no longer holds
    /// (older than its last 100,000 changes or 64 MiB of them, or than a
    /// snapshot that replaced its store): the message names the first
    /// index it holds.
    Compacted,
    /// A stream's subscriber fell too far behind and was dropped.
    TooSlow,
    /// Lab: the node is cut off from its peers and refuses their messages.
    Isolated,
    /// A write numbered below the client's latest applied write: that
    /// request was settled long ago and its outcome is no longer kept
    /// (only each client's latest is, thesis §6.3). Nothing was done now.
    StaleRequest,
    /// TLS: a peer message on a connection whose certificate does not
    /// name the node id it claims (a client's, or another node's); or a
    /// plain connection to a node that requires TLS.
    Unauthenticated,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(io::Error),
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// A line over the limit; it was read to its end and discarded.
    #[error("line longer than {limit} bytes")]
    TooLarge { limit: usize },
    /// A line that does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Reads one line of at most `limit` bytes (newline excluded). An overlong
/// line is consumed to its newline and reported as `TooLarge`, so the
/// stream stays in step and the next line can be read.
pub fn read_line(
    reader: &mut impl BufRead,
    limit: usize,
    buf: &mut Vec<u8>,
) -> Result<(), WireError> {
    buf.clear();
    let mut too_large = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Err(if buf.is_empty() && !too_large {
                WireError::Closed
            } else {
                WireError::Io(io::ErrorKind::UnexpectedEof.into())
            });
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(k) => (&chunk[..k], Some(k + 1)),
            None => (chunk, None),
        };
        if !too_large && buf.len() + part.len() > limit {
            too_large = true;
            buf.clear();
        }
        if !too_large {
            buf.extend_from_slice(part);
        }
        let consumed = done.unwrap_or(chunk.len());
        reader.consume(consumed);
        if done.is_some() {
            if too_large {
                return Err(WireError::TooLarge { limit });
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(());
        }
    }
}

/// Reads and decodes one message.
pub fn read_message<T: for<'de> Deserialize<'de>>(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
) -> Result<T, WireError> {
    read_line(reader, MAX_LINE, buf)?;
    serde_json::from_slice(buf).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Encodes and writes one message and its newline, then flushes.
pub fn write_message<T: Serialize>(writer: &mut impl Write, message: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

/// One thing that happened on a node, as subscribers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    pub node: NodeId,
    /// Numbers this node's events from 1 since it started, Raft messages
    /// included: a subscriber without messages sees gaps where messages
    /// went to others.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, on this node's clock.
    pub time_ms: u64,
    /// `error`, `warn`, `info`, or `debug` for messages.
    pub level: String,
    /// The node's term and role just after the event.
    pub term: Term,
    pub role: String,
    /// What happened: one of the core's events (`role_changed`,
    /// `vote_granted`, `committed`, …, see docs/PROTOCOL.md), `note` for
    /// the runtime's own activity-log lines, `message_sent` or
    /// `message_received` at debug level.
    pub kind: String,
    /// The activity-log line, without time, node and `[T.. role]`.
    pub text: String,
    /// The event's own fields (`peer`, `index`, `term`, `votes`, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl NodeEvent {
    /// `HH:MM:SS.mmm nodeN [T7 leader] text`, as `raftctl events` prints it.
    pub fn line(&self) -> String {
        let ms = self.time_ms % 86_400_000;
        format!(
            "{:02}:{:02}:{:02}.{:03} node{} [T{} {}] {}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000,
            self.node,
            self.term,
            self.role,
            self.text
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    /// The tag-first path decodes what serde's general decoder does, and
    /// hands back to it whatever it does not understand.
    #[test]
    fn tag_first_decoding_agrees_with_the_general_decoder() {
        let lines = [
            r#"{"type":"append_entries","cluster":"c","from":1,"term":3,"leader_id":1,"prev_log_index":2,"prev_log_term":2,"entries":[{"index":3,"term":3,"payload":{"kind":"command","command":{"a":[1,"}]"]}}}],"leader_commit":2,"read_round":4}"#,
            // Fields in any order, spaces anywhere.
            r#" { "term" : 3 , "from" : 2 , "candidate_id":2, "last_log_index":0, "last_log_term":0, "cluster":"c", "type" : "request_vote" } "#,
            r#"{"client":7,"seq":1,"op":"put","key":"k\"}","value":"v","type":"write"}"#,
            r#"{"type":"read","key":"k","stale":true}"#,
            r#"{"type":"read","key":"k"}"#,
            r#"{"type":"status"}"#,
        ];
        for line in lines {
            assert!(
                tag_first(line.as_bytes()).is_some_and(|r| r.is_ok()) || line.contains("status"),
                "{line}"
            );
            let general: Request = serde_json::from_str(line).unwrap();
            assert_eq!(decode_request(line.as_bytes()).unwrap(), general, "{line}");
        }
        // What the scan leaves to the general decoder, or refuses with it.
        for line in [
            r#"{"type":"read","type":"status","key":"k"}"#,
            r#"{"type":"re\u0061d","key":"k"}"#,
            r#"{"type":"append_entries","cluster":"c\n","from":1,"term":1,"leader_id":1,"prev_log_index":0,"prev_log_term":0,"entries":[],"leader_commit":0}"#,
            r#"{"type":"read","key":"k"} trailing"#,
            r#"{"type":"read","key":7}"#,
            r#"["type","read"]"#,
            r#"{"type":"read","key":"k""#,
            "",
        ] {
            let general = serde_json::from_str::<Request>(line);
            let fast = decode_request(line.as_bytes());
            assert_eq!(general.as_ref().ok(), fast.as_ref().ok(), "{line}");
            if let (Err(g), Err(f)) = (&general, &fast) {
                assert_eq!(g.to_string(), f.to_string(), "the general decoder's words");
            }
        }
    }

    #[test]
    fn requests_are_tagged_json() {
        let line = serde_json::to_string(&Request::IsLeader).unwrap();
        assert_eq!(line, r#"{"type":"is_leader"}"#);
        let rv: Request = serde_json::from_str(r#"{"type":"request_vote","cluster":"c1","from":1,"term":3,"candidate_id":1,"last_log_index":0,"last_log_term":0}"#).unwrap();
        let body = RequestVote {
            term: 3,
            candidate_id: 1,
            last_log_index: 0,
            last_log_term: 0,
            pre_vote: false,
            transfer: false,
        };
        assert_eq!(
            rv,
            Request::peer("c1", 1, consensus::Request::RequestVote(body.clone()))
        );
        assert_eq!(
            rv.into_peer(),
            Ok(PeerRequest {
                cluster: "c1".into(),
                from: 1,
                rpc: consensus::Request::RequestVote(body)
            })
        );
        // A peer message without the sender's identity is malformed.
        let anonymous = serde_json::from_str::<Request>(
            r#"{"type":"request_vote","term":3,"candidate_id":1,"last_log_index":0,"last_log_term":0}"#,
        );
        assert!(anonymous.unwrap_err().to_string().contains("cluster"));
    }

    #[test]
    fn writes_and_their_results_are_flat_json() {
        use crate::kv::Op;
        let w: Request = serde_json::from_str(
            r#"{"type":"write","client":7,"seq":2,"op":"cas","key":"k","from":"a","to":"b"}"#,
        )
        .unwrap();
        let op = Op::Cas {
            key: "k".into(),
            from: "a".into(),
            to: "b".into(),
        };
        assert_eq!(
            w,
            Request::Write(Command {
                client: 7,
                seq: 2,
                op
            })
        );
        let r = Response::Written {
            index: 9,
            outcome: Outcome::PreconditionFailed {
                actual: Some("c".into()),
            },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"type":"written","index":9,"outcome":"precondition_failed","actual":"c"}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), r);
        let read: Request = serde_json::from_str(r#"{"type":"read","key":"k"}"#).unwrap();
        assert_eq!(
            read,
            Request::Read {
                key: "k".into(),
                stale: false
            }
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_read() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nshort\r\n");
        let mut r = BufReader::with_capacity(7, &input[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut r, 10, &mut buf),
            Err(WireError::TooLarge { limit: 10 })
        ));
        read_line(&mut r, 10, &mut buf).unwrap();
        assert_eq!(buf, b"short");
        assert!(matches!(
            read_line(&mut r, 10, &mut buf),
            Err(WireError::Closed)
        ));
    }

    #[test]
    fn unknown_types_are_malformed() {
        let mut r = BufReader::new(&b"{\"type\":\"launch\"}\n"[..]);
        let err = read_message::<Request>(&mut r, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `launch`"),
            "{err}"
        );
    }
}
