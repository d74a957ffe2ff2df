// HTX gallery: the images of the inbox, over the public JSON API of the same server.
//
// Plain JavaScript, no build step and no library. Every text that comes from the API (file
// names, captions, EXIF: the corpus has a file name with PHP in it) reaches the page through
// textContent or an attribute, never as markup. URLs are relative to the page, so the
// gallery works under a path prefix behind a proxy as well as at the root.

const PAGE_SIZE = 60;
const POLL_BUSY_MS = 2000; // something is queued or uploading: watch closely
const POLL_IDLE_MS = 10000; // nothing moving: just notice images dropped into the inbox
const SEARCH_DELAY_MS = 250;
const UPLOADS_AT_ONCE = 2;
const TOKEN_KEY = "htx.uploadToken";
const STAGES = ["hash", "metadata", "thumbnails", "caption"];
const FINISHED = new Set(["done", "failed"]);

const $ = (selector) => document.querySelector(selector);

// -- state -------------------------------------------------------------------------------------

const state = {
  status: "",
  q: "",
  items: new Map(), // id -> list item, as GET /api/images gives it
  order: [], // ids shown, newest first
  cursor: null, // next_cursor of the last page loaded; null: no more pages
  generation: 0, // bumped when the filter changes, so late answers for the old one are dropped
  loading: false,
  captionNote: "", // from /api/stats: why no image gets a caption now, and the fix ("": they do)
  total: null, // from /api/stats: every image, whatever the filter
  detailId: null,
  detailPushed: false, // the detail's ?image= was pushed on the history: Back closes it
  uploadsActive: 0,
  pollTimer: null,
};

// -- the API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function getJSON(path) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch {
    throw new ApiError(0, "The server cannot be reached.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || `The server answered ${response.status}.`);
  }
  return body;
}

function listPath(extra = {}) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.status) params.set("status", state.status);
  if (state.q.trim()) params.set("q", state.q.trim());
  for (const [key, value] of Object.entries(extra)) params.set(key, value);
  return `api/images?${params}`;
}

const imagePath = (id) => `api/images/${id}`;
const thumbnailPath = (id, size) => `api/images/${id}/thumbnails/${size}`;

// -- small helpers -----------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["bytes", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function timeElement(iso) {
  if (!iso) return "–";
  const when = new Date(iso);
  return el("time", { datetime: iso, title: iso, text: when.toLocaleString() });
}

function coordinate(value, positive, negative) {
  return `${Math.abs(value).toFixed(6)}° ${value >= 0 ? positive : negative}`;
}

// Why an image shows no caption, or what its caption is; `why` marks an explanation.
function captionOf(item) {
  if (item.status === "failed") return { text: item.error || "Processing failed.", kind: "error" };
  if (item.caption) return { text: item.caption, kind: "caption" };
  if (item.status === "pending") return { text: "Waiting to be processed…", kind: "why" };
  if (item.status === "processing") {
    return { text: item.thumbnails && item.thumbnails.small ? "Captioning…" : "Processing…", kind: "why" };
  }
  // Done, its caption made later (the model is being prepared, or captions another image first).
  if (item.caption_status === "pending") return { text: "Caption coming…", kind: "why" };
  if (state.captionNote) return { text: state.captionNote, kind: "why" };
  if (item.caption_error) return { text: `No caption: ${item.caption_error}`, kind: "why" };
  return { text: "No caption", kind: "why" };
}

// Why no image gets a caption now, with the fix: one line, from /api/stats' caption object.
function captionNoteOf(caption) {
  if (caption.available || !caption.reason) return "";
  if (!caption.fix) return `No caption yet: ${caption.reason}.`;
  return `Captions off: ${caption.reason}. To fix: ${caption.fix}.`;
}

// -- the grid ----------------------------------------------------------------------------------

const grid = $("#grid");
const tiles = new Map(); // id -> { li, signature }

