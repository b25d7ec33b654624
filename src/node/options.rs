//! How a node runs (its options, filled by raftnode from its flags) and
//! why it can fail to. No locks here.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::ClusterConfig;
use crate::consensus::{self, NodeId};
use crate::server::ServerOptions;
use crate::storage::{SegmentLimits, StorageError};

/// When a node takes a snapshot and compacts its log: once the log past
/// the last snapshot holds this many entries, or this many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotThreshold {
    Entries(u64),
    Bytes(u64),
}

impl Default for SnapshotThreshold {
    /// 64 MiB of log.
    fn default() -> Self {
        SnapshotThreshold::Bytes(64 * 1024 * 1024)
    }
}

impl std::fmt::Display for SnapshotThreshold {
    /// As [`SnapshotThreshold::parse`] reads it: `100000`, `64MiB`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SnapshotThreshold::Entries(n) => write!(f, "{n}"),
            SnapshotThreshold::Bytes(b) => {
                let units = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
                match units.iter().find(|(shift, _)| b % (1 << shift) == 0) {
                    Some((shift, unit)) => write!(f, "{}{unit}", b >> shift),
                    None => write!(f, "{b}B"),
                }
            }
        }
    }
}

impl SnapshotThreshold {
    /// Parses `100000` (entries) or `64MiB` (bytes; also B, KiB, GiB).
    pub fn parse(text: &str) -> Result<SnapshotThreshold, String> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a number of entries or bytes"))?;
        let threshold = match unit.trim() {
            "" => SnapshotThreshold::Entries(n),
            "B" => SnapshotThreshold::Bytes(n),
            "KiB" => SnapshotThreshold::Bytes(n << 10),
            "MiB" => SnapshotThreshold::Bytes(n << 20),
            "GiB" => SnapshotThreshold::Bytes(n << 30),
            other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
        };
        match threshold {
            SnapshotThreshold::Entries(0) | SnapshotThreshold::Bytes(0) => {
                Err("the snapshot threshold must be above 0".into())
            }
            t => Ok(t),
        }
    }

    /// The core's defaults for the entries kept after a snapshot, capped
    /// at a quarter of the threshold so that they never make the next
    /// snapshot due at once.
    pub(super) fn trailing(self, cfg: &mut consensus::Config) {
        match self {
            SnapshotThreshold::Entries(n) => {
                cfg.trailing_entries = cfg.trailing_entries.min(n / 4);
            }
            SnapshotThreshold::Bytes(b) => {
                cfg.trailing_bytes = cfg.trailing_bytes.min((b / 4) as usize);
            }
        }
    }

    /// Segments of a quarter of the threshold, so that compaction can
    /// free most of the log (whole segments only are deleted).
    pub(super) fn segment_limits(self) -> SegmentLimits {
        let default = SegmentLimits::default();
        match self {
            SnapshotThreshold::Entries(n) => SegmentLimits {
                entries: (n / 4).clamp(1, default.entries),
                ..default
            },
            SnapshotThreshold::Bytes(b) => SegmentLimits {
                bytes: (b / 4).clamp(4096, default.bytes),
                ..default
            },
        }
    }
}

/// Where a node keeps its state, and when it compacts it. (What
/// `storage` needs besides, whose directory it is and how long its
/// segments are, follows from these and the cluster at start.)
#[derive(Clone, Debug)]
pub struct StateOptions {
    /// This node's own directory, e.g. /tmp/state/node4.
    pub dir: PathBuf,
    /// `--vote-floor`: the directory's term and vote are known lost;
    /// start at this term, voting in none up to it.
    pub vote_floor: Option<u64>,
    /// When to take a snapshot and compact the log.
    pub snapshot_threshold: SnapshotThreshold,
}

impl StateOptions {
    /// `dir`, with no vote floor and the default snapshot threshold.
    pub fn new(dir: PathBuf) -> StateOptions {
        StateOptions {
            dir,
            vote_floor: None,
            snapshot_threshold: SnapshotThreshold::default(),
        }
    }
}

/// How a node runs; the binary fills this from its flags.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The core's settings, this node's id (`raft.id`) and its peers among
    /// them: timings, append limits, read mode, clock drift. Checked with
    /// `consensus::Config::validate` before a node starts. The seed is
    /// the caller's (the binary takes it from the OS's randomness, so it
    /// differs between nodes and restarts); the trailing entries kept
    /// after a snapshot follow `storage.snapshot_threshold`.
    pub raft: consensus::Config,
    /// Where the node keeps its state, and when it compacts it.
    pub storage: StateOptions,
    pub cluster: ClusterConfig,
    /// The cluster id peer messages must carry; by default derived from
    /// the configuration (`ClusterConfig::derived_cluster_id`).
    pub cluster_id: Option<String>,
    /// Bounds connecting to a peer and each socket read or write of an RPC
    /// (not the RPC as a whole: a reply trickled in could take longer).
    pub rpc_timeout: Duration,
    /// Lab features (`raftnode --lab`): a `lab` request may cut the node
    /// off from its peers.
    pub lab: bool,
    /// **Breaks linearizability; for testing checkers only**
    /// (`raftnode --unsafe-local-reads`): a linearizable read of one key
    /// is answered from this node's own store, leader or not, without
    /// ReadIndex (thesis §6.4) and without redirecting to the leader
    /// (ranges are left alone). `raftctl check` must catch it
    /// (tests/check.rs).
    pub unsafe_local_reads: bool,
    pub server: ServerOptions,
    /// The address to listen on (`raftnode --listen`), when it is not the
    /// one the cluster knows this node by (its line in the config, which
    /// stays the advertised address): `0.0.0.0:5001` in a container or
    /// behind NAT. A wildcard address leaves outgoing connections unbound;
    /// any other binds them to it, as the advertised one does.
    pub listen: Option<String>,
}

impl NodeOptions {
    /// Whether these options can run a node: the one validation, which
    /// `Node::start` runs and raftnode runs to name the flag at fault.
    pub fn validate(&self) -> Result<(), NodeError> {
        self.cluster
            .member(self.raft.id)
            .ok_or(NodeError::UnknownId(self.raft.id))?;
        self.raft.validate().map_err(NodeError::Config)?;
        if let Some(id) = &self.cluster_id {
            crate::config::check_cluster_id(id).map_err(|e| NodeError::Options("cluster id", e))?;
        }
        if self.rpc_timeout.is_zero() {
            return Err(NodeError::Options("rpc timeout", "must be above 0".into()));
        }
        self.server
            .validate()
            .map_err(|e| NodeError::Options("server options", e))
    }
}

/// Why a node could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node id {0} is not in the configuration")]
    UnknownId(NodeId),
    /// Options that cannot run a node: which, and why.
    #[error("invalid {0}: {1}")]
    Options(&'static str, String),
    /// The core's settings cannot run a server.
    #[error("invalid settings: {0}")]
    Config(consensus::InvalidConfig),
    #[error(transparent)]
    Storage(StorageError),
    /// The snapshot file passed its checks but its state does not read.
    #[error("{}: cannot restore the state machine: {error}", path.display())]
    Snapshot {
        path: PathBuf,
        error: crate::kv::SnapshotError,
    },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Spawn(std::io::Error),
    /// The running node hit a fatal error and halted (`Node::failure`).
    #[error("{0}")]
    Failed(String),
    /// A committed membership removed this server from its cluster: it
    /// stopped serving, and its directory will not start again.
    #[error("{0}")]
    Removed(String),
    /// `Node::stop` on a node that had halted.
    #[error("the node had halted: {0}")]
    Halted(String),
}
