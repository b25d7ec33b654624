//! The change feed: the keys each applied command changed, kept for the
//! last [`FEED_CAPACITY`] changes, in log order, for watchers (`raftctl
//! watch KEY`, the `watch` request). A watcher reads from a log index
//! on; an index older than the feed holds (or from before the store was
//! last replaced by a snapshot) is answered with where the feed starts, so
//! that the watcher can read the keys afresh and resume from there.
//!
//! Written by the applier alone, after each batch; read by watchers'
//! streams, which wait on its condvar. Its lock is never held with the
//! node's or the store's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::KeyChange;
use crate::consensus::Index;

/// Changes kept, oldest dropped first.
pub const FEED_CAPACITY: usize = 100_000;
/// Bytes of keys and values kept, oldest dropped first: values run to
/// 1 MiB, and a hundred thousand of those must not be held.
pub const FEED_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Held {
    /// (log index, change), in log order.
    changes: VecDeque<(Index, KeyChange)>,
    /// The feed knows every change from this index on (after a snapshot
    /// replaced the store, or changes were dropped, it is later than 1).
    complete_from: Index,
    /// The last index applied.
    applied: Index,
    /// Bytes of keys and values in `changes`.
    bytes: usize,
}

fn size(c: &KeyChange) -> usize {
    c.key.len() + c.value.as_ref().map_or(0, String::len)
}

/// See the module docs.
#[derive(Default)]
pub struct ChangeFeed {
    held: Mutex<Held>,
    grew: Condvar,
}

/// A watcher asked for changes the feed no longer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone {
    /// The first index it can answer from.
    pub complete_from: Index,
}

impl ChangeFeed {
    pub fn new(applied: Index) -> ChangeFeed {
        ChangeFeed {
            held: Mutex::new(Held {
                changes: VecDeque::new(),
                complete_from: applied + 1,
                applied,
                bytes: 0,
            }),
            grew: Condvar::new(),
        }
    }

    /// Entries up to `applied` are applied; `changes` are theirs.
    pub fn publish(&self, changes: Vec<(Index, KeyChange)>, applied: Index) {
        let mut held = self.held.lock();
        held.bytes += changes.iter().map(|(_, c)| size(c)).sum::<usize>();
        held.changes.extend(changes);
        while held.changes.len() > FEED_CAPACITY || held.bytes > FEED_BYTES {
            let (index, dropped) = held.changes.pop_front().expect("over capacity");
            held.bytes -= size(&dropped);
            held.complete_from = held.complete_from.max(index + 1);
        }
        held.applied = applied;
        self.grew.notify_all();
    }

    /// The store was replaced by a snapshot up to `index`: what changed
    /// before it is not known key by key.
    pub fn reset(&self, index: Index) {
        let mut held = self.held.lock();
        held.changes.clear();
        held.bytes = 0;
        held.complete_from = index + 1;
        held.applied = index;
        self.grew.notify_all();
    }

    /// The changes at `from` and after whose key `wanted` accepts, at
    /// most `max`, waiting up to `wait` for one; and the last index
    /// applied (a watcher is up to date through it).
    pub fn since(
        &self,
        from: Index,
        wanted: impl Fn(&str) -> bool,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<(Index, KeyChange)>, Index), Gone> {
        let deadline = Instant::now() + wait;
        let mut held = self.held.lock();
        loop {
            if from < held.complete_from {
                return Err(Gone {
                    complete_from: held.complete_from,
                });
            }
            let start = held.changes.partition_point(|(i, _)| *i < from);
            let found: Vec<(Index, KeyChange)> = held
                .changes
                .range(start..)
                .filter(|(_, c)| wanted(&c.key))
                .take(max)
                .cloned()
                .collect();
            if !found.is_empty() || self.grew.wait_until(&mut held, deadline).timed_out() {
                let applied = held.applied;
                return Ok((found, applied));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, value: Option<&str>) -> KeyChange {
        KeyChange {
            key: key.into(),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn a_watcher_reads_from_an_index_on_and_is_told_when_it_is_gone() {
        let feed = ChangeFeed::new(0);
        feed.publish(
            vec![(1, change("a", Some("1"))), (2, change("b", Some("2")))],
            2,
        );
        feed.publish(vec![(4, change("a", None))], 4);
        let only_a = |k: &str| k == "a";
        let (got, applied) = feed.since(1, only_a, 10, Duration::ZERO).unwrap();
        assert_eq!(
            got,
            vec![(1, change("a", Some("1"))), (4, change("a", None))]
        );
        assert_eq!(applied, 4);
        let (got, _) = feed.since(3, |_| true, 10, Duration::ZERO).unwrap();
        assert_eq!(got, vec![(4, change("a", None))]);
        let (got, applied) = feed
            .since(5, |_| true, 10, Duration::from_millis(1))
            .unwrap();
        assert!(got.is_empty());
        assert_eq!(applied, 4);
        feed.reset(10);
        assert_eq!(
            feed.since(4, |_| true, 10, Duration::ZERO),
            Err(Gone { complete_from: 11 })
        );
    }

    #[test]
    fn large_values_are_dropped_by_bytes_before_the_count_is_reached() {
        let feed = ChangeFeed::new(0);
        let big = "v".repeat(1 << 20);
        for i in 1..=100u64 {
            feed.publish(vec![(i, change("k", Some(&big)))], i);
        }
        // 64 MiB hold 63 of them (with their keys): the oldest went.
        let gone = feed.since(1, |_| true, 1, Duration::ZERO).unwrap_err();
        assert_eq!(gone.complete_from, 38);
        let (kept, _) = feed
            .since(38, |_| true, usize::MAX, Duration::ZERO)
            .unwrap();
        assert_eq!(kept.len(), 63);
    }
}
