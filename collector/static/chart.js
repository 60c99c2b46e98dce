// SVG charts drawn by hand: a sparkline, a response-time line chart, stacked
// success/failure bars and an hour-by-day heatmap. A few small functions are
// less to review, license and update than a charting library, and they draw
// at the container's real pixel size, so text stays legible on a phone.
// Colours come from classes styled in app.css (the page's CSP allows no
// inline styles); every chart has a text alternative in its aria-label.

const NS = "http://www.w3.org/2000/svg";

export function svgEl(tag, attrs = {}, children = []) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function titled(node, text) {
  node.append(svgEl("title", {}, [document.createTextNode(text)]));
  return node;
}

function frame(width, height, label) {
  return svgEl("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart-svg", focusable: "false",
  });
}

export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  return `${seconds.toFixed(1)} s`;
}

/** Rounded steps for an axis from 0 to max: 1, 2 or 5 times a power of ten. */
function ticks(max, count = 4) {
  if (!(max > 0)) return [0];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(v);
  return out;
}

function clockLabel(t, span) {
  const date = new Date(t * 1000);
  if (span > 36 * 3600) return date.toLocaleDateString([], { weekday: "short", day: "numeric" });
  if (span < 15 * 60) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** A small line of the last durations; failed runs are marked. */
export function sparkline(points, { width = 112, height = 28, label }) {
  const svg = frame(width, height, label);
  svg.classList.add("sparkline");
  if (points.length < 2) {
    svg.append(svgEl("line", { x1: 0, x2: width, y1: height - 2, y2: height - 2, class: "axis" }));
    return svg;
  }
  const max = Math.max(...points.map((p) => p.v), 1e-6);
  const x = (i) => 2 + (i * (width - 4)) / (points.length - 1);
  const y = (v) => height - 3 - (v / max) * (height - 6);
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
  svg.append(svgEl("path", { d, class: "line" }));
  points.forEach((p, i) => {
    if (!p.ok) svg.append(svgEl("circle", { cx: x(i), cy: y(p.v), r: 2.5, class: "dot-bad" }));
  });
  return svg;
}

/** Whether a latency SLO is drawn: not when it would squash the runs into the bottom of the chart. */
export function sloOnScale(points, p95, slo) {
  const top = Math.max(0, p95 || 0, ...points.map((p) => p.v));
  return slo > 0 && (top === 0 || slo <= top * 2.5);
}

/** Duration of each run over time, with p50 and p95 (and the latency SLO, when near) as dashed lines. */
export function lineChart(points, { width, height = 220, label, p50, p95, slo }) {
  if (!sloOnScale(points, p95, slo)) slo = null;
  const svg = frame(width, height, label);
  const left = 52, right = 12, top = 10, bottom = 26;
  const plotW = Math.max(width - left - right, 10), plotH = height - top - bottom;
  if (!points.length) {
    svg.append(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty" }, [document.createTextNode("No runs yet")]));
    return svg;
  }
  const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const vmax = Math.max(...points.map((p) => p.v), p95 || 0, slo || 0, 1e-3) * 1.1;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * plotW;
  const y = (v) => top + plotH - (v / vmax) * plotH;
  for (const v of ticks(vmax)) {
    svg.append(svgEl("line", { x1: left, x2: left + plotW, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(svgEl("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, [document.createTextNode(formatSeconds(v))]));
  }
  const labelWidth = t1 - t0 < 15 * 60 ? 120 : 90; // clock labels with seconds are wider
  const xTicks = Math.max(1, Math.min(5, Math.floor(plotW / labelWidth)));
  for (let i = 0; i <= xTicks; i += 1) {
    const t = t0 + ((t1 - t0) * i) / xTicks;
    const anchor = i === 0 ? "start" : i === xTicks ? "end" : "middle";
    svg.append(svgEl("text", { x: x(t), y: height - 8, "text-anchor": anchor, class: "tick" }, [document.createTextNode(clockLabel(t, t1 - t0))]));
  }
  for (const [value, cls] of [[p50, "ref-p50"], [p95, "ref-p95"], [slo, "ref-slo"]]) {
    if (value > 0) svg.append(svgEl("line", { x1: left, x2: left + plotW, y1: y(value), y2: y(value), class: cls }));
  }
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
  svg.append(svgEl("path", { d, class: "line" }));
  for (const p of points) {
    if (!p.ok) svg.append(titled(svgEl("circle", { cx: x(p.t), cy: y(p.v), r: 3.5, class: "dot-bad" }), `failed: ${formatSeconds(p.v)}`));
  }
  return svg;
}

/** One small square per run, oldest first: green passed, red failed, grey skipped. */
export function outcomeStrip(runs, label, { size = 10, gap = 2 } = {}) {
  const width = Math.max(runs.length * (size + gap) - gap, size);
  const svg = frame(width, size, label);
  svg.classList.add("strip");
  runs.forEach((run, i) => {
    const cls = run.outcome === "success" ? "bar-ok" : run.outcome === "skipped" ? "bar-skip" : "bar-bad";
    svg.append(titled(svgEl("rect", { x: i * (size + gap), y: 0, width: size, height: size, rx: 2, class: cls }), `${run.outcome}${run.failed_step ? ` at ${run.failed_step}` : ""}`));
  });
  return svg;
}

/** Stacked bars: successes, failures and skips per time bucket. */
export function outcomeBars(buckets, { width, height = 180, label }) {
  const svg = frame(width, height, label);
  const left = 34, right = 8, top = 8, bottom = 24;
  const plotW = Math.max(width - left - right, 10), plotH = height - top - bottom;
  const max = Math.max(1, ...buckets.map((b) => b.success + b.failure + b.skipped));
  const y = (v) => top + plotH - (v / max) * plotH;
  for (const v of ticks(max, 3).filter((v) => Number.isInteger(v))) {
    svg.append(svgEl("line", { x1: left, x2: left + plotW, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(svgEl("text", { x: left - 5, y: y(v) + 4, "text-anchor": "end", class: "tick" }, [document.createTextNode(String(v))]));
  }
  if (!buckets.length) return svg;
  const slot = plotW / buckets.length;
  const barW = Math.max(1, slot - Math.min(3, slot * 0.2));
  buckets.forEach((b, i) => {
    let base = 0;
    const x = left + i * slot;
    for (const [count, cls] of [[b.success, "bar-ok"], [b.failure, "bar-bad"], [b.skipped, "bar-skip"]]) {
      if (!count) continue;
      const rect = svgEl("rect", { x: x.toFixed(1), y: y(base + count).toFixed(1), width: barW.toFixed(1), height: (y(base) - y(base + count)).toFixed(1), class: cls });
      svg.append(titled(rect, `${clockLabel(b.t0, b.t1 - b.t0)}: ${b.success} succeeded, ${b.failure} failed, ${b.skipped} skipped`));
      base += count;
    }
  });
  const span = buckets[buckets.length - 1].t1 - buckets[0].t0;
  svg.append(svgEl("text", { x: left, y: height - 6, class: "tick" }, [document.createTextNode(clockLabel(buckets[0].t0, span))]));
  svg.append(svgEl("text", { x: left + plotW, y: height - 6, "text-anchor": "end", class: "tick" }, [document.createTextNode("now")]));
  return svg;
}

/** Runs per hour (columns) and day (rows); cells with failures get a red mark. */
export function heatmap(days, { width, label }) {
  const left = 40, top = 16, right = 4, gap = 1;
  const cell = Math.max(6, Math.floor((width - left - right) / 24) - gap);
  const height = top + days.length * (cell + gap) + 4;
  const svg = frame(width, height, label);
  const max = Math.max(1, ...days.flatMap((d) => d.hours.map((h) => h.count)));
  for (const hour of [0, 6, 12, 18]) {
    svg.append(svgEl("text", { x: left + hour * (cell + gap), y: 11, class: "tick" }, [document.createTextNode(`${String(hour).padStart(2, "0")}h`)]));
  }
  days.forEach((day, row) => {
    const yy = top + row * (cell + gap);
    svg.append(svgEl("text", { x: left - 6, y: yy + cell * 0.75, "text-anchor": "end", class: "tick" }, [document.createTextNode(day.label)]));
    day.hours.forEach((h, hour) => {
      const level = h.count ? 1 + Math.min(3, Math.floor((h.count / max) * 4)) : 0; // 1 to 4; 0 is no run
      const rect = svgEl("rect", { x: left + hour * (cell + gap), y: yy, width: cell, height: cell, rx: 1.5, class: `heat heat-${level}` });
      const failed = h.failed ? `, ${h.failed} failed` : "";
      svg.append(titled(rect, `${day.label} ${String(hour).padStart(2, "0")}:00: ${h.count} runs${failed}`));
      if (h.failed) {
        svg.append(svgEl("circle", { cx: left + hour * (cell + gap) + cell / 2, cy: yy + cell / 2, r: Math.max(2, cell / 4), class: "heat-fail" }));
      }
    });
  });
  return svg;
}

/** One horizontal bar split into a step's phases (connect, tls, request, first byte, transfer). */
export function phaseBar(phases, { width, height = 14, label }) {
  const svg = frame(width, height, label);
  const total = Object.values(phases).reduce((a, b) => a + (b || 0), 0);
  if (!(total > 0)) return svg;
  let x = 0;
  for (const [name, value] of Object.entries(phases)) {
    if (!(value > 0)) continue;
    const w = (value / total) * width;
    svg.append(titled(svgEl("rect", { x: x.toFixed(1), y: 0, width: Math.max(w, 0.5).toFixed(1), height, class: `phase phase-${name}` }), `${name}: ${formatSeconds(value)}`));
    x += w;
  }
  return svg;
}
