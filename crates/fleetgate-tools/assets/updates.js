// fleetgate Updates page: polls the HTTP API (the same routes the tools use) and sends the
// operator's actions to it. The token lives in sessionStorage (this tab only) and goes out
// as `Authorization: Bearer`, never in a URL. No build step, no dependencies.
"use strict";

const KEY = "fleetgate-token";
const STAGES = ["idle", "building", "testing", "auditing", "benchmarking", "signing", "canary", "deploying", "completed"];
const llrSeries = [];
// Per criterion, what each poll saw since the page was opened: {t, d (decision), v (its
// statistic: the log likelihood ratio where there is one, else its first number)}.
const critSeries = {};
const DECISION_COLOR = { pass: "#047857", pending: "#d97706", fail: "#b91c1c", skipped: "#d1d5db" };
let bounds = null;
let timer = null;

const $ = (id) => document.getElementById(id);
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
};

async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + sessionStorage.getItem(KEY) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (_) { data = { error: "not JSON (HTTP " + r.status + ")" }; }
  if (!r.ok) {
    const err = new Error((data && (data.error || data.message)) || ("HTTP " + r.status));
    err.status = r.status;
    throw err;
  }
  return data;
}

function signedIn(yes) {
  $("login-box").hidden = yes;
  $("app").hidden = !yes;
  $("conn").textContent = yes ? "signed in" : "not signed in";
  if (timer) { clearInterval(timer); timer = null; }
  if (yes) { refresh(); timer = setInterval(refresh, 1000); }
}

async function login(ev) {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  try {
    await api("GET", "/api/upgrades/status");
    $("login-error").textContent = "";
    signedIn(true);
  } catch (e) {
    sessionStorage.removeItem(KEY);
    $("login-error").textContent = e.status === 401 ? "the token is not valid" : e.message;
    signedIn(false);
  }
}

function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  return s < 90 ? s + "s ago" : Math.round(s / 60) + "m ago";
}

function renderStatus(s) {
  $("stage").textContent = s.stage;
  $("stage").className = "big " + (s.stage === "completed" ? "passed" : (s.stage === "rolled_back" || s.stage === "failed") ? "failed" : "");
  $("version").textContent = s.version ? s.version + " (" + (s.git_sha || "").slice(0, 12) + ")" : "—";
  $("channel").textContent = s.channel || "stable";
  $("last-completed").textContent = s.last_completed ? s.last_completed.version : "none";
  // A request belongs to the run in progress: once it ended, the form goes away.
  if (!s.active) $("approval-box").hidden = true;
  $("paused").textContent = s.paused ? "PAUSED by " + s.paused.by + ": " + s.paused.reason : (s.active ? "running" : "no run in progress");
  const seen = new Set((s.stage_history || []).map((h) => h.stage));
  const tl = $("timeline");
  tl.replaceChildren(...STAGES.concat(s.stage === "rolled_back" || s.stage === "failed" ? [s.stage] : []).map((st) =>
    el("li", { class: st === s.stage ? "current" : (seen.has(st) ? "seen" : "") }, st)));
  const body = $("gates").tBodies[0];
  body.replaceChildren(...Object.entries(s.gate_results || {}).map(([stage, r]) =>
    el("tr", {}, el("td", {}, stage), el("td", { class: r.outcome }, r.promoted ? r.outcome + " (promoted)" : r.outcome), el("td", { class: "detail" }, r.detail))));
  const hist = $("history");
  hist.replaceChildren(...(s.stage_history || []).slice().reverse().map((h) =>
    el("li", {}, new Date(h.at * 1000).toLocaleTimeString() + " — " + h.stage + (h.reason ? ": " + h.reason : ""))));
}

function statText(stat) {
  if (!stat || typeof stat !== "object") return "";
  return Object.entries(stat).filter(([, v]) => typeof v === "number").map(([k, v]) => k + "=" + (Math.round(v * 1000) / 1000)).join(" ");
}

function firstNumber(stat) {
  if (!stat || typeof stat !== "object") return null;
  if (typeof stat.llr === "number") return stat.llr;
  const v = Object.values(stat).find((x) => typeof x === "number");
  return v === undefined ? null : v;
}

