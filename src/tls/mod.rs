//! TLS for every connection: peers, clients, event streams (rustls over
//! the same blocking sockets; no async runtime).
//!
//! **Who is who.** One certificate authority per cluster (`ca.pem`) signs
//! one certificate per node and the clients'. A node's certificate names,
//! besides its host, the synthetic DNS name `node<ID>.raft`
//! ([`node_name`]); a client's names `client.raft`. Both sides check:
//!
//! * a client or a node connecting to node N checks that the certificate
//!   the server shows is signed by the authority, within its validity, and
//!   names `node<N>.raft` (not merely the host: on one machine every node
//!   shares 127.0.0.1); with only an address to go on (`raftctl
//!   --endpoints`), it checks the address instead;
//! * a node accepting a connection requires a certificate signed by the
//!   authority (unless anonymous clients are allowed), and a peer RPC is
//!   acted on only if that certificate names the node id the request's
//!   envelope claims (see `server`): a client's certificate, or node 2's,
//!   cannot speak for node 3.
//!
//! **The stream.** [`Stream`] is a TCP stream, plain or TLS, that can be
//! cloned like `TcpStream::try_clone` so that one thread reads while
//! another writes (a node's pipelined links do). A TLS session is one
//! state machine, so the clones share it behind a lock that is never held
//! across a blocking read: the reader waits for bytes with the lock
//! released, then takes it to decrypt. Writes encrypt under the lock and
//! go out under a second, output lock taken before the first is released,
//! so records leave in order and a writer blocked on a full socket never
//! stops the reader from draining its side.

#[cfg(feature = "tools")]
pub mod certs;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::config::Member;
use crate::consensus::NodeId;

/// The name a node's certificate carries for its id.
pub fn node_name(id: NodeId) -> String {
    format!("node{id}.raft")
}

/// The name the clients' certificate carries.
pub const CLIENT_NAME: &str = "client.raft";

/// File names in a TLS directory (`raftctl tls init` writes them).
pub const CA_FILE: &str = "ca.pem";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";

/// `node<ID>.pem` and `node<ID>-key.pem`.
pub fn node_files(id: NodeId) -> (String, String) {
    (format!("node{id}.pem"), format!("node{id}-key.pem"))
}

/// Why TLS could not be set up, or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{path}: the certificate does not name {name}: it is not this node's")]
    WrongName { path: PathBuf, name: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("TLS handshake: {0}")]
    Handshake(String),
}

/// Where a party's certificate, key and the cluster's authority are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Node `id`'s files in `dir`.
    pub fn node(dir: &Path, id: NodeId) -> TlsFiles {
        let (cert, key) = node_files(id);
        TlsFiles {
            ca: dir.join(CA_FILE),
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    /// The client's files in `dir`.
    pub fn client(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join(CA_FILE),
            cert: dir.join(CLIENT_CERT),
            key: dir.join(CLIENT_KEY),
        }
    }
}

/// A party's TLS setup: how it accepts (a node) and how it connects.
#[derive(Clone)]
pub struct Tls {
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// rustls with ring: it builds with a C compiler alone (aws-lc-rs needs
/// cmake and more). ring offers no post-quantum key exchange, which
/// rustls marks by deprecating this; a cluster's links use X25519, as
/// etcd's do.
///
/// Key exchange is X25519 only: both ends are ours, and ring's P-384
/// (which a handshake otherwise came to use) is generic code, 3.4 ms of
/// CPU per handshake where X25519 takes a fraction of one.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::ring::kx_group::X25519],
        ..rustls::crypto::ring::default_provider()
    })
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in it"));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable authority: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// Whether `cert` names `name` (a DNS name or an address).
pub fn names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let (Ok(cert), Ok(name)) = (
        webpki::EndEntityCert::try_from(cert),
        ServerName::try_from(name),
    ) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

impl Tls {
    /// Node `id`: its certificate must name `node<ID>.raft`. With
    /// `anonymous_clients`, a connection without a certificate is
    /// accepted (it can then only be a client's: peer RPCs need a node's
    /// certificate); otherwise one signed by the authority is required.
    pub fn for_node(
        files: &TlsFiles,
        id: NodeId,
        anonymous_clients: bool,
    ) -> Result<Tls, TlsError> {
        let certs = load_certs(&files.cert)?;
        if !names(&certs[0], &node_name(id)) {
            return Err(TlsError::WrongName {
                path: files.cert.clone(),
                name: node_name(id),
            });
        }
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
        let roots = load_roots(&files.ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
        let verifier = if anonymous_clients {
            verifier.allow_unauthenticated()
        } else {
            verifier
        }
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| file_error(&files.key, e))?;
        // Our clients keep connections open: no tickets to resume with.
        server.send_tls13_tickets = 0;
        let client = client_config(roots, certs, key, &files.key)?;
        Ok(Tls {
            server: Some(Arc::new(server)),
            client,
        })
    }

