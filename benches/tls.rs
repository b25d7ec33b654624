//! What TLS costs, measured on real processes in one run (3 nodes on
//! 127.0.0.1, default timings, data in temp dirs):
//!
//!     cargo bench --bench tls -- [--clients 1,16,64] [--seconds 5] [--handshakes 300]
//!
//! * writes and linearizable reads per second, and their median and 99th
//!   percentile latency, from `raftctl bench` with `--clients` closed-loop
//!   clients, against a plain cluster and against the same cluster
//!   started with `--tls` (certificates from `raftctl tls init`);
//! * the cost of a new connection (what every `raftctl` command pays
//!   once): TCP connect, the TLS handshake with both certificates checked,
//!   and one `is_leader` request, against the same with plain TCP.
//!
//! Not part of CI.

#[path = "../tests/process/mod.rs"]
mod process;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use process::{RAFTCTL, TestCluster};
use raft::tls::{Stream, Tls, TlsFiles, node_name};
use serde_json::Value;

fn raftctl(c: &TestCluster, tls: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(RAFTCTL);
    cmd.arg("--config").arg(&c.config_path);
    if let Some(dir) = tls {
        cmd.arg("--tls").arg(dir);
    }
    cmd.args(args).output().unwrap()
}

fn start(tls: Option<&Path>) -> TestCluster {
    let mut c = TestCluster::new(3);
    c.args.clear(); // production timings
    if let Some(dir) = tls {
        c.args.extend(["--tls".into(), dir.display().to_string()]);
    }
    c.start_all();
    let deadline = Instant::now() + process::WAIT;
    while !raftctl(&c, tls, &["put", "warm", "up"]).status.success() {
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(100));
    }
    c
}

/// `raftctl bench`'s JSON report.
fn bench(c: &TestCluster, tls: Option<&Path>, clients: usize, seconds: u64, reads: bool) -> Value {
    let (clients, seconds) = (clients.to_string(), seconds.to_string());
    let mut args = vec![
        "bench",
        "--clients",
        &clients,
        "--seconds",
        &seconds,
        "--json",
    ];
    if reads {
        args.push("--reads");
    }
    let out = raftctl(c, tls, &args);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Microseconds per new connection (connect, handshake if `tls`, one
/// `is_leader` answered), over `n`, as (median, mean).
fn connections(c: &TestCluster, tls: Option<&Tls>, n: usize) -> (f64, f64) {
    let mut took: Vec<f64> = (0..n)
        .map(|_| {
            let started = Instant::now();
            let tcp = TcpStream::connect(c.address(0)).unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut s = match tls {
                Some(tls) => tls.connect(tcp, &node_name(0)).unwrap(),
                None => Stream::Plain(tcp),
            };
            s.write_all(b"{\"type\":\"is_leader\"}\n").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            assert!(line.contains("is_leader"), "{line}");
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    took.sort_by(f64::total_cmp);
    (took[n / 2], took.iter().sum::<f64>() / n as f64)
}

fn main() {
    let clients: Vec<usize> = process::arg("--clients")
        .unwrap_or_else(|| "1,16,64".into())
        .split(',')
        .map(|c| c.parse().expect("--clients N,N"))
        .collect();
    let seconds = process::arg("--seconds").map_or(5, |s| s.parse().expect("--seconds S"));
    let handshakes =
        process::arg("--handshakes").map_or(300, |s| s.parse().expect("--handshakes N"));

    // Certificates for nodes 0..2 on 127.0.0.1, whatever their ports.
    let certs = tempfile::tempdir().unwrap();
    let config = certs.path().join("config.txt");
    std::fs::write(&config, "0 127.0.0.1 1\n1 127.0.0.1 2\n2 127.0.0.1 3\n").unwrap();
    let dir: PathBuf = certs.path().join("tls");
    let out = Command::new(RAFTCTL)
        .arg("--config")
        .arg(&config)
        .args(["tls", "init", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    println!(
        "{:<10} {:>8} {:>10} {:>12} {:>9} {:>9}",
        "cluster", "clients", "workload", "ops/s", "p50 ms", "p99 ms"
    );
    let mut table = Vec::new();
    for (name, tls) in [("plain", None), ("tls", Some(dir.as_path()))] {
        let c = start(tls);
        for &n in &clients {
            for reads in [false, true] {
                let r = bench(&c, tls, n, seconds, reads);
                let workload = if reads { "reads" } else { "writes" };
                let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
                println!(
                    "{name:<10} {n:>8} {workload:>10} {:>12.0} {:>9.2} {:>9.2}",
                    f(&r["ops_per_second"]),
                    f(&r["latency_ms"]["p50"]),
                    f(&r["latency_ms"]["p99"])
                );
                table.push((
                    name,
                    n,
                    workload,
                    r["ops_per_second"].as_f64().unwrap_or(0.0),
                ));
            }
        }
        if tls.is_none() {
            let (median, mean) = connections(&c, None, handshakes);
            println!(
                "new plain connection + is_leader: median {median:.0} µs, mean {mean:.0} µs ({handshakes})"
            );
        } else {
            let client = Tls::for_client(&TlsFiles::client(&dir)).unwrap();
            let (median, mean) = connections(&c, Some(&client), handshakes);
            println!(
                "new TLS connection (handshake, both certificates checked) + is_leader: median {median:.0} µs, mean {mean:.0} µs ({handshakes})"
            );
        }
    }
    println!("TLS as a fraction of plain, same run:");
    for &(name, n, workload, ops) in table.iter().filter(|t| t.0 == "tls") {
        let plain = table
            .iter()
            .find(|t| t.0 == "plain" && t.1 == n && t.2 == workload)
            .map_or(0.0, |t| t.3);
        let _ = name;
        println!("  {workload:>6} at {n:>2} clients: {:.2}", ops / plain);
    }
}