function recordCriteria(crit, at) {
  for (const k of crit) {
    const s = critSeries[k.criterion] || (critSeries[k.criterion] = []);
    const last = s[s.length - 1];
    const point = { t: at, d: k.decision, v: firstNumber(k.statistic) };
    // A new point when the judge's answer changed or it judged again (new check time).
    if (!last || last.t !== at || last.d !== point.d || last.v !== point.v) s.push(point);
    if (s.length > 300) s.shift();
  }
}

// One criterion over time: a strip of its decisions (green pass, amber pending, red fail,
// grey skipped), and its statistic as a line above it when it has one.
function sparkline(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 200 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  svg.setAttribute("data-criterion", name);
  const s = critSeries[name] || [];
  svg.setAttribute("data-points", String(s.length));
  if (s.length === 0) return svg;
  const w = 200 / s.length;
  s.forEach((p, i) => {
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", String(i * w)); r.setAttribute("y", "32"); r.setAttribute("width", String(Math.max(w, 1)));
    r.setAttribute("height", "8"); r.setAttribute("fill", DECISION_COLOR[p.d] || "#9ca3af");
    svg.append(r);
  });
  const vals = s.filter((p) => p.v !== null).map((p) => p.v);
  if (vals.length > 0) {
    const lo = Math.min(...vals), hi = Math.max(...vals);
    const y = (v) => hi === lo ? 16 : 28 - ((v - lo) / (hi - lo)) * 26;
    const pts = s.map((p, i) => p.v === null ? null : (i * w + w / 2) + "," + y(p.v)).filter((q) => q !== null);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#1d4ed8"); line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  }
  return svg;
}

function renderCanary(c) {
  const crit = Array.isArray(c.criteria) ? c.criteria : [];
  recordCriteria(crit, c.last_checked_at || Date.now() / 1000);
  $("criteria").tBodies[0].replaceChildren(...crit.map((k) =>
    el("tr", {}, el("td", {}, k.criterion), el("td", { class: k.decision }, k.decision), el("td", {}, sparkline(k.criterion)),
      el("td", { class: "detail" }, statText(k.statistic)), el("td", { class: "detail" }, k.detail))));
  const rate = crit.find((k) => k.criterion === "exception_rate");
  if (rate && rate.statistic && typeof rate.statistic.llr === "number") {
    const last = llrSeries[llrSeries.length - 1];
    if (!last || last.v !== rate.statistic.llr || llrSeries.length < 2) llrSeries.push({ t: Date.now(), v: rate.statistic.llr });
    if (llrSeries.length > 300) llrSeries.shift();
    const th = rate.threshold || {};
    if (typeof th.fail_when_llr_at_least === "number" && typeof th.accept_when_llr_at_most === "number") {
      bounds = { accept: th.accept_when_llr_at_most, reject: th.fail_when_llr_at_least };
    }
  }
  drawChart();
}

function drawChart() {
  const svg = $("chart");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  if (llrSeries.length === 0) return;
  const vals = llrSeries.map((p) => p.v).concat(bounds ? [bounds.accept, bounds.reject] : []);
  const lo = Math.min(...vals) - 0.5, hi = Math.max(...vals) + 0.5;
  const y = (v) => 150 - ((v - lo) / (hi - lo)) * 140;
  const x = (i) => llrSeries.length === 1 ? 300 : (i / (llrSeries.length - 1)) * 590 + 5;
  for (const v of bounds ? [bounds.accept, bounds.reject] : []) {
    const l = document.createElementNS(ns, "line");
    l.setAttribute("x1", "0"); l.setAttribute("x2", "600"); l.setAttribute("y1", y(v)); l.setAttribute("y2", y(v));
    l.setAttribute("stroke", "#9ca3af"); l.setAttribute("stroke-dasharray", "4 4");
    svg.append(l);
  }
  for (let i = 0; i < llrSeries.length; i++) {
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", x(i)); c.setAttribute("cy", y(llrSeries[i].v)); c.setAttribute("r", "2.5"); c.setAttribute("fill", "#1d4ed8");
    svg.append(c);
  }
  const p = document.createElementNS(ns, "polyline");
  p.setAttribute("points", llrSeries.map((q, i) => x(i) + "," + y(q.v)).join(" "));
  p.setAttribute("fill", "none"); p.setAttribute("stroke", "#1d4ed8"); p.setAttribute("stroke-width", "2");
  svg.append(p);
}

function renderFleet(peers) {
  $("fleet").tBodies[0].replaceChildren(...peers.map((p) =>
    el("tr", {}, el("td", {}, p.id), el("td", {}, p.channel || "stable"), el("td", {}, p.region), el("td", {}, p.current_version || "—"),
      el("td", {}, (p.code_hash || "—").slice(0, 12)), el("td", {}, p.status),
      el("td", { class: p.healthy === false ? "failed" : (p.healthy ? "passed" : "") }, p.healthy === undefined || p.healthy === null ? "—" : (p.healthy ? "healthy" : "unhealthy")),
      el("td", {}, ago(p.last_heartbeat)))));
  const health = { healthy: 0, unhealthy: 0, unknown: 0 };
  for (const p of peers) { health[p.healthy === true ? "healthy" : (p.healthy === false ? "unhealthy" : "unknown")] += 1; }
  const by = {};
  for (const p of peers) { const v = p.current_version || "none"; by[v] = (by[v] || 0) + 1; }
  $("by-version").textContent = "by version: " + Object.entries(by).map(([v, n]) => v + " × " + n).join(", ")
    + " · health: " + health.healthy + " healthy, " + health.unhealthy + " unhealthy" + (health.unknown ? ", " + health.unknown + " not reported" : "");
}

function renderRuns(runs) {
  const outcome = { completed: "passed", rolled_back: "failed", failed: "failed" };
  $("runs").tBodies[0].replaceChildren(...runs.map((r) =>
    el("tr", {}, el("td", {}, r.ended_at ? new Date(r.ended_at * 1000).toLocaleString() : "—"), el("td", {}, r.version || r.file),
      el("td", {}, r.channel || ""), el("td", { class: outcome[r.stage] || "" }, r.stage),
      el("td", { class: "detail" }, r.rollback_reason || r.failure_detail || ""))));
}

async function refresh() {
  try {
    renderStatus(await api("GET", "/api/upgrades/status"));
    $("conn").textContent = "signed in · updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.status === 401) { sessionStorage.removeItem(KEY); signedIn(false); $("login-error").textContent = "signed out: the token was refused"; return; }
    $("conn").textContent = "API unreachable: " + e.message;
  }
  try { renderCanary(await api("GET", "/api/upgrades/canary-health")); } catch (_) { /* shown by status */ }
  try { const f = await api("GET", "/api/fleet/peers"); renderFleet(f.peers || []); } catch (_) { /* no registry */ }
  try { const r = await api("GET", "/api/upgrades/runs"); renderRuns(r.runs || []); } catch (_) { /* shown by status */ }
}

async function submitApproval() {
  let doc;
  try {
    doc = JSON.parse($("approval").value);
  } catch (e) {
    $("message").textContent = "approval refused: the signed approval is not JSON (" + e.message + ")";
    return;
  }
  $("message").textContent = "approval…";
  try {
    const r = await api("POST", "/api/upgrades/approve", { approval: doc });
    const a = r.approval || {};
    $("message").textContent = "approval recorded: " + a.approvals + " of " + a.required + " before " + a.stage
      + (r.next_step ? " — " + r.next_step : "");
    $("approval").value = "";
    refresh();
  } catch (e) {
    $("message").textContent = "approval refused: " + e.message;
  }
}

async function act(ev) {
  const op = ev.currentTarget.dataset.op;
  const reason = $("reason").value.trim();
  if (op === "rollback" && !confirm("Roll back the run in progress?")) return;
  $("message").textContent = op + "…";
  try {
    const r = await api("POST", "/api/upgrades/" + op, { reason });
    if (op === "approve") {
      $("approval-request").textContent = JSON.stringify(r.request || r, null, 2);
      $("approval-box").hidden = false;
      $("message").textContent = "approval request for " + (r.request ? r.request.stage : "?") + ": approved so far by "
        + ((r.approved_by || []).length) + " of " + r.required
        + ". Save it as a file, sign it where an approver's key is (`fleetgate approve --sign FILE --key-file KEY`), paste the result below.";
    } else {
      $("message").textContent = op + ": done" + (r.stage ? " — the run is at " + r.stage : "");
    }
    refresh();
  } catch (e) {
    $("message").textContent = op + " refused: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  for (const b of document.querySelectorAll("button[data-op]")) b.addEventListener("click", act);
  $("btn-submit-approval").addEventListener("click", submitApproval);
  signedIn(!!sessionStorage.getItem(KEY));
});
