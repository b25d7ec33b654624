//! `raftctl watch`: a live view of a running cluster, drawn with ratatui.
//!
//! Three panes, refreshed several times a second from every node's event
//! stream (see `observe`):
//!
//! * **nodes**: one row each: role, term, whom it follows, commit and
//!   applied index, last log index, snapshot, how long ago it heard from
//!   its leader, or why it cannot be reached;
//! * **the leader's followers**: for each, what the leader knows (Figure
//!   2's matchIndex and nextIndex), requests in flight, the replication
//!   state (probe, replicate, snapshot) and when it last answered;
//! * **events**: the latest events of all nodes, merged by time.
//!
//! [`render`] draws the view into any ratatui frame: the terminal, or the
//! in-memory test backend the tests read. When standard output is not a
//! terminal (a pipe, a file, a CI log), [`plain_text`] renders the same
//! panes into a buffer and prints its text, with no escape codes.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use crate::config::ClusterConfig;
use crate::events::NodeEvent;
use crate::observe::{self, ClusterView, FeedOptions};

/// How often the view is redrawn, and each node's status sent.
pub const REFRESH: Duration = Duration::from_millis(250);

fn role_style(role: &str) -> Style {
    match role {
        "leader" => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        "candidate" => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        "precandidate" => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

fn event_style(e: &NodeEvent) -> Style {
    match (e.level.as_str(), e.kind.as_str()) {
        ("warn" | "error", _) => Style::new().fg(Color::Red),
        (_, "election_won" | "role_changed") => Style::new().fg(Color::Green),
        (_, k) if k.starts_with("election") || k.starts_with("pre_vote") => {
            Style::new().fg(Color::Yellow)
        }
        (_, k) if k.starts_with("vote") => Style::new().fg(Color::Cyan),
        ("debug", _) => Style::new().fg(Color::DarkGray),
        _ => Style::new(),
    }
}

/// An I/O error without its "(os error N)".
fn short_error(e: &str) -> &str {
    e.split(" (os error").next().unwrap_or(e)
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Draws the whole view into `frame`.
pub fn render(frame: &mut Frame, config: &ClusterConfig, view: &ClusterView) {
    let area = frame.area();
    let followers = view
        .leader()
        .and_then(|(id, _)| view.nodes[&id].status.as_ref())
        .map_or(0, |s| s.followers.len());
    let [title, nodes, leader, events] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(view.nodes.len() as u16 + 3),
        Constraint::Length(followers as u16 + 3),
        Constraint::Min(3),
    ])
    .areas(area);
    frame.render_widget(title_line(config, view), title);
    frame.render_widget(nodes_table(config, view), nodes);
    frame.render_widget(followers_table(view), leader);
    render_events(frame.buffer_mut(), events, view);
}

fn title_line(config: &ClusterConfig, view: &ClusterView) -> Paragraph<'static> {
    let now = Instant::now();
    let up = view
        .nodes
        .keys()
        .filter(|&&id| view.answers(id, now))
        .count();
    let leader = match view.leader() {
        Some((id, term)) => Span::styled(
            format!("leader node{id}, term {term}"),
            role_style("leader"),
        ),
        None => Span::styled(no_leader(view, now), Style::new().fg(Color::Red)),
    };
    Paragraph::new(Line::from(vec![
        Span::styled("raft ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{} · {up} of {} nodes answer · ",
            config.path.display(),
            view.nodes.len()
        )),
        leader,
        Span::raw(" · q quits"),
    ]))
}

/// With no leader answering, who still follows one that does not (until
/// their election timers run out, followers of a crashed leader still
/// name it, and the rows say so).
fn no_leader(view: &ClusterView, now: Instant) -> String {
    let mut followed: Vec<(u64, u64)> = view
        .nodes
        .iter()
        .filter(|(id, _)| view.answers(**id, now))
        .filter_map(|(&id, v)| Some((v.status.as_ref()?.leader_id?, id)))
        .collect();
    followed.sort_unstable();
    let Some(&(gone, _)) = followed.first() else {
        return "no leader".into();
    };
    let names: Vec<String> = followed
        .iter()
        .filter(|(l, _)| *l == gone)
        .map(|(_, id)| format!("node{id}"))
        .collect();
    format!(
        "no leader answers ({} still follow{} node{gone})",
        names.join(", "),
        if names.len() == 1 { "s" } else { "" }
    )
}

