//! `raftctl check`: argument handling and printing; the work is in
//! `raft::check`.

use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use raft::check::history::History;
use raft::check::nemesis::FaultKind;
use raft::check::{self, Analysis, CheckOptions, report};
use raft::config::ClusterConfig;
use raft::lincheck::Budget;
use raft::web::lab::Lab;

/// `raftctl check`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// How long to run the clients and faults.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Client sessions, each with one operation at a time.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// How many keys the operations spread over.
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Faults to inject, one at a time, at random: kill (SIGKILL, then
    /// start again), pause (SIGSTOP longer than an election timeout),
    /// cut (the leader, or a minority, cut off from the others),
    /// restart (SIGTERM: a leader hands over; then start again),
    /// transfer (leadership moved); or none.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,cut,restart,transfer"
    )]
    pub faults: Vec<String>,
    /// Operations per second each client aims at (keeps the history
    /// small enough to check in seconds).
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// How long one operation may take, retries included; then its
    /// outcome is unknown.
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    pub op_timeout: u64,
    /// Seed of the workload and the faults' choices [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
    /// The checker's time budget; past it, exit 3.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub check_seconds: u64,
    /// The checker's memory budget; past it, exit 3.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub check_memory: usize,
    /// Also write the run as one self-contained page: a timeline of
    /// clients, nodes and faults, with the anomaly outlined.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Where to save the history, as JSON lines [default:
    /// DEBUG_DIR/check-<time>.jsonl].
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Check a saved history again instead of running (no cluster
    /// needed).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Where boot_all_nodes.sh keeps state and pids (its STATE_DIR).
    #[arg(long, default_value = "/tmp/state")]
    pub state_dir: PathBuf,
    /// Where restarted nodes' output goes (boot_all_nodes.sh's DEBUG_DIR).
    #[arg(long, default_value = "/tmp/debug")]
    pub debug_dir: PathBuf,
    /// The raftnode the lab trusts and restarts nodes with [default:
    /// the raftnode beside this raftctl].
    #[arg(long, value_name = "PATH")]
    pub raftnode: Option<PathBuf>,
}

/// Prints a line; a reader gone away does not stop the check, which
/// must still heal the cluster, save the history and exit with its
/// verdict (unlike other commands' output, see `say!`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, $($arg)*).and_then(|()| stdout.flush());
    }};
}

fn usage(message: &str) -> ! {
    eprintln!("raftctl: check: {message}");
    exit(2)
}

impl Args {
    fn budget(&self) -> Budget {
        Budget {
            time: Duration::from_secs(self.check_seconds.max(1)),
            memory_bytes: self.check_memory.max(1) << 20,
        }
    }

    fn faults(&self) -> Vec<FaultKind> {
        if self.faults.iter().any(|f| f == "none") {
            return Vec::new();
        }
        let mut kinds = Vec::new();
        for f in &self.faults {
            let kind: FaultKind = f.trim().parse().unwrap_or_else(|e: String| usage(&e));
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    }
}

/// `raftctl check --replay FILE`: checks a saved history again.
pub fn replay(args: &Args, file: &Path) -> ! {
    let history = History::load(file).unwrap_or_else(|e| {
        eprintln!("raftctl: check: {e}");
        exit(2)
    });
    out!(
        "checking {} again ({} operations)",
        file.display(),
        report::count(history.ops.len() as u64)
    );
    finish(args, &history, None)
}

/// Prints the summary and verdict, writes the page, and exits with the
/// verdict's status.
fn finish(args: &Args, history: &History, saved: Option<&Path>) -> ! {
    let analysis: Analysis = check::analyze(history, &args.budget());
    out!("{}", report::summary(history, &analysis).trim_end());
    if let Some(path) = saved {
        out!("\nhistory: {}", path.display());
        if analysis.exit_code() == 1 {
            out!(
                "check it again with: raftctl check --replay {}",
                path.display()
            );
        }
    }
    if let Some(path) = &args.html {
        match std::fs::write(path, check::html::page(history, &analysis)) {
            Ok(()) => out!("page: {}", path.display()),
            Err(e) => {
                eprintln!("raftctl: check: cannot write {}: {e}", path.display());
                exit(2)
            }
        }
    }
    exit(analysis.exit_code())
}

/// `raftctl check` against a running lab cluster.
pub fn run(cluster: &ClusterConfig, args: Args) -> ! {
    if let Some(file) = &args.replay {
        replay(&args, file)
    }
    if args.clients == 0 || args.seconds == 0 || args.keys == 0 || args.rate == 0 {
        usage("--clients, --seconds, --keys and --rate must be at least 1");
    }
    let faults = args.faults();
    let lab = Arc::new(Lab::new(
        cluster.clone(),
        args.state_dir.clone(),
        args.debug_dir.clone(),
        args.raftnode.clone(),
    ));
    if let Err(e) = check::verify_lab(cluster, &lab) {
        usage(&e.to_string());
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let options = CheckOptions {
        seconds: args.seconds,
        clients: args.clients,
        keys: args.keys,
        faults: faults.clone(),
        rate: args.rate,
        op_timeout: Duration::from_millis(args.op_timeout),
        seed,
    };
    let history_path = args.history.clone().unwrap_or_else(|| {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        args.debug_dir.join(format!("check-{unix}.jsonl"))
    });
    let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
    out!(
        "check: {} clients, {} keys, {} s, about {} operations/s each, faults: {} (seed {seed})",
        args.clients,
        args.keys,
        args.seconds,
        args.rate,
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(",")
        }
    );
    // Ctrl-C (or SIGTERM) ends the run early: faults healed, history
    // checked.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, interrupted.clone()) {
            eprintln!("raftctl: cannot handle signal {signal}: {e}");
        }
    }
    let history = check::record(cluster, lab, &options, &interrupted, &mut |p| {
        out!("{}", report::progress_line(p));
    });
    if let Some(dir) = history_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let saved = match history.save(&history_path) {
        Ok(()) => Some(history_path.as_path()),
        Err(e) => {
            eprintln!("raftctl: check: cannot save the history: {e}");
            None
        }
    };
    finish(&args, &history, saved)
}
