//! Outgoing connections to one peer, kept open and reused.
//!
//! Connections are made from the node's own configured host address, so
//! that nodes on 127.0.0.1, 127.0.0.2, … can be cut off from each other
//! with ordinary firewall rules on source and destination addresses.

use std::fmt;
use std::io::{self, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::config::Member;
use crate::wire::{self, Request, Response, WireError};

#[derive(Debug)]
pub enum TransportError {
    Resolve(io::Error),
    Connect(io::Error),
    /// Sending or receiving failed, or timed out.
    Exchange(WireError),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Resolve(e) => write!(f, "cannot resolve address: {e}"),
            TransportError::Connect(e) => write!(f, "cannot connect: {e}"),
            TransportError::Exchange(e) => write!(f, "request failed: {e}"),
        }
    }
}

impl std::error::Error for TransportError {}

struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
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
        let addr = self.target.socket_addr().map_err(TransportError::Resolve)?;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
            .map_err(TransportError::Connect)?;
        if let Some(ip) = self.bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(TransportError::Connect)?;
        }
        socket
            .connect_timeout(&addr.into(), self.timeout)
            .map_err(TransportError::Connect)?;
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).map_err(TransportError::Connect)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(TransportError::Connect)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(TransportError::Connect)?;
        let writer = stream.try_clone().map_err(TransportError::Connect)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            writer,
        })
    }
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
    Peer::new(target.clone(), None, timeout).try_call(request)
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
}
