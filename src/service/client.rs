//! The client service: what a node does with a client's write or read,
//! apart from waiting.
//!
//! A write or linearizable read starts with one call ([`ClientService::
//! write`], [`ClientService::read`]) that either answers at once or
//! returns a ticket; the caller then polls the ticket ([`ClientService::
//! poll_write`], [`ClientService::poll_read`]) after each change of the
//! node's state until it yields the answer. The runtime polls under its
//! lock each time its condvar wakes it; the simulation polls after each
//! step. Both send the client the same [`Response`].

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Member;
use crate::consensus::{Index, NodeId, NotLeader, Raft, ReadState, Role, Term};
use crate::kv::{ClientId, Command, KvStore};
use crate::wire::{ErrorCode, KeyValue, RangeQuery, Response};

/// A request either answered now or waiting on a ticket.
#[derive(Debug)]
pub enum Step<T> {
    Answer(Response),
    Wait(T),
}

/// A write proposed by this node: client `client`'s command `seq`, at log
/// `index` in `term`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteTicket {
    pub client: ClientId,
    pub seq: u64,
    pub index: Index,
    pub term: Term,
}

/// A linearizable read of `key`, registered with the core as `ctx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadTicket {
    pub ctx: u64,
    pub query: Query,
}

/// What a linearizable read reads once it is confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// One key's value.
    Key(String),
    /// Keys in a range or with a prefix.
    Range(RangeQuery),
}

/// Where a linearizable read stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadProgress {
    /// Waiting for the core's answer.
    Waiting,
    /// Confirmed: linearizable once the state machine has applied `index`.
    Confirmed(Index),
    /// Covered by the leader's lease (thesis §6.4.1): linearizable once
    /// the state machine has applied `index`, if that is before `expires`
    /// on this node's clock.
    Leased { index: Index, expires: Duration },
    /// This node stopped leading before confirming it.
    LeadershipLost,
}

/// The most keys one range read answers with.
pub const MAX_RANGE_KEYS: usize = 10_000;
/// About the most bytes of keys and values one range read answers with.
pub const MAX_RANGE_BYTES: usize = 4 << 20;

pub struct ClientService {
    /// For leader hints in `not_leader` answers.
    members: Vec<Member>,
    /// Linearizable reads in progress, by ctx.
    reads: HashMap<u64, ReadProgress>,
    next_ctx: u64,
}

impl ClientService {
    pub fn new(members: Vec<Member>) -> ClientService {
        ClientService {
            members,
            reads: HashMap::new(),
            next_ctx: 0,
        }
    }

    /// Starts a write: checks it, answers a retry of an applied command
    /// from the client's session, and proposes anything else.
    pub fn write(&mut self, raft: &mut Raft, kv: &KvStore, command: Command) -> Step<WriteTicket> {
        if let Err(problem) = command.op.validate() {
            return Step::Answer(Response::error(ErrorCode::BadRequest, problem));
        }
        if raft.role() != Role::Leader {
            return Step::Answer(self.not_leader(raft.leader_id()));
        }
        // Already applied (a retry whose first answer was lost): answer
        // from the session, without a new log entry.
        if let Some((outcome, index)) = kv.outcome(command.client, command.seq) {
            return Step::Answer(Response::Written {
                index,
                outcome: outcome.clone(),
            });
        }
        if let Some(answer) = Self::stale(kv, command.client, command.seq) {
            return Step::Answer(answer);
        }
        let (client, seq) = (command.client, command.seq);
        match raft.propose(command.encode()) {
            Err(e) => Step::Answer(self.refused(e)),
            Ok((index, term)) => Step::Wait(WriteTicket {
                client,
                seq,
                index,
                term,
            }),
        }
    }

    /// A definite answer to a write numbered below the client's latest
    /// applied one. The store keeps only each client's latest outcome
    /// (thesis §6.3), so this request's is gone; a client that numbers its
    /// writes one at a time never sends it, and one that does must not be
    /// told `not_leader` (it would resend for ever).
    fn stale(kv: &KvStore, client: ClientId, seq: u64) -> Option<Response> {
        let latest = kv.last_seq(client).filter(|&latest| seq < latest)?;
        Some(Response::error(
            ErrorCode::StaleRequest,
            format!(
                "request {seq} of client {client} is older than its latest applied request, {latest}: \
                 it was settled before {latest} was sent, and only the latest outcome is kept; nothing was done"
            ),
        ))
    }

