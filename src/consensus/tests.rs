//! Unit tests for single rules of Figure 2, driving one `Raft` by hand.
//! Whole-cluster behaviour is tested by the simulation in tests/. Most
//! run Figure 2 alone (`cfg`: no PreVote, no CheckQuorum); those of the
//! thesis's additions turn them on (`with_pre_vote`, `with_check_quorum`).

use super::*;

const MS: Duration = Duration::from_millis(1);

fn cfg(id: NodeId, n: u64) -> Config {
    Config {
        pre_vote: false,
        check_quorum: false,
        ..Config::new(id, 0..n, id)
    }
}

fn entries(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(k, &term)| Entry {
            index: k as Index + 1,
            term,
            payload: Payload::Command(Json::string(&format!("e{}", k + 1))),
        })
        .collect()
}

fn node(id: NodeId, n: u64, term: Term, log: &[Term]) -> Raft {
    Raft::new(
        cfg(id, n),
        HardState {
            term,
            ..HardState::default()
        },
        entries(log),
        Duration::ZERO,
    )
}

fn vote_req(term: Term, candidate: NodeId, last_index: Index, last_term: Term) -> Request {
    Request::RequestVote(RequestVote {
        term,
        candidate_id: candidate,
        last_log_index: last_index,
        last_log_term: last_term,
        pre_vote: false,
        transfer: false,
    })
}

fn granted(reply: Result<Reply, Rejection>) -> bool {
    match reply.expect("a valid request") {
        Reply::RequestVote(r) => r.vote_granted,
        other => panic!("unexpected {other:?}"),
    }
}

