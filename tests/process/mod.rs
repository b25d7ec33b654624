//! Runs real `raftnode` processes, as a user would: a config file in a temp
//! dir, ports on 127.0.0.1 that no other process can take (see [`ports`]),
//! state and activity logs in the temp dir (never /tmp/state or
//! /tmp/debug). Every process started is killed by pid
//! when the cluster is dropped, even if the test fails.
#![allow(dead_code)] // each test file uses a different part of this module

pub mod booted;
pub mod browser;
pub mod deps;
pub mod hostile;
pub mod mesh;
pub mod ports;
pub mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use raft::client::{self, MemberStatus};
use raft::config::{self, ClusterConfig};
use raft::consensus::{Entry, NodeId};

pub const RAFTNODE: &str = env!("CARGO_BIN_EXE_raftnode");
pub const RAFTCTL: &str = env!("CARGO_BIN_EXE_raftctl");

/// Timeouts for tests: slow enough that a loaded 2-core machine running
/// tests in parallel does not cause spurious elections.
/// How long the helpers wait for the cluster to reach a state.
pub const WAIT: Duration = Duration::from_secs(30);

pub const TEST_TIMING: [&str; 4] = ["--election-timeout", "800..1600", "--heartbeat", "100"];

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: ClusterConfig,
    pub args: Vec<String>,
    children: BTreeMap<NodeId, Child>,
    /// With `meshed`: the proxies between the nodes, which can cut them
    /// off from each other.
    pub mesh: Option<mesh::Mesh>,
    /// The nodes' listen ports, reserved until the cluster is dropped.
    pub ports: Ports,
    /// Nodes that join the running cluster (`raftnode --join`), not in
    /// config.txt: id, port, and the member they join through.
    pub joiners: BTreeMap<NodeId, (u16, NodeId)>,
}

pub use ports::{Ports, reserve as reserve_ports};

