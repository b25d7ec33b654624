//! The scenarios of the MIT 6.5840 Raft lab (parts 3A to 3D), retold
//! over our deterministic simulation. The lab's tester drives servers
//! through `Start`, disconnects, crashes and restarts and checks what they
//! apply; here the same stories drive the pure core, virtual time makes
//! them fast, and the simulation's safety checker runs after every step.
//!
//! Differences from the lab, by design: our leaders append a no-op when
//! elected (§5.4.2), so log indices are not the lab's; and each scenario
//! runs over several seeds. `SIM_SEED=<n>` replays one.

mod sim;

use std::collections::HashSet;
use std::time::Duration;

use raft::consensus::{Index, Json, NodeId, Payload, Role, Term};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use sim::{MS, NetConfig, Sim};

const SECOND: Duration = Duration::from_secs(1);
/// The longest election timeout of `sim::raft_config`.
const ELECTION: Duration = Duration::from_millis(600);

/// The lab's tester, over a `Sim`.
struct Lab {
    s: Sim,
    rng: Xoshiro256PlusPlus,
}

impl Lab {
    fn new(n: usize, seed: u64, reliable: bool) -> Lab {
        let net = if reliable {
            NetConfig::reliable()
        } else {
            NetConfig::unreliable()
        };
        Lab {
            s: Sim::new(n, seed, net),
            rng: Xoshiro256PlusPlus::seed_from_u64(!seed),
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        (0..self.s.n() as NodeId).collect()
    }

    fn live(&self, id: NodeId) -> bool {
        self.s.is_up(id) && self.s.connected[id as usize]
    }

    /// One leader among connected servers, found within ten tries of half
    /// a second; never two in one term.
    fn check_one_leader(&mut self) -> NodeId {
        for _ in 0..10 {
            let pause = Duration::from_millis(self.rng.random_range(450..550));
            self.s.run_for(pause);
            let mut by_term: std::collections::BTreeMap<Term, Vec<NodeId>> = Default::default();
            for id in self.ids() {
                if let Some(r) = self
                    .s
                    .raft(id)
                    .filter(|r| r.role() == Role::Leader && self.live(id))
                {
                    by_term.entry(r.term()).or_default().push(id);
                }
            }
            for (term, leaders) in &by_term {
                assert!(leaders.len() <= 1, "term {term} has leaders {leaders:?}");
            }
            if let Some((_, leaders)) = by_term.iter().next_back() {
                return leaders[0];
            }
        }
        panic!("expected one leader, got none");
    }

    /// All connected servers agree on the term.
    fn check_terms(&self) -> Term {
        let mut term = None;
        for id in self.ids().into_iter().filter(|&id| self.live(id)) {
            let t = self.s.raft(id).unwrap().term();
            assert_eq!(*term.get_or_insert(t), t, "servers disagree on term");
        }
        term.expect("no live server")
    }

    fn check_no_leader(&self) {
        for id in self.ids().into_iter().filter(|&id| self.live(id)) {
            assert_ne!(
                self.s.raft(id).unwrap().role(),
                Role::Leader,
                "node {id} is leader but should not be"
            );
        }
    }

    /// How many servers have applied `index`, and what.
    fn n_committed(&self, index: Index) -> (usize, Option<Payload>) {
        self.s.n_applied(index)
    }

    fn start(&mut self, id: NodeId, cmd: &str) -> Option<(Index, Term)> {
        self.s.propose(id, cmd)
    }

    /// The lab's `one`: submit `cmd` to whichever server is leader until it
    /// is applied by at least `expected` servers; returns its index. With
    /// `retry`, a submission that is lost to a leader change is retried.
    fn one(&mut self, cmd: &str, expected: usize, retry: bool) -> Index {
        let deadline = self.s.now + 10 * SECOND;
        let mut next = 0;
        while self.s.now < deadline {
            let mut index = None;
            for _ in 0..self.s.n() {
                next = (next + 1) % self.s.n() as NodeId;
                if self.live(next)
                    && let Some((i, _)) = self.start(next, cmd)
                {
                    index = Some(i);
                    break;
                }
            }
            if let Some(index) = index {
                let want = Payload::Command(Json::string(cmd));
                let done = self.s.run_until(2 * SECOND, |s| {
                    let (n, p) = s.n_applied(index);
                    n >= expected && p.as_ref() == Some(&want)
                });
                if done {
                    return index;
                }
                if !retry {
                    panic!("one({cmd}) failed to reach agreement of {expected}");
                }
            } else {
                self.s.run_for(50 * MS);
            }
        }
        panic!("one({cmd}) failed to reach agreement of {expected} in 10s");
    }

    fn disconnect(&mut self, id: NodeId) {
        self.s.disconnect(id)
    }
    fn connect(&mut self, id: NodeId) {
        self.s.connect(id)
    }
    fn crash(&mut self, id: NodeId) {
        self.s.crash(id)
    }
    fn restart(&mut self, id: NodeId) {
        if !self.s.is_up(id) {
            self.s.start(id)
        }
    }
}

fn for_seeds(test: &'static str, base: u64, count: u64, scenario: impl Fn(u64)) {
    sim::for_seeds("mit_raft", test, base, count, scenario)
}

// ----- 3A: leader election -----

#[test]
fn initial_election_3a() {
    for_seeds("initial_election_3a", 100, 10, |seed| {
        let mut lab = Lab::new(3, seed, true);
        lab.check_one_leader();
        lab.s.run_for(50 * MS);
        let term1 = lab.check_terms();
        assert!(term1 >= 1);
        // With no failures, leader and term stay put.
        lab.s.run_for(2 * ELECTION);
        assert_eq!(lab.check_terms(), term1, "term changed with no failures");
        lab.check_one_leader();
    });
}

#[test]
fn re_election_3a() {
    for_seeds("re_election_3a", 200, 10, |seed| {
        let mut lab = Lab::new(3, seed, true);
        let leader1 = lab.check_one_leader();
        lab.disconnect(leader1);
        lab.check_one_leader();
        // The old leader rejoins and must not disturb the new one.
        lab.connect(leader1);
        let leader2 = lab.check_one_leader();
        // No quorum, no leader.
        lab.disconnect(leader2);
        lab.disconnect((leader2 + 1) % 3);
        lab.s.run_for(2 * ELECTION);
        lab.check_no_leader();
        lab.connect((leader2 + 1) % 3);
        lab.check_one_leader();
        lab.connect(leader2);
        lab.check_one_leader();
    });
}

#[test]
fn many_elections_3a() {
    for_seeds("many_elections_3a", 300, 5, |seed| {
        let mut lab = Lab::new(7, seed, true);
        lab.check_one_leader();
        for _ in 0..10 {
            let out: Vec<NodeId> = (0..3).map(|_| lab.rng.random_range(0..7)).collect();
            for &id in &out {
                lab.disconnect(id);
            }
            // At least four of seven remain: a leader must emerge.
            lab.check_one_leader();
            for &id in &out {
                lab.connect(id);
            }
        }
        lab.check_one_leader();
    });
}

// ----- 3B: log replication -----

#[test]
fn basic_agree_3b() {
    for_seeds("basic_agree_3b", 400, 5, |seed| {
        let mut lab = Lab::new(5, seed, true);
        lab.check_one_leader();
        let mut last = 0;
        for k in 1..=3 {
            let next = lab
                .s
                .nodes
                .iter()
                .filter_map(|n| n.raft.as_ref())
                .map(|r| r.log().last_index())
                .max()
                .unwrap()
                + 1;
            assert_eq!(lab.n_committed(next).0, 0, "committed before Start()");
            let index = lab.one(&format!("cmd{k}"), 5, false);
            assert!(index > last);
            last = index;
        }
    });
}

/// Each command's bytes cross the network about once per follower.
#[test]
fn rpc_bytes_3b() {
    for_seeds("rpc_bytes_3b", 500, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        lab.one("warm-up", 3, false);
        let before = lab.s.payload_bytes_sent;
        let mut sent = 0;
        for k in 0..10 {
            let cmd = format!("{k}{}", "x".repeat(5000));
            sent += cmd.len() as u64;
            lab.one(&cmd, 3, false);
        }
        let got = lab.s.payload_bytes_sent - before;
        let expected = sent * 2; // two followers
        assert!(
            got <= expected + 50_000,
            "too many RPC bytes: {got}, expected about {expected}"
        );
    });
}

