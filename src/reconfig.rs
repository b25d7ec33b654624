//! The client side of adding a server (`raftctl add`): as a learner
//! first, which receives the log without voting, then, once it has caught
//! up, as a voter. Catching up is measured in rounds, as in thesis §4.2.1
//! and LogCabin: a round's goal is the leader's last index when the round
//! starts, and the round ends when the learner's match index reaches it.
//! A round that takes less than an election timeout means the learner
//! keeps up with the leader (the entries appended during it are few), so
//! it can vote without making the cluster wait for it. A learner that
//! makes no progress for `stall` is given up: removed again, which leaves
//! the membership as it was (a learner has never voted, so its id stays
//! free).
//!
//! Promotion is also checked by the leader (`consensus::PROMOTION_LAG`),
//! so an operator's `raftctl promote` on a lagging learner is refused.

use std::time::{Duration, Instant};

use crate::client::{Client, ClientError};
use crate::consensus::membership::{Membership, Suffrage};
use crate::consensus::{Index, NodeId};
use crate::wire::{MemberChange, MemberView};

/// How `add_server` paces itself.
#[derive(Clone, Debug)]
pub struct AddOptions {
    /// Stop once the server is a learner (promote it later).
    pub learner_only: bool,
    /// The cluster's longest election timeout: a round shorter than this
    /// ends catching up.
    pub election_timeout: Duration,
    /// Give up once the learner's match index has not moved for this long
    /// (it includes the time to start the new server).
    pub stall: Duration,
    /// How often to look at the learner's progress.
    pub poll: Duration,
    /// At most this many rounds before promoting anyway is tried (the
    /// leader still refuses a learner that lags by too much).
    pub max_rounds: usize,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            learner_only: false,
            election_timeout: crate::consensus::Config::new(0, [], 0).election_timeout_max,
            stall: Duration::from_secs(30),
            poll: Duration::from_millis(50),
            max_rounds: 10,
        }
    }
}

/// What `add_server` reports as it goes (as JSON, `raftctl -w json
/// add`: `{"progress":"round","round":1,"goal":120,"millis":14}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "progress", rename_all = "snake_case")]
pub enum AddProgress {
    /// The learner is in the membership (its entry committed).
    LearnerAdded { index: Index, millis: u64 },
    /// A catch-up round ended: the learner reached `goal` in `millis`.
    Round {
        round: usize,
        goal: Index,
        millis: u64,
    },
    /// The learner was promoted: it votes from the entry at `index`.
    Promoted { index: Index, millis: u64 },
    /// The learner made no progress: it was removed again.
    Abandoned { index: Index },
}

/// Why a server was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The learner made no progress for `stall`; the add was undone
    /// (unless `undone` is false: removing it failed too).
    #[error(
        "node{id} made no progress in {} s (it holds up to index {match_index} of the leader's {leader_last}; {}); {}",
        stalled.as_secs(),
        heard_text(*heard_ms),
        if *undone { "the add was abandoned and the membership is as it was" } else { "removing it again failed too: see raftctl members" }
    )]
    Stalled {
        id: NodeId,
        match_index: Index,
        leader_last: Index,
        heard_ms: Option<u64>,
        stalled: Duration,
        undone: bool,
    },
    /// The server left the membership while being added (someone else
    /// removed it).
    #[error("node{0} is no longer in the membership")]
    Vanished(NodeId),
}

fn heard_text(heard_ms: Option<u64>) -> String {
    match heard_ms {
        Some(ms) if ms < 1000 => format!("it answered {ms} ms ago"),
        Some(ms) => format!("it last answered {} s ago: is it started?", ms / 1000),
        None => "the leader has not heard from it: is it started, at that address?".into(),
    }
}

/// Adds server `id` at `address`: as a learner, then (unless
/// `learner_only`) through catch-up rounds to voter. `progress` is told
/// of each step. Returns the final membership.
pub fn add_server(
    client: &mut Client,
    id: NodeId,
    address: &str,
    options: &AddOptions,
    mut progress: impl FnMut(AddProgress),
) -> Result<Membership, AddError> {
    let change = MemberChange::AddLearner {
        id,
        address: address.to_string(),
    };
    let (index, membership, millis) = client.change_members(change)?;
    progress(AddProgress::LearnerAdded { index, millis });
    if options.learner_only {
        // Until it has answered, a change counting it would be refused.
        wait_for_first_answer(client, id, options, &mut progress)?;
        return Ok(membership);
    }
    catch_up(client, id, options, &mut progress)?;
    promote_when_ready(client, id, options, &mut progress)
}

