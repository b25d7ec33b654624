//! Checks on what other servers send, made before the core acts on it.
//!
//! Peers are trusted to be honest (Byzantine faults are out of scope) but
//! not to be correct: a node of an older build, a buggy one, one started
//! with the wrong configuration, or anybody typing into `nc`, can send a
//! well-formed message that breaks Raft's rules. Such a message is refused
//! with a [`Rejection`] and changes no state at all, so that the `assert!`s
//! left in the core guard only invariants of our own making.
//!
//! Two kinds of check:
//! * **shape** (no state needed): the sender is who the message says it
//!   is, terms and indices are in range, entries are contiguous from
//!   `prev_log_index + 1` with terms that never decrease and never exceed
//!   the message's term;
//! * **against our state**: an AppendEntries of our own term sent to us as
//!   leader, or from a second leader of a term whose leader we know, or one
//!   that would remove an entry we know is committed. Each of these means
//!   the sender broke election safety or leader completeness (Figure 3).

use super::message::{
    AppendEntries, AppendEntriesReply, Index, InstallSnapshot, InstallSnapshotReply, NodeId,
    Payload, RequestVote, Term, TimeoutNow, TimeoutNowReply,
};
use super::{Raft, Role};

/// The largest term accepted from anyone. Terms grow by one per election,
/// so this is never reached honestly (at a thousand elections a second it
/// lasts for a quarter of a million years); refusing anything above it
/// means `term + 1` can never overflow. 2^53 - 1 also keeps every term
/// exact in JavaScript, which reads our JSON as doubles.
pub const MAX_TERM: Term = (1 << 53) - 1;
/// The largest log index accepted, for the same reasons.
pub const MAX_INDEX: Index = (1 << 53) - 1;

/// Why a message from a peer was refused. The message changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The sender claims our own id.
    #[error("node{from} is not a peer of this node")]
    UnknownSender { from: NodeId },
    /// `leader_id` or `candidate_id` names someone other than the sender.
    #[error("{field} is {claimed} but the sender is node{from}")]
    SenderMismatch {
        field: &'static str,
        claimed: NodeId,
        from: NodeId,
    },
    /// A term above [`MAX_TERM`].
    #[error("term {term} is above the largest allowed, {MAX_TERM}")]
    TermTooLarge { term: Term },
    /// An index above [`MAX_INDEX`].
    #[error("index {index} is above the largest allowed, {MAX_INDEX}")]
    IndexTooLarge { index: Index },
    /// A log position claims a term newer than the message's own term.
    #[error("{what} has term {term}, newer than the message's term {message_term}")]
    TermAboveMessage {
        what: &'static str,
        term: Term,
        message_term: Term,
    },
    /// `prev_log_index` 0 (the empty log) must come with `prev_log_term` 0.
    #[error("prev_log_index 0 must have prev_log_term 0, not {prev_log_term}")]
    EmptyPrefixWithTerm { prev_log_term: Term },
    /// Entry number `position` of the batch has the wrong index.
    #[error(
        "entries must be contiguous from prev_log_index + 1: entry {position} has index {index}, expected {expected}"
    )]
    NotContiguous {
        position: usize,
        index: Index,
        expected: Index,
    },
    /// Terms decrease along the batch (or below `prev_log_term`).
    #[error("terms never decrease along a log: entry {index} has term {term} after term {before}")]
    TermsDecrease {
        index: Index,
        term: Term,
        before: Term,
    },
    /// An AppendEntries of our own term while we lead it: two leaders of
    /// one term (election safety).
    #[error(
        "this node is the leader of term {term}; an AppendEntries of the same term means two leaders"
    )]
    SameTermAppendToLeader { term: Term },
    /// An AppendEntries from a second leader of a term whose leader we
    /// already heard from (election safety).
    #[error("node{known} already leads term {term}; node{from} claims it too")]
    SecondLeader {
        term: Term,
        known: NodeId,
        from: NodeId,
    },
    /// The entries would replace one we know is committed (leader
    /// completeness).
    #[error(
        "entry {index} of term {theirs} would replace our committed entry of term {ours} (commit index {commit_index})"
    )]
    OverwritesCommitted {
        index: Index,
        ours: Term,
        theirs: Term,
        commit_index: Index,
    },
    /// An AppendEntries reply claims to match entries (or to have checked
    /// a position) beyond anything we sent it.
    #[error(
        "reply claims index {match_index}, but nothing sent to this peer went past {sent_up_to}"
    )]
    MatchBeyondRequest {
        match_index: Index,
        sent_up_to: Index,
    },
    /// A reply to a request of a term we never sent one in (above our
    /// term, or above the term the reply itself carries).
    #[error(
        "reply of term {reply_term} answers a request of term {request_term}, which we (at term {our_term}) never sent"
    )]
    ReplyToUnsentRequest {
        request_term: Term,
        reply_term: Term,
        our_term: Term,
    },
    /// A membership entry that breaks the rules every membership keeps
    /// (a voter, distinct addresses, … see `Membership::check`).
    #[error("entry {index} holds an invalid membership: {why}")]
    InvalidMembership { index: Index, why: String },
    /// A reply echoing a read round this leader has not started.
    #[error("reply echoes read round {round}, but the latest started is {current}")]
    UnstartedReadRound { round: u64, current: u64 },
    /// An InstallSnapshot for a snapshot ending at index 0 or term 0,
    /// which no entry has.
    #[error("a snapshot must end at an entry: last_index and last_term at least 1")]
    EmptySnapshot,
    /// An InstallSnapshot chunk reaching past the snapshot's size.
    #[error("chunk of {len} bytes at offset {offset} reaches past the snapshot's {size} bytes")]
    ChunkBeyondSnapshot { offset: u64, len: u64, size: u64 },
    /// An InstallSnapshot reply about a snapshot newer than any we have,
    /// or claiming more of ours than it holds.
    #[error(
        "reply claims {next_offset} bytes of a snapshot up to index {last_index}; ours ends at index {ours} with {size} bytes"
    )]
    SnapshotReplyBeyond {
        last_index: Index,
        next_offset: u64,
        ours: Index,
        size: u64,
    },
}

