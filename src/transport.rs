//! Outgoing connections to one peer, kept open and reused.
//!
//! Two kinds: [`Peer`] makes one call at a time and waits for its answer
//! (clients, `raftctl`); [`Link`] is a node's connection to another node,
//! with a writer and a reader so that several requests are in flight on
//! it at once (pipelined replication). The receiving node answers a
//! connection's requests in the order they arrived, so answers come back
//! in order, each once; if the connection breaks, every request still in
//! flight on it is lost, and the link reports that once.
//!
//! Connections are made from the node's own configured host address, so
//! that nodes on 127.0.0.1, 127.0.0.2, … can be cut off from each other
//! with ordinary firewall rules on source and destination addresses.

use std::io::{self, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::config::Member;
use crate::tls::{self, Stream};
use crate::wire::{self, Request, Response, WireError};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve address: {0}")]
    Resolve(io::Error),
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// Sending or receiving failed, or timed out.
    #[error("request failed: {0}")]
    Exchange(WireError),
}

struct Connection {
    reader: BufReader<Stream>,
    writer: Stream,
}

/// A client for one remote node.
pub struct Peer {
    target: Member,
    /// Local address to bind outgoing connections to, if any.
    bind: Option<IpAddr>,
    timeout: Duration,
    conn: Option<Connection>,
    buf: Vec<u8>,
}

impl Peer {
    /// `bind`: the host our own node listens on; `timeout` bounds the
    /// connect and each read and write.
    pub fn new(target: Member, bind: Option<IpAddr>, timeout: Duration) -> Peer {
        Peer {
            target,
            bind,
            timeout,
            conn: None,
            buf: Vec::new(),
        }
    }

    /// Sends `request` and waits for the response. A kept-open connection
    /// that turns out to be dead (the peer restarted) is replaced once at
    /// once; that is safe because every request here is idempotent.
    pub fn call(&mut self, request: &Request) -> Result<Response, TransportError> {
        let reused = self.conn.is_some();
        match self.try_call(request) {
            Err(TransportError::Exchange(e)) if reused && is_dead_connection(&e) => {
                self.try_call(request)
            }
            other => other,
        }
    }

    fn try_call(&mut self, request: &Request) -> Result<Response, TransportError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let conn = self.conn.as_mut().expect("just connected");
        let result = wire::write_message(&mut conn.writer, request)
            .map_err(WireError::Io)
            .and_then(|()| wire::read_message(&mut conn.reader, &mut self.buf));
        if result.is_err() {
            self.conn = None; // never reuse a connection in an unknown state
        }
        result.map_err(TransportError::Exchange)
    }

    fn connect(&self) -> Result<Connection, TransportError> {
        connect(&self.target, self.bind, self.timeout)
    }
}

/// What [`Link::receive`] hands back.
#[derive(Debug)]
pub enum Received {
    /// The answer to the oldest request in flight.
    Answer(Response),
    /// The connection failed, and with it every request in flight on it.
    /// Reported once per connection, by whichever of `send` and `receive`
    /// saw the failure first.
    Failed(TransportError),
    /// The connection this reader was on was closed by a failure already
    /// reported (or replaced); nothing to report.
    Superseded,
    /// The link was closed for good ([`Link::close`]).
    Closed,
}

struct LinkState {
    /// The live connection: its number, a handle to shut it down, and its
    /// reading half until the receiver takes it.
    current: Option<(u64, Arc<Stream>, Option<BufReader<Stream>>)>,
    /// Numbers connections, so that a failure is reported for the
    /// connection it happened on, once.
    generation: u64,
    /// Requests written on the current connection and not yet answered.
    outstanding: usize,
    /// Closed for good: the node is stopping.
    closed: bool,
}

/// A node's pipelined connection to one peer: one thread sends (`send`),
/// another receives (`receive`), and neither waits for the other. The
/// receiver reads (with the timeout) only while requests are outstanding,
/// so an idle connection is never taken for a dead one.
pub struct Link {
    target: Member,
    bind: Option<IpAddr>,
    timeout: Duration,
    state: parking_lot::Mutex<LinkState>,
    /// Wakes the receiver when a request goes out.
    sent: parking_lot::Condvar,
}

impl Link {
    pub fn new(target: Member, bind: Option<IpAddr>, timeout: Duration) -> Link {
        Link {
            target,
            bind,
            timeout,
            state: parking_lot::Mutex::new(LinkState {
                current: None,
                generation: 0,
                outstanding: 0,
                closed: false,
            }),
            sent: parking_lot::Condvar::new(),
        }
    }

