//! Handshakes between this module's two sides, in one process: who is
//! accepted, who is refused and why, and a stream read and written by
//! two threads at once.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread;

use super::certs::Authority;
use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Files for a party holding `issued`, trusting `ca_pem`.
fn files(dir: &Path, who: &str, ca_pem: &str, issued: &certs::Issued) -> TlsFiles {
    TlsFiles {
        ca: write(dir, &format!("{who}-ca.pem"), ca_pem),
        cert: write(dir, &format!("{who}.pem"), &issued.cert_pem),
        key: write(dir, &format!("{who}-key.pem"), &issued.key_pem),
    }
}

/// Node 1 serving on a loopback port: each connection's handshake result
/// goes back on the channel, with the stream if it succeeded.
fn serve(
    tls: Tls,
) -> (
    std::net::SocketAddr,
    crossbeam::channel::Receiver<Result<Stream, TlsError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = crossbeam::channel::unbounded();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let tcp = tcp.unwrap();
            tcp.set_nodelay(true).unwrap();
            if tx.send(tls.accept(tcp)).is_err() {
                return;
            }
        }
    });
    (address, rx)
}

struct Setup {
    _dir: tempfile::TempDir,
    node1: TlsFiles,
    node2: TlsFiles,
    client: TlsFiles,
    authority: Authority,
    dir: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let authority = Authority::new("test").unwrap();
    let ca = authority.cert_pem().to_string();
    let node1 = files(
        &path,
        "node1",
        &ca,
        &authority.node(1, "127.0.0.1").unwrap(),
    );
    let node2 = files(
        &path,
        "node2",
        &ca,
        &authority.node(2, "127.0.0.1").unwrap(),
    );
    let client = files(&path, "client", &ca, &authority.client().unwrap());
    Setup {
        _dir: dir,
        node1,
        node2,
        client,
        authority,
        dir: path,
    }
}

#[test]
fn a_node_and_a_client_of_one_authority_talk_and_know_who_is_who() {
    let s = setup();
    let (address, accepted) = serve(Tls::for_node(&s.node1, 1, false).unwrap());
    let client = Tls::for_client(&s.client).unwrap();
    let stream = client
        .connect(TcpStream::connect(address).unwrap(), &node_name(1))
        .unwrap();
    let server = accepted.recv().unwrap().unwrap();
    assert!(server.peer_named(CLIENT_NAME));
    assert!(
        !server.peer_named(&node_name(1)),
        "a client cannot pass for a node"
    );
    assert!(stream.peer_named(&node_name(1)));

    // One thread writes lines while another reads the answers, on clones
    // of the same TLS stream, as a node's pipelined link does.
    let mut writer = stream.try_clone().unwrap();
    let lines = 2000;
    let echo = thread::spawn(move || {
        let mut reader = BufReader::new(server.try_clone().unwrap());
        let mut out = server;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            out.write_all(line.as_bytes()).unwrap();
            line.clear();
        }
    });
    let sender = thread::spawn(move || {
        for i in 0..lines {
            writeln!(writer, "line {i} {}", "x".repeat(i % 3000)).unwrap();
        }
        writer.tcp().shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    for i in 0..lines {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(&format!("line {i} ")), "{i}: {line:?}");
    }
    sender.join().unwrap();
    echo.join().unwrap();
}

#[test]
fn a_peer_is_known_by_the_node_id_its_certificate_names() {
    let s = setup();
    let (address, accepted) = serve(Tls::for_node(&s.node1, 1, false).unwrap());
    let node2 = Tls::for_node(&s.node2, 2, false).unwrap();
    let _conn = node2
        .connect(TcpStream::connect(address).unwrap(), &node_name(1))
        .unwrap();
    let server = accepted.recv().unwrap().unwrap();
    assert!(server.peer_named(&node_name(2)));
    assert!(
        !server.peer_named(&node_name(3)),
        "node 2 cannot speak for node 3"
    );
    // Node 2 expecting node 3 at node 1's address refuses it.
    let refused = node2
        .connect(TcpStream::connect(address).unwrap(), &node_name(3))
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("does not name the node expected"),
        "{refused}"
    );
}

