//! Membership change on real processes, run as a user runs it: servers
//! started with `raftnode --join`, changes made with `raftctl add`,
//! `promote`, `remove` and `members set`, under client load whose history
//! is checked for linearizability (the scenarios of
//! ../shared/membership-anchors.md that need real processes; the rest are
//! unit and simulation tests).

mod process;

use std::time::{Duration, Instant};

use process::workload::{Workload, assert_acked_writes_kept, assert_linearizable};
use process::{TestCluster, WAIT};
use raft::client::{self, Client, ClientOptions};
use raft::consensus::NodeId;
use raft::consensus::membership::Suffrage;
use raft::wire::{MembersView, Request, Response};

/// `raftctl ARGS`: exit code, stdout, stderr.
fn raftctl(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let out = c.raftctl(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `raftctl ARGS`, which must succeed; its stdout.
fn ok(c: &TestCluster, args: &[&str]) -> String {
    let (code, out, err) = raftctl(c, args);
    assert_eq!(code, 0, "raftctl {args:?}: {out}{err}");
    out
}

/// The leader's view of the membership, through any running node.
fn members(c: &TestCluster) -> MembersView {
    let mut client = Client::new(c.config.clone(), ClientOptions::default());
    client.members().expect("the leader answers members")
}

/// The voters of the leader's membership.
fn voters(view: &MembersView) -> Vec<NodeId> {
    view.members
        .iter()
        .filter(|m| m.suffrage == Suffrage::Voter)
        .map(|m| m.id)
        .collect()
}

/// Waits until node `id`'s process has exited; its exit code.
fn wait_until_exited(c: &mut TestCluster, id: NodeId) -> Option<i32> {
    c.wait_for_exit(id, WAIT).code()
}

/// Adds spare `id` through `raftctl add` (starting it with `--join`
/// first, as the printed command says), and checks what add printed.
fn add(c: &mut TestCluster, id: NodeId) {
    let via = c
        .ids()
        .into_iter()
        .find(|&m| c.is_running(m))
        .expect("a member runs");
    c.start_joining(id, via);
    let address = c.address(id);
    let out = ok(c, &["add", &id.to_string(), &address]);
    assert!(
        out.contains("raftnode --join")
            && out.contains(&format!("node{id} added as a learner"))
            && out.contains(&format!("node{id} promoted to voter")),
        "{out}"
    );
}

/// Scenarios 2 and 3: grow 3 to 5 one server at a time, then shrink to 3
/// by removing two of the original servers, under load: no acknowledged
/// write lost, the history linearizable, every remaining server with the
/// same log and membership.
#[test]
fn grow_3_to_5_then_shrink_to_3_under_load_loses_nothing_and_stays_linearizable() {
    grow_and_shrink(&[]);
}

/// Scenario 23 with lease reads (thesis §6.4.1): the lease counts the
/// membership in force, so reads stay linearizable across the changes.
#[test]
fn grow_and_shrink_with_lease_reads_stays_linearizable() {
    grow_and_shrink(&["--read-mode", "lease"]);
}

fn grow_and_shrink(node_args: &[&str]) {
    let mut c = TestCluster::with_spares(3, 2);
    c.args.extend(node_args.iter().map(|a| a.to_string()));
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    let workload = Workload::start(&c.config, 4);
    let done = c.wait_for_commits(0, 20);
    add(&mut c, 3);
    add(&mut c, 4);
    assert_eq!(voters(&members(&c)), vec![0, 1, 2, 3, 4]);
    let done = c.wait_for_commits(done, 20);
    for id in [0, 1] {
        let out = ok(&c, &["remove", &id.to_string()]);
        assert!(out.contains(&format!("node{id} removed")), "{out}");
        assert_eq!(wait_until_exited(&mut c, id), Some(0), "node{id} exits");
        c.forget(id);
    }
    c.wait_for_agreed_leader(&[2, 3, 4], WAIT);
    c.wait_for_commits(done, 20);
    let (history, acked, failed) = workload.stop_counting_failures();
    let completed = assert_linearizable(&history);
    assert!(completed >= 100, "only {completed} operations completed");
    assert_eq!(failed, 0, "operations without an answer");
    let view = members(&c);
    assert_eq!(voters(&view), vec![2, 3, 4]);
    assert_eq!(view.removed, vec![0, 1]);
    let reference = process::converged_logs(&mut c, 2);
    assert_acked_writes_kept(&reference, &acked);
    eprintln!(
        "{completed} operations checked, {} acknowledged writes, none failed",
        acked.len()
    );
}

/// Scenarios 4 and 21: the leader removed goes on replicating until the
/// change commits, hands over, steps down and exits; restarted on its old
/// directory it refuses to start, saying it was removed.
#[test]
fn a_removed_leader_hands_over_exits_and_never_starts_again() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    ok(&c, &["put", "k", "before"]);
    let restart = c.node_command(leader);
    let started = Instant::now();
    ok(&c, &["remove", &leader.to_string()]);
    assert_eq!(wait_until_exited(&mut c, leader), Some(0));
    c.forget(leader);
    let rest: Vec<NodeId> = c.ids();
    let (new_leader, _) = c.wait_for_agreed_leader(&rest, WAIT);
    eprintln!(
        "node{new_leader} leads {} ms after the remove was asked",
        started.elapsed().as_millis()
    );
    ok(&c, &["put", "k", "after"]);
    assert_eq!(ok(&c, &["get", "k"]).trim(), "after");
    let log = c.activity_log(leader);
    assert!(
        log.contains("was removed from the cluster by the membership at index")
            && log.contains("out of the cluster for good"),
        "{log}"
    );
    // Restarted on its directory: refused, naming the reason.
    let mut restart = restart;
    let out = restart.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("removed.txt") && stderr.contains("cannot rejoin under its old id"),
        "{stderr}"
    );
    // The id is never used again.
    let (code, _, err) = raftctl(&c, &["add", &leader.to_string(), "127.0.0.1:1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("never reused"), "{err}");
}

/// Replacing a dead machine (the README's recipe): add a new server, then
/// remove the dead one.
#[test]
fn a_dead_server_is_replaced_by_a_new_one() {
    let mut c = TestCluster::with_spares(3, 1);
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    ok(&c, &["put", "k", "v"]);
    let dead = (leader + 1) % 3;
    c.sigkill(dead);
    add(&mut c, 3);
    ok(&c, &["remove", &dead.to_string()]);
    c.forget(dead);
    let view = members(&c);
    let mut want: Vec<NodeId> = [0, 1, 2, 3].into_iter().filter(|&i| i != dead).collect();
    want.sort();
    assert_eq!(voters(&view), want);
    assert_eq!(view.removed, vec![dead]);
    ok(&c, &["put", "k", "w"]);
    // The new server holds the whole store.
    let out = ok(&c, &["get", "k", "--stale", "--node", "3"]);
    assert!(["v", "w"].contains(&out.trim()), "{out}");
}

/// Scenario 10: a server added but never started makes no progress; the
/// add is abandoned after --stall, the reply names the server and what the
/// leader saw, and the membership is as it was (its id still free).
#[test]
fn an_add_whose_server_never_starts_is_abandoned_and_changes_nothing() {
    let c = TestCluster::with_spares(3, 1);
    let mut c = c;
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    let address = c.address(3);
    let (code, out, err) = raftctl(&c, &["add", "3", &address, "--stall", "2"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("node3 made no progress") && err.contains("is it started"),
        "{err}"
    );
    assert!(out.contains("the add is abandoned"), "{out}");
    let view = members(&c);
    assert_eq!(voters(&view), vec![0, 1, 2]);
    assert!(view.members.iter().all(|m| m.id != 3) && view.removed.is_empty());
    // Started now, the same id is added after all.
    add(&mut c, 3);
}

/// Scenario 8: promotion is refused while the learner lags, naming the
/// lag; it succeeds once the learner has caught up.
#[test]
fn promotion_waits_until_the_learner_has_caught_up() {
    let mut c = TestCluster::with_spares(3, 1);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    c.start_joining(3, 1);
    let address = c.address(3);
    let out = ok(&c, &["add", "3", &address, "--learner"]);
    assert!(out.contains("raftctl promote 3"), "{out}");
    c.sigkill(3);
    let before = members(&c).last_log_index;
    // More than PROMOTION_LAG entries while it is down.
    let mut client = Client::new(c.config.clone(), ClientOptions::default());
    for i in 0..1100 {
        client.append(&format!("entry {i}")).unwrap();
    }
    assert!(members(&c).last_log_index > before + 1000);
    let (code, _, err) = raftctl(&c, &["promote", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("node3 is") && err.contains("entries behind"),
        "{err}"
    );
    assert_eq!(voters(&members(&c)), vec![0, 1, 2]);
    c.start(3);
    let deadline = Instant::now() + WAIT;
    while members(&c)
        .members
        .iter()
        .any(|m| m.id == 3 && m.lag > Some(10))
    {
        assert!(Instant::now() < deadline, "node3 never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&c, &["promote", "3"]);
    assert_eq!(voters(&members(&c)), vec![0, 1, 2, 3]);
}

/// Scenario 17 on processes: two of three voters replaced in one step by
/// joint consensus (`members set`); the two replaced exit.
#[test]
fn members_set_replaces_two_of_three_voters_by_joint_consensus() {
    let mut c = TestCluster::with_spares(3, 2);
    c.start_all();
    c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    for id in [3, 4] {
        c.start_joining(id, 0);
        let address = c.address(id);
        // With -w json, one object per line: the join line, each step,
        // the membership.
        let out = ok(
            &c,
            &["-w", "json", "add", &id.to_string(), &address, "--learner"],
        );
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert!(
            lines[0]["join"]
                .as_str()
                .unwrap()
                .contains(&format!(" {id} {address}")),
            "{out}"
        );
        assert_eq!(lines[1]["progress"], "learner_added", "{out}");
        assert_eq!(lines.last().unwrap()["id"], id, "{out}");
        assert!(lines.last().unwrap()["membership"].is_object(), "{out}");
    }
    let out = ok(&c, &["members", "set", "0", "3", "4"]);
    assert!(out.contains("voters set to [0, 3, 4]"), "{out}");
    for id in [1, 2] {
        assert_eq!(wait_until_exited(&mut c, id), Some(0), "node{id} exits");
        c.forget(id);
    }
    c.wait_for_agreed_leader(&[0, 3, 4], WAIT);
    let view = members(&c);
    assert_eq!(voters(&view), vec![0, 3, 4]);
    assert!(view.outgoing.is_empty(), "the joint configuration was left");
    ok(&c, &["put", "k", "v"]);
    let text = ok(&c, &["members"]);
    assert!(text.contains("(committed)") && text.contains("removed (ids never reused): 1, 2"));
}

/// Scenarios 11 and 22: a follower cut off from the others is removed
/// meanwhile; when it is reconnected it asks for votes (PreVote: without
/// raising its term), is told it was removed, and exits. The leader and
/// its term never change.
#[test]
fn a_partitioned_server_removed_then_healed_exits_without_an_election() {
    let mut c = TestCluster::new(3);
    c.args.push("--lab".into());
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    let cut = (leader + 1) % 3;
    let lab = |isolate: bool| {
        let member = c.config.member(cut).unwrap().clone();
        let answer = client::ask_once(&member, &Request::Lab { isolate }, WAIT).unwrap();
        assert!(matches!(answer, Response::Status(_)), "{answer:?}");
    };
    lab(true);
    ok(&c, &["remove", &cut.to_string()]);
    // Several of its election timeouts pass, cut off.
    std::thread::sleep(Duration::from_secs(4));
    lab(false);
    assert_eq!(wait_until_exited(&mut c, cut), Some(0));
    c.forget(cut);
    let rest = c.ids();
    assert_eq!(c.wait_for_agreed_leader(&rest, WAIT), (leader, term));
    assert!(c.activity_log(cut).contains("out of the cluster for good"));
}

/// Scenario 1: a single-server cluster grows to two; the new server
/// catches up through InstallSnapshot (the log was compacted), adopting
/// the snapshot's membership, and both end with the same one.
#[test]
fn a_single_server_grows_to_two_through_a_snapshot() {
    let mut c = TestCluster::with_spares(1, 1);
    c.args.extend(["--snapshot-threshold".into(), "50".into()]);
    c.start_all();
    c.wait_for_agreed_leader(&[0], WAIT);
    let mut client = Client::new(c.config.clone(), ClientOptions::default());
    for i in 0..200 {
        client.put(&format!("k{i}"), "v").unwrap();
    }
    ok(&c, &["snapshot"]);
    add(&mut c, 1);
    assert_eq!(voters(&members(&c)), vec![0, 1]);
    c.wait_for_agreed_leader(&[0, 1], WAIT);
    assert!(
        c.activity_log(1).contains("snapshot"),
        "node1 caught up through a snapshot"
    );
    let view = client::members(c.config.member(1).unwrap(), WAIT).unwrap();
    assert_eq!(voters(&view), vec![0, 1], "node1 holds the membership too");
    assert_eq!(
        ok(&c, &["get", "k199", "--stale", "--node", "1"]).trim(),
        "v"
    );
    // Adding a member that exists, or removing one that does not, is
    // refused, clearly, and changes nothing (scenario 19).
    let address = c.address(1);
    let (code, _, err) = raftctl(&c, &["add", "1", &address]);
    assert_eq!(code, 1);
    assert!(err.contains("node1 is already a member"), "{err}");
    let (code, _, err) = raftctl(&c, &["remove", "7"]);
    assert_eq!(code, 1);
    assert!(err.contains("node7 is not a member"), "{err}");
    assert_eq!(voters(&members(&c)), vec![0, 1]);
}

/// Scenario 20: a voter whose state directory was wiped cannot come back
/// under its old id (it may have voted in terms it no longer knows):
/// refused at start, whether it was started from config.txt or joined,
/// with what to do instead.
#[test]
fn a_voter_whose_state_was_wiped_cannot_rejoin_under_its_old_id() {
    let mut c = TestCluster::with_spares(3, 1);
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    add(&mut c, 3);
    ok(&c, &["put", "k", "v"]);
    for victim in [(leader + 1) % 3, 3] {
        c.wait_for_converged();
        c.sigkill(victim);
        if let Some(joiner) = c.joiners.get_mut(&victim) {
            joiner.1 = leader; // a member still running
        }
        std::fs::remove_dir_all(c.state_dir().join(format!("node{victim}"))).unwrap();
        let out = c.node_command(victim).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "node{victim}: {stderr}");
        assert!(
            stderr.contains("cannot rejoin under its old id")
                && stderr.contains(&format!("raftctl remove {victim}")),
            "node{victim}: {stderr}"
        );
        // Nothing changed; the advice works.
        assert!(voters(&members(&c)).contains(&victim));
        ok(&c, &["remove", &victim.to_string()]);
        c.forget(victim);
    }
}

/// Scenario 24: a follower whose RPCs hang (stopped with SIGSTOP: its
/// connections accept and never answer) is removed without holding up
/// the leader or the other follower; writes go on throughout.
#[test]
fn removing_a_hung_follower_holds_nothing_up() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    let hung = (leader + 1) % 3;
    c.signal(hung, "STOP");
    ok(&c, &["put", "k", "1"]);
    ok(&c, &["remove", &hung.to_string()]);
    ok(&c, &["put", "k", "2"]);
    let view = members(&c);
    assert_eq!(view.members.len(), 2);
    assert_eq!((view.leader_id, view.term), (Some(leader), term));
    // Woken, it hears it was removed (its vote requests are refused) and
    // exits.
    c.signal(hung, "CONT");
    assert_eq!(wait_until_exited(&mut c, hung), Some(0));
}

/// Scenario 12: a server added at a wrong address is a learner while the
/// add waits for it, which counts for nothing: with an original voter
/// killed meanwhile, writes go on; promoting it is refused, since the new
/// voters would have no majority answering (etcd's strict reconfiguration
/// check); and the add is abandoned, leaving the membership as it was.
#[test]
fn a_learner_at_a_wrong_address_changes_nothing_and_cannot_be_promoted() {
    let mut c = TestCluster::with_spares(3, 1);
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&[0, 1, 2], WAIT);
    // Nothing listens at the spare port.
    let nowhere = c.address(3);
    let config = c.config_path.clone();
    let adding = std::thread::spawn(move || {
        std::process::Command::new(process::RAFTCTL)
            .args(["--config".as_ref(), config.as_os_str()])
            .args(["add", "3", &nowhere, "--learner", "--stall", "8"])
            .output()
            .unwrap()
    });
    let deadline = Instant::now() + WAIT;
    while !members(&c).members.iter().any(|m| m.id == 3) {
        assert!(Instant::now() < deadline, "node3 never added");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = (leader + 1) % 3;
    c.sigkill(killed);
    ok(&c, &["put", "k", "still written"]);
    // Once the leader has noticed (an operator acts later than this).
    while members(&c)
        .members
        .iter()
        .any(|m| m.id == killed && m.reachable == Some(true))
    {
        assert!(Instant::now() < deadline, "the leader never noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, err) = raftctl(&c, &["promote", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no majority of the voters would be answering") && err.contains("node3"),
        "{err}"
    );
    let added = adding.join().unwrap();
    let err = String::from_utf8_lossy(&added.stderr);
    assert_eq!(added.status.code(), Some(1), "{err}");
    assert!(err.contains("node3 made no progress"), "{err}");
    let view = members(&c);
    assert_eq!(voters(&view), vec![0, 1, 2]);
    assert!(view.members.iter().all(|m| m.id != 3));
}
