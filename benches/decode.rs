//! What decoding a request line costs: allocations and time per line, for
//! the lines a write makes (a client's `write`; the leader's
//! `append_entries` with 1 and 64 entries; the reply):
//!
//!     cargo bench --bench decode -- [--rounds 20000]
//!
//! Counted with a global allocator that counts every allocation. Not part
//! of CI.

#[path = "../tests/process/mod.rs"]
mod process;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use raft::consensus::{AppendEntries, AppendEntriesReply, Entry, Payload};
use raft::kv::{Command, Op};
use raft::wire::{Envelope, Request, Response};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// A put of a 100-byte value, as the client library sends it.
fn command(seq: u64) -> Command {
    Command {
        client: 0xc0ffee0123456789,
        seq,
        op: Op::Put {
            key: format!("key{seq:06}"),
            value: "v".repeat(100),
        },
    }
}

/// The leader's AppendEntries carrying `entries` such puts.
fn append_entries(entries: u64) -> String {
    let request = Request::AppendEntries(Envelope {
        cluster: "b7423cf49cb8b176".into(),
        from: 0,
        body: AppendEntries {
            term: 3,
            leader_id: 0,
            prev_log_index: 999,
            prev_log_term: 3,
            entries: (0..entries)
                .map(|i| Entry {
                    index: 1000 + i,
                    term: 3,
                    payload: Payload::Command(command(i).encode()),
                })
                .collect(),
            leader_commit: 998,
            read_round: 7,
        },
    });
    serde_json::to_string(&request).unwrap()
}

fn measure<T>(name: &str, line: &str, rounds: u64, decode: impl Fn(&[u8]) -> T) {
    let bytes = line.as_bytes();
    let _ = decode(bytes); // warm
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(decode(std::hint::black_box(bytes)));
    }
    let took = started.elapsed();
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    println!(
        "{name:<28} {:>6} B  {:>8.1} allocations  {:>9.0} bytes allocated  {:>8.2} µs",
        line.len(),
        (a1 - a0) as f64 / rounds as f64,
        (b1 - b0) as f64 / rounds as f64,
        took.as_secs_f64() * 1e6 / rounds as f64
    );
}

fn main() {
    let rounds: u64 = process::arg("--rounds").map_or(20_000, |r| r.parse().expect("--rounds N"));
    let write = serde_json::to_string(&Request::Write(command(42))).unwrap();
    let request = |line: &[u8]| raft::wire::decode_request(line).expect("decodes");
    println!("per line decoded ({rounds} rounds each):");
    measure("write (client)", &write, rounds, request);
    measure(
        "append_entries, 1 entry",
        &append_entries(1),
        rounds,
        request,
    );
    measure(
        "append_entries, 64 entries",
        &append_entries(64),
        rounds / 16,
        request,
    );
    measure(
        "append_entries, heartbeat",
        &append_entries(0),
        rounds,
        request,
    );
    let heartbeat: Request = serde_json::from_str(&append_entries(0)).unwrap();
    let Request::AppendEntries(e) = heartbeat else {
        unreachable!()
    };
    let reply = serde_json::to_string(&Response::AppendEntries(AppendEntriesReply::answering(
        &e.body, 3,
    )))
    .unwrap();
    measure("append_entries reply", &reply, rounds, |l: &[u8]| {
        serde_json::from_slice::<Response>(l).expect("decodes")
    });
}
