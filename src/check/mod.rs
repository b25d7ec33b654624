//! `raftctl check`: fault injection and a linearizability check, pointed
//! at a running lab cluster.
//!
//! Clients ([`workload`]) run reads, writes, compare-and-sets and deletes
//! on a few keys, each recording when it called, when it was answered
//! and what it saw; a nemesis ([`nemesis`]) kills, pauses, cuts off and
//! restarts nodes and moves leadership, one fault at a time, through the
//! lab (`raftctl web --lab`'s mechanisms); a monitor polls every node's
//! role. At the end every node is healed, the history is saved as JSON
//! lines ([`history`]) and checked per key by [`crate::lincheck`], whose
//! smallest failing part is told as a story ([`report`]) and drawn on a
//! page ([`html`]).
//!
//! Operations whose outcome is unknown (a write with no answer) are kept
//! as Jepsen keeps them: they may have taken effect at any time after
//! they were sent, or never. A read with no answer is left out: it
//! showed nothing and changed nothing.

pub mod history;
pub mod html;
pub mod monitor;
pub mod nemesis;
pub mod report;
pub mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::config::ClusterConfig;
use crate::lincheck::{self, Budget, Story, Verdict};
use crate::web::lab::{Lab, LabError};
use history::{History, Run};
use nemesis::FaultKind;

/// What a check does.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub seconds: u64,
    pub clients: usize,
    pub keys: usize,
    pub faults: Vec<FaultKind>,
    /// Operations per second each client aims at.
    pub rate: u32,
    /// How long one operation may take, retries included.
    pub op_timeout: Duration,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A node is not running as a lab node: the check would not be able
    /// to heal what it breaks.
    #[error("{0}")]
    NotLab(String),
    #[error(transparent)]
    History(#[from] history::HistoryError),
}