fn nodes_table(config: &ClusterConfig, view: &ClusterView) -> Table<'static> {
    let header = Row::new([
        "NODE", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST LOG", "SNAPSHOT",
        "HEARD",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let now = Instant::now();
    let rows = view.nodes.iter().map(move |(&id, v)| {
        let address = config.member(id).map_or_else(String::new, |m| m.address());
        match (&v.status, v.reachable) {
            (Some(s), true) => {
                // Its last status, dimmed, once it has gone silent.
                let silent = view.silent_for(id, now);
                let (role, role_style, row_style) = match silent {
                    Some(quiet) => (
                        format!("silent {:.1} s", quiet.as_secs_f64()),
                        Style::new().fg(Color::Red),
                        Style::new().fg(Color::DarkGray),
                    ),
                    None => (role_text(s), role_style(&s.role), Style::new()),
                };
                // Followers of a leader that no longer answers still name
                // it until their timers run out: shown with a `?` (the
                // title says who still follows it).
                let leader = s.leader_id.map(|l| {
                    let mark = if view.answers(l, now) { "" } else { "?" };
                    format!("node{l}{mark}")
                });
                // HEARD grows between statuses, as it does on the node.
                let since = v
                    .status_at
                    .map_or(0, |at| now.duration_since(at).as_millis() as u64);
                let heard = s
                    .heard_from_leader_ms
                    .map(|ms| format!("{} ms", ms + since));
                Row::new(vec![
                    Cell::from(format!("node{id}")),
                    Cell::from(address),
                    Cell::from(role).style(role_style),
                    Cell::from(s.term.to_string()),
                    Cell::from(dash(leader)),
                    Cell::from(s.commit_index.to_string()),
                    Cell::from(s.last_applied.to_string()),
                    Cell::from(s.last_log_index.to_string()),
                    Cell::from(s.snapshot_index.to_string()),
                    Cell::from(dash(heard)),
                ])
                .style(row_style)
            }
            // Why, in the last and widest column.
            _ => Row::new(
                [
                    Cell::from(format!("node{id}")),
                    Cell::from(address),
                    Cell::from("unreachable").style(Style::new().fg(Color::Red)),
                ]
                .into_iter()
                .chain(std::iter::repeat_n(Cell::from(""), 6))
                .chain([Cell::from(
                    v.error
                        .as_deref()
                        .map_or_else(|| "connecting".to_string(), |e| short_error(e).to_string()),
                )]),
            ),
        }
    });
    Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(21),
            Constraint::Length(20),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Min(6),
        ],
    )
    .header(header)
    .block(Block::new().borders(Borders::ALL).title(" nodes "))
}

/// The role, and a server's suffrage when it does not simply vote.
fn role_text(s: &crate::wire::NodeStatus) -> String {
    use crate::consensus::membership::Suffrage;
    match s.suffrage {
        Some(Suffrage::Voter) => s.role.clone(),
        Some(Suffrage::Learner) => format!("{} (learner)", s.role),
        Some(Suffrage::Leaving) => format!("{} (leaving)", s.role),
        None => format!("{} (no member)", s.role),
    }
}

/// What the membership is doing, as the leader says: a change not yet
/// committed, and the joint phase.
fn membership_phase(s: &crate::wire::NodeStatus) -> String {
    let mut phase = String::new();
    if !s.outgoing_voters.is_empty() {
        let old: Vec<String> = s.outgoing_voters.iter().map(|id| id.to_string()).collect();
        phase.push_str(&format!(
            "; joint consensus with the old voters {}",
            old.join(" ")
        ));
    }
    if !s.membership_committed {
        phase.push_str(&format!(
            "; membership change at index {} not yet committed",
            s.membership_index
        ));
    }
    phase
}

