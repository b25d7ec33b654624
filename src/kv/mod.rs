//! The replicated key-value state machine.
//!
//! Every node applies the same committed entries in the same order to its
//! own [`KvStore`], so every node holds the same map for the same log
//! prefix. Nothing here reads a clock or a random number: everything,
//! session expiry included, is decided by the log alone.
//!
//! A client command travels in a log entry's `data` as JSON, e.g.
//! `{"client":7301,"seq":3,"op":"cas","key":"color","from":"blue","to":"green"}`.
//!
//! **Exactly once** (Raft thesis §6.3). Each client has an id and numbers
//! its commands 1, 2, 3, … with one outstanding at a time. The store keeps,
//! per client, the last sequence number applied and its outcome. A command
//! whose number was already applied is not applied again: its recorded
//! outcome is the answer, so a client may retry freely. Sessions are kept
//! for the [`MAX_SESSIONS`] most recently active clients; when a new one
//! would exceed that, the least recently active (by log index) is dropped.
//! A command from an unknown client with a number above 1 gets
//! [`Outcome::SessionExpired`] and is not applied: its session is gone (or
//! its first command never committed), so whether an earlier attempt was
//! applied can no longer be told. The outcome is recorded, so a retry gets
//! the same answer and the client's next number is applied normally.

pub mod feed;
mod shards;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::consensus::{Entry, Index, Json, Payload, Term};

/// Sessions kept; see the module docs.
pub const MAX_SESSIONS: usize = 10_000;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Longest value (or `append` data), in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

pub type ClientId = u64;

/// What a command does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Sets `key` to `to` if its value is `from`.
    Cas {
        key: String,
        from: String,
        to: String,
    },
    /// A data entry: kept in the log, changes no key (the courses'
    /// "list of strings" log).
    Append {
        data: String,
    },
    /// Removes every key starting with `prefix` ("" for all), in one
    /// entry: all or none of them, at one index.
    DeletePrefix {
        prefix: String,
    },
}

impl Op {
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => Some(key),
            Op::Append { .. } | Op::DeletePrefix { .. } => None,
        }
    }

    /// Checks the size limits; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, s: &str, max: usize| {
            if s.len() > max {
                Err(format!("{name} is {} bytes; the limit is {max}", s.len()))
            } else {
                Ok(())
            }
        };
        match self {
            Op::Put { key, value } => {
                check("key", key, MAX_KEY_BYTES).and(check("value", value, MAX_VALUE_BYTES))
            }
            Op::Delete { key } => check("key", key, MAX_KEY_BYTES),
            Op::Cas { key, from, to } => check("key", key, MAX_KEY_BYTES)
                .and(check("from", from, MAX_VALUE_BYTES))
                .and(check("to", to, MAX_VALUE_BYTES)),
            Op::Append { data } => check("data", data, MAX_VALUE_BYTES),
            Op::DeletePrefix { prefix } => check("prefix", prefix, MAX_KEY_BYTES),
        }
    }
}

/// A client's numbered command, as stored in a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub client: ClientId,
    pub seq: u64,
    #[serde(flatten)]
    pub op: Op,
}

impl Command {
    /// The command as a log entry holds it.
    pub fn encode(&self) -> Json {
        Json::of(self).expect("commands always serialize")
    }

    /// The command in a log entry, if it holds one.
    pub fn decode(data: &Json) -> Option<Command> {
        serde_json::from_str(data.text()).ok()
    }
}

/// What applying a command entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub command: Command,
    pub outcome: Outcome,
    /// The keys it changed, with their new values (`None`: deleted), for
    /// watchers (`feed`).
    pub changes: Vec<KeyChange>,
    /// The command's number had been applied already: nothing changed,
    /// and `outcome` is the first application's.
    pub duplicate: bool,
}