#[test]
fn another_authority_an_expired_certificate_no_certificate_and_plain_tcp_are_refused() {
    let s = setup();
    let (address, accepted) = serve(Tls::for_node(&s.node1, 1, false).unwrap());
    // Node 2 with a certificate from another authority (that trusts ours,
    // so that only its own certificate is wrong).
    let other = Authority::new("other").unwrap();
    let stranger = files(
        &s.dir,
        "stranger",
        s.authority.cert_pem(),
        &other.node(2, "127.0.0.1").unwrap(),
    );
    let tls = Tls::for_node(&stranger, 2, false).unwrap();
    let result = tls.connect(TcpStream::connect(address).unwrap(), &node_name(1));
    let server = accepted.recv().unwrap().expect_err("refused");
    assert!(
        server
            .to_string()
            .contains("not signed by this cluster's authority"),
        "{server}"
    );
    assert!(result.is_err() || read_fails(result.unwrap()));

    // An expired certificate from the right authority.
    let expired = s.authority.node_valid(2, "127.0.0.1", (-400, -35)).unwrap();
    let expired = files(&s.dir, "expired", s.authority.cert_pem(), &expired);
    let tls = Tls::for_node(&expired, 2, false).unwrap();
    let result = tls.connect(TcpStream::connect(address).unwrap(), &node_name(1));
    let server = accepted.recv().unwrap().expect_err("refused");
    assert!(server.to_string().contains("expired"), "{server}");
    assert!(result.is_err() || read_fails(result.unwrap()));

    // Plain TCP, as an old raftctl would send.
    let mut plain = TcpStream::connect(address).unwrap();
    plain.write_all(b"{\"type\":\"status\"}\n").unwrap();
    let server = accepted.recv().unwrap().expect_err("refused");
    assert!(
        server.to_string().contains("does not speak TLS"),
        "{server}"
    );

    // A client that trusts our authority but shows no certificate.
    let anonymous = anonymous_client(&s);
    let result = anonymous.connect(TcpStream::connect(address).unwrap(), &node_name(1));
    let server = accepted.recv().unwrap().expect_err("refused");
    assert!(server.to_string().contains("certificate"), "{server}");
    assert!(result.is_err() || read_fails(result.unwrap()));
}

/// A client that trusts the authority but has no certificate to show.
fn anonymous_client(s: &Setup) -> Tls {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(load_roots(&s.client.ca).unwrap())
        .with_no_client_auth();
    Tls {
        server: None,
        client: Arc::new(config),
    }
}

/// In TLS 1.3 the client may finish its handshake before the server has
/// judged its certificate; the refusal then arrives on the first read.
fn read_fails(mut stream: Stream) -> bool {
    use std::io::Read;
    let _ = stream.write_all(b"{\"type\":\"status\"}\n");
    let mut buf = [0u8; 64];
    !matches!(stream.read(&mut buf), Ok(n) if n > 0)
}

#[test]
fn anonymous_clients_when_allowed_and_a_plain_server_named_as_such() {
    let s = setup();
    let (address, accepted) = serve(Tls::for_node(&s.node1, 1, true).unwrap());
    let anonymous = anonymous_client(&s);
    anonymous
        .connect(TcpStream::connect(address).unwrap(), &node_name(1))
        .unwrap();
    let server = accepted.recv().unwrap().unwrap();
    assert!(!server.peer_has_certificate());
    assert!(!server.peer_named(&node_name(2)));

    // A TLS client at a plain server (which answers its hello with a
    // JSON error line and closes).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let _ = tcp.write_all(b"{\"type\":\"error\",\"code\":\"bad_request\"}\n");
    });
    let client = Tls::for_client(&s.client).unwrap();
    let e = client
        .connect(TcpStream::connect(plain).unwrap(), &node_name(1))
        .unwrap_err();
    assert!(e.to_string().contains("does not speak TLS"), "{e}");
}

#[test]
fn a_node_refuses_to_start_with_another_nodes_certificate() {
    let s = setup();
    let e = Tls::for_node(&s.node2, 1, false).unwrap_err();
    assert!(e.to_string().contains("does not name node1.raft"), "{e}");
}
