// The grid: a tile per image, in the list's order (newest first, by arrival or by when it was
// taken; a search by meaning best match first), in pages loaded as it scrolls into view.

import { getJSON } from "./api.js";
import { $, el } from "./dom.js";
import { captionOf, thumbnailOf } from "./image.js";
import { byMeaning, scoreTitle, searchMatch, updateSearchControls } from "./search.js";
import { DEFAULT_STATUSES, hooks, state } from "./state.js";

export const PAGE_SIZE = 60;

const usesStatusList = () => !state.status && state.statusListOK !== false;
// A search comes by arrival: the API takes no order=taken with q.
export const usesTakenOrder = () => state.sort === "taken" && state.takenOrderOK !== false && !state.q.trim();

export function listPath(extra = {}) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.status) params.set("status", state.status);
  else if (usesStatusList()) params.set("status", DEFAULT_STATUSES.join(","));
  if (usesTakenOrder()) params.set("order", "taken");
  if (state.q.trim()) params.set("q", state.q.trim());
  if (state.match) params.set("match", state.match);
  for (const [key, value] of Object.entries(extra)) params.set(key, value);
  return `api/images?${params}`;
}

// Whether an image belongs in the view: the server filters, and this drops what a server that
// does not take a list of statuses sent anyway (or what changed status since).
export const inView = (item) => (state.status ? item.status === state.status : item.status !== "failed");

// A page of the list. A server that does not take `order=taken` or a list of statuses yet
// answers 400: the page then asks without them (by arrival; the failed ones dropped here).
// One that cannot search by meaning now (its model cannot be loaded: 503) is asked by words.
export async function fetchPage(extra = {}) {
  for (;;) {
    const taken = usesTakenOrder();
    const list = usesStatusList();
    const meaning = state.match !== null && !extra.cursor; // a cursor holds for its own match only
    try {
      const page = await getJSON(listPath(extra));
      if (taken) state.takenOrderOK = true;
      if (list) state.statusListOK = true;
      page.items = page.items.filter(inView);
      return page;
    } catch (error) {
      if (meaning && [400, 503].includes(error.status) && /meaning|match/i.test(error.message)) {
        state.meaningOK = false;
        state.match = searchMatch();
        continue;
      }
      if (error.status !== 400 || !(taken || list)) throw error;
      if (taken && /order/i.test(error.message) && !/cursor/i.test(error.message)) {
        state.takenOrderOK = false;
      } else if (list && /status/i.test(error.message)) {
        state.statusListOK = false;
      } else {
        throw error;
      }
    }
  }
}

const grid = $("#grid");
const tiles = new Map(); // id -> { li, signature }

function signature(item) {
  return JSON.stringify([item.status, item.filename, item.caption, item.caption_status, item.caption_error, item.error,
    Boolean(item.thumbnails && item.thumbnails.small), state.captionNote, item.score]);
}

function renderTile(item) {
  const caption = captionOf(item);
  // A search by meaning's score, in the tooltip: how close it came, without clutter.
  return el("button", { type: "button", className: "open", "data-id": item.id, title: scoreTitle(item) },
    el("span", { className: "check", "aria-hidden": "true" }),
    thumbnailOf(item),
    el("span", { className: "name", text: item.filename }),
    el("span", { className: `badge status-${item.status}`, text: item.status }),
    // The caption is already the image's alt text: read it once.
    caption ? el("span", { className: `caption ${caption.kind}`, text: caption.text,
      "aria-hidden": caption.kind === "caption" ? "true" : null }) : null);
}

// A tile's look in select mode: its check, and aria-pressed on its button (none outside it).
export function markSelected(id) {
  const tile = tiles.get(id);
  if (!tile) return;
  const on = state.selecting && state.selected.has(id);
  tile.li.classList.toggle("selected", on);
  const button = tile.li.querySelector("button");
  if (state.selecting) button.setAttribute("aria-pressed", String(on));
  else button.removeAttribute("aria-pressed");
}

export function upsertTile(item, { fresh = false } = {}) {
  const existing = tiles.get(item.id);
  const sig = signature(item);
  if (existing) {
    if (existing.signature === sig) return existing.li;
    const hadFocus = existing.li.contains(document.activeElement);
    existing.li.replaceChildren(renderTile(item));
    existing.li.dataset.status = item.status;
    existing.signature = sig;
    markSelected(item.id);
    if (hadFocus) existing.li.querySelector("button").focus();
    return existing.li;
  }
  const li = el("li", { className: fresh ? "tile fresh" : "tile", "data-id": item.id, "data-status": item.status },
    renderTile(item));
  // Highlight a newcomer once, not again on each of its later changes.
  if (fresh) setTimeout(() => li.classList.remove("fresh"), 1500);
  tiles.set(item.id, { li, signature: sig });
  markSelected(item.id);
  return li;
}

