use super::*;
use crate::consensus::membership::Membership;
use crate::consensus::{Json, Payload};

fn entry(index: Index, term: u64, data: &str) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(Json::string(data)),
    }
}

/// Node 1 of cluster "test", with nobody to heal from (the damage
/// cases stop the node) unless a test says otherwise.
fn options(limits: SegmentLimits) -> StorageOptions {
    StorageOptions {
        limits,
        heal: false,
        ..StorageOptions::new("test", 1)
    }
}

fn open(dir: &Path) -> Result<(Storage, Recovered), StorageError> {
    Storage::open(dir, &options(SegmentLimits::default()))
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join(segment_name(1))
}

/// Appends `entries`, in the term of the last (a server adopts a
/// term, durably, before it takes entries of it).
fn ready_appending(entries: Vec<Entry>) -> Ready {
    Ready {
        hard_state: entries.last().map(|e| HardState {
            term: e.term,
            ..HardState::default()
        }),
        appended: entries,
        ..Ready::default()
    }
}

#[test]
fn round_trip_with_truncation_and_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, rec) = open(dir.path()).unwrap();
        assert_eq!(rec.hard_state, HardState::default());
        assert!(rec.entries.is_empty());
        s.persist(
            &Ready {
                hard_state: Some(HardState {
                    term: 3,
                    voted_for: Some(2),
                    lost_through: 0,
                    lost_term: 0,
                }),
                appended: vec![
                    entry(1, 1, "a"),
                    entry(2, 1, "b\nwith newline"),
                    entry(3, 2, "c"),
                ],
                ..Ready::default()
            },
            false,
        )
        .unwrap();
        // Written, not yet synced: a leader's log writer syncs it from
        // another handle.
        assert!(s.needs_sync());
        let count = s.written();
        s.log_syncer().sync().unwrap();
        s.synced_through(count).unwrap();
        assert!(!s.needs_sync());
        s.persist(
            &Ready {
                truncate_from: Some(2),
                appended: vec![entry(2, 3, "B")],
                ..Ready::default()
            },
            true,
        )
        .unwrap();
        assert!(!s.needs_sync());
    }
    let (_s, rec) = open(dir.path()).unwrap();
    assert_eq!(
        rec.hard_state,
        HardState {
            term: 3,
            voted_for: Some(2),
            lost_through: 0,
            lost_term: 0,
        }
    );
    assert_eq!(rec.entries, vec![entry(1, 1, "a"), entry(2, 3, "B")]);
    assert!(rec.torn_tail.is_none());
    let text = std::fs::read_to_string(first_segment(dir.path())).unwrap();
    assert_eq!(
        text.lines().count(),
        2,
        "one readable line per record: {text}"
    );
}

#[test]
fn a_log_written_before_commands_were_nested_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let old = [
        r#"{"index":1,"term":1,"payload":{"kind":"noop"}}"#,
        r#"{"index":2,"term":1,"payload":{"kind":"data","data":"{\"client\":7,\"seq\":1,\"op\":\"put\",\"key\":\"k\",\"value\":\"v\"}"}}"#,
    ];
    let text: String = old
        .iter()
        .map(|json| format!("{:08x} {json}\n", checksum(json.as_bytes())))
        .collect();
    std::fs::write(dir.path().join("log.jsonl"), text).unwrap();
    // And the state file as it was then: plain JSON, no identity.
    std::fs::write(
        dir.path().join("state.json"),
        "{\"term\":1,\"voted_for\":2}\n",
    )
    .unwrap();
    let (mut s, rec) = open(dir.path()).unwrap();
    assert_eq!(
        (rec.hard_state.term, rec.hard_state.voted_for),
        (1, Some(2))
    );
    assert!(
        rec.notes
            .iter()
            .any(|n| n.contains("node 1 of cluster test")),
        "{:?}",
        rec.notes
    );
    let command = r#"{"client":7,"seq":1,"op":"put","key":"k","value":"v"}"#;
    assert_eq!(
        rec.entries[1].payload,
        Payload::Command(Json::parse(command).unwrap())
    );
    // New records go after the old ones, in the new form.
    s.persist(
        &Ready {
            appended: vec![entry(3, 1, "c")],
            ..Ready::default()
        },
        true,
    )
    .unwrap();
    drop(s);
    let (_s, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.entries.len(), 3);
    assert!(!dir.path().join("log.jsonl").exists(), "renamed");
    let text = std::fs::read_to_string(first_segment(dir.path())).unwrap();
    assert!(
        text.lines()
            .nth(2)
            .unwrap()
            .contains(r#""kind":"command","command":"c""#)
    );
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).unwrap();
    assert!(matches!(open(dir.path()), Err(StorageError::Locked { .. })));
}

