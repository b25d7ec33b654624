//! Randomized fault injection over the simulated cluster: for every seed,
//! clients propose while the network drops, delays, duplicates and
//! reorders, partitions come and go and nodes crash and restart from their
//! disks. The simulator checks the safety properties after every step; at
//! the end the network heals and the test checks liveness: a leader is
//! elected, a new entry commits on every node, and all logs converge.
//!
//! A failure prints its seed; `SIM_SEED=<seed>` replays exactly that run.
//! `SIM_SEEDS_SCALE=10` runs ten times as many seeds.

mod sim;

use std::time::Duration;

use raft::consensus::{Event, Json, NodeId, Payload};
use raft::kv::{Command, Op};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use sim::{MS, NetConfig, SeedGuard, Sim, for_seeds, seeds};

const SECOND: Duration = Duration::from_secs(1);

/// Runs one seed of chaos for `virtual_time`, then heals and checks that
/// the cluster recovers and converges.
fn chaos(test: &'static str, seed: u64, n: usize, virtual_time: Duration, knobs: Knobs) -> Outcome {
    let _guard = SeedGuard {
        file: "simulation",
        test,
        seed,
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut s = if knobs.figure_2_only {
        Sim::tuned(n, seed, NetConfig::unreliable(), |c| {
            c.pre_vote = false;
            c.check_quorum = false;
        })
    } else {
        Sim::new(n, seed, NetConfig::unreliable())
    };
    s.forge = knobs.forge;
    s.mark_losses = !knobs.unmarked_losses;
    s.snapshot_chance = knobs.snapshots;
    let mut proposals = 0u64;
    let end = s.now + virtual_time;
    while s.now < end {
        s.run_for(Duration::from_millis(rng.random_range(5..150)));
        let pick = rng.random_range(0..n as NodeId);
        match rng.random_range(0..100) {
            0..45 => {
                // Usually at the leader; sometimes at a random node, which
                // must refuse unless it is the leader.
                let target = if rng.random_bool(0.8) {
                    s.leader().unwrap_or(pick)
                } else {
                    pick
                };
                proposals += 1;
                s.propose(target, &format!("cmd-{seed}-{proposals}"));
            }
            45..52 if s.is_up(pick) => s.crash(pick),
            // A minority at most with storage faults not yet repaired:
            // with more, entries a majority lost may be gone for good, and
            // the cluster rightly stops electing leaders (see
            // `Sim::damage_disk`).
            52..55 if !s.is_up(pick) && knobs.disk_damage && s.repairing() < (n - 1) / 2 => {
                let lost = rng.random_range(1..=8);
                let snapshot = rng.random_bool(0.2);
                s.damage_disk(pick, lost, snapshot);
                s.start(pick);
            }
            52..64 if !s.is_up(pick) => s.start(pick),
            64..70 => {
                let mut groups = vec![Vec::new(), Vec::new()];
                for id in 0..n as NodeId {
                    groups[rng.random_range(0..2)].push(id);
                }
                s.partition(&groups);
            }
            70..78 => s.heal(),
            78..82 => s.net = NetConfig::reliable(),
            82..86 => s.net = NetConfig::unreliable(),
            86..90 => {
                // A leadership transfer, to a chosen node or to the most
                // up-to-date one; the target may crash or be cut off.
                if let Some(leader) = s.leader() {
                    let to = rng.random_bool(0.5).then_some(pick);
                    if s.transfer(leader, to).is_ok() {
                        s.checker.transfers += 1;
                    }
                }
            }
            _ => {}
        }
    }

    // Heal everything: a leader must emerge and commit a new entry on all.
    s.heal();
    s.net = NetConfig::reliable();
    for id in 0..n as NodeId {
        if !s.is_up(id) {
            s.start(id);
        }
    }
    let deadline = s.now + 20 * SECOND;
    let final_index = loop {
        assert!(
            s.now < deadline,
            "no entry committed on all nodes within 20s of healing"
        );
        if !s.run_until(5 * SECOND, |s| s.leader().is_some()) {
            continue;
        }
        let leader = s.leader().unwrap();
        match s.propose(leader, "final") {
            Some((index, _)) => {
                let all = s.run_until(5 * SECOND, |s| s.n_applied(index).0 == n);
                if all && s.n_applied(index).1 == Some(Payload::Command(Json::string("final"))) {
                    break index;
                }
            }
            // Refused: the leader is handing over; try again shortly.
            None => s.run_for(10 * MS),
        }
    };
    // Convergence: every node applied the same prefix (state machine
    // safety already checked each one against the others).
    for node in &s.nodes {
        assert!(node.applied_index >= final_index);
    }
    s.check_deep();
    Outcome {
        steps: s.checker.steps,
        committed: s.checker.committed.len() as u64,
        forged_refused: s.forged_refused,
        snapshots_taken: s.checker.snapshots_taken,
        snapshots_installed: s.checker.snapshots_installed,
        transfers: s.checker.transfers,
        disk_damage: s.disk_damage,
    }
}

/// What a chaos run injects besides the network's and nodes' faults.
#[derive(Clone, Copy, Default)]
struct Knobs {
    /// Chance that a request is followed by a forged copy.
    forge: f64,
    /// Chance per step and node of taking a snapshot and compacting.
    snapshots: f64,
    /// PreVote and CheckQuorum off: Figure 2's elections alone.
    figure_2_only: bool,
    /// Storage faults: a node that is down sometimes loses the end of
    /// its log or its snapshot before it restarts (see `Sim::damage_disk`).
    disk_damage: bool,
    /// Testing the checker: storage faults are not marked at restart.
    unmarked_losses: bool,
}

/// What one chaos run checked.
#[derive(Default)]
struct Outcome {
    steps: u64,
    committed: u64,
    forged_refused: u64,
    snapshots_taken: u64,
    snapshots_installed: u64,
    transfers: u64,
    disk_damage: u64,
}

fn run_many(test: &'static str, base: u64, count: u64, n: usize, time: Duration) {
    run_many_with(test, base, count, n, time, Knobs::default());
}

fn run_many_with(
    test: &'static str,
    base: u64,
    count: u64,
    n: usize,
    time: Duration,
    knobs: Knobs,
) -> Outcome {
    let started = std::time::Instant::now();
    let seeds = seeds(base, count);
    let mut total = Outcome::default();
    for &seed in &seeds {
        let o = chaos(test, seed, n, time, knobs);
        total.steps += o.steps;
        total.committed += o.committed;
        total.forged_refused += o.forged_refused;
        total.snapshots_taken += o.snapshots_taken;
        total.snapshots_installed += o.snapshots_installed;
        total.transfers += o.transfers;
        total.disk_damage += o.disk_damage;
    }
    eprintln!(
        "{test}: {} seeds, {n} nodes, {:?} virtual each: {} steps checked, {} entries committed, {} forged requests refused, {} snapshots taken, {} installed from a leader, {} leadership transfers started, {} disks damaged, {:.1}s",
        seeds.len(),
        time,
        total.steps,
        total.committed,
        total.forged_refused,
        total.snapshots_taken,
        total.snapshots_installed,
        total.transfers,
        total.disk_damage,
        started.elapsed().as_secs_f64()
    );
    total
}

#[test]
fn chaos_three_nodes() {
    run_many("chaos_three_nodes", 1_000, 300, 3, 30 * SECOND);
}

#[test]
fn chaos_five_nodes() {
    run_many("chaos_five_nodes", 2_000, 300, 5, 30 * SECOND);
}

/// Chaos as above, with rule-breaking copies of real requests thrown in
/// between correct nodes (another cluster, unknown or lying senders,
/// overflowing terms, entries out of order or with impossible terms):
/// each must be refused without changing the receiver, and the safety
/// checker must stay green.
#[test]
fn chaos_with_forged_requests_injected() {
    let o = run_many_with(
        "chaos_with_forged_requests_injected",
        4_000,
        60,
        5,
        30 * SECOND,
        Knobs {
            forge: 0.05,
            snapshots: 0.0005,
            ..Knobs::default()
        },
    );
    assert!(o.forged_refused > 1000, "too few forged requests delivered");
}

/// Chaos with log compaction (§7): every node snapshots its state machine
/// at random points and drops the log it covers, so followers that were
/// down or cut off catch up through InstallSnapshot, in chunks of random
/// size, over the same lossy, reordering network, through crashes. The
/// checker also compares every snapshot taken or installed with every
/// other of the same index and with the state the committed entries give.
#[test]
fn chaos_with_snapshots_three_nodes() {
    let o = run_many_with(
        "chaos_with_snapshots_three_nodes",
        5_000,
        400,
        3,
        30 * SECOND,
        Knobs {
            forge: 0.0,
            snapshots: 0.002,
            ..Knobs::default()
        },
    );
    assert!(o.snapshots_taken > 1000, "too few snapshots taken");
    assert!(o.snapshots_installed > 200, "too few snapshots installed");
}

#[test]
fn chaos_with_snapshots_five_nodes() {
    let o = run_many_with(
        "chaos_with_snapshots_five_nodes",
        6_000,
        200,
        5,
        30 * SECOND,
        Knobs {
            forge: 0.0,
            snapshots: 0.002,
            ..Knobs::default()
        },
    );
    assert!(o.snapshots_installed > 50, "too few snapshots installed");
}

#[test]
fn chaos_seven_nodes_long() {
    run_many("chaos_seven_nodes_long", 3_000, 80, 7, 120 * SECOND);
}

/// Thesis §10.2.1, scripted: a leader sends entries before they are on its
/// own disk, so it must not count itself for them. Here the leader and one
/// follower hold a new entry, the leader's copy not yet synced. If the
/// leader counted itself, the entry would be committed; a power loss then
/// takes the leader's copy, the follower crashes too, and the two nodes
/// that lack the entry elect a leader: the checker reports the committed
/// entry missing (leader completeness). Done right, the entry was never
/// committed and nothing is violated.
#[test]
fn thesis_10_2_1_a_leaders_unsynced_entries_do_not_count_toward_commit() {
    sim::for_seeds(
        "simulation",
        "thesis_10_2_1_a_leaders_unsynced_entries_do_not_count_toward_commit",
        5_000,
        20,
        |seed| {
            let mut s = Sim::new(3, seed, NetConfig::reliable());
            assert!(s.run_until(10 * SECOND, |s| s.leader().is_some()));
            let leader = s.leader().unwrap();
            // Let the no-op commit (both followers acknowledge it).
            s.run_for(500 * MS);
            // From now on the leader's syncs do not end in time.
            s.max_sync_delay = 3600 * SECOND;
            let f1 = (leader + 1) % 3;
            let f2 = (leader + 2) % 3;
            s.disconnect(f2);
            let (index, _) = s.propose(leader, "x").expect("a leader");
            s.run_for(200 * MS);
            assert!(
                s.nodes[f1 as usize].disk_last_index() >= index,
                "the follower stored the entry"
            );
            let committed_early = s.n_applied(index).0 > 0;
            s.power_loss(leader);
            s.crash(f1);
            s.connect(f2);
            s.start(leader);
            assert!(s.run_until(10 * SECOND, |s| s.leader().is_some()));
            s.start(f1);
            s.run_for(2 * SECOND);
            s.check_deep();
            assert!(
                !committed_early,
                "committed with only the leader's unsynced copy and one follower's"
            );
        },
    );
}

/// Chaos with snapshots, where a node that is down sometimes loses the
/// end of its log or its snapshot before it restarts.
fn storage_faults() -> Knobs {
    Knobs {
        snapshots: 0.02,
        disk_damage: true,
        ..Knobs::default()
    }
}

/// Storage faults (issue 19): a node that is down loses the end of its
/// log, or its snapshot and the log after it, before it restarts, on top
/// of every other fault. Recovery marks what it lost; the checker is
/// unchanged, and after healing every node must catch up.
#[test]
fn chaos_with_storage_faults_three_nodes() {
    let knobs = storage_faults();
    let o = run_many_with(
        "chaos_with_storage_faults_three_nodes",
        6_000,
        200,
        3,
        30 * SECOND,
        knobs,
    );
    assert!(o.disk_damage > 200, "{} disks damaged", o.disk_damage);
}

#[test]
fn chaos_with_storage_faults_five_nodes() {
    let knobs = storage_faults();
    run_many_with(
        "chaos_with_storage_faults_five_nodes",
        7_000,
        100,
        5,
        30 * SECOND,
        knobs,
    );
}

/// Without the loss marks, a node that lost acknowledged entries votes as
/// if it never had them, and a leader lacking a committed entry can win:
/// the checker must see it.
#[test]
fn checker_catches_storage_faults_recovered_without_marking_the_loss() {
    quiet_panics_of_this_thread();
    let knobs = Knobs {
        disk_damage: true,
        unmarked_losses: true,
        ..Knobs::default()
    };
    let seeds = 60;
    let caught = (0..seeds)
        .filter(|&seed| {
            std::panic::catch_unwind(|| {
                chaos(
                    "checker_catches_unmarked",
                    8_000 + seed,
                    3,
                    30 * SECOND,
                    knobs,
                )
            })
            .is_err()
        })
        .count();
    eprintln!("unmarked storage faults: the checker caught {caught} of {seeds} seeds");
    assert!(
        caught >= 3,
        "the checker caught only {caught} of {seeds} seeds"
    );
}

/// The violations a checker test provokes are expected: keep their panic
/// messages quiet, for the calling test's thread only (the hook is shared
/// by all tests).
fn quiet_panics_of_this_thread() {
    let me = std::thread::current().id();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != me {
            default_hook(info)
        }
    }));
}

