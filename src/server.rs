//! The RPC server: newline-delimited JSON over std TCP.
//!
//! Each connection gets a small reader thread that blocks in `read`
//! (cheap: it holds nothing else), and a request runs where its class
//! says (see [`RequestClass`]):
//!
//! * **peer** RPCs (RequestVote, AppendEntries) and **admin** questions
//!   (`status`, `is_leader`) run on the connection's own thread. They are
//!   short, and so never wait in a queue behind client requests: a leader's
//!   heartbeats and a candidate's votes keep their timing however busy the
//!   client pool is, and an operator can always ask what is going on.
//! * **client** requests (reads, the log, admin commands that change
//!   something) go to a bounded pool of workers, which bounds how many
//!   threads contend for the node's lock. A request that then only waits
//!   (for a commit, a read round) does so on the connection's thread, not
//!   in the pool. A request the handler can take without blocking
//!   (`Handler::enqueue`: a write, which the node queues for its log
//!   writer) skips the pool.
//!
//! A reader waits for its request's response before reading the next line,
//! so responses stay in request order, and a client trickling a line one
//! byte at a time (slowloris) holds its own thread only.
//!
//! **Connection limits.** At most `max_connections` client connections
//! are open at once. A connection counts as a client's until its first
//! peer RPC shows it comes from a member of this cluster (right cluster id,
//! known node id); peers' connections are then not counted, so clients can
//! never lock peers out. When the cap is reached, a new connection takes
//! the place of the client connection that has been idle (no request in
//! progress) the longest, which is closed; only if every client connection
//! is in the middle of a request is the newcomer answered `busy` and
//! closed. And once three quarters of the cap are in use, client
//! connections idle for longer than `idle_timeout` are closed. A closed
//! kept-open connection is normal for a client: ours reconnect.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;

use crate::consensus::NodeId;
use crate::tls::{self, Stream, Tls};
use crate::wire::{self, ErrorCode, PeerRequest, Request, RequestClass, Response, WireError};

/// Answers requests; see the module docs for which method runs where.
pub trait Handler: Send + Sync + 'static {
    /// A Raft RPC from another node, on the connection's own thread.
    /// Returns the response and, if the sender proved to be a member of
    /// this cluster, its node id.
    fn peer(&self, request: PeerRequest) -> (Response, Option<NodeId>);
    /// The Raft RPCs that arrived together on one connection (one, or a
    /// leader's pipelined AppendEntries), answered in order and sent
    /// together: a node can then make them durable with one sync. This is
    /// what the server calls; by default, `peer` for each.
    fn peers(&self, requests: Vec<PeerRequest>) -> Vec<(Response, Option<NodeId>)> {
        requests.into_iter().map(|r| self.peer(r)).collect()
    }
    /// `status` or `is_leader`, on the connection's own thread.
    fn admin(&self, request: Request) -> Response;
    /// A client request the handler takes without blocking, on the
    /// connection's own thread, sparing it a trip through the pool (a
    /// write, which the node queues for its log writer). `Err` gives the
    /// request back, for the pool.
    fn enqueue(&self, request: Request) -> Result<Handled, Request> {
        Err(request)
    }
    /// A client request, on a pool worker.
    fn client(&self, request: Request) -> Handled;
    /// A `subscribe`, on the connection's own thread: the lines to send
    /// from now on, until the iterator ends or the other end stops
    /// reading; or the response refusing it.
    fn subscribe(&self, request: Request) -> Result<Lines, Response>;
}

/// A stream's lines, each item one or more lines (without the last
/// newline), sent as it comes; blocking in `next` is fine
/// (the connection's thread does nothing else). The iterator must end or
/// yield now and then, so that a closed connection is noticed.
pub type Lines = Box<dyn Iterator<Item = Arc<str>> + Send>;

/// What a client handler produced.
pub enum Handled {
    Now(Response),
    /// The rest of the work only waits (e.g. for a commit); it runs on the
    /// connection's own thread so that it does not hold a pool worker.
    Later(Box<dyn FnOnce() -> Response + Send>),
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Client requests handled at once.
    pub workers: usize,
    /// Client connections open at once; see the module docs.
    pub max_connections: usize,
    /// Near the cap, client connections idle this long are closed.
    pub idle_timeout: Duration,
    /// A response that cannot be written for this long (the other end
    /// stopped reading) closes the connection, so that it does not stay
    /// busy, and unevictable, forever.
    pub write_timeout: Duration,
    /// TLS on every connection (see `tls`): a plain connection is
    /// answered with an error line and closed.
    pub tls: Option<Tls>,
}