    /// A client (raftctl, `raftctl web`, a program using the library).
    pub fn for_client(files: &TlsFiles) -> Result<Tls, TlsError> {
        let certs = load_certs(&files.cert)?;
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
        let roots = load_roots(&files.ca)?;
        Ok(Tls {
            server: None,
            client: client_config(roots, certs, key, &files.key)?,
        })
    }

    /// Opens TLS on `tcp` to a server that must be `name` (see
    /// [`node_name`]) or, with no id known, the address it was reached
    /// at. The handshake is done when this returns.
    pub fn connect(&self, mut tcp: TcpStream, name: &str) -> Result<Stream, TlsError> {
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| TlsError::Handshake(format!("{name:?} is not a name to check: {e}")))?;
        let mut conn = ClientConnection::new(self.client.clone(), server_name)
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| TlsError::Handshake(handshake_error(&e)))?;
        }
        Ok(Stream::tls(rustls::Connection::Client(conn), tcp))
    }

    /// Whether this party accepts connections (a node).
    pub fn serves(&self) -> bool {
        self.server.is_some()
    }

    /// Accepts TLS on `tcp`; the handshake is done when this returns.
    pub fn accept(&self, mut tcp: TcpStream) -> Result<Stream, TlsError> {
        let config = self
            .server
            .clone()
            .ok_or_else(|| TlsError::Config("a client's TLS cannot accept".into()))?;
        let mut conn =
            ServerConnection::new(config).map_err(|e| TlsError::Handshake(e.to_string()))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                // The alert saying why, if there is one to send.
                let _ = conn.write_tls(&mut tcp);
                return Err(TlsError::Handshake(handshake_error(&e)));
            }
        }
        Ok(Stream::tls(rustls::Connection::Server(conn), tcp))
    }
}

fn client_config(
    roots: Arc<RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_path: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| file_error(key_path, e))?;
    Ok(Arc::new(config))
}

/// A handshake's failure in words: rustls's error, or the socket's.
fn handshake_error(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidMessage(_)) => {
            "the other side does not speak TLS (is it started without --tls?)".into()
        }
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!("its certificate was refused: {}", certificate_error(why))
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the other side refused ours ({alert:?})")
        }
        Some(other) => other.to_string(),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the other side closed the connection (a plain TCP server, or our certificate refused)"
                .into()
        }
        None => e.to_string(),
    }
}

fn certificate_error(why: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match why {
        E::UnknownIssuer => "not signed by this cluster's authority".into(),
        E::Expired | E::ExpiredContext { .. } => "expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "not valid yet".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it does not name the node expected there".into()
        }
        other => format!("{other:?}"),
    }
}

/// How this process connects to nodes, set once at its start (raftnode
/// from `--tls`, raftctl from `--tls`): a process speaks to one cluster,
/// with one identity, on every connection it opens (peer links, client
/// calls, event streams, backups), so the setting is the process's, not
/// each caller's. Unset: plain TCP.
static DIALER: OnceLock<Tls> = OnceLock::new();

/// Sets how this process connects ([`DIALER`]); an error if already set.
pub fn connect_with(tls: Tls) -> Result<(), TlsError> {
    DIALER
        .set(tls)
        .map_err(|_| TlsError::Config("this process's TLS is set already".into()))
}

/// Whether this process connects with TLS.
pub fn dialing_tls() -> bool {
    DIALER.get().is_some()
}

/// The name `member`'s certificate must carry: its node name, or with no
/// id known (an address given with `--endpoints`), its host.
pub fn expected_name(member: &Member) -> String {
    if member.id == u64::MAX {
        member.host.clone()
    } else {
        node_name(member.id)
    }
}

/// `tcp`, connected to `member`, as this process connects: TLS (the
/// handshake done, `member` checked) or plain.
pub fn dial(tcp: TcpStream, member: &Member) -> io::Result<Stream> {
    match DIALER.get() {
        None => Ok(Stream::Plain(tcp)),
        Some(tls) => tls
            .connect(tcp, &expected_name(member))
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())),
    }
}

