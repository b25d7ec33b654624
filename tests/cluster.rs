//! Real processes, driven as the courses drive them: start nodes one by
//! one, kill leaders with SIGTERM and SIGKILL, restart them, corrupt their
//! files, send them garbage.

mod process;

use raft::storage::segment_name;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use process::{TestCluster, WAIT, agreed_leader, leaders};
use raft::client::{Client, ClientOptions};
use raft::consensus::{NodeId, Payload};
use raft::kv::{Command, Op};

fn client(c: &TestCluster) -> Client {
    Client::new(
        c.config.clone(),
        ClientOptions {
            timeout: LONG,
            ..ClientOptions::default()
        },
    )
}

fn command_of(p: &Payload) -> Option<Command> {
    match p {
        Payload::Command(d) => Command::decode(d),
        Payload::Noop | Payload::Membership(_) => None,
    }
}

const LONG: Duration = Duration::from_secs(30);

/// Waits until every node in `ids` is reachable, has no leader, and has
/// lost at least two more pre-votes (thesis §9.6) in its activity log,
/// without its term moving: proof that elections were tried and failed,
/// rather than a sleep. (Without a majority a node never wins a pre-vote,
/// so it never takes a new term.)
fn wait_for_failed_elections(c: &TestCluster, ids: &[NodeId]) {
    let lost = |id: NodeId| c.activity_log(id).matches("pre-vote lost for term").count();
    // A leader handed over to on SIGTERM may lead a minority for up to an
    // election timeout before CheckQuorum makes it step down.
    let start: Vec<(u64, usize)> = c.wait_for("nodes reachable, none leading", LONG, |st| {
        ids.iter()
            .map(|&id| {
                let s = st[id as usize].status.as_ref().ok()?;
                (s.role != "leader").then(|| (s.term, lost(id)))
            })
            .collect()
    });
    c.wait_for("two more failed pre-votes on each node", LONG, |st| {
        for (k, &id) in ids.iter().enumerate() {
            let s = st[id as usize].status.as_ref().ok()?;
            assert_ne!(
                s.role, "leader",
                "node{id} became leader without a majority: {s:?}"
            );
            assert_eq!(
                s.term, start[k].0,
                "node{id}'s term moved without a majority"
            );
            if lost(id) < start[k].1 + 2 {
                return None;
            }
        }
        Some(())
    });
}

/// The courses' crash test: five nodes started one by one (no leader with
/// one or two, a leader at three that stays when four and five join),
/// leaders killed until a minority is left and no leader can be elected,
/// then restarted: the cluster recovers with one leader and equal logs.
#[test]
fn course_script_start_one_by_one_kill_leaders_and_recover() {
    let mut c = TestCluster::new(5);
    c.start(0);
    wait_for_failed_elections(&c, &[0]);
    c.start(1);
    wait_for_failed_elections(&c, &[0, 1]);
    c.start(2);
    let (leader, term) = c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    c.start(3);
    c.start(4);
    let (leader_after, term_after) = c.wait_for_agreed_leader(&[0, 1, 2, 3, 4], LONG);
    assert_eq!(
        (leader_after, term_after),
        (leader, term),
        "nodes 3 and 4 joining must not disturb the leader"
    );

    // Kill leaders until only two nodes are left.
    let mut alive: Vec<NodeId> = c.ids();
    let mut killed = Vec::new();
    let mut current = (leader, term);
    for round in 0..3 {
        let status = c.sigterm(current.0);
        assert!(
            status.success(),
            "SIGTERM must be a clean exit, got {status}"
        );
        assert!(
            c.activity_log(current.0)
                .contains("stopped: received SIGTERM")
        );
        alive.retain(|&id| id != current.0);
        killed.push(current.0);
        if round < 2 {
            let next = c.wait_for_agreed_leader(&alive, LONG);
            assert!(next.1 > current.1, "a new leader has a higher term");
            current = next;
        }
    }
    assert_eq!(alive.len(), 2);
    wait_for_failed_elections(&c, &alive);

    // Restart everyone: one leader, and logs converge.
    for &id in &killed {
        c.start(id);
    }
    let all = c.ids();
    let (leader, _) = c.wait_for_agreed_leader(&all, LONG);
    c.wait_for_converged();
    assert_eq!(leaders(&c.statuses()), vec![leader]);
    let reference = c.log_entries(0);
    for id in all {
        assert_eq!(
            c.log_entries(id),
            reference,
            "node{id}'s durable log differs from node0's"
        );
    }
}

