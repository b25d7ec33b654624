//! The Raft RPCs (Figure 2's two, Figure 13's InstallSnapshot, and the
//! thesis's TimeoutNow for leadership transfer) and the log entry they
//! carry.
//!
//! These types are plain data: the wire module serializes them as JSON and
//! the storage module writes [`Entry`] records to disk, so a field renamed
//! here changes the protocol and the on-disk format.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::membership::Membership;

/// A server's id, as given in the cluster configuration (`node4` is 4).
pub type NodeId = u64;
/// A Raft term (§5.1). Term 0 exists only before the first election.
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;

/// What a log entry asks the state machine to do.
///
/// On disk and on the wire: `{"kind":"noop"}`,
/// `{"kind":"membership","membership":{"servers":{…},…}}`, or
/// `{"kind":"command","command":<any JSON value>}` with the command nested
/// as JSON, so `log.jsonl` reads with `jq` and nothing is escaped twice.
/// Logs written before this format hold `{"kind":"data","data":"<text>"}`,
/// the command as a JSON string; they still open: text that is valid JSON
/// becomes that value (every key-value command was), any other text a JSON
/// string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Appended by every new leader (§5.4.2, thesis §6.4): committing an
    /// entry of its own term is what lets it commit everything before it.
    Noop,
    /// A command from a client, opaque to Raft, applied in log order.
    Command(Json),
    /// The cluster's membership from this entry on (thesis §4.1: in
    /// force once appended, committed or not).
    Membership(Membership),
}

/// Reads a payload's fields in any order, without buffering the object
/// first as serde's `kind`-tagged enums do (every field of every entry of
/// an AppendEntries was copied into an intermediate tree, then the
/// command re-encoded from it). The command and a membership are read as
/// their JSON text; a membership is then decoded from it (rare: once per
/// change).
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        deserializer.deserialize_map(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a payload: {"kind":"noop"|"command"|"membership",…}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
        use serde::de::Error;
        fn once<T, E: Error>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), E> {
            if slot.replace(v).is_some() {
                return Err(E::duplicate_field(name));
            }
            Ok(())
        }
        let (mut kind, mut command, mut membership, mut data) = (
            None::<std::borrow::Cow<'de, str>>,
            None::<Json>,
            None::<Json>,
            None::<String>,
        );
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "kind" => once(&mut kind, "kind", map.next_value()?)?,
                "command" => once(&mut command, "command", map.next_value()?)?,
                "membership" => once(&mut membership, "membership", map.next_value()?)?,
                "data" => once(&mut data, "data", map.next_value()?)?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
        match &*kind {
            "noop" => Ok(Payload::Noop),
            "command" => command
                .map(Payload::Command)
                .ok_or_else(|| A::Error::missing_field("command")),
            "membership" => {
                let text = membership.ok_or_else(|| A::Error::missing_field("membership"))?;
                serde_json::from_str(text.text())
                    .map(Payload::Membership)
                    .map_err(A::Error::custom)
            }
            // The format before commands were nested (see [`Payload`]).
            "data" => {
                let data = data.ok_or_else(|| A::Error::missing_field("data"))?;
                Ok(Payload::Command(
                    Json::parse(&data).unwrap_or_else(|_| Json::string(&data)),
                ))
            }
            other => Err(A::Error::unknown_variant(
                other,
                &["noop", "command", "membership", "data"],
            )),
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Noop => {
                let mut s = serializer.serialize_struct("Payload", 1)?;
                s.serialize_field("kind", "noop")?;
                s.end()
            }
            Payload::Command(command) => {
                let mut s = serializer.serialize_struct("Payload", 2)?;
                s.serialize_field("kind", "command")?;
                s.serialize_field("command", command)?;
                s.end()
            }
            Payload::Membership(membership) => {
                let mut s = serializer.serialize_struct("Payload", 2)?;
                s.serialize_field("kind", "membership")?;
                s.serialize_field("membership", membership)?;
                s.end()
            }
        }
    }
}

/// A JSON value kept as its compact text: written out verbatim, compared
/// and hashed as text, and parsed only by the state machine that applies
/// it. Whatever the input's layout, the text holds no whitespace between
/// tokens, so it never contains a line break (a log line and a wire
/// message are one line each).
#[derive(Clone, Debug)]
pub struct Json(Box<RawValue>);

