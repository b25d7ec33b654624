// The guided tour: election, replication, a leader crash, writes without
// it, the crashed node catching up, a partition and its healing (in that
// order, so that three nodes are enough: the partition needs all three
// up for the two left to elect). Each step says
// what to look at, offers the lab action that makes it happen (pressed
// by the student, not by the tour), and waits for the cluster to show
// it, at the story's time: paused, the tour waits too. #tour's
// data-step and data-done say where it is, for the browser test.
"use strict";

const answering = () => [...state.nodes.values()].filter((n) => answers(n));

// The lab's `action` on the node leading now; its id and term kept in
// ctx[as] and ctx[as + "Term"] for the step's check.
async function onLeader(ctx, action, as) {
  const l = leader();
  if (!l) return "no leader right now: wait for one";
  ctx[as] = l.id;
  ctx[as + "Term"] = l.status.term;
  return onNode(l.id, action);
}

// The lab's `action` on node `id`: what it did, or why not.
async function onNode(id, action) {
  const answer = await lab(id, action);
  return answer.done || answer.error;
}

const TOUR = [
  {
    title: "A leader is elected",
    body: () => {
      return `Every node starts as a follower with an election timer: the white ring around it, set to a random length each time it is reset, so that one usually runs out first. A follower whose timer runs out stands for election; with a majority of votes it leads. Its heartbeats reset everyone else's timer: watch the rings jump back up as each arrives.`;
    },
    cite: "§5.2",
    check: () => {
      const l = leader();
      return l && `${n_(l.id)} leads term ${l.status.term}: it won a majority of votes, and its heartbeats keep the other timers from running out.`;
    },
  },
  {
    title: "The log is replicated",
    body: () => "A write goes to the leader, which appends it to its log and sends it to each follower in AppendEntries. Once a majority of logs hold it, the leader commits it and applies it; the followers learn the commit index from the next AppendEntries. Watch the logs panel: a dashed box is an entry not yet committed.",
    cite: "§5.3",
    action: { label: "write a value", run: async (ctx) => {
      const answer = await put("tour", `value ${new Date().toISOString().slice(11, 19)}`);
      if (answer.error) return answer.error;
      ctx.written = answer.index;
      return `written at index ${answer.index}`;
    } },
    check: (ctx) => {
      const l = leader();
      if (!ctx.written || !l || l.status.commit_index < ctx.written) return null;
      const holding = answering().filter((n) => n.status.last_log_index >= ctx.written).length;
      return `Entry ${ctx.written} is committed, on ${holding} of ${state.nodes.size} logs: once a majority holds it, it is in every future leader's log.`;
    },
  },
  {
    title: "The leader crashes",
    body: (ctx) => `Kill the leader${ctx.killed != null ? `, ${n_(ctx.killed)},` : ""} with SIGKILL. Its followers stop hearing heartbeats; their timers run down; one stands, and a node whose log is at least as up to date as a majority's wins, so no committed entry is lost.`,
    cite: "§5.2, §5.4.1",
    needsLab: true,
    action: { label: "kill the leader", run: (ctx) => onLeader(ctx, "kill", "killed") },
    check: (ctx) => {
      const l = leader();
      if (ctx.killed == null || !l || l.id === ctx.killed || l.status.term <= ctx.killedTerm) return null;
      return `${n_(l.id)} leads term ${l.status.term}: the followers' timers ran out without a heartbeat, one stood, and a majority voted for it.`;
    },
  },
  {
    title: "Writes go on without it",
    body: (ctx) => `${n_(ctx.killed)} is down, but a majority is still up: writes still commit. ${n_(ctx.killed)} misses them; it will catch up later.`,
    cite: "§5.3",
    action: { label: "write three values", run: async (ctx) => {
      for (let k = 1; k <= 3; k++) {
        const answer = await put(`tour${k}`, `while ${n_(ctx.killed)} is down`);
        if (answer.error) return answer.error;
        ctx.writtenWhileDown = answer.index;
      }
      return `written up to index ${ctx.writtenWhileDown}`;
    } },
    check: (ctx) => {
      const l = leader(), last = ctx.writtenWhileDown;
      if (!last || !l || l.status.commit_index < last) return null;
      return `Committed up to ${last} with ${answering().length} of ${state.nodes.size} nodes up: a majority is enough.`;
    },
  },
  {
    title: "A node catches up",
    body: (ctx) => `Restart ${n_(ctx.killed)}, killed earlier. It reads its term, vote and log back from its disk; the leader finds where their logs last agree (AppendEntries backs up until they match) and sends what it missed, or a snapshot if its log no longer holds it.`,
    cite: "§5.3, §7",
    needsLab: true,
    action: { label: "restart it", run: (ctx) => onNode(ctx.killed, "restart") },
    check: (ctx) => {
      const n = state.nodes.get(ctx.killed);
      if (!n || !answers(n) || n.status.last_log_index < ctx.writtenWhileDown) return null;
      return `${n_(ctx.killed)} holds the log up to ${n.status.last_log_index}, the entries written while it was down included.`;
    },
  },
  {
    title: "A partition",
    body: () => "Cut the leader off from its peers (it still answers this page). It hears from no majority, so it steps down (CheckQuorum); the others elect a new leader. Its own pre-votes fail, so it does not raise its term and will not disrupt the cluster when it returns.",
    cite: "thesis §6.2, §9.6",
    needsLab: true,
    action: { label: "cut off the leader", run: (ctx) => onLeader(ctx, "isolate", "cut") },
    check: (ctx) => {
      const l = leader(), cut = state.nodes.get(ctx.cut);
      if (ctx.cut == null || !l || l.id === ctx.cut || l.status.term <= ctx.cutTerm) return null;
      if (!cut || !cut.status || cut.status.role === "leader") return null;
      return `${n_(l.id)} leads term ${l.status.term}; ${n_(ctx.cut)} stepped down and stays in term ${cut.status.term}.`;
    },
  },
  {
    title: "The partition heals",
    body: (ctx) => `Reconnect ${n_(ctx.cut)}. Its term is not higher than the leader's, so the leader's next heartbeat simply makes it a follower again: no election.`,
    cite: "§5.1, thesis §9.6",
    needsLab: true,
    action: { label: "reconnect it", run: (ctx) => onNode(ctx.cut, "heal") },
    check: (ctx) => {
      const l = leader(), cut = state.nodes.get(ctx.cut);
      if (!l || !cut || !answers(cut) || cut.status.isolated || cut.status.leader_id !== l.id) return null;
      return `${n_(ctx.cut)} follows ${n_(l.id)} in term ${l.status.term}.`;
    },
  },
  {
    title: "That is Raft",
    body: () => "Leader election, log replication and safety, on a real cluster. The lab's other buttons (pause, stop, cut off a follower) and the pause and step controls above let you look at any of it slowly. The paper's figure 2 is the whole algorithm on one page.",
    cite: "Figure 2",
    check: () => "The end of the tour.",
  },
];