fn append_reply(reply: Result<Reply, Rejection>) -> AppendEntriesReply {
    match reply.expect("a valid request") {
        Reply::AppendEntries(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

/// The reply a follower at `term` sends to the AppendEntries `req`, with
/// the outcome given; it echoes from `req` what it answers.
fn ae_reply(
    req: &Request,
    term: Term,
    success: bool,
    match_index: Index,
    (conflict_term, conflict_index): (Option<Term>, Index),
) -> Reply {
    let Request::AppendEntries(ae) = req else {
        panic!("{req:?}")
    };
    Reply::AppendEntries(AppendEntriesReply {
        success,
        match_index,
        conflict_term,
        conflict_index,
        ..AppendEntriesReply::answering(ae, term)
    })
}

/// Makes node 0 of a 3-node cluster leader of `term + 1` with votes from 1.
fn elected(log: &[Term], term: Term) -> Raft {
    let mut r = node(0, 3, term, log);
    r.tick(Duration::from_secs(1));
    assert_eq!(r.role(), Role::Candidate);
    let req = r.poll_peer(1, Duration::from_secs(1)).unwrap();
    assert!(matches!(req, Request::RequestVote(_)));
    r.handle_reply(
        1,
        Reply::RequestVote(RequestVoteReply {
            term: r.term(),
            vote_granted: true,
            pre_vote: false,
        }),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(r.role(), Role::Leader);
    let _ = sync(&mut r);
    r
}

/// A candidate of term 2 sends each of `voters` its RequestVote and hears
/// a grant back.
fn granted_by(r: &mut Raft, voters: &[NodeId], now: Duration) {
    for &voter in voters {
        let _ = r.poll_peer(voter, now).unwrap();
        r.handle_reply(
            voter,
            Reply::RequestVote(RequestVoteReply {
                term: 2,
                vote_granted: true,
                pre_vote: false,
            }),
            now,
        )
        .unwrap();
    }
}

/// The caller's log writer: takes what `r` has to write, and reports all
/// of it durable. Returns what was taken.
fn sync(r: &mut Raft) -> Ready {
    let ready = r.take_ready();
    let (index, term) = (r.log().last_index(), r.log().last_term());
    r.persisted(index, term);
    ready
}

#[test]
fn election_timeout_makes_a_candidate_that_votes_for_itself() {
    let mut r = node(1, 3, 4, &[]);
    let deadline = r.tick_deadline().unwrap();
    assert!(deadline >= 300 * MS && deadline <= 600 * MS);
    r.tick(deadline - MS);
    assert_eq!(r.role(), Role::Follower);
    r.tick(deadline);
    assert_eq!(r.role(), Role::Candidate);
    assert_eq!(r.term(), 5);
    let ready = r.take_ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 5,
            voted_for: Some(1),
            lost_through: 0,
            lost_term: 0,
        }),
        "term and vote must be persisted before RequestVote goes out"
    );
}

#[test]
fn request_vote_rule_1_refuses_a_stale_term() {
    let mut r = node(0, 3, 5, &[]);
    assert!(!granted(r.handle_request(
        1,
        vote_req(4, 1, 0, 0),
        Duration::ZERO
    )));
}

#[test]
fn request_vote_rule_2_one_vote_per_term() {
    let mut r = node(0, 3, 1, &[]);
    assert!(granted(r.handle_request(
        1,
        vote_req(2, 1, 0, 0),
        Duration::ZERO
    )));
    assert!(!granted(r.handle_request(
        2,
        vote_req(2, 2, 0, 0),
        Duration::ZERO
    )));
    assert!(
        granted(r.handle_request(1, vote_req(2, 1, 0, 0), Duration::ZERO)),
        "a retried request from the same candidate is granted again"
    );
    assert_eq!(
        r.take_ready().hard_state,
        Some(HardState {
            term: 2,
            voted_for: Some(1),
            lost_through: 0,
            lost_term: 0,
        })
    );
}

#[test]
fn section_5_4_1_vote_only_for_an_up_to_date_log() {
    let mut r = node(0, 3, 3, &[1, 1, 3]);
    assert!(
        !granted(r.handle_request(1, vote_req(4, 1, 5, 2), Duration::ZERO)),
        "lower last term, longer log"
    );
    assert!(
        !granted(r.handle_request(2, vote_req(5, 2, 2, 3), Duration::ZERO)),
        "same last term, shorter log"
    );
    assert!(granted(r.handle_request(
        2,
        vote_req(6, 2, 3, 3),
        Duration::ZERO
    )));
    // The refused requests still taught us the newer terms.
    assert_eq!(r.term(), 6);
}

#[test]
fn higher_term_in_a_reply_turns_a_leader_into_a_follower() {
    let mut r = elected(&[], 1);
    let req = r.poll_peer(1, Duration::from_secs(1)).unwrap();
    let reply = ae_reply(&req, 9, false, 0, (None, 1));
    r.handle_reply(1, reply, Duration::from_secs(1)).unwrap();
    assert_eq!(
        (r.role(), r.term(), r.voted_for()),
        (Role::Follower, 9, None)
    );
    assert_eq!(
        r.take_ready().hard_state,
        Some(HardState {
            term: 9,
            voted_for: None,
            lost_through: 0,
            lost_term: 0,
        })
    );
}

#[test]
fn a_new_leader_appends_a_noop_and_heartbeats_at_once() {
    let mut r = elected(&[1, 1], 1);
    assert_eq!(r.log().last_index(), 3);
    assert_eq!(r.log().get(3).unwrap().payload, Payload::Noop);
    match r.poll_peer(2, Duration::from_secs(1)).unwrap() {
        Request::AppendEntries(ae) => {
            assert_eq!((ae.prev_log_index, ae.prev_log_term), (2, 1));
            assert_eq!(ae.entries.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        r.poll_peer(2, Duration::from_secs(1)).is_none(),
        "one request in flight to a peer whose log position is unknown"
    );
}

#[test]
fn append_entries_rule_2_consistency_check_applies_to_heartbeats() {
    let mut r = node(1, 3, 2, &[1, 1]);
    let ae = AppendEntries {
        term: 2,
        leader_id: 0,
        prev_log_index: 2,
        prev_log_term: 2,
        entries: vec![],
        leader_commit: 2,
        read_round: 0,
    };
    let reply = append_reply(r.handle_request(0, Request::AppendEntries(ae), Duration::ZERO));
    assert!(!reply.success);
    assert_eq!((reply.conflict_term, reply.conflict_index), (Some(1), 1));
    assert_eq!(
        r.commit_index(),
        0,
        "a failed check must not advance the commit index"
    );
}

#[test]
fn append_entries_rule_3_truncates_only_on_a_real_conflict() {
    let mut r = node(1, 3, 3, &[1, 2, 2]);
    // A delayed AppendEntries carrying only entry 2 must not drop entry 3.
    let mut e = entries(&[1, 2, 2]);
    let ae = AppendEntries {
        term: 3,
        leader_id: 0,
        prev_log_index: 1,
        prev_log_term: 1,
        entries: vec![e[1].clone()],
        leader_commit: 0,
        read_round: 0,
    };
    assert!(append_reply(r.handle_request(0, Request::AppendEntries(ae), Duration::ZERO)).success);
    assert_eq!(r.log().last_index(), 3);
    assert!(r.take_ready().truncate_from.is_none());
    // A different term at index 2 is a conflict: 2 and 3 go.
    e[1].term = 3;
    let ae = AppendEntries {
        term: 3,
        leader_id: 0,
        prev_log_index: 1,
        prev_log_term: 1,
        entries: vec![e[1].clone()],
        leader_commit: 0,
        read_round: 0,
    };
    let reply = append_reply(r.handle_request(0, Request::AppendEntries(ae), Duration::ZERO));
    assert_eq!((reply.success, reply.match_index), (true, 2));
    assert_eq!(r.log().last_index(), 2);
    let ready = r.take_ready();
    assert_eq!(ready.truncate_from, Some(2));
    assert_eq!(ready.appended, vec![e[1].clone()]);
}

#[test]
fn append_entries_rule_5_commit_is_capped_by_the_last_new_entry() {
    let mut r = node(1, 3, 1, &[1, 1, 1, 1]);
    // Entries 3 and 4 are unverified (the leader only vouched for 1..=2).
    let ae = AppendEntries {
        term: 1,
        leader_id: 0,
        prev_log_index: 2,
        prev_log_term: 1,
        entries: vec![],
        leader_commit: 4,
        read_round: 0,
    };
    assert!(append_reply(r.handle_request(0, Request::AppendEntries(ae), Duration::ZERO)).success);
    assert_eq!(r.commit_index(), 2);
    assert_eq!(r.take_ready().committed.len(), 2);
}

#[test]
fn figure_8_a_leader_does_not_commit_an_old_term_entry_by_counting() {
    // Leader of term 4 with an entry of term 2 that is now on a majority.
    let mut r = elected(&[1, 2], 3);
    assert_eq!(r.term(), 4);
    let now = Duration::from_secs(1);
    // Peer 1 acknowledges index 2 only (not the term-4 no-op at 3).
    let req = r.poll_peer(1, now).unwrap();
    let ok = |req: &Request, m| ae_reply(req, 4, true, m, (None, 0));
    r.handle_reply(1, ok(&req, 2), now).unwrap();
    assert_eq!(
        r.commit_index(),
        0,
        "index 2 is of term 2: counting replicas must not commit it"
    );
    let req = r.poll_peer(1, now).unwrap();
    r.handle_reply(1, ok(&req, 3), now).unwrap();
    assert_eq!(
        r.commit_index(),
        3,
        "committing the term-4 no-op commits 2 with it"
    );
}

#[test]
fn fast_backup_skips_a_whole_conflicting_term() {
    let mut r = elected(&[1, 1, 2, 2, 2], 2); // leader of term 3, log 1 1 2 2 2 3
    let now = Duration::from_secs(1);
    let req = r.poll_peer(1, now).unwrap(); // prev = 5
    // The follower holds only two entries: it says so, and the leader jumps
    // straight to index 3 instead of walking back one index per round trip.
    let reply = ae_reply(&req, 3, false, 0, (None, 3));
    r.handle_reply(1, reply, now).unwrap();
    match r.poll_peer(1, now).unwrap() {
        Request::AppendEntries(ae) => {
            assert_eq!(ae.prev_log_index, 2, "short follower: jump to its length")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stale_replies_from_an_earlier_term_are_dropped() {
    let mut r = elected(&[], 1);
    let now = Duration::from_secs(1);
    let old = r.poll_peer(1, now).unwrap();
    // Node steps down and wins again in a later term.
    r.handle_request(2, vote_req(5, 2, 0, 0), now).unwrap();
    assert_eq!(r.role(), Role::Follower);
    r.tick(now + Duration::from_secs(2));
    assert_eq!(r.role(), Role::Candidate);
    r.handle_reply(
        1,
        Reply::RequestVote(RequestVoteReply {
            term: r.term(),
            vote_granted: true,
            pre_vote: false,
        }),
        now,
    )
    .unwrap();
    assert_eq!((r.role(), r.term()), (Role::Leader, 6));
    let _ = r.poll_peer(1, now + Duration::from_secs(2)).unwrap();
    // Peer 1 answers the term-2 request now, in term 6: the reply says
    // what it answers, and the new leadership ignores it.
    let late = ae_reply(&old, 6, true, 1, (None, 0));
    r.handle_reply(1, late, now).unwrap();
    assert_eq!(r.match_index(1), Some(0));
    assert_eq!(
        r.progress(1).unwrap().state,
        ProgressState::Probe,
        "still looking for peer 1's position"
    );
}

#[test]
fn unreachable_peer_is_reported_once_and_backed_off() {
    let mut r = elected(&[], 1);
    let mut now = Duration::from_secs(1);
    let mut unreachable = 0;
    let mut last_gap = Duration::ZERO;
    for _ in 0..6 {
        let _ = r.poll_peer(1, now).expect("due");
        r.handle_failure(1, now);
        let next = r.peer_wakeup(1).unwrap();
        assert!(
            next - now >= last_gap,
            "backoff never shrinks while failing"
        );
        last_gap = next - now;
        now = next;
        unreachable += r
            .take_ready()
            .events
            .iter()
            .filter(|e| matches!(e, Event::PeerUnreachable { .. }))
            .count();
    }
    assert_eq!(unreachable, 1);
    assert!(last_gap <= 300 * MS / 2);
    let req = r.poll_peer(1, now).unwrap();
    r.handle_reply(1, ae_reply(&req, r.term(), true, 1, (None, 0)), now)
        .unwrap();
    assert!(
        r.take_ready()
            .events
            .contains(&Event::PeerReachable { peer: 1 })
    );
}

#[test]
fn single_node_cluster_elects_itself_and_commits_alone() {
    let mut r = node(0, 1, 0, &[]);
    r.tick(Duration::from_secs(1));
    assert_eq!(r.role(), Role::Leader);
    let (index, term) = r.propose(Json::string("x")).unwrap();
    let ready = r.take_ready();
    assert_eq!(ready.appended.len(), 2);
    // Thesis §10.2.1: the leader counts itself only for what is durable.
    assert_eq!(r.commit_index(), 0, "handed out is not yet on disk");
    r.persisted(index, term);
    assert_eq!(r.commit_index(), index);
    assert_eq!(r.take_ready().committed.len(), 2);
}

#[test]
fn thesis_10_2_1_a_leader_counts_itself_only_for_entries_it_has_persisted() {
    // Five nodes: the leader and two followers make a majority only if the
    // leader's own copy is durable.
    let mut r = node(0, 5, 1, &[]);
    let now = Duration::from_secs(1);
    r.tick(now);
    for p in [1, 2] {
        let _ = r.poll_peer(p, now).unwrap();
        let yes = Reply::RequestVote(RequestVoteReply {
            term: r.term(),
            vote_granted: true,
            pre_vote: false,
        });
        r.handle_reply(p, yes, now).unwrap();
    }
    assert_eq!(r.role(), Role::Leader);
    let (index, term) = r.propose(Json::string("x")).unwrap();
    let ready = r.take_ready();
    assert_eq!(ready.appended.last().map(|e| e.index), Some(index));
    // The leader sends the entries before they are on its disk...
    for p in [1, 2] {
        let req = r.poll_peer(p, now).unwrap();
        ack(&mut r, p, &req, now);
    }
    // ...but two acknowledgements of five are not a majority without it.
    assert_eq!(r.commit_index(), 0);
    // A report about an entry that is not in the log is ignored.
    r.persisted(index, term + 1);
    assert_eq!(r.commit_index(), 0);
    r.persisted(index, term);
    assert_eq!(r.commit_index(), index);
    assert_eq!(r.persisted_index(), index);
}

#[test]
fn a_deposed_leaders_durable_tail_is_not_durable_once_replaced() {
    // Leader of term 2 writes entries 2..=3 (noop, x), all durable; a new
    // leader of term 3 replaces index 3.
    let mut r = elected(&[1], 1);
    r.propose(Json::string("x")).unwrap();
    let _ = sync(&mut r);
    assert_eq!(r.persisted_index(), 3);
    let ae = AppendEntries {
        term: 3,
        leader_id: 1,
        prev_log_index: 2,
        prev_log_term: 2,
        entries: vec![Entry {
            index: 3,
            term: 3,
            payload: Payload::Noop,
        }],
        leader_commit: 0,
        read_round: 0,
    };
    append_reply(r.handle_request(1, Request::AppendEntries(ae), MS));
    assert_eq!(r.take_ready().truncate_from, Some(3));
    assert_eq!(
        r.persisted_index(),
        2,
        "the replaced entry was durable, its successor is not yet"
    );
    // A sync of the old entry that ends late says nothing about the new one.
    r.persisted(3, 2);
    assert_eq!(r.persisted_index(), 2);
    r.persisted(3, 3);
    assert_eq!(r.persisted_index(), 3);
}

/// Node 1 of 3, in term 1, having heard a heartbeat from leader 2.
fn follower_of_node_2() -> Raft {
    let mut r = node(1, 3, 1, &[]);
    let ae = AppendEntries {
        term: 1,
        leader_id: 2,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
        read_round: 0,
    };
    r.handle_request(2, Request::AppendEntries(ae), Duration::ZERO)
        .unwrap();
    r
}

#[test]
fn followers_refuse_proposals_with_a_leader_hint() {
    let mut r = follower_of_node_2();
    assert_eq!(
        r.propose(Json::string("x")),
        Err(NotLeader {
            transferring_to: None,
            leader_hint: Some(2)
        })
    );
}

fn ack(r: &mut Raft, peer: NodeId, req: &Request, now: Duration) {
    let Request::AppendEntries(ae) = req else {
        panic!("{req:?}")
    };
    let matched = ae.prev_log_index + ae.entries.len() as Index;
    let reply = ae_reply(req, r.term(), true, matched, (None, 0));
    r.handle_reply(peer, reply, now).unwrap();
}

#[test]
fn thesis_6_4_followers_refuse_reads_with_a_hint() {
    let mut r = follower_of_node_2();
    assert_eq!(
        r.read_index(7),
        Err(NotLeader {
            transferring_to: None,
            leader_hint: Some(2)
        })
    );
}

#[test]
fn thesis_6_4_a_read_waits_for_a_commit_in_the_leaders_term_then_a_quorum_round() {
    let mut r = elected(&[1, 1], 1); // leader of term 2; no-op at 3 not committed yet
    let now = Duration::from_secs(1);
    let first = r.poll_peer(1, now).unwrap(); // carries the no-op
    r.read_index(42).unwrap();
    assert!(r.take_ready().reads.is_empty());
    ack(&mut r, 1, &first, now);
    assert_eq!(r.commit_index(), 3);
    // The commit gives the read its index (3), but the answer to `first`
    // was built before the read existed: it does not confirm it.
    assert!(
        r.take_ready().reads.is_empty(),
        "an acknowledgement from before the read must not confirm it"
    );
    let hb = r
        .poll_peer(1, now)
        .expect("a read round sends a heartbeat at once, without waiting for the interval");
    ack(&mut r, 1, &hb, now);
    assert_eq!(
        r.take_ready().reads,
        vec![ReadState {
            ctx: 42,
            index: Some(3)
        }]
    );
}

#[test]
fn thesis_6_4_reads_arriving_during_a_round_share_the_next_heartbeat() {
    let mut r = elected(&[1, 1], 1);
    let now = Duration::from_secs(1);
    let first = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &first, now); // the no-op is committed: reads can start
    let _ = r.take_ready();
    r.read_index(1).unwrap();
    let round = r.poll_peer(1, now).expect("a heartbeat for the read");
    // However wide the window, reads arriving while that round is on its
    // way do not each get a heartbeat: they wait for the next one.
    r.read_index(2).unwrap();
    r.read_index(3).unwrap();
    assert_eq!(
        r.poll_peer(1, now),
        None,
        "one read round in flight at a time"
    );
    ack(&mut r, 1, &round, now);
    let next = r
        .poll_peer(1, now)
        .expect("the next round, for reads 2 and 3");
    assert_eq!(r.poll_peer(1, now), None);
    ack(&mut r, 1, &next, now);
    let ctxs: Vec<u64> = r.take_ready().reads.iter().map(|read| read.ctx).collect();
    assert_eq!(ctxs, vec![1, 2, 3]);
}

#[test]
fn thesis_6_4_pending_reads_fail_when_leadership_is_lost() {
    let mut r = elected(&[], 1);
    r.read_index(1).unwrap();
    r.handle_request(2, vote_req(9, 2, 5, 5), Duration::from_secs(1))
        .unwrap();
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(
        r.take_ready().reads,
        vec![ReadState {
            ctx: 1,
            index: None
        }]
    );
}

#[test]
fn single_node_reads_are_confirmed_at_once() {
    let mut r = node(0, 1, 0, &[]);
    r.tick(Duration::from_secs(1));
    let _ = sync(&mut r); // its no-op commits
    r.read_index(5).unwrap();
    assert_eq!(
        r.take_ready().reads,
        vec![ReadState {
            ctx: 5,
            index: Some(1)
        }]
    );
}

#[test]
fn followers_hear_of_a_new_commit_index_at_once_not_at_the_next_heartbeat() {
    let mut r = elected(&[], 1);
    let now = Duration::from_secs(1);
    let first = r.poll_peer(1, now).unwrap(); // carries the no-op
    let _ = r.poll_peer(2, now).unwrap();
    ack(&mut r, 1, &first, now);
    assert_eq!(r.commit_index(), 1);
    // Well before the heartbeat interval, peer 1 is told commit 1.
    let soon = now + Duration::from_millis(1);
    match r.poll_peer(1, soon) {
        Some(Request::AppendEntries(ae)) => {
            assert_eq!((ae.leader_commit, ae.entries.len()), (1, 0))
        }
        other => panic!("expected a commit notice, got {other:?}"),
    }
    let notice = Request::AppendEntries(AppendEntries {
        term: r.term(),
        leader_id: 0,
        prev_log_index: 1,
        prev_log_term: r.term(),
        entries: vec![],
        leader_commit: 1,
        read_round: 0,
    });
    ack(&mut r, 1, &notice, soon);
    assert!(
        r.poll_peer(1, soon).is_none(),
        "told once; then nothing until the heartbeat"
    );
}

/// Elects node 0 of 3 over `log` (term 1) with settings `c`, and returns
/// the first AppendEntries with entries that it sends peer 2 once peer 2
/// says its log is empty.
fn first_batch_for_an_empty_peer(c: Config, log: Vec<Entry>) -> AppendEntries {
    let now = Duration::from_secs(1);
    let mut r = Raft::new(
        c,
        HardState {
            term: 1,
            voted_for: None,
            lost_through: 0,
            lost_term: 0,
        },
        log,
        Duration::ZERO,
    );
    r.tick(now);
    granted_by(&mut r, &[1], now);
    assert_eq!(r.role(), Role::Leader);
    let probe = r.poll_peer(2, now).unwrap();
    let empty = ae_reply(&probe, 2, false, 0, (None, 1));
    r.handle_reply(2, empty, now).unwrap();
    match r.poll_peer(2, now) {
        Some(Request::AppendEntries(ae)) => ae,
        other => panic!("expected AppendEntries, got {other:?}"),
    }
}

#[test]
fn append_entries_batches_are_bounded_in_bytes_but_always_carry_one_entry() {
    let big = "x".repeat(400 * 1024);
    let log: Vec<Entry> = (1..=5)
        .map(|i| Entry {
            index: i,
            term: 1,
            payload: Payload::Command(Json::string(&big)),
        })
        .collect();
    // 1 MiB budget: as many 400 KiB entries as fit, two.
    assert_eq!(
        first_batch_for_an_empty_peer(cfg(0, 3), log.clone())
            .entries
            .len(),
        2
    );
    // A budget smaller than any one entry still sends one.
    let mut tiny = cfg(0, 3);
    tiny.max_bytes_per_append = 1000;
    let ae = first_batch_for_an_empty_peer(tiny, log);
    assert_eq!(
        ae.entries.len(),
        1,
        "an entry larger than the budget still goes, alone"
    );
}

// ----- Refusing what breaks the protocol (validate.rs) -----

/// Everything a refused message must leave as it was.
fn observable(r: &Raft) -> impl PartialEq + std::fmt::Debug + use<> {
    (
        r.hard_state(),
        r.role(),
        r.leader_id(),
        r.commit_index(),
        r.log().clone(),
        r.tick_deadline(),
        r.next_deadline(),
    )
}

/// Sends `request` from `from` and checks it is refused with `kind`,
/// changing nothing: not the state, and nothing in the next Ready.
fn refused(r: &mut Raft, from: NodeId, request: Request, kind: &str) {
    let _ = r.take_ready();
    let before = observable(r);
    let rejection = r
        .handle_request(from, request, 5 * MS)
        .expect_err("must be refused");
    assert_eq!(rejection.kind(), kind, "{rejection}");
    assert_eq!(observable(r), before, "a refused message changed state");
    assert_eq!(r.take_ready(), Ready::default());
}

fn append(term: Term, leader: NodeId, prev: (Index, Term), entries: Vec<Entry>) -> Request {
    Request::AppendEntries(AppendEntries {
        term,
        leader_id: leader,
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit: 0,
        read_round: 0,
    })
}

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Noop,
    }
}

#[test]
fn entries_not_contiguous_from_prev_log_index_are_refused() {
    // The line that used to abort a follower ("append out of order").
    let mut r = node(1, 3, 0, &[]);
    refused(
        &mut r,
        0,
        append(1, 0, (0, 0), vec![entry(9, 1)]),
        "not_contiguous",
    );
    refused(
        &mut r,
        0,
        append(1, 0, (0, 0), vec![entry(1, 1), entry(3, 1)]),
        "not_contiguous",
    );
}

#[test]
fn a_membership_entry_that_breaks_the_membership_rules_is_refused() {
    use super::membership::{Membership, Suffrage};
    let mut r = node(1, 3, 0, &[]);
    let mut m = Membership::bootstrap((0..3).map(|id| (id, format!("h:{id}"))));
    // No voter left: every server a learner.
    m.servers
        .values_mut()
        .for_each(|s| s.suffrage = Suffrage::Learner);
    let bad = Entry {
        index: 1,
        term: 1,
        payload: Payload::Membership(m),
    };
    refused(
        &mut r,
        0,
        append(1, 0, (0, 0), vec![bad]),
        "invalid_membership",
    );
}

#[test]
fn entry_terms_must_not_decrease_nor_exceed_the_message_term() {
    let mut r = node(1, 3, 0, &[1, 2]);
    refused(
        &mut r,
        0,
        append(3, 0, (2, 2), vec![entry(3, 1)]),
        "terms_decrease",
    );
    refused(
        &mut r,
        0,
        append(3, 0, (0, 0), vec![entry(1, 2), entry(2, 1)]),
        "terms_decrease",
    );
    refused(
        &mut r,
        0,
        append(3, 0, (2, 2), vec![entry(3, 4)]),
        "term_above_message",
    );
    refused(
        &mut r,
        0,
        append(3, 0, (2, 4), vec![]),
        "term_above_message",
    );
    refused(
        &mut r,
        0,
        append(3, 0, (0, 2), vec![]),
        "empty_prefix_with_term",
    );
}

#[test]
fn the_named_leader_or_candidate_must_be_the_sender() {
    let mut r = node(1, 3, 0, &[]);
    refused(&mut r, 0, append(1, 2, (0, 0), vec![]), "sender_mismatch");
    refused(&mut r, 0, vote_req(1, 2, 0, 0), "sender_mismatch");
    refused(&mut r, 1, vote_req(1, 1, 0, 0), "unknown_sender");
}

#[test]
fn a_leader_refuses_an_append_entries_of_its_own_term() {
    // The line that used to abort a leader (two leaders of one term).
    let mut r = elected(&[], 0);
    let term = r.term();
    refused(
        &mut r,
        2,
        append(term, 2, (0, 0), vec![]),
        "same_term_append_to_leader",
    );
    assert_eq!(r.role(), Role::Leader);
}

#[test]
fn a_second_leader_of_a_known_term_is_refused() {
    let mut r = follower_of_node_2();
    refused(&mut r, 0, append(1, 0, (0, 0), vec![]), "second_leader");
    assert_eq!(r.leader_id(), Some(2));
}

#[test]
fn entries_that_would_replace_committed_ones_are_refused() {
    // Node 1 holds [1, 1] with index 2 committed by leader 2 of term 1.
    let mut r = node(1, 3, 1, &[]);
    let ae = AppendEntries {
        term: 1,
        leader_id: 2,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![entry(1, 1), entry(2, 1)],
        leader_commit: 2,
        read_round: 0,
    };
    append_reply(r.handle_request(2, Request::AppendEntries(ae), MS));
    assert_eq!(r.commit_index(), 2);
    // A leader of term 3 that lacks them (impossible, by leader
    // completeness, unless it is broken).
    refused(
        &mut r,
        0,
        append(3, 0, (1, 1), vec![entry(2, 3)]),
        "overwrites_committed",
    );
    assert_eq!(r.term(), 1, "not even the term is adopted");
    // Past the commit index a conflict is an ordinary one (rule 3).
    let ok = append(3, 0, (2, 1), vec![entry(3, 3)]);
    assert!(append_reply(r.handle_request(0, ok, MS)).success);
}

#[test]
fn terms_and_indices_that_could_overflow_are_refused() {
    let mut r = elected(&[], 0);
    refused(&mut r, 1, vote_req(u64::MAX, 1, 0, 0), "term_too_large");
    refused(&mut r, 1, vote_req(MAX_TERM + 1, 1, 0, 0), "term_too_large");
    refused(
        &mut r,
        1,
        append(u64::MAX, 1, (0, 0), vec![]),
        "term_too_large",
    );
    refused(
        &mut r,
        1,
        append(9, 1, (u64::MAX, 1), vec![entry(0, 1)]),
        "index_too_large",
    );
    assert_eq!(r.role(), Role::Leader);
    // The largest allowed term is accepted, and the next election's term
    // (MAX_TERM + 1) still fits.
    let mut f = node(1, 3, 0, &[]);
    assert!(granted(f.handle_request(
        0,
        vote_req(MAX_TERM, 0, 0, 0),
        MS
    )));
    f.tick(Duration::from_secs(10));
    assert_eq!(f.term(), MAX_TERM + 1);
}

#[test]
fn a_reply_claiming_more_than_was_sent_is_refused_and_the_peer_retried() {
    let mut r = elected(&[1], 1);
    let now = Duration::from_secs(2);
    let req = r.poll_peer(1, now).unwrap();
    let commit = r.commit_index();
    let liar = ae_reply(&req, r.term(), true, 1_000_000, (None, 0));
    let rejection = r.handle_reply(1, liar, now).unwrap_err();
    assert_eq!(rejection.kind(), "match_beyond_request");
    assert_eq!(r.match_index(1), Some(0));
    assert_eq!(r.commit_index(), commit);
    // Treated as a failed RPC: the peer is asked again after a backoff.
    let later = now + Duration::from_secs(1);
    assert!(r.poll_peer(1, later).is_some());
}

// ----- Snapshots (§7, Figure 13) -----

fn meta_of(last_index: Index, last_term: Term, bytes: &str) -> SnapshotMeta {
    SnapshotMeta {
        last_index,
        last_term,
        size: bytes.len() as u64,
        crc32: crc32fast::hash(bytes.as_bytes()),
    }
}

fn chunk(term: Term, meta: SnapshotMeta, offset: u64, data: &str) -> Request {
    Request::InstallSnapshot(InstallSnapshot {
        term,
        leader_id: 2,
        snapshot: meta,
        offset,
        data: data.into(),
        membership: None,
    })
}

fn snapshot_reply(reply: Result<Reply, Rejection>) -> InstallSnapshotReply {
    match reply.expect("a valid request") {
        Reply::InstallSnapshot(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

/// A leader of term 2 over `log` (term 1) whose entries up to `upto` are
/// committed, applied and compacted into a snapshot of `bytes`.
fn compacted_leader(log: &[Term], upto: Index, bytes: &str) -> Raft {
    let mut r = elected(log, 1);
    r.cfg.trailing_entries = 0;
    let now = Duration::from_secs(1);
    let req = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &req, now);
    let ready = sync(&mut r);
    assert!(ready.committed.iter().any(|e| e.index == upto));
    let term = r.log().term_at(upto).unwrap();
    assert_eq!(r.compact(meta_of(upto, term, bytes)), Some(upto));
    assert_eq!(r.log().first_index(), upto + 1);
    r
}

#[test]
fn section_7_a_follower_whose_entries_are_compacted_gets_the_snapshot_in_chunks() {
    let bytes = "snapshot bytes";
    let mut r = compacted_leader(&[1, 1, 1], 4, bytes);
    let meta = r.snapshot();
    let now = Duration::from_secs(1);
    // Peer 2 has not answered; the entries after its presumed end (3)
    // are compacted, so the snapshot goes instead of a probe.
    let Some(Request::InstallSnapshot(first)) = r.poll_peer(2, now) else {
        panic!("entry 3 is compacted: the snapshot must go instead")
    };
    assert_eq!((first.snapshot, first.offset), (meta, 0));
    assert!(first.data.is_empty(), "the caller fills in the bytes");
    assert!(
        r.poll_peer(2, now).is_none(),
        "one chunk at a time, and no heartbeat before it is due"
    );
    // Heartbeats go on during the transfer, naming the snapshot's end.
    let later = now + r.cfg.heartbeat_interval;
    let Some(Request::AppendEntries(hb)) = r.poll_peer(2, later) else {
        panic!("a heartbeat is due")
    };
    assert_eq!((hb.prev_log_index, hb.entries.len()), (4, 0));
    r.handle_reply(
        2,
        ae_reply(&Request::AppendEntries(hb), 2, false, 0, (None, 1)),
        later,
    )
    .unwrap();
    assert_eq!(r.progress(2).unwrap().state, ProgressState::Snapshot);
    // The follower took 5 bytes: the next chunk starts there.
    let took = InstallSnapshotReply {
        term: 2,
        request_term: 2,
        last_index: 4,
        next_offset: 5,
        done: false,
        checksum_failed: false,
    };
    r.handle_reply(2, Reply::InstallSnapshot(took.clone()), later)
        .unwrap();
    let Some(Request::InstallSnapshot(second)) = r.poll_peer(2, later) else {
        panic!("the next chunk")
    };
    assert_eq!(second.offset, 5);
    // Lost on the way: resent from the same offset.
    r.handle_failure(2, later);
    let retry = later + Duration::from_secs(1);
    let Some(Request::InstallSnapshot(again)) = r.poll_peer(2, retry) else {
        panic!("the chunk again")
    };
    assert_eq!(again.offset, 5);
    let _ = r.take_ready();
    // The follower found the bytes wrong: the leader hears why, and the
    // transfer starts over from the first byte, not the last chunk.
    let refused = InstallSnapshotReply {
        next_offset: 0,
        checksum_failed: true,
        ..took.clone()
    };
    r.handle_reply(2, Reply::InstallSnapshot(refused), retry)
        .unwrap();
    assert!(
        r.take_ready()
            .events
            .contains(&Event::SnapshotRefused { peer: 2, index: 4 })
    );
    let Some(Request::InstallSnapshot(over)) = r.poll_peer(2, retry) else {
        panic!("the transfer again")
    };
    assert_eq!(over.offset, 0);
    let _ = r.take_ready();
    let done = InstallSnapshotReply {
        next_offset: meta.size,
        done: true,
        ..took
    };
    r.handle_reply(2, Reply::InstallSnapshot(done), retry)
        .unwrap();
    assert!(r.take_ready().events.iter().any(|e| matches!(
        e,
        Event::SnapshotSent {
            peer: 2,
            index: 4,
            ..
        }
    )));
    let p = r.progress(2).unwrap();
    assert_eq!(
        (p.state, p.match_index, p.next_index),
        (ProgressState::Probe, 4, 5)
    );
    r.propose(Json::string("after")).unwrap();
    let Some(Request::AppendEntries(next)) = r.poll_peer(2, retry) else {
        panic!("appends resume after the snapshot")
    };
    assert_eq!((next.prev_log_index, next.entries.len()), (4, 1));
}

#[test]
fn a_reply_about_a_snapshot_newer_than_ours_is_refused() {
    let mut r = compacted_leader(&[1, 1, 1], 4, "abc");
    let now = Duration::from_secs(1);
    let claim = InstallSnapshotReply {
        term: 2,
        request_term: 2,
        last_index: 9,
        next_offset: 0,
        done: true,
        checksum_failed: false,
    };
    let err = r
        .handle_reply(2, Reply::InstallSnapshot(claim.clone()), now)
        .unwrap_err();
    assert_eq!(err.kind(), "snapshot_reply_beyond");
    let too_many_bytes = InstallSnapshotReply {
        last_index: 4,
        next_offset: 4,
        done: false,
        ..claim
    };
    assert!(
        r.handle_reply(2, Reply::InstallSnapshot(too_many_bytes), now)
            .is_err()
    );
    assert_eq!(r.progress(2).unwrap().match_index, 0);
}

#[test]
fn figure_13_a_follower_installs_a_snapshot_chunk_by_chunk_and_discards_a_log_that_lacks_its_end() {
    let mut r = node(1, 3, 2, &[1, 1]);
    let bytes = "0123456789";
    let meta = meta_of(6, 2, bytes);
    let first = snapshot_reply(r.handle_request(2, chunk(2, meta, 0, "0123"), MS));
    assert_eq!((first.next_offset, first.done), (4, false));
    assert_eq!(r.leader_id(), Some(2));
    // A chunk that does not continue what we hold: we say where we are.
    let gap = snapshot_reply(r.handle_request(2, chunk(2, meta, 7, "789"), MS));
    assert_eq!((gap.next_offset, gap.done), (4, false));
    let last = snapshot_reply(r.handle_request(2, chunk(2, meta, 4, "456789"), MS));
    assert_eq!((last.next_offset, last.done), (10, true));
    let ready = r.take_ready();
    let written: Vec<(u64, &str)> = ready
        .snapshot_chunks
        .iter()
        .map(|c| (c.offset, c.data.as_str()))
        .collect();
    assert_eq!(written, vec![(0, "0123"), (4, "456789")]);
    assert_eq!(
        ready.installed_snapshot,
        Some(InstalledSnapshot {
            snapshot: meta,
            membership: r.membership().clone(),
            log_kept: false
        })
    );
    assert!(ready.committed.is_empty(), "the snapshot is applied whole");
    assert_eq!(r.snapshot(), meta);
    assert_eq!(r.commit_index(), 6);
    let log = r.log();
    assert_eq!(
        (log.base_index(), log.last_index(), log.last_term()),
        (6, 6, 2)
    );
    // Appends continue after it.
    let reply = append_reply(r.handle_request(2, append(2, 2, (6, 2), vec![entry(7, 2)]), MS));
    assert!(reply.success);
    assert_eq!(r.take_ready().appended, vec![entry(7, 2)]);
}

#[test]
fn figure_13_rule_6_a_log_holding_the_snapshots_end_keeps_what_follows() {
    let mut r = node(1, 3, 2, &[1, 1, 2, 2, 2]);
    let meta = meta_of(3, 2, "s");
    let reply = snapshot_reply(r.handle_request(2, chunk(2, meta, 0, "s"), MS));
    assert!(reply.done);
    let ready = r.take_ready();
    assert_eq!(
        ready.installed_snapshot.map(|i| i.log_kept),
        Some(true),
        "entry 3 of term 2 is ours too"
    );
    assert_eq!(ready.truncate_from, None);
    assert_eq!((r.log().first_index(), r.log().last_index()), (4, 5));
}

#[test]
fn a_snapshot_that_fails_its_checksum_is_dropped_whole_and_the_leader_told() {
    let mut r = node(1, 3, 2, &[1]);
    let meta = meta_of(5, 2, "good");
    snapshot_reply(r.handle_request(2, chunk(2, meta, 0, "go"), MS));
    let _ = r.take_ready();
    let before = (r.hard_state(), r.log().clone(), r.commit_index());
    let reply = snapshot_reply(r.handle_request(2, chunk(2, meta, 2, "ox"), MS));
    assert!(reply.checksum_failed && !reply.done);
    assert_eq!(reply.next_offset, 0, "start over");
    assert_eq!(
        (r.hard_state(), r.log().clone(), r.commit_index()),
        before,
        "nothing installed"
    );
    assert_eq!(r.snapshot(), SnapshotMeta::default());
    let ready = r.take_ready();
    assert!(ready.snapshot_chunks.is_empty() && ready.installed_snapshot.is_none());
    assert!(matches!(
        ready.events.as_slice(),
        [Event::SnapshotChecksumFailed {
            from: 2,
            index: 5,
            ..
        }]
    ));
    // What it had received is gone: the rest alone does not complete it.
    let reply = snapshot_reply(r.handle_request(2, chunk(2, meta, 2, "od"), MS));
    assert!(!reply.done && reply.next_offset == 0);
    // Sent again whole, it installs.
    snapshot_reply(r.handle_request(2, chunk(2, meta, 0, "go"), MS));
    assert!(snapshot_reply(r.handle_request(2, chunk(2, meta, 2, "od"), MS)).done);
}

#[test]
fn a_stale_or_duplicate_snapshot_changes_nothing_and_is_answered_done() {
    let mut r = node(1, 3, 2, &[1, 1, 2]);
    // Commit 3 through an append from the leader.
    let mut ae = append(2, 2, (3, 2), vec![]);
    if let Request::AppendEntries(a) = &mut ae {
        a.leader_commit = 3;
    }
    assert!(append_reply(r.handle_request(2, ae, MS)).success);
    let _ = r.take_ready();
    let log = r.log().clone();
    let reply = snapshot_reply(r.handle_request(2, chunk(2, meta_of(2, 1, "xy"), 0, "xy"), MS));
    assert!(reply.done, "entries up to 2 are committed here already");
    let ready = r.take_ready();
    assert!(ready.snapshot_chunks.is_empty() && ready.installed_snapshot.is_none());
    assert_eq!(r.log(), &log);
}

#[test]
fn an_append_starting_inside_the_snapshot_is_checked_from_the_snapshots_end() {
    let mut r = Raft::restore(
        cfg(1, 3),
        HardState {
            term: 2,
            voted_for: None,
            lost_through: 0,
            lost_term: 0,
        },
        (meta_of(5, 2, "snap"), None),
        vec![entry(6, 2)],
        Duration::ZERO,
    );
    assert_eq!(r.commit_index(), 5, "a snapshot holds committed entries");
    // Entries 4..=7 from a leader whose probe started at 3.
    let batch = (4..=7).map(|i| entry(i, 2)).collect();
    let reply = append_reply(r.handle_request(2, append(2, 2, (3, 1), batch), MS));
    assert_eq!((reply.success, reply.match_index), (true, 7));
    assert_eq!(r.take_ready().appended, vec![entry(7, 2)]);
    // Wholly inside the snapshot: matches, changes nothing.
    let reply = append_reply(r.handle_request(2, append(2, 2, (1, 1), vec![entry(2, 1)]), MS));
    assert_eq!((reply.success, reply.match_index), (true, 2));
    // An entry at the snapshot's end with another term contradicts a
    // committed entry.
    refused(
        &mut r,
        2,
        append(2, 2, (4, 1), vec![entry(5, 1), entry(6, 2)]),
        "overwrites_committed",
    );
}

#[test]
fn snapshot_chunks_are_checked_for_shape() {
    let mut r = node(1, 3, 2, &[]);
    let meta = meta_of(5, 2, "abc");
    refused(&mut r, 2, chunk(2, meta, 2, "cd"), "chunk_beyond_snapshot");
    refused(
        &mut r,
        2,
        chunk(2, meta_of(0, 0, "a"), 0, "a"),
        "empty_snapshot",
    );
    refused(&mut r, 2, chunk(1, meta, 0, "a"), "term_above_message");
    refused(
        &mut r,
        2,
        chunk(2, meta, u64::MAX, "a"),
        "chunk_beyond_snapshot",
    );
}

#[test]
fn compaction_keeps_the_log_after_the_snapshot_and_ignores_an_older_one() {
    let mut r = compacted_leader(&[1, 1, 1], 3, "a");
    assert_eq!((r.log().first_index(), r.log().last_index()), (4, 4));
    assert_eq!(r.compact(meta_of(2, 1, "older")), None);
    assert_eq!(r.snapshot().last_index, 3);
    // A restart from the snapshot and the tail.
    let tail = r.log().entries().to_vec();
    let again = Raft::restore(
        cfg(0, 3),
        r.hard_state(),
        (r.snapshot(), None),
        tail,
        Duration::ZERO,
    );
    assert_eq!((again.commit_index(), again.log().last_index()), (3, 4));
}

#[test]
fn compaction_keeps_trailing_entries_so_a_follower_a_little_behind_needs_no_snapshot() {
    let mut r = elected(&[1, 1, 1, 1, 1, 1], 1);
    r.cfg.trailing_entries = 3;
    let now = Duration::from_secs(1);
    let req = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &req, now);
    let _ = sync(&mut r);
    assert_eq!(r.commit_index(), 7);
    // Entries 5..=7 stay; the snapshot covers up to 7.
    assert_eq!(r.compact(meta_of(7, 2, "s")), Some(4));
    assert_eq!((r.log().first_index(), r.snapshot().last_index), (5, 7));
    // Peer 2, at 5, catches up from the log.
    let probe = r.poll_peer(2, now).unwrap();
    r.handle_reply(2, ae_reply(&probe, 2, false, 0, (None, 6)), now)
        .unwrap();
    match r.poll_peer(2, now) {
        Some(Request::AppendEntries(ae)) => assert_eq!(ae.prev_log_index, 5),
        other => panic!("expected entries from the log, got {other:?}"),
    }
    // A byte limit keeps fewer.
    let mut r = elected(&[1, 1, 1, 1, 1, 1], 1);
    r.cfg.trailing_entries = 3;
    r.cfg.trailing_bytes = 100; // each entry counts about 66
    let req = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &req, now);
    let _ = sync(&mut r);
    assert_eq!(r.compact(meta_of(7, 2, "s")), Some(6));
}

#[test]
fn a_newer_snapshot_does_not_restart_a_transfer_in_progress() {
    let mut r = compacted_leader(&[1, 1, 1], 4, "first snapshot");
    let first = r.snapshot();
    let now = Duration::from_secs(1);
    let Some(Request::InstallSnapshot(c)) = r.poll_peer(2, now) else {
        panic!("a chunk")
    };
    assert_eq!((c.snapshot, c.offset), (first, 0));
    let took = |next_offset, done| {
        Reply::InstallSnapshot(InstallSnapshotReply {
            term: 2,
            request_term: 2,
            last_index: 4,
            next_offset,
            done,
            checksum_failed: false,
        })
    };
    r.handle_reply(2, took(6, false), now).unwrap();
    // Two more entries commit and a newer snapshot covers them.
    r.propose(Json::string("x")).unwrap();
    let req = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &req, now);
    let _ = sync(&mut r);
    let _ = r.take_ready(); // hands out entry 5 as committed
    assert_eq!(r.commit_index(), 5);
    assert_eq!(r.compact(meta_of(5, 2, "second")), Some(5));
    // The transfer goes on with the first, from where it was.
    let Some(Request::InstallSnapshot(c)) = r.poll_peer(2, now) else {
        panic!("the next chunk")
    };
    assert_eq!((c.snapshot, c.offset), (first, 6));
    // Done: the follower is at 4, which is compacted now: the newer one.
    r.handle_reply(2, took(first.size, true), now).unwrap();
    let Some(Request::InstallSnapshot(c)) = r.poll_peer(2, now) else {
        panic!("the newer snapshot")
    };
    assert_eq!((c.snapshot.last_index, c.offset), (5, 0));
}

// ----- PreVote, CheckQuorum, the lease, leadership transfer -----

fn full_cfg(id: NodeId, n: u64) -> Config {
    Config::new(id, 0..n, id) // PreVote and CheckQuorum on
}

/// Node `id` of `n` in `term` with PreVote and CheckQuorum on, having
/// heard a heartbeat from leader `leader` at time `at`.
fn following(id: NodeId, n: u64, term: Term, leader: NodeId, at: Duration) -> Raft {
    let mut r = Raft::new(
        full_cfg(id, n),
        HardState {
            term,
            ..HardState::default()
        },
        vec![],
        Duration::ZERO,
    );
    let ae = append(term, leader, (0, 0), vec![]);
    r.handle_request(leader, ae, at).unwrap();
    let _ = r.take_ready();
    r
}

fn pre_vote_req(term: Term, candidate: NodeId, last: (Index, Term)) -> Request {
    Request::RequestVote(RequestVote {
        term,
        candidate_id: candidate,
        last_log_index: last.0,
        last_log_term: last.1,
        pre_vote: true,
        transfer: false,
    })
}

fn vote_reply(reply: Result<Reply, Rejection>) -> RequestVoteReply {
    match reply.expect("a valid request") {
        Reply::RequestVote(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn thesis_9_6_a_timed_out_follower_asks_a_pre_vote_without_raising_its_term() {
    let mut r = following(1, 3, 4, 2, Duration::ZERO);
    let deadline = r.tick_deadline().unwrap();
    r.tick(deadline);
    assert_eq!((r.role(), r.term()), (Role::PreCandidate, 4));
    let ready = r.take_ready();
    assert_eq!(ready.hard_state, None, "a pre-vote changes nothing durable");
    assert!(
        ready
            .events
            .iter()
            .any(|e| matches!(e, Event::PreVoteStarted { term: 5, .. }))
    );
    match r.poll_peer(0, deadline) {
        Some(Request::RequestVote(rv)) => {
            assert!(rv.pre_vote && !rv.transfer);
            assert_eq!(rv.term, 5, "asks about the term it would take");
        }
        other => panic!("{other:?}"),
    }
    // Refused by both peers, a majority.
    for peer in [0, 2] {
        let no = Reply::RequestVote(RequestVoteReply {
            term: 4,
            vote_granted: false,
            pre_vote: true,
        });
        r.handle_reply(peer, no, deadline).unwrap();
    }
    assert_eq!(
        (r.role(), r.term()),
        (Role::Follower, 4),
        "a pre-candidate that loses stays a follower in its term"
    );
    assert!(r.take_ready().events.iter().any(|e| matches!(
        e,
        Event::PreVoteLost {
            term: 5,
            refusals: 2,
            ..
        }
    )));
}

#[test]
fn thesis_9_6_a_pre_vote_won_by_a_majority_starts_the_real_election() {
    let mut r = following(1, 3, 4, 2, Duration::ZERO);
    let t = r.tick_deadline().unwrap();
    r.tick(t);
    let _ = r.poll_peer(0, t).unwrap();
    // A granted pre-vote names the asked term, 5: not adopted.
    let yes = Reply::RequestVote(RequestVoteReply {
        term: 5,
        vote_granted: true,
        pre_vote: true,
    });
    r.handle_reply(0, yes, t).unwrap();
    assert_eq!(
        (r.role(), r.term(), r.voted_for()),
        (Role::Candidate, 5, Some(1))
    );
    match r.poll_peer(0, t) {
        Some(Request::RequestVote(rv)) => assert!(!rv.pre_vote && rv.term == 5),
        other => panic!("{other:?}"),
    }
    // A late pre-vote grant is not a vote.
    let late = Reply::RequestVote(RequestVoteReply {
        term: 5,
        vote_granted: true,
        pre_vote: true,
    });
    r.handle_reply(2, late, t).unwrap();
    assert_eq!(r.role(), Role::Candidate);
}

#[test]
fn thesis_9_6_a_pre_vote_changes_nothing_at_the_voter() {
    // Node 0 last heard from leader 2 long ago: it would vote.
    let mut r = following(0, 3, 4, 2, Duration::ZERO);
    let later = Duration::from_secs(5);
    let before = (r.hard_state(), r.role(), r.tick_deadline());
    let reply = vote_reply(r.handle_request(1, pre_vote_req(5, 1, (0, 0)), later));
    assert!(reply.vote_granted && reply.pre_vote);
    assert_eq!(reply.term, 5);
    assert_eq!(
        (r.hard_state(), r.role(), r.tick_deadline()),
        before,
        "no term, vote or timer change"
    );
    assert_eq!(r.take_ready().hard_state, None);
    // Its log must still be up to date: a pre-vote is refused as a vote is.
    let mut r = Raft::new(
        full_cfg(0, 3),
        HardState::default(),
        entries(&[1, 1]),
        later,
    );
    let reply = vote_reply(r.handle_request(1, pre_vote_req(2, 1, (1, 1)), later));
    assert!(!reply.vote_granted);
    assert_eq!(reply.term, 0, "a refusal names the voter's own term");
}

#[test]
fn thesis_9_6_a_server_that_heard_from_its_leader_refuses_votes_and_keeps_its_term() {
    let heard = Duration::from_secs(1);
    let mut r = following(0, 3, 4, 2, heard);
    let soon = heard + 100 * MS; // within the 300 ms minimum timeout
    // Pre-vote: refused.
    let reply = vote_reply(r.handle_request(1, pre_vote_req(5, 1, (0, 0)), soon));
    assert!(!reply.vote_granted);
    // A real vote of a higher term: refused, and the term not adopted
    // (CheckQuorum's lease).
    let reply = vote_reply(r.handle_request(1, vote_req(9, 1, 0, 0), soon));
    assert!(!reply.vote_granted);
    assert_eq!((r.term(), r.leader_id()), (4, Some(2)));
    let events = r.take_ready().events;
    assert!(events.iter().any(|e| matches!(
        e,
        Event::VoteRefused {
            reason: VoteRefusal::LeaderLease { leader: 2, .. },
            ..
        }
    )));
    // A transfer's election is answered despite the lease.
    let transfer = Request::RequestVote(RequestVote {
        term: 5,
        candidate_id: 1,
        last_log_index: 0,
        last_log_term: 0,
        pre_vote: false,
        transfer: true,
    });
    assert!(granted(r.handle_request(1, transfer, soon)));
    assert_eq!(r.term(), 5);
    // Once the lease has run out, votes are answered as usual.
    let mut r = following(0, 3, 4, 2, heard);
    assert!(granted(r.handle_request(
        1,
        vote_req(5, 1, 0, 0),
        heard + 300 * MS
    )));
}

/// Node 0 of `n`, elected leader of term 1 with PreVote and CheckQuorum
/// on, at time `at`.
fn full_leader(n: u64, at: Duration) -> Raft {
    let mut r = Raft::new(full_cfg(0, n), HardState::default(), vec![], Duration::ZERO);
    r.campaign(at);
    for p in 1..n / 2 + 1 {
        let _ = r.poll_peer(p, at).unwrap();
        let yes = Reply::RequestVote(RequestVoteReply {
            term: 1,
            vote_granted: true,
            pre_vote: false,
        });
        r.handle_reply(p, yes, at).unwrap();
    }
    assert_eq!(r.role(), Role::Leader);
    sync(&mut r);
    r
}

#[test]
fn thesis_6_2_check_quorum_a_leader_without_a_majority_steps_down_in_its_term() {
    let start = Duration::from_secs(1);
    let mut r = full_leader(5, start);
    assert_eq!(r.tick_deadline(), Some(start + 300 * MS));
    // Peers 1 and 2 answer every 100 ms: with us, a majority. 3 and 4 never.
    let mut now = start;
    for _ in 0..10 {
        now += 100 * MS;
        for p in [1, 2] {
            if let Some(req) = r.poll_peer(p, now) {
                ack(&mut r, p, &req, now);
            }
        }
        r.tick(now);
        assert_eq!(r.role(), Role::Leader, "a majority answers");
    }
    // Then only peer 1 does: one minimum election timeout after peer 2's
    // last answer, the leader steps down, keeping its term.
    let quiet_from = now;
    while r.role() == Role::Leader {
        now += 10 * MS;
        if let Some(req) = r.poll_peer(1, now) {
            ack(&mut r, 1, &req, now);
        }
        r.tick(now);
        assert!(now <= quiet_from + 310 * MS, "did not step down");
    }
    assert!(now >= quiet_from + 300 * MS);
    assert_eq!(
        (r.role(), r.term(), r.leader_id()),
        (Role::Follower, 1, None)
    );
    assert!(r.take_ready().events.iter().any(|e| matches!(
        e,
        Event::QuorumLost {
            heard: 2,
            cluster_size: 5,
            ..
        }
    )));
    assert!(r.propose(Json::string("x")).is_err(), "not_leader at once");
}

#[test]
fn thesis_3_10_a_transfer_catches_the_target_up_then_sends_timeout_now() {
    let t = Duration::from_secs(1);
    let mut r = full_leader(3, t);
    // Peer 1 is caught up; peer 2 has nothing.
    let req = r.poll_peer(1, t).unwrap();
    ack(&mut r, 1, &req, t);
    r.propose(Json::string("x")).unwrap();
    sync(&mut r);
    let req = r.poll_peer(1, t).unwrap();
    ack(&mut r, 1, &req, t);
    assert_eq!(r.transfer_leadership(None, t), Ok(1), "the most up to date");
    assert_eq!(r.transfer_leadership(Some(1), t), Ok(1), "asked twice");
    assert_eq!(
        r.transfer_leadership(Some(2), t),
        Err(TransferError::InProgress { target: 1 })
    );
    let r2 = r.propose(Json::string("y"));
    assert_eq!(
        r2,
        Err(NotLeader {
            leader_hint: Some(1),
            transferring_to: Some(1)
        }),
        "no new writes during a transfer"
    );
    assert!(matches!(r.poll_peer(1, t), Some(Request::TimeoutNow(_))));
    while let Some(req) = r.poll_peer(1, t) {
        assert!(!matches!(req, Request::TimeoutNow(_)), "sent once");
    }

    // A transfer to the lagging peer 2: entries first, TimeoutNow once
    // it holds the whole log.
    let mut r = full_leader(3, t);
    let (last, _) = r.propose(Json::string("x")).unwrap();
    sync(&mut r);
    assert_eq!(r.transfer_leadership(Some(2), t), Ok(2));
    let mut sent_timeout_now = false;
    for _ in 0..10 {
        match r.poll_peer(2, t) {
            Some(Request::TimeoutNow(tn)) => {
                assert_eq!(r.match_index(2), Some(last));
                assert_eq!(tn.term, 1);
                sent_timeout_now = true;
                break;
            }
            Some(req @ Request::AppendEntries(_)) => {
                assert!(r.match_index(2) < Some(last));
                let Request::AppendEntries(ae) = &req else {
                    unreachable!()
                };
                if ae.prev_log_index > 0 {
                    ack(&mut r, 2, &req, t);
                } else {
                    let m = ae.entries.len() as Index;
                    r.handle_reply(2, ae_reply(&req, 1, true, m, (None, 0)), t)
                        .unwrap();
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(sent_timeout_now);
}

#[test]
fn thesis_3_10_timeout_now_starts_an_election_that_ignores_the_lease() {
    let t = Duration::from_secs(1);
    let mut r = following(1, 3, 4, 2, t);
    let tn = Request::TimeoutNow(TimeoutNow {
        term: 4,
        leader_id: 2,
    });
    match r.handle_request(2, tn, t).unwrap() {
        Reply::TimeoutNow(reply) => assert!(reply.started && reply.term == 5),
        other => panic!("{other:?}"),
    }
    assert_eq!((r.role(), r.term()), (Role::Candidate, 5));
    match r.poll_peer(0, t) {
        Some(Request::RequestVote(rv)) => assert!(rv.transfer && !rv.pre_vote),
        other => panic!("{other:?}"),
    }
    // One from an older term starts nothing.
    let mut r = following(1, 3, 4, 2, t);
    let old = Request::TimeoutNow(TimeoutNow {
        term: 3,
        leader_id: 2,
    });
    assert!(matches!(
        r.handle_request(2, old, t),
        Ok(Reply::TimeoutNow(TimeoutNowReply { started: false, .. }))
    ));
    assert_eq!((r.role(), r.term()), (Role::Follower, 4));
    // One from a second leader of our term is refused.
    let second = Request::TimeoutNow(TimeoutNow {
        term: 4,
        leader_id: 0,
    });
    assert!(r.handle_request(0, second, t).is_err());
    assert_eq!(r.role(), Role::Follower);
}

#[test]
fn thesis_3_10_a_transfer_that_gets_no_new_term_is_abandoned_and_writes_resume() {
    let t = Duration::from_secs(1);
    let mut r = full_leader(3, t);
    let req = r.poll_peer(1, t).unwrap();
    ack(&mut r, 1, &req, t);
    r.transfer_leadership(Some(1), t).unwrap();
    assert!(matches!(r.poll_peer(1, t), Some(Request::TimeoutNow(_))));
    let deadline = t + 600 * MS;
    assert!(r.tick_deadline().is_some_and(|d| d <= deadline));
    // Keep a majority answering so CheckQuorum does not end it instead.
    let mut now = t;
    while now < deadline {
        now += 100 * MS;
        if let Some(req) = r.poll_peer(2, now) {
            ack(&mut r, 2, &req, now);
        }
        r.tick(now);
    }
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(r.transfer(), None);
    assert!(
        r.take_ready()
            .events
            .iter()
            .any(|e| matches!(e, Event::TransferAbandoned { target: 1, .. }))
    );
    assert!(r.propose(Json::string("x")).is_ok(), "writes resume");
}

#[test]
fn thesis_3_10_the_target_starting_a_term_ends_the_transfer() {
    let t = Duration::from_secs(1);
    let mut r = full_leader(3, t);
    let req = r.poll_peer(1, t).unwrap();
    ack(&mut r, 1, &req, t);
    r.transfer_leadership(Some(1), t).unwrap();
    let _ = r.poll_peer(1, t);
    let vote = Request::RequestVote(RequestVote {
        term: 2,
        candidate_id: 1,
        last_log_index: r.log().last_index(),
        last_log_term: 1,
        pre_vote: false,
        transfer: true,
    });
    assert!(
        granted(r.handle_request(1, vote, t)),
        "the old leader votes too"
    );
    assert_eq!(
        (r.role(), r.term(), r.transfer()),
        (Role::Follower, 2, None)
    );
    assert!(r.take_ready().events.iter().any(|e| matches!(
        e,
        Event::TransferHandedOff {
            target: 1,
            term: 2,
            ..
        }
    )));
    assert_eq!(
        r.transfer_leadership(None, t),
        Err(TransferError::NotLeader { leader_hint: None })
    );
}

fn lease_cfg(id: NodeId, n: u64) -> Config {
    Config {
        lease_reads: true,
        ..Config::new(id, 0..n, id)
    }
}

#[test]
fn thesis_6_4_1_a_lease_runs_from_the_start_of_a_read_round_a_majority_answered() {
    let start = Duration::from_secs(1);
    let mut r = Raft::new(
        lease_cfg(0, 3),
        HardState::default(),
        vec![],
        Duration::ZERO,
    );
    r.campaign(start);
    let _ = r.poll_peer(1, start).unwrap();
    let yes = Reply::RequestVote(RequestVoteReply {
        term: 1,
        vote_granted: true,
        pre_vote: false,
    });
    r.handle_reply(1, yes, start).unwrap();
    sync(&mut r);
    let req = r.poll_peer(1, start).unwrap();
    ack(&mut r, 1, &req, start + 5 * MS);
    assert_eq!(
        r.lease_read(start + 5 * MS),
        None,
        "committed in our term, but no read round answered yet"
    );
    // A ReadIndex read starts round 1; its first request goes out at
    // 1.010 s, and peer 1 answers it at 1.060 s.
    r.read_index(7).unwrap();
    let sent = start + 10 * MS;
    let req = r.poll_peer(1, sent).unwrap();
    assert!(matches!(&req, Request::AppendEntries(ae) if ae.read_round == 1));
    ack(&mut r, 1, &req, start + 60 * MS);
    assert_eq!(r.take_ready().reads.len(), 1);
    // The lease runs from the round's first send, for 300 ms × 0.9 / 1.1.
    let lease = r.lease_read(start + 60 * MS).expect("a lease");
    assert_eq!(lease.index, r.commit_index());
    let length = (300 * MS).mul_f64(0.9 / 1.1);
    assert_eq!(lease.expires, sent + length);
    assert_eq!(r.lease_read(sent + length), None, "expired");
    // Without lease reads, never.
    let mut plain = full_leader(3, start);
    plain.read_index(1).unwrap();
    let req = plain.poll_peer(1, start).unwrap();
    ack(&mut plain, 1, &req, start);
    assert_eq!(plain.lease_read(start), None);
    // Not while handing over: the target's election ignores leases.
    r.transfer_leadership(Some(1), start + 60 * MS).unwrap();
    assert_eq!(r.lease_read(start + 60 * MS), None);
}

#[test]
fn thesis_6_4_1_with_lease_reads_a_server_refuses_votes_right_after_it_starts() {
    let start = Duration::from_secs(10);
    let mut r = Raft::new(lease_cfg(0, 3), HardState::default(), vec![], start);
    let reply = vote_reply(r.handle_request(1, vote_req(1, 1, 0, 0), start + 100 * MS));
    assert!(
        !reply.vote_granted,
        "a leader may count on its lease from before"
    );
    assert_eq!(r.term(), 0, "and the term is not adopted");
    assert!(granted(r.handle_request(
        1,
        vote_req(1, 1, 0, 0),
        start + 300 * MS
    )));
    // Without lease reads, votes are answered at once.
    let mut r = Raft::new(full_cfg(0, 3), HardState::default(), vec![], start);
    assert!(granted(r.handle_request(1, vote_req(1, 1, 0, 0), start)));
}

// ----- Storage faults: a follower that lost what it acknowledged -----

/// The first AppendEntries `r` sends to `peer` at `now`.
fn append_to(r: &mut Raft, peer: NodeId, now: Duration) -> Request {
    let req = r.poll_peer(peer, now).expect("a request is due");
    assert!(matches!(req, Request::AppendEntries(_)), "{req:?}");
    req
}

#[test]
fn a_leader_believes_a_follower_that_shows_it_lost_acknowledged_entries() {
    // Leader of term 2 with log 1 1 1 2 (its no-op at 4).
    let mut r = elected(&[1, 1, 1], 1);
    let now = Duration::from_secs(1);
    let req = append_to(&mut r, 1, now);
    r.handle_reply(1, ae_reply(&req, 2, true, 4, (None, 0)), now)
        .unwrap();
    assert_eq!(r.match_index(1), Some(4));
    assert_eq!(r.commit_index(), 4);
    // Peer 1 restarts with its log cut back to 2 by a damaged tail; the
    // connection broke meanwhile, and the next probe is refused at 4.
    r.handle_failure(1, now);
    let later = now + Duration::from_secs(1);
    let req = append_to(&mut r, 1, later);
    let Request::AppendEntries(ae) = &req else {
        unreachable!()
    };
    assert_eq!(ae.prev_log_index, 4);
    r.handle_reply(1, ae_reply(&req, 2, false, 0, (None, 3)), later)
        .unwrap();
    assert_eq!(
        r.match_index(1),
        Some(2),
        "entries 3 and 4 no longer count for peer 1"
    );
    assert!(r.take_ready().events.contains(&Event::FollowerLostEntries {
        peer: 1,
        from: 3,
        to: 4
    }));
    // Replication resumes from what the follower holds.
    let req = append_to(&mut r, 1, later);
    let Request::AppendEntries(ae) = &req else {
        unreachable!()
    };
    assert_eq!((ae.prev_log_index, ae.entries.len()), (2, 2));
    r.handle_reply(1, ae_reply(&req, 2, true, 4, (None, 0)), later)
        .unwrap();
    assert_eq!(r.match_index(1), Some(4));
}

#[test]
fn a_follower_s_lost_acknowledgement_no_longer_counts_toward_a_commit() {
    // 5 servers: leader 0 and follower 1 hold entry 2 (of term 2); 1 then
    // loses it. An entry must not be committed on the strength of 1's
    // old acknowledgement once 1 has said it lacks it.
    let mut r = Raft::new(
        cfg(0, 5),
        HardState {
            term: 1,
            ..HardState::default()
        },
        entries(&[1]),
        Duration::ZERO,
    );
    let now = Duration::from_secs(1);
    r.tick(now);
    granted_by(&mut r, &[1, 2], now);
    assert_eq!(r.role(), Role::Leader);
    let _ = sync(&mut r); // the leader's own no-op (index 2) is durable
    let req = append_to(&mut r, 1, now);
    r.handle_reply(1, ae_reply(&req, 2, true, 2, (None, 0)), now)
        .unwrap();
    assert_eq!(r.commit_index(), 0, "two of five hold index 2");
    r.handle_failure(1, now);
    let later = now + Duration::from_secs(1);
    let req = append_to(&mut r, 1, later);
    r.handle_reply(1, ae_reply(&req, 2, false, 0, (None, 2)), later)
        .unwrap();
    // Server 2 acknowledges index 2: with 1's lost copy still counted,
    // that would be three of five.
    let req = append_to(&mut r, 2, later);
    r.handle_reply(2, ae_reply(&req, 2, true, 2, (None, 0)), later)
        .unwrap();
    assert_eq!(
        r.commit_index(),
        0,
        "only leader and server 2 hold index 2: not a majority of five"
    );
}

fn repairing_node(lost_through: Index) -> Raft {
    Raft::new(
        full_cfg(1, 3),
        HardState {
            term: 3,
            voted_for: None,
            lost_through,
            lost_term: 3,
        },
        entries(&[1, 2, 3]),
        Duration::ZERO,
    )
}

#[test]
fn a_server_that_lost_acknowledged_entries_neither_votes_nor_stands_until_repaired() {
    let mut r = repairing_node(5);
    assert!(matches!(
        r.take_ready().events.as_slice(),
        [Event::Repairing {
            last_index: 3,
            lost_through: 5
        }]
    ));
    // Its election timer fires, again and again: it does not stand.
    let mut now = Duration::ZERO;
    for _ in 0..5 {
        now = r.tick_deadline().unwrap();
        r.tick(now);
        assert_eq!(r.role(), Role::Follower);
    }
    assert_eq!(r.term(), 3);
    // A candidate whose log is as long as what is left is refused, in a
    // pre-vote and a real vote: entries 4 and 5 (of term 3 at most) may be
    // committed, and it may lack them.
    for pre_vote in [true, false] {
        let req = Request::RequestVote(RequestVote {
            term: 4,
            candidate_id: 2,
            last_log_index: 3,
            last_log_term: 3,
            pre_vote,
            transfer: false,
        });
        assert!(
            !granted(r.handle_request(2, req, now)),
            "pre_vote {pre_vote}"
        );
    }
    assert!(r.take_ready().events.iter().any(|e| matches!(
        e,
        Event::VoteRefused {
            reason: VoteRefusal::Repairing {
                last_index: 3,
                lost_through: 5,
                lost_term: 3,
            },
            pre_vote: false,
            ..
        }
    )));
    // A leader of term 4 sends 4 and 5 again; once they are durable the
    // server is whole, and says so in its next hard state.
    let reply = append_reply(r.handle_request(
        0,
        append(4, 0, (3, 3), vec![entry(4, 4), entry(5, 4)]),
        now,
    ));
    assert!(reply.success);
    assert!(r.repairing().is_none(), "the log reaches 5 again");
    let ready = r.take_ready();
    assert_eq!(ready.appended.len(), 2);
    assert_ne!(
        ready.hard_state.map(|h| h.lost_through),
        Some(0),
        "not cleared before the entries are durable"
    );
    r.persisted(5, 4);
    let ready = r.take_ready();
    assert_eq!(ready.hard_state.map(|h| h.lost_through), Some(0));
    assert!(ready.events.contains(&Event::Repaired { lost_through: 5 }));
}

#[test]
fn a_repairing_server_ignores_a_leadership_transfer_to_it() {
    let mut r = repairing_node(9);
    let now = MS;
    let reply = r
        .handle_request(
            0,
            Request::TimeoutNow(TimeoutNow {
                term: 3,
                leader_id: 0,
            }),
            now,
        )
        .unwrap();
    match reply {
        Reply::TimeoutNow(t) => assert!(!t.started),
        other => panic!("{other:?}"),
    }
    assert_eq!((r.role(), r.term()), (Role::Follower, 3));
}

#[test]
fn a_repairing_server_votes_for_a_log_at_least_as_up_to_date_as_the_one_it_lost() {
    // It had entries up to 5, of terms up to 3 (its term when the loss
    // was found); a log ending at (3, 5) or later holds whatever of them
    // was committed (§5.4.1 against the lost log).
    let cases = [
        ((3, 4), false),
        ((2, 9), false),
        ((3, 5), true),
        ((4, 1), true),
    ];
    for ((last_term, last_index), grant) in cases {
        for pre_vote in [true, false] {
            let mut r = repairing_node(5);
            let req = Request::RequestVote(RequestVote {
                term: 4,
                candidate_id: 2,
                last_log_index: last_index,
                last_log_term: last_term,
                pre_vote,
                transfer: false,
            });
            assert_eq!(
                granted(r.handle_request(2, req, MS)),
                grant,
                "candidate log ({last_term}, {last_index}), pre_vote {pre_vote}"
            );
        }
    }
}

#[test]
fn a_caller_whose_snapshot_file_is_damaged_restarts_every_transfer() {
    let mut r = compacted_leader(&[1, 1, 1], 4, "abcdef");
    let now = Duration::from_secs(1);
    // Entry 3 is compacted: a transfer to peer 2 starts at once.
    let Some(Request::InstallSnapshot(first)) = r.poll_peer(2, now) else {
        panic!("the snapshot")
    };
    assert_eq!(first.offset, 0);
    r.handle_failure(2, now);
    // The caller found the file damaged and made a sound one current.
    r.restart_snapshot_transfers();
    let p = r.progress(2).unwrap();
    assert_eq!((p.state, p.snapshot), (ProgressState::Probe, None));
    // The next request it needs starts the transfer over.
    let later = now + Duration::from_secs(1);
    assert!(matches!(
        r.poll_peer(2, later),
        Some(Request::InstallSnapshot(InstallSnapshot { offset: 0, .. }))
    ));
}

#[test]
fn config_validate_names_the_setting_that_cannot_run_a_server() {
    let ok = Config::new(1, 0..3, 1);
    assert_eq!(ok.validate(), Ok(()));
    let cases: [(Config, &str); 6] = [
        (
            Config {
                election_timeout_min: 600 * MS,
                election_timeout_max: 300 * MS,
                ..ok.clone()
            },
            "election timeout",
        ),
        (
            Config {
                heartbeat_interval: 300 * MS,
                ..ok.clone()
            },
            "heartbeat interval",
        ),
        (
            Config {
                max_inflight_appends: 0,
                ..ok.clone()
            },
            "append limits",
        ),
        (
            Config {
                max_clock_drift: 0.5,
                ..ok.clone()
            },
            "clock drift",
        ),
        (
            Config {
                lease_reads: true,
                check_quorum: false,
                ..ok.clone()
            },
            "lease reads",
        ),
        (
            Config {
                // Two servers at one address.
                bootstrap: super::membership::Membership::bootstrap([
                    (0, "h:1".to_string()),
                    (1, "h:1".to_string()),
                ]),
                ..ok.clone()
            },
            "peers",
        ),
    ];
    for (cfg, setting) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.starts_with(setting), "{err}");
    }
}

#[test]
fn a_membership_is_in_force_once_appended_and_rolled_back_by_truncation() {
    use super::membership::Change;
    // Server 1 of {0, 1, 2} follows leader 0, which adds server 3 as a
    // learner at index 2, uncommitted.
    let mut r = node(1, 3, 0, &[]);
    let with_3 = r
        .membership()
        .apply(&Change::AddLearner {
            id: 3,
            address: "node3".into(),
        })
        .unwrap();
    let entries = noop_then_membership(&with_3);
    r.handle_request(0, append(1, 0, (0, 0), entries), MS)
        .unwrap();
    // In force at once, committed or not (thesis §4.1).
    assert_eq!(r.membership(), &with_3);
    assert_eq!(r.peers().collect::<Vec<_>>(), vec![0, 2, 3]);
    assert!(r.take_ready().events.contains(&Event::MembershipInForce {
        index: 2,
        membership: with_3.clone(),
    }));
    // A new leader (2, term 2) never had it: its entry 2 replaces ours,
    // and the membership before it is in force again.
    r.handle_request(2, append(2, 2, (1, 1), vec![entry(2, 2)]), 2 * MS)
        .unwrap();
    assert!(!r.membership().contains(3));
    assert_eq!(r.peers().collect::<Vec<_>>(), vec![0, 2]);
    let events = r.take_ready().events;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::MembershipInForce { index: 0, .. }))
    );
    assert!(events.contains(&Event::MembershipAbandoned {
        index: 2,
        membership: with_3,
    }));
}

/// When the membership tests change the membership: their leader has just
/// heard from its followers.
const SECOND: Duration = Duration::from_secs(1);

/// Node 0, leader of a 3-node cluster in term 1 whose no-op (index 1) is
/// committed: the state in which it may change the membership.
fn leader_with_noop_committed() -> Raft {
    let mut r = elected(&[], 0);
    let now = Duration::from_secs(1);
    let req = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &req, now);
    let _ = sync(&mut r);
    assert_eq!(r.commit_index(), 1);
    r
}

/// A leader's first two entries: one of term 1, then membership `m`.
fn noop_then_membership(m: &super::membership::Membership) -> Vec<Entry> {
    let membership = Entry {
        index: 2,
        term: 1,
        payload: Payload::Membership(m.clone()),
    };
    vec![entry(1, 1), membership]
}

fn add_learner(id: NodeId) -> super::membership::Change {
    super::membership::Change::AddLearner {
        id,
        address: format!("node{id}"),
    }
}

#[test]
fn a_new_leader_changes_no_membership_before_committing_an_entry_of_its_term() {
    // Scenario 6 (the single-server bug of 2015): until its no-op commits,
    // a change from this leader could commit beside an uncommitted one of
    // an earlier leader under a majority that does not overlap.
    let mut r = elected(&[], 0);
    assert_eq!(
        r.propose_change(&add_learner(3), SECOND),
        Err(super::ChangeRefused::NotYetCommitted)
    );
    assert!(!r.membership().contains(3));
    let mut r = leader_with_noop_committed();
    let (index, m) = r.propose_change(&add_learner(3), SECOND).unwrap();
    assert_eq!(index, 2);
    assert!(m.contains(3) && r.membership().contains(3));
    assert_eq!(r.peers().collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn a_second_change_waits_until_the_first_commits() {
    // Scenario 5: refused with the change in progress named, not dropped.
    let mut r = leader_with_noop_committed();
    let now = Duration::from_secs(1);
    r.propose_change(&add_learner(3), SECOND).unwrap();
    let refused = r.propose_change(&add_learner(4), SECOND).unwrap_err();
    assert!(
        matches!(refused, super::ChangeRefused::InProgress { index: 2, .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("learners 3"), "{refused}");
    // Once a majority of the voters (not the learner) holds it, it is
    // committed, and the next change is taken.
    let _ = sync(&mut r);
    let req = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &req, now);
    assert_eq!(r.commit_index(), 2);
    assert!(r.propose_change(&add_learner(4), SECOND).is_ok());
}

#[test]
fn a_learner_never_counts_toward_a_commit_and_never_stands() {
    // Scenario 7.
    let mut r = leader_with_noop_committed();
    let now = Duration::from_secs(1);
    // Learners 3 and 4, each change committed by voter 1.
    for id in [3, 4] {
        r.propose_change(&add_learner(id), SECOND).unwrap();
        let _ = sync(&mut r);
        while let Some(req) = r.poll_peer(1, now) {
            ack(&mut r, 1, &req, now);
        }
    }
    let committed = r.commit_index();
    let with_3 = r.membership_at(2).clone();
    // A write held by the leader and both learners, three of five
    // servers, but only one of the three voters: not committed.
    r.propose(Json::string("w")).unwrap();
    let _ = sync(&mut r);
    for learner in [3, 4] {
        while let Some(req) = r.poll_peer(learner, now) {
            ack(&mut r, learner, &req, now);
        }
    }
    assert_eq!(r.commit_index(), committed, "learners' copies counted");
    // A learner's election timer changes nothing.
    let learner_cfg = Config::new(3, 0..3, 3);
    let mut learner = Raft::new(learner_cfg, HardState::default(), vec![], Duration::ZERO);
    let entries = noop_then_membership(&with_3);
    learner
        .handle_request(0, append(1, 0, (0, 0), entries), now)
        .unwrap_or_else(|e| panic!("{e}"));
    learner.tick(now + Duration::from_secs(5));
    assert_eq!(learner.role(), Role::Follower);
    assert_eq!(learner.term(), 1);
    learner.campaign(now + Duration::from_secs(6));
    assert_eq!(learner.role(), Role::Follower);
}

#[test]
fn a_joint_membership_commits_under_both_majorities_and_the_leader_then_leaves_it() {
    // Scenario 17: replace 1 and 2 by 3 and 4 in {0, 1, 2}.
    use super::membership::Change;
    let mut r = leader_with_noop_committed();
    let now = Duration::from_secs(1);
    let commit_all = |r: &mut Raft, peers: &[NodeId]| {
        let _ = sync(r);
        for &p in peers {
            while let Some(req) = r.poll_peer(p, now) {
                ack(r, p, &req, now);
            }
        }
        let _ = sync(r);
    };
    for id in [3, 4] {
        r.propose_change(&add_learner(id), SECOND).unwrap();
        commit_all(&mut r, &[1]);
    }
    // Scenario 12: while the learners have not answered, the new voters
    // would have no live majority: refused, naming them.
    let refused = r
        .propose_change(&Change::SetVoters([0, 3, 4].into()), SECOND)
        .unwrap_err();
    assert_eq!(
        refused,
        super::ChangeRefused::WouldLoseQuorum {
            unheard: vec![3, 4]
        }
    );
    assert!(refused.to_string().contains("node3, node4 not heard from"));
    commit_all(&mut r, &[3, 4]);
    let (index, joint) = r
        .propose_change(&Change::SetVoters([0, 3, 4].into()), SECOND)
        .unwrap();
    assert!(joint.is_joint());
    // Scenario 18: no leadership to a voter on its way out.
    assert_eq!(
        r.transfer_leadership(Some(1), now),
        Err(TransferError::NotAVoter(1))
    );
    // The new majority alone (0, 3, 4) does not commit it.
    commit_all(&mut r, &[3, 4]);
    assert!(r.commit_index() < index);
    // With the old majority too (0, 1) it commits, and the leader appends
    // the membership that leaves the joint one.
    commit_all(&mut r, &[1]);
    assert!(r.commit_index() >= index);
    assert!(!r.membership().is_joint());
    assert_eq!(r.membership().voters(), [0, 3, 4].into());
    assert_eq!(r.membership().removed, [1, 2].into());
    commit_all(&mut r, &[3, 4]);
    assert_eq!(r.commit_index(), r.log().last_index());
    assert_eq!(r.peers().collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn a_removed_leader_hands_over_to_a_voter_once_its_removal_commits() {
    // Scenario 4.
    use super::membership::Change;
    let mut r = leader_with_noop_committed();
    let now = Duration::from_secs(1);
    let (index, _) = r.propose_change(&Change::Remove(0), SECOND).unwrap();
    let _ = sync(&mut r);
    assert!(!r.must_leave(), "not before the removal commits");
    // Committed by the new voters alone (1 and 2): the leader no longer
    // counts itself.
    let req = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &req, now);
    assert!(r.commit_index() < index, "the leader counted itself");
    let req = r.poll_peer(2, now).unwrap();
    ack(&mut r, 2, &req, now);
    assert_eq!(r.commit_index(), index);
    assert_eq!(r.tick_deadline(), Some(Duration::ZERO), "leaving is due");
    r.tick(now);
    assert!(r.transfer().is_some_and(|t| t.target == 1 || t.target == 2));
    // A transfer to a server that does not vote is refused (scenario 18).
    let mut r = leader_with_noop_committed();
    r.propose_change(&add_learner(3), SECOND).unwrap();
    assert_eq!(
        r.transfer_leadership(Some(3), now),
        Err(TransferError::NotAVoter(3))
    );
}

#[test]
fn a_learner_is_promoted_only_once_it_holds_nearly_all_of_the_log() {
    // Scenario 8: refused while the learner lags by more than
    // PROMOTION_LAG entries, naming the lag; taken once it has caught up.
    use super::membership::Change;
    let mut r = leader_with_noop_committed();
    let now = Duration::from_secs(1);
    r.propose_change(&add_learner(3), SECOND).unwrap();
    let _ = sync(&mut r);
    while let Some(req) = r.poll_peer(1, now) {
        ack(&mut r, 1, &req, now);
    }
    for i in 0..=super::PROMOTION_LAG {
        r.propose(Json::string(&format!("w{i}"))).unwrap();
    }
    let _ = sync(&mut r);
    let refused = r.propose_change(&Change::Promote(3), SECOND).unwrap_err();
    assert!(
        matches!(
            refused,
            super::ChangeRefused::Behind {
                id: 3,
                match_index: 0,
                ..
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("entries behind"), "{refused}");
    assert!(r.membership().learners().contains(&3));
    // The same through `members set`, which would make it a voter too.
    assert!(matches!(
        r.propose_change(&Change::SetVoters([0, 1, 2, 3].into()), SECOND),
        Err(super::ChangeRefused::Behind { id: 3, .. })
    ));
    while let Some(req) = r.poll_peer(3, now) {
        ack(&mut r, 3, &req, now);
    }
    let (_, m) = r.propose_change(&Change::Promote(3), SECOND).unwrap();
    assert!(m.is_voter(3));
}

#[test]
fn a_joining_server_knows_no_membership_until_the_log_brings_one() {
    // A server started with `raftnode --join`: an empty bootstrap
    // membership. It never stands, and no input makes it decide anything;
    // the leader's membership entry makes it a learner of the cluster.
    let cfg = Config {
        bootstrap: super::membership::Membership::bootstrap([]),
        ..Config::new(3, [], 3)
    };
    cfg.validate().unwrap();
    let mut r = Raft::new(cfg, HardState::default(), vec![], Duration::ZERO);
    let later = Duration::from_secs(10);
    r.tick(later);
    r.campaign(later);
    assert_eq!((r.role(), r.term()), (Role::Follower, 0));
    let with_3 = leader_with_noop_committed()
        .membership()
        .apply(&add_learner(3))
        .unwrap();
    let entries = noop_then_membership(&with_3);
    r.handle_request(0, append(1, 0, (0, 0), entries), later)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.membership(), &with_3);
    r.tick(later * 2);
    assert_eq!(r.role(), Role::Follower, "a learner never stands");
}

#[test]
fn a_removed_voter_is_retired_once_its_removal_commits_and_a_learner_is_not() {
    // Scenarios 20 and 10: a voter's id is never used again once a
    // committed membership removes it; a learner removed (an add given
    // up) leaves the membership as it was.
    use super::membership::{Change, ChangeError};
    let mut r = leader_with_noop_committed();
    let now = Duration::from_secs(1);
    let commit = |r: &mut Raft| {
        let _ = sync(r);
        while let Some(req) = r.poll_peer(1, now) {
            ack(r, 1, &req, now);
        }
    };
    let before = r.membership().clone();
    r.propose_change(&add_learner(3), SECOND).unwrap();
    commit(&mut r);
    r.propose_change(&Change::Remove(3), SECOND).unwrap();
    commit(&mut r);
    assert_eq!(r.membership(), &before, "the add undone");
    assert_eq!(r.removed_at(3), None);
    let (index, _) = r.propose_change(&Change::Remove(2), SECOND).unwrap();
    assert_eq!(r.removed_at(2), None, "not before it commits");
    commit(&mut r);
    assert_eq!(r.removed_at(2), Some(index));
    assert_eq!(
        r.propose_change(
            &Change::AddLearner {
                id: 2,
                address: "elsewhere:1".into()
            },
            SECOND
        ),
        Err(super::ChangeRefused::Invalid(ChangeError::Retired(2)))
    );
}

#[test]
fn a_pending_entry_commits_when_removing_an_unreachable_voter_shrinks_the_quorum() {
    // Scenario 3 (etcd's TestCommitAfterRemoveNode): with node 2 gone, a
    // write held by 0 and 1 commits; removing 1 instead would not help.
    use super::membership::Change;
    let mut r = leader_with_noop_committed();
    let now = SECOND;
    // Of {0, 1, 2} only 0 holds the write; 1 and 2 stop answering.
    let (index, _) = r.propose(Json::string("w")).unwrap();
    let _ = sync(&mut r);
    assert!(r.commit_index() < index);
    // {0, 1}: 1 answered at the no-op, within an election timeout, so
    // the removal of 2 is taken; the quorum of {0, 1} is both, and 1 does
    // not hold the write yet.
    let (removal, _) = r.propose_change(&Change::Remove(2), now).unwrap();
    let _ = sync(&mut r);
    assert!(r.commit_index() < index);
    while let Some(req) = r.poll_peer(1, now) {
        ack(&mut r, 1, &req, now);
    }
    assert_eq!(
        r.commit_index(),
        removal,
        "the write and the removal commit"
    );
}

#[test]
fn a_learner_that_does_not_know_it_was_promoted_still_votes() {
    // Scenario 9 (etcd's campaign_learner_must_vote): a candidate whose
    // log promotes server 3 counts 3's vote; 3, which has not yet received
    // that entry, must still grant it, or the cluster could be stuck.
    let with_3 = leader_with_noop_committed()
        .membership()
        .apply(&add_learner(3))
        .unwrap();
    let mut learner = Raft::new(
        Config::new(3, 0..3, 3),
        HardState::default(),
        vec![],
        Duration::ZERO,
    );
    let entries = noop_then_membership(&with_3);
    learner
        .handle_request(0, append(1, 0, (0, 0), entries), MS)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(learner.membership().learners().contains(&3));
    // Long after the leader was last heard from, candidate 1 (whose log
    // holds the promotion, index 3) asks for its vote.
    let later = Duration::from_secs(10);
    assert!(granted(learner.handle_request(
        1,
        vote_req(2, 1, 3, 1),
        later
    )));
}

#[test]
fn removing_from_two_servers_while_one_is_cut_off() {
    // Scenario 13 (etcd#10563). Leader 0 of {0, 1}; 1 is cut off.
    use super::membership::Change;
    let cfg = Config::new(0, 0..2, 0);
    let mut r = Raft::new(cfg, HardState::default(), vec![], Duration::ZERO);
    r.campaign(MS);
    let now = Duration::from_secs(1);
    // Server 1 grants the pre-vote, then the vote.
    for _ in 0..2 {
        if r.role() == Role::Leader {
            break;
        }
        let poll = r.poll_peer(1, now).unwrap();
        let Request::RequestVote(v) = &poll else {
            panic!("{poll:?}")
        };
        let reply = Reply::RequestVote(RequestVoteReply {
            term: v.term,
            vote_granted: true,
            pre_vote: v.pre_vote,
        });
        r.handle_reply(1, reply, now).unwrap();
    }
    assert_eq!(r.role(), Role::Leader);
    let req = r.poll_peer(1, now).unwrap();
    ack(&mut r, 1, &req, now);
    let _ = sync(&mut r);
    assert_eq!(r.commit_index(), 1);
    // Removing the leader itself would leave {1}, silent for longer than
    // an election timeout: refused, nothing appended.
    let later = now + Duration::from_secs(5);
    let last = r.log().last_index();
    assert_eq!(
        r.propose_change(&Change::Remove(0), later),
        Err(super::ChangeRefused::WouldLoseQuorum { unheard: vec![1] })
    );
    assert_eq!(r.log().last_index(), last);
    // Removing the cut-off follower commits at once on the leader alone:
    // {0} and {0, 1} overlap in 0 (a one-server change, §4.1), and a
    // membership is in force once appended.
    let (index, m) = r.propose_change(&Change::Remove(1), later).unwrap();
    let _ = sync(&mut r);
    assert_eq!(r.commit_index(), index);
    assert_eq!(m.voters(), [0].into());
}

#[test]
fn a_server_restarted_mid_change_recovers_the_latest_membership_in_its_log() {
    // Scenario 15: a membership appended and not committed when the
    // server stopped is in force again at restart (it is the latest in the
    // log), uncommitted; a snapshot's membership is the base under it.
    use super::membership::Change;
    let base = cfg(1, 3).bootstrap;
    let with_3 = base.apply(&add_learner(3)).unwrap();
    let promoted = with_3.apply(&Change::Promote(3)).unwrap();
    let log = vec![
        Entry {
            index: 6,
            term: 2,
            payload: Payload::Membership(promoted.clone()),
        },
        entry(7, 2),
    ];
    let snapshot = SnapshotMeta {
        last_index: 5,
        last_term: 2,
        size: 0,
        crc32: 0,
    };
    let hs = HardState {
        term: 2,
        ..HardState::default()
    };
    let r = Raft::restore(cfg(1, 3), hs, (snapshot, Some(with_3.clone())), log, MS);
    assert_eq!(r.membership(), &promoted);
    assert_eq!(r.membership_index(), 6);
    assert!(r.commit_index() < 6, "not known to be committed");
    assert_eq!(r.membership_at(5), &with_3, "the snapshot's below it");
    assert_eq!(r.peers().collect::<Vec<_>>(), vec![0, 2, 3]);
}
