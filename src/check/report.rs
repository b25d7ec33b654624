//! What `raftctl check` prints: the progress line, the summary, the
//! verdict and, for a violation, its story.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::history::{History, Op, Outcome};
use super::{Analysis, Progress, budget_text, monitor};
use crate::lincheck::{KvOp, Shape, Verdict};

/// Seconds from the start, to the millisecond.
fn secs(us: u64) -> String {
    format!("{:.3} s", us as f64 / 1e6)
}

/// A count with thousands separated: 12,345.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One progress line.
pub fn progress_line(p: &Progress) -> String {
    let leader = match p.leader {
        Some((id, term)) => format!("node{id} (term {term})"),
        None => "none".into(),
    };
    format!(
        "{:>4} s  ok {}  failed {}  unknown {}  | fault: {}  | leader: {leader}",
        p.elapsed.as_secs(),
        count(p.ok),
        count(p.failed),
        count(p.unknown),
        p.fault.as_deref().unwrap_or("none"),
    )
}

/// The kind of an operation, as the tables name it.
fn kind(op: &KvOp) -> &'static str {
    match op {
        KvOp::Get { .. } => "get",
        KvOp::Put { .. } => "put",
        KvOp::Cas { .. } => "cas",
        KvOp::Delete { .. } => "delete",
    }
}

/// An operation and its result, in a few words.
pub fn describe(op: &Op) -> String {
    let key = &op.op.key;
    let known = op.outcome == Outcome::Ok;
    match &op.op.op {
        KvOp::Get { value } if known => match value {
            Some(v) => format!("get {key} → {v}"),
            None => format!("get {key} → (no such key)"),
        },
        KvOp::Get { .. } => format!("get {key}"),
        KvOp::Put { value } => format!("put {key} = {value}"),
        KvOp::Cas { from, to, result } => {
            let from = if from.is_empty() { "\"\"" } else { from };
            let how = match result {
                Some(Ok(())) if known => ": swapped".to_string(),
                Some(Err(Some(actual))) if known => format!(": found {actual}"),
                Some(Err(None)) if known => ": no such key".to_string(),
                _ => String::new(),
            };
            format!("cas {key} {from} → {to}{how}")
        }
        KvOp::Delete { existed } => match existed {
            Some(true) if known => format!("delete {key}: deleted"),
            Some(false) if known => format!("delete {key}: no such key"),
            _ => format!("delete {key}"),
        },
    }
}

/// One operation as a line of a story.
fn op_line(op: &Op) -> String {
    let when = match op.op.ret {
        Some(ret) => format!("{} – {}", secs(op.op.call), secs(ret)),
        None => format!("{} – (no answer)", secs(op.op.call)),
    };
    let outcome = match (op.outcome, op.node) {
        (Outcome::Ok, Some(n)) => format!("ok, from node{n}"),
        (Outcome::Ok, None) => "ok".into(),
        (Outcome::Fail, _) => "failed".into(),
        (Outcome::Unknown, _) => "unknown outcome".into(),
    };
    format!(
        "  {when:<28} client {:<3} {:<44} {outcome}",
        op.client,
        describe(op)
    )
}

/// The story of a violation: a sentence, then its operations.
pub fn story(history: &History, analysis: &Analysis) -> Option<String> {
    let story = analysis.story.as_ref()?;
    let ops = &history.ops;
    let at = |i: usize| secs(ops[i].op.ret.unwrap_or(ops[i].end));
    let from = |i: usize| {
        ops[i]
            .node
            .map_or(String::new(), |n| format!(" from node{n}"))
    };
    let value_of = |i: usize| match &ops[i].op.op {
        KvOp::Put { value } => value.clone(),
        KvOp::Cas { to, .. } => to.clone(),
        _ => "?".into(),
    };
    // What a write or delete did, as "write k = v" or "delete of k".
    let change = |i: usize| match &ops[i].op.op {
        KvOp::Delete { .. } => format!("delete of {}", ops[i].op.key),
        _ => format!("write {} = {}", ops[i].op.key, value_of(i)),
    };
    let mut out = String::new();
    let sentence = match story.shape {
        Shape::StaleRead {
            read,
            writer,
            later,
        } => {
            format!(
                "Stale read: client {} read {} = {} at {}{}, after client {}'s {} was \
                 acknowledged at {}; that one began at {}, after {} had been written (acknowledged \
                 at {}). The read returned an overwritten value.",
                ops[read].client,
                ops[read].op.key,
                value_of(writer),
                secs(ops[read].op.call),
                from(read),
                ops[later].client,
                change(later),
                at(later),
                secs(ops[later].op.call),
                value_of(writer),
                at(writer),
            )
        }
        Shape::LostWrite { read, write } => format!(
            "Lost write: client {} found no {} at {}{}, after client {}'s write {} = {} was \
             acknowledged at {}, with no delete that could come between.",
            ops[read].client,
            ops[read].op.key,
            secs(ops[read].op.call),
            from(read),
            ops[write].client,
            ops[write].op.key,
            value_of(write),
            at(write),
        ),
        Shape::NeverWritten { read } => format!(
            "Client {} read {} at {}{}, a value no client wrote.",
            ops[read].client,
            describe(&ops[read]),
            secs(ops[read].op.call),
            from(read)
        ),
        Shape::Overwritten { read, later } => {
            format!(
                "Stale read: client {} read {} at {}{}, after client {}'s {} was \
                 acknowledged at {}; once that was done, no order of the other operations below \
                 leaves that value in place. The read returned an overwritten value.",
                ops[read].client,
                match &ops[read].op.op {
                    KvOp::Get { value: Some(v) } => format!("{} = {v}", ops[read].op.key),
                    _ => describe(&ops[read]),
                },
                secs(ops[read].op.call),
                from(read),
                ops[later].client,
                change(later),
                at(later),
            )
        }
        Shape::Other => format!(
            "No order of these {} operations gives each the result it had.",
            story.ops.len()
        ),
    };
    let _ = writeln!(out, "{sentence}");
    let _ = writeln!(
        out,
        "The operations (times from the start, call – answer; alone they have no legal order, \
         and every operation that could explain them is among them):"
    );
    for &i in &story.ops {
        let _ = writeln!(out, "{}", op_line(&ops[i]));
    }
    Some(out)
}

