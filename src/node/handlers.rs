//! The request handlers (`server::Handler`): Raft RPCs through
//! `service::peer`, writes and reads through `service::client`, admin
//! requests (status, transfer, snapshot, lab), and event streams. Each
//! takes the node's lock to step the core and process its Ready, and
//! waits for an outcome (a commit, a read, a new leader) on a condvar of
//! its own, which releases the lock. Also leadership hand-over at
//! SIGTERM.

use super::*;
use crate::oneshot;

/// The server's view of a node. Holds an `Arc` so that deferred work
/// (waiting for a commit or a read) can outlive the pool worker that
/// started it.
pub(super) struct Service(pub(super) Arc<Shared>);

/// The shortest interval between a subscriber's statuses: `raftctl web`
/// asks for this, to show a silent node within about a heartbeat.
pub const MIN_STATUS_MS: u64 = 50;

/// A subscriber's stream (see `events`): `subscribed`, then events as
/// they come, with the node's status every `status_every` in between,
/// even while events keep coming.
pub(super) struct EventStream {
    shared: Arc<Shared>,
    subscription: events::Subscription,
    status_every: Duration,
    next_status: Instant,
    started: bool,
    /// Why the subscription ended, once it has (sent after what was
    /// queued before).
    end: Option<events::StreamError>,
    ended: bool,
}

/// A `watch` stream: `watching`, then the changes to the key (or prefix)
/// from the change feed in log order, a `progress` line each second with
/// none, and an error line ending it if the feed no longer holds `next`.
pub(super) struct WatchStream {
    shared: Arc<Shared>,
    key: String,
    prefix: bool,
    /// The first log index not yet reported.
    next: Index,
    started: bool,
    ended: bool,
}

impl Iterator for WatchStream {
    type Item = Arc<str>;

    fn next(&mut self) -> Option<Arc<str>> {
        let encode = |r: &Response| serde_json::to_string(r).expect("responses serialize");
        if !self.started {
            self.started = true;
            return Some(encode(&Response::Watching { from: self.next }).into());
        }
        if self.ended || self.shared.state.lock().stopping {
            return None;
        }
        let (key, prefix) = (&self.key, self.prefix);
        let wanted = |k: &str| {
            if prefix {
                k.starts_with(key.as_str())
            } else {
                k == key
            }
        };
        let found = self
            .shared
            .feed
            .since(self.next, wanted, usize::MAX, Duration::from_secs(1));
        match found {
            Ok((changes, applied)) if changes.is_empty() => {
                self.next = self.next.max(applied + 1);
                Some(
                    encode(&Response::Progress {
                        applied_index: applied,
                    })
                    .into(),
                )
            }
            Ok((changes, applied)) => {
                self.next = applied + 1;
                let lines: Vec<String> = changes
                    .into_iter()
                    .map(|(index, c)| {
                        encode(&Response::Change {
                            index,
                            key: c.key,
                            deleted: c.value.is_none(),
                            value: c.value,
                        })
                    })
                    .collect();
                Some(lines.join("\n").into())
            }
            Err(gone) => {
                self.ended = true;
                let message = format!(
                    "this node's change feed starts at index {} (it keeps the last {} changes, at most 64 MiB of them, and none from before a snapshot replaced its store): read the keys, then watch from there",
                    gone.complete_from,
                    crate::kv::feed::FEED_CAPACITY
                );
                Some(encode(&Response::error(ErrorCode::Compacted, message)).into())
            }
        }
    }
}

/// About how many bytes of queued events one write of a stream carries.
pub(super) const STREAM_BATCH: usize = 64 * 1024;

impl Iterator for EventStream {
    type Item = Arc<str>;