impl Rejection {
    /// A short stable name, for error codes and for logging each kind of
    /// problem once per peer.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::UnknownSender { .. } => "unknown_sender",
            Rejection::SenderMismatch { .. } => "sender_mismatch",
            Rejection::TermTooLarge { .. } => "term_too_large",
            Rejection::IndexTooLarge { .. } => "index_too_large",
            Rejection::TermAboveMessage { .. } => "term_above_message",
            Rejection::EmptyPrefixWithTerm { .. } => "empty_prefix_with_term",
            Rejection::NotContiguous { .. } => "not_contiguous",
            Rejection::TermsDecrease { .. } => "terms_decrease",
            Rejection::SameTermAppendToLeader { .. } => "same_term_append_to_leader",
            Rejection::SecondLeader { .. } => "second_leader",
            Rejection::OverwritesCommitted { .. } => "overwrites_committed",
            Rejection::MatchBeyondRequest { .. } => "match_beyond_request",
            Rejection::ReplyToUnsentRequest { .. } => "reply_to_unsent_request",
            Rejection::UnstartedReadRound { .. } => "unstarted_read_round",
            Rejection::InvalidMembership { .. } => "invalid_membership",
            Rejection::EmptySnapshot => "empty_snapshot",
            Rejection::ChunkBeyondSnapshot { .. } => "chunk_beyond_snapshot",
            Rejection::SnapshotReplyBeyond { .. } => "snapshot_reply_beyond",
        }
    }
}

pub(super) fn check_term(term: Term) -> Result<(), Rejection> {
    if term > MAX_TERM {
        return Err(Rejection::TermTooLarge { term });
    }
    Ok(())
}

fn check_sender(field: &'static str, claimed: NodeId, from: NodeId) -> Result<(), Rejection> {
    if claimed != from {
        return Err(Rejection::SenderMismatch {
            field,
            claimed,
            from,
        });
    }
    Ok(())
}