const tour = {
  step: -1, // -1: not running
  ctx: {},
  done: null,
  result: "",

  start() {
    this.ctx = {};
    this.go(0);
  },

  go(k) {
    this.step = k >= TOUR.length ? -1 : k;
    this.done = null;
    this.result = "";
    const s = TOUR[this.step];
    if (s && s.enter) s.enter(this.ctx);
    this.render();
  },

  render() {
    const box = $("#tour");
    box.hidden = this.step < 0;
    box.dataset.step = this.step;
    box.dataset.done = this.done ? "true" : "false";
    if (this.step < 0) return;
    const s = TOUR[this.step];
    $("#tour-title").textContent = `${this.step + 1} of ${TOUR.length} · ${s.title}`;
    $("#tour-body").textContent = s.body(this.ctx);
    $("#tour-cite").textContent = s.cite;
    const action = $("#tour-action");
    const blocked = s.needsLab && !state.lab;
    action.hidden = !s.action;
    action.disabled = !!this.done || blocked;
    if (s.action) action.textContent = s.action.label;
    $("#tour-result").textContent = blocked
      ? "this step needs the lab: start raftctl web --lab, and the nodes with --lab"
      : this.done || this.result;
    $("#tour-result").className = this.done ? "done" : "";
    $("#tour-next").disabled = !this.done;
    $("#tour-next").textContent = this.step === TOUR.length - 1 ? "close" : "next ▸";
  },

  async act() {
    const s = TOUR[this.step];
    if (!s || !s.action) return;
    const step = this.step;
    this.result = "…";
    this.render();
    const result = await s.action.run(this.ctx);
    if (this.step === step && !this.done) { this.result = result; this.render(); }
  },

  // Each frame: has the cluster shown what this step waits for? (And
  // the step's text, which names nodes, kept up to date.)
  check() {
    if (this.step < 0 || this.done) return;
    const s = TOUR[this.step];
    const done = s.check(this.ctx);
    if (done) { this.done = done; this.render(); return; }
    const body = s.body(this.ctx);
    if ($("#tour-body").textContent !== body) $("#tour-body").textContent = body;
  },


  bind() {
    $("#tour-start").addEventListener("click", () => this.start());
    $("#tour-action").addEventListener("click", () => this.act());
    $("#tour-next").addEventListener("click", () => this.go(this.step + 1));
    $("#tour-close").addEventListener("click", () => this.go(TOUR.length));
  },
};
