//! Log compaction on real processes, run as a user runs them: nodes take
//! snapshots past `--snapshot-threshold`, a follower that was down while
//! the leader compacted past it comes back through InstallSnapshot, a
//! `kill -9` while a snapshot is being written or received loses nothing
//! acknowledged, and the state directories stay bounded through a long
//! run of writes.

mod process;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process::{TestCluster, WAIT, dir_bytes};
use raft::client::{Client, ClientOptions};
use raft::consensus::NodeId;

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    }
}

fn cluster(threshold: &str) -> TestCluster {
    let mut c = TestCluster::new(3);
    c.args
        .extend(["--snapshot-threshold".to_string(), threshold.to_string()]);
    c
}

/// Puts `count` writes over `keys` keys from `clients` threads at once;
/// returns the last value acknowledged for each key.
fn write_many(
    c: &TestCluster,
    clients: usize,
    count: usize,
    keys: usize,
    value_bytes: usize,
) -> BTreeMap<String, String> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            let (config, acked) = (c.config.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut client = Client::new(config, options());
                for n in (k..count).step_by(clients) {
                    let key = format!("key{}", n % keys);
                    let mut value = format!("{n}-");
                    value.extend(std::iter::repeat_n(
                        'v',
                        value_bytes.saturating_sub(value.len()),
                    ));
                    client.put(&key, &value).expect("a write with a leader up");
                    // Keys are written by one thread each (n % keys with
                    // keys a multiple of clients), so the last ack wins.
                    acked.lock().unwrap().insert(key, value);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

/// Every acknowledged value, read from node `id`'s own state machine once
/// it has applied everything the cluster committed.
fn check_state_on(c: &TestCluster, id: NodeId, acked: &BTreeMap<String, String>) {
    let commit = c.wait_for_converged();
    c.wait_for(&format!("node{id} to apply up to {commit}"), WAIT, |st| {
        let s = st[id as usize].status.as_ref().ok()?;
        (s.last_applied >= commit).then_some(())
    });
    let mut client = Client::new(c.config.clone(), options());
    for (key, value) in acked {
        let got = client.get_stale(key, Some(id)).expect("a stale read");
        assert_eq!(&got, value, "node{id} has a different value for {key}");
    }
}

fn snapshot_index(c: &TestCluster, id: NodeId) -> u64 {
    c.statuses()[id as usize]
        .status
        .as_ref()
        .map_or(0, |s| s.snapshot_index)
}

/// Waits until `path` exists (a snapshot being written or received), or
/// gives up after `timeout`.
fn appears(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

/// `raftctl log` on a node whose log was compacted prints the entries it
/// still holds, from its first index (it used to print only the header
/// once the first index passed 1,000, raftctl's page: the node answered
/// the page 1..=1000, wholly below its first index, with no entries, and
/// raftctl stopped there).
#[test]
fn raftctl_log_after_compaction_prints_from_the_first_index() {
    let mut c = cluster("200");
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    write_many(&c, 4, 1600, 20, 20);
    c.wait_for("a snapshot past index 1,300 on the leader", WAIT, |st| {
        let s = st[leader as usize].status.as_ref().ok()?;
        (s.snapshot_index > 1300).then_some(())
    });
    let out = c.raftctl(&["log", "--node", &leader.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let from: u64 = stderr
        .split("printing from ")
        .nth(1)
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no note of the compacted entries: {stderr}"));
    assert!(from > 1000, "{stderr}");
    let rows: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(rows.len() > 1, "only {} rows after the header", rows.len());
    assert_eq!(rows[0], from);
    assert!(
        rows.windows(2).all(|w| w[1] == w[0] + 1),
        "rows skip: {rows:?}"
    );
}

/// A 3-node cluster (snapshots every 200 entries) whose follower `victim`
/// was killed, then left behind by writes the leader has compacted into
/// its snapshot; the victim is still down. Returns the cluster, leader,
/// victim, and the writes acknowledged.
fn follower_behind_a_compaction() -> (TestCluster, NodeId, NodeId, BTreeMap<String, String>) {
    let mut c = cluster("200");
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let mut acked = write_many(&c, 4, 100, 40, 20);
    let victim = (leader + 1) % 3;
    c.sigkill(victim);
    let before = c.log_entries(victim).last().map_or(0, |e| e.index);
    acked.extend(write_many(&c, 4, 1200, 40, 20));
    let leader_snapshot = snapshot_index(&c, leader);
    assert!(
        leader_snapshot > before + 1,
        "the leader compacted past the follower's log ({leader_snapshot} vs {before})"
    );
    (c, leader, victim, acked)
}

/// §7: a follower down while the others compacted past its log comes back
/// through InstallSnapshot, with no operator action, and ends with the
/// same state machine.
#[test]
fn a_follower_down_through_compaction_catches_up_through_install_snapshot() {
    let (mut c, leader, victim, acked) = follower_behind_a_compaction();
    c.start(victim);
    check_state_on(&c, victim, &acked);
    let log = c.activity_log(victim);
    assert!(
        log.contains("installed snapshot from the leader"),
        "the follower caught up by log, not by snapshot:\n{log}"
    );
    assert!(
        c.activity_log(leader)
            .contains(&format!("node{victim} has snapshot up to index")),
        "the leader logs the snapshot it sent"
    );
    // Its directory holds the snapshot and a short log.
    let dir = c.state_dir().join(format!("node{victim}"));
    assert!(dir.join("snapshot.jsonl").exists());
    assert!(!dir.join("snapshot.recv").exists());
}

/// Issue 19: one damaged snapshot file on the leader stranded every
/// follower that needed it. The follower rightly refused the CRC, but the
/// leader resent the same file about 7 times a second, calling the
/// follower unreachable. Now the leader checks the file before a transfer
/// starts, replaces a damaged one from its state machine, and the
/// follower catches up.
#[test]
fn a_damaged_snapshot_on_the_leader_is_replaced_and_the_follower_needing_it_catches_up() {
    let (mut c, leader, victim, acked) = follower_behind_a_compaction();
    // The writes have stopped, so the leader's snapshot stays this file.
    let path = c.state_dir().join(format!("node{leader}/snapshot.jsonl"));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = state_end(&bytes) - 3;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    c.start(victim);
    check_state_on(&c, victim, &acked);
    let log = c.activity_log(leader);
    assert!(
        log.contains("cannot be sent")
            && log.contains("snapshot.jsonl: corrupt at byte offset")
            && log.contains("CRC"),
        "the leader names its damaged file:\n{log}"
    );
    assert!(
        c.activity_log(victim)
            .contains("installed snapshot from the leader"),
        "the follower caught up through a sound snapshot"
    );
    // How long the leader took from finding the damage to a sound
    // snapshot installed on the follower.
    let lines: Vec<&str> = log.lines().collect();
    let found = lines
        .iter()
        .position(|l| l.contains("cannot be sent"))
        .unwrap();
    let sent = lines[found..]
        .iter()
        .find(|l| l.contains(&format!("node{victim} has snapshot up to index")))
        .expect("a sound snapshot sent after the damage was found");
    eprintln!(
        "damaged snapshot found at {}, a sound one installed by {}",
        &lines[found][..23],
        &sent[..23]
    );
}

/// `kill -9` while a node writes a snapshot of its own, and while a
/// follower receives one: at restart the half-written file is discarded,
/// the previous snapshot and the log are intact, and nothing acknowledged
/// is lost.
#[test]
fn kill_9_while_a_snapshot_is_written_or_received_loses_nothing_acknowledged() {
    // A store of a few megabytes, so that writing or receiving a snapshot
    // lasts long enough to be caught in the act; no automatic snapshots.
    let mut c = cluster("1000000");
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let mut acked = write_many(&c, 8, 3000, 3000, 2000);

    // 1. A node writing its own snapshot (`raftctl snapshot --node`).
    let writer = (leader + 1) % 3;
    let tmp = c.state_dir().join(format!("node{writer}/snapshot.tmp"));
    let mut caught = false;
    for _ in 0..5 {
        let ctl = std::process::Command::new(process::RAFTCTL)
            .args(["--config"])
            .arg(&c.config_path)
            .args(["snapshot", "--node", &writer.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        caught = appears(&tmp, Duration::from_secs(5));
        c.sigkill(writer);
        let _ = process::wait_exit(&mut { ctl }, Duration::from_secs(10));
        c.start(writer);
        if caught {
            break;
        }
        acked.extend(write_many(&c, 8, 800, 3000, 2000));
    }
    assert!(caught, "never saw node{writer} writing a snapshot");
    c.wait_for_agreed_leader(&c.ids(), WAIT);
    check_state_on(&c, writer, &acked);
    assert!(
        !tmp.exists(),
        "the half-written snapshot was removed at start"
    );

    // 2. A follower receiving one: it is down while the others compact
    // (a snapshot on every node), then killed mid-transfer.
    let (leader, _) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let receiver = (leader + 2) % 3;
    c.sigkill(receiver);
    // More than the 1,000 trailing entries a snapshot leaves in the log.
    acked.extend(write_many(&c, 8, 2400, 3000, 2000));
    assert!(c.raftctl(&["snapshot"]).status.code().is_some());
    let recv = c.state_dir().join(format!("node{receiver}/snapshot.recv"));
    c.start(receiver);
    let caught = appears(&recv, Duration::from_secs(20));
    c.sigkill(receiver);
    assert!(caught, "never saw node{receiver} receiving a snapshot");
    c.start(receiver);
    check_state_on(&c, receiver, &acked);
    assert!(
        c.activity_log(receiver)
            .contains("installed snapshot from the leader")
    );
    for id in c.ids() {
        check_state_on(&c, id, &acked);
    }
}

/// Under a sustained write load the state directories stay bounded: the
/// log past the snapshot stays near the threshold (plus what arrives while
/// a snapshot is taken and one segment of covered entries), and only one
/// snapshot is kept.
#[test]
fn disk_use_stays_bounded_through_a_long_run_of_writes() {
    const THRESHOLD: u64 = 256 * 1024;
    let mut c = cluster("256KiB");
    c.start_all();
    c.wait_for_agreed_leader(&c.ids(), WAIT);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|k| {
            let (stop, config, written) = (stop.clone(), c.config.clone(), written.clone());
            std::thread::spawn(move || {
                let mut client = Client::new(config, options());
                let value = "x".repeat(100);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    client
                        .put(&format!("k{}", (n * 4 + k) % 500), &value)
                        .unwrap();
                    written.fetch_add(1, Ordering::SeqCst);
                }
                n
            })
        })
        .collect();
    // Until the log has filled four times over (a record is about 250
    // bytes), however long a loaded machine takes, sampling disk use.
    let enough = 4 * THRESHOLD / 250;
    let (mut max_log, mut max_dir) = (0u64, 0u64);
    let deadline = Instant::now() + 4 * WAIT;
    while written.load(Ordering::SeqCst) < enough {
        assert!(
            Instant::now() < deadline,
            "only {} of {enough} writes in {:?}",
            written.load(Ordering::SeqCst),
            4 * WAIT
        );
        for s in c.statuses().iter().filter_map(|s| s.status.as_ref().ok()) {
            max_log = max_log.max(s.log_bytes);
        }
        for id in c.ids() {
            max_dir = max_dir.max(dir_bytes(&c.state_dir().join(format!("node{id}"))));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let writes: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    let snapshots = snapshot_index(&c, 0);
    eprintln!(
        "{writes} writes: largest log {max_log} bytes, largest state directory {max_dir} bytes (threshold {THRESHOLD})"
    );
    assert!(
        writes * 250 > 2 * THRESHOLD,
        "too few writes ({writes}) to fill the log twice"
    );
    assert!(snapshots > 0, "no snapshot was taken");
    // 500 keys of 100 bytes make a snapshot of about 70 KB; the threshold
    // twice over leaves room for a segment of covered entries and the
    // writes that arrive while a snapshot is written.
    assert!(
        max_log <= 2 * THRESHOLD,
        "log grew to {max_log} bytes, over twice the threshold"
    );
    assert!(
        max_dir <= 2 * THRESHOLD + 3 * 100 * 1024,
        "a state directory grew to {max_dir} bytes"
    );
}

/// A snapshot file damaged on disk (not something a crash produces: it
/// is written aside and renamed into place): the node sets it aside with
/// the log after it (which has nothing to run on from), says so naming
/// the file and the offset, and repairs itself from the leader, instead
/// of starting from less than it had. (A node with no one to repair from
/// stops instead; see the storage unit tests.)
#[test]
fn a_damaged_snapshot_file_is_set_aside_and_the_node_repairs_itself() {
    let mut c = cluster("1000000");
    c.start_all();
    c.wait_for_agreed_leader(&c.ids(), WAIT);
    write_many(&c, 2, 20, 10, 10);
    assert!(c.raftctl(&["snapshot", "--node", "0"]).status.success());
    assert!(c.sigterm(0).success());
    let path = c.state_dir().join("node0/snapshot.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = state_end(&bytes) - 2;
    bytes[last] ^= 0x01; // inside the last key's line
    std::fs::write(&path, &bytes).unwrap();
    c.start(0);
    let last = c.wait_for_converged();
    assert!(last > 20);
    let log = c.activity_log(0);
    assert!(
        log.contains("snapshot.jsonl: corrupt at byte offset 128")
            && log.contains("snapshot.jsonl.damaged"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(c.state_dir().join("node0/snapshot.jsonl.damaged")).unwrap(),
        bytes,
        "kept aside as it was"
    );
}

/// Where a snapshot file's state ends (the membership line follows): the
/// header's `size` after its 128 bytes.
fn state_end(file: &[u8]) -> usize {
    let header: serde_json::Value = serde_json::from_slice(&file[..128]).unwrap();
    128 + header["size"].as_u64().unwrap() as usize
}
