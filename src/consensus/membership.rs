//! The cluster's membership as data (thesis chapter 4): which servers
//! there are, where each listens, which of them vote, and, during a change
//! by joint consensus (§4.3), which voted in the configuration being left.
//! A membership travels in the log as an entry (`Payload::Membership`) and
//! in snapshots; a server uses the latest one in its log, committed or not
//! (§4.1).
//!
//! The changes a leader may make ([`Change`]) and what each does:
//!
//! * **add a learner**: a new server that receives the log but does not
//!   vote, so that it can catch up before it counts (§4.2.1);
//! * **promote** a learner to voter, or **remove** a server: one voter
//!   more or less, which a single configuration entry does safely, since
//!   any majority of the old voters and any of the new overlap (§4.1);
//! * **set the voters** to any set of current servers: if that changes
//!   more than one voter, through a joint configuration in which every
//!   decision needs a majority of the old voters and one of the new
//!   (§4.3), then **leave the joint** configuration for the new one.
//!
//! Removed ids are remembered, and never admitted again: a server wiped
//! and restarted under an old id would vote with no memory of its votes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::NodeId;
use super::quorum::Quorum;

/// What a server is in the configuration being moved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suffrage {
    /// Votes, and counts toward commits and elections.
    Voter,
    /// Receives the log, never votes or stands, counts for nothing.
    Learner,
    /// Only while joint: a voter of the configuration being left that is
    /// not in the new one; removed when the joint configuration is left.
    Leaving,
}

/// One server of a membership.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Server {
    /// Where it listens, `host:port`.
    pub address: String,
    pub suffrage: Suffrage,
}

/// The servers of the cluster at one point of its log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// Every server, of both configurations while joint. In JSON a list
    /// of `{"id":…,"address":…,"suffrage":…}`, in id order.
    #[serde(with = "server_list")]
    pub servers: BTreeMap<NodeId, Server>,
    /// While joint: the voters of the configuration being left. Empty
    /// otherwise.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub outgoing: BTreeSet<NodeId>,
    /// Ids removed from the cluster, never to be used again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed: BTreeSet<NodeId>,
}

/// A change a leader is asked to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddLearner { id: NodeId, address: String },
    Promote(NodeId),
    Remove(NodeId),
    SetVoters(BTreeSet<NodeId>),
    LeaveJoint,
}

/// Why a change cannot be made to a membership.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("node{0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node{0} is not a member")]
    NotAMember(NodeId),
    #[error(
        "node{0} was removed from this cluster, and ids are never reused: add the server under a new id"
    )]
    Retired(NodeId),
    #[error("node{id} already listens at {address}")]
    AddressInUse { id: NodeId, address: String },
    #[error("node{0} is not a learner")]
    NotALearner(NodeId),
    #[error("node{0} is the last voter; a cluster needs one")]
    LastVoter(NodeId),
    #[error("a cluster needs at least one voter")]
    NoVoters,
    #[error("node{0} must be added as a learner first, so that it catches up before it votes")]
    NotYetLearner(NodeId),
    #[error(
        "a change by joint consensus is under way (old voters {outgoing:?}); it must end first"
    )]
    Joint { outgoing: Vec<NodeId> },
    #[error("no change by joint consensus is under way")]
    NotJoint,
    #[error("the voters are {0:?} already")]
    Unchanged(Vec<NodeId>),
}

/// A membership that breaks its own rules (from a peer or a damaged file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid membership: {0}")]
pub struct InvalidMembership(pub String);

