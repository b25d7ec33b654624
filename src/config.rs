//! The cluster configuration file.
//!
//! Two formats are accepted, and may even be mixed:
//!
//! ```text
//! N: 5                      # the courses' format: a count, then
//! node0: localhost:5001     # node<ID>: HOST:PORT
//!
//! 0 localhost 5001          # the plain format: ID HOST PORT
//! ```
//!
//! Blank lines, `#` comments, CRLF line ends, extra spaces and a missing
//! final newline are fine. The node lines are the truth: when `N:`
//! disagrees with them the file still loads and a warning says so.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::consensus::NodeId;

/// One server of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub host: String,
    pub port: u16,
}

impl Member {
    /// Member `id` at `address` (`host:port`, IPv6 hosts in brackets), as
    /// a membership names it; `None` if it does not read as one.
    pub fn at(id: NodeId, address: &str) -> Option<Member> {
        let (host, port) = split_host_port(address)?;
        let port = port.parse().ok().filter(|&p: &u16| p != 0)?;
        Some(Member { id, host, port })
    }

    /// `host:port`, as written in the file (IPv6 hosts in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves the address; the first result is used.
    pub fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} resolves to nothing", self.host),
                )
            })
    }
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub path: PathBuf,
    /// In file order.
    pub members: Vec<Member>,
    /// Problems that do not stop loading (an `N:` that disagrees).
    pub warnings: Vec<String>,
}

/// Whether `id` can be a cluster id (`--cluster-id`): 1 to 64
/// characters, no whitespace.
pub fn check_cluster_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || id.chars().any(char::is_whitespace) {
        return Err(format!(
            "a cluster id is 1 to 64 characters without spaces, not {id:?}"
        ));
    }
    Ok(())
}

impl ClusterConfig {
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The cluster id every peer message carries, derived from the
    /// membership alone: the members' ids and addresses, sorted by id, so
    /// comments, formatting and line order do not change it, but another
    /// node, another address or another port does. Nodes started with
    /// different files therefore refuse each other's messages instead of
    /// disrupting each other's elections. 16 hex digits of a 64-bit
    /// FNV-1a hash, fixed by its definition (not by the compiler's hasher),
    /// so builds of different toolchains agree.
    pub fn derived_cluster_id(&self) -> String {
        let mut members: Vec<&Member> = self.members.iter().collect();
        members.sort_by_key(|m| m.id);
        let canonical: String = members
            .iter()
            .map(|m| format!("{} {}\n", m.id, m.address().to_ascii_lowercase()))
            .collect();
        format!("{:016x}", fnv1a_64(canonical.as_bytes()))
    }
}

/// FNV-1a, 64 bits (Fowler, Noll, Vo): a well-known, tiny, fixed hash.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line that is neither `N: <count>`, `node<ID>: HOST:PORT` nor
    /// `ID HOST PORT`, or has a bad number in it.
    #[error("{}:{line}: {reason}: {text:?}", .path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        text: String,
        reason: String,
    },
    #[error("{}:{line}: node id {id} is already defined on line {first_line}", .path.display())]
    DuplicateId {
        path: PathBuf,
        line: usize,
        id: NodeId,
        first_line: usize,
    },
    #[error("{}:{line}: address {address} is already used on line {first_line}", .path.display())]
    DuplicateAddress {
        path: PathBuf,
        line: usize,
        address: String,
        first_line: usize,
    },
    #[error("{}: no node lines found", .path.display())]
    NoNodes { path: PathBuf },
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses configuration text; `path` is used in messages only.
pub fn parse(text: &str, path: &Path) -> Result<ClusterConfig, ConfigError> {
    let mut members: Vec<(Member, usize)> = Vec::new();
    let mut declared: Option<(usize, usize)> = None;
    for (k, raw) in text.lines().enumerate() {
        let line_no = k + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let member = match parse_line(line) {
            Ok(Line::Count(n)) => {
                declared = Some((n, line_no));
                continue;
            }
            Ok(Line::Member(member)) => member,
            Err(reason) => {
                return Err(ConfigError::Malformed {
                    path: path.to_path_buf(),
                    line: line_no,
                    text: raw.trim_end_matches('\r').to_string(),
                    reason: reason.to_string(),
                });
            }
        };
        check_unique(&members, &member, path, line_no)?;
        members.push((member, line_no));
    }
    if members.is_empty() {
        return Err(ConfigError::NoNodes {
            path: path.to_path_buf(),
        });
    }
    let mut warnings = Vec::new();
    if let Some((n, line)) = declared.filter(|&(n, _)| n != members.len()) {
        warnings.push(format!(
            "{}:{line}: N is {n} but {} nodes are listed; using the {} listed",
            path.display(),
            members.len(),
            members.len()
        ));
    }
    Ok(ClusterConfig {
        path: path.to_path_buf(),
        members: members.into_iter().map(|(m, _)| m).collect(),
        warnings,
    })
}

/// What one line of a configuration says.
enum Line {
    /// `N: <count>`.
    Count(usize),
    Member(Member),
}

