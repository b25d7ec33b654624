//! Transcript tests of the core, in the manner of etcd-io/raft's
//! datadriven testdata: each file in tests/transcripts/ drives a few
//! `consensus::Raft` servers by hand, one command at a time, and records
//! what each did, in the words of the activity log. Read one to see how a
//! rule behaves; change a rule and the transcripts show what moved.
//!
//! A file is a run of blocks, each a command, a `----` line, and the
//! output expected, ending at a blank line (`#` lines are comments):
//!
//! ```text
//! tick 1
//! ----
//! 1: pre-vote started for term 1 (last log index 0, term 0)
//! ```
//!
//! Commands (servers are numbered from 1):
//!
//! * `cluster N [figure2]`: N fresh servers; PreVote and CheckQuorum on
//!   unless `figure2`. Election timeouts are drawn from a seed per server,
//!   so a transcript replays exactly.
//! * `tick ID`: the clock moves to server ID's next deadline (its election
//!   timeout, or a leader's CheckQuorum check) and ID acts on it.
//! * `wait MS`: the clock moves on by MS milliseconds; nobody is told.
//! * `deliver`: every server sends what it has to send, and every message
//!   is delivered and answered, until nothing is left; each message is
//!   printed as it arrives. Messages to or from a cut-off server are lost.
//! * `propose ID TEXT`, `transfer ID TO`: as a client and an operator would.
//! * `change ID remove X` / `change ID promote X` / `change ID set X Y…`:
//!   server ID, leading, is asked to change the membership (as
//!   `raftctl remove`, `promote` and `members set` ask).
//! * `compact ID`: server ID snapshots its state machine as far as it has
//!   committed, and drops the log the snapshot covers (no trailing
//!   entries here); the snapshot goes to followers in 16-byte chunks.
//! * `cut ID` / `reconnect ID`: a server's network goes and comes back.
//! * `crash ID` / `restart ID`: a server loses everything but its disk
//!   (writes are durable at once here), and starts again from it; the
//!   others see their connections to it fail.
//! * `lose ID N`: a stopped server's disk loses its last N entries, as
//!   storage recovery leaves it after damage to a synced tail (the loss
//!   marked in its hard state).
//! * `status`: each server's role, term, leader, log and commit index.
//!
//! `REWRITE=1 cargo test --test transcripts` writes what the code does now
//! as the expected output (check the diff before committing it).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use raft::activity::describe;
use raft::consensus::{Config, Entry, HardState, Json, NodeId, Raft, Reply, Request, SnapshotMeta};

struct Server {
    raft: Option<Raft>,
    /// What survives a crash: written durably as soon as handed out.
    disk: (HardState, Vec<Entry>),
    /// The latest snapshot and its bytes (a stand-in for the state).
    snapshot: Option<(SnapshotMeta, String)>,
    /// A snapshot being received from the leader.
    receiving: String,
    cfg: Config,
}

/// Snapshot bytes per InstallSnapshot chunk: small, to show chunking.
const CHUNK: usize = 16;

struct Cluster {
    servers: Vec<Server>,
    now: Duration,
    cut: BTreeSet<NodeId>,
}

impl Cluster {
    fn new(n: u64, figure2: bool) -> Cluster {
        let servers = (1..=n)
            .map(|id| {
                let cfg = Config {
                    pre_vote: !figure2,
                    check_quorum: !figure2,
                    // A snapshot drops every entry it covers.
                    trailing_entries: 0,
                    ..Config::new(id, 1..=n, id)
                };
                Server {
                    raft: Some(Raft::new(
                        cfg.clone(),
                        HardState::default(),
                        vec![],
                        Duration::ZERO,
                    )),
                    disk: (HardState::default(), vec![]),
                    snapshot: None,
                    receiving: String::new(),
                    cfg,
                }
            })
            .collect();
        Cluster {
            servers,
            now: Duration::ZERO,
            cut: BTreeSet::new(),
        }
    }

    fn raft(&mut self, id: NodeId) -> &mut Raft {
        self.servers[id as usize - 1]
            .raft
            .as_mut()
            .unwrap_or_else(|| panic!("server {id} is down"))
    }

