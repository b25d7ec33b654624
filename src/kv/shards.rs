//! The key-value map, copy-on-write so that a snapshot costs a short copy.
//!
//! Keys are spread by a hash over [`SHARDS`] ordered maps, each behind an
//! `Arc`. Cloning the whole map copies the shard pointers, not the keys:
//! at a million keys that is a few microseconds instead of half a second
//! (measured: `BTreeMap<String, String>::clone` of a million 100-byte
//! values took 549 ms on a 2-core machine). A write after a clone copies
//! the one shard it touches, once (`Arc::make_mut`), so the cost of the
//! copy is spread over the writes that follow, a few hundred keys at a
//! time, instead of blocking every write for its whole duration.
//!
//! Iteration goes shard by shard, each in key order: the shard of a key is
//! a fixed hash of it, so equal maps iterate alike and the snapshot of a
//! map is the same bytes whatever its history. (Merging the shards into
//! one key order costs a heap operation per key: at a million keys it
//! made writing a snapshot several times slower.)

use std::collections::BTreeMap;
use std::sync::Arc;

/// How many shards: a clone copies this many pointers; a write after a
/// clone copies about `len / SHARDS` keys.
pub const SHARDS: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardedMap {
    shards: Vec<Arc<BTreeMap<String, String>>>,
    len: usize,
}

impl Default for ShardedMap {
    fn default() -> Self {
        // Every shard starts as the same empty map: one allocation, and
        // the first write to a shard gives it its own (`make_mut`).
        let empty = Arc::new(BTreeMap::new());
        ShardedMap {
            shards: (0..SHARDS).map(|_| empty.clone()).collect(),
            len: 0,
        }
    }
}

/// FNV-1a: the same shard for a key in every process and every build, so
/// that nothing about a map depends on where it was built.
fn shard_of(key: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

impl ShardedMap {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.shards[shard_of(key)].get(key)
    }

    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        let shard = Arc::make_mut(&mut self.shards[shard_of(&key)]);
        let old = shard.insert(key, value);
        self.len += usize::from(old.is_none());
        old
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = shard_of(key);
        if !self.shards[i].contains_key(key) {
            return None; // no copy of a shared shard for nothing
        }
        let old = Arc::make_mut(&mut self.shards[i]).remove(key);
        self.len -= usize::from(old.is_some());
        old
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut String> {
        let i = shard_of(key);
        if !self.shards[i].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[i]).get_mut(key)
    }

    /// The first `limit` keys (with their values) in key order that are
    /// at least `from` and, with `to`, below it, and that start with
    /// `prefix`; and whether more follow. Each shard gives at most `limit`
    /// (it is ordered), then the shards' answers are merged: a range read
    /// costs a lookup per shard, not a pass over the map.
    pub fn range(
        &self,
        from: &str,
        to: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> (Vec<(&String, &String)>, bool) {
        let mut found: Vec<(&String, &String)> = Vec::new();
        for shard in &self.shards {
            let within = shard
                .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix) && to.is_none_or(|to| k.as_str() < to))
                .take(limit.saturating_add(1));
            found.extend(within);
        }
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let more = found.len() > limit;
        found.truncate(limit);
        (found, more)
    }

    /// Every (key, value): shard by shard, in key order within each.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_in_key_order_across_shards_and_says_whether_more_follow() {
        let mut m = ShardedMap::default();
        for i in 0..300 {
            m.insert(format!("k{i:03}"), i.to_string());
            m.insert(format!("other{i}"), "x".into());
        }
        let keys = |(found, more): (Vec<(&String, &String)>, bool)| {
            let keys: Vec<String> = found.iter().map(|(k, _)| k.to_string()).collect();
            (keys, more)
        };
        let (some, more) = keys(m.range("k", None, "k", 5));
        assert_eq!(some, ["k000", "k001", "k002", "k003", "k004"]);
        assert!(more);
        let (between, more) = keys(m.range("k100", Some("k103"), "", 10));
        assert_eq!(between, ["k100", "k101", "k102"]);
        assert!(!more);
        let (all, more) = keys(m.range("k", None, "k", 1000));
        assert_eq!(all.len(), 300);
        assert!(!more && all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(m.range("z", None, "", 10).0.len(), 0);
    }

    #[test]
    fn behaves_as_one_ordered_map_and_a_clone_is_independent() {
        let mut m = ShardedMap::default();
        let mut reference = BTreeMap::new();
        for i in 0..5000u32 {
            let key = format!("k{}", i.wrapping_mul(2_654_435_761) % 3000);
            assert_eq!(
                m.insert(key.clone(), i.to_string()),
                reference.insert(key, i.to_string())
            );
        }
        for i in (0..3000).step_by(7) {
            let key = format!("k{i}");
            assert_eq!(m.remove(&key), reference.remove(&key));
        }
        assert_eq!(m.len(), reference.len());
        let mut all: Vec<_> = m.iter().collect();
        all.sort();
        let expected: Vec<_> = reference.iter().collect();
        assert_eq!(all, expected);
        let copy = m.clone();
        *m.get_mut("k1").unwrap() = "changed".into();
        m.insert("new".into(), "x".into());
        assert_eq!(copy.get("k1"), reference.get("k1"));
        assert_eq!(copy.get("new"), None);
        assert_eq!(copy.len(), reference.len());
        assert_eq!(m.get("k1").map(String::as_str), Some("changed"));
    }
}
