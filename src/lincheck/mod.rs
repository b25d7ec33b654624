//! A linearizability checker for histories of key-value operations.
//!
//! The algorithm is Wing and Gong's search, with the state cache of Lowe
//! ("Testing for linearizability", 2017): walk the history in time order;
//! at each pending call, try to linearize it now (apply it to the model and
//! check that its recorded result matches); on reaching a return whose call
//! was not linearized, backtrack. A (set of linearized operations, model
//! state) pair seen before is not explored again.
//!
//! Keys are independent registers, so a history is checked one key at a
//! time. An operation whose outcome is unknown (the client timed out) has
//! no return: it may take effect at any point after its call, or never.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod witness;
pub use witness::{Shape, Story, explain};

/// What an operation did, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KvOp {
    Put {
        value: String,
    },
    /// `existed`: the delete found the key (`None`: outcome unknown).
    Delete {
        existed: Option<bool>,
    },
    /// `result`: `Some(Ok(()))` swapped; `Some(Err(actual))` found `actual`
    /// instead; `None` unknown.
    Cas {
        from: String,
        to: String,
        result: Option<Result<(), Option<String>>>,
    },
    /// The value read (`None`: no such key).
    Get {
        value: Option<String>,
    },
}

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Operation {
    pub key: String,
    pub op: KvOp,
    /// When the client sent it (any monotonic unit).
    pub call: u64,
    /// When the client got the answer; `None` if it never did.
    pub ret: Option<u64>,
}

impl Operation {
    fn outcome_known(&self) -> bool {
        self.ret.is_some()
    }
}

/// The register's state is the key's value, or `None`.
type State = Option<String>;

/// Applies `op` to `state`; `None` if its recorded result is impossible
/// from that state.
fn step(state: &State, op: &Operation) -> Option<State> {
    let known = op.outcome_known();
    match &op.op {
        KvOp::Put { value } => Some(Some(value.clone())),
        KvOp::Get { value } => (state == value).then(|| state.clone()),
        KvOp::Delete { existed } => match existed {
            Some(true) if known => state.is_some().then_some(None),
            Some(false) if known => state.is_none().then_some(None),
            _ => Some(None),
        },
        KvOp::Cas { from, to, result } => {
            let matches = state.as_deref() == Some(from.as_str());
            match result {
                Some(Ok(())) if known => matches.then(|| Some(to.clone())),
                Some(Err(actual)) if known => (!matches && state == actual).then(|| state.clone()),
                // Unknown: whatever the state, the cas does what it would.
                _ => Some(if matches {
                    Some(to.clone())
                } else {
                    state.clone()
                }),
            }
        }
    }
}

/// The result of a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The first key whose history has no linearization.
    NotLinearizable {
        key: String,
    },
    /// The search for `key` ran out of its [`Budget`] before it could tell.
    Undecided {
        key: String,
        reason: String,
    },
}

/// How much time and memory the search may spend on the whole history
/// before it gives up and says it cannot decide.
#[derive(Clone, Debug)]
pub struct Budget {
    pub time: Duration,
    /// The memo of explored states, summed over keys checked at once.
    pub memory_bytes: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            time: Duration::from_secs(60),
            memory_bytes: 1 << 30,
        }
    }
}

/// What checking one key took.
#[derive(Clone, Debug, Default)]
pub struct KeyStats {
    pub key: String,
    /// Operations checked (reads with no answer are left out).
    pub operations: usize,
    /// States the search memoized.
    pub states: usize,
    pub elapsed: Duration,
}

/// A check's verdict, and what it cost key by key.
#[derive(Debug)]
pub struct Report {
    pub verdict: Verdict,
    pub keys: Vec<KeyStats>,
    pub elapsed: Duration,
}

/// Checks a whole history, key by key, within the default [`Budget`].
/// Unknown-outcome reads are dropped (a read that returned nothing
/// constrains nothing).
pub fn check(history: &[Operation]) -> Verdict {
    check_within(history, &Budget::default()).verdict
}

/// The operations of each key, as indices into `history`, unanswered
/// reads left out.
pub fn by_key(history: &[Operation]) -> BTreeMap<&str, Vec<usize>> {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        if matches!(op.op, KvOp::Get { .. }) && op.ret.is_none() {
            continue;
        }
        by_key.entry(&op.key).or_default().push(i);
    }
    by_key
}

