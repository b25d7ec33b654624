//! A snapshot on disk, `snapshot.jsonl`:
//!
//! ```text
//! {"last_index":1200,"last_term":3,"size":5321,"crc32":"1a2b3c4d","tail":"5e6f7a8b"}
//! <size bytes of state>
//! {"id":0,"address":"localhost:5001","suffrage":"voter"} … (the membership, one JSON line)
//! ```
//!
//! The first line names the snapshot (`SnapshotMeta`): the last log entry
//! it covers, and the length and CRC-32 of the state after the line. The
//! *tail* after the state is the membership in force at `last_index`, as
//! one JSON line, with its CRC-32 in the header's `tail` (a snapshot
//! written before memberships changed has neither: its membership is the
//! one the cluster was bootstrapped with). The header is
//! padded with spaces to [`HEADER_LEN`] bytes, so that a snapshot can be
//! written in one pass (the line is rewritten in place once the size and
//! CRC are known) and so that byte `k` of the state is at `HEADER_LEN + k`
//! in every copy: a follower receiving chunks writes exactly the leader's
//! file.
//!
//! Written atomically: to `snapshot.tmp` (ours) or `snapshot.recv` (from
//! a leader), fsynced, renamed over `snapshot.jsonl`, and the directory
//! fsynced. A crash leaves the old snapshot or the new one, never a mix;
//! a leftover temporary file is deleted at start. So a `snapshot.jsonl`
//! that fails its checks is damage, not a crash: the node refuses to start
//! and names the file and offset.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StorageError, io_err, sync_dir};
use crate::consensus::membership::Membership;
use crate::consensus::{Index, SnapshotMeta, Term};

pub const SNAPSHOT_FILE: &str = "snapshot.jsonl";
/// Our own snapshot while it is being written.
pub const WRITING_FILE: &str = "snapshot.tmp";
/// A leader's snapshot while it is being received.
pub const RECEIVING_FILE: &str = "snapshot.recv";
/// The length of the first line, newline included.
pub const HEADER_LEN: u64 = 128;

#[derive(Serialize, Deserialize)]
struct Header {
    last_index: Index,
    last_term: Term,
    size: u64,
    crc32: String,
    /// The CRC-32 of the tail (the membership line), if there is one. A
    /// short name: the header must fit its 128 bytes even with three
    /// 20-digit numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<String>,
}

/// A header as read: the snapshot, and the tail's CRC if it has one.
struct ParsedHeader {
    meta: SnapshotMeta,
    tail_crc32: Option<u32>,
}

/// The last index a damaged snapshot's header claims, or 0 if even the
/// header does not read: what its server may have held.
pub fn claimed_index(path: &Path) -> u64 {
    let Ok(file) = File::open(path) else {
        return 0;
    };
    let mut header = vec![0; HEADER_LEN as usize];
    match read_full_at(&file, &mut header, 0) {
        Ok(got) => {
            header.truncate(got);
            parse_header(&header, path).map_or(0, |h| h.meta.last_index)
        }
        Err(_) => 0,
    }
}

/// Moves a damaged snapshot out of the way, beside it as
/// `snapshot.jsonl.damaged` (or `.damaged.2` …), durably.
pub fn set_aside(path: &Path) -> Result<std::path::PathBuf, StorageError> {
    let aside = super::aside_name(path);
    std::fs::rename(path, &aside).map_err(super::io_err(path, "rename"))?;
    if let Some(dir) = path.parent() {
        super::sync_dir(dir)?;
    }
    Ok(aside)
}

/// The first line of a snapshot file for `meta` (and a tail with CRC-32
/// `tail_crc32`), padded to `HEADER_LEN`.
pub fn header_line(meta: &SnapshotMeta, tail_crc32: Option<u32>) -> Vec<u8> {
    let header = Header {
        last_index: meta.last_index,
        last_term: meta.last_term,
        size: meta.size,
        crc32: format!("{:08x}", meta.crc32),
        tail: tail_crc32.map(|c| format!("{c:08x}")),
    };
    let mut line = serde_json::to_vec(&header).expect("plain numbers serialize");
    assert!(line.len() < HEADER_LEN as usize, "header fits its line");
    line.resize(HEADER_LEN as usize - 1, b' ');
    line.push(b'\n');
    line
}