    fn next(&mut self) -> Option<Arc<str>> {
        let encode =
            |r: &Response| -> Option<Arc<str>> { serde_json::to_string(r).ok().map(Into::into) };
        if !self.started {
            self.started = true;
            return encode(&Response::Subscribed {
                node: self.shared.id,
                started_ms: self.shared.events.started_ms(),
            });
        }
        if self.ended {
            return None;
        }
        if let Some(why) = self.end.take() {
            self.ended = true;
            return encode(&Response::error(ErrorCode::TooSlow, why.to_string()));
        }
        let wait = self.next_status.saturating_duration_since(Instant::now());
        let next = if wait.is_zero() {
            events::Next::Idle
        } else {
            self.subscription.next(wait)
        };
        match next {
            // Whatever else is queued goes in the same write: under load
            // a subscriber costs one wake-up and one write per batch, not
            // per event.
            events::Next::Line(first) => {
                let mut batch = String::from(&*first);
                while batch.len() < STREAM_BATCH {
                    match self.subscription.next(Duration::ZERO) {
                        events::Next::Line(line) => {
                            batch.push('\n');
                            batch.push_str(&line);
                        }
                        events::Next::Idle => break,
                        events::Next::Ended(why) => {
                            self.end = Some(why);
                            break;
                        }
                    }
                }
                Some(batch.into())
            }
            events::Next::Idle => {
                self.next_status = Instant::now() + self.status_every;
                let status = self.shared.status(&self.shared.state.lock());
                encode(&Response::Status(Box::new(status)))
            }
            events::Next::Ended(why) => {
                self.ended = true;
                encode(&Response::error(ErrorCode::TooSlow, why.to_string()))
            }
        }
    }
}

/// How many of the last log entries' terms a status carries (for the
/// web view's row of boxes).
pub(super) const LOG_TAIL: usize = 40;

/// How long a write or a linearizable read waits on this node before it
/// answers `timeout`. Kept shorter than the client's own timeout so the
/// client can still try another node.
pub(super) const WAIT_TIMEOUT: Duration = Duration::from_secs(2);

fn shutting_down() -> Response {
    Response::error(ErrorCode::ShuttingDown, "node is stopping; retry elsewhere")
}

impl Handler for Service {
    fn peer(&self, request: PeerRequest) -> (Response, Option<NodeId>) {
        let shared = &self.0;
        let mut st = shared.state.lock();
        if let Some(refused) = shared.refuse_peers(&st) {
            return (refused, None);
        }
        shared.step_peer(&mut st, request)
    }

    /// Answers a leader's pipelined requests with one sync for them all
    /// (rule 2 of `service::durability`): each is stepped and its
    /// appends written, the log synced once, and only then do the answers
    /// leave (the caller sends them after this returns).
    fn peers(&self, requests: Vec<PeerRequest>) -> Vec<(Response, Option<NodeId>)> {
        let shared = &self.0;
        let mut st = shared.state.lock();
        if let Some(refused) = shared.refuse_peers(&st) {
            return requests.iter().map(|_| (refused.clone(), None)).collect();
        }
        st.in_batch = true;
        let answers = requests
            .into_iter()
            .map(|request| shared.step_peer(&mut st, request))
            .collect();
        st.in_batch = false;
        let state = &mut *st;
        match durability::sync_batch(&mut state.raft, &mut state.storage) {
            Ok(again) => {
                if again {
                    shared.process_ready(state);
                }
            }
            Err(e) => shared.storage_failed(state, &e),
        }
        answers
    }

    fn admin(&self, request: wire::Request) -> Response {
        let shared = &self.0;
        let mut st = shared.state.lock();
        match request {
            wire::Request::IsLeader => st.clients.is_leader(&st.raft),
            wire::Request::Status => Response::Status(Box::new(shared.status(&st))),
            wire::Request::Events => Response::Events {
                events: shared.events.recent(),
            },
            wire::Request::Members => Response::Members(Box::new(shared.members_view(&st))),
            wire::Request::Lab { isolate } => shared.lab(&mut st, isolate),
            other => Response::error(
                ErrorCode::BadRequest,
                format!("not an admin request: {other:?}"),
            ),
        }
    }

