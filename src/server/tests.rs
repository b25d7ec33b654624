use super::*;
use crate::consensus::{self, RequestVote, RequestVoteReply};
use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A handler whose client requests block until released, to saturate
/// the pool; peer and admin requests answer at once.
struct Blocking {
    release: Receiver<()>,
    started: AtomicUsize,
    /// The size of each batch of peer requests handed over together.
    batches: parking_lot::Mutex<Vec<usize>>,
}

impl Handler for Blocking {
    fn peer(&self, request: PeerRequest) -> (Response, Option<NodeId>) {
        let member = (request.cluster == "ours").then_some(request.from);
        let reply = Response::RequestVote(RequestVoteReply {
            term: request.rpc.term(),
            vote_granted: false,
            pre_vote: false,
        });
        (reply, member)
    }
    fn peers(&self, requests: Vec<PeerRequest>) -> Vec<(Response, Option<NodeId>)> {
        self.batches.lock().push(requests.len());
        requests.into_iter().map(|r| self.peer(r)).collect()
    }
    fn admin(&self, _request: Request) -> Response {
        Response::error(ErrorCode::Timeout, "admin answered")
    }
    fn client(&self, _request: Request) -> Handled {
        self.started.fetch_add(1, Ordering::SeqCst);
        let _ = self.release.recv();
        Handled::Now(Response::error(ErrorCode::Timeout, "client answered"))
    }
    /// Three lines, then the end; with `status_ms` 999, a refusal.
    fn subscribe(&self, request: Request) -> Result<Lines, Response> {
        if matches!(request, Request::Subscribe { status_ms: 999, .. }) {
            return Err(Response::error(ErrorCode::Busy, "refused"));
        }
        let lines = (1..=3).map(|n| Arc::from(format!("{{\"type\":\"subscribed\",\"node\":{n}}}")));
        Ok(Box::new(lines))
    }
}

fn server(options: ServerOptions) -> (SocketAddr, Arc<Blocking>, crossbeam::channel::Sender<()>) {
    let (release_tx, release) = bounded(0);
    let handler = Arc::new(Blocking {
        release,
        started: AtomicUsize::new(0),
        batches: parking_lot::Mutex::new(Vec::new()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = spawn(listener, handler.clone(), options).unwrap();
    let addr = server.address();
    // Runs until the test process exits.
    std::mem::forget(server);
    (addr, handler, release_tx)
}

fn ask(stream: &mut TcpStream, line: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer
}

fn vote_line(cluster: &str) -> String {
    vote_line_in(cluster, 5)
}

fn vote_line_in(cluster: &str, term: u64) -> String {
    let rv = Request::peer(
        cluster,
        1,
        consensus::Request::RequestVote(RequestVote {
            term,
            candidate_id: 1,
            last_log_index: 0,
            last_log_term: 0,
            pre_vote: false,
            transfer: false,
        }),
    );
    format!("{}\n", serde_json::to_string(&rv).unwrap())
}

/// Wait (bounded) until `cond` holds; for state another thread sets.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_subscription_streams_its_lines_then_closes_and_a_refusal_is_one_answer() {
    let (addr, _handler, _release) = server(ServerOptions::default());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"{\"type\":\"subscribe\"}\n").unwrap();
    let mut lines = String::new();
    BufReader::new(&s).read_to_string(&mut lines).unwrap();
    assert_eq!(
        lines,
        "{\"type\":\"subscribed\",\"node\":1}\n{\"type\":\"subscribed\",\"node\":2}\n{\"type\":\"subscribed\",\"node\":3}\n"
    );
    let mut s = TcpStream::connect(addr).unwrap();
    let refused = ask(&mut s, "{\"type\":\"subscribe\",\"status_ms\":999}\n");
    assert!(refused.contains("refused"), "{refused}");
    // The connection stays usable after a refusal.
    assert!(ask(&mut s, "{\"type\":\"status\"}\n").contains("admin answered"));
}

#[test]
fn peer_and_admin_requests_are_answered_while_every_worker_is_stuck() {
    let options = ServerOptions {
        workers: 2,
        ..ServerOptions::default()
    };
    let (addr, handler, release) = server(options);
    // Fill both workers and the queue behind them (2 × workers).
    let mut stuck = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"{\"type\":\"read\",\"key\":\"k\"}\n").unwrap();
        stuck.push(s);
    }
    eventually("both workers to be stuck", || {
        handler.started.load(Ordering::SeqCst) == 2
    });
    let mut peer = TcpStream::connect(addr).unwrap();
    assert!(ask(&mut peer, &vote_line("ours")).contains("\"request_vote\""));
    let mut admin = TcpStream::connect(addr).unwrap();
    assert!(ask(&mut admin, "{\"type\":\"status\"}\n").contains("admin answered"));
    // Release the clients: each still gets its own answer.
    for _ in 0..6 {
        release.send(()).unwrap();
    }
    for s in &mut stuck {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("client answered"), "{line}");
    }
}

