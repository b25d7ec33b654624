//! The services a node offers, as LogCabin splits them (RaftService,
//! ClientService): the logic that answers a request, apart from the
//! threads, locks and sockets around it. Both are plain structs that act on
//! a `Raft` and a `KvStore` handed to them, so the threaded runtime
//! (`node`) and the deterministic simulation (tests/sim) run the same code.
//!
//! * [`peer`]: Raft RPCs from other nodes: who may send them (cluster
//!   identity) and what the core refuses, each kind reported once.
//! * [`client`]: writes and reads: the session fast path, proposing,
//!   telling when a proposal is lost, and completing ReadIndex reads.
//! * [`durability`]: what is done with the core's `Ready`: what is synced
//!   before what, when the core is told it is durable, where read answers
//!   go; over a [`Disk`] that the real storage and the simulation's
//!   implement.

pub mod client;
pub mod durability;
pub mod peer;

pub use client::{ClientService, Query, ReadTicket, Step, WriteTicket};
pub use durability::{Disk, Handled, handle_ready};
pub use peer::{PeerAnswer, PeerService};