    fn subscribe(&self, request: wire::Request) -> Result<server::Lines, Response> {
        if let wire::Request::Backup = request {
            return self.0.backup();
        }
        if let wire::Request::Watch { key, prefix, from } = request {
            let from = from.unwrap_or_else(|| self.0.kv.lock().applied_index() + 1);
            return Ok(Box::new(WatchStream {
                shared: self.0.clone(),
                key,
                prefix,
                next: from,
                started: false,
                ended: false,
            }));
        }
        let wire::Request::Subscribe {
            recent,
            messages,
            status_ms,
        } = request
        else {
            return Err(Response::error(
                ErrorCode::BadRequest,
                format!("not a subscription: {request:?}"),
            ));
        };
        if !(MIN_STATUS_MS..=60_000).contains(&status_ms) {
            return Err(Response::error(
                ErrorCode::BadRequest,
                format!("status_ms must be between {MIN_STATUS_MS} and 60000, not {status_ms}"),
            ));
        }
        let subscription = self
            .0
            .events
            .subscribe(recent, messages)
            .map_err(|e| Response::error(ErrorCode::Busy, e.to_string()))?;
        Ok(Box::new(EventStream {
            shared: self.0.clone(),
            subscription,
            status_every: Duration::from_millis(status_ms),
            next_status: Instant::now(),
            started: false,
            end: None,
            ended: false,
        }))
    }

    fn enqueue(&self, request: wire::Request) -> Result<Handled, wire::Request> {
        let wire::Request::Write(command) = request else {
            return Err(request);
        };
        // Made here, on the connection's thread, which waits on it below.
        let (answer, answered) = oneshot::channel();
        self.0.submit_write(command, answer);
        Ok(Handled::Later(Box::new(move || {
            match answered.recv_timeout(WAIT_TIMEOUT) {
                Ok(response) => response,
                Err(oneshot::RecvError::Timeout) => ClientService::write_timed_out(),
                Err(oneshot::RecvError::Disconnected) => shutting_down(),
            }
        })))
    }

    fn client(&self, request: wire::Request) -> Handled {
        let shared = &self.0;
        if let wire::Request::Read { key, stale } = &request
            && (*stale || shared.unsafe_local_reads)
        {
            let key = key.clone();
            // The store alone: a stale read never waits for the node.
            return Handled::Now(ClientService::stale_read(&shared.kv.lock(), key));
        }
        if let wire::Request::Range(q) = &request
            && q.stale
        {
            return Handled::Now(ClientService::stale_range(&shared.kv.lock(), q));
        }
        if let wire::Request::Snapshot = request {
            let shared = shared.clone();
            return Handled::Later(Box::new(move || shared.snapshot_now()));
        }
        if let wire::Request::Transfer { to } = request {
            let shared = shared.clone();
            return Handled::Later(Box::new(move || shared.transfer_now(to)));
        }
        if let wire::Request::ChangeMembers { change } = request {
            let shared = shared.clone();
            return Handled::Later(Box::new(move || shared.change_members(&change)));
        }
        let mut st = shared.state.lock();
        if st.stopping {
            return Handled::Now(shutting_down());
        }
        let st = &mut *st;
        Handled::Now(match request {
            wire::Request::Log { from, limit } => ClientService::log(&st.raft, from, limit),
            request @ (wire::Request::Read { stale: false, .. } | wire::Request::Range(_)) => {
                let query = match request {
                    wire::Request::Read { key, .. } => Query::Key(key),
                    wire::Request::Range(q) => Query::Range(q),
                    _ => unreachable!("matched above"),
                };
                // The store's lock only while the read starts (a lease
                // read answers from it at once): not through
                // `process_ready`, as for writes below.
                let step =
                    st.clients
                        .read_query(&mut st.raft, &shared.kv.lock(), query, now(shared));
                match step {
                    Step::Answer(r) => r,
                    Step::Wait(ticket) => {
                        shared.process_ready(st);
                        let shared = shared.clone();
                        return Handled::Later(Box::new(move || shared.finish_read(ticket)));
                    }
                }
            }
            other => Response::error(
                ErrorCode::BadRequest,
                format!("not a client request: {other:?}"),
            ),
        })
    }
}

/// Sends the lines a writer writes through a bounded channel, in batches
/// of about `STREAM_BATCH` bytes: a backup's snapshot is written on a
/// thread of its own, as fast as the connection takes it.
struct BatchWriter {
    batch: String,
    pending: Vec<u8>,
    to: crossbeam::channel::Sender<Arc<str>>,
}