impl Membership {
    /// The first membership of a cluster: every server a voter.
    pub fn bootstrap(servers: impl IntoIterator<Item = (NodeId, String)>) -> Membership {
        let servers = servers
            .into_iter()
            .map(|(id, address)| {
                let suffrage = Suffrage::Voter;
                (id, Server { address, suffrage })
            })
            .collect();
        Membership {
            servers,
            outgoing: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    /// The voters of the configuration being moved to (or the only one).
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.with(Suffrage::Voter)
    }

    pub fn learners(&self) -> BTreeSet<NodeId> {
        self.with(Suffrage::Learner)
    }

    fn with(&self, suffrage: Suffrage) -> BTreeSet<NodeId> {
        let ids = self.servers.iter().filter(|(_, s)| s.suffrage == suffrage);
        ids.map(|(&id, _)| id).collect()
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.servers.contains_key(&id)
    }

    /// Whether `id` votes, in either configuration while joint.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.outgoing.contains(&id)
            || self
                .servers
                .get(&id)
                .is_some_and(|s| s.suffrage == Suffrage::Voter)
    }

    /// Who decides: the voters, and while joint the outgoing voters too.
    pub fn quorum(&self) -> Quorum {
        if self.is_joint() {
            Quorum::joint(self.outgoing.iter().copied(), self.voters())
        } else {
            Quorum::simple(self.voters())
        }
    }

    /// Every server but `me`: those a leader replicates to.
    pub fn peers_of(&self, me: NodeId) -> Vec<NodeId> {
        self.servers
            .keys()
            .copied()
            .filter(|&id| id != me)
            .collect()
    }

    /// Checks the rules a membership keeps: a voter in each
    /// configuration, addresses given and distinct, `Leaving` only while
    /// joint and only for outgoing voters, removed ids not members.
    pub fn check(&self) -> Result<(), InvalidMembership> {
        let bad = |what: String| Err(InvalidMembership(what));
        if self.voters().is_empty() {
            return bad("no voter".into());
        }
        let mut addresses = BTreeMap::new();
        for (&id, server) in &self.servers {
            if server.address.is_empty() {
                return bad(format!("node{id} has no address"));
            }
            if let Some(other) = addresses.insert(server.address.as_str(), id) {
                return bad(format!("node{other} and node{id} share {}", server.address));
            }
            if server.suffrage == Suffrage::Leaving && !self.outgoing.contains(&id) {
                return bad(format!("node{id} is leaving but was not a voter"));
            }
            if self.removed.contains(&id) {
                return bad(format!("node{id} is a member and removed"));
            }
        }
        if let Some(id) = self
            .outgoing
            .iter()
            .find(|id| !self.servers.contains_key(id))
        {
            return bad(format!("outgoing voter node{id} is not a server"));
        }
        Ok(())
    }

    /// The membership `change` makes of this one; this one unchanged.
    pub fn apply(&self, change: &Change) -> Result<Membership, ChangeError> {
        if self.is_joint() && *change != Change::LeaveJoint {
            return Err(ChangeError::Joint {
                outgoing: self.outgoing.iter().copied().collect(),
            });
        }
        let mut next = self.clone();
        match change {
            Change::AddLearner { id, address } => {
                let id = *id;
                if self.contains(id) {
                    return Err(ChangeError::AlreadyMember(id));
                }
                if self.removed.contains(&id) {
                    return Err(ChangeError::Retired(id));
                }
                if let Some((&other, _)) = self.servers.iter().find(|(_, s)| s.address == *address)
                {
                    return Err(ChangeError::AddressInUse {
                        id: other,
                        address: address.clone(),
                    });
                }
                let suffrage = Suffrage::Learner;
                let address = address.clone();
                next.servers.insert(id, Server { address, suffrage });
            }
            Change::Promote(id) => match self.servers.get(id).map(|s| s.suffrage) {
                Some(Suffrage::Learner) => {
                    next.servers.get_mut(id).expect("a member").suffrage = Suffrage::Voter;
                }
                Some(_) => return Err(ChangeError::NotALearner(*id)),
                None => return Err(ChangeError::NotAMember(*id)),
            },
            Change::Remove(id) => {
                if !self.contains(*id) {
                    return Err(ChangeError::NotAMember(*id));
                }
                if self.voters() == BTreeSet::from([*id]) {
                    return Err(ChangeError::LastVoter(*id));
                }
                // A learner has never voted (no change makes a voter a
                // learner), so its id may come back: removing it is how
                // an add that made no progress is abandoned, leaving the
                // membership as it was. A voter's id never comes back: a
                // server that voted under it and lost its state could
                // vote twice in one term.
                let learner = self.servers[id].suffrage == Suffrage::Learner;
                next.servers.remove(id);
                if !learner {
                    next.removed.insert(*id);
                }
            }
            Change::SetVoters(voters) => return self.set_voters(voters),
            Change::LeaveJoint => {
                if !self.is_joint() {
                    return Err(ChangeError::NotJoint);
                }
                for id in std::mem::take(&mut next.outgoing) {
                    if next.servers[&id].suffrage == Suffrage::Leaving {
                        next.servers.remove(&id);
                        next.removed.insert(id);
                    }
                }
            }
        }
        Ok(next)
    }