/// The shape of a RequestVote.
pub(super) fn check_request_vote(from: NodeId, req: &RequestVote) -> Result<(), Rejection> {
    check_sender("candidate_id", req.candidate_id, from)?;
    check_term(req.term)?;
    if req.last_log_term > req.term {
        return Err(Rejection::TermAboveMessage {
            what: "last_log_term",
            term: req.last_log_term,
            message_term: req.term,
        });
    }
    Ok(())
}

/// The shape of an AppendEntries: everything that can be checked without
/// looking at our log.
pub(super) fn check_append_entries(from: NodeId, req: &AppendEntries) -> Result<(), Rejection> {
    check_sender("leader_id", req.leader_id, from)?;
    check_term(req.term)?;
    if req.prev_log_term > req.term {
        return Err(Rejection::TermAboveMessage {
            what: "prev_log_term",
            term: req.prev_log_term,
            message_term: req.term,
        });
    }
    if req.prev_log_index == 0 && req.prev_log_term != 0 {
        return Err(Rejection::EmptyPrefixWithTerm {
            prev_log_term: req.prev_log_term,
        });
    }
    req.prev_log_index
        .checked_add(req.entries.len() as Index)
        .filter(|&last| last <= MAX_INDEX)
        .ok_or(Rejection::IndexTooLarge {
            index: req.prev_log_index,
        })?;
    let mut before = req.prev_log_term;
    for (position, e) in req.entries.iter().enumerate() {
        let expected = req.prev_log_index + 1 + position as Index;
        if e.index != expected {
            return Err(Rejection::NotContiguous {
                position,
                index: e.index,
                expected,
            });
        }
        if e.term < before {
            return Err(Rejection::TermsDecrease {
                index: e.index,
                term: e.term,
                before,
            });
        }
        if e.term > req.term {
            return Err(Rejection::TermAboveMessage {
                what: "an entry",
                term: e.term,
                message_term: req.term,
            });
        }
        if let Payload::Membership(m) = &e.payload {
            m.check().map_err(|why| Rejection::InvalidMembership {
                index: e.index,
                why: why.0,
            })?;
        }
        before = e.term;
    }
    Ok(())
}

/// The shape of a TimeoutNow.
pub(super) fn check_timeout_now(from: NodeId, req: &TimeoutNow) -> Result<(), Rejection> {
    check_sender("leader_id", req.leader_id, from)?;
    check_term(req.term)
}

/// The shape of an InstallSnapshot chunk.
pub(super) fn check_install_snapshot(from: NodeId, req: &InstallSnapshot) -> Result<(), Rejection> {
    check_sender("leader_id", req.leader_id, from)?;
    check_term(req.term)?;
    let meta = &req.snapshot;
    if meta.last_term > req.term {
        return Err(Rejection::TermAboveMessage {
            what: "the snapshot's last entry",
            term: meta.last_term,
            message_term: req.term,
        });
    }
    if meta.last_index > MAX_INDEX {
        return Err(Rejection::IndexTooLarge {
            index: meta.last_index,
        });
    }
    if meta.last_index == 0 || meta.last_term == 0 {
        return Err(Rejection::EmptySnapshot);
    }
    if let Some(m) = &req.membership {
        m.check().map_err(|why| Rejection::InvalidMembership {
            index: meta.last_index,
            why: why.0,
        })?;
    }
    let len = req.data.len() as u64;
    if req
        .offset
        .checked_add(len)
        .is_none_or(|end| end > meta.size)
    {
        return Err(Rejection::ChunkBeyondSnapshot {
            offset: req.offset,
            len,
            size: meta.size,
        });
    }
    Ok(())
}

impl Raft {
    /// An InstallSnapshot reply: it must answer a request we could have
    /// sent, and, in this leadership, name no snapshot newer than ours nor
    /// claim more bytes of ours than it has.
    pub(super) fn check_snapshot_reply(
        &self,
        peer: NodeId,
        reply: &InstallSnapshotReply,
    ) -> Result<(), Rejection> {
        if !self.answers_this_leadership(reply.term, reply.request_term)? {
            return Ok(());
        }
        // Against the snapshot being sent to this peer, if the reply is
        // about it, else against the current one.
        let ours = self.peers[&peer]
            .progress
            .snapshot
            .map(|t| t.snapshot)
            .filter(|s| s.last_index == reply.last_index)
            .unwrap_or(self.snapshot);
        let beyond = reply.last_index > self.snapshot.last_index
            || (reply.last_index == ours.last_index && reply.next_offset > ours.size);
        if beyond {
            return Err(Rejection::SnapshotReplyBeyond {
                last_index: reply.last_index,
                next_offset: reply.next_offset,
                ours: ours.last_index,
                size: ours.size,
            });
        }
        Ok(())
    }

