//! The peer service: Raft RPCs from other nodes.
//!
//! Before the core sees a message, the envelope is checked: it must carry
//! this cluster's id and the id of another member. Then the core checks
//! the message itself (`consensus::validate`). Whatever is refused gets an
//! error response naming the problem, changes nothing, and is reported in
//! the activity log once per sender and kind of problem, not once per
//! message: a misconfigured node retrying every heartbeat would otherwise
//! bury everything else.
//!
//! The same bookkeeping serves the other direction: a peer that refuses
//! *our* requests (it was started with another configuration, say), or
//! answers them with nonsense, is reported once too.

use std::collections::HashSet;
use std::time::Duration;

use crate::consensus::{self, NodeId, Raft, Rejection};
use crate::wire::{ErrorCode, PeerRequest, Response};

/// How many distinct (sender, problem) pairs are remembered for reporting
/// once. Past it, new problems are only counted, so a stream of messages
/// with ever-new cluster ids cannot grow memory or the log without bound.
const MAX_REPORTED: usize = 256;

/// Foreign cluster ids are quoted in messages up to this many characters.
const MAX_QUOTED: usize = 40;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Offender {
    Node(NodeId),
    Cluster(String),
}

/// The outcome of one peer RPC.
#[derive(Debug)]
pub struct PeerAnswer {
    pub response: Response,
    /// The sender is a member of this cluster (right cluster id, known
    /// node id), whether or not the core accepted the message.
    pub from_member: bool,
    /// A line for the activity log, the first time this sender sent this
    /// kind of refused message.
    pub report: Option<String>,
}

