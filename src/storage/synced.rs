//! `log.synced`: how far the log is known to have been synced, so that
//! recovery can tell a record a crash cut short (never synced, so never
//! acknowledged: cut it) from a synced record damaged afterwards (it may
//! have been acknowledged and counted toward a commit: repair it from the
//! leader). Rewritten in place after every sync of the log, *without* an
//! fsync of its own: the write reaches the page cache, which survives the
//! process (`kill -9`), and the disk with the next sync or within the
//! kernel's writeback interval. After a power failure it can be behind;
//! it is never ahead of the log, since it is written only once the log is
//! synced that far. (A cut of the log lowers it after the cut is synced.
//! If a crash keeps the higher value, a later start takes entries that
//! were never acknowledged for lost ones: a server then waits for the
//! leader before voting again, which costs time, never safety.)
//!
//! One line of fixed length, `CRC {"synced_through":N}` padded with
//! spaces, so that every write replaces the whole line.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{StorageError, checked_json, checksummed_line, io_err};
use crate::consensus::Index;

pub const SYNCED_FILE: &str = "log.synced";
const SYNCED_LEN: usize = 64;

pub struct SyncMarker {
    file: File,
    path: PathBuf,
    /// The index last written.
    at: Index,
}

impl SyncMarker {
    /// Opens (creating) the marker; returns it and what it said, `None`
    /// when it was missing (a directory from before markers) or unreadable.
    pub fn open(dir: &Path) -> Result<(SyncMarker, Option<Index>), StorageError> {
        let path = dir.join(SYNCED_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path, "open"))?;
        let said = if existed {
            let text = std::fs::read(&path).map_err(io_err(&path, "read"))?;
            parse_marker(&text)
        } else {
            None
        };
        Ok((
            SyncMarker {
                file,
                path,
                at: said.unwrap_or(0),
            },
            said,
        ))
    }

    /// Records that the log is synced through `index` (see above: no
    /// fsync here).
    pub fn write(&mut self, index: Index) -> Result<(), StorageError> {
        if index == self.at {
            return Ok(());
        }
        let json = format!("{{\"synced_through\":{index}}}");
        let mut line = Vec::with_capacity(SYNCED_LEN);
        checksummed_line(json.as_bytes(), &mut line);
        line.resize(SYNCED_LEN - 1, b' ');
        line.push(b'\n');
        self.file
            .write_all_at(&line, 0)
            .map_err(io_err(&self.path, "write"))?;
        self.at = index;
        Ok(())
    }

    /// Makes the marker durable (at a clean stop, and when it is lowered).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(io_err(&self.path, "fsync"))
    }
}

fn parse_marker(text: &[u8]) -> Option<Index> {
    let json = checked_json(text.trim_ascii_end()).ok()?;
    #[derive(serde::Deserialize)]
    struct Marker {
        synced_through: Index,
    }
    serde_json::from_slice::<Marker>(json)
        .ok()
        .map(|m| m.synced_through)
}
