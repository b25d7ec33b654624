// raftctl web: draws the cluster from the server's event stream (/stream).
// No framework and nothing fetched from elsewhere: the page is served by
// raftctl itself. Data attributes (data-node, data-role, data-term,
// data-timer, data-action, #leader's data-leader and data-term) describe
// what is shown, for people reading the DOM and for the browser test.
//
// Three files: story.js holds what arrives and decides when it is shown
// (live, or paused and stepped through); teach.js says what an event
// means (the captions) and runs the guided tour; this one draws.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const RING = { cx: 300, cy: 255, r: 190, node: 46, timer: 53 };
const MAX_MESSAGES = 160;
// The events pane keeps this many of each sort: replication chatter
// (appended, committed) cannot push an election out.
const MAX_EVENTS = 200;
const LOG_WINDOW = 24;
// Entry kinds that are replication chatter, hidden unless asked for.
const CHATTER = new Set(["appended", "committed", "compacted"]);

const state = {
  nodes: new Map(), // id -> {id, address, status, statusAt, lastSeen, up, error, el}
  order: [],
  lab: null,
  statusMs: 250,
  messages: [], // {from, to, kind, reply, start, duration}
  dirtyLogs: true,
};

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};
const termColor = (term) => `hsl(${(term * 67) % 360}, 62%, 62%)`;

function position(id) {
  const k = state.order.indexOf(id);
  const n = state.order.length;
  const a = (2 * Math.PI * k) / n - Math.PI / 2;
  return { x: RING.cx + RING.r * Math.cos(a), y: RING.cy + RING.r * Math.sin(a) };
}

// ----- what a node is, at the story's time -----

// How long the page has heard nothing from a node whose stream is up:
// each node sends its status every state.statusMs, so three intervals of
// silence is a node that stopped (SIGSTOP) or cannot keep up. Its stream
// breaks only after seconds; this shows it within about a heartbeat.
function silentFor(n) {
  if (!n.up || n.lastSeen == null) return null;
  const quiet = story.now() - n.lastSeen;
  return quiet > 3 * state.statusMs ? quiet : null;
}

// "answers": up, and not silent.
const answers = (n) => n.up && n.status && silentFor(n) == null;

function leader() {
  let best = null;
  for (const n of state.nodes.values()) {
    if (answers(n) && n.status.role === "leader" && (!best || n.status.term > best.status.term)) best = n;
  }
  return best;
}

// ----- applying what arrived (story.js decides when) -----

function apply(msg) {
  switch (msg.type) {
    case "hello": return hello(msg);
    case "status": {
      const node = state.nodes.get(msg.status.id);
      if (!node) return;
      node.status = msg.status;
      node.statusAt = msg.at;
      node.lastSeen = msg.at;
      node.up = true;
      node.error = null;
      state.dirtyLogs = true;
      return;
    }
    case "up": {
      const node = state.nodes.get(msg.node);
      if (node) node.up = true;
      return;
    }
    case "down": {
      const node = state.nodes.get(msg.node);
      if (!node) return;
      const was = node.up;
      node.up = false;
      node.error = msg.error;
      state.dirtyLogs = true;
      if (was && !msg.replay) teach.nodeDown(node);
      return;
    }
    case "event": return event(msg.event, msg.replay, msg.at);
    case "dropped": $("#lab-result").textContent = msg.error; return;
  }
}

function hello(msg) {
  $("#config").textContent = msg.config;
  state.lab = msg.lab;
  state.statusMs = msg.status_ms || 250;
  state.nodes.clear();
  state.order = msg.nodes.map((n) => n.id);
  for (const n of msg.nodes) {
    state.nodes.set(n.id, { id: n.id, address: n.address, status: null, up: false, error: "connecting" });
  }
  drawRing();
  drawControls();
  $("#events").replaceChildren();
  teach.hello();
}

function event(e, replay, at) {
  const node = state.nodes.get(e.node);
  if (node && !replay) node.lastSeen = at;
  if (e.kind === "message_sent") {
    if (!replay) message(e.detail);
    return;
  }
  if (e.kind === "message_received" || e.level === "debug") return;
  // Role, term and leader change at once, without waiting for the next
  // status, and together: a node that starts term 5 follows no one yet.
  if (node && node.status && !replay && e.term >= node.status.term) {
    const s = node.status;
    if (e.term > s.term || e.role === "candidate" || e.role === "precandidate") s.leader_id = null;
    if (e.role === "leader") s.leader_id = e.node;
    if (e.kind === "leader_known") s.leader_id = e.detail.leader;
    s.term = e.term;
    s.role = e.role;
  }
  addEvent(e);
  if (!replay) teach.event(e);
}

