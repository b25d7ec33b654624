//! `raftctl check` as a user runs it: against a lab cluster booted by
//! boot_all_nodes.sh, healthy and deliberately broken
//! (`--unsafe-local-reads`); on saved histories with `--replay`; and its
//! `--html` page in headless Chromium.

mod process;

use std::path::Path;
use std::process::{Command, Output};

use process::RAFTCTL;
use process::booted::Booted;
use process::browser::Browser;
use raft::check::history::History;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `raftctl check` against `booted` with `args`.
fn check(booted: &Booted, args: &[&str]) -> Output {
    Command::new(RAFTCTL)
        .arg("--config")
        .arg(&booted.config_path)
        .arg("check")
        .arg("--state-dir")
        .arg(booted.state_dir())
        .arg("--debug-dir")
        .arg(booted.debug_dir())
        .args(args)
        .output()
        .unwrap()
}

/// Every node answers, none is cut off, and one leads with all following.
fn assert_healed(booted: &Booted) {
    let config = raft::config::load(&booted.config_path).unwrap();
    let settled = (0..300).any(|_| {
        let all = raft::client::status_all(&config, std::time::Duration::from_secs(1));
        let ok: Vec<_> = all.iter().filter_map(|s| s.status.as_ref().ok()).collect();
        let leaders = ok.iter().filter(|s| s.role == "leader").count();
        let done = ok.len() == all.len() && leaders == 1 && ok.iter().all(|s| !s.isolated);
        if !done {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        done
    });
    assert!(settled, "the check left the cluster broken");
}

#[test]
fn a_healthy_lab_cluster_passes_a_check_with_every_fault() {
    let booted = Booted::start(3);
    let dir = booted.dir.path();
    let (history, page) = (dir.join("h.jsonl"), dir.join("run.html"));
    let out = check(
        &booted,
        &[
            "--seconds",
            "16",
            "--faults",
            "kill,pause,cut,restart,transfer",
            "--history",
            history.to_str().unwrap(),
            "--html",
            page.to_str().unwrap(),
        ],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("LINEARIZABLE: every key's history"), "{said}");
    // A progress line each second, the faults with their times, and the
    // checker's work.
    let progress = said.lines().filter(|l| l.contains("| leader: ")).count();
    assert!(progress >= 14, "{said}");
    assert!(said.contains("checker: "), "{said}");
    let h = History::load(&history).unwrap();
    assert!(!h.faults.is_empty(), "{said}");
    // The lab's own actions all worked; only a transfer may be refused
    // by the cluster (a target that could not take over in time).
    assert!(
        h.faults
            .iter()
            .all(|f| !f.what.contains("failed") || f.kind == "transfer"),
        "{said}"
    );
    let ok = h
        .ops
        .iter()
        .filter(|o| o.outcome == raft::check::history::Outcome::Ok)
        .count();
    assert!(ok > 500, "only {ok} operations completed: {said}");
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .contains("Linearizable")
    );
    assert_healed(&booted);
}

/// The deliberately broken build: reads answered from each node's own
/// store, without ReadIndex. A node cut off keeps answering them with
/// what it had, while the others move on: the check must say so.
#[test]
fn a_cluster_that_reads_without_read_index_is_caught_with_a_stale_read() {
    let booted = Booted::start_with(3, "--unsafe-local-reads");
    let out = check(&booted, &["--seconds", "20", "--faults", "cut"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("NOT LINEARIZABLE"), "{said}");
    // The story, then its operations, then where the history is.
    assert!(said.contains("Stale read: client "), "{said}");
    assert!(
        said.contains("The operations (times from the start"),
        "{said}"
    );
    let saved = said
        .lines()
        .find_map(|l| l.strip_prefix("history: "))
        .unwrap_or_else(|| panic!("no history saved: {said}"));
    assert!(saved.starts_with(booted.debug_dir().to_str().unwrap()));
    // Checked again, the saved history gives the same verdict.
    let again = Command::new(RAFTCTL)
        .args(["check", "--replay", saved])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("Stale read: client "));
    assert_healed(&booted);
}

#[test]
fn a_cluster_without_lab_nodes_is_not_touched_and_the_user_is_told_what_to_run() {
    let mut c = process::TestCluster::new(3);
    c.start_all();
    let out = Command::new(RAFTCTL)
        .arg("--config")
        .arg(&c.config_path)
        .args(["check", "--seconds", "1", "--state-dir"])
        .arg(c.state_dir())
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("RAFTNODE_ARGS=--lab ./boot_all_nodes.sh"),
        "{said}"
    );
    assert!(said.contains("node0"), "{said}");
}

