// Where the page's data comes from, and what it does when an endpoint is not
// there yet. The dashboard API (/api/monitoring/dashboard/*) is preferred;
// when it answers 404 the page falls back to the collector's older endpoints
// (/api/workflows, /api/workflows/{name}/runs, /api/alerts, /metrics, /readyz)
// and derives the same shapes from them. Everything returned here is
// normalised, so the rest of the page never sees which one answered.

export const DASHBOARD = "/api/monitoring/dashboard";
const RETRY_MISSING_MS = 5 * 60 * 1000; // a 404 is remembered this long: a collector upgraded under an open page is picked up
const MAX_PAGES = 5;
const PAGE_SIZE = 200;
const FALLBACK_RUNS_PER_PAIR = 100;
const FALLBACK_MAX_PAIRS = 50;
const WEEK = 7 * 86400;
const ALERTS_SHOWN = 200;
const HOURLY_MAX_PAIRS = 50; // 7 days x 24 hours x pairs rows: beyond this the heatmap counts the runs it holds

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const missing = new Map(); // path -> when it answered 404

function isMissing(path) {
  const at = missing.get(path);
  return at !== undefined && Date.now() - at < RETRY_MISSING_MS;
}

export async function request(path, { token, method = "GET", body, params } = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store", credentials: "same-origin" });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const data = await response.json();
      if (data && typeof data.error === "string") message = data.error;
      else if (data && typeof data.detail === "string") message = data.detail;
    } catch { /* not JSON: keep the status line */ }
    throw new HttpError(response.status, message);
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** GET a dashboard endpoint; null when it does not exist (yet). */
async function optional(path, options) {
  if (isMissing(path)) return null;
  try {
    return await request(path, options);
  } catch (error) {
    if (error instanceof HttpError && (error.status === 404 || error.status === 405)) {
      missing.set(path, Date.now());
      return null;
    }
    throw error;
  }
}

/** Seconds since the epoch from a number (seconds or milliseconds) or an ISO string. */
export function seconds(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value > 1e12 ? value / 1000 : value;
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? null : parsed / 1000;
}

export function pairKey(workflow, env) {
  return `${workflow}\u001f${env}`; // a separator no name can hold (and CSS.escape keeps, unlike NUL)
}

/** A run summary in one shape, whatever sent it (an API page, a WebSocket event, a full run). */
export function normalizeRun(raw, fallback = {}) {
  if (!raw || typeof raw !== "object") return null;
  const run = raw.run && typeof raw.run === "object" ? { ...raw, ...raw.run } : raw;
  const runId = run.run_id ?? run.id;
  if (!runId) return null;
  return {
    run_id: String(runId),
    workflow: run.workflow ?? fallback.workflow,
    env: run.env ?? fallback.env,
    outcome: run.outcome ?? run.result ?? "unknown",
    started_at: seconds(run.started_at),
    duration: typeof run.duration === "number" ? run.duration : null,
    failed_step: run.failed_step ?? null,
    reason: run.reason ?? null,
    message: run.message ?? "",
    flaky: Boolean(run.flaky),
  };
}

/** The overview's windows ({"1h": 99.5, ...}, percent) as ratios (0..1); null where a window had no run. */
function ratios(windows) {
  if (!windows || typeof windows !== "object") return null;
  const out = {};
  for (const [window, value] of Object.entries(windows)) out[window] = typeof value === "number" ? value / 100 : null;
  return out;
}

/** The status of a pair from its last run, for the /api/workflows fallback. */
function statusFromRun(lastRun) {
  if (!lastRun) return "unknown";
  switch (lastRun.outcome) {
    case "success": return lastRun.flaky ? "degraded" : "up";
    case "skipped": return "skipped";
    case "failure":
    case "error": return "down";
    default: return "unknown";
  }
}

export const STATUSES = ["up", "degraded", "down", "skipped", "unknown"];

