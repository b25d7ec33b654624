//! Following the membership (thesis chapter 4) in the runtime: a
//! replicator and a receiver run for every other server of the membership
//! in force, started when a membership naming a new server comes into
//! force (appended, from a leader or a snapshot) and ended when one leaves
//! it out (the link closed, which ends the receiver; the replicator sees
//! it is no longer its peer's). And leaving: a server that learns a
//! committed membership removed it (from its own log, or from a peer that
//! refuses its messages with `removed`) records that in its directory and
//! stops; it never starts on that directory again, since ids are never
//! reused.
//!
//! Called under the node's lock, from `process_ready` and the receivers.

use super::*;

impl Shared {
    /// Starts the threads of servers that the membership in force names
    /// and that have none, and ends those of servers it no longer names.
    pub(super) fn follow_membership(&self, st: &mut State) {
        if st.stopping {
            return;
        }
        let membership = st.raft.membership().clone();
        let members: Vec<Member> = membership
            .servers
            .iter()
            .filter_map(|(&id, s)| Member::at(id, &s.address))
            .collect();
        st.clients.set_members(members);
        let gone: Vec<NodeId> = st
            .links
            .keys()
            .copied()
            .filter(|id| !membership.servers.contains_key(id))
            .collect();
        for id in gone {
            if let Some(mut peer) = st.links.remove(&id) {
                peer.link.close();
                // Its replicator ends once it sees the link is gone.
                peer.wake();
                let text = format!("node{id} left the membership: stopped replicating to it");
                self.note(st, log::Level::Info, text);
            }
        }
        for (&id, server) in &membership.servers {
            if id == self.id || st.links.contains_key(&id) {
                continue;
            }
            let Some(member) = Member::at(id, &server.address) else {
                let text = format!(
                    "node{id}'s address {:?} is not HOST:PORT: cannot replicate to it",
                    server.address
                );
                self.note(st, log::Level::Warn, text);
                continue;
            };
            if let Err(e) = self.start_peer(st, member) {
                let text = format!("cannot start the threads for node{id}: {e}");
                self.note(st, log::Level::Error, text);
            }
        }
    }

    /// Starts a replicator and a receiver for `peer`, on a new link.
    pub(super) fn start_peer(&self, st: &mut State, peer: Member) -> std::io::Result<()> {
        let shared = self.me.upgrade().expect("called by a running node");
        let link = Arc::new(transport::Link::new(
            peer.clone(),
            self.bind_ip,
            self.rpc_timeout,
        ));
        let id = peer.id;
        let (s, l) = (shared.clone(), link.clone());
        let replicator = thread::Builder::new()
            .name(format!("replicate-{id}"))
            .spawn(move || s.run_replicator(id, &l))?;
        let l = link.clone();
        let receiver = thread::Builder::new()
            .name(format!("receive-{id}"))
            .spawn(move || shared.run_receiver(id, &l))?;
        self.threads.lock().extend([replicator, receiver]);
        st.links.insert(
            id,
            PeerLink {
                link,
                wake: Arc::new(Condvar::new()),
                asleep_until: None,
            },
        );
        Ok(())
    }

    /// Whether `link` is still the one to `peer` (its replicator ends
    /// when it is not: the peer left the membership).
    pub(super) fn is_current_link(st: &State, peer: NodeId, link: &transport::Link) -> bool {
        st.links
            .get(&peer)
            .is_some_and(|p| std::ptr::eq(Arc::as_ptr(&p.link), link))
    }

    /// After every step: a server that a committed membership removed
    /// stops, once it no longer leads (a removed leader first hands over
    /// and steps down, `Raft::leave_if_removed`).
    pub(super) fn leave_if_removed(&self, st: &mut State) {
        if st.stopping || st.raft.role() == Role::Leader {
            return;
        }
        if let Some(index) = st.raft.removed_at(self.id) {
            let text = format!(
                "node{} was removed from the cluster by the membership at index {index} ({})",
                self.id,
                st.raft.membership_at(index)
            );
            self.removed(st, text);
        }
    }

