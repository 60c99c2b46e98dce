// The status page: four widgets (system health, executions, alerts,
// performance) and a run detail, kept current over the WebSocket (or SSE,
// or polling; see live.js). Data is always put into the page as text nodes,
// never as HTML: run messages and captures come from the probed systems.

import { openAck, openRun, wireDialogs } from "./dialogs.js";
import { $, STATUS_TEXT, setText } from "./dom.js";
import { Live, POLL_SECONDS } from "./live.js";
import * as api from "./source.js";
import { renderWidgets } from "./widgets.js";

const TOKEN_KEY = "flowprobe.apiToken";
const REFRESH_MS = 60_000; // overview (uptime, percentiles), alerts and health while live
const METRICS_MS = 15_000;
const ANOMALIES_MS = 30_000;
const HOURLY_MS = 10 * 60_000; // the heatmap's past hours do not change; the runs held count the current one
const CLOCK_MS = 5_000; // "12 s ago" labels
const RUNS_KEPT = 5_000;
const WEEK = 7 * 86400;
const TRANSPORT_TEXT = {
  connecting: "Connecting…",
  websocket: "Live over WebSocket",
  sse: "Live over server-sent events",
  poll: `Live updates unavailable: refreshing every ${POLL_SECONDS} s`,
  reconnecting: "Connection lost: reconnecting…",
};

// ---------------------------------------------------------------- state

const state = {
  pairs: new Map(), // pairKey -> pair
  runs: new Map(), // run_id -> run summary
  alerts: null, // Map id -> alert, or null while unknown
  alertsProblem: null,
  anomalies: null, // {threshold, byPair} or null: badges hidden
  alertCounts: null, // by severity from the server, when it has more alerts than it listed
  metrics: null,
  readiness: null, // "ready", "not ready" or "unreachable"
  roots: null, // the root workflows' last runs, from the dashboard API
  hourly: null, // {until, rows}: runs per hour and pair from the history, for the heatmap
  snapshot: null, // the parts of a snapshot being received
  source: null,
  origin: null,
  transport: "connecting",
  env: "",
  latencyKey: null,
  loaded: false,
};

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function announce(text) {
  const region = $("announce");
  region.textContent = "";
  // A separate task, so screen readers see a change even for the same words.
  setTimeout(() => { region.textContent = text; }, 50);
}

function setPair(next) {
  const key = api.pairKey(next.workflow, next.env);
  const previous = state.pairs.get(key);
  const merged = { ...(previous || {}), ...next };
  if (!next.last_run && previous) merged.last_run = previous.last_run;
  state.pairs.set(key, merged);
  if (state.loaded && previous && previous.status !== merged.status && merged.status !== "unknown") {
    announce(`${merged.workflow} in ${merged.env}: ${STATUS_TEXT[previous.status] || previous.status} → ${STATUS_TEXT[merged.status]}`);
  }
  return merged;
}

function addRun(run) {
  if (!run || !run.run_id) return;
  state.runs.set(run.run_id, run);
  const key = api.pairKey(run.workflow, run.env);
  const pair = state.pairs.get(key);
  if (pair && (!pair.last_run || (run.started_at || 0) >= (pair.last_run.started_at || 0))) {
    pair.last_run = run;
    if (run.started_at !== null) pair.last_check = api.finished(run);
    follow(pair);
  }
}

/**
 * A pair's status is as of `statusAt`: when the overview was computed (it is cached for a few seconds), or the
 * run a state event followed. A run that finished after that is newer news: its outcome gives the status.
 */
function follow(pair) {
  const run = pair.last_run;
  if (!run || api.finished(run) <= (pair.statusAt || 0)) return;
  setPair({ ...pair, status: api.statusAfter(run, pair), statusAt: api.finished(run), status_reason: null });
}

function trimRuns() {
  const oldest = Date.now() / 1000 - WEEK;
  const runs = [...state.runs.values()].filter((r) => (r.started_at || 0) >= oldest);
  runs.sort((a, b) => (b.started_at || 0) - (a.started_at || 0));
  state.runs = new Map(runs.slice(0, RUNS_KEPT).map((r) => [r.run_id, r]));
}

