// The dialogs: a run's detail (steps, phases, failed expectations, redacted
// captures) and the acknowledgement of an alert with the tab's API token.

import { formatSeconds, phaseBar } from "./chart.js";
import { $, ago, h, outcomeBadge, refocus, setText } from "./dom.js";
import * as api from "./source.js";

const PHASES = ["connect", "tls", "request", "first_byte", "transfer"];

let context = null; // set by wireDialogs
let runOpener = null;

export async function openRun(runId, opener) {
  const dialog = $("run-dialog");
  runOpener = opener || null;
  setText($("run-title"), "Run");
  $("run-body").replaceChildren(h("p", {}, "Loading…"));
  if (!dialog.open) dialog.showModal();
  try {
    const run = await api.loadRun(runId);
    renderRun(run);
  } catch (error) {
    $("run-body").replaceChildren(h("p", { class: "notice error", role: "alert" }, `Cannot load the run: ${error.message}`));
  }
}

function display(value) {
  if (value === "[REDACTED]") return h("span", { class: "redacted" }, "redacted");
  return typeof value === "string" ? value : JSON.stringify(value);
}

function renderRun(run) {
  setText($("run-title"), `${run.workflow} · ${run.env}`);
  const started = api.seconds(run.started_at);
  const meta = [
    ["Outcome", outcomeBadge(run.outcome)],
    ["Started", started ? `${new Date(started * 1000).toLocaleString()} (${ago(started)})` : "—"],
    ["Duration", formatSeconds(run.duration)],
    ["Attempts", `${run.attempts ?? 1}${run.flaky ? " (flaky: passed on a retry)" : ""}`],
    run.failed_step ? ["Failed step", run.failed_step] : null,
    run.reason ? ["Reason", run.reason] : null,
    run.skip_reason ? ["Skipped because", run.skip_reason] : null,
    run.message ? ["Message", run.message] : null,
    ["Run id", h("code", {}, run.run_id)],
  ].filter(Boolean);
  const steps = (run.steps || []).map((step) => {
    const phases = Object.fromEntries(PHASES.filter((p) => step.phases && typeof step.phases[p] === "number").map((p) => [p, step.phases[p]]));
    const captures = Object.entries(step.captures || {});
    const failures = step.failures || [];
    return h("li", { class: "step", dataset: { step: step.name, outcome: step.outcome } },
      h("div", { class: "step-head" },
        h("h4", {}, step.name), " ", outcomeBadge(step.outcome),
        h("span", { class: "small" }, [step.status ? `HTTP ${step.status}` : null, formatSeconds(step.duration), step.attempts > 1 ? `${step.attempts} attempts` : null].filter(Boolean).join(" · "))),
      Object.keys(phases).length ? h("div", { class: "phases" },
        phaseBar(phases, { width: 240, label: `Phases of ${step.name}: ${Object.entries(phases).map(([k, v]) => `${k.replace("_", " ")} ${formatSeconds(v)}`).join(", ")}` }),
        h("dl", { class: "inline" }, Object.entries(phases).flatMap(([k, v]) => [
          h("dt", {}, h("span", { class: `swatch phase-${k}`, "aria-hidden": "true" }), k.replace("_", " ")), h("dd", {}, formatSeconds(v))]))) : null,
      failures.length ? h("div", { class: "failures" }, h("h5", {}, "Failed expectations"),
        h("ul", {}, failures.map((f) => h("li", {}, h("span", { class: "badge severity" }, f.reason), " ", h("code", {}, f.check), ": ", f.message)))) : null,
      captures.length ? h("div", { class: "captures" }, h("h5", {}, "Captures"),
        h("dl", { class: "inline" }, captures.flatMap(([k, v]) => [h("dt", {}, h("code", {}, k)), h("dd", {}, display(v))]))) : null,
      step.message ? h("p", { class: "small" }, step.message) : null);
  });
  $("run-body").replaceChildren(
    h("dl", { class: "meta" }, meta.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h3", {}, "Steps"),
    steps.length ? h("ol", { class: "steps" }, steps) : h("p", { class: "muted" }, "No step ran."));
}

// ---------------------------------------------------------------- acknowledge

let ackAlert = null;
let ackOpener = null;

export function openAck(alert, opener) {
  if (!context.token()) {
    context.state.alertsProblem = "Enter an operator token above to acknowledge alerts.";
    context.invalidate();
    $("token").focus();
    return;
  }
  ackAlert = alert;
  ackOpener = opener;
  setText($("ack-which"), `${alert.alertname}${alert.workflow ? ` · ${alert.workflow}` : ""}${alert.env ? ` · ${alert.env}` : ""} (${alert.severity})`);
  $("ack-error").hidden = true;
  $("ack-comment").value = "";
  $("ack-dialog").showModal();
  $("ack-comment").focus();
}

async function submitAck(event) {
  event.preventDefault();
  const comment = $("ack-comment").value.trim();
  const error = $("ack-error");
  if (!comment) {
    error.hidden = false;
    setText(error, "A comment is required: it tells the others who is on it and why.");
    $("ack-comment").focus();
    return;
  }
  const button = $("ack-submit");
  button.disabled = true;
  try {
    const updated = await api.acknowledge(ackAlert.id, context.token(), comment, $("ack-duration").value);
    if (updated) context.updateAlert(updated);
    $("ack-dialog").close();
    context.announce(`${ackAlert.alertname} acknowledged`);
    context.invalidate();
  } catch (failure) {
    error.hidden = false;
    setText(error, failure.status === 401 || failure.status === 403 ? `Not allowed: ${failure.message}` : `Not acknowledged: ${failure.message}`);
  } finally {
    button.disabled = false;
  }
}

/** Wires the dialogs to the page. `page` is {state, token(), invalidate(), announce(text), updateAlert(alert)}. */
export function wireDialogs(page) {
  context = page;
  const runDialog = $("run-dialog");
  $("run-close").addEventListener("click", () => runDialog.close());
  runDialog.addEventListener("close", () => refocus(runOpener));
  runDialog.addEventListener("click", (e) => {
    if (e.target === runDialog) runDialog.close(); // a click on the backdrop
  });
  $("ack-form").addEventListener("submit", submitAck);
  $("ack-cancel").addEventListener("click", () => $("ack-dialog").close());
  $("ack-dialog").addEventListener("close", () => refocus(ackOpener, $("alert-list")));
}
