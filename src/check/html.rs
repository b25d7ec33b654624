//! `raftctl check --html FILE`: one self-contained page (no scripts, no
//! fonts, nothing fetched) drawing a check as a timeline: a lane per node
//! (its role over time), faults as shaded spans across them, a lane per
//! client (each operation a bar from call to answer, coloured by
//! outcome), and the anomaly, if any, outlined in red and drawn again,
//! enlarged, on a timeline of its own. Hovering a bar names it (SVG
//! titles).

use std::fmt::Write;

use super::history::{History, Outcome};
use super::report::{self, describe};
use super::{Analysis, monitor};
use crate::lincheck::Verdict;

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const LABEL: f64 = 90.0;
const PLOT: f64 = 1100.0;
const LANE: f64 = 18.0;

fn role_colour(role: &str) -> &'static str {
    match role {
        "leader" => "#e0a100",
        "follower" => "#8fb8de",
        "candidate" => "#f07f3c",
        "down" => "#555",
        "silent" => "#bbb",
        _ => "#d9d2e9",
    }
}

fn outcome_colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "#3a9d5d",
        Outcome::Fail => "#999",
        Outcome::Unknown => "#e8a33d",
    }
}

/// A timeline of `history` between `from` and `to` (µs); the operations
/// in `marked` outlined. With `only_marked` (the anomaly's close-up),
/// only the clients of the marked operations get a lane, and only
/// operations on their key are drawn.
fn timeline(
    history: &History,
    marked: &[usize],
    from: u64,
    to: u64,
    only_marked: bool,
    id: &str,
) -> String {
    let span = (to - from).max(1) as f64;
    let x = |t: u64| LABEL + (t.clamp(from, to) - from) as f64 / span * PLOT;
    let nodes = &history.run.nodes;
    let clients: Vec<usize> = if only_marked {
        let mut c: Vec<usize> = marked.iter().map(|&i| history.ops[i].client).collect();
        c.sort();
        c.dedup();
        c
    } else {
        (0..history.run.clients).collect()
    };
    let key = marked.first().map(|&i| history.ops[i].op.key.as_str());
    let top = 24.0;
    let node_y = |k: usize| top + k as f64 * LANE;
    let clients_top = top + nodes.len() as f64 * LANE + 14.0;
    let client_y = |k: usize| clients_top + k as f64 * LANE;
    let height = clients_top + clients.len() as f64 * LANE + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg id="{id}" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"##,
        w = LABEL + PLOT + 10.0
    );
    // The time axis: a tick every "nice" interval.
    let step = [
        1_000u64, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
    ]
    .into_iter()
    .find(|s| (to - from) / s <= 12)
    .unwrap_or(30_000_000);
    let mut t = from.div_ceil(step) * step;
    while t <= to {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="14" y2="{1}" stroke="#eee"/><text x="{0:.1}" y="11" text-anchor="middle" fill="#666">{2}</text>"##,
            x(t),
            height - 6.0,
            if step >= 1_000_000 {
                format!("{} s", t / 1_000_000)
            } else {
                format!("{:.3} s", t as f64 / 1e6)
            }
        );
        t += step;
    }
    // Node lanes: a role span from each change to the next.
    let end_of_run = history.end().unwrap_or(to);
    for (k, &node) in nodes.iter().enumerate() {
        let y = node_y(k);
        let _ = write!(
            svg,
            r##"<g class="lane node" data-node="{node}"><text x="4" y="{:.1}">node{node}</text>"##,
            y + 12.0
        );
        let changes: Vec<_> = history.roles.iter().filter(|r| r.node == node).collect();
        for (i, r) in changes.iter().enumerate() {
            let next = changes.get(i + 1).map_or(end_of_run, |n| n.at);
            if next < from || r.at > to {
                continue;
            }
            let (x0, x1) = (x(r.at), x(next));
            let stroke = if r.isolated {
                r##" stroke="#c00" stroke-width="2" stroke-dasharray="3 2""##
            } else {
                ""
            };
            let _ = write!(
                svg,
                r##"<rect class="role {role}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"{stroke}><title>node{node}: {role}{term}{cut} from {}</title></rect>"##,
                y + 2.0,
                (x1 - x0).max(0.5),
                LANE - 5.0,
                role_colour(&r.role),
                esc(&format!("{:.3} s", r.at as f64 / 1e6)),
                role = r.role,
                term = if r.term > 0 {
                    format!(", term {}", r.term)
                } else {
                    String::new()
                },
                cut = if r.isolated { ", cut off" } else { "" },
            );
        }
        svg.push_str("</g>");
    }
    // Faults: shaded across the node lanes, named above them.
    for f in &history.faults {
        if f.end < from || f.start > to {
            continue;
        }
        let (x0, x1) = (x(f.start), x(f.end));
        let _ = write!(
            svg,
            r##"<rect class="fault" x="{x0:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#c00" fill-opacity="0.12"><title>{}</title></rect><text x="{x0:.1}" y="{:.1}" fill="#a00" font-size="9">{}</text>"##,
            (x1 - x0).max(1.0),
            nodes.len() as f64 * LANE,
            esc(&f.what),
            clients_top - 3.0,
            esc(&f.kind),
        );
    }
    // Client lanes.
    for (k, &client) in clients.iter().enumerate() {
        let y = client_y(k);
        let _ = write!(
            svg,
            r##"<g class="lane client" data-client="{client}"><text x="4" y="{:.1}">client {client}</text>"##,
            y + 12.0
        );
        for (i, o) in history.ops.iter().enumerate() {
            if o.client != client || o.end < from || o.op.call > to {
                continue;
            }
            if only_marked && Some(o.op.key.as_str()) != key {
                continue;
            }
            if marked.contains(&i) {
                continue; // drawn last, on top
            }
            let (x0, x1) = (x(o.op.call), x(o.end));
            let _ = write!(
                svg,
                r##"<rect class="op" x="{x0:.1}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"><title>{}</title></rect>"##,
                y + 3.0,
                (x1 - x0).max(0.6),
                LANE - 7.0,
                outcome_colour(o.outcome),
                esc(&format!(
                    "client {client}: {} ({:?})",
                    describe(o),
                    o.outcome
                )),
            );
        }
        svg.push_str("</g>");
    }
    // The anomaly's operations, outlined, on top, labelled.
    for &i in marked {
        let o = &history.ops[i];
        let Some(k) = clients.iter().position(|&c| c == o.client) else {
            continue;
        };
        let y = client_y(k);
        let (x0, x1) = (x(o.op.call), x(o.end));
        let _ = write!(
            svg,
            r##"<rect class="op anomaly" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" stroke="#d00" stroke-width="2"><title>{}</title></rect>"##,
            y + 1.0,
            (x1 - x0).max(3.0),
            LANE - 3.0,
            outcome_colour(o.outcome),
            esc(&format!("client {}: {}", o.client, describe(o))),
        );
        if only_marked {
            // Beside the bar: on its right, or its left near the edge.
            let (tx, anchor) = if x1 + 260.0 < LABEL + PLOT {
                (x1 + 5.0, "start")
            } else {
                (x0 - 5.0, "end")
            };
            let _ = write!(
                svg,
                r##"<text x="{tx:.1}" y="{:.1}" fill="#900" text-anchor="{anchor}">{}</text>"##,
                y + 12.0,
                esc(&describe(o))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The whole page.
pub fn page(history: &History, analysis: &Analysis) -> String {
    let run = &history.run;
    let end = history.end().unwrap_or(1).max(1);
    let marked: Vec<usize> = analysis
        .story
        .as_ref()
        .map(|s| s.ops.clone())
        .unwrap_or_default();
    let (verdict, class) = match (&analysis.report.verdict, &analysis.undecided) {
        (Verdict::NotLinearizable { key }, _) => (
            format!("Not linearizable: the history of key {key} has no legal order"),
            "bad",
        ),
        (_, Some(why)) => (format!("Cannot decide: {why}"), "unknown"),
        _ => ("Linearizable".to_string(), "good"),
    };
    let mut html = String::new();
    let _ = write!(
        html,
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>raftctl check: {title}</title>
<style>
body {{ font: 14px/1.4 sans-serif; margin: 16px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 8px; }}
.verdict {{ padding: 8px 12px; border-radius: 4px; font-weight: bold; display: inline-block; }}
.good {{ background: #d8f0dd; color: #17612f; }} .bad {{ background: #fbd5d5; color: #8a1010; }}
.unknown {{ background: #fdebc8; color: #7a4b00; }}
.legend span {{ display: inline-block; margin-right: 14px; }}
.legend i {{ display: inline-block; width: 12px; height: 10px; margin-right: 4px; vertical-align: middle; }}
pre {{ background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; white-space: pre-wrap; }}
.scroll {{ overflow-x: auto; }}
</style></head><body>
<h1>raftctl check</h1>
<p id="verdict" class="verdict {class}">{verdict}</p>
<p>{ops} operations by {clients} clients on {keys} key(s) over {secs:.1} s; faults: {faults}; seed {seed}; configuration {config}.</p>
"##,
        title = esc(&verdict),
        verdict = esc(&verdict),
        ops = report::count(history.ops.len() as u64),
        clients = run.clients,
        keys = run.keys,
        secs = end as f64 / 1e6,
        faults = esc(&if run.faults.is_empty() {
            "none".to_string()
        } else {
            run.faults.join(", ")
        }),
        seed = run.seed,
        config = esc(&run.config),
    );
    if let Some(story) = &analysis.story {
        let text = report::story(history, analysis).unwrap_or_default();
        let from = story
            .ops
            .iter()
            .map(|&i| history.ops[i].op.call)
            .min()
            .unwrap_or(0);
        let to = story
            .ops
            .iter()
            .map(|&i| history.ops[i].end)
            .max()
            .unwrap_or(end);
        let pad = ((to - from) / 5).max(1_000);
        let _ = write!(
            html,
            r##"<h2>The anomaly</h2><pre id="story">{}</pre><div class="scroll">{}</div>"##,
            esc(&text),
            timeline(
                history,
                &marked,
                from.saturating_sub(pad),
                to + pad,
                true,
                "anomaly"
            )
        );
    }
    let _ = write!(
        html,
        r##"<h2>The whole run</h2><p class="legend">
<span><i style="background:{}"></i>leader</span><span><i style="background:{}"></i>follower</span>
<span><i style="background:{}"></i>candidate</span><span><i style="background:{}"></i>down</span>
<span><i style="background:{}"></i>not answering (paused?)</span><span><i style="border:2px dashed #c00"></i>cut off</span>
<span><i style="background:#c00;opacity:.25"></i>fault</span>
<span><i style="background:{}"></i>ok</span><span><i style="background:{}"></i>failed</span><span><i style="background:{}"></i>unknown outcome</span>
<span><i style="border:2px solid #d00"></i>in the anomaly</span></p>
<div class="scroll">{}</div>"##,
        role_colour("leader"),
        role_colour("follower"),
        role_colour("candidate"),
        role_colour("down"),
        role_colour("silent"),
        outcome_colour(Outcome::Ok),
        outcome_colour(Outcome::Fail),
        outcome_colour(Outcome::Unknown),
        timeline(history, &marked, 0, end, false, "timeline"),
    );
    html.push_str("<h2>Faults</h2><table id=\"faults\">");
    for f in &history.faults {
        let _ = write!(
            html,
            "<tr><td>{:.3} s – {:.3} s</td><td>{}</td></tr>",
            f.start as f64 / 1e6,
            f.end as f64 / 1e6,
            esc(&f.what)
        );
    }
    html.push_str("</table>");
    let gaps = monitor::leaderless(run.nodes.len(), &history.roles, end);
    let total: u64 = gaps.iter().map(|(a, b)| b - a).sum();
    let longest = gaps.iter().map(|(a, b)| b - a).max().unwrap_or(0);
    let _ = writeln!(
        html,
        "<p>No leader a majority followed for {:.3} s in total, at most {:.3} s at once.</p></body></html>",
        total as f64 / 1e6,
        longest as f64 / 1e6
    );
    html
}
