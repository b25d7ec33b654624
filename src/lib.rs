//! A Raft replicated log, as a library; the `raftnode` and `raftctl`
//! binaries are thin layers over it.
//!
//! * [`consensus`]: the algorithm, pure (no threads, clocks, files, sockets).
//! * [`node`]: the threaded runtime that drives it.
//! * [`service`]: what answers peers' RPCs and clients' writes and reads,
//!   shared by the runtime and the simulation.
//! * [`kv`]: the replicated key-value state machine, with client sessions.
//! * [`storage`]: term, vote and log on disk.
//! * [`wire`]: the newline-delimited JSON protocol.
//! * [`server`]: the thread-pool RPC server.
//! * [`transport`]: outgoing connections to peers.
//! * [`oneshot`]: one value to a waiting thread, without spinning.
//! * [`config`]: the cluster configuration file.
//! * [`client`]: what `raftctl` uses to talk to a cluster.
//! * [`activity`]: the human-readable activity log.
//! * [`events`]: the event stream subscribers watch a node through.
//! * [`observe`]: following every node's stream from outside.
//! * [`dashboard`]: `raftctl watch`, the live terminal view.
//! * [`web`]: `raftctl web`, the live page, and its lab controls.
//! * [`lincheck`]: a linearizability checker, used by the tests and by
//!   [`check`](mod@check), `raftctl check`'s fault injection and verdict.
//! * [`cli`]: one-line usage errors for the binaries.
//! * [`bench`](mod@bench): the closed-loop write benchmark behind `raftctl bench`.
//!
//! `dashboard`, `web`, `lincheck`, `check`, `cli` and `bench` belong to the
//! command-line tools, behind the `tools` feature (on by default): the
//! library alone builds without their dependencies.
pub mod activity;
pub mod backup;
#[cfg(feature = "tools")]
pub mod bench;
#[cfg(feature = "tools")]
pub mod check;
#[cfg(feature = "tools")]
pub mod cli;
pub mod client;
pub mod config;
pub mod consensus;
#[cfg(feature = "tools")]
pub mod dashboard;
pub mod events;
pub mod kv;
#[cfg(feature = "tools")]
pub mod lincheck;
pub mod node;
pub mod observe;
pub mod oneshot;
pub mod reconfig;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
pub mod transport;
#[cfg(feature = "tools")]
pub mod web;
pub mod wire;
