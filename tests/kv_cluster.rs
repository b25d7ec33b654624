//! The key-value store on real processes: concurrent clients through the
//! client library while leaders and followers are killed and restarted,
//! then checks on the recorded history and on every node's log; and
//! raftctl's commands and exit codes, end to end.

mod process;

use std::time::{Duration, Instant};

use process::TestCluster;
use process::workload::{
    Workload, assert_acked_writes_kept, assert_linearizable, command_at, options,
};
use raft::client::{Client, ClientError};
use raft::consensus::NodeId;
use raft::kv::{Command, Op};

const LONG: Duration = Duration::from_secs(30);

/// Runs clients against an `n`-node cluster while killing and restarting
/// nodes, then checks everything.
fn linearizable_through_crashes(n: usize, node_args: &[&str]) {
    let mut c = TestCluster::new(n);
    c.args.extend(node_args.iter().map(|a| a.to_string()));
    c.start_all();
    let all = c.ids();
    c.wait_for_agreed_leader(&all, LONG);
    let workload = Workload::start(&c.config, 4);
    let mut done = c.wait_for_commits(0, 30);
    for round in 0..2 {
        // The leader, with -9, mid-run.
        let (leader, _) = c.wait_for_agreed_leader(&all, LONG);
        c.sigkill(leader);
        let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != leader).collect();
        c.wait_for_agreed_leader(&rest, LONG);
        done = c.wait_for_commits(done, 30);
        c.start(leader);
        // Then a follower, with -9 or SIGTERM.
        let (leader, _) = c.wait_for_agreed_leader(&all, LONG);
        let follower = (leader + 1 + round) % n as NodeId;
        if round == 0 {
            c.sigkill(follower);
        } else {
            assert!(c.sigterm(follower).success());
        }
        done = c.wait_for_commits(done, 30);
        c.start(follower);
    }
    c.wait_for_agreed_leader(&all, LONG);
    c.wait_for_commits(done, 30);
    let (history, acked) = workload.stop();
    let completed = assert_linearizable(&history);
    assert!(completed >= 100, "only {completed} operations completed");
    eprintln!(
        "{n} nodes: {completed} operations checked, {} acknowledged writes",
        acked.len()
    );

    // Every node ends with the same log; every acknowledged write is at
    // its index and was applied exactly once.
    let reference = process::converged_logs(&mut c, 0);
    assert_acked_writes_kept(&reference, &acked);
}

#[test]
fn three_nodes_linearizable_through_kills_and_restarts() {
    linearizable_through_crashes(3, &[]);
}

/// The same with lease reads (thesis §6.4.1) on every node: the clocks
/// of one machine keep well within the 10 % bound.
#[test]
fn three_nodes_with_lease_reads_linearizable_through_kills_and_restarts() {
    linearizable_through_crashes(3, &["--read-mode", "lease"]);
}

#[test]
fn five_nodes_linearizable_through_kills_and_restarts() {
    linearizable_through_crashes(5, &[]);
}

/// The same request (client id and number) sent twice applies once: the
/// second gets the first's answer, even though applying it again would now
/// fail its precondition.
#[test]
fn a_duplicated_request_applies_once() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    let mut client = Client::with_id(c.config.clone(), options(), 424242);
    client.put("counter", "1").unwrap();
    let index = client.cas("counter", "1", "2").unwrap();
    let again = Command {
        client: 424242,
        seq: client.last_seq(),
        op: Op::Cas {
            key: "counter".into(),
            from: "1".into(),
            to: "2".into(),
        },
    };
    assert_eq!(
        client.resend(again.clone()),
        Ok(index),
        "the duplicate is answered with the first outcome"
    );
    // A second client session resends it too, through any node.
    let mut other = Client::new(c.config.clone(), options());
    assert_eq!(other.resend(again), Ok(index));
    assert_eq!(client.get("counter").unwrap(), "2");
    // Every node's log, once each has caught up (a follower outside the
    // majority that acknowledged may still lag when the answer arrives).
    c.wait_for_converged();
    for id in c.ids() {
        let log = c.log_entries(id);
        let copies = (1..=log.len() as u64)
            .filter(|&i| command_at(&log, i).is_some_and(|c| c.client == 424242 && c.seq == 2))
            .count();
        assert_eq!(
            copies, 1,
            "node{id}: answered from the session, not appended again"
        );
    }

    // A client the cluster never saw, sending number 5: its session is
    // unknown, so the write is refused, and that answer arrives (rather
    // than the client timing out, which would be `Timeout`).
    let stranger = Command {
        client: 777,
        seq: 5,
        op: Op::Put {
            key: "counter".into(),
            value: "x".into(),
        },
    };
    assert_eq!(client.resend(stranger), Err(ClientError::SessionExpired));
    assert_eq!(client.get("counter").unwrap(), "2");
}

