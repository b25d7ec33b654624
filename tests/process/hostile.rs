//! The hostile-input run, shared by tests/hostile.rs (plain TCP) and
//! tests/tls.rs (the same against a cluster run with `--tls`): what a
//! socket can send a real cluster, and what the nodes make of it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Output;

use raft::consensus::NodeId;
use raft::tls::Stream;

use super::{TestCluster, WAIT, leaders};

/// How a run connects: `open(address, as_node)` gives a kept-open line
/// to `address`, with node `as_node`'s identity where TLS needs one (a
/// peer message counts only from the node its certificate names);
/// `raftctl` runs raftctl on the cluster.
pub struct Connector<'a> {
    pub open: &'a dyn Fn(&str, Option<NodeId>) -> Line,
    pub raftctl: &'a dyn Fn(&TestCluster, &[&str]) -> Output,
    /// The cluster runs with `--tls`: a peer message from an id no
    /// certificate names (node99) is refused before Raft sees it.
    pub tls: bool,
}

/// One kept-open connection, as `nc` gives.
pub struct Line {
    reader: BufReader<Stream>,
    pub writer: Stream,
}

impl Line {
    /// A plain TCP line.
    pub fn open(address: &str) -> Line {
        let stream = TcpStream::connect(address).unwrap();
        Line::over(Stream::Plain(stream))
    }

    /// A line over `stream` (plain or TLS, already connected).
    pub fn over(stream: Stream) -> Line {
        stream.tcp().set_read_timeout(Some(WAIT)).unwrap();
        Line {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    /// Sends `text` (a newline is added) and returns the answer line.
    pub fn ask(&mut self, text: &str) -> serde_json::Value {
        self.writer
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        self.reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
    }

    /// Sends `text` `times` times, checks every answer is an error with
    /// `code`, and returns the first answer's message.
    pub fn refused(&mut self, text: &str, times: usize, code: &str) -> String {
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
pub fn count_lines(log: &str, words: &[&str]) -> usize {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// Sends a running 3-node cluster `c` everything below; every node must
/// stay up, answer each line with an error (or close the connection),
/// change nothing, and log each kind of problem once.
pub fn nothing_a_socket_sends_crashes_or_starves_a_node(c: &mut TestCluster, on: &Connector) {
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
    let mut f = (on.open)(&address(follower), Some(leader));
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
    let mut l = (on.open)(&address(leader), Some(follower));
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
    let mut stranger = (on.open)(&address(leader), None);
    for _ in 0..times {
        let r = stranger.ask(&forged(99, 1 << 40));
        if on.tls {
            assert_eq!(r["code"], "unauthenticated", "{r}");
        } else {
            assert_eq!(r["vote_granted"], false, "{r}");
        }
    }
    let mut t = (on.open)(&address(leader), Some(third));
    let m = t.refused(&forged(third, u64::MAX), times, "rejected");
    assert!(m.contains("largest allowed"), "{m}");

    // 4. A node of another cluster.
    let foreign = forged(third, term + 5).replace(&cluster, "0123456789abcdef");
    let m = t.refused(&foreign, times, "wrong_cluster");
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
        // A TLS node refuses these plain bytes at the first one, and
        // closes: the rest cannot be sent.
        if let Err(e) = cut.write_all(&chunk) {
            assert!(on.tls, "{e}");
            break;
        }
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
    let out = (on.raftctl)(c, &["status", "--json", "--timeout", "1000"]);
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
    let out = (on.raftctl)(c, &["put", "after", "all that"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = (on.raftctl)(c, &["get", "after"]);
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
        on.tls || count_lines(&l_log, &["refused to node99", "we lead this term"]) >= 1,
        "{l_log}"
    );
    assert_eq!(
        count_lines(&l_log, &["adopted term", "node99"]),
        0,
        "{l_log}"
    );
}