    /// The answer to a proposed write, once there is one: its outcome once
    /// applied, or `not_leader` once its entry can no longer be applied by
    /// this node's proposal (another entry took the index, or this node
    /// stopped leading: it left the term, or stepped down in it for
    /// CheckQuorum). Then the client retries with the same number, which
    /// the session table makes safe.
    pub fn poll_write(&self, raft: &Raft, kv: &KvStore, t: &WriteTicket) -> Option<Response> {
        // Answer with where it was applied: an earlier attempt may have
        // been applied before this one was proposed.
        if let Some((outcome, applied_at)) = kv.outcome(t.client, t.seq) {
            return Some(Response::Written {
                index: applied_at,
                outcome: outcome.clone(),
            });
        }
        // Applied as a duplicate of an older number, after a newer one.
        if let Some(answer) = Self::stale(kv, t.client, t.seq) {
            return Some(answer);
        }
        let overwritten = raft
            .log()
            .term_at(t.index)
            .is_some_and(|term| term != t.term);
        let deposed = raft.term() != t.term || raft.role() != Role::Leader;
        if overwritten || deposed || kv.applied_index() >= t.index {
            return Some(self.not_leader(raft.leader_id()));
        }
        None
    }

    /// Starts a linearizable read at `now`: answered at once from the
    /// store if the leader's lease covers it (thesis §6.4.1, lease reads
    /// on) and the store is up to date, else through the core's ReadIndex
    /// (thesis §6.4), which needs no clock.
    pub fn read(
        &mut self,
        raft: &mut Raft,
        kv: &KvStore,
        key: String,
        now: Duration,
    ) -> Step<ReadTicket> {
        self.read_query(raft, kv, Query::Key(key), now)
    }

    /// A linearizable read of `query`: answered at once under a lease
    /// that covers what the store has applied, or once confirmed.
    pub fn read_query(
        &mut self,
        raft: &mut Raft,
        kv: &KvStore,
        query: Query,
        now: Duration,
    ) -> Step<ReadTicket> {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        if let Some(lease) = raft.lease_read(now) {
            if kv.applied_index() >= lease.index {
                return Step::Answer(Self::answer(kv, &query));
            }
            let (index, expires) = (lease.index, lease.expires);
            self.reads
                .insert(ctx, ReadProgress::Leased { index, expires });
            return Step::Wait(ReadTicket { ctx, query });
        }
        match raft.read_index(ctx) {
            Err(e) => Step::Answer(self.refused(e)),
            Ok(()) => {
                self.reads.insert(ctx, ReadProgress::Waiting);
                Step::Wait(ReadTicket { ctx, query })
            }
        }
    }

    /// Takes the core's answers to reads (`Ready::reads`).
    pub fn route_reads(&mut self, reads: impl IntoIterator<Item = ReadState>) {
        for read in reads {
            if let Some(slot) = self.reads.get_mut(&read.ctx) {
                *slot = match read.index {
                    Some(index) => ReadProgress::Confirmed(index),
                    None => ReadProgress::LeadershipLost,
                };
            }
        }
    }

    /// The answer to a read at `now`, once confirmed and applied up to
    /// its read index; the ticket is then used up. A leased read whose
    /// lease ran out before the store caught up is answered `not_leader`,
    /// for the client to ask again.
    pub fn poll_read(
        &mut self,
        raft: &Raft,
        kv: &KvStore,
        t: &ReadTicket,
        now: Duration,
    ) -> Option<Response> {
        let answer = match *self.reads.get(&t.ctx)? {
            ReadProgress::Waiting => return None,
            ReadProgress::Leased { expires, .. } if now >= expires => {
                self.not_leader(raft.leader_id())
            }
            ReadProgress::Confirmed(index) | ReadProgress::Leased { index, .. }
                if kv.applied_index() < index =>
            {
                return None;
            }
            ReadProgress::Confirmed(_) | ReadProgress::Leased { .. } => Self::answer(kv, &t.query),
            ReadProgress::LeadershipLost => self.not_leader(raft.leader_id()),
        };
        self.reads.remove(&t.ctx);
        Some(answer)
    }

