//! Availability with real processes: partitions made by a proxy mesh
//! between the nodes (`process::mesh`, no privileges needed), clean stops
//! with SIGTERM, and a rolling restart under a running `raftctl bench`.
//!
//! Nothing here asserts a duration: how fast things happen is measured by
//! `cargo bench --bench failover`. These tests assert what happens.

mod process;

use std::time::{Duration, Instant};

use process::{TestCluster, WAIT, agreed_leader};
use raft::consensus::NodeId;
use raft::kv::{Command, Op};
use raft::transport;
use raft::wire::{ErrorCode, Request, Response};

fn status_of(c: &TestCluster, id: NodeId) -> Option<raft::wire::NodeStatus> {
    c.statuses()
        .into_iter()
        .find(|s| s.member.id == id)
        .and_then(|s| s.status.ok())
}

/// Thesis §9.6: a follower cut off for several election timeouts and then
/// healed leaves the leader and its term as they were. Alone, its
/// pre-votes fail and its term stays; back, it follows the leader.
#[test]
fn an_isolated_follower_rejoins_without_changing_the_leader_or_its_term() {
    let mut c = TestCluster::meshed(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.mesh.as_ref().unwrap().isolate(follower);
    // Three of its longest election timeouts (1.6 s in tests), watching
    // its term: it must never rise.
    let until = Instant::now() + Duration::from_millis(3 * 1600 + 500);
    while Instant::now() < until {
        if let Some(s) = status_of(&c, follower) {
            assert_eq!(s.term, term, "the cut-off follower raised its term");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = c.activity_log(follower);
    assert!(
        log.contains(&format!("pre-vote lost for term {}", term + 1)),
        "no lost pre-vote in node{follower}'s log:\n{log}"
    );
    for line in log.lines().filter(|l| l.contains("pre-vote")).take(4) {
        eprintln!("{line}");
    }
    c.mesh.as_ref().unwrap().heal();
    c.wait_for(
        "the follower following the same leader in the same term",
        WAIT,
        |st| {
            let s = st.iter().find(|s| s.member.id == follower)?;
            let s = s.status.as_ref().ok()?;
            (s.leader_id == Some(leader)).then_some(())
        },
    );
    let st = c.statuses();
    assert_eq!(agreed_leader(&st, &c.ids()), Some((leader, term)));
}

/// CheckQuorum (thesis §6.2): a leader cut off from the majority steps
/// down in its term and refuses writes at once (`not_leader`), rather than
/// holding them until they time out; the majority elects a leader, and
/// once healed the old leader follows it.
#[test]
fn a_leader_cut_off_from_the_majority_stops_taking_writes() {
    let mut c = TestCluster::meshed(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let cut_at = Instant::now();
    c.mesh.as_ref().unwrap().isolate(leader);
    c.wait_for("the cut-off leader stepping down", WAIT, |_| {
        let s = status_of(&c, leader)?;
        (s.role != "leader").then_some(())
    });
    eprintln!(
        "node{leader} stepped down {} ms after it was cut off",
        cut_at.elapsed().as_millis()
    );
    let s = status_of(&c, leader).unwrap();
    assert_eq!(s.term, term, "it steps down in its own term");
    // A write sent to it is refused at once, as not_leader (a leader that
    // had not stepped down would hold it and answer `timeout` after its
    // 2 s commit wait: the code tells them apart, not a stopwatch).
    let member = c.config.member(leader).unwrap().clone();
    let write = Request::Write(Command {
        client: 1,
        seq: 1,
        op: Op::Put {
            key: "k".into(),
            value: "v".into(),
        },
    });
    match transport::call_once(&member, &write, Duration::from_secs(10)).unwrap() {
        Response::Error {
            code: ErrorCode::NotLeader,
            ..
        } => {}
        other => panic!("a cut-off leader answered a write with {other:?}"),
    }
    let log = c.activity_log(leader);
    assert!(
        log.contains(&format!("stepping down as leader of term {term}")),
        "{log}"
    );
    for line in log.lines().filter(|l| l.contains("stepping down")) {
        eprintln!("{line}");
    }
    let others: Vec<NodeId> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let (new, new_term) = c.wait_for_agreed_leader(&others, WAIT);
    assert!(new_term > term);
    c.mesh.as_ref().unwrap().heal();
    let (all, _) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    assert_eq!(all, new);
}

/// Thesis §3.10 on SIGTERM: the leader hands over before it exits, and the
/// new leader's election is the transfer's, one term later.
#[test]
fn sigterm_of_the_leader_hands_leadership_over_before_exiting() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let status = c.sigterm(leader);
    assert!(status.success(), "exit status {status:?}");
    let others: Vec<NodeId> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let (new, new_term) = c.wait_for_agreed_leader(&others, WAIT);
    assert_eq!(new_term, term + 1, "no election beyond the transfer's");
    let old_log = c.activity_log(leader);
    assert!(
        old_log.contains(&format!(
            "leadership handed to node{new}, which started term {new_term}"
        )),
        "{old_log}"
    );
    let new_log = c.activity_log(new);
    assert!(
        new_log.contains(&format!(
            "election started for term {new_term} at the leader's request"
        )),
        "{new_log}"
    );
}

/// A rolling restart with `kill -TERM` of all five nodes, one after the
/// other, while `raftctl bench` writes: every write succeeds (the client
/// retries those refused during a handover, with the same number).
#[test]
fn a_rolling_sigterm_restart_under_load_ends_with_zero_errors() {
    let mut c = TestCluster::new(5);
    c.start_all();
    c.wait_for_agreed_leader(&c.ids(), WAIT);
    let before = c.wait_for_commits(0, 1);
    // The bench runs until the restarts are over (it is stopped then, and
    // prints its summary), however long a loaded machine takes.
    let mut bench = std::process::Command::new(process::RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .args(["bench", "--clients", "8", "--seconds", "600", "--json"])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Writes are flowing before the first node stops.
    c.wait_for_commits(before, 100);
    let mut handovers = 0;
    for id in c.ids() {
        let was_leader = c
            .statuses()
            .iter()
            .any(|s| s.member.id == id && s.status.as_ref().is_ok_and(|s| s.role == "leader"));
        let status = c.sigterm(id);
        assert!(status.success(), "node{id} exited with {status:?}");
        if was_leader {
            handovers += 1;
            let log = c.activity_log(id);
            assert!(
                log.lines()
                    .rev()
                    .take(30)
                    .any(|l| l.contains("leadership handed to node")),
                "node{id} stopped as leader without handing over:\n{log}"
            );
        }
        c.start(id);
        // Back and following a leader, with its log caught up to within
        // what the bench wrote meanwhile.
        c.wait_for("the restarted node caught up", WAIT, |st| {
            let me = st
                .iter()
                .find(|s| s.member.id == id)?
                .status
                .as_ref()
                .ok()?;
            let leader = st
                .iter()
                .filter_map(|s| s.status.as_ref().ok())
                .find(|s| s.role == "leader")?;
            (me.leader_id == Some(leader.id) && me.commit_index + 1000 >= leader.commit_index)
                .then_some(())
        });
    }
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &bench.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut stdout = bench.stdout.take().unwrap();
    let status = process::wait_exit(&mut bench, WAIT);
    assert!(status.success(), "raftctl bench: {status:?}");
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&out).expect("the bench's JSON summary");
    eprintln!("rolling restart ({handovers} handovers) under load: {summary}");
    assert!(summary["ops"].as_u64().unwrap() > 0);
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(handovers >= 1, "the leader was restarted too");
}