#[test]
fn follower_failure_3b() {
    for_seeds("follower_failure_3b", 600, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        lab.one("101", 3, false);
        let leader1 = lab.check_one_leader();
        lab.disconnect((leader1 + 1) % 3);
        // The leader and the remaining follower still agree.
        lab.one("102", 2, false);
        lab.s.run_for(ELECTION);
        lab.one("103", 2, false);
        // With both followers gone nothing commits.
        let leader2 = lab.check_one_leader();
        lab.disconnect((leader2 + 1) % 3);
        lab.disconnect((leader2 + 2) % 3);
        let (index, _) = lab.start(leader2, "104").expect("leader rejected Start()");
        lab.s.run_for(2 * ELECTION);
        assert_eq!(lab.n_committed(index).0, 0, "committed without a majority");
    });
}

#[test]
fn leader_failure_3b() {
    for_seeds("leader_failure_3b", 700, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        lab.one("101", 3, false);
        let leader1 = lab.check_one_leader();
        lab.disconnect(leader1);
        lab.one("102", 2, false);
        lab.s.run_for(ELECTION);
        lab.one("103", 2, false);
        let leader2 = lab.check_one_leader();
        lab.disconnect(leader2);
        // One server left: whatever it is asked, nothing commits.
        let mut indices = Vec::new();
        for id in lab.ids() {
            if let Some((i, _)) = lab.start(id, "104") {
                indices.push(i);
            }
        }
        lab.s.run_for(2 * ELECTION);
        // (An index may hold an older committed entry: a stale leader's
        // log can be shorter than the cluster's. It must not hold 104.)
        for i in indices {
            assert_ne!(
                lab.n_committed(i).1,
                Some(Payload::Command(Json::string("104"))),
                "104 committed at {i} without a majority"
            );
        }
    });
}

