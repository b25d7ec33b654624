//! `raftnode CONFIG ID [PORT]`: runs one node of the cluster in CONFIG.
//! `raftnode --join MEMBER_HOST:PORT ID HOST:PORT`: runs a new server for
//! a running cluster, which learns the cluster from MEMBER and serves once
//! `raftctl add` has added it.
//!
//! Exit codes: 0 after SIGTERM or SIGINT, or once removed from the
//! cluster; 2 for bad arguments or configuration; 1 for a failure at run
//! time (reason on stderr).

use std::path::PathBuf;
use std::process::exit;
use std::time::Duration;

use clap::Parser;
use raft::config;
use raft::consensus::membership::Membership;
use raft::consensus::{self, InvalidConfig};
use raft::node::{Node, NodeError, NodeOptions, SnapshotThreshold, StateOptions};
use raft::server::ServerOptions;
use raft::storage::StorageError;
use signal_hook::consts::{SIGINT, SIGTERM};

#[derive(Parser)]
#[command(
    version,
    about = "Runs one Raft node of the cluster described in CONFIG, or (--join) a new server for a running cluster.",
    override_usage = "raftnode [OPTIONS] CONFIG ID [PORT]\n       raftnode [OPTIONS] --join MEMBER_HOST:PORT ID HOST:PORT"
)]
struct Args {
    /// Cluster configuration (`N: 5` / `node0: localhost:5001`, or `ID
    /// HOST PORT` lines), read at the cluster's bootstrap; with --join,
    /// this node's id instead.
    #[arg(value_name = "CONFIG")]
    first: String,
    /// This node's id, as in the configuration (node4 is 4); with --join,
    /// this node's HOST:PORT.
    #[arg(value_name = "ID")]
    second: String,
    /// This node's port; must match the configuration if given (not with
    /// --join).
    port: Option<u16>,
    /// Join the running cluster that MEMBER_HOST:PORT (any member) belongs
    /// to, as a new server: it learns the cluster's id, members and log
    /// from it, and votes once `raftctl add` has made it a voter.
    #[arg(long, value_name = "MEMBER_HOST:PORT")]
    join: Option<String>,
    /// Durable state goes in a folder per node under this one (node4/ for node 4).
    #[arg(long, default_value = "/tmp/state")]
    state_dir: PathBuf,
    /// The activity log goes to a file per node here (node4.log for node 4).
    #[arg(long, default_value = "/tmp/debug")]
    debug_dir: PathBuf,
    /// Election timeout range in milliseconds, drawn uniformly at random.
    #[arg(long, default_value_t = election_timeout_default(), value_name = "MIN..MAX")]
    election_timeout: String,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = core_default().heartbeat_interval.as_millis() as u64, value_name = "MS")]
    heartbeat: u64,
    /// Timeout for one RPC to a peer in milliseconds [default: half the
    /// shortest election timeout].
    #[arg(long, value_name = "MS")]
    rpc_timeout: Option<u64>,
    /// The cluster id peer messages must carry [default: derived from the
    /// configuration's ids and addresses]. Every node of a cluster needs
    /// the same one.
    #[arg(long, value_name = "ID")]
    cluster_id: Option<String>,
    /// Client connections allowed at once; peers' connections do not count.
    #[arg(long, default_value_t = ServerOptions::default().max_connections, value_name = "N")]
    max_connections: usize,
    /// Near the connection cap, client connections idle this many seconds
    /// are closed.
    #[arg(long, default_value_t = ServerOptions::default().idle_timeout.as_secs(), value_name = "SECONDS")]
    idle_timeout: u64,
    /// AppendEntries with entries a leader keeps in flight to one follower
    /// (pipelining); 1 is stop-and-wait.
    #[arg(long, default_value_t = core_default().max_inflight_appends, value_name = "N")]
    max_inflight: usize,
    /// Take a snapshot and compact the log once the log past the last
    /// snapshot holds this many entries (`100000`) or bytes (`64MiB`;
    /// units B, KiB, MiB, GiB).
    #[arg(long, default_value_t = SnapshotThreshold::default().to_string(), value_name = "N|SIZE")]
    snapshot_threshold: String,
    /// How the leader confirms a linearizable read: `index` asks a
    /// majority (a heartbeat round, no clock involved); `lease` trusts its
    /// lease, within --max-clock-drift, and needs every node started so.
    #[arg(long, default_value = "index", value_parser = ["index", "lease"])]
    read_mode: String,
    /// With --read-mode lease: how fast or slow any node's clock may run,
    /// as a fraction (0.1 = 10%).
    #[arg(long, default_value_t = core_default().max_clock_drift, value_name = "FRACTION")]
    max_clock_drift: f64,
    /// Lab features for experiments on a local cluster: a `lab` request
    /// (`raftctl web --lab`) may cut this node off from its peers and
    /// reconnect it. Off by default.
    #[arg(long)]
    lab: bool,
    /// Breaks linearizability, to test a checker (raftctl check): answer
    /// linearizable reads of one key from this node's own state, without
    /// ReadIndex and without redirecting to the leader. Hidden from --help.
    #[arg(long, hide = true)]
    unsafe_local_reads: bool,
    /// Only for a node whose state.json and state.copy.json are both lost
    /// (the node refuses to start and says so): start once at this term,
    /// voting in no term up to it. Use the highest term any node of the
    /// cluster shows in `raftctl status`.
    #[arg(long, value_name = "TERM")]
    vote_floor: Option<u64>,
    /// Mutual TLS on every connection, with the files `raftctl tls init`
    /// writes in DIR: ca.pem (the cluster's authority), node<ID>.pem and
    /// node<ID>-key.pem. A peer must show a certificate from that
    /// authority naming its node id; a client, one from that authority.
    #[arg(long, value_name = "DIR")]
    tls: Option<PathBuf>,
    /// This node's certificate (etcd's flag) [default: DIR/node<ID>.pem].
    #[arg(long, value_name = "FILE")]
    cert_file: Option<PathBuf>,
    /// This node's key [default: DIR/node<ID>-key.pem].
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The cluster's certificate authority [default: DIR/ca.pem].
    #[arg(long, value_name = "FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// With TLS: also accept clients that show no certificate (peers
    /// still must show theirs).
    #[arg(long)]
    anonymous_clients: bool,
    /// Listen on HOST:PORT (or HOST, with the config's port) instead of the
    /// config's address, which stays the one the cluster reaches this node
    /// at: `0.0.0.0` in a container or behind NAT.
    #[arg(long, value_name = "HOST[:PORT]")]
    listen: Option<String>,
}

