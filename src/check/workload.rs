//! The clients of a check: each a session of its own, running reads,
//! writes, compare-and-sets and deletes on a few keys at a steady pace,
//! and recording each operation's call, return and outcome.
//!
//! Every value written is unique (`c<client>.<n>`), so a read names the
//! write it saw, and the checker's explanation of an anomaly stays a few
//! operations long. Reads go first to a node chosen at random (a follower
//! sends them on to the leader), so a node that answers reads it should
//! not is caught whichever node it is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::history::{Op, Outcome};
use crate::client::{Client, ClientError, ClientOptions};
use crate::config::ClusterConfig;
use crate::lincheck::{KvOp, Operation};

/// Counts shown on the progress line, shared by the clients.
#[derive(Default)]
pub struct Counts {
    pub ok: AtomicU64,
    pub fail: AtomicU64,
    pub unknown: AtomicU64,
}

impl Counts {
    fn note(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Fail => &self.fail,
            Outcome::Unknown => &self.unknown,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// What one client does.
pub struct ClientPlan {
    pub number: usize,
    pub config: ClusterConfig,
    pub keys: usize,
    /// Put before each key's name, new for each run: a check starts from
    /// keys no one has written.
    pub key_prefix: String,
    /// Operations per second this client aims at.
    pub rate: u32,
    /// How long one operation may take, retries included.
    pub timeout: Duration,
    pub seed: u64,
    pub epoch: Instant,
}

/// Runs one client until `stop`; returns its operations.
pub fn run_client(plan: ClientPlan, stop: Arc<AtomicBool>, counts: Arc<Counts>) -> Vec<Op> {
    let options = ClientOptions {
        timeout: plan.timeout,
        request_timeout: plan.timeout.min(Duration::from_secs(1)),
    };
    let mut client = Client::new(plan.config.clone(), options);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(plan.seed);
    let nodes: Vec<_> = plan.config.members.iter().map(|m| m.id).collect();
    let us = |t: Instant| t.duration_since(plan.epoch).as_micros() as u64;
    let gap = Duration::from_secs(1) / plan.rate.max(1);
    // The last value this client saw for each key: what its next
    // compare-and-set expects.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut ops = Vec::new();
    let mut next = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next = next.max(now) + gap;
        n += 1;
        let key = format!("{}k{}", plan.key_prefix, rng.random_range(0..plan.keys));
        let value = format!("c{}.{n}", plan.number);
        let dice = rng.random_range(0..10);
        let call = Instant::now();
        let (op, outcome, error) = match dice {
            0..4 => {
                client.try_first(nodes[rng.random_range(0..nodes.len())]);
                match client.get(&key) {
                    Ok(v) => {
                        seen.insert(key.clone(), v.clone());
                        (KvOp::Get { value: Some(v) }, Outcome::Ok, None)
                    }
                    Err(ClientError::NotFound { .. }) => {
                        seen.remove(&key);
                        (KvOp::Get { value: None }, Outcome::Ok, None)
                    }
                    // A read with no answer showed nothing and changed
                    // nothing.
                    Err(e) => (KvOp::Get { value: None }, Outcome::Fail, Some(e)),
                }
            }
            4..7 => {
                let r = client.put(&key, &value);
                if r.is_ok() {
                    seen.insert(key.clone(), value.clone());
                }
                let (outcome, error) = write_outcome(r.err());
                (KvOp::Put { value }, outcome, error)
            }
            7..9 => {
                let from = seen.get(&key).cloned().unwrap_or_default();
                let r = client.cas(&key, &from, &value);
                let (result, outcome, error) = match r {
                    Ok(_) => {
                        seen.insert(key.clone(), value.clone());
                        (Some(Ok(())), Outcome::Ok, None)
                    }
                    Err(ClientError::PreconditionFailed { actual, .. }) => {
                        match &actual {
                            Some(v) => seen.insert(key.clone(), v.clone()),
                            None => seen.remove(&key),
                        };
                        (Some(Err(actual)), Outcome::Ok, None)
                    }
                    Err(e) => {
                        let (outcome, error) = write_outcome(Some(e));
                        (None, outcome, error)
                    }
                };
                let to = value;
                (KvOp::Cas { from, to, result }, outcome, error)
            }
            _ => {
                let r = client.delete(&key);
                let (existed, outcome, error) = match r {
                    Ok(_) => (Some(true), Outcome::Ok, None),
                    Err(ClientError::NotFound { .. }) => (Some(false), Outcome::Ok, None),
                    Err(e) => {
                        let (outcome, error) = write_outcome(Some(e));
                        (None, outcome, error)
                    }
                };
                if outcome == Outcome::Ok {
                    seen.remove(&key);
                }
                (KvOp::Delete { existed }, outcome, error)
            }
        };
        let ret = Instant::now();
        counts.note(outcome);
        ops.push(Op {
            client: plan.number,
            outcome,
            node: (outcome == Outcome::Ok)
                .then(|| client.answered_by())
                .flatten(),
            end: us(ret),
            error: error.map(|e| e.to_string()),
            op: Operation {
                key,
                op,
                call: us(call),
                ret: (outcome == Outcome::Ok).then(|| us(ret)),
            },
        });
    }
    ops
}

/// A write's outcome from its error: definite failures did not happen;
/// anything else may have.
fn write_outcome(error: Option<ClientError>) -> (Outcome, Option<ClientError>) {
    match error {
        None => (Outcome::Ok, None),
        Some(e) if e.is_definite() || matches!(e, ClientError::NoLeader { .. }) => {
            (Outcome::Fail, Some(e))
        }
        Some(e) => (Outcome::Unknown, Some(e)),
    }
}