/// The tail written after the state: the membership as one JSON line.
fn tail_line(membership: &Membership) -> Vec<u8> {
    let mut line = serde_json::to_vec(membership).expect("a membership serializes");
    line.push(b'\n');
    line
}

fn hex_crc(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 16)
        .ok()
        .filter(|_| text.len() == 8)
}

fn parse_header(line: &[u8], path: &Path) -> Result<ParsedHeader, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    if line.len() != HEADER_LEN as usize || line[line.len() - 1] != b'\n' {
        return Err(corrupt(format!(
            "the first line must be {HEADER_LEN} bytes"
        )));
    }
    let h: Header = serde_json::from_slice(&line[..line.len() - 1])
        .map_err(|e| corrupt(format!("bad header: {e}")))?;
    let crc32 = hex_crc(&h.crc32).ok_or_else(|| corrupt("crc32 is not 8 hex digits".into()))?;
    let tail_crc32 = match &h.tail {
        None => None,
        Some(t) => Some(hex_crc(t).ok_or_else(|| corrupt("tail is not 8 hex digits".into()))?),
    };
    Ok(ParsedHeader {
        meta: SnapshotMeta {
            last_index: h.last_index,
            last_term: h.last_term,
            size: h.size,
            crc32,
        },
        tail_crc32,
    })
}

/// Reads and checks the tail (`from` to the end of the file) against the
/// header's CRC: the membership the snapshot carries.
fn read_tail(
    file: &File,
    path: &Path,
    from: u64,
    on_disk: u64,
    crc32: Option<u32>,
) -> Result<Option<Membership>, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: from,
        reason,
    };
    let len = on_disk - from;
    let Some(crc32) = crc32 else {
        if len != 0 {
            return Err(corrupt(format!(
                "{len} bytes follow the state, and the header names no tail"
            )));
        }
        return Ok(None);
    };
    // A membership line is a few kilobytes at most; a length beyond any
    // plausible one is damage, not a reason to allocate it.
    if len > 16 << 20 {
        return Err(corrupt(format!("a tail of {len} bytes")));
    }
    let mut tail = vec![0; len as usize];
    let got = read_full_at(file, &mut tail, from).map_err(io_err(path, "read"))?;
    tail.truncate(got);
    let computed = crc32fast::hash(&tail);
    if computed != crc32 {
        return Err(corrupt(format!(
            "the membership's CRC-32 is {computed:08x}, the header says {crc32:08x}"
        )));
    }
    let membership: Membership = serde_json::from_slice(&tail)
        .map_err(|e| corrupt(format!("the membership does not read: {e}")))?;
    membership.check().map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(membership))
}

/// A stored snapshot, open for reading: chunks to send, or the whole state
/// to restore. The file stays readable through this handle even after a
/// newer snapshot replaces it on disk.
#[derive(Debug)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    /// The membership in force at `meta.last_index` (`None`: the file
    /// predates stored memberships; the bootstrap one stands).
    pub membership: Option<Membership>,
    pub path: PathBuf,
    file: File,
}

