// Diatom central's dashboard: polls the JSON API every 2 s and redraws.
// Plain DOM building (textContent only, never innerHTML with data), no
// libraries, no build step.
"use strict";

const REFRESH_MS = 2000;
const PAGE = 25;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  token: null,
  before: null,      // id bound of the current jobs page (null: newest)
  pages: [],         // stack of earlier `before` values, for "newer"
  lastIds: [],
  selected: null,    // job id shown in the detail panel
  knownNodes: "",
};

// ----- helpers --------------------------------------------------------------

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "title") e.title = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + u[i];
}

function dur(ms) {
  if (ms < 0) ms = 0;
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  const m = Math.floor(s / 60), r = Math.floor(s % 60);
  if (m < 60) return m + "m " + r + "s";
  return Math.floor(m / 60) + "h " + (m % 60) + "m";
}

function ago(iso) {
  if (!iso) return "–";
  const d = Date.now() - Date.parse(iso);
  return d < 1500 ? "just now" : dur(d) + " ago";
}

function clock(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false }) +
    (Date.now() - d > 86400000 ? " " + d.toLocaleDateString() : "");
}

function sum(obj) {
  return Object.values(obj || {}).reduce((a, b) => a + b, 0);
}

// ----- fetching -------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path) {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized();
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function readToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("diatom-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("diatom-token");
}

// ----- status and nodes -----------------------------------------------------

function tile(k, v, small) {
  return el("div", { class: "tile" }, el("div", { class: "k" }, k),
    el("div", { class: "v" }, v, small ? el("small", {}, " " + small) : null));
}

function drawStatus(s, nodes) {
  const up = nodes.filter(n => n.state === "up");
  const cpus = up.reduce((a, n) => a + n.cpus, 0);
  const slots = up.reduce((a, n) => a + n.slots, 0);
  const used = up.reduce((a, n) => a + n.slots_used, 0);
  const load = up.reduce((a, n) => a + n.load, 0);
  $("central-status").textContent =
    `${s.address} · v${s.version} · up ${dur(s.uptime_s * 1000)} · since ${clock(s.started)}`;
  $("tiles").replaceChildren(
    tile("Nodes up", s.nodes.up, "/ " + s.nodes.total),
    tile("CPUs", cpus),
    tile("Slots used", used, "/ " + slots),
    tile("Load (sum)", load.toFixed(2)),
    tile("Running jobs", s.jobs.running),
    tile("Jobs in history", s.jobs.total),
    tile("Dropped at central", sum(s.dropped)),
  );
}

function drawNodes(nodes) {
  $("nodes-count").textContent = `${nodes.filter(n => n.state === "up").length} up of ${nodes.length}`;
  const rows = nodes.map(n => {
    const pct = n.slots ? Math.min(100, 100 * n.slots_used / n.slots) : 0;
    // Through the CSSOM: the page's CSP forbids inline style attributes.
    const fill = el("span");
    fill.style.width = pct + "%";
    const bar = el("span", { class: "bar" }, fill);
    const dropped = Object.entries(n.dropped || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
    return el("tr", { "data-node": n.name, "data-state": n.state },
      el("td", {}, el("b", {}, n.name)),
      el("td", {}, el("span", { class: "badge b-" + n.state }, n.state)),
      el("td", { class: "mono" }, n.address),
      el("td", { class: "num" }, n.cpus),
      el("td", {}, bar, `${n.slots_used} / ${n.slots}`),
      el("td", { class: "num" }, n.load.toFixed(2)),
      el("td", { title: n.last_seen + " (" + ago(n.last_seen) + ")" }, clock(n.last_seen)),
      el("td", { class: "num", title: dropped || "none" }, sum(n.dropped)),
      el("td", { class: "num" }, bytes(n.cache_bytes)),
      el("td", { class: "muted", title: n.kernel }, n.version));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 10, class: "empty" }, "no node has registered yet")));
  $("nodes").tBodies[0].replaceChildren(...rows);
  // The node filter lists the known nodes.
  const names = nodes.map(n => n.name).join("\n");
  if (names !== state.knownNodes) {
    state.knownNodes = names;
    const sel = document.querySelector("#job-filter [name=node]");
    const keep = sel.value;
    sel.replaceChildren(el("option", { value: "" }, "any"), ...nodes.map(n => el("option", {}, n.name)));
    sel.value = keep;
  }
}

// ----- jobs -----------------------------------------------------------------

function stateBadge(j) {
  let cls = "b-" + j.state;
  if (j.state === "exited") cls = j.exit_status === 0 ? "b-exited-0" : "b-exited-bad";
  return el("span", { class: "badge " + cls }, j.state);
}

function jobDuration(j) {
  const end = j.end ? Date.parse(j.end) : Date.now();
  return dur(end - Date.parse(j.start));
}