#[test]
fn a_torn_final_record_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = open(dir.path()).unwrap();
        s.persist(
            &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b")]),
            true,
        )
        .unwrap();
    }
    let path = first_segment(dir.path());
    let good = std::fs::read(&path).unwrap();
    let mut torn = good.clone();
    let mut third = Vec::new();
    encode_record(&entry(3, 1, "c"), &mut third);
    torn.extend_from_slice(&third[..third.len() / 2]); // crash mid-write
    std::fs::write(&path, &torn).unwrap();
    let (mut s, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.entries.len(), 2);
    assert_eq!(
        rec.torn_tail,
        Some((path.clone(), good.len() as u64, (third.len() / 2) as u64))
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the torn bytes are gone from the file"
    );
    // And appending afterwards continues cleanly.
    s.persist(&ready_appending(vec![entry(3, 1, "c")]), true)
        .unwrap();
    drop(s);
    assert_eq!(open(dir.path()).unwrap().1.entries.len(), 3);
}

/// Entries 1 and 2 written and synced by node 1: the marker says 2.
fn two_synced(dir: &Path) -> PathBuf {
    let (mut s, _) = open(dir).unwrap();
    s.persist(
        &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b")]),
        true,
    )
    .unwrap();
    first_segment(dir)
}

fn healing() -> StorageOptions {
    StorageOptions {
        heal: true,
        ..options(SegmentLimits::default())
    }
}

/// The three ways issue 19 found a synced tail damaged: each was cut
/// as a torn write, silently dropping an acknowledged entry.
#[test]
fn a_synced_final_record_damaged_later_is_a_loss_not_a_torn_write() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("cut 7 bytes off", |b| b.truncate(b.len() - 7)),
        ("flip a bit inside it", |b| {
            let n = b.len();
            b[n - 4] ^= 0x01
        }),
        ("flip the newline before it", |b| {
            let first_end = b.iter().position(|&c| c == b'\n').unwrap();
            b[first_end] ^= 0x01
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let path = two_synced(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let good = bytes.clone();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        // With nobody to repair from, the node stops, cutting nothing.
        let msg = open(dir.path()).err().expect(what).to_string();
        assert!(
            msg.contains(&segment_name(1)) && msg.contains("corrupt at byte offset"),
            "{what}: {msg}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: nothing cut");
        // With peers, it keeps what reads and marks the rest lost.
        let (_, rec) = Storage::open(dir.path(), &healing()).unwrap();
        let loss = rec.loss.expect(what);
        assert_eq!(loss.through, 2, "{what}");
        assert_eq!(rec.hard_state.lost_through, 2, "{what}: recorded");
        let kept = rec.entries.len();
        assert!(kept < 2, "{what}");
        assert!(loss.what.contains(".damaged"), "{what}: {}", loss.what);
        let aside = std::fs::read(format!("{}.damaged", path.display())).unwrap();
        assert_eq!(aside, bytes, "{what}: the damaged file is kept aside");
        assert!(good.starts_with(&std::fs::read(&path).unwrap()));
        // The mark survives a restart; nothing new is found.
        let (_, rec) = Storage::open(dir.path(), &healing()).unwrap();
        assert_eq!(
            (rec.loss, rec.hard_state.lost_through, rec.entries.len()),
            (None, 2, kept),
            "{what}"
        );
    }
}

#[test]
fn a_record_written_after_the_last_sync_is_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_synced(dir.path());
    {
        let (mut s, _) = open(dir.path()).unwrap();
        // A leader's append, not yet synced by its log writer.
        s.persist(&ready_appending(vec![entry(3, 1, "c")]), false)
            .unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&path, &bytes).unwrap();
    let (_, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.entries.len(), 2);
    assert!(rec.torn_tail.is_some() && rec.loss.is_none());
    assert_eq!(rec.hard_state.lost_through, 0);
}

