//! `raftctl members`, `add`, `promote`, `remove` and `members set`:
//! printing what the library's membership calls (`Client::members`,
//! `Client::change_members`, `reconfig::add_server`) report.

use std::time::Duration;

use raft::client::Client;
use raft::config::ClusterConfig;
use raft::consensus::NodeId;
use raft::consensus::membership::{Membership, Suffrage};
use raft::reconfig::{self, AddOptions, AddProgress};
use raft::wire::{MemberChange, MembersView};

use super::{Command, MembersAction, fail, print_line};

/// The membership commands.
pub fn run(client: &mut Client, config: &ClusterConfig, command: Command, json_out: bool) {
    match command {
        Command::Members { json, action } => match action {
            None => show(client, config, json || json_out),
            Some(MembersAction::Set { ids }) => {
                change(client, MemberChange::SetVoters { voters: ids }, json_out)
            }
        },
        Command::Add {
            id,
            address,
            learner,
            stall,
            election_timeout,
        } => {
            let timeout = election_timeout.map_or(
                raft::consensus::Config::new(0, [], 0).election_timeout_max,
                Duration::from_millis,
            );
            let options = AddOptions {
                learner_only: learner,
                election_timeout: timeout,
                stall: Duration::from_secs(stall),
                ..AddOptions::default()
            };
            add(client, id, &address, &options, json_out)
        }
        Command::Promote { id } => change(client, MemberChange::Promote { id }, json_out),
        Command::Remove { id } => change(client, MemberChange::Remove { id }, json_out),
        _ => unreachable!("not a membership command"),
    }
}

/// `raftctl nodes`: the configuration file's nodes, for scripts.
pub fn nodes(config: &raft::config::ClusterConfig, json: bool) {
    for m in &config.members {
        if json {
            say!(
                "{}",
                serde_json::json!({"id": m.id, "host": m.host, "port": m.port})
            );
        } else {
            say!("{} {} {}", m.id, m.host, m.port);
        }
    }
}

/// `raftctl members [--json]`: the leader's view of the membership, or
/// with no leader reachable, the first node's that answers (without
/// progress).
pub fn show(client: &mut Client, config: &ClusterConfig, json: bool) {
    let view = client.members().unwrap_or_else(|e| {
        let timeout = Duration::from_millis(500);
        let any = config
            .members
            .iter()
            .find_map(|m| raft::client::members(m, timeout).ok());
        match any {
            Some(view) => {
                eprintln!("raftctl: {e}; node{}'s view, without progress:", view.node);
                view
            }
            None => fail(&e),
        }
    });
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&view.members).expect("members serialize")
        );
        return;
    }
    for line in table(&view) {
        say!("{line}");
    }
}

/// The membership as a table, with a line saying where it stands.
pub fn table(view: &MembersView) -> Vec<String> {
    let leader = view
        .leader_id
        .map_or("no leader known".to_string(), |l| format!("leader node{l}"));
    let state = if !view.committed {
        "a change in progress: not yet committed"
    } else {
        "committed"
    };
    let mut lines = vec![format!(
        "membership at index {} ({state}); {leader}, term {}; cluster {}",
        view.index, view.term, view.cluster_id
    )];
    if !view.outgoing.is_empty() {
        let new: Vec<String> = view
            .members
            .iter()
            .filter(|m| m.suffrage == Suffrage::Voter)
            .map(|m| m.id.to_string())
            .collect();
        lines.push(format!(
            "joint consensus (thesis §4.3): decisions need a majority of the old voters {:?} and of the new voters [{}]",
            view.outgoing,
            new.join(", ")
        ));
    }
    lines.push(format!(
        "{:<4} {:<22} {:<9} {:>9} {:>8} {:>10}",
        "ID", "ADDRESS", "SUFFRAGE", "MATCH", "BEHIND", "HEARD"
    ));
    let dash = || "-".to_string();
    for m in &view.members {
        let suffrage = match m.suffrage {
            Suffrage::Voter => "voter",
            Suffrage::Learner => "learner",
            Suffrage::Leaving => "leaving",
        };
        let heard = match (m.heard_ms, m.reachable) {
            (_, Some(false)) => "unreachable".to_string(),
            (Some(ms), _) => format!("{ms} ms ago"),
            _ => dash(),
        };
        let leads = if view.leader_id == Some(m.id) {
            "  (leader)"
        } else {
            ""
        };
        lines.push(format!(
            "{:<4} {:<22} {:<9} {:>9} {:>8} {:>10}{leads}",
            m.id,
            m.address,
            suffrage,
            // matchIndex 0: nothing known yet (it starts at 0).
            m.match_index
                .filter(|&i| i > 0)
                .map_or_else(dash, |i| i.to_string()),
            m.lag
                .filter(|_| m.match_index > Some(0))
                .map_or_else(dash, |i| i.to_string()),
            heard,
        ));
    }
    if !view.removed.is_empty() {
        let removed: Vec<String> = view.removed.iter().map(|id| id.to_string()).collect();
        lines.push(format!(
            "removed (ids never reused): {}",
            removed.join(", ")
        ));
    }
    lines
}