#[test]
fn fail_agree_3b() {
    for_seeds("fail_agree_3b", 800, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        lab.one("101", 3, false);
        let leader = lab.check_one_leader();
        lab.disconnect((leader + 1) % 3);
        lab.one("102", 2, false);
        lab.one("103", 2, false);
        lab.s.run_for(ELECTION);
        lab.one("104", 2, false);
        lab.one("105", 2, false);
        // The follower returns and catches up.
        lab.connect((leader + 1) % 3);
        lab.one("106", 3, true);
        lab.s.run_for(ELECTION);
        lab.one("107", 3, true);
    });
}

#[test]
fn fail_no_agree_3b() {
    for_seeds("fail_no_agree_3b", 900, 5, |seed| {
        let mut lab = Lab::new(5, seed, true);
        lab.one("10", 5, false);
        let leader = lab.check_one_leader();
        for k in 1..=3 {
            lab.disconnect((leader + k) % 5);
        }
        let (index, _) = lab.start(leader, "20").expect("leader rejected Start()");
        lab.s.run_for(2 * ELECTION);
        assert_eq!(lab.n_committed(index).0, 0, "committed without a majority");
        for k in 1..=3 {
            lab.connect((leader + k) % 5);
        }
        // The disconnected majority may have elected a leader of its own;
        // either way the cluster must agree again.
        let leader2 = lab.check_one_leader();
        assert!(lab.start(leader2, "30").is_some());
        lab.one("1000", 5, true);
    });
}

#[test]
fn concurrent_starts_3b() {
    for_seeds("concurrent_starts_3b", 1000, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        'attempt: for attempt in 0..5 {
            if attempt > 0 {
                lab.s.run_for(3 * SECOND);
            }
            let leader = lab.check_one_leader();
            let Some((_, term)) = lab.start(leader, "first") else {
                continue;
            };
            let mut indices = Vec::new();
            for k in 0..5 {
                match lab.start(leader, &format!("c{k}")) {
                    Some((i, t)) if t == term => indices.push((i, format!("c{k}"))),
                    _ => continue 'attempt,
                }
            }
            let all = lab.s.run_until(5 * SECOND, |s| {
                indices.iter().all(|(i, _)| s.n_applied(*i).0 == 3)
            });
            if !all || lab.s.raft(leader).unwrap().term() != term {
                continue; // leadership changed: try again
            }
            let got: HashSet<Payload> = indices
                .iter()
                .map(|(i, _)| lab.n_committed(*i).1.unwrap())
                .collect();
            let want: HashSet<Payload> = indices
                .iter()
                .map(|(_, c)| Payload::Command(Json::string(c)))
                .collect();
            assert_eq!(got, want);
            return;
        }
        panic!("term changed too often");
    });
}