/// `--listen`'s address: HOST:PORT as given, or HOST (a name, an IPv4
/// or a bare IPv6 address) with the port the config gives this node.
fn listen_address(listen: &str, cluster: &config::ClusterConfig, id: u64) -> String {
    use std::net::{IpAddr, SocketAddr};
    if listen.parse::<SocketAddr>().is_ok() {
        return listen.to_string();
    }
    let port = cluster.member(id).map_or(0, |m| m.port);
    if let Ok(ip) = listen.parse::<IpAddr>() {
        return SocketAddr::new(ip, port).to_string();
    }
    match listen.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => listen.to_string(), // name:port
        _ => format!("{listen}:{port}"),
    }
}

/// The node's TLS from its flags (`None`: plain TCP), and this process
/// set to connect with it; exits 2 naming the file at fault.
fn setup_tls(args: &Args) -> Option<raft::tls::Tls> {
    use raft::tls::{Tls, TlsFiles};
    let given = [&args.cert_file, &args.key_file, &args.trusted_ca_file];
    if args.tls.is_none() && given.iter().all(|f| f.is_none()) {
        if args.anonymous_clients {
            usage_error("--anonymous-clients needs --tls");
        }
        return None;
    }
    let id_text = if args.join.is_some() {
        &args.first
    } else {
        &args.second
    };
    let Some(id) = id_text.strip_prefix("node").unwrap_or(id_text).parse().ok() else {
        return None; // the id's own check says what is wrong with it
    };
    let defaults = args.tls.as_deref().map(|dir| TlsFiles::node(dir, id));
    let pick = |flag: &Option<PathBuf>, name: &str, default: Option<&PathBuf>| -> PathBuf {
        flag.clone()
            .or_else(|| default.cloned())
            .unwrap_or_else(|| usage_error(&format!("TLS without --tls DIR needs --{name} too")))
    };
    let files = TlsFiles {
        cert: pick(
            &args.cert_file,
            "cert-file",
            defaults.as_ref().map(|d| &d.cert),
        ),
        key: pick(
            &args.key_file,
            "key-file",
            defaults.as_ref().map(|d| &d.key),
        ),
        ca: pick(
            &args.trusted_ca_file,
            "trusted-ca-file",
            defaults.as_ref().map(|d| &d.ca),
        ),
    };
    let tls = Tls::for_node(&files, id, args.anonymous_clients).unwrap_or_else(|e| {
        eprintln!("raftnode: TLS: {e}");
        exit(2)
    });
    raft::tls::connect_with(tls.clone()).expect("set once, at the start");
    Some(tls)
}

