//! The key-value store over the simulated cluster: clients issue put, get,
//! cas, delete and append concurrently while the network drops, delays,
//! reorders and partitions and nodes crash and restart. Every history is
//! checked for linearizability, per key, with operations that never got an
//! answer treated as possibly applied; every acknowledged append must be
//! in the log, applied exactly once. Then the MIT 6.5840 kvraft (4A)
//! scenarios, in our own words.
//!
//! `SIM_SEED=<n>` replays one seed; `SIM_SEEDS_SCALE` scales the count.

mod sim;

use std::collections::HashMap;
use std::time::Duration;

use raft::consensus::NodeId;
use raft::kv::{ClientId, KvStore};
use raft::lincheck::{self, Verdict};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use sim::kvsim::{KvCluster, Workload};
use sim::{MS, NetConfig, SeedGuard, Sim, seeds};

const SECOND: Duration = Duration::from_secs(1);

/// Heals everything, lets the clients finish, and checks the history and
/// the appends. Returns (operations checked, operations given up).
fn settle_and_check(c: &mut KvCluster) -> (usize, usize) {
    c.sim.heal();
    c.sim.net = NetConfig::reliable();
    for id in 0..c.sim.n() as NodeId {
        c.sim.repair_disk(id);
        if !c.sim.is_up(id) {
            c.sim.start(id);
        }
    }
    c.drain(20 * SECOND);
    assert!(
        c.clients_idle(),
        "operations still pending 20 s after healing"
    );
    // Converge: a leader has committed in its own term, and every node has
    // applied everything it committed.
    let converged = c.sim.run_until(20 * SECOND, |s| {
        let Some(l) = s.leader().and_then(|l| s.raft(l)) else {
            return false;
        };
        let commit = l.commit_index();
        l.log().term_at(commit) == Some(l.term())
            && s.nodes.iter().all(|n| n.applied_index == commit)
    });
    assert!(converged, "the cluster did not converge after healing");
    match lincheck::check(&c.history) {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable { key } => {
            let ops: Vec<_> = c.history.iter().filter(|o| o.key == key).collect();
            panic!("history of key {key} is not linearizable:\n{ops:#?}");
        }
        Verdict::Undecided { key, reason } => panic!("checking {key} ran out of {reason}"),
    }
    // Exactly once: replay every committed entry (the checker has made
    // sure all nodes applied the same ones, snapshots included); each
    // acknowledged append must be freshly applied exactly once.
    let mut kv = KvStore::new();
    let mut fresh: HashMap<(ClientId, u64), usize> = HashMap::new();
    for e in c.sim.checker.committed.values() {
        if let Some(a) = kv.apply(e)
            && !a.duplicate
        {
            *fresh.entry((a.command.client, a.command.seq)).or_default() += 1;
        }
    }
    for id in &c.acked_appends {
        assert_eq!(
            fresh.get(id),
            Some(&1),
            "acknowledged append {id:?} not applied exactly once"
        );
    }
    assert!(
        fresh.values().all(|&n| n == 1),
        "a command was applied twice"
    );
    (
        c.history.iter().filter(|o| o.ret.is_some()).count(),
        c.gave_up,
    )
}

fn chaos_kv(
    test: &'static str,
    seed: u64,
    n: usize,
    clients: usize,
    time: Duration,
    knobs: Knobs,
) -> (usize, usize) {
    let _guard = SeedGuard {
        file: "kv_sim",
        test,
        seed,
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5EED);
    let sim = if knobs.lease_reads {
        Sim::tuned(n, seed, NetConfig::unreliable(), |c| c.lease_reads = true)
    } else {
        Sim::new(n, seed, NetConfig::unreliable())
    };
    let mut c = KvCluster::new(sim, clients, Workload::default());
    c.sim.snapshot_chance = knobs.snapshots;
    let end = c.sim.now + time;
    while c.sim.now < end {
        c.run_for(Duration::from_millis(rng.random_range(20..300)), true);
        let pick = rng.random_range(0..n as NodeId);
        match rng.random_range(0..100) {
            0..10 if c.sim.is_up(pick) => c.sim.crash(pick),
            10..25 if !c.sim.is_up(pick) => c.sim.start(pick),
            25..35 => {
                let mut groups = vec![Vec::new(), Vec::new()];
                for id in 0..n as NodeId {
                    groups[rng.random_range(0..2)].push(id);
                }
                c.sim.partition(&groups);
            }
            35..50 => c.sim.heal(),
            50..55 => c.sim.net = NetConfig::reliable(),
            55..60 => c.sim.net = NetConfig::unreliable(),
            // Clocks drift within the 10 % lease reads allow.
            60..70 if knobs.lease_reads => c.sim.set_clock_rate(pick, rng.random_range(0.9..=1.1)),
            _ => {}
        }
    }
    settle_and_check(&mut c)
}

