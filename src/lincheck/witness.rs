//! The smallest part of a non-linearizable history that shows it.
//!
//! A checker that says "key k is not linearizable" about 20,000
//! operations leaves the user to find the bug. [`explain`] cuts the
//! history down to a handful of operations that have no linearization on
//! their own, and says which classic shape they have.
//!
//! **Why a part proves anything about the whole.** Dropping operations
//! can *create* anomalies: drop the write a read saw and the read looks
//! impossible. So a part `S` is only taken as evidence when it is
//! *closed*: every operation in `S` that observed a value has every write
//! of that value in `S` (a read of "no such key": every delete of the
//! key). Then, if the whole history had a linearization `L`, `L`
//! restricted to `S` would be one for `S`: real-time order survives
//! restriction, and the last write before an observer in `L` is one of
//! its value's writes, all of which are in `S`, so it is still the last
//! write before it among `S`. Operations of `S` whose own observation
//! is not closed are weakened, which only makes `S` easier to linearize:
//! a compare-and-set whose expected value's writes are not all in `S`
//! becomes a plain write (one that happened if it succeeded, one that
//! may have if its outcome is unknown); a delete that found the key
//! forgets that it did unless every write is in `S` (one that did not
//! find it, unless every delete is). A closed, weakened `S` with no linearization therefore
//! proves the whole history has none.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::{Budget, KvOp, Operation, by_key, check_key};

/// A few operations that, alone, have no linearization, and whose having
/// none proves the whole history has none (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Story {
    /// Indices into the history, in the order of their calls.
    pub ops: Vec<usize>,
    pub shape: Shape,
}

/// The classic shapes of an anomaly, as indices into the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `read` returned the value `writer` wrote, although `later` wrote
    /// another value and was acknowledged before `read` began, and began
    /// after `writer` was acknowledged.
    StaleRead {
        read: usize,
        writer: usize,
        later: usize,
    },
    /// `read` found no value although `write` was acknowledged before it
    /// began, and no delete could have come between them.
    LostWrite { read: usize, write: usize },
    /// `read` returned a value no operation wrote.
    NeverWritten { read: usize },
    /// `read` returned a value that, once `later` was acknowledged
    /// (before `read` began), no legal order of the other operations
    /// leaves in place: a stale read whose order is forced by results
    /// (a compare-and-set that swapped, a delete that found the key)
    /// rather than by time alone.
    Overwritten { read: usize, later: usize },
    /// None of the above: the operations of [`Story::ops`] together.
    Other,
}

