// Teaching: a caption for each event that matters, saying what happened
// and why, with the section of the Raft paper (§, "In Search of an
// Understandable Consensus Algorithm", extended version) or of Ongaro's
// thesis ("thesis §", "Consensus: Bridging Theory and Practice") that
// says so; and a guided tour that drives the lab and waits for the
// cluster to do what it describes.
"use strict";

const n_ = (id) => `node${id}`;
const plural = (k, one, many) => `${k} ${k === 1 ? one : many}`;

// Why a vote was refused, from the event's `reason` field.
function refusal(reason) {
  if (reason === "stale_term") return ["the candidate's term is older than its own", "§5.1"];
  if (reason === "leading") return ["it leads this term itself", "§5.2"];
  if (reason === "just_started") return ["it has just started and may have promised a leader not to vote (its lease)", "thesis §4.2.3"];
  if (reason && reason.already_voted != null) return [`it already voted for ${n_(reason.already_voted)} in this term: one vote per term`, "§5.2"];
  if (reason && reason.log_behind) {
    const { ours, theirs } = reason.log_behind;
    return [`the candidate's log (last entry of term ${theirs[1]} at ${theirs[0]}) is less up to date than its own (term ${ours[1]} at ${ours[0]}), and a leader must hold every committed entry`, "§5.4.1"];
  }
  if (reason && reason.leader_lease) {
    return [`it heard from its leader ${n_(reason.leader_lease.leader)} ${reason.leader_lease.heard_ago_ms} ms ago, within an election timeout, so that leader is presumably alive`, "thesis §4.2.3"];
  }
  if (reason && reason.repairing) return ["a storage fault cost it entries, and it does not vote until the leader has repaired its log", "§5.4"];
  return ["", ""];
}

// [text, citation, weight] for an event, or null if it has no caption.
// Weight 2: a turn of the story (held on screen while minor ones pass);
// 1: a detail (every vote, every commit).
function captionOf(e) {
  const d = e.detail || {}, who = n_(e.node);
  const timeout = () => {
    const n = state.nodes.get(e.node);
    const ms = n && n.status && n.status.election_timeout_ms;
    return ms ? ` for ${ms} ms` : "";
  };
  switch (e.kind) {
    case "pre_vote_started":
      return [`${who} heard from no leader${timeout()}: its election timer ran out. Before disturbing anyone it asks the others whether they would vote for it in term ${d.term} (a pre-vote), so that a node that was only cut off cannot force a new term on a healthy cluster.`, "§5.2, thesis §9.6", 2];
    case "pre_vote_won":
      return [`${d.votes} of ${d.cluster_size} nodes would vote for ${who}: a majority. It now stands for election for real.`, "thesis §9.6", 1];
    case "pre_vote_lost":
      return [`${who} could not find a majority willing to vote for it (${d.votes} of ${d.cluster_size}): it stays a follower in term ${e.term}, and the others are not disturbed.`, "thesis §9.6", 2];
    case "election_started":
      return [d.transfer
        ? `The leader asked ${who} to take over (leadership transfer): it starts term ${d.term} at once, votes for itself and asks the others for their votes.`
        : `${who} becomes a candidate: it starts term ${d.term}, votes for itself and asks every other node for its vote (RequestVote).`,
      d.transfer ? "thesis §3.10" : "§5.2", 2];
    case "vote_granted": {
      const pre = d.pre_vote ? "would vote" : "votes";
      return [`${who} ${pre} for ${n_(d.candidate)} in term ${d.term}: it has not voted for anyone else in that term, and the candidate's log is at least as up to date as its own.`, "§5.2, §5.4.1", 1];
    }
    case "vote_refused": {
      const [why, cite] = refusal(d.reason);
      const pre = d.pre_vote ? "pre-vote" : "vote";
      return [`${who} refuses its ${pre} to ${n_(d.candidate)} for term ${d.term}${why ? ": " + why : ""}.`, cite, 1];
    }
    case "election_won":
      return [`${who} won term ${d.term} with ${d.votes} of ${d.cluster_size} votes, a majority: no one else can win this term, since each node votes once per term. It now sends heartbeats (empty AppendEntries) to hold off new elections.`, "§5.2", 2];
    case "election_lost":
      return [`${who} did not win term ${d.term} (${d.votes} of ${d.cluster_size} votes). Its timer is set again, to a new random length, so that next time one node is likely to stand alone.`, "§5.2", 2];
    case "leader_known":
      return [`${who} hears from ${n_(d.leader)}, the leader of term ${d.term}, and follows it: each heartbeat resets its election timer.`, "§5.2", 1];
    case "term_adopted":
      return [`${who} saw term ${d.term} from ${n_(d.from)}, newer than its own: it adopts it and becomes a follower (a node with an old term is out of date).`, "§5.1", 1];
    case "quorum_lost":
      return [`${who}, leader of term ${d.term}, heard from only ${d.heard} of ${d.cluster_size} nodes in ${d.window_ms} ms: it steps down rather than go on leading a cluster that may have chosen another leader (CheckQuorum).`, "thesis §6.2", 2];
    case "committed":
      if (e.role !== "leader") return null;
      return [`Entry ${d.index} is committed: the leader counted a majority of logs holding it (its own included). It is now in every future leader's log, and it is applied to the key-value store.`, "§5.3, §5.4.2", 1];
    case "truncated":
      return [`${who} removes ${plural(d.removed, "entry", "entries")} from index ${d.from} on: they conflict with the leader's log, which wins.`, "§5.3; Figure 2, AppendEntries rule 3", 2];
    case "snapshot_send_started":
      return [`${who} sends ${n_(d.peer)} a snapshot up to index ${d.index}: the entries it needs are no longer in the leader's log.`, "§7", 2];
    case "snapshot_installed":
      return [`${who} installed a snapshot up to index ${d.index} from the leader, in place of the entries it missed.`, "§7", 2];
    case "compacted":
      return [`${who} saved a snapshot of its state and dropped ${plural(d.removed, "log entry", "log entries")} up to index ${d.index}.`, "§7", 1];
    case "transfer_started":
      return [`${who} hands its leadership to ${n_(d.target)}: it stops taking writes, brings ${n_(d.target)}'s log up to date, then tells it to stand at once (TimeoutNow).`, "thesis §3.10", 2];
    case "membership_committed":
      return [`A membership change is committed at index ${d.index}${d.change ? ": " + d.change : ""}.`, "thesis §4", 2];
    default:
      return null;
  }
}

