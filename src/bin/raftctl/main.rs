//! `raftctl`: a command-line client for the cluster. See `raftctl --help`.

use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raft::bench::{self, BenchOptions, Workload};
use raft::client::{self, Client, ClientError, ClientOptions};
use raft::config::{self, ClusterConfig};
use raft::consensus::Payload;
use raft::kv::Command as KvCommand;

/// `println!` for everything raftctl prints on standard output, which
/// ends the program quietly, with status 0, once whoever reads it has gone
/// (`raftctl log | head -1`): that reader wanted no more. Any other write
/// error is reported, with status 1.
macro_rules! say {
    ($($arg:tt)*) => {
        print_line(format_args!($($arg)*))
    };
}

mod check;
mod kv;
mod members;
mod snapshot;

fn print_line(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit(0),
        Err(e) => {
            eprintln!("raftctl: cannot write to standard output: {e}");
            exit(1)
        }
    }
}

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  definite failure: the operation did not happen (key not found, precondition failed, request rejected,
     no node running at any configured address)
  2  usage or configuration error
  3  unknown outcome (no answer in time: a write may or may not have happened) or no leader reachable";

#[derive(Parser)]
#[command(version, about = "Client for a Raft key-value cluster.", after_help = EXIT_CODES)]
struct Args {
    /// Cluster configuration file.
    #[arg(long, global = true, default_value = "./config.txt")]
    config: PathBuf,
    /// The cluster by its members' addresses instead of a configuration
    /// file (any one that runs is enough: it tells the rest), as etcdctl's
    /// --endpoints.
    #[arg(
        long,
        global = true,
        env = "RAFT_ENDPOINTS",
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    endpoints: Vec<String>,
    /// `json`: one JSON object per line from every command that prints
    /// (etcdctl's `-w json`); the same as a command's own --json.
    #[arg(
        short = 'w',
        long,
        global = true,
        default_value = "simple",
        value_parser = ["simple", "json"]
    )]
    write_out: String,
    /// Give up on an operation after this many milliseconds.
    #[arg(long, global = true, default_value_t = 5000, value_name = "MS")]
    timeout: u64,
    /// Connect with TLS, using the files `raftctl tls init` writes in DIR
    /// (ca.pem, client.pem, client-key.pem): for a cluster whose nodes run
    /// with --tls.
    #[arg(long, global = true, env = "RAFT_TLS", value_name = "DIR")]
    tls: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set KEY to VALUE; prints nothing, where etcdctl prints OK: exit status 0 says it was committed and applied.
    Put {
        /// Any UTF-8, up to 4 KiB.
        key: String,
        /// Any UTF-8, up to 1 MiB. Without it, the value is read from
        /// standard input, exactly as given (raftctl put big < file).
        value: Option<String>,
    },
    /// Print the value of KEY (linearizable, through the leader); with
    /// --prefix or --to, every key of the range, each followed by its value
    /// (etcdctl's layout).
    Get {
        /// The key to read (with --prefix: the prefix; with --to: the
        /// first key of the range).
        key: String,
        /// Every key starting with KEY ("" for all).
        #[arg(long)]
        prefix: bool,
        /// Keys from KEY up to TO (not included).
        #[arg(long, value_name = "TO")]
        to: Option<String>,
        /// At most this many keys (a range).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print the keys only (a range).
        #[arg(long)]
        keys_only: bool,
        /// One JSON object per key: {"key":…,"value":…}.
        #[arg(long)]
        json: bool,
        /// Read from whichever node answers (or --node): may be stale.
        #[arg(long)]
        stale: bool,
        /// With --stale: ask only this node.
        #[arg(long, requires = "stale")]
        node: Option<u64>,
    },
    /// Remove KEY; with --prefix, every key starting with it (in one
    /// command), printing how many went.
    Delete {
        /// The key to remove (exit 1 if it does not exist), or the prefix.
        key: String,
        /// Remove every key starting with KEY ("" for all).
        #[arg(long)]
        prefix: bool,
    },
    /// Set KEY to TO if its value is FROM.
    Cas {
        /// The key to compare and set.
        key: String,
        /// The value KEY must hold now (exit 1, printing what it holds, if not).
        from: String,
        /// The value to set.
        to: String,
    },
    /// Add DATA to the replicated log as a data entry; prints its index.
    Append {
        /// Any UTF-8, up to 1 MiB; changes no key. Without it, read from
        /// standard input.
        data: Option<String>,
    },
    /// Print a node's committed log: index, term, entry.
    Log {
        /// Whose log (default: the leader's).
        #[arg(long)]
        node: Option<u64>,
        /// First index to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Print the entries as a JSON array, as the nodes send them.
        #[arg(long)]
        json: bool,
    },
    /// Print the leader's id and address.
    Leader,
    /// Hand leadership to node ID (default: the most up-to-date follower)
    /// and print who leads now.
    Transfer {
        /// The node to lead (default: the most up-to-date follower).
        id: Option<u64>,
    },
    /// Take a snapshot now and compact the log, on every node or one;
    /// `snapshot save FILE` backs the store up to a file, `snapshot restore
    /// FILE` puts a backup's keys into a (new) cluster.
    Snapshot {
        /// Only this node (default: every node).
        #[arg(long)]
        node: Option<u64>,
        #[command(subcommand)]
        action: Option<SnapshotAction>,
    },
    /// Ask every node for its role, term, leader, commit and last log index.
    Status {
        /// Print a JSON array, one object per configured node.
        #[arg(long)]
        json: bool,
    },
    /// Closed-loop benchmark: puts, or linearizable gets with --reads.
    /// Ctrl-C (or SIGTERM) ends it early, with the summary so far.
    Bench {
        /// Client sessions, each with one operation in flight.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// How long to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Bytes in each value written.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        /// How many distinct keys to spread the operations over.
        #[arg(long, default_value_t = raft::bench::KEYS)]
        keys: u64,
        /// Linearizable reads (of keys written first) instead of writes.
        #[arg(long)]
        reads: bool,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show the membership: every server's address, voter or learner, and
    /// (from the leader) its match index, how far behind it is and when it
    /// last answered; `members set ID...` makes exactly those the voters.
    Members {
        /// Print a JSON array, one object per member (id, address,
        /// suffrage, match_index, lag, heard_ms, reachable).
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<MembersAction>,
    },
    /// Print the nodes the configuration file lists, as `ID HOST PORT`
    /// lines (for scripts; the cluster need not run). The file is where
    /// the cluster started: `members` shows what it is now.
    Nodes,
    /// Certificates for a TLS cluster.
    Tls {
        #[command(subcommand)]
        action: TlsAction,
    },
    /// Add a server: as a learner (it receives the log without voting),
    /// then, once caught up, as a voter. Prints the command that starts it.
    Add {
        /// A new id: never one that was removed.
        id: u64,
        /// Where the new server listens.
        #[arg(value_name = "HOST:PORT")]
        address: String,
        /// Stop once it is a learner (`raftctl promote ID` later).
        #[arg(long)]
        learner: bool,
        /// Give up (and remove it again) once it has made no progress for
        /// this long, starting it included.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        stall: u64,
        /// The cluster's longest election timeout: catching up ends with a
        /// round shorter than this [default: raftnode's default].
        #[arg(long, value_name = "MS")]
        election_timeout: Option<u64>,
    },
    /// Make learner ID a voter (refused while it lags the leader).
    Promote { id: u64 },
    /// Remove server ID, the leader included (it hands over first). The
    /// removed server exits, and its id is never used again.
    Remove { id: u64 },
    /// Without KEY: a live view of the cluster: every node's role, term,
    /// commit and log, the leader's view of its followers, and the latest
    /// events (q quits; plain text every second when not on a terminal).
    /// With KEY (or --prefix): print every change to it as it is applied
    /// (etcdctl's layout: PUT, key, value / DELETE, key), until
    /// interrupted, resuming on another node if the one followed stops.
    Watch {
        /// The key to follow (with --prefix: every key starting with it).
        key: Option<String>,
        #[arg(long)]
        prefix: bool,
        /// Start at this log index (while the node still holds the changes
        /// from there), instead of now.
        #[arg(long, value_name = "INDEX")]
        from: Option<u64>,
        /// One JSON object per change: {"index":…,"key":…,"value":…} or
        /// {"index":…,"key":…,"deleted":true}.
        #[arg(long)]
        json: bool,
    },
    /// Serve a live page of the cluster (nodes, logs, messages, events) at
    /// http://LISTEN/; with --lab, buttons that stop, kill, pause, restart
    /// and cut off the nodes of a local cluster.
    Web {
        /// Where to serve the page (port 0: any free port; the URL is
        /// printed). Anyone who can reach it sees the cluster, and with
        /// --lab can stop its nodes: keep it on 127.0.0.1 unless you mean it.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Lab controls, for a cluster booted by boot_all_nodes.sh (or
        /// restarted from the page): its pids are in STATE_DIR/pids.
        #[arg(long)]
        lab: bool,
        /// Where boot_all_nodes.sh keeps state and pids (its STATE_DIR).
        #[arg(long, default_value = "/tmp/state", requires = "lab")]
        state_dir: PathBuf,
        /// Where restarted nodes' output goes (boot_all_nodes.sh's DEBUG_DIR).
        #[arg(long, default_value = "/tmp/debug", requires = "lab")]
        debug_dir: PathBuf,
        /// The raftnode the lab trusts and restarts nodes with: it signals
        /// only processes running this file [default: the raftnode beside
        /// this raftctl].
        #[arg(long, value_name = "PATH", requires = "lab")]
        raftnode: Option<PathBuf>,
    },
    /// Test the cluster: clients read, write and compare-and-set a few
    /// keys while nodes are killed, paused, cut off, restarted and
    /// leadership moves (through the lab: start the nodes with
    /// `RAFTNODE_ARGS=--lab ./boot_all_nodes.sh`); then the history is
    /// checked for linearizability. Exit 0 linearizable, 1 not (the
    /// anomaly is printed), 3 could not decide.
    Check(check::Args),
    /// Print the nodes' recent events (what their activity logs record),
    /// merged by time; with --follow, then every new one as it happens.
    Events {
        /// Keep printing events as they happen, until interrupted.
        #[arg(long)]
        follow: bool,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
        /// Only this node's events.
        #[arg(long)]
        node: Option<u64>,
        /// With --follow: also every Raft message each node sends and
        /// receives (heartbeats included: many lines).
        #[arg(long, requires = "follow")]
        messages: bool,
    },
}

