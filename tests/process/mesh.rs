//! Network partitions between real processes, without privileges: every
//! node reaches every other through a proxy of its own (node a's view of
//! node b is a proxy that forwards to b), so cutting a node off is done by
//! its proxies, not by the kernel.
//!
//! A cut link is a black hole, as a real partition is: connections are
//! accepted and kept, and every byte in either direction is dropped, so
//! the sender learns of it only by its RPC timeout. Healing the link
//! closes the connections that lived through the cut (a line dropped half
//! way would leave them unreadable), and the nodes reconnect.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use raft::consensus::NodeId;

/// One direction of one pair: what node `from` sends to node `to`, and
/// its answers.
struct Link {
    cut: AtomicBool,
    /// Bumped at every cut and heal; a connection from another epoch is
    /// closed at its next byte.
    epoch: AtomicU64,
}

pub struct Mesh {
    links: HashMap<(NodeId, NodeId), Arc<Link>>,
    /// The port of node `from`'s proxy to node `to`.
    pub ports: HashMap<(NodeId, NodeId), u16>,
}

impl Mesh {
    /// Proxies between every ordered pair of the nodes listening on
    /// `real` (id, port) on 127.0.0.1. They run until the process ends.
    pub fn start(real: &[(NodeId, u16)]) -> Mesh {
        let mut links = HashMap::new();
        let mut ports = HashMap::new();
        for &(from, _) in real {
            for &(to, to_port) in real.iter().filter(|(to, _)| *to != from) {
                let link = Arc::new(Link {
                    cut: AtomicBool::new(false),
                    epoch: AtomicU64::new(0),
                });
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy");
                ports.insert((from, to), listener.local_addr().unwrap().port());
                links.insert((from, to), link.clone());
                thread::spawn(move || accept(listener, to_port, link));
            }
        }
        Mesh { links, ports }
    }

    fn set(&self, filter: impl Fn(NodeId, NodeId) -> bool, cut: bool) {
        for (&(from, to), link) in &self.links {
            if filter(from, to) {
                link.cut.store(cut, Ordering::SeqCst);
                link.epoch.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Cuts node `id` off from every other node (clients still reach it:
    /// they do not go through the mesh).
    pub fn isolate(&self, id: NodeId) {
        self.set(|from, to| from == id || to == id, true);
    }

    /// Reconnects every cut link.
    pub fn heal(&self) {
        self.set(|_, _| true, false);
    }
}

fn accept(listener: TcpListener, to_port: u16, link: Arc<Link>) {
    for incoming in listener.incoming() {
        let Ok(inbound) = incoming else { continue };
        let Ok(outbound) = TcpStream::connect(("127.0.0.1", to_port)) else {
            continue; // the node is down: the caller sees a closed connection
        };
        let epoch = link.epoch.load(Ordering::SeqCst);
        let pair = [
            (inbound.try_clone(), outbound.try_clone()),
            (outbound.try_clone(), inbound.try_clone()),
        ];
        for (from, to) in pair {
            let (Ok(from), Ok(to)) = (from, to) else {
                continue;
            };
            let link = link.clone();
            thread::spawn(move || pump(from, to, &link, epoch));
        }
    }
}

/// Copies bytes from `from` to `to` while the link is up and of `epoch`.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link, epoch: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if link.epoch.load(Ordering::SeqCst) != epoch && !link.cut.load(Ordering::SeqCst) {
            break; // healed since this connection began: start afresh
        }
        if link.cut.load(Ordering::SeqCst) {
            continue; // the black hole
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