#[test]
fn without_a_sync_marker_a_bad_final_record_is_taken_for_a_torn_write() {
    // A directory from before markers.
    let dir = tempfile::tempdir().unwrap();
    let path = two_synced(dir.path());
    std::fs::remove_file(dir.path().join(SYNCED_FILE)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 4] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (_, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.entries.len(), 1);
    assert!(rec.torn_tail.is_some() && rec.loss.is_none());
}

#[test]
fn a_log_cut_at_a_record_boundary_is_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_synced(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let first_end = bytes.iter().position(|&c| c == b'\n').unwrap() + 1;
    std::fs::write(&path, &bytes[..first_end]).unwrap();
    assert!(open(dir.path()).is_err(), "alone, the node stops");
    let (_, rec) = Storage::open(dir.path(), &healing()).unwrap();
    assert_eq!(rec.entries.len(), 1);
    assert_eq!(rec.loss.map(|l| l.through), Some(2));
}

#[test]
fn damage_in_the_middle_keeps_the_prefix_and_sets_the_rest_aside() {
    let dir = tempfile::tempdir().unwrap();
    let limits = small_segments();
    {
        let (mut s, _) = Storage::open(dir.path(), &options(limits)).unwrap();
        for i in 1..=8 {
            s.persist(&ready_appending(vec![entry(i, 1, "x")]), true)
                .unwrap();
        }
    }
    // Segments 1-3, 4-6, 7-8: damage entry 5.
    let path = dir.path().join(segment_name(4));
    let mut bytes = std::fs::read(&path).unwrap();
    let second = bytes.iter().position(|&c| c == b'\n').unwrap() + 1;
    bytes[second + 15] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let opts = StorageOptions {
        heal: true,
        ..options(limits)
    };
    let (mut s, rec) = Storage::open(dir.path(), &opts).unwrap();
    let indices: Vec<Index> = rec.entries.iter().map(|e| e.index).collect();
    assert_eq!(indices, [1, 2, 3, 4]);
    let loss = rec.loss.unwrap();
    assert_eq!(loss.through, 8, "entry 8 was synced: {}", loss.what);
    assert!(
        loss.what.contains(&format!("byte offset {second}")),
        "{}",
        loss.what
    );
    assert_eq!(
        segment_names(dir.path()),
        [segment_name(1), segment_name(4)]
    );
    assert!(
        dir.path()
            .join(format!("{}.damaged", segment_name(7)))
            .exists()
    );
    // The log goes on from what was kept (the core keeps the mark in
    // every hard state it hands out, until repaired).
    let mut ready = ready_appending(vec![entry(5, 2, "y")]);
    ready.hard_state = Some(HardState {
        term: 2,
        voted_for: None,
        lost_through: 8,
        lost_term: 2,
    });
    s.persist(&ready, true).unwrap();
    drop(s);
    let (_, rec) = Storage::open(dir.path(), &opts).unwrap();
    assert_eq!(rec.entries.len(), 5);
    assert_eq!(rec.hard_state.lost_through, 8, "until the core clears it");
}

