//! Watching a real cluster: the nodes' event streams (`subscribe`,
//! `events`) and `raftctl events`, run as a user runs them.

mod process;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use process::{RAFTCTL, TestCluster, WAIT};
use raft::events::{NodeEvent, QUEUE};
use raft::wire::{ErrorCode, Response};

/// `raftctl events` prints every node's recent events, merged by time:
/// the election the leader won, and each node committing a write.
#[test]
fn raftctl_events_prints_every_nodes_election_and_commits_in_time_order() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let put = c.raftctl(&["put", "color", "blue"]);
    assert!(put.status.success(), "{put:?}");
    // Each node logs its commit of the write on its own schedule.
    let events = c.wait_for("every node to have committed the write", WAIT, |_| {
        let out = c.raftctl(&["events", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let events: Vec<NodeEvent> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one event per line"))
            .collect();
        let committed = |id| {
            events
                .iter()
                .any(|e| e.node == id && e.kind == "committed" && e.detail["index"] == 2)
        };
        c.ids().into_iter().all(committed).then_some(events)
    });
    let won = events
        .iter()
        .find(|e| e.kind == "election_won" && e.term == term)
        .expect("the election in the stream");
    assert_eq!(won.node, leader);
    assert_eq!(won.role, "leader");
    for id in c.ids() {
        assert!(
            events
                .iter()
                .any(|e| e.node == id && e.kind == "note" && e.text.starts_with("started on")),
            "node{id}'s start is among its events"
        );
    }
    assert!(
        events.windows(2).all(|w| w[0].time_ms <= w[1].time_ms),
        "merged by time"
    );
    let text = c.raftctl(&["events", "--node", &leader.to_string()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.lines()
            .all(|l| l.contains(&format!(" node{leader} [T"))),
        "--node shows that node only:\n{text}"
    );
    assert!(
        text.contains(&format!("election won for term {term}")),
        "{text}"
    );
}

/// `raftctl events --follow --json` keeps following through a crash: the
/// leader killed with SIGKILL, the survivors' new election shows up as it
/// happens.
#[test]
fn raftctl_events_follow_shows_a_new_election_after_the_leader_is_killed() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let (_follower, lines) = raftctl_lines(&c, &["events", "--follow", "--json"]);
    // The recent events come first: the election already won.
    let until = |what: &str, check: &dyn Fn(&NodeEvent) -> bool| {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let e: NodeEvent = serde_json::from_str(&line).expect("an event per line");
                    if check(&e) {
                        return e;
                    }
                }
                Err(_) => panic!("no event {what} within {WAIT:?}"),
            }
        }
    };
    until("for the first election", &|e| {
        e.kind == "election_won" && e.node == leader && e.term == term
    });
    c.sigkill(leader);
    let won = until("for a new election", &|e| {
        e.kind == "election_won" && e.term > term
    });
    assert_ne!(won.node, leader);
}

/// A raftctl running until dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `raftctl ARGS` on `c`; its output's lines arrive on the
/// receiver as it prints them.
fn raftctl_lines(c: &TestCluster, args: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let mut child = Command::new(RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Running(child), rx)
}