/// Reads one line (comment and blanks already gone), in either format;
/// `Err` says why it reads as neither.
fn parse_line(line: &str) -> Result<Line, &'static str> {
    const NEITHER: &str = "expected `N: <count>`, `node<ID>: HOST:PORT` or `ID HOST PORT`";
    const PORT: &str = "port must be a number from 1 to 65535";
    let first_word = line
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
        .unwrap_or("");
    let course_format = first_word.eq_ignore_ascii_case("n") || first_word.starts_with("node");
    let member = if course_format {
        let (key, value) = line
            .split_once(':')
            .ok_or("expected `node<ID>: HOST:PORT`")?;
        let (key, value) = (key.trim(), value.trim());
        if key.eq_ignore_ascii_case("n") {
            let n = value.parse().map_err(|_| "N must be a whole number")?;
            return Ok(Line::Count(n));
        }
        let id = key.strip_prefix("node").ok_or(NEITHER)?;
        let id = id
            .parse()
            .map_err(|_| "node id must be a whole number, as in node4")?;
        let (host, port) = split_host_port(value).ok_or("expected HOST:PORT")?;
        let port = port.parse().map_err(|_| PORT)?;
        Member { id, host, port }
    } else {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, host, port] = fields[..] else {
            return Err(NEITHER);
        };
        Member {
            id: id.parse().map_err(|_| "node id must be a whole number")?,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: port.parse().map_err(|_| PORT)?,
        }
    };
    if member.port == 0 {
        return Err(PORT);
    }
    Ok(Line::Member(member))
}

/// Refuses a member whose id or address an earlier line already has.
fn check_unique(
    members: &[(Member, usize)],
    member: &Member,
    path: &Path,
    line_no: usize,
) -> Result<(), ConfigError> {
    if let Some((_, first_line)) = members.iter().find(|(m, _)| m.id == member.id) {
        return Err(ConfigError::DuplicateId {
            path: path.to_path_buf(),
            line: line_no,
            id: member.id,
            first_line: *first_line,
        });
    }
    let address = member.address().to_ascii_lowercase();
    if let Some((_, first_line)) = members
        .iter()
        .find(|(m, _)| m.address().to_ascii_lowercase() == address)
    {
        return Err(ConfigError::DuplicateAddress {
            path: path.to_path_buf(),
            line: line_no,
            address: member.address(),
            first_line: *first_line,
        });
    }
    Ok(())
}

/// `host:port`, `[v6]:port`.
fn split_host_port(s: &str) -> Option<(String, &str)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<ClusterConfig, ConfigError> {
        parse(text, Path::new("cfg.txt"))
    }

    #[test]
    fn course_format_with_crlf_comments_and_no_final_newline() {
        let c = p("# cluster\r\nN: 3\r\n\r\nnode0: localhost:5001\r\n  node1 :  localhost:5002  # two\r\nnode2: 127.0.0.1:5003").unwrap();
        let ids: Vec<_> = c.members.iter().map(|m| (m.id, m.address())).collect();
        assert_eq!(
            ids,
            vec![
                (0, "localhost:5001".into()),
                (1, "localhost:5002".into()),
                (2, "127.0.0.1:5003".into())
            ]
        );
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn plain_format_and_more_than_ten_nodes() {
        let text: String = (0..12)
            .map(|i| format!("{i}   127.0.0.1\t{}\n", 7000 + i))
            .collect();
        let c = p(&text).unwrap();
        assert_eq!(c.members.len(), 12);
        assert_eq!(c.member(11).unwrap().port, 7011);
    }

    #[test]
    fn node_lines_win_over_n_with_a_warning() {
        let c = p("N: 5\nnode0: localhost:5001\nnode1: localhost:5002\n").unwrap();
        assert_eq!(c.members.len(), 2);
        assert!(
            c.warnings[0].contains("cfg.txt:1: N is 5 but 2 nodes are listed"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn ipv6_in_brackets() {
        let c = p("node1: [::1]:5001\n2 ::1 5002\n").unwrap();
        assert_eq!(c.members[0].host, "::1");
        assert_eq!(c.members[1].address(), "[::1]:5002");
    }

    #[test]
    fn the_cluster_id_depends_on_the_membership_only() {
        let a = p("N: 2\nnode0: localhost:5001\nnode1: localhost:5002\n").unwrap();
        let same = p("# reordered, other format\n1 LOCALHOST 5002\n0 localhost 5001").unwrap();
        let other_port = p("node0: localhost:5001\nnode1: localhost:5003\n").unwrap();
        let more =
            p("node0: localhost:5001\nnode1: localhost:5002\nnode2: localhost:5003\n").unwrap();
        let id = a.derived_cluster_id();
        assert_eq!(id.len(), 16);
        assert_eq!(id, same.derived_cluster_id());
        assert_ne!(id, other_port.derived_cluster_id());
        assert_ne!(id, more.derived_cluster_id());
        // Fixed by FNV-1a's definition: the empty input hashes to its offset.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let cases = [
            (
                "node0: localhost:5001\nnode0: localhost:5002\n",
                "cfg.txt:2: node id 0 is already defined on line 1",
            ),
            (
                "node0: localhost:5001\nnode1: localhost:5001\n",
                "cfg.txt:2: address localhost:5001 is already used on line 1",
            ),
            (
                "node0: localhost:5001\nnodeX: localhost:5002\n",
                "cfg.txt:2: node id must be a whole number",
            ),
            (
                "node0: localhost:99999\n",
                "cfg.txt:1: port must be a number",
            ),
            ("node0: localhost\n", "cfg.txt:1: expected HOST:PORT"),
            ("\n\n0 localhost\n", "cfg.txt:3: expected `N: <count>`"),
            ("N: five\n", "cfg.txt:1: N must be a whole number"),
            ("# nothing\n", "cfg.txt: no node lines found"),
        ];
        for (text, expected) in cases {
            let err = p(text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text:?}: got {err:?}");
        }
    }
}
