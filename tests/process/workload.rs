//! A workload for real clusters: clients running random reads, puts,
//! compare-and-sets and deletes on a few keys, recording a history for
//! the in-tree linearizability checker and the writes acknowledged to
//! them, and the checks run on both afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::client::{Client, ClientError, ClientOptions};
use raft::consensus::{Entry, Payload};
use raft::kv::{ClientId, Command, KvStore};
use raft::lincheck::{self, KvOp, Operation, Verdict};

pub fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// One client's loop: random operations on a few keys until `stop`,
/// recorded with times relative to `epoch`. Returns its history and the
/// writes it saw acknowledged, as (client, seq, index).
pub fn client_loop(
    config: raft::config::ClusterConfig,
    k: usize,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
) -> (Vec<Operation>, Vec<Acked>) {
    let mut client = Client::new(config, options());
    let mut history = Vec::new();
    let mut acked = Vec::new();
    let mut n = 0u64;
    let t = || epoch.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("k{}", (n as usize + k) % 3);
        let value = format!("c{k}-{n}");
        let call = t();
        let (op, result) = match n % 5 {
            0 | 1 => match client.get(&key) {
                Ok(v) => (KvOp::Get { value: Some(v) }, true),
                Err(ClientError::NotFound { .. }) => (KvOp::Get { value: None }, true),
                Err(_) => {
                    // A read with no answer constrains nothing.
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
            2 => {
                let r = client.put(&key, &value);
                if let Ok(index) = r {
                    acked.push((client.id(), client.last_seq(), index));
                }
                (KvOp::Put { value }, r.is_ok())
            }
            3 => {
                let from = format!("c{}-{}", (k + 1) % 4, n.saturating_sub(3));
                match client.cas(&key, &from, &value) {
                    Ok(index) => {
                        acked.push((client.id(), client.last_seq(), index));
                        (
                            KvOp::Cas {
                                from,
                                to: value,
                                result: Some(Ok(())),
                            },
                            true,
                        )
                    }
                    Err(ClientError::PreconditionFailed { actual, .. }) => (
                        KvOp::Cas {
                            from,
                            to: value,
                            result: Some(Err(actual)),
                        },
                        true,
                    ),
                    Err(_) => (
                        KvOp::Cas {
                            from,
                            to: value,
                            result: None,
                        },
                        false,
                    ),
                }
            }
            _ => match client.delete(&key) {
                Ok(index) => {
                    acked.push((client.id(), client.last_seq(), index));
                    (
                        KvOp::Delete {
                            existed: Some(true),
                        },
                        true,
                    )
                }
                Err(ClientError::NotFound { .. }) => (
                    KvOp::Delete {
                        existed: Some(false),
                    },
                    true,
                ),
                Err(_) => (KvOp::Delete { existed: None }, false),
            },
        };
        if !result {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        history.push(Operation {
            key,
            op,
            call,
            ret: result.then(t),
        });
    }
    (history, acked)
}

pub fn command_at(log: &[raft::consensus::Entry], index: u64) -> Option<Command> {
    match &log.get(index as usize - 1)?.payload {
        Payload::Command(d) => Command::decode(d),
        Payload::Noop | Payload::Membership(_) => None,
    }
}

/// A write acknowledged to a client: (client, its number, log index).
pub type Acked = (ClientId, u64, u64);

/// Clients running [`client_loop`] until stopped.
pub struct Workload {
    stop: Arc<AtomicBool>,
    /// Operations that got no answer (a timeout, no leader in time).
    failed: Arc<AtomicU64>,
    clients: Vec<JoinHandle<(Vec<Operation>, Vec<Acked>)>>,
}

impl Workload {
    /// Starts `n` clients of the cluster `config` names.
    pub fn start(config: &raft::config::ClusterConfig, n: usize) -> Workload {
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let clients = (0..n)
            .map(|k| {
                let (config, stop, failed) = (config.clone(), stop.clone(), failed.clone());
                std::thread::spawn(move || client_loop(config, k, epoch, stop, failed))
            })
            .collect();
        Workload {
            stop,
            failed,
            clients,
        }
    }

    /// Stops the clients: their histories, and the writes acknowledged.
    pub fn stop(self) -> (Vec<Operation>, Vec<Acked>) {
        let (history, acked, _) = self.stop_counting_failures();
        (history, acked)
    }

    /// [`Workload::stop`], and how many operations got no answer.
    pub fn stop_counting_failures(self) -> (Vec<Operation>, Vec<Acked>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut history, mut acked) = (Vec::new(), Vec::new());
        for h in self.clients {
            let (ops, a) = h.join().unwrap();
            history.extend(ops);
            acked.extend(a);
        }
        (history, acked, self.failed.load(Ordering::SeqCst))
    }
}

/// Panics, showing the key's operations, unless `history` is
/// linearizable; returns how many operations completed.
pub fn assert_linearizable(history: &[Operation]) -> usize {
    match lincheck::check(history) {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable { key } => {
            let ops: Vec<_> = history.iter().filter(|o| o.key == key).collect();
            panic!("history of {key} is not linearizable: {ops:#?}");
        }
        Verdict::Undecided { key, reason } => panic!("checking {key} ran out of {reason}"),
    }
    history.iter().filter(|o| o.ret.is_some()).count()
}

/// Every acknowledged write is in `log` (from index 1) at its index, and
/// was applied exactly once.
pub fn assert_acked_writes_kept(log: &[Entry], acked: &[Acked]) {
    let mut kv = KvStore::new();
    let mut fresh: HashMap<(ClientId, u64), usize> = HashMap::new();
    for e in log {
        if let Some(a) = kv.apply(e).filter(|a| !a.duplicate) {
            *fresh.entry((a.command.client, a.command.seq)).or_default() += 1;
        }
    }
    for &(client, seq, index) in acked {
        let at = command_at(log, index).map(|c| (c.client, c.seq));
        assert_eq!(
            at,
            Some((client, seq)),
            "acknowledged write lost: client {client} #{seq} at {index}"
        );
        assert_eq!(fresh.get(&(client, seq)), Some(&1));
    }
}

/// Puts keys `k<from>..k<to>` (100-byte values) from `clients` threads; returns the writes
/// completed in each second.
pub fn load(config: &raft::config::ClusterConfig, clients: usize, from: u64, to: u64) -> Vec<u64> {
    let next = Arc::new(AtomicU64::new(from));
    let done = Arc::new(AtomicU64::new(0));
    let value = "v".repeat(100);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, done, config, value) =
                (next.clone(), done.clone(), config.clone(), value.clone());
            std::thread::spawn(move || {
                let options = ClientOptions {
                    timeout: Duration::from_secs(30),
                    ..ClientOptions::default()
                };
                let mut client = Client::new(config, options);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= to {
                        return;
                    }
                    client.put(&format!("k{n}"), &value).expect("write");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut per_second = Vec::new();
    let mut last = 0;
    while done.load(Ordering::Relaxed) < to - from {
        std::thread::sleep(Duration::from_secs(1));
        let now = done.load(Ordering::Relaxed);
        per_second.push(now - last);
        last = now;
    }
    for t in threads {
        t.join().unwrap();
    }
    per_second
}