    fn up(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.servers
            .iter()
            .filter(|s| s.raft.is_some())
            .map(|s| s.cfg.id)
    }

    /// Takes server `id`'s Ready: its writes become durable at once, and
    /// its events are printed.
    fn settle(&mut self, id: NodeId, out: &mut String) {
        let server = &mut self.servers[id as usize - 1];
        let Some(raft) = server.raft.as_mut() else {
            return;
        };
        let ready = raft.take_ready();
        if let Some(hs) = ready.hard_state {
            server.disk.0 = hs;
        }
        for chunk in &ready.snapshot_chunks {
            if chunk.offset == 0 {
                server.receiving.clear();
            }
            server.receiving.push_str(&chunk.data);
        }
        if let Some(installed) = ready.installed_snapshot {
            let bytes = std::mem::take(&mut server.receiving);
            server.snapshot = Some((installed.snapshot, bytes));
        }
        let (index, term) = (raft.log().last_index(), raft.log().last_term());
        server.disk.1 = raft.log().entries().to_vec();
        raft.persisted(index, term);
        for event in &ready.events {
            let (_, text) = describe(event);
            if !text.starts_with("appended") {
                let _ = writeln!(out, "{id}: {text}");
            }
        }
        if raft.has_ready() {
            self.settle(id, out);
        }
    }