impl std::io::Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if !self.batch.is_empty() {
                self.batch.push('\n');
            }
            self.batch.push_str(&line);
            if self.batch.len() >= STREAM_BATCH {
                self.flush()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch: Arc<str> = std::mem::take(&mut self.batch).into();
        self.to
            .send(batch)
            .map_err(|_| std::io::Error::other("the reader went away"))
    }
}

impl Shared {
    /// Why peer requests get no answer from the core now, if they do not.
    fn refuse_peers(&self, st: &State) -> Option<Response> {
        if st.stopping {
            return Some(shutting_down());
        }
        if self.isolated.load(Ordering::Relaxed) {
            return Some(Response::error(
                ErrorCode::Isolated,
                "this node is cut off from its peers (lab)",
            ));
        }
        None
    }

    /// One peer request through the core, its Ready handled (durable
    /// before the answer leaves, or at the end of the batch).
    fn step_peer(&self, st: &mut State, request: PeerRequest) -> (Response, Option<NodeId>) {
        let from = request.from;
        self.message(st, false, || {
            Some(Message::request(from, self.id, &request.rpc))
        });
        let answer = st.peers.handle(&mut st.raft, request, now(self));
        self.report(st, answer.report);
        self.process_ready(st);
        self.message(st, true, || {
            let reply = answer.response.clone().into_peer().ok()?;
            Some(Message::reply(self.id, from, &reply))
        });
        (answer.response, answer.from_member.then_some(from))
    }

    /// `backup`: once a linearizable read confirms this node leads and its
    /// store has applied everything committed before the request, a copy
    /// of the store (copy-on-write: microseconds) is streamed as snapshot
    /// lines by a thread of its own.
    pub(super) fn backup(&self) -> Result<server::Lines, Response> {
        let step = {
            let mut st = self.state.lock();
            if st.stopping {
                return Err(shutting_down());
            }
            let st = &mut *st;
            let step = st.clients.read_query(
                &mut st.raft,
                &self.kv.lock(),
                Query::Key(String::new()),
                now(self),
            );
            self.process_ready(st);
            step
        };
        let answer = match step {
            Step::Answer(answer) => answer,
            Step::Wait(ticket) => self.finish_read(ticket),
        };
        if !matches!(answer, Response::Value { .. }) {
            return Err(answer);
        }
        let copy = self.kv.lock().clone();
        let (to, lines) = crossbeam::channel::bounded(16);
        thread::Builder::new()
            .name("backup".into())
            .spawn(move || {
                let mut out = BatchWriter {
                    batch: String::new(),
                    pending: Vec::new(),
                    to,
                };
                let _ = copy
                    .write_snapshot(&mut out)
                    .and_then(|()| std::io::Write::flush(&mut out));
            })
            .map_err(|e| Response::error(ErrorCode::Internal, format!("cannot start: {e}")))?;
        Ok(Box::new(lines.into_iter()))
    }

    /// Before stopping: a leader hands its leadership over and waits until
    /// it hears from the new leader (so that the vote and the answers it
    /// owes leave before it exits), or the transfer is abandoned.
    pub(super) fn hand_over(&self, reason: &str) {
        let mut st = self.state.lock();
        let target = match st.raft.transfer_leadership(None, now(self)) {
            Ok(target) => target,
            Err(_) => return, // not leader, or alone
        };
        self.note(
            &st,
            log::Level::Info,
            format!("{reason}: handing leadership to node{target} before stopping"),
        );
        self.process_ready(&mut st);
        let term = st.raft.term();
        let _ = self.wait_for_handover(&mut st, term, 2 * self.election_timeout);
    }

    /// Waits, under the lock, until the transfer started in `term` ends:
    /// `Ok(new leader)` once a leader of a later term is known here,
    /// `Err(true)` if it was abandoned (we still lead), `Err(false)` if
    /// `timeout` passed first.
    pub(super) fn wait_for_handover(
        &self,
        st: &mut MutexGuard<State>,
        term: consensus::Term,
        timeout: Duration,
    ) -> Result<NodeId, bool> {
        let deadline = Instant::now() + timeout;
        loop {
            match st.raft.leader_id() {
                Some(l) if st.raft.term() > term => return Ok(l),
                _ if st.raft.role() == Role::Leader && st.raft.transfer().is_none() => {
                    return Err(true);
                }
                _ => {}
            }
            // Notified after every input to the core.
            if self.changed.wait_until(st, deadline).timed_out() {
                return Err(false);
            }
        }
    }

