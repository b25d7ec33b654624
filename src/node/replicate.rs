//! A replicator and a receiver per peer, on one kept-open connection
//! (`transport::Link`). The replicator takes the node's lock to ask the
//! core for the next request (`Raft::poll_peer`) and releases it to write
//! the request (and, for a snapshot chunk, to read the chunk from the
//! file, checking a file whole before a transfer starts); it never waits
//! for answers, so several AppendEntries are in flight. The receiver reads
//! the answers in order, without the lock, and takes the lock to hand
//! each to the core (`Raft::handle_reply`, or `handle_failure` when the
//! connection broke). Neither takes the key-value store's lock.

use super::*;

/// Why a snapshot chunk could not be read for sending.
pub(super) enum ChunkError {
    /// Reading failed: the disk is failing; the node stops.
    Read(StorageError),
    /// The file fails its checks: it is replaced.
    Damaged(StorageError),
}

/// Fills an InstallSnapshot chunk's bytes from `file`, the snapshot the
/// request names, with no lock held.
fn fill_chunk(
    r: &mut consensus::InstallSnapshot,
    file: Option<Arc<SnapshotFile>>,
) -> Result<(), ChunkError> {
    let file = file
        .filter(|f| f.meta == r.snapshot)
        .expect("a transfer starts with the current snapshot");
    // Before a transfer (re)starts, the file is read through and checked
    // against its CRC-32: a follower would refuse a damaged one only after
    // every byte.
    if r.offset == 0 {
        file.check().map_err(ChunkError::Damaged)?;
    }
    r.data = file
        .read_chunk(r.offset, SNAPSHOT_CHUNK)
        .map_err(|source| {
            ChunkError::Read(StorageError::Io {
                path: file.path.clone(),
                op: "read",
                source,
            })
        })?;
    Ok(())
}

impl Shared {
    /// Sends `peer` every request the core has for it, releasing the lock
    /// for each write, without waiting for answers (the receiver gets
    /// them): several AppendEntries are in flight at once when the core's
    /// window allows (`consensus::progress`).
    /// Ends when the node stops or `peer` leaves the membership.
    pub(super) fn run_replicator(&self, peer: NodeId, link: &transport::Link) {
        // The snapshot being sent to this peer, if any.
        let mut sending: Option<Arc<SnapshotFile>> = None;
        let mut st = self.state.lock();
        let cluster_id = st.peers.cluster_id().to_string();
        while !st.stopping && Self::is_current_link(&st, peer, link) {
            let t = now(self);
            let request = st.raft.poll_peer(peer, t);
            // Building a request can produce events (a snapshot transfer
            // or a TimeoutNow begun): handled before the lock is released,
            // as after any other step of the core.
            if st.raft.has_ready() {
                self.process_ready(&mut st);
            }
            let Some(request) = request else {
                // Sleeps until the core has something for the peer:
                // `process_ready` wakes it then (`wake_replicators`).
                let until = st.raft.peer_wakeup(peer);
                let Some(p) = st.links.get_mut(&peer) else {
                    continue; // gone: the loop ends
                };
                p.asleep_until = Some(until);
                let wake = p.wake.clone();
                match until.and_then(|at| self.epoch.checked_add(at)) {
                    Some(at) => {
                        wake.wait_until(&mut st, at);
                    }
                    None => wake.wait(&mut st),
                }
                if Self::is_current_link(&st, peer, link)
                    && let Some(p) = st.links.get_mut(&peer)
                {
                    p.asleep_until = None;
                }
                continue;
            };
            if let consensus::Request::AppendEntries(r) = &request
                && r.entries.is_empty()
            {
                log::trace!(
                    "heartbeat to node{peer} (term {}, commit {})",
                    r.term,
                    r.leader_commit
                );
            }
            if self.isolated.load(Ordering::Relaxed) {
                // Lab: as if the network dropped it.
                st.raft.handle_failure(peer, t);
                self.process_ready(&mut st);
                continue;
            }
            self.message(&st, true, || {
                Some(Message::request(self.id, peer, &request))
            });
            // A snapshot chunk's bytes come from the file the core's
            // request names, read with the lock released. It is the
            // current snapshot when a transfer starts, and the replicator
            // keeps it open until the transfer ends, so a newer snapshot
            // replacing it on disk meanwhile does not take its bytes away.
            let snapshot = match &request {
                consensus::Request::InstallSnapshot(r) => {
                    if sending.as_ref().is_none_or(|f| f.meta != r.snapshot) {
                        sending = st.storage.snapshot();
                    }
                    sending.clone()
                }
                _ => None,
            };
            let sent = MutexGuard::unlocked(&mut st, || {
                let mut request = request;
                if let consensus::Request::InstallSnapshot(r) = &mut request {
                    fill_chunk(r, snapshot)?;
                }
                let wire_request = wire::Request::peer(&cluster_id, self.id, request);
                Ok(link.send(&wire_request))
            });
            let sent = match sent {
                Ok(sent) => sent,
                Err(ChunkError::Read(e)) => self.storage_failed(&st, &e),
                Err(ChunkError::Damaged(e)) => {
                    // Not a failure of this node's durability: the state
                    // machine is whole, so a fresh snapshot replaces the
                    // file, and every transfer starts over with it.
                    let damaged = sending.take().map(|f| f.meta);
                    st.raft.handle_failure(peer, now(self));
                    self.process_ready(&mut st);
                    if let Some(damaged) = damaged {
                        self.replace_damaged_snapshot(&mut st, damaged, &e);
                    }
                    continue;
                }
            };
            if let Err(Some(e)) = sent {
                debug!("request to node{peer} failed: {e}");
                st.raft.handle_failure(peer, now(self));
                self.process_ready(&mut st);
            }
        }
    }

    /// Hands `peer`'s answers to the core as they arrive, in order. No
    /// check of term or role is needed here: each reply says what it
    /// answers, and the core drops those that no longer concern it.
    pub(super) fn run_receiver(&self, peer: NodeId, link: &transport::Link) {
        let (mut reader, mut buf) = (None, Vec::new());
        loop {
            let received = link.receive(&mut reader, &mut buf);
            let mut st = self.state.lock();
            if st.stopping {
                return;
            }
            let t = now(self);
            let reply = match received {
                transport::Received::Answer(response) => {
                    let (reply, line) = st.peers.check_response(peer, response);
                    self.report(&st, line);
                    if let Some(text) = st.peers.take_removed() {
                        self.removed(&mut st, text);
                        return;
                    }
                    reply
                }
                transport::Received::Failed(e) => {
                    debug!("requests to node{peer} failed: {e}");
                    None
                }
                transport::Received::Superseded => continue,
                transport::Received::Closed => return,
            };
            match reply {
                Some(reply) => {
                    self.message(&st, false, || Some(Message::reply(peer, self.id, &reply)));
                    if let Err(rejection) = st.raft.handle_reply(peer, reply, t) {
                        let line = st.peers.reply_refused(peer, &rejection);
                        self.report(&st, line);
                    }
                }
                None => st.raft.handle_failure(peer, t),
            }
            // A reply may commit entries: applied here, at once.
            st.apply_here = true;
            self.process_ready(&mut st);
            self.apply_here(&mut st);
        }
    }
}