/// A small closed part of `key`'s operations in `history` with no
/// linearization, if one is found within `budget` (each trial gets a
/// share of it). Expects `key`'s history to be non-linearizable.
pub fn explain(history: &[Operation], key: &str, budget: &Budget) -> Option<Story> {
    let index = by_key(history).remove(key)?;
    let ops: Vec<Operation> = index.iter().map(|&i| history[i].clone()).collect();
    let part = Parts::new(&ops);
    let trial = Budget {
        time: (budget.time / 20).max(Duration::from_millis(200)),
        memory_bytes: budget.memory_bytes,
    };
    let deadline = std::time::Instant::now() + budget.time;
    let fails = |s: &BTreeSet<usize>| {
        std::time::Instant::now() < deadline && check_key(&part.weakened(s), &trial) == Some(false)
    };
    // By call time, as the history was recorded.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].call, i));
    let all: BTreeSet<usize> = order.iter().copied().collect();
    if !fails(&all) {
        return None;
    }
    // The shortest prefix (by call) that fails, then the latest start.
    // Neither is monotone in general, so each step keeps only a part
    // seen failing.
    let window = |from: usize, to: usize| part.closed(order[from..to].iter().copied().collect());
    let (mut lo, mut hi) = (1, order.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&window(0, mid)) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let end = hi;
    let (mut lo, mut hi) = (0, end - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fails(&window(mid, end)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut s = window(lo, end);
    if !fails(&s) {
        s = window(0, end);
        if !fails(&s) {
            s = all;
        }
    }
    // Then drop one operation at a time while the rest still fails, the
    // latest first, until nothing more can go.
    if s.len() <= 400 {
        loop {
            let before = s.len();
            let candidates: Vec<usize> = s.iter().rev().copied().collect();
            for i in candidates {
                if !s.contains(&i) {
                    continue;
                }
                let mut smaller = s.clone();
                smaller.remove(&i);
                let smaller = part.closed(smaller);
                if fails(&smaller) {
                    s = smaller;
                }
            }
            if s.len() == before {
                break;
            }
        }
    }
    let mut chosen: Vec<usize> = s.into_iter().collect();
    chosen.sort_by_key(|&i| (ops[i].call, i));
    let shape = shape_of(&ops, &chosen);
    Some(Story {
        ops: chosen.iter().map(|&i| index[i]).collect(),
        shape: shape.map(|i| index[i]),
    })
}

impl Shape {
    /// The same shape with each index replaced by `f(index)` (from a
    /// part of a history to the whole).
    pub fn map(&self, f: impl Fn(usize) -> usize) -> Shape {
        match *self {
            Shape::StaleRead {
                read,
                writer,
                later,
            } => Shape::StaleRead {
                read: f(read),
                writer: f(writer),
                later: f(later),
            },
            Shape::LostWrite { read, write } => Shape::LostWrite {
                read: f(read),
                write: f(write),
            },
            Shape::NeverWritten { read } => Shape::NeverWritten { read: f(read) },
            Shape::Overwritten { read, later } => Shape::Overwritten {
                read: f(read),
                later: f(later),
            },
            Shape::Other => Shape::Other,
        }
    }
}

/// The value an operation leaves when it takes effect, if it writes one.
fn written(op: &Operation) -> Option<&str> {
    match &op.op {
        KvOp::Put { value } => Some(value),
        KvOp::Cas { to, result, .. } if !matches!(result, Some(Err(_))) || op.ret.is_none() => {
            Some(to)
        }
        _ => None,
    }
}

/// What an operation's answer (or, for a compare-and-set, its taking
/// effect) depends on.
enum Observed<'a> {
    /// The value was this.
    Value(&'a str),
    /// The key had no value.
    Absent,
    /// The key had some value (a delete that found it).
    Present,
}

fn observed(op: &Operation) -> Option<Observed<'_>> {
    let known = op.ret.is_some();
    match &op.op {
        KvOp::Get { value } if known => {
            Some(value.as_deref().map_or(Observed::Absent, Observed::Value))
        }
        KvOp::Cas {
            result: Some(Err(actual)),
            ..
        } if known => Some(actual.as_deref().map_or(Observed::Absent, Observed::Value)),
        KvOp::Cas { from, .. } => Some(Observed::Value(from)),
        KvOp::Delete {
            existed: Some(existed),
        } if known => Some(if *existed {
            Observed::Present
        } else {
            Observed::Absent
        }),
        _ => None,
    }
}

/// One key's operations, with who wrote each value.
struct Parts<'a> {
    ops: &'a [Operation],
    writers: HashMap<&'a str, Vec<usize>>,
    deletes: Vec<usize>,
}

impl<'a> Parts<'a> {
    fn new(ops: &'a [Operation]) -> Parts<'a> {
        let mut writers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut deletes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if let Some(v) = written(op) {
                writers.entry(v).or_default().push(i);
            }
            if matches!(op.op, KvOp::Delete { .. }) {
                deletes.push(i);
            }
        }
        Parts {
            ops,
            writers,
            deletes,
        }
    }

    /// Whether every write that could have given `op` what it observed
    /// is in `s`.
    fn observation_closed(&self, op: &Operation, s: &BTreeSet<usize>) -> bool {
        let all_in = |ops: &[usize]| ops.iter().all(|i| s.contains(i));
        match observed(op) {
            None => true,
            Some(Observed::Value(v)) => self.writers.get(v).is_none_or(|w| all_in(w)),
            Some(Observed::Absent) => all_in(&self.deletes),
            Some(Observed::Present) => self.writers.values().all(|w| all_in(w)),
        }
    }

