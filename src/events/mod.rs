//! The event stream: what a node tells its subscribers as it happens.
//!
//! Everything the activity log records (the core's events, and the
//! runtime's own lines: start, stop, snapshots, refused peers) is also
//! *published* here, as a structured [`NodeEvent`]; with a debug
//! subscriber, so is every Raft message the node sends or receives. A
//! client subscribes with a `subscribe` request on the node's port (see
//! docs/PROTOCOL.md) and gets the recent events, then each new one, and
//! the node's status at a fixed interval; `raftctl events`, `raftctl
//! watch` and `raftctl web` are built on it.
//!
//! **Cost.** The node must not pay for being watched, let alone for being
//! watchable:
//!
//! * With no subscriber, publishing an event records it in a small ring of
//!   recent events (a clone of the event, already built for the activity
//!   log) and does no encoding; a message is not even described: callers
//!   ask [`EventHub::wants_messages`] first, an atomic load.
//! * With subscribers, each event is handed as it is to each subscriber's
//!   bounded queue ([`QUEUE`] events) without waiting, and encoded by the
//!   subscriber's own thread, outside the node's lock, which publishers
//!   hold.
//!   A subscriber whose queue is full is too slow to follow: it is
//!   dropped, told why, and never slows the node. At most
//!   [`MAX_SUBSCRIBERS`] are served at once; more are refused.
//!
//! The hub has a lock of its own, taken after the node's (publishers
//! hold the node's lock) and never held while waiting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use log::Level;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::consensus::{Event, NodeId, Reply, Request, Role, Term};
pub use crate::wire::NodeEvent;

mod fields;
#[cfg(test)]
mod samples;

/// Subscribers served at once.
pub const MAX_SUBSCRIBERS: usize = 16;
/// Events queued for one subscriber before it counts as too slow.
pub const QUEUE: usize = 4096;
/// Recent events kept for new subscribers and `events` requests.
pub const RECENT: usize = 256;

/// A Raft message a node sent or received, for debug subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `request_vote`, `append_entries`, `install_snapshot`,
    /// `timeout_now`, each also with `_reply`.
    pub rpc: &'static str,
    pub from: NodeId,
    pub to: NodeId,
    /// The term the message carries.
    pub term: Term,
    /// AppendEntries: the entries it carries; InstallSnapshot: the bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// AppendEntries: `prev_log_index`; replies: the index they match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// AppendEntries: the leader's commit index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<u64>,
    /// Replies: granted or succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// RequestVote: whether it is a pre-vote.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pre_vote: bool,
}

impl Message {
    fn new(rpc: &'static str, from: NodeId, to: NodeId, term: Term) -> Message {
        Message {
            rpc,
            from,
            to,
            term,
            entries: None,
            index: None,
            commit: None,
            success: None,
            pre_vote: false,
        }
    }

    /// A request `from` sends `to`.
    pub fn request(from: NodeId, to: NodeId, request: &Request) -> Message {
        match request {
            Request::RequestVote(r) => Message {
                index: Some(r.last_log_index),
                pre_vote: r.pre_vote,
                ..Message::new("request_vote", from, to, r.term)
            },
            Request::AppendEntries(r) => Message {
                entries: Some(r.entries.len() as u64),
                index: Some(r.prev_log_index),
                commit: Some(r.leader_commit),
                ..Message::new("append_entries", from, to, r.term)
            },
            Request::InstallSnapshot(r) => Message {
                index: Some(r.snapshot.last_index),
                ..Message::new("install_snapshot", from, to, r.term)
            },
            Request::TimeoutNow(r) => Message::new("timeout_now", from, to, r.term),
        }
    }

    /// A reply `from` sends `to`.
    pub fn reply(from: NodeId, to: NodeId, reply: &Reply) -> Message {
        match reply {
            Reply::RequestVote(r) => Message {
                success: Some(r.vote_granted),
                pre_vote: r.pre_vote,
                ..Message::new("request_vote_reply", from, to, r.term)
            },
            Reply::AppendEntries(r) => Message {
                success: Some(r.success),
                index: Some(r.match_index),
                ..Message::new("append_entries_reply", from, to, r.term)
            },
            Reply::InstallSnapshot(r) => Message {
                success: Some(r.done),
                index: Some(r.last_index),
                ..Message::new("install_snapshot_reply", from, to, r.term)
            },
            Reply::TimeoutNow(r) => Message {
                success: Some(r.started),
                ..Message::new("timeout_now_reply", from, to, r.term)
            },
        }
    }