impl SnapshotFile {
    /// Opens `path` and checks its header and length; [`SnapshotFile::check`]
    /// reads the state through and checks its CRC.
    pub fn open(path: &Path) -> Result<SnapshotFile, StorageError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        let mut header = vec![0; HEADER_LEN as usize];
        let got = read_full_at(&file, &mut header, 0).map_err(io_err(path, "read"))?;
        header.truncate(got);
        let ParsedHeader { meta, tail_crc32 } = parse_header(&header, path)?;
        let on_disk = file.metadata().map_err(io_err(path, "stat"))?.len();
        if on_disk < HEADER_LEN + meta.size {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: on_disk.min(HEADER_LEN + meta.size),
                reason: format!(
                    "the header says {} bytes of state follow, the file holds {}",
                    meta.size,
                    on_disk.saturating_sub(HEADER_LEN)
                ),
            });
        }
        let membership = read_tail(&file, path, HEADER_LEN + meta.size, on_disk, tail_crc32)?;
        Ok(SnapshotFile {
            meta,
            membership,
            path: path.to_path_buf(),
            file,
        })
    }

    /// Reads the state through and checks its CRC-32 against the header's.
    pub fn check(&self) -> Result<(), StorageError> {
        let (path, meta) = (&self.path, self.meta);
        let mut crc = crc32fast::Hasher::new();
        {
            let mut body = self.body();
            let mut buf = vec![0; 1 << 20];
            loop {
                let n = body.read(&mut buf).map_err(io_err(path, "read"))?;
                if n == 0 {
                    break;
                }
                crc.update(&buf[..n]);
            }
        }
        let computed = crc.finalize();
        if computed != meta.crc32 {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: HEADER_LEN,
                reason: format!(
                    "the state's CRC-32 is {computed:08x}, the header says {:08x}",
                    meta.crc32
                ),
            });
        }
        Ok(())
    }

    /// Opens a snapshot this process has just written and checked (its
    /// bytes passed through our CRC as they were written or received).
    fn open_written(
        path: &Path,
        meta: SnapshotMeta,
        membership: Membership,
    ) -> Result<SnapshotFile, StorageError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        Ok(SnapshotFile {
            meta,
            membership: Some(membership),
            path: path.to_path_buf(),
            file,
        })
    }

    /// The state's bytes, from the start.
    pub fn body(&self) -> impl io::BufRead + '_ {
        BufReader::with_capacity(
            1 << 20,
            ReadAt {
                file: &self.file,
                pos: HEADER_LEN,
                end: HEADER_LEN + self.meta.size,
            },
        )
    }

    /// Up to `max` bytes of the state from `offset`, cut back to a whole
    /// character (the state is UTF-8 text, and a chunk travels as a JSON
    /// string). At least one character unless at the end.
    pub fn read_chunk(&self, offset: u64, max: usize) -> io::Result<String> {
        let len = (self.meta.size.saturating_sub(offset)).min(max.max(4) as u64) as usize;
        let mut buf = vec![0; len];
        let got = read_full_at(&self.file, &mut buf, HEADER_LEN + offset)?;
        buf.truncate(got);
        if got < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "snapshot file shorter than its header says",
            ));
        }
        match String::from_utf8(buf) {
            Ok(text) => Ok(text),
            // A character cut at the end (`error_len` None) goes whole in
            // the next chunk; `len` of at least 4 leaves room for one.
            Err(e) if e.utf8_error().error_len().is_none() && e.utf8_error().valid_up_to() > 0 => {
                let valid = e.utf8_error().valid_up_to();
                let mut buf = e.into_bytes();
                buf.truncate(valid);
                Ok(String::from_utf8(buf).expect("valid up to here"))
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot state is not UTF-8 text",
            )),
        }
    }
}

/// Reads from a fixed position range of a file without moving any shared
/// file offset.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_full_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], at + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Writes a snapshot of our own state machine in one pass, without any
/// lock of the node's held: [`SnapshotWriter::create`], write the state,
/// [`SnapshotWriter::finish`]; the node then makes it current with
/// `Storage::install_own` (a rename) under its lock.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    path: PathBuf,
    crc: crc32fast::Hasher,
    size: u64,
    last_index: Index,
    last_term: Term,
}

impl SnapshotWriter {
    /// Starts `snapshot.tmp` in `dir` for a state covering the log up to
    /// (`last_index`, `last_term`).
    pub fn create(dir: &Path, last_index: Index, last_term: Term) -> Result<Self, StorageError> {
        let path = dir.join(WRITING_FILE);
        let file = File::create(&path).map_err(io_err(&path, "create"))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header_line(&SnapshotMeta::default(), None))
            .map_err(io_err(&path, "write"))?;
        Ok(SnapshotWriter {
            out,
            path,
            crc: crc32fast::Hasher::new(),
            size: 0,
            last_index,
            last_term,
        })
    }

    /// Writes `membership` (the one in force at the snapshot's last index)
    /// after the state, then the real header, and fsyncs: the snapshot is
    /// complete on disk, under its temporary name.
    pub fn finish(mut self, membership: &Membership) -> Result<WrittenSnapshot, StorageError> {
        let tail = tail_line(membership);
        self.out
            .write_all(&tail)
            .map_err(io_err(&self.path, "write"))?;
        let meta = SnapshotMeta {
            last_index: self.last_index,
            last_term: self.last_term,
            size: self.size,
            crc32: self.crc.finalize(),
        };
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err(&path, "write")(e.into_error()))?;
        file.write_all_at(&header_line(&meta, Some(crc32fast::hash(&tail))), 0)
            .map_err(io_err(&path, "write"))?;
        file.sync_all().map_err(io_err(&path, "fsync"))?;
        Ok(WrittenSnapshot {
            meta,
            membership: membership.clone(),
            path,
        })
    }
}

