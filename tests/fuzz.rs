//! Property tests of everything that reads from the network: arbitrary
//! bytes at the wire decoder, arbitrary well-formed but wrong messages at
//! the peer service and the core, and arbitrary lines at a live node. None
//! may panic; each message gets an answer (a reply or an error); a refused
//! message changes nothing. (The simulation adds the last layer: forged
//! requests between correct nodes with the safety checker running, in
//! tests/simulation.rs.)
//!
//! The random seed is fixed, so CI runs the same cases every time. For a
//! deeper run: `FUZZ_SEED=<n> FUZZ_CASES=<n> cargo test --release --test
//! fuzz`. A failure prints the smallest input proptest could shrink it to.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use raft::consensus::{
    AppendEntries, Config as RaftConfig, Entry, HardState, Index, InstallSnapshot, Json, MAX_TERM,
    Payload, Raft, Reply, Request, RequestVote, RequestVoteReply, Role, SnapshotMeta, Term,
    TimeoutNow, TimeoutNowReply,
};
use raft::service::PeerService;
use raft::wire::{self, ErrorCode, PeerRequest, Response};

#[path = "process/ports.rs"]
mod ports;

/// A runner with the seed from `FUZZ_SEED` (fixed by default) and
/// `FUZZ_CASES` cases (or `default_cases`).
fn runner(default_cases: u32) -> TestRunner {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seed = env("FUZZ_SEED").unwrap_or(0x5EED_F022);
    let cases = env("FUZZ_CASES").map_or(default_cases, |c| c as u32);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

// ----- The wire decoder -----

/// Lines that look like our messages, then damaged: cut short, bytes
/// flipped, garbage spliced in.
fn damaged_line() -> impl Strategy<Value = Vec<u8>> {
    let samples = [
        r#"{"type":"append_entries","cluster":"c","from":1,"term":3,"leader_id":1,"prev_log_index":2,"prev_log_term":2,"entries":[{"index":3,"term":3,"payload":{"kind":"data","data":"x"}}],"leader_commit":2}"#,
        r#"{"type":"request_vote","cluster":"c","from":1,"term":3,"candidate_id":1,"last_log_index":0,"last_log_term":0}"#,
        r#"{"type":"write","client":7,"seq":1,"op":"cas","key":"k","from":"a","to":"b"}"#,
        r#"{"type":"read","key":"k","stale":true}"#,
        r#"{"type":"log","from":1,"limit":10}"#,
        r#"{"type":"status"}"#,
    ];
    (
        0..samples.len(),
        vec((any::<usize>(), any::<u8>()), 0..6),
        any::<usize>(),
    )
        .prop_map(move |(k, flips, cut)| {
            let mut line = samples[k].as_bytes().to_vec();
            for (at, b) in flips {
                let at = at % line.len();
                line[at] = b;
            }
            line.truncate(cut % (line.len() + 1));
            line
        })
}

#[test]
fn the_wire_decoder_never_panics_and_always_makes_progress() {
    let input = vec(prop_oneof![vec(any::<u8>(), 0..300), damaged_line()], 0..8)
        .prop_map(|parts| parts.join(&b'\n'));
    runner(2000)
        .run(&(input, 16usize..400), |(bytes, limit)| {
            let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
            let mut reader = std::io::BufReader::with_capacity(7, &bytes[..]);
            let mut buf = Vec::new();
            let mut lines = 0;
            loop {
                match wire::read_line(&mut reader, limit, &mut buf) {
                    Ok(()) => {
                        prop_assert!(buf.len() <= limit);
                        // The tag-first decoder the server uses agrees
                        // with serde's general one on every line.
                        let general = serde_json::from_slice::<wire::Request>(&buf);
                        let fast = wire::decode_request(&buf);
                        prop_assert_eq!(
                            general.as_ref().ok(),
                            fast.as_ref().ok(),
                            "{}",
                            String::from_utf8_lossy(&buf)
                        );
                        let _ = serde_json::from_slice::<Response>(&buf);
                    }
                    Err(wire::WireError::TooLarge { .. }) => {}
                    Err(_) => break, // end of input
                }
                lines += 1;
                prop_assert!(lines <= newlines + 1, "read more lines than there are");
            }
            Ok(())
        })
        .unwrap();
}

// ----- The peer service and the core -----

fn term() -> impl Strategy<Value = Term> {
    prop_oneof![
        6 => 0..6u64,
        1 => Just(MAX_TERM),
        1 => Just(MAX_TERM + 1),
        1 => Just(u64::MAX),
    ]
}

fn index() -> impl Strategy<Value = Index> {
    prop_oneof![
        8 => 0..9u64,
        1 => Just(u64::MAX - 1),
        1 => Just(u64::MAX),
    ]
}

/// Entries: usually contiguous from `prev + 1` with plausible terms,
/// sometimes anything at all.
fn entries(prev: Index) -> impl Strategy<Value = Vec<Entry>> {
    let contiguous = vec(1..5u64, 0..5).prop_map(move |terms| {
        let mut sorted = terms;
        sorted.sort_unstable();
        sorted
            .into_iter()
            .enumerate()
            .map(|(k, term)| Entry {
                index: prev.wrapping_add(1 + k as u64),
                term,
                payload: Payload::Noop,
            })
            .collect()
    });
    let anything = vec((index(), term()), 0..5).prop_map(|es| {
        es.into_iter()
            .map(|(index, term)| Entry {
                index,
                term,
                payload: Payload::Command(Json::string("e")),
            })
            .collect()
    });
    prop_oneof![3 => contiguous, 1 => anything]
}

fn peer_request() -> impl Strategy<Value = PeerRequest> {
    let sender = prop_oneof![8 => 0..3u64, 1 => 3..10u64];
    let cluster = prop_oneof![8 => Just("ours".to_string()), 1 => Just("theirs".to_string())];
    let vote = (
        (term(), 0..4u64, index(), term()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(|((term, candidate, lli, llt), (pre_vote, transfer))| {
            Request::RequestVote(RequestVote {
                term,
                candidate_id: candidate,
                last_log_index: lli,
                last_log_term: llt,
                pre_vote,
                transfer,
            })
        });
    let timeout_now = (term(), 0..4u64)
        .prop_map(|(term, leader_id)| Request::TimeoutNow(TimeoutNow { term, leader_id }));
    let append = (term(), 0..4u64, index(), term(), index(), 0..3u64).prop_flat_map(
        |(term, leader, prev, prev_term, commit, read_round)| {
            entries(prev).prop_map(move |entries| {
                Request::AppendEntries(AppendEntries {
                    term,
                    leader_id: leader,
                    prev_log_index: prev,
                    prev_log_term: prev_term,
                    entries,
                    leader_commit: commit,
                    read_round,
                })
            })
        },
    );
    // Chunks of a small snapshot, whose CRC is right or not.
    let snapshot = (
        (term(), 0..4u64, index(), term()),
        (0..6u64, vec(b'a'..=b'z', 0..=4), any::<bool>()),
    )
        .prop_map(
            |((term, leader, last_index, last_term), (offset, data, right))| {
                let data = String::from_utf8(data).expect("ASCII letters");
                let whole = format!("{}{data}", "x".repeat(offset as usize));
                Request::InstallSnapshot(InstallSnapshot {
                    term,
                    leader_id: leader,
                    snapshot: SnapshotMeta {
                        last_index,
                        last_term,
                        size: whole.len() as u64,
                        crc32: crc32fast::hash(whole.as_bytes()) ^ u32::from(!right),
                    },
                    offset,
                    data,
                    membership: None,
                })
            },
        );
    // Mostly honest about who sends: the sender is the named candidate or
    // leader, so the core's own checks get exercised.
    (
        cluster,
        sender,
        prop_oneof![3 => vote, 3 => append, 3 => snapshot, 1 => timeout_now],
        any::<bool>(),
    )
        .prop_map(|(cluster, from, mut rpc, honest)| {
            if honest {
                match &mut rpc {
                    Request::RequestVote(rv) => rv.candidate_id = from,
                    Request::AppendEntries(ae) => ae.leader_id = from,
                    Request::InstallSnapshot(is) => is.leader_id = from,
                    Request::TimeoutNow(tn) => tn.leader_id = from,
                }
            }
            PeerRequest { cluster, from, rpc }
        })
}

/// Node 0 of 3, with a log of the given terms, its term at least its last
/// log term; a leader (elected with node 1's vote) when `lead`.
fn start(log_terms: Vec<Term>, extra_term: Term, lead: bool) -> Raft {
    let mut terms = log_terms;
    terms.sort_unstable();
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(k, &term)| Entry {
            index: k as Index + 1,
            term,
            payload: Payload::Noop,
        })
        .collect();
    let cfg = RaftConfig::new(0, 0..3, 3);
    let hs = HardState {
        term: terms.last().copied().unwrap_or(0) + extra_term,
        voted_for: None,
        lost_through: 0,
        lost_term: 0,
    };
    let mut r = Raft::new(cfg, hs, entries, Duration::ZERO);
    if lead {
        let t = Duration::from_secs(1);
        r.campaign(t);
        let req = r.poll_peer(1, t).expect("a vote request");
        let yes = Reply::RequestVote(RequestVoteReply {
            term: r.term(),
            vote_granted: true,
            pre_vote: false,
        });
        assert!(matches!(req, Request::RequestVote(_)));
        r.handle_reply(1, yes, t).expect("a valid reply");
        assert_eq!(r.role(), Role::Leader);
    }
    r
}

/// Everything a refused message must leave as it was.
fn observable(r: &Raft) -> impl PartialEq + std::fmt::Debug + use<> {
    (
        r.hard_state(),
        r.role(),
        r.leader_id(),
        r.commit_index(),
        r.log().clone(),
    )
}

/// Invariants of our own making that no input may break.
fn check_invariants(r: &Raft) -> Result<(), TestCaseError> {
    let log = r.log().entries();
    let base = r.log().base_index();
    prop_assert!(
        base <= r.snapshot().last_index,
        "the log starts by the snapshot's end"
    );
    for (k, e) in log.iter().enumerate() {
        prop_assert_eq!(
            e.index,
            base + k as Index + 1,
            "indices follow the snapshot's"
        );
        let before = if k > 0 {
            log[k - 1].term
        } else {
            r.log().base_term()
        };
        prop_assert!(e.term >= before, "terms never decrease");
        prop_assert!(e.term <= r.term(), "no entry from a future term");
    }
    prop_assert!(
        r.commit_index() >= base,
        "a snapshot holds committed entries"
    );
    prop_assert!(r.commit_index() <= r.log().last_index());
    prop_assert!(r.term() <= MAX_TERM + 1);
    Ok(())
}

#[test]
fn the_peer_service_answers_anything_and_a_refusal_changes_nothing() {
    let setup = (vec(1..4u64, 0..6), 0..2u64, any::<bool>());
    let messages = vec(peer_request(), 1..20);
    runner(1000)
        .run(&(setup, messages), |((log, extra, lead), messages)| {
            let mut raft = start(log, extra, lead);
            let mut service = PeerService::new(0, "ours".into());
            let mut now = Duration::from_secs(2);
            for m in messages {
                now += Duration::from_millis(7);
                let _ = raft.take_ready();
                let before = observable(&raft);
                let answer = service.handle(&mut raft, m.clone(), now);
                match &answer.response {
                    Response::RequestVote(_)
                    | Response::AppendEntries(_)
                    | Response::InstallSnapshot(_)
                    | Response::TimeoutNow(_) => {}
                    Response::Error { code, .. } => {
                        prop_assert!(matches!(
                            code,
                            ErrorCode::Rejected
                                | ErrorCode::WrongCluster
                                | ErrorCode::UnknownSender
                        ));
                        prop_assert_eq!(
                            before,
                            observable(&raft),
                            "refused {:?} but changed state",
                            m
                        );
                        prop_assert!(raft.take_ready().events.is_empty());
                    }
                    other => prop_assert!(false, "answered {:?} with {:?}", m, other),
                }
                check_invariants(&raft)?;
                // The leader keeps working: it can always build its next
                // request for each peer without panicking.
                for peer in [1, 2] {
                    let _ = raft.poll_peer(peer, now);
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Replies are untrusted too: whatever a peer answers, the leader stays
/// consistent and keeps replicating.
#[test]
fn the_core_survives_any_reply() {
    let reply = prop_oneof![
        (term(), any::<bool>(), any::<bool>()).prop_map(|(term, vote_granted, pre_vote)| {
            Reply::RequestVote(RequestVoteReply {
                term,
                vote_granted,
                pre_vote,
            })
        }),
        (term(), term(), any::<bool>()).prop_map(|(term, request_term, started)| {
            Reply::TimeoutNow(TimeoutNowReply {
                term,
                request_term,
                started,
            })
        }),
        (
            term(),
            any::<bool>(),
            index(),
            proptest::option::of(term()),
            index(),
            term(),
            index(),
            0..3u64,
        )
            .prop_map(
                |(
                    term,
                    success,
                    match_index,
                    conflict_term,
                    conflict_index,
                    request_term,
                    prev_log_index,
                    read_round,
                )| {
                    Reply::AppendEntries(raft::consensus::AppendEntriesReply {
                        term,
                        success,
                        match_index,
                        conflict_term,
                        conflict_index,
                        request_term,
                        prev_log_index,
                        read_round,
                    })
                }
            ),
        (
            term(),
            term(),
            index(),
            0..8u64,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(term, request_term, last_index, next_offset, done, checksum_failed)| {
                    Reply::InstallSnapshot(raft::consensus::InstallSnapshotReply {
                        term,
                        request_term,
                        last_index,
                        next_offset,
                        done,
                        checksum_failed,
                    })
                }
            ),
    ];
    let setup = (vec(1..4u64, 0..6), any::<bool>());
    runner(1000)
        .run(&(setup, vec(reply, 1..20)), |((log, lead), replies)| {
            let mut raft = start(log, 0, lead);
            let mut now = Duration::from_secs(2);
            for r in replies {
                now += Duration::from_millis(60);
                raft.tick(now);
                // Replies need no request, but one in flight makes the
                // reply's claims matter.
                let _ = raft.poll_peer(1, now);
                let _ = raft.handle_reply(1, r, now);
                check_invariants(&raft)?;
            }
            Ok(())
        })
        .unwrap();
}

// ----- A live node -----

struct LiveNode {
    address: String,
    cluster_id: String,
    _dir: tempfile::TempDir,
    _ports: ports::Ports,
}

/// Node 0 of a three-node cluster, running in this process; its peers
/// never start, so it stays a follower or candidate and hears only us.
fn live_node() -> &'static LiveNode {
    static NODE: OnceLock<LiveNode> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let reserved = ports::reserve(3);
        let text = reserved.config_text();
        let cluster = raft::config::parse(&text, std::path::Path::new("fuzz.txt")).unwrap();
        let cluster_id = cluster.derived_cluster_id();
        let options = raft::node::NodeOptions {
            raft: raft::consensus::Config {
                max_entries_per_append: 64,
                ..raft::consensus::Config::new(0, cluster.members.iter().map(|m| m.id), 0)
            },
            storage: raft::node::StateOptions::new(dir.path().join("node0")),
            rpc_timeout: Duration::from_millis(100),
            lab: false,
            unsafe_local_reads: false,
            server: raft::server::ServerOptions::default(),
            listen: None,
            cluster_id: None,
            cluster,
        };
        let node = raft::node::Node::start(options).expect("node starts");
        let address = node.address().to_string();
        std::mem::forget(node); // runs until the test process exits
        LiveNode {
            address,
            cluster_id,
            _dir: dir,
            _ports: reserved,
        }
    })
}

/// A JSON object with a known or unknown `type` and random fields, some
/// of them the ones the protocol expects, with values of any JSON type.
fn json_line(cluster: String) -> impl Strategy<Value = String> {
    let types = prop_oneof![
        Just("request_vote"),
        Just("append_entries"),
        Just("write"),
        Just("read"),
        Just("log"),
        Just("status"),
        Just("is_leader"),
        Just("launch_missiles"),
    ];
    let keys = prop_oneof![
        Just("term"),
        Just("from"),
        Just("cluster"),
        Just("candidate_id"),
        Just("leader_id"),
        Just("last_log_index"),
        Just("last_log_term"),
        Just("prev_log_index"),
        Just("prev_log_term"),
        Just("entries"),
        Just("leader_commit"),
        Just("client"),
        Just("seq"),
        Just("op"),
        Just("key"),
        Just("value"),
        Just("stale"),
        Just("limit"),
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (0..5u64).prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z\u{0}-\u{1f}\u{e9}\u{1f600}]{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(cluster)),
        Just(serde_json::Value::from("put")),
    ];
    let value = leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    });
    (types, vec((keys, value), 0..8)).prop_map(|(ty, fields)| {
        let mut object = serde_json::Map::new();
        object.insert("type".into(), ty.into());
        for (k, v) in fields {
            object.insert(k.to_string(), v);
        }
        serde_json::Value::Object(object).to_string()
    })
}

#[test]
fn a_live_node_answers_every_line_and_keeps_serving() {
    let node = live_node();
    // One line each: a newline inside would make two requests.
    let line = prop_oneof![
        4 => json_line(node.cluster_id.clone()).prop_map(String::into_bytes),
        1 => damaged_line(),
        1 => vec(any::<u8>(), 0..200),
    ]
    .prop_map(|mut b| {
        b.retain(|&c| c != b'\n');
        b
    });
    runner(300)
        .run(&vec(line, 1..10), |lines| {
            let stream = TcpStream::connect(&node.address).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            for l in &lines {
                let mut l = l.clone();
                l.push(b'\n');
                writer.write_all(&l).unwrap();
                let mut answer = String::new();
                reader.read_line(&mut answer).unwrap();
                let decoded: Result<Response, _> = serde_json::from_str(&answer);
                prop_assert!(
                    decoded.is_ok(),
                    "answer {:?} to {:?}",
                    answer,
                    String::from_utf8_lossy(&l)
                );
            }
            // Still serving on the same connection.
            writer.write_all(b"{\"type\":\"status\"}\n").unwrap();
            let mut answer = String::new();
            reader.read_line(&mut answer).unwrap();
            prop_assert!(answer.contains("\"type\":\"status\""), "{}", answer);
            Ok(())
        })
        .unwrap();
}
