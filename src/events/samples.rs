//! One of each core event, for the test of the stream's field names.

use std::time::Duration;

use crate::consensus::{Event, Role, VoteRefusal};

pub(super) fn every_event() -> Vec<Event> {
    let ms = Duration::from_millis;
    let refused = |reason| Event::VoteRefused {
        candidate: 2,
        term: 7,
        pre_vote: true,
        reason,
    };
    vec![
        Event::RoleChanged {
            role: Role::PreCandidate,
            term: 3,
        },
        Event::TermAdopted { term: 4, from: 1 },
        Event::LeaderKnown { leader: 2, term: 4 },
        Event::PreVoteStarted {
            term: 5,
            last_log_index: 10,
            last_log_term: 4,
        },
        Event::PreVoteWon {
            term: 5,
            votes: 2,
            cluster_size: 3,
        },
        Event::PreVoteLost {
            term: 5,
            votes: 1,
            refusals: 2,
            cluster_size: 3,
        },
        Event::ElectionStarted {
            term: 5,
            last_log_index: 10,
            last_log_term: 4,
            transfer: true,
        },
        Event::ElectionWon {
            term: 5,
            votes: 2,
            cluster_size: 3,
        },
        Event::ElectionLost {
            term: 5,
            votes: 1,
            refusals: 2,
            cluster_size: 3,
        },
        Event::VoteGranted {
            candidate: 2,
            term: 6,
            pre_vote: false,
        },
        refused(VoteRefusal::StaleTerm),
        refused(VoteRefusal::AlreadyVoted(1)),
        refused(VoteRefusal::LogBehind {
            ours: (4, 10),
            theirs: (3, 12),
        }),
        refused(VoteRefusal::LeaderLease {
            leader: 1,
            heard_ago: ms(12),
        }),
        refused(VoteRefusal::Leading),
        refused(VoteRefusal::JustStarted),
        refused(VoteRefusal::Repairing {
            last_index: 5,
            lost_through: 9,
            lost_term: 3,
        }),
        Event::QuorumLost {
            term: 6,
            heard: 1,
            cluster_size: 3,
            window: ms(300),
        },
        Event::TransferStarted {
            target: 2,
            match_index: 8,
            last_index: 9,
        },
        Event::TimeoutNowSent { target: 2 },
        Event::TimeoutNowReceived { from: 1 },
        Event::TransferHandedOff {
            target: 2,
            term: 7,
            elapsed: ms(15),
        },
        Event::TransferAbandoned {
            target: 2,
            elapsed: ms(600),
            why: "timed out",
        },
        Event::Appended { from: 11, to: 13 },
        Event::Truncated {
            from: 11,
            removed: 3,
        },
        Event::Committed { index: 13 },
        Event::PeerUnreachable { peer: 2 },
        Event::PeerReachable { peer: 2 },
        Event::FollowerLostEntries {
            peer: 2,
            from: 9,
            to: 13,
        },
        Event::Repairing {
            last_index: 5,
            lost_through: 9,
        },
        Event::Repaired { lost_through: 9 },
        Event::Compacted {
            index: 100,
            kept_from: 90,
            removed: 89,
        },
    ]
    .into_iter()
    .chain(snapshots_and_memberships())
    .collect()
}

/// The events of snapshots and memberships, in `every_event`'s order.
fn snapshots_and_memberships() -> Vec<Event> {
    let ms = Duration::from_millis;
    vec![
        Event::SnapshotSendStarted {
            peer: 2,
            index: 100,
            size: 4096,
        },
        Event::SnapshotSent {
            peer: 2,
            index: 100,
            size: 4096,
            elapsed: ms(40),
        },
        Event::SnapshotChecksumFailed {
            from: 1,
            index: 100,
            expected: 7,
            computed: 8,
        },
        Event::SnapshotRefused {
            peer: 2,
            index: 100,
        },
        Event::SnapshotInstalled {
            index: 100,
            term: 6,
            size: 4096,
            log_kept: false,
        },
        Event::MembershipInForce {
            index: 5,
            membership: crate::consensus::membership::Membership::bootstrap([
                (1, "a:1".to_string()),
                (2, "b:2".to_string()),
            ]),
        },
        Event::MembershipCommitted {
            index: 5,
            membership: crate::consensus::membership::Membership::bootstrap([
                (1, "a:1".to_string()),
                (2, "b:2".to_string()),
            ]),
            change: "node2 promoted to voter".into(),
        },
        Event::MembershipAbandoned {
            index: 6,
            membership: crate::consensus::membership::Membership::bootstrap([(
                1,
                "a:1".to_string(),
            )]),
        },
    ]
}

