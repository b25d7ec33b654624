//! Side by side with etcd, on this machine, in one run: a 3-node etcd
//! cluster and a 3-node cluster of ours on 127.0.0.1, data of both in temp
//! dirs on the same filesystem, driven by the same closed-loop load
//! generator (`raft::bench::closed_loop`) with 100-byte values.
//!
//!     benches/compare.sh                  # installs etcd-server if missing
//!     cargo bench --bench compare -- [--clients 1,16,64,256] [--seconds 10]
//!
//! etcd is spoken to through its JSON gateway (`POST /v3/kv/put`,
//! `/v3/kv/range`, linearizable by default), one kept-open HTTP/1.1
//! connection per client, sent to etcd's leader (its best case: a
//! follower would forward). Ours through the client library, which finds
//! the leader. Writes are acknowledged by both only once committed on a
//! majority's disks (etcd fsyncs its WAL; so do we). Not part of CI.

#[path = "../tests/process/mod.rs"]
mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use process::{Ports, TestCluster, reserve_ports};
use raft::bench::{BenchReport, KEYS, Operation, closed_loop, key};
use raft::client::{Client, ClientOptions};

/// One kept-open HTTP/1.1 connection.
struct Http {
    host: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Http {
    fn connect(address: &str) -> Result<Http, String> {
        let stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        Ok(Http {
            host: address.to_string(),
            writer: stream.try_clone().map_err(|e| e.to_string())?,
            reader: BufReader::new(stream),
        })
    }

    /// POSTs a JSON body; returns the response body of a 200.
    fn post(&mut self, path: &str, body: &str) -> Result<String, String> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.writer
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut status = String::new();
        self.reader
            .read_line(&mut status)
            .map_err(|e| e.to_string())?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(|_| "bad length".to_string())?;
            }
        }
        let mut body = vec![0; length];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| e.to_string())?;
        let body = String::from_utf8(body).map_err(|e| e.to_string())?;
        if !status.contains(" 200 ") {
            return Err(format!("{}: {body}", status.trim()));
        }
        Ok(body)
    }
}