#[test]
fn a_slow_trickle_holds_no_worker() {
    let options = ServerOptions {
        workers: 1,
        ..ServerOptions::default()
    };
    let (addr, _handler, release) = server(options);
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"{\"type\":\"re").unwrap(); // and nothing more yet
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"{\"type\":\"log\"}\n").unwrap();
    // The one worker takes the log request (a rendezvous).
    release
        .send_timeout((), Duration::from_secs(20))
        .expect("the worker is free");
    let mut r = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("client answered"), "{line}");
}

#[test]
fn at_the_cap_the_longest_idle_client_makes_room_and_peers_do_not_count() {
    let options = ServerOptions {
        workers: 1,
        max_connections: 4,
        idle_timeout: Duration::from_secs(3600),
        ..ServerOptions::default()
    };
    let (addr, _handler, _release) = server(options);
    // Connections are accepted in order, so the first of these has
    // been idle the longest.
    let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // A peer connection; once identified it does not count.
    let mut peer = TcpStream::connect(addr).unwrap();
    assert!(ask(&mut peer, &vote_line("ours")).contains("request_vote"));
    // A stranger's peer message does not make it a peer.
    let mut stranger = TcpStream::connect(addr).unwrap();
    assert!(ask(&mut stranger, &vote_line("theirs")).contains("request_vote"));
    // Four client connections are open (three idle, the stranger): at
    // the cap. A status query still gets in, in place of the
    // connection idle the longest.
    let mut admin = TcpStream::connect(addr).unwrap();
    assert!(ask(&mut admin, "{\"type\":\"is_leader\"}\n").contains("admin answered"));
    let mut rest = String::new();
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(
        idle[0].read_to_string(&mut rest).unwrap(),
        0,
        "the longest-idle client was closed"
    );
    // The others, and the peer, were not touched.
    assert!(ask(&mut stranger, "{\"type\":\"status\"}\n").contains("admin answered"));
    assert!(ask(&mut peer, &vote_line("ours")).contains("request_vote"));
}