function signature(item) {
  return JSON.stringify([item.status, item.filename, item.caption, item.caption_error, item.error,
    Boolean(item.thumbnails && item.thumbnails.small), state.captionNote]);
}

function thumbnailOf(item, big = false) {
  const box = el("span", { className: "thumb" });
  const alt = item.caption || item.filename;
  if (item.thumbnails && item.thumbnails.small) {
    const img = el("img", {
      alt,
      src: thumbnailPath(item.id, big ? "medium" : "small"),
      srcset: big ? null : `${thumbnailPath(item.id, "small")} 1x, ${thumbnailPath(item.id, "medium")} 2x`,
      loading: big ? null : "lazy",
      decoding: "async",
    });
    img.addEventListener("error", () => {
      img.replaceWith(el("span", { className: "placeholder", text: "Thumbnail unavailable" }));
    }, { once: true });
    box.append(img);
  } else if (item.status === "failed") {
    box.append(el("span", { className: "placeholder", role: "img", "aria-label": `${item.filename}: no thumbnail` },
      el("span", { className: "glyph", "aria-hidden": "true", text: "⊘" }),
      el("span", { "aria-hidden": "true", text: "No thumbnail" })));
  } else {
    // Still to come: the caption line below says what the image is waiting for.
    box.append(el("span", { className: "placeholder", "aria-hidden": "true" }, el("span", { className: "spinner" })));
  }
  return box;
}

function renderTile(item) {
  const caption = captionOf(item);
  const button = el("button", { type: "button", className: "open", "data-id": item.id },
    thumbnailOf(item),
    el("span", { className: "name", text: item.filename }),
    el("span", { className: `badge status-${item.status}`, text: item.status }),
    // The caption is already the image's alt text: read it once.
    el("span", { className: `caption ${caption.kind}`, text: caption.text,
      "aria-hidden": caption.kind === "caption" ? "true" : null }));
  return button;
}

function upsertTile(item, { fresh = false } = {}) {
  const existing = tiles.get(item.id);
  const sig = signature(item);
  if (existing) {
    if (existing.signature === sig) return existing.li;
    const hadFocus = existing.li.contains(document.activeElement);
    existing.li.replaceChildren(renderTile(item));
    existing.li.dataset.status = item.status;
    existing.signature = sig;
    if (hadFocus) existing.li.querySelector("button").focus();
    return existing.li;
  }
  const li = el("li", { className: fresh ? "tile fresh" : "tile", "data-id": item.id, "data-status": item.status },
    renderTile(item));
  // Highlight a newcomer once, not again on each of its later changes.
  if (fresh) setTimeout(() => li.classList.remove("fresh"), 1500);
  tiles.set(item.id, { li, signature: sig });
  return li;
}

// Put the shown ids in order (newest first), moving as few nodes as possible.
function layout() {
  let previous = null;
  for (const id of state.order) {
    const li = tiles.get(id).li;
    const expected = previous ? previous.nextSibling : grid.firstChild;
    if (li !== expected) grid.insertBefore(li, expected);
    previous = li;
  }
  const shown = new Set(state.order);
  for (const [id, tile] of tiles) {
    if (!shown.has(id)) {
      tile.li.remove();
      tiles.delete(id);
    }
  }
  updateSummary();
  updateUploads();
  // The observer only reports changes: on a tall screen the end of the list can stay in view.
  requestAnimationFrame(() => {
    if (state.cursor && $("#sentinel").getBoundingClientRect().top < innerHeight + 600) loadMore();
  });
}

function updateSummary() {
  const count = state.order.length;
  const filter = [state.status && `status ${state.status}`, state.q.trim() && `“${state.q.trim()}”`]
    .filter(Boolean).join(", ");
  // Unfiltered, the count is the statistics' total, so the two never disagree; the pages
  // loaded so far hold only part of it.
  const total = !filter && state.total !== null ? Math.max(state.total, count) : count;
  const more = filter && state.cursor ? "+" : "";
  let text;
  if (total === 0) text = filter ? `No images match ${filter}.` : "No images yet: upload some, or drop them into the inbox folder.";
  else text = `${total.toLocaleString()}${more} image${total === 1 ? "" : "s"}${filter ? ` matching ${filter}` : ""}, newest first.`;
  $("#summary").textContent = text;
  $("#more").hidden = !state.cursor;
}