    fn settle_all(&mut self, out: &mut String) {
        for id in self.up().collect::<Vec<_>>() {
            self.settle(id, out);
        }
    }

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        !self.cut.contains(&a) && !self.cut.contains(&b)
    }

    /// Sends and answers until nobody has anything more to send.
    fn deliver(&mut self, out: &mut String) {
        for _round in 0..1000 {
            let mut sent = false;
            let ids: Vec<NodeId> = self.up().collect();
            for &from in &ids {
                for to in 1..=self.servers.len() as NodeId {
                    if to == from {
                        continue;
                    }
                    let now = self.now;
                    while let Some(mut request) = self.raft(from).poll_peer(to, now) {
                        sent = true;
                        // The caller fills a snapshot chunk in from its file.
                        if let Request::InstallSnapshot(r) = &mut request {
                            let (_, bytes) = self.servers[from as usize - 1]
                                .snapshot
                                .as_ref()
                                .expect("a snapshot to send");
                            let start = r.offset as usize;
                            r.data = bytes[start..(start + CHUNK).min(bytes.len())].to_string();
                        }
                        // What building it did (a transfer started, say)
                        // comes before the message.
                        self.settle(from, out);
                        let up = self.servers[to as usize - 1].raft.is_some();
                        if !self.connected(from, to) || !up {
                            self.raft(from).handle_failure(to, now);
                            self.settle(from, out);
                            continue;
                        }
                        let _ = writeln!(out, "{from}->{to} {}", request_text(&request));
                        let reply = self.raft(to).handle_request(from, request, now);
                        self.settle(to, out);
                        match reply {
                            Ok(reply) => {
                                let _ = writeln!(out, "{to}->{from} {}", reply_text(&reply));
                                let _ = self.raft(from).handle_reply(to, reply, now);
                            }
                            Err(e) => {
                                let _ = writeln!(out, "{to}->{from} refused: {e}");
                                self.raft(from).handle_failure(to, now);
                            }
                        }
                        self.settle(from, out);
                    }
                }
            }
            if !sent {
                return;
            }
        }
        panic!("messages never stopped");
    }

    fn run(&mut self, command: &str) -> String {
        let mut out = String::new();
        let words: Vec<&str> = command.split_whitespace().collect();
        let id = |k: usize| -> NodeId { words[k].parse().expect("a server id") };
        match words[0] {
            "tick" => {
                let deadline = self.raft(id(1)).tick_deadline().expect("a deadline");
                self.now = self.now.max(deadline);
                let now = self.now;
                self.raft(id(1)).tick(now);
                self.settle(id(1), &mut out);
            }
            "wait" => self.now += Duration::from_millis(words[1].parse().unwrap()),
            "deliver" => self.deliver(&mut out),
            "propose" => {
                let text = words[2..].join(" ");
                match self.raft(id(1)).propose(Json::string(&text)) {
                    Ok((index, term)) => {
                        let _ = writeln!(out, "{}: proposed at index {index}, term {term}", id(1));
                    }
                    Err(e) => {
                        let _ = writeln!(out, "{}: refused: {e:?}", id(1));
                    }
                }
                self.settle(id(1), &mut out);
            }
            "transfer" => {
                let now = self.now;
                match self.raft(id(1)).transfer_leadership(Some(id(2)), now) {
                    Ok(_) => {}
                    Err(e) => {
                        let _ = writeln!(out, "{}: refused: {e}", id(1));
                    }
                }
                self.settle(id(1), &mut out);
            }
            "change" => {
                use raft::consensus::membership::Change;
                let ids: Vec<NodeId> = words[3..].iter().map(|w| w.parse().unwrap()).collect();
                let change = match words[2] {
                    "remove" => Change::Remove(ids[0]),
                    "promote" => Change::Promote(ids[0]),
                    "set" => Change::SetVoters(ids.into_iter().collect()),
                    other => panic!("unknown change {other}"),
                };
                let now = self.now;
                match self.raft(id(1)).propose_change(&change, now) {
                    Ok((index, m)) => {
                        let _ = writeln!(out, "{}: membership change at index {index}: {m}", id(1));
                    }
                    Err(e) => {
                        let _ = writeln!(out, "{}: refused: {e}", id(1));
                    }
                }
                self.settle(id(1), &mut out);
            }
            "cut" => {
                self.cut.insert(id(1));
            }
            "reconnect" => {
                self.cut.remove(&id(1));
            }
            "compact" => {
                // A snapshot of the state machine as far as it is committed.
                let raft = self.raft(id(1));
                let index = raft.commit_index();
                let term = raft.log().term_at(index).expect("a committed entry");
                let bytes = format!("the state after entries 1 to {index}");
                let meta = SnapshotMeta {
                    last_index: index,
                    last_term: term,
                    size: bytes.len() as u64,
                    crc32: crc32fast::hash(bytes.as_bytes()),
                };
                raft.compact(meta).expect("a newer snapshot");
                self.servers[id(1) as usize - 1].snapshot = Some((meta, bytes));
                self.settle(id(1), &mut out);
            }
            "crash" => {
                self.servers[id(1) as usize - 1].raft = None;
                // Its connections break: the others' requests to it fail,
                // as the runtime reports a connection that broke.
                let now = self.now;
                for other in self.up().collect::<Vec<_>>() {
                    self.raft(other).handle_failure(id(1), now);
                    self.settle(other, &mut out);
                }
            }
            "lose" => {
                // What storage recovery keeps when the end of a log it had
                // synced is damaged: the rest, and the mark of the loss.
                let server = &mut self.servers[id(1) as usize - 1];
                assert!(server.raft.is_none(), "a stopped server's disk");
                let (hs, log) = &mut server.disk;
                let had = log.last().map_or(0, |e| e.index);
                let n: usize = words[2].parse().unwrap();
                log.truncate(log.len().saturating_sub(n));
                hs.lost_through = had;
                hs.lost_term = hs.term;
                let _ = writeln!(out, "{}: lost entries up to {had}", id(1));
            }
            "restart" => {
                let server = &mut self.servers[id(1) as usize - 1];
                let (hs, log) = server.disk.clone();
                let meta = server
                    .snapshot
                    .as_ref()
                    .map_or(SnapshotMeta::default(), |s| s.0);
                let log = log
                    .into_iter()
                    .filter(|e| e.index > meta.last_index)
                    .collect();
                server.raft = Some(Raft::restore(
                    server.cfg.clone(),
                    hs,
                    (meta, None),
                    log,
                    self.now,
                ));
                self.settle(id(1), &mut out);
            }
            "status" => {
                for s in &self.servers {
                    let Some(r) = &s.raft else {
                        let _ = writeln!(out, "{}: down", s.cfg.id);
                        continue;
                    };
                    let _ = writeln!(
                        out,
                        "{}: {} term {} leader {} log {} (last term {}) commit {}",
                        s.cfg.id,
                        r.role(),
                        r.term(),
                        r.leader_id().map_or("-".into(), |l| l.to_string()),
                        r.log().last_index(),
                        r.log().last_term(),
                        r.commit_index()
                    );
                }
            }
            other => panic!("no command {other:?}"),
        }
        self.settle_all(&mut out);
        if out.is_empty() {
            out.push_str("ok\n");
        }
        out
    }
}