const teach = {
  shown: null, // {weight, at}
  lastCaptionAt: 0,

  caption(e) {
    return captionOf(e);
  },

  hello() {
    $("#caption").replaceChildren(el("p", { class: "waiting" }, "What happens will be explained here: try the tour, or a button of the lab."));
    tour.render();
  },

  // In live mode a detail does not replace a turn of the story shown
  // less than 3 s ago; stepping, every caption is shown.
  event(e) {
    const c = captionOf(e);
    if (c) this.say(c, e.node, e.kind);
  },

  nodeDown(n) {
    const up = [...state.nodes.values()].filter((m) => m.up).length;
    const total = state.nodes.size, majority = Math.floor(total / 2) + 1;
    const left = up >= majority
      ? `${up} of ${total} still answer, a majority: the cluster goes on.`
      : `only ${up} of ${total} answer, fewer than a majority (${majority}): nothing can be committed until more return.`;
    this.say([`${n_(n.id)} does not answer (crashed, stopped or unreachable); ${left}`, "§5.1, §5.5", 2], n.id, "down");
  },

  nodeSilent(n, quiet) {
    const leads = n.status && n.status.role === "leader";
    const then = leads
      ? "It leads: its followers hear no heartbeats, so their election timers run down, and the first to run out stands for election."
      : "A follower that misses heartbeats is harmless until it wakes up and finds a newer term.";
    this.say([`${n_(n.id)} has sent nothing for ${Math.round(quiet)} ms (paused, or overloaded): alive, but silent. ${then}`, "§5.2", 2], n.id, "silent");
  },

  say([text, cite, weight], node, kind) {
    const now = story.now();
    if (story.live && this.shown && weight < this.shown.weight && now - this.shown.at < 3000) return;
    this.shown = { weight, at: now };
    const box = $("#caption");
    box.dataset.kind = kind;
    box.dataset.node = node;
    const what = el("p", { class: "what" }, text);
    const previous = box.querySelector("p.what");
    const older = [...box.querySelectorAll("p.older")].slice(0, 2);
    if (previous) previous.className = "older";
    box.replaceChildren(what, el("p", { class: "cite" }, cite), ...(previous ? [previous] : []), ...older);
  },

  frame() {
    tour.check();
  },
};
