//! `raftctl bench`: a closed-loop benchmark through the client library.
//! Each of N client threads has its own session and sends one operation
//! at a time, the next as soon as the last is answered: `put`s, or
//! linearizable `get`s of keys written beforehand.
//!
//! [`closed_loop`] is the load generator itself, for any operation; the
//! side-by-side comparison with etcd (benches/compare.rs) drives both
//! systems with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{Client, ClientOptions};
use crate::config::ClusterConfig;

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// `put`s over [`KEYS`] keys.
    Writes,
    /// Linearizable `get`s (ReadIndex) of [`KEYS`] keys, written first.
    Reads,
}

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub clients: usize,
    pub duration: Duration,
    pub value_bytes: usize,
    pub workload: Workload,
    /// How many distinct keys ([`KEYS`] by default).
    pub keys: u64,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
    /// Set (by SIGINT or SIGTERM, in raftctl) to end the run before
    /// `duration`, with the report of what was done so far.
    pub interrupted: Arc<AtomicBool>,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of successful operations, sorted.
    pub latencies: Vec<Duration>,
}

impl BenchReport {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-quantile latency (0.5 for the median).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies[((self.latencies.len() - 1) as f64 * p).round() as usize]
    }

    /// A one-object summary, for scripts (`raftctl bench --json`).
    pub fn summary(&self, options: &BenchOptions) -> serde_json::Value {
        let ms = |p: f64| (self.percentile(p).as_secs_f64() * 1e6).round() / 1e3;
        serde_json::json!({
            "workload": options.workload,
            "clients": options.clients,
            "value_bytes": options.value_bytes,
            "seconds": self.elapsed.as_secs_f64(),
            "ops": self.ops,
            "errors": self.errors,
            "ops_per_second": self.throughput().round(),
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0)},
        })
    }
}

/// One client's operation: called with 0, 1, 2, … until the run ends;
/// `Err` counts as an error (and is not timed).
pub type Operation = Box<dyn FnMut(u64) -> Result<(), String> + Send>;

/// Runs `clients` threads for `duration`, each calling its operation (made
/// by `make(k)` for client `k`) in a closed loop.
pub fn closed_loop(
    clients: usize,
    duration: Duration,
    progress: bool,
    make: impl Fn(usize) -> Operation,
) -> BenchReport {
    closed_loop_until(clients, duration, progress, &AtomicBool::new(false), make)
}

/// [`closed_loop`], ending early once `interrupted` is set.
pub fn closed_loop_until(
    clients: usize,
    duration: Duration,
    progress: bool,
    interrupted: &AtomicBool,
    make: impl Fn(usize) -> Operation,
) -> BenchReport {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let ops: Vec<Operation> = (0..clients).map(make).collect();
    let started = Instant::now();
    let workers: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match op(n) {
                        Ok(()) => {
                            latencies.push(t.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => errors += 1,
                    }
                    n += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut last, mut second) = (0, 1);
    while started.elapsed() < duration && !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(
            Duration::from_millis(50).min(duration.saturating_sub(started.elapsed())),
        );
        if started.elapsed() < Duration::from_secs(second) {
            continue;
        }
        second += 1;
        if progress {
            let now = done.load(Ordering::Relaxed);
            eprintln!(
                "  {:>4.0}s  {:>8} ops  {:>8.0}/s in the last second",
                started.elapsed().as_secs_f64(),
                now,
                (now - last) as f64
            );
            last = now;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut report = BenchReport {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for w in workers {
        let (latencies, errors) = w.join().expect("bench client panicked");
        report.latencies.extend(latencies);
        report.errors += errors;
    }
    report.elapsed = started.elapsed();
    report.ops = report.latencies.len() as u64;
    report.latencies.sort();
    report
}

/// Keys read or written: client `k`'s `n`th operation uses key
/// `bench-<key(k, n)>`, 1,000 keys in all, each client starting elsewhere.
pub fn key(k: usize, n: u64) -> String {
    key_among(k, n, KEYS)
}

/// [`key`] among `keys` distinct keys.
pub fn key_among(k: usize, n: u64, keys: u64) -> String {
    format!("bench-{}", (k as u64 * 7919 + n) % keys.max(1))
}

/// How many distinct keys the benchmark uses.
pub const KEYS: u64 = 1000;

/// Runs the benchmark against a cluster of ours.
pub fn run(config: &ClusterConfig, options: &BenchOptions) -> BenchReport {
    let value = "v".repeat(options.value_bytes);
    if options.workload == Workload::Reads {
        // Every key a reader asks for exists.
        let mut client = Client::new(config.clone(), ClientOptions::default());
        for n in 0..options.keys {
            let _ = client.put(&key_among(0, n, options.keys), &value);
        }
    }
    let (workload, keys) = (options.workload, options.keys);
    let (clients, duration, progress) = (options.clients, options.duration, options.progress);
    closed_loop_until(clients, duration, progress, &options.interrupted, |k| {
        let mut client = Client::new(config.clone(), ClientOptions::default());
        let value = value.clone();
        Box::new(move |n| {
            let result = match workload {
                Workload::Writes => client.put(&key_among(k, n, keys), &value).map(drop),
                Workload::Reads => client.get(&key_among(k, n, keys)).map(drop),
            };
            result.map_err(|e| e.to_string())
        })
    })
}
