// The detail: one image's whole record in a dialog, stepped through in the grid's order.

import { act, actionsOf } from "./actions.js";
import { getJSON, imagePath, thumbnailPath } from "./api.js";
import { $, coordinate, el, formatBytes, formatMs, timeElement } from "./dom.js";
import { tileButton } from "./grid.js";
import { captionOf, failureOf, thumbnailOf } from "./image.js";
import { FINISHED, state } from "./state.js";
import { openViewer } from "./viewer.js";

const STAGES = ["hash", "metadata", "thumbnails", "caption"];

export const dialog = $("#detail");
let detailRecord = null;
let returnFocusTo = null;

function fieldList(pairs) {
  const dl = el("dl", { className: "fields" });
  for (const [name, value] of pairs) {
    if (value === undefined) continue;
    dl.append(el("dt", { text: name }));
    if (value instanceof Node) dl.append(el("dd", {}, value));
    else dl.append(el("dd", { text: value === null || value === "" ? "–" : String(value) }));
  }
  return dl;
}

// EXIF as nested definition lists; every value as text.
function exifList(value, depth = 0) {
  const dl = el("dl", { className: "fields" });
  for (const [key, inner] of Object.entries(value)) {
    dl.append(el("dt", { text: key }));
    if (inner && typeof inner === "object" && !Array.isArray(inner) && depth < 4) {
      dl.append(el("dd", { text: Object.keys(inner).length ? "" : "–" }));
      if (Object.keys(inner).length) dl.append(exifList(inner, depth + 1));
    } else {
      let text = Array.isArray(inner) ? inner.map((part) => JSON.stringify(part)).join(", ") : String(inner);
      if (text.length > 300) text = `${text.slice(0, 300)}…`;
      dl.append(el("dd", {}, el("code", { text })));
    }
  }
  return dl;
}

function timingsTable(record) {
  const total = record.processing_ms;
  const largest = Math.max(1, ...STAGES.map((stage) => record.timings_ms[stage] || 0));
  const body = el("tbody");
  for (const stage of STAGES) {
    const ms = record.timings_ms[stage];
    const bar = el("span", { className: "bar", "aria-hidden": "true" });
    bar.style.width = `${Math.round(((ms || 0) / largest) * 100)}%`;
    body.append(el("tr", { "data-stage": stage },
      el("th", { scope: "row", text: stage }),
      el("td", { className: "ms", text: formatMs(ms) }),
      el("td", { className: "graph" }, bar)));
  }
  const foot = el("tfoot", {}, el("tr", { "data-stage": "total" },
    el("th", { scope: "row", text: "total" }),
    el("td", { className: "ms", text: formatMs(total) }),
    el("td")));
  return el("table", { className: "timings" },
    el("caption", { className: "visually-hidden", text: "Time per stage" }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "stage" }), el("th", { scope: "col", className: "ms", text: "time" }),
      el("th", { scope: "col", text: "" }))),
    body, foot);
}

function renderDetail(record) {
  const metadata = record.metadata || {};
  // No caption made now (captions off, the model on its way): the banner's note, here too.
  const caption = captionOf(record) ?? { text: state.captionNote, kind: "why" };
  $("#detail-title").textContent = record.filename;
  const thumbnail = thumbnailOf(record, true);
  if (record.status === "done") {
    thumbnail.classList.add("opens-viewer");
    thumbnail.title = "View full size";
    thumbnail.addEventListener("click", () => openViewer(record.id, record));
  }
  // A failed image's error is in its record's fields below: said once.
  const figure = el("figure", {},
    thumbnail,
    record.status === "failed" ? null : el("figcaption", { className: `caption ${caption.kind}`, text: caption.text }));
  const gps = metadata.gps
    ? el("a", { href: `geo:${metadata.gps.latitude},${metadata.gps.longitude}`,
      text: `${coordinate(metadata.gps.latitude, "N", "S")}, ${coordinate(metadata.gps.longitude, "E", "W")}` })
    : undefined;
  const camera = metadata.camera ? [metadata.camera.make, metadata.camera.model].filter(Boolean).join(" ") : undefined;
  const recordFields = fieldList([
    ["Status", el("span", { className: `badge status-${record.status}`, text: record.status })],
    ["Error", record.status === "failed" || record.error ? failureOf(record) : undefined],
    ["Id", record.id],
    ["SHA-256", el("code", { text: record.sha256 })],
    ["Received", timeElement(record.received_at)],
    ["Processed", timeElement(record.processed_at)],
    ["Caption", record.caption],
    ["Caption model", record.caption_model],
    ["Caption device", record.caption_device],
    ["Caption runtime", record.caption_runtime],
    ["Caption error", record.caption_error ?? undefined],
  ]);
  const metadataFields = fieldList([
    ["Format", metadata.format],
    ["Width", metadata.width === null || metadata.width === undefined ? null : `${metadata.width} px`],
    ["Height", metadata.height === null || metadata.height === undefined ? null : `${metadata.height} px`],
    ["Mode", metadata.mode],
    ["Size", formatBytes(metadata.size_bytes)],
    ["Taken", metadata.taken_at],
    ["Camera", camera],
    ["GPS", gps],
    ["ICC profile", metadata.icc_profile],
  ]);
  const hasExif = metadata.exif && Object.keys(metadata.exif).length > 0;
  const links = el("p", { className: "links" },
    el("a", { href: imagePath(record.id), target: "_blank", rel: "noopener", text: "Record (JSON)" }),
    record.thumbnails.small ? el("a", { href: thumbnailPath(record.id, "small"), target: "_blank", rel: "noopener", text: "Small thumbnail" }) : null,
    record.thumbnails.medium ? el("a", { href: thumbnailPath(record.id, "medium"), target: "_blank", rel: "noopener", text: "Medium thumbnail" }) : null);
  $("#detail-body").replaceChildren(
    el("section", {}, figure, actionsOf(record), el("h3", { text: "Links" }), links),
    el("section", { id: "detail-record" }, el("h3", { text: "Record" }), recordFields,
      el("h3", { text: "Timings" }), timingsTable(record),
      el("h3", { text: "Metadata" }), metadataFields),
    // No section at all without EXIF: a heading over nothing says nothing.
    hasExif ? el("section", { id: "detail-exif", className: "wide" }, el("h3", { text: "EXIF" }), exifList(metadata.exif)) : null);
  const index = state.order.indexOf(record.id);
  $("#detail-prev").disabled = index <= 0;
  $("#detail-next").disabled = index < 0 || index >= state.order.length - 1;
}