#[test]
fn rejoin_3b() {
    for_seeds("rejoin_3b", 1100, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        lab.one("101", 3, true);
        // The leader is cut off and takes entries it can never commit.
        let leader1 = lab.check_one_leader();
        lab.disconnect(leader1);
        for c in ["102", "103", "104"] {
            lab.start(leader1, c);
        }
        // A new leader commits 103 at the same index.
        lab.one("103", 2, true);
        let leader2 = lab.check_one_leader();
        lab.disconnect(leader2);
        // The old leader returns: its stale entries must be replaced.
        lab.connect(leader1);
        lab.one("104", 2, true);
        lab.connect(leader2);
        lab.one("105", 3, true);
    });
}

/// A leader backs up quickly over long runs of conflicting entries.
#[test]
fn backup_3b() {
    for_seeds("backup_3b", 1200, 5, |seed| {
        let mut lab = Lab::new(5, seed, true);
        lab.one("start", 5, true);
        let leader1 = lab.check_one_leader();
        for k in 2..=4 {
            lab.disconnect((leader1 + k) % 5);
        }
        // Lots of entries that will never commit.
        for k in 0..50 {
            lab.start(leader1, &format!("lost-a{k}"));
        }
        lab.s.run_for(ELECTION / 2);
        lab.disconnect(leader1);
        lab.disconnect((leader1 + 1) % 5);
        for k in 2..=4 {
            lab.connect((leader1 + k) % 5);
        }
        // The other three commit many entries.
        for k in 0..50 {
            lab.one(&format!("b{k}"), 3, true);
        }
        let leader2 = lab.check_one_leader();
        let other = (2..=4)
            .map(|k| (leader1 + k) % 5)
            .find(|&id| id != leader2)
            .unwrap();
        lab.disconnect(other);
        for k in 0..50 {
            lab.start(leader2, &format!("lost-c{k}"));
        }
        lab.s.run_for(ELECTION / 2);
        // Bring back the original leader's group, with `other`.
        for id in lab.ids() {
            lab.disconnect(id);
        }
        lab.connect(leader1);
        lab.connect((leader1 + 1) % 5);
        lab.connect(other);
        for k in 0..50 {
            lab.one(&format!("d{k}"), 3, true);
        }
        for id in lab.ids() {
            lab.connect(id);
        }
        lab.one("end", 5, true);
    });
}

/// Elections and agreement take a modest number of RPCs, and an idle
/// leader sends only heartbeats.
#[test]
fn count_3b() {
    for_seeds("count_3b", 1300, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        let leader = lab.check_one_leader();
        let election = lab.s.rpc_count;
        // check_one_leader ran half a second or more of heartbeats too.
        assert!(
            (1..=60).contains(&election),
            "{election} RPCs to elect and settle a leader"
        );

        'attempt: for _ in 0..5 {
            let leader = lab.check_one_leader();
            let before = lab.s.rpc_count;
            let Some((_, term)) = lab.start(leader, "first") else {
                continue;
            };
            let iters = 10;
            let mut last = 0;
            for k in 0..iters {
                match lab.start(leader, &format!("n{k}")) {
                    Some((i, t)) if t == term => last = i,
                    _ => continue 'attempt,
                }
            }
            if !lab.s.run_until(5 * SECOND, |s| s.n_applied(last).0 == 3)
                || lab.s.raft(leader).unwrap().term() != term
            {
                continue;
            }
            let used = lab.s.rpc_count - before;
            assert!(
                used <= (iters + 1 + 3) * 3,
                "{used} RPCs for {iters} commands"
            );
            break;
        }
        let _ = leader;
        let before = lab.s.rpc_count;
        lab.s.run_for(SECOND);
        let idle = lab.s.rpc_count - before;
        // Two peers, a heartbeat each every 50 ms.
        assert!(idle <= 3 * 20, "{idle} RPCs in one idle second");
    });
}

// ----- 3C: persistence -----

#[test]
fn persist1_3c() {
    for_seeds("persist1_3c", 1400, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        lab.one("11", 3, true);
        for id in lab.ids() {
            lab.crash(id);
            lab.restart(id);
        }
        lab.one("12", 3, true);
        let leader1 = lab.check_one_leader();
        lab.crash(leader1);
        lab.restart(leader1);
        lab.one("13", 3, true);
        let leader2 = lab.check_one_leader();
        lab.crash(leader2);
        lab.one("14", 2, true);
        lab.restart(leader2);
        // The restarted server catches up.
        let index = lab.one("14b", 3, true);
        assert!(index >= 4);
        let i3 = (lab.check_one_leader() + 1) % 3;
        lab.crash(i3);
        lab.one("15", 2, true);
        lab.restart(i3);
        lab.one("16", 3, true);
    });
}