impl ServerOptions {
    /// Whether these options can run a server; the one check, for the
    /// command line and `Node::start` alike.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 || self.max_connections == 0 {
            return Err("workers and connections allowed must be above 0".into());
        }
        if self.idle_timeout.is_zero() || self.write_timeout.is_zero() {
            return Err("the idle and write timeouts must be above 0".into());
        }
        Ok(())
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: 8,
            max_connections: 256,
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

struct Job {
    request: Request,
    reply: Sender<Handled>,
}

/// A running server: its acceptor, worker pool and idle reaper, and a
/// thread per connection.
pub struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    registry: Arc<Registry>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection, and returns once every
    /// thread of the server has ended (a request being handled is
    /// finished first; the handler should answer quickly by then).
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // The acceptor blocks in `accept`: a connection wakes it.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        self.registry.close_all();
        // Workers end once the acceptor and every connection, which hold
        // the job queue's senders, have ended.
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Starts the acceptor, the worker pool and the idle reaper; they run
/// until [`Server::stop`].
pub fn spawn(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    options: ServerOptions,
) -> io::Result<Server> {
    let addr = listener.local_addr()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let (jobs_tx, jobs_rx) = bounded::<Job>(options.workers * 2);
    for k in 0..options.workers {
        let rx = jobs_rx.clone();
        let handler = handler.clone();
        threads.push(
            thread::Builder::new()
                .name(format!("worker-{k}"))
                .spawn(move || worker(rx, handler))?,
        );
    }
    let registry = Arc::new(Registry::new(options.max_connections));
    {
        let registry = registry.clone();
        let stopping = stopping.clone();
        let idle = options.idle_timeout;
        let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        threads.push(
            thread::Builder::new()
                .name("reaper".into())
                .spawn(move || {
                    while !stopping.load(Ordering::SeqCst) {
                        thread::sleep(every);
                        registry.reap(Instant::now(), idle);
                    }
                })?,
        );
    }
    let acceptor_registry = registry.clone();
    let acceptor_stopping = stopping.clone();
    let refusals = Arc::new(Refusals::default());
    let acceptor = thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || {
            let (registry, stopping) = (acceptor_registry, acceptor_stopping);
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let id = match registry.admit(&stream, Instant::now()) {
                    Ok(id) => id,
                    Err(Full) => {
                        let mut s = stream;
                        let _ = wire::write_message(
                            &mut s,
                            &Response::error(
                                ErrorCode::Busy,
                                "too many client connections, all busy",
                            ),
                        );
                        continue;
                    }
                };
                let _ = stream.set_write_timeout(Some(options.write_timeout));
                let conn = Connection {
                    id,
                    registry: registry.clone(),
                    handler: handler.clone(),
                    jobs: jobs_tx.clone(),
                    tls: options.tls.clone(),
                    refusals: refusals.clone(),
                };
                let spawned = thread::Builder::new()
                    .name("conn".into())
                    .stack_size(CONNECTION_STACK)
                    .spawn(move || conn.serve(stream));
                if spawned.is_err() {
                    log::warn!("cannot start a connection thread; connection dropped");
                    registry.remove(id);
                }
            }
        })?;
    threads.push(acceptor);
    Ok(Server {
        addr,
        stopping,
        registry,
        threads,
    })
}

fn worker(jobs: Receiver<Job>, handler: Arc<dyn Handler>) {
    for job in jobs {
        let _ = job.reply.send(handler.client(job.request));
    }
}

/// One accepted connection, served on its own thread.
struct Connection {
    id: u64,
    registry: Arc<Registry>,
    handler: Arc<dyn Handler>,
    jobs: Sender<Job>,
    tls: Option<Tls>,
    refusals: Arc<Refusals>,
}

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who was refused, and why, so far: each (address, reason) is logged
/// once, not once per attempt (a peer retries every heartbeat).
#[derive(Default)]
struct Refusals(Mutex<std::collections::HashSet<(std::net::IpAddr, String)>>);

impl Refusals {
    fn note(&self, from: Option<SocketAddr>, why: &str) {
        let ip = from.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let mut seen = self.0.lock();
        if seen.len() < 1024 && seen.insert((ip, why.to_string())) {
            log::warn!("{why}, from {ip} (said once per address and reason)");
        }
    }
}

impl Connection {
    fn serve(self, tcp: TcpStream) {
        if let Some(stream) = self.secure(tcp) {
            self.serve_requests(stream);
        }
        self.registry.remove(self.id);
    }