    /// Writes `request`, connecting first if there is no connection; does
    /// not wait for the answer, which `receive` will return. Called by one
    /// thread only. On an error the connection is closed and everything
    /// in flight on it is lost; `Err(Some(e))` if this call is the first
    /// to see that (report it), `Err(None)` if the receiver already did.
    pub fn send(&self, request: &Request) -> Result<(), Option<TransportError>> {
        let existing = {
            let st = self.state.lock();
            if st.closed {
                return Err(None);
            }
            // The writer is shared, not duplicated: a second descriptor
            // per request cost two system calls each (issue 24's profile).
            st.current
                .as_ref()
                .map(|(g, stream, _)| (*g, stream.clone()))
        };
        let (generation, writer) = match existing {
            Some(existing) => existing,
            None => {
                let conn = connect(&self.target, self.bind, self.timeout).map_err(Some)?;
                let writer = Arc::new(conn.writer);
                let mut st = self.state.lock();
                st.generation += 1;
                st.outstanding = 0;
                let g = st.generation;
                st.current = Some((g, writer.clone(), Some(conn.reader)));
                (g, writer)
            }
        };
        {
            // Counted before it is written, so the receiver is reading by
            // the time the answer can arrive.
            let mut st = self.state.lock();
            if st.current.as_ref().map(|c| c.0) != Some(generation) {
                return Err(None); // closed meanwhile by a failure already reported
            }
            st.outstanding += 1;
            self.sent.notify_one();
        }
        match wire::write_message(&mut &*writer, request) {
            Ok(()) => Ok(()),
            Err(e) => {
                let first = self.fail(generation);
                Err(first.then_some(TransportError::Exchange(WireError::Io(e))))
            }
        }
    }

    /// Waits for the answer to the oldest request in flight. Called by one
    /// thread only, which keeps `reader` between calls: the reading half
    /// of the connection it is on, with that connection's number.
    pub fn receive(
        &self,
        reader: &mut Option<(u64, BufReader<Stream>)>,
        buf: &mut Vec<u8>,
    ) -> Received {
        {
            let mut st = self.state.lock();
            loop {
                if st.closed {
                    return Received::Closed;
                }
                let live = st.current.as_ref().map(|c| c.0);
                if reader.as_ref().map(|r| r.0) != live {
                    // A new connection: take its reading half.
                    *reader = match &mut st.current {
                        Some((g, _, half)) => half.take().map(|h| (*g, h)),
                        None => None,
                    };
                }
                if reader.is_some() && st.outstanding > 0 {
                    break;
                }
                self.sent.wait(&mut st);
            }
        }
        let (generation, half) = reader.as_mut().expect("checked above");
        let generation = *generation;
        match wire::read_message(half, buf) {
            Ok(response) => {
                let mut st = self.state.lock();
                if st.generation == generation {
                    st.outstanding = st.outstanding.saturating_sub(1);
                }
                Received::Answer(response)
            }
            Err(e) => {
                *reader = None;
                if self.fail(generation) {
                    Received::Failed(TransportError::Exchange(e))
                } else {
                    Received::Superseded
                }
            }
        }
    }

    /// Closes the link for good: the connection is shut, the receiver
    /// returns [`Received::Closed`], and nothing more is sent.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        if let Some((_, stream, _)) = st.current.take() {
            let _ = stream.tcp().shutdown(std::net::Shutdown::Both);
        }
        self.sent.notify_all();
    }

    /// Closes connection `generation` if it is still the live one; true if
    /// this call closed it (so the caller reports the failure).
    fn fail(&self, generation: u64) -> bool {
        let mut st = self.state.lock();
        match &st.current {
            Some((g, stream, _)) if *g == generation => {
                // Wakes a reader blocked on it, and refuses further writes.
                let _ = stream.tcp().shutdown(std::net::Shutdown::Both);
                st.current = None;
                st.outstanding = 0;
                true
            }
            _ => false,
        }
    }
}

fn connect(
    target: &Member,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> Result<Connection, TransportError> {
    let addr = target.socket_addr().map_err(TransportError::Resolve)?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(TransportError::Connect)?;
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .map_err(TransportError::Connect)?;
    }
    socket
        .connect_timeout(&addr.into(), timeout)
        .map_err(TransportError::Connect)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).map_err(TransportError::Connect)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(TransportError::Connect)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(TransportError::Connect)?;
    // The handshake, if any, under the same timeouts.
    let stream = tls::dial(stream, target).map_err(TransportError::Connect)?;
    let writer = stream.try_clone().map_err(TransportError::Connect)?;
    Ok(Connection {
        reader: BufReader::new(stream),
        writer,
    })
}