/// The checker itself must catch a broken node. Here every disk silently
/// drops log appends, as a node that acknowledges entries before it
/// fsyncs them would after a crash: restarting a majority then loses
/// committed entries, and the checker must report it. This guards against
/// a checker that passes everything.
#[test]
fn checker_catches_entries_acknowledged_before_they_are_durable() {
    quiet_panics_of_this_thread();
    let mut caught = 0;
    for seed in 0..20 {
        let result = std::panic::catch_unwind(|| {
            let mut s = Sim::new(3, seed, NetConfig::reliable());
            s.disk_drops_appends = true;
            for round in 0..50u64 {
                s.run_until(5 * SECOND, |s| s.leader().is_some());
                if let Some(leader) = s.leader() {
                    s.propose(leader, &format!("x{round}"));
                }
                s.run_for(200 * MS);
                // Crash and restart two nodes, leader included.
                let a = s.leader().unwrap_or(0);
                let b = (a + 1) % 3;
                s.crash(a);
                s.crash(b);
                s.start(a);
                s.start(b);
            }
        });
        caught += result.is_err() as u32;
    }
    assert!(
        caught >= 15,
        "the checker missed lost committed entries in {} of 20 seeds",
        20 - caught
    );
}

/// The snapshot checks catch a broken state machine snapshot: here every
/// snapshot silently loses its last key. A follower that installs one, or
/// a node that restarts from one, then differs from the others; the
/// checker must say so, by comparing each snapshot with the state the
/// committed entries give.
#[test]
fn checker_catches_a_snapshot_that_loses_state() {
    quiet_panics_of_this_thread();
    let mut caught = 0;
    for seed in 0..10 {
        let result = std::panic::catch_unwind(|| {
            let mut s = Sim::new(3, seed, NetConfig::reliable());
            s.snapshots_lose_a_key = true;
            for k in 1..=20u64 {
                s.run_until(5 * SECOND, |s| s.leader().is_some());
                let leader = s.leader().unwrap();
                let put = Command {
                    client: 1,
                    seq: k,
                    op: Op::Put {
                        key: format!("k{k}"),
                        value: "v".into(),
                    },
                };
                s.propose_json(leader, put.encode());
                s.run_for(100 * MS);
            }
            s.take_snapshot(s.leader().unwrap());
        });
        caught += result.is_err() as u32;
    }
    assert_eq!(caught, 10, "the checker missed a snapshot that lost a key");
}