    /// Whether `op` only observes: a read, or a compare-and-set known to
    /// have failed.
    fn pure_observer(op: &Operation) -> bool {
        written(op).is_none() && !matches!(op.op, KvOp::Delete { .. })
    }

    /// `s` without the pure observers whose observation is not closed in
    /// it. Others stay: [`Parts::weakened`] weakens them.
    fn closed(&self, mut s: BTreeSet<usize>) -> BTreeSet<usize> {
        // Dropping pure observers removes no write, so one pass is enough.
        let drop: Vec<usize> = s
            .iter()
            .copied()
            .filter(|&i| {
                let op = &self.ops[i];
                Self::pure_observer(op) && !self.observation_closed(op, &s)
            })
            .collect();
        for i in drop {
            s.remove(&i);
        }
        s
    }

    /// The operations of `s`, each weakened where its observation is not
    /// closed in `s` (see the module docs).
    fn weakened(&self, s: &BTreeSet<usize>) -> Vec<Operation> {
        s.iter()
            .map(|&i| {
                let mut op = self.ops[i].clone();
                if !self.observation_closed(&op, s) {
                    op.op = match op.op {
                        KvOp::Delete { .. } => KvOp::Delete { existed: None },
                        // Known to have swapped, or unknown: a write that
                        // happened, or may have.
                        KvOp::Cas { to, .. } => KvOp::Put { value: to },
                        other => other,
                    };
                }
                op
            })
            .collect()
    }
}

/// Which classic shape the chosen operations (indices into `ops`) have.
fn shape_of(ops: &[Operation], chosen: &[usize]) -> Shape {
    let done_before = |a: &Operation, b: &Operation| a.ret.is_some_and(|r| r < b.call);
    for &r in chosen {
        let read = &ops[r];
        let KvOp::Get { value } = &read.op else {
            continue;
        };
        match value {
            Some(v) => {
                let writers: Vec<usize> = chosen
                    .iter()
                    .copied()
                    .filter(|&w| written(&ops[w]) == Some(v.as_str()))
                    .collect();
                if writers.is_empty() && !ops.iter().any(|o| written(o) == Some(v.as_str())) {
                    return Shape::NeverWritten { read: r };
                }
                for &w in &writers {
                    let later = chosen.iter().copied().find(|&x| {
                        let changes = written(&ops[x]).is_some_and(|x| x != v)
                            || matches!(ops[x].op, KvOp::Delete { .. });
                        changes
                            && ops[x].ret.is_some()
                            && done_before(&ops[w], &ops[x])
                            && done_before(&ops[x], read)
                    });
                    if let Some(later) = later {
                        return Shape::StaleRead {
                            read: r,
                            writer: w,
                            later,
                        };
                    }
                }
            }
            None => {
                let write = chosen.iter().copied().find(|&w| {
                    written(&ops[w]).is_some()
                        && done_before(&ops[w], read)
                        && !chosen.iter().any(|&d| {
                            matches!(ops[d].op, KvOp::Delete { .. })
                                && !done_before(&ops[d], &ops[w])
                                && ops[d].call < read.ret.unwrap_or(u64::MAX)
                        })
                });
                if let Some(write) = write {
                    return Shape::LostWrite { read: r, write };
                }
            }
        }
    }
    // A read whose value no order of the others leaves in place once a
    // change acknowledged before the read began is done: put a read of
    // that value just after the change, in place of the real one, and
    // ask the checker. One check per (read, change) pair: only for a
    // part cut down to a story's size.
    if chosen.len() > 64 {
        return Shape::Other;
    }
    let budget = Budget {
        time: Duration::from_secs(1),
        ..Budget::default()
    };
    for &r in chosen {
        let KvOp::Get { value: Some(v) } = &ops[r].op else {
            continue;
        };
        for &x in chosen {
            let changes = written(&ops[x]).is_some_and(|w| w != v)
                || matches!(ops[x].op, KvOp::Delete { .. });
            if !changes || !done_before(&ops[x], &ops[r]) {
                continue;
            }
            let mut part: Vec<Operation> = chosen
                .iter()
                .filter(|&&i| i != r)
                .map(|&i| ops[i].clone())
                .collect();
            part.push(Operation {
                call: ops[x].ret.expect("done before") + 1,
                ..ops[r].clone()
            });
            if check_key(&part, &budget) == Some(false) {
                return Shape::Overwritten { read: r, later: x };
            }
        }
    }
    Shape::Other
}