#[test]
fn persist2_3c() {
    for_seeds("persist2_3c", 1500, 3, |seed| {
        let mut lab = Lab::new(5, seed, true);
        for iter in 0..5 {
            lab.one(&format!("{}", 10 + iter), 5, true);
            let leader1 = lab.check_one_leader();
            lab.crash((leader1 + 1) % 5);
            lab.crash((leader1 + 2) % 5);
            lab.one(&format!("{}", 20 + iter), 3, true);
            lab.crash(leader1);
            lab.crash((leader1 + 3) % 5);
            lab.crash((leader1 + 4) % 5);
            lab.restart((leader1 + 1) % 5);
            lab.restart((leader1 + 2) % 5);
            lab.s.run_for(ELECTION);
            lab.restart((leader1 + 3) % 5);
            lab.one(&format!("{}", 30 + iter), 3, true);
            lab.restart(leader1);
            lab.restart((leader1 + 4) % 5);
        }
        lab.one("1000", 5, true);
    });
}

#[test]
fn persist3_3c() {
    for_seeds("persist3_3c", 1600, 5, |seed| {
        let mut lab = Lab::new(3, seed, true);
        lab.one("101", 3, true);
        let leader = lab.check_one_leader();
        lab.disconnect((leader + 2) % 3);
        lab.one("102", 2, true);
        lab.crash(leader);
        lab.crash((leader + 1) % 3);
        lab.connect((leader + 2) % 3);
        lab.restart(leader);
        lab.one("103", 2, true);
        lab.restart((leader + 1) % 3);
        lab.one("104", 3, true);
    });
}

/// Figure 8 of the paper: leaders crash right after appending, so old-term
/// entries sit on majorities; they must not be committed by counting.
#[test]
fn figure_8_3c() {
    for_seeds("figure_8_3c", 1700, 3, |seed| {
        let mut lab = Lab::new(5, seed, true);
        lab.one("start", 1, true);
        let mut up = 5;
        for iter in 0..300 {
            let mut leader = None;
            for id in lab.ids() {
                if lab.start(id, &format!("f{iter}")).is_some() {
                    leader = Some(id);
                }
            }
            let pause = if lab.rng.random_range(0..1000) < 100 {
                Duration::from_millis(lab.rng.random_range(0..ELECTION.as_millis() as u64 / 2))
            } else {
                Duration::from_millis(lab.rng.random_range(0..13))
            };
            lab.s.run_for(pause);
            if let Some(l) = leader
                && lab.s.is_up(l)
            {
                lab.crash(l);
                up -= 1;
            }
            if up < 3 {
                let s = lab.rng.random_range(0..5);
                if !lab.s.is_up(s) {
                    lab.restart(s);
                    up += 1;
                }
            }
        }
        for id in lab.ids() {
            lab.restart(id);
        }
        lab.one("end", 5, true);
    });
}

