// The live dashboard: one EventSource (/api/stream), the DOM built with textContent only
// (a reason or a number dialed is never parsed as HTML), the buttons calling the admin API
// with the session's CSRF token. No framework, no build step.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const KEEP = 50; // timeline rows and failovers shown
const STALE_MS = 5000; // the cards come every second: this long without a message is a dead stream
const cards = new Map(); // target name -> {root, fields}
let timeline = [];
let failovers = [];
let source = null;
let lastMessage = 0;
let reconnectTimer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function clock(isoTime) {
  if (!isoTime) return "";
  const d = new Date(isoTime);
  return d.toLocaleTimeString([], {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function span(seconds) {
  if (seconds == null) return "";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

function figure(v, suffix = "", digits = 1) {
  return v == null ? "–" : `${Number(v).toFixed(digits)}${suffix}`;
}

// -- messages ------------------------------------------------------------------------------
function say(text, ok = false) {
  document.getElementById("message-text").textContent = text;
  const box = document.getElementById("message");
  box.classList.toggle("ok", ok);
  box.hidden = false;
}

// -- cards ---------------------------------------------------------------------------------
function makeCard(name) {
  const f = {};
  const field = (key, tag = "span", cls = key) => (f[key] = el(tag, {class: cls}));
  const fig = (key, label) => el("div", {}, field(key, "b", "value"), el("span", {}, label));
  const seconds = el("input", {type: "number", min: 1, max: 86400, value: 60,
                               class: "seconds", title: "seconds before it reverts by itself"});
  const button = (verb, label) => {
    const b = el("button", {type: "button", class: verb}, label);
    b.dataset.verb = verb;
    b.addEventListener("click", () => act(name, verb, seconds));
    return b;
  };
  const root = el("article", {class: "card", "data-target": name},
    el("div", {class: "top"}, el("span", {class: "name"}, name), field("state")),
    field("carrier", "div", "muted carrier"),
    field("reason", "div"),
    field("since", "div", "muted since"),
    el("div", {class: "figures"},
      fig("cps", "calls/s"), fig("asr", "ASR"), fig("pdd", "PDD p50"), fig("up", "calls up")),
    field("holdDown", "div", "until hold-down"),
    field("forced", "div", "until forced"),
    el("div", {class: "actions"},
      button("drain", "Drain"), button("force-down", "Force down"), seconds,
      el("span", {class: "muted"}, "s"), button("restore", "Restore")));
  document.getElementById("cards").append(root);
  return {root, f};
}

function showCard(t) {
  let card = cards.get(t.name);
  if (!card) cards.set(t.name, (card = makeCard(t.name)));
  const {root, f} = card;
  root.dataset.state = t.state;
  f.state.textContent = t.state;
  f.state.className = `state ${t.state}`;
  f.carrier.textContent = t.destination ? `${t.carrier || t.name} at ${t.destination}` : "";
  f.reason.textContent = t.silent ? `${t.reason}; no new calls: ${t.silent}` : t.reason;
  f.since.textContent = `since ${clock(t.since)} (${span(t.for_seconds)})`;
  if (t.figures) {
    f.cps.textContent = figure(t.figures.calls_per_s, "", 2);
    f.asr.textContent = t.figures.asr == null ? "–" : `${(t.figures.asr * 100).toFixed(0)} %`;
    f.pdd.textContent = figure(t.figures.pdd_p50_ms, " ms");
  }
  f.up.textContent = t.calls_up ?? "–";
  const hold = t.hold_down_left ?? null;
  f.holdDown.textContent = hold != null && t.state !== "UP"
    ? `hold-down: ${span(hold)} left (until ${clock(t.hold_down_until)})` : "";
  f.forced.textContent = t.state === "FORCED_DOWN" && t.forced_until
    ? `reverts by itself at ${clock(t.forced_until)}` +
      (t.forced_left != null ? ` (in ${span(t.forced_left)})` : "") : "";
}

function showTargets(data) {
  for (const t of data.targets) showCard(t);
  const names = new Set(data.targets.map(t => t.name));
  for (const [name, card] of cards) {
    if (!names.has(name)) { card.root.remove(); cards.delete(name); } // removed by a reload
  }
  document.getElementById("updated").textContent = `updated ${clock(data.now)}`;
}

// -- the HA line (only with an ha: section) ------------------------------------------------
function showHa(ha) {
  const box = document.getElementById("ha");
  if (!ha) { box.hidden = true; return; }
  let text = `HA ${ha.node} (${ha.mode}): ${ha.role}`;
  if (ha.mode !== "active-active") {
    text += ` · epoch ${ha.epoch ?? "–"} · leader ${ha.leader || "none"}`;
  }
  text += ha.serving ? " · serving" : " · not serving";
  text += ` · etcd ${ha.etcd}`;
  document.getElementById("ha-text").textContent = text;
  const lost = document.getElementById("ha-lost");
  const isLost = ha.etcd !== "connected";
  lost.textContent = isLost
    ? `etcd lost since ${ha.etcd_lost_since ? clock(ha.etcd_lost_since) : "start"}, ` +
      "routing on last-known state" : "";
  lost.hidden = !isLost;
  box.classList.toggle("etcd-lost", isLost);
  box.dataset.role = ha.role;
  box.dataset.etcd = ha.etcd;
  box.hidden = false;
}

// -- timeline and failovers ----------------------------------------------------------------
function showTimeline() {
  const body = document.querySelector("#timeline tbody");
  body.replaceChildren(...timeline.slice(-KEEP).reverse().map(e =>
    el("tr", {"data-target": e.target},
      el("td", {}, clock(e.at)), el("td", {}, e.target),
      el("td", {}, `${e.old} → ${e.new}`), el("td", {}, e.reason))));
}

function stepText(s) {
  const answer = s.status != null ? String(s.status) : s.kind;
  const verdict = s.class ? ` (${s.class}${s.failover ? ", failed over" : ""})` : "";
  return `${s.attempt}. ${s.target}: ${answer}${verdict}${s.ms != null ? `, ${s.ms} ms` : ""}`;
}

function showFailovers() {
  const box = document.getElementById("failovers");
  if (!failovers.length) {
    box.replaceChildren(el("p", {class: "muted empty"}, "none yet"));
    return;
  }
  box.replaceChildren(...failovers.slice(0, KEEP).map(f => {
    // The plan's own words for every candidate, those it skipped included.
    const plan = f.explain.map(why => el("li", {}, why));
    const steps = f.steps.map(s =>
      el("li", {class: s.failover ? "moved" : "final"}, stepText(s)));
    return el("div", {class: "failover", "data-call": f.call_id},
      el("div", {},
        el("b", {}, clock(f.at)), ` ${f.number || "?"} → `,
        el("b", {}, f.answered ? `answered by ${f.carrier}` : `${f.status} to the caller`),
        el("span", {class: "muted"}, ` (${f.end}; call ${f.call_id})`)),
      el("div", {class: "muted"}, `plan: ${f.plan.join(" → ")}`), el("ul", {class: "plan"}, ...plan),
      el("div", {class: "muted"}, "attempts:"), el("ul", {class: "steps"}, ...steps));
  }));
}

// -- the stream ----------------------------------------------------------------------------
function setStatus(text, cls) {
  const s = document.getElementById("stream-status");
  s.textContent = text;
  s.className = `stream ${cls}`;
}

function handle(kind, fn) {
  source.addEventListener(kind, ev => {
    lastMessage = Date.now();
    setStatus("live", "live");
    fn(JSON.parse(ev.data));
  });
}

function connect() {
  if (source) source.close();
  clearTimeout(reconnectTimer);
  lastMessage = Date.now();
  source = new EventSource("/api/stream");
  handle("snapshot", d => {
    showTargets(d);
    showHa(d.ha);
    timeline = d.timeline;
    failovers = d.failovers;
    showTimeline();
    showFailovers();
  });
  handle("targets", showTargets);
  handle("ha", showHa);
  handle("changes", list => { // oldest first
    timeline = timeline.concat(list).slice(-KEEP);
    showTimeline();
  });
  handle("failovers", list => { // newest first
    failovers = list.concat(failovers).slice(0, KEEP);
    showFailovers();
  });
  source.onerror = () => {
    setStatus("disconnected: reconnecting…", "disconnected");
    if (source.readyState === EventSource.CLOSED) retry();
  };
}

let retrying = false;

async function retry() {
  if (retrying) return;
  retrying = true;
  clearTimeout(reconnectTimer);
  // A closed stream may be a session that ended: then the login page, else try again.
  try {
    const r = await fetch("/api/dashboard",
                          {credentials: "same-origin", signal: AbortSignal.timeout(5000)});
    if (r.status === 401) { location.href = "/login"; return; }
  } catch (e) { /* the router is away or frozen: keep trying */ }
  finally { retrying = false; }
  reconnectTimer = setTimeout(connect, 1000);
}

setInterval(() => {
  if (Date.now() - lastMessage > STALE_MS) {
    // No card for this long: a frozen router or a half-open connection. Drop this stream
    // (its backlog would only show the past) and start again from a snapshot.
    if (source) { source.close(); source = null; }
    setStatus("disconnected: reconnecting…", "disconnected");
    lastMessage = Date.now();
    retry();
  }
}, 1000);

// -- the buttons ---------------------------------------------------------------------------
async function act(name, verb, secondsInput) {
  const init = {method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": CSRF}};
  if (verb === "force-down") {
    const seconds = Number(secondsInput.value);
    if (!Number.isFinite(seconds) || seconds < 1 || seconds > 86400) {
      say(`force-down ${name}: seconds must be between 1 and 86400`);
      return;
    }
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify({seconds, reason: "from the dashboard"});
  }
  let r, data = {};
  try {
    r = await fetch(`/api/targets/${encodeURIComponent(name)}/${verb}`, init);
    data = await r.json().catch(() => ({}));
  } catch (e) {
    say(`${verb} ${name}: the router did not answer (${e})`);
    return;
  }
  if (!r.ok) {
    say(`${verb} ${name} refused (${r.status}): ${data.error || r.statusText}`);
    return;
  }
  const t = data.target;
  if (t) showCard(t); // at once; the stream confirms it within a second
  let text = `${verb} ${name}: ${data.changes.map(c => `${c.old} → ${c.new}`).join(", ")}`;
  if (t && t.forced_until) text += `; reverts by itself at ${clock(t.forced_until)}`;
  say(text, true);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("message-close").addEventListener("click", () => {
    document.getElementById("message").hidden = true;
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/logout", {method: "POST", credentials: "same-origin",
                            headers: {"X-CSRF-Token": CSRF}}).catch(() => null);
    location.href = "/login";
  });
  connect();
});