    /// `voters` become the voters: directly if that adds or drops one
    /// voter, otherwise by entering joint consensus. Voters not kept are
    /// removed from the cluster (when the joint configuration is left).
    fn set_voters(&self, voters: &BTreeSet<NodeId>) -> Result<Membership, ChangeError> {
        if voters.is_empty() {
            return Err(ChangeError::NoVoters);
        }
        if let Some(&id) = voters.iter().find(|&&id| !self.contains(id)) {
            return Err(match self.removed.contains(&id) {
                true => ChangeError::Retired(id),
                false => ChangeError::NotYetLearner(id),
            });
        }
        let old = self.voters();
        if *voters == old {
            return Err(ChangeError::Unchanged(old.into_iter().collect()));
        }
        let mut next = self.clone();
        for (id, server) in next.servers.iter_mut() {
            if voters.contains(id) {
                server.suffrage = Suffrage::Voter;
            } else if old.contains(id) {
                server.suffrage = Suffrage::Leaving;
            }
        }
        if old.symmetric_difference(voters).count() <= 1 {
            // One voter more or less: one step (§4.1).
            for id in old.difference(voters) {
                next.servers.remove(id);
                next.removed.insert(*id);
            }
        } else {
            next.outgoing = old;
        }
        Ok(next)
    }
}

/// The servers as a JSON list of objects rather than an object keyed by
/// id: a list reads back through serde's buffering of tagged enums (the
/// log entry's payload), where integer keys of an object do not.
mod server_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{NodeId, Server, Suffrage};

    #[derive(Serialize, Deserialize)]
    struct Listed<A> {
        id: NodeId,
        address: A,
        suffrage: Suffrage,
    }

    pub(super) fn serialize<S: Serializer>(
        servers: &BTreeMap<NodeId, Server>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let listed: Vec<Listed<&str>> = servers
            .iter()
            .map(|(&id, s)| Listed {
                id,
                address: s.address.as_str(),
                suffrage: s.suffrage,
            })
            .collect();
        listed.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<NodeId, Server>, D::Error> {
        let listed: Vec<Listed<String>> = Vec::deserialize(deserializer)?;
        let mut servers = BTreeMap::new();
        for l in listed {
            let server = Server {
                address: l.address,
                suffrage: l.suffrage,
            };
            if servers.insert(l.id, server).is_some() {
                return Err(serde::de::Error::custom(format!(
                    "node{} listed twice",
                    l.id
                )));
            }
        }
        Ok(servers)
    }
}

impl Membership {
    /// What this membership changed of `prev`, in words: `node4 added as a
    /// learner`, `node4 promoted to voter`, `node2 removed`, joint
    /// consensus entered or left; empty if nothing.
    pub fn changes_from(&self, prev: &Membership) -> String {
        let mut said = Vec::new();
        if self.is_joint() && !prev.is_joint() {
            said.push("joint consensus entered".to_string());
        }
        if prev.is_joint() && !self.is_joint() {
            said.push("joint consensus left".to_string());
        }
        for (id, server) in &self.servers {
            let name = match server.suffrage {
                Suffrage::Voter => "voter",
                Suffrage::Learner => "learner",
                Suffrage::Leaving => "leaving",
            };
            match prev.servers.get(id).map(|s| s.suffrage) {
                None => said.push(format!("node{id} added as a {name}")),
                Some(Suffrage::Learner) if server.suffrage == Suffrage::Voter => {
                    said.push(format!("node{id} promoted to voter"))
                }
                Some(before) if before != server.suffrage => {
                    said.push(format!("node{id} now {name}"))
                }
                Some(_) => {}
            }
        }
        for id in prev
            .servers
            .keys()
            .filter(|id| !self.servers.contains_key(id))
        {
            said.push(format!("node{id} removed"));
        }
        said.join("; ")
    }
}