/// Appends run continuously while a follower and then the leader are
/// killed with SIGKILL and restarted. Every append the cluster
/// acknowledged must be in every node's log at its index afterwards.
#[test]
fn kill_9_during_replication_loses_nothing_acknowledged() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);

    let config = c.config.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let options = ClientOptions {
                timeout: Duration::from_secs(10),
                ..ClientOptions::default()
            };
            let mut client = Client::new(config, options);
            let mut acked = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                let data = format!("entry-{k}");
                if let Ok(index) = client.append(&data) {
                    acked.push((index, data));
                }
            }
            acked
        })
    };
    let mut progress = c.wait_for_commits(0, 20);
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    let follower = (leader + 1) % 3;
    c.sigkill(follower);
    progress = c.wait_for_commits(progress, 20);
    c.start(follower);
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    c.sigkill(leader);
    let rest: Vec<NodeId> = c.ids().into_iter().filter(|&id| id != leader).collect();
    c.wait_for_agreed_leader(&rest, LONG);
    c.wait_for_commits(progress, 20);
    c.start(leader);
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    stop.store(true, Ordering::SeqCst);
    let acked = writer.join().unwrap();
    assert!(
        acked.len() >= 40,
        "only {} appends were acknowledged",
        acked.len()
    );

    // Let every node catch up to the same commit index, then stop them
    // all and read their durable logs.
    c.wait_for_converged();
    for id in c.ids() {
        assert!(c.sigterm(id).success());
    }
    for id in c.ids() {
        let log = c.log_entries(id);
        for (index, data) in &acked {
            let op = log
                .get(*index as usize - 1)
                .and_then(|e| command_of(&e.payload))
                .map(|c| c.op);
            assert_eq!(
                op,
                Some(Op::Append { data: data.clone() }),
                "node{id} lost acknowledged entry {index} ({data})"
            );
        }
    }
}

/// A crash in the middle of writing a log record leaves a partial final
/// line. The node cuts it at restart, says so in its activity log, and
/// catches up from the leader.
#[test]
fn a_torn_final_log_record_is_cut_at_restart() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    for k in 0..5 {
        client(&c).append(&format!("x{k}")).unwrap();
    }
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    let victim = (leader + 1) % 3;
    c.sigkill(victim);
    let path = c
        .state_dir()
        .join(format!("node{victim}"))
        .join(segment_name(1));
    let before = std::fs::read(&path).unwrap();
    let mut torn = before.clone();
    torn.extend_from_slice(b"0badc0de {\"index\":99,\"te");
    std::fs::write(&path, &torn).unwrap();

    c.start(victim);
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    assert!(
        c.activity_log(victim).contains("cut a torn final record"),
        "{}",
        c.activity_log(victim)
    );
    client(&c).append("after").unwrap();
    c.wait_for("the restarted node to catch up", LONG, |st| {
        let s = st[victim as usize].status.as_ref().ok()?;
        (s.commit_index >= 7).then_some(())
    });
    let log = c.log_entries(victim);
    let after = Some(Op::Append {
        data: "after".into(),
    });
    assert!(
        log.iter()
            .any(|e| command_of(&e.payload).map(|c| c.op) == after)
    );
}

/// Damage to a synced record is not a torn write: a node with no one to
/// repair it from must refuse to start, exit 1, and name the file and
/// byte offset.
#[test]
fn a_damaged_record_stops_a_node_with_no_one_to_repair_it_from() {
    // Alone, a node cannot fetch damaged entries from a leader (with
    // peers it can: tests/storage_heal.rs), so it must not run on without
    // them.
    let mut c = TestCluster::new(1);
    c.start_all();
    c.wait_for_agreed_leader(&[0], LONG);
    client(&c).append("a").unwrap();
    client(&c).append("b").unwrap();
    assert!(c.sigterm(0).success());
    let path = c.state_dir().join("node0").join(segment_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.iter().filter(|&&b| b == b'\n').count() >= 2);
    bytes[15] ^= 0x20; // inside the first record's JSON
    std::fs::write(&path, &bytes).unwrap();

    let out = c.node_command(0).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&segment_name(1)) && stderr.contains("byte offset 0"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file was left as it was"
    );
}