/** When a run finished (unix seconds), by the collector's clock. */
export function finished(run) {
  return (run.started_at || 0) + (run.duration || 0);
}

/**
 * A pair's status after `run`, by the rule of collector/live.py's pair_status: down when the last run that was
 * not skipped failed (so a skip after a failure stays down), degraded when it passed flaky or slower than the
 * latency SLO.
 */
export function statusAfter(run, pair) {
  switch (run.outcome) {
    case "failure":
    case "error":
      return "down";
    case "skipped":
      return pair.status === "down" ? "down" : "skipped";
    case "success":
      return run.flaky || (pair.latency_slo && run.duration > pair.latency_slo) ? "degraded" : "up";
    default:
      return pair.status;
  }
}

export function normalizeStatus(value) {
  const status = String(value || "unknown").toLowerCase();
  return STATUSES.includes(status) ? status : "unknown";
}

/** Every (workflow, env) pair with its status: the overview, else /api/workflows. */
export async function loadPairs() {
  const overview = await optional(`${DASHBOARD}/overview`);
  if (overview) {
    const items = (overview.items || []).map((item) => {
      const lastRun = normalizeRun(item.last_run, item);
      return {
        workflow: item.workflow,
        env: item.env,
        status: normalizeStatus(item.status),
        status_reason: item.status_reason || null,
        last_check: seconds(item.last_check) ?? lastRun?.started_at ?? null,
        uptime: ratios(item.uptime),
        reachability: ratios(item.reachability),
        p50: typeof item.p50 === "number" ? item.p50 : null,
        p95: typeof item.p95 === "number" ? item.p95 : null,
        latency_slo: typeof item.latency_slo === "number" ? item.latency_slo : null,
        labels: item.labels || {},
        ...(lastRun ? { last_run: lastRun } : {}), // the overview has no run ids: the runs and the live events bring them
        runs: null,
      };
    });
    const generatedAt = seconds(overview.generated_at) ?? 0;
    for (const item of items) item.statusAt = generatedAt;
    return { source: "overview", origin: overview.source || null, generated_at: generatedAt, items, totals: overview.totals || null };
  }
  const data = await request("/api/workflows");
  const items = (data.items || []).map((item) => {
    const lastRun = normalizeRun(item.last_run, item);
    return {
      workflow: item.workflow,
      env: item.env,
      status: statusFromRun(lastRun),
      statusAt: lastRun ? finished(lastRun) : 0,
      status_reason: null,
      last_check: lastRun && lastRun.started_at !== null ? lastRun.started_at + (lastRun.duration || 0) : null,
      uptime: null,
      reachability: null,
      p50: null,
      p95: null,
      latency_slo: null,
      labels: item.labels || {},
      last_run: lastRun,
      runs: item.runs || null,
    };
  });
  return { source: "workflows", origin: "history", generated_at: Date.now() / 1000, items, totals: null };
}

/** Recent runs, newest first, reaching back at most a week: /executions, else each pair's /runs. */
export async function loadExecutions(pairs, { env } = {}) {
  const first = await optional(`${DASHBOARD}/executions`, { params: { limit: PAGE_SIZE, env } });
  if (first) {
    const runs = [];
    let page = first;
    for (let n = 0; n < MAX_PAGES && page; n += 1) {
      const items = (page.items || page.runs || []).map((r) => normalizeRun(r)).filter(Boolean);
      runs.push(...items);
      const oldest = items.length ? items[items.length - 1].started_at : null;
      const before = "next_before" in page ? page.next_before : (items.length === PAGE_SIZE ? oldest : null);
      if (before === null || before === undefined || (oldest !== null && oldest < Date.now() / 1000 - WEEK)) break;
      page = await request(`${DASHBOARD}/executions`, { params: { limit: PAGE_SIZE, env, before } });
    }
    return { source: "executions", runs };
  }
  const wanted = pairs.filter((p) => !env || p.env === env).slice(0, FALLBACK_MAX_PAIRS);
  const runs = [];
  // A few at a time: the fallback asks once per pair.
  for (let i = 0; i < wanted.length; i += 6) {
    const batch = await Promise.all(wanted.slice(i, i + 6).map(async (pair) => {
      try {
        const page = await request(`/api/workflows/${encodeURIComponent(pair.workflow)}/runs`, { params: { env: pair.env, limit: FALLBACK_RUNS_PER_PAIR } });
        return (page.items || []).map((r) => normalizeRun(r, pair)).filter(Boolean);
      } catch {
        return [];
      }
    }));
    runs.push(...batch.flat());
  }
  runs.sort((a, b) => (b.started_at || 0) - (a.started_at || 0));
  return { source: "runs", runs };
}

