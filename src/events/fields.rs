//! The event stream's names and fields for the core's events: the wire
//! side's presentation of `consensus::Event`, which itself carries no
//! names or units for any format. Each event becomes a `kind` (its
//! variant in snake case) and an object of fields; durations go out as
//! whole milliseconds under a `_ms` name. docs/PROTOCOL.md lists them.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::consensus::{Event, Role, Topic, VoteRefusal};

/// The kind and fields of an event.
type Fields = (&'static str, Map<String, Value>);

/// `kind`, then `name => value` pairs.
macro_rules! out {
    ($kind:literal $(, $name:literal => $value:expr)* $(,)?) => {{
        #[allow(unused_mut)]
        let mut map = Map::new();
        $(map.insert($name.into(), json!($value));)*
        ($kind, map)
    }};
}

/// `kind` and fields of `event`, as subscribers see them. Each group of
/// events (`Event::topic`) has its own function.
pub fn fields(event: &Event) -> Fields {
    match event.topic() {
        Topic::Elections => elections(event),
        Topic::Transfer => transfers(event),
        Topic::LogAndPeers => log_and_peers(event),
        Topic::Snapshots => snapshots(event),
        Topic::Membership => match event {
            Event::MembershipInForce { index, membership } => out!("membership_in_force",
                "index" => index, "membership" => membership),
            Event::MembershipCommitted {
                index,
                membership,
                change,
            } => out!("membership_committed",
                "index" => index, "membership" => membership, "change" => change),
            Event::MembershipAbandoned { index, membership } => out!("membership_abandoned",
                "index" => index, "membership" => membership),
            _ => unreachable!("not of this topic: {event:?}"),
        },
    }
}

fn ms(d: &Duration) -> u64 {
    d.as_millis() as u64
}

fn elections(event: &Event) -> Fields {
    match event {
        Event::RoleChanged { role, term } => {
            out!("role_changed", "role" => role_name(*role), "term" => term)
        }
        Event::TermAdopted { term, from } => out!("term_adopted", "term" => term, "from" => from),
        Event::LeaderKnown { leader, term } => {
            out!("leader_known", "leader" => leader, "term" => term)
        }
        Event::PreVoteStarted {
            term,
            last_log_index,
            last_log_term,
        } => out!("pre_vote_started",
            "term" => term, "last_log_index" => last_log_index, "last_log_term" => last_log_term),
        Event::PreVoteWon {
            term,
            votes,
            cluster_size,
        } => out!("pre_vote_won",
            "term" => term, "votes" => votes, "cluster_size" => cluster_size),
        Event::PreVoteLost {
            term,
            votes,
            refusals,
            cluster_size,
        } => out!("pre_vote_lost",
            "term" => term, "votes" => votes, "refusals" => refusals,
            "cluster_size" => cluster_size),
        Event::ElectionStarted {
            term,
            last_log_index,
            last_log_term,
            transfer,
        } => {
            out!("election_started", "term" => term, "last_log_index" => last_log_index,
                "last_log_term" => last_log_term, "transfer" => transfer)
        }
        Event::ElectionWon {
            term,
            votes,
            cluster_size,
        } => out!("election_won",
            "term" => term, "votes" => votes, "cluster_size" => cluster_size),
        Event::ElectionLost {
            term,
            votes,
            refusals,
            cluster_size,
        } => out!("election_lost",
            "term" => term, "votes" => votes, "refusals" => refusals,
            "cluster_size" => cluster_size),
        Event::VoteGranted {
            candidate,
            term,
            pre_vote,
        } => out!("vote_granted",
            "candidate" => candidate, "term" => term, "pre_vote" => pre_vote),
        Event::VoteRefused {
            candidate,
            term,
            pre_vote,
            reason,
        } => out!("vote_refused",
            "candidate" => candidate, "term" => term, "pre_vote" => pre_vote,
            "reason" => refusal(reason)),
        Event::QuorumLost {
            term,
            heard,
            cluster_size,
            window,
        } => out!("quorum_lost",
            "term" => term, "heard" => heard, "cluster_size" => cluster_size,
            "window_ms" => ms(window)),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

fn transfers(event: &Event) -> Fields {
    match event {
        Event::TransferStarted {
            target,
            match_index,
            last_index,
        } => out!("transfer_started",
            "target" => target, "match_index" => match_index, "last_index" => last_index),
        Event::TimeoutNowSent { target } => out!("timeout_now_sent", "target" => target),
        Event::TimeoutNowReceived { from } => out!("timeout_now_received", "from" => from),
        Event::TransferHandedOff {
            target,
            term,
            elapsed,
        } => out!("transfer_handed_off",
            "target" => target, "term" => term, "elapsed_ms" => ms(elapsed)),
        Event::TransferAbandoned {
            target,
            elapsed,
            why,
        } => out!("transfer_abandoned",
            "target" => target, "elapsed_ms" => ms(elapsed), "why" => why),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

fn log_and_peers(event: &Event) -> Fields {
    match event {
        Event::Appended { from, to } => out!("appended", "from" => from, "to" => to),
        Event::Truncated { from, removed } => {
            out!("truncated", "from" => from, "removed" => removed)
        }
        Event::Committed { index } => out!("committed", "index" => index),
        Event::PeerUnreachable { peer } => out!("peer_unreachable", "peer" => peer),
        Event::PeerReachable { peer } => out!("peer_reachable", "peer" => peer),
        Event::FollowerLostEntries { peer, from, to } => out!("follower_lost_entries",
            "peer" => peer, "from" => from, "to" => to),
        Event::Repairing {
            last_index,
            lost_through,
        } => out!("repairing",
            "last_index" => last_index, "lost_through" => lost_through),
        Event::Repaired { lost_through } => out!("repaired", "lost_through" => lost_through),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

fn snapshots(event: &Event) -> Fields {
    match event {
        Event::Compacted {
            index,
            kept_from,
            removed,
        } => out!("compacted",
            "index" => index, "kept_from" => kept_from, "removed" => removed),
        Event::SnapshotSendStarted { peer, index, size } => out!("snapshot_send_started",
            "peer" => peer, "index" => index, "size" => size),
        Event::SnapshotSent {
            peer,
            index,
            size,
            elapsed,
        } => out!("snapshot_sent",
            "peer" => peer, "index" => index, "size" => size, "elapsed_ms" => ms(elapsed)),
        Event::SnapshotChecksumFailed {
            from,
            index,
            expected,
            computed,
        } => {
            out!("snapshot_checksum_failed", "from" => from, "index" => index,
                "expected" => expected, "computed" => computed)
        }
        Event::SnapshotRefused { peer, index } => {
            out!("snapshot_refused", "peer" => peer, "index" => index)
        }
        Event::SnapshotInstalled {
            index,
            term,
            size,
            log_kept,
        } => out!("snapshot_installed",
            "index" => index, "term" => term, "size" => size, "log_kept" => log_kept),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

/// A role as the stream names it (`pre_candidate`; `role_changed`).
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre_candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// Why a vote was refused: a name, or an object of one name holding the
/// details.
fn refusal(reason: &VoteRefusal) -> Value {
    match reason {
        VoteRefusal::StaleTerm => json!("stale_term"),
        VoteRefusal::AlreadyVoted(id) => json!({ "already_voted": id }),
        VoteRefusal::LogBehind { ours, theirs } => {
            json!({ "log_behind": { "ours": [ours.0, ours.1], "theirs": [theirs.0, theirs.1] } })
        }
        VoteRefusal::LeaderLease { leader, heard_ago } => json!({
            "leader_lease": { "leader": leader, "heard_ago_ms": heard_ago.as_millis() as u64 }
        }),
        VoteRefusal::Leading => json!("leading"),
        VoteRefusal::JustStarted => json!("just_started"),
        VoteRefusal::Repairing {
            last_index,
            lost_through,
            lost_term,
        } => json!({
            "repairing": {
                "last_index": last_index, "lost_through": lost_through, "lost_term": lost_term
            }
        }),
    }
}