function addEvent(e) {
  const li = el("li");
  let cls = e.level;
  if (e.kind === "election_won") cls += " won";
  else if (e.kind.startsWith("election") || e.kind.startsWith("pre_vote")) cls += " election";
  else if (e.kind.startsWith("vote")) cls += " vote";
  const chatter = CHATTER.has(e.kind);
  if (chatter) cls += " chatter";
  li.className = cls;
  li.dataset.kind = e.kind;
  li.dataset.node = e.node;
  li.dataset.time = e.time_ms;
  const t = new Date(e.time_ms).toISOString().slice(11, 23);
  // The activity log's role line is in the courses' format ("STATE:
  // Leader | TERM: 7", which their scripts grep); here, in words.
  const text = e.kind === "role_changed"
    ? `became ${e.detail.role.replace("_", "-")} in term ${e.detail.term}`
    : e.text;
  li.title = e.text;
  li.append(el("span", { class: "time" }, t + " "), `node${e.node} [T${e.term} ${e.role}] ${text}`);
  // Newest first, by the nodes' clocks: the streams of different nodes
  // interleave a little out of order.
  const list = $("#events");
  let after = null;
  for (const other of list.children) {
    if (Number(other.dataset.time) <= e.time_ms) { after = other; break; }
  }
  list.insertBefore(li, after);
  // The oldest of the same sort goes.
  const same = list.querySelectorAll(chatter ? "li.chatter" : "li:not(.chatter)");
  if (same.length > MAX_EVENTS) same[same.length - 1].remove();
}

function message(d) {
  if (!state.nodes.has(d.from) || !state.nodes.has(d.to)) return;
  const reply = d.rpc.endsWith("_reply");
  let kind = "append"; // entries, a snapshot chunk
  if (d.rpc.startsWith("request_vote") || d.rpc.startsWith("timeout_now")) kind = "vote";
  // An AppendEntries reply does not say whether it answers a heartbeat:
  // drawn (and hidden) with the heartbeats.
  else if (d.rpc === "append_entries_reply" || (d.rpc === "append_entries" && d.entries === 0)) kind = "heartbeat";
  if (kind === "heartbeat" && !$("#show-heartbeats").checked) return;
  const speed = Number($("#speed").value);
  state.messages.push({ from: d.from, to: d.to, kind, reply, start: performance.now(), duration: 1800 / speed });
  if (state.messages.length > MAX_MESSAGES) state.messages.shift();
}

// ----- drawing -----

function drawRing() {
  const links = $("#links"), nodes = $("#nodes");
  links.replaceChildren();
  nodes.replaceChildren();
  for (let i = 0; i < state.order.length; i++) {
    for (let j = i + 1; j < state.order.length; j++) {
      const a = position(state.order[i]), b = position(state.order[j]);
      links.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
    }
  }
  const around = 2 * Math.PI * RING.timer;
  for (const id of state.order) {
    const p = position(id);
    const g = svg("g", { class: "node down", "data-node": id, transform: `translate(${p.x},${p.y})` });
    // The election timer: a ring that runs down clockwise from the top.
    const timer = svg("circle", {
      class: "timer", r: RING.timer, transform: "rotate(-90)",
      "stroke-dasharray": `${around} ${around}`,
    });
    g.append(timer, svg("circle", { class: "body", r: RING.node }));
    const name = svg("text", { class: "name", y: -6 });
    name.textContent = `node${id}`;
    const term = svg("text", { class: "term", y: 14 });
    const note = svg("text", { class: "note", y: RING.node + 22 });
    g.append(name, term, note);
    nodes.append(g);
    state.nodes.get(id).el = { g, term, note, timer, around };
  }
}

// What fraction of its election timeout a node has left, at the story's
// time: from the deadline its last status published, run down since.
function timerLeft(n) {
  const s = n.status;
  if (!answers(n) || s.election_in_ms == null || !s.election_timeout_ms) return null;
  const left = s.election_in_ms - (story.now() - n.statusAt);
  return Math.max(0, Math.min(1, left / s.election_timeout_ms));
}