fn entries_text(entries: &[Entry]) -> String {
    let parts: Vec<String> = entries
        .iter()
        .map(|e| format!("{}@{}", e.index, e.term))
        .collect();
    format!("[{}]", parts.join(" "))
}

fn request_text(request: &Request) -> String {
    match request {
        Request::RequestVote(r) => format!(
            "{} term {}, last entry {}@{}{}",
            if r.pre_vote { "PreVote" } else { "RequestVote" },
            r.term,
            r.last_log_index,
            r.last_log_term,
            if r.transfer { ", for a transfer" } else { "" }
        ),
        Request::AppendEntries(a) => format!(
            "AppendEntries term {}, prev {}@{}, entries {}, commit {}",
            a.term,
            a.prev_log_index,
            a.prev_log_term,
            entries_text(&a.entries),
            a.leader_commit
        ),
        Request::InstallSnapshot(s) => format!(
            "InstallSnapshot term {}, up to {}@{}, bytes {}..{}",
            s.term,
            s.snapshot.last_index,
            s.snapshot.last_term,
            s.offset,
            s.offset + s.data.len() as u64
        ),
        Request::TimeoutNow(t) => format!("TimeoutNow term {}", t.term),
    }
}

fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::RequestVote(r) => format!(
            "{} {} (term {})",
            if r.pre_vote { "pre-vote" } else { "vote" },
            if r.vote_granted { "granted" } else { "refused" },
            r.term
        ),
        Reply::AppendEntries(r) if r.success => {
            format!(
                "appended: matches through {} (term {})",
                r.match_index, r.term
            )
        }
        Reply::AppendEntries(r) => format!(
            "append refused at {} (term {}, its log: conflict term {:?} from {})",
            r.prev_log_index, r.term, r.conflict_term, r.conflict_index
        ),
        Reply::InstallSnapshot(r) => format!(
            "snapshot: holds {} bytes{} (term {})",
            r.next_offset,
            if r.done { ", installed" } else { "" },
            r.term
        ),
        Reply::TimeoutNow(r) => format!(
            "TimeoutNow {} (term {})",
            if r.started {
                "started an election"
            } else {
                "ignored"
            },
            r.term
        ),
    }
}

/// Runs one transcript; returns it as the code writes it now.
fn replay(text: &str) -> String {
    let mut cluster: Option<Cluster> = None;
    let mut written = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with('#') || line.trim().is_empty() {
            written.push_str(line);
            written.push('\n');
            continue;
        }
        let command = line.trim();
        assert_eq!(lines.next(), Some("----"), "after {command:?}");
        // The expected output, up to a blank line (ignored here).
        while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
            lines.next();
        }
        let out = if let Some(rest) = command.strip_prefix("cluster ") {
            let mut words = rest.split_whitespace();
            let n = words.next().unwrap().parse().unwrap();
            cluster = Some(Cluster::new(n, words.next() == Some("figure2")));
            "ok\n".to_string()
        } else {
            cluster
                .as_mut()
                .expect("a cluster command first")
                .run(command)
        };
        let _ = write!(written, "{command}\n----\n{out}");
    }
    written
}

#[test]
fn transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no transcripts in {}", dir.display());
    let mut differ = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let now = replay(&text);
        if now != text {
            if rewrite {
                std::fs::write(&path, &now).unwrap();
            } else {
                differ.push(path.display().to_string());
                eprintln!("--- {} now reads:\n{now}", path.display());
            }
        }
    }
    assert!(
        differ.is_empty(),
        "transcripts differ (REWRITE=1 to accept what the code does now): {differ:?}"
    );
}