function showNotice(message) {
  const notice = $("#notice");
  notice.hidden = !message;
  notice.textContent = message || "";
}

// -- loading pages -----------------------------------------------------------------------------

async function loadFirstPage() {
  const generation = ++state.generation;
  state.loading = true;
  try {
    const page = await getJSON(listPath());
    if (generation !== state.generation) return;
    state.items.clear();
    state.order = [];
    for (const item of page.items) {
      state.items.set(item.id, item);
      state.order.push(item.id);
      upsertTile(item);
    }
    state.cursor = page.next_cursor;
    layout();
    showNotice(null);
  } catch (error) {
    if (generation === state.generation) showNotice(error.message);
  } finally {
    if (generation === state.generation) state.loading = false;
  }
}

async function loadMore() {
  if (state.loading || !state.cursor) return;
  const generation = state.generation;
  state.loading = true;
  try {
    const page = await getJSON(listPath({ cursor: state.cursor }));
    if (generation !== state.generation) return;
    for (const item of page.items) {
      if (state.items.has(item.id)) continue;
      state.items.set(item.id, item);
      state.order.push(item.id);
      upsertTile(item);
    }
    state.cursor = page.next_cursor;
    layout();
  } catch (error) {
    if (generation === state.generation) showNotice(error.message);
  } finally {
    if (generation === state.generation) state.loading = false;
  }
}

// -- live updates ------------------------------------------------------------------------------
//
// Polling, not server-sent events: it passes every proxy, and costs the server two small
// queries it answers in well under a millisecond. The first page brings new images and the
// changes of those on it; an unfinished image further down is asked for by itself. Nothing
// is asked while the tab is hidden.

async function refresh() {
  const generation = state.generation;
  const page = await getJSON(listPath());
  if (generation !== state.generation || state.loading) return;
  const fetched = new Map(page.items.map((item) => [item.id, item]));
  // The first page is the truth down to its oldest id (all the way down if it is the only
  // page): what is shown in that range and missing from it no longer matches the filter.
  const oldest = page.next_cursor ? Math.min(...fetched.keys()) : -Infinity;
  const newestShown = state.order.length ? state.order[0] : null;
  const hadNothing = newestShown === null;
  if (hadNothing || (page.next_cursor && oldest > newestShown)) {
    // Nothing shown yet, or a whole page of new images since the last look: start afresh.
    state.items.clear();
    state.order = [];
    state.cursor = page.next_cursor;
  }
  const kept = state.order.filter((id) => id < oldest || fetched.has(id));
  const keptSet = new Set(kept);
  for (const id of state.order) if (!keptSet.has(id)) state.items.delete(id);
  for (const item of fetched.values()) {
    const isNew = !state.items.has(item.id);
    state.items.set(item.id, item);
    upsertTile(item, { fresh: isNew && !hadNothing });
  }
  state.order = [...new Set([...fetched.keys(), ...kept])].sort((a, b) => b - a);
  // Unfinished images below the first page: their own records.
  const below = state.order.filter((id) => id < oldest && !FINISHED.has(state.items.get(id).status)).slice(0, 20);
  await Promise.all(below.map(async (id) => {
    try {
      const record = await getJSON(imagePath(id));
      if (generation !== state.generation) return;
      if (state.status && record.status !== state.status) {
        state.order = state.order.filter((other) => other !== id);
        state.items.delete(id);
      } else {
        const item = summaryOf(record);
        state.items.set(id, item);
        upsertTile(item);
      }
    } catch (error) {
      if (error.status === 404) state.order = state.order.filter((other) => other !== id);
    }
  }));
  if (generation !== state.generation) return;
  layout();
}