/// Chaos with PreVote and CheckQuorum off, so that Figure 2's elections
/// alone (a timed-out server takes a new term at once; votes are answered
/// whenever the term is new) stay covered.
#[test]
fn chaos_figure_2_elections_only() {
    run_many_with(
        "chaos_figure_2_elections_only",
        6_000,
        100,
        5,
        30 * SECOND,
        Knobs {
            figure_2_only: true,
            ..Knobs::default()
        },
    );
}

// ----- Scripted scenarios in the style of etcd-io/raft's testdata -----

/// PreVote settings: both on (the default), or PreVote and CheckQuorum off.
fn cluster(n: usize, seed: u64, thesis_9_6: bool) -> Sim {
    if thesis_9_6 {
        Sim::new(n, seed, NetConfig::reliable())
    } else {
        Sim::tuned(n, seed, NetConfig::reliable(), |c| {
            c.pre_vote = false;
            c.check_quorum = false;
        })
    }
}

/// A follower cut off from everyone for 5 s (about ten election timeouts),
/// then reconnected: returns (the leader's term before, the leader and its
/// term after, the follower's highest term while cut off).
fn isolate_a_follower_and_heal(s: &mut Sim) -> (u64, Option<(NodeId, u64)>, u64) {
    assert!(s.run_until(5 * SECOND, |s| s.leader().is_some()));
    s.run_for(SECOND);
    let leader = s.leader().expect("a leader");
    let term = s.raft(leader).unwrap().term();
    let follower = (leader + 1) % s.n() as NodeId;
    s.disconnect(follower);
    let mut highest = 0;
    for _ in 0..50 {
        s.run_for(100 * MS);
        highest = highest.max(s.raft(follower).unwrap().term());
    }
    s.connect(follower);
    s.run_until(5 * SECOND, |s| {
        s.raft(follower).unwrap().leader_id().is_some()
    });
    s.run_for(SECOND);
    let after = s.leader().map(|l| (l, s.raft(l).unwrap().term()));
    (term, after, highest)
}

