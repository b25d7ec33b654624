//! A Raft replicated log, as a library.
//!
//! * [`consensus`]: the algorithm, pure (no threads, clocks, files, sockets).
pub mod consensus;
