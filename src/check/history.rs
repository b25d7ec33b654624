//! What a check records, and its file: JSON lines, one object each, the
//! first describing the run. The same file is checked again with
//! `raftctl check --replay FILE` and drawn with `--html`.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::consensus::NodeId;
use crate::lincheck::Operation;

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Run(Run),
    Op(Op),
    Fault(Fault),
    Role(Role),
}

/// How the run was made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    /// When it started, in milliseconds since the Unix epoch; every other
    /// time in the file is in microseconds since then.
    pub started_unix_ms: u64,
    pub config: String,
    pub nodes: Vec<NodeId>,
    pub seconds: u64,
    pub clients: usize,
    pub keys: usize,
    pub faults: Vec<String>,
    pub seed: u64,
}

/// How an operation ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered (a read's value, a write applied, a compare-and-set that
    /// found another value, a delete of a missing key).
    Ok,
    /// Definitely did not happen (no leader reachable, refused), or a
    /// read with no answer: either way, it changed and showed nothing.
    Fail,
    /// A write with no answer: it may have happened, or may still.
    Unknown,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub client: usize,
    pub outcome: Outcome,
    /// The node that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// When the client had its answer or gave up (µs from the start).
    pub end: u64,
    /// Why it failed or is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Key, what it did and saw, and when (µs from the start; `ret` is
    /// missing when no answer came).
    #[serde(flatten)]
    pub op: Operation,
}

/// A fault injected, from `start` to `end` (µs from the start).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// `kill`, `pause`, `cut`, `restart` or `transfer`.
    pub kind: String,
    pub nodes: Vec<NodeId>,
    pub start: u64,
    pub end: u64,
    /// What was done, in words ("node2 (leader) killed, restarted").
    pub what: String,
}

/// A node's role from `at` (µs from the start) until its next line, as
/// polled: `leader`, `follower`, `candidate`, `down` (refused the
/// connection) or `silent` (no answer: paused, or overloaded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub node: NodeId,
    pub at: u64,
    pub role: String,
    #[serde(default)]
    pub term: u64,
    /// The leader it follows (itself, if it leads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<NodeId>,
    /// Cut off from its peers by the lab.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
}

/// A whole history, as recorded or read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub run: Run,
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
    pub roles: Vec<Role>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Bad {
        path: String,
        line: usize,
        message: String,
    },
}

impl History {
    /// When the last operation ended (µs from the start), if any ran.
    pub fn end(&self) -> Option<u64> {
        self.ops.iter().map(|o| o.end).max()
    }

    /// The operations as the checker takes them: those that did not
    /// definitely fail.
    pub fn operations(&self) -> (Vec<Operation>, Vec<usize>) {
        let mut ops = Vec::new();
        let mut index = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            if op.outcome != Outcome::Fail {
                ops.push(op.op.clone());
                index.push(i);
            }
        }
        (ops, index)
    }

    /// Writes the history as JSON lines to `path` (written aside, then
    /// renamed, so a file is whole or absent).
    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        let io = |source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        };
        let aside = path.with_extension("partial");
        let file = std::fs::File::create(&aside).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let mut line = |l: Line| -> std::io::Result<()> {
            serde_json::to_writer(&mut out, &l)?;
            out.write_all(b"\n")
        };
        line(Line::Run(self.run.clone())).map_err(io)?;
        for f in &self.faults {
            line(Line::Fault(f.clone())).map_err(io)?;
        }
        for r in &self.roles {
            line(Line::Role(r.clone())).map_err(io)?;
        }
        for o in &self.ops {
            line(Line::Op(o.clone())).map_err(io)?;
        }
        out.flush().map_err(io)?;
        drop(out);
        std::fs::rename(&aside, path).map_err(io)
    }

    /// Reads a history file; a line that is not one names its number.
    pub fn load(path: &Path) -> Result<History, HistoryError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| HistoryError::Io {
            path: name.clone(),
            source,
        })?;
        let mut history = History::default();
        let mut seen_run = false;
        for (n, text) in std::io::BufReader::new(file).lines().enumerate() {
            let text = text.map_err(|source| HistoryError::Io {
                path: name.clone(),
                source,
            })?;
            if text.trim().is_empty() {
                continue;
            }
            let bad = |message: String| HistoryError::Bad {
                path: name.clone(),
                line: n + 1,
                message,
            };
            match serde_json::from_str::<Line>(&text).map_err(|e| bad(e.to_string()))? {
                Line::Run(run) => {
                    history.run = run;
                    seen_run = true;
                }
                Line::Op(op) => {
                    if op.op.ret.is_some_and(|r| r < op.op.call) {
                        return Err(bad("an operation that returned before its call".into()));
                    }
                    history.ops.push(op)
                }
                Line::Fault(f) => history.faults.push(f),
                Line::Role(r) => history.roles.push(r),
            }
        }
        if !seen_run {
            return Err(HistoryError::Bad {
                path: name,
                line: 1,
                message: "not a raftctl check history (no \"run\" line)".into(),
            });
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lincheck::KvOp;

    #[test]
    fn a_history_reads_back_as_it_was_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let history = History {
            run: Run {
                started_unix_ms: 1,
                nodes: vec![0, 1, 2],
                faults: vec!["kill".into()],
                ..Run::default()
            },
            ops: vec![
                Op {
                    client: 3,
                    outcome: Outcome::Ok,
                    node: Some(1),
                    end: 9,
                    error: None,
                    op: Operation {
                        key: "k0".into(),
                        op: KvOp::Cas {
                            from: "a".into(),
                            to: "b".into(),
                            result: Some(Err(None)),
                        },
                        call: 5,
                        ret: Some(9),
                    },
                },
                Op {
                    client: 0,
                    outcome: Outcome::Unknown,
                    node: None,
                    end: 2000,
                    error: Some("no answer in time".into()),
                    op: Operation {
                        key: "k1".into(),
                        op: KvOp::Put { value: "x".into() },
                        call: 7,
                        ret: None,
                    },
                },
            ],
            faults: vec![Fault {
                kind: "kill".into(),
                nodes: vec![2],
                start: 1,
                end: 2,
                what: "node2 killed".into(),
            }],
            roles: vec![Role {
                node: 0,
                at: 0,
                role: "leader".into(),
                term: 2,
                leader: Some(0),
                isolated: false,
            }],
        };
        history.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), history);
        std::fs::write(&path, "{\"type\":\"run\"}\nnot json\n").unwrap();
        let err = History::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
