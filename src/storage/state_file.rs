//! `state.json` and `state.copy.json`: whose state this is (cluster and
//! node id), the term and vote (Figure 2, "Persistent state"), and the
//! mark of a storage fault not yet repaired ([`HardState::lost_through`]).
//!
//! Each file is one line, `CRC JSON`, as a log record is:
//! `5b1e0f2a {"cluster":"3f29c1d2a7e04b11","node":2,"term":7,"voted_for":2}`.
//!
//! **Why two copies.** The vote is the one thing a server must never
//! forget: a server that loses it can vote twice in one term and elect two
//! leaders (§5.2), and nothing else on disk says which terms it voted in
//! (the log records only the terms of entries it received). So every
//! change is written to both files in turn, each atomically (a temporary
//! file, fsynced, renamed over the old one, the directory fsynced), and
//! only then acted on. One copy lost or damaged is repaired from the other
//! at start. If a crash comes between the two writes, the copies differ,
//! and the later one (the higher term, or the same term with a vote) is
//! taken: it was never acted on, but taking it is as safe as taking the
//! older one, and taking the older one after acting on the newer would
//! not be.
//!
//! A copy is not trusted if it fails its checksum, does not parse, or
//! names a term below the last term in the log or snapshot: a server
//! adopts a term before it accepts entries of that term, so such a file
//! is damage (or a file from elsewhere). With neither copy usable but a
//! log or snapshot present, the server has voted before and cannot know
//! in which terms, and it refuses to start (see
//! [`StorageError::VoteLost`] for what the operator can do).
//!
//! A file written before identities and checksums, plain
//! `{"term":7,"voted_for":2}`, is read as it is and rewritten in this form
//! with the identity of the node now starting on it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LineError, StorageError, checked_json, checksummed_line, io_err, sync_dir};
use crate::consensus::{HardState, Index, NodeId, Term};

pub const STATE_FILE: &str = "state.json";
pub const STATE_COPY: &str = "state.copy.json";

/// Whose state a directory holds: written at the first start, checked at
/// every start, so that a directory copied or mounted in the wrong place
/// is refused instead of run as another server (with its votes and log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's id (see `ClusterConfig::derived_cluster_id`).
    pub cluster: String,
    pub node: NodeId,
}

#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<NodeId>,
    term: Term,
    voted_for: Option<NodeId>,
    #[serde(default, skip_serializing_if = "is_zero")]
    lost_through: Index,
    #[serde(default, skip_serializing_if = "is_zero")]
    lost_term: Term,
}

fn is_zero(n: &Index) -> bool {
    *n == 0
}

impl Record {
    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
            lost_through: self.lost_through,
            lost_term: self.lost_term,
        }
    }
}

/// What one copy holds.
enum Copy {
    Missing,
    Damaged { offset: u64, reason: String },
    Found { record: Record, legacy: bool },
}

fn read_copy(path: &Path) -> Result<Copy, StorageError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Copy::Missing),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Ok(Copy::Damaged {
                offset: 0,
                reason: "not UTF-8 text".into(),
            });
        }
        Err(e) => return Err(io_err(path, "read")(e)),
    };
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let (json, legacy, at) = match checked_json(line.as_bytes()) {
        // Checked: valid UTF-8 as part of the text.
        Ok(json) => (&line[line.len() - json.len()..], false, 9),
        Err(LineError::Mismatch) => {
            return Ok(Copy::Damaged {
                offset: 0,
                reason: LineError::Mismatch.to_string(),
            });
        }
        // The form before checksums: plain JSON, checked by parsing only.
        Err(LineError::Form | LineError::Hex) => (line, true, 0),
    };
    match serde_json::from_str::<Record>(json) {
        Ok(record) => Ok(Copy::Found { record, legacy }),
        Err(e) => Ok(Copy::Damaged {
            offset: at + super::byte_offset(json, e.line(), e.column()),
            reason: e.to_string(),
        }),
    }
}

/// Both copies as read at start, their identity checked.
pub struct Copies {
    paths: [PathBuf; 2],
    copies: [Copy; 2],
}