/// etcd-io/raft testdata/prevote.txt: a follower cut off and healed
/// rejoins without disturbing the leader. Its pre-votes fail while it is
/// alone, so its term never rises, and when it is back nobody sees a newer
/// term: the leader keeps its office and its term. Without PreVote the
/// same script deposes the leader (the control below), so the test can
/// fail.
#[test]
fn thesis_9_6_an_isolated_follower_rejoins_and_the_leader_keeps_its_term() {
    for seed in seeds(7_000, 10) {
        let _guard = SeedGuard {
            file: "simulation",
            test: "thesis_9_6_an_isolated_follower_rejoins_and_the_leader_keeps_its_term",
            seed,
        };
        let mut s = cluster(5, seed, true);
        s.keep_events = true;
        let (term, after, highest) = isolate_a_follower_and_heal(&mut s);
        assert_eq!(highest, term, "the cut-off follower raised its term");
        let (_, term_after) = after.expect("a leader after healing");
        assert_eq!(term_after, term, "the leader changed term");
        assert!(
            s.events
                .iter()
                .any(|(_, e)| matches!(e, Event::PreVoteLost { .. })),
            "the cut-off follower's pre-votes were lost"
        );

        let mut control = cluster(5, seed, false);
        let (term, after, highest) = isolate_a_follower_and_heal(&mut control);
        assert!(highest > term + 3, "without PreVote the term climbs");
        assert!(after.expect("a leader").1 > term, "and deposes the leader");
    }
}