fn request_line(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    line: &[u8],
) -> serde_json::Value {
    writer.write_all(line).unwrap();
    let mut response = String::new();
    reader.read_line(&mut response).unwrap();
    serde_json::from_str(&response).unwrap_or_else(|e| panic!("bad response {response:?}: {e}"))
}

/// Garbage, unknown requests and a line over the size limit each get an
/// error reply, and the same connection keeps working.
#[test]
fn garbage_and_oversized_requests_get_errors_and_the_node_keeps_serving() {
    let mut c = TestCluster::new(1);
    c.start(0);
    c.wait_for_agreed_leader(&[0], LONG);
    let stream = TcpStream::connect(c.config.member(0).unwrap().address()).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);

    let r = request_line(&mut reader, &mut writer, b"this is not json\n");
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{r}"
    );
    let r = request_line(&mut reader, &mut writer, b"{\"type\":\"format_disk\"}\n");
    assert_eq!(r["code"], "bad_request", "{r}");
    assert!(r["message"].as_str().unwrap().contains("format_disk"));
    let r = request_line(
        &mut reader,
        &mut writer,
        b"{\"type\":\"write\",\"client\":1,\"seq\":\"one\",\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"}\n",
    );
    assert_eq!(r["code"], "bad_request", "{r}");

    let mut huge = vec![b'x'; raft::wire::MAX_LINE + 10];
    huge.push(b'\n');
    let r = request_line(&mut reader, &mut writer, &huge);
    assert_eq!(r["code"], "too_large", "{r}");

    let r = request_line(&mut reader, &mut writer, b"{\"type\":\"status\"}\r\n");
    assert_eq!(
        (r["type"].as_str(), r["role"].as_str()),
        (Some("status"), Some("leader")),
        "{r}"
    );
    let r = request_line(
        &mut reader,
        &mut writer,
        b"{\"type\":\"write\",\"client\":1,\"seq\":1,\"op\":\"append\",\"data\":\"ok\"}\n",
    );
    assert_eq!(
        (r["type"].as_str(), r["outcome"].as_str()),
        (Some("written"), Some("ok")),
        "{r}"
    );
    assert!(c.is_running(0));
}

fn assert_node_0_answers_as_leader(c: &TestCluster) {
    let out = c.raftctl(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["role"], "leader");
}

/// Many kept-open connections, idle or stuck half-way through a line, must
/// not starve the bounded worker pool: a new client is still served, even
/// at the connection cap.
#[test]
fn idle_and_half_sent_connections_do_not_starve_the_pool() {
    let mut c = TestCluster::new(1);
    c.start(0);
    c.wait_for_agreed_leader(&[0], LONG);
    let address = c.config.member(0).unwrap().address();
    let workers = raft::server::ServerOptions::default().workers;
    let mut held = Vec::new();
    for k in 0..workers * 4 {
        let mut s = TcpStream::connect(&address).unwrap();
        if k % 2 == 0 {
            s.write_all(b"{\"type\":\"sta").unwrap(); // never finished
        }
        held.push(s);
    }
    assert_node_0_answers_as_leader(&c);

    // Filled to the connection cap with idle connections, the node still
    // answers a newcomer, in place of the connection idle the longest.
    let cap = raft::server::ServerOptions::default().max_connections;
    for _ in held.len()..cap {
        held.push(TcpStream::connect(&address).unwrap());
    }
    assert_node_0_answers_as_leader(&c);
    held[0].set_read_timeout(Some(LONG)).unwrap();
    let mut rest = String::new();
    assert_eq!(
        held[0].read_to_string(&mut rest).unwrap(),
        0,
        "the longest-idle connection was closed to make room"
    );
}