/// A client in another language, speaking the protocol by hand (as with
/// `nc`), numbers its writes 1, 2, 3 and then sends 2 again: it gets a
/// definite `stale_request` error at once, and nothing is appended (it
/// used to get `not_leader` naming the leader itself, after an entry was
/// appended, and a client following the hint looped until its timeout).
#[test]
fn a_write_numbered_below_the_clients_latest_gets_stale_request_by_raw_protocol() {
    use std::io::{BufRead, BufReader, Write};
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    let stream = std::net::TcpStream::connect(c.config.member(leader).unwrap().address()).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut ask = |seq: u64| -> serde_json::Value {
        let line = format!(
            "{{\"type\":\"write\",\"client\":5150,\"seq\":{seq},\"op\":\"put\",\"key\":\"k\",\"value\":\"v{seq}\"}}\n"
        );
        writer.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    };
    for seq in 1..=3 {
        let answer = ask(seq);
        assert_eq!(answer["type"], "written", "{answer}");
        assert_eq!(answer["outcome"], "ok", "{answer}");
    }
    let last_index = |c: &TestCluster| {
        c.statuses()[leader as usize]
            .status
            .as_ref()
            .unwrap()
            .last_log_index
    };
    let before = last_index(&c);
    let answer = ask(2);
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "stale_request", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("request 2 of client 5150") && message.contains("3"),
        "{message}"
    );
    assert_eq!(last_index(&c), before, "nothing was appended for it");
    // The latest number again is still answered from the session.
    let answer = ask(3);
    assert_eq!(answer["outcome"], "ok", "{answer}");
    assert_eq!(raftctl(&c, &["get", "k"]).1, "v3\n");
}

/// Spawns raftctl with `args` and closes the reading end of its standard
/// output before it writes anything, as `raftctl … | head -0` would; its
/// exit status and standard error.
fn raftctl_into_closed_pipe(c: &TestCluster, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(process::RAFTCTL);
    cmd.arg("--config").arg(&c.config_path).args(args);
    process::into_closed_pipe(cmd)
}

/// `raftctl log | head -1` and the like: every command that prints ends
/// quietly, with status 0, once its reader has gone (they used to panic
/// with "failed printing to stdout: Broken pipe" and exit 134).
#[test]
fn every_raftctl_command_that_prints_ends_quietly_when_its_reader_goes_away() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    assert_eq!(raftctl(&c, &["put", "k", "v"]).0, 0);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["members"],
        &["leader"],
        &["get", "k"],
        &["get", "k", "--stale"],
        &["append", "x"],
        &["log"],
        &["log", "--json"],
        &["events"],
        &["events", "--json"],
        &["events", "--follow"],
        &["watch"],
        &["snapshot"],
        &["transfer"],
        &["bench", "--clients", "1", "--seconds", "1"],
        &["bench", "--clients", "1", "--seconds", "1", "--json"],
    ] {
        let (code, stderr) = raftctl_into_closed_pipe(&c, args);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "raftctl {args:?}: {stderr}"
        );
        assert_eq!(code, Some(0), "raftctl {args:?}: {stderr}");
    }
}

