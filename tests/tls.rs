//! A cluster run with `--tls` (issue 23): real processes, certificates from
//! `raftctl tls init`. It elects, replicates, survives a `kill -9` of its
//! leader and serves raftctl; and what it must refuse (a certificate from
//! another authority, one naming another node, an expired one, plain TCP
//! from a client or a peer) is refused, logged once, and changes nothing.
//!
//! Every cluster here uses one set of certificates: they name the nodes'
//! ids and 127.0.0.1, not ports, and this test process connects (for its
//! status checks) with one identity, as any process does (`tls::dial`).

mod process;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use process::{Killed, RAFTCTL, TestCluster, WAIT};
use raft::tls::certs::Authority;
use raft::tls::{Tls, TlsFiles, node_name};
use serde_json::Value;

/// The certificates of every cluster in this file (nodes 0 to 4 on
/// 127.0.0.1, and a client), made once per run by `raftctl tls init`
/// in target/tmp; this process connects with the client's.
fn certificates() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Left by runs that are over (their process is gone).
        for old in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let name = old.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("tls-certs-")
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        let dir = base.join(format!("tls-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.txt");
        let nodes: String = (0..5)
            .map(|i| format!("{i} 127.0.0.1 {}\n", 1 + i))
            .collect();
        std::fs::write(&config, nodes).unwrap();
        let out = Command::new(RAFTCTL)
            .arg("--config")
            .arg(&config)
            .args(["tls", "init", "--out"])
            .arg(dir.join("tls"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let tls = Tls::for_client(&TlsFiles::client(&dir.join("tls"))).unwrap();
        raft::tls::connect_with(tls).unwrap();
        dir.join("tls")
    })
}

/// `n` nodes started with `--tls`.
fn tls_cluster(n: usize) -> TestCluster {
    let dir = certificates().display().to_string();
    let mut c = TestCluster::new(n);
    c.args.extend(["--tls".to_string(), dir]);
    c.start_all();
    c
}