    /// The connection as its requests will travel: TLS if the node
    /// requires it (a plain request is answered with an error line
    /// saying so), plain otherwise.
    fn secure(&self, mut tcp: TcpStream) -> Option<Stream> {
        let Some(tls) = &self.tls else {
            return Some(Stream::Plain(tcp));
        };
        let from = tcp.peer_addr().ok();
        let _ = tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        // The handshake's flights go out at once, not held back by Nagle.
        let _ = tcp.set_nodelay(true);
        let mut first = [0u8; 1];
        // A TLS connection starts with a handshake record (22); a plain
        // one with a JSON line.
        if matches!(tcp.peek(&mut first), Ok(1) if first[0] != 22) {
            self.refusals
                .note(from, "refused a plain connection (this node requires TLS)");
            let _ = wire::write_message(
                &mut tcp,
                &Response::error(
                    ErrorCode::Unauthenticated,
                    "this node requires TLS: connect with its certificate authority and a certificate (raftctl --tls DIR)",
                ),
            );
            return None;
        }
        match tls.accept(tcp) {
            Ok(stream) => {
                let _ = stream.tcp().set_read_timeout(None);
                Some(stream)
            }
            Err(e) => {
                self.refusals
                    .note(from, &format!("refused a connection ({e})"));
                None
            }
        }
    }

    fn serve_requests(&self, stream: Stream) {
        let _ = stream.tcp().set_nodelay(true);
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        // Room for several of a leader's pipelined AppendEntries at once, so
        // that they can be answered as one batch (`buffered_peer_requests`).
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut buf = Vec::new();
        let (reply_tx, reply_rx) = bounded(1);
        loop {
            let line = wire::read_line(&mut reader, wire::MAX_LINE, &mut buf);
            if matches!(&line, Err(e) if !matches!(e, WireError::TooLarge { .. })) {
                return; // closed, reset, evicted, or cut mid-line
            }
            // From here until the response is written, the connection is
            // busy and will not be evicted; if it already was, stop.
            if !self.registry.begin(self.id) {
                return;
            }
            let response = match line {
                Ok(()) => match wire::decode_request(&buf) {
                    // The connection stays busy while it streams: never
                    // evicted, but subscribers are few (`events`).
                    Ok(request) if request.class() == RequestClass::Stream => {
                        match self.handler.subscribe(request) {
                            Ok(lines) => return send_stream(&mut writer, lines),
                            Err(refused) => refused,
                        }
                    }
                    Ok(request) => match request.into_peer() {
                        Ok(first) => {
                            let more = self.buffered_peer_requests(&mut reader);
                            let answers = self.run_peers(first, more, &writer);
                            if write_all_messages(&mut writer, &answers).is_err() {
                                return;
                            }
                            self.registry.end(self.id, Instant::now());
                            continue;
                        }
                        Err(request) => match self.run(request, &reply_tx, &reply_rx) {
                            Some(r) => r,
                            None => return,
                        },
                    },
                    Err(e) => {
                        Response::error(ErrorCode::BadRequest, format!("malformed request: {e}"))
                    }
                },
                Err(e) => Response::error(ErrorCode::TooLarge, format!("request rejected: {e}")),
            };
            if wire::write_message(&mut writer, &response).is_err() {
                return;
            }
            self.registry.end(self.id, Instant::now());
        }
    }

    /// Peer requests read in full already, behind the one just read (a
    /// leader pipelines AppendEntries): taken off the buffer without
    /// waiting for more bytes, up to [`PEER_BATCH`]. Stops at the first
    /// line that is not a peer request, leaving it to be read as usual.
    fn buffered_peer_requests(&self, reader: &mut BufReader<Stream>) -> Vec<PeerRequest> {
        let mut more = Vec::new();
        while more.len() + 1 < PEER_BATCH {
            let buffered = reader.buffer();
            let Some(end) = buffered.iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = buffered[..end]
                .strip_suffix(b"\r")
                .unwrap_or(&buffered[..end]);
            let Ok(Ok(peer)) = wire::decode_request(line).map(Request::into_peer) else {
                break;
            };
            reader.consume(end + 1);
            more.push(peer);
        }
        more
    }

