//! Talking to a cluster from outside: what `raftctl` and the tests use.

use std::fmt;
use std::time::Duration;

use crate::config::{ClusterConfig, Member};
use crate::consensus::NodeId;
use crate::transport::{self, TransportError};
use crate::wire::{NodeStatus, Request, Response};

#[derive(Debug)]
pub enum ClientError {
    Unreachable {
        id: NodeId,
        address: String,
        source: TransportError,
    },
    /// The node answered something this request does not expect.
    UnexpectedResponse { id: NodeId, response: Box<Response> },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable {
                id,
                address,
                source,
            } => write!(f, "node{id} at {address}: {source}"),
            ClientError::UnexpectedResponse { id, response } => {
                write!(f, "node{id} answered unexpectedly: {response:?}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// One row of `raftctl status`.
#[derive(Debug)]
pub struct MemberStatus {
    pub member: Member,
    pub status: Result<NodeStatus, ClientError>,
}

/// Asks one node for its status.
pub fn status(member: &Member, timeout: Duration) -> Result<NodeStatus, ClientError> {
    match transport::call_once(member, &Request::Status, timeout) {
        Ok(Response::Status(s)) => Ok(s),
        Ok(other) => Err(ClientError::UnexpectedResponse {
            id: member.id,
            response: Box::new(other),
        }),
        Err(source) => Err(ClientError::Unreachable {
            id: member.id,
            address: member.address(),
            source,
        }),
    }
}

/// Asks every node of the configuration at once; results in config order.
pub fn status_all(config: &ClusterConfig, timeout: Duration) -> Vec<MemberStatus> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .members
            .iter()
            .map(|m| {
                scope.spawn(move || MemberStatus {
                    member: m.clone(),
                    status: status(m, timeout),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("status thread panicked"))
            .collect()
    })
}

/// Why an append did not succeed.
#[derive(Debug)]
pub enum AppendError {
    /// No leader answered within the time allowed. The entry may or may
    /// not have been appended (an attempt may have timed out mid-way).
    NoLeader { last_error: String },
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::NoLeader { last_error } => {
                write!(
                    f,
                    "no leader accepted the entry in time (last error: {last_error}); it may or may not be appended"
                )
            }
        }
    }
}

impl std::error::Error for AppendError {}

/// Appends `data` through the leader and returns its (index, term) once
/// committed. Finds the leader by asking the nodes in turn and following
/// `not_leader` hints; retries until `total` has passed. A retry after a
/// timeout may append the entry twice (exactly-once needs client ids and
/// sequence numbers, which this request does not carry).
pub fn append(
    config: &ClusterConfig,
    data: &str,
    total: Duration,
) -> Result<(u64, u64), AppendError> {
    let deadline = std::time::Instant::now() + total;
    let per_call = Duration::from_secs(6).min(total);
    let mut next = 0usize;
    let mut hint: Option<NodeId> = None;
    let mut last_error = String::from("no node tried");
    let mut backoff = Duration::from_millis(20);
    while std::time::Instant::now() < deadline {
        let member = match hint.take().and_then(|h| config.member(h)) {
            Some(m) => m,
            None => {
                next = (next + 1) % config.members.len();
                &config.members[next]
            }
        };
        match transport::call_once(
            member,
            &Request::Append {
                data: data.to_string(),
            },
            per_call,
        ) {
            Ok(Response::Appended { index, term }) => return Ok((index, term)),
            Ok(Response::Error {
                code: crate::wire::ErrorCode::NotLeader,
                leader_id,
                ..
            }) => {
                last_error = format!("node{} is not the leader", member.id);
                if leader_id.is_some() && leader_id != Some(member.id) {
                    hint = leader_id;
                    continue;
                }
            }
            Ok(Response::Error { message, .. }) => {
                last_error = format!("node{}: {message}", member.id)
            }
            Ok(other) => last_error = format!("node{} answered {other:?}", member.id),
            Err(e) => last_error = format!("node{}: {e}", member.id),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
    Err(AppendError::NoLeader { last_error })
}