/// Figure 8 of the paper, step by step, with one entry per AppendEntries
/// so that an old-term entry can reach a majority on its own:
///
/// (a) S1 leads and replicates entry A (its term) to S2 only;
/// (b) S1 crashes; S5 is elected by S3, S4, S5 and appends its no-op at
///     the same index, and crashes before sending it anywhere;
/// (c) S1 restarts, is elected, and gets A onto S3: A is now on a
///     majority (S1, S2, S3) but is not of S1's term, so it must not be
///     committed by counting; S1 is cut off right then;
/// (d) S5 restarts and is elected by S2, S3, S4 (its last term is newer
///     than A's) and overwrites A everywhere.
///
/// A leader that committed A in (c) would have applied it, and the
/// checker then sees two different entries applied at one index.
#[test]
fn figure_8_scripted_3c() {
    // Seeds divisible by 4 give one entry per AppendEntries (sim::raft_config).
    for_seeds("figure_8_scripted_3c", 2400, 5, |seed| {
        let seed = seed * 4;
        let mut lab = Lab::new(5, seed, true);
        let (s1, s2, s3, s4, s5) = (0, 1, 2, 3, 4);
        lab.one("x", 5, true);
        if lab.s.leader() != Some(s1) {
            // Hand leadership to S1 (its log is as up to date as anyone's
            // now) so that the script reads as the figure.
            lab.s.campaign(s1);
            assert!(
                lab.s.run_until(SECOND, |s| s.leader() == Some(s1)),
                "S1 did not win"
            );
            lab.one("y", 5, true);
        }
        // (a)
        lab.s.partition(&[vec![s1, s2], vec![s3, s4, s5]]);
        let (a_index, a_term) = lab.start(s1, "A").unwrap();
        // A on S2, and on S1's own disk (a leader syncs its log a little
        // after it writes it; the figure's S1 keeps A through its crash).
        assert!(lab.s.run_until(SECOND, |s| {
            s.raft(s2).unwrap().log().term_at(a_index) == Some(a_term)
                && s.raft(s1).unwrap().persisted_index() >= a_index
        }));
        // (b)
        lab.crash(s1);
        lab.s.partition(&[vec![s2], vec![s3, s4, s5]]);
        lab.s.campaign(s5);
        assert!(
            lab.s.run_until(SECOND, |s| s.leader() == Some(s5)),
            "S5 did not win"
        );
        lab.disconnect(s5); // its no-op goes nowhere
        lab.crash(s5);
        // (c)
        lab.s.heal();
        lab.disconnect(s4);
        lab.disconnect(s5);
        lab.restart(s1);
        // S3 voted for S5 in the term S1 campaigns in first; S1 needs a
        // higher term, as in the figure (term 4 after S5's term 3).
        let won = (0..5).any(|_| {
            lab.s.campaign(s1);
            lab.s.run_until(100 * MS, |s| s.leader() == Some(s1))
        });
        assert!(won, "S1 did not win again");
        assert!(
            lab.s.run_until(SECOND, |s| s
                .raft(s1)
                .unwrap()
                .match_index(s3)
                .is_some_and(|m| m >= a_index)),
            "A never reached S3"
        );
        assert_eq!(lab.s.raft(s1).unwrap().log().term_at(a_index), Some(a_term));
        lab.disconnect(s1);
        lab.crash(s1);
        // (d)
        lab.connect(s4);
        lab.connect(s5);
        lab.restart(s5);
        lab.s.campaign(s5);
        // Whoever wins now, the cluster must agree again, safely.
        lab.one("after", 4, true);
        lab.restart(s1);
        lab.connect(s1);
        lab.one("end", 5, true);
    });
}

#[test]
fn unreliable_agree_3c() {
    for_seeds("unreliable_agree_3c", 1800, 3, |seed| {
        let mut lab = Lab::new(5, seed, false);
        for iter in 1..50 {
            for j in 0..4 {
                if let Some(l) =
                    (0..5).find(|&id| lab.s.raft(id).is_some_and(|r| r.role() == Role::Leader))
                {
                    lab.start(l, &format!("{}", 100 * iter + j));
                }
            }
            lab.one(&format!("{iter}"), 1, true);
        }
        lab.s.net = NetConfig::reliable();
        lab.one("100", 5, true);
    });
}

#[test]
fn figure_8_unreliable_3c() {
    for_seeds("figure_8_unreliable_3c", 1900, 3, |seed| {
        let mut lab = Lab::new(5, seed, false);
        lab.s.net.long_delay_chance = 0.2;
        lab.s.net.long_delay = 2 * SECOND;
        lab.one("start", 1, true);
        let mut connected = 5;
        for iter in 0..300 {
            if iter == 200 {
                lab.s.net.long_delay_chance = 0.0; // stop reordering
            }
            let mut leader = None;
            for id in lab.ids() {
                if lab.start(id, &format!("u{iter}")).is_some() && lab.s.connected[id as usize] {
                    leader = Some(id);
                }
            }
            let pause = if lab.rng.random_range(0..1000) < 100 {
                Duration::from_millis(lab.rng.random_range(0..ELECTION.as_millis() as u64 / 2))
            } else {
                Duration::from_millis(lab.rng.random_range(0..13))
            };
            lab.s.run_for(pause);
            if let Some(l) = leader
                && lab.rng.random_bool(0.5)
            {
                lab.disconnect(l);
                connected -= 1;
            }
            if connected < 3 {
                let s = lab.rng.random_range(0..5);
                if !lab.s.connected[s as usize] {
                    lab.connect(s);
                    connected += 1;
                }
            }
        }
        for id in lab.ids() {
            lab.connect(id);
        }
        lab.s.net = NetConfig::reliable();
        lab.one("end", 5, true);
    });
}