#[test]
fn damage_before_the_tail_stops_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = open(dir.path()).unwrap();
        s.persist(
            &ready_appending(vec![entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]),
            true,
        )
        .unwrap();
    }
    let path = first_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes[second + 20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = open(dir.path()).err().expect("must refuse to start");
    let msg = err.to_string();
    assert!(
        msg.contains(&segment_name(1)) && msg.contains(&format!("byte offset {second}")),
        "{msg}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
}

/// Node 1 voted for 2 in term 3 and holds one entry of term 3.
fn voted(dir: &Path) {
    let (mut s, _) = open(dir).unwrap();
    s.persist(
        &Ready {
            hard_state: Some(HardState {
                term: 3,
                voted_for: Some(2),
                lost_through: 0,
                lost_term: 0,
            }),
            appended: vec![entry(1, 3, "a")],
            ..Ready::default()
        },
        true,
    )
    .unwrap();
}

#[test]
fn the_vote_survives_losing_or_damaging_either_copy() {
    type Damage = fn(&Path);
    let damages: [(&str, &str, Damage); 4] = [
        (STATE_FILE, "deleted", |p| std::fs::remove_file(p).unwrap()),
        (STATE_COPY, "deleted", |p| std::fs::remove_file(p).unwrap()),
        (STATE_FILE, "a digit changed", |p| {
            let text = std::fs::read_to_string(p).unwrap();
            std::fs::write(p, text.replace("\"term\":3", "\"term\":1")).unwrap()
        }),
        (STATE_COPY, "emptied", |p| std::fs::write(p, "").unwrap()),
    ];
    for (name, what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        voted(dir.path());
        let good = std::fs::read(dir.path().join(name)).unwrap();
        damage(&dir.path().join(name));
        let (_, rec) = open(dir.path()).unwrap();
        assert_eq!(
            (rec.hard_state.term, rec.hard_state.voted_for),
            (3, Some(2)),
            "{name} {what}"
        );
        assert!(
            rec.notes.iter().any(|n| n.contains(name)),
            "{name} {what}: {:?}",
            rec.notes
        );
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            good,
            "{name} {what}: rewritten"
        );
    }
}

#[test]
fn a_node_that_has_run_and_lost_both_copies_refuses_to_start_until_given_a_floor() {
    let dir = tempfile::tempdir().unwrap();
    voted(dir.path());
    std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
    std::fs::remove_file(dir.path().join(STATE_COPY)).unwrap();
    let msg = open(dir.path()).err().expect("must refuse").to_string();
    assert!(
        msg.contains("may have voted")
            && msg.contains("--vote-floor")
            && msg.contains("last term 3"),
        "{msg}"
    );
    let floor = StorageOptions {
        vote_floor: Some(5),
        ..options(SegmentLimits::default())
    };
    let (_, rec) = Storage::open(dir.path(), &floor).unwrap();
    assert_eq!(
        (rec.hard_state.term, rec.hard_state.voted_for),
        (5, Some(1)),
        "as if it had voted (for itself) in term 5"
    );
    // Once is enough; a second --vote-floor is refused.
    let msg = Storage::open(dir.path(), &floor).err().unwrap().to_string();
    assert!(msg.contains("intact"), "{msg}");
    assert_eq!(open(dir.path()).unwrap().1.hard_state.term, 5);
}

#[test]
fn a_term_below_the_logs_is_not_trusted() {
    // Term 0 over a log of term 3 (issue 19: a node started that way
    // and voted again in a term it had voted in).
    let dir = tempfile::tempdir().unwrap();
    voted(dir.path());
    for name in [STATE_FILE, STATE_COPY] {
        let json = r#"{"cluster":"test","node":1,"term":0,"voted_for":null}"#;
        let line = format!("{:08x} {json}\n", checksum(json.as_bytes()));
        std::fs::write(dir.path().join(name), line).unwrap();
    }
    let msg = open(dir.path()).err().expect("must refuse").to_string();
    assert!(msg.contains("says term 0, below the last term"), "{msg}");
}

#[test]
fn another_nodes_directory_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    voted(dir.path());
    let before: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "lock")
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    let as_node_2 = StorageOptions::new("test", 2);
    let msg = Storage::open(dir.path(), &as_node_2)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("state of node 1 (of cluster test), not of node 2"),
        "{msg}"
    );
    let other_cluster = StorageOptions::new("other", 1);
    let msg = Storage::open(dir.path(), &other_cluster)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("belongs to cluster test, but the configuration now describes cluster other")
            && msg.contains("--cluster-id test"),
        "{msg}"
    );
    for (name, bytes) in before {
        assert_eq!(
            std::fs::read(dir.path().join(&name)).unwrap(),
            bytes,
            "{name}"
        );
    }
}

#[test]
fn a_corrupt_state_file_is_an_error_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.json"),
        "{\"term\": 4, \"voted_for\": nul",
    )
    .unwrap();
    let msg = open(dir.path()).err().expect("must refuse").to_string();
    assert!(
        msg.contains("state.json") && msg.contains("damaged at byte offset"),
        "{msg}"
    );
}

// ----- Segments and snapshots -----

