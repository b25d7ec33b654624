//! Lab controls (`raftctl web --lab`): stop, kill, pause, resume, restart,
//! cut off and reconnect the nodes of a *local* cluster.
//!
//! They act only on processes this module can identify as the cluster's
//! nodes, never on a pid it is merely given: the pid must be recorded in
//! `STATE_DIR/pids/node<ID>.pid` (where `boot_all_nodes.sh` and this
//! module record them), and `/proc/<pid>/cmdline` must show `raftnode`
//! started with this cluster's configuration file and that node's id.
//! A node is restarted with the command line it was last seen running
//! with (from `/proc`), in its own directory, its output appended to
//! `DEBUG_DIR/node<ID>.out` as `boot_all_nodes.sh` does, in a process
//! group of its own so that stopping raftctl leaves it running; or, if it
//! was never seen, as `boot_all_nodes.sh` starts one, with `--lab`.
//!
//! Cutting a node off needs no privileges: the node itself, if started
//! with `--lab`, stops sending and answering Raft messages on request (a
//! `lab` request), as if its network were cut; clients still reach it.
//!
//! Linux only (it reads `/proc`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
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

#[derive(Debug)]
pub enum LabError {
    UnknownNode(NodeId),
    /// No pid recorded for the node, or the process is gone.
    NotRunning(NodeId),
    /// The recorded pid is some other process.
    NotOurs {
        pid: u32,
        why: String,
    },
    /// A signal could not be sent.
    Signal {
        pid: u32,
        why: String,
    },
    /// The node did not stop within the time allowed.
    StillRunning {
        pid: u32,
    },
    Spawn(std::io::Error),
    /// The node refused or did not answer a `lab` request.
    Node(String),
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::UnknownNode(id) => write!(f, "node{id} is not in the configuration"),
            LabError::NotRunning(id) => write!(f, "node{id} is not running"),
            LabError::NotOurs { pid, why } => {
                write!(f, "pid {pid} is not a node of this cluster: {why}")
            }
            LabError::Signal { pid, why } => write!(f, "cannot signal pid {pid}: {why}"),
            LabError::StillRunning { pid } => write!(f, "pid {pid} did not stop in time"),
            LabError::Spawn(e) => write!(f, "cannot start raftnode: {e}"),
            LabError::Node(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for LabError {}

/// How a node was started: to start it again the same way.
#[derive(Clone, Debug)]
struct Launch {
    argv: Vec<OsString>,
    cwd: PathBuf,
}

pub struct Lab {
    config: ClusterConfig,
    state_dir: PathBuf,
    debug_dir: PathBuf,
    /// The raftnode binary beside this raftctl, for nodes never seen.
    raftnode: PathBuf,
    launches: Mutex<HashMap<NodeId, Launch>>,
}

impl Lab {
    /// Lab controls for `config`'s nodes, whose pids are recorded under
    /// `state_dir/pids` and whose output goes to `debug_dir`.
    pub fn new(config: ClusterConfig, state_dir: PathBuf, debug_dir: PathBuf) -> Lab {
        let raftnode = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("raftnode")))
            .unwrap_or_else(|| PathBuf::from("raftnode"));
        let lab = Lab {
            config,
            state_dir,
            debug_dir,
            raftnode,
            launches: Mutex::new(HashMap::new()),
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
                if let Ok(pid) = self.running_pid(id) {
                    signal(pid, "TERM")?;
                    let _ = signal(pid, "CONT"); // a paused node must run to stop
                    wait_gone(pid, Duration::from_secs(5))?;
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
        self.check_is_node(id, &argv, &cwd)
            .map_err(|why| LabError::NotOurs { pid, why })?;
        self.launches.lock().insert(id, Launch { argv, cwd });
        Ok(pid)
    }

    /// Whether `argv` (run in `cwd`) is `raftnode CONFIG ID …` for this
    /// cluster's configuration and node `id`.
    fn check_is_node(&self, id: NodeId, argv: &[OsString], cwd: &Path) -> Result<(), String> {
        let program = argv.first().map(Path::new);
        if program.and_then(Path::file_name) != Some("raftnode".as_ref()) {
            return Err(format!(
                "it runs {:?}, not raftnode",
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

    /// Starts node `id` as it was last seen running (or as
    /// `boot_all_nodes.sh` would, with `--lab`) and records its pid.
    fn start(&self, id: NodeId, port: u16) -> Result<u32, LabError> {
        let launch = self
            .launches
            .lock()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Launch {
                argv: [
                    self.raftnode.as_os_str(),
                    self.config.path.as_os_str(),
                    id.to_string().as_ref(),
                    port.to_string().as_ref(),
                    "--state-dir".as_ref(),
                    self.state_dir.as_os_str(),
                    "--debug-dir".as_ref(),
                    self.debug_dir.as_os_str(),
                    "--lab".as_ref(),
                ]
                .iter()
                .map(|a| a.to_os_string())
                .collect(),
                cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            });
        std::fs::create_dir_all(&self.debug_dir).map_err(LabError::Spawn)?;
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.debug_dir.join(format!("node{id}.out")))
            .map_err(LabError::Spawn)?;
        let err = out.try_clone().map_err(LabError::Spawn)?;
        let mut child = Command::new(&launch.argv[0])
            .args(&launch.argv[1..])
            .current_dir(&launch.cwd)
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
        Lab::new(config, dir.join("state"), dir.join("debug"))
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
    fn only_raftnode_with_our_config_and_the_nodes_id_counts() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        let argv = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        let cwd = dir.path();
        assert!(
            lab.check_is_node(0, &argv(&["/bin/raftnode", "config.txt", "0", "7000"]), cwd)
                .is_ok()
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
                lab.check_is_node(id, &argv(&args), cwd).is_err(),
                "{args:?}"
            );
        }
    }
}
