// The grid: a tile per image, newest first, in pages loaded as it scrolls into view.

import { getJSON } from "./api.js";
import { $, el } from "./dom.js";
import { captionOf, thumbnailOf } from "./image.js";
import { hooks, state } from "./state.js";

const PAGE_SIZE = 60;

export function listPath(extra = {}) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.status) params.set("status", state.status);
  if (state.q.trim()) params.set("q", state.q.trim());
  for (const [key, value] of Object.entries(extra)) params.set(key, value);
  return `api/images?${params}`;
}

const grid = $("#grid");
const tiles = new Map(); // id -> { li, signature }

function signature(item) {
  return JSON.stringify([item.status, item.filename, item.caption, item.caption_error, item.error,
    Boolean(item.thumbnails && item.thumbnails.small), state.captionNote]);
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

export function upsertTile(item, { fresh = false } = {}) {
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

// The button that opens the image (undefined while it is not shown).
export const tileButton = (id) => tiles.get(id)?.li.querySelector("button");

// Put the shown ids in order (newest first), moving as few nodes as possible.
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
  updateSummary();
  hooks.updateUploads();
  // The observer only reports changes: on a tall screen the end of the list can stay in view.
  requestAnimationFrame(() => {
    if (state.cursor && $("#sentinel").getBoundingClientRect().top < innerHeight + 600) loadMore();
  });
}

export function updateSummary() {
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

export function showNotice(message) {
  const notice = $("#notice");
  notice.hidden = !message;
  notice.textContent = message || "";
}

// -- loading pages -----------------------------------------------------------------------------

export async function loadFirstPage() {
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
  if (button) hooks.openDetail(Number(button.dataset.id));
});
