//! Watching a cluster from outside: one subscription per node, merged.
//!
//! [`follow`] starts a thread per configured node that subscribes to the
//! node's event stream (`subscribe`, see `events` and docs/PROTOCOL.md)
//! and forwards what arrives, as [`Update`]s, to one channel. A node that
//! cannot be reached, or that stops, is reported, and the thread tries
//! again with backoff, so a watcher sees a node go down and come back.
//! After a reconnection the node's recent events are not repeated (its
//! event numbers tell), unless the node restarted meanwhile.
//!
//! [`ClusterView`] folds the updates into what the displays show: each
//! node's latest status and whether it answers, and the recent events of
//! all nodes in time order. `raftctl events`, `raftctl watch` and `raftctl
//! web` are built on these two.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Write};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, unbounded};

use crate::config::{ClusterConfig, Member};
use crate::consensus::NodeId;
use crate::events::NodeEvent;
use crate::wire::{self, NodeStatus, Request, Response};

/// What a watcher learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// Subscribed to `node` (first time, or again after it was away).
    Connected {
        node: NodeId,
    },
    Status(Box<NodeStatus>),
    Event(Box<NodeEvent>),
    /// `node` could not be reached, or its stream broke; retrying.
    Unreachable {
        node: NodeId,
        error: String,
    },
}

/// How to subscribe.
#[derive(Clone, Copy, Debug)]
pub struct FeedOptions {
    /// The node's recent events first.
    pub recent: bool,
    /// Raft messages too (debug level).
    pub messages: bool,
    /// How often each node sends its status.
    pub status_every: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            recent: true,
            messages: false,
            status_every: Duration::from_millis(250),
        }
    }
}

/// Follows `nodes` (all of `config`'s if empty). A thread ends at its
/// next update after the receiver is dropped; one retrying a node that
/// stays unreachable sends none, and lasts as long as the process (the
/// raftctl commands that follow a cluster run until they exit).
pub fn follow(config: &ClusterConfig, nodes: &[NodeId], options: FeedOptions) -> Receiver<Update> {
    let (tx, rx) = unbounded();
    for member in &config.members {
        if !nodes.is_empty() && !nodes.contains(&member.id) {
            continue;
        }
        let (member, tx) = (member.clone(), tx.clone());
        thread::Builder::new()
            .name(format!("follow-{}", member.id))
            .spawn(move || follow_node(&member, options, &tx))
            .expect("cannot start a thread");
    }
    rx
}

/// Where a node's stream was, to resume without repeating events.
#[derive(Default)]
struct Resume {
    started_ms: u64,
    last_seq: u64,
}

