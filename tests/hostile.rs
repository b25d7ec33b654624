//! What a socket can send a real cluster, and what the nodes make of it:
//! the built `raftnode` binaries, poked with `nc`-style lines as a curious
//! student or a confused node would. Every node must stay up, answer each
//! line with an error (or close the connection), change nothing, and log
//! each kind of problem once.

mod process;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use process::{RAFTNODE, TEST_TIMING, TestCluster, WAIT, leaders, reserve_ports};
use raft::config::Member;
use raft::transport;
use raft::wire::{Request, Response};

/// One kept-open connection, as `nc` gives.
struct Line {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Line {
    fn open(address: &str) -> Line {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Line {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    /// Sends `text` (a newline is added) and returns the answer line.
    fn ask(&mut self, text: &str) -> serde_json::Value {
        self.writer
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        self.reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
    }

    /// Sends `text` `times` times, checks every answer is an error with
    /// `code`, and returns the first answer's message.
    fn refused(&mut self, text: &str, times: usize, code: &str) -> String {
        let mut first = None;
        for _ in 0..times {
            let r = self.ask(text);
            assert_eq!(
                (r["type"].as_str(), r["code"].as_str()),
                (Some("error"), Some(code)),
                "{text}\n→ {r}"
            );
            first.get_or_insert(r["message"].as_str().unwrap().to_string());
        }
        first.unwrap()
    }
}

/// Lines of `log` that contain every one of `words`.
fn count_lines(log: &str, words: &[&str]) -> usize {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

#[test]
fn nothing_a_socket_sends_crashes_or_starves_a_node() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let third = c
        .ids()
        .into_iter()
        .find(|&id| id != leader && id != follower)
        .unwrap();
    let address = |id| c.config.member(id).unwrap().address();
    let cluster = c.config.derived_cluster_id();
    let times = 20;

    // 1. The line that used to abort a follower, as first found: entries
    //    not starting at prev_log_index + 1. Without a sender it is not
    //    even a peer message; with the leader's identity the core refuses
    //    it.
    let mut f = Line::open(&address(follower));
    let bare = format!(
        r#"{{"type":"append_entries","term":{term},"leader_id":{leader},"prev_log_index":0,"prev_log_term":0,"entries":[{{"index":9,"term":{term},"payload":{{"kind":"noop"}}}}],"leader_commit":0}}"#
    );
    let m = f.refused(&bare, times, "bad_request");
    assert!(m.contains("cluster"), "{m}");
    let enveloped = bare.replacen(
        "{\"type\":\"append_entries\",",
        &format!("{{\"type\":\"append_entries\",\"cluster\":\"{cluster}\",\"from\":{leader},"),
        1,
    );
    let m = f.refused(&enveloped, times, "rejected");
    assert!(m.contains("contiguous"), "{m}");

    // 2. The line that used to abort the leader: an AppendEntries of its
    //    own term from another member.
    let mut l = Line::open(&address(leader));
    let same_term = format!(
        r#"{{"type":"append_entries","cluster":"{cluster}","from":{follower},"term":{term},"leader_id":{follower},"prev_log_index":0,"prev_log_term":0,"entries":[],"leader_commit":0}}"#
    );
    let m = l.refused(&same_term, times, "rejected");
    assert!(m.contains("two leaders"), "{m}");

    // 3. A forged vote request with a huge term from an id not in the
    //    config (taken, as a server added later would be, but refused:
    //    the leader leads, thesis §9.6, and keeps its term, checked at the
    //    end), and one from a member with a term that would overflow.
    let forged = |from: u64, term: u64| {
        format!(
            r#"{{"type":"request_vote","cluster":"{cluster}","from":{from},"term":{term},"candidate_id":{from},"last_log_index":0,"last_log_term":0}}"#
        )
    };
    for _ in 0..times {
        let r = l.ask(&forged(99, 1 << 40));
        assert_eq!(r["vote_granted"], false, "{r}");
    }
    let m = l.refused(&forged(third, u64::MAX), times, "rejected");
    assert!(m.contains("largest allowed"), "{m}");

    // 4. A node of another cluster.
    let foreign = forged(third, term + 5).replace(&cluster, "0123456789abcdef");
    let m = l.refused(&foreign, times, "wrong_cluster");
    assert!(
        m.contains("0123456789abcdef") && m.contains(&cluster),
        "{m}"
    );

    // 5. JSON nested as deep as the decoder allows, and deeper, in each
    //    class of request (it once overflowed a connection thread's stack).
    for depth in [100, 126, 127, 128, 1000] {
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for nested in [&objects, &arrays] {
            for head in [
                r#"{"type":"status","x":"#.to_string(),
                r#"{"type":"read","key":"k","stale":true,"x":"#.to_string(),
                format!(r#"{{"type":"append_entries","cluster":"{cluster}","from":{leader},"x":"#),
            ] {
                let r = l.ask(&format!("{head}{nested}}}"));
                assert!(r["type"].is_string(), "{r}");
            }
        }
    }

    // 6. 64 MiB without a newline: then a newline (too large, and the
    //    connection still works), and again, closed before any newline.
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        l.writer.write_all(&chunk).unwrap();
    }
    l.refused("", 1, "too_large");
    let r = l.ask(r#"{"type":"is_leader"}"#);
    assert_eq!(r["is_leader"], true, "{r}");
    let mut cut = TcpStream::connect(address(leader)).unwrap();
    for _ in 0..64 {
        cut.write_all(&chunk).unwrap();
    }
    drop(cut);

    // 7. A thousand idle connections to the leader.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(address(leader)).unwrap())
        .collect();

    // Afterwards: every node alive and reachable within a second (status
    // asks each node with a 1 s timeout), one leader, the same term (no
    // election was forced), and a write goes through.
    for id in c.ids() {
        assert!(c.is_running(id), "node{id} died");
    }
    let out = c.raftctl(&["status", "--json", "--timeout", "1000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["reachable"], true, "{rows}");
        assert_eq!(row["term"], term, "{rows}");
    }
    let statuses = c.statuses();
    assert_eq!(leaders(&statuses), vec![leader]);
    let refused = |id| {
        statuses[id as usize]
            .status
            .as_ref()
            .unwrap()
            .refused_messages
    };
    // (The stranger's vote requests of part 3 are answered, not refused.)
    assert_eq!(refused(leader), 3 * times as u64, "every refusal counted");
    assert_eq!(refused(follower), times as u64);
    let out = c.raftctl(&["put", "after", "all that"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.raftctl(&["get", "after"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "all that\n");
    drop(idle);

    // Each offender and kind of problem is logged once, not per message.
    let f_log = c.activity_log(follower);
    assert_eq!(
        count_lines(&f_log, &["append_entries from", "contiguous"]),
        1,
        "{f_log}"
    );
    let l_log = c.activity_log(leader);
    for words in [
        &["append_entries from", "two leaders"][..],
        &["request_vote from", "largest allowed"],
        &["request_vote from", "0123456789abcdef"],
    ] {
        assert_eq!(count_lines(&l_log, words), 1, "{words:?} in\n{l_log}");
    }
    // The stranger was heard and refused as the leader leads, its term
    // never taken.
    assert!(
        count_lines(&l_log, &["refused to node99", "we lead this term"]) >= 1,
        "{l_log}"
    );
    assert_eq!(
        count_lines(&l_log, &["adopted term", "node99"]),
        0,
        "{l_log}"
    );
}

/// A child process killed when dropped.
struct Stray(Child);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_started_with_another_config_says_so_and_disrupts_no_election() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);

    // Node 3 of a four-node config that lists the same three nodes: its
    // cluster id differs from theirs, and it will campaign again and again.
    let reserved = reserve_ports(1);
    let port = reserved.ports[0];
    let text = std::fs::read_to_string(&c.config_path).unwrap();
    let stray_config = c.dir.path().join("four.txt");
    std::fs::write(
        &stray_config,
        format!("{}node3: 127.0.0.1:{port}\n", text.replace("N: 3", "N: 4")),
    )
    .unwrap();
    let dir = c.dir.path();
    let stray = Stray(
        Command::new(RAFTNODE)
            .arg(&stray_config)
            .arg("3")
            .arg("--state-dir")
            .arg(dir.join("stray-state"))
            .arg("--debug-dir")
            .arg(dir.join("stray-debug"))
            .args(TEST_TIMING)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stray_log =
        || std::fs::read_to_string(dir.join("stray-debug").join("node3.log")).unwrap_or_default();
    let me = Member {
        id: 3,
        host: "127.0.0.1".into(),
        port,
    };
    // Wait until the stray has asked for pre-votes a few times and heard
    // every node refuse it.
    let deadline = Instant::now() + WAIT;
    loop {
        let stray_term = match transport::call_once(&me, &Request::Status, Duration::from_secs(1)) {
            Ok(Response::Status(s)) => {
                assert_ne!(s.cluster_id, c.config.derived_cluster_id());
                s.term
            }
            _ => 0,
        };
        let log = stray_log();
        let all_refused = c.ids().iter().all(|id| {
            count_lines(
                &log,
                &[&format!("node{id} refused our request: request_vote")],
            ) == 1
        });
        // Its pre-votes (thesis §9.6) all fail, so its term never rises.
        assert_eq!(stray_term, 0, "the stray took a term without a majority");
        if log.matches("pre-vote lost for term 1").count() >= 3 && all_refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stray did not campaign:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cluster kept its leader and term, and each node said once why it
    // refused the stray.
    assert_eq!(c.wait_for_agreed_leader(&c.ids(), WAIT), (leader, term));
    for id in c.ids() {
        let log = c.activity_log(id);
        assert_eq!(
            count_lines(
                &log,
                &["request_vote from node3 of cluster", "same configuration"]
            ),
            1,
            "node{id}:\n{log}"
        );
    }
    drop(stray);
}