/// A value longer than a command line may hold (about 128 KiB on Linux)
/// is given on standard input, as with etcdctl: `raftctl put big < file`.
#[test]
fn raftctl_put_reads_a_value_too_long_for_the_command_line_from_stdin() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    let big: String = (0..600_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let file = c.dir.path().join("big.txt");
    std::fs::write(&file, format!("{big}\n")).unwrap();
    let out = std::process::Command::new(process::RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .args(["put", "big"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Exactly what was given, its final newline included.
    assert_eq!(raftctl(&c, &["get", "big"]).1, format!("{big}\n\n"));
    let err = std::process::Command::new(process::RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .args(["put", "bad"])
        .stdin(std::fs::File::open(process::RAFTCTL).unwrap())
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(2), "{err:?}");
    assert!(String::from_utf8_lossy(&err.stderr).contains("not UTF-8"));
}

fn raftctl(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let out = c.raftctl(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `raftctl bench` of writes and of linearizable reads, summarized as JSON.
#[test]
fn raftctl_bench_writes_and_reads_with_a_json_summary() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    for (extra, workload) in [(None, "writes"), (Some("--reads"), "reads")] {
        let mut args = vec!["bench", "--clients", "2", "--seconds", "1", "--json"];
        args.extend(extra);
        let (code, out, err) = raftctl(&c, &args);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["workload"], workload, "{v}");
        assert_eq!(v["clients"], 2);
        assert!(v["ops"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["errors"], 0, "{v}");
        assert!(v["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{v}");
    }
}

/// Every raftctl command, as the README shows it, with its exit code.
#[test]
fn raftctl_commands_and_exit_codes() {
    let mut c = TestCluster::new(3);
    // Nobody home: every address refuses, so nothing was done (exit 1),
    // and raftctl says so at once, not after its timeout (a minute here).
    for args in [
        &["put", "color", "blue"][..],
        &["get", "color"],
        &["leader"],
        &["log"],
        &["append", "x"],
    ] {
        let started = Instant::now();
        let (code, _, err) = raftctl(&c, &[&["--timeout", "60000"][..], args].concat());
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.starts_with("raftctl: no node is running: every address in the configuration refused the connection")
                && err.contains("./boot_all_nodes.sh"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?} took {:?}, as if it had waited for its timeout",
            started.elapsed()
        );
    }
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    // However short the timeout, a leader that exists is found by
    // following the other nodes' hints.
    for _ in 0..3 {
        let (code, out, err) = raftctl(&c, &["--timeout", "0", "leader"]);
        assert_eq!(code, 0, "{err}");
        assert!(!out.is_empty());
    }

    assert_eq!(
        raftctl(&c, &["put", "color", "blue"]),
        (0, String::new(), String::new())
    );
    assert_eq!(raftctl(&c, &["get", "color"]).1, "blue\n");
    let (code, _, err) = raftctl(&c, &["cas", "color", "red", "green"]);
    assert_eq!(
        (code, err.trim()),
        (1, "raftctl: precondition failed: color is blue")
    );
    assert_eq!(raftctl(&c, &["cas", "color", "blue", "green"]).0, 0);
    assert_eq!(raftctl(&c, &["get", "color"]).1, "green\n");
    assert_eq!(raftctl(&c, &["delete", "color"]).0, 0);
    let (code, _, err) = raftctl(&c, &["delete", "color"]);
    assert_eq!((code, err.trim()), (1, "raftctl: key not found: color"));
    let (code, _, err) = raftctl(&c, &["get", "color"]);
    assert_eq!((code, err.trim()), (1, "raftctl: key not found: color"));

    // Values with spaces, newlines and any UTF-8 come back exactly.
    let odd = "two words\nand a line — ünïcödé ✓";
    assert_eq!(raftctl(&c, &["put", "odd key", odd]).0, 0);
    assert_eq!(raftctl(&c, &["get", "odd key"]).1, format!("{odd}\n"));

    let (code, out, _) = raftctl(&c, &["append", "SET 5"]);
    assert_eq!(code, 0);
    let index: u64 = out.trim().parse().unwrap();

    let (code, out, _) = raftctl(&c, &["leader"]);
    assert_eq!(code, 0);
    let leader: NodeId = out.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        out.split_whitespace().nth(1).unwrap(),
        c.config.member(leader).unwrap().address()
    );

    // The committed log of a follower shows the append at its index.
    let follower = (leader + 1) % 3;
    let row = c.wait_for("the follower to commit the append", LONG, |_| {
        let (_, out, _) = raftctl(&c, &["log", "--node", &follower.to_string()]);
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{index} ")))
            .map(str::to_string)
    });
    assert!(row.contains("append \"SET 5\""), "{row}");
    let (_, json, _) = raftctl(&c, &["log", "--node", &follower.to_string(), "--json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e["index"].is_u64() && e["term"].is_u64())
    );

    // A stale read from one follower, once it has applied the put.
    let value = c.wait_for("the follower to apply", LONG, |_| {
        let (code, out, _) = raftctl(
            &c,
            &["get", "odd key", "--stale", "--node", &follower.to_string()],
        );
        (code == 0).then_some(out)
    });
    assert_eq!(value, format!("{odd}\n"));

    // Usage errors exit 2.
    let (code, _, err) = raftctl(&c, &["cas", "only-two", "args"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "raftctl: the following required arguments were not provided: <TO> (see 'raftctl cas --help')"
    );
    assert_eq!(raftctl(&c, &["get", "k", "--stale", "--node", "9"]).0, 2);
    let out = std::process::Command::new(process::RAFTCTL)
        .args(["--config", "/nonexistent/config.txt", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.txt"));
    // A value over the limit is rejected: a definite failure, nothing
    // applied. (Through the library: a 1 MiB argument exceeds what Linux
    // allows one command-line argument.)
    let big = "x".repeat(raft::kv::MAX_VALUE_BYTES + 1);
    let err = Client::new(c.config.clone(), options())
        .put("big", &big)
        .unwrap_err();
    assert!(
        err.is_definite() && err.to_string().contains("value is"),
        "{err}"
    );
    assert_eq!(raftctl(&c, &["get", "big"]).0, 1);
    let help = raftctl(&c, &["--help"]).1;
    assert!(
        help.contains("Exit codes:") && help.contains("unknown outcome"),
        "{help}"
    );
}

/// Large values near the size limit: a follower that was down while a
/// dozen of them were written (more than one message's limit in total)
/// still catches up, because the leader sizes its batches in bytes.
#[test]
fn a_follower_catches_up_on_large_values() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    let behind = (leader + 1) % 3;
    c.sigkill(behind);
    let mut client = Client::new(c.config.clone(), options());
    let value = "v".repeat(900 * 1024);
    for k in 0..12 {
        client.put(&format!("big{k}"), &value).unwrap();
    }
    c.start(behind);
    let target = c.wait_for("the leader's commit index", LONG, |st| {
        st[leader as usize]
            .status
            .as_ref()
            .ok()
            .map(|s| s.commit_index)
    });
    c.wait_for("the follower to catch up", LONG, |st| {
        let s = st[behind as usize].status.as_ref().ok()?;
        (s.commit_index >= target && s.last_applied >= target).then_some(())
    });
    let got = client.get_stale("big11", Some(behind)).unwrap();
    assert_eq!(got.len(), value.len());
}

/// What an etcdctl user reaches for first (issue 22): the cluster named by
/// any member's address (`--endpoints` or `RAFT_ENDPOINTS`, no config
/// file), keys by prefix and by range, keys only, a limit, JSON lines,
/// linearizable or `--stale`.
#[test]
fn an_etcdctl_user_names_the_cluster_by_address_and_reads_ranges() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    // A range spanning many of the store's shards, and keys around it.
    for i in 0..120 {
        assert_eq!(
            raftctl(&c, &["put", &format!("app/{i:03}"), &format!("v{i}")]).0,
            0
        );
    }
    for key in ["apple", "b", "app"] {
        assert_eq!(raftctl(&c, &["put", key, "x"]).0, 0);
    }
    let endpoint = format!("127.0.0.1:{}", c.config.members[2].port);
    let elsewhere = tempfile::tempdir().unwrap();
    let by_address = |args: &[&str], env: bool| {
        let mut cmd = std::process::Command::new(process::RAFTCTL);
        cmd.current_dir(elsewhere.path()); // no config.txt here
        if env {
            cmd.env("RAFT_ENDPOINTS", format!("127.0.0.1:1,{endpoint}"));
        } else {
            cmd.args(["--endpoints", &endpoint]);
        }
        let out = cmd.args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = by_address(&["get", "--prefix", "app/"], false);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 240, "a key line and a value line for each");
    assert_eq!(&lines[..4], ["app/000", "v0", "app/001", "v1"]);
    assert_eq!(lines[238], "app/119");
    let (code, out, _) = by_address(&["get", "app/010", "--to", "app/013", "--keys-only"], true);
    assert_eq!(code, Some(0));
    assert_eq!(out, "app/010\napp/011\napp/012\n");
    let (code, out, err) = by_address(&["get", "--prefix", "app", "--limit", "3", "--json"], false);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "{\"key\":\"app\",\"value\":\"x\"}\n{\"key\":\"app/000\",\"value\":\"v0\"}\n{\"key\":\"app/001\",\"value\":\"v1\"}\n"
    );
    assert!(err.contains("more keys follow"), "{err}");
    let (code, out, _) = by_address(&["get", "--prefix", "", "--keys-only", "--stale"], false);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 123);
    let (code, _, err) = by_address(&["get", "nothing", "--json"], false);
    assert_eq!(code, Some(1), "{err}");
    // `-w json` (etcdctl's flag) on commands with no --json of their own.
    let json = |args: &[&str]| -> serde_json::Value {
        let (code, out, err) = by_address(args, false);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {out}: {e}"))
    };
    let put = json(&["-w", "json", "put", "b", "y"]);
    assert!(put["index"].as_u64().unwrap() > 120);
    let leader = json(&["leader", "-w", "json"]);
    assert!(
        leader["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(json(&["-w", "json", "get", "b"])["value"], "y");
    // etcdctl's move-leader.
    let moved = json(&["-w", "json", "transfer"]);
    assert_ne!(moved["from"], moved["to"], "{moved}");
    assert_eq!(json(&["-w", "json", "leader"])["id"], moved["to"]);
    let lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let (code, out, err) = by_address(args, false);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {l}: {e}")))
            .collect()
    };
    let nodes = lines(&["-w", "json", "nodes"]);
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[2]["port"], c.config.members[2].port);
    let snapshots = lines(&["-w", "json", "snapshot"]);
    assert_eq!(snapshots.len(), 3);
    assert!(
        snapshots.iter().all(|s| s["index"].as_u64() > Some(120)),
        "{snapshots:?}"
    );
    let file = elsewhere.path().join("backup.db");
    let saved = json(&["-w", "json", "snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(saved["keys"], 123, "{saved}");
    // Deleting by prefix: one command, the count printed (as etcdctl).
    let (code, out, err) = by_address(&["delete", "--prefix", "app/"], true);
    assert_eq!((code, out.trim()), (Some(0), "120"), "{err}");
    let (_, out, _) = by_address(&["get", "--prefix", "", "--keys-only"], false);
    assert_eq!(out, "app\napple\nb\n");
    // Nothing answers at the address given: said at once, exit 1.
    let mut cmd = std::process::Command::new(process::RAFTCTL);
    let out = cmd
        .current_dir(elsewhere.path())
        .args(["--endpoints", "127.0.0.1:1", "get", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no endpoint answered"));
}

/// `raftctl snapshot save FILE` through the leader while writes go on,
/// then `raftctl snapshot restore FILE` into a new cluster: every key
/// acknowledged before the save is in the file, and the new cluster ends
/// with exactly the file's keys and values.
#[test]
fn a_backup_saved_from_one_cluster_restores_into_a_new_one() {
    let mut a = TestCluster::new(3);
    a.start_all();
    a.wait_for_agreed_leader(&[0, 1, 2], LONG);
    let mut client = Client::new(a.config.clone(), options());
    for i in 0..300 {
        client
            .put(&format!("k{i}"), &format!("v{i}\nline two"))
            .unwrap();
    }
    // Writes go on during the save; those acknowledged before it began
    // must all be in the file.
    let config = a.config.clone();
    let writing = std::thread::spawn(move || {
        let mut client = Client::new(config, options());
        for i in 0..200 {
            client.put(&format!("during{i}"), "x").unwrap();
        }
    });
    let file = a.dir.path().join("backup.snap");
    let (code, out, err) = raftctl(&a, &["snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("saved the store as of index"), "{out}");
    writing.join().unwrap();
    let saved = raft::backup::read(&file).unwrap();
    for i in 0..300 {
        assert_eq!(
            saved.get(&format!("k{i}")),
            Some(format!("v{i}\nline two").as_str())
        );
    }
    assert!(!a.dir.path().join("backup.tmp").exists());

    let mut b = TestCluster::new(1);
    b.start_all();
    b.wait_for_agreed_leader(&[0], LONG);
    let (code, out, err) = raftctl(&b, &["snapshot", "restore", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("restored {} keys", saved.len())),
        "{out}"
    );
    let mut reader = Client::new(b.config.clone(), options());
    let query = raft::wire::RangeQuery {
        from: String::new(),
        to: None,
        prefix: String::new(),
        limit: 10_000,
        keys_only: false,
        stale: false,
    };
    let (kvs, more) = reader.range(query, None).unwrap();
    assert!(!more);
    let restored: Vec<(String, String)> = kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value.unwrap()))
        .collect();
    let mut expected: Vec<(String, String)> = saved
        .pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    expected.sort();
    assert_eq!(restored, expected);
    // Not a backup: said, exit 1.
    std::fs::write(&file, "hello\n").unwrap();
    let (code, _, err) = raftctl(&b, &["snapshot", "restore", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a backup"), "{err}");
}

/// `raftctl watch KEY`: every change to the key as it is applied, with its
/// log index, from an earlier index if asked (the node's change feed
/// replays it), and a clear refusal, naming where the feed starts, for an
/// index it no longer holds (here: compacted into a snapshot before a
/// restart).
#[test]
fn raftctl_watch_follows_a_key_from_an_index_and_says_when_that_is_gone() {
    use std::io::BufRead;
    let mut c = TestCluster::new(1);
    c.start_all();
    c.wait_for_agreed_leader(&[0], LONG);
    assert_eq!(raftctl(&c, &["put", "a", "1"]).0, 0);
    assert_eq!(raftctl(&c, &["put", "b", "x"]).0, 0);
    assert_eq!(raftctl(&c, &["put", "a", "2"]).0, 0);
    let mut watcher = std::process::Command::new(process::RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .args(["watch", "a", "--from", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = rx.recv_timeout(LONG).expect("a change line");
        serde_json::from_str(&line).unwrap()
    };
    let first = next();
    assert_eq!(
        (first["key"].as_str(), first["value"].as_str()),
        (Some("a"), Some("1"))
    );
    let second = next();
    assert_eq!(second["value"].as_str(), Some("2"));
    assert!(second["index"].as_u64() > first["index"].as_u64());
    // A change made now arrives as it is applied; b's never do.
    assert_eq!(raftctl(&c, &["put", "b", "y"]).0, 0);
    assert_eq!(raftctl(&c, &["delete", "a"]).0, 0);
    let third = next();
    assert_eq!(
        (third["key"].as_str(), third["deleted"].as_bool()),
        (Some("a"), Some(true))
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    // Compacted into a snapshot, and the node restarted from it: the feed
    // starts after the snapshot.
    assert_eq!(raftctl(&c, &["snapshot"]).0, 0);
    assert!(c.sigterm(0).success());
    c.start(0);
    c.wait_for_agreed_leader(&[0], LONG);
    let (code, _, err) = raftctl(&c, &["watch", "a", "--from", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("change feed starts at index"), "{err}");
}