impl Json {
    /// Parses `text` as one JSON value.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// `value` serialized as JSON.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Json, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Json)
    }

    /// `s` as a JSON string value.
    pub fn string(s: &str) -> Json {
        Json(serde_json::value::to_raw_value(s).expect("a string always serializes"))
    }

    /// The value's compact JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// `text` as it is, if it is one JSON value without whitespace between
    /// tokens (as [`Json::text`] always is); `None` otherwise, and the
    /// caller parses it the general way, which compacts it.
    fn from_compact(text: &str) -> Option<Json> {
        // Most texts hold no byte at or below a space at all (a quick
        // check); only those that do need the scan for whitespace outside
        // strings.
        let (mut in_string, mut escaped) = (false, false);
        let quick = text.as_bytes().iter().all(|&b| b > b' ');
        for &b in text.as_bytes().iter().filter(|_| !quick) {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
            } else if b == b'"' {
                in_string = true;
            } else if b.is_ascii_whitespace() {
                return None;
            }
        }
        RawValue::from_string(text.to_string()).ok().map(Json)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.text() == other.text()
    }
}

impl Eq for Json {}

impl std::hash::Hash for Json {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text().hash(state)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Re-encodes whatever value the deserializer holds as compact JSON text.
///
/// `RawValue`'s own `Deserialize` would be cheaper (it copies the input
/// bytes), but it works only straight off serde_json's parser, and our
/// messages reach their fields through serde's buffering (the wire's
/// `type`-tagged enums, `flatten`, the payload's `kind` tag), where it
/// fails. Transcoding works behind any deserializer.
impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        // Room for a typical command at once, not grown a byte at a time
        // (the text is boxed to its size below).
        let mut text = Vec::with_capacity(256);
        deserializer.deserialize_any(Transcode(&mut text))?;
        // What `Transcode` wrote is valid JSON by construction; these are
        // the checks of the constructors (`RawValue` has no unchecked one).
        let text = String::from_utf8(text).map_err(serde::de::Error::custom)?;
        RawValue::from_string(text)
            .map(Json)
            .map_err(serde::de::Error::custom)
    }
}

/// Writes the visited value into its string as compact JSON.
struct Transcode<'a>(&'a mut Vec<u8>);

impl Transcode<'_> {
    /// Writes a number or string as serde_json writes it (escaped).
    fn push<T: Serialize + ?Sized>(self, v: &T) {
        serde_json::to_writer(&mut *self.0, v).expect("scalars always serialize");
    }
}

impl<'de> DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.push(&v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.push(&v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.push(&v);
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(E::custom("a JSON number must be finite"));
        }
        self.push(&v);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.push(v);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let at = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Transcode(self.0))?.is_none() {
                self.0.truncate(at);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.push(b'{');
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !first {
                self.0.push(b',');
            }
            first = false;
            Transcode(self.0).push(&*key);
            self.0.push(b':');
            map.next_value_seed(Transcode(self.0))?;
        }
        self.0.push(b'}');
        Ok(())
    }
}

/// One slot of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub payload: Payload,
}

impl Entry {
    /// Parses an entry from its JSON. The form this module writes,
    /// `{"index":…,"term":…,"payload":{"kind":"command","command":…}}`
    /// (or a no-op), is read directly, with the command's text kept as it
    /// is; anything else goes through serde, which reads every form that
    /// [`Payload`] accepts. Recovering a log of a million entries takes a
    /// third of the time this way.
    pub fn parse(json: &[u8]) -> Result<Entry, serde_json::Error> {
        if let Some(e) = std::str::from_utf8(json)
            .ok()
            .and_then(Entry::parse_written)
        {
            return Ok(e);
        }
        serde_json::from_slice(json)
    }

