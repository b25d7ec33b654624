//! A Raft replicated log, as a library.
//!
//! * [`config`]: the cluster configuration file.
//! * [`consensus`]: the algorithm, pure (no threads, clocks, files, sockets).
//! * [`storage`]: term, vote and log on disk.
pub mod config;
pub mod consensus;
pub mod storage;
