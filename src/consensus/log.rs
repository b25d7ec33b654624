//! The in-memory copy of the replicated log.
//!
//! Indices start at 1. Once a snapshot covers a prefix (§7), the log
//! starts at or before its end: it remembers only the index and term of
//! the last entry it dropped (its *base*), and holds the entries after
//! it. `term_at(base)` is the base term; below the base nothing is known.
//! Without a snapshot the base is (0, 0), which makes the consistency
//! check for the very first entry (prev_log_index 0, prev_log_term 0)
//! succeed without a special case.
//!
//! Every lookup goes through these methods: no code outside this file
//! turns an index into a position.

use super::message::{Entry, Index, Term};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    /// The last index and term a snapshot covers; (0, 0) without one.
    base_index: Index,
    base_term: Term,
    /// `entries[k]` has index `base_index + 1 + k`: the storage module
    /// and `append` reject anything else, so lookups are arithmetic.
    entries: Vec<Entry>,
}

impl Log {
    /// Builds a log from recovered entries, starting at index 1.
    pub fn from_entries(entries: Vec<Entry>) -> Log {
        Log::after(0, 0, entries)
    }

    /// Builds a log whose first `base_index` entries are covered by a
    /// snapshot whose last entry has `base_term`, followed by `entries`.
    ///
    /// # Panics
    /// If the indices are not `base_index + 1`, `+ 2`, … or the terms
    /// decrease (the storage module checks this before it hands entries
    /// over, so a panic here is a bug).
    pub fn after(base_index: Index, base_term: Term, entries: Vec<Entry>) -> Log {
        let mut before = base_term;
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                base_index + 1 + k as Index,
                "log entries must be contiguous from the snapshot"
            );
            assert!(e.term >= before, "terms never decrease along a log");
            before = e.term;
        }
        Log {
            base_index,
            base_term,
            entries,
        }
    }

    /// The last index a snapshot covers (0 without one).
    pub fn base_index(&self) -> Index {
        self.base_index
    }

    /// The term of the entry at [`Log::base_index`].
    pub fn base_term(&self) -> Term {
        self.base_term
    }

    /// The first index held as an entry (one past the base).
    pub fn first_index(&self) -> Index {
        self.base_index + 1
    }

    pub fn last_index(&self) -> Index {
        self.base_index + self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base_term, |e| e.term)
    }

    /// Whether `index` is below the base: covered by the snapshot, its term
    /// no longer known.
    pub fn is_compacted(&self, index: Index) -> bool {
        index < self.base_index
    }

    /// The term of the entry at `index`: the base term at the base; `None`
    /// below it (compacted) or past the end.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, if held (not compacted, not past the end).
    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.base_index {
            return None;
        }
        self.entries.get((index - self.base_index - 1) as usize)
    }

    /// Entries `from..=to`, clamped to what is held.
    pub fn slice(&self, from: Index, to: Index) -> &[Entry] {
        let from = from.max(self.first_index());
        let to = to.min(self.last_index());
        if from > to {
            return &[];
        }
        let at = |i: Index| (i - self.base_index - 1) as usize;
        &self.entries[at(from)..=at(to)]
    }

    /// Entries `from..=to` (clamped), cut short once they hold about
    /// `max_bytes` (by [`Entry::approx_size`]), but never fewer than one
    /// when any exist, so a caller paging through the log always advances.
    pub fn slice_bounded(&self, from: Index, to: Index, max_bytes: usize) -> &[Entry] {
        let all = self.slice(from, to);
        let mut bytes = 0;
        let fit = all
            .iter()
            .take_while(|e| {
                bytes += e.approx_size();
                bytes <= max_bytes
            })
            .count();
        &all[..fit.max(1).min(all.len())]
    }

    /// What an AppendEntries starting at `next` would carry under `cfg`'s
    /// limits: nothing, everything left ([`Batch::Partial`]), or a batch
    /// cut short by a limit with more behind it ([`Batch::Full`]).
    pub fn batch_from(&self, next: Index, cfg: &super::Config) -> super::Batch {
        let last = self.last_index();
        if next > last {
            return super::Batch::Empty;
        }
        let unsent = (last - next + 1) as usize;
        if unsent > cfg.max_entries_per_append
            || self
                .slice_bounded(next, last, cfg.max_bytes_per_append)
                .len()
                < unsent
        {
            super::Batch::Full
        } else {
            super::Batch::Partial
        }
    }

    /// The entries held, from [`Log::first_index`] on.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The first index holding `term`, searching back from `index`, whose
    /// entry must have that term; no further back than the first entry
    /// held. Used for the conflict hint.
    pub fn first_index_of_term_ending_at(&self, index: Index) -> Index {
        let term = self.term_at(index).expect("index within log");
        let mut first = index;
        while first > self.first_index() && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index holding `term`, if the log has any such entry (the
    /// base counts).
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        // Terms never decrease along a log, so scan back until below it.
        for e in self.entries.iter().rev() {
            if e.term == term {
                return Some(e.index);
            }
            if e.term < term {
                return None;
            }
        }
        (self.base_term == term && self.base_index > 0).then_some(self.base_index)
    }

    /// Appends one entry, which must be the next index.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "append out of order");
        assert!(
            entry.term >= self.last_term(),
            "terms never decrease along a log"
        );
        self.entries.push(entry);
    }

    /// Drops every entry at `index` and after. Never reaches into what a
    /// snapshot covers: that is committed.
    pub fn truncate_from(&mut self, index: Index) {
        assert!(index > self.base_index, "truncating into the snapshot");
        self.entries
            .truncate((index - self.base_index - 1) as usize);
    }

    /// A snapshot now covers everything up to `index`, which this log
    /// holds (or is its base): drops the entries up to it and keeps those
    /// after it (§7; Figure 13, InstallSnapshot rule 6).
    pub fn compact_to(&mut self, index: Index) {
        if index <= self.base_index {
            return;
        }
        let term = self.term_at(index).expect("compacting to an entry held");
        self.entries.drain(..(index - self.base_index) as usize);
        self.base_index = index;
        self.base_term = term;
    }

    /// Replaces the whole log by a snapshot ending at (`index`, `term`),
    /// with no entries after it (Figure 13, InstallSnapshot rule 7).
    pub fn reset_to(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.base_index = index;
        self.base_term = term;
    }

    /// §5.4.1: is a log ending at (`last_term`, `last_index`) at least as
    /// up-to-date as this one? Later last term wins; same last term, the
    /// longer log wins.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::message::Payload;

    fn log_of(terms: &[Term]) -> Log {
        Log::from_entries(
            terms
                .iter()
                .enumerate()
                .map(|(k, &term)| Entry {
                    index: k as Index + 1,
                    term,
                    payload: Payload::Noop,
                })
                .collect(),
        )
    }

    #[test]
    fn term_lookup_and_bounds() {
        let log = log_of(&[1, 1, 2]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(4), None);
        assert_eq!(log.slice(2, 10).len(), 2);
        assert!(log.slice(4, 10).is_empty());
    }

    #[test]
    fn a_compacted_log_knows_its_base_and_nothing_below() {
        let mut log = log_of(&[1, 1, 2, 2, 3]);
        log.compact_to(3);
        assert_eq!((log.base_index(), log.base_term()), (3, 2));
        assert_eq!((log.first_index(), log.last_index()), (4, 5));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(2), None);
        assert!(log.is_compacted(2) && !log.is_compacted(3));
        assert_eq!(log.get(3), None);
        assert_eq!(log.get(4).unwrap().index, 4);
        assert_eq!(log.slice(1, 9).len(), 2);
        assert_eq!(log.first_index_of_term_ending_at(4), 4);
        assert_eq!(log.last_index_of_term(2), Some(4));
        assert_eq!(log.last_index_of_term(1), None);
        log.compact_to(2); // already covered: nothing changes
        assert_eq!(log.base_index(), 3);
        log.truncate_from(5);
        assert_eq!(log.last_index(), 4);
        log.compact_to(4);
        assert_eq!((log.last_index(), log.last_term()), (4, 2));
        assert!(log.entries().is_empty());
        log.reset_to(9, 4);
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (10, 9, 4)
        );
        log.append(Entry {
            index: 10,
            term: 4,
            payload: Payload::Noop,
        });
        assert_eq!(log.last_index(), 10);
    }

    #[test]
    fn conflict_hint_helpers() {
        let log = log_of(&[1, 1, 3, 3, 3, 5]);
        assert_eq!(log.first_index_of_term_ending_at(5), 3);
        assert_eq!(log.first_index_of_term_ending_at(2), 1);
        assert_eq!(log.last_index_of_term(3), Some(5));
        assert_eq!(log.last_index_of_term(2), None);
        assert_eq!(log.last_index_of_term(9), None);
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        // §5.4.1
        let log = log_of(&[1, 2, 2]);
        assert!(
            log.is_up_to_date(1, 3),
            "higher last term wins even if shorter"
        );
        assert!(log.is_up_to_date(3, 2), "same term, same length");
        assert!(!log.is_up_to_date(2, 2), "same term, shorter");
        assert!(
            !log.is_up_to_date(9, 1),
            "lower last term loses even if longer"
        );
    }
}