/// Whether every node of `cluster` runs as the lab's raftnode with
/// `--lab`; if not, what to run first.
pub fn verify_lab(cluster: &ClusterConfig, lab: &Lab) -> Result<(), CheckError> {
    let mut problems = Vec::new();
    for m in &cluster.members {
        match lab.lab_node(m.id) {
            Ok((_, true)) => {}
            Ok((pid, false)) => {
                problems.push(format!("node{} (pid {pid}) runs without --lab", m.id))
            }
            Err(LabError::NotRunning(_)) => problems.push(format!("node{} is not running", m.id)),
            Err(e) => problems.push(format!("node{}: {e}", m.id)),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(CheckError::NotLab(format!(
        "raftctl check needs every node running as a lab node, which it can stop, restart and cut off: {}. \
         Start the cluster with `RAFTNODE_ARGS=--lab ./boot_all_nodes.sh` (stop it first with \
         `./boot_all_nodes.sh stop`), or name where it keeps its pids with --state-dir",
        problems.join("; ")
    )))
}

/// What the check sees each second, for the progress line.
pub struct Progress {
    pub elapsed: Duration,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub fault: Option<String>,
    pub leader: Option<(crate::consensus::NodeId, crate::consensus::Term)>,
}

/// Runs the clients, the nemesis and the monitor against `cluster` for
/// `options.seconds` (or until `interrupt`), heals every node, and
/// returns what happened. `progress` is called about once a second.
pub fn record(
    cluster: &ClusterConfig,
    lab: Arc<Lab>,
    options: &CheckOptions,
    interrupt: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> History {
    let epoch = Instant::now();
    let started_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let view = Arc::new(Mutex::new(monitor::View::default()));
    let now = Arc::new(Mutex::new(nemesis::Now::default()));
    let counts = Arc::new(workload::Counts::default());
    let stop_monitor = Arc::new(AtomicBool::new(false));
    let stop_nemesis = Arc::new(AtomicBool::new(false));
    let stop_clients = Arc::new(AtomicBool::new(false));

    let monitor = {
        let (config, view, stop) = (cluster.clone(), view.clone(), stop_monitor.clone());
        std::thread::spawn(move || monitor::run(config, epoch, view, stop))
    };
    // Fresh keys for each run, whatever the seed: the checker assumes
    // they start absent.
    let key_prefix = format!("{:06x}.", rand::random::<u32>() >> 8);
    let clients: Vec<_> = (0..options.clients)
        .map(|number| {
            let plan = workload::ClientPlan {
                number,
                config: cluster.clone(),
                keys: options.keys.max(1),
                key_prefix: key_prefix.clone(),
                rate: options.rate,
                timeout: options.op_timeout,
                seed: options.seed.wrapping_add(1 + number as u64),
                epoch,
            };
            let (stop, counts) = (stop_clients.clone(), counts.clone());
            std::thread::spawn(move || workload::run_client(plan, stop, counts))
        })
        .collect();
    let nemesis = {
        let nemesis = nemesis::Nemesis {
            lab,
            config: cluster.clone(),
            kinds: options.faults.clone(),
            epoch,
            seed: options.seed,
            view: view.clone(),
            now: now.clone(),
        };
        let stop = stop_nemesis.clone();
        std::thread::spawn(move || nemesis.run(stop))
    };

    // Faults stop a little before the end, so that the last one is healed
    // while clients still run and the cluster is seen to recover.
    let end = epoch + Duration::from_secs(options.seconds);
    let faults_end = end - Duration::from_secs(options.seconds.min(4) / 2);
    let mut tick = epoch;
    while Instant::now() < end && !interrupt.load(Ordering::Relaxed) {
        if Instant::now() >= faults_end {
            stop_nemesis.store(true, Ordering::Relaxed);
        }
        tick += Duration::from_secs(1);
        while Instant::now() < tick.min(end) && !interrupt.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        progress(&Progress {
            elapsed: epoch.elapsed(),
            ok: counts.ok.load(Ordering::Relaxed),
            failed: counts.fail.load(Ordering::Relaxed),
            unknown: counts.unknown.load(Ordering::Relaxed),
            fault: now.lock().fault.clone(),
            leader: view.lock().leader,
        });
    }
    stop_nemesis.store(true, Ordering::Relaxed);
    let faults = nemesis.join().expect("the nemesis panicked");
    stop_clients.store(true, Ordering::Relaxed);
    let mut ops: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client panicked"))
        .collect();
    ops.sort_by_key(|o| (o.op.call, o.client));
    stop_monitor.store(true, Ordering::Relaxed);
    monitor.join().expect("the monitor panicked");
    let roles = std::mem::take(&mut view.lock().roles);
    History {
        run: Run {
            started_unix_ms,
            config: cluster.path.display().to_string(),
            nodes: cluster.members.iter().map(|m| m.id).collect(),
            seconds: options.seconds,
            clients: options.clients,
            keys: options.keys,
            faults: options
                .faults
                .iter()
                .map(|f| f.name().to_string())
                .collect(),
            seed: options.seed,
        },
        ops,
        faults,
        roles,
    }
}

/// Fewer completed operations than this and there is nothing to judge.
pub const MIN_COMPLETED: usize = 10;

/// The checker's answer about a history.
pub struct Analysis {
    pub report: lincheck::Report,
    /// For a key that is not linearizable: its smallest failing part, as
    /// indices into `History::ops`.
    pub story: Option<Story>,
    /// Why no verdict could be given, if none could.
    pub undecided: Option<String>,
    pub budget: Budget,
}

impl Analysis {
    /// raftctl's exit status: 0 linearizable, 1 not, 3 undecided.
    pub fn exit_code(&self) -> i32 {
        match (&self.report.verdict, &self.undecided) {
            (Verdict::NotLinearizable { .. }, _) => 1,
            (_, Some(_)) => 3,
            _ => 0,
        }
    }
}

/// Checks `history` within `budget`, and explains a violation.
pub fn analyze(history: &History, budget: &Budget) -> Analysis {
    let (ops, index) = history.operations();
    let report = lincheck::check_within(&ops, budget);
    let completed = history
        .ops
        .iter()
        .filter(|o| o.outcome == history::Outcome::Ok)
        .count();
    let undecided = match &report.verdict {
        Verdict::Undecided { key, reason } => Some(format!(
            "the checker ran out of its {reason} budget on key {key} ({}; --check-seconds raises the time)",
            budget_text(budget)
        )),
        Verdict::Linearizable if completed < MIN_COMPLETED => Some(format!(
            "only {completed} operations completed: too few to judge (was the cluster up?)"
        )),
        _ => None,
    };
    let story = match &report.verdict {
        Verdict::NotLinearizable { key } => lincheck::explain(&ops, key, budget).map(|mut s| {
            s.ops = s.ops.iter().map(|&i| index[i]).collect();
            s.shape = s.shape.map(|i| index[i]);
            s
        }),
        _ => None,
    };
    Analysis {
        report,
        story,
        undecided,
        budget: budget.clone(),
    }
}

/// The budget in words: "60 s, 1 GiB".
pub fn budget_text(budget: &Budget) -> String {
    format!(
        "{} s, {} MiB",
        budget.time.as_secs(),
        budget.memory_bytes >> 20
    )
}