/// The identity recorded in `dir`'s state, if either copy holds one: how
/// a server that joined a running cluster (and so has no configuration
/// file to derive the cluster id from) finds its cluster again.
pub fn recorded_identity(dir: &Path) -> Option<Identity> {
    [STATE_FILE, STATE_COPY]
        .iter()
        .find_map(|name| match read_copy(&dir.join(name)).ok()? {
            Copy::Found { record, .. } => Some(Identity {
                cluster: record.cluster?,
                node: record.node?,
            }),
            _ => None,
        })
}

/// Reads both copies, refusing a directory whose state names another
/// server: called before anything in the directory is changed.
pub fn read(dir: &Path, identity: &Identity) -> Result<Copies, StorageError> {
    let paths = [dir.join(STATE_FILE), dir.join(STATE_COPY)];
    let copies = [read_copy(&paths[0])?, read_copy(&paths[1])?];
    for (path, copy) in paths.iter().zip(&copies) {
        if let Copy::Found { record, .. } = copy
            && let (Some(cluster), Some(node)) = (&record.cluster, record.node)
            && (*cluster != identity.cluster || node != identity.node)
        {
            return Err(StorageError::WrongNode {
                path: path.clone(),
                found: Identity {
                    cluster: cluster.clone(),
                    node,
                },
                expected: identity.clone(),
            });
        }
    }
    Ok(Copies { paths, copies })
}

/// What the log and snapshot say about the term: a server adopts a term
/// (and so writes it here) before it accepts an entry of that term.
#[derive(Clone, Copy, Debug, Default)]
pub struct Evidence {
    /// Whether there is any log entry or snapshot at all.
    pub any: bool,
    /// The highest term of any entry or snapshot.
    pub last_term: Term,
}

/// The state a node starts from, and what was done to get it.
pub struct Loaded {
    pub hard_state: HardState,
    /// Copies repaired, identities recorded: for the activity log.
    pub notes: Vec<String>,
}

/// Checks the copies [`read`] against `evidence`, and repairs a missing,
/// damaged or old-form copy from the other. A fresh directory gets both
/// copies, with the identity, at term 0. `vote_floor`: both copies are
/// known lost; start at that term, as if we had voted (for ourselves) in
/// it.
pub fn load(
    Copies { paths, copies }: Copies,
    dir: &Path,
    identity: &Identity,
    evidence: Evidence,
    vote_floor: Option<Term>,
) -> Result<Loaded, StorageError> {
    let mut notes = Vec::new();
    let (usable, unusable) = judge(&paths, &copies, evidence);
    if let Some(floor) = vote_floor {
        if !usable.is_empty() {
            return Err(StorageError::VoteFloorRefused {
                path: usable[0].0.to_path_buf(),
            });
        }
        let hard_state = HardState {
            term: floor.max(evidence.last_term),
            voted_for: Some(identity.node),
            lost_through: 0,
            lost_term: 0,
        };
        notes.push(format!(
            "--vote-floor: {}; starting at term {} as if we had voted in it, so we vote in no term up to it",
            unusable.join("; "),
            hard_state.term
        ));
        write_both(dir, identity, hard_state)?;
        return Ok(Loaded { hard_state, notes });
    }
    if usable.is_empty() {
        if !evidence.any && copies.iter().all(|c| matches!(c, Copy::Missing)) {
            // A new server: nothing to lose. Record whose it is.
            let hard_state = HardState::default();
            write_both(dir, identity, hard_state)?;
            return Ok(Loaded { hard_state, notes });
        }
        return Err(StorageError::VoteLost {
            dir: dir.to_path_buf(),
            why: unusable.join("; "),
            last_term: evidence.last_term,
        });
    }
    let hard_state = merge(&usable, &paths, dir, evidence)?;
    let all_whole = usable.len() == 2
        && usable
            .iter()
            .all(|(_, hs, whole)| *whole && *hs == hard_state);
    if !all_whole {
        for problem in &unusable {
            notes.push(format!("{problem}; rewritten from the other copy"));
        }
        if usable.iter().any(|(_, _, whole)| !whole) {
            notes.push(format!(
                "recorded in {} that this is node {} of cluster {}",
                paths[0].display(),
                identity.node,
                identity.cluster
            ));
        }
        write_both(dir, identity, hard_state)?;
    }
    Ok(Loaded { hard_state, notes })
}