// Every default shown in --help is the library's own (one default for
// each setting): the core's, the server's, the snapshotter's.
fn core_default() -> consensus::Config {
    consensus::Config::new(0, [], 0)
}

fn election_timeout_default() -> String {
    let c = core_default();
    format!(
        "{}..{}",
        c.election_timeout_min.as_millis(),
        c.election_timeout_max.as_millis()
    )
}

fn usage_error(msg: &str) -> ! {
    eprintln!("raftnode: {msg}");
    exit(2)
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once("..")?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Who this node is and what it starts from, by either form of the
/// command line.
struct Start {
    id: u64,
    /// This node's address, and (bootstrapping) the others'.
    cluster: config::ClusterConfig,
    /// The membership at index 0: config.txt's servers, or none for a
    /// joining server (the leader's log brings them).
    bootstrap: Membership,
    cluster_id: Option<String>,
}

/// `raftnode CONFIG ID [PORT]`.
fn bootstrap_start(args: &Args) -> Start {
    let path = PathBuf::from(&args.first);
    let id: u64 = args.second.parse().unwrap_or_else(|_| {
        usage_error(&format!(
            "ID must be a node id (a whole number), not {:?}",
            args.second
        ))
    });
    let cluster = config::load(&path).unwrap_or_else(|e| usage_error(&e.to_string()));
    let Some(me) = cluster.member(id) else {
        let ids: Vec<String> = cluster.members.iter().map(|m| m.id.to_string()).collect();
        usage_error(&format!(
            "node id {id} is not in {} (ids: {}); a new server joins a running cluster with --join",
            path.display(),
            ids.join(", ")
        ));
    };
    if let Some(port) = args.port.filter(|&p| p != me.port) {
        usage_error(&format!(
            "port {port} does not match node{id} in {}, which is {}",
            path.display(),
            me.address()
        ));
    }
    Start {
        id,
        bootstrap: Membership::bootstrap(cluster.members.iter().map(|m| (m.id, m.address()))),
        cluster_id: args.cluster_id.clone(),
        cluster,
    }
}

/// `raftnode --join MEMBER ID HOST:PORT`: the cluster's id from this
/// node's directory if it has run before, otherwise from MEMBER.
fn join_start(args: &Args, member: &str) -> Start {
    let id: u64 = args.first.parse().unwrap_or_else(|_| {
        usage_error(&format!(
            "with --join, ID must be a node id (a whole number), not {:?}",
            args.first
        ))
    });
    if args.port.is_some() {
        usage_error("with --join, give this node's HOST:PORT after its id, and no PORT");
    }
    let Some(me) = config::Member::at(id, &args.second) else {
        usage_error(&format!(
            "with --join, this node's address must be HOST:PORT, not {:?}",
            args.second
        ));
    };
    let dir = args.state_dir.join(format!("node{id}"));
    let recorded = raft::storage::state_file::recorded_identity(&dir).map(|i| i.cluster);
    let cluster_id = match recorded {
        Some(recorded) => recorded,
        None => ask_to_join(member, &me, args.cluster_id.clone()),
    };
    Start {
        id,
        cluster: config::ClusterConfig {
            path: PathBuf::from("(joined)"),
            members: vec![me],
            warnings: Vec::new(),
        },
        bootstrap: Membership::bootstrap([]),
        cluster_id: Some(cluster_id),
    }
}

/// The cluster id, from `member`'s view of the membership, after checking
/// that `me` may join with an empty state directory: its id never
/// removed, and not a member already (a member that lost its state may
/// have voted in terms it no longer knows: it must come back as a new
/// server, under a new id).
fn ask_to_join(member: &str, me: &config::Member, given: Option<String>) -> String {
    let Some(target) = config::Member::at(u64::MAX, member) else {
        usage_error(&format!("--join needs HOST:PORT, not {member:?}"));
    };
    let view = raft::client::members(&target, Duration::from_secs(5)).unwrap_or_else(|e| {
        let why = match e {
            raft::client::ClientError::Node { message, .. } => message,
            other => other.to_string(),
        };
        eprintln!(
            "raftnode: cannot learn the cluster from {member} (any running member will do): {why}"
        );
        exit(1)
    });
    let id = me.id;
    if view.removed.contains(&id) {
        usage_error(&format!(
            "node{id} was removed from cluster {}, and ids are never reused: add this server under a new id (raftctl add NEW_ID {})",
            view.cluster_id,
            me.address()
        ));
    }
    // (A learner's directory may be empty: one added before it was
    // started, or one that lost its log; it has never voted.)
    match view.members.iter().find(|m| m.id == id) {
        Some(m) if m.suffrage != raft::consensus::membership::Suffrage::Learner => {
            eprintln!(
                "raftnode: node{id} is already a member of cluster {}, and its state directory is empty: a member that lost its state may have voted in terms it no longer knows, so it cannot rejoin under its old id. Remove it (raftctl remove {id}) and add this machine as a new server (raftctl add NEW_ID {})",
                view.cluster_id,
                me.address()
            );
            exit(1)
        }
        Some(m) if m.address != me.address() => usage_error(&format!(
            "node{id} of cluster {} is at {}, not {}",
            view.cluster_id,
            m.address,
            me.address()
        )),
        Some(_) => {}
        None => eprintln!(
            "raftnode: node{id} is not yet a member of cluster {}: it waits until added (raftctl add {id} {})",
            view.cluster_id,
            me.address()
        ),
    }
    given.unwrap_or(view.cluster_id)
}

/// A node of config.txt starting on an empty state directory: if the
/// cluster has run and the leader knows this node acknowledged entries,
/// its state was lost (wiped, or another disk), and it refuses to start
/// rather than vote again in terms it may have voted in. Best effort: a
/// leader elected since knows no match index for it yet. At a cluster's
/// first start nobody has acknowledged anything, so nothing is refused.
fn refuse_if_state_was_lost(args: &Args, start: &Start) {
    let dir = args.state_dir.join(format!("node{}", start.id));
    if raft::storage::state_file::recorded_identity(&dir).is_some()
        || dir.join("log.synced").exists()
    {
        return;
    }
    let id = start.id;
    // From our own address, as every connection to a peer is.
    let bind = start
        .cluster
        .member(id)
        .and_then(|m| m.socket_addr().ok())
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let others = start.cluster.members.iter().filter(|m| m.id != id);
    for other in others {
        let request = raft::wire::Request::Members;
        let timeout = Duration::from_millis(500);
        let Ok(raft::wire::Response::Members(view)) =
            raft::transport::call_once_from(bind, other, &request, timeout)
        else {
            continue;
        };
        if view.leader_id != Some(view.node) {
            continue;
        }
        let removed = view.removed.contains(&id);
        let acknowledged = view
            .members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.match_index)
            .filter(|&m| m > 0);
        if removed || acknowledged.is_some() {
            let what = match acknowledged {
                Some(m) => format!(
                    "the leader, node{}, knows it holds entries up to index {m}",
                    view.node
                ),
                None => "it was removed from the cluster".to_string(),
            };
            eprintln!(
                "raftnode: node{id}'s state directory {} is empty, but {what}: its state was lost, and a server that lost its votes cannot rejoin under its old id. Remove it (raftctl remove {id}) and add this machine as a new server (raftctl add NEW_ID HOST:PORT, then raftnode --join)",
                dir.display()
            );
            exit(1)
        }
    }
}