// The open detail's address is ?image=ID: it can be opened directly, or shared, and Back closes it.
export function locationImage() {
  const id = Number(new URLSearchParams(location.search).get("image"));
  return Number.isSafeInteger(id) && id > 0 ? id : null;
}

function locationWith(id) {
  const params = new URLSearchParams(location.search);
  if (id === null) params.delete("image");
  else params.set("image", String(id));
  const query = params.toString();
  return query ? `?${query}` : location.pathname;
}

export async function openDetail(id, { fromLocation = false } = {}) {
  if (!fromLocation && locationImage() !== id) {
    // Stepping to the next image replaces the address: Back closes the detail, not steps back.
    if (dialog.open) history.replaceState(null, "", locationWith(id));
    else {
      history.pushState(null, "", locationWith(id));
      state.detailPushed = true;
    }
  }
  state.detailId = id;
  if (dialog.open) returnFocusTo = tileButton(id) ?? returnFocusTo; // stepped: back to its tile
  else {
    returnFocusTo = document.activeElement;
    $("#detail-body").replaceChildren(el("p", { text: "Loading…" }));
    $("#detail-title").textContent = state.items.get(id)?.filename ?? `Image ${id}`;
    dialog.showModal();
  }
  try {
    const record = await getJSON(imagePath(id));
    if (state.detailId !== id) return;
    detailRecord = record;
    renderDetail(record);
  } catch (error) {
    if (state.detailId === id) $("#detail-body").replaceChildren(el("p", { className: "caption error", text: error.message }));
  }
}

// Its record again, shown unless another image, or none, is open by the time it comes.
export async function reloadDetail(id) {
  const record = await getJSON(imagePath(id));
  if (state.detailId === id && dialog.open) {
    detailRecord = record;
    renderDetail(record);
  }
}

export async function refreshDetail() {
  if (!detailRecord || detailRecord.id !== state.detailId || FINISHED.has(detailRecord.status)) return;
  await reloadDetail(state.detailId);
}

function step(offset) {
  const index = state.order.indexOf(state.detailId);
  const next = state.order[index + offset];
  if (index >= 0 && next !== undefined) openDetail(next);
}

$("#detail-body").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || state.detailId === null) return;
  const action = button.dataset.action;
  if (action === "view") {
    openViewer(state.detailId, detailRecord ?? undefined);
    return;
  }
  if (action === "delete" && !confirm(`Delete ${detailRecord ? detailRecord.filename : "this image"}? Its record, thumbnails and original go.`)) return;
  act(action, state.detailId);
});

$("#detail-close").addEventListener("click", () => dialog.close());
$("#detail-prev").addEventListener("click", () => step(-1));
$("#detail-next").addEventListener("click", () => step(1));
dialog.addEventListener("keydown", (event) => {
  if (event.target.closest("input, textarea, select")) return;
  if (event.key === "ArrowLeft") step(-1);
  else if (event.key === "ArrowRight") step(1);
});
// A click on the backdrop (the dialog element itself, outside its content) closes it.
dialog.addEventListener("click", (event) => {
  if (event.target === dialog) dialog.close();
});
dialog.addEventListener("close", () => {
  if (locationImage() !== null) {
    if (state.detailPushed) history.back(); // the popstate it makes finds the dialog closed
    else history.replaceState(null, "", locationWith(null)); // opened from a shared address
  }
  state.detailPushed = false;
  state.detailId = null;
  detailRecord = null;
  const target = returnFocusTo;
  returnFocusTo = null;
  if (target && target.isConnected) target.focus();
});