fn small_segments() -> SegmentLimits {
    SegmentLimits {
        bytes: 1 << 20,
        entries: 3,
    }
}

fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("log-") && n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
}

/// Writes our own snapshot of `bytes` covering up to (index, term).
fn own_snapshot(s: &mut Storage, index: Index, term: u64, bytes: &str) -> SnapshotMeta {
    let mut w = SnapshotWriter::create(s.dir(), index, term).unwrap();
    w.write_all(bytes.as_bytes()).unwrap();
    let written = w.finish(&three_members()).unwrap();
    let meta = written.meta;
    s.install_own(written, index).unwrap();
    meta
}

#[test]
fn segments_roll_and_compaction_deletes_only_whole_covered_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        for i in 1..=8 {
            s.persist(&ready_appending(vec![entry(i, 1, "x")]), true)
                .unwrap();
        }
        assert_eq!(
            segment_names(dir.path()),
            [segment_name(1), segment_name(4), segment_name(7)]
        );
        // A snapshot up to 5 covers the first segment only.
        let meta = own_snapshot(&mut s, 5, 1, "state at 5");
        assert_eq!(meta.size, 10);
        assert_eq!(
            segment_names(dir.path()),
            [segment_name(4), segment_name(7)]
        );
        s.persist(&ready_appending(vec![entry(9, 1, "y")]), true)
            .unwrap();
    }
    let (s, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
    let snapshot = rec.snapshot.expect("a snapshot");
    assert_eq!((snapshot.meta.last_index, snapshot.meta.last_term), (5, 1));
    let mut state = String::new();
    std::io::Read::read_to_string(&mut snapshot.body(), &mut state).unwrap();
    assert_eq!(state, "state at 5");
    let indices: Vec<Index> = rec.entries.iter().map(|e| e.index).collect();
    assert_eq!(indices, [6, 7, 8, 9], "only what follows the snapshot");
    assert!(s.log_bytes() > 0);
    let header = std::fs::read_to_string(dir.path().join(SNAPSHOT_FILE)).unwrap();
    assert!(
        header.starts_with(r#"{"last_index":5,"last_term":1,"size":10,"crc32":""#),
        "{header}"
    );
}

#[test]
fn a_cut_across_segments_removes_the_later_ones_first() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        let entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1, "a")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        let entries: Vec<Entry> = (4..=8).map(|i| entry(i, 1, "b")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        assert_eq!(
            segment_names(dir.path()),
            [segment_name(1), segment_name(4)]
        );
        s.persist(
            &Ready {
                truncate_from: Some(3),
                ..ready_appending(vec![entry(3, 2, "c")])
            },
            true,
        )
        .unwrap();
        assert_eq!(segment_names(dir.path()), [segment_name(1)]);
    }
    let (_, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
    assert_eq!(
        rec.entries,
        vec![entry(1, 1, "a"), entry(2, 1, "a"), entry(3, 2, "c")]
    );
}

/// Figure 13: chunks arrive into snapshot.recv; installing makes it
/// current and keeps (rule 6) or discards (rule 7) the log.
fn install(s: &mut Storage, meta: SnapshotMeta, bytes: &str, log_kept: bool) {
    let (a, b) = bytes.split_at(bytes.len() / 2);
    let chunk = |offset: usize, data: &str| crate::consensus::SnapshotChunk {
        snapshot: meta,
        offset: offset as u64,
        data: data.into(),
    };
    s.persist(
        &Ready {
            hard_state: Some(HardState {
                term: meta.last_term,
                ..HardState::default()
            }),
            snapshot_chunks: vec![chunk(0, a)],
            ..Ready::default()
        },
        true,
    )
    .unwrap();
    assert!(s.dir().join("snapshot.recv").exists());
    s.persist(
        &Ready {
            snapshot_chunks: vec![chunk(a.len(), b)],
            installed_snapshot: Some(crate::consensus::InstalledSnapshot {
                snapshot: meta,
                membership: three_members(),
                log_kept,
            }),
            ..Ready::default()
        },
        true,
    )
    .unwrap();
    assert!(!s.dir().join("snapshot.recv").exists());
}