/// The node's options from the flags (`min`, `max`: the election
/// timeout), checked by the library's one validation.
fn node_options(
    args: &Args,
    start: Start,
    (min, max): (u64, u64),
    tls: Option<raft::tls::Tls>,
) -> NodeOptions {
    let snapshot_threshold = SnapshotThreshold::parse(&args.snapshot_threshold)
        .unwrap_or_else(|e| usage_error(&format!("--snapshot-threshold: {e}")));
    let options = NodeOptions {
        raft: consensus::Config {
            election_timeout_min: Duration::from_millis(min),
            election_timeout_max: Duration::from_millis(max),
            heartbeat_interval: Duration::from_millis(args.heartbeat),
            max_inflight_appends: args.max_inflight,
            lease_reads: args.read_mode == "lease",
            max_clock_drift: args.max_clock_drift,
            bootstrap: start.bootstrap,
            // The seed differs between nodes and restarts, from the OS's
            // randomness.
            ..consensus::Config::new(start.id, [], rand::random())
        },
        storage: StateOptions {
            dir: args.state_dir.join(format!("node{}", start.id)),
            vote_floor: args.vote_floor,
            snapshot_threshold,
        },
        rpc_timeout: Duration::from_millis(args.rpc_timeout.unwrap_or(min / 2).max(1)),
        lab: args.lab,
        unsafe_local_reads: args.unsafe_local_reads,
        server: ServerOptions {
            max_connections: args.max_connections,
            idle_timeout: Duration::from_secs(args.idle_timeout),
            tls,
            ..ServerOptions::default()
        },
        listen: args
            .listen
            .as_ref()
            .map(|l| listen_address(l, &start.cluster, start.id)),
        cluster_id: start.cluster_id,
        cluster: start.cluster,
    };
    // The library's one validation; here only to name the flag at fault.
    if let Err(e) = options.validate() {
        let flag = match &e {
            NodeError::Config(InvalidConfig::ElectionTimeout(_)) => "--election-timeout",
            NodeError::Config(InvalidConfig::Heartbeat(_)) => "--heartbeat",
            NodeError::Config(InvalidConfig::Batches(_)) => "--max-inflight",
            NodeError::Config(InvalidConfig::ClockDrift(_)) => "--max-clock-drift",
            NodeError::Config(InvalidConfig::LeaseReads(_)) => "--read-mode",
            NodeError::Options("cluster id", _) => "--cluster-id",
            NodeError::Options("rpc timeout", _) => "--rpc-timeout",
            NodeError::Options(..) => "--max-connections or --idle-timeout",
            _ => "the configuration",
        };
        usage_error(&format!("{flag}: {e}"));
    }
    options
}

