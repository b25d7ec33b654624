//! Lab controls (`raftctl web --lab`, and `raftctl check`'s faults):
//! stop, kill, pause, resume, restart, cut off and reconnect the nodes of
//! a *local* cluster.
//!
//! **Trust.** The pid files and the processes' command lines are written
//! by whoever can write `STATE_DIR` or start a process: they are claims,
//! not facts. So the lab signals a pid only if all of these hold:
//! it is recorded in `STATE_DIR/pids/node<ID>.pid` (where
//! `boot_all_nodes.sh` and this module record them); `/proc/<pid>/exe`,
//! the file the kernel actually runs (not `argv[0]`, which any process
//! may set), is the lab's raftnode: the one beside this raftctl, or the
//! one named with `raftctl web --lab --raftnode PATH`; and
//! `/proc/<pid>/cmdline` shows it started with this cluster's
//! configuration file and that node's id. And it only ever *runs* that
//! raftnode: a restart never executes a program or a directory taken
//! from `/proc` or a pid file. Its arguments are rebuilt: the
//! configuration, the node's id and port, the lab's `--state-dir` and
//! `--debug-dir`, and, of the options the node was last seen running
//! with, only raftnode's own tuning options (timings, limits, read mode,
//! cluster id, `--lab`), each checked against a fixed list. A node never
//! seen is started as `boot_all_nodes.sh` starts one, with `--lab`. Its
//! output is appended to `DEBUG_DIR/node<ID>.out`, and it runs in a
//! process group of its own, so that stopping raftctl leaves it running.
//! What the lab does not protect against: a user who can replace the
//! raftnode binary itself, or who runs raftctl with someone else's
//! `STATE_DIR`.
//!
//! Cutting a node off needs no privileges: the node itself, if started
//! with `--lab`, stops sending and answering Raft messages on request (a
//! `lab` request), as if its network were cut; clients still reach it.
//!
//! Linux only (it reads `/proc`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::client;
use crate::config::ClusterConfig;
use crate::consensus::NodeId;
use crate::wire::{Request, Response};

/// What a button asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// SIGTERM: a clean stop (a leader hands its leadership over first).
    Stop,
    /// SIGKILL: a crash.
    Kill,
    /// SIGSTOP: frozen, as in a long pause; its peers see silence.
    Pause,
    /// SIGCONT.
    Resume,
    /// Stop it if it runs, then start it again.
    Restart,
    /// Cut it off from its peers (needs the node's `--lab`).
    Isolate,
    /// Reconnect it.
    Heal,
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Action, String> {
        Ok(match s {
            "stop" => Action::Stop,
            "kill" => Action::Kill,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "restart" => Action::Restart,
            "isolate" => Action::Isolate,
            "heal" => Action::Heal,
            other => return Err(format!("no action {other:?}")),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("node{0} is not in the configuration")]
    UnknownNode(NodeId),
    /// No pid recorded for the node, or the process is gone.
    #[error("node{0} is not running")]
    NotRunning(NodeId),
    /// The recorded pid is some other process.
    #[error("pid {pid} is not a node of this cluster: {why}")]
    NotOurs { pid: u32, why: String },
    /// A signal could not be sent.
    #[error("cannot signal pid {pid}: {why}")]
    Signal { pid: u32, why: String },
    /// The node did not stop within the time allowed.
    #[error("pid {pid} did not stop in time")]
    StillRunning { pid: u32 },
    #[error("cannot start raftnode: {0}")]
    Spawn(std::io::Error),
    /// The node refused or did not answer a `lab` request.
    #[error("{0}")]
    Node(String),
}

/// raftnode's options a restart keeps from the command line a node was
/// last seen running with: `(flag, takes a value)`. Only these; anything
/// else on that command line is dropped. `--state-dir` and `--debug-dir`
/// are the lab's own; `--vote-floor` is for one start only. The TLS
/// files and `--listen` are the node's own, kept so that a restarted node
/// of a TLS cluster can still talk to the others.
pub const KEPT_OPTIONS: [(&str, bool); 18] = [
    ("--election-timeout", true),
    ("--heartbeat", true),
    ("--rpc-timeout", true),
    ("--cluster-id", true),
    ("--max-connections", true),
    ("--idle-timeout", true),
    ("--max-inflight", true),
    ("--snapshot-threshold", true),
    ("--read-mode", true),
    ("--max-clock-drift", true),
    ("--lab", false),
    ("--tls", true),
    ("--cert-file", true),
    ("--key-file", true),
    ("--trusted-ca-file", true),
    ("--anonymous-clients", false),
    ("--listen", true),
    // Kept so that a node of `raftctl check`'s broken build stays broken.
    ("--unsafe-local-reads", false),
];

/// The options of `argv` (a node's command line, from its program on)
/// that are in [`KEPT_OPTIONS`], as `--flag` or `--flag value` (also
/// `--flag=value`), in order.
fn kept_options(argv: &[OsString]) -> Vec<OsString> {
    let mut kept = Vec::new();
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else { continue };
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (text, None),
        };
        let Some(&(name, takes_value)) = KEPT_OPTIONS.iter().find(|(name, _)| *name == flag) else {
            continue;
        };
        match (takes_value, inline) {
            (false, None) => kept.push(OsString::from(name)),
            (true, Some(value)) => kept.extend([name.into(), value.into()]),
            (true, None) => {
                if let Some(value) = args.next() {
                    kept.extend([OsString::from(name), value.clone()]);
                }
            }
            (false, Some(_)) => {}
        }
    }
    kept
}