impl TestCluster {
    /// A cluster of `n` nodes (ids 0..n) in the courses' config format;
    /// nothing is started yet.
    pub fn new(n: usize) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = reserve_ports(n);
        let config_path = dir.path().join("config.txt");
        std::fs::write(&config_path, ports.config_text()).unwrap();
        let config = config::load(&config_path).unwrap();
        TestCluster {
            dir,
            config_path,
            config,
            args: TEST_TIMING.iter().map(|s| s.to_string()).collect(),
            children: BTreeMap::new(),
            mesh: None,
            ports,
            joiners: BTreeMap::new(),
        }
    }

    /// A cluster of `n` nodes in config.txt, and `spares` more ports for
    /// servers that join it later (ids `n..n + spares`, see
    /// [`TestCluster::start_joining`]).
    pub fn with_spares(n: usize, spares: usize) -> TestCluster {
        let mut c = TestCluster::new(n);
        let more = reserve_ports(spares);
        c.ports.absorb(more);
        c
    }

    /// The address of server `id` (of config.txt, or a spare).
    pub fn address(&self, id: NodeId) -> String {
        format!("127.0.0.1:{}", self.ports.ports[id as usize])
    }

    /// Starts spare server `id` as `raftnode --join` through member `via`,
    /// and follows it from then on as one of the cluster's nodes.
    pub fn start_joining(&mut self, id: NodeId, via: NodeId) {
        let port = self.ports.ports[id as usize];
        self.joiners.insert(id, (port, via));
        if self.config.member(id).is_none() {
            self.config.members.push(config::Member {
                id,
                host: "127.0.0.1".into(),
                port,
            });
        }
        self.start(id);
    }

    /// Stops following node `id` (it was removed; it should have exited).
    pub fn forget(&mut self, id: NodeId) {
        self.config.members.retain(|m| m.id != id);
    }

    /// A cluster of `n` whose nodes reach each other only through proxies
    /// (see [`mesh`]), so that tests can cut them off. Node `id` gets a
    /// configuration of its own, naming its peers at its proxies' ports;
    /// clients and `raftctl` use `config.txt`, with the real ports. All
    /// share one `--cluster-id`, since the configurations differ.
    pub fn meshed(n: usize) -> TestCluster {
        let mut c = TestCluster::new(n);
        let real: Vec<(NodeId, u16)> = c.config.members.iter().map(|m| (m.id, m.port)).collect();
        let mesh = mesh::Mesh::start(&real);
        let texts: Vec<(NodeId, String)> = real
            .iter()
            .map(|&(id, port)| {
                let mut text = format!("N: {n}\n");
                for &(other, _) in &real {
                    let port = if other == id {
                        port
                    } else {
                        mesh.ports[&(id, other)]
                    };
                    text.push_str(&format!("node{other}: 127.0.0.1:{port}\n"));
                }
                (id, text)
            })
            .collect();
        c.mesh = Some(mesh);
        for (id, text) in texts {
            std::fs::write(c.node_config(id), text).unwrap();
        }
        c.args
            .extend(["--cluster-id".to_string(), "meshed".to_string()]);
        c
    }

    /// The configuration node `id` is started with.
    fn node_config(&self, id: NodeId) -> PathBuf {
        match self.mesh {
            Some(_) => self.dir.path().join(format!("config-node{id}.txt")),
            None => self.config_path.clone(),
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.config.members.iter().map(|m| m.id).collect()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn debug_dir(&self) -> PathBuf {
        self.dir.path().join("debug")
    }

    pub fn activity_log(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.debug_dir().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// The command line a user would type to start node `id`.
    pub fn node_command(&self, id: NodeId) -> Command {
        let mut cmd = Command::new(RAFTNODE);
        if let Some(&(port, via)) = self.joiners.get(&id) {
            cmd.arg("--join")
                .arg(self.address(via))
                .arg(id.to_string())
                .arg(format!("127.0.0.1:{port}"));
        } else {
            let port = self.config.member(id).unwrap().port;
            cmd.arg(self.node_config(id))
                .arg(id.to_string())
                .arg(port.to_string());
        }
        cmd.arg("--state-dir")
            .arg(self.state_dir())
            .arg("--debug-dir")
            .arg(self.debug_dir())
            .args(&self.args);
        cmd
    }

    pub fn start(&mut self, id: NodeId) {
        let cmd = self.node_command(id);
        self.spawn(id, cmd);
    }

    /// Starts node `id` with `extra` arguments after the usual ones.
    pub fn start_with(&mut self, id: NodeId, extra: &[&str]) {
        let mut cmd = self.node_command(id);
        cmd.args(extra);
        self.spawn(id, cmd);
    }

    /// Starts node `id` under a shell that first runs `setup` (say, a
    /// resource limit) and then execs the node, so its pid is the node's.
    pub fn start_under_shell(&mut self, id: NodeId, setup: &str) {
        let node = self.node_command(id);
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("{setup}; exec \"$@\""))
            .arg("raftnode")
            .arg(node.get_program())
            .args(node.get_args());
        self.spawn(id, cmd);
    }

    /// What node `id` wrote to stderr (all its runs).
    pub fn stderr(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.stderr")))
            .unwrap_or_default()
    }

    fn spawn(&mut self, id: NodeId, mut cmd: Command) {
        assert!(!self.is_running(id), "node{id} is already running");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.stderr")))
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn raftnode");
        self.children.insert(id, child);
    }

    pub fn start_all(&mut self) {
        for id in self.ids() {
            self.start(id);
        }
    }

    pub fn is_running(&mut self, id: NodeId) -> bool {
        match self.children.get_mut(&id) {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn pid(&self, id: NodeId) -> u32 {
        self.children[&id].id()
    }

    /// `kill -TERM <pid>`, then waits for the exit.
    pub fn sigterm(&mut self, id: NodeId) -> ExitStatus {
        let mut child = self.children.remove(&id).expect("node not started");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        wait_exit(&mut child, Duration::from_secs(20))
    }

    /// Sends node `id` `signal` (`TERM`, `KILL`) and returns at once; reap
    /// it with `wait_for_exit`.
    pub fn signal(&mut self, id: NodeId, signal: &str) {
        let pid = self.children[&id].id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for node `id` to exit on its own; its exit status.
    pub fn wait_for_exit(&mut self, id: NodeId, timeout: Duration) -> ExitStatus {
        let mut child = self.children.remove(&id).expect("node not started");
        wait_exit(&mut child, timeout)
    }

    /// `kill -9 <pid>`, then reaps it.
    pub fn sigkill(&mut self, id: NodeId) {
        let mut child = self.children.remove(&id).expect("node not started");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn statuses(&self) -> Vec<MemberStatus> {
        client::status_all(&self.config, Duration::from_millis(1000))
    }

    /// Polls the cluster's status until `check` returns `Some`, and returns
    /// it; fails after `timeout`, showing the last status and logs.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[MemberStatus]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses();
            if let Some(t) = check(&statuses) {
                return t;
            }
            if Instant::now() > deadline {
                self.dump(&statuses);
                panic!("timed out after {timeout:?} waiting for: {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn dump(&self, statuses: &[MemberStatus]) {
        for s in statuses {
            eprintln!("node{}: {:?}", s.member.id, s.status);
            let stderr = std::fs::read_to_string(
                self.dir.path().join(format!("node{}.stderr", s.member.id)),
            );
            eprintln!(
                "node{} stderr: {}",
                s.member.id,
                stderr.unwrap_or_default().trim()
            );
        }
        for id in self.ids() {
            let log = self.activity_log(id);
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("--- node{id}.log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    /// Waits for one leader that every running node in `among` follows in
    /// the same term; returns (leader, term).
    pub fn wait_for_agreed_leader(&self, among: &[NodeId], timeout: Duration) -> (NodeId, u64) {
        self.wait_for("one leader known to all running nodes", timeout, |st| {
            agreed_leader(st, among)
        })
    }

    /// Waits until some node's commit index is at least `past + more`;
    /// returns the highest commit index seen.
    pub fn wait_for_commits(&self, past: u64, more: u64) -> u64 {
        self.wait_for(
            &format!("{more} more entries committed after {past}"),
            WAIT,
            |st| {
                let max = st
                    .iter()
                    .filter_map(|s| s.status.as_ref().ok())
                    .map(|s| s.commit_index)
                    .max()?;
                (max >= past + more).then_some(max)
            },
        )
    }

    /// Waits until every node is reachable and all hold the same number
    /// of entries, all committed, none still repairing what its storage
    /// lost; returns that index.
    pub fn wait_for_converged(&self) -> u64 {
        self.wait_for(
            "every node caught up, its whole log committed",
            WAIT,
            |st| {
                let s: Vec<_> = st
                    .iter()
                    .map(|s| s.status.as_ref().ok())
                    .collect::<Option<_>>()?;
                let last = s[0].last_log_index;
                s.iter()
                    .all(|s| {
                        s.last_log_index == last
                            && s.commit_index == last
                            && s.repairing_through.is_none()
                    })
                    .then_some(last)
            },
        )
    }

    /// The durable log of node `id`, read from its log segments (those a
    /// snapshot has not yet covered).
    pub fn log_entries(&self, id: NodeId) -> Vec<Entry> {
        read_segments(&self.state_dir().join(format!("node{id}")))
    }

    pub fn raftctl(&self, args: &[&str]) -> Output {
        Command::new(RAFTCTL)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap()
    }
}

/// A child process (not a node of a cluster) killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value after `name` on the command line (the benches' options).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Stops every node of `c` with SIGTERM once all have converged, and
/// returns node `reference`'s log up to where they converged, after
/// checking that every other node's is the same (a leader stopped with
/// SIGTERM hands over, and each new leader's no-op may reach some logs
/// and not others: only the converged part must agree).
pub fn converged_logs(c: &mut TestCluster, reference: NodeId) -> Vec<Entry> {
    let converged = c.wait_for_converged();
    for id in c.ids() {
        assert!(c.sigterm(id).success());
    }
    let committed = |id| -> Vec<Entry> {
        let log = c.log_entries(id);
        log.into_iter().filter(|e| e.index <= converged).collect()
    };
    let log = committed(reference);
    assert_eq!(log.last().map(|e| e.index), Some(converged));
    for id in c.ids() {
        assert_eq!(
            committed(id),
            log,
            "node{id}'s log differs from node{reference}'s"
        );
    }
    log
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills (SIGKILL) every node that boot_all_nodes.sh, the lab or a test
/// started on `state_dir`: the pids in its `pids/` files and in its nodes'
/// lock files, each only if its command line names `state_dir` (a stale
/// pid may belong to another process by now).
pub fn kill_nodes_of(state_dir: &Path) {
    let listed = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut files = listed(state_dir.join("pids"));
    files.extend(
        listed(state_dir.to_path_buf())
            .into_iter()
            .map(|node| node.join("lock")),
    );
    let ours = state_dir.to_string_lossy().into_owned();
    for file in files {
        let Some(pid) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&ours) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Runs `cmd` with the reading end of its standard output closed before
/// it writes anything (as `cmd | head -0` would); its exit code (`None`:
/// killed by a signal, SIGPIPE for a shell) and standard error.
pub fn into_closed_pipe(mut cmd: Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = wait_exit(&mut child, WAIT);
    (status.code(), stderr)
}

// Whether process `pid` runs: the lab's own test (any of its threads).
#[allow(unused_imports)] // each test file uses a different part of this module
pub use raft::web::lab::alive;

/// The leader every reachable node in `among` agrees on, if there is one.
pub fn agreed_leader(statuses: &[MemberStatus], among: &[NodeId]) -> Option<(NodeId, u64)> {
    let mut agreed = None;
    for s in statuses.iter().filter(|s| among.contains(&s.member.id)) {
        let st = s.status.as_ref().ok()?;
        let view = (st.leader_id?, st.term);
        if *agreed.get_or_insert(view) != view {
            return None;
        }
    }
    let (leader, _) = agreed?;
    let leader_status = statuses
        .iter()
        .find(|s| s.member.id == leader)?
        .status
        .as_ref()
        .ok()?;
    (leader_status.role == "leader").then_some(agreed?)
}

pub fn leaders(statuses: &[MemberStatus]) -> Vec<NodeId> {
    statuses
        .iter()
        .filter(|s| s.status.as_ref().is_ok_and(|st| st.role == "leader"))
        .map(|s| s.member.id)
        .collect()
}

/// The bytes of the files in `dir` (not its subdirectories).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Every record of every log segment in `dir`, in order.
pub fn read_segments(dir: &Path) -> Vec<Entry> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    names.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("log-") && n.ends_with(".jsonl"))
    });
    names.sort();
    names.iter().flat_map(|p| read_log(p)).collect()
}

pub fn read_log(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (_crc, json) = line.split_once(' ').expect("CRC JSON");
            serde_json::from_str(json).expect("entry JSON")
        })
        .collect()
}