fn main() {
    // A panic in any thread is a bug that may leave the node's state
    // inconsistent: stop the whole process, as panic = "abort" does in
    // release builds, rather than let one thread die and the rest limp on.
    // (Set here rather than in the dev profile, so that debug builds share
    // their dependencies' compilation with the test binaries, which always
    // unwind.)
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    let args: Args = raft::cli::parse_or_exit("raftnode");
    // Before anything connects (--join asks a member first).
    let tls = setup_tls(&args);
    let start = match &args.join {
        None => bootstrap_start(&args),
        Some(member) => join_start(&args, member),
    };
    if args.join.is_none() {
        refuse_if_state_was_lost(&args, &start);
    }
    let Some((min, max)) = parse_range(&args.election_timeout) else {
        usage_error(&format!(
            "--election-timeout must look like 300..600, not {:?}",
            args.election_timeout
        ));
    };
    let id = start.id;
    let options = node_options(&args, start, (min, max), tls);
    let mut warnings = options.cluster.warnings.clone();
    if options.unsafe_local_reads {
        warnings.push(
            "--unsafe-local-reads: linearizable reads are answered from this node's own state, \
             without ReadIndex: NOT linearizable (for testing raftctl check only)"
                .to_string(),
        );
    }
    let log_path = raft::activity::init(id, &args.debug_dir).unwrap_or_else(|e| {
        eprintln!(
            "raftnode: cannot open the activity log in {}: {e}",
            args.debug_dir.display()
        );
        exit(1)
    });
    for w in &warnings {
        eprintln!("raftnode: warning: {w}");
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).unwrap_or_else(|e| {
        eprintln!("raftnode: cannot install signal handlers: {e}");
        exit(1)
    });
    let node = Node::start(options).unwrap_or_else(|e| {
        // The activity log is the running node's when it holds the state
        // directory: this process's failure is not part of its story.
        if !matches!(e, NodeError::Storage(StorageError::Locked { .. })) {
            log::error!("cannot start: {e}");
        }
        eprintln!("raftnode: {e}");
        exit(1)
    });
    for w in &warnings {
        log::warn!("{w}");
    }
    eprintln!(
        "raftnode: node{id} listening on {}; activity log {}",
        node.address(),
        log_path.display()
    );
    // A fatal error (a failed write or fsync) halts the node with its
    // lock held, so that nothing more is answered; the process then ends.
    // So does a removal from the cluster, which is no failure: the node
    // has stopped serving and recorded it.
    let failure = node.failure();
    std::thread::spawn(move || match failure.recv() {
        Ok(NodeError::Removed(why)) => {
            eprintln!("raftnode: {why}; exiting");
            log::logger().flush();
            exit(0)
        }
        Ok(e) => {
            eprintln!("raftnode: {e}");
            exit(1)
        }
        Err(_) => {}
    });
    let signal = signals.forever().next().unwrap_or(SIGTERM);
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    match node.stop(&format!("received {name}")) {
        Ok(()) => exit(0),
        Err(e) => {
            eprintln!("raftnode: {e}");
            exit(1)
        }
    }
}
