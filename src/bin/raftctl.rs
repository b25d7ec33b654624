//! `raftctl`: a command-line client for the cluster.
//!
//! Exit codes: 0 success; 2 usage or configuration error; 3 no node could
//! be reached, or no leader accepted the request in time.

use std::path::PathBuf;
use std::process::exit;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raft::client;
use raft::config;

#[derive(Parser)]
#[command(version, about = "Client for a Raft cluster.")]
struct Args {
    /// Cluster configuration file.
    #[arg(long, global = true, default_value = "./config.txt")]
    config: PathBuf,
    /// How long to wait for each node, in milliseconds.
    #[arg(long, global = true, default_value_t = 1000, value_name = "MS")]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask every node for its role, term, leader, commit and last log index.
    Status {
        /// Print a JSON array, one object per configured node.
        #[arg(long)]
        json: bool,
    },
    /// Append DATA to the replicated log; prints `INDEX TERM` once committed.
    Append {
        data: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 5000, value_name = "MS")]
        wait: u64,
    },
    /// Print the configured nodes as `ID HOST PORT` lines (for scripts).
    Members,
}

fn main() {
    let args = Args::parse();
    let cluster = config::load(&args.config).unwrap_or_else(|e| {
        eprintln!("raftctl: {e}");
        exit(2)
    });
    for w in &cluster.warnings {
        eprintln!("raftctl: warning: {w}");
    }
    match args.command {
        Command::Members => {
            for m in &cluster.members {
                println!("{} {} {}", m.id, m.host, m.port);
            }
        }
        Command::Append { data, wait } => {
            match client::append(&cluster, &data, Duration::from_millis(wait)) {
                Ok((index, term)) => println!("{index} {term}"),
                Err(e) => {
                    eprintln!("raftctl: {e}");
                    exit(3);
                }
            }
        }
        Command::Status { json } => {
            let rows = client::status_all(&cluster, Duration::from_millis(args.timeout));
            if json {
                let array: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| {
                        let s = r.status.as_ref().ok();
                        serde_json::json!({
                            "id": r.member.id,
                            "address": r.member.address(),
                            "reachable": s.is_some(),
                            "role": s.map(|s| s.role.clone()),
                            "term": s.map(|s| s.term),
                            "leader_id": s.and_then(|s| s.leader_id),
                            "commit_index": s.map(|s| s.commit_index),
                            "last_log_index": s.map(|s| s.last_log_index),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&array).expect("JSON values serialize")
                );
            } else {
                println!(
                    "{:<4} {:<22} {:<10} {:>6} {:>7} {:>8} {:>9}",
                    "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "LAST LOG"
                );
                for r in &rows {
                    match &r.status {
                        Ok(s) => println!(
                            "{:<4} {:<22} {:<10} {:>6} {:>7} {:>8} {:>9}",
                            r.member.id,
                            r.member.address(),
                            s.role,
                            s.term,
                            s.leader_id.map_or("-".into(), |l| l.to_string()),
                            s.commit_index,
                            s.last_log_index
                        ),
                        Err(_) => println!(
                            "{:<4} {:<22} {:<10}",
                            r.member.id,
                            r.member.address(),
                            "unreachable"
                        ),
                    }
                }
            }
            if rows.iter().all(|r| r.status.is_err()) {
                eprintln!(
                    "raftctl: no node of {} could be reached",
                    args.config.display()
                );
                exit(3);
            }
        }
    }
}
