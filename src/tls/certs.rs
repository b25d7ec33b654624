//! `raftctl tls init`: a certificate authority for one cluster, a
//! certificate per node and one for clients, made with rcgen.
//!
//! Keys are ECDSA P-256. A node's certificate names its host from the
//! config (so that other tools can check it too) and `node<ID>.raft`
//! (which this project checks), for both server and client use (a node
//! is each to its peers); the clients' names `client.raft`, for client
//! use only. Validity: ten years for the authority, one for the others.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{CA_FILE, CLIENT_CERT, CLIENT_KEY, CLIENT_NAME, TlsError, node_files, node_name};
use crate::config::ClusterConfig;
use crate::consensus::NodeId;

/// The authority's key file, which `init` writes beside `ca.pem`: needed
/// only to issue more certificates; keep it off the nodes.
pub const CA_KEY: &str = "ca-key.pem";

/// An authority that can sign.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// A certificate and its key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("making a certificate: {e}"))
}

/// `days` from now, as rcgen takes dates.
pub fn days_from_now(days: i64) -> time::OffsetDateTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let (y, m, d) = civil_from_days(now / 86_400 + days);
    rcgen::date_time_ymd(y, m, d)
}

/// The Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm, "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

impl Authority {
    /// A new authority named after `cluster`.
    pub fn new(cluster: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("raft cluster {cluster} authority"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = days_from_now(-1);
        params.not_after = days_from_now(3650);
        let cert = params.self_signed(&key).map_err(err)?;
        let key_pem = key.serialize_pem();
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The authority `init` wrote: its certificate and key, PEM-encoded
    /// (to issue a certificate for a node added later).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(err)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, KeyPair::from_pem(key_pem).map_err(err)?)
            .map_err(err)?;
        Ok(Authority {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate naming `names`, for `usages`, valid from
    /// `not_before` to `not_after` (days from now).
    pub fn issue(
        &self,
        common_name: &str,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        (not_before, not_after): (i64, i64),
    ) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(names).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = usages;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = days_from_now(not_before);
        params.not_after = days_from_now(not_after);
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Node `id`'s certificate, reachable at `host`, valid for a year.
    pub fn node(&self, id: NodeId, host: &str) -> Result<Issued, TlsError> {
        self.node_valid(id, host, (-1, 365))
    }

    /// The same, with the validity given (tests make expired ones).
    pub fn node_valid(&self, id: NodeId, host: &str, days: (i64, i64)) -> Result<Issued, TlsError> {
        let mut names = vec![node_name(id), host.to_string()];
        names.dedup();
        self.issue(
            &node_name(id),
            names,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            days,
        )
    }

    /// The clients' certificate, valid for a year.
    pub fn client(&self) -> Result<Issued, TlsError> {
        self.issue(
            CLIENT_NAME,
            vec![CLIENT_NAME.to_string()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            (-1, 365),
        )
    }
}

/// Writes `text` to `path`, readable by its owner only if `secret`;
/// refuses to overwrite.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
}

/// `raftctl tls init`: an authority, every node of `config` and the
/// clients, written into `dir` (created if missing; files already there
/// are not overwritten: the command then fails, naming the file). The
/// files written, in order.
pub fn init(config: &ClusterConfig, dir: &Path) -> Result<Vec<PathBuf>, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
        path: dir.to_path_buf(),
        why: e.to_string(),
    })?;
    let cluster = config.path.display().to_string();
    let authority = Authority::new(&cluster)?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: &str, secret: bool| -> Result<(), TlsError> {
        let path = dir.join(name);
        write_new(&path, text, secret)?;
        written.push(path);
        Ok(())
    };
    put(CA_FILE, authority.cert_pem(), false)?;
    put(CA_KEY, &authority.key_pem, true)?;
    for m in &config.members {
        let issued = authority.node(m.id, &m.host)?;
        let (cert, key) = node_files(m.id);
        put(&cert, &issued.cert_pem, false)?;
        put(&key, &issued.key_pem, true)?;
    }
    let client = authority.client()?;
    put(CLIENT_CERT, &client.cert_pem, false)?;
    put(CLIENT_KEY, &client.key_pem, true)?;
    Ok(written)
}

/// `raftctl tls add`: a certificate for node `id` at `host`, signed by
/// the authority in `dir` (`ca.pem`, `ca-key.pem`), written beside it.
pub fn add_node(dir: &Path, id: NodeId, host: &str) -> Result<Vec<PathBuf>, TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| TlsError::File {
            path,
            why: e.to_string(),
        })
    };
    let authority = Authority::from_pem(&read(CA_FILE)?, &read(CA_KEY)?)?;
    let issued = authority.node(id, host)?;
    let (cert, key) = node_files(id);
    let (cert, key) = (dir.join(cert), dir.join(key));
    write_new(&cert, &issued.cert_pem, false)?;
    write_new(&key, &issued.key_pem, true)?;
    Ok(vec![cert, key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_map_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