fn follow_node(member: &Member, options: FeedOptions, tx: &Sender<Update>) {
    let mut resume = Resume::default();
    let mut backoff = Duration::from_millis(100);
    let mut reported = false;
    loop {
        let mut subscribed = false;
        let error = match stream_node(member, options, tx, &mut resume, &mut subscribed) {
            Ok(()) => return, // the watcher went away
            Err(e) => e,
        };
        // A stream that was up: its end is news, and retrying starts over.
        if subscribed {
            backoff = Duration::from_millis(100);
            reported = false;
        }
        if !reported {
            let update = Update::Unreachable {
                node: member.id,
                error,
            };
            if tx.send(update).is_err() {
                return;
            }
            reported = true;
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Streams until the watcher goes away (`Ok`) or the connection fails.
fn stream_node(
    member: &Member,
    options: FeedOptions,
    tx: &Sender<Update>,
    resume: &mut Resume,
    subscribed: &mut bool,
) -> Result<(), String> {
    let stream = crate::tls::open(member, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    // Statuses come every `status_every`: silence for much longer is a
    // node that stopped answering (SIGSTOP, say).
    let silence = (options.status_every * 4).max(Duration::from_secs(2));
    stream
        .tcp()
        .set_read_timeout(Some(silence))
        .map_err(|e| e.to_string())?;
    let request = Request::Subscribe {
        recent: options.recent,
        messages: options.messages,
        status_ms: options.status_every.as_millis() as u64,
    };
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    wire::write_message(&mut writer, &request).map_err(|e| e.to_string())?;
    writer.flush().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        let response: Response =
            wire::read_message(&mut reader, &mut buf).map_err(|e| e.to_string())?;
        let update = match response {
            Response::Subscribed { node, started_ms } => {
                if node != member.id {
                    return Err(format!(
                        "{} is node{node}, not node{} as the config says",
                        member.address(),
                        member.id
                    ));
                }
                if started_ms != resume.started_ms {
                    *resume = Resume {
                        started_ms,
                        last_seq: 0,
                    };
                }
                *subscribed = true;
                Update::Connected { node }
            }
            Response::Status(s) => Update::Status(s),
            Response::Event(e) => {
                if e.seq <= resume.last_seq {
                    continue; // seen before the reconnection
                }
                resume.last_seq = e.seq;
                Update::Event(e)
            }
            Response::Error { message, .. } => return Err(message),
            other => return Err(format!("unexpected answer {other:?}")),
        };
        if tx.send(update).is_err() {
            return Ok(());
        }
    }
}

/// What a node looks like to a watcher.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    /// Its latest status,
    pub status: Option<NodeStatus>,
    /// and when it came.
    pub status_at: Option<Instant>,
    /// Whether its stream is up.
    pub reachable: bool,
    /// Why it is not.
    pub error: Option<String>,
}

/// The cluster as the updates so far show it.
#[derive(Clone, Debug)]
pub struct ClusterView {
    pub nodes: BTreeMap<NodeId, NodeView>,
    /// The most recent events of all nodes, oldest first, in time order.
    pub events: VecDeque<NodeEvent>,
    keep: usize,
    /// How often each node was asked to send its status.
    pub status_every: Duration,
}

/// A node whose stream is up but whose last status is older than this
/// many status intervals is shown as silent (paused, or too loaded to
/// answer): its stream only breaks after seconds of silence.
pub const SILENT_AFTER: u32 = 3;

impl ClusterView {
    /// A view of `config`'s nodes, keeping the last `keep` events.
    pub fn new(config: &ClusterConfig, keep: usize) -> ClusterView {
        ClusterView {
            nodes: config
                .members
                .iter()
                .map(|m| (m.id, NodeView::default()))
                .collect(),
            events: VecDeque::new(),
            keep,
            status_every: FeedOptions::default().status_every,
        }
    }

    /// How long `node` has been silent at `now`, if it has been for more
    /// than [`SILENT_AFTER`] status intervals while its stream is up.
    pub fn silent_for(&self, node: NodeId, now: Instant) -> Option<Duration> {
        let v = self.nodes.get(&node)?;
        let quiet = now.saturating_duration_since(v.status_at?);
        (v.reachable && quiet > self.status_every * SILENT_AFTER).then_some(quiet)
    }

    /// Whether `node` answers: reachable and not silent at `now`.
    pub fn answers(&self, node: NodeId, now: Instant) -> bool {
        self.nodes.get(&node).is_some_and(|v| v.reachable) && self.silent_for(node, now).is_none()
    }

    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Connected { node } => {
                let v = self.nodes.entry(node).or_default();
                v.reachable = true;
                v.error = None;
            }
            Update::Status(s) => {
                let v = self.nodes.entry(s.id).or_default();
                v.reachable = true;
                v.error = None;
                v.status = Some(*s);
                v.status_at = Some(Instant::now());
            }
            Update::Unreachable { node, error } => {
                let v = self.nodes.entry(node).or_default();
                v.reachable = false;
                v.error = Some(error);
            }
            Update::Event(e) => self.add_event(*e),
        }
    }

    /// Adds an event in time order (nodes' streams interleave; an event
    /// usually arrives after those it follows, so this is cheap).
    fn add_event(&mut self, e: NodeEvent) {
        let at = self
            .events
            .iter()
            .rposition(|x| (x.time_ms, x.node, x.seq) <= (e.time_ms, e.node, e.seq))
            .map_or(0, |k| k + 1);
        self.events.insert(at, e);
        while self.events.len() > self.keep {
            self.events.pop_front();
        }
    }

    /// The node whose status says it leads, in the highest term, among
    /// those that answer.
    pub fn leader(&self) -> Option<(NodeId, u64)> {
        let now = Instant::now();
        self.nodes
            .iter()
            .filter(|(id, _)| self.answers(**id, now))
            .filter_map(|(&id, v)| v.status.as_ref().map(|s| (id, s)))
            .filter(|(_, s)| s.role == "leader")
            .map(|(id, s)| (id, s.term))
            .max_by_key(|&(_, term)| term)
    }
}