/**
 * An alert in one shape, from the alert API (every field) or a live event (id, alertname, workflow, env,
 * severity, status). Fields the sender did not give are left out, so merging an event into what the
 * API said keeps the summary and start time.
 */
/**
 * Runs and failures per UTC hour and pair over the last week, from the history (the export API's hourly
 * metrics); null without that API, or when there are too many pairs for one download to be cheap.
 * `until` is the start of the hour being read: rows from it on are partial, the page counts those runs itself.
 */
export async function loadHourly(pairCount) {
  if (pairCount > HOURLY_MAX_PAIRS) return null;
  const until = Math.floor(Date.now() / 1000 / 3600) * 3600;
  const rows = await optional("/api/monitoring/export", { params: { format: "json", kind: "metrics", since: "7d" } });
  if (!Array.isArray(rows)) return null;
  return {
    until,
    rows: rows.map((r) => ({ hour: seconds(r.hour), workflow: r.workflow, env: r.env, runs: r.runs || 0, failures: r.failures || 0 }))
      .filter((r) => r.hour !== null && r.hour < until),
  };
}

export function normalizeAlert(raw) {
  if (!raw || typeof raw !== "object") return null;
  const alert = raw.alert && typeof raw.alert === "object" ? raw.alert : raw;
  if (alert.id === undefined || alert.id === null) return null;
  const labels = alert.labels || {};
  const out = {
    id: String(alert.id),
    status: String(alert.status || "ACTIVE").toUpperCase(),
    alertname: alert.alertname || labels.alertname || "alert",
    severity: alert.severity || labels.severity || "none",
    workflow: alert.workflow ?? labels.workflow ?? null,
    env: alert.env ?? labels.env ?? null,
  };
  const summary = alert.annotations && (alert.annotations.summary || alert.annotations.description);
  if (summary) out.summary = summary;
  const startsAt = seconds(alert.starts_at);
  if (startsAt !== null) out.starts_at = startsAt;
  if ("acknowledged_by" in alert) out.acknowledged_by = alert.acknowledged_by || null;
  if (typeof alert.escalation_level === "number") out.escalation_level = alert.escalation_level;
  return out;
}

/**
 * Open alerts: /alerts of the dashboard API, else /api/alerts. Both need a viewer token.
 * `counts` (by severity) covers every open alert, also past the items returned; null when the items are all of them.
 */
export async function loadAlerts(token) {
  const data = await optional(`${DASHBOARD}/alerts`, { token, params: { limit: ALERTS_SHOWN } });
  if (data) {
    const items = (data.items || []).map(normalizeAlert).filter((a) => a && a.status !== "RESOLVED");
    const counts = typeof data.total === "number" && data.total > items.length ? data.by_severity || null : null;
    const problem = data.available === false ? `Alerts are not available yet: ${data.reason || "the alert store is starting"}` : null;
    return { source: "dashboard", items, counts, problem };
  }
  const page = await request("/api/alerts", { token, params: { limit: ALERTS_SHOWN } });
  const items = (page.items || []).map(normalizeAlert).filter((a) => a && a.status !== "RESOLVED");
  return { source: "alerts", items, counts: null, problem: null };
}

