//! `raftctl snapshot` (nodes compact their logs) and `raftctl snapshot
//! save|restore FILE` (a backup of the store, and a new cluster from one).

use std::path::Path;
use std::process::exit;
use std::time::Duration;

use raft::backup::{self, BackupError};
use raft::client::Client;
use raft::config::ClusterConfig;
use serde_json::json;

use crate::{SnapshotAction, fail, print_line};

/// `raftctl snapshot`: node `node` (every node by default) takes one.
pub fn take(
    client: &mut Client,
    cluster: &ClusterConfig,
    config: &Path,
    node: Option<u64>,
    json: bool,
) {
    let ids: Vec<u64> = match node {
        Some(id) if cluster.member(id).is_none() => {
            eprintln!("raftctl: node {id} is not in {}", config.display());
            exit(2);
        }
        Some(id) => vec![id],
        None => cluster.members.iter().map(|m| m.id).collect(),
    };
    let mut failed = None;
    for id in ids {
        match client.snapshot(id) {
            Ok(t) if json => {
                let mut line = serde_json::to_value(&t).expect("a snapshot's answer serializes");
                line["node"] = json!(id);
                say!("{line}");
            }
            Ok(t) if t.taken => say!(
                "node{id}: snapshot up to index {} (term {}): {} keys, {} bytes, in {} ms (store blocked {} µs)",
                t.index,
                t.term,
                t.keys,
                t.bytes,
                t.millis,
                t.store_blocked_micros
            ),
            Ok(t) => say!(
                "node{id}: nothing new to snapshot; the snapshot covers up to index {}",
                t.index
            ),
            Err(e) => {
                eprintln!("raftctl: {e}");
                failed = Some(e);
            }
        }
    }
    if let Some(e) = failed {
        fail(&e);
    }
}

/// `raftctl snapshot save FILE` and `raftctl snapshot restore FILE`.
pub fn backup(
    client: &mut Client,
    cluster: &ClusterConfig,
    action: SnapshotAction,
    timeout: u64,
    json: bool,
) {
    let failed = |e: BackupError| -> ! {
        eprintln!("raftctl: {e}");
        match e {
            BackupError::Client(e) => fail(&e),
            _ => exit(1),
        }
    };
    match action {
        SnapshotAction::Save { file } => {
            let saved = backup::save(client, &file, Duration::from_millis(timeout))
                .unwrap_or_else(|e| failed(e));
            if json {
                let line = json!({"file": file, "index": saved.index, "keys": saved.keys, "bytes": saved.bytes});
                return say!("{line}");
            }
            say!(
                "saved the store as of index {} to {}: {} keys, {} bytes",
                saved.index,
                file.display(),
                saved.keys,
                saved.bytes
            );
        }
        SnapshotAction::Restore { file, clients } => {
            let keys = backup::restore(cluster, &file, clients).unwrap_or_else(|e| failed(e));
            if json {
                return say!("{}", json!({"file": file, "keys": keys}));
            }
            say!("restored {keys} keys from {}", file.display());
        }
    }
}
