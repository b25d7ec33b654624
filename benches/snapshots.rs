//! Log compaction, measured on real processes (3 nodes on 127.0.0.1,
//! default timings, data in a temp dir):
//!
//!     cargo bench --bench snapshots -- [--writes 100000,1000000] [--clients 64] [--only compaction|none]
//!
//! For each number of writes, twice: with compaction at the default
//! threshold (64 MiB of log), and without (a threshold never reached).
//! Each write puts a new key (100-byte values), so the store ends with as
//! many keys as writes: the largest snapshot those writes can make.
//! Printed per run:
//! * write throughput per second while loading (min, median, max), and
//!   the snapshots taken meanwhile: how long each took and the longest
//!   time the store was locked to copy it (the only pause they cause);
//! * disk use of each node's state directory at the end;
//! * restart of a follower after `kill -9`: time until it answers, and
//!   until it has applied everything committed before the kill;
//! * restart of the whole cluster after `kill -9` of every node: time
//!   until a write succeeds;
//! * with compaction: a follower down while the leader compacts past it,
//!   then restarted: time until it has caught up, and the leader's
//!   InstallSnapshot transfer time.
//!
//! Not part of CI.

#[path = "../tests/process/mod.rs"]
mod process;

use std::time::{Duration, Instant};

use process::{TestCluster, dir_bytes};
use raft::client::{Client, ClientOptions};
use raft::consensus::NodeId;

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

/// Puts keys `k<from>..k<to>` from `clients` threads; returns the writes
/// completed in each second.
fn load(c: &TestCluster, clients: usize, from: u64, to: u64) -> Vec<u64> {
    process::workload::load(&c.config, clients, from, to)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// Numbers that follow `before` on the lines of `log` containing `marker`.
fn numbers_after(log: &str, marker: &str, before: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let at = l.find(before)? + before.len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn commit_index(c: &TestCluster) -> u64 {
    c.statuses()
        .iter()
        .filter_map(|s| s.status.as_ref().ok())
        .map(|s| s.commit_index)
        .max()
        .unwrap_or(0)
}

/// Restarts `id` and times (until it answers, until it has applied `upto`).
fn time_restart(c: &mut TestCluster, id: NodeId, upto: u64) -> (Duration, Duration) {
    let started = Instant::now();
    c.start(id);
    let mut answered = None;
    loop {
        if let Ok(s) = &c.statuses()[id as usize].status {
            answered.get_or_insert(started.elapsed());
            if s.last_applied >= upto {
                return (answered.unwrap(), started.elapsed());
            }
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no restart");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(writes: u64, clients: usize, compaction: bool) {
    let mut c = TestCluster::new(3);
    c.args.clear(); // the defaults a user gets
    if !compaction {
        c.args
            .extend(["--snapshot-threshold".into(), "1000GiB".into()]);
    }
    c.start_all();
    let all = c.ids();
    let (leader, _) = c.wait_for_agreed_leader(&all, Duration::from_secs(30));
    let label = if compaction {
        "compaction at 64 MiB"
    } else {
        "no compaction"
    };
    println!("== {writes} writes, {label} ==");

    let started = Instant::now();
    let mut per_second = load(&c, clients, 0, writes);
    let elapsed = started.elapsed();
    per_second.pop(); // a partial second
    per_second.sort_unstable();
    let median = per_second.get(per_second.len() / 2).copied().unwrap_or(0);
    println!(
        "load: {:.0} writes/s over {:.0} s; per second min {} median {} max {}",
        writes as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        per_second.first().unwrap_or(&0),
        median,
        per_second.last().unwrap_or(&0)
    );
    let logs: String = all.iter().map(|&id| c.activity_log(id)).collect();
    let took = numbers_after(&logs, "snapshot taken", "bytes, in ");
    let blocked = numbers_after(&logs, "snapshot taken", "blocked ");
    if !took.is_empty() {
        println!(
            "snapshots taken on the 3 nodes: {}; longest {} ms; the store locked at most {} µs (to copy it)",
            took.len(),
            took.iter().max().unwrap(),
            blocked.iter().max().unwrap()
        );
    }
    c.wait_for_converged();
    let disk: Vec<String> = all
        .iter()
        .map(|id| mib(dir_bytes(&c.state_dir().join(format!("node{id}")))))
        .collect();
    println!("disk use per node: {}", disk.join(", "));

    let follower = (leader + 1) % 3;
    let upto = commit_index(&c);
    c.sigkill(follower);
    let (answers, applied) = time_restart(&mut c, follower, upto);
    let read = numbers_after(&c.activity_log(follower), "started on", "read in ");
    println!(
        "follower restart after kill -9: answers after {} ms, has applied all {upto} entries after {} ms{}",
        answers.as_millis(),
        applied.as_millis(),
        read.last()
            .map_or(String::new(), |ms| format!(" (snapshot read in {ms} ms)"))
    );

    for &id in &all {
        c.sigkill(id);
    }
    let started = Instant::now();
    for &id in &all {
        c.start(id);
    }
    let mut client = Client::new(c.config.clone(), options());
    client
        .put("after-restart", "x")
        .expect("a write after restart");
    println!(
        "whole cluster restarted after kill -9 of every node: first write acknowledged after {} ms",
        started.elapsed().as_millis()
    );

    if compaction {
        let (leader, _) = c.wait_for_agreed_leader(&all, Duration::from_secs(30));
        let follower = (leader + 1) % 3;
        c.sigkill(follower);
        load(&c, clients, writes, writes + 5000);
        let mut client = Client::new(c.config.clone(), options());
        let taken = client.snapshot(leader).expect("a snapshot");
        let upto = commit_index(&c);
        let (_, caught_up) = time_restart(&mut c, follower, upto);
        let sent = numbers_after(
            &c.activity_log(leader),
            "has snapshot up to index",
            "sent in ",
        );
        println!(
            "catch-up through InstallSnapshot ({} bytes, {} keys): follower applied all {upto} entries {} ms after its restart; the transfer took {} ms",
            taken.bytes,
            taken.keys,
            caught_up.as_millis(),
            sent.last().copied().unwrap_or(0)
        );
    }
    for id in all {
        c.sigkill(id);
    }
}

fn main() {
    let writes: Vec<u64> = process::arg("--writes")
        .unwrap_or("100000,1000000".into())
        .split(',')
        .map(|n| n.parse().expect("--writes N[,N…]"))
        .collect();
    let clients: usize = process::arg("--clients").map_or(64, |n| n.parse().expect("--clients N"));
    let only = process::arg("--only");
    for &n in &writes {
        for compaction in [true, false] {
            let name = if compaction { "compaction" } else { "none" };
            if only.as_deref().is_none_or(|o| o == name) {
                run(n, clients, compaction);
            }
        }
    }
}