function jobsQuery() {
  const f = new FormData($("job-filter"));
  const q = new URLSearchParams();
  for (const k of ["state", "user", "node"]) {
    const v = (f.get(k) || "").trim();
    if (v) q.set(k, v);
  }
  q.set("limit", PAGE);
  if (state.before !== null) q.set("before", state.before);
  return q;
}

function drawJobs(jobs) {
  state.lastIds = jobs.map(j => j.id);
  const rows = jobs.map(j => {
    const prog = [j.program].concat((j.argv || []).slice(1)).join(" ");
    const tr = el("tr", { "data-job": j.id, "data-state": j.state, class: j.id === state.selected ? "selected" : null },
      el("td", { class: "num" }, j.id),
      el("td", {}, j.user),
      el("td", {}, j.node),
      el("td", { class: "prog mono", title: prog }, prog),
      el("td", {}, stateBadge(j)),
      el("td", { title: j.start }, clock(j.start)),
      el("td", { class: "num" }, jobDuration(j)),
      el("td", { class: "num", title: j.reason || "" }, j.exit_status ?? (j.signal ? "sig " + j.signal : "–")));
    tr.addEventListener("click", () => select(j.id));
    return tr;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "no jobs match")));
  $("jobs").tBodies[0].replaceChildren(...rows);
  $("newer").disabled = state.pages.length === 0;
  $("older").disabled = jobs.length < PAGE;
  $("page-info").textContent = jobs.length
    ? `jobs ${jobs[0].id} – ${jobs[jobs.length - 1].id}` : "";
}

function drawJobsError(msg) {
  state.lastIds = [];
  $("jobs").tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty" }, msg)));
  $("older").disabled = true;
  $("page-info").textContent = "";
}

function fact(dl, k, v) {
  dl.append(el("dt", {}, k), el("dd", {}, v));
}

async function drawDetail() {
  if (state.selected === null) return;
  let j;
  try {
    j = await api("/api/jobs/" + state.selected);
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    state.selected = null;
    $("job-detail").hidden = true;
    return;
  }
  $("job-detail").hidden = false;
  $("detail-title").textContent = `Job ${j.id}`;
  const facts = $("detail-facts");
  facts.replaceChildren();
  fact(facts, "state", stateBadge(j));
  fact(facts, "program", el("span", { class: "mono" }, j.program));
  fact(facts, "argv", el("span", { class: "mono" }, JSON.stringify(j.argv)));
  fact(facts, "cwd", el("span", { class: "mono" }, j.cwd));
  fact(facts, "user", `${j.user} (uid ${j.uid})`);
  fact(facts, "node", j.node);
  fact(facts, "started", j.start);
  fact(facts, "ended", j.end || "–");
  fact(facts, "duration", jobDuration(j));
  fact(facts, "exit status", j.exit_status ?? "–");
  if (j.signal) fact(facts, "signal", j.signal);
  if (j.reason) fact(facts, "reason", j.reason);

  const c = j.counters || {};
  const calls = Object.entries(c).filter(([k]) => k.startsWith("calls."))
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => el("tr", {}, el("td", {}, k.slice(6)), el("td", { class: "num" }, v)));
  if (j.counters) calls.push(el("tr", {}, el("td", {}, el("b", {}, "total")), el("td", { class: "num" }, el("b", {}, c.calls ?? 0))));
  else calls.push(el("tr", {}, el("td", { class: "muted" }, j.state === "running" ? "reported when the job ends" : "not reported")));
  $("detail-calls").tBodies[0].replaceChildren(...calls);
  const io = $("detail-io");
  io.replaceChildren();
  if (j.counters) {
    fact(io, "read from central", bytes(c.bytes_read));
    fact(io, "written to central", bytes(c.bytes_written));
    fact(io, "cache hits", `${c.cache_hits ?? 0} (misses ${c.cache_misses ?? 0})`);
    fact(io, "calls stopped", c.stops ?? 0);
  }
  $("detail-events").replaceChildren(...(j.events || []).map(e =>
    el("li", {}, el("b", {}, e.kind), " ", el("span", { class: "when" }, clock(e.at)),
      e.detail ? el("div", { class: "mono muted" }, e.detail) : null)));
}

function select(id) {
  state.selected = id;
  location.hash = "job=" + id;
  refresh();
}

// ----- charts ---------------------------------------------------------------