/// The summary printed at the end: counts, faults, availability, the
/// checker's work and the verdict.
pub fn summary(history: &History, analysis: &Analysis) -> String {
    let mut out = String::new();
    let run = &history.run;
    let end = history.end().unwrap_or(0);
    let faults = if run.faults.is_empty() {
        "none".to_string()
    } else {
        run.faults.join(",")
    };
    let _ = writeln!(
        out,
        "\n{} operations by {} clients on {} keys in {}, faults: {faults} (seed {})\n",
        count(history.ops.len() as u64),
        run.clients,
        run.keys,
        secs(end),
        run.seed
    );
    let mut by_kind: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for o in &history.ops {
        let n = by_kind.entry(kind(&o.op.op)).or_default();
        n[match o.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Unknown => 2,
        }] += 1;
    }
    let _ = writeln!(
        out,
        "  {:<8}{:>10}{:>10}{:>10}",
        "", "ok", "failed", "unknown"
    );
    let mut total = [0u64; 3];
    for k in ["get", "put", "cas", "delete"] {
        let n = by_kind.get(k).copied().unwrap_or_default();
        for i in 0..3 {
            total[i] += n[i];
        }
        let _ = writeln!(
            out,
            "  {k:<8}{:>10}{:>10}{:>10}",
            count(n[0]),
            count(n[1]),
            count(n[2])
        );
    }
    let _ = writeln!(
        out,
        "  {:<8}{:>10}{:>10}{:>10}\n",
        "total",
        count(total[0]),
        count(total[1]),
        count(total[2])
    );
    let _ = writeln!(out, "faults ({}):", history.faults.len());
    for f in &history.faults {
        let _ = writeln!(
            out,
            "  {:>8} – {:<10} {}",
            secs(f.start),
            secs(f.end),
            f.what
        );
    }
    let gaps = monitor::leaderless(run.nodes.len(), &history.roles, end);
    let total_gap: u64 = gaps.iter().map(|(a, b)| b - a).sum();
    match gaps.iter().max_by_key(|(a, b)| b - a) {
        Some(&(a, b)) => {
            let _ = writeln!(
                out,
                "no leader a majority followed: {} in total, at most {} at once (from {})",
                secs(total_gap),
                secs(b - a),
                secs(a)
            );
        }
        None => {
            let _ = writeln!(out, "a leader a majority followed, throughout");
        }
    }
    if let Some(o) = history.ops.iter().max_by_key(|o| o.end - o.op.call) {
        let _ = writeln!(
            out,
            "longest wait for an answer: {} (client {}, {} at {}, {})",
            secs(o.end - o.op.call),
            o.client,
            kind(&o.op.op),
            secs(o.op.call),
            match o.outcome {
                Outcome::Ok => "answered",
                Outcome::Fail => "failed",
                Outcome::Unknown => "unknown outcome",
            }
        );
    }
    let r = &analysis.report;
    let states = r.keys.iter().map(|k| k.states).max().unwrap_or(0);
    let checked: usize = r.keys.iter().map(|k| k.operations).sum();
    let _ = writeln!(
        out,
        "checker: {} operations on {} keys in {:.2} s, at most {} states for one key (budget {})",
        count(checked as u64),
        r.keys.len(),
        r.elapsed.as_secs_f64(),
        count(states as u64),
        budget_text(&analysis.budget),
    );
    let _ = writeln!(out);
    match (&r.verdict, &analysis.undecided) {
        (Verdict::NotLinearizable { key }, _) => {
            let _ = writeln!(
                out,
                "NOT LINEARIZABLE: the history of key {key} has no legal order."
            );
            if let Some(story) = story(history, analysis) {
                let _ = write!(out, "\n{story}");
            }
        }
        (_, Some(why)) => {
            let _ = writeln!(out, "CANNOT DECIDE: {why}.");
        }
        _ => {
            let _ = writeln!(
                out,
                "LINEARIZABLE: every key's history has a legal order (unknown outcomes counted as \
                 may-or-may-not)."
            );
        }
    }
    out
}
