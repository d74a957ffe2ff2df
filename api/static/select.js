// Select mode: several images at once (a click selects, Shift+click the range up to it), then
// deleted, processed again or captioned again in one request, POST api/images/batch, with the
// upload token as for one image; a question before a delete, and a summary after.

import { change, imagePath, refusal, sendJSON } from "./api.js";
import { $ } from "./dom.js";
import { layout, markSelected } from "./grid.js";
import { canReprocess } from "./image.js";
import { FINISHED, hooks, state } from "./state.js";
import { refreshStats } from "./stats.js";
import { withUploadToken } from "./token.js";

const BATCH_MAX = 500; // ids in one request (the API's most); more go in several
const NAMES_SAID = 3; // failures named in the summary; the rest counted

const ACTIONS = {
  delete: {
    eligible: (item) => FINISHED.has(item.status),
    skipped: "still being processed",
    done: (n) => `${n} deleted`,
    single: (id) => ["DELETE", imagePath(id)],
  },
  reprocess: {
    eligible: (item) => FINISHED.has(item.status) && canReprocess(item),
    skipped: "still being processed, or processing again cannot change their outcome",
    done: (n) => `${n} queued to be processed again`,
    single: (id) => ["POST", `${imagePath(id)}/reprocess`],
  },
  recaption: {
    eligible: (item) => item.status === "done",
    skipped: "not processed",
    done: (n) => `${n} queued to be captioned again`,
    single: (id) => ["POST", `${imagePath(id)}/recaption`],
  },
};

const images = (n) => `${n.toLocaleString()} image${n === 1 ? "" : "s"}`;
const bar = $("#selection-bar");
const summary = $("#batch-summary");
let anchor = null; // the last tile clicked: Shift+click selects from it

const selectedItems = () => [...state.selected].map((id) => state.items.get(id)).filter(Boolean);

export function updateSelection() {
  const items = selectedItems();
  $("#selection-count").textContent = `${images(items.length)} selected`;
  for (const button of bar.querySelectorAll("button[data-batch]")) {
    const { eligible } = ACTIONS[button.dataset.batch];
    const off = button.dataset.batch === "recaption" && state.captionNote;
    button.disabled = Boolean(off) || !items.some(eligible);
    button.title = off ? "No caption is made now: see the note about captions." : "";
  }
}

function setSelecting(on) {
  state.selecting = on;
  if (!on) {
    state.selected.clear();
    anchor = null;
  }
  $("#grid").classList.toggle("selecting", on);
  $("#select-mode").setAttribute("aria-pressed", String(on));
  $("#select-mode").textContent = on ? "Done selecting" : "Select";
  bar.hidden = !on;
  for (const id of state.order) markSelected(id);
  updateSelection();
}

export function toggleSelected(id, range = false) {
  const from = range && anchor !== null ? state.order.indexOf(anchor) : -1;
  const to = state.order.indexOf(id);
  if (from >= 0 && to >= 0) {
    for (const other of state.order.slice(Math.min(from, to), Math.max(from, to) + 1)) state.selected.add(other);
  } else if (state.selected.has(id)) state.selected.delete(id);
  else state.selected.add(id);
  anchor = id;
  for (const other of state.order) markSelected(other);
  updateSelection();
}

// One request per image, for a server without the batch endpoint yet: the same results.
async function oneByOne(action, ids) {
  const results = [];
  for (const id of ids) {
    const [method, path] = ACTIONS[action].single(id);
    const answer = await withUploadToken((token) => change(method, path, token));
    if (answer === null) return { results, problem: "the server needs its upload token" };
    const error = answer.status === 0 ? "the server cannot be reached." : answer.status >= 400 ? refusal(answer) : null;
    results.push(error ? { id, status: answer.status, error } : { id, status: answer.status });
  }
  return { results };
}

async function sendBatch(action, ids) {
  const results = [];
  for (let start = 0; start < ids.length; start += BATCH_MAX) {
    const part = ids.slice(start, start + BATCH_MAX);
    const answer = await withUploadToken((token) => sendJSON("POST", "api/images/batch", { action, ids: part }, token));
    if (answer === null) return { results, problem: "the server needs its upload token" };
    if (answer.status === 404 || answer.status === 405) {
      const rest = await oneByOne(action, ids.slice(start));
      return { results: [...results, ...rest.results], problem: rest.problem };
    }
    if (answer.status === 0) return { results, problem: "the server cannot be reached" };
    if (answer.status >= 400 || !answer.body || !Array.isArray(answer.body.results)) return { results, problem: refusal(answer).replace(/\.$/, "") };
    results.push(...answer.body.results);
  }
  return { results };
}

function summarize(action, { results, problem }, skipped) {
  const ok = results.filter((result) => !result.error);
  const failed = results.filter((result) => result.error);
  const parts = [`${ACTIONS[action].done(images(ok.length))}.`];
  if (failed.length) {
    const named = failed.slice(0, NAMES_SAID).map((result) => `${state.items.get(result.id)?.filename ?? `#${result.id}`}: ${String(result.error).replace(/\.$/, "")}`);
    parts.push(`${images(failed.length)} not: ${named.join("; ")}${failed.length > NAMES_SAID ? "; …" : ""}.`);
  }
  if (skipped) parts.push(`${images(skipped)} left out: ${ACTIONS[action].skipped}.`);
  if (problem) parts.push(`Stopped: ${problem}.`);
  return { text: parts.join(" "), ok: ok.map((result) => result.id) };
}

async function run(action) {
  const items = selectedItems();
  const ids = items.filter(ACTIONS[action].eligible).map((item) => item.id);
  if (!ids.length) return;
  if (action === "delete" && !confirm(`Delete ${images(ids.length)}? Their records, thumbnails and originals go.`)) return;
  for (const button of bar.querySelectorAll("button")) button.disabled = true;
  summary.textContent = "Working…";
  const { text, ok } = summarize(action, await sendBatch(action, ids), items.length - ids.length);
  summary.textContent = text;
  for (const id of ok) state.selected.delete(id);
  if (action === "delete") {
    const gone = new Set(ok);
    for (const id of gone) state.items.delete(id);
    state.order = state.order.filter((id) => !gone.has(id));
    layout();
    refreshStats().catch(() => {});
  }
  for (const button of bar.querySelectorAll("button")) button.disabled = false;
  for (const id of state.order) markSelected(id);
  updateSelection();
  hooks.poll();
}

$("#select-mode").addEventListener("click", () => setSelecting(!state.selecting));
$("#select-all").addEventListener("click", () => {
  for (const id of state.order) state.selected.add(id);
  for (const id of state.order) markSelected(id);
  updateSelection();
});
$("#select-none").addEventListener("click", () => {
  state.selected.clear();
  for (const id of state.order) markSelected(id);
  updateSelection();
});
for (const button of bar.querySelectorAll("button[data-batch]")) {
  button.addEventListener("click", () => run(button.dataset.batch));
}
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.selecting && !document.querySelector("dialog[open]")) setSelecting(false);
});