/// `raftctl promote`, `remove` and `members set`: one change, printed
/// once committed.
pub fn change(client: &mut Client, change: MemberChange, json: bool) {
    let what = match &change {
        MemberChange::Promote { id } => format!("node{id} promoted to voter"),
        MemberChange::Remove { id } => format!("node{id} removed"),
        MemberChange::SetVoters { voters } => format!("voters set to {voters:?}"),
        MemberChange::AddLearner { id, .. } => format!("node{id} added as a learner"),
    };
    let (index, membership, millis) = client.change_members(change).unwrap_or_else(|e| fail(&e));
    if json {
        let done = serde_json::json!({"index": index, "membership": membership, "millis": millis});
        say!("{done}");
        return;
    }
    say!("{what}: membership at index {index} committed in {millis} ms: {membership}");
}

/// `raftctl add ID HOST:PORT [--learner]`: the line that starts the new
/// server, then each step as it is committed (with `json`, one object per
/// line: `{"join":…}`, the steps, then `{"id":…,"membership":…}`).
pub fn add(client: &mut Client, id: NodeId, address: &str, options: &AddOptions, json: bool) {
    let leader = client.leader().unwrap_or_else(|e| fail(&e));
    let join = format!("raftnode --join {} {id} {address}", leader.address());
    if json {
        say!("{}", serde_json::json!({ "join": join }));
    } else {
        say!(
            "Start the new server (same --state-dir, --debug-dir and timing options as the others):"
        );
        say!("  {join}");
    }
    let result = reconfig::add_server(client, id, address, options, |p| {
        if json {
            return say!(
                "{}",
                serde_json::to_string(&p).expect("progress serializes")
            );
        }
        match p {
            AddProgress::LearnerAdded { index, millis } => say!(
                "node{id} added as a learner (index {index}, committed in {millis} ms); it receives the log without voting"
            ),
            AddProgress::Round {
                round,
                goal,
                millis,
            } => say!("catch-up round {round}: node{id} reached index {goal} in {millis} ms"),
            AddProgress::Promoted { index, millis } => {
                say!("node{id} promoted to voter (index {index}, committed in {millis} ms)")
            }
            AddProgress::Abandoned { index } => {
                say!("node{id} removed again (index {index}): the add is abandoned")
            }
        }
    });
    match result {
        Ok(membership) if json => {
            say!(
                "{}",
                serde_json::json!({"id": id, "membership": membership})
            )
        }
        Ok(membership) => print_membership(&membership, options.learner_only, id),
        Err(reconfig::AddError::Client(e)) => fail(&e),
        Err(e) => {
            eprintln!("raftctl: {e}");
            std::process::exit(1)
        }
    }
}

fn print_membership(membership: &Membership, learner_only: bool, id: NodeId) {
    say!("membership: {membership}");
    if learner_only {
        say!("promote it once it has caught up: raftctl promote {id}");
    }
}