/// etcd-io/raft testdata/checkquorum.txt: a leader cut off with a minority
/// steps down one minimum election timeout (300 ms) after it last heard
/// from a majority, keeping its term, while the majority elects a leader;
/// healed, it follows that leader. Without CheckQuorum it would go on
/// believing it leads for as long as the partition lasts.
#[test]
fn thesis_6_2_a_leader_in_a_minority_steps_down_within_an_election_timeout() {
    for seed in seeds(7_100, 10) {
        let _guard = SeedGuard {
            file: "simulation",
            test: "thesis_6_2_a_leader_in_a_minority_steps_down_within_an_election_timeout",
            seed,
        };
        for check_quorum in [true, false] {
            let mut s = cluster(5, seed, check_quorum);
            assert!(s.run_until(5 * SECOND, |s| s.leader().is_some()));
            s.run_for(SECOND);
            let old = s.leader().unwrap();
            let term = s.raft(old).unwrap().term();
            let minority = vec![old, (old + 1) % 5];
            let majority: Vec<NodeId> = (2..5).map(|k| (old + k) % 5).collect();
            s.partition(&[minority, majority.clone()]);
            let cut_at = s.now;
            let stepped_down = s.run_until(3 * SECOND, |s| {
                s.raft(old).unwrap().role() != raft::consensus::Role::Leader
            });
            if !check_quorum {
                assert!(!stepped_down, "without CheckQuorum it keeps leading");
                continue;
            }
            assert!(stepped_down, "the cut-off leader never stepped down");
            // Its last answer from the majority came at most one heartbeat
            // (50 ms) plus a round trip before the cut.
            assert!(
                s.now - cut_at <= 300 * MS,
                "stepped down {:?} after the cut",
                s.now - cut_at
            );
            assert_eq!(s.raft(old).unwrap().term(), term, "in its own term");
            assert!(s.propose(old, "refused").is_none(), "it takes no writes");
            assert!(s.run_until(5 * SECOND, |s| {
                s.leader().is_some_and(|l| majority.contains(&l))
            }));
            s.heal();
            let new = s.leader().unwrap();
            assert!(s.run_until(5 * SECOND, |s| {
                s.raft(old).unwrap().leader_id() == Some(new)
            }));
        }
    }
}

/// Thesis §3.10: a transfer to a follower that missed entries first
/// catches it up (TimeoutNow waits until it holds the whole log), so it
/// wins the election at once: one term later, every entry is committed
/// under the new leader.
#[test]
fn thesis_3_10_a_transfer_to_a_lagging_node_catches_it_up_first() {
    for seed in seeds(7_200, 10) {
        let _guard = SeedGuard {
            file: "simulation",
            test: "thesis_3_10_a_transfer_to_a_lagging_node_catches_it_up_first",
            seed,
        };
        let mut s = cluster(3, seed, true);
        s.keep_events = true;
        assert!(s.run_until(5 * SECOND, |s| s.leader().is_some()));
        let leader = s.leader().unwrap();
        let term = s.raft(leader).unwrap().term();
        let lagging = (leader + 1) % 3;
        s.disconnect(lagging);
        let mut last = 0;
        for k in 0..50 {
            last = s.propose(leader, &format!("x{k}")).unwrap().0;
            s.run_for(5 * MS);
        }
        s.connect(lagging);
        assert!(s.raft(lagging).unwrap().log().last_index() < last);
        assert_eq!(s.transfer(leader, Some(lagging)), Ok(lagging));
        assert!(s.propose(leader, "refused").is_none(), "writes wait");
        assert!(s.run_until(2 * SECOND, |s| s.leader() == Some(lagging)));
        let new = s.raft(lagging).unwrap();
        assert_eq!(new.term(), term + 1, "won at the first try");
        assert!(new.log().last_index() > last);
        let sent = s.events.iter().find_map(|(id, e)| match e {
            Event::TimeoutNowSent { target } if *id == leader => Some(*target),
            _ => None,
        });
        assert_eq!(sent, Some(lagging));
        assert!(s.run_until(SECOND, |s| {
            s.raft(lagging).unwrap().commit_index() > last
        }));
    }
}