/// A history file: one run line, then operations, as `raftctl check`
/// saves them (times in µs).
fn history_file(dir: &Path, name: &str, ops: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut text = String::from(
        r#"{"type":"run","nodes":[0,1,2],"clients":3,"keys":1,"faults":["cut"],"seconds":1,"config":"config.txt"}"#,
    );
    text.push('\n');
    text.push_str(
        r#"{"type":"role","node":0,"at":0,"role":"leader","term":2,"leader":0}
{"type":"role","node":1,"at":0,"role":"follower","term":2,"leader":0}
{"type":"role","node":2,"at":0,"role":"follower","term":2,"leader":0}
{"type":"role","node":2,"at":400000,"role":"follower","term":2,"leader":0,"isolated":true}
{"type":"fault","kind":"cut","nodes":[2],"start":400000,"end":900000,"what":"node2 cut off from the others, reconnected"}
"#,
    );
    for op in ops {
        text.push_str(op);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn replay(file: &Path, extra: &[&str]) -> Output {
    Command::new(RAFTCTL)
        .args(["check", "--replay"])
        .arg(file)
        .args(extra)
        .output()
        .unwrap()
}

const PUT_A: &str = r#"{"type":"op","client":0,"outcome":"ok","node":0,"end":110000,"key":"k0","op":{"kind":"put","value":"a"},"call":100000,"ret":110000}"#;
const PUT_B: &str = r#"{"type":"op","client":1,"outcome":"ok","node":0,"end":510000,"key":"k0","op":{"kind":"put","value":"b"},"call":500000,"ret":510000}"#;
const STALE_GET: &str = r#"{"type":"op","client":2,"outcome":"ok","node":2,"end":610000,"key":"k0","op":{"kind":"get","value":"a"},"call":600000,"ret":610000}"#;
const FRESH_GET: &str = r#"{"type":"op","client":2,"outcome":"ok","node":0,"end":610000,"key":"k0","op":{"kind":"get","value":"b"},"call":600000,"ret":610000}"#;
const LOST_PUT: &str = r#"{"type":"op","client":2,"outcome":"unknown","end":700000,"error":"no answer in time","key":"k0","op":{"kind":"put","value":"c"},"call":650000}"#;

/// `ops`, then ten writes to another key (enough completed operations
/// to judge) and a write to k0 with no answer.
fn with_filler(ops: &[&str]) -> Vec<String> {
    let filler = (0..10).map(|i| {
        let t = 1_000_000 + i * 10_000;
        format!(
            r#"{{"type":"op","client":0,"outcome":"ok","end":{},"key":"k1","op":{{"kind":"put","value":"f{i}"}},"call":{t},"ret":{}}}"#,
            t + 5_000,
            t + 5_000
        )
    });
    ops.iter()
        .map(|s| s.to_string())
        .chain(filler)
        .chain([LOST_PUT.to_string()])
        .collect()
}

#[test]
fn a_saved_history_is_checked_again_with_a_verdict_an_exit_status_and_a_story() {
    let dir = tempfile::tempdir().unwrap();
    let with = with_filler;
    let good = with(&[PUT_A, PUT_B, FRESH_GET]);
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let out = replay(&history_file(dir.path(), "good.jsonl", &good), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("LINEARIZABLE"));
    assert!(text(&out).contains("node2 cut off"), "{}", text(&out));

    let bad = with(&[PUT_A, PUT_B, STALE_GET]);
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let out = replay(&history_file(dir.path(), "bad.jsonl", &bad), &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "Stale read: client 2 read k0 = a at 0.600 s from node2, after client 1's write k0 = b \
             was acknowledged at 0.510 s; that one began at 0.500 s, after a had been written \
             (acknowledged at 0.110 s)."
        ),
        "{said}"
    );
    // Exactly the three operations, none of the filler.
    let story: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("  0.") && l.contains(" client "))
        .collect();
    assert_eq!(story.len(), 3, "{said}");
    assert!(!said.contains("= f3"), "{said}");

    // Too little to judge: exit 3, saying why.
    let out = replay(&history_file(dir.path(), "few.jsonl", &[PUT_A]), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("too few to judge"), "{}", text(&out));

    // Not a history: exit 2, naming the line.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        format!("{{\"type\":\"run\"}}\n{PUT_A}\n{{\"type\":\"op\"\n"),
    )
    .unwrap();
    let out = replay(&broken, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 3"), "{}", text(&out));
}

/// The page: a lane per client and per node, the fault shaded, the
/// anomaly's three operations outlined and drawn again close up; read
/// with no network (it is one file).
#[test]
fn the_html_page_draws_lanes_for_clients_and_nodes_and_outlines_the_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let ops = with_filler(&[PUT_A, PUT_B, STALE_GET]);
    let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
    let file = history_file(dir.path(), "bad.jsonl", &ops);
    let page = dir.path().join("check.html");
    let out = replay(&file, &["--html", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        ["src=", "href=", "url(", "<link", "<script", "@import"]
            .iter()
            .all(|t| !html.contains(t)),
        "the page must need nothing from outside"
    );
    let browser = Browser::start();
    browser.goto(&format!("file://{}", page.display()));
    let seen = browser.eval(
        r#"const whole = document.getElementById("timeline");
           const close = document.getElementById("anomaly");
           return {
             verdict: document.getElementById("verdict").textContent,
             clients: whole.querySelectorAll(".lane.client").length,
             nodes: whole.querySelectorAll(".lane.node").length,
             faults: whole.querySelectorAll("rect.fault").length,
             outlined: whole.querySelectorAll("rect.anomaly").length,
             close_up: close.querySelectorAll("rect.anomaly").length,
             cut: whole.querySelectorAll(".lane.node[data-node='2'] rect[stroke-dasharray]").length,
             unknown: whole.querySelectorAll("rect.op[fill='#e8a33d']").length,
             lane_width: whole.querySelector(".lane.client").getBBox().width,
           };"#,
    );
    assert!(
        seen["verdict"]
            .as_str()
            .unwrap()
            .starts_with("Not linearizable"),
        "{seen}"
    );
    assert_eq!(seen["clients"], 3, "{seen}");
    assert_eq!(seen["nodes"], 3, "{seen}");
    assert_eq!(seen["faults"], 1, "{seen}");
    assert_eq!(seen["outlined"], 3, "{seen}");
    assert_eq!(seen["close_up"], 3, "{seen}");
    assert_eq!(seen["cut"], 1, "{seen}");
    assert_eq!(seen["unknown"], 1, "{seen}");
    assert!(seen["lane_width"].as_f64().unwrap() > 500.0, "{seen}");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-page.png");
    browser.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());
}
