//! Listen ports that nothing else can take while a test holds them.
//!
//! The obvious way to find a free port (bind port 0, read it, close it, give
//! it to a child process) races with every other socket on the machine:
//! port 0 is drawn from the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default), the
//! same range that every *outgoing* connection takes its source port from:
//! the nodes' connections to each other, `raftctl`, the tests' own clients,
//! across every test binary and thread running at once. Between the close
//! and the child's bind, or between a node's crash and its restart, one of
//! those connections can take the port, and the node fails with "Address
//! already in use". A first `cargo test` failed that way.
//!
//! So listen ports come from **below the ephemeral range** (or above it,
//! if there is no room below), which the kernel never hands out on its
//! own; and each is **reserved across processes** by an exclusive lock
//! on `$TMPDIR/raft-test-ports/<port>.lock`, held by the [`Ports`] value
//! until it is dropped (the kernel releases it if the test process dies).
//! Test processes and threads skip a locked port; a port some other program
//! listens on is skipped too (we try binding it once, after taking the
//! lock). Nodes restarted by a test get the same ports back, still
//! reserved. Listeners the test process itself binds and keeps (the mesh's
//! proxies, in-process servers) may use port 0: nothing can take a port
//! while it is bound.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Ports reserved for this test until the value is dropped.
#[derive(Debug)]
pub struct Ports {
    pub ports: Vec<u16>,
    _locks: Vec<File>,
}

/// The range listen ports are taken from: just below the kernel's
/// ephemeral range, or above it when it starts too low.
fn range() -> std::ops::Range<u16> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if low >= 12_000 {
        (low - 10_000)..low
    } else if high <= 55_000 {
        (high + 1)..(high + 10_001)
    } else {
        panic!(
            "the ephemeral port range {low}-{high} leaves no room for test ports; \
             narrow /proc/sys/net/ipv4/ip_local_port_range"
        )
    }
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("raft-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock directory");
    dir
}

impl Ports {
    /// Holds `more`'s ports too, after these.
    #[allow(dead_code)] // not used by every test file that includes this one
    pub fn absorb(&mut self, more: Ports) {
        self.ports.extend(more.ports);
        self._locks.extend(more._locks);
    }

    /// A cluster configuration (the courses' format) of nodes 0, 1, …
    /// listening on these ports of 127.0.0.1.
    pub fn config_text(&self) -> String {
        let mut text = format!("N: {}\n", self.ports.len());
        for (id, port) in self.ports.iter().enumerate() {
            text.push_str(&format!("node{id}: 127.0.0.1:{port}\n"));
        }
        text
    }
}

/// Reserves `n` ports on 127.0.0.1 (see the module doc).
pub fn reserve(n: usize) -> Ports {
    let range = range();
    let span = (range.end - range.start) as u64;
    let dir = lock_dir();
    // Processes start at different places, threads of one process move on
    // from each other, so few attempts collide.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::process::id() as u64 * 7919
        + NEXT.fetch_add(n as u64 + 1, Ordering::Relaxed)
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    let mut ports = Vec::with_capacity(n);
    let mut locks = Vec::with_capacity(n);
    for i in 0..span {
        if ports.len() == n {
            break;
        }
        let port = range.start + ((seed + i) % span) as u16;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
            .expect("open a port lock file");
        if file.try_lock().is_err() {
            continue; // another test holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // some other program listens on it
        }
        ports.push(port);
        locks.push(file);
    }
    assert_eq!(
        ports.len(),
        n,
        "fewer than {n} free ports in {range:?} (see tests/process/ports.rs)"
    );
    Ports {
        ports,
        _locks: locks,
    }
}
