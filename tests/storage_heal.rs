//! Storage faults on real processes (issue 19): what an operator with a
//! bad day does to a stopped node's files, and what the cluster must do
//! about it. The crash model (kill -9, torn writes, a full disk) is tested
//! elsewhere; here the disk itself loses or damages what was written.

mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use process::{TestCluster, WAIT};
use raft::client::{Client, ClientOptions};
use raft::consensus::NodeId;

fn client(c: &TestCluster) -> Client {
    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    Client::new(c.config.clone(), options)
}

fn node_dir(c: &TestCluster, id: NodeId) -> PathBuf {
    c.state_dir().join(format!("node{id}"))
}

/// The segment a node appends to: the one with the highest first index.
fn last_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("log-") && name.ends_with(".jsonl")
        })
        .collect();
    segments.sort();
    segments.pop().expect("a log segment")
}

/// Milliseconds from the last activity-log line containing `from` to the
/// first after it containing `to` (lines start with an RFC 3339 time).
fn millis_between(log: &str, from: &str, to: &str) -> i64 {
    let at = |line: &str| -> i64 {
        // 2026-12-07T02:26:59.500Z: the time of day is enough here.
        let time = &line[11..23];
        let (h, m, s) = (&time[0..2], &time[3..5], &time[6..12]);
        let seconds: f64 = s.parse().unwrap();
        (h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60) * 1000
            + (seconds * 1000.0) as i64
    };
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.iter().rposition(|l| l.contains(from)).unwrap();
    let end = lines[start..].iter().find(|l| l.contains(to)).unwrap();
    at(end) - at(lines[start])
}

type Damage = fn(&mut Vec<u8>);

/// The three damages to a follower's last, acknowledged record that issue
/// 19 found (each was cut at restart as if a crash had torn it, and the
/// follower then never caught up, the leader taking its acknowledgement
/// as still good, which took the cluster's availability with it), and
/// damage at the start of its log (which stopped the node).
#[test]
fn a_follower_whose_acknowledged_tail_is_damaged_repairs_itself_and_the_cluster_stays_available() {
    let damages: [(&str, Damage); 4] = [
        ("7 bytes cut off its last record", |b| {
            b.truncate(b.len() - 7)
        }),
        // (Alone, this stops a node: tests/cluster.rs.)
        ("a bit flipped inside its first record", |b| b[15] ^= 0x20),
        ("a bit flipped inside its last record", |b| {
            let n = b.len();
            b[n - 5] ^= 0x01
        }),
        ("a bit flipped in the newline before its last record", |b| {
            let before_last = b[..b.len() - 1].iter().rposition(|&c| c == b'\n').unwrap();
            b[before_last] ^= 0x01
        }),
    ];
    let mut c = TestCluster::new(3);
    c.start_all();
    let mut client = client(&c);
    for (round, (what, damage)) in damages.into_iter().enumerate() {
        let (leader, _) = c.wait_for_agreed_leader(&c.ids(), WAIT);
        for k in 0..5 {
            client.put(&format!("r{round}k{k}"), "v").unwrap();
        }
        c.wait_for_converged();
        let followers: Vec<NodeId> = c.ids().into_iter().filter(|&i| i != leader).collect();
        let (damaged, other) = (followers[0], followers[1]);
        c.sigterm(damaged);
        let path = last_segment(&node_dir(&c, damaged));
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        c.start(damaged);
        // It repairs from the leader, and says so.
        c.wait_for_converged();
        let log = c.activity_log(damaged);
        assert!(
            log.contains("storage fault") && log.contains("repaired: our log holds entries"),
            "{what}: node{damaged}'s activity log:\n{log}"
        );
        eprintln!(
            "{what}: repaired {} ms after its restart",
            millis_between(&log, "started on", "repaired: our log holds entries")
        );
        assert!(
            c.activity_log(leader).contains("no longer holds entries"),
            "{what}: the leader names the follower and what it lost"
        );
        // And it counts: with the other follower gone, the leader and the
        // repaired follower are a majority that takes writes.
        c.sigkill(other);
        for k in 0..3 {
            client
                .put(&format!("r{round}after{k}"), "w")
                .unwrap_or_else(|e| panic!("{what}: write {k} with node{other} down: {e}"));
        }
        c.start(other);
    }
    c.wait_for_converged();
    for round in 0..4 {
        for k in 0..5 {
            assert_eq!(
                client.get(&format!("r{round}k{k}")).unwrap(),
                "v",
                "nothing acknowledged is lost"
            );
        }
    }
}