    fn text(&self, sent: bool) -> String {
        let what = self.rpc.replace('_', " ");
        let mut text = if sent {
            format!("sent {what} to node{}", self.to)
        } else {
            format!("received {what} from node{}", self.from)
        };
        if self.pre_vote {
            text.push_str(" (pre-vote)");
        }
        text.push_str(&format!(" in term {}", self.term));
        match self.entries {
            Some(0) if self.rpc == "append_entries" => text.push_str(" (heartbeat)"),
            Some(1) => text.push_str(", 1 entry"),
            Some(n) => text.push_str(&format!(", {n} entries")),
            None => {}
        }
        if let Some(s) = self.success {
            text.push_str(if s { ", yes" } else { ", no" });
        }
        text
    }
}

/// What a publisher hands the hub. Kept as built in the ring of recent
/// events, encoded only for a subscriber.
#[derive(Clone, Debug)]
enum What {
    Core(Event),
    Note(Level, String),
    Message { sent: bool, message: Message },
}

#[derive(Clone, Debug)]
struct Recorded {
    seq: u64,
    time_ms: u64,
    term: Term,
    role: Role,
    what: What,
}

/// Why a subscription was refused or ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// [`MAX_SUBSCRIBERS`] are being served.
    #[error("too many subscribers: at most {MAX_SUBSCRIBERS} at once")]
    TooManySubscribers,
    /// The subscriber fell [`QUEUE`] lines behind and was dropped.
    #[error("dropped: fell {QUEUE} events behind (reading too slowly)")]
    TooSlow,
}

struct Subscriber {
    id: u64,
    messages: bool,
    tx: Sender<Arc<Recorded>>,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    recent: VecDeque<Arc<Recorded>>,
    subscribers: Vec<Subscriber>,
    next_id: u64,
}

/// One node's publisher; see the module docs.
pub struct EventHub {
    node: NodeId,
    /// When the hub (the node) started, ms since the Unix epoch.
    started_ms: u64,
    inner: Mutex<Inner>,
    /// Subscribers that want messages: read without the lock.
    message_subscribers: AtomicUsize,
}

impl EventHub {
    pub fn new(node: NodeId) -> Arc<EventHub> {
        Arc::new(EventHub {
            node,
            started_ms: unix_millis(SystemTime::now()),
            inner: Mutex::new(Inner::default()),
            message_subscribers: AtomicUsize::new(0),
        })
    }

    /// Publishes one of the core's events, with the node's term and role
    /// after it.
    pub fn core(&self, term: Term, role: Role, event: &Event) {
        self.publish(term, role, What::Core(event.clone()), true);
    }

    /// Publishes one of the runtime's activity-log lines.
    pub fn note(&self, term: Term, role: Role, level: Level, text: String) {
        self.publish(term, role, What::Note(level, text), true);
    }

    /// When the node started, in ms since the Unix epoch.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Whether anyone wants Raft messages; ask before describing one.
    pub fn wants_messages(&self) -> bool {
        self.message_subscribers.load(Ordering::Relaxed) > 0
    }

    /// Publishes a message sent (`sent`) or received, to the subscribers
    /// that asked for messages. Not kept among the recent events.
    pub fn message(&self, term: Term, role: Role, sent: bool, message: Message) {
        if self.wants_messages() {
            self.publish(term, role, What::Message { sent, message }, false);
        }
    }

