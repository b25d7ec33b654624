//! `raftctl put`, `get`, `delete`, `cas` and `append`: the key-value
//! commands, printing what the client library answers, as text or (with
//! `-w json` or a command's own `--json`) one JSON object per line.

use std::path::Path;

use raft::client::{Client, ClientError};
use raft::config::ClusterConfig;

use super::{Command, fail, print_line, print_range, read_stdin, require_member};

/// A write's answer with `--json`: its log index (and for a
/// `delete --prefix`, how many keys went); nothing without (the exit
/// status says it).
fn written(json: bool, index: u64, deleted: Option<u64>) {
    if !json {
        return;
    }
    match deleted {
        Some(count) => say!("{}", serde_json::json!({"index": index, "deleted": count})),
        None => say!("{}", serde_json::json!({"index": index})),
    }
}

pub fn run(
    client: &mut Client,
    cluster: &ClusterConfig,
    path: &Path,
    command: Command,
    json: bool,
) {
    match command {
        Command::Put { key, value } => {
            let value = value.unwrap_or_else(|| read_stdin("value"));
            let index = client.put(&key, &value).unwrap_or_else(|e| fail(&e));
            written(json, index, None);
        }
        Command::Get {
            key,
            prefix,
            to,
            limit,
            keys_only,
            json: own_json,
            stale,
            node,
        } if prefix || to.is_some() || keys_only || own_json || json => {
            require_member(cluster, node, path);
            // Neither --prefix nor --to: KEY alone, as a range of one.
            let single = (!prefix && to.is_none()).then(|| key.clone());
            let query = raft::wire::RangeQuery {
                from: if prefix { String::new() } else { key.clone() },
                to: to.or_else(|| single.as_ref().map(|k| format!("{k}\0"))),
                prefix: if prefix { key } else { String::new() },
                limit,
                keys_only,
                stale,
            };
            let (kvs, more) = client.range(query, node).unwrap_or_else(|e| fail(&e));
            if let Some(key) = single.filter(|_| kvs.is_empty()) {
                fail(&ClientError::NotFound { key });
            }
            print_range(&kvs, own_json || json);
            if more {
                eprintln!("raftctl: more keys follow: raise --limit (now {limit})");
            }
        }
        Command::Get {
            key, stale, node, ..
        } => {
            require_member(cluster, node, path);
            let value = if stale {
                client.get_stale(&key, node)
            } else {
                client.get(&key)
            };
            say!("{}", value.unwrap_or_else(|e| fail(&e)));
        }
        Command::Delete { key, prefix: false } => {
            let index = client.delete(&key).unwrap_or_else(|e| fail(&e));
            written(json, index, None);
        }
        Command::Delete { key, prefix: true } => {
            let (index, count) = client.delete_prefix(&key).unwrap_or_else(|e| fail(&e));
            if json {
                written(json, index, Some(count));
            } else {
                say!("{count}");
            }
        }
        Command::Cas { key, from, to } => {
            let index = client.cas(&key, &from, &to).unwrap_or_else(|e| fail(&e));
            written(json, index, None);
        }
        Command::Append { data } => {
            let data = data.unwrap_or_else(|| read_stdin("data"));
            let index = client.append(&data).unwrap_or_else(|e| fail(&e));
            if json {
                written(json, index, None);
            } else {
                say!("{index}");
            }
        }
        _ => unreachable!("not a key-value command"),
    }
}