    fn parse_written(text: &str) -> Option<Entry> {
        fn number(text: &str) -> Option<(u64, &str)> {
            let end = text.find(|c: char| !c.is_ascii_digit())?;
            if end == 0 || (end > 1 && text.starts_with('0')) {
                return None;
            }
            Some((text[..end].parse().ok()?, &text[end..]))
        }
        let rest = text.strip_prefix(r#"{"index":"#)?;
        let (index, rest) = number(rest)?;
        let rest = rest.strip_prefix(r#","term":"#)?;
        let (term, rest) = number(rest)?;
        let payload = rest.strip_prefix(r#","payload":"#)?;
        let payload = if payload == r#"{"kind":"noop"}}"# {
            Payload::Noop
        } else {
            let command = payload
                .strip_prefix(r#"{"kind":"command","command":"#)?
                .strip_suffix("}}")?;
            Payload::Command(Json::from_compact(command)?)
        };
        Some(Entry {
            index,
            term,
            payload,
        })
    }

    /// Roughly how many bytes the entry takes on the wire (its data plus a
    /// fixed allowance for the rest); used to size batches.
    pub fn approx_size(&self) -> usize {
        64 + match &self.payload {
            Payload::Noop => 0,
            Payload::Command(c) => c.text().len(),
            Payload::Membership(m) => 64 * m.servers.len() + 16 * m.removed.len(),
        }
    }
}

/// RequestVote arguments (Figure 2), and the pre-vote question of thesis
/// §9.6 in the same shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    /// The term the candidate stands in. For a pre-vote, the term it
    /// *would* stand in (its own plus one): it has not taken that term.
    pub term: Term,
    pub candidate_id: NodeId,
    pub last_log_index: Index,
    pub last_log_term: Term,
    /// Thesis §9.6: only asks whether the voter would grant a vote in
    /// `term`; the voter changes nothing (term, vote, timer) answering it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pre_vote: bool,
    /// The candidate stands because the leader handed over to it (thesis
    /// §3.10, TimeoutNow): voters answer even if they heard from that
    /// leader moments ago, which they otherwise would not (the lease that
    /// CheckQuorum relies on).
    #[serde(default, skip_serializing_if = "is_false")]
    pub transfer: bool,
}

/// RequestVote results (Figure 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteReply {
    /// The voter's current term, for the candidate to update itself. A
    /// *granted pre-vote* carries the term asked about instead, which the
    /// voter has not taken and the candidate must not adopt.
    pub term: Term,
    pub vote_granted: bool,
    /// Answers a pre-vote (echoed from the request).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pre_vote: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Leadership transfer (thesis §3.10): the leader of `term` tells a
/// follower whose log it has brought up to date to start an election at
/// once, without waiting for its timer or asking a pre-vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {
    pub term: Term,
    pub leader_id: NodeId,
}

/// The answer to [`TimeoutNow`]; self-describing like the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNowReply {
    /// The follower's current term (after it started its election, one
    /// above the request's).
    pub term: Term,
    /// The term of the request this answers.
    pub request_term: Term,
    /// Whether the follower started an election.
    pub started: bool,
}

/// AppendEntries arguments (Figure 2). With no entries it is a heartbeat,
/// and it is still checked against `prev_log_index`/`prev_log_term`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    pub term: Term,
    pub leader_id: NodeId,
    pub prev_log_index: Index,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: Index,
    /// The leader's read round when it built this request (thesis §6.4).
    /// Echoed in the reply: an answer in the leader's term shows that the
    /// follower still followed it after every read of this round or an
    /// earlier one had begun. Not part of Figure 2; may be left out (0),
    /// which confirms no read.
    #[serde(default)]
    pub read_round: u64,
}

/// AppendEntries results: Figure 2's `term` and `success`, plus the
/// follower's hints that let a leader skip a whole conflicting term per
/// round trip instead of one index (§5.3, "the protocol can be optimized").
///
/// A reply is **self-describing**: it says which request it answers
/// (`request_term`, `prev_log_index`, `read_round`, echoed from it), so a
/// leader with several requests in flight to one follower (pipelining)
/// needs no record of what it sent to make sense of the answer, and an
/// answer to a request of an earlier term is recognised and dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesReply {
    /// The follower's current term, for the leader to update itself.
    pub term: Term,
    pub success: bool,
    /// On success: `prev_log_index + entries.len()`, the last index the
    /// follower now knows to match the leader. Not its last index: entries
    /// after it may still be stale.
    pub match_index: Index,
    /// On failure: the term of the follower's entry at `prev_log_index`,
    /// or `None` when the follower's log is shorter than that.
    pub conflict_term: Option<Term>,
    /// On failure: the first index the follower holds of `conflict_term`,
    /// or its last index + 1 when its log is too short.
    pub conflict_index: Index,
    /// The term of the request this answers.
    pub request_term: Term,
    /// The request's `prev_log_index`: on failure, the position whose
    /// consistency check failed.
    pub prev_log_index: Index,
    /// The request's `read_round`.
    pub read_round: u64,
}