export async function acknowledge(alertId, token, comment, duration) {
  return normalizeAlert(await request(`/api/alerts/${encodeURIComponent(alertId)}/acknowledge`, { method: "POST", token, body: { comment, duration } }));
}

function pick(object, names) {
  for (const name of names) {
    const value = name.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), object);
    if (typeof value === "number") return value;
  }
  return null;
}

/** Prometheus text: the value of the first sample of each wanted family, and the sum of some. */
function parseExposition(text) {
  const out = { cpu_seconds: null, memory: null, runs: 0 };
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const space = line.lastIndexOf(" ");
    const name = line.slice(0, line.search(/[ {]/));
    const value = Number(line.slice(space + 1));
    if (name === "process_cpu_seconds_total") out.cpu_seconds = value;
    else if (name === "process_resident_memory_bytes") out.memory = value;
    else if (name === "flowprobe_workflow_runs_total") out.runs += value;
  }
  return out;
}

const MIN_RATE_WINDOW = 5; // seconds: a rate over a shorter window says more about timing than about load
let baseline = null;
let lastRates = { cpu: null, rate: null };

/** The collector's own CPU, memory and runs per second: /metrics of the dashboard API, else the Prometheus exposition. */
export async function loadCollectorMetrics() {
  const data = await optional(`${DASHBOARD}/metrics`);
  if (data) {
    return {
      source: "dashboard",
      cpu: pick(data, ["process.cpu_percent", "cpu_percent"]),
      memory: pick(data, ["process.rss_bytes", "process.max_rss_bytes", "memory_bytes", "rss_bytes"]),
      rate: pick(data, ["runs.per_second", "runs_per_second"]),
    };
  }
  const sample = { at: performance.now() / 1000, ...parseExposition(await request("/metrics")) };
  if (!baseline) baseline = sample;
  const elapsed = sample.at - baseline.at;
  if (elapsed >= MIN_RATE_WINDOW) {
    lastRates = {
      cpu: sample.cpu_seconds !== null && baseline.cpu_seconds !== null ? (100 * (sample.cpu_seconds - baseline.cpu_seconds)) / elapsed : null,
      rate: (sample.runs - baseline.runs) / elapsed,
    };
    baseline = sample;
  }
  return { source: "exposition", memory: sample.memory, ...lastRates };
}

/** Whether the collector is ready (config loaded, runs scheduled). */
export async function loadReadiness() {
  try {
    const ready = await request("/readyz");
    return ready.status || "ready";
  } catch (error) {
    return error instanceof HttpError && error.status === 503 ? "not ready" : "unreachable";
  }
}

/** The last runs of the root workflows (health-check and those without depends_on); null without the dashboard API. */
export async function loadRootHealth() {
  const data = await optional(`${DASHBOARD}/health`, { params: { limit: 20 } });
  if (!data) return null;
  return (data.items || []).map((item) => ({
    workflow: item.workflow,
    env: item.env,
    status: normalizeStatus(item.status),
    passed: item.passed || 0,
    failed: item.failed || 0,
    runs: (item.runs || []).map((r) => normalizeRun(r, item)).filter(Boolean),
  }));
}

/**
 * Anomaly scores through the collector's pass-through; null when analytics is not configured or not answering.
 * `learning`: the pairs whose latency detector is still in its probation (no anomaly flag yet).
 */
export async function loadAnomalies() {
  try {
    const data = await optional("/api/analytics/anomalies");
    if (!data) return null;
    const byPair = new Map();
    const learning = new Set();
    for (const item of data.items || []) {
      const key = pairKey(item.workflow, item.env);
      if (item.learning && item.signal === "latency") learning.add(key);
      if (!item.anomaly) continue;
      if (!byPair.has(key)) byPair.set(key, []);
      byPair.get(key).push({ signal: item.signal, score: item.score });
    }
    return { threshold: data.threshold, byPair, learning };
  } catch {
    return null;
  }
}

export async function loadRun(runId) {
  return request(`/api/runs/${encodeURIComponent(runId)}`);
}