/// Servers crash, restart, drop off and rejoin while clients keep
/// submitting. Whatever some server applied must end up applied by all.
fn churn(seed: u64, reliable: bool) {
    let mut lab = Lab::new(5, seed, reliable);
    let mut seen: Vec<(Index, Payload)> = Vec::new();
    for iter in 0..100 {
        // Three clients each try a command at every server.
        for client in 0..3 {
            let cmd = format!("k{iter}-{client}");
            for id in lab.ids() {
                if lab.live(id) && lab.start(id, &cmd).is_some() {
                    break;
                }
            }
        }
        let pause = Duration::from_millis(
            lab.rng
                .random_range(0..(ELECTION.as_millis() as u64 * 7 / 10)),
        );
        lab.s.run_for(pause);
        let who = lab.rng.random_range(0..5);
        match lab.rng.random_range(0..1000) {
            0..200 => lab.disconnect(who),
            200..400 => lab.connect(who),
            400..600 => lab.restart(who),
            600..800 => {
                let up = lab.ids().into_iter().filter(|&id| lab.s.is_up(id)).count();
                if up > 3 {
                    lab.crash(who);
                }
            }
            _ => {}
        }
        for (index, entry) in lab.s.checker.committed.iter() {
            if seen.len() < *index as usize {
                seen.push((*index, entry.payload.clone()));
            }
        }
    }
    for id in lab.ids() {
        lab.restart(id);
        lab.connect(id);
    }
    lab.s.net = NetConfig::reliable();
    let last = lab.one("final", 5, true);
    for (index, payload) in seen {
        assert!(index < last);
        // Every node applied it, and (the checker saw to it) the same
        // entry as everyone else.
        assert_eq!(lab.s.checker.committed[&index].payload, payload);
        for id in lab.ids() {
            assert!(
                lab.s.nodes[id as usize].applied_index >= index,
                "node {id} lost committed index {index}"
            );
        }
    }
}

#[test]
fn reliable_churn_3c() {
    for_seeds("reliable_churn_3c", 2000, 3, |seed| churn(seed, true));
}

#[test]
fn unreliable_churn_3c() {
    for_seeds("unreliable_churn_3c", 2100, 3, |seed| churn(seed, false));
}

// ----- 3D: log compaction -----

/// The lab's tester snapshots every server each time it has applied this
/// many entries past its last snapshot.
const SNAPSHOT_INTERVAL: u64 = 10;

/// A server's log may hold at most this many entries: the lab checks that
/// the persisted Raft state stays under a bound, i.e. that servers really
/// compact.
/// (Plus up to 20 trailing entries kept after a snapshot; see
/// `sim::raft_config`.)
const MAX_LOG_ENTRIES: usize = 4 * SNAPSHOT_INTERVAL as usize + 20;

impl Lab {
    fn with_snapshots(n: usize, seed: u64, reliable: bool) -> Lab {
        let mut lab = Lab::new(n, seed, reliable);
        lab.s.snapshot_every = Some(SNAPSHOT_INTERVAL);
        lab
    }

    fn random_command(&mut self) -> String {
        format!("r{}", self.rng.random_range(0..u64::MAX))
    }

    fn check_log_sizes(&self) {
        for id in self.ids() {
            if let Some(r) = self.s.raft(id) {
                let held = r.log().entries().len();
                assert!(
                    held <= MAX_LOG_ENTRIES,
                    "node {id} holds {held} entries: its log is not being compacted"
                );
            }
        }
    }
}

