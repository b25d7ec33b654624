//! The activity log: `DEBUG_DIR/node<ID>.log`, and stderr too when stderr is
//! a terminal. One line per event:
//!
//! ```text
//! 2026-11-22T10:15:02.113Z INFO  node4 [T7 Leader] STATE: Leader | TERM: 7
//! ```
//!
//! `RUST_LOG` chooses the level (default `info`; `debug` adds dropped
//! replies and failed RPCs, `trace` adds every heartbeat).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use log::Level;

use crate::consensus::{Event, NodeId, Raft, Term, Topic, VoteRefusal};

struct Tee {
    file: File,
    stderr: bool,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        if self.stderr {
            let _ = io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Starts logging for node `id`; returns the log file's path.
pub fn init(id: NodeId, debug_dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(debug_dir)?;
    let path = debug_dir.join(format!("node{id}.log"));
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    let tee = Tee {
        file,
        stderr: io::stderr().is_terminal(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |out, record| {
            writeln!(
                out,
                "{} {:<5} node{id} {}",
                out.timestamp_millis(),
                record.level(),
                record.args()
            )
        })
        .target(env_logger::Target::Pipe(Box::new(tee)))
        .try_init()
        .map_err(io::Error::other)?;
    Ok(path)
}

/// Writes one core event to the activity log, prefixed with the node's
/// term and role as they are after the event.
pub fn log_event(raft: &Raft, event: &Event) {
    let (mut level, text) = describe(event);
    // A leader appends each client write as it comes: a line each was
    // most of its log, and a write to the file for every write (issue
    // 24's profile: 60,177 of 63,714 lines). Its commits, a line per
    // batch, say as much; the appends stay at `RUST_LOG=debug`.
    if matches!(event, Event::Appended { .. }) && raft.role() == crate::consensus::Role::Leader {
        level = Level::Debug;
    }
    log::log!(level, "[T{} {}] {text}", raft.term(), raft.role());
}

/// The activity-log line for a core event, and its level. Each group of
/// events (`Event::topic`) has its own function.
pub fn describe(event: &Event) -> (Level, String) {
    match event.topic() {
        Topic::Elections => elections(event),
        Topic::Transfer => transfers(event),
        Topic::LogAndPeers => log_and_peers(event),
        Topic::Snapshots => snapshots(event),
        Topic::Membership => membership(event),
    }
}

fn node(id: &NodeId) -> String {
    format!("node{id}")
}

fn info(text: String) -> (Level, String) {
    (Level::Info, text)
}

/// Roles, terms, votes and CheckQuorum.
fn elections(event: &Event) -> (Level, String) {
    match event {
        Event::RoleChanged { role, term } => info(format!("STATE: {role} | TERM: {term}")),
        Event::TermAdopted { term, from } => {
            info(format!("adopted term {term} seen from {}", node(from)))
        }
        Event::LeaderKnown { leader, term } => {
            info(format!("leader for term {term} is {}", node(leader)))
        }
        Event::PreVoteStarted {
            term,
            last_log_index,
            last_log_term,
        } => info(format!(
            "pre-vote for term {term}: asking whether we could win, still in term {} (last log index {last_log_index}, term {last_log_term})",
            term - 1
        )),
        Event::PreVoteWon {
            term,
            votes,
            cluster_size,
        } => info(format!(
            "pre-vote won for term {term} with {votes} of {cluster_size}; starting the election"
        )),
        Event::PreVoteLost {
            term,
            votes,
            refusals,
            cluster_size,
        } => info(format!(
            "pre-vote lost for term {term}: {votes} yes, {refusals} no of {cluster_size}; staying in term {}",
            term - 1
        )),
        Event::ElectionStarted {
            term,
            last_log_index,
            last_log_term,
            transfer,
        } => info(format!(
            "election started for term {term}{} (last log index {last_log_index}, term {last_log_term})",
            if *transfer {
                " at the leader's request (leadership transfer)"
            } else {
                ""
            }
        )),
        Event::ElectionWon {
            term,
            votes,
            cluster_size,
        } => info(format!(
            "election won for term {term} with {votes} of {cluster_size} votes"
        )),
        Event::ElectionLost {
            term,
            votes,
            refusals,
            cluster_size,
        } => info(format!(
            "election lost for term {term}: {votes} votes, {refusals} refusals of {cluster_size}"
        )),
        Event::VoteGranted {
            candidate,
            term,
            pre_vote,
        } => info(format!(
            "{} granted to {} for term {term}",
            if *pre_vote { "pre-vote" } else { "vote" },
            node(candidate)
        )),
        Event::VoteRefused {
            candidate,
            term,
            pre_vote,
            reason,
        } => {
            let why = refusal(reason, *term);
            info(format!(
                "{} refused to {} for term {term}: {why}",
                if *pre_vote { "pre-vote" } else { "vote" },
                node(candidate)
            ))
        }
        Event::QuorumLost {
            term,
            heard,
            cluster_size,
            window,
        } => (
            Level::Warn,
            format!(
                "stepping down as leader of term {term}: heard from only {heard} of {cluster_size} servers (ourselves included) in the last {} ms, not a majority (CheckQuorum)",
                window.as_millis()
            ),
        ),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

/// Why a vote was refused, in words.
fn refusal(reason: &VoteRefusal, term: Term) -> String {
    match reason {
        VoteRefusal::StaleTerm => format!("its term {term} is older than ours"),
        VoteRefusal::AlreadyVoted(v) => format!("already voted for {} this term", node(v)),
        VoteRefusal::LogBehind { ours, theirs } => format!(
            "its log (last term {}, index {}) is behind ours (last term {}, index {})",
            theirs.0, theirs.1, ours.0, ours.1
        ),
        VoteRefusal::LeaderLease { leader, heard_ago } => format!(
            "leader {} was heard from {} ms ago, within the minimum election timeout",
            node(leader),
            heard_ago.as_millis()
        ),
        VoteRefusal::Leading => "we lead this term and a majority answers us".into(),
        VoteRefusal::JustStarted => {
            "we started less than a minimum election timeout ago (lease reads)".into()
        }
        VoteRefusal::Repairing {
            last_index,
            lost_through,
            lost_term,
        } => format!(
            "a storage fault cost us entries up to {lost_through} (our log ends at {last_index}), and a log that does not reach index {lost_through} in term {lost_term} or later may lack one of them"
        ),
    }
}

/// Membership change (thesis chapter 4).
fn membership(event: &Event) -> (Level, String) {
    match event {
        Event::MembershipInForce { index, membership } => info(format!(
            "membership in force from index {index}: {membership}"
        )),
        Event::MembershipCommitted {
            index,
            membership,
            change,
        } => info(format!(
            "membership at index {index} committed ({}): {membership}",
            if change.is_empty() {
                "no change"
            } else {
                change
            }
        )),
        Event::MembershipAbandoned { index, membership } => (
            Level::Warn,
            format!(
                "membership at index {index} abandoned (truncated before it committed): {membership}"
            ),
        ),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

/// Leadership transfer (thesis §3.10).
fn transfers(event: &Event) -> (Level, String) {
    match event {
        Event::TransferStarted {
            target,
            match_index,
            last_index,
        } => info(format!(
            "handing leadership to {} (it holds our log up to {match_index} of {last_index}); refusing new writes until it takes over",
            node(target)
        )),
        Event::TimeoutNowSent { target } => info(format!(
            "{} holds our whole log: told it to start an election now (TimeoutNow)",
            node(target)
        )),
        Event::TimeoutNowReceived { from } => info(format!(
            "leader {} is handing leadership to us: starting an election now",
            node(from)
        )),
        Event::TransferHandedOff {
            target,
            term,
            elapsed,
        } => info(format!(
            "leadership handed to {}, which started term {term}, {} ms after the transfer began",
            node(target),
            elapsed.as_millis()
        )),
        Event::TransferAbandoned {
            target,
            elapsed,
            why,
        } => (
            Level::Warn,
            format!(
                "leadership transfer to {} abandoned after {} ms: {why}",
                node(target),
                elapsed.as_millis()
            ),
        ),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

/// The log, commits, peers' reachability and storage repair.
fn log_and_peers(event: &Event) -> (Level, String) {
    match event {
        Event::Appended { from, to } if from == to => info(format!("appended entry {from}")),
        Event::Appended { from, to } => info(format!("appended entries {from} to {to}")),
        Event::Truncated { from, removed } => (
            Level::Warn,
            format!("removed {removed} conflicting entries from index {from}"),
        ),
        Event::Committed { index } => info(format!("committed up to index {index}")),
        Event::PeerUnreachable { peer } => (
            Level::Warn,
            format!("{} is unreachable; retrying with backoff", node(peer)),
        ),
        Event::PeerReachable { peer } => info(format!("{} is reachable again", node(peer))),
        Event::FollowerLostEntries { peer, from, to } => (
            Level::Warn,
            format!(
                "{} no longer holds entries {from} to {to}, which it had acknowledged (its storage lost them); they no longer count toward a commit and are sent again",
                node(peer)
            ),
        ),
        Event::Repairing {
            last_index,
            lost_through,
        } => (
            Level::Warn,
            format!(
                "repairing: our storage lost entries up to {lost_through} that we may have acknowledged (the log now ends at {last_index}); until the leader has sent them again we neither vote nor stand for election"
            ),
        ),
        Event::Repaired { lost_through } => (
            Level::Warn,
            format!(
                "repaired: our log holds entries up to {lost_through} again, from the leader; voting and standing as before"
            ),
        ),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

/// Compaction and InstallSnapshot.
fn snapshots(event: &Event) -> (Level, String) {
    match event {
        Event::Compacted {
            index,
            kept_from,
            removed,
        } => info(format!(
            "log compacted: the snapshot holds entries up to {index}; dropped {removed} entries, the log now starts at {kept_from}"
        )),
        Event::SnapshotSendStarted { peer, index, size } => info(format!(
            "sending snapshot up to index {index} ({size} bytes) to {}: the entries it lacks are compacted",
            node(peer)
        )),
        Event::SnapshotSent {
            peer,
            index,
            size,
            elapsed,
        } => info(format!(
            "{} has snapshot up to index {index} ({size} bytes, sent in {} ms)",
            node(peer),
            elapsed.as_millis()
        )),
        Event::SnapshotChecksumFailed {
            from,
            index,
            expected,
            computed,
        } => (
            Level::Warn,
            format!(
                "the snapshot up to index {index} from {} does not match its CRC-32 ({computed:08x} over what arrived, {expected:08x} expected): dropped it; the leader starts over",
                node(from)
            ),
        ),
        Event::SnapshotRefused { peer, index } => (
            Level::Warn,
            format!(
                "{} received our snapshot up to index {index} with a CRC-32 mismatch and dropped it: checking our file, then starting the transfer over",
                node(peer)
            ),
        ),
        Event::SnapshotInstalled {
            index,
            term,
            size,
            log_kept,
        } => info(format!(
            "installed snapshot from the leader up to index {index} (term {term}, {size} bytes); {}",
            if *log_kept {
                "kept the log entries after it"
            } else {
                "discarded the log, which did not hold its last entry"
            }
        )),
        _ => unreachable!("not of this topic: {event:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_the_readme_shows_them() {
        let (level, text) = describe(&Event::RoleChanged {
            role: crate::consensus::Role::Leader,
            term: 7,
        });
        assert_eq!(
            (level, text.as_str()),
            (Level::Info, "STATE: Leader | TERM: 7")
        );
        let (level, text) = describe(&Event::VoteRefused {
            candidate: 2,
            term: 4,
            pre_vote: false,
            reason: VoteRefusal::LogBehind {
                ours: (3, 9),
                theirs: (2, 12),
            },
        });
        assert_eq!(level, Level::Info);
        assert_eq!(
            text,
            "vote refused to node2 for term 4: its log (last term 2, index 12) is behind ours (last term 3, index 9)"
        );
    }
}