// The button that opens the image (undefined while it is not shown).
export const tileButton = (id) => tiles.get(id)?.li.querySelector("button");

// Put the shown ids in order, moving as few nodes as possible.
export function layout() {
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
  for (const id of state.selected) if (!shown.has(id)) state.selected.delete(id);
  if (state.selecting) hooks.updateSelection();
  updateSummary();
  hooks.updateUploads();
  // The observer only reports changes: on a tall screen the end of the list can stay in view.
  requestAnimationFrame(() => {
    if (state.cursor && $("#sentinel").getBoundingClientRect().top < innerHeight + 600) loadMore();
  });
}

// How many images the view holds, from the statistics (null: they cannot say, with a search).
function viewTotal() {
  const counts = state.stats && state.stats.by_status;
  if (!counts || state.q.trim()) return null;
  if (state.status) return counts[state.status] ?? null;
  return DEFAULT_STATUSES.reduce((sum, status) => sum + (counts[status] || 0), 0);
}

export function orderWords() {
  if (byMeaning()) return "best match first";
  return usesTakenOrder() ? "by when taken, newest first" : "newest first";
}

export function updateSummary() {
  const count = state.order.length;
  const filter = [state.status && `status ${state.status}`, state.q.trim() && `“${state.q.trim()}”`]
    .filter(Boolean).join(", ");
  // With all of them loaded, the count is exact; else the statistics' count for the view, so
  // the two never disagree; without one (a search), the pages loaded so far, and a "+".
  const known = viewTotal();
  const total = !state.cursor ? count : known !== null ? Math.max(known, count) : count;
  const more = state.cursor && known === null ? "+" : "";
  let text;
  if (total === 0 && filter) text = state.status === "failed" && !state.q.trim() ? "No failed images." : `No images match ${filter}.`;
  else if (total === 0 && state.total) text = "No images to show here: the failed ones are in their own view.";
  else if (total === 0) text = "No images yet: upload some, or drop them into the inbox folder.";
  else text = `${total.toLocaleString()}${more} image${total === 1 ? "" : "s"}${filter ? ` matching ${filter}` : ""}, ${orderWords()}.`;
  $("#summary").textContent = text;
  let orderNote = "";
  if (state.sort === "taken" && byMeaning()) orderNote = "A search by meaning comes best match first.";
  else if (state.sort === "taken" && state.takenOrderOK === false) orderNote = "This server cannot order by when taken yet: by arrival.";
  else if (state.sort === "taken" && state.q.trim()) orderNote = "A search comes by arrival.";
  $("#order-note").textContent = orderNote;
  grid.setAttribute("aria-label", `Images, ${orderWords()}`);
  $("#more").hidden = !state.cursor;
  updateSearchControls();
}

export function showNotice(message) {
  const notice = $("#notice");
  notice.hidden = !message;
  notice.textContent = message || "";
}

// -- loading pages -----------------------------------------------------------------------------

export async function loadFirstPage() {
  const generation = ++state.generation;
  state.match = searchMatch();
  state.loading = true;
  try {
    const page = await fetchPage();
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

// The next page; false when there was none to load (or one is loading already).
export async function loadMore() {
  if (state.loading || !state.cursor) return false;
  const generation = state.generation;
  state.loading = true;
  try {
    const page = await fetchPage({ cursor: state.cursor });
    if (generation !== state.generation) return false;
    for (const item of page.items) {
      if (state.items.has(item.id)) continue;
      state.items.set(item.id, item);
      state.order.push(item.id);
      upsertTile(item);
    }
    state.cursor = page.next_cursor;
    layout();
    return true;
  } catch (error) {
    if (generation === state.generation) showNotice(error.message);
    return false;
  } finally {
    if (generation === state.generation) state.loading = false;
  }
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

// A click opens the image; in select mode it selects it (with Shift, the range up to it).
grid.addEventListener("click", (event) => {
  const button = event.target.closest("button.open");
  if (!button) return;
  const id = Number(button.dataset.id);
  if (state.selecting) hooks.toggleSelected(id, event.shiftKey);
  else hooks.openDetail(id);
});