/// `voters 1 2 3, learners 4` (and `, leaving 2 3 (joint)` during a
/// change by joint consensus): for logs and `raftctl log`.
impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ids: BTreeSet<NodeId>| {
            let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            ids.join(" ")
        };
        write!(f, "voters {}", list(self.voters()))?;
        let learners = self.learners();
        if !learners.is_empty() {
            write!(f, ", learners {}", list(learners))?;
        }
        if self.is_joint() {
            let leaving = self.with(Suffrage::Leaving);
            write!(
                f,
                ", joint with the old voters {}",
                list(self.outgoing.clone())
            )?;
            if !leaving.is_empty() {
                write!(f, " (leaving: {})", list(leaving))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::bootstrap((1..=3).map(|id| (id, format!("h:{id}"))))
    }

    fn add(m: &Membership, id: NodeId) -> Membership {
        let address = format!("h:{id}");
        m.apply(&Change::AddLearner { id, address }).unwrap()
    }

    #[test]
    fn a_change_is_told_in_words() {
        let with_4 = add(&three(), 4);
        assert_eq!(with_4.changes_from(&three()), "node4 added as a learner");
        let promoted = with_4.apply(&Change::Promote(4)).unwrap();
        assert_eq!(promoted.changes_from(&with_4), "node4 promoted to voter");
        let joint = promoted
            .apply(&Change::SetVoters(BTreeSet::from([1, 4])))
            .unwrap();
        assert_eq!(
            joint.changes_from(&promoted),
            "joint consensus entered; node2 now leaving; node3 now leaving"
        );
        let left = joint.apply(&Change::LeaveJoint).unwrap();
        assert_eq!(
            left.changes_from(&joint),
            "joint consensus left; node2 removed; node3 removed"
        );
        assert_eq!(left.changes_from(&left), "");
    }

    #[test]
    fn a_server_joins_as_a_learner_then_is_promoted() {
        let m = add(&three(), 4);
        assert_eq!(m.learners(), BTreeSet::from([4]));
        assert!(!m.is_voter(4) && m.contains(4));
        // A learner counts for nothing: three voters, a majority of two.
        assert_eq!(m.quorum().len(), 3);
        let m = m.apply(&Change::Promote(4)).unwrap();
        assert_eq!(m.voters(), BTreeSet::from([1, 2, 3, 4]));
        assert!(!m.is_joint());
        m.check().unwrap();
    }

    #[test]
    fn adding_a_member_twice_or_a_removed_id_or_a_used_address_is_refused() {
        let m = three();
        let again = Change::AddLearner {
            id: 2,
            address: "h:9".into(),
        };
        assert_eq!(m.apply(&again), Err(ChangeError::AlreadyMember(2)));
        let same_address = Change::AddLearner {
            id: 9,
            address: "h:2".into(),
        };
        assert!(matches!(
            m.apply(&same_address),
            Err(ChangeError::AddressInUse { id: 2, .. })
        ));
        let m = m.apply(&Change::Remove(3)).unwrap();
        assert_eq!(m.removed, BTreeSet::from([3]));
        let back = Change::AddLearner {
            id: 3,
            address: "h:3".into(),
        };
        assert_eq!(m.apply(&back), Err(ChangeError::Retired(3)));
        assert_eq!(m.apply(&Change::Remove(7)), Err(ChangeError::NotAMember(7)));
        assert_eq!(
            m.apply(&Change::Promote(1)),
            Err(ChangeError::NotALearner(1))
        );
    }

    #[test]
    fn the_last_voter_stays() {
        let one = Membership::bootstrap([(1, "h:1".to_string())]);
        assert_eq!(
            one.apply(&Change::Remove(1)),
            Err(ChangeError::LastVoter(1))
        );
        // A learner beside it can go.
        let two = add(&one, 2);
        assert!(two.apply(&Change::Remove(2)).is_ok());
    }

    #[test]
    fn replacing_two_of_three_voters_goes_through_joint_consensus() {
        let m = add(&add(&three(), 4), 5);
        let m = m
            .apply(&Change::SetVoters(BTreeSet::from([1, 4, 5])))
            .unwrap();
        assert!(m.is_joint());
        assert_eq!(m.outgoing, BTreeSet::from([1, 2, 3]));
        assert_eq!(m.voters(), BTreeSet::from([1, 4, 5]));
        assert_eq!(m.servers[&2].suffrage, Suffrage::Leaving);
        assert!(m.is_voter(2) && m.is_voter(4));
        assert!(m.quorum().is_joint());
        m.check().unwrap();
        // Nothing else while joint.
        assert!(matches!(
            m.apply(&Change::Remove(1)),
            Err(ChangeError::Joint { .. })
        ));
        let m = m.apply(&Change::LeaveJoint).unwrap();
        assert!(!m.is_joint());
        assert_eq!(m.voters(), BTreeSet::from([1, 4, 5]));
        assert_eq!(m.removed, BTreeSet::from([2, 3]));
        assert!(!m.contains(2));
        m.check().unwrap();
        assert_eq!(m.apply(&Change::LeaveJoint), Err(ChangeError::NotJoint));
    }

    #[test]
    fn setting_voters_that_differ_by_one_is_one_step() {
        let m = add(&three(), 4);
        let grown = m
            .apply(&Change::SetVoters(BTreeSet::from([1, 2, 3, 4])))
            .unwrap();
        assert!(!grown.is_joint());
        assert_eq!(grown.voters().len(), 4);
        let shrunk = m.apply(&Change::SetVoters(BTreeSet::from([1, 2]))).unwrap();
        assert!(!shrunk.is_joint() && !shrunk.contains(3));
        assert_eq!(shrunk.learners(), BTreeSet::from([4]));
        // Voters must be servers already (learners first), and not none.
        assert_eq!(
            m.apply(&Change::SetVoters(BTreeSet::from([1, 9]))),
            Err(ChangeError::NotYetLearner(9))
        );
        assert_eq!(
            m.apply(&Change::SetVoters(BTreeSet::new())),
            Err(ChangeError::NoVoters)
        );
        assert!(matches!(
            m.apply(&Change::SetVoters(BTreeSet::from([1, 2, 3]))),
            Err(ChangeError::Unchanged(_))
        ));
    }

    #[test]
    fn check_refuses_what_no_change_can_make() {
        let mut m = three();
        m.servers.get_mut(&2).unwrap().address = "h:1".into();
        assert!(m.check().is_err());
        let mut m = three();
        m.servers.get_mut(&2).unwrap().suffrage = Suffrage::Leaving;
        assert!(m.check().is_err());
        let mut m = three();
        m.removed.insert(1);
        assert!(m.check().is_err());
        let mut m = three();
        m.outgoing.insert(9);
        assert!(m.check().is_err());
        let mut m = three();
        m.servers
            .values_mut()
            .for_each(|s| s.suffrage = Suffrage::Learner);
        assert!(m.check().is_err());
    }

    #[test]
    fn a_membership_reads_back_from_its_json() {
        let m = add(&three(), 4)
            .apply(&Change::SetVoters(BTreeSet::from([1, 4])))
            .unwrap();
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Membership>(&text).unwrap(), m);
        assert!(text.contains(r#""outgoing":[1,2,3]"#), "{text}");
        assert_eq!(
            m.to_string(),
            "voters 1 4, joint with the old voters 1 2 3 (leaving: 2 3)"
        );
    }
}