/// Disks that fail (full, I/O error) part way through a write: the node
/// stops without answering, as the runtime does; once the disk is replaced
/// and the node restarted from what reached it, nothing acknowledged is
/// lost. Checked as every chaos run is: linearizable histories, and every
/// acknowledged append applied exactly once.
#[test]
fn disk_failures_lose_nothing_acknowledged() {
    let test = "disk_failures_lose_nothing_acknowledged";
    let (mut failures, mut checked) = (0, 0);
    for seed in seeds(40_000, 40) {
        let _guard = SeedGuard {
            file: "kv_sim",
            test,
            seed,
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xD15C);
        let n = 3 + 2 * (seed % 2) as usize;
        let mut c = KvCluster::new(
            Sim::new(n, seed, NetConfig::unreliable()),
            4,
            Workload::default(),
        );
        let end = c.sim.now + 15 * SECOND;
        while c.sim.now < end {
            c.run_for(Duration::from_millis(rng.random_range(20..300)), true);
            // The leader's disk half the time: it writes the most.
            let pick = match c.sim.leader() {
                Some(l) if rng.random_bool(0.5) => l,
                _ => rng.random_range(0..n as NodeId),
            };
            match rng.random_range(0..100) {
                0..15 => c.sim.break_disk(pick),
                15..35 if !c.sim.is_up(pick) => {
                    c.sim.repair_disk(pick);
                    c.sim.start(pick);
                }
                _ => {}
            }
        }
        failures += c.sim.disk_failures;
        checked += settle_and_check(&mut c).0;
    }
    eprintln!("{test}: {failures} failed writes, {checked} operations checked");
    assert!(failures > 40, "too few disk failures to mean anything");
}

/// What a chaos run adds to the network's and nodes' faults.
#[derive(Clone, Copy, Default)]
struct Knobs {
    /// Chance per step and node of taking a snapshot and compacting.
    snapshots: f64,
    /// Lease reads on, with clocks drifting within their bound.
    lease_reads: bool,
}

fn run_many(test: &'static str, base: u64, count: u64, n: usize, clients: usize, time: Duration) {
    run_many_with(test, base, count, (n, clients), time, Knobs::default());
}