function summaryOf(record) {
  const { id, filename, status, received_at, error, caption, caption_error, thumbnails, links } = record;
  return { id, filename, status, received_at, error, caption, caption_error, thumbnails, links };
}

async function refreshStats() {
  const stats = await getJSON("api/stats");
  state.captionNote = captionNoteOf(stats.caption);
  state.total = stats.total;
  const set = (name, text) => { document.querySelector(`[data-stat="${name}"]`).textContent = text; };
  set("total", stats.total.toLocaleString());
  set("done", stats.by_status.done.toLocaleString());
  set("failed", stats.by_status.failed.toLocaleString());
  set("queue", stats.queue_depth.toLocaleString());
  set("success", stats.finished ? `${(stats.success_rate * 100).toFixed(1)} %` : "–");
  set("average", stats.finished ? formatMs(stats.processing_ms.average) : "–");
  set("p95", stats.finished ? formatMs(stats.processing_ms.p95) : "–");
  const runtime = stats.caption.runtime ? `, ${stats.caption.runtime}` : "";
  // No fix to give: the model is on its way (loading, or compiled on a first start), not off.
  const coming = stats.caption.reason && !stats.caption.fix;
  set("caption", stats.caption.available ? `${stats.caption.model} (${stats.caption.device || "?"}${runtime})` : coming ? "preparing…" : "off");
  document.querySelector('[data-stat="caption"]').title = state.captionNote;
  updateSummary();
  return stats;
}

function busy() {
  if (state.uploadsActive > 0) return true;
  for (const id of state.order) if (!FINISHED.has(state.items.get(id).status)) return true;
  return false;
}

let polling = false;
let pollAgain = false;

// One poll at a time; a call during one (an upload just ended) runs another right after it.
async function poll() {
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  let queued = 0;
  try {
    await refresh();
    queued = (await refreshStats()).queue_depth;
    if (state.detailId !== null) await refreshDetail();
    showNotice(null);
  } catch (error) {
    showNotice(error.message);
  } finally {
    polling = false;
  }
  if (pollAgain) {
    pollAgain = false;
    poll();
    return;
  }
  schedule(busy() || queued > 0 ? POLL_BUSY_MS : POLL_IDLE_MS);
}

function schedule(delay) {
  clearTimeout(state.pollTimer);
  state.pollTimer = document.visibilityState === "visible" ? setTimeout(poll, delay) : null;
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") poll();
  else {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }
});

// -- filters -----------------------------------------------------------------------------------

function readLocation() {
  const params = new URLSearchParams(location.search);
  state.status = ["pending", "processing", "done", "failed"].includes(params.get("status")) ? params.get("status") : "";
  state.q = params.get("q") || "";
  $("#q").value = state.q;
  for (const radio of document.querySelectorAll('input[name="status"]')) radio.checked = radio.value === state.status;
}

function writeLocation() {
  const params = new URLSearchParams();
  if (state.status) params.set("status", state.status);
  if (state.q.trim()) params.set("q", state.q.trim());
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

function applyFilters() {
  writeLocation();
  loadFirstPage();
}

let searchTimer = null;
$("#q").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    if ($("#q").value === state.q) return;
    state.q = $("#q").value;
    applyFilters();
  }, SEARCH_DELAY_MS);
});
$("#filters").addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(searchTimer);
  state.q = $("#q").value;
  applyFilters();
});
for (const radio of document.querySelectorAll('input[name="status"]')) {
  radio.addEventListener("change", () => {
    state.status = radio.value;
    applyFilters();
  });
}

$("#more").addEventListener("click", loadMore);
new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting)) loadMore();
}, { rootMargin: "600px" }).observe($("#sentinel"));

// -- keyboard in the grid ----------------------------------------------------------------------

function columns() {
  const buttons = grid.querySelectorAll(".tile");
  if (buttons.length < 2) return 1;
  const top = buttons[0].offsetTop;
  let count = 0;
  for (const tile of buttons) {
    if (tile.offsetTop !== top) break;
    count += 1;
  }
  return Math.max(1, count);
}

