//! `raftctl bench`: a closed-loop write benchmark through the client
//! library. Each of N client threads has its own session and sends one
//! `put` at a time, the next as soon as the last is acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientOptions};
use crate::config::ClusterConfig;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub clients: usize,
    pub duration: Duration,
    pub value_bytes: usize,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of successful writes, sorted.
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
}

pub fn run(config: &ClusterConfig, options: &BenchOptions) -> BenchReport {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let value = "v".repeat(options.value_bytes);
    let started = Instant::now();
    let workers: Vec<_> = (0..options.clients)
        .map(|k| {
            let (stop, done, value) = (stop.clone(), done.clone(), value.clone());
            let mut client = Client::new(config.clone(), ClientOptions::default());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let t = Instant::now();
                    match client.put(&format!("bench-{k}-{}", n % 1000), &value) {
                        Ok(_) => {
                            latencies.push(t.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut last = 0;
    while started.elapsed() < options.duration {
        std::thread::sleep(
            Duration::from_secs(1).min(options.duration.saturating_sub(started.elapsed())),
        );
        if options.progress {
            let now = done.load(Ordering::Relaxed);
            eprintln!(
                "  {:>4.0}s  {:>8} writes  {:>8.0}/s in the last second",
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
