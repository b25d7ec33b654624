// raftctl web: draws the cluster from the server's event stream (/stream).
// No framework and nothing fetched from elsewhere: the page is served by
// raftctl itself. Data attributes (data-node, data-role, data-term,
// data-action, #leader's data-leader and data-term) describe what is shown,
// for people reading the DOM and for the browser test.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const RING = { cx: 300, cy: 255, r: 190, node: 46 };
const MAX_MESSAGES = 160;
const MAX_EVENTS = 200;
const LOG_WINDOW = 24;

const state = {
  nodes: new Map(), // id -> {id, address, status, up, error, el}
  order: [],
  lab: null,
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

// ----- the stream -----

function connect() {
  const source = new EventSource("/stream");
  source.onmessage = (m) => handle(JSON.parse(m.data));
  source.onerror = () => {
    $("#leader").textContent = "connection to raftctl lost; retrying…";
    $("#leader").className = "none";
  };
}

function handle(msg) {
  switch (msg.type) {
    case "hello": return hello(msg);
    case "status": {
      const node = state.nodes.get(msg.status.id);
      if (!node) return;
      node.status = msg.status;
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
      if (node) { node.up = false; node.error = msg.error; state.dirtyLogs = true; }
      return;
    }
    case "event": return event(msg.event, msg.replay);
    case "dropped": $("#lab-result").textContent = msg.error; return;
  }
}

function hello(msg) {
  $("#config").textContent = msg.config;
  state.lab = msg.lab;
  state.nodes.clear();
  state.order = msg.nodes.map((n) => n.id);
  for (const n of msg.nodes) {
    state.nodes.set(n.id, { id: n.id, address: n.address, status: null, up: false, error: "connecting" });
  }
  drawRing();
  drawControls();
  $("#events").replaceChildren();
}

function event(e, replay) {
  if (e.kind === "message_sent") {
    if (!replay) message(e.detail);
    return;
  }
  if (e.kind === "message_received" || e.level === "debug") return;
  // Role and term change at once, without waiting for the next status.
  const node = state.nodes.get(e.node);
  if (node && node.status && !replay && e.term >= node.status.term) {
    node.status.term = e.term;
    node.status.role = e.role;
  }
  const li = el("li");
  let cls = e.level;
  if (e.kind === "election_won") cls += " won";
  else if (e.kind.startsWith("election") || e.kind.startsWith("pre_vote")) cls += " election";
  else if (e.kind.startsWith("vote")) cls += " vote";
  li.className = cls;
  li.dataset.kind = e.kind;
  li.dataset.node = e.node;
  li.dataset.time = e.time_ms;
  const t = new Date(e.time_ms).toISOString().slice(11, 23);
  li.append(el("span", { class: "time" }, t + " "), `node${e.node} [T${e.term} ${e.role}] ${e.text}`);
  // Newest first, by the nodes' clocks: the streams of different nodes
  // interleave a little out of order.
  const list = $("#events");
  let after = null;
  for (const other of list.children) {
    if (Number(other.dataset.time) <= e.time_ms) { after = other; break; }
  }
  list.insertBefore(li, after);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
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
  for (const id of state.order) {
    const p = position(id);
    const g = svg("g", { class: "node down", "data-node": id, transform: `translate(${p.x},${p.y})` });
    g.append(svg("circle", { class: "body", r: RING.node }));
    const name = svg("text", { class: "name", y: -6 });
    name.textContent = `node${id}`;
    const term = svg("text", { class: "term", y: 14 });
    const note = svg("text", { class: "note", y: RING.node + 18 });
    g.append(name, term, note);
    nodes.append(g);
    state.nodes.get(id).el = { g, term, note };
  }
}

function leader() {
  let best = null;
  for (const n of state.nodes.values()) {
    if (n.up && n.status && n.status.role === "leader" && (!best || n.status.term > best.status.term)) best = n;
  }
  return best;
}

function drawNodes() {
  for (const n of state.nodes.values()) {
    if (!n.el) continue;
    const s = n.status;
    const role = n.up && s ? s.role : "down";
    // A learner receives the log but does not vote (thesis §4.2.1);
    // "leaving": a voter of the old half of a joint configuration only.
    const suffrage = n.up && s ? s.suffrage || "none" : "";
    const extra = suffrage && suffrage !== "voter" ? ` ${suffrage}` : "";
    n.el.g.setAttribute("class", `node ${role}${extra}${s && s.isolated && n.up ? " isolated" : ""}`);
    n.el.g.dataset.role = role;
    n.el.g.dataset.suffrage = suffrage;
    n.el.g.dataset.term = s ? s.term : "";
    n.el.term.textContent = s ? `term ${s.term}` : "";
    let note = "";
    if (!n.up) note = "unreachable";
    else if (s && s.isolated) note = "cut off (lab)";
    else if (s && s.role === "leader") note = `commit ${s.commit_index}`;
    else if (s && s.heard_from_leader_ms != null) note = `heard ${s.heard_from_leader_ms} ms ago`;
    else if (s) note = "no leader";
    if (extra) note = `${suffrage === "none" ? "not a member" : suffrage} · ${note}`;
    n.el.note.textContent = note;
  }
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
  } else {
    head.textContent = "no leader";
    head.className = "none";
    head.dataset.leader = "";
    head.dataset.term = "";
  }
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
  for (const id of state.order) {
    const n = state.nodes.get(id), s = n.status;
    const row = el("div", { class: "row", "data-node": id });
    row.append(el("span", { class: "label" }, `node${id}${n.up ? "" : " ✕"}`));
    for (let i = from; i <= maxLast; i++) {
      const box = el("span", { class: "box empty" });
      if (s && i <= s.last_log_index) {
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
      }
      row.append(box);
    }
    if (s && s.last_log_index < from) {
      row.append(el("span", { class: "tail" }, `… ${maxLast - s.last_log_index} entries behind`));
    }
    if (s) row.append(el("span", { class: "tail" }, `commit ${s.commit_index} · last ${s.last_log_index}`));
    rows.push(row);
  }
  $("#logs").replaceChildren(...rows);
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
  } catch (e) {
    out.textContent = String(e);
  }
}

$("#put").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#put-result");
  out.textContent = "…";
  try {
    const answer = await post("/api/put", { key: $("#put-key").value, value: $("#put-value").value });
    out.textContent = answer.error ? answer.error : `committed at index ${answer.index}`;
  } catch (e) {
    out.textContent = String(e);
  }
});

let lastLogs = 0;
function frame(now) {
  drawNodes();
  drawMessages(now);
  if (state.dirtyLogs && now - lastLogs > 200) {
    lastLogs = now;
    drawLogs();
  }
  requestAnimationFrame(frame);
}

connect();
requestAnimationFrame(frame);