    /// Answers peer requests, in order; those that arrived together are
    /// handed to the node together (`Handler::peers`).
    fn run_peers(
        &self,
        first: PeerRequest,
        more: Vec<PeerRequest>,
        stream: &Stream,
    ) -> Vec<Response> {
        let mut answers = Vec::with_capacity(more.len() + 1);
        let mut batch = Vec::with_capacity(more.len() + 1);
        for peer in std::iter::once(first).chain(more) {
            // With TLS, a peer RPC counts only from the node its
            // certificate names (`tls`): neither a client nor another
            // node can speak for it.
            if self.tls.is_some() && !stream.peer_named(&tls::node_name(peer.from)) {
                answers.extend(self.answer_peers(std::mem::take(&mut batch)));
                let why = format!(
                    "a peer message claiming node{} on a connection whose certificate does not name it",
                    peer.from
                );
                let from = stream.tcp().peer_addr().ok();
                self.refusals.note(from, &format!("refused {why}"));
                answers.push(Response::error(ErrorCode::Unauthenticated, why));
                continue;
            }
            batch.push(peer);
        }
        answers.extend(self.answer_peers(batch));
        answers
    }

    fn answer_peers(&self, batch: Vec<PeerRequest>) -> Vec<Response> {
        if batch.is_empty() {
            return Vec::new();
        }
        self.handler
            .peers(batch)
            .into_iter()
            .map(|(response, member)| {
                if let Some(member) = member {
                    self.registry.mark_peer(self.id, member, Instant::now());
                }
                response
            })
            .collect()
    }

    /// Runs one request where its class says; `None` if the pool is gone.
    /// (Peer requests go through `run_peers`.)
    fn run(
        &self,
        request: Request,
        reply_tx: &Sender<Handled>,
        reply_rx: &Receiver<Handled>,
    ) -> Option<Response> {
        if request.class() == RequestClass::Admin {
            return Some(self.handler.admin(request));
        }
        let request = match self.handler.enqueue(request) {
            Ok(Handled::Now(r)) => return Some(r),
            Ok(Handled::Later(wait)) => return Some(wait()),
            Err(request) => request,
        };
        self.jobs
            .send(Job {
                request,
                reply: reply_tx.clone(),
            })
            .ok()?;
        match reply_rx.recv().ok()? {
            Handled::Now(r) => Some(r),
            Handled::Later(wait) => Some(wait()),
        }
    }
}

/// The most peer requests answered as one batch.
const PEER_BATCH: usize = 64;

/// Writes several messages with one write (each on its line).
fn write_all_messages(writer: &mut Stream, messages: &[Response]) -> io::Result<()> {
    use std::io::Write;
    let mut out = Vec::new();
    for m in messages {
        serde_json::to_writer(&mut out, m).map_err(io::Error::other)?;
        out.push(b'\n');
    }
    writer.write_all(&out)?;
    writer.flush()
}

/// Sends a stream's lines until it ends or a write fails (the other end
/// closed, or stopped reading for the write timeout).
///
/// The socket's send buffer is kept small (the kernel would otherwise
/// grow it to megabytes for a reader that has stopped), so that what a
/// stalled subscriber holds is mostly the stream's own bounded queue,
/// which then fills and drops it (`events`).
fn send_stream(writer: &mut Stream, lines: Lines) {
    use std::io::Write;
    let _ = socket2::SockRef::from(writer.tcp()).set_send_buffer_size(STREAM_SEND_BUFFER);
    for line in lines {
        let sent = writer
            .write_all(line.as_bytes())
            .and_then(|()| writer.write_all(b"\n"))
            .and_then(|()| writer.flush());
        if sent.is_err() {
            return;
        }
    }
}

/// The kernel's send buffer for a stream's connection, in bytes.
const STREAM_SEND_BUFFER: usize = 64 * 1024;

/// The stack of a connection's thread. It decodes requests, whose JSON
/// may nest as deep as serde_json's limit (128 levels, each several
/// hundred bytes of stack in a debug build), and runs peer RPCs through
/// the core and storage. Only the pages touched are ever resident.
const CONNECTION_STACK: usize = 2 * 1024 * 1024;

/// Returned by [`Registry::admit`] when every client connection is busy.
struct Full;

/// Connections one member may hold; see [`Registry::mark_peer`]. Ours
/// need one each (the sender's replicator), more while a connection is
/// being replaced.
const MAX_PEER_CONNECTIONS: usize = 4;

struct Slot {
    /// A handle on the socket, to close it from another thread.
    stream: TcpStream,
    /// A request is being handled or answered.
    busy: bool,
    /// The other end proved to be this member of the cluster.
    peer: Option<NodeId>,
    /// When the last request was answered (or the connection opened).
    last_active: Instant,
}

#[derive(Default)]
struct Slots {
    by_id: HashMap<u64, Slot>,
    next_id: u64,
    /// Open connections not known to be peers'.
    clients: usize,
    /// The server is stopping: no connection is admitted any more.
    closed: bool,
}