/// A transfer whose target crashes (before or after it got TimeoutNow)
/// splits nothing: at most one leader per term (the checker), and the
/// cluster has one leader again soon, either the old one, which abandons
/// the transfer after an election timeout and takes writes again, or one
/// elected after the target's election failed.
#[test]
fn thesis_3_10_a_transfer_target_that_dies_causes_no_split() {
    for seed in seeds(7_300, 20) {
        let _guard = SeedGuard {
            file: "simulation",
            test: "thesis_3_10_a_transfer_target_that_dies_causes_no_split",
            seed,
        };
        let mut s = cluster(5, seed, true);
        assert!(s.run_until(5 * SECOND, |s| s.leader().is_some()));
        s.run_for(SECOND);
        let leader = s.leader().unwrap();
        let target = (leader + 1 + seed % 4) % 5;
        s.transfer(leader, Some(target)).unwrap();
        // Crash it at once, or a few milliseconds in (after TimeoutNow).
        s.run_for(Duration::from_millis(seed % 8));
        s.crash(target);
        // A leader that is not (or no longer) handing over.
        assert!(s.run_until(3 * SECOND, |s| {
            s.leader()
                .is_some_and(|l| s.raft(l).unwrap().transfer().is_none())
        }));
        let now_leader = s.leader().unwrap();
        assert!(
            s.propose(now_leader, "after").is_some(),
            "the leader takes writes again"
        );
        s.start(target);
        assert!(s.run_until(3 * SECOND, |s| {
            (0..5).all(|id| s.raft(id).unwrap().leader_id().is_some())
        }));
        s.check_deep();
    }
}

/// What a membership chaos run did.
#[derive(Default, Debug)]
struct Changes {
    proposed: u64,
    refused: u64,
    joint: u64,
    retired: u64,
    snapshots_installed: u64,
}

