//! A real disk that fills up under a running node: the node must log the
//! file and the error and exit with status 1 without acknowledging what
//! it could not write, and once the fault is gone and the node restarted,
//! nothing acknowledged may be missing.
//!
//! The full disk is a file-size limit (`ulimit -f`) on one node's process,
//! with SIGXFSZ ignored, so a write past the limit fails with EFBIG ("File
//! too large") as a write to a full filesystem fails with ENOSPC: the same
//! error path, with no root privileges or loop devices needed.

mod process;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use process::{TEST_TIMING, TestCluster, WAIT};
use raft::client::{Client, ClientOptions};
use raft::kv::Command;

#[test]
fn a_full_disk_stops_the_node_and_loses_nothing_acknowledged() {
    let mut c = TestCluster::new(3);
    // Node 0 times out first, so it most likely leads; either way its log
    // reaches the limit about when the others' logs reach that size.
    c.args = ["--election-timeout", "300..400", "--heartbeat", "100"]
        .map(String::from)
        .to_vec();
    c.start_under_shell(0, "trap '' XFSZ; ulimit -f 64");
    c.args = TEST_TIMING.map(String::from).to_vec();
    c.start(1);
    c.start(2);
    c.wait_for_agreed_leader(&c.ids(), WAIT);

    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    let mut client = Client::new(c.config.clone(), options);
    let value = "v".repeat(1000);
    let mut acked = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    let mut k = 0;
    // Write until node 0's disk is full and it has stopped, then some more.
    let mut after_stop = 0;
    while after_stop < 20 {
        assert!(Instant::now() < deadline, "node 0 never filled its disk");
        let key = format!("k{k}");
        k += 1;
        if client.put(&key, &value).is_ok() {
            acked.insert(key, value.clone());
        }
        if !c.is_running(0) {
            after_stop += 1;
        }
    }
    let status = c.wait_for_exit(0, WAIT);
    assert_eq!(status.code(), Some(1), "a storage failure exits with 1");
    let stderr = c.stderr(0);
    assert!(
        stderr.contains("cannot persist state")
            && stderr.contains("/log-0")
            && stderr.contains("File too large"),
        "the node names the file and the error: {stderr}"
    );
    assert!(
        c.activity_log(0).contains("cannot persist state"),
        "and says so in its activity log"
    );

    // The fault is gone: node 0 restarts, recovers what reached its disk
    // (cutting a torn final record), and catches up.
    c.start(0);
    let last = c.wait_for_converged();
    for (key, value) in &acked {
        assert_eq!(client.get(key).as_ref(), Ok(value), "acknowledged {key}");
    }
    // Every node's log holds every acknowledged write exactly once.
    for id in c.ids() {
        let log = c.log_entries(id);
        assert_eq!(log.len() as u64, last, "node{id}");
        let mut seen = BTreeMap::new();
        for e in &log {
            if let raft::consensus::Payload::Command(d) = &e.payload
                && let Some(Command {
                    seq, client: who, ..
                }) = Command::decode(d)
                && who == client.id()
            {
                *seen.entry(seq).or_insert(0) += 1;
            }
        }
        assert!(
            seen.values().all(|&n| n == 1),
            "node{id} applied a write twice"
        );
        assert!(
            seen.len() >= acked.len(),
            "node{id} lost acknowledged writes"
        );
    }
    let recovered = c.activity_log(0);
    assert!(
        recovered.matches("started on").count() == 2,
        "node 0 ran twice:\n{recovered}"
    );
}
