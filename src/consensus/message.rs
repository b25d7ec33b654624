//! The two Raft RPCs of Figure 2 and the log entry they carry.
//!
//! These types are plain data: the wire module serializes them as JSON and
//! the storage module writes [`Entry`] records to disk, so a field renamed
//! here changes the protocol and the on-disk format.

use serde::{Deserialize, Serialize};

/// A server's id, as given in the cluster configuration (`node4` is 4).
pub type NodeId = u64;
/// A Raft term (§5.1). Term 0 exists only before the first election.
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;

/// What a log entry asks the state machine to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "data")]
pub enum Payload {
    /// Appended by every new leader (§5.4.2, thesis §6.4): committing an
    /// entry of its own term is what lets it commit everything before it.
    Noop,
    /// An opaque command from a client, applied in log order.
    Data(String),
}

/// One slot of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub payload: Payload,
}

impl Entry {
    /// Roughly how many bytes the entry takes on the wire (its data plus a
    /// fixed allowance for the rest); used to size batches.
    pub fn approx_size(&self) -> usize {
        64 + match &self.payload {
            Payload::Noop => 0,
            Payload::Data(d) => d.len(),
        }
    }
}

/// RequestVote arguments (Figure 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    pub term: Term,
    pub candidate_id: NodeId,
    pub last_log_index: Index,
    pub last_log_term: Term,
}

/// RequestVote results (Figure 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteReply {
    /// The voter's current term, for the candidate to update itself.
    pub term: Term,
    pub vote_granted: bool,
}

/// AppendEntries arguments (Figure 2). With no entries it is a heartbeat,
/// and it is still checked against `prev_log_index`/`prev_log_term`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    pub term: Term,
    pub leader_id: NodeId,
    pub prev_log_index: Index,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: Index,
    /// The leader's read round when it built this request (thesis §6.4).
    /// Echoed in the reply: an answer in the leader's term shows that the
    /// follower still followed it after every read of this round or an
    /// earlier one had begun. Not part of Figure 2; may be left out (0),
    /// which confirms no read.
    #[serde(default)]
    pub read_round: u64,
}

/// AppendEntries results: Figure 2's `term` and `success`, plus the
/// follower's hints that let a leader skip a whole conflicting term per
/// round trip instead of one index (§5.3, "the protocol can be optimized").
///
/// A reply is **self-describing**: it says which request it answers
/// (`request_term`, `prev_log_index`, `read_round`, echoed from it), so a
/// leader with several requests in flight to one follower (pipelining)
/// needs no record of what it sent to make sense of the answer, and an
/// answer to a request of an earlier term is recognised and dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesReply {
    /// The follower's current term, for the leader to update itself.
    pub term: Term,
    pub success: bool,
    /// On success: `prev_log_index + entries.len()`, the last index the
    /// follower now knows to match the leader. Not its last index: entries
    /// after it may still be stale.
    pub match_index: Index,
    /// On failure: the term of the follower's entry at `prev_log_index`,
    /// or `None` when the follower's log is shorter than that.
    pub conflict_term: Option<Term>,
    /// On failure: the first index the follower holds of `conflict_term`,
    /// or its last index + 1 when its log is too short.
    pub conflict_index: Index,
    /// The term of the request this answers.
    pub request_term: Term,
    /// The request's `prev_log_index`: on failure, the position whose
    /// consistency check failed.
    pub prev_log_index: Index,
    /// The request's `read_round`.
    pub read_round: u64,
}

impl AppendEntriesReply {
    /// A refusal of `req` by a server at `term`, echoing what it answers;
    /// the follower sets `success` and the rest once it knows them.
    pub fn answering(req: &AppendEntries, term: Term) -> AppendEntriesReply {
        AppendEntriesReply {
            term,
            success: false,
            match_index: 0,
            conflict_term: None,
            conflict_index: 0,
            request_term: req.term,
            prev_log_index: req.prev_log_index,
            read_round: req.read_round,
        }
    }
}

/// A request one server sends another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    RequestVote(RequestVote),
    AppendEntries(AppendEntries),
}

/// The reply to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    RequestVote(RequestVoteReply),
    AppendEntries(AppendEntriesReply),
}

impl Request {
    pub fn term(&self) -> Term {
        match self {
            Request::RequestVote(r) => r.term,
            Request::AppendEntries(r) => r.term,
        }
    }
}

impl Reply {
    pub fn term(&self) -> Term {
        match self {
            Reply::RequestVote(r) => r.term,
            Reply::AppendEntries(r) => r.term,
        }
    }
}