/// Whether an error means the kept-open connection was already dead (the
/// peer restarted or closed it), as opposed to a slow or absent answer,
/// which a retry would only wait for again.
fn is_dead_connection(e: &WireError) -> bool {
    match e {
        WireError::Closed => true,
        WireError::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// One request on a fresh connection; for clients that ask many nodes once.
pub fn call_once(
    target: &Member,
    request: &Request,
    timeout: Duration,
) -> Result<Response, TransportError> {
    call_once_from(None, target, request, timeout)
}

/// [`call_once`] from address `bind` (a node's own, as its peer
/// connections are).
pub fn call_once_from(
    bind: Option<IpAddr>,
    target: &Member,
    request: &Request,
    timeout: Duration,
) -> Result<Response, TransportError> {
    Peer::new(target.clone(), bind, timeout).try_call(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::net::TcpListener;

    /// A server that answers one request per connection and then closes
    /// it, as a peer that restarts between two requests would.
    fn one_answer_per_connection(
        listener: TcpListener,
        connections: usize,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for _ in 0..connections {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut w = stream;
                let reply = Response::IsLeader {
                    is_leader: true,
                    leader_id: Some(1),
                    leader_address: None,
                };
                w.write_all(format!("{}\n", serde_json::to_string(&reply).unwrap()).as_bytes())
                    .unwrap();
            }
        })
    }

    #[test]
    fn a_connection_closed_by_the_peer_is_replaced_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = one_answer_per_connection(listener, 2);
        let target = Member {
            id: 1,
            host: "127.0.0.1".into(),
            port,
        };
        let mut peer = Peer::new(
            target,
            Some("127.0.0.1".parse().unwrap()),
            Duration::from_secs(5),
        );
        for _ in 0..2 {
            let r = peer.call(&Request::IsLeader).unwrap();
            assert!(matches!(
                r,
                Response::IsLeader {
                    is_leader: true,
                    ..
                }
            ));
        }
        server.join().unwrap();
    }

    #[test]
    fn a_timeout_on_a_kept_open_connection_is_not_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = listener.try_clone().unwrap();
        // Answers the first request, then goes silent but keeps the
        // connection open until the client drops it.
        let server = std::thread::spawn(move || {
            let (stream, _) = acceptor.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut w = stream;
            let reply = Response::IsLeader {
                is_leader: false,
                leader_id: None,
                leader_address: None,
            };
            w.write_all(format!("{}\n", serde_json::to_string(&reply).unwrap()).as_bytes())
                .unwrap();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {}
        });
        let target = Member {
            id: 1,
            host: "127.0.0.1".into(),
            port,
        };
        let mut peer = Peer::new(target, None, Duration::from_millis(200));
        assert!(peer.call(&Request::IsLeader).is_ok());
        assert!(
            peer.call(&Request::IsLeader).is_err(),
            "the silent peer must time out"
        );
        // A slow peer is not a dead connection: no second connection.
        listener.set_nonblocking(true).unwrap();
        assert!(
            listener.accept().is_err(),
            "the timed-out call reconnected and tried again"
        );
        drop(peer);
        server.join().unwrap();
    }

    fn is_leader_line(leader: bool) -> String {
        let reply = Response::IsLeader {
            is_leader: leader,
            leader_id: None,
            leader_address: None,
        };
        format!("{}\n", serde_json::to_string(&reply).unwrap())
    }

    #[test]
    fn a_link_keeps_several_requests_in_flight_and_reports_a_failure_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // First connection: reads three requests before answering any,
        // answers them in order, then closes after reading a fourth.
        // Second connection: answers one.
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut w = stream;
            let mut line = String::new();
            for _ in 0..3 {
                line.clear();
                reader.read_line(&mut line).unwrap();
            }
            for k in 0..3 {
                w.write_all(is_leader_line(k % 2 == 0).as_bytes()).unwrap();
            }
            line.clear();
            reader.read_line(&mut line).unwrap();
            drop((reader, w));
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            line.clear();
            reader.read_line(&mut line).unwrap();
            let mut w = stream;
            w.write_all(is_leader_line(true).as_bytes()).unwrap();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {}
        });
        let target = Member {
            id: 1,
            host: "127.0.0.1".into(),
            port,
        };
        let link = Link::new(target, None, Duration::from_secs(5));
        for _ in 0..3 {
            link.send(&Request::IsLeader)
                .expect("written without waiting");
        }
        let (mut reader, mut buf) = (None, Vec::new());
        for k in 0..3 {
            match link.receive(&mut reader, &mut buf) {
                Received::Answer(Response::IsLeader { is_leader, .. }) => {
                    assert_eq!(is_leader, k % 2 == 0, "answers come back in order")
                }
                other => panic!("{other:?}"),
            }
        }
        link.send(&Request::IsLeader).unwrap();
        assert!(matches!(
            link.receive(&mut reader, &mut buf),
            Received::Failed(_)
        ));
        // The next send connects again; the failure was reported once.
        link.send(&Request::IsLeader).unwrap();
        assert!(matches!(
            link.receive(&mut reader, &mut buf),
            Received::Answer(Response::IsLeader {
                is_leader: true,
                ..
            })
        ));
        drop((link, reader));
        server.join().unwrap();
    }
}