/// Puts events arriving from several nodes' streams back in time order:
/// each is held for `delay` after it arrives, so that an earlier event of
/// another node arriving a little later still comes out first.
pub struct Reorder {
    delay: Duration,
    held: Vec<(Instant, NodeEvent)>,
}

impl Reorder {
    pub fn new(delay: Duration) -> Reorder {
        Reorder {
            delay,
            held: Vec::new(),
        }
    }

    pub fn push(&mut self, event: NodeEvent, now: Instant) {
        self.held.push((now, event));
    }

    /// The events held long enough, in time order.
    pub fn ready(&mut self, now: Instant) -> Vec<NodeEvent> {
        let (mut out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(at, _)| now.saturating_duration_since(*at) >= self.delay);
        self.held = keep;
        out.sort_by_key(|(_, e)| (e.time_ms, e.node, e.seq));
        out.into_iter().map(|(_, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: NodeId, seq: u64, time_ms: u64) -> NodeEvent {
        NodeEvent {
            node,
            seq,
            time_ms,
            level: "info".into(),
            term: 1,
            role: "follower".into(),
            kind: "note".into(),
            text: format!("{node}/{seq}"),
            detail: Default::default(),
        }
    }

    fn config(n: u64) -> ClusterConfig {
        let text: String = (0..n)
            .map(|i| format!("{i} 127.0.0.1 {}\n", 7000 + i))
            .collect();
        crate::config::parse(&text, std::path::Path::new("t.txt")).unwrap()
    }

    #[test]
    fn events_of_several_nodes_are_kept_in_time_order_and_bounded() {
        let mut v = ClusterView::new(&config(3), 3);
        for (node, seq, t) in [(0, 1, 10), (1, 1, 5), (2, 1, 30), (0, 2, 20)] {
            v.apply(Update::Event(Box::new(event(node, seq, t))));
        }
        let order: Vec<u64> = v.events.iter().map(|e| e.time_ms).collect();
        assert_eq!(order, vec![10, 20, 30], "the oldest dropped first");
    }

    #[test]
    fn events_arriving_out_of_order_come_out_in_time_order_after_the_delay() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(100);
        let mut r = Reorder::new(delay);
        r.push(event(1, 7, 50), t0);
        r.push(event(0, 3, 40), t0 + Duration::from_millis(30));
        assert!(r.ready(t0 + Duration::from_millis(99)).is_empty());
        let first = r.ready(t0 + delay);
        assert_eq!(first.iter().map(|e| e.time_ms).collect::<Vec<_>>(), [50]);
        let rest = r.ready(t0 + delay * 2);
        assert_eq!(rest.iter().map(|e| e.time_ms).collect::<Vec<_>>(), [40]);
        r.push(event(2, 1, 90), t0);
        r.push(event(0, 4, 60), t0);
        let both = r.ready(t0 + delay);
        assert_eq!(both.iter().map(|e| e.time_ms).collect::<Vec<_>>(), [60, 90]);
    }

    #[test]
    fn the_leader_is_the_reachable_one_in_the_highest_term() {
        let mut v = ClusterView::new(&config(3), 10);
        let status = |id, role: &str, term| NodeStatus {
            id,
            role: role.into(),
            term,
            ..NodeStatus::default()
        };
        v.apply(Update::Status(Box::new(status(0, "leader", 3))));
        v.apply(Update::Status(Box::new(status(1, "leader", 4))));
        assert_eq!(v.leader(), Some((1, 4)));
        // Silent for a second (SIGSTOP): its stream is up, but it no
        // longer counts.
        let long_ago = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        v.nodes.get_mut(&1).unwrap().status_at = Some(long_ago);
        assert_eq!(v.leader(), Some((0, 3)));
        assert!(v.silent_for(1, Instant::now()).unwrap() >= Duration::from_secs(1));
        v.apply(Update::Status(Box::new(status(1, "leader", 4))));
        assert_eq!(v.leader(), Some((1, 4)));
        v.apply(Update::Unreachable {
            node: 1,
            error: "gone".into(),
        });
        assert_eq!(v.leader(), Some((0, 3)));
    }
}