    /// A reply of `term` to a request of `request_term` must answer a
    /// request we could have sent (not of a term above ours or above the
    /// reply's own). Whether it answers one of this leadership, so that
    /// its claims are to be checked against what we sent.
    fn answers_this_leadership(&self, term: Term, request_term: Term) -> Result<bool, Rejection> {
        check_term(term)?;
        if request_term > term || request_term > self.term {
            return Err(Rejection::ReplyToUnsentRequest {
                request_term,
                reply_term: term,
                our_term: self.term,
            });
        }
        Ok(request_term == self.term && self.role == Role::Leader)
    }

    /// A TimeoutNow reply must answer a request we could have sent.
    pub(super) fn check_timeout_now_reply(&self, reply: &TimeoutNowReply) -> Result<(), Rejection> {
        self.answers_this_leadership(reply.term, reply.request_term)
            .map(|_| ())
    }

    /// An AppendEntries, InstallSnapshot or TimeoutNow of `term`, at least ours, from
    /// `from`: refused if it means two leaders of one term.
    pub(super) fn check_leader_claim(&self, from: NodeId, term: Term) -> Result<(), Rejection> {
        if term == self.term {
            if self.role == Role::Leader {
                return Err(Rejection::SameTermAppendToLeader { term });
            }
            if let Some(known) = self.leader_id.filter(|&l| l != from) {
                return Err(Rejection::SecondLeader { term, known, from });
            }
        }
        Ok(())
    }

    /// An AppendEntries reply against what we sent `peer`: it must answer
    /// a request we could have sent (not of a term above ours or above
    /// the reply's own), and, if it answers one of this leadership, claim
    /// no more than we sent and no read round we have not started.
    pub(super) fn check_append_reply(
        &self,
        peer: NodeId,
        reply: &AppendEntriesReply,
    ) -> Result<(), Rejection> {
        if !self.answers_this_leadership(reply.term, reply.request_term)? {
            return Ok(()); // about an earlier term: dropped unread
        }
        let sent_up_to = self.peers[&peer].progress.sent_up_to;
        let claimed = if reply.success {
            reply.match_index
        } else {
            reply.prev_log_index
        };
        if claimed > sent_up_to {
            return Err(Rejection::MatchBeyondRequest {
                match_index: claimed,
                sent_up_to,
            });
        }
        if reply.read_round > self.reads.round() {
            return Err(Rejection::UnstartedReadRound {
                round: reply.read_round,
                current: self.reads.round(),
            });
        }
        Ok(())
    }

    /// The checks of an AppendEntries that depend on our state; `req` has
    /// passed [`check_append_entries`] and is not from an older term.
    pub(super) fn check_append_against_state(
        &self,
        from: NodeId,
        req: &AppendEntries,
    ) -> Result<(), Rejection> {
        self.check_leader_claim(from, req.term)?;
        // Only a batch that passes the consistency check is merged; find
        // the first entry it would replace (AppendEntries rule 3). One
        // starting inside our snapshot is checked from the snapshot on
        // (see `handle_append_entries`).
        let compacted = self.log.is_compacted(req.prev_log_index);
        if !compacted && self.log.term_at(req.prev_log_index) != Some(req.prev_log_term) {
            return Ok(());
        }
        let conflict = req.entries.iter().find_map(|e| {
            self.log
                .term_at(e.index)
                .filter(|&ours| ours != e.term)
                .map(|ours| (e, ours))
        });
        match conflict {
            Some((e, ours)) if e.index <= self.commit_index => {
                Err(Rejection::OverwritesCommitted {
                    index: e.index,
                    ours,
                    theirs: e.term,
                    commit_index: self.commit_index,
                })
            }
            _ => Ok(()),
        }
    }
}