function drawNodes() {
  for (const n of state.nodes.values()) {
    if (!n.el) continue;
    const s = n.status;
    const quiet = silentFor(n);
    let role = n.up && s ? s.role : "down";
    if (quiet != null) role = "silent";
    // A learner receives the log but does not vote (thesis §4.2.1);
    // "leaving": a voter of the old half of a joint configuration only.
    const suffrage = n.up && s ? s.suffrage || "none" : "";
    const extra = suffrage && suffrage !== "voter" ? ` ${suffrage}` : "";
    n.el.g.setAttribute("class", `node ${role}${extra}${s && s.isolated && n.up ? " isolated" : ""}`);
    n.el.g.dataset.role = role;
    n.el.g.dataset.suffrage = suffrage;
    n.el.g.dataset.term = s ? s.term : "";
    n.el.term.textContent = s ? `term ${s.term}` : "";
    // When the page first showed it silent (the browser test measures
    // from its last message to here).
    if (quiet != null && n.silentShownAt == null) {
      n.silentShownAt = story.now();
      teach.nodeSilent(n, quiet);
    }
    if (quiet == null) n.silentShownAt = null;
    const left = timerLeft(n);
    n.el.timer.style.display = left == null ? "none" : "";
    n.el.timer.setAttribute("stroke-dashoffset", left == null ? 0 : n.el.around * (1 - left));
    n.el.g.dataset.timer = left == null ? "" : left.toFixed(3);
    n.el.note.textContent = nodeNote(n, s, quiet, suffrage, extra);
  }
  drawHead();
}

function nodeNote(n, s, quiet, suffrage, extra) {
  let note = "";
  if (!n.up) note = "unreachable";
  else if (quiet != null) note = `silent ${(quiet / 1000).toFixed(1)} s`;
  else if (s && s.isolated) note = "cut off (lab)";
  else if (s && s.role === "leader") note = `commit ${s.commit_index}`;
  // HEARD grows between statuses, as it does on the node.
  else if (s && s.heard_from_leader_ms != null) note = `heard ${Math.round(s.heard_from_leader_ms + story.now() - n.statusAt)} ms ago`;
  else if (s) note = "no leader";
  if (extra) note = `${suffrage === "none" ? "not a member" : suffrage} · ${note}`;
  return note;
}

function drawHead() {
  const l = leader(), head = $("#leader");
  if (l) {
    let phase = "";
    if (l.status.outgoing_voters && l.status.outgoing_voters.length) {
      phase += ` · joint consensus with the old voters ${l.status.outgoing_voters.join(" ")}`;
    }
    if (l.status.membership_committed === false) {
      phase += ` · membership change at index ${l.status.membership_index} not yet committed`;
    }
    head.textContent = `node${l.id} leads term ${l.status.term}${phase}`;
    head.className = "";
    head.dataset.leader = l.id;
    head.dataset.term = l.status.term;
    return;
  }
  // Followers of a leader that stopped answering still name it until
  // their timers run out: said, so the header and the nodes agree.
  const following = [...state.nodes.values()].filter((n) => answers(n) && n.status.leader_id != null);
  const gone = following.length ? following[0].status.leader_id : null;
  const names = following.filter((n) => n.status.leader_id === gone).map((n) => `node${n.id}`);
  head.textContent = gone == null ? "no leader" :
    `no leader answers (${names.join(", ")} still follow${names.length === 1 ? "s" : ""} node${gone})`;
  head.className = "none";
  head.dataset.leader = "";
  head.dataset.term = "";
}

function drawMessages(now) {
  const layer = $("#messages");
  state.messages = state.messages.filter((m) => now - m.start < m.duration);
  while (layer.children.length < state.messages.length) layer.append(svg("circle"));
  while (layer.children.length > state.messages.length) layer.lastChild.remove();
  state.messages.forEach((m, k) => {
    const a = position(m.from), b = position(m.to);
    const t = Math.min(1, (now - m.start) / m.duration);
    // Requests and replies travel a little apart, so both can be seen.
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const off = m.reply ? -7 : 7;
    const x = a.x + dx * t + (-dy / len) * off, y = a.y + dy * t + (dx / len) * off;
    const c = layer.children[k];
    c.setAttribute("cx", x);
    c.setAttribute("cy", y);
    c.setAttribute("r", m.reply ? 4 : 6);
    c.setAttribute("class", `${m.kind}${m.reply ? " reply" : ""}`);
  });
}