fn followers_table(view: &ClusterView) -> Table<'static> {
    let leader = view.leader();
    let status = leader.and_then(|(id, _)| view.nodes[&id].status.as_ref());
    let title = match (leader, status) {
        (Some((id, _)), Some(s)) => format!(
            " node{id}'s followers, as the leader sees them{} ",
            membership_phase(s)
        ),
        _ => " followers (no leader) ".to_string(),
    };
    let header = Row::new(["SERVER", "MATCH", "NEXT", "IN FLIGHT", "STATE", "HEARD"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let last_index = status.map_or(0, |s| s.last_log_index);
    let rows = status.into_iter().flat_map(|s| &s.followers).map(|f| {
        let behind = last_index.saturating_sub(f.match_index);
        let state = if f.reachable {
            Cell::from(f.state.clone())
        } else {
            Cell::from(format!("{} (unreachable)", f.state)).style(Style::new().fg(Color::Red))
        };
        use crate::consensus::membership::Suffrage;
        let name = match f.suffrage {
            Suffrage::Voter => format!("node{}", f.id),
            Suffrage::Learner => format!("node{} (learner)", f.id),
            Suffrage::Leaving => format!("node{} (leaving)", f.id),
        };
        Row::new(vec![
            Cell::from(name),
            // A matchIndex of 0 is "nothing known yet" (Figure 2: it
            // starts at 0 with each leadership), not 0 entries held.
            Cell::from(if f.match_index == 0 && last_index > 0 {
                "unknown".to_string()
            } else if behind > 0 {
                format!("{} (-{behind})", f.match_index)
            } else {
                f.match_index.to_string()
            }),
            Cell::from(f.next_index.to_string()),
            Cell::from(f.in_flight.to_string()),
            state,
            Cell::from(format!("{} ms ago", f.heard_ms)),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Length(18),
            Constraint::Length(14),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(24),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(Block::new().borders(Borders::ALL).title(title))
}

/// The latest events that fit, newest at the bottom.
fn render_events(buf: &mut Buffer, area: Rect, view: &ClusterView) {
    let block = Block::new().borders(Borders::ALL).title(" events ");
    let inner = block.inner(area);
    let fit = inner.height as usize;
    let skip = view.events.len().saturating_sub(fit);
    let lines: Vec<Line> = view
        .events
        .iter()
        .skip(skip)
        .map(|e| Line::styled(e.line(), event_style(e)))
        .collect();
    ratatui::widgets::Widget::render(Paragraph::new(lines).block(block), area, buf);
}

/// Renders the view into a `width` × `height` buffer and returns its text,
/// one line per row, trailing spaces trimmed.
pub fn plain_text(config: &ClusterConfig, view: &ClusterView, width: u16, height: u16) -> String {
    let backend = ratatui::backend::TestBackend::new(width, height);
    let mut terminal = ratatui::Terminal::new(backend).expect("an in-memory terminal");
    terminal
        .draw(|f| render(f, config, view))
        .expect("drawing in memory");
    buffer_text(terminal.backend().buffer())
}

/// A buffer's text, one line per row, trailing spaces trimmed.
pub fn buffer_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        let row: String = (0..area.width)
            .map(|x| buf[(area.x + x, area.y + y)].symbol())
            .collect();
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}

/// Runs `raftctl watch` until `q`, Esc or Ctrl-C (or forever, printing
/// plain text, when standard output is not a terminal).
pub fn run(config: &ClusterConfig) -> io::Result<()> {
    let feed = observe::follow(
        config,
        &[],
        FeedOptions {
            status_every: REFRESH,
            ..FeedOptions::default()
        },
    );
    let mut view = ClusterView::new(config, 500);
    view.status_every = REFRESH;
    if !io::stdout().is_terminal() {
        // A reader that has seen enough (`| head`) ends it, quietly.
        return match run_plain(config, &feed, &mut view) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        };
    }
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> io::Result<()> {
        let mut next_draw = Instant::now();
        loop {
            while let Ok(update) = feed.try_recv() {
                view.apply(update);
            }
            if Instant::now() >= next_draw {
                terminal.draw(|f| render(f, config, &view))?;
                next_draw = Instant::now() + REFRESH / 2;
            }
            if quit_pressed(REFRESH / 5)? {
                return Ok(());
            }
        }
    })();
    ratatui::try_restore()?;
    result
}

fn quit_pressed(wait: Duration) -> io::Result<bool> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
    if !event::poll(wait)? {
        return Ok(false);
    }
    Ok(match event::read()? {
        Event::Key(k) => {
            matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
        }
        _ => false,
    })
}

/// Not a terminal: every second, the panes as plain text, after a line
/// with the time.
fn run_plain(
    config: &ClusterConfig,
    feed: &crossbeam::channel::Receiver<observe::Update>,
    view: &mut ClusterView,
) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    loop {
        let until = Instant::now() + Duration::from_secs(1);
        while let Ok(update) = feed.recv_deadline(until) {
            view.apply(update);
        }
        let height = (view.nodes.len() as u16) * 2 + 20;
        writeln!(stdout, "{}", plain_text(config, view, 120, height))?;
        stdout.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Update;
    use crate::wire::{FollowerStatus, NodeStatus};

    fn config() -> ClusterConfig {
        crate::config::parse(
            "0 127.0.0.1 7000\n1 127.0.0.1 7001\n2 127.0.0.1 7002\n",
            std::path::Path::new("config.txt"),
        )
        .unwrap()
    }

    fn status(id: u64, role: &str) -> NodeStatus {
        NodeStatus {
            id,
            role: role.into(),
            term: 4,
            leader_id: Some(1),
            commit_index: 17,
            last_log_index: 17,
            last_applied: 17,
            cluster_id: "c".into(),
            refused_messages: 0,
            snapshot_index: 0,
            snapshot_bytes: 0,
            log_entries: 17,
            log_bytes: 900,
            heard_from_leader_ms: (role != "leader").then_some(23),
            suffrage: Some(crate::consensus::membership::Suffrage::Voter),
            ..NodeStatus::default()
        }
    }

    /// A node row's HEARD, in ms.
    fn heard_ms(row: &str) -> u64 {
        let words: Vec<&str> = row.split_whitespace().collect();
        let k = words
            .iter()
            .rposition(|w| *w == "ms")
            .expect("a HEARD in ms");
        words[k - 1].parse().unwrap()
    }

    #[test]
    fn the_view_shows_each_node_the_leaders_followers_and_the_events() {
        let config = config();
        let mut view = ClusterView::new(&config, 100);
        let mut leader = status(1, "leader");
        let follower = FollowerStatus {
            id: 0,
            suffrage: crate::consensus::membership::Suffrage::Voter,
            match_index: 12,
            next_index: 13,
            in_flight: 2,
            state: "replicate".into(),
            reachable: true,
            heard_ms: 8,
        };
        // A learner being added: the change not yet committed.
        let learner = FollowerStatus {
            id: 3,
            suffrage: crate::consensus::membership::Suffrage::Learner,
            match_index: 4,
            ..follower.clone()
        };
        // Just after an election: nothing known of node 2 yet.
        let unknown = FollowerStatus {
            id: 2,
            match_index: 0,
            next_index: 18,
            ..follower.clone()
        };
        leader.followers = vec![follower, learner, unknown];
        (leader.membership_index, leader.membership_committed) = (16, false);
        view.apply(Update::Status(Box::new(status(0, "follower"))));
        view.apply(Update::Status(Box::new(leader)));
        view.apply(Update::Unreachable {
            node: 2,
            error: "Connection refused (os error 111)".into(),
        });
        view.apply(Update::Event(Box::new(NodeEvent {
            node: 1,
            seq: 9,
            time_ms: 3_600_000 + 61_042,
            level: "info".into(),
            term: 4,
            role: "leader".into(),
            kind: "election_won".into(),
            text: "election won for term 4 with 2 of 3 votes".into(),
            detail: Default::default(),
        })));
        let text = plain_text(&config, &view, 120, 24);
        let line = |needle: &str| -> &str {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
        };
        assert!(line("raft config.txt").contains("2 of 3 nodes answer · leader node1, term 4"));
        let node0 = line("│node0 ");
        for cell in ["follower", " 4 ", "node1", " 17 "] {
            assert!(node0.contains(cell), "{cell:?} missing from {node0:?}");
        }
        // 23 ms when its status came, and growing since.
        assert!((23..1023).contains(&heard_ms(node0)), "{node0}");
        assert!(line("│node1 ").contains("leader"));
        assert!(line("│node2 ").contains("unreachable"));
        assert!(line("│node2 ").contains("Connection refused"));
        assert!(text.contains(
            "node1's followers, as the leader sees them; membership change at index 16 not yet committed"
        ));
        assert!(line("node3 (learner)").contains("4 (-13)"));
        let node2 = text
            .lines()
            .find(|l| l.contains("node2") && l.contains("replicate"))
            .unwrap_or_else(|| panic!("no follower row for node2 in:\n{text}"));
        assert!(
            node2.contains("unknown") && !node2.contains("(-17)"),
            "{node2}"
        );
        let follower = line("12 (-5)");
        for cell in ["node0", "13", "2", "replicate", "8 ms ago"] {
            assert!(
                follower.contains(cell),
                "{cell:?} missing from {follower:?}"
            );
        }
        assert!(
            line("election won").contains("01:01:01.042 node1 [T4 leader] election won for term 4")
        );
    }

    #[test]
    fn without_a_leader_the_title_says_so_and_the_latest_events_fit() {
        let config = config();
        let mut view = ClusterView::new(&config, 100);
        for seq in 1..=50 {
            view.apply(Update::Event(Box::new(NodeEvent {
                node: 0,
                seq,
                time_ms: seq,
                level: "info".into(),
                term: 1,
                role: "follower".into(),
                kind: "note".into(),
                text: format!("event number {seq}"),
                detail: Default::default(),
            })));
        }
        let text = plain_text(&config, &view, 100, 20);
        assert!(text.contains("no leader"), "{text}");
        assert!(
            text.contains("event number 50"),
            "the newest shown:\n{text}"
        );
        assert!(!text.contains("event number 1 "), "the oldest scrolled off");
    }

    /// Issue 22: a leader paused with SIGSTOP kept its stream open, so
    /// every row still said it led, and the title "no leader" only once
    /// the stream broke 2 s later. Now a node silent for three status
    /// intervals is shown as silent at once, its last values dimmed, and
    /// the rows and the title agree about the leader nobody hears.
    #[test]
    fn a_silent_leader_is_shown_silent_and_its_followers_as_following_one_that_does_not_answer() {
        let config = config();
        let mut view = ClusterView::new(&config, 100);
        for (id, role) in [(0, "follower"), (1, "leader"), (2, "follower")] {
            view.apply(Update::Status(Box::new(status(id, role))));
        }
        assert!(plain_text(&config, &view, 120, 24).contains("leader node1, term 4"));
        let long_ago = Instant::now().checked_sub(Duration::from_secs(2)).unwrap();
        view.nodes.get_mut(&1).unwrap().status_at = Some(long_ago);
        let text = plain_text(&config, &view, 120, 24);
        let line = |needle: &str| -> &str {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
        };
        assert!(
            line("raft config.txt").contains(
                "2 of 3 nodes answer · no leader answers (node0, node2 still follow node1)"
            ),
            "{text}"
        );
        assert!(line("│node1 ").contains("silent 2.0 s"), "{text}");
        assert!(line("│node0 ").contains("node1?"), "{text}");
        // HEARD is the node's figure (23 ms) plus the time since its
        // status came.
        view.nodes.get_mut(&0).unwrap().status_at = Some(long_ago);
        let text = plain_text(&config, &view, 120, 24);
        let node0 = text.lines().find(|l| l.contains("│node0 ")).unwrap();
        assert!((2023..3023).contains(&heard_ms(node0)), "{node0}");
    }
}