/// One key changed by a command: its new value, or `None` if deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The result of applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Applied. For `delete`, the key existed.
    Ok,
    /// `delete` of a key that does not exist: nothing changed.
    NotFound,
    /// `cas` whose `from` did not match: nothing changed. `actual` is the
    /// value found (`None`: no such key).
    PreconditionFailed { actual: Option<String> },
    /// See the module docs: not applied.
    SessionExpired,
    /// `delete_prefix`: how many keys it removed.
    Deleted { count: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_seq: u64,
    outcome: Outcome,
    /// Log index where the client's last command was applied; also its
    /// recency, for eviction.
    last_index: Index,
}

/// The state machine of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    /// Copy-on-write by shard, so that a snapshot copies it in
    /// microseconds (see [`shards`]).
    data: shards::ShardedMap,
    sessions: HashMap<ClientId, Session>,
    /// Recency order of sessions: last_index → client.
    by_recency: BTreeMap<Index, ClientId>,
    applied: Index,
    /// The term of the entry at `applied` (0 before any), which names a
    /// snapshot's last entry.
    applied_term: Term,
}

/// The first line of a snapshot: what it covers and how many lines of
/// each kind follow.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    applied_index: Index,
    applied_term: Term,
    sessions: usize,
    keys: usize,
}

/// A session as a snapshot line.
#[derive(Serialize, Deserialize)]
struct SessionLine {
    client: ClientId,
    #[serde(flatten)]
    session: Session,
}