/// What the stream carries for each of `every_event`, one per line: as
/// serde's derive over `Event` produced it before the names moved out of
/// the core, and for events added since, as docs/PROTOCOL.md gives them.
const EXPECTED: &str = r#"
{"kind":"role_changed","role":"pre_candidate","term":3}
{"kind":"term_adopted","term":4,"from":1}
{"kind":"leader_known","leader":2,"term":4}
{"kind":"pre_vote_started","term":5,"last_log_index":10,"last_log_term":4}
{"kind":"pre_vote_won","term":5,"votes":2,"cluster_size":3}
{"kind":"pre_vote_lost","term":5,"votes":1,"refusals":2,"cluster_size":3}
{"kind":"election_started","term":5,"last_log_index":10,"last_log_term":4,"transfer":true}
{"kind":"election_won","term":5,"votes":2,"cluster_size":3}
{"kind":"election_lost","term":5,"votes":1,"refusals":2,"cluster_size":3}
{"kind":"vote_granted","candidate":2,"term":6,"pre_vote":false}
{"kind":"vote_refused","candidate":2,"term":7,"pre_vote":true,"reason":"stale_term"}
{"kind":"vote_refused","candidate":2,"term":7,"pre_vote":true,"reason":{"already_voted":1}}
{"kind":"vote_refused","candidate":2,"term":7,"pre_vote":true,"reason":{"log_behind":{"ours":[4,10],"theirs":[3,12]}}}
{"kind":"vote_refused","candidate":2,"term":7,"pre_vote":true,"reason":{"leader_lease":{"leader":1,"heard_ago_ms":12}}}
{"kind":"vote_refused","candidate":2,"term":7,"pre_vote":true,"reason":"leading"}
{"kind":"vote_refused","candidate":2,"term":7,"pre_vote":true,"reason":"just_started"}
{"kind":"vote_refused","candidate":2,"term":7,"pre_vote":true,"reason":{"repairing":{"last_index":5,"lost_through":9,"lost_term":3}}}
{"kind":"quorum_lost","term":6,"heard":1,"cluster_size":3,"window_ms":300}
{"kind":"transfer_started","target":2,"match_index":8,"last_index":9}
{"kind":"timeout_now_sent","target":2}
{"kind":"timeout_now_received","from":1}
{"kind":"transfer_handed_off","target":2,"term":7,"elapsed_ms":15}
{"kind":"transfer_abandoned","target":2,"elapsed_ms":600,"why":"timed out"}
{"kind":"appended","from":11,"to":13}
{"kind":"truncated","from":11,"removed":3}
{"kind":"committed","index":13}
{"kind":"peer_unreachable","peer":2}
{"kind":"peer_reachable","peer":2}
{"kind":"follower_lost_entries","peer":2,"from":9,"to":13}
{"kind":"repairing","last_index":5,"lost_through":9}
{"kind":"repaired","lost_through":9}
{"kind":"compacted","index":100,"kept_from":90,"removed":89}
{"kind":"snapshot_send_started","peer":2,"index":100,"size":4096}
{"kind":"snapshot_sent","peer":2,"index":100,"size":4096,"elapsed_ms":40}
{"kind":"snapshot_checksum_failed","from":1,"index":100,"expected":7,"computed":8}
{"kind":"snapshot_refused","peer":2,"index":100}
{"kind":"snapshot_installed","index":100,"term":6,"size":4096,"log_kept":false}
{"kind":"membership_in_force","index":5,"membership":{"servers":[{"id":1,"address":"a:1","suffrage":"voter"},{"id":2,"address":"b:2","suffrage":"voter"}]}}
{"kind":"membership_committed","index":5,"membership":{"servers":[{"id":1,"address":"a:1","suffrage":"voter"},{"id":2,"address":"b:2","suffrage":"voter"}]},"change":"node2 promoted to voter"}
{"kind":"membership_abandoned","index":6,"membership":{"servers":[{"id":1,"address":"a:1","suffrage":"voter"}]}}
"#;

/// Every core event keeps its kind and field names on the stream.
#[test]
fn the_stream_names_every_event_as_before() {
    let expected: Vec<&str> = EXPECTED.trim().lines().collect();
    let events = every_event();
    assert_eq!(events.len(), expected.len());
    for (event, line) in events.iter().zip(expected) {
        let (kind, mut fields) = super::fields::fields(event);
        fields.insert("kind".into(), kind.into());
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::Value::Object(fields), want, "{event:?}");
    }
}

/// Every event has its activity-log line (each group function is reached
/// only for its own events).
#[test]
fn every_event_has_a_line_in_the_activity_log() {
    for event in every_event() {
        let (_, text) = crate::activity::describe(&event);
        assert!(!text.is_empty(), "{event:?}");
    }
}