/// Chaos with membership changes (issue 21): three servers and four
/// spares; at random the leader adds a spare as a learner (which is then
/// started, knowing only the bootstrap membership), promotes a learner,
/// removes a server (the leader too), or sets the voters to a random
/// subset (joint consensus when more than one voter changes), while
/// clients propose, nodes crash and restart and the network partitions.
/// A server whose removal is committed is stopped for good, as an
/// operator would. The checker runs as in every chaos test (one leader
/// per term across memberships, log matching, leader completeness, state
/// machine safety); at the end the network heals, and every member of the
/// final membership applies a new entry and holds that same membership.
/// With snapshots at random (every other seed), so that memberships are
/// compacted into them and new servers catch up through InstallSnapshot,
/// which carries the membership.
fn membership_chaos(seed: u64, virtual_time: Duration) -> Changes {
    use raft::consensus::membership::Change;
    use std::collections::BTreeSet;
    let _guard = SeedGuard {
        file: "simulation",
        test: "chaos_with_membership_changes",
        seed,
    };
    let (n, spares) = (3, 4);
    let total = (n + spares) as NodeId;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut s = Sim::with_spares(n, spares, seed, NetConfig::unreliable());
    if seed % 2 == 1 {
        s.snapshot_chance = 0.002;
    }
    let mut next_spare = n as NodeId;
    let mut retired = BTreeSet::new();
    let mut changes = Changes::default();
    let end = s.now + virtual_time;
    while s.now < end {
        s.run_for(Duration::from_millis(rng.random_range(5..150)));
        let pick = rng.random_range(0..next_spare);
        match rng.random_range(0..100) {
            0..40 => {
                if let Some(leader) = s.leader() {
                    s.propose(leader, &format!("cmd-{seed}-{}", s.now.as_nanos()));
                }
            }
            40..46 if s.is_up(pick) => s.crash(pick),
            46..56 if !s.is_up(pick) && !retired.contains(&pick) && !s.retired.contains(&pick) => {
                s.start(pick)
            }
            56..62 => {
                let mut groups = vec![Vec::new(), Vec::new()];
                for id in 0..total {
                    groups[rng.random_range(0..2)].push(id);
                }
                s.partition(&groups);
            }
            62..70 => s.heal(),
            70..88 => {
                let Some(leader) = s.leader() else { continue };
                let m = s.raft(leader).unwrap().membership().clone();
                let servers: Vec<NodeId> = m.servers.keys().copied().collect();
                let change = match rng.random_range(0..4) {
                    0 if next_spare < total => Change::AddLearner {
                        id: next_spare,
                        address: format!("sim{next_spare}"),
                    },
                    1 if !m.learners().is_empty() => {
                        let learners: Vec<NodeId> = m.learners().into_iter().collect();
                        Change::Promote(learners[rng.random_range(0..learners.len())])
                    }
                    2 => Change::Remove(servers[rng.random_range(0..servers.len())]),
                    _ => {
                        let voters: BTreeSet<NodeId> = servers
                            .iter()
                            .copied()
                            .filter(|_| rng.random_bool(0.6))
                            .collect();
                        Change::SetVoters(voters)
                    }
                };
                changes.proposed += 1;
                match s.propose_change(leader, &change) {
                    Ok((_, m)) => {
                        changes.joint += u64::from(m.is_joint());
                        if let Change::AddLearner { id, .. } = change {
                            s.start(id);
                            next_spare += 1;
                        }
                    }
                    Err(_) => changes.refused += 1,
                }
            }
            88..92 => {
                if let Some(leader) = s.leader() {
                    let _ = s.transfer(leader, Some(pick));
                }
            }
            _ => {}
        }
        // Servers whose removal some server knows is committed stop.
        let removed: BTreeSet<NodeId> = (0..total)
            .filter_map(|id| s.raft(id))
            .flat_map(|r| r.membership_at(r.commit_index()).removed.clone())
            .collect();
        for id in removed.difference(&retired.clone()) {
            if s.is_up(*id) {
                s.crash(*id);
            }
            retired.insert(*id);
            changes.retired += 1;
        }
    }

    // Heal; start every server not removed; a leader must commit a new
    // entry on every member of its membership, all holding that one.
    s.heal();
    s.net = NetConfig::reliable();
    for id in 0..next_spare {
        if !s.is_up(id) && !retired.contains(&id) && !s.retired.contains(&id) {
            s.start(id);
        }
    }
    let deadline = s.now + 30 * SECOND;
    loop {
        if s.now >= deadline {
            let states: Vec<String> = (0..next_spare)
                .map(|id| match s.raft(id) {
                    Some(r) => format!(
                        "node{id}: {:?} term {} commit {} last {} membership [{}]",
                        r.role(),
                        r.term(),
                        r.commit_index(),
                        r.log().last_index(),
                        r.membership(),
                    ),
                    None => format!("node{id}: down (retired: {})", retired.contains(&id)),
                })
                .collect();
            panic!(
                "no entry committed on every member within 30 s of healing:\n{}",
                states.join("\n")
            );
        }
        if !s.run_until(5 * SECOND, |s| s.leader().is_some()) {
            continue;
        }
        let leader = s.leader().unwrap();
        let Some((index, _)) = s.propose(leader, "final") else {
            s.run_for(10 * MS);
            continue;
        };
        let members: Vec<NodeId> = s
            .raft(leader)
            .unwrap()
            .membership()
            .servers
            .keys()
            .copied()
            .collect();
        let all = s.run_until(5 * SECOND, |s| {
            members
                .iter()
                .all(|&id| s.raft(id).is_some_and(|r| r.commit_index() >= index))
                && s.n_applied(index).1 == Some(Payload::Command(Json::string("final")))
        });
        if all {
            // (The leader may have appended one more membership meanwhile,
            // leaving a joint one: it reaches every member too.)
            let agree = |s: &Sim| {
                let Some(m) = s.leader().and_then(|l| s.raft(l)).map(|r| r.membership()) else {
                    return false;
                };
                m.servers
                    .keys()
                    .all(|&id| s.raft(id).is_some_and(|r| r.membership() == m))
            };
            s.run_until(5 * SECOND, agree);
            let leader = s.leader().expect("a leader");
            let m = s.raft(leader).unwrap().membership().clone();
            let members: Vec<NodeId> = m.servers.keys().copied().collect();
            for &id in &members {
                assert_eq!(
                    s.raft(id).unwrap().membership(),
                    &m,
                    "node {id}'s membership"
                );
            }
            break;
        }
    }
    s.check_deep();
    changes.snapshots_installed = s.checker.snapshots_installed;
    changes
}

#[test]
fn chaos_with_membership_changes() {
    let mut total = Changes::default();
    for seed in seeds(7_000, 60) {
        let c = membership_chaos(seed, 30 * SECOND);
        total.proposed += c.proposed;
        total.refused += c.refused;
        total.joint += c.joint;
        total.retired += c.retired;
        total.snapshots_installed += c.snapshots_installed;
    }
    eprintln!("membership chaos: {total:?}");
    assert!(total.proposed - total.refused > 100, "{total:?}");
    assert!(total.joint > 5 && total.retired > 20, "{total:?}");
    assert!(total.snapshots_installed > 10, "{total:?}");
}

