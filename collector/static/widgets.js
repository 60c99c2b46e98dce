// The four widgets: system health, workflow executions, alerts and
// performance. Each render function rebuilds its widget from the page's
// state; app.js calls them once per animation frame at most.

import { formatSeconds, heatmap, lineChart, outcomeBars, outcomeStrip, sloOnScale, sparkline } from "./chart.js";
import { $, STATUS_TEXT, ago, bytes, h, outcomeBadge, pairLabel, percent, quantile, setText, statusBadge, timeEl } from "./dom.js";
import * as api from "./source.js";

const SPARK_POINTS = 30;
const CHART_POINTS = 300;
const RECENT_RUNS = 12;
const SEVERITIES = ["critical", "warning", "info"];

/** Everything but the dialogs. `actions` opens them: {openRun(runId, opener), openAck(alert, opener), token()}. */
export function renderWidgets(state, actions) {
  const byPair = runsByPair(state);
  const pairs = [...state.pairs.values()].filter((p) => !state.env || p.env === state.env)
    .sort((a, b) => a.workflow.localeCompare(b.workflow) || a.env.localeCompare(b.env));
  renderEnvOptions(state);
  renderHealth(state, pairs, byPair, actions);
  renderExecutions(state, pairs, actions);
  renderAlerts(state, actions);
  renderPerformance(state, pairs, byPair);
}

function runsByPair(state) {
  const out = new Map();
  for (const run of state.runs.values()) {
    const key = api.pairKey(run.workflow, run.env);
    if (!out.has(key)) out.set(key, []);
    out.get(key).push(run);
  }
  for (const list of out.values()) list.sort((a, b) => (a.started_at || 0) - (b.started_at || 0));
  return out;
}

function widthOf(el, fallback = 320) {
  return Math.max(Math.floor(el.clientWidth || fallback), 120);
}

function renderEnvOptions(state) {
  const select = $("env-filter");
  const envs = [...new Set([...state.pairs.values()].map((p) => p.env))].sort();
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join("\n") === envs.join("\n")) return;
  for (const option of [...select.options].slice(1)) option.remove();
  for (const env of envs) select.append(h("option", { value: env }, env));
  select.value = envs.includes(state.env) ? state.env : "";
}

function widgetState(counts) {
  if (counts.down) return "down";
  if (counts.degraded) return "degraded";
  if (counts.up) return "up";
  return "unknown";
}

function setPill(id, stateName, text) {
  const pill = $(id);
  pill.dataset.state = stateName;
  setText(pill, text);
}

function renderHealth(state, pairs, byPair, actions) {
  const counts = Object.fromEntries(api.STATUSES.map((s) => [s, 0]));
  for (const pair of pairs) counts[pair.status] += 1;
  const overall = widgetState(counts);
  $("health").dataset.state = overall;
  setPill("health-pill", overall, { down: "Down", degraded: "Degraded", up: "Healthy", unknown: "Pending" }[overall]);
  const down = pairs.filter((p) => p.status === "down");
  let summary;
  if (!state.loaded) summary = "Loading…";
  else if (!pairs.length) summary = "No workflows are scheduled here.";
  else if (down.length) summary = `${down.length} of ${pairs.length} down: ${down.slice(0, 3).map(pairLabel).join(", ")}${down.length > 3 ? "…" : ""}`;
  else if (counts.degraded) summary = `${counts.degraded} of ${pairs.length} degraded`;
  else summary = `${counts.up} of ${pairs.length} up${counts.skipped ? `, ${counts.skipped} skipped` : ""}`;
  setText($("health-summary"), summary);

  $("health-totals").replaceChildren(...api.STATUSES.filter((s) => s !== "unknown" || counts.unknown).map((s) =>
    h("li", { class: `total total-${s}` }, h("span", { class: "count" }, String(counts[s])), " ", STATUS_TEXT[s].toLowerCase())));

  $("pairs-body").replaceChildren(...pairs.map((pair) => pairRow(state, pair, byPair.get(api.pairKey(pair.workflow, pair.env)) || [], actions)));
  renderRoots(state);
}