/// A subscriber that stops reading never slows the node: it is dropped
/// once its bounded queue is full, told why, and writes go on meanwhile.
#[test]
fn a_subscriber_that_stops_reading_is_dropped_and_the_node_keeps_serving() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, _) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let member = c.config.member(leader).unwrap().clone();
    // A small receive buffer, so that the kernel's buffers do not hold
    // for long what the node's queue would have to.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect(&member.socket_addr().unwrap().into())
        .unwrap();
    let mut stalled: TcpStream = socket.into();
    // Every Raft message of the leader, which no one reads.
    stalled
        .write_all(b"{\"type\":\"subscribe\",\"messages\":true,\"status_ms\":100}\n")
        .unwrap();
    // Writes keep the leader sending messages, until more than the queue
    // holds are waiting and the node drops the subscriber; every write
    // succeeds meanwhile.
    let subscribers = || {
        raft::client::status(&member, Duration::from_secs(2))
            .unwrap()
            .subscribers
    };
    let deadline = Instant::now() + WAIT;
    while subscribers() == 0 {
        assert!(Instant::now() < deadline, "the subscription never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    while subscribers() > 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled subscriber was never dropped"
        );
        let bench = c.raftctl(&["bench", "--clients", "4", "--seconds", "2", "--json"]);
        assert!(bench.status.success(), "{bench:?}");
        let summary: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
        assert_eq!(summary["errors"], 0, "{summary}");
    }
    // Now read: what was queued, then the reason, then the end.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Bounded: a stream that was not dropped goes on forever.
    let mut last = None;
    let mut lines = 0;
    for line in BufReader::new(&stalled).lines().take(QUEUE * 4) {
        let Ok(line) = line else { break };
        lines += 1;
        last = Some(serde_json::from_str::<Response>(&line).unwrap());
    }
    match last {
        Some(Response::Error {
            code: ErrorCode::TooSlow,
            message,
            ..
        }) => assert!(message.contains("fell"), "{message}"),
        other => panic!("the stream ended with {other:?} after {lines} lines"),
    }
    assert!(
        lines > QUEUE,
        "{lines} lines: the whole queue, then the reason"
    );
    eprintln!("{lines} lines read after the stall");
    // A new subscriber is served as usual.
    let out = c.raftctl(&["events", "--node", &leader.to_string()]);
    assert!(out.status.success(), "{out:?}");
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    tmux: String,
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        let tmux = process::deps::ensure("tmux", "tmux");
        let socket = format!("raft-watch-test-{}", std::process::id());
        Tmux { tmux, socket }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.tmux)
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "watch"]).stdout)
            .into_owned()
    }

    /// Polls the screen until `check` finds what it wants.
    fn wait_for<T>(&self, what: &str, check: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if let Some(t) = check(&screen) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the screen within {WAIT:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The leader and term the dashboard's title line shows.
fn shown_leader(screen: &str) -> Option<(u64, u64)> {
    let title = screen.lines().next()?;
    let rest = title.split("leader node").nth(1)?;
    let (id, rest) = rest.split_once(", term ")?;
    let term = rest.split_whitespace().next()?;
    Some((id.parse().ok()?, term.parse().ok()?))
}

/// `raftctl watch` in a real terminal (tmux): the cluster as it is, then a
/// new leader once the old one is killed, and `q` quits.
#[test]
fn raftctl_watch_in_a_terminal_shows_the_leader_and_a_new_one_after_a_kill() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let tmux = Tmux::new();
    let command = format!("{RAFTCTL} --config {} watch", c.config_path.display());
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "120",
        "-y",
        "40",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let screen = tmux.wait_for("view of three nodes and the leader", |s| {
        (shown_leader(s) == Some((leader, term)) && s.contains("3 of 3 nodes answer"))
            .then(|| s.to_string())
    });
    assert!(
        screen.contains(&format!("node{leader}'s followers")),
        "{screen}"
    );
    c.sigkill(leader);
    let (new_leader, new_term) = tmux.wait_for("new leader", |s| {
        shown_leader(s).filter(|&(id, t)| id != leader && t > term)
    });
    let screen = tmux.wait_for("the killed node shown unreachable", |s| {
        s.lines()
            .any(|l| l.contains(&format!("│node{leader} ")) && l.contains("unreachable"))
            .then(|| s.to_string())
    });
    assert!(
        screen.contains(&format!("election won for term {new_term}")),
        "the election in the events pane:\n{screen}"
    );
    eprintln!("node{new_leader} leads term {new_term}:\n{screen}");
    tmux.run(&["send-keys", "-t", "watch", "q"]);
    tmux.wait_for("watch to quit", |_| {
        (!tmux.run(&["has-session", "-t", "watch"]).status.success()).then_some(())
    });
}

/// Not on a terminal (a pipe here), `raftctl watch` prints the same view
/// as plain text every second, without escape codes.
#[test]
fn raftctl_watch_prints_plain_text_when_not_on_a_terminal() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let (_watch, rx) = raftctl_lines(&c, &["watch"]);
    let wanted = format!("leader node{leader}, term {term}");
    let deadline = Instant::now() + WAIT;
    let mut seen = String::new();
    while !seen.contains(&wanted) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => panic!("no {wanted:?} within {WAIT:?} in:\n{seen}"),
        }
    }
    assert!(!seen.contains('\x1b'), "escape codes in:\n{seen}");
}