pub struct PeerService {
    me: NodeId,
    cluster_id: String,
    reported: HashSet<(Offender, &'static str)>,
    /// `reported` reached `MAX_REPORTED`; new problems are only counted.
    overflowed: bool,
    /// Messages refused so far, reported or not.
    refused: u64,
    /// A peer answered that this server was removed from the cluster:
    /// its message.
    removed: Option<String>,
}

impl PeerService {
    /// The peer service of node `me`; the members are the core's.
    pub fn new(me: NodeId, cluster_id: String) -> Self {
        PeerService {
            me,
            cluster_id,
            reported: HashSet::new(),
            overflowed: false,
            refused: 0,
            removed: None,
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// How many peer messages were refused (in either direction).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Checks a peer RPC's envelope, hands it to the core, and answers.
    /// The caller persists the core's `Ready` before sending the response.
    pub fn handle(&mut self, raft: &mut Raft, request: PeerRequest, now: Duration) -> PeerAnswer {
        let kind = rpc_name(&request.rpc);
        let from = request.from;
        if request.cluster != self.cluster_id {
            let theirs = quote(&request.cluster);
            let message = format!(
                "{kind} from node{from} of cluster {theirs} refused: this is node{} of cluster {}; \
                 nodes of one cluster must be started with the same configuration",
                self.me, self.cluster_id
            );
            let report = self.report(Offender::Cluster(theirs), "wrong_cluster", &message);
            return PeerAnswer {
                response: Response::error(ErrorCode::WrongCluster, message),
                from_member: false,
                report,
            };
        }
        // Only a vote request is refused: a removed leader still sends
        // AppendEntries until it steps down, and its TimeoutNow hands
        // leadership over (thesis §4.2.2); a removed server that asks for
        // votes is told it is out, so that it stops.
        let asks_vote = matches!(request.rpc, consensus::Request::RequestVote(_));
        if let Some(index) = raft.removed_at(from).filter(|_| asks_vote) {
            let message = format!(
                "{kind} from node{from} refused: node{from} was removed from cluster {} by the membership at index {index} ({})",
                self.cluster_id,
                raft.membership_at(index)
            );
            let report = self.report(Offender::Node(from), "removed", &message);
            return PeerAnswer {
                response: Response::error(ErrorCode::Removed, message),
                from_member: false,
                report,
            };
        }
        match raft.handle_request(from, request.rpc, now) {
            Ok(reply) => PeerAnswer {
                response: Response::peer(reply),
                from_member: true,
                report: None,
            },
            // Our own id.
            Err(Rejection::UnknownSender { .. }) => {
                let message = format!(
                    "{kind} from node{from} refused: that is this node's own id (node{})",
                    self.me
                );
                let report = self.report(Offender::Node(from), "unknown_sender", &message);
                PeerAnswer {
                    response: Response::error(ErrorCode::UnknownSender, message),
                    from_member: false,
                    report,
                }
            }
            Err(rejection) => {
                let message = format!("{kind} from node{from} refused: {rejection}");
                let report = self.report(Offender::Node(from), rejection.kind(), &message);
                PeerAnswer {
                    response: Response::error(ErrorCode::Rejected, message),
                    from_member: true,
                    report,
                }
            }
        }
    }

    /// Checks what `peer` answered to one of our requests: `Some` for a
    /// reply to hand to the core (which knows from the reply itself what
    /// it answers), otherwise the failure (an error response, or something
    /// that is not a Raft reply), which the caller reports to the core
    /// with `handle_failure`. The second value is a line for the activity
    /// log, once per peer and kind.
    pub fn check_response(
        &mut self,
        peer: NodeId,
        response: Response,
    ) -> (Option<consensus::Reply>, Option<String>) {
        match response.into_peer() {
            Ok(reply) => (Some(reply), None),
            Err(Response::Error {
                code: ErrorCode::Removed,
                message,
                ..
            }) => {
                self.removed = Some(format!("node{peer} says: {message}"));
                (None, None)
            }
            Err(Response::Error { code, message, .. }) => {
                let line = format!("node{peer} refused our request: {message}");
                let key = match code {
                    ErrorCode::WrongCluster => "refused_wrong_cluster",
                    ErrorCode::UnknownSender => "refused_unknown_sender",
                    ErrorCode::Rejected => "refused_rejected",
                    _ => "refused_other",
                };
                (None, self.report(Offender::Node(peer), key, &line))
            }
            Err(other) => {
                let message = format!("node{peer} answered our request with {other:?}");
                (
                    None,
                    self.report(Offender::Node(peer), "wrong_reply", &message),
                )
            }
        }
    }

    /// What a peer said when it told us we were removed from the
    /// cluster, once.
    pub fn take_removed(&mut self) -> Option<String> {
        self.removed.take()
    }

    /// A reply the core refused (`Raft::handle_reply`'s error).
    pub fn reply_refused(&mut self, peer: NodeId, rejection: &Rejection) -> Option<String> {
        let message = format!("reply from node{peer} ignored: {rejection}");
        self.report(Offender::Node(peer), rejection.kind(), &message)
    }

    /// Counts a refusal; returns the line to log if this offender has not
    /// been reported for this kind of problem before.
    fn report(&mut self, who: Offender, kind: &'static str, message: &str) -> Option<String> {
        self.refused += 1;
        let key = (who, kind);
        if self.reported.contains(&key) {
            return None;
        }
        if self.reported.len() >= MAX_REPORTED {
            if self.overflowed {
                return None;
            }
            self.overflowed = true;
            return Some(format!(
                "{message} (and {MAX_REPORTED} other kinds of refused message so far: \
                 further new ones are counted, not logged)"
            ));
        }
        self.reported.insert(key);
        Some(format!(
            "{message} (logged once per sender and kind of problem)"
        ))
    }
}

fn rpc_name(rpc: &consensus::Request) -> &'static str {
    match rpc {
        consensus::Request::RequestVote(_) => "request_vote",
        consensus::Request::AppendEntries(_) => "append_entries",
        consensus::Request::InstallSnapshot(_) => "install_snapshot",
        consensus::Request::TimeoutNow(_) => "timeout_now",
    }
}

/// A foreign string, cut short and with control characters escaped, fit
/// for one log line.
fn quote(s: &str) -> String {
    let cut: String = s.chars().take(MAX_QUOTED).collect();
    let mut q = format!("{cut:?}");
    if cut.len() < s.len() {
        q.push('…');
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{
        AppendEntries, Config, Entry, HardState, Payload, Reply, Request, RequestVote, Role,
    };

    const MS: Duration = Duration::from_millis(1);

    fn follower(id: NodeId) -> Raft {
        let cfg = Config::new(id, 0..3, 1);
        Raft::new(cfg, HardState::default(), Vec::new(), Duration::ZERO)
    }

    fn service() -> PeerService {
        PeerService::new(0, "ours".into())
    }

    fn vote(cluster: &str, from: NodeId, term: u64) -> PeerRequest {
        PeerRequest {
            cluster: cluster.into(),
            from,
            rpc: Request::RequestVote(RequestVote {
                term,
                candidate_id: from,
                last_log_index: 0,
                last_log_term: 0,
                pre_vote: false,
                transfer: false,
            }),
        }
    }

    fn error_code(r: &Response) -> Option<ErrorCode> {
        match r {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn a_member_of_this_cluster_is_answered_by_the_core() {
        let (mut s, mut raft) = (service(), follower(0));
        let a = s.handle(&mut raft, vote("ours", 1, 1), 10 * MS);
        assert!(matches!(a.response, Response::RequestVote(r) if r.vote_granted));
        assert!(a.from_member && a.report.is_none());
        assert_eq!(raft.term(), 1);
    }

    #[test]
    fn another_cluster_is_refused_naming_both_ids_and_reported_once() {
        let (mut s, mut raft) = (service(), follower(0));
        let a = s.handle(&mut raft, vote("theirs", 1, 99), 10 * MS);
        assert_eq!(error_code(&a.response), Some(ErrorCode::WrongCluster));
        let Response::Error { message, .. } = &a.response else {
            unreachable!()
        };
        assert!(message.contains("\"theirs\"") && message.contains("cluster ours"));
        assert!(!a.from_member);
        assert!(a.report.is_some());
        assert_eq!(raft.term(), 0, "a foreign vote request changes nothing");
        let again = s.handle(&mut raft, vote("theirs", 1, 100), 10 * MS);
        assert_eq!(error_code(&again.response), Some(ErrorCode::WrongCluster));
        assert!(again.report.is_none(), "reported once");
        assert_eq!(s.refused(), 2);
    }

    #[test]
    fn our_own_id_is_refused_and_an_unknown_one_heard() {
        let (mut s, mut raft) = (service(), follower(0));
        let a = s.handle(&mut raft, vote("ours", 0, 5), 10 * MS);
        assert_eq!(error_code(&a.response), Some(ErrorCode::UnknownSender));
        let Response::Error { message, .. } = &a.response else {
            unreachable!()
        };
        assert!(message.contains("own id"), "{message}");
        assert!(a.report.is_some());
        assert_eq!(raft.term(), 0);
        // An id this node has not heard of may be a server added since
        // (thesis §4.1): its request reaches the core.
        let a = s.handle(&mut raft, vote("ours", 7, 5), 10 * MS);
        assert!(error_code(&a.response).is_none(), "{:?}", a.response);
    }

    #[test]
    fn a_rule_breaking_message_is_refused_by_the_core_and_reported_once_per_kind() {
        let (mut s, mut raft) = (service(), follower(0));
        let bad = |index| PeerRequest {
            cluster: "ours".into(),
            from: 1,
            rpc: Request::AppendEntries(AppendEntries {
                term: 1,
                leader_id: 1,
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry {
                    index,
                    term: 1,
                    payload: Payload::Noop,
                }],
                leader_commit: 0,
                read_round: 0,
            }),
        };
        let a = s.handle(&mut raft, bad(9), 10 * MS);
        assert_eq!(error_code(&a.response), Some(ErrorCode::Rejected));
        assert!(a.from_member, "a member, if a confused one");
        assert!(a.report.unwrap().contains("contiguous"));
        assert!(s.handle(&mut raft, bad(5), 10 * MS).report.is_none());
        assert_eq!(raft.term(), 0);
        assert_eq!(raft.role(), Role::Follower);
        assert_eq!(raft.log().last_index(), 0);
    }

    #[test]
    fn a_server_whose_removal_is_committed_cannot_raise_our_term() {
        // Scenario 11: a removed server that keeps timing out asks for
        // votes, as a pre-vote or (PreVote off) a real one with a higher
        // term: refused with `removed` before the core sees it, so our
        // term and leader stay. Its other requests still reach the core (a
        // removed leader hands over with TimeoutNow).
        use crate::consensus::membership::{Change, Membership};
        let removed = Membership::bootstrap((0..4).map(|id| (id, format!("node{id}"))))
            .apply(&Change::Remove(3))
            .unwrap();
        let (mut s, mut raft) = (service(), follower(0));
        let entries = vec![Entry {
            index: 1,
            term: 1,
            payload: Payload::Membership(removed),
        }];
        let append = PeerRequest {
            cluster: "ours".into(),
            from: 1,
            rpc: Request::AppendEntries(AppendEntries {
                term: 1,
                leader_id: 1,
                prev_log_index: 0,
                prev_log_term: 0,
                entries,
                leader_commit: 1,
                read_round: 0,
            }),
        };
        let a = s.handle(&mut raft, append, MS);
        assert!(error_code(&a.response).is_none(), "{:?}", a.response);
        assert_eq!(raft.removed_at(3), Some(1));
        for pre_vote in [true, false] {
            let mut request = vote("ours", 3, 9);
            if let Request::RequestVote(r) = &mut request.rpc {
                r.pre_vote = pre_vote;
                r.last_log_index = 5;
                r.last_log_term = 1;
            }
            let a = s.handle(&mut raft, request, 10 * MS);
            assert_eq!(error_code(&a.response), Some(ErrorCode::Removed));
            let Response::Error { message, .. } = &a.response else {
                unreachable!()
            };
            assert!(message.contains("node3 was removed"), "{message}");
            assert_eq!((raft.term(), raft.leader_id()), (1, Some(1)));
        }
        // The removed server, told so, knows it.
        let mut theirs = service();
        let told = Response::error(ErrorCode::Removed, "node3 was removed");
        assert_eq!(theirs.check_response(0, told), (None, None));
        assert!(theirs.take_removed().unwrap().contains("node0 says"));
    }

    #[test]
    fn refusals_of_our_requests_are_reported_once() {
        let mut s = service();
        let refused = Response::error(ErrorCode::WrongCluster, "cluster x, not y");
        let (reply, line) = s.check_response(2, refused.clone());
        assert!(reply.is_none());
        assert!(
            line.unwrap()
                .contains("node2 refused our request: cluster x")
        );
        assert_eq!(s.check_response(2, refused), (None, None));
        let ok = Response::peer(Reply::RequestVote(consensus::RequestVoteReply {
            term: 1,
            vote_granted: true,
            pre_vote: false,
        }));
        assert!(s.check_response(2, ok).0.is_some());
    }

    #[test]
    fn ever_new_cluster_ids_are_counted_not_logged_without_bound() {
        let (mut s, mut raft) = (service(), follower(0));
        let logged = (0..1000)
            .filter(|k| {
                s.handle(&mut raft, vote(&format!("x{k}"), 1, 1), MS)
                    .report
                    .is_some()
            })
            .count();
        assert_eq!(logged, MAX_REPORTED + 1);
        assert_eq!(s.refused(), 1000);
    }
}