/// Standard base64 (etcd's JSON gateway takes keys and values so).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A 3-node etcd cluster in a temp dir, killed when dropped.
struct Etcd {
    children: Vec<Child>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
    _ports: Ports,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let reserved = reserve_ports(6);
        let ports = &reserved.ports;
        let peer = |k: usize| format!("http://127.0.0.1:{}", ports[3 + k]);
        let initial: Vec<String> = (0..3).map(|k| format!("e{k}={}", peer(k))).collect();
        let clients: Vec<String> = (0..3).map(|k| format!("127.0.0.1:{}", ports[k])).collect();
        let children = (0..3)
            .map(|k| {
                Command::new("etcd")
                    .args(["--name", &format!("e{k}")])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("e{k}")))
                    .args(["--listen-client-urls", &format!("http://{}", clients[k])])
                    .args(["--advertise-client-urls", &format!("http://{}", clients[k])])
                    .args(["--listen-peer-urls", &peer(k)])
                    .args(["--initial-advertise-peer-urls", &peer(k)])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args(["--initial-cluster-state", "new", "--log-level", "error"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("etcd (run benches/compare.sh to install it)")
            })
            .collect();
        Etcd {
            children,
            clients,
            _dir: dir,
            _ports: reserved,
        }
    }

    /// The leader's client address, once there is one.
    fn leader(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for address in &self.clients {
                let status = Http::connect(address)
                    .and_then(|mut h| h.post("/v3/maintenance/status", "{}"))
                    .ok()
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
                if let Some(s) = status
                    && s["leader"].is_string()
                    && s["leader"] == s["header"]["member_id"]
                {
                    return address.clone();
                }
            }
            assert!(Instant::now() < deadline, "etcd elected no leader");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Work {
    Writes,
    Reads,
}

fn etcd_op(leader: &str, work: Work, k: usize, value: &str) -> Operation {
    let mut http = Http::connect(leader).expect("connect to etcd");
    let value = base64(value.as_bytes());
    Box::new(move |n| {
        let key = base64(key(k, n).as_bytes());
        match work {
            Work::Writes => http.post(
                "/v3/kv/put",
                &format!(r#"{{"key":"{key}","value":"{value}"}}"#),
            ),
            Work::Reads => http.post("/v3/kv/range", &format!(r#"{{"key":"{key}"}}"#)),
        }
        .map(drop)
    })
}

fn ours_op(c: &TestCluster, work: Work, value: &str) -> impl Fn(usize) -> Operation {
    let (config, value) = (c.config.clone(), value.to_string());
    move |k| {
        let mut client = Client::new(config.clone(), ClientOptions::default());
        let value = value.clone();
        Box::new(move |n| {
            match work {
                Work::Writes => client.put(&key(k, n), &value).map(drop),
                Work::Reads => client.get(&key(k, n)).map(drop),
            }
            .map_err(|e| e.to_string())
        })
    }
}

/// CPU time (user + system) process `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in
    // parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Each process's CPU ticks now.
fn cpu(pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|&p| cpu_ticks(p)).collect()
}

/// CPU µs per operation over a cell, summed over the nodes and per node:
/// "412 (210 + 101 + 101)".
fn cpu_per_op(before: &[u64], after: &[u64], ops: u64) -> String {
    let per_tick = 1e6 / ticks_per_second();
    let each: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| (a - b) as f64 * per_tick / ops.max(1) as f64)
        .collect();
    let parts: Vec<String> = each.iter().map(|u| format!("{u:.0}")).collect();
    format!("{:.0} ({})", each.iter().sum::<f64>(), parts.join(" + "))
}

/// One row: throughput, latency, the ratio, and CPU µs per operation
/// (`cpu`: etcd's and ours, each as `cpu_per_op` gives it).
fn row(what: &str, clients: usize, etcd: &BenchReport, ours: &BenchReport, cpu: (&str, &str)) {
    let ms = |r: &BenchReport, p| r.percentile(p).as_secs_f64() * 1000.0;
    println!(
        "| {what} | {clients} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} | {:.2}× | {} | {} | {} / {} |",
        etcd.throughput(),
        ms(etcd, 0.5),
        ms(etcd, 0.99),
        ours.throughput(),
        ms(ours, 0.5),
        ms(ours, 0.99),
        ours.throughput() / etcd.throughput(),
        cpu.0,
        cpu.1,
        etcd.errors,
        ours.errors
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|k| args.get(k + 1))
            .cloned()
    };
    let clients: Vec<usize> = arg("--clients")
        .unwrap_or_else(|| "1,16,64,256".into())
        .split(',')
        .map(|c| c.parse().expect("--clients 1,16,64"))
        .collect();
    let seconds = Duration::from_secs(arg("--seconds").map_or(10, |s| s.parse().unwrap()));
    let value = "v".repeat(100);

    let etcd = Etcd::start();
    let leader = etcd.leader();
    let mut ours = TestCluster::new(3);
    ours.args.clear(); // the defaults a user gets
    ours.start_all();
    ours.wait_for_agreed_leader(&ours.ids(), Duration::from_secs(30));
    // Every key a reader asks for exists, in both.
    let mut http = Http::connect(&leader).unwrap();
    let mut client = Client::new(ours.config.clone(), ClientOptions::default());
    for n in 0..KEYS {
        let k = base64(key(0, n).as_bytes());
        let v = base64(value.as_bytes());
        http.post("/v3/kv/put", &format!(r#"{{"key":"{k}","value":"{v}"}}"#))
            .unwrap();
        client.put(&key(0, n), &value).unwrap();
    }

    println!(
        "3 nodes each on 127.0.0.1, {} s per cell, 100-byte values, closed loop; etcd {}",
        seconds.as_secs(),
        Command::new("etcd")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string())
            .unwrap_or_default()
    );
    println!();
    println!(
        "| workload | clients | etcd ops/s | etcd p50 / p99 ms | ours ops/s | ours p50 / p99 ms | ours / etcd | etcd CPU µs/op (per node) | ours CPU µs/op (per node) | errors etcd / ours |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let etcd_pids: Vec<u32> = etcd.children.iter().map(Child::id).collect();
    let our_pids: Vec<u32> = ours.ids().into_iter().map(|id| ours.pid(id)).collect();
    for (what, work) in [
        ("writes", Work::Writes),
        ("linearizable reads", Work::Reads),
    ] {
        for &n in &clients {
            let before = cpu(&etcd_pids);
            let e = closed_loop(n, seconds, false, |k| etcd_op(&leader, work, k, &value));
            let etcd_cpu = cpu_per_op(&before, &cpu(&etcd_pids), e.ops);
            let before = cpu(&our_pids);
            let o = closed_loop(n, seconds, false, ours_op(&ours, work, &value));
            let our_cpu = cpu_per_op(&before, &cpu(&our_pids), o.ops);
            row(what, n, &e, &o, (&etcd_cpu, &our_cpu));
        }
    }
}