function pairRow(state, pair, runs, actions) {
  const key = api.pairKey(pair.workflow, pair.env);
  const timed = runs.filter((r) => r.outcome !== "skipped" && typeof r.duration === "number");
  const recent = timed.slice(-SPARK_POINTS).map((r) => ({ v: r.duration, ok: r.outcome === "success" }));
  const sorted = timed.map((r) => r.duration).sort((a, b) => a - b);
  const p50 = pair.p50 ?? quantile(sorted, 0.5);
  const p95 = pair.p95 ?? quantile(sorted, 0.95);
  const anomalies = state.anomalies ? state.anomalies.byPair.get(key) || [] : [];
  const labels = Object.entries(pair.labels || {}).filter(([k]) => k === "team" || k === "tier").map(([k, v]) => `${k}=${v}`).join(" ");
  const last = pair.last_run;
  // Why it is not up: the overview says it in words; else the last run's failed step and reason, or why it was skipped.
  const because = pair.status === "up" ? null
    : pair.status_reason
      || (pair.status === "down" && last && (last.failed_step || last.reason) ? [last.failed_step, last.reason].filter(Boolean).join(": ") : null)
      || (pair.status === "skipped" && last && last.message ? last.message : null);
  const why = because ? h("div", { class: "small why" }, because) : null;

  return h("tr", { dataset: { workflow: pair.workflow, env: pair.env, status: pair.status } },
    h("th", { scope: "row" },
      h("span", { class: "name" }, pair.workflow), " ",
      h("span", { class: "env" }, pair.env),
      labels ? h("div", { class: "small muted" }, labels) : null,
      anomalies.length
        ? h("div", { class: "badges" }, anomalies.map((a) => h("span", { class: "badge anomaly", title: `anomaly score ${a.score?.toFixed?.(2) ?? a.score}` }, `Anomaly: ${a.signal}`)))
        : null,
      state.anomalies && state.anomalies.learning.has(key)
        ? h("div", { class: "small muted learning", title: "No anomaly is flagged until its detector has learned this pair's usual behaviour (the worker's --probation)" },
          "Anomaly detection: learning")
        : null,
      // Reserved for failure predictions from the analytics worker (flowprobe_failure_probability): filled once it serves them.
      h("span", { class: "badge prediction", dataset: { prediction: "" }, hidden: true })),
    // One element per cell: on a phone each cell is a two-column grid of its label and this.
    h("td", { "data-label": "Status" }, h("div", {}, statusBadge(pair.status), why)),
    h("td", { "data-label": "Last check" }, h("div", {}, timeEl(pair.last_check))),
    h("td", { "data-label": "Uptime" }, h("div", {}, uptimeCell(pair, runs))),
    h("td", { "data-label": "Response time" },
      h("div", { class: "spark" },
        sparkline(recent, { label: recent.length > 1 ? `Last ${recent.length} durations of ${pairLabel(pair)}, from ${formatSeconds(Math.min(...recent.map((p) => p.v)))} to ${formatSeconds(Math.max(...recent.map((p) => p.v)))}` : `No durations yet for ${pairLabel(pair)}` }),
        h("span", { class: "small" }, `p50 ${formatSeconds(p50)} · p95 ${formatSeconds(p95)}`))),
    h("td", { class: "actions" },
      h("button", {
        type: "button", class: "secondary", disabled: !last, dataset: { focusKey: `last:${key}`, run: last ? last.run_id : "" },
        "aria-label": `Last run of ${pairLabel(pair)}`, onclick: (e) => last && actions.openRun(last.run_id, e.currentTarget),
      }, "Last run")));
}

const WINDOWS = ["1h", "24h", "7d", "30d"];

/** Uptime per window from the overview, with reachability where it is not 100%; else counted from runs. */
function uptimeCell(pair, runs) {
  const windows = pair.uptime ? WINDOWS.filter((w) => typeof pair.uptime[w] === "number") : [];
  if (windows.length) {
    const main = windows.includes("24h") ? "24h" : windows[0];
    const reach = pair.reachability && typeof pair.reachability[main] === "number" && pair.reachability[main] < 1
      ? h("div", { class: "small" }, `reachable ${percent(pair.reachability[main])} (${main})`) : null;
    return h("div", {}, h("span", {}, `${percent(pair.uptime[main])} `), h("span", { class: "small muted" }, main),
      h("div", { class: "small muted" }, windows.filter((w) => w !== main).map((w) => `${w} ${percent(pair.uptime[w])}`).join(" · ")), reach);
  }
  // Fallback: the share of successful runs since the collector started, or of the runs kept here.
  const counts = pair.runs || {};
  const total = (counts.success || 0) + (counts.failure || 0) + (counts.error || 0);
  if (total) return h("div", {}, percent(counts.success / total), h("div", { class: "small muted" }, `of ${total} runs`));
  const done = runs.filter((r) => r.outcome !== "skipped");
  if (done.length) return h("div", {}, percent(done.filter((r) => r.outcome === "success").length / done.length), h("div", { class: "small muted" }, `of ${done.length} runs`));
  return h("span", { class: "muted" }, "—");
}

