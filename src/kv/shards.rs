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

    /// Every (key, value): shard by shard, in key order within each.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