#[cfg(test)]
mod tests {
    use super::super::{Verdict, check};
    use super::*;
    use proptest::prelude::*;

    fn op(key: &str, op: KvOp, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            key: key.into(),
            op,
            call,
            ret,
        }
    }
    fn put(v: &str, call: u64, ret: u64) -> Operation {
        op("k", KvOp::Put { value: v.into() }, call, Some(ret))
    }
    fn get(v: Option<&str>, call: u64, ret: u64) -> Operation {
        let value = v.map(str::to_string);
        op("k", KvOp::Get { value }, call, Some(ret))
    }
    fn del(call: u64, ret: u64) -> Operation {
        let existed = Some(true);
        op("k", KvOp::Delete { existed }, call, Some(ret))
    }
    fn story(h: &[Operation]) -> Story {
        explain(h, "k", &Budget::default()).expect("not linearizable")
    }

    /// A long sequential history of one key, with noise on another, into
    /// which an anomaly is put at `at`.
    fn long_history(at: usize, anomaly: impl Fn(u64) -> Vec<Operation>) -> Vec<Operation> {
        let mut h = Vec::new();
        let mut t = 0;
        for i in 0..1000 {
            if i == at {
                let ops = anomaly(t);
                t = ops.iter().filter_map(|o| o.ret).max().unwrap() + 1;
                h.extend(ops);
            }
            h.push(put(&format!("v{i}"), t, t + 3));
            h.push(get(Some(&format!("v{i}")), t + 4, t + 6));
            let noise = KvOp::Put {
                value: format!("n{i}"),
            };
            h.push(op("other", noise, t + 1, Some(t + 5)));
            t += 7;
        }
        h
    }

    #[test]
    fn a_stale_read_is_cut_down_to_the_three_operations_that_show_it() {
        let h = long_history(600, |t| {
            vec![
                put("a", t, t + 1),
                put("b", t + 2, t + 3),
                get(Some("a"), t + 4, t + 5),
            ]
        });
        let s = story(&h);
        let (a, b, read) = (1800, 1801, 1802);
        assert_eq!(s.ops, vec![a, b, read], "{:?}", s);
        assert_eq!(
            s.shape,
            Shape::StaleRead {
                read,
                writer: a,
                later: b
            }
        );
        // The part alone is not linearizable, as the story claims.
        let part: Vec<Operation> = s.ops.iter().map(|&i| h[i].clone()).collect();
        assert!(matches!(check(&part), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_lost_write_and_a_value_never_written_are_named() {
        let h = long_history(300, |t| vec![put("x", t, t + 1), get(None, t + 2, t + 3)]);
        let s = story(&h);
        assert_eq!(s.ops, vec![900, 901]);
        assert_eq!(
            s.shape,
            Shape::LostWrite {
                read: 901,
                write: 900
            }
        );
        let h = long_history(10, |t| vec![get(Some("ghost"), t, t + 1)]);
        let s = story(&h);
        assert_eq!(s.ops, vec![30]);
        assert_eq!(s.shape, Shape::NeverWritten { read: 30 });
    }

    #[test]
    fn the_write_a_read_saw_is_never_dropped_to_make_an_anomaly() {
        // Linearizable: the read saw "a", written concurrently. Dropping
        // that write would leave an impossible read; explain must not.
        let h = [put("a", 0, 10), get(Some("a"), 1, 2), del(11, 12)];
        assert_eq!(check(&h), Verdict::Linearizable);
        assert_eq!(explain(&h, "k", &Budget::default()), None);
        // A read of nothing needs every delete: here the one that makes
        // it possible.
        let h = [put("a", 0, 1), del(2, 10), get(None, 3, 4)];
        assert_eq!(check(&h), Verdict::Linearizable);
        assert_eq!(explain(&h, "k", &Budget::default()), None);
    }

    #[test]
    fn an_anomaly_through_compare_and_set_keeps_the_cas() {
        let cas = |from: &str, to: &str, c, r| {
            let (from, to) = (from.into(), to.into());
            let result = Some(Ok(()));
            op("k", KvOp::Cas { from, to, result }, c, Some(r))
        };
        // b is swapped in for a, then a read still sees a.
        let h = [
            put("z", 0, 1),
            put("a", 2, 3),
            cas("a", "b", 4, 5),
            get(Some("a"), 6, 7),
        ];
        let s = story(&h);
        assert_eq!(s.ops, vec![1, 2, 3]);
        assert!(matches!(s.shape, Shape::StaleRead { later: 2, .. }));
    }

    #[test]
    fn a_read_made_stale_by_results_rather_than_time_is_named_so() {
        // The cas and the delete overlap, but the delete found the key
        // and the cas swapped, so the delete came after the cas: once it
        // was done, b could not be read.
        let cas = op(
            "k",
            KvOp::Cas {
                from: "a".into(),
                to: "b".into(),
                result: Some(Ok(())),
            },
            10,
            Some(20),
        );
        let h = [put("a", 0, 1), cas, del(11, 21), get(Some("b"), 22, 23)];
        let s = story(&h);
        assert_eq!(s.ops, vec![0, 1, 2, 3]);
        assert_eq!(s.shape, Shape::Overwritten { read: 3, later: 2 });
    }

    fn arbitrary_history() -> impl Strategy<Value = Vec<Operation>> {
        // Up to 9 operations on one key, over a few values, some with
        // unknown outcomes.
        let one = (0u8..5, 0u8..3, 0u8..3, 0u64..20, 1u64..6, any::<bool>());
        proptest::collection::vec(one, 1..9).prop_map(|ops| {
            ops.into_iter()
                .map(|(kind, v, w, call, len, known)| {
                    let (v, w) = (format!("v{v}"), format!("v{w}"));
                    let ret = Some(call + len);
                    match kind {
                        0 => op("k", KvOp::Put { value: v }, call, ret.filter(|_| known)),
                        1 => put(&v, call, call + len),
                        2 => get(known.then_some(v.as_str()), call, call + len),
                        3 => {
                            let existed = Some(known);
                            op("k", KvOp::Delete { existed }, call, ret)
                        }
                        _ => {
                            let result = Some(if known { Ok(()) } else { Err(Some(w)) });
                            let to = format!("{v}'");
                            op(
                                "k",
                                KvOp::Cas {
                                    from: v,
                                    to,
                                    result,
                                },
                                call,
                                ret,
                            )
                        }
                    }
                })
                .collect()
        })
    }

    proptest! {
        /// Whatever `explain` shows is not linearizable on its own, and
        /// it finds something exactly when the whole is not linearizable.
        #[test]
        fn a_story_is_always_a_non_linearizable_part(h in arbitrary_history()) {
            let whole = check(&h);
            let s = explain(&h, "k", &Budget::default());
            prop_assert_eq!(s.is_some(), whole != Verdict::Linearizable, "{:?}", h);
            if let Some(s) = s {
                let part: Vec<Operation> = s.ops.iter().map(|&i| h[i].clone()).collect();
                prop_assert!(check(&part) != Verdict::Linearizable, "{:?} {:?}", h, s);
            }
        }
    }
}