/// [`check`] within `budget`, the keys checked in parallel (one thread
/// per core); the verdict names the first key, in key order, that is
/// not linearizable, else the first that could not be decided.
pub fn check_within(history: &[Operation], budget: &Budget) -> Report {
    let started = Instant::now();
    let keys: Vec<(&str, Vec<Operation>)> = by_key(history)
        .into_iter()
        .map(|(k, ix)| (k, ix.iter().map(|&i| history[i].clone()).collect()))
        .collect();
    let limits = Limits {
        deadline: started + budget.time,
        memory: AtomicUsize::new(budget.memory_bytes),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let slots: Vec<parking_lot::Mutex<Option<(Outcome, KeyStats)>>> = (0..keys.len())
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(keys.len()) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((key, ops)) = keys.get(k) else { break };
                    let t = Instant::now();
                    let mut search = Search::new(ops);
                    let outcome = search.run(&limits);
                    let stats = KeyStats {
                        key: key.to_string(),
                        operations: ops.len(),
                        states: search.cache.len(),
                        elapsed: t.elapsed(),
                    };
                    // The memo is dropped: its bytes go back to the budget.
                    limits.memory.fetch_add(search.used, Ordering::Relaxed);
                    *slots[k].lock() = Some((outcome, stats));
                }
            });
        }
    });
    let results = slots.into_iter().map(parking_lot::Mutex::into_inner);
    let mut verdict = Verdict::Linearizable;
    let mut stats = Vec::new();
    for ((key, _), result) in keys.iter().zip(results) {
        let (outcome, s) = result.expect("every key was checked");
        stats.push(s);
        let this = match outcome {
            Outcome::Linearizable => continue,
            Outcome::NotLinearizable => Verdict::NotLinearizable {
                key: key.to_string(),
            },
            Outcome::OutOf(reason) => Verdict::Undecided {
                key: key.to_string(),
                reason: reason.to_string(),
            },
        };
        if matches!(verdict, Verdict::Linearizable)
            || (matches!(verdict, Verdict::Undecided { .. })
                && matches!(this, Verdict::NotLinearizable { .. }))
        {
            verdict = this;
        }
    }
    Report {
        verdict,
        keys: stats,
        elapsed: started.elapsed(),
    }
}

/// Whether one key's operations (already filtered as [`by_key`] does)
/// are linearizable: `None` if `budget` ran out first.
pub fn check_key(ops: &[Operation], budget: &Budget) -> Option<bool> {
    let limits = Limits {
        deadline: Instant::now() + budget.time,
        memory: AtomicUsize::new(budget.memory_bytes),
    };
    match Search::new(ops).run(&limits) {
        Outcome::Linearizable => Some(true),
        Outcome::NotLinearizable => Some(false),
        Outcome::OutOf(_) => None,
    }
}

/// What the search may still spend: shared by the keys checked at once.
struct Limits {
    deadline: Instant,
    /// Bytes left for memoized states.
    memory: AtomicUsize,
}