#[test]
fn a_client_that_stops_reading_its_answers_is_disconnected() {
    let options = ServerOptions {
        write_timeout: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let (addr, _handler, _release) = server(options);
    let mut greedy = TcpStream::connect(addr).unwrap();
    // Far more answers than the socket buffers hold, none read yet.
    let requests = "{\"type\":\"status\"}\n".repeat(200_000);
    let writer = {
        let mut w = greedy.try_clone().unwrap();
        thread::spawn(move || {
            let _ = w.write_all(requests.as_bytes());
        })
    };
    // Long enough for the server's write to time out several times.
    thread::sleep(Duration::from_secs(2));
    greedy
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut drained = Vec::new();
    // Closed: an end of stream, or a reset (the server closed with our
    // unread requests still in its buffer). Not a read timeout.
    let result = greedy.read_to_end(&mut drained);
    assert!(
        result.is_ok()
            || result
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server should have closed the connection: {result:?}"
    );
    assert!(
        drained.len() < 200_000 * 100,
        "not every request was answered"
    );
    let _ = writer.join();
}

#[test]
fn when_every_client_connection_is_busy_a_newcomer_is_told_busy() {
    let options = ServerOptions {
        workers: 2,
        max_connections: 2,
        idle_timeout: Duration::from_secs(3600),
        ..ServerOptions::default()
    };
    let (addr, handler, release) = server(options);
    let mut busy: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut busy {
        s.write_all(b"{\"type\":\"read\",\"key\":\"k\"}\n").unwrap();
    }
    eventually("both requests to be running", || {
        handler.started.load(Ordering::SeqCst) == 2
    });
    let mut over = TcpStream::connect(addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reply = String::new();
    over.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("\"busy\""), "{reply:?}");
    release.send(()).unwrap();
    release.send(()).unwrap();
}

/// `n` connected pairs (client side, server side), the server sides
/// admitted to `registry` at `at`.
fn admitted(registry: &Registry, n: usize, at: Instant) -> Vec<(TcpStream, TcpStream, u64)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let client = TcpStream::connect(addr).unwrap();
            let (server_side, _) = listener.accept().unwrap();
            let id = registry.admit(&server_side, at).ok().unwrap();
            (client, server_side, id)
        })
        .collect()
}

fn closed(client: &mut TcpStream) -> bool {
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).is_ok_and(|n| n == 0)
}

#[test]
fn a_member_holds_a_bounded_number_of_connections() {
    let registry = Registry::new(100);
    let t0 = Instant::now();
    let mut conns = admitted(&registry, MAX_PEER_CONNECTIONS + 2, t0);
    for (k, (_, _, id)) in conns.iter().enumerate() {
        registry.mark_peer(*id, 1, t0 + Duration::from_secs(k as u64));
    }
    // None counts as a client's; the two oldest were closed.
    assert_eq!(registry.counts(), (0, MAX_PEER_CONNECTIONS));
    assert!(closed(&mut conns[0].0) && closed(&mut conns[1].0));
    // Another member's connections are its own.
    let (_, _, other) = &admitted(&registry, 1, t0)[0];
    registry.mark_peer(*other, 2, t0);
    assert_eq!(registry.counts(), (0, MAX_PEER_CONNECTIONS + 1));
}

#[test]
fn idle_client_connections_are_reaped_only_near_the_cap() {
    let registry = Registry::new(8);
    let t0 = Instant::now();
    let idle = Duration::from_secs(10);
    let mut old = admitted(&registry, 5, t0);
    // 5 of 8: below three quarters, nobody is reaped however idle.
    assert_eq!(registry.reap(t0 + 10 * idle, idle), 0);
    let _new = admitted(&registry, 1, t0 + idle);
    // 6 of 8: the five idle since t0 go; the one idle since t0 + idle
    // has not been idle long enough yet.
    assert_eq!(registry.reap(t0 + idle + idle / 2, idle), 5);
    assert_eq!(registry.counts(), (1, 1));
    assert!(closed(&mut old[0].0));
}

#[test]
fn pipelined_peer_requests_are_answered_in_order_as_one_batch() {
    let (addr, handler, _release) = server(ServerOptions::default());
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Five peer requests and an admin one, in one write: the first line
    // read leaves the other four peer requests in the buffer.
    let mut lines: String = (1..=5).map(|term| vote_line_in("ours", term)).collect();
    lines.push_str("{\"type\":\"status\"}\n");
    stream.write_all(lines.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut terms = Vec::new();
    for _ in 1..=5 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        match serde_json::from_str::<Response>(&line).unwrap() {
            Response::RequestVote(reply) => terms.push(reply.term),
            other => panic!("not a vote reply: {other:?}"),
        }
    }
    assert_eq!(terms, [1, 2, 3, 4, 5], "answers in request order");
    let mut last = String::new();
    reader.read_line(&mut last).unwrap();
    assert!(last.contains("admin answered"), "{last}");
    assert_eq!(
        *handler.batches.lock(),
        [5],
        "the first with the four buffered behind it"
    );
}
