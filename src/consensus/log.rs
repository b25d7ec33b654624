//! The in-memory copy of the replicated log.
//!
//! Indices start at 1. `term_at(0)` is 0, which makes the consistency check
//! for the very first entry (prev_log_index 0, prev_log_term 0) succeed
//! without a special case.

use super::message::{Entry, Index, Term};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    /// `entries[k]` has index `k + 1`: the storage module and `append`
    /// reject anything else, so lookups are plain arithmetic.
    entries: Vec<Entry>,
}

impl Log {
    /// Builds a log from recovered entries.
    ///
    /// # Panics
    /// If the indices are not 1, 2, 3, … (the storage module checks this
    /// before it hands entries over, so a panic here is a bug).
    pub fn from_entries(entries: Vec<Entry>) -> Log {
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                k as Index + 1,
                "log entries must be contiguous from 1"
            );
        }
        Log { entries }
    }

    pub fn last_index(&self) -> Index {
        self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |e| e.term)
    }

    /// The term of the entry at `index`; 0 for index 0; `None` past the end.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index == 0 {
            return None;
        }
        self.entries.get(index as usize - 1)
    }

    /// Entries `from..=to`, clamped to what exists.
    pub fn slice(&self, from: Index, to: Index) -> &[Entry] {
        let from = from.max(1);
        let to = to.min(self.last_index());
        if from > to {
            return &[];
        }
        &self.entries[from as usize - 1..to as usize]
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

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The first index holding `term`, searching back from `index`, whose
    /// entry must have that term. Used for the conflict hint.
    pub fn first_index_of_term_ending_at(&self, index: Index) -> Index {
        let term = self.term_at(index).expect("index within log");
        let mut first = index;
        while first > 1 && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index holding `term`, if the log has any such entry.
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
        None
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

    /// Drops every entry at `index` and after.
    pub fn truncate_from(&mut self, index: Index) {
        assert!(index >= 1);
        self.entries.truncate(index as usize - 1);
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