function chart(id, samples, series, interval) {
  const root = $(id);
  // Drawn at the element's own width, so text and dots are not stretched.
  const W = Math.max(200, Math.round(root.getBoundingClientRect().width) || 600), H = 140, P = 14;
  root.setAttribute("viewBox", `0 0 ${W} ${H}`);
  root.replaceChildren();
  for (let i = 1; i < 4; i++) root.append(svg("line", { class: "grid", x1: 0, x2: W, y1: i * H / 4, y2: i * H / 4 }));
  if (samples.length === 0) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
    t.textContent = "collecting samples…";
    root.append(t);
    return;
  }
  const now = Date.now(), span = 3600 * 1000;
  const x = iso => W * (1 - (now - Date.parse(iso)) / span);
  const max = Math.max(1, ...samples.flatMap(s => series.map(d => d.get(s))));
  const y = v => H - P - (H - 2 * P) * v / max;
  for (const d of series) {
    if (d.bars) {
      const w = Math.max(1.5, W * interval * 1000 / span / series.filter(s => s.bars).length);
      samples.forEach(s => {
        const v = d.get(s);
        if (v > 0) root.append(svg("rect", { x: x(s.at) - w * (d.offset || 0), y: y(v), width: w, height: H - P - y(v), fill: d.color }));
      });
    } else {
      const pts = samples.map(s => `${x(s.at).toFixed(1)},${y(d.get(s)).toFixed(1)}`).join(" ");
      root.append(svg("polyline", { class: "line", points: pts, stroke: d.color }));
      // The newest value as a dot, so a lone first sample shows too.
      const last = samples[samples.length - 1];
      root.append(svg("circle", { cx: Math.min(W - 3, x(last.at)), cy: y(d.get(last)), r: 3, fill: d.color }));
    }
  }
  for (const [frac, txt] of [[0, "−60 min"], [0.5, "−30 min"], [1, "now"]]) {
    const t = svg("text", { x: frac * W + (frac === 0 ? 4 : frac === 1 ? -4 : 0), y: H - 4, class: "empty", "font-size": 10,
      "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle" });
    t.textContent = txt;
    root.append(t);
  }
  const label = svg("text", { x: 4, y: 14, class: "empty", "font-size": 11 });
  label.textContent = "max " + (Number.isInteger(max) ? max : max.toFixed(2));
  root.append(label);
}

function drawCharts(h) {
  $("interval").textContent = h.interval_s;
  const css = getComputedStyle(document.documentElement);
  const c = n => css.getPropertyValue(n).trim();
  chart("chart-load", h.samples, [
    { get: s => s.cpus, color: c("--cpus") },
    { get: s => s.slots_used, color: c("--slots") },
    { get: s => s.load, color: c("--load") },
  ], h.interval_s);
  chart("chart-jobs", h.samples, [
    { get: s => s.started, color: c("--started"), bars: true, offset: 1 },
    { get: s => s.finished, color: c("--finished"), bars: true, offset: 0 },
  ], h.interval_s);
}

// ----- the loop -------------------------------------------------------------

let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    // A bad filter (an unknown user) is the jobs table's problem only.
    const jobs = api("/api/jobs?" + jobsQuery()).catch(e => {
      if (e instanceof Unauthorized) throw e;
      return e;
    });
    const [status, nodes, hist] = await Promise.all([
      api("/api/status"), api("/api/nodes"), api("/api/history"),
    ]);
    $("token-box").hidden = true;
    drawStatus(status, nodes);
    drawNodes(nodes);
    const page = await jobs;
    if (page instanceof Error) drawJobsError(page.message);
    else drawJobs(page);
    drawCharts(hist);
    await drawDetail();
    $("live").className = "live";
    $("live").textContent = "● live";
  } catch (e) {
    if (e instanceof Unauthorized) {
      $("token-box").hidden = false;
    }
    $("live").className = "live stale";
    $("live").textContent = "● " + (e instanceof Unauthorized ? "token needed" : "no answer");
  } finally {
    busy = false;
  }
}

function init() {
  readToken();
  const m = /(?:^#|&)job=(\d+)/.exec(location.hash);
  if (m) state.selected = Number(m[1]);
  $("token-form").addEventListener("submit", ev => {
    ev.preventDefault();
    sessionStorage.setItem("diatom-token", $("token-input").value.trim());
    state.token = sessionStorage.getItem("diatom-token");
    refresh();
  });
  $("job-filter").addEventListener("input", () => { state.before = null; state.pages = []; refresh(); });
  $("job-filter").addEventListener("submit", ev => ev.preventDefault());
  $("older").addEventListener("click", () => {
    if (!state.lastIds.length) return;
    state.pages.push(state.before);
    state.before = state.lastIds[state.lastIds.length - 1];
    refresh();
  });
  $("newer").addEventListener("click", () => {
    if (!state.pages.length) return;
    state.before = state.pages.pop();
    refresh();
  });
  $("detail-close").addEventListener("click", () => {
    state.selected = null;
    $("job-detail").hidden = true;
    history.replaceState(null, "", location.pathname);
    refresh();
  });
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
}

init();