    /// `raftctl transfer`: hands leadership to `to` (or the most
    /// up-to-date follower) and answers once a new leader is known here.
    pub(super) fn transfer_now(&self, to: Option<NodeId>) -> Response {
        let started = Instant::now();
        let mut st = self.state.lock();
        let term = st.raft.term();
        let target = match st.raft.transfer_leadership(to, now(self)) {
            Ok(target) => target,
            Err(consensus::TransferError::AlreadyLeader) => {
                return Response::Transferred {
                    from: self.id,
                    to: self.id,
                    term,
                    millis: 0,
                };
            }
            Err(consensus::TransferError::NotLeader { leader_hint }) => {
                return st.clients.not_leader(leader_hint);
            }
            Err(e @ consensus::TransferError::InProgress { .. }) => {
                return Response::error(ErrorCode::Internal, e.to_string());
            }
            Err(e) => return Response::error(ErrorCode::BadRequest, e.to_string()),
        };
        self.note(
            &st,
            log::Level::Info,
            format!("asked to hand leadership to node{target}"),
        );
        self.process_ready(&mut st);
        match self.wait_for_handover(&mut st, term, 2 * self.election_timeout) {
            Ok(leader) => Response::Transferred {
                from: self.id,
                to: leader,
                term: st.raft.term(),
                millis: started.elapsed().as_millis() as u64,
            },
            Err(abandoned) => Response::error(
                if abandoned {
                    ErrorCode::Internal
                } else {
                    ErrorCode::Timeout
                },
                if abandoned {
                    format!(
                        "the transfer to node{target} was abandoned: it did not start an election within an election timeout; node{} still leads",
                        self.id
                    )
                } else {
                    format!(
                        "no new leader known after {} ms",
                        started.elapsed().as_millis()
                    )
                },
            ),
        }
    }

    /// `raftctl snapshot`: takes one now, however short the log.
    pub(super) fn snapshot_now(&self) -> Response {
        match self.take_snapshot() {
            Ok(Some(taken)) => Response::Snapshot(taken),
            Ok(None) => {
                let meta = self.state.lock().raft.snapshot();
                Response::Snapshot(SnapshotTaken {
                    taken: false,
                    index: meta.last_index,
                    term: meta.last_term,
                    bytes: meta.size,
                    ..SnapshotTaken::default()
                })
            }
            Err(e) => Response::error(ErrorCode::Internal, format!("cannot take a snapshot: {e}")),
        }
    }

    /// Waits, at most `WAIT_TIMEOUT`, until `poll` has an answer; `None`
    /// on timeout. `poll` runs under the lock; in between, the request
    /// sleeps on its own condvar, which `register` files where the change
    /// it waits for will wake it.
    pub(super) fn wait_for(
        &self,
        mut poll: impl FnMut(&mut State) -> Option<Response>,
        register: impl Fn(&mut State, &Arc<Condvar>),
    ) -> Option<Response> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let me = Arc::new(Condvar::new());
        let mut st = self.state.lock();
        loop {
            if let Some(answer) = poll(&mut st) {
                return Some(answer);
            }
            if st.stopping {
                return Some(shutting_down());
            }
            register(&mut st, &me);
            if me.wait_until(&mut st, deadline).timed_out() {
                return poll(&mut st);
            }
        }
    }

    /// Waits for a linearizable read to be confirmed and applied.
    pub(super) fn finish_read(&self, ticket: ReadTicket) -> Response {
        let answer = self.wait_for(
            |st| {
                st.clients
                    .poll_read(&st.raft, &self.kv.lock(), &ticket, now(self))
            },
            |st, me| match st.clients.confirmed_index(&ticket) {
                Some(index) => st.waiters.until_applied(index, me),
                None => st.waiters.until_read_answered(ticket.ctx, me),
            },
        );
        answer.unwrap_or_else(|| {
            self.state.lock().clients.forget_read(&ticket);
            ClientService::read_timed_out()
        })
    }
}
