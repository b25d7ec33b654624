// The cluster's story as the page tells it: what arrives from /stream,
// stamped with the page's clock when it arrives, and shown either at
// once (live) or later: paused, the page keeps receiving into a queue
// while the cluster runs on; "step" shows the queue up to the next event
// with a caption, "play" plays it back at the chosen speed (faster than
// the cluster ran, unless slow, so that it catches up), "live" catches
// up at once. Everything is drawn at story.now(), so timers, HEARD and
// silences freeze with the picture and move with the playback.
"use strict";

// At most this many updates wait while paused (several minutes of a
// five-node cluster); past it the page goes back to live and says so.
const STORY_MAX = 50000;

const story = {
  live: true,
  playing: false,
  queue: [],
  clock: 0, // the story's time while not live (performance.now() scale)
  stoppedAt: null, // the kind of what the last step stopped at
  lastTick: 0,
  note: "",

  connect() {
    const source = new EventSource("/stream");
    source.onmessage = (m) => this.receive(JSON.parse(m.data));
    source.onerror = () => {
      $("#leader").textContent = "connection to raftctl lost; retrying…";
      $("#leader").className = "none";
    };
    for (const [id, f] of [["#pause", () => this.pause()], ["#step", () => this.step()],
      ["#play", () => this.play()], ["#live", () => this.goLive()]]) {
      $(id).addEventListener("click", f);
    }
    this.show();
  },

  receive(msg) {
    msg.at = performance.now();
    if (this.live) return apply(msg);
    this.queue.push(msg);
    if (this.queue.length > STORY_MAX) {
      this.goLive();
      this.note = `paused too long: more than ${STORY_MAX} updates waited, so the page went back to live`;
    }
  },

  now() {
    return this.live ? performance.now() : this.clock;
  },

  pause() {
    if (!this.live) { this.playing = false; return this.show(); }
    this.live = false;
    this.playing = false;
    this.clock = performance.now();
    this.note = "";
    this.show();
  },

  // Shows the queue up to and including the next turn of the story: an
  // event with a caption, or a node that was up going down (what
  // happened between comes with it: statuses, messages).
  step() {
    if (this.live) this.pause();
    this.playing = false;
    this.stoppedAt = null;
    while (this.queue.length) {
      const msg = this.queue.shift();
      const stop = this.stopsAt(msg, (id) => state.nodes.get(id)?.up);
      this.clock = Math.max(this.clock, msg.at);
      apply(msg);
      if (stop) {
        this.stoppedAt = msg.type === "down" ? "down" : msg.event.kind;
        break;
      }
    }
    this.show();
  },

  stopsAt(msg, isUp) {
    if (msg.replay) return false;
    if (msg.type === "event") return !!teach.caption(msg.event);
    return msg.type === "down" && !!isUp(msg.node);
  },

  // What "step" would show next: {kind ("down" or the event's), caption}
  // or null.
  nextStop() {
    const up = new Map([...state.nodes.values()].map((n) => [n.id, n.up]));
    for (const msg of this.queue) {
      if (this.stopsAt(msg, (id) => up.get(id))) {
        if (msg.type === "down") return { kind: "down", caption: null };
        return { kind: msg.event.kind, caption: teach.caption(msg.event)[0] };
      }
      if (msg.type === "up") up.set(msg.node, true);
      if (msg.type === "status") up.set(msg.status.id, true);
      if (msg.type === "down") up.set(msg.node, false);
    }
    return null;
  },

  play() {
    if (this.live) return;
    this.playing = true;
    this.lastTick = performance.now();
    this.show();
  },

  goLive() {
    while (this.queue.length) apply(this.queue.shift());
    this.live = true;
    this.playing = false;
    this.show();
  },

  // Each animation frame: playing, the story's clock runs at the chosen
  // speed and what arrived by then is shown; caught up, it is live.
  tick() {
    const real = performance.now();
    if (this.live || !this.playing) {
      this.lastTick = real;
      if (!this.live) this.show(); // how far behind grows
      return;
    }
    // slow 0.6×, normal 1.5×, fast 3.6× the cluster's pace: faster than
    // real time, except slow, so that playing catches up.
    const rate = Number($("#speed").value) * 0.6;
    this.clock += (real - this.lastTick) * rate;
    this.lastTick = real;
    while (this.queue.length && this.queue[0].at <= this.clock) apply(this.queue.shift());
    if (!this.queue.length && this.clock >= real) this.goLive();
    else this.show();
  },

  show() {
    const panel = $("#story");
    panel.dataset.mode = this.live ? "live" : this.playing ? "playing" : "paused";
    let text = "live";
    if (!this.live) {
      const behind = ((performance.now() - this.clock) / 1000).toFixed(1);
      text = `${this.playing ? "playing back" : "paused"} · ${behind} s behind · ${this.queue.length} updates waiting`;
    }
    $("#story-status").textContent = this.note ? `${text} · ${this.note}` : text;
    $("#pause").disabled = !this.live && !this.playing;
    $("#play").disabled = this.live || this.playing;
    $("#live").disabled = this.live;
  },
};