/// `raftctl status --json`: one object per configured node, in config
/// order, with exactly the documented keys; unreachable nodes have nulls.
#[test]
fn raftctl_status_json_has_exactly_the_documented_keys() {
    let mut c = TestCluster::new(3);
    c.start(0);
    c.start(1);
    c.wait_for_agreed_leader(&[0, 1], LONG);
    let out = c.raftctl(&["status", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = v.as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let keys = [
        "address",
        "commit_index",
        "id",
        "last_applied",
        "last_log_index",
        "leader_id",
        "log_bytes",
        "log_entries",
        "reachable",
        "repairing_through",
        "role",
        "snapshot_bytes",
        "snapshot_index",
        "term",
    ];
    for (k, n) in nodes.iter().enumerate() {
        let mut got: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
        got.sort();
        assert_eq!(got, keys);
        assert_eq!(n["id"], k as u64);
    }
    assert_eq!(nodes[2]["reachable"], false);
    assert!(nodes[2]["role"].is_null() && nodes[2]["term"].is_null());
    assert_eq!(nodes[0]["reachable"], true);
    let roles: Vec<&str> = nodes[..2]
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"leader") && roles.contains(&"follower"),
        "{roles:?}"
    );

    let table = String::from_utf8(c.raftctl(&["status"]).stdout).unwrap();
    assert!(
        table.lines().count() == 4 && table.contains("unreachable"),
        "{table}"
    );
    let leader = agreed_leader(&c.statuses(), &[0, 1]).unwrap().0;
    let line = table.lines().find(|l| l.contains("leader")).unwrap();
    assert!(line.starts_with(&leader.to_string()), "{table}");
}