    /// The read index of a confirmed read, until it is answered.
    pub fn confirmed_index(&self, t: &ReadTicket) -> Option<Index> {
        match self.reads.get(&t.ctx)? {
            ReadProgress::Confirmed(index) | ReadProgress::Leased { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// Gives up on a read (its client timed out).
    pub fn forget_read(&mut self, t: &ReadTicket) {
        self.reads.remove(&t.ctx);
    }

    /// Reads in progress, for tests and status.
    pub fn reads_in_progress(&self) -> usize {
        self.reads.len()
    }

    /// A read of whatever this node has applied (`stale`).
    pub fn stale_read(kv: &KvStore, key: String) -> Response {
        Self::value(kv, &key)
    }

    /// A range read from whatever this node's store has applied (`stale`).
    pub fn stale_range(kv: &KvStore, query: &RangeQuery) -> Response {
        Self::range(kv, query)
    }

    fn answer(kv: &KvStore, query: &Query) -> Response {
        match query {
            Query::Key(key) => Self::value(kv, key),
            Query::Range(q) => Self::range(kv, q),
        }
    }

    /// At most `limit` keys (capped at `MAX_RANGE_KEYS`), and at most about
    /// `MAX_RANGE_BYTES` of keys and values, well under the line limit:
    /// `more` says the client should ask again after the last key.
    fn range(kv: &KvStore, q: &RangeQuery) -> Response {
        let from = q.from.as_str().max(q.prefix.as_str());
        let limit = q.limit.clamp(1, MAX_RANGE_KEYS);
        let (found, mut more) = kv.range(from, q.to.as_deref(), &q.prefix, limit);
        let mut kvs = Vec::with_capacity(found.len());
        let mut bytes = 0;
        for (key, value) in found {
            bytes += key.len() + if q.keys_only { 0 } else { value.len() };
            if bytes > MAX_RANGE_BYTES && !kvs.is_empty() {
                more = true;
                break;
            }
            kvs.push(KeyValue {
                key: key.to_string(),
                value: (!q.keys_only).then(|| value.to_string()),
            });
        }
        Response::Range {
            kvs,
            more,
            applied_index: kv.applied_index(),
        }
    }

    fn value(kv: &KvStore, key: &str) -> Response {
        Response::Value {
            value: kv.get(key).map(str::to_string),
            key: key.to_string(),
            applied_index: kv.applied_index(),
        }
    }

    /// This node's committed entries `from..`, at most `limit`, and at most
    /// about 1 MiB of them, well under the line limit: the client asks
    /// again from where the answer stops. Entries below the first index
    /// are compacted into the snapshot: a `from` below it starts there.
    pub fn log(raft: &Raft, from: Index, limit: usize) -> Response {
        let commit = raft.commit_index();
        let from = from.max(raft.log().first_index());
        let to = from
            .saturating_add(limit as Index)
            .saturating_sub(1)
            .min(commit);
        Response::Log {
            entries: raft.log().slice_bounded(from, to, 1024 * 1024).to_vec(),
            commit_index: commit,
            first_index: raft.log().first_index(),
        }
    }

    pub fn is_leader(&self, raft: &Raft) -> Response {
        let leader_id = raft.leader_id();
        Response::IsLeader {
            is_leader: raft.role() == Role::Leader,
            leader_id,
            leader_address: self.address_of(leader_id),
        }
    }

    /// The core's refusal of a proposal or read as `not_leader`.
    fn refused(&self, e: NotLeader) -> Response {
        match e.transferring_to {
            Some(to) => Response::Error {
                code: ErrorCode::NotLeader,
                message: format!("leadership is being handed to node{to}; retry there in a moment"),
                leader_id: Some(to),
                leader_address: self.address_of(Some(to)),
            },
            None => self.not_leader(e.leader_hint),
        }
    }

    pub fn not_leader(&self, hint: Option<NodeId>) -> Response {
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

    /// The answer when a write waited too long on this node.
    pub fn write_timed_out() -> Response {
        Response::error(
            ErrorCode::Timeout,
            "not applied in time; retry with the same number",
        )
    }

    /// The answer when a read waited too long on this node.
    pub fn read_timed_out() -> Response {
        Response::error(ErrorCode::Timeout, "read not confirmed in time")
    }

    /// The servers' addresses changed (a new membership is in force).
    pub fn set_members(&mut self, members: Vec<Member>) {
        self.members = members;
    }

    fn address_of(&self, id: Option<NodeId>) -> Option<String> {
        id.and_then(|id| self.members.iter().find(|m| m.id == id))
            .map(Member::address)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::consensus::{
        AppendEntries, AppendEntriesReply, Config, Entry, HardState, Payload, Reply, Request,
        RequestVoteReply,
    };
    use crate::kv::{Op, Outcome};

    const MS: Duration = Duration::from_millis(1);

    fn members() -> Vec<Member> {
        (0..3)
            .map(|id| Member {
                id,
                host: "h".into(),
                port: 5000 + id as u16,
            })
            .collect()
    }

    fn raft(id: NodeId) -> Raft {
        let cfg = Config::new(id, 0..3, 7);
        Raft::new(cfg, HardState::default(), Vec::new(), Duration::ZERO)
    }

    /// Node 0 elected leader of term 1 with node 1's vote, its no-op
    /// committed with node 1's ack, and applied.
    fn leader() -> (Raft, KvStore) {
        let mut r = raft(0);
        let t = Duration::from_secs(1);
        r.campaign(t);
        let _ = r.poll_peer(1, t).unwrap();
        let granted = Reply::RequestVote(RequestVoteReply {
            term: 1,
            vote_granted: true,
            pre_vote: false,
        });
        r.handle_reply(1, granted, t).unwrap();
        assert_eq!(r.role(), Role::Leader);
        let mut kv = KvStore::new();
        ack(&mut r, &mut kv, t);
        (r, kv)
    }

    /// Node 0's log is synced and node 1 acknowledges everything node 0
    /// sends it; node 0 applies what that commits. Returns the reads the
    /// core answered meanwhile.
    fn ack(r: &mut Raft, kv: &mut KvStore, now: Duration) -> Vec<ReadState> {
        let written = r.take_ready();
        let (index, term) = (r.log().last_index(), r.log().last_term());
        r.persisted(index, term);
        while let Some(req) = r.poll_peer(1, now) {
            let Request::AppendEntries(ae) = &req else {
                panic!("{req:?}")
            };
            let reply = Reply::AppendEntries(AppendEntriesReply {
                success: true,
                match_index: ae.prev_log_index + ae.entries.len() as Index,
                ..AppendEntriesReply::answering(ae, r.term())
            });
            r.handle_reply(1, reply, now).unwrap();
        }
        let ready = r.take_ready();
        for e in written.committed.iter().chain(&ready.committed) {
            kv.apply(e);
        }
        written.reads.into_iter().chain(ready.reads).collect()
    }

    fn put(seq: u64) -> Command {
        Command {
            client: 9,
            seq,
            op: Op::Put {
                key: "k".into(),
                value: format!("v{seq}"),
            },
        }
    }

    #[test]
    fn a_write_is_answered_once_applied_and_a_retry_from_the_session() {
        let (mut r, mut kv) = leader();
        let mut s = ClientService::new(members());
        let Step::Wait(t) = s.write(&mut r, &kv, put(1)) else {
            panic!("a leader proposes")
        };
        assert_eq!(s.poll_write(&r, &kv, &t), None, "not committed yet");
        ack(&mut r, &mut kv, Duration::from_secs(1));
        let done = s.poll_write(&r, &kv, &t).unwrap();
        assert_eq!(
            done,
            Response::Written {
                index: t.index,
                outcome: Outcome::Ok
            }
        );
        let last = r.log().last_index();
        // The same number again: answered from the session, no new entry.
        assert!(matches!(s.write(&mut r, &kv, put(1)), Step::Answer(a) if a == done));
        assert_eq!(r.log().last_index(), last);
    }

    /// Applies writes 1..=n of client 9 through the leader.
    fn written(r: &mut Raft, kv: &mut KvStore, s: &mut ClientService, n: u64) {
        for seq in 1..=n {
            let Step::Wait(t) = s.write(r, kv, put(seq)) else {
                panic!("a leader proposes")
            };
            ack(r, kv, Duration::from_secs(1));
            assert!(matches!(
                s.poll_write(r, kv, &t),
                Some(Response::Written { .. })
            ));
        }
    }

    #[test]
    fn a_write_older_than_the_clients_latest_gets_a_definite_answer_and_no_entry() {
        let (mut r, mut kv) = leader();
        let mut s = ClientService::new(members());
        written(&mut r, &mut kv, &mut s, 3);
        let last = r.log().last_index();
        let Step::Answer(Response::Error { code, message, .. }) = s.write(&mut r, &kv, put(2))
        else {
            panic!("answered at once")
        };
        assert_eq!(code, ErrorCode::StaleRequest, "{message}");
        assert!(message.contains("request 2") && message.contains("latest applied request, 3"));
        assert_eq!(r.log().last_index(), last, "nothing was proposed");
    }

    #[test]
    fn an_older_write_applied_after_a_newer_one_gets_a_definite_answer() {
        // Numbers 2 and 3 are proposed before either is applied (a
        // client that does not wait, or two that share an id); 3 is
        // applied first, so 2 is a duplicate by the time it applies.
        let (mut r, mut kv) = leader();
        let mut s = ClientService::new(members());
        written(&mut r, &mut kv, &mut s, 1);
        let Step::Wait(three) = s.write(&mut r, &kv, put(3)) else {
            panic!("proposed")
        };
        let Step::Wait(two) = s.write(&mut r, &kv, put(2)) else {
            panic!("proposed")
        };
        ack(&mut r, &mut kv, Duration::from_secs(1));
        assert!(matches!(
            s.poll_write(&r, &kv, &three),
            Some(Response::Written { .. })
        ));
        assert!(matches!(
            s.poll_write(&r, &kv, &two),
            Some(Response::Error {
                code: ErrorCode::StaleRequest,
                ..
            })
        ));
    }

    #[test]
    fn a_follower_answers_not_leader_with_the_leaders_address() {
        let mut r = raft(1);
        let ae = AppendEntries {
            term: 1,
            leader_id: 2,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            read_round: 0,
        };
        r.handle_request(2, Request::AppendEntries(ae), MS).unwrap();
        let mut s = ClientService::new(members());
        let Step::Answer(Response::Error {
            code,
            leader_id,
            leader_address,
            ..
        }) = s.write(&mut r, &KvStore::new(), put(1))
        else {
            panic!("a follower answers at once")
        };
        assert_eq!(code, ErrorCode::NotLeader);
        assert_eq!(
            (leader_id, leader_address),
            (Some(2), Some("h:5002".into()))
        );
    }

    #[test]
    fn oversized_writes_are_bad_requests() {
        let (mut r, kv) = leader();
        let mut s = ClientService::new(members());
        let huge = Command {
            client: 1,
            seq: 1,
            op: Op::Append {
                data: "x".repeat(crate::kv::MAX_VALUE_BYTES + 1),
            },
        };
        let Step::Answer(Response::Error { code, message, .. }) = s.write(&mut r, &kv, huge) else {
            panic!()
        };
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.contains("data is"), "{message}");
    }

    #[test]
    fn a_write_whose_entry_is_overwritten_by_a_new_leader_is_lost() {
        let (mut r, kv) = leader();
        let mut s = ClientService::new(members());
        let Step::Wait(t) = s.write(&mut r, &kv, put(1)) else {
            panic!()
        };
        // Node 2 wins term 2 without our entry and replaces it.
        let ae = AppendEntries {
            term: 2,
            leader_id: 2,
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![Entry {
                index: 2,
                term: 2,
                payload: Payload::Noop,
            }],
            leader_commit: 0,
            read_round: 0,
        };
        r.handle_request(2, Request::AppendEntries(ae), 2 * MS)
            .unwrap();
        let Some(Response::Error {
            code, leader_id, ..
        }) = s.poll_write(&r, &kv, &t)
        else {
            panic!("lost")
        };
        assert_eq!((code, leader_id), (ErrorCode::NotLeader, Some(2)));
    }

    /// Reads in these tests happen at this time (the lease does not
    /// matter: lease reads are off).
    const T: Duration = Duration::from_secs(1);

    #[test]
    fn a_read_waits_for_confirmation_and_fails_when_leadership_is_lost() {
        let (mut r, mut kv) = leader();
        let mut s = ClientService::new(members());
        let Step::Wait(t) = s.read(&mut r, &kv, "k".into(), T) else {
            panic!()
        };
        s.route_reads(r.take_ready().reads);
        assert_eq!(s.poll_read(&r, &kv, &t, T), None, "needs a heartbeat round");
        let confirmed = ack(&mut r, &mut kv, Duration::from_secs(1));
        s.route_reads(confirmed);
        assert_eq!(
            s.poll_read(&r, &kv, &t, T),
            Some(Response::Value {
                key: "k".into(),
                value: None,
                applied_index: 1
            })
        );
        assert_eq!(s.poll_read(&r, &kv, &t, T), None, "a ticket is used once");
        assert_eq!(s.reads_in_progress(), 0);

        // A second read, then a newer term from node 2 deposes us.
        let Step::Wait(t) = s.read(&mut r, &kv, "k".into(), T) else {
            panic!()
        };
        let ae = AppendEntries {
            term: 2,
            leader_id: 2,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            read_round: 0,
        };
        r.handle_request(2, Request::AppendEntries(ae), 2 * MS)
            .unwrap();
        s.route_reads(r.take_ready().reads);
        let Some(Response::Error {
            code, leader_id, ..
        }) = s.poll_read(&r, &kv, &t, T)
        else {
            panic!()
        };
        assert_eq!((code, leader_id), (ErrorCode::NotLeader, Some(2)));
    }
}