/// A snapshot that cannot be read back: the line (1-based) and why.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct SnapshotError {
    pub line: usize,
    pub reason: String,
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// Keys from `from` (inclusive) to `to` (exclusive, or the end), that
    /// start with `prefix`, in key order, at most `limit`; and whether
    /// more follow (see `shards::ShardedMap::range`).
    pub fn range(
        &self,
        from: &str,
        to: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> (Vec<(&str, &str)>, bool) {
        let (found, more) = self.data.range(from, to, prefix, limit);
        let found = found
            .into_iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        (found, more)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Every key and its value (shard by shard; see `shards`).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.data.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The term of the last entry applied.
    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// Writes the whole state (keys, client sessions, and the last entry
    /// applied) as a snapshot: JSON lines, readable with `head` and `jq`.
    ///
    /// ```text
    /// {"applied_index":1200,"applied_term":3,"sessions":1,"keys":2}
    /// {"client":7301,"last_seq":3,"outcome":{"outcome":"ok"},"last_index":1187}
    /// ["color","green"]
    /// ["size","9"]
    /// ```
    ///
    /// Sessions are in client order and keys grouped by a fixed hash, in
    /// key order within each group, so equal stores write equal bytes (the
    /// simulation compares them). Sessions go
    /// in the snapshot because exactly-once must survive compaction: a
    /// retry after a restart from the snapshot still finds its outcome.
    pub fn write_snapshot(&self, out: &mut impl Write) -> io::Result<()> {
        let header = SnapshotHeader {
            applied_index: self.applied,
            applied_term: self.applied_term,
            sessions: self.sessions.len(),
            keys: self.data.len(),
        };
        serde_json::to_writer(&mut *out, &header)?;
        out.write_all(b"\n")?;
        let mut clients: Vec<(&ClientId, &Session)> = self.sessions.iter().collect();
        clients.sort_unstable_by_key(|(c, _)| **c);
        for (&client, session) in clients {
            let line = SessionLine {
                client,
                session: session.clone(),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        for pair in self.data.iter() {
            serde_json::to_writer(&mut *out, &pair)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The snapshot as a string (small stores, tests, the simulation).
    pub fn snapshot_text(&self) -> String {
        let mut out = Vec::new();
        self.write_snapshot(&mut out)
            .expect("writing to memory cannot fail");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Reads back what [`KvStore::write_snapshot`] wrote. Every line must
    /// parse and the counts must match the header: a snapshot cut short or
    /// damaged is an error, never a smaller store.
    pub fn read_snapshot(input: impl BufRead) -> Result<KvStore, SnapshotError> {
        // One buffer for every line: a million keys, a million lines.
        struct Lines<R> {
            input: R,
            buf: Vec<u8>,
            line: usize,
        }
        impl<R: BufRead> Lines<R> {
            fn next(&mut self, what: &str) -> Result<(usize, &[u8]), SnapshotError> {
                self.buf.clear();
                self.line += 1;
                let line = self.line;
                let n = self
                    .input
                    .read_until(b'\n', &mut self.buf)
                    .map_err(|e| SnapshotError {
                        line,
                        reason: e.to_string(),
                    })?;
                if n == 0 {
                    return Err(SnapshotError {
                        line,
                        reason: format!("ends early: {what} missing"),
                    });
                }
                if self.buf.last() == Some(&b'\n') {
                    self.buf.pop();
                }
                Ok((line, &self.buf[..]))
            }
        }
        let mut lines = Lines {
            input,
            buf: Vec::new(),
            line: 0,
        };
        fn parse<T: serde::de::DeserializeOwned>(
            lines: &mut Lines<impl BufRead>,
            what: &str,
        ) -> Result<T, SnapshotError> {
            let (line, text) = lines.next(what)?;
            serde_json::from_slice(text).map_err(|e| SnapshotError {
                line,
                reason: e.to_string(),
            })
        }
        let header: SnapshotHeader = parse(&mut lines, "the header")?;
        let mut kv = KvStore {
            applied: header.applied_index,
            applied_term: header.applied_term,
            ..KvStore::default()
        };
        for _ in 0..header.sessions {
            let SessionLine { client, session } = parse(&mut lines, "a session")?;
            kv.by_recency.insert(session.last_index, client);
            kv.sessions.insert(client, session);
        }
        for _ in 0..header.keys {
            let (key, value): (String, String) = parse(&mut lines, "a key")?;
            kv.data.insert(key, value);
        }
        if let Ok((line, _)) = lines.next("") {
            return Err(SnapshotError {
                line,
                reason: "more lines than the header counts".into(),
            });
        }
        if kv.sessions.len() != header.sessions || kv.data.len() != header.keys {
            return Err(SnapshotError {
                line: 1,
                reason: "a client or key appears twice".into(),
            });
        }
        Ok(kv)
    }

    /// The outcome of client `client`'s command `seq` and the log index it
    /// was applied at, if that is the last command applied for the client.
    pub fn outcome(&self, client: ClientId, seq: u64) -> Option<(&Outcome, Index)> {
        self.sessions
            .get(&client)
            .filter(|s| s.last_seq == seq)
            .map(|s| (&s.outcome, s.last_index))
    }

    /// The highest sequence number applied for `client`, if it has a session.
    pub fn last_seq(&self, client: ClientId) -> Option<u64> {
        self.sessions.get(&client).map(|s| s.last_seq)
    }

    /// Applies the next committed entry. Entries must come in log order,
    /// each once. Returns what happened, for client command entries.
    pub fn apply(&mut self, entry: &Entry) -> Option<Applied> {
        assert_eq!(
            entry.index,
            self.applied + 1,
            "entries are applied in order, once each"
        );
        self.applied = entry.index;
        self.applied_term = entry.term;
        let Payload::Command(data) = &entry.payload else {
            return None;
        };
        // Entries that are not commands (written by an older client, or by
        // hand) change nothing; every node skips them alike.
        let command = Command::decode(data)?;
        let (outcome, duplicate, changes) = self.apply_command(entry.index, &command);
        Some(Applied {
            command,
            outcome,
            duplicate,
            changes,
        })
    }

    /// Applies `c` unless its number was applied already; returns the
    /// outcome and whether it was such a duplicate.
    /// The outcome, whether it was a duplicate, and the keys it changed.
    fn apply_command(&mut self, index: Index, c: &Command) -> (Outcome, bool, Vec<KeyChange>) {
        match self.sessions.get(&c.client) {
            Some(s) if c.seq <= s.last_seq => {
                // A retry of something applied already (or older still):
                // never apply twice. An older number than the last can only
                // come from a confused client; it gets the last outcome.
                return (s.outcome.clone(), true, Vec::new());
            }
            None if c.seq > 1 => {
                // Recorded, so the waiting request (and any retry) gets
                // this answer; the client must start a new session.
                self.record(c.client, c.seq, Outcome::SessionExpired, index);
                return (Outcome::SessionExpired, false, Vec::new());
            }
            _ => {}
        }
        let set = |key: &str, value: Option<&str>| KeyChange {
            key: key.to_string(),
            value: value.map(str::to_string),
        };
        let (outcome, changes) = match &c.op {
            Op::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                (Outcome::Ok, vec![set(key, Some(value))])
            }
            Op::Delete { key } => match self.data.remove(key) {
                Some(_) => (Outcome::Ok, vec![set(key, None)]),
                None => (Outcome::NotFound, Vec::new()),
            },
            Op::Cas { key, from, to } => match self.data.get_mut(key) {
                Some(v) if v == from => {
                    *v = to.clone();
                    (Outcome::Ok, vec![set(key, Some(to))])
                }
                other => {
                    let actual = other.map(|v| v.clone());
                    (Outcome::PreconditionFailed { actual }, Vec::new())
                }
            },
            Op::Append { .. } => (Outcome::Ok, Vec::new()),
            Op::DeletePrefix { prefix } => {
                let (found, _) = self.data.range(prefix, None, prefix, usize::MAX);
                let keys: Vec<String> = found.into_iter().map(|(k, _)| k.clone()).collect();
                for key in &keys {
                    self.data.remove(key);
                }
                let count = keys.len() as u64;
                let changes = keys.iter().map(|k| set(k, None)).collect();
                (Outcome::Deleted { count }, changes)
            }
        };
        self.record(c.client, c.seq, outcome.clone(), index);
        (outcome, false, changes)
    }

    fn record(&mut self, client: ClientId, seq: u64, outcome: Outcome, index: Index) {
        if let Some(old) = self.sessions.insert(
            client,
            Session {
                last_seq: seq,
                outcome,
                last_index: index,
            },
        ) {
            self.by_recency.remove(&old.last_index);
        }
        self.by_recency.insert(index, client);
        while self.sessions.len() > MAX_SESSIONS {
            let (_, oldest) = self
                .by_recency
                .pop_first()
                .expect("sessions and recency agree");
            self.sessions.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, client: ClientId, seq: u64, op: Op) -> Entry {
        Entry {
            index,
            term: 1,
            payload: Payload::Command(Command { client, seq, op }.encode()),
        }
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn delete_prefix_removes_exactly_the_keys_with_it_once() {
        let mut kv = KvStore::new();
        let keys = ["app", "app/1", "app/2", "apple", "b", "ap"];
        for (i, k) in keys.iter().enumerate() {
            kv.apply(&entry(i as Index + 1, 1, i as u64 + 1, put(k, "v")));
        }
        let op = Op::DeletePrefix {
            prefix: "app".into(),
        };
        let applied = kv.apply(&entry(7, 2, 1, op.clone())).unwrap();
        assert_eq!(applied.outcome, Outcome::Deleted { count: 4 });
        let (left, _) = kv.range("", None, "", 100);
        let left: Vec<&str> = left.into_iter().map(|(k, _)| k).collect();
        assert_eq!(left, ["ap", "b"]);
        // The same command again (a retry) is answered, not applied again.
        kv.apply(&entry(8, 1, 7, put("app/3", "v")));
        let again = kv.apply(&entry(9, 2, 1, op)).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.outcome, Outcome::Deleted { count: 4 });
        assert_eq!(kv.get("app/3"), Some("v"));
    }

    #[test]
    fn a_snapshot_restores_keys_sessions_and_the_applied_entry() {
        let mut kv = KvStore::new();
        kv.apply(&entry(1, 7, 1, put("b", "2\nwith a newline")));
        kv.apply(&entry(2, 3, 1, put("a", "1")));
        kv.apply(&Entry {
            index: 3,
            term: 2,
            payload: Payload::Noop,
        });
        let text = kv.snapshot_text();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"applied_index":3,"applied_term":2,"sessions":2,"keys":2}"#
        );
        assert_eq!(text.lines().count(), 5, "one line each: {text}");
        let back = KvStore::read_snapshot(text.as_bytes()).unwrap();
        assert_eq!(back, kv);
        assert_eq!(back.snapshot_text(), text, "equal stores, equal bytes");
        // Exactly-once survives: a retry of client 7's first command is
        // recognised, not applied again.
        let mut back = back;
        let retry = back.apply(&entry(4, 7, 1, put("b", "other"))).unwrap();
        assert!(retry.duplicate);
        assert_eq!(back.get("b"), Some("2\nwith a newline"));
    }

    #[test]
    fn a_damaged_or_short_snapshot_is_an_error_naming_the_line() {
        let mut kv = KvStore::new();
        kv.apply(&entry(1, 7, 1, put("k", "v")));
        let text = kv.snapshot_text();
        let short: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        let err = KvStore::read_snapshot(short.as_bytes()).unwrap_err();
        assert!(err.reason.contains("ends early"), "{err}");
        let bad = text.replace(r#"["k","v"]"#, r#"["k",5]"#);
        assert_eq!(KvStore::read_snapshot(bad.as_bytes()).unwrap_err().line, 3);
        let extra = format!("{text}[\"x\",\"y\"]\n");
        assert!(KvStore::read_snapshot(extra.as_bytes()).is_err());
    }

    #[test]
    fn put_get_delete_cas() {
        let mut kv = KvStore::new();
        assert_eq!(
            kv.apply(&entry(1, 1, 1, put("color", "blue")))
                .unwrap()
                .outcome,
            Outcome::Ok
        );
        assert_eq!(kv.get("color"), Some("blue"));
        let cas = |from: &str, to: &str| Op::Cas {
            key: "color".into(),
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(
            kv.apply(&entry(2, 1, 2, cas("red", "green")))
                .unwrap()
                .outcome,
            Outcome::PreconditionFailed {
                actual: Some("blue".into())
            }
        );
        assert_eq!(
            kv.apply(&entry(3, 1, 3, cas("blue", "green")))
                .unwrap()
                .outcome,
            Outcome::Ok
        );
        assert_eq!(kv.get("color"), Some("green"));
        assert_eq!(
            kv.apply(&entry(
                4,
                1,
                4,
                Op::Delete {
                    key: "color".into()
                }
            ))
            .unwrap()
            .outcome,
            Outcome::Ok
        );
        assert_eq!(
            kv.apply(&entry(
                5,
                1,
                5,
                Op::Delete {
                    key: "color".into()
                }
            ))
            .unwrap()
            .outcome,
            Outcome::NotFound
        );
        assert_eq!(
            kv.apply(&entry(6, 1, 6, cas("x", "y"))).unwrap().outcome,
            Outcome::PreconditionFailed { actual: None }
        );
        assert_eq!(
            kv.apply(&entry(
                7,
                1,
                7,
                Op::Append {
                    data: "SET 5".into()
                }
            ))
            .unwrap()
            .outcome,
            Outcome::Ok
        );
        assert!(kv.is_empty());
    }

    #[test]
    fn thesis_6_3_a_retried_command_applies_once_and_gets_the_first_outcome() {
        let mut kv = KvStore::new();
        let cas = Op::Cas {
            key: "k".into(),
            from: "a".into(),
            to: "b".into(),
        };
        kv.apply(&entry(1, 9, 1, put("k", "a")));
        assert_eq!(
            kv.apply(&entry(2, 9, 2, cas.clone())).unwrap().outcome,
            Outcome::Ok
        );
        // The same command committed again (a retry after a lost reply):
        // applying it again would fail the precondition; it must not run.
        let again = kv.apply(&entry(3, 9, 2, cas)).unwrap();
        assert_eq!((again.outcome, again.duplicate), (Outcome::Ok, true));
        assert_eq!(kv.get("k"), Some("b"));
        assert_eq!(
            kv.outcome(9, 2),
            Some((&Outcome::Ok, 2)),
            "the index of the first application"
        );
        // An append retried is kept in the log twice but applied once.
        kv.apply(&entry(4, 9, 3, put("n", "1")));
        kv.apply(&entry(5, 9, 3, put("n", "2")));
        assert_eq!(kv.get("n"), Some("1"));
    }

    #[test]
    fn an_unknown_client_above_seq_1_is_told_its_session_expired() {
        let mut kv = KvStore::new();
        assert_eq!(
            kv.apply(&entry(1, 5, 7, put("k", "v"))).unwrap().outcome,
            Outcome::SessionExpired
        );
        assert_eq!(kv.get("k"), None);
        assert_eq!(
            kv.outcome(5, 7),
            Some((&Outcome::SessionExpired, 1)),
            "the answer reaches the waiting client"
        );
        let retry = kv.apply(&entry(2, 5, 7, put("k", "v"))).unwrap();
        assert_eq!(
            (retry.outcome, retry.duplicate),
            (Outcome::SessionExpired, true)
        );
        assert_eq!(kv.get("k"), None);
    }

    #[test]
    fn the_least_recently_active_session_is_evicted_deterministically() {
        let mut a = KvStore::new();
        for i in 0..=MAX_SESSIONS as u64 {
            a.apply(&entry(i + 1, 1000 + i, 1, put("k", "v")));
        }
        // Client 1000 was the least recently active: its session is gone.
        assert_eq!(a.last_seq(1000), None);
        assert_eq!(a.last_seq(1001), Some(1));
        let next = MAX_SESSIONS as u64 + 2;
        assert_eq!(
            a.apply(&entry(next, 1000, 2, put("k", "w")))
                .unwrap()
                .outcome,
            Outcome::SessionExpired
        );
    }

    #[test]
    fn same_log_same_state_on_every_node() {
        let log: Vec<Entry> = (1..=200)
            .map(|i| {
                entry(
                    i,
                    i % 7,
                    i / 7 + 1,
                    put(&format!("k{}", i % 13), &format!("v{i}")),
                )
            })
            .collect();
        let mut a = KvStore::new();
        let mut b = KvStore::new();
        for e in &log {
            a.apply(e);
        }
        for e in &log {
            b.apply(e);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn non_command_entries_change_nothing() {
        let mut kv = KvStore::new();
        assert!(
            kv.apply(&Entry {
                index: 1,
                term: 1,
                payload: Payload::Noop
            })
            .is_none()
        );
        assert!(
            kv.apply(&Entry {
                index: 2,
                term: 1,
                payload: Payload::Command(Json::string("SET 5"))
            })
            .is_none()
        );
        assert_eq!(kv.applied_index(), 2);
    }

    #[test]
    fn limits_name_the_field() {
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        let err = put("k", &big).validate().unwrap_err();
        assert!(err.starts_with("value is"), "{err}");
        let err = Op::Delete {
            key: "k".repeat(MAX_KEY_BYTES + 1),
        }
        .validate()
        .unwrap_err();
        assert!(err.starts_with("key is"), "{err}");
    }

    #[test]
    fn commands_are_readable_json() {
        let c = Command {
            client: 7,
            seq: 3,
            op: put("color", "blue"),
        };
        assert_eq!(
            c.encode().text(),
            r#"{"client":7,"seq":3,"op":"put","key":"color","value":"blue"}"#
        );
        assert_eq!(Command::decode(&c.encode()), Some(c));
    }
}