pub struct Lab {
    config: ClusterConfig,
    state_dir: PathBuf,
    debug_dir: PathBuf,
    /// The one raftnode the lab trusts and runs (see the module docs).
    raftnode: PathBuf,
    /// The kept options of each node as last seen running.
    options: Mutex<HashMap<NodeId, Vec<OsString>>>,
}

impl Lab {
    /// Lab controls for `config`'s nodes, whose pids are recorded under
    /// `state_dir/pids` and whose output goes to `debug_dir`, run by
    /// `raftnode` (by default the one beside this program).
    pub fn new(
        config: ClusterConfig,
        state_dir: PathBuf,
        debug_dir: PathBuf,
        raftnode: Option<PathBuf>,
    ) -> Lab {
        let raftnode = raftnode
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|d| d.join("raftnode")))
            })
            .unwrap_or_else(|| PathBuf::from("raftnode"));
        let raftnode = std::fs::canonicalize(&raftnode).unwrap_or(raftnode);
        let lab = Lab {
            config,
            state_dir,
            debug_dir,
            raftnode,
            options: Mutex::new(HashMap::new()),
        };
        // Note how the running nodes were started, to restart them so.
        for m in &lab.config.members {
            let _ = lab.running_pid(m.id);
        }
        lab
    }

    /// For the page: where the pids are, and what the buttons can do.
    pub fn describe(&self) -> Value {
        json!({
            "pid_dir": self.pid_dir().display().to_string(),
            "raftnode": self.raftnode.display().to_string(),
            "actions": ["stop", "kill", "pause", "resume", "restart", "isolate", "heal"],
        })
    }

    fn pid_dir(&self) -> PathBuf {
        self.state_dir.join("pids")
    }

    fn pid_file(&self, id: NodeId) -> PathBuf {
        self.pid_dir().join(format!("node{id}.pid"))
    }

    /// Does `action` to node `id`; says what was done.
    pub fn act(&self, id: NodeId, action: Action) -> Result<String, LabError> {
        let member = self
            .config
            .member(id)
            .ok_or(LabError::UnknownNode(id))?
            .clone();
        match action {
            Action::Stop => self.signal_node(id, "TERM", "stopped (SIGTERM)"),
            Action::Kill => self.signal_node(id, "KILL", "killed (SIGKILL)"),
            Action::Pause => self.signal_node(id, "STOP", "paused (SIGSTOP)"),
            Action::Resume => self.signal_node(id, "CONT", "resumed (SIGCONT)"),
            Action::Restart => {
                match self.running_pid(id) {
                    Ok(pid) => {
                        signal(pid, "TERM")?;
                        let _ = signal(pid, "CONT"); // a paused node must run to stop
                        wait_gone(pid, Duration::from_secs(5))?;
                    }
                    Err(LabError::NotRunning(_)) => {}
                    // A live process the pid file names but that is not
                    // ours: starting another beside it helps no one.
                    Err(e) => return Err(e),
                }
                let pid = self.start(id, member.port)?;
                Ok(format!("node{id} restarted (pid {pid})"))
            }
            Action::Isolate | Action::Heal => {
                let isolate = action == Action::Isolate;
                let request = Request::Lab { isolate };
                match client::ask_once(&member, &request, Duration::from_secs(2)) {
                    Ok(Response::Status(_)) => Ok(format!(
                        "node{id} {}",
                        if isolate {
                            "cut off from its peers"
                        } else {
                            "reconnected"
                        }
                    )),
                    Ok(Response::Error { message, .. }) => Err(LabError::Node(message)),
                    Ok(other) => Err(LabError::Node(format!("unexpected answer {other:?}"))),
                    Err(e) => Err(LabError::Node(e.to_string())),
                }
            }
        }
    }

    /// Starts node `id` unless it runs; its new pid if it was started.
    pub fn start_if_down(&self, id: NodeId) -> Result<Option<u32>, LabError> {
        let member = self.config.member(id).ok_or(LabError::UnknownNode(id))?;
        match self.running_pid(id) {
            Ok(_) => Ok(None),
            Err(LabError::NotRunning(_)) => self.start(id, member.port).map(Some),
            Err(e) => Err(e),
        }
    }

    /// The pid of node `id` if it runs as the lab's raftnode (see the
    /// module docs), and whether it was started with `--lab` (which
    /// cutting it off needs).
    pub fn lab_node(&self, id: NodeId) -> Result<(u32, bool), LabError> {
        let pid = self.running_pid(id)?;
        let lab = self
            .options
            .lock()
            .get(&id)
            .is_some_and(|o| o.iter().any(|a| a == "--lab"));
        Ok((pid, lab))
    }

    fn signal_node(&self, id: NodeId, sig: &str, done: &str) -> Result<String, LabError> {
        let pid = self.running_pid(id)?;
        signal(pid, sig)?;
        Ok(format!("node{id} {done}, pid {pid}"))
    }

    /// The pid of node `id`'s process, if the pid file names a running
    /// process that is that node (see the module docs). Notes how it was
    /// started.
    fn running_pid(&self, id: NodeId) -> Result<u32, LabError> {
        let text =
            std::fs::read_to_string(self.pid_file(id)).map_err(|_| LabError::NotRunning(id))?;
        let pid: u32 = text.trim().parse().map_err(|_| LabError::NotRunning(id))?;
        if !alive(pid) {
            return Err(LabError::NotRunning(id));
        }
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let cmdline =
            std::fs::read(proc_dir.join("cmdline")).map_err(|_| LabError::NotRunning(id))?;
        let argv: Vec<OsString> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect();
        let cwd = std::fs::read_link(proc_dir.join("cwd")).unwrap_or_else(|_| PathBuf::from("/"));
        let exe = std::fs::read_link(proc_dir.join("exe")).map_err(|e| LabError::NotOurs {
            pid,
            why: format!("cannot see what it runs: {e}"),
        })?;
        self.check_is_node(id, &exe, &argv, &cwd)
            .map_err(|why| LabError::NotOurs { pid, why })?;
        self.options.lock().insert(id, kept_options(&argv));
        Ok(pid)
    }

    /// Whether a process running `exe` with `argv` (in `cwd`) is the
    /// lab's raftnode, started as `raftnode CONFIG ID …` for this
    /// cluster's configuration and node `id`.
    fn check_is_node(
        &self,
        id: NodeId,
        exe: &Path,
        argv: &[OsString],
        cwd: &Path,
    ) -> Result<(), String> {
        // The kernel marks a program replaced since it started (say, by a
        // rebuild) with this suffix; it was still started from that path.
        let exe_text = exe.to_string_lossy();
        let exe = Path::new(exe_text.strip_suffix(" (deleted)").unwrap_or(&exe_text));
        if exe != self.raftnode {
            return Err(format!(
                "it runs {}, not {} (name another with --raftnode)",
                exe.display(),
                self.raftnode.display()
            ));
        }
        let program = argv.first().map(Path::new);
        if program.and_then(Path::file_name) != Some("raftnode".as_ref()) {
            return Err(format!(
                "its command line names {:?}, not raftnode",
                program.unwrap_or(Path::new(""))
            ));
        }
        let config = argv.get(1).map(|c| cwd.join(c));
        let ours = std::fs::canonicalize(&self.config.path).ok();
        if config.and_then(|c| std::fs::canonicalize(c).ok()) != ours || ours.is_none() {
            return Err(format!(
                "it runs another configuration than {}",
                self.config.path.display()
            ));
        }
        if argv.get(2).and_then(|a| a.to_str()) != Some(id.to_string().as_str()) {
            return Err(format!("it is not node{id}"));
        }
        Ok(())
    }

    /// The command line that starts node `id`: the lab's raftnode, with
    /// arguments rebuilt (see the module docs).
    fn command_line(&self, id: NodeId, port: u16) -> Vec<OsString> {
        let config = std::fs::canonicalize(&self.config.path).unwrap_or(self.config.path.clone());
        let mut argv: Vec<OsString> = vec![
            config.into(),
            id.to_string().into(),
            port.to_string().into(),
            "--state-dir".into(),
            self.state_dir.clone().into(),
            "--debug-dir".into(),
            self.debug_dir.clone().into(),
        ];
        let seen = self.options.lock().get(&id).cloned();
        argv.extend(seen.unwrap_or_else(|| vec!["--lab".into()]));
        argv
    }

    /// Starts node `id` (see [`Lab::command_line`]) and records its pid.
    fn start(&self, id: NodeId, port: u16) -> Result<u32, LabError> {
        let argv = self.command_line(id, port);
        std::fs::create_dir_all(&self.debug_dir).map_err(LabError::Spawn)?;
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.debug_dir.join(format!("node{id}.out")))
            .map_err(LabError::Spawn)?;
        let err = out.try_clone().map_err(LabError::Spawn)?;
        let mut child = Command::new(&self.raftnode)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(LabError::Spawn)?;
        let pid = child.id();
        std::fs::create_dir_all(self.pid_dir()).map_err(LabError::Spawn)?;
        std::fs::write(self.pid_file(id), format!("{pid}\n")).map_err(LabError::Spawn)?;
        // Collects its exit status whenever it ends, so it leaves no zombie.
        thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(pid)
    }
}