/** The root workflows' last runs (health-check and those without dependencies): one strip of outcomes each. */
function renderRoots(state) {
  const roots = (state.roots || []).filter((r) => !state.env || r.env === state.env);
  const box = $("roots");
  box.hidden = !roots.length;
  if (!roots.length) return;
  $("roots-list").replaceChildren(...roots.map((root) => {
    const runs = [...root.runs].reverse(); // oldest first, left to right
    return h("li", {},
      h("span", { class: "name" }, root.workflow), " ", h("span", { class: "env" }, root.env), " ",
      outcomeStrip(runs, `Last ${runs.length} runs of ${root.workflow} in ${root.env}: ${root.passed} passed, ${root.failed} failed`),
      h("span", { class: "small" }, ` ${root.passed} passed, ${root.failed} failed`));
  }));
}

function renderExecutions(state, pairs, actions) {
  const wanted = new Set(pairs.map((p) => api.pairKey(p.workflow, p.env)));
  const runs = [...state.runs.values()].filter((r) => wanted.has(api.pairKey(r.workflow, r.env)));
  runs.sort((a, b) => (b.started_at || 0) - (a.started_at || 0));
  const now = Date.now() / 1000;
  const failed = runs.filter((r) => r.outcome === "failure" || r.outcome === "error").length;
  const oldest = runs.length ? runs[runs.length - 1].started_at : now;
  setText($("executions-summary"), runs.length
    ? `${runs.length} runs since ${new Date(oldest * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" })}; ${failed} failed (${percent(failed / runs.length)})`
    : state.loaded ? "No runs yet" : "Loading…");

  // Successes and failures over an adaptive span: from the oldest run kept (at least 5 min, at most 24 h), in 30 bars.
  const span = Math.min(Math.max(now - oldest, 300), 86400);
  const count = 30, size = span / count, start = now - span;
  const buckets = Array.from({ length: count }, (_, i) => ({ t0: start + i * size, t1: start + (i + 1) * size, success: 0, failure: 0, skipped: 0 }));
  const totals = { success: 0, failure: 0, skipped: 0 };
  for (const run of runs) {
    if (run.started_at === null || run.started_at < start) continue;
    const bucket = buckets[Math.min(count - 1, Math.floor((run.started_at - start) / size))];
    const kind = run.outcome === "success" ? "success" : run.outcome === "skipped" ? "skipped" : "failure";
    bucket[kind] += 1;
    totals[kind] += 1;
  }
  const box = $("outcomes-chart");
  box.replaceChildren(outcomeBars(buckets, {
    width: widthOf(box),
    label: `Runs over the last ${Math.round(span / 60)} minutes: ${totals.success} succeeded, ${totals.failure} failed, ${totals.skipped} skipped`,
  }));
  $("outcomes-legend").replaceChildren(
    h("li", {}, h("span", { class: "swatch bar-ok", "aria-hidden": "true" }), `Succeeded ${totals.success}`),
    h("li", {}, h("span", { class: "swatch bar-bad", "aria-hidden": "true" }), `Failed ${totals.failure}`),
    h("li", {}, h("span", { class: "swatch bar-skip", "aria-hidden": "true" }), `Skipped ${totals.skipped}`));

  renderHeatmap(state, runs, wanted);

  $("recent-runs").replaceChildren(...runs.slice(0, RECENT_RUNS).map((run) =>
    h("li", {},
      h("button", {
        type: "button", class: "link", dataset: { focusKey: `run:${run.run_id}`, run: run.run_id },
        // The visible words first (WCAG 2.5.3), then what tells the twelve buttons apart.
        "aria-label": `${run.workflow} · ${run.env}: ${run.outcome}, ${ago(run.started_at)}`,
        onclick: (e) => actions.openRun(run.run_id, e.currentTarget),
      }, `${run.workflow} · ${run.env}`),
      " ", outcomeBadge(run.outcome), " ",
      h("span", { class: "small" }, run.outcome === "skipped" ? "" : formatSeconds(run.duration)), " ",
      h("span", { class: "small muted" }, timeEl(run.started_at)))));
}

/**
 * Runs per hour by day, for the last seven local days: the history's hourly figures where the page has them
 * (the export API, up to the hour they were read), and the runs the page holds after that.
 */