grid.addEventListener("keydown", (event) => {
  const button = event.target.closest("button.open");
  if (!button) return;
  const buttons = [...grid.querySelectorAll("button.open")];
  const index = buttons.indexOf(button);
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() }[event.key];
  let target = null;
  if (step !== undefined) target = buttons[Math.min(buttons.length - 1, Math.max(0, index + step))];
  else if (event.key === "Home") target = buttons[0];
  else if (event.key === "End") target = buttons[buttons.length - 1];
  if (!target) return;
  event.preventDefault();
  target.focus();
  target.scrollIntoView({ block: "nearest" });
  if (event.key === "ArrowDown" && index + step >= buttons.length - columns()) loadMore();
});

grid.addEventListener("click", (event) => {
  const button = event.target.closest("button.open");
  if (button) openDetail(Number(button.dataset.id));
});

// -- detail ------------------------------------------------------------------------------------

const dialog = $("#detail");
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

// -- acting on the open image: download, process or caption again, delete ---------------------------

const ACTIONS = {
  reprocess: { method: "POST", path: (id) => `${imagePath(id)}/reprocess`, done: "Queued: it is processed again shortly." },
  recaption: { method: "POST", path: (id) => `${imagePath(id)}/recaption`, done: "Queued: it is captioned again shortly." },
  delete: { method: "DELETE", path: imagePath, done: "Deleted." },
};

function actionsOf(record) {
  const finished = FINISHED.has(record.status);
  const button = (action, text, className = "") =>
    el("button", { type: "button", "data-action": action, className, text });
  return el("div", { className: "actions" },
    finished ? el("a", { href: `${imagePath(record.id)}/original`, download: "", className: "button", text: "Download original" }) : null,
    finished ? button("reprocess", record.status === "failed" ? "Retry" : "Process again") : null,
    record.status === "done" && !state.captionNote ? button("recaption", "Caption again") : null,
    finished ? button("delete", "Delete", "danger") : null,
    el("p", { id: "detail-action-state", role: "status" }));
}

// One request, with the upload token once the server asks for it (the same question as uploads).
async function act(action, id) {
  const { method, path, done } = ACTIONS[action];
  const say = (text) => { const line = $("#detail-action-state"); if (line) line.textContent = text; };
  const result = await withUploadToken(async (token) => {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      const response = await fetch(path(id), { method, headers });
      let body = null;
      try { body = await response.json(); } catch { /* not JSON (a 204) */ }
      return { status: response.status, body };
    } catch {
      return { status: 0, body: null };
    }
  });
  if (result === null) {
    say("Not done: the server needs its upload token.");
    return;
  }
  if (result.status === 0) {
    say("The server cannot be reached.");
    return;
  }
  if (result.status >= 400) {
    say(`Not done: ${(result.body && result.body.error) || `the server answered ${result.status}.`}`);
    return;
  }
  if (action === "delete") {
    dialog.close();
    state.items.delete(id);
    state.order = state.order.filter((shown) => shown !== id);
    layout();
    refreshStats().catch(() => {});
    return;
  }
  // Its new state (pending), then followed until it is finished again, as any unfinished one.
  try {
    const record = await getJSON(imagePath(id));
    if (state.detailId === id && dialog.open) {
      detailRecord = record;
      renderDetail(record);
    }
  } catch {
    // the list's next poll shows it
  }
  say(done);
  poll();
}

$("#detail-body").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || state.detailId === null) return;
  const action = button.dataset.action;
  if (action === "delete" && !confirm(`Delete ${detailRecord ? detailRecord.filename : "this image"}? Its record, thumbnails and original go.`)) return;
  act(action, state.detailId);
});