/// Bad command lines exit 2 with a message naming the problem.
#[test]
fn bad_arguments_and_configs_exit_2_with_a_clear_message() {
    let c = TestCluster::new(3);
    let port = c.config.member(1).unwrap().port;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(process::RAFTNODE)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cfg = c.config_path.to_str().unwrap();
    let state = c.state_dir();
    let state = state.to_str().unwrap();
    let debug = c.debug_dir();
    let debug = debug.to_str().unwrap();
    let (code, err) = run(&[cfg, "7", "--state-dir", state, "--debug-dir", debug]);
    assert_eq!(code, Some(2));
    assert!(err.contains("node id 7 is not in"), "{err}");
    let (code, err) = run(&[
        cfg,
        "1",
        &(port + 1).to_string(),
        "--state-dir",
        state,
        "--debug-dir",
        debug,
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!("port {} does not match node1", port + 1)),
        "{err}"
    );
    let (code, err) = run(&[
        cfg,
        "1",
        "--election-timeout",
        "500..100",
        "--state-dir",
        state,
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--election-timeout"), "{err}");
    let (code, _) = run(&[cfg]);
    assert_eq!(code, Some(2), "a missing ID is a usage error");
    let (code, err) = run(&[cfg, "1", "--cluster-id", "has space", "--state-dir", state]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--cluster-id"), "{err}");

    let bad = c.dir.path().join("bad.txt");
    std::fs::write(&bad, "N: 2\nnode0: 127.0.0.1:5001\nnode1 127.0.0.1\n").unwrap();
    let (code, err) = run(&[bad.to_str().unwrap(), "0", "--state-dir", state]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.txt:3:"), "{err}");
    let out = std::process::Command::new(process::RAFTCTL)
        .args(["--config", bad.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The courses' slow settings work too.
#[test]
fn slow_course_timeouts_elect_a_leader() {
    let mut c = TestCluster::new(3);
    c.args = ["--election-timeout", "1500..3000", "--heartbeat", "500"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    assert!(
        c.activity_log(leader)
            .contains(&format!("STATE: Leader | TERM: {term}"))
    );
}

/// `--cluster-id` replaces the id derived from the config: nodes that share
/// it form a cluster and report it.
#[test]
fn a_given_cluster_id_replaces_the_derived_one() {
    let mut c = TestCluster::new(3);
    c.args
        .extend(["--cluster-id".to_string(), "lab-7".to_string()]);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    for s in c.statuses() {
        let st = s.status.unwrap();
        assert_eq!(st.cluster_id, "lab-7");
        assert_eq!(st.refused_messages, 0);
    }
}

/// `bash boot_all_nodes.sh ARGS CONFIG` for cluster `c`: its state and
/// debug directories, the test binaries and the tests' timeouts.
fn boot_script(c: &TestCluster, args: &[&str]) -> std::process::Command {
    let bin_dir = std::path::Path::new(process::RAFTNODE).parent().unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/boot_all_nodes.sh"))
        .args(args)
        .arg(&c.config_path)
        .env("STATE_DIR", c.state_dir())
        .env("DEBUG_DIR", c.debug_dir())
        .env("RAFT_BIN_DIR", bin_dir)
        .env("RAFTNODE_ARGS", process::TEST_TIMING.join(" "));
    cmd
}

/// Kills every node started on the cluster's state directory when dropped
/// (those the script started are not the cluster's children), even when
/// the script or an assertion fails half way.
struct Reaper<'a>(&'a TestCluster);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        process::kill_nodes_of(&self.0.state_dir());
    }
}

/// `boot_all_nodes.sh` starts every node of a config (from another
/// directory), records pids, reports status, and stops them with SIGTERM.
#[test]
fn boot_all_nodes_script_starts_reports_and_stops_a_cluster() {
    let c = TestCluster::new(3);
    let run = |action: &str| {
        let out = boot_script(&c, &[action])
            .current_dir(c.dir.path().parent().unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let _reaper = Reaper(&c);
    let started = run("start");
    let pid_of = |id: u64| -> u32 {
        let path = c.state_dir().join(format!("pids/node{id}.pid"));
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let pids: Vec<u32> = (0..3).map(pid_of).collect();
    for id in 0..3 {
        assert!(started.contains(&format!("started node{id}")), "{started}");
    }
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);
    assert!(
        run("start").contains("already running"),
        "a second start leaves running nodes alone"
    );
    let status = run("status");
    assert_eq!(status.matches("running (pid").count(), 3, "{status}");
    assert!(status.contains("leader"), "{status}");

    let stopped = run("stop");
    assert_eq!(stopped.matches("stopped node").count(), 3, "{stopped}");
    for id in 0..3 {
        assert!(c.activity_log(id).contains("stopped: received SIGTERM"));
        let pid = pids[id as usize];
        assert!(!process::alive(pid), "node{id} (pid {pid}) still running");
        assert!(!c.state_dir().join(format!("pids/node{id}.pid")).exists());
    }
}

/// The README's way of restarting a node by hand (`kill -TERM <pid>`, then
/// `raftnode CONFIG ID PORT &`) does not lose it from `boot_all_nodes.sh`:
/// `status` sees it, `stop` stops it, `start` leaves it alone. `start ID`
/// starts one node; a node that cannot start (its port taken) is reported
/// with its error, and the script exits 1.
#[test]
fn boot_all_nodes_finds_a_node_restarted_by_hand_and_reports_one_that_cannot_start() {
    let c = TestCluster::new(3);
    let run = |args: &[&str]| {
        let out = boot_script(&c, args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let _reaper = Reaper(&c);
    let lock_pid = |id: u64| -> Option<u32> {
        let text = std::fs::read_to_string(c.state_dir().join(format!("node{id}/lock"))).ok()?;
        text.trim().parse().ok()
    };
    let (code, out, err) = run(&["start"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for id in 0..3 {
        let pid = lock_pid(id).expect("a started node records its pid in its lock file");
        assert!(
            out.contains(&format!("started node{id} on")) && out.contains(&format!("(pid {pid})")),
            "{out}"
        );
    }
    c.wait_for_agreed_leader(&[0, 1, 2], LONG);

    // Node 1 restarted by hand, as the README shows.
    let old = lock_pid(1).unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &old.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + LONG;
    while process::alive(old) {
        assert!(
            std::time::Instant::now() < deadline,
            "node1 did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = std::fs::File::create(c.dir.path().join("node1.stderr")).unwrap();
    let mut by_hand = c
        .node_command(1)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let manual = c.wait_for("node1 serving again", LONG, |_| {
        lock_pid(1).filter(|&pid| pid == by_hand.id())
    });
    let (code, out, err) = run(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!(
            "node1 127.0.0.1:{} running (pid {manual})",
            c.config.member(1).unwrap().port
        )),
        "{out}"
    );
    let (code, out, err) = run(&["start"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.matches("already running").count(), 3, "{out}");
    // `./boot_all_nodes.sh status | head -1`: its reader gone, it ends
    // without a word (raftctl status at its end used to panic).
    let (_, stderr) = process::into_closed_pipe(boot_script(&c, &["status"]));
    assert_eq!(stderr, "", "status into a closed pipe");
    assert!(
        out.contains(&format!("node1 already running (pid {manual})")),
        "{out}"
    );

    // `stop 1` stops the node started by hand; `start 1` brings it back.
    let (code, out, err) = run(&["stop", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("stopped node1 (pid {manual})"));
    assert!(process::wait_exit(&mut by_hand, LONG).success());
    let (code, out, err) = run(&["start", "1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("started node1 on"), "{out}");
    let restarted = lock_pid(1).unwrap();
    assert_ne!(restarted, manual);

    // Node 2 stopped, its port taken by another program: `start` says
    // node 2 did not start, and why, and exits 1.
    assert_eq!(run(&["stop", "2"]).0, Some(0));
    let port = c.config.member(2).unwrap().port;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (code, out, err) = run(&["start"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("node2 did not start (exit status 1)"), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!out.contains("started node2"), "{out}");
    drop(squatter);

    // A second raftnode on a running node's state directory says whose it
    // is, and writes nothing into the running node's activity log.
    let log_before = c.activity_log(0);
    let second = c.node_command(0).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let running = lock_pid(0).unwrap();
    assert!(
        String::from_utf8_lossy(&second.stderr)
            .contains(&format!("in use by a running node (pid {running})")),
        "{second:?}"
    );
    let log_after = c.activity_log(0);
    assert!(
        !log_after[log_before.len()..].contains("ERROR"),
        "{log_after}"
    );

    let (code, out, err) = run(&["stop"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.matches("stopped node").count(), 2, "{out}");
}

/// Outgoing peer connections come from the node's own configured address,
/// so nodes on 127.0.0.2, 127.0.0.3, … can be split by firewall rules.
#[test]
fn peer_connections_bind_to_the_nodes_own_host() {
    let reserved = process::reserve_ports(2);
    let ports = &reserved.ports;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.txt");
    std::fs::write(
        &config,
        format!(
            "node0: 127.0.0.2:{}\nnode1: 127.0.0.3:{}\n",
            ports[0], ports[1]
        ),
    )
    .unwrap();
    // Node 1 is played by the test: a listener that notes who connects.
    let fake = std::net::TcpListener::bind(("127.0.0.3", ports[1])).unwrap();
    let mut node0 = std::process::Command::new(process::RAFTNODE)
        .arg(&config)
        .arg("0")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--debug-dir")
        .arg(dir.path().join("debug"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // It connects when it asks for a vote, after one election timeout.
    fake.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + LONG;
    let accepted = loop {
        match fake.accept() {
            Ok((_stream, from)) => break Some(from),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => break None,
        }
    };
    let _ = node0.kill();
    let _ = node0.wait();
    let from = accepted.expect("node0 never connected to its peer");
    assert_eq!(from.ip().to_string(), "127.0.0.2");
}

/// Issue 23: `--listen 0.0.0.0` binds every address while the config's
/// line stays the address the others reach the node at (a container, a
/// NAT); the node takes part as any other.
#[test]
fn a_node_listening_on_the_wildcard_address_takes_part_at_its_advertised_one() {
    let mut c = TestCluster::new(3);
    c.start(0);
    c.start_with(1, &["--listen", "0.0.0.0"]);
    c.start(2);
    let port = c.config.member(1).unwrap().port;
    let deadline = std::time::Instant::now() + WAIT;
    while !c.stderr(1).contains("listening on") {
        assert!(std::time::Instant::now() < deadline, "{}", c.stderr(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        c.stderr(1)
            .contains(&format!("listening on 0.0.0.0:{port}")),
        "{}",
        c.stderr(1)
    );
    c.wait_for_agreed_leader(&c.ids(), WAIT);
    // It answers at its advertised address, and replicates.
    let out = c.raftctl(&["put", "k", "v"]);
    assert!(out.status.success(), "{out:?}");
    c.wait_for_converged();
    // A port given with the host is taken as given (here the config's).
    c.sigterm(1);
    c.start_with(1, &["--listen", &format!("127.0.0.1:{port}")]);
    c.wait_for_agreed_leader(&c.ids(), WAIT);
}