/** The open alerts become `items`; what is already known of each (its summary, say) is kept where `items` say less. */
function setAlerts(items, counts = null) {
  const known = state.alerts || new Map();
  state.alerts = new Map(items.filter((a) => a && a.status !== "RESOLVED").map((a) => [a.id, { ...(known.get(a.id) || {}), ...a }]));
  state.alertCounts = counts;
}

function updateAlert(alert) {
  if (!state.alerts) state.alerts = new Map();
  if (alert.status === "RESOLVED") state.alerts.delete(alert.id);
  else state.alerts.set(alert.id, { ...(state.alerts.get(alert.id) || {}), ...alert });
  state.alertCounts = null; // the server's counts are older than this event: count what is here
}

// ---------------------------------------------------------------- loading

function showError(message) {
  const el = $("page-error");
  el.hidden = !message;
  setText(el, message || "");
}

async function refreshPairs() {
  try {
    const data = await api.loadPairs();
    const keys = new Set();
    for (const item of data.items) {
      const key = api.pairKey(item.workflow, item.env);
      const known = state.pairs.get(key);
      // What the page heard since the answer was computed (a state event, a run) is newer than the answer.
      follow(setPair(known && known.statusAt > item.statusAt ? { ...item, status: known.status, statusAt: known.statusAt } : item));
      keys.add(key);
    }
    for (const key of [...state.pairs.keys()]) if (!keys.has(key)) state.pairs.delete(key);
    state.source = data.source;
    state.origin = data.origin;
    showError(null);
  } catch (error) {
    showError(`Cannot load the workflows from the collector: ${error.message}`);
  }
}

async function refreshExecutions() {
  try {
    const { runs } = await api.loadExecutions([...state.pairs.values()]);
    for (const run of runs) addRun(run);
    trimRuns();
  } catch { /* the widgets keep what they had */ }
}

async function refreshAlerts() {
  const current = token();
  if (!current) {
    state.alertsProblem = state.alerts ? null : "Enter a viewer or operator token to see open alerts.";
    return;
  }
  try {
    const data = await api.loadAlerts(current);
    setAlerts(data.items, data.counts);
    state.alertsProblem = data.problem;
  } catch (error) {
    state.alertsProblem = error.status === 401 || error.status === 403
      ? `The token was refused: ${error.message}`
      : `Cannot load alerts: ${error.message}`;
  }
}

async function refreshMetrics() {
  try {
    state.metrics = await api.loadCollectorMetrics();
  } catch { /* keep the last figures */ }
}

async function refreshHealth() {
  [state.readiness, state.roots] = await Promise.all([api.loadReadiness(), api.loadRootHealth().catch(() => state.roots)]);
}

async function refreshHourly() {
  try {
    state.hourly = await api.loadHourly(state.pairs.size);
  } catch { /* keep the last figures */ }
}

async function refreshAnomalies() {
  state.anomalies = await api.loadAnomalies();
}

async function poll() {
  await refreshPairs();
  await Promise.allSettled([refreshExecutions(), refreshAlerts(), refreshMetrics(), refreshHealth()]);
  invalidate();
}

// ---------------------------------------------------------------- live events

