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

/// `raftctl check`'s options (see `Command::Check`).
pub struct Args {
    pub seconds: u64,
    pub clients: usize,
    pub keys: usize,
    pub faults: Vec<String>,
    pub rate: u32,
    pub op_timeout: u64,
    pub seed: Option<u64>,
    pub check_seconds: u64,
    pub check_memory: usize,
    pub html: Option<PathBuf>,
    pub history: Option<PathBuf>,
    pub replay: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub debug_dir: PathBuf,
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
        budget: args.budget(),
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
