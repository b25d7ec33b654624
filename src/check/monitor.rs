//! Watching the cluster during a check: every node's role, polled a few
//! times a second, for the progress line, the time without a leader, the
//! nemesis's choice of target and the page's node lanes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::history::Role;
use crate::client::{self, ClientError};
use crate::config::ClusterConfig;
use crate::consensus::{NodeId, Term};

/// How often the nodes are asked.
pub const POLL: Duration = Duration::from_millis(150);

/// What the monitor knows now, and has seen.
#[derive(Default)]
pub struct View {
    /// The leader a majority follows, and its term.
    pub leader: Option<(NodeId, Term)>,
    /// The longest election timeout any node reported, in ms.
    pub election_timeout_ms: u64,
    /// Role changes, in time order.
    pub roles: Vec<Role>,
    last: HashMap<NodeId, Role>,
}

/// The leader a majority of `nodes` follows (itself included), from each
/// node's latest role.
pub fn majority_leader(nodes: usize, latest: &HashMap<NodeId, Role>) -> Option<(NodeId, Term)> {
    let majority = nodes / 2 + 1;
    latest
        .values()
        .filter(|r| r.role == "leader")
        .map(|r| (r.node, r.term))
        .find(|&(l, term)| {
            latest
                .values()
                .filter(|r| r.leader == Some(l) && r.term == term && r.role != "silent")
                .count()
                >= majority
        })
}

/// The stretches (from, to), in µs, when no leader had a majority
/// following it, from the role changes `roles` (in time order) of a run
/// of `nodes` nodes that ended at `end`.
pub fn leaderless(nodes: usize, roles: &[Role], end: u64) -> Vec<(u64, u64)> {
    let mut latest: HashMap<NodeId, Role> = HashMap::new();
    let mut gaps = Vec::new();
    let mut since: Option<u64> = None;
    let mut i = 0;
    while i < roles.len() {
        let at = roles[i].at;
        while i < roles.len() && roles[i].at == at {
            latest.insert(roles[i].node, roles[i].clone());
            i += 1;
        }
        match (majority_leader(nodes, &latest), since) {
            (Some(_), Some(from)) => {
                if at > from {
                    gaps.push((from, at));
                }
                since = None;
            }
            (None, None) => since = Some(at),
            _ => {}
        }
    }
    if let Some(from) = since.filter(|&f| f < end) {
        gaps.push((from, end));
    }
    gaps
}

/// Polls every node until `stop`, keeping `view` up to date.
pub fn run(config: ClusterConfig, epoch: Instant, view: Arc<Mutex<View>>, stop: Arc<AtomicBool>) {
    let us = |t: Instant| t.duration_since(epoch).as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let statuses = client::status_all(&config, POLL * 2);
        let at = us(started);
        let mut v = view.lock();
        for s in &statuses {
            let node = s.member.id;
            let mut role = Role {
                node,
                at,
                role: "silent".into(),
                term: 0,
                leader: None,
                isolated: false,
            };
            match &s.status {
                Ok(st) => {
                    if let Some(ms) = st.election_timeout_ms {
                        v.election_timeout_ms = v.election_timeout_ms.max(ms);
                    }
                    role.role = st.role.clone();
                    role.term = st.term;
                    role.leader = st.leader_id;
                    role.isolated = st.isolated;
                }
                Err(ClientError::Node { message, .. }) if message.contains("refused") => {
                    role.role = "down".into();
                }
                Err(_) => {}
            }
            let changed = v.last.get(&node).is_none_or(|last| {
                (&last.role, last.term, last.leader, last.isolated)
                    != (&role.role, role.term, role.leader, role.isolated)
            });
            if changed {
                v.last.insert(node, role.clone());
                v.roles.push(role);
            }
        }
        v.leader = majority_leader(config.members.len(), &v.last);
        drop(v);
        let spent = started.elapsed();
        if spent < POLL {
            std::thread::sleep(POLL - spent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(node: NodeId, at: u64, role: &str, term: Term, leader: Option<NodeId>) -> Role {
        Role {
            node,
            at,
            role: role.into(),
            term,
            leader,
            isolated: false,
        }
    }

    #[test]
    fn a_leader_counts_only_while_a_majority_follows_it_in_its_term() {
        let roles = [
            role(0, 0, "leader", 1, Some(0)),
            role(1, 0, "follower", 1, Some(0)),
            role(2, 0, "follower", 1, Some(0)),
            // node0 paused: node1 and node2 no longer follow it...
            role(0, 100, "silent", 0, None),
            role(1, 150, "candidate", 2, None),
            // ... node1 wins term 2, node2 follows it.
            role(1, 300, "leader", 2, Some(1)),
            role(2, 320, "follower", 2, Some(1)),
            // node0 wakes up still a leader of term 1: it counts for nothing.
            role(0, 400, "leader", 1, Some(0)),
            // Cut off, node2 forgets node1: node1 alone is no majority.
            role(2, 500, "candidate", 3, None),
        ];
        assert_eq!(leaderless(3, &roles, 900), vec![(100, 320), (500, 900)]);
        let mut latest = HashMap::new();
        for r in &roles[..8] {
            latest.insert(r.node, r.clone());
        }
        assert_eq!(majority_leader(3, &latest), Some((1, 2)));
    }
}