impl AppendEntriesReply {
    /// A refusal of `req` by a server at `term`, echoing what it answers;
    /// the follower sets `success` and the rest once it knows them.
    pub fn answering(req: &AppendEntries, term: Term) -> AppendEntriesReply {
        AppendEntriesReply {
            term,
            success: false,
            match_index: 0,
            conflict_term: None,
            conflict_index: 0,
            request_term: req.term,
            prev_log_index: req.prev_log_index,
            read_round: req.read_round,
        }
    }
}

/// Names a snapshot of the state machine (§7): the last log entry it
/// covers, and the size and CRC-32 of its bytes, which Raft carries
/// without reading them. `last_index` 0 means no snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_index: Index,
    pub last_term: Term,
    pub size: u64,
    pub crc32: u32,
}

/// InstallSnapshot arguments (Figure 13), one chunk of the snapshot's
/// bytes per request so that no message outgrows the transport's line
/// limit. The bytes are text (the key-value store writes JSON lines),
/// cut at character boundaries, so a chunk travels as a JSON string.
///
/// **As [`crate::consensus::Raft::poll_peer`] returns it, `data` is
/// empty**: the core decides which snapshot and from which offset, and
/// the caller, who holds the bytes, fills in `data` with a chunk of them
/// starting at `offset` (as many as it likes, at least one unless the
/// snapshot is empty). The chunk is the last when `offset + data.len()`
/// is `snapshot.size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    pub term: Term,
    pub leader_id: NodeId,
    pub snapshot: SnapshotMeta,
    /// Where `data` starts within the snapshot's bytes; 0 starts (or
    /// restarts) a transfer.
    pub offset: u64,
    pub data: String,
    /// The membership in force at the snapshot's last entry (thesis
    /// §4.1: the snapshot carries the membership it covers), installed
    /// with it. Absent from leaders that predate memberships in the log:
    /// the receiver then keeps the latest it knows up to that index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Box<Membership>>,
}

impl InstallSnapshot {
    /// Whether this chunk completes the snapshot.
    pub fn is_last(&self) -> bool {
        self.offset + self.data.len() as u64 == self.snapshot.size
    }
}

/// InstallSnapshot results: Figure 13's `term`, plus what lets a leader
/// resume a transfer where the follower stands instead of starting over.
/// Self-describing like [`AppendEntriesReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotReply {
    pub term: Term,
    /// The term of the request this answers.
    pub request_term: Term,
    /// The request's `snapshot.last_index`.
    pub last_index: Index,
    /// How many bytes of that snapshot the follower holds: the offset of
    /// the next chunk it wants (0 to start over).
    pub next_offset: u64,
    /// The follower's log now covers `last_index`: it installed the
    /// snapshot, or it had already committed that far.
    pub done: bool,
    /// The bytes received do not match the snapshot's CRC-32: the
    /// follower dropped them all (`next_offset` is 0). Not in Figure 13;
    /// tells the leader to check its file before sending it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checksum_failed: bool,
}

/// A request one server sends another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    RequestVote(RequestVote),
    AppendEntries(AppendEntries),
    InstallSnapshot(InstallSnapshot),
    TimeoutNow(TimeoutNow),
}

/// The reply to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    RequestVote(RequestVoteReply),
    AppendEntries(AppendEntriesReply),
    InstallSnapshot(InstallSnapshotReply),
    TimeoutNow(TimeoutNowReply),
}

impl Request {
    pub fn term(&self) -> Term {
        match self {
            Request::RequestVote(r) => r.term,
            Request::AppendEntries(r) => r.term,
            Request::InstallSnapshot(r) => r.term,
            Request::TimeoutNow(r) => r.term,
        }
    }
}

impl Reply {
    pub fn term(&self) -> Term {
        match self {
            Reply::RequestVote(r) => r.term,
            Reply::AppendEntries(r) => r.term,
            Reply::InstallSnapshot(r) => r.term,
            Reply::TimeoutNow(r) => r.term,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(json: &str) -> Entry {
        Entry {
            index: 2,
            term: 1,
            payload: Payload::Command(Json::parse(json).unwrap()),
        }
    }

    #[test]
    fn a_command_is_nested_json_not_an_escaped_string() {
        let e = command(r#"{"op":"put","key":"k","value":"v \"quoted\""}"#);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"index":2,"term":1,"payload":{"kind":"command","command":{"op":"put","key":"k","value":"v \"quoted\""}}}"#
        );
        let noop = Entry {
            index: 1,
            term: 1,
            payload: Payload::Noop,
        };
        for e in [e, noop] {
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), e);
        }
    }