impl Write for SnapshotWriter {
    /// The state's bytes; `finish` adds the tail.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A complete snapshot under its temporary name.
#[derive(Debug)]
pub struct WrittenSnapshot {
    pub meta: SnapshotMeta,
    membership: Membership,
    path: PathBuf,
}

impl WrittenSnapshot {
    /// Gives up on it (a newer snapshot became current meanwhile).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Renames `from` over the snapshot file and syncs the directory: from
/// here on a restart finds the new snapshot.
fn make_current(
    dir: &Path,
    from: &Path,
    meta: SnapshotMeta,
    membership: Membership,
) -> Result<SnapshotFile, StorageError> {
    let path = dir.join(SNAPSHOT_FILE);
    std::fs::rename(from, &path).map_err(io_err(&path, "rename"))?;
    sync_dir(dir)?;
    SnapshotFile::open_written(&path, meta, membership)
}

impl WrittenSnapshot {
    pub(super) fn make_current(self, dir: &Path) -> Result<SnapshotFile, StorageError> {
        make_current(dir, &self.path, self.meta, self.membership)
    }
}

/// A leader's snapshot arriving chunk by chunk into `snapshot.recv`.
pub(super) struct Receiving {
    meta: SnapshotMeta,
    file: File,
    path: PathBuf,
    /// Bytes of state written so far.
    received: u64,
}

impl Receiving {
    /// Starts (or restarts) receiving the snapshot `meta`.
    pub(super) fn start(dir: &Path, meta: SnapshotMeta) -> Result<Receiving, StorageError> {
        let path = dir.join(RECEIVING_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(&path, "create"))?;
        file.write_all(&header_line(&meta, None))
            .map_err(io_err(&path, "write"))?;
        Ok(Receiving {
            meta,
            file,
            path,
            received: 0,
        })
    }

    pub(super) fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Appends the next chunk, which must start where the last ended (the
    /// core hands chunks out in order), and syncs it. A chunk is written
    /// under the node's lock, and so is the snapshot's install: synced a
    /// chunk at a time, the install's own fsync has one chunk left to
    /// write, not the whole snapshot, which at 100 MB could hold the lock
    /// (and the heartbeats queued behind it) past an election timeout.
    pub(super) fn write(&mut self, offset: u64, data: &str) -> Result<(), StorageError> {
        assert_eq!(offset, self.received, "snapshot chunks arrive in order");
        self.file
            .write_all(data.as_bytes())
            .map_err(io_err(&self.path, "write"))?;
        self.file.sync_data().map_err(io_err(&self.path, "fsync"))?;
        self.received += data.len() as u64;
        Ok(())
    }

    /// The whole snapshot is here (the core checked its CRC as it came):
    /// add the membership it carries as the tail, sync it and make it
    /// current.
    pub(super) fn finish(
        mut self,
        dir: &Path,
        membership: &Membership,
    ) -> Result<SnapshotFile, StorageError> {
        assert_eq!(self.received, self.meta.size, "a snapshot installed whole");
        let tail = tail_line(membership);
        self.file
            .write_all(&tail)
            .map_err(io_err(&self.path, "write"))?;
        self.file
            .write_all_at(&header_line(&self.meta, Some(crc32fast::hash(&tail))), 0)
            .map_err(io_err(&self.path, "write"))?;
        self.file.sync_all().map_err(io_err(&self.path, "fsync"))?;
        make_current(dir, &self.path, self.meta, membership.clone())
    }
}