#[derive(Subcommand)]
enum TlsAction {
    /// Create a certificate authority for this cluster, a certificate for
    /// each node of the configuration (naming its host and node<ID>.raft)
    /// and one for clients, in DIR (never overwriting a file); then start
    /// the nodes with `--tls DIR` and run raftctl with `--tls DIR`.
    Init {
        #[arg(long, default_value = "./tls", value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue a certificate for a server to be added (raftctl add ID
    /// HOST:PORT): node<ID>.pem and node<ID>-key.pem in DIR, signed with
    /// DIR/ca.pem and DIR/ca-key.pem (as `tls init` wrote them).
    Add {
        id: u64,
        /// The host the others reach it at (a name or an address).
        host: String,
        #[arg(long, default_value = "./tls", value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// Save the whole store, as of a linearizable read through the
    /// leader, to FILE (written aside, fsynced, renamed).
    Save { file: PathBuf },
    /// Put every key of the backup FILE into the cluster (start a new
    /// cluster, then restore into it).
    Restore {
        file: PathBuf,
        /// Clients writing at once.
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
}

#[derive(Subcommand)]
enum MembersAction {
    /// Make exactly these servers the voters, in one safe step (joint
    /// consensus when more than one voter changes): learners among them
    /// are promoted, voters not among them removed.
    Set {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
}

/// Reports `e` and exits with its code: 1 when the operation definitely
/// did not happen, else 3.
fn fail(e: &ClientError) -> ! {
    eprintln!("raftctl: {e}");
    exit(if e.is_definite() { 1 } else { 3 })
}

/// The cluster as the first of `endpoints` that answers describes it (its
/// members and their addresses), or exit 1 naming what each said.
fn from_endpoints(endpoints: &[String], timeout_ms: u64) -> ClusterConfig {
    let timeout = Duration::from_millis(timeout_ms.min(1000));
    let mut errors = Vec::new();
    for endpoint in endpoints {
        let Some(member) = config::Member::at(u64::MAX, endpoint.trim()) else {
            eprintln!("raftctl: --endpoints: {endpoint:?} is not HOST:PORT");
            exit(2);
        };
        match client::members(&member, timeout) {
            Ok(view) => {
                return ClusterConfig {
                    path: PathBuf::from(format!("--endpoints {}", endpoints.join(","))),
                    members: view
                        .members
                        .iter()
                        .filter_map(|m| config::Member::at(m.id, &m.address))
                        .collect(),
                    warnings: Vec::new(),
                };
            }
            Err(client::ClientError::Node { message, .. }) => errors.push(message),
            Err(e) => errors.push(format!("{endpoint}: {e}")),
        }
    }
    eprintln!(
        "raftctl: no endpoint answered ({}); nothing was done",
        errors.join("; ")
    );
    exit(1)
}

/// The cluster's configuration, or exit 2 saying what is wrong with it.
fn load_config(path: &Path) -> ClusterConfig {
    let cluster = config::load(path).unwrap_or_else(|e| {
        match &e {
            config::ConfigError::Read { .. } => eprintln!(
                "raftctl: {e}; name the cluster's configuration with --config FILE (the default, ./config.txt, is looked for in the current directory, {})",
                std::env::current_dir().map_or("?".into(), |d| d.display().to_string())
            ),
            _ => eprintln!("raftctl: {e}"),
        }
        exit(2)
    });
    for w in &cluster.warnings {
        eprintln!("raftctl: warning: {w}");
    }
    cluster
}

/// `raftctl watch KEY` / `--prefix P`: follows the leader's change feed,
/// printing each change; reconnects (to whoever leads then) from the next
/// index when the stream breaks.
fn watch_keys(client: &mut Client, key: String, prefix: bool, from: Option<u64>, json: bool) {
    let mut next = from;
    loop {
        let leader = client.leader().unwrap_or_else(|e| fail(&e));
        let request = raft::wire::Request::Watch {
            key: key.clone(),
            prefix,
            from: next,
        };
        let lines = match raft::client::stream(&leader, &request, Duration::from_secs(5)) {
            Ok(lines) => lines,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        for response in lines {
            match response {
                raft::wire::Response::Watching { from } => next = Some(from),
                raft::wire::Response::Progress { applied_index } => {
                    next = Some(next.unwrap_or(0).max(applied_index + 1));
                }
                change @ raft::wire::Response::Change { .. } => {
                    let raft::wire::Response::Change {
                        index,
                        key,
                        value,
                        deleted,
                    } = &change
                    else {
                        unreachable!()
                    };
                    next = Some(index + 1);
                    if json {
                        let line = serde_json::json!({"index": index, "key": key, "value": value, "deleted": deleted});
                        say!("{line}");
                    } else if *deleted {
                        say!("DELETE\n{key}");
                    } else {
                        say!("PUT\n{key}\n{}", value.as_deref().unwrap_or(""));
                    }
                }
                raft::wire::Response::Error { message, .. } => {
                    eprintln!("raftctl: watch: {message}");
                    exit(1)
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Keys and values as etcdctl prints them (a key line, then its value),
/// or one JSON object per key.
fn print_range(kvs: &[raft::wire::KeyValue], json: bool) {
    for kv in kvs {
        if json {
            say!("{}", serde_json::to_string(kv).expect("strings serialize"));
            continue;
        }
        say!("{}", kv.key);
        if let Some(value) = &kv.value {
            say!("{value}");
        }
    }
}

/// `raftctl leader` and `raftctl transfer`.
fn leadership(
    client: &mut Client,
    cluster: &ClusterConfig,
    path: &Path,
    command: Command,
    json_out: bool,
) {
    match command {
        Command::Leader => {
            let m = client.leader().unwrap_or_else(|e| fail(&e));
            if json_out {
                say!(
                    "{}",
                    serde_json::json!({"id": m.id, "address": m.address()})
                );
            } else {
                say!("{} {}", m.id, m.address());
            }
        }
        Command::Transfer { id } => {
            require_member(cluster, id, path);
            let (from, to, term, millis) = client.transfer(id).unwrap_or_else(|e| fail(&e));
            if json_out {
                let moved =
                    serde_json::json!({"from": from, "to": to, "term": term, "millis": millis});
                say!("{moved}");
            } else if from == to {
                say!("node{to} leads term {term} already");
            } else {
                say!("leadership moved from node{from} to node{to} (term {term}) in {millis} ms");
            }
        }
        _ => unreachable!("not a leadership command"),
    }
}

/// Exits 2 unless node `id` (if given) is a member.
fn require_member(cluster: &ClusterConfig, id: Option<u64>, path: &Path) {
    if let Some(id) = id.filter(|&id| cluster.member(id).is_none()) {
        eprintln!(
            "raftctl: node {id} is not a member of the cluster {} describes",
            path.display()
        );
        exit(2);
    }
}

fn main() {
    let args: Args = raft::cli::parse_or_exit("raftctl");
    if let Command::Tls {
        action: action @ TlsAction::Add { .. },
    } = &args.command
    {
        return tls_add(action);
    }
    // Checking a saved history needs no cluster.
    if let Command::Check(
        check @ check::Args {
            replay: Some(file), ..
        },
    ) = &args.command
    {
        check::replay(check, file)
    }
    let from_file = if args.endpoints.is_empty() {
        load_config(&args.config)
    } else {
        from_endpoints(&args.endpoints, args.timeout)
    };
    if let Command::Nodes = args.command {
        return members::nodes(&from_file, args.write_out == "json");
    }

    if let Command::Tls { action } = &args.command {
        return tls_command(&from_file, action);
    }
    if let Some(dir) = &args.tls {
        let files = raft::tls::TlsFiles::client(dir);
        let tls = raft::tls::Tls::for_client(&files).unwrap_or_else(|e| {
            eprintln!(
                "raftctl: --tls: {e} (raftctl tls init --out {} makes them)",
                dir.display()
            );
            exit(2)
        });
        raft::tls::connect_with(tls).expect("set once, at the start");
    }
    // The members as they are now, which the file may no longer say.
    let cluster = client::current_config(&from_file, Duration::from_millis(args.timeout.min(1000)));
    let options = ClientOptions {
        timeout: Duration::from_millis(args.timeout),
        ..ClientOptions::default()
    };
    let mut client = Client::new(cluster.clone(), options);
    let json_out = args.write_out == "json";
    match args.command {
        Command::Nodes | Command::Tls { .. } => unreachable!("answered above"),
        command @ (Command::Members { .. }
        | Command::Add { .. }
        | Command::Promote { .. }
        | Command::Remove { .. }) => members::run(&mut client, &cluster, command, json_out),
        command @ (Command::Put { .. }
        | Command::Get { .. }
        | Command::Delete { .. }
        | Command::Cas { .. }
        | Command::Append { .. }) => {
            kv::run(&mut client, &cluster, &args.config, command, json_out)
        }
        command @ (Command::Leader | Command::Transfer { .. }) => {
            leadership(&mut client, &cluster, &args.config, command, json_out)
        }
        Command::Log { node, from, json } => print_log(
            &mut client,
            &cluster,
            &args.config,
            node,
            from,
            json || json_out,
        ),
        Command::Status { json } => status(&cluster, args.timeout, json || json_out, &args.config),
        Command::Web {
            listen,
            lab,
            state_dir,
            debug_dir,
            raftnode,
        } => {
            let lab = lab
                .then(|| raft::web::lab::Lab::new(cluster.clone(), state_dir, debug_dir, raftnode));
            web(&cluster, lab, &listen)
        }
        Command::Watch {
            key: None,
            prefix: false,
            ..
        } => raft::dashboard::run(&cluster).unwrap_or_else(|e| {
            eprintln!("raftctl: watch: {e}");
            exit(1)
        }),
        Command::Watch {
            key,
            prefix,
            from,
            json,
        } => watch_keys(&mut client, key.unwrap_or_default(), prefix, from, json),
        Command::Events {
            follow,
            json,
            node,
            messages,
        } => events(
            &cluster,
            &args.config,
            args.timeout,
            (follow, json, node, messages),
        ),
        Command::Snapshot { node, action } => match action {
            None => snapshot::take(&mut client, &cluster, &args.config, node, json_out),
            Some(action) => snapshot::backup(&mut client, &cluster, action, args.timeout, json_out),
        },
        Command::Check(check) => check::run(&cluster, check),
        Command::Bench {
            clients,
            seconds,
            value_bytes,
            keys,
            reads,
            json,
        } => run_bench(&cluster, clients, seconds, value_bytes, keys, reads, json),
    }
}

/// An error as one short clause: without "(os error N)" and the
/// node's prefix.
fn short_reason(e: &str) -> String {
    let e = e.split(" (os error").next().unwrap_or(e);
    let e = e.split_once(": ").map_or(
        e,
        |(head, rest)| {
            if head.starts_with("node") { rest } else { e }
        },
    );
    e.to_string()
}

/// `raftctl tls add`: needs no configuration file.
fn tls_add(action: &TlsAction) {
    let TlsAction::Add { id, host, dir } = action else {
        unreachable!("called for tls add")
    };
    let written = raft::tls::certs::add_node(dir, *id, host).unwrap_or_else(|e| {
        eprintln!("raftctl: tls add: {e}");
        exit(1)
    });
    for path in &written {
        say!("{}", path.display());
    }
}

/// `raftctl tls init` and `raftctl tls add`.
fn tls_command(cluster: &ClusterConfig, action: &TlsAction) {
    let out = match action {
        TlsAction::Init { out } => out,
        TlsAction::Add { .. } => return tls_add(action),
    };
    let written = raft::tls::certs::init(cluster, out).unwrap_or_else(|e| {
        eprintln!("raftctl: tls init: {e}");
        exit(1)
    });
    for path in &written {
        say!("{}", path.display());
    }
    say!(
        "start each node with --tls {dir} and run raftctl with --tls {dir}; {} signs more certificates: keep it off the nodes",
        raft::tls::certs::CA_KEY,
        dir = out.display()
    );
}

/// `raftctl web`: serves the live page (with the lab's controls if
/// `lab`) until interrupted.
fn web(cluster: &ClusterConfig, lab: Option<raft::web::lab::Lab>, listen: &str) {
    let web = raft::web::Web::new(cluster.clone(), lab);
    let served = web.serve(listen, |address| {
        say!("http://{address}/");
    });
    if let Err(e) = served {
        eprintln!("raftctl: web: cannot serve on {listen}: {e}");
        exit(1);
    }
}

/// `raftctl events`: recent events of one node or all, or (`follow`)
/// every event from now on.
fn events(
    cluster: &ClusterConfig,
    config: &Path,
    timeout: u64,
    (follow, json, node, messages): (bool, bool, Option<u64>, bool),
) {
    if let Some(id) = node.filter(|&id| cluster.member(id).is_none()) {
        eprintln!("raftctl: node {id} is not in {}", config.display());
        exit(2);
    }
    let print = |e: &raft::events::NodeEvent| {
        if json {
            say!("{}", serde_json::to_string(e).expect("events serialize"));
        } else {
            say!("{}", e.line());
        }
    };
    if follow {
        follow_events(cluster, node, messages, json, print);
    } else {
        recent_events(cluster, node, timeout, print);
    }
}

/// `raftctl log`: node `node`'s log (the leader's by default) from
/// `from`, as a table or JSON.
fn print_log(
    client: &mut Client,
    cluster: &ClusterConfig,
    config: &Path,
    node: Option<u64>,
    from: u64,
    json: bool,
) {
    let id = match node {
        Some(id) if cluster.member(id).is_none() => {
            eprintln!("raftctl: node {id} is not in {}", config.display());
            exit(2);
        }
        Some(id) => id,
        None => client.leader().unwrap_or_else(|e| fail(&e)).id,
    };
    let mut from = from.max(1);
    let mut all = Vec::new();
    loop {
        let (entries, commit, first) = client.log(id, from, 1000).unwrap_or_else(|e| fail(&e));
        let skipped = from < first;
        if skipped {
            eprintln!(
                "raftctl: entries {from}..{} of node{id} are compacted into its snapshot; printing from {first}",
                first - 1
            );
            from = first;
        }
        let got = entries.len() as u64;
        all.extend(entries);
        from += got;
        // (A node that answered nothing for a window below its
        // first index is asked again from there.)
        if (got == 0 && !skipped) || from > commit {
            break;
        }
    }
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&all).expect("entries serialize")
        );
    } else {
        say!("{:>7} {:>6}  ENTRY", "INDEX", "TERM");
        for e in &all {
            let text = match &e.payload {
                Payload::Noop => "(no-op: new leader)".to_string(),
                Payload::Membership(m) => format!("(membership: {m})"),
                Payload::Command(d) => match KvCommand::decode(d) {
                    Some(c) => {
                        format!("client {} #{}: {}", c.client, c.seq, describe(&c.op))
                    }
                    None => d.text().to_string(),
                },
            };
            say!("{:>7} {:>6}  {text}", e.index, e.term);
        }
    }
}

/// `raftctl bench`: a closed-loop run of writes or reads.
fn run_bench(
    cluster: &ClusterConfig,
    clients: usize,
    seconds: u64,
    value_bytes: usize,
    keys: u64,
    reads: bool,
    json: bool,
) {
    if clients == 0 || seconds == 0 {
        eprintln!("raftctl: --clients and --seconds must be at least 1");
        exit(2);
    }
    let workload = if reads {
        Workload::Reads
    } else {
        Workload::Writes
    };
    let what = if reads {
        "linearizable reads"
    } else {
        "writes"
    };
    eprintln!(
        "bench: {what}, {clients} clients, {seconds} s, {value_bytes}-byte values, closed loop"
    );
    // Ctrl-C (or SIGTERM) ends the run early, with its report.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, interrupted.clone()) {
            eprintln!("raftctl: cannot handle signal {signal}: {e}");
            exit(1);
        }
    }
    let opts = BenchOptions {
        interrupted,
        clients,
        duration: Duration::from_secs(seconds),
        value_bytes,
        workload,
        keys,
        progress: !json,
    };
    let r = bench::run(cluster, &opts);
    if json {
        say!("{}", r.summary(&opts));
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    say!(
        "{} {what} in {:.1} s: {:.0}/s; latency ms p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}; {} errors",
        r.ops,
        r.elapsed.as_secs_f64(),
        r.throughput(),
        ms(r.percentile(0.5)),
        ms(r.percentile(0.9)),
        ms(r.percentile(0.99)),
        ms(r.percentile(1.0)),
        r.errors
    );
}

/// All of standard input, exactly, for a `what` not given as an argument
/// (a value too long for a command line: `raftctl put big < file`).
fn read_stdin(what: &str) -> String {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        eprintln!("raftctl: reading the {what} from standard input; end it with Ctrl-D");
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("raftctl: cannot read the {what} from standard input: {e}");
        exit(2)
    }
    String::from_utf8(bytes).unwrap_or_else(|e| {
        eprintln!(
            "raftctl: the {what} on standard input is not UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        );
        exit(2)
    })
}

/// `raftctl events`: every node's recent events, merged by time.
fn recent_events(
    cluster: &config::ClusterConfig,
    node: Option<u64>,
    timeout_ms: u64,
    print: impl Fn(&raft::events::NodeEvent),
) {
    let timeout = Duration::from_millis(timeout_ms.min(1000));
    let members: Vec<_> = cluster
        .members
        .iter()
        .filter(|m| node.is_none_or(|id| id == m.id))
        .cloned()
        .collect();
    let mut all = Vec::new();
    let mut reached = 0;
    for answer in client::recent_events_all(&members, timeout) {
        match answer {
            Ok(events) => {
                reached += 1;
                all.extend(events);
            }
            Err(e) => eprintln!("raftctl: {e}"),
        }
    }
    all.sort_by_key(|e| (e.time_ms, e.node, e.seq));
    all.iter().for_each(print);
    if reached == 0 {
        exit(3);
    }
}

/// `raftctl events --follow`: the recent events, then new ones as they
/// happen, held a moment to merge the nodes' streams in time order.
fn follow_events(
    cluster: &config::ClusterConfig,
    node: Option<u64>,
    messages: bool,
    json: bool,
    print: impl Fn(&raft::events::NodeEvent),
) {
    use raft::observe::{FeedOptions, Reorder, Update};
    let options = FeedOptions {
        messages,
        status_every: Duration::from_secs(1),
        ..FeedOptions::default()
    };
    let feed = raft::observe::follow(cluster, &node.into_iter().collect::<Vec<_>>(), options);
    let mut reorder = Reorder::new(Duration::from_millis(150));
    loop {
        match feed.recv_timeout(Duration::from_millis(50)) {
            Ok(Update::Event(e)) => reorder.push(*e, std::time::Instant::now()),
            Ok(Update::Unreachable { node, error }) if !json => {
                eprintln!("raftctl: node{node} unreachable ({error}); retrying")
            }
            Ok(Update::Connected { node }) if !json => eprintln!("raftctl: following node{node}"),
            Ok(_) | Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return,
        }
        reorder
            .ready(std::time::Instant::now())
            .iter()
            .for_each(&print);
    }
}

fn describe(op: &raft::kv::Op) -> String {
    use raft::kv::Op;
    match op {
        Op::Put { key, value } => format!("put {key:?} = {value:?}"),
        Op::Delete { key } => format!("delete {key:?}"),
        Op::Cas { key, from, to } => format!("cas {key:?} {from:?} -> {to:?}"),
        Op::Append { data } => format!("append {data:?}"),
        Op::DeletePrefix { prefix } => format!("delete every key starting with {prefix:?}"),
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

fn status(cluster: &config::ClusterConfig, timeout_ms: u64, json: bool, path: &std::path::Path) {
    let rows = client::status_all(cluster, Duration::from_millis(timeout_ms.min(1000)));
    if json {
        let array: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let s = r.status.as_ref().ok();
                serde_json::json!({
                    "id": r.member.id,
                    "address": r.member.address(),
                    "reachable": s.is_some(),
                    "role": s.map(|s| s.role.clone()),
                    "term": s.map(|s| s.term),
                    "leader_id": s.and_then(|s| s.leader_id),
                    "commit_index": s.map(|s| s.commit_index),
                    "last_log_index": s.map(|s| s.last_log_index),
                    "last_applied": s.map(|s| s.last_applied),
                    "snapshot_index": s.map(|s| s.snapshot_index),
                    "snapshot_bytes": s.map(|s| s.snapshot_bytes),
                    "log_entries": s.map(|s| s.log_entries),
                    "log_bytes": s.map(|s| s.log_bytes),
                    "repairing_through": s.and_then(|s| s.repairing_through),
                })
            })
            .collect();
        say!(
            "{}",
            serde_json::to_string_pretty(&array).expect("JSON values serialize")
        );
    } else {
        say!(
            "{:<4} {:<22} {:<12} {:>6} {:>7} {:>8} {:>9} {:>9} {:>9} {:>10}",
            "ID",
            "ADDRESS",
            "ROLE",
            "TERM",
            "LEADER",
            "COMMIT",
            "LAST LOG",
            "SNAPSHOT",
            "LOG LEN",
            "LOG SIZE"
        );
        for r in &rows {
            match &r.status {
                Ok(s) => say!(
                    "{:<4} {:<22} {:<12} {:>6} {:>7} {:>8} {:>9} {:>9} {:>9} {:>10}",
                    r.member.id,
                    r.member.address(),
                    s.role,
                    s.term,
                    s.leader_id.map_or("-".into(), |l| l.to_string()),
                    s.commit_index,
                    s.last_log_index,
                    s.snapshot_index,
                    s.log_entries,
                    human_bytes(s.log_bytes)
                ),
                // Why, briefly: refused, timed out, TLS required, …
                Err(e) => say!(
                    "{:<4} {:<22} {:<12} {}",
                    r.member.id,
                    r.member.address(),
                    "unreachable",
                    short_reason(&e.to_string())
                ),
            }
        }
    }
    for r in &rows {
        if let Ok(s) = &r.status
            && let Some(through) = s.repairing_through
            && !json
        {
            say!(
                "node{} is repairing: its storage lost entries up to {through} that it may have acknowledged (its log now ends at {}); it neither votes nor stands until the leader has sent them again",
                r.member.id,
                s.last_log_index
            );
        }
    }
    if rows.iter().all(|r| r.status.is_err()) {
        eprintln!("raftctl: no node of {} could be reached", path.display());
        exit(3);
    }
}