/// raftctl with `--tls`; exit code, stdout, stderr.
fn raftctl(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .arg("--tls")
        .arg(certificates())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn ok(c: &TestCluster, args: &[&str]) -> String {
    let (code, out, err) = raftctl(c, args);
    assert_eq!(code, 0, "raftctl {args:?}: {err}");
    out
}

#[test]
fn a_tls_cluster_elects_replicates_survives_a_leader_kill_and_serves_raftctl() {
    let mut c = tls_cluster(3);
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    ok(&c, &["put", "color", "blue"]);
    assert_eq!(ok(&c, &["get", "color"]), "blue\n");
    ok(&c, &["put", "app/1", "x"]);
    assert_eq!(
        ok(&c, &["get", "app/", "--prefix", "--keys-only"]),
        "app/1\n"
    );
    ok(&c, &["cas", "color", "blue", "green"]);
    let index: u64 = ok(&c, &["append", "note"]).trim().parse().unwrap();
    assert!(ok(&c, &["log"]).contains("note"));
    assert!(ok(&c, &["status"]).contains("leader"));
    assert!(ok(&c, &["members"]).contains("voter"));
    assert!(ok(&c, &["leader"]).starts_with(&leader.to_string()));
    assert!(ok(&c, &["snapshot"]).contains("node0"));
    let backup = c.dir.path().join("backup.db");
    assert!(ok(&c, &["snapshot", "save", backup.to_str().unwrap()]).contains("2 keys"));
    // watch follows until stopped: read until the change shows.
    let mut watch = Command::new(RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .arg("--tls")
        .arg(certificates())
        .args(["watch", "color", "--from", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = BufReader::new(watch.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("green"));
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.is_some(), "watch ended without the change");
    ok(&c, &["delete", "app/", "--prefix"]);
    let events = ok(&c, &["events"]);
    assert!(events.contains("election won"), "{events}");

    // A crash of the leader: a new one, and the data is there.
    c.sigkill(leader);
    let others: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let (new, new_term) = c.wait_for_agreed_leader(&others, WAIT);
    assert!(new != leader && new_term > term);
    assert_eq!(ok(&c, &["get", "color"]), "green\n");
    let after: u64 = ok(&c, &["append", "after"]).trim().parse().unwrap();
    assert!(after > index);
    c.start(leader);
    c.wait_for_converged();

    // Without --tls, raftctl is told why it gets nothing.
    let out = Command::new(RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .args(["get", "color"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("requires TLS"), "{err}");
}

/// A raw connection to `c`'s node `id`: one line sent, the answer line.
fn plain_ask(c: &TestCluster, id: u64, line: &str) -> Value {
    let mut s = TcpStream::connect(c.address(id)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
}

/// Files for a party with `issued`, trusting `ca_pem`, in `dir`.
fn party(dir: &Path, who: &str, ca_pem: &str, issued: &raft::tls::certs::Issued) -> TlsFiles {
    let put = |name: String, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    TlsFiles {
        ca: put(format!("{who}-ca.pem"), ca_pem),
        cert: put(format!("{who}.pem"), &issued.cert_pem),
        key: put(format!("{who}-key.pem"), &issued.key_pem),
    }
}

/// A RequestVote from node `from` of `c`, as a line.
fn vote_request(c: &TestCluster, from: u64, term: u64) -> String {
    serde_json::json!({
        "type": "request_vote", "cluster": c.config.derived_cluster_id(), "from": from,
        "term": term, "candidate_id": from, "last_log_index": 1000, "last_log_term": term,
        "pre_vote": false, "disregard_lease": true,
    })
    .to_string()
}

/// Sends `line` three times over TLS as `tls` to `c`'s node 0; each
/// attempt on a new connection, as a retrying peer would. The answers
/// (`None`: the connection failed).
fn tls_attempts(c: &TestCluster, tls: &Tls, line: &str) -> Vec<Option<Value>> {
    (0..3)
        .map(|_| {
            let tcp = TcpStream::connect(c.address(0)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut s = tls.connect(tcp, &node_name(0)).ok()?;
            s.write_all(format!("{line}\n").as_bytes()).ok()?;
            let mut answer = String::new();
            BufReader::new(s).read_line(&mut answer).ok()?;
            serde_json::from_str(&answer).ok()
        })
        .collect()
}

/// Lines of node 0's activity log that contain `text`.
fn logged(c: &TestCluster, text: &str) -> Vec<String> {
    c.activity_log(0)
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_string)
        .collect()
}

/// Waits until node 0 has logged `text` once, and checks it is once.
fn logged_once(c: &TestCluster, text: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = logged(c, text);
        if !lines.is_empty() {
            assert_eq!(lines.len(), 1, "logged more than once: {lines:#?}");
            eprintln!("node0 logged: {}", lines[0]);
            return lines[0].clone();
        }
        assert!(Instant::now() < deadline, "node0 never logged {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn strangers_expired_certificates_impostors_and_plain_tcp_are_refused_and_change_nothing() {
    let c = tls_cluster(3);
    let (leader, term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    let dir = c.dir.path();
    let ca = std::fs::read_to_string(certificates().join("ca.pem")).unwrap();

    // A node whose certificate another authority signed.
    let other = Authority::new("another cluster").unwrap();
    let stranger = party(dir, "stranger", &ca, &other.node(2, "127.0.0.1").unwrap());
    let answers = tls_attempts(
        &c,
        &Tls::for_node(&stranger, 2, false).unwrap(),
        &vote_request(&c, 2, term + 5),
    );
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    logged_once(&c, "not signed by this cluster's authority");

    // Node 1's own certificate, used to speak for node 2. (The
    // authority's key is needed to make one: the one `tls init` wrote.)
    let key = std::fs::read_to_string(certificates().join("ca-key.pem")).unwrap();
    let authority = Authority::from_pem(&ca, &key).unwrap();
    let node1 = party(dir, "node1", &ca, &authority.node(1, "127.0.0.1").unwrap());
    let answers = tls_attempts(
        &c,
        &Tls::for_node(&node1, 1, false).unwrap(),
        &vote_request(&c, 2, term + 5),
    );
    for a in &answers {
        let a = a.as_ref().expect("an answer");
        assert_eq!(
            (a["type"].as_str(), a["code"].as_str()),
            (Some("error"), Some("unauthenticated")),
            "{a}"
        );
    }
    logged_once(
        &c,
        "claiming node2 on a connection whose certificate does not name it",
    );

    // An expired certificate from the right authority.
    let expired = party(
        dir,
        "expired",
        &ca,
        &authority.node_valid(2, "127.0.0.1", (-400, -35)).unwrap(),
    );
    let answers = tls_attempts(
        &c,
        &Tls::for_node(&expired, 2, false).unwrap(),
        &vote_request(&c, 2, term + 5),
    );
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    logged_once(&c, "expired");

    // Plain TCP: a client's request and a peer's.
    for line in [
        r#"{"type":"status"}"#.to_string(),
        vote_request(&c, 2, term + 5),
    ] {
        for _ in 0..3 {
            let a = plain_ask(&c, 0, &line);
            assert_eq!(a["code"], "unauthenticated", "{a}");
            assert!(
                a["message"].as_str().unwrap().contains("requires TLS"),
                "{a}"
            );
        }
    }
    logged_once(&c, "refused a plain connection (this node requires TLS)");

    // None of it moved the cluster: same leader, same term, and it works.
    let (now, now_term) = c.wait_for_agreed_leader(&c.ids(), WAIT);
    assert_eq!((now, now_term), (leader, term));
    ok(&c, &["put", "still", "here"]);
    assert_eq!(ok(&c, &["get", "still"]), "here\n");
}

/// `TLS=1 ./boot_all_nodes.sh`: certificates made on first start (in
/// STATE_DIR/tls), a TLS cluster booted, the script's status and raftctl
/// with `--tls` work, and a second start keeps the certificates.
#[test]
fn boot_all_nodes_with_tls_makes_certificates_and_boots_a_tls_cluster() {
    let c = TestCluster::new(3);
    let script = |action: &str| {
        let bin_dir = Path::new(process::RAFTNODE).parent().unwrap();
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/boot_all_nodes.sh"))
            .arg(action)
            .arg(&c.config_path)
            .env("STATE_DIR", c.state_dir())
            .env("DEBUG_DIR", c.debug_dir())
            .env("RAFT_BIN_DIR", bin_dir)
            .env("RAFTNODE_ARGS", process::TEST_TIMING.join(" "))
            .env("TLS", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{action}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    struct Reaper(PathBuf);
    impl Drop for Reaper {
        fn drop(&mut self) {
            process::kill_nodes_of(&self.0);
        }
    }
    let _reaper = Reaper(c.state_dir());
    let started = script("start");
    assert!(
        started.contains("made a certificate authority"),
        "{started}"
    );
    let tls = c.state_dir().join("tls");
    let ctl = |args: &[&str]| {
        Command::new(RAFTCTL)
            .arg("--config")
            .arg(&c.config_path)
            .env("RAFT_TLS", &tls)
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + WAIT;
    while !ctl(&["put", "k", "v"]).status.success() {
        assert!(Instant::now() < deadline, "no TLS cluster answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(String::from_utf8_lossy(&ctl(&["get", "k"]).stdout), "v\n");
    let status = script("status");
    assert!(status.contains("leader"), "{status}");
    let ca = std::fs::read(tls.join("ca.pem")).unwrap();
    assert!(!script("start").contains("made a certificate authority"));
    assert_eq!(std::fs::read(tls.join("ca.pem")).unwrap(), ca, "kept");
    assert_eq!(script("stop").matches("stopped node").count(), 3);
}

/// docs/raftnode@.service: `systemd-analyze verify` finds nothing to say
/// about it (a misspelt key or value is only a warning there, so any
/// output fails the test), and its ExecStart line, with the paths moved
/// into a temp dir, starts a node that serves over TLS.
#[test]
fn the_systemd_unit_verifies_and_its_command_line_starts_a_node() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/raftnode@.service"
    ))
    .unwrap();
    let c = TestCluster::new(1);
    let state = c.dir.path().join("state");
    let logs = c.dir.path().join("log");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let line = exec
        .replace("/usr/local/bin/raftnode", process::RAFTNODE)
        .replace("/etc/raft/config.txt", c.config_path.to_str().unwrap())
        .replace("%i", "0")
        .replace("/var/lib/raft", state.to_str().unwrap())
        .replace("/var/log/raft", logs.to_str().unwrap())
        .replace("/etc/raft/tls", certificates().to_str().unwrap());
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut node = Killed(
        Command::new(words[0])
            .args(&words[1..])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(node.0.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("node0 listening on"), "{first}");
    let deadline = Instant::now() + WAIT;
    while raftctl(&c, &["put", "k", "v"]).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the unit's node never took a write"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "systemd-analyze is not installed (Debian's systemd package has it): the unit was not verified"
        );
        return;
    };
    assert!(version.status.success());
    // The binary where the unit expects it, for verify's check that it exists.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raftnode@0.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/raftnode", process::RAFTNODE),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// tests/hostile.rs's run against a cluster run with `--tls`: every line
/// goes over TLS, each peer message with the certificate of the node it
/// claims to come from (one from node99, which no certificate names, is
/// refused before Raft sees it).
#[test]
fn nothing_a_tls_socket_sends_crashes_or_starves_a_node() {
    use process::hostile::{Connector, Line};
    let mut c = tls_cluster(3);
    let dir = certificates();
    let open = |address: &str, as_node: Option<u64>| {
        let tls = match as_node {
            Some(id) => Tls::for_node(&TlsFiles::node(dir, id), id, false).unwrap(),
            None => Tls::for_client(&TlsFiles::client(dir)).unwrap(),
        };
        let tcp = TcpStream::connect(address).unwrap();
        Line::over(tls.connect(tcp, "127.0.0.1").unwrap())
    };
    let raftctl = |c: &TestCluster, args: &[&str]| {
        Command::new(RAFTCTL)
            .arg("--config")
            .arg(&c.config_path)
            .arg("--tls")
            .arg(dir)
            .args(args)
            .output()
            .unwrap()
    };
    process::hostile::nothing_a_socket_sends_crashes_or_starves_a_node(
        &mut c,
        &Connector {
            open: &open,
            raftctl: &raftctl,
            tls: true,
        },
    );
}

/// A server added to a TLS cluster: `raftctl tls add` issues its
/// certificate from the authority `tls init` wrote, it joins with
/// `--tls`, and `raftctl add` makes it a voter; a server without a
/// certificate of its own cannot even start with `--tls`.
#[test]
fn a_server_with_a_certificate_from_tls_add_joins_a_tls_cluster() {
    // This cluster's own copy of the authority, without node 3's files.
    let mut c = TestCluster::with_spares(3, 1);
    let dir = c.dir.path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    for id in 0..3 {
        for name in [format!("node{id}.pem"), format!("node{id}-key.pem")] {
            std::fs::copy(certificates().join(&name), dir.join(&name)).unwrap();
        }
    }
    for name in ["ca.pem", "ca-key.pem", "client.pem", "client-key.pem"] {
        std::fs::copy(certificates().join(name), dir.join(name)).unwrap();
    }
    c.args
        .extend(["--tls".to_string(), dir.display().to_string()]);
    c.start_all();
    c.wait_for_agreed_leader(&c.ids(), WAIT);

    let out = Command::new(process::RAFTNODE)
        .args(["--join", &c.address(0), "3", &c.address(3)])
        .arg("--tls")
        .arg(&dir)
        .arg("--state-dir")
        .arg(c.dir.path().join("nocert"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node3.pem"),
        "{out:?}"
    );

    let out = Command::new(RAFTCTL)
        .args(["tls", "add", "3", "127.0.0.1", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.join("node3.pem").exists() && dir.join("node3-key.pem").exists());
    c.start_joining(3, 0);
    let address = c.address(3);
    let (code, out, err) = raftctl(&c, &["add", "3", &address]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node3 promoted to voter"), "{out}");
    c.wait_for_agreed_leader(&[0, 1, 2, 3], WAIT);
}

/// `raftctl --tls DIR web` follows a TLS cluster (its own connections to
/// the nodes are TLS) while the page is served on loopback, plain HTTP:
/// the page's stream carries the nodes' statuses.
#[test]
fn raftctl_web_follows_a_tls_cluster() {
    use std::io::Read;
    let c = tls_cluster(3);
    c.wait_for_agreed_leader(&c.ids(), WAIT);
    let mut web = Killed(
        Command::new(RAFTCTL)
            .arg("--config")
            .arg(&c.config_path)
            .arg("--tls")
            .arg(certificates())
            .args(["web", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut url = String::new();
    BufReader::new(web.0.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let address = url
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&address).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET /stream HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Every node's status, as the nodes send it over TLS.
    let statuses = |seen: &[u8]| -> std::collections::BTreeSet<u64> {
        String::from_utf8_lossy(seen)
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["type"] == "status")
            .filter_map(|m| m["status"]["id"].as_u64())
            .collect()
    };
    while statuses(&seen).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&seen)
        );
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}
