//! Membership change, measured on real processes (3 nodes on 127.0.0.1,
//! default timings, data in a temp dir):
//!
//!     cargo bench --bench membership -- [--keys 100000,1000000] [--clients 16] [--seconds 10]
//!
//! For each store size (keys of 100-byte values, loaded first):
//! * write throughput of `--clients` closed-loop clients for `--seconds`
//!   with no change: the baseline;
//! * `raftctl add` of a fourth server (started with `raftnode --join`
//!   just before): the time from the command to a voting member, with
//!   the same clients writing throughout, and their throughput while it
//!   ran, as a fraction of the baseline;
//! * `raftctl remove` of the leader, with the clients writing: the time
//!   from the command until the others agree on a new leader, and the
//!   longest write of the run (the pause a client saw).
//!
//! Not part of CI.

#[path = "../tests/process/mod.rs"]
mod process;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use process::TestCluster;
use raft::bench::{BenchOptions, BenchReport, Workload};
use raft::consensus::NodeId;

/// Writes from `clients` clients until `stop` is set (or `seconds`).
fn writers(
    c: &TestCluster,
    clients: usize,
    seconds: u64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<BenchReport> {
    let config = c.config.clone();
    let options = BenchOptions {
        clients,
        duration: Duration::from_secs(seconds),
        value_bytes: 100,
        workload: Workload::Writes,
        keys: raft::bench::KEYS,
        progress: false,
        interrupted: stop,
    };
    std::thread::spawn(move || raft::bench::run(&config, &options))
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn run(keys: u64, clients: usize, seconds: u64) {
    let mut c = TestCluster::with_spares(3, 1);
    // Production timings, not the tests' slow ones.
    c.args.clear();
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], process::WAIT);
    let started = Instant::now();
    process::workload::load(&c.config, 64, 0, keys);
    println!(
        "{keys} keys loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let baseline = writers(&c, clients, seconds, Arc::new(AtomicBool::new(false)))
        .join()
        .unwrap();
    println!(
        "  no change: {:.0} writes/s ({} errors)",
        baseline.throughput(),
        baseline.errors
    );

    // Add a fourth server, writers running.
    c.start_joining(3, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let during = writers(&c, clients, 3600, stop.clone());
    let asked = Instant::now();
    let address = c.address(3);
    let out = c.raftctl(&["add", "3", &address, "--stall", "120"]);
    let took = asked.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = during.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let rounds = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("catch-up round"))
        .count();
    println!(
        "  raftctl add to a voting member: {} ({rounds} catch-up rounds); writes meanwhile {:.0}/s ({:.0} % of no change, {} errors)",
        ms(took),
        during.throughput(),
        100.0 * during.throughput() / baseline.throughput(),
        during.errors
    );

    // Remove the leader, writers running.
    let all: Vec<NodeId> = c.ids();
    let (leader, term) = c.wait_for_agreed_leader(&all, process::WAIT);
    let stop = Arc::new(AtomicBool::new(false));
    let during = writers(&c, clients, 3600, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    let out = c.raftctl(&["remove", &leader.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let rest: Vec<NodeId> = all.iter().copied().filter(|&i| i != leader).collect();
    let (new_leader, new_term) = loop {
        let statuses = c.statuses();
        if let Some((l, t)) = process::agreed_leader(&statuses, &rest)
            && t > term
        {
            break (l, t);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elected = asked.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = during.join().unwrap();
    println!(
        "  remove the leader (node{leader}): node{new_leader} leads term {new_term} {} after the command; longest write meanwhile {} ({} errors)",
        ms(elected),
        ms(during.percentile(1.0)),
        during.errors
    );
}

fn main() {
    let keys: Vec<u64> = process::arg("--keys")
        .unwrap_or_else(|| "100000,1000000".into())
        .split(',')
        .map(|k| k.parse().expect("--keys N,N"))
        .collect();
    let clients = process::arg("--clients").map_or(16, |c| c.parse().expect("--clients N"));
    let seconds = process::arg("--seconds").map_or(10, |s| s.parse().expect("--seconds S"));
    for k in keys {
        run(k, clients, seconds);
    }
}