/// The term and vote as a state file holds them: (term, voted_for).
fn term_and_vote(path: &Path) -> (u64, Option<u64>) {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text[9..]).unwrap();
    (json["term"].as_u64().unwrap(), json["voted_for"].as_u64())
}

/// Issue 19: a node whose `state.json` was deleted restarted at term 0
/// and voted a second time in a term it had voted in.
#[test]
fn a_node_that_loses_state_json_keeps_its_vote_and_one_that_loses_both_copies_waits_for_a_floor() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    client(&c).put("k", "v").unwrap();
    c.wait_for_converged();
    let node = c.ids().into_iter().find(|&i| i != leader).unwrap();
    c.sigterm(node);
    let dir = node_dir(&c, node);
    let before = term_and_vote(&dir.join("state.json"));
    assert!(before.0 >= 1);
    std::fs::remove_file(dir.join("state.json")).unwrap();
    c.start(node);
    c.wait_for_converged();
    let log = c.activity_log(node);
    let started = log.lines().rfind(|l| l.contains("started on")).unwrap();
    assert!(
        started.contains(&format!("with term {},", before.0)),
        "it starts in the term it had: {started}"
    );
    assert_eq!(
        term_and_vote(&dir.join("state.copy.json")).1,
        before.1,
        "and with its vote"
    );
    assert!(log.contains("state.json is missing; rewritten from the other copy"));

    // Both copies gone: it may have voted in a term nothing records.
    c.sigterm(node);
    std::fs::remove_file(dir.join("state.json")).unwrap();
    std::fs::remove_file(dir.join("state.copy.json")).unwrap();
    c.start(node);
    let status = c.wait_for_exit(node, WAIT);
    assert_eq!(status.code(), Some(1));
    let stderr = c.stderr(node);
    assert!(
        stderr.contains("may have voted") && stderr.contains("--vote-floor"),
        "{stderr}"
    );
    assert!(!dir.join("state.json").exists(), "nothing written");
    // The operator does as it says.
    let highest = c
        .statuses()
        .iter()
        .filter_map(|s| s.status.as_ref().ok().map(|s| s.term))
        .max()
        .unwrap();
    let args = c.args.clone();
    c.args
        .extend(["--vote-floor".to_string(), highest.to_string()]);
    c.start(node);
    c.args = args;
    c.wait_for_converged();
    let (term, vote) = term_and_vote(&dir.join("state.json"));
    assert!(term >= highest);
    assert!(
        term > highest || vote == Some(node),
        "no vote for anyone else in term {highest}"
    );
}

#[test]
fn a_node_started_on_another_nodes_state_is_refused() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_agreed_leader(&c.ids(), WAIT);
    client(&c).put("k", "v").unwrap();
    c.wait_for_converged();
    c.sigterm(0);
    c.sigterm(2);
    // Node 0's directory copied into node 2's place.
    let (from, to) = (node_dir(&c, 0), node_dir(&c, 2));
    std::fs::remove_dir_all(&to).unwrap();
    std::fs::create_dir(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let state = std::fs::read(to.join("state.json")).unwrap();
    c.start(2);
    let status = c.wait_for_exit(2, WAIT);
    assert_eq!(status.code(), Some(1));
    let stderr = c.stderr(2);
    assert!(
        stderr.contains("this is the state of node 0 (of cluster")
            && stderr.contains("not of node 2"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(to.join("state.json")).unwrap(), state);
}