/// The lab's `snapCommon`: thirty rounds in which a follower (or, every
/// third round, the leader) is cut off or crashed while the others go on
/// far enough to compact past where it stopped, then comes back and must
/// catch up, through InstallSnapshot when its next entries are gone.
fn snap_common(test: &'static str, base: u64, disconnect: bool, reliable: bool, crash: bool) {
    for_seeds(test, base, 10, |seed| {
        let n = 3;
        let mut lab = Lab::with_snapshots(n, seed, reliable);
        let cmd = lab.random_command();
        lab.one(&cmd, n, true);
        let mut leader = lab.check_one_leader();
        for round in 0..30 {
            let (mut victim, mut sender) = ((leader + 1) % n as NodeId, leader);
            if round % 3 == 1 {
                (victim, sender) = (leader, victim);
            }
            if disconnect {
                lab.disconnect(victim);
                let cmd = lab.random_command();
                lab.one(&cmd, n - 1, true);
            }
            if crash {
                lab.crash(victim);
                let cmd = lab.random_command();
                lab.one(&cmd, n - 1, true);
            }
            // Enough entries to make the others snapshot past the victim.
            let count = SNAPSHOT_INTERVAL / 2 + lab.rng.random_range(0..SNAPSHOT_INTERVAL);
            for _ in 0..count {
                let cmd = lab.random_command();
                lab.start(sender, &cmd);
            }
            let cmd = lab.random_command();
            let expected = if disconnect || crash { n - 1 } else { n };
            lab.one(&cmd, expected, true);
            lab.check_log_sizes();
            if disconnect {
                // The victim may need a snapshot to catch up.
                lab.connect(victim);
                let cmd = lab.random_command();
                lab.one(&cmd, n, true);
                leader = lab.check_one_leader();
            }
            if crash {
                lab.restart(victim);
                lab.connect(victim);
                let cmd = lab.random_command();
                lab.one(&cmd, n, true);
                leader = lab.check_one_leader();
            }
        }
        assert!(lab.s.checker.snapshots_taken > 0);
        if disconnect || crash {
            assert!(
                lab.s.checker.snapshots_installed > 0,
                "no follower ever needed a snapshot"
            );
        }
    });
}

#[test]
fn snapshot_basic_3d() {
    snap_common("snapshot_basic_3d", 3_100, false, true, false);
}

#[test]
fn snapshot_install_3d() {
    snap_common("snapshot_install_3d", 3_200, true, true, false);
}

#[test]
fn snapshot_install_unreliable_3d() {
    snap_common("snapshot_install_unreliable_3d", 3_300, true, false, false);
}

#[test]
fn snapshot_install_crash_3d() {
    snap_common("snapshot_install_crash_3d", 3_400, false, true, true);
}

#[test]
fn snapshot_install_uncrash_3d() {
    snap_common("snapshot_install_uncrash_3d", 3_500, false, false, true);
}

/// Every server crashes, several times over, with entries committed in
/// between; each time all restart from their snapshots and logs, and the
/// cluster goes on from where it was, the committed entries intact.
#[test]
fn snapshot_all_crash_3d() {
    for_seeds("snapshot_all_crash_3d", 3_600, 10, |seed| {
        let n = 3;
        let mut lab = Lab::with_snapshots(n, seed, true);
        let cmd = lab.random_command();
        lab.one(&cmd, n, true);
        for _ in 0..5 {
            let count = SNAPSHOT_INTERVAL / 2 + lab.rng.random_range(0..SNAPSHOT_INTERVAL);
            for _ in 0..count {
                let cmd = lab.random_command();
                lab.one(&cmd, n, true);
            }
            let before = lab.one("before crash", n, true);
            for id in lab.ids() {
                lab.crash(id);
            }
            for id in lab.ids() {
                lab.restart(id);
            }
            let after = lab.one("after restart", n, true);
            assert!(after > before, "the log went back after a restart");
        }
        assert!(lab.s.checker.snapshots_taken > 0);
    });
}

/// A server restarted from a snapshot starts from it (its commit index and
/// state machine are the snapshot's, not empty), and a second crash right
/// after the restart, before anything new is committed, loses nothing.
#[test]
fn snapshot_init_3d() {
    for_seeds("snapshot_init_3d", 3_700, 10, |seed| {
        let n = 3;
        let mut lab = Lab::with_snapshots(n, seed, true);
        let cmd = lab.random_command();
        lab.one(&cmd, n, true);
        for _ in 0..SNAPSHOT_INTERVAL + 1 {
            let cmd = lab.random_command();
            lab.one(&cmd, n, true);
        }
        for round in 0..2 {
            for id in lab.ids() {
                lab.crash(id);
            }
            for id in lab.ids() {
                lab.restart(id);
                let raft = lab.s.raft(id).unwrap();
                assert!(raft.snapshot().last_index > 0, "node {id} has no snapshot");
                assert_eq!(
                    lab.s.nodes[id as usize].applied_index,
                    raft.snapshot().last_index,
                    "node {id} did not restore its state machine from its snapshot"
                );
            }
            if round == 1 {
                let cmd = lab.random_command();
                lab.one(&cmd, n, true);
            }
        }
    });
}