enum Outcome {
    Linearizable,
    NotLinearizable,
    /// Which budget ran out.
    OutOf(&'static str),
}

/// Wing–Gong–Lowe over one key's operations, from an absent key.
struct Search<'a> {
    ops: &'a [Operation],
    /// Events in time order: (time, is_return, op). At equal times calls
    /// come first, so touching intervals count as concurrent.
    events: Vec<(u64, bool, usize)>,
    /// (linearized operations, state) pairs already explored.
    cache: HashSet<(Vec<u64>, State)>,
    /// Bytes of the budget the memo took.
    used: usize,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Operation]) -> Search<'a> {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            events.push((op.ret.unwrap_or(u64::MAX), true, i));
        }
        events.sort();
        Search {
            ops,
            events,
            cache: HashSet::new(),
            used: 0,
        }
    }

    fn run(&mut self, limits: &Limits) -> Outcome {
        let (ops, events) = (self.ops, &self.events);
        let n = events.len();
        if n == 0 {
            return Outcome::Linearizable;
        }
        // A doubly linked list over the events, with a head sentinel at
        // index `n`; END marks the end. Linearizing an operation unlinks
        // its call and return; backtracking links them back where they
        // were.
        const END: usize = usize::MAX;
        let head = n;
        let mut next: Vec<usize> = (1..n).chain([END, 0]).collect();
        let mut prev: Vec<usize> = std::iter::once(head).chain(0..n - 1).chain([END]).collect();
        let mut call_of = vec![0; ops.len()];
        let mut ret_of = vec![0; ops.len()];
        for (k, &(_, is_ret, i)) in events.iter().enumerate() {
            if is_ret {
                ret_of[i] = k;
            } else {
                call_of[i] = k;
            }
        }
        let unlink = |k: usize, next: &mut [usize], prev: &mut [usize]| {
            let (p, nx) = (prev[k], next[k]);
            next[p] = nx;
            if nx != END {
                prev[nx] = p;
            }
        };
        let relink = |k: usize, next: &mut [usize], prev: &mut [usize]| {
            let (p, nx) = (prev[k], next[k]);
            next[p] = k;
            if nx != END {
                prev[nx] = k;
            }
        };

        let words = ops.len().div_ceil(64);
        // What one memoized state costs, roughly: its bits, its value and
        // the table's own overhead.
        let entry_bytes = words * 8 + 64;
        let mut linearized = vec![0u64; words];
        let mut state: State = None;
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut entry = next[head];
        let mut steps = 0u64;
        while next[head] != END {
            steps += 1;
            if steps.is_multiple_of(4096) && Instant::now() >= limits.deadline {
                return Outcome::OutOf("time");
            }
            let (_, is_ret, i) = events[entry];
            if !is_ret {
                if let Some(new_state) = step(&state, &ops[i]) {
                    linearized[i / 64] |= 1 << (i % 64);
                    let bytes = entry_bytes + new_state.as_ref().map_or(0, String::len);
                    if self.cache.insert((linearized.clone(), new_state.clone())) {
                        let taken = limits.memory.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |left| left.checked_sub(bytes),
                        );
                        if taken.is_err() {
                            return Outcome::OutOf("memory");
                        }
                        self.used += bytes;
                        stack.push((i, std::mem::replace(&mut state, new_state)));
                        // Lift the operation out of the list: both its events.
                        unlink(call_of[i], &mut next, &mut prev);
                        unlink(ret_of[i], &mut next, &mut prev);
                        entry = next[head];
                        continue;
                    }
                    linearized[i / 64] &= !(1 << (i % 64));
                }
                entry = next[entry];
            } else {
                // A return whose call is still in the list: that operation
                // must have been linearized earlier. Undo the last choice.
                let Some((i, old_state)) = stack.pop() else {
                    return Outcome::NotLinearizable;
                };
                state = old_state;
                linearized[i / 64] &= !(1 << (i % 64));
                relink(ret_of[i], &mut next, &mut prev);
                relink(call_of[i], &mut next, &mut prev);
                entry = next[call_of[i]];
            }
        }
        Outcome::Linearizable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: KvOp, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            key: "k".into(),
            op,
            call,
            ret,
        }
    }
    fn put(v: &str, call: u64, ret: u64) -> Operation {
        op(KvOp::Put { value: v.into() }, call, Some(ret))
    }
    fn get(v: Option<&str>, call: u64, ret: u64) -> Operation {
        op(
            KvOp::Get {
                value: v.map(str::to_string),
            },
            call,
            Some(ret),
        )
    }

    #[test]
    fn sequential_history() {
        let h = [get(None, 0, 1), put("a", 2, 3), get(Some("a"), 4, 5)];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not_linearizable() {
        let h = [put("a", 0, 1), put("b", 2, 3), get(Some("a"), 4, 5)];
        assert_eq!(check(&h), Verdict::NotLinearizable { key: "k".into() });
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps both writes: "a" and "b" are both fine.
        let h = [put("a", 0, 10), put("b", 1, 10), get(Some("a"), 2, 11)];
        assert_eq!(check(&h), Verdict::Linearizable);
        let h = [
            put("a", 0, 10),
            put("b", 1, 10),
            get(Some("b"), 2, 11),
            get(Some("a"), 12, 13),
        ];
        assert_eq!(
            check(&h),
            Verdict::Linearizable,
            "a may be linearized after b"
        );
        let h = [
            put("a", 0, 10),
            put("b", 1, 10),
            get(Some("b"), 11, 12),
            get(Some("a"), 13, 14),
        ];
        assert!(
            matches!(check(&h), Verdict::NotLinearizable { .. }),
            "after both returned, the value cannot flip back"
        );
    }

    #[test]
    fn a_write_with_unknown_outcome_may_or_may_not_happen() {
        let lost = op(KvOp::Put { value: "x".into() }, 0, None);
        assert_eq!(
            check(&[lost.clone(), get(None, 5, 6)]),
            Verdict::Linearizable,
            "never applied"
        );
        assert_eq!(
            check(&[lost.clone(), get(Some("x"), 5, 6)]),
            Verdict::Linearizable,
            "applied"
        );
        // But not before it was sent.
        assert!(matches!(
            check(&[
                get(Some("x"), 0, 1),
                op(KvOp::Put { value: "x".into() }, 2, None)
            ]),
            Verdict::NotLinearizable { .. }
        ));
        // And once seen, it cannot be unseen.
        let h = [lost, get(Some("x"), 5, 6), get(None, 7, 8)];
        assert!(matches!(check(&h), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn cas_and_delete_results_constrain_the_state() {
        let cas = |from: &str, to: &str, result, c, r| {
            op(
                KvOp::Cas {
                    from: from.into(),
                    to: to.into(),
                    result,
                },
                c,
                Some(r),
            )
        };
        let h = [
            put("a", 0, 1),
            cas("a", "b", Some(Ok(())), 2, 3),
            get(Some("b"), 4, 5),
        ];
        assert_eq!(check(&h), Verdict::Linearizable);
        let h = [
            put("a", 0, 1),
            cas("a", "b", Some(Err(Some("a".into()))), 2, 3),
        ];
        assert!(
            matches!(check(&h), Verdict::NotLinearizable { .. }),
            "cannot fail when the value matched"
        );
        // Two clients both succeed in swapping a→b: impossible.
        let h = [
            put("a", 0, 1),
            cas("a", "b", Some(Ok(())), 2, 5),
            cas("a", "b", Some(Ok(())), 3, 6),
        ];
        assert!(matches!(check(&h), Verdict::NotLinearizable { .. }));
        let del = |existed, c, r| {
            op(
                KvOp::Delete {
                    existed: Some(existed),
                },
                c,
                Some(r),
            )
        };
        assert_eq!(
            check(&[put("a", 0, 1), del(true, 2, 3), del(false, 4, 5)]),
            Verdict::Linearizable
        );
        assert!(matches!(
            check(&[del(true, 0, 1)]),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_lost_write_is_not_linearizable_unless_a_delete_could_explain_it() {
        // Acknowledged, then read as absent: lost.
        let lost = [put("a", 0, 1), get(None, 2, 3)];
        assert!(matches!(check(&lost), Verdict::NotLinearizable { .. }));
        // A delete overlapping the read explains it.
        let delete = op(
            KvOp::Delete {
                existed: Some(true),
            },
            2,
            Some(4),
        );
        let explained = [put("a", 0, 1), delete, get(None, 3, 5)];
        assert_eq!(check(&explained), Verdict::Linearizable);
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = put("z", 0, 1);
        other.key = "other".into();
        let h = [put("a", 0, 1), other, get(Some("a"), 2, 3)];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn many_concurrent_writers_are_checked_quickly() {
        // 12 overlapping writes then a read of one of them: the cache keeps
        // this from exploring 12! orders.
        let mut h: Vec<Operation> = (0..12).map(|i| put(&i.to_string(), i, 100 + i)).collect();
        h.push(get(Some("7"), 200, 201));
        h.push(get(Some("7"), 202, 203));
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_search_that_runs_out_of_its_budget_says_so() {
        let h: Vec<Operation> = (0..12).map(|i| put(&i.to_string(), i, 100 + i)).collect();
        let tight = Budget {
            time: Duration::from_secs(10),
            memory_bytes: 300,
        };
        let report = check_within(&h, &tight);
        assert_eq!(
            report.verdict,
            Verdict::Undecided {
                key: "k".into(),
                reason: "memory".into()
            }
        );
        let report = check_within(&h, &Budget::default());
        assert_eq!(report.verdict, Verdict::Linearizable);
        assert_eq!(report.keys.len(), 1);
        assert_eq!(report.keys[0].operations, 12);
        assert!(report.keys[0].states >= 12, "{:?}", report.keys);
    }
}
