//! The activity log: `DEBUG_DIR/node<ID>.log`, and stderr too when stderr is
//! a terminal. One line per event:
//!
//! ```text
//! 2026-11-22T10:15:02.113Z INFO  node4 [T7 Leader] STATE: Leader | TERM: 7
//! ```
//!
//! `RUST_LOG` chooses the level (default `info`; `debug` adds dropped
//! replies and failed RPCs, `trace` adds every heartbeat).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::consensus::NodeId;

struct Tee {
    file: File,
    stderr: bool,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        if self.stderr {
            let _ = io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Starts logging for node `id`; returns the log file's path.
pub fn init(id: NodeId, debug_dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(debug_dir)?;
    let path = debug_dir.join(format!("node{id}.log"));
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    let tee = Tee {
        file,
        stderr: io::stderr().is_terminal(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |out, record| {
            writeln!(
                out,
                "{} {:<5} node{id} {}",
                out.timestamp_millis(),
                record.level(),
                record.args()
            )
        })
        .target(env_logger::Target::Pipe(Box::new(tee)))
        .try_init()
        .map_err(io::Error::other)?;
    Ok(path)
}