/// The open connections, for the cap, eviction and reaping. Time is passed
/// in, so the policy can be tested without waiting.
struct Registry {
    slots: Mutex<Slots>,
    max_clients: usize,
}

impl Registry {
    fn new(max_clients: usize) -> Registry {
        Registry {
            slots: Mutex::new(Slots::default()),
            max_clients: max_clients.max(1),
        }
    }

    /// Registers a new connection, closing the longest-idle client
    /// connection if the cap is reached.
    fn admit(&self, stream: &TcpStream, now: Instant) -> Result<u64, Full> {
        let mut s = self.slots.lock();
        if s.closed {
            return Err(Full);
        }
        if s.clients >= self.max_clients {
            let victim = s
                .by_id
                .iter()
                .filter(|(_, slot)| slot.peer.is_none() && !slot.busy)
                .min_by_key(|(_, slot)| slot.last_active)
                .map(|(&id, _)| id);
            match victim {
                Some(id) => Self::close(&mut s, id),
                None => return Err(Full),
            }
        }
        let handle = stream.try_clone().map_err(|_| Full)?;
        let id = s.next_id;
        s.next_id += 1;
        s.clients += 1;
        s.by_id.insert(
            id,
            Slot {
                stream: handle,
                busy: false,
                peer: None,
                last_active: now,
            },
        );
        Ok(id)
    }

    /// Closes every connection (the server is stopping).
    fn close_all(&self) {
        let mut s = self.slots.lock();
        s.closed = true;
        let ids: Vec<u64> = s.by_id.keys().copied().collect();
        for id in ids {
            Registry::close(&mut s, id);
        }
    }

    /// Closes connection `id` and forgets it; its thread sees the socket
    /// shut and ends.
    fn close(s: &mut Slots, id: u64) {
        if let Some(slot) = s.by_id.remove(&id) {
            let _ = slot.stream.shutdown(Shutdown::Both);
            if slot.peer.is_none() {
                s.clients -= 1;
            }
        }
    }

    /// A complete request arrived on `id`; false if `id` was closed.
    fn begin(&self, id: u64) -> bool {
        match self.slots.lock().by_id.get_mut(&id) {
            Some(slot) => {
                slot.busy = true;
                true
            }
            None => false,
        }
    }

    /// The request on `id` was answered.
    fn end(&self, id: u64, now: Instant) {
        if let Some(slot) = self.slots.lock().by_id.get_mut(&id) {
            slot.busy = false;
            slot.last_active = now;
        }
    }

    /// Connection `id` proved to come from `member`. A member gets at
    /// most [`MAX_PEER_CONNECTIONS`]: past that its least recently active
    /// one is closed (a restarted peer's old connections, say), so that
    /// nobody who knows the cluster id can hold unbounded connections
    /// outside the client cap.
    fn mark_peer(&self, id: u64, member: NodeId, now: Instant) {
        let mut s = self.slots.lock();
        match s.by_id.get_mut(&id) {
            Some(slot) if slot.peer.is_none() => {
                slot.peer = Some(member);
                slot.last_active = now;
                s.clients -= 1;
            }
            _ => return,
        }
        let mut same: Vec<(Instant, u64)> = s
            .by_id
            .iter()
            .filter(|(_, slot)| slot.peer == Some(member))
            .map(|(&other, slot)| (slot.last_active, other))
            .collect();
        if same.len() > MAX_PEER_CONNECTIONS {
            same.sort_unstable();
            for &(_, old) in &same[..same.len() - MAX_PEER_CONNECTIONS] {
                Self::close(&mut s, old);
            }
        }
    }

    fn remove(&self, id: u64) {
        Self::close(&mut self.slots.lock(), id);
    }

    /// Near the cap, closes client connections idle for `idle` or more.
    /// Returns how many it closed.
    fn reap(&self, now: Instant, idle: Duration) -> usize {
        let mut s = self.slots.lock();
        if s.clients * 4 < self.max_clients * 3 {
            return 0;
        }
        let stale: Vec<u64> = s
            .by_id
            .iter()
            .filter(|(_, slot)| {
                slot.peer.is_none()
                    && !slot.busy
                    && now.saturating_duration_since(slot.last_active) >= idle
            })
            .map(|(&id, _)| id)
            .collect();
        for &id in &stale {
            Self::close(&mut s, id);
        }
        stale.len()
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let s = self.slots.lock();
        (s.clients, s.by_id.len())
    }
}

#[cfg(test)]
mod tests;