    #[test]
    fn the_direct_parse_reads_what_serde_writes_and_defers_the_rest() {
        let written = [
            command(r#"{"op":"put","key":"a b","value":"x \" } y\\"}"#),
            command(r#"[1,2.5,"\u00e9"]"#),
            Entry {
                index: 7,
                term: 3,
                payload: Payload::Noop,
            },
        ];
        for e in written {
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(Entry::parse_written(&text).as_ref(), Some(&e), "{text}");
            assert_eq!(Entry::parse(text.as_bytes()).unwrap(), e);
        }
        // Other layouts and forms are left to serde, which compacts.
        for other in [
            r#"{"index":2,"term":1,"payload":{"kind":"command","command":{"a": 1}}}"#,
            r#"{"term":1,"index":2,"payload":{"kind":"command","command":{"a":1}}}"#,
            r#"{"index":2,"term":1,"payload":{"kind":"data","data":"{\"a\":1}"}}"#,
            r#"{"index":02,"term":1,"payload":{"kind":"command","command":{"a":1}}}"#,
        ] {
            assert_eq!(Entry::parse_written(other), None, "{other}");
        }
        let spaced = r#"{"index":2,"term":1,"payload":{"kind":"command","command":{"a": 1}}}"#;
        assert_eq!(
            Entry::parse(spaced.as_bytes()).unwrap(),
            command(r#"{"a":1}"#)
        );
        let bad = r#"{"index":2,"term":1,"payload":{"kind":"command","command":{"a":}}}"#;
        assert!(Entry::parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn a_membership_entry_reads_back_from_its_record() {
        let m = Membership::bootstrap([(1, "a:1".to_string()), (2, "b:2".to_string())]);
        let e = Entry {
            index: 7,
            term: 2,
            payload: Payload::Membership(m),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            text.starts_with(r#"{"index":7,"term":2,"payload":{"kind":"membership","membership":{"servers":[{"id":1,"address":"a:1","suffrage":"voter"}"#),
            "{text}"
        );
        assert_eq!(Entry::parse(text.as_bytes()).unwrap(), e);
    }

    #[test]
    fn json_is_kept_compact_so_it_never_breaks_a_line() {
        let j =
            Json::parse("{ \"a\" :\n [1, 2.5, -3, true, null, \"x\\ny\"], \"b\": {} }").unwrap();
        assert_eq!(j.text(), r#"{"a":[1,2.5,-3,true,null,"x\ny"],"b":{}}"#);
        assert_eq!(Json::parse("[]").unwrap().text(), "[]");
        assert_eq!(Json::string("SET 5").text(), r#""SET 5""#);
        assert!(Json::parse("{").is_err());
        assert!(Json::parse("1 2").is_err());
    }

    #[test]
    fn the_old_format_with_the_command_as_a_string_still_reads() {
        // Before commands were nested: `"kind":"data"` and the command's
        // JSON text escaped into a string.
        let old =
            r#"{"index":2,"term":1,"payload":{"kind":"data","data":"{\"client\":7,\"seq\":1}"}}"#;
        assert_eq!(
            serde_json::from_str::<Entry>(old).unwrap(),
            command(r#"{"client":7,"seq":1}"#)
        );
        // Text that is not JSON becomes a JSON string.
        let old = r#"{"index":2,"term":1,"payload":{"kind":"data","data":"SET 5"}}"#;
        assert_eq!(
            serde_json::from_str::<Entry>(old).unwrap().payload,
            Payload::Command(Json::string("SET 5"))
        );
        let unknown = r#"{"index":2,"term":1,"payload":{"kind":"other"}}"#;
        assert!(serde_json::from_str::<Entry>(unknown).is_err());
    }

    #[test]
    fn commands_survive_serdes_buffering() {
        // The wire's requests are `type`-tagged enums, which serde buffers
        // before it decodes their fields: RawValue alone fails there.
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        enum Tagged {
            Append { entries: Vec<Entry> },
        }
        let m = Tagged::Append {
            entries: vec![command(r#"{"a":[1,{"b":"c"}]}"#)],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Tagged>(&text).unwrap(), m);
    }
}