function renderHeatmap(state, runs, wanted) {
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  const days = Array.from({ length: 7 }, (_, i) => {
    const day = new Date(today);
    day.setDate(today.getDate() - 6 + i);
    return { start: day.getTime() / 1000, label: day.toLocaleDateString([], { weekday: "short" }), hours: Array.from({ length: 24 }, () => ({ count: 0, failed: 0 })) };
  });
  const add = (at, count, failed) => {
    const date = new Date(at * 1000);
    const dayStart = new Date(date);
    dayStart.setHours(0, 0, 0, 0);
    const day = days.find((d) => d.start === dayStart.getTime() / 1000);
    if (!day) return;
    const cell = day.hours[date.getHours()];
    cell.count += count;
    cell.failed += failed;
  };
  const hourly = state.hourly;
  const from = hourly ? hourly.until : -Infinity;
  if (hourly) {
    for (const row of hourly.rows) if (wanted.has(api.pairKey(row.workflow, row.env))) add(row.hour, row.runs, row.failures);
  }
  let counted = 0;
  for (const run of runs) {
    if (run.started_at === null || run.started_at < from) continue;
    add(run.started_at, 1, run.outcome === "failure" || run.outcome === "error" ? 1 : 0);
    counted += 1;
  }
  let busiest = null;
  for (const day of days) {
    day.hours.forEach((cell, hour) => {
      if (cell.count && (!busiest || cell.count > busiest.count)) busiest = { count: cell.count, day: day.label, hour };
    });
  }
  const map = $("heatmap");
  map.replaceChildren(heatmap(days, {
    width: widthOf(map),
    label: busiest ? `Runs per hour over the last 7 days; the busiest hour was ${busiest.day} ${busiest.hour}:00 with ${busiest.count} runs` : "Runs per hour over the last 7 days: none yet",
  }));
  const source = hourly ? "From the run history of the last 7 days." : counted ? `From the ${counted} most recent runs.` : "";
  setText($("heatmap-note"), source ? `${source} A red dot marks an hour with failures.` : "");
}

function renderAlerts(state, actions) {
  const alerts = state.alerts ? [...state.alerts.values()].filter((a) => !a.env || !state.env || a.env === state.env) : [];
  alerts.sort((a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity) || (b.starts_at || 0) - (a.starts_at || 0));
  const open = alerts.filter((a) => a.status !== "ACKNOWLEDGED");
  let bySeverity = {};
  for (const alert of alerts) bySeverity[alert.severity] = (bySeverity[alert.severity] || 0) + 1;
  if (state.alertCounts && !state.env) bySeverity = { ...state.alertCounts }; // the server counted past the alerts it listed
  const known = state.alerts !== null;
  // Red for an unacknowledged critical alert; amber while anything is open, acknowledged or not: someone is on it, it is not over.
  const stateName = !known ? "unknown" : open.some((a) => a.severity === "critical") ? "down" : alerts.length ? "degraded" : "up";
  $("alerts").dataset.state = stateName;
  const pill = { down: "Critical", degraded: open.length ? "Firing" : "Acknowledged", up: "Quiet", unknown: "Unknown" }[stateName];
  setPill("alerts-pill", stateName, pill);
  setText($("alerts-summary"), !known ? "Open alerts need a token" : alerts.length
    ? `${open.length} firing, ${alerts.length - open.length} acknowledged`
    : "No open alerts");
  const severities = [...SEVERITIES, ...Object.keys(bySeverity).filter((s) => !SEVERITIES.includes(s))];
  $("alert-totals").replaceChildren(...(known ? severities.map((s) =>
    h("li", { class: `total sev-${SEVERITIES.includes(s) ? s : "other"}` }, h("span", { class: "count" }, String(bySeverity[s] || 0)), " ", s)) : []));

  const message = $("alerts-message");
  message.hidden = !state.alertsProblem;
  setText(message, state.alertsProblem || "");
  setText($("token-state"), actions.token() ? "A token is set for this tab." : "No token set.");

  $("alert-list").replaceChildren(...alerts.map((alert) => {
    const where = [alert.workflow, alert.env].filter(Boolean).join(" · ");
    const canAck = alert.status === "ACTIVE" || alert.status === "ESCALATED";
    return h("li", { class: `alert sev-${SEVERITIES.includes(alert.severity) ? alert.severity : "other"}`, dataset: { alert: alert.id, status: alert.status } },
      h("div", { class: "alert-head" },
        h("h3", {}, alert.alertname),
        h("span", { class: "badge severity" }, alert.severity),
        h("span", { class: "badge" }, alert.status.toLowerCase())),
      where ? h("p", { class: "small" }, where) : null,
      alert.summary ? h("p", {}, alert.summary) : null,
      h("p", { class: "small muted" },
        alert.starts_at ? ["Since ", timeEl(alert.starts_at)] : null,
        alert.acknowledged_by ? `${alert.starts_at ? " · " : ""}acknowledged by ${alert.acknowledged_by}` : "",
        alert.escalation_level ? ` · escalated ${alert.escalation_level}×` : ""),
      canAck ? h("button", {
        type: "button", dataset: { focusKey: `ack:${alert.id}` }, "aria-label": `Acknowledge ${alert.alertname}${where ? ` (${where})` : ""}`,
        onclick: (e) => actions.openAck(alert, e.currentTarget),
      }, "Acknowledge") : null);
  }));
}