fn meta(index: Index, term: u64, bytes: &str) -> SnapshotMeta {
    SnapshotMeta {
        last_index: index,
        last_term: term,
        size: bytes.len() as u64,
        crc32: checksum(bytes.as_bytes()),
    }
}

#[test]
fn an_installed_snapshot_discards_a_log_lacking_its_end_and_keeps_one_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        let entries: Vec<Entry> = (1..=4).map(|i| entry(i, 1, "a")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        install(&mut s, meta(10, 3, "state ten"), "state ten", false);
        assert_eq!(segment_names(dir.path()), [segment_name(11)]);
        s.persist(&ready_appending(vec![entry(11, 3, "b")]), true)
            .unwrap();
    }
    {
        let (mut s, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        assert_eq!(rec.snapshot.unwrap().meta.last_index, 10);
        assert_eq!(rec.entries, vec![entry(11, 3, "b")]);
        let entries: Vec<Entry> = (12..=13).map(|i| entry(i, 3, "c")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        install(&mut s, meta(12, 3, "twelve"), "twelve", true);
    }
    let (_, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
    assert_eq!(rec.snapshot.unwrap().meta.last_index, 12);
    assert_eq!(rec.entries, vec![entry(13, 3, "c")]);
}

#[test]
fn an_install_interrupted_before_the_log_was_discarded_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        let entries: Vec<Entry> = (1..=6).map(|i| entry(i, 1, "a")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        // A leader of term 2 sends a snapshot.
        let term2 = HardState {
            term: 2,
            ..HardState::default()
        };
        s.persist(
            &Ready {
                hard_state: Some(term2),
                ..Ready::default()
            },
            true,
        )
        .unwrap();
    }
    // The snapshot became current (index 5 of term 2, which our entry
    // 5 of term 1 contradicts), then the crash: the log is still there.
    let bytes = "state";
    let mut file = snapshot_file::header_line(&meta(5, 2, bytes), None);
    file.extend_from_slice(bytes.as_bytes());
    std::fs::write(dir.path().join(SNAPSHOT_FILE), file).unwrap();
    std::fs::write(dir.path().join("snapshot.tmp"), "half written").unwrap();
    let (_, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
    assert!(rec.entries.is_empty(), "entry 6 followed another entry 5");
    assert!(rec.discarded_log.is_some());
    assert_eq!(segment_names(dir.path()), [segment_name(6)]);
    assert!(
        !dir.path().join("snapshot.tmp").exists(),
        "leftover removed"
    );
}

/// Entries 1 to 7 and a snapshot up to 5, whose state's last byte is
/// then flipped; the snapshot file's path and damaged bytes.
fn damaged_snapshot(dir: &Path) -> (PathBuf, Vec<u8>) {
    {
        let (mut s, _) = Storage::open(dir, &options(small_segments())).unwrap();
        let entries: Vec<Entry> = (1..=7).map(|i| entry(i, 1, "a")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        own_snapshot(&mut s, 5, 1, "some state");
    }
    let path = dir.join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = snapshot_file::HEADER_LEN as usize + "some state".len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[test]
fn a_damaged_snapshot_stops_the_node_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut bytes) = damaged_snapshot(dir.path());
    let msg = Storage::open(dir.path(), &options(small_segments()))
        .err()
        .expect("must refuse")
        .to_string();
    assert!(
        msg.contains(SNAPSHOT_FILE) && msg.contains("byte offset 128") && msg.contains("CRC"),
        "{msg}"
    );
    bytes.truncate(snapshot_file::HEADER_LEN as usize + 3);
    std::fs::write(&path, &bytes).unwrap();
    let msg = Storage::open(dir.path(), &options(small_segments()))
        .err()
        .expect("must refuse a short one too")
        .to_string();
    assert!(msg.contains("bytes of state follow"), "{msg}");
}

#[test]
fn a_damaged_snapshot_is_set_aside_and_the_loss_reported_when_healing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = damaged_snapshot(dir.path());
    let opts = StorageOptions {
        heal: true,
        ..options(small_segments())
    };
    let (_, rec) = Storage::open(dir.path(), &opts).unwrap();
    assert!(rec.snapshot.is_none() && rec.entries.is_empty());
    let loss = rec.loss.unwrap();
    assert_eq!(loss.through, 7, "{}", loss.what);
    assert!(loss.what.contains("CRC"), "{}", loss.what);
    assert!(!path.exists());
    assert!(dir.path().join("snapshot.jsonl.damaged").exists());
    assert_eq!(rec.hard_state.lost_through, 7);
}

#[test]
fn a_segment_missing_from_the_middle_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        let entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1, "a")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        let entries: Vec<Entry> = (4..=6).map(|i| entry(i, 1, "a")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        let entries: Vec<Entry> = (7..=7).map(|i| entry(i, 1, "a")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
    }
    std::fs::remove_file(dir.path().join(segment_name(4))).unwrap();
    let msg = Storage::open(dir.path(), &options(small_segments()))
        .err()
        .expect("entries 4..6 are gone")
        .to_string();
    assert!(msg.contains(&segment_name(7)), "{msg}");
}

