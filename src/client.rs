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