fn run_many_with(
    test: &'static str,
    base: u64,
    count: u64,
    (n, clients): (usize, usize),
    time: Duration,
    knobs: Knobs,
) {
    let started = std::time::Instant::now();
    let seeds = seeds(base, count);
    let (mut checked, mut unknown) = (0, 0);
    for &seed in &seeds {
        let (c, u) = chaos_kv(test, seed, n, clients, time, knobs);
        checked += c;
        unknown += u;
    }
    eprintln!(
        "{test}: {} seeds: {checked} completed operations checked for linearizability, {unknown} with unknown outcome, {:.1}s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(checked > 0);
}

#[test]
fn linearizable_under_chaos_three_nodes() {
    run_many(
        "linearizable_under_chaos_three_nodes",
        10_000,
        80,
        3,
        4,
        20 * SECOND,
    );
}

#[test]
fn linearizable_under_chaos_five_nodes() {
    run_many(
        "linearizable_under_chaos_five_nodes",
        20_000,
        80,
        5,
        6,
        20 * SECOND,
    );
}

/// The same, with every node taking snapshots at random points and
/// compacting its log (MIT 6.5840 4B's point): sessions travel in the
/// snapshots, so exactly-once holds for retries answered after a restart
/// from a snapshot or an InstallSnapshot, and the histories stay
/// linearizable.
#[test]
fn linearizable_under_chaos_with_compaction() {
    run_many_with(
        "linearizable_under_chaos_with_compaction",
        30_000,
        80,
        (3, 4),
        20 * SECOND,
        Knobs {
            snapshots: 0.003,
            ..Knobs::default()
        },
    );
}

/// Lease reads (thesis §6.4.1) through the same chaos, while every
/// node's clock changes speed at random within the 10 % the lease allows:
/// histories stay linearizable, and no lease ever holds while a newer
/// leader exists (the simulation checks that after every step).
#[test]
fn linearizable_under_chaos_with_lease_reads_and_drifting_clocks() {
    run_many_with(
        "linearizable_under_chaos_with_lease_reads_and_drifting_clocks",
        40_000,
        80,
        (5, 6),
        20 * SECOND,
        Knobs {
            lease_reads: true,
            ..Knobs::default()
        },
    );
}

// ----- MIT 6.5840 kvraft (4A), in our own words -----

fn for_seeds(test: &'static str, base: u64, count: u64, scenario: impl Fn(u64)) {
    sim::for_seeds("kv_sim", test, base, count, scenario)
}

/// Clients work through a leader stuck in a minority partition: nothing
/// they send there completes until the partition heals; the majority side
/// keeps serving; afterwards everything is linearizable.
#[test]
fn one_partition_4a() {
    for_seeds("one_partition_4a", 30_000, 5, |seed| {
        let mut c = KvCluster::new(
            Sim::new(5, seed, NetConfig::reliable()),
            4,
            Workload::default(),
        );
        c.run_for(2 * SECOND, true);
        let leader = c.sim.leader().expect("a leader");
        let minority = vec![leader, (leader + 1) % 5];
        let majority: Vec<NodeId> = (0..5).filter(|id| !minority.contains(id)).collect();
        c.sim.partition(&[minority.clone(), majority.clone()]);
        let before = c.completed;
        c.run_for(3 * SECOND, true);
        assert!(c.completed > before, "the majority side must keep serving");
        let new_leader = c.sim.leader().expect("a leader");
        assert!(
            majority.contains(&new_leader)
                || c.sim.raft(leader).unwrap().term() < c.sim.raft(new_leader).unwrap().term()
        );
        settle_and_check(&mut c);
    });
}

/// Thesis §6.4: a deposed leader that does not know it yet must not answer
/// reads. The old leader sits in a minority for five seconds with
/// read-heavy clients still talking to it, while the majority elects a new
/// leader and keeps writing the same keys. CheckQuorum is off, so the old
/// leader never steps down on its own: ReadIndex alone, with no clock in
/// it, must keep its reads linearizable.
#[test]
fn a_leader_cut_off_in_a_minority_serves_no_stale_reads_4a() {
    for_seeds(
        "a_leader_cut_off_in_a_minority_serves_no_stale_reads_4a",
        35_000,
        5,
        |seed| {
            // Half the clients only read: nothing pulls them off the old leader.
            let workload = Workload {
                keys: 2,
                reads: 0.3,
                think: 2 * MS,
                readers: 4,
            };
            let sim = Sim::tuned(5, seed, NetConfig::reliable(), |c| c.check_quorum = false);
            let mut c = KvCluster::new(sim, 8, workload);
            c.run_for(SECOND, true);
            let old = c.sim.leader().expect("a leader");
            c.sim.partition(&[
                vec![old, (old + 1) % 5],
                (2..5).map(|k| (old + k) % 5).collect(),
            ]);
            c.run_for(5 * SECOND, true);
            let old_raft = c.sim.raft(old).unwrap();
            assert_eq!(
                old_raft.role(),
                raft::consensus::Role::Leader,
                "the old leader still believes it leads"
            );
            settle_and_check(&mut c);
        },
    );
}

/// Partitions change every few hundred milliseconds while clients work.
#[test]
fn many_partitions_4a() {
    for_seeds("many_partitions_4a", 31_000, 5, |seed| {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut c = KvCluster::new(
            Sim::new(5, seed, NetConfig::reliable()),
            5,
            Workload::default(),
        );
        for _ in 0..20 {
            let mut groups = vec![Vec::new(), Vec::new()];
            for id in 0..5 {
                groups[rng.random_range(0..2)].push(id);
            }
            c.sim.partition(&groups);
            c.run_for(Duration::from_millis(rng.random_range(100..600)), true);
        }
        settle_and_check(&mut c);
    });
}

/// Every node crashes and restarts from its disk, repeatedly.
#[test]
fn persist_with_restarts_4a() {
    for_seeds("persist_with_restarts_4a", 32_000, 5, |seed| {
        let mut c = KvCluster::new(
            Sim::new(5, seed, NetConfig::reliable()),
            5,
            Workload::default(),
        );
        for _ in 0..6 {
            c.run_for(SECOND, true);
            for id in 0..5 {
                c.sim.crash(id);
            }
            c.sim.run_for(10 * MS);
            for id in 0..5 {
                c.sim.start(id);
            }
        }
        let (checked, _) = settle_and_check(&mut c);
        assert!(checked > 50, "only {checked} operations completed");
    });
}

#[test]
fn unreliable_network_4a() {
    for_seeds("unreliable_network_4a", 33_000, 5, |seed| {
        let mut c = KvCluster::new(
            Sim::new(5, seed, NetConfig::unreliable()),
            5,
            Workload::default(),
        );
        c.run_for(10 * SECOND, true);
        settle_and_check(&mut c);
    });
}

/// Many clients on one key, writes only, with restarts and an unreliable
/// network: a hot spot for duplicates. Every acknowledged append applies
/// exactly once (checked in `settle_and_check`), and the key's history is
/// linearizable.
#[test]
fn one_key_under_contention_exactly_once_4a() {
    for_seeds(
        "one_key_under_contention_exactly_once_4a",
        34_000,
        5,
        |seed| {
            let workload = Workload {
                keys: 1,
                reads: 0.2,
                think: MS,
                readers: 0,
            };
            let mut c = KvCluster::new(Sim::new(3, seed, NetConfig::unreliable()), 8, workload);
            for round in 0..5 {
                c.run_for(SECOND, true);
                c.sim.crash(round % 3);
                c.run_for(300 * MS, true);
                c.sim.start(round % 3);
            }
            settle_and_check(&mut c);
            assert!(!c.acked_appends.is_empty());
        },
    );
}

// ----- Lease reads (thesis §6.4.1) and the clock model -----

/// The 4A scenario above (an old leader cut off in a minority with
/// read-only clients stuck on it, while the majority elects a leader and
/// writes the same keys), with lease reads on or off, and with clocks:
/// `rates(id)` for every node from the start, then `old_leader_rate` for
/// the old leader from the moment it is cut off. Returns the verdict.
fn minority_leader_history(
    seed: u64,
    lease_reads: bool,
    rates: impl Fn(NodeId) -> f64,
    old_leader_rate: Option<f64>,
) -> Verdict {
    let workload = Workload {
        keys: 2,
        reads: 0.3,
        think: 2 * MS,
        readers: 4,
    };
    let mut sim = if lease_reads {
        Sim::tuned(5, seed, NetConfig::reliable(), |c| c.lease_reads = true)
    } else {
        Sim::new(5, seed, NetConfig::reliable())
    };
    for id in 0..5 {
        sim.set_clock_rate(id, rates(id));
    }
    // Beyond the bound the lease check after every step would stop the
    // run at once; let it go on to show what the clients see.
    sim.check_leases = old_leader_rate.is_none_or(|r| r >= 0.9);
    let mut c = KvCluster::new(sim, 8, workload);
    c.run_for(SECOND, true);
    let old = c.sim.leader().expect("a leader");
    if let Some(rate) = old_leader_rate {
        c.sim.set_clock_rate(old, rate);
    }
    c.sim.partition(&[
        vec![old, (old + 1) % 5],
        (2..5).map(|k| (old + k) % 5).collect(),
    ]);
    c.run_for(3 * SECOND, true);
    c.sim.heal();
    c.drain(20 * SECOND);
    lincheck::check(&c.history)
}

/// Lease reads stay linearizable when every clock keeps within the
/// configured drift (10 %): here each node's clock runs at a random rate
/// between 0.9 and 1.1, and the old leader's drops to the slowest allowed
/// the moment it is cut off, so its lease lasts as long as it ever may.
#[test]
fn thesis_6_4_1_lease_reads_stay_linearizable_within_the_drift_bound() {
    for seed in seeds(36_000, 10) {
        let _guard = SeedGuard {
            file: "kv_sim",
            test: "thesis_6_4_1_lease_reads_stay_linearizable_within_the_drift_bound",
            seed,
        };
        let rate = |id: NodeId| 0.9 + 0.2 * ((seed * 7 + id * 13) % 11) as f64 / 10.0;
        match minority_leader_history(seed, true, rate, Some(0.9)) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { key } => panic!("a stale read of {key}"),
            Verdict::Undecided { key, reason } => panic!("checking {key} ran out of {reason}"),
        }
    }
}