/// Promotes learner `id`, running another round while the leader says it
/// lags.
fn promote_when_ready(
    client: &mut Client,
    id: NodeId,
    options: &AddOptions,
    progress: &mut impl FnMut(AddProgress),
) -> Result<Membership, AddError> {
    let mut tries = 0;
    loop {
        match client.change_members(MemberChange::Promote { id }) {
            Ok((index, membership, millis)) => {
                progress(AddProgress::Promoted { index, millis });
                return Ok(membership);
            }
            Err(ClientError::Rejected { message }) if message.contains("behind") && tries < 3 => {
                tries += 1;
                catch_up(client, id, options, progress)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The learner's row in the leader's view, and the leader's last index.
fn learner(client: &mut Client, id: NodeId) -> Result<(MemberView, Index), AddError> {
    let view = client.members()?;
    let member = view
        .members
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .ok_or(AddError::Vanished(id))?;
    Ok((member, view.last_log_index))
}

/// Runs catch-up rounds until one is shorter than an election timeout
/// (or `max_rounds` have run); gives the learner up if it stalls.
fn catch_up(
    client: &mut Client,
    id: NodeId,
    options: &AddOptions,
    progress: &mut impl FnMut(AddProgress),
) -> Result<(), AddError> {
    let mut last_match = 0;
    let mut moved_at = Instant::now();
    for round in 1..=options.max_rounds {
        let (_, goal) = learner(client, id)?;
        let started = Instant::now();
        loop {
            let (member, leader_last) = learner(client, id)?;
            if member.suffrage != Suffrage::Learner {
                return Ok(()); // promoted meanwhile
            }
            let matched = member.match_index.unwrap_or(0);
            if matched >= goal {
                break;
            }
            if matched > last_match {
                (last_match, moved_at) = (matched, Instant::now());
            }
            if moved_at.elapsed() >= options.stall {
                return Err(give_up(
                    client,
                    id,
                    &member,
                    leader_last,
                    options.stall,
                    progress,
                ));
            }
            std::thread::sleep(options.poll);
        }
        let took = started.elapsed();
        progress(AddProgress::Round {
            round,
            goal,
            millis: took.as_millis() as u64,
        });
        if took < options.election_timeout {
            return Ok(());
        }
        moved_at = Instant::now();
    }
    Ok(())
}

/// Waits until the learner has answered the leader lately; gives it up
/// (removed again) if it has not within `stall`.
fn wait_for_first_answer(
    client: &mut Client,
    id: NodeId,
    options: &AddOptions,
    progress: &mut impl FnMut(AddProgress),
) -> Result<(), AddError> {
    let started = Instant::now();
    loop {
        let (member, leader_last) = learner(client, id)?;
        let answered = member.reachable == Some(true)
            && member
                .heard_ms
                .is_some_and(|ms| u128::from(ms) < options.election_timeout.as_millis());
        if answered {
            return Ok(());
        }
        if started.elapsed() >= options.stall {
            return Err(give_up(
                client,
                id,
                &member,
                leader_last,
                options.stall,
                progress,
            ));
        }
        std::thread::sleep(options.poll);
    }
}

/// Removes the stalled learner again, so that the membership is as it
/// was before the add.
fn give_up(
    client: &mut Client,
    id: NodeId,
    member: &MemberView,
    leader_last: Index,
    stalled: Duration,
    progress: &mut impl FnMut(AddProgress),
) -> AddError {
    let undone = match client.change_members(MemberChange::Remove { id }) {
        Ok((index, _, _)) => {
            progress(AddProgress::Abandoned { index });
            true
        }
        Err(_) => false,
    };
    AddError::Stalled {
        id,
        match_index: member.match_index.unwrap_or(0),
        leader_last,
        heard_ms: member.heard_ms.filter(|_| member.reachable == Some(true)),
        stalled,
        undone,
    }
}
