//! A cluster of nodes running inside the test process, as a program
//! embedding the library would run them: `Node::start`, then `Node::stop`,
//! which must end every thread the node started and close its storage,
//! so that the same directory and port can be opened again at once.

use std::path::Path;
use std::time::{Duration, Instant};

use raft::client::{Client, ClientOptions};
use raft::config::ClusterConfig;
use raft::node::{Node, NodeOptions, StateOptions};

#[path = "process/ports.rs"]
mod ports;

fn options(cluster: &ClusterConfig, id: u64, dir: &Path) -> NodeOptions {
    NodeOptions {
        raft: raft::consensus::Config::new(id, cluster.members.iter().map(|m| m.id), id),
        storage: StateOptions::new(dir.join(format!("node{id}"))),
        rpc_timeout: Duration::from_millis(500),
        lab: false,
        unsafe_local_reads: false,
        server: raft::server::ServerOptions::default(),
        listen: None,
        cluster_id: None,
        cluster: cluster.clone(),
    }
}

#[test]
fn a_stopped_node_ends_its_threads_and_its_directory_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let reserved = ports::reserve(3);
    let text = reserved.config_text();
    let cluster = raft::config::parse(&text, Path::new("in_process.txt")).unwrap();
    let mut nodes: Vec<Option<Node>> = (0..3)
        .map(|id| Some(Node::start(options(&cluster, id, dir.path())).expect("starts")))
        .collect();
    let mut client = Client::new(cluster.clone(), ClientOptions::default());
    client.put("k", "before").expect("a leader is elected");
    let leader = client.leader().unwrap().id;

    // Stopping the leader hands its office over, then ends every thread:
    // its listener is closed and its directory unlocked when `stop`
    // returns, or the restart below fails with "address in use" or
    // "locked by another process".
    let node = nodes[leader as usize].take().unwrap();
    let started = Instant::now();
    node.stop("test").expect("stops");
    eprintln!("stopped the leader in {:?}", started.elapsed());
    client
        .put("k", "while it was down")
        .expect("the others go on");
    let restarted = Node::start(options(&cluster, leader, dir.path()))
        .expect("the same directory and port open again");
    nodes[leader as usize] = Some(restarted);
    client.put("k", "after").unwrap();
    assert_eq!(client.get("k").unwrap(), "after");

    // A stopped node answers nothing: its port refuses connections.
    for (id, node) in nodes.iter_mut().enumerate() {
        node.take().unwrap().stop("test").expect("stops");
        let addr = cluster.member(id as u64).unwrap().socket_addr().unwrap();
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "node{id} still listens after stop"
        );
    }
}
