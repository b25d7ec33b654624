//! What a socket can send a real cluster, and what the nodes make of it:
//! the built `raftnode` binaries, poked with `nc`-style lines as a curious
//! student or a confused node would. Every node must stay up, answer each
//! line with an error (or close the connection), change nothing, and log
//! each kind of problem once.

mod process;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process::hostile::{Connector, Line, count_lines};
use process::{Killed, RAFTNODE, TEST_TIMING, TestCluster, WAIT, reserve_ports};
use raft::config::Member;
use raft::transport;
use raft::wire::{Request, Response};

#[test]
fn nothing_a_socket_sends_crashes_or_starves_a_node() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let open = |address: &str, _: Option<u64>| Line::open(address);
    let raftctl = |c: &TestCluster, args: &[&str]| c.raftctl(args);
    process::hostile::nothing_a_socket_sends_crashes_or_starves_a_node(
        &mut c,
        &Connector {
            open: &open,
            raftctl: &raftctl,
            tls: false,
        },
    );
}

#[test]
fn a_node_started_with_another_config_says_so_and_disrupts_no_election() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);

    // Node 3 of a four-node config that lists the same three nodes: its
    // cluster id differs from theirs, and it will campaign again and again.
    let reserved = reserve_ports(1);
    let port = reserved.ports[0];
    let text = std::fs::read_to_string(&c.config_path).unwrap();
    let stray_config = c.dir.path().join("four.txt");
    std::fs::write(
        &stray_config,
        format!("{}node3: 127.0.0.1:{port}\n", text.replace("N: 3", "N: 4")),
    )
    .unwrap();
    let dir = c.dir.path();
    let stray = Killed(
        Command::new(RAFTNODE)
            .arg(&stray_config)
            .arg("3")
            .arg("--state-dir")
            .arg(dir.join("stray-state"))
            .arg("--debug-dir")
            .arg(dir.join("stray-debug"))
            .args(TEST_TIMING)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stray_log =
        || std::fs::read_to_string(dir.join("stray-debug").join("node3.log")).unwrap_or_default();
    let me = Member {
        id: 3,
        host: "127.0.0.1".into(),
        port,
    };
    // Wait until the stray has asked for pre-votes a few times and heard
    // every node refuse it.
    let deadline = Instant::now() + WAIT;
    loop {
        let stray_term = match transport::call_once(&me, &Request::Status, Duration::from_secs(1)) {
            Ok(Response::Status(s)) => {
                assert_ne!(s.cluster_id, c.config.derived_cluster_id());
                s.term
            }
            _ => 0,
        };
        let log = stray_log();
        let all_refused = c.ids().iter().all(|id| {
            count_lines(
                &log,
                &[&format!("node{id} refused our request: request_vote")],
            ) == 1
        });
        // Its pre-votes (thesis §9.6) all fail, so its term never rises.
        assert_eq!(stray_term, 0, "the stray took a term without a majority");
        if log.matches("pre-vote lost for term 1").count() >= 3 && all_refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stray did not campaign:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cluster kept its leader and term, and each node said once why it
    // refused the stray.
    assert_eq!(c.wait_for_agreed_leader(&c.ids(), WAIT), (leader, term));
    for id in c.ids() {
        let log = c.activity_log(id);
        assert_eq!(
            count_lines(
                &log,
                &["request_vote from node3 of cluster", "same configuration"]
            ),
            1,
            "node{id}:\n{log}"
        );
    }
    drop(stray);
}