    /// This server was removed from the cluster (`text` says how it
    /// knows): record it in the state directory, so that it never starts
    /// there again, and stop serving. The node's owner hears of it
    /// through `Node::failure` (raftnode exits).
    pub(super) fn removed(&self, st: &mut State, text: String) {
        if st.stopping {
            return;
        }
        if let Err(e) = st.storage.mark_removed(&text) {
            self.storage_failed(st, &e);
        }
        self.note(
            st,
            log::Level::Warn,
            format!("{text}: this server is out of the cluster for good, and stops"),
        );
        st.stopping = true;
        st.waiters.wake_all();
        for condvar in [
            &self.changed,
            &self.timer,
            &self.committed,
            &self.log_written,
        ] {
            condvar.notify_all();
        }
        self.snapshot_due.notify_all();
        for peer in st.links.values_mut() {
            peer.link.close();
            peer.wake();
        }
        let _ = self.failure.try_send(NodeError::Removed(text));
    }
}

impl Shared {
    /// `members`: the membership in force here, and from the leader each
    /// member's progress.
    pub(super) fn members_view(&self, st: &State) -> wire::MembersView {
        let raft = &st.raft;
        let membership = raft.membership();
        let t = now(self);
        let last = raft.log().last_index();
        let leading = raft.role() == Role::Leader;
        let followers = raft.followers();
        let members = membership
            .servers
            .iter()
            .map(|(&id, server)| {
                let progress = followers.iter().find(|f| f.id == id);
                let me = leading && id == self.id;
                let match_index = if me {
                    Some(last)
                } else {
                    progress.map(|p| p.match_index)
                };
                wire::MemberView {
                    id,
                    address: server.address.clone(),
                    suffrage: server.suffrage,
                    match_index,
                    lag: match_index.map(|m| last.saturating_sub(m)),
                    heard_ms: progress
                        .map(|p| t.saturating_sub(p.last_heard).as_millis() as u64)
                        .or(me.then_some(0)),
                    reachable: progress.map(|p| p.reachable).or(me.then_some(true)),
                }
            })
            .collect();
        wire::MembersView {
            node: self.id,
            leader_id: raft.leader_id(),
            term: raft.term(),
            cluster_id: st.peers.cluster_id().to_string(),
            index: raft.membership_index(),
            committed: raft.membership_index() <= raft.commit_index(),
            outgoing: membership.outgoing.iter().copied().collect(),
            removed: membership.removed.iter().copied().collect(),
            last_log_index: last,
            commit_index: raft.commit_index(),
            members,
        }
    }

    /// `change_members`: the leader makes the change and answers once it
    /// is committed (a joint one also left), or says why not. A change
    /// that loses its leader before it commits may still take effect (the
    /// entry may survive in the next leader's log): the answer says so.
    pub(super) fn change_members(&self, change: &wire::MemberChange) -> Response {
        let started = Instant::now();
        let mut st = self.state.lock();
        if st.stopping {
            return Response::error(ErrorCode::ShuttingDown, "node is stopping; retry elsewhere");
        }
        let (index, membership) = match st.raft.propose_change(&change.to_change(), now(self)) {
            Ok(proposed) => proposed,
            Err(consensus::ChangeRefused::NotLeader(hint)) => {
                return st.clients.not_leader(hint.leader_hint);
            }
            Err(e) => return Response::error(ErrorCode::ChangeRefused, e.to_string()),
        };
        let term = st.raft.term();
        self.note(
            &st,
            log::Level::Info,
            format!(
                "membership change asked for: {change:?}; appended at index {index}: {membership}"
            ),
        );
        self.process_ready(&mut st);
        // Two commits (joint, then its leaving) and catching up learners'
        // heartbeats fit well within this.
        let deadline = Instant::now() + handlers::WAIT_TIMEOUT.max(4 * self.election_timeout);
        loop {
            let raft = &st.raft;
            if raft.log().term_at(index).is_some_and(|t| t != term) {
                return Response::error(
                    ErrorCode::NotLeader,
                    format!(
                        "the change at index {index} was lost with its leader; nothing changed: ask again"
                    ),
                );
            }
            let done = raft.commit_index() >= index
                && raft.membership_index() <= raft.commit_index()
                && !raft.membership().is_joint();
            if done {
                let membership = raft.membership_at(raft.membership_index()).clone();
                return Response::MembersChanged {
                    index: raft.membership_index(),
                    membership,
                    millis: started.elapsed().as_millis() as u64,
                };
            }
            if st.stopping || self.changed.wait_until(&mut st, deadline).timed_out() {
                return Response::error(
                    ErrorCode::Timeout,
                    format!(
                        "the change at index {index} is not committed after {} ms; it may still be: see raftctl members",
                        started.elapsed().as_millis()
                    ),
                );
            }
        }
    }
}