/// The same with the old leader's clock at a tenth of real speed, far
/// beyond the bound: its lease outlives the followers' by seconds,
/// the majority's new leader writes meanwhile, and the old one's lease
/// reads return stale values, which the checker finds. This is the price
/// of lease reads; it shows the test above can fail.
#[test]
fn thesis_6_4_1_lease_reads_go_stale_when_a_clock_drifts_beyond_the_bound() {
    let stale = seeds(36_100, 10)
        .into_iter()
        .filter(|&seed| {
            matches!(
                minority_leader_history(seed, true, |_| 1.0, Some(0.1)),
                Verdict::NotLinearizable { .. }
            )
        })
        .count();
    eprintln!("stale reads found in {stale} of 10 seeds");
    assert!(stale > 0, "no stale read in 10 seeds");
}

/// The default read mode does not depend on clocks at all: with the old
/// leader's clock at a third of real speed, ReadIndex reads stay
/// linearizable (each is confirmed by a heartbeat round to a majority,
/// which a deposed leader cannot get).
#[test]
fn thesis_6_4_read_index_does_not_depend_on_clocks() {
    for seed in seeds(36_100, 10) {
        let _guard = SeedGuard {
            file: "kv_sim",
            test: "thesis_6_4_read_index_does_not_depend_on_clocks",
            seed,
        };
        let rate = |id: NodeId| [0.3, 1.0, 3.0][(id % 3) as usize];
        match minority_leader_history(seed, false, rate, Some(0.3)) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { key } => panic!("a stale read of {key}"),
            Verdict::Undecided { key, reason } => panic!("checking {key} ran out of {reason}"),
        }
    }
}