/// A usable copy: its path, what it holds, and whether it is in the
/// current form with its identity.
type Usable<'a> = (&'a Path, HardState, bool);

/// Sorts the copies into those usable and why the others are not: missing,
/// damaged, or holding a term below `evidence` (a server adopts a term
/// before it takes any entry of it, so such a copy is stale).
fn judge<'a>(
    paths: &'a [PathBuf; 2],
    copies: &[Copy],
    evidence: Evidence,
) -> (Vec<Usable<'a>>, Vec<String>) {
    let mut usable = Vec::new();
    let mut unusable = Vec::new();
    for (path, copy) in paths.iter().zip(copies) {
        match copy {
            Copy::Missing => unusable.push(format!("{} is missing", path.display())),
            Copy::Damaged { offset, reason } => unusable.push(format!(
                "{} is damaged at byte offset {offset}: {reason}",
                path.display()
            )),
            Copy::Found { record, .. } if record.term < evidence.last_term => {
                unusable.push(format!(
                    "{} says term {}, below the last term in the log or snapshot ({}), which a server adopts before it takes any entry of it",
                    path.display(),
                    record.term,
                    evidence.last_term
                ));
            }
            Copy::Found { record, legacy } => {
                let whole = !legacy && record.cluster.is_some() && record.node.is_some();
                usable.push((path.as_path(), record.hard_state(), whole));
            }
        }
    }
    (usable, unusable)
}

/// The state the usable copies (at least one) agree on: the later of the
/// two (a higher term, or the same term with a vote), keeping a repair
/// mark either has (a crash between the two writes of its removal leaves
/// it in one). Two different votes in one term cannot be resolved.
fn merge(
    usable: &[Usable],
    paths: &[PathBuf; 2],
    dir: &Path,
    evidence: Evidence,
) -> Result<HardState, StorageError> {
    let latest = usable
        .iter()
        .map(|(_, hs, _)| *hs)
        .max_by_key(|hs| (hs.term, hs.voted_for.is_some()))
        .expect("not empty");
    if usable.iter().any(|(_, hs, _)| {
        hs.term == latest.term && hs.voted_for.is_some() && hs.voted_for != latest.voted_for
    }) {
        return Err(StorageError::VoteLost {
            dir: dir.to_path_buf(),
            why: format!(
                "{} and {} name different votes in term {}",
                paths[0].display(),
                paths[1].display(),
                latest.term
            ),
            last_term: evidence.last_term,
        });
    }
    let most = |f: fn(&HardState) -> u64| usable.iter().map(|(_, hs, _)| f(hs)).max();
    Ok(HardState {
        lost_through: most(|hs| hs.lost_through).unwrap_or(0),
        lost_term: most(|hs| hs.lost_term).unwrap_or(0),
        ..latest
    })
}

/// Writes `hs` with `identity` to both copies, one after the other, each
/// atomically; both are durable when this returns.
pub fn write_both(dir: &Path, identity: &Identity, hs: HardState) -> Result<(), StorageError> {
    let record = Record {
        cluster: Some(identity.cluster.clone()),
        node: Some(identity.node),
        term: hs.term,
        voted_for: hs.voted_for,
        lost_through: hs.lost_through,
        lost_term: hs.lost_term,
    };
    let json = serde_json::to_vec(&record).expect("serializing plain values cannot fail");
    let mut line = Vec::new();
    checksummed_line(&json, &mut line);
    line.push(b'\n');
    for name in [STATE_FILE, STATE_COPY] {
        write_atomically(dir, name, &line)?;
    }
    Ok(())
}

/// `name` replaced by `bytes` whole or not at all: written to
/// `name.tmp`, fsynced, renamed over `name`, and the directory fsynced
/// (the rename is durable only once its directory is).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(io_err(&tmp, "create"))?;
    f.write_all(bytes).map_err(io_err(&tmp, "write"))?;
    f.sync_all().map_err(io_err(&tmp, "fsync"))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))?;
    sync_dir(dir)
}