fn signal(pid: u32, sig: &str) -> Result<(), LabError> {
    let out = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .output()
        .map_err(|e| LabError::Signal {
            pid,
            why: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Signal {
            pid,
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether process `pid` exists and has not exited (a zombie has).
///
/// Alive means any of its threads is: a process whose main thread has
/// exited shows as a zombie while its other threads are still exiting,
/// and those still hold its files, the state directory's lock among them
/// (a restart at that moment would find the directory locked).
pub fn alive(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.flatten().any(|thread| {
        std::fs::read_to_string(thread.path().join("stat")).is_ok_and(|stat| {
            // The state follows the parenthesized command name: Z is a
            // zombie, X dead.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        })
    })
}

/// Waits until process `pid` has exited.
fn wait_gone(pid: u32, timeout: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if !alive(pid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::StillRunning { pid });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(dir: &Path) -> Lab {
        let path = dir.join("config.txt");
        std::fs::write(&path, "0 127.0.0.1 7000\n1 127.0.0.1 7001\n").unwrap();
        let config = crate::config::load(&path).unwrap();
        let raftnode = dir.join("bin/raftnode");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(&raftnode, "").unwrap();
        Lab::new(config, dir.join("state"), dir.join("debug"), Some(raftnode))
    }

    #[test]
    fn a_pid_that_is_not_a_node_of_this_cluster_is_never_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        // This test process: alive, but not raftnode.
        std::fs::create_dir_all(dir.path().join("state/pids")).unwrap();
        std::fs::write(
            dir.path().join("state/pids/node0.pid"),
            std::process::id().to_string(),
        )
        .unwrap();
        let err = lab.act(0, Action::Kill).unwrap_err();
        assert!(matches!(err, LabError::NotOurs { .. }), "{err}");
        assert!(matches!(
            lab.act(1, Action::Stop),
            Err(LabError::NotRunning(1))
        ));
        assert!(matches!(
            lab.act(7, Action::Stop),
            Err(LabError::UnknownNode(7))
        ));
    }

    #[test]
    fn only_our_raftnode_with_our_config_and_the_nodes_id_counts() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        let ours = std::fs::canonicalize(dir.path().join("bin/raftnode")).unwrap();
        let argv = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        let cwd = dir.path();
        let node0 = argv(&["/bin/raftnode", "config.txt", "0", "7000"]);
        assert!(lab.check_is_node(0, &ours, &node0, cwd).is_ok());
        // Rebuilt since it started: still ours.
        let replaced = PathBuf::from(format!("{} (deleted)", ours.display()));
        assert!(lab.check_is_node(0, &replaced, &node0, cwd).is_ok());
        // Issue 19: a process whose command line claims to be raftnode,
        // running another program.
        let fake = dir.path().join("fake/raftnode");
        let why = lab.check_is_node(0, &fake, &node0, cwd).unwrap_err();
        assert!(
            why.contains("fake/raftnode") && why.contains("--raftnode"),
            "{why}"
        );
        let other = dir.path().join("other.txt");
        std::fs::write(&other, "0 127.0.0.1 7000\n").unwrap();
        for (id, args) in [
            (0, vec!["/bin/sleep", "config.txt", "0"]),
            (0, vec!["raftnode", "other.txt", "0"]),
            (1, vec!["raftnode", "config.txt", "0"]),
            (0, vec!["raftnode"]),
        ] {
            assert!(
                lab.check_is_node(id, &ours, &argv(&args), cwd).is_err(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn a_restart_rebuilds_the_command_line_keeping_only_raftnodes_own_options() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        let config = std::fs::canonicalize(dir.path().join("config.txt")).unwrap();
        let base = |id: &str, port: &str| -> Vec<OsString> {
            vec![
                config.clone().into(),
                id.into(),
                port.into(),
                "--state-dir".into(),
                dir.path().join("state").into(),
                "--debug-dir".into(),
                dir.path().join("debug").into(),
            ]
        };
        // Never seen: as boot_all_nodes.sh starts it, with --lab.
        let mut expected = base("1", "7001");
        expected.push("--lab".into());
        assert_eq!(lab.command_line(1, 7001), expected);
        // Seen running with tuning options and things that are not.
        let seen: Vec<OsString> = [
            "/somewhere/raftnode",
            "/elsewhere/config.txt",
            "0",
            "7000",
            "--state-dir",
            "/their/state",
            "--heartbeat",
            "100",
            "--election-timeout=800..1600",
            "--vote-floor",
            "9",
            "--lab",
            "--unknown",
            "x",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        lab.options.lock().insert(0, kept_options(&seen));
        let mut expected = base("0", "7000");
        expected.extend(
            [
                "--heartbeat",
                "100",
                "--election-timeout",
                "800..1600",
                "--lab",
            ]
            .iter()
            .map(OsString::from),
        );
        assert_eq!(lab.command_line(0, 7000), expected);
    }

    /// Every option a restart keeps is one raftnode takes: the list here
    /// and raftnode's arguments must not drift apart.
    #[test]
    fn the_kept_options_are_raftnodes() {
        let source = include_str!("../bin/raftnode.rs");
        for (flag, _) in KEPT_OPTIONS {
            let field = flag.trim_start_matches("--").replace('-', "_");
            assert!(
                source.contains(&format!("    {field}: ")),
                "raftnode has no option {flag}"
            );
        }
    }
}
