//! Backups of the store (`raftctl snapshot save FILE` and `raftctl
//! snapshot restore FILE`), as etcdctl makes them.
//!
//! **Save** asks the leader for a `backup`: it confirms it leads with a
//! linearizable read (ReadIndex or its lease), waits until its store has
//! applied everything committed before the request, copies the store (a
//! copy-on-write clone) and streams it in the snapshot format (a header
//! line, session lines, one `["key","value"]` line per key). The file is
//! the store at one point of the log, that point after the request began:
//! every write acknowledged before it is in it. It is written to
//! `FILE.tmp`, fsynced and renamed, so a file that exists is whole.
//!
//! **Restore** reads and checks such a file (the snapshot reader checks its
//! header's counts) and puts every key into a running cluster, from
//! several clients at once: start a new cluster (`./boot_all_nodes.sh` on
//! an empty state directory), then restore into it. Keys written to that
//! cluster meanwhile may be overwritten; sessions are not carried over
//! (they belong to the old cluster's clients).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::client::{Client, ClientError, ClientOptions};
use crate::config::{ClusterConfig, Member};
use crate::consensus::Index;
use crate::kv::KvStore;
use crate::wire::{Request, Response};

/// What a backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    /// The log index the store had applied.
    pub index: Index,
    pub keys: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{path}: {op} failed: {source}")]
    File {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("node{node} at {address}: {message}")]
    Stream {
        node: u64,
        address: String,
        message: String,
    },
    #[error("{path} is not a backup: {why}")]
    NotABackup { path: String, why: String },
}

fn file_err<'a>(path: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::File {
        path: path.display().to_string(),
        op,
        source,
    }
}

/// Saves the store, through the leader, to `path`.
pub fn save(client: &mut Client, path: &Path, timeout: Duration) -> Result<Saved, BackupError> {
    let leader = client.leader()?;
    let tmp = path.with_extension("tmp");
    let saved = stream_to(&leader, &tmp, timeout)?;
    std::fs::rename(&tmp, path).map_err(file_err(path, "rename"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err(dir, "fsync"))?;
    }
    Ok(saved)
}

/// Asks `leader` for a backup and writes the lines to `path`, fsynced.
fn stream_to(leader: &Member, path: &Path, timeout: Duration) -> Result<Saved, BackupError> {
    let stream_err = |message: String| BackupError::Stream {
        node: leader.id,
        address: leader.address(),
        message,
    };
    let mut conn = crate::tls::open(leader, timeout).map_err(|e| stream_err(e.to_string()))?;
    // The first line waits for the read's confirmation; then lines flow.
    conn.tcp()
        .set_read_timeout(Some(timeout.max(Duration::from_secs(5))))
        .map_err(|e| stream_err(e.to_string()))?;
    let mut request = serde_json::to_vec(&Request::Backup).expect("a request serializes");
    request.push(b'\n');
    conn.write_all(&request)
        .map_err(|e| stream_err(e.to_string()))?;
    let mut lines = BufReader::new(conn);
    let mut first = String::new();
    lines
        .read_line(&mut first)
        .map_err(|e| stream_err(e.to_string()))?;
    if let Ok(Response::Error { message, .. }) = serde_json::from_str::<Response>(&first) {
        return Err(stream_err(message));
    }
    let header: serde_json::Value =
        serde_json::from_str(&first).map_err(|e| stream_err(format!("not a backup: {e}")))?;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(path).map_err(file_err(path, "create"))?);
    out.write_all(first.as_bytes())
        .map_err(file_err(path, "write"))?;
    let mut bytes = first.len() as u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines
            .read_line(&mut line)
            .map_err(|e| stream_err(e.to_string()))?;
        if n == 0 {
            break;
        }
        out.write_all(line.as_bytes())
            .map_err(file_err(path, "write"))?;
        bytes += n as u64;
    }
    let file = out
        .into_inner()
        .map_err(|e| file_err(path, "write")(e.into_error()))?;
    file.sync_all().map_err(file_err(path, "fsync"))?;
    // Whole: the snapshot reader checks the counts the header names.
    let store = read(path)?;
    Ok(Saved {
        index: header["applied_index"]
            .as_u64()
            .unwrap_or(store.applied_index()),
        keys: store.len() as u64,
        bytes,
    })
}

/// Reads and checks a backup.
pub fn read(path: &Path) -> Result<KvStore, BackupError> {
    let file = std::fs::File::open(path).map_err(file_err(path, "open"))?;
    KvStore::read_snapshot(BufReader::new(file)).map_err(|e| BackupError::NotABackup {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// Puts every key of the backup at `path` into the cluster `config`
/// names, from `clients` clients at once; returns the keys written.
pub fn restore(config: &ClusterConfig, path: &Path, clients: usize) -> Result<u64, BackupError> {
    let store = read(path)?;
    let pairs: Vec<(&str, &str)> = store.pairs().collect();
    let next = AtomicU64::new(0);
    let failed: Vec<ClientError> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut client = Client::new(config.clone(), ClientOptions::default());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        // Past the last key: done, with no error.
                        let (key, value) = pairs.get(i)?;
                        if let Err(e) = client.put(key, value) {
                            return Some(e);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().expect("a restoring client panicked"))
            .collect()
    });
    match failed.into_iter().next() {
        Some(e) => Err(e.into()),
        None => Ok(pairs.len() as u64),
    }
}
