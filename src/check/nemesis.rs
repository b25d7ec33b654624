//! The faults of a check, one at a time, through the lab
//! ([`crate::web::lab`]): each holds for a while, is healed, and the
//! cluster gets a healthy spell before the next.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::history::Fault;
use super::monitor::View;
use crate::client::{Client, ClientOptions};
use crate::config::ClusterConfig;
use crate::consensus::NodeId;
use crate::web::lab::{Action, Lab};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL a node (the leader or another), start it again 1–3 s later.
    Kill,
    /// SIGSTOP a node for two to three election timeouts, then SIGCONT.
    Pause,
    /// Cut a node off from its peers (the leader, or a minority of the
    /// others) for 2–4 s, then reconnect it.
    Cut,
    /// SIGTERM a node (a leader hands over first), start it again.
    Restart,
    /// Hand leadership to another node.
    Transfer,
}

pub const ALL: [FaultKind; 5] = [
    FaultKind::Kill,
    FaultKind::Pause,
    FaultKind::Cut,
    FaultKind::Restart,
    FaultKind::Transfer,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Cut => "cut",
            FaultKind::Restart => "restart",
            FaultKind::Transfer => "transfer",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<FaultKind, String> {
        ALL.into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("no fault {s:?} (kill, pause, cut, restart, transfer, or none)"))
    }
}

/// What the nemesis is doing now, for the progress line.
#[derive(Default)]
pub struct Now {
    pub fault: Option<String>,
}

/// Injects faults from `kinds` until `stop`, then heals every node
/// (resumed, reconnected, started if down). Returns the faults injected.
pub struct Nemesis {
    pub lab: Arc<Lab>,
    pub config: ClusterConfig,
    pub kinds: Vec<FaultKind>,
    pub epoch: Instant,
    pub seed: u64,
    pub view: Arc<Mutex<View>>,
    pub now: Arc<Mutex<Now>>,
}

impl Nemesis {
    pub fn run(self, stop: Arc<AtomicBool>) -> Vec<Fault> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed);
        let mut faults = Vec::new();
        let us = |t: Instant| t.duration_since(self.epoch).as_micros() as u64;
        // Healthy for a moment first, so the run starts with a leader.
        while !self.kinds.is_empty() && pause_for(&stop, rng.random_range(1500..3000)) {
            // A node a failed fault left down is started first: one
            // fault at a time means one.
            for id in self.ids() {
                let _ = self.lab.start_if_down(id);
            }
            let kind = self.kinds[rng.random_range(0..self.kinds.len())];
            let start = Instant::now();
            let what = self.inject(kind, &mut rng, &stop);
            *self.now.lock() = Default::default();
            let (nodes, what) = match what {
                Ok(done) => done,
                Err(e) => (Vec::new(), format!("{} failed: {e}", kind.name())),
            };
            faults.push(Fault {
                kind: kind.name().into(),
                nodes,
                start: us(start),
                end: us(Instant::now()),
                what,
            });
        }
        self.heal_all();
        faults
    }

    /// The leader a majority follows now, if any.
    fn leader(&self) -> Option<NodeId> {
        self.view.lock().leader.map(|(id, _)| id)
    }

    /// The node to hit: the leader half the time (when there is one),
    /// else another at random.
    fn target(&self, rng: &mut Xoshiro256PlusPlus) -> (NodeId, bool) {
        let leader = self.leader();
        if let Some(l) = leader.filter(|_| rng.random_bool(0.5)) {
            return (l, true);
        }
        let others: Vec<NodeId> = self.ids().filter(|&id| Some(id) != leader).collect();
        (others[rng.random_range(0..others.len())], false)
    }

    fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.config.members.iter().map(|m| m.id)
    }

    fn show(&self, text: String) {
        self.now.lock().fault = Some(text);
    }

    fn act(&self, id: NodeId, action: Action) -> Result<String, String> {
        self.lab.act(id, action).map_err(|e| e.to_string())
    }

    fn inject(
        &self,
        kind: FaultKind,
        rng: &mut Xoshiro256PlusPlus,
        stop: &AtomicBool,
    ) -> Result<(Vec<NodeId>, String), String> {
        let (id, leader) = self.target(rng);
        let who = format!("node{id}{}", if leader { " (leader)" } else { "" });
        let election_ms = self.view.lock().election_timeout_ms.max(300);
        match kind {
            FaultKind::Kill => {
                self.act(id, Action::Kill)?;
                self.show(format!("{who} killed"));
                pause_for(stop, rng.random_range(1000..3000));
                self.act(id, Action::Restart)?;
                Ok((vec![id], format!("{who} killed (SIGKILL), started again")))
            }
            FaultKind::Pause => {
                self.act(id, Action::Pause)?;
                self.show(format!("{who} paused"));
                pause_for(stop, rng.random_range(2 * election_ms..3 * election_ms));
                self.act(id, Action::Resume)?;
                Ok((vec![id], format!("{who} paused (SIGSTOP), resumed")))
            }
            FaultKind::Cut => {
                // The leader alone, or a minority of the others.
                let mut cut = vec![id];
                let minority = (self.config.members.len() - 1) / 2;
                if !leader && minority >= 2 && rng.random_bool(0.5) {
                    let current = self.leader();
                    if let Some(other) = self
                        .ids()
                        .find(|&o| o != id && Some(o) != current && rng.random_bool(0.5))
                    {
                        cut.push(other);
                    }
                }
                let names: Vec<String> = cut.iter().map(|n| format!("node{n}")).collect();
                let names = if leader {
                    who.clone()
                } else {
                    names.join(" and ")
                };
                for &n in &cut {
                    self.act(n, Action::Isolate)?;
                }
                self.show(format!("{names} cut off"));
                pause_for(stop, rng.random_range(2000..4000));
                for &n in &cut {
                    self.act(n, Action::Heal)?;
                }
                Ok((cut, format!("{names} cut off from the others, reconnected")))
            }
            FaultKind::Restart => {
                self.show(format!("{who} restarting"));
                self.act(id, Action::Restart)?;
                Ok((vec![id], format!("{who} stopped (SIGTERM), started again")))
            }
            FaultKind::Transfer => {
                let options = ClientOptions {
                    timeout: Duration::from_secs(3),
                    ..ClientOptions::default()
                };
                let mut client = Client::new(self.config.clone(), options);
                let to = (!leader).then_some(id);
                self.show(format!(
                    "leadership moving to {}",
                    to.map_or("a follower".into(), |t| format!("node{t}"))
                ));
                let (from, to, term, _) = client.transfer(to).map_err(|e| e.to_string())?;
                Ok((
                    vec![from, to],
                    format!("leadership moved from node{from} to node{to} (term {term})"),
                ))
            }
        }
    }

    /// Leaves every node running, resumed and reconnected.
    fn heal_all(&self) {
        for id in self.ids() {
            let _ = self.lab.act(id, Action::Resume);
            if matches!(
                self.lab.act(id, Action::Heal),
                Err(crate::web::lab::LabError::Node(_))
            ) {
                // Not answering: perhaps not running. Start it.
                let _ = self.lab.start_if_down(id);
            }
        }
    }
}

/// Sleeps `ms` milliseconds, waking early on `stop`; whether it was not
/// stopped.
fn pause_for(stop: &AtomicBool, ms: u64) -> bool {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
    !stop.load(Ordering::Relaxed)
}
