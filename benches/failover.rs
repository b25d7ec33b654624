//! How long a 5-node cluster with default timeouts (election 300..600 ms,
//! heartbeat 50 ms) takes to have a new leader after its leader is killed
//! with SIGTERM or SIGKILL. Runs real processes in a temp dir.
//!
//!     cargo bench --bench failover [-- TRIALS]
//!
//! Time is measured from the signal to the first status answer in which a
//! surviving node is leader of a newer term (polled every millisecond, each
//! poll asking all five nodes). With SIGTERM the leader
//! hands its leadership over before it exits (thesis §3.10); with SIGKILL
//! the others notice its silence after an election timeout.

#[path = "../tests/process/mod.rs"]
mod process;

use std::time::{Duration, Instant};

use process::{TestCluster, agreed_leader};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let trials: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let mut c = TestCluster::new(5);
    c.args.clear(); // the defaults a user gets
    c.start_all();
    let all = c.ids();
    for signal in ["SIGTERM", "SIGKILL"] {
        let mut times = Vec::new();
        for _ in 0..trials {
            let (leader, term) = c.wait_for_agreed_leader(&all, Duration::from_secs(30));
            // Timed from the signal, sent without waiting for the exit:
            // a leader stopped with SIGTERM hands over first, then exits.
            let started = Instant::now();
            c.signal(leader, &signal[3..]);
            let elapsed = loop {
                let st = c.statuses();
                let new_leader = st.iter().any(|s| {
                    s.member.id != leader
                        && s.status
                            .as_ref()
                            .is_ok_and(|s| s.role == "leader" && s.term > term)
                });
                if new_leader {
                    break started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no new leader after {signal}"
                );
                std::thread::sleep(Duration::from_millis(1));
            };
            times.push(elapsed.as_secs_f64() * 1000.0);
            c.wait_for_exit(leader, Duration::from_secs(30));
            c.start(leader);
            c.wait_for(
                "the restarted node to rejoin",
                Duration::from_secs(30),
                |st| agreed_leader(st, &all),
            );
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{signal}: new leader after {trials} trials: median {:.0} ms, p90 {:.0} ms, max {:.0} ms, min {:.0} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            times[times.len() - 1],
            times[0]
        );
    }
}