function onEvent(event) {
  switch (event.type) {
    case "snapshot": {
      // A big snapshot comes in parts 1..parts: gather them, then take the whole picture at once.
      const part = event.part || 1, parts = event.parts || 1;
      if (part === 1) state.snapshot = { pairs: [], alerts: [] };
      if (!state.snapshot) return; // joined in the middle of one: the next is whole
      state.snapshot.pairs.push(...(event.pairs || []));
      if (Array.isArray(event.alerts)) state.snapshot.alerts.push(...event.alerts);
      if (part < parts) return;
      const { pairs, alerts } = state.snapshot;
      state.snapshot = null;
      for (const item of pairs) {
        const run = api.normalizeRun(item.last_run, item);
        if (run) state.runs.set(run.run_id, run);
        setPair({ workflow: item.workflow, env: item.env, status: api.normalizeStatus(item.status), statusAt: run ? api.finished(run) : 0,
          ...(run ? { last_run: run, last_check: api.finished(run) } : {}) });
      }
      if (Array.isArray(event.alerts)) {
        setAlerts(alerts.map(api.normalizeAlert));
        state.alertsProblem = null;
      }
      break;
    }
    case "run": {
      const run = api.normalizeRun(event);
      if (run) addRun(run);
      break;
    }
    case "state": {
      const key = api.pairKey(event.workflow, event.env);
      const pair = state.pairs.get(key) || { workflow: event.workflow, env: event.env };
      // Sent after the run that changed it: the status is as of that run.
      setPair({ ...pair, status: api.normalizeStatus(event.status), statusAt: pair.last_run ? api.finished(pair.last_run) : 0 });
      break;
    }
    case "alert": {
      const alert = api.normalizeAlert(event);
      if (!alert) break;
      updateAlert(alert);
      state.alertsProblem = null;
      break;
    }
    default:
      return; // ping, or a type this page does not know yet
  }
  invalidate();
}

function onTransport(name) {
  state.transport = name;
  document.body.dataset.transport = name;
  setText($("connection"), TRANSPORT_TEXT[name] || name);
  if (name === "websocket" || name === "sse") {
    // Events only carry what changed since the connection opened: catch up on what was missed while it was down.
    refreshPairs().then(invalidate);
  }
}

// ---------------------------------------------------------------- rendering

let pending = false;

function invalidate() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    render();
  });
}

function render() {
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
  renderWidgets(state, { openRun, openAck, token });
  setText($("source"), state.source === "overview"
    ? `Data: dashboard overview${state.origin ? ` (${state.origin})` : ""}`
    : state.source ? "Data: /api/workflows (the dashboard API is not available)" : "—");
  document.body.dataset.source = state.source || "";
  if (focused) {
    const again = document.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
    if (again && again !== document.activeElement) again.focus();
  }
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("env-filter").addEventListener("change", (e) => {
    state.env = e.target.value;
    live.subscribe(state.env ? { env: [state.env] } : null);
    invalidate();
  });
  $("latency-pair").addEventListener("change", (e) => {
    state.latencyKey = e.target.value;
    invalidate();
  });
  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
    } catch { /* storage disabled: the token cannot be kept */ }
    await refreshAlerts();
    invalidate();
  });
  $("token-forget").addEventListener("click", () => {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch { /* nothing stored */ }
    state.alerts = null;
    state.alertsProblem = "Enter a viewer or operator token to see open alerts.";
    invalidate();
  });
  wireDialogs({ state, token, invalidate, announce, updateAlert });
  // Charts are drawn at the container's pixel width: redraw when the width changes (not the height, which drawing changes).
  let width = 0;
  new ResizeObserver(([entry]) => {
    if (Math.round(entry.contentRect.width) !== width) {
      width = Math.round(entry.contentRect.width);
      invalidate();
    }
  }).observe($("main"));
}

const live = new Live({ onEvent, onTransport, poll });

async function boot() {
  wire();
  await refreshPairs();
  state.loaded = true;
  invalidate();
  // The pairs first, so that events arriving from here on land on known pairs.
  live.start();
  await Promise.allSettled([refreshExecutions(), refreshAlerts(), refreshMetrics(), refreshHealth(), refreshAnomalies(), refreshHourly()]);
  invalidate();
  setInterval(invalidate, CLOCK_MS);
  setInterval(() => {
    if (state.transport !== "poll") Promise.allSettled([refreshPairs(), refreshAlerts(), refreshHealth()]).then(invalidate);
  }, REFRESH_MS);
  setInterval(() => refreshMetrics().then(invalidate), METRICS_MS);
  setInterval(() => refreshAnomalies().then(invalidate), ANOMALIES_MS);
  setInterval(() => refreshHourly().then(invalidate), HOURLY_MS);
}

boot();