function renderPerformance(state, pairs, byPair) {
  const select = $("latency-pair");
  const keys = pairs.map((p) => api.pairKey(p.workflow, p.env));
  if (!keys.includes(state.latencyKey)) state.latencyKey = keys[0] || null;
  const have = [...select.options].map((o) => o.value);
  if (have.join("\n") !== keys.join("\n")) {
    select.replaceChildren(...pairs.map((p) => h("option", { value: api.pairKey(p.workflow, p.env) }, `${p.workflow} (${p.env})`)));
  }
  if (state.latencyKey) select.value = state.latencyKey;

  const pair = state.pairs.get(state.latencyKey);
  const runs = (byPair.get(state.latencyKey) || []).filter((r) => r.outcome !== "skipped" && typeof r.duration === "number").slice(-CHART_POINTS);
  const sorted = runs.map((r) => r.duration).sort((a, b) => a - b);
  const p50 = pair?.p50 ?? quantile(sorted, 0.5);
  const p95 = pair?.p95 ?? quantile(sorted, 0.95);
  const box = $("latency-chart");
  const slo = pair?.latency_slo ?? null;
  const points = runs.map((r) => ({ t: r.started_at, v: r.duration, ok: r.outcome === "success" }));
  box.replaceChildren(lineChart(points, {
    width: widthOf(box), p50, p95, slo,
    label: pair ? `Response time of ${pairLabel(pair)} over its last ${runs.length} runs: p50 ${formatSeconds(p50)}, p95 ${formatSeconds(p95)}` : "No workflow selected",
  }));
  $("latency-legend").replaceChildren(...[
    h("li", {}, h("span", { class: "swatch line", "aria-hidden": "true" }), "Duration of each run"),
    h("li", {}, h("span", { class: "swatch ref-p50", "aria-hidden": "true" }), `p50 ${formatSeconds(p50)}`),
    h("li", {}, h("span", { class: "swatch ref-p95", "aria-hidden": "true" }), `p95 ${formatSeconds(p95)}`),
    slo ? h("li", {}, h("span", { class: "swatch ref-slo", "aria-hidden": "true" }), `latency SLO ${formatSeconds(slo)}`,
      sloOnScale(points, p95, slo) ? "" : " (far above: not drawn)") : null,
    h("li", {}, h("span", { class: "swatch dot-bad", "aria-hidden": "true" }), "Failed run"),
  ].filter(Boolean));

  let slowest = null;
  for (const p of pairs) {
    const list = (byPair.get(api.pairKey(p.workflow, p.env)) || []).filter((r) => r.outcome !== "skipped" && typeof r.duration === "number").map((r) => r.duration).sort((a, b) => a - b);
    const value = p.p95 ?? quantile(list, 0.95);
    if (value !== null && (!slowest || value > slowest.value)) slowest = { value, pair: p };
  }
  setText($("performance-summary"), slowest ? `Slowest p95: ${pairLabel(slowest.pair)}, ${formatSeconds(slowest.value)}` : state.loaded ? "No durations yet" : "Loading…");

  const m = state.metrics;
  setText($("stat-cpu"), m && typeof m.cpu === "number" ? `${m.cpu.toFixed(1)}%` : "—");
  setText($("stat-memory"), m ? bytes(m.memory) : "—");
  setText($("stat-rate"), m && typeof m.rate === "number" ? m.rate.toFixed(2) : "—");
  setText($("stat-health"), state.readiness || "—");
}
