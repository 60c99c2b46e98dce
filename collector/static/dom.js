// Small DOM and formatting helpers shared by the page's modules. Values are
// always added as text nodes, never parsed as HTML.

export const STATUS_TEXT = { up: "Up", degraded: "Degraded", down: "Down", skipped: "Skipped", unknown: "Pending" };

export const $ = (id) => document.getElementById(id);

/** An element with attributes and children; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text; // unchanged text is not re-announced by live regions
}

export function ago(at) {
  if (at === null || at === undefined) return "never";
  const s = Math.max(0, Date.now() / 1000 - at);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function timeEl(at) {
  if (at === null || at === undefined) return h("span", { class: "muted" }, "never");
  const date = new Date(at * 1000);
  return h("time", { datetime: date.toISOString(), title: date.toLocaleString() }, ago(at));
}

/** A ratio (0..1) as a percentage. */
export function percent(value) {
  if (typeof value !== "number" || Number.isNaN(value)) return "—";
  const p = value * 100;
  return `${p >= 99 && p < 100 ? p.toFixed(2) : p.toFixed(p === 100 ? 0 : 1)}%`; // the nines matter
}

export function bytes(value) {
  if (typeof value !== "number") return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = value, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function quantile(sorted, q) {
  if (!sorted.length) return null;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, STATUS_TEXT[status] || status);
}

export function outcomeBadge(outcome) {
  const status = { success: "up", failure: "down", error: "down", skipped: "skipped" }[outcome] || "unknown";
  return h("span", { class: `status status-${status}` }, outcome);
}

export function pairLabel(pair) {
  return `${pair.workflow} in ${pair.env}`;
}

/** Focus goes back to what opened a dialog; the page re-renders meanwhile, so the opener is found again by its key. */
export function refocus(opener, fallback) {
  const key = opener && opener.dataset ? opener.dataset.focusKey : null;
  const again = opener && opener.isConnected ? opener : key ? document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`) : null;
  if (again) again.focus();
  else if (fallback) {
    fallback.setAttribute("tabindex", "-1");
    fallback.focus();
  }
}