    fn publish(&self, term: Term, role: Role, what: What, keep: bool) {
        let mut inner = self.inner.lock();
        inner.seq += 1;
        let recorded = Recorded {
            seq: inner.seq,
            time_ms: unix_millis(SystemTime::now()),
            term,
            role,
            what,
        };
        let recorded = Arc::new(recorded);
        if !inner.subscribers.is_empty() {
            // Encoded by each subscriber's own thread, not here: the
            // publisher holds the node's lock.
            let is_message = matches!(recorded.what, What::Message { .. });
            let mut slow = Vec::new();
            for s in &inner.subscribers {
                if is_message && !s.messages {
                    continue;
                }
                match s.tx.try_send(recorded.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => slow.push(s.id),
                    // Its stream ended; `unsubscribe` is on its way.
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
            // Dropping its sender ends its stream once it has read what
            // was queued.
            for id in slow {
                self.remove(&mut inner, id);
            }
        }
        if keep {
            if inner.recent.len() == RECENT {
                inner.recent.pop_front();
            }
            inner.recent.push_back(recorded);
        }
    }

    /// The recent events, oldest first.
    pub fn recent(&self) -> Vec<NodeEvent> {
        let inner = self.inner.lock();
        inner.recent.iter().map(|r| self.build(r)).collect()
    }

    /// Subscribes: the recent events (if `recent`), then every new one,
    /// and Raft messages too if `messages`.
    pub fn subscribe(
        self: &Arc<Self>,
        recent: bool,
        messages: bool,
    ) -> Result<Subscription, StreamError> {
        let mut inner = self.inner.lock();
        if inner.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(StreamError::TooManySubscribers);
        }
        let (tx, rx) = bounded(QUEUE);
        let backlog = if recent {
            inner.recent.iter().cloned().collect()
        } else {
            VecDeque::new()
        };
        let id = inner.next_id;
        inner.next_id += 1;
        inner.subscribers.push(Subscriber { id, messages, tx });
        if messages {
            self.message_subscribers.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Subscription {
            hub: self.clone(),
            id,
            backlog,
            rx,
        })
    }

    fn remove(&self, inner: &mut Inner, id: u64) {
        if let Some(k) = inner.subscribers.iter().position(|s| s.id == id) {
            let s = inner.subscribers.swap_remove(k);
            if s.messages {
                self.message_subscribers.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// How many subscribers are being served.
    pub fn subscribers(&self) -> usize {
        self.inner.lock().subscribers.len()
    }

    fn build(&self, r: &Recorded) -> NodeEvent {
        let (level, kind, text, detail) = match &r.what {
            What::Core(event) => {
                let (level, text) = crate::activity::describe(event);
                let (kind, detail) = fields::fields(event);
                (level.as_str().to_lowercase(), kind.into(), text, detail)
            }
            What::Note(level, text) => (
                level.as_str().to_lowercase(),
                "note".into(),
                text.clone(),
                Map::new(),
            ),
            What::Message { sent, message } => {
                let detail = match serde_json::to_value(message) {
                    Ok(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                let kind = if *sent {
                    "message_sent"
                } else {
                    "message_received"
                };
                ("debug".into(), kind.into(), message.text(*sent), detail)
            }
        };
        NodeEvent {
            node: self.node,
            seq: r.seq,
            time_ms: r.time_ms,
            level,
            term: r.term,
            role: r.role.to_string().to_lowercase(),
            kind,
            text,
            detail,
        }
    }

    /// The event as a line of the stream (a `Response::Event`).
    fn encode(&self, r: &Recorded) -> String {
        let response = crate::wire::Response::Event(Box::new(self.build(r)));
        serde_json::to_string(&response).expect("an event always encodes")
    }
}

/// What the next call to [`Subscription::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A line to send (an encoded `Response::Event`).
    Line(Arc<str>),
    /// Nothing new before the deadline.
    Idle,
    /// The subscription ended.
    Ended(StreamError),
}

/// One subscriber's end; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<EventHub>,
    id: u64,
    backlog: VecDeque<Arc<Recorded>>,
    rx: Receiver<Arc<Recorded>>,
}

impl Subscription {
    /// The next line, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next {
        if let Some(r) = self.backlog.pop_front() {
            return Next::Line(self.hub.encode(&r).into());
        }
        match self.rx.recv_timeout(timeout) {
            Ok(r) => Next::Line(self.hub.encode(&r).into()),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            // Only the hub drops the sender, when it drops us as too slow.
            Err(RecvTimeoutError::Disconnected) => Next::Ended(StreamError::TooSlow),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.hub.inner.lock();
        self.hub.remove(&mut inner, self.id);
    }
}

pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elected(hub: &EventHub, term: Term) {
        hub.core(
            term,
            Role::Leader,
            &Event::ElectionWon {
                term,
                votes: 2,
                cluster_size: 3,
            },
        );
    }

    fn event(line: &str) -> NodeEvent {
        match serde_json::from_str(line).unwrap() {
            crate::wire::Response::Event(e) => *e,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn a_core_event_streams_with_its_fields_kind_and_activity_line() {
        let hub = EventHub::new(3);
        let mut sub = hub.subscribe(false, false).unwrap();
        elected(&hub, 7);
        let Next::Line(line) = sub.next(Duration::ZERO) else {
            panic!("no line")
        };
        let e = event(&line);
        assert_eq!((e.node, e.seq, e.term), (3, 1, 7));
        assert_eq!(
            (e.role.as_str(), e.kind.as_str()),
            ("leader", "election_won")
        );
        assert_eq!(e.text, "election won for term 7 with 2 of 3 votes");
        assert_eq!(e.detail["votes"], 2);
        assert_eq!(e.level, "info");
        assert!(
            e.line()
                .ends_with("node3 [T7 leader] election won for term 7 with 2 of 3 votes")
        );
        assert_eq!(sub.next(Duration::ZERO), Next::Idle);
    }

    #[test]
    fn durations_and_refusal_reasons_are_plain_fields() {
        let hub = EventHub::new(0);
        hub.core(
            4,
            Role::Follower,
            &Event::VoteRefused {
                candidate: 2,
                term: 5,
                pre_vote: true,
                reason: crate::consensus::VoteRefusal::LeaderLease {
                    leader: 1,
                    heard_ago: Duration::from_millis(12),
                },
            },
        );
        let e = &hub.recent()[0];
        assert_eq!(e.kind, "vote_refused");
        assert_eq!(e.detail["reason"]["leader_lease"]["heard_ago_ms"], 12);
        assert_eq!(e.detail["pre_vote"], true);
    }

    #[test]
    fn a_new_subscriber_gets_the_recent_events_first_and_the_ring_is_bounded() {
        let hub = EventHub::new(1);
        for t in 1..=(RECENT as u64 + 5) {
            elected(&hub, t);
        }
        let mut sub = hub.subscribe(true, false).unwrap();
        let Next::Line(first) = sub.next(Duration::ZERO) else {
            panic!()
        };
        assert_eq!(event(&first).term, 6, "the oldest kept");
        for _ in 1..RECENT {
            assert!(matches!(sub.next(Duration::ZERO), Next::Line(_)));
        }
        assert_eq!(sub.next(Duration::ZERO), Next::Idle);
    }

    #[test]
    fn messages_go_only_to_who_asked_and_only_when_someone_did() {
        let hub = EventHub::new(0);
        let m = Message {
            rpc: "append_entries",
            from: 0,
            to: 2,
            term: 3,
            entries: Some(4),
            index: Some(9),
            commit: Some(8),
            success: None,
            pre_vote: false,
        };
        assert!(!hub.wants_messages());
        hub.message(3, Role::Leader, true, m.clone());
        let mut plain = hub.subscribe(false, false).unwrap();
        let mut debug = hub.subscribe(false, true).unwrap();
        assert!(hub.wants_messages());
        hub.message(3, Role::Leader, true, m);
        assert_eq!(plain.next(Duration::ZERO), Next::Idle);
        let Next::Line(line) = debug.next(Duration::ZERO) else {
            panic!()
        };
        let e = event(&line);
        assert_eq!(e.kind, "message_sent");
        assert_eq!(e.text, "sent append entries to node2 in term 3, 4 entries");
        assert_eq!(e.detail["to"], 2);
        assert!(hub.recent().is_empty(), "messages are not kept");
        drop(debug);
        assert!(!hub.wants_messages());
    }

    #[test]
    fn a_slow_subscriber_is_dropped_and_told_why_without_blocking_the_node() {
        let hub = EventHub::new(0);
        let mut slow = hub.subscribe(false, false).unwrap();
        let mut fast = hub.subscribe(false, false).unwrap();
        for t in 0..QUEUE as u64 {
            elected(&hub, t);
            assert!(matches!(fast.next(Duration::ZERO), Next::Line(_)));
        }
        assert_eq!(hub.subscribers(), 2);
        elected(&hub, 1); // one too many for `slow`, which never read
        assert_eq!(hub.subscribers(), 1);
        assert!(matches!(fast.next(Duration::ZERO), Next::Line(_)));
        // `slow` still gets what was queued, then the reason.
        for _ in 0..QUEUE {
            assert!(matches!(slow.next(Duration::ZERO), Next::Line(_)));
        }
        assert_eq!(slow.next(Duration::ZERO), Next::Ended(StreamError::TooSlow));
    }

    #[test]
    fn subscribers_are_bounded_and_a_dropped_one_frees_its_place() {
        let hub = EventHub::new(0);
        let mut subs: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| hub.subscribe(true, false).unwrap())
            .collect();
        assert_eq!(
            hub.subscribe(true, false).err(),
            Some(StreamError::TooManySubscribers)
        );
        subs.pop();
        assert!(hub.subscribe(true, false).is_ok());
    }
}