function renderDetail(record) {
  const metadata = record.metadata || {};
  const caption = captionOf(record);
  $("#detail-title").textContent = record.filename;
  // A failed image's error is in its record's fields below: said once.
  const figure = el("figure", {},
    thumbnailOf(record, true),
    record.status === "failed" ? null : el("figcaption", { className: `caption ${caption.kind}`, text: caption.text }));
  const gps = metadata.gps
    ? el("a", { href: `geo:${metadata.gps.latitude},${metadata.gps.longitude}`,
      text: `${coordinate(metadata.gps.latitude, "N", "S")}, ${coordinate(metadata.gps.longitude, "E", "W")}` })
    : undefined;
  const camera = metadata.camera ? [metadata.camera.make, metadata.camera.model].filter(Boolean).join(" ") : undefined;
  const recordFields = fieldList([
    ["Status", el("span", { className: `badge status-${record.status}`, text: record.status })],
    ["Error", record.error ? `${record.error}${record.error_kind ? ` (${record.error_kind})` : ""}` : undefined],
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
function locationImage() {
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

async function openDetail(id, { fromLocation = false } = {}) {
  if (!fromLocation && locationImage() !== id) {
    // Stepping to the next image replaces the address: Back closes the detail, not steps back.
    if (dialog.open) history.replaceState(null, "", locationWith(id));
    else {
      history.pushState(null, "", locationWith(id));
      state.detailPushed = true;
    }
  }
  state.detailId = id;
  if (!dialog.open) {
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

async function refreshDetail() {
  if (!detailRecord || detailRecord.id !== state.detailId || FINISHED.has(detailRecord.status)) return;
  const id = state.detailId;
  const record = await getJSON(imagePath(id));
  if (state.detailId === id && dialog.open) {
    detailRecord = record;
    renderDetail(record);
  }
}

function step(offset) {
  const index = state.order.indexOf(state.detailId);
  const next = state.order[index + offset];
  if (index >= 0 && next !== undefined) {
    openDetail(next);
    returnFocusTo = tiles.get(next)?.li.querySelector("button") ?? returnFocusTo;
  }
}

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

// -- uploads -----------------------------------------------------------------------------------

const uploadList = $("#uploads");
const waiting = [];
const uploadRows = []; // rows of uploads the server took, to follow their images

// An upload's row says what became of its image, as far as the grid knows it.
function updateUploads() {
  for (const row of uploadRows) {
    const item = state.items.get(row.id);
    if (!item) continue;
    const text = {
      pending: "waiting to be processed…",
      processing: "processing…",
      done: "done.",
      failed: `failed: ${item.error || "could not be processed"}`,
    }[item.status];
    setRowState(row, item.status === "failed" ? "error" : "done", `#${row.id} ${text}`);
  }
}
let tokenRequest = null;

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
}

function forgetToken(refused = null) {
  // Only the token that was refused: another upload may have stored a new one meanwhile.
  if (refused !== null && storedToken() !== refused) return;
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

// One question at a time, however many uploads were refused at once.
function askForToken(rejected) {
  if (!tokenRequest) {
    tokenRequest = new Promise((resolve) => {
      const tokenDialog = $("#token-dialog");
      $("#token-reason").textContent = rejected
        ? "That token was not accepted. Try again:"
        : "This server needs its upload token (api.upload_token) for uploads and changes.";
      $("#token").value = "";
      tokenDialog.addEventListener("close", () => {
        const token = $("#token").value.trim();
        if (tokenDialog.returnValue === "ok" && token) {
          forgetToken();
          ($("#token-remember").checked ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
          resolve(token);
        } else {
          resolve(null);
        }
        tokenRequest = null;
      }, { once: true });
      tokenDialog.returnValue = "";
      tokenDialog.showModal();
    });
  }
  return tokenRequest;
}

// `send(token)` (the stored token, or null) until the server does not refuse it for the token:
// after a refusal, asks for one (once for any number of requests at a time). Its last answer,
// or null when no token was given. `onRefused` says what is being waited for meanwhile.
async function withUploadToken(send, onRefused = () => {}) {
  let rejected = false;
  for (;;) {
    const token = storedToken();
    const result = await send(token);
    if (result.status !== 401) return result;
    if (token) forgetToken(token);
    onRefused();
    const again = storedToken() || await askForToken(rejected || Boolean(token));
    rejected = true;
    if (!again) return null;
  }
}

function send(file, row, token) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest(); // fetch cannot report upload progress
    xhr.open("POST", "api/images");
    xhr.setRequestHeader("Accept", "application/json");
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) row.progress.value = Math.round((event.loaded / event.total) * 100);
    });
    xhr.upload.addEventListener("load", () => {
      row.progress.value = 100;
      setRowState(row, "waiting", "Sent; waiting for the daemon…");
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON
      }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

function setRowState(row, kind, text) {
  row.li.dataset.state = kind;
  row.state.textContent = text;
}

async function upload(file, row) {
  const result = await withUploadToken((token) => send(file, row, token),
    () => setRowState(row, "waiting", "Needs the upload token…"));
  if (result === null) {
    setRowState(row, "error", "Not uploaded: the server needs an upload token.");
    return;
  }
  const { status, body } = result;
  if (status === 202 && body && body.id !== null) {
    row.id = body.id;
    uploadRows.push(row);
    setRowState(row, "done", `#${body.id} received; ${body.status}.`);
  } else if (status === 202) {
    setRowState(row, "done", "Queued: the daemon will pick it up when it runs.");
  } else if (status === 200 && body && body.duplicate) {
    row.id = body.id;
    setRowState(row, "done", `Already here as #${body.id} (the same bytes).`);
  } else if (status === 0) {
    setRowState(row, "error", "Not uploaded: the server cannot be reached.");
  } else {
    setRowState(row, "error", `Not uploaded: ${(body && body.error) || `the server answered ${status}.`}`);
  }
  row.progress.value = 100;
}

function addFiles(files) {
  for (const file of files) {
    const progress = el("progress", { max: 100, value: 0, "aria-label": `Upload of ${file.name}` });
    const stateText = el("span", { className: "state", text: "Waiting…" });
    const li = el("li", { "data-state": "queued" }, el("span", { className: "name", text: file.name, title: file.name }), progress, stateText);
    uploadList.prepend(li);
    waiting.push({ file, row: { li, progress, state: stateText, id: null } });
  }
  pump();
}

function pump() {
  while (state.uploadsActive < UPLOADS_AT_ONCE && waiting.length) {
    const { file, row } = waiting.shift();
    state.uploadsActive += 1;
    setRowState(row, "sending", "Uploading…");
    upload(file, row).finally(() => {
      state.uploadsActive -= 1;
      pump();
      poll(); // show the new image at once
    });
  }
}

const fileInput = $("#file-input");
$("#pick").addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => {
  addFiles([...fileInput.files]);
  fileInput.value = "";
});

// Drops anywhere on the page; the overlay shows while files are dragged over it.
const overlay = $("#drop-overlay");
let dragDepth = 0;
const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
document.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  overlay.hidden = false;
});
document.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
document.addEventListener("dragleave", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) overlay.hidden = true;
});
document.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  overlay.hidden = true;
  addFiles([...event.dataTransfer.files]);
});

// -- start -------------------------------------------------------------------------------------

readLocation();
window.addEventListener("popstate", () => {
  const filters = [state.status, state.q];
  readLocation();
  if (filters[0] !== state.status || filters[1] !== state.q) loadFirstPage();
  const id = locationImage();
  if (id !== null) openDetail(id, { fromLocation: true });
  else if (dialog.open) {
    state.detailPushed = false; // Back has taken the address already
    dialog.close();
  }
});
refreshStats().catch(() => {}).finally(async () => {
  await loadFirstPage();
  const id = locationImage();
  if (id !== null) openDetail(id, { fromLocation: true });
  schedule(busy() ? POLL_BUSY_MS : POLL_IDLE_MS);
});