fn three_members() -> Membership {
    Membership::bootstrap((0..3).map(|id| (id, format!("localhost:500{id}"))))
}

#[test]
fn a_snapshot_keeps_the_membership_in_force_at_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let changed = three_members()
        .apply(&crate::consensus::membership::Change::AddLearner {
            id: 3,
            address: "localhost:5003".into(),
        })
        .unwrap();
    {
        let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1, "a")).collect();
        s.persist(&ready_appending(entries), true).unwrap();
        let mut w = SnapshotWriter::create(s.dir(), 5, 1).unwrap();
        w.write_all(b"some state").unwrap();
        s.install_own(w.finish(&changed).unwrap(), 5).unwrap();
        assert_eq!(s.snapshot().unwrap().membership.as_ref(), Some(&changed));
    }
    let (_, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
    let file = rec.snapshot.unwrap();
    assert_eq!(file.membership.as_ref(), Some(&changed), "read back");
    let mut state = String::new();
    std::io::Read::read_to_string(&mut file.body(), &mut state).unwrap();
    assert_eq!(state, "some state", "the tail is not part of the state");

    // A flipped byte in the tail is damage, named with its offset.
    let path = dir.path().join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let tail_at = snapshot_file::HEADER_LEN as usize + "some state".len();
    bytes[tail_at + 10] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let msg = Storage::open(dir.path(), &options(small_segments()))
        .err()
        .expect("must refuse")
        .to_string();
    assert!(
        msg.contains(&format!("byte offset {tail_at}")) && msg.contains("membership's CRC"),
        "{msg}"
    );
}

#[test]
fn a_snapshot_written_before_memberships_reads_with_none() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = Storage::open(dir.path(), &options(small_segments())).unwrap();
        let hs = HardState {
            term: 2,
            ..HardState::default()
        };
        let ready = Ready {
            hard_state: Some(hs),
            ..Ready::default()
        };
        s.persist(&ready, true).unwrap();
    }
    let bytes = "state";
    let mut file = snapshot_file::header_line(&meta(5, 2, bytes), None);
    file.extend_from_slice(bytes.as_bytes());
    std::fs::write(dir.path().join(SNAPSHOT_FILE), &file).unwrap();
    let (_, rec) = Storage::open(dir.path(), &options(small_segments())).unwrap();
    assert_eq!(rec.snapshot.unwrap().membership, None);
    // Bytes after the state with no tail named in the header: damage.
    file.extend_from_slice(b"junk");
    std::fs::write(dir.path().join(SNAPSHOT_FILE), &file).unwrap();
    let msg = Storage::open(dir.path(), &options(small_segments()))
        .err()
        .expect("must refuse")
        .to_string();
    assert!(msg.contains("names no tail"), "{msg}");
}

#[test]
fn the_longest_header_fits_its_line() {
    // Terms and indexes beyond these are refused before they reach a
    // file (`consensus::validate`); sizes are not bounded.
    let meta = SnapshotMeta {
        last_index: crate::consensus::validate::MAX_INDEX,
        last_term: crate::consensus::validate::MAX_TERM,
        size: u64::MAX,
        crc32: u32::MAX,
    };
    let line = snapshot_file::header_line(&meta, Some(u32::MAX));
    assert_eq!(line.len() as u64, snapshot_file::HEADER_LEN);
}
