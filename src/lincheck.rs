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

/// What an operation did, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// Checks a whole history, key by key. Unknown-outcome reads are dropped
/// (a read that returned nothing constrains nothing).
pub fn check(history: &[Operation]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        if matches!(op.op, KvOp::Get { .. }) && op.ret.is_none() {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        if !check_key(&ops) {
            return Verdict::NotLinearizable {
                key: key.to_string(),
            };
        }
    }
    Verdict::Linearizable
}

/// Wing–Gong–Lowe over one key's operations, from an absent key.
fn check_key(ops: &[Operation]) -> bool {
    // Events in time order: (time, is_return, op). At equal times calls
    // come first, so touching intervals count as concurrent.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort();
    let n = events.len();
    // A doubly linked list over the events, with a head sentinel at index
    // `n`; END marks the end. Linearizing an operation unlinks its call
    // and return; backtracking links them back where they were.
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
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut state: State = None;
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut entry = next[head];
    while next[head] != END {
        let (_, is_ret, i) = events[entry];
        if !is_ret {
            if let Some(new_state) = step(&state, &ops[i]) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), new_state.clone())) {
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
                return false;
            };
            state = old_state;
            linearized[i / 64] &= !(1 << (i % 64));
            relink(ret_of[i], &mut next, &mut prev);
            relink(call_of[i], &mut next, &mut prev);
            entry = next[call_of[i]];
        }
    }
    true
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
}