/// Scenario 6, the single-server bug posted to raft-dev in 2015, played
/// out step by step: leader 0 of {0,1,2,3} (with learner 4) appends
/// "promote 4" where only 4 receives it, and crashes; X is elected by
/// {1,2,3}, and Z is cut off at once, before X's first entry reaches it.
/// If X could now append "remove 0" before committing an entry of its own
/// term, X and Y would commit it (a majority of {1,2,3}) over the index
/// where 0 holds "promote 4"; then 0 restarts, wins {0,4,Z} (a majority
/// of its {0,1,2,3,4}: Z's log is behind 0's) and commits "promote 4" at
/// the same index: two entries committed at one index, which the checker
/// catches. The rule (Raft::propose_change refuses until the leader has
/// committed an entry of its term) keeps X from appending it: X's first
/// entry needs Z, cut off.
#[test]
fn thesis_4_a_new_leader_changes_no_membership_before_committing_in_its_term() {
    use raft::consensus::ChangeRefused;
    use raft::consensus::membership::Change;
    let test = "thesis_4_a_new_leader_changes_no_membership_before_committing_in_its_term";
    for_seeds("simulation", test, 7_500, 20, |seed| {
        let mut s = Sim::with_spares(4, 1, seed, NetConfig::reliable());
        node_0_leads_and_has_committed(&mut s);
        let added = Change::AddLearner {
            id: 4,
            address: "sim4".into(),
        };
        let (index, _) = s.propose_change(0, &added).unwrap();
        s.start(4);
        assert!(s.run_until(5 * SECOND, |s| {
            (0..5).all(|id| s.raft(id).is_some_and(|r| r.commit_index() >= index))
        }));
        // "Promote 4" reaches 4 only; then 0 crashes.
        s.partition(&[vec![0, 4], vec![1, 2, 3]]);
        s.propose_change(0, &Change::Promote(4)).unwrap();
        s.run_for(200 * MS);
        s.crash(0);
        assert!(s.run_until(10 * SECOND, |s| s.leader().is_some()));
        let x = s.leader().unwrap();
        let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != x).collect();
        let (y, z) = (others[0], others[1]);
        s.partition(&[vec![0, 4, z], vec![x, y]]);
        // X tries to remove 0 for two seconds.
        let mut appended = false;
        for _ in 0..40 {
            match s.propose_change(x, &Change::Remove(0)) {
                Ok(_) => {
                    appended = true;
                    break;
                }
                Err(ChangeRefused::NotYetCommitted) => s.run_for(50 * MS),
                // CheckQuorum: cut off from Z (and 0), X steps down.
                Err(ChangeRefused::NotLeader(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        s.run_for(SECOND);
        // 0 comes back on Z's side and wins there.
        s.start(0);
        s.run_for(10 * SECOND);
        assert!(
            !appended,
            "leader {x} changed the membership before committing in its term"
        );
        s.check_deep();
    });
}

/// Makes node 0 the leader (by a transfer if another won), and waits
/// until everything in its log is committed, in its term.
fn node_0_leads_and_has_committed(s: &mut Sim) {
    assert!(s.run_until(10 * SECOND, |s| s.leader().is_some()));
    let first = s.leader().unwrap();
    if first != 0 {
        s.transfer(first, Some(0)).unwrap();
        assert!(s.run_until(10 * SECOND, |s| s.leader() == Some(0)));
    }
    assert!(s.run_until(5 * SECOND, |s| {
        let r = s.raft(0).unwrap();
        r.log().term_at(r.commit_index()) == Some(r.term())
            && r.log().last_index() == r.commit_index()
    }));
}

/// Scenario 5's reason, played out: why a second change must wait for the
/// first. Leader 0 of {0,1,2} with learners 3 and 4 is cut off with them
/// from 1 and 2, and asks to promote 3, then 4. Were the second appended
/// while the first is uncommitted, 0 would count by {0,1,2,3,4}, whose
/// majority {0,3,4} does not meet {1,2}, a majority of the membership
/// 1 and 2 still have: both sides would commit, at the same indices. The
/// checker catches that; with the rule the second is refused (naming the
/// first), 0 cannot commit the first without 1 or 2, and steps down.
#[test]
fn thesis_4_1_one_membership_change_at_a_time() {
    use raft::consensus::ChangeRefused;
    use raft::consensus::membership::Change;
    let test = "thesis_4_1_one_membership_change_at_a_time";
    for_seeds("simulation", test, 7_600, 20, |seed| {
        let mut s = Sim::with_spares(3, 2, seed, NetConfig::reliable());
        for id in [3, 4] {
            node_0_leads_and_has_committed(&mut s);
            let address = format!("sim{id}");
            s.propose_change(0, &Change::AddLearner { id, address })
                .unwrap();
            s.start(id);
        }
        assert!(s.run_until(5 * SECOND, |s| {
            let r = s.raft(0).unwrap();
            r.commit_index() == r.log().last_index()
        }));
        s.partition(&[vec![0, 3, 4], vec![1, 2]]);
        s.propose_change(0, &Change::Promote(3)).unwrap();
        let second = s.propose_change(0, &Change::Promote(4));
        // Both sides take writes for a while.
        for k in 0..50 {
            s.run_for(100 * MS);
            for id in 0..5 {
                if s.raft(id)
                    .is_some_and(|r| r.role() == raft::consensus::Role::Leader)
                {
                    s.propose(id, &format!("w{k}"));
                }
            }
        }
        s.heal();
        s.run_for(5 * SECOND);
        s.check_deep();
        assert!(
            matches!(second, Err(ChangeRefused::InProgress { .. })),
            "{second:?}"
        );
    });
}