function drawLogs() {
  state.dirtyLogs = false;
  const rows = [];
  let maxLast = 0;
  for (const n of state.nodes.values()) if (n.status) maxLast = Math.max(maxLast, n.status.last_log_index);
  const from = Math.max(1, maxLast - LOG_WINDOW + 1);
  $("#log-window").textContent = maxLast === 0 ? "" :
    from > 1 ? `entries ${from} to ${maxLast} (of ${maxLast})` : `entries 1 to ${maxLast}`;
  for (const id of state.order) {
    const n = state.nodes.get(id), s = n.status;
    // A node that went down keeps its last known log, greyed.
    const row = el("div", { class: `row${n.up ? "" : " down"}`, "data-node": id });
    row.append(el("span", { class: "label" }, `node${id}${n.up ? "" : " ✕"}`));
    for (let i = from; i <= maxLast; i++) row.append(logBox(s, i));
    if (s && s.last_log_index < from) {
      row.append(el("span", { class: "tail" }, `… ${maxLast - s.last_log_index} entries behind`));
    }
    if (s) row.append(el("span", { class: "tail" }, `commit ${s.commit_index} · last ${s.last_log_index}${n.up ? "" : " · as last seen"}`));
    rows.push(row);
  }
  $("#logs").replaceChildren(...rows);
}

function logBox(s, i) {
  const box = el("span", { class: "box empty" });
  if (!s || i > s.last_log_index) return box;
  const tail = s.log_tail_terms || [];
  const k = tail.length - 1 - (s.last_log_index - i);
  if (k >= 0) {
    const term = tail[k];
    box.className = "box" + (i <= s.commit_index ? "" : " uncommitted") + (i === s.commit_index ? " commit" : "");
    box.style.background = termColor(term);
    box.textContent = term;
    box.title = `index ${i}, term ${term}${i <= s.commit_index ? ", committed" : ", not committed"}`;
  } else if (i <= s.snapshot_index) {
    box.className = "box";
    box.style.background = "#3a4355";
    box.title = `index ${i}: in the snapshot`;
  }
  return box;
}

function drawControls() {
  const panel = $("#controls");
  panel.hidden = !state.lab;
  const table = $("#lab");
  table.replaceChildren();
  const actions = [
    ["stop", "stop", "SIGTERM: a clean stop; a leader hands over first"],
    ["kill", "kill", "SIGKILL: a crash"],
    ["pause", "pause", "SIGSTOP: frozen; its peers hear nothing"],
    ["resume", "resume", "SIGCONT"],
    ["restart", "restart", "start it again (stopping it first if it runs)"],
    ["isolate", "cut off", "cut it off from its peers (the node must run with --lab)"],
    ["heal", "reconnect", "reconnect it to its peers"],
  ];
  for (const id of state.order) {
    const tr = el("tr");
    tr.append(el("td", {}, `node${id}`));
    const td = el("td");
    for (const [action, label, title] of actions) {
      const b = el("button", { "data-node": id, "data-action": action, title, type: "button" }, label);
      if (action === "kill") b.className = "danger";
      b.addEventListener("click", () => lab(id, action));
      td.append(b, " ");
    }
    tr.append(td);
    table.append(tr);
  }
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "X-Raftctl": "1", "Content-Type": "application/json" },
    body: body === undefined ? "" : JSON.stringify(body),
  });
  return r.json();
}

async function lab(id, action) {
  const out = $("#lab-result");
  out.textContent = `node${id}: ${action}…`;
  try {
    const answer = await post(`/api/lab/${id}/${action}`);
    out.textContent = answer.done || answer.error;
    return answer;
  } catch (e) {
    out.textContent = String(e);
    return { error: String(e) };
  }
}

async function put(key, value) {
  try {
    return await post("/api/put", { key, value });
  } catch (e) {
    return { error: String(e) };
  }
}

$("#put").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#put-result");
  out.textContent = "…";
  const answer = await put($("#put-key").value, $("#put-value").value);
  out.textContent = answer.error ? answer.error : `committed at index ${answer.index}`;
});

$("#show-chatter").addEventListener("change", (ev) => {
  $("#events").classList.toggle("hide-chatter", !ev.target.checked);
});

let lastLogs = 0;
function frame(now) {
  story.tick();
  drawNodes();
  drawMessages(now);
  if (state.dirtyLogs && now - lastLogs > 200) {
    lastLogs = now;
    drawLogs();
  }
  teach.frame();
  requestAnimationFrame(frame);
}

tour.bind();
story.connect();
requestAnimationFrame(frame);