/// Connects to `member` within `timeout` (the handshake too), as this
/// process connects; the socket's timeouts are then the caller's to set.
pub fn open(member: &Member, timeout: Duration) -> io::Result<Stream> {
    let tcp = TcpStream::connect_timeout(&member.socket_addr()?, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    dial(tcp, member)
}

/// A connection, plain or TLS, that clones like `TcpStream::try_clone`.
pub enum Stream {
    Plain(TcpStream),
    Tls(Arc<Shared>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_tls() { "Tls" } else { "Plain" };
        write!(f, "Stream::{kind}({:?})", self.tcp().peer_addr().ok())
    }
}

/// A TLS session shared by the clones of its stream.
pub struct Shared {
    tcp: TcpStream,
    session: Mutex<Session>,
    /// Held while encrypted bytes go out, taken before `session` is
    /// released, so that records leave in the order they were made.
    out: Mutex<()>,
}

struct Session {
    conn: rustls::Connection,
    /// Bytes read from the socket that the session could not take yet
    /// (its plaintext buffer was full).
    pending: Vec<u8>,
}

impl Session {
    /// Gives the session what it can take of `pending`, and processes it.
    fn feed(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() && self.conn.wants_read() {
            let mut rest = &self.pending[..];
            let taken = self.conn.read_tls(&mut rest)?;
            self.pending.drain(..taken);
            if let Err(e) = self.conn.process_new_packets() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(())
    }

    /// Encrypted bytes waiting to go out.
    fn outgoing(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out)?;
        }
        Ok(out)
    }
}

impl Stream {
    fn tls(conn: rustls::Connection, tcp: TcpStream) -> Stream {
        Stream::Tls(Arc::new(Shared {
            tcp,
            session: Mutex::new(Session {
                conn,
                pending: Vec::new(),
            }),
            out: Mutex::new(()),
        }))
    }

    /// The socket underneath: for timeouts, addresses and shutting down.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(shared) => &shared.tcp,
        }
    }

    /// Another handle on the same connection (one may read while another
    /// writes).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Plain(tcp) => Stream::Plain(tcp.try_clone()?),
            Stream::Tls(shared) => Stream::Tls(shared.clone()),
        })
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Whether the other side showed a certificate naming `name` (always
    /// false on a plain connection, or without a certificate).
    pub fn peer_named(&self, name: &str) -> bool {
        let Stream::Tls(shared) = self else {
            return false;
        };
        let session = shared.session.lock();
        let certs = session.conn.peer_certificates();
        certs
            .and_then(|c| c.first())
            .is_some_and(|c| names(c, name))
    }

    /// Whether the other side showed a certificate at all.
    pub fn peer_has_certificate(&self) -> bool {
        let Stream::Tls(shared) = self else {
            return false;
        };
        let session = shared.session.lock();
        session
            .conn
            .peer_certificates()
            .is_some_and(|c| !c.is_empty())
    }

    fn send(shared: &Shared, mut session: parking_lot::MutexGuard<'_, Session>) -> io::Result<()> {
        let bytes = session.outgoing()?;
        if bytes.is_empty() {
            return Ok(());
        }
        let _out = shared.out.lock();
        drop(session);
        (&shared.tcp).write_all(&bytes)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let shared = match self {
            Stream::Plain(tcp) => return tcp.read(buf),
            Stream::Tls(shared) => shared.clone(),
        };
        // On the stack: a read is called for every line a BufReader fills.
        let mut raw = [0u8; 16 * 1024];
        loop {
            {
                let mut session = shared.session.lock();
                session.feed()?;
                match session.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Closed without TLS's close_notify: a truncation
                    // attack only where a message ends at the close; ours
                    // end at a newline, and a cut line is no message.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if !session.pending.is_empty() && session.conn.wants_read() {
                    continue;
                }
            }
            // Wait for bytes with the session free for writers.
            let n = (&shared.tcp).read(&mut raw)?;
            let mut session = shared.session.lock();
            if n == 0 {
                // The end: the session says whether it was a clean one.
                session.conn.read_tls(&mut &[][..])?;
            }
            session.pending.extend_from_slice(&raw[..n]);
            let fed = session.feed();
            // What processing produced (an alert, a key update) goes out.
            Stream::send(&shared, session)?;
            fed?;
        }
    }
}

/// Writing needs only a shared reference, as for `&TcpStream`: a writer
/// kept behind an `Arc` writes without a second descriptor.
impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => (&*tcp).write(buf),
            Stream::Tls(shared) => {
                let mut session = shared.session.lock();
                let n = session.conn.writer().write(buf)?;
                Stream::send(shared, session)?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => (&*tcp).flush(),
            Stream::Tls(shared) => {
                let session = shared.session.lock();
                Stream::send(shared, session)
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

#[cfg(all(test, feature = "tools"))]
mod tests;
